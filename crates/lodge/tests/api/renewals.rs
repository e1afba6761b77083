//! Issue: the second period and after (renewals, overdue suspension and termination).
//!
//! The scheduler and the worker never run in the background here: each test moves the
//! manual clock and calls `Lodge::schedule_due` and `Worker::run_once` itself, day by day
//! where the day matters. Accounts are created on the fake panel of `provisioning.rs`.

use jiff::civil::Date;
use lodge_services::provisioning::Worker;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{add_credit, cents, counts, hosting, hosting_path, str_of, TestApp};
use crate::on_both_engines;
use crate::orders::assert_fields;
use crate::provisioning::{drain, noon, FakeDriver};

on_both_engines!(
    a_monthly_account_with_credit_renews_for_a_year,
    an_unpaid_renewal_suspends_and_its_payment_lifts_the_suspension,
    staff_suspending_an_overdue_account_keeps_it_suspended_when_paid,
    a_payments_unsuspension_leaves_a_staff_suspension_recorded_meanwhile,
    a_renewal_unpaid_past_the_termination_grace_terminates_the_account,
    an_outage_past_the_graces_warns_then_suspends_then_terminates,
    an_outage_after_the_warning_suspends_before_it_terminates,
    an_end_of_period_cancellation_is_never_billed_again,
    a_renewal_paid_after_an_end_of_period_cancellation_is_served,
    two_schedulers_bill_every_period_once,
    the_preview_shows_what_the_scheduler_will_do_and_writes_nothing,
    the_preview_counts_the_credit_that_will_pay_a_renewal,
    a_renewal_issued_late_is_due_the_day_it_is_issued,
    paying_a_renewal_after_one_of_its_accounts_ended_moves_only_the_live_one,
    a_renewal_is_listed_and_paid_through_apiv2,
    domains_renew_on_their_own_dates,
    a_manual_domains_changes_are_left_to_staff,
    a_domain_unpaid_past_the_grace_expires_with_its_account,
    notes_written_while_suspended_leave_the_renewals_suspension_to_lift,
    a_renewal_paid_late_within_the_grace_renews_its_domain,
    a_domain_without_auto_renew_is_not_billed_and_expires,
    one_pass_bills_an_organizations_dates_from_one_balance,
    a_renewal_paid_beyond_what_is_left_of_it_gives_the_rest_back,
    credit_added_after_a_renewal_was_issued_pays_it_before_suspension,
    credit_added_after_a_renewal_was_issued_pays_it_before_its_reminder,
    the_preview_ends_a_cancelled_account_once,
    an_unpaid_renewal_ends_with_an_immediate_cancellation_before_the_worker_runs,
    an_account_cancelled_at_once_comes_off_a_shared_renewal_once,
);

// ---- helpers ----

fn order_path(app: &TestApp) -> String {
    format!(
        "/v1/organizations/{}/projects/{}/hosting/order",
        app.org_id(),
        app.project_id()
    )
}

