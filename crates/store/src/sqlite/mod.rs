//! What only SQLite needs. On SQLite Lodge writes through a single writer: sqlx's pool of
//! one connection for ordinary transactions, and the batch writer ([`BatchConn`] on a
//! thread of its own, [`writer`]) for group commits, which holds that same pool connection
//! while it runs so the two never interleave. Reads go through a sqlx pool or, on a hot
//! path, an inline reader ([`ReadConn`]). A checkpointer thread keeps the WAL short
//! ([`checkpoint`]); opening a database rebuilds the order tables of an old one once
//! ([`rebuild`]); each kind of connection has its settings ([`pragmas`]).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

use crate::Result;

mod batch_conn;
mod checkpoint;
mod pragmas;
mod reads;
mod rebuild;
mod writer;

pub use batch_conn::{run_ready, BatchConn};
pub use reads::ReadConn;
pub(crate) use reads::ReadPool;
pub(crate) use rebuild::expand_in_lists;
pub(crate) use writer::BatchWriter;

pub(crate) static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The connections of a SQLite database.
pub(crate) struct Connected {
    pub read: AnyPool,
    /// Exactly one connection: the single writer.
    pub write: AnyPool,
    /// On a file (an in-memory database has none to open again).
    pub batch: Option<BatchWriter>,
    /// On a file in WAL mode, where readers never wait for the writer.
    pub inline_reads: Option<Arc<ReadPool>>,
    /// The file, as it was when opened.
    pub file: Option<FileIdentity>,
}

/// A database file and the identity (device and inode) it had when opened: a file deleted,
/// moved, or replaced by another renamed over it under the running process (a cleanup
/// script, a restore by `mv` or `rsync`) is told apart from it ([`FileIdentity::check`]),
/// where SQLite goes on writing to the old one unnoticed. (A backup copied over the open
/// file in place keeps its inode and is not told apart: SQLite then reads torn pages.)
#[derive(Debug, Clone)]
pub struct FileIdentity {
    path: std::path::PathBuf,
    id: Option<(u64, u64)>,
}

impl FileIdentity {
    fn of(path: &Path) -> FileIdentity {
        FileIdentity {
            path: path.to_owned(),
            id: identity(path),
        }
    }

    /// `Err` when the file is no longer there, or another file is.
    pub fn check(&self) -> crate::Result<()> {
        match (identity(&self.path), self.id) {
            (Some(now), Some(then)) if now == then => Ok(()),
            (Some(_), None) => Ok(()),
            _ => Err(crate::StoreError::FileGone(self.path.display().to_string())),
        }
    }
}

#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|_| (0, 0))
}

/// Opens the SQLite database at `url` (creating the file if need be) in WAL mode.
pub(crate) async fn connect(url: &str) -> Result<Connected> {
    let url = if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    };
    create_private(&url);
    let opts = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
    // One connection first, outside the pools: a file SQLite cannot write (a read-only
    // directory, where its -wal and -shm files cannot be made) fails here at once, in
    // SQLite's words. In a pool the same failure came from its after_connect, which sqlx
    // retries until the 30 s acquire timeout, then says only "pool timed out" (found by the
    // operator audit).
    let mut probe = <sqlx::AnyConnection as sqlx::Connection>::connect_with(&opts).await?;
    if let Err(e) = probe.execute(pragmas::SQLX).await {
        let readonly = e
            .as_database_error()
            .is_some_and(|d| d.message().contains("readonly"));
        return Err(if readonly {
            crate::StoreError::Refused(format!(
                "SQLite cannot write the database file or its directory (it makes the \
                 file's -wal and -shm beside it there): {e}"
            ))
        } else {
            e.into()
        });
    }
    sqlx::Connection::close(probe).await?;
    let write = pool(1).connect_with(opts.clone()).await?;
    // WAL must be set before readers open the file.
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
        .fetch_one(&write)
        .await?;
    let read = pool(16).connect_with(opts).await?;
    // The batch writer opens the same file.
    let file: Option<String> =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_optional(&write)
            .await?;
    let file = file.filter(|f| !f.is_empty());
    let batch = file
        .as_deref()
        .map(|f| BatchWriter::start(Path::new(f)))
        .transpose()?;
    let identity = file.as_deref().map(|f| FileIdentity::of(Path::new(f)));
    let inline_reads = file
        .filter(|_| journal.eq_ignore_ascii_case("wal"))
        .map(|f| Arc::new(ReadPool::new(Path::new(&f))));
    Ok(Connected {
        read,
        write,
        batch,
        inline_reads,
        file: identity,
    })
}

