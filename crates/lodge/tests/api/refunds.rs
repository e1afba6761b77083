//! Staff refunds of paid invoices (`/v1/admin/invoices/{id}/refunds`): whole or part, to
//! account credit or in cash; what they refuse (and then change nothing); retries; and
//! refunds racing for one invoice.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{add_credit, cents, invoice, str_of, v2_ok, TestApp};
use crate::on_both_engines;

on_both_engines!(
    a_whole_refund_to_credit_returns_it_to_the_balance,
    a_partial_cash_refund_then_the_rest_to_credit,
    a_partly_refunded_invoices_page_shows_the_refund,
    a_refund_above_what_is_left_is_refused_and_changes_nothing,
    cash_never_exceeds_the_money_received,
    only_a_paid_invoice_of_a_known_id_is_refunded_by_staff,
    a_retried_cash_reference_or_idempotency_key_refunds_once,
    concurrent_half_refunds_exactly_two_are_accepted,
    staff_pay_an_invoice_from_credit_which_is_no_payment_method,
    a_websites_invoices_show_what_paid_them_and_what_went_back,
    a_cancellation_refunded_since_is_withdrawn_by_staff_only,
);

// ---- helpers ----

/// Places a Starter order (external domain) through `/v1`; returns its invoice id.
async fn order(app: &TestApp, name: &str) -> i64 {
    let o = crate::harness::order_external(app, name).await;
    o["invoice_id"].as_i64().unwrap()
}

