//! `GET /apiv2/billing/cart`, `GET /apiv2/billing/invoices`, `GET|DELETE
//! /apiv2/billing/invoices/{id}`, and paying at `GET /apiv2/billing/pay/{method}/{invoices}`
//! and `GET /apiv2/pay/{method}/{invoices}` (the path InterServer's web client calls).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lodge_core::{Currency, InvoiceStatus};
use lodge_services::model::InvoiceRow;
use lodge_services::queries::due_now;
use lodge_services::storefront::{BilledInvoice, CartLine, PrepayOutcome};
use lodge_services::websites::{InvoiceRef, Settlement};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{website_status, Customer, V2Error, V2Path, V2Query, V2Result};
use crate::idempotency;
use crate::wire::{money_number, money_str, payment_url, ts};
use crate::AppState;

/// `2026-03-31 10:00:00` (InterServer's date-time).
fn datetime(us: i64) -> String {
    let t = ts(us);
    match (t.get(..10), t.get(11..19)) {
        (Some(d), Some(h)) => format!("{d} {h}"),
        _ => t,
    }
}

fn day(us: i64) -> String {
    ts(us).get(..10).unwrap_or_default().to_owned()
}

/// `$5.00`.
fn display(minor: i64, cur: Currency) -> String {
    format!("{}{}", cur.symbol(), money_str(minor, cur))
}

fn currency_of(i: &InvoiceRow, default: Currency) -> Currency {
    Currency::parse(&i.currency).unwrap_or(default)
}

/// InterServer's per-module settings as its web client reads them from the cart.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ModuleSettings {
    pub billing_days_offset: i64,
    pub delete_pending_days: i64,
    pub email_from: String,
    pub imgname: String,
    pub menuname: String,
    pub prefix: String,
    pub repeat_billing_method: String,
    pub service_id_offset: i64,
    pub suspend_days: i64,
    pub suspend_warning_days: i64,
    pub table: String,
    pub tblname: String,
    pub title: String,
    pub title_field: String,
    pub title_field2: String,
    pub title_field3: String,
    pub use_packages: bool,
    pub use_repeat_invoice: bool,
}

/// The website module: its services live in the client's `/websites/{id}` pages, and a
/// cart row's `service_label` is `website<id>`.
const WEBSITE_PREFIX: &str = "website";

fn webhosting_settings(st: &AppState) -> ModuleSettings {
    let s = &st.lodge.settings;
    ModuleSettings {
        billing_days_offset: 0,
        delete_pending_days: s.invoice_expiry_days,
        email_from: String::new(),
        imgname: String::new(),
        menuname: "Webhosting".into(),
        prefix: WEBSITE_PREFIX.into(),
        repeat_billing_method: "1".into(),
        service_id_offset: 0,
        suspend_days: s.policy.suspend_after_days,
        suspend_warning_days: 0,
        table: "websites".into(),
        tblname: "Websites".into(),
        title: "Web Hosting".into(),
        title_field: "website_hostname".into(),
        title_field2: "website_username".into(),
        title_field3: String::new(),
        use_packages: true,
        use_repeat_invoice: true,
    }
}

/// A way to pay the cart offers besides prepay.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentMethodData {
    pub link_class: String,
    pub link_style: String,
    pub text: String,
    pub image: String,
    pub image_style: String,
}

/// One unpaid invoice in the cart.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartRow {
    /// `website<id>` for a website's invoice, else the invoice id.
    pub service_label: String,
    pub invoices_id: i64,
    /// What is still due (total − credit applied − paid).
    #[schema(value_type = f64)]
    pub invoices_amount: Box<serde_json::value::RawValue>,
    /// `webhosting`, or `default` for an invoice that bills no website.
    pub invoices_module: String,
    /// The website's id (`0` when none).
    pub invoices_service: i64,
    pub invoices_description: String,
    pub invoices_currency: String,
    pub invoices_date: String,
    pub invoices_due_date: String,
    pub invoices_paid: i64,
    pub date: String,
    pub days_old: i64,
    pub service_status: String,
    /// `$5.00`.
    pub currency_display: String,
    pub service: String,
    pub collapse: i64,
    pub service_line: i64,
}

