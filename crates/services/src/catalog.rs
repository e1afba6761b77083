//! The hosting catalog: import (TOML or JSON), staff edits, and the in-memory view every
//! read is served from. The view is rebuilt when the stored `catalog_version` moves, which
//! each node checks at most once per [`CHECK_INTERVAL`], so a change made on one node reaches
//! the others within that interval.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lodge_core::{BillingCycle, CouponId, Currency, Money, OfferId, PlanGroupId, PlanId};
use lodge_store::catalog::{self as db, CatalogData};
use lodge_store::{Conflict, StoreError};
use serde::Deserialize;

use crate::{Lodge, Result, ServiceError, Validator};

pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// One price of a plan.
#[derive(Debug, Clone)]
pub struct Price {
    pub cycle: BillingCycle,
    pub price: Money,
    pub setup_fee: Money,
    pub is_default: bool,
}

/// A plan with its group and prices.
#[derive(Debug, Clone)]
pub struct Plan {
    pub row: db::PlanRow,
    pub group: db::GroupRow,
    /// In cycle order.
    pub prices: Vec<Price>,
}

impl Plan {
    pub fn price(&self, cycle: BillingCycle) -> Option<&Price> {
        self.prices.iter().find(|p| p.cycle == cycle)
    }
    /// The monthly price, if the plan has one.
    pub fn monthly(&self) -> Option<&Price> {
        self.price(BillingCycle::Monthly)
    }
    /// Active and buyable (group active too).
    pub fn orderable(&self) -> bool {
        self.row.is_active == 1 && self.row.buyable == 1 && self.group.is_active == 1
    }
    /// Shown in public plan lists.
    pub fn listed(&self) -> bool {
        self.orderable() && self.row.hidden == 0
    }
    /// `discount_percent` of a price: the saving against paying monthly for the same months.
    pub fn discount_percent(&self, p: &Price) -> i64 {
        match (self.monthly(), p.cycle.months()) {
            (Some(m), Some(months)) => {
                lodge_core::pricing::discount_percent(m.price.minor(), p.price.minor(), months)
            }
            _ => 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tld {
    pub row: db::TldRow,
    pub prices: Vec<db::TldPriceRow>,
}

impl Tld {
    pub fn price_for_years(&self, years: i64) -> Option<&db::TldPriceRow> {
        self.prices.iter().find(|p| p.years == years)
    }
}

/// The catalog as one node serves it.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub version: i64,
    pub currency: Currency,
    pub groups: Vec<db::GroupRow>,
    pub plans: Vec<Plan>,
    pub offers: Vec<db::OfferRow>,
    pub coupons: Vec<db::CouponRow>,
    pub tlds: Vec<Tld>,
    by_id: HashMap<PlanId, usize>,
    by_legacy: HashMap<i64, usize>,
}

impl Catalog {
    fn build(data: CatalogData, currency: Currency) -> Result<Catalog> {
        let groups: HashMap<PlanGroupId, db::GroupRow> =
            data.groups.iter().map(|g| (g.id, g.clone())).collect();
        let mut prices: HashMap<PlanId, Vec<Price>> = HashMap::new();
        for p in data.prices {
            let cycle: BillingCycle = p
                .billing_cycle
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("billing cycle {:?}", p.billing_cycle)))?;
            let cur =
                Currency::parse(&p.currency).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            prices.entry(p.plan_id).or_default().push(Price {
                cycle,
                price: Money::new(p.price_minor, cur),
                setup_fee: Money::new(p.setup_fee_minor, cur),
                is_default: p.is_default == 1,
            });
        }
        let mut plans = Vec::with_capacity(data.plans.len());
        for row in data.plans {
            let group = groups
                .get(&row.group_id)
                .cloned()
                .ok_or_else(|| StoreError::Corrupt(format!("plan {} without group", row.id)))?;
            let mut p = prices.remove(&row.id).unwrap_or_default();
            p.sort_by_key(|x| x.cycle);
            plans.push(Plan {
                row,
                group,
                prices: p,
            });
        }
        // Groups first by display order, then plans by theirs.
        plans.sort_by_key(|p| {
            (
                p.group.display_order,
                p.group.legacy_id,
                p.row.display_order,
                p.row.legacy_id,
            )
        });
        let mut tld_prices: HashMap<String, Vec<db::TldPriceRow>> = HashMap::new();
        for p in data.tld_prices {
            tld_prices.entry(p.tld.clone()).or_default().push(p);
        }
        let tlds = data
            .tlds
            .into_iter()
            .map(|row| Tld {
                prices: tld_prices.remove(&row.tld).unwrap_or_default(),
                row,
            })
            .collect();
        let by_id = plans
            .iter()
            .enumerate()
            .map(|(i, p)| (p.row.id, i))
            .collect();
        let by_legacy = plans
            .iter()
            .enumerate()
            .map(|(i, p)| (p.row.legacy_id, i))
            .collect();
        Ok(Catalog {
            version: data.version,
            currency,
            groups: data.groups,
            plans,
            offers: data.offers,
            coupons: data.coupons,
            tlds,
            by_id,
            by_legacy,
        })
    }

