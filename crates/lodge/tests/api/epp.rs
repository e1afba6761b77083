//! The EPP registrar (issue 22) against the testkit's EPP registry over TLS on loopback
//! (lodge_testkit::epp): the driver's whole lifecycle, registrations paid → active with the
//! registry's expiry, a create whose answer is lost, transfers approved and rejected (the
//! refund to credit), a wrong password, renewals once per period, the daily sync, and an
//! independent EPP client (Perl's Net::EPP) cross-checking the test registry.

use std::sync::Arc;
use std::time::Duration;

use jiff::civil::{date, Date};
use lodge_core::DomainName;
use lodge_services::provisioning::Worker;
use lodge_services::registrar::epp::{EppRegistrar, EppSettings};
use lodge_services::registrar::{
    Availability, ByTld, Contact, ManualRegistrar, Outcome, Registrar, Registration,
};
use lodge_testkit::epp::{EppConfig, EppServer, Fault};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{self, add_credit, cents, str_of, Engine, Options, TestApp};
use crate::on_both_engines;
use crate::provisioning::{drain, noon, FakeDriver};

on_both_engines!(engine:
    a_paid_registration_becomes_active_with_the_registrys_expiry,
    a_create_whose_answer_is_lost_is_adopted_not_repeated,
    a_pending_registration_is_finished_by_the_poll_queue,
    a_rejected_transfer_refunds_its_line_to_credit,
    a_transfer_with_a_wrong_code_is_refused_at_once_and_refunded,
    a_registration_the_registry_refuses_for_good_is_given_up_and_refunded,
    an_approved_transfer_activates_the_domain,
    news_of_a_tld_routed_away_is_kept_for_staff_and_acknowledged,
    a_wrong_password_fails_the_job_with_a_clear_error,
    renewal_billing_renews_at_the_registry_once_per_period,
    an_unpaid_domain_the_registry_renewed_itself_still_expires,
    the_daily_sync_reads_expiry_and_status_back,
    a_domain_of_another_registrar_is_not_read_from_its_tlds_registry,
    customers_manage_nameservers_and_lock_and_staff_see_the_registry_state,
);

/// The registry's date when tests start (the harness clock's day).
const TODAY: Date = date(2026, 3, 31);

async fn registry(require_client_cert: bool) -> Arc<EppServer> {
    Arc::new(
        EppServer::start_with(EppConfig {
            require_client_cert,
            today: TODAY,
            ..EppConfig::default()
        })
        .await
        .expect("the EPP test registry starts"),
    )
}

fn settings(server: &EppServer, client: &str, password: &str) -> EppSettings {
    EppSettings {
        name: format!("epp-{client}"),
        host: "127.0.0.1".into(),
        port: server.port(),
        client_id: client.into(),
        password: password.to_owned().into(),
        ca_pem: Some(server.ca_pem().to_owned()),
        client_cert_pem: None,
        timeout: Duration::from_secs(10),
        default_nameservers: vec!["ns1.lodge.test".into(), "ns2.lodge.test".into()],
    }
}

fn driver(server: &EppServer) -> Arc<EppRegistrar> {
    Arc::new(EppRegistrar::new(settings(server, "lodge", "lodge-secret")).expect("driver"))
}

fn options(registrar: Arc<dyn Registrar>) -> Options {
    Options {
        registrar: Some(registrar),
        ..Default::default()
    }
}

fn name(s: &str) -> DomainName {
    DomainName::parse(s).unwrap()
}

fn contact(handle: &str) -> Contact {
    Contact {
        handle: handle.into(),
        name: "Ada Lovelace".into(),
        organization: None,
        email: "ada@example.test".into(),
        street: "1 Analytical Way".into(),
        city: "London".into(),
        state: None,
        postcode: Some("N1 1AA".into()),
        country: "GB".into(),
        phone: Some("+44.2071234567".into()),
    }
}

fn order_path(app: &TestApp) -> String {
    format!(
        "/v1/organizations/{}/projects/{}/hosting/order",
        app.org_id(),
        app.project_id()
    )
}

