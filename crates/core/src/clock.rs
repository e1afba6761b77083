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

/// A node's clock kept to its database server's time (several nodes then share one time
/// whatever their machines' clocks say; found by the multi-node audit: a node a day ahead
/// took over the others' running jobs, forgot idempotency keys and login lockouts early,
/// and dated invoices in the future).
///
/// Until it is anchored it is its inner clock. Once anchored ([`AlignedClock::anchor`]:
/// the database's time measured at a moment of this process's monotonic clock) it counts
/// from that anchor on the monotonic clock, so a step of the machine's clock (NTP, `date
/// -s`) never moves it, even between two measurements (found by review: followed for up to
/// the interval between them, a step forward dated invoices in the future). It is anchored
/// again every few seconds (by `lodge`'s nodes), which corrects the monotonic clock's
/// drift; a correction of less than a second backwards is not taken (time does not run
/// back for what orders by it), one of a second or more is.
#[derive(Debug)]
pub struct AlignedClock {
    inner: Arc<dyn Clock>,
    /// The monotonic clock's origin for this clock.
    base: std::time::Instant,
    /// The time, in unix microseconds, at `base` (the anchor); `i64::MIN` until anchored.
    at_base_us: AtomicI64,
    /// The database's time less the inner clock's, at the last anchoring (for the logs).
    offset_us: AtomicI64,
}

/// A backwards correction smaller than this is not taken.
const HOLD_BACK_US: i64 = 1_000_000;

impl AlignedClock {
    /// `inner`'s time until it is anchored.
    pub fn new(inner: Arc<dyn Clock>) -> AlignedClock {
        AlignedClock {
            inner,
            base: std::time::Instant::now(),
            at_base_us: AtomicI64::new(i64::MIN),
            offset_us: AtomicI64::new(0),
        }
    }

    /// The inner clock's time (to measure against the database).
    pub fn inner_now(&self) -> Timestamp {
        self.inner.now()
    }

    /// Microseconds on this clock's monotonic clock (to measure against the database).
    pub fn monotonic_us(&self) -> i64 {
        i64::try_from(self.base.elapsed().as_micros()).unwrap_or(i64::MAX)
    }

    /// The database's time less the inner clock's, at the last anchoring.
    pub fn offset(&self) -> SignedDuration {
        SignedDuration::from_micros(self.offset_us.load(Ordering::Relaxed))
    }

    /// Whether it has been anchored.
    pub fn is_anchored(&self) -> bool {
        self.at_base_us.load(Ordering::Relaxed) != i64::MIN
    }

    /// Anchors it: the time was `time_us` (unix microseconds) when the monotonic clock read
    /// `monotonic_us` and the inner clock `inner_us`.
    pub fn anchor(&self, time_us: i64, monotonic_us: i64, inner_us: i64) {
        let at_base = time_us.saturating_sub(monotonic_us);
        let before = self.at_base_us.load(Ordering::Relaxed);
        if before == i64::MIN || at_base >= before || before - at_base >= HOLD_BACK_US {
            self.at_base_us.store(at_base, Ordering::Relaxed);
        }
        self.offset_us
            .store(time_us.saturating_sub(inner_us), Ordering::Relaxed);
    }
}

impl Clock for AlignedClock {
    fn now(&self) -> Timestamp {
        let at_base = self.at_base_us.load(Ordering::Relaxed);
        if at_base == i64::MIN {
            return self.inner.now();
        }
        Timestamp::from_microsecond(at_base.saturating_add(self.monotonic_us()))
            .unwrap_or_else(|_| self.inner.now())
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
    fn an_aligned_clock_counts_from_its_anchor_whatever_its_inner_clock_does() {
        let inner = ManualClock::new(ts("2025-01-31T23:30:00Z"));
        let clock = AlignedClock::new(Arc::new(inner.clone()));
        assert_eq!(clock.now(), ts("2025-01-31T23:30:00Z"), "its inner clock's");
        assert!(!clock.is_anchored());
        assert!(clock.aligned().is_some());
        assert!(inner.aligned().is_none());
        // The database says a day earlier than the machine.
        let db = ts("2025-01-30T23:30:00Z").as_microsecond();
        let mono = clock.monotonic_us();
        clock.anchor(db, mono, inner.now().as_microsecond());
        assert_eq!(clock.offset(), SignedDuration::from_hours(-24));
        let near = |t: Timestamp, want: &str| {
            let off = t.duration_since(ts(want)).abs();
            assert!(off < SignedDuration::from_secs(5), "{t} vs {want}");
        };
        near(clock.now(), "2025-01-30T23:30:00Z");
        // The machine's clock steps an hour: not followed.
        inner.advance(SignedDuration::from_hours(1));
        near(clock.now(), "2025-01-30T23:30:00Z");
        assert_eq!(clock.inner_now(), ts("2025-02-01T00:30:00Z"));
        // Anchored again half a second earlier: held (time does not run back for that).
        let before = clock.now();
        clock.anchor(db - 500_000, mono, inner.now().as_microsecond());
        assert!(clock.now() >= before);
        // Two seconds earlier: taken.
        clock.anchor(db - 2_000_000, mono, inner.now().as_microsecond());
        near(clock.now(), "2025-01-30T23:29:58Z");
        assert!(clock.now() < before);
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