/// Orders `domain` (external) on Starter, monthly (5.00); returns the hosting account's id.
async fn order(app: &TestApp, domain: &str) -> String {
    let body = json!({ "plan_id": crate::harness::starter(app), "domain_source": "external",
                       "domain_name": domain, "billing_cycle": "monthly" });
    let (status, o) = app.post(&order_path(app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "order {domain}: {o}");
    assert_eq!(o["status"], "active", "paid from credit: {o}");
    str_of(&o, "hosting_id").to_owned()
}

/// The organization's credit balance, in cents.
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

/// Every renewal invoice of the demo organization, oldest first, with its lines.
async fn renewals(app: &TestApp) -> Vec<Value> {
    let mut all = Vec::new();
    for page in 1.. {
        let (status, list) = app
            .get(
                &format!(
                    "/v1/organizations/{}/invoices?page={page}&page_size=100",
                    app.org_id()
                ),
                &app.key(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let results = list["results"].as_array().expect("results").clone();
        if results.is_empty() {
            break;
        }
        for i in results.iter().filter(|i| i["kind"] == "renewal") {
            let (status, full) = app
                .get(
                    &format!("/v1/organizations/{}/invoices/{}", app.org_id(), i["id"]),
                    &app.key(),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{full}");
            all.push(full);
        }
        if list["next"].is_null() {
            break;
        }
    }
    all.sort_by_key(|i| i["id"].as_i64());
    all
}

/// `anchor` plus `months`, as the calendar counts it (the end of a shorter month).
fn months_after(anchor: &str, months: i64) -> String {
    let d: Date = anchor.parse().expect("a date");
    d.checked_add(jiff::Span::new().months(months))
        .expect("in range")
        .to_string()
}

/// One scheduler pass and every job it led to, on `app`'s node.
async fn pass(app: &TestApp, worker: &Worker) {
    app.lodge.schedule_due().await.expect("scheduler pass");
    drain(worker.clone()).await;
}

/// The last history entry of an account.
fn last_entry(h: &Value) -> Value {
    h["history"]
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .unwrap_or_else(|| panic!("no history: {h}"))
}

/// Staff record a bank transfer paying `amount` of invoice `id`.
async fn bank_transfer(app: &TestApp, id: &Value, amount: &str, reference: &str) {
    let (status, p) = app
        .post(
            &format!("/v1/admin/invoices/{id}/payments"),
            &app.admin_key(),
            &json!({ "amount": amount, "method": "bank_transfer", "reference": reference }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
}

/// A fake panel installed on `app`, and a worker that has created `hosting`'s account.
async fn active(app: &TestApp, fake: &FakeDriver, domain: &str) -> (String, Worker) {
    fake.install(&app.lodge);
    let id = order(app, domain).await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    drain(worker.clone()).await;
    assert_eq!(hosting(app, &id).await["status"], "active");
    (id, worker)
}

/// [`active`], its first order paid from credit, then suspended a week after its renewal
/// (issued 14 days before) went unpaid: the account's id, the worker and the renewal.
async fn suspended_for_its_renewal(
    app: &TestApp,
    fake: &FakeDriver,
    domain: &str,
) -> (String, Worker, Value) {
    add_credit(app, &app.org_id(), "5.00").await;
    let (id, worker) = active(app, fake, domain).await;
    let due = str_of(&hosting(app, &id).await, "next_due_date").to_owned();
    app.clock.set(noon(&due, -14));
    pass(app, &worker).await;
    let inv = renewals(app).await[0].clone();
    // Warned the day after its due date, suspended at the grace.
    app.clock.set(noon(&due, 1));
    pass(app, &worker).await;
    app.clock.set(noon(&due, 7));
    pass(app, &worker).await;
    assert_eq!(hosting(app, &id).await["status"], "suspended");
    (id, worker, inv)
}

// ---- tests ----

async fn a_monthly_account_with_credit_renews_for_a_year(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "100.00").await;
    let (id, worker) = active(&app, &fake, "renews.test").await;
    let h = hosting(&app, &id).await;
    // Ordered and paid on 31 March: its periods count from the 31st.
    let anchor = "2026-03-31";
    assert_eq!(h["next_due_date"], months_after(anchor, 1), "{h}");
    assert_eq!(balance(&app).await, 10_000 - 500);

    for k in 1..=12 {
        let due = months_after(anchor, k);
        // The day before the lead time: nothing yet.
        app.clock.set(noon(&due, -15));
        pass(&app, &worker).await;
        assert_eq!(renewals(&app).await.len(), usize::try_from(k - 1).unwrap());
        // Fourteen days before: billed, paid from credit at once, the next period begun.
        app.clock.set(noon(&due, -14));
        pass(&app, &worker).await;
        pass(&app, &worker).await; // and a second pass the same day bills nothing
        let all = renewals(&app).await;
        assert_eq!(
            all.len(),
            usize::try_from(k).unwrap(),
            "period {k}: {all:?}"
        );
        let inv = all.last().unwrap();
        assert_eq!(inv["status"], "paid", "{inv}");
        assert_eq!(inv["total"], "5.00", "{inv}");
        assert_eq!(inv["credit_applied"], "5.00", "{inv}");
        assert_eq!(inv["due_date"], due.as_str(), "{inv}");
        let line = &inv["lines"][0];
        assert_eq!(line["kind"], "plan", "{inv}");
        assert_eq!(line["service_id"], id.as_str(), "{inv}");
        assert_eq!(line["period_start"], due.as_str(), "{inv}");
        assert_eq!(line["period_end"], months_after(anchor, k + 1), "{inv}");
        let h = hosting(&app, &id).await;
        assert_eq!(h["next_due_date"], months_after(anchor, k + 1), "{h}");
        assert_eq!(h["status"], "active", "{h}");
    }
    // Twelve periods, each billed once, each paid from credit.
    assert_eq!(balance(&app).await, 10_000 - 13 * 500);
    let numbers: Vec<String> = renewals(&app)
        .await
        .iter()
        .map(|i| str_of(i, "number").to_owned())
        .collect();
    let mut unique = numbers.clone();
    unique.dedup();
    assert_eq!(unique.len(), 12, "{numbers:?}");
    assert!(fake.state().ops.is_empty(), "never suspended");
    app.stop().await;
}

async fn an_unpaid_renewal_suspends_and_its_payment_lifts_the_suspension(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "5.00").await;
    let (id, worker) = active(&app, &fake, "late.test").await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();

    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let all = renewals(&app).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let inv = all[0].clone();
    assert_eq!(inv["status"], "unpaid", "no credit left: {inv}");
    assert_eq!(inv["amount_due"], "5.00", "{inv}");
    assert!(inv["payment_url"].is_string(), "{inv}");

    // Due, warned the day after, and six days late: still active.
    for day in [0, 1, 6] {
        app.clock.set(noon(&due, day));
        pass(&app, &worker).await;
        assert_eq!(hosting(&app, &id).await["status"], "active", "day {day}");
    }
    // Seven days late: suspended, by the scheduler.
    app.clock.set(noon(&due, 7));
    pass(&app, &worker).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "suspended", "{h}");
    assert_eq!(last_entry(&h)["actor"], "scheduler", "{h}");
    assert_eq!(fake.state().ops.len(), 1, "suspended on the panel once");
    // Further passes change nothing.
    app.clock.set(noon(&due, 8));
    pass(&app, &worker).await;
    assert_eq!(fake.state().ops.len(), 1);

    // Paid by bank transfer: unsuspended at once, and the next period begins.
    bank_transfer(&app, &inv["id"], "5.00", "late-1").await;
    drain(worker.clone()).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    assert_eq!(last_entry(&h)["actor"], "scheduler", "{h}");
    // Counted from the anchor (31 March): 30 April, then 31 May.
    assert_eq!(h["next_due_date"], months_after("2026-03-31", 2), "{h}");
    let ops: Vec<&str> = fake.state().ops.iter().map(|(op, _)| *op).collect();
    assert_eq!(ops, ["suspend", "unsuspend"]);
    app.stop().await;
}

/// Staff suspend (abuse, say) an account the scheduler suspended for an unpaid renewal:
/// recorded as theirs, so paying the renewal moves the period on but leaves the account
/// suspended until staff lift it (found by the billing audit: 409, and paying lifted the
/// only suspension there was).
async fn staff_suspending_an_overdue_account_keeps_it_suspended_when_paid(app: TestApp) {
    let fake = FakeDriver::default();
    let (id, worker, inv) = suspended_for_its_renewal(&app, &fake, "abuse.test").await;
    let staff = |action: &'static str| {
        let app = &app;
        let id = id.clone();
        async move {
            app.post(
                &format!("/v1/admin/hosting/{id}/{action}"),
                &app.admin_key(),
                &json!({ "reason": "abuse: phishing" }),
            )
            .await
        }
    };
    let (status, h) = staff("suspend").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{h}");
    assert_eq!(h["status"], "suspended", "{h}");
    let last = last_entry(&h);
    assert_eq!(
        last["note"], "suspended by staff too: abuse: phishing",
        "{h}"
    );
    assert_ne!(last["actor"], "scheduler", "{h}");
    drain(worker.clone()).await;
    bank_transfer(&app, &inv["id"], "5.00", "abuse-1").await;
    drain(worker.clone()).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "suspended", "staff's suspension stays: {h}");
    assert_eq!(h["next_due_date"], months_after("2026-03-31", 2), "{h}");
    let ops: Vec<&str> = fake.state().ops.iter().map(|(op, _)| *op).collect();
    assert_eq!(ops, ["suspend"]);
    // Staff lift it.
    let (status, h) = staff("unsuspend").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{h}");
    drain(worker.clone()).await;
    assert_eq!(hosting(&app, &id).await["status"], "active");
    app.stop().await;
}

/// The race of two nodes: a payment queues the scheduler's unsuspension while staff record
/// their own suspension of the account (neither sees the other's uncommitted write). The
/// unsuspension, when it runs, leaves the account suspended: staff's came after (found by
/// review).
async fn a_payments_unsuspension_leaves_a_staff_suspension_recorded_meanwhile(app: TestApp) {
    let fake = FakeDriver::default();
    let (id, worker, inv) = suspended_for_its_renewal(&app, &fake, "raced.test").await;
    // Paid: the unsuspension is queued, not yet run.
    bank_transfer(&app, &inv["id"], "5.00", "raced-1").await;
    // Staff's suspension, as the other node committed it meanwhile.
    let mut conn = app.lodge.store.write_conn().await.unwrap();
    lodge_store::hosting::record_history(
        &mut *conn,
        id.parse().unwrap(),
        Some(lodge_core::HostingStatus::Suspended),
        lodge_core::HostingStatus::Suspended,
        "suspended by staff too: abuse",
        "staff:01a24b98-0000-7000-8000-000000000000",
        app.lodge.now_us(),
    )
    .await
    .unwrap();
    drop(conn);
    drain(worker.clone()).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "suspended", "{h}");
    let ops: Vec<&str> = fake.state().ops.iter().map(|(op, _)| *op).collect();
    assert_eq!(ops, ["suspend"], "never unsuspended on the panel");
    app.stop().await;
}

/// A customer suspended for an unpaid renewal who asks to cancel at the period's end, then
/// withdraws it, then pays: the suspension is lifted (found by review: the history notes of
/// the request made the customer the account's last suspender, and paying kept it
/// suspended).
async fn notes_written_while_suspended_leave_the_renewals_suspension_to_lift(app: TestApp) {
    let fake = FakeDriver::default();
    let (id, worker, inv) = suspended_for_its_renewal(&app, &fake, "noted.test").await;
    let (status, h) = crate::harness::cancel(&app, &id, "end_of_period").await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let (status, h) = crate::harness::revoke_cancellation(&app, &id).await;
    assert_eq!(status, StatusCode::OK, "{h}");
    bank_transfer(&app, &inv["id"], "5.00", "noted-1").await;
    drain(worker.clone()).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    app.stop().await;
}

