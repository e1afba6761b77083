//! `GET /apiv2/billing/invoices`, `DELETE /apiv2/billing/invoices/{id}`,
//! `GET /apiv2/billing/pay/{method}/{invoices}`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use lodge_services::queries::due_now;
use lodge_services::websites::{InvoiceRef, Settlement};
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
    let page = st.lodge.org_invoices(&c.access, i64::MAX, 0).await?;
    let cur = st.lodge.settings.currency;
    let unpaid: i64 = page.rows.iter().map(due_now).sum();
    let mut summary = BTreeMap::new();
    summary.insert("count".to_owned(), page.count.to_string());
    summary.insert("unpaid_total".to_owned(), money_str(unpaid, cur));
    summary.insert("currency".to_owned(), cur.code().to_owned());
    Ok(Json(BillingInvoiceList {
        rows: page.rows.iter().map(charge_invoice).collect(),
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

/// Reads `12,13,SERVICEwebhosting7`: invoice ids and website tags. Anything else is simply
/// not found.
fn invoice_refs(list: &str) -> V2Result<Vec<InvoiceRef>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let r = match item.strip_prefix("SERVICEwebhosting") {
                Some(tag) => tag.parse().map(InvoiceRef::Website),
                None => item.parse().map(InvoiceRef::Invoice),
            };
            r.map_err(|_| V2Error::not_found())
        })
        .collect()
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
    let refs = invoice_refs(&invoices)?;
    let actor = format!("user:{}", c.principal.user);
    let from_credit = method == "prepay";
    Ok(Json(
        match st
            .lodge
            .settle_invoices(&c.access, &refs, from_credit, &actor)
            .await?
        {
            Settlement::PaidFromCredit { invoices } => PaymentReply {
                kind: "single".into(),
                redirect: None,
                text: format!("Paid {invoices} invoice(s) from account credit."),
            },
            Settlement::PayOnPage { payment_token } => PaymentReply {
                kind: "redirect".into(),
                redirect: Some(payment_url(&st.public_base_url, &payment_token)),
                text: "Continue to the payment page.".into(),
            },
        },
    ))
}
