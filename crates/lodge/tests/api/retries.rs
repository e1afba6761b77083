//! Issue 18: `/apiv2` orders are safe to retry. A retry after a lost answer is answered with
//! the first order's outcome (with `Idempotency-Key`, or, without one, when the same order
//! comes again from the same account within the window), never a second order and never a
//! refusal that says the first one's name is taken.

use jiff::SignedDuration;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{order_body, v2, Auth, TestApp, STARTER_PACKAGE};
use crate::on_both_engines;

on_both_engines!(
    an_identical_order_sent_again_is_answered_with_the_first,
    an_order_with_an_idempotency_key_is_replayed_and_its_key_bound_to_the_order,
    identical_orders_at_once_make_one_account,
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
