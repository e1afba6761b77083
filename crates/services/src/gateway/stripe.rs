//! A small typed client of Stripe's REST API, Lodge's own over reqwest: form-encoded
//! requests, the secret key as a Bearer token, an `Idempotency-Key` on every POST. Only the
//! fields Lodge reads are typed, each with a default, so a server that leaves some out
//! (localstripe, the test server) parses too.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Stripe's API.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// What configures the Stripe gateway.
#[derive(Clone)]
pub struct StripeSettings {
    /// `sk_…` (or a restricted `rk_…` key).
    pub secret_key: SecretString,
    /// `pk_…`: with it, the payment page loads Stripe Elements to take the card.
    pub publishable_key: Option<String>,
    /// The webhook endpoint's signing secrets (`whsec_…`); several during a rotation.
    pub webhook_secrets: Vec<SecretString>,
    /// Base URL of the API, without a trailing slash (tests point it at localstripe).
    pub api_base: String,
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("secret_key", &"[redacted]")
            .field("publishable_key", &self.publishable_key)
            .field(
                "webhook_secrets",
                &format!("[{} redacted]", self.webhook_secrets.len()),
            )
            .field("api_base", &self.api_base)
            .finish()
    }
}

/// Currencies whose amounts Stripe counts in another unit than their ISO 4217 minor unit
/// (Lodge's): ISK (no minor unit in ISO, two decimals at Stripe), MGA (two in ISO, none at
/// Stripe), and the three-decimal ones (Stripe takes only amounts ending in 0). Lodge's
/// amount sent as is would be charged 100 times too little or too much, or refused (found
/// by the payments audit); card payments in them are refused at start.
pub const CURRENCIES_STRIPE_COUNTS_OTHERWISE: &[&str] = &[
    "ISK", "MGA", "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND",
];

/// Why card payments through Stripe cannot be taken in `currency` (its code), if they
/// cannot.
pub fn currency_problem(currency: &str) -> Option<String> {
    let code = currency.trim().to_ascii_uppercase();
    CURRENCIES_STRIPE_COUNTS_OTHERWISE
        .contains(&code.as_str())
        .then(|| {
            // Said as it is for each (found by the currencies audit: a three-decimal
            // currency was said to be counted in another unit, which it is not).
            let why = match code.as_str() {
                "ISK" => "Stripe counts it with two decimals, ISO 4217 (Lodge) with none",
                "MGA" => "Stripe counts it with no decimals, ISO 4217 (Lodge) with two",
                _ => "Stripe takes a three-decimal currency's amounts only when they end in 0, which invoices' amounts do not",
            };
            format!(
                "card payments through Stripe are not taken in {code}: {why} (remove \
                 --stripe-secret-key, or sell in another currency)"
            )
        })
}

impl StripeSettings {
    /// Why these settings cannot work, if they cannot (refused at start).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let key = self.secret_key.expose_secret();
        if !(key.starts_with("sk_") || key.starts_with("rk_")) || key.len() < 8 {
            out.push("--stripe-secret-key must be a Stripe secret key (sk_… or rk_…)".into());
        }
        if let Some(pk) = &self.publishable_key {
            if !pk.starts_with("pk_") || pk.len() < 8 {
                out.push("--stripe-publishable-key must be a publishable key (pk_…)".into());
            }
        }
        if self.webhook_secrets.is_empty() {
            out.push(
                "--stripe-webhook-secret is required with a Stripe secret key (the signing \
                 secret of the webhook endpoint, whsec_…)"
                    .into(),
            );
        }
        if self
            .webhook_secrets
            .iter()
            .any(|s| s.expose_secret().trim().is_empty())
        {
            out.push("--stripe-webhook-secret: a secret is empty".into());
        }
        let base = self.api_base.as_str();
        let host = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"));
        if host.is_none_or(|h| h.is_empty() || h.contains(['?', '#', ' '])) {
            out.push(format!(
                "--stripe-api-base must be an http(s) URL (got {base:?})"
            ));
        }
        out
    }

    /// Where the browser loads Stripe.js: Stripe's CDN for Stripe's API, else the API's
    /// host (localstripe serves its mock at `/js.stripe.com/v3/`).
    pub fn js_url(&self) -> String {
        if self.api_base == DEFAULT_API_BASE {
            "https://js.stripe.com/v3/".to_owned()
        } else {
            format!("{}/js.stripe.com/v3/", self.api_base)
        }
    }
}

