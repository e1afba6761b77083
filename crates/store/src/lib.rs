//! Lodge's storage layer: every SQL statement and both migration trees live here.
//!
//! One schema and one set of statements serve SQLite and PostgreSQL through sqlx's `Any`
//! driver, with `$n` placeholders on both. Statements are free functions generic over an
//! executor, so a service can run several of them in one transaction (`Store::begin`). The
//! order path's statements are generic over [`SqlConn`] instead, so that on SQLite a whole
//! group commit of orders runs on the batch writer ([`Store::batch`]).
//!
//! Where things are:
//! - this file: the [`Store`] facade (connecting, migrating, transactions, the batch
//!   writer) and the small shared helpers (timestamps, counters);
//! - [`error`]: the one error type, [`StoreError`], with constraint violations as typed
//!   [`Conflict`]s and [`Check`]s whichever engine reported them;
//! - [`conn`]: the statement interface [`SqlConn`] and its sqlx implementations;
//! - [`dialect`]: the statements that differ by engine, and nowhere else;
//! - `sqlite/`: what only SQLite needs (pragmas, the batch writer and its checkpointer, the
//!   inline readers, the one-time rebuild of old order tables); `postgres.rs` likewise;
//! - one module per area for the statements themselves (`billing`, `hosting`, `jobs`, …).

use std::str::FromStr;

use sqlx::Executor;

pub mod account;
mod bench;
pub mod billing;
pub mod cards;
pub mod catalog;
pub mod certificates;
pub mod checks;
pub mod conn;
pub mod copy;
pub mod databases;
pub mod deferred;
pub mod dialect;
pub mod error;
pub mod events;
pub mod hosting;
pub mod idempotency;
pub mod jobs;
pub mod key_check;
pub mod keys;
pub mod logins;
pub mod mail;
pub mod orgs;
mod pinned_migrations;
pub mod plan_change;
mod postgres;
pub mod refunds;
pub mod registry;
pub mod renewals;
pub mod retention;
pub mod servers;
mod sqlite;
pub mod tokens;
pub mod users;
pub mod webhooks;

pub use bench::{bare_commit_rate, fill_services, plain_sqlite_commit_rate, ServicesFilled};
pub use conn::{Cols, SqlConn, Val};
pub use error::{Check, Conflict, Result, StoreError};
/// The conditions the name checks repeat from their partial indexes ([`hosting`]) are written
/// as SQLite stores them.
pub(crate) use sqlite::expand_in_lists;
pub use sqlite::{run_ready, BatchConn, FileIdentity, ReadConn};
pub use sqlx::{Acquire, Any, AnyConnection, AnyPool, Transaction};

/// A transaction on either engine.
pub type Tx = Transaction<'static, Any>;

/// The database engine behind a [`Store`], chosen by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Engine::Postgres)
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL scheme in {:?}: use sqlite:// or postgres://",
                redact_url(url)
            )))
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// Removes the password from a database URL so it can be logged.
pub fn redact_url(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return redact_keywords(url);
    };
    let (scheme, rest) = url.split_at(s + 3);
    // The authority ends at the path or the query; its user information at its last `@`.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(c) => format!("{}:***{}", &authority[..c], &authority[at..]),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    // A password may also be a query parameter (`?password=…`, libpq's and sqlx's):
    // masked the same (found by the operator audit: printed in errors and the start line).
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, format!("#{f}")),
                None => (query, String::new()),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _))
                        if ["password", "sslpassword", "pass"]
                            .iter()
                            .any(|p| k.eq_ignore_ascii_case(p)) =>
                    {
                        format!("{k}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}{fragment}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

/// Masks the values of `password` and `sslpassword` in a libpq keyword/value string
/// (`host=… user=… password=…`; a value quoted with `'` may hold spaces), which is not a
/// URL but may be given where one is expected (found by the copy audit: printed whole).
fn redact_keywords(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(at) = lower.get(from..).and_then(|rest| rest.find("password")) {
        let key_end = from + at + "password".len();
        from = key_end;
        // `password`, then spaces, `=`, spaces, then the value.
        let mut i = key_end;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let start = i;
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            while let Some(b) = bytes.get(i) {
                match b {
                    b'\\' => i += 2,
                    b'\'' => {
                        i += 1;
                        break;
                    }
                    _ => i += 1,
                }
            }
        } else {
            while bytes.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                i += 1;
            }
        }
        let end = i.min(s.len());
        out.push_str(s.get(copied..start).unwrap_or_default());
        out.push_str("***");
        copied = end;
        from = end.max(from);
    }
    out.push_str(s.get(copied..).unwrap_or_default());
    out
}

