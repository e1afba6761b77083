//! TLS certificates of hosting accounts (ACME) and the shared ACME account.

use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::Result;

#[derive(Debug, Clone, FromRow)]
pub struct CertificateRow {
    pub hosting_id: String,
    /// `pending`, `issued`, `failed` or `removed`.
    pub status: String,
    pub not_after: Option<i64>,
    pub chain_pem: Option<String>,
    /// Sealed: the installed certificate's private key (PEM).
    pub private_key: Option<String>,
    pub order_url: Option<String>,
    /// Sealed: the private key of the order in progress (its CSR's).
    pub order_key: Option<String>,
    pub last_error: Option<String>,
    pub issued_at: Option<i64>,
    pub created_at: i64,
    pub modified_at: i64,
}

const COLUMNS: &str = "hosting_id, status, not_after, chain_pem, private_key, order_url, order_key, last_error, issued_at, created_at, modified_at";

pub async fn by_hosting<'e, E: Executor<'e, Database = Any>>(
    db: E,
    hosting_id: &str,
) -> Result<Option<CertificateRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM certificates WHERE hosting_id = $1"
    ))
    .bind(hosting_id)
    .fetch_optional(db)
    .await?)
}

/// Makes the row (`pending`) when there is none.
pub async fn ensure(conn: &mut AnyConnection, hosting_id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO certificates (hosting_id, status, created_at, modified_at)
         VALUES ($1, 'pending', $2, $2) ON CONFLICT (hosting_id) DO NOTHING",
    )
    .bind(hosting_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// An order begun: its URL and its key (sealed), the status `pending` unless a certificate
/// is installed (a renewal keeps showing `issued` until the new one replaces it).
pub async fn set_order(
    conn: &mut AnyConnection,
    hosting_id: &str,
    order_url: Option<&str>,
    order_key: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE certificates SET order_url = $2, order_key = $3,
             status = CASE WHEN status = 'issued' THEN 'issued' ELSE 'pending' END,
             modified_at = $4
         WHERE hosting_id = $1",
    )
    .bind(hosting_id)
    .bind(order_url)
    .bind(order_key)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The new certificate installed: it and its key (sealed) become the account's.
pub async fn set_issued(
    conn: &mut AnyConnection,
    hosting_id: &str,
    chain_pem: &str,
    private_key: &str,
    not_after: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE certificates SET status = 'issued', chain_pem = $2, private_key = $3,
             not_after = $4, issued_at = $5, order_url = NULL, order_key = NULL,
             last_error = NULL, modified_at = $5
         WHERE hosting_id = $1",
    )
    .bind(hosting_id)
    .bind(chain_pem)
    .bind(private_key)
    .bind(not_after)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A failed attempt: its error; a certificate still installed stays `issued` (it serves
/// until it expires), else the status becomes `failed`.
pub async fn set_failed(
    conn: &mut AnyConnection,
    hosting_id: &str,
    error: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE certificates SET last_error = $2,
             status = CASE WHEN status IN ('issued', 'removed') THEN status ELSE 'failed' END,
             modified_at = $3
         WHERE hosting_id = $1",
    )
    .bind(hosting_id)
    .bind(error)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// After termination: no renewals any more.
pub async fn set_removed(conn: &mut AnyConnection, hosting_id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE certificates SET status = 'removed', order_url = NULL, order_key = NULL,
             modified_at = $2
         WHERE hosting_id = $1",
    )
    .bind(hosting_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Live accounts (active or suspended) on servers of `driver` whose certificate needs a
/// job and has none queued or running: no certificate yet (none asked for: e.g. ACME turned
/// on after they were made), an installed one expiring before `before`, or a first issuance
/// or renewal whose job ran out of attempts (`pending`/`failed` with no live job). The
/// hosting id and the current certificate's `not_after` (0 when none), earliest first.
/// Accounts whose job is still retrying are left out, so they never crowd out the others.
pub async fn due<'e, E: Executor<'e, Database = Any>>(
    db: E,
    driver: &str,
    before: i64,
    limit: i64,
) -> Result<Vec<(String, i64)>> {
    // The jobs of one account's certificate have dedupe keys `tls:<hosting id>:…`: a range
    // of the unique index (':' + 1 = ';').
    Ok(sqlx::query_as(
        "SELECT h.id, COALESCE(c.not_after, 0)
         FROM hosting h
         JOIN servers s ON s.id = h.server_id
         LEFT JOIN certificates c ON c.hosting_id = h.id
         WHERE h.status IN ('active', 'suspended') AND s.driver = $1
           AND (c.hosting_id IS NULL OR c.status IN ('pending', 'failed')
                OR (c.status = 'issued' AND c.not_after < $2))
           AND NOT EXISTS (SELECT 1 FROM jobs j
                           WHERE j.dedupe_key >= 'tls:' || h.id || ':'
                             AND j.dedupe_key < 'tls:' || h.id || ';'
                             AND j.status IN ('queued', 'running'))
         ORDER BY COALESCE(c.not_after, 0), h.legacy_id
         LIMIT $3",
    )
    .bind(driver)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// The ACME account's sealed credentials for a CA directory.
pub async fn acme_account<'e, E: Executor<'e, Database = Any>>(
    db: E,
    directory_url: &str,
) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT credentials FROM acme_accounts WHERE directory_url = $1")
            .bind(directory_url)
            .fetch_optional(db)
            .await?,
    )
}

/// Stores the account's sealed credentials unless another node stored its own first
/// (then that one is used: read it back).
pub async fn put_acme_account(
    conn: &mut AnyConnection,
    directory_url: &str,
    credentials: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO acme_accounts (directory_url, credentials, created_at)
         VALUES ($1, $2, $3) ON CONFLICT (directory_url) DO NOTHING",
    )
    .bind(directory_url)
    .bind(credentials)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