async fn a_renewal_unpaid_past_the_termination_grace_terminates_the_account(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "7.00").await;
    let (id, worker) = active(&app, &fake, "gone.test").await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();

    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let inv = renewals(&app).await[0].clone();
    // The 2.00 left was applied; 3.00 is due.
    assert_eq!(inv["credit_applied"], "2.00", "{inv}");
    assert_eq!(inv["amount_due"], "3.00", "{inv}");
    assert_eq!(balance(&app).await, 0);

    for day in [1, 7, 29] {
        app.clock.set(noon(&due, day));
        pass(&app, &worker).await;
        let expected = if day == 1 { "active" } else { "suspended" };
        assert_eq!(hosting(&app, &id).await["status"], expected, "day {day}");
    }
    app.clock.set(noon(&due, 30));
    pass(&app, &worker).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "terminated", "{h}");
    assert_eq!(last_entry(&h)["actor"], "scheduler", "{h}");
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["status"], "cancelled", "{inv}");
    assert_eq!(balance(&app).await, 200, "the credit applied came back");

    // Nothing more, ever: no new renewal, no second termination.
    for months in 1..4 {
        app.clock.set(noon(&due, 30 * months + 5));
        pass(&app, &worker).await;
    }
    assert_eq!(renewals(&app).await.len(), 1);
    let ops: Vec<&str> = fake.state().ops.iter().map(|(op, _)| *op).collect();
    assert_eq!(ops, ["suspend", "terminate"]);
    // A late payment revives nothing: the invoice stays cancelled, the money goes to credit.
    let before = balance(&app).await;
    let (status, body) = app
        .post(
            &format!("/v1/admin/invoices/{}/payments", inv["id"]),
            &app.admin_key(),
            &json!({ "amount": "3.00", "method": "bank_transfer", "reference": "too-late" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["invoice"]["status"], "cancelled", "{body}");
    assert_eq!(balance(&app).await, before + 300);
    assert_eq!(hosting(&app, &id).await["status"], "terminated");
    app.stop().await;
}

async fn an_end_of_period_cancellation_is_never_billed_again(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "100.00").await;
    let (id, worker) = active(&app, &fake, "leaving.test").await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "end_of_period", "reason": "moving on" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    for day in [-14, -1, 0, 1, 20, 40, 80] {
        app.clock.set(noon(&due, day));
        pass(&app, &worker).await;
    }
    assert!(renewals(&app).await.is_empty(), "never billed again");
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "terminated", "{h}");
    assert_eq!(last_entry(&h)["actor"], "scheduler", "{h}");
    assert_eq!(balance(&app).await, 9500);
    app.stop().await;
}

/// Found by the simulation (`lodge bench simulate`): the renewal was issued, then the
/// customer asked to cancel at the end of the period, then paid the renewal anyway. The
/// period paid for is served: the account ends when its paid period does, not on the old
/// due date (and is not billed again).
async fn a_renewal_paid_after_an_end_of_period_cancellation_is_served(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "5.00").await;
    let (id, worker) = active(&app, &fake, "paid-then-leaving.test").await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["status"], "unpaid", "{inv}");

    app.clock.set(noon(&due, -10));
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "end_of_period", "reason": "moving on" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["cancellation"]["effective_date"], due.as_str(), "{h}");
    bank_transfer(&app, &inv["id"], "5.00", "paid-after-cancel").await;
    drain(worker.clone()).await;
    let h = hosting(&app, &id).await;
    let paid_until = months_after("2026-03-31", 2);
    assert_eq!(h["next_due_date"], paid_until.as_str(), "{h}");
    assert_eq!(
        h["cancellation"]["effective_date"],
        paid_until.as_str(),
        "{h}"
    );

    for day in [0, 1, 20] {
        app.clock.set(noon(&due, day));
        pass(&app, &worker).await;
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "active", "day {day} of the paid period: {h}");
    }
    app.clock.set(noon(&paid_until, -14));
    pass(&app, &worker).await;
    assert_eq!(renewals(&app).await.len(), 1, "never billed again");
    app.clock.set(noon(&paid_until, 0));
    pass(&app, &worker).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "terminated", "{h}");
    assert_eq!(balance(&app).await, 0);
    app.stop().await;
}

async fn two_schedulers_bill_every_period_once(app: TestApp) {
    const MONTHS: i64 = 24;
    let fake = FakeDriver::default();
    let other = app.second_node().await;
    fake.install(&other);
    add_credit(&app, &app.org_id(), "500.00").await;
    let (a, worker) = active(&app, &fake, "one.test").await;
    let b = order(&app, "two.test").await;
    let c = order(&app, "three.test").await;
    drain(worker.clone()).await;
    let other_worker = Worker::new(other.clone(), "node-2");
    let anchor = "2026-03-31";
    for k in 1..=MONTHS {
        let due = months_after(anchor, k);
        for day in [-14, -13] {
            app.clock.set(noon(&due, day));
            let (x, y) = tokio::join!(app.lodge.schedule_due(), other.schedule_due());
            x.expect("node 1");
            y.expect("node 2");
            let (x, y) = tokio::join!(drain(worker.clone()), drain(other_worker.clone()));
            let _ = (x, y);
        }
    }
    let all = renewals(&app).await;
    // One invoice per month for the three accounts due together, three lines each.
    assert_eq!(all.len(), usize::try_from(MONTHS).unwrap());
    for (k, inv) in (1..).zip(&all) {
        assert_eq!(inv["status"], "paid", "{inv}");
        let lines = inv["lines"].as_array().unwrap();
        let mut services: Vec<&str> = lines
            .iter()
            .map(|l| l["service_id"].as_str().unwrap())
            .collect();
        services.sort_unstable();
        let mut expected = [a.as_str(), b.as_str(), c.as_str()];
        expected.sort_unstable();
        assert_eq!(services, expected, "{inv}");
        for l in lines {
            assert_eq!(l["period_start"], months_after(anchor, k), "{inv}");
        }
    }
    // Gapless numbers: the 3 first invoices, then the renewals.
    let numbers: Vec<i64> = all
        .iter()
        .map(|i| {
            str_of(i, "number")
                .trim_start_matches("INV-")
                .parse()
                .unwrap()
        })
        .collect();
    for w in numbers.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{numbers:?}");
    }
    assert_eq!(balance(&app).await, 50_000 - 3 * 500 - MONTHS * 3 * 500);
    for id in [&a, &b, &c] {
        assert_eq!(
            hosting(&app, id).await["next_due_date"],
            months_after(anchor, MONTHS + 1)
        );
    }
    app.stop().await;
}

/// Found by the time-travel audit: a renewal issued before the nodes went down, back 35
/// days after its due date, was cancelled and its account terminated on the first pass,
/// unwarned and never suspended, while the customer could not pay (the payment page was
/// down too). The graces now count from the warning when it came late: warned on the day
/// the nodes are back (with a suspension date still to come), suspended six days later,
/// terminated 29 days later.
async fn an_outage_past_the_graces_warns_then_suspends_then_terminates(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "5.00").await;
    let (id, worker) = active(&app, &fake, "outage.test").await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    let plus = |days: i64| days_after(&due, days);
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["status"], "unpaid", "{inv}");

    // Back 35 days after the due date: told, nothing else.
    app.clock.set(noon(&due, 35));
    pass(&app, &worker).await;
    pass(&app, &worker).await;
    assert_eq!(hosting(&app, &id).await["status"], "active");
    assert_eq!(renewals(&app).await[0]["status"], "unpaid");
    let (told,): (String,) =
        sqlx::query_as("SELECT data FROM events WHERE kind = 'invoice.overdue' AND subject = $1")
            .bind(format!("invoice:{}", inv["id"]))
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap();
    let told: Value = serde_json::from_str(&told).unwrap();
    assert_eq!(told["suspend_on"], plus(41), "{told}");
    let (_, p) = preview(&app, "60").await;
    assert_eq!(p["suspensions"][0]["date"], plus(41), "{p}");
    assert_eq!(p["terminations"][0]["date"], plus(64), "{p}");

    for (day, status) in [
        (40, "active"),
        (41, "suspended"),
        (63, "suspended"),
        (64, "terminated"),
    ] {
        app.clock.set(noon(&due, day));
        pass(&app, &worker).await;
        assert_eq!(hosting(&app, &id).await["status"], status, "day {day}");
    }
    assert_eq!(renewals(&app).await[0]["status"], "cancelled");
    app.stop().await;
}

/// Found by review of the fix above: warned on time, then every node down until past the
/// termination date, the account was terminated on the first pass back, never suspended.
/// The suspension step is taken first, and the termination comes the termination grace less
/// the suspension grace (23 days) after it.
async fn an_outage_after_the_warning_suspends_before_it_terminates(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "5.00").await;
    let (id, worker) = active(&app, &fake, "outage-after.test").await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    let plus = |days: i64| days_after(&due, days);
    for day in [-14, 1] {
        app.clock.set(noon(&due, day));
        pass(&app, &worker).await;
    }
    assert_eq!(hosting(&app, &id).await["status"], "active");
    // Back at +35: suspended, not terminated; the preview says when it will be.
    app.clock.set(noon(&due, 35));
    pass(&app, &worker).await;
    pass(&app, &worker).await;
    assert_eq!(hosting(&app, &id).await["status"], "suspended");
    let (_, p) = preview(&app, "60").await;
    assert_eq!(p["terminations"][0]["date"], plus(58), "{p}");
    for (day, status) in [(57, "suspended"), (58, "terminated")] {
        app.clock.set(noon(&due, day));
        pass(&app, &worker).await;
        assert_eq!(hosting(&app, &id).await["status"], status, "day {day}");
    }
    assert_eq!(renewals(&app).await[0]["status"], "cancelled");
    app.stop().await;
}

