//! The commands that talk to a running server: `import`, `check`, `customer`.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tact_core::{Channel, Purpose, Timestamp};
use tact_proto::convert::timestamp_to_pb;
use tact_proto::pb;
use tact_proto::pb::contact_policy_client::ContactPolicyClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel as Transport;

use crate::render;

/// Events per RecordEvents call of `tact import`.
pub const IMPORT_BATCH: usize = 1000;

pub type Client = ContactPolicyClient<Service>;

/// A connection to the server with the api key on every call, for calls made without
/// the generated client (`tact bench`'s stream load).
pub type Service = InterceptedService<Transport, ApiKey>;

/// Sends `authorization: Bearer <key>` with every call when `TACT_API_KEY` is set.
#[derive(Clone, Debug)]
pub struct ApiKey(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl ApiKey {
    fn from_env() -> anyhow::Result<ApiKey> {
        match std::env::var("TACT_API_KEY") {
            Ok(key) if !key.trim().is_empty() => {
                let value = format!("Bearer {}", key.trim())
                    .parse()
                    .map_err(|_| anyhow::anyhow!("TACT_API_KEY: not a valid api key"))?;
                Ok(ApiKey(Some(value)))
            }
            _ => Ok(ApiKey(None)),
        }
    }
}

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// For an `https://` server: the CA to trust (`TACT_TLS_CA`, PEM) and, for mutual TLS,
/// this client's certificate and key (`TACT_TLS_CLIENT_CERT`, `TACT_TLS_CLIENT_KEY`).
fn client_tls() -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    let read = |var: &str| -> anyhow::Result<Option<String>> {
        match std::env::var_os(var) {
            Some(path) => std::fs::read_to_string(&path)
                .map(Some)
                .with_context(|| format!("{var}: cannot read {}", path.to_string_lossy())),
            None => Ok(None),
        }
    };
    let mut tls = tonic::transport::ClientTlsConfig::new();
    match read("TACT_TLS_CA")? {
        Some(ca) => tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        None => bail!("an https:// server needs TACT_TLS_CA: the CA certificate (PEM) to trust"),
    }
    match (read("TACT_TLS_CLIENT_CERT")?, read("TACT_TLS_CLIENT_KEY")?) {
        (Some(cert), Some(key)) => tls = tls.identity(tonic::transport::Identity::from_pem(cert, key)),
        (None, None) => {}
        _ => bail!("TACT_TLS_CLIENT_CERT and TACT_TLS_CLIENT_KEY go together"),
    }
    Ok(tls)
}

/// Connects to the server at `url` (with the api key in `TACT_API_KEY`, if set; over
/// TLS for `https://`).
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    Ok(ContactPolicyClient::new(connect_service(url).await?).max_decoding_message_size(64 << 20))
}

/// Connects to the server at `url`, as [`connect`] does, without a generated client.
pub async fn connect_service(url: &str) -> anyhow::Result<Service> {
    Ok(InterceptedService::new(channel(url).await?, ApiKey::from_env()?))
}

/// A client of `tact.v1.TactAdmin` (policy reloads and history, live backtests).
pub type AdminClient =
    tact_proto::pb::tact_admin_client::TactAdminClient<InterceptedService<Transport, ApiKey>>;

/// Connects to the admin service at `url` (the api key needs the scope `admin`).
pub async fn connect_admin(url: &str) -> anyhow::Result<AdminClient> {
    Ok(
        tact_proto::pb::tact_admin_client::TactAdminClient::with_interceptor(
            channel(url).await?,
            ApiKey::from_env()?,
        )
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20),
    )
}

async fn channel(url: &str) -> anyhow::Result<Transport> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid server URL `{url}`"))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if url.starts_with("https://") {
        endpoint = endpoint.tls_config(client_tls()?).context("client tls")?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to tact at {url} (is `tact serve` running?)"))
}

/// The wall clock, for rendering "in 3 h" next to instants.
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp(ms)
}

fn status(call: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{call} failed: {} ({:?})", s.message(), s.code())
}

/// Counts of an import.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    pub recorded: u64,
    pub duplicate: u64,
    pub rejected: u64,
}

