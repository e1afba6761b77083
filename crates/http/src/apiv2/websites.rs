//! `GET /apiv2/websites`, `GET|DELETE /apiv2/websites/{id}`, `GET /apiv2/websites/{id}/invoices`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lodge_core::Currency;
use lodge_services::websites::{PaidBy, SettledInvoice};
use serde::Serialize;
use utoipa::ToSchema;

use super::{website_status, Customer, V2Error, V2Path, V2Result};
use crate::idempotency;
use crate::wire::{money_str, ts};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct WebsiteRow {
    pub website_id: String,
    pub website_hostname: String,
    pub repeat_invoices_cost: String,
    pub website_status: String,
    pub services_name: String,
    pub website_comment: String,
}

/// A website id from the path: anything that is not one is simply not found.
fn website_id(id: &str) -> V2Result<i64> {
    id.trim().parse().map_err(|_| V2Error::not_found())
}

/// The customer's websites (cancelled ones stay listed with their status).
#[utoipa::path(get, path = "/apiv2/websites", tag = "apiv2", operation_id = "getWebsiteList",
    security(("api_key" = [])),
    responses((status = 200, body = Vec<WebsiteRow>), (status = 401, body = super::V2ErrorBody)))]
pub async fn list_websites(State(st): State<AppState>, c: Customer) -> V2Result<Response> {
    let org = c.access.organization;
    st.whole_lists
        .one_at_a_time(org, website_rows(&st, &c))
        .await
}

