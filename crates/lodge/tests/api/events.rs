//! Events (the outbox every notice and webhook is made from): each is recorded in the
//! transaction of what it tells, once, with the amounts of the moment.

use lodge_services::provisioning::Worker;
use lodge_store::events::EventRow;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{add_credit, hosting, str_of, TestApp};
use crate::on_both_engines;
use crate::provisioning::{drain, noon, FakeDriver};

on_both_engines!(
    an_account_lifecycle_records_each_event_once,
    a_refused_order_records_nothing,
    a_cancelled_invoice_is_told,
    a_cancellation_asked_for_and_withdrawn_is_told,
);

/// The demo organization's events, oldest first: `(kind, subject, data)`.
async fn events(app: &TestApp) -> Vec<(String, String, Value)> {
    let mut db = app.lodge.store.read_conn().await.unwrap();
    let org = app.org_id().parse().unwrap();
    let mut rows: Vec<EventRow> = lodge_store::events::recent(&mut db, Some(org), 1000)
        .await
        .unwrap();
    rows.reverse();
    rows.into_iter()
        .map(|e| (e.kind, e.subject, serde_json::from_str(&e.data).unwrap()))
        .collect()
}

fn kinds(all: &[(String, String, Value)]) -> Vec<&str> {
    all.iter().map(|(k, _, _)| k.as_str()).collect()
}

fn order_path(app: &TestApp) -> String {
    format!(
        "/v1/organizations/{}/projects/{}/hosting/order",
        app.org_id(),
        app.project_id()
    )
}

