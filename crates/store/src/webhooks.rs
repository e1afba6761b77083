//! Outgoing webhooks (migration 0015): the endpoints staff register, the jobs that deliver
//! events to them, and the log of every attempt. See `lodge_services::webhooks`.

use lodge_core::OrganizationId;

use crate::{vals, Cols, Result, SqlConn};

/// The job kind that delivers one event to one endpoint.
pub const JOB_WEBHOOK: &str = "webhook";

/// A registered endpoint (its secret sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRow {
    pub id: i64,
    pub url: String,
    /// `*`, or the kinds between commas (`,invoice.paid,order.created,`).
    pub events: String,
    pub description: String,
    /// Only this organization's events (`None`: every organization's).
    pub organization_id: Option<OrganizationId>,
    pub enabled: bool,
    /// Sealed (`crypto::Sealer`).
    pub secret: String,
    pub created_at: i64,
    pub modified_at: i64,
    /// The secret before the last rotation (sealed), signing beside the new one until
    /// `previous_until`.
    pub previous_secret: Option<String>,
    pub previous_until: Option<i64>,
}

const ENDPOINT_COLUMNS: &str = "id, url, events, description, organization_id, enabled, secret, \
     created_at, modified_at, previous_secret, previous_until";

fn endpoint(row: Vec<crate::Val>) -> Result<EndpointRow> {
    let mut c = Cols::new(row);
    Ok(EndpointRow {
        id: c.int()?,
        url: c.text()?,
        events: c.text()?,
        description: c.text()?,
        organization_id: c.opt_text()?.map(|o| crate::parse(&o)).transpose()?,
        enabled: c.int()? != 0,
        secret: c.text()?,
        created_at: c.int()?,
        modified_at: c.int()?,
        previous_secret: c.opt_text()?,
        previous_until: c.opt_int()?,
    })
}

/// What an endpoint is made of (and replaced with by an update).
#[derive(Debug, Clone)]
pub struct EndpointInput<'a> {
    pub url: &'a str,
    pub events: &'a str,
    pub description: &'a str,
    pub organization_id: Option<OrganizationId>,
    pub enabled: bool,
}

/// Registers an endpoint; its id.
pub async fn insert<C: SqlConn>(
    conn: &mut C,
    e: &EndpointInput<'_>,
    sealed_secret: &str,
    now: i64,
) -> Result<i64> {
    conn.insert_key(
        "INSERT INTO webhook_endpoints (url, events, description, organization_id, enabled, secret, created_at, modified_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        "id",
        vals![
            e.url,
            e.events,
            e.description,
            e.organization_id.map(|o| o.to_string()),
            i64::from(e.enabled),
            sealed_secret,
            now
        ],
    )
    .await
}

/// Replaces an endpoint's settings (not its secret), only while the endpoint is still as
/// `old` was read (its URL's stored form, events, description, organization and whether it
/// is enabled): `false` when it changed meanwhile, or is gone.
pub async fn update_unchanged<C: SqlConn>(
    conn: &mut C,
    old: &EndpointRow,
    e: &EndpointInput<'_>,
    now: i64,
) -> Result<bool> {
    Ok(conn
        .exec(
            "UPDATE webhook_endpoints SET url = $2, events = $3, description = $4, \
             organization_id = $5, enabled = $6, modified_at = $7 \
             WHERE id = $1 AND url = $8 AND events = $9 AND description = $10 \
             AND COALESCE(organization_id, '') = $11 AND enabled = $12",
            vals![
                old.id,
                e.url,
                e.events,
                e.description,
                e.organization_id.map(|o| o.to_string()),
                i64::from(e.enabled),
                now,
                old.url.as_str(),
                old.events.as_str(),
                old.description.as_str(),
                old.organization_id
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
                i64::from(old.enabled)
            ],
        )
        .await?
        == 1)
}

/// Replaces an endpoint's (sealed) secret, the one it replaces signing beside it until
/// `previous_until` (`now`: not at all); `false` when there is no such endpoint.
pub async fn set_secret<C: SqlConn>(
    conn: &mut C,
    id: i64,
    sealed: &str,
    previous_until: i64,
    now: i64,
) -> Result<bool> {
    Ok(conn
        .exec(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $4, \
             secret = $2, modified_at = $3 WHERE id = $1",
            vals![id, sealed, now, previous_until],
        )
        .await?
        == 1)
}

/// Replaces an endpoint's stored URL by another form of it (sealed) while it is still
/// `was`; `false` otherwise.
pub async fn replace_url<C: SqlConn>(conn: &mut C, id: i64, was: &str, now: &str) -> Result<bool> {
    let r = conn
        .exec(
            "UPDATE webhook_endpoints SET url = $3 WHERE id = $1 AND url = $2",
            vec![id.into(), was.into(), now.into()],
        )
        .await?;
    Ok(r == 1)
}

/// Removes an endpoint and its delivery log; `false` when there was none. Its jobs still
/// queued find no endpoint and do nothing.
pub async fn delete<C: SqlConn>(conn: &mut C, id: i64) -> Result<bool> {
    conn.exec(
        "DELETE FROM webhook_deliveries WHERE endpoint_id = $1",
        vals![id],
    )
    .await?;
    Ok(conn
        .exec("DELETE FROM webhook_endpoints WHERE id = $1", vals![id])
        .await?
        == 1)
}

pub async fn by_id<C: SqlConn>(conn: &mut C, id: i64) -> Result<Option<EndpointRow>> {
    conn.fetch_row(
        &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"),
        vals![id],
    )
    .await?
    .map(endpoint)
    .transpose()
}

