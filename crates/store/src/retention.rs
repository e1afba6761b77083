//! Retention: the operational records that grow with every order and are only looked back
//! on for a while (finished jobs, webhook delivery attempts, the mail log) are forgotten
//! once older than the operator's retention window, a thousand rows a statement.
//!
//! Events (the audit record and the source of webhooks), dead jobs (staff retry them; dead
//! webhook deliveries and mails aside) and everything with money in it are kept.

use sqlx::{Any, Executor};

use crate::Result;

/// Rows one statement forgets at most. Written into the statements, not bound: PostgreSQL's
/// generic plan estimates a bound `LIMIT` at a tenth of its input (see
/// [`crate::idempotency::FORGET_BEFORE`]).
pub const FORGET_AT_ONCE: u64 = 1000;

/// Finished jobs due and finished before `$1`, oldest first, through `jobs_due`
/// `(status, run_at)` (a job finishes after it is due; one put back with an old due time
/// and finished lately is kept by its `modified_at`). The newest job is never forgotten: on
/// SQLite, `jobs` has no `AUTOINCREMENT` (`sqlite::rebuild`), and a new row takes the
/// largest id plus one, which must never be an id given before (mail and webhook
/// deliveries name their job).
static DONE_JOBS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "DELETE FROM jobs WHERE id IN
         (SELECT id FROM jobs WHERE status = 'done' AND run_at < $1 AND modified_at < $1
            AND id < (SELECT MAX(id) FROM jobs)
          ORDER BY run_at LIMIT {FORGET_AT_ONCE})"
    )
});

/// Among the oldest [`FORGET_AT_ONCE`] rows of `table` (by its growing `id`), those created
/// before `$1`. Reading the oldest rows by primary key and judging their age after keeps
/// each statement to one index range however large the table, without an index on
/// `created_at`; ids and `created_at` grow together. The newest row is kept, so that an id
/// is never given twice whatever the table's definition.
fn oldest(table: &str) -> String {
    format!(
        "DELETE FROM {table} WHERE id IN
         (SELECT id FROM (SELECT id, created_at FROM {table} ORDER BY id LIMIT {FORGET_AT_ONCE}) o
          WHERE o.created_at < $1 AND o.id < (SELECT MAX(id) FROM {table}))"
    )
}

/// Dead webhook deliveries and mails (kinds `$2`, `$3`) last tried before `$1`: their
/// attempts and log entries are forgotten by then too, and a delivery a receiver refused for
/// a day, months ago, is no one's work any more (found by the soak audit: one dead job an
/// event for ever while an endpoint stayed down). Dead provisioning and other jobs are kept
/// until staff retry them.
static DEAD_DELIVERIES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "DELETE FROM jobs WHERE id IN
         (SELECT id FROM jobs WHERE status = 'dead' AND run_at < $1 AND modified_at < $1
            AND kind IN ($2, $3) AND id < (SELECT MAX(id) FROM jobs)
          ORDER BY run_at LIMIT {FORGET_AT_ONCE})"
    )
});

/// Sessions expired before `$1`.
static ENDED_SESSIONS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "DELETE FROM sessions WHERE digest IN
         (SELECT digest FROM sessions WHERE expires_at < $1 ORDER BY expires_at LIMIT {FORGET_AT_ONCE})"
    )
});

static OLD_DELIVERIES: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| oldest("webhook_deliveries"));
static OLD_MAIL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| oldest("mail_log"));

/// What retention forgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Jobs finished (`done`).
    DoneJobs,
    /// Webhook delivery attempts.
    Deliveries,
    /// Mail log entries.
    Mail,
    /// Dead jobs of the two kinds given (webhook deliveries and mail).
    DeadDeliveries(&'static str, &'static str),
    /// `/apiv2` login sessions, by their expiry.
    Sessions,
}

/// Forgets up to [`FORGET_AT_ONCE`] rows of `what` from before `before`.
pub async fn forget<'e, E: Executor<'e, Database = Any>>(
    db: E,
    what: Record,
    before: i64,
) -> Result<u64> {
    let query = match what {
        Record::DoneJobs => sqlx::query(&DONE_JOBS).bind(before),
        Record::Deliveries => sqlx::query(&OLD_DELIVERIES).bind(before),
        Record::Mail => sqlx::query(&OLD_MAIL).bind(before),
        Record::DeadDeliveries(webhook, mail) => sqlx::query(&DEAD_DELIVERIES)
            .bind(before)
            .bind(webhook)
            .bind(mail),
        Record::Sessions => sqlx::query(&ENDED_SESSIONS).bind(before),
    };
    Ok(query.execute(db).await?.rows_affected())
}
