//! The events outbox (migration 0013): what happened, written in the transaction that made
//! it happen. See `lodge_services::events`.

use lodge_core::OrganizationId;

use crate::{vals, Cols, Result, SqlConn};

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub organization_id: OrganizationId,
    pub subject: &'a str,
    /// JSON.
    pub data: &'a str,
    pub dedupe_key: Option<&'a str>,
    pub now: i64,
}

pub(crate) const INSERT_EVENT: &str =
    "INSERT INTO events (id, kind, organization_id, subject, data, dedupe_key, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedupe_key) DO NOTHING";

/// Records an event (with the transaction's other deferred rows: nothing reads it back in
/// the same transaction). An event whose `dedupe_key` was recorded before is dropped.
pub async fn insert<C: SqlConn>(conn: &mut C, e: &NewEvent<'_>) -> Result<()> {
    conn.insert_later(
        INSERT_EVENT,
        vals![
            e.id,
            e.kind,
            e.organization_id.to_string(),
            e.subject,
            e.data,
            e.dedupe_key.map(str::to_owned),
            e.now
        ],
    )
    .await
}

/// Whether an event with this `dedupe_key` was recorded.
pub async fn seen<C: SqlConn>(conn: &mut C, dedupe_key: &str) -> Result<bool> {
    Ok(conn
        .fetch_int(
            "SELECT COUNT(*) FROM events WHERE dedupe_key = $1",
            vals![dedupe_key],
        )
        .await?
        .unwrap_or(0)
        > 0)
}

/// When the event told once under `dedupe_key` was recorded (unix microseconds), if it was.
pub async fn recorded_at<C: SqlConn>(conn: &mut C, dedupe_key: &str) -> Result<Option<i64>> {
    conn.fetch_int(
        "SELECT created_at FROM events WHERE dedupe_key = $1",
        vals![dedupe_key],
    )
    .await
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: String,
    pub kind: String,
    pub organization_id: OrganizationId,
    pub subject: String,
    pub data: String,
    pub created_at: i64,
}

/// One event by id.
pub async fn event<C: SqlConn>(conn: &mut C, id: &str) -> Result<Option<EventRow>> {
    conn.fetch_row(
        "SELECT id, kind, organization_id, subject, data, created_at FROM events WHERE id = $1",
        vals![id],
    )
    .await?
    .map(EventRow::from_row)
    .transpose()
}

impl EventRow {
    /// From `id, kind, organization_id, subject, data, created_at`.
    fn from_row(row: Vec<crate::Val>) -> Result<EventRow> {
        let mut c = Cols::new(row);
        Ok(EventRow {
            id: c.text()?,
            kind: c.text()?,
            organization_id: c.parse()?,
            subject: c.text()?,
            data: c.text()?,
            created_at: c.int()?,
        })
    }
}

/// An organization's events (all organizations' with `None`), newest first.
pub async fn recent<C: SqlConn>(
    conn: &mut C,
    org: Option<OrganizationId>,
    limit: i64,
) -> Result<Vec<EventRow>> {
    let (sql, args) = match org {
        Some(o) => (
            "SELECT id, kind, organization_id, subject, data, created_at FROM events \
             WHERE organization_id = $1 ORDER BY seq DESC LIMIT $2",
            vals![o.to_string(), limit],
        ),
        None => (
            "SELECT id, kind, organization_id, subject, data, created_at FROM events \
             ORDER BY seq DESC LIMIT $1",
            vals![limit],
        ),
    };
    conn.fetch_rows(sql, args)
        .await?
        .into_iter()
        .map(EventRow::from_row)
        .collect()
}

/// A page of events for staff, newest first: of one organization and one kind when given,
/// older than sequence number `before` when given; each with its sequence number.
pub async fn page<C: SqlConn>(
    conn: &mut C,
    org: Option<OrganizationId>,
    kind: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, EventRow)>> {
    // Only the filters given, so each query can use `events_org` (organization, seq) or
    // the table's key.
    let mut clauses = Vec::new();
    let mut args: Vec<crate::Val> = Vec::new();
    if let Some(o) = org {
        args.push(crate::Val::from(o.to_string()));
        clauses.push(format!("organization_id = ${}", args.len()));
    }
    if let Some(k) = kind {
        args.push(crate::Val::from(k.to_owned()));
        clauses.push(format!("kind = ${}", args.len()));
    }
    if let Some(b) = before {
        args.push(crate::Val::from(b));
        clauses.push(format!("seq < ${}", args.len()));
    }
    args.push(crate::Val::from(limit));
    let sql = format!(
        "SELECT seq, id, kind, organization_id, subject, data, created_at FROM events{} \
         ORDER BY seq DESC LIMIT ${}",
        if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        },
        args.len()
    );
    let rows = conn.fetch_rows(&sql, args).await?;
    rows.into_iter()
        .map(|mut row| {
            if row.is_empty() {
                return Err(crate::StoreError::Corrupt(
                    "an event row without columns".into(),
                ));
            }
            let seq = row.remove(0);
            let seq = Cols::new(vec![seq]).int()?;
            Ok((seq, EventRow::from_row(row)?))
        })
        .collect()
}