/// The connection pools of one Lodge node.
#[derive(Clone, Debug)]
pub struct Store {
    engine: Engine,
    /// Reads (and on PostgreSQL, writes too).
    read: AnyPool,
    /// Writes: on SQLite a pool of exactly one connection, the single writer.
    write: AnyPool,
    /// SQLite's batch writer (group commits of orders), on a thread of its own.
    batch: Option<sqlite::BatchWriter>,
    /// SQLite's inline read connections ([`ReadConn`]), on a file database.
    inline_reads: Option<std::sync::Arc<sqlite::ReadPool>>,
    /// SQLite's file as opened (checked by [`Store::ping`]).
    file: Option<sqlite::FileIdentity>,
}

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://…`). Does not migrate.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_sized(url, DEFAULT_POOL_SIZE).await
    }

    /// [`Store::connect`], with at most `pool_size` connections to PostgreSQL (SQLite's are
    /// its own).
    pub async fn connect_sized(url: &str, pool_size: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let engine = Engine::from_url(url)?;
        match engine {
            Engine::Sqlite => {
                let c = sqlite::connect(url).await?;
                Ok(Store {
                    engine,
                    read: c.read,
                    write: c.write,
                    batch: c.batch,
                    inline_reads: c.inline_reads,
                    file: c.file,
                })
            }
            Engine::Postgres => {
                let pool = postgres::connect(url, pool_size.max(MIN_POOL_SIZE)).await?;
                Ok(Store {
                    engine,
                    read: pool.clone(),
                    write: pool,
                    batch: None,
                    inline_reads: None,
                    file: None,
                })
            }
        }
    }

    /// Connects and applies the engine's migrations.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_sized(url, DEFAULT_POOL_SIZE).await
    }

    /// PostgreSQL: closes up to `how_many` idle connections of the pool (none on SQLite, whose
    /// connections are its own files'). Returns how many were closed.
    pub async fn shed_idle(&self, how_many: usize) -> usize {
        if self.engine != Engine::Postgres {
            return 0;
        }
        let mut closed = 0;
        while closed < how_many {
            let Some(conn) = self.write.try_acquire() else {
                break;
            };
            // Closed for good, its permit given back (the pool opens another when needed).
            let _ = conn.close().await;
            closed += 1;
        }
        closed
    }

    /// The pool's idle connections now.
    pub fn idle_connections(&self) -> usize {
        self.write.num_idle()
    }

    /// PostgreSQL's connections for clients other than superusers (`max_connections` less
    /// the reserved ones).
    pub async fn postgres_connections(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(current_setting('max_connections') AS BIGINT) \
             - CAST(current_setting('superuser_reserved_connections') AS BIGINT)",
        )
        .fetch_one(&self.read)
        .await?)
    }

    /// [`Store::open`] with [`Store::connect_sized`]'s pool.
    pub async fn open_sized(url: &str, pool_size: u32) -> Result<Self> {
        let store = Self::connect_sized(url, pool_size).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Whether the database holds Lodge's schema (its migrations were applied there: their
    /// table, and the first migration's `organizations`, not merely another sqlx
    /// application's migrations).
    pub async fn is_installed(&self) -> Result<bool> {
        let sql = match self.engine {
            Engine::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
                 AND name IN ('_sqlx_migrations', 'organizations')"
            }
            Engine::Postgres => {
                "SELECT COUNT(*) FROM pg_catalog.pg_tables \
                 WHERE tablename IN ('_sqlx_migrations', 'organizations') \
                 AND schemaname = ANY (current_schemas(false))"
            }
        };
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&self.read).await?;
        Ok(n == 2)
    }

    pub async fn migrate(&self) -> Result<()> {
        let mut conn = self.write.acquire().await?;
        match self.engine {
            Engine::Sqlite => sqlite::migrate(&mut conn).await?,
            Engine::Postgres => postgres::migrate(&mut conn).await?,
        }
        Ok(())
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The database server's time (unix microseconds) on PostgreSQL, which several nodes
    /// share and keep their clocks to ([`lodge_core::AlignedClock`]); `None` on SQLite,
    /// which one machine's nodes share with that machine's clock.
    pub async fn database_now_us(&self) -> Result<Option<i64>> {
        if self.engine != Engine::Postgres {
            return Ok(None);
        }
        let mut conn = self.read.acquire().await?;
        Ok(Some(database_now_on(&mut conn).await?))
    }

    /// Anchors `clock` to the database server's time ([`Store::database_now_us`]), measured
    /// at the midpoint of one query's round trip on a connection already in hand (the wait
    /// for a pooled connection is not counted: found by review, a busy node's clock moved by
    /// it). `None` on SQLite (nothing done), or when the round trip took longer than
    /// `max_round_trip` (a measurement that loose is not taken, unless the clock has none
    /// yet); else the machine clock's offset from the database's.
    pub async fn align_clock(
        &self,
        clock: &lodge_core::AlignedClock,
        max_round_trip: jiff::SignedDuration,
    ) -> Result<Option<jiff::SignedDuration>> {
        if self.engine != Engine::Postgres {
            return Ok(None);
        }
        let mut conn = self.read.acquire().await?;
        let (mono0, inner0) = (clock.monotonic_us(), clock.inner_now().as_microsecond());
        let db = database_now_on(&mut conn).await?;
        let (mono1, inner1) = (clock.monotonic_us(), clock.inner_now().as_microsecond());
        drop(conn);
        let trip = jiff::SignedDuration::from_micros(mono1.saturating_sub(mono0));
        if trip > max_round_trip && clock.is_anchored() {
            return Ok(None);
        }
        let mid = |a: i64, b: i64| a + (b - a) / 2;
        clock.anchor(db, mid(mono0, mono1), mid(inner0, inner1));
        Ok(Some(clock.offset()))
    }

    /// The pool for reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// A connection for a few point reads on a hot path ([`ReadConn`]): on a SQLite file
    /// they run on the calling task, elsewhere on a read pool connection.
    pub async fn read_conn(&self) -> Result<ReadConn<'_>> {
        match &self.inline_reads {
            Some(pool) => ReadConn::inline(pool),
            None => Ok(ReadConn::pooled(self.read.acquire().await?)),
        }
    }

    /// The pool for single-statement writes outside a transaction.
    pub fn writer(&self) -> &AnyPool {
        &self.write
    }

    /// A connection for a few writes outside a transaction (on SQLite, the single writer,
    /// held until it is dropped).
    pub async fn write_conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.write.acquire().await?)
    }

    /// Begins a write transaction (on SQLite, on the single writer connection).
    ///
    /// On SQLite it is `BEGIN IMMEDIATE`: the write lock is taken at the start, so a
    /// transaction that reads before it writes cannot find, at its first write, that another
    /// process on the same file (a second node, a `lodge` command) wrote meanwhile: SQLite
    /// answers that "database is locked" at once, without waiting out the busy timeout.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self.engine {
            Engine::Sqlite => match self.write.begin_with("BEGIN IMMEDIATE").await {
                // The writer believes a transaction is still open that SQLite already ended:
                // a COMMIT that failed (the disk full) is rolled back by SQLite itself, and
                // sqlx (0.8) then keeps its count of open transactions, refusing every later
                // begin on that connection (found by the resilience audit: staff writes,
                // logins and the worker failed until a restart, long after the disk had room
                // again). That connection is closed and the begin made on a new one.
                Err(sqlx::Error::InvalidSavePointStatement) => {
                    tracing::warn!(
                        "the SQLite writer connection was left inside a failed transaction: replacing it"
                    );
                    let stuck = self.write.acquire().await?;
                    let _ = stuck.close().await;
                    self.write.begin_with("BEGIN IMMEDIATE").await?
                }
                other => other?,
            },
            Engine::Postgres => self.write.begin().await?,
        })
    }

    /// Holds an installation-wide lock named by `key` (a PostgreSQL session advisory lock,
    /// so nodes sharing the database take turns) until [`Store::unlock`]; on SQLite, where
    /// one process writes at a time, nothing.
    pub async fn lock(&self, key: i64) -> Result<Option<sqlx::pool::PoolConnection<sqlx::Any>>> {
        match self.engine {
            Engine::Sqlite => Ok(None),
            Engine::Postgres => {
                let mut c = self.write.acquire().await?;
                sqlx::query("SELECT pg_advisory_lock($1)::TEXT")
                    .bind(key)
                    .execute(&mut *c)
                    .await?;
                Ok(Some(c))
            }
        }
    }

    /// Releases a [`Store::lock`]: its connection is closed, which ends the session and
    /// its lock whatever happened meanwhile.
    pub async fn unlock(&self, held: Option<sqlx::pool::PoolConnection<sqlx::Any>>) {
        if let Some(c) = held {
            let _ = c.close().await;
        }
    }

    /// Whether [`Store::batch`] is available (SQLite on a file).
    pub fn has_batch_writer(&self) -> bool {
        self.batch.is_some()
    }

    /// Runs `f` on SQLite's batch writer, holding the single writer connection meanwhile so
    /// no other write interleaves. `f` opens and commits its own transaction. Do not cancel
    /// the returned future once it runs: the work would go on without the writer held.
    pub async fn batch<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut BatchConn) -> T + Send + 'static,
        T: Send + 'static,
    {
        let batch = self
            .batch
            .as_ref()
            .ok_or_else(|| StoreError::Config("no batch writer on this database".into()))?;
        let _writer = self.write.acquire().await?;
        batch.run(f).await
    }

    /// `SELECT 1` on the reader: the readiness check. Not a write: on SQLite that waits for
    /// the one writer, which a busy moment or a long CLI import holds for seconds, and a
    /// load balancer would take the node out for it (found by the re-audit); a writer left
    /// inside a failed transaction is replaced at the next [`Store::begin`] instead.
    /// Whether the database answers, and on SQLite whether its file is still the one
    /// opened (deleted or replaced under the process, SQLite goes on writing to the old
    /// one, and the writes are lost at the next start).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        if let Some(f) = self.file.clone() {
            // Off the async threads: a file system that hangs (a lost network mount) must
            // not hold a worker thread and the caller's timeout with it.
            tokio::task::spawn_blocking(move || f.check())
                .await
                .map_err(|e| StoreError::Config(format!("checking the database file: {e}")))??;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// A day in microseconds (the unit of stored instants).
