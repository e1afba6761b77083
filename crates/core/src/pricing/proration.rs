//! Proration of a plan change (docs/billing.md, "Proration"): an upgrade or downgrade keeps
//! the due date, and the customer pays (or is credited) the difference of the two prices for
//! the days left in the current period.
//!
//! With `d` the days left and `D` the days in the period, the charge is
//! `new × d / D − old × d / D`, computed exactly as `(new − old) × d / D` and rounded once,
//! half away from zero. A negative charge is the customer's credit.
//!
//! What holds (unit and property tested below):
//! - `|charge| ≤ |new − old|`, and `charge = new − old` exactly on the period's first day;
//! - the charge never has the opposite sign of `new − old`; it is 0 exactly when
//!   `2·|new − old|·d < D`;
//! - changing `a → b` and `b → a` on the same day cancel out exactly:
//!   `charge(a → b) = −charge(b → a)` (half away from zero rounds `x` and `−x` to opposite
//!   values), so a customer never gains or loses a cent going there and back;
//! - on the last day of a period `d = 1`.

use jiff::civil::Date;

use crate::money::div_round_half_away;

/// The figures of one prorated change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proration {
    /// Days from today (included) to the period's end (excluded): `d`, at least 1.
    pub days_left: i64,
    /// Days in the period: `D`.
    pub days_in_period: i64,
    /// What the customer pays (positive) or is credited (negative), in minor units.
    pub charge_minor: i64,
}

/// Why a change cannot be prorated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProrationError {
    /// The period ends on or before its start.
    #[error("the period is empty")]
    EmptyPeriod,
    /// Today is not within `[start, end)`.
    #[error("today is outside the current period")]
    OutsidePeriod,
    /// The charge does not fit in an `i64` of minor units.
    #[error("amount overflow")]
    Overflow,
}

/// Whole days from `a` to `b` (negative when `b` is earlier).
fn days_between(a: Date, b: Date) -> i64 {
    a.duration_until(b).as_hours().div_euclid(24)
}