/// Every endpoint, oldest first.
pub async fn all<C: SqlConn>(conn: &mut C) -> Result<Vec<EndpointRow>> {
    conn.fetch_rows(
        &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id"),
        vals![],
    )
    .await?
    .into_iter()
    .map(endpoint)
    .collect()
}

/// A [`JOB_WEBHOOK`] job for each enabled endpoint subscribed to the event's kind (and to
/// its organization, when it names one), for the event `event_id` recorded in this
/// transaction, each with its dedupe key (`webhook:<endpoint id>:<the event's dedupe key or
/// id>`), so an event noticed twice makes no second job; nothing when no endpoint is
/// subscribed. Through [`SqlConn::exec_for_ids_later`]: in a group commit on PostgreSQL the
/// events of all its orders are fanned out in one statement after they are written (an
/// order has two or three events; a statement each was as many round trips), jobs in the
/// events' order.
pub async fn enqueue_for_event<C: SqlConn>(
    conn: &mut C,
    event_id: &str,
    max_attempts: i64,
) -> Result<()> {
    conn.exec_for_ids_later(
        ENQUEUE_FOR_EVENTS,
        vals![JOB_WEBHOOK, max_attempts],
        event_id.into(),
    )
    .await
}

// `WHERE` before `ON CONFLICT` also keeps SQLite's parser from reading the conflict clause
// as a join's (https://sqlite.org/lang_upsert.html, "parsing ambiguity").
const ENQUEUE_FOR_EVENTS: &str =
    "INSERT INTO jobs (kind, payload, status, max_attempts, run_at, dedupe_key, created_at, modified_at) \
     SELECT $1, '{\"endpoint_id\":' || CAST(w.id AS TEXT) || ',\"event_id\":\"' || e.id || '\"}', \
            'queued', $2, e.created_at, \
            'webhook:' || CAST(w.id AS TEXT) || ':' || COALESCE(e.dedupe_key, e.id), \
            e.created_at, e.created_at \
     FROM events e JOIN webhook_endpoints w \
       ON w.enabled = 1 AND (w.events = '*' OR w.events LIKE '%,' || e.kind || ',%') \
      AND (w.organization_id IS NULL OR w.organization_id = e.organization_id) \
     WHERE e.id IN ($IDS) \
     ORDER BY e.seq, w.id \
     ON CONFLICT (dedupe_key) DO NOTHING";

/// A staff redelivery: a [`JOB_WEBHOOK`] job of its own (no dedupe key), due now; its id.
pub async fn enqueue_redelivery<C: SqlConn>(
    conn: &mut C,
    payload: &str,
    max_attempts: i64,
    now: i64,
) -> Result<i64> {
    conn.insert_key(
        "INSERT INTO jobs (kind, payload, status, max_attempts, run_at, created_at, modified_at) \
         VALUES ($1, $2, 'queued', $3, $4, $4, $4)",
        "id",
        vals![JOB_WEBHOOK, payload, max_attempts, now],
    )
    .await
}

/// An attempt to record.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub endpoint_id: i64,
    pub event_id: &'a str,
    pub job_id: Option<i64>,
    pub attempt: i64,
    pub redelivery: bool,
    pub status_code: Option<i64>,
    pub error: Option<&'a str>,
    pub delivered: bool,
    pub duration_ms: i64,
    pub now: i64,
}

/// Records an attempt; its id.
pub async fn record<C: SqlConn>(conn: &mut C, d: &NewDelivery<'_>) -> Result<i64> {
    conn.insert_key(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, job_id, attempt, redelivery, \
         status_code, error, delivered, duration_ms, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        "id",
        vals![
            d.endpoint_id,
            d.event_id,
            d.job_id,
            d.attempt,
            i64::from(d.redelivery),
            d.status_code,
            d.error,
            i64::from(d.delivered),
            d.duration_ms,
            d.now
        ],
    )
    .await
}

/// Whether a job already delivered its event (a 2xx recorded for it).
pub async fn delivered_by_job<C: SqlConn>(conn: &mut C, job_id: i64) -> Result<bool> {
    Ok(conn
        .fetch_int(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE job_id = $1 AND delivered = 1",
            vals![job_id],
        )
        .await?
        .unwrap_or(0)
        > 0)
}

/// A recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: i64,
    pub endpoint_id: i64,
    pub event_id: String,
    pub job_id: Option<i64>,
    pub attempt: i64,
    pub redelivery: bool,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub delivered: bool,
    pub duration_ms: i64,
    pub created_at: i64,
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, event_id, job_id, attempt, redelivery, \
    status_code, error, delivered, duration_ms, created_at";

fn delivery(row: Vec<crate::Val>) -> Result<DeliveryRow> {
    let mut c = Cols::new(row);
    Ok(DeliveryRow {
        id: c.int()?,
        endpoint_id: c.int()?,
        event_id: c.text()?,
        job_id: c.opt_int()?,
        attempt: c.int()?,
        redelivery: c.int()? != 0,
        status_code: c.opt_int()?,
        error: c.opt_text()?,
        delivered: c.int()? != 0,
        duration_ms: c.int()?,
        created_at: c.int()?,
    })
}

/// An endpoint's attempts, newest first (`before`: only those with a smaller id).
pub async fn deliveries<C: SqlConn>(
    conn: &mut C,
    endpoint_id: i64,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>> {
    conn.fetch_rows(
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE endpoint_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        ),
        vals![endpoint_id, before.unwrap_or(i64::MAX), limit],
    )
    .await?
    .into_iter()
    .map(delivery)
    .collect()
}

pub async fn delivery_by_id<C: SqlConn>(conn: &mut C, id: i64) -> Result<Option<DeliveryRow>> {
    conn.fetch_row(
        &format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"),
        vals![id],
    )
    .await?
    .map(delivery)
    .transpose()
}
