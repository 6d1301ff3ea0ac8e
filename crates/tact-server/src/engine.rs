//! The engine: the event log, the live projection folded from it, and the policy.
//!
//! Reads (`decide`, `customer`) take a shard's read lock and run the pure core.
//! Writes go through the group-committing [`Log`]; its durable hook folds each new
//! event into the projection before the writer is acknowledged, so an acknowledged
//! event is always visible to the next decision.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use compact_str::CompactString;
use hashbrown::HashTable;
use tact_core::event::{POLICY_KEY, TACT_ID_PREFIX, TACT_SOURCE};
use tact_core::view::{CustomerView, customer_view};
use tact_core::{
    Admission, CustomerState, Decision, Detail, Effect, Event, EventKind, Explain, Policy, Proposal, Reason,
    Retention, Span, Timestamp, Verdict, decide_explained,
};
use tact_log::policies::{PolicyRecord, content_hash, policy_event, policy_history, policy_record};
use tact_log::{
    Appended, DecisionId, GroupCommit, Log, LogError, Projection, ReplayStats, Storage, save_snapshot,
};

use crate::clock::Clock;
use crate::error::ServerError;
use crate::feed::{Access, DeadLetter, Feed, FeedError};

const SHARDS: usize = 64;
// `Shards::with_many` keeps the shards it locks in a `u64`.
const _: () = assert!(SHARDS <= 64);

/// Proposals [`Engine::decide_many`] decides together (best of 16, 64 and 128 in the
/// `core` bench on 1M customers).
pub const CHUNK: usize = 64;

/// How long [`Engine::shutdown`] waits for the final flush and snapshot.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// One shard of the projection: `(customer id, state)` in a hash table whose hashes
/// the engine computes itself (see [`Shards::with_many`]).
///
/// The id is a [`CompactString`]: an id of up to 24 bytes (numeric CRM ids, Salesforce's
/// 18-character ids, `cus_...`) is kept inside the table's entry rather than in an
/// allocation of its own, so confirming a lookup does not wait for one more cache miss,
/// and a customer costs one allocation less. Longer ids (UUIDs) are kept as before.
type Table = HashTable<(CompactString, CustomerState)>;

/// Every customer's state, sharded by customer id for concurrent readers.
struct Shards {
    /// SipHash with a per-process key, as std's `HashMap` uses: customer ids come from
    /// other systems, so collisions must not be something a sender can arrange.
    hasher: RandomState,
    maps: Box<[RwLock<Table>]>,
    /// How much history folding keeps. Read by writers under their shard's write lock
    /// and changed only while every shard's write lock is held (a policy that needs
    /// more history swaps in rebuilt tables and this together, see
    /// [`Engine::reload_policy`]).
    retention: RwLock<Retention>,
}

impl Shards {
    fn new(customers: HashMap<String, CustomerState>, retention: Retention) -> Self {
        let hasher = RandomState::new();
        let maps = Self::tables(&hasher, customers);
        Shards {
            hasher,
            maps: maps.into_iter().map(RwLock::new).collect(),
            retention: RwLock::new(retention),
        }
    }

    fn tables(hasher: &RandomState, customers: HashMap<String, CustomerState>) -> Vec<Table> {
        let mut maps: Vec<Table> = (0..SHARDS).map(|_| Table::new()).collect();
        for (id, state) in customers {
            let hash = hasher.hash_one(id.as_str());
            maps[shard_of_hash(hash)].insert_unique(hash, (CompactString::from(id), state), |(k, _)| {
                hasher.hash_one(k.as_str())
            });
        }
        maps
    }

    fn retention(&self) -> Retention {
        *self.retention.read().unwrap_or_else(|p| p.into_inner())
    }

    fn hash(&self, customer_id: &str) -> u64 {
        self.hasher.hash_one(customer_id)
    }

    fn shard_of(&self, customer_id: &str) -> usize {
        shard_of_hash(self.hash(customer_id))
    }

    /// Folds `event` into its customer's state, creating it for a new customer (tact's
    /// own policy events are not about a customer and are skipped).
    fn apply(&self, event: &Event) {
        if !event.kind.is_customer_event() {
            return;
        }
        let id = event.customer_id.as_str();
        let hash = self.hash(id);
        let mut table = self.maps[shard_of_hash(hash)]
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let retention = self.retention();
        match table.find_mut(hash, |(k, _)| k == id) {
            Some((_, state)) => state.apply(event, retention),
            None => {
                let mut state = CustomerState::new();
                state.apply(event, retention);
                table.insert_unique(hash, (CompactString::new(id), state), |(k, _)| {
                    self.hasher.hash_one(k.as_str())
                });
            }
        }
    }

    fn with<R>(&self, customer_id: &str, f: impl FnOnce(&CustomerState) -> R) -> R {
        let hash = self.hash(customer_id);
        let table = self.maps[shard_of_hash(hash)]
            .read()
            .unwrap_or_else(|p| p.into_inner());
        match table.find(hash, |(k, _)| k == customer_id) {
            Some((_, state)) => f(state),
            None => f(&CustomerState::new()),
        }
    }

