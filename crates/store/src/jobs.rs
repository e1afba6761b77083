//! The durable job queue. Jobs are written in the same transaction as the change that needs
//! them; a `dedupe_key` makes enqueueing the same work twice a no-op.

use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::{vals, Result, SqlConn};

#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    #[sqlx(try_from = "String")]
    pub status: lodge_core::JobStatus,
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

pub(crate) const INSERT_JOB: &str =
    "INSERT INTO jobs (kind, payload, status, max_attempts, run_at, dedupe_key, created_at, modified_at)
     VALUES ($1, $2, 'queued', $3, $4, $5, $6, $6) ON CONFLICT (dedupe_key) DO NOTHING";

fn job_args(j: &NewJob<'_>) -> Vec<crate::Val> {
    vals![
        j.kind,
        j.payload,
        j.max_attempts,
        j.run_at,
        j.dedupe_key,
        j.now
    ]
}

/// Enqueues a job; `false` when a job with the same dedupe key already exists.
pub async fn enqueue<C: SqlConn>(conn: &mut C, j: &NewJob<'_>) -> Result<bool> {
    let changed = conn.exec(INSERT_JOB, job_args(j)).await?;
    Ok(changed == 1)
}

/// [`enqueue`] through [`SqlConn::insert_later`]: without knowing whether a job with the
/// same `dedupe_key` was already there.
pub async fn enqueue_later<C: SqlConn>(conn: &mut C, j: &NewJob<'_>) -> Result<()> {
    conn.insert_later(INSERT_JOB, job_args(j)).await
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

/// Claims up to `limit` due jobs for `worker` until `lease_until`: queued jobs whose time
/// has come, and running jobs whose lease ended (their worker died). On PostgreSQL rows
/// locked by another claimer are skipped (`FOR UPDATE SKIP LOCKED`), so nodes share work
/// without running a job twice; SQLite has a single writer.
pub async fn claim(
    conn: &mut AnyConnection,
    engine: crate::Engine,
    worker: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
    kinds: KindFilter<'_>,
) -> Result<Vec<JobRow>> {
    claim_on(conn, engine, worker, "", now, lease_until, limit, kinds).await
}

/// [`claim`] for the worker of node `node`: a job waiting for another node (see
/// [`release`]) is left to that node.
#[allow(clippy::too_many_arguments)]
pub async fn claim_on(
    conn: &mut AnyConnection,
    engine: crate::Engine,
    worker: &str,
    node: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
    kinds: KindFilter<'_>,
) -> Result<Vec<JobRow>> {
    let two = |k: &[&'static str]| {
        debug_assert!(k.len() <= 2, "at most two kinds: {k:?}");
        (
            k.first().copied().unwrap_or(""),
            k.get(1).copied().unwrap_or(""),
        )
    };
    let (only, not) = match kinds {
        KindFilter::Any => (("", ""), ("", "")),
        KindFilter::Only(k) => (two(k), ("", "")),
        KindFilter::AllBut(k) => (("", ""), two(k)),
    };
    let mut claimed: Vec<JobRow> = sqlx::query_as(crate::dialect::claim_jobs(engine.into()))
        .bind(worker)
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .bind(only.0)
        .bind(not.0)
        .bind(node)
        .bind(only.1)
        .bind(not.1)
        .fetch_all(conn)
        .await?;
    // In the order they were chosen in: `UPDATE … RETURNING` returns its rows in no promised
    // order (found by the multi-node audit: an invoice's mail went out before its order's
    // confirmation, queued before it, on PostgreSQL).
    claimed.sort_by_key(|j| (j.run_at, j.id));
    Ok(claimed)
}

/// Which jobs a worker claims ([`claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindFilter<'a> {
    Any,
    /// One or two kinds (a third is not looked at).
    Only(&'a [&'static str]),
    /// All but one or two kinds (a third is not looked at).
    AllBut(&'a [&'static str]),
}

/// Extends `worker`'s claim of a running job to `until`; `false` when it holds it no more
/// (its lease ran out and another worker claimed it, or it ended).
pub async fn renew<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
    worker: &str,
    until: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET locked_until = $3 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(until)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Marks a job done if `worker` still holds it; `false` when the lease was lost.
