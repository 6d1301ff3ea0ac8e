//! The service's Prometheus meters, as handles registered once with the global
//! recorder (at first use, after `tact serve` has installed it) instead of a key built,
//! hashed and looked up on every call: a unary `Decide` used to spend more on its
//! counters (a label `String` per rule, two hash maps, a registry lookup per metric)
//! than on deciding.
//!
//! - `tact_requests_total{method,code}` and `tact_request_duration_seconds{method}`:
//!   [`Method`], one `static` per gRPC method; a call that did not end `ok` takes the
//!   registry's slow path (rare, and its code is one of many);
//! - `tact_decisions_total{verdict}` and `tact_decision_rules_total{verdict,rule}`:
//!   [`count_verdicts`] and [`count_rules`]. Rule ids come from the loaded policy (and
//!   the engine's few built-in ids), never from a client, so the cache is bounded by
//!   the policies loaded in the process's life, and is hashed with FxHash rather than
//!   SipHash: nobody outside can choose its keys to collide.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use tact_proto::pb;

/// A gRPC method's request counter (code `ok`) and latency histogram.
#[derive(Debug)]
pub(crate) struct Method {
    name: &'static str,
    ok: OnceLock<Counter>,
    duration: OnceLock<Histogram>,
}

impl Method {
    pub(crate) const fn new(name: &'static str) -> Method {
        Method {
            name,
            ok: OnceLock::new(),
            duration: OnceLock::new(),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// One call, ended with `code` (its metrics label) after `elapsed`.
    pub(crate) fn observe(&self, code: &'static str, elapsed: Duration) {
        if code == "ok" {
            self.ok
                .get_or_init(
                    || metrics::counter!("tact_requests_total", "method" => self.name, "code" => "ok"),
                )
                .increment(1);
        } else {
            metrics::counter!("tact_requests_total", "method" => self.name, "code" => code).increment(1);
        }
        self.duration
            .get_or_init(|| metrics::histogram!("tact_request_duration_seconds", "method" => self.name))
            .record(elapsed.as_secs_f64());
    }
}

/// Verdict labels, by slot ([`verdict_slot`]); slot 0 is never counted.
const VERDICTS: [&str; 4] = ["unspecified", "allow", "deny", "defer"];

/// The slot of a wire verdict in [`VERDICTS`], if it is a decision's (an item that
/// was not valid, answered `VERDICT_UNSPECIFIED`, is not a decision).
pub(crate) fn verdict_slot(verdict: i32) -> Option<usize> {
    match pb::Verdict::try_from(verdict) {
        Ok(pb::Verdict::Allow) => Some(1),
        Ok(pb::Verdict::Deny) => Some(2),
        Ok(pb::Verdict::Defer) => Some(3),
        _ => None,
    }
}

/// A wire verdict's label (in metrics and logs).
pub(crate) fn verdict_label(verdict: i32) -> &'static str {
    verdict_slot(verdict).map_or(VERDICTS[0], |slot| VERDICTS[slot])
}

/// `tact_decisions_total{verdict}` += `n` for each slot of `counts` (by [`verdict_slot`]).
pub(crate) fn count_verdicts(counts: &[u64; 4]) {
    static COUNTERS: [OnceLock<Counter>; 4] = [const { OnceLock::new() }; 4];
    for slot in 1..VERDICTS.len() {
        if counts[slot] > 0 {
            COUNTERS[slot]
                .get_or_init(|| metrics::counter!("tact_decisions_total", "verdict" => VERDICTS[slot]))
                .increment(counts[slot]);
        }
    }
}

/// One verdict's `tact_decision_rules_total` counters, by rule id.
type RuleCounters = RwLock<HashMap<Box<str>, Counter, rustc_hash::FxBuildHasher>>;

/// `tact_decision_rules_total{verdict,rule}` += `n`.
pub(crate) fn count_rules(slot: usize, rule: &str, n: u64) {
    static RULES: [OnceLock<RuleCounters>; 4] = [const { OnceLock::new() }; 4];
    let Some(cache) = RULES.get(slot) else {
        return;
    };
    let cache = cache.get_or_init(RwLock::default);
    if let Some(counter) = cache.read().unwrap_or_else(|p| p.into_inner()).get(rule) {
        counter.increment(n);
        return;
    }
    cache
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(rule.into())
        .or_insert_with(|| {
            metrics::counter!(
                "tact_decision_rules_total",
                "verdict" => VERDICTS[slot],
                "rule" => rule.to_owned()
            )
        })
        .increment(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_decisions_verdicts_have_a_slot_and_it_names_them() {
        assert_eq!(verdict_slot(pb::Verdict::Unspecified as i32), None);
        assert_eq!(verdict_slot(-1), None);
        assert_eq!(verdict_slot(99), None);
        assert_eq!(verdict_label(0), "unspecified");
        for (verdict, label) in [
            (pb::Verdict::Allow, "allow"),
            (pb::Verdict::Deny, "deny"),
            (pb::Verdict::Defer, "defer"),
        ] {
            assert_eq!(verdict_slot(verdict as i32).map(|s| VERDICTS[s]), Some(label));
            assert_eq!(verdict_label(verdict as i32), label);
        }
    }
}
