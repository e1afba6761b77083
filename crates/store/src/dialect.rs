//! The statements that differ by engine, and nowhere else: the rest of the store runs the
//! same `$n` statements on SQLite and PostgreSQL.
//!
//! What differs is mostly how a transaction makes sure nobody changes what it read before
//! it writes:
//! - PostgreSQL locks rows, one by one, each for the rest of the transaction;
//! - SQLite has one writer, whose write lock covers the whole database. A transaction on
//!   sqlx's writer begins deferred and takes that lock at its first write, so a read that
//!   must not be overtaken is written as a no-op update; the batch writer's transactions
//!   begin `IMMEDIATE` and hold it from the start, so a plain read will do.
//!
//! And a few statements exist only on PostgreSQL, where each statement is a round trip and
//! transactions run side by side: several rows updated or locked in one statement, advisory
//! locks, identity sequences kept ahead of explicit ids.

use std::sync::LazyLock;

use crate::conn::{SqlConn, Val};
use crate::{vals, Engine, Result};

/// The engine a statement runs on, as far as its text is concerned ([`SqlConn::dialect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL: row locks.
    Postgres,
    /// SQLite in a transaction that takes the write lock at its first write (sqlx's writer),
    /// or outside a transaction.
    Sqlite,
    /// SQLite in a transaction that holds the write lock from its start (the batch writer).
    SqliteLocked,
}

impl Dialect {
    /// Whether transactions run side by side and lock the rows they need (PostgreSQL), so
    /// that locks taken together must be taken in one order; SQLite has a single writer.
    pub fn locks_rows(self) -> bool {
        self == Dialect::Postgres
    }
}

impl From<Engine> for Dialect {
    fn from(engine: Engine) -> Self {
        match engine {
            Engine::Postgres => Dialect::Postgres,
            Engine::Sqlite => Dialect::Sqlite,
        }
    }
}

/// One statement's text for each [`Dialect`].
struct Texts<S> {
    postgres: S,
    sqlite: S,
    sqlite_locked: S,
}

impl<S: AsRef<str>> Texts<S> {
    fn get(&self, d: Dialect) -> &str {
        match d {
            Dialect::Postgres => self.postgres.as_ref(),
            Dialect::Sqlite => self.sqlite.as_ref(),
            Dialect::SqliteLocked => self.sqlite_locked.as_ref(),
        }
    }
}

/// A row read by `WHERE id = $1` and locked for the rest of the transaction: a no-op update
/// (PostgreSQL's row lock, or SQLite's write lock), or a plain read where the write lock is
/// held already.
fn lock_by_id(table: &str, columns: &str) -> Texts<String> {
    let update =
        format!("UPDATE {table} SET modified_at = modified_at WHERE id = $1 RETURNING {columns}");
    Texts {
        postgres: update.clone(),
        sqlite: update,
        sqlite_locked: format!("SELECT {columns} FROM {table} WHERE id = $1"),
    }
}

static LOCK_INVOICE: LazyLock<Texts<String>> =
    LazyLock::new(|| lock_by_id("invoices", crate::billing::INVOICE_COLUMNS));

/// An invoice's columns ([`crate::billing::INVOICE_COLUMNS`]) by id, locked.
pub(crate) fn lock_invoice(d: Dialect) -> &'static str {
    LOCK_INVOICE.get(d)
}

static LOCK_HOSTING_STATUS: LazyLock<Texts<String>> =
    LazyLock::new(|| lock_by_id("hosting", "status"));

/// A hosting account's status by id, locked.
pub(crate) fn lock_hosting_status(d: Dialect) -> &'static str {
    LOCK_HOSTING_STATUS.get(d)
}

const LOCK_CREDIT: Texts<&str> = Texts {
    // The lock an update of the balance takes, which does not hold up foreign-key checks of
    // rows inserted meanwhile.
    postgres: "SELECT credit_balance_minor FROM organizations WHERE id = $1 FOR NO KEY UPDATE",
    sqlite: "UPDATE organizations SET credit_balance_minor = credit_balance_minor WHERE id = $1
             RETURNING credit_balance_minor",
    sqlite_locked: "SELECT credit_balance_minor FROM organizations WHERE id = $1",
};

