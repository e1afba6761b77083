//! Login throttling, independent of the API rate limit: failed logins are counted per
//! e-mail and per client address, and after a few of them that e-mail (or address) must
//! wait before the next try, twice as long after each further failure (up to a cap). A
//! success clears the e-mail's count. Both dialects' logins go through it and answer `429`
//! with `Retry-After`; the wait is decided before the password is checked, so a locked
//! e-mail costs no hashing and known and unknown e-mails are treated alike.
//!
//! Counts live in the database ([`lodge_store::logins`]), so every node sharing it counts
//! the same failures (a node of its own per try gains an attacker nothing); the e-mail is
//! kept only as a digest. They are forgotten after a quiet [`LoginLimits::window_secs`],
//! and time comes from Lodge's clock.

use std::net::IpAddr;

use lodge_store::{logins, Store};
use sha2::{Digest, Sha256};

use crate::Result;

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

/// See the module's documentation.
#[derive(Debug, Clone)]
pub struct LoginGuard {
    limits: LoginLimits,
    store: Store,
}

/// Normalized form of a login name.
fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The e-mail's count's key, and what the log says instead of the e-mail.
fn email_digest(email: &str) -> String {
    hex::encode(Sha256::digest(email_key(email).as_bytes()))
}

const US: i64 = 1_000_000;

/// The wait `failures` impose once `free` are spent (`None`: none yet).
pub fn wait_after(failures: i64, free: u32, limits: &LoginLimits) -> Option<u64> {
    let over = failures.checked_sub(i64::from(free))?;
    if over < 0 {
        return None;
    }
    let doublings = u32::try_from(over.min(30)).unwrap_or(30);
    Some(
        limits
            .first_wait_secs
            .saturating_mul(1u64 << doublings)
            .min(limits.max_wait_secs)
            .max(1),
    )
}

impl LoginGuard {
    pub fn new(limits: LoginLimits, store: Store) -> Self {
        LoginGuard { limits, store }
    }

    fn window(&self) -> i64 {
        i64::try_from(self.limits.window_secs)
            .unwrap_or(i64::MAX / US)
            .saturating_mul(US)
    }

