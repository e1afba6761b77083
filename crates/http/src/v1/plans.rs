//! The public hosting catalog.

use axum::extract::{Path, Query, State};
use axum::Json;
use lodge_core::PlanId;

use crate::error::{ApiError, ApiResult};
use crate::extract::{path_id, Caller, PageQuery, Paginated};
use crate::wire::{HostingPlan, PlanGroup};
use crate::AppState;

/// Hosting plans on sale (active, buyable, not hidden), paginated.
#[utoipa::path(get, path = "/v1/hosting/plans", tag = "hosting",
    security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = Paginated<HostingPlan>), (status = 401)))]
pub async fn list_plans(
    State(st): State<AppState>,
    Caller(_caller): Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paginated<HostingPlan>>> {
    let req = q.resolve()?;
    let catalog = st.lodge.catalog().await?;
    let listed: Vec<_> = catalog.listed_plans().collect();
    let count = i64::try_from(listed.len()).unwrap_or(i64::MAX);
    let page = listed
        .into_iter()
        .skip(usize::try_from(req.offset()).unwrap_or(usize::MAX))
        .take(usize::try_from(req.limit()).unwrap_or(0))
        .map(HostingPlan::from)
        .collect();
    Ok(Json(Paginated::new(
        &st,
        "/v1/hosting/plans",
        req,
        count,
        page,
    )?))
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

/// Active plan groups, in display order.
#[utoipa::path(get, path = "/v1/hosting/plan-groups", tag = "hosting",
    security(("bearer" = [])),
    responses((status = 200, body = Vec<PlanGroup>), (status = 401)))]
pub async fn list_plan_groups(
    State(st): State<AppState>,
    Caller(_caller): Caller,
) -> ApiResult<Json<Vec<PlanGroup>>> {
    let catalog = st.lodge.catalog().await?;
    Ok(Json(
        catalog
            .groups
            .iter()
            .filter(|g| g.is_active == 1)
            .map(PlanGroup::from)
            .collect(),
    ))
}
