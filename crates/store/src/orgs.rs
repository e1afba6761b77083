//! Organizations, memberships and projects.

use lodge_core::{OrganizationId, PlanId, ProjectId, UserId};
use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::{vals, Cols, Result, SqlConn, StoreError, Val};

#[derive(Debug, Clone, FromRow)]
pub struct OrgRow {
    pub legacy_id: i64,
    #[sqlx(try_from = "String")]
    pub id: OrganizationId,
    pub name: String,
    pub organization_type: String,
    pub support_plan: String,
    pub modules: String,
    pub user_quota: i64,
    pub project_quota: i64,
    pub instance_quota: i64,
    pub domain_quota: i64,
    pub logo: Option<String>,
    pub company_name: String,
    pub address_1: String,
    pub address_2: String,
    pub city: String,
    pub state: String,
    pub postcode: String,
    pub country: String,
    pub phone: String,
    pub vat_number: String,
    pub is_active: i64,
    pub currency: String,
    pub credit_balance_minor: i64,
    pub created_at: i64,
    pub modified_at: i64,
    pub project_count: i64,
    /// The caller's role in it, where the list was read for a member ([`for_user`]).
    pub member_role: Option<String>,
}

const ORG_COLUMNS: &str =
    "o.legacy_id, o.id, o.name, o.organization_type, o.support_plan, o.modules,
    o.user_quota, o.project_quota, o.instance_quota, o.domain_quota, o.logo, o.company_name,
    o.address_1, o.address_2, o.city, o.state, o.postcode, o.country, o.phone, o.vat_number,
    o.is_active, o.currency, o.credit_balance_minor, o.created_at, o.modified_at,
    (SELECT COUNT(*) FROM projects p WHERE p.organization_id = o.id) AS project_count,
    CAST(NULL AS TEXT) AS member_role";

/// [`ORG_COLUMNS`] as a member sees them (`m`, its membership): a guest counts only the
/// projects it was added to.
const MEMBER_ORG_COLUMNS: &str =
    "o.legacy_id, o.id, o.name, o.organization_type, o.support_plan, o.modules,
    o.user_quota, o.project_quota, o.instance_quota, o.domain_quota, o.logo, o.company_name,
    o.address_1, o.address_2, o.city, o.state, o.postcode, o.country, o.phone, o.vat_number,
    o.is_active, o.currency, o.credit_balance_minor, o.created_at, o.modified_at,
    CASE WHEN m.role = 'guest'
         THEN (SELECT COUNT(*) FROM project_members pm JOIN projects p ON p.id = pm.project_id
               WHERE pm.user_id = m.user_id AND p.organization_id = o.id)
         ELSE (SELECT COUNT(*) FROM projects p WHERE p.organization_id = o.id) END AS project_count,
    m.role AS member_role";

/// What an organization is created with; the rest takes the schema's defaults.
#[derive(Debug, Clone)]
pub struct NewOrg {
    pub id: OrganizationId,
    pub name: String,
    pub organization_type: String,
    pub company_name: String,
    pub country: String,
    pub currency: String,
    pub now: i64,
}

pub async fn insert(conn: &mut AnyConnection, o: &NewOrg) -> Result<()> {
    sqlx::query(
        "INSERT INTO organizations (id, name, organization_type, company_name, country, currency, created_at, modified_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(o.id.to_string())
    .bind(&o.name)
    .bind(&o.organization_type)
    .bind(&o.company_name)
    .bind(&o.country)
    .bind(&o.currency)
    .bind(o.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether an organization is recorded in another currency than `currency`.
pub async fn any_in_other_currency<C: SqlConn>(conn: &mut C, currency: &str) -> Result<bool> {
    Ok(conn
        .fetch_int(
            "SELECT 1 FROM organizations WHERE currency <> $1 LIMIT 1",
            vals![currency],
        )
        .await?
        .is_some())
}

/// Gives every organization recorded in another currency the installation's: those made
/// before it was set (`lodge orgs create`, `lodge demo` run without it), unless anything
/// was invoiced or credited in another currency (checked in the same statement, so a
/// sale made meanwhile in the old currency keeps it). Their number.
pub async fn adopt_currency<C: SqlConn>(conn: &mut C, currency: &str) -> Result<u64> {
    conn.exec(
        "UPDATE organizations SET currency = $1 WHERE currency <> $1 \
           AND NOT EXISTS (SELECT 1 FROM invoices WHERE currency <> $1) \
           AND NOT EXISTS (SELECT 1 FROM credit_ledger WHERE currency <> $1)",
        vals![currency],
    )
    .await
}

pub async fn by_id<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: OrganizationId,
) -> Result<Option<OrgRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ORG_COLUMNS} FROM organizations o WHERE o.id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(db)
    .await?)
}

