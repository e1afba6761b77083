//! Failed logins (`login_failures`), counted in the database so that every node sharing it
//! counts the same. What the counts mean (when a key must wait, and how long) is decided
//! by `lodge_services::logins`; here are the counts and the locks.

use sqlx::AnyPool;

use crate::Result;

/// The latest lock of these keys (`0`: none of them is locked or counted).
pub async fn locked_until(db: &AnyPool, keys: &[String]) -> Result<i64> {
    let mut latest = 0;
    for key in keys {
        let until: Option<i64> =
            sqlx::query_scalar("SELECT locked_until FROM login_failures WHERE key = $1")
                .bind(key)
                .fetch_optional(db)
                .await?;
        latest = latest.max(until.unwrap_or(0));
    }
    Ok(latest)
}

/// Admits one login attempt of `key` at `now` unless it is locked, in one statement (so
/// attempts at once on any node each get their own number): counts it as a failure until
/// told otherwise (a count without a failure since `quiet_since` and not locked starts again
/// at one, stamped `now` so that attempts at once do not all start again; a failure is
/// stamped by [`stamp_failure`]) and, when that number reaches `free`, locks the key until `hold_until` so that no
/// other attempt is admitted while this one is decided. Returns its number, or `None` when
/// the key is locked.
pub async fn admit(
    db: &AnyPool,
    key: &str,
    now: i64,
    quiet_since: i64,
    free: i64,
    hold_until: i64,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO login_failures (key, failures, last_failure, locked_until) \
         VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN $5 ELSE 0 END) \
         ON CONFLICT (key) DO UPDATE SET \
           failures = CASE WHEN login_failures.last_failure <= $3 AND login_failures.locked_until <= $2 \
                           THEN 1 ELSE login_failures.failures + 1 END, \
           locked_until = CASE WHEN (CASE WHEN login_failures.last_failure <= $3 AND login_failures.locked_until <= $2 \
                                          THEN 1 ELSE login_failures.failures + 1 END) >= $4 \
                               THEN $5 ELSE login_failures.locked_until END, \
           last_failure = CASE WHEN login_failures.last_failure <= $3 AND login_failures.locked_until <= $2 \
                               THEN $2 ELSE login_failures.last_failure END \
         WHERE login_failures.locked_until <= $2 \
         RETURNING failures",
    )
    .bind(key)
    .bind(now)
    .bind(quiet_since)
    .bind(free)
    .bind(hold_until)
    .fetch_optional(db)
    .await?)
}

/// Stamps `key`'s last failure at `now` (an admitted attempt that failed; one that
/// succeeds leaves the count's quiet window as it was).
pub async fn stamp_failure(db: &AnyPool, key: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE login_failures SET last_failure = $2 WHERE key = $1 AND last_failure < $2")
        .bind(key)
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

/// Replaces `key`'s lock `held` (an attempt's own) by `until`; another lock set since is kept.
pub async fn relock(db: &AnyPool, key: &str, held: i64, until: i64) -> Result<()> {
    sqlx::query("UPDATE login_failures SET locked_until = $3 WHERE key = $1 AND locked_until = $2")
        .bind(key)
        .bind(held)
        .bind(until)
        .execute(db)
        .await?;
    Ok(())
}

/// Takes back an admitted attempt that did not fail (a success from a shared address, or an
/// attempt that could not be decided): one failure less, and its own lock `held` lifted.
pub async fn release(db: &AnyPool, key: &str, held: i64) -> Result<()> {
    sqlx::query(
        "UPDATE login_failures SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END, \
           locked_until = CASE WHEN locked_until = $2 THEN 0 ELSE locked_until END \
         WHERE key = $1",
    )
    .bind(key)
    .bind(held)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets `key`'s count (a successful login).
pub async fn clear(db: &AnyPool, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM login_failures WHERE key = $1")
        .bind(key)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets the counts without a failure since `quiet_since` and not locked at `now`.
pub async fn forget_quiet(db: &AnyPool, now: i64, quiet_since: i64) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM login_failures WHERE last_failure <= $2 AND locked_until <= $1")
            .bind(now)
            .bind(quiet_since)
            .execute(db)
            .await?
            .rows_affected(),
    )
}
