//! The hosting catalog: plan groups, plans and their prices, service offers, coupons, TLDs.
//!
//! Every write bumps the `catalog_version` counter in the same transaction, so each node can
//! tell cheaply whether its precomputed catalog is stale.

use lodge_core::{CouponId, OfferId, PlanGroupId, PlanId};
use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::conn::Val;
use crate::{vals, Engine, Result, SqlConn};

#[derive(Debug, Clone, FromRow)]
pub struct GroupRow {
    pub legacy_id: i64,
    #[sqlx(try_from = "String")]
    pub id: PlanGroupId,
    pub slug: String,
    pub name: String,
    pub name_en: String,
    pub name_fr: String,
    pub headline: String,
    pub headline_en: String,
    pub headline_fr: String,
    pub tagline: String,
    pub tagline_en: String,
    pub tagline_fr: String,
    pub display_order: i64,
    pub is_active: i64,
    pub created_at: i64,
    pub modified_at: i64,
}

const GROUP_COLUMNS: &str = "legacy_id, id, slug, name, name_en, name_fr, headline, headline_en, headline_fr, tagline, tagline_en, tagline_fr, display_order, is_active, created_at, modified_at";

#[derive(Debug, Clone, FromRow)]
pub struct PlanRow {
    pub legacy_id: i64,
    #[sqlx(try_from = "String")]
    pub id: PlanId,
    #[sqlx(try_from = "String")]
    pub group_id: PlanGroupId,
    pub slug: String,
    pub name: String,
    pub name_en: String,
    pub name_fr: String,
    pub description: String,
    pub description_en: String,
    pub description_fr: String,
    pub hosting_type: String,
    pub disk_space_mb: i64,
    pub bandwidth_mb: i64,
    pub max_email_accounts: i64,
    pub max_databases: i64,
    pub max_subdomains: i64,
    pub max_addon_domains: i64,
    pub max_parked_domains: i64,
    pub max_ftp_accounts: i64,
    pub max_accounts: i64,
    pub category: String,
    pub type_id: String,
    pub field1: String,
    pub field2: String,
    pub driver: String,
    pub html: String,
    pub moreinfo_url: String,
    pub buyable: i64,
    /// 1: sold once per organization (a trial).
    pub once_per_organization: i64,
    pub hidden: i64,
    pub is_active: i64,
    pub display_order: i64,
    pub created_at: i64,
    pub modified_at: i64,
}

const PLAN_COLUMNS: &str = "legacy_id, id, group_id, slug, name, name_en, name_fr, description, description_en, description_fr, hosting_type, disk_space_mb, bandwidth_mb, max_email_accounts, max_databases, max_subdomains, max_addon_domains, max_parked_domains, max_ftp_accounts, max_accounts, category, type_id, field1, field2, driver, html, moreinfo_url, buyable, once_per_organization, hidden, is_active, display_order, created_at, modified_at";

