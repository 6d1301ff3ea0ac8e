//! Backtests on the real log: what a policy change would have done to the outreach the
//! log holds (`tact backtest`). Every recorded outreach is re-decided as of the instant
//! it occurred, on the customer's state just before it, under a baseline and a
//! candidate policy (see `tact_core::backtest` for what "as it happened" assumes), and
//! the differences are counted, broken down and explained.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tact_core::backtest::{Period, Reading, Redecided, backtest_customer_as, retention_for};
use tact_core::{Decision, Effect, Event, Policy, Span, Verdict};

use crate::error::LogError;
use crate::storage::Storage;

/// Changed decisions shown in full.
const SAMPLE: usize = 20;
/// Events read from the log at a time.
const READ_BATCH: usize = 65_536;

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    pub allow: u64,
    pub deny: u64,
    pub defer: u64,
}

impl Counts {
    fn add(&mut self, v: Verdict) {
        match v {
            Verdict::Allow => self.allow += 1,
            Verdict::Deny => self.deny += 1,
            Verdict::Defer => self.defer += 1,
        }
    }
}

/// One kind of change (e.g. ALLOW -> DENY), broken down.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Transition {
    pub count: u64,
    /// The rules that decided the changed answer (the candidate's, unless it allows).
    pub by_rule: BTreeMap<String, u64>,
    /// `channel/purpose`.
    pub by_channel_purpose: BTreeMap<String, u64>,
    pub by_campaign: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Side {
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// `rule-id [EFFECT]: sentence`.
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    pub customer_id: String,
    pub event_id: String,
    pub occurred_at: String,
    pub channel: String,
    pub purpose: String,
    pub campaign: String,
    pub baseline: Side,
    pub candidate: Side,
}

/// How far a backtest is ([`run_backtest_with`] reports it as it goes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// `"reading"` (the log) or `"deciding"`.
    pub phase: &'static str,
    pub events_read: u64,
    /// Events in the log when the backtest started.
    pub events_total: u64,
    pub customers_done: u64,
    pub customers_total: u64,
}

/// Customers decided between two progress reports.
const PROGRESS_CUSTOMERS: usize = 1_024;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// How history was read: `as_happened` or `counterfactual`.
    pub reading: Reading,
    pub baseline_policy: String,
    pub candidate_policy: String,
    /// Events read from the log (and folded), customers they belong to.
    pub events: u64,
    pub customers: u64,
    /// Outreach re-decided.
    pub outreach: u64,
    pub baseline: Counts,
    pub candidate: Counts,
    /// Outreach whose verdict differs.
    pub changed: u64,
    pub customers_affected: u64,
    /// `BASELINE->CANDIDATE`, e.g. `ALLOW->DENY`.
    pub transitions: BTreeMap<String, Transition>,
    pub sample: Vec<Change>,
    pub elapsed_ms: u64,
    pub events_per_sec: f64,
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "ALLOW",
        Verdict::Deny => "DENY",
        Verdict::Defer => "DEFER",
    }
}

/// The rules that decided: those whose effect is the verdict.
fn deciding_rules(d: &Decision) -> impl Iterator<Item = &str> {
    let effect = match d.verdict {
        Verdict::Allow => Effect::Allow,
        Verdict::Deny => Effect::Deny,
        Verdict::Defer => Effect::Defer,
    };
    d.reasons
        .iter()
        .filter(move |r| r.effect == effect)
        .map(|r| &*r.rule_id)
}

fn side(d: &Decision) -> Side {
    Side {
        verdict: verdict_name(d.verdict).to_owned(),
        not_before: d.not_before.map(|t| t.to_string()),
        reasons: d
            .reasons
            .iter()
            .map(|r| {
                let effect = match r.effect {
                    Effect::Allow => "ALLOW",
                    Effect::Deny => "DENY",
                    Effect::Defer => "DEFER",
                };
                format!("{} [{effect}]: {}", r.rule_id, r.message())
            })
            .collect(),
    }
}

