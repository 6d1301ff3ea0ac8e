//! How fresh each owned partition's state is: pure bookkeeping, time is an argument.
//!
//! A watchdog *probes* the broker for a partition's high watermark `h`, noting when it
//! asked (`t`). Once the log has applied every offset below `h`, nothing produced before
//! `t` can be missing, so the partition is *fresh as of* `t`; its lag is `now - t`.
//! When the broker goes silent, probes stop succeeding and the lag grows by itself; when
//! the consumer stalls, probes keep succeeding but are never reached, and the lag grows
//! too. Either way decisions turn to `stale-state` once the lag exceeds the limit, and
//! recover as soon as probes are answered and reached again.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Probes kept per partition while the consumer catches up; older ones are dropped,
/// which can only make a partition look staler than it is (the safe direction).
const MAX_PENDING_PROBES: usize = 256;

#[derive(Clone, Debug)]
struct Track {
    /// Next offset to apply: every offset below it is durable in the log.
    position: i64,
    high_watermark: i64,
    assigned_at: Instant,
    /// When `position` last moved.
    progressed_at: Instant,
    fresh_as_of: Option<Instant>,
    /// Probes not reached yet: (asked at, high watermark), both ascending.
    pending: VecDeque<(Instant, i64)>,
}

impl Track {
    fn new(position: i64, now: Instant) -> Self {
        Track {
            position,
            high_watermark: position,
            assigned_at: now,
            progressed_at: now,
            fresh_as_of: None,
            pending: VecDeque::new(),
        }
    }

    fn resolve(&mut self) {
        while let Some(&(asked_at, hw)) = self.pending.front() {
            if self.position < hw {
                break;
            }
            self.pending.pop_front();
            self.fresh_as_of = Some(self.fresh_as_of.map_or(asked_at, |f| f.max(asked_at)));
        }
    }

    fn lag(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fresh_as_of.unwrap_or(self.assigned_at))
    }
}

/// What the tracker says about one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionAccess {
    /// Assigned here and caught up at least once; may be up to `lag` behind.
    Owned { lag: Duration, stale: bool },
    /// Assigned here, not caught up yet since the assignment.
    CatchingUp { since: Duration },
    /// Not assigned here, though this instance has had an assignment.
    NotOwner,
    /// No assignment yet: the group has not settled.
    Unassigned,
}

/// A partition's figures for status reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackStatus {
    pub partition: i32,
    pub position: i64,
    pub high_watermark: i64,
    pub lag: Duration,
    pub ready: bool,
}

/// Positions, probes and freshness of the partitions this instance owns.
#[derive(Clone, Debug)]
pub struct Tracker {
    max_staleness: Duration,
    tracks: BTreeMap<i32, Track>,
    ever_assigned: bool,
    broker_heard: Option<Instant>,
}

impl Tracker {
    pub fn new(max_staleness: Duration) -> Self {
        Tracker {
            max_staleness,
            tracks: BTreeMap::new(),
            ever_assigned: false,
            broker_heard: None,
        }
    }

    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// Partitions were assigned here; `position` is where consumption resumes (the offset
    /// stored in the log, or the partition's start).
    pub fn assign(&mut self, partition: i32, position: i64, now: Instant) {
        self.ever_assigned = true;
        self.tracks.insert(partition, Track::new(position, now));
    }

    pub fn revoke(&mut self, partition: i32) {
        self.tracks.remove(&partition);
    }

    pub fn revoke_all(&mut self) {
        self.tracks.clear();
    }

    pub fn assigned(&self) -> Vec<i32> {
        self.tracks.keys().copied().collect()
    }

    pub fn is_assigned(&self, partition: i32) -> bool {
        self.tracks.contains_key(&partition)
    }

    /// The next offset to apply on `partition`, if assigned here.
    pub fn position(&self, partition: i32) -> Option<i64> {
        self.tracks.get(&partition).map(|t| t.position)
    }

    /// Everything below `next_offset` on `partition` is now durable and applied.
    pub fn applied(&mut self, partition: i32, next_offset: i64, now: Instant) {
        if let Some(t) = self.tracks.get_mut(&partition) {
            if next_offset != t.position {
                t.position = next_offset;
                t.progressed_at = now;
            }
            t.resolve();
        }
    }

