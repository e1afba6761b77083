//! Hosting accounts (with their status history) and domains.

use lodge_core::{
    CancelKind, DomainEvent, DomainId, DomainStatus, HostingEvent, HostingId, HostingStatus,
    OrganizationId, PlanId, ProjectId, Status,
};
use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::{vals, Cols, Result, SqlConn, Val};

/// Statuses in which a hosting account holds its domain name (`('pending', …)`), from
/// [`HostingStatus::is_live`]; the partial index `hosting_live_name` repeats the list.
pub static LIVE_HOSTING: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| in_list(HostingStatus::ALL.iter().filter(|s| s.is_live())));

/// `('a', 'b', …)`: statuses as a SQL list.
pub(crate) fn in_list<S: Status>(statuses: impl Iterator<Item = &'static S>) -> String {
    let quoted: Vec<String> = statuses.map(|s| format!("'{}'", s.as_str())).collect();
    format!("({})", quoted.join(", "))
}

/// Which of a list of names (`$IDS`) live hosting accounts carry, through the partial
/// index `hosting_live_name`: its condition is written as the index's is on SQLite (with
/// `=` and `OR`, see `expand_in_lists`), as SQLite uses a partial index only for a query
/// that repeats its condition. PostgreSQL proves the condition from either form.
pub(crate) static LIVE_HOSTING_NAMES: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        let live = crate::expand_in_lists(&format!("status IN {}", *LIVE_HOSTING));
        format!("SELECT DISTINCT domain_name FROM hosting WHERE domain_name IN ($IDS) AND {live}")
    });

#[derive(Debug, Clone, FromRow)]
pub struct HostingRow {
    pub legacy_id: i64,
    #[sqlx(try_from = "String")]
    pub id: HostingId,
    #[sqlx(try_from = "String")]
    pub organization_id: OrganizationId,
    #[sqlx(try_from = "String")]
    pub project_id: ProjectId,
    pub project_name: String,
    pub order_id: i64,
    #[sqlx(try_from = "String")]
    pub plan_id: PlanId,
    pub domain_name: String,
    pub domain_id: Option<String>,
    pub server_id: Option<String>,
    pub username: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: HostingStatus,
    pub billing_cycle: String,
    pub recurring_minor: i64,
    pub first_period_months: Option<i64>,
    pub renewal_months: Option<i64>,
    pub currency: String,
    pub coupon_id: Option<String>,
    pub next_due_date: Option<String>,
    /// The column; read it as [`HostingRow::cancel_kind`].
    pub cancel_type: Option<String>,
    pub cancel_reason: Option<String>,
    pub cancel_requested_at: Option<i64>,
    pub cancel_effective_date: Option<String>,
    pub last_error: Option<String>,
    pub comment: String,
    pub created_at: i64,
    pub modified_at: i64,
}

impl HostingRow {
    /// The cancellation pending on it, if any.
    pub fn cancel_kind(&self) -> Option<CancelKind> {
        self.cancel_type.as_deref().and_then(CancelKind::parse)
    }
}

const HOSTING_COLUMNS: &str = "h.legacy_id, h.id, h.organization_id, h.project_id, p.name AS project_name, h.order_id, h.plan_id,
    h.domain_name, h.domain_id, h.server_id, h.username, h.status, h.billing_cycle, h.recurring_minor, h.first_period_months, h.renewal_months,
    h.currency, h.coupon_id, h.next_due_date, h.cancel_type, h.cancel_reason, h.cancel_requested_at,
    h.cancel_effective_date, h.last_error, h.comment, h.created_at, h.modified_at";
const HOSTING_FROM: &str = "hosting h JOIN projects p ON p.id = h.project_id";

pub struct NewHosting<'a> {
    pub id: HostingId,
    pub organization_id: OrganizationId,
    pub project_id: ProjectId,
    pub order_id: i64,
    pub plan_id: PlanId,
    pub domain_name: &'a str,
    pub domain_id: Option<DomainId>,
    pub status: HostingStatus,
    pub billing_cycle: &'a str,
    pub recurring_minor: i64,
    pub first_period_months: Option<i64>,
    pub renewal_months: Option<i64>,
    pub currency: &'a str,
    pub coupon_id: Option<String>,
    pub secret: Option<String>,
    pub comment: &'a str,
    pub server_id: Option<String>,
    pub next_due_date: Option<String>,
    /// The first period's start, from which later periods are counted.
    pub period_anchor: Option<String>,
    /// The first history entry's note.
    pub note: &'a str,
    pub actor: &'a str,
    pub now: i64,
}