/// Creates the database file of `url`, when it does not exist yet, readable by its owner
/// only (found by the security audit: 0644 from the umask, with customers' details and
/// the ledger in it). SQLite gives its `-wal` and `-shm` files the database file's mode.
/// Best effort: where this fails, SQLite creates the file as before.
fn create_private(url: &str) {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_default();
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // Only where SQLite itself would create it (`mode=rwc`: `mode=rw` and `ro` refuse a
    // mistyped path), and only a path written plainly (a `%` escape is SQLite's to read).
    let creates = query
        .split('&')
        .filter_map(|p| p.strip_prefix("mode="))
        .all(|m| m == "rwc");
    if path.is_empty() || path.starts_with(':') || path.contains('%') || !creates {
        return;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    // An existing file (AlreadyExists) keeps its mode: the operator's choice.
    let _ = opts.open(path);
}

/// Applies the SQLite migrations, then rebuilds the order tables of a database an older
/// build created ([`rebuild`]).
pub(crate) async fn migrate(conn: &mut sqlx::pool::PoolConnection<sqlx::Any>) -> Result<()> {
    MIGRATIONS.run(&mut **conn).await?;
    rebuild::rebuild_order_tables(conn).await
}

/// A pool of connections to the SQLite file. No ping before each acquire (sqlx's default):
/// a connection to a local file does not go stale, and the ping is a round trip to the
/// connection's worker thread on every acquire, which the batch writer's callers pay once
/// per group commit.
///
/// Nor any idle timeout or lifetime (sqlx closes idle connections after 10 minutes and
/// any after 30 by default): a connection to a local file holds nothing worth freeing,
/// and with neither sqlx starts no maintenance task. That task can spin a core forever
/// once the pool's idle count wraps below zero (sqlx issue 3645, fixed upstream after
/// 0.8.6); it did so here once, at a test's shutdown, which then never ended.
fn pool(max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute(pragmas::SQLX).await?;
                Ok(())
            })
        })
}

