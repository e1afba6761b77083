//! The recurring side of billing, as pure functions: when a service's next period is billed,
//! what that period is, and what an unpaid renewal sets in motion day by day
//! (docs/billing.md, "Lifecycles").
//!
//! A service's periods are counted from its anchor (the day its first period started), so a
//! service anchored on the 31st returns to the 31st whenever the month has one.

use jiff::civil::Date;

use crate::dates::checked_add_months;

/// How the scheduler treats renewals, in days. Validated once ([`Policy::new`]): a policy
/// that would suspend or terminate on the due date itself, or terminate before it
/// suspends, is refused rather than applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A renewal invoice is issued this many days before the period ends (0: on the day).
    pub lead_days: i64,
    /// An unpaid renewal suspends its services this many days after its due date.
    pub suspend_after_days: i64,
    /// ... and terminates them (cancelling the invoice) this many days after it.
    pub terminate_after_days: i64,
}

/// The longest any of a [`Policy`]'s delays may be: ten years.
pub const MAX_POLICY_DAYS: i64 = 3_650;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lead_days: 14,
            suspend_after_days: 7,
            terminate_after_days: 30,
        }
    }
}

impl Policy {
    /// A checked policy, or what is wrong with it (worded for an operator: the settings'
    /// names are the command line's).
    pub fn new(
        lead_days: i64,
        suspend_after_days: i64,
        terminate_after_days: i64,
    ) -> Result<Policy, String> {
        let range = |name: &str, v: i64, min: i64| {
            if (min..=MAX_POLICY_DAYS).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "--{name} must be between {min} and {MAX_POLICY_DAYS} days (got {v})"
                ))
            }
        };
        range("renewal-lead-days", lead_days, 0)?;
        range("suspension-grace-days", suspend_after_days, 1)?;
        range("termination-grace-days", terminate_after_days, 1)?;
        if terminate_after_days <= suspend_after_days {
            return Err(format!(
                "--termination-grace-days ({terminate_after_days}) must be longer than \
                 --suspension-grace-days ({suspend_after_days}): an account is suspended \
                 before it is terminated"
            ));
        }
        Ok(Policy {
            lead_days,
            suspend_after_days,
            terminate_after_days,
        })
    }

    /// The last period end billed on `today`: periods ending on or before it are due.
    pub fn billing_horizon(&self, today: Date) -> Date {
        today
            .checked_add(jiff::Span::new().days(self.lead_days))
            .unwrap_or(Date::MAX)
    }

    /// The due date of a renewal invoice for a period starting on `period_start`, issued
    /// on `issued`: the period's start, or the day it is issued if that is later (a pass
    /// catching up), so the graces count from a day the customer could pay.
    pub fn invoice_due(&self, period_start: Date, issued: Date) -> Date {
        period_start.max(issued)
    }

    /// The day an unpaid renewal due on `due` counts its graces from: its due date, or the
    /// day before its overdue warning was sent (`warned`; not sent yet: as if today) when
    /// that is later. The warning goes out the day after the due date, so this is the due
    /// date, unless no pass ran then (the nodes were down, the scheduler stopped): the
    /// graces then count from the warning, and a customer is warned, then suspended, before
    /// being terminated, however long the outage (found by the time-travel audit: a node
    /// back 35 days after a due date terminated the account on its first pass, unwarned and
    /// never suspended, while its payment page had been down).
    pub fn graces_from(&self, due: Date, warned: Option<Date>, today: Date) -> Date {
        let warned = warned.unwrap_or(today);
        due.max(warned.yesterday().unwrap_or(warned))
    }

    /// The days an unpaid renewal whose graces count from `from` ([`Policy::graces_from`])
    /// suspends and then terminates its services, not before `today`: `(suspend on,
    /// terminate on)`. The termination comes no sooner than the termination grace less the
    /// suspension grace after the suspension step (`suspended`, the day it was taken; not
    /// taken yet: the day it will be).
    pub fn overdue_dates(&self, from: Date, suspended: Option<Date>, today: Date) -> (Date, Date) {
        let plus = |d: Date, days: i64| {
            d.checked_add(jiff::Span::new().days(days))
                .unwrap_or(Date::MAX)
                .max(today)
        };
        let suspend_on = plus(from, self.suspend_after_days);
        let step = suspended.unwrap_or(suspend_on);
        (
            suspend_on,
            plus(from, self.terminate_after_days).max(plus(
                step,
                self.terminate_after_days - self.suspend_after_days,
            )),
        )
    }

    /// [`Policy::overdue_step`] for the scheduler: termination only once the suspension
    /// step was taken (`suspended`, the day it was) the termination grace less the
    /// suspension grace before; until then the suspension (found by review of the
    /// time-travel fix: warned on time, then every node down until past the termination
    /// date, an account was terminated on the first pass back, never suspended).
    pub fn overdue_step_after(
        &self,
        from: Date,
        suspended: Option<Date>,
        today: Date,
    ) -> OverdueStep {
        match self.overdue_step(from, today) {
            OverdueStep::Terminate => {
                let gap = self.terminate_after_days - self.suspend_after_days;
                match suspended {
                    Some(s) if i64::from((today - s).get_days()) >= gap => OverdueStep::Terminate,
                    _ => OverdueStep::Suspend,
                }
            }
            step => step,
        }
    }

    /// What an unpaid renewal calls for on `today`, its graces counted from `due` (for the
    /// scheduler, [`Policy::graces_from`]).
    pub fn overdue_step(&self, due: Date, today: Date) -> OverdueStep {
        let late = (today - due).get_days();
        let late = i64::from(late);
        if today < due {
            OverdueStep::None
        } else if late >= self.terminate_after_days {
            OverdueStep::Terminate
        } else if late >= self.suspend_after_days {
            OverdueStep::Suspend
        } else {
            OverdueStep::None
        }
    }
}

