//! Login throttling, independent of the API rate limit: failed logins are counted per
//! e-mail and per client address, and after a few of them that e-mail (or address) must
//! wait before the next try, twice as long after each further failure (up to a cap). A
//! success clears the e-mail's count. Both dialects' logins go through it and answer `429`
//! with `Retry-After`; the wait is decided before the password is checked, so a locked
//! e-mail costs no hashing and known and unknown e-mails are treated alike.
//!
//! Counts live in this node's memory (several nodes each count their own), are forgotten
//! after a quiet [`LoginLimits::window_secs`], and time comes from Lodge's clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// The limits. A `free_*` of 0 turns that count off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures of one e-mail before it has to wait.
    pub free_per_email: u32,
    /// Failures from one client address (any e-mails) before it has to wait.
    pub free_per_address: u32,
    /// The first wait, doubled after each further failure.
    pub first_wait_secs: u64,
    /// The longest wait.
    pub max_wait_secs: u64,
    /// A count is forgotten after this long without a failure.
    pub window_secs: u64,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            free_per_email: 5,
            free_per_address: 20,
            first_wait_secs: 2,
            max_wait_secs: 15 * 60,
            window_secs: 60 * 60,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Count {
    failures: u32,
    /// Unix microseconds.
    last_failure: i64,
    locked_until: i64,
}

#[derive(Debug, Default)]
struct Counts {
    by_email: HashMap<String, Count>,
    by_address: HashMap<IpAddr, Count>,
}

/// See the module's documentation.
#[derive(Debug, Clone)]
pub struct LoginGuard {
    limits: LoginLimits,
    counts: Arc<Mutex<Counts>>,
}

/// Normalized form of a login name (its count's key).
fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// What the log says instead of the e-mail.
fn email_tag(email: &str) -> String {
    let digest = Sha256::digest(email_key(email).as_bytes());
    hex::encode(digest.get(..6).unwrap_or(&[]))
}

const US: i64 = 1_000_000;