    /// The broker said, for a question asked at `asked_at`, that `partition` ends at
    /// `high_watermark`.
    pub fn probed(&mut self, partition: i32, high_watermark: i64, asked_at: Instant) {
        self.heard(asked_at);
        if let Some(t) = self.tracks.get_mut(&partition) {
            t.high_watermark = high_watermark;
            if t.pending.back().is_none_or(|&(_, hw)| hw <= high_watermark) {
                t.pending.push_back((asked_at, high_watermark));
            }
            if t.pending.len() > MAX_PENDING_PROBES {
                t.pending.pop_front();
            }
            t.resolve();
        }
    }

    /// The broker answered something at `at`.
    pub fn heard(&mut self, at: Instant) {
        self.broker_heard = Some(self.broker_heard.map_or(at, |h| h.max(at)));
    }

    pub fn since_broker_heard(&self, now: Instant) -> Option<Duration> {
        self.broker_heard.map(|h| now.saturating_duration_since(h))
    }

    pub fn access(&self, partition: i32, now: Instant) -> PartitionAccess {
        match self.tracks.get(&partition) {
            Some(t) if t.fresh_as_of.is_some() => {
                let lag = t.lag(now);
                PartitionAccess::Owned {
                    lag,
                    stale: lag > self.max_staleness,
                }
            }
            Some(t) => PartitionAccess::CatchingUp {
                since: now.saturating_duration_since(t.assigned_at),
            },
            None if self.ever_assigned => PartitionAccess::NotOwner,
            None => PartitionAccess::Unassigned,
        }
    }

    /// Partitions that have work (`position < high watermark`) but have not moved for
    /// `after`: a consumer that silently stalled.
    pub fn stalled(&self, after: Duration, now: Instant) -> Vec<i32> {
        self.tracks
            .iter()
            .filter(|(_, t)| {
                t.position < t.high_watermark && now.saturating_duration_since(t.progressed_at) > after
            })
            .map(|(&p, _)| p)
            .collect()
    }

    pub fn status(&self, now: Instant) -> Vec<TrackStatus> {
        self.tracks
            .iter()
            .map(|(&partition, t)| TrackStatus {
                partition,
                position: t.position,
                high_watermark: t.high_watermark,
                lag: t.lag(now),
                ready: t.fresh_as_of.is_some(),
            })
            .collect()
    }

