//! The harness's own guarantee: what every test app is checked for when it stops (the
//! store's consistency checks, no dead job) is really seen, and an expectation of dead jobs
//! that does not come true is reported too.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{add_credit, starter, str_of, TestApp};
use crate::on_both_engines;

on_both_engines!(shutdown_checks_report_dead_jobs_and_broken_ledgers);

/// Claims the (only) queued job as `node` and fails it for good; returns its id.
async fn kill_the_queued_job(app: &TestApp, node: &str) -> i64 {
    let store = &app.lodge.store;
    let now = app.lodge.now_us();
    let lease = 5 * 60 * 1_000_000;
    let mut tx = store.begin().await.expect("begin");
    let claimed = lodge_store::jobs::claim(
        &mut tx,
        store.engine(),
        node,
        now,
        now + lease,
        8,
        lodge_store::jobs::KindFilter::Any,
    )
    .await
    .expect("claim");
    tx.commit().await.expect("commit");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let id = claimed[0].id;
    assert!(
        lodge_store::jobs::fail(store.writer(), id, node, "gave up on purpose", None, now)
            .await
            .expect("fail"),
        "the job is dead"
    );
    id
}

/// Moves the organization's balance by `delta` cents without a ledger entry.
async fn skew_balance(app: &TestApp, delta: i64) {
    sqlx::query(
        "UPDATE organizations SET credit_balance_minor = credit_balance_minor + $1 WHERE id = $2",
    )
    .bind(delta)
    .bind(app.org_id())
    .execute(app.lodge.store.writer())
    .await
    .expect("skew the balance");
}

async fn shutdown_checks_report_dead_jobs_and_broken_ledgers(app: TestApp) {
    // A paid order leaves its provisioning job queued: nothing to report.
    add_credit(&app, &app.org_id(), "100.00").await;
    let body = json!({ "plan_id": starter(&app), "domain_source": "external",
                       "domain_name": "checked.test" });
    let path = format!(
        "/v1/organizations/{}/projects/{}/hosting/order",
        app.org_id(),
        app.project_id()
    );
    let (status, o) = app.post(&path, &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    assert_eq!(str_of(&o, "hosting_status"), "provisioning", "{o}");
    assert_eq!(app.shutdown_problems().await, Vec::<String>::new());

    // A dead job is reported, with its kind and error.
    let job = kill_the_queued_job(&app, "test-node").await;
    let problems = app.shutdown_problems().await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("dead job {job} (provision_hosting, 1 attempts)"))
            && problems[0].contains("gave up on purpose"),
        "{problems:?}"
    );

    // So is a balance its ledger does not add up to.
    skew_balance(&app, 1).await;
    let problems = app.shutdown_problems().await;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.contains(&"1 organizations whose ledger does not sum to the balance".to_owned()),
        "{problems:?}"
    );

    // Repaired, nothing is left to report.
    skew_balance(&app, -1).await;
    let now = app.lodge.now_us();
    assert!(lodge_store::jobs::retry(app.lodge.store.writer(), job, now)
        .await
        .expect("retry"));
    assert_eq!(app.shutdown_problems().await, Vec::<String>::new());

    // A test that says it leaves dead jobs must leave one...
    app.expect_dead_jobs("this test kills a job on purpose");
    let problems = app.shutdown_problems().await;
    assert_eq!(
        problems,
        [
            "the test expects dead jobs (this test kills a job on purpose) but left none: \
          remove expect_dead_jobs"
        ],
    );
    // ...and then its dead jobs are accepted (the harness checks this app once more when
    // the test returns).
    kill_the_queued_job(&app, "test-node").await;
    assert_eq!(app.shutdown_problems().await, Vec::<String>::new());
}
