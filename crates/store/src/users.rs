//! Users (people who log in) and staff.

use lodge_core::UserId;
use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::Result;

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    #[sqlx(try_from = "String")]
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub is_staff: i64,
    pub is_active: i64,
    pub created_at: i64,
    /// Login tokens issued before this instant (µs) are refused ([`end_sessions`]).
    pub tokens_after: i64,
}

impl UserRow {
    pub fn is_staff(&self) -> bool {
        self.is_staff == 1
    }
    pub fn is_active(&self) -> bool {
        self.is_active == 1
    }
}

const COLUMNS: &str =
    "id, email, name, password_hash, is_staff, is_active, created_at, tokens_after";

pub struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: Option<&'a str>,
    pub is_staff: bool,
    pub now: i64,
}

pub async fn insert(conn: &mut AnyConnection, u: &NewUser<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, is_staff, is_active, created_at, modified_at)
         VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
    )
    .bind(u.id.to_string())
    .bind(u.email)
    .bind(u.name)
    .bind(u.password_hash)
    .bind(i64::from(u.is_staff))
    .bind(u.now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn by_email<'e, E: Executor<'e, Database = Any>>(
    db: E,
    email: &str,
) -> Result<Option<UserRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE email = $1"))
            .bind(email)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn by_id<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: UserId,
) -> Result<Option<UserRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(db)
            .await?,
    )
}

pub async fn set_password(
    conn: &mut AnyConnection,
    id: UserId,
    password_hash: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE users SET password_hash = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(password_hash)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Turns a user's logins on or off (a departed employee, a customer shut out): every
/// credential of an inactive user is refused (its API keys, tokens and sessions).
/// `false` when there is no such user.
pub async fn set_active(
    conn: &mut AnyConnection,
    id: UserId,
    active: bool,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query("UPDATE users SET is_active = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(i64::from(active))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    if !active {
        // Its sessions end for good (a later reactivation does not bring them back).
        end_sessions(conn, id, now).await?;
    }
    Ok(true)
}

/// Ends a user's `/apiv2` sessions and `/v1` refresh tokens (deactivated, or its password
/// changed); its API keys are not sessions and stay.
pub async fn end_sessions(conn: &mut AnyConnection, id: UserId, now: i64) -> Result<()> {
    sqlx::query("UPDATE users SET tokens_after = $2 WHERE id = $1")
        .bind(id.to_string())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, $2) WHERE user_id = $1")
        .bind(id.to_string())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET status = 'revoked' WHERE user_id = $1 AND status = 'live'",
    )
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The newest users, at most `limit`; only those made before the user `before` when given
/// (the next page), in the order they were made (their `legacy_id`).
pub async fn newest<'e, E: Executor<'e, Database = Any>>(
    db: E,
    before: Option<UserId>,
    limit: i64,
) -> Result<Vec<UserRow>> {
    // No `before`: below no user's, so every one.
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users
         WHERE legacy_id < COALESCE((SELECT legacy_id FROM users WHERE id = $2), $3)
         ORDER BY legacy_id DESC LIMIT $1"
    ))
    .bind(limit)
    .bind(before.map(|u| u.to_string()).unwrap_or_default())
    .bind(i64::MAX)
    .fetch_all(db)
    .await?)
}
