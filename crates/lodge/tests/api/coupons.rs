//! Coupons at the moment an order is written (through `/apiv2`, the dialect that takes
//! coupons and offers): used up or expired since the quote, raced for by concurrent orders,
//! and refused by an offer. A refused order writes nothing, not even a coupon use.

use futures::future::join_all;
use jiff::SignedDuration;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{
    assert_refused, count_of, counts, order_body, place, start_time, v2, Auth, TestApp,
    STARTER_PACKAGE,
};
use crate::on_both_engines;

on_both_engines!(
    a_coupon_used_up_since_the_quote_is_refused_at_order_time,
    orders_racing_for_a_coupons_last_uses_get_exactly_those,
    an_expired_coupon_is_refused_from_its_expiry_on,
    an_offer_that_refuses_coupons_refuses_an_order_with_one,
    a_v1_order_takes_a_coupon_code_and_refuses_unknown_fields,
    an_order_cancelled_unpaid_gives_its_coupon_use_back,
    a_coupon_edit_keeps_it_deactivated_and_cannot_go_below_its_uses,
    one_code_written_at_once_in_three_cases_is_one_coupon,
    a_coupon_for_some_cycles_is_refused_on_the_others,
);

/// A coupon written for some billing cycles applies to orders on those alone (found by the
/// money audit: a "first month for 1.00" fixed price sold three years for 1.00); without
/// cycles it applies to every one. Cycles that are none are refused.
async fn a_coupon_for_some_cycles_is_refused_on_the_others(app: TestApp) {
    let c = create_coupon(
        &app,
        &json!({ "code": "YEARLY", "kind": "percent", "value": "10",
                 "cycles": ["annually", " annually"] }),
    )
    .await;
    assert_eq!(c["cycles"], json!(["annually"]), "{c}");
    let year = with_coupon("year.example.com", "YEARLY");
    let mut month = with_coupon("month.example.com", "YEARLY");
    month["period"] = json!(1);
    quoted(&app, &year, "48.60").await;
    let (status, q) = send(&app, Method::PUT, &month).await;
    assert_refused(status, &q, &[INVALID_COUPON], "a quote on another cycle");
    refused_for_the_coupon(&app, &month, "an order on another cycle").await;
    let placed = place(&app, &app.key(), &year).await;
    assert_eq!(placed["total_cost"], "48.60", "{placed}");

    // Staff's mistakes are refused, and change nothing.
    for cycles in [json!([]), json!(["weekly"]), json!(["monthly", "yearly"])] {
        let (status, r) = app
            .post(
                "/v1/admin/coupons",
                &app.admin_key(),
                &json!({ "code": "YEARLY", "kind": "percent", "value": "10", "cycles": cycles }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{cycles}: {r}");
    }
    let (_, list) = app.get("/v1/admin/coupons", &app.admin_key()).await;
    let listed = list
        .as_array()
        .and_then(|l| l.iter().find(|c| c["code"] == "YEARLY"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed["cycles"], json!(["annually"]), "{list}");

    // Written again without cycles: every cycle.
    let c = create_coupon(
        &app,
        &json!({ "code": "YEARLY", "kind": "percent", "value": "10" }),
    )
    .await;
    assert!(c["cycles"].is_null(), "{c}");
    let (status, q) = send(&app, Method::PUT, &month).await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(q["continue"], true, "{q}");
    app.stop().await;
}

/// Staff write `Winter1`, `winter1` and `WINTER1` at the same instant, eight rounds: one
/// coupon, as one after the other (on PostgreSQL two of them were inserted side by side:
/// found by the engines' parity audit).
async fn one_code_written_at_once_in_three_cases_is_one_coupon(app: TestApp) {
    for round in 0..8 {
        let codes = [
            format!("Winter{round}"),
            format!("winter{round}"),
            format!("WINTER{round}"),
        ];
        let specs: Vec<Value> = codes
            .iter()
            .map(|c| json!({ "code": c, "kind": "percent", "value": "10" }))
            .collect();
        let admin = app.admin_key();
        let answers = join_all(
            specs
                .iter()
                .map(|s| app.post("/v1/admin/coupons", &admin, s)),
        )
        .await;
        for (status, body) in &answers {
            assert_eq!(*status, StatusCode::OK, "round {round}: {body}");
        }
        let ids: std::collections::BTreeSet<&str> = answers
            .iter()
            .filter_map(|(_, c)| c["id"].as_str())
            .collect();
        assert_eq!(ids.len(), 1, "round {round}: {answers:?}");
        let (_, list) = app.get("/v1/admin/coupons", &app.admin_key()).await;
        let same = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["code"].as_str().unwrap().eq_ignore_ascii_case(&codes[0]))
            .count();
        assert_eq!(same, 1, "round {round}: {list}");
    }
}

/// What `/apiv2` answers for a coupon Lodge refuses.
const INVALID_COUPON: &str = "Invalid Coupon Specified";
const ORDER: &str = "/apiv2/websites/order";

/// Creates a coupon through the staff API; returns it.
async fn create_coupon(app: &TestApp, spec: &Value) -> Value {
    let (status, c) = app.post("/v1/admin/coupons", &app.admin_key(), spec).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    c
}

/// A coupon's `uses`, from the staff API.
async fn uses(app: &TestApp, code: &str) -> i64 {
    let (status, list) = app.get("/v1/admin/coupons", &app.admin_key()).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array()
        .and_then(|l| l.iter().find(|c| c["code"] == code))
        .and_then(|c| c["uses"].as_i64())
        .unwrap_or_else(|| panic!("coupon {code}: {list}"))
}

/// A year of Starter for `hostname` with `coupon`.
fn with_coupon(hostname: &str, coupon: &str) -> Value {
    let mut body = order_body(STARTER_PACKAGE, 12, hostname);
    body["coupon"] = json!(coupon);
    body
}

/// The quote (`PUT`) or the order (`POST`) of `body` with the demo key.
async fn send(app: &TestApp, method: Method, body: &Value) -> (StatusCode, Value) {
    v2(app, method, ORDER, Auth::Key(&app.key()), Some(body)).await
}

/// A quote that must be accepted, with this first charge.
async fn quoted(app: &TestApp, body: &Value, cost: &str) {
    let (status, q) = send(app, Method::PUT, body).await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(q["continue"], true, "{body}: {q}");
    assert_eq!(q["serviceCost"], cost, "{body}: {q}");
}

/// An order (`POST`) that must be refused for its coupon and write nothing.
async fn refused_for_the_coupon(app: &TestApp, body: &Value, what: &str) {
    let before = counts(app).await;
    let (status, resp) = send(app, Method::POST, body).await;
    assert_refused(status, &resp, &[INVALID_COUPON], what);
    assert_eq!(
        counts(app).await,
        before,
        "{what}: a refused order writes nothing"
    );
}

/// Staff change a coupon deactivated earlier: it stays deactivated unless the change says
/// `is_active` (found by the operator audit: any edit brought it back). A `max_uses` below
/// the uses it has had is refused, keyed by the field (it was a 500).
async fn a_coupon_edit_keeps_it_deactivated_and_cannot_go_below_its_uses(app: TestApp) {
    let c = create_coupon(
        &app,
        &json!({ "code": "TWICE", "kind": "percent", "value": "10", "max_uses": 5 }),
    )
    .await;
    place(&app, &app.key(), &with_coupon("one.example.com", "TWICE")).await;
    place(&app, &app.key(), &with_coupon("two.example.com", "TWICE")).await;
    assert_eq!(uses(&app, "TWICE").await, 2);
    let (status, e) = app
        .post(
            "/v1/admin/coupons",
            &app.admin_key(),
            &json!({ "code": "TWICE", "kind": "percent", "value": "10", "max_uses": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["max_uses"][0].as_str().unwrap_or("").contains("TWICE"),
        "{e}"
    );
    assert_eq!(uses(&app, "TWICE").await, 2);
    let (status, _) = app
        .post(
            &format!("/v1/admin/coupons/{}/deactivate", c["id"].as_str().unwrap()),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let edited = create_coupon(
        &app,
        &json!({ "code": "TWICE", "kind": "percent", "value": "15", "max_uses": 2 }),
    )
    .await;
    assert_eq!(
        (edited["value"].as_str(), &edited["is_active"]),
        (Some("15.00"), &json!(false)),
        "{edited}"
    );
    refused_for_the_coupon(
        &app,
        &with_coupon("three.example.com", "TWICE"),
        "deactivated",
    )
    .await;
    let back = create_coupon(
        &app,
        &json!({ "code": "TWICE", "kind": "percent", "value": "15", "max_uses": 3, "is_active": true }),
    )
    .await;
    assert_eq!(back["is_active"], true, "{back}");
    let placed = place(&app, &app.key(), &with_coupon("four.example.com", "TWICE")).await;
    assert_eq!(placed["errors"], json!([]), "{placed}");
    assert_eq!(uses(&app, "TWICE").await, 3);
    app.stop().await;
}

/// A one-use coupon ordered with and the invoice deleted unpaid: the use comes back, and
/// the coupon works for the next order (found by the money audit: anyone could burn a
/// limited promotion by ordering and deleting). A paid order keeps its use.
async fn an_order_cancelled_unpaid_gives_its_coupon_use_back(app: TestApp) {
    create_coupon(
        &app,
        &json!({ "code": "ONCE", "kind": "percent", "value": "10", "max_uses": 1 }),
    )
    .await;
    let placed = place(&app, &app.key(), &with_coupon("burn.example.com", "ONCE")).await;
    assert_eq!(uses(&app, "ONCE").await, 1);
    let invoice = placed["iid"].as_str().unwrap().to_owned();
    let (status, deleted) = v2(
        &app,
        Method::DELETE,
        &format!("/apiv2/billing/invoices/{invoice}"),
        Auth::Key(&app.key()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(
        uses(&app, "ONCE").await,
        0,
        "the unpaid order's use given back"
    );
    quoted(&app, &with_coupon("kept.example.com", "ONCE"), "48.60").await;
    // Deleting again changes nothing (and never goes below zero).
    let (status, _) = v2(
        &app,
        Method::DELETE,
        &format!("/apiv2/billing/invoices/{invoice}"),
        Auth::Key(&app.key()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(uses(&app, "ONCE").await, 0);
    let (_, quote) = send(&app, Method::PUT, &with_coupon("kept.example.com", "ONCE")).await;
    let placed = place(&app, &app.key(), &with_coupon("kept.example.com", "ONCE")).await;
    assert_eq!(placed["total_cost"], "48.60", "{placed}");
    assert_eq!(uses(&app, "ONCE").await, 1);
    // The website names its coupon as the quote did (`couponCode`, the numeric id).
    let (status, site) = v2(
        &app,
        Method::GET,
        &format!("/apiv2/websites/{}", placed["serviceId"]),
        Auth::Key(&app.key()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{site}");
    let code = quote["couponCode"].as_i64().unwrap().to_string();
    assert_eq!(
        site["serviceInfo"]["website_coupon"],
        code.as_str(),
        "{site}"
    );
    assert_eq!(
        site["billingDetails"]["service_coupon"],
        code.as_str(),
        "{site}"
    );
    refused_for_the_coupon(
        &app,
        &with_coupon("third.example.com", "ONCE"),
        "used by a standing order",
    )
    .await;
    app.stop().await;
}

async fn a_coupon_used_up_since_the_quote_is_refused_at_order_time(app: TestApp) {
    create_coupon(
        &app,
        &json!({ "code": "LAST1", "kind": "percent", "value": "10", "max_uses": 1 }),
    )
    .await;
    let a = with_coupon("a-last1.example.com", "LAST1");
    let b = with_coupon("b-last1.example.com", "LAST1");
    // Both quotes see the coupon's one use left.
    quoted(&app, &a, "48.60").await;
    quoted(&app, &b, "48.60").await;

    let placed = place(&app, &app.key(), &a).await;
    assert_eq!(placed["total_cost"], "48.60", "{placed}");
    assert_eq!(uses(&app, "LAST1").await, 1);

    // A quote now says what the order would: used up (it said the discount applied,
    // from the cached catalog's count, found by the customer audit).
    let (status, q) = send(&app, Method::PUT, &b).await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(q["continue"], false, "{q}");
    assert_eq!(q["errors"], json!([INVALID_COUPON]), "{q}");
    // The second order, quoted with the coupon, finds it used up.
    refused_for_the_coupon(&app, &b, "the coupon's last use is gone").await;
    assert_eq!(uses(&app, "LAST1").await, 1, "not counted twice");

    // Without the coupon the same order goes through: the refusal was the coupon's alone.
    let mut b = b;
    b["coupon"] = json!("");
    let placed = place(&app, &app.key(), &b).await;
    assert_eq!(placed["total_cost"], "54.00", "{placed}");
    app.stop().await;
}

async fn orders_racing_for_a_coupons_last_uses_get_exactly_those(app: TestApp) {
    const RACERS: usize = 12;
    const LEFT: i64 = 3;
    create_coupon(
        &app,
        &json!({ "code": "RUSH3", "kind": "fixed_amount", "value": "5.00", "max_uses": LEFT }),
    )
    .await;
    let before = counts(&app).await;
    let answers = join_all((0..RACERS).map(|i| {
        let app = &app;
        async move {
            let body = with_coupon(&format!("rush-{i}.example.com"), "RUSH3");
            send(app, Method::POST, &body).await
        }
    }))
    .await;
    let mut placed = 0;
    for (status, body) in &answers {
        if body["continue"] == true {
            assert_eq!(*status, StatusCode::OK, "{body}");
            assert_eq!(body["total_cost"], "49.00", "54.00 - 5.00: {body}");
            placed += 1;
        } else {
            assert_refused(
                *status,
                body,
                &[INVALID_COUPON],
                "a racer past the last use",
            );
        }
    }
    assert_eq!(placed, LEFT, "exactly the uses left: {answers:?}");
    assert_eq!(uses(&app, "RUSH3").await, LEFT);
    let after = counts(&app).await;
    for table in ["orders", "hosting", "invoices"] {
        assert_eq!(
            count_of(&after, table) - count_of(&before, table),
            LEFT,
            "{table}: only the placed orders were written"
        );
    }
    app.stop().await;
}

async fn an_expired_coupon_is_refused_from_its_expiry_on(app: TestApp) {
    let expiry = start_time() + SignedDuration::from_hours(1);
    create_coupon(
        &app,
        &json!({ "code": "SOON", "kind": "percent", "value": "10",
                 "expires": expiry.to_string() }),
    )
    .await;
    let a = with_coupon("a-soon.example.com", "SOON");
    let b = with_coupon("b-soon.example.com", "SOON");
    quoted(&app, &a, "48.60").await;

    // A second before the expiry it still counts.
    app.clock.set(expiry - SignedDuration::from_secs(1));
    let placed = place(&app, &app.key(), &a).await;
    assert_eq!(placed["total_cost"], "48.60", "{placed}");
    quoted(&app, &b, "48.60").await;

    // From the expiry on, an order quoted with it is refused, and so is a new quote.
    app.clock.set(expiry);
    refused_for_the_coupon(&app, &b, "the coupon expired since the quote").await;
    let (status, q) = send(&app, Method::PUT, &b).await;
    assert_refused(status, &q, &[INVALID_COUPON], "a quote after the expiry");
    app.clock.advance(SignedDuration::from_hours(24 * 30));
    refused_for_the_coupon(&app, &b, "a month after the expiry").await;
    assert_eq!(uses(&app, "SOON").await, 1);
    app.stop().await;
}

async fn an_offer_that_refuses_coupons_refuses_an_order_with_one(app: TestApp) {
    let offer = json!({ "legacy_id": 501, "plan": "starter", "intro_total": "30.00",
                        "intro_months": 12, "renewal": "54.00", "renewal_months": 12,
                        "allow_coupon": false });
    let (status, offers) = app.post("/v1/admin/offers", &app.admin_key(), &offer).await;
    assert_eq!(status, StatusCode::OK, "{offers}");
    let used = uses(&app, "WELCOME10").await;

    // Offer 501 with a coupon: refused, quoted or ordered, and nothing is written.
    let mut body = with_coupon("no-coupon.example.com", "WELCOME10");
    body["serviceOfferId"] = json!(501);
    let (status, q) = send(&app, Method::PUT, &body).await;
    assert_refused(
        status,
        &q,
        &[INVALID_COUPON],
        "offer 501 with a coupon, quoted",
    );
    refused_for_the_coupon(&app, &body, "offer 501 with a coupon").await;
    assert_eq!(uses(&app, "WELCOME10").await, used, "no use counted");

    // The offer alone, and the coupon alone, are accepted.
    body["coupon"] = json!("");
    let placed = place(&app, &app.key(), &body).await;
    assert_eq!(
        placed["total_cost"], "30.00",
        "the offer's intro price: {placed}"
    );
    let alone = with_coupon("coupon-only.example.com", "WELCOME10");
    let placed = place(&app, &app.key(), &alone).await;
    assert_eq!(placed["total_cost"], "48.60", "54.00 - 10 %: {placed}");
    // The demo offer 136 allows coupons: 36.00 - 10 %.
    let mut both = with_coupon("offer-136.example.com", "WELCOME10");
    both["serviceOfferId"] = json!(136);
    let placed = place(&app, &app.key(), &both).await;
    assert_eq!(placed["total_cost"], "32.40", "{placed}");
    app.stop().await;
}

/// `/v1`'s order takes `coupon_code` (the same coupons), keys its refusal by that name, and
/// refuses a field it does not know rather than ignoring it (found by the billing audit: a
/// body with a coupon under another name was billed at list price without a word).
async fn a_v1_order_takes_a_coupon_code_and_refuses_unknown_fields(app: TestApp) {
    create_coupon(
        &app,
        &json!({ "code": "V1TEN", "kind": "percent", "value": "10" }),
    )
    .await;
    let path = format!(
        "/v1/organizations/{}/projects/{}/hosting/order",
        app.org_id(),
        app.project_id()
    );
    let body = |name: &str, extra: Value| {
        let mut b = json!({ "plan_id": crate::harness::starter(&app), "domain_source": "external",
                            "domain_name": name, "billing_cycle": "annually" });
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let before = counts(&app).await;
    // Unknown fields (a coupon under /apiv2's name among them), with a bad field beside.
    let (status, e) = app
        .post(
            &path,
            &app.key(),
            &body(
                "v1-coupon.example.com",
                json!({ "coupon": "V1TEN", "bogus": 1, "billing_cycle": "weekly" }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["coupon"][0].as_str().unwrap().contains("Unknown field"),
        "{e}"
    );
    assert!(
        e["bogus"][0].as_str().unwrap().contains("coupon_code"),
        "{e}"
    );
    assert!(e["billing_cycle"].is_array(), "reported together: {e}");
    // A coupon that does not exist: keyed by the body's name.
    let (status, e) = app
        .post(
            &path,
            &app.key(),
            &body("v1-coupon.example.com", json!({ "coupon_code": "NOPE" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["coupon_code"].is_array(), "{e}");
    assert_eq!(counts(&app).await, before, "a refused order writes nothing");
    // The coupon applies: a year of Starter (54.00) less 10%.
    let (status, o) = app
        .post(
            &path,
            &app.key(),
            &body("v1-coupon.example.com", json!({ "coupon_code": "V1TEN" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    assert_eq!(o["total"], json!(48.6), "{o}");
    assert_eq!(uses(&app, "V1TEN").await, 1);
    app.stop().await;
}
