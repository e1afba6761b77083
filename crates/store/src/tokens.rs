//! Refresh tokens (migration 0016): each used once, in families that are revoked together
//! when one of them is used twice.

use lodge_core::UserId;

use crate::{vals, Cols, Result, SqlConn};

/// A refresh token's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRow {
    pub family: String,
    pub user_id: UserId,
    pub status: String,
    pub expires_at: i64,
}

pub async fn insert<C: SqlConn>(
    conn: &mut C,
    jti: &str,
    family: &str,
    user: UserId,
    expires_at: i64,
    now: i64,
) -> Result<()> {
    conn.exec(
        "INSERT INTO refresh_tokens (jti, family, user_id, status, expires_at, created_at) \
         VALUES ($1, $2, $3, 'live', $4, $5)",
        vals![jti, family, user.to_string(), expires_at, now],
    )
    .await
    .map(drop)
}

pub async fn get<C: SqlConn>(conn: &mut C, jti: &str) -> Result<Option<RefreshRow>> {
    let Some(row) = conn
        .fetch_row(
            "SELECT family, user_id, status, expires_at FROM refresh_tokens WHERE jti = $1",
            vals![jti],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut c = Cols::new(row);
    Ok(Some(RefreshRow {
        family: c.text()?,
        user_id: c.parse()?,
        status: c.text()?,
        expires_at: c.int()?,
    }))
}

/// `live` → `used`; `false` when it was not live (used or revoked meanwhile).
pub async fn use_once<C: SqlConn>(conn: &mut C, jti: &str, now: i64) -> Result<bool> {
    Ok(conn
        .exec(
            "UPDATE refresh_tokens SET status = 'used', used_at = $2 \
             WHERE jti = $1 AND status = 'live'",
            vals![jti, now],
        )
        .await?
        == 1)
}

/// Whether a family was revoked (a token of it used twice, its user's sessions ended): the
/// access tokens issued with it are refused too.
pub async fn family_revoked<C: SqlConn>(conn: &mut C, family: &str) -> Result<bool> {
    Ok(conn
        .fetch_row(
            "SELECT 1 FROM refresh_tokens WHERE family = $1 AND status = 'revoked' LIMIT 1",
            vals![family],
        )
        .await?
        .is_some())
}

/// Revokes every token of a family; how many were still live.
pub async fn revoke_family<C: SqlConn>(conn: &mut C, family: &str) -> Result<u64> {
    conn.exec(
        "UPDATE refresh_tokens SET status = 'revoked' WHERE family = $1 AND status = 'live'",
        vals![family],
    )
    .await
}

/// Forgets tokens expired before `before` (a replay of one is refused by its expiry).
pub async fn forget_expired<C: SqlConn>(conn: &mut C, before: i64) -> Result<u64> {
    conn.exec(
        "DELETE FROM refresh_tokens WHERE expires_at < $1",
        vals![before],
    )
    .await
}
