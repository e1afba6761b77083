//! Stored responses of requests sent with an `Idempotency-Key`.

use sqlx::{Any, Executor, FromRow};

use crate::{vals, Result, SqlConn, Val};

#[derive(Debug, Clone, FromRow)]
pub struct IdempotencyRow {
    pub request_hash: String,
    pub status_code: Option<i64>,
    pub response: Option<String>,
    pub created_at: i64,
}

pub async fn get<C: SqlConn>(
    conn: &mut C,
    scope: &str,
    key: &str,
) -> Result<Option<IdempotencyRow>> {
    let Some(row) = conn
        .fetch_row(
            "SELECT request_hash, status_code, response, created_at FROM idempotency_keys WHERE scope = $1 AND key = $2",
            vals![scope, key],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut c = crate::Cols::new(row);
    Ok(Some(IdempotencyRow {
        request_hash: c.text()?,
        status_code: c.opt_int()?,
        response: c.opt_text()?,
        created_at: c.int()?,
    }))
}

/// Forgets the key's stored response if it is still the one stored at `created_at` (not
/// taken over meanwhile): true when it was.
pub async fn forget_answered<C: SqlConn>(
    conn: &mut C,
    scope: &str,
    key: &str,
    created_at: i64,
) -> Result<bool> {
    let changed = conn
        .exec(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND created_at = $3 \
             AND response IS NOT NULL",
            vals![scope, key, created_at],
        )
        .await?;
    Ok(changed == 1)
}

/// Keys one [`forget_before`] forgets at most.
pub const FORGET_AT_ONCE: u64 = 1000;

/// Reads the oldest keys through `idempotency_keys_created` (migration 0008). The limit is
/// written into the statement ([`FORGET_AT_ONCE`]), not bound: PostgreSQL's generic plan
/// estimates a bound `LIMIT` at a tenth of its input (and `created_at < $1` at a third of
/// the table), and at a million keys chose to hash the whole table to delete a thousand
/// rows (226 ms against 3.5 ms with the literal).
pub static FORGET_BEFORE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "DELETE FROM idempotency_keys WHERE (scope, key) IN
         (SELECT scope, key FROM idempotency_keys WHERE created_at < $1
          ORDER BY created_at LIMIT {FORGET_AT_ONCE})"
    )
});

/// Forgets up to [`FORGET_AT_ONCE`] keys stored before `before` (answered or not), oldest
/// first: a request retried that late is judged as a new one. Returns how many were
/// forgotten.
pub async fn forget_before<'e, E: Executor<'e, Database = Any>>(db: E, before: i64) -> Result<u64> {
    let r = sqlx::query(&FORGET_BEFORE).bind(before).execute(db).await?;
    Ok(r.rows_affected())
}

/// Claims `(scope, key)` for a request; `false` when the key is already held (by a committed
/// request, or by one earlier in the same transaction). Inside the transaction of the work it
/// guards (an order), the claim commits or rolls back with that work. On PostgreSQL a claim
/// another transaction holds uncommitted is waited for.
pub async fn claim<C: SqlConn>(
    conn: &mut C,
    scope: &str,
    key: &str,
    request_hash: &str,
    now: i64,
) -> Result<bool> {
    let changed = conn
        .exec(
            "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope, key) DO NOTHING",
            vals![scope, key, request_hash, now],
        )
        .await?;
    Ok(changed == 1)
}

/// [`claim`], except that a key claimed before `stale_before` is taken over: its claim and
/// stored response are replaced by this request's claim (keys Lodge derives itself, which
/// answer identical requests only for a while).
pub async fn claim_or_take_over<C: SqlConn>(
    conn: &mut C,
    scope: &str,
    key: &str,
    request_hash: &str,
    now: i64,
    stale_before: i64,
) -> Result<bool> {
    let changed = conn
        .exec(
            "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash,
               created_at = excluded.created_at, status_code = NULL, response = NULL
             WHERE idempotency_keys.created_at < $5",
            vals![scope, key, request_hash, now, stale_before],
        )
        .await?;
    Ok(changed == 1)
}

