//! Scale-out: two Lodge nodes, each with its own pools, batch writer and HTTP listener, on
//! one PostgreSQL, taking orders from the same organization at the same moment. PostgreSQL
//! only: SQLite is one node by design (one writer process per database file).

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{self, add_credit, cents, starter, str_of, Engine, Options};

/// Sixty orders at once, half through each node, all paying from one organization's credit
/// (enough for twenty) and four names each ordered on both nodes: credit is spent exactly
/// once across the nodes and never below zero, each contested name gets one account, and the
/// invoices are numbered 1..n across both nodes, with no gap and no number twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgresql_take_orders_together() {
    harness::run(Engine::Postgres, Options::default(), |app| async move {
        let other = app.second_node().await;
        let mut cfg = app.config.clone();
        cfg.listen = "127.0.0.1:0".into();
        cfg.metrics_listen = None;
        let second = lodge::Server::start(&cfg, other.clone())
            .await
            .expect("the second node serves");
        let bases = [app.base.clone(), format!("http://{}", second.addr)];
        assert_ne!(bases[0], bases[1]);

        let (org, project, key) = (app.org_id(), app.project_id(), app.key());
        add_credit(&app, &org, "100.00").await; // twenty Starter months
        let plan = starter(&app);
        const ORDERS: usize = 60;
        const CONTESTED: usize = 4;
        let name = |i: usize| {
            if i < 2 * CONTESTED {
                format!("both-{}.example", i / 2)
            } else {
                format!("node{}-{i}.example", i % 2)
            }
        };
        let answers = join_all((0..ORDERS).map(|i| {
            let url = format!(
                "{}/v1/organizations/{org}/projects/{project}/hosting/order",
                bases[i % 2]
            );
            let body = json!({
                "plan_id": plan, "domain_source": "external", "domain_name": name(i),
            });
            let (client, key) = (app.client.clone(), key.clone());
            async move {
                let r = client
                    .post(url)
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .expect("order sent");
                let status = r.status();
                (i, status, r.json::<Value>().await.expect("json answer"))
            }
        }))
        .await;

        let (mut active, mut pending, mut applied) = (0, 0, 0);
        let mut per_node = [0; 2];
        for pair in 0..CONTESTED {
            let won: Vec<_> = answers
                .iter()
                .filter(|(i, s, _)| {
                    i / 2 == pair && *i < 2 * CONTESTED && *s == StatusCode::CREATED
                })
                .collect();
            assert_eq!(
                won.len(),
                1,
                "one account for {}: {answers:?}",
                name(2 * pair)
            );
        }
        for (i, status, o) in &answers {
            if *status != StatusCode::CREATED {
                assert!(*i < 2 * CONTESTED, "order {i} refused: {status} {o}");
                assert_eq!(*status, StatusCode::BAD_REQUEST, "{o}");
                assert!(o.to_string().contains("domain_name"), "{o}");
                continue;
            }
            per_node[i % 2] += 1;
            applied += cents(&o["credit_applied"]);
            match str_of(o, "status") {
                "active" => active += 1,
                "pending" => pending += 1,
                s => panic!("unexpected status {s}: {o}"),
            }
        }
        let placed = ORDERS - CONTESTED;
        assert_eq!(active + pending, placed);
        assert_eq!(active, 20, "credit for exactly twenty: {answers:?}");
        assert_eq!(applied, 10_000, "exactly what was deposited");
        assert!(per_node[0] > 0 && per_node[1] > 0, "{per_node:?}");

        // The ledger agrees, and never went below zero.
        let balances: Vec<i64> = sqlx::query_scalar(
            "SELECT balance_after_minor FROM credit_ledger WHERE organization_id = $1 ORDER BY id",
        )
        .bind(&org)
        .fetch_all(app.lodge.store.reader())
        .await
        .expect("ledger");
        assert_eq!(balances.len(), 1 + 20, "{balances:?}");
        assert!(balances.iter().all(|b| *b >= 0), "{balances:?}");
        assert_eq!(balances.last(), Some(&0));

        // One invoice per order, numbered 1..n across both nodes.
        let mut numbers: Vec<i64> =
            sqlx::query_scalar::<_, Option<String>>("SELECT number FROM invoices")
                .fetch_all(app.lodge.store.reader())
                .await
                .expect("invoices")
                .into_iter()
                .map(|n| {
                    let n = n.expect("every invoice is numbered");
                    n.strip_prefix("INV-")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("invoice number {n}"))
                })
                .collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=placed as i64).collect::<Vec<_>>());
        assert_eq!(app.count("orders").await, placed as i64);
        assert_eq!(app.count("hosting").await, placed as i64);

        second.stop().await.expect("the second node stops");
        other.store.close().await;
        app.stop().await;
    })
    .await;
}