    pub fn plan(&self, id: PlanId) -> Option<&Plan> {
        self.by_id.get(&id).and_then(|&i| self.plans.get(i))
    }
    pub fn plan_by_legacy(&self, legacy: i64) -> Option<&Plan> {
        self.by_legacy.get(&legacy).and_then(|&i| self.plans.get(i))
    }
    pub fn listed_plans(&self) -> impl Iterator<Item = &Plan> {
        self.plans.iter().filter(|p| p.listed())
    }
    pub fn tld(&self, tld: &str) -> Option<&Tld> {
        self.tlds
            .iter()
            .find(|t| t.row.tld == tld && t.row.is_active == 1)
    }
    /// Active offers of a plan.
    pub fn offers_for(&self, plan: PlanId) -> impl Iterator<Item = &db::OfferRow> {
        self.offers
            .iter()
            .filter(move |o| o.plan_id == plan && o.is_active == 1)
    }
    pub fn coupon(&self, code: &str) -> Option<&db::CouponRow> {
        self.coupons
            .iter()
            .find(|c| c.code.eq_ignore_ascii_case(code.trim()))
    }
}

/// A node's cached catalog.
#[derive(Debug, Clone)]
pub struct CatalogCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    current: RwLock<Option<(Arc<Catalog>, Instant)>>,
    reload: tokio::sync::Mutex<()>,
}

impl Default for CatalogCache {
    fn default() -> Self {
        Self::new()
    }
}

impl CatalogCache {
    pub fn new() -> Self {
        CatalogCache {
            inner: Arc::new(CacheInner {
                current: RwLock::new(None),
                reload: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn fresh(&self) -> Option<Arc<Catalog>> {
        let guard = self.inner.current.read().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|(_, checked)| checked.elapsed() < CHECK_INTERVAL)
            .map(|(c, _)| c.clone())
    }

    fn cached(&self) -> Option<Arc<Catalog>> {
        let guard = self.inner.current.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|(c, _)| c.clone())
    }

    fn put(&self, c: Arc<Catalog>) {
        let mut guard = self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *guard = Some((c, Instant::now()));
    }

    /// Forgets the view so the next read reloads it (after a local catalog write).
    pub fn invalidate(&self) {
        let mut guard = self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *guard = None;
    }
}

impl Lodge {
    /// The current catalog view (rebuilt if another node or this one changed the catalog).
    pub async fn catalog(&self) -> Result<Arc<Catalog>> {
        if let Some(c) = self.catalog.fresh() {
            return Ok(c);
        }
        let _guard = self.catalog.inner.reload.lock().await;
        if let Some(c) = self.catalog.fresh() {
            return Ok(c);
        }
        let stored = db::version(self.store.reader()).await?;
        if let Some(c) = self.catalog.cached().filter(|c| c.version == stored) {
            self.catalog.put(c.clone());
            return Ok(c);
        }
        let data = db::load(self.store.reader()).await?;
        let c = Arc::new(Catalog::build(data, self.settings.currency)?);
        self.catalog.put(c.clone());
        Ok(c)
    }

    /// The catalog read from the database now, bypassing the cached view: for staff views of
    /// what orders change without moving the catalog's version (a coupon's `uses`).
    pub async fn catalog_uncached(&self) -> Result<Arc<Catalog>> {
        let data = db::load(self.store.reader()).await?;
        Ok(Arc::new(Catalog::build(data, self.settings.currency)?))
    }

    /// Imports a catalog file (TOML or JSON, by content), creating or updating by slug/code.
    pub async fn import_catalog_text(&self, text: &str) -> Result<ImportSummary> {
        let trimmed = text.trim_start();
        let file: CatalogFile = if trimmed.starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| ServiceError::field("file", format!("invalid JSON catalog: {e}")))?
        } else {
            toml::from_str(text)
                .map_err(|e| ServiceError::field("file", format!("invalid TOML catalog: {e}")))?
        };
        self.import_catalog(&file).await
    }