    /// Runs `f` on the states of `ids` (in order), looked up and brought into the CPU
    /// cache together so that their cache misses overlap.
    ///
    /// On a large population each lookup misses the cache two times in a row (the
    /// table's control bytes, the bucket), three with an id over 24 bytes (its bytes
    /// are elsewhere, see [`Table`]), and the state once more; one lookup at a time,
    /// the CPU waits for each miss in turn. Here every step is a short loop over the
    /// whole batch whose loads do not depend on each other: the hashes; the first
    /// bucket whose tag matches (reads control bytes only); the buckets and the long
    /// ids' bytes; the real lookups, which now hit the cache; and
    /// [`CustomerState::warm`]. The hint steps never change a result.
    ///
    /// Read locks are taken in shard order, so batches cannot deadlock with each other
    /// or with a writer (which holds one shard).
    fn with_many<R>(&self, ids: &[&str], f: impl FnOnce(&[&CustomerState]) -> R) -> R {
        let empty = CustomerState::new();
        let hashes: Vec<u64> = ids.iter().map(|id| self.hash(id)).collect();
        let shards: Vec<usize> = hashes.iter().map(|h| shard_of_hash(*h)).collect();
        // The shards to lock, as a bit set: taken lowest first, with no sort.
        let mut to_lock = 0u64;
        for s in &shards {
            to_lock |= 1 << s;
        }
        let mut guards: [Option<RwLockReadGuard<'_, Table>>; SHARDS] = std::array::from_fn(|_| None);
        while to_lock != 0 {
            let s = to_lock.trailing_zeros() as usize;
            to_lock &= to_lock - 1;
            guards[s] = Some(self.maps[s].read().unwrap_or_else(|p| p.into_inner()));
        }
        let table = |s: usize| guards[s].as_deref().expect("locked above");
        let likely: Vec<&(CompactString, CustomerState)> = hashes
            .iter()
            .zip(&shards)
            .filter_map(|(h, s)| table(*s).find(*h, |_| true))
            .collect();
        let mut touched = 0usize;
        for (k, _) in &likely {
            touched ^= k.len();
        }
        // Only ids kept outside the entry have bytes elsewhere to bring in.
        for (k, _) in &likely {
            if k.is_heap_allocated() {
                touched ^= usize::from(k.as_bytes().first().copied().unwrap_or(0));
            }
        }
        std::hint::black_box(touched);
        let states: Vec<&CustomerState> = ids
            .iter()
            .zip(hashes.iter().zip(&shards))
            .map(|(id, (h, s))| {
                table(*s)
                    .find(*h, |(k, _)| k == id)
                    .map_or(&empty, |(_, state)| state)
            })
            .collect();
        CustomerState::warm(&states);
        f(&states)
    }

    fn len(&self) -> usize {
        self.maps
            .iter()
            .map(|m| m.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    fn to_map(&self) -> HashMap<String, CustomerState> {
        let mut all = HashMap::with_capacity(self.len());
        for m in self.maps.iter() {
            let m = m.read().unwrap_or_else(|p| p.into_inner());
            all.extend(m.iter().map(|(k, v)| (k.to_string(), v.clone())));
        }
        all
    }
}

/// The shard of a customer id's hash: bits the table itself does not use for a
/// bucket's position (the low bits) or its tag (the top seven).
fn shard_of_hash(hash: u64) -> usize {
    (hash >> 51) as usize % SHARDS
}

/// A decision with what the service adds: its id, the time it was taken for, and
/// the log position it reflects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub decision: Decision,
    pub decision_id: String,
    pub at: Timestamp,
    pub log_position: u64,
    /// The version of the policy this decision was made under (policies can be
    /// swapped while the server runs).
    pub policy_version: Arc<str>,
}

/// Decision ids: `d` and 32 hex digits, the millisecond `now` (12 digits, so the audit
/// finds a record from its id) and 80 random bits from the thread's cryptographically
/// secure generator (see [`DecisionId`]). `Authorize` records its event under
/// `tact-<decision id>`, so an id a caller could guess is an id a caller could claim
/// first: 80 bits in each millisecond are not guessable.
/// The DENY for a customer this instance cannot answer for, saying why.
fn refusal_decision(refused: &Refused) -> Decision {
    let (rule_id, detail) = match refused {
        Refused::NotOwner { .. } => ("not-owner", Detail::NotOwner),
        Refused::NotReady { .. } => ("not-ready", Detail::NotReady),
    };
    Decision {
        verdict: Verdict::Deny,
        not_before: None,
        reasons: vec![Reason {
            rule_id: rule_id.into(),
            effect: Effect::Deny,
            detail,
        }],
        alternatives: Vec::new(),
    }
}

/// How far behind the state may be for a decision at `at`: the feed's lag when it says
/// the partition is stale and `at` falls inside that lag (events from then may be
/// missing), else nothing. The policy's `stale_state` rules decide what that holds back
/// (marketing and sales by default: fail closed).
fn state_lag(access: &Access, at: Timestamp, now: Timestamp) -> Span {
    match access {
        Access::Owned { lag, stale: true, .. } => {
            let lag = Span(lag.as_millis().min(i64::MAX as u128) as i64);
            if at.0 >= now.0.saturating_sub(lag.0) {
                lag
            } else {
                Span(0)
            }
        }
        _ => Span(0),
    }
}

/// The length of a screening's decision id prefix: `d`, the millisecond (12 hex
/// digits) and 48 random bits (12); an item's id adds its index as 8 hex digits.
pub const SCREEN_ID_PREFIX_LEN: usize = 25;

/// Appends `n` as 8 lowercase hex digits.
fn push_hex8(s: &mut String, n: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 8];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((n >> (28 - 4 * i)) & 15) as usize];
    }
    s.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
}

/// What a screening answered as a whole (see [`Engine::screen`]).
#[derive(Clone, Debug)]
pub struct Screened {
    /// Item i's decision id is this and i as 8 lowercase hex digits.
    pub decision_id_prefix: String,
    /// The instant every customer was decided at.
    pub at: Timestamp,
    /// The log position the customers' state reflected (at least).
    pub log_position: u64,
    pub policy_version: Arc<str>,
}

fn decision_id(now: Timestamp) -> String {
    use rand::RngCore;
    // One copy out of the generator's buffer (`rand::random::<[u8; 10]>()` would draw a
    // 32-bit word for each byte).
    let mut random = [0u8; 10];
    rand::rng().fill_bytes(&mut random);
    DecisionId::new(now, random).to_id_string()
}

