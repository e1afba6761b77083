//! Issue 18: payment tokens are stored as digests. The database holds no payment page's
//! token (not in the invoice, not in an `Idempotency-Key`'s stored answer), every link
//! Lodge shows still opens its page, a wrong token is `404`, and the links of a database
//! upgraded from a build that stored tokens in plaintext keep working.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Digest;

use crate::harness::{invoice, starter, str_of, TestApp};
use crate::on_both_engines;

on_both_engines!(
    the_database_holds_no_payment_token_and_its_link_works,
    an_upgraded_databases_old_payment_links_keep_working,
);

/// Places an unpaid order (the demo organization has no credit) with `key`: the answer.
async fn keyed_order(app: &TestApp, key: &str, domain: &str) -> (Value, bool) {
    let resp = app
        .client
        .post(app.url(&format!(
            "/v1/organizations/{}/projects/{}/hosting/order",
            app.org_id(),
            app.project_id()
        )))
        .bearer_auth(app.key())
        .header("Idempotency-Key", key)
        .json(
            &json!({ "plan_id": starter(app), "domain_source": "external", "domain_name": domain }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    (resp.json().await.unwrap(), replayed)
}

/// The token of a payment URL (`…/pay/<token>`).
fn token_of(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

async fn page_status(app: &TestApp, token: &str) -> StatusCode {
    app.client
        .get(app.url(&format!("/pay/{token}")))
        .send()
        .await
        .unwrap()
        .status()
}

/// The invoice's stored token columns: (digest, salt, legacy digest).
async fn stored(app: &TestApp, id: i64) -> (String, String, Option<String>) {
    sqlx::query_as(
        "SELECT payment_token_digest, payment_token_salt, legacy_token_digest FROM invoices WHERE id = $1",
    )
    .bind(id)
    .fetch_one(app.lodge.store.reader())
    .await
    .unwrap()
}

/// Rows of the tables an order writes whose text holds `secret` anywhere.
async fn rows_holding(app: &TestApp, secret: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (table, columns) in [
        (
            "invoices",
            "payment_token_digest || payment_token_salt || COALESCE(legacy_token_digest, '') || COALESCE(number, '')",
        ),
        ("idempotency_keys", "COALESCE(response, '')"),
        ("events", "data"),
        ("jobs", "payload"),
    ] {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table} WHERE {columns} LIKE $1"
        ))
        .bind(format!("%{secret}%"))
        .fetch_one(app.lodge.store.reader())
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"));
        if n > 0 {
            found.push(format!("{table}: {n}"));
        }
    }
    found
}

/// The digest the page looks a token up by: its 11 time digits, then its hex SHA-256.
fn digest_of(token: &str) -> String {
    let hash: String = sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}{hash}", &token[..11])
}

async fn the_database_holds_no_payment_token_and_its_link_works(app: TestApp) {
    let (o, replayed) = keyed_order(&app, "token-key", "digest-only.example").await;
    assert!(!replayed);
    let url = str_of(&o, "invoice_payment_url").to_owned();
    let token = token_of(&url);
    assert_eq!(token.len(), 43, "{url}");
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
    let id = o["invoice_id"].as_i64().unwrap();

    // The row holds the salt and the digest, not the token; no row an order writes does.
    let (digest, salt, legacy) = stored(&app, id).await;
    assert_eq!(digest, digest_of(&token));
    assert_eq!(legacy, None);
    assert_eq!(salt.len(), 11 + 32, "{salt}");
    let secret = &token[11..];
    assert!(!salt.contains(secret));
    assert_eq!(rows_holding(&app, secret).await, Vec::<String>::new());

    // The link works, and so do the links every other answer shows; they are one link.
    assert_eq!(page_status(&app, &token).await, StatusCode::OK);
    let inv = invoice(&app, id).await;
    assert_eq!(str_of(&inv, "payment_url"), url);
    let v2 = crate::harness::v2_ok(
        &app,
        reqwest::Method::GET,
        &format!("/apiv2/billing/invoices/{id}"),
        &app.key(),
        None,
    )
    .await;
    assert_eq!(token_of(str_of(&v2, "payment_url")), token);

    // A retry with the key replays the answer, the link derived again from the stored
    // salt (the stored answer holds no token).
    let (again, replayed) = keyed_order(&app, "token-key", "digest-only.example").await;
    assert!(replayed);
    assert_eq!(again, o);

    // A wrong token is 404: one character changed, the digest itself, the salt.
    let last = token.chars().last().unwrap();
    let other = format!("{}{}", &token[..42], if last == '0' { '1' } else { '0' });
    for wrong in [other.as_str(), digest.as_str(), salt.as_str()] {
        assert_eq!(
            page_status(&app, wrong).await,
            StatusCode::NOT_FOUND,
            "{wrong}"
        );
    }
    app.stop().await;
}