#[derive(Debug, Clone, FromRow)]
pub struct PriceRow {
    #[sqlx(try_from = "String")]
    pub plan_id: PlanId,
    pub billing_cycle: String,
    pub currency: String,
    pub price_minor: i64,
    pub setup_fee_minor: i64,
    pub is_default: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct OfferRow {
    pub legacy_id: i64,
    #[sqlx(try_from = "String")]
    pub id: OfferId,
    #[sqlx(try_from = "String")]
    pub plan_id: PlanId,
    pub intro_total_minor: i64,
    pub intro_months: i64,
    pub renewal_minor: i64,
    pub renewal_months: i64,
    pub allow_coupon: i64,
    pub is_active: i64,
    pub created_at: i64,
    pub modified_at: i64,
    pub deleted_at: Option<i64>,
}

const OFFER_COLUMNS: &str = "legacy_id, id, plan_id, intro_total_minor, intro_months, renewal_minor, renewal_months, allow_coupon, is_active, created_at, modified_at, deleted_at";

#[derive(Debug, Clone, FromRow)]
pub struct CouponRow {
    pub legacy_id: i64,
    #[sqlx(try_from = "String")]
    pub id: CouponId,
    pub code: String,
    pub kind: i64,
    pub value: i64,
    pub recurring: i64,
    pub plan_id: Option<String>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub expires_at: Option<i64>,
    pub is_active: i64,
    pub created_at: i64,
    pub modified_at: i64,
    /// The billing cycles it applies to (comma-separated wire names); `None`: every cycle.
    pub cycles: Option<String>,
}

const COUPON_COLUMNS: &str = "legacy_id, id, code, kind, value, recurring, plan_id, max_uses, uses, expires_at, is_active, created_at, modified_at, cycles";

#[derive(Debug, Clone, FromRow)]
pub struct TldRow {
    pub tld: String,
    pub display_name: String,
    pub category: String,
    pub register_open: i64,
    pub transfer_open: i64,
    pub min_years: i64,
    pub max_years: i64,
    pub is_active: i64,
}

const TLD_COLUMNS: &str =
    "tld, display_name, category, register_open, transfer_open, min_years, max_years, is_active";

#[derive(Debug, Clone, FromRow)]
pub struct TldPriceRow {
    pub tld: String,
    pub years: i64,
    pub currency: String,
    pub register_minor: i64,
    pub renew_minor: i64,
    pub transfer_minor: i64,
}

/// The whole catalog as stored, read in one go (it is small) to build the in-memory views.
#[derive(Debug, Clone, Default)]
pub struct CatalogData {
    pub version: i64,
    pub groups: Vec<GroupRow>,
    pub plans: Vec<PlanRow>,
    pub prices: Vec<PriceRow>,
    pub offers: Vec<OfferRow>,
    pub coupons: Vec<CouponRow>,
    pub tlds: Vec<TldRow>,
    pub tld_prices: Vec<TldPriceRow>,
}

/// Reads the catalog in one read transaction so the parts agree with the version.
pub async fn load(pool: &sqlx::AnyPool) -> Result<CatalogData> {
    let mut tx = pool.begin().await?;
    let version = crate::counter(&mut *tx, "catalog_version").await?;
    let groups = sqlx::query_as(&format!(
        "SELECT {GROUP_COLUMNS} FROM plan_groups ORDER BY display_order, legacy_id"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let plans = sqlx::query_as(&format!(
        "SELECT {PLAN_COLUMNS} FROM plans ORDER BY display_order, legacy_id"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let prices = sqlx::query_as(
        "SELECT plan_id, billing_cycle, currency, price_minor, setup_fee_minor, is_default FROM plan_prices",
    )
    .fetch_all(&mut *tx)
    .await?;
    let offers = sqlx::query_as(&format!(
        "SELECT {OFFER_COLUMNS} FROM service_offers ORDER BY legacy_id"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let coupons = sqlx::query_as(&format!(
        "SELECT {COUPON_COLUMNS} FROM coupons ORDER BY legacy_id"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let tlds = sqlx::query_as(&format!("SELECT {TLD_COLUMNS} FROM tlds ORDER BY tld"))
        .fetch_all(&mut *tx)
        .await?;
    let tld_prices = sqlx::query_as(
        "SELECT tld, years, currency, register_minor, renew_minor, transfer_minor FROM tld_prices ORDER BY tld, years",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(CatalogData {
        version,
        groups,
        plans,
        prices,
        offers,
        coupons,
        tlds,
        tld_prices,
    })
}

/// What the catalog sells (active plans and TLDs) at a price in another currency than
/// `currency`, up to `limit` of them: what is priced so (`plan "<slug>"`, `TLD .<tld>`) and
/// in which currency. The installation sells in one currency; a catalog imported by a
/// command run with another is priced in that one. Inactive items are not sold and are left
/// out: their prices are never read for an order.
pub async fn priced_otherwise<C: SqlConn>(
    conn: &mut C,
    currency: &str,
    limit: i64,
) -> Result<Vec<(String, String)>> {
    let rows = conn
        .fetch_rows(
            "SELECT what, currency FROM (
                 SELECT DISTINCT 'plan \"' || p.slug || '\"' AS what, pp.currency AS currency
                     FROM plan_prices pp JOIN plans p ON p.id = pp.plan_id
                     WHERE pp.currency <> $1 AND p.is_active = 1
                 UNION
                 SELECT DISTINCT 'TLD .' || tp.tld, tp.currency FROM tld_prices tp
                     JOIN tlds t ON t.tld = tp.tld
                     WHERE tp.currency <> $1 AND t.is_active = 1
             ) x ORDER BY what LIMIT $2",
            vals![currency, limit],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| match (r.first(), r.get(1)) {
            (Some(Val::Text(Some(what))), Some(Val::Text(Some(cur)))) => {
                Some((what.clone(), cur.clone()))
            }
            _ => None,
        })
        .collect())
}

/// Every plan's panel package per driver: `(plan, driver, package)`.
pub async fn all_plan_packages<'e, E: Executor<'e, Database = Any>>(
    db: E,
) -> Result<Vec<(String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT plan_id, driver, package FROM plan_packages ORDER BY plan_id, driver",
    )
    .fetch_all(db)
    .await?)
}

/// The catalog version (cheap: one counter row).
pub async fn version<'e, E: Executor<'e, Database = Any>>(db: E) -> Result<i64> {
    crate::counter(db, "catalog_version").await
}

/// Marks the catalog changed; call once in every transaction that writes to it.
pub async fn bump_version(conn: &mut AnyConnection) -> Result<i64> {
    crate::next_counter(conn, "catalog_version").await
}

// ---- writes ----

#[derive(Debug, Clone, Default)]
pub struct GroupInput {
    pub slug: String,
    pub name: String,
    pub name_en: String,
    pub name_fr: String,
    pub headline: String,
    pub headline_en: String,
    pub headline_fr: String,
    pub tagline: String,
    pub tagline_en: String,
    pub tagline_fr: String,
    pub display_order: i64,
    /// `None`: `true` when created, kept when updated.
    pub is_active: Option<bool>,
}

/// Creates or updates (by slug) a plan group; returns its id.
pub async fn upsert_group(
    conn: &mut AnyConnection,
    new_id: PlanGroupId,
    g: &GroupInput,
    now: i64,
) -> Result<GroupRow> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO plan_groups (id, slug, name, name_en, name_fr, headline, headline_en, headline_fr,
             tagline, tagline_en, tagline_fr, display_order, is_active, created_at, modified_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, COALESCE($13, 1), $14, $14)
         ON CONFLICT (slug) DO UPDATE SET name = excluded.name, name_en = excluded.name_en,
             name_fr = excluded.name_fr, headline = excluded.headline, headline_en = excluded.headline_en,
             headline_fr = excluded.headline_fr, tagline = excluded.tagline, tagline_en = excluded.tagline_en,
             tagline_fr = excluded.tagline_fr, display_order = excluded.display_order,
             is_active = COALESCE($13, plan_groups.is_active), modified_at = excluded.modified_at
         RETURNING {GROUP_COLUMNS}"
    ))
    .bind(new_id.to_string())
    .bind(&g.slug)
    .bind(&g.name)
    .bind(&g.name_en)
    .bind(&g.name_fr)
    .bind(&g.headline)
    .bind(&g.headline_en)
    .bind(&g.headline_fr)
    .bind(&g.tagline)
    .bind(&g.tagline_en)
    .bind(&g.tagline_fr)
    .bind(g.display_order)
    .bind(g.is_active.map(i64::from))
    .bind(now)
    .fetch_one(conn)
    .await?)
}

#[derive(Debug, Clone, Default)]
pub struct PlanInput {
    pub legacy_id: Option<i64>,
    pub slug: String,
    pub name: String,
    pub name_en: String,
    pub name_fr: String,
    pub description: String,
    pub description_en: String,
    pub description_fr: String,
    pub hosting_type: String,
    pub disk_space_mb: i64,
    pub bandwidth_mb: i64,
    pub max_email_accounts: i64,
    pub max_databases: i64,
    pub max_subdomains: i64,
    pub max_addon_domains: i64,
    pub max_parked_domains: i64,
    pub max_ftp_accounts: i64,
    pub max_accounts: i64,
    pub category: String,
    pub type_id: String,
    pub field1: String,
    pub field2: String,
    pub driver: String,
    pub html: String,
    pub moreinfo_url: String,
    pub buyable: bool,
    pub once_per_organization: bool,
    /// `None`: `false` when created, kept when updated.
    pub hidden: Option<bool>,
    /// `None`: `true` when created, kept when updated.
    pub is_active: Option<bool>,
    pub display_order: i64,
}

/// Creates or updates (by slug) a plan; returns the stored row.
pub async fn upsert_plan(
    conn: &mut AnyConnection,
    engine: Engine,
    new_id: PlanId,
    group: PlanGroupId,
    p: &PlanInput,
    now: i64,
) -> Result<PlanRow> {
    let row: PlanRow = sqlx::query_as(&format!(
        "INSERT INTO plans (legacy_id, id, group_id, slug, name, name_en, name_fr, description, description_en,
             description_fr, hosting_type, disk_space_mb, bandwidth_mb, max_email_accounts, max_databases,
             max_subdomains, max_addon_domains, max_parked_domains, max_ftp_accounts, max_accounts, category,
             type_id, field1, field2, driver, html, moreinfo_url, buyable, hidden, is_active, display_order,
             created_at, modified_at, once_per_organization)
         VALUES (COALESCE($1, (SELECT COALESCE(MAX(legacy_id), 0) + 1 FROM plans)), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
             $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, COALESCE($29, 0), COALESCE($30, 1), $31, $32, $32, $33)
         ON CONFLICT (slug) DO UPDATE SET group_id = excluded.group_id, name = excluded.name,
             name_en = excluded.name_en, name_fr = excluded.name_fr, description = excluded.description,
             description_en = excluded.description_en, description_fr = excluded.description_fr,
             hosting_type = excluded.hosting_type, disk_space_mb = excluded.disk_space_mb,
             bandwidth_mb = excluded.bandwidth_mb, max_email_accounts = excluded.max_email_accounts,
             max_databases = excluded.max_databases, max_subdomains = excluded.max_subdomains,
             max_addon_domains = excluded.max_addon_domains, max_parked_domains = excluded.max_parked_domains,
             max_ftp_accounts = excluded.max_ftp_accounts, max_accounts = excluded.max_accounts,
             category = excluded.category, type_id = excluded.type_id, field1 = excluded.field1,
             field2 = excluded.field2, driver = excluded.driver, html = excluded.html,
             moreinfo_url = excluded.moreinfo_url, buyable = excluded.buyable,
             hidden = COALESCE($29, plans.hidden), is_active = COALESCE($30, plans.is_active),
             display_order = excluded.display_order,
             once_per_organization = excluded.once_per_organization,
             modified_at = excluded.modified_at
         RETURNING {PLAN_COLUMNS}"
    ))
    .bind(p.legacy_id)
    .bind(new_id.to_string())
    .bind(group.to_string())
    .bind(&p.slug)
    .bind(&p.name)
    .bind(&p.name_en)
    .bind(&p.name_fr)
    .bind(&p.description)
    .bind(&p.description_en)
    .bind(&p.description_fr)
    .bind(&p.hosting_type)
    .bind(p.disk_space_mb)
    .bind(p.bandwidth_mb)
    .bind(p.max_email_accounts)
    .bind(p.max_databases)
    .bind(p.max_subdomains)
    .bind(p.max_addon_domains)
    .bind(p.max_parked_domains)
    .bind(p.max_ftp_accounts)
    .bind(p.max_accounts)
    .bind(&p.category)
    .bind(&p.type_id)
    .bind(&p.field1)
    .bind(&p.field2)
    .bind(&p.driver)
    .bind(&p.html)
    .bind(&p.moreinfo_url)
    .bind(i64::from(p.buyable))
    .bind(p.hidden.map(i64::from))
    .bind(p.is_active.map(i64::from))
    .bind(p.display_order)
    .bind(now)
    .bind(i64::from(p.once_per_organization))
    .fetch_one(&mut *conn)
    .await?;
    if let Some(sql) = crate::dialect::legacy_id_catch_up(engine.into(), "plans") {
        sqlx::query(&sql).execute(&mut *conn).await?;
    }
    Ok(row)
}

pub async fn set_plan_active(
    conn: &mut AnyConnection,
    id: PlanId,
    active: bool,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query("UPDATE plans SET is_active = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(i64::from(active))
        .bind(now)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_group_active(
    conn: &mut AnyConnection,
    id: PlanGroupId,
    active: bool,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query("UPDATE plan_groups SET is_active = $2, modified_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(i64::from(active))
        .bind(now)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

#[derive(Debug, Clone)]
pub struct PriceInput {
    pub billing_cycle: String,
    pub currency: String,
    pub price_minor: i64,
    pub setup_fee_minor: i64,
    pub is_default: bool,
}

/// Replaces a plan's price list.
pub async fn replace_prices(
    conn: &mut AnyConnection,
    plan: PlanId,
    prices: &[PriceInput],
) -> Result<()> {
    sqlx::query("DELETE FROM plan_prices WHERE plan_id = $1")
        .bind(plan.to_string())
        .execute(&mut *conn)
        .await?;
    for p in prices {
        sqlx::query(
            "INSERT INTO plan_prices (plan_id, billing_cycle, currency, price_minor, setup_fee_minor, is_default)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(plan.to_string())
        .bind(&p.billing_cycle)
        .bind(&p.currency)
        .bind(p.price_minor)
        .bind(p.setup_fee_minor)
        .bind(i64::from(p.is_default))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Replaces a plan's panel packages (driver → package).
pub async fn replace_plan_packages(
    conn: &mut AnyConnection,
    plan: PlanId,
    packages: &[(String, String)],
) -> Result<()> {
    sqlx::query("DELETE FROM plan_packages WHERE plan_id = $1")
        .bind(plan.to_string())
        .execute(&mut *conn)
        .await?;
    for (driver, package) in packages {
        sqlx::query("INSERT INTO plan_packages (plan_id, driver, package) VALUES ($1, $2, $3)")
            .bind(plan.to_string())
            .bind(driver)
            .bind(package)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The panel package of a plan on servers of `driver`, if the catalog names one.
pub async fn plan_package<'e, E: Executor<'e, Database = Any>>(
    db: E,
    plan: PlanId,
    driver: &str,
) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT package FROM plan_packages WHERE plan_id = $1 AND driver = $2")
            .bind(plan.to_string())
            .bind(driver)
            .fetch_optional(db)
            .await?,
    )
}

#[derive(Debug, Clone)]
pub struct OfferInput {
    pub legacy_id: Option<i64>,
    pub plan_id: PlanId,
    pub intro_total_minor: i64,
    pub intro_months: i64,
    pub renewal_minor: i64,
    pub renewal_months: i64,
    pub allow_coupon: bool,
    /// `None`: `true` when created, kept when updated.
    pub is_active: Option<bool>,
}

/// Creates an offer, or updates the one with the same legacy id.
pub async fn upsert_offer(
    conn: &mut AnyConnection,
    engine: Engine,
    new_id: OfferId,
    o: &OfferInput,
    now: i64,
) -> Result<OfferRow> {
    let row = sqlx::query_as(&format!(
        "INSERT INTO service_offers (legacy_id, id, plan_id, intro_total_minor, intro_months, renewal_minor,
             renewal_months, allow_coupon, is_active, created_at, modified_at)
         VALUES (COALESCE($1, (SELECT COALESCE(MAX(legacy_id), 0) + 1 FROM service_offers)), $2, $3, $4, $5, $6, $7, $8, COALESCE($9, 1), $10, $10)
         ON CONFLICT (legacy_id) DO UPDATE SET plan_id = excluded.plan_id,
             intro_total_minor = excluded.intro_total_minor, intro_months = excluded.intro_months,
             renewal_minor = excluded.renewal_minor, renewal_months = excluded.renewal_months,
             allow_coupon = excluded.allow_coupon, is_active = COALESCE($9, service_offers.is_active),
             modified_at = excluded.modified_at,
             deleted_at = CASE WHEN COALESCE($9, service_offers.is_active) = 1 THEN NULL ELSE service_offers.deleted_at END
         RETURNING {OFFER_COLUMNS}"
    ))
    .bind(o.legacy_id)
    .bind(new_id.to_string())
    .bind(o.plan_id.to_string())
    .bind(o.intro_total_minor)
    .bind(o.intro_months)
    .bind(o.renewal_minor)
    .bind(o.renewal_months)
    .bind(i64::from(o.allow_coupon))
    .bind(o.is_active.map(i64::from))
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(sql) = crate::dialect::legacy_id_catch_up(engine.into(), "service_offers") {
        sqlx::query(&sql).execute(&mut *conn).await?;
    }
    Ok(row)
}

pub async fn deactivate_offer(conn: &mut AnyConnection, id: OfferId, now: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE service_offers SET is_active = 0, deleted_at = $2, modified_at = $2 WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

#[derive(Debug, Clone)]
pub struct CouponInput {
    pub code: String,
    pub kind: i64,
    pub value: i64,
    pub recurring: bool,
    pub plan_id: Option<PlanId>,
    pub max_uses: Option<i64>,
    pub expires_at: Option<i64>,
    /// `None`: `true` when created, kept when updated.
    pub is_active: Option<bool>,
    /// The billing cycles it applies to (comma-separated wire names); `None`: every cycle.
    pub cycles: Option<String>,
}

/// Creates or updates (by code, whatever its letters' case: codes are entered in any case,
/// so `welcome10` is `WELCOME10`, kept as first written) a coupon. The use count is kept.
pub async fn upsert_coupon(
    conn: &mut AnyConnection,
    new_id: CouponId,
    c: &CouponInput,
    now: i64,
) -> Result<CouponRow> {
    // Codes are one whatever their case, which the unique index does not see: on
    // PostgreSQL two imports of `Winter1` and `WINTER1` at once both found none and both
    // inserted (found by the engines' parity audit). The code's lock, by its lower case,
    // until the transaction ends.
    crate::idempotency::lock_keys(conn, &[("coupon", &c.code.to_lowercase())]).await?;
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT code FROM coupons WHERE LOWER(code) = LOWER($1) ORDER BY created_at LIMIT 1",
    )
    .bind(&c.code)
    .fetch_optional(&mut *conn)
    .await?;
    let code = existing.unwrap_or_else(|| c.code.clone());
    Ok(sqlx::query_as(&format!(
        "INSERT INTO coupons (id, code, kind, value, recurring, plan_id, max_uses, expires_at, is_active, created_at, modified_at, cycles)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, COALESCE($9, 1), $10, $10, $11)
         ON CONFLICT (code) DO UPDATE SET kind = excluded.kind, value = excluded.value,
             recurring = excluded.recurring, plan_id = excluded.plan_id, max_uses = excluded.max_uses,
             expires_at = excluded.expires_at, is_active = COALESCE($9, coupons.is_active), modified_at = excluded.modified_at,
             cycles = excluded.cycles
         RETURNING {COUPON_COLUMNS}"
    ))
    .bind(new_id.to_string())
    .bind(&code)
    .bind(c.kind)
    .bind(c.value)
    .bind(i64::from(c.recurring))
    .bind(c.plan_id.map(|p| p.to_string()))
    .bind(c.max_uses)
    .bind(c.expires_at)
    .bind(c.is_active.map(i64::from))
    .bind(now)
    .bind(c.cycles.as_deref())
    .fetch_one(conn)
    .await?)
}

pub async fn deactivate_coupon(conn: &mut AnyConnection, id: CouponId, now: i64) -> Result<bool> {
    let r = sqlx::query("UPDATE coupons SET is_active = 0, modified_at = $2 WHERE id = $1")
        .bind(id.to_string())
        .bind(now)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

#[derive(Debug, Clone)]
pub struct TldInput {
    pub tld: String,
    pub display_name: String,
    pub category: String,
    pub register_open: bool,
    pub transfer_open: bool,
    pub min_years: i64,
    pub max_years: i64,
    /// `None`: `true` when created, kept when updated.
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct TldPriceInput {
    pub years: i64,
    pub currency: String,
    pub register_minor: i64,
    pub renew_minor: i64,
    pub transfer_minor: i64,
}

/// Creates or updates a TLD and replaces its price table.
pub async fn upsert_tld(
    conn: &mut AnyConnection,
    t: &TldInput,
    prices: &[TldPriceInput],
    now: i64,
) -> Result<TldRow> {
    let row = sqlx::query_as(&format!(
        "INSERT INTO tlds (tld, display_name, category, register_open, transfer_open, min_years, max_years, is_active, created_at, modified_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, 1), $9, $9)
         ON CONFLICT (tld) DO UPDATE SET display_name = excluded.display_name, category = excluded.category,
             register_open = excluded.register_open, transfer_open = excluded.transfer_open,
             min_years = excluded.min_years, max_years = excluded.max_years,
             is_active = COALESCE($8, tlds.is_active), modified_at = excluded.modified_at
         RETURNING {TLD_COLUMNS}"
    ))
    .bind(&t.tld)
    .bind(&t.display_name)
    .bind(&t.category)
    .bind(i64::from(t.register_open))
    .bind(i64::from(t.transfer_open))
    .bind(t.min_years)
    .bind(t.max_years)
    .bind(t.is_active.map(i64::from))
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM tld_prices WHERE tld = $1")
        .bind(&t.tld)
        .execute(&mut *conn)
        .await?;
    for p in prices {
        sqlx::query(
            "INSERT INTO tld_prices (tld, years, currency, register_minor, renew_minor, transfer_minor)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.tld)
        .bind(p.years)
        .bind(&p.currency)
        .bind(p.register_minor)
        .bind(p.renew_minor)
        .bind(p.transfer_minor)
        .execute(&mut *conn)
        .await?;
    }
    Ok(row)
}

pub async fn set_tld_active(
    conn: &mut AnyConnection,
    tld: &str,
    active: bool,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query("UPDATE tlds SET is_active = $2, modified_at = $3 WHERE tld = $1")
        .bind(tld)
        .bind(i64::from(active))
        .bind(now)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// A coupon's uses counted now (`None`: no such coupon).
pub async fn coupon_uses<C: SqlConn>(conn: &mut C, coupon: &CouponId) -> Result<Option<i64>> {
    let Some(row) = conn
        .fetch_row(
            "SELECT uses FROM coupons WHERE id = $1",
            vals![coupon.to_string()],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(crate::Cols::new(row).int()?))
}

/// Gives back one use of a coupon: its order was cancelled unpaid (expired, deleted or
/// cancelled), so a limited coupon is not used up by orders never paid.
pub async fn release_coupon<C: SqlConn>(conn: &mut C, coupon: &str) -> Result<()> {
    conn.exec(
        "UPDATE coupons SET uses = uses - 1 WHERE id = $1 AND uses > 0",
        vals![coupon],
    )
    .await?;
    Ok(())
}

/// Counts one use of a coupon at `now`; `false` when it is used up, expired or switched off
/// (the limits hold under concurrent orders, and against a coupon changed since the order
/// was validated, because the checks are in the update).
pub async fn use_coupon<C: SqlConn>(conn: &mut C, coupon: &str, now: i64) -> Result<bool> {
    let changed = conn
        .exec(
            "UPDATE coupons SET uses = uses + 1 WHERE id = $1 AND is_active = 1 \
             AND (max_uses IS NULL OR uses < max_uses) AND (expires_at IS NULL OR expires_at > $2)",
            vals![coupon, now],
        )
        .await?;
    Ok(changed == 1)
}
