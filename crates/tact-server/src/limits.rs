//! Per-client rate limits with `governor`: decisions per second and events per second,
//! each a token bucket of the client's own quota, keyed by client id. Over the limit:
//! `RESOURCE_EXHAUSTED` with a `retry-after` metadata entry (milliseconds), before any
//! work is done.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tonic::Status;

use crate::auth::{Caller, RateLimits};

/// What a call spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cost {
    Decisions(u32),
    Events(u32),
}

impl Cost {
    fn kind(self) -> &'static str {
        match self {
            Cost::Decisions(_) => "decisions",
            Cost::Events(_) => "events",
        }
    }
}

#[derive(Debug)]
struct Buckets {
    limits: RateLimits,
    decisions: Option<Arc<DefaultDirectRateLimiter>>,
    events: Option<Arc<DefaultDirectRateLimiter>>,
}

fn bucket(per_second: Option<u32>, burst: Option<u32>) -> Option<Arc<DefaultDirectRateLimiter>> {
    let rate = NonZeroU32::new(per_second?)?;
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
    Some(Arc::new(RateLimiter::direct(
        Quota::per_second(rate).allow_burst(burst),
    )))
}

/// The rate limiters of every client seen, created on a client's first call (and again
/// when a reloaded clients file changed its limits).
#[derive(Debug, Default)]
pub struct RateLimiters {
    clients: Mutex<HashMap<Arc<str>, Buckets>>,
}

impl RateLimiters {
    fn limiter(&self, caller: &Caller, decisions: bool) -> Option<Arc<DefaultDirectRateLimiter>> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let entry = clients
            .entry(Arc::clone(&caller.id))
            .and_modify(|b| {
                if b.limits != caller.limits {
                    *b = Buckets::new(caller.limits);
                }
            })
            .or_insert_with(|| Buckets::new(caller.limits));
        if decisions {
            entry.decisions.clone()
        } else {
            entry.events.clone()
        }
    }

    /// Spends `cost` from the caller's bucket, or says when to retry.
    pub fn charge(&self, caller: &Caller, cost: Cost) -> Result<(), Status> {
        let (n, limited) = match cost {
            Cost::Decisions(n) => (n, caller.limits.decisions_per_second.is_some()),
            Cost::Events(n) => (n, caller.limits.events_per_second.is_some()),
        };
        if !limited {
            return Ok(());
        }
        let limiter = self.limiter(caller, matches!(cost, Cost::Decisions(_)));
        let (Some(limiter), Some(n)) = (limiter, NonZeroU32::new(n)) else {
            return Ok(());
        };
        let refused = match limiter.check_n(n) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let ms = wait.as_millis().max(1);
                let mut status = Status::resource_exhausted(format!(
                    "client `{}` is over its {} rate: retry in {ms} ms",
                    caller.id,
                    cost.kind()
                ));
                if let Ok(v) = ms.to_string().parse() {
                    status.metadata_mut().insert("retry-after", v);
                }
                status
            }
            Err(e) => Status::resource_exhausted(format!(
                "client `{}`: {n} {} in one call is more than its burst allows ({e}); split the call",
                caller.id,
                cost.kind()
            )),
        };
        metrics::counter!("tact_rate_limited_total", "client" => caller.id.to_string(), "kind" => cost.kind())
            .increment(1);
        tracing::debug!(client = %caller.id, kind = cost.kind(), n = n.get(), "rate limited");
        Err(refused)
    }

    /// Waits until the caller may spend one decision (streams are paced, not refused).
    pub async fn pace_decision(&self, caller: &Caller) {
        if let Some(limiter) = self.limiter(caller, true) {
            limiter.until_ready().await;
        }
    }
}

impl Buckets {
    fn new(limits: RateLimits) -> Buckets {
        Buckets {
            limits,
            decisions: bucket(limits.decisions_per_second, limits.burst),
            events: bucket(limits.events_per_second, limits.burst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scopes;

    fn caller(id: &str, decisions: Option<u32>, burst: Option<u32>) -> Caller {
        Caller {
            id: id.into(),
            scopes: Scopes::all(),
            limits: RateLimits {
                decisions_per_second: decisions,
                events_per_second: None,
                burst,
            },
            authenticated: true,
        }
    }

    #[test]
    fn a_client_over_its_rate_is_told_when_to_retry_and_others_are_not_affected() {
        let limiters = RateLimiters::default();
        let slow = caller("slow", Some(1), Some(3));
        limiters.charge(&slow, Cost::Decisions(3)).unwrap();
        let refused = limiters.charge(&slow, Cost::Decisions(1)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let ms: u64 = refused
            .metadata()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=1000).contains(&ms), "{ms}");
        // Events have no limit; another client has its own bucket.
        limiters.charge(&slow, Cost::Events(1_000_000)).unwrap();
        limiters
            .charge(&caller("other", Some(1), Some(3)), Cost::Decisions(3))
            .unwrap();
        limiters
            .charge(&caller("free", None, None), Cost::Decisions(u32::MAX))
            .unwrap();
    }

    #[test]
    fn a_batch_over_the_burst_is_refused_without_retry_after() {
        let limiters = RateLimiters::default();
        let refused = limiters
            .charge(&caller("c", Some(10), Some(10)), Cost::Decisions(11))
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.metadata().get("retry-after").is_none());
        assert!(refused.message().contains("split"), "{}", refused.message());
    }

    #[test]
    fn new_limits_replace_the_bucket() {
        let limiters = RateLimiters::default();
        limiters
            .charge(&caller("c", Some(1), Some(1)), Cost::Decisions(1))
            .unwrap();
        assert!(
            limiters
                .charge(&caller("c", Some(1), Some(1)), Cost::Decisions(1))
                .is_err()
        );
        limiters
            .charge(&caller("c", Some(100), Some(100)), Cost::Decisions(1))
            .unwrap();
    }
}
