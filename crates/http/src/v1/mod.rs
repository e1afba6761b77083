//! The `/v1` dialect (OnetSolutions-compatible) and the staff API under `/v1/admin`.

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

mod admin;
mod admin_access;
mod admin_billing;
mod admin_ops;
pub use admin_ops::{job as staff_job, Job};
mod admin_webhooks;
mod auth;
mod billing;
mod databases;
mod domains;
pub(crate) mod hosting;
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
        .routes(routes!(hosting::order))
        .routes(routes!(hosting::list_hosting))
        .routes(routes!(hosting::get_hosting))
        .routes(routes!(hosting::cancel_hosting))
        .routes(routes!(hosting::revoke_cancellation))
        .routes(routes!(hosting::change_plan))
        .routes(routes!(hosting::change_password))
        .routes(routes!(databases::get_database))
        .routes(routes!(databases::reset_database_password))
        .routes(routes!(domains::list_domains))
        .routes(routes!(domains::get_domain))
        .routes(routes!(domains::set_auto_renew))
        .routes(routes!(domains::set_nameservers))
        .routes(routes!(domains::set_lock))
        .routes(routes!(domains::get_auth_code))
        .routes(routes!(domains::get_records, domains::put_records))
        .routes(routes!(domains::check_domain))
        .routes(routes!(domains::admin_list_domains))
        .routes(routes!(billing::list_invoices))
        .routes(routes!(billing::get_invoice))
        .routes(routes!(billing::get_credit))
        .merge(admin::routes())
        .merge(admin_access::routes())
        .merge(admin_billing::routes())
        .merge(admin_ops::routes())
        .merge(admin_webhooks::routes())
}
