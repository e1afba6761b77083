//! SQLite's batch writer connection ([`BatchConn`]): rusqlite on the writer's own thread,
//! running the same `$n` statements as the sqlx connections, each prepared once and cached.
//! Also the connection type of the inline readers and of the checkpointer.

use std::future::Future;
use std::path::Path;

use super::pragmas;
use crate::conn::{SqlConn, Val};
use crate::{Result, StoreError};

/// SQLite's batch writer connection: statements run synchronously on the calling thread (the
/// writer's own), each prepared once and cached. Its futures never wait.
pub struct BatchConn {
    pub(super) conn: rusqlite::Connection,
}

impl std::fmt::Debug for BatchConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchConn")
    }
}

impl BatchConn {
    /// Opens the database file as the batch writer ([`pragmas::BATCH_WRITER`]; WAL is
    /// already set on the file by the sqlx writer).
    pub(super) fn open(path: &Path) -> Result<Self> {
        Self::connect(
            path,
            pragmas::BATCH_WRITER,
            pragmas::BATCH_WRITER_STATEMENTS,
        )
    }

    /// Opens the database file with `pragmas`, keeping up to `cached_statements` prepared.
    pub(super) fn connect(path: &Path, pragmas: &str, cached_statements: usize) -> Result<Self> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{begin_unit, end_unit, Cols};

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
        assert!(
            matches!(&e, StoreError::Conflict(crate::Conflict::Other(w)) if w.ends_with("t.name")),
            "{e:?}"
        );
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
        assert!(matches!(
            r.unwrap_err(),
            StoreError::Conflict(crate::Conflict::Other(w)) if w.ends_with("t.name")
        ));
        assert!(!c.in_transaction());
        let n = run_ready(c.fetch_int("SELECT COUNT(*) FROM t WHERE id > $1", crate::vals![0]));
        assert_eq!(n.unwrap(), Some(0));
        // The connection is usable again.
        c.transaction(|c| run_ready(c.exec("INSERT INTO t (name) VALUES ($1)", crate::vals!["a"])))
            .unwrap();
    }
}
