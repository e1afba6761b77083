//! Pure price computations shared by both API dialects: the displayed
//! cycle discount, coupons and order quotes.
//!
//! All amounts are `i64` minor units of one currency (the caller's).

use serde::{Deserialize, Serialize};

use crate::money::{div_round_half_away, percent_of};

pub mod coupon;
pub mod input;
pub mod proration;

pub use coupon::CouponTerms;
pub use input::{quote_input, DomainCharge, OfferTerms, OrderChoice};
pub use proration::{prorate, Proration, ProrationError};

/// Whole-percent saving of paying `cycle_price_minor` for `months` months
/// instead of `monthly_minor` every month, rounded half away from zero.
///
/// 0 when the monthly price is not positive, `months` is 0 or the cycle price
/// is not lower; never negative, at most 100. Monthly 1000 and annual 10800
/// over 12 months give 10.
pub fn discount_percent(monthly_minor: i64, cycle_price_minor: i64, months: u32) -> i64 {
    if monthly_minor <= 0 || months == 0 {
        return 0;
    }
    let full = i128::from(monthly_minor) * i128::from(months);
    let price = i128::from(cycle_price_minor.max(0));
    if price >= full {
        return 0;
    }
    // 0 < saving <= full, so the result is within 0..=100.
    div_round_half_away((full - price) * 100, full) as i64
}

/// What a coupon does to the amount it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CouponKind {
    /// Takes a percentage off; 100 basis points are 1 %.
    Percent {
        /// The percentage in basis points (1000 = 10 %).
        basis_points: i64,
    },
    /// Takes a fixed amount off.
    FixedAmount {
        /// The amount taken off, in minor units.
        minor: i64,
    },
    /// Sets the price to a fixed amount (when that is lower).
    FixedPrice {
        /// The price charged instead, in minor units.
        minor: i64,
    },
}

/// The discount `kind` gives on `amount_minor`, always within
/// `0..=amount_minor` (0 for a non-positive amount), so it never makes the
/// amount negative. Percentages are rounded once, half away from zero.
pub fn apply_coupon(kind: CouponKind, amount_minor: i64) -> i64 {
    if amount_minor <= 0 {
        return 0;
    }
    let discount = match kind {
        CouponKind::Percent { basis_points } => percent_of(amount_minor, basis_points),
        CouponKind::FixedAmount { minor } => minor,
        CouponKind::FixedPrice { minor } => amount_minor.saturating_sub(minor),
    };
    discount.clamp(0, amount_minor)
}

/// An introductory price: `intro_total_minor` for the first `intro_months`,
/// then `renewal_minor` every `renewal_months`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Offer {
    /// Price of the whole introductory period.
    pub intro_total_minor: i64,
    /// Length of the introductory period.
    pub intro_months: u32,
    /// Price of each renewal.
    pub renewal_minor: i64,
    /// Length of each renewal period (0: no renewal).
    pub renewal_months: u32,
}

/// What a quote or invoice line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// The plan itself.
    Plan,
    /// A one-off setup fee.
    SetupFee,
    /// Registering a domain.
    DomainRegistration,
    /// Transferring a domain in.
    DomainTransfer,
    /// A (negative) discount line.
    Discount,
}

impl LineKind {
    /// The wire name, e.g. `"setup_fee"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            LineKind::Plan => "plan",
            LineKind::SetupFee => "setup_fee",
            LineKind::DomainRegistration => "domain_registration",
            LineKind::DomainTransfer => "domain_transfer",
            LineKind::Discount => "discount",
        }
    }
}

/// One line of a quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteLine {
    /// What the line is for.
    pub kind: LineKind,
    /// Human-readable description.
    pub description: String,
    /// Amount in minor units (negative for discounts).
    pub amount_minor: i64,
}

