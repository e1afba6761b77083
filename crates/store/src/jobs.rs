//! The durable job queue. Jobs are written in the same transaction as the change that needs
//! them; a `dedupe_key` makes enqueueing the same work twice a no-op.

use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::Result;

#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub locked_by: Option<String>,
    pub locked_until: Option<i64>,
    pub last_error: Option<String>,
    pub dedupe_key: Option<String>,
    pub created_at: i64,
    pub modified_at: i64,
}

pub const JOB_COLUMNS: &str = "id, kind, payload, status, attempts, max_attempts, run_at, locked_by, locked_until, last_error, dedupe_key, created_at, modified_at";

pub struct NewJob<'a> {
    pub kind: &'a str,
    pub payload: &'a str,
    pub dedupe_key: Option<&'a str>,
    pub run_at: i64,
    pub max_attempts: i64,
    pub now: i64,
}

/// Enqueues a job; `false` when a job with the same dedupe key already exists.
pub async fn enqueue(conn: &mut AnyConnection, j: &NewJob<'_>) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO jobs (kind, payload, status, max_attempts, run_at, dedupe_key, created_at, modified_at)
         VALUES ($1, $2, 'queued', $3, $4, $5, $6, $6) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(j.kind)
    .bind(j.payload)
    .bind(j.max_attempts)
    .bind(j.run_at)
    .bind(j.dedupe_key)
    .bind(j.now)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn jobs_of_kind<'e, E: Executor<'e, Database = Any>>(
    db: E,
    kind: &str,
) -> Result<Vec<JobRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE kind = $1 ORDER BY id"
    ))
    .bind(kind)
    .fetch_all(db)
    .await?)
}
