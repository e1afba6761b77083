//! Plan changes through `/v1` (`…/hosting/{id}/change-plan`): prorated upgrades invoiced and
//! applied when paid (at once when credit covers them), downgrades credited and applied at
//! once, the due date kept, the driver's `change_package` job, and the refusals.
//!
//! The expected amounts are worked out by hand here, not with Lodge's proration function.
//! Every test starts on 2026-03-31 (the harness's clock): a monthly account ordered and paid
//! that day has the period 2026-03-31 to 2026-04-30, 30 days.

use std::sync::{Arc, Mutex};

use futures::future::join_all;
use jiff::SignedDuration;
use lodge_services::drivers::nginx::{NginxConfig, NginxDriver};
use lodge_services::drivers::{Account, DriverError, Provisioner};
use lodge_services::provisioning::Worker;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{
    add_credit, assert_detail, cents, get_ok, hosting, hosting_path, invoice, messages,
    other_tenant, plan_id, start_time, str_of, TestApp,
};
use crate::on_both_engines;

on_both_engines!(
    an_upgrade_mid_period_is_invoiced_and_applied_when_paid,
    credit_covering_an_upgrade_applies_it_at_once,
    a_downgrade_gives_credit_and_applies_at_once,
    staff_acting_through_customer_routes_are_recorded_as_staff,
    refused_changes_change_nothing,
    a_retried_change_with_its_idempotency_key_charges_once,
    concurrent_changes_of_one_account_one_wins,
    a_late_payment_of_an_ended_accounts_upgrade_applies_nothing_and_goes_to_credit,
    an_upgrade_paid_after_its_period_ended_goes_back_to_credit,
    an_upgrade_paid_from_credit_on_its_payment_page_is_applied,
    a_failing_change_package_job_is_retried,
    a_change_after_the_next_period_was_billed_renews_at_the_new_price,
    an_upgrade_in_the_lead_time_reprices_the_unpaid_renewal,
    a_downgrade_returns_the_credit_applied_beyond_the_repriced_renewal,
    an_upgrade_paid_after_the_renewal_was_paid_invoices_the_difference,
    an_unpaid_difference_suspends_as_a_renewal_does,
    an_unpaid_difference_is_cancelled_when_its_period_ends,
    a_lapsed_difference_lifts_its_suspension_while_a_late_warned_renewal_is_in_its_grace,
    a_plan_sold_once_per_organization_is_not_reached_by_changes,
    a_discounted_period_is_prorated_from_what_was_paid,
    a_downgrade_after_a_refund_gives_back_only_what_was_kept,
    what_a_downgrade_gave_back_is_not_refunded_again,
    a_downgrade_gives_back_a_paid_difference_first,
    an_upgrade_left_unpaid_past_the_invoice_expiry_lapses,
    an_upgrade_invoice_is_withdrawn_by_its_customer_or_by_staff,
    an_upgrade_unpaid_when_its_period_ended_gives_way_to_a_new_change,
    a_waiting_upgrade_of_a_terminated_account_gives_its_credit_back,
    a_change_past_the_unpaid_due_date_says_the_renewal_is_unpaid,
    changes_racing_up_and_down_record_the_plan_they_moved_from,
    an_unpaid_difference_ends_with_an_immediate_cancellation,
    plans_priced_in_millions_change_like_any_other,
    an_upgrade_paid_from_credit_that_also_covers_its_difference_keeps_the_ledger_running,
    a_payment_whose_upgrade_spends_credit_on_its_difference_is_refused_whole,
);

// ---- helpers ----

/// A driver that records the packages it is asked to apply; registered as `nginx`, so the
/// demo server `local-nginx` uses it.
#[derive(Debug, Clone, Default)]
struct PackageDriver(Arc<Mutex<Vec<(String, String)>>>, Arc<Mutex<usize>>);

impl PackageDriver {
    fn install(app: &TestApp) -> Self {
        let d = PackageDriver::default();
        app.lodge.drivers.register(Arc::new(d.clone()));
        d
    }

    /// The next `n` `change_package` calls fail.
    fn fail_next(&self, n: usize) {
        *self.1.lock().unwrap() = n;
    }

    /// `(username, package)` of each successful `change_package` call, in order.
    fn changes(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Provisioner for PackageDriver {
    fn name(&self) -> &str {
        "nginx"
    }
    async fn create(&self, _a: &Account) -> Result<(), DriverError> {
        Ok(())
    }
    async fn suspend(&self, _a: &Account) -> Result<(), DriverError> {
        Ok(())
    }
    async fn unsuspend(&self, _a: &Account) -> Result<(), DriverError> {
        Ok(())
    }
    async fn terminate(&self, _a: &Account) -> Result<(), DriverError> {
        Ok(())
    }
    async fn change_package(&self, a: &Account, package: &str) -> Result<(), DriverError> {
        {
            let mut failures = self.1.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(DriverError("the panel is down".into()));
            }
        }
        self.0
            .lock()
            .unwrap()
            .push((a.username.clone(), package.to_owned()));
        Ok(())
    }
    async fn change_password(&self, _a: &Account, _p: &str) -> Result<(), DriverError> {
        Ok(())
    }
    async fn login_url(&self, _a: &Account) -> Result<Option<String>, DriverError> {
        Ok(None)
    }
}

/// Noon UTC of a `YYYY-MM-DD` date.
fn noon(date: &str) -> jiff::Timestamp {
    let d: jiff::civil::Date = date.parse().unwrap();
    d.to_zoned(jiff::tz::TimeZone::UTC).unwrap().timestamp() + SignedDuration::from_hours(12)
}

fn order_path(app: &TestApp) -> String {
    format!(
        "/v1/organizations/{}/projects/{}/hosting/order",
        app.org_id(),
        app.project_id()
    )
}

fn change_path(app: &TestApp, id: &str) -> String {
    format!("{}/change-plan", hosting_path(app, id))
}

/// Orders `domain` on `plan` (monthly unless `cycle`), paid from the credit deposited first
/// (`credit`), and provisions it: an active account; returns its id.
async fn active_account(
    app: &TestApp,
    worker: &Worker,
    plan: &str,
    cycle: &str,
    domain: &str,
    credit: &str,
) -> String {
    if cents(&json!(credit)) > 0 {
        add_credit(app, &app.org_id(), credit).await;
    }
    let body = json!({ "plan_id": plan_id(app, plan), "domain_source": "external",
                       "domain_name": domain, "billing_cycle": cycle });
    let (status, o) = app.post(&order_path(app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "order {domain}: {o}");
    assert_eq!(o["status"], "active", "paid from credit: {o}");
    let id = str_of(&o, "hosting_id").to_owned();
    worker.run_once().await.unwrap();
    let h = hosting(app, &id).await;
    assert_eq!(h["status"], "active", "provisioned: {h}");
    id
}

/// A Starter account (monthly, from 2026-03-31) upgraded to Business on 2026-04-20, once
/// its renewal from 2026-04-30 was issued, that renewal then paid at the old price by a
/// transfer (`reference`): the account's id and the change's answer (its invoice, 1.67,
/// unpaid).
async fn upgraded_with_its_renewal_paid(
    app: &TestApp,
    worker: &Worker,
    domain: &str,
    reference: &str,
) -> (String, Value) {
    let id = active_account(app, worker, "Starter", "monthly", domain, "5.00").await;
    app.clock.set(noon("2026-04-20"));
    app.lodge.schedule_due().await.unwrap();
    let renewal = renewal_of(app, &id, "2026-04-30").await;
    let body = changed(app, &id, &plan_id(app, "Business")).await;
    pay(app, renewal, "5.00", reference).await;
    (id, body)
}

async fn change(app: &TestApp, id: &str, plan: &str) -> (StatusCode, Value) {
    app.post(
        &change_path(app, id),
        &app.key(),
        &json!({ "plan_id": plan }),
    )
    .await
}

/// A change that must be accepted.
async fn changed(app: &TestApp, id: &str, plan: &str) -> Value {
    let (status, body) = change(app, id, plan).await;
    assert_eq!(status, StatusCode::OK, "change to {plan}: {body}");
    body
}

async fn balance(app: &TestApp) -> i64 {
    let c = get_ok(app, &format!("/v1/organizations/{}/credit", app.org_id())).await;
    cents(&c["balance"])
}

/// The `kind` jobs queued or done, from the database.
async fn jobs_of(app: &TestApp, kind: &str) -> Vec<lodge_store::jobs::JobRow> {
    lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), kind)
        .await
        .unwrap()
}

/// The notes of an account's history entries.
fn notes(h: &Value) -> Vec<String> {
    h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} ({})", str_of(e, "note"), str_of(e, "actor")))
        .collect()
}

