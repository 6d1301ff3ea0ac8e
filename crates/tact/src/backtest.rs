//! `tact backtest`: what a policy change would have done to the outreach the log holds,
//! offline on a stopped server's data directory (see `tact_log::backtest`).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tact_core::Timestamp;
use tact_core::backtest::{Period, Reading};
use tact_log::backtest::{Report, run_backtest_with};
use tact_proto::pb;

use crate::progress::Bar;

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
    /// How history is read: `as_happened` (outreach the candidate would have blocked
    /// still counts in later caps) or `counterfactual` (it does not, for the candidate).
    #[arg(long, default_value = "as_happened", value_parser = parse_reading)]
    pub reading: Reading,
}

fn parse_reading(s: &str) -> Result<Reading, String> {
    s.parse()
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

/// `tact backtest`: offline on the data directory, or with `--server` on a running
/// server (the `Backtest` admin RPC: sled's lock keeps a second process out of a live
/// data directory).
pub async fn backtest(settings: &Settings, args: &BacktestArgs, on_server: bool) -> anyhow::Result<ExitCode> {
    if on_server {
        return backtest_on_server(settings, args).await;
    }
    let baseline = load_policy(args.baseline.as_deref().unwrap_or(&settings.policy))?;
    let candidate = load_policy(&args.candidate)?;
    let only = args.customers.as_deref().map(read_customers).transpose()?;
    let storage = open_existing(&settings.data_dir, settings.log_memory())?;
    let skew = settings.admission().max_clock_skew;
    let period = Period {
        from: args.from,
        to: args.to,
    };
    let reading = args.reading;
    let bar = Bar::new(None, "reading the log", "events");
    let shown = bar.clone();
    let report = tokio::task::spawn_blocking(move || {
        run_backtest_with(
            &*storage,
            &baseline,
            &candidate,
            skew,
            period,
            only.as_ref(),
            reading,
            &mut |p| {
                show(
                    &shown,
                    p.phase,
                    p.events_read,
                    p.events_total,
                    p.customers_done,
                    p.customers_total,
                );
                true
            },
        )
    })
    .await??
    .context("the backtest stopped")?;
    bar.finish();
    print_report(&report, args.json)
}

fn show(
    bar: &Bar,
    phase: &str,
    events_read: u64,
    events_total: u64,
    customers_done: u64,
    customers_total: u64,
) {
    if phase == "reading" {
        bar.set_message("reading the log");
        bar.set_length(events_total);
        bar.set_position(events_read);
    } else {
        bar.set_message("deciding, customers");
        bar.set_length(customers_total);
        bar.set_position(customers_done);
    }
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, report)?;
        writeln!(out)?;
    } else {
        render(&mut out, report)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn backtest_on_server(settings: &Settings, args: &BacktestArgs) -> anyhow::Result<ExitCode> {
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
    // Checked here first, so a bad file is named with its path.
    load_policy(&args.candidate)?;
    let candidate_toml = read(&args.candidate)?;
    let baseline_toml = match &args.baseline {
        Some(p) => {
            load_policy(p)?;
            Some(read(p)?)
        }
        None => None,
    };
    let mut customers: Vec<String> = args
        .customers
        .as_deref()
        .map(read_customers)
        .transpose()?
        .map(|c| c.into_iter().collect())
        .unwrap_or_default();
    customers.sort();
    let request = pb::BacktestRequest {
        candidate_toml,
        baseline_toml,
        from: args.from.map(tact_proto::convert::timestamp_to_pb),
        to: args.to.map(tact_proto::convert::timestamp_to_pb),
        customers,
        reading: match args.reading {
            Reading::AsHappened => "as_happened",
            Reading::Counterfactual => "counterfactual",
        }
        .to_owned(),
    };
    let mut client = crate::client::connect_admin(&settings.server).await?;
    let mut updates = client
        .backtest(request)
        .await
        .map_err(|s| anyhow::anyhow!("Backtest: {}", s.message()))?
        .into_inner();
    let bar = Bar::new(None, "reading the log", "events");
    let mut report = None;
    while let Some(update) = updates
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("Backtest: {}", s.message()))?
    {
        match update.update {
            Some(pb::backtest_update::Update::Progress(p)) => show(
                &bar,
                &p.phase,
                p.events_read,
                p.events_total,
                p.customers_done,
                p.customers_total,
            ),
            Some(pb::backtest_update::Update::ReportJson(json)) => report = Some(json),
            None => {}
        }
    }
    bar.finish();
    let json = report.context("the server ended the backtest without a report")?;
    if args.json {
        // Exactly what the server sent: the same JSON the offline command prints.
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    let report: Report = serde_json::from_str(&json).context("the server's report")?;
    print_report(&report, false)
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
    match r.reading {
        Reading::AsHappened => writeln!(
            out,
            "history as it happened: outreach a policy would have blocked still counts in later caps"
        )?,
        Reading::Counterfactual => writeln!(
            out,
            "counterfactual history: outreach the candidate would have blocked does not count in its later caps"
        )?,
    }
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