/// Nodes started together on one empty PostgreSQL database with `--demo` seed in turn: one
/// demo organization, whichever node comes first (found by the multi-node audit: two
/// nodes made two "Demo Customer" organizations in 2 rounds of 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_seeding_the_demo_together_make_one_demo_organization() {
    let options = Options {
        seed_demo: false,
        ..Options::default()
    };
    harness::run(Engine::Postgres, options, |app| async move {
        let mut nodes = Vec::new();
        for _ in 0..4 {
            nodes.push(app.second_node().await);
        }
        let seeded = join_all(nodes.iter().map(|n| n.seed_demo())).await;
        let orgs: std::collections::BTreeSet<String> = seeded
            .into_iter()
            .map(|s| s.expect("seeded").organization_id.to_string())
            .collect();
        assert_eq!(
            orgs.len(),
            1,
            "every node names the same organization: {orgs:?}"
        );
        let demo: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM organizations WHERE name = 'Demo Customer'")
                .fetch_one(app.lodge.store.reader())
                .await
                .unwrap();
        assert_eq!(demo, 1);
        app.stop().await;
    })
    .await;
}

/// While the node's PostgreSQL database refuses connections (its sessions ended, new ones
/// not allowed, as during a restart), `/readyz` answers 503 within a couple of seconds and
/// the API 503 with `Retry-After` in both dialects (found by the multi-node audit: both
/// waited 30 s and the API then answered a bare 500); once the database is back, the
/// node serves again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_and_the_node_recovers() {
    harness::run(Engine::Postgres, Options::default(), |app| async move {
        let db = app
            .config
            .database_url
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        let cluster = lodge_testkit::pg::shared_cluster().await.unwrap().unwrap();
        let admin = sqlx::PgPool::connect(&cluster.admin_url()).await.unwrap();
        let set_allowed = |allowed: bool| {
            let (admin, db) = (admin.clone(), db.clone());
            async move {
                sqlx::query(&format!(
                    "ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS {allowed}"
                ))
                .execute(&admin)
                .await
                .unwrap();
                if !allowed {
                    sqlx::query(
                        "SELECT pg_terminate_backend(pid)::TEXT FROM pg_stat_activity \
                         WHERE datname = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(&db)
                    .execute(&admin)
                    .await
                    .unwrap();
                }
            }
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .unwrap();
        let get = |path: &str, key: Option<String>| {
            let mut r = client.get(app.url(path));
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            r.send()
        };
        assert_eq!(get("/readyz", None).await.unwrap().status(), 200);
        let order = harness::order_external(&app, "outage.example").await;
        let pay_url = order["invoice_payment_url"].as_str().unwrap().to_owned();
        set_allowed(false).await;

        let ready = client
            .get(app.url("/readyz"))
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
            .expect("/readyz answers while the database is away");
        assert_eq!(ready.status(), 503);
        let org = format!("/v1/organizations/{}/credit", app.org_id());
        let r = get(&org, Some(app.key())).await.unwrap();
        assert_eq!(r.status(), 503, "{:?}", r.text().await);
        let r = get(&org, Some(app.key())).await.unwrap();
        assert!(
            r.headers().get("retry-after").is_some_and(|v| v == "5"),
            "{} {:?}",
            r.status(),
            r.headers()
        );
        let body: Value = r.json().await.unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains("unavailable"),
            "{body}"
        );
        let r = client
            .get(app.url("/apiv2/billing/invoices"))
            .header("X-API-KEY", app.key())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "5");
        // The payment page too, in HTML (it answered the API's JSON 500).
        let r = client.get(&pay_url).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "5");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{:?}",
            r.headers()
        );
        assert!(r.text().await.unwrap().contains("unavailable"));

        set_allowed(true).await;
        assert_eq!(get("/readyz", None).await.unwrap().status(), 200);
        assert_eq!(get(&org, Some(app.key())).await.unwrap().status(), 200);
        app.stop().await;
    })
    .await;
}