/// The day `days` after `due` (a `YYYY-MM-DD` date), as the API writes it.
fn days_after(due: &str, days: i64) -> String {
    let d: Date = due.parse().unwrap();
    d.checked_add(jiff::Span::new().days(days))
        .unwrap()
        .to_string()
}

/// The staff preview, `days` ahead.
async fn preview(app: &TestApp, days: &str) -> (StatusCode, Value) {
    app.get(
        &format!("/v1/admin/billing/preview?days={days}"),
        &app.admin_key(),
    )
    .await
}

async fn the_preview_shows_what_the_scheduler_will_do_and_writes_nothing(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "5.00").await;
    let (id, worker) = active(&app, &fake, "ahead.test").await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();

    // Today (31 March) the renewal is more than 14 days off: 10 days ahead shows nothing,
    // 30 days ahead shows the invoice to issue on due - 14.
    let before = counts(&app).await;
    let (status, p) = preview(&app, "10").await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["renewals"].as_array().unwrap().len(), 0, "{p}");
    let (_, p) = preview(&app, "30").await;
    let r = &p["renewals"][0];
    assert_eq!(r["due_date"], due.as_str(), "{p}");
    let d: Date = due.parse().unwrap();
    let issue = d
        .checked_sub(jiff::Span::new().days(14))
        .unwrap()
        .to_string();
    assert_eq!(r["issue_date"], issue.as_str(), "{p}");
    assert_eq!(r["total_minor"], 500, "{p}");
    assert_eq!(r["accounts"][0]["hosting_id"], id.as_str(), "{p}");

    // Far enough ahead, the renewal not issued yet, which no credit covers, leads to the
    // account's suspension at +7 and its termination at +30.
    let to_due = i64::from(
        (d - crate::harness::start_time()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date())
        .get_days(),
    );
    let (_, p) = preview(&app, &(to_due + 30).to_string()).await;
    let on = |days: i64| {
        d.checked_add(jiff::Span::new().days(days))
            .unwrap()
            .to_string()
    };
    assert_eq!(p["suspensions"][0]["hosting_id"], id.as_str(), "{p}");
    assert_eq!(p["suspensions"][0]["date"], on(7), "{p}");
    assert!(p["suspensions"][0]["invoice_id"].is_null(), "{p}");
    assert_eq!(p["terminations"][0]["date"], on(30), "{p}");
    let (_, p) = preview(&app, &(to_due + 29).to_string()).await;
    assert_eq!(p["terminations"].as_array().unwrap().len(), 0, "{p}");
    assert_eq!(counts(&app).await, before, "a preview writes nothing");

    // Once issued and unpaid: the suspension at +7 and the termination at +30.
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let (_, p) = preview(&app, "50").await;
    assert_eq!(
        p["renewals"].as_array().unwrap().len(),
        0,
        "billed already: {p}"
    );
    let plus = |days: i64| days_after(&due, days);
    assert_eq!(p["suspensions"][0]["hosting_id"], id.as_str(), "{p}");
    assert_eq!(p["suspensions"][0]["date"], plus(7), "{p}");
    assert_eq!(p["terminations"][0]["date"], plus(30), "{p}");
    assert_eq!(p["terminations"][0]["reason"], "overdue", "{p}");
    // Past the due date, the invoice is overdue; once suspended, the account is listed.
    app.clock.set(noon(&due, 1));
    pass(&app, &worker).await;
    app.clock.set(noon(&due, 8));
    pass(&app, &worker).await;
    let (_, p) = preview(&app, "0").await;
    assert_eq!(p["overdue_invoices"][0]["days_late"], 8, "{p}");
    assert_eq!(p["suspended"][0]["hosting_id"], id.as_str(), "{p}");
    assert_eq!(p["suspensions"].as_array().unwrap().len(), 0, "{p}");

    // Bad input: a clear error; customers may not look.
    for bad in ["-1", "367", "soon"] {
        let (status, body) = preview(&app, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _) = app
        .get("/v1/admin/billing/preview?days=5", &app.key())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

/// Found by an audit running the server over months: with the scheduler down past the
/// termination grace, the catching-up pass issued the renewal and, in the same pass,
/// cancelled it and terminated the account, which the customer had no chance to pay. An
/// invoice issued late is due on the day it is issued, and the graces count from there.
async fn a_renewal_issued_late_is_due_the_day_it_is_issued(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "5.00").await;
    let (id, worker) = active(&app, &fake, "late-issued.test").await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    let plus = |days: i64| days_after(&due, days);
    // No pass ran from before the lead time until 40 days after the due date: the preview
    // says it will be due today, as it is then issued.
    app.clock.set(noon(&due, 40));
    let (_, p) = preview(&app, "0").await;
    assert_eq!(p["renewals"][0]["due_date"], plus(40), "{p}");
    assert_eq!(p["renewals"][0]["issue_date"], plus(40), "{p}");
    pass(&app, &worker).await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["status"], "unpaid", "{inv}");
    assert_eq!(inv["due_date"], plus(40).as_str(), "{inv}");
    assert_eq!(hosting(&app, &id).await["status"], "active");
    // No reminder of an invoice just issued (its own notice says it is due today), and
    // the next day it is overdue.
    let notices = |kind: &'static str| {
        let app = &app;
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events WHERE kind = $1")
                .bind(kind)
                .fetch_one(app.lodge.store.reader())
                .await
                .unwrap()
        }
    };
    assert_eq!(notices("invoice.reminder").await, 0);
    app.clock.set(noon(&due, 41));
    pass(&app, &worker).await;
    assert_eq!(notices("invoice.reminder").await, 0);
    assert_eq!(notices("invoice.overdue").await, 1);
    // Suspended a week after that, and not before.
    app.clock.set(noon(&due, 46));
    pass(&app, &worker).await;
    assert_eq!(hosting(&app, &id).await["status"], "active");
    app.clock.set(noon(&due, 47));
    pass(&app, &worker).await;
    assert_eq!(hosting(&app, &id).await["status"], "suspended");
    // Paid then: back, and the period it pays is the one from the old due date.
    bank_transfer(&app, &inv["id"], "5.00", "late-issued").await;
    drain(worker.clone()).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    assert_eq!(
        h["next_due_date"],
        months_after("2026-03-31", 2).as_str(),
        "{h}"
    );
    app.stop().await;
}

/// A renewal the organization's credit will pay when it is issued leads to no suspension in
/// the preview; and the pass does pay it so.
async fn the_preview_counts_the_credit_that_will_pay_a_renewal(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "10.00").await;
    let (id, worker) = active(&app, &fake, "covered.test").await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    let (_, p) = preview(&app, "366").await;
    assert_eq!(p["renewals"][0]["due_date"], due.as_str(), "{p}");
    // The 5.00 left pays this renewal; the account then renews again in the window, and
    // that one, not covered, is what leads to its suspension and termination.
    let second = str_of(&p["renewals"][1], "due_date").to_owned();
    assert!(second.as_str() > due.as_str(), "{p}");
    let suspensions = p["suspensions"].as_array().unwrap();
    assert_eq!(suspensions.len(), 1, "{p}");
    let second_day: Date = second.parse().unwrap();
    let suspend_on = second_day
        .checked_add(jiff::Span::new().days(7))
        .unwrap()
        .to_string();
    assert_eq!(suspensions[0]["date"], suspend_on.as_str(), "{p}");
    assert_eq!(p["renewals"].as_array().unwrap().len(), 2, "{p}");
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    assert_eq!(renewals(&app).await[0]["status"], "paid");
    app.stop().await;
}