/// Whether the organization exists.
pub async fn exists<C: SqlConn>(conn: &mut C, id: OrganizationId) -> Result<bool> {
    Ok(conn
        .fetch_int(
            "SELECT 1 FROM organizations WHERE id = $1",
            vals![id.to_string()],
        )
        .await?
        .is_some())
}

/// The organizations a user belongs to (any role), oldest first.
pub async fn for_user<'e, E: Executor<'e, Database = Any>>(
    db: E,
    user: UserId,
) -> Result<Vec<OrgRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {MEMBER_ORG_COLUMNS} FROM organizations o
         JOIN memberships m ON m.organization_id = o.id
         WHERE m.user_id = $1 ORDER BY o.legacy_id"
    ))
    .bind(user.to_string())
    .fetch_all(db)
    .await?)
}

/// What an installation holds besides the demo's: users whose e-mail is none of
/// `demo_emails`, and catalog plans; and whether the demo's staff user (`demo_emails[0]`)
/// is there (the demo was seeded before).
pub async fn beyond_demo<'e, E: Executor<'e, Database = Any> + Copy>(
    db: E,
    demo_emails: [&str; 2],
) -> Result<(i64, i64, bool)> {
    let users: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email <> $1 AND email <> $2")
            .bind(demo_emails[0])
            .bind(demo_emails[1])
            .fetch_one(db)
            .await?;
    let plans: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plans")
        .fetch_one(db)
        .await?;
    let staff: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = $1")
        .bind(demo_emails[0])
        .fetch_one(db)
        .await?;
    Ok((users, plans, staff > 0))
}

pub async fn all<'e, E: Executor<'e, Database = Any>>(db: E) -> Result<Vec<OrgRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ORG_COLUMNS} FROM organizations o ORDER BY o.legacy_id"
    ))
    .fetch_all(db)
    .await?)
}

// ---- memberships ----

pub async fn add_member(
    conn: &mut AnyConnection,
    org: OrganizationId,
    user: UserId,
    role: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO memberships (organization_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (organization_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(org.to_string())
    .bind(user.to_string())
    .bind(role)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many members (users, whatever their role) the organization has.
pub async fn member_count(conn: &mut AnyConnection, org: OrganizationId) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE organization_id = $1")
            .bind(org.to_string())
            .fetch_one(conn)
            .await?,
    )
}

/// How many owners the organization has other than `user`.
pub async fn other_owners(
    conn: &mut AnyConnection,
    org: OrganizationId,
    user: UserId,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM memberships WHERE organization_id = $1 AND role = 'owner' AND user_id <> $2",
    )
    .bind(org.to_string())
    .bind(user.to_string())
    .fetch_one(conn)
    .await?)
}

pub async fn role_of<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    user: UserId,
) -> Result<Option<String>> {
    conn.fetch_text(
        "SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2",
        vals![org.to_string(), user.to_string()],
    )
    .await
}

/// The first owner of an organization (the principal of keys issued for it by an operator).
pub async fn first_owner<'e, E: Executor<'e, Database = Any>>(
    db: E,
    org: OrganizationId,
) -> Result<Option<UserId>> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT user_id FROM memberships WHERE organization_id = $1 AND role = 'owner'
         ORDER BY created_at, user_id LIMIT 1",
    )
    .bind(org.to_string())
    .fetch_optional(db)
    .await?;
    id.map(|s| crate::parse(&s)).transpose()
}