/// The decision ids of a batch's chunk, made as a screening's are: one random draw
/// for the chunk (`d`, the millisecond and 48 random bits), then each item's index in
/// the batch as 8 hex digits. A batch's decisions change no state and their ids are
/// never event ids (only `Authorize` records one), so this is as good as a draw each,
/// at a fraction of the cost (the draw and the hex were about 4% of a streamed verdict's
/// instructions).
struct ChunkIds {
    prefix: String,
}

impl ChunkIds {
    fn new(now: Timestamp) -> Self {
        let mut prefix = decision_id(now);
        prefix.truncate(SCREEN_ID_PREFIX_LEN);
        ChunkIds { prefix }
    }

    /// The id of item `index` of the batch.
    fn id(&self, index: usize) -> String {
        let mut id = String::with_capacity(SCREEN_ID_PREFIX_LEN + 8);
        id.push_str(&self.prefix);
        push_hex8(&mut id, index as u32);
        id
    }
}

#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub group_commit: GroupCommit,
    pub clock: Arc<dyn Clock>,
    /// The external event stream, if any (Kafka mode): it decides who answers for a
    /// customer and how fresh their state is, and hears of what tact records itself.
    pub feed: Option<Arc<dyn Feed>>,
    /// What events from outside must satisfy to be recorded (checked at the edges:
    /// `RecordEvents`, the Kafka consumer). Its clock skew is also kept as extra history
    /// behind the pruning reference (see [`Retention::with_slack`]).
    pub admission: Admission,
}

/// Why the engine will not answer for a customer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The customer's partition belongs to another instance.
    #[error(
        "not-owner: customer {customer_id} is on partition {partition}, which another tact instance owns"
    )]
    NotOwner { customer_id: String, partition: i32 },
    /// This instance has not caught up with the customer's partition yet.
    #[error("not-ready: {why}")]
    NotReady { why: String },
}

/// Why `authorize` or `record` failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// `Authorize`'s event id already held another event: the authorization was not
    /// recorded, so it must not be acted on.
    #[error("authorization not recorded: event id {event_id} is already taken")]
    Claimed { event_id: String },
}

/// The rule id of the fail-closed DENY on stale state in the default policy (and of
/// the built-in rule a policy without a `stale_state` rule gets).
pub const STALE_STATE_RULE: &str = tact_core::policy::STALE_STATE_RULE;

