//! What only PostgreSQL needs: one pool for reads and writes, its migrations, and the
//! SQLSTATEs of a transaction that failed only because of others.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

use crate::Result;

pub(crate) static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// `deadlock_detected` and `serialization_failure`: running the transaction again may
/// succeed.
pub(crate) const TRANSIENT_SQLSTATES: [&str; 2] = ["40P01", "40001"];

/// How long a pooled connection may sit idle before it is pinged when taken again.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pool of one node. A connection taken from it is pinged only when it has been idle
/// for more than [`PING_AFTER_IDLE`] (sqlx's default pings on every acquire): the ping is a
/// round trip to the server, one more for each of an order's reads and for each group
/// commit, while a connection busy a moment ago is as alive as a ping would show. One
/// that sat idle (through a server restart, say) is still checked and replaced.
pub(crate) async fn connect(url: &str) -> Result<AnyPool> {
    let opts = AnyConnectOptions::from_str(url)?.disable_statement_logging();
    Ok(AnyPoolOptions::new()
        .max_connections(32)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(opts)
        .await?)
}

pub(crate) async fn migrate(conn: &mut sqlx::AnyConnection) -> Result<()> {
    MIGRATIONS.run(conn).await?;
    Ok(())
}
