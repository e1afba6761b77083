//! `GET /apiv2/billing/invoices`, `DELETE /apiv2/billing/invoices/{id}`,
//! `GET /apiv2/billing/pay/{method}/{invoices}`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use lodge_store::billing::{self, InvoiceRow};
use serde::Serialize;
use utoipa::ToSchema;

use super::websites::{charge_invoice, ChargeInvoice};
use super::{Customer, V2Error, V2Result};
use crate::wire::{money_str, payment_url};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct BillingInvoiceList {
    pub rows: Vec<ChargeInvoice>,
    pub summary: BTreeMap<String, String>,
}

/// The customer's invoices, newest first.
#[utoipa::path(get, path = "/apiv2/billing/invoices", tag = "apiv2", operation_id = "getBillingInvoices",
    security(("api_key" = [])),
    responses((status = 200, body = BillingInvoiceList), (status = 401, body = super::V2ErrorBody)))]
pub async fn list_invoices(
    State(st): State<AppState>,
    c: Customer,
) -> V2Result<Json<BillingInvoiceList>> {
    let (rows, count) = billing::invoices_page(
        st.lodge.store.reader(),
        c.access.organization,
        None,
        i64::MAX,
        0,
    )
    .await?;
    let cur = st.lodge.settings.currency;
    let unpaid: i64 = rows
        .iter()
        .filter(|i| i.status == "unpaid")
        .map(InvoiceRow::amount_due)
        .sum();
    let mut summary = BTreeMap::new();
    summary.insert("count".to_owned(), count.to_string());
    summary.insert("unpaid_total".to_owned(), money_str(unpaid, cur));
    summary.insert("currency".to_owned(), cur.code().to_owned());
    Ok(Json(BillingInvoiceList {
        rows: rows.iter().map(charge_invoice).collect(),
        summary,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessText {
    pub success: bool,
    pub text: String,
}

/// Deletes the unpaid first invoice of a pending website, and that website with it.
#[utoipa::path(delete, path = "/apiv2/billing/invoices/{id}", tag = "apiv2", operation_id = "deleteBillingInvoice",
    security(("api_key" = [])),
    params(("id" = i64, Path, description = "Invoice id")),
    responses((status = 200, body = SuccessText), (status = 401, body = super::V2ErrorBody),
              (status = 404, body = super::V2ErrorBody),
              (status = 409, description = "Not the unpaid first invoice of a pending website", body = super::V2ErrorBody)))]
pub async fn delete_invoice(
    State(st): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
) -> V2Result<Json<SuccessText>> {
    let id: i64 = id.trim().parse().map_err(|_| V2Error::not_found())?;
    let actor = format!("user:{}", c.principal.user);
    st.lodge
        .delete_pending_invoice(&c.access, id, &actor)
        .await?;
    Ok(Json(SuccessText {
        success: true,
        text: "Invoice deleted.".into(),
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

/// Resolves `12,13,SERVICEwebhosting7` into the customer's invoices.
async fn resolve(st: &AppState, c: &Customer, list: &str) -> V2Result<Vec<InvoiceRow>> {
    let mut out: Vec<InvoiceRow> = vec![];
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let found = if let Some(tag) = item.strip_prefix("SERVICEwebhosting") {
            let legacy: i64 = tag.parse().map_err(|_| V2Error::not_found())?;
            let h = lodge_store::hosting::hosting_by_legacy(
                st.lodge.store.reader(),
                c.access.organization,
                legacy,
            )
            .await?
            .ok_or_else(V2Error::not_found)?;
            // Every invoice of the service: `pay` keeps the unpaid ones, and answers `409`
            // (nothing due) rather than `404` for a service that is already paid.
            billing::invoices_of_order(st.lodge.store.reader(), h.order_id).await?
        } else {
            let id: i64 = item.parse().map_err(|_| V2Error::not_found())?;
            let inv = billing::invoice(&mut st.lodge.store.read_conn().await?, id)
                .await?
                .filter(|i| i.organization_id == c.access.organization)
                .ok_or_else(V2Error::not_found)?;
            vec![inv]
        };
        for i in found {
            if !out.iter().any(|o| o.id == i.id) {
                out.push(i);
            }
        }
    }
    if out.is_empty() {
        return Err(V2Error::not_found());
    }
    Ok(out)
}

/// Pays invoices: `prepay` from account credit (a `single` reply), any other method a
/// `redirect` to the hosted payment page.
#[utoipa::path(get, path = "/apiv2/billing/pay/{method}/{invoices}", tag = "apiv2", operation_id = "initiatePayment",
    security(("api_key" = [])),
    params(("method" = String, Path, description = "`prepay` (account credit) or a card gateway"),
           ("invoices" = String, Path, description = "Comma list of invoice ids or SERVICEwebhosting<id> tags")),
    responses((status = 200, body = PaymentReply), (status = 401, body = super::V2ErrorBody),
              (status = 404, body = super::V2ErrorBody),
              (status = 409, description = "Not enough credit, or nothing to pay", body = super::V2ErrorBody)))]
pub async fn pay(
    State(st): State<AppState>,
    c: Customer,
    Path((method, invoices)): Path<(String, String)>,
) -> V2Result<Json<PaymentReply>> {
    c.access.require_write()?;
    let invoices = resolve(&st, &c, &invoices).await?;
    let unpaid: Vec<&InvoiceRow> = invoices.iter().filter(|i| i.status == "unpaid").collect();
    if unpaid.is_empty() {
        return Err(V2Error(
            StatusCode::CONFLICT,
            "Nothing is due on these invoices.".into(),
        ));
    }
    if method == "prepay" {
        let actor = format!("user:{}", c.principal.user);
        let ids: Vec<i64> = unpaid.iter().map(|i| i.id).collect();
        st.lodge.pay_from_credit(&ids, &actor).await?;
        return Ok(Json(PaymentReply {
            kind: "single".into(),
            redirect: None,
            text: format!("Paid {} invoice(s) from account credit.", ids.len()),
        }));
    }
    Ok(Json(PaymentReply {
        kind: "redirect".into(),
        redirect: Some(payment_url(&st.public_base_url, &unpaid[0].payment_token)),
        text: "Continue to the payment page.".into(),
    }))
}
