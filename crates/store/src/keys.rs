//! API keys and `/apiv2` login sessions. Only digests of secrets are stored.

use lodge_core::{ApiKeyId, OrganizationId, UserId};
use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::Result;

#[derive(Debug, Clone, FromRow)]
pub struct ApiKeyRow {
    #[sqlx(try_from = "String")]
    pub id: ApiKeyId,
    pub display_prefix: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    pub organization_id: Option<String>,
    pub scopes: String,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

impl ApiKeyRow {
    pub fn organization(&self) -> Result<Option<OrganizationId>> {
        self.organization_id
            .as_deref()
            .map(crate::parse)
            .transpose()
    }
}

const COLUMNS: &str = "id, display_prefix, name, user_id, organization_id, scopes, expires_at, last_used_at, revoked_at, created_at";

pub struct NewApiKey<'a> {
    pub id: ApiKeyId,
    pub digest: &'a str,
    pub display_prefix: &'a str,
    pub name: &'a str,
    pub user_id: UserId,
    pub organization_id: Option<OrganizationId>,
    pub scopes: &'a str,
    pub expires_at: Option<i64>,
    pub now: i64,
}

pub async fn insert(conn: &mut AnyConnection, k: &NewApiKey<'_>) -> Result<ApiKeyRow> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO api_keys (id, digest, display_prefix, name, user_id, organization_id, scopes, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    ))
    .bind(k.id.to_string())
    .bind(k.digest)
    .bind(k.display_prefix)
    .bind(k.name)
    .bind(k.user_id.to_string())
    .bind(k.organization_id.map(|o| o.to_string()))
    .bind(k.scopes)
    .bind(k.expires_at)
    .bind(k.now)
    .fetch_one(conn)
    .await?)
}

/// The key whose secret hashes to `digest`, whatever its state (the caller checks expiry and
/// revocation so it can say which).
pub async fn by_digest<'e, E: Executor<'e, Database = Any>>(
    db: E,
    digest: &str,
) -> Result<Option<ApiKeyRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys WHERE digest = $1"))
            .bind(digest)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn page_for_org(
    db: &sqlx::AnyPool,
    org: OrganizationId,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ApiKeyRow>, i64)> {
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE organization_id = $1 ORDER BY legacy_id LIMIT $2 OFFSET $3"
    ))
    .bind(org.to_string())
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE organization_id = $1")
        .bind(org.to_string())
        .fetch_one(db)
        .await?;
    Ok((rows, count))
}

pub async fn by_id_in_org<'e, E: Executor<'e, Database = Any>>(
    db: E,
    org: OrganizationId,
    id: ApiKeyId,
) -> Result<Option<ApiKeyRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE organization_id = $1 AND id = $2"
    ))
    .bind(org.to_string())
    .bind(id.to_string())
    .fetch_optional(db)
    .await?)
}

/// Revokes a key (idempotent: an already revoked key keeps its first revocation time).
pub async fn revoke(conn: &mut AnyConnection, id: ApiKeyId, now: i64) -> Result<()> {
    sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
        .bind(id.to_string())
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records use of a key; callers throttle this so a busy key does not write on every request.
pub async fn touch<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: ApiKeyId,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
        .bind(id.to_string())
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

// ---- sessions (/apiv2 login) ----

/// A session of `user` acting for `organization` (the login's home organization).
pub async fn insert_session<'e, E: Executor<'e, Database = Any>>(
    db: E,
    digest: &str,
    user: UserId,
    organization: OrganizationId,
    expires_at: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (digest, user_id, organization_id, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(digest)
    .bind(user.to_string())
    .bind(organization.to_string())
    .bind(expires_at)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// The user of a live session (not expired at `now`, not revoked) and the organization it
/// acts for (`None` for one opened before sessions kept it).
pub async fn session_user<'e, E: Executor<'e, Database = Any>>(
    db: E,
    digest: &str,
    now: i64,
) -> Result<Option<(UserId, Option<OrganizationId>)>> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT user_id, organization_id FROM sessions \
         WHERE digest = $1 AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(digest)
    .bind(now)
    .fetch_optional(db)
    .await?;
    row.map(|(user, org)| {
        Ok((
            crate::parse(&user)?,
            org.map(|o| crate::parse(&o)).transpose()?,
        ))
    })
    .transpose()
}

pub async fn revoke_session<'e, E: Executor<'e, Database = Any>>(
    db: E,
    digest: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, $2) WHERE digest = $1")
        .bind(digest)
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

/// Every key of an organization (`Some`) or every staff key (`None`: no organization),
/// oldest first, revoked ones too.
pub async fn list<'e, E: Executor<'e, Database = Any>>(
    db: E,
    org: Option<OrganizationId>,
) -> Result<Vec<ApiKeyRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys
         WHERE ($1 = '' AND organization_id IS NULL) OR organization_id = $1
         ORDER BY legacy_id"
    ))
    .bind(org.map(|o| o.to_string()).unwrap_or_default())
    .fetch_all(db)
    .await?)
}

/// A key by its id, whatever it belongs to.
pub async fn by_id<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: ApiKeyId,
) -> Result<Option<ApiKeyRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(db)
            .await?,
    )
}

/// Revokes the keys a user holds for an organization (the user left it); how many.
pub async fn revoke_of_member(
    conn: &mut AnyConnection,
    org: OrganizationId,
    user: UserId,
    now: i64,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE api_keys SET revoked_at = $3
         WHERE organization_id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(org.to_string())
    .bind(user.to_string())
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected())
}
