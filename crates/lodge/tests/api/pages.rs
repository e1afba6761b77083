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
on_both_engines!(payment_pages_carry_security_headers);
on_both_engines!(the_credit_button_needs_the_pages_csrf_token);
on_both_engines!(options = with_stripe; card_steps_are_limited_per_payment_token);

/// The CSRF token a payment page of `token` carries, made as the server makes it (an HMAC of
/// the payment token and a nonce under a key derived from the test apps' secret key).
pub(crate) fn csrf_for(token: &str) -> String {
    use hmac::Mac;
    use sha2::Digest;
    let key = [0x11u8; 32];
    let mut h = sha2::Sha256::new();
    h.update(b"lodge key derivation\0");
    h.update(key);
    let base: [u8; 32] = h.finalize().into();
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&base).unwrap();
    m.update(b"lodge payment page forms");
    let derived = m.finalize().into_bytes();
    let nonce = "0123456789abcdef0123456789abcdef";
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&derived).unwrap();
    m.update(token.as_bytes());
    m.update(b"\0");
    m.update(nonce.as_bytes());
    format!("{nonce}.{}", hex_of(&m.finalize().into_bytes()))
}

/// The form body a page at `pay_url` (`…/pay/<token>`) posts: its CSRF token.
pub(crate) fn form_body_for(pay_url: &str) -> String {
    format!("csrf={}", csrf_for(pay_url.rsplit('/').next().unwrap()))
}

/// A page's text (or an attribute of it) as a browser reads it: minijinja escapes `/`, `=`
/// and `&` in attributes.
pub(crate) fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x3d;", "=")
        .replace("&amp;", "&")
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// POSTs a page form (`/pay/<token>/<action>`) with `csrf` (the right one when `None`),
/// following no redirect.
pub(crate) async fn page_form_post(
    app: &TestApp,
    path: &str,
    csrf: Option<&str>,
) -> reqwest::Response {
    let token = path.trim_start_matches("/pay/").split('/').next().unwrap();
    let csrf = csrf.map_or_else(|| csrf_for(token), str::to_owned);
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap()
}

/// The headers every response under /pay carries.
fn assert_page_headers(resp: &reqwest::Response, what: &str) {
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_owned()
    };
    let csp = h("content-security-policy");
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'sha256-",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "{what}: {part} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("cache-control"), "no-store", "{what}");
}