    /// Validates the whole file first, then writes it in one transaction.
    pub async fn import_catalog(&self, file: &CatalogFile) -> Result<ImportSummary> {
        let currency = match &file.currency {
            Some(c) => {
                let c = Currency::parse(c)
                    .map_err(|e| ServiceError::field("currency", e.to_string()))?;
                if c != self.settings.currency {
                    return Err(ServiceError::field(
                        "currency",
                        format!(
                            "This installation sells in {}; the catalog is in {}.",
                            self.settings.currency.code(),
                            c.code()
                        ),
                    ));
                }
                c
            }
            None => self.settings.currency,
        };
        let plan = validate(file, currency)?;
        let now = self.now_us();
        let engine = self.store.engine();
        let existing = self.catalog().await?;
        let mut tx = self.store.begin().await?;
        let mut group_ids: HashMap<String, PlanGroupId> = existing
            .groups
            .iter()
            .map(|g| (g.slug.clone(), g.id))
            .collect();
        let mut plan_ids: HashMap<String, PlanId> = existing
            .plans
            .iter()
            .map(|p| (p.row.slug.clone(), p.row.id))
            .collect();
        let mut summary = ImportSummary::default();
        for g in &plan.groups {
            let row = db::upsert_group(&mut tx, PlanGroupId::new(), g, now).await?;
            group_ids.insert(row.slug.clone(), row.id);
            summary.groups += 1;
        }
        for (group_slug, p, prices) in &plan.plans {
            let group = *group_ids.get(group_slug).ok_or_else(|| {
                ServiceError::field("plans", format!("unknown group {group_slug:?}"))
            })?;
            let row = db::upsert_plan(&mut tx, engine, PlanId::new(), group, p, now)
                .await
                .map_err(|e| {
                    if matches!(e, StoreError::Conflict(Conflict::PlanLegacyId)) {
                        ServiceError::field(
                            "plans",
                            format!("plan {:?}: its legacy_id is taken by another plan", p.slug),
                        )
                    } else {
                        e.into()
                    }
                })?;
            db::replace_prices(&mut tx, row.id, prices).await?;
            plan_ids.insert(row.slug.clone(), row.id);
            summary.plans += 1;
        }
        let plan_id = |slug: &str, what: &str| {
            plan_ids
                .get(slug)
                .copied()
                .ok_or_else(|| ServiceError::field(what, format!("unknown plan {slug:?}")))
        };
        for (slug, o) in &plan.offers {
            let mut o = o.clone();
            o.plan_id = plan_id(slug, "offers")?;
            db::upsert_offer(&mut tx, engine, OfferId::new(), &o, now).await?;
            summary.offers += 1;
        }
        for (slug, c) in &plan.coupons {
            let mut c = c.clone();
            c.plan_id = slug.as_deref().map(|s| plan_id(s, "coupons")).transpose()?;
            db::upsert_coupon(&mut tx, CouponId::new(), &c, now).await?;
            summary.coupons += 1;
        }
        for (t, prices) in &plan.tlds {
            db::upsert_tld(&mut tx, t, prices, now).await?;
            summary.tlds += 1;
        }
        summary.version = db::bump_version(&mut tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.catalog.invalidate();
        Ok(summary)
    }

    /// Deactivates (or reactivates) a catalog item; `NotFound` when there is no such item.
    pub async fn set_catalog_item_active(&self, item: CatalogItem<'_>, active: bool) -> Result<()> {
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        let found = match item {
            CatalogItem::Group(id) => db::set_group_active(&mut tx, id, active, now).await?,
            CatalogItem::Plan(id) => db::set_plan_active(&mut tx, id, active, now).await?,
            CatalogItem::Offer(id) => db::deactivate_offer(&mut tx, id, now).await?,
            CatalogItem::Coupon(id) => db::deactivate_coupon(&mut tx, id, now).await?,
            CatalogItem::Tld(t) => db::set_tld_active(&mut tx, t, active, now).await?,
        };
        if !found {
            return Err(ServiceError::NotFound);
        }
        db::bump_version(&mut tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.catalog.invalidate();
        Ok(())
    }
}

pub enum CatalogItem<'a> {
    Group(PlanGroupId),
    Plan(PlanId),
    Offer(OfferId),
    Coupon(CouponId),
    Tld(&'a str),
}

#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct ImportSummary {
    pub groups: usize,
    pub plans: usize,
    pub offers: usize,
    pub coupons: usize,
    pub tlds: usize,
    pub version: i64,
}

// ---- the file format ----

fn yes() -> bool {
    true
}

/// A catalog file (`lodge catalog import`, `POST /v1/admin/catalog/import`). Amounts are
/// decimal strings in the installation's currency (`"5.00"`).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    #[serde(default)]
    pub plans: Vec<PlanSpec>,
    #[serde(default)]
    pub offers: Vec<OfferSpec>,
    #[serde(default)]
    pub coupons: Vec<CouponSpec>,
    #[serde(default)]
    pub tlds: Vec<TldSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub name_en: Option<String>,
    #[serde(default)]
    pub name_fr: Option<String>,
    #[serde(default)]
    pub headline: String,
    #[serde(default)]
    pub headline_en: Option<String>,
    #[serde(default)]
    pub headline_fr: Option<String>,
    #[serde(default)]
    pub tagline: String,
    #[serde(default)]
    pub tagline_en: Option<String>,
    #[serde(default)]
    pub tagline_fr: Option<String>,
    #[serde(default)]
    pub display_order: i64,
    #[serde(default = "yes")]
    pub is_active: bool,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    pub slug: String,
    #[serde(default)]
    pub legacy_id: Option<i64>,
    pub group: String,
    pub name: String,
    #[serde(default)]
    pub name_en: Option<String>,
    #[serde(default)]
    pub name_fr: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub description_en: Option<String>,
    #[serde(default)]
    pub description_fr: Option<String>,
    #[serde(default)]
    pub hosting_type: Option<String>,
    #[serde(default)]
    pub disk_space_mb: i64,
    #[serde(default)]
    pub bandwidth_mb: i64,
    #[serde(default)]
    pub max_email_accounts: i64,
    #[serde(default)]
    pub max_databases: i64,
    #[serde(default)]
    pub max_subdomains: i64,
    #[serde(default)]
    pub max_addon_domains: i64,
    #[serde(default)]
    pub max_parked_domains: i64,
    #[serde(default)]
    pub max_ftp_accounts: i64,
    #[serde(default)]
    pub max_accounts: i64,
    /// `/apiv2` `services_category` (panel family: 200 cPanel, 202 Plesk, 204 DirectAdmin).
    #[serde(default)]
    pub category: Option<String>,
    /// `/apiv2` `services_type`.
    #[serde(default)]
    pub type_id: Option<String>,
    #[serde(default)]
    pub field1: String,
    #[serde(default)]
    pub field2: String,
    /// Provisioning driver of the servers that host it (`nginx`, …).
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub html: String,
    #[serde(default)]
    pub moreinfo_url: String,
    #[serde(default = "yes")]
    pub buyable: bool,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    pub display_order: i64,
    pub pricing: Vec<PriceSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    pub billing_cycle: String,
    pub price: String,
    #[serde(default)]
    pub setup_fee: Option<String>,
    #[serde(default)]
    pub is_default: bool,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferSpec {
    #[serde(default)]
    pub legacy_id: Option<i64>,
    pub plan: String,
    /// Total for the first `intro_months`.
    pub intro_total: String,
    pub intro_months: i64,
    pub renewal: String,
    pub renewal_months: i64,
    #[serde(default = "yes")]
    pub allow_coupon: bool,
    #[serde(default = "yes")]
    pub is_active: bool,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CouponSpec {
    pub code: String,
    /// `percent` (1), `fixed_amount` (2) or `fixed_price` (3).
    pub kind: String,
    /// A percentage (`"10"`, `"12.5"`) or an amount (`"5.00"`).
    pub value: String,
    #[serde(default)]
    pub recurring: bool,
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub max_uses: Option<i64>,
    /// RFC 3339 instant.
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default = "yes")]
    pub is_active: bool,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TldSpec {
    pub tld: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default = "yes")]
    pub register_open: bool,
    #[serde(default = "yes")]
    pub transfer_open: bool,
    #[serde(default)]
    pub min_years: Option<i64>,
    #[serde(default)]
    pub max_years: Option<i64>,
    #[serde(default = "yes")]
    pub is_active: bool,
    pub prices: Vec<TldPriceSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TldPriceSpec {
    pub years: i64,
    pub register: String,
    pub renew: String,
    pub transfer: String,
}

