//! The registry's side of domains (the EPP registrar, issue 22): what Lodge waits for, what
//! the registry last reported, the daily sync's batches, and the paid line a rejected
//! transfer gives back.

use sqlx::{Any, AnyConnection, Executor};

use crate::hosting::{DomainRow, DOMAIN_COLUMNS};
use crate::Result;
use lodge_core::{DomainId, OrganizationId};

/// Records what Lodge now waits for from the registry (`registering`, `transferring`, or
/// `None`) and the registrar's last error (`None` clears it).
pub async fn set_stage(
    conn: &mut AnyConnection,
    id: DomainId,
    stage: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE domains SET registry_stage = $2, registry_error = $3, modified_at = $4 WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(stage)
    .bind(error)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records which registrar holds a domain (the one its TLD is routed to).
pub async fn set_registrar(
    conn: &mut AnyConnection,
    id: DomainId,
    registrar: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE domains SET registrar = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(registrar)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records the registrar's last error only.
pub async fn set_error(
    conn: &mut AnyConnection,
    id: DomainId,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE domains SET registry_error = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(error)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// What the registry reported for a domain, read back by the sync.
#[derive(Debug, Clone)]
pub struct Reported<'a> {
    pub expiration_date: Option<&'a str>,
    /// JSON list of EPP statuses.
    pub statuses: &'a str,
    /// JSON list of host names, when the registry gave them.
    pub nameservers: Option<&'a str>,
    pub locked: bool,
    pub synced_on: &'a str,
}

/// Stores what the registry reported. The expiration date is the registry's (it is the
/// authority on it); the paid-through `next_billing_date` is Lodge's and stays.
pub async fn record(
    conn: &mut AnyConnection,
    id: DomainId,
    r: &Reported<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE domains SET expiration_date = COALESCE($2, expiration_date), registry_statuses = $3,
             nameservers = COALESCE($4, nameservers), is_locked = $5, registry_synced_on = $6,
             registry_error = NULL, modified_at = $7
         WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(r.expiration_date)
    .bind(r.statuses)
    .bind(r.nameservers)
    .bind(i64::from(r.locked))
    .bind(r.synced_on)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a domain as synced today without a report (e.g. its registrar keeps no registry).
pub async fn mark_synced(
    conn: &mut AnyConnection,
    id: DomainId,
    synced_on: &str,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE domains SET registry_synced_on = $2, registry_error = $3, modified_at = $4 WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(synced_on)
    .bind(error)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Active domains not yet synced on `today`, least recently synced first (a batch).
pub async fn due_for_sync<'e, E: Executor<'e, Database = Any>>(
    db: E,
    today: &str,
    limit: i64,
) -> Result<Vec<DomainRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains
         WHERE status = 'active' AND (registry_synced_on IS NULL OR registry_synced_on < $1)
         ORDER BY registry_synced_on, legacy_id LIMIT $2"
    ))
    .bind(today)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// The domain object waiting for the registry's answer to a transfer of `name`.
pub async fn transferring<'e, E: Executor<'e, Database = Any>>(
    db: E,
    name: &str,
) -> Result<Option<DomainRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = $1 AND status = 'pending_transfer'"
    ))
    .bind(name)
    .fetch_optional(db)
    .await?)
}

/// The paid invoice line that bought a domain's registration or transfer: `(invoice, its
/// amount with tax)`.
pub async fn paid_line<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: DomainId,
) -> Result<Option<(i64, i64)>> {
    Ok(sqlx::query_as::<_, (i64, i64)>(
        "SELECT l.invoice_id, l.amount_minor + l.tax_minor FROM invoice_lines l
         JOIN invoices i ON i.id = l.invoice_id
         WHERE l.service_id = $1 AND l.kind IN ('domain_registration', 'domain_transfer')
           AND i.status IN ('paid', 'partially_refunded')
         ORDER BY l.id LIMIT 1",
    )
    .bind(id.to_string())
    .fetch_optional(db)
    .await?)
}

/// Sets a domain's nameservers (a JSON list) as the registry now has them.
pub async fn set_nameservers(
    conn: &mut AnyConnection,
    id: DomainId,
    nameservers: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE domains SET nameservers = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(nameservers)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets whether a domain is locked against transfer (`clientTransferProhibited`).
pub async fn set_locked(
    conn: &mut AnyConnection,
    id: DomainId,
    locked: bool,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE domains SET is_locked = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(i64::from(locked))
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Every domain in Lodge (staff), newest first, a page, with the total.
pub async fn all_domains<'e, E: Executor<'e, Database = Any> + Copy>(
    db: E,
    limit: i64,
    offset: i64,
) -> Result<(Vec<DomainRow>, i64)> {
    let rows = sqlx::query_as(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains ORDER BY legacy_id DESC LIMIT $1 OFFSET $2"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM domains")
        .fetch_one(db)
        .await?;
    Ok((rows, count))
}

/// The e-mail of an organization's first owner (the registrant contact's address).
pub async fn owner_email<'e, E: Executor<'e, Database = Any>>(
    db: E,
    org: OrganizationId,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id
         WHERE m.organization_id = $1 AND m.role = 'owner' ORDER BY m.created_at LIMIT 1",
    )
    .bind(org.to_string())
    .fetch_optional(db)
    .await?)
}