/// What an unpaid renewal invoice calls for on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverdueStep {
    /// Not late enough to act on.
    None,
    /// Suspend its services.
    Suspend,
    /// Terminate its services and cancel the invoice.
    Terminate,
}

/// The period after the one ending on `current_end`, for a service anchored on `anchor`
/// renewing every `months`: `(current_end, next end)`, the end counted from the anchor
/// (never from a clamped date). `None` when `current_end` is not a period end of that anchor
/// and cycle, or past year 9999.
pub fn next_period(anchor: Date, current_end: Date, months: u32) -> Option<(Date, Date)> {
    if months == 0 || current_end <= anchor {
        return None;
    }
    let elapsed = months_between(anchor, current_end)?;
    if checked_add_months(anchor, elapsed)? != current_end {
        return None;
    }
    let end = checked_add_months(anchor, elapsed.checked_add(months)?)?;
    Some((current_end, end))
}

/// Whole calendar months from `anchor` to `date` as `add_months` counts them (`date` is
/// `anchor + n` months, possibly clamped); `None` when `date` is before `anchor`.
fn months_between(anchor: Date, date: Date) -> Option<u32> {
    let a = i64::from(anchor.year()) * 12 + i64::from(anchor.month());
    let d = i64::from(date.year()) * 12 + i64::from(date.month());
    u32::try_from(d - a).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dates::add_months;
    use jiff::civil::date;
    use proptest::prelude::*;

    #[test]
    fn a_late_invoice_is_due_when_issued_and_its_steps_follow_overdue_step() {
        let p = Policy::default();
        let start = date(2027, 3, 1);
        assert_eq!(p.invoice_due(start, date(2027, 2, 15)), start);
        assert_eq!(p.invoice_due(start, date(2027, 4, 10)), date(2027, 4, 10));
        let (suspend, terminate) = p.overdue_dates(start, None, date(2027, 2, 15));
        assert_eq!(p.overdue_step(start, suspend), OverdueStep::Suspend);
        assert_eq!(
            p.overdue_step(start, suspend.yesterday().unwrap()),
            OverdueStep::None
        );
        assert_eq!(p.overdue_step(start, terminate), OverdueStep::Terminate);
        // Never a day already past, and the termination 23 days after the suspension.
        let today = date(2027, 6, 1);
        assert_eq!(
            p.overdue_dates(start, None, today),
            (today, date(2027, 6, 24))
        );
    }

    #[test]
    fn a_period_anchored_on_the_31st_comes_back_to_it() {
        let anchor = date(2026, 1, 31);
        let mut end = add_months(anchor, 1);
        assert_eq!(end, date(2026, 2, 28));
        let mut ends = vec![end];
        for _ in 0..4 {
            let (start, next) = next_period(anchor, end, 1).unwrap();
            assert_eq!(start, end);
            end = next;
            ends.push(end);
        }
        assert_eq!(
            ends,
            [
                date(2026, 2, 28),
                date(2026, 3, 31),
                date(2026, 4, 30),
                date(2026, 5, 31),
                date(2026, 6, 30)
            ]
        );
        // Leap years: anchored on 29 Feb, yearly.
        let leap = date(2024, 2, 29);
        let (_, e) = next_period(leap, date(2025, 2, 28), 12).unwrap();
        assert_eq!(e, date(2026, 2, 28));
        let (_, e) = next_period(leap, date(2027, 2, 28), 12).unwrap();
        assert_eq!(e, date(2028, 2, 29));
    }

    #[test]
    fn a_date_that_is_not_a_period_end_is_refused() {
        assert_eq!(next_period(date(2026, 1, 15), date(2026, 2, 14), 1), None);
        assert_eq!(next_period(date(2026, 1, 15), date(2026, 1, 15), 1), None);
        assert_eq!(next_period(date(2026, 1, 15), date(2025, 12, 15), 1), None);
        assert_eq!(next_period(date(2026, 1, 15), date(2026, 2, 15), 0), None);
    }

    #[test]
    fn overdue_steps_follow_the_graces() {
        let p = Policy::default();
        let due = date(2026, 3, 1);
        let on = |d: i64| due.checked_add(jiff::Span::new().days(d)).unwrap();
        assert_eq!(p.overdue_step(due, on(-3)), OverdueStep::None);
        assert_eq!(p.overdue_step(due, on(0)), OverdueStep::None);
        assert_eq!(p.overdue_step(due, on(6)), OverdueStep::None);
        assert_eq!(p.overdue_step(due, on(7)), OverdueStep::Suspend);
        assert_eq!(p.overdue_step(due, on(29)), OverdueStep::Suspend);
        assert_eq!(p.overdue_step(due, on(30)), OverdueStep::Terminate);
        assert_eq!(p.overdue_step(due, on(400)), OverdueStep::Terminate);
        assert_eq!(p.billing_horizon(date(2026, 2, 15)), due);
    }

    #[test]
    fn graces_count_from_the_warning_when_it_came_late() {
        let p = Policy::default();
        let due = date(2026, 3, 1);
        let on = |d: i64| due.checked_add(jiff::Span::new().days(d)).unwrap();
        // Warned the day after: the due date, as always.
        assert_eq!(p.graces_from(due, Some(on(1)), on(40)), due);
        // Not due yet, or due today: its due date.
        assert_eq!(p.graces_from(due, None, on(-3)), due);
        assert_eq!(p.graces_from(due, None, on(0)), due);
        // A node back 35 days after the due date warns today: suspended six days later,
        // terminated 29 days later, never on the first pass.
        let back = on(35);
        let from = p.graces_from(due, None, back);
        assert_eq!(from, on(34));
        assert_eq!(p.overdue_step(from, back), OverdueStep::None);
        assert_eq!(p.overdue_dates(from, None, back), (on(41), on(64)));
        let from = p.graces_from(due, Some(back), on(41));
        assert_eq!(p.overdue_step(from, on(40)), OverdueStep::None);
        assert_eq!(p.overdue_step(from, on(41)), OverdueStep::Suspend);
        assert_eq!(p.overdue_step(from, on(63)), OverdueStep::Suspend);
        assert_eq!(p.overdue_step(from, on(64)), OverdueStep::Terminate);
    }

    #[test]
    fn termination_waits_for_the_suspension_step() {
        let p = Policy::default();
        let due = date(2026, 3, 1);
        let on = |d: i64| due.checked_add(jiff::Span::new().days(d)).unwrap();
        // Suspended on time: terminated at +30, as always.
        assert_eq!(
            p.overdue_step_after(due, Some(on(7)), on(29)),
            OverdueStep::Suspend
        );
        assert_eq!(
            p.overdue_step_after(due, Some(on(7)), on(30)),
            OverdueStep::Terminate
        );
        // Warned on time, then no pass until +35: suspended first, terminated 23 days on.
        assert_eq!(
            p.overdue_step_after(due, None, on(35)),
            OverdueStep::Suspend
        );
        assert_eq!(
            p.overdue_step_after(due, Some(on(35)), on(57)),
            OverdueStep::Suspend
        );
        assert_eq!(
            p.overdue_step_after(due, Some(on(35)), on(58)),
            OverdueStep::Terminate
        );
        assert_eq!(p.overdue_dates(due, Some(on(35)), on(40)), (on(40), on(58)));
        assert_eq!(p.overdue_dates(due, None, on(35)), (on(35), on(58)));
        // Not yet due: unchanged.
        assert_eq!(p.overdue_step_after(due, None, on(6)), OverdueStep::None);
        assert_eq!(p.overdue_dates(due, None, on(-3)), (on(7), on(30)));
    }

    #[test]
    fn policies_that_would_act_on_everything_are_refused() {
        assert!(Policy::new(14, 7, 30).is_ok());
        assert!(Policy::new(0, 1, 2).is_ok());
        for (l, s, t) in [
            (-1, 7, 30),
            (14, 0, 30),
            (14, -1, 30),
            (14, 7, 0),
            (14, 7, 7),
            (14, 30, 7),
            (14, 7, MAX_POLICY_DAYS + 1),
        ] {
            let e = Policy::new(l, s, t).unwrap_err();
            assert!(e.starts_with("--"), "{e}");
        }
    }

    proptest! {
        /// Whatever the anchor and cycle, renewing period after period gives the same ends
        /// as counting each from the anchor, and periods follow each other without gap.
        #[test]
        fn renewals_count_from_the_anchor(
            y in 1990i16..2100, m in 1i8..=12, d in 1i8..=31,
            months in prop::sample::select(vec![1u32, 3, 6, 12, 24, 36]),
            periods in 1u32..40,
        ) {
            let first = Date::new(y, m, 1).unwrap();
            let anchor = first.with().day(d.min(first.days_in_month())).build().unwrap();
            let mut end = add_months(anchor, months);
            for k in 1..periods {
                let (start, next) = next_period(anchor, end, months).unwrap();
                prop_assert_eq!(start, end);
                prop_assert!(next > start);
                prop_assert_eq!(next, add_months(anchor, (k + 1) * months));
                end = next;
            }
        }

        /// An invoice is suspended before it is terminated, and never before its due date.
        #[test]
        fn steps_are_ordered(late in -100i64..400, s in 1i64..60, extra in 1i64..60) {
            let p = Policy::new(14, s, s + extra).unwrap();
            let due = date(2026, 6, 15);
            let today = due.checked_add(jiff::Span::new().days(late)).unwrap();
            let step = p.overdue_step(due, today);
            match step {
                OverdueStep::None => prop_assert!(late < s),
                OverdueStep::Suspend => prop_assert!(late >= s && late < s + extra),
                OverdueStep::Terminate => prop_assert!(late >= s + extra),
            }
        }
    }
}