async fn website_rows(st: &AppState, c: &Customer) -> V2Result<Vec<WebsiteRow>> {
    let rows = st.lodge.websites(&c.access).await?;
    let catalog = st.lodge.catalog().await?;
    Ok(rows
        .into_iter()
        .map(|h| {
            let cur = Currency::parse(&h.currency).unwrap_or(catalog.currency);
            WebsiteRow {
                website_id: h.legacy_id.to_string(),
                repeat_invoices_cost: money_str(h.recurring_minor, cur),
                website_status: website_status(h.status, h.cancel_kind()).into(),
                services_name: catalog
                    .plan(h.plan_id)
                    .map(|p| p.row.name.clone())
                    .unwrap_or_default(),
                website_comment: h.comment,
                website_hostname: h.domain_name,
            }
        })
        .collect())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceInfo {
    pub website_id: String,
    pub website_server: String,
    pub website_type: String,
    pub website_currency: String,
    pub website_order_date: String,
    pub website_custid: String,
    pub website_ip: String,
    pub website_status: String,
    pub website_invoice: String,
    pub website_coupon: String,
    pub website_extra: String,
    pub website_hostname: String,
    pub website_comment: String,
    pub website_username: String,
    pub website_server_status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BillingDetails {
    pub service_last_invoice_date: String,
    pub service_payment_status: String,
    pub service_frequency: String,
    pub next_date: String,
    pub service_next_invoice_date: String,
    pub service_currency: String,
    pub service_currency_symbol: String,
    pub service_coupon: String,
    pub service_cost_info: String,
    pub service_extra: BTreeMap<String, String>,
    pub service_extra_json: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceMaster {
    pub website_id: String,
    pub website_name: String,
    pub website_ip: String,
    pub website_type: String,
    pub website_available: String,
    pub website_hdsize: String,
    pub website_hdfree: String,
    pub website_load: String,
    pub website_last_update: String,
    pub website_max_sites: String,
    pub website_order: String,
    pub website_partitions: String,
    pub website_dns1: String,
    pub website_dns2: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InfoTable {
    pub title: String,
    pub rows: Vec<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExtraInfoTables {
    pub links: InfoTable,
    pub preview: InfoTable,
    pub dns: InfoTable,
}

/// InterServer's `Website` detail.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Website {
    pub service_info: ServiceInfo,
    #[serde(rename = "client_links")]
    pub client_links: Vec<BTreeMap<String, String>>,
    pub billing_details: BillingDetails,
    pub cust_currency: String,
    pub cust_currency_symbol: String,
    pub service_master: ServiceMaster,
    pub package: String,
    pub service_extra: Vec<BTreeMap<String, String>>,
    pub extra_info_tables: ExtraInfoTables,
}

/// One website.
#[utoipa::path(get, path = "/apiv2/websites/{id}", tag = "apiv2", operation_id = "getWebsiteInfo",
    security(("api_key" = [])),
    params(("id" = i64, Path, description = "Website id")),
    responses((status = 200, body = Website), (status = 401, body = super::V2ErrorBody),
              (status = 404, body = super::V2ErrorBody)))]
pub async fn get_website(
    State(st): State<AppState>,
    crate::extract::ClientIp(client_ip): crate::extract::ClientIp,
    c: Customer,
    V2Path(id): V2Path<String>,
) -> V2Result<Json<Website>> {
    let w = st.lodge.website_detail(&c.access, website_id(&id)?).await?;
    let catalog = st.lodge.catalog().await?;
    let (h, org) = (&w.hosting, &w.organization);
    let cur = Currency::parse(&h.currency).unwrap_or(catalog.currency);
    let last = w.invoices.last();
    let first = w.invoices.first();
    let status = website_status(h.status, h.cancel_kind()).to_owned();
    let plan = catalog.plan(h.plan_id);
    // The coupon as the quote names it (`couponCode`: its numeric id), not Lodge's uuid
    // (found by the apiv2 audit: a client could not match the two).
    let coupon = h
        .coupon_id
        .as_deref()
        .and_then(|id| catalog.coupons.iter().find(|c| c.id.to_string() == id))
        .map(|c| c.legacy_id.to_string())
        .unwrap_or_default();
    let server = w.server.as_ref();
    // The control panel's one-time login link, when the account is on a panel (for a
    // caller who may change the account).
    let client_links: Vec<BTreeMap<String, String>> = st
        .lodge
        .login_url(&c.access, h, client_ip)
        .await
        .map(|url| {
            BTreeMap::from([
                ("label".to_owned(), "Login to Control Panel".to_owned()),
                ("link".to_owned(), url),
                ("icon".to_owned(), "fas fa-sign-in-alt".to_owned()),
                ("icon_text".to_owned(), String::new()),
            ])
        })
        .into_iter()
        .collect();
    let empty_table = |title: &str| InfoTable {
        title: title.to_owned(),
        rows: vec![],
    };
    Ok(Json(Website {
        service_info: ServiceInfo {
            website_id: h.legacy_id.to_string(),
            website_server: server.map(|s| s.legacy_id.to_string()).unwrap_or_default(),
            website_type: plan
                .map(|p| p.row.legacy_id.to_string())
                .unwrap_or_default(),
            website_currency: cur.code().to_owned(),
            website_order_date: ts(h.created_at),
            website_custid: org.legacy_id.to_string(),
            website_ip: String::new(),
            website_status: status.clone(),
            website_invoice: first.map(|i| i.id.to_string()).unwrap_or_default(),
            website_coupon: coupon.clone(),
            website_extra: String::new(),
            website_hostname: h.domain_name.clone(),
            website_comment: h.comment.clone(),
            website_username: h.username.clone().unwrap_or_default(),
            website_server_status: h.status.as_str().to_owned(),
        },
        client_links,
        billing_details: BillingDetails {
            service_last_invoice_date: last.map(|i| ts(i.issued_at)).unwrap_or_default(),
            service_payment_status: last
                .map(|i| i.status.as_str().to_owned())
                .unwrap_or_default(),
            service_frequency: h.renewal_months.map(|m| m.to_string()).unwrap_or_default(),
            next_date: h.next_due_date.clone().unwrap_or_default(),
            service_next_invoice_date: h.next_due_date.clone().unwrap_or_default(),
            service_currency: cur.code().to_owned(),
            service_currency_symbol: cur.symbol().to_owned(),
            service_coupon: coupon,
            service_cost_info: money_str(h.recurring_minor, cur),
            service_extra: BTreeMap::new(),
            service_extra_json: "{}".into(),
        },
        cust_currency: cur.code().to_owned(),
        cust_currency_symbol: cur.symbol().to_owned(),
        // The host server's row, as InterServer's `websites_master` (what Lodge does not
        // keep, its addresses, disk and load, empty; nor its driver or capacity, staff's) (found by the InterServer audit: all
        // of it was empty, the server known).
        service_master: ServiceMaster {
            website_id: server.map(|s| s.legacy_id.to_string()).unwrap_or_default(),
            website_name: server.map(|s| s.hostname.clone()).unwrap_or_default(),
            website_ip: String::new(),
            website_type: String::new(),
            website_available: server
                .map(|s| if s.is_active == 1 { "1" } else { "0" }.to_owned())
                .unwrap_or_default(),
            website_hdsize: String::new(),
            website_hdfree: String::new(),
            website_load: String::new(),
            website_last_update: server.map(|s| ts(s.modified_at)).unwrap_or_default(),
            website_max_sites: String::new(),
            website_order: String::new(),
            website_partitions: String::new(),
            website_dns1: server.map(|s| s.ns1.clone()).unwrap_or_default(),
            website_dns2: server.map(|s| s.ns2.clone()).unwrap_or_default(),
        },
        package: plan.map(|p| p.row.name.clone()).unwrap_or_default(),
        service_extra: vec![],
        extra_info_tables: ExtraInfoTables {
            links: empty_table("Links"),
            preview: empty_table("Preview"),
            dns: empty_table("DNS"),
        },
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CancelResult {
    pub success: bool,
    pub text: String,
}

/// Cancels a website: a never-paid one at once (with its order and invoice), a paid one at
/// the end of its paid period. `409` when already canceled or pending cancellation.
///
/// Safe to retry with an `Idempotency-Key`: the first answer is replayed for 24 hours
/// (`Idempotent-Replayed: true`) instead of `409`.
#[utoipa::path(delete, path = "/apiv2/websites/{id}", tag = "apiv2", operation_id = "webhostingCancel",
    security(("api_key" = [])),
    params(("id" = i64, Path, description = "Website id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    responses((status = 200, description = "Cancelled (also a replayed retry, marked `Idempotent-Replayed: true`)", body = CancelResult),
              (status = 400, description = "An unusable Idempotency-Key header", body = super::V2ErrorBody),
              (status = 401, body = super::V2ErrorBody),
              (status = 403, description = "A read-only member", body = super::V2ErrorBody),
              (status = 404, body = super::V2ErrorBody),
              (status = 409, description = "Already canceled or pending cancellation, or a request with this Idempotency-Key is still in progress", body = super::V2ErrorBody),
              (status = 422, description = "Idempotency-Key reused with another request", body = super::V2ErrorBody)))]
pub async fn cancel_website(
    State(st): State<AppState>,
    c: Customer,
    headers: HeaderMap,
    V2Path(id): V2Path<String>,
) -> V2Result<Response> {
    let id = website_id(&id)?;
    let key = super::mutation_key(
        &st,
        &headers,
        &c,
        "DELETE",
        &format!("/apiv2/websites/{id}"),
        b"",
    )
    .await?;
    let answer = st
        .lodge
        .cancel_website(&c.access, id, "Cancelled through /apiv2", key.as_ref())
        .await?;
    Ok(idempotency::respond(answer, |_| {
        Json(CancelResult {
            success: true,
            text: "Website is canceled.".into(),
        })
        .into_response()
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeInvoice {
    #[schema(value_type = f64)]
    pub invoices_id: i64,
    pub invoices_description: String,
    #[schema(value_type = f64)]
    pub invoices_amount: Box<serde_json::value::RawValue>,
    pub invoices_date: String,
    /// 1 when paid (also once partly or wholly refunded).
    pub invoices_paid: i64,
    pub invoices_due_date: String,
    pub invoices_currency: String,
    pub currency_symbol: String,
    /// `5th Dec 2025`.
    pub invoices_date_formatted: String,
    /// What paid it, by payment: account credit applied (`credit-<entry>`), a card
    /// payment, a payment staff recorded (what of it went to this invoice: beyond that, it
    /// went to credit); each with what went back of it. Empty while nothing was paid.
    pub paid_invoices: BTreeMap<String, ChargePayment>,
}

/// One payment of an invoice (InterServer shows a payment as an invoice of its own).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChargePayment {
    /// The payment's id: `credit-<ledger entry>` for account credit.
    pub invoices_id: String,
    /// `Credit Card Payment pi_…`, `PrePay` (account credit), `Bank transfer Payment <reference>`.
    pub invoices_description: String,
    #[schema(value_type = f64)]
    pub invoices_amount: Box<serde_json::value::RawValue>,
    pub invoices_date: String,
    pub invoices_currency: String,
    pub currency_symbol: String,
    /// `5th Dec 2025`.
    pub invoices_date_formatted: String,
    /// `Credit Card Payment`, `PrePay`, or the recorded method (`Bank transfer Payment`).
    pub payment_type: String,
    /// What went back of this payment (absent when nothing did): a refund of money (to the
    /// card, by bank; keyed by the refund's id) under the invoice's first payment, and
    /// credit given back (a refund to credit, what a cancelled invoice returned; keyed
    /// `credit-<ledger entry>`) under the first credit applied, else the first payment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub refund_invoices: BTreeMap<String, ChargeRefund>,
}

/// A refund of a payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeRefund {
    /// The refund's own id (a refund in money) or its ledger entry's (credit given back):
    /// not an invoice's.
    #[schema(value_type = f64)]
    pub invoices_id: i64,
    /// `REFUND: ` and the description of the payment it returns.
    pub invoices_description: String,
    #[schema(value_type = f64)]
    pub invoices_amount: Box<serde_json::value::RawValue>,
    pub invoices_date: String,
    pub invoices_currency: String,
    pub currency_symbol: String,
    /// `16th Dec 2025`.
    pub invoices_date_formatted: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeInvoiceRows {
    pub success: bool,
    pub invoices: BTreeMap<String, ChargeInvoice>,
}

/// `5th Dec 2025` (InterServer's formatted date), in UTC.
pub(super) fn formatted_day(us: i64) -> String {
    let Ok(t) = jiff::Timestamp::from_microsecond(us) else {
        return String::new();
    };
    let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
    let suffix = match (d.day() % 10, d.day() % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{}{suffix} {}", d.day(), d.strftime("%b %Y"))
}

/// The payment type of a payment's method: `Credit Card Payment` for a card, else the
/// method's words (`bank_transfer`: `Bank transfer Payment`).
fn payment_type_of(method: &str) -> String {
    if method == lodge_services::gateway::METHOD_CARD || method == "stripe" {
        return "Credit Card Payment".into();
    }
    let words = method.replace('_', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => format!("{}{} Payment", first.to_uppercase(), chars.as_str()),
        None => "Payment".into(),
    }
}

/// What paid an invoice, as InterServer lists it: each credit application and payment
/// ([`SettledInvoice::paid_by`]), with what went back of it.
fn paid_invoices(s: &SettledInvoice, cur: Currency) -> BTreeMap<String, ChargePayment> {
    s.paid_by()
        .into_iter()
        .map(|p| {
            let (id, description, payment_type) = match &p.by {
                PaidBy::Credit { entry } => {
                    (format!("credit-{entry}"), "PrePay".into(), "PrePay".into())
                }
                PaidBy::Payment {
                    id,
                    method,
                    reference,
                } => {
                    let kind = payment_type_of(method);
                    (id.clone(), format!("{kind} {reference}"), kind)
                }
            };
            let refund_invoices = p
                .returned
                .iter()
                .map(|r| {
                    let key = if r.to_credit {
                        format!("credit-{}", r.id)
                    } else {
                        r.id.to_string()
                    };
                    let refund = ChargeRefund {
                        invoices_id: r.id,
                        invoices_description: format!("REFUND: {description}"),
                        invoices_amount: crate::wire::money_number(r.amount_minor, cur),
                        invoices_date: ts(r.at),
                        invoices_currency: cur.code().to_owned(),
                        currency_symbol: cur.symbol().to_owned(),
                        invoices_date_formatted: formatted_day(r.at),
                    };
                    (key, refund)
                })
                .collect();
            let payment = ChargePayment {
                invoices_id: id.clone(),
                invoices_description: description,
                invoices_amount: crate::wire::money_number(p.amount_minor, cur),
                invoices_date: ts(p.at),
                invoices_currency: cur.code().to_owned(),
                currency_symbol: cur.symbol().to_owned(),
                invoices_date_formatted: formatted_day(p.at),
                payment_type,
                refund_invoices,
            };
            (id, payment)
        })
        .collect()
}

pub(super) fn charge_invoice(s: &SettledInvoice) -> ChargeInvoice {
    let i = &s.invoice;
    let cur = Currency::parse(&i.currency).unwrap_or(Currency::USD);
    let date = ts(i.issued_at);
    ChargeInvoice {
        invoices_id: i.id,
        invoices_description: format!(
            "Invoice {}",
            i.number.clone().unwrap_or_else(|| i.id.to_string())
        ),
        invoices_amount: crate::wire::money_number(i.total_minor, cur),
        invoices_date_formatted: formatted_day(i.issued_at),
        invoices_date: date,
        // InterServer keeps a refunded invoice paid (its refunds are further rows).
        invoices_paid: i64::from(matches!(
            i.status,
            lodge_core::InvoiceStatus::Paid
                | lodge_core::InvoiceStatus::PartiallyRefunded
                | lodge_core::InvoiceStatus::Refunded
        )),
        invoices_due_date: i.due_date.clone(),
        invoices_currency: cur.code().to_owned(),
        currency_symbol: cur.symbol().to_owned(),
        paid_invoices: paid_invoices(s, cur),
    }
}

/// The invoices of a website.
#[utoipa::path(get, path = "/apiv2/websites/{id}/invoices", tag = "apiv2", operation_id = "getWebsiteInvoices",
    security(("api_key" = [])),
    params(("id" = i64, Path, description = "Website id")),
    responses((status = 200, body = ChargeInvoiceRows), (status = 401, body = super::V2ErrorBody),
              (status = 404, body = super::V2ErrorBody)))]
pub async fn website_invoices(
    State(st): State<AppState>,
    c: Customer,
    V2Path(id): V2Path<String>,
) -> V2Result<Json<ChargeInvoiceRows>> {
    let invoices = st
        .lodge
        .website_invoices_settled(&c.access, website_id(&id)?)
        .await?;
    Ok(Json(ChargeInvoiceRows {
        success: true,
        invoices: invoices
            .iter()
            .map(|s| (s.invoice.id.to_string(), charge_invoice(s)))
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::formatted_day;

    fn at(date: &str) -> i64 {
        let d: jiff::civil::Date = date.parse().unwrap();
        d.to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_microsecond()
    }

    #[test]
    fn days_read_as_interserver_formats_them() {
        for (date, formatted) in [
            ("2025-12-01", "1st Dec 2025"),
            ("2025-12-02", "2nd Dec 2025"),
            ("2025-12-03", "3rd Dec 2025"),
            ("2025-12-04", "4th Dec 2025"),
            ("2025-12-05", "5th Dec 2025"),
            ("2026-01-11", "11th Jan 2026"),
            ("2026-01-12", "12th Jan 2026"),
            ("2026-01-13", "13th Jan 2026"),
            ("2026-02-21", "21st Feb 2026"),
            ("2026-02-22", "22nd Feb 2026"),
            ("2026-03-23", "23rd Mar 2026"),
            ("2026-03-31", "31st Mar 2026"),
        ] {
            assert_eq!(formatted_day(at(date)), formatted, "{date}");
        }
    }
}
