//! Ordering web hosting and managing hosting accounts.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lodge_core::{Currency, HostingId, OrganizationId, ProjectId};
use lodge_services::hosting::CancelType;
use lodge_services::orders::{DbChecks, OrderForm, OrderOutcome, OrderSource};
use lodge_services::{FieldError, FieldErrors, ServiceError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::V1Path as Path;
use crate::extract::{
    parse_json, path_id, Caller, IdempotencyKey, PageQuery, Paginated, V1Body, V1Later,
};
use crate::idempotency;
use crate::wire::{self, money_number, Hosting};
use crate::AppState;

/// The order request (as OnetSolutions publishes it). It documents the body; the handler
/// reads the fields one by one so that every bad field is reported at once.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct HostingOrderRequest {
    /// The plan (UUID).
    pub plan_id: String,
    /// `register`, `transfer`, `existing` or `external`.
    pub domain_source: String,
    /// At most 253 characters; Unicode names are converted to punycode.
    #[schema(max_length = 253)]
    pub domain_name: Option<String>,
    /// A domain already in this organization (for `existing`).
    pub domain_id: Option<String>,
    /// The transfer authorization code (for `transfer`).
    #[schema(max_length = 255)]
    pub epp_code: Option<String>,
    /// Default `monthly`.
    pub billing_cycle: Option<String>,
    /// A coupon's code (Lodge's addition; the same coupons as `/apiv2`'s order form).
    #[schema(max_length = 64)]
    pub coupon_code: Option<String>,
}

/// The fields an order may carry: any other is refused (a misspelt or unsupported field,
/// e.g. a coupon under another name, is not silently ignored and the order billed at list
/// price; found by the billing audit).
const ORDER_FIELDS: [&str; 7] = [
    "plan_id",
    "domain_source",
    "domain_name",
    "domain_id",
    "epp_code",
    "billing_cycle",
    "coupon_code",
];

/// The order response: every field of the published one (the three that may be `null`
/// always sent, so required, as the published document has them).
#[derive(Debug, Serialize, ToSchema)]
pub struct HostingOrderResponse {
    pub order_id: i64,
    pub order_number: String,
    #[schema(required = true)]
    pub invoice_id: Option<i64>,
    pub local_order_id: String,
    /// `amount_due + credit_applied`.
    #[schema(value_type = f64)]
    pub total: Box<serde_json::value::RawValue>,
    #[schema(value_type = f64)]
    pub amount_due: Box<serde_json::value::RawValue>,
    #[schema(value_type = f64)]
    pub credit_applied: Box<serde_json::value::RawValue>,
    /// The order status: `pending`, `active`, `cancelled`, `fraud`.
    pub status: String,
    /// The hosted payment page, `null` when nothing is due.
    #[schema(required = true)]
    pub invoice_payment_url: Option<String>,
    pub hosting_id: String,
    pub hosting_status: String,
    #[schema(required = true)]
    pub domain_id: Option<String>,
    pub domain_name: String,
}

impl HostingOrderResponse {
    pub fn new(o: &OrderOutcome, cur: Currency, base: &str) -> Self {
        HostingOrderResponse {
            order_id: o.order_id,
            order_number: o.order_number.clone(),
            invoice_id: o.invoice_id,
            local_order_id: o.local_order_id.to_string(),
            total: money_number(o.total_minor, cur),
            amount_due: money_number(o.amount_due_minor, cur),
            credit_applied: money_number(o.credit_applied_minor, cur),
            status: o.status.as_str().to_owned(),
            invoice_payment_url: o
                .payment_token
                .as_deref()
                .map(|t| wire::payment_url(base, t)),
            hosting_id: o.hosting_id.to_string(),
            hosting_status: o.hosting_status.as_str().to_owned(),
            domain_id: o.domain_id.map(|d| d.to_string()),
            domain_name: o.domain_name.clone(),
        }
    }
}

/// Reads an optional string field, noting a wrong type.
fn string_field(
    obj: &serde_json::Map<String, serde_json::Value>,
    name: &str,
    errors: &mut FieldErrors,
) -> Option<String> {
    match obj.get(name) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.insert(
                name.to_owned(),
                vec![FieldError::invalid("Not a valid string.")],
            );
            None
        }
    }
}

/// Orders a web hosting account, with its domain. Send an `Idempotency-Key` header to make
/// retries safe: the order and its response are stored together, and a retry with the same
/// key and body replays that response; a refused order stores nothing, so its retry is
/// judged afresh.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/projects/{project_id}/hosting/order",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    request_body = HostingOrderRequest,
    responses((status = 201, description = "Hosting order created successfully", body = HostingOrderResponse),
              (status = 400, description = "Field errors"), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "A request with this Idempotency-Key is still in progress"),
              (status = 422, description = "Idempotency-Key reused with another body")))]