/// Stripe configured (its API is never called by showing the page: a closed port).
fn with_stripe() -> crate::harness::Options {
    crate::harness::Options {
        stripe: Some(("http://127.0.0.1:9".into(), Some("pk_test_pages".into()))),
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
    // The workspace's target directory: a test runs in its package's directory, where a
    // relative `target` would land inside the source tree.
    let keep = std::path::PathBuf::from(
        std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").into()),
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

async fn payment_pages_carry_security_headers(app: TestApp) {
    let url = unpaid_order(&app, "headers.test").await;
    let token = url.rsplit('/').next().unwrap().to_owned();
    let resp = app.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_page_headers(&resp, "the page");
    let html = resp.text().await.unwrap();
    // No inline script; the one inline stylesheet is allowed by its hash, no style attribute.
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "{html}"
    );
    // Its content in a main landmark (found by the accessibility audit).
    assert!(
        html.contains("<main>") && html.contains("</main>"),
        "{html}"
    );
    for (path, status) in [
        ("/pay/no-such-token".to_owned(), StatusCode::NOT_FOUND),
        ("/pay/no/such/page".to_owned(), StatusCode::NOT_FOUND),
        // A mangled link: an escape no page's address has (it was plain text and JSON).
        ("/pay/%FF".to_owned(), StatusCode::NOT_FOUND),
        (format!("/pay/{token}%00"), StatusCode::NOT_FOUND),
        (
            format!("/pay/{}/return", "x".repeat(40)),
            StatusCode::NOT_FOUND,
        ),
        // Card payments are off here: the way back from them comes to the invoice's page
        // and says so (found by the accessibility audit: "Invoice not found").
        (format!("/pay/{token}/return"), StatusCode::OK),
    ] {
        let resp = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert_page_headers(&resp, &path);
        let html = resp.text().await.unwrap();
        // An English page sized for a phone, whatever it says, a path that is no page's
        // too (it was the API's JSON 404: found by the accessibility audit).
        assert!(
            html.contains("<html lang=\"en\">") && html.contains("name=\"viewport\""),
            "{path}: {html}"
        );
        if path.contains("/such/") || path.contains('%') {
            assert!(html.contains("<h1>Page not found</h1>"), "{html}");
        }
        if status == StatusCode::OK {
            assert!(html.contains("Card payments are not offered"), "{html}");
        }
    }
    // A payment link with a slash added goes to its page (GET only: its query is dropped,
    // the page needs none).
    let resp = app
        .client
        .get(app.url(&format!("/pay/{token}/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "followed to the page");
    assert_eq!(resp.url().path(), format!("/pay/{token}"));
    // A payment page's address with a method it does not take: a page too, with `Allow`.
    let resp = app
        .client
        .get(app.url(&format!("/pay/{token}/credit")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_page_headers(&resp, "the 405");
    assert_eq!(resp.headers()["allow"], "POST");
    let html = resp.text().await.unwrap();
    assert!(html.contains("Nothing was paid"), "{html}");
    // Outside the pages, the API's JSON as before.
    let resp = app
        .client
        .get(app.url("/no/such/path"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["detail"],
        "Not found."
    );
    // A form over the body limit: a page too (it was the API's JSON).
    let resp = app
        .client
        .post(app.url(&format!("/pay/{token}/credit")))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", "x".repeat(1024 * 1024 + 1)))
        .send()
        .await;
    if let Ok(resp) = resp {
        // (The server may close before the client has sent it all: the transport's race.)
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_page_headers(&resp, "the 413");
        let html = resp.text().await.unwrap();
        assert!(
            html.contains("too large") && html.contains("Nothing was paid"),
            "{html}"
        );
    }
    let resp = page_form_post(&app, &format!("/pay/{token}/credit"), Some("x.y")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_page_headers(&resp, "the 403");
    // With a way back to the page, rather than "reload it", which would post again.
    let html = resp.text().await.unwrap();
    assert!(html.contains(&format!("href=\"/pay/{token}\"")), "{html}");
    // The API is not a page: its responses keep their own headers.
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(resp.headers().get("content-security-policy").is_none());
    app.stop().await;
}

async fn the_credit_button_needs_the_pages_csrf_token(app: TestApp) {
    let url = unpaid_order(&app, "csrf.test").await;
    let token = url.rsplit('/').next().unwrap().to_owned();
    let other = unpaid_order(&app, "csrf-other.test").await;
    let other_token = other.rsplit('/').next().unwrap().to_owned();
    crate::harness::add_credit(&app, &app.org_id(), "100.00").await;
    let path = format!("/pay/{token}/credit");

    // The page's form carries a token, new on every render.
    let page = |u: String| {
        let c = app.client.clone();
        async move { c.get(&u).send().await.unwrap().text().await.unwrap() }
    };
    let field = |html: &str| {
        html.split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no csrf field: {html}"))
            .to_owned()
    };
    let first = field(&page(url.clone()).await);
    let second = field(&page(url.clone()).await);
    assert_ne!(first, second, "a nonce per render");

    // Without a token, with a wrong one, with another invoice's, or with a bare POST: 403,
    // and nothing is paid.
    let other_csrf = field(&page(other.clone()).await);
    let last = if first.ends_with('0') { "1" } else { "0" };
    let tampered = format!("{}{last}", &first[..first.len() - 1]);
    for bad in [
        "",
        "nonsense",
        "a.b",
        &other_csrf,
        &tampered,
        &csrf_for(&other_token),
    ] {
        let resp = page_form_post(&app, &path, Some(bad)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{bad}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("Nothing was paid"), "{body}");
    }
    let resp = app.client.post(app.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let html = page(url.clone()).await;
    assert!(html.contains("Ways to pay"), "still unpaid: {html}");
    assert!(!html.contains("id=\"thanks\""), "{html}");

    // The page's own token pays (either render's).
    let resp = page_form_post(&app, &path, Some(&first)).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("/pay/{token}?result=paid")
    );
    let html = page(url.clone()).await;
    assert!(html.contains("id=\"thanks\""), "{html}");
    app.stop().await;
}

/// Each card step asks Stripe: one link's holder cannot make Lodge ask it without limit
/// (found by the payments audit). Limited per payment token; the page itself is not.
async fn card_steps_are_limited_per_payment_token(app: TestApp) {
    let url = unpaid_order(&app, "limited.test").await;
    let token = url.rsplit('/').next().unwrap().to_owned();
    let other = unpaid_order(&app, "limited-other.test").await;
    let other_token = other.rsplit('/').next().unwrap().to_owned();
    let path = format!("/pay/{token}/card");
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(page_form_post(&app, &path, None).await);
    }
    // The first ones went to the gateway (unreachable here: back to the page with why).
    assert_eq!(answers[0].status(), StatusCode::SEE_OTHER);
    let loc = answers[0].headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(loc.ends_with("result=card_unavailable"), "{loc}");
    let limited: Vec<_> = answers
        .into_iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(limited.len() >= 2, "{} limited", limited.len());
    let wait: u64 = limited[0].headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1);
    let body = limited.into_iter().next().unwrap().text().await.unwrap();
    assert!(body.contains("Nothing was paid"), "{body}");
    // The way back from Stripe.js is the same token's step.
    let resp = app
        .client
        .get(app.url(&format!("/pay/{token}/return?payment_intent=pi_1")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = resp.text().await.unwrap();
    assert!(body.contains("may have gone through"), "{body}");
    assert!(body.contains(&format!("href=\"/pay/{token}\"")), "{body}");
    // A path that cannot be a token is not found, and not counted.
    let long = "x".repeat(4000);
    for _ in 0..8 {
        let resp = app
            .client
            .get(app.url(&format!("/pay/{long}/return?payment_intent=pi_1")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    // Another invoice's link, and the page itself, are not limited.
    let resp = page_form_post(&app, &format!("/pay/{other_token}/card"), None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = app.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    app.stop().await;
}

// ---- the card form's script in a browser ----

/// A stand-in for Stripe.js: the card field mounts, and confirming succeeds with the page's
/// intent.
const STRIPE_STUB: &str = r#"window.Stripe = function () {
  return {
    elements: function () { return { create: function () { return { mount: function () {} }; } }; },
    confirmCardPayment: function () { return Promise.resolve({ paymentIntent: { id: "pi_browser" } }); }
  };
};"#;

/// Stripe.js refusing a mistyped card number before asking Stripe: an error, no intent.
const STRIPE_MISTYPED: &str = r#"window.Stripe = function () {
  return {
    elements: function () { return { create: function () { return { mount: function () {} }; } }; },
    confirmCardPayment: function () { return Promise.resolve({ error: { type: "validation_error", message: "Your card number is invalid." } }); }
  };
};"#;

/// The connection to Stripe lost after confirming: an error without the intent.
const STRIPE_LOST: &str = r#"window.Stripe = function () {
  return {
    elements: function () { return { create: function () { return { mount: function () {} }; } }; },
    confirmCardPayment: function () { return Promise.resolve({ error: { type: "api_connection_error", message: "Network error." } }); }
  };
};"#;

/// Stripe declining the card: an error carrying the intent.
const STRIPE_DECLINED: &str = r#"window.Stripe = function () {
  return {
    elements: function () { return { create: function () { return { mount: function () {} }; } }; },
    confirmCardPayment: function () { return Promise.resolve({ error: { type: "card_error", code: "card_declined", message: "Your card was declined.", payment_intent: { id: "pi_browser" } } }); }
  };
};"#;

/// The customer clicks the card form's button (a disabled button does nothing).
const CLICK: &str = r##"document.querySelector("#card-form button").click();"##;

/// The card form's markup as pay.html writes it, with a return address that already
/// carries a query (the invoices to pay next and the way back to the store), then Stripe
/// (or nothing), card.js and a click.
fn card_page(stripe_js: Option<&str>) -> String {
    let stripe = stripe_js.map_or_else(String::new, |src| {
        format!(r#"<script src="{src}"></script>"#)
    });
    format!(
        r#"<!doctype html><html><body>
<div id="card-form" data-publishable-key="pk_test" data-client-secret="pi_browser_secret" data-return-url="/pay/T/return?then=U%2CV&amp;return=https%3A%2F%2Fshop.test%2F" data-intent="pi_browser">
  <form>
    <div id="card-element"></div>
    <p id="card-status">Loading the card form…</p>
    <p id="card-error" role="alert"></p>
    <button type="submit" disabled>Pay 5.00 USD by card</button>
  </form>
</div>
{stripe}<script src="/card.js"></script><script src="/click.js"></script>
</body></html>"#
    )
}

/// Lodge's card.js (as `/pay/assets/card.js` serves it) in Chromium: after the card is
/// confirmed, the browser goes to the return address with the intent added to the query it
/// already had (found by the payments audit: `?then=…?payment_intent=…` lost the intent and
/// the customer, just charged, saw "Invoice not found"); without Stripe.js the button
/// stays disabled and the page says why (it submitted a bare GET, answered 405 JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_script_returns_with_the_intent_in_the_query_it_had() {
    use axum::extract::{OriginalUri, State};
    use axum::response::IntoResponse;
    use std::sync::{Arc, Mutex};
    if chromium::chromium_binary().is_none() {
        lodge_testkit::skip_or_fail("chromium", "no chromium binary on the PATH");
        return;
    }
    let card_js = include_str!("../../../http/src/templates/card.js");
    type Seen = Arc<Mutex<Vec<String>>>;
    let seen: Seen = Arc::default();
    let js = |body: &'static str| {
        move || async move { ([("content-type", "text/javascript")], body).into_response() }
    };
    let app = axum::Router::new()
        .route(
            "/with",
            axum::routing::get(|| async { axum::response::Html(card_page(Some("/stripe.js"))) }),
        )
        .route(
            "/without",
            axum::routing::get(|| async { axum::response::Html(card_page(None)) }),
        )
        .route(
            "/mistyped",
            axum::routing::get(|| async {
                axum::response::Html(card_page(Some("/stripe-mistyped.js")))
            }),
        )
        .route(
            "/declined",
            axum::routing::get(|| async {
                axum::response::Html(card_page(Some("/stripe-declined.js")))
            }),
        )
        .route("/stripe.js", axum::routing::get(js(STRIPE_STUB)))
        .route(
            "/stripe-mistyped.js",
            axum::routing::get(js(STRIPE_MISTYPED)),
        )
        .route(
            "/stripe-declined.js",
            axum::routing::get(js(STRIPE_DECLINED)),
        )
        .route(
            "/lost",
            axum::routing::get(|| async {
                axum::response::Html(card_page(Some("/stripe-lost.js")))
            }),
        )
        .route("/stripe-lost.js", axum::routing::get(js(STRIPE_LOST)))
        .route("/card.js", axum::routing::get(js(card_js)))
        .route("/click.js", axum::routing::get(js(CLICK)))
        .route(
            "/pay/T/return",
            axum::routing::get(
                |State(seen): State<Seen>, OriginalUri(uri): OriginalUri| async move {
                    seen.lock().unwrap().push(uri.to_string());
                    axum::response::Html("<p id=\"returned\">back</p>")
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dom = chromium::dump_dom(&format!("{base}/with")).await.unwrap();
    assert!(dom.contains("id=\"returned\""), "{dom}");
    let returned = seen.lock().unwrap().clone();
    assert_eq!(returned.len(), 1, "{returned:?}");
    let url = reqwest::Url::parse(&format!("{base}{}", returned[0])).unwrap();
    let query: std::collections::BTreeMap<String, String> =
        url.query_pairs().into_owned().collect();
    assert_eq!(
        query.get("payment_intent").map(String::as_str),
        Some("pi_browser"),
        "{url}"
    );
    assert_eq!(query.get("then").map(String::as_str), Some("U,V"), "{url}");
    assert_eq!(
        query.get("return").map(String::as_str),
        Some("https://shop.test/"),
        "{url}"
    );

    let dom = chromium::dump_dom(&format!("{base}/without"))
        .await
        .unwrap();
    assert!(dom.contains("Stripe's script did not load"), "{dom}");
    assert!(dom.contains("disabled"), "{dom}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no navigation without Stripe"
    );

    // A mistyped number: the message on the page, the button usable again, no navigation
    // (it went back and said "being processed").
    let dom = chromium::dump_dom(&format!("{base}/mistyped"))
        .await
        .unwrap();
    assert!(dom.contains("Your card number is invalid."), "{dom}");
    assert!(!dom.contains("id=\"returned\""), "{dom}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no navigation on a mistyped card"
    );
    // A decline: back to the page, which reads the intent's failure.
    let dom = chromium::dump_dom(&format!("{base}/declined"))
        .await
        .unwrap();
    assert!(dom.contains("id=\"returned\""), "{dom}");
    let returned = seen.lock().unwrap().clone();
    assert_eq!(returned.len(), 2, "{returned:?}");
    assert!(
        returned[1].contains("payment_intent=pi_browser"),
        "{returned:?}"
    );
    // A connection lost after confirming: back to the page too, which reads where the
    // payment stands (the card may have been charged).
    let dom = chromium::dump_dom(&format!("{base}/lost")).await.unwrap();
    assert!(dom.contains("id=\"returned\""), "{dom}");
    assert_eq!(seen.lock().unwrap().len(), 3);
    server.abort();
}
