//! Mail notices (migration 0014): whether the installation sends mail, who an
//! organization's mail goes to, and the log of every message sent. See
//! `lodge_services::mail`.

use lodge_core::OrganizationId;

use crate::{vals, Cols, Result, SqlConn};

/// Whether mail is on (`mail_state`; off when the row is missing).
pub async fn enabled<C: SqlConn>(conn: &mut C) -> Result<bool> {
    Ok(conn
        .fetch_int("SELECT enabled FROM mail_state WHERE id = 1", vals![])
        .await?
        .unwrap_or(0)
        == 1)
}

/// A job of `kind` for the event `event_id` recorded in this transaction, if mail is on:
/// its payload `{"event_id": …}`, its dedupe key `<kind>:<the event's dedupe key or id>`
/// (an event noticed twice makes no second job). Through
/// [`SqlConn::exec_for_ids_later`], so a group commit writes its events' jobs in one
/// statement, with one read of `mail_state`.
pub async fn enqueue_for_event<C: SqlConn>(
    conn: &mut C,
    kind: &str,
    event_id: &str,
    max_attempts: i64,
) -> Result<()> {
    conn.exec_for_ids_later(
        ENQUEUE_FOR_EVENTS,
        vals![kind, max_attempts],
        event_id.into(),
    )
    .await
}

const ENQUEUE_FOR_EVENTS: &str =
    "INSERT INTO jobs (kind, payload, status, max_attempts, run_at, dedupe_key, created_at, modified_at) \
     SELECT $1, '{\"event_id\":\"' || e.id || '\"}', 'queued', $2, e.created_at, \
            $1 || ':' || COALESCE(e.dedupe_key, e.id), e.created_at, e.created_at \
     FROM events e \
     WHERE e.id IN ($IDS) AND EXISTS (SELECT 1 FROM mail_state m WHERE m.id = 1 AND m.enabled = 1) \
     ORDER BY e.seq \
     ON CONFLICT (dedupe_key) DO NOTHING";

/// Turns mail on or off for the installation.
pub async fn set_enabled<C: SqlConn>(conn: &mut C, on: bool, now: i64) -> Result<()> {
    conn.exec(
        "INSERT INTO mail_state (id, enabled, modified_at) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET enabled = excluded.enabled, modified_at = excluded.modified_at",
        vals![i64::from(on), now],
    )
    .await?;
    Ok(())
}

/// Where an organization's mail goes: its first owner's address and name (the user who
/// became an owner earliest, among active users), if it has one.
pub async fn owner_address<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
) -> Result<Option<(String, String)>> {
    let Some(row) = conn
        .fetch_row(
            "SELECT u.email, u.name FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.organization_id = $1 AND m.role = 'owner' AND u.is_active = 1 \
             ORDER BY m.created_at, u.legacy_id LIMIT 1",
            vals![org.to_string()],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut c = Cols::new(row);
    Ok(Some((c.text()?, c.text()?)))
}

/// An organization's name.
pub async fn organization_name<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
) -> Result<Option<String>> {
    conn.fetch_text(
        "SELECT name FROM organizations WHERE id = $1",
        vals![org.to_string()],
    )
    .await
}

/// One message of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLogRow {
    pub id: i64,
    pub message_id: String,
    pub event_id: Option<String>,
    pub job_id: Option<i64>,
    pub notice: String,
    pub to_address: String,
    pub subject: String,
    pub status: String,
    pub attempts: i64,
    pub possible_duplicate: bool,
    pub last_error: Option<String>,
    pub smtp_response: Option<String>,
    pub sent_at: Option<i64>,
    pub created_at: i64,
    pub modified_at: i64,
}

const COLUMNS: &str = "id, message_id, event_id, job_id, notice, to_address, subject, status, \
    attempts, possible_duplicate, last_error, smtp_response, sent_at, created_at, modified_at";

fn from_vals(row: Vec<crate::Val>) -> Result<MailLogRow> {
    let mut c = Cols::new(row);
    Ok(MailLogRow {
        id: c.int()?,
        message_id: c.text()?,
        event_id: c.opt_text()?,
        job_id: c.opt_int()?,
        notice: c.text()?,
        to_address: c.text()?,
        subject: c.text()?,
        status: c.text()?,
        attempts: c.int()?,
        possible_duplicate: c.int()? == 1,
        last_error: c.opt_text()?,
        smtp_response: c.opt_text()?,
        sent_at: c.opt_int()?,
        created_at: c.int()?,
        modified_at: c.int()?,
    })
}

/// A message by its id in the log.
pub async fn by_id<C: SqlConn>(conn: &mut C, id: i64) -> Result<Option<MailLogRow>> {
    conn.fetch_row(
        &format!("SELECT {COLUMNS} FROM mail_log WHERE id = $1"),
        vals![id],
    )
    .await?
    .map(from_vals)
    .transpose()
}

/// A message by its Message-ID.
pub async fn by_message_id<C: SqlConn>(
    conn: &mut C,
    message_id: &str,
) -> Result<Option<MailLogRow>> {
    conn.fetch_row(
        &format!("SELECT {COLUMNS} FROM mail_log WHERE message_id = $1"),
        vals![message_id],
    )
    .await?
    .map(from_vals)
    .transpose()
}