pub struct Engine {
    /// The policy in force, swapped whole by [`Engine::reload_policy`]. An `ArcSwap`,
    /// not an `RwLock<Arc<Policy>>`: every decision reads it, and `ArcSwap::load` is a
    /// few uncontended atomics on thread-local slots, where a read lock (or cloning
    /// the `Arc`) is a read-modify-write on one cache line shared by every core deciding.
    policy: ArcSwap<Policy>,
    /// Held while a policy is being put in force (one reload at a time, including the
    /// background rebuild of a policy that needs more history).
    reloading: Arc<tokio::sync::Mutex<()>>,
    admission: Admission,
    log: Log,
    shards: Arc<Shards>,
    position: Arc<AtomicU64>,
    /// Authorizations of customers in one shard are serialized, so two racing
    /// callers cannot both take the last slot under a cap.
    authorize_locks: Box<[tokio::sync::Mutex<()>]>,
    clock: Arc<dyn Clock>,
    feed: Option<Arc<dyn Feed>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("policy_version", self.policy.load().version())
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
        let retention = policy.retention().with_slack(opts.admission.max_clock_skew);
        let st = Arc::clone(&storage);
        let (projection, stats) = tokio::task::spawn_blocking(move || Projection::load(&*st, retention))
            .await
            .map_err(|e| ServerError::Join(e.to_string()))??;
        let position = Arc::new(AtomicU64::new(projection.position));
        let shards = Arc::new(Shards::new(projection.customers, retention));
        let hook = {
            let shards = Arc::clone(&shards);
            let position = Arc::clone(&position);
            move |events: &[(u64, &Event)]| {
                for (seq, event) in events {
                    shards.apply(event);
                    position.store(*seq, Ordering::Release);
                }
            }
        };
        let log = Log::open(storage, opts.group_commit, hook);
        let engine = Engine {
            policy: ArcSwap::from_pointee(policy),
            reloading: Arc::new(tokio::sync::Mutex::new(())),
            admission: opts.admission,
            log,
            shards,
            position,
            authorize_locks: (0..SHARDS).map(|_| tokio::sync::Mutex::new(())).collect(),
            clock: opts.clock,
            feed: opts.feed,
        };
        engine.record_policy_at_start().await?;
        Ok((engine, stats))
    }

    /// The policy in force (a decision made a moment later may see another one: each
    /// [`Decided`] says which version it was made under).
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// What events from outside must satisfy (see [`EngineOptions::admission`]).
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// How much history each customer's state keeps (the policy's retention with the
    /// admission's clock skew as slack; after a reload, at least what the longest
    /// policy in force since the start needed).
    pub fn retention(&self) -> Retention {
        self.shards.retention()
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

    /// The log, for feeds that append with their own meta (e.g. Kafka offsets).
    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn feed(&self) -> Option<&Arc<dyn Feed>> {
        self.feed.as_ref()
    }

    /// Who answers for this customer (always this instance without a feed).
    pub fn access(&self, customer_id: &str) -> Access {
        match &self.feed {
            Some(feed) => feed.access(customer_id),
            None => Access::Owned {
                partition: 0,
                lag: std::time::Duration::ZERO,
                stale: false,
            },
        }
    }

    /// A read-only decision, as of `at` (default: now). With a feed, a customer of
    /// another instance is refused, and marketing or sales on stale state is denied.
    pub fn decide(&self, proposal: &Proposal, at: Option<Timestamp>) -> Result<Decided, Refused> {
        self.decide_explained(proposal, at, Explain::Full)
    }

    /// [`decide`](Engine::decide), working out only as much of the explanation as
    /// `explain` asks for (the verdict and `not_before` are the same at every level).
    pub fn decide_explained(
        &self,
        proposal: &Proposal,
        at: Option<Timestamp>,
        explain: Explain,
    ) -> Result<Decided, Refused> {
        let access = self.check_access(&proposal.customer_id)?;
        Ok(self.decide_with(proposal, at, &access, explain))
    }

    /// [`decide`](Engine::decide) on each proposal, answers in order, except that a
    /// customer this instance cannot answer for gets a DENY saying why (one customer of
    /// another instance must not fail a whole batch).
    ///
    /// Campaign screening is the hot path of tact: proposals are decided [`CHUNK`] at a
    /// time, with the chunk's customers looked up and warmed into the CPU cache together
    /// first (see `Shards::with_many`), 1.3-1.6x the rate of single calls on 1M
    /// customers (the `engine` bench).
    pub fn decide_many(&self, proposals: &[(Proposal, Option<Timestamp>)]) -> Vec<Decided> {
        self.decide_many_explained(proposals, |_| Explain::Full)
    }

    /// [`decide_many`](Engine::decide_many) with the explanation each proposal asks
    /// for (`explain(i)` for `proposals[i]`).
    pub fn decide_many_explained(
        &self,
        proposals: &[(Proposal, Option<Timestamp>)],
        explain: impl Fn(usize) -> Explain,
    ) -> Vec<Decided> {
        let mut out = Vec::with_capacity(proposals.len());
        for (c, chunk) in proposals.chunks(CHUNK).enumerate() {
            let ids: Vec<&str> = chunk.iter().map(|(p, _)| p.customer_id.as_str()).collect();
            let now = self.clock.now();
            let log_position = self.position();
            let policy = self.policy.load();
            let chunk_ids = ChunkIds::new(now);
            self.with_chunk(&ids, |i, state| {
                let (proposal, at) = &chunk[i];
                let index = c * CHUNK + i;
                let id = chunk_ids.id(index);
                out.push(match state {
                    Ok((state, access)) => {
                        let explain = explain(index);
                        self.decide_on(
                            &policy,
                            state,
                            proposal,
                            *at,
                            access,
                            now,
                            log_position,
                            explain,
                            id,
                        )
                    }
                    Err(refused) => self.refusal(refused, *at, policy.version(), id),
                });
            });
        }
        out
    }

    /// Runs `f` on each of `ids` (at most a chunk), in order: its position, and its state
    /// with who answers for it, or why this instance cannot answer for it. The owned
    /// customers' states are looked up and warmed together (`Shards::with_many`).
    fn with_chunk(
        &self,
        ids: &[&str],
        mut f: impl FnMut(usize, Result<(&CustomerState, &Access), &Refused>),
    ) {
        let access: Vec<Result<Access, Refused>> = ids.iter().map(|id| self.check_access(id)).collect();
        let owned: Vec<&str> = ids
            .iter()
            .zip(&access)
            .filter(|(_, a)| a.is_ok())
            .map(|(id, _)| *id)
            .collect();
        self.shards.with_many(&owned, |states| {
            let mut states = states.iter();
            for (i, access) in access.iter().enumerate() {
                let state = access
                    .as_ref()
                    .map(|a| (*states.next().expect("one state per owned customer"), a));
                f(i, state);
            }
        });
    }

    /// The DENY a batch gives for a customer this instance cannot answer for.
    fn refusal(
        &self,
        refused: &Refused,
        at: Option<Timestamp>,
        policy_version: &Arc<str>,
        decision_id: String,
    ) -> Decided {
        let now = self.clock.now();
        let at = at.unwrap_or(now);
        Decided {
            decision: refusal_decision(refused),
            decision_id,
            at,
            log_position: self.position(),
            policy_version: Arc::clone(policy_version),
        }
    }

    fn check_access(&self, customer_id: &str) -> Result<Access, Refused> {
        match self.access(customer_id) {
            Access::NotOwner { partition } => Err(Refused::NotOwner {
                customer_id: customer_id.to_owned(),
                partition,
            }),
            Access::NotReady { why, .. } => Err(Refused::NotReady { why }),
            owned => Ok(owned),
        }
    }

    fn decide_with(
        &self,
        proposal: &Proposal,
        at: Option<Timestamp>,
        access: &Access,
        explain: Explain,
    ) -> Decided {
        let now = self.clock.now();
        let log_position = self.position();
        let policy = self.policy.load();
        self.shards.with(&proposal.customer_id, |s| {
            self.decide_on(
                &policy,
                s,
                proposal,
                at,
                access,
                now,
                log_position,
                explain,
                decision_id(now),
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_on(
        &self,
        policy: &Policy,
        state: &CustomerState,
        proposal: &Proposal,
        at: Option<Timestamp>,
        access: &Access,
        now: Timestamp,
        log_position: u64,
        explain: Explain,
        decision_id: String,
    ) -> Decided {
        let at = at.unwrap_or(now);
        let decision = decide_explained(state, policy, proposal, at, state_lag(access, at, now), explain);
        Decided {
            decision,
            decision_id,
            at,
            log_position,
            policy_version: Arc::clone(policy.version()),
        }
    }

    /// Screens an audience: `proposal` (its `customer_id` left empty) for each of
    /// `customers` (their index in the audience and their id), all at one instant (`at`,
    /// default now), at [`Explain::Verdict`]. `each` gets every answer in order, as a
    /// [`Decided`] reused from one call to the next (copy what you keep), with the
    /// proposal as decided (the customer's id in it). A customer this instance cannot
    /// answer for gets a DENY saying why, as in [`decide_many`](Engine::decide_many).
    ///
    /// Item `index`'s decision id is the returned prefix (see [`Screened`]) and `index`
    /// as 8 hex digits: one random draw a call, not one a decision. These ids are
    /// never event ids (only `Authorize` records one), so a caller who could guess
    /// them could claim nothing.
    pub fn screen(
        &self,
        proposal: &mut Proposal,
        at: Option<Timestamp>,
        customers: &[(u32, String)],
        mut each: impl FnMut(u32, &Proposal, &Decided),
    ) -> Screened {
        let now = self.clock.now();
        let at = at.unwrap_or(now);
        let log_position = self.position();
        let policy = self.policy.load();
        let id = ChunkIds::new(now).prefix;
        let screened = Screened {
            decision_id_prefix: id.clone(),
            at,
            log_position,
            policy_version: Arc::clone(policy.version()),
        };
        let mut decided = Decided {
            decision: Decision {
                verdict: Verdict::Deny,
                not_before: None,
                reasons: Vec::new(),
                alternatives: Vec::new(),
            },
            decision_id: id,
            at,
            log_position,
            policy_version: Arc::clone(policy.version()),
        };
        for chunk in customers.chunks(CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|(_, id)| id.as_str()).collect();
            self.with_chunk(&ids, |i, state| {
                let (index, customer) = &chunk[i];
                proposal.customer_id.clone_from(customer);
                decided.decision = match state {
                    Ok((state, access)) => {
                        let lag = state_lag(access, at, now);
                        decide_explained(state, &policy, proposal, at, lag, Explain::Verdict)
                    }
                    Err(refused) => refusal_decision(refused),
                };
                decided.decision_id.truncate(SCREEN_ID_PREFIX_LEN);
                push_hex8(&mut decided.decision_id, *index);
                each(*index, proposal, &decided);
            });
        }
        proposal.customer_id.clear();
        screened
    }

    /// Decides now and, on ALLOW, records an outreach-authorized event before
    /// answering: the authorization counts against caps from that moment. With a
    /// feed, the event is published to the stream first (and recognised as a
    /// duplicate when it comes back).
    pub async fn authorize(&self, proposal: &Proposal) -> Result<Decided, WriteError> {
        self.authorize_explained(proposal, Explain::Full).await
    }

    /// [`authorize`](Engine::authorize), working out only as much of the explanation as
    /// `explain` asks for.
    pub async fn authorize_explained(
        &self,
        proposal: &Proposal,
        explain: Explain,
    ) -> Result<Decided, WriteError> {
        let access = self.check_access(&proposal.customer_id)?;
        let _turn = self.authorize_locks[self.shards.shard_of(&proposal.customer_id)]
            .lock()
            .await;
        let mut decided = self.decide_with(proposal, None, &access, explain);
        if decided.decision.verdict == Verdict::Allow {
            let event = Event {
                event_id: format!("{TACT_ID_PREFIX}{}", decided.decision_id),
                customer_id: proposal.customer_id.clone(),
                occurred_at: decided.at,
                source: TACT_SOURCE.into(),
                kind: EventKind::OutreachAuthorized {
                    decision_id: decided.decision_id.clone(),
                    channel: proposal.channel,
                    purpose: proposal.purpose,
                    campaign: proposal.campaign_id.clone(),
                    requested_by: proposal.requested_by.clone(),
                },
            };
            let event_id = event.event_id.clone();
            let appended = self.record(vec![event]).await?;
            // ALLOW only if this call's authorization is what the log holds: an id taken
            // before (it cannot be guessed, and callers cannot write `tact-` ids, but the
            // log compares anyway) would leave this outreach uncounted. In Kafka mode the
            // event may come back through the consumer before the local append: then the
            // log holds this very event (a duplicate), and that is fine.
            decided.log_position = match appended.first() {
                Some(Appended::Recorded { seq }) | Some(Appended::Duplicate { existing_seq: seq }) => *seq,
                Some(Appended::Taken { existing_seq }) => {
                    tracing::error!(decision_id = %decided.decision_id, seq = existing_seq, "authorization id already taken by another event");
                    return Err(WriteError::Claimed { event_id });
                }
                None => {
                    return Err(WriteError::Log(LogError::Writer(
                        "the append answered no result".into(),
                    )));
                }
            };
            tracing::debug!(decision_id = %decided.decision_id, customer_id = %proposal.customer_id, "outreach authorized");
        }
        Ok(decided)
    }

    /// Appends validated events; answers once they are durable and visible. With a
    /// feed, they are published to the stream first, so every instance (and a rebuild
    /// from the stream) sees them.
    pub async fn record(&self, events: Vec<Event>) -> Result<Vec<Appended>, WriteError> {
        if let Some(feed) = &self.feed {
            feed.publish(&events).await?;
        }
        Ok(self.log.append(events, Vec::new()).await?)
    }

    /// What tact knows about a customer, as of `at` (default: now), with the log
    /// position it reflects and how fresh it is.
    pub fn customer(
        &self,
        customer_id: &str,
        at: Option<Timestamp>,
        timeline_len: usize,
    ) -> (CustomerView, u64, Access) {
        let at = at.unwrap_or_else(|| self.clock.now());
        let position = self.position();
        let access = self.access(customer_id);
        let policy = self.policy.load();
        let view = self
            .shards
            .with(customer_id, |s| customer_view(s, &policy, at, timeline_len));
        (view, position, access)
    }

    /// Dead letters from the feed, oldest first (by partition and offset), at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
        let entries = self
            .log
            .storage()
            .meta_with_prefix_limit(tact_log::DEAD_LETTER_PREFIX, limit)?;
        Ok(entries
            .iter()
            .map(|(key, value)| {
                DeadLetter::decode(value).unwrap_or_else(|e| DeadLetter {
                    topic: String::new(),
                    partition: -1,
                    offset: -1,
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: format!("unreadable dead-letter record: {e}"),
                    payload: value.clone(),
                    recorded_at: 0,
                })
            })
            .collect())
    }

    /// The projection as it stands (a copy).
    pub fn projection(&self) -> Projection {
        let mut p = Projection::new(self.retention());
        // Taken while appends may still land: the position is read first, so the copy
        // covers at least that much; replaying from it again is harmless (idempotent).
        p.position = self.position();
        p.customers = self.shards.to_map();
        p
    }

    /// Why the engine cannot record anything any more: the storage failure that
    /// poisoned the log. Decisions still work (on the state as it was), writes do not.
    pub fn unhealthy(&self) -> Option<Arc<LogError>> {
        self.log.poisoned()
    }

    /// Stops the feed and appends, flushes the log and, if asked, writes a snapshot of
    /// the projection; gives up on the storage after [`DEFAULT_FLUSH_TIMEOUT`]. See
    /// [`shutdown_within`](Engine::shutdown_within).
    pub async fn shutdown(&self, snapshot: bool) -> Result<(), ServerError> {
        self.shutdown_within(snapshot, DEFAULT_FLUSH_TIMEOUT).await
    }

    /// Stops the feed and appends, flushes the log and, if asked, writes a snapshot of
    /// the projection.
    ///
    /// Never waits on a storage that has failed: a poisoned log is neither flushed nor
    /// snapshotted (the error says why), and the final flush plus the snapshot together
    /// get at most `flush_timeout`, after which the storage is abandoned (a hung disk).
    /// An abandoned storage is leaked on purpose: dropping sled flushes again, and that
    /// would hang just the same, so it is left for the process exit to reclaim.
    pub async fn shutdown_within(&self, snapshot: bool, flush_timeout: Duration) -> Result<(), ServerError> {
        if let Some(feed) = &self.feed {
            feed.stop().await;
        }
        let finish = async {
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
        };
        let result = match tokio::time::timeout(flush_timeout, finish).await {
            Ok(result) => result,
            Err(_) => {
                tracing::error!(
                    timeout_ms = flush_timeout.as_millis() as u64,
                    "storage did not finish the final flush in time: stopping without it"
                );
                Err(ServerError::StorageHung {
                    timeout: flush_timeout,
                })
            }
        };
        if let Err(e) = &result
            && (self.log.poisoned().is_some() || matches!(e, ServerError::StorageHung { .. }))
        {
            tracing::warn!(error = %e, "storage failed: skipped the snapshot, leaving the store unclosed");
            std::mem::forget(Arc::clone(self.log.storage()));
        }
        result
    }
}

// ---- Putting a policy in force while the server runs (issue #11, section 3) ----

/// What [`Engine::reload_policy`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The policy in force has the same text: nothing changed, nothing recorded.
    Unchanged { version: Arc<str> },
    /// The new policy is in force from the next decision; its event is in the log.
    Activated {
        previous: Arc<str>,
        record: PolicyRecord,
    },
    /// The new policy needs more history than the state keeps: state is being rebuilt
    /// from the log in the background, and the policy takes effect (and is recorded)
    /// when that is done. Until then the old policy stays in force.
    Rebuilding {
        previous: Arc<str>,
        version: Arc<str>,
        /// History the state keeps now, and what the new policy needs.
        kept: Span,
        needed: Span,
    },
}

/// Why a policy was not put in force (the policy in force stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("a state rebuild for another policy is in progress; reload again once it has taken effect")]
    Busy,
    #[error(
        "version: the policy changed but its version `{version}` did not; give it a new version \
         (decisions and the decision audit name a policy by its version)"
    )]
    SameVersion { version: String },
    #[error("cannot record the policy in the log: {0}")]
    Log(#[from] LogError),
    #[error("rebuilding state for the new policy failed: {0}")]
    Rebuild(String),
}

