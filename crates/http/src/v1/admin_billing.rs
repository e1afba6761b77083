//! Staff billing operations: account credit, recorded payments, manual domain completion.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lodge_core::{DomainId, Money, OrganizationId};
use lodge_services::ServiceError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::{parse_json, path_id, IdempotencyKey, Staff, V1Json};
use crate::idempotency;
use crate::wire::{money_str, Domain, Invoice, Payment};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_credit))
        .routes(routes!(record_payment))
        .routes(routes!(complete_domain))
}

/// An amount as a decimal string (`"10.00"`) or a JSON number (`10`, `10.5`); read as text,
/// never through a float.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Amount {
    Text(String),
    #[schema(value_type = f64)]
    Number(serde_json::Number),
}

impl Amount {
    pub fn minor(&self, cur: lodge_core::Currency, field: &str) -> Result<i64, ServiceError> {
        let text = match self {
            Amount::Text(s) => s.trim().to_owned(),
            Amount::Number(n) => n.to_string(),
        };
        Money::parse_decimal(&text, cur)
            .map(|m| m.minor())
            .map_err(|e| ServiceError::field(field, format!("{text:?}: {e}")))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddCredit {
    pub amount: Amount,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditBalance {
    pub organization_id: String,
    pub balance: String,
}

/// Adds account credit to an organization (a deposit in its ledger). Send an
/// `Idempotency-Key` to make a retry safe: the same key and body replay the first answer.
#[utoipa::path(post, path = "/v1/admin/organizations/{organization_id}/credit", tag = "admin",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    request_body = AddCredit,
    responses((status = 201, body = CreditBalance), (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "The key's first request was answered by an earlier version"),
              (status = 422, description = "Idempotency-Key reused with another body")))]
async fn add_credit(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(org): Path<String>,
    key: Option<IdempotencyKey>,
    body: Bytes,
) -> Response {
    let key = idempotency::key(
        key,
        format!("v1:user:{}", staff.user),
        "POST",
        &format!("/v1/admin/organizations/{org}/credit"),
        &body,
    );
    deposit(&st, &staff, &org, &body, key.as_ref())
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn deposit(
    st: &AppState,
    staff: &lodge_services::auth::Principal,
    org: &str,
    body: &[u8],
    key: Option<&lodge_services::idempotency::IdempotencyKey>,
) -> ApiResult<Response> {
    let org: OrganizationId = path_id(org)?;
    let b: AddCredit = parse_json(if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    })?;
    let cur = st.lodge.settings.currency;
    let amount = b.amount.minor(cur, "amount")?;
    let note = if b.note.trim().is_empty() {
        "Credit added by staff"
    } else {
        b.note.trim()
    };
    let answer = st
        .lodge
        .add_credit(org, amount, note, &format!("staff:{}", staff.user), key)
        .await?;
    Ok(idempotency::respond(answer, |d| {
        (
            StatusCode::CREATED,
            Json(CreditBalance {
                organization_id: d.organization_id.to_string(),
                balance: money_str(d.balance_minor, cur),
            }),
        )
            .into_response()
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RecordPayment {
    pub amount: Amount,
    /// e.g. `bank_transfer`, `card`, `cheque`.
    pub method: String,
    /// The transaction reference; unique per method.
    pub reference: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordedPayment {
    pub payment: Payment,
    /// `false` when this method and reference were already recorded (nothing changed).
    pub created: bool,
    pub invoice: Invoice,
}

/// Records a payment received outside Lodge. Paying the invoice in full activates its order
/// once; the same method and reference again changes nothing (`200`).
#[utoipa::path(post, path = "/v1/admin/invoices/{invoice_id}/payments", tag = "admin",
    security(("bearer" = [])),
    params(("invoice_id" = i64, Path, description = "Invoice id")),
    request_body = RecordPayment,
    responses((status = 201, body = RecordedPayment), (status = 200, body = RecordedPayment, description = "Already recorded"),
              (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "The invoice is not unpaid")))]
async fn record_payment(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    V1Json(b): V1Json<RecordPayment>,
) -> ApiResult<(StatusCode, Json<RecordedPayment>)> {
    let id: i64 = path_id(&id)?;
    let cur = st.lodge.settings.currency;
    let amount = b.amount.minor(cur, "amount")?;
    let out = st
        .lodge
        .record_payment(
            id,
            amount,
            b.method.trim(),
            &b.reference,
            &format!("staff:{}", staff.user),
        )
        .await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(RecordedPayment {
            payment: Payment::new(&out.payment),
            created: out.created,
            invoice: Invoice::new(&out.invoice, &st.public_base_url, None),
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CompleteDomain {
    /// Years registered (default 1).
    #[serde(default)]
    pub years: Option<u32>,
    #[serde(default)]
    pub nameservers: Vec<String>,
}

/// Marks a pending registration or transfer done (for the `manual` registrar).
#[utoipa::path(post, path = "/v1/admin/domains/{domain_id}/complete", tag = "admin",
    security(("bearer" = [])),
    params(("domain_id" = String, Path, description = "Domain UUID")),
    request_body = CompleteDomain,
    responses((status = 200, body = Domain), (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "Not pending")))]
async fn complete_domain(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
    V1Json(b): V1Json<CompleteDomain>,
) -> ApiResult<Json<Domain>> {
    let id: DomainId = path_id(&id)?;
    let d = st
        .lodge
        .complete_domain(id, b.years.unwrap_or(1), &b.nameservers)
        .await?;
    Ok(Json(Domain::new(d, &*st.lodge.catalog().await?)))
}
