//! One statement interface over the two ways Lodge writes: a sqlx connection (either engine)
//! and SQLite's batch writer ([`BatchConn`], rusqlite on a thread of its own). The order
//! path's statements are written once, against [`SqlConn`], and run on both.
//!
//! Why two: sqlx runs each SQLite statement on the connection's worker thread and hands the
//! result back through a channel, so a statement costs two thread wake-ups. An order is a
//! dozen statements, and a group commit of 64 orders is several hundred hand-offs on the
//! single writer — that, not the disk, capped order placement. The batch writer runs a whole
//! group commit in one call on its own thread, with the same statements and savepoints.

use std::future::Future;
use std::path::Path;

use sqlx::{AnyConnection, Row};

use crate::{Result, StoreError};

/// A bound value. NULLs carry their type, as PostgreSQL needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(Some(v))
    }
}

impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        Val::Int(v)
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(Some(v.to_owned()))
    }
}

impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(Some(v))
    }
}

impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Self {
        Val::Text(v.map(str::to_owned))
    }
}

impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        Val::Text(v)
    }
}

/// `vals![a, b, c]`: the arguments of a statement, `$1`, `$2`, `$3`.
#[macro_export]
macro_rules! vals {
    ($($v:expr),* $(,)?) => { vec![$($crate::conn::Val::from($v)),*] };
}

/// A connection inside a transaction that runs `$n`-numbered statements.
pub trait SqlConn: Send {
    /// Whether this is PostgreSQL (for the few statements that differ, such as row locks).
    fn is_postgres(&self) -> bool;

    /// Whether a transaction on this connection holds the whole database's write lock from
    /// its start (SQLite's batch writer begins `IMMEDIATE`), so rows need no locks of their own.
    fn locks_database(&self) -> bool {
        false
    }

    /// Runs a statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, args: Vec<Val>) -> impl Future<Output = Result<u64>> + Send;

