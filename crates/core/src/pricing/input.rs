//! Assembling a [`QuoteInput`] from what an order chose (plan, cycle, offer, coupon,
//! domain): pure, so both dialects' orders price the same way and it is tested without a
//! catalog.

use super::{CouponKind, LineKind, Offer, QuoteInput};

/// The catalog's terms of an introductory offer (months as stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferTerms {
    pub intro_total_minor: i64,
    pub intro_months: i64,
    pub renewal_minor: i64,
    pub renewal_months: i64,
}

impl OfferTerms {
    /// The offer as [`super::quote`] takes it (negative months count as none).
    pub fn offer(&self) -> Offer {
        Offer {
            intro_total_minor: self.intro_total_minor,
            intro_months: months(self.intro_months),
            renewal_minor: self.renewal_minor,
            renewal_months: months(self.renewal_months),
        }
    }
}

/// Stored months as a count (negative or out of range: 0).
pub fn months(m: i64) -> u32 {
    u32::try_from(m).unwrap_or(0)
}

/// The domain an order registers or transfers in, priced for one year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainCharge<'a> {
    Register { name: &'a str, price_minor: i64 },
    Transfer { name: &'a str, price_minor: i64 },
}

impl DomainCharge<'_> {
    /// The domain's invoice line: its kind, description and amount.
    pub fn line(&self) -> (LineKind, String, i64) {
        match *self {
            DomainCharge::Register { name, price_minor } => (
                LineKind::DomainRegistration,
                format!("Domain registration: {name} (1 year)"),
                price_minor,
            ),
            DomainCharge::Transfer { name, price_minor } => (
                LineKind::DomainTransfer,
                format!("Domain transfer: {name} (1 year)"),
                price_minor,
            ),
        }
    }
}

/// What an order chose, priced from the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderChoice<'a> {
    pub plan_name: &'a str,
    /// The name the account serves.
    pub domain_name: &'a str,
    /// The chosen cycle's price and setup fee.
    pub cycle_price_minor: i64,
    pub setup_fee_minor: i64,
    /// The chosen cycle's months (`None`: free or one-time).
    pub months: Option<u32>,
    /// The plan's monthly price, if it sells one.
    pub monthly_price_minor: Option<i64>,
    pub offer: Option<OfferTerms>,
    /// The coupon's kind and whether it recurs.
    pub coupon: Option<(CouponKind, bool)>,
    pub domain: Option<DomainCharge<'a>>,
}

/// The input of [`super::quote`] for an order: the plan line is described by the plan and
/// the domain it serves.
pub fn quote_input(c: &OrderChoice<'_>) -> QuoteInput {
    QuoteInput {
        plan_name: format!("{} ({})", c.plan_name, c.domain_name),
        cycle_price_minor: Some(c.cycle_price_minor),
        months: c.months,
        monthly_price_minor: c.monthly_price_minor,
        setup_fee_minor: c.setup_fee_minor,
        offer: c.offer.as_ref().map(OfferTerms::offer),
        coupon: c.coupon,
        domain: c.domain.as_ref().map(DomainCharge::line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::quote;
    use proptest::prelude::*;

    fn choice() -> OrderChoice<'static> {
        OrderChoice {
            plan_name: "Basic",
            domain_name: "example.com",
            cycle_price_minor: 1200,
            setup_fee_minor: 0,
            months: Some(1),
            monthly_price_minor: Some(1200),
            offer: None,
            coupon: None,
            domain: None,
        }
    }

    #[test]
    fn the_plan_line_names_plan_and_domain() {
        let q = quote(&quote_input(&choice()));
        assert_eq!(q.lines.len(), 1);
        assert_eq!(
            q.lines.first().map(|l| l.description.as_str()),
            Some("Basic (example.com)")
        );
        assert_eq!(q.total_minor, 1200);
    }

    #[test]
    fn a_registration_adds_its_line() {
        let c = OrderChoice {
            domain: Some(DomainCharge::Register {
                name: "example.com",
                price_minor: 999,
            }),
            ..choice()
        };
        let q = quote(&quote_input(&c));
        let last = q
            .lines
            .last()
            .map(|l| (l.kind, l.description.clone(), l.amount_minor));
        assert_eq!(
            last,
            Some((
                LineKind::DomainRegistration,
                "Domain registration: example.com (1 year)".to_owned(),
                999
            ))
        );
        assert_eq!(q.total_minor, 1200 + 999);
    }

    #[test]
    fn an_offer_replaces_the_cycle() {
        let c = OrderChoice {
            offer: Some(OfferTerms {
                intro_total_minor: 100,
                intro_months: 3,
                renewal_minor: 1500,
                renewal_months: 1,
            }),
            ..choice()
        };
        let q = quote(&quote_input(&c));
        assert_eq!(q.total_minor, 100);
        assert_eq!(q.first_period_months, Some(3));
        assert_eq!(q.renewal_minor, Some(1500));
    }

    #[test]
    fn negative_months_count_as_none() {
        assert_eq!(months(-3), 0);
        assert_eq!(months(12), 12);
    }

    proptest! {
        /// The total is the sum of the lines and never negative, whatever the choice.
        #[test]
        fn totals_are_the_lines(price in -10_000i64..100_000, setup in 0i64..10_000,
                                 domain in proptest::option::of(0i64..5_000),
                                 pct in proptest::option::of(0i64..=10_000)) {
            let c = OrderChoice {
                cycle_price_minor: price,
                setup_fee_minor: setup,
                coupon: pct.map(|bp| (CouponKind::Percent { basis_points: bp }, false)),
                domain: domain.map(|p| DomainCharge::Transfer { name: "a.com", price_minor: p }),
                ..choice()
            };
            let q = quote(&quote_input(&c));
            prop_assert_eq!(q.total_minor, q.lines.iter().map(|l| l.amount_minor).sum::<i64>());
            prop_assert!(q.total_minor >= 0);
        }
    }
}
