//! `tact serve` and `tact replay`: the commands that own the data directory.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use tact_core::Timestamp;
use tact_log::{Projection, Storage};
use tact_server::{ServerError, ServerOptions};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    shutdown_signals(None).await;
}

/// Resolves on SIGTERM or SIGINT; with `end_grace`, goes on listening and cancels it
/// on a second one (the shutdown grace then ends at once).
async fn shutdown_signals(end_grace: Option<(tokio::sync::oneshot::Sender<()>, CancellationToken)>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
            return;
        }
    };
    let mut next = async || {
        tokio::select! {
            _ = term.recv() => "sigterm",
            _ = int.recv() => "sigint",
        }
    };
    let name = next().await;
    tracing::info!(signal = name, "shutdown requested");
    if let Some((started, end_grace)) = end_grace {
        let _ = started.send(());
        let name = next().await;
        tracing::warn!(
            signal = name,
            "shutdown requested again: closing the remaining connections now (the log is still flushed)"
        );
        end_grace.cancel();
    }
}

/// `tact serve`: the engine and its gRPC API until SIGTERM or SIGINT.
pub async fn serve(settings: &Settings) -> anyhow::Result<ExitCode> {
    let policy = settings.load_policy()?;
    let policy_version = policy.version().clone();
    let mut opts = ServerOptions::new(settings.listen, Some(settings.data_dir.clone()), policy);
    opts.policy_file = Some(settings.policy.clone());
    opts.group_commit = settings.group_commit();
    opts.limits = settings.limits();
    opts.snapshot_on_shutdown = settings.snapshot_on_shutdown;
    opts.log_memory = settings.log_memory();
    opts.admission = settings.admission();
    opts.transport = settings.transport()?;
    opts.transport.max_connections = fit_descriptors(opts.transport.max_connections);
    opts.auth = settings.auth();
    opts.tls = settings.tls()?;
    if let Some(addr) = settings.metrics_listen {
        // Latencies as Prometheus histograms (not summaries), from 50 µs to 10 s.
        const LATENCY_BUCKETS: &[f64] = &[
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 10.0,
        ];
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                LATENCY_BUCKETS,
            )
            .context("latency buckets")?
            .install_recorder()
            .context("cannot install the metrics recorder")?;
        crate::metrics_http::spawn(listener, handle);
        tracing::info!(addr = %addr, "serving prometheus metrics at /metrics");
    }
    opts.audit = settings.audit();
    if settings.kafka_decision_topic.is_some() && settings.kafka().is_none() {
        tracing::warn!(
            "kafka_decision_topic is set without kafka_brokers: audit records go nowhere but the audit"
        );
    }
    if let Some(mut kafka) = settings.kafka() {
        if let Some(topic) = settings.kafka_decision_topic.as_deref().filter(|t| !t.is_empty()) {
            let sink = crate::audit_sink::KafkaDecisions::new(&kafka, topic)
                .context("cannot set up the Kafka producer for the decisions topic")?;
            tracing::info!(topic, "audit records also go to the decisions topic");
            opts.audit.sink = Some(Arc::new(sink));
        }
        kafka.admission.origin_key = Some(settings.kafka_origin_key(true)?);
        tracing::info!(brokers = %kafka.brokers, topic = %kafka.topic, group = %kafka.group, "kafka mode");
        let feed = tact_ingest::KafkaFeed::new(kafka).context("cannot set up the Kafka client")?;
        opts.feed = Some(Arc::new(feed));
    }

    // Installed before the (possibly long) replay, so an early SIGTERM is not lost. A
    // second one ends the shutdown grace.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let signals = tokio::spawn(shutdown_signals(Some((tx, opts.end_grace.clone()))));
    let shutdown = async move {
        let _ = rx.await;
    };

    let handle = tact_server::run(opts, shutdown)
        .await
        .map_err(|e| data_dir_error(e, &settings.data_dir))
        .context("cannot start the server")?;
    let addr = handle.local_addr();
    tracing::info!(
        addr = %addr,
        data_dir = %settings.data_dir.display(),
        policy_version = %policy_version,
        "listening"
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    // SIGHUP re-reads the clients file and the policy file; a bad file keeps what is in
    // force and says why.
    let auth = Arc::clone(handle.auth());
    let engine = Arc::clone(handle.engine());
    let policy_file = settings.policy.clone();
    let reload = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                "cannot install the sighup handler: the clients and policy files are read only at start"
            );
            return;
        };
        while hup.recv().await.is_some() {
            match auth.reload() {
                Ok(clients) => tracing::info!(clients, "sighup: clients file reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "sighup: clients file not reloaded, keeping the clients in force")
                }
            }
            sighup_policy(&engine, &policy_file).await;
        }
    });
    let waited = handle.wait().await;
    reload.abort();
    signals.abort();
    waited.context("the server failed")?;
    tracing::info!("server stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// File descriptors kept for everything but client connections: the event log's and
/// the audit's files (at most `tact_log::MAX_CACHED_FILES` open per fjall database, a
/// few for sled), their journals, Kafka's sockets, the metrics listener's connections,
/// snapshots, standard streams.
const RESERVED_DESCRIPTORS: u64 = 512;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, and returns `max_connections`,
/// lowered (with a warning) if it would leave fewer than [`RESERVED_DESCRIPTORS`] for
/// the rest: connections that took the log's descriptors would fail its next flush,
/// and every write after it, withdrawals included.
fn fit_descriptors(max_connections: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit (RLIMIT_NOFILE)");
            match rlimit::getrlimit(rlimit::Resource::NOFILE) {
                Ok((soft, _)) => soft,
                Err(_) => return max_connections,
            }
        }
    };
    let fit = connections_within(limit);
    if (max_connections as u64) > fit {
        tracing::warn!(
            max_connections,
            lowered_to = fit,
            open_file_limit = limit,
            reserved = RESERVED_DESCRIPTORS.min(limit / 2),
            "max_connections lowered to fit the open-file limit, keeping descriptors for the log, \
             the audit and Kafka: raise the hard limit (LimitNOFILE=, --ulimit nofile=) to allow more"
        );
        fit as usize
    } else {
        max_connections
    }
}