    /// True when something is assigned and every assigned partition is caught up and fresh.
    pub fn healthy(&self, now: Instant) -> bool {
        !self.tracks.is_empty()
            && self
                .tracks
                .values()
                .all(|t| t.fresh_as_of.is_some() && t.lag(now) <= self.max_staleness)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MAX: Duration = Duration::from_secs(5);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn unassigned_then_not_owner() {
        let now = Instant::now();
        let mut t = Tracker::new(MAX);
        assert_eq!(t.access(0, now), PartitionAccess::Unassigned);
        t.assign(1, 0, now);
        assert_eq!(t.access(0, now), PartitionAccess::NotOwner);
        assert_eq!(t.access(1, now), PartitionAccess::CatchingUp { since: ms(0) });
        t.revoke(1);
        assert_eq!(t.access(1, now), PartitionAccess::NotOwner);
    }

    #[test]
    fn ready_once_a_probe_is_reached() {
        let t0 = Instant::now();
        let mut t = Tracker::new(MAX);
        t.assign(0, 10, t0);
        t.probed(0, 100, t0 + ms(10));
        assert!(matches!(
            t.access(0, t0 + ms(20)),
            PartitionAccess::CatchingUp { .. }
        ));
        t.applied(0, 60, t0 + ms(30));
        assert!(matches!(
            t.access(0, t0 + ms(30)),
            PartitionAccess::CatchingUp { .. }
        ));
        t.applied(0, 100, t0 + ms(40));
        assert_eq!(
            t.access(0, t0 + ms(50)),
            PartitionAccess::Owned {
                lag: ms(40),
                stale: false
            }
        );
        assert!(t.healthy(t0 + ms(50)));
    }

    #[test]
    fn an_empty_partition_is_ready_at_the_first_answer() {
        let t0 = Instant::now();
        let mut t = Tracker::new(MAX);
        t.assign(3, 0, t0);
        t.probed(3, 0, t0 + ms(5));
        assert_eq!(
            t.access(3, t0 + ms(5)),
            PartitionAccess::Owned {
                lag: ms(0),
                stale: false
            }
        );
    }

    #[test]
    fn silence_turns_stale_and_an_answer_recovers() {
        let t0 = Instant::now();
        let mut t = Tracker::new(MAX);
        t.assign(0, 0, t0);
        t.probed(0, 0, t0);
        // The broker stops answering: no probes for 6 s.
        assert!(matches!(
            t.access(0, t0 + ms(4_900)),
            PartitionAccess::Owned { stale: false, .. }
        ));
        assert!(matches!(
            t.access(0, t0 + ms(5_100)),
            PartitionAccess::Owned { stale: true, .. }
        ));
        assert!(!t.healthy(t0 + ms(5_100)));
        assert_eq!(t.since_broker_heard(t0 + ms(6_000)), Some(ms(6_000)));
        // It answers again, with 50 new messages, which are then applied.
        t.probed(0, 50, t0 + ms(6_000));
        assert!(matches!(
            t.access(0, t0 + ms(6_001)),
            PartitionAccess::Owned { stale: true, .. }
        ));
        t.applied(0, 50, t0 + ms(6_010));
        assert_eq!(
            t.access(0, t0 + ms(6_010)),
            PartitionAccess::Owned {
                lag: ms(10),
                stale: false
            }
        );
    }

    #[test]
    fn a_stalled_consumer_turns_stale_and_is_reported() {
        let t0 = Instant::now();
        let mut t = Tracker::new(MAX);
        t.assign(0, 0, t0);
        t.probed(0, 0, t0);
        // Messages arrive, the broker keeps answering, the consumer does nothing.
        for i in 1..=60u64 {
            t.probed(0, i as i64 * 10, t0 + ms(i * 100));
        }
        assert!(matches!(
            t.access(0, t0 + ms(6_000)),
            PartitionAccess::Owned { stale: true, .. }
        ));
        assert_eq!(t.stalled(ms(5_000), t0 + ms(6_000)), vec![0]);
        t.applied(0, 600, t0 + ms(6_050));
        assert!(t.stalled(ms(5_000), t0 + ms(6_050)).is_empty());
        assert!(matches!(
            t.access(0, t0 + ms(6_050)),
            PartitionAccess::Owned { stale: false, .. }
        ));
    }

    proptest! {
        /// The lag is exactly the age of the freshest probe whose watermark the position
        /// has reached: never optimistic, and not needlessly pessimistic.
        #[test]
        fn lag_is_never_optimistic(
            steps in prop::collection::vec((0u64..200, 0i64..50, any::<bool>()), 1..80),
        ) {
            let t0 = Instant::now();
            let mut t = Tracker::new(MAX);
            t.assign(0, 0, t0);
            let mut now = t0;
            let mut hw = 0i64;
            let mut pos = 0i64;
            let mut probes: Vec<(Instant, i64)> = Vec::new();
            for (dt, grow, is_probe) in steps {
                now += ms(dt);
                if is_probe {
                    hw += grow;
                    t.probed(0, hw, now);
                    probes.push((now, hw));
                } else {
                    pos = (pos + grow).min(hw);
                    t.applied(0, pos, now);
                }
                // The freshest probe whose watermark is reached bounds the lag from below.
                let best = probes.iter().filter(|(_, h)| *h <= pos).map(|(at, _)| *at).max();
                match (t.access(0, now), best) {
                    (PartitionAccess::Owned { lag, .. }, Some(at)) => {
                        prop_assert_eq!(lag, now.saturating_duration_since(at));
                    }
                    (PartitionAccess::CatchingUp { .. }, None) => {}
                    (PartitionAccess::Owned { .. }, None) => prop_assert!(false, "fresh without a reached probe"),
                    (PartitionAccess::CatchingUp { .. }, Some(_)) => {
                        // Only when that probe was dropped for space (never with < 256 probes).
                        prop_assert!(probes.len() > MAX_PENDING_PROBES);
                    }
                    (other, _) => prop_assert!(false, "unexpected {other:?}"),
                }
            }
        }
    }
}