/// Everything [`quote`] needs; the caller resolves plan, offer, coupon and
/// domain prices from the catalog first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuoteInput {
    /// Plan name, used as the plan line's description.
    pub plan_name: String,
    /// Price of the chosen cycle (or the one-time price); `None` is free.
    pub cycle_price_minor: Option<i64>,
    /// Months of the chosen cycle; `None` for free and one-time cycles,
    /// which never renew.
    pub months: Option<u32>,
    /// The plan's monthly price, if it has one: the base of [`Quote::list_total_minor`].
    pub monthly_price_minor: Option<i64>,
    /// Setup fee, 0 for none.
    pub setup_fee_minor: i64,
    /// An introductory offer replacing the cycle price.
    pub offer: Option<Offer>,
    /// A coupon and whether it also applies to renewals.
    pub coupon: Option<(CouponKind, bool)>,
    /// A domain line: its kind (registration or transfer), description and price.
    pub domain: Option<(LineKind, String, i64)>,
}

/// The priced result of [`quote`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// Plan, discount, setup fee and domain lines, in that order.
    pub lines: Vec<QuoteLine>,
    /// Sum of the lines; never negative.
    pub total_minor: i64,
    /// Months covered by the first plan period (`None`: no period).
    pub first_period_months: Option<u32>,
    /// Price of each renewal after any recurring coupon (`None`: no renewal).
    pub renewal_minor: Option<i64>,
    /// Months of each renewal period (`None`: no renewal).
    pub renewal_months: Option<u32>,
    /// The same first invoice at list price: the monthly price times the first period's
    /// months (or the cycle price without a monthly price), plus setup fee and domain; no
    /// offer, no coupon (InterServer's `originalCost`).
    pub list_total_minor: i64,
}