const INSERT_HOSTING: &str =
    "INSERT INTO hosting (id, organization_id, project_id, order_id, plan_id, domain_name, domain_id, status,
         billing_cycle, recurring_minor, first_period_months, renewal_months, currency, coupon_id, secret, comment, server_id, next_due_date, period_anchor, created_at, modified_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20)";

/// [`INSERT_HOSTING`] with its legacy id given (reserved,
/// [`crate::billing::reserve_order_keys`]).
pub(crate) static INSERT_HOSTING_KEYED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::deferred::with_key_column(INSERT_HOSTING, "legacy_id"));

fn hosting_args(h: &NewHosting<'_>) -> Vec<Val> {
    vals![
        h.id.to_string(),
        h.organization_id.to_string(),
        h.project_id.to_string(),
        h.order_id,
        h.plan_id.to_string(),
        h.domain_name,
        h.domain_id.map(|d| d.to_string()),
        h.status.as_str(),
        h.billing_cycle,
        h.recurring_minor,
        h.first_period_months,
        h.renewal_months,
        h.currency,
        h.coupon_id.clone(),
        h.secret.clone(),
        h.comment,
        h.server_id.clone(),
        h.next_due_date.clone(),
        h.period_anchor.clone(),
        h.now,
    ]
}

/// Inserts a hosting account and its first history entry; returns its legacy id.
pub async fn insert_hosting<C: SqlConn>(conn: &mut C, h: &NewHosting<'_>) -> Result<i64> {
    insert_hosting_keyed(conn, h, None).await
}

/// [`insert_hosting`], or with the legacy id reserved for it as rows written later (its
/// history too, [`crate::billing::insert_keyed`]). Returns its legacy id.
pub async fn insert_hosting_keyed<C: SqlConn>(
    conn: &mut C,
    h: &NewHosting<'_>,
    reserved: Option<i64>,
) -> Result<i64> {
    let sql = (INSERT_HOSTING, INSERT_HOSTING_KEYED.as_str());
    let legacy =
        crate::billing::insert_keyed(conn, sql, "legacy_id", hosting_args(h), reserved).await?;
    record_history(conn, h.id, None, h.status, h.note, h.actor, h.now).await?;
    Ok(legacy)
}

pub(crate) const INSERT_HISTORY: &str =
    "INSERT INTO hosting_history (hosting_id, from_status, to_status, note, actor, created_at)
     VALUES ($1, $2, $3, $4, $5, $6)";

pub async fn record_history<C: SqlConn>(
    conn: &mut C,
    hosting: HostingId,
    from: Option<HostingStatus>,
    to: HostingStatus,
    note: &str,
    actor: &str,
    now: i64,
) -> Result<()> {
    conn.insert_later(
        INSERT_HISTORY,
        vals![
            hosting.to_string(),
            from.map(HostingStatus::as_str),
            to.as_str(),
            note,
            actor,
            now
        ],
    )
    .await
}

/// An account's move from one status (`$4`) to another (`$2`), at `$3`.
pub(crate) const MOVE_FROM: &str =
    "UPDATE hosting SET status = $2, modified_at = $3 WHERE id = $1 AND status = $4";

/// A domain object's move from one status (`$4`) to another (`$2`), at `$3`.
pub(crate) const DOMAIN_MOVE_FROM: &str =
    "UPDATE domains SET status = $2, modified_at = $3 WHERE id = $1 AND status = $4";