// ---- projects ----

#[derive(Debug, Clone, FromRow)]
pub struct ProjectRow {
    pub legacy_id: i64,
    #[sqlx(try_from = "String")]
    pub id: ProjectId,
    #[sqlx(try_from = "String")]
    pub organization_id: OrganizationId,
    pub name: String,
    pub description: String,
    pub is_default: i64,
    pub created_at: i64,
    pub modified_at: i64,
}

const PROJECT_COLUMNS: &str =
    "legacy_id, id, organization_id, name, description, is_default, created_at, modified_at";

pub struct NewProject<'a> {
    pub id: ProjectId,
    pub organization_id: OrganizationId,
    pub name: &'a str,
    pub description: &'a str,
    pub is_default: bool,
    pub now: i64,
}

pub async fn insert_project(conn: &mut AnyConnection, p: &NewProject<'_>) -> Result<ProjectRow> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO projects (id, organization_id, name, description, is_default, created_at, modified_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {PROJECT_COLUMNS}"
    ))
    .bind(p.id.to_string())
    .bind(p.organization_id.to_string())
    .bind(p.name)
    .bind(p.description)
    .bind(i64::from(p.is_default))
    .bind(p.now)
    .fetch_one(conn)
    .await?)
}

impl ProjectRow {
    fn from_row(row: Vec<Val>) -> Result<Self> {
        let mut c = Cols::new(row);
        Ok(ProjectRow {
            legacy_id: c.int()?,
            id: c.parse()?,
            organization_id: c.parse()?,
            name: c.text()?,
            description: c.text()?,
            is_default: c.int()?,
            created_at: c.int()?,
            modified_at: c.int()?,
        })
    }
}

/// A project of an organization, or `None` (also when it belongs to another one).
pub async fn project<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    id: ProjectId,
) -> Result<Option<ProjectRow>> {
    conn.fetch_row(
        &format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE organization_id = $1 AND id = $2"),
        vals![org.to_string(), id.to_string()],
    )
    .await?
    .map(ProjectRow::from_row)
    .transpose()
}

/// A project of an organization with the caller's role in that organization (`None`: no
/// membership), in one read: a project-scoped request's access check and its project are
/// one round trip. `None` when the organization has no such project.
pub async fn project_with_role<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    id: ProjectId,
    user: UserId,
) -> Result<Option<(Option<String>, ProjectRow)>> {
    let Some(mut row) = conn
        .fetch_row(
            &format!(
                "SELECT {PROJECT_COLUMNS}, (SELECT m.role FROM memberships m \
                 WHERE m.organization_id = $1 AND m.user_id = $3) \
                 FROM projects WHERE organization_id = $1 AND id = $2"
            ),
            vals![org.to_string(), id.to_string(), user.to_string()],
        )
        .await?
    else {
        return Ok(None);
    };
    let role = row
        .pop()
        .ok_or_else(|| StoreError::Corrupt("a project without its role column".into()))?;
    let role = role.text()?.map(str::to_owned);
    Ok(Some((role, ProjectRow::from_row(row)?)))
}

pub async fn default_project<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
) -> Result<Option<ProjectRow>> {
    conn.fetch_row(
        &format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE organization_id = $1 AND is_default = 1"
        ),
        vals![org.to_string()],
    )
    .await?
    .map(ProjectRow::from_row)
    .transpose()
}

/// One page of an organization's projects and the total count. `guest` limits the list to
/// the projects that user was added to.
pub async fn projects_page(
    db: &sqlx::AnyPool,
    org: OrganizationId,
    guest: Option<UserId>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ProjectRow>, i64)> {
    let guest = guest.map(|g| g.to_string());
    let filter = "organization_id = $1 AND ($2 IS NULL OR id IN (SELECT project_id FROM project_members WHERE user_id = $2))";
    let rows = sqlx::query_as(&format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE {filter} ORDER BY legacy_id LIMIT $3 OFFSET $4"
    ))
    .bind(org.to_string())
    .bind(guest.clone())
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM projects WHERE {filter}"))
        .bind(org.to_string())
        .bind(guest)
        .fetch_one(db)
        .await?;
    Ok((rows, count))
}