/// InterServer's cart: the unpaid invoices and how they can be paid.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartResponse {
    pub invrows: Vec<CartRow>,
    /// The account credit.
    #[schema(value_type = f64)]
    pub prepay: Box<serde_json::value::RawValue>,
    pub currency: String,
    #[serde(rename = "currencySymbol")]
    pub currency_symbol: String,
    #[serde(rename = "paymentMethodsData")]
    pub payment_methods_data: BTreeMap<String, PaymentMethodData>,
    pub modules: BTreeMap<String, ModuleSettings>,
    pub modules_counts: BTreeMap<String, i64>,
    /// Currencies offered: label → code.
    pub currency_arr: BTreeMap<String, String>,
    pub invoice_days: i64,
    /// The `service_label`s of the rows.
    pub invoices: Vec<String>,
    pub total: String,
    pub total_display: String,
    pub total_invoices: String,
    pub cc_auto: i64,
    pub payssion_min: i64,
    pub ima: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CartQuery {
    /// Only invoices issued this many days ago or later (`-1`, `0` or none: all).
    #[param(value_type = Option<i64>, minimum = -1, maximum = 36600)]
    pub invoice_days: Option<String>,
}

/// The longest look-back `invoice_days` takes: a hundred years.
const MAX_INVOICE_DAYS: i64 = 36_600;

impl CartQuery {
    /// `None` for all invoices; a 400 in InterServer's shape for anything that is not a
    /// whole number of days from -1 to 36600.
    fn days(&self) -> V2Result<Option<i64>> {
        let Some(v) = self.invoice_days.as_deref() else {
            return Ok(None);
        };
        match v.trim().parse::<i64>() {
            Ok(d) if (-1..=MAX_INVOICE_DAYS).contains(&d) => Ok((d > 0).then_some(d)),
            _ => Err(V2Error(
                StatusCode::BAD_REQUEST,
                "invoice_days must be a whole number of days from -1 (all) to 36600.".into(),
            )),
        }
    }
}

fn cart_row(l: &CartLine, default: Currency) -> CartRow {
    let i = &l.invoice;
    let cur = currency_of(i, default);
    let (label, module, service, status, name) = match &l.website {
        Some(w) => (
            format!("{WEBSITE_PREFIX}{}", w.legacy_id),
            "webhosting",
            w.legacy_id,
            website_status(w.status, w.cancel_kind()).to_owned(),
            w.domain_name.clone(),
        ),
        None => (
            i.id.to_string(),
            "default",
            0,
            String::new(),
            format!(
                "Invoice {}",
                i.number.clone().unwrap_or_else(|| i.id.to_string())
            ),
        ),
    };
    CartRow {
        service_label: label,
        invoices_id: i.id,
        invoices_amount: money_number(l.due_minor, cur),
        invoices_module: module.into(),
        invoices_service: service,
        invoices_description: if l.description.is_empty() {
            name.clone()
        } else {
            l.description.clone()
        },
        invoices_currency: cur.code().to_owned(),
        invoices_date: datetime(i.issued_at),
        invoices_due_date: i.due_date.clone(),
        invoices_paid: 0,
        date: day(i.issued_at),
        days_old: l.days_old,
        service_status: status,
        currency_display: display(l.due_minor, cur),
        service: name,
        collapse: 0,
        service_line: 0,
    }
}

/// The unpaid invoices of the account in InterServer's cart shape, with the account credit
/// as `prepay` (the client offers "PrePay" when it covers the rows it pays).
#[utoipa::path(get, path = "/apiv2/billing/cart", tag = "apiv2", operation_id = "getBillingCart",
    security(("api_key" = [])), params(CartQuery),
    responses((status = 200, body = CartResponse), (status = 400, description = "`invoice_days` is not a number of days", body = super::V2ErrorBody),
              (status = 401, body = super::V2ErrorBody)))]
pub async fn cart(
    State(st): State<AppState>,
    c: Customer,
    V2Query(q): V2Query<CartQuery>,
) -> V2Result<Response> {
    let org = c.access.organization;
    st.whole_lists.one_at_a_time(org, cart_of(&st, &c, q)).await
}

