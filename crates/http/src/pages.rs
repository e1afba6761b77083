//! The hosted payment page: server-rendered HTML reached by an invoice's unguessable token,
//! no login. It shows the invoice and the ways to pay that exist: account credit (when the
//! balance covers it) and bank-transfer instructions from configuration.

use std::sync::LazyLock;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use lodge_core::Currency;
use lodge_services::queries::PagePayment;
use lodge_services::ServiceError;
use minijinja::{context, Environment};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::internal;
use crate::wire::{money_str, ts};
use crate::AppState;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // `.html` names turn on HTML escaping.
    if let Err(e) = env.add_template("pay.html", include_str!("templates/pay.html")) {
        tracing::error!(error = %e, "payment page template is invalid");
    }
    env
});

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(payment_page))
        .routes(routes!(pay_with_credit))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageMessage {
    /// `paid` after a successful payment, `insufficient` when credit fell short.
    pub result: Option<String>,
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html("<!doctype html><title>Not found</title><h1>Invoice not found</h1>"),
    )
        .into_response()
}

/// The payment page of an invoice.
#[utoipa::path(get, path = "/pay/{token}", tag = "pages",
    params(("token" = String, Path, description = "The invoice's payment token"), PageMessage),
    responses((status = 200, description = "HTML page", content_type = "text/html"),
              (status = 404, description = "Unknown token", content_type = "text/html")))]
async fn payment_page(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<PageMessage>,
) -> Response {
    let page = match st.lodge.payment_page(&token).await {
        Ok(p) => p,
        Err(ServiceError::NotFound) => return not_found(),
        Err(e) => return internal(&e),
    };
    let inv = &page.detail.invoice;
    let cur = Currency::parse(&inv.currency).unwrap_or(st.lodge.settings.currency);
    let lines: Vec<_> = page
        .detail
        .lines
        .iter()
        .map(|l| {
            context! {
                description => l.description,
                period_start => l.period_start,
                period_end => l.period_end,
                amount => money_str(l.amount_minor, cur),
            }
        })
        .collect();
    let message = match q.result.as_deref() {
        Some("paid") => Some("Payment received: the invoice is paid."),
        Some("insufficient") => Some("Your account credit does not cover this invoice."),
        Some("closed") => Some("This invoice can no longer be paid."),
        _ => None,
    };
    let rendered = TEMPLATES.get_template("pay.html").and_then(|t| {
        t.render(context! {
            invoice => context! {
                number => inv.number.clone().unwrap_or_else(|| inv.id.to_string()),
                status => inv.status,
                payable => inv.status.is_payable(),
                paid => inv.status == lodge_core::InvoiceStatus::Paid,
                due_date => inv.due_date,
            },
            issued => ts(inv.issued_at).get(..10).unwrap_or_default().to_owned(),
            lines => lines,
            currency => cur.code(),
            zero => money_str(0, cur),
            total => money_str(inv.total_minor, cur),
            credit_applied => money_str(inv.credit_applied_minor, cur),
            paid => money_str(inv.paid_minor, cur),
            due => money_str(page.due_minor, cur),
            balance => money_str(page.credit_balance_minor, cur),
            can_pay_credit => page.can_pay_from_credit,
            pay_action => format!("/pay/{token}/credit"),
            bank_instructions => st.lodge.settings.bank_transfer_instructions,
            message => message,
        })
    });
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(e) => internal(&e),
    }
}

/// Pays the invoice in full from the organization's account credit, then shows the page.
#[utoipa::path(post, path = "/pay/{token}/credit", tag = "pages",
    params(("token" = String, Path, description = "The invoice's payment token")),
    responses((status = 303, description = "Back to the payment page with the result"),
              (status = 404, description = "Unknown token", content_type = "text/html")))]
async fn pay_with_credit(State(st): State<AppState>, Path(token): Path<String>) -> Response {
    let result = match st.lodge.pay_page_from_credit(&token).await {
        Ok(PagePayment::Paid) => "paid",
        Ok(PagePayment::InsufficientCredit) => "insufficient",
        Ok(PagePayment::Closed) => "closed",
        Err(ServiceError::NotFound) => return not_found(),
        Err(e) => return internal(&e),
    };
    Redirect::to(&format!("/pay/{token}?result={result}")).into_response()
}
