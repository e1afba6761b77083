//! The payment page as a customer's browser shows it: rendered by headless Chromium (real
//! `chromium`, skipped with a message unless `LODGE_REQUIRE_SERVICES=1`), its DOM checked
//! after its scripts ran and its screenshot checked to be a drawn page. The screenshot is
//! kept as `target/screenshots/<test>.png` (under `CARGO_TARGET_DIR`) for a human to look at.

use lodge_testkit::chromium;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{str_of, TestApp};
use crate::on_both_engines;

on_both_engines!(the_payment_page_renders_in_a_browser);
on_both_engines!(options = with_stripe; the_payment_page_offers_the_card_in_a_browser);

/// Stripe configured (its API is never called by showing the page: a closed port).
fn with_stripe() -> crate::harness::Options {
    crate::harness::Options {
        stripe: Some(("http://127.0.0.1:9".into(), None)),
        ..Default::default()
    }
}

/// An unpaid order's payment URL (no credit: everything is due).
pub(crate) async fn unpaid_order(app: &TestApp, domain: &str) -> String {
    let body = json!({ "plan_id": crate::harness::starter(app), "domain_source": "external",
                       "domain_name": domain, "billing_cycle": "monthly" });
    let (status, o) = app
        .post(
            &format!(
                "/v1/organizations/{}/projects/{}/hosting/order",
                app.org_id(),
                app.project_id()
            ),
            &app.key(),
            &body,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    str_of(&o, "invoice_payment_url").to_owned()
}

/// Renders `url` in Chromium, keeps the screenshot as `name.png`; `None` when Chromium is
/// missing (skipped) .
pub(crate) async fn render(url: &str, name: &str) -> Option<chromium::Rendered> {
    if chromium::chromium_binary().is_none() {
        lodge_testkit::skip_or_fail("chromium", "no chromium binary on the PATH");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let page = chromium::render(url, dir.path(), 1000, 900).await.unwrap();
    let keep = std::path::PathBuf::from(
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
    )
    .join("screenshots");
    std::fs::create_dir_all(&keep).unwrap();
    let kept = keep.join(format!("{name}.png"));
    std::fs::copy(&page.screenshot, &kept).unwrap();
    Some(chromium::Rendered {
        screenshot: kept,
        ..page
    })
}

async fn the_payment_page_renders_in_a_browser(app: TestApp) {
    let url = unpaid_order(&app, "browser.test").await;
    let Some(page) = render(&url, "payment-page").await else {
        app.stop().await;
        return;
    };
    assert!(page.dom.contains("Ways to pay"), "{}", page.dom);
    assert!(
        page.dom.contains("id=\"amount-due\">5.00 USD"),
        "{}",
        page.dom
    );
    assert!(page.dom.contains("Your credit does not cover this invoice"));
    assert_eq!((page.width, page.height), (1000, 900));
    // Drawn: text and coloured boxes on the background, not a blank or an error page.
    assert!(page.drawn > 0.01, "drawn {:.4}", page.drawn);
    assert!(page.colours > 20, "{} colours", page.colours);
    app.stop().await;
}

async fn the_payment_page_offers_the_card_in_a_browser(app: TestApp) {
    let url = unpaid_order(&app, "card-browser.test").await;
    let Some(page) = render(&url, "payment-page-card").await else {
        app.stop().await;
        return;
    };
    // Three ways to pay, the card among them with its button.
    for id in ["pay-credit", "pay-bank", "pay-card"] {
        assert!(
            page.dom.contains(&format!("id=\"{id}\"")),
            "{id}: {}",
            page.dom
        );
    }
    assert!(page.dom.contains("Pay 5.00 USD by card"), "{}", page.dom);
    assert!(page.drawn > 0.01, "drawn {:.4}", page.drawn);
    assert!(page.colours > 20, "{} colours", page.colours);
    app.stop().await;
}