async fn an_account_lifecycle_records_each_event_once(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    add_credit(&app, &app.org_id(), "5.00").await;
    let body = json!({ "plan_id": crate::harness::starter(&app), "domain_source": "external",
                       "domain_name": "told.test", "billing_cycle": "monthly" });
    let (status, o) = app.post(&order_path(&app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    let id = str_of(&o, "hosting_id").to_owned();
    let all = events(&app).await;
    assert_eq!(
        kinds(&all),
        [
            "credit.adjusted",
            "order.created",
            "invoice.created",
            "invoice.paid"
        ],
        "{all:?}"
    );
    // Staff's deposit, told so a mirror of the balance holds (found by the integrator
    // audit); then the order.
    assert_eq!(all[0].2["amount_minor"], 500, "{all:?}");
    assert_eq!(all[0].2["balance_minor"], 500, "{all:?}");
    assert_eq!(all[0].2["by"], "staff", "{all:?}");
    let all = all[1..].to_vec();
    assert_eq!(all[0].2["total_minor"], 500, "{all:?}");
    assert_eq!(all[1].2["kind"], "first", "{all:?}");
    drain(worker.clone()).await;
    let all = events(&app).await[1..].to_vec();
    assert_eq!(kinds(&all)[3..], ["hosting.active"], "{all:?}");
    assert_eq!(all[3].1, format!("hosting:{id}"));
    assert_eq!(all[3].2["domain"], "told.test");

    // The renewal: issued at −14 days (unpaid), a reminder at −3, overdue the day after
    // its due date, suspended at +7; every pass in between tells nothing twice.
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    for day in -14..=8 {
        app.clock.set(noon(&due, day));
        app.lodge.schedule_due().await.unwrap();
        drain(worker.clone()).await;
    }
    let all = events(&app).await[1..].to_vec();
    assert_eq!(
        kinds(&all)[4..],
        [
            "invoice.created",
            "invoice.reminder",
            "invoice.overdue",
            "hosting.suspended"
        ],
        "{all:?}"
    );
    let renewal = &all[4].2;
    assert_eq!(renewal["kind"], "renewal");
    assert_eq!(renewal["amount_due_minor"], 500);
    let invoice = renewal["invoice_id"].as_i64().unwrap();
    let suspend_on: jiff::civil::Date =
        due.parse::<jiff::civil::Date>().unwrap() + jiff::Span::new().days(7);
    assert_eq!(all[6].2["suspend_on"], suspend_on.to_string(), "{all:?}");

    // Paid: the payment is received (in part first), then invoice.paid, and the account is
    // unsuspended.
    let (status, p) = app
        .post(
            &format!("/v1/admin/invoices/{invoice}/payments"),
            &app.admin_key(),
            &json!({ "amount": "1.50", "method": "bank_transfer", "reference": "EVT-0" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let all = events(&app).await[1..].to_vec();
    assert_eq!(kinds(&all)[8..], ["payment.received"], "{all:?}");
    let received = &all[8].2;
    assert_eq!(received["invoice_id"], invoice, "{received}");
    assert_eq!(received["amount_minor"], 150, "{received}");
    assert_eq!(received["method"], "bank_transfer", "{received}");
    assert_eq!(received["reference"], "EVT-0", "{received}");
    assert_eq!(received["amount_due_minor"], 350, "{received}");
    assert_eq!(received["to_credit_minor"], 0, "{received}");
    let (status, p) = app
        .post(
            &format!("/v1/admin/invoices/{invoice}/payments"),
            &app.admin_key(),
            &json!({ "amount": "4.00", "method": "bank_transfer", "reference": "EVT-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    drain(worker.clone()).await;
    let all = events(&app).await[1..].to_vec();
    assert_eq!(
        kinds(&all)[9..],
        ["payment.received", "invoice.paid", "hosting.unsuspended"],
        "{all:?}"
    );
    assert_eq!(all[9].2["to_credit_minor"], 50, "beyond what was due");
    assert_eq!(all[10].2["paid_minor"], 500);

    // A refund of it to credit.
    let (status, r) = app
        .post(
            &format!("/v1/admin/invoices/{invoice}/refunds"),
            &app.admin_key(),
            &json!({ "amount": "2.00", "to": "credit", "reason": "goodwill" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    let all = events(&app).await[1..].to_vec();
    assert_eq!(kinds(&all)[12..], ["payment.refunded"], "{all:?}");
    assert_eq!(all[12].2["amount_minor"], 200);
    assert_eq!(all[12].2["to"], "credit");

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
    let all = events(&app).await[1..].to_vec();
    assert_eq!(kinds(&all)[13..], ["hosting.terminated"], "{all:?}");
    app.stop().await;
}

async fn a_refused_order_records_nothing(app: TestApp) {
    let body = json!({ "plan_id": crate::harness::starter(&app), "domain_source": "external",
                       "domain_name": "not a name", "billing_cycle": "monthly" });
    let (status, o) = app.post(&order_path(&app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{o}");
    assert!(events(&app).await.is_empty());
    app.stop().await;
}

/// An unpaid order cancelled by its customer: `invoice.cancelled` tells integrators the
/// invoice will not be paid (it was told by nothing), with what was paid on it, which went
/// back to credit.
async fn a_cancelled_invoice_is_told(app: TestApp) {
    let body = json!({ "plan_id": crate::harness::starter(&app), "domain_source": "external",
                       "domain_name": "never-paid.test", "billing_cycle": "monthly" });
    let (status, o) = app.post(&order_path(&app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    let id = str_of(&o, "hosting_id").to_owned();
    let invoice = o["invoice_id"].as_i64().unwrap();
    let (status, p) = app
        .post(
            &format!("/v1/admin/invoices/{invoice}/payments"),
            &app.admin_key(),
            &json!({ "amount": "2.00", "method": "bank_transfer", "reference": "PART-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let (status, c) = app
        .post(
            &format!("{}/cancel", crate::harness::hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "immediate" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let all = events(&app).await;
    assert_eq!(
        kinds(&all),
        [
            "order.created",
            "invoice.created",
            "payment.received",
            "invoice.cancelled",
            "order.cancelled"
        ],
        "{all:?}"
    );
    let cancelled = &all[3].2;
    assert_eq!(cancelled["invoice_id"], invoice, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["paid_minor"], 200, "{cancelled}");
    // Nothing is due on it any more, as the API says (found by the integrator audit).
    assert_eq!(cancelled["amount_due_minor"], 0, "{cancelled}");
    // And the order's end, told as its creation was (found by the integrator audit).
    let (_, subject, order) = &all[4];
    assert_eq!(subject, &format!("order:{}", o["order_id"]), "{order}");
    assert_eq!(order["order_id"], o["order_id"], "{order}");
    assert_eq!(order["hosting_id"], id.as_str(), "{order}");
    assert_eq!(order["domain"], "never-paid.test", "{order}");
    assert_eq!(order["by"], "customer", "{order}");
    app.stop().await;
}

/// A paid account's cancellation asked for at the end of its period, withdrawn, then asked
/// for at once: each is told (found by the integrator audit: a mirror of accounts could not
/// tell one that would end from one that would renew).
async fn a_cancellation_asked_for_and_withdrawn_is_told(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    add_credit(&app, &app.org_id(), "5.00").await;
    let body = json!({ "plan_id": crate::harness::starter(&app), "domain_source": "external",
                       "domain_name": "leaving.test", "billing_cycle": "monthly" });
    let (status, o) = app.post(&order_path(&app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    let id = str_of(&o, "hosting_id").to_owned();
    drain(worker.clone()).await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    let before = events(&app).await.len();

    let (status, c) = crate::harness::cancel(&app, &id, "end_of_period").await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let (status, r) = crate::harness::revoke_cancellation(&app, &id).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    // A second withdrawal is refused and tells nothing.
    let (status, r) = crate::harness::revoke_cancellation(&app, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    let (status, c) = crate::harness::cancel(&app, &id, "immediate").await;
    assert_eq!(status, StatusCode::OK, "{c}");
    drain(worker.clone()).await;
    let all = events(&app).await[before..].to_vec();
    assert_eq!(
        kinds(&all),
        [
            "hosting.cancellation_requested",
            "hosting.cancellation_withdrawn",
            "hosting.cancellation_requested",
            "hosting.terminated"
        ],
        "{all:?}"
    );
    for (_, subject, data) in &all {
        assert_eq!(subject, &format!("hosting:{id}"));
        assert_eq!(data["hosting_id"], id.as_str(), "{data}");
        assert_eq!(data["domain"], "leaving.test", "{data}");
    }
    let at_end = &all[0].2;
    assert_eq!(at_end["type"], "end_of_period", "{at_end}");
    assert_eq!(at_end["effective_date"], due.as_str(), "{at_end}");
    assert_eq!(at_end["reason"], "x", "{at_end}");
    assert_eq!(at_end["by"], "customer", "{at_end}");
    assert_eq!(all[1].2["by"], "customer", "{all:?}");
    let now = &all[2].2;
    assert_eq!(now["type"], "immediate", "{now}");
    assert_eq!(
        now["effective_date"],
        app.lodge.today().to_string(),
        "{now}"
    );
    app.stop().await;
}