    /// The first column of the first row as an integer, if there is a row.
    fn fetch_int(
        &mut self,
        sql: &str,
        args: Vec<Val>,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// The first column of the first row as text, if there is a row.
    fn fetch_text(
        &mut self,
        sql: &str,
        args: Vec<Val>,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Every column of the first row (integers and text; NULL as `Val::Int(None)`).
    fn fetch_row(
        &mut self,
        sql: &str,
        args: Vec<Val>,
    ) -> impl Future<Output = Result<Option<Vec<Val>>>> + Send;

    /// Every row, every column (as [`SqlConn::fetch_row`]).
    fn fetch_rows(
        &mut self,
        sql: &str,
        args: Vec<Val>,
    ) -> impl Future<Output = Result<Vec<Vec<Val>>>> + Send;

    /// Runs `sql`, an `INSERT … VALUES (…)` of one row, now or later: a
    /// [`crate::deferred::Deferred`] connection holds the row and writes it with the others
    /// of the same statement when it is flushed, before the transaction commits. Only for
    /// rows that nothing in the transaction reads in the meantime. If such a row fails (a
    /// constraint), the failure comes at the flush, without telling whose row it was: the
    /// caller of the flush must be able to run the work again without deferred rows. Other
    /// connections run it now.
    fn insert_later(
        &mut self,
        sql: &'static str,
        args: Vec<Val>,
    ) -> impl Future<Output = Result<()>> + Send {
        async move { self.exec(sql, args).await.map(drop) }
    }

    /// Runs `sql`, an INSERT of one row without `RETURNING`, into a table whose integer key
    /// column `key` the database assigns, and returns the new row's key. SQLite's batch
    /// writer reads the new rowid instead: SQLite runs `RETURNING` through a temporary table
    /// of its own for every statement.
    fn insert_key(
        &mut self,
        sql: &str,
        key: &str,
        args: Vec<Val>,
    ) -> impl Future<Output = Result<i64>> + Send {
        let sql = format!("{sql} RETURNING {key}");
        async move {
            self.fetch_int(&sql, args)
                .await?
                .ok_or(StoreError::NotFound)
        }
    }
}

impl Val {
    /// The value as an integer (`None` for NULL); text is an error.
    pub fn int(&self) -> Result<Option<i64>> {
        match self {
            Val::Int(v) => Ok(*v),
            Val::Text(None) => Ok(None),
            Val::Text(Some(t)) => Err(StoreError::Corrupt(format!("{t:?} is not an integer"))),
        }
    }

    /// The value as text (`None` for NULL); an integer is an error.
    pub fn text(&self) -> Result<Option<&str>> {
        match self {
            Val::Text(v) => Ok(v.as_deref()),
            Val::Int(None) => Ok(None),
            Val::Int(Some(i)) => Err(StoreError::Corrupt(format!("{i} is not text"))),
        }
    }
}

/// Reads the columns of a row fetched with [`SqlConn::fetch_row`] in order.
#[derive(Debug)]
pub struct Cols {
    vals: std::vec::IntoIter<Val>,
}

impl Cols {
    pub fn new(row: Vec<Val>) -> Self {
        Cols {
            vals: row.into_iter(),
        }
    }

    fn next(&mut self) -> Result<Val> {
        self.vals
            .next()
            .ok_or_else(|| StoreError::Corrupt("a row has fewer columns than expected".into()))
    }

    pub fn int(&mut self) -> Result<i64> {
        self.next()?
            .int()?
            .ok_or_else(|| StoreError::Corrupt("NULL where an integer is required".into()))
    }

    pub fn text(&mut self) -> Result<String> {
        Ok(self
            .next()?
            .text()?
            .ok_or_else(|| StoreError::Corrupt("NULL where text is required".into()))?
            .to_owned())
    }

    /// An integer or NULL.
    pub fn opt_int(&mut self) -> Result<Option<i64>> {
        self.next()?.int()
    }

    /// Text or NULL.
    pub fn opt_text(&mut self) -> Result<Option<String>> {
        Ok(self.next()?.text()?.map(str::to_owned))
    }

    /// Text parsed into a type (an id).
    pub fn parse<T: std::str::FromStr>(&mut self) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        crate::parse(&self.text()?)
    }
}

/// Pads a statement's list of values to a power of two by repeating its last one, for
/// statements whose text grows with the list (`IN ($1, $2, …)`) and where a value twice
/// means what it means once: a few texts then serve every length, each prepared once per
/// connection (sqlx caches 100).
pub(crate) fn pad_to_power_of_two<T: Clone>(values: &mut Vec<T>) {
    if let Some(last) = values.last().cloned() {
        values.resize(values.len().next_power_of_two(), last);
    }
}

/// Opens the savepoint of one unit (an order) inside a batch's transaction.
pub async fn begin_unit<C: SqlConn>(conn: &mut C) -> Result<()> {
    conn.exec("SAVEPOINT unit", vec![]).await.map(drop)
}

/// Closes the unit opened by [`begin_unit`]: keeps its writes, or undoes them and leaves the
/// rest of the batch as it was.
pub async fn end_unit<C: SqlConn>(conn: &mut C, keep: bool) -> Result<()> {
    if !keep {
        conn.exec("ROLLBACK TO SAVEPOINT unit", vec![]).await?;
    }
    conn.exec("RELEASE SAVEPOINT unit", vec![]).await.map(drop)
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: Vec<Val>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a {
            Val::Int(v) => q.bind(v),
            Val::Text(v) => q.bind(v),
        };
    }
    q
}

impl SqlConn for AnyConnection {
    fn is_postgres(&self) -> bool {
        self.backend_name() == "PostgreSQL"
    }

    async fn exec(&mut self, sql: &str, args: Vec<Val>) -> Result<u64> {
        Ok(bind_all(sqlx::query(sql), args)
            .execute(self)
            .await?
            .rows_affected())
    }