/// A failed call: Stripe's error (status, code, message), or no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe answered {status}: {message}")]
    Api {
        status: u16,
        code: Option<String>,
        message: String,
        /// The intent the error is about (a declined confirmation carries it).
        payment_intent: Option<Box<PaymentIntent>>,
    },
    #[error("Stripe could not be reached: {0}")]
    Transport(String),
    #[error("Stripe's answer could not be read: {0}")]
    Decode(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PaymentError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl PaymentError {
    /// In words for the customer: Stripe's message, else its code.
    pub fn reason(&self) -> String {
        match (&self.message, &self.code) {
            (Some(m), _) if !m.trim().is_empty() => m.trim().to_owned(),
            (_, Some(c)) => c.replace('_', " "),
            _ => "The card payment failed.".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    #[serde(default)]
    pub amount: i64,
    /// What was actually collected (Stripe's `amount_received`; absent in older answers).
    #[serde(default)]
    pub amount_received: Option<i64>,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Refund {
    pub id: String,
    /// Why a failed refund failed (`expired_or_canceled_card`, …).
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub charge: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct List<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    payment_intent: Option<PaymentIntent>,
}

/// The client (cheap to clone).
#[derive(Clone)]
pub struct Stripe {
    settings: StripeSettings,
    http: reqwest::Client,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripe")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Stripe {
    pub fn new(settings: StripeSettings) -> Result<Stripe, StripeError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| StripeError::Transport(e.to_string()))?;
        Ok(Stripe { settings, http })
    }

    pub fn settings(&self) -> &StripeSettings {
        &self.settings
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.api_base.trim_end_matches('/'))
    }

    async fn answer<T: for<'de> Deserialize<'de>>(
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, StripeError> {
        let resp = resp.map_err(|e| StripeError::Transport(e.to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| StripeError::Transport(e.to_string()))?;
        if !status.is_success() {
            let body: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
            return Err(StripeError::Api {
                status: status.as_u16(),
                code: body.error.code,
                message: body
                    .error
                    .message
                    .unwrap_or_else(|| format!("HTTP {}", status.as_u16())),
                payment_intent: body.error.payment_intent.map(Box::new),
            });
        }
        serde_json::from_str(&text).map_err(|e| StripeError::Decode(e.to_string()))
    }

    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<T, StripeError> {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(self.settings.secret_key.expose_secret())
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await;
        Self::answer(resp).await
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, StripeError> {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(self.settings.secret_key.expose_secret())
            .query(query)
            .send()
            .await;
        Self::answer(resp).await
    }

    /// Creates a PaymentIntent of `amount` minor units in `currency` (ISO code, any case).
    pub async fn create_payment_intent(
        &self,
        amount: i64,
        currency: &str,
        metadata: &[(&str, String)],
        idempotency_key: &str,
    ) -> Result<PaymentIntent, StripeError> {
        let mut form = vec![
            ("amount".to_owned(), amount.to_string()),
            ("currency".to_owned(), currency.to_ascii_lowercase()),
        ];
        form.extend(
            metadata
                .iter()
                .map(|(k, v)| (format!("metadata[{k}]"), v.clone())),
        );
        self.post("/v1/payment_intents", &form, idempotency_key)
            .await
    }

    pub async fn retrieve_payment_intent(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        check_id(id, "pi_")?;
        self.get(&format!("/v1/payment_intents/{id}"), &[]).await
    }

    /// Cancels a PaymentIntent that has not succeeded (Stripe refuses to cancel one that
    /// has: the error says so).
    pub async fn cancel_payment_intent(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        check_id(id, "pi_")?;
        self.post(
            &format!("/v1/payment_intents/{id}/cancel"),
            &[],
            &format!("lodge-cancel-{id}"),
        )
        .await
    }

    /// Refunds `amount` of a PaymentIntent.
    pub async fn create_refund(
        &self,
        payment_intent: &str,
        amount: i64,
        metadata: &[(&str, String)],
        idempotency_key: &str,
    ) -> Result<Refund, StripeError> {
        check_id(payment_intent, "pi_")?;
        let mut form = vec![
            ("payment_intent".to_owned(), payment_intent.to_owned()),
            ("amount".to_owned(), amount.to_string()),
        ];
        form.extend(
            metadata
                .iter()
                .map(|(k, v)| (format!("metadata[{k}]"), v.clone())),
        );
        self.post("/v1/refunds", &form, idempotency_key).await
    }

    /// The refunds of a PaymentIntent (the first 100).
    pub async fn list_refunds(&self, payment_intent: &str) -> Result<Vec<Refund>, StripeError> {
        check_id(payment_intent, "pi_")?;
        let list: List<Refund> = self
            .get(
                "/v1/refunds",
                &[("payment_intent", payment_intent), ("limit", "100")],
            )
            .await?;
        Ok(list.data)
    }
}

/// An id goes into a URL path: only Stripe's shape (`pi_` and letters, digits, `_`).
fn check_id(id: &str, prefix: &str) -> Result<(), StripeError> {
    let ok = id.starts_with(prefix)
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StripeError::Decode(format!("not a Stripe id: {id:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> StripeSettings {
        StripeSettings {
            secret_key: SecretString::from("sk_test_very_secret"),
            publishable_key: Some("pk_test_abc123".into()),
            webhook_secrets: vec![SecretString::from("whsec_very_secret")],
            api_base: DEFAULT_API_BASE.into(),
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let s = settings();
        let text = format!("{s:?} {:?}", Stripe::new(s.clone()).unwrap());
        assert!(!text.contains("very_secret"), "{text}");
        assert!(text.contains("pk_test_abc123"), "{text}");
    }

    #[test]
    fn settings_are_checked() {
        assert!(settings().problems().is_empty());
        let mut s = settings();
        s.secret_key = SecretString::from("pk_live_oops");
        s.publishable_key = Some("sk_nope_nope".into());
        s.webhook_secrets.clear();
        s.api_base = "ftp://x".into();
        let p = s.problems().join("\n");
        for word in [
            "--stripe-secret-key",
            "--stripe-publishable-key",
            "--stripe-webhook-secret",
            "--stripe-api-base",
        ] {
            assert!(p.contains(word), "{p}");
        }
    }

    #[test]
    fn a_localstripe_intent_parses() {
        // localstripe's PaymentIntent has 17 fields, none of the newer ones.
        let pi: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","object":"payment_intent","amount":500,"currency":"usd",
                "status":"requires_payment_method","client_secret":"pi_1_secret_x",
                "metadata":{"invoice_id":"7"},"last_payment_error":null,"charges":{}}"#,
        )
        .unwrap();
        assert_eq!(pi.amount, 500);
        assert_eq!(pi.metadata.get("invoice_id").map(String::as_str), Some("7"));
        assert!(check_id("pi_1", "pi_").is_ok());
        assert!(check_id("pi_1/../x", "pi_").is_err());
        assert_eq!(settings().js_url(), "https://js.stripe.com/v3/");
    }
}