/// An organization's credit balance by id, locked.
pub(crate) fn lock_credit(d: Dialect) -> &'static str {
    LOCK_CREDIT.get(d)
}

/// Runs `update`, an `UPDATE {table} … WHERE id = $1 …`, and returns `columns` of the row
/// it changed (`None`: it changed none). In one statement on PostgreSQL; SQLite runs
/// `RETURNING` through a temporary b-tree per statement, and its one writer reads the row
/// back instead, in the same transaction.
pub(crate) async fn update_returning<C: SqlConn>(
    conn: &mut C,
    table: &str,
    update: &str,
    columns: &str,
    args: Vec<Val>,
) -> Result<Option<Vec<Val>>> {
    if conn.is_postgres() {
        return conn
            .fetch_row(&format!("{update} RETURNING {columns}"), args)
            .await;
    }
    let id = args.first().cloned();
    if conn.exec(update, args).await? == 0 {
        return Ok(None);
    }
    conn.fetch_row(
        &format!("SELECT {columns} FROM {table} WHERE id = $1"),
        id.into_iter().collect(),
    )
    .await
}

/// Moves organization `org`'s credit balance by `amount` and returns the new balance
/// (`None`: no such organization), through [`update_returning`].
pub(crate) async fn add_to_balance<C: SqlConn>(
    conn: &mut C,
    org: &str,
    amount: i64,
    now: i64,
) -> Result<Option<i64>> {
    let row = update_returning(
        conn,
        "organizations",
        "UPDATE organizations SET credit_balance_minor = credit_balance_minor + $2, modified_at = $3
         WHERE id = $1",
        "credit_balance_minor",
        vals![org, amount, now],
    )
    .await?;
    match row.as_deref() {
        None => Ok(None),
        Some([balance]) => balance.int(),
        Some(_) => Err(crate::StoreError::Corrupt(
            "the balance's update returned other columns".into(),
        )),
    }
}

static CLAIM_JOBS: LazyLock<Texts<String>> = LazyLock::new(|| {
    let claim = |lock: &str| {
        format!(
            "UPDATE jobs SET status = 'running', locked_by = $1, locked_until = $2,
                 attempts = attempts + 1, modified_at = $3
             WHERE id IN (SELECT id FROM jobs
                          WHERE ((status = 'queued' AND run_at <= $3)
                             OR (status = 'running' AND locked_until < $3))
                            AND ($5 = '' OR kind = $5 OR kind = $8)
                            AND ($6 = '' OR (kind <> $6 AND kind <> $9))
                            AND ($7 = '' OR node IS NULL OR node = $7)
                          ORDER BY run_at, id LIMIT $4 {lock})
             RETURNING {}",
            crate::jobs::JOB_COLUMNS
        )
    };
    Texts {
        // Rows another claimer locked are skipped, so nodes share work without running a
        // job twice.
        postgres: claim("FOR UPDATE SKIP LOCKED"),
        sqlite: claim(""),
        sqlite_locked: claim(""),
    }
});

/// Claims up to `$4` due jobs for worker `$1` until `$2`, at `$3`: of kind `$5` or `$8`
/// only, and not of kind `$6` or `$9` (`''`: any), waiting for no node or for node `$7`
/// (`''`: any).
pub(crate) fn claim_jobs(d: Dialect) -> &'static str {
    CLAIM_JOBS.get(d)
}

static LOCK_LIMITED_SERVERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT s.id FROM servers s WHERE {} AND s.capacity > 0
         ORDER BY s.legacy_id FOR NO KEY UPDATE OF s",
        crate::servers::SERVES
    )
});

/// Locks the servers with a capacity that serve driver `$1` and plan `$2`, in one order
/// (so orders never deadlock on them), before their accounts are counted: under READ
/// COMMITTED each order would otherwise count the same free places. `None` on SQLite,
/// which has a single writer already.
pub(crate) fn lock_limited_servers(d: Dialect) -> Option<&'static str> {
    (d == Dialect::Postgres).then(|| LOCK_LIMITED_SERVERS.as_str())
}

