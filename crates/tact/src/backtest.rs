//! `tact backtest`: what a policy change would have done to the outreach the log holds,
//! offline on a stopped server's data directory (see `tact_log::backtest`).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tact_core::Timestamp;
use tact_core::backtest::Period;
use tact_log::backtest::{Report, run_backtest};

use crate::config::{Settings, load_policy};
use crate::serve::open_existing;

#[derive(Clone, Debug, clap::Args)]
pub struct BacktestArgs {
    /// The policy to try (TOML).
    #[arg(long, value_name = "FILE")]
    pub candidate: PathBuf,
    /// The policy to compare with [default: the configured policy, --policy]
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Re-decide only outreach that occurred at or after this RFC 3339 instant.
    #[arg(long, value_parser = crate::parse_instant)]
    pub from: Option<Timestamp>,
    /// Re-decide only outreach that occurred at or before this RFC 3339 instant.
    #[arg(long, value_parser = crate::parse_instant)]
    pub to: Option<Timestamp>,
    /// Only these customers (a file with one customer id a line).
    #[arg(long, value_name = "FILE")]
    pub customers: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn read_customers(path: &Path) -> anyhow::Result<HashSet<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// `tact backtest`.
pub async fn backtest(settings: &Settings, args: &BacktestArgs) -> anyhow::Result<ExitCode> {
    let baseline = load_policy(args.baseline.as_deref().unwrap_or(&settings.policy))?;
    let candidate = load_policy(&args.candidate)?;
    let only = args.customers.as_deref().map(read_customers).transpose()?;
    let storage = open_existing(&settings.data_dir, settings.log_memory())?;
    let skew = settings.admission().max_clock_skew;
    let period = Period {
        from: args.from,
        to: args.to,
    };
    let report = tokio::task::spawn_blocking(move || {
        run_backtest(&*storage, &baseline, &candidate, skew, period, only.as_ref())
    })
    .await??;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        render(&mut out, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "backtest: {} outreach re-decided ({} events, {} customers, {:.3} s, {:.0} events/s)",
        r.outreach,
        r.events,
        r.customers,
        r.elapsed_ms as f64 / 1000.0,
        r.events_per_sec
    )?;
    writeln!(
        out,
        "history as it happened: outreach a policy would have blocked still counts in later caps"
    )?;
    for (name, policy, c) in [
        ("baseline ", &r.baseline_policy, r.baseline),
        ("candidate", &r.candidate_policy, r.candidate),
    ] {
        writeln!(
            out,
            "{name} {policy}: ALLOW {}, DENY {}, DEFER {}",
            c.allow, c.deny, c.defer
        )?;
    }
    writeln!(
        out,
        "changed: {} ({} customers affected)",
        r.changed, r.customers_affected
    )?;
    for (key, t) in &r.transitions {
        writeln!(out, "  {key}: {}", t.count)?;
        let top = |m: &BTreeMap<String, u64>| {
            let mut v: Vec<(&String, &u64)> = m.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v.iter()
                .take(5)
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(out, "    by rule: {}", top(&t.by_rule))?;
        writeln!(out, "    by channel/purpose: {}", top(&t.by_channel_purpose))?;
        writeln!(out, "    by campaign: {}", top(&t.by_campaign))?;
    }
    if !r.sample.is_empty() {
        writeln!(out, "sample of changed decisions:")?;
    }
    for c in &r.sample {
        writeln!(
            out,
            "  {} {} at {}: {} for {} ({}): {} -> {}",
            c.customer_id,
            c.event_id,
            c.occurred_at,
            c.channel,
            c.purpose,
            c.campaign,
            c.baseline.verdict,
            c.candidate.verdict
        )?;
        for (label, s) in [("baseline", &c.baseline), ("candidate", &c.candidate)] {
            for reason in &s.reasons {
                writeln!(out, "      {label}: {reason}")?;
            }
        }
    }
    Ok(())
}