    async fn fetch_int(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<i64>> {
        let row = bind_all(sqlx::query(sql), args)
            .fetch_optional(self)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }

    async fn fetch_text(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<String>> {
        let row = bind_all(sqlx::query(sql), args)
            .fetch_optional(self)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    async fn fetch_row(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<Vec<Val>>> {
        let row = bind_all(sqlx::query(sql), args)
            .fetch_optional(self)
            .await?;
        row.as_ref().map(any_row_vals).transpose()
    }

    async fn fetch_rows(&mut self, sql: &str, args: Vec<Val>) -> Result<Vec<Vec<Val>>> {
        let rows = bind_all(sqlx::query(sql), args).fetch_all(self).await?;
        rows.iter().map(any_row_vals).collect()
    }
}

fn any_row_vals(row: &sqlx::any::AnyRow) -> Result<Vec<Val>> {
    (0..row.len())
        .map(|i| match row.try_get::<Option<i64>, _>(i) {
            Ok(v) => Ok(Val::Int(v)),
            Err(_) => Ok(Val::Text(row.try_get::<Option<String>, _>(i)?)),
        })
        .collect()
}

impl SqlConn for sqlx::Transaction<'_, sqlx::Any> {
    fn is_postgres(&self) -> bool {
        (**self).is_postgres()
    }

    async fn exec(&mut self, sql: &str, args: Vec<Val>) -> Result<u64> {
        (**self).exec(sql, args).await
    }

    async fn fetch_int(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<i64>> {
        (**self).fetch_int(sql, args).await
    }

    async fn fetch_text(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<String>> {
        (**self).fetch_text(sql, args).await
    }

    async fn fetch_row(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<Vec<Val>>> {
        (**self).fetch_row(sql, args).await
    }

    async fn fetch_rows(&mut self, sql: &str, args: Vec<Val>) -> Result<Vec<Vec<Val>>> {
        (**self).fetch_rows(sql, args).await
    }
}

/// SQLite's batch writer connection: statements run synchronously on the calling thread (the
/// writer's own), each prepared once and cached. Its futures never wait.
pub struct BatchConn {
    conn: rusqlite::Connection,
}

impl std::fmt::Debug for BatchConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchConn")
    }
}

impl BatchConn {
    /// Opens the database file with Lodge's SQLite settings (WAL is already set on the file
    /// by the sqlx writer; `synchronous` and foreign keys are per connection).
    pub(crate) fn open(path: &Path) -> Result<Self> {
        // A savepoint (an order's, when a batch runs again with one per order) journals the
        // pages it changes; in memory, so undo records never go through a temporary file. A
        // larger page cache keeps the indexes an order touches in memory as the database
        // grows. No automatic checkpoints: the batch writer's checkpointer runs them
        // ([`BatchWriter`]).
        Self::connect(
            path,
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;
             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;
             PRAGMA wal_autocheckpoint = 0;",
            64,
        )
    }

    /// Opens the connection that checkpoints for the batch writer (`synchronous=FULL`: the
    /// database file is synced before the WAL is reused).
    fn open_checkpointer(path: &Path) -> Result<Self> {
        Self::connect(
            path,
            "PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;",
            1,
        )
    }

    /// Checkpoints the WAL (`PASSIVE`, `RESTART`…): whether it was blocked, the WAL's
    /// frames, and how many of them are now in the database file.
    fn checkpoint(&self, mode: &str) -> Result<(i64, i64, i64)> {
        Ok(self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?)
    }

    /// Copies what is left of the WAL into the database and has the next write start the WAL
    /// over (`RESTART`), waiting at most a few milliseconds for readers still on the old WAL:
    /// if they are not done, it is tried again later, and the writer is not held up.
    fn restart_wal(&self) -> Result<()> {
        self.conn
            .busy_timeout(std::time::Duration::from_millis(10))?;
        let done = self.checkpoint("RESTART");
        self.conn.busy_timeout(std::time::Duration::from_secs(10))?;
        done.map(drop)
    }

    /// Opens a connection for reads only (`query_only`), for [`ReadConn`].
    fn open_reader(path: &Path) -> Result<Self> {
        Self::connect(
            path,
            "PRAGMA query_only = ON; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
            32,
        )
    }

    fn connect(path: &Path, pragmas: &str, cached_statements: usize) -> Result<Self> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(pragmas)?;
        conn.set_prepared_statement_cache_capacity(cached_statements);
        Ok(BatchConn { conn })
    }

    /// `BEGIN IMMEDIATE`: takes the write lock now.
    pub fn begin(&mut self) -> Result<()> {
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }

    /// Commits; with `synchronous=FULL` it returns once the commit is on disk.
    pub fn commit(&mut self) -> Result<()> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    pub fn rollback(&mut self) -> Result<()> {
        Ok(self.conn.execute_batch("ROLLBACK")?)
    }

    /// Whether a transaction is open (after an error, SQLite may have rolled it back).
    pub fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Runs `f` in one transaction: `BEGIN IMMEDIATE`, then `COMMIT` if it succeeds (on disk
    /// when this returns), or a rollback of whatever is still open if it or the commit fails.
    pub fn transaction<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        let done = self
            .begin()
            .map_err(E::from)
            .and_then(|()| f(self))
            .and_then(|v| self.commit().map(|()| v).map_err(E::from));
        if done.is_err() && self.in_transaction() {
            let _ = self.rollback();
        }
        done
    }

    fn prepare(&self, sql: &str, args: Vec<Val>) -> Result<rusqlite::CachedStatement<'_>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut args: Vec<Option<Val>> = args.into_iter().map(Some).collect();
        for i in 1..=stmt.parameter_count() {
            // `$n` is a named parameter to SQLite; bind each by its number.
            let n = stmt
                .parameter_name(i)
                .and_then(|name| name.strip_prefix('$'))
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| StoreError::Config(format!("parameter {i} of {sql:?} is not $n")))?;
            let v = args
                .get_mut(n.wrapping_sub(1))
                .and_then(Option::take)
                .ok_or_else(|| StoreError::Config(format!("no argument for ${n} of {sql:?}")))?;
            match v {
                Val::Int(v) => stmt.raw_bind_parameter(i, v)?,
                Val::Text(v) => stmt.raw_bind_parameter(i, v)?,
            }
        }
        Ok(stmt)
    }

    fn first<T: rusqlite::types::FromSql>(&self, sql: &str, args: Vec<Val>) -> Result<Option<T>> {
        let mut stmt = self.prepare(sql, args)?;
        let mut rows = stmt.raw_query();
        let v = match rows.next()? {
            Some(row) => Some(row.get::<_, T>(0)?),
            None => None,
        };
        // Run the statement to its end (an UPDATE … RETURNING changes every row it matches).
        while rows.next()?.is_some() {}
        Ok(v)
    }
}

impl SqlConn for BatchConn {
    fn is_postgres(&self) -> bool {
        false
    }