/// A server bound to a node (`node`, as an nginx server must be with several nodes: its
/// sites are that machine's files) has its jobs run by that node's worker only: another
/// node's worker puts the job back without counting the attempt, and the job says why
/// (found by the multi-node audit: another node's worker "suspended" and "terminated"
/// sites on its own machine while the live ones kept serving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_jobs_run_on_its_node_only() {
    use crate::provisioning::{drain, FakeDriver};
    use lodge_services::provisioning::Worker;
    harness::run(Engine::Postgres, Options::default(), |app| async move {
        let here = app.lodge.settings.node_name.clone();
        let mut cfg = app.config.clone();
        cfg.node_name = format!("{here}-b");
        let other = lodge::open(&cfg, std::sync::Arc::new(app.clock.clone()))
            .await
            .expect("node b");
        let (fake_a, fake_b) = (FakeDriver::default(), FakeDriver::default());
        fake_a.install(&app.lodge);
        fake_b.install(&other);
        // Staff bind the demo's nginx server to this node; an update that leaves `node`
        // out keeps it, `""` clears it.
        let (_, list) = app.get("/v1/admin/servers", &app.admin_key()).await;
        let server = list[0].clone();
        assert_eq!(server["node"], Value::Null, "{server}");
        let id = str_of(&server, "id").to_owned();
        let put = |node: Option<&str>| {
            let mut body = json!({ "name": server["name"], "hostname": server["hostname"],
                                   "driver": server["driver"] });
            if let Some(n) = node {
                body["node"] = json!(n);
            }
            let app = &app;
            let id = id.clone();
            async move {
                let (status, s) = app
                    .call(
                        reqwest::Method::PUT,
                        &format!("/v1/admin/servers/{id}"),
                        Some(&app.admin_key()),
                        Some(&body),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{s}");
                s
            }
        };
        // Unbound, it is named at start (a warning).
        assert_eq!(
            app.lodge.unbound_local_servers().await.unwrap(),
            [server["name"].as_str().unwrap()]
        );
        assert_eq!(put(Some(&here)).await["node"], json!(here));
        assert!(app.lodge.unbound_local_servers().await.unwrap().is_empty());
        assert_eq!(put(None).await["node"], json!(here), "kept when left out");
        assert_eq!(put(Some("")).await["node"], Value::Null, "cleared");
        let (status, e) = app
            .call(
                reqwest::Method::PUT,
                &format!("/v1/admin/servers/{id}"),
                Some(&app.admin_key()),
                Some(&json!({ "name": server["name"], "hostname": server["hostname"],
                              "driver": server["driver"], "node": "n9 bad name" })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
        assert!(e["node"].is_array(), "{e}");
        assert_eq!(put(Some(&here)).await["node"], json!(here));

        add_credit(&app, &app.org_id(), "10.00").await;
        let (status, o) = app
            .post(
                &format!(
                    "/v1/organizations/{}/projects/{}/hosting/order",
                    app.org_id(),
                    app.project_id()
                ),
                &app.key(),
                &json!({ "plan_id": starter(&app), "domain_source": "external",
                         "domain_name": "bound.example" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{o}");
        drain(Worker::new(other.clone(), "b")).await;
        assert_eq!(fake_b.creates(), 0, "node b left it");
        let job = || async {
            sqlx::query_as::<_, (i64, String, Option<String>, Option<String>)>(
                "SELECT attempts, status, last_error, node FROM jobs WHERE kind = 'provision_hosting'",
            )
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap()
        };
        let j = job().await;
        assert_eq!((j.0, j.1.as_str()), (0, "queued"), "{j:?}");
        assert!(j.2.as_deref().unwrap_or_default().contains(&here), "{j:?}");
        assert_eq!(j.3.as_deref(), Some(here.as_str()), "now waiting for its node");
        // Node b does not claim it again (it went back and forth between the nodes and
        // waited minutes, found by the multi-node re-audit).
        app.clock.advance(jiff::SignedDuration::from_secs(3));
        assert_eq!(drain(Worker::new(other.clone(), "b")).await, 0);
        assert_eq!(fake_b.creates(), 0);
        drain(Worker::new(app.lodge.clone(), "a")).await;
        assert_eq!(fake_a.creates(), 1);
        let hosting = str_of(&o, "hosting_id").to_owned();
        let h = harness::get_ok(
            &app,
            &format!(
                "/v1/organizations/{}/projects/{}/hosting/{hosting}",
                app.org_id(),
                app.project_id()
            ),
        )
        .await;
        assert_eq!(h["status"], "active", "{h}");
        app.stop().await;
    })
    .await;
}

/// A node whose machine clock is a day ahead (found by the multi-node audit: it took over
/// the other nodes' running jobs, forgot idempotency keys and login lockouts early, and
/// dated invoices in the future) keeps the database server's time: measured when it opens
/// the store, and kept when its machine clock steps. What it writes is dated as the other
/// nodes date it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_machine_clock_is_a_day_ahead_keeps_the_databases_time() {
    harness::run(Engine::Postgres, Options::default(), |app| async move {
        use lodge_core::{AlignedClock, Clock, ManualClock, SystemClock};
        let close_to_real = |t: jiff::Timestamp, what: &str| {
            let off = t.duration_since(SystemClock.now()).abs();
            assert!(
                off < jiff::SignedDuration::from_secs(30),
                "{what}: {t} is {off:?} off"
            );
        };
        let machine = ManualClock::new(SystemClock.now() + jiff::SignedDuration::from_hours(24));
        let clock = std::sync::Arc::new(AlignedClock::new(std::sync::Arc::new(machine.clone())));
        let node = lodge::open(&app.config, clock.clone())
            .await
            .expect("the skewed node opens");
        close_to_real(node.clock.now(), "once opened");
        let offset = clock.offset().as_secs_f64();
        assert!((offset + 86_400.0).abs() < 30.0, "{offset}");

        // Its machine clock steps another hour ahead: not followed, before the next
        // measurement nor after it (which sees the step).
        machine.advance(jiff::SignedDuration::from_hours(1));
        close_to_real(node.clock.now(), "right after the step");
        lodge::align_clock(&node.store, &clock, false).await;
        close_to_real(node.clock.now(), "measured again after the step");
        let offset = clock.offset().as_secs_f64();
        assert!((offset + 90_000.0).abs() < 30.0, "{offset}");

        // An order through it is dated by the database's time.
        crate::provisioning::FakeDriver::default().install(&node);
        let mut cfg = app.config.clone();
        cfg.listen = "127.0.0.1:0".into();
        cfg.metrics_listen = None;
        let server = lodge::Server::start(&cfg, node.clone())
            .await
            .expect("the skewed node serves");
        let base = format!("http://{}", server.addr);
        let client = reqwest::Client::new();
        let o: Value = client
            .post(format!(
                "{base}/v1/organizations/{}/projects/{}/hosting/order",
                app.org_id(),
                app.project_id()
            ))
            .bearer_auth(app.key())
            .json(
                &json!({ "plan_id": starter(&app), "domain_source": "external",
                           "domain_name": "skewed.example" }),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let invoice = o["invoice_id"].as_i64().unwrap_or_else(|| panic!("{o}"));
        let inv: Value = client
            .get(format!(
                "{base}/v1/organizations/{}/invoices/{invoice}",
                app.org_id()
            ))
            .bearer_auth(app.key())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let issued: jiff::Timestamp = str_of(&inv, "issued").parse().unwrap();
        close_to_real(issued, "the invoice's issue");
        server.stop().await.expect("the skewed node stops");
        app.stop().await;
    })
    .await;
}