/// Applies `event` to a hosting account under its row lock, recording it in its history;
/// `false` (and nothing written) when the account's status does not accept the event
/// ([`HostingStatus::next`]) or it does not exist.
///
/// An event with one source status is one conditional update, which PostgreSQL checks
/// again on the row as it is once locked; otherwise the status is read under the row's
/// lock, then updated. (A payment's `pending` → `provisioning`, which also starts the
/// billing periods, is [`crate::billing::PendingActivations`].)
pub async fn transition<C: SqlConn>(
    conn: &mut C,
    id: HostingId,
    event: HostingEvent,
    note: &str,
    actor: &str,
    now: i64,
) -> Result<bool> {
    let mut args = vals![id.to_string()];
    let (from, to, only_from) = match HostingStatus::sources(event).as_slice() {
        [only] => {
            let Some(to) = only.next(event) else {
                return Ok(false);
            };
            (*only, to, true)
        }
        _ => {
            let sql = crate::dialect::lock_hosting_status(conn.dialect());
            let Some(current) = conn.fetch_text(sql, args.clone()).await? else {
                return Ok(false);
            };
            let current: HostingStatus = crate::parse(&current)?;
            let Some(to) = current.next(event) else {
                return Ok(false);
            };
            (current, to, false)
        }
    };
    args.push(to.as_str().into());
    args.push(now.into());
    let sql = if only_from {
        args.push(from.as_str().into());
        MOVE_FROM
    } else {
        "UPDATE hosting SET status = $2, modified_at = $3 WHERE id = $1"
    };
    if conn.exec(sql, args).await? == 0 {
        return Ok(false);
    }
    record_history(conn, id, Some(from), to, note, actor, now).await?;
    Ok(true)
}

/// A hosting account, locked for the rest of the transaction (see
/// [`crate::dialect::lock_hosting_status`]): read and changed by one transaction at a time.
pub async fn lock_hosting(conn: &mut AnyConnection, id: HostingId) -> Result<Option<HostingRow>> {
    let sql = crate::dialect::lock_hosting_status(crate::SqlConn::dialect(&*conn));
    if conn.fetch_text(sql, vals![id.to_string()]).await?.is_none() {
        return Ok(None);
    }
    hosting(&mut *conn, id).await
}

/// What activating or cancelling an order needs of each of its hosting accounts: the id,
/// the first period's months and the domain object.
pub async fn order_accounts<C: SqlConn>(
    conn: &mut C,
    order_id: i64,
) -> Result<Vec<(HostingId, Option<i64>, Option<DomainId>)>> {
    conn.fetch_rows(
        "SELECT id, first_period_months, domain_id FROM hosting WHERE order_id = $1 ORDER BY legacy_id",
        vals![order_id],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = crate::Cols::new(row);
        let id = c.parse()?;
        let months = c.opt_int()?;
        let domain = c.opt_text()?.map(|d| crate::parse(&d)).transpose()?;
        Ok((id, months, domain))
    })
    .collect()
}

/// The status of a domain object the order brought (registered or transferred with it);
/// `None` for one it did not bring (already in the account), or that does not exist.
pub async fn domain_status_of_order<C: SqlConn>(
    conn: &mut C,
    id: DomainId,
    order_id: i64,
) -> Result<Option<DomainStatus>> {
    conn.fetch_text(
        "SELECT status FROM domains WHERE id = $1 AND order_id = $2",
        vals![id.to_string(), order_id],
    )
    .await?
    .map(|s| crate::parse(&s))
    .transpose()
}

pub async fn set_cancellation(
    conn: &mut AnyConnection,
    id: HostingId,
    kind: Option<CancelKind>,
    reason: Option<&str>,
    requested_at: Option<i64>,
    effective_date: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE hosting SET cancel_type = $2, cancel_reason = $3, cancel_requested_at = $4,
             cancel_effective_date = $5, modified_at = $6 WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(kind.map(CancelKind::as_str))
    .bind(reason)
    .bind(requested_at)
    .bind(effective_date)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn hosting<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: HostingId,
) -> Result<Option<HostingRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {HOSTING_COLUMNS} FROM {HOSTING_FROM} WHERE h.id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(db)
    .await?)
}

