//! Issue 19: InterServer's own web client checks out against Lodge.
//!
//! The flow its cart walks, on both engines, every response validated against InterServer's
//! OpenAPI document: order → the cart lists it with what is still due → pay from prepay →
//! the cart is empty, the invoice paid and the website provisioned; partial credit; another
//! account's invoice is 404; the account and its billing address, the countries, a domain
//! lookup, the login page; CORS for a configured client origin.

use std::collections::BTreeSet;

use lodge_services::demo::{DEMO_OWNER_EMAIL, DEMO_OWNER_PASSWORD};
use lodge_services::provisioning::Worker;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::apiv2::{assert_v2_error, assert_valid, schema_ref, seed_401_schema};
use crate::harness::{
    add_credit, cents, invoice as v1_invoice, order_body, other_tenant, place, str_of, v2, v2_ok,
    Auth, Options, TestApp, STARTER_PACKAGE,
};
use crate::on_both_engines;

on_both_engines!(
    cart_pay_from_prepay_and_the_website_is_provisioned,
    partial_credit,
    racing_prepays_never_overdraw,
    another_accounts_invoice_is_not_found,
    account_and_billing_address,
    countries_domain_lookup_and_login_page,
    unknown_apiv2_paths_and_methods_answer_in_interservers_shape,
);

on_both_engines!(
    an_order_sent_as_a_multipart_form_is_read_as_one,
    an_order_of_json_declared_as_a_form_is_read_as_json,
);
on_both_engines!(options = with_client_origin; cors_for_the_configured_client_origin);
on_both_engines!(options = with_client_origin; several_invoices_are_paid_one_after_another);

const CLIENT: &str = "https://client.example";

/// A `multipart/form-data` body (boundary `XyZzY`) of `(name, value, is a file)` parts.
fn multipart(parts: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value, file) in parts {
        body.extend_from_slice(b"--XyZzY\r\nContent-Disposition: form-data; name=\"");
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(if *file {
            b"\"; filename=\"a.txt\"\r\n\r\n" as &[u8]
        } else {
            b"\"\r\n\r\n"
        });
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--XyZzY--\r\n");
    body
}

/// JSON declared as a form, as `curl -d '{…}'` (the README's examples) and PHP's curl send
/// it: read as the JSON it is, quoted and placed (found by review: the multipart change
/// read it as a form of one odd field).
async fn an_order_of_json_declared_as_a_form_is_read_as_json(app: TestApp) {
    let body = order_body(STARTER_PACKAGE, 12, "curl-d.example").to_string();
    for (method, what) in [(Method::PUT, "quote"), (Method::POST, "order")] {
        let resp = app
            .client
            .request(method, app.url("/apiv2/websites/order"))
            .header("X-API-KEY", app.key())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{what}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["continue"], true, "{what}: {answer}");
    }
    app.stop().await;
}

/// The order, quoted and placed from a multipart form, InterServer's "form or JSON" (it was
/// read as an empty order: found by the customer audit); a file part is refused with a 400
/// and places nothing.
async fn an_order_sent_as_a_multipart_form_is_read_as_one(app: TestApp) {
    let package = STARTER_PACKAGE.to_string();
    let fields = |host: &'static str| {
        vec![
            ("hostname", host.as_bytes(), false),
            ("packageId", package.as_bytes(), false),
            ("period", &b"12"[..], false),
        ]
    };
    let send = |method: Method, parts: Vec<(&str, &[u8], bool)>| {
        let app = &app;
        let body = multipart(&parts);
        async move {
            let resp = app
                .client
                .request(method, app.url("/apiv2/websites/order"))
                .header("X-API-KEY", app.key())
                .header("Content-Type", "multipart/form-data; boundary=XyZzY")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, quote) = send(Method::PUT, fields("multipart.example")).await;
    assert_eq!(status, StatusCode::OK, "{quote}");
    assert_eq!(quote["continue"], true, "{quote}");
    assert_eq!(quote["hostname"], "multipart.example", "{quote}");
    assert_eq!(quote["frequency"], 12, "{quote}");

    let before = crate::harness::counts(&app).await;
    let mut with_file = fields("file.example");
    with_file.push(("comment", b"hello", true));
    let (status, body) = send(Method::POST, with_file).await;
    assert_v2_error(status, &body, StatusCode::BAD_REQUEST, "a file part");
    assert_eq!(crate::harness::counts(&app).await, before, "nothing placed");

    let (status, placed) = send(Method::POST, fields("multipart.example")).await;
    assert_eq!(status, StatusCode::OK, "{placed}");
    assert_eq!(placed["continue"], true, "{placed}");
    let site = v2_ok(
        &app,
        Method::GET,
        &format!("/apiv2/websites/{}", placed["serviceid"]),
        &app.key(),
        None,
    )
    .await;
    assert!(site.to_string().contains("multipart.example"), "{site}");
    app.stop().await;
}

fn with_client_origin() -> Options {
    Options {
        cors_origins: vec![CLIENT.to_owned()],
        ..Default::default()
    }
}

/// The cart's schema in InterServer's document (`getBillingCart`: an object).
fn cart_schema() -> Value {
    json!({ "type": "object" })
}

async fn cart(app: &TestApp, key: &str) -> Value {
    let c = v2_ok(app, Method::GET, "/apiv2/billing/cart", key, None).await;
    assert_valid(&cart_schema(), &c, "GET /apiv2/billing/cart");
    c
}