async fn cart_of(st: &AppState, c: &Customer, q: CartQuery) -> V2Result<CartResponse> {
    let days = q.days()?;
    let cart = st.lodge.cart(&c.access, days).await?;
    let cur = st.lodge.settings.currency;
    let rows: Vec<CartRow> = cart.lines.iter().map(|l| cart_row(l, cur)).collect();
    let total: i64 = cart.lines.iter().map(|l| l.due_minor).sum();
    let websites = cart.lines.iter().filter(|l| l.website.is_some()).count();
    let mut modules_counts = BTreeMap::new();
    if websites > 0 {
        modules_counts.insert(
            "webhosting".to_owned(),
            i64::try_from(websites).unwrap_or(i64::MAX),
        );
    }
    let mut methods = BTreeMap::new();
    methods.insert(
        ONLINE.to_owned(),
        PaymentMethodData {
            link_class: String::new(),
            link_style: String::new(),
            text: "Pay online".into(),
            image: String::new(),
            image_style: String::new(),
        },
    );
    Ok(CartResponse {
        invoices: rows.iter().map(|r| r.service_label.clone()).collect(),
        total_invoices: rows.len().to_string(),
        invrows: rows,
        prepay: money_number(cart.credit_balance_minor.max(0), cur),
        currency: cur.code().to_owned(),
        currency_symbol: cur.symbol().to_owned(),
        payment_methods_data: methods,
        modules: BTreeMap::from([("webhosting".to_owned(), webhosting_settings(st))]),
        modules_counts,
        currency_arr: BTreeMap::from([(cur.code().to_owned(), cur.code().to_owned())]),
        invoice_days: days.unwrap_or(-1),
        total: money_str(total, cur),
        total_display: display(total, cur),
        cc_auto: 0,
        payssion_min: 0,
        ima: "client".into(),
    })
}

/// The cart's way to pay on Lodge's payment page (card, bank transfer, account credit).
const ONLINE: &str = "online";

/// The methods `/pay/{method}/…` accepts: `prepay` pays from credit, every other one
/// (InterServer's gateways and the cart's `online`) continues on the payment page.
const METHODS: [&str; 10] = [
    "prepay", ONLINE, "cc", "paypal", "payssion", "payu", "ccavenue", "cashfree", "coinbase",
    "btcpay",
];

/// One row of the invoice list: InterServer's web client's fields, and the charge-invoice
/// fields of its API document.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceListRow {
    pub id: i64,
    /// `webhosting` or `default`.
    pub module: String,
    pub date_raw: String,
    pub date: String,
    pub due_date: String,
    /// The website's id (`0` when none).
    pub service_id: i64,
    pub service: String,
    pub description: String,
    /// The invoice's total (`"5.00"`).
    pub amount: String,
    /// `Yes` once paid (also when refunded since), else `No`.
    pub paid: String,
    /// `0` none, `1` account credit, `2` card, `3` recorded by staff.
    pub payment_type_id: i64,
    pub payment_type: String,
    pub payment_description: String,
    pub paid_on: String,
    pub currency: String,
    pub invoices_id: i64,
    pub invoices_description: String,
    #[schema(value_type = f64)]
    pub invoices_amount: Box<serde_json::value::RawValue>,
    pub invoices_date: String,
    pub invoices_paid: i64,
    pub invoices_due_date: String,
    pub invoices_currency: String,
    pub currency_symbol: String,
}

fn was_paid(i: &InvoiceRow) -> bool {
    matches!(
        i.status,
        InvoiceStatus::Paid | InvoiceStatus::PartiallyRefunded | InvoiceStatus::Refunded
    )
}

/// How an invoice was paid: `(id, type, description)`.
fn payment_type(b: &BilledInvoice) -> (i64, String, String) {
    // The last payment up to the invoice's payment (one recorded after it, a customer
    // paying twice, went to credit apart).
    let paid_at = b.invoice.paid_at.unwrap_or(i64::MAX);
    if let Some(p) = b.payments.iter().rev().find(|p| p.created_at <= paid_at) {
        let (id, kind) = match p.method.as_str() {
            "stripe" | "card" => (2, "Credit Card".to_owned()),
            other => (3, other.replace('_', " ")),
        };
        return (id, kind, p.reference.clone());
    }
    if b.invoice.credit_applied_minor > 0 && was_paid(&b.invoice) {
        return (1, "PrePay".into(), "Account credit".into());
    }
    (0, String::new(), String::new())
}

