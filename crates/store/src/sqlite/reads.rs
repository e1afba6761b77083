//! Inline reads on a SQLite file ([`ReadConn`]): a few rusqlite connections opened for
//! reads only, whose statements run right on the calling task.

use std::path::Path;

use super::{pragmas, BatchConn};
use crate::conn::{SqlConn, Val};
use crate::{Result, StoreError};

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
            None => BatchConn::connect(&self.path, pragmas::READER, pragmas::READER_STATEMENTS),
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

#[cfg(test)]
mod tests {
    use crate::SqlConn;

    /// Both statement paths read a row the same way: integers, text and NULL, column by
    /// column; a read connection sees what the writers committed and cannot write.
    #[tokio::test]
    async fn rows_read_alike_inline_and_through_sqlx() {
        use crate::{vals, Val};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::connect(&format!("sqlite://{}/r.db", dir.path().display()))
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
}
