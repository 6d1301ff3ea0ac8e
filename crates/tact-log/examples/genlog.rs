//! Writes a synthetic event log for the memory bench (`benches/memory.sh`):
//! `cargo run --release -p tact-log --example genlog -- DIR CUSTOMERS EVENTS [BATCH]`
//!
//! Appends `EVENTS` events over `CUSTOMERS` customers to the log in `DIR` (a tact
//! data directory's `log`; a new one in `GENLOG_ENGINE`, `fjall` or `sled`, default
//! `fjall`, an existing one in the engine that wrote it) through [`Storage::append`], `BATCH` events per append (the
//! group commit's default, 16,384), flushing every 16 appends and at the end: the
//! records, chunks and indexes are exactly what `tact serve` writes, without the gRPC
//! and group-commit front end. Event ids are random-looking (hex of a 64-bit hash, like
//! UUIDs: the worst case for the id index), events are spread evenly over the year
//! before now, in time order, and every customer gets about the same number.
//!
//! `GENLOG_CACHE_MB` sets the log's cache while generating (default 4096): with the
//! server's 256 MiB, inserting tens of millions of random ids into sled's disk index is
//! bound by page reads and rewrites. The cache changes how fast the log is written,
//! not what is written.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tact_core::{Channel, Engagement, Event, EventKind, Purpose, Timestamp};
use tact_log::{Engine, StorageOptions};

/// The allocator `tact` itself runs with: sled's node copies are allocation-heavy.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const YEAR_MS: i64 = 365 * 24 * 3_600_000;

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn event(i: u64, events: u64, customers: u64, start: i64) -> Event {
    let customer = mix(i ^ 0x5eed) % customers;
    let r = mix(i) % 100;
    let channel = [Channel::Email, Channel::Sms, Channel::Call, Channel::Push][(r % 4) as usize];
    let kind = match r {
        0..=39 => EventKind::PageViewed {
            url: format!("https://example.com/p/{}", r * 7),
            category: "pricing".into(),
        },
        40..=69 => EventKind::OutreachSent {
            channel,
            purpose: Purpose::Marketing,
            campaign: format!("campaign-{}", i % 12),
            decision_id: None,
        },
        70..=84 => EventKind::OutreachEngaged {
            channel,
            engagement: Engagement::Opened,
        },
        85..=89 => EventKind::ConsentChanged {
            channel,
            purpose: Purpose::Marketing,
            granted: r.is_multiple_of(2),
            expires_at: None,
            proof: "web-form".into(),
        },
        90..=94 => EventKind::QuoteRequested {
            product: "widget".into(),
        },
        95..=97 => EventKind::Purchase {
            order_id: format!("o-{i}"),
        },
        _ => EventKind::Complaint {
            channel: Some(channel),
            reason: "too many".into(),
        },
    };
    Event {
        event_id: format!("{:016x}{:016x}", mix(i), mix(!i)),
        customer_id: format!("customer-{customer:08}"),
        occurred_at: Timestamp(start + (i as i128 * YEAR_MS as i128 / events.max(1) as i128) as i64),
        source: "genlog".into(),
        kind,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, customers, events, rest @ ..] = args.as_slice() else {
        eprintln!("usage: genlog DIR CUSTOMERS EVENTS [BATCH]");
        std::process::exit(2);
    };
    let customers: u64 = customers.parse().expect("CUSTOMERS is a number");
    let events: u64 = events.parse().expect("EVENTS is a number");
    let batch: u64 = rest
        .first()
        .map_or(16_384, |b| b.parse().expect("BATCH is a number"));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let start = now - YEAR_MS - 60_000;

    let cache_mb: u64 = std::env::var("GENLOG_CACHE_MB")
        .ok()
        .map_or(4096, |v| v.parse().expect("GENLOG_CACHE_MB is a number"));
    let engine: Engine = std::env::var("GENLOG_ENGINE")
        .ok()
        .map_or(Ok(Engine::default()), |v| v.parse())
        .expect("GENLOG_ENGINE is fjall or sled");
    let options = StorageOptions {
        engine,
        cache_bytes: cache_mb << 20,
        ..StorageOptions::default()
    };
    let (storage, engine) = tact_log::open_storage(std::path::Path::new(dir), options).expect("open the log");
    eprintln!("log engine: {engine}");
    let first = storage.last_seq().expect("last seq");
    let started = Instant::now();
    let mut i = first;
    let mut appends = 0u64;
    while i < events {
        let n = batch.min(events - i);
        let chunk: Vec<Event> = (i..i + n).map(|k| event(k, events, customers, start)).collect();
        let out = storage.append(&chunk, &[]).expect("append");
        assert!(out.iter().all(|a| a.is_recorded()), "generated ids repeat");
        i += n;
        appends += 1;
        if appends.is_multiple_of(16) {
            storage.flush().expect("flush");
            let secs = started.elapsed().as_secs_f64();
            eprint!(
                "\r{i} events, {:.0} events/s, {:.0} s    ",
                (i - first) as f64 / secs,
                secs
            );
        }
    }
    storage.flush().expect("flush");
    let secs = started.elapsed().as_secs_f64();
    eprintln!();
    drop(storage);
    let bytes = tact_log::size_of_dir(std::path::Path::new(dir));
    println!(
        "generated {} events over {customers} customers in {secs:.1} s ({:.0} events/s) with {engine}; on disk: {bytes} bytes ({:.0} bytes/event)",
        events.saturating_sub(first),
        events.saturating_sub(first) as f64 / secs.max(1e-9),
        bytes as f64 / events.max(1) as f64
    );
}
