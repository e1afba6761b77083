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

/// Domains waiting for their registry (a registration asked for, a transfer requested)
/// that nothing has touched since `before`, least recently touched first.
pub async fn stale_pending<'e, E: Executor<'e, Database = Any>>(
    db: E,
    before: i64,
    limit: i64,
) -> Result<Vec<DomainRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains
         WHERE ((status = 'pending_registration' AND registry_stage = 'registering')
             OR (status = 'pending_transfer' AND registry_stage = 'transferring'))
           AND modified_at < $1
         ORDER BY modified_at LIMIT $2"
    ))
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// The domain object of `name` waiting for its registry: a registration asked for
/// (`pending_registration`, stage `registering`) or a transfer (`pending_transfer`).
pub async fn awaiting_registry<'e, E: Executor<'e, Database = Any>>(
    db: E,
    name: &str,
) -> Result<Option<DomainRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = $1
         AND (status = 'pending_transfer'
              OR (status = 'pending_registration' AND registry_stage = 'registering'))"
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

/// A step staff must take at a registry by hand (migration 0037).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegistryTaskRow {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub domain_id: DomainId,
    /// `renew`, `nameservers` or `lock`.
    pub kind: String,
    /// What to do, as JSON (`{"years":1,"expiration_date":…}`, `{"nameservers":[…]}`,
    /// `{"locked":true}`).
    pub detail: String,
    pub created_at: i64,
    pub done_at: Option<i64>,
    pub done_by: Option<String>,
    /// `done`, or `superseded` (a later change of the same kind replaced it).
    pub outcome: Option<String>,
    /// The domain's name, for the list.
    pub domain_name: String,
}

const TASK_COLUMNS: &str = "t.id, t.domain_id, t.kind, t.detail, t.created_at, t.done_at, t.done_by, t.outcome, d.name AS domain_name";

/// Adds a task (once per `source`: a retried job's is the same task); whether it was new.
/// A `nameservers` or `lock` task supersedes the domain's open one of its kind: only the
/// latest change is to be made.
pub async fn add_task(
    conn: &mut AnyConnection,
    domain: DomainId,
    kind: &str,
    detail: &str,
    source: &str,
    now: i64,
) -> Result<bool> {
    if kind != "renew" {
        sqlx::query(
            "UPDATE registry_tasks SET done_at = $3, done_by = 'lodge', outcome = 'superseded'
             WHERE domain_id = $1 AND kind = $2 AND done_at IS NULL",
        )
        .bind(domain.to_string())
        .bind(kind)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    let r = sqlx::query(
        "INSERT INTO registry_tasks (domain_id, kind, detail, source, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source) DO NOTHING",
    )
    .bind(domain.to_string())
    .bind(kind)
    .bind(detail)
    .bind(source)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Staff's tasks, oldest first, a page, with the total: the open ones, or all (`open`
/// false), optionally of one domain.
pub async fn tasks<'e, E: Executor<'e, Database = Any> + Copy>(
    db: E,
    open: bool,
    domain: Option<DomainId>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<RegistryTaskRow>, i64)> {
    let filter = "($1 = 0 OR t.done_at IS NULL) AND ($2 = '' OR t.domain_id = $2)";
    let domain = domain.map(|d| d.to_string()).unwrap_or_default();
    let rows = sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM registry_tasks t JOIN domains d ON d.id = t.domain_id
         WHERE {filter} ORDER BY t.id LIMIT $3 OFFSET $4"
    ))
    .bind(i64::from(open))
    .bind(&domain)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let count: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM registry_tasks t WHERE {filter}"
    ))
    .bind(i64::from(open))
    .bind(&domain)
    .fetch_one(db)
    .await?;
    Ok((rows, count))
}

/// One task.
pub async fn task<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
) -> Result<Option<RegistryTaskRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM registry_tasks t JOIN domains d ON d.id = t.domain_id WHERE t.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Marks an open task done; `false` when it was not open.
pub async fn finish_task(conn: &mut AnyConnection, id: i64, by: &str, now: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE registry_tasks SET done_at = $2, done_by = $3, outcome = 'done'
         WHERE id = $1 AND done_at IS NULL",
    )
    .bind(id)
    .bind(now)
    .bind(by)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}
