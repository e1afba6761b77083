//! Per-credential rate limits: a sustained limit per minute and a burst limit per second,
//! each off when configured as `0`.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::error::ApiError;

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

#[derive(Clone, Default)]
pub struct Limiter {
    per_minute: Option<Arc<Keyed>>,
    per_second: Option<Arc<Keyed>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("per_minute", &self.per_minute.is_some())
            .field("per_second", &self.per_second.is_some())
            .finish()
    }
}

impl Limiter {
    /// `per_minute` requests a minute and `burst` requests a second per credential.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Limiter {
            per_minute: NonZeroU32::new(per_minute)
                .map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n)))),
            per_second: NonZeroU32::new(burst)
                .map(|n| Arc::new(RateLimiter::keyed(Quota::per_second(n)))),
        }
    }

    /// `Err(RateLimited)` with the seconds to wait when the credential is over a limit.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        for limiter in [&self.per_second, &self.per_minute].into_iter().flatten() {
            if let Err(not_until) = limiter.check_key(&key.to_owned()) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return Err(ApiError::RateLimited(secs.max(1)));
            }
        }
        Ok(())
    }

    /// Drops the state of credentials that are back under their limits (called periodically).
    pub fn shrink(&self) {
        for limiter in [&self.per_second, &self.per_minute].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