/// Events folded into rebuilt state before the swap without holding any lock; what is
/// left after that is folded in while every shard is locked.
const REBUILD_CATCH_UP_LEFT: u64 = 4_096;

impl Engine {
    /// At start: record the policy in the log if it is not the last one recorded.
    async fn record_policy_at_start(&self) -> Result<(), ServerError> {
        let storage = Arc::clone(self.log.storage());
        let last = tokio::task::spawn_blocking(move || {
            storage
                .customer_events(POLICY_KEY)
                .map(|events| events.iter().rev().find_map(|(seq, e)| policy_record(*seq, e)))
        })
        .await
        .map_err(|e| ServerError::Join(e.to_string()))??;
        let policy = self.policy.load_full();
        if let Some(last) = &last {
            if last.content_hash == content_hash(policy.text()) {
                return Ok(());
            }
            if last.version == **policy.version() {
                // Refusing to start would stop the service over a name; the log keeps
                // both policies apart by their content hash.
                tracing::error!(
                    version = %last.version,
                    recorded_content_hash = %last.content_hash,
                    "the policy changed but its version did not: decisions and the decision audit \
                     now name two policies alike; give it a new version"
                );
            }
        }
        let record = self.record_policy(&policy).await?;
        tracing::info!(
            version = %record.version,
            content_hash = %record.content_hash,
            seq = record.seq,
            "policy recorded in the log"
        );
        Ok(())
    }