    fn locks_database(&self) -> bool {
        // Its transactions all begin IMMEDIATE ([`BatchConn::begin`]).
        self.in_transaction()
    }

    async fn exec(&mut self, sql: &str, args: Vec<Val>) -> Result<u64> {
        let mut stmt = self.prepare(sql, args)?;
        Ok(stmt.raw_execute()? as u64)
    }

    async fn fetch_int(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<i64>> {
        self.first(sql, args)
    }

    async fn insert_key(&mut self, sql: &str, _key: &str, args: Vec<Val>) -> Result<i64> {
        let mut stmt = self.prepare(sql, args)?;
        if stmt.raw_execute()? != 1 {
            return Err(StoreError::NotFound);
        }
        drop(stmt);
        // The key column is the rowid (`INTEGER PRIMARY KEY`), and no trigger inserts meanwhile.
        Ok(self.conn.last_insert_rowid())
    }

    async fn fetch_text(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<String>> {
        self.first(sql, args)
    }

    async fn fetch_row(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<Vec<Val>>> {
        let mut stmt = self.prepare(sql, args)?;
        let columns = stmt.column_count();
        let mut rows = stmt.raw_query();
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let vals = sqlite_row_vals(row, columns)?;
        // Run the statement to its end (an UPDATE … RETURNING changes every row it matches).
        while rows.next()?.is_some() {}
        Ok(Some(vals))
    }

    async fn fetch_rows(&mut self, sql: &str, args: Vec<Val>) -> Result<Vec<Vec<Val>>> {
        let mut stmt = self.prepare(sql, args)?;
        let columns = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut all = Vec::new();
        while let Some(row) = rows.next()? {
            all.push(sqlite_row_vals(row, columns)?);
        }
        Ok(all)
    }
}

fn sqlite_row_vals(row: &rusqlite::Row<'_>, columns: usize) -> Result<Vec<Val>> {
    use rusqlite::types::ValueRef;
    (0..columns)
        .map(|i| match row.get_ref(i)? {
            ValueRef::Null => Ok(Val::Int(None)),
            ValueRef::Integer(v) => Ok(Val::Int(Some(v))),
            ValueRef::Text(t) => Ok(Val::Text(Some(
                std::str::from_utf8(t)
                    .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))?
                    .to_owned(),
            ))),
            other => Err(StoreError::Corrupt(format!(
                "column {i} is {:?}, not an integer or text",
                other.data_type()
            ))),
        })
        .collect()
}

/// Drives a future that must not wait (one built on [`BatchConn`]) to its end on this
/// thread. One that would wait is an error, not a hang.
pub fn run_ready<T, E>(fut: impl Future<Output = Result<T, E>>) -> Result<T, E>
where
    E: From<StoreError>,
{
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => Err(StoreError::Config(
            "a statement on the batch writer waited for something else".into(),
        )
        .into()),
    }
}

/// Idle SQLite read connections for [`ReadConn`].
#[derive(Debug)]
pub(crate) struct ReadPool {
    path: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<BatchConn>>,
}

/// Idle read connections kept; more may be open at a peak, and are closed after it.
const IDLE_READERS: usize = 16;

impl ReadPool {
    pub(crate) fn new(path: &Path) -> Self {
        ReadPool {
            path: path.to_owned(),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Result<BatchConn> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => BatchConn::open_reader(&self.path),
        }
    }