async fn a_renewal_is_listed_and_paid_through_apiv2(app: TestApp) {
    use crate::harness::v2_ok;
    use reqwest::Method;
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "5.00").await;
    let (id, worker) = active(&app, &fake, "v2renew.test").await;
    let h = hosting(&app, &id).await;
    let due = str_of(&h, "next_due_date").to_owned();
    let website = h["legacy_id"].as_i64().unwrap();
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let renewal = renewals(&app).await[0].clone();
    let rid = renewal["id"].as_i64().unwrap();

    // In the customer's invoices and the website's, unpaid.
    let list = v2_ok(
        &app,
        Method::GET,
        "/apiv2/billing/invoices",
        &app.key(),
        None,
    )
    .await;
    let row = list["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["invoices_id"] == rid)
        .unwrap_or_else(|| panic!("renewal {rid} not listed: {list}"))
        .clone();
    assert_eq!(row["invoices_paid"], 0, "{row}");
    assert_eq!(row["invoices_due_date"], due.as_str(), "{row}");
    assert_eq!(list["summary"]["unpaid_total"], "5.00", "{list}");
    let mine = v2_ok(
        &app,
        Method::GET,
        &format!("/apiv2/websites/{website}/invoices"),
        &app.key(),
        None,
    )
    .await;
    assert!(mine["invoices"].get(rid.to_string()).is_some(), "{mine}");

    // Paid from credit by the website's tag, as InterServer's client pays.
    add_credit(&app, &app.org_id(), "5.00").await;
    let paid = v2_ok(
        &app,
        Method::GET,
        &format!("/apiv2/billing/pay/prepay/SERVICEwebhosting{website}"),
        &app.key(),
        None,
    )
    .await;
    assert_eq!(paid["type"], "single", "{paid}");
    let h = hosting(&app, &id).await;
    assert_eq!(h["next_due_date"], months_after("2026-03-31", 2), "{h}");
    assert_eq!(renewals(&app).await[0]["status"], "paid");
    app.stop().await;
}

// ---- domains ----

