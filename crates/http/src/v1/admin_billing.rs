//! Staff billing operations: account credit, recorded payments, refunds, manual domain
//! completion, and the registry tasks the `manual` registrar leaves to staff.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lodge_core::{Currency, DomainId, Money, OrganizationId, RefundTo};
use lodge_services::ServiceError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::V1Path as Path;
use crate::extract::{
    parse_json, path_id, IdempotencyKey, PageQuery, Paginated, Staff, V1Body, V1Json, V1Query,
};
use crate::idempotency;
use crate::wire::{money_str, ts, ts_opt, Domain, Invoice, Payment};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_credit))
        .routes(routes!(record_payment))
        .routes(routes!(pay_invoice_from_credit))
        .routes(routes!(cancel_invoice))
        .routes(routes!(refund_invoice, invoice_refunds))
        .routes(routes!(complete_domain))
        .routes(routes!(fail_domain))
        .routes(routes!(list_registry_tasks))
        .routes(routes!(finish_registry_task))
}

/// An amount as a decimal string (`"10.00"`, read as text) or a JSON number (`10`, `10.5`;
/// a number with a fraction is read as a double, exact to 15 significant digits, so send
/// the string for exactness). At most the currency's decimals, and at most
/// 10,000,000,000.00.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Amount {
    Text(String),
    #[schema(value_type = f64)]
    Number(serde_json::Number),
}

impl Amount {
    pub fn minor(&self, cur: lodge_core::Currency, field: &str) -> Result<i64, ServiceError> {
        let too_large = |text: &str| {
            ServiceError::field(
                field,
                format!(
                    "{text}: an amount is at most {} either way.",
                    Money::new(lodge_core::money::MAX_AMOUNT_MINOR, cur)
                ),
            )
        };
        let text = match self {
            Amount::Text(s) => s.trim().to_owned(),
            // A number past every amount is said to be too large, as typed: JSON's
            // integers beyond 64 bits are read as doubles, whose text is an exponent's
            // (found by the engines' parity audit: "invalid amount 1.8446744073709552e+19").
            Amount::Number(n) if n.as_f64().is_some_and(|f| f.abs() >= 1e15) => {
                return Err(too_large("This number"));
            }
            Amount::Number(n) => n.to_string(),
        };
        let minor = Money::parse_decimal(&text, cur)
            .map(|m| m.minor())
            .map_err(|e| ServiceError::field(field, e.to_string()))?;
        if minor.unsigned_abs() > lodge_core::money::MAX_AMOUNT_MINOR.unsigned_abs() {
            return Err(too_large(&format!("{text:?}")));
        }
        Ok(minor)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCredit {
    /// Positive: a deposit. Negative: credit taken off (a correction: a deposit typed
    /// wrong, credit given by mistake), never below a zero balance, with a `note`.
    pub amount: Amount,
    /// The ledger entry's note, which the customer sees (required to take credit off).
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditBalance {
    pub organization_id: String,
    pub balance: String,
}

/// Adds account credit to an organization (a deposit in its ledger), or takes some off with
/// a negative amount and a note (an `adjustment`, never below a zero balance: `409`). Send
/// an `Idempotency-Key` to make a retry safe: the same key and body replay the first answer.
#[utoipa::path(post, path = "/v1/admin/organizations/{organization_id}/credit", tag = "admin",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    request_body = AddCredit,
    responses((status = 201, body = CreditBalance), (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "More credit taken off than the balance holds, or the key's first request was answered by an earlier version"),
              (status = 422, description = "Idempotency-Key reused with another body")))]
async fn add_credit(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(org): Path<String>,
    key: Option<IdempotencyKey>,
    V1Body(body): V1Body,
) -> Response {
    let key = idempotency::key(
        &st,
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
    let note = match b.note.trim() {
        "" if amount < 0 => {
            return Err(ServiceError::field(
                "note",
                "Say why credit is taken off: the customer sees it in the ledger.",
            )
            .into())
        }
        "" => "Credit added by staff",
        note => note,
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
#[serde(deny_unknown_fields)]
pub struct RecordPayment {
    pub amount: Amount,
    /// e.g. `bank_transfer`, `card`, `cheque`.
    pub method: String,
    /// The transaction reference; unique per method.
    #[schema(min_length = 1, max_length = 200)]
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
/// once; what is beyond what is due goes to the organization's credit, and money for an
/// invoice already paid or cancelled goes to credit whole (the invoice unchanged); the same
/// method, reference and amount again changes nothing (`200`); the same reference with
/// another amount, or for another invoice, is refused (`400`).
#[utoipa::path(post, path = "/v1/admin/invoices/{invoice_id}/payments", tag = "admin",
    security(("bearer" = [])),
    params(("invoice_id" = i64, Path, description = "Invoice id")),
    request_body = RecordPayment,
    responses((status = 201, body = RecordedPayment), (status = 200, body = RecordedPayment, description = "Already recorded"),
              (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "The invoice is a draft")))]
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
            lodge_services::billing::IfSettled::ToCredit,
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
            invoice: Invoice::new(
                &out.invoice,
                &st.public_base_url,
                st.lodge.sealer.payment_tokens(),
                None,
            ),
        }),
    ))
}