pub async fn finish<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
    worker: &str,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET status = 'done', locked_by = NULL, locked_until = NULL, last_error = NULL, modified_at = $3
         WHERE id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(now)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Records a failure: back to the queue at `retry_at`, or `dead` when `retry_at` is `None`.
pub async fn fail<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
    worker: &str,
    error: &str,
    retry_at: Option<i64>,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET status = CASE WHEN $4 IS NULL THEN 'dead' ELSE 'queued' END,
             run_at = COALESCE($4, run_at), locked_by = NULL, locked_until = NULL,
             last_error = $3, modified_at = $5
         WHERE id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(error)
    .bind(retry_at)
    .bind(now)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Puts a job `worker` holds back in the queue at `run_at`, for node `node`'s worker only
/// ([`claim_on`]), without counting the attempt its claim counted (it was not this
/// worker's to run), `note` as its last error.
pub async fn release<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
    worker: &str,
    node: &str,
    note: &str,
    run_at: i64,
    now: i64,
) -> Result<bool> {
    requeue(db, id, worker, Some(node), note, run_at, now).await
}

/// Puts a job `worker` runs back in the queue until `run_at` without counting the attempt
/// (its work must wait for another's), `note` as its last error.
pub async fn postpone<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
    worker: &str,
    note: &str,
    run_at: i64,
    now: i64,
) -> Result<bool> {
    requeue(db, id, worker, None, note, run_at, now).await
}

/// [`release`] (for `node`) or [`postpone`] (`None`: its node kept).
async fn requeue<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
    worker: &str,
    node: Option<&str>,
    note: &str,
    run_at: i64,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET status = 'queued', run_at = $4, locked_by = NULL, locked_until = NULL,
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
             last_error = $3, modified_at = $5, node = COALESCE($6, node)
         WHERE id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(note)
    .bind(run_at)
    .bind(now)
    .bind(node)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Hands a job `worker` claimed but never started back to the queue (its node is
/// stopping): unlocked at once, due when it was, the attempt its claim counted taken back.
/// `false` when `worker` holds it no more.
pub async fn hand_back<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
    worker: &str,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET status = 'queued', locked_by = NULL, locked_until = NULL,
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, modified_at = $3
         WHERE id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(now)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Puts a dead job back in the queue with fresh attempts.
pub async fn retry<'e, E: Executor<'e, Database = Any>>(db: E, id: i64, now: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $2, last_error = NULL, modified_at = $2
         WHERE id = $1 AND status = 'dead'",
    )
    .bind(id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Runs now a queued job waiting to be tried again after a failure (its backoff, up to an
/// hour); its attempts are kept. `false` for any other job: dead, running, done, or queued
/// for a time of its own (a scheduled termination, an order's expiry), which is not moved.
pub async fn run_now<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET run_at = $2, modified_at = $2
         WHERE id = $1 AND status = 'queued' AND attempts > 0 AND run_at > $2",
    )
    .bind(id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The running jobs' claims: `(id, locked_by)`.
pub async fn running_claims<'e, E: Executor<'e, Database = Any>>(
    db: E,
) -> Result<Vec<(i64, String)>> {
    Ok(sqlx::query_as(
        "SELECT id, locked_by FROM jobs WHERE status = 'running' AND locked_by IS NOT NULL",
    )
    .fetch_all(db)
    .await?)
}

/// Ends `worker`'s lease of a running job now (`at`, a moment already past), so that any
/// worker's next claim takes it, as it would once the lease ran out. `false` when `worker`
/// holds it no more.
pub async fn end_lease<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
    worker: &str,
    at: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET locked_until = $3
         WHERE id = $1 AND locked_by = $2 AND status = 'running' AND locked_until > $3",
    )
    .bind(id)
    .bind(worker)
    .bind(at)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn by_id<'e, E: Executor<'e, Database = Any>>(db: E, id: i64) -> Result<Option<JobRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Whether a job of `kind` whose dedupe key starts with `prefix` is queued or running
/// (read through `jobs_due`: the open jobs only).
pub async fn open_with_key_prefix<C: SqlConn>(
    conn: &mut C,
    kind: &str,
    prefix: &str,
) -> Result<bool> {
    let like = format!(
        "{}%",
        prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    Ok(conn
        .fetch_int(
            "SELECT 1 FROM jobs WHERE status IN ('queued', 'running') AND kind = $1 \
             AND dedupe_key LIKE $2 ESCAPE '\\' LIMIT 1",
            vals![kind, like],
        )
        .await?
        .is_some())
}

/// Whether a job of `kind` with exactly this payload is queued or running.
pub async fn open_with_payload<C: SqlConn>(
    conn: &mut C,
    kind: &str,
    payload: &str,
) -> Result<bool> {
    Ok(conn
        .fetch_int(
            "SELECT 1 FROM jobs WHERE status IN ('queued', 'running') AND kind = $1 \
             AND payload = $2 LIMIT 1",
            vals![kind, payload],
        )
        .await?
        .is_some())
}

pub async fn by_dedupe_key<'e, E: Executor<'e, Database = Any>>(
    db: E,
    key: &str,
) -> Result<Option<JobRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE dedupe_key = $1"
    ))
    .bind(key)
    .fetch_optional(db)
    .await?)
}

