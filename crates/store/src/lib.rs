//! Lodge's storage layer: every SQL statement and both migration trees live here.
//!
//! One schema and one set of statements serve SQLite and PostgreSQL through sqlx's `Any`
//! driver (`$n` placeholders work on both). SQLite runs with WAL, `synchronous=FULL`, foreign
//! keys on and a single writer connection; PostgreSQL uses one pool for reads and writes.
//! Statements are free functions generic over an executor, so a service can run several of
//! them in one transaction (`Store::begin`). The order path's statements are generic over
//! [`SqlConn`] instead, so that on SQLite a whole group commit of orders runs on the batch
//! writer ([`Store::batch`], see [`conn`]).

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{ConnectOptions, Executor};

pub mod billing;
pub mod catalog;
pub mod checks;
pub mod conn;
pub mod deferred;
pub mod hosting;
pub mod idempotency;
pub mod jobs;
pub mod keys;
pub mod orgs;
pub mod servers;
pub mod users;

pub use conn::{run_ready, BatchConn, Cols, ReadConn, SqlConn, Val};
pub use sqlx::{Acquire, Any, AnyConnection, AnyPool, Transaction};

/// A transaction on either engine.
pub type Tx = Transaction<'static, Any>;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

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

/// Storage errors. Constraint violations carry the constraint (or column) that failed so the
/// HTTP dialects can turn them into field errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("unique constraint violated: {0}")]
    Conflict(String),
    #[error("check constraint violated: {0}")]
    Check(String),
    #[error("not found")]
    NotFound,
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Db(sqlx::Error),
    #[error("database: {0}")]
    Sqlite(rusqlite::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::RowNotFound = e {
            return StoreError::NotFound;
        }
        if let sqlx::Error::ColumnDecode { index, source } = &e {
            return StoreError::Corrupt(format!("column {index}: {source}"));
        }
        if let Some(db) = e.as_database_error() {
            let what = db
                .constraint()
                .map(str::to_owned)
                .unwrap_or_else(|| db.message().to_owned());
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => return StoreError::Conflict(what),
                sqlx::error::ErrorKind::CheckViolation => return StoreError::Check(what),
                _ => {}
            }
            // SQLite reports CHECK failures without a kind in some versions.
            if db.message().starts_with("CHECK constraint failed") {
                return StoreError::Check(what);
            }
        }
        StoreError::Db(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(f, msg)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                let what = msg.clone().unwrap_or_else(|| f.to_string());
                // The same messages sqlx reports for SQLite ("UNIQUE constraint failed: …").
                if what.starts_with("UNIQUE") {
                    StoreError::Conflict(what)
                } else if what.starts_with("CHECK") {
                    StoreError::Check(what)
                } else {
                    StoreError::Sqlite(e)
                }
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

impl StoreError {
    /// Whether this is a unique violation whose constraint or message mentions `needle`.
    pub fn is_conflict_on(&self, needle: &str) -> bool {
        matches!(self, StoreError::Conflict(w) if w.contains(needle))
    }

    /// Whether the transaction failed only because of other transactions (a PostgreSQL
    /// deadlock or serialization failure), so running it again may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(e) => e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "40P01" || c == "40001"),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Removes the password from a database URL so it can be logged.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
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
    batch: Option<conn::BatchWriter>,
    /// SQLite's inline read connections ([`ReadConn`]), on a file database.
    inline_reads: Option<std::sync::Arc<conn::ReadPool>>,
}

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://…`). Does not migrate.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let engine = Engine::from_url(url)?;
        match engine {
            Engine::Sqlite => {
                let url = if url.contains("mode=") {
                    url.to_owned()
                } else if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                };
                let opts = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
                let write = sqlite_pool(1)
                    .connect_with(opts.clone())
                    .await
                    .map_err(StoreError::from)?;
                // WAL must be set before readers open the file.
                let journal: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                    .fetch_one(&write)
                    .await?;
                let read = sqlite_pool(16).connect_with(opts).await?;
                // The batch writer opens the same file (an in-memory database has none).
                let file: Option<String> =
                    sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                        .fetch_optional(&write)
                        .await?;
                let file = file.filter(|f| !f.is_empty());
                let batch = match &file {
                    Some(f) => Some(conn::BatchWriter::start(std::path::Path::new(f))?),
                    None => None,
                };
                // Inline reads never wait for the writer only in WAL mode.
                let inline_reads = file
                    .filter(|_| journal.eq_ignore_ascii_case("wal"))
                    .map(|f| std::sync::Arc::new(conn::ReadPool::new(std::path::Path::new(&f))));
                Ok(Store {
                    engine,
                    read,
                    write,
                    batch,
                    inline_reads,
                })
            }
            Engine::Postgres => {
                let opts = AnyConnectOptions::from_str(url)?.disable_statement_logging();
                let pool = AnyPoolOptions::new()
                    .max_connections(32)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts)
                    .await?;
                Ok(Store {
                    engine,
                    read: pool.clone(),
                    write: pool,
                    batch: None,
                    inline_reads: None,
                })
            }
        }
    }

    /// Connects and applies the engine's migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<()> {
        let mut conn = self.write.acquire().await?;
        match self.engine {
            Engine::Sqlite => {
                SQLITE_MIGRATIONS.run(&mut *conn).await?;
                rebuild_order_tables(&mut conn).await?;
            }
            Engine::Postgres => POSTGRES_MIGRATIONS.run(&mut *conn).await?,
        }
        Ok(())
    }

    pub fn engine(&self) -> Engine {
        self.engine
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
    pub async fn begin(&self) -> Result<Tx> {
        Ok(self.write.begin().await?)
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

    /// `SELECT 1` on the reader and the writer: the readiness check.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// A pool of connections to the SQLite file. No ping before each acquire (sqlx's default):
/// a connection to a local file does not go stale, and the ping is a round trip to the
/// connection's worker thread on every acquire, which the batch writer's callers pay once
/// per group commit.
fn sqlite_pool(max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;",
                )
                .await?;
                Ok(())
            })
        })
}

