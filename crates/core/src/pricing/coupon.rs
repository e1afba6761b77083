//! Whether a coupon may be used on an order: pure, so the same rule holds when an order is
//! validated and can be tested without a catalog.

use super::CouponKind;

/// What decides whether a coupon may be used, as the catalog holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CouponTerms<'a> {
    /// The coupon is switched on.
    pub active: bool,
    /// When it stops being valid (unix microseconds), if ever.
    pub expires_at: Option<i64>,
    /// How many times it may be used, if limited.
    pub max_uses: Option<i64>,
    /// How many times it was used.
    pub uses: i64,
    /// The only plan it applies to, if restricted (the plan's id).
    pub plan_id: Option<&'a str>,
    /// The billing cycles it applies to (comma-separated wire names, `monthly,annually`),
    /// if restricted.
    pub cycles: Option<&'a str>,
}

impl CouponTerms<'_> {
    /// Whether the coupon may be used `now` (unix microseconds) on an order of `plan`
    /// (`None`: the plan is not known, which only an unrestricted coupon accepts): active,
    /// not yet expired, not used up, and for this plan if restricted to one.
    pub fn usable(&self, now: i64, plan: Option<&str>) -> bool {
        self.active
            && self.expires_at.is_none_or(|e| e > now)
            && self.max_uses.is_none_or(|m| self.uses < m)
            && self.plan_id.is_none_or(|only| plan == Some(only))
    }

    /// Whether the coupon applies to an order on `cycle`: any cycle, unless restricted.
    pub fn fits_cycle(&self, cycle: crate::BillingCycle) -> bool {
        self.cycles
            .is_none_or(|list| list.split(',').any(|c| c.trim() == cycle.as_str()))
    }
}

impl CouponKind {
    /// The kind a catalog code stands for: 1 a percentage (`value` in basis points), 2 a
    /// fixed amount off, anything else a fixed price (`value` in minor units).
    pub fn from_code(code: i64, value: i64) -> CouponKind {
        match code {
            1 => CouponKind::Percent {
                basis_points: value,
            },
            2 => CouponKind::FixedAmount { minor: value },
            _ => CouponKind::FixedPrice { minor: value },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_800_000_000_000_000;

    fn open() -> CouponTerms<'static> {
        CouponTerms {
            active: true,
            expires_at: None,
            max_uses: None,
            uses: 0,
            plan_id: None,
            cycles: None,
        }
    }

    #[test]
    fn a_coupon_fits_its_cycles_only() {
        use crate::BillingCycle;
        assert!(BillingCycle::ALL.iter().all(|c| open().fits_cycle(*c)));
        let monthly = CouponTerms {
            cycles: Some("monthly"),
            ..open()
        };
        assert!(monthly.fits_cycle(BillingCycle::Monthly));
        assert!(!monthly.fits_cycle(BillingCycle::Triennially));
        assert!(!monthly.fits_cycle(BillingCycle::OneTime));
        let two = CouponTerms {
            cycles: Some("quarterly,annually"),
            ..open()
        };
        assert!(two.fits_cycle(BillingCycle::Quarterly) && two.fits_cycle(BillingCycle::Annually));
        assert!(!two.fits_cycle(BillingCycle::SemiAnnually));
        // A name is whole: `annually` is not `semi_annually`.
        let semi = CouponTerms {
            cycles: Some("semi_annually"),
            ..open()
        };
        assert!(!semi.fits_cycle(BillingCycle::Annually));
    }

    #[test]
    fn an_open_coupon_is_usable_on_any_plan() {
        assert!(open().usable(NOW, Some("p")));
        assert!(open().usable(NOW, None));
    }

    #[test]
    fn an_inactive_coupon_is_not() {
        let c = CouponTerms {
            active: false,
            ..open()
        };
        assert!(!c.usable(NOW, Some("p")));
    }

    #[test]
    fn a_coupon_expires_at_its_moment() {
        let c = CouponTerms {
            expires_at: Some(NOW),
            ..open()
        };
        assert!(!c.usable(NOW, None));
        assert!(c.usable(NOW - 1, None));
    }

    #[test]
    fn a_coupon_restricted_to_a_plan() {
        let c = CouponTerms {
            plan_id: Some("p"),
            ..open()
        };
        assert!(c.usable(NOW, Some("p")));
        assert!(!c.usable(NOW, Some("q")));
        assert!(!c.usable(NOW, None));
    }

    #[test]
    fn kinds_by_code() {
        assert_eq!(
            CouponKind::from_code(1, 1000),
            CouponKind::Percent { basis_points: 1000 }
        );
        assert_eq!(
            CouponKind::from_code(2, 500),
            CouponKind::FixedAmount { minor: 500 }
        );
        assert_eq!(
            CouponKind::from_code(3, 99),
            CouponKind::FixedPrice { minor: 99 }
        );
    }

    proptest! {
        /// A limited coupon is usable exactly while it was used fewer times than allowed.
        #[test]
        fn usable_until_used_up(max in 0i64..100, uses in 0i64..200) {
            let c = CouponTerms { max_uses: Some(max), uses, ..open() };
            prop_assert_eq!(c.usable(NOW, None), uses < max);
        }

        /// Usable is the conjunction of its conditions: turning any one off refuses it.
        #[test]
        fn each_condition_can_refuse(active: bool, expires in proptest::option::of(-5i64..5), used_up: bool, other_plan: bool) {
            let c = CouponTerms {
                active,
                expires_at: expires.map(|d| NOW + d),
                max_uses: Some(3),
                uses: if used_up { 3 } else { 2 },
                plan_id: Some("p"),
                cycles: Some("monthly"),
            };
            let plan = if other_plan { "q" } else { "p" };
            let expected = active && expires.is_none_or(|d| d > 0) && !used_up && !other_plan;
            prop_assert_eq!(c.usable(NOW, Some(plan)), expected);
        }
    }
}