fn rows(cart: &Value) -> &Vec<Value> {
    cart["invrows"]
        .as_array()
        .unwrap_or_else(|| panic!("invrows: {cart}"))
}

/// The cart row of an invoice.
fn row_of(cart: &Value, invoice: i64) -> Value {
    rows(cart)
        .iter()
        .find(|r| r["invoices_id"] == invoice)
        .cloned()
        .unwrap_or_else(|| panic!("invoice {invoice} not in the cart: {cart}"))
}

fn service_id(placed: &Value) -> i64 {
    placed["serviceId"].as_i64().expect("serviceId")
}

fn invoice_id(placed: &Value) -> i64 {
    placed["iid"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("iid: {placed}"))
}

/// Places a website order and checks its answer against the document.
async fn order(app: &TestApp, key: &str, host: &str) -> Value {
    let placed = place(app, key, &order_body(STARTER_PACKAGE, 1, host)).await;
    assert_valid(
        &schema_ref("ServiceOrderPostResponse"),
        &placed,
        "POST /apiv2/websites/order",
    );
    placed
}

/// `GET /apiv2/pay/{method}/{list}`, validated when it answers `200`.
async fn pay(app: &TestApp, key: &str, method: &str, list: &str) -> (StatusCode, Value) {
    let path = format!("/apiv2/pay/{method}/{list}");
    let (status, body) = v2(app, Method::GET, &path, Auth::Key(key), None).await;
    if status == StatusCode::OK {
        assert_valid(&schema_ref("initiatePayment_200_response"), &body, &path);
    }
    (status, body)
}

async fn website_status(app: &TestApp, key: &str, id: i64) -> String {
    let w = v2_ok(
        app,
        Method::GET,
        &format!("/apiv2/websites/{id}"),
        key,
        None,
    )
    .await;
    w["serviceInfo"]["website_status"]
        .as_str()
        .unwrap_or_else(|| panic!("{w}"))
        .to_owned()
}

/// `application/x-www-form-urlencoded` encoding of a value.
fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn drain(app: &TestApp) {
    crate::provisioning::drain(Worker::new(app.lodge.clone(), "checkout-worker")).await;
}

async fn cart_pay_from_prepay_and_the_website_is_provisioned(app: TestApp) {
    crate::provisioning::FakeDriver::default().install(&app.lodge);
    let key = app.key();
    let empty = cart(&app, &key).await;
    assert_eq!(rows(&empty).len(), 0, "{empty}");
    assert_eq!(empty["prepay"], json!(0.0), "{empty}");

    let placed = order(&app, &key, "checkout-one.example.com").await;
    let (id, iid) = (service_id(&placed), invoice_id(&placed));
    let total = cents(&placed["total_cost"]);
    assert!(total > 0, "{placed}");
    assert_eq!(placed["invoices_paid"], 0, "no credit yet: {placed}");
    assert_eq!(placed["prepay_used"], "0.00", "{placed}");
    assert_eq!(cents(&placed["amount_due"]), total, "{placed}");

    // The cart lists it as InterServer's client reads it.
    let c = cart(&app, &key).await;
    assert_eq!(rows(&c).len(), 1, "{c}");
    let row = row_of(&c, iid);
    assert_eq!(row["service_label"], format!("website{id}"), "{row}");
    assert_eq!(cents(&row["invoices_amount"]), total, "{row}");
    assert!(row["invoices_amount"].is_number(), "a number: {row}");
    assert_eq!(row["invoices_module"], "webhosting", "{row}");
    assert_eq!(row["invoices_service"], id, "{row}");
    assert_eq!(row["service"], "checkout-one.example.com", "{row}");
    assert_eq!(row["service_status"], "pending", "{row}");
    assert_eq!(row["days_old"], 0, "{row}");
    assert_eq!(
        row["currency_display"],
        format!("${}", placed["total_cost"].as_str().unwrap())
    );
    for f in ["invoices_description", "date", "currency_display"] {
        assert!(row[f].as_str().is_some_and(|s| !s.is_empty()), "{f}: {row}");
    }
    assert_eq!(c["modules"]["webhosting"]["TABLE"], "websites", "{c}");
    assert_eq!(c["modules"]["webhosting"]["PREFIX"], "website", "{c}");
    assert_eq!(c["modules_counts"]["webhosting"], 1, "{c}");
    assert_eq!(c["currencySymbol"], "$", "{c}");
    assert_eq!(c["prepay"], json!(0.0), "{c}");
    assert!(
        c["paymentMethodsData"]
            .as_object()
            .is_some_and(|m| !m.is_empty()),
        "{c}"
    );
    // Days old counts from the invoice's issue; the filter keeps recent ones.
    app.clock.advance(jiff::SignedDuration::from_hours(24 * 3));
    let c = cart(&app, &key).await;
    assert_eq!(row_of(&c, iid)["days_old"], 3, "{c}");
    let recent = v2_ok(
        &app,
        Method::GET,
        "/apiv2/billing/cart?invoice_days=2",
        &key,
        None,
    )
    .await;
    assert_eq!(rows(&recent).len(), 0, "older than 2 days: {recent}");

    // The cart's invoice list and detail.
    let list = v2_ok(&app, Method::GET, "/apiv2/billing/invoices", &key, None).await;
    assert_valid(
        &schema_ref("BillingInvoiceList"),
        &list,
        "GET /apiv2/billing/invoices",
    );
    let listed = &list["rows"][0];
    for f in [
        "id",
        "module",
        "date_raw",
        "date",
        "service_id",
        "service",
        "description",
        "amount",
        "paid",
        "payment_type_id",
        "payment_type",
        "payment_description",
        "paid_on",
    ] {
        assert!(listed.get(f).is_some(), "{f} missing: {listed}");
    }
    assert_eq!(listed["id"], iid, "{listed}");
    assert_eq!(listed["module"], "webhosting", "{listed}");
    assert_eq!(listed["service_id"], id, "{listed}");
    assert_eq!(listed["paid"], "No", "{listed}");
    assert_eq!(cents(&listed["amount"]), total, "{listed}");
    let detail = v2_ok(
        &app,
        Method::GET,
        &format!("/apiv2/billing/invoices/{iid}"),
        &key,
        None,
    )
    .await;
    assert_valid(
        &schema_ref("BillingInvoiceDetail"),
        &detail,
        "GET /apiv2/billing/invoices/{id}",
    );
    assert_eq!(detail["paid"], "0", "{detail}");
    assert_eq!(cents(&detail["amount_due"]), total, "{detail}");

    // Not enough credit: PrePay pays nothing.
    let (status, body) = pay(&app, &key, "prepay", &format!("website{id}")).await;
    assert_v2_error(
        status,
        &body,
        StatusCode::PAYMENT_REQUIRED,
        "prepay without credit",
    );

    // Credit covers it: the client offers PrePay and pays by its service label.
    add_credit(&app, &app.org_id(), "20.00").await;
    let c = cart(&app, &key).await;
    assert_eq!(cents(&c["prepay"]), 2000, "{c}");
    let (status, paid) = pay(&app, &key, "prepay", &format!("website{id}")).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["type"], "single", "{paid}");

    // The cart is empty, the invoice paid, the credit spent once.
    let c = cart(&app, &key).await;
    assert_eq!(rows(&c).len(), 0, "{c}");
    assert_eq!(cents(&c["prepay"]), 2000 - total, "{c}");
    assert_eq!(v1_invoice(&app, iid).await["status"], "paid");
    let list = v2_ok(&app, Method::GET, "/apiv2/billing/invoices", &key, None).await;
    assert_eq!(list["rows"][0]["paid"], "Yes", "{list}");
    assert_eq!(list["rows"][0]["payment_type"], "PrePay", "{list}");
    assert!(
        list["rows"][0]["paid_on"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{list}"
    );

    // A retry (any form of the same list) pays nothing twice.
    for again in [
        format!("website{id}"),
        iid.to_string(),
        format!("INVwebhosting{iid}"),
    ] {
        let (status, body) = pay(&app, &key, "prepay", &again).await;
        assert_v2_error(
            status,
            &body,
            StatusCode::CONFLICT,
            &format!("again: {again}"),
        );
    }
    assert_eq!(cents(&cart(&app, &key).await["prepay"]), 2000 - total);

    // The worker provisions the website.
    assert_eq!(website_status(&app, &key, id).await, "pending-setup");
    drain(&app).await;
    assert_eq!(website_status(&app, &key, id).await, "active");
    app.stop().await;
}