impl Report {
    /// Counts one re-decided outreach.
    pub fn add(&mut self, r: &Redecided<'_>, affected: &mut HashSet<String>) {
        self.outreach += 1;
        self.baseline.add(r.baseline.verdict);
        self.candidate.add(r.candidate.verdict);
        if r.baseline.verdict == r.candidate.verdict {
            return;
        }
        self.changed += 1;
        affected.insert(r.proposal.customer_id.clone());
        let key = format!(
            "{}->{}",
            verdict_name(r.baseline.verdict),
            verdict_name(r.candidate.verdict)
        );
        let t = self.transitions.entry(key).or_default();
        t.count += 1;
        let decided = if r.candidate.verdict == Verdict::Allow {
            &r.baseline
        } else {
            &r.candidate
        };
        for rule in deciding_rules(decided).collect::<BTreeSet<_>>() {
            *t.by_rule.entry(rule.to_owned()).or_default() += 1;
        }
        *t.by_channel_purpose
            .entry(format!("{}/{}", r.proposal.channel, r.proposal.purpose))
            .or_default() += 1;
        *t.by_campaign.entry(r.proposal.campaign_id.clone()).or_default() += 1;
        if self.sample.len() < SAMPLE {
            self.sample.push(Change {
                customer_id: r.proposal.customer_id.clone(),
                event_id: r.event.event_id.clone(),
                occurred_at: r.event.occurred_at.to_string(),
                channel: r.proposal.channel.to_string(),
                purpose: r.proposal.purpose.to_string(),
                campaign: r.proposal.campaign_id.clone(),
                baseline: side(&r.baseline),
                candidate: side(&r.candidate),
            });
        }
    }
}

/// Runs the backtest over every event of `storage`'s log.
///
/// `skew` is the clock skew the server admits, kept as extra history as the server
/// does; `only` restricts the backtest to some customers. The whole log is held in
/// memory, grouped by customer, while it runs.
pub fn run_backtest(
    storage: &dyn Storage,
    baseline: &Policy,
    candidate: &Policy,
    skew: Span,
    period: Period,
    only: Option<&HashSet<String>>,
) -> Result<Report, LogError> {
    let report = run_backtest_with(
        storage,
        baseline,
        candidate,
        skew,
        period,
        only,
        Reading::AsHappened,
        &mut |_| true,
    )?;
    Ok(report.expect("never cancelled"))
}

/// [`run_backtest`], reading history as `reading` says and calling `progress` as it
/// goes (after each batch of events read, and every 1,024 customers decided); when
/// `progress` answers `false` the backtest stops and answers `None` (a client that
/// went away).
#[allow(clippy::too_many_arguments)]
pub fn run_backtest_with(
    storage: &dyn Storage,
    baseline: &Policy,
    candidate: &Policy,
    skew: Span,
    period: Period,
    only: Option<&HashSet<String>>,
    reading: Reading,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Option<Report>, LogError> {
    let started = Instant::now();
    // Every event, by customer.
    let mut by_customer: HashMap<String, Vec<(u64, Event)>> = HashMap::new();
    let mut next = 1;
    let mut events = 0u64;
    let mut at = Progress {
        phase: "reading",
        events_total: storage.last_seq()?,
        ..Progress::default()
    };
    if !progress(&at) {
        return Ok(None);
    }
    loop {
        let batch = storage.read_from(next, READ_BATCH)?;
        let Some((last, _)) = batch.last() else { break };
        next = last + 1;
        at.events_read += batch.len() as u64;
        at.events_total = at.events_total.max(at.events_read);
        if !progress(&at) {
            return Ok(None);
        }
        for (seq, event) in batch {
            events += 1;
            if !event.kind.is_customer_event() {
                continue;
            }
            if only.is_some_and(|o| !o.contains(&event.customer_id)) {
                continue;
            }
            by_customer
                .entry(event.customer_id.clone())
                .or_default()
                .push((seq, event));
        }
    }
    // As the server keeps history: the longer of the two policies' windows, plus the skew.
    let retention = retention_for(baseline, candidate).with_slack(skew);
    let mut report = Report {
        reading,
        baseline_policy: baseline.version().to_string(),
        candidate_policy: candidate.version().to_string(),
        events,
        customers: by_customer.len() as u64,
        ..Report::default()
    };
    let mut affected = HashSet::new();
    let mut ids: Vec<&String> = by_customer.keys().collect();
    ids.sort_unstable();
    at.phase = "deciding";
    at.customers_total = ids.len() as u64;
    if !progress(&at) {
        return Ok(None);
    }
    for (i, id) in ids.into_iter().enumerate() {
        let mut refs: Vec<(u64, &Event)> = by_customer[id].iter().map(|(s, e)| (*s, e)).collect();
        backtest_customer_as(&mut refs, baseline, candidate, retention, period, reading, |r| {
            report.add(&r, &mut affected)
        });
        if (i + 1) % PROGRESS_CUSTOMERS == 0 {
            at.customers_done = i as u64 + 1;
            if !progress(&at) {
                return Ok(None);
            }
        }
    }
    at.customers_done = at.customers_total;
    progress(&at);
    report.customers_affected = affected.len() as u64;
    let elapsed = started.elapsed();
    report.elapsed_ms = elapsed.as_millis() as u64;
    report.events_per_sec = events as f64 / elapsed.as_secs_f64().max(1e-9);
    Ok(Some(report))
}
