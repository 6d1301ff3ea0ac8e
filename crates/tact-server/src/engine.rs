//! The engine: the event log, the live projection folded from it, and the policy.
//!
//! Reads (`decide`, `customer`) take a shard's read lock and run the pure core.
//! Writes go through the group-committing [`Log`]; its durable hook folds each new
//! event into the projection before the writer is acknowledged, so an acknowledged
//! event is always visible to the next decision.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tact_core::state::id_hash;
use tact_core::view::{CustomerView, customer_view};
use tact_core::{
    CustomerState, Decision, Event, EventKind, Policy, Proposal, Retention, Timestamp, Verdict, decide,
};
use tact_log::{Appended, GroupCommit, Log, LogError, Projection, ReplayStats, Storage, save_snapshot};

use crate::clock::Clock;
use crate::error::ServerError;

const SHARDS: usize = 64;

/// Every customer's state, sharded by customer id for concurrent readers.
struct Shards {
    maps: Box<[RwLock<HashMap<String, CustomerState>>]>,
}

impl Shards {
    fn new(customers: HashMap<String, CustomerState>) -> Self {
        let mut maps: Vec<HashMap<String, CustomerState>> = (0..SHARDS).map(|_| HashMap::new()).collect();
        for (id, state) in customers {
            maps[shard_of(&id)].insert(id, state);
        }
        Shards {
            maps: maps.into_iter().map(RwLock::new).collect(),
        }
    }

    fn apply(&self, event: &Event, retention: Retention) {
        let mut map = self.maps[shard_of(&event.customer_id)]
            .write()
            .unwrap_or_else(|p| p.into_inner());
        tact_log::fold(&mut map, event, retention);
    }

    fn with<R>(&self, customer_id: &str, f: impl FnOnce(&CustomerState) -> R) -> R {
        let map = self.maps[shard_of(customer_id)]
            .read()
            .unwrap_or_else(|p| p.into_inner());
        match map.get(customer_id) {
            Some(state) => f(state),
            None => f(&CustomerState::new()),
        }
    }

