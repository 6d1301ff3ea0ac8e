//! `tact policy`: check a policy file (in plain words, with the differences from
//! another), ask a running server to reload its policy file, and list the policies that
//! took effect (recorded in the log).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use tact_core::Timestamp;
use tact_core::describe::{policy_diff, policy_in_words};
use tact_log::policies::{PolicyRecord, content_hash, policy_history};

use crate::config::{Settings, load_policy};
use crate::serve::open_existing;

#[derive(Clone, Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and print its rules in plain words (and, with --against,
    /// what changes from another policy file). Exit status 1 naming the rule and field
    /// at fault.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
        /// Also print the differences from this policy file (e.g. the one in force).
        #[arg(long, value_name = "FILE")]
        against: Option<PathBuf>,
    },
    /// Ask a running server (--server) to re-read its policy file, as SIGHUP does
    /// (the ReloadPolicy RPC; needs the scope `admin`).
    Reload,
    /// List the policies that took effect, oldest first, from the log of the data
    /// directory (offline; the server must be stopped), or with --live from a running
    /// server (--server).
    History {
        /// One JSON object a line (with each policy's text).
        #[arg(long)]
        json: bool,
        /// Ask the running server (PolicyHistory RPC) instead of reading the data directory.
        #[arg(long)]
        live: bool,
    },
}

pub async fn run(settings: &Settings, command: &PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { file, against } => check(file, against.as_deref()),
        PolicyCommand::Reload => reload(&settings.server).await,
        PolicyCommand::History { json, live } => {
            let history = if *live {
                live_history(&settings.server).await?
            } else {
                let storage = open_existing(&settings.data_dir, settings.log_memory())?;
                tokio::task::spawn_blocking(move || policy_history(&*storage))
                    .await?
                    .context("reading the policy history from the log")?
            };
            print_history(&history, *json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(file: &Path, against: Option<&Path>) -> anyhow::Result<ExitCode> {
    let policy = load_policy(file)?;
    let other = against.map(load_policy).transpose()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: valid", file.display())?;
    writeln!(out, "content hash {}", content_hash(policy.text()))?;
    for (i, line) in policy_in_words(&policy).iter().enumerate() {
        if i == 0 {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "  {line}")?;
        }
    }
    if let (Some(other), Some(path)) = (other, against) {
        let diff = policy_diff(&other, &policy);
        if diff.is_empty() {
            writeln!(
                out,
                "no differences from {} that change a decision",
                path.display()
            )?;
        } else {
            writeln!(out, "differences from {}:", path.display())?;
            for line in diff {
                writeln!(out, "  {line}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn reload(server: &str) -> anyhow::Result<ExitCode> {
    let mut client = crate::client::connect_admin(server).await?;
    let answer = client
        .reload_policy(tact_proto::pb::ReloadPolicyRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    match answer.outcome.as_str() {
        "activated" => writeln!(
            out,
            "policy {} in force (was {}), recorded at log position {}",
            answer.version, answer.previous_version, answer.log_position
        )?,
        "rebuilding" => writeln!(
            out,
            "policy {} needs more history than the state keeps: state is being rebuilt from the log, \
             and {} stays in force until then",
            answer.version, answer.previous_version
        )?,
        _ => writeln!(
            out,
            "policy {} is already in force: nothing changed",
            answer.version
        )?,
    }
    for line in &answer.changes {
        writeln!(out, "  {line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn live_history(server: &str) -> anyhow::Result<Vec<PolicyRecord>> {
    let mut client = crate::client::connect_admin(server).await?;
    let answer = client
        .policy_history(tact_proto::pb::PolicyHistoryRequest { include_text: true })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    answer
        .policies
        .into_iter()
        .map(|p| {
            Ok(PolicyRecord {
                seq: p.log_position,
                event_id: p.event_id,
                at: p
                    .at
                    .as_ref()
                    .map(|t| tact_proto::convert::timestamp_from_pb(t, "at"))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .unwrap_or(Timestamp(0)),
                version: p.version,
                content_hash: p.content_hash,
                text: p.text,
            })
        })
        .collect()
}

fn print_history(history: &[PolicyRecord], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for r in history {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    if history.is_empty() {
        writeln!(out, "no policy recorded in the log")?;
    }
    for r in history {
        writeln!(
            out,
            "{}  {}  sha256 {}  log position {}",
            r.at, r.version, r.content_hash, r.seq
        )?;
    }
    Ok(())
}
