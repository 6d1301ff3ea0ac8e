//! How much memory the customers' state takes, apart from the log: decodes a snapshot
//! file (`<data_dir>/log/tact-snapshot`) into memory, with the allocator `tact` runs
//! with, and prints the process's resident memory before and after (for the sizing
//! guidance: `benches/memory.sh` measures the whole server, sled included).
//!
//! `cargo run --release -p tact-log --example statemem -- SNAPSHOT_FILE`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: statemem SNAPSHOT_FILE");
        std::process::exit(2);
    };
    let bytes = std::fs::read(&path).expect("read the snapshot");
    let before = rss_kib();
    let started = std::time::Instant::now();
    let (tag, states) = tact_log::snapshot::decode_snapshot(&bytes).expect("a valid snapshot");
    let secs = started.elapsed().as_secs_f64();
    // Measured with the file's bytes still held: the difference is the states alone.
    let after = rss_kib();
    drop(bytes);
    let customers = states.len().max(1) as u64;
    println!(
        "snapshot at log position {}: {} customers decoded in {secs:.2} s; state in memory {} MiB, {} bytes a customer",
        tag.position,
        states.len(),
        after.saturating_sub(before) / 1024,
        after.saturating_sub(before) * 1024 / customers
    );
}
