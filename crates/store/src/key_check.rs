//! The installation's key check: one value sealed with the secret key, which every node
//! opening the database must be able to open (migration 0038).

use sqlx::{Any, Executor};

use crate::Result;

/// The sealed check value, if a node wrote it.
pub async fn sealed<'e, E: Executor<'e, Database = Any>>(db: E) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar::<_, String>("SELECT sealed FROM key_check WHERE id = 1")
            .fetch_optional(db)
            .await?,
    )
}

/// Writes the check value unless one is there already (the first node wins; the caller
/// reads back which).
pub async fn insert<'e, E: Executor<'e, Database = Any>>(
    db: E,
    sealed: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO key_check (id, sealed, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(sealed)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// A secret sealed before the check existed (a webhook's signing secret, a panel server's
/// credentials, an account's or its database's password, a transfer code, an ACME account
/// or a certificate's key), to check a key against on a database that has no check value
/// yet.
pub async fn some_sealed_secret<'e, E: Executor<'e, Database = Any> + Copy>(
    db: E,
) -> Result<Option<String>> {
    for sql in [
        "SELECT secret FROM webhook_endpoints LIMIT 1",
        "SELECT credentials FROM servers WHERE credentials IS NOT NULL LIMIT 1",
        "SELECT secret FROM hosting WHERE secret IS NOT NULL LIMIT 1",
        "SELECT secret FROM hosting_databases LIMIT 1",
        "SELECT epp_code FROM domains WHERE epp_code IS NOT NULL LIMIT 1",
        "SELECT credentials FROM acme_accounts LIMIT 1",
        "SELECT private_key FROM certificates WHERE private_key IS NOT NULL LIMIT 1",
    ] {
        if let Some(s) = sqlx::query_scalar::<_, String>(sql)
            .fetch_optional(db)
            .await?
        {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Whether the database holds any invoice (whose payment links come from the key).
pub async fn has_invoices<'e, E: Executor<'e, Database = Any>>(db: E) -> Result<bool> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT id FROM invoices LIMIT 1")
            .fetch_optional(db)
            .await?
            .is_some(),
    )
}
