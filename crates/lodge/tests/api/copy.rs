//! Moving to PostgreSQL: a SQLite installation that has sold, billed and been paid, copied
//! into an empty PostgreSQL database by `lodge_store::copy::sqlite_to_postgres` (behind
//! `lodge copy-to`), answers every customer's and staff member's question the same there,
//! and goes on from where it stood (numbers, ids, balances, the live counts).

use std::sync::Arc;

use lodge_services::provisioning::Worker;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{add_credit, run, str_of, Engine, Options, TestApp};
use crate::provisioning::{drain, noon, FakeDriver};

/// Every answer compared between the two installations: the customer's lists and
/// invoices, and every staff list.
async fn answers(base: &str, app: &TestApp) -> Vec<(String, StatusCode, Value)> {
    let org = app.org_id();
    let project = app.project_id();
    let mut paths = vec![
        "/v1/organizations".to_owned(),
        format!("/v1/organizations/{org}/projects"),
        format!("/v1/organizations/{org}/projects/{project}/hosting?page_size=100"),
        format!("/v1/organizations/{org}/projects/{project}/domains?page_size=100"),
        format!("/v1/organizations/{org}/invoices?page_size=100"),
        format!("/v1/organizations/{org}/credit"),
        format!("/v1/organizations/{org}/api-keys"),
        "/v1/hosting/plans".to_owned(),
    ];
    let staff: Vec<String> = crate::ops::ROUTES
        .iter()
        .filter(|(m, p)| *m == "GET" && p.starts_with("/v1/admin/") && !p.contains('{'))
        .map(|(_, p)| (*p).to_owned())
        .collect();
    let mut out = Vec::new();
    let get = |path: String, token: String| {
        let client = app.client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client.get(&url).bearer_auth(token).send().await.unwrap();
            let status = r.status();
            (path, status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let invoices = get(paths[4].clone(), app.key()).await;
    for i in invoices.2["results"].as_array().unwrap() {
        paths.push(format!("/v1/organizations/{org}/invoices/{}", i["id"]));
    }
    for p in paths {
        out.push(get(p, app.key()).await);
    }
    for p in staff {
        out.push(get(p, app.admin_key()).await);
    }
    out
}

/// Sells and bills on SQLite (two accounts paid from credit, one order unpaid, a renewal
/// issued and paid by bank transfer), copies the database into PostgreSQL, and starts a node
/// there with the same settings and key: every answer is the same, and a new order numbers
/// on from the copied ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_installation_copied_into_postgres_answers_the_same_there() {
    let Some(target) = lodge_testkit::pg::test_database_url().await else {
        return;
    };
    run(Engine::Sqlite, Options::default(), |app| async move {
        let fake = FakeDriver::default();
        fake.install(&app.lodge);
        let worker = Worker::new(app.lodge.clone(), "node-1");
        add_credit(&app, &app.org_id(), "10.00").await;
        let order_path = format!(
            "/v1/organizations/{}/projects/{}/hosting/order",
            app.org_id(),
            app.project_id()
        );
        let mut accounts = Vec::new();
        for name in ["one.example", "two.example", "three.example"] {
            let body = json!({ "plan_id": crate::harness::starter(&app),
                               "domain_source": "external", "domain_name": name,
                               "billing_cycle": "monthly" });
            let (status, o) = app.post(&order_path, &app.key(), &body).await;
            assert_eq!(status, StatusCode::CREATED, "{o}");
            accounts.push(o);
        }
        assert_eq!(accounts[2]["status"], "pending", "{}", accounts[2]);
        drain(worker.clone()).await;
        // The first account's renewal, issued and paid by bank transfer.
        let (_, first) = app
            .get(
                &crate::harness::hosting_path(&app, str_of(&accounts[0], "hosting_id")),
                &app.key(),
            )
            .await;
        let due = str_of(&first, "next_due_date").to_owned();
        app.clock.set(noon(&due, -14));
        app.lodge.schedule_due().await.unwrap();
        drain(worker.clone()).await;
        let (_, list) = app
            .get(
                &format!("/v1/organizations/{}/invoices", app.org_id()),
                &app.key(),
            )
            .await;
        let renewal = list["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["kind"] == "renewal" && i["status"] == "unpaid")
            .cloned()
            .unwrap_or_else(|| panic!("an unpaid renewal: {list}"));
        let (status, p) = app
            .post(
                &format!("/v1/admin/invoices/{}/payments", renewal["id"]),
                &app.admin_key(),
                &json!({ "amount": renewal["total"], "method": "bank_transfer",
                         "reference": "TRF-1" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        drain(worker.clone()).await;
        let before = answers(&app.base, &app).await;

        let source = lodge::sqlite_file(&app.database_url).unwrap();
        let told = std::sync::Mutex::new(Vec::new());
        let report = lodge_store::copy::sqlite_to_postgres(&source, &target, |t, n| {
            told.lock().unwrap().push((t.to_owned(), n));
        })
        .await
        .unwrap();
        assert_eq!(report.tables, *told.lock().unwrap());
        let rows = |t: &str| report.tables.iter().find(|r| r.0 == t).map(|r| r.1);
        assert_eq!(rows("orders"), Some(3), "{report:?}");
        assert!(rows("invoices").unwrap() >= 4, "{report:?}");
        assert!(rows("events").unwrap() > 0, "{report:?}");

        // A node on the copy: the same settings, key and clock.
        let mut cfg = app.config.clone();
        cfg.database_url = target.clone();
        let pg = lodge::open(&cfg, Arc::new(app.clock.clone()))
            .await
            .unwrap();
        lodge::start_node(&pg).await.unwrap();
        fake.install(&pg);
        let server = lodge::Server::start(&cfg, pg.clone()).await.unwrap();
        let pg_base = format!("http://{}", server.addr);
        let after = answers(&pg_base, &app).await;
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.1, StatusCode::OK, "{}: {}", b.0, b.2);
            assert_eq!(b, a, "{} differs after the copy", b.0);
        }

        // It goes on from where it stood: a new order's invoice numbers on, the account
        // counts toward the organization's, the unpaid order is paid there.
        let body = json!({ "plan_id": crate::harness::starter(&app),
                           "domain_source": "external", "domain_name": "four.example",
                           "billing_cycle": "monthly" });
        let r = app
            .client
            .post(format!("{pg_base}{order_path}"))
            .bearer_auth(app.key())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let four: Value = r.json().await.unwrap();
        let max_before = before
            .iter()
            .find(|b| b.0.ends_with("/invoices?page_size=100"))
            .and_then(|b| b.2["results"].as_array().cloned())
            .unwrap()
            .iter()
            .filter_map(|i| i["id"].as_i64())
            .max()
            .unwrap();
        assert_eq!(four["invoice_id"].as_i64(), Some(max_before + 1), "{four}");
        let paid = app
            .client
            .post(format!(
                "{pg_base}/v1/admin/invoices/{}/payments",
                accounts[2]["invoice_id"]
            ))
            .bearer_auth(app.admin_key())
            .json(&json!({ "amount": "5.00", "method": "bank_transfer", "reference": "TRF-2" }))
            .send()
            .await
            .unwrap();
        assert_eq!(paid.status(), StatusCode::CREATED);
        let pg_worker = Worker::new(pg.clone(), "node-pg");
        drain(pg_worker).await;
        server.stop().await.unwrap();

        // A second copy into the same database is refused and changes nothing.
        let err = lodge_store::copy::sqlite_to_postgres(&source, &target, |_, _| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("holds data already"), "{err}");
        let pool = pg.store.reader();
        let (orders,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(orders, 4);
        let problems = lodge_store::checks::consistency_problems(pool)
            .await
            .unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        pg.store.close().await;
    })
    .await;
}

/// What is refused before anything is written: a target that is not PostgreSQL, a source
/// that holds no installation.
#[tokio::test]
async fn a_copy_needs_a_sqlite_installation_and_a_postgres_target() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.db");
    let err = lodge_store::copy::sqlite_to_postgres(
        &missing,
        &format!("sqlite://{}/b.db", dir.path().display()),
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("postgres://"), "{err}");
    let Some(target) = lodge_testkit::pg::test_database_url().await else {
        return;
    };
    let err = lodge_store::copy::sqlite_to_postgres(&missing, &target, |_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no SQLite database"), "{err}");
    let other = dir.path().join("other.db");
    std::fs::write(&other, b"").unwrap();
    let err = lodge_store::copy::sqlite_to_postgres(&other, &target, |_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no Lodge installation"), "{err}");
}
