//! SQLite's batch writer: the thread that owns the [`BatchConn`] and runs each job given to
//! it (a whole group commit) in one call, and its checkpointer ([`super::checkpoint`]).

use std::path::Path;

use super::checkpoint::{self, RESTART_WAL_AT};
use super::BatchConn;
use crate::{Result, StoreError};

type Job = Box<dyn FnOnce(&mut BatchConn) + Send>;

/// The thread that owns SQLite's [`BatchConn`]. Ends when the last [`crate::Store`] holding
/// it is dropped, and its checkpointer with it.
#[derive(Debug, Clone)]
pub(crate) struct BatchWriter {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl BatchWriter {
    pub(crate) fn start(path: &Path) -> Result<Self> {
        Self::start_with(path, RESTART_WAL_AT, true)
    }

    /// `checkpoints: false` (tests only) leaves the WAL unchecked.
    fn start_with(path: &Path, restart_at: i64, checkpoints: bool) -> Result<Self> {
        let mut conn = BatchConn::open(path)?;
        let wal = checkpoint::start(path, restart_at, checkpoints)?;
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("lodge-sqlite-batch".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    wal.restart_if_long(&conn);
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
    use super::checkpoint::CHECKPOINT_EVERY;
    use super::*;
    use crate::{run_ready, SqlConn};

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

    /// The batch writer waits for a transaction open on the ordinary writer, so that one
    /// never finds its snapshot overtaken by a batch commit (SQLITE_BUSY_SNAPSHOT).
    #[tokio::test]
    async fn a_batch_waits_for_the_ordinary_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::connect(&format!("sqlite://{}/w.db", dir.path().display()))
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
                    run_ready(db.exec("INSERT INTO t (id) VALUES ($1)", crate::vals![1]))
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
}
