//! Issue: the foundation (tenancy, credentials, catalog reads, operations).

use reqwest::StatusCode;

use crate::harness::TestApp;
use crate::on_both_engines;

on_both_engines!(demo_key_lists_demo_plans);

async fn demo_key_lists_demo_plans(app: TestApp) {
    let (status, body) = app.get("/v1/hosting/plans", &app.key()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Starter"), "{names:?}");
    assert!(!names.contains(&"Legacy Basic"), "hidden plans are not listed");
    app.stop().await;
}