fn service_of(b: &BilledInvoice) -> (&'static str, i64, String) {
    match &b.website {
        Some(w) => ("webhosting", w.legacy_id, w.domain_name.clone()),
        None => ("default", 0, String::new()),
    }
}

fn description_of(b: &BilledInvoice) -> String {
    lodge_services::storefront::invoice_description(&b.lines).unwrap_or_else(|| {
        format!(
            "Invoice {}",
            b.invoice
                .number
                .clone()
                .unwrap_or_else(|| b.invoice.id.to_string())
        )
    })
}

fn list_row(b: &BilledInvoice, default: Currency) -> InvoiceListRow {
    let i = &b.invoice;
    let cur = currency_of(i, default);
    let (module, service_id, service) = service_of(b);
    let (payment_type_id, payment_type, payment_description) = payment_type(b);
    let description = description_of(b);
    InvoiceListRow {
        id: i.id,
        module: module.into(),
        date_raw: datetime(i.issued_at),
        date: day(i.issued_at),
        due_date: i.due_date.clone(),
        service_id,
        service,
        amount: money_str(i.total_minor, cur),
        paid: if was_paid(i) { "Yes" } else { "No" }.into(),
        payment_type_id,
        payment_type,
        payment_description,
        paid_on: i.paid_at.map(day).unwrap_or_default(),
        currency: cur.code().to_owned(),
        invoices_id: i.id,
        invoices_description: description.clone(),
        description,
        invoices_amount: money_number(i.total_minor, cur),
        invoices_date: ts(i.issued_at),
        invoices_paid: i64::from(was_paid(i)),
        invoices_due_date: i.due_date.clone(),
        invoices_currency: cur.code().to_owned(),
        currency_symbol: cur.symbol().to_owned(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BillingInvoiceList {
    pub rows: Vec<InvoiceListRow>,
    pub summary: BTreeMap<String, String>,
}

/// The customer's invoices, newest first.
#[utoipa::path(get, path = "/apiv2/billing/invoices", tag = "apiv2", operation_id = "getBillingInvoices",
    security(("api_key" = [])),
    responses((status = 200, body = BillingInvoiceList), (status = 401, body = super::V2ErrorBody)))]
pub async fn list_invoices(State(st): State<AppState>, c: Customer) -> V2Result<Response> {
    let org = c.access.organization;
    st.whole_lists
        .one_at_a_time(org, invoice_list(&st, &c))
        .await
}

async fn invoice_list(st: &AppState, c: &Customer) -> V2Result<BillingInvoiceList> {
    // A cancelled (deleted, expired) invoice is void: InterServer's delete removes its
    // rows, and a row without a status would read as a debt (`paid: No`); not listed.
    let invoices: Vec<_> = st
        .lodge
        .billed_invoices(&c.access)
        .await?
        .into_iter()
        .filter(|b| b.invoice.status != InvoiceStatus::Cancelled)
        .collect();
    let cur = st.lodge.settings.currency;
    // What is still due, and what was settled (paid or covered by credit): together the
    // total, whatever part of an unpaid invoice credit or a payment has covered (found by
    // the /apiv2 audit: that part was in no total).
    let unpaid: i64 = invoices.iter().map(|b| due_now(&b.invoice)).sum();
    let total: i64 = invoices.iter().map(|b| b.invoice.total_minor).sum();
    let paid: i64 = total - unpaid;
    let mut summary = BTreeMap::new();
    summary.insert("count".to_owned(), invoices.len().to_string());
    summary.insert("total".to_owned(), money_str(total, cur));
    summary.insert("paid_total".to_owned(), money_str(paid, cur));
    summary.insert("unpaid_total".to_owned(), money_str(unpaid, cur));
    summary.insert("currency".to_owned(), cur.code().to_owned());
    Ok(BillingInvoiceList {
        rows: invoices.iter().map(|b| list_row(b, cur)).collect(),
        summary,
    })
}

/// An invoice id from the path: anything that is not one is simply not found.
fn invoice_id(id: &str) -> V2Result<i64> {
    id.trim().parse().map_err(|_| V2Error::not_found())
}

/// One invoice, as InterServer's invoice payload: a flat map of strings.
#[utoipa::path(get, path = "/apiv2/billing/invoices/{id}", tag = "apiv2", operation_id = "getBillingInvoice",
    security(("api_key" = [])),
    params(("id" = i64, Path, description = "Invoice id")),
    responses((status = 200, body = BTreeMap<String, String>), (status = 401, body = super::V2ErrorBody),
              (status = 404, description = "Unknown, or another account's", body = super::V2ErrorBody)))]
