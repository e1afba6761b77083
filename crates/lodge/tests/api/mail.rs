//! Mail notices against a real SMTP server (aiosmtpd, `lodge_testkit::smtp`): every notice
//! of an account's life arrives once with its amounts; SMTP down, the mail job retries and
//! the message is sent once the server is back; templates overridden from a directory;
//! with mail off, no mail job is made.

use std::sync::Arc;
use std::time::Duration;

use lodge_services::mail::{MailSettings, TlsMode, JOB_MAIL};
use lodge_services::provisioning::Worker;
use lodge_services::{Lodge, Settings};
use lodge_testkit::smtp::{Mail, SmtpServer, SmtpTls};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{add_credit, hosting, str_of, Engine, TestApp};
use crate::on_both_engines;
use crate::provisioning::{drain, noon, FakeDriver};

on_both_engines!(
    every_notice_arrives_once_with_its_amounts,
    smtp_down_the_mail_is_sent_once_it_is_back,
    a_notice_that_failed_and_is_no_longer_wanted_is_logged_skipped,
    a_recipient_refused_for_good_is_not_tried_again,
    with_mail_off_no_mail_job_is_made,
    mail_goes_over_starttls_and_implicit_tls_once_the_server_is_trusted,
    a_name_with_a_line_break_is_refused_and_one_stored_before_is_mailed_on_one_line,
    a_stopping_worker_hands_back_the_jobs_it_has_not_started,
    the_smtp_server_is_checked_when_a_node_starts,
    staff_send_a_notice_again_as_a_message_of_its_own,
    a_cancellation_and_a_refund_are_told_and_a_withdrawn_one_is_not,
    a_cancellation_overtaken_by_a_termination_is_not_told,
);

const OWNER: &str = "demo@lodge.test";

fn settings(port: u16, templates: Option<std::path::PathBuf>) -> MailSettings {
    MailSettings {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        username: None,
        password: None,
        from: "Acme Hosting <billing@acme.test>".into(),
        installation_name: "Acme Hosting".into(),
        postal_address: "1 Main St\nSpringfield".into(),
        base_url: "https://hosting.acme.test".into(),
        templates_dir: templates,
        timeout: Duration::from_secs(10),
        ca_file: None,
    }
}

/// The app's services with mail configured (the worker that sends), mail switched on in
/// its database.
async fn with_mail(app: &TestApp, m: MailSettings) -> Lodge {
    let mut lodge = app.lodge.clone();
    lodge.settings = Arc::new(Settings {
        mail: Some(m),
        ..(*app.lodge.settings).clone()
    });
    lodge.switch_mail().await.unwrap();
    lodge
}

fn order_path(app: &TestApp) -> String {
    format!(
        "/v1/organizations/{}/projects/{}/hosting/order",
        app.org_id(),
        app.project_id()
    )
}

