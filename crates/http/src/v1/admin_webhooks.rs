//! Staff API for outgoing webhooks: endpoints, their delivery log, redelivery.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use lodge_services::webhooks::{
    DeliveryRow, Webhook, WebhookPatch, WebhookSpec, WebhookWithSecret,
};
use lodge_services::ServiceError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::V1Path as Path;
use crate::extract::{path_id, Staff, V1Json, V1Query};
use crate::wire::ts;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
        .routes(routes!(redeliver_event))
        .routes(routes!(list_events))
}

/// A webhook endpoint (its secret is shown only when created or rotated).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpoint {
    pub id: i64,
    pub url: String,
    /// `["*"]` or the event kinds it gets.
    pub events: Vec<String>,
    pub description: String,
    /// Only this organization's events; `null`: every organization's.
    pub organization_id: Option<String>,
    pub enabled: bool,
    #[schema(format = DateTime)]
    pub created: String,
    #[schema(format = DateTime)]
    pub modified: String,
}

fn endpoint(w: Webhook) -> WebhookEndpoint {
    WebhookEndpoint {
        id: w.id,
        url: w.url,
        events: w.events,
        description: w.description,
        organization_id: w.organization_id.map(|o| o.to_string()),
        enabled: w.enabled,
        created: ts(w.created_at),
        modified: ts(w.modified_at),
    }
}

/// An endpoint with its signing secret (`whsec_…`), the one time it is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: WebhookEndpoint,
    /// Verifies the `Lodge-Signature` header; store it now, it is not shown again.
    pub secret: String,
}

fn with_secret(w: WebhookWithSecret) -> WebhookEndpointWithSecret {
    WebhookEndpointWithSecret {
        endpoint: endpoint(w.webhook),
        secret: w.secret,
    }
}

/// Every webhook endpoint.
#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<WebhookEndpoint>), (status = 400, description = "A query parameter it does not take"), (status = 401), (status = 403)))]
async fn list_webhooks(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    _: crate::extract::OnlyParams<crate::extract::NoParams>,
) -> ApiResult<Json<Vec<WebhookEndpoint>>> {
    Ok(Json(
        st.lodge
            .webhooks()
            .await?
            .into_iter()
            .map(endpoint)
            .collect(),
    ))
}

/// Registers an endpoint. The answer holds its signing secret, shown this once.
#[utoipa::path(post, path = "/v1/admin/webhooks", tag = "admin", security(("bearer" = [])),
    request_body = WebhookSpec,
    responses((status = 201, body = WebhookEndpointWithSecret), (status = 400), (status = 401), (status = 403)))]
async fn create_webhook(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Json(spec): V1Json<WebhookSpec>,
) -> ApiResult<(StatusCode, Json<WebhookEndpointWithSecret>)> {
    let w = st.lodge.create_webhook(&spec).await?;
    Ok((StatusCode::CREATED, Json(with_secret(w))))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/admin/webhooks/{webhook_id}", tag = "admin", security(("bearer" = [])),
    params(("webhook_id" = i64, Path, description = "Webhook endpoint id")),
    responses((status = 200, body = WebhookEndpoint), (status = 401), (status = 403), (status = 404)))]
async fn get_webhook(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookEndpoint>> {
    let id: i64 = path_id(&id)?;
    Ok(Json(endpoint(st.lodge.webhook(id).await?)))
}

/// Changes an endpoint: the fields sent (a new URL is checked as at registration).
#[utoipa::path(patch, path = "/v1/admin/webhooks/{webhook_id}", tag = "admin", security(("bearer" = [])),
    params(("webhook_id" = i64, Path, description = "Webhook endpoint id")),
    request_body = WebhookPatch,
    responses((status = 200, body = WebhookEndpoint), (status = 400), (status = 401), (status = 403), (status = 404)))]
async fn update_webhook(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
    V1Json(patch): V1Json<WebhookPatch>,
) -> ApiResult<Json<WebhookEndpoint>> {
    let id: i64 = path_id(&id)?;
    Ok(Json(endpoint(st.lodge.update_webhook(id, &patch).await?)))
}

