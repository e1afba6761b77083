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

/// The pool of one node.
pub(crate) async fn connect(url: &str) -> Result<AnyPool> {
    let opts = AnyConnectOptions::from_str(url)?.disable_statement_logging();
    Ok(AnyPoolOptions::new()
        .max_connections(32)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(opts)
        .await?)
}

pub(crate) async fn migrate(conn: &mut sqlx::AnyConnection) -> Result<()> {
    MIGRATIONS.run(conn).await?;
    Ok(())
}