/// Orders Starter (annually) with `domain` registered or transferred, paid from credit;
/// returns the domain's id.
async fn order(app: &TestApp, body: Value) -> String {
    let (status, o) = app.post(&order_path(app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "order: {o}");
    assert_eq!(o["status"], "active", "paid from credit: {o}");
    str_of(&o, "domain_id").to_owned()
}

async fn register(app: &TestApp, domain: &str) -> String {
    order(
        app,
        json!({ "plan_id": harness::starter(app), "domain_source": "register",
                "domain_name": domain, "billing_cycle": "annually" }),
    )
    .await
}

async fn domain(app: &TestApp, id: &str) -> Value {
    harness::get_ok(app, &domain_path(app, id)).await
}

fn domain_path(app: &TestApp, id: &str) -> String {
    format!(
        "/v1/organizations/{}/projects/{}/domains/{id}",
        app.org_id(),
        app.project_id()
    )
}

async fn balance(app: &TestApp) -> i64 {
    let c = harness::get_ok(app, &format!("/v1/organizations/{}/credit", app.org_id())).await;
    cents(&c["balance"])
}

/// The registry side of a domain row, read from the store.
async fn row(app: &TestApp, id: &str) -> lodge_store::hosting::DomainRow {
    lodge_store::hosting::domain(app.lodge.store.reader(), id.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
}

async fn jobs(app: &TestApp, kind: &str) -> Vec<lodge_store::jobs::JobRow> {
    let mut all = Vec::new();
    for s in [
        lodge_core::JobStatus::Queued,
        lodge_core::JobStatus::Running,
        lodge_core::JobStatus::Done,
        lodge_core::JobStatus::Dead,
    ] {
        all.extend(
            lodge_store::jobs::with_status(app.lodge.store.reader(), s, None, 1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|j| j.kind == kind),
        );
    }
    all
}

/// Each day from `from` to `to`, at noon on Lodge's clock and the registry's: the scheduler,
/// the registry pass and the jobs, as a live installation would run them.
async fn every_day(app: &TestApp, server: &EppServer, w: &Worker, from: Date, to: Date) {
    let mut d = from;
    while d <= to {
        app.clock.set(noon(&d.to_string(), 0));
        server.set_today(d);
        app.lodge.schedule_due().await.unwrap();
        app.lodge.registry_pass().await.unwrap();
        drain(w.clone()).await;
        d = d.tomorrow().unwrap();
    }
}

fn worker(app: &TestApp) -> Worker {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    Worker::new(app.lodge.clone(), "node-1")
}

// ---- the driver alone ----

/// check, contact + domain create, info, renew (with the current expiry), nameservers,
/// lock/unlock, the transfer code, a transfer by another registrar with the poll queue,
/// keep-alive and reconnection, against the TLS registry with a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_runs_a_domains_lifecycle_against_the_registry() {
    let server = registry(true).await;
    // Without the client certificate the registry refuses the TLS session.
    let anonymous = EppRegistrar::new(settings(&server, "lodge", "lodge-secret")).unwrap();
    let e = anonymous.check(&name("life.com")).await.unwrap_err();
    assert!(e.0.contains("connecting to the registry"), "{e}");

    let (cert, key) = server.client_identity_pem();
    let with_cert = |client: &str, pw: &str| {
        let mut s = settings(&server, client, pw);
        s.client_cert_pem = Some((cert.to_owned(), key.to_owned().into()));
        EppRegistrar::new(s).unwrap()
    };
    let lodge = with_cert("lodge", "lodge-secret");
    let other = with_cert("other", "other-secret");
    let n = name("life.com");

    assert_eq!(lodge.check(&n).await.unwrap(), Availability::Available);
    let registrant = contact("LADA1");
    let ns = vec!["ns1.example.net".to_owned(), "ns2.example.net".to_owned()];
    let out = lodge
        .create(&Registration {
            name: &n,
            years: 2,
            registrant: &registrant,
            nameservers: &ns,
        })
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::Completed {
            registration_date: "2026-03-31".into(),
            expiration_date: "2028-03-31".into()
        }
    );
    assert_eq!(lodge.check(&n).await.unwrap(), Availability::Unavailable);
    // The nameservers were created as host objects first (RFC 5732), without addresses:
    // they are outside the domain.
    let host = server.host("ns1.example.net").expect("a host object");
    assert_eq!(host.sponsor, "lodge");
    assert!(host.addresses.is_empty());
    assert_eq!(server.count("host:create"), 2, "{:?}", server.commands());
    // A nameserver under the domain itself needs glue the driver does not have: refused
    // with a clear error before the registry is asked for the domain.
    let inside = vec!["ns1.glued.com".to_owned(), "ns2.example.net".to_owned()];
    let glued = lodge
        .create(&Registration {
            name: &name("glued.com"),
            years: 1,
            registrant: &registrant,
            nameservers: &inside,
        })
        .await
        .unwrap_err();
    assert!(
        glued.0.contains("ns1.glued.com is under glued.com"),
        "{glued}"
    );
    assert_eq!(server.count("domain:create glued.com"), 0);
    // A second create is refused by the registry (2302): for good, not an error to retry
    // (the job reads the name back to tell its own lost create from another's); the
    // contact is reused.
    let again = lodge
        .create(&Registration {
            name: &n,
            years: 1,
            registrant: &registrant,
            nameservers: &ns,
        })
        .await
        .unwrap();
    assert!(
        matches!(&again, Outcome::Refused(why) if why.contains("registered already")),
        "{again:?}"
    );

    let info = lodge.info(&n).await.unwrap().unwrap();
    assert!(info.ours);
    assert_eq!(info.expiration_date.as_deref(), Some("2028-03-31"));
    assert_eq!(info.nameservers, ns);
    assert!(info.auth_info.is_some());
    assert_eq!(
        lodge.info(&name("nowhere.com")).await.unwrap(),
        None,
        "2303"
    );
    let held = server.domain("life.com").unwrap();
    assert_eq!(held.registrant.as_deref(), Some("LADA1"));
    assert_eq!(server.contact_postal_types("LADA1"), ["int"]);
    // A registrant whose name or address is not ASCII is sent in RFC 5733's local form
    // (`loc`): the `int` form is 7-bit only, and the registry refuses it otherwise.
    let mut umlaut = contact("LUML1");
    umlaut.name = "Jürgen Müller".into();
    umlaut.city = "Zürich".into();
    umlaut.country = "CH".into();
    umlaut.phone = Some("+41.441234567".into());
    lodge
        .create(&Registration {
            name: &name("umlaut.com"),
            years: 1,
            registrant: &umlaut,
            nameservers: &ns,
        })
        .await
        .unwrap();
    assert_eq!(server.contact_postal_types("LUML1"), ["loc"]);
    assert_eq!(held.sponsor, "lodge");

    // Renew from the current expiry; the same renewal asked again (its answer lost) is
    // recognised from the registry's date and not sent twice.
    let r = lodge.renew(&n, 1, "2028-03-31").await.unwrap();
    assert!(
        matches!(r, Outcome::Completed { ref expiration_date, .. } if expiration_date == "2029-03-31"),
        "{r:?}"
    );
    let r = lodge.renew(&n, 1, "2028-03-31").await.unwrap();
    assert!(
        matches!(r, Outcome::Completed { ref expiration_date, .. } if expiration_date == "2029-03-31"),
        "{r:?}"
    );
    assert_eq!(server.count("domain:renew"), 1, "{:?}", server.commands());

    // Nameservers and the transfer lock.
    let new_ns = vec!["ns1.other.org".to_owned(), "ns2.example.net".to_owned()];
    lodge.set_nameservers(&n, &new_ns).await.unwrap();
    assert_eq!(
        server.domain("life.com").unwrap().nameservers,
        vec!["ns2.example.net", "ns1.other.org"]
    );
    assert!(
        server.host("ns1.other.org").is_some(),
        "created for the update"
    );
    // A host another registrar created is linked, not created again.
    server.add_host("ns3.shared.org", "other");
    let shared = vec!["ns3.shared.org".to_owned(), "ns2.example.net".to_owned()];
    lodge.set_nameservers(&n, &shared).await.unwrap();
    assert_eq!(server.host("ns3.shared.org").unwrap().sponsor, "other");
    assert_eq!(server.count("host:create ns3.shared.org"), 0);
    lodge.set_nameservers(&n, &new_ns).await.unwrap();
    lodge.set_lock(&n, true).await.unwrap();
    assert!(lodge.info(&n).await.unwrap().unwrap().locked());
    let code = lodge.auth_code(&n).await.unwrap().unwrap();
    // Locked: another registrar's transfer request is refused for good (2304).
    let refused = other.transfer(&n, &code).await.unwrap();
    assert!(
        matches!(&refused, Outcome::Refused(why) if why.contains("locked")),
        "{refused:?}"
    );
    lodge.set_lock(&n, false).await.unwrap();
    // A wrong code: 2202, refused for good.
    let wrong = other.transfer(&n, "not-the-code").await.unwrap();
    assert!(
        matches!(&wrong, Outcome::Refused(why) if why.contains("code is wrong")),
        "{wrong:?}"
    );
    assert_eq!(other.transfer(&n, &code).await.unwrap(), Outcome::Pending);
    // The losing registrar (Lodge) is told through its poll queue, and acknowledges it.
    let probe = name("queue.invalid");
    let msg = lodge.poll(&probe).await.unwrap().expect("a message");
    assert_eq!(msg.transfer, Some(("life.com".into(), "pending".into())));
    lodge.ack(&probe, &msg.id).await.unwrap();
    assert_eq!(lodge.poll(&probe).await.unwrap(), None, "1300: empty");
    // A message of a type the driver does not know (here an extension's) is read and
    // acknowledged, not left at the head of the queue.
    server.push_message(
        "lodge",
        "Low balance.",
        r#"<fee:balance xmlns:fee="urn:example:params:xml:ns:balance-1.0"><fee:amount>3.00</fee:amount></fee:balance>"#,
    );
    let msg = lodge
        .poll(&probe)
        .await
        .unwrap()
        .expect("the unknown message");
    assert_eq!(msg.text, "Low balance.");
    assert_eq!(
        (msg.transfer.clone(), msg.pending_action.clone()),
        (None, None)
    );
    lodge.ack(&probe, &msg.id).await.unwrap();
    assert_eq!(server.queued("lodge"), 0);
    server.approve_transfer("life.com").unwrap();
    let msg = other
        .poll(&probe)
        .await
        .unwrap()
        .expect("the gaining side's message");
    assert_eq!(
        msg.transfer,
        Some(("life.com".into(), "clientApproved".into()))
    );
    other.ack(&probe, &msg.id).await.unwrap();
    let moved = other.info(&n).await.unwrap().unwrap();
    assert!(moved.ours);
    assert_eq!(
        moved.expiration_date.as_deref(),
        Some("2030-03-31"),
        "a year added"
    );
    assert!(!lodge.info(&n).await.unwrap().unwrap().ours);

    // Keep-alive, then a broken connection: the next command reconnects and logs in again.
    lodge.keepalive().await.unwrap();
    server.set_fault(Fault::DropAfterCreate);
    let lost = lodge
        .create(&Registration {
            name: &name("dropped.com"),
            years: 1,
            registrant: &registrant,
            nameservers: &[],
        })
        .await
        .unwrap_err();
    assert!(
        lost.0.contains("connection") || lost.0.contains("I/O"),
        "{lost}"
    );
    let info = lodge.info(&name("dropped.com")).await.unwrap().unwrap();
    assert!(info.ours, "committed before the connection dropped");
    assert_eq!(
        info.nameservers,
        vec!["ns1.lodge.test", "ns2.lodge.test"],
        "the defaults"
    );
    let commands = server.commands();
    assert!(
        commands.iter().filter(|c| *c == "login").count() >= 3,
        "{commands:?}"
    );
    assert!(commands.iter().any(|c| c == "hello"), "{commands:?}");

    // Stopping ends the session with a `<logout>` (RFC 5730 §2.9.1.2), once; closing
    // without a session sends nothing.
    assert_eq!(server.count("logout"), 0);
    lodge.close().await;
    lodge.close().await;
    assert_eq!(server.count("logout"), 1, "{:?}", server.commands());
}