/// Staff's search of every organization's accounts, newest first: by exact domain name,
/// organization and status (each `""`: any), at most `limit`.
pub async fn search<'e, E: Executor<'e, Database = Any>>(
    db: E,
    domain: &str,
    organization: &str,
    status: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<HostingRow>> {
    // Only the filters given are in the statement (found by the big-database audit: with
    // `($n = '' OR …)` for each, both engines scanned the whole table whatever was asked,
    // PostgreSQL's generic plan 120–220 ms at 250,000 accounts, where an organization's
    // accounts are an index range).
    let mut conds = Vec::new();
    let mut binds: Vec<&str> = Vec::new();
    for (column, value) in [
        ("h.domain_name", domain),
        ("h.organization_id", organization),
        ("h.status", status),
    ] {
        if !value.is_empty() {
            binds.push(value);
            conds.push(format!("{column} = ${}", binds.len()));
        }
    }
    // The next page: older than the last one's `legacy_id` (a number, written in).
    if let Some(before) = before {
        conds.push(format!("h.legacy_id < {before}"));
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    let sql = format!(
        "SELECT {HOSTING_COLUMNS} FROM {HOSTING_FROM} {filter} \
         ORDER BY h.legacy_id DESC LIMIT ${}",
        binds.len() + 1
    );
    let mut q = sqlx::query_as(&sql);
    for b in binds {
        q = q.bind(b);
    }
    Ok(q.bind(limit).fetch_all(db).await?)
}

pub async fn hosting_by_legacy<'e, E: Executor<'e, Database = Any>>(
    db: E,
    org: OrganizationId,
    legacy_id: i64,
) -> Result<Option<HostingRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {HOSTING_COLUMNS} FROM {HOSTING_FROM} WHERE h.organization_id = $1 AND h.legacy_id = $2"
    ))
    .bind(org.to_string())
    .bind(legacy_id)
    .fetch_optional(db)
    .await?)
}

/// A page of hosting accounts of an organization, optionally of one project.
pub async fn hosting_page(
    db: &sqlx::AnyPool,
    org: OrganizationId,
    project: Option<ProjectId>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<HostingRow>, i64)> {
    let project = project.map(|p| p.to_string());
    let filter = "h.organization_id = $1 AND ($2 IS NULL OR h.project_id = $2)";
    let rows = sqlx::query_as(&format!(
        "SELECT {HOSTING_COLUMNS} FROM {HOSTING_FROM} WHERE {filter} ORDER BY h.legacy_id LIMIT $3 OFFSET $4"
    ))
    .bind(org.to_string())
    .bind(project.clone())
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let count = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM hosting h WHERE {filter}"))
        .bind(org.to_string())
        .bind(project)
        .fetch_one(db)
        .await?;
    Ok((rows, count))
}

/// Whether a live hosting account answers to this name: carries it, or its other form
/// with or without `www.` ([`lodge_core::domain::site_forms`]).
pub async fn live_hosting_for_name<C: SqlConn>(conn: &mut C, name: &str) -> Result<bool> {
    let [site, www] = lodge_core::domain::site_forms(name);
    Ok(!live_hosting_names(conn, &[&site, &www]).await?.is_empty())
}

/// Whether a live hosting account of another organization than `org` carries one of
/// `parents` (the sites above a name's, [`lodge_core::domain::parent_sites`]), in either
/// form.
pub async fn live_parent_elsewhere<C: SqlConn>(
    conn: &mut C,
    parents: &[&str],
    org: OrganizationId,
) -> Result<bool> {
    if parents.is_empty() {
        return Ok(false);
    }
    // Each parent in both forms: a site is hosted as `x` or as `www.x`.
    let forms: Vec<String> = parents
        .iter()
        .flat_map(|p| lodge_core::domain::site_forms(p))
        .collect();
    let live = crate::expand_in_lists(&format!("status IN {}", *LIVE_HOSTING));
    let names = (0..forms.len())
        .map(|i| format!("${}", i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT COUNT(*) FROM hosting WHERE domain_name IN ({names}) AND {live} \
         AND organization_id <> $1"
    );
    let mut args = vec![crate::Val::from(org.to_string())];
    args.extend(forms.into_iter().map(crate::Val::from));
    Ok(conn.fetch_int(&sql, args).await?.unwrap_or(0) > 0)
}

/// Which of `names` live hosting accounts carry, in one statement (as
/// [`live_hosting_for_name`] for each).
pub async fn live_hosting_names<C: SqlConn>(
    conn: &mut C,
    names: &[&str],
) -> Result<std::collections::HashSet<String>> {
    let Some((sql, args)) =
        crate::conn::over_distinct_ids(&LIVE_HOSTING_NAMES, names.iter().map(|n| (*n).to_owned()))
    else {
        return Ok(std::collections::HashSet::new());
    };
    let mut out = std::collections::HashSet::new();
    for row in conn.fetch_rows(&sql, args).await? {
        out.insert(crate::Cols::new(row).text()?);
    }
    Ok(out)
}

/// [`LIVE_HOSTING_NAMES`] and, in the same statement, the live domain objects among the
/// names with their organizations (`h` rows: hosting names; `d` rows: domains).
static LIVE_NAMES_AND_DOMAINS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let hosting = crate::expand_in_lists(&format!("status IN {}", *LIVE_HOSTING));
    let domains = crate::expand_in_lists(&format!("status IN {}", *LIVE_DOMAIN));
    format!(
        "SELECT DISTINCT domain_name, 'h', '' FROM hosting WHERE domain_name IN ($IDS) AND {hosting} \
         UNION ALL SELECT name, 'd', organization_id FROM domains WHERE name IN ($IDS) AND {domains}"
    )
});

