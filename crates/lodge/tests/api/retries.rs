//! Issue 18: `/apiv2` orders are safe to retry. A retry after a lost answer is answered with
//! the first order's outcome (with `Idempotency-Key`, or, without one, when the same order
//! comes again from the same account within the window), never a second order and never a
//! refusal that says the first one's name is taken.
//!
//! The other `/apiv2` mutations (paying, deleting an invoice, cancelling a website, the
//! account's address) take `Idempotency-Key` too: a retry with the key is answered the first
//! answer and changes nothing; the key on another target is `422`, an unusable one `400`,
//! both in InterServer's error shape and changing nothing.

use jiff::SignedDuration;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::apiv2::assert_v2_error;
use crate::harness::{
    add_credit, cents, counts, invoice as v1_invoice, order_body, place, v2, v2_ok, Auth, TestApp,
    STARTER_PACKAGE,
};
use crate::on_both_engines;

on_both_engines!(
    an_identical_order_sent_again_is_answered_with_the_first,
    an_identical_order_after_the_first_was_cancelled_is_placed_anew,
    an_order_with_an_idempotency_key_is_replayed_and_its_key_bound_to_the_order,
    identical_orders_at_once_make_one_account,
    a_keyed_prepay_payment_is_replayed_and_pays_once,
    a_keyed_invoice_deletion_is_replayed,
    a_keyed_website_cancellation_is_replayed,
    a_keyed_account_update_is_replayed,
    identical_keyed_prepay_payments_at_once_pay_once,
    a_retry_across_the_upgrade_is_answered_what_the_earlier_build_stored,
);

const ORDER: &str = "/apiv2/websites/order";