pub async fn order(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project)): Path<(String, String)>,
    key: Option<IdempotencyKey>,
    V1Body(body): V1Body,
) -> Response {
    let run = async {
        let org: OrganizationId = path_id(&org)?;
        let project: ProjectId = path_id(&project)?;
        let (access, project) = st.lodge.project_access(&p, org, project).await?;
        access.require_write()?;
        let key = idempotency::key(
            &st,
            key,
            format!("v1:user:{}", p.user),
            "POST",
            &format!(
                "/v1/organizations/{org}/projects/{}/hosting/order",
                project.id
            ),
            &body,
        );
        let value: serde_json::Value = parse_json(if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &body
        })?;
        let obj = value.as_object().cloned().unwrap_or_default();
        let answer = st
            .lodge
            .keyed(key.as_ref(), || {
                place(&st, &access, &project, &obj, key.clone())
            })
            .await?;
        let (cur, base) = (st.lodge.settings.currency, st.public_base_url.clone());
        Ok::<_, ApiError>(idempotency::respond(answer, |o| {
            (
                StatusCode::CREATED,
                Json(HostingOrderResponse::new(&o, cur, &base)),
            )
                .into_response()
        }))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Validates and places the order (under `key`, claimed in the order's transaction).
async fn place(
    st: &AppState,
    access: &lodge_services::auth::Access,
    project: &lodge_services::model::ProjectRow,
    obj: &serde_json::Map<String, serde_json::Value>,
    key: Option<lodge_services::idempotency::IdempotencyKey>,
) -> Result<OrderOutcome, ServiceError> {
    let mut type_errors = FieldErrors::new();
    let form = OrderForm {
        plan_id: string_field(obj, "plan_id", &mut type_errors),
        domain_source: string_field(obj, "domain_source", &mut type_errors),
        domain_name: string_field(obj, "domain_name", &mut type_errors),
        domain_id: string_field(obj, "domain_id", &mut type_errors),
        epp_code: string_field(obj, "epp_code", &mut type_errors),
        billing_cycle: string_field(obj, "billing_cycle", &mut type_errors),
        coupon: string_field(obj, "coupon_code", &mut type_errors),
        ..Default::default()
    };
    for unknown in obj.keys().filter(|k| !ORDER_FIELDS.contains(&k.as_str())) {
        type_errors.insert(
            unknown.clone(),
            vec![FieldError::invalid(format!(
                "Unknown field: an order takes {}.",
                ORDER_FIELDS.join(", ")
            ))],
        );
    }
    // With no field of the wrong type, the database's checks are left to the write, under
    // the organization's lock (a type error is reported with every other error).
    let checks = DbChecks::AtWrite.now_if(!type_errors.is_empty());
    let validated = st
        .lodge
        .validate_order(access, project, &form, OrderSource::V1, checks)
        .await;
    if !type_errors.is_empty() {
        // Wrong types are reported together with every other bad field. A field of the
        // wrong type was read as absent: its type error replaces what that absence caused.
        // A registrar that cannot answer is said beside them too, as with the order's own
        // bad fields (found by review: the 400 was lost to a 503).
        let validated = validated.map_err(|e| e.unavailable_on("domain_name"));
        let mut errors = match validated.map_err(v1_keys) {
            Ok(_) => FieldErrors::new(),
            Err(ServiceError::Invalid(e)) => e,
            Err(e) => return Err(e),
        };
        errors.extend(type_errors);
        return Err(ServiceError::Invalid(errors));
    }
    let mut valid = validated.map_err(v1_keys)?;
    valid.idempotency = key.map(std::sync::Arc::new);
    let actor = access.actor();
    st.lodge.place_order(&valid, &actor).await.map_err(v1_keys)
}

/// Field errors keyed as `/v1`'s body names the fields (`coupon_code`, not the order
/// form's `coupon`).
fn v1_keys(e: ServiceError) -> ServiceError {
    match e {
        ServiceError::Invalid(mut errors) => {
            if let Some(c) = errors.remove("coupon") {
                errors
                    .entry("coupon_code".to_owned())
                    .or_default()
                    .extend(c);
            }
            ServiceError::Invalid(errors)
        }
        other => other,
    }
}

/// The hosting accounts of a project.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/projects/{project_id}/hosting",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"), PageQuery),
    responses((status = 200, body = Paginated<Hosting>), (status = 401), (status = 404)))]
pub async fn list_hosting(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paginated<Hosting>>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let (access, row) = st.lodge.project_access(&p, org, project).await?;
    let req = q.resolve()?;
    let page = st
        .lodge
        .project_hosting(&access, &row, req.limit(), req.offset())
        .await?;
    let catalog = st.lodge.catalog().await?;
    let path = format!("/v1/organizations/{org}/projects/{project}/hosting");
    let results = page
        .rows
        .into_iter()
        .map(|v| Hosting::from_view(v, &catalog).for_customer())
        .collect();
    Ok(Json(Paginated::new(&st, &path, req, page.count, results)?))
}