pub async fn is_project_member<C: SqlConn>(
    conn: &mut C,
    project: ProjectId,
    user: UserId,
) -> Result<bool> {
    let n = conn
        .fetch_int(
            "SELECT COUNT(*) FROM project_members WHERE project_id = $1 AND user_id = $2",
            vals![project.to_string(), user.to_string()],
        )
        .await?;
    Ok(n.unwrap_or(0) > 0)
}

pub async fn add_project_member(
    conn: &mut AnyConnection,
    project: ProjectId,
    user: UserId,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO project_members (project_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(project.to_string())
    .bind(user.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// An organization's quotas of hosting accounts and domains, and what counts against them:
/// accounts not ended (pending orders included) and domains held or being registered or
/// transferred. `None` when the organization does not exist.
pub async fn order_quotas<C: crate::SqlConn>(
    conn: &mut C,
    org: OrganizationId,
) -> Result<Option<OrderQuotas>> {
    let Some(row) = conn
        .fetch_row(ORDER_QUOTAS, crate::vals![org.to_string()])
        .await?
    else {
        return Ok(None);
    };
    quotas_of(&mut crate::Cols::new(row)).map(Some)
}

/// The columns of [`OrderQuotas`], of `organizations o`. The counts are kept with the rows
/// in `organization_counts` by triggers (migration 0027: counting the rows cost an order
/// more than all its inserts); an organization with no row there has none of either.
macro_rules! quota_columns {
    () => {
        "o.instance_quota, o.domain_quota, \
         COALESCE((SELECT c.live_accounts FROM organization_counts c WHERE c.organization_id = o.id), 0), \
         COALESCE((SELECT c.live_domains FROM organization_counts c WHERE c.organization_id = o.id), 0)"
    };
}

const ORDER_QUOTAS: &str = concat!(
    "SELECT ",
    quota_columns!(),
    " FROM organizations o WHERE o.id = $1"
);

fn quotas_of(c: &mut crate::Cols) -> Result<OrderQuotas> {
    Ok(OrderQuotas {
        instance_quota: c.int()?,
        domain_quota: c.int()?,
        accounts: c.int()?,
        domains: c.int()?,
    })
}

/// An order's first write: the organization's credit balance, its row locked for the
/// credit the order applies (as [`crate::billing::lock_credit`]), and its [`order_quotas`]
/// counted under that lock. One statement on PostgreSQL (each is a round trip there); the
/// two as they are elsewhere. `None` when the organization does not exist.
///
/// On PostgreSQL the caller must hold the organization's lock already, from an earlier
/// statement of its transaction (a group commit locks all its organizations first,
/// [`crate::billing::lock_organizations`]): a statement that waits for a row lock still
/// reads the other tables as they were when it started, so the counts read in the
/// statement that waited would miss what the transaction it waited for committed.
pub async fn lock_credit_and_quotas<C: crate::SqlConn>(
    conn: &mut C,
    org: OrganizationId,
) -> Result<Option<(i64, OrderQuotas)>> {
    if !conn.is_postgres() {
        let Some(balance) = crate::billing::lock_credit(conn, org).await? else {
            return Ok(None);
        };
        return Ok(order_quotas(conn, org).await?.map(|q| (balance, q)));
    }
    let Some(row) = conn
        .fetch_row(
            LOCK_CREDIT_AND_QUOTAS_POSTGRES,
            crate::vals![org.to_string()],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut c = crate::Cols::new(row);
    let balance = c.int()?;
    Ok(Some((balance, quotas_of(&mut c)?)))
}

/// [`lock_credit_and_quotas`] of several organizations in one statement: each one's credit
/// balance and [`OrderQuotas`]; one that does not exist is missing. The caller holds their
/// locks already, from an earlier statement of its transaction (on PostgreSQL
/// [`crate::billing::lock_organizations`], for the reason [`lock_credit_and_quotas`] gives;
/// SQLite's batch writer holds the database).
pub async fn credit_and_quotas_of<C: crate::SqlConn>(
    conn: &mut C,
    orgs: &[OrganizationId],
) -> Result<std::collections::HashMap<OrganizationId, (i64, OrderQuotas)>> {
    let ids = orgs.iter().map(ToString::to_string);
    let mut out = std::collections::HashMap::with_capacity(orgs.len());
    let Some((sql, args)) = crate::conn::over_distinct_ids(CREDIT_AND_QUOTAS_OF, ids) else {
        return Ok(out);
    };
    for row in conn.fetch_rows(&sql, args).await? {
        let mut c = Cols::new(row);
        let org: OrganizationId = c.parse()?;
        let balance = c.int()?;
        out.insert(org, (balance, quotas_of(&mut c)?));
    }
    Ok(out)
}

/// The credit balances of several organizations in one statement (their rows locked
/// already, as for [`credit_and_quotas_of`]); one that does not exist is missing.
pub async fn credits_of<C: crate::SqlConn>(
    conn: &mut C,
    orgs: &[OrganizationId],
) -> Result<std::collections::HashMap<OrganizationId, i64>> {
    let ids = orgs.iter().map(ToString::to_string);
    let mut out = std::collections::HashMap::with_capacity(orgs.len());
    let Some((sql, args)) = crate::conn::over_distinct_ids(
        "SELECT o.id, o.credit_balance_minor FROM organizations o WHERE o.id IN ($IDS)",
        ids,
    ) else {
        return Ok(out);
    };
    for row in conn.fetch_rows(&sql, args).await? {
        let mut c = Cols::new(row);
        let org: OrganizationId = c.parse()?;
        out.insert(org, c.int()?);
    }
    Ok(out)
}

const CREDIT_AND_QUOTAS_OF: &str = concat!(
    "SELECT o.id, o.credit_balance_minor, ",
    quota_columns!(),
    " FROM organizations o WHERE o.id IN ($IDS)"
);

/// [`lock_credit_and_quotas`] on PostgreSQL: the lock [`crate::billing::lock_credit`] takes.
const LOCK_CREDIT_AND_QUOTAS_POSTGRES: &str = concat!(
    "SELECT o.credit_balance_minor, ",
    quota_columns!(),
    " FROM organizations o WHERE o.id = $1 FOR NO KEY UPDATE"
);

/// See [`order_quotas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderQuotas {
    pub instance_quota: i64,
    pub domain_quota: i64,
    pub accounts: i64,
    pub domains: i64,
}

/// What validating an order reads from the database, in one statement: the
/// organization's [`OrderQuotas`], whether a live hosting account already answers to the
/// name (it, or its other form with or without `www.`),
/// and whether an active server of the plan's driver without a capacity limit serves the
/// plan (when none does, the caller counts the limited ones, [`crate::servers::place`]).
#[derive(Debug, Clone, Copy)]
pub struct OrderFacts {
    pub quotas: OrderQuotas,
    pub name_has_live_hosting: bool,
    pub unlimited_server: bool,
}

pub(crate) static ORDER_FACTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    // Unqualified, as `hosting_live_name`'s own condition is: SQLite uses a partial index
    // only for the condition it was made with, and `expand_in_lists` rewrites only a bare
    // column's list (with `h.status` the subquery read every account).
    let live = crate::expand_in_lists(&format!("status IN {}", *crate::hosting::LIVE_HOSTING));
    let live_domain =
        crate::expand_in_lists(&format!("status IN {}", *crate::hosting::LIVE_DOMAIN));
    format!(
        "SELECT {}, \
         (SELECT COUNT(*) FROM hosting WHERE domain_name IN ($3, $5) AND {live}) \
         + (SELECT COUNT(*) FROM domains WHERE name = $6 AND {live_domain} \
            AND organization_id <> $4), \
         (SELECT COUNT(*) FROM (SELECT 1 FROM servers s WHERE {} AND s.capacity = 0 LIMIT 1) x) \
         FROM organizations o WHERE o.id = $4",
        quota_columns!(),
        crate::servers::SERVES,
    )
});

/// [`OrderFacts`] of an order of `plan` (served by `driver`) for `name` (none: no name to
/// check) by `org`; `None` when the organization does not exist. `held`: a registrable
/// domain that, held by another organization's live domain object, takes the name too.
pub async fn order_facts<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    name: Option<&str>,
    held: Option<&str>,
    driver: &str,
    plan: PlanId,
) -> Result<Option<OrderFacts>> {
    // Both forms of the name's site: an account answers to its name with and without `www.`.
    let (site, www) = match name.map(lodge_core::domain::site_forms) {
        Some([site, www]) => (Some(site), Some(www)),
        None => (None, None),
    };
    let Some(row) = conn
        .fetch_row(
            &ORDER_FACTS,
            vals![driver, plan.to_string(), site, org.to_string(), www, held],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut c = Cols::new(row);
    Ok(Some(OrderFacts {
        quotas: quotas_of(&mut c)?,
        name_has_live_hosting: c.int()? > 0,
        unlimited_server: c.int()? > 0,
    }))
}

/// How many hosting accounts of `plan` the organization has or had (cancelled unpaid
/// orders aside), counting accounts moved onto it by a plan change (awaiting payment or
/// applied): a plan sold once per organization (a trial) is refused after one.
pub async fn accounts_of_plan<C: crate::SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    plan: &str,
) -> Result<i64> {
    Ok(conn
        .fetch_int(
            "SELECT (SELECT COUNT(*) FROM hosting WHERE organization_id = $1 AND plan_id = $2 \
                     AND status <> 'cancelled') \
                  + (SELECT COUNT(*) FROM plan_changes WHERE organization_id = $1 \
                     AND to_plan_id = $2 AND status <> 'cancelled')",
            crate::vals![org.to_string(), plan],
        )
        .await?
        .unwrap_or(0))
}

