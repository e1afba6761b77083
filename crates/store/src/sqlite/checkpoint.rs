//! The batch writer's checkpointer. Checkpoints (copying the WAL's pages back into the
//! database file) run off the writer's thread: a second thread checkpoints `PASSIVE` on a
//! connection of its own every [`CHECKPOINT_EVERY`], which never blocks the writer, instead
//! of the writer stopping every few thousand pages to copy them all while orders wait. A
//! passive checkpoint cannot restart the WAL while the writer keeps appending, so once it
//! holds more than [`RESTART_WAL_AT`] frames the writer restarts it between two jobs
//! (`RESTART`, [`Wal::restart_if_long`]), when the checkpointer has left little to copy.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::{pragmas, BatchConn};
use crate::{Result, StoreError};

/// How often the checkpointer copies what the WAL gained.
pub(super) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// WAL frames (of 4 KiB pages) past which the writer restarts the WAL.
pub(super) const RESTART_WAL_AT: i64 = 16_000;

/// The writer's side of the checkpointer: what it last saw of the WAL. Dropping it (when the
/// writer's thread ends) ends the checkpointer's thread.
#[derive(Debug)]
pub(super) struct Wal {
    /// The WAL's length in frames, as the checkpointer last saw it.
    frames: Arc<AtomicI64>,
    restart_at: i64,
    _alive: std::sync::mpsc::Sender<()>,
}

impl Wal {
    /// Called by the writer between two jobs: restarts the WAL once it grew past
    /// `restart_at` frames. One atomic load when it did not.
    #[inline]
    pub(super) fn restart_if_long(&self, writer: &BatchConn) {
        if self.frames.load(Ordering::Relaxed) > self.restart_at {
            // Once: the checkpointer reports the WAL's length again (shorter once it
            // restarted) within CHECKPOINT_EVERY.
            self.frames.store(0, Ordering::Relaxed);
            if let Err(e) = writer.restart_wal() {
                tracing::warn!(error = %e, "WAL restart failed");
            }
        }
    }
}

/// How often a checkpoint that keeps failing is logged.
const FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts the checkpointer of the database at `path` on a thread of its own.
/// `checkpoints: false` (tests only) leaves the WAL unchecked.
pub(super) fn start(path: &Path, restart_at: i64, checkpoints: bool) -> Result<Wal> {
    let checkpointer = BatchConn::connect(path, pragmas::CHECKPOINTER, 1)?;
    let frames = Arc::new(AtomicI64::new(0));
    let (alive, writer_gone) = std::sync::mpsc::channel::<()>();
    let seen = frames.clone();
    std::thread::Builder::new()
        .name("lodge-sqlite-ckpt".into())
        .spawn(move || {
            // Failures in a row, and when one was last logged: a checkpoint that keeps
            // failing (the disk full) is logged once a minute, not every 50 ms (found by the
            // fault audit: 20 lines a second, on the disk that was full).
            let (mut failures, mut logged) = (0_u64, None::<std::time::Instant>);
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                writer_gone.recv_timeout(CHECKPOINT_EVERY)
            {
                if !checkpoints {
                    continue;
                }
                match checkpointer.checkpoint("PASSIVE") {
                    Ok((_, frames, _)) => {
                        seen.store(frames, Ordering::Relaxed);
                        if failures > 0 {
                            tracing::info!(failures, "WAL checkpoints work again");
                            (failures, logged) = (0, None);
                        }
                    }
                    // The writer is restarting the WAL: next time.
                    Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                        if e.code == rusqlite::ErrorCode::DatabaseBusy => {}
                    Err(e) => {
                        failures += 1;
                        if logged.is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY) {
                            tracing::warn!(error = %e, failures, "WAL checkpoint failed (logged at most once a minute while it fails)");
                            logged = Some(std::time::Instant::now());
                        }
                    }
                }
            }
        })
        .map_err(|e| StoreError::Config(format!("could not start the SQLite checkpointer: {e}")))?;
    Ok(Wal {
        frames,
        restart_at,
        _alive: alive,
    })
}

impl BatchConn {
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
}