pub async fn get_invoice(
    State(st): State<AppState>,
    c: Customer,
    V2Path(id): V2Path<String>,
) -> V2Result<Json<BTreeMap<String, String>>> {
    let b = st.lodge.billed_invoice(&c.access, invoice_id(&id)?).await?;
    let i = &b.invoice;
    let cur = currency_of(i, st.lodge.settings.currency);
    let (module, service_id, service) = service_of(&b);
    let (payment_type_id, payment_type, payment_description) = payment_type(&b);
    let lines = b
        .lines
        .iter()
        .map(|l| format!("{}: {}", l.description, money_str(l.amount_minor, cur)))
        .collect::<Vec<_>>()
        .join("\n");
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_owned(), v);
    };
    put("id", i.id.to_string());
    put("invoices_id", i.id.to_string());
    put(
        "number",
        i.number.clone().unwrap_or_else(|| i.id.to_string()),
    );
    put("module", module.into());
    put("service_id", service_id.to_string());
    put("service", service);
    put("description", description_of(&b));
    put("lines", lines);
    put("date", datetime(i.issued_at));
    put("due_date", i.due_date.clone());
    put("status", i.status.as_str().to_owned());
    put("paid", if was_paid(i) { "1" } else { "0" }.into());
    put("paid_on", i.paid_at.map(datetime).unwrap_or_default());
    put("subtotal", money_str(i.subtotal_minor, cur));
    put("tax", money_str(i.tax_minor, cur));
    put("total", money_str(i.total_minor, cur));
    put("credit_applied", money_str(i.credit_applied_minor, cur));
    put("paid_amount", money_str(i.paid_minor, cur));
    put("amount_due", money_str(due_now(i), cur));
    put("currency", cur.code().to_owned());
    put("currency_symbol", cur.symbol().to_owned());
    put("payment_type_id", payment_type_id.to_string());
    put("payment_type", payment_type);
    put("payment_description", payment_description);
    put(
        "payment_url",
        if i.status.is_payable() {
            payment_url(&st.public_base_url, &st.lodge.payment_token(i))
        } else {
            String::new()
        },
    );
    Ok(Json(m))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessText {
    pub success: bool,
    pub text: String,
}

/// Deletes the unpaid first invoice of a pending website, and that website with it; or the
/// unpaid invoice of a plan change, which is withdrawn (the website stays on its plan).
/// What it received goes back to the account's credit.
///
/// Safe to retry with an `Idempotency-Key`: the first answer is replayed for 24 hours
/// (`Idempotent-Replayed: true`) instead of `409`.
#[utoipa::path(delete, path = "/apiv2/billing/invoices/{id}", tag = "apiv2", operation_id = "deleteBillingInvoice",
    security(("api_key" = [])),
    params(("id" = i64, Path, description = "Invoice id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    responses((status = 200, description = "Deleted (also a replayed retry, marked `Idempotent-Replayed: true`)", body = SuccessText),
              (status = 400, description = "An unusable Idempotency-Key header", body = super::V2ErrorBody),
              (status = 401, body = super::V2ErrorBody),
              (status = 403, description = "A read-only member", body = super::V2ErrorBody),
              (status = 404, body = super::V2ErrorBody),
              (status = 409, description = "Not the unpaid first invoice of a pending website nor a plan change's, or a request with this Idempotency-Key is still in progress", body = super::V2ErrorBody),
              (status = 422, description = "Idempotency-Key reused with another request", body = super::V2ErrorBody)))]
