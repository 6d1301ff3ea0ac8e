//! `tact clients add|list|remove`: the clients file (`--clients`) that `tact serve`
//! reads (and re-reads on SIGHUP).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tact_server::auth::{self, ClientEntry, ClientsFile, RateLimits, Scope};

use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Add a client with a new random API key, printed once on a line of its own.
    Add(AddArgs),
    /// List the clients (never their keys).
    List,
    /// Remove a client.
    Remove {
        /// The client's id.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The client's id (what tact records as who asked).
    id: String,
    /// What it may do: decide, authorize, record, read, admin (comma-separated).
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_scope)]
    scopes: Vec<Scope>,
    /// Decisions per second (a batch of N costs N) [default: the file's defaults]
    #[arg(long, value_name = "N")]
    decisions_per_second: Option<u32>,
    /// Events per second [default: the file's defaults]
    #[arg(long, value_name = "N")]
    events_per_second: Option<u32>,
    /// How many may be spent at once [default: one second's worth]
    #[arg(long, value_name = "N")]
    burst: Option<u32>,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse().map_err(|e: tact_server::ClientsError| e.to_string())
}

fn path(settings: &Settings) -> anyhow::Result<PathBuf> {
    settings.clients.clone().context(
        "no clients file: give one with --clients FILE (or TACT_CLIENTS, or `clients` in the config file)",
    )
}

fn load(path: &Path) -> anyhow::Result<ClientsFile> {
    Ok(ClientsFile::load(path)?)
}

pub fn run(settings: &Settings, command: &ClientsCommand) -> anyhow::Result<ExitCode> {
    let path = path(settings)?;
    match command {
        ClientsCommand::Add(a) => add(&path, a),
        ClientsCommand::List => list(&path),
        ClientsCommand::Remove { id } => remove(&path, id),
    }
}

fn add(path: &Path, a: &AddArgs) -> anyhow::Result<ExitCode> {
    let mut file = load(path)?;
    auth::check_client_id(&a.id)?;
    if file.clients.iter().any(|c| c.id == a.id) {
        bail!("a client `{}` is already in {}", a.id, path.display());
    }
    let key = auth::generate_key();
    let entry = ClientEntry {
        id: a.id.clone(),
        key_sha256: auth::key_sha256(&key),
        scopes: a.scopes.clone(),
        limits: RateLimits {
            decisions_per_second: a.decisions_per_second,
            events_per_second: a.events_per_second,
            burst: a.burst,
        },
    };
    file.clients.push(entry.clone());
    file.validate()?;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} to add the client", path.display()))?;
    let existing = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let sep = if existing > 0 { "\n" } else { "" };
    write!(out, "{sep}{}", auth::entry_toml(&entry))
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "added client `{}` to {}; its api key (shown only now; send it as `authorization: Bearer <key>`):",
        a.id,
        path.display()
    );
    println!("{key}");
    eprintln!("a running `tact serve` picks it up on SIGHUP");
    Ok(ExitCode::SUCCESS)
}

fn list(path: &Path) -> anyhow::Result<ExitCode> {
    let file = load(path)?;
    if file.clients.is_empty() {
        println!("no clients in {}", path.display());
    }
    let rate = |v: Option<u32>| v.map_or("unlimited".to_owned(), |v| format!("{v}/s"));
    for c in &file.clients {
        let limits = c.limits.or(file.defaults);
        let scopes: Vec<&str> = c.scopes.iter().map(|s| s.as_str()).collect();
        println!(
            "{}\tscopes={}\tdecisions={}\tevents={}\tburst={}{}",
            c.id,
            scopes.join(","),
            rate(limits.decisions_per_second),
            rate(limits.events_per_second),
            limits.burst.map_or("1s".to_owned(), |b| b.to_string()),
            if c.key_sha256.is_empty() {
                "\t(certificate only)"
            } else {
                ""
            },
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(path: &Path, id: &str) -> anyhow::Result<ExitCode> {
    let mut file = load(path)?;
    let before = file.clients.len();
    file.clients.retain(|c| c.id != id);
    if file.clients.len() == before {
        bail!("no client `{id}` in {}", path.display());
    }
    // Rewritten whole (comments are not kept), through a temporary file and a rename.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, file.to_toml())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot rewrite {}", path.display()))?;
    eprintln!("removed client `{id}`; a running `tact serve` drops it on SIGHUP");
    Ok(ExitCode::SUCCESS)
}