/// The SQLite tables every order writes, rebuilt once by [`rebuild_order_tables`] into the
/// form [`wanted_table`] gives their definitions.
const ORDER_TABLES: [&str; 8] = [
    "orders",
    "domains",
    "hosting",
    "hosting_history",
    "invoices",
    "invoice_lines",
    "credit_ledger",
    "jobs",
];

/// Rebuilds the tables every order writes where their stored definition, or one of their
/// indexes', is not yet in the form [`wanted_table`] and [`expand_in_lists`] give it (once;
/// a database already in that form is not touched). Two changes, each of which cost the
/// batch writer time on every order:
/// - No `AUTOINCREMENT` (migrations 0001 and 0002 create it): with it each `INSERT` looked
///   the table up in `sqlite_sequence` and wrote its high-water mark back, about a tenth of
///   the writer's time per order. Without it a new row takes the largest rowid plus one, the
///   same number, as rows of these tables are never deleted
///   (<https://sqlite.org/autoinc.html>); a table whose high-water mark is above its largest
///   id anyway keeps the keyword, so no id is ever given twice.
/// - No `IN` list of three or more values in a `CHECK` or a partial index's `WHERE`:
///   SQLite evaluates one through a temporary b-tree it builds and frees for every row
///   written, about a fourteenth of the writer's time. The same test written with `=` and
///   `OR` is a few comparisons.
///
/// SQLite cannot alter a column or a constraint, so each table is rebuilt by its documented
/// procedure (<https://sqlite.org/lang_altertable.html#otheralter>): with foreign keys off,
/// in one `BEGIN IMMEDIATE` transaction, a new table from the wanted definition, the rows
/// copied in rowid order, the old table dropped, the new one renamed and its indexes created
/// again in their wanted form; `foreign_key_check` must then find no broken reference that
/// was not there before, or nothing changes. Not an sqlx migration: sqlx runs those inside a
/// transaction, where foreign keys cannot be turned off, and with them on, dropping a table
/// checks every row that references it (some references have no index: hours on a database
/// of a million orders).
async fn rebuild_order_tables(conn: &mut sqlx::pool::PoolConnection<sqlx::Any>) -> Result<()> {
    if tables_to_rebuild(conn).await?.is_empty() {
        return Ok(());
    }
    // A new database (migrations 0001 and 0002 create the old forms) rebuilds its empty
    // tables in no time; an existing one may pause its start for a while: say so.
    let has_orders: i64 = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orders)")
        .fetch_one(&mut **conn)
        .await?;
    let has_orders = has_orders != 0;
    if has_orders {
        tracing::info!(
            "rebuilding the order tables in their faster form (once; about a minute per million orders)"
        );
    }
    let started = std::time::Instant::now();
    conn.execute("PRAGMA foreign_keys = OFF").await?;
    let rebuilt = rebuild_tables(conn).await;
    let restored = conn.execute("PRAGMA foreign_keys = ON").await;
    if restored.is_err() {
        // Never hand the writer back to the pool without its foreign keys.
        conn.close_on_drop();
    }
    let names = rebuilt?;
    restored?;
    if has_orders {
        tracing::info!(
            tables = ?names,
            seconds = started.elapsed().as_secs_f64(),
            "order tables rebuilt"
        );
    }
    // The rebuild went through the WAL; give its space back where no reader holds it.
    let _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
    Ok(())
}

/// One table to rebuild: its name, the body of its wanted definition (after the table
/// name), its indexes' wanted definitions, and the high-water mark it keeps when it keeps
/// `AUTOINCREMENT`.
#[derive(Debug)]
struct Rebuild {
    table: &'static str,
    body: String,
    indexes: Vec<String>,
    high_water: Option<i64>,
}