    /// Appends the event recording that `policy` takes effect now (never published to a
    /// feed: it is this instance's own history).
    async fn record_policy(&self, policy: &Policy) -> Result<PolicyRecord, LogError> {
        let event = policy_event(policy, self.clock.now());
        let appended = self.log.append(vec![event.clone()], Vec::new()).await?;
        let seq = match appended.first() {
            // Taken: another policy under this version was recorded first (reload refuses
            // that; a start only warns): the log's record of the version stands.
            Some(
                Appended::Recorded { seq }
                | Appended::Duplicate { existing_seq: seq }
                | Appended::Taken { existing_seq: seq },
            ) => *seq,
            None => return Err(LogError::Writer("the append answered no result".into())),
        };
        Ok(policy_record(seq, &event).expect("a policy event"))
    }

    /// Every policy that took effect, as recorded in the log (oldest first).
    pub async fn policy_history(&self) -> Result<Vec<PolicyRecord>, LogError> {
        let storage = Arc::clone(self.log.storage());
        tokio::task::spawn_blocking(move || policy_history(&*storage))
            .await
            .map_err(|e| LogError::Writer(e.to_string()))?
    }

    /// Puts `policy` in force for the next decision, recording it in the log first (a
    /// policy that cannot be recorded does not take effect).
    ///
    /// A policy whose longest window needs more history than the state keeps cannot
    /// decide on that state: the state is rebuilt from the log with the longer
    /// retention in the background, and the policy is swapped in (with the rebuilt
    /// state) when that is done ([`Reloaded::Rebuilding`]). A policy needing less keeps
    /// the longer history (decisions read only within their policy's windows).
    pub async fn reload_policy(self: &Arc<Self>, policy: Policy) -> Result<Reloaded, ReloadError> {
        let turn = Arc::clone(&self.reloading)
            .try_lock_owned()
            .map_err(|_| ReloadError::Busy)?;
        let current = self.policy.load_full();
        if current.text() == policy.text() {
            return Ok(Reloaded::Unchanged {
                version: Arc::clone(current.version()),
            });
        }
        if current.version() == policy.version() {
            return Err(ReloadError::SameVersion {
                version: policy.version().to_string(),
            });
        }
        let kept = self.retention();
        let needed = policy.retention().with_slack(self.admission.max_clock_skew);
        if needed.window <= kept.window && needed.max_entries <= kept.max_entries {
            let record = self.record_policy(&policy).await?;
            self.policy.store(Arc::new(policy));
            tracing::info!(
                previous = %current.version(),
                version = %record.version,
                content_hash = %record.content_hash,
                seq = record.seq,
                "policy reloaded: in force from the next decision"
            );
            return Ok(Reloaded::Activated {
                previous: Arc::clone(current.version()),
                record,
            });
        }
        let retention = Retention {
            window: needed.window.max(kept.window),
            max_entries: needed.max_entries.max(kept.max_entries),
        };
        let version = Arc::clone(policy.version());
        tracing::info!(
            version = %version,
            kept = %kept.window,
            needed = %needed.window,
            "policy needs more history than the state keeps: rebuilding state from the log in the background"
        );
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let _turn = turn;
            match engine.rebuild_and_swap(policy, retention).await {
                Ok(record) => tracing::info!(
                    version = %record.version,
                    content_hash = %record.content_hash,
                    seq = record.seq,
                    "state rebuilt: policy in force from the next decision"
                ),
                Err(e) => tracing::error!(error = %e, "policy not put in force, keeping the policy in force"),
            }
        });
        Ok(Reloaded::Rebuilding {
            previous: Arc::clone(current.version()),
            version,
            kept: kept.window,
            needed: needed.window,
        })
    }

    /// Rebuilds every customer's state with `retention` from the log, then swaps it in
    /// with `policy`. Folding is idempotent (state is a function of the set of events),
    /// so events the live hook folds again after the swap change nothing.
    async fn rebuild_and_swap(
        &self,
        policy: Policy,
        retention: Retention,
    ) -> Result<PolicyRecord, ReloadError> {
        let storage = Arc::clone(self.log.storage());
        let hasher = self.shards.hasher.clone();
        // Replay and catch up without holding any lock (this is the long part).
        let (tables, position) = tokio::task::spawn_blocking(move || {
            let (mut projection, _) = Projection::rebuild(&*storage, retention)?;
            loop {
                let before = projection.position;
                projection.catch_up(&*storage)?;
                if projection.position - before <= REBUILD_CATCH_UP_LEFT {
                    break;
                }
            }
            let position = projection.position;
            Ok::<_, LogError>((Shards::tables(&hasher, projection.customers), position))
        })
        .await
        .map_err(|e| ReloadError::Rebuild(e.to_string()))??;
        // Record the policy first: if that fails, nothing is swapped.
        let record = self.record_policy(&policy).await?;
        let mut tables = tables;
        // Every shard locked (in order, as batches lock them): the hook waits, so no
        // event is folded with the old retention into the new tables. What the log
        // holds beyond `position` is folded in here; the hook may fold some of it
        // again afterwards, which is harmless.
        let mut guards: Vec<_> = self
            .shards
            .maps
            .iter()
            .map(|m| m.write().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let rest = self.log.storage().read_from(position + 1, usize::MAX);
        let rest = match rest {
            Ok(rest) => rest,
            Err(e) => {
                drop(guards);
                return Err(ReloadError::Log(e));
            }
        };
        for (_, event) in &rest {
            if !event.kind.is_customer_event() {
                continue;
            }
            let id = event.customer_id.as_str();
            let hash = self.shards.hash(id);
            let table = &mut tables[shard_of_hash(hash)];
            match table.find_mut(hash, |(k, _)| k == id) {
                Some((_, state)) => state.apply(event, retention),
                None => {
                    let mut state = CustomerState::new();
                    state.apply(event, retention);
                    table.insert_unique(hash, (CompactString::new(id), state), |(k, _)| {
                        self.shards.hash(k)
                    });
                }
            }
        }
        *self.shards.retention.write().unwrap_or_else(|p| p.into_inner()) = retention;
        for (guard, table) in guards.iter_mut().zip(tables) {
            **guard = table;
        }
        self.policy.store(Arc::new(policy));
        drop(guards);
        Ok(record)
    }
}

