//! Calendar arithmetic for billing periods.
//!
//! Adding months keeps the anchor's day of month and clamps to the end of a
//! shorter month (31 Jan + 1 month = 28/29 Feb, + 2 months = 31 Mar). Periods
//! are always computed from the anchor, never from a previously clamped date,
//! so a service anchored on the 31st returns to the 31st whenever it can.

use jiff::civil::Date;

use crate::cycle::BillingCycle;

/// An instant as the APIs and the command line take it (RFC 3339, such as
/// `2027-01-01T00:00:00Z`), in microseconds since the epoch; or what to tell the person who
/// typed it, in plain words rather than the date library's (which quote its internal
/// limits: found by the attacker and parity audits).
pub fn parse_instant(s: &str) -> Result<i64, &'static str> {
    let s = s.trim();
    match s.parse::<jiff::Timestamp>() {
        Ok(t) => Ok(t.as_microsecond()),
        // A civil date and time (which is what a date alone also parses as) without its
        // offset (found by the re-check: a time without one was called a date alone).
        Err(_) if s.parse::<jiff::civil::DateTime>().is_ok() => {
            if s.contains(['T', 't', ' ']) {
                Err("An instant needs its offset: add Z (UTC), or one such as +01:00.")
            } else {
                Err(
                    "A date alone is not an instant: add a time and an offset, such as \
                     2027-01-01T00:00:00Z.",
                )
            }
        }
        Err(_) => Err(
            "Use an RFC 3339 instant from the year 1 to 9999-12-30, such as \
             2027-01-01T00:00:00Z.",
        ),
    }
}

/// `anchor + months`, keeping the anchor's day and clamping to the month's
/// end; `None` past the last representable date (year 9999).
pub fn checked_add_months(anchor: Date, months: u32) -> Option<Date> {
    let index = i64::from(anchor.year()) * 12 + i64::from(anchor.month()) - 1 + i64::from(months);
    let year = i16::try_from(index.div_euclid(12)).ok()?;
    let month = i8::try_from(index.rem_euclid(12) + 1).ok()?;
    let first = Date::new(year, month, 1).ok()?;
    first
        .with()
        .day(anchor.day().min(first.days_in_month()))
        .build()
        .ok()
}

/// `anchor + months`, keeping the anchor's day and clamping to the month's
/// end. Saturates at [`Date::MAX`] (year 9999), far beyond any billing date.
pub fn add_months(anchor: Date, months: u32) -> Date {
    checked_add_months(anchor, months).unwrap_or(Date::MAX)
}