async fn hosting_detail(
    st: &AppState,
    access: &lodge_services::auth::Access,
    project: ProjectId,
    id: HostingId,
    client_ip: Option<std::net::IpAddr>,
) -> ApiResult<Hosting> {
    let view = st.lodge.hosting_detail(access, project, id).await?;
    let login_url = st.lodge.login_url(access, &view.hosting, client_ip).await;
    let tls = st.lodge.certificate_status(&view.hosting).await?;
    let mut out = Hosting::from_view(view, &*st.lodge.catalog().await?).for_customer();
    out.login_url = login_url;
    out.tls = tls.map(Into::into);
    Ok(out)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// 8 to 64 printable ASCII characters, with a letter and a digit.
    pub password: String,
}

/// Sets the account's control panel password (the worker sends it to the panel).
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/projects/{project_id}/hosting/{hosting_id}/password",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("hosting_id" = String, Path, description = "Hosting UUID")),
    request_body = PasswordRequest,
    responses((status = 202, body = Hosting), (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "The account is not live")))]
pub async fn change_password(
    State(st): State<AppState>,
    crate::extract::ClientIp(client_ip): crate::extract::ClientIp,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
    body: V1Later<PasswordRequest>,
) -> ApiResult<(StatusCode, Json<Hosting>)> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: HostingId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    // The role before the body: a viewer is told 403 whatever it sends.
    access.require_write()?;
    let body = body.get()?;
    st.lodge
        .change_hosting_password(&access, Some(project), id, &body.password)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(hosting_detail(&st, &access, project, id, client_ip).await?),
    ))
}

/// One hosting account, with its status history.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/projects/{project_id}/hosting/{hosting_id}",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("hosting_id" = String, Path, description = "Hosting UUID")),
    responses((status = 200, body = Hosting), (status = 401), (status = 404)))]
pub async fn get_hosting(
    State(st): State<AppState>,
    crate::extract::ClientIp(client_ip): crate::extract::ClientIp,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Hosting>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: HostingId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    Ok(Json(
        hosting_detail(&st, &access, project, id, client_ip).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// `immediate` or `end_of_period`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub reason: String,
}

/// Requests cancellation: `immediate` ends the account now; `end_of_period` at its next due
/// date. A never-paid account is cancelled at once with its order and invoice.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/projects/{project_id}/hosting/{hosting_id}/cancel",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("hosting_id" = String, Path, description = "Hosting UUID")),
    request_body = CancelRequest,
    responses((status = 200, body = Hosting), (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "Already cancelled or a cancellation is pending")))]
pub async fn cancel_hosting(
    State(st): State<AppState>,
    crate::extract::ClientIp(client_ip): crate::extract::ClientIp,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
    body: V1Later<CancelRequest>,
) -> ApiResult<Json<Hosting>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: HostingId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    access.require_write()?; // the role before the body, as V1Later promises
    let body = body.get()?;
    let kind = CancelType::parse(&body.kind)
        .ok_or_else(|| ServiceError::field("type", "\"immediate\" or \"end_of_period\"."))?;
    st.lodge
        .cancel_hosting(&access, Some(project), id, kind, body.reason.trim())
        .await?;
    Ok(Json(
        hosting_detail(&st, &access, project, id, client_ip).await?,
    ))
}

/// Withdraws a pending cancellation. Refused to the customer once an invoice of the account
/// was refunded after the cancellation was asked for (staff acting as the operator may
/// still withdraw it).
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/projects/{project_id}/hosting/{hosting_id}/revoke-cancellation",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("hosting_id" = String, Path, description = "Hosting UUID")),
    responses((status = 200, body = Hosting), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "No cancellation pending, or an invoice of the account was refunded since it was asked for")))]
pub async fn revoke_cancellation(
    State(st): State<AppState>,
    crate::extract::ClientIp(client_ip): crate::extract::ClientIp,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Hosting>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: HostingId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    st.lodge
        .revoke_cancellation(&access, Some(project), id)
        .await?;
    Ok(Json(
        hosting_detail(&st, &access, project, id, client_ip).await?,
    ))
}

/// The plan change request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePlanRequest {
    /// The new plan: its UUID or its slug.
    pub plan_id: String,
}