/// The wanted definition of a table from its stored one: without `AUTOINCREMENT` unless
/// `keep_autoincrement`, with its `IN` lists expanded.
fn wanted_table(sql: &str, keep_autoincrement: bool) -> String {
    let sql = if keep_autoincrement {
        sql.to_owned()
    } else {
        sql.replace("PRIMARY KEY AUTOINCREMENT", "PRIMARY KEY")
    };
    expand_in_lists(&sql)
}

/// `sql` with each `column IN (a, b, c, ...)` of three or more literal values written as
/// `(column = a OR column = b OR ...)`: the same test, which SQLite evaluates without a
/// temporary b-tree. Only a bare column that opens a condition (at the start, or after
/// `(`, `WHERE`, `AND` or `OR`) is expanded, outside string literals, quoted names and
/// comments; lists of one or two values (SQLite compares those directly), lists of
/// anything but plain literals, `NOT IN` and any other left-hand side are left as they
/// are.
pub(crate) fn expand_in_lists(sql: &str) -> String {
    const IN: &str = " IN (";
    let literal = |s: &str| {
        let quoted = s.len() >= 2
            && s.starts_with('\'')
            && s.ends_with('\'')
            && !s[1..s.len() - 1].contains('\'');
        quoted || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    };
    let ends_with_word = |text: &str, word: &str| {
        text.len()
            .checked_sub(word.len())
            .and_then(|at| text.get(at..).map(|tail| (at, tail)))
            .is_some_and(|(at, tail)| {
                tail.eq_ignore_ascii_case(word)
                    && !text[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
    };
    let code = code_bytes(sql);
    let mut out = String::with_capacity(sql.len() * 2);
    // `sql[..copied]` is in `out`; the next match is looked for from `from`.
    let (mut copied, mut from) = (0, 0);
    while let Some(found) = sql[from..].find(IN) {
        let at = from + found;
        let list_start = at + IN.len();
        from = list_start;
        let column_start = sql[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let column = &sql[column_start..at];
        let before = sql[..column_start].trim_end();
        let opens = before.is_empty()
            || before.ends_with('(')
            || ["WHERE", "AND", "OR"]
                .iter()
                .any(|w| ends_with_word(before, w));
        let Some(list_len) = sql[list_start..].find(')') else {
            break;
        };
        let items: Vec<&str> = sql[list_start..list_start + list_len]
            .split(',')
            .map(str::trim)
            .collect();
        let expand = code[at]
            && column_start >= copied
            && column.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && code[column_start]
            && !column.eq_ignore_ascii_case("NOT")
            && opens
            && items.len() > 2
            && items.iter().all(|i| literal(i));
        if !expand {
            continue;
        }
        out.push_str(&sql[copied..column_start]);
        out.push('(');
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                out.push_str(" OR ");
            }
            out.push_str(column);
            out.push_str(" = ");
            out.push_str(item);
        }
        out.push(')');
        copied = list_start + list_len + 1;
        from = copied;
    }
    out.push_str(&sql[copied..]);
    out
}

/// For each byte of `sql`, whether it is SQL text proper: not inside a string literal, a
/// quoted name (`"…"`, `[…]`, `` `…` ``) or a comment (`-- …`, `/* … */`).
fn code_bytes(sql: &str) -> Vec<bool> {
    let b = sql.as_bytes();
    let mut code = vec![true; b.len()];
    let mut i = 0;
    while i < b.len() {
        let end = match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                // A doubled quote inside stands for one.
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => break b.len(),
                        Some(&c) if c == q && b.get(j + 1) == Some(&q) => j += 2,
                        Some(&c) if c == q => break j + 1,
                        Some(_) => j += 1,
                    }
                }
            }
            b'[' => b[i..]
                .iter()
                .position(|&c| c == b']')
                .map_or(b.len(), |p| i + p + 1),
            b'-' if b.get(i + 1) == Some(&b'-') => b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p + 1),
            b'/' if b.get(i + 1) == Some(&b'*') => b[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(b.len(), |p| i + 2 + p + 2),
            _ => {
                i += 1;
                continue;
            }
        };
        code[i..end].fill(false);
        i = end;
    }
    code
}