/// Locks `count` organizations' rows, `$1`…`$count`, in the order of their ids. Only where
/// a dialect [`Dialect::locks_rows`].
pub(crate) fn lock_organizations(count: usize) -> String {
    format!(
        "SELECT id FROM organizations WHERE id IN ({}) ORDER BY id FOR NO KEY UPDATE",
        placeholders(1, count)
    )
}

/// Locks the rows of the organizations of `count` invoices, `$1`…`$count`, in the order of
/// their ids (as [`lock_organizations`]). Only where a dialect [`Dialect::locks_rows`].
pub(crate) fn lock_organizations_of_invoices(count: usize) -> String {
    format!(
        "SELECT id FROM organizations WHERE id IN
             (SELECT organization_id FROM invoices WHERE id IN ({}))
         ORDER BY id FOR NO KEY UPDATE",
        placeholders(1, count)
    )
}

/// Takes the transaction-scoped advisory locks `$1`…`$count`, in ascending order: the
/// sorted ids are a fenced subquery (`OFFSET 0`), so the locks are taken row by row in
/// that order. Only where a dialect [`Dialect::locks_rows`].
pub(crate) fn advisory_locks(count: usize) -> String {
    let rows: Vec<String> = (1..=count).map(|i| format!("(${i}::BIGINT)")).collect();
    format!(
        "SELECT pg_advisory_xact_lock(id) FROM
         (SELECT id FROM (VALUES {}) AS v (id) ORDER BY id OFFSET 0) AS sorted",
        rows.join(", ")
    )
}

/// After a row of `table` was written with an explicit `legacy_id`: moves PostgreSQL's
/// identity sequence past the largest, which an explicit id does not advance. `None` on
/// SQLite, where a new row takes the largest rowid plus one.
pub(crate) fn legacy_id_catch_up(d: Dialect, table: &str) -> Option<String> {
    (d == Dialect::Postgres).then(|| {
        format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'legacy_id'), (SELECT MAX(legacy_id) FROM {table}))"
        )
    })
}

/// `$from, $from+1, …`: `count` placeholders.
fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_needs_none_of_the_postgres_only_statements() {
        for d in [Dialect::Sqlite, Dialect::SqliteLocked] {
            assert_eq!(lock_limited_servers(d), None);
            assert!(!d.locks_rows());
            assert_eq!(legacy_id_catch_up(d, "plans"), None);
            assert!(!claim_jobs(d).contains("FOR UPDATE"));
        }
        assert!(Dialect::Postgres.locks_rows());
        assert!(claim_jobs(Dialect::Postgres).contains("FOR UPDATE SKIP LOCKED"));
    }

    #[test]
    fn postgres_lists_are_numbered_and_padded() {
        assert_eq!(
            lock_organizations(3),
            "SELECT id FROM organizations WHERE id IN ($1, $2, $3) ORDER BY id FOR NO KEY UPDATE"
        );
        assert!(advisory_locks(2).contains("(VALUES ($1::BIGINT), ($2::BIGINT))"));
    }

    #[test]
    fn a_locked_sqlite_transaction_reads_plainly() {
        assert!(lock_invoice(Dialect::SqliteLocked).starts_with("SELECT "));
        assert!(lock_hosting_status(Dialect::SqliteLocked).starts_with("SELECT status "));
        assert!(lock_credit(Dialect::SqliteLocked).starts_with("SELECT "));
        for d in [Dialect::Postgres, Dialect::Sqlite] {
            assert!(lock_invoice(d).starts_with("UPDATE invoices"));
            assert!(lock_hosting_status(d).ends_with("RETURNING status"));
        }
        assert!(lock_credit(Dialect::Sqlite).starts_with("UPDATE "));
        assert!(lock_credit(Dialect::Postgres).ends_with("FOR NO KEY UPDATE"));
    }
}