async fn partial_credit(app: TestApp) {
    let key = app.key();
    // Credit short of the first invoice is applied to it: the cart shows the rest.
    add_credit(&app, &app.org_id(), "3.00").await;
    let a = order(&app, &key, "partial-a.example.com").await;
    let (a_id, a_iid) = (service_id(&a), invoice_id(&a));
    let a_total = cents(&a["total_cost"]);
    assert!(a_total > 300, "{a}");
    assert_eq!(a["invoices_paid"], 0, "{a}");
    assert_eq!(a["prepay_used"], "3.00", "{a}");
    assert_eq!(cents(&a["amount_due"]), a_total - 300, "{a}");
    let c = cart(&app, &key).await;
    assert_eq!(
        cents(&row_of(&c, a_iid)["invoices_amount"]),
        a_total - 300,
        "{c}"
    );
    assert_eq!(cents(&c["prepay"]), 0, "all of it applied: {c}");
    let detail = v2_ok(
        &app,
        Method::GET,
        &format!("/apiv2/billing/invoices/{a_iid}"),
        &key,
        None,
    )
    .await;
    assert_eq!(detail["credit_applied"], "3.00", "{detail}");

    // A second order with no credit left is due in full.
    let b = order(&app, &key, "partial-b.example.com").await;
    let (b_id, b_iid) = (service_id(&b), invoice_id(&b));
    let b_total = cents(&b["total_cost"]);
    assert_eq!(b["prepay_used"], "0.00", "{b}");

    // Credit covering the first but not both: PrePay pays the one it covers, in full, and
    // says what is still due; the other stays in the cart, untouched.
    let credit = a_total - 300 + b_total - 1;
    add_credit(
        &app,
        &app.org_id(),
        &format!("{}.{:02}", credit / 100, credit % 100),
    )
    .await;
    let (status, paid) = pay(
        &app,
        &key,
        "prepay",
        &format!("website{a_id},website{b_id}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["type"], "single", "{paid}");
    assert!(
        paid["text"]
            .as_str()
            .is_some_and(|t| t.contains("still due")),
        "{paid}"
    );
    assert_eq!(v1_invoice(&app, a_iid).await["status"], "paid");
    assert_eq!(v1_invoice(&app, b_iid).await["status"], "unpaid");
    let c = cart(&app, &key).await;
    let labels: BTreeSet<&str> = rows(&c)
        .iter()
        .map(|r| r["service_label"].as_str().unwrap())
        .collect();
    let b_label = format!("website{b_id}");
    assert_eq!(labels, BTreeSet::from([b_label.as_str()]), "{c}");
    assert_eq!(cents(&row_of(&c, b_iid)["invoices_amount"]), b_total, "{c}");
    assert_eq!(cents(&c["prepay"]), b_total - 1, "{c}");
    // Still one cent short: nothing is paid in part.
    let (status, body) = pay(&app, &key, "prepay", &b_iid.to_string()).await;
    assert_v2_error(status, &body, StatusCode::PAYMENT_REQUIRED, "a cent short");
    assert_eq!(v1_invoice(&app, b_iid).await["status"], "unpaid");

    // Credit that covers a new order pays it at once: the answer says so, the cart skips it.
    add_credit(&app, &app.org_id(), "50.00").await;
    let d = order(&app, &key, "partial-d.example.com").await;
    assert_eq!(d["invoices_paid"], 1, "{d}");
    assert_eq!(d["amount_due"], "0.00", "{d}");
    assert_eq!(cents(&d["prepay_used"]), cents(&d["total_cost"]), "{d}");
    let c = cart(&app, &key).await;
    assert!(
        rows(&c).iter().all(|r| r["invoices_id"] != invoice_id(&d)),
        "{c}"
    );
    app.stop().await;
}

/// Two PrePays at once for two invoices, with credit for one: one is paid, the other
/// refused; the credit is spent once and never goes below zero.
async fn racing_prepays_never_overdraw(app: TestApp) {
    let key = app.key();
    let e = order(&app, &key, "race-e.example.com").await;
    let f = order(&app, &key, "race-f.example.com").await;
    let total = cents(&e["total_cost"]);
    assert_eq!(cents(&f["total_cost"]), total, "the same plan");
    add_credit(
        &app,
        &app.org_id(),
        &format!("{}.{:02}", total / 100, total % 100),
    )
    .await;
    let (e_list, f_list) = (invoice_id(&e).to_string(), invoice_id(&f).to_string());
    let (one, two) = tokio::join!(
        pay(&app, &key, "prepay", &e_list),
        pay(&app, &key, "prepay", &f_list),
    );
    let mut statuses = [one.0, two.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::PAYMENT_REQUIRED],
        "{one:?} {two:?}"
    );
    let mut states = vec![];
    for i in [invoice_id(&e), invoice_id(&f)] {
        states.push(v1_invoice(&app, i).await["status"].clone());
    }
    states.sort_by_key(|s| s.to_string());
    assert_eq!(states, [json!("paid"), json!("unpaid")], "{states:?}");
    let c = cart(&app, &key).await;
    assert_eq!(cents(&c["prepay"]), 0, "{c}");
    assert_eq!(rows(&c).len(), 1, "{c}");
    app.stop().await;
}

async fn another_accounts_invoice_is_not_found(app: TestApp) {
    let key = app.key();
    let mine = order(&app, &key, "mine.example.com").await;
    let (_, _, other_key) = other_tenant(&app, "checkout-other").await;
    let theirs = order(&app, &other_key, "theirs.example.com").await;
    let (their_id, their_iid) = (service_id(&theirs), invoice_id(&theirs));
    add_credit(&app, &app.org_id(), "100.00").await;
    for path in [
        format!("/apiv2/billing/invoices/{their_iid}"),
        format!("/apiv2/pay/prepay/{their_iid}"),
        format!("/apiv2/pay/prepay/website{their_id}"),
        format!("/apiv2/pay/online/INVwebhosting{their_iid}"),
        format!("/apiv2/billing/pay/prepay/{their_iid}"),
        "/apiv2/billing/invoices/999999".to_owned(),
        "/apiv2/billing/invoices/not-a-number".to_owned(),
    ] {
        let (status, body) = v2(&app, Method::GET, &path, Auth::Key(&key), None).await;
        assert_v2_error(status, &body, StatusCode::NOT_FOUND, &path);
    }
    // An identifier in no format InterServer's tags take: 422 Invalid Invoice Tag, as
    // InterServer answers (found by the InterServer audit: 404).
    for path in [
        "/apiv2/pay/prepay/not-an-invoice".to_owned(),
        format!("/apiv2/billing/pay/cc/{their_iid},abc"),
        "/apiv2/billing/pay/prepay/RINVwebhosting6".to_owned(),
    ] {
        let (status, body) = v2(&app, Method::GET, &path, Auth::Key(&key), None).await;
        assert_v2_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, &path);
        assert_eq!(body["message"], "Invalid Invoice Tag", "{path}: {body}");
    }
    let still = v2_ok(
        &app,
        Method::GET,
        &format!("/apiv2/billing/invoices/{their_iid}"),
        &other_key,
        None,
    )
    .await;
    assert_eq!(still["paid"], "0", "{still}");
    // Each cart holds only its own account's invoices.
    let c = cart(&app, &key).await;
    let ids: Vec<i64> = rows(&c)
        .iter()
        .map(|r| r["invoices_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![invoice_id(&mine)], "{c}");
    let theirs_cart = cart(&app, &other_key).await;
    assert_eq!(rows(&theirs_cart).len(), 1, "{theirs_cart}");
    assert_eq!(theirs_cart["prepay"], json!(0.0), "{theirs_cart}");
    // An unknown method, and no credentials.
    let (status, body) = v2(
        &app,
        Method::GET,
        &format!("/apiv2/pay/bitcoin/{}", invoice_id(&mine)),
        Auth::Key(&key),
        None,
    )
    .await;
    assert_v2_error(status, &body, StatusCode::BAD_REQUEST, "unknown method");
    for path in [
        "/apiv2/billing/cart",
        "/apiv2/account",
        "/apiv2/billing/invoices/1",
    ] {
        let (status, body) = v2(&app, Method::GET, path, Auth::Nothing, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_valid(&seed_401_schema(), &body, path);
    }
    // Without configured origins, no CORS headers at all.
    let resp = app
        .client
        .get(app.url("/apiv2/billing/cart"))
        .header("Origin", CLIENT)
        .header("X-API-KEY", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        resp.headers()
    );
    app.stop().await;
}

async fn account_and_billing_address(app: TestApp) {
    let key = app.key();
    let before = v2_ok(&app, Method::GET, "/apiv2/account", &key, None).await;
    assert_valid(&schema_ref("AccountInfo"), &before, "GET /apiv2/account");
    assert_eq!(before["data"]["account_lid"], DEMO_OWNER_EMAIL, "{before}");

    // A JSON update (as the client's edit form posts it), then a form with one field.
    let update = json!({
        "name": "Ada Lovelace",
        "company": "Analytical Engines",
        "address": "12 St James's Square",
        "address2": "",
        "city": "London",
        "state": "Greater London",
        "zip": "SW1Y 4JH",
        "country": "gb",
        "phone": "+44 (20) 7946-0958",
    });
    let done = v2_ok(&app, Method::POST, "/apiv2/account", &key, Some(&update)).await;
    assert_valid(
        &schema_ref("SuccessTextResponse"),
        &done,
        "POST /apiv2/account",
    );
    assert_eq!(done["success"], true, "{done}");
    let resp = app
        .client
        .post(app.url("/apiv2/account"))
        .header("X-API-KEY", &key)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("city=Cambridge")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A form declared as JSON is not read as a form: refused, nothing changed; so is a
    // login whose body is not what its Content-Type says.
    let resp = app
        .client
        .post(app.url("/apiv2/account"))
        .header("X-API-KEY", &key)
        .header("Content-Type", "application/json")
        .body("city=Berlin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "422", "{body}");
    let resp = app
        .client
        .post(app.url("/apiv2/login"))
        .header("Content-Type", "application/json")
        .body("login=a%40b.test&passwd=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "400", "{body}");
    let after = v2_ok(&app, Method::GET, "/apiv2/account", &key, None).await;
    assert_valid(&schema_ref("AccountInfo"), &after, "GET /apiv2/account");
    let d = &after["data"];
    assert_eq!(d["name"], "Ada Lovelace", "{after}");
    assert_eq!(d["company"], "Analytical Engines", "{after}");
    assert_eq!(d["address"], "12 St James's Square", "{after}");
    assert_eq!(d["city"], "Cambridge", "{after}");
    assert_eq!(d["zip"], "SW1Y 4JH", "{after}");
    assert_eq!(d["country"], "GB", "{after}");
    assert_eq!(d["phone"], "+442079460958", "normalized: {after}");
    // The whole form sent back, the e-mail address as it is: accepted.
    v2_ok(
        &app,
        Method::POST,
        "/apiv2/account",
        &key,
        Some(&json!({ "email": DEMO_OWNER_EMAIL, "city": "Cambridge" })),
    )
    .await;
    // The cart's currency switch posts only the currency: the installation's is accepted.
    v2_ok(
        &app,
        Method::POST,
        "/apiv2/account",
        &key,
        Some(&json!({ "currency": "USD" })),
    )
    .await;

    // Bad input: 422 in the dialect's shape, and nothing changes.
    for (bad, what) in [
        (json!({ "name": "" }), "an empty name"),
        (json!({ "country": "XX" }), "an unknown country"),
        (json!({ "phone": "call me" }), "not a phone"),
        (
            json!({ "zip": "" , "city": "Oxford" }),
            "an empty zip beside a good city",
        ),
        (json!({ "currency": "EUR" }), "another currency"),
        // Not changed here: refused rather than ignored with "Account updated." (found by
        // the support-desk audit).
        (
            json!({ "email": "new-billing@example.test", "city": "Paris" }),
            "another e-mail address",
        ),
        (json!({ "city": ["x"] }), "not a string"),
        (
            json!({ "state": -1.5, "zip": 12345 }),
            "a number for a text that is not a postcode or a phone",
        ),
        (json!({ "zip": 1.5 }), "a postcode with a fraction"),
        (json!({}), "nothing to change"),
        (json!({ "city": "x".repeat(101) }), "too long"),
    ] {
        let (status, body) = v2(
            &app,
            Method::POST,
            "/apiv2/account",
            Auth::Key(&key),
            Some(&bad),
        )
        .await;
        assert_v2_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, what);
        assert_valid(&schema_ref("TextResponse"), &body, what);
    }
    // A multipart form too, as InterServer's API document declares it; a file part, or a
    // field that is not UTF-8, is refused.
    for (parts, expected) in [
        (
            vec![("zip", &b"SW1Y 4JH"[..], false), ("city", b"Oxford", false)],
            StatusCode::OK,
        ),
        (
            vec![("city", &b"Bath"[..], true)],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            vec![("city", &b"\xff\xfeBath"[..], false)],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let resp = app
            .client
            .post(app.url("/apiv2/account"))
            .header("X-API-KEY", &key)
            .header("Content-Type", "multipart/form-data; boundary=XyZzY")
            .body(multipart(&parts))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), expected, "{parts:?}");
    }
    let oxford = v2_ok(&app, Method::GET, "/apiv2/account", &key, None).await;
    assert_eq!(oxford["data"]["city"], "Oxford", "{oxford}");
    // A postcode and a phone sent as whole numbers are their digits, as InterServer's
    // clients send them (found by the /apiv2 audit: a 422).
    v2_ok(
        &app,
        Method::POST,
        "/apiv2/account",
        &key,
        Some(&json!({ "zip": 62701, "phone": 442079460958_u64 })),
    )
    .await;
    let numbered = v2_ok(&app, Method::GET, "/apiv2/account", &key, None).await;
    assert_eq!(numbered["data"]["zip"], "62701", "{numbered}");
    assert!(
        numbered["data"]["phone"]
            .as_str()
            .unwrap()
            .contains("442079460958"),
        "{numbered}"
    );
    v2_ok(
        &app,
        Method::POST,
        "/apiv2/account",
        &key,
        Some(&json!({ "zip": "SW1Y 4JH", "phone": "+442079460958" })),
    )
    .await;
    v2_ok(
        &app,
        Method::POST,
        "/apiv2/account",
        &key,
        Some(&json!({ "city": "Cambridge" })),
    )
    .await;
    let resp = app
        .client
        .post(app.url("/apiv2/login"))
        .header("Content-Type", "multipart/form-data; boundary=XyZzY")
        .body(multipart(&[
            ("login", app.demo().owner_email.as_bytes(), false),
            ("passwd", app.demo().owner_password.as_bytes(), false),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "a multipart login");
    let session: Value = resp.json().await.unwrap();
    assert!(session["sessionId"].is_string(), "{session}");

    // A form whose bytes are not UTF-8 is refused as such JSON is, not stored mangled.
    let resp = app
        .client
        .post(app.url("/apiv2/account"))
        .header("X-API-KEY", &key)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("name=%FF%FEabc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unchanged = v2_ok(&app, Method::GET, "/apiv2/account", &key, None).await;
    assert_eq!(unchanged["data"], after["data"], "nothing changed");

    // Another organization's account is its own.
    let (_, _, other_key) = other_tenant(&app, "account-other").await;
    let theirs = v2_ok(&app, Method::GET, "/apiv2/account", &other_key, None).await;
    assert_eq!(theirs["data"]["city"], "", "{theirs}");
    app.stop().await;
}

async fn countries_domain_lookup_and_login_page(app: TestApp) {
    let key = app.key();
    // Countries: public, by ISO code.
    let (status, countries) = v2(
        &app,
        Method::GET,
        "/apiv2/account/countries",
        Auth::Nothing,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{countries}");
    assert_valid(&json!({ "type": "object" }), &countries, "countries");
    assert_eq!(countries["US"], "United States", "{countries}");
    assert_eq!(countries["GB"], "United Kingdom", "{countries}");
    assert!(countries.as_object().unwrap().len() >= 240);
    let (_, iso3) = v2(
        &app,
        Method::GET,
        "/apiv2/account/countries?fetch_by=iso3",
        Auth::Nothing,
        None,
    )
    .await;
    assert_eq!(iso3["USA"], "United States", "{iso3}");

    // The login page.
    let (status, login) = v2(&app, Method::GET, "/apiv2/login", Auth::Nothing, None).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    assert_valid(&schema_ref("LoginInfo"), &login, "GET /apiv2/login");
    // Its count is the hosting accounts ever ordered, read at most once a minute (a public
    // page does not count the whole table on every hit).
    let counted = app.count("hosting").await;
    assert_eq!(login["counts"]["websites"], counted, "{login}");
    order(&app, &app.key(), "counted-later.com").await;
    assert_eq!(app.count("hosting").await, counted + 1);
    let (_, again) = v2(&app, Method::GET, "/apiv2/login", Auth::Nothing, None).await;
    assert_eq!(again["counts"], login["counts"], "{again}");

    // A domain lookup: the TLD table's prices; public, and more with credentials.
    let schema = schema_ref("DomainLookupResponse");
    let (status, free) = v2(
        &app,
        Method::GET,
        "/apiv2/domains/lookup/Fresh-Name.com",
        Auth::Nothing,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{free}");
    assert_valid(&schema, &free, "a free name");
    assert_eq!(free["available"], true, "{free}");
    assert_eq!(free["new"], "12.00", "{free}");
    assert_eq!(free["renewal"], "14.00", "{free}");
    assert_eq!(free["transfer"], "12.00", "{free}");
    assert_eq!(free["service"]["services_field1"], ".com", "{free}");
    assert_eq!(free["website"], false, "{free}");

    // A name any organization hosts is not available; its own holder is told it has it.
    let (_, _, other_key) = other_tenant(&app, "lookup-other").await;
    order(&app, &other_key, "hosted-elsewhere.com").await;
    order(&app, &key, "hosted-here.org").await;
    // A guest's credentials see what no credentials see (they were refused 403: found by
    // the authorization audit).
    let guest = app.demo_member_key("guest@lookup.test", "guest", &[]).await;
    for (name, auth, website) in [
        ("hosted-elsewhere.com", Auth::Key(&key), false),
        ("hosted-here.org", Auth::Key(&key), true),
        ("hosted-here.org", Auth::Nothing, false),
        ("hosted-here.org", Auth::Key(&guest), false),
    ] {
        let (status, found) = v2(
            &app,
            Method::GET,
            &format!("/apiv2/domains/lookup/{name}"),
            auth,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_valid(&schema, &found, name);
        assert_eq!(found["available"], false, "{name}: {found}");
        assert_eq!(found["website"], website, "{name}: {found}");
    }
    // An extension not sold here, or a subdomain: not available, no price.
    for name in ["name.example", "www.fresh-name.com"] {
        let (status, found) = v2(
            &app,
            Method::GET,
            &format!("/apiv2/domains/lookup/{name}"),
            Auth::Key(&key),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_valid(&schema, &found, name);
        assert_eq!(found["available"], false, "{name}: {found}");
        assert!(found.get("new").is_none(), "{name}: {found}");
    }
    // Not a name: 422; wrong credentials: 401.
    let (status, body) = v2(
        &app,
        Method::GET,
        "/apiv2/domains/lookup/not%20a%20name!",
        Auth::Nothing,
        None,
    )
    .await;
    assert_v2_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not a name",
    );
    assert_valid(&schema_ref("TextResponse"), &body, "not a name");
    let (status, body) = v2(
        &app,
        Method::GET,
        "/apiv2/domains/lookup/fresh-name.com",
        Auth::Key("wrong"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    app.stop().await;
}

async fn cors_for_the_configured_client_origin(app: TestApp) {
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/apiv2/billing/cart"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header(
                "Access-Control-Request-Headers",
                "sessionid,content-type,x-api-key,idempotency-key",
            )
            .send()
    };
    // Allowed: answered, with credentials, the dialect's headers and methods.
    let ok = preflight(CLIENT).await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert_eq!(header("access-control-allow-origin"), CLIENT, "{h:?}");
    assert_eq!(header("access-control-allow-credentials"), "true", "{h:?}");
    for allowed in ["sessionid", "x-api-key", "content-type", "idempotency-key"] {
        assert!(
            header("access-control-allow-headers").contains(allowed),
            "{allowed}: {h:?}"
        );
    }
    for m in ["get", "post", "put", "delete"] {
        assert!(
            header("access-control-allow-methods").contains(m),
            "{m}: {h:?}"
        );
    }
    // Another origin: no CORS headers (the browser refuses).
    let other = preflight("https://evil.example").await.unwrap();
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        other.headers()
    );

    // A credentialed request from the client: log in, then the cart with the session.
    let login = app
        .client
        .post(app.url("/apiv2/login"))
        .header("Origin", CLIENT)
        .json(&json!({ "login": DEMO_OWNER_EMAIL, "passwd": DEMO_OWNER_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        login.headers().get("access-control-allow-origin").unwrap(),
        CLIENT
    );
    let session: Value = login.json().await.unwrap();
    let session = session["sessionId"].as_str().unwrap().to_owned();
    let resp = app
        .client
        .get(app.url("/apiv2/billing/cart"))
        .header("Origin", CLIENT)
        .header("sessionid", &session)
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(
        h.get("access-control-allow-origin").unwrap(),
        CLIENT,
        "{h:?}"
    );
    assert_eq!(h.get("access-control-allow-credentials").unwrap(), "true");
    let body: Value = resp.json().await.unwrap();
    assert_valid(&cart_schema(), &body, "the cart over CORS");
    // /v1 is not opened to the client.
    let v1 = app
        .client
        .get(app.url(&format!("/v1/organizations/{}", app.org_id())))
        .header("Origin", CLIENT)
        .bearer_auth(app.key())
        .send()
        .await
        .unwrap();
    assert!(v1.headers().get("access-control-allow-origin").is_none());

    // redirectUrl: passed on to the payment page for the client's origin only.
    let key = app.key();
    let placed = order(&app, &key, "cors-pay.example.com").await;
    let iid = invoice_id(&placed);
    let back = format!("{CLIENT}/pay/done?x=1");
    for (url, kept) in [
        (back.as_str(), true),
        ("https://evil.example/steal", false),
        ("javascript:alert(1)", false),
    ] {
        let q = format!("redirectUrl={}", form_encode(url));
        let (status, r) = v2(
            &app,
            Method::GET,
            &format!("/apiv2/pay/online/{iid}?{q}"),
            Auth::Key(&key),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_valid(&schema_ref("initiatePayment_200_response"), &r, url);
        assert_eq!(r["type"], "redirect", "{r}");
        let page = r["redirect"].as_str().unwrap();
        let expected = format!("return={}", form_encode(url));
        assert_eq!(page.contains(&expected), kept, "{url}: {page}");
        assert_eq!(page.contains("return="), kept, "{url}: {page}");
        // The page itself offers the way back only for the client's origin.
        let html = app
            .client
            .get(page)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(html.contains("id=\"back\""), kept, "{url}");
        assert!(!html.contains("evil.example"), "{url}");
    }
    let forged = format!(
        "{}?return=https%3A%2F%2Fevil.example%2F",
        v1_invoice(&app, iid).await["payment_url"].as_str().unwrap()
    );
    let html = app
        .client
        .get(&forged)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !html.contains("id=\"back\""),
        "a forged way back is ignored"
    );
    app.stop().await;
}

/// A path or method `/apiv2` does not have is answered in InterServer's error shape (a
/// client of the dialect reads `{code, message}`), anything else in `/v1`'s.
async fn unknown_apiv2_paths_and_methods_answer_in_interservers_shape(app: TestApp) {
    let key = app.key();
    let (status, body) = v2(
        &app,
        Method::GET,
        "/apiv2/no/such/thing",
        Auth::Key(&key),
        None,
    )
    .await;
    assert_v2_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "an unknown /apiv2 path",
    );
    let (status, body) = v2(
        &app,
        Method::PATCH,
        "/apiv2/billing/cart",
        Auth::Key(&key),
        None,
    )
    .await;
    assert_v2_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "a method /apiv2/billing/cart does not have",
    );
    let (status, body) = app.get("/v1/no/such/thing", &key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body, json!({ "detail": "Not found." }));
    app.stop().await;
}

/// `/apiv2/pay/online/a,b,c` sends the customer to the first invoice's page, which lists the
/// others and links to the next; paying one keeps the rest and the way back (found by the
/// apiv2 audit: the second and third invoices were dropped without a word).
async fn several_invoices_are_paid_one_after_another(app: TestApp) {
    let key = app.key();
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for host in [
            "one.pay-all.example.com",
            "two.pay-all.example.com",
            "three.pay-all.example.com",
        ] {
            ids.push(invoice_id(&order(&app, &key, host).await));
        }
        ids
    };
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let back = format!("{CLIENT}/billing");
    let q = format!("redirectUrl={}", form_encode(&back));
    let (status, r) = v2(
        &app,
        Method::GET,
        &format!("/apiv2/pay/online/{list}?{q}"),
        Auth::Key(&key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_valid(&schema_ref("initiatePayment_200_response"), &r, "pay three");
    assert!(str_of(&r, "text").contains("3 invoices"), "{r}");
    let first_page = r["redirect"].as_str().unwrap().to_owned();
    assert!(first_page.contains("then="), "{first_page}");
    assert!(first_page.contains("return="), "{first_page}");
    let get = |url: String| {
        let c = app.client.clone();
        async move {
            let resp = c.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{url}");
            resp.text().await.unwrap()
        }
    };
    let next_link = |html: &str| -> Option<String> {
        html.split("class=\"next\" href=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(|h| app.url(&crate::pages::unescape(h)))
    };
    let number = |id: i64| format!("INV-{id:06}");
    let html = get(first_page.clone()).await;
    assert!(
        html.contains(&format!("Invoice {}", number(ids[0]))),
        "{html}"
    );
    assert!(html.contains("2 more invoices"), "{html}");
    assert!(
        html.contains(&number(ids[1])) && html.contains(&number(ids[2])),
        "{html}"
    );
    assert!(html.contains("id=\"back\""), "the way back: {html}");
    // The next page lists the last one, and keeps the way back.
    let second = next_link(&html).expect("a link to the next invoice");
    let html2 = get(second).await;
    assert!(
        html2.contains(&format!("Invoice {}", number(ids[1]))),
        "{html2}"
    );
    assert!(html2.contains("1 more invoice"), "{html2}");
    assert!(html2.contains("id=\"back\""), "{html2}");
    let third = get(next_link(&html2).expect("a link to the last")).await;
    assert!(!third.contains("id=\"next\""), "the last has none: {third}");

    // Paying the first from credit comes back to its page with the rest still listed.
    crate::harness::add_credit(&app, &app.org_id(), "100.00").await;
    let html = get(first_page.clone()).await;
    let action = html
        .split("<form method=\"post\" action=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(crate::pages::unescape)
        .expect("the credit form");
    let resp = crate::pages::page_form_post(&app, &action, None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let to = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        to.contains("result=paid") && to.contains("then=") && to.contains("return="),
        "{to}"
    );
    let paid = get(app.url(&to)).await;
    assert!(paid.contains("the invoice is paid"), "{paid}");
    assert!(paid.contains("2 more invoices"), "{paid}");
    // A tampered list shows nothing of it.
    let bare = first_page.split('?').next().unwrap();
    let html = get(format!("{bare}?then=nonsense,{},a%20b", "x".repeat(300))).await;
    assert!(!html.contains("id=\"next\""), "{html}");
    // The page's own invoice is not one more to pay, and a token given twice counts once
    // (found by the operator audit).
    let own = bare.rsplit('/').next().unwrap();
    let then = first_page
        .split("then=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .unwrap();
    let html = get(format!("{bare}?then={own}%2C{then}%2C{then}%2C{own}")).await;
    assert!(html.contains("2 more invoices"), "{html}");
    // Bank details (on an unpaid invoice's page) keep their lines.
    assert!(html2.contains("<p class=\"lines\">Pay to IBAN"), "{html2}");
    // A cancelled one is listed as such, and not counted as one more to pay (found by the
    // accessibility audit).
    let (status, r) = v2(
        &app,
        Method::DELETE,
        &format!("/apiv2/billing/invoices/{}", ids[2]),
        Auth::Key(&key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let html = get(first_page.clone()).await;
    assert!(html.contains("1 more invoice to pay"), "{html}");
    assert!(
        html.contains(&format!("Invoice {}: cancelled", number(ids[2]))),
        "{html}"
    );
    app.stop().await;
}
