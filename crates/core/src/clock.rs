//! The source of "now". Business code never reads the system clock directly:
//! it is handed a [`Clock`], so tests can move time without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
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

    /// The clock as an [`AlignedClock`], when it is one (a node's, kept to its database's
    /// time).
    fn aligned(&self) -> Option<&AlignedClock> {
        None
    }
}

/// A clock kept to another's time by an offset: a node's clock on PostgreSQL, kept to the
/// database server's (several nodes then share one time whatever their machines' clocks
/// say; found by the multi-node audit: a node a day ahead took over the others' jobs,
/// forgot idempotency keys and login lockouts early, and dated invoices in the future).
/// The offset is measured by whoever owns the database (`lodge`'s node start, then every
/// few seconds).
#[derive(Debug)]
pub struct AlignedClock {
    inner: Arc<dyn Clock>,
    offset_us: AtomicI64,
}

impl AlignedClock {
    /// `inner`'s time until an offset is set.
    pub fn new(inner: Arc<dyn Clock>) -> AlignedClock {
        AlignedClock {
            inner,
            offset_us: AtomicI64::new(0),
        }
    }

    /// The time of the clock it follows, without the offset (to measure the offset).
    pub fn inner_now(&self) -> Timestamp {
        self.inner.now()
    }

    /// What is added to the inner clock's time.
    pub fn offset(&self) -> SignedDuration {
        SignedDuration::from_micros(self.offset_us.load(Ordering::Relaxed))
    }

    /// Sets what is added to the inner clock's time.
    pub fn set_offset(&self, offset: SignedDuration) {
        let us = i64::try_from(offset.as_micros()).unwrap_or(if offset.is_negative() {
            i64::MIN
        } else {
            i64::MAX
        });
        self.offset_us.store(us, Ordering::Relaxed);
    }
}

impl Clock for AlignedClock {
    fn now(&self) -> Timestamp {
        let inner = self.inner.now();
        inner.checked_add(self.offset()).unwrap_or(inner)
    }

    fn aligned(&self) -> Option<&AlignedClock> {
        Some(self)
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
    fn an_aligned_clock_is_its_inner_clock_moved_by_its_offset() {
        let inner = ManualClock::new(ts("2025-01-31T23:30:00Z"));
        let clock = AlignedClock::new(Arc::new(inner.clone()));
        assert_eq!(clock.now(), ts("2025-01-31T23:30:00Z"));
        assert!(clock.aligned().is_some());
        assert!(inner.aligned().is_none());
        clock.set_offset(SignedDuration::from_hours(-24));
        assert_eq!(clock.now(), ts("2025-01-30T23:30:00Z"));
        assert_eq!(clock.inner_now(), ts("2025-01-31T23:30:00Z"));
        inner.advance(SignedDuration::from_hours(1));
        assert_eq!(clock.now(), ts("2025-01-31T00:30:00Z"));
        assert_eq!(clock.today(), date(2025, 1, 31));
        // Past the representable range, the inner clock's own time.
        clock.set_offset(SignedDuration::MAX);
        assert_eq!(clock.now(), inner.now());
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
