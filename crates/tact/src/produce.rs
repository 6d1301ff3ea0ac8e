//! `tact produce FILE`: publishes JSON-lines events to the Kafka topic.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tact_core::Event;
use tact_ingest::{KafkaOptions, Publisher, WireFormat};

/// Reads every event first (a bad line names itself and nothing is produced), then
/// produces them keyed by customer id and waits for the broker's acknowledgements.
pub async fn produce(opts: KafkaOptions, file: &Path) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut events: Vec<Event> = Vec::new();
    let mut bad = 0usize;
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {} at line {}", file.display(), i + 1))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match tact_proto::event_from_json(line) {
            Ok(e) => events.push(e),
            Err(e) => {
                bad += 1;
                eprintln!("line {}: {e}", i + 1);
            }
        }
    }
    if bad > 0 {
        bail!("{bad} bad lines; nothing was produced");
    }
    let topic = opts.topic.clone();
    let format = opts.format;
    let publisher = Publisher::new(&opts).context("cannot create the Kafka producer")?;
    let stats = publisher
        .produce(events, 100_000)
        .await
        .with_context(|| format!("producing to {topic} at {}", opts.brokers))?;
    println!(
        "produced {} events to {topic} ({}) in {:.3} s ({:.0} events/s)",
        stats.events,
        match format {
            WireFormat::Protobuf => "protobuf",
            WireFormat::Json => "json",
        },
        stats.elapsed.as_secs_f64(),
        stats.events_per_sec()
    );
    Ok(ExitCode::SUCCESS)
}