    fn len(&self) -> usize {
        self.maps
            .iter()
            .map(|m| m.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    fn to_map(&self) -> HashMap<String, CustomerState> {
        let mut all = HashMap::new();
        for m in self.maps.iter() {
            let m = m.read().unwrap_or_else(|p| p.into_inner());
            all.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        all
    }
}

fn shard_of(customer_id: &str) -> usize {
    (id_hash(customer_id) >> 7) as usize % SHARDS
}

/// A decision with what the service adds: its id, the time it was taken for, and
/// the log position it reflects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub decision: Decision,
    pub decision_id: String,
    pub at: Timestamp,
    pub log_position: u64,
}

/// Unique decision ids: a per-process prefix (start time, pid) and a counter.
struct DecisionIds {
    prefix: String,
    next: AtomicU64,
}

impl DecisionIds {
    fn new(now: Timestamp) -> Self {
        DecisionIds {
            prefix: format!("d{:x}{:x}", now.0, std::process::id()),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        format!("{}-{:x}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub group_commit: GroupCommit,
    pub clock: Arc<dyn Clock>,
}

pub struct Engine {
    policy: Arc<Policy>,
    log: Log,
    shards: Arc<Shards>,
    position: Arc<AtomicU64>,
    /// Authorizations of customers in one shard are serialized, so two racing
    /// callers cannot both take the last slot under a cap.
    authorize_locks: Box<[tokio::sync::Mutex<()>]>,
    clock: Arc<dyn Clock>,
    ids: DecisionIds,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("policy_version", &self.policy.version)
            .field("position", &self.position.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Rebuilds the projection (from a snapshot if a good one exists, then the log)
    /// and opens the log for appends. Must run inside a tokio runtime.
    pub async fn open(
        storage: Arc<dyn Storage>,
        policy: Policy,
        opts: EngineOptions,
    ) -> Result<(Engine, ReplayStats), ServerError> {
        let retention = policy.retention();
        let st = Arc::clone(&storage);
        let (projection, stats) = tokio::task::spawn_blocking(move || Projection::load(&*st, retention))
            .await
            .map_err(|e| ServerError::Join(e.to_string()))??;
        let position = Arc::new(AtomicU64::new(projection.position));
        let shards = Arc::new(Shards::new(projection.customers));
        let hook = {
            let shards = Arc::clone(&shards);
            let position = Arc::clone(&position);
            move |events: &[(u64, &Event)]| {
                for (seq, event) in events {
                    shards.apply(event, retention);
                    position.store(*seq, Ordering::Release);
                }
            }
        };
        let log = Log::open(storage, opts.group_commit, hook);
        let engine = Engine {
            policy: Arc::new(policy),
            log,
            shards,
            position,
            authorize_locks: (0..SHARDS).map(|_| tokio::sync::Mutex::new(())).collect(),
            ids: DecisionIds::new(opts.clock.now()),
            clock: opts.clock,
        };
        Ok((engine, stats))
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The last log position folded into the projection.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    pub fn customers(&self) -> usize {
        self.shards.len()
    }

    /// A read-only decision, as of `at` (default: now).
    pub fn decide(&self, proposal: &Proposal, at: Option<Timestamp>) -> Decided {
        let at = at.unwrap_or_else(|| self.clock.now());
        let log_position = self.position();
        let decision = self
            .shards
            .with(&proposal.customer_id, |s| decide(s, &self.policy, proposal, at));
        Decided {
            decision,
            decision_id: self.ids.next(),
            at,
            log_position,
        }
    }

    /// Decides now and, on ALLOW, records an outreach-authorized event before
    /// answering: the authorization counts against caps from that moment.
    pub async fn authorize(&self, proposal: &Proposal) -> Result<Decided, LogError> {
        let _turn = self.authorize_locks[shard_of(&proposal.customer_id)].lock().await;
        let mut decided = self.decide(proposal, None);
        if decided.decision.verdict == Verdict::Allow {
            let event = Event {
                event_id: format!("tact-{}", decided.decision_id),
                customer_id: proposal.customer_id.clone(),
                occurred_at: decided.at,
                source: "tact".into(),
                kind: EventKind::OutreachAuthorized {
                    decision_id: decided.decision_id.clone(),
                    channel: proposal.channel,
                    purpose: proposal.purpose,
                    campaign: proposal.campaign_id.clone(),
                    requested_by: proposal.requested_by.clone(),
                },
            };
            let appended = self.log.append(vec![event], Vec::new()).await?;
            if let Some(a) = appended.first() {
                decided.log_position = a.seq();
            }
            tracing::debug!(decision_id = %decided.decision_id, customer_id = %proposal.customer_id, "outreach authorized");
        }
        Ok(decided)
    }

    /// Appends validated events; answers once they are durable and visible.
    pub async fn record(&self, events: Vec<Event>) -> Result<Vec<Appended>, LogError> {
        self.log.append(events, Vec::new()).await
    }

    /// What tact knows about a customer, as of `at` (default: now).
    pub fn customer(
        &self,
        customer_id: &str,
        at: Option<Timestamp>,
        timeline_len: usize,
    ) -> (CustomerView, u64) {
        let at = at.unwrap_or_else(|| self.clock.now());
        let position = self.position();
        let view = self
            .shards
            .with(customer_id, |s| customer_view(s, &self.policy, at, timeline_len));
        (view, position)
    }

    /// The projection as it stands (a copy).
    pub fn projection(&self) -> Projection {
        let mut p = Projection::new(self.policy.retention());
        // Taken while appends may still land: the position is read first, so the copy
        // covers at least that much; replaying from it again is harmless (idempotent).
        p.position = self.position();
        p.customers = self.shards.to_map();
        p
    }

    /// Stops appends, flushes the log and, if asked, writes a snapshot of the projection.
    pub async fn shutdown(&self, snapshot: bool) -> Result<(), ServerError> {
        self.log.shutdown().await?;
        if snapshot {
            let projection = self.projection();
            let storage = Arc::clone(self.log.storage());
            let bytes = tokio::task::spawn_blocking(move || save_snapshot(&*storage, &projection))
                .await
                .map_err(|e| ServerError::Join(e.to_string()))??;
            tracing::info!(bytes, position = self.position(), "snapshot written");
        }
        Ok(())
    }
}