/// The newest messages first.
pub async fn recent<C: SqlConn>(conn: &mut C, limit: i64) -> Result<Vec<MailLogRow>> {
    conn.fetch_rows(
        &format!("SELECT {COLUMNS} FROM mail_log ORDER BY id DESC LIMIT $1"),
        vals![limit],
    )
    .await?
    .into_iter()
    .map(from_vals)
    .collect()
}

/// A page of the log, newest first, optionally of one status, with the total.
pub async fn page<C: SqlConn>(
    conn: &mut C,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<MailLogRow>, i64)> {
    let status = status.unwrap_or_default();
    let rows = conn
        .fetch_rows(
            &format!(
                "SELECT {COLUMNS} FROM mail_log WHERE ($1 = '' OR status = $1) \
                 ORDER BY id DESC LIMIT $2 OFFSET $3"
            ),
            vals![status, limit, offset],
        )
        .await?
        .into_iter()
        .map(from_vals)
        .collect::<Result<Vec<_>>>()?;
    let count = conn
        .fetch_int(
            "SELECT COUNT(*) FROM mail_log WHERE ($1 = '' OR status = $1)",
            vals![status],
        )
        .await?
        .unwrap_or(0);
    Ok((rows, count))
}

/// A send about to start.
#[derive(Debug, Clone)]
pub struct Sending<'a> {
    pub message_id: &'a str,
    pub event_id: Option<&'a str>,
    pub job_id: Option<i64>,
    pub notice: &'a str,
    pub to_address: &'a str,
    pub subject: &'a str,
    pub now: i64,
}

/// Records that a send starts: a new row, or the row of an earlier attempt with one more
/// attempt. When that earlier attempt ended `sending` (never completed) or `unknown` (its
/// answer was lost), the message may already have been delivered: `possible_duplicate`.
/// `false` (nothing written) while an earlier attempt is `sending` and started after
/// `in_flight_after`: another worker may be sending it right now, and is left to finish.
pub async fn start_sending<C: SqlConn>(
    conn: &mut C,
    s: &Sending<'_>,
    in_flight_after: i64,
) -> Result<bool> {
    let n = conn.exec(
        "INSERT INTO mail_log (message_id, event_id, job_id, notice, to_address, subject, status, \
             attempts, possible_duplicate, created_at, modified_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'sending', 1, 0, $7, $7) \
         ON CONFLICT (message_id) DO UPDATE SET \
             possible_duplicate = CASE WHEN mail_log.status IN ('sending', 'unknown') THEN 1 \
                 ELSE mail_log.possible_duplicate END, \
             status = 'sending', attempts = mail_log.attempts + 1, \
             to_address = excluded.to_address, subject = excluded.subject, \
             job_id = excluded.job_id, modified_at = excluded.modified_at \
         WHERE NOT (mail_log.status = 'sending' AND mail_log.modified_at > $8)",
        vals![
            s.message_id,
            s.event_id,
            s.job_id,
            s.notice,
            s.to_address,
            s.subject,
            s.now,
            in_flight_after
        ],
    )
    .await?;
    Ok(n == 1)
}

/// Records what came of a send: `sent` (with the server's answer), `failed`, `unknown` or
/// `skipped` (with why).
pub async fn finish_sending<C: SqlConn>(
    conn: &mut C,
    message_id: &str,
    status: &str,
    smtp_response: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    conn.exec(
        "UPDATE mail_log SET status = $2, smtp_response = COALESCE($3, smtp_response), \
             last_error = $4, sent_at = CASE WHEN $2 = 'sent' THEN $5 ELSE sent_at END, \
             modified_at = $5 \
         WHERE message_id = $1",
        vals![message_id, status, smtp_response, error, now],
    )
    .await?;
    Ok(())
}

/// Records a message that is not sent (no one to send it to, or no longer wanted): `skipped`,
/// with why; a row an attempt that failed left is marked so too, not left `failed` (found by
/// the mail audit: staff saw it among the mail still being retried). A row an attempt left
/// `sending` (its node stopped mid-send: the server may have taken the message) becomes
/// `unknown`, saying so, rather than `sending` for ever (found by the crash audit).
pub async fn skip<C: SqlConn>(conn: &mut C, s: &Sending<'_>, why: &str) -> Result<()> {
    conn.exec(
        "INSERT INTO mail_log (message_id, event_id, job_id, notice, to_address, subject, status, \
             attempts, possible_duplicate, last_error, created_at, modified_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'skipped', 0, 0, $7, $8, $8) \
         ON CONFLICT (message_id) DO UPDATE SET \
             status = CASE WHEN mail_log.status = 'failed' THEN 'skipped' ELSE 'unknown' END, \
             last_error = CASE WHEN mail_log.status = 'failed' THEN excluded.last_error \
                 ELSE 'An attempt was cut off (its node stopped) and may have delivered it; \
                       not tried again: ' || excluded.last_error END, \
             modified_at = excluded.modified_at \
         WHERE mail_log.status IN ('failed', 'sending')",
        vals![
            s.message_id,
            s.event_id,
            s.job_id,
            s.notice,
            s.to_address,
            s.subject,
            why,
            s.now
        ],
    )
    .await?;
    Ok(())
}