/// Posts an order with an optional `Idempotency-Key`; the status, the `Idempotent-Replayed`
/// header and the body.
async fn order(app: &TestApp, key: Option<&str>, body: &Value) -> (StatusCode, bool, Value) {
    let mut req = app
        .client
        .request(Method::POST, app.url(ORDER))
        .header("X-API-KEY", app.key())
        .json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.expect("sent");
    let status = resp.status();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = resp.text().await.expect("body");
    (
        status,
        replayed,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn hosting_named(app: &TestApp, name: &str) -> i64 {
    app.count(&format!(
        "hosting WHERE domain_name = '{name}' AND status <> 'cancelled'"
    ))
    .await
}

/// A retry across an upgrade, of an order the build before stored: its `Idempotency-Key`
/// under the caller's scope of then (`apiv2:user:{user}`, before the organization was in
/// it), an order without a key under the plain SHA-256 of what was asked (before keyed
/// digests). Both are answered the stored outcome, not refused as new orders ("not
/// available"), and nothing is placed twice (found by the upgrade audit).
async fn a_retry_across_the_upgrade_is_answered_what_the_earlier_build_stored(app: TestApp) {
    use sha2::Digest;
    // Keyed, by a user of one organization: the row moved to the scope the earlier build
    // wrote.
    let user = app.admin_create_user("one-org@upgrade.test", None).await;
    app.admin_add_member(&app.org_id(), &user, "editor", &[])
        .await;
    let key_a = app.admin_create_key(&app.org_id(), Some(&user)).await;
    let keyed_order = |key: String, body: Value| {
        let app = &app;
        async move {
            crate::harness::keyed_post(app, ORDER, ("X-API-KEY", &key), "upgrade-key", Some(&body))
                .await
        }
    };
    let body = order_body(STARTER_PACKAGE, 1, "keyed-upgrade.com");
    let (status, replayed, first) = keyed_order(key_a.clone(), body.clone()).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    assert_eq!(first["continue"], true, "{first}");
    let scope: String =
        sqlx::query_scalar("SELECT scope FROM idempotency_keys WHERE key = 'upgrade-key'")
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap();
    let (earlier, org) = scope
        .split_once(":org:")
        .expect("the organization in the scope");
    assert_eq!(org, app.org_id());
    sqlx::query("UPDATE idempotency_keys SET scope = $1 WHERE key = 'upgrade-key'")
        .bind(earlier)
        .execute(app.lodge.store.writer())
        .await
        .unwrap();
    // (The keyed order's outcome is also kept for a retry without the key: gone here, as
    // the earlier build kept none.)
    sqlx::query("DELETE FROM idempotency_keys WHERE scope LIKE 'apiv2:same-order:%'")
        .execute(app.lodge.store.writer())
        .await
        .unwrap();
    let (status, replayed, again) = keyed_order(key_a.clone(), body.clone()).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(hosting_named(&app, "keyed-upgrade.com").await, 1);
    // That scope does not say which organization a user of several acted for: another
    // organization of the same user is never answered the first one's order (found by the
    // re-check: it was, for the day after the upgrade).
    let other = app.admin_create_org("Second Of One", None).await;
    let other_id = other["id"].as_str().unwrap().to_owned();
    app.admin_add_member(&other_id, &user, "editor", &[]).await;
    let key_b = app.admin_create_key(&other_id, Some(&user)).await;
    let (status, replayed, theirs) = keyed_order(key_b, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{theirs}");
    assert!(!replayed, "not the other organization's answer: {theirs}");
    assert_ne!(theirs, first);

    // Without a key: the row under the digest the earlier build derived.
    let body = order_body(STARTER_PACKAGE, 1, "bare-upgrade.com");
    let (status, replayed, first) = order(&app, None, &body).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    assert_eq!(first["continue"], true, "{first}");
    let asked = format!(
        "{:?}",
        lodge_services::websites::WebsiteOrder {
            package_id: Some(STARTER_PACKAGE),
            period_months: Some(1),
            hostname: "bare-upgrade.com".into(),
            register_domain: false,
            service_offer_id: Some(0),
            coupon: String::new(),
            rootpass: String::new(),
            comment: String::new(),
            tos: false,
        }
    );
    let mut plain = sha2::Sha256::new();
    plain.update(format!("POST\0{ORDER}\0{asked}").as_bytes());
    let plain = hex::encode(plain.finalize());
    let moved = sqlx::query(
        "UPDATE idempotency_keys SET key = $1, request_hash = $1 WHERE scope LIKE 'apiv2:same-order:%'",
    )
    .bind(&plain)
    .execute(app.lodge.store.writer())
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(moved, 1);
    let (status, replayed, again) = order(&app, None, &body).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(hosting_named(&app, "bare-upgrade.com").await, 1);
    app.stop().await;
}

async fn an_identical_order_sent_again_is_answered_with_the_first(app: TestApp) {
    let body = order_body(STARTER_PACKAGE, 1, "lost-answer.com");
    let (status, replayed, first) = order(&app, None, &body).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    assert_eq!(first["continue"], true, "{first}");
    let invoices = app.count("invoices").await;

    // The answer was lost; the client sends the same order again (its fields in another
    // order, as a form would): the first order's answer, nothing new written.
    let mut again = serde_json::Map::new();
    let obj = body.as_object().expect("object");
    for k in obj.keys().rev() {
        again.insert(k.clone(), obj[k].clone());
    }
    let (status, replayed, second) = order(&app, None, &Value::Object(again)).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{second}");
    assert_eq!(second, first);
    assert_eq!(hosting_named(&app, "lost-answer.com").await, 1);
    assert_eq!(app.count("invoices").await, invoices);

    // Another order for the name (another period) is not the same request: refused.
    let (status, _, other) = order(
        &app,
        None,
        &order_body(STARTER_PACKAGE, 12, "lost-answer.com"),
    )
    .await;
    assert_eq!(
        (status, &other["continue"]),
        (StatusCode::OK, &Value::Bool(false)),
        "{other}"
    );

    // Past the window the same order is judged afresh: the name is taken by the first.
    app.clock.advance(SignedDuration::from_mins(11));
    let (status, replayed, late) = order(&app, None, &body).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{late}");
    assert_eq!(late["continue"], false, "{late}");
    assert_eq!(hosting_named(&app, "lost-answer.com").await, 1);

    // A keyed order retried without its key (the client lost the header, not the body) is
    // the same order too: answered the first's outcome, nothing new placed.
    let keyed_body = order_body(STARTER_PACKAGE, 1, "keyed-then-bare.com");
    let (status, replayed, keyed) = order(&app, Some("first-try-0001"), &keyed_body).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{keyed}");
    assert_eq!(keyed["continue"], true, "{keyed}");
    let (status, replayed, bare) = order(&app, None, &keyed_body).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{bare}");
    assert_eq!(bare, keyed);
    assert_eq!(hosting_named(&app, "keyed-then-bare.com").await, 1);

    // Another organization sending the very same order is not a retry of this one.
    let (_, _, other_key) = crate::harness::other_tenant(&app, "same-body").await;
    let (status, theirs) = v2(
        &app,
        Method::POST,
        ORDER,
        Auth::Key(&other_key),
        Some(&order_body(STARTER_PACKAGE, 1, "fresh-name.com")),
    )
    .await;
    assert_eq!(
        (status, &theirs["continue"]),
        (StatusCode::OK, &Value::Bool(true)),
        "{theirs}"
    );
    let (_, replayed, mine) = order(
        &app,
        None,
        &order_body(STARTER_PACKAGE, 1, "fresh-name.com"),
    )
    .await;
    assert!(!replayed, "{mine}");
    assert_eq!(
        mine["continue"], false,
        "the name is the neighbour's now: {mine}"
    );
    app.stop().await;
}

/// The same order sent again (no key) after the first was cancelled, or its invoice
/// deleted, is a new order, not the dead one's answer; with the caller's own key it is
/// still the first answer (the key is the caller's promise that it is one request).
async fn an_identical_order_after_the_first_was_cancelled_is_placed_anew(app: TestApp) {
    for how in ["website", "invoice"] {
        let name = format!("reorder-{how}.com");
        let body = order_body(STARTER_PACKAGE, 1, &name);
        let (status, replayed, first) = order(&app, None, &body).await;
        assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
        assert_eq!(first["continue"], true, "{first}");
        let path = match how {
            "website" => format!("/apiv2/websites/{}", first["serviceid"]),
            _ => format!("/apiv2/billing/invoices/{}", first["iid"].as_str().unwrap()),
        };
        let (status, gone) = v2(&app, Method::DELETE, &path, Auth::Key(&app.key()), None).await;
        assert_eq!(status, StatusCode::OK, "{how}: {gone}");
        assert_eq!(
            hosting_named(&app, &name).await,
            0,
            "{how}: the first is dead"
        );

        let (status, replayed, second) = order(&app, None, &body).await;
        assert_eq!(
            (status, replayed),
            (StatusCode::OK, false),
            "{how}: {second}"
        );
        assert_eq!(second["continue"], true, "{how}: {second}");
        assert_ne!(
            second["serviceid"], first["serviceid"],
            "{how}: a new order"
        );
        assert_ne!(second["iid"], first["iid"], "{how}: a new invoice");
        assert_eq!(hosting_named(&app, &name).await, 1, "{how}");
        // And that one is now what a retry is answered with.
        let (status, replayed, third) = order(&app, None, &body).await;
        assert_eq!((status, replayed), (StatusCode::OK, true), "{how}: {third}");
        assert_eq!(third, second, "{how}");
    }
    // The invoices' summary: the cancelled ones are void, in neither total (found by the
    // lifecycle audit: the total counted them, so it was more than paid plus unpaid).
    let list = v2_ok(
        &app,
        Method::GET,
        "/apiv2/billing/invoices",
        &app.key(),
        None,
    )
    .await;
    assert_eq!(list["summary"]["paid_total"], "0.00", "{list}");
    assert_eq!(
        list["summary"]["total"], list["summary"]["unpaid_total"],
        "{list}"
    );

    // With the caller's key: the first answer, even once its order is cancelled.
    let body = order_body(STARTER_PACKAGE, 1, "reorder-keyed.com");
    let (status, _, first) = order(&app, Some("reorder-key"), &body).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let path = format!("/apiv2/websites/{}", first["serviceid"]);
    let (status, gone) = v2(&app, Method::DELETE, &path, Auth::Key(&app.key()), None).await;
    assert_eq!(status, StatusCode::OK, "{gone}");
    let (status, replayed, again) = order(&app, Some("reorder-key"), &body).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(hosting_named(&app, "reorder-keyed.com").await, 0);
    app.stop().await;
}

async fn an_order_with_an_idempotency_key_is_replayed_and_its_key_bound_to_the_order(app: TestApp) {
    let body = order_body(STARTER_PACKAGE, 1, "keyed-order.com");
    let (status, replayed, first) = order(&app, Some("order-1"), &body).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    assert_eq!(first["continue"], true, "{first}");
    // Replayed for a day, past the window of key-less retries.
    app.clock.advance(SignedDuration::from_hours(2));
    let (status, replayed, again) = order(&app, Some("order-1"), &body).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, first);
    // The key with another order: 422 in InterServer's error shape, nothing placed.
    let (status, _, reused) = order(
        &app,
        Some("order-1"),
        &order_body(STARTER_PACKAGE, 1, "another-name.com"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reused}");
    assert_eq!(reused["code"], "422", "{reused}");
    assert!(reused["message"].as_str().is_some(), "{reused}");
    assert_eq!(hosting_named(&app, "another-name.com").await, 0);
    // An unusable header: 400, nothing placed.
    let long = "k".repeat(256);
    for bad in ["", long.as_str()] {
        let (status, _, refused) = order(
            &app,
            Some(bad),
            &order_body(STARTER_PACKAGE, 1, "bad-key.com"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        assert_eq!(refused["code"], "400", "{refused}");
    }
    assert_eq!(hosting_named(&app, "bad-key.com").await, 0);
    assert_eq!(hosting_named(&app, "keyed-order.com").await, 1);
    app.stop().await;
}

async fn identical_orders_at_once_make_one_account(app: TestApp) {
    let body = order_body(STARTER_PACKAGE, 1, "at-once.com");
    let answers = futures::future::join_all((0..6).map(|_| order(&app, None, &body))).await;
    let placed: Vec<&Value> = answers
        .iter()
        .map(|(s, _, b)| {
            assert_eq!(*s, StatusCode::OK, "{b}");
            assert_eq!(
                b["continue"], true,
                "every retry is told the order was placed: {b}"
            );
            b
        })
        .collect();
    assert!(placed.windows(2).all(|w| w[0] == w[1]), "{placed:?}");
    assert_eq!(
        answers.iter().filter(|(_, r, _)| !r).count(),
        1,
        "one first answer"
    );
    assert_eq!(hosting_named(&app, "at-once.com").await, 1);
    app.stop().await;
}

// ---- the other /apiv2 mutations ----

/// Sends an `/apiv2` request with an optional `Idempotency-Key`; the status, the
/// `Idempotent-Replayed` header and the body.
async fn keyed(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, bool, Value) {
    let mut req = app
        .client
        .request(method, app.url(path))
        .header("X-API-KEY", app.key());
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.expect("sent");
    let status = resp.status();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = resp.text().await.expect("body");
    (
        status,
        replayed,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A header the services refuse: longer than 255 characters.
fn bad_key() -> String {
    "k".repeat(300)
}

/// A placed website: its id and its first invoice's.
async fn website(app: &TestApp, host: &str) -> (i64, i64) {
    let placed = place(app, &app.key(), &order_body(STARTER_PACKAGE, 1, host)).await;
    let id = placed["serviceId"].as_i64().expect("serviceId");
    let iid = placed["iid"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("iid: {placed}"));
    (id, iid)
}

/// The account credit, as the cart shows it (cents).
async fn prepay(app: &TestApp) -> i64 {
    cents(&v2_ok(app, Method::GET, "/apiv2/billing/cart", &app.key(), None).await["prepay"])
}

async fn a_keyed_prepay_payment_is_replayed_and_pays_once(app: TestApp) {
    let (a, a_iid) = website(&app, "pay-a.example.com").await;
    let (b, b_iid) = website(&app, "pay-b.example.com").await;
    add_credit(&app, &app.org_id(), "20.00").await;
    let before = prepay(&app).await;

    let path = format!("/apiv2/pay/prepay/website{a}");
    let (status, replayed, first) = keyed(&app, Method::GET, &path, Some("pay-1"), None).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    assert_eq!(first["type"], "single", "{first}");
    assert_eq!(v1_invoice(&app, a_iid).await["status"], "paid");
    let paid = prepay(&app).await;
    assert!(paid < before, "{before} → {paid}");
    let tables = counts(&app).await;
    let payments = app.count("credit_ledger").await;

    // The answer was lost: the retry with the key is the first answer (by either path),
    // and pays nothing again.
    for again in [
        path.clone(),
        format!("/apiv2/billing/pay/prepay/website{a}"),
    ] {
        let (status, replayed, body) = keyed(&app, Method::GET, &again, Some("pay-1"), None).await;
        assert_eq!(
            (status, replayed),
            (StatusCode::OK, true),
            "{again}: {body}"
        );
        assert_eq!(body, first, "{again}");
    }
    assert_eq!(prepay(&app).await, paid);
    assert_eq!(counts(&app).await, tables);
    assert_eq!(app.count("credit_ledger").await, payments);
    // Without the key a retry is judged afresh: nothing is due any more.
    let (status, _, body) = keyed(&app, Method::GET, &path, None, None).await;
    assert_v2_error(status, &body, StatusCode::CONFLICT, "a key-less retry");

    // The key with another target: 422, the other invoice untouched.
    let other = format!("/apiv2/pay/prepay/website{b}");
    let (status, _, body) = keyed(&app, Method::GET, &other, Some("pay-1"), None).await;
    assert_v2_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the key on b",
    );
    // An unusable header: 400, nothing paid.
    let (status, _, body) = keyed(&app, Method::GET, &other, Some(&bad_key()), None).await;
    assert_v2_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "a 300-character key",
    );
    assert_eq!(v1_invoice(&app, b_iid).await["status"], "unpaid");
    assert_eq!(prepay(&app).await, paid);
    assert_eq!(counts(&app).await, tables);
    // Two keys on one request: 400, nothing paid.
    let resp = app
        .client
        .get(app.url(&other))
        .header("X-API-KEY", app.key())
        .header("Idempotency-Key", "pay-3")
        .header("Idempotency-Key", "pay-4")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_v2_error(status, &body, StatusCode::BAD_REQUEST, "two keys");
    assert_eq!(v1_invoice(&app, b_iid).await["status"], "unpaid");
    assert_eq!(prepay(&app).await, paid);

    // The payment page's link is keyed too: replayed, and bound to its invoices.
    let online = format!("/apiv2/pay/online/website{b}");
    let (status, replayed, link) = keyed(&app, Method::GET, &online, Some("pay-2"), None).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{link}");
    assert_eq!(link["type"], "redirect", "{link}");
    let (status, replayed, again) = keyed(&app, Method::GET, &online, Some("pay-2"), None).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, link);
    let (status, _, body) = keyed(&app, Method::GET, &path, Some("pay-2"), None).await;
    assert_v2_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "pay-2 on a",
    );
    app.stop().await;
}

async fn a_keyed_invoice_deletion_is_replayed(app: TestApp) {
    let (a, a_iid) = website(&app, "delete-a.example.com").await;
    let (_, b_iid) = website(&app, "delete-b.example.com").await;
    let path = format!("/apiv2/billing/invoices/{a_iid}");
    let (status, replayed, first) = keyed(&app, Method::DELETE, &path, Some("del-1"), None).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    assert_eq!(first["success"], true, "{first}");
    assert_eq!(v1_invoice(&app, a_iid).await["status"], "cancelled");
    let tables = counts(&app).await;
    let history = app.count("hosting_history").await;

    // The retry: the first answer, not "only the unpaid first invoice…", and nothing more.
    let (status, replayed, again) = keyed(&app, Method::DELETE, &path, Some("del-1"), None).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(counts(&app).await, tables);
    assert_eq!(app.count("hosting_history").await, history);
    assert_eq!(
        app.count(&format!(
            "invoices WHERE id = {a_iid} AND status = 'cancelled'"
        ))
        .await,
        1
    );
    let (status, _, body) = keyed(&app, Method::DELETE, &path, None, None).await;
    assert_v2_error(status, &body, StatusCode::CONFLICT, "a key-less retry");
    let w = v2_ok(
        &app,
        Method::GET,
        &format!("/apiv2/websites/{a}"),
        &app.key(),
        None,
    )
    .await;
    assert_eq!(w["serviceInfo"]["website_status"], "canceled", "{w}");

    // The key on another invoice: 422; an unusable key: 400. That invoice stays.
    let other = format!("/apiv2/billing/invoices/{b_iid}");
    let (status, _, body) = keyed(&app, Method::DELETE, &other, Some("del-1"), None).await;
    assert_v2_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the key on b",
    );
    let (status, _, body) = keyed(&app, Method::DELETE, &other, Some(&bad_key()), None).await;
    assert_v2_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "a 300-character key",
    );
    assert_eq!(v1_invoice(&app, b_iid).await["status"], "unpaid");
    assert_eq!(counts(&app).await, tables);
    assert_eq!(app.count("hosting_history").await, history);
    app.stop().await;
}

async fn a_keyed_website_cancellation_is_replayed(app: TestApp) {
    // Paid at once from credit: cancelling ends it at the end of its paid period.
    add_credit(&app, &app.org_id(), "20.00").await;
    let (a, _) = website(&app, "cancel-a.example.com").await;
    let (b, b_iid) = website(&app, "cancel-b.example.com").await;
    let status_of = |id: i64| {
        let app = &app;
        async move {
            let w = v2_ok(
                app,
                Method::GET,
                &format!("/apiv2/websites/{id}"),
                &app.key(),
                None,
            )
            .await;
            w["serviceInfo"]["website_status"]
                .as_str()
                .unwrap_or_else(|| panic!("{w}"))
                .to_owned()
        }
    };
    let path = format!("/apiv2/websites/{a}");
    let (status, replayed, first) =
        keyed(&app, Method::DELETE, &path, Some("cancel-1"), None).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    assert_eq!(first["success"], true, "{first}");
    assert_eq!(status_of(a).await, "pending-cancel");
    let tables = counts(&app).await;
    let history = app.count("hosting_history").await;
    let jobs = app.count("jobs").await;

    let (status, replayed, again) =
        keyed(&app, Method::DELETE, &path, Some("cancel-1"), None).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(counts(&app).await, tables);
    assert_eq!(app.count("hosting_history").await, history);
    assert_eq!(app.count("jobs").await, jobs);
    let (status, _, body) = keyed(&app, Method::DELETE, &path, None, None).await;
    assert_v2_error(status, &body, StatusCode::CONFLICT, "a key-less retry");

    let other = format!("/apiv2/websites/{b}");
    let (status, _, body) = keyed(&app, Method::DELETE, &other, Some("cancel-1"), None).await;
    assert_v2_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the key on b",
    );
    let (status, _, body) = keyed(&app, Method::DELETE, &other, Some(&bad_key()), None).await;
    assert_v2_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "a 300-character key",
    );
    assert_ne!(status_of(b).await, "pending-cancel");
    assert_eq!(v1_invoice(&app, b_iid).await["status"], "paid");
    assert_eq!(counts(&app).await, tables);
    assert_eq!(app.count("jobs").await, jobs);
    app.stop().await;
}