impl LoginGuard {
    pub fn new(limits: LoginLimits) -> Self {
        LoginGuard {
            limits,
            counts: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(seconds)` when this e-mail or address must wait before trying again.
    pub fn check(&self, email: &str, address: Option<IpAddr>, now: i64) -> Result<(), u64> {
        let counts = self.lock();
        let mut until = counts
            .by_email
            .get(&email_key(email))
            .map_or(0, |c| c.locked_until);
        if let Some(c) = address.and_then(|a| counts.by_address.get(&a)) {
            until = until.max(c.locked_until);
        }
        if until > now {
            let micros = until - now;
            let secs = u64::try_from((micros + US - 1) / US).unwrap_or(1);
            return Err(secs.max(1));
        }
        Ok(())
    }

    /// Counts a failed login; logs a line when it locks the e-mail or the address.
    pub fn failed(&self, email: &str, address: Option<IpAddr>, now: i64) {
        let limits = self.limits;
        let mut counts = self.lock();
        if limits.free_per_email > 0 {
            let c = counts.by_email.entry(email_key(email)).or_default();
            if let Some(wait) = bump(c, limits.free_per_email, &limits, now) {
                tracing::warn!(
                    email = %email_tag(email),
                    failures = c.failures,
                    wait_secs = wait,
                    "login locked for an e-mail after repeated failures"
                );
            }
        }
        if let (Some(a), true) = (address, limits.free_per_address > 0) {
            let c = counts.by_address.entry(a).or_default();
            if let Some(wait) = bump(c, limits.free_per_address, &limits, now) {
                tracing::warn!(
                    address = %a,
                    failures = c.failures,
                    wait_secs = wait,
                    "login locked for a client address after repeated failures"
                );
            }
        }
    }

    /// A successful login clears its e-mail's count (not its address's: many people may
    /// share one address).
    pub fn succeeded(&self, email: &str) {
        self.lock().by_email.remove(&email_key(email));
    }

    /// Forgets counts that are quiet and unlocked (called periodically).
    pub fn shrink(&self, now: i64) {
        let window = i64::try_from(self.limits.window_secs).unwrap_or(i64::MAX / US) * US;
        let keep = |c: &Count| c.locked_until > now || now - c.last_failure < window;
        let mut counts = self.lock();
        counts.by_email.retain(|_, c| keep(c));
        counts.by_address.retain(|_, c| keep(c));
    }
}

/// Adds a failure to `c` (a quiet window resets it first); the wait it now imposes, if
/// it locks.
fn bump(c: &mut Count, free: u32, limits: &LoginLimits, now: i64) -> Option<u64> {
    let window = i64::try_from(limits.window_secs).unwrap_or(i64::MAX / US) * US;
    if c.failures > 0 && now - c.last_failure >= window && c.locked_until <= now {
        *c = Count::default();
    }
    c.failures = c.failures.saturating_add(1);
    c.last_failure = now;
    if c.failures < free {
        return None;
    }
    let doublings = (c.failures - free).min(30);
    let wait = limits
        .first_wait_secs
        .saturating_mul(1u64 << doublings)
        .min(limits.max_wait_secs)
        .max(1);
    c.locked_until = now.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX / US) * US);
    Some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = US;

    fn guard() -> LoginGuard {
        LoginGuard::new(LoginLimits {
            free_per_email: 3,
            free_per_address: 10,
            first_wait_secs: 2,
            max_wait_secs: 60,
            window_secs: 3600,
        })
    }

    #[test]
    fn an_email_waits_longer_after_each_failure() {
        let g = guard();
        let ip: Option<IpAddr> = Some("127.0.0.9".parse().unwrap());
        let mut now = 1_000 * S;
        g.failed("A@x.test", ip, now);
        g.failed("a@x.test ", ip, now);
        assert_eq!(g.check("a@x.test", ip, now), Ok(()));
        g.failed("a@x.test", ip, now);
        assert_eq!(g.check("a@x.test", ip, now), Err(2));
        assert_eq!(g.check("A@X.TEST", None, now), Err(2), "same e-mail");
        assert_eq!(g.check("b@x.test", None, now), Ok(()), "another e-mail");
        now += 2 * S;
        assert_eq!(g.check("a@x.test", ip, now), Ok(()));
        g.failed("a@x.test", ip, now);
        assert_eq!(g.check("a@x.test", ip, now), Err(4));
        for _ in 0..10 {
            g.failed("a@x.test", None, now);
        }
        assert_eq!(g.check("a@x.test", None, now), Err(60), "capped");
        g.succeeded("a@x.test");
        assert_eq!(g.check("a@x.test", None, now), Ok(()));
    }

    #[test]
    fn an_address_trying_many_emails_waits() {
        let g = guard();
        let ip: Option<IpAddr> = Some("127.0.0.7".parse().unwrap());
        let now = 5 * S;
        for i in 0..10 {
            g.failed(&format!("u{i}@x.test"), ip, now);
        }
        assert_eq!(g.check("new@x.test", ip, now), Err(2));
        assert_eq!(g.check("new@x.test", None, now), Ok(()));
    }

    #[test]
    fn quiet_counts_are_forgotten() {
        let g = guard();
        let now = 0;
        g.failed("a@x.test", None, now);
        g.failed("a@x.test", None, now);
        let later = now + 3600 * S;
        g.failed("a@x.test", None, later);
        assert_eq!(
            g.check("a@x.test", None, later),
            Ok(()),
            "the window reset it"
        );
        g.shrink(later + 3600 * S);
        assert!(g.lock().by_email.is_empty());
    }

    #[test]
    fn zero_turns_a_count_off() {
        let g = LoginGuard::new(LoginLimits {
            free_per_email: 0,
            free_per_address: 0,
            ..LoginLimits::default()
        });
        for _ in 0..100 {
            g.failed("a@x.test", None, 0);
        }
        assert_eq!(g.check("a@x.test", None, 0), Ok(()));
    }
}