/// The most connections a process allowed `limit` open files can hold while keeping
/// [`RESERVED_DESCRIPTORS`] (or half of a smaller limit) for the rest; at least 1.
fn connections_within(limit: u64) -> u64 {
    limit.saturating_sub(RESERVED_DESCRIPTORS.min(limit / 2)).max(1)
}

/// SIGHUP's policy reload: a file that does not read or validate keeps the policy in
/// force (logged with the rule and field at fault).
async fn sighup_policy(engine: &Arc<tact_server::Engine>, path: &Path) {
    match tact_server::reload_from_file(engine, Some(path)).await {
        Ok(report) => {
            let (outcome, version) = match &report.reloaded {
                tact_server::Reloaded::Unchanged { version } => ("unchanged", version.clone()),
                tact_server::Reloaded::Activated { record, .. } => {
                    ("activated", Arc::from(record.version.as_str()))
                }
                tact_server::Reloaded::Rebuilding { version, .. } => {
                    ("rebuilding state first", version.clone())
                }
            };
            tracing::info!(outcome, version = %version, changes = ?report.changes, "sighup: policy file reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "sighup: policy file not reloaded, keeping the policy in force")
        }
    }
}

/// A lock on the data directory means another process (a running `tact serve`) has it.
fn data_dir_error(e: ServerError, dir: &Path) -> anyhow::Error {
    let text = e.to_string();
    let locked = text.contains("lock")
        || text.contains("WouldBlock")
        || text.contains("temporarily unavailable")
        || text.contains("another tact process");
    if matches!(e, ServerError::DataDir { .. }) && locked {
        anyhow::anyhow!(
            "the data directory {} is locked: a running `tact serve` holds it \
             (stop it first, or ask it with `tact customer` / `tact check`) [{text}]",
            dir.display()
        )
    } else {
        anyhow::Error::new(e)
    }
}

/// Opens the data directory of a stopped server.
pub fn open_existing(dir: &Path, memory: tact_log::StorageOptions) -> anyhow::Result<Arc<dyn Storage>> {
    if !dir.join("log").is_dir() {
        bail!(
            "no tact event log in {} (expected {})",
            dir.display(),
            dir.join("log").display()
        );
    }
    tact_server::open_storage_with(dir, memory).map_err(|e| data_dir_error(e, dir))
}

/// `tact migrate-log --to ENGINE`: copies `<data_dir>/log` into a new log of `to`
/// (`<data_dir>/log.migrating`, replaced if a migration was interrupted), checks it,
/// then renames the old log to `log.<engine>-old` and the new one to `log`. Until the
/// last rename the old log is untouched and still the one `tact serve` opens.
pub async fn migrate_log(settings: &Settings, to: tact_log::Engine) -> anyhow::Result<ExitCode> {
    let dir = settings.data_dir.clone();
    let log = dir.join("log");
    let Some(from) = tact_log::Engine::of_existing(&log) else {
        bail!(
            "no tact event log in {} (expected {})",
            dir.display(),
            log.display()
        );
    };
    if from == to {
        println!("the log in {} is already in {to}: nothing to do", log.display());
        return Ok(ExitCode::SUCCESS);
    }
    let old = dir.join(format!("log.{from}-old"));
    if old.exists() {
        bail!(
            "{} exists (an earlier migration's old log): move it away first",
            old.display()
        );
    }
    let source = open_existing(&dir, settings.log_memory())?;
    let last_seq = source.last_seq()?;
    let target = dir.join("log.migrating");
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .with_context(|| format!("removing the unfinished migration in {}", target.display()))?;
    }
    let options = tact_log::StorageOptions {
        engine: to,
        ..settings.log_memory()
    };
    let started = std::time::Instant::now();
    let bar = crate::progress::Bar::new(Some(last_seq), "copying", "events");
    let copied = {
        let bar = bar.clone();
        let target = target.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let (dest, engine) = tact_log::open_storage(&target, options)?;
            anyhow::ensure!(engine == to, "{} already holds a {engine} log", target.display());
            let copied = tact_log::copy_log(source.as_ref(), dest.as_ref(), 16_384, |n| bar.set_position(n))?;
            anyhow::ensure!(
                dest.last_seq()? == source.last_seq()?,
                "the copy ends at seq {}, the log at {}",
                dest.last_seq()?,
                source.last_seq()?
            );
            Ok(copied)
        })
        .await??
    };
    bar.finish();
    // Read back from disk by a new handle (which also waits until the copy's handle has
    // let go of the directory): the copy is durable and whole.
    {
        let target = target.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let (dest, engine) = tact_log::open_storage(&target, options)?;
            anyhow::ensure!(
                engine == to && dest.last_seq()? == last_seq,
                "the copy in {} reopened as {engine} ending at seq {}, expected {to} at {last_seq}",
                target.display(),
                dest.last_seq()?
            );
            Ok(())
        })
        .await??;
    }
    std::fs::rename(&log, &old)
        .with_context(|| format!("renaming {} to {}", log.display(), old.display()))?;
    std::fs::rename(&target, &log)
        .with_context(|| format!("renaming {} to {}", target.display(), log.display()))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    println!(
        "copied {copied} events from {from} to {to} in {:.1} s; the log is now {to}, the old one is in {} \
         (remove it once the server runs on the new one)",
        started.elapsed().as_secs_f64(),
        old.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `tact replay`: rebuilds every customer's state from the log, offline, and reports.
/// With `from_kafka`, first refills the log from the topic's beginning.
pub async fn replay(
    settings: &Settings,
    until: Option<Timestamp>,
    from_kafka: bool,
) -> anyhow::Result<ExitCode> {
    let policy = settings.load_policy()?;
    let storage = if from_kafka {
        let mut kafka = settings.require_kafka()?;
        kafka.admission.origin_key = Some(settings.kafka_origin_key(false)?);
        let storage = tact_server::open_storage_with(&settings.data_dir, settings.log_memory())
            .map_err(|e| data_dir_error(e, &settings.data_dir))?;
        let log = tact_log::Log::open(Arc::clone(&storage), settings.group_commit(), |_| {});
        let runtime = tokio::runtime::Handle::current();
        let (log, stats) = tokio::task::spawn_blocking(move || {
            let stats = tact_ingest::rebuild_from_topic(&kafka, &log, &runtime);
            (log, stats)
        })
        .await?;
        let stats = stats.context("rebuilding the log from Kafka")?;
        log.shutdown().await?;
        println!(
            "read {} messages from {} partitions of {} in {:.3} s ({:.0} messages/s): {} events recorded, \
             {} already in the log, {} dead letters",
            stats.messages,
            stats.partitions,
            settings.kafka_topic,
            stats.elapsed.as_secs_f64(),
            stats.messages_per_sec(),
            stats.recorded,
            stats.duplicates,
            stats.dead_letters
        );
        storage
    } else {
        open_existing(&settings.data_dir, settings.log_memory())?
    };
    let last_seq = storage.last_seq()?;
    // As the server keeps it: the policy's windows and the clock skew it admits.
    let retention = policy.retention().with_slack(settings.admission().max_clock_skew);
    let bar = crate::progress::Bar::new(Some(last_seq), "replaying", "events");
    let watch = {
        let bar = bar.clone();
        let start = tact_log::replay_progress();
        tokio::spawn(async move {
            loop {
                bar.set_position(tact_log::replay_progress().saturating_sub(start));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    };
    let replayed = tokio::task::spawn_blocking(move || match until {
        None => Projection::rebuild(&*storage, retention),
        Some(t) => Projection::rebuild_until(&*storage, retention, t),
    })
    .await;
    watch.abort();
    bar.finish();
    let (projection, stats) =
        replayed?.with_context(|| format!("replaying the log in {}", settings.data_dir.display()))?;
    match until {
        None => println!(
            "replayed {} events ({} customers) from {} in {:.3} s ({:.0} events/s)",
            stats.events,
            stats.customers,
            settings.data_dir.display(),
            stats.elapsed.as_secs_f64(),
            stats.events_per_sec()
        ),
        Some(t) => println!(
            "replayed {} events that occurred until {t} ({} customers; {} events in the log) from {} \
             in {:.3} s ({:.0} events/s)",
            stats.events,
            stats.customers,
            last_seq,
            settings.data_dir.display(),
            stats.elapsed.as_secs_f64(),
            stats.events_per_sec()
        ),
    }
    println!(
        "log position {}, policy {}",
        projection.position,
        policy.version()
    );
    println!("state digest {:016x}", state_digest(&projection)?);
    Ok(ExitCode::SUCCESS)
}

/// A digest of every customer's state (FNV-1a over the customers in id order and their
/// encoded state): equal digests mean equal state, whatever order the events came in.
pub fn state_digest(projection: &Projection) -> anyhow::Result<u64> {
    let mut ids: Vec<&String> = projection.customers.keys().collect();
    ids.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for id in ids {
        feed(id.as_bytes());
        feed(&[0]);
        let state = &projection.customers[id];
        let encoded = bincode::serde::encode_to_vec(state, bincode::config::standard())
            .context("encoding a customer's state")?;
        feed(&encoded);
    }
    Ok(h)
}