/// Which of `names` live hosting accounts carry, and which live domain objects hold (with
/// their organization), in one statement: what a batch of orders reads first.
pub async fn live_names_and_domains<C: SqlConn>(
    conn: &mut C,
    names: &[&str],
) -> Result<(
    std::collections::HashSet<String>,
    std::collections::HashMap<String, OrganizationId>,
)> {
    let mut hosted = std::collections::HashSet::new();
    let mut held = std::collections::HashMap::new();
    let Some((sql, args)) = crate::conn::over_distinct_ids(
        &LIVE_NAMES_AND_DOMAINS,
        names.iter().map(|n| (*n).to_owned()),
    ) else {
        return Ok((hosted, held));
    };
    for row in conn.fetch_rows(&sql, args).await? {
        let mut c = crate::Cols::new(row);
        let (name, kind) = (c.text()?, c.text()?);
        if kind == "d" {
            held.insert(name, c.parse()?);
        } else {
            hosted.insert(name);
        }
    }
    Ok((hosted, held))
}

/// Whether a live domain object of another organization than `org` holds `name` (a
/// registrable domain): its sites are that organization's to host.
pub async fn domain_held_elsewhere<C: SqlConn>(
    conn: &mut C,
    name: &str,
    org: OrganizationId,
) -> Result<bool> {
    Ok(conn
        .fetch_int(&LIVE_DOMAIN_ELSEWHERE, vals![name, org.to_string()])
        .await?
        .unwrap_or(0)
        > 0)
}

#[derive(Debug, Clone, FromRow)]
pub struct HistoryRow {
    pub from_status: Option<String>,
    pub to_status: String,
    pub note: String,
    pub actor: String,
    pub created_at: i64,
}

pub async fn history<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: HostingId,
) -> Result<Vec<HistoryRow>> {
    Ok(sqlx::query_as(
        "SELECT from_status, to_status, note, actor, created_at FROM hosting_history
         WHERE hosting_id = $1 ORDER BY id",
    )
    .bind(id.to_string())
    .fetch_all(db)
    .await?)
}

// ---- domains ----

#[derive(Debug, Clone, FromRow)]
pub struct DomainRow {
    pub legacy_id: i64,
    #[sqlx(try_from = "String")]
    pub id: DomainId,
    #[sqlx(try_from = "String")]
    pub organization_id: OrganizationId,
    #[sqlx(try_from = "String")]
    pub project_id: ProjectId,
    pub order_id: Option<i64>,
    pub name: String,
    pub sld: String,
    pub tld: String,
    #[sqlx(try_from = "String")]
    pub status: DomainStatus,
    pub registrar: String,
    pub registration_date: Option<String>,
    pub expiration_date: Option<String>,
    pub auto_renew: i64,
    pub is_locked: i64,
    pub nameservers: String,
    pub next_billing_date: Option<String>,
    pub created_at: i64,
    pub modified_at: i64,
    /// What Lodge waits for from the registry: `registering`, `transferring` or nothing.
    pub registry_stage: Option<String>,
    /// The EPP statuses the registry last reported (a JSON list).
    pub registry_statuses: String,
    /// The day the registry was last read back (`YYYY-MM-DD`).
    pub registry_synced_on: Option<String>,
    /// The registrar's last error about this domain.
    pub registry_error: Option<String>,
}

pub(crate) const DOMAIN_COLUMNS: &str = "legacy_id, id, organization_id, project_id, order_id, name, sld, tld, status, registrar,
    registration_date, expiration_date, auto_renew, is_locked, nameservers, next_billing_date, created_at, modified_at,
    registry_stage, registry_statuses, registry_synced_on, registry_error";

