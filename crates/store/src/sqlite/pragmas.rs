//! The settings of each kind of SQLite connection Lodge opens. `journal_mode = WAL` is a
//! property of the file, set once by [`super::connect`]; everything here is per connection.

/// sqlx's pools (the single writer and the readers): foreign keys on, every commit synced
/// (`synchronous = FULL`), and a wait of up to ten seconds for a lock another connection
/// holds.
pub(super) const SQLX: &str =
    "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;";

/// The batch writer ([`super::BatchConn::open`]). A savepoint (an order's, when a batch
/// runs again with one per order) journals the pages it changes; in memory, so undo records
/// never go through a temporary file. A larger page cache keeps the indexes an order
/// touches in memory as the database grows. No automatic checkpoints: the batch writer's
/// checkpointer runs them ([`super::checkpoint`]).
pub(super) const BATCH_WRITER: &str =
    "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;
     PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;
     PRAGMA wal_autocheckpoint = 0;";

/// Statements the batch writer keeps prepared.
pub(super) const BATCH_WRITER_STATEMENTS: usize = 64;

/// The checkpointer (`synchronous = FULL`: the database file is synced before the WAL is
/// reused).
pub(super) const CHECKPOINTER: &str = "PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;";

/// The inline readers ([`super::ReadConn`]): reads only.
pub(super) const READER: &str =
    "PRAGMA query_only = ON; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;";

/// Statements each inline reader keeps prepared.
pub(super) const READER_STATEMENTS: usize = 32;
