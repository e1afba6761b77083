//! A property-based fuzz run of the whole OpenAPI document (`/v1`, `/v1/admin`, `/apiv2`,
//! the pages) with schemathesis (PyPI, in the test servers' venv that `.ci/run` makes)
//! against the real server on SQLite with the demo data, with every check but
//! `positive_data_acceptance`: no 5xx, answers as the document says, schema-violating
//! requests refused.
//! Bounded: a fixed seed, at most [`EXAMPLES`] cases per operation and [`MAX_SECS`] in all.
//! Skipped with a message when schemathesis is missing, unless `LODGE_REQUIRE_SERVICES=1`.
//!
//! By hand, against `lodge serve --demo` (keys from its output):
//! `schemathesis run http://127.0.0.1:8080/openapi.json --checks all --exclude-checks
//!  positive_data_acceptance -n 20 --seed 1 -H 'Authorization: Bearer <admin_api_key>' -H 'X-API-KEY: <api_key>'`

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use lodge::config::{Config, FileConfig, Overrides};
use lodge::Server;
use lodge_core::ManualClock;

use crate::harness::start_time;

/// Test cases per API operation.
const EXAMPLES: u32 = 20;
/// schemathesis's time budget, seconds.
const MAX_SECS: u32 = 240;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_the_openapi_document_finds_no_server_error_and_no_nonconformance() {
    let Some(schemathesis) = lodge_testkit::venv_bin("schemathesis") else {
        lodge_testkit::skip_or_fail(
            "schemathesis",
            "not in the test venv (.ci/run installs it; or pip install schemathesis)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::resolve(
        Overrides {
            listen: Some("127.0.0.1:0".into()),
            database_url: Some(format!("sqlite://{}/lodge.db", dir.path().display())),
            public_base_url: Some("http://127.0.0.1:0".into()),
            rate_limit_per_minute: Some(0),
            rate_limit_burst: Some(0),
            jwt_secret: Some("test-jwt-secret-of-at-least-32-characters".into()),
            secret_key: Some("11".repeat(32)),
            bank_transfer_instructions: Some("Pay to IBAN XX00 LODGE 0000.".into()),
            ..Default::default()
        },
        FileConfig::default(),
    );
    let lodge = lodge::open(&cfg, Arc::new(ManualClock::new(start_time())))
        .await
        .unwrap();
    let demo = lodge.seed_demo().await.unwrap();
    let server = Server::start(&cfg, lodge).await.unwrap();
    let base = format!("http://{}", server.addr);

    let run = tokio::process::Command::new(&schemathesis)
        .args(["run", &format!("{base}/openapi.json")])
        // Every check but `positive_data_acceptance`, which expects every schema-valid
        // request to succeed: requests that name plans, organizations or members that do
        // not exist are schema-valid and rightly refused.
        .args(["--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", &EXAMPLES.to_string()])
        .args(["--max-time", &MAX_SECS.to_string()])
        .args(["--seed", "1", "--workers", "1", "--no-shrink", "--no-color"])
        .args(["--generation-database", "none", "--request-timeout", "20"])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", demo.admin_api_key),
        ])
        .args(["-H", &format!("X-API-KEY: {}", demo.api_key)])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(u64::from(MAX_SECS) + 120), run)
        .await
        .expect("schemathesis ends within its budget")
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{summary}");

    // Lodge's own count of what it answered: no 5xx, whatever schemathesis concluded.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let server_errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("lodge_http_requests_total") && l.contains("status=\"5"))
        .collect();
    assert!(
        server_errors.is_empty(),
        "server errors: {server_errors:#?}\n{stdout}"
    );
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
    server.stop().await.unwrap();
}
