//! Pricing an order: what it chose, from the catalog's rows, as the pure input of
//! `lodge_core::pricing` ([`lodge_core::pricing::quote_input`], [`CouponTerms`]).

use lodge_core::pricing::{self, CouponKind, CouponTerms, DomainCharge, OfferTerms, OrderChoice};
use lodge_core::BillingCycle;
use lodge_store::catalog::{CouponRow, OfferRow};

use super::DomainPlan;
use crate::catalog::Price;

/// The catalog's coupon as the terms that decide whether it may be used.
pub fn coupon_terms(c: &CouponRow) -> CouponTerms<'_> {
    CouponTerms {
        active: c.is_active == 1,
        expires_at: c.expires_at,
        max_uses: c.max_uses,
        uses: c.uses,
        plan_id: c.plan_id.as_deref(),
        cycles: c.cycles.as_deref(),
    }
}

/// The first invoice of an order of plan `plan_name` at `price` on `cycle` (the plan's
/// monthly price `monthly` the list price's base), for `domain`, with its offer and coupon.
pub fn quote(
    plan_name: &str,
    price: &Price,
    cycle: BillingCycle,
    monthly: Option<&Price>,
    domain: &DomainPlan,
    offer: Option<&OfferRow>,
    coupon: Option<&CouponRow>,
) -> pricing::Quote {
    let charge = match domain {
        DomainPlan::Register {
            name, price_minor, ..
        } => Some(DomainCharge::Register {
            name: name.as_str(),
            price_minor: *price_minor,
        }),
        DomainPlan::Transfer {
            name, price_minor, ..
        } => Some(DomainCharge::Transfer {
            name: name.as_str(),
            price_minor: *price_minor,
        }),
        DomainPlan::Existing { .. } | DomainPlan::External { .. } => None,
    };
    let choice = OrderChoice {
        plan_name,
        domain_name: domain.name(),
        cycle_price_minor: price.price.minor(),
        setup_fee_minor: price.setup_fee.minor(),
        months: cycle.months(),
        monthly_price_minor: monthly.map(|m| m.price.minor()),
        offer: offer.map(|o| OfferTerms {
            intro_total_minor: o.intro_total_minor,
            intro_months: o.intro_months,
            renewal_minor: o.renewal_minor,
            renewal_months: o.renewal_months,
        }),
        coupon: coupon.map(|c| (CouponKind::from_code(c.kind, c.value), c.recurring == 1)),
        domain: charge,
    };
    pricing::quote(&pricing::quote_input(&choice))
}
