//! Servers and account placement.

use lodge_core::{PlanId, ServerId};
use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::hosting::LIVE_HOSTING;
use crate::{vals, Result, SqlConn};

#[derive(Debug, Clone, FromRow)]
pub struct ServerRow {
    pub legacy_id: i64,
    #[sqlx(try_from = "String")]
    pub id: ServerId,
    pub name: String,
    pub hostname: String,
    pub driver: String,
    pub credentials: Option<String>,
    pub ns1: String,
    pub ns2: String,
    pub capacity: i64,
    pub is_active: i64,
    pub created_at: i64,
    pub modified_at: i64,
    /// The node whose worker acts on it (`None`: any).
    pub node: Option<String>,
    /// Live accounts placed on it.
    pub accounts: i64,
}

const COLUMNS: &str = "s.legacy_id, s.id, s.name, s.hostname, s.driver, s.credentials, s.ns1, s.ns2, s.capacity, s.is_active, s.created_at, s.modified_at, s.node";

fn select() -> String {
    format!(
        "SELECT {COLUMNS}, (SELECT COUNT(*) FROM hosting h WHERE h.server_id = s.id AND h.status IN {}) AS accounts FROM servers s",
        *LIVE_HOSTING
    )
}

pub struct ServerInput<'a> {
    pub name: &'a str,
    pub hostname: &'a str,
    pub driver: &'a str,
    pub credentials: Option<&'a str>,
    pub ns1: &'a str,
    pub ns2: &'a str,
    pub capacity: i64,
    pub is_active: bool,
    pub node: Option<&'a str>,
}

pub async fn insert(
    conn: &mut AnyConnection,
    id: ServerId,
    s: &ServerInput<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO servers (id, name, hostname, driver, credentials, ns1, ns2, capacity, is_active, created_at, modified_at, node)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, NULLIF($11, ''))",
    )
    .bind(id.to_string())
    .bind(s.name)
    .bind(s.hostname)
    .bind(s.driver)
    .bind(s.credentials)
    .bind(s.ns1)
    .bind(s.ns2)
    .bind(s.capacity)
    .bind(i64::from(s.is_active))
    .bind(now)
    .bind(s.node)
    .execute(conn)
    .await?;
    Ok(())
}