pub async fn delete_invoice(
    State(st): State<AppState>,
    c: Customer,
    headers: HeaderMap,
    V2Path(id): V2Path<String>,
) -> V2Result<Response> {
    let id = invoice_id(&id)?;
    let key = super::mutation_key(
        &st,
        &headers,
        &c,
        "DELETE",
        &format!("/apiv2/billing/invoices/{id}"),
        b"",
    )
    .await?;
    let actor = c.access.actor();
    let answer = st
        .lodge
        .delete_pending_invoice(&c.access, id, &actor, key.as_ref())
        .await?;
    Ok(idempotency::respond(answer, |()| {
        Json(SuccessText {
            success: true,
            text: "Invoice deleted.".into(),
        })
        .into_response()
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentReply {
    /// `single` (paid now) or `redirect` (go to `redirect`).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    pub text: String,
}

/// Reads a list of invoices as the cart and InterServer's clients name them, comma
/// separated: invoice ids (`12`, `INVwebhosting12`, `INVdefault12`) and websites
/// (`SERVICEwebhosting7`, `website7`, `webhosting7`: every unpaid invoice of the website).
/// Anything else is `422 Invalid Invoice Tag`, InterServer's answer to an identifier in no
/// format it reads (found by the InterServer audit: it was 404, as for an invoice not the
/// caller's).
fn invoice_refs(list: &str) -> V2Result<Vec<InvoiceRef>> {
    let invalid = || {
        V2Error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid Invoice Tag".into(),
        )
    };
    const WEBSITE: [&str; 3] = ["SERVICEwebhosting", WEBSITE_PREFIX, "webhosting"];
    const INVOICE: [&str; 3] = ["INVwebhosting", "INVdefault", "INV"];
    let refs: Vec<InvoiceRef> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let number = |prefixes: &[&str]| {
                prefixes
                    .iter()
                    .find_map(|p| item.strip_prefix(p))
                    .and_then(|n| n.parse::<i64>().ok())
            };
            if let Some(n) = number(&WEBSITE) {
                Ok(InvoiceRef::Website(n))
            } else if let Some(n) = number(&INVOICE).or_else(|| item.parse().ok()) {
                Ok(InvoiceRef::Invoice(n))
            } else {
                Err(invalid())
            }
        })
        .collect::<V2Result<_>>()?;
    if refs.is_empty() {
        return Err(invalid());
    }
    Ok(refs)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PayQuery {
    /// Where the payment page sends the customer back: honoured only on a configured client
    /// origin (`--cors-origins`), otherwise ignored.
    #[serde(rename = "redirectUrl")]
    pub redirect_url: Option<String>,
}

/// The origin of an absolute `http(s)` URL (`https://shop.example.com:8443`), lowercased;
/// `None` for anything else (user info in it included).
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let ok = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// The `redirectUrl` to send the customer back to, when it is on a configured client origin.
pub(crate) fn allowed_return(st: &AppState, url: Option<&str>) -> Option<String> {
    let url = url?.trim();
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let origin = origin_of(url)?;
    st.client_origins.contains(&origin).then(|| url.to_owned())
}

/// The reply to paying from account credit.
fn prepay_reply(out: &PrepayOutcome, cur: Currency) -> PaymentReply {
    let mut text = format!(
        "Paid {} invoice(s) ({}) from account credit.",
        out.paid.len(),
        display(out.paid_minor, cur)
    );
    if !out.left.is_empty() {
        text.push_str(&format!(
            " {} invoice(s) ({}) are still due: the credit did not cover them.",
            out.left.len(),
            display(out.left_minor, cur)
        ));
    }
    PaymentReply {
        kind: "single".into(),
        redirect: None,
        text,
    }
}

async fn pay_invoices(
    st: &AppState,
    c: &Customer,
    headers: &HeaderMap,
    method: &str,
    invoices: &str,
    redirect_url: Option<&str>,
) -> V2Result<Response> {
    if !METHODS.contains(&method) {
        return Err(V2Error(
            StatusCode::BAD_REQUEST,
            "Invalid payment method".into(),
        ));
    }
    // Both paths are one request: a retry may come by either. What it asks is the method,
    // the invoices as named and the way back from the payment page.
    let key = super::mutation_key(
        st,
        headers,
        c,
        "GET",
        &format!("/apiv2/pay/{method}/{invoices}"),
        redirect_url.unwrap_or_default().as_bytes(),
    )
    .await?;
    c.access.require_write()?;
    let refs = invoice_refs(invoices)?;
    let actor = c.access.actor();
    if method == "prepay" {
        let answer = st
            .lodge
            .pay_from_prepay(&c.access, &refs, &actor, key.as_ref())
            .await?;
        let cur = st.lodge.settings.currency;
        return Ok(idempotency::respond(answer, |out| {
            Json(prepay_reply(&out, cur)).into_response()
        }));
    }
    let answer = st
        .lodge
        .settle_invoices_keyed(&c.access, &refs, false, &actor, key.as_ref())
        .await?;
    Ok(idempotency::respond(answer, |settled| {
        Json(match settled {
            Settlement::PayOnPage {
                payment_token,
                then_tokens,
                ..
            } => {
                let mut page = payment_url(&st.public_base_url, &payment_token);
                // The other invoices asked for follow on the page, one after another, as
                // the page itself carries them on.
                let q = crate::pages::PageMessage {
                    result: None,
                    return_to: redirect_url.map(str::to_owned),
                    then: Some(then_tokens.join(",")),
                }
                .carried(st);
                if !q.is_empty() {
                    page = format!("{page}?{q}");
                }
                let text = match then_tokens.len() {
                    0 => "Continue to the payment page.".to_owned(),
                    n => format!(
                        "Continue to the payment page: {} invoices, paid one after another there.",
                        n + 1
                    ),
                };
                PaymentReply {
                    kind: "redirect".into(),
                    redirect: Some(page),
                    text,
                }
            }
            Settlement::PaidFromCredit { invoices } => PaymentReply {
                kind: "single".into(),
                redirect: None,
                text: format!("Paid {invoices} invoice(s) from account credit."),
            },
        })
        .into_response()
    }))
}

/// Pays invoices: `prepay` from account credit, each invoice the credit covers in full (a
/// `single` reply saying what is still due), any other method a `redirect` to the hosted
/// payment page (with `redirectUrl` passed on as its way back when allowed).
///
/// Safe to retry with an `Idempotency-Key` (bound to the method, the invoices and
/// `redirectUrl`; the same on either path): the first answer is replayed for 24 hours
/// (`Idempotent-Replayed: true`), so a retried prepay payment pays nothing twice and is not
/// told `409` "nothing is due".
#[utoipa::path(get, path = "/apiv2/billing/pay/{method}/{invoices}", tag = "apiv2", operation_id = "initiatePayment",
    security(("api_key" = [])),
    params(("method" = String, Path, description = "`prepay` (account credit), `online` or an InterServer gateway (the payment page)",
               pattern = "^(prepay|online|cc|paypal|payssion|payu|ccavenue|cashfree|coinbase|btcpay)$"),
           ("invoices" = String, Path, description = "Comma list of invoice ids, INV<module><id>, SERVICEwebhosting<id> or website<id>",
               pattern = "^[A-Za-z0-9]+(,[A-Za-z0-9]+)*$"),
           PayQuery,
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    responses((status = 200, description = "Paid or redirected (also a replayed retry, marked `Idempotent-Replayed: true`)", body = PaymentReply),
              (status = 400, description = "Unknown method, or an unusable Idempotency-Key header", body = super::V2ErrorBody),
              (status = 401, body = super::V2ErrorBody),
              (status = 403, description = "A read-only member", body = super::V2ErrorBody),
              (status = 404, body = super::V2ErrorBody),
              (status = 402, description = "`prepay`: the account credit covers none of it (nothing was paid; InterServer's \"balance insufficient\")", body = super::V2ErrorBody),
              (status = 409, description = "Nothing to pay, or a request with this Idempotency-Key is still in progress", body = super::V2ErrorBody),
              (status = 422, description = "An invoice tag in no known format (`Invalid Invoice Tag`), or an Idempotency-Key reused with another request", body = super::V2ErrorBody)))]
pub async fn pay(
    State(st): State<AppState>,
    c: Customer,
    headers: HeaderMap,
    V2Path((method, invoices)): V2Path<(String, String)>,
    V2Query(q): V2Query<PayQuery>,
) -> V2Result<Response> {
    pay_invoices(
        &st,
        &c,
        &headers,
        &method,
        &invoices,
        q.redirect_url.as_deref(),
    )
    .await
}

/// The same as `/apiv2/billing/pay/{method}/{invoices}`, at the path InterServer's web
/// client calls.
#[utoipa::path(get, path = "/apiv2/pay/{method}/{invoices}", tag = "apiv2", operation_id = "initiatePaymentShort",
    security(("api_key" = [])),
    params(("method" = String, Path, description = "`prepay` (account credit), `online` or an InterServer gateway (the payment page)",
               pattern = "^(prepay|online|cc|paypal|payssion|payu|ccavenue|cashfree|coinbase|btcpay)$"),
           ("invoices" = String, Path, description = "Comma list of invoice ids, INV<module><id>, SERVICEwebhosting<id> or website<id>",
               pattern = "^[A-Za-z0-9]+(,[A-Za-z0-9]+)*$"),
           PayQuery,
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    responses((status = 200, description = "Paid or redirected (also a replayed retry, marked `Idempotent-Replayed: true`)", body = PaymentReply),
              (status = 400, description = "Unknown method, or an unusable Idempotency-Key header", body = super::V2ErrorBody),
              (status = 401, body = super::V2ErrorBody),
              (status = 403, description = "A read-only member", body = super::V2ErrorBody),
              (status = 404, body = super::V2ErrorBody),
              (status = 402, description = "`prepay`: the account credit covers none of it (nothing was paid; InterServer's \"balance insufficient\")", body = super::V2ErrorBody),
              (status = 409, description = "Nothing to pay, or a request with this Idempotency-Key is still in progress", body = super::V2ErrorBody),
              (status = 422, description = "An invoice tag in no known format (`Invalid Invoice Tag`), or an Idempotency-Key reused with another request", body = super::V2ErrorBody)))]
