//! The short crash check: order load while the real server is SIGKILLed and restarted;
//! every order that was answered `201` must exist in full, and nothing half-written may
//! exist. (The long run is `lodge bench crash --kills 10`, see BENCHMARKS.md.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::{Command, Output};

/// Runs the `lodge` binary with `args` (logging warnings only).
fn lodge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lodge"))
        .args(args)
        .env("LODGE_LOG", "warn")
        .output()
        .expect("run lodge")
}

/// `lodge bench load --json --database-url <url>` with `args`, off the runtime's threads;
/// its report, after checking that it succeeded.
async fn bench_load(url: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench", "load", "--json", "--database-url", url];
    all.extend_from_slice(args);
    let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
    let out = tokio::task::spawn_blocking(move || {
        lodge(&all.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench load failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).expect("JSON report")
}

/// `SELECT COUNT(*)` of `table` in the database at `url`.
async fn count(url: &str, table: &str) -> u64 {
    let store = lodge_store::Store::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(store.reader())
        .await
        .unwrap();
    u64::try_from(n).unwrap()
}

fn run_crash(database_url: &str, kills: &str) {
    let out = lodge(&[
        "bench",
        "crash",
        "--kills",
        kills,
        "--connections",
        "6",
        "--database-url",
        database_url,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "crash check failed:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert!(
        report["orders_acknowledged"].as_u64().unwrap() > 0,
        "the load placed no order: {report}"
    );
}

#[test]
fn sigkill_during_orders_loses_nothing_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    run_crash(&format!("sqlite://{}/crash.db", dir.path().display()), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_orders_loses_nothing_postgres() {
    let Some(url) = lodge_testkit::pg::test_database_url().await else {
        return;
    };
    tokio::task::spawn_blocking(move || run_crash(&url, "3"))
        .await
        .unwrap();
}

/// `lodge bench fill` writes whole orders (invoice, lines, hosting account) with numbered
/// invoices, across more than one of its 2,000-order commits on SQLite.
fn run_fill(database_url: &str, orders: u64) {
    let out = lodge(&[
        "bench",
        "fill",
        "--orders",
        &orders.to_string(),
        "--database-url",
        database_url,
    ]);
    assert!(
        out.status.success(),
        "fill failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn assert_filled(database_url: &str, orders: i64) {
    let store = lodge_store::Store::connect(database_url).await.unwrap();
    let pool = store.reader();
    let placed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE actor = 'bench-fill'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(placed, orders);
    let numbered: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM invoices WHERE number IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(numbered >= orders, "{numbered} numbered invoices");
    let problems = lodge_store::checks::consistency_problems(pool)
        .await
        .unwrap();
    assert_eq!(problems, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fill_writes_whole_numbered_orders_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/fill.db", dir.path().display());
    let u = url.clone();
    tokio::task::spawn_blocking(move || run_fill(&u, 2_100))
        .await
        .unwrap();
    assert_filled(&url, 2_100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fill_writes_whole_numbered_orders_postgres() {
    let Some(url) = lodge_testkit::pg::test_database_url().await else {
        return;
    };
    let u = url.clone();
    tokio::task::spawn_blocking(move || run_fill(&u, 300))
        .await
        .unwrap();
    assert_filled(&url, 300).await;
}

/// `lodge bench load --mix`: the connections interleave the kinds by weight, each kind is
/// reported with the total, and every order the mix reports placed is in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_load_runs_a_weighted_mix_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/mix.db", dir.path().display());
    let report = bench_load(
        &url,
        &[
            "--connections",
            "2",
            "--seconds",
            "1",
            "--mix",
            "storefront=3,order_register=1",
        ],
    )
    .await;
    let rows = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    // Only the mix ran (no --scenarios).
    assert_eq!(
        names,
        ["mix", "mix/storefront", "mix/order_register"],
        "{report}"
    );
    let requests = |i: usize| rows[i]["requests"].as_u64().unwrap();
    assert_eq!(requests(0), requests(1) + requests(2));
    for r in rows {
        assert_eq!(r["errors"], 0, "{r}");
    }
    let (reads, orders) = (requests(1), requests(2));
    assert!(orders >= 1, "{report}");
    // Each connection takes three reads per order, give or take its last cycle.
    assert!(
        reads + 6 >= 3 * orders && reads <= 3 * orders + 6,
        "{report}"
    );
    assert_eq!(count(&url, "orders").await, orders);
    assert_eq!(count(&url, "domains").await, orders);
}

/// A scenario row's `ratios`: its throughput over each of `ceilings` (named as in the
/// report), and nothing for the ceiling the run did not measure (`absent`).
fn assert_rated(r: &serde_json::Value, ceilings: &[(&str, f64)], absent: &str) {
    let x = r["throughput"].as_f64().unwrap();
    for (key, ceiling) in ceilings {
        let got = r["ratios"][key].as_f64().unwrap();
        assert!((got - x / ceiling).abs() < 1e-9, "{key}: {r}");
    }
    assert!(r["ratios"].get(absent).is_none(), "{r}");
}

/// `lodge bench load --scenarios`: each scenario runs against the real server without an
/// error, with ordered percentiles, and is reported as a ratio to its ceiling (reads to
/// `/healthz`, writes to SQLite's plain one-row commit loop measured in the same run) and to
/// each of the others (Lodge's batch writer committing one row at a time); the keyed orders
/// really carry their keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_load_reports_each_scenario_against_its_ceiling_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/load.db", dir.path().display());
    let report = bench_load(
        &url,
        &[
            "--connections",
            "2",
            "--seconds",
            "0.5",
            "--scenarios",
            "healthz,storefront,order_external,order_keyed,pay_credit",
        ],
    )
    .await;
    let bare = report["bare_commits_per_sec"].as_f64().unwrap();
    assert!(bare > 0.0, "{report}");
    // Writes are held to SQLite's own rate: a plain commit loop outside Lodge.
    let plain = report["plain_sqlite_commits_per_sec"].as_f64().unwrap();
    assert!(plain > 0.0, "{report}");
    assert!(report["server_peak_rss_mb"].as_f64().unwrap() > 0.0);
    let rows = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "healthz",
            "storefront",
            "order_external",
            "order_keyed",
            "pay_credit"
        ]
    );
    let healthz = rows[0]["throughput"].as_f64().unwrap();
    for r in rows {
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        let p: Vec<f64> = ["p50_ms", "p90_ms", "p99_ms", "p999_ms"]
            .iter()
            .map(|k| r[k].as_f64().unwrap())
            .collect();
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{r}");
        // Every scenario against every ceiling the run measured; none against PostgreSQL's.
        assert_rated(
            r,
            &[
                ("healthz", healthz),
                ("plain_sqlite_commits", plain),
                ("bare_commits", bare),
            ],
            "bare_commits_concurrent",
        );
        let (ratio, ceiling) = match r["name"].as_str().unwrap() {
            "healthz" => {
                assert!(r["ratio_to_ceiling"].is_null(), "{r}");
                continue;
            }
            "storefront" => (healthz, "healthz"),
            _ => (plain, "plain SQLite one-row commit loop"),
        };
        let expected = r["throughput"].as_f64().unwrap() / ratio;
        let got = r["ratio_to_ceiling"].as_f64().unwrap();
        assert!((got - expected).abs() < 1e-9, "{r}");
        assert!(r["ceiling"].as_str().unwrap().starts_with(ceiling), "{r}");
    }
    assert_eq!(
        count(&url, "idempotency_keys").await,
        rows[3]["requests"].as_u64().unwrap()
    );
}

/// The same on PostgreSQL: writes against one-row commits from as many clients as the load
/// has (pgbench-style), and every scenario against those, one client's and `/healthz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_load_reports_each_scenario_against_its_ceiling_postgres() {
    let Some(url) = lodge_testkit::pg::test_database_url().await else {
        return;
    };
    let report = bench_load(
        &url,
        &[
            "--connections",
            "3",
            "--seconds",
            "0.5",
            "--scenarios",
            "healthz,plans,order_external,pay_credit",
        ],
    )
    .await;
    assert!(report["plain_sqlite_commits_per_sec"].is_null(), "{report}");
    let one = report["bare_commits_per_sec"].as_f64().unwrap();
    let many = report["bare_commits_per_sec_concurrent"].as_f64().unwrap();
    assert!(one > 0.0 && many > 0.0, "{report}");
    let rows = report["scenarios"].as_array().unwrap();
    let healthz = rows[0]["throughput"].as_f64().unwrap();
    for r in rows {
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert_rated(
            r,
            &[
                ("healthz", healthz),
                ("bare_commits", one),
                ("bare_commits_concurrent", many),
            ],
            "plain_sqlite_commits",
        );
        let primary = match r["name"].as_str().unwrap() {
            "healthz" => {
                assert!(r["ratio_to_ceiling"].is_null(), "{r}");
                continue;
            }
            "plans" => "healthz",
            _ => "bare_commits_concurrent",
        };
        assert_eq!(r["ratio_to_ceiling"], r["ratios"][primary], "{r}");
        if primary != "healthz" {
            assert_eq!(r["ceiling"], "one-row commits from 3 clients", "{r}");
        }
    }
}
