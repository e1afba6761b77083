//! The short crash check: order load while the real server is SIGKILLed and restarted;
//! every order that was answered `201` must exist in full, and nothing half-written may
//! exist. (The long run is `lodge bench crash --kills 10`, see BENCHMARKS.md.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn run_crash(database_url: &str, kills: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_lodge"))
        .args([
            "bench",
            "crash",
            "--kills",
            kills,
            "--connections",
            "6",
            "--database-url",
            database_url,
        ])
        .env("LODGE_LOG", "warn")
        .output()
        .expect("run lodge bench crash");
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