/// A database written by a build that stored tokens in plaintext (simulated: an invoice
/// and a stored order answer put back in that form) is converted once when a node opens
/// it: the old link still opens the page, the invoice shows a new link that works too, and
/// neither the row nor the stored answer keeps the old token.
async fn an_upgraded_databases_old_payment_links_keep_working(app: TestApp) {
    let (o, _) = keyed_order(&app, "old-key", "from-before.example").await;
    let id = o["invoice_id"].as_i64().unwrap();
    let old = format!("0{}", "a1b2c3d4e5f6g7h8i9j0".repeat(3));
    let old = &old[..43];
    sqlx::query(
        "UPDATE invoices SET payment_token_digest = $1, payment_token_salt = '' WHERE id = $2",
    )
    .bind(old)
    .bind(id)
    .execute(app.lodge.store.writer())
    .await
    .unwrap();
    let mut answer: Value = serde_json::from_str(
        &sqlx::query_scalar::<_, String>(
            "SELECT response FROM idempotency_keys WHERE key = 'old-key'",
        )
        .fetch_one(app.lodge.store.reader())
        .await
        .unwrap(),
    )
    .unwrap();
    let answer_obj = answer.as_object_mut().unwrap();
    answer_obj.remove("payment_token_salt");
    answer_obj.insert("payment_token".into(), json!(old));
    sqlx::query("UPDATE idempotency_keys SET response = $1 WHERE key = 'old-key'")
        .bind(answer.to_string())
        .execute(app.lodge.store.writer())
        .await
        .unwrap();

    assert_eq!(app.lodge.convert_payment_tokens().await.unwrap(), 1);
    assert_eq!(app.lodge.convert_payment_tokens().await.unwrap(), 0, "once");

    let (digest, salt, legacy) = stored(&app, id).await;
    assert_eq!(legacy.as_deref(), Some(digest_of(old).as_str()));
    assert_eq!(rows_holding(&app, &old[11..]).await, Vec::<String>::new());
    // The old link opens the page.
    assert_eq!(page_status(&app, old).await, StatusCode::OK);
    // The invoice now shows a new link, which opens it too.
    let url = str_of(&invoice(&app, id).await, "payment_url").to_owned();
    let new = token_of(&url);
    assert_ne!(new, old);
    assert_eq!(digest, digest_of(&new));
    assert!(!salt.contains(&new[11..]));
    assert_eq!(page_status(&app, &new).await, StatusCode::OK);
    // The stored answer, replayed, shows the new link.
    let (again, replayed) = keyed_order(&app, "old-key", "from-before.example").await;
    assert!(replayed);
    assert_eq!(str_of(&again, "invoice_payment_url"), url);
    // Paying through the old link pays the invoice (and only once).
    crate::harness::add_credit(&app, &app.org_id(), "100.00").await;
    let resp = crate::pages::page_form_post(&app, &format!("/pay/{old}/credit"), None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("result=paid"),
        "{:?}",
        resp.headers()
    );
    assert_eq!(str_of(&invoice(&app, id).await, "status"), "paid");
    app.stop().await;
}