pub const DAY_US: i64 = 86_400_000_000;

/// The most connections a node opens to PostgreSQL unless configured otherwise.
pub const DEFAULT_POOL_SIZE: u32 = 32;

/// The fewest a node works with: its group committers, its three job lanes and the reads of
/// the requests beside them.
pub const MIN_POOL_SIZE: u32 = 8;

/// Unix microseconds for a timestamp (the stored form of every instant).
pub fn micros(ts: jiff::Timestamp) -> i64 {
    ts.as_microsecond()
}

/// The timestamp stored as unix microseconds.
pub fn from_micros(us: i64) -> Result<jiff::Timestamp> {
    jiff::Timestamp::from_microsecond(us).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The UTC calendar day of an instant stored as unix microseconds (the day Lodge's clock
/// said it was then).
pub fn day_of(us: i64) -> Result<jiff::civil::Date> {
    Ok(from_micros(us)?.to_zoned(jiff::tz::TimeZone::UTC).date())
}

/// The stamp of a named counter (unix microseconds; on PostgreSQL the invoice counter's is the
/// latest issue time given, which invoices numbered after it never precede), if it has one.
pub async fn counter_stamp<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    name: &str,
) -> Result<Option<i64>> {
    let row: Option<(Option<i64>,)> = sqlx::query_as("SELECT stamp FROM counters WHERE name = $1")
        .bind(name)
        .fetch_optional(db)
        .await?;
    Ok(row.and_then(|(s,)| s))
}

/// The PostgreSQL server's time, unix microseconds.
async fn database_now_on(conn: &mut sqlx::pool::PoolConnection<sqlx::Any>) -> Result<i64> {
    let (us,): (i64,) = sqlx::query_as(
        "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000) AS BIGINT)",
    )
    .fetch_one(&mut **conn)
    .await?;
    Ok(us)
}

/// Reads and bumps a named counter in the current transaction (gapless numbering: the row
/// lock / single writer serialises issuers, and a rolled-back transaction gives the number
/// back).
pub async fn next_counter<C: SqlConn>(conn: &mut C, name: &str) -> Result<i64> {
    next_counter_by(conn, name, 1).await
}

/// Takes the next `count` values of a named counter; returns the last of them.
pub async fn next_counter_by<C: SqlConn>(conn: &mut C, name: &str, count: i64) -> Result<i64> {
    conn.fetch_int(
        "UPDATE counters SET value = value + $2 WHERE name = $1 RETURNING value",
        vals![name, count],
    )
    .await?
    .ok_or(StoreError::NotFound)
}

/// The current value of a named counter.
pub async fn counter<'e, E: Executor<'e, Database = Any>>(db: E, name: &str) -> Result<i64> {
    let v: Option<i64> = sqlx::query_scalar("SELECT value FROM counters WHERE name = $1")
        .bind(name)
        .fetch_optional(db)
        .await?;
    Ok(v.unwrap_or(0))
}

/// Parses a stored id or value, turning failures into [`StoreError::Corrupt`].
pub(crate) fn parse<T: FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>()
        .map_err(|e| StoreError::Corrupt(format!("{s:?}: {e}")))
}