/// Sets an organization's quotas (`None`: unchanged); `false` when it does not exist.
pub async fn set_quotas<C: crate::SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    q: [Option<i64>; 4],
    now: i64,
) -> Result<bool> {
    let [users, projects, instances, domains] = q;
    Ok(conn
        .exec(
            "UPDATE organizations SET user_quota = COALESCE($2, user_quota), \
             project_quota = COALESCE($3, project_quota), \
             instance_quota = COALESCE($4, instance_quota), \
             domain_quota = COALESCE($5, domain_quota), modified_at = $6 WHERE id = $1",
            crate::vals![org.to_string(), users, projects, instances, domains, now],
        )
        .await?
        == 1)
}

/// Removes a user from an organization and its projects; `false` when it was no member.
pub async fn remove_member(
    conn: &mut AnyConnection,
    org: OrganizationId,
    user: UserId,
) -> Result<bool> {
    sqlx::query(
        "DELETE FROM project_members WHERE user_id = $2
         AND project_id IN (SELECT id FROM projects WHERE organization_id = $1)",
    )
    .bind(org.to_string())
    .bind(user.to_string())
    .execute(&mut *conn)
    .await?;
    let r = sqlx::query("DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2")
        .bind(org.to_string())
        .bind(user.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// A page of every organization, newest first: those with a `legacy_id` below `before`
/// (`0`: from the newest), at most `limit`.
pub async fn page<'e, E: Executor<'e, Database = Any>>(
    db: E,
    before: i64,
    limit: i64,
) -> Result<Vec<OrgRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ORG_COLUMNS} FROM organizations o
         WHERE ($1 = 0 OR o.legacy_id < $1) ORDER BY o.legacy_id DESC LIMIT $2"
    ))
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?)
}