/// The tables of [`ORDER_TABLES`] whose definition or one of whose indexes' is not in its
/// wanted form. A table keeps `AUTOINCREMENT` where its high-water mark is above its
/// largest id (rows deleted at the end, whose ids must not be given again).
async fn tables_to_rebuild(conn: &mut sqlx::AnyConnection) -> Result<Vec<Rebuild>> {
    let mut tables = Vec::new();
    for table in ORDER_TABLES {
        let sql: Option<String> =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1")
                .bind(table)
                .fetch_optional(&mut *conn)
                .await?;
        let Some(sql) = sql else {
            continue;
        };
        let mut keep_high_water = None;
        if sql.contains("AUTOINCREMENT") {
            let high_water: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1")
                    .bind(table)
                    .fetch_optional(&mut *conn)
                    .await?;
            let largest: Option<i64> =
                sqlx::query_scalar(&format!("SELECT MAX(rowid) FROM {table}"))
                    .fetch_one(&mut *conn)
                    .await?;
            if high_water.unwrap_or(0) > largest.unwrap_or(0) {
                tracing::debug!(
                    table,
                    "keeps AUTOINCREMENT: rows above its largest id were deleted"
                );
                keep_high_water = high_water;
            }
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL ORDER BY name",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        let wanted = wanted_table(&sql, keep_high_water.is_some());
        let wanted_indexes: Vec<String> = indexes.iter().map(|i| expand_in_lists(i)).collect();
        if wanted == sql && wanted_indexes == indexes {
            continue;
        }
        // A table renamed by an earlier rebuild is stored with its name quoted.
        let body = [
            format!("CREATE TABLE {table} ("),
            format!("CREATE TABLE \"{table}\" ("),
        ]
        .iter()
        .find_map(|prefix| wanted.strip_prefix(prefix.as_str()))
        .ok_or_else(|| StoreError::Corrupt(format!("unexpected definition of {table}: {sql}")))?
        .to_owned();
        tables.push(Rebuild {
            table,
            body,
            indexes: wanted_indexes,
            high_water: keep_high_water,
        });
    }
    Ok(tables)
}

/// A reference `foreign_key_check` finds broken: table, rowid, parent table, key number.
type BrokenReference = (String, Option<i64>, String, i64);

async fn broken_references(
    conn: &mut sqlx::AnyConnection,
) -> Result<std::collections::BTreeSet<BrokenReference>> {
    let rows: Vec<BrokenReference> =
        sqlx::query_as("SELECT \"table\", rowid, parent, fkid FROM pragma_foreign_key_check")
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The rebuild of [`rebuild_order_tables`], in one transaction that holds the write lock
/// from its start (rows another process writes meanwhile wait for it, and are not lost).
/// What to rebuild is read again under that lock, so a process that opened the database
/// at the same moment and rebuilt it first (or a newer build, which may have changed the
/// schema since) is seen, and its work is neither done twice nor undone. Returns the
/// tables rebuilt.
async fn rebuild_tables(conn: &mut sqlx::AnyConnection) -> Result<Vec<&'static str>> {
    let mut tx = sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await?;
    let tables = tables_to_rebuild(&mut tx).await?;
    if tables.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let broken_before = broken_references(&mut tx).await?;
    for Rebuild {
        table,
        body,
        indexes,
        high_water,
    } in &tables
    {
        tx.execute(format!("CREATE TABLE lodge_rebuild ({body}").as_str())
            .await?;
        tx.execute(
            format!("INSERT INTO lodge_rebuild SELECT * FROM {table} ORDER BY rowid").as_str(),
        )
        .await?;
        tx.execute(format!("DROP TABLE {table}").as_str()).await?;
        tx.execute(format!("ALTER TABLE lodge_rebuild RENAME TO {table}").as_str())
            .await?;
        if let Some(seq) = high_water {
            // The copy set the new table's mark to its largest id; the old one was higher.
            sqlx::query("DELETE FROM sqlite_sequence WHERE name = $1")
                .bind(*table)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ($1, $2)")
                .bind(*table)
                .bind(*seq)
                .execute(&mut *tx)
                .await?;
        }
        for index in indexes {
            tx.execute(index.as_str()).await?;
        }
    }
    let broken_after = broken_references(&mut tx).await?;
    let broken: Vec<_> = broken_after.difference(&broken_before).collect();
    if !broken.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "rebuilding the order tables would break references {broken:?}; nothing changed"
        )));
    }
    tx.commit().await?;
    Ok(tables.iter().map(|t| t.table).collect())
}

/// Unix microseconds for a timestamp (the stored form of every instant).
pub fn micros(ts: jiff::Timestamp) -> i64 {
    ts.as_microsecond()
}