/// Orders Starter on `cycle` with `domain` registered (manual registrar), paid from
/// credit; returns (hosting id, domain id).
async fn order_with_domain(app: &TestApp, domain: &str, cycle: &str) -> (String, String) {
    let body = json!({ "plan_id": crate::harness::starter(app), "domain_source": "register",
                       "domain_name": domain, "billing_cycle": cycle });
    let (status, o) = app.post(&order_path(app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "order {domain}: {o}");
    assert_eq!(o["status"], "active", "paid from credit: {o}");
    (
        str_of(&o, "hosting_id").to_owned(),
        str_of(&o, "domain_id").to_owned(),
    )
}

/// Staff mark a registration done (one year from today).
async fn complete(app: &TestApp, domain: &str) -> Value {
    let (status, d) = app
        .post(
            &format!("/v1/admin/domains/{domain}/complete"),
            &app.admin_key(),
            &json!({ "years": 1, "nameservers": ["ns1.lodge.test", "ns2.lodge.test"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    d
}

async fn domain(app: &TestApp, id: &str) -> Value {
    crate::harness::get_ok(
        app,
        &format!(
            "/v1/organizations/{}/projects/{}/domains/{id}",
            app.org_id(),
            app.project_id()
        ),
    )
    .await
}

/// The renewal invoices' lines billing `service` as `kind`.
async fn lines_for(app: &TestApp, service: &str, kind: &str) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for inv in renewals(app).await {
        for l in inv["lines"].as_array().unwrap() {
            if l["service_id"] == service && l["kind"] == kind {
                out.push((inv.clone(), l.clone()));
            }
        }
    }
    out
}

/// Every day from `from` through `to` (inclusive), a scheduler pass and the worker.
async fn days(app: &TestApp, worker: &Worker, from: &str, to: &str) {
    let mut d: Date = from.parse().unwrap();
    let last: Date = to.parse().unwrap();
    while d <= last {
        app.clock.set(noon(&d.to_string(), 0));
        pass(app, worker).await;
        d = d.tomorrow().unwrap();
    }
}

/// Nameserver and lock changes of a domain the `manual` registrar holds are recorded in
/// Lodge and put on staff's list of registry tasks; a later change of the same kind
/// supersedes the open one.
async fn a_manual_domains_changes_are_left_to_staff(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "200.00").await;
    let (_, dom) = order_with_domain(&app, "by-hand.com", "monthly").await;
    drain(Worker::new(app.lodge.clone(), "node-1")).await;
    complete(&app, &dom).await;
    let path = format!(
        "/v1/organizations/{}/projects/{}/domains/{dom}",
        app.org_id(),
        app.project_id()
    );
    for (what, body) in [
        (
            "nameservers",
            json!({ "nameservers": ["ns1.first.test", "ns2.first.test"] }),
        ),
        (
            "nameservers",
            json!({ "nameservers": ["ns1.second.test", "ns2.second.test"] }),
        ),
        ("lock", json!({ "locked": false })),
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
    let d = domain(&app, &dom).await;
    assert_eq!(
        d["nameservers"],
        json!(["ns1.second.test", "ns2.second.test"])
    );
    let (status, open) = app
        .get(
            &format!("/v1/admin/registry-tasks?domain_id={dom}"),
            &app.admin_key(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{open}");
    assert_eq!(open["count"], 2, "{open}");
    let kinds: Vec<(&Value, &Value)> = open["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (&t["kind"], &t["detail"]))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                &json!("nameservers"),
                &json!({ "nameservers": ["ns1.second.test", "ns2.second.test"] })
            ),
            (&json!("lock"), &json!({ "locked": false })),
        ]
    );
    let (_, all) = app
        .get("/v1/admin/registry-tasks?status=all", &app.admin_key())
        .await;
    assert_eq!(all["count"], 3, "{all}");
    assert_eq!(all["results"][0]["outcome"], "superseded", "{all}");
    // Done: off the list; taking no date.
    let id = &open["results"][1]["id"];
    let (status, e) = app
        .post(
            &format!("/v1/admin/registry-tasks/{id}/done"),
            &app.admin_key(),
            &json!({ "expiration_date": "2030-01-01" }),
        )
        .await;
    assert_fields(
        status,
        &e,
        &["expiration_date"],
        "a lock task takes no date",
    );
    let (status, t) = app
        .post(
            &format!("/v1/admin/registry-tasks/{id}/done"),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, &t["outcome"]),
        (StatusCode::OK, &json!("done")),
        "{t}"
    );
    let (_, open) = app.get("/v1/admin/registry-tasks", &app.admin_key()).await;
    assert_eq!(open["count"], 1, "{open}");
    // A domain without tasks filters to nothing; a malformed id is the field's error.
    let (status, none) = app
        .get(
            "/v1/admin/registry-tasks?domain_id=00000000-0000-4000-8000-000000000000",
            &app.admin_key(),
        )
        .await;
    assert_eq!(
        (status, &none["count"]),
        (StatusCode::OK, &json!(0)),
        "{none}"
    );
    let (status, e) = app
        .get("/v1/admin/registry-tasks?domain_id=nope", &app.admin_key())
        .await;
    assert_fields(status, &e, &["domain_id"], "a malformed domain id");
    app.stop().await;
}

async fn domains_renew_on_their_own_dates(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "200.00").await;
    let (hosting_id, dom) = order_with_domain(&app, "own-date.com", "monthly").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    drain(worker.clone()).await;
    // The registration is completed ten days later: the domain runs to 2027-04-10.
    app.clock.set(noon("2026-04-10", 0));
    let d = complete(&app, &dom).await;
    assert_eq!(d["expiration_date"], "2027-04-10", "{d}");
    // The preview shows the domain's year on an invoice of its own (found by review: it
    // listed the accounts' renewals only).
    let (status, p) = app
        .get("/v1/admin/billing/preview?days=366", &app.admin_key())
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let own: Vec<&Value> = p["renewals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["due_date"] == "2027-04-10")
        .collect();
    assert_eq!(own.len(), 1, "{p}");
    assert_eq!(own[0]["issue_date"], "2027-03-27", "{p}");
    assert_eq!(own[0]["total_minor"], 1400, "{p}");
    assert_eq!(own[0]["accounts"], json!([]), "{p}");
    assert_eq!(own[0]["domains"][0]["name"], "own-date.com", "{p}");
    assert_eq!(own[0]["domains"][0]["domain_id"], dom.as_str(), "{p}");

    days(&app, &worker, "2026-04-10", "2027-04-20").await;
    // One domain year billed, fourteen days before its date, at the TLD's renewal price,
    // on its own invoice (the account renews on the 30th/31st), paid from credit.
    let years = lines_for(&app, &dom, "domain_renewal").await;
    assert_eq!(years.len(), 1, "{years:?}");
    let (inv, line) = &years[0];
    assert_eq!(line["period_start"], "2027-04-10", "{inv}");
    assert_eq!(line["period_end"], "2028-04-10", "{inv}");
    assert_eq!(line["amount"], "14.00", "{inv}");
    assert_eq!(inv["due_date"], "2027-04-10", "{inv}");
    assert!(str_of(inv, "issued").starts_with("2027-03-27"), "{inv}");
    assert_eq!(inv["status"], "paid", "{inv}");
    assert_eq!(
        inv["lines"].as_array().unwrap().len(),
        1,
        "its own invoice: {inv}"
    );
    let d = domain(&app, &dom).await;
    assert_eq!(d["status"], "active", "paid: not expired: {d}");
    assert_eq!(d["next_billing_date"], "2028-04-10", "{d}");
    // The account renewed every month meanwhile, on its own invoices.
    let months = lines_for(&app, &hosting_id, "plan").await;
    assert_eq!(months.len(), 13, "April 2026 to April 2027");
    // The registrar was asked to renew once (the manual registrar leaves it to staff).
    let (status, done) = app
        .get("/v1/admin/jobs?status=done", &app.admin_key())
        .await;
    assert_eq!(status, StatusCode::OK);
    let renewals_asked = done
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "renew_domain")
        .count();
    assert_eq!(renewals_asked, 1, "{done}");
    assert_eq!(balance(&app).await, 20_000 - 1700 - 1400 - 13 * 500);

    // ... which is on staff's list of registry tasks until they say it is done, with the
    // registry's new expiration date (found by review: the renewal was left to staff
    // without telling them, and the registry would let the name lapse).
    let tasks = |q: &'static str| {
        let app = &app;
        async move {
            let (status, t) = app
                .get(&format!("/v1/admin/registry-tasks{q}"), &app.admin_key())
                .await;
            assert_eq!(status, StatusCode::OK, "{t}");
            t
        }
    };
    let open = tasks("").await;
    assert_eq!(open["count"], 1, "{open}");
    let task = &open["results"][0];
    assert_eq!(task["kind"], "renew", "{task}");
    assert_eq!(task["domain"], "own-date.com", "{task}");
    assert_eq!(task["domain_id"], dom.as_str(), "{task}");
    assert_eq!(
        task["detail"],
        json!({ "years": 1, "expiration_date": "2027-04-10" })
    );
    assert!(task["done"].is_null(), "{task}");
    let done_path = format!("/v1/admin/registry-tasks/{}/done", task["id"]);
    for (body, field) in [
        (json!({}), "expiration_date"),
        (
            json!({ "expiration_date": "2027-04-10" }),
            "expiration_date",
        ),
        (
            json!({ "expiration_date": "10/04/2028" }),
            "expiration_date",
        ),
    ] {
        let (status, e) = app.post(&done_path, &app.admin_key(), &body).await;
        assert_fields(status, &e, &[field], &body.to_string());
    }
    let (status, e) = app.post(&done_path, &app.key(), &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a customer: {e}");
    assert_eq!(domain(&app, &dom).await["expiration_date"], "2027-04-10");
    let (status, t) = app
        .post(
            &done_path,
            &app.admin_key(),
            &json!({ "expiration_date": "2028-04-10" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["outcome"], "done", "{t}");
    assert!(t["done"].is_string(), "{t}");
    assert!(str_of(&t, "done_by").starts_with("staff:"), "{t}");
    assert_eq!(domain(&app, &dom).await["expiration_date"], "2028-04-10");
    let (status, e) = app
        .post(
            &done_path,
            &app.admin_key(),
            &json!({ "expiration_date": "2029-04-10" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "done already: {e}");
    assert_eq!(tasks("").await["count"], 0);
    assert_eq!(tasks("?status=all").await["count"], 1);
    let (status, e) = app
        .get("/v1/admin/registry-tasks?status=closed", &app.admin_key())
        .await;
    assert_fields(status, &e, &["status"], "a bad status");
    let (status, _) = app
        .post(
            "/v1/admin/registry-tasks/999999/done",
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn a_domain_unpaid_past_the_grace_expires_with_its_account(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "66.00").await;
    let (hosting_id, dom) = order_with_domain(&app, "lapse.com", "annually").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    drain(worker.clone()).await;
    complete(&app, &dom).await;
    // Both renew on 2027-03-31: one invoice, two lines (54.00 + 14.00), unpaid.
    days(&app, &worker, "2027-03-16", "2027-03-17").await;
    let all = renewals(&app).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["total"], "68.00", "{}", all[0]);
    assert_eq!(all[0]["status"], "unpaid");
    // /apiv2's invoice list describes it by both its lines, not the first one's alone
    // beside the whole amount.
    let list = crate::harness::v2_ok(
        &app,
        reqwest::Method::GET,
        "/apiv2/billing/invoices",
        &app.key(),
        None,
    )
    .await;
    let row = list["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == all[0]["id"])
        .unwrap_or_else(|| panic!("{list}"))
        .clone();
    let description = str_of(&row, "description");
    assert_eq!(description.matches("; ").count(), 1, "{row}");
    assert!(description.contains("lapse.com"), "{row}");
    // So does the cart's row (found by the populated responses audit: the first line's
    // alone, beside the whole invoice's amount due).
    let cart = crate::harness::v2_ok(
        &app,
        reqwest::Method::GET,
        "/apiv2/billing/cart",
        &app.key(),
        None,
    )
    .await;
    let cart_row = cart["invrows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["invoices_id"] == all[0]["id"]))
        .unwrap_or_else(|| panic!("{cart}"))
        .clone();
    assert_eq!(cart_row["invoices_description"], description, "{cart_row}");
    // Past its expiration date the domain stays on the invoice as long as the account
    // does: the renewal may still be paid (found by the domains audit: it expired, and
    // left the invoice, on its expiration date itself).
    // (Passes run every day through the suspension at +7, as the scheduler's do.)
    days(&app, &worker, "2027-03-30", "2027-04-07").await;
    assert_eq!(domain(&app, &dom).await["status"], "active");
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["total"], "68.00", "{inv}");
    // At the termination grace (+30) the account is terminated, the invoice cancelled
    // whole, and the domain expires.
    days(&app, &worker, "2027-04-29", "2027-04-30").await;
    assert_eq!(hosting(&app, &hosting_id).await["status"], "terminated");
    assert_eq!(domain(&app, &dom).await["status"], "expired");
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["status"], "cancelled", "{inv}");
    assert_eq!(
        inv["total"], "68.00",
        "cancelled whole, not lightened first: {inv}"
    );
    assert_eq!(balance(&app).await, 0);
    app.stop().await;
}

async fn a_renewal_paid_late_within_the_grace_renews_its_domain(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "66.00").await;
    let (hosting_id, dom) = order_with_domain(&app, "partly.com", "annually").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    drain(worker.clone()).await;
    complete(&app, &dom).await;
    // 60.00 of credit when the renewal (54.00 + 14.00) is issued: 8.00 left to pay.
    add_credit(&app, &app.org_id(), "60.00").await;
    days(&app, &worker, "2027-03-16", "2027-03-17").await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(
        (inv["total"].as_str(), inv["amount_due"].as_str()),
        (Some("68.00"), Some("8.00")),
        "{inv}"
    );
    assert_eq!(balance(&app).await, 0);
    // Thirteen days after both expired (the account suspended meanwhile), the rest is
    // paid: the account renews, and so does the domain, at the registrar too (found by the
    // domains audit: the domain had expired on its expiration date and left the invoice,
    // so the late payment renewed the account and lost the name).
    days(&app, &worker, "2027-03-30", "2027-04-13").await;
    assert_eq!(hosting(&app, &hosting_id).await["status"], "suspended");
    assert_eq!(domain(&app, &dom).await["status"], "active");
    bank_transfer(&app, &inv["id"], "8.00", "late-but-in-grace").await;
    drain(worker.clone()).await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["status"], "paid", "{inv}");
    assert_eq!(inv["total"], "68.00", "{inv}");
    assert_eq!(balance(&app).await, 0);
    let h = hosting(&app, &hosting_id).await;
    assert_eq!(h["status"], "active", "{h}");
    assert_eq!(h["next_due_date"], "2028-03-31", "{h}");
    let d = domain(&app, &dom).await;
    assert_eq!(d["status"], "active", "{d}");
    let renew_jobs: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE kind = 'renew_domain'")
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap();
    assert_eq!(renew_jobs, 1, "its year asked of the registrar");
    // Long after, with nothing more paid, it does not expire before its paid year ends.
    days(&app, &worker, "2027-05-13", "2027-05-13").await;
    assert_eq!(domain(&app, &dom).await["status"], "active");
    app.stop().await;
}

/// Two accounts on one renewal; one cancelled at the end of its period is terminated on its
/// due date and its period comes off the invoice; staff then record the rest: the other
/// account renews, the terminated one keeps its dates (no period it was never served).
async fn paying_a_renewal_after_one_of_its_accounts_ended_moves_only_the_live_one(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "10.00").await;
    let (leaving, worker) = active(&app, &fake, "ends.test").await;
    let staying = order(&app, "stays.test").await;
    drain(worker.clone()).await;
    let due = str_of(&hosting(&app, &leaving).await, "next_due_date").to_owned();
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["total"], "10.00", "{inv}");
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &leaving)),
            &app.key(),
            &json!({ "type": "end_of_period", "reason": "one is enough" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    app.clock.set(noon(&due, 0));
    pass(&app, &worker).await;
    assert_eq!(hosting(&app, &leaving).await["status"], "terminated");
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["total"], "5.00", "the ended period came off: {inv}");
    bank_transfer(&app, &inv["id"], "5.00", "rest-of-renewal").await;
    drain(worker.clone()).await;
    let next = months_after("2026-03-31", 2);
    assert_eq!(
        hosting(&app, &staying).await["next_due_date"],
        next.as_str()
    );
    let h = hosting(&app, &leaving).await;
    assert_eq!(h["status"], "terminated", "{h}");
    assert_eq!(h["next_due_date"], due.as_str(), "{h}");
    assert_eq!(h["cancellation"]["effective_date"], due.as_str(), "{h}");
    app.stop().await;
}

async fn a_domain_without_auto_renew_is_not_billed_and_expires(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "200.00").await;
    let (_, dom) = order_with_domain(&app, "let-go.com", "annually").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    drain(worker.clone()).await;
    complete(&app, &dom).await;
    let (status, d) = app
        .call(
            reqwest::Method::PUT,
            &format!(
                "/v1/organizations/{}/projects/{}/domains/{dom}/auto-renew",
                app.org_id(),
                app.project_id()
            ),
            Some(&app.key()),
            Some(&json!({ "auto_renew": false })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    days(&app, &worker, "2027-03-16", "2027-03-17").await;
    days(&app, &worker, "2027-03-31", "2027-03-31").await;
    assert!(lines_for(&app, &dom, "domain_renewal").await.is_empty());
    assert_eq!(domain(&app, &dom).await["status"], "expired");
    // The account itself renewed (paid from credit) and stays.
    assert_eq!(renewals(&app).await.len(), 1);
    app.stop().await;
}

/// One pass bills an organization's three due dates together (one batch, its balance read
/// once and followed from invoice to invoice): the credit pays the first in full, part of
/// the second and nothing of the third, and goes to zero, never below.
async fn one_pass_bills_an_organizations_dates_from_one_balance(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "22.50").await;
    let mut ids = Vec::new();
    for (day, name) in [
        ("2026-04-01", "a"),
        ("2026-04-02", "b"),
        ("2026-04-03", "c"),
    ] {
        app.clock.set(noon(day, 0));
        ids.push(order(&app, &format!("{name}.dates.test")).await);
    }
    let worker = Worker::new(app.lodge.clone(), "node-1");
    drain(worker.clone()).await;
    assert_eq!(balance(&app).await, 750);
    // Fourteen days before the last account's due date: all three are due.
    app.clock.set(noon("2026-05-03", -14));
    pass(&app, &worker).await;
    let mut all = renewals(&app).await;
    all.sort_by(|a, b| str_of(a, "due_date").cmp(str_of(b, "due_date")));
    let seen: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|i| {
            (
                str_of(i, "due_date"),
                str_of(i, "status"),
                str_of(i, "credit_applied"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("2026-05-01", "paid", "5.00"),
            ("2026-05-02", "unpaid", "2.50"),
            ("2026-05-03", "unpaid", "0.00"),
        ],
        "{all:?}"
    );
    assert_eq!(balance(&app).await, 0);
    // The paid one's account is in its next period; the others wait for their payment.
    let next: Vec<String> = next_due_dates(&app, &ids).await;
    assert_eq!(next, ["2026-06-01", "2026-05-02", "2026-05-03"]);
    // Each invoice has its number, in the order of its id.
    let mut by_id = all.clone();
    by_id.sort_by_key(|i| i["id"].as_i64());
    let numbers: Vec<&str> = by_id.iter().map(|i| str_of(i, "number")).collect();
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(numbers, sorted, "{numbers:?}");
    app.stop().await;
}

/// The accounts' next due dates, in the order of `ids`.
async fn next_due_dates(app: &TestApp, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        out.push(str_of(&hosting(app, id).await, "next_due_date").to_owned());
    }
    out
}

/// A renewal of two accounts, partly paid by bank transfer (8.00 of 10.00), then one of
/// them terminated: its 5.00 comes off, the 3.00 received beyond the new total goes to
/// credit, and the renewal is paid, so the other account is not suspended (found by the
/// billing audit: the invoice would have been overpaid, the write was refused, the ended
/// account stayed billed and both were suspended).
async fn a_renewal_paid_beyond_what_is_left_of_it_gives_the_rest_back(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "10.00").await;
    let (leaving, worker) = active(&app, &fake, "part-ends.test").await;
    let staying = order(&app, "part-stays.test").await;
    drain(worker.clone()).await;
    assert_eq!(balance(&app).await, 0);
    let due = str_of(&hosting(&app, &leaving).await, "next_due_date").to_owned();
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["total"], "10.00", "{inv}");
    bank_transfer(&app, &inv["id"], "8.00", "most-of-renewal").await;
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &leaving)),
            &app.key(),
            &json!({ "type": "immediate", "reason": "one is enough" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    drain(worker.clone()).await;
    assert_eq!(hosting(&app, &leaving).await["status"], "terminated");
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["total"], "5.00", "the ended account came off: {inv}");
    assert_eq!(inv["status"], "paid", "{inv}");
    assert_eq!(balance(&app).await, 300, "received beyond the new total");
    // Past the suspension grace: the account that stays is paid for.
    app.clock.set(noon(&due, 10));
    pass(&app, &worker).await;
    let h = hosting(&app, &staying).await;
    assert_eq!(h["status"], "active", "{h}");
    assert_eq!(
        h["next_due_date"],
        months_after("2026-03-31", 2).as_str(),
        "{h}"
    );
    app.stop().await;
}