/// What a plan change did.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanChange {
    pub id: i64,
    /// `applied` (the account is on the new plan) or `awaiting_payment` (it moves when the
    /// invoice is paid).
    pub status: String,
    pub from_plan_id: String,
    pub to_plan_id: String,
    /// The current period, `[period_start, period_end)`: the due date is kept.
    pub period_start: String,
    pub period_end: String,
    /// Days from today to the period's end (`d`).
    pub days_left: i64,
    /// Days in the period (`D`).
    pub days_in_period: i64,
    /// The old and new prices of one period of the account's cycle (the new one is what
    /// it renews at). The old one is what the current period was paid at when that is
    /// less than the plan's price (a coupon, an introductory price): the change is
    /// prorated from it. A move to a plan listed no dearer is never invoiced.
    pub old_price: String,
    pub new_price: String,
    /// `(new_price − old_price) × d / D`, rounded once: positive is invoiced, negative
    /// given as account credit.
    pub amount: String,
    /// The invoice of an upgrade.
    pub invoice_id: Option<i64>,
    pub invoice_number: Option<String>,
    /// Account credit applied to that invoice.
    pub credit_applied: String,
    /// What is left to pay on it.
    pub amount_due: String,
    /// The hosted payment page while something is due.
    pub invoice_payment_url: Option<String>,
    /// Account credit given for a downgrade.
    pub credit_given: String,
}

impl PlanChange {
    fn new(o: &lodge_services::plan_change::PlanChangeOutcome, cur: Currency, base: &str) -> Self {
        PlanChange {
            id: o.change_id,
            status: o.status.clone(),
            from_plan_id: o.from_plan_id.to_string(),
            to_plan_id: o.to_plan_id.to_string(),
            period_start: o.period_start.clone(),
            period_end: o.period_end.clone(),
            days_left: o.days_left,
            days_in_period: o.days_in_period,
            old_price: wire::money_str(o.old_price_minor, cur),
            new_price: wire::money_str(o.new_price_minor, cur),
            amount: wire::money_str(o.charge_minor, cur),
            invoice_id: o.invoice_id,
            invoice_number: o.invoice_number.clone(),
            credit_applied: wire::money_str(o.credit_applied_minor, cur),
            amount_due: wire::money_str(o.amount_due_minor, cur),
            invoice_payment_url: o
                .payment_token
                .as_deref()
                .map(|t| wire::payment_url(base, t)),
            credit_given: wire::money_str(o.credit_given_minor, cur),
        }
    }
}

/// The answer to a plan change: the account as it is now, and what the change did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangePlanResponse {
    pub hosting: Hosting,
    pub plan_change: PlanChange,
}

/// Upgrades or downgrades an active account to another plan of its billing cycle, keeping
/// its due date (docs/billing.md, "Proration"). The difference of the two prices for the days
/// left in the current period is charged on an invoice (account credit applied first; the
/// account moves to the new plan when it is paid) or, for a downgrade, given as account
/// credit with the move at once. Either way the account renews at the new plan's price.
/// Send an `Idempotency-Key` header to make retries safe: a retry replays the first answer
/// and never charges twice.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/projects/{project_id}/hosting/{hosting_id}/change-plan",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("hosting_id" = String, Path, description = "Hosting UUID"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    request_body = ChangePlanRequest,
    responses((status = 200, body = ChangePlanResponse),
              (status = 400, description = "Field errors: no such plan, not on sale, the current plan, no price for the account's cycle"),
              (status = 401), (status = 403), (status = 404),
              (status = 409, description = "The account is not active, has a pending cancellation or an unpaid plan-change invoice, or is on a free or one-time cycle"),
              (status = 422, description = "Idempotency-Key reused with another body")))]
pub async fn change_plan(
    State(st): State<AppState>,
    crate::extract::ClientIp(client_ip): crate::extract::ClientIp,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
    key: Option<IdempotencyKey>,
    V1Body(body): V1Body,
) -> Response {
    let run = async {
        let org: OrganizationId = path_id(&org)?;
        let project: ProjectId = path_id(&project)?;
        let id: HostingId = path_id(&id)?;
        let (access, _) = st.lodge.project_access(&p, org, project).await?;
        access.require_write()?;
        let req: ChangePlanRequest = parse_json(&body)?;
        let key = idempotency::key(
            &st,
            key,
            format!("v1:user:{}", p.user),
            "POST",
            &format!("/v1/organizations/{org}/projects/{project}/hosting/{id}/change-plan"),
            &body,
        );
        let answer = st
            .lodge
            .change_plan(&access, Some(project), id, &req.plan_id, key.as_ref())
            .await?;
        let hosting = hosting_detail(&st, &access, project, id, client_ip).await?;
        let (cur, base) = (st.lodge.settings.currency, st.public_base_url.clone());
        Ok::<_, ApiError>(idempotency::respond(answer, |o| {
            Json(ChangePlanResponse {
                hosting,
                plan_change: PlanChange::new(&o, cur, &base),
            })
            .into_response()
        }))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
