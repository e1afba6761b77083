//! Organizations and projects.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use lodge_core::{OrganizationId, ProjectId};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::extract::V1Path as Path;
use crate::extract::{path_id, Caller, PageQuery, Paginated, V1Later};
use crate::wire::{Organization, Project};
use crate::AppState;

/// The organizations the caller belongs to (a plain array, as OnetSolutions documents).
#[utoipa::path(get, path = "/v1/organizations", tag = "organizations",
    security(("bearer" = [])),
    responses((status = 200, body = Vec<Organization>),
              (status = 401, description = "No or bad credentials")))]
pub async fn list_organizations(
    State(st): State<AppState>,
    Caller(p): Caller,
) -> ApiResult<Json<Vec<Organization>>> {
    let list = st.lodge.organizations(&p).await?;
    Ok(Json(list.into_iter().map(Organization::from_row).collect()))
}

/// The organization's projects (a guest sees only those it was added to).
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/projects", tag = "organizations",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"), PageQuery),
    responses((status = 200, body = Paginated<Project>),
              (status = 401), (status = 404, description = "Unknown or foreign organization")))]
pub async fn list_projects(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path(org): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paginated<Project>>> {
    let org: OrganizationId = path_id(&org)?;
    let access = st.lodge.access(&p, org).await?;
    let req = q.resolve()?;
    let (rows, count) = st
        .lodge
        .projects(&access, req.limit(), req.offset())
        .await?;
    let path = format!("/v1/organizations/{org}/projects");
    Ok(Json(Paginated::new(
        &st,
        &path,
        req,
        count,
        rows.into_iter().map(Project::from).collect(),
    )?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateProject {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub description: String,
}

/// Creates a project (owners and editors).
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/projects", tag = "organizations",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID")),
    request_body = CreateProject,
    responses((status = 201, body = Project), (status = 400, description = "Field errors"),
              (status = 401), (status = 403, description = "Role may not write"), (status = 404)))]
pub async fn create_project(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path(org): Path<String>,
    body: V1Later<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    let org: OrganizationId = path_id(&org)?;
    let access = st.lodge.access(&p, org).await?;
    access.require_write()?; // the role before the body, as V1Later promises
    let body = body.get()?;
    let row = st
        .lodge
        .create_project(&access, &body.name, &body.description)
        .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// One project.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/projects/{project_id}", tag = "organizations",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID")),
    responses((status = 200, body = Project), (status = 401), (status = 404)))]
pub async fn get_project(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project)): Path<(String, String)>,
) -> ApiResult<Json<Project>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let (_, row) = st.lodge.project_access(&p, org, project).await?;
    Ok(Json(row.into()))
}
