//! Webhooks Lodge receives from its payment gateway: `POST /webhooks/stripe`. The raw body
//! is verified against the `Stripe-Signature` header before anything is read from it; a
//! forged, stale or missing signature is `400` and changes nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lodge_services::ServiceError;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::internal;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stripe_webhook))
}

/// The answer to a webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceived {
    pub received: bool,
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Whether Lodge acted on it (`false`: an event it ignores, or about an intent it did
    /// not create).
    pub handled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookRefused {
    pub detail: String,
}

/// Stripe's events (`payment_intent.succeeded`, `payment_intent.payment_failed`,
/// `charge.refunded`, `charge.refund.updated`; others are accepted and ignored), signed
/// with the endpoint's secret.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "gateways",
    request_body(content = String, description = "A Stripe event (JSON), verified byte for byte", content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">")),
    responses((status = 200, body = WebhookReceived),
              (status = 400, body = WebhookRefused, description = "Forged, stale or missing signature; or not an event"),
              (status = 404, description = "Card payments are not configured")))]
async fn stripe_webhook(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    if signature.is_none() {
        // Not from Stripe, configured or not.
        let detail = "The Stripe-Signature header is missing.".to_owned();
        return (StatusCode::BAD_REQUEST, Json(WebhookRefused { detail })).into_response();
    }
    if st.lodge.stripe.is_none() {
        return crate::ops::not_found().await.into_response();
    }
    match st.lodge.stripe_webhook(signature, &body).await {
        Ok(out) => Json(WebhookReceived {
            received: true,
            event_type: out.event_type,
            handled: out.handled,
        })
        .into_response(),
        Err(ServiceError::Invalid(fields)) => {
            let detail = fields
                .values()
                .flatten()
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(detail, "a Stripe webhook was refused");
            (StatusCode::BAD_REQUEST, Json(WebhookRefused { detail })).into_response()
        }
        // Stripe retries a failed delivery (503 while the database is unreachable).
        Err(e) if e.is_unavailable() => crate::error::unavailable(&e),
        Err(e) => internal(&e),
    }
}