/// `tact import FILE`: JSON lines of events, in batches; a bad line does not stop the others.
pub async fn import(server: &str, file: &Path) -> anyhow::Result<ExitCode> {
    let (reader, len): (Box<dyn BufRead>, Option<u64>) = if file == Path::new("-") {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(std::io::BufReader::new(f)), len)
    };
    let mut client = connect(server).await?;
    let bar = crate::progress::Bar::bytes(len, "importing");
    let mut summary = ImportSummary::default();
    let mut batch: Vec<(usize, pb::InteractionEvent)> = Vec::with_capacity(IMPORT_BATCH);
    for (index, raw) in reader.split(b'\n').enumerate() {
        let line_no = index + 1;
        let raw = raw.with_context(|| format!("reading {} at line {line_no}", file.display()))?;
        bar.inc(raw.len() as u64 + 1);
        let line = match std::str::from_utf8(&raw) {
            // A file written on Windows may start with a UTF-8 byte order mark (as some
            // Kafka producers' messages do: both are read the same).
            Ok(s) if index == 0 => s.strip_prefix('\u{feff}').unwrap_or(s).trim(),
            Ok(s) => s.trim(),
            Err(e) => {
                summary.rejected += 1;
                bar.note(&format!("line {line_no}: not valid UTF-8 ({e})"));
                continue;
            }
        };
        if line.is_empty() {
            continue;
        }
        match tact_proto::event_from_json(line) {
            Ok(event) => batch.push((line_no, pb::InteractionEvent::from(&event))),
            Err(e) => {
                summary.rejected += 1;
                bar.note(&format!("line {line_no}: {e}"));
            }
        }
        if batch.len() >= IMPORT_BATCH {
            send(&mut client, &mut batch, &mut summary, &bar).await?;
        }
    }
    if !batch.is_empty() {
        send(&mut client, &mut batch, &mut summary, &bar).await?;
    }
    bar.finish();
    tracing::info!(
        recorded = summary.recorded,
        duplicate = summary.duplicate,
        rejected = summary.rejected,
        "import finished"
    );
    println!(
        "recorded {}, duplicate {}, rejected {}",
        summary.recorded, summary.duplicate, summary.rejected
    );
    Ok(if summary.rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn send(
    client: &mut Client,
    batch: &mut Vec<(usize, pb::InteractionEvent)>,
    summary: &mut ImportSummary,
    bar: &crate::progress::Bar,
) -> anyhow::Result<()> {
    let (lines, events): (Vec<usize>, Vec<pb::InteractionEvent>) = std::mem::take(batch).into_iter().unzip();
    let first = lines.first().copied().unwrap_or(0);
    let response = client
        .record_events(pb::RecordEventsRequest { events })
        .await
        .map_err(|s| status("RecordEvents", s))
        .with_context(|| {
            format!(
                "lines from {first} on were not recorded (recorded {}, duplicate {}, rejected {} before)",
                summary.recorded, summary.duplicate, summary.rejected
            )
        })?
        .into_inner();
    if response.results.len() != lines.len() {
        bail!(
            "the server answered {} results for {} events",
            response.results.len(),
            lines.len()
        );
    }
    for (line, r) in lines.iter().zip(&response.results) {
        match pb::RecordStatus::try_from(r.status) {
            Ok(pb::RecordStatus::Recorded) => summary.recorded += 1,
            Ok(pb::RecordStatus::Duplicate) => summary.duplicate += 1,
            _ => {
                summary.rejected += 1;
                // The server names the field as `events[i].field`; the line number says more here.
                let reason = r
                    .reason
                    .split_once("].")
                    .filter(|(head, _)| head.starts_with("events["))
                    .map_or(r.reason.as_str(), |(_, rest)| rest);
                bar.note(&format!("line {line}: event `{}` rejected: {reason}", r.event_id));
            }
        }
    }
    Ok(())
}

/// What `tact check` asks.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The customer's id. Repeat it to screen several customers in one DecideBatch
    /// (each answered on its own; a bad id is named and does not fail the others).
    #[arg(long, required = true)]
    pub customer: Vec<String>,
    /// email, sms, call, push, direct_mail, sales_meeting, social_dm, in_app
    #[arg(long, value_parser = crate::parse_channel)]
    pub channel: Channel,
    /// marketing, sales, service, transactional
    #[arg(long, value_parser = crate::parse_purpose)]
    pub purpose: Purpose,
    /// The campaign the outreach belongs to.
    #[arg(long, default_value = "")]
    pub campaign: String,
    /// Who is asking, for the audit log.
    #[arg(long, default_value = "tact-cli")]
    pub requested_by: String,
    /// Decide as of this RFC 3339 instant instead of now, e.g. 2026-11-20T09:00:00Z.
    #[arg(long, value_parser = crate::parse_instant, conflicts_with = "authorize")]
    pub at: Option<Timestamp>,
    /// Authorize: an ALLOW is recorded and counts against caps right away.
    #[arg(long)]
    pub authorize: bool,
    /// Print the decision as canonical protobuf JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn decide_request(a: &CheckArgs, customer: &str) -> pb::DecideRequest {
    pb::DecideRequest {
        customer_id: customer.to_owned(),
        channel: pb::Channel::from(a.channel) as i32,
        purpose: pb::Purpose::from(a.purpose) as i32,
        campaign_id: a.campaign.clone(),
        requested_by: a.requested_by.clone(),
        at: a.at.map(timestamp_to_pb),
        ..Default::default()
    }
}

