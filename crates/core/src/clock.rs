//! The source of "now". Business code never reads the system clock directly:
//! it is handed a [`Clock`], so tests can move time without sleeping.

use std::sync::{Arc, Mutex};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// A source of the current time. All business times are UTC.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> Timestamp;

    /// The current UTC calendar date.
    fn today(&self) -> Date {
        self.now().to_zoned(TimeZone::UTC).date()
    }
}

/// The real clock. The only place in Lodge that reads the system time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // this is the one sanctioned reader of the system clock
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    /// A clock stopped at `now`.
    pub fn new(now: Timestamp) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(now)))
    }

    /// Moves the clock to `now` (backwards is allowed).
    pub fn set(&self, now: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    /// Moves the clock by `by` (may be negative), saturating at the
    /// representable range.
    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now = now.checked_add(by).unwrap_or(if by.is_negative() {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(ts("2025-01-31T23:30:00Z"));
        let shared = clock.clone();
        assert_eq!(clock.today(), date(2025, 1, 31));
        shared.advance(SignedDuration::from_hours(1));
        assert_eq!(clock.now(), ts("2025-02-01T00:30:00Z"));
        assert_eq!(clock.today(), date(2025, 2, 1));
        clock.set(ts("2024-02-29T12:00:00Z"));
        assert_eq!(shared.today(), date(2024, 2, 29));
        clock.advance(SignedDuration::from_hours(-24));
        assert_eq!(shared.today(), date(2024, 2, 28));
        clock.advance(SignedDuration::MAX);
        assert_eq!(clock.now(), Timestamp::MAX);
    }

    #[test]
    fn poisoned_clock_still_works() {
        let clock = ManualClock::new(ts("2025-01-01T00:00:00Z"));
        let poisoner = clock.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.0.lock().unwrap();
            panic!("poison the mutex");
        })
        .join();
        assert!(clock.0.is_poisoned());
        clock.advance(SignedDuration::from_secs(1));
        assert_eq!(clock.now(), ts("2025-01-01T00:00:01Z"));
    }

    #[test]
    fn system_clock_is_usable_as_dyn() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        assert!(clock.today().year() >= 2024);
    }
}