/// Pays an unpaid invoice in full from its organization's account credit, as the customer's
/// payment page does (a customer who asks staff to use their credit): the invoice is paid,
/// the balance goes down by what was due, and the ledger says so. Refused (`409`) when the
/// invoice is no longer unpaid or the balance does not cover what is due (nothing is paid
/// in part). A retry after it went through is that `409`, nothing paid twice; send an
/// `Idempotency-Key` to have the retry answered the payment's `200` instead (replayed).
#[utoipa::path(post, path = "/v1/admin/invoices/{invoice_id}/pay-from-credit", tag = "admin",
    security(("bearer" = [])),
    params(("invoice_id" = i64, Path, description = "Invoice id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    responses((status = 200, body = Invoice, description = "Paid (also a replayed retry): the invoice as it is now"),
              (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "The invoice is not unpaid, or the credit does not cover what is due"),
              (status = 422, description = "Idempotency-Key reused with another request")))]
async fn pay_invoice_from_credit(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    key: Option<IdempotencyKey>,
) -> ApiResult<Response> {
    let id: i64 = path_id(&id)?;
    let key = idempotency::key(
        &st,
        key,
        format!("v1:user:{}", staff.user),
        "POST",
        &format!("/v1/admin/invoices/{id}/pay-from-credit"),
        b"",
    );
    let answer = st
        .lodge
        .pay_from_credit_by_staff(id, &format!("staff:{}", staff.user), key.as_ref())
        .await?;
    let d = st.lodge.invoice_detail(id).await?;
    let invoice = Invoice::detailed(d, &st.public_base_url, st.lodge.sealer.payment_tokens());
    Ok(idempotency::respond(answer, |()| {
        Json(invoice).into_response()
    }))
}

/// Cancels an unpaid invoice its customer no longer wants, as the customer may through
/// `DELETE /apiv2/billing/invoices/{id}`: an order's first invoice (the order and its
/// services are cancelled) or a plan change's (the change is withdrawn, the account stays
/// on its plan). What it received (credit applied, payments) goes back to the account's
/// credit. Any other invoice is refused (`409`: a renewal ends with its account's
/// cancellation), and so is one no longer unpaid: a retry after it went through is that
/// `409`, nothing is done twice.
#[utoipa::path(post, path = "/v1/admin/invoices/{invoice_id}/cancel", tag = "admin",
    security(("bearer" = [])),
    params(("invoice_id" = i64, Path, description = "Invoice id")),
    responses((status = 200, body = Invoice, description = "Cancelled: the invoice as it is now"),
              (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "Not an unpaid first invoice of a pending service, nor the unpaid invoice of a plan change")))]
