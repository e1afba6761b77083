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

/// A login attempt admitted by [`LoginGuard::begin`], to be settled once its password is
/// checked.
#[derive(Debug)]
#[must_use = "settle the attempt: failed, succeeded or abandoned"]
pub struct Attempt {
    email_key: String,
    held: Vec<Held>,
    /// When it was admitted.
    at: i64,
}

#[derive(Debug)]
struct Held {
    key: String,
    /// The lock this attempt set (until, its wait in seconds, what the log names).
    lock: Option<(i64, u64, String)>,
}

fn secs_until(until: i64, now: i64) -> u64 {
    u64::try_from((until - now + US - 1) / US)
        .unwrap_or(1)
        .max(1)
}

impl LoginGuard {
    pub fn new(limits: LoginLimits, store: Store) -> Self {
        LoginGuard { limits, store }
    }

    fn window(&self) -> i64 {
        self.us(self.limits.window_secs)
    }

    /// `Err(seconds)` when this e-mail or address must wait before trying again. Reads
    /// only; a login goes through [`LoginGuard::begin`].
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
            return Ok(Err(secs_until(until, now)));
        }
        Ok(Ok(()))
    }

    /// Admits a login attempt before its password is checked, or says how long to wait.
    /// The attempt is counted as a failure at once, and one that would lock the e-mail (or
    /// the address) if it failed locks it already, so attempts sent at once cannot all
    /// pass the check before any of them is counted (found by the /v1 audit: 100 wrong
    /// passwords at once were all tried). Then [`LoginGuard::failed`],
    /// [`LoginGuard::succeeded`] or [`LoginGuard::abandoned`] settles it.
    pub async fn begin(
        &self,
        email: &str,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<std::result::Result<Attempt, u64>> {
        let limits = self.limits;
        let digest = email_digest(email);
        let mut keys: Vec<(String, u32, String)> = Vec::new();
        if limits.free_per_email > 0 {
            let tag = digest.get(..12).unwrap_or_default().to_owned();
            keys.push((format!("e:{digest}"), limits.free_per_email, tag));
        }
        if let (Some(a), true) = (address, limits.free_per_address > 0) {
            keys.push((format!("a:{a}"), limits.free_per_address, a.to_string()));
        }
        let mut attempt = Attempt {
            email_key: format!("e:{digest}"),
            held: Vec::new(),
            at: now,
        };
        // Held while the attempt is decided; replaced at once by its own wait.
        let hold = now.saturating_add(self.us(limits.max_wait_secs));
        for (key, free, tag) in keys {
            let admitted = logins::admit(
                self.store.writer(),
                &key,
                now,
                now.saturating_sub(self.window()),
                i64::from(free),
                hold,
            )
            .await;
            let n = match admitted {
                Ok(Some(n)) => n,
                other => {
                    // Locked (or unreadable): the keys admitted already are given back.
                    self.release(&attempt, true).await;
                    return match other {
                        Ok(_) => {
                            let until = logins::locked_until(self.store.reader(), &[key]).await?;
                            Ok(Err(secs_until(until.max(now + 1), now)))
                        }
                        Err(e) => Err(e.into()),
                    };
                }
            };
            let lock = match wait_after(n, free, &limits) {
                Some(wait) => {
                    let until = now.saturating_add(self.us(wait));
                    if let Err(e) = logins::relock(self.store.writer(), &key, hold, until).await {
                        tracing::error!(error = %e, "a login's lock could not be set");
                    }
                    Some((until, wait, tag))
                }
                None => None,
            };
            attempt.held.push(Held { key, lock });
        }
        Ok(Ok(attempt))
    }

    /// The attempt failed: it was counted when admitted, and its lock (if it reached one)
    /// stands; logs the lock.
    pub async fn failed(&self, attempt: &Attempt) {
        for h in &attempt.held {
            if let Err(e) = logins::stamp_failure(self.store.writer(), &h.key, attempt.at).await {
                tracing::error!(error = %e, "a failed login could not be stamped");
            }
            if let Some((_, wait, tag)) = &h.lock {
                if h.key.starts_with("e:") {
                    tracing::warn!(email = %tag, wait_secs = wait, "login locked for an e-mail after repeated failures");
                } else {
                    tracing::warn!(address = %tag, wait_secs = wait, "login locked for a client address after repeated failures");
                }
            }
        }
    }

    /// A successful login clears its e-mail's count (not its address's, which many people
    /// may share: the attempt is only taken back from it).
    pub async fn succeeded(&self, attempt: &Attempt) {
        if let Err(e) = logins::clear(self.store.writer(), &attempt.email_key).await {
            tracing::error!(error = %e, "a login's failure count could not be cleared");
        }
        self.release(attempt, false).await;
    }

    /// An attempt that was neither a success nor a failure (the check could not be made):
    /// taken back from every count.
    pub async fn abandoned(&self, attempt: &Attempt) {
        self.release(attempt, true).await;
    }

    /// Takes the attempt back from its counts (the e-mail's too, or not: a success has
    /// deleted it).
    async fn release(&self, attempt: &Attempt, email_too: bool) {
        for h in &attempt.held {
            if h.key == attempt.email_key && !email_too {
                continue;
            }
            let held = h.lock.as_ref().map_or(0, |(until, _, _)| *until);
            if let Err(e) = logins::release(self.store.writer(), &h.key, held).await {
                tracing::error!(error = %e, "a login attempt could not be taken back");
            }
        }
    }

    fn us(&self, secs: u64) -> i64 {
        i64::try_from(secs)
            .unwrap_or(i64::MAX / US)
            .saturating_mul(US)
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

    /// One wrong password: admitted, then failed; `Err(wait)` when it was not admitted.
    async fn fail(
        g: &LoginGuard,
        email: &str,
        ip: Option<IpAddr>,
        now: i64,
    ) -> std::result::Result<(), u64> {
        let a = g.begin(email, ip, now).await.unwrap()?;
        g.failed(&a).await;
        Ok(())
    }

    #[tokio::test]
    async fn an_email_waits_longer_after_each_failure_and_a_success_clears_it() {
        let (_dir, g) = guard(limits()).await;
        let ip: Option<IpAddr> = Some("127.0.0.9".parse().unwrap());
        let mut now = 1_000 * S;
        assert_eq!(fail(&g, "A@x.test", ip, now).await, Ok(()));
        assert_eq!(fail(&g, "a@x.test ", ip, now).await, Ok(()));
        assert_eq!(g.check("a@x.test", ip, now).await.unwrap(), Ok(()));
        assert_eq!(
            fail(&g, "a@x.test", ip, now).await,
            Ok(()),
            "the third is tried"
        );
        assert_eq!(g.check("a@x.test", ip, now).await.unwrap(), Err(2));
        assert_eq!(fail(&g, "A@X.TEST", None, now).await, Err(2));
        assert_eq!(g.check("b@x.test", None, now).await.unwrap(), Ok(()));
        now += 2 * S;
        assert_eq!(fail(&g, "a@x.test", ip, now).await, Ok(()));
        assert_eq!(g.check("a@x.test", ip, now).await.unwrap(), Err(4));
        now += 4 * S;
        let a = g.begin("a@x.test", ip, now).await.unwrap().unwrap();
        assert_eq!(
            g.check("a@x.test", None, now).await.unwrap(),
            Err(8),
            "held while it is decided"
        );
        g.succeeded(&a).await;
        assert_eq!(g.check("a@x.test", ip, now).await.unwrap(), Ok(()));
    }

    /// Attempts at once are each counted before any is decided: no more than the free ones
    /// (and the one that reaches the lock) are tried.
    #[tokio::test]
    async fn attempts_at_once_are_counted_before_they_are_tried() {
        let (_dir, g) = guard(limits()).await;
        let now = 10 * S;
        let begun =
            futures::future::join_all((0..20).map(|_| g.begin("rush@x.test", None, now))).await;
        let admitted: Vec<Attempt> = begun.into_iter().filter_map(|r| r.unwrap().ok()).collect();
        assert_eq!(admitted.len(), 3, "three free, the third locks");
        for a in &admitted {
            g.failed(a).await;
        }
        assert_eq!(g.check("rush@x.test", None, now).await.unwrap(), Err(2));
    }

    #[tokio::test]
    async fn an_address_trying_many_emails_waits_and_quiet_counts_are_forgotten() {
        let (_dir, g) = guard(limits()).await;
        let ip: Option<IpAddr> = Some("127.0.0.7".parse().unwrap());
        let now = 5 * S;
        for i in 0..10 {
            assert_eq!(fail(&g, &format!("u{i}@x.test"), ip, now).await, Ok(()));
        }
        assert_eq!(g.check("new@x.test", ip, now).await.unwrap(), Err(2));
        assert_eq!(g.check("new@x.test", None, now).await.unwrap(), Ok(()));
        // A success from the address is taken back from its count.
        let later = now + 3600 * S;
        let a = g.begin("ok@x.test", ip, later).await.unwrap().unwrap();
        g.succeeded(&a).await;
        assert_eq!(g.check("ok@x.test", ip, later).await.unwrap(), Ok(()));
        // A failure after a quiet window counts from one again.
        assert_eq!(fail(&g, "u0@x.test", None, later).await, Ok(()));
        assert_eq!(fail(&g, "u0@x.test", None, later).await, Ok(()));
        assert_eq!(g.check("u0@x.test", None, later).await.unwrap(), Ok(()));
        // Eleven keys counted (the success deleted its e-mail's); the two touched at
        // `later` (u0's and the address's) stay half an hour on.
        assert_eq!(g.shrink(later + 1800 * S).await.unwrap(), 9);
        assert_eq!(g.shrink(later + 3600 * S).await.unwrap(), 2);
    }

    /// Behind a shared address, successes do not keep the failures' window open: typos
    /// hours apart never add up to a lock (found by the review: every attempt stamped the
    /// count, so a busy address never started again).
    #[tokio::test]
    async fn successes_do_not_keep_an_addresss_old_failures() {
        let (_dir, g) = guard(limits()).await;
        let ip: Option<IpAddr> = Some("127.0.0.8".parse().unwrap());
        let mut now = 100 * S;
        for i in 0..12 {
            assert_eq!(
                fail(&g, &format!("typo{i}@x.test"), ip, now).await,
                Ok(()),
                "typo {i}"
            );
            for _ in 0..3 {
                now += 1800 * S;
                let a = g.begin("ok@x.test", ip, now).await.unwrap().unwrap();
                g.succeeded(&a).await;
            }
            now += 1800 * S;
        }
        assert_eq!(g.check("new@x.test", ip, now).await.unwrap(), Ok(()));
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
            assert_eq!(fail(&g, "a@x.test", ip, 0).await, Ok(()));
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