/// Removes an endpoint and its delivery log.
#[utoipa::path(delete, path = "/v1/admin/webhooks/{webhook_id}", tag = "admin", security(("bearer" = [])),
    params(("webhook_id" = i64, Path, description = "Webhook endpoint id")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn delete_webhook(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: i64 = path_id(&id)?;
    st.lodge.delete_webhook(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RotateQuery {
    /// How long the old secret keeps signing beside the new one, in hours (0 to 72,
    /// default 24; 0 when it leaked): `Lodge-Signature` then carries two `v1` values.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 72)]
    pub keep_previous_hours: Option<String>,
}

/// A new signing secret, shown this once. The old one keeps signing beside it for
/// `keep_previous_hours` (default 24), so receivers can switch without refusing deliveries.
#[utoipa::path(post, path = "/v1/admin/webhooks/{webhook_id}/rotate-secret", tag = "admin", security(("bearer" = [])),
    params(("webhook_id" = i64, Path, description = "Webhook endpoint id"), RotateQuery),
    responses((status = 200, body = WebhookEndpointWithSecret), (status = 400), (status = 401), (status = 403), (status = 404)))]
async fn rotate_secret(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
    V1Query(q): V1Query<RotateQuery>,
) -> ApiResult<Json<WebhookEndpointWithSecret>> {
    let id: i64 = path_id(&id)?;
    let hours = match q.keep_previous_hours.as_deref() {
        None => 24,
        Some(h) => h.trim().parse::<i64>().map_err(|_| {
            ServiceError::field("keep_previous_hours", "A whole number of hours, 0 to 72.")
        })?,
    };
    Ok(Json(with_secret(
        st.lodge.rotate_webhook_secret(id, hours).await?,
    )))
}

/// One attempt to deliver an event.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDelivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event_id: String,
    /// The job that made the attempt.
    pub job_id: Option<i64>,
    /// The job's attempt number (from 1).
    pub attempt: i64,
    /// Asked by staff.
    pub redelivery: bool,
    /// The receiver's HTTP status (`null`: no answer).
    pub status_code: Option<i64>,
    /// What went wrong (`null` when delivered).
    pub error: Option<String>,
    /// A 2xx answer.
    pub delivered: bool,
    pub duration_ms: i64,
    #[schema(format = DateTime)]
    pub created: String,
}

fn delivery(d: DeliveryRow) -> WebhookDelivery {
    WebhookDelivery {
        id: d.id,
        webhook_id: d.endpoint_id,
        event_id: d.event_id,
        job_id: d.job_id,
        attempt: d.attempt,
        redelivery: d.redelivery,
        status_code: d.status_code,
        error: d.error,
        delivered: d.delivered,
        duration_ms: d.duration_ms,
        created: ts(d.created_at),
    }
}

/// A query parameter that must be a positive whole number, when given (`before`, `limit`).
pub(super) fn positive(field: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    v.map(|s| {
        s.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ServiceError::field(field, "A positive whole number.").into())
    })
    .transpose()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Only attempts older than this delivery id (the next page).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub before: Option<String>,
    /// At most this many (default 100; a larger number is taken as 500).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub limit: Option<String>,
}

/// An endpoint's delivery attempts, newest first.
#[utoipa::path(get, path = "/v1/admin/webhooks/{webhook_id}/deliveries", tag = "admin", security(("bearer" = [])),
    params(("webhook_id" = i64, Path, description = "Webhook endpoint id"), DeliveryQuery),
    responses((status = 200, body = Vec<WebhookDelivery>), (status = 400), (status = 401), (status = 403), (status = 404)))]
async fn list_deliveries(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
    V1Query(q): V1Query<DeliveryQuery>,
) -> ApiResult<Json<Vec<WebhookDelivery>>> {
    let id: i64 = path_id(&id)?;
    let before = positive("before", q.before.as_deref())?;
    let limit = positive("limit", q.limit.as_deref())?
        .unwrap_or(100)
        .min(500);
    Ok(Json(
        st.lodge
            .webhook_deliveries(id, before, limit)
            .await?
            .into_iter()
            .map(delivery)
            .collect(),
    ))
}

