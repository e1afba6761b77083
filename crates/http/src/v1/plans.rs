//! The public hosting catalog.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use lodge_core::PlanId;

use crate::cached::Rendered;
use crate::error::{ApiError, ApiResult};
use crate::extract::V1Path as Path;
use crate::extract::{path_id, Caller, PageQuery, Paginated};
use crate::wire::{HostingPlan, PlanGroup};
use crate::AppState;

/// Hosting plans on sale (active, buyable, not hidden), paginated. Each page is rendered once
/// per catalog version and answered with an `ETag`; `If-None-Match` with it gets `304`.
#[utoipa::path(get, path = "/v1/hosting/plans", tag = "hosting",
    security(("bearer" = [])),
    params(PageQuery,
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` this endpoint gave: `304` when the page is unchanged")),
    responses((status = 200, body = Paginated<HostingPlan>,
                headers(("ETag" = String, description = "The page's version tag"))),
              (status = 304, description = "Unchanged since the `ETag` sent in `If-None-Match`"),
              (status = 401)))]
pub async fn list_plans(
    State(st): State<AppState>,
    Caller(_caller): Caller,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    let req = q.resolve()?;
    let catalog = st.lodge.catalog().await?;
    let key = (req.page, req.size);
    if let Some(hit) = st.plan_pages.get(catalog.version, &key) {
        return Ok(hit.respond(&headers));
    }
    let listed: Vec<_> = catalog.listed_plans().collect();
    let count = i64::try_from(listed.len()).unwrap_or(i64::MAX);
    let page = listed
        .into_iter()
        .skip(usize::try_from(req.offset()).unwrap_or(usize::MAX))
        .take(usize::try_from(req.limit()).unwrap_or(0))
        .map(HostingPlan::from)
        .collect();
    let body = Paginated::<HostingPlan>::new(&st, "/v1/hosting/plans", req, count, page)?;
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| ApiError::Service(lodge_services::ServiceError::Internal(e.to_string())))?;
    let rendered = Rendered::new(Bytes::from(bytes));
    st.plan_pages.put(catalog.version, key, rendered.clone());
    Ok(rendered.respond(&headers))
}

/// One plan (hidden plans too: customers may hold a direct link).
#[utoipa::path(get, path = "/v1/hosting/plans/{plan_id}", tag = "hosting",
    security(("bearer" = [])),
    params(("plan_id" = String, Path, description = "Plan UUID")),
    responses((status = 200, body = HostingPlan), (status = 401), (status = 404)))]
pub async fn get_plan(
    State(st): State<AppState>,
    Caller(_caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<HostingPlan>> {
    let id: PlanId = path_id(&id)?;
    let catalog = st.lodge.catalog().await?;
    let plan = catalog
        .plan(id)
        .filter(|p| p.row.is_active == 1)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(HostingPlan::from(plan)))
}

/// Active plan groups, in display order, paginated like every list but
/// `/v1/organizations` (found by the `/v1` contract audit: a plain array that ignored
/// `page` and `page_size`).
#[utoipa::path(get, path = "/v1/hosting/plan-groups", tag = "hosting",
    security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = Paginated<PlanGroup>), (status = 400), (status = 401)))]
pub async fn list_plan_groups(
    State(st): State<AppState>,
    Caller(_caller): Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paginated<PlanGroup>>> {
    let req = q.resolve()?;
    let catalog = st.lodge.catalog().await?;
    let active: Vec<_> = catalog.groups.iter().filter(|g| g.is_active == 1).collect();
    let count = i64::try_from(active.len()).unwrap_or(i64::MAX);
    let page = active
        .into_iter()
        .skip(usize::try_from(req.offset()).unwrap_or(usize::MAX))
        .take(usize::try_from(req.limit()).unwrap_or(0))
        .map(PlanGroup::from)
        .collect();
    Ok(Json(Paginated::<PlanGroup>::new(
        &st,
        "/v1/hosting/plan-groups",
        req,
        count,
        page,
    )?))
}