/// An account cancelled at once with its renewal unpaid: the renewal is cancelled in the
/// cancellation's own transaction, so a payment made before the worker terminates the
/// account is refused and the credit stays the customer's (found by the money audit: a
/// prepay in that window took 5.00 for an account being terminated, and the outcome
/// depended on how fast the worker ran).
async fn an_unpaid_renewal_ends_with_an_immediate_cancellation_before_the_worker_runs(
    app: TestApp,
) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "5.00").await;
    let (id, worker) = active(&app, &fake, "ending-now.test").await;
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["status"], "unpaid", "{inv}");
    add_credit(&app, &app.org_id(), "5.00").await;
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "immediate", "reason": "leaving" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["status"], "cancelled", "before the worker ran: {inv}");
    let (status, p) = app
        .post(
            &format!("/v1/admin/invoices/{}/payments", inv["id"]),
            &app.admin_key(),
            &json!({ "amount": "5.00", "method": "bank_transfer", "reference": "too-late" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["invoice"]["status"], "cancelled", "{p}");
    let (status, p) = crate::harness::v2(
        &app,
        reqwest::Method::GET,
        &format!("/apiv2/billing/pay/prepay/{}", inv["id"]),
        crate::harness::Auth::Key(&app.key()),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "prepay of a cancelled renewal: {p}"
    );
    assert_eq!(
        balance(&app).await,
        1000,
        "the credit is still the customer's, with the late transfer"
    );
    drain(worker.clone()).await;
    assert_eq!(hosting(&app, &id).await["status"], "terminated");
    assert_eq!(balance(&app).await, 1000);
    app.stop().await;
}

/// Two accounts on one unpaid renewal invoice; one is cancelled at once. Its period comes
/// off the invoice at the cancellation, and its termination job, which releases the
/// account's renewals again, takes nothing more off (the second release finds the line
/// taken off already; before 567e7e7 it tried the same adjustment again, and only a unique
/// index stopped it, with a warning).
async fn an_account_cancelled_at_once_comes_off_a_shared_renewal_once(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "10.00").await;
    let (leaving, worker) = active(&app, &fake, "leaves-now.test").await;
    let staying = order(&app, "stays-on.test").await;
    drain(worker.clone()).await;
    let due = str_of(&hosting(&app, &leaving).await, "next_due_date").to_owned();
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(
        (inv["total"].as_str(), inv["status"].as_str()),
        (Some("10.00"), Some("unpaid")),
        "{inv}"
    );
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &leaving)),
            &app.key(),
            &json!({ "type": "immediate", "reason": "one is enough" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let adjustments = |inv: &Value| -> Vec<Value> {
        inv["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "adjustment")
            .cloned()
            .collect()
    };
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["total"], "5.00", "before the worker ran: {inv}");
    assert_eq!(adjustments(&inv).len(), 1, "{inv}");
    assert_eq!(
        adjustments(&inv)[0]["service_id"],
        leaving.as_str(),
        "{inv}"
    );
    // The termination job releases the account's renewals again: nothing more comes off.
    drain(worker.clone()).await;
    assert_eq!(hosting(&app, &leaving).await["status"], "terminated");
    let inv = renewals(&app).await[0].clone();
    assert_eq!(
        (inv["total"].as_str(), inv["status"].as_str()),
        (Some("5.00"), Some("unpaid")),
        "{inv}"
    );
    assert_eq!(adjustments(&inv).len(), 1, "released once: {inv}");
    // The termination job ran once and never failed.
    let (status, done) = app
        .get("/v1/admin/jobs?status=done", &app.admin_key())
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let ends: Vec<&Value> = done
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j["kind"] == "terminate_hosting" && j["payload"]["hosting_id"] == leaving.as_str()
        })
        .collect();
    assert_eq!(ends.len(), 1, "{done}");
    assert_eq!(
        (ends[0]["attempts"].as_i64(), &ends[0]["last_error"]),
        (Some(1), &Value::Null),
        "{done}"
    );
    assert_eq!(balance(&app).await, 0);
    // The other account's period is still billed, and paid it renews.
    bank_transfer(&app, &inv["id"], "5.00", "the-one-left").await;
    drain(worker.clone()).await;
    assert_eq!(
        hosting(&app, &staying).await["next_due_date"],
        months_after("2026-03-31", 2).as_str()
    );
    app.stop().await;
}

