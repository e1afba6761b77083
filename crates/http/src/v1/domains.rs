//! Domains of a project.

use axum::extract::{Path, Query, State};
use axum::Json;
use lodge_core::{DomainId, OrganizationId, ProjectId};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::extract::{path_id, Caller, PageQuery, Paginated, V1Json};
use crate::wire::Domain;
use crate::AppState;

/// The domains of a project.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/projects/{project_id}/domains",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"), PageQuery),
    responses((status = 200, body = Paginated<Domain>), (status = 401), (status = 404)))]
pub async fn list_domains(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paginated<Domain>>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let (access, row) = st.lodge.project_access(&p, org, project).await?;
    let req = q.resolve()?;
    let page = st
        .lodge
        .project_domains(&access, &row, req.limit(), req.offset())
        .await?;
    let catalog = st.lodge.catalog().await?;
    let path = format!("/v1/organizations/{org}/projects/{project}/domains");
    Ok(Json(Paginated::new(
        &st,
        &path,
        req,
        page.count,
        page.rows
            .into_iter()
            .map(|d| Domain::new(d, &catalog))
            .collect(),
    )?))
}

/// One domain.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/projects/{project_id}/domains/{domain_id}",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("domain_id" = String, Path, description = "Domain UUID")),
    responses((status = 200, body = Domain), (status = 401), (status = 404)))]
pub async fn get_domain(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Domain>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: DomainId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    let d = st.lodge.project_domain(&access, project, id).await?;
    Ok(Json(Domain::new(d, &*st.lodge.catalog().await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AutoRenew {
    pub auto_renew: bool,
}

/// Turns automatic renewal on or off.
#[utoipa::path(put, path = "/v1/organizations/{organization_id}/projects/{project_id}/domains/{domain_id}/auto-renew",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("domain_id" = String, Path, description = "Domain UUID")),
    request_body = AutoRenew,
    responses((status = 200, body = Domain), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn set_auto_renew(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
    V1Json(body): V1Json<AutoRenew>,
) -> ApiResult<Json<Domain>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: DomainId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    let d = st
        .lodge
        .set_auto_renew(&access, project, id, body.auto_renew)
        .await?;
    Ok(Json(Domain::new(d, &*st.lodge.catalog().await?)))
}
