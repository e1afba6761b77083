//! Checking a catalog file whole, every error at once, into what to write.

use lodge_core::{BillingCycle, Currency, Money, PlanId};
use lodge_store::catalog as db;

use super::CatalogFile;
use crate::{Result, Validator};

/// A validated file, ready to write.
pub(super) struct ImportPlan {
    pub(super) groups: Vec<db::GroupInput>,
    pub(super) plans: Vec<(String, db::PlanInput, Vec<db::PriceInput>)>,
    pub(super) offers: Vec<(String, db::OfferInput)>,
    pub(super) coupons: Vec<(Option<String>, db::CouponInput)>,
    pub(super) tlds: Vec<(db::TldInput, Vec<db::TldPriceInput>)>,
}

fn slug_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Parses a percentage with up to two decimals into basis points.
/// A name shown on one line (the order form, invoices, mail subjects): no control
/// characters, bidi overrides, nor line or paragraph separators (found by the re-check:
/// plan and group names took them).
fn one_line(s: &str) -> bool {
    !s.chars().any(|c| {
        c.is_control() || crate::errors::is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')
    })
}

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

pub(super) fn validate(file: &CatalogFile, currency: Currency) -> Result<ImportPlan> {
    let mut v = Validator::new();
    // Errors name the item (`plan "x": …`): in a large catalog the value alone is hard to
    // find (found by the operator audit).
    let money = |v: &mut Validator, field: &str, tag: &str, s: &str| -> i64 {
        match Money::parse_decimal(s, currency) {
            // The same ceiling as every amount staff type elsewhere: far above any real
            // price, far below what sums of a few prices would overflow (found by the code
            // review: a 2⁶² price renewed two accounts on one invoice for nothing, its total
            // wrapped below zero).
            Ok(m) if m.minor() > lodge_core::money::MAX_AMOUNT_MINOR => {
                v.add(
                    field,
                    format!(
                        "{tag}: {s:?}: at most {}",
                        Money::new(lodge_core::money::MAX_AMOUNT_MINOR, currency)
                    ),
                );
                0
            }
            Ok(m) if !m.is_negative() => m.minor(),
            Ok(_) => {
                v.add(field, format!("{tag}: {s:?}: amounts cannot be negative"));
                0
            }
            Err(e) => {
                v.add(field, format!("{tag}: {e}"));
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
                "groups.slug",
                format!("{:?}: a slug is lowercase letters, digits, - and _", g.slug),
            );
        }
        if g.name.trim().is_empty() {
            v.add("groups.name", format!("{:?}: a name is required", g.slug));
        }
        for name in std::iter::once(&g.name)
            .chain(g.name_en.iter())
            .chain(g.name_fr.iter())
        {
            if !one_line(name) {
                v.add(
                    "groups.name",
                    format!(
                        "{:?}: a name is one line, without control characters",
                        g.slug
                    ),
                );
            }
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
    let mut slugs = std::collections::HashSet::new();
    for p in &file.plans {
        let tag = format!("plan {:?}", p.slug);
        // One plan per slug in a file: a second would silently replace the first.
        if !slugs.insert(p.slug.as_str()) {
            v.add("plans.slug", format!("{tag}: listed twice"));
        }
        if !slug_ok(&p.slug) {
            v.add(
                "plans.slug",
                format!("{tag}: a slug is lowercase letters, digits, - and _"),
            );
        }
        if p.name.trim().is_empty() {
            v.add("plans.name", format!("{tag}: a name is required"));
        } else if !one_line(&p.name) {
            v.add(
                "plans.name",
                format!("{tag}: a name is one line, without control characters"),
            );
        }
        if p.legacy_id.is_some_and(|l| l <= 0) {
            v.add(
                "plans.legacy_id",
                format!("{tag}: legacy_id must be positive"),
            );
        }
        let hosting_type = p
            .hosting_type
            .clone()
            .unwrap_or_else(|| "hostingaccount".into());
        if !["hostingaccount", "reselleraccount"].contains(&hosting_type.as_str()) {
            v.add(
                "plans.hosting_type",
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
            v.add("plans.limits", format!("{tag}: limits cannot be negative"));
        }
        if p.pricing.is_empty() {
            v.add(
                "plans.pricing",
                format!("{tag}: at least one price is required"),
            );
        }
        let mut prices = Vec::new();
        let mut seen = Vec::new();
        for pr in &p.pricing {
            let Ok(cycle) = pr.billing_cycle.parse::<BillingCycle>() else {
                v.add(
                    "plans.pricing",
                    format!("{tag}: unknown billing cycle {:?}", pr.billing_cycle),
                );
                continue;
            };
            if seen.contains(&cycle) {
                v.add("plans.pricing", format!("{tag}: {cycle} priced twice"));
            }
            seen.push(cycle);
            let price_minor = money(&mut v, "plans.pricing", &tag, &pr.price);
            if cycle == BillingCycle::Free && price_minor != 0 {
                v.add("plans.pricing", format!("{tag}: the free cycle costs 0"));
            }
            let setup_fee_minor = pr
                .setup_fee
                .as_deref()
                .map(|s| money(&mut v, "plans.pricing", &tag, s))
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
            _ => v.add(
                "plans.pricing",
                format!("{tag}: only one price can be the default"),
            ),
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
                once_per_organization: p.once_per_organization,
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
                "offers.intro_months",
                format!("{tag}: intro_months is one of 1, 3, 6, 12, 24, 36"),
            );
        }
        if BillingCycle::from_months(u32::try_from(o.renewal_months).unwrap_or(0)).is_none() {
            v.add(
                "offers.renewal_months",
                format!("{tag}: renewal_months is one of 1, 3, 6, 12, 24, 36"),
            );
        }
        out.offers.push((
            o.plan.clone(),
            db::OfferInput {
                legacy_id: o.legacy_id,
                plan_id: PlanId::new(),
                intro_total_minor: money(&mut v, "offers.intro_total", &tag, &o.intro_total),
                intro_months: o.intro_months,
                renewal_minor: money(&mut v, "offers.renewal", &tag, &o.renewal),
                renewal_months: o.renewal_months,
                allow_coupon: o.allow_coupon,
                is_active: o.is_active,
            },
        ));
    }
    // One coupon per code and one TLD per name in a file (codes and names match whatever
    // their case): a second would silently replace the first (found by the operator audit).
    let mut codes = std::collections::HashSet::new();
    for c in &file.coupons {
        let tag = format!("coupon {:?}", c.code);
        if !codes.insert(c.code.to_ascii_uppercase()) {
            v.add("coupons.code", format!("{tag}: listed twice"));
        }
        let code_ok = !c.code.is_empty()
            && c.code.len() <= 64
            && c.code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !code_ok {
            v.add(
                "coupons.code",
                format!("{tag}: a code is 1-64 letters, digits, - or _"),
            );
        }
        let kind = match c.kind.as_str() {
            "percent" | "1" => 1,
            "fixed_amount" | "2" => 2,
            "fixed_price" | "3" => 3,
            other => {
                v.add(
                    "coupons.kind",
                    format!("{tag}: unknown kind {other:?} (percent, fixed_amount, fixed_price)"),
                );
                1
            }
        };
        let value = if kind == 1 {
            parse_percent_bp(&c.value).unwrap_or_else(|| {
                v.add(
                    "coupons.value",
                    format!("{tag}: a percentage between 0 and 100, with at most two decimals"),
                );
                0
            })
        } else {
            money(&mut v, "coupons.value", &tag, &c.value)
        };
        if c.max_uses.is_some_and(|m| m < 0) {
            v.add(
                "coupons.max_uses",
                format!("{tag}: max_uses cannot be negative"),
            );
        }
        let expires_at = match c.expires.as_deref() {
            None => None,
            Some(s) => match lodge_core::dates::parse_instant(s) {
                Ok(t) => Some(t),
                Err(why) => {
                    v.add("coupons.expires", format!("{tag}: expires: {why}"));
                    None
                }
            },
        };
        // Known cycles, each once, in the catalog's order.
        let cycles = c.cycles.as_ref().map(|names| {
            let mut known = Vec::new();
            for name in names {
                match name.trim().parse::<lodge_core::BillingCycle>() {
                    Ok(cycle) => known.push(cycle),
                    Err(_) => v.add(
                        "coupons.cycles",
                        format!(
                            "{tag}: unknown cycle {name:?} (free, one_time, monthly, quarterly, semi_annually, annually, biennially, triennially)"
                        ),
                    ),
                }
            }
            if names.is_empty() {
                v.add(
                    "coupons.cycles",
                    format!("{tag}: list the cycles it applies to, or leave cycles out for every cycle"),
                );
            }
            known.sort();
            known.dedup();
            known
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(",")
        });
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
                cycles,
            },
        ));
    }
    let mut names = std::collections::HashSet::new();
    for t in &file.tlds {
        let name = t.tld.trim().trim_start_matches('.').to_lowercase();
        let tag = format!("tld {name:?}");
        if !names.insert(name.clone()) {
            v.add("tlds.tld", format!("{tag}: listed twice"));
        }
        let tld_ok = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !tld_ok {
            v.add("tlds.tld", format!("{tag}: not a valid TLD"));
        }
        let min_years = t.min_years.unwrap_or(1);
        let max_years = t.max_years.unwrap_or(10);
        if !(1..=10).contains(&min_years) || !(min_years..=10).contains(&max_years) {
            v.add(
                "tlds.min_years",
                format!("{tag}: 1 <= min_years <= max_years <= 10"),
            );
        }
        let mut prices = Vec::new();
        for p in &t.prices {
            if !(1..=10).contains(&p.years) {
                v.add("tlds.prices", format!("{tag}: years between 1 and 10"));
            }
            prices.push(db::TldPriceInput {
                years: p.years,
                currency: currency.code().to_owned(),
                register_minor: money(&mut v, "tlds.prices", &tag, &p.register),
                renew_minor: money(&mut v, "tlds.prices", &tag, &p.renew),
                transfer_minor: money(&mut v, "tlds.prices", &tag, &p.transfer),
            });
        }
        if !prices.iter().any(|p| p.years == 1) {
            v.add(
                "tlds.prices",
                format!("{tag}: a price for 1 year is required"),
            );
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
    fn names_are_one_line() {
        let file = |group: &str, plan: &str| -> crate::catalog::CatalogFile {
            toml::from_str(&format!(
                "[[groups]]\nslug = \"g\"\nname = {}\n[[plans]]\nslug = \"p\"\ngroup = \"g\"\nname = {}\npricing = [{{ billing_cycle = \"monthly\", price = \"5.00\" }}]\n",
                toml::Value::String(group.into()),
                toml::Value::String(plan.into())
            ))
            .unwrap()
        };
        assert!(validate(&file("Web", "Starter"), Currency::USD).is_ok());
        for (group, plan) in [
            ("Web\nHosting", "Starter"),
            ("Web", "Star\u{2028}ter"),
            ("Web", "Star\u{202E}ter"),
        ] {
            let e = format!("{:?}", validate(&file(group, plan), Currency::USD).err());
            assert!(e.contains("one line"), "{group:?} {plan:?}: {e}");
        }
    }

    #[test]
    fn a_plan_listed_twice_is_refused() {
        let plan = |price: &str| {
            format!(
                "[[plans]]\nslug = \"dup\"\ngroup = \"g\"\nname = \"Dup\"\npricing = [{{ billing_cycle = \"monthly\", price = \"{price}\" }}]\n"
            )
        };
        let text = format!(
            "[[groups]]\nslug = \"g\"\nname = \"G\"\n{}{}",
            plan("5.00"),
            plan("8.00")
        );
        let file: crate::catalog::CatalogFile = toml::from_str(&text).unwrap();
        let e = format!("{:?}", validate(&file, Currency::USD).err().unwrap());
        assert!(e.contains("listed twice"), "{e}");
        let once: crate::catalog::CatalogFile = toml::from_str(&format!(
            "[[groups]]\nslug = \"g\"\nname = \"G\"\n{}",
            plan("5.00")
        ))
        .unwrap();
        assert!(validate(&once, Currency::USD).is_ok());
    }

    #[test]
    fn a_coupon_or_tld_listed_twice_in_any_case_is_refused() {
        let coupon = |code: &str, value: &str| {
            format!("[[coupons]]\ncode = \"{code}\"\nkind = \"percent\"\nvalue = \"{value}\"\n")
        };
        let tld = |name: &str, price: &str| {
            format!(
                "[[tlds]]\ntld = \"{name}\"\nprices = [{{ years = 1, register = \"{price}\", renew = \"{price}\", transfer = \"{price}\" }}]\n"
            )
        };
        let errors = |text: &str| {
            let file: crate::catalog::CatalogFile = toml::from_str(text).unwrap();
            validate(&file, Currency::USD)
                .err()
                .map(|e| format!("{e:?}"))
                .unwrap_or_default()
        };
        let e = errors(&format!("{}{}", coupon("X1", "10"), coupon("x1", "30")));
        assert!(e.contains("coupon \\\"x1\\\": listed twice"), "{e}");
        let e = errors(&format!("{}{}", tld("dev", "1.00"), tld(".DEV", "9.00")));
        assert!(e.contains("tld \\\"dev\\\": listed twice"), "{e}");
        assert_eq!(
            errors(&format!(
                "{}{}{}{}",
                coupon("X1", "10"),
                coupon("X2", "30"),
                tld("dev", "1.00"),
                tld("app", "9.00")
            )),
            ""
        );
        // An amount's error names its item.
        let e = errors(&tld("dev", "-1.00"));
        assert!(
            e.contains("tld \\\"dev\\\": \\\"-1.00\\\": amounts cannot be negative"),
            "{e}"
        );
    }

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