    fn give_back(&self, c: BatchConn) {
        if c.in_transaction() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(c);
        }
    }
}

/// A connection for a few point reads on a hot path (an order's access check and
/// validation), outside any transaction.
///
/// On a SQLite file it is a rusqlite connection whose statements run right on the calling
/// task: a point read on an indexed key takes microseconds, less than the two thread
/// hand-offs sqlx's SQLite driver spends on every statement. (In WAL mode readers never wait
/// for the writer.) Elsewhere it is a connection from the sqlx read pool.
#[derive(Debug)]
pub struct ReadConn<'s> {
    inner: ReadInner<'s>,
}

#[derive(Debug)]
enum ReadInner<'s> {
    Inline {
        conn: Option<BatchConn>,
        pool: &'s ReadPool,
    },
    Pooled(sqlx::pool::PoolConnection<sqlx::Any>),
}

impl<'s> ReadConn<'s> {
    pub(crate) fn inline(pool: &'s ReadPool) -> Result<Self> {
        Ok(ReadConn {
            inner: ReadInner::Inline {
                conn: Some(pool.take()?),
                pool,
            },
        })
    }

    pub(crate) fn pooled(conn: sqlx::pool::PoolConnection<sqlx::Any>) -> Self {
        ReadConn {
            inner: ReadInner::Pooled(conn),
        }
    }

    /// Whether statements run on the calling task (SQLite) rather than a pool connection.
    pub fn is_inline(&self) -> bool {
        matches!(self.inner, ReadInner::Inline { .. })
    }
}

impl Drop for ReadConn<'_> {
    fn drop(&mut self) {
        if let ReadInner::Inline { conn, pool } = &mut self.inner {
            if let Some(c) = conn.take() {
                pool.give_back(c);
            }
        }
    }
}

impl ReadInner<'_> {
    fn inline(&mut self) -> Result<&mut BatchConn> {
        match self {
            ReadInner::Inline { conn, .. } => conn
                .as_mut()
                .ok_or_else(|| StoreError::Config("read connection already returned".into())),
            ReadInner::Pooled(_) => Err(StoreError::Config("not an inline connection".into())),
        }
    }
}