// ---- Consent proof (issue #11, section 4) ----

impl Engine {
    /// Proof of the customer's consents and their consent, do-not-contact and
    /// preference history as of `at` (default: now), read from the log (the state
    /// keeps no proofs). Costs a read of the customer's events, streamed through the
    /// fold: memory stays bounded however long the customer's history is.
    pub async fn consent_history(
        &self,
        customer_id: &str,
        at: Option<Timestamp>,
    ) -> Result<tact_core::proof::ConsentHistory, LogError> {
        let at = at.unwrap_or_else(|| self.clock.now());
        let storage = Arc::clone(self.log.storage());
        let id = customer_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut proof = tact_core::proof::ConsentHistoryBuilder::new(at);
            storage.visit_customer_events(&id, &mut |seq, event| {
                proof.push(seq, event);
                Ok(())
            })?;
            Ok(proof.finish())
        })
        .await
        .map_err(|e| LogError::Writer(e.to_string()))?
    }
}

#[cfg(test)]
mod decision_id_tests {
    #[test]
    fn a_screening_id_is_its_prefix_and_the_index_in_8_hex_digits() {
        for n in [0u32, 1, 42, 0xdead_beef, u32::MAX] {
            let mut s = String::from("p");
            super::push_hex8(&mut s, n);
            assert_eq!(s, format!("p{n:08x}"));
        }
    }