/// The timestamp stored as unix microseconds.
pub fn from_micros(us: i64) -> Result<jiff::Timestamp> {
    jiff::Timestamp::from_microsecond(us).map_err(|e| StoreError::Corrupt(e.to_string()))
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

/// The bare durable-commit rate of an engine with Lodge's settings: `clients` connections
/// each committing one small row per transaction into a scratch table, for `duration`.
/// Returns commits per second. On SQLite the scratch table lives in a sibling file
/// (`<db>.commit-bench`) with the same pragmas, and the commits run on the batch writer (as
/// orders do); on PostgreSQL in the same database (dropped afterwards).
pub async fn bare_commit_rate(
    url: &str,
    clients: usize,
    duration: std::time::Duration,
) -> Result<f64> {
    let engine = Engine::from_url(url)?;
    let url = match engine {
        Engine::Sqlite => {
            let (path, query) = url.split_once('?').unwrap_or((url, ""));
            let q = if query.is_empty() {
                String::new()
            } else {
                format!("?{query}")
            };
            format!("{path}.commit-bench{q}")
        }
        Engine::Postgres => url.to_owned(),
    };
    let store = Store::connect(&url).await?;
    sqlx::query("DROP TABLE IF EXISTS lodge_commit_bench")
        .execute(store.writer())
        .await?;
    sqlx::query("CREATE TABLE lodge_commit_bench (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
        .execute(store.writer())
        .await?;
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let start = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let clients = if engine == Engine::Sqlite {
        1
    } else {
        clients.max(1)
    };
    let total = if store.has_batch_writer() {
        // SQLite: one row per transaction on the batch writer, the path orders take, with
        // no thread hand-off per statement — the engine's own ceiling.
        store
            .batch(move |db| {
                let mut done = 0u64;
                while std::time::Instant::now() < start + duration {
                    let id = i64::try_from(done).unwrap_or(i64::MAX);
                    db.transaction(|db| {
                        run_ready(db.exec(
                            "INSERT INTO lodge_commit_bench (id, v) VALUES ($1, 'x')",
                            vals![id],
                        ))
                    })?;
                    done += 1;
                }
                Ok::<u64, StoreError>(done)
            })
            .await??
    } else {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let pool = store.writer().clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = 0u64;
                while tokio::time::Instant::now() < deadline {
                    let id = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut tx = pool.begin().await?;
                    sqlx::query("INSERT INTO lodge_commit_bench (id, v) VALUES ($1, 'x')")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    done += 1;
                }
                Ok::<u64, sqlx::Error>(done)
            }));
        }
        let mut total = 0u64;
        for t in tasks {
            total += t
                .await
                .map_err(|e| StoreError::Config(format!("commit bench task: {e}")))??;
        }
        total
    };
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    sqlx::query("DROP TABLE IF EXISTS lodge_commit_bench")
        .execute(store.writer())
        .await?;
    store.close().await;
    #[allow(clippy::cast_precision_loss)]
    Ok(total as f64 / secs)
}

#[cfg(test)]
mod tests {
    use crate::SqlConn;