/// Start and end of period number `index` (0-based) of a service anchored on
/// `anchor`: `(anchor + index·m, anchor + (index+1)·m)` with `m` the cycle's
/// months. The end is exclusive: it is the next period's start.
///
/// `None` for non-recurring cycles or dates past year 9999.
pub fn period_bounds(anchor: Date, cycle: BillingCycle, index: u32) -> Option<(Date, Date)> {
    let months = cycle.months()?;
    let start = checked_add_months(anchor, index.checked_mul(months)?)?;
    let end = checked_add_months(anchor, index.checked_add(1)?.checked_mul(months)?)?;
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;

    #[test]
    fn clamps_to_month_end() {
        assert_eq!(add_months(date(2025, 1, 31), 1), date(2025, 2, 28));
        assert_eq!(add_months(date(2024, 1, 31), 1), date(2024, 2, 29));
        assert_eq!(add_months(date(2025, 1, 31), 2), date(2025, 3, 31));
        assert_eq!(add_months(date(2025, 1, 31), 3), date(2025, 4, 30));
        assert_eq!(add_months(date(2024, 2, 29), 12), date(2025, 2, 28));
        assert_eq!(add_months(date(2024, 2, 29), 48), date(2028, 2, 29));
        assert_eq!(add_months(date(2025, 11, 15), 2), date(2026, 1, 15));
        assert_eq!(add_months(date(2025, 5, 10), 0), date(2025, 5, 10));
    }

    #[test]
    fn instants_are_read_or_explained() {
        assert_eq!(parse_instant("1970-01-01T00:00:01Z"), Ok(1_000_000));
        assert_eq!(parse_instant("1970-01-01T01:00:00+01:00"), Ok(0));
        assert!(parse_instant("2031-01-01")
            .unwrap_err()
            .contains("date alone"));
        assert!(parse_instant("2031-01-01T00:00:00")
            .unwrap_err()
            .contains("offset"));
        assert!(parse_instant("9999-12-30T00:00:00Z").is_ok());
        for far in ["9999-12-31T23:59:59Z", "10000-01-01T00:00:00Z", "soon", ""] {
            let why = parse_instant(far).unwrap_err();
            assert!(why.contains("to 9999-12-30"), "{far}: {why}");
        }
    }

    #[test]
    fn saturates_far_future() {
        assert_eq!(checked_add_months(date(9999, 12, 1), 1), None);
        assert_eq!(add_months(date(2025, 1, 1), u32::MAX), Date::MAX);
    }

    #[test]
    fn periods_come_from_the_anchor() {
        let anchor = date(2025, 1, 31);
        let bounds: Vec<_> = (0..4)
            .map(|i| period_bounds(anchor, BillingCycle::Monthly, i).unwrap())
            .collect();
        assert_eq!(
            bounds,
            vec![
                (date(2025, 1, 31), date(2025, 2, 28)),
                (date(2025, 2, 28), date(2025, 3, 31)),
                (date(2025, 3, 31), date(2025, 4, 30)),
                (date(2025, 4, 30), date(2025, 5, 31)),
            ]
        );
        assert_eq!(
            period_bounds(anchor, BillingCycle::Annually, 1),
            Some((date(2026, 1, 31), date(2027, 1, 31)))
        );
        assert_eq!(period_bounds(anchor, BillingCycle::Free, 0), None);
        assert_eq!(period_bounds(anchor, BillingCycle::OneTime, 0), None);
        assert_eq!(period_bounds(anchor, BillingCycle::Monthly, u32::MAX), None);
    }

    fn any_date() -> impl Strategy<Value = Date> {
        (1900i16..2200, 1i8..=12, 1i8..=31).prop_map(|(y, m, d)| {
            let first = date(y, m, 1);
            first
                .with()
                .day(d.min(first.days_in_month()))
                .build()
                .unwrap()
        })
    }

    proptest! {
        #[test]
        fn keeps_day_clamped(anchor in any_date(), months in 0u32..1200) {
            let result = add_months(anchor, months);
            let total = i64::from(anchor.year()) * 12 + i64::from(anchor.month()) - 1 + i64::from(months);
            prop_assert_eq!(i64::from(result.year()), total / 12);
            prop_assert_eq!(i64::from(result.month()), total % 12 + 1);
            prop_assert_eq!(result.day(), anchor.day().min(result.days_in_month()));
        }

        #[test]
        fn months_add_up_from_anchor(anchor in any_date(), a in 0u32..600, b in 0u32..600) {
            // Month and year are additive; the day always comes from the anchor.
            let ab = add_months(anchor, a + b);
            let via = add_months(add_months(anchor, a).first_of_month(), b);
            prop_assert_eq!((ab.year(), ab.month()), (via.year(), via.month()));
            prop_assert_eq!(ab.day(), anchor.day().min(ab.days_in_month()));
        }

        #[test]
        fn strictly_after_and_monotonic(anchor in any_date(), m in 1u32..1200) {
            prop_assert!(add_months(anchor, m) > anchor);
            prop_assert!(add_months(anchor, m) > add_months(anchor, m - 1));
        }

        #[test]
        fn periods_are_contiguous(anchor in any_date(), i in 0u32..100, c in 2usize..8) {
            let cycle = BillingCycle::ALL[c];
            let (start, end) = period_bounds(anchor, cycle, i).unwrap();
            let (next_start, _) = period_bounds(anchor, cycle, i + 1).unwrap();
            prop_assert!(start < end);
            prop_assert_eq!(end, next_start);
        }
    }
}