/// Statuses in which a domain object holds its name, from [`DomainStatus::is_live`]; the
/// partial index `domains_live_name` repeats the list.
pub static LIVE_DOMAIN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| in_list(DomainStatus::ALL.iter().filter(|s| s.is_live())));

/// Counts the live domain objects holding a name, through the partial index
/// `domains_live_name` (written as [`LIVE_HOSTING_NAMES`] is).
pub(crate) static LIVE_DOMAIN_FOR_NAME: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        let live = crate::expand_in_lists(&format!("status IN {}", *LIVE_DOMAIN));
        format!("SELECT COUNT(*) FROM domains WHERE name = $1 AND {live}")
    });

/// [`LIVE_DOMAIN_FOR_NAME`] of another organization than `$2`.
static LIVE_DOMAIN_ELSEWHERE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{} AND organization_id <> $2", *LIVE_DOMAIN_FOR_NAME));

pub struct NewDomain<'a> {
    pub id: DomainId,
    pub organization_id: OrganizationId,
    pub project_id: ProjectId,
    pub order_id: Option<i64>,
    pub name: &'a str,
    pub sld: &'a str,
    pub tld: &'a str,
    pub status: DomainStatus,
    pub registrar: &'a str,
    pub epp_code: Option<&'a str>,
    pub now: i64,
}

pub(crate) const INSERT_DOMAIN: &str =
    "INSERT INTO domains (id, organization_id, project_id, order_id, name, sld, tld, status, registrar, epp_code, created_at, modified_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)";

pub async fn insert_domain<C: SqlConn>(conn: &mut C, d: &NewDomain<'_>) -> Result<()> {
    conn.exec(INSERT_DOMAIN, domain_args(d)).await?;
    Ok(())
}

/// [`insert_domain`] as a row written later ([`SqlConn::insert_later`]): a name another
/// live domain has fails the batch's flush, not this call.
pub async fn insert_domain_later<C: SqlConn>(conn: &mut C, d: &NewDomain<'_>) -> Result<()> {
    conn.insert_later(INSERT_DOMAIN, domain_args(d)).await
}

fn domain_args(d: &NewDomain<'_>) -> Vec<Val> {
    vals![
        d.id.to_string(),
        d.organization_id.to_string(),
        d.project_id.to_string(),
        d.order_id,
        d.name,
        d.sld,
        d.tld,
        d.status.as_str(),
        d.registrar,
        d.epp_code,
        d.now,
    ]
}

pub async fn domain<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: DomainId,
) -> Result<Option<DomainRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(db)
    .await?)
}

/// Whether a live domain object holds this name (anywhere in Lodge).
pub async fn live_domain_for_name<C: SqlConn>(conn: &mut C, name: &str) -> Result<bool> {
    let n = conn.fetch_int(&LIVE_DOMAIN_FOR_NAME, vals![name]).await?;
    Ok(n.unwrap_or(0) > 0)
}

pub async fn domains_page(
    db: &sqlx::AnyPool,
    org: OrganizationId,
    project: ProjectId,
    limit: i64,
    offset: i64,
) -> Result<(Vec<DomainRow>, i64)> {
    let rows = sqlx::query_as(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains WHERE organization_id = $1 AND project_id = $2
         ORDER BY legacy_id LIMIT $3 OFFSET $4"
    ))
    .bind(org.to_string())
    .bind(project.to_string())
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let count = sqlx::query_scalar(
        "SELECT COUNT(*) FROM domains WHERE organization_id = $1 AND project_id = $2",
    )
    .bind(org.to_string())
    .bind(project.to_string())
    .fetch_one(db)
    .await?;
    Ok((rows, count))
}