    /// The background scans of unpaid invoices and due cancellations read their partial
    /// indexes (every order skips writing to them), not the tables; so do the checks that a
    /// name is free, which must repeat their index's condition word for word, and the pass
    /// that forgets old idempotency keys.
    #[tokio::test]
    async fn queries_read_their_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::open(&format!("sqlite://{}/p.db", dir.path().display()))
            .await
            .unwrap();
        for (sql, index) in [
            (crate::billing::EXPIRED_FIRST_INVOICES, "invoices_unpaid"),
            (crate::hosting::CANCELLATIONS_DUE, "hosting_cancel_due"),
            (&crate::hosting::LIVE_HOSTING_FOR_NAME, "hosting_live_name"),
            (&crate::hosting::LIVE_DOMAIN_FOR_NAME, "domains_live_name"),
            (
                &crate::idempotency::FORGET_BEFORE,
                "idempotency_keys_created",
            ),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .bind(0_i64)
                    .fetch_all(store.reader())
                    .await
                    .unwrap();
            let detail: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
            assert!(
                detail.iter().any(|d| d.contains(&format!("INDEX {index}"))),
                "{sql}: {detail:?}"
            );
            assert!(
                !detail.iter().any(|d| d.starts_with("SCAN")),
                "{sql}: {detail:?}"
            );
        }
    }

    #[tokio::test]
    async fn bare_commit_rate_on_sqlite_counts_commits_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/b.db", dir.path().display());
        let rate = super::bare_commit_rate(&url, 4, std::time::Duration::from_millis(200))
            .await
            .unwrap();
        assert!(rate > 0.0, "{rate}");
        // The scratch table lived in a sibling file and was dropped afterwards.
        let store = super::Store::connect(&format!("{url}.commit-bench"))
            .await
            .unwrap();
        assert!(store.has_batch_writer());
        let left: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'lodge_commit_bench'")
                .fetch_optional(store.reader())
                .await
                .unwrap();
        assert_eq!(left, None);
    }

    /// Both statement paths read a row the same way: integers, text and NULL, column by
    /// column; a read connection sees what the writers committed and cannot write.
    #[tokio::test]
    async fn rows_read_alike_inline_and_through_sqlx() {
        use crate::{vals, Val};
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::connect(&format!("sqlite://{}/r.db", dir.path().display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, n INTEGER)")
            .execute(store.writer())
            .await
            .unwrap();
        sqlx::query("INSERT INTO t (id, name, n) VALUES (1, 'a', NULL), (2, NULL, -5)")
            .execute(store.writer())
            .await
            .unwrap();
        let sql = "SELECT id, name, n FROM t WHERE id = $1";
        let mut inline = store.read_conn().await.unwrap();
        assert!(inline.is_inline());
        let mut pooled = store.reader().acquire().await.unwrap();
        for (id, name, n) in [(1, Some("a"), None), (2, None, Some(-5))] {
            for row in [
                inline.fetch_row(sql, vals![id]).await.unwrap().unwrap(),
                pooled.fetch_row(sql, vals![id]).await.unwrap().unwrap(),
            ] {
                assert_eq!(row.len(), 3);
                assert_eq!(row[0], Val::Int(Some(id)));
                assert_eq!(row[1].text().unwrap(), name);
                assert_eq!(row[2].int().unwrap(), n);
            }
        }
        assert_eq!(inline.fetch_row(sql, vals![3]).await.unwrap(), None);
        assert!(inline.exec("DELETE FROM t", vals![]).await.is_err());
        drop(inline);
        // A connection given back is reused and sees later commits.
        sqlx::query("UPDATE t SET n = 7 WHERE id = 1")
            .execute(store.writer())
            .await
            .unwrap();
        let mut again = store.read_conn().await.unwrap();
        let n = again
            .fetch_int("SELECT n FROM t WHERE id = $1", vals![1])
            .await
            .unwrap();
        assert_eq!(n, Some(7));
    }

    /// The batch writer waits for a transaction open on the ordinary writer, so that one
    /// never finds its snapshot overtaken by a batch commit (SQLITE_BUSY_SNAPSHOT).
    #[tokio::test]
    async fn a_batch_waits_for_the_ordinary_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::connect(&format!("sqlite://{}/w.db", dir.path().display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(store.writer())
            .await
            .unwrap();
        let mut tx = store.begin().await.unwrap();
        let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let s = store.clone();
        let batch = tokio::spawn(async move {
            s.batch(|db| {
                db.transaction(|db| {
                    super::run_ready(db.exec("INSERT INTO t (id) VALUES ($1)", crate::vals![1]))
                })
            })
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!batch.is_finished(), "the batch ran beside an open write");
        sqlx::query("INSERT INTO t (id) VALUES ($1)")
            .bind(before + 2)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        batch.await.unwrap().unwrap().unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(n, 2);
    }

    /// Opening a database whose order tables have AUTOINCREMENT and `IN` lists (migrations
    /// 0001–0007) rebuilds them in their wanted form: on a database that already holds
    /// orders (and every kind of row referencing them), each row keeps its id and columns,
    /// every reference stays as it was, the indexes are the same but for their `IN` lists,
    /// the next row takes the next id, no insert into these tables builds a temporary
    /// b-tree, the checks still refuse what they refused, and the writer keeps its foreign
    /// keys. A table whose high-water mark is above its largest id keeps the keyword and
    /// the mark. A table renamed before (stored with its name quoted) is rebuilt too.
    /// Opening it again changes nothing.
    #[tokio::test]
    async fn opening_rebuilds_the_order_tables_and_keeps_every_row_and_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.db");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
            .unwrap();
        for m in super::SQLITE_MIGRATIONS.iter().filter(|m| m.version <= 7) {
            db.execute_batch(&m.sql).unwrap();
        }
        db.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                 installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
                 checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);",
        )
        .unwrap();
        for m in super::SQLITE_MIGRATIONS.iter().filter(|m| m.version <= 7) {
            db.execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES (?1, ?2, TRUE, ?3, 0)",
                rusqlite::params![m.version, m.description.as_ref(), m.checksum.as_ref()],
            )
            .unwrap();
        }
        db.execute_batch(
            "INSERT INTO organizations (id, name, credit_balance_minor, created_at, modified_at) VALUES ('org', 'O', 500, 1, 1);
             INSERT INTO projects (id, organization_id, name, is_default, created_at, modified_at) VALUES ('prj', 'org', 'P', 1, 1, 1);
             INSERT INTO plan_groups (id, slug, name, created_at, modified_at) VALUES ('grp', 'g', 'G', 1, 1);
             INSERT INTO plans (legacy_id, id, group_id, slug, name, created_at, modified_at) VALUES (1, 'pln', 'grp', 'p', 'P', 1, 1);
             INSERT INTO orders (id, uuid, organization_id, project_id, status, source, currency, actor, created_at, modified_at)
                 VALUES (7, 'o7', 'org', 'prj', 'active', 'v1', 'USD', 'a', 1, 1),
                        (9, 'o9', 'org', 'prj', 'pending', 'v1', 'USD', 'a', 2, 2);
             INSERT INTO domains (legacy_id, id, organization_id, project_id, order_id, name, sld, tld, status, registrar, created_at, modified_at)
                 VALUES (3, 'dom', 'org', 'prj', 7, 'a.com', 'a', 'com', 'pending_registration', 'none', 1, 1);
             INSERT INTO hosting (legacy_id, id, organization_id, project_id, order_id, plan_id, domain_name, domain_id, status,
                     billing_cycle, recurring_minor, currency, created_at, modified_at, comment)
                 VALUES (5, 'hst', 'org', 'prj', 7, 'pln', 'a.com', 'dom', 'provisioning', 'monthly', 100, 'USD', 1, 1, 'hi'),
                        (6, 'hs2', 'org', 'prj', 9, 'pln', 'b.com', NULL, 'pending', 'monthly', 100, 'USD', 2, 2, '');
             INSERT INTO hosting_history (id, hosting_id, to_status, actor, created_at) VALUES (11, 'hst', 'provisioning', 'a', 1);
             INSERT INTO invoices (id, number, organization_id, order_id, kind, status, currency, subtotal_minor, total_minor,
                     credit_applied_minor, payment_token, due_date, issued_at, created_at, modified_at)
                 VALUES (4, 'INV-000001', 'org', 7, 'first', 'paid', 'USD', 100, 100, 100, 't4', '2026-01-01', 1, 1, 1),
                        (8, 'INV-000002', 'org', 9, 'first', 'unpaid', 'USD', 100, 100, 0, 't8', '2026-01-01', 2, 2, 2);
             INSERT INTO invoice_lines (id, invoice_id, position, kind, description, service_id, period_start, amount_minor)
                 VALUES (12, 4, 0, 'plan', 'Plan', 'hst', '2026-01-01', 100);
             INSERT INTO credit_ledger (id, organization_id, kind, amount_minor, balance_after_minor, currency, invoice_id, actor, created_at)
                 VALUES (2, 'org', 'deposit', 600, 600, 'USD', NULL, 'a', 1),
                        (13, 'org', 'applied', -100, 500, 'USD', 4, 'a', 1);
             INSERT INTO payments (id, invoice_id, organization_id, method, reference, amount_minor, currency, actor, created_at)
                 VALUES ('pay', 4, 'org', 'credit', 'r', 100, 'USD', 'a', 1);
             INSERT INTO jobs (id, kind, payload, status, run_at, dedupe_key, created_at, modified_at)
                 VALUES (21, 'provision', '{}', 'queued', 1, 'k', 1, 1);",
        )
        .unwrap();
        // A reference broken before the upgrade (a restore made with foreign keys off) does
        // not stop it; jobs above id 21 were deleted, so jobs keeps its AUTOINCREMENT.
        db.execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO payments (id, invoice_id, organization_id, method, reference, amount_minor, currency, actor, created_at)
                 VALUES ('lost', 99, 'org', 'card', 'x', 5, 'USD', 'a', 1);
             PRAGMA foreign_keys = ON;
             UPDATE sqlite_sequence SET seq = 50 WHERE name = 'jobs';
             ALTER TABLE orders RENAME TO orders_before;
             ALTER TABLE orders_before RENAME TO orders;",
        )
        .unwrap();
        let dump = |db: &rusqlite::Connection| -> Vec<String> {
            let mut out = Vec::new();
            for t in super::ORDER_TABLES.iter().chain(&["payments"]) {
                let mut st = db
                    .prepare(&format!("SELECT * FROM {t} ORDER BY rowid"))
                    .unwrap();
                let n = st.column_count();
                let rows = st
                    .query_map([], |r| {
                        let vals: Vec<String> = (0..n)
                            .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                            .collect();
                        Ok(format!("{t}: {}", vals.join(", ")))
                    })
                    .unwrap();
                out.extend(rows.map(|r| r.unwrap()));
            }
            out
        };
        let indexes = |db: &rusqlite::Connection| -> Vec<(String, String)> {
            let mut st = db
                .prepare("SELECT name, COALESCE(sql, ''), tbl_name FROM sqlite_master WHERE type = 'index' ORDER BY name")
                .unwrap();
            // The order tables' (later migrations may index other tables).
            st.query_map([], |r| {
                Ok((r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap()))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .filter(|(_, _, t): &(String, String, String)| {
                super::ORDER_TABLES.contains(&t.as_str())
            })
            .map(|(n, s, _)| (n, s))
            .collect()
        };
        let rows_before = dump(&db);
        let indexes_before: Vec<(String, String)> = indexes(&db)
            .into_iter()
            .map(|(name, sql)| (name, super::expand_in_lists(&sql)))
            .collect();
        assert!(
            indexes_before.iter().any(|(n, s)| n == "hosting_live_name"
                && s.ends_with("WHERE (status = 'pending' OR status = 'provisioning' OR status = 'active' OR status = 'suspended' OR status = 'failed')")),
            "{indexes_before:?}"
        );
        assert_eq!(rows_before.len(), 14, "{rows_before:?}");
        drop(db);

        for _ in 0..2 {
            let store = super::Store::open(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(store.writer())
                .await
                .unwrap();
            assert_eq!(fk, 1, "the writer lost its foreign keys");
            store.close().await;
        }
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
        assert_eq!(dump(&db), rows_before);
        assert_eq!(indexes(&db), indexes_before);
        let broken: Vec<String> = db
            .prepare("PRAGMA foreign_key_check")
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(broken, ["payments"]);
        let left: Vec<String> = db
            .prepare("SELECT name FROM sqlite_master WHERE sql LIKE '%AUTOINCREMENT%'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .filter(|t: &String| super::ORDER_TABLES.contains(&t.as_str()))
            .collect();
        assert_eq!(left, ["jobs"]);
        for t in super::ORDER_TABLES {
            let cols: Vec<String> = db
                .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            let insert = format!(
                "EXPLAIN INSERT INTO {t} ({}) VALUES ({})",
                cols.join(", "),
                vec!["NULL"; cols.len()].join(", ")
            );
            let ops: Vec<String> = db
                .prepare(&insert)
                .unwrap()
                .query_map([], |r| r.get(1))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            assert!(ops.iter().any(|o| o == "Insert"), "{t}: {ops:?}");
            assert!(!ops.iter().any(|o| o == "OpenEphemeral"), "{t}: {ops:?}");
        }
        let refused = db
            .execute("UPDATE hosting SET status = 'gone' WHERE id = 'hst'", [])
            .unwrap_err();
        assert!(
            refused.to_string().contains("CHECK constraint failed"),
            "{refused}"
        );
        assert!(db
            .query_row("SELECT COUNT(*) FROM lodge_rebuild", [], |r| r
                .get::<_, i64>(0))
            .is_err());
        db.execute_batch(
            "INSERT INTO orders (uuid, organization_id, project_id, status, source, currency, actor, created_at, modified_at)
                 VALUES ('o10', 'org', 'prj', 'pending', 'v1', 'USD', 'a', 3, 3);",
        )
        .unwrap();
        assert_eq!(db.last_insert_rowid(), 10);
        db.execute_batch(
            "INSERT INTO jobs (kind, payload, status, run_at, created_at, modified_at)
                 VALUES ('provision', '{}', 'queued', 1, 1, 1);",
        )
        .unwrap();
        assert_eq!(db.last_insert_rowid(), 51);
    }

    #[test]
    fn in_lists_of_three_literals_or_more_are_expanded() {
        use super::expand_in_lists as x;
        assert_eq!(
            x("status TEXT NOT NULL CHECK (status IN ('a', 'b', 'c')),"),
            "status TEXT NOT NULL CHECK ((status = 'a' OR status = 'b' OR status = 'c')),"
        );
        assert_eq!(
            x("CHECK (kind IN (1, 2, 3)) ON t (n) WHERE s IN ('x','y','z')"),
            "CHECK ((kind = 1 OR kind = 2 OR kind = 3)) ON t (n) WHERE (s = 'x' OR s = 'y' OR s = 'z')"
        );
        assert_eq!(
            x("WHERE a = 1 AND s IN ('a','b','c') OR\tt IN (1, 2, 3)"),
            "WHERE a = 1 AND (s = 'a' OR s = 'b' OR s = 'c') OR\t(t = 1 OR t = 2 OR t = 3)"
        );
        for same in [
            "CHECK (n + 1 IN (1, 2, 3))",
            "CHECK (s COLLATE NOCASE IN ('a', 'b', 'c'))",
            "WHERE h.status IN ('a', 'b', 'c')",
            "x TEXT DEFAULT 'y IN (1, 2, 3)' CHECK (x <> '')",
            "x TEXT, -- (s IN ('a', 'b', 'c'))\n y TEXT",
            "x TEXT /* (s IN ('a', 'b', 'c')) */",
            "CHECK (\"s IN ('a', 'b', 'c')\")",
            "CHECK (s IN ('it''s (a) IN (1, 2, 3)', 'b'))",
            "CHECK (1 IN (1, 2, 3))",
            "CHECK (flag IN (0, 1))",
            "CHECK (s NOT IN ('a', 'b', 'c'))",
            "CHECK (s IN ('a', 'b', lower(s)))",
            "CHECK (s IN ('a,b', 'c', 'd'))",
            "CHECK (s IN ('it''s', 'c', 'd'))",
            "CHECK (s IN (SELECT 1))",
            " IN ('a', 'b', 'c')",
            "CHECK (s IN ('a', 'b', 'c'",
        ] {
            assert_eq!(x(same), same);
        }
        let once = x("a IN ('p', 'q', 'r') AND b IN (1, 2, 3, 4)");
        assert_eq!(
            once,
            "(a = 'p' OR a = 'q' OR a = 'r') AND (b = 1 OR b = 2 OR b = 3 OR b = 4)"
        );
        assert_eq!(x(&once), once);
    }
}