/// [`claim`] (with `stale_before`, [`claim_or_take_over`]) and [`complete`] in one
/// statement, for work whose response is known before its transaction commits: `false`
/// when the key is already held. A claim another transaction holds uncommitted is waited
/// for (PostgreSQL's unique index), as by [`claim`]; an order's batch takes the key's lock
/// first ([`lock_keys`]), so no other order's claim of it is in flight.
#[expect(clippy::too_many_arguments, reason = "a key's row, column by column")]
pub async fn claim_answered<C: SqlConn>(
    conn: &mut C,
    scope: &str,
    key: &str,
    request_hash: &str,
    now: i64,
    stale_before: Option<i64>,
    status_code: i64,
    response: &str,
) -> Result<bool> {
    let insert = "INSERT INTO idempotency_keys (scope, key, request_hash, created_at, status_code, response) \
                  VALUES ($1, $2, $3, $4, $5, $6)";
    let changed = match stale_before {
        None => {
            conn.exec(
                &format!("{insert} ON CONFLICT (scope, key) DO NOTHING"),
                vals![scope, key, request_hash, now, status_code, response],
            )
            .await?
        }
        Some(stale_before) => {
            conn.exec(
                &format!(
                    "{insert} ON CONFLICT (scope, key) DO UPDATE SET \
                     request_hash = excluded.request_hash, created_at = excluded.created_at, \
                     status_code = excluded.status_code, response = excluded.response \
                     WHERE idempotency_keys.created_at < $7"
                ),
                vals![
                    scope,
                    key,
                    request_hash,
                    now,
                    status_code,
                    response,
                    stale_before
                ],
            )
            .await?
        }
    };
    Ok(changed == 1)
}

/// Stores the response of a claimed key.
pub async fn complete<C: SqlConn>(
    conn: &mut C,
    scope: &str,
    key: &str,
    status_code: i64,
    response: &str,
) -> Result<()> {
    conn.exec(
        "UPDATE idempotency_keys SET status_code = $3, response = $4 WHERE scope = $1 AND key = $2",
        vals![scope, key, status_code, response],
    )
    .await?;
    Ok(())
}

/// Locks idempotency keys for the rest of the transaction, in one order, before a batch
/// claims any (PostgreSQL; SQLite has a single writer). A claim ([`claim`]) waits for
/// another transaction's uncommitted claim of the same key; with every key locked up front,
/// right after the batch's organizations, that wait never sits between locks the batch
/// takes later (a limited server, a coupon), and concurrent batches cannot deadlock on it.
/// Keys map to 64-bit advisory lock ids; two keys sharing one only wait for each other.
///
/// One statement takes them all, in ascending order ([`crate::dialect`]). The list is
/// padded to a power of two by repeating its last id (a lock a transaction holds is granted
/// again), so a few statement texts serve every batch size.
pub async fn lock_keys<C: SqlConn>(conn: &mut C, keys: &[(&str, &str)]) -> Result<()> {
    if !conn.dialect().locks_rows() || keys.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<i64> = keys.iter().map(|(s, k)| lock_id(s, k)).collect();
    ids.sort_unstable();
    ids.dedup();
    crate::conn::pad_to_power_of_two(&mut ids);
    conn.exec(
        &crate::dialect::advisory_locks(ids.len()),
        ids.into_iter().map(Val::from).collect(),
    )
    .await?;
    Ok(())
}

/// The advisory lock id of a key: FNV-1a over `scope`, a zero byte and `key`, stable across
/// nodes and releases.
pub fn lock_id(scope: &str, key: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scope.bytes().chain([0]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// The stored responses `LIKE` `pattern` (SQLite's `LIKE` ignores ASCII case: callers
/// check what they get): `(scope, key, response)`. A one-time scan, for a conversion at
/// start; the table holds a day of keys.
pub async fn responses_like<C: SqlConn>(
    conn: &mut C,
    pattern: &str,
) -> Result<Vec<(String, String, String)>> {
    let rows = conn
        .fetch_rows(
            "SELECT scope, key, response FROM idempotency_keys
             WHERE response LIKE $1",
            vals![pattern],
        )
        .await?;
    rows.into_iter()
        .map(|row| {
            let mut c = crate::Cols::new(row);
            Ok((c.text()?, c.text()?, c.text()?))
        })
        .collect()
}

/// Replaces the stored response of a key (its status stays).
pub async fn replace_response<C: SqlConn>(
    conn: &mut C,
    scope: &str,
    key: &str,
    response: &str,
) -> Result<()> {
    conn.exec(
        "UPDATE idempotency_keys SET response = $3 WHERE scope = $1 AND key = $2",
        vals![scope, key, response],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn lock_ids_are_stable_and_tell_scope_from_key() {
        assert_eq!(super::lock_id("a", "b"), super::lock_id("a", "b"));
        assert_ne!(super::lock_id("a", "bc"), super::lock_id("ab", "c"));
        assert_ne!(
            super::lock_id("v1:user:1", "k"),
            super::lock_id("v1:user:2", "k")
        );
    }
}