/// Jobs in a status (`dead`, `queued`, …), newest first.
pub async fn with_status<'e, E: Executor<'e, Database = Any>>(
    db: E,
    status: lodge_core::JobStatus,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<JobRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE status = $1 AND id < $3 ORDER BY id DESC LIMIT $2"
    ))
    .bind(status.as_str())
    .bind(limit)
    .bind(before.unwrap_or(i64::MAX))
    .fetch_all(db)
    .await?)
}

/// The job queue at `now`, for monitoring: how many jobs are queued (due or not), running
/// and dead, and when the oldest due queued job was due (µs; `None`: none is due). Each
/// count is a range of the `(status, run_at)` index; done jobs are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub queued: i64,
    pub running: i64,
    pub dead: i64,
    pub oldest_due: Option<i64>,
}

pub async fn queue_stats<'e, E: Executor<'e, Database = Any>>(
    db: E,
    now: i64,
) -> Result<QueueStats> {
    let (queued, running, dead, oldest_due): (i64, i64, i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM jobs WHERE status = 'queued'),
                (SELECT COUNT(*) FROM jobs WHERE status = 'running'),
                (SELECT COUNT(*) FROM jobs WHERE status = 'dead'),
                (SELECT MIN(run_at) FROM jobs WHERE status = 'queued' AND run_at <= $1)",
    )
    .bind(now)
    .fetch_one(db)
    .await?;
    Ok(QueueStats {
        queued,
        running,
        dead,
        oldest_due,
    })
}

/// The kinds among `kinds` of jobs still to run (queued or running) for the hosting account
/// `hosting` (named in their payload).
pub async fn open_kinds_for_hosting(
    conn: &mut sqlx::AnyConnection,
    hosting: &str,
    kinds: &[&str],
) -> Result<Vec<String>> {
    let list: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT kind FROM jobs WHERE status IN ('queued', 'running') AND kind IN ({}) \
         AND payload LIKE '%' || $1 || '%' ORDER BY id",
        list.join(", ")
    );
    let mut q = sqlx::query_scalar::<_, String>(&sql).bind(naming_hosting(hosting));
    for k in kinds {
        q = q.bind(*k);
    }
    Ok(q.fetch_all(conn).await?)
}

/// The latest job of `kind` for the hosting account `hosting` (named in its payload),
/// whatever its status.
pub async fn latest_for_hosting<'e, E: Executor<'e, Database = Any>>(
    db: E,
    hosting: &str,
    kind: &str,
) -> Result<Option<JobRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE kind = $2 AND payload LIKE '%' || $1 || '%' \
         ORDER BY id DESC LIMIT 1"
    ))
    .bind(naming_hosting(hosting))
    .bind(kind)
    .fetch_optional(db)
    .await?)
}

/// What a job's payload holds when it names the hosting account `hosting`.
fn naming_hosting(hosting: &str) -> String {
    format!("\"hosting_id\":\"{hosting}\"")
}

/// Lets queued jobs waiting for a node be claimed by any node again (a server's node was
/// changed: each is judged afresh by the node that claims it).
pub async fn unpin_queued<'e, E: Executor<'e, Database = Any>>(db: E) -> Result<u64> {
    Ok(
        sqlx::query("UPDATE jobs SET node = NULL WHERE status = 'queued' AND node IS NOT NULL")
            .execute(db)
            .await?
            .rows_affected(),
    )
}