    #[test]
    fn a_batch_chunks_ids_are_one_draw_and_the_items_index() {
        let now = tact_core::Timestamp(1_700_000_000_123);
        let (a, b) = (super::ChunkIds::new(now), super::ChunkIds::new(now));
        assert_ne!(a.prefix, b.prefix, "a draw each chunk");
        for (i, id) in [
            (0usize, a.id(0)),
            (65, a.id(65)),
            (4_000_000_000, a.id(4_000_000_000)),
        ] {
            let parsed = tact_log::DecisionId::parse(&id).unwrap_or_else(|| panic!("{id}"));
            assert_eq!(parsed.made_at(), now);
            assert!(id.starts_with(&a.prefix), "{id}");
            assert_eq!(
                u32::from_str_radix(&id[super::SCREEN_ID_PREFIX_LEN..], 16).unwrap() as usize,
                i
            );
        }
        assert_ne!(a.id(1), b.id(1));
    }

    #[test]
    fn decision_ids_are_d_and_32_lowercase_hex_digits() {
        let now = tact_core::Timestamp(1_700_000_000_123);
        let ids: Vec<String> = (0..100).map(|_| super::decision_id(now)).collect();
        for id in &ids {
            assert_eq!(id.len(), 33, "{id}");
            assert!(id.starts_with('d'), "{id}");
            let bits = u128::from_str_radix(&id[1..], 16).unwrap();
            assert_eq!(*id, format!("d{bits:032x}"));
            // The first 12 digits are the millisecond it was made.
            assert_eq!(i64::from_str_radix(&id[1..13], 16).unwrap(), now.0, "{id}");
            assert_eq!(tact_log::DecisionId::parse(id).unwrap().made_at(), now);
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}

#[cfg(test)]
mod shard_tests {
    use super::*;
    use tact_core::{Event, EventKind};

    /// A state with `n` page views, so that every customer's differs.
    fn state_of(id: &str, n: usize) -> CustomerState {
        let mut s = CustomerState::new();
        for j in 0..n {
            s.apply(
                &Event {
                    event_id: format!("{id}-{j}"),
                    customer_id: id.to_owned(),
                    occurred_at: Timestamp(1_700_000_000_000 + j as i64 * 60_000),
                    source: "web".into(),
                    kind: EventKind::PageViewed {
                        url: format!("/p{j}"),
                        category: "blog".into(),
                    },
                },
                Retention::default(),
            );
        }
        s
    }

    /// Ids kept in the entry (up to 24 bytes) and outside it, at and around the
    /// boundary and in several scripts, are each found with their own state, alone and
    /// in a batch; ids that differ only past the boundary are told apart; ids that are
    /// not there get the empty state.
    #[test]
    fn ids_of_every_length_find_their_own_state() {
        let stem = "c".repeat(23);
        let mut ids: Vec<String> = vec![
            "a".into(),
            "bench-00012345".into(),
            "0016g00000ABCDEFGH".into(),
            format!("{stem}x"),
            format!("{stem}xy"),
            format!("{stem}xz"),
            "é".repeat(12),
            "é".repeat(13),
            "123e4567-e89b-12d3-a456-426614174000".into(),
        ];
        ids.push(format!("{}1", "q".repeat(200)));
        let customers: HashMap<String, CustomerState> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), state_of(id, i + 1)))
            .collect();
        let shards = Shards::new(customers.clone(), Retention::default());
        let mut asked: Vec<&str> = ids.iter().map(String::as_str).collect();
        let absent = [format!("{stem}x!"), format!("{}2", "q".repeat(200)), "b".into()];
        asked.extend(absent.iter().map(String::as_str));
        for id in &asked {
            let expected = customers.get(*id).cloned().unwrap_or_default();
            assert!(shards.with(id, |s| *s == expected), "{id}");
        }
        shards.with_many(&asked, |states| {
            for (id, state) in asked.iter().zip(states) {
                let expected = customers.get(*id).cloned().unwrap_or_default();
                assert!(**state == expected, "{id}");
            }
        });
        assert_eq!(shards.to_map(), customers);
    }
}
