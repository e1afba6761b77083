//! The stored catalog as a catalog file (`lodge catalog export`,
//! `GET /v1/admin/catalog/export`): every item whole, with every field the import reads, so
//! that exporting, editing and importing changes only what was edited (found by the operator
//! audit: there was no way to get the catalog out, and an import writes each item whole).

use std::collections::HashMap;

use lodge_core::{BillingCycle, Money};
use lodge_store::catalog as db;

use super::file::{
    CatalogFile, CouponSpec, GroupSpec, OfferSpec, PlanSpec, PriceSpec, TldPriceSpec, TldSpec,
};
use crate::{Lodge, Result};

/// A percentage in basis points as the file writes it (`"10"`, `"12.5"`, `"12.55"`).
fn percent(bp: i64) -> String {
    let (int, frac) = (bp / 100, bp % 100);
    match frac {
        0 => int.to_string(),
        f if f % 10 == 0 => format!("{int}.{}", f / 10),
        f => format!("{int}.{f:02}"),
    }
}

impl Lodge {
    /// The stored catalog (inactive and hidden items included) as a catalog file.
    pub async fn export_catalog(&self) -> Result<CatalogFile> {
        let data = db::load(self.store.reader()).await?;
        let packages = db::all_plan_packages(self.store.reader()).await?;
        let currency = self.settings.currency;
        let money = |minor: i64| Money::new(minor, currency).format_decimal();
        let group_slug: HashMap<String, String> = data
            .groups
            .iter()
            .map(|g| (g.id.to_string(), g.slug.clone()))
            .collect();
        let plan_slug: HashMap<String, String> = data
            .plans
            .iter()
            .map(|p| (p.id.to_string(), p.slug.clone()))
            .collect();
        let groups = data
            .groups
            .iter()
            .map(|g| GroupSpec {
                slug: g.slug.clone(),
                name: g.name.clone(),
                name_en: Some(g.name_en.clone()),
                name_fr: Some(g.name_fr.clone()),
                headline: g.headline.clone(),
                headline_en: Some(g.headline_en.clone()),
                headline_fr: Some(g.headline_fr.clone()),
                tagline: g.tagline.clone(),
                tagline_en: Some(g.tagline_en.clone()),
                tagline_fr: Some(g.tagline_fr.clone()),
                display_order: g.display_order,
                is_active: Some(g.is_active == 1),
            })
            .collect();
        let plans = data
            .plans
            .iter()
            .map(|p| {
                let id = p.id.to_string();
                let mut prices: Vec<&db::PriceRow> = data
                    .prices
                    .iter()
                    .filter(|x| x.plan_id == p.id && x.currency == currency.code())
                    .collect();
                prices.sort_by_key(|x| {
                    x.billing_cycle
                        .parse::<BillingCycle>()
                        .ok()
                        .and_then(|c| c.months())
                        .unwrap_or(0)
                });
                PlanSpec {
                    slug: p.slug.clone(),
                    legacy_id: Some(p.legacy_id),
                    group: group_slug
                        .get(&p.group_id.to_string())
                        .cloned()
                        .unwrap_or_default(),
                    name: p.name.clone(),
                    name_en: Some(p.name_en.clone()),
                    name_fr: Some(p.name_fr.clone()),
                    description: p.description.clone(),
                    description_en: Some(p.description_en.clone()),
                    description_fr: Some(p.description_fr.clone()),
                    hosting_type: Some(p.hosting_type.clone()),
                    disk_space_mb: p.disk_space_mb,
                    bandwidth_mb: p.bandwidth_mb,
                    max_email_accounts: p.max_email_accounts,
                    max_databases: p.max_databases,
                    max_subdomains: p.max_subdomains,
                    max_addon_domains: p.max_addon_domains,
                    max_parked_domains: p.max_parked_domains,
                    max_ftp_accounts: p.max_ftp_accounts,
                    max_accounts: p.max_accounts,
                    category: Some(p.category.clone()),
                    type_id: Some(p.type_id.clone()),
                    field1: p.field1.clone(),
                    field2: p.field2.clone(),
                    driver: Some(p.driver.clone()),
                    packages: packages
                        .iter()
                        .filter(|(plan, _, _)| *plan == id)
                        .map(|(_, driver, package)| (driver.clone(), package.clone()))
                        .collect(),
                    html: p.html.clone(),
                    moreinfo_url: p.moreinfo_url.clone(),
                    buyable: p.buyable == 1,
                    once_per_organization: p.once_per_organization == 1,
                    hidden: Some(p.hidden == 1),
                    is_active: Some(p.is_active == 1),
                    display_order: p.display_order,
                    pricing: prices
                        .into_iter()
                        .map(|x| PriceSpec {
                            billing_cycle: x.billing_cycle.clone(),
                            price: money(x.price_minor),
                            setup_fee: (x.setup_fee_minor != 0).then(|| money(x.setup_fee_minor)),
                            is_default: x.is_default == 1,
                        })
                        .collect(),
                }
            })
            .collect();
        let offers = data
            .offers
            .iter()
            .map(|o| OfferSpec {
                legacy_id: Some(o.legacy_id),
                plan: plan_slug
                    .get(&o.plan_id.to_string())
                    .cloned()
                    .unwrap_or_default(),
                intro_total: money(o.intro_total_minor),
                intro_months: o.intro_months,
                renewal: money(o.renewal_minor),
                renewal_months: o.renewal_months,
                allow_coupon: o.allow_coupon == 1,
                is_active: Some(o.is_active == 1),
            })
            .collect();
        let coupons = data
            .coupons
            .iter()
            .map(|c| CouponSpec {
                code: c.code.clone(),
                kind: match c.kind {
                    2 => "fixed_amount",
                    3 => "fixed_price",
                    _ => "percent",
                }
                .to_owned(),
                value: if c.kind == 1 {
                    percent(c.value)
                } else {
                    money(c.value)
                },
                recurring: c.recurring == 1,
                plan: c.plan_id.as_ref().and_then(|id| plan_slug.get(id).cloned()),
                max_uses: c.max_uses,
                expires: c.expires_at.and_then(|us| {
                    jiff::Timestamp::from_microsecond(us)
                        .ok()
                        .map(|t| t.to_string())
                }),
                is_active: Some(c.is_active == 1),
                cycles: c
                    .cycles
                    .as_ref()
                    .map(|list| list.split(',').map(str::to_owned).collect()),
            })
            .collect();
        let tlds = data
            .tlds
            .iter()
            .map(|t| TldSpec {
                tld: t.tld.clone(),
                display_name: Some(t.display_name.clone()),
                category: Some(t.category.clone()),
                register_open: t.register_open == 1,
                transfer_open: t.transfer_open == 1,
                min_years: Some(t.min_years),
                max_years: Some(t.max_years),
                is_active: Some(t.is_active == 1),
                prices: data
                    .tld_prices
                    .iter()
                    .filter(|p| p.tld == t.tld && p.currency == currency.code())
                    .map(|p| TldPriceSpec {
                        years: p.years,
                        register: money(p.register_minor),
                        renew: money(p.renew_minor),
                        transfer: money(p.transfer_minor),
                    })
                    .collect(),
            })
            .collect();
        Ok(CatalogFile {
            currency: Some(currency.code().to_owned()),
            groups,
            plans,
            offers,
            coupons,
            tlds,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentages_read_back_as_written() {
        for (bp, text) in [
            (1000, "10"),
            (1250, "12.5"),
            (1255, "12.55"),
            (5, "0.05"),
            (10_000, "100"),
        ] {
            assert_eq!(super::percent(bp), text);
            assert_eq!(crate::catalog::parse_percent_bp(text), Some(bp));
        }
    }
}
