//! Writing the catalog: a validated file in one transaction, and staff edits. Each bumps
//! the stored version, so every node's cached view is rebuilt.

use std::collections::HashMap;

use lodge_core::{CouponId, Currency, OfferId, PlanGroupId, PlanId};
use lodge_store::catalog as db;
use lodge_store::{Conflict, StoreError};

use super::validate::validate;
use super::CatalogFile;
use crate::{Lodge, Result, ServiceError};

impl Lodge {
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
    /// Imports a whole catalog file: its errors keyed by section (`plans`, `coupons`, …).
    pub async fn import_catalog(&self, file: &CatalogFile) -> Result<ImportSummary> {
        self.import_catalog_keyed(file)
            .await
            .map_err(|e| rekey(e, false))
    }

    /// Creates or updates one item (a staff endpoint's plan, coupon, offer, TLD or group, as
    /// a file of one): its errors keyed by the item's own fields (`kind`, `pricing`, …), as
    /// the dialect keys a request's (found by the docs audit: `{"coupons": …}`).
    pub async fn import_catalog_item(&self, file: &CatalogFile) -> Result<ImportSummary> {
        self.import_catalog_keyed(file)
            .await
            .map_err(|e| rekey(e, true))
    }

    async fn import_catalog_keyed(&self, file: &CatalogFile) -> Result<ImportSummary> {
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
        let mut tx = self.store.begin().await?;
        // One catalog write at a time: new plans and offers are numbered from the largest
        // legacy id, which two writes at once on PostgreSQL read alike (found by the
        // PostgreSQL race audit: offers created at once overwrote each other, answered 200;
        // plans created at once were refused as taking another's id). Read under the lock,
        // so the writes before it are seen.
        lodge_store::idempotency::lock_keys(&mut tx, &[("catalog", "")]).await?;
        let existing = self.catalog_uncached().await?;
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
                ServiceError::field("plans.group", format!("unknown group {group_slug:?}"))
            })?;
            let row = db::upsert_plan(&mut tx, engine, PlanId::new(), group, p, now)
                .await
                .map_err(|e| {
                    if matches!(e, StoreError::Conflict(Conflict::PlanLegacyId)) {
                        ServiceError::field(
                            "plans.legacy_id",
                            format!("plan {:?}: its legacy_id is taken by another plan", p.slug),
                        )
                    } else {
                        e.into()
                    }
                })?;
            db::replace_prices(&mut tx, row.id, prices).await?;
            let packages = self.plan_packages(file, &row.slug)?;
            db::replace_plan_packages(&mut tx, row.id, &packages).await?;
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
            o.plan_id = plan_id(slug, "offers.plan")?;
            db::upsert_offer(&mut tx, engine, OfferId::new(), &o, now).await?;
            summary.offers += 1;
        }
        for (slug, c) in &plan.coupons {
            let mut c = c.clone();
            c.plan_id = slug
                .as_deref()
                .map(|s| plan_id(s, "coupons.plan"))
                .transpose()?;
            db::upsert_coupon(&mut tx, CouponId::new(), &c, now)
                .await
                .map_err(|e| match e {
                    StoreError::Check(lodge_store::Check::CouponUsedUp) => ServiceError::field(
                        "coupons.max_uses",
                        format!(
                            "coupon {:?} has been used more than {} time(s) already: max_uses cannot go below its uses",
                            c.code,
                            c.max_uses.unwrap_or(0)
                        ),
                    ),
                    other => other.into(),
                })?;
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

impl Lodge {
    /// A plan's `packages` from the file, checked: a known driver, a name of 1 to 100
    /// characters.
    fn plan_packages(&self, file: &CatalogFile, slug: &str) -> Result<Vec<(String, String)>> {
        let Some(spec) = file.plans.iter().find(|p| p.slug == slug) else {
            return Ok(vec![]);
        };
        let mut out = vec![];
        for (driver, package) in &spec.packages {
            if !self.drivers.knows(driver) {
                return Err(ServiceError::field(
                    "plans.packages",
                    format!("plan {slug:?}: no provisioning driver named {driver:?}"),
                ));
            }
            let package = package.trim();
            if package.is_empty() || package.len() > 100 {
                return Err(ServiceError::field(
                    "plans.packages",
                    format!("plan {slug:?}: the {driver} package needs 1 to 100 characters"),
                ));
            }
            out.push((driver.clone(), package.to_owned()));
        }
        Ok(out)
    }
}

/// Field errors of the import are keyed `section.field` (`coupons.kind`): re-keyed by the
/// field (one item) or by the section (a file).
fn rekey(e: ServiceError, by_field: bool) -> ServiceError {
    let ServiceError::Invalid(fields) = e else {
        return e;
    };
    let mut out = crate::FieldErrors::new();
    for (key, errors) in fields {
        let key = match key.split_once('.') {
            Some((_, field)) if by_field => field.to_owned(),
            Some((section, _)) => section.to_owned(),
            None => key,
        };
        out.entry(key).or_default().extend(errors);
    }
    ServiceError::Invalid(out)
}