pub async fn pay_short(
    State(st): State<AppState>,
    c: Customer,
    headers: HeaderMap,
    V2Path((method, invoices)): V2Path<(String, String)>,
    V2Query(q): V2Query<PayQuery>,
) -> V2Result<Response> {
    pay_invoices(
        &st,
        &c,
        &headers,
        &method,
        &invoices,
        q.redirect_url.as_deref(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_the_cart_emits_is_read() {
        let refs = invoice_refs(
            "12, INVwebhosting13,INVdefault14,INV15,SERVICEwebhosting7,website8,webhosting9",
        )
        .unwrap();
        assert_eq!(
            refs,
            vec![
                InvoiceRef::Invoice(12),
                InvoiceRef::Invoice(13),
                InvoiceRef::Invoice(14),
                InvoiceRef::Invoice(15),
                InvoiceRef::Website(7),
                InvoiceRef::Website(8),
                InvoiceRef::Website(9),
            ]
        );
        for bad in ["", ",", "websiteX", "SERVICEvps1", "12;13", "-"] {
            assert!(invoice_refs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        for (url, origin) in [
            (
                "https://My.Shop.example/pay/",
                Some("https://my.shop.example"),
            ),
            (
                "http://127.0.0.1:5173/cart?x=1",
                Some("http://127.0.0.1:5173"),
            ),
            ("https://shop.example#top", Some("https://shop.example")),
            ("https://evil.example@shop.example/", None),
            ("javascript://shop.example/", None),
            ("//shop.example/", None),
            ("https:///x", None),
        ] {
            assert_eq!(origin_of(url).as_deref(), origin, "{url}");
        }
    }

    #[test]
    fn dates_are_interservers() {
        // 2026-03-31T10:00:00Z
        let us = 1_774_951_200_000_000;
        assert_eq!(datetime(us), "2026-03-31 10:00:00");
        assert_eq!(day(us), "2026-03-31");
    }
}
