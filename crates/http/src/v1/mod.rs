//! The `/v1` dialect (OnetSolutions-compatible) and the staff API under `/v1/admin`.

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

mod admin;
mod auth;
mod keys;
mod orgs;
mod plans;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(orgs::list_organizations))
        .routes(routes!(orgs::list_projects, orgs::create_project))
        .routes(routes!(orgs::get_project))
        .routes(routes!(plans::list_plans))
        .routes(routes!(plans::get_plan))
        .routes(routes!(plans::list_plan_groups))
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .merge(admin::routes())
}