/// Staff record a payment of `amount` for an invoice.
async fn pay(app: &TestApp, invoice: i64, amount: &str, reference: &str) -> Value {
    let (status, body) = app
        .post(
            &format!("/v1/admin/invoices/{invoice}/payments"),
            &app.admin_key(),
            &json!({ "amount": amount, "method": "bank_transfer", "reference": reference }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Rows of the tables a plan change writes to.
async fn change_counts(app: &TestApp) -> Vec<i64> {
    let mut out = vec![];
    for t in [
        "plan_changes",
        "invoices",
        "invoice_lines",
        "credit_ledger",
        "jobs",
        "hosting_history",
    ] {
        out.push(app.count(t).await);
    }
    out
}

// ---- tests ----

async fn an_upgrade_mid_period_is_invoiced_and_applied_when_paid(app: TestApp) {
    let driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = active_account(&app, &worker, "Starter", "monthly", "up.example", "5.00").await;
    let before = hosting(&app, &id).await;
    assert_eq!(before["next_due_date"], "2026-04-30", "{before}");
    assert_eq!(balance(&app).await, 0);

    // 2026-04-20: 10 of the period's 30 days left. Starter 5.00 → Business 10.00 monthly:
    // 5.00 × 10 / 30 = 1.6666… → 1.67.
    app.clock.set(noon("2026-04-20"));
    let body = changed(&app, &id, &plan_id(&app, "Business")).await;
    let c = &body["plan_change"];
    assert_eq!(c["status"], "awaiting_payment", "{body}");
    assert_eq!(c["period_start"], "2026-03-31", "{body}");
    assert_eq!(c["period_end"], "2026-04-30", "{body}");
    assert_eq!(
        (c["days_left"].as_i64(), c["days_in_period"].as_i64()),
        (Some(10), Some(30))
    );
    assert_eq!(c["old_price"], "5.00", "{body}");
    assert_eq!(c["new_price"], "10.00", "{body}");
    assert_eq!(c["amount"], "1.67", "{body}");
    assert_eq!(c["amount_due"], "1.67", "{body}");
    assert_eq!(c["credit_applied"], "0.00", "{body}");
    assert_eq!(c["credit_given"], "0.00", "{body}");
    assert!(c["invoice_payment_url"].as_str().is_some(), "{body}");
    // Not moved before the invoice is paid.
    assert_eq!(body["hosting"]["plan"]["name"], "Starter", "{body}");
    assert_eq!(body["hosting"]["price"], "5.00", "{body}");
    assert!(jobs_of(&app, "change_package").await.is_empty());

    let inv_id = c["invoice_id"].as_i64().unwrap();
    let inv = invoice(&app, inv_id).await;
    assert_eq!(inv["kind"], "manual", "{inv}");
    assert_eq!(inv["status"], "unpaid", "{inv}");
    assert_eq!(inv["total"], "1.67", "{inv}");
    assert_eq!(inv["number"], c["invoice_number"], "{inv}");
    let lines = inv["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{inv}");
    assert_eq!(lines[0]["kind"], "adjustment", "{inv}");
    assert_eq!(lines[0]["service_id"], id.as_str(), "{inv}");
    assert_eq!(lines[0]["amount"], "1.67", "{inv}");
    assert_eq!(
        lines[0]["description"], "Change to Business, 2026-04-20 to 2026-04-30 (prorated)",
        "{inv}"
    );

    // Paid: the account moves, its due date kept, and the driver is told.
    pay(&app, inv_id, "1.67", "wire-up-1").await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["plan"]["name"], "Business", "{h}");
    assert_eq!(h["price"], "10.00", "renews at the new price: {h}");
    assert_eq!(h["next_due_date"], "2026-04-30", "due date kept: {h}");
    assert_eq!(h["status"], "active", "{h}");
    assert!(
        notes(&h)
            .iter()
            .any(|n| n.starts_with("plan changed: Starter → Business")),
        "{h}"
    );
    assert_eq!(jobs_of(&app, "change_package").await.len(), 1);
    // Told as the customer's change, though staff recorded the payment that applied it
    // (found by the accountant's audit: `staff`).
    let told: Vec<String> = sqlx::query_scalar(
        "SELECT data FROM events WHERE kind = 'hosting.plan_changed' AND subject = $1",
    )
    .bind(format!("hosting:{id}"))
    .fetch_all(app.lodge.store.reader())
    .await
    .unwrap();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains(r#""by":"customer""#), "{told:?}");
    assert_eq!(
        worker.run_once().await.unwrap(),
        1,
        "the change_package job ran"
    );
    let user = str_of(&h, "username").to_owned();
    assert_eq!(driver.changes(), vec![(user, "Business".to_owned())]);
    let h = hosting(&app, &id).await;
    assert!(
        notes(&h)
            .iter()
            .any(|n| n == "package changed to Business (Starter → Business) (worker)"),
        "{h}"
    );
    assert_eq!(worker.run_once().await.unwrap(), 0, "nothing left to run");
    assert_eq!(driver.changes().len(), 1);
    assert_eq!(balance(&app).await, 0, "nothing credited");
    app.stop().await;
}

async fn credit_covering_an_upgrade_applies_it_at_once(app: TestApp) {
    let driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    // 5.00 for the order, 10.00 left on the account.
    let id = active_account(&app, &worker, "Starter", "monthly", "cov.example", "15.00").await;
    assert_eq!(balance(&app).await, 1000);

    // The period's last day: 1 of 30 days, 5.00 / 30 = 0.1666… → 0.17.
    app.clock.set(noon("2026-04-29"));
    let body = changed(&app, &id, "business").await; // by slug
    let c = &body["plan_change"];
    assert_eq!(c["status"], "applied", "{body}");
    assert_eq!(
        (c["days_left"].as_i64(), c["days_in_period"].as_i64()),
        (Some(1), Some(30))
    );
    assert_eq!(c["amount"], "0.17", "{body}");
    assert_eq!(c["credit_applied"], "0.17", "{body}");
    assert_eq!(c["amount_due"], "0.00", "{body}");
    assert!(c["invoice_payment_url"].is_null(), "{body}");
    assert_eq!(body["hosting"]["plan"]["name"], "Business", "{body}");
    assert_eq!(body["hosting"]["price"], "10.00", "{body}");
    assert_eq!(body["hosting"]["next_due_date"], "2026-04-30", "{body}");
    let inv = invoice(&app, c["invoice_id"].as_i64().unwrap()).await;
    assert_eq!(inv["status"], "paid", "{inv}");
    assert_eq!(inv["credit_applied"], "0.17", "{inv}");
    assert_eq!(balance(&app).await, 1000 - 17);

    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(driver.changes().len(), 1);
    app.stop().await;
}

async fn a_downgrade_gives_credit_and_applies_at_once(app: TestApp) {
    let driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    // Business annually: 108.00 and its 9.99 setup fee. The period 2026-03-31 to 2027-03-31
    // has 365 days.
    let id = active_account(
        &app,
        &worker,
        "Business",
        "annually",
        "down.example",
        "117.99",
    )
    .await;
    assert_eq!(balance(&app).await, 0);
    let before = hosting(&app, &id).await;
    assert_eq!(before["next_due_date"], "2027-03-31", "{before}");

    // 2026-07-01: 92 days used (31 March to 30 June: 1 + 30 + 31 + 30), 365 − 92 = 273
    // left. Business 108.00 → Starter 54.00 annually: −54.00 × 273 / 365 = −40.389… →
    // −40.39, credited.
    app.clock.set(noon("2026-07-01"));
    let body = changed(&app, &id, &plan_id(&app, "Starter")).await;
    let c = &body["plan_change"];
    assert_eq!(c["status"], "applied", "{body}");
    assert_eq!(
        (c["days_left"].as_i64(), c["days_in_period"].as_i64()),
        (Some(273), Some(365))
    );
    assert_eq!(c["amount"], "-40.39", "{body}");
    assert_eq!(c["credit_given"], "40.39", "{body}");
    assert!(
        c["invoice_id"].is_null(),
        "no invoice for a downgrade: {body}"
    );
    assert_eq!(body["hosting"]["plan"]["name"], "Starter", "{body}");
    assert_eq!(body["hosting"]["price"], "54.00", "{body}");
    assert_eq!(
        body["hosting"]["next_due_date"], "2027-03-31",
        "due date kept: {body}"
    );
    assert_eq!(balance(&app).await, 4039);
    let credit = get_ok(&app, &format!("/v1/organizations/{}/credit", app.org_id())).await;
    let last = &credit["results"][0];
    assert_eq!(last["kind"], "adjustment", "{credit}");
    assert_eq!(last["amount"], "40.39", "{credit}");

    assert_eq!(worker.run_once().await.unwrap(), 1);
    let user = str_of(&body["hosting"], "username").to_owned();
    assert_eq!(driver.changes(), vec![(user, "Starter".to_owned())]);
    // Told to integrators once (found by the integrator audit: a CRM kept the old plan).
    let told: Vec<String> = sqlx::query_scalar(
        "SELECT data FROM events WHERE kind = 'hosting.plan_changed' AND subject = $1",
    )
    .bind(format!("hosting:{id}"))
    .fetch_all(app.lodge.store.reader())
    .await
    .unwrap();
    assert_eq!(told.len(), 1, "{told:?}");
    let told: Value = serde_json::from_str(&told[0]).unwrap();
    assert_eq!(told["to_plan_id"], plan_id(&app, "Starter"), "{told}");
    assert_eq!(told["new_price_minor"], 5400, "{told}");
    assert_eq!(told["charge_minor"], -4039, "{told}");
    assert_eq!(told["by"], "customer", "{told}");
    // The ledger sums to the balance: checked when the test ends (shutdown checks).
    app.stop().await;
}

/// Staff acting on an account through the customer's routes (their admin key counts as an
/// owner there): the plan change and the cancellation are recorded as staff's — the
/// customer sees `staff`, staff see which staff user — and the customer's own
/// cancellation and its withdrawal are in the history as the user's (found by the staff
/// audit: the change was shown to the customer with the staff member's user id, and a
/// cancellation left no trace of who asked).
async fn staff_acting_through_customer_routes_are_recorded_as_staff(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = active_account(
        &app,
        &worker,
        "Business",
        "monthly",
        "staffed.example",
        "40.00",
    )
    .await;
    app.clock.set(noon("2026-04-10"));
    let (status, body) = app
        .post(
            &change_path(&app, &id),
            &app.admin_key(),
            &json!({ "plan_id": plan_id(&app, "Starter") }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let last_of = |h: &Value| h["history"].as_array().unwrap().last().cloned().unwrap();
    let customer = hosting(&app, &id).await;
    let entry = last_of(&customer);
    assert!(
        str_of(&entry, "note").starts_with("plan changed"),
        "{customer}"
    );
    assert_eq!(entry["actor"], "staff", "{customer}");
    let staff = crate::harness::staff_hosting(&app, &id).await;
    assert!(
        str_of(&last_of(&staff), "actor").starts_with("staff:"),
        "{staff}"
    );

    // The customer asks for the end of the period, then withdraws it: both noted as theirs.
    let cancel = format!("{}/cancel", hosting_path(&app, &id));
    let (status, h) = app
        .post(
            &cancel,
            &app.key(),
            &json!({ "type": "end_of_period", "reason": "moving" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let entry = last_of(&h);
    assert_eq!(
        entry["note"], "cancellation requested: ends 2026-04-30",
        "{h}"
    );
    assert!(str_of(&entry, "actor").starts_with("user:"), "{h}");
    let (status, h) = crate::harness::revoke_cancellation(&app, &id).await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(last_of(&h)["note"], "cancellation withdrawn", "{h}");

    // Staff cancel it for the customer: recorded as staff's.
    let (status, h) = app
        .post(
            &cancel,
            &app.admin_key(),
            &json!({ "type": "end_of_period", "reason": "customer called" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let customer = hosting(&app, &id).await;
    assert_eq!(last_of(&customer)["actor"], "staff", "{customer}");
    assert_eq!(
        last_of(&customer)["note"],
        "cancellation requested: ends 2026-04-30"
    );
    let staff = crate::harness::staff_hosting(&app, &id).await;
    assert!(
        str_of(&last_of(&staff), "actor").starts_with("staff:"),
        "{staff}"
    );
    app.stop().await;
}

async fn refused_changes_change_nothing(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = active_account(&app, &worker, "Starter", "monthly", "no.example", "5.00").await;
    app.clock.set(noon("2026-04-10"));
    let before = change_counts(&app).await;
    let business = plan_id(&app, "Business");

    // Fields.
    let (status, body) = change(&app, &id, &plan_id(&app, "Starter")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        messages(&body, "plan_id").contains("already on this plan"),
        "{body}"
    );
    let (status, body) = change(&app, &id, &lodge_core::PlanId::new().to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(messages(&body, "plan_id"), "No such plan.", "{body}");
    let (status, body) = change(&app, &id, "no-such-slug").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = change(&app, &id, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The free plan has no monthly price.
    let (status, body) = change(&app, &id, &plan_id(&app, "Free Trial")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        messages(&body, "plan_id").contains("no monthly price"),
        "{body}"
    );
    let (status, body) = app
        .post(&change_path(&app, &id), &app.key(), &json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["plan_id"].is_array(), "{body}");
    let (status, body) = app
        .post(
            &change_path(&app, &id),
            &app.key(),
            &json!({ "plan_id": 7 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = app
        .call_raw(
            reqwest::Method::POST,
            &change_path(&app, &id),
            Some(&app.key()),
            "application/json",
            "{\"plan_id\": ",
        )
        .await;
    assert_detail(status, &body, StatusCode::BAD_REQUEST);

    // Another organization's account is not found, whichever path it is asked through.
    let (org, project, key) = other_tenant(&app, "elsewhere").await;
    let path = format!("/v1/organizations/{org}/projects/{project}/hosting/{id}/change-plan");
    let (status, body) = app.post(&path, &key, &json!({ "plan_id": business })).await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app
        .post(
            &change_path(&app, &id),
            &key,
            &json!({ "plan_id": business }),
        )
        .await;
    assert!(
        status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN,
        "{status} {body}"
    );
    let (status, body) = app
        .post(
            &change_path(&app, &lodge_core::HostingId::new().to_string()),
            &app.key(),
            &json!({ "plan_id": business }),
        )
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    assert_eq!(change_counts(&app).await, before, "nothing written");

    // A pending cancellation.
    let (status, body) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "end_of_period", "reason": "" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before_cancel = change_counts(&app).await;
    let (status, body) = change(&app, &id, &business).await;
    assert_detail(status, &body, StatusCode::CONFLICT);
    assert!(
        str_of(&body, "detail").contains("pending cancellation"),
        "{body}"
    );
    assert_eq!(change_counts(&app).await, before_cancel);
    let (status, body) = crate::harness::revoke_cancellation(&app, &id).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // An account not yet paid (pending), and one on the free cycle.
    let body = json!({ "plan_id": plan_id(&app, "Starter"), "domain_source": "external",
                       "domain_name": "unpaid.example" });
    let (status, o) = app.post(&order_path(&app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    assert_eq!(o["hosting_status"], "pending", "{o}");
    let (status, body) = change(&app, str_of(&o, "hosting_id"), &business).await;
    assert_detail(status, &body, StatusCode::CONFLICT);
    assert!(str_of(&body, "detail").contains("pending"), "{body}");
    let free = active_account(&app, &worker, "Free Trial", "free", "free.example", "0").await;
    let (status, body) = change(&app, &free, &business).await;
    assert_detail(status, &body, StatusCode::CONFLICT);
    assert!(str_of(&body, "detail").contains("free"), "{body}");

    // An unpaid plan-change invoice holds the next change back.
    let first = changed(&app, &id, &business).await;
    assert_eq!(
        first["plan_change"]["status"], "awaiting_payment",
        "{first}"
    );
    let waiting = change_counts(&app).await;
    let (status, body) = change(&app, &id, &plan_id(&app, "Reseller Boost")).await;
    assert_detail(status, &body, StatusCode::CONFLICT);
    assert!(str_of(&body, "detail").contains("unpaid"), "{body}");
    assert_eq!(change_counts(&app).await, waiting);
    app.stop().await;
}

/// Sends a change with an `Idempotency-Key`; returns status, whether it was replayed, body.
async fn keyed_change(app: &TestApp, id: &str, plan: &str, key: &str) -> (StatusCode, bool, Value) {
    let resp = app
        .client
        .post(app.url(&change_path(app, id)))
        .bearer_auth(app.key())
        .header("Idempotency-Key", key)
        .json(&json!({ "plan_id": plan }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    (status, replayed, resp.json().await.unwrap())
}

async fn a_retried_change_with_its_idempotency_key_charges_once(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let up = active_account(
        &app,
        &worker,
        "Starter",
        "monthly",
        "key-up.example",
        "5.00",
    )
    .await;
    let down = active_account(
        &app,
        &worker,
        "Business",
        "monthly",
        "key-down.example",
        "19.99",
    )
    .await;
    app.clock.set(noon("2026-04-15"));
    let business = plan_id(&app, "Business");
    let starter = plan_id(&app, "Starter");

    // An upgrade: 15 of 30 days, 5.00 × 15 / 30 = 2.50 invoiced once.
    let (status, replayed, first) = keyed_change(&app, &up, &business, "change-1").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(!replayed);
    assert_eq!(first["plan_change"]["amount"], "2.50", "{first}");
    let counts = change_counts(&app).await;
    let (status, replayed, again) = keyed_change(&app, &up, &business, "change-1").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert!(replayed, "{again}");
    assert_eq!(again["plan_change"], first["plan_change"]);
    assert_eq!(change_counts(&app).await, counts, "nothing written again");
    // The same key with another request is refused.
    let (status, _, body) = keyed_change(&app, &up, &starter, "change-1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // A downgrade, retried at once: credited once (10.00 → 5.00, 2.50 back).
    let answers = join_all((0..4).map(|_| keyed_change(&app, &down, &starter, "change-2"))).await;
    for (status, _, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["plan_change"]["credit_given"], "2.50", "{body}");
    }
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| !replayed).count(),
        1
    );
    assert_eq!(balance(&app).await, 250);
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM plan_changes WHERE hosting_id = $1")
            .bind(&down)
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap(),
        1
    );
    app.stop().await;
}

async fn concurrent_changes_of_one_account_one_wins(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    // Two accounts paid from credit, none left: the first race is invoiced.
    add_credit(&app, &app.org_id(), "5.00").await;
    let invoiced = active_account(
        &app,
        &worker,
        "Starter",
        "monthly",
        "race-a.example",
        "5.00",
    )
    .await;
    let applied = active_account(&app, &worker, "Starter", "monthly", "race-b.example", "0").await;
    assert_eq!(balance(&app).await, 0);
    app.clock.set(noon("2026-04-15"));
    let business = plan_id(&app, "Business");
    let boost = plan_id(&app, "Reseller Boost");

    for (id, expected) in [(&invoiced, "awaiting_payment"), (&applied, "applied")] {
        if expected == "applied" {
            // Enough credit for any racer's upgrade: the winner is applied at once.
            add_credit(&app, &app.org_id(), "50.00").await;
        }
        // While the winner's invoice is unpaid nothing else goes through; once a change is
        // applied another plan is a new change, so the applied race is for one plan.
        let answers = join_all((0..6).map(|i| {
            let plan = if i % 2 == 0 || expected == "applied" {
                &business
            } else {
                &boost
            };
            change(&app, id, plan)
        }))
        .await;
        let ok: Vec<_> = answers
            .iter()
            .filter(|(s, _)| *s == StatusCode::OK)
            .collect();
        assert_eq!(ok.len(), 1, "one change wins: {answers:?}");
        for (status, body) in &answers {
            // A racer checked after the winner committed may find the account on its plan
            // already (a field error); the others are refused under the account's lock.
            assert!(
                *status == StatusCode::OK
                    || *status == StatusCode::CONFLICT
                    || *status == StatusCode::BAD_REQUEST,
                "the others are refused: {status} {body}"
            );
        }
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plan_changes WHERE hosting_id = $1")
            .bind(id.as_str())
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap();
        assert_eq!(n, 1);
        let won = &ok[0].1;
        assert_eq!(won["plan_change"]["status"], expected, "{won}");
        let h = hosting(&app, id).await;
        if expected == "applied" {
            assert_eq!(h["plan"]["id"], won["plan_change"]["to_plan_id"], "{h}");
        } else {
            assert_eq!(h["plan"]["name"], "Starter", "{h}");
        }
    }
    app.stop().await;
}

/// An upgrade still waiting for its invoice when the account is terminated is cancelled
/// with its invoice (the credit it held comes back: see
/// `a_waiting_upgrade_of_a_terminated_account_gives_its_credit_back`): a late payment of
/// that invoice applies nothing (the plan is not changed) and goes to the account's credit.
async fn a_late_payment_of_an_ended_accounts_upgrade_applies_nothing_and_goes_to_credit(
    app: TestApp,
) {
    let driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = active_account(&app, &worker, "Starter", "monthly", "late.example", "5.00").await;
    app.clock.set(noon("2026-04-15"));
    let body = changed(&app, &id, &plan_id(&app, "Business")).await;
    let inv = body["plan_change"]["invoice_id"].as_i64().unwrap();
    // Cancelled at once and terminated by the worker before the invoice is paid.
    let (status, body) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "immediate", "reason": "" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Cancelled with the cancellation, before the worker terminates the account: paid
    // between the two, it took the money of an account that was ending (found by the money
    // audit).
    assert_eq!(invoice(&app, inv).await["status"], "cancelled");
    let (status, body) = app
        .post(
            &format!("/v1/admin/invoices/{inv}/payments"),
            &app.admin_key(),
            &json!({ "amount": "2.50", "method": "bank_transfer", "reference": "late-0" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["invoice"]["status"], "cancelled", "{body}");
    assert_eq!(body["invoice"]["amount_paid"], "0.00", "{body}");
    worker.run_once().await.unwrap();
    assert_eq!(hosting(&app, &id).await["status"], "terminated");
    assert_eq!(invoice(&app, inv).await["status"], "cancelled");
    let (status, body) = app
        .post(
            &format!("/v1/admin/invoices/{inv}/payments"),
            &app.admin_key(),
            &json!({ "amount": "2.50", "method": "bank_transfer", "reference": "late-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["invoice"]["status"], "cancelled", "{body}");
    let h = hosting(&app, &id).await;
    assert_eq!(h["plan"]["name"], "Starter", "not applied: {h}");
    assert_eq!(
        balance(&app).await,
        500,
        "both transfers to credit, nothing applied"
    );
    assert!(jobs_of(&app, "change_package").await.is_empty());
    assert!(driver.changes().is_empty());
    app.stop().await;
}

async fn an_upgrade_paid_from_credit_on_its_payment_page_is_applied(app: TestApp) {
    let driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = active_account(&app, &worker, "Starter", "monthly", "page.example", "5.00").await;
    // 2026-04-01: 29 of 30 days left. Starter → Reseller Boost (30.00 monthly):
    // 25.00 × 29 / 30 = 24.1666… → 24.17.
    app.clock.set(noon("2026-04-01"));
    let body = changed(&app, &id, "reseller-boost").await;
    let c = &body["plan_change"];
    assert_eq!(c["amount"], "24.17", "{body}");
    assert_eq!(c["status"], "awaiting_payment", "{body}");
    let url = str_of(c, "invoice_payment_url").to_owned();
    let token = url.rsplit('/').next().unwrap().to_owned();

    // Credit arrives; the customer pays on the payment page (on SQLite, through the
    // payments' group commit).
    add_credit(&app, &app.org_id(), "30.00").await;
    let resp = crate::pages::page_form_post(&app, &format!("/pay/{token}/credit"), None).await;
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("/pay/{token}?result=paid")
    );
    let h = hosting(&app, &id).await;
    assert_eq!(h["plan"]["name"], "Reseller Boost", "{h}");
    assert_eq!(h["price"], "30.00", "{h}");
    assert_eq!(h["next_due_date"], "2026-04-30", "{h}");
    assert_eq!(balance(&app).await, 3000 - 2417);
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(driver.changes().len(), 1);
    assert_eq!(driver.changes()[0].1, "BoostX");
    app.stop().await;
}

async fn a_failing_change_package_job_is_retried(app: TestApp) {
    let driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = active_account(
        &app,
        &worker,
        "Business",
        "monthly",
        "retry.example",
        "19.99",
    )
    .await;
    app.clock.set(noon("2026-04-15"));
    changed(&app, &id, "starter").await;
    driver.fail_next(1);
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert!(driver.changes().is_empty());
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert!(
        str_of(&h, "last_error").contains("the panel is down"),
        "{h}"
    );
    assert_eq!(
        h["plan"]["name"], "Starter",
        "the plan changed already: {h}"
    );
    // Past the retry's backoff (at most an hour and 20 %).
    app.clock.advance(SignedDuration::from_hours(2));
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(driver.changes().len(), 1);
    let h = hosting(&app, &id).await;
    assert!(h["last_error"].is_null(), "{h}");
    let packaged = notes(&h)
        .iter()
        .filter(|n| n.starts_with("package changed to Starter"))
        .count();
    assert_eq!(packaged, 1, "{h}");
    let jobs = jobs_of(&app, "change_package").await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].attempts, 2);
    app.stop().await;
}

/// The nginx driver records an account's package beside its files (it has no limits to set).
#[tokio::test]
async fn nginx_records_the_package() {
    let base = tempfile::tempdir().unwrap();
    let cfg = NginxConfig::default_under(base.path());
    let clock = Arc::new(lodge_core::ManualClock::new(start_time()));
    let driver = NginxDriver::new(cfg.clone(), clock);
    let account = Account {
        username: "site42".into(),
        domain: "site.example".into(),
        package: "Starter".into(),
        password: None,
        server: "localhost".into(),
        limits: Default::default(),
        client_ip: None,
    };
    driver.change_package(&account, "Business").await.unwrap();
    driver.change_package(&account, "Business").await.unwrap();
    let file = cfg.web_root.join("site42").join("package");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "Business\n");
    let bad = Account {
        username: "../x".into(),
        ..account
    };
    assert!(driver.change_package(&bad, "Business").await.is_err());
}

/// Found by the simulation: an account whose next period's renewal is already invoiced (the
/// 14 days' lead time) changes plans; the change is accepted and applied, but the next
/// period stays billed at the old plan's price, so the "account renews at the new plan's
/// price" (docs/billing.md, "Proration") only holds from the period after. Here a downgrade:
/// the customer pays Business for a period served on Starter. (An upgrade the same way
/// serves Business for a period billed at Starter's price.)
async fn a_change_after_the_next_period_was_billed_renews_at_the_new_price(app: TestApp) {
    // Found by the simulation (`lodge bench simulate`): the renewal invoiced in the lead
    // time kept the old plan's price after a change.
    let _driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    // Business monthly: 10.00 and its 9.99 setup fee; the period 2026-03-31 to 2026-04-30.
    let id = active_account(
        &app,
        &worker,
        "Business",
        "monthly",
        "lead.example",
        "19.99",
    )
    .await;
    // 2026-04-20: within the lead time, the renewal of 2026-04-30 to 2026-05-31 is invoiced
    // at Business's 10.00 (unpaid: no credit).
    app.clock.set(noon("2026-04-20"));
    app.lodge.schedule_due().await.unwrap();
    assert_eq!(
        billed_from(&app, &id, "2026-04-30").await,
        Some(1000),
        "the renewal is invoiced"
    );
    let renewal = renewal_of(&app, &id, "2026-04-30").await;
    // 2026-04-21: down to Starter (5.00 monthly), accepted and applied at once: 9 of 30
    // days left, (5.00 − 10.00) × 9 / 30 = −1.50 to credit.
    app.clock.set(noon("2026-04-21"));
    let body = changed(&app, &id, &plan_id(&app, "Starter")).await;
    assert_eq!(body["plan_change"]["status"], "applied", "{body}");
    assert_eq!(body["hosting"]["price"], "5.00", "{body}");
    assert_eq!(balance(&app).await, 150);
    // The period from 2026-04-30 is served on Starter: its unpaid renewal now bills 5.00.
    assert_eq!(billed_from(&app, &id, "2026-04-30").await, Some(500));
    let inv = invoice(&app, renewal).await;
    assert_eq!(inv["status"], "unpaid", "{inv}");
    assert_eq!(cents(&inv["total"]), 500, "{inv}");
    assert_eq!(cents(&inv["amount_due"]), 500, "{inv}");
    // Paying it renews the account for that period, once.
    pay(&app, renewal, "5.00", "TRF-LEAD-1").await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["next_due_date"], "2026-05-31", "{h}");
    // The next renewal bills Starter's price too.
    app.clock.set(noon("2026-05-25"));
    app.lodge.schedule_due().await.unwrap();
    assert_eq!(billed_from(&app, &id, "2026-05-31").await, Some(500));
    app.stop().await;
}

/// The data of the `kind` events of an invoice, oldest first.
async fn invoice_events(app: &TestApp, invoice: i64, kind: &str) -> Vec<Value> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT data FROM events WHERE kind = $1 AND subject = $2 ORDER BY seq")
            .bind(kind)
            .bind(format!("invoice:{invoice}"))
            .fetch_all(app.lodge.store.reader())
            .await
            .unwrap();
    rows.into_iter()
        .map(|(d,)| serde_json::from_str(&d).unwrap())
        .collect()
}

async fn an_upgrade_in_the_lead_time_reprices_the_unpaid_renewal(app: TestApp) {
    let driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = active_account(
        &app,
        &worker,
        "Starter",
        "monthly",
        "uplead.example",
        "5.00",
    )
    .await;
    app.clock.set(noon("2026-04-20"));
    app.lodge.schedule_due().await.unwrap();
    assert_eq!(billed_from(&app, &id, "2026-04-30").await, Some(500));
    let renewal = renewal_of(&app, &id, "2026-04-30").await;
    // Starter → Business on 2026-04-20: 1.67 invoiced; the renewal still bills 5.00 until
    // the change is paid.
    let body = changed(&app, &id, &plan_id(&app, "Business")).await;
    let c = &body["plan_change"];
    assert_eq!(c["status"], "awaiting_payment", "{body}");
    assert_eq!(billed_from(&app, &id, "2026-04-30").await, Some(500));
    let upgrade = c["invoice_id"].as_i64().unwrap();
    pay(&app, upgrade, "1.67", "TRF-UP-1").await;
    // Applied: the renewal now bills Business's 10.00.
    let h = hosting(&app, &id).await;
    assert_eq!(h["price"], "10.00", "{h}");
    assert_eq!(billed_from(&app, &id, "2026-04-30").await, Some(1000));
    let inv = invoice(&app, renewal).await;
    assert_eq!(
        (cents(&inv["total"]), cents(&inv["amount_due"])),
        (1000, 1000),
        "{inv}"
    );
    // Told once, with what it asks now (found by the accountant's audit: announced nowhere,
    // the customer paying the 5.00 mailed).
    let updated = invoice_events(&app, renewal, "invoice.updated").await;
    assert_eq!(updated.len(), 1, "{updated:?}");
    let data = &updated[0];
    assert_eq!(
        (
            &data["total_minor"],
            &data["amount_due_minor"],
            &data["status"]
        ),
        (&json!(1000), &json!(1000), &json!("unpaid")),
        "{data}"
    );
    assert!(
        data["reason"].as_str().unwrap().contains("re-priced"),
        "{data}"
    );
    worker.run_once().await.unwrap();
    assert_eq!(driver.changes().len(), 1, "the package changed once");
    app.stop().await;
}

async fn a_downgrade_returns_the_credit_applied_beyond_the_repriced_renewal(app: TestApp) {
    let _driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = active_account(
        &app,
        &worker,
        "Business",
        "monthly",
        "credit-lead.example",
        "19.99",
    )
    .await;
    // 7.00 of credit on file: the 10.00 renewal is issued with 7.00 applied, 3.00 due.
    add_credit(&app, &app.org_id(), "7.00").await;
    app.clock.set(noon("2026-04-20"));
    app.lodge.schedule_due().await.unwrap();
    let renewal = renewal_of(&app, &id, "2026-04-30").await;
    let inv = invoice(&app, renewal).await;
    assert_eq!(cents(&inv["amount_due"]), 300, "{inv}");
    assert_eq!(balance(&app).await, 0);
    // Down to Starter on 2026-04-21: −1.50 prorated to credit; the renewal now bills 5.00,
    // covered by the 7.00 applied: paid, and 2.00 of that credit goes back.
    app.clock.set(noon("2026-04-21"));
    let body = changed(&app, &id, &plan_id(&app, "Starter")).await;
    assert_eq!(body["plan_change"]["status"], "applied", "{body}");
    let inv = invoice(&app, renewal).await;
    assert_eq!(inv["status"], "paid", "{inv}");
    assert_eq!(cents(&inv["total"]), 500, "{inv}");
    assert_eq!(balance(&app).await, 150 + 200);
    // Paid by the change: told by its receipt, not as an invoice still to pay.
    assert!(invoice_events(&app, renewal, "invoice.updated")
        .await
        .is_empty());
    assert_eq!(invoice_events(&app, renewal, "invoice.paid").await.len(), 1);
    // Paid, it renewed the account.
    let h = hosting(&app, &id).await;
    assert_eq!(h["next_due_date"], "2026-05-31", "{h}");
    app.stop().await;
}

async fn an_upgrade_paid_after_the_renewal_was_paid_invoices_the_difference(app: TestApp) {
    let _driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    // The upgrade is invoiced (1.67) but left unpaid; the renewal is paid at 5.00.
    let (id, body) =
        upgraded_with_its_renewal_paid(&app, &worker, "late.example", "TRF-REN-1").await;
    let upgrade = body["plan_change"]["invoice_id"].as_i64().unwrap();
    assert_eq!(
        hosting(&app, &id).await["next_due_date"],
        "2026-05-31",
        "renewed at the old price"
    );
    // The upgrade is paid on 2026-04-25: applied, and the period from 2026-04-30 (paid at
    // Starter's 5.00) owes Business's 5.00 more: invoiced once.
    app.clock.set(noon("2026-04-25"));
    pay(&app, upgrade, "1.67", "TRF-UP-2").await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["price"], "10.00", "{h}");
    let difference = adjustment_from(&app, &id, "2026-04-30").await;
    assert_eq!(difference.len(), 1, "{difference:?}");
    let (inv_id, amount) = difference[0];
    assert_eq!(amount, 500);
    let inv = invoice(&app, inv_id).await;
    assert_eq!(inv["status"], "unpaid", "{inv}");
    assert_eq!(cents(&inv["amount_due"]), 500, "{inv}");
    // While it is unpaid, no other change (found by the billing audit: a downgrade then
    // paid back what that invoice never received).
    app.clock.set(noon("2026-05-05"));
    let before = change_counts(&app).await;
    let (status, body) = change(&app, &id, &plan_id(&app, "Starter")).await;
    assert_detail(status, &body, StatusCode::CONFLICT);
    assert!(
        body["detail"].as_str().unwrap().contains("is unpaid"),
        "{body}"
    );
    assert_eq!(change_counts(&app).await, before);
    pay(&app, inv_id, "5.00", "TRF-DIFF-3").await;
    let c = changed(&app, &id, &plan_id(&app, "Starter")).await;
    assert_eq!(
        c["plan_change"]["old_price"], "10.00",
        "paid in full now: {c}"
    );
    app.stop().await;
}

/// The difference a change owes for a period paid at the old price is that period's
/// renewal money: due when the period begins, and left unpaid it suspends the account as
/// an unpaid renewal does (a week after), paying it lifting the suspension (found by the
/// billing audit: it was never enforced, the period served on the dearer plan at the old
/// price).
async fn an_unpaid_difference_suspends_as_a_renewal_does(app: TestApp) {
    let _driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (id, body) =
        upgraded_with_its_renewal_paid(&app, &worker, "owes.example", "TRF-OWES-1").await;
    let upgrade = body["plan_change"]["invoice_id"].as_i64().unwrap();
    app.clock.set(noon("2026-04-25"));
    pay(&app, upgrade, "1.67", "TRF-OWES-2").await;
    let difference = adjustment_from(&app, &id, "2026-04-30").await;
    let (inv_id, _) = difference[0];
    let inv = invoice(&app, inv_id).await;
    assert_eq!(
        inv["due_date"], "2026-04-30",
        "due when its period begins: {inv}"
    );
    // The preview shows the suspension it will lead to, and no termination.
    let preview = app.lodge.billing_preview(30).await.unwrap();
    let suspensions: Vec<_> = preview
        .suspensions
        .iter()
        .filter(|s| s.hosting_id == id)
        .map(|s| (s.date.clone(), s.invoice_id))
        .collect();
    assert_eq!(suspensions, [("2026-05-07".to_owned(), Some(inv_id))]);
    assert!(
        preview.terminations.iter().all(|t| t.hosting_id != id),
        "{:?}",
        preview.terminations
    );
    // Told the day after its due date (the overdue notice, with the day of the
    // suspension); six days late: still active; seven: suspended by the scheduler.
    for day in ["2026-05-01", "2026-05-06"] {
        app.clock.set(noon(day));
        app.lodge.schedule_due().await.unwrap();
    }
    crate::provisioning::drain(worker.clone()).await;
    assert_eq!(hosting(&app, &id).await["status"], "active");
    let (told,): (String,) =
        sqlx::query_as("SELECT data FROM events WHERE kind = 'invoice.overdue' AND subject = $1")
            .bind(format!("invoice:{inv_id}"))
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap();
    assert!(told.contains("2026-05-07"), "{told}");
    app.clock.set(noon("2026-05-07"));
    app.lodge.schedule_due().await.unwrap();
    crate::provisioning::drain(worker.clone()).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "suspended", "{h}");
    let number = str_of(&inv, "number");
    assert_eq!(
        notes(&h).last().unwrap(),
        &format!("suspended: plan change difference {number} unpaid (scheduler)"),
        "{:?}",
        notes(&h)
    );
    // Never terminated for it (the period was paid at the old price): past the
    // termination grace, still suspended.
    app.clock.set(noon("2026-05-30"));
    app.lodge.schedule_due().await.unwrap();
    crate::provisioning::drain(worker.clone()).await;
    assert_eq!(hosting(&app, &id).await["status"], "suspended");
    // Paid: lifted.
    pay(&app, inv_id, "5.00", "TRF-OWES-3").await;
    crate::provisioning::drain(worker.clone()).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    assert_eq!(
        notes(&h).last().unwrap(),
        &format!("unsuspended: invoice {number} paid (scheduler)"),
        "{:?}",
        notes(&h)
    );
    // An upgrade's own invoice is no difference: left unpaid, its change waits (and ends
    // with its period), the overdue pass never sees it.
    let c = changed(&app, &id, &plan_id(&app, "Reseller Boost")).await;
    assert_eq!(c["plan_change"]["status"], "awaiting_payment", "{c}");
    let mut db = app.lodge.store.read_conn().await.unwrap();
    let seen = lodge_store::renewals::unpaid_due_by(
        &mut db,
        lodge_store::renewals::Owed::Differences,
        "9999-12-31",
        0,
        100,
    )
    .await
    .unwrap();
    assert!(seen.is_empty(), "{seen:?}");
    drop(db);
    app.stop().await;
}

/// A difference left unpaid until the period it completes is over is cancelled then, and
/// the suspension it made lifted: the account is not kept suspended for good while its
/// later periods are billed and paid (found by the lifecycle audit: a month paid at the new
/// price served suspended, and every month after).
async fn an_unpaid_difference_is_cancelled_when_its_period_ends(app: TestApp) {
    let _driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (id, body) =
        upgraded_with_its_renewal_paid(&app, &worker, "lapse.example", "TRF-LAPSE-1").await;
    let upgrade = body["plan_change"]["invoice_id"].as_i64().unwrap();
    app.clock.set(noon("2026-04-25"));
    pay(&app, upgrade, "1.67", "TRF-LAPSE-2").await;
    let (inv_id, _) = adjustment_from(&app, &id, "2026-04-30").await[0];
    for day in ["2026-05-01", "2026-05-07"] {
        app.clock.set(noon(day));
        app.lodge.schedule_due().await.unwrap();
    }
    crate::provisioning::drain(worker.clone()).await;
    assert_eq!(hosting(&app, &id).await["status"], "suspended");
    // The next period is billed at the new price, and paid.
    app.clock.set(noon("2026-05-17"));
    app.lodge.schedule_due().await.unwrap();
    let next = renewal_of(&app, &id, "2026-05-31").await;
    assert_eq!(invoice(&app, next).await["total"], "10.00");
    pay(&app, next, "10.00", "TRF-LAPSE-3").await;
    crate::provisioning::drain(worker.clone()).await;
    assert_eq!(hosting(&app, &id).await["status"], "suspended");
    let balance = app
        .get(
            &format!("/v1/organizations/{}/credit", app.org_id()),
            &app.key(),
        )
        .await
        .1["balance"]
        .clone();
    // The day before its period ends, still suspended; then cancelled, and the account
    // serves the period paid for.
    app.clock.set(noon("2026-05-30"));
    app.lodge.schedule_due().await.unwrap();
    crate::provisioning::drain(worker.clone()).await;
    assert_eq!(hosting(&app, &id).await["status"], "suspended");
    app.clock.set(noon("2026-05-31"));
    app.lodge.schedule_due().await.unwrap();
    crate::provisioning::drain(worker.clone()).await;
    let inv = invoice(&app, inv_id).await;
    assert_eq!(inv["status"], "cancelled", "{inv}");
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    let number = str_of(&inv, "number");
    assert_eq!(
        notes(&h).last().unwrap(),
        &format!(
            "unsuspended: plan change difference {number} cancelled, its period over (scheduler)"
        ),
        "{:?}",
        notes(&h)
    );
    let after = app
        .get(
            &format!("/v1/organizations/{}/credit", app.org_id()),
            &app.key(),
        )
        .await
        .1["balance"]
        .clone();
    assert_eq!(after, balance, "nothing was paid of it, nothing given back");
    // A later pass changes nothing more.
    app.clock.set(noon("2026-06-02"));
    app.lodge.schedule_due().await.unwrap();
    crate::provisioning::drain(worker.clone()).await;
    assert_eq!(hosting(&app, &id).await["status"], "active");
    app.stop().await;
}

/// A difference suspended the account; then every node was down from before the next
/// renewal's due date until 20 days after it. The first pass back warns of the renewal
/// (its graces counting from that warning) and cancels the difference, its period over:
/// the suspension is lifted, as the renewal's own suspension day is six days away; that
/// day the renewal suspends the account. By the renewal's raw due date the account stayed
/// suspended (found re-reading the time-travel fix).
async fn a_lapsed_difference_lifts_its_suspension_while_a_late_warned_renewal_is_in_its_grace(
    app: TestApp,
) {
    let _driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (id, body) =
        upgraded_with_its_renewal_paid(&app, &worker, "outage.example", "TRF-OUT-1").await;
    let upgrade = body["plan_change"]["invoice_id"].as_i64().unwrap();
    app.clock.set(noon("2026-04-25"));
    pay(&app, upgrade, "1.67", "TRF-OUT-2").await;
    let (difference, _) = adjustment_from(&app, &id, "2026-04-30").await[0];
    let pass = |day: &'static str| {
        app.clock.set(noon(day));
        let (l, w) = (app.lodge.clone(), worker.clone());
        async move {
            l.schedule_due().await.unwrap();
            crate::provisioning::drain(w).await;
        }
    };
    for day in ["2026-05-01", "2026-05-07"] {
        pass(day).await;
    }
    assert_eq!(hosting(&app, &id).await["status"], "suspended");
    pass("2026-05-17").await;
    let next = renewal_of(&app, &id, "2026-05-31").await;
    assert_eq!(invoice(&app, next).await["status"], "unpaid");
    // Back on 20 June.
    pass("2026-06-20").await;
    assert_eq!(invoice(&app, difference).await["status"], "cancelled");
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    let (told,): (String,) =
        sqlx::query_as("SELECT data FROM events WHERE kind = 'invoice.overdue' AND subject = $1")
            .bind(format!("invoice:{next}"))
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap();
    assert!(told.contains("2026-06-26"), "{told}");
    pass("2026-06-25").await;
    assert_eq!(hosting(&app, &id).await["status"], "active");
    pass("2026-06-26").await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "suspended", "{h}");
    let number = str_of(&invoice(&app, next).await, "number").to_owned();
    assert_eq!(
        notes(&h).last().unwrap(),
        &format!("suspended: renewal {number} unpaid (scheduler)"),
        "{:?}",
        notes(&h)
    );
    app.stop().await;
}

/// Found by an audit running the server over months: an upgrade invoiced for the days left
/// of a period and paid only after that period ended was applied then, charging for upgrade
/// days never served and invoicing the next period's difference too. Now it is not applied
/// and what was paid goes back to credit, as a refund of its invoice; a new change can be
/// asked for, priced for the days then left.
async fn an_upgrade_paid_after_its_period_ended_goes_back_to_credit(app: TestApp) {
    let driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (id, body) =
        upgraded_with_its_renewal_paid(&app, &worker, "too-late.example", "TRF-REN-LATE").await;
    let upgrade = body["plan_change"]["invoice_id"].as_i64().unwrap();
    // Paid on 2026-05-05, after the period it was priced for (to 2026-04-30).
    app.clock.set(noon("2026-05-05"));
    pay(&app, upgrade, "1.67", "TRF-UP-LATE").await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["plan"]["name"], "Starter", "not applied: {h}");
    assert_eq!(h["price"], "5.00", "{h}");
    assert_eq!(
        balance(&app).await,
        167,
        "what was paid went back to credit"
    );
    assert!(adjustment_from(&app, &id, "2026-04-30").await.is_empty());
    assert!(jobs_of(&app, "change_package").await.is_empty());
    assert!(driver.changes().is_empty());
    let (status, r) = app
        .get(
            &format!("/v1/admin/invoices/{upgrade}/refunds"),
            &app.admin_key(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["invoice"]["status"], "refunded", "{r}");
    // The account is free to change again.
    let (status, body) = change(&app, &id, &plan_id(&app, "Business")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}

/// The renewal invoice (not cancelled) billing an account's period from `start`.
async fn renewal_of(app: &TestApp, id: &str, start: &str) -> i64 {
    use lodge_store::SqlConn;
    let mut db = app.lodge.store.read_conn().await.unwrap();
    db.fetch_int(
        "SELECT i.id FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
         WHERE l.service_id = $1 AND l.kind = 'plan' AND i.kind = 'renewal' \
         AND i.status <> 'cancelled' AND l.period_start = $2",
        lodge_store::vals![id, start],
    )
    .await
    .unwrap()
    .unwrap()
}

/// The adjustment lines (not cancelled) of an account from `start`: `(invoice, amount)`.
async fn adjustment_from(app: &TestApp, id: &str, start: &str) -> Vec<(i64, i64)> {
    use lodge_store::SqlConn;
    let mut db = app.lodge.store.read_conn().await.unwrap();
    db.fetch_rows(
        "SELECT i.id, l.amount_minor FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
         WHERE l.service_id = $1 AND l.kind = 'adjustment' AND i.status <> 'cancelled' \
         AND l.period_start = $2",
        lodge_store::vals![id, start],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| {
        let mut c = lodge_store::Cols::new(r);
        (c.int().unwrap(), c.int().unwrap())
    })
    .collect()
}

/// What the renewal invoices (not cancelled) bill for an account's period from `start`.
async fn billed_from(app: &TestApp, id: &str, start: &str) -> Option<i64> {
    use lodge_store::SqlConn;
    let mut db = app.lodge.store.read_conn().await.unwrap();
    db.fetch_int(
        "SELECT l.amount_minor FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
         WHERE l.service_id = $1 AND l.kind = 'plan' AND i.kind = 'renewal' \
         AND i.status <> 'cancelled' AND l.period_start = $2",
        lodge_store::vals![id, start],
    )
    .await
    .unwrap()
}

/// A plan sold once per organization (a trial, a promotion) is had once, whether ordered or
/// reached by a plan change; an upgrade awaiting payment counts (found by the /v1 audit:
/// two accounts moved onto it, both 200).
async fn a_plan_sold_once_per_organization_is_not_reached_by_changes(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (status, plan) = app
        .post(
            "/v1/admin/plans",
            &app.admin_key(),
            &json!({
                "slug": "promo", "group": "web-hosting", "name": "Promo",
                "once_per_organization": true,
                "pricing": [{ "billing_cycle": "monthly", "price": "50.00", "is_default": true }],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let promo = str_of(&plan, "id").to_owned();
    let a = active_account(
        &app,
        &worker,
        "Starter",
        "monthly",
        "promo-a.example",
        "5.00",
    )
    .await;
    let b = active_account(
        &app,
        &worker,
        "Starter",
        "monthly",
        "promo-b.example",
        "5.00",
    )
    .await;
    app.clock.set(noon("2026-04-10"));
    // Both at once: one is accepted, checked again under the organization's lock (found
    // by review: the check was read before the change's transaction).
    let ((sa, ba), (sb, bb)) = tokio::join!(change(&app, &a, &promo), change(&app, &b, &promo));
    let mut statuses = [sa, sb];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::BAD_REQUEST],
        "{ba} {bb}"
    );
    let b = if sa == StatusCode::OK { b } else { a };
    let first = if sa == StatusCode::OK { ba } else { bb };
    // The first change to it is an upgrade, invoiced and not paid yet.
    assert_eq!(
        first["plan_change"]["status"], "awaiting_payment",
        "{first}"
    );
    let before = change_counts(&app).await;
    let (status, body) = change(&app, &b, &promo).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        messages(&body, "plan_id").contains("once per organization"),
        "{body}"
    );
    assert_eq!(change_counts(&app).await, before, "nothing recorded");
    // Nor can it be ordered now.
    let body = json!({ "plan_id": promo, "domain_source": "external",
                       "domain_name": "promo-c.example", "billing_cycle": "monthly" });
    let (status, o) = app.post(&order_path(&app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{o}");
    // Another organization has its own.
    let (org, project, key) = other_tenant(&app, "promo-other").await;
    let (status, o) = app
        .post(
            &format!("/v1/organizations/{org}/projects/{project}/hosting/order"),
            &key,
            &body,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    app.stop().await;
}

/// The id of an account's first invoice (its order's).
async fn first_invoice(app: &TestApp, id: &str) -> i64 {
    let (first,): (i64,) = sqlx::query_as(
        "SELECT i.id FROM invoices i JOIN hosting h ON i.order_id = h.order_id \
         WHERE h.id = $1 AND i.kind = 'first'",
    )
    .bind(id)
    .fetch_one(app.lodge.store.reader())
    .await
    .unwrap();
    first
}

/// Staff refunds.
async fn refund(app: &TestApp, invoice: i64, body: Value) {
    let (status, r) = app
        .post(
            &format!("/v1/admin/invoices/{invoice}/refunds"),
            &app.admin_key(),
            &body,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
}

/// What a refund of an invoice may still return.
async fn refundable(app: &TestApp, invoice: i64) -> String {
    let (status, r) = app
        .get(
            &format!("/v1/admin/invoices/{invoice}/refunds"),
            &app.admin_key(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    str_of(&r["invoice"], "refundable").to_owned()
}

/// The reverse of the test above (found by the lifecycle audit: an upgrade's invoice, its
/// money given back as credit by a downgrade the same day, was then refunded in full as
/// well). A downgrade's credit undoes the upgrades before it, the latest first, then the
/// period's own invoice: what it gave back of an invoice is no longer refundable.
async fn what_a_downgrade_gave_back_is_not_refunded_again(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    // Starter monthly (5.00), up to Business on 2026-04-10 (3.33, paid from credit), back
    // down the same day: the 3.33 comes back as credit, and the upgrade's invoice has
    // nothing left to refund; the month's own invoice is untouched.
    let id = active_account(
        &app,
        &worker,
        "Starter",
        "monthly",
        "up-down.example",
        "5.00",
    )
    .await;
    let first = first_invoice(&app, &id).await;
    app.clock.set(noon("2026-04-10"));
    add_credit(&app, &app.org_id(), "3.33").await;
    let c = changed(&app, &id, &plan_id(&app, "Business")).await;
    assert_eq!(c["plan_change"]["status"], "applied", "{c}");
    let upgrade = c["plan_change"]["invoice_id"].as_i64().expect("an invoice");
    assert_eq!(refundable(&app, upgrade).await, "3.33");
    let c = changed(&app, &id, &plan_id(&app, "Starter")).await;
    assert_eq!(c["plan_change"]["credit_given"], "3.33", "{c}");
    assert_eq!(refundable(&app, upgrade).await, "0.00");
    // Staff see why (found by the accounting audit: an invoice turned `refunded` with less
    // refunded than received, and nothing on it said where the rest went).
    let (_, r) = app
        .get(
            &format!("/v1/admin/invoices/{upgrade}/refunds"),
            &app.admin_key(),
        )
        .await;
    assert_eq!(r["invoice"]["given_back"], "3.33", "{r}");
    let before = balance(&app).await;
    let (status, body) = app
        .post(
            &format!("/v1/admin/invoices/{upgrade}/refunds"),
            &app.admin_key(),
            &json!({ "amount": "1.00", "to": "credit" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(balance(&app).await, before);
    assert_eq!(refundable(&app, first).await, "5.00");

    // Business monthly (10.00 and its 9.99 setup fee), down to Starter on 2026-04-10
    // with 20 of 30 days left: 3.33 back as credit, taken from the month's own invoice,
    // which has 19.99 - 3.33 left to refund; refunding that empties it.
    let id = active_account(
        &app,
        &worker,
        "Business",
        "monthly",
        "down-only.example",
        "19.99",
    )
    .await;
    let first = first_invoice(&app, &id).await;
    let c = changed(&app, &id, &plan_id(&app, "Starter")).await;
    let given = str_of(&c["plan_change"], "credit_given").to_owned();
    assert_ne!(given, "0.00", "{c}");
    let left = refundable(&app, first).await;
    assert_eq!(
        cents(&json!(left)) + cents(&json!(given)),
        1999,
        "{left} + {given}"
    );
    refund(&app, first, json!({ "amount": left, "to": "credit" })).await;
    assert_eq!(refundable(&app, first).await, "0.00");
    let inv = invoice(&app, first).await;
    assert_eq!(inv["status"], "refunded", "{inv}");

    // An upgrade refunded in full before a downgrade: the downgrade's credit, priced
    // without it, comes from the month's own invoice, whose refundable drops by it (found
    // by review: booked against the refunded upgrade, the month stayed refundable in full).
    let id = active_account(
        &app,
        &worker,
        "Starter",
        "monthly",
        "refund-down.example",
        "5.00",
    )
    .await;
    let first = first_invoice(&app, &id).await;
    let c = changed(&app, &id, &plan_id(&app, "Business")).await;
    assert_eq!(
        c["plan_change"]["status"], "applied",
        "paid from credit: {c}"
    );
    let upgrade = c["plan_change"]["invoice_id"].as_i64().expect("an invoice");
    let amount = str_of(&c["plan_change"], "amount").to_owned();
    refund(&app, upgrade, json!({ "amount": amount, "to": "credit" })).await;
    let c = changed(&app, &id, &plan_id(&app, "Legacy Basic")).await;
    let given = str_of(&c["plan_change"], "credit_given").to_owned();
    assert_ne!(given, "0.00", "{c}");
    let left = refundable(&app, first).await;
    assert_eq!(
        cents(&json!(left)) + cents(&json!(given)),
        500,
        "{left} + {given}"
    );
    app.stop().await;
}

/// A period paid by its renewal and by a plan change's difference: a downgrade in it gives
/// back from the difference first, then from the renewal, and neither is refundable beyond
/// what is left (found by review: the difference stayed refundable in full, the renewal's
/// part capped at its line and the rest dropped).
async fn a_downgrade_gives_back_a_paid_difference_first(app: TestApp) {
    let _driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (id, body) =
        upgraded_with_its_renewal_paid(&app, &worker, "diff-down.example", "TRF-DD-1").await;
    let upgrade = body["plan_change"]["invoice_id"].as_i64().unwrap();
    let renewal = renewal_of(&app, &id, "2026-04-30").await;
    app.clock.set(noon("2026-04-25"));
    pay(&app, upgrade, "1.67", "TRF-DD-2").await;
    let (difference, amount) = adjustment_from(&app, &id, "2026-04-30").await[0];
    assert_eq!(amount, 500);
    pay(&app, difference, "5.00", "TRF-DD-3").await;
    // The period from 2026-04-30 paid 10.00 (5.00 + 5.00); on its first day, down to
    // Legacy Basic (3.00): 7.00 back, 5.00 of it the difference's, 2.00 the renewal's.
    app.clock.set(noon("2026-04-30"));
    let c = changed(&app, &id, &plan_id(&app, "Legacy Basic")).await;
    assert_eq!(c["plan_change"]["credit_given"], "7.00", "{c}");
    assert_eq!(refundable(&app, difference).await, "0.00");
    assert_eq!(refundable(&app, renewal).await, "3.00");
    app.stop().await;
}

/// What was refunded of the invoices paying a period is no longer paid: a downgrade
/// prorates from what was kept (found by the billing audit: 19.99 paid, 17.00 refunded,
/// then a downgrade credited 5.00 more; an upgrade's invoice refunded in full, then the
/// move back down credited the upgrade's price again).
async fn a_downgrade_after_a_refund_gives_back_only_what_was_kept(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    // Business monthly: 10.00 and its 9.99 setup fee, paid from credit.
    let id = active_account(
        &app,
        &worker,
        "Business",
        "monthly",
        "refunded-down.example",
        "19.99",
    )
    .await;
    let first = first_invoice(&app, &id).await;
    refund(&app, first, json!({ "amount": "15.00", "to": "credit" })).await;
    refund(&app, first, json!({ "amount": "2.00", "to": "credit" })).await;
    let before = balance(&app).await;
    assert_eq!(before, 1700);
    // 2.99 of 19.99 kept: the month's 10.00 was paid 10.00 × 2.99 / 19.99 = 1.49, below
    // Starter's 5.00, so nothing comes back.
    let c = changed(&app, &id, &plan_id(&app, "Starter")).await;
    assert_eq!(c["plan_change"]["status"], "applied", "{c}");
    assert_eq!(c["plan_change"]["old_price"], "1.49", "{c}");
    assert_eq!(c["plan_change"]["credit_given"], "0.00", "{c}");
    assert_eq!(balance(&app).await, before);

    // Starter monthly (5.00), up to Business on 2026-04-10 (20 of 30 days left): 3.33,
    // paid from credit; that invoice refunded in full; back down the next day (19 left):
    // the rest of the month is paid at Starter's 5.00 again, nothing comes back.
    let id = active_account(
        &app,
        &worker,
        "Starter",
        "monthly",
        "up-back.example",
        "5.00",
    )
    .await;
    app.clock.set(noon("2026-04-10"));
    add_credit(&app, &app.org_id(), "3.33").await;
    let before = balance(&app).await;
    let c = changed(&app, &id, &plan_id(&app, "Business")).await;
    assert_eq!(c["plan_change"]["status"], "applied", "{c}");
    assert_eq!(c["plan_change"]["amount"], "3.33", "{c}");
    let upgrade = c["plan_change"]["invoice_id"].as_i64().expect("an invoice");
    refund(&app, upgrade, json!({ "amount": "3.33", "to": "credit" })).await;
    assert_eq!(balance(&app).await, before);
    app.clock.set(noon("2026-04-11"));
    let c = changed(&app, &id, &plan_id(&app, "Starter")).await;
    assert_eq!(c["plan_change"]["old_price"], "5.00", "{c}");
    assert_eq!(c["plan_change"]["credit_given"], "0.00", "{c}");
    assert_eq!(balance(&app).await, before);

    // Refunded after the change: Starter (5.00) paid, up to Business the same day (5.00
    // more), the first invoice refunded in full, then down to Legacy Basic (3.00): 7.00
    // would come back on top of the 5.00 refunded, for 10.00 paid; 5.00 does (found by
    // review: the refund after the change was not seen).
    let id = active_account(
        &app,
        &worker,
        "Starter",
        "monthly",
        "late-refund.example",
        "5.00",
    )
    .await;
    let first = first_invoice(&app, &id).await;
    add_credit(&app, &app.org_id(), "5.00").await;
    let c = changed(&app, &id, &plan_id(&app, "Business")).await;
    assert_eq!(c["plan_change"]["status"], "applied", "{c}");
    refund(&app, first, json!({ "amount": "5.00", "to": "credit" })).await;
    let before = balance(&app).await;
    let c = changed(&app, &id, &plan_id(&app, "Legacy Basic")).await;
    assert_eq!(c["plan_change"]["credit_given"], "5.00", "{c}");
    assert_eq!(balance(&app).await, before + 500);
    app.stop().await;
}

/// Starter monthly with 2.00 of credit over, moved up to Business on 2026-04-10: the
/// change waits for its 3.33 invoice, 2.00 of credit applied to it.
async fn waiting_upgrade(app: &TestApp, worker: &Worker, name: &str) -> (String, i64) {
    let id = active_account(app, worker, "Starter", "monthly", name, "7.00").await;
    app.clock.set(noon("2026-04-10"));
    let c = changed(app, &id, &plan_id(app, "Business")).await;
    assert_eq!(c["plan_change"]["status"], "awaiting_payment", "{c}");
    assert_eq!(c["plan_change"]["credit_applied"], "2.00", "{c}");
    assert_eq!(balance(app).await, 0);
    (
        id,
        c["plan_change"]["invoice_id"].as_i64().expect("an invoice"),
    )
}

/// The status of an account's plan changes, oldest first.
async fn change_statuses(app: &TestApp, id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT status FROM plan_changes WHERE hosting_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(app.lodge.store.reader())
        .await
        .unwrap()
}

/// An upgrade is priced from the day it is asked for: its invoice left unpaid past the
/// invoice expiry (14 days) lapses, as an order's first invoice does; the scheduler cancels
/// it with its change, the credit applied going back (found by the support-desk audit: paid
/// 4½ months late, it charged for the days gone on the old plan, and held every further
/// change back until the period ended). Paid once lapsed, before the scheduler's pass, it
/// goes back to credit, not applied. (The period's end does the same sooner: the
/// scheduler's pass and the next change then cancel it, found by the billing audit.)
async fn an_upgrade_left_unpaid_past_the_invoice_expiry_lapses(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (paid_late, late_upgrade) = waiting_upgrade(&app, &worker, "late-up.example").await;
    // A second account of the same period (ordered the same day as the first).
    app.clock.set(noon("2026-03-31"));
    let (id, upgrade) = waiting_upgrade(&app, &worker, "stale-up.example").await;
    // Thirteen days on: still payable (and applied when paid).
    app.clock.set(noon("2026-04-23"));
    app.lodge.scheduler_pass().await.unwrap();
    assert_eq!(invoice(&app, upgrade).await["status"], "unpaid");
    assert_eq!(change_statuses(&app, &id).await, ["awaiting_payment"]);
    // Fourteen: paid before the pass, it is given back to credit and not applied.
    app.clock.set(noon("2026-04-24"));
    let before = balance(&app).await;
    pay(&app, late_upgrade, "1.33", "TRF-LATE-UP").await;
    let inv = invoice(&app, late_upgrade).await;
    assert_eq!(inv["status"], "refunded", "{inv}");
    assert_eq!(change_statuses(&app, &paid_late).await, ["cancelled"]);
    assert_eq!(hosting(&app, &paid_late).await["plan"]["name"], "Starter");
    assert_eq!(
        balance(&app).await,
        before + 333,
        "what it received, as credit"
    );
    let before = balance(&app).await;
    app.lodge.scheduler_pass().await.unwrap();
    let inv = invoice(&app, upgrade).await;
    assert_eq!(inv["status"], "cancelled", "{inv}");
    assert_eq!(change_statuses(&app, &id).await, ["cancelled"]);
    // The 2.00 applied came back (the renewal of both accounts, issued with no credit
    // left, may take it from the balance later).
    let renewal = renewal_of(&app, &id, "2026-04-30").await;
    let r = invoice(&app, renewal).await;
    assert_eq!(cents(&r["total"]), 1000, "{r}");
    assert_eq!(
        cents(&r["credit_applied"]) + balance(&app).await,
        before + 200,
        "{r}"
    );
    let note: String = sqlx::query_scalar(
        "SELECT note FROM credit_ledger WHERE invoice_id = $1 AND kind = 'refund'",
    )
    .bind(upgrade)
    .fetch_one(app.lodge.store.reader())
    .await
    .unwrap();
    assert!(note.contains("not paid in time"), "{note}");
    let h = hosting(&app, &id).await;
    assert_eq!(h["plan"]["name"], "Starter", "{h}");
    // Nothing more on the next pass.
    app.lodge.scheduler_pass().await.unwrap();
    assert_eq!(change_statuses(&app, &id).await, ["cancelled"]);
    app.stop().await;
}

/// Found by the support-desk audit: an upgrade declined once invoiced could be withdrawn
/// by no one, and held every further change (and the credit applied to it) back until the
/// period ended. Its customer deletes its invoice (`/apiv2`), or staff cancel it: the change
/// is withdrawn, the credit applied comes back, and another change can be asked for.
async fn an_upgrade_invoice_is_withdrawn_by_its_customer_or_by_staff(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (id, upgrade) = waiting_upgrade(&app, &worker, "withdrawn.example").await;
    let (status, body) = crate::harness::v2(
        &app,
        reqwest::Method::DELETE,
        &format!("/apiv2/billing/invoices/{upgrade}"),
        crate::harness::Auth::Key(&app.key()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(invoice(&app, upgrade).await["status"], "cancelled");
    assert_eq!(change_statuses(&app, &id).await, ["cancelled"]);
    assert_eq!(balance(&app).await, 200, "the credit applied came back");
    let h = hosting(&app, &id).await;
    assert_eq!(h["plan"]["name"], "Starter", "{h}");
    assert!(h.to_string().contains("plan change withdrawn"), "{h}");

    // Asked again the next day (one invoiced change a day): accepted, no 409 for the
    // withdrawn one; staff cancel it this time.
    app.clock.set(noon("2026-04-11"));
    let c = changed(&app, &id, &plan_id(&app, "Business")).await;
    assert_eq!(c["plan_change"]["status"], "awaiting_payment", "{c}");
    let again = c["plan_change"]["invoice_id"].as_i64().unwrap();
    let cancel = format!("/v1/admin/invoices/{again}/cancel");
    let (status, _) = app.post(&cancel, &app.key(), &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "staff only");
    let (status, inv) = app.post(&cancel, &app.admin_key(), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{inv}");
    assert_eq!(inv["status"], "cancelled", "{inv}");
    assert_eq!(inv["amount_due"], "0.00", "{inv}");
    assert_eq!(change_statuses(&app, &id).await, ["cancelled", "cancelled"]);
    assert_eq!(balance(&app).await, 200);
    // Again, or a paid invoice: 409, nothing changed.
    let (status, body) = app.post(&cancel, &app.admin_key(), &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let first = first_invoice(&app, &id).await;
    let before = invoice(&app, first).await;
    let (status, body) = app
        .post(
            &format!("/v1/admin/invoices/{first}/cancel"),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(invoice(&app, first).await, before);
    assert_eq!(balance(&app).await, 200);
    app.stop().await;
}

/// The same change, when the customer asks for another before the scheduler's pass: the
/// stale one gives way instead of answering 409.
async fn an_upgrade_unpaid_when_its_period_ended_gives_way_to_a_new_change(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (id, upgrade) = waiting_upgrade(&app, &worker, "stale-again.example").await;
    // The renewal, issued in the lead time without the scheduler's other steps, paid.
    app.clock.set(noon("2026-04-20"));
    app.lodge.bill_renewals().await.unwrap();
    let renewal = renewal_of(&app, &id, "2026-04-30").await;
    pay(&app, renewal, "5.00", "TRF-STALE-1").await;
    // 2026-05-01, in the next period (2026-04-30 to 2026-05-31, 31 days, 30 left).
    app.clock.set(noon("2026-05-01"));
    let c = changed(&app, &id, &plan_id(&app, "Business")).await;
    assert_eq!(c["plan_change"]["status"], "awaiting_payment", "{c}");
    assert_eq!(c["plan_change"]["period_start"], "2026-04-30", "{c}");
    assert_eq!(c["plan_change"]["credit_applied"], "2.00", "{c}");
    assert_eq!(invoice(&app, upgrade).await["status"], "cancelled");
    assert_eq!(
        change_statuses(&app, &id).await,
        ["cancelled", "awaiting_payment"]
    );
    app.stop().await;
}

/// A period paid below the list price (a coupon, an introductory price) is prorated from
/// what was paid: a downgrade gives back at most what the period's rest was paid, and an
/// upgrade charges the difference from it (found by the billing audit: a month of Starter
/// bought for 1.00 with a coupon, moved to Legacy Basic the same day, gave 2.00 of
/// credit).
async fn a_discounted_period_is_prorated_from_what_was_paid(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let coupon_order = |name: &'static str| {
        let app = &app;
        async move {
            let mut body = crate::harness::order_body(crate::harness::STARTER_PACKAGE, 1, name);
            body["coupon"] = json!("STARTER1");
            let (status, placed) = crate::harness::v2(
                app,
                reqwest::Method::POST,
                "/apiv2/websites/order",
                crate::harness::Auth::Key(&app.key()),
                Some(&body),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{placed}");
            let (id, invoice): (String, i64) = sqlx::query_as(
                "SELECT h.id, i.id FROM hosting h JOIN invoices i ON i.order_id = h.order_id \
                 WHERE h.domain_name = $1",
            )
            .bind(name)
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap();
            (id, invoice)
        }
    };
    // Ordered with no credit, paid by bank transfer the next day (found by review: the
    // coupon's line kept the order's day, the period the payment's, and the proration
    // took the list price again).
    let (late, invoice) = coupon_order("coupon-late.example").await;
    app.clock.set(noon("2026-04-01"));
    pay(&app, invoice, "1.00", "late-coupon").await;
    add_credit(&app, &app.org_id(), "30.00").await;
    let mut hosting_of = Vec::new();
    for name in ["coupon-down.example", "coupon-up.example"] {
        hosting_of.push(coupon_order(name).await.0);
    }
    crate::provisioning::drain(worker).await;
    let before = balance(&app).await;
    assert_eq!(before, 3000 - 200, "two months of Starter at 1.00");
    // Down to Legacy Basic (3.00 a month) the same day: the month was paid 1.00, so
    // nothing comes back, and nothing is invoiced either.
    for id in [&late, &hosting_of[0]] {
        let c = changed(&app, id, &plan_id(&app, "Legacy Basic")).await;
        assert_eq!(c["plan_change"]["status"], "applied", "{c}");
        assert_eq!(c["plan_change"]["old_price"], "1.00", "{c}");
        assert_eq!(c["plan_change"]["credit_given"], "0.00", "{c}");
    }
    assert_eq!(balance(&app).await, before);
    // Then down again, to a plan at 2.00: the rest of the month is still paid at 1.00
    // (the free move paid nothing), so nothing comes back (found by review: 1.00 did).
    let (status, cheap) = app
        .post(
            "/v1/admin/plans",
            &app.admin_key(),
            &json!({
                "slug": "cheap", "group": "web-hosting", "name": "Cheap",
                "pricing": [{ "billing_cycle": "monthly", "price": "2.00", "is_default": true }],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cheap}");
    let c = changed(&app, &hosting_of[0], str_of(&cheap, "id")).await;
    assert_eq!(c["plan_change"]["old_price"], "1.00", "{c}");
    assert_eq!(c["plan_change"]["credit_given"], "0.00", "{c}");
    assert_eq!(balance(&app).await, before);
    // Up to Business: the difference from what was paid, for the whole month.
    let c = changed(&app, &hosting_of[1], &plan_id(&app, "Business")).await;
    let charge = cents(&c["plan_change"]["amount"]);
    let business = cents(&c["plan_change"]["new_price"]);
    assert_eq!(charge, business - 100, "{c}");
    assert_eq!(c["plan_change"]["old_price"], "1.00", "{c}");
    app.stop().await;
}

/// An upgrade waiting for its invoice (credit applied to part of it) when the account is
/// cancelled at once and terminated: the change is cancelled with its invoice, and the
/// credit applied comes back (found by the billing audit: it stayed on an invoice that
/// could be neither paid usefully nor deleted).
async fn a_waiting_upgrade_of_a_terminated_account_gives_its_credit_back(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = active_account(
        &app,
        &worker,
        "Starter",
        "monthly",
        "ends-waiting.example",
        "7.00",
    )
    .await;
    assert_eq!(balance(&app).await, 200);
    let c = changed(&app, &id, &plan_id(&app, "Business")).await;
    assert_eq!(c["plan_change"]["status"], "awaiting_payment", "{c}");
    assert_eq!(c["plan_change"]["credit_applied"], "2.00", "{c}");
    let invoice_id = c["plan_change"]["invoice_id"].as_i64().expect("an invoice");
    assert_eq!(balance(&app).await, 0);
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "immediate", "reason": "leaving" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    crate::provisioning::drain(worker).await;
    assert_eq!(hosting(&app, &id).await["status"], "terminated");
    assert_eq!(balance(&app).await, 200, "the credit applied came back");
    let inv = invoice(&app, invoice_id).await;
    assert_eq!(inv["status"], "cancelled", "{inv}");
    let changes = lodge_store::plan_change::changes_of(
        &mut *app.lodge.store.reader().acquire().await.unwrap(),
        id.parse().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].status, "cancelled");
    app.stop().await;
}

/// Past its due date with the renewal unpaid (the suspension grace), a change is refused
/// saying so, not "the next period is paid already" (found by the billing audit).
async fn a_change_past_the_unpaid_due_date_says_the_renewal_is_unpaid(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = active_account(&app, &worker, "Starter", "monthly", "grace.example", "5.00").await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    app.clock.set(noon(&due) + SignedDuration::from_hours(48));
    let before = change_counts(&app).await;
    let (status, body) = change(&app, &id, &plan_id(&app, "Business")).await;
    assert_detail(status, &body, StatusCode::CONFLICT);
    assert!(
        body["detail"].as_str().unwrap().contains("not paid yet"),
        "{body}"
    );
    assert_eq!(change_counts(&app).await, before);
    app.stop().await;
}

/// Downgrades and upgrades of one account fired together, with credit for any of them:
/// each change applied is recorded from the plan the account was on when it was applied,
/// in its row and its summary (found by the money audit: "Business → Starter" recorded
/// for a move from Reseller Boost); a racer checked against a plan changed meanwhile is
/// refused (409), never priced from it.
async fn changes_racing_up_and_down_record_the_plan_they_moved_from(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    add_credit(&app, &app.org_id(), "200.00").await;
    let id = active_account(&app, &worker, "Business", "monthly", "updown.example", "0").await;
    app.clock.set(noon("2026-04-15"));
    let starter = plan_id(&app, "Starter");
    let boost = plan_id(&app, "Reseller Boost");
    let answers = join_all((0..12).map(|i| {
        let plan = if i % 2 == 0 { &starter } else { &boost };
        change(&app, &id, plan)
    }))
    .await;
    for (status, body) in &answers {
        assert!(
            *status == StatusCode::OK
                || *status == StatusCode::CONFLICT
                || *status == StatusCode::BAD_REQUEST,
            "{status} {body}"
        );
    }
    assert!(
        answers.iter().any(|(s, _)| *s == StatusCode::OK),
        "{answers:?}"
    );
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT from_plan_id, to_plan_id, summary FROM plan_changes WHERE hosting_id = $1 ORDER BY id",
    )
    .bind(id.as_str())
    .fetch_all(app.lodge.store.reader())
    .await
    .unwrap();
    let name = |plan: &str| {
        if plan == starter {
            "Starter"
        } else if plan == boost {
            "Reseller Boost"
        } else {
            "Business"
        }
    };
    let mut on = plan_id(&app, "Business");
    for (from, to, summary) in &rows {
        assert_eq!(
            from, &on,
            "each change moves from where the last one left: {rows:?}"
        );
        assert_eq!(
            summary,
            &format!("{} → {}", name(from), name(to)),
            "{rows:?}"
        );
        on = to.clone();
    }
    assert_eq!(hosting(&app, &id).await["plan"]["id"], json!(on));
    app.stop().await;
}

/// A difference invoiced for a next period paid at the old price, left unpaid, is
/// cancelled with an immediate cancellation: the account will not have that period (found
/// by the re-audit: it stayed payable after the account was terminated).
async fn an_unpaid_difference_ends_with_an_immediate_cancellation(app: TestApp) {
    let _driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (id, body) =
        upgraded_with_its_renewal_paid(&app, &worker, "diff-ends.example", "TRF-REN-9").await;
    let upgrade = body["plan_change"]["invoice_id"].as_i64().unwrap();
    app.clock.set(noon("2026-04-25"));
    pay(&app, upgrade, "1.67", "TRF-UP-9").await;
    let difference = adjustment_from(&app, &id, "2026-04-30").await;
    let (inv_id, _) = difference[0];
    assert_eq!(invoice(&app, inv_id).await["status"], "unpaid");
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "immediate", "reason": "leaving" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(invoice(&app, inv_id).await["status"], "cancelled");
    let (status, body) = app
        .post(
            &format!("/v1/admin/invoices/{inv_id}/payments"),
            &app.admin_key(),
            &json!({ "amount": "5.00", "method": "bank_transfer", "reference": "TRF-DIFF-9" }),
        )
        .await;
    // Money that came anyway goes to credit; the invoice stays cancelled.
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["invoice"]["status"], "cancelled", "{body}");
    crate::provisioning::drain(worker).await;
    assert_eq!(hosting(&app, &id).await["status"], "terminated");
    app.stop().await;
}

/// A plan priced in tens of millions (a few hundred dollars in rials or lira) changes as any
/// other: the kept share of what its period was billed is `amount × kept / total` of two
/// such amounts, which was worked out in 64-bit SQL (found by the code review: PostgreSQL
/// answered the change 500, "bigint out of range"; SQLite went to floating point). A price
/// above the ceiling of every staff amount is refused.
async fn plans_priced_in_millions_change_like_any_other(app: TestApp) {
    PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let mut ids = vec![];
    for (slug, price) in [("big-one", "40000000.00"), ("big-two", "50000000.00")] {
        let (status, body) = app
            .post(
                "/v1/admin/plans",
                &app.admin_key(),
                &json!({ "slug": slug, "group": "web-hosting", "name": slug,
                         "pricing": [{ "billing_cycle": "monthly", "price": price }] }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(str_of(&body, "id").to_owned());
    }
    let (status, body) = app
        .post(
            "/v1/admin/plans",
            &app.admin_key(),
            &json!({ "slug": "too-big", "group": "web-hosting", "name": "too-big",
                     "pricing": [{ "billing_cycle": "monthly",
                                   "price": "46116860184273879.04" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.to_string().contains("at most 10000000000.00"),
        "the ceiling is said: {body}"
    );

    add_credit(&app, &app.org_id(), "40000000.00").await;
    let body = json!({ "plan_id": ids[0], "domain_source": "external",
                       "domain_name": "millions.example", "billing_cycle": "monthly" });
    let (status, o) = app.post(&order_path(&app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    assert_eq!(o["status"], "active", "paid from credit: {o}");
    let id = str_of(&o, "hosting_id").to_owned();
    worker.run_once().await.unwrap();
    // 2026-04-20: 10 of the period's 30 days left; 10,000,000.00 more a month: 3,333,333.33.
    app.clock.set(noon("2026-04-20"));
    let body = changed(&app, &id, &ids[1]).await;
    assert_eq!(body["plan_change"]["amount"], "3333333.33", "{body}");
    // The difference paid, and back down the same day: 10 days of 10,000,000.00 given back
    // (the period's kept share, worked out from two amounts in the tens of millions).
    let invoice = body["plan_change"]["invoice_id"].as_i64().unwrap();
    pay(&app, invoice, "3333333.33", "big-difference").await;
    let body = changed(&app, &id, &ids[0]).await;
    assert_eq!(body["plan_change"]["amount"], "-3333333.33", "{body}");
    app.stop().await;
}

/// An upgrade paid from credit after the next period was paid at the old price: its payment
/// issues that period's difference and pays it from the same credit, in one transaction.
/// Every ledger entry's `balance_after` follows the one before (found by the accounting
/// audit: on PostgreSQL, where payments are written as a group, the second entry said the
/// balance the first left, the credit history contradicting its own balance).
async fn an_upgrade_paid_from_credit_that_also_covers_its_difference_keeps_the_ledger_running(
    app: TestApp,
) {
    let _driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (id, body) =
        upgraded_with_its_renewal_paid(&app, &worker, "running.example", "TRF-RUN-1").await;
    let url = str_of(&body["plan_change"], "invoice_payment_url").to_owned();
    let token = url.rsplit('/').next().unwrap().to_owned();
    add_credit(&app, &app.org_id(), "10.00").await;
    let resp = crate::pages::page_form_post(&app, &format!("/pay/{token}/credit"), None).await;
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("/pay/{token}?result=paid")
    );
    // 1.67 for the upgrade, then the next period's 5.00 difference, both from credit.
    let difference = adjustment_from(&app, &id, "2026-04-30").await;
    assert_eq!(difference.len(), 1, "{difference:?}");
    assert_eq!(invoice(&app, difference[0].0).await["status"], "paid");
    assert_eq!(balance(&app).await, 1000 - 167 - 500);
    let credit = get_ok(&app, &format!("/v1/organizations/{}/credit", app.org_id())).await;
    let mut rows: Vec<(i64, i64)> = credit["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (cents(&e["amount"]), cents(&e["balance_after"])))
        .collect();
    rows.reverse();
    let mut running = 0;
    for (amount, after) in &rows {
        running += amount;
        assert_eq!(
            *after, running,
            "every balance_after is the running sum: {credit}"
        );
    }
    assert_eq!(running, 1000 - 167 - 500, "{credit}");
    app.stop().await;
}

/// One payment from credit of an upgrade and another invoice, the credit covering exactly
/// the two: the upgrade's settling pays the next period's difference from that credit, so
/// the second invoice is no longer covered, and the payment is refused whole as credit that
/// does not cover it (`402`), nothing paid (found by review: the second invoice was paid
/// from the balance read before the settling, and the database refused the negative
/// balance: a 500).
async fn a_payment_whose_upgrade_spends_credit_on_its_difference_is_refused_whole(app: TestApp) {
    let _driver = PackageDriver::install(&app);
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (_, body) =
        upgraded_with_its_renewal_paid(&app, &worker, "both.example", "TRF-BOTH-1").await;
    let upgrade = body["plan_change"]["invoice_id"].as_i64().unwrap();
    let first = crate::harness::order_external(&app, "second.example").await["invoice_id"]
        .as_i64()
        .unwrap();
    add_credit(&app, &app.org_id(), "6.67").await;
    let before = change_counts(&app).await;
    let (status, answer) = crate::harness::v2(
        &app,
        reqwest::Method::GET,
        &format!("/apiv2/billing/pay/prepay/{upgrade},{first}"),
        crate::harness::Auth::Key(&app.key()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{answer}");
    assert_eq!(change_counts(&app).await, before, "nothing written");
    assert_eq!(balance(&app).await, 667);
    for unpaid in [upgrade, first] {
        assert_eq!(invoice(&app, unpaid).await["status"], "unpaid");
    }
    app.stop().await;
}