/// Credit added after a renewal was issued unpaid (a deposit by staff) pays it when it
/// comes to suspending: the account stays active (found by the billing audit: suspended,
/// then terminated, with the credit unused).
async fn credit_added_after_a_renewal_was_issued_pays_it_before_suspension(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "5.00").await;
    let (id, worker) = active(&app, &fake, "late-credit.test").await;
    assert_eq!(balance(&app).await, 0);
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["status"], "unpaid", "{inv}");
    app.clock.set(noon(&due, 2));
    add_credit(&app, &app.org_id(), "20.00").await;
    // Past the suspension grace.
    app.clock.set(noon(&due, 10));
    pass(&app, &worker).await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["status"], "paid", "{inv}");
    assert_eq!(balance(&app).await, 1500);
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    assert_ne!(h["next_due_date"], due.as_str(), "{h}");
    app.stop().await;
}

/// Credit added after a renewal was issued pays it when its reminder would go out, rather
/// than the reminder, then the warning of a suspension the credit prevents (found by the
/// lifecycle audit: both were sent, the credit used only on the suspension day). A renewal
/// whose account is cancelled for the end of its period gets no reminder either.
async fn credit_added_after_a_renewal_was_issued_pays_it_before_its_reminder(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "5.00").await;
    let (id, worker) = active(&app, &fake, "early-credit.test").await;
    assert_eq!(balance(&app).await, 0);
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    assert_eq!(renewals(&app).await[0]["status"], "unpaid");
    app.clock.set(noon(&due, -10));
    add_credit(&app, &app.org_id(), "5.00").await;
    app.clock.set(noon(&due, -2));
    pass(&app, &worker).await;
    let inv = renewals(&app).await[0].clone();
    assert_eq!(inv["status"], "paid", "{inv}");
    assert_eq!(reminders(&app).await, 0);
    assert_eq!(balance(&app).await, 0);
    assert_eq!(hosting(&app, &id).await["status"], "active");

    // Cancelled for the end of its period after its renewal was issued: no "renew soon",
    // and credit added since does not pay it (its line comes off when the account ends,
    // which a paid invoice would not give back: found by review).
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    let next = renewals(&app).await;
    assert!(next.iter().any(|i| i["status"] == "unpaid"), "{next:?}");
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "end_of_period", "reason": "" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    add_credit(&app, &app.org_id(), "5.00").await;
    app.clock.set(noon(&due, -2));
    pass(&app, &worker).await;
    assert_eq!(reminders(&app).await, 0);
    assert_eq!(balance(&app).await, 500, "the credit stays");
    app.stop().await;
}

/// How many renewal reminders were sent.
async fn reminders(app: &TestApp) -> i64 {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM events WHERE kind = 'invoice.reminder'")
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap();
    n
}

/// An account cancelled for the end of its period, on an unpaid renewal with another:
/// the preview terminates it on its end date only, not again (and not suspended) for the
/// unpaid renewal its part comes off (found by the billing audit).
async fn the_preview_ends_a_cancelled_account_once(app: TestApp) {
    let fake = FakeDriver::default();
    add_credit(&app, &app.org_id(), "10.00").await;
    let (leaving, worker) = active(&app, &fake, "prev-ends.test").await;
    let staying = order(&app, "prev-stays.test").await;
    drain(worker.clone()).await;
    let due = str_of(&hosting(&app, &leaving).await, "next_due_date").to_owned();
    app.clock.set(noon(&due, -14));
    pass(&app, &worker).await;
    assert_eq!(renewals(&app).await[0]["status"], "unpaid");
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &leaving)),
            &app.key(),
            &json!({ "type": "end_of_period", "reason": "" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let (status, p) = app
        .get("/v1/admin/billing/preview?days=60", &app.admin_key())
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let of = |list: &str, id: &str| -> Vec<Value> {
        p[list]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["hosting_id"] == id)
            .cloned()
            .collect()
    };
    let ends = of("terminations", &leaving);
    assert_eq!(ends.len(), 1, "{p}");
    assert_eq!(ends[0]["reason"], "end of period", "{p}");
    assert_eq!(ends[0]["date"], due.as_str(), "{p}");
    assert!(of("suspensions", &leaving).is_empty(), "{p}");
    // The other account goes the overdue way.
    assert_eq!(of("suspensions", &staying).len(), 1, "{p}");
    assert_eq!(of("terminations", &staying).len(), 1, "{p}");
    app.stop().await;
}
