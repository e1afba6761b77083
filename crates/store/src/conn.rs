//! One statement interface over the two ways Lodge writes: a sqlx connection (either engine)
//! and SQLite's batch writer ([`crate::BatchConn`], rusqlite on a thread of its own). The order
//! path's statements are written once, against [`SqlConn`], and run on both.
//!
//! Why two: sqlx runs each SQLite statement on the connection's worker thread and hands the
//! result back through a channel, so a statement costs two thread wake-ups. An order is a
//! dozen statements, and a group commit of 64 orders is several hundred hand-offs on the
//! single writer — that, not the disk, capped order placement. The batch writer runs a whole
//! group commit in one call on its own thread, with the same statements and savepoints.

use std::future::Future;

use sqlx::{AnyConnection, Row};

use crate::dialect::Dialect;
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
    /// Whether this is PostgreSQL.
    fn is_postgres(&self) -> bool;

    /// Whether a transaction on this connection holds the whole database's write lock from
    /// its start (SQLite's batch writer begins `IMMEDIATE`), so rows need no locks of their own.
    fn locks_database(&self) -> bool {
        false
    }

    /// Which texts of the statements that differ by engine this connection runs
    /// ([`crate::dialect`]).
    fn dialect(&self) -> Dialect {
        if self.is_postgres() {
            Dialect::Postgres
        } else if self.locks_database() {
            Dialect::SqliteLocked
        } else {
            Dialect::Sqlite
        }
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

    /// Runs `sql`, a statement over rows named by their ids: `fixed` are its arguments `$1`
    /// to `$k`, and `$IDS` in its text stands for the list of ids. Other connections run it
    /// now for `id` alone; a [`crate::deferred::Deferred`] connection gathers the ids given
    /// with the same `sql` and `fixed` and runs it once for all of them (a few statements,
    /// lists of a power of two) at its flush, after the rows it holds are written, so it can
    /// read them. Only for statements whose effect does not depend on being run at once.
    fn exec_for_ids_later(
        &mut self,
        sql: &'static str,
        fixed: Vec<Val>,
        id: Val,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            let stmt = crate::deferred::with_ids(sql, fixed.len(), 1);
            let mut args = fixed;
            args.push(id);
            self.exec(&stmt, args).await.map(drop)
        }
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

/// `sql`, a statement over a list of ids (`$IDS`, [`crate::deferred::with_ids`]), and its
/// arguments for the distinct `ids`, the list padded to a power of two
/// ([`pad_to_power_of_two`]) so a few texts serve every length; `None` without ids.
pub(crate) fn over_distinct_ids<T: Ord + Into<Val>>(
    sql: &str,
    ids: impl IntoIterator<Item = T>,
) -> Option<(String, Vec<Val>)> {
    let mut args: Vec<Val> = ids
        .into_iter()
        .collect::<std::collections::BTreeSet<T>>()
        .into_iter()
        .map(Into::into)
        .collect();
    if args.is_empty() {
        return None;
    }
    pad_to_power_of_two(&mut args);
    Some((crate::deferred::with_ids(sql, 0, args.len()), args))
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_list_of_ids_is_distinct_sorted_and_padded() {
        let (sql, args) =
            super::over_distinct_ids("SELECT 1 WHERE id IN ($IDS)", [5_i64, 3, 5, 9, 3]).unwrap();
        assert_eq!(sql, "SELECT 1 WHERE id IN ($1, $2, $3, $4)");
        let ints: Vec<_> = args.iter().map(|v| v.int().unwrap()).collect();
        assert_eq!(ints, [Some(3), Some(5), Some(9), Some(9)]);
        assert!(super::over_distinct_ids("x IN ($IDS)", Vec::<i64>::new()).is_none());
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
}
