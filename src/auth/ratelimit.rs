//! Token-bucket rate limits, kept in memory per (limit, key).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::{
    config::RateLimit,
    error::{Error, Result},
};

#[derive(Debug)]
pub struct RateLimiter {
    enabled: bool,
    buckets: Mutex<HashMap<(&'static str, String), Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from the bucket `(name, key)`, or says how long to wait.
    pub fn check(&self, name: &'static str, key: &str, limit: RateLimit) -> Result<()> {
        self.check_cost(name, key, limit, 1.0)
    }

    /// Takes `cost` tokens at once (e.g. one per phone number looked up), or
    /// says how long to wait until that many are there. A cost above the
    /// burst is refused with the time a full bucket takes.
    pub fn check_cost(
        &self,
        name: &'static str,
        key: &str,
        limit: RateLimit,
        cost: f64,
    ) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget buckets that have refilled completely; they hold no state.
            buckets.retain(|_, b| {
                (now - b.last).as_secs_f64() * limit.per_second < limit.burst as f64
            });
        }
        let bucket = buckets.entry((name, key.to_owned())).or_insert(Bucket {
            tokens: limit.burst as f64,
            last: now,
        });
        let refilled = (now - bucket.last).as_secs_f64() * limit.per_second;
        bucket.tokens = (bucket.tokens + refilled).min(limit.burst as f64);
        bucket.last = now;
        let cost = cost.min(limit.burst as f64);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            let wait = (cost - bucket.tokens) / limit.per_second;
            Err(Error::limit_exceeded(Duration::from_secs_f64(wait)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_per_key() {
        let rl = RateLimiter::new(true);
        let limit = RateLimit {
            per_second: 0.5,
            burst: 2,
        };
        rl.check("login", "1.2.3.4", limit).unwrap();
        rl.check("login", "1.2.3.4", limit).unwrap();
        let err = rl.check("login", "1.2.3.4", limit).unwrap_err();
        assert!(matches!(
            err.kind(),
            ruma::api::error::ErrorKind::LimitExceeded(_)
        ));
        rl.check("login", "5.6.7.8", limit).unwrap();
        assert!(
            RateLimiter::new(false)
                .check(
                    "login",
                    "x",
                    RateLimit {
                        per_second: 0.001,
                        burst: 1
                    }
                )
                .is_ok()
        );
    }
}