pub async fn set_auto_renew(
    conn: &mut AnyConnection,
    id: DomainId,
    on: bool,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE domains SET auto_renew = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(i64::from(on))
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Applies `event` to a domain; `false` (and nothing written) when its status does not
/// accept it ([`DomainStatus::next`]) or it does not exist.
pub async fn set_domain_status(
    conn: &mut AnyConnection,
    id: DomainId,
    event: DomainEvent,
    now: i64,
) -> Result<bool> {
    let current: Option<String> = sqlx::query_scalar("SELECT status FROM domains WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(current) = current else {
        return Ok(false);
    };
    let current: DomainStatus = crate::parse(&current)?;
    let Some(to) = current.next(event) else {
        return Ok(false);
    };
    let r = sqlx::query(DOMAIN_MOVE_FROM)
        .bind(id.to_string())
        .bind(to.as_str())
        .bind(now)
        .bind(current.as_str())
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Marks a registration or transfer done: active with its dates. `only_paid` (staff
/// marking it done by hand): only once its order is paid (an order still `pending` is
/// unpaid; `fraud` is never served), decided in the update itself so that nothing slips
/// between a check and the write.
pub async fn activate_domain(
    conn: &mut AnyConnection,
    id: DomainId,
    registration_date: &str,
    expiration_date: &str,
    nameservers: &str,
    now: i64,
    only_paid: bool,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE domains SET status = 'active', registration_date = $2, expiration_date = $3,
             next_billing_date = $3, nameservers = $4, epp_code = NULL, registry_stage = NULL,
             registry_error = NULL, modified_at = $5
         WHERE id = $1 AND status IN ('pending_registration', 'pending_transfer')
           AND ($6 = 0 OR order_id IS NULL OR EXISTS (SELECT 1 FROM orders o
                WHERE o.id = domains.order_id AND o.status IN ('active', 'cancelled')))",
    )
    .bind(id.to_string())
    .bind(registration_date)
    .bind(expiration_date)
    .bind(nameservers)
    .bind(now)
    .bind(i64::from(only_paid))
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Places an account on a server and names it.
pub async fn set_server(
    conn: &mut AnyConnection,
    id: HostingId,
    server: Option<&str>,
    username: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE hosting SET server_id = COALESCE($2, server_id), username = COALESCE($3, username), modified_at = $4 WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(server)
    .bind(username)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces an account's sealed password.
pub async fn set_secret(
    conn: &mut AnyConnection,
    id: HostingId,
    sealed: &str,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query("UPDATE hosting SET secret = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(sealed)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_last_error(
    conn: &mut AnyConnection,
    id: HostingId,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE hosting SET last_error = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(error)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// The sealed password given at order time, if any.
pub async fn secret<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: HostingId,
) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar::<_, Option<String>>("SELECT secret FROM hosting WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(db)
            .await?
            .flatten(),
    )
}

/// Read through the partial index `hosting_cancel_due`, which holds only accounts
/// cancelling at the end of their period.
pub(crate) const CANCELLATIONS_DUE: &str =
    "SELECT id, COALESCE(cancel_requested_at, 0) FROM hosting
     WHERE cancel_type = 'end_of_period' AND cancel_effective_date <= $1
     AND status IN ('provisioning', 'active', 'suspended', 'failed')";

/// Accounts whose end-of-period cancellation is due by `today`, each with when that
/// cancellation was asked for (which names its termination: a cancellation withdrawn and
/// asked again is a new one).
pub async fn cancellations_due<'e, E: Executor<'e, Database = Any>>(
    db: E,
    today: &str,
) -> Result<Vec<(HostingId, i64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(CANCELLATIONS_DUE)
        .bind(today)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|(id, at)| Ok((crate::parse(id)?, *at)))
        .collect()
}

/// The sealed EPP code of a domain being transferred.
pub async fn epp_code<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: DomainId,
) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar::<_, Option<String>>("SELECT epp_code FROM domains WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(db)
            .await?
            .flatten(),
    )
}

/// What billing an account needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountBilling {
    pub id: HostingId,
    pub organization_id: OrganizationId,
    pub order_id: i64,
    pub currency: String,
    pub domain_name: String,
}

/// [`AccountBilling`] of an account, if it exists.
pub async fn account_billing<C: SqlConn>(
    conn: &mut C,
    id: HostingId,
) -> Result<Option<AccountBilling>> {
    let Some(row) = conn
        .fetch_row(
            "SELECT organization_id, order_id, currency, domain_name FROM hosting WHERE id = $1",
            vals![id.to_string()],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut c = Cols::new(row);
    Ok(Some(AccountBilling {
        id,
        organization_id: c.parse()?,
        order_id: c.int()?,
        currency: c.text()?,
        domain_name: c.text()?,
    }))
}