impl SqlConn for ReadConn<'_> {
    fn is_postgres(&self) -> bool {
        match &self.inner {
            ReadInner::Inline { .. } => false,
            ReadInner::Pooled(c) => c.is_postgres(),
        }
    }

    async fn exec(&mut self, sql: &str, args: Vec<Val>) -> Result<u64> {
        match &mut self.inner {
            ReadInner::Pooled(c) => (**c).exec(sql, args).await,
            inline => inline.inline()?.exec(sql, args).await,
        }
    }

    async fn fetch_int(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<i64>> {
        match &mut self.inner {
            ReadInner::Pooled(c) => (**c).fetch_int(sql, args).await,
            inline => inline.inline()?.fetch_int(sql, args).await,
        }
    }

    async fn fetch_text(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<String>> {
        match &mut self.inner {
            ReadInner::Pooled(c) => (**c).fetch_text(sql, args).await,
            inline => inline.inline()?.fetch_text(sql, args).await,
        }
    }

    async fn fetch_row(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<Vec<Val>>> {
        match &mut self.inner {
            ReadInner::Pooled(c) => (**c).fetch_row(sql, args).await,
            inline => inline.inline()?.fetch_row(sql, args).await,
        }
    }

    async fn fetch_rows(&mut self, sql: &str, args: Vec<Val>) -> Result<Vec<Vec<Val>>> {
        match &mut self.inner {
            ReadInner::Pooled(c) => (**c).fetch_rows(sql, args).await,
            inline => inline.inline()?.fetch_rows(sql, args).await,
        }
    }
}

type Job = Box<dyn FnOnce(&mut BatchConn) + Send>;

/// The thread that owns SQLite's [`BatchConn`]. Ends when the last [`crate::Store`] holding
/// it is dropped.
///
/// Checkpoints (copying the WAL's pages back into the database file) run off the writer's
/// thread: a second thread checkpoints `PASSIVE` on a connection of its own every
/// [`CHECKPOINT_EVERY`], which never blocks the writer, instead of the writer stopping every
/// few thousand pages to copy them all while orders wait. A passive checkpoint cannot
/// restart the WAL while the writer keeps appending, so once it holds more than
/// [`RESTART_WAL_AT`] frames the writer restarts it between two jobs (`RESTART`), when the
/// checkpointer has left little to copy.
#[derive(Debug, Clone)]
pub(crate) struct BatchWriter {
    jobs: std::sync::mpsc::Sender<Job>,
}

/// How often the checkpointer copies what the WAL gained.
pub(crate) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// WAL frames (of 4 KiB pages) past which the writer restarts the WAL.
pub(crate) const RESTART_WAL_AT: i64 = 16_000;

impl BatchWriter {
    pub(crate) fn start(path: &Path) -> Result<Self> {
        Self::start_with(path, RESTART_WAL_AT, true)
    }

    /// `checkpoints: false` (tests only) leaves the WAL unchecked.
    fn start_with(path: &Path, restart_at: i64, checkpoints: bool) -> Result<Self> {
        use std::sync::atomic::{AtomicI64, Ordering};
        let mut conn = BatchConn::open(path)?;
        let checkpointer = BatchConn::open_checkpointer(path)?;
        // The WAL's length in frames, as the checkpointer last saw it.
        let wal_frames = std::sync::Arc::new(AtomicI64::new(0));
        // Dropped when the writer's thread ends, which ends the checkpointer's.
        let (alive, writer_gone) = std::sync::mpsc::channel::<()>();
        let seen = wal_frames.clone();
        std::thread::Builder::new()
            .name("lodge-sqlite-ckpt".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    writer_gone.recv_timeout(CHECKPOINT_EVERY)
                {
                    if !checkpoints {
                        continue;
                    }
                    match checkpointer.checkpoint("PASSIVE") {
                        Ok((_, frames, _)) => seen.store(frames, Ordering::Relaxed),
                        // The writer is restarting the WAL: next time.
                        Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                            if e.code == rusqlite::ErrorCode::DatabaseBusy => {}
                        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                    }
                }
            })
            .map_err(|e| {
                StoreError::Config(format!("could not start the SQLite checkpointer: {e}"))
            })?;
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("lodge-sqlite-batch".into())
            .spawn(move || {
                let _alive = alive;
                while let Ok(job) = rx.recv() {
                    if wal_frames.load(Ordering::Relaxed) > restart_at {
                        // Once: the checkpointer reports the WAL's length again (shorter once
                        // it restarted) within CHECKPOINT_EVERY.
                        wal_frames.store(0, Ordering::Relaxed);
                        if let Err(e) = conn.restart_wal() {
                            tracing::warn!(error = %e, "WAL restart failed");
                        }
                    }
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError::Config(format!("could not start the SQLite writer: {e}")))?;
        Ok(BatchWriter { jobs })
    }

    /// Runs `f` on the writer's thread and waits for its answer.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut BatchConn) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |c: &mut BatchConn| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| StoreError::Config("the SQLite writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Config("the SQLite writer stopped".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> (tempfile::TempDir, BatchConn) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INTEGER,
                                 CHECK (n IS NULL OR n >= 0));",
            )
            .unwrap();
        let c = BatchConn::open(&path).unwrap();
        (dir, c)
    }

    /// `.cargo/config.toml` builds SQLite without its allocation counters (and their global
    /// mutex), which the batch writer's throughput depends on.
    #[test]
    fn sqlite_is_built_without_memory_statistics() {
        let (_dir, c) = conn();
        let options: Vec<String> = c
            .conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }

    #[test]
    fn lists_are_padded_to_a_power_of_two_with_their_last_value() {
        for (n, padded) in [(0, 0), (1, 1), (2, 2), (3, 4), (5, 8), (64, 64), (65, 128)] {
            let mut v: Vec<usize> = (0..n).collect();
            super::pad_to_power_of_two(&mut v);
            assert_eq!(v.len(), padded);
            assert_eq!(v[..n], (0..n).collect::<Vec<_>>()[..]);
            assert!(v[n..].iter().all(|&x| x + 1 == n), "{v:?}");
        }
    }

    #[test]
    fn binds_by_number_whatever_the_order_and_reuse() {
        let (_d, mut c) = conn();
        // $2 comes first and $1 is used twice: each is bound by its number, not its place.
        let id = run_ready(c.fetch_int(
            "INSERT INTO t (n, name) VALUES ($2, $1 || '-' || $1) RETURNING id",
            crate::vals!["a", 7],
        ))
        .unwrap();
        assert_eq!(id, Some(1));
        let name = run_ready(c.fetch_text("SELECT name FROM t WHERE n = $1", crate::vals![7]));
        assert_eq!(name.unwrap().as_deref(), Some("a-a"));
        let none = run_ready(c.fetch_text("SELECT name FROM t WHERE n = $1", crate::vals![8]));
        assert_eq!(none.unwrap(), None);
        let changed = run_ready(c.exec(
            "UPDATE t SET n = $1 WHERE name = $2",
            vec![Val::Int(None), Val::from("a-a")],
        ));
        assert_eq!(changed.unwrap(), 1);
    }

    #[test]
    fn fetch_rows_reads_every_row_and_null() {
        let (_d, mut c) = conn();
        for (name, n) in [("a", Some(1)), ("b", None), ("c", Some(3))] {
            run_ready(c.exec(
                "INSERT INTO t (name, n) VALUES ($1, $2)",
                vec![Val::from(name), Val::Int(n)],
            ))
            .unwrap();
        }
        let rows = run_ready(c.fetch_rows("SELECT name, n FROM t ORDER BY name", vec![])).unwrap();
        let read: Vec<(String, Option<i64>)> = rows
            .into_iter()
            .map(|r| {
                let mut c = Cols::new(r);
                (c.text().unwrap(), c.opt_int().unwrap())
            })
            .collect();
        assert_eq!(
            read,
            vec![
                ("a".into(), Some(1)),
                ("b".into(), None),
                ("c".into(), Some(3))
            ]
        );
        let none =
            run_ready(c.fetch_rows("SELECT name FROM t WHERE n = $1", vec![Val::Int(Some(9))]));
        assert!(none.unwrap().is_empty());
    }

    /// Writes 800 one-row commits through a batch writer (its checkpointer on or off),
    /// letting the checkpointer run between rounds; returns the database file's and the
    /// WAL's sizes and the rows there are.
    async fn sizes_after_commits(checkpoints: bool) -> (u64, u64, i64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (name TEXT NOT NULL);")
            .unwrap();
        let w = BatchWriter::start_with(&path, 100, checkpoints).unwrap();
        for round in 0..20 {
            for i in 0..40 {
                w.run(move |c| {
                    c.transaction(|c| {
                        run_ready(c.exec(
                            "INSERT INTO t (name) VALUES ($1)",
                            crate::vals![format!("{round:04}-{i:04}-{}", "x".repeat(200))],
                        ))
                    })
                })
                .await
                .unwrap()
                .unwrap();
            }
            tokio::time::sleep(CHECKPOINT_EVERY * 2).await;
        }
        let size = |f: &str| std::fs::metadata(dir.path().join(f)).unwrap().len();
        let rows = w
            .run(|c| run_ready(c.fetch_int("SELECT COUNT(*) FROM t", vec![])))
            .await
            .unwrap()
            .unwrap();
        (size("t.db"), size("t.db-wal"), rows.unwrap_or(0))
    }

    /// The writer never checkpoints itself (left alone, its WAL only grows and the database
    /// file keeps none of the rows); its checkpointer copies the WAL back meanwhile, and the
    /// WAL is restarted and stays short.
    #[tokio::test]
    async fn the_wal_is_checkpointed_off_the_writer_and_stays_short() {
        // ~170 KB of rows.
        let (db, wal, rows) = sizes_after_commits(false).await;
        assert_eq!(rows, 800);
        assert!(
            db < 20_000,
            "no checkpoint, the rows are only in the WAL: {db} bytes"
        );
        assert!(
            wal > 3_000_000,
            "800 commits of a frame or more: {wal} bytes"
        );
        let (db, wal, rows) = sizes_after_commits(true).await;
        assert_eq!(rows, 800);
        assert!(db > 150_000, "the checkpointer copied the rows: {db} bytes");
        assert!(
            wal < 1_500_000,
            "restarted, the WAL stays short: {wal} bytes"
        );
    }

    #[test]
    fn insert_key_returns_the_new_rows_key_and_refuses_what_it_did_not_insert() {
        let (_d, mut c) = conn();
        let sql = "INSERT INTO t (name, n) VALUES ($1, $2)";
        let a = run_ready(c.insert_key(sql, "id", crate::vals!["a", 1])).unwrap();
        let b = run_ready(c.insert_key(sql, "id", crate::vals!["b", 2])).unwrap();
        assert_eq!((a, b), (1, 2));
        let named = run_ready(c.fetch_text("SELECT name FROM t WHERE id = $1", crate::vals![b]));
        assert_eq!(named.unwrap().as_deref(), Some("b"));
        // A row not inserted (the name is taken, the conflict ignored) has no key: it is
        // not mistaken for the last one inserted.
        let ignored = "INSERT INTO t (name, n) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
        let r = run_ready(c.insert_key(ignored, "id", crate::vals!["b", 3]));
        assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
        let dup = run_ready(c.insert_key(sql, "id", crate::vals!["a", 4]));
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    }

    #[test]
    fn a_missing_argument_is_an_error_not_a_null() {
        let (_d, mut c) = conn();
        let r = run_ready(c.exec("INSERT INTO t (name, n) VALUES ($1, $2)", crate::vals!["x"]));
        assert!(matches!(r, Err(StoreError::Config(_))), "{r:?}");
    }

    #[test]
    fn constraint_failures_map_like_sqlx() {
        let (_d, mut c) = conn();
        run_ready(c.exec("INSERT INTO t (name) VALUES ($1)", crate::vals!["x"])).unwrap();
        let dup = run_ready(c.exec("INSERT INTO t (name) VALUES ($1)", crate::vals!["x"]));
        let e = dup.unwrap_err();
        assert!(e.is_conflict_on("t.name"), "{e:?}");
        let neg = run_ready(c.exec(
            "INSERT INTO t (name, n) VALUES ($1, $2)",
            crate::vals!["y", -1],
        ));
        assert!(matches!(neg, Err(StoreError::Check(_))), "{neg:?}");
    }

    #[test]
    fn a_rolled_back_unit_leaves_the_rest_of_the_batch() {
        let (_d, mut c) = conn();
        c.transaction(|c| {
            for (name, keep) in [("a", true), ("b", false), ("c", true)] {
                run_ready(begin_unit(c))?;
                run_ready(c.exec("INSERT INTO t (name) VALUES ($1)", crate::vals![name]))?;
                run_ready(end_unit(c, keep))?;
            }
            assert!(c.in_transaction());
            Ok::<(), StoreError>(())
        })
        .unwrap();
        assert!(!c.in_transaction());
        let n =
            run_ready(c.fetch_int("SELECT COUNT(*) FROM t WHERE name <> $1", crate::vals!["?"]));
        assert_eq!(n.unwrap(), Some(2));
        let b = run_ready(c.fetch_int("SELECT COUNT(*) FROM t WHERE name = $1", crate::vals!["b"]));
        assert_eq!(b.unwrap(), Some(0));
    }

    #[test]
    fn a_failed_transaction_leaves_nothing_and_closes() {
        let (_d, mut c) = conn();
        let r = c.transaction(|c| {
            run_ready(c.exec("INSERT INTO t (name) VALUES ($1)", crate::vals!["a"]))?;
            run_ready(c.exec("INSERT INTO t (name) VALUES ($1)", crate::vals!["a"]))
        });
        assert!(r.unwrap_err().is_conflict_on("t.name"));
        assert!(!c.in_transaction());
        let n = run_ready(c.fetch_int("SELECT COUNT(*) FROM t WHERE id > $1", crate::vals![0]));
        assert_eq!(n.unwrap(), Some(0));
        // The connection is usable again.
        c.transaction(|c| run_ready(c.exec("INSERT INTO t (name) VALUES ($1)", crate::vals!["a"])))
            .unwrap();
    }
}
