//! Outgoing webhooks to a local receiver: signed deliveries, retries with backoff, never a
//! second automatic delivery after a success, at most one re-send after a crash between
//! the send and its record, the private-target rule, and the staff API.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, Uri};
use hmac::{Hmac, Mac};
use jiff::SignedDuration;
use lodge_services::provisioning::Worker;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::harness::{add_credit, messages, starter, str_of, Options, TestApp};
use crate::on_both_engines;
use crate::provisioning::{drain, FakeDriver};

on_both_engines!(
    options = loopback_allowed;
    deliveries_are_signed_and_verify,
    endpoints_get_only_their_events,
    orders_committed_together_each_get_their_deliveries,
    retries_after_errors_then_never_again,
    a_crash_between_send_and_record_resends_at_most_once,
    gives_up_after_about_a_day,
    staff_redeliver_even_after_success,
    endpoints_are_managed_by_staff_only,
    private_targets_are_accepted_with_the_flag,
    a_target_is_checked_again_at_delivery,
    a_receivers_words_never_stop_its_retries,
    an_endpoint_moved_to_another_organization_gets_none_of_the_first_ones_events,
    urls_are_sealed_at_rest_and_ones_stored_in_the_clear_are_sealed_at_start,
    a_stopping_worker_hands_back_unstarted_deliveries_at_once,
    retries_wait_while_the_endpoint_is_disabled_and_end_when_it_unsubscribes,
    edits_sent_at_once_each_keep_the_others,
);
on_both_engines!(private_targets_are_refused_without_the_flag);

/// A disable and description edits sent at the same instant, eight rounds: every change
/// stands (found by the PostgreSQL race audit: an edit wrote the endpoint back enabled,
/// and both were answered 200).
async fn edits_sent_at_once_each_keep_the_others(app: TestApp) {
    let rx = Receiver::start().await;
    let e = register(&app, &rx.url("/raced"), &["*"]).await;
    let path = format!("/v1/admin/webhooks/{}", id_of(&e));
    let admin = app.admin_key();
    for round in 0..8 {
        let enabled = round % 2 == 1;
        let bodies = [
            json!({ "enabled": enabled }),
            json!({ "description": format!("round {round}") }),
            json!({ "events": ["invoice.paid", "order.created"] }),
        ];
        let answers = futures::future::join_all(
            bodies
                .iter()
                .map(|b| app.call(reqwest::Method::PATCH, &path, Some(&admin), Some(b))),
        )
        .await;
        for (status, body) in &answers {
            assert_eq!(*status, StatusCode::OK, "round {round}: {body}");
        }
        let (_, now) = app.get(&path, &admin).await;
        assert_eq!(now["enabled"], enabled, "round {round}: {now}");
        assert_eq!(
            now["description"],
            format!("round {round}"),
            "round {round}: {now}"
        );
        let mut events: Vec<&str> = now["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        events.sort_unstable();
        assert_eq!(
            events,
            ["invoice.paid", "order.created"],
            "round {round}: {now}"
        );
    }
    app.stop().await;
}

fn loopback_allowed() -> Options {
    Options {
        webhooks_allow_private: true,
        ..Default::default()
    }
}

// ---- a local receiver ----

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Debug, Default)]
struct ReceiverState {
    got: Vec<Received>,
    /// The statuses of the next answers (then 200).
    answers: VecDeque<u16>,
    /// Answer every request with this status (after `answers`).
    always: Option<u16>,
    /// The body of every answer (empty when `None`).
    body: Option<String>,
}