/// The billing address's city.
async fn city(app: &TestApp) -> String {
    v2_ok(app, Method::GET, "/apiv2/account", &app.key(), None).await["data"]["city"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn a_keyed_account_update_is_replayed(app: TestApp) {
    let leeds = serde_json::json!({ "city": "Leeds" });
    let (status, replayed, first) = keyed(
        &app,
        Method::POST,
        "/apiv2/account",
        Some("acct-1"),
        Some(&leeds),
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    assert_eq!(city(&app).await, "Leeds");
    // Changed since (without a key); the late retry is answered and writes nothing.
    v2_ok(
        &app,
        Method::POST,
        "/apiv2/account",
        &app.key(),
        Some(&serde_json::json!({ "city": "York" })),
    )
    .await;
    let (status, replayed, again) = keyed(
        &app,
        Method::POST,
        "/apiv2/account",
        Some("acct-1"),
        Some(&leeds),
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(city(&app).await, "York");

    // The key with another body: 422; an unusable key: 400. Nothing changes.
    let hull = serde_json::json!({ "city": "Hull" });
    let (status, _, body) = keyed(
        &app,
        Method::POST,
        "/apiv2/account",
        Some("acct-1"),
        Some(&hull),
    )
    .await;
    assert_v2_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the key reused",
    );
    let (status, _, body) = keyed(
        &app,
        Method::POST,
        "/apiv2/account",
        Some(&bad_key()),
        Some(&hull),
    )
    .await;
    assert_v2_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "a 300-character key",
    );
    assert_eq!(city(&app).await, "York");
    app.stop().await;
}

async fn identical_keyed_prepay_payments_at_once_pay_once(app: TestApp) {
    let (a, a_iid) = website(&app, "pay-race.example.com").await;
    add_credit(&app, &app.org_id(), "20.00").await;
    let before = prepay(&app).await;
    let ledger = app.count("credit_ledger").await;
    let path = format!("/apiv2/pay/prepay/website{a}");
    let answers = futures::future::join_all(
        (0..2).map(|_| keyed(&app, Method::GET, &path, Some("pay-race"), None)),
    )
    .await;
    for (status, _, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["type"], "single", "{body}");
    }
    assert_eq!(answers[0].2, answers[1].2, "both answered the same");
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| !replayed).count(),
        1,
        "one paid, the other replayed: {answers:?}"
    );
    assert_eq!(v1_invoice(&app, a_iid).await["status"], "paid");
    let total = cents(&v1_invoice(&app, a_iid).await["total"]);
    assert_eq!(prepay(&app).await, before - total, "paid once");
    assert_eq!(
        app.count("credit_ledger").await,
        ledger + 1,
        "one application of credit"
    );
    app.stop().await;
}