#[cfg(test)]
mod tests {
    /// A full disk is a moment's outage (a 503 to retry), not a fault of the request: the
    /// same on sqlx's connections and on the batch writer's (found by the resilience audit:
    /// it was a 500). The disk is "full" here by `max_page_count`, which SQLite reports
    /// with the same code.
    #[tokio::test]
    async fn a_full_disk_is_unavailable_not_internal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.db");
        let store = crate::Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let mut conn = store.write_conn().await.unwrap();
        sqlx::raw_sql("CREATE TABLE scratch (x BLOB); PRAGMA max_page_count = 8;")
            .execute(&mut *conn)
            .await
            .unwrap();
        let full = sqlx::query("INSERT INTO scratch VALUES (zeroblob(1000000))")
            .execute(&mut *conn)
            .await
            .unwrap_err();
        let full = crate::StoreError::from(full);
        assert!(full.is_unavailable(), "{full:?}");
        let _ = conn.close().await;
        let batch = rusqlite::Connection::open(&path).unwrap();
        batch.execute_batch("PRAGMA max_page_count = 8;").unwrap();
        let full = batch
            .execute("INSERT INTO scratch VALUES (zeroblob(1000000))", [])
            .unwrap_err();
        assert!(crate::StoreError::Sqlite(full).is_unavailable());
        // A constraint is still the request's fault.
        let bad = sqlx::query("INSERT INTO no_such_table VALUES (1)")
            .execute(store.writer())
            .await
            .unwrap_err();
        assert!(!crate::StoreError::from(bad).is_unavailable());
    }

    /// A COMMIT that fails after SQLite ended the transaction itself (as on a full disk,
    /// where SQLite rolls back): sqlx keeps counting the transaction as open and refused
    /// every later begin on the writer; the next begin replaces the connection (found by
    /// the resilience audit: only a restart brought writes back). The state is made here
    /// by ending the transaction behind sqlx's back, which leaves it the same way.
    #[tokio::test]
    async fn a_writer_left_inside_a_failed_commit_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stuck.db");
        let store = crate::Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE scratch (x INTEGER)")
            .execute(store.writer())
            .await
            .unwrap();
        let mut tx = store.begin().await.unwrap();
        sqlx::query("INSERT INTO scratch VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::raw_sql("ROLLBACK").execute(&mut *tx).await.unwrap();
        assert!(tx.commit().await.is_err(), "no transaction left to commit");
        // Before: `attempted to call begin_with at non-zero transaction depth`, for good.
        let mut tx = store.begin().await.expect("a new writer connection");
        sqlx::query("INSERT INTO scratch VALUES (2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        store.ping().await.expect("ready");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scratch")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(rows, 1, "the first insert was rolled back, the second kept");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_file_is_its_owners_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.db");
        let store = crate::Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE scratch (x INTEGER)")
            .execute(store.writer())
            .await
            .unwrap();
        // `mode=rw` refuses a path that does not exist: nothing is created for it.
        let typo = dir.path().join("typo.db");
        assert!(
            crate::Store::open(&format!("sqlite://{}?mode=rw", typo.display()))
                .await
                .is_err()
        );
        assert!(!typo.exists());
        for f in ["private.db", "private.db-wal", "private.db-shm"] {
            let p = dir.path().join(f);
            if let Ok(m) = std::fs::metadata(&p) {
                assert_eq!(m.permissions().mode() & 0o077, 0, "{f}");
            } else {
                assert_ne!(f, "private.db", "the database exists");
            }
        }
    }

    /// The background scans of unpaid invoices and due cancellations read their partial
    /// indexes (every order skips writing to them), not the tables; so do the checks that a
    /// name is free, which must repeat their index's condition word for word, and the pass
    /// that forgets old idempotency keys.
    #[tokio::test]
    async fn queries_read_their_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(&format!("sqlite://{}/p.db", dir.path().display()))
            .await
            .unwrap();
        let one_name = crate::deferred::with_ids(&crate::hosting::LIVE_HOSTING_NAMES, 0, 1);
        for (sql, index) in [
            (crate::billing::EXPIRED_FIRST_INVOICES, "invoices_unpaid"),
            (crate::hosting::CANCELLATIONS_DUE, "hosting_cancel_due"),
            (one_name.as_str(), "hosting_live_name"),
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
        // A batch's names, read together, through the same index.
        let names = format!(
            "EXPLAIN QUERY PLAN {}",
            crate::deferred::with_ids(&crate::hosting::LIVE_HOSTING_NAMES, 0, 4)
        );
        let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(&names);
        for n in ["a.example", "b.example", "c.example", "d.example"] {
            q = q.bind(n);
        }
        let plan = q.fetch_all(store.reader()).await.unwrap();
        let detail: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
        assert!(
            detail.iter().any(|d| d.contains("INDEX hosting_live_name")),
            "{detail:?}"
        );
        assert!(!detail.iter().any(|d| d.starts_with("SCAN")), "{detail:?}");
        // The renewal pass's pages are ranges of their index, read in its order (no sort).
        for (page, index) in [
            (
                &*crate::renewals::DUE_PAGE,
                "h USING INDEX hosting_renewal_due",
            ),
            (
                &*crate::renewals::DUE_DOMAIN_PAGE,
                "d USING INDEX domains_renewal_due",
            ),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {page}"))
                    .fetch_all(store.reader())
                    .await
                    .unwrap();
            let detail: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
            assert!(
                detail
                    .iter()
                    .any(|d| d.starts_with(&format!("SEARCH {index}"))),
                "{detail:?}"
            );
            assert!(!detail.iter().any(|d| d.contains("B-TREE")), "{detail:?}");
        }
        // An order's validation reads the name's live accounts through the same index
        // (the few servers it reads besides may be scanned).
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", *crate::orgs::ORDER_FACTS))
                .fetch_all(store.reader())
                .await
                .unwrap();
        let detail: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
        assert!(
            detail.iter().any(|d| d.contains("INDEX hosting_live_name")),
            "{detail:?}"
        );
        assert!(
            !detail.iter().any(|d| d.starts_with("SCAN hosting")),
            "{detail:?}"
        );
    }
}
