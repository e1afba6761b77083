//! The hosting catalog, a module a step:
//!
//! - this module: the read model every read is served from ([`Catalog`], [`Plan`], [`Tld`]);
//! - [`cache`]: a node's cached view, rebuilt when the stored `catalog_version` moves, which
//!   each node checks at most once per [`CHECK_INTERVAL`], so a change made on one node
//!   reaches the others within that interval;
//! - [`file`]: the catalog file format (TOML or JSON);
//! - [`validate`]: a file checked whole, every error at once, into what to write;
//! - [`import`]: writing a validated file, and staff edits.

use std::collections::HashMap;

use lodge_core::{BillingCycle, Currency, Money, PlanGroupId, PlanId};
use lodge_store::catalog::{self as db, CatalogData};

use lodge_store::StoreError;

use crate::Result;

pub mod cache;
pub mod export;
pub mod file;
pub mod import;
pub mod validate;

pub use cache::{CatalogCache, CHECK_INTERVAL};
pub use file::*;
pub use import::{CatalogItem, ImportSummary};
pub use validate::parse_percent_bp;

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
        // Codes are matched whatever their case; should several differ only in case (made
        // before codes were kept unique that way), an active one first, the exact one next.
        let code = code.trim();
        self.coupons
            .iter()
            .filter(|c| c.code.eq_ignore_ascii_case(code))
            .max_by_key(|c| (c.is_active == 1, c.code == code))
    }
}