/// Updates a server; `credentials: None` keeps the stored ones, `node: None` the stored
/// node (`Some("")` clears it).
pub async fn update(
    conn: &mut AnyConnection,
    id: ServerId,
    s: &ServerInput<'_>,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE servers SET name = $2, hostname = $3, driver = $4, credentials = COALESCE($5, credentials),
             ns1 = $6, ns2 = $7, capacity = $8, is_active = $9, modified_at = $10,
             node = CASE WHEN $11 IS NULL THEN node ELSE NULLIF($11, '') END WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(s.name)
    .bind(s.hostname)
    .bind(s.driver)
    .bind(s.credentials)
    .bind(s.ns1)
    .bind(s.ns2)
    .bind(s.capacity)
    .bind(i64::from(s.is_active))
    .bind(now)
    .bind(s.node)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_active(
    conn: &mut AnyConnection,
    id: ServerId,
    active: bool,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query("UPDATE servers SET is_active = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(i64::from(active))
        .bind(now)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_plans(conn: &mut AnyConnection, id: ServerId, plans: &[PlanId]) -> Result<()> {
    sqlx::query("DELETE FROM server_plans WHERE server_id = $1")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    for p in plans {
        sqlx::query("INSERT INTO server_plans (server_id, plan_id) VALUES ($1, $2)")
            .bind(id.to_string())
            .bind(p.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Locks a server's row for the rest of the transaction (on SQLite this first write takes
/// the database's write lock): `false` when there is no such server.
pub async fn lock(conn: &mut AnyConnection, id: ServerId) -> Result<bool> {
    Ok(
        sqlx::query("UPDATE servers SET modified_at = modified_at WHERE id = $1")
            .bind(id.to_string())
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

pub async fn plans_of<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: ServerId,
) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar(
            "SELECT plan_id FROM server_plans WHERE server_id = $1 ORDER BY plan_id",
        )
        .bind(id.to_string())
        .fetch_all(db)
        .await?,
    )
}

pub async fn by_id<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: ServerId,
) -> Result<Option<ServerRow>> {
    Ok(sqlx::query_as(&format!("{} WHERE s.id = $1", select()))
        .bind(id.to_string())
        .fetch_optional(db)
        .await?)
}

pub async fn by_name<'e, E: Executor<'e, Database = Any>>(
    db: E,
    name: &str,
) -> Result<Option<ServerRow>> {
    Ok(sqlx::query_as(&format!("{} WHERE s.name = $1", select()))
        .bind(name)
        .fetch_optional(db)
        .await?)
}

pub async fn all<'e, E: Executor<'e, Database = Any>>(db: E) -> Result<Vec<ServerRow>> {
    Ok(
        sqlx::query_as(&format!("{} ORDER BY s.legacy_id", select()))
            .fetch_all(db)
            .await?,
    )
}

/// The active server of `driver` that serves `plan` (explicitly, or serving no list) and
/// has room. Unlimited servers are taken first without counting their accounts, so placing
/// an order costs the same with a million accounts as with none; limited ones are counted
/// (their count is bounded by their capacity), least loaded first.
///
/// Inside an order's transaction: on PostgreSQL the limited candidates are locked before
/// their accounts are counted, so concurrent orders cannot all take the same last place.
pub async fn place_in<C: SqlConn>(
    conn: &mut C,
    driver: &str,
    plan: PlanId,
) -> Result<Option<Placement>> {
    place_with(conn, driver, plan, true).await
}

/// Where [`place_in`] put an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub server: ServerId,
    /// The server has no capacity limit: the same plan's next account goes there too, for
    /// as long as the transaction runs (servers change outside order transactions).
    pub unlimited: bool,
}

/// Servers of driver `$1` that serve plan `$2` (explicitly, or serving no list).
pub(crate) const SERVES: &str = "s.is_active = 1 AND s.driver = $1
    AND (NOT EXISTS (SELECT 1 FROM server_plans sp WHERE sp.server_id = s.id)
         OR EXISTS (SELECT 1 FROM server_plans sp WHERE sp.server_id = s.id AND sp.plan_id = $2))";

async fn place_with<C: SqlConn>(
    conn: &mut C,
    driver: &str,
    plan: PlanId,
    lock: bool,
) -> Result<Option<Placement>> {
    let unlimited = conn
        .fetch_text(
            &format!(
                "SELECT s.id FROM servers s WHERE {SERVES} AND s.capacity = 0
                 ORDER BY s.legacy_id LIMIT 1"
            ),
            vals![driver, plan.to_string()],
        )
        .await?;
    if let Some(id) = unlimited {
        return Ok(Some(Placement {
            server: crate::parse(&id)?,
            unlimited: true,
        }));
    }
    let locks = if lock {
        crate::dialect::lock_limited_servers(conn.dialect())
    } else {
        None
    };
    if let Some(sql) = locks {
        // The locks are held until the order commits; the count below is a new statement,
        // so it sees every order committed before the lock was granted.
        conn.exec(sql, vals![driver, plan.to_string()]).await?;
    }
    let limited = conn
        .fetch_text(
            &format!(
                "SELECT x.id FROM ({} WHERE {SERVES} AND s.capacity > 0) x
                 WHERE x.accounts < x.capacity ORDER BY x.accounts, x.legacy_id LIMIT 1",
                select()
            ),
            vals![driver, plan.to_string()],
        )
        .await?;
    limited
        .map(|id| {
            Ok(Placement {
                server: crate::parse(&id)?,
                unlimited: false,
            })
        })
        .transpose()
}

/// [`place_in`] on a connection from `pool`, without locking (a check, not a placement).
pub async fn place<C: SqlConn>(
    conn: &mut C,
    driver: &str,
    plan: PlanId,
) -> Result<Option<Placement>> {
    place_with(conn, driver, plan, false).await
}