/// Staff record a payment (a bank transfer) on an invoice.
async fn pay(app: &TestApp, invoice_id: i64, amount: &str, reference: &str) {
    let (status, body) = app
        .post(
            &format!("/v1/admin/invoices/{invoice_id}/payments"),
            &app.admin_key(),
            &json!({ "amount": amount, "method": "bank_transfer", "reference": reference }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "payment: {body}");
}

/// An invoice paid from account credit alone; returns (id, total in cents).
async fn paid_by_credit(app: &TestApp, name: &str) -> (i64, i64) {
    add_credit(app, &app.org_id(), "100.00").await;
    let id = order(app, name).await;
    let inv = invoice(app, id).await;
    assert_eq!(inv["status"], "paid", "{inv}");
    assert_eq!(inv["credit_applied"], inv["total"], "{inv}");
    (id, cents(&inv["total"]))
}

/// An invoice paid by a staff-recorded payment alone; returns (id, total in cents).
async fn paid_by_payment(app: &TestApp, name: &str) -> (i64, i64) {
    let id = order(app, name).await;
    let inv = invoice(app, id).await;
    assert_eq!(inv["status"], "unpaid", "{inv}");
    assert_eq!(cents(&inv["credit_applied"]), 0, "no credit on file: {inv}");
    pay(app, id, str_of(&inv, "total"), &format!("BANK-{name}")).await;
    let inv = invoice(app, id).await;
    assert_eq!(inv["status"], "paid", "{inv}");
    (id, cents(&inv["total"]))
}

fn refunds_path(invoice_id: impl std::fmt::Display) -> String {
    format!("/v1/admin/invoices/{invoice_id}/refunds")
}

/// `12345` cents as `"123.45"`.
fn money(c: i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

/// Staff ask for a refund.
async fn refund(app: &TestApp, invoice_id: i64, body: &Value) -> (StatusCode, Value) {
    app.post(&refunds_path(invoice_id), &app.admin_key(), body)
        .await
}

/// Cancelled, refunded, withdrawn: the customer cannot keep the period given back by
/// withdrawing the cancellation alone (found by the money audit); staff, who made the
/// refund, can. A refund made before the cancellation was asked for does not stand in the
/// way, nor does one of another account's invoice.
async fn a_cancellation_refunded_since_is_withdrawn_by_staff_only(app: TestApp) {
    use crate::harness::{cancel, hosting, revoke_cancellation};
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = crate::harness::order_external(&app, "refunded-since.example").await;
    let (first, hosting_id) = (
        o["invoice_id"].as_i64().unwrap(),
        str_of(&o, "hosting_id").to_owned(),
    );
    let other = order(&app, "other-account.example").await;
    let total = cents(&invoice(&app, first).await["total"]);

    // Refunded before the cancellation, or another account refunded: withdrawn as before.
    refunded(
        &app,
        first,
        &json!({ "amount": "1.00", "to": "credit", "reason": "Goodwill" }),
    )
    .await;
    app.clock.advance(jiff::SignedDuration::from_secs(60));
    let (status, c) = cancel(&app, &hosting_id, "end_of_period").await;
    assert_eq!(status, StatusCode::OK, "{c}");
    refunded(
        &app,
        other,
        &json!({ "amount": "1.00", "to": "credit", "reason": "Goodwill" }),
    )
    .await;
    let (status, r) = revoke_cancellation(&app, &hosting_id).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert!(r["cancellation"].is_null(), "{r}");

    // Cancelled, then the rest of the invoice given back: the customer's withdrawal is
    // refused and changes nothing.
    app.clock.advance(jiff::SignedDuration::from_secs(60));
    let (status, c) = cancel(&app, &hosting_id, "end_of_period").await;
    assert_eq!(status, StatusCode::OK, "{c}");
    refunded(
        &app,
        first,
        &json!({ "amount": money(total - 100), "to": "credit", "reason": "Cancelled" }),
    )
    .await;
    let before = hosting(&app, &hosting_id).await;
    assert!(!before["cancellation"].is_null(), "{before}");
    let (status, r) = revoke_cancellation(&app, &hosting_id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    assert!(
        str_of(&r, "detail").contains("refunded after its cancellation"),
        "{r}"
    );
    assert_eq!(hosting(&app, &hosting_id).await, before);

    // Staff acting for the organization may withdraw it.
    let path = format!(
        "/v1/organizations/{}/projects/{}/hosting/{hosting_id}/revoke-cancellation",
        app.org_id(),
        app.project_id()
    );
    let (status, r) = app.post(&path, &app.admin_key(), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert!(r["cancellation"].is_null(), "{r}");
    assert_ledger_sums_to_balance(&app).await;
    app.stop().await;
}

/// A refund that must be accepted (`201`); returns the answer.
async fn refunded(app: &TestApp, invoice_id: i64, body: &Value) -> Value {
    let (status, r) = refund(app, invoice_id, body).await;
    assert_eq!(status, StatusCode::CREATED, "refund {body}: {r}");
    assert_eq!(r["created"], true, "{r}");
    r
}

/// The demo organization's credit balance, in cents.
async fn balance(app: &TestApp) -> i64 {
    let (status, c) = app
        .get(
            &format!("/v1/organizations/{}/credit", app.org_id()),
            &app.key(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    cents(&c["balance"])
}

/// The demo organization's ledger adds up to its balance.
async fn assert_ledger_sums_to_balance(app: &TestApp) {
    let sum: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM credit_ledger WHERE organization_id = $1",
    )
    .bind(app.org_id())
    .fetch_one(app.lodge.store.reader())
    .await
    .unwrap();
    assert_eq!(sum, balance(app).await, "the ledger sums to the balance");
}

/// The `refund` entries of an invoice in the ledger: (amount in cents, note, actor).
async fn ledger_refunds(app: &TestApp, invoice_id: i64) -> Vec<(i64, String, String)> {
    sqlx::query_as(
        "SELECT amount_minor, note, actor FROM credit_ledger WHERE invoice_id = $1 AND kind = 'refund' ORDER BY id",
    )
    .bind(invoice_id)
    .fetch_all(app.lodge.store.reader())
    .await
    .unwrap()
}

/// What a refused request must leave as it was: the rows of refunds and the ledger, the
/// balance and the invoice.
async fn snapshot(app: &TestApp, invoice_id: i64) -> (i64, i64, i64, Value) {
    (
        app.count("refunds").await,
        app.count("credit_ledger").await,
        balance(app).await,
        invoice(app, invoice_id).await,
    )
}

/// The staff list of an invoice's refunds.
async fn list(app: &TestApp, invoice_id: i64) -> Value {
    let (status, l) = app.get(&refunds_path(invoice_id), &app.admin_key()).await;
    assert_eq!(status, StatusCode::OK, "{l}");
    l
}

/// The invoice as `/apiv2/billing/invoices` lists it.
async fn apiv2_row(app: &TestApp, invoice_id: i64) -> Value {
    let l = v2_ok(
        app,
        reqwest::Method::GET,
        "/apiv2/billing/invoices",
        &app.key(),
        None,
    )
    .await;
    l["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["invoices_id"] == invoice_id)
        .cloned()
        .unwrap_or_else(|| panic!("invoice {invoice_id} not listed: {l}"))
}

/// A website's invoices as `/apiv2/websites/{id}/invoices` lists them, by the website's
/// host name.
async fn website_invoices(app: &TestApp, hostname: &str) -> Value {
    let key = app.key();
    let sites = v2_ok(app, reqwest::Method::GET, "/apiv2/websites", &key, None).await;
    let id = sites
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["website_hostname"] == hostname)
        .unwrap_or_else(|| panic!("{hostname} not listed: {sites}"))["website_id"]
        .clone();
    let id = id
        .as_i64()
        .or_else(|| id.as_str().and_then(|s| s.parse().ok()))
        .unwrap();
    v2_ok(
        app,
        reqwest::Method::GET,
        &format!("/apiv2/websites/{id}/invoices"),
        &key,
        None,
    )
    .await
}

/// InterServer's formatted day: `5th Dec 2025`.
fn assert_formatted_day(v: &Value) {
    let s = v.as_str().unwrap_or_default();
    let parts: Vec<&str> = s.split(' ').collect();
    let [day, month, year] = parts.as_slice() else {
        panic!("not `5th Dec 2025`: {v}");
    };
    let digits = day.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u32 = digits.parse().unwrap_or_else(|_| panic!("{v}"));
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    assert_eq!(&day[digits.len()..], suffix, "{v}");
    assert!(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            .contains(month),
        "{v}"
    );
    assert!(year.len() == 4 && year.parse::<u32>().is_ok(), "{v}");
}

// ---- tests ----

/// `/apiv2/websites/{id}/invoices` says what paid each invoice, as InterServer's
/// `paid_invoices` does: the account credit applied, a payment staff recorded, and under
/// each what was refunded of it. Found by the responses audit: always `{}`. Its dates read
/// `5th Dec 2025` as InterServer's do (they were `2025-12-05`).
async fn a_websites_invoices_show_what_paid_them_and_what_went_back(app: TestApp) {
    let (by_bank, bank_total) = paid_by_payment(&app, "paid-by-bank.example").await;
    let (by_credit, credit_total) = paid_by_credit(&app, "paid-by-credit.example").await;
    refunded(
        &app,
        by_credit,
        &json!({ "amount": "1.00", "to": "credit", "reason": "Goodwill" }),
    )
    .await;
    refunded(
        &app,
        by_bank,
        &json!({ "amount": "2.00", "to": "cash", "reference": "WIRE-OUT-7", "reason": "Overcharged" }),
    )
    .await;

    let l = website_invoices(&app, "paid-by-credit.example").await;
    let inv = &l["invoices"][by_credit.to_string()];
    assert_eq!(inv["invoices_paid"], 1, "{l}");
    assert_formatted_day(&inv["invoices_date_formatted"]);
    let paid = inv["paid_invoices"].as_object().unwrap();
    assert_eq!(paid.len(), 1, "one credit application: {l}");
    let (key, credit) = paid.iter().next().unwrap();
    assert!(key.starts_with("credit-"), "{l}");
    assert_eq!(&credit["invoices_id"], key, "{l}");
    assert_eq!(credit["payment_type"], "PrePay", "{l}");
    assert_eq!(
        credit["invoices_amount"].as_f64(),
        Some(credit_total as f64 / 100.0),
        "{l}"
    );
    assert_eq!(credit["invoices_currency"], "USD", "{l}");
    assert_formatted_day(&credit["invoices_date_formatted"]);
    let refunds = credit["refund_invoices"].as_object().unwrap();
    assert_eq!(refunds.len(), 1, "{l}");
    let r = refunds.values().next().unwrap();
    assert_eq!(r["invoices_amount"].as_f64(), Some(1.0), "{l}");
    assert_eq!(r["invoices_description"], "REFUND: PrePay", "{l}");
    assert_formatted_day(&r["invoices_date_formatted"]);

    let l = website_invoices(&app, "paid-by-bank.example").await;
    let paid = l["invoices"][by_bank.to_string()]["paid_invoices"]
        .as_object()
        .unwrap();
    assert_eq!(paid.len(), 1, "one payment: {l}");
    let p = paid.values().next().unwrap();
    assert!(
        !p["invoices_id"].as_str().unwrap().starts_with("credit-"),
        "{l}"
    );
    assert_eq!(p["payment_type"], "Bank transfer Payment", "{l}");
    assert_eq!(
        p["invoices_description"], "Bank transfer Payment BANK-paid-by-bank.example",
        "{l}"
    );
    assert_eq!(
        p["invoices_amount"].as_f64(),
        Some(bank_total as f64 / 100.0)
    );
    let r = p["refund_invoices"].as_object().unwrap();
    assert_eq!(r.len(), 1, "{l}");
    let r = r.values().next().unwrap();
    assert_eq!(r["invoices_amount"].as_f64(), Some(2.0), "{l}");
    assert_eq!(
        r["invoices_description"], "REFUND: Bank transfer Payment BANK-paid-by-bank.example",
        "{l}"
    );

    // Found by the re-check. Credit a cancelled invoice returned is shown going back (it
    // showed as applied, no refund)...
    let left = balance(&app).await;
    let (status, taken) = app
        .post(
            &format!("/v1/admin/organizations/{}/credit", app.org_id()),
            &app.admin_key(),
            &json!({ "amount": format!("-{}", money(left - 200)), "note": "Down to two" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    assert_eq!(balance(&app).await, 200, "{taken}");
    let part = order(&app, "cancelled-part.example").await;
    let inv = invoice(&app, part).await;
    assert_eq!(cents(&inv["credit_applied"]), 200, "{inv}");
    let (status, cancelled) = app
        .post(
            &format!("/v1/admin/invoices/{part}/cancel"),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let l = website_invoices(&app, "cancelled-part.example").await;
    let paid = l["invoices"][part.to_string()]["paid_invoices"]
        .as_object()
        .unwrap();
    assert_eq!(paid.len(), 1, "{l}");
    let credit = paid.values().next().unwrap();
    assert_eq!(credit["invoices_amount"].as_f64(), Some(2.0), "{l}");
    let back = credit["refund_invoices"].as_object().unwrap();
    assert_eq!(back.len(), 1, "the credit went back: {l}");
    assert_eq!(
        back.values().next().unwrap()["invoices_amount"].as_f64(),
        Some(2.0),
        "{l}"
    );
    // ... and a payment beyond what was due shows what went to the invoice (the rest went
    // to credit; it showed whole).
    let over = order(&app, "overpaid.example").await;
    let inv = invoice(&app, over).await;
    let due = cents(&inv["amount_due"]);
    let credit_applied = cents(&inv["credit_applied"]);
    assert!(due > 0 && due < 1000, "{inv}");
    pay(&app, over, "10.00", "BANK-OVER").await;
    let l = website_invoices(&app, "overpaid.example").await;
    let paid = l["invoices"][over.to_string()]["paid_invoices"]
        .as_object()
        .unwrap();
    let bank = paid
        .values()
        .find(|p| p["payment_type"] == "Bank transfer Payment")
        .unwrap_or_else(|| panic!("{l}"));
    assert_eq!(
        bank["invoices_amount"].as_f64(),
        Some(due as f64 / 100.0),
        "{l}"
    );
    let total: f64 = paid
        .values()
        .map(|p| p["invoices_amount"].as_f64().unwrap())
        .sum();
    assert!(
        (total - (due + credit_applied) as f64 / 100.0).abs() < 1e-9,
        "what paid it adds up to its total: {l}"
    );
    app.stop().await;
}

/// Found by the support-desk audit: staff asked to use a customer's credit recorded a
/// payment with the method `credit`, which marked the invoice paid with the balance
/// untouched and made it refundable in cash. That method is refused; staff pay from credit
/// as the payment page does, all or nothing.
async fn staff_pay_an_invoice_from_credit_which_is_no_payment_method(app: TestApp) {
    crate::provisioning::FakeDriver::default().install(&app.lodge);
    let id = order(&app, "from-credit.example").await;
    let total = cents(&invoice(&app, id).await["total"]);
    let path = format!("/v1/admin/invoices/{id}/pay-from-credit");
    for method in ["credit", "prepay", "account_credit", "store_credit"] {
        let before = snapshot(&app, id).await;
        let (status, body) = app
            .post(
                &format!("/v1/admin/invoices/{id}/payments"),
                &app.admin_key(),
                &json!({ "amount": money(total), "method": method, "reference": "APPLY-1" }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method}: {body}");
        assert!(
            body["method"][0]
                .as_str()
                .unwrap_or_default()
                .contains("pay-from-credit"),
            "{body}"
        );
        assert_eq!(snapshot(&app, id).await, before, "{method}");
    }
    // No credit yet: refused whole, nothing written.
    let before = snapshot(&app, id).await;
    let (status, body) = app.post(&path, &app.admin_key(), &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(snapshot(&app, id).await, before);
    // Staff only; an unknown invoice is 404.
    let (status, _) = app.post(&path, &app.key(), &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .post(
            "/v1/admin/invoices/987654/pay-from-credit",
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    add_credit(&app, &app.org_id(), "100.00").await;
    // Under an Idempotency-Key: a retry whose answer was lost is answered the payment,
    // marked replayed, not "This invoice is paid" (found by the crash audit).
    let bearer = format!("Bearer {}", app.admin_key());
    let keyed =
        || crate::harness::keyed_post(&app, &path, ("Authorization", &bearer), "staff-pay-1", None);
    let (status, replayed, inv) = keyed().await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{inv}");
    assert_eq!(inv["status"], "paid", "{inv}");
    let (status, replayed, again) = keyed().await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again["status"], "paid", "{again}");
    assert_eq!(cents(&inv["credit_applied"]), total, "{inv}");
    assert_eq!(cents(&inv["amount_paid"]), 0, "no money received: {inv}");
    assert_eq!(balance(&app).await, 10_000 - total);
    assert_ledger_sums_to_balance(&app).await;
    // Credit goes back only as credit.
    assert_eq!(list(&app, id).await["invoice"]["cash_refundable"], "0.00");
    // Again: nothing is paid twice.
    let (status, body) = app.post(&path, &app.admin_key(), &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(balance(&app).await, 10_000 - total);
    app.stop().await;
}

/// An invoice paid from credit, refunded whole to credit: the balance is back where it was,
/// the ledger has a `refund` entry with the invoice, actor and reason and still sums to the
/// balance, and the invoice is `refunded` everywhere it shows.
async fn a_whole_refund_to_credit_returns_it_to_the_balance(app: TestApp) {
    let (id, total) = paid_by_credit(&app, "whole-credit.example").await;
    assert_eq!(balance(&app).await, 10000 - total);

    let r = refunded(
        &app,
        id,
        &json!({ "amount": money(total), "to": "credit", "reason": "Goodwill: outage" }),
    )
    .await;
    assert_eq!(r["refund"]["to"], "credit", "{r}");
    assert_eq!(cents(&r["refund"]["amount"]), total, "{r}");
    assert_eq!(r["refund"]["reason"], "Goodwill: outage", "{r}");
    assert!(r["refund"]["reference"].is_null(), "{r}");
    assert!(str_of(&r["refund"], "actor").starts_with("staff:"), "{r}");
    assert_eq!(r["invoice"]["status"], "refunded", "{r}");
    assert_eq!(cents(&r["invoice"]["refunded"]), total, "{r}");
    assert_eq!(cents(&r["invoice"]["refundable"]), 0, "{r}");
    assert_eq!(r["balance"], "100.00", "{r}");

    assert_eq!(balance(&app).await, 10000);
    assert_ledger_sums_to_balance(&app).await;
    let entries = ledger_refunds(&app, id).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].0, total);
    assert_eq!(entries[0].1, "Goodwill: outage");
    assert!(entries[0].2.starts_with("staff:"), "{entries:?}");

    let inv = invoice(&app, id).await;
    assert_eq!(inv["status"], "refunded", "{inv}");
    assert_eq!(cents(&inv["amount_refunded"]), total, "{inv}");
    assert_eq!(cents(&inv["amount_due"]), 0, "{inv}");
    assert!(inv["payment_url"].is_null(), "{inv}");
    let l = list(&app, id).await;
    assert_eq!(l["count"], 1, "{l}");
    assert_eq!(l["results"][0]["id"], r["refund"]["id"], "{l}");
    assert_eq!(l["invoice"]["status"], "refunded", "{l}");
    // InterServer's dialect: a refunded invoice was paid.
    assert_eq!(apiv2_row(&app, id).await["invoices_paid"], 1);

    // Nothing is left: a further refund is refused.
    let before = snapshot(&app, id).await;
    let (status, body) = refund(&app, id, &json!({ "amount": "0.01", "to": "credit" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(snapshot(&app, id).await, before);

    // The consistency checks see a refunded total its refunds do not add up to.
    assert_eq!(app.shutdown_problems().await, Vec::<String>::new());
    let skew = |by: i64| {
        sqlx::query("UPDATE invoices SET refunded_minor = refunded_minor + $2 WHERE id = $1")
            .bind(id)
            .bind(by)
            .execute(app.lodge.store.writer())
    };
    skew(-1).await.unwrap();
    let problems = app.shutdown_problems().await;
    assert!(
        problems.iter().any(|p| p.contains("refunded total")),
        "{problems:?}"
    );
    skew(1).await.unwrap();
    app.stop().await;
}

/// An invoice paid by bank transfer: part back in cash (the ledger untouched), then the rest
/// to credit: `partially_refunded`, then `refunded`.
async fn a_partial_cash_refund_then_the_rest_to_credit(app: TestApp) {
    let (id, total) = paid_by_payment(&app, "cash-then-credit.example").await;
    assert!(total > 100, "{total}");
    let ledger = app.count("credit_ledger").await;

    let r = refunded(
        &app,
        id,
        &json!({ "amount": "1.00", "to": "cash", "reference": "WIRE-OUT-1", "reason": "Overcharged" }),
    )
    .await;
    assert_eq!(r["refund"]["to"], "cash", "{r}");
    assert_eq!(r["refund"]["reference"], "WIRE-OUT-1", "{r}");
    assert_eq!(r["invoice"]["status"], "partially_refunded", "{r}");
    assert_eq!(cents(&r["invoice"]["refundable"]), total - 100, "{r}");
    assert_eq!(cents(&r["invoice"]["cash_refundable"]), total - 100, "{r}");
    assert_eq!(balance(&app).await, 0, "cash leaves the balance alone");
    assert_eq!(app.count("credit_ledger").await, ledger, "no ledger entry");
    let inv = invoice(&app, id).await;
    assert_eq!(inv["status"], "partially_refunded", "{inv}");
    assert_eq!(inv["amount_refunded"], "1.00", "{inv}");
    assert_eq!(cents(&inv["amount_due"]), 0, "{inv}");
    assert_eq!(apiv2_row(&app, id).await["invoices_paid"], 1);

    let r = refunded(
        &app,
        id,
        &json!({ "amount": money(total - 100), "to": "credit", "reason": "Cancelled" }),
    )
    .await;
    assert_eq!(r["invoice"]["status"], "refunded", "{r}");
    assert_eq!(cents(&r["invoice"]["refunded"]), total, "{r}");
    assert_eq!(balance(&app).await, total - 100);
    assert_ledger_sums_to_balance(&app).await;
    assert_eq!(ledger_refunds(&app, id).await.len(), 1);
    let inv = invoice(&app, id).await;
    assert_eq!(inv["status"], "refunded", "{inv}");
    let l = list(&app, id).await;
    assert_eq!(l["count"], 2, "{l}");
    let tos: Vec<&str> = l["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["to"].as_str().unwrap())
        .collect();
    assert_eq!(tos, ["cash", "credit"], "oldest first: {l}");
    app.stop().await;
}

/// More than is left, a bad amount, destination or missing reference: refused, and nothing
/// changes.
/// The customer's payment page of a partly refunded invoice says so in words and shows the
/// amount refunded (found by the operator audit: `partially_refunded`, and no refund
/// anywhere).
async fn a_partly_refunded_invoices_page_shows_the_refund(app: TestApp) {
    let o = crate::harness::order_external(&app, "page-refund.example").await;
    let url = str_of(&o, "invoice_payment_url").to_owned();
    let id = o["invoice_id"].as_i64().unwrap();
    let inv = invoice(&app, id).await;
    pay(&app, id, str_of(&inv, "total"), "BANK-page-refund").await;
    refunded(
        &app,
        id,
        &json!({ "amount": "2.00", "to": "cash", "reference": "WIRE-OUT-2" }),
    )
    .await;
    let page = app.client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains(">partially refunded</span>"), "{html}");
    assert!(
        html.contains("<td class=\"num\" id=\"refunded\">2.00 USD</td>"),
        "{html}"
    );
    app.stop().await;
}

async fn a_refund_above_what_is_left_is_refused_and_changes_nothing(app: TestApp) {
    let (id, total) = paid_by_credit(&app, "over.example").await;
    let before = snapshot(&app, id).await;
    for (body, expected) in [
        (
            json!({ "amount": money(total + 1), "to": "credit" }),
            StatusCode::CONFLICT,
        ),
        (
            json!({ "amount": "0", "to": "credit" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "amount": "-1.00", "to": "credit" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "amount": "1.001", "to": "credit" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "amount": "1.00", "to": "bank" }),
            StatusCode::BAD_REQUEST,
        ),
        (json!({ "amount": "1.00" }), StatusCode::BAD_REQUEST),
        (json!({ "to": "credit" }), StatusCode::BAD_REQUEST),
        (
            json!({ "amount": "1.00", "to": "cash" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "amount": "1.00", "to": "cash", "reference": "  " }),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, r) = refund(&app, id, &body).await;
        assert_eq!(status, expected, "{body}: {r}");
        assert_eq!(snapshot(&app, id).await, before, "{body} changed something");
    }
    let (status, r) = refund(
        &app,
        id,
        &json!({ "amount": money(total + 1), "to": "credit" }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        str_of(&r, "detail").contains(&money(total)),
        "says what is left: {r}"
    );

    // After a part went back, the rest and no more.
    refunded(&app, id, &json!({ "amount": "1.00", "to": "credit" })).await;
    let before = snapshot(&app, id).await;
    let (status, r) = refund(
        &app,
        id,
        &json!({ "amount": money(total - 99), "to": "credit" }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    assert_eq!(snapshot(&app, id).await, before);
    let r = refunded(
        &app,
        id,
        &json!({ "amount": money(total - 100), "to": "credit" }),
    )
    .await;
    assert_eq!(r["invoice"]["status"], "refunded", "{r}");
    assert_ledger_sums_to_balance(&app).await;
    app.stop().await;
}

/// Cash goes back only out of the money received: not out of an invoice paid from credit,
/// and on one paid partly from credit, only up to what was paid by transfer.
async fn cash_never_exceeds_the_money_received(app: TestApp) {
    let (id, _) = paid_by_credit(&app, "credit-paid.example").await;
    let before = snapshot(&app, id).await;
    let (status, r) = refund(
        &app,
        id,
        &json!({ "amount": "1.00", "to": "cash", "reference": "WIRE-X" }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    assert!(str_of(&r, "detail").contains("credit"), "{r}");
    assert_eq!(snapshot(&app, id).await, before);

    // Spend the credit left, then 2.00 of credit and the rest by transfer.
    for n in 0.. {
        if balance(&app).await == 0 {
            break;
        }
        let inv = order(&app, &format!("spend-{n}.example")).await;
        let i = invoice(&app, inv).await;
        if i["status"] == "unpaid" {
            pay(&app, inv, str_of(&i, "amount_due"), &format!("SPEND-{n}")).await;
        }
    }
    add_credit(&app, &app.org_id(), "2.00").await;
    let mixed = order(&app, "mixed.example").await;
    let i = invoice(&app, mixed).await;
    let total = cents(&i["total"]);
    assert_eq!(cents(&i["credit_applied"]), 200, "{i}");
    pay(&app, mixed, str_of(&i, "amount_due"), "BANK-MIXED").await;

    let before = snapshot(&app, mixed).await;
    let (status, r) = refund(
        &app,
        mixed,
        &json!({ "amount": money(total - 199), "to": "cash", "reference": "WIRE-MIXED-0" }),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "only the transfer goes back in cash: {r}"
    );
    assert!(str_of(&r, "detail").contains(&money(total - 200)), "{r}");
    assert_eq!(snapshot(&app, mixed).await, before);
    let r = refunded(
        &app,
        mixed,
        &json!({ "amount": money(total - 200), "to": "cash", "reference": "WIRE-MIXED-1" }),
    )
    .await;
    assert_eq!(r["invoice"]["status"], "partially_refunded", "{r}");
    assert_eq!(cents(&r["invoice"]["cash_refundable"]), 0, "{r}");
    let (status, r) = refund(
        &app,
        mixed,
        &json!({ "amount": "0.01", "to": "cash", "reference": "WIRE-MIXED-2" }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    let r = refunded(&app, mixed, &json!({ "amount": "2.00", "to": "credit" })).await;
    assert_eq!(r["invoice"]["status"], "refunded", "{r}");
    assert_eq!(balance(&app).await, 200);
    assert_ledger_sums_to_balance(&app).await;
    app.stop().await;
}

/// Unpaid invoices are refused (`409`), unknown ones are `404`, and only staff refund.
async fn only_a_paid_invoice_of_a_known_id_is_refunded_by_staff(app: TestApp) {
    let unpaid = order(&app, "unpaid.example").await;
    let before = snapshot(&app, unpaid).await;
    let (status, r) = refund(&app, unpaid, &json!({ "amount": "1.00", "to": "credit" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    assert!(str_of(&r, "detail").contains("unpaid"), "{r}");
    assert_eq!(snapshot(&app, unpaid).await, before);
    let l = list(&app, unpaid).await;
    assert_eq!(l["count"], 0, "{l}");
    assert_eq!(l["invoice"]["refundable"], "0.00", "{l}");

    let body = json!({ "amount": "1.00", "to": "credit" });
    for path in [refunds_path(999_999_999), refunds_path("abc")] {
        let (status, r) = app.post(&path, &app.admin_key(), &body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {r}");
        let (status, r) = app.get(&path, &app.admin_key()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {r}");
    }

    let (paid, _) = paid_by_credit(&app, "staff-only.example").await;
    let before = snapshot(&app, paid).await;
    let (status, r) = app.post(&refunds_path(paid), &app.key(), &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a customer's key: {r}");
    let (status, r) = app.get(&refunds_path(paid), &app.key()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{r}");
    let (status, r) = app
        .call(
            reqwest::Method::POST,
            &refunds_path(paid),
            None,
            Some(&body),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no credentials: {r}");
    assert_eq!(snapshot(&app, paid).await, before);
    app.stop().await;
}

/// A cash refund recorded again under its reference (`200`, the first refund), and a refund
/// retried with its `Idempotency-Key` (the first answer replayed), change nothing; the
/// reference on another invoice and the key with another body are refused.
async fn a_retried_cash_reference_or_idempotency_key_refunds_once(app: TestApp) {
    let (id, _) = paid_by_payment(&app, "retry.example").await;
    let body = json!({ "amount": "2.00", "to": "cash", "reference": "WIRE-RETRY" });
    let first = refunded(&app, id, &body).await;
    let before = snapshot(&app, id).await;
    for _ in 0..2 {
        let (status, again) = refund(&app, id, &body).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["created"], false, "{again}");
        assert_eq!(again["refund"]["id"], first["refund"]["id"], "{again}");
        assert_eq!(again["invoice"]["refunded"], "2.00", "{again}");
        assert_eq!(snapshot(&app, id).await, before);
    }
    // The reference again with another amount: refused, not taken for the first.
    let (status, r) = refund(
        &app,
        id,
        &json!({ "amount": "3.00", "to": "cash", "reference": "WIRE-RETRY" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    let m = r["reference"][0].as_str().unwrap_or_default();
    assert!(m.contains("another amount (2.00 USD)"), "{r}");
    assert_eq!(snapshot(&app, id).await, before);
    // The same new reference five times at once: one refund, four answers of it.
    let body = json!({ "amount": "1.00", "to": "cash", "reference": "WIRE-RETRY-2" });
    let answers = join_all((0..5).map(|_| refund(&app, id, &body))).await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    for (status, r) in &answers {
        assert!(
            *status == StatusCode::CREATED || *status == StatusCode::OK,
            "{r}"
        );
        assert_eq!(r["refund"]["id"], created[0]["refund"]["id"], "{r}");
    }
    assert_eq!(invoice(&app, id).await["amount_refunded"], "3.00");

    let (other, _) = paid_by_payment(&app, "retry-other.example").await;
    let other_before = snapshot(&app, other).await;
    let (status, r) = refund(&app, other, &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert!(r["reference"].is_array(), "{r}");
    assert_eq!(snapshot(&app, other).await, other_before);

    // Under an Idempotency-Key: five at once, then once more, refund once.
    let path = refunds_path(id);
    let keyed = |key: &'static str, amount: &'static str| {
        let req = app
            .client
            .post(app.url(&path))
            .bearer_auth(app.admin_key())
            .header("Idempotency-Key", key)
            .json(&json!({ "amount": amount, "to": "credit", "reason": "keyed" }));
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (status, replayed, r.json::<Value>().await.unwrap())
        }
    };
    let balance_before = balance(&app).await;
    let answers = join_all((0..5).map(|_| keyed("refund-key-1", "1.00"))).await;
    let (_, _, first) = &answers[0];
    for (status, _, body) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
        assert_eq!(body["refund"]["id"], first["refund"]["id"], "{body}");
        assert_eq!(body["balance"], first["balance"], "{body}");
    }
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| !replayed).count(),
        1,
        "one did the work, the others replayed it"
    );
    let (status, replayed, again) = keyed("refund-key-1", "1.00").await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert!(replayed);
    assert_eq!(again, *first);
    assert_eq!(balance(&app).await, balance_before + 100);
    assert_eq!(ledger_refunds(&app, id).await.len(), 1);
    let (status, _, r) = keyed("refund-key-1", "4.00").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    assert_eq!(list(&app, id).await["count"], 3);
    assert_eq!(cents(&invoice(&app, id).await["amount_refunded"]), 400);
    assert_ledger_sums_to_balance(&app).await;
    app.stop().await;
}

/// Ten refunds of half an invoice each, at once, to credit and in cash: exactly two are
/// accepted, the rest refused with `409`, and the invoice is refunded exactly once whole.
async fn concurrent_half_refunds_exactly_two_are_accepted(app: TestApp) {
    let (id, total) = paid_by_payment(&app, "race.example").await;
    assert_eq!(total % 2, 0, "a total that halves: {total}");
    let half = money(total / 2);
    let answers = join_all((0..10).map(|i| {
        let body = if i % 2 == 0 {
            json!({ "amount": half, "to": "credit", "reason": format!("race {i}") })
        } else {
            json!({ "amount": half, "to": "cash", "reference": format!("WIRE-RACE-{i}") })
        };
        let app = &app;
        async move { refund(app, id, &body).await }
    }))
    .await;
    for (status, body) in &answers {
        assert!(
            *status == StatusCode::CREATED || *status == StatusCode::CONFLICT,
            "{status} {body}"
        );
    }
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(accepted.len(), 2, "{answers:?}");
    let inv = invoice(&app, id).await;
    assert_eq!(inv["status"], "refunded", "{inv}");
    assert_eq!(cents(&inv["amount_refunded"]), total, "{inv}");
    assert_eq!(app.count("refunds").await, 2);
    let to_credit = accepted
        .iter()
        .filter(|r| r["refund"]["to"] == "credit")
        .count();
    assert_eq!(ledger_refunds(&app, id).await.len(), to_credit);
    assert_eq!(
        balance(&app).await,
        i64::try_from(to_credit).unwrap() * (total / 2)
    );
    assert_ledger_sums_to_balance(&app).await;
    app.stop().await;
}