/// `tact check`: Decide (or Authorize) one proposal and print the answer.
pub async fn check(server: &str, a: &CheckArgs) -> anyhow::Result<ExitCode> {
    if a.authorize && a.at.is_some() {
        bail!("--authorize always decides now; drop --at (or drop --authorize to ask about another time)");
    }
    if a.customer.len() > 1 {
        if a.authorize {
            bail!("--authorize takes one --customer (authorizations are decided one at a time)");
        }
        return check_batch(server, a).await;
    }
    let mut client = connect(server).await?;
    let req = decide_request(a, &a.customer[0]);
    let decision = if a.authorize {
        client.authorize(req).await.map_err(|s| status("Authorize", s))?
    } else {
        client.decide(req).await.map_err(|s| status("Decide", s))?
    }
    .into_inner();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&decision)?);
    } else {
        println!(
            "{} {} for {} to {}{}",
            if a.authorize { "authorize" } else { "decide" },
            a.channel,
            a.purpose,
            a.customer[0],
            a.at.map(|t| format!(" at {t}")).unwrap_or_default()
        );
        print!("{}", render::decision(&decision, a.at.unwrap_or_else(now), ""));
        if a.authorize && render::verdict_name(decision.verdict) == "ALLOW" {
            println!(
                "authorization recorded: quote decision_id {} in outreach_sent",
                decision.decision_id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tact check` with several customers: one DecideBatch. Each answer is printed under
/// its customer; a request the server could not decide (e.g. a malformed id) is named
/// with the field and why, and makes the exit status 1 once all are printed.
async fn check_batch(server: &str, a: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut client = connect(server).await?;
    let requests = a.customer.iter().map(|c| decide_request(a, c)).collect();
    let decisions = client
        .decide_batch(pb::DecideBatchRequest {
            requests,
            ..Default::default()
        })
        .await
        .map_err(|s| status("DecideBatch", s))?
        .into_inner()
        .decisions;
    let errors = decisions.iter().filter(|d| d.error.is_some()).count();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&decisions)?);
    } else {
        println!(
            "decide {} for {} to {} customers{}",
            a.channel,
            a.purpose,
            decisions.len(),
            a.at.map(|t| format!(" at {t}")).unwrap_or_default()
        );
        for d in &decisions {
            println!("{}:", d.customer_id);
            print!("{}", render::decision(d, a.at.unwrap_or_else(now), "  "));
        }
    }
    if errors > 0 {
        eprintln!("{errors} of {} requests could not be decided", decisions.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `tact customer`: GetCustomer, printed.
pub async fn customer(server: &str, id: &str, at: Option<Timestamp>, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = connect(server).await?;
    let view = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: id.to_owned(),
            at: at.map(timestamp_to_pb),
        })
        .await
        .map_err(|s| status("GetCustomer", s))?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", render::customer(&view, at.unwrap_or_else(now)));
    }
    Ok(ExitCode::SUCCESS)
}

fn millis(d: Option<&pbjson_types::Duration>) -> i64 {
    d.map_or(0, |d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
}

/// `tact status`: the server's log, and with Kafka each owned partition's lag.
pub async fn status_cmd(server: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = connect(server).await?;
    let s = client
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(|s| status("GetStatus", s))?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "log position {}, {} customers, policy {}",
        s.log_position, s.customers, s.policy_version
    );
    if !s.unhealthy_reason.is_empty() {
        println!("UNHEALTHY: {}", s.unhealthy_reason);
    }
    if !s.kafka {
        println!("no Kafka: events come in through RecordEvents");
        return Ok(if s.healthy {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    println!(
        "kafka topic {} ({} partitions), {}; broker last heard {}; max staleness {} ms; {} dead letters",
        s.topic,
        s.partitions_total,
        if s.healthy {
            "fresh"
        } else {
            "STALE or catching up"
        },
        s.since_broker_heard
            .as_ref()
            .map_or("never".to_owned(), |d| format!("{} ms ago", millis(Some(d)))),
        millis(s.max_staleness.as_ref()),
        s.dead_letters
    );
    for p in &s.partitions {
        println!(
            "  partition {:>3}: position {:>10} of {:>10} (lag {} messages, {} ms){}{}",
            p.partition,
            p.position,
            p.high_watermark,
            p.lag_messages,
            millis(p.lag.as_ref()),
            if p.ready { "" } else { ", catching up" },
            if p.stale { ", STALE" } else { "" }
        );
    }
    Ok(if s.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `tact deadletters`: messages from the stream that could not be used, and why.
pub async fn dead_letters(server: &str, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = connect(server).await?;
    let list = client
        .list_dead_letters(pb::ListDeadLettersRequest { limit })
        .await
        .map_err(|s| status("ListDeadLetters", s))?
        .into_inner();
    if json {
        for d in &list.dead_letters {
            println!("{}", serde_json::to_string(d)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if list.dead_letters.is_empty() {
        println!("no dead letters");
    }
    let now = now();
    for d in &list.dead_letters {
        println!(
            "{} partition {} offset {} key {:?} ({}): {}",
            d.topic,
            d.partition,
            d.offset,
            d.key,
            render::instant(d.recorded_at.as_ref(), now),
            d.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}