#[cfg(test)]
mod redact_tests {
    /// A libpq keyword/value string given where a URL is expected keeps no password
    /// (found by the copy audit: it was printed whole).
    #[test]
    fn passwords_of_keyword_strings_are_masked() {
        let r = super::redact_url;
        assert_eq!(
            r("host=127.0.0.1 user=lodge password=S3cret dbname=lodge"),
            "host=127.0.0.1 user=lodge password=*** dbname=lodge"
        );
        assert_eq!(
            r("host=h PASSWORD = 'a b\\' c' sslpassword=x"),
            "host=h PASSWORD = *** sslpassword=***"
        );
        assert_eq!(r("password="), "password=***");
        assert_eq!(r("host=h passwordless=1"), "host=h passwordless=1");
        assert_eq!(r("sqlite:lodge.db"), "sqlite:lodge.db");
        assert_eq!(r("password=pé ü"), "password=*** ü");
    }

    #[test]
    fn passwords_are_masked_wherever_the_url_carries_them() {
        let r = super::redact_url;
        assert_eq!(
            r("postgres://lodge:Pw@127.0.0.1:5432/db"),
            "postgres://lodge:***@127.0.0.1:5432/db"
        );
        assert_eq!(r("postgres://lodge@h/db"), "postgres://lodge@h/db");
        assert_eq!(
            r("postgres://h/db?user=lodge&password=S3cret&sslmode=require"),
            "postgres://h/db?user=lodge&password=***&sslmode=require"
        );
        assert_eq!(
            r("postgres://h/db?PASSWORD=x@y"),
            "postgres://h/db?PASSWORD=***"
        );
        assert_eq!(
            r("postgres://u:p%40ss@h/db?sslpassword=k"),
            "postgres://u:***@h/db?sslpassword=***"
        );
        assert_eq!(r("sqlite:///tmp/lodge.db"), "sqlite:///tmp/lodge.db");
        assert_eq!(r("sqlite::memory:"), "sqlite::memory:");
    }
}
