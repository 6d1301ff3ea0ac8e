//! `tact`: the contact-policy engine's command line.
//!
//! `tact serve` runs the engine and its gRPC API; `import`, `check` and `customer` talk
//! to a running server; `replay` rebuilds state from a stopped server's log; `demo`
//! plays a few stories against a throw-away server.

mod audit_sink;
mod backtest;
mod bench;
mod client;
mod clients;
mod config;
mod decisions;
mod demo;
mod metrics_http;
mod policy;
mod produce;
mod progress;
mod render;
mod serve;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tact_core::{Channel, Purpose, Timestamp};
use tracing_subscriber::EnvFilter;

use crate::config::SettingsArgs;

/// mimalloc instead of the system allocator: decoding, deciding and encoding a batch
/// allocate a few small strings per proposal, and glibc's malloc and free were a sixth
/// of the server's CPU under DecideBatch.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "tact",
    version,
    about = "tact: may I contact this customer now, on this channel, for this purpose?"
)]
struct Cli {
    /// Config file (TOML) [default: config/tact.toml, which may be missing]
    #[arg(long, global = true, env = "TACT_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format (logs go to stderr)
    #[arg(long, global = true, env = "TACT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Log level or filter, e.g. `debug` or `info,tact_log=debug` [default: RUST_LOG, else info (fjall and lsm_tree: warn)]
    #[arg(long, global = true, env = "TACT_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProduceFormat {
    Protobuf,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine and its gRPC API (tact.v1.ContactPolicy) until SIGTERM or SIGINT.
    Serve,
    /// Record events from a JSON-lines file (canonical protobuf JSON, one InteractionEvent a line).
    Import {
        /// The file, or `-` for standard input.
        file: PathBuf,
    },
    /// Ask whether a customer may be contacted now (Decide, or Authorize with --authorize).
    Check(client::CheckArgs),
    /// Show what tact knows about a customer.
    Customer {
        /// The customer's id.
        customer: String,
        /// Show the state as of this RFC 3339 instant instead of now.
        #[arg(long, value_parser = parse_instant)]
        at: Option<Timestamp>,
        /// Print the view as canonical protobuf JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild every customer's state from the log, offline (the server must be stopped).
    Replay {
        /// Fold in only events that occurred until this RFC 3339 instant.
        #[arg(long, value_parser = parse_instant)]
        until: Option<Timestamp>,
        /// First refill the log from the Kafka topic's beginning (a new node, a lost disk).
        #[arg(long)]
        from_kafka: bool,
    },
    /// Copy the event log to another storage engine, offline (the server must be stopped):
    /// every event at its seq, the Kafka offsets, dead letters and snapshot; the old log
    /// is kept beside it as `log.<engine>-old`.
    MigrateLog {
        /// The engine to move to: fjall or sled.
        #[arg(long, default_value = "fjall")]
        to: tact_log::Engine,
    },
    /// Re-decide every recorded outreach under a candidate policy and the baseline, offline
    /// (the server must be stopped), and report what would have changed.
    Backtest(backtest::BacktestArgs),
    /// Publish JSON-lines events (canonical protobuf JSON) to the Kafka topic, keyed by customer.
    Produce {
        /// The file, or `-` for standard input.
        file: PathBuf,
        /// The message format.
        #[arg(long, value_enum, default_value_t = ProduceFormat::Protobuf)]
        format: ProduceFormat,
    },
    /// List the messages from Kafka that could not be used, and why.
    Deadletters {
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// One canonical protobuf JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Show the server's log position and, with Kafka, each owned partition's lag.
    Status {
        /// Print canonical protobuf JSON.
        #[arg(long)]
        json: bool,
    },
    /// Play a few stories against a throw-away server and show tact's answers.
    Demo,
    /// Manage the API clients of the clients file (--clients): add, list, remove.
    Clients {
        #[command(subcommand)]
        command: clients::ClientsCommand,
    },
    /// Show one decision as tact answered it, from the decision audit (GetDecision).
    Decision {
        /// The decision id (a Decision's decision_id).
        id: String,
        /// Print canonical protobuf JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a customer's decisions from the decision audit, newest first (ListDecisions).
    Decisions {
        /// The customer's id.
        #[arg(long)]
        customer: String,
        /// Decisions answered at or after this RFC 3339 instant.
        #[arg(long, value_parser = parse_instant)]
        from: Option<Timestamp>,
        /// Decisions answered before this RFC 3339 instant.
        #[arg(long, value_parser = parse_instant)]
        to: Option<Timestamp>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One canonical protobuf JSON object (AuditedDecision) a line.
        #[arg(long)]
        json: bool,
    },
    /// Load a running server: populate synthetic customers, drive Decide, Authorize,
    /// DecideBatch, DecideStream or RecordEvents at a concurrency for a duration, and
    /// print throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// A server with tact's API that decides nothing (a baseline for `tact bench`), on --listen.
    #[command(hide = true)]
    BenchNoopServer,
    /// Check a policy file, reload the running server's policy, list the policies that
    /// took effect.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
}

fn parse_channel(s: &str) -> Result<Channel, String> {
    s.parse().map_err(|e: tact_core::UnknownName| e.to_string())
}

fn parse_purpose(s: &str) -> Result<Purpose, String> {
    s.parse().map_err(|e: tact_core::UnknownName| e.to_string())
}

fn parse_instant(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(s).map_err(|e| e.to_string())
}

fn init_tracing(format: LogFormat, level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| anyhow::anyhow!("invalid --log-level `{l}`: {e}"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(l) if !l.trim().is_empty() => {
                EnvFilter::try_new(&l).map_err(|e| anyhow::anyhow!("invalid RUST_LOG `{l}`: {e}"))?
            }
            // The storage engine's own progress lines (fjall, lsm-tree: "Creating
            // database", "Finished ingestion writer") are not the operator's news;
            // its warnings and errors are.
            _ => EnvFilter::new("info,fjall=warn,lsm_tree=warn"),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_tracing(cli.log_format, cli.log_level.as_deref()) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A storage abandoned at shutdown (a hung disk) may still hold a blocking thread
    // in a flush: do not wait for it on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = config::load(cli.config.as_deref(), &cli.settings)?;
    tracing::debug!(?settings, "settings");
    match cli.command {
        Command::Serve => serve::serve(&settings).await,
        Command::Import { file } => client::import(&settings.server, &file).await,
        Command::Check(args) => client::check(&settings.server, &args).await,
        Command::Customer { customer, at, json } => {
            client::customer(&settings.server, &customer, at, json).await
        }
        Command::Replay { until, from_kafka } => serve::replay(&settings, until, from_kafka).await,
        Command::MigrateLog { to } => serve::migrate_log(&settings, to).await,
        Command::Backtest(args) => backtest::backtest(&settings, &args, cli.settings.server.is_some()).await,
        Command::Produce { file, format } => {
            let mut opts = settings.require_kafka()?;
            opts.format = match format {
                ProduceFormat::Protobuf => tact_ingest::WireFormat::Protobuf,
                ProduceFormat::Json => tact_ingest::WireFormat::Json,
            };
            produce::produce(opts, &file).await
        }
        Command::Deadletters { limit, json } => client::dead_letters(&settings.server, limit, json).await,
        Command::Status { json } => client::status_cmd(&settings.server, json).await,
        Command::Demo => demo::run(&settings).await,
        Command::Clients { command } => clients::run(&settings, &command),
        Command::Decision { id, json } => decisions::decision(&settings.server, &id, json).await,
        Command::Decisions {
            customer,
            from,
            to,
            limit,
            json,
        } => decisions::decisions(&settings.server, &customer, from, to, limit, json).await,
        Command::Bench(args) => bench::run(&settings.server, &args).await,
        Command::BenchNoopServer => bench::noop::serve(settings.listen).await,
        Command::Policy { command } => policy::run(&settings, &command).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "tact",
            "check",
            "--customer",
            "c1",
            "--channel",
            "sales_meeting",
            "--purpose",
            "sales",
            "--at",
            "2026-11-20T09:00:00Z",
            "--server",
            "http://127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(cli.settings.server.as_deref(), Some("http://127.0.0.1:1"));
        match cli.command {
            Command::Check(args) => {
                assert_eq!(args.channel, Channel::SalesMeeting);
                assert_eq!(args.purpose, Purpose::Sales);
                assert!(args.at.is_some());
            }
            other => panic!("{other:?}"),
        }
        let err = Cli::try_parse_from([
            "tact",
            "check",
            "--customer",
            "c",
            "--channel",
            "fax",
            "--purpose",
            "sales",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("sales_meeting"), "{err}");
        let cli = Cli::try_parse_from([
            "tact",
            "serve",
            "--snapshot-on-shutdown",
            "false",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(cli.settings.snapshot_on_shutdown, Some(false));
    }
}
