//! The MariaDB database of a hosting account (`hosting_databases`): its names on the
//! database server and its user's sealed password, shown once to the customer.

use lodge_core::HostingId;
use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::Result;

#[derive(Debug, Clone, FromRow)]
pub struct DatabaseRow {
    pub hosting_id: String,
    pub name: String,
    pub username: String,
    /// The password, sealed.
    pub secret: String,
    /// 1 once the database and its user exist on the server.
    pub ready: i64,
    /// When the password was shown (`None`: not yet).
    pub shown_at: Option<i64>,
    pub created_at: i64,
    pub modified_at: i64,
}

const COLUMNS: &str =
    "hosting_id, name, username, secret, ready, shown_at, created_at, modified_at";

pub async fn get<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: HostingId,
) -> Result<Option<DatabaseRow>> {
    Ok(sqlx::query_as::<_, DatabaseRow>(&format!(
        "SELECT {COLUMNS} FROM hosting_databases WHERE hosting_id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(db)
    .await?)
}

/// The names on the server (database, user) of every account's database.
pub async fn all_names<'e, E: Executor<'e, Database = Any>>(
    db: E,
) -> Result<Vec<(String, String)>> {
    Ok(
        sqlx::query_as("SELECT name, username FROM hosting_databases ORDER BY name")
            .fetch_all(db)
            .await?,
    )
}

/// Records the account's database unless it has one (a retried provisioning keeps the
/// first password). Returns whether it was added.
pub async fn insert_if_absent(
    conn: &mut AnyConnection,
    id: HostingId,
    name: &str,
    username: &str,
    sealed: &str,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO hosting_databases (hosting_id, name, username, secret, ready, shown_at, created_at, modified_at) \
         VALUES ($1, $2, $3, $4, 0, NULL, $5, $5) ON CONFLICT (hosting_id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(name)
    .bind(username)
    .bind(sealed)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The database and its user exist on the server.
pub async fn set_ready(conn: &mut AnyConnection, id: HostingId, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE hosting_databases SET ready = 1, modified_at = $2 WHERE hosting_id = $1 AND ready = 0",
    )
    .bind(id.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the password shown, if it was not yet (and the database is ready): true for the
/// one caller that may show it.
pub async fn take_password(conn: &mut AnyConnection, id: HostingId, now: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE hosting_databases SET shown_at = $2, modified_at = $2 \
         WHERE hosting_id = $1 AND shown_at IS NULL AND ready = 1",
    )
    .bind(id.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Claims the change of the database's password until `until` (microseconds), unless
/// another change holds it at `now`: true for the one caller that may change it. The
/// claim is its `until`, which [`finish_password_change`] and [`release_password_change`]
/// are given back.
pub async fn claim_password_change(
    conn: &mut AnyConnection,
    id: HostingId,
    now: i64,
    until: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE hosting_databases SET changing_until = $3 \
         WHERE hosting_id = $1 AND ready = 1 AND (changing_until IS NULL OR changing_until <= $2)",
    )
    .bind(id.to_string())
    .bind(now)
    .bind(until)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The claimed change done: the new sealed password, shown at `now` (to whoever set it),
/// and the claim let go. False when the claim was no longer held.
pub async fn finish_password_change(
    conn: &mut AnyConnection,
    id: HostingId,
    until: i64,
    sealed: &str,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE hosting_databases SET secret = $3, shown_at = $4, modified_at = $4, changing_until = NULL \
         WHERE hosting_id = $1 AND changing_until = $2",
    )
    .bind(id.to_string())
    .bind(until)
    .bind(sealed)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Lets go of a claim without a change (the database server refused it).
pub async fn release_password_change(
    conn: &mut AnyConnection,
    id: HostingId,
    until: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE hosting_databases SET changing_until = NULL \
         WHERE hosting_id = $1 AND changing_until = $2",
    )
    .bind(id.to_string())
    .bind(until)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the account's database (dropped from the server).
pub async fn delete(conn: &mut AnyConnection, id: HostingId) -> Result<()> {
    sqlx::query("DELETE FROM hosting_databases WHERE hosting_id = $1")
        .bind(id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}