    /// `Err(seconds)` when this e-mail or address must wait before trying again.
    pub async fn check(
        &self,
        email: &str,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<std::result::Result<(), u64>> {
        let mut keys = vec![format!("e:{}", email_digest(email))];
        keys.extend(address.map(|a| format!("a:{a}")));
        let until = logins::locked_until(self.store.reader(), &keys).await?;
        if until > now {
            let secs = u64::try_from((until - now + US - 1) / US).unwrap_or(1);
            return Ok(Err(secs.max(1)));
        }
        Ok(Ok(()))
    }

    /// Counts a failed login; logs a line when it locks the e-mail or the address. A count
    /// that cannot be written is logged (the login's answer stands).
    pub async fn failed(&self, email: &str, address: Option<IpAddr>, now: i64) {
        let limits = self.limits;
        if limits.free_per_email > 0 {
            let digest = email_digest(email);
            let tag = digest.get(..12).unwrap_or_default().to_owned();
            if let Some(wait) = self
                .count(&format!("e:{digest}"), limits.free_per_email, now)
                .await
            {
                tracing::warn!(
                    email = %tag,
                    wait_secs = wait,
                    "login locked for an e-mail after repeated failures"
                );
            }
        }
        if let (Some(a), true) = (address, limits.free_per_address > 0) {
            if let Some(wait) = self
                .count(&format!("a:{a}"), limits.free_per_address, now)
                .await
            {
                tracing::warn!(
                    address = %a,
                    wait_secs = wait,
                    "login locked for a client address after repeated failures"
                );
            }
        }
    }

    /// One failure of `key`; the wait it now imposes, if it locks.
    async fn count(&self, key: &str, free: u32, now: i64) -> Option<u64> {
        let db = self.store.writer();
        let counted = async {
            let failures =
                logins::count_failure(db, key, now, now.saturating_sub(self.window())).await?;
            let Some(wait) = wait_after(failures, free, &self.limits) else {
                return Ok(None);
            };
            let until = now.saturating_add(
                i64::try_from(wait)
                    .unwrap_or(i64::MAX / US)
                    .saturating_mul(US),
            );
            logins::lock(db, key, until).await?;
            Ok::<_, lodge_store::StoreError>(Some(wait))
        };
        counted.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "a failed login could not be counted");
            None
        })
    }

    /// A successful login clears its e-mail's count (not its address's: many people may
    /// share one address).
    pub async fn succeeded(&self, email: &str) {
        let key = format!("e:{}", email_digest(email));
        if let Err(e) = logins::clear(self.store.writer(), &key).await {
            tracing::error!(error = %e, "a login's failure count could not be cleared");
        }
    }

    /// Forgets counts that are quiet and unlocked (called periodically).
    pub async fn shrink(&self, now: i64) -> Result<u64> {
        let quiet_since = now.saturating_sub(self.window());
        Ok(logins::forget_quiet(self.store.writer(), now, quiet_since).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LoginLimits {
        LoginLimits {
            free_per_email: 3,
            free_per_address: 10,
            first_wait_secs: 2,
            max_wait_secs: 60,
            window_secs: 3600,
        }
    }

    #[test]
    fn each_failure_past_the_free_ones_doubles_the_wait_up_to_the_cap() {
        let l = limits();
        assert_eq!(wait_after(0, 3, &l), None);
        assert_eq!(wait_after(2, 3, &l), None);
        assert_eq!(wait_after(3, 3, &l), Some(2));
        assert_eq!(wait_after(4, 3, &l), Some(4));
        assert_eq!(wait_after(7, 3, &l), Some(32));
        assert_eq!(wait_after(8, 3, &l), Some(60), "capped");
        assert_eq!(wait_after(i64::MAX, 3, &l), Some(60));
    }

    async fn guard(limits: LoginLimits) -> (tempfile::TempDir, LoginGuard) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/l.db", dir.path().display()))
            .await
            .unwrap();
        (dir, LoginGuard::new(limits, store))
    }

    const S: i64 = US;

    #[tokio::test]
    async fn an_email_waits_longer_after_each_failure_and_a_success_clears_it() {
        let (_dir, g) = guard(limits()).await;
        let ip: Option<IpAddr> = Some("127.0.0.9".parse().unwrap());
        let mut now = 1_000 * S;
        g.failed("A@x.test", ip, now).await;
        g.failed("a@x.test ", ip, now).await;
        assert_eq!(g.check("a@x.test", ip, now).await.unwrap(), Ok(()));
        g.failed("a@x.test", ip, now).await;
        assert_eq!(g.check("a@x.test", ip, now).await.unwrap(), Err(2));
        assert_eq!(g.check("A@X.TEST", None, now).await.unwrap(), Err(2));
        assert_eq!(g.check("b@x.test", None, now).await.unwrap(), Ok(()));
        now += 2 * S;
        assert_eq!(g.check("a@x.test", ip, now).await.unwrap(), Ok(()));
        g.failed("a@x.test", ip, now).await;
        assert_eq!(g.check("a@x.test", ip, now).await.unwrap(), Err(4));
        g.succeeded("a@x.test").await;
        assert_eq!(g.check("a@x.test", None, now).await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn an_address_trying_many_emails_waits_and_quiet_counts_are_forgotten() {
        let (_dir, g) = guard(limits()).await;
        let ip: Option<IpAddr> = Some("127.0.0.7".parse().unwrap());
        let now = 5 * S;
        for i in 0..10 {
            g.failed(&format!("u{i}@x.test"), ip, now).await;
        }
        assert_eq!(g.check("new@x.test", ip, now).await.unwrap(), Err(2));
        assert_eq!(g.check("new@x.test", None, now).await.unwrap(), Ok(()));
        // A failure after a quiet window counts from one again.
        let later = now + 3600 * S;
        g.failed("u0@x.test", None, later).await;
        g.failed("u0@x.test", None, later).await;
        assert_eq!(g.check("u0@x.test", None, later).await.unwrap(), Ok(()));
        // Eleven keys counted; all but the one failed at `later` forgotten an hour on.
        assert_eq!(g.shrink(later + 1800 * S).await.unwrap(), 10);
        assert_eq!(g.shrink(later + 3600 * S).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn zero_turns_a_count_off() {
        let (_dir, g) = guard(LoginLimits {
            free_per_email: 0,
            free_per_address: 0,
            ..LoginLimits::default()
        })
        .await;
        let ip: Option<IpAddr> = Some("127.0.0.5".parse().unwrap());
        for _ in 0..30 {
            g.failed("a@x.test", ip, 0).await;
        }
        assert_eq!(g.check("a@x.test", ip, 0).await.unwrap(), Ok(()));
    }

    #[test]
    fn an_email_is_counted_as_written_anyhow() {
        assert_eq!(email_digest(" A@X.test "), email_digest("a@x.test"));
        assert_ne!(email_digest("a@x.test"), email_digest("b@x.test"));
        assert!(!email_digest("a@x.test").contains('@'));
    }
}