/// The charge of changing from `old_minor` to `new_minor` (prices of one whole period) on
/// `today`, in the period `[start, end)`: `(new − old) × d / D` rounded once, half away from
/// zero, with `d` the days from `today` to `end` and `D` the days from `start` to `end`.
/// `today == start` gives `d = D` (the whole difference); the period's last day `d = 1`.
pub fn prorate(
    old_minor: i64,
    new_minor: i64,
    start: Date,
    end: Date,
    today: Date,
) -> Result<Proration, ProrationError> {
    if end <= start {
        return Err(ProrationError::EmptyPeriod);
    }
    if today < start || today >= end {
        return Err(ProrationError::OutsidePeriod);
    }
    let days_in_period = days_between(start, end);
    let days_left = days_between(today, end);
    let difference = i128::from(new_minor) - i128::from(old_minor);
    let charge = div_round_half_away(
        difference * i128::from(days_left),
        i128::from(days_in_period),
    );
    Ok(Proration {
        days_left,
        days_in_period,
        charge_minor: i64::try_from(charge).map_err(|_| ProrationError::Overflow)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dates::add_months;
    use jiff::civil::date;
    use jiff::ToSpan;
    use proptest::prelude::*;

    fn charge(old: i64, new: i64, start: Date, end: Date, today: Date) -> i64 {
        prorate(old, new, start, end, today).unwrap().charge_minor
    }

    #[test]
    fn a_year_from_29_february_clamped_to_the_28th_has_365_days() {
        let anchor = date(1932, 2, 29);
        let (start, end) = (add_months(anchor, 720), add_months(anchor, 732));
        assert_eq!((start, end), (date(1992, 2, 29), date(1993, 2, 28)));
        assert_eq!(
            prorate(0, 0, start, end, start).unwrap().days_in_period,
            365
        );
    }

    #[test]
    fn worked_figures() {
        // Starter (5.00) to Business (10.00), monthly, half-way through a 30-day period.
        let p = prorate(
            500,
            1000,
            date(2026, 3, 31),
            date(2026, 4, 30),
            date(2026, 4, 15),
        )
        .unwrap();
        assert_eq!(
            p,
            Proration {
                days_left: 15,
                days_in_period: 30,
                charge_minor: 250
            }
        );
        // The same downgrade is the same amount credited.
        assert_eq!(
            charge(
                1000,
                500,
                date(2026, 3, 31),
                date(2026, 4, 30),
                date(2026, 4, 15)
            ),
            -250
        );
        // 10 of 31 days left: 500 × 10 / 31 = 161.29… → 161.
        assert_eq!(
            charge(
                500,
                1000,
                date(2026, 1, 1),
                date(2026, 2, 1),
                date(2026, 1, 22)
            ),
            161
        );
        // 20 of 31 days: 322.58… → 323 (and −323 back).
        assert_eq!(
            charge(
                500,
                1000,
                date(2026, 1, 1),
                date(2026, 2, 1),
                date(2026, 1, 12)
            ),
            323
        );
        assert_eq!(
            charge(
                1000,
                500,
                date(2026, 1, 1),
                date(2026, 2, 1),
                date(2026, 1, 12)
            ),
            -323
        );
        // Annual 54.00 → 108.00 with 183 of 365 days left: 2707.39… → 2707.
        assert_eq!(
            charge(
                5400,
                10800,
                date(2027, 1, 1),
                date(2028, 1, 1),
                date(2027, 7, 2)
            ),
            2707
        );
        // A leap year: 183 of 366 days, exactly half: 2700.
        let p = prorate(
            5400,
            10800,
            date(2028, 1, 1),
            date(2029, 1, 1),
            date(2028, 7, 2),
        )
        .unwrap();
        assert_eq!(
            (p.days_left, p.days_in_period, p.charge_minor),
            (183, 366, 2700)
        );
        // February of a leap year, on its last day: 1 of 29 days, 500 / 29 = 17.24… → 17.
        let p = prorate(
            500,
            1000,
            date(2028, 2, 1),
            date(2028, 3, 1),
            date(2028, 2, 29),
        )
        .unwrap();
        assert_eq!((p.days_left, p.days_in_period, p.charge_minor), (1, 29, 17));
        // February of a common year: 1 of 28 days, 500 / 28 = 17.86… → 18.
        assert_eq!(
            charge(
                500,
                1000,
                date(2027, 2, 1),
                date(2027, 3, 1),
                date(2027, 2, 28)
            ),
            18
        );
    }

    #[test]
    fn rounds_half_away_from_zero_once() {
        // 1 × 15 / 30 = 0.5 → 1; −0.5 → −1.
        assert_eq!(
            charge(0, 1, date(2026, 4, 1), date(2026, 5, 1), date(2026, 4, 16)),
            1
        );
        assert_eq!(
            charge(1, 0, date(2026, 4, 1), date(2026, 5, 1), date(2026, 4, 16)),
            -1
        );
        // 1 × 14 / 30 = 0.47 → 0.
        assert_eq!(
            charge(0, 1, date(2026, 4, 1), date(2026, 5, 1), date(2026, 4, 17)),
            0
        );
        // Rounded once, on the difference: from 1 to 2 with 1 of 2 days left is 0.5 → 1,
        // where rounding each price's share first (1 − 0.5 → 1 − 1) would give 0.
        let (start, end) = (date(2026, 1, 1), date(2026, 1, 3));
        assert_eq!(charge(1, 2, start, end, date(2026, 1, 2)), 1);
        assert_eq!(charge(2, 1, start, end, date(2026, 1, 2)), -1);
    }

    #[test]
    fn the_whole_period_and_its_last_day() {
        let (start, end) = (date(2026, 1, 31), date(2026, 2, 28));
        assert_eq!(charge(500, 1000, start, end, start), 500);
        let p = prorate(500, 1000, start, end, date(2026, 2, 27)).unwrap();
        assert_eq!((p.days_left, p.days_in_period), (1, 28));
    }

    #[test]
    fn refuses_dates_outside_the_period() {
        let (start, end) = (date(2026, 4, 1), date(2026, 5, 1));
        assert_eq!(
            prorate(1, 2, start, end, end),
            Err(ProrationError::OutsidePeriod)
        );
        assert_eq!(
            prorate(1, 2, start, end, date(2026, 3, 31)),
            Err(ProrationError::OutsidePeriod)
        );
        assert_eq!(
            prorate(1, 2, end, start, start),
            Err(ProrationError::EmptyPeriod)
        );
        assert_eq!(
            prorate(1, 2, start, start, start),
            Err(ProrationError::EmptyPeriod)
        );
        assert_eq!(
            prorate(i64::MIN, i64::MAX, start, end, start),
            Err(ProrationError::Overflow)
        );
    }

    /// Dates from 1900 to 2200, any day (month ends and 29 February included).
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

    /// A real period of a recurring cycle (1, 3, 6, 12, 24 or 36 months, from the anchor as
    /// `add_months` makes it) and a day in it.
    fn period_and_day() -> impl Strategy<Value = (Date, Date, Date)> {
        (
            any_date(),
            prop::sample::select(vec![1u32, 3, 6, 12, 24, 36]),
            0u32..40,
            0u32..1200,
        )
            .prop_map(|(anchor, months, index, offset)| {
                let start = add_months(anchor, index * months);
                let end = add_months(anchor, (index + 1) * months);
                let days = start.duration_until(end).as_hours() / 24;
                let today = start
                    .checked_add(i64::from(offset).rem_euclid(days).days())
                    .unwrap();
                (start, end, today)
            })
    }

    fn price() -> impl Strategy<Value = i64> {
        0i64..100_000_000
    }

    proptest! {
        #[test]
        fn never_more_than_the_difference((start, end, today) in period_and_day(), old in price(), new in price()) {
            let p = prorate(old, new, start, end, today).unwrap();
            prop_assert!(p.charge_minor.abs() <= (new - old).abs());
            prop_assert!(1 <= p.days_left && p.days_left <= p.days_in_period);
        }

        #[test]
        fn sign_follows_the_difference((start, end, today) in period_and_day(), old in price(), new in price()) {
            let p = prorate(old, new, start, end, today).unwrap();
            let diff = new - old;
            // Never the opposite sign; zero exactly when |diff|·d is under half a period.
            prop_assert!(p.charge_minor.signum() == diff.signum() || p.charge_minor == 0);
            let rounds_to_zero = 2 * i128::from(diff.abs()) * i128::from(p.days_left)
                < i128::from(p.days_in_period);
            prop_assert_eq!(p.charge_minor == 0, rounds_to_zero);
        }

        #[test]
        fn the_first_day_charges_the_whole_difference(anchor in any_date(), i in 0u32..100, months in prop::sample::select(vec![1u32, 3, 6, 12, 24, 36]), old in price(), new in price()) {
            let start = add_months(anchor, i * months);
            let end = add_months(anchor, (i + 1) * months);
            prop_assert_eq!(charge(old, new, start, end, start), new - old);
        }

        #[test]
        fn there_and_back_cancel_exactly((start, end, today) in period_and_day(), a in price(), b in price()) {
            let up = charge(a, b, start, end, today);
            let down = charge(b, a, start, end, today);
            prop_assert_eq!(up, -down);
        }

        #[test]
        fn matches_the_exact_fraction_within_half_a_cent((start, end, today) in period_and_day(), old in price(), new in price()) {
            let p = prorate(old, new, start, end, today).unwrap();
            // |charge·D − diff·d| ≤ D/2: the exact value, rounded to the nearest cent.
            let exact = i128::from(new - old) * i128::from(p.days_left);
            let got = i128::from(p.charge_minor) * i128::from(p.days_in_period);
            prop_assert!(2 * (got - exact).abs() <= i128::from(p.days_in_period));
        }

        #[test]
        fn monthly_periods_have_their_months_length(anchor in any_date(), i in 0u32..240) {
            // A monthly period lasts 28 to 31 days: as long as its start's month when the
            // anchor's day fits in every month, and February's 28 or 29 days shape the
            // periods around it.
            let start = add_months(anchor, i);
            let end = add_months(anchor, i + 1);
            let p = prorate(0, 0, start, end, start).unwrap();
            prop_assert!((28..=31).contains(&p.days_in_period));
            if anchor.day() <= 28 {
                prop_assert_eq!(p.days_in_period, i64::from(start.days_in_month()));
            }
            if start.month() == 2 && anchor.day() == 1 {
                let leap = start.in_leap_year();
                prop_assert_eq!(p.days_in_period, if leap { 29 } else { 28 });
            }
        }

        #[test]
        fn yearly_periods_have_365_or_366_days(anchor in any_date(), i in 0u32..200) {
            let start = add_months(anchor, 12 * i);
            let end = add_months(anchor, 12 * (i + 1));
            let p = prorate(0, 0, start, end, start).unwrap();
            // The days counted one by one; 366 when the period holds a 29 February, and
            // also for a 29 February anchor clamped to the 28th at its start
            // (2031-02-28 to 2032-02-29).
            let mut days = 0;
            let mut d = start;
            while d < end {
                days += 1;
                d = d.tomorrow().unwrap();
            }
            prop_assert_eq!(p.days_in_period, days);
            prop_assert!(days == 365 || days == 366, "{start} to {end}: {days}");
            let feb29 = (start.year()..=end.year()).any(|y| {
                date(y, 1, 1).in_leap_year() && {
                    let d = date(y, 2, 29);
                    start <= d && d < end
                }
            });
            // A year holding a 29 February has 366 days, unless its end is clamped to the
            // 28th (1992-02-29 to 1993-02-28: 365 days; found by this test, seed 1932-02-29).
            if feb29 && end.day() == start.day() {
                prop_assert_eq!(days, 366);
            }
        }

        #[test]
        fn the_last_day_charges_one_day((start, end, _) in period_and_day(), old in price(), new in price()) {
            let last = end.yesterday().unwrap();
            let p = prorate(old, new, start, end, last).unwrap();
            prop_assert_eq!(p.days_left, 1);
            let expected = crate::money::div_round_half_away(i128::from(new - old), i128::from(p.days_in_period));
            prop_assert_eq!(i128::from(p.charge_minor), expected);
            // And the day after is the next period's first day: refused in this one.
            prop_assert_eq!(prorate(old, new, start, end, end), Err(ProrationError::OutsidePeriod));
        }
    }
}