/// Prices an order.
///
/// - With an offer the plan line is `intro_total_minor` for `intro_months`,
///   then renewals are `renewal_minor` every `renewal_months`. Without one the
///   plan line is the cycle price for the cycle's months, renewing at the same
///   price every same months. Free and one-time cycles do not renew.
/// - A coupon discounts the plan line only, shown as a separate negative
///   `Discount` line; a recurring coupon also reduces the renewal amount
///   (computed on that amount), a one-time coupon does not.
/// - Negative input prices are treated as 0, so every line but the discount
///   is non-negative and the total (the sum of the lines) is never negative.
pub fn quote(input: &QuoteInput) -> Quote {
    let (plan_minor, first_period_months, renewal) = match input.offer {
        Some(offer) => (
            offer.intro_total_minor,
            Some(offer.intro_months),
            (offer.renewal_months > 0).then_some((offer.renewal_minor, offer.renewal_months)),
        ),
        None => {
            let price = input.cycle_price_minor.unwrap_or(0);
            (price, input.months, input.months.map(|m| (price, m)))
        }
    };
    let plan_minor = plan_minor.max(0);

    let mut lines = vec![QuoteLine {
        kind: LineKind::Plan,
        description: input.plan_name.clone(),
        amount_minor: plan_minor,
    }];

    let mut renewal_minor = renewal.map(|(amount, _)| amount.max(0));
    if let Some((kind, recurring)) = input.coupon {
        let discount = apply_coupon(kind, plan_minor);
        if discount > 0 {
            lines.push(QuoteLine {
                kind: LineKind::Discount,
                description: format!("Discount on {}", input.plan_name),
                amount_minor: -discount,
            });
        }
        if recurring {
            renewal_minor = renewal_minor.map(|amount| amount - apply_coupon(kind, amount));
        }
    }

    if input.setup_fee_minor > 0 {
        lines.push(QuoteLine {
            kind: LineKind::SetupFee,
            description: format!("Setup fee for {}", input.plan_name),
            amount_minor: input.setup_fee_minor,
        });
    }

    if let Some((kind, description, amount)) = &input.domain {
        lines.push(QuoteLine {
            kind: *kind,
            description: description.clone(),
            amount_minor: (*amount).max(0),
        });
    }

    let list_plan = match (input.monthly_price_minor, first_period_months) {
        (Some(monthly), Some(months)) => monthly.max(0).saturating_mul(i64::from(months)),
        _ => input.cycle_price_minor.unwrap_or(0).max(0),
    };
    let list_total_minor = list_plan
        .saturating_add(input.setup_fee_minor.max(0))
        .saturating_add(input.domain.as_ref().map_or(0, |d| d.2.max(0)));
    let sum: i128 = lines.iter().map(|l| i128::from(l.amount_minor)).sum();
    Quote {
        list_total_minor,
        lines,
        total_minor: i64::try_from(sum.max(0)).unwrap_or(i64::MAX),
        first_period_months,
        renewal_minor,
        renewal_months: renewal.map(|(_, months)| months),
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    reason = "tests index lines they just asserted exist"
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn discount_percent_examples() {
        assert_eq!(discount_percent(1000, 10800, 12), 10);
        assert_eq!(discount_percent(1000, 12000, 12), 0);
        assert_eq!(discount_percent(1000, 13000, 12), 0);
        assert_eq!(discount_percent(0, 10800, 12), 0);
        assert_eq!(discount_percent(1000, 10800, 0), 0);
        assert_eq!(discount_percent(1000, 0, 12), 100);
        assert_eq!(discount_percent(1000, 2850, 3), 5); // exactly 5 %
        assert_eq!(discount_percent(999, 2700, 3), 10); // 9.909 % -> 10
        assert_eq!(discount_percent(1000, 11940, 12), 1); // 0.5 % -> 1
        assert_eq!(discount_percent(1000, 11941, 12), 0); // 0.49 % -> 0
        assert_eq!(discount_percent(i64::MAX, 0, u32::MAX), 100);
    }

    #[test]
    fn coupon_examples() {
        let pct = |bp| CouponKind::Percent { basis_points: bp };
        assert_eq!(apply_coupon(pct(1000), 1000), 100);
        assert_eq!(apply_coupon(pct(1000), 995), 100); // 99.5 -> 100
        assert_eq!(apply_coupon(pct(1000), 994), 99);
        assert_eq!(apply_coupon(pct(15000), 1000), 1000);
        assert_eq!(apply_coupon(pct(-1000), 1000), 0);
        assert_eq!(
            apply_coupon(CouponKind::FixedAmount { minor: 300 }, 1000),
            300
        );
        assert_eq!(
            apply_coupon(CouponKind::FixedAmount { minor: 3000 }, 1000),
            1000
        );
        assert_eq!(apply_coupon(CouponKind::FixedAmount { minor: -5 }, 1000), 0);
        assert_eq!(
            apply_coupon(CouponKind::FixedPrice { minor: 100 }, 1000),
            900
        );
        assert_eq!(
            apply_coupon(CouponKind::FixedPrice { minor: 2000 }, 1000),
            0
        );
        assert_eq!(
            apply_coupon(CouponKind::FixedPrice { minor: i64::MIN }, 1000),
            1000
        );
        assert_eq!(apply_coupon(pct(5000), 0), 0);
        assert_eq!(apply_coupon(CouponKind::FixedAmount { minor: 5 }, -10), 0);
    }

    #[test]
    fn serde_names() {
        assert_eq!(
            serde_json::to_string(&LineKind::DomainRegistration).unwrap(),
            "\"domain_registration\""
        );
        assert_eq!(LineKind::SetupFee.as_str(), "setup_fee");
        assert_eq!(
            serde_json::to_string(&CouponKind::Percent { basis_points: 1000 }).unwrap(),
            r#"{"type":"percent","basis_points":1000}"#
        );
    }

    fn annual() -> QuoteInput {
        QuoteInput {
            plan_name: "Starter".into(),
            cycle_price_minor: Some(10800),
            months: Some(12),
            ..QuoteInput::default()
        }
    }

    #[test]
    fn list_total_is_before_offer_and_coupon() {
        let q = quote(&QuoteInput {
            plan_name: "Starter".into(),
            cycle_price_minor: Some(5400),
            months: Some(12),
            monthly_price_minor: Some(500),
            setup_fee_minor: 999,
            offer: Some(Offer {
                intro_total_minor: 3600,
                intro_months: 12,
                renewal_minor: 5400,
                renewal_months: 12,
            }),
            coupon: Some((CouponKind::Percent { basis_points: 1000 }, false)),
            domain: Some((LineKind::DomainRegistration, "x.com".into(), 1200)),
        });
        assert_eq!(q.total_minor, 3240 + 999 + 1200);
        assert_eq!(
            q.list_total_minor,
            6000 + 999 + 1200,
            "12 × 5.00, setup, domain"
        );
        let once = quote(&QuoteInput {
            cycle_price_minor: Some(9900),
            monthly_price_minor: Some(300),
            ..QuoteInput::default()
        });
        assert_eq!(once.list_total_minor, 9900, "no period: the cycle price");
    }

    #[test]
    fn plain_quote() {
        let q = quote(&annual());
        assert_eq!(q.lines.len(), 1);
        assert_eq!(q.lines[0].kind, LineKind::Plan);
        assert_eq!(q.lines[0].description, "Starter");
        assert_eq!(q.total_minor, 10800);
        assert_eq!(q.first_period_months, Some(12));
        assert_eq!(q.renewal_minor, Some(10800));
        assert_eq!(q.renewal_months, Some(12));
    }

    #[test]
    fn full_quote_with_offer_coupon_setup_and_domain() {
        let input = QuoteInput {
            setup_fee_minor: 500,
            offer: Some(Offer {
                intro_total_minor: 3600,
                intro_months: 12,
                renewal_minor: 1200,
                renewal_months: 1,
            }),
            coupon: Some((CouponKind::Percent { basis_points: 2500 }, true)),
            domain: Some((LineKind::DomainRegistration, "example.com".into(), 1299)),
            ..annual()
        };
        let q = quote(&input);
        let kinds: Vec<_> = q.lines.iter().map(|l| (l.kind, l.amount_minor)).collect();
        assert_eq!(
            kinds,
            [
                (LineKind::Plan, 3600),
                (LineKind::Discount, -900),
                (LineKind::SetupFee, 500),
                (LineKind::DomainRegistration, 1299),
            ]
        );
        assert_eq!(q.total_minor, 3600 - 900 + 500 + 1299);
        assert_eq!(q.first_period_months, Some(12));
        assert_eq!(q.renewal_minor, Some(900));
        assert_eq!(q.renewal_months, Some(1));

        let one_time = QuoteInput {
            coupon: Some((CouponKind::Percent { basis_points: 2500 }, false)),
            ..input
        };
        assert_eq!(quote(&one_time).renewal_minor, Some(1200));
    }

    #[test]
    fn fixed_coupon_never_goes_negative() {
        let q = quote(&QuoteInput {
            coupon: Some((CouponKind::FixedAmount { minor: 50_000 }, true)),
            setup_fee_minor: 1000,
            ..annual()
        });
        assert_eq!(q.lines[1].amount_minor, -10800);
        assert_eq!(q.total_minor, 1000); // the setup fee is not discounted
        assert_eq!(q.renewal_minor, Some(0));
    }

    #[test]
    fn free_and_one_time_do_not_renew() {
        let free = quote(&QuoteInput {
            plan_name: "Free".into(),
            coupon: Some((CouponKind::Percent { basis_points: 5000 }, true)),
            ..QuoteInput::default()
        });
        assert_eq!(free.total_minor, 0);
        assert_eq!(free.lines.len(), 1);
        assert_eq!(
            (
                free.first_period_months,
                free.renewal_minor,
                free.renewal_months
            ),
            (None, None, None)
        );
        let once = quote(&QuoteInput {
            plan_name: "Migration".into(),
            cycle_price_minor: Some(4900),
            ..QuoteInput::default()
        });
        assert_eq!(once.total_minor, 4900);
        assert_eq!((once.renewal_minor, once.renewal_months), (None, None));
    }

    fn any_coupon() -> impl Strategy<Value = CouponKind> {
        prop_oneof![
            (-1000i64..=12_000).prop_map(|bp| CouponKind::Percent { basis_points: bp }),
            (-1000i64..1_000_000).prop_map(|m| CouponKind::FixedAmount { minor: m }),
            (-1000i64..1_000_000).prop_map(|m| CouponKind::FixedPrice { minor: m }),
        ]
    }

    fn any_offer() -> impl Strategy<Value = Offer> {
        (-100i64..1_000_000, 0u32..37, -100i64..1_000_000, 0u32..37).prop_map(
            |(intro_total_minor, intro_months, renewal_minor, renewal_months)| Offer {
                intro_total_minor,
                intro_months,
                renewal_minor,
                renewal_months,
            },
        )
    }

    fn any_input() -> impl Strategy<Value = QuoteInput> {
        (
            proptest::option::of(-100i64..1_000_000),
            proptest::option::of(prop_oneof![Just(1u32), Just(3), Just(12), Just(36)]),
            -100i64..100_000,
            proptest::option::of(any_offer()),
            proptest::option::of((any_coupon(), any::<bool>())),
            proptest::option::of(-100i64..100_000),
        )
            .prop_map(|(price, months, setup, offer, coupon, domain)| QuoteInput {
                plan_name: "Plan".into(),
                cycle_price_minor: price,
                months,
                monthly_price_minor: None,
                setup_fee_minor: setup,
                offer,
                coupon,
                domain: domain.map(|d| (LineKind::DomainTransfer, "example.com".into(), d)),
            })
    }

    proptest! {
        #[test]
        fn quote_invariants(input in any_input()) {
            let q = quote(&input);
            let sum: i64 = q.lines.iter().map(|l| l.amount_minor).sum();
            prop_assert_eq!(q.total_minor, sum);
            prop_assert!(q.total_minor >= 0);
            let plan = q.lines.iter().find(|l| l.kind == LineKind::Plan).unwrap().amount_minor;
            let discount: i64 = q
                .lines
                .iter()
                .filter(|l| l.kind == LineKind::Discount)
                .map(|l| -l.amount_minor)
                .sum();
            prop_assert!((0..=plan).contains(&discount));
            prop_assert!(q.lines.iter().all(|l| l.kind == LineKind::Discount || l.amount_minor >= 0));
            prop_assert_eq!(q.renewal_minor.is_some(), q.renewal_months.is_some());
            if let Some(r) = q.renewal_minor {
                prop_assert!(r >= 0);
            }
        }

        #[test]
        fn recurring_percent_coupon_lowers_renewal(input in any_input(), bp in 0i64..=10_000) {
            let without = quote(&QuoteInput { coupon: None, ..input.clone() });
            let coupon = CouponKind::Percent { basis_points: bp };
            let with = quote(&QuoteInput { coupon: Some((coupon, true)), ..input.clone() });
            let one_time = quote(&QuoteInput { coupon: Some((coupon, false)), ..input });
            prop_assert_eq!(with.renewal_minor.is_some(), without.renewal_minor.is_some());
            if let (Some(w), Some(wo)) = (with.renewal_minor, without.renewal_minor) {
                prop_assert!(w <= wo);
            }
            prop_assert_eq!(one_time.renewal_minor, without.renewal_minor);
            prop_assert!(with.total_minor <= without.total_minor);
        }

        #[test]
        fn coupon_discount_is_bounded(kind in any_coupon(), amount in -1000i64..10_000_000) {
            let d = apply_coupon(kind, amount);
            prop_assert!(d >= 0);
            prop_assert!(d <= amount.max(0));
        }

        #[test]
        fn discount_percent_is_bounded(monthly in -100i64..1_000_000, price in -100i64..50_000_000, months in 0u32..40) {
            let p = discount_percent(monthly, price, months);
            prop_assert!((0..=100).contains(&p));
            if monthly > 0 && months > 0 && price >= monthly * i64::from(months) {
                prop_assert_eq!(p, 0);
            }
        }
    }
}