/// An event Lodge raised (what webhooks carry).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventEntry {
    /// Its place in the log (`before` pages on).
    pub seq: i64,
    /// The event id (`Lodge-Event-Id`; redeliver by it).
    pub id: String,
    pub kind: String,
    pub organization_id: String,
    pub subject: String,
    /// The event's data, as webhooks carry it.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    #[schema(format = DateTime)]
    pub created: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only this organization's events.
    #[param(value_type = Option<String>, format = Uuid)]
    pub organization_id: Option<String>,
    /// Only events of this kind (e.g. `invoice.paid`).
    pub kind: Option<String>,
    /// Only events older than this `seq` (the next page).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub before: Option<String>,
    /// At most this many (default 100; a larger number is taken as 500).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub limit: Option<String>,
}

/// The events Lodge raised, newest first: what an endpoint may have missed (events raised
/// while it was disabled are not queued for it), to send again with
/// `POST /v1/admin/webhooks/{id}/redeliver` and the event's id.
#[utoipa::path(get, path = "/v1/admin/events", tag = "admin", security(("bearer" = [])),
    params(EventQuery),
    responses((status = 200, body = Vec<EventEntry>), (status = 400), (status = 401), (status = 403)))]
async fn list_events(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Query(q): V1Query<EventQuery>,
) -> ApiResult<Json<Vec<EventEntry>>> {
    let before = positive("before", q.before.as_deref())?;
    let limit = positive("limit", q.limit.as_deref())?
        .unwrap_or(100)
        .min(500);
    let org = q
        .organization_id
        .as_deref()
        .map(|o| {
            o.trim()
                .parse()
                .map_err(|_| ServiceError::field("organization_id", "Not a valid UUID."))
        })
        .transpose()?;
    let kind = q.kind.as_deref().map(str::trim).filter(|k| !k.is_empty());
    if kind.is_some_and(|k| k.len() > 100) {
        return Err(ServiceError::field("kind", "At most 100 characters.").into());
    }
    Ok(Json(
        st.lodge
            .events_page(org, kind, before, limit)
            .await?
            .into_iter()
            .map(|(seq, e, data)| EventEntry {
                seq,
                id: e.id,
                kind: e.kind,
                organization_id: e.organization_id.to_string(),
                subject: e.subject,
                data,
                created: ts(e.created_at),
            })
            .collect(),
    ))
}

/// A redelivery queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redelivery {
    pub webhook_id: i64,
    pub event_id: String,
    /// The job that sends it (see `/v1/admin/webhooks/{id}/deliveries`).
    pub job_id: i64,
}

/// Sends a logged delivery's event to the endpoint again, even if it was delivered.
#[utoipa::path(post, path = "/v1/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", tag = "admin", security(("bearer" = [])),
    params(("webhook_id" = i64, Path, description = "Webhook endpoint id"),
           ("delivery_id" = i64, Path, description = "Delivery id")),
    responses((status = 202, body = Redelivery),
              (status = 400, description = "The endpoint no longer gets this event (another organization's, or a kind it does not subscribe to)"),
              (status = 401), (status = 403), (status = 404)))]
async fn redeliver(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Redelivery>)> {
    let id: i64 = path_id(&id)?;
    let delivery_id: i64 = path_id(&delivery_id)?;
    let r = st.lodge.redeliver(id, delivery_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Redelivery {
            webhook_id: id,
            event_id: r.event_id,
            job_id: r.job_id,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverEvent {
    /// The event's id (`evt_…`).
    pub event_id: String,
}

/// Sends an event (by its id) to the endpoint, even if it was delivered.
#[utoipa::path(post, path = "/v1/admin/webhooks/{webhook_id}/redeliver", tag = "admin", security(("bearer" = [])),
    params(("webhook_id" = i64, Path, description = "Webhook endpoint id")),
    request_body = RedeliverEvent,
    responses((status = 202, body = Redelivery), (status = 400), (status = 401), (status = 403), (status = 404)))]
async fn redeliver_event(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
    V1Json(body): V1Json<RedeliverEvent>,
) -> ApiResult<(StatusCode, Json<Redelivery>)> {
    let id: i64 = path_id(&id)?;
    let r = st.lodge.redeliver_event(id, &body.event_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Redelivery {
            webhook_id: id,
            event_id: r.event_id,
            job_id: r.job_id,
        }),
    ))
}