async fn cancel_invoice(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Invoice>> {
    let id: i64 = path_id(&id)?;
    let d = st
        .lodge
        .cancel_invoice_by_staff(id, &format!("staff:{}", staff.user))
        .await?;
    Ok(Json(Invoice::detailed(
        d,
        &st.public_base_url,
        st.lodge.sealer.payment_tokens(),
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundInvoice {
    pub amount: Amount,
    /// `credit` (to the organization's account credit) or `cash` (money sent back outside
    /// Lodge, recorded here).
    pub to: String,
    /// Why; kept with the refund and, to credit, in the ledger entry.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub reason: String,
    /// The bank's or gateway's reference of the money sent back: required for `cash`, where
    /// the same reference and amount again changes nothing (another amount is refused).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub reference: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Refund {
    pub id: i64,
    pub invoice_id: i64,
    pub organization_id: String,
    pub amount: String,
    /// `credit` or `cash`.
    pub to: String,
    pub reference: Option<String>,
    pub reason: String,
    /// Who refunded it (`staff:<user id>`).
    pub actor: String,
    #[schema(format = DateTime)]
    pub created: String,
    /// When the card gateway refused it (a refund to a card), and its words: nothing
    /// went back, and the invoice counts it no more. Null otherwise.
    pub failed: Option<String>,
    pub failure: Option<String>,
}

impl Refund {
    fn new(r: &lodge_services::refunds::Refund) -> Self {
        let cur = Currency::parse(&r.currency).unwrap_or(Currency::USD);
        Refund {
            id: r.id,
            invoice_id: r.invoice_id,
            organization_id: r.organization_id.to_string(),
            amount: money_str(r.amount_minor, cur),
            to: r.to.as_str().to_owned(),
            reference: r.reference.clone(),
            reason: r.reason.clone(),
            actor: r.actor.clone(),
            created: ts(r.created_at),
            failed: r.failed_at.map(ts),
            failure: r.failure.clone(),
        }
    }
}

/// What an invoice received and what of it went back.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceRefundState {
    pub invoice_id: i64,
    pub number: Option<String>,
    /// `paid`, `partially_refunded`, `refunded` (or any other invoice status: nothing to
    /// refund).
    pub status: String,
    pub currency: String,
    pub total: String,
    /// Credit applied and payments received.
    pub received: String,
    pub refunded: String,
    /// What can still be refunded (to credit).
    pub refundable: String,
    /// What can still be refunded in cash (payments received less cash refunded).
    pub cash_refundable: String,
    /// What plan downgrades in the periods it paid for gave back of it as account credit
    /// already: no longer refundable, and counted with `refunded` in its status (an
    /// invoice is `refunded` once the two cover what it received).
    pub given_back: String,
}

impl InvoiceRefundState {
    fn new(s: &lodge_services::refunds::RefundState) -> Self {
        let cur = Currency::parse(&s.currency).unwrap_or(Currency::USD);
        InvoiceRefundState {
            invoice_id: s.invoice_id,
            number: s.number.clone(),
            status: s.status.as_str().to_owned(),
            currency: s.currency.clone(),
            total: money_str(s.total_minor, cur),
            received: money_str(s.received_minor, cur),
            refunded: money_str(s.refunded_minor, cur),
            refundable: money_str(s.refundable_minor, cur),
            cash_refundable: money_str(s.cash_refundable_minor, cur),
            given_back: money_str(s.given_back_minor, cur),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordedRefund {
    pub refund: Refund,
    /// `false` when this cash reference was already recorded for this invoice (nothing
    /// changed).
    pub created: bool,
    pub invoice: InvoiceRefundState,
    /// The organization's credit balance after it.
    pub balance: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceRefunds {
    pub invoice: InvoiceRefundState,
    pub count: usize,
    /// Oldest first.
    pub results: Vec<Refund>,
}

/// Refunds part or all of what a paid invoice received (credit applied and payments), to
/// the organization's account credit or as a cash refund recorded with its bank or gateway
/// reference. The invoice becomes `partially_refunded`, then `refunded`; its services stay
/// as they are. A cash refund never exceeds the payments received less cash already
/// refunded. The same cash reference and amount again changes nothing (`200`; another
/// amount under it is refused, `400`); send an
/// `Idempotency-Key` to make any retry safe.
#[utoipa::path(post, path = "/v1/admin/invoices/{invoice_id}/refunds", tag = "admin",
    security(("bearer" = [])),
    params(("invoice_id" = i64, Path, description = "Invoice id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    request_body = RefundInvoice,
    responses((status = 201, body = RecordedRefund), (status = 200, body = RecordedRefund, description = "This cash reference was already recorded"),
              (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "The invoice is not paid, or the amount exceeds what is left to refund (in cash: the payments left)"),
              (status = 422, description = "Idempotency-Key reused with another body")))]
async fn refund_invoice(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    key: Option<IdempotencyKey>,
    V1Body(body): V1Body,
) -> Response {
    let key = idempotency::key(
        &st,
        key,
        format!("v1:user:{}", staff.user),
        "POST",
        &format!("/v1/admin/invoices/{id}/refunds"),
        &body,
    );
    refund(&st, &staff, &id, &body, key.as_ref())
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn refund(
    st: &AppState,
    staff: &lodge_services::auth::Principal,
    id: &str,
    body: &[u8],
    key: Option<&lodge_services::idempotency::IdempotencyKey>,
) -> ApiResult<Response> {
    let id: i64 = path_id(id)?;
    let b: RefundInvoice = parse_json(body)?;
    let amount = b.amount.minor(st.lodge.settings.currency, "amount")?;
    let to = RefundTo::parse(b.to.trim())
        .ok_or_else(|| ServiceError::field("to", "A refund goes to `credit` or `cash`."))?;
    let answer = st
        .lodge
        .refund_invoice(
            id,
            &lodge_services::refunds::RefundRequest {
                amount_minor: amount,
                to,
                reason: &b.reason,
                reference: b.reference.as_deref(),
            },
            &format!("staff:{}", staff.user),
            key,
        )
        .await?;
    Ok(idempotency::respond(answer, |out| {
        let cur = Currency::parse(&out.invoice.currency).unwrap_or(Currency::USD);
        let status = if out.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        (
            status,
            Json(RecordedRefund {
                refund: Refund::new(&out.refund),
                created: out.created,
                invoice: InvoiceRefundState::new(&out.invoice),
                balance: money_str(out.balance_minor, cur),
            }),
        )
            .into_response()
    }))
}

/// The refunds of an invoice, oldest first, with what it received and what is left to
/// refund.
#[utoipa::path(get, path = "/v1/admin/invoices/{invoice_id}/refunds", tag = "admin",
    security(("bearer" = [])),
    params(("invoice_id" = i64, Path, description = "Invoice id")),
    responses((status = 200, body = InvoiceRefunds), (status = 400, description = "A query parameter it does not take"), (status = 401), (status = 403), (status = 404)))]
async fn invoice_refunds(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    _: crate::extract::OnlyParams<crate::extract::NoParams>,
    Path(id): Path<String>,
) -> ApiResult<Json<InvoiceRefunds>> {
    let id: i64 = path_id(&id)?;
    let r = st.lodge.invoice_refunds(id).await?;
    Ok(Json(InvoiceRefunds {
        invoice: InvoiceRefundState::new(&r.invoice),
        count: r.refunds.len(),
        results: r.refunds.iter().map(Refund::new).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
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
              (status = 409, description = "Not pending, or its order is not paid yet")))]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailDomain {
    /// Why it will not happen (kept as the domain's registry error; at most 500
    /// characters, one line).
    pub reason: String,
}

/// Gives up a paid registration or transfer that will not happen: what paid for it goes
/// back to the organization's credit (once, however often this is sent), and the domain is
/// cancelled, which frees its name. The hosting account ordered with it stays.
#[utoipa::path(post, path = "/v1/admin/domains/{domain_id}/fail", tag = "admin",
    security(("bearer" = [])),
    params(("domain_id" = String, Path, description = "Domain UUID")),
    request_body = FailDomain,
    responses((status = 200, body = Domain), (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "Not pending, or its order is not paid yet")))]
async fn fail_domain(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    V1Json(b): V1Json<FailDomain>,
) -> ApiResult<Json<Domain>> {
    let id: DomainId = path_id(&id)?;
    let actor = format!("staff:{}", staff.user);
    let d = st.lodge.fail_domain(id, &b.reason, &actor).await?;
    Ok(Json(Domain::new(d, &*st.lodge.catalog().await?)))
}

/// A step staff must take at a registry by hand: the `manual` registrar (the TLDs no
/// configured registrar serves) renews, changes nameservers and locks nothing itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryTask {
    pub id: i64,
    pub domain_id: String,
    /// The domain's name.
    pub domain: String,
    /// `renew` (for `detail.years`, from `detail.expiration_date`), `nameservers` (set
    /// them to `detail.nameservers`) or `lock` (`detail.locked`: lock or unlock it
    /// against transfer).
    pub kind: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    #[schema(format = DateTime)]
    pub created: String,
    /// When it was done (or superseded), by whom, and `outcome`: `done`, or `superseded`
    /// (a later change of the same kind replaced it).
    pub done: Option<String>,
    pub done_by: Option<String>,
    pub outcome: Option<String>,
}

fn registry_task(t: lodge_services::model::RegistryTaskRow) -> RegistryTask {
    RegistryTask {
        id: t.id,
        domain_id: t.domain_id.to_string(),
        domain: t.domain_name,
        kind: t.kind,
        detail: serde_json::from_str(&t.detail).unwrap_or_default(),
        created: ts(t.created_at),
        done: ts_opt(t.done_at),
        done_by: t.done_by,
        outcome: t.outcome,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegistryTaskQuery {
    /// `open` (default) or `all`.
    #[param(pattern = "^(open|all)$")]
    pub status: Option<String>,
    /// Only this domain's (UUID).
    pub domain_id: Option<String>,
}

/// What [`list_registry_tasks`] takes: its filters and the page.
pub struct RegistryTaskParams;
impl crate::extract::KnownParams for RegistryTaskParams {
    const NAMES: &'static [&'static str] = &["status", "domain_id", "page", "page_size"];
}

/// The registry tasks the `manual` registrar left to staff, oldest first: each paid
/// renewal, and each customer change of nameservers or transfer lock, of a domain whose
/// TLD no configured registrar serves. Do it at the registry, then mark it done.
#[utoipa::path(get, path = "/v1/admin/registry-tasks", tag = "admin", security(("bearer" = [])),
    params(RegistryTaskQuery, PageQuery),
    responses((status = 200, body = Paginated<RegistryTask>), (status = 400), (status = 401), (status = 403)))]
async fn list_registry_tasks(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    _: crate::extract::OnlyParams<RegistryTaskParams>,
    V1Query(f): V1Query<RegistryTaskQuery>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paginated<RegistryTask>>> {
    let open = match f.status.as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(_) => return Err(ServiceError::field("status", "open or all.").into()),
    };
    let domain = f
        .domain_id
        .as_deref()
        .map(|d| {
            d.parse::<DomainId>()
                .map_err(|_| ServiceError::field("domain_id", "A domain's UUID."))
        })
        .transpose()?;
    let req = q.resolve()?;
    let (rows, count) = st
        .lodge
        .registry_tasks(open, domain, req.limit(), req.offset())
        .await?;
    let path = crate::extract::with_filters(
        "/v1/admin/registry-tasks",
        &[
            ("status", f.status.as_deref()),
            ("domain_id", f.domain_id.as_deref()),
        ],
    );
    Ok(Json(Paginated::new(
        &st,
        &path,
        req,
        count,
        rows.into_iter().map(registry_task).collect(),
    )?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRegistryTask {
    /// For a renewal: the expiration date the registry now reports (`YYYY-MM-DD`, later
    /// than the one recorded), recorded on the domain. Not taken by other tasks.
    #[serde(default)]
    #[schema(format = Date)]
    pub expiration_date: Option<String>,
}

/// Marks a registry task done (a renewal's with the registry's new expiration date).
#[utoipa::path(post, path = "/v1/admin/registry-tasks/{task_id}/done", tag = "admin",
    security(("bearer" = [])),
    params(("task_id" = i64, Path, description = "Task id")),
    request_body = FinishRegistryTask,
    responses((status = 200, body = RegistryTask), (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "Done or superseded already")))]
async fn finish_registry_task(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    V1Json(b): V1Json<FinishRegistryTask>,
) -> ApiResult<Json<RegistryTask>> {
    let id: i64 = id.parse().map_err(|_| ServiceError::NotFound)?;
    let by = format!("staff:{}", staff.user);
    let t = st
        .lodge
        .finish_registry_task(id, &by, b.expiration_date.as_deref())
        .await?;
    Ok(Json(registry_task(t)))
}