/// An HTTP server on 127.0.0.1 that records what it gets and answers as told.
#[derive(Clone)]
struct Receiver {
    base: String,
    state: Arc<Mutex<ReceiverState>>,
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> (AxumStatus, String) {
    let mut s = state.lock().unwrap();
    s.got.push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let code = s.answers.pop_front().or(s.always).unwrap_or(200);
    (
        AxumStatus::from_u16(code).unwrap(),
        s.body.clone().unwrap_or_default(),
    )
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { base, state }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn got(&self) -> Vec<Received> {
        self.state.lock().unwrap().got.clone()
    }

    fn answer(&self, codes: &[u16]) {
        self.state.lock().unwrap().answers.extend(codes);
    }

    fn always(&self, code: u16) {
        self.state.lock().unwrap().always = Some(code);
    }

    fn answer_body(&self, body: &str) {
        self.state.lock().unwrap().body = Some(body.to_owned());
    }

    fn types(&self, path: &str) -> Vec<String> {
        self.got()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.json()["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

// ---- helpers ----

/// Registers an endpoint through the staff API; returns the answer (with its secret).
async fn register(app: &TestApp, url: &str, events: &[&str]) -> Value {
    let (status, w) = app
        .post(
            "/v1/admin/webhooks",
            &app.admin_key(),
            &json!({ "url": url, "events": events, "description": "test receiver" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    w
}

fn order_path(app: &TestApp) -> String {
    format!(
        "/v1/organizations/{}/projects/{}/hosting/order",
        app.org_id(),
        app.project_id()
    )
}

/// Places an order of the demo organization (paid from credit when `paid`): events
/// `order.created`, `invoice.created` (and `invoice.paid`). Returns the hosting id.
async fn order(app: &TestApp, domain: &str, paid: bool) -> String {
    if paid {
        add_credit(app, &app.org_id(), "5.00").await;
    }
    let body = json!({ "plan_id": starter(app), "domain_source": "external",
                       "domain_name": domain, "billing_cycle": "monthly" });
    let (status, o) = app.post(&order_path(app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    str_of(&o, "hosting_id").to_owned()
}

async fn deliveries(app: &TestApp, webhook: i64) -> Vec<Value> {
    let (status, d) = app
        .get(
            &format!("/v1/admin/webhooks/{webhook}/deliveries"),
            &app.admin_key(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    d.as_array().unwrap().clone()
}

fn id_of(w: &Value) -> i64 {
    w["id"].as_i64().unwrap()
}

/// The webhook jobs, as the queue has them: `(status, attempts, max_attempts)`.
async fn webhook_jobs(app: &TestApp) -> Vec<(String, i64, i64)> {
    lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), "webhook")
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.status.as_str().to_owned(), j.attempts, j.max_attempts))
        .collect()
}

/// Checks a `Lodge-Signature` the way a receiver would, with nothing of Lodge's code:
/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. Returns `t` when it verifies.
fn check_signature(secret: &str, header: &str, body: &str) -> Option<i64> {
    let mut t = None;
    let mut v1 = vec![];
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let t = t?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected = mac.finalize().into_bytes();
    v1.iter()
        .any(|s| s.as_slice() == expected.as_slice())
        .then_some(t)
}

#[track_caller]
fn verify(secret: &str, header: &str, body: &str) -> i64 {
    check_signature(secret, header, body)
        .unwrap_or_else(|| panic!("the signature {header} does not verify"))
}

fn unix_now(app: &TestApp) -> i64 {
    app.lodge.now_us().div_euclid(1_000_000)
}

// ---- tests ----

/// A node stopping while its deliveries wait on a receiver that never answers hands the
/// round's unstarted deliveries back to the queue at once, beside the running ones (which
/// are left to end): another node takes them now, not when their lease ends.
async fn a_stopping_worker_hands_back_unstarted_deliveries_at_once(app: TestApp) {
    use std::sync::atomic::Ordering;
    let (port, accepted) = crate::harness::silent_server();
    register(
        &app,
        &format!("http://127.0.0.1:{port}/silent"),
        &["order.created"],
    )
    .await;
    for n in 0..12 {
        order(&app, &format!("stop-{n}.test"), false).await;
    }
    let hooks = || async {
        lodge_store::jobs::jobs_of_kind(
            app.lodge.store.reader(),
            lodge_store::webhooks::JOB_WEBHOOK,
        )
        .await
        .unwrap()
    };
    assert_eq!(hooks().await.len(), 12);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut worker = Worker::new(app.lodge.clone(), "node-1");
    worker.batch = 12;
    let running = tokio::spawn(worker.run(
        stopping,
        std::time::Duration::from_millis(20),
        std::time::Duration::from_secs(3600),
    ));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "8 deliveries started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = hooks().await;
        let queued: Vec<_> = now
            .iter()
            .filter(|j| j.status == lodge_core::JobStatus::Queued)
            .collect();
        if queued.len() == 4 {
            for j in queued {
                assert_eq!((j.locked_by.as_deref(), j.attempts), (None, 0), "{j:?}");
            }
            let running = now
                .iter()
                .filter(|j| j.status == lodge_core::JobStatus::Running)
                .count();
            assert_eq!(running, 8, "the started ones are left to end: {now:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unstarted deliveries are still claimed: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 8, "no other started");
    running.abort();
    app.stop().await;
}

/// An endpoint's URL as staff read it (one and in the list, alike).
async fn url_shown(app: &TestApp, id: i64) -> String {
    let (status, one) = app
        .get(&format!("/v1/admin/webhooks/{id}"), &app.admin_key())
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    let (_, list) = app.get("/v1/admin/webhooks", &app.admin_key()).await;
    assert_eq!(list[0]["url"], one["url"], "{list}");
    one["url"].as_str().unwrap().to_owned()
}

/// A receiver's URL often carries its credential (a chat hook's path or query): it is
/// sealed at rest as the signing secret is, shown whole to staff, and used whole; one an
/// earlier build stored in the clear is read as it is and sealed when a node opens the
/// database.
async fn urls_are_sealed_at_rest_and_ones_stored_in_the_clear_are_sealed_at_start(app: TestApp) {
    let rx = Receiver::start().await;
    let url = rx.url("/hook/T0ken-s3cret?key=K3y-s3cret");
    let w = register(&app, &url, &["order.created"]).await;
    assert_eq!(w["url"], url.as_str(), "{w}");
    let stored = || async {
        sqlx::query_scalar::<_, String>("SELECT url FROM webhook_endpoints")
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap()
    };
    let at_rest = stored().await;
    assert!(at_rest.starts_with("v1."), "{at_rest}");
    assert!(
        !at_rest.contains("s3cret") && !at_rest.contains(&rx.base),
        "sealed at rest: {at_rest}"
    );
    assert_eq!(url_shown(&app, id_of(&w)).await, url);
    // An update seals the new URL too.
    let moved = rx.url("/hook/N3w-s3cret");
    let (status, u) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/admin/webhooks/{}", id_of(&w)),
            Some(&app.admin_key()),
            Some(&json!({ "url": moved })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert!(!stored().await.contains("s3cret"));
    assert_eq!(url_shown(&app, id_of(&w)).await, moved);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    order(&app, "sealed-url.test", false).await;
    drain(worker.clone()).await;
    assert_eq!(rx.types("/hook/N3w-s3cret"), ["order.created"]);

    // Stored in the clear by an earlier build: read and used as it is, then sealed once.
    sqlx::query("UPDATE webhook_endpoints SET url = $1")
        .bind(&url)
        .execute(app.lodge.store.writer())
        .await
        .unwrap();
    assert_eq!(url_shown(&app, id_of(&w)).await, url);
    order(&app, "clear-url.test", false).await;
    drain(worker.clone()).await;
    assert_eq!(rx.types("/hook/T0ken-s3cret"), ["order.created"]);
    assert_eq!(app.lodge.seal_webhook_urls().await.unwrap(), 1);
    let at_rest = stored().await;
    assert!(
        at_rest.starts_with("v1.") && !at_rest.contains("s3cret"),
        "{at_rest}"
    );
    assert_eq!(url_shown(&app, id_of(&w)).await, url);
    assert_eq!(app.lodge.seal_webhook_urls().await.unwrap(), 0, "once");
    app.stop().await;
}

async fn deliveries_are_signed_and_verify(app: TestApp) {
    let rx = Receiver::start().await;
    let w = register(&app, &rx.url("/hook"), &["*"]).await;
    let secret = str_of(&w, "secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{w}");
    assert_eq!(w["events"], json!(["*"]));
    assert_eq!(w["enabled"], true);

    // The secret is shown once: never in a list or a read, and sealed at rest.
    let (_, list) = app.get("/v1/admin/webhooks", &app.admin_key()).await;
    let (_, one) = app
        .get(
            &format!("/v1/admin/webhooks/{}", id_of(&w)),
            &app.admin_key(),
        )
        .await;
    for answer in [&list, &one] {
        assert!(!answer.to_string().contains(&secret), "{answer}");
        assert!(!answer.to_string().contains("secret"), "{answer}");
    }
    let stored: String = sqlx::query_scalar("SELECT secret FROM webhook_endpoints")
        .fetch_one(app.lodge.store.reader())
        .await
        .unwrap();
    assert!(!stored.contains(&secret[6..]), "sealed at rest: {stored}");

    let worker = Worker::new(app.lodge.clone(), "node-1");
    FakeDriver::default().install(&app.lodge);
    let hosting = order(&app, "signed.test", true).await;
    assert!(
        rx.got().is_empty(),
        "nothing is sent before the worker runs"
    );
    drain(worker.clone()).await;
    // Every event once (in no promised order: receivers order by `created` and the data).
    let mut types = rx.types("/hook");
    types.sort();
    assert_eq!(
        types,
        [
            "credit.adjusted",
            "hosting.active",
            "invoice.created",
            "invoice.paid",
            "order.created",
        ],
        "the order paid from the credit staff added"
    );
    for r in rx.got() {
        let t = verify(&secret, r.header("lodge-signature"), &r.body);
        assert_eq!(t, unix_now(&app), "signed at the delivery's time");
        let body = r.json();
        assert_eq!(r.header("lodge-event-id"), body["id"].as_str().unwrap());
        assert!(body["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(r.header("lodge-event-type"), body["type"].as_str().unwrap());
        assert!(r.header("user-agent").starts_with("Lodge/"), "{r:?}");
        assert!(r.header("content-type").starts_with("application/json"));
        assert_eq!(body["organization_id"], app.org_id());
        assert_eq!(body["created"], unix_now(&app));
        assert!(body["data"].is_object(), "{body}");
        // A tampered body does not verify.
        let tampered = r.body.replace("evt_", "evt-");
        assert_eq!(
            check_signature(&secret, r.header("lodge-signature"), &tampered),
            None
        );
        assert_eq!(
            check_signature("whsec_other", r.header("lodge-signature"), &r.body),
            None
        );
    }
    let of_type = |kind: &str| {
        rx.got()
            .into_iter()
            .map(|r| r.json())
            .find(|b| b["type"] == kind)
            .unwrap()
    };
    let invoice = of_type("invoice.created");
    assert_eq!(invoice["data"]["total_minor"], 500, "{invoice}");
    assert!(
        invoice["data"]["number"].is_string(),
        "the invoice's number, read back when delivered: {invoice}"
    );
    assert_eq!(of_type("hosting.active")["data"]["hosting_id"], hosting);

    // The log: one delivered attempt per event.
    let log = deliveries(&app, id_of(&w)).await;
    assert_eq!(log.len(), 5, "{log:?}");
    for d in &log {
        assert_eq!(d["status_code"], 200, "{d}");
        assert_eq!(d["delivered"], true);
        assert_eq!(d["attempt"], 1);
        assert_eq!(d["error"], Value::Null);
        assert_eq!(d["redelivery"], false);
    }
    let mut logged: Vec<Value> = log.iter().map(|d| d["event_id"].clone()).collect();
    let mut sent: Vec<Value> = rx.got().iter().map(|r| r.json()["id"].clone()).collect();
    logged.sort_by_key(Value::to_string);
    sent.sort_by_key(Value::to_string);
    assert_eq!(logged, sent);
    app.stop().await;
}

async fn endpoints_get_only_their_events(app: TestApp) {
    let rx = Receiver::start().await;
    register(&app, &rx.url("/paid"), &["invoice.paid"]).await;
    register(&app, &rx.url("/two"), &["order.created", "hosting.active"]).await;
    let off = register(&app, &rx.url("/off"), &["*"]).await;
    let (status, p) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/admin/webhooks/{}", id_of(&off)),
            Some(&app.admin_key()),
            Some(&json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["enabled"], false);
    // One organization's events only: another organization's.
    let other = app.admin_create_org("Other Org", None).await;
    let (status, scoped) = app
        .post(
            "/v1/admin/webhooks",
            &app.admin_key(),
            &json!({ "url": rx.url("/other"), "events": ["*"],
                     "organization_id": other["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{scoped}");
    assert_eq!(scoped["organization_id"], other["id"]);
    let (status, mine) = app
        .post(
            "/v1/admin/webhooks",
            &app.admin_key(),
            &json!({ "url": rx.url("/mine"), "events": ["order.created"],
                     "organization_id": app.org_id() }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{mine}");

    let worker = Worker::new(app.lodge.clone(), "node-1");
    FakeDriver::default().install(&app.lodge);
    order(&app, "subscribed.test", true).await;
    drain(worker.clone()).await;
    assert_eq!(rx.types("/paid"), ["invoice.paid"]);
    let mut two = rx.types("/two");
    two.sort();
    assert_eq!(two, ["hosting.active", "order.created"]);
    assert_eq!(rx.types("/mine"), ["order.created"]);
    assert!(rx.types("/off").is_empty());
    assert!(rx.types("/other").is_empty());
    assert_eq!(rx.got().len(), 4);
    // A job per subscribed endpoint and event, none for the others.
    assert_eq!(webhook_jobs(&app).await.len(), 4);

    // What the disabled endpoint missed is in the staff's event log, newest first, by
    // organization and kind, paged by `seq`; sent again by id once it is enabled.
    let path = format!("/v1/admin/events?organization_id={}", app.org_id());
    let (status, events) = app.get(&path, &app.admin_key()).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in ["order.created", "invoice.paid", "hosting.active"] {
        assert!(kinds.contains(&k), "{k}: {events}");
    }
    let seqs: Vec<i64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    let (_, paid) = app
        .get(
            "/v1/admin/events?kind=invoice.paid&limit=1",
            &app.admin_key(),
        )
        .await;
    assert_eq!(paid.as_array().unwrap().len(), 1, "{paid}");
    assert!(paid[0]["data"].is_object(), "{paid}");
    // The invoice's number, assigned at the end of the order's group commit, is shown
    // (the stored event was recorded before it was known).
    let (_, invoice) = app
        .get(
            &format!(
                "/v1/organizations/{}/invoices/{}",
                app.org_id(),
                paid[0]["data"]["invoice_id"]
            ),
            &app.key(),
        )
        .await;
    assert!(invoice["number"].is_string(), "{invoice}");
    assert_eq!(paid[0]["data"]["number"], invoice["number"], "{paid}");
    let (_, older) = app
        .get(
            &format!("/v1/admin/events?before={}", seqs[0]),
            &app.admin_key(),
        )
        .await;
    assert!(older
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["seq"].as_i64().unwrap() < seqs[0]));
    let (_, none) = app
        .get(
            &format!(
                "/v1/admin/events?organization_id={}",
                other["id"].as_str().unwrap()
            ),
            &app.admin_key(),
        )
        .await;
    assert_eq!(none, json!([]), "the other organization raised nothing");
    for bad in ["organization_id=nope", "before=0", "limit=x"] {
        let (status, e) = app
            .get(&format!("/v1/admin/events?{bad}"), &app.admin_key())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }
    let (status, _) = app.get("/v1/admin/events", &app.key()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "staff only");
    let (status, _) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/admin/webhooks/{}", id_of(&off)),
            Some(&app.admin_key()),
            Some(&json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, r) = app
        .post(
            &format!("/v1/admin/webhooks/{}/redeliver", id_of(&off)),
            &app.admin_key(),
            &json!({ "event_id": paid[0]["id"] }),
        )
        .await;
    assert!(status.is_success(), "{r}");
    drain(worker).await;
    assert_eq!(rx.types("/off"), ["invoice.paid"]);
    app.stop().await;
}

/// Orders placed at once share group commits, where the events of all their orders are
/// fanned out to the endpoints together after they are written: still exactly one job per
/// subscribed endpoint and event, none for the others, and each endpoint's jobs in the
/// order its events were recorded.
async fn orders_committed_together_each_get_their_deliveries(app: TestApp) {
    let rx = Receiver::start().await;
    let all = id_of(&register(&app, &rx.url("/all"), &["*"]).await);
    let paid = id_of(&register(&app, &rx.url("/paid"), &["invoice.paid"]).await);
    register(&app, &rx.url("/hosting"), &["hosting.active"]).await;
    add_credit(&app, &app.org_id(), "50.00").await; // ten of the thirty orders are paid
    let plan = starter(&app);
    let answers = futures::future::join_all((0..30).map(|i| {
        let body = json!({ "plan_id": plan, "domain_source": "external",
                           "domain_name": format!("together-{i}.test") });
        let path = order_path(&app);
        let key = app.key();
        let app = &app;
        async move { app.post(&path, &key, &body).await }
    }))
    .await;
    assert!(
        answers.iter().all(|(s, _)| *s == StatusCode::CREATED),
        "{answers:?}"
    );

    let events: Vec<(String, i64, String, String)> =
        sqlx::query_as("SELECT id, seq, kind, subject FROM events ORDER BY seq")
            .fetch_all(app.lodge.store.reader())
            .await
            .unwrap();
    let count = |k: &str| events.iter().filter(|e| e.2 == k).count();
    assert_eq!(
        (
            count("order.created"),
            count("invoice.created"),
            count("invoice.paid")
        ),
        (30, 30, 10)
    );
    let by_id: std::collections::HashMap<&str, &(String, i64, String, String)> =
        events.iter().map(|e| (e.0.as_str(), e)).collect();
    // Each endpoint's jobs, oldest first: (event seq, kind, subject).
    let mut per_endpoint: std::collections::BTreeMap<i64, Vec<(i64, &str, &str)>> =
        Default::default();
    for j in lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), "webhook")
        .await
        .unwrap()
    {
        let p: Value = serde_json::from_str(&j.payload).unwrap();
        let e = by_id[p["event_id"].as_str().unwrap()];
        per_endpoint
            .entry(p["endpoint_id"].as_i64().unwrap())
            .or_default()
            .push((e.1, e.2.as_str(), e.3.as_str()));
    }
    let seqs = |jobs: &[(i64, &str, &str)]| {
        let mut s: Vec<i64> = jobs.iter().map(|j| j.0).collect();
        s.sort_unstable();
        s
    };
    let everything = per_endpoint.remove(&all).unwrap_or_default();
    let all_events: Vec<i64> = events.iter().map(|e| e.1).collect();
    assert_eq!(seqs(&everything), all_events, "one job per event");
    // An invoice's `invoice.created` is delivered before its `invoice.paid`.
    for (i, (seq, _, subject)) in everything.iter().enumerate() {
        assert!(
            everything[..i]
                .iter()
                .all(|(s, _, sub)| sub != subject || s < seq),
            "{subject}: {everything:?}"
        );
    }
    let only_paid = per_endpoint.remove(&paid).unwrap_or_default();
    assert!(
        only_paid.iter().all(|j| j.1 == "invoice.paid"),
        "{only_paid:?}"
    );
    let paid_events: Vec<i64> = events
        .iter()
        .filter(|e| e.2 == "invoice.paid")
        .map(|e| e.1)
        .collect();
    assert_eq!(seqs(&only_paid), paid_events);
    assert!(
        per_endpoint.is_empty(),
        "nothing for the others: {per_endpoint:?}"
    );
    app.stop().await;
}

async fn retries_after_errors_then_never_again(app: TestApp) {
    let rx = Receiver::start().await;
    rx.answer(&[500, 500, 503]);
    let w = register(&app, &rx.url("/hook"), &["order.created"]).await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    order(&app, "retried.test", false).await;
    drain(worker.clone()).await;
    assert_eq!(rx.got().len(), 1);
    assert_eq!(webhook_jobs(&app).await, [("queued".into(), 1, 33)]);
    // Not before its backoff (10 s ± 20 %).
    app.clock.advance(SignedDuration::from_secs(7));
    drain(worker.clone()).await;
    assert_eq!(rx.got().len(), 1, "too early for a retry");
    for _ in 0..6 {
        app.clock.advance(SignedDuration::from_mins(2));
        drain(worker.clone()).await;
    }
    let got = rx.got();
    assert_eq!(got.len(), 4, "three failures, then delivered");
    let ids: Vec<Value> = got.iter().map(|r| r.json()["id"].clone()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "the same event: {ids:?}");
    assert_eq!(webhook_jobs(&app).await, [("done".into(), 4, 33)]);
    let log = deliveries(&app, id_of(&w)).await;
    let codes: Vec<(Value, Value, Value)> = log
        .iter()
        .rev()
        .map(|d| {
            (
                d["attempt"].clone(),
                d["status_code"].clone(),
                d["delivered"].clone(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (json!(1), json!(500), json!(false)),
            (json!(2), json!(500), json!(false)),
            (json!(3), json!(503), json!(false)),
            (json!(4), json!(200), json!(true)),
        ]
    );
    assert!(log[1]["error"].as_str().unwrap().contains("503"), "{log:?}");

    // Delivered: however long the worker goes on, never again.
    for _ in 0..5 {
        app.clock.advance(SignedDuration::from_hours(6));
        drain(worker.clone()).await;
    }
    assert_eq!(rx.got().len(), 4);
    assert_eq!(deliveries(&app, id_of(&w)).await.len(), 4);
    app.stop().await;
}

/// An event raised while the endpoint was enabled and failing, retried while it is
/// disabled: not sent, said in the log, and sent once it is enabled again; retried after
/// the endpoint stopped subscribing to its kind: not sent, said in the log, and done
/// (found by the webhooks audit: both ended the job as if delivered, without a word).
async fn retries_wait_while_the_endpoint_is_disabled_and_end_when_it_unsubscribes(app: TestApp) {
    let rx = Receiver::start().await;
    rx.answer(&[500]);
    let w = register(&app, &rx.url("/hook"), &["order.created"]).await;
    let patch = |body: Value| {
        let app = &app;
        let id = id_of(&w);
        async move {
            let (status, p) = app
                .call(
                    reqwest::Method::PATCH,
                    &format!("/v1/admin/webhooks/{id}"),
                    Some(&app.admin_key()),
                    Some(&body),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{p}");
        }
    };
    let worker = Worker::new(app.lodge.clone(), "node-1");
    order(&app, "paused.test", false).await;
    drain(worker.clone()).await;
    assert_eq!(rx.got().len(), 1);
    patch(json!({ "enabled": false })).await;
    for _ in 0..3 {
        app.clock.advance(SignedDuration::from_mins(3));
        drain(worker.clone()).await;
    }
    assert_eq!(rx.got().len(), 1, "nothing sent while disabled");
    assert_eq!(webhook_jobs(&app).await[0].0, "queued", "still to be sent");
    let log = deliveries(&app, id_of(&w)).await;
    assert!(
        log[0]["error"].as_str().unwrap().contains("disabled"),
        "{log:?}"
    );
    assert_eq!(log[0]["delivered"], false, "{log:?}");
    patch(json!({ "enabled": true })).await;
    app.clock.advance(SignedDuration::from_mins(30));
    drain(worker.clone()).await;
    let got = rx.got();
    assert_eq!(got.len(), 2, "sent once enabled again");
    assert_eq!(got[0].json()["id"], got[1].json()["id"]);
    assert_eq!(webhook_jobs(&app).await[0].0, "done");

    // Failing again, then no longer subscribed to the kind: done, and the log says why.
    rx.answer(&[500]);
    order(&app, "dropped.test", false).await;
    drain(worker.clone()).await;
    assert_eq!(rx.got().len(), 3);
    patch(json!({ "events": ["invoice.paid"] })).await;
    app.clock.advance(SignedDuration::from_mins(3));
    drain(worker.clone()).await;
    assert_eq!(rx.got().len(), 3);
    let jobs = webhook_jobs(&app).await;
    assert!(jobs.iter().all(|j| j.0 == "done"), "{jobs:?}");
    let log = deliveries(&app, id_of(&w)).await;
    assert!(
        log[0]["error"]
            .as_str()
            .unwrap()
            .contains("no longer subscribes to order.created"),
        "{log:?}"
    );
    app.stop().await;
}

/// Found by the webhook audit: a receiver whose error answer said "refused by the panel: "
/// (the marker of a control panel's final refusal) made the job dead after one attempt.
/// What a receiver says never stops the retries.
async fn a_receivers_words_never_stop_its_retries(app: TestApp) {
    let rx = Receiver::start().await;
    rx.answer(&[503]);
    rx.answer_body("upstream error: refused by the panel: maintenance");
    register(&app, &rx.url("/hook"), &["order.created"]).await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    order(&app, "maintenance.test", false).await;
    drain(worker.clone()).await;
    assert_eq!(rx.got().len(), 1);
    assert_eq!(webhook_jobs(&app).await, [("queued".into(), 1, 33)]);
    app.clock.advance(SignedDuration::from_mins(2));
    drain(worker.clone()).await;
    assert_eq!(rx.got().len(), 2, "retried, then delivered");
    assert_eq!(webhook_jobs(&app).await, [("done".into(), 2, 33)]);
    app.stop().await;
}

/// Found by the webhook audit: an endpoint of organization A, moved by staff to B while a
/// delivery of A's event was being retried, got A's event at the next retry. A delivery now
/// goes only where the endpoint's organization (as it is now) is the event's.
async fn an_endpoint_moved_to_another_organization_gets_none_of_the_first_ones_events(
    app: TestApp,
) {
    let rx = Receiver::start().await;
    rx.answer(&[500]);
    let (other_org, _, _) = crate::harness::other_tenant(&app, "moved-to").await;
    let (status, w) = app
        .post(
            "/v1/admin/webhooks",
            &app.admin_key(),
            &json!({ "url": rx.url("/scoped"), "events": ["order.created"], "organization_id": app.org_id() }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    let worker = Worker::new(app.lodge.clone(), "node-1");
    order(&app, "before-the-move.test", false).await;
    drain(worker.clone()).await;
    assert_eq!(rx.got().len(), 1, "the first attempt failed");
    let (status, moved) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/admin/webhooks/{}", id_of(&w)),
            Some(&app.admin_key()),
            Some(&json!({ "organization_id": other_org })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    for _ in 0..4 {
        app.clock.advance(SignedDuration::from_mins(5));
        drain(worker.clone()).await;
    }
    assert_eq!(
        rx.got().len(),
        1,
        "nothing of the first organization's after the move"
    );
    // The log says why the retry was dropped, once (found by the mail and webhooks audit).
    let log = deliveries(&app, id_of(&w)).await;
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0]["error"]
            .as_str()
            .unwrap()
            .contains("another organization's events only"),
        "{log:?}"
    );
    let jobs = webhook_jobs(&app).await;
    assert!(jobs.iter().all(|j| j.0 == "done"), "{jobs:?}");
    app.stop().await;
}

/// Puts the delivery job back as a node that died while running it leaves it: `running`,
/// its lease over.
async fn as_if_its_node_died(app: &TestApp) {
    sqlx::query(
        "UPDATE jobs SET status = 'running', locked_by = 'dead-node', locked_until = $1 \
         WHERE kind = 'webhook'",
    )
    .bind(app.lodge.now_us() - 1)
    .execute(app.lodge.store.writer())
    .await
    .unwrap();
}

async fn a_crash_between_send_and_record_resends_at_most_once(app: TestApp) {
    let rx = Receiver::start().await;
    let w = register(&app, &rx.url("/hook"), &["order.created"]).await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    order(&app, "crash.test", false).await;
    drain(worker.clone()).await;
    assert_eq!(rx.got().len(), 1);

    // The node died after recording the delivery, before the job's completion: the job
    // runs again and sends nothing.
    as_if_its_node_died(&app).await;
    drain(worker.clone()).await;
    assert_eq!(rx.got().len(), 1, "a recorded delivery is never sent again");
    assert_eq!(webhook_jobs(&app).await[0].0, "done");

    // The node died after the receiver's answer, before recording it: the job runs again
    // and sends it once more (the one duplicate; receivers dedupe by the event's id) ...
    sqlx::query("DELETE FROM webhook_deliveries")
        .execute(app.lodge.store.writer())
        .await
        .unwrap();
    as_if_its_node_died(&app).await;
    drain(worker.clone()).await;
    let got = rx.got();
    assert_eq!(got.len(), 2, "one re-send");
    assert_eq!(
        got[0].header("lodge-event-id"),
        got[1].header("lodge-event-id")
    );
    // ... and never again.
    for _ in 0..4 {
        app.clock.advance(SignedDuration::from_hours(3));
        drain(worker.clone()).await;
    }
    assert_eq!(rx.got().len(), 2);
    assert_eq!(deliveries(&app, id_of(&w)).await.len(), 1);
    assert_eq!(webhook_jobs(&app).await[0].0, "done");
    app.stop().await;
}

async fn gives_up_after_about_a_day(app: TestApp) {
    let rx = Receiver::start().await;
    rx.always(500);
    let w = register(&app, &rx.url("/down"), &["order.created"]).await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    order(&app, "down.test", false).await;
    let start = app.lodge.now_us();
    let mut last = start;
    for _ in 0..100 {
        if drain(worker.clone()).await > 0 {
            last = app.lodge.now_us();
        }
        let job = lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), "webhook")
            .await
            .unwrap()
            .remove(0);
        if job.status == lodge_core::JobStatus::Dead {
            break;
        }
        // On to its next attempt.
        app.clock
            .set(jiff::Timestamp::from_microsecond(job.run_at).unwrap());
    }
    app.expect_dead_jobs("the receiver never answered 2xx");
    assert_eq!(webhook_jobs(&app).await, [("dead".into(), 33, 33)]);
    assert_eq!(rx.got().len(), 33);
    let hours = (last - start) as f64 / 3_600_000_000.0;
    assert!(
        (20.0..=29.5).contains(&hours),
        "retried for about a day: {hours:.1} h"
    );
    assert_eq!(deliveries(&app, id_of(&w)).await.len(), 33);
    app.stop().await;
}

async fn staff_redeliver_even_after_success(app: TestApp) {
    let rx = Receiver::start().await;
    let w = register(&app, &rx.url("/hook"), &["order.created"]).await;
    let id = id_of(&w);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    order(&app, "again.test", false).await;
    drain(worker.clone()).await;
    let log = deliveries(&app, id).await;
    assert_eq!(log.len(), 1);
    let delivery = log[0]["id"].as_i64().unwrap();
    let event = log[0]["event_id"].as_str().unwrap().to_owned();

    let (status, r) = app
        .post(
            &format!("/v1/admin/webhooks/{id}/deliveries/{delivery}/redeliver"),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["event_id"], event);
    drain(worker.clone()).await;
    let (status, r) = app
        .post(
            &format!("/v1/admin/webhooks/{id}/redeliver"),
            &app.admin_key(),
            &json!({ "event_id": event }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    drain(worker.clone()).await;
    let got = rx.got();
    assert_eq!(got.len(), 3, "sent again twice, as asked");
    assert!(got.iter().all(|r| r.header("lodge-event-id") == event));
    let log = deliveries(&app, id).await;
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["redelivery"], true);
    assert_eq!(log[2]["redelivery"], false);

    // Refused: an unknown event, another endpoint's delivery, an unknown endpoint.
    let (status, r) = app
        .post(
            &format!("/v1/admin/webhooks/{id}/redeliver"),
            &app.admin_key(),
            &json!({ "event_id": "evt_nope" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert!(messages(&r, "event_id").contains("No such event"), "{r}");
    let other = register(&app, &rx.url("/other"), &["invoice.paid"]).await;
    let (status, _) = app
        .post(
            &format!(
                "/v1/admin/webhooks/{}/deliveries/{delivery}/redeliver",
                id_of(&other)
            ),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An event of a kind the endpoint does not subscribe to.
    let (status, r) = app
        .post(
            &format!("/v1/admin/webhooks/{}/redeliver", id_of(&other)),
            &app.admin_key(),
            &json!({ "event_id": event }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert!(
        messages(&r, "event_id").contains("does not subscribe to order.created"),
        "{r}"
    );
    let (status, _) = app
        .post(
            "/v1/admin/webhooks/999999/redeliver",
            &app.admin_key(),
            &json!({ "event_id": event }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drain(worker.clone()).await;
    assert_eq!(rx.got().len(), 3, "nothing more");
    app.stop().await;
}

async fn endpoints_are_managed_by_staff_only(app: TestApp) {
    let rx = Receiver::start().await;
    let admin = app.admin_key();
    let customer = app.key();
    let body = json!({ "url": rx.url("/hook"), "events": ["*"] });
    // A customer's key: 403, and nothing written; no key: 401.
    let (status, _) = app.post("/v1/admin/webhooks", &customer, &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get("/v1/admin/webhooks", &customer).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .call(reqwest::Method::GET, "/v1/admin/webhooks", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.count("webhook_endpoints").await, 0);

    let w = register(&app, &rx.url("/hook"), &["invoice.paid"]).await;
    let id = id_of(&w);
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/admin/webhooks/{id}")),
        (reqwest::Method::PATCH, format!("/v1/admin/webhooks/{id}")),
        (reqwest::Method::DELETE, format!("/v1/admin/webhooks/{id}")),
        (
            reqwest::Method::POST,
            format!("/v1/admin/webhooks/{id}/rotate-secret"),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/admin/webhooks/{id}/deliveries"),
        ),
    ] {
        let (status, r) = app
            .call(method.clone(), &path, Some(&customer), Some(&json!({})))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {r}");
    }

    // Changes: what is sent changes, the rest stays; a bad change changes nothing.
    let patch = |body: Value| {
        let path = format!("/v1/admin/webhooks/{id}");
        let app = &app;
        let admin = admin.clone();
        async move {
            app.call(reqwest::Method::PATCH, &path, Some(&admin), Some(&body))
                .await
        }
    };
    let (status, p) = patch(json!({ "events": ["hosting.suspended", "invoice.paid"],
                                     "description": "billing" }))
    .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["events"], json!(["invoice.paid", "hosting.suspended"]));
    assert_eq!(p["description"], "billing");
    assert_eq!(p["url"], w["url"]);
    for (bad, field) in [
        (json!({ "events": ["invoice.payed"] }), "events"),
        (json!({ "events": [] }), "events"),
        (json!({ "url": "ftp://example.com/" }), "url"),
        (
            json!({ "organization_id": "not-an-org" }),
            "organization_id",
        ),
        // A field it does not take is refused, never ignored (found by the integrator
        // audit: `{"enable": false}` said 200 and changed nothing).
        (json!({ "enable": false }), "enable"),
    ] {
        let (status, r) = patch(bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {r}");
        assert!(!messages(&r, field).is_empty(), "{bad}: {r}");
    }
    let (_, now) = app.get(&format!("/v1/admin/webhooks/{id}"), &admin).await;
    assert_eq!(now, p, "unchanged by the refused changes");
    // The same on creation: a misspelt `organisation_id` would have sent every
    // organization's events to an endpoint meant for one.
    let (status, r) = app
        .post(
            "/v1/admin/webhooks",
            &admin,
            &json!({ "url": "http://127.0.0.1:9/typo", "events": ["*"],
                     "organisation_id": app.org_id() }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert!(!messages(&r, "organisation_id").is_empty(), "{r}");

    // A bad overlap is refused.
    for bad in ["73", "-1", "soon"] {
        let (status, r) = app
            .post(
                &format!("/v1/admin/webhooks/{id}/rotate-secret?keep_previous_hours={bad}"),
                &admin,
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {r}");
        assert!(!messages(&r, "keep_previous_hours").is_empty(), "{r}");
    }
    // A new secret: shown once; the old one signs beside it for a day (two `v1`), so a
    // receiver switching meanwhile refuses nothing.
    let (status, rotated) = app
        .post(
            &format!("/v1/admin/webhooks/{id}/rotate-secret"),
            &admin,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let secret = str_of(&rotated, "secret").to_owned();
    let first = str_of(&w, "secret").to_owned();
    assert_ne!(secret, first);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    FakeDriver::default().install(&app.lodge);
    order(&app, "rotated.test", true).await;
    drain(worker.clone()).await;
    let got = rx.got();
    assert_eq!(got.len(), 1, "invoice.paid");
    verify(&secret, got[0].header("lodge-signature"), &got[0].body);
    verify(&first, got[0].header("lodge-signature"), &got[0].body);
    // A day later the old one signs no more.
    app.clock.advance(jiff::SignedDuration::from_hours(25));
    order(&app, "rotated-later.test", true).await;
    drain(worker.clone()).await;
    let got = rx.got();
    let last = got.last().expect("a delivery");
    verify(&secret, last.header("lodge-signature"), &last.body);
    assert!(check_signature(&first, last.header("lodge-signature"), &last.body).is_none());
    // Rotated with no overlap (it leaked): only the newest signs at once.
    let (status, rotated) = app
        .post(
            &format!("/v1/admin/webhooks/{id}/rotate-secret?keep_previous_hours=0"),
            &admin,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let newest = str_of(&rotated, "secret").to_owned();
    order(&app, "rotated-leak.test", true).await;
    drain(worker.clone()).await;
    let got = rx.got();
    let last = got.last().expect("a delivery");
    verify(&newest, last.header("lodge-signature"), &last.body);
    assert!(check_signature(&secret, last.header("lodge-signature"), &last.body).is_none());

    // Deleted: gone with its log; unknown ids are 404.
    let (status, _) = app
        .delete(&format!("/v1/admin/webhooks/{id}"), &admin)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for path in [
        format!("/v1/admin/webhooks/{id}"),
        format!("/v1/admin/webhooks/{id}/deliveries"),
        "/v1/admin/webhooks/nope".to_owned(),
    ] {
        let (status, _) = app.get(&path, &admin).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = app
        .delete(&format!("/v1/admin/webhooks/{id}"), &admin)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.count("webhook_deliveries").await, 0);
    app.stop().await;
}

async fn private_targets_are_refused_without_the_flag(app: TestApp) {
    for url in [
        "http://10.0.0.1/hook",
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest",
        "http://0.0.0.0/",
        "http://192.168.1.10/",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "not a url",
    ] {
        let (status, r) = app
            .post(
                "/v1/admin/webhooks",
                &app.admin_key(),
                &json!({ "url": url, "events": ["*"] }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {r}");
        assert!(!messages(&r, "url").is_empty(), "{url}: {r}");
    }
    let (_, r) = app
        .post(
            "/v1/admin/webhooks",
            &app.admin_key(),
            &json!({ "url": "http://localhost/hook", "events": ["*"] }),
        )
        .await;
    assert!(messages(&r, "url").contains("not a public address"), "{r}");
    // Every bad field at once.
    let (status, r) = app
        .post(
            "/v1/admin/webhooks",
            &app.admin_key(),
            &json!({ "url": "", "events": ["nope"] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert_eq!(messages(&r, "url"), "This field is required.");
    assert!(!messages(&r, "events").is_empty(), "{r}");
    assert_eq!(app.count("webhook_endpoints").await, 0);
    app.stop().await;
}

async fn private_targets_are_accepted_with_the_flag(app: TestApp) {
    for url in [
        "http://10.0.0.1/hook",
        "http://[::1]:9/hook",
        "http://localhost:9/hook",
    ] {
        register(&app, url, &["invoice.paid"]).await;
    }
    // Still only http(s).
    let (status, r) = app
        .post(
            "/v1/admin/webhooks",
            &app.admin_key(),
            &json!({ "url": "gopher://127.0.0.1/", "events": ["*"] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert_eq!(app.count("webhook_endpoints").await, 3);
    // Remove them: nothing may try to reach 10.0.0.1 later.
    for w in app
        .get("/v1/admin/webhooks", &app.admin_key())
        .await
        .1
        .as_array()
        .unwrap()
    {
        let (status, _) = app
            .delete(
                &format!("/v1/admin/webhooks/{}", id_of(w)),
                &app.admin_key(),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    app.stop().await;
}

/// Registered while private targets were allowed, then delivered by a node that refuses
/// them: the target is checked again before sending, and nothing is sent.
async fn a_target_is_checked_again_at_delivery(app: TestApp) {
    let rx = Receiver::start().await;
    let w = register(&app, &rx.url("/hook"), &["order.created"]).await;
    let mut strict = app.lodge.clone();
    let mut settings = (*strict.settings).clone();
    settings.webhooks_allow_private = false;
    strict.settings = Arc::new(settings);
    let worker = Worker::new(strict, "strict-node");
    order(&app, "rebound.test", false).await;
    drain(worker.clone()).await;
    assert!(rx.got().is_empty());
    let log = deliveries(&app, id_of(&w)).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["status_code"], Value::Null);
    assert!(
        log[0]["error"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{log:?}"
    );
    assert_eq!(webhook_jobs(&app).await, [("queued".into(), 1, 33)]);
    app.stop().await;
}