// ---- through Lodge ----

async fn a_paid_registration_becomes_active_with_the_registrys_expiry(engine: Engine) {
    let server = registry(false).await;
    let epp = driver(&server);
    harness::run(engine, options(epp), |app| async move {
        add_credit(&app, &app.org_id(), "200.00").await;
        // The registrant's phone as the customer typed it: sent as RFC 5733 writes it
        // (the test registry refuses anything else, as schema-checking ones do).
        let (status, body) = crate::harness::v2(
            &app,
            Method::POST,
            "/apiv2/account",
            crate::harness::Auth::Key(&app.key()),
            Some(&json!({ "phone": "+44 (20) 7946-0958", "country": "GB" })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The check endpoint: the registry's answer and the TLD's price.
        let (status, c) = app.get("/v1/domains/check/Paid-Reg.com", &app.key()).await;
        assert_eq!(status, StatusCode::OK, "{c}");
        assert_eq!(c["name"], "paid-reg.com");
        assert_eq!(c["availability"], "available", "{c}");
        assert_eq!(c["register"], "12.00", "{c}");
        assert_eq!(c["renew"], "14.00", "{c}");
        let (status, bad) = app.get("/v1/domains/check/not..valid", &app.key()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(bad["name"].is_array(), "{bad}");
        // A name inside a domain is not one an order registers: not available, and the
        // registry is not asked (it was said available, then refused by the order).
        let checks = server.count("domain:check");
        let (status, c) = app
            .get("/v1/domains/check/blog.some-shop.com", &app.key())
            .await;
        assert_eq!(status, StatusCode::OK, "{c}");
        assert_eq!(c["availability"], "unavailable", "{c}");
        assert_eq!(server.count("domain:check"), checks);
        // /apiv2's lookup asks the same registry: a name another registrar holds there
        // (and nobody here) is not available, a free one is, with the TLD table's price.
        server.add_domain("held-elsewhere.com", "other", "auth-x", date(2027, 1, 1));
        let before = server.count("domain:check");
        let lookup = |name: &'static str| {
            let app = &app;
            async move {
                let (status, v) = app
                    .call(
                        Method::GET,
                        &format!("/apiv2/domains/lookup/{name}"),
                        None,
                        None,
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{v}");
                v
            }
        };
        let taken = lookup("held-elsewhere.com").await;
        assert_eq!(taken["available"], false, "{taken}");
        let free = lookup("paid-reg.com").await;
        assert_eq!(free["available"], true, "{free}");
        assert_eq!(free["new"], "12.00", "{free}");
        assert_eq!(
            server.count("domain:check"),
            before + 2,
            "each lookup asked the registry"
        );

        let id = register(&app, "paid-reg.com").await;
        let d = domain(&app, &id).await;
        assert_eq!(d["status"], "pending_registration", "{d}");
        drain(worker(&app)).await;
        let d = domain(&app, &id).await;
        assert_eq!(d["status"], "active", "{d}");
        assert_eq!(d["registration_date"], "2026-03-31", "{d}");
        assert_eq!(d["expiration_date"], "2027-03-31", "{d}");
        assert_eq!(
            d["nameservers"],
            json!(["ns1.lodge.test", "ns2.lodge.test"]),
            "{d}"
        );
        let held = server.domain("paid-reg.com").expect("at the registry");
        assert_eq!(held.sponsor, "lodge");
        assert_eq!(held.expires, date(2027, 3, 31));
        let handle = held.registrant.clone().expect("a registrant");
        assert!(handle.starts_with('L') && handle.len() <= 16, "{handle}");
        assert_eq!(server.count("contact:create"), 1);
        assert_eq!(server.count("domain:create"), 1);
        // Locked as the registry holds it, from its activation (it said locked until the
        // daily read-back: found by the domains audit).
        assert!(!held.statuses.contains("clientTransferProhibited"));
        assert_eq!(d["is_locked"], false, "{d}");
        // Now taken: the check says so.
        let (_, c) = app.get("/v1/domains/check/paid-reg.com", &app.key()).await;
        assert_eq!(c["availability"], "unavailable", "{c}");
        // The customer gives the address later: the next registration brings the
        // registry's registrant up to date (found by the domains audit: it kept the
        // details it was created with for good).
        assert_ne!(server.contact_city(&handle).as_deref(), Some("Springfield"));
        let (status, body) = crate::harness::v2(
            &app,
            Method::POST,
            "/apiv2/account",
            crate::harness::Auth::Key(&app.key()),
            Some(&json!({ "address": "1 Main Street", "city": "Springfield" })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let second = register(&app, "second-reg.com").await;
        drain(worker(&app)).await;
        assert_eq!(domain(&app, &second).await["status"], "active");
        assert_eq!(server.count("contact:update"), 1);
        assert_eq!(server.contact_city(&handle).as_deref(), Some("Springfield"));
        app.stop().await;
    })
    .await;
}

async fn a_create_whose_answer_is_lost_is_adopted_not_repeated(engine: Engine) {
    let server = registry(false).await;
    let epp = driver(&server);
    harness::run(engine, options(epp), |app| async move {
        add_credit(&app, &app.org_id(), "200.00").await;
        server.set_fault(Fault::DropAfterCreate);
        let id = register(&app, "lost-answer.com").await;
        let w = worker(&app);
        drain(w.clone()).await;
        // The registry committed it, Lodge did not hear: the job failed and waits to retry.
        let r = row(&app, &id).await;
        assert_eq!(r.status.as_str(), "pending_registration");
        assert_eq!(r.registry_stage.as_deref(), Some("registering"));
        assert!(r.registry_error.is_some(), "{r:?}");
        let j = jobs(&app, "register_domain").await;
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].status, lodge_core::JobStatus::Queued, "{:?}", j[0]);
        assert!(j[0].last_error.is_some());
        // The retry asks `info` first and adopts the registration: no second create.
        app.clock
            .set(noon("2026-03-31", 0) + jiff::SignedDuration::from_hours(2));
        drain(w).await;
        let d = domain(&app, &id).await;
        assert_eq!(d["status"], "active", "{d}");
        assert_eq!(d["expiration_date"], "2027-03-31", "{d}");
        assert_eq!(server.count("domain:create"), 1, "{:?}", server.commands());
        assert!(server.count("domain:info lost-answer.com") >= 1);
        let r = row(&app, &id).await;
        assert_eq!(r.registry_stage, None);
        assert_eq!(r.registry_error, None);
        app.stop().await;
    })
    .await;
}

/// A registry that answers a create with 1001 (action pending) decides later and says so
/// in the poll queue (RFC 5731 §3.3, `<domain:panData>`): approved, the domain becomes
/// active with the registry's dates; refused, it is cancelled and its line goes back to
/// credit. A message of a type Lodge does not know ahead of it is acknowledged, not left to
/// block the queue (instant-epp's own poll could not parse either).
async fn a_pending_registration_is_finished_by_the_poll_queue(engine: Engine) {
    let server = registry(false).await;
    server.set_pending_creates(true);
    let epp = driver(&server);
    harness::run(engine, options(epp), |app| async move {
        add_credit(&app, &app.org_id(), "200.00").await;
        let yes = register(&app, "slow-yes.com").await;
        let w = worker(&app);
        // The first create's answer (1001) is lost: the retry reads the domain back,
        // pending, and waits for the registry without creating it again.
        server.set_fault(Fault::DropAfterCreate);
        drain(w.clone()).await;
        assert!(row(&app, &yes).await.registry_error.is_some());
        app.clock
            .set(noon("2026-03-31", 0) + jiff::SignedDuration::from_hours(2));
        drain(w.clone()).await;
        let no = register(&app, "slow-no.com").await;
        let paid = balance(&app).await;
        drain(w.clone()).await;
        let j = jobs(&app, "register_domain").await;
        assert!(
            j.iter().all(|j| j.status == lodge_core::JobStatus::Done),
            "{j:?}"
        );
        for id in [&yes, &no] {
            let r = row(&app, id).await;
            assert_eq!(r.status.as_str(), "pending_registration", "{r:?}");
            assert_eq!(r.registry_stage.as_deref(), Some("registering"));
            assert_eq!(r.registry_error, None, "1001 is no error: {r:?}");
        }
        assert!(server
            .domain("slow-yes.com")
            .unwrap()
            .statuses
            .contains("pendingCreate"));
        // Nothing decided yet: a pass changes nothing.
        app.lodge.registry_pass().await.unwrap();
        assert_eq!(row(&app, &yes).await.status.as_str(), "pending_registration");

        server.push_message(
            "lodge",
            "Something else.",
            r#"<ext:note xmlns:ext="urn:example:params:xml:ns:note-1.0"><ext:text>hi</ext:text></ext:note>"#,
        );
        server.finish_create("slow-yes.com", true).unwrap();
        server.finish_create("slow-no.com", false).unwrap();
        let pass = app.lodge.registry_pass().await.unwrap();
        assert_eq!(pass.registrations, 2, "{pass:?}");
        assert_eq!(pass.messages, 3, "{pass:?}");
        assert_eq!(pass.failed, 0, "{pass:?}");
        assert_eq!(server.queued("lodge"), 0, "every message acknowledged");
        let d = domain(&app, &yes).await;
        assert_eq!(d["status"], "active", "{d}");
        assert_eq!(d["registration_date"], "2026-03-31", "{d}");
        assert_eq!(d["expiration_date"], "2027-03-31", "{d}");
        let d = domain(&app, &no).await;
        assert_eq!(d["status"], "cancelled", "{d}");
        let refunded = balance(&app).await - paid;
        assert_eq!(refunded, 1200, "the registration line (12.00) back to credit");
        // The pass again changes nothing, refunds nothing twice.
        app.lodge.registry_pass().await.unwrap();
        assert_eq!(balance(&app).await - paid, refunded);
        assert_eq!(server.count("domain:create"), 2, "{:?}", server.commands());

        // A pending create whose message never comes (lost, or read by another client of
        // the account): after an hour the pass reads the domain back and finishes it.
        let lost = register(&app, "slow-lost.com").await;
        drain(w.clone()).await;
        assert!(server.update_domain("slow-lost.com", |d| {
            d.statuses.remove("pendingCreate");
        }));
        app.lodge.registry_pass().await.unwrap();
        assert_eq!(row(&app, &lost).await.status.as_str(), "pending_registration");
        app.clock
            .set(noon("2026-03-31", 0) + jiff::SignedDuration::from_hours(4));
        let pass = app.lodge.registry_pass().await.unwrap();
        assert_eq!(pass.registrations, 1, "{pass:?}");
        assert_eq!(domain(&app, &lost).await["status"], "active");
        app.stop().await;
    })
    .await;
}

async fn transfer_in(app: &TestApp, domain: &str, code: &str) -> String {
    order(
        app,
        json!({ "plan_id": harness::starter(app), "domain_source": "transfer",
                "domain_name": domain, "epp_code": code, "billing_cycle": "annually" }),
    )
    .await
}

async fn a_rejected_transfer_refunds_its_line_to_credit(engine: Engine) {
    let server = registry(false).await;
    server.add_domain("move-me.net", "other", "EPP-secret-1", date(2026, 9, 1));
    let epp = driver(&server);
    harness::run(engine, options(epp), |app| async move {
        add_credit(&app, &app.org_id(), "200.00").await;
        let id = transfer_in(&app, "move-me.net", "EPP-secret-1").await;
        let paid = balance(&app).await;
        drain(worker(&app)).await;
        let r = row(&app, &id).await;
        assert_eq!(r.status.as_str(), "pending_transfer");
        assert_eq!(r.registry_stage.as_deref(), Some("transferring"));
        assert_eq!(
            server
                .domain("move-me.net")
                .unwrap()
                .transfer
                .unwrap()
                .status,
            "pending"
        );
        // Nothing decided yet: the pass changes nothing.
        app.lodge.registry_pass().await.unwrap();
        assert_eq!(row(&app, &id).await.status.as_str(), "pending_transfer");

        server.reject_transfer("move-me.net").unwrap();
        let pass = app.lodge.registry_pass().await.unwrap();
        assert_eq!(pass.transfers, 1, "{pass:?}");
        assert_eq!(server.queued("lodge"), 0, "acknowledged");
        let d = domain(&app, &id).await;
        assert_eq!(d["status"], "cancelled", "{d}");
        // The transfer line (the TLD's transfer price) is back in credit, once.
        let refunded = balance(&app).await - paid;
        assert!(refunded > 0, "refunded {refunded}");
        app.lodge.registry_pass().await.unwrap();
        assert_eq!(balance(&app).await - paid, refunded, "not twice");
        let r = row(&app, &id).await;
        assert!(r.registry_error.unwrap().contains("rejected"));
        app.stop().await;
    })
    .await;
}

/// A wrong transfer code (2202) is refused for good by the registry: the domain is
/// cancelled at once with the reason, and its line goes back to credit (it was retried for
/// hours with the same code, then left pending, nothing refunded: found by the EPP audit).
async fn a_transfer_with_a_wrong_code_is_refused_at_once_and_refunded(engine: Engine) {
    let server = registry(false).await;
    server.add_domain("wrong-code.net", "other", "EPP-right", date(2026, 9, 1));
    let epp = driver(&server);
    harness::run(engine, options(epp), |app| async move {
        add_credit(&app, &app.org_id(), "200.00").await;
        let id = transfer_in(&app, "wrong-code.net", "EPP-wrong").await;
        let paid = balance(&app).await;
        drain(worker(&app)).await;
        let d = domain(&app, &id).await;
        assert_eq!(d["status"], "cancelled", "{d}");
        let r = row(&app, &id).await;
        assert!(
            r.registry_error
                .as_deref()
                .unwrap_or_default()
                .contains("code is wrong"),
            "{:?}",
            r.registry_error
        );
        assert!(
            balance(&app).await > paid,
            "the transfer line is back in credit"
        );
        assert!(
            server.domain("wrong-code.net").unwrap().transfer.is_none(),
            "no transfer at the registry"
        );
        let open: Vec<_> = jobs(&app, lodge_services::billing::JOB_TRANSFER_DOMAIN)
            .await
            .into_iter()
            .filter(|j| j.status.as_str() != "done")
            .collect();
        assert!(open.is_empty(), "not retried: {open:?}");

        // Refused because the registry gave it to Lodge already (a retry after a lost
        // answer; 2106 here): read back, it is activated, not cancelled and refunded.
        server.add_domain("mine-already.net", "lodge", "EPP-mine", date(2026, 9, 1));
        let id = transfer_in(&app, "mine-already.net", "EPP-mine").await;
        let paid = balance(&app).await;
        drain(worker(&app)).await;
        let d = domain(&app, &id).await;
        assert_eq!(d["status"], "active", "{d}");
        assert_eq!(balance(&app).await, paid, "nothing refunded");
        app.stop().await;
    })
    .await;
}

/// The domain was given up for `why`, its line back in credit (the balance above `paid`).
async fn given_up(app: &TestApp, id: &str, why: &str, paid: i64) {
    let d = domain(app, id).await;
    assert_eq!(d["status"], "cancelled", "{d}");
    let error = row(app, id).await.registry_error.unwrap_or_default();
    assert!(error.contains(why), "{error}");
    assert!(balance(app).await > paid, "its line is back in credit");
}

/// A paid registration whose name another registrar took between the order and the create
/// (2302, read back as another's) is cancelled at once and its line goes back to credit, as
/// a refused transfer is; a transfer refused with 2201 (a wrong code, as some registries
/// answer it) likewise (found by the domains audit: each was retried until its job died,
/// the customer charged and the domain left pending). A policy refusal (2306), often the
/// installation's own doing, is left to staff with the registry's words (found by review).
async fn a_registration_the_registry_refuses_for_good_is_given_up_and_refunded(engine: Engine) {
    let server = registry(false).await;
    let epp = driver(&server);
    harness::run(engine, options(epp), |app| async move {
        add_credit(&app, &app.org_id(), "200.00").await;
        server.set_fault(Fault::RefuseNext("domain:create", 2306));
        let id = register(&app, "policy-no.com").await;
        let paid = balance(&app).await;
        drain(worker(&app)).await;
        let d = domain(&app, &id).await;
        assert_eq!(d["status"], "pending_registration", "for staff: {d}");
        let error = row(&app, &id).await.registry_error.unwrap_or_default();
        assert!(
            error.contains("2306"),
            "the registry's words for staff: {error}"
        );
        assert_eq!(balance(&app).await, paid, "nothing refunded on its own");
        let (status, failed) = app
            .post(
                &format!("/v1/admin/domains/{id}/fail"),
                &app.admin_key(),
                &json!({ "reason": "reserved name at the registry" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{failed}");
        given_up(&app, &id, "reserved name", paid).await;

        let id = register(&app, "taken-meanwhile.com").await;
        server.add_domain(
            "taken-meanwhile.com",
            "other",
            "EPP-theirs",
            date(2027, 1, 1),
        );
        let paid = balance(&app).await;
        drain(worker(&app)).await;
        given_up(&app, &id, "registered", paid).await;
        assert_eq!(server.count("domain:create taken-meanwhile.com"), 1);
        assert_eq!(
            server.domain("taken-meanwhile.com").unwrap().sponsor,
            "other",
            "left to its holder"
        );

        server.add_domain("code-2201.net", "other", "EPP-right", date(2026, 9, 1));
        server.set_fault(Fault::RefuseNext("domain:transfer request", 2201));
        let id = transfer_in(&app, "code-2201.net", "EPP-typo").await;
        let paid = balance(&app).await;
        drain(worker(&app)).await;
        given_up(&app, &id, "code is wrong", paid).await;
        assert_eq!(server.count("domain:transfer request code-2201.net"), 1);

        let open: Vec<_> = jobs(&app, lodge_services::billing::JOB_TRANSFER_DOMAIN)
            .await
            .into_iter()
            .filter(|j| j.status.as_str() != "done")
            .collect();
        assert!(open.is_empty(), "not retried: {open:?}");
        app.stop().await;
    })
    .await;
}

async fn an_approved_transfer_activates_the_domain(engine: Engine) {
    let server = registry(false).await;
    server.add_domain("come-here.net", "other", "EPP-secret-2", date(2026, 9, 1));
    let epp = driver(&server);
    harness::run(engine, options(epp), |app| async move {
        add_credit(&app, &app.org_id(), "200.00").await;
        let id = transfer_in(&app, "come-here.net", "EPP-secret-2").await;
        drain(worker(&app)).await;
        server.approve_transfer("come-here.net").unwrap();
        let pass = app.lodge.registry_pass().await.unwrap();
        assert_eq!(pass.transfers, 1, "{pass:?}");
        let d = domain(&app, &id).await;
        assert_eq!(d["status"], "active", "{d}");
        assert_eq!(d["expiration_date"], "2027-09-01", "a year added: {d}");
        assert_eq!(server.domain("come-here.net").unwrap().sponsor, "lodge");
        app.stop().await;
    })
    .await;
}

/// The registry's news of a registration and of a transfer whose TLD was routed since to a
/// registrar without a registry (here: `com` to staff, by hand): Lodge cannot read either
/// back, so each is kept on its domain for staff, and the messages are acknowledged, not left
/// to hold the queue for good.
async fn news_of_a_tld_routed_away_is_kept_for_staff_and_acknowledged(engine: Engine) {
    let server = registry(false).await;
    server.set_pending_creates(true);
    server.add_domain("moved-in.com", "other", "EPP-secret-3", date(2026, 9, 1));
    harness::run(engine, options(driver(&server)), |app| async move {
        add_credit(&app, &app.org_id(), "200.00").await;
        let created = register(&app, "moved-away.com").await;
        let transferred = transfer_in(&app, "moved-in.com", "EPP-secret-3").await;
        drain(worker(&app)).await;
        assert_eq!(
            row(&app, &created).await.status.as_str(),
            "pending_registration"
        );
        assert_eq!(
            row(&app, &transferred).await.status.as_str(),
            "pending_transfer"
        );
        // The installation now routes only `net` to this registry (as a configuration
        // does: the rest to staff, by hand); the registry decides both meanwhile.
        let mut routed = app.lodge.clone();
        routed.registrar = Some(Arc::new(
            ByTld::new(Arc::new(ManualRegistrar)).route("net", driver(&server)),
        ));
        server.finish_create("moved-away.com", true).unwrap();
        server.approve_transfer("moved-in.com").unwrap();
        assert_eq!(server.queued("lodge"), 2);
        let pass = routed.registry_pass().await.unwrap();
        assert_eq!(server.queued("lodge"), 0, "acknowledged: {pass:?}");
        assert_eq!((pass.registrations, pass.transfers), (0, 0), "{pass:?}");
        for (id, status, what) in [
            (&created, "pending_registration", "registration as done"),
            (&transferred, "pending_transfer", "transfer as approved"),
        ] {
            let r = row(&app, id).await;
            assert_eq!(r.status.as_str(), status, "{r:?}");
            let note = r.registry_error.unwrap_or_default();
            assert!(
                note.contains(what) && note.contains("no longer goes to a registry"),
                "{note}"
            );
        }
        // Nothing more in the queue, nothing changes on the next pass.
        routed.registry_pass().await.unwrap();
        assert_eq!(
            row(&app, &created).await.status.as_str(),
            "pending_registration"
        );
        app.stop().await;
    })
    .await;
}

/// A transfer request answered 2300 (a transfer is pending already) is Lodge's own only when
/// the registry's transfer query names Lodge as the requester (a retry after a lost
/// answer); another registrar's pending transfer is an error, not a transfer to wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_pending_for_another_registrar_is_not_taken_for_ours() {
    let server = Arc::new(
        EppServer::start_with(EppConfig {
            clients: vec![
                ("lodge".into(), "lodge-secret".into()),
                ("other".into(), "other-secret".into()),
                ("third".into(), "third-secret".into()),
            ],
            today: TODAY,
            ..EppConfig::default()
        })
        .await
        .unwrap(),
    );
    server.add_domain("contested.com", "third", "EPP-c", date(2026, 9, 1));
    let lodge = driver(&server);
    let other = EppRegistrar::new(settings(&server, "other", "other-secret")).unwrap();
    let n = name("contested.com");
    assert_eq!(other.transfer(&n, "EPP-c").await.unwrap(), Outcome::Pending);
    // The other registrar's retry (its answer lost): its own, still pending.
    assert_eq!(other.transfer(&n, "EPP-c").await.unwrap(), Outcome::Pending);
    let e = lodge.transfer(&n, "EPP-c").await.unwrap_err();
    assert!(e.0.contains("another registrar (other)"), "{e}");
    assert_eq!(
        server.count("domain:transfer query"),
        2,
        "{:?}",
        server.commands()
    );
}

/// A registry that stops answering (a command sent, no reply, the connection left open) is
/// given up after the configured timeout, and the next command runs on a new session
/// (found by review: only the TLS handshake was bounded, so the session, and every check
/// and job behind it, waited for ever).
#[tokio::test]
async fn a_registry_that_stops_answering_is_given_up() {
    let server = registry(false).await;
    let mut s = settings(&server, "lodge", "lodge-secret");
    s.timeout = Duration::from_secs(1);
    let epp = EppRegistrar::new(s).expect("driver");
    let n = name("silent-registry.com");
    epp.check(&n).await.expect("a first check");
    server.set_fault(Fault::StallNextCommand);
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(60), epp.check(&n))
        .await
        .expect("the check gave up on the registry")
        .expect_err("no answer");
    assert!(e.to_string().contains("did not answer"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "given up, not waited out"
    );
    epp.check(&n).await.expect("a new session answers");
    assert!(
        server.commands().iter().any(|c| c.ends_with("(stalled)")),
        "{:?}",
        server.commands()
    );
    // A poll that gets no answer acknowledges nothing unread: the message stays queued
    // for the next pass.
    server.push_message("lodge", "Waiting.", "");
    server.set_fault(Fault::StallNextCommand);
    let probe = name("queue.invalid");
    let e = tokio::time::timeout(Duration::from_secs(60), epp.poll(&probe))
        .await
        .expect("the poll gave up")
        .expect_err("no answer");
    assert!(e.to_string().contains("did not answer"), "{e}");
    assert_eq!(server.queued("lodge"), 1, "not acknowledged unread");
    assert_eq!(server.count("poll ack"), 0, "{:?}", server.commands());
    let msg = epp
        .poll(&probe)
        .await
        .unwrap()
        .expect("the message, still there");
    assert_eq!(msg.text, "Waiting.");
}

/// A login the registry refuses (2200): at order time the availability check fails, so the
/// order is answered 503 (try again later) and nothing is written; a job whose session must log
/// in again after the password changed fails with the registry's reason and is retried.
async fn a_wrong_password_fails_the_job_with_a_clear_error(engine: Engine) {
    let server = registry(false).await;
    let good = driver(&server);
    let bad = Arc::new(EppRegistrar::new(settings(&server, "lodge", "wrong-password")).unwrap());
    let routed = ByTld::new(good).route("net", bad);
    harness::run(engine, options(Arc::new(routed)), |app| async move {
        add_credit(&app, &app.org_id(), "200.00").await;
        let before = harness::counts(&app).await;
        let body = json!({ "plan_id": harness::starter(&app), "domain_source": "register",
                           "domain_name": "bad-login.net", "billing_cycle": "annually" });
        let (status, e) = app.post(&order_path(&app), &app.key(), &body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{e}");
        assert_eq!(
            e["detail"], "The registrar could not check this name at the moment; try again later.",
            "{e}"
        );
        assert_eq!(harness::counts(&app).await, before, "nothing written");

        // Ordered while the login worked; then the registry's password is changed and the
        // session drops: the job cannot log in again.
        let id = register(&app, "bad-login.com").await;
        server.set_password("lodge", "rotated-at-the-registry");
        server.set_fault(Fault::DropNextCommand);
        let w = worker(&app);
        drain(w.clone()).await;
        app.clock
            .set(noon("2026-03-31", 0) + jiff::SignedDuration::from_hours(2));
        drain(w.clone()).await;
        let j = jobs(&app, "register_domain").await;
        assert_eq!(j.len(), 1);
        // Retried with backoff (the password may be fixed meanwhile), with the reason kept.
        assert_eq!(j[0].status, lodge_core::JobStatus::Queued, "{:?}", j[0]);
        assert_eq!(j[0].attempts, 2, "{:?}", j[0]);
        let err = j[0].last_error.clone().unwrap();
        assert!(err.contains("refused the login"), "{err}");
        assert!(err.contains("2200"), "{err}");
        let r = row(&app, &id).await;
        assert_eq!(r.status.as_str(), "pending_registration");
        assert!(r.registry_error.unwrap().contains("refused the login"));
        assert_eq!(server.count("domain:create"), 0);
        assert!(server.domain("bad-login.com").is_none());
        // The refused login is not tried again at once (a registry locks an account that
        // keeps failing its logins): the next retry fails with the same reason, without
        // logging in.
        let logins = server.count("login");
        app.clock
            .set(noon("2026-03-31", 0) + jiff::SignedDuration::from_hours(4));
        drain(w).await;
        assert_eq!(server.count("login"), logins, "{:?}", server.commands());
        let j = jobs(&app, "register_domain").await;
        assert_eq!(j[0].attempts, 3, "{:?}", j[0]);
        let err = j[0].last_error.clone().unwrap();
        assert!(
            err.contains("refused the login") && err.contains("not trying again"),
            "{err}"
        );
        app.stop().await;
    })
    .await;
}

async fn renewal_billing_renews_at_the_registry_once_per_period(engine: Engine) {
    let server = registry(false).await;
    let epp = driver(&server);
    harness::run(engine, options(epp), |app| async move {
        add_credit(&app, &app.org_id(), "300.00").await;
        let id = register(&app, "renew-me.com").await;
        let w = worker(&app);
        drain(w.clone()).await;
        assert_eq!(domain(&app, &id).await["expiration_date"], "2027-03-31");
        // Every day around the expiry: billed 14 days before, paid from credit, renewed.
        // The renewal's answer is lost (the registry renewed), and the daily sync reads the
        // new expiry back before the job's retry: the retry must not renew again (found by
        // review: it renewed from the date the sync had just written, a second year).
        server.set_fault(Fault::DropAfterRenew);
        every_day(&app, &server, &w, date(2027, 3, 10), date(2027, 4, 5)).await;
        assert_eq!(server.count("domain:renew"), 1, "{:?}", server.commands());
        assert_eq!(
            server.domain("renew-me.com").unwrap().expires,
            date(2028, 3, 31)
        );
        let dom = domain(&app, &id).await;
        assert_eq!(dom["expiration_date"], "2028-03-31", "{dom}");
        assert_eq!(dom["status"], "active", "{dom}");
        // Running the renew job again (a retry) does not renew twice.
        let renew = jobs(&app, "renew_domain").await;
        assert_eq!(renew.len(), 1, "{renew:?}");
        app.stop().await;
    })
    .await;
}

/// A registry that renews a domain itself on its expiry (as .com's does) while Lodge's
/// renewal is unpaid: the daily sync records the registry's new expiry, but the domain is
/// paid only through the old one, and it still expires at the termination grace (found by
/// review: it never expired, and was never billed again).
async fn an_unpaid_domain_the_registry_renewed_itself_still_expires(engine: Engine) {
    let server = registry(false).await;
    let epp = driver(&server);
    harness::run(engine, options(epp), |app| async move {
        add_credit(&app, &app.org_id(), "66.00").await;
        let id = register(&app, "auto-renewed.com").await;
        let w = worker(&app);
        drain(w.clone()).await;
        assert_eq!(domain(&app, &id).await["expiration_date"], "2027-03-31");
        every_day(&app, &server, &w, date(2027, 3, 16), date(2027, 3, 30)).await;
        assert!(server.update_domain("auto-renewed.com", |d| d.expires = date(2028, 3, 31)));
        every_day(&app, &server, &w, date(2027, 3, 31), date(2027, 4, 29)).await;
        let d = domain(&app, &id).await;
        assert_eq!(d["status"], "active", "still payable: {d}");
        assert_eq!(
            d["expiration_date"], "2028-03-31",
            "the registry's, read back: {d}"
        );
        every_day(&app, &server, &w, date(2027, 4, 30), date(2027, 4, 30)).await;
        let d = domain(&app, &id).await;
        assert_eq!(d["status"], "expired", "{d}");
        assert_eq!(server.count("domain:renew"), 0, "never renewed unpaid");
        app.stop().await;
    })
    .await;
}

async fn the_daily_sync_reads_expiry_and_status_back(engine: Engine) {
    let server = registry(false).await;
    let epp = driver(&server);
    harness::run(engine, options(epp), |app| async move {
        add_credit(&app, &app.org_id(), "200.00").await;
        let id = register(&app, "sync-me.com").await;
        drain(worker(&app)).await;
        // Changed at the registry behind Lodge's back.
        assert!(server.update_domain("sync-me.com", |d| {
            d.expires = date(2029, 3, 31);
            d.statuses.insert("clientTransferProhibited".into());
            d.nameservers = vec!["a.ns.test".into(), "b.ns.test".into()];
        }));
        app.clock.set(noon("2026-04-01", 0));
        let pass = app.lodge.registry_pass().await.unwrap();
        assert_eq!(pass.synced, 1, "{pass:?}");
        let r = row(&app, &id).await;
        assert_eq!(r.expiration_date.as_deref(), Some("2029-03-31"));
        assert_eq!(r.is_locked, 1);
        assert_eq!(r.registry_synced_on.as_deref(), Some("2026-04-01"));
        assert!(r.registry_statuses.contains("clientTransferProhibited"));
        assert_eq!(r.nameservers, r#"["a.ns.test","b.ns.test"]"#);
        // Once a day: the next pass the same day does not ask again.
        let infos = server.count("domain:info sync-me.com");
        app.lodge.registry_pass().await.unwrap();
        assert_eq!(server.count("domain:info sync-me.com"), infos);
        // Gone to another registrar: transferred away.
        server.update_domain("sync-me.com", |d| d.sponsor = "other".into());
        app.clock.set(noon("2026-04-02", 0));
        app.lodge.registry_pass().await.unwrap();
        assert_eq!(domain(&app, &id).await["status"], "transferred_away");
        app.stop().await;
    })
    .await;
}

/// Several registrars by TLD: each domain records the one that serves it (not the
/// aggregate's name), and the daily sync reads a domain only from its own registrar's
/// registry. A domain recorded with the manual registrar (registered by hand before its
/// TLD went to a registry) is not read there, so not "transferred away" (found by the
/// stack audit: every such domain flipped the day the TLD was routed).
async fn a_domain_of_another_registrar_is_not_read_from_its_tlds_registry(engine: Engine) {
    let server = registry(false).await;
    let routed: Arc<dyn Registrar> = Arc::new(
        ByTld::new(Arc::new(lodge_services::registrar::ManualRegistrar))
            .route("com", driver(&server)),
    );
    harness::run(engine, options(routed), |app| async move {
        add_credit(&app, &app.org_id(), "500.00").await;
        let ours = register(&app, "routed-one.com").await;
        let by_hand = register(&app, "routed-two.com").await;
        drain(worker(&app)).await;
        assert_eq!(
            row(&app, &ours).await.registrar,
            "epp-lodge",
            "the route's name"
        );
        // routed-two.com as if registered by hand elsewhere before `com` was routed.
        sqlx::query("UPDATE domains SET registrar = 'manual' WHERE name = 'routed-two.com'")
            .execute(app.lodge.store.writer())
            .await
            .unwrap();
        server.update_domain("routed-two.com", |d| d.sponsor = "other".into());
        server.update_domain("routed-one.com", |d| d.expires = date(2029, 3, 31));
        app.clock.set(noon("2026-04-01", 0));
        app.lodge.registry_pass().await.unwrap();
        // Asked only whether it is Lodge's (an upgraded installation's domains recorded
        // `manual` may be): it is not, and stays active and the manual registrar's.
        assert_eq!(domain(&app, &by_hand).await["status"], "active");
        assert_eq!(row(&app, &by_hand).await.registrar, "manual");
        let r = row(&app, &ours).await;
        assert_eq!(
            r.expiration_date.as_deref(),
            Some("2029-03-31"),
            "read back"
        );

        // Its nameservers, lock and renewal go to its own registrar too (by hand: staff
        // tasks), not to the registry its TLD goes to now, which knows nothing of it.
        let updates = server.count("domain:update");
        let path = domain_path(&app, &by_hand);
        for (what, body) in [
            (
                "nameservers",
                json!({ "nameservers": ["ns1.hand.test", "ns2.hand.test"] }),
            ),
            ("lock", json!({ "locked": true })),
        ] {
            let (status, d) = app
                .call(
                    reqwest::Method::PUT,
                    &format!("{path}/{what}"),
                    Some(&app.key()),
                    Some(&body),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{what}: {d}");
        }
        assert_eq!(
            server.count("domain:update"),
            updates,
            "{:?}",
            server.commands()
        );
        let (status, code) = app.get(&format!("{path}/auth-code"), &app.key()).await;
        assert_eq!(status, StatusCode::OK, "{code}");
        assert_eq!(code["auth_code"], Value::Null, "{code}");
        let w = worker(&app);
        every_day(&app, &server, &w, date(2027, 3, 10), date(2027, 4, 2)).await;
        assert_eq!(
            server.count("domain:renew routed-two.com"),
            0,
            "{:?}",
            server.commands()
        );
        let (status, open) = app
            .get(
                &format!("/v1/admin/registry-tasks?domain_id={by_hand}"),
                &app.admin_key(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{open}");
        let mut kinds: Vec<&str> = open["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["kind"].as_str().unwrap())
            .collect();
        kinds.sort_unstable();
        assert_eq!(kinds, ["lock", "nameservers", "renew"], "{open}");

        // Recorded `manual` but Lodge's at the registry (an installation that routed `com`
        // after ordering): read there, and recorded with that registrar from then on.
        sqlx::query("UPDATE domains SET registrar = 'manual' WHERE name = 'routed-one.com'")
            .execute(app.lodge.store.writer())
            .await
            .unwrap();
        server.update_domain("routed-one.com", |d| d.expires = date(2031, 3, 31));
        app.clock.set(noon("2027-04-10", 0));
        app.lodge.registry_pass().await.unwrap();
        let r = row(&app, &ours).await;
        assert_eq!(r.registrar, "epp-lodge");
        assert_eq!(r.expiration_date.as_deref(), Some("2031-03-31"));

        // Recorded with a registrar no longer configured (renamed in lodge.toml): a change
        // is refused with why, and the daily sync keeps the reason; nothing goes to staff.
        sqlx::query("UPDATE domains SET registrar = 'epp-gone' WHERE name = 'routed-one.com'")
            .execute(app.lodge.store.writer())
            .await
            .unwrap();
        let (status, e) = app
            .call(
                reqwest::Method::PUT,
                &format!("{}/lock", domain_path(&app, &ours)),
                Some(&app.key()),
                Some(&json!({ "locked": false })),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{e}");
        assert!(e.to_string().contains("not configured"), "{e}");
        app.clock.set(noon("2027-04-11", 0));
        let pass = app.lodge.registry_pass().await.unwrap();
        assert!(pass.failed >= 1, "{pass:?}");
        let r = row(&app, &ours).await;
        assert!(
            r.registry_error
                .as_deref()
                .is_some_and(|e| e.contains("epp-gone")),
            "{:?}",
            r.registry_error
        );
        app.stop().await;
    })
    .await;
}

async fn customers_manage_nameservers_and_lock_and_staff_see_the_registry_state(engine: Engine) {
    let server = registry(false).await;
    let epp = driver(&server);
    harness::run(engine, options(epp), |app| async move {
        add_credit(&app, &app.org_id(), "200.00").await;
        let id = register(&app, "manage-me.com").await;
        drain(worker(&app)).await;
        let path = domain_path(&app, &id);
        let (status, d) = app
            .call(
                reqwest::Method::PUT,
                &format!("{path}/nameservers"),
                Some(&app.key()),
                Some(&json!({ "nameservers": ["NS1.Example.org", "ns2.example.org"] })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{d}");
        assert_eq!(
            d["nameservers"],
            json!(["ns1.example.org", "ns2.example.org"])
        );
        assert_eq!(
            server.domain("manage-me.com").unwrap().nameservers,
            vec!["ns1.example.org", "ns2.example.org"]
        );
        // Made at the registry: nothing left to staff.
        let (status, t) = app
            .get("/v1/admin/registry-tasks?status=all", &app.admin_key())
            .await;
        assert_eq!((status, &t["count"]), (StatusCode::OK, &json!(0)), "{t}");
        // Bad input: a field error, nothing sent to the registry.
        let before = server.count("domain:update");
        let (status, e) = app
            .call(
                reqwest::Method::PUT,
                &format!("{path}/nameservers"),
                Some(&app.key()),
                Some(&json!({ "nameservers": ["only-one.example.org"] })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
        assert!(e["nameservers"].is_array(), "{e}");
        assert_eq!(server.count("domain:update"), before);

        let (status, d) = app
            .call(
                reqwest::Method::PUT,
                &format!("{path}/lock"),
                Some(&app.key()),
                Some(&json!({ "locked": false })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{d}");
        assert_eq!(d["is_locked"], false, "{d}");
        let (status, d) = app
            .call(
                reqwest::Method::PUT,
                &format!("{path}/lock"),
                Some(&app.key()),
                Some(&json!({ "locked": true })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{d}");
        assert!(server
            .domain("manage-me.com")
            .unwrap()
            .statuses
            .contains("clientTransferProhibited"));
        let (status, code) = app.get(&format!("{path}/auth-code"), &app.key()).await;
        assert_eq!(status, StatusCode::OK, "{code}");
        assert_eq!(
            code["auth_code"],
            server.domain("manage-me.com").unwrap().auth_info.as_str()
        );
        // A registry that keeps codes secret (RFC 9154: an empty one in info): a fresh
        // code is set at the registry and told, never "".
        server.update_domain("manage-me.com", |d| d.auth_info = String::new());
        let (status, code) = app.get(&format!("{path}/auth-code"), &app.key()).await;
        assert_eq!(status, StatusCode::OK, "{code}");
        let fresh = str_of(&code, "auth_code").to_owned();
        assert!(fresh.len() >= 8, "{code}");
        assert_eq!(server.domain("manage-me.com").unwrap().auth_info, fresh);

        // Another organization sees none of it.
        let owner = app.admin_create_user("stranger@example.test", None).await;
        let stranger = app.admin_create_org("Stranger", Some(&owner)).await;
        let key = app.admin_create_key(str_of(&stranger, "id"), None).await;
        let (status, _) = app
            .call(
                reqwest::Method::PUT,
                &format!("{path}/lock"),
                Some(&key),
                Some(&json!({ "locked": false })),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Staff: every domain with its registry state.
        app.lodge.registry_pass().await.unwrap();
        let (status, all) = app.get("/v1/admin/domains", &app.admin_key()).await;
        assert_eq!(status, StatusCode::OK, "{all}");
        let mine = all["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{all}"))
            .clone();
        assert_eq!(mine["registrar"], "epp-lodge", "{mine}");
        assert_eq!(mine["registry_synced_on"], "2026-03-31", "{mine}");
        assert!(
            mine["registry_statuses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "clientTransferProhibited"),
            "{mine}"
        );
        let (status, _) = app.get("/v1/admin/domains", &app.key()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        app.stop().await;
    })
    .await;
}

// ---- an independent client ----

const NET_EPP_SCRIPT: &str = r#"
use strict; use warnings;
use Net::EPP::Simple;
my ($port, $ca) = @ARGV;
my $epp = Net::EPP::Simple->new(
    host => '127.0.0.1', port => $port, user => 'other', pass => 'other-secret',
    ssl => 1, verify => 1, ca_file => $ca, debug => 0, timeout => 10, load_config => 0,
) or die "connect: $Net::EPP::Simple::Message ($Net::EPP::Simple::Code)\n";
my $avail = $epp->check_domain('perl-check.org');
die "check: $Net::EPP::Simple::Code\n" unless defined $avail;
print "check $avail\n";
$epp->create_contact({ id => 'PERL1', type => 'int', voice => '+1.5555550100',
    email => 'perl@example.test', fax => '',
    postalInfo => { int => { name => 'Perl Tester', addr => { street => ['1 Camel St'],
        city => 'Perlville', pc => '12345', cc => 'US' } } },
    authInfo => 'c-perl' }) or die "contact: $Net::EPP::Simple::Code $Net::EPP::Simple::Message\n";
print "contact $Net::EPP::Simple::Code\n";
my $nohost = $epp->create_domain({ name => 'perl-check.org', period => 1, registrant => 'PERL1',
    contacts => { admin => 'PERL1', tech => 'PERL1' }, ns => ['ns9.perl.test'],
    authInfo => 'perl-auth-1' });
print "nohost $Net::EPP::Simple::Code\n";
for my $h ('ns1.perl.test', 'ns2.perl.test') {
    $epp->create_host({ name => $h, addrs => [] })
        or die "host: $Net::EPP::Simple::Code $Net::EPP::Simple::Message\n";
}
print "hosts $Net::EPP::Simple::Code ", $epp->check_host('ns1.perl.test'), "\n";
$epp->create_domain({ name => 'perl-check.org', period => 1, registrant => 'PERL1',
    contacts => { admin => 'PERL1', tech => 'PERL1' }, ns => ['ns1.perl.test', 'ns2.perl.test'],
    authInfo => 'perl-auth-1' }) or die "create: $Net::EPP::Simple::Code $Net::EPP::Simple::Message\n";
print "create $Net::EPP::Simple::Code\n";
my $again = $epp->create_domain({ name => 'perl-check.org', period => 1, registrant => 'PERL1',
    contacts => {}, authInfo => 'x' });
print "again $Net::EPP::Simple::Code\n";
my $info = $epp->domain_info('perl-check.org') or die "info: $Net::EPP::Simple::Code\n";
print "info $info->{exDate} $info->{clID}\n";
print "avail ", $epp->check_domain('perl-check.org'), "\n";
$epp->logout or die "logout: $Net::EPP::Simple::Code\n";
print "logout\n";
"#;

/// Debian's Perl Net::EPP (libnet-epp-perl), not Lodge's client, logs in to the test
/// registry over TLS, checks, creates a contact and a domain (a second create is 2302),
/// reads it back and logs out: the registry is not only proven by the client Lodge uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_epp_client_cross_checks_the_test_registry() {
    let has_net_epp = std::process::Command::new("perl")
        .args(["-MNet::EPP::Simple", "-e", "1"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_net_epp {
        lodge_testkit::skip_or_fail(
            "Perl Net::EPP (apt-get install libnet-epp-perl)",
            "perl or Net::EPP::Simple is missing",
        );
        return;
    }
    let server = registry(false).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, server.ca_pem()).unwrap();
    let script = dir.path().join("check.pl");
    std::fs::write(&script, NET_EPP_SCRIPT).unwrap();
    let out = tokio::process::Command::new("perl")
        .arg(&script)
        .arg(server.port().to_string())
        .arg(&ca)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "perl failed:\n{stdout}\n{stderr}\n{:?}",
        server.commands()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "check 1",
            "contact 1000",
            "nohost 2303",
            "hosts 1000 0",
            "create 1000",
            "again 2302",
            "info 2027-03-31T00:00:00.0Z other",
            "avail 0",
            "logout",
        ],
        "{stderr}"
    );
    let held = server.domain("perl-check.org").unwrap();
    assert_eq!(held.sponsor, "other");
    assert_eq!(held.nameservers, vec!["ns1.perl.test", "ns2.perl.test"]);
    assert_eq!(server.commands().last().map(String::as_str), Some("logout"));
}