async fn order(app: &TestApp, domain: &str) -> serde_json::Value {
    let body = json!({ "plan_id": crate::harness::starter(app), "domain_source": "external",
                       "domain_name": domain, "billing_cycle": "monthly" });
    let (status, o) = app.post(&order_path(app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    o
}

async fn log(app: &TestApp) -> Vec<lodge_store::mail::MailLogRow> {
    let mut db = app.lodge.store.read_conn().await.unwrap();
    let mut rows = lodge_store::mail::recent(&mut db, 1000).await.unwrap();
    rows.reverse();
    rows
}

/// The log's messages of one notice, oldest first.
async fn logged(app: &TestApp, notice: &str) -> Vec<lodge_store::mail::MailLogRow> {
    log(app)
        .await
        .into_iter()
        .filter(|r| r.notice == notice)
        .collect()
}

/// Staff ask for the logged message `id` to be sent again.
async fn resend(app: &TestApp, id: i64) -> (StatusCode, serde_json::Value) {
    app.post(
        &format!("/v1/admin/mail/{id}/resend"),
        &app.admin_key(),
        &json!({}),
    )
    .await
}

/// Mail on through `smtp` on a node with a fake panel, and `domain` ordered and paid from
/// credit, its account made and its three notices sent: that node, its worker, the order
/// and the account's id.
async fn mailed_account(
    app: &TestApp,
    smtp: &SmtpServer,
    domain: &str,
) -> (Lodge, Worker, serde_json::Value, String) {
    FakeDriver::default().install(&app.lodge);
    let lodge = with_mail(app, settings(smtp.port, None)).await;
    let worker = Worker::new(lodge.clone(), "node-1");
    add_credit(app, &app.org_id(), "5.00").await;
    let o = order(app, domain).await;
    let id = str_of(&o, "hosting_id").to_owned();
    drain(worker.clone()).await;
    assert_eq!(smtp.messages().len(), 3, "{:?}", subjects(&smtp.messages()));
    (lodge, worker, o, id)
}

/// The id of the renewal invoice (from its `invoice.created` event).
async fn renewal_invoice(app: &TestApp) -> i64 {
    let mut db = app.lodge.store.read_conn().await.unwrap();
    let events = lodge_store::events::recent(&mut db, None, 1000)
        .await
        .unwrap();
    events
        .iter()
        .filter(|e| e.kind == "invoice.created")
        .find_map(|e| {
            let d: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            (d["kind"] == "renewal").then(|| d["invoice_id"].as_i64().unwrap())
        })
        .expect("a renewal invoice")
}

fn subjects(mails: &[Mail]) -> Vec<String> {
    mails.iter().map(Mail::subject).collect()
}

#[track_caller]
fn assert_footer(m: &Mail) {
    assert!(m.text.contains("Acme Hosting"), "{}", m.text);
    assert!(m.text.contains("Springfield"), "{}", m.text);
    assert!(m.to().contains(OWNER), "{}", m.to());
    assert!(m.text.contains("text/plain"), "{}", m.text);
    assert!(m.text.contains("text/html"), "{}", m.text);
}

/// `POST /v1/admin/mail/{id}/resend`: the customer did not get their invoice; staff send
/// it again. The copy is the same notice with a Message-ID and a log row of its own; a
/// second request while the copy waits is refused (one copy for a double click), one after
/// it is sent makes another; an unknown id, a customer and mail switched off are refused.
async fn staff_send_a_notice_again_as_a_message_of_its_own(app: TestApp) {
    let Some(mut smtp) = SmtpServer::start() else {
        return app.stop().await;
    };
    let lodge = with_mail(&app, settings(smtp.port, None)).await;
    let worker = Worker::new(lodge.clone(), "node-1");
    FakeDriver::default().install(&lodge);
    FakeDriver::default().install(&app.lodge);
    let placed = order(&app, "again.test").await;
    drain(worker.clone()).await;
    let got = smtp.messages();
    assert_eq!(
        got.len(),
        2,
        "confirmation and invoice: {:?}",
        subjects(&got)
    );
    let admin = app.admin_key();
    let (status, page) = app.get("/v1/admin/mail", &admin).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let first = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["notice"] == "invoice_created")
        .unwrap_or_else(|| panic!("the invoice's notice in {page}"))
        .clone();
    let again = format!("/v1/admin/mail/{}/resend", first["id"]);

    let (status, job) = app.post(&again, &admin, &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["kind"], "mail", "{job}");
    assert_eq!(job["status"], "queued", "{job}");
    let (status, body) = app.post(&again, &admin, &json!({})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "one copy waits at a time: {body}"
    );
    drain(worker.clone()).await;
    let got = smtp.messages();
    assert_eq!(got.len(), 3, "{:?}", subjects(&got));
    let (original, copy) = (&got[1], &got[2]);
    assert_eq!(copy.subject(), original.subject());
    assert_eq!(copy.to(), original.to());
    assert_eq!(original.message_id(), first["message_id"].as_str().unwrap());
    assert_ne!(copy.message_id(), original.message_id());
    assert!(
        copy.message_id().starts_with(
            original
                .message_id()
                .trim_end_matches(|c| c != '@')
                .trim_end_matches('@')
        ),
        "the copy's id is the event's: {} / {}",
        copy.message_id(),
        original.message_id()
    );
    let rows = log(&app).await;
    assert_eq!(rows.len(), 3);
    let last = &rows[2];
    assert_eq!(
        (last.notice.as_str(), last.status.as_str()),
        ("invoice_created", "sent")
    );
    assert_eq!(last.message_id, copy.message_id());
    assert_eq!(last.event_id.as_deref(), first["event_id"].as_str());

    // Sent: asked again, another copy.
    let (status, job) = app.post(&again, &admin, &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    drain(worker.clone()).await;
    assert_eq!(smtp.messages().len(), 4);
    assert_eq!(log(&app).await.len(), 4);

    // Paid since: its notice asking for payment is refused, not accepted and then skipped
    // (found by the support-desk audit); its receipt can be sent again.
    let invoice = placed["invoice_id"].as_i64().unwrap();
    let (status, p) = app
        .post(
            &format!("/v1/admin/invoices/{invoice}/payments"),
            &admin,
            &json!({ "amount": "5.00", "method": "bank_transfer", "reference": "AGAIN-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    drain(worker.clone()).await;
    let before = app.count("jobs").await;
    let (status, body) = app.post(&again, &admin, &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body.to_string()
            .contains("its invoice is paid or cancelled now (its receipt"),
        "{body}"
    );
    assert_eq!(app.count("jobs").await, before);
    let receipt = logged(&app, "invoice_paid").await.remove(0);
    let (status, job) = resend(&app, receipt.id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    drain(worker.clone()).await;
    // And the order's confirmation, which asks for nothing once paid (found by review: it
    // was refused too).
    let confirmation = logged(&app, "order_created").await.remove(0);
    let (status, job) = resend(&app, confirmation.id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    drain(worker.clone()).await;

    // The server down, a notice is retried by its job: no copy of it meanwhile, which
    // would reach the customer twice once the server is back.
    smtp.stop();
    order(&app, "down.test").await;
    drain(worker.clone()).await;
    let retried = log(&app)
        .await
        .into_iter()
        .find(|m| m.status == "failed" && m.notice == "invoice_created")
        .expect("the new invoice's notice failed");
    let (status, body) = resend(&app, retried.id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.to_string().contains("still to be sent"), "{body}");

    // An unknown message, a customer's key, and mail switched off.
    let (status, body) = resend(&app, 999_999).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app.post(&again, &app.key(), &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "customers cannot: {body}");
    app.lodge.switch_mail().await.unwrap();
    let before = app.count("jobs").await;
    let (status, body) = app.post(&again, &admin, &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "mail is off: {body}");
    assert_eq!(app.count("jobs").await, before);
    app.stop().await;
}

async fn every_notice_arrives_once_with_its_amounts(app: TestApp) {
    let Some(smtp) = SmtpServer::start() else {
        return app.stop().await;
    };
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    let lodge = with_mail(&app, settings(smtp.port, None)).await;
    let worker = Worker::new(lodge.clone(), "node-1");

    // An order paid from credit: its confirmation and its receipt (the invoice settled at
    // once is not "issued" with something to pay).
    add_credit(&app, &app.org_id(), "5.00").await;
    let o = order(&app, "told.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    drain(worker.clone()).await;
    let got = smtp.messages();
    assert_eq!(got.len(), 3, "{:?}", subjects(&got));
    assert!(
        got[0].subject().starts_with("Order ORD-"),
        "{}",
        got[0].subject()
    );
    assert!(got[0].text.contains("told.test"), "{}", got[0].text);
    assert!(got[0].text.contains("Total: 5.00 USD"), "{}", got[0].text);
    assert!(got[0].text.contains("Paid from your credit: 5.00 USD"));
    assert!(got[1]
        .subject()
        .starts_with("Payment received: invoice INV-"));
    // Then the account is made: its details, never its password.
    assert_eq!(got[2].subject(), "told.test is ready");
    for line in [
        "Plan: Starter (monthly)",
        "Username: ",
        "Nameservers: ns1.",
        "Next renewal: ",
    ] {
        assert!(got[2].text.contains(line), "{line}: {}", got[2].text);
    }
    assert!(
        got[2].text.contains("never sent by e-mail"),
        "{}",
        got[2].text
    );

    // The renewal: issued (unpaid), reminded, paid in part on its due date, overdue,
    // suspended; each pass between tells nothing twice.
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    for day in -14..=8 {
        app.clock.set(noon(&due, day));
        if day == 0 {
            let invoice = renewal_invoice(&app).await;
            let (status, p) = app
                .post(
                    &format!("/v1/admin/invoices/{invoice}/payments"),
                    &app.admin_key(),
                    &json!({ "amount": "1.50", "method": "bank_transfer", "reference": "MAIL-0" }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{p}");
        }
        app.lodge.schedule_due().await.unwrap();
        drain(worker.clone()).await;
    }
    let got = smtp.messages();
    let s = subjects(&got);
    assert_eq!(got.len(), 7, "{s:?}");
    let renewal = &got[3];
    assert!(
        renewal.subject().contains(&format!(": 5.00 USD due {due}")),
        "{s:?}"
    );
    assert!(renewal.text.contains("Your services renew soon"));
    assert!(
        renewal.text.contains("Amount due: 5.00 USD"),
        "{}",
        renewal.text
    );
    assert!(
        renewal.text.contains("https://hosting.acme.test/pay/"),
        "{}",
        renewal.text
    );
    let number = renewal
        .subject()
        .trim_start_matches("Invoice ")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    assert!(number.starts_with("INV-"), "{number}");
    assert_eq!(
        got[4].subject(),
        format!("Reminder: invoice {number} is due {due}")
    );
    assert_eq!(got[5].subject(), format!("Overdue: invoice {number}"));
    // What is due as the invoice says when it is sent, not when it was issued (found by
    // the support-desk audit: 15.00 told where 10.00 was due).
    assert!(
        got[5].text.contains("Amount due: 3.50 USD"),
        "{}",
        got[5].text
    );
    let suspend_on: jiff::civil::Date =
        due.parse::<jiff::civil::Date>().unwrap() + jiff::Span::new().days(7);
    assert!(
        got[5].text.contains(&format!("suspended on {suspend_on}")),
        "{}",
        got[5].text
    );
    assert_eq!(got[6].subject(), "told.test is suspended");
    // By the scheduler, for the renewal: paying brings it back.
    assert!(
        got[6].text.contains("Once what is due is paid"),
        "{}",
        got[6].text
    );

    // Paid by staff: the receipt, then the account is back.
    let invoice = renewal_invoice(&app).await;
    let (status, p) = app
        .post(
            &format!("/v1/admin/invoices/{invoice}/payments"),
            &app.admin_key(),
            &json!({ "amount": "5.00", "method": "bank_transfer", "reference": "MAIL-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    drain(worker.clone()).await;
    drain(worker.clone()).await;
    let got = smtp.messages();
    assert_eq!(got.len(), 9, "{:?}", subjects(&got));
    assert_eq!(
        got[7].subject(),
        format!("Payment received: invoice {number}")
    );
    // 1.50 and 5.00 received on a 5.00 invoice: what went to credit is said (found by
    // the support-desk audit: the receipt said only what the invoice took).
    assert!(
        got[7].text.contains(
            "Payment received: 6.50 USD, of which 1.50 USD was added to your account credit"
        ),
        "{}",
        got[7].text
    );
    assert_eq!(got[8].subject(), "told.test is back online");

    // Terminated by staff.
    let (status, t) = app
        .post(
            &format!("/v1/admin/hosting/{id}/terminate"),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{t}");
    drain(worker.clone()).await;
    drain(worker.clone()).await;
    let got = smtp.messages();
    assert_eq!(got.len(), 10, "{:?}", subjects(&got));
    assert_eq!(got[9].subject(), "told.test is terminated");
    assert!(
        got[9].text.contains("is terminated. Its site"),
        "{}",
        got[9].text
    );

    // Once each: ten Message-IDs, each an event's, each logged sent once.
    let mut ids: Vec<String> = got.iter().map(Mail::message_id).collect();
    for m in &got {
        assert_footer(m);
        assert!(m.message_id().starts_with("<evt_"), "{}", m.message_id());
        assert!(
            m.message_id().ends_with("@acme.test>"),
            "{}",
            m.message_id()
        );
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "{ids:?}");
    let rows = log(&app).await;
    assert_eq!(rows.len(), 10, "{rows:?}");
    for r in &rows {
        assert_eq!((r.status.as_str(), r.attempts), ("sent", 1), "{r:?}");
        assert!(!r.possible_duplicate, "{r:?}");
        assert!(r.sent_at.is_some(), "{r:?}");
        assert_eq!(r.to_address, OWNER);
        assert!(
            r.smtp_response.as_deref().unwrap_or("").starts_with("250"),
            "{r:?}"
        );
        assert!(ids.contains(&r.message_id), "{r:?}");
    }

    // Nothing is sent again: more passes, more rounds, a job run twice.
    app.clock.set(noon(&due, 9));
    app.lodge.schedule_due().await.unwrap();
    drain(worker.clone()).await;
    let jobs = {
        let pool = app.lodge.store.reader();
        lodge_store::jobs::jobs_of_kind(pool, JOB_MAIL)
            .await
            .unwrap()
    };
    assert_eq!(jobs.len(), 10, "one job per notice");
    assert_eq!(smtp.messages().len(), 10);
    app.stop().await;
}

/// Over `STARTTLS` (required) and over TLS from the first byte, to a server whose
/// certificate no public root vouches for: refused while Lodge does not trust it (nothing
/// sent, the jobs retry), sent once each when `--mail-ca-file` names its certificate.
async fn mail_goes_over_starttls_and_implicit_tls_once_the_server_is_trusted(app: TestApp) {
    for (i, (mode, tls)) in [
        (SmtpTls::Starttls, TlsMode::Starttls),
        (SmtpTls::Implicit, TlsMode::Tls),
    ]
    .into_iter()
    .enumerate()
    {
        let cert = lodge_testkit::tls::Cert::self_signed().expect("a certificate");
        let Some(smtp) = SmtpServer::start_tls(mode, &cert) else {
            return app.stop().await;
        };
        let untrusted = MailSettings {
            tls,
            ..settings(smtp.port, None)
        };
        let lodge = with_mail(&app, untrusted).await;
        order(&app, &format!("tls-{i}.test")).await;
        assert_eq!(drain(Worker::new(lodge, "node-1")).await, 2);
        let failed: Vec<_> = log(&app)
            .await
            .into_iter()
            .filter(|r| r.status == "failed")
            .collect();
        assert_eq!(failed.len(), 2, "{tls:?}: {failed:?}");
        for r in &failed {
            let e = r.last_error.as_deref().unwrap_or_default().to_lowercase();
            assert!(
                e.contains("certificate") || e.contains("issuer"),
                "{tls:?}: {e}"
            );
            assert!(!r.possible_duplicate, "{r:?}");
        }
        assert!(smtp.messages().is_empty(), "{tls:?}: nothing before TLS");

        // The operator names the server's certificate: the retries go out, once each.
        let dir = tempfile::tempdir().expect("a temp dir");
        let ca_file = dir.path().join("relay-ca.pem");
        std::fs::write(&ca_file, &cert.cert_pem).expect("the CA file");
        let trusted = MailSettings {
            tls,
            ca_file: Some(ca_file),
            ..settings(smtp.port, None)
        };
        trusted.validate().expect("a CA file with a certificate");
        let lodge = with_mail(&app, trusted).await;
        app.clock.advance(jiff::SignedDuration::from_mins(2));
        assert_eq!(drain(Worker::new(lodge, "node-1")).await, 2);
        let got = smtp.messages();
        assert_eq!(got.len(), 2, "{tls:?}: {:?}", subjects(&got));
        assert!(
            log(&app).await.iter().all(|r| r.status == "sent"),
            "{tls:?}"
        );
    }
    // A CA file without a certificate is refused at start, naming the setting.
    let dir = tempfile::tempdir().expect("a temp dir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("a file");
    let bad = MailSettings {
        tls: TlsMode::Starttls,
        ca_file: Some(empty),
        ..settings(2525, None)
    };
    let e = bad.validate().expect_err("refused");
    assert!(e.contains("--mail-ca-file"), "{e}");
    app.stop().await;
}

/// An invoice's notice that failed while the SMTP server was down, its invoice paid before
/// the retry, is not sent, and its log row says `skipped` (found by the mail audit: it
/// stayed `failed`, listed among the mail still being retried).
async fn a_notice_that_failed_and_is_no_longer_wanted_is_logged_skipped(app: TestApp) {
    let Some(mut smtp) = SmtpServer::start() else {
        return app.stop().await;
    };
    smtp.stop();
    let lodge = with_mail(&app, settings(smtp.port, None)).await;
    let worker = Worker::new(lodge.clone(), "node-1");
    let o = order(&app, "paid-meanwhile.test").await;
    let cut = order(&app, "cut-off.test").await;
    assert_eq!(drain(worker.clone()).await, 4);
    let invoice_notice = |rows: &[lodge_store::mail::MailLogRow], number: &str| {
        rows.iter()
            .find(|r| r.notice == "invoice_created" && r.subject.contains(number))
            .cloned()
            .unwrap_or_else(|| panic!("{rows:?}"))
    };
    let rows = log(&app).await;
    assert_eq!(invoice_notice(&rows, "INV-000001").status, "failed");
    // The second's attempt as a node killed mid-send leaves it (found by the crash audit:
    // the SMTP server had taken it; skipped on the retry, it stayed `sending` for ever).
    let cut_row = invoice_notice(&rows, "INV-000002");
    sqlx::query("UPDATE mail_log SET status = 'sending' WHERE message_id = $1")
        .bind(&cut_row.message_id)
        .execute(app.lodge.store.writer())
        .await
        .unwrap();
    for (o, reference) in [(&o, "BT-SKIP"), (&cut, "BT-CUT")] {
        let invoice = o["invoice_id"].as_i64().unwrap();
        let (status, paid) = app
            .post(
                &format!("/v1/admin/invoices/{invoice}/payments"),
                &app.admin_key(),
                &json!({ "amount": "5.00", "method": "bank_transfer", "reference": reference }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{paid}");
    }
    smtp.restart().unwrap();
    app.clock.advance(jiff::SignedDuration::from_mins(2));
    drain(worker.clone()).await;
    let rows = log(&app).await;
    let row = invoice_notice(&rows, "INV-000001");
    assert_eq!(row.status, "skipped", "{row:?}");
    let row = invoice_notice(&rows, "INV-000002");
    assert_eq!(row.status, "unknown", "{row:?}");
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("may have delivered")),
        "{row:?}"
    );
    let (_, sending) = app
        .get("/v1/admin/mail?status=sending", &app.admin_key())
        .await;
    assert_eq!(sending["count"], 0, "{sending}");
    assert!(
        smtp.messages()
            .iter()
            .all(|m| !m.subject().contains("5.00 USD due")),
        "{:?}",
        subjects(&smtp.messages())
    );
    let (_, failed) = app
        .get("/v1/admin/mail?status=failed", &app.admin_key())
        .await;
    assert_eq!(failed["count"], 0, "{failed}");
    app.stop().await;
}

async fn smtp_down_the_mail_is_sent_once_it_is_back(app: TestApp) {
    let Some(mut smtp) = SmtpServer::start() else {
        return app.stop().await;
    };
    smtp.stop();
    let lodge = with_mail(&app, settings(smtp.port, None)).await;
    let worker = Worker::new(lodge.clone(), "node-1");

    // An unpaid order: its confirmation (with the amount due and the payment link) and
    // its invoice, neither sendable yet.
    let o = order(&app, "later.test").await;
    assert_eq!(drain(worker.clone()).await, 2);
    let jobs = lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), JOB_MAIL)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    for j in &jobs {
        assert_eq!(j.status, lodge_core::JobStatus::Queued, "{j:?}");
        assert_eq!(j.attempts, 1, "{j:?}");
        let e = j.last_error.as_deref().unwrap_or("");
        assert!(e.contains(&format!("127.0.0.1:{}", smtp.port)), "{e}");
    }
    let rows = log(&app).await;
    assert!(rows.iter().all(|r| r.status == "failed"), "{rows:?}");
    // Still down at the first retry.
    app.clock.advance(jiff::SignedDuration::from_secs(15));
    assert_eq!(drain(worker.clone()).await, 2);
    assert!(smtp.messages().is_empty());

    // Back: the retries send each once.
    smtp.restart().unwrap();
    app.clock.advance(jiff::SignedDuration::from_mins(2));
    assert_eq!(drain(worker.clone()).await, 2);
    let got = smtp.messages();
    assert_eq!(got.len(), 2, "{:?}", subjects(&got));
    let confirmation = got
        .iter()
        .find(|m| m.subject().starts_with("Order "))
        .unwrap();
    assert!(
        confirmation.text.contains("Amount due: 5.00 USD"),
        "{}",
        confirmation.text
    );
    let pay = str_of(&o, "invoice_payment_url");
    let token = pay.rsplit('/').next().unwrap();
    assert!(
        confirmation
            .text
            .contains(&format!("https://hosting.acme.test/pay/{token}")),
        "{}",
        confirmation.text
    );
    assert!(got.iter().any(|m| m.subject().contains("5.00 USD due")));
    for r in log(&app).await {
        assert_eq!((r.status.as_str(), r.attempts), ("sent", 3), "{r:?}");
        assert!(
            !r.possible_duplicate,
            "a refused connection sent nothing: {r:?}"
        );
    }
    app.clock.advance(jiff::SignedDuration::from_hours(2));
    assert_eq!(drain(worker.clone()).await, 0);
    assert_eq!(smtp.messages().len(), 2);

    // Staff see the log: both sent, each after three attempts, with the server's answer.
    let (status, page) = app.get("/v1/admin/mail", &app.admin_key()).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    assert_eq!(page["count"], 2, "{page}");
    for m in page["results"].as_array().unwrap() {
        assert_eq!(m["status"], "sent", "{m}");
        assert_eq!(m["attempts"], 3, "{m}");
        assert!(m["to"].as_str().unwrap().contains('@'), "{m}");
        assert!(
            m["sent"].is_string() && m["smtp_response"].is_string(),
            "{m}"
        );
    }
    let (_, failed) = app
        .get("/v1/admin/mail?status=failed", &app.admin_key())
        .await;
    assert_eq!(failed["count"], 0, "{failed}");
    let (status, e) = app
        .get("/v1/admin/mail?status=lost", &app.admin_key())
        .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{e}");
    assert!(e["status"].is_array(), "{e}");
    let (status, _) = app.get("/v1/admin/mail", &app.key()).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "a customer");

    // Down again; an order placed, then paid by staff before the server is back: its
    // confirmation says nothing is left to pay, the invoice's own notice (its payment link)
    // is not sent, the receipt is (found by the mail audit: both told what was due, after
    // the receipt).
    smtp.stop();
    // Paid, the account is provisioned: on a fake panel, not in this directory's nginx.
    crate::provisioning::FakeDriver::default().install(&lodge);
    let o = order(&app, "paid-meanwhile.test").await;
    drain(worker.clone()).await;
    let invoice = o["invoice_id"].as_i64().unwrap();
    let (status, p) = app
        .post(
            &format!("/v1/admin/invoices/{invoice}/payments"),
            &app.admin_key(),
            &json!({ "amount": "5.00", "method": "bank_transfer", "reference": "MEANWHILE" }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{p}");
    drain(worker.clone()).await;
    smtp.restart().unwrap();
    app.clock.advance(jiff::SignedDuration::from_hours(1));
    drain(worker.clone()).await;
    let got: Vec<Mail> = smtp.messages().into_iter().skip(2).collect();
    let subjects = subjects(&got);
    assert_eq!(got.len(), 3, "{subjects:?}");
    assert!(
        subjects.contains(&"paid-meanwhile.test is ready".to_owned()),
        "{subjects:?}"
    );
    let confirmation = got
        .iter()
        .find(|m| m.subject().starts_with("Order "))
        .unwrap();
    assert!(
        confirmation.text.contains("Nothing is left to pay"),
        "{}",
        confirmation.text
    );
    assert!(
        !confirmation.text.contains("/pay/"),
        "{}",
        confirmation.text
    );
    assert!(
        got.iter()
            .any(|m| m.subject().starts_with("Payment received")),
        "{subjects:?}"
    );
    app.stop().await;
}

/// A paid account's cancellation is confirmed by mail with the day it takes effect, once;
/// one withdrawn before its mail went out is not told (logged `skipped`); a refund says how
/// much went back and where. The account's welcome names what it is.
async fn a_cancellation_and_a_refund_are_told_and_a_withdrawn_one_is_not(app: TestApp) {
    let Some(smtp) = SmtpServer::start() else {
        return app.stop().await;
    };
    let (_, worker, o, id) = mailed_account(&app, &smtp, "leaving.test").await;
    assert_eq!(smtp.messages()[2].subject(), "leaving.test is ready");
    let paid_until = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();

    // Asked and withdrawn before the worker ran: nothing told.
    let (status, c) = crate::harness::cancel(&app, &id, "end_of_period").await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let (status, r) = crate::harness::revoke_cancellation(&app, &id).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    drain(worker.clone()).await;
    assert_eq!(smtp.messages().len(), 3, "{:?}", subjects(&smtp.messages()));
    let skipped = logged(&app, "hosting_cancellation_requested").await;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].status, "skipped", "{skipped:?}");

    // Asked again: confirmed, with the day it ends.
    let (status, c) = crate::harness::cancel(&app, &id, "end_of_period").await;
    assert_eq!(status, StatusCode::OK, "{c}");
    drain(worker.clone()).await;
    let got = smtp.messages();
    assert_eq!(got.len(), 4, "{:?}", subjects(&got));
    assert_eq!(got[3].subject(), "Cancellation of leaving.test");
    assert!(
        got[3]
            .text
            .contains(&format!("at the end of its paid period, on {paid_until}")),
        "{}",
        got[3].text
    );

    // Staff give 2.00 of the first invoice back to credit: told, with where it went.
    let invoice = o["invoice_id"].as_i64().unwrap();
    let (status, r) = app
        .post(
            &format!("/v1/admin/invoices/{invoice}/refunds"),
            &app.admin_key(),
            &json!({ "amount": "2.00", "to": "credit", "reason": "Goodwill: outage" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    drain(worker.clone()).await;
    let got = smtp.messages();
    assert_eq!(got.len(), 5, "{:?}", subjects(&got));
    let inv = crate::harness::invoice(&app, invoice).await;
    let number = str_of(&inv, "number");
    assert_eq!(
        got[4].subject(),
        format!("Refund of 2.00 USD: invoice {number}")
    );
    assert!(
        got[4].text.contains("given back to your account credit"),
        "{}",
        got[4].text
    );
    assert!(
        !got[4].text.contains("Goodwill"),
        "staff's reason is theirs: {}",
        got[4].text
    );

    // Withdrawn, asked again, withdrawn and asked again before the worker ran: one
    // confirmation, of the last request (found by review: two, contradicting each other).
    // Withdrawn by staff: the customer may not, once refunded since the cancellation.
    let revoke = format!(
        "/v1/organizations/{}/projects/{}/hosting/{id}/revoke-cancellation",
        app.org_id(),
        app.project_id()
    );
    for _ in 0..2 {
        app.clock.advance(jiff::SignedDuration::from_secs(60));
        let (status, r) = app.post(&revoke, &app.admin_key(), &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        let (status, c) = crate::harness::cancel(&app, &id, "end_of_period").await;
        assert_eq!(status, StatusCode::OK, "{c}");
    }
    drain(worker.clone()).await;
    let got = smtp.messages();
    assert_eq!(got.len(), 6, "{:?}", subjects(&got));
    assert_eq!(got[5].subject(), "Cancellation of leaving.test");
    let skipped: Vec<_> = logged(&app, "hosting_cancellation_requested")
        .await
        .into_iter()
        .filter(|r| r.status == "skipped")
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    // Staff cannot send one of those again: what it told is no longer so.
    let (status, body) = resend(&app, skipped[0].id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("not sent again"),
        "{body}"
    );

    // The customer pays the first invoice again by transfer (to credit): its receipt, sent
    // again, tells what paid it, not that transfer (found by review: counted as received).
    let (status, p) = app
        .post(
            &format!("/v1/admin/invoices/{invoice}/payments"),
            &app.admin_key(),
            &json!({ "amount": "5.00", "method": "bank_transfer", "reference": "TWICE-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let receipt = logged(&app, "invoice_paid").await.remove(0);
    let (status, body) = resend(&app, receipt.id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    drain(worker.clone()).await;
    let got = smtp.messages();
    assert_eq!(got.len(), 7, "{:?}", subjects(&got));
    assert!(
        got[6].subject().starts_with("Payment received: invoice"),
        "{}",
        got[6].subject()
    );
    assert!(
        !got[6].text.contains("added to your account credit"),
        "{}",
        got[6].text
    );
    assert!(
        got[6].text.contains("Paid from your credit: 5.00 USD"),
        "{}",
        got[6].text
    );
    for m in &got {
        assert_footer(m);
    }
    app.stop().await;
}

/// An end-of-period cancellation whose account staff terminated before its confirmation went
/// out is not told (its date to come and its withdrawal would be false; found by the
/// recheck): the termination is.
async fn a_cancellation_overtaken_by_a_termination_is_not_told(app: TestApp) {
    let Some(smtp) = SmtpServer::start() else {
        return app.stop().await;
    };
    let (lodge, worker, _, id) = mailed_account(&app, &smtp, "overtaken.test").await;
    let (status, c) = crate::harness::cancel(&app, &id, "end_of_period").await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let (status, t) = app
        .post(
            &format!("/v1/admin/hosting/{id}/terminate"),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{t}");
    // The termination runs first (the mail lane is apart; here, drained after it).
    let jobs_worker =
        Worker::new(lodge.clone(), "node-1").on_lane(lodge_services::provisioning::Lane::Rest);
    drain(jobs_worker).await;
    assert_eq!(hosting(&app, &id).await["status"], "terminated");
    drain(worker.clone()).await;
    drain(worker.clone()).await;
    let got = smtp.messages();
    let s = subjects(&got);
    assert!(
        !s.contains(&"Cancellation of overtaken.test".to_owned()),
        "{s:?}"
    );
    assert!(
        s.contains(&"overtaken.test is terminated".to_owned()),
        "{s:?}"
    );
    let skipped = logged(&app, "hosting_cancellation_requested").await;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].status, "skipped", "{skipped:?}");
    app.stop().await;
}

/// A recipient the SMTP server refuses for good (`550`: no such mailbox) is not retried for
/// hours: the job is dead after its one attempt, and the log says why (found by the mail
/// audit: 14 attempts over five and a half hours).
async fn a_recipient_refused_for_good_is_not_tried_again(app: TestApp) {
    let Some(smtp) = SmtpServer::start_refusing_recipients() else {
        return app.stop().await;
    };
    let lodge = with_mail(&app, settings(smtp.port, None)).await;
    let worker = Worker::new(lodge.clone(), "node-1");
    order(&app, "refused.test").await;
    assert_eq!(drain(worker.clone()).await, 2);
    let jobs = lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), JOB_MAIL)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    for j in &jobs {
        assert_eq!(j.status, lodge_core::JobStatus::Dead, "{j:?}");
        assert_eq!(j.attempts, 1, "{j:?}");
        assert!(
            j.last_error.as_deref().unwrap_or("").contains("550"),
            "{j:?}"
        );
    }
    for r in log(&app).await {
        assert_eq!(r.status, "failed", "{r:?}");
    }
    app.clock.advance(jiff::SignedDuration::from_hours(1));
    assert_eq!(drain(worker.clone()).await, 0, "not tried again");
    app.expect_dead_jobs("the SMTP server refuses the recipient");
    app.stop().await;
}

/// The SMTP server is among the services a node checks when it starts (logged: a wrong host,
/// port or password shows then, not at the first customer's mail): answering, down, and
/// accepting but never answering.
async fn the_smtp_server_is_checked_when_a_node_starts(app: TestApp) {
    let Some(mut smtp) = SmtpServer::start() else {
        return app.stop().await;
    };
    let smtp_check = |lodge: Lodge| async move {
        lodge
            .check_services()
            .await
            .into_iter()
            .find(|(s, _)| *s == "smtp")
            .map(|(_, outcome)| outcome)
            .expect("smtp is checked")
    };
    let lodge = with_mail(&app, settings(smtp.port, None)).await;
    let ok = smtp_check(lodge.clone()).await;
    assert!(ok.is_ok(), "{ok:?}");
    assert!(smtp.messages().is_empty(), "nothing is sent");
    smtp.stop();
    let down = smtp_check(lodge).await.unwrap_err();
    assert!(down.contains(&format!("127.0.0.1:{}", smtp.port)), "{down}");

    let (port, _) = crate::harness::silent_server();
    let mut silent = settings(port, None);
    silent.timeout = Duration::from_secs(2);
    let silent = smtp_check(with_mail(&app, silent).await).await.unwrap_err();
    assert!(silent.contains(&format!("127.0.0.1:{port}")), "{silent}");
    // Mail off: not checked.
    assert!(app
        .lodge
        .check_services()
        .await
        .iter()
        .all(|(s, _)| *s != "smtp"));
    app.stop().await;
}

/// A node stopping in the middle of a round (its first mail waiting on an SMTP server that
/// accepted and never answers) starts no other mail: once the first has ended (its
/// timeout), the round's unstarted mail is handed back to the queue at once, in order
/// (another node sends it now, not when its lease ends two minutes later, and never before
/// the one claimed ahead of it).
async fn a_stopping_worker_hands_back_the_jobs_it_has_not_started(app: TestApp) {
    use std::sync::atomic::Ordering;
    let (port, accepted) = crate::harness::silent_server();
    let mut silent = settings(port, None);
    silent.timeout = Duration::from_secs(3);
    let lodge = with_mail(&app, silent).await;
    order(&app, "stopping.test").await;

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let worker = Worker::new(lodge.clone(), "node-1");
    let running = tokio::spawn(worker.run(
        stopping,
        Duration::from_millis(20),
        Duration::from_secs(3600),
    ));
    let jobs = || async {
        lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), JOB_MAIL)
            .await
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no mail was started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let claimed = jobs().await;
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert!(
        claimed
            .iter()
            .all(|j| j.status == lodge_core::JobStatus::Running),
        "both claimed in one round: {claimed:?}"
    );
    let (first, second) = (
        claimed[0].id.min(claimed[1].id),
        claimed[0].id.max(claimed[1].id),
    );

    stop.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let now = jobs().await;
    assert!(
        now.iter()
            .all(|j| j.status == lodge_core::JobStatus::Running),
        "the second waits for the first: {now:?}"
    );
    // The round ends once the first mail has timed out; the worker stops.
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the worker stops once its running job ends")
        .unwrap();
    let now = jobs().await;
    let by_id = |id: i64| now.iter().find(|j| j.id == id).unwrap().clone();
    let (first, second) = (by_id(first), by_id(second));
    assert_eq!(first.attempts, 1, "the first was tried: {first:?}");
    assert!(first.last_error.is_some(), "{first:?}");
    assert_eq!(second.status, lodge_core::JobStatus::Queued, "{second:?}");
    assert_eq!(second.locked_by, None, "{second:?}");
    assert_eq!(second.locked_until, None, "{second:?}");
    assert_eq!(second.attempts, 0, "not an attempt: {second:?}");
    assert_eq!(second.last_error, None, "{second:?}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the second never started"
    );
    // A server that never greeted was sent nothing: `failed`, not `unknown`, so that its
    // delivery later is no possible duplicate (found by the re-check).
    let rows = log(&app).await;
    let tried: Vec<_> = rows.iter().filter(|r| r.job_id == Some(first.id)).collect();
    assert_eq!(tried.len(), 1, "{rows:?}");
    assert_eq!(tried[0].status, "failed", "{rows:?}");
    assert!(!tried[0].possible_duplicate, "{rows:?}");
    app.stop().await;
}

/// Found by the mail audit: staff could create a user whose name held a line break, and
/// its first mail panicked the worker (lettre refuses such a header when it renders),
/// again after every restart. Such a name is now refused; one stored before is sent on
/// one line.
async fn a_name_with_a_line_break_is_refused_and_one_stored_before_is_mailed_on_one_line(
    app: TestApp,
) {
    let Some(smtp) = SmtpServer::start() else {
        return app.stop().await;
    };
    let (status, body) = app
        .post(
            "/v1/admin/users",
            &app.admin_key(),
            &json!({ "email": "bob@b.test", "name": "Bob\r\nBcc: spy@attacker.test" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        crate::harness::messages(&body, "name").contains("Control characters"),
        "{body}"
    );
    sqlx::query("UPDATE users SET name = $1 WHERE email = $2")
        .bind("Ann\r\nBcc: spy@attacker.test")
        .bind(OWNER)
        .execute(app.lodge.store.writer())
        .await
        .unwrap();
    let lodge = with_mail(&app, settings(smtp.port, None)).await;
    let worker = Worker::new(lodge.clone(), "node-1");
    order(&app, "one-line.test").await;
    assert_eq!(drain(worker.clone()).await, 2);
    let got = smtp.messages();
    assert_eq!(got.len(), 2, "{:?}", subjects(&got));
    for m in &got {
        assert!(m.to().contains(OWNER), "{}", m.to());
        let head = m.text.replace("\r\n", "\n");
        let head = head.split("\n\n").next().unwrap_or_default();
        assert!(!head.lines().any(|l| l.starts_with("Bcc:")), "{head}");
        assert!(!head.contains("X-RcptTo: spy"), "{head}");
    }
    app.stop().await;
}

async fn with_mail_off_no_mail_job_is_made(app: TestApp) {
    // Another test of this process may have mail on: this database says off.
    order(&app, "quiet.test").await;
    let jobs = lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), JOB_MAIL)
        .await
        .unwrap();
    assert!(jobs.is_empty(), "{jobs:?}");
    let events =
        lodge_store::events::recent(&mut app.lodge.store.read_conn().await.unwrap(), None, 10)
            .await
            .unwrap();
    assert_eq!(events.len(), 2, "events are still recorded: {events:?}");
    app.stop().await;
}

mod templates_overridden {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        crate::harness::run(Engine::Sqlite, Default::default(), run).await;
    }

    /// A file in the templates directory replaces the built-in one of the same name; the
    /// others stay.
    async fn run(app: TestApp) {
        let Some(smtp) = SmtpServer::start() else {
            return app.stop().await;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("order_created.txt"),
            "{% extends \"layout.txt\" %}{% block subject %}Bestelling {{ order.number }}{% endblock %}\
             {% block body %}Te betalen: {{ order.amount_due }} voor {{ order.domain }}{% endblock %}",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("layout.html"),
            "<html><body>{% block body %}{% endblock %}<p>Groeten, {{ installation.name }}</p></body></html>",
        )
        .unwrap();
        let lodge = with_mail(&app, settings(smtp.port, Some(dir.path().to_owned()))).await;
        let worker = Worker::new(lodge.clone(), "node-1");
        order(&app, "eigen.test").await;
        drain(worker).await;
        let got = smtp.messages();
        assert_eq!(got.len(), 2, "{:?}", subjects(&got));
        let confirmation = got
            .iter()
            .find(|m| m.subject().starts_with("Bestelling ORD-"))
            .unwrap_or_else(|| panic!("{:?}", subjects(&got)));
        assert!(
            confirmation
                .text
                .contains("Te betalen: 5.00 USD voor eigen.test"),
            "{}",
            confirmation.text
        );
        assert!(confirmation.text.contains("Groeten, Acme Hosting"));
        let invoice = got
            .iter()
            .find(|m| m.subject().starts_with("Invoice "))
            .unwrap();
        assert!(
            invoice.text.contains("Amount due: 5.00 USD"),
            "the default text"
        );
        assert!(
            invoice.text.contains("Groeten, Acme Hosting"),
            "the new layout"
        );
        app.stop().await;
    }
}

mod a_lost_answer {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        crate::harness::run(Engine::Sqlite, Default::default(), run).await;
    }

    /// The server accepts the first message but its answer comes after Lodge gave up: the
    /// job is retried and the message sent again with the same Message-ID, the one accepted
    /// duplicate, recorded as such.
    async fn run(app: TestApp) {
        let Some(smtp) = SmtpServer::start_slow_first_answer(4) else {
            return app.stop().await;
        };
        let lodge = with_mail(
            &app,
            MailSettings {
                timeout: Duration::from_secs(1),
                ..settings(smtp.port, None)
            },
        )
        .await;
        let worker = Worker::new(lodge.clone(), "node-1");
        order(&app, "twice.test").await;
        assert_eq!(drain(worker.clone()).await, 2);
        let rows = log(&app).await;
        let lost = rows
            .iter()
            .find(|r| r.status == "unknown")
            .unwrap_or_else(|| panic!("{rows:#?}"));
        let other = rows
            .iter()
            .find(|r| r.message_id != lost.message_id)
            .unwrap();
        assert_eq!(other.status, "sent", "{rows:?}");
        assert_eq!(smtp.messages().len(), 2, "both arrived");

        app.clock.advance(jiff::SignedDuration::from_secs(15));
        assert_eq!(drain(worker.clone()).await, 1, "the lost one is retried");
        let got = smtp.messages();
        assert_eq!(got.len(), 3, "{:?}", subjects(&got));
        let same: Vec<_> = got
            .iter()
            .filter(|m| m.message_id() == lost.message_id)
            .collect();
        assert_eq!(same.len(), 2, "the duplicate carries the same Message-ID");
        let rows = log(&app).await;
        let again = rows
            .iter()
            .find(|r| r.message_id == lost.message_id)
            .unwrap();
        assert_eq!((again.status.as_str(), again.attempts), ("sent", 2));
        assert!(again.possible_duplicate, "{again:?}");
        let other = rows
            .iter()
            .find(|r| r.message_id != lost.message_id)
            .unwrap();
        assert!(!other.possible_duplicate, "{other:?}");

        app.clock.advance(jiff::SignedDuration::from_hours(1));
        assert_eq!(drain(worker.clone()).await, 0);
        assert_eq!(smtp.messages().len(), 3);
        app.stop().await;
    }
}