/// A validated file, ready to write.
struct ImportPlan {
    groups: Vec<db::GroupInput>,
    plans: Vec<(String, db::PlanInput, Vec<db::PriceInput>)>,
    offers: Vec<(String, db::OfferInput)>,
    coupons: Vec<(Option<String>, db::CouponInput)>,
    tlds: Vec<(db::TldInput, Vec<db::TldPriceInput>)>,
}

fn slug_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Parses a percentage with up to two decimals into basis points.
pub fn parse_percent_bp(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('%');
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || frac.len() > 2 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: i64 = int.parse().ok()?;
    let frac: i64 = format!("{frac:0<2}").parse().ok()?;
    let bp = int.checked_mul(100)?.checked_add(frac)?;
    (bp <= 10_000).then_some(bp)
}

fn validate(file: &CatalogFile, currency: Currency) -> Result<ImportPlan> {
    let mut v = Validator::new();
    let money = |v: &mut Validator, field: &str, s: &str| -> i64 {
        match Money::parse_decimal(s, currency) {
            Ok(m) if !m.is_negative() => m.minor(),
            Ok(_) => {
                v.add(field, format!("{s:?}: amounts cannot be negative"));
                0
            }
            Err(e) => {
                v.add(field, format!("{s:?}: {e}"));
                0
            }
        }
    };
    let mut out = ImportPlan {
        groups: vec![],
        plans: vec![],
        offers: vec![],
        coupons: vec![],
        tlds: vec![],
    };
    for g in &file.groups {
        if !slug_ok(&g.slug) {
            v.add(
                "groups",
                format!("{:?}: a slug is lowercase letters, digits, - and _", g.slug),
            );
        }
        if g.name.trim().is_empty() {
            v.add("groups", format!("{:?}: a name is required", g.slug));
        }
        out.groups.push(db::GroupInput {
            slug: g.slug.clone(),
            name: g.name.clone(),
            name_en: g.name_en.clone().unwrap_or_else(|| g.name.clone()),
            name_fr: g.name_fr.clone().unwrap_or_else(|| g.name.clone()),
            headline: g.headline.clone(),
            headline_en: g.headline_en.clone().unwrap_or_else(|| g.headline.clone()),
            headline_fr: g.headline_fr.clone().unwrap_or_else(|| g.headline.clone()),
            tagline: g.tagline.clone(),
            tagline_en: g.tagline_en.clone().unwrap_or_else(|| g.tagline.clone()),
            tagline_fr: g.tagline_fr.clone().unwrap_or_else(|| g.tagline.clone()),
            display_order: g.display_order,
            is_active: g.is_active,
        });
    }
    for p in &file.plans {
        let tag = format!("plan {:?}", p.slug);
        if !slug_ok(&p.slug) {
            v.add(
                "plans",
                format!("{tag}: a slug is lowercase letters, digits, - and _"),
            );
        }
        if p.name.trim().is_empty() {
            v.add("plans", format!("{tag}: a name is required"));
        }
        if p.legacy_id.is_some_and(|l| l <= 0) {
            v.add("plans", format!("{tag}: legacy_id must be positive"));
        }
        let hosting_type = p
            .hosting_type
            .clone()
            .unwrap_or_else(|| "hostingaccount".into());
        if !["hostingaccount", "reselleraccount"].contains(&hosting_type.as_str()) {
            v.add(
                "plans",
                format!("{tag}: hosting_type is hostingaccount or reselleraccount"),
            );
        }
        let limits = [
            p.disk_space_mb,
            p.bandwidth_mb,
            p.max_email_accounts,
            p.max_databases,
            p.max_subdomains,
            p.max_addon_domains,
            p.max_parked_domains,
            p.max_ftp_accounts,
            p.max_accounts,
        ];
        if limits.iter().any(|l| *l < 0) {
            v.add("plans", format!("{tag}: limits cannot be negative"));
        }
        if p.pricing.is_empty() {
            v.add("plans", format!("{tag}: at least one price is required"));
        }
        let mut prices = Vec::new();
        let mut seen = Vec::new();
        for pr in &p.pricing {
            let Ok(cycle) = pr.billing_cycle.parse::<BillingCycle>() else {
                v.add(
                    "plans",
                    format!("{tag}: unknown billing cycle {:?}", pr.billing_cycle),
                );
                continue;
            };
            if seen.contains(&cycle) {
                v.add("plans", format!("{tag}: {cycle} priced twice"));
            }
            seen.push(cycle);
            let price_minor = money(&mut v, "plans", &pr.price);
            if cycle == BillingCycle::Free && price_minor != 0 {
                v.add("plans", format!("{tag}: the free cycle costs 0"));
            }
            let setup_fee_minor = pr
                .setup_fee
                .as_deref()
                .map(|s| money(&mut v, "plans", s))
                .unwrap_or(0);
            prices.push(db::PriceInput {
                billing_cycle: cycle.as_str().to_owned(),
                currency: currency.code().to_owned(),
                price_minor,
                setup_fee_minor,
                is_default: pr.is_default,
            });
        }
        match prices.iter().filter(|x| x.is_default).count() {
            0 => {
                // The monthly price (or the first) is the default when none is marked.
                let idx = prices
                    .iter()
                    .position(|x| x.billing_cycle == "monthly")
                    .unwrap_or(0);
                if let Some(x) = prices.get_mut(idx) {
                    x.is_default = true;
                }
            }
            1 => {}
            _ => v.add("plans", format!("{tag}: only one price can be the default")),
        }
        out.plans.push((
            p.group.clone(),
            db::PlanInput {
                legacy_id: p.legacy_id,
                slug: p.slug.clone(),
                name: p.name.clone(),
                name_en: p.name_en.clone().unwrap_or_else(|| p.name.clone()),
                name_fr: p.name_fr.clone().unwrap_or_else(|| p.name.clone()),
                description: p.description.clone(),
                description_en: p
                    .description_en
                    .clone()
                    .unwrap_or_else(|| p.description.clone()),
                description_fr: p
                    .description_fr
                    .clone()
                    .unwrap_or_else(|| p.description.clone()),
                hosting_type,
                disk_space_mb: p.disk_space_mb,
                bandwidth_mb: p.bandwidth_mb,
                max_email_accounts: p.max_email_accounts,
                max_databases: p.max_databases,
                max_subdomains: p.max_subdomains,
                max_addon_domains: p.max_addon_domains,
                max_parked_domains: p.max_parked_domains,
                max_ftp_accounts: p.max_ftp_accounts,
                max_accounts: p.max_accounts,
                category: p.category.clone().unwrap_or_else(|| "204".into()),
                type_id: p.type_id.clone().unwrap_or_else(|| "206".into()),
                field1: p.field1.clone(),
                field2: p.field2.clone(),
                driver: p.driver.clone().unwrap_or_else(|| "nginx".into()),
                html: p.html.clone(),
                moreinfo_url: p.moreinfo_url.clone(),
                buyable: p.buyable,
                hidden: p.hidden,
                is_active: p.is_active,
                display_order: p.display_order,
            },
            prices,
        ));
    }
    for o in &file.offers {
        let tag = format!("offer for {:?}", o.plan);
        if BillingCycle::from_months(u32::try_from(o.intro_months).unwrap_or(0)).is_none() {
            v.add(
                "offers",
                format!("{tag}: intro_months is one of 1, 3, 6, 12, 24, 36"),
            );
        }
        if BillingCycle::from_months(u32::try_from(o.renewal_months).unwrap_or(0)).is_none() {
            v.add(
                "offers",
                format!("{tag}: renewal_months is one of 1, 3, 6, 12, 24, 36"),
            );
        }
        out.offers.push((
            o.plan.clone(),
            db::OfferInput {
                legacy_id: o.legacy_id,
                plan_id: PlanId::new(),
                intro_total_minor: money(&mut v, "offers", &o.intro_total),
                intro_months: o.intro_months,
                renewal_minor: money(&mut v, "offers", &o.renewal),
                renewal_months: o.renewal_months,
                allow_coupon: o.allow_coupon,
                is_active: o.is_active,
            },
        ));
    }
    for c in &file.coupons {
        let tag = format!("coupon {:?}", c.code);
        let code_ok = !c.code.is_empty()
            && c.code.len() <= 64
            && c.code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !code_ok {
            v.add(
                "coupons",
                format!("{tag}: a code is 1-64 letters, digits, - or _"),
            );
        }
        let kind = match c.kind.as_str() {
            "percent" | "1" => 1,
            "fixed_amount" | "2" => 2,
            "fixed_price" | "3" => 3,
            other => {
                v.add(
                    "coupons",
                    format!("{tag}: unknown kind {other:?} (percent, fixed_amount, fixed_price)"),
                );
                1
            }
        };
        let value = if kind == 1 {
            parse_percent_bp(&c.value).unwrap_or_else(|| {
                v.add("coupons", format!("{tag}: a percentage between 0 and 100"));
                0
            })
        } else {
            money(&mut v, "coupons", &c.value)
        };
        if c.max_uses.is_some_and(|m| m < 0) {
            v.add("coupons", format!("{tag}: max_uses cannot be negative"));
        }
        let expires_at = match c.expires.as_deref() {
            None => None,
            Some(s) => match s.parse::<jiff::Timestamp>() {
                Ok(t) => Some(t.as_microsecond()),
                Err(e) => {
                    v.add(
                        "coupons",
                        format!("{tag}: expires is an RFC 3339 instant: {e}"),
                    );
                    None
                }
            },
        };
        out.coupons.push((
            c.plan.clone(),
            db::CouponInput {
                code: c.code.clone(),
                kind,
                value,
                recurring: c.recurring,
                plan_id: None,
                max_uses: c.max_uses,
                expires_at,
                is_active: c.is_active,
            },
        ));
    }
    for t in &file.tlds {
        let name = t.tld.trim().trim_start_matches('.').to_lowercase();
        let tag = format!("tld {name:?}");
        let tld_ok = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !tld_ok {
            v.add("tlds", format!("{tag}: not a valid TLD"));
        }
        let min_years = t.min_years.unwrap_or(1);
        let max_years = t.max_years.unwrap_or(10);
        if !(1..=10).contains(&min_years) || !(min_years..=10).contains(&max_years) {
            v.add("tlds", format!("{tag}: 1 <= min_years <= max_years <= 10"));
        }
        let mut prices = Vec::new();
        for p in &t.prices {
            if !(1..=10).contains(&p.years) {
                v.add("tlds", format!("{tag}: years between 1 and 10"));
            }
            prices.push(db::TldPriceInput {
                years: p.years,
                currency: currency.code().to_owned(),
                register_minor: money(&mut v, "tlds", &p.register),
                renew_minor: money(&mut v, "tlds", &p.renew),
                transfer_minor: money(&mut v, "tlds", &p.transfer),
            });
        }
        if !prices.iter().any(|p| p.years == 1) {
            v.add("tlds", format!("{tag}: a price for 1 year is required"));
        }
        out.tlds.push((
            db::TldInput {
                display_name: t.display_name.clone().unwrap_or_else(|| format!(".{name}")),
                category: t.category.clone().unwrap_or_else(|| "generic".into()),
                tld: name,
                register_open: t.register_open,
                transfer_open: t.transfer_open,
                min_years,
                max_years,
                is_active: t.is_active,
            },
            prices,
        ));
    }
    v.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_parsing() {
        assert_eq!(parse_percent_bp("10"), Some(1000));
        assert_eq!(parse_percent_bp("12.5"), Some(1250));
        assert_eq!(parse_percent_bp("12.55%"), Some(1255));
        assert_eq!(parse_percent_bp("100"), Some(10_000));
        assert_eq!(parse_percent_bp("100.01"), None);
        assert_eq!(parse_percent_bp("1.234"), None);
        assert_eq!(parse_percent_bp("-5"), None);
        assert_eq!(parse_percent_bp(""), None);
    }
}
