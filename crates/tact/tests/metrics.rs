//! `/metrics` without Kafka: requests, latency and decisions by verdict and rule.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Server, run, tact, text};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> String {
    scrape_within(port, Duration::from_secs(5))
}

fn scrape_within(port: u16, wait: Duration) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `tact serve` with `--metrics-listen` on a free port, and that port.
fn serve_with_metrics(cwd: &std::path::Path) -> (Server, u16) {
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let server = Server::start_with(cwd, &cwd.join("data"), &["--metrics-listen", &metrics]);
    (server, port)
}

#[test]
fn metrics_without_kafka_show_requests_and_decisions_by_verdict_and_rule() {
    let cwd = tempfile::tempdir().unwrap();
    let (server, port) = serve_with_metrics(cwd.path());
    let url = server.url();
    for channel in ["email", "call", "sms"] {
        let out = run(tact(cwd.path()).args([
            "check",
            "--server",
            &url,
            "--customer",
            "c1",
            "--channel",
            channel,
            "--purpose",
            "marketing",
        ]));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // A proposal that is not valid is a request (code invalid_argument), not a decision.
    let out = run(tact(cwd.path()).args([
        "check",
        "--server",
        &url,
        "--customer",
        "c1\u{7}",
        "--channel",
        "email",
        "--purpose",
        "marketing",
    ]));
    assert!(!out.status.success());
    let body = scrape(port);
    assert!(
        body.contains("tact_decisions_total{verdict=\"deny\"} 3\n"),
        "{body}"
    );
    assert!(
        body.contains("tact_decision_rules_total{verdict=\"deny\",rule=\"consent\"} 3\n"),
        "{body}"
    );
    assert!(
        body.contains("tact_requests_total{method=\"Decide\",code=\"invalid_argument\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("tact_requests_total{method=\"Decide\",code=\"ok\"} 3"),
        "{body}"
    );
    assert!(
        body.contains("tact_request_duration_seconds_bucket{method=\"Decide\",le=\"0.001\"}"),
        "{body}"
    );
    // A stream's answers are counted as they leave (tallied a chunk at a time).
    let out = run(tact(cwd.path()).args([
        "bench",
        "--target",
        &url,
        "--op",
        "stream",
        "--concurrency",
        "2",
        "--batch-size",
        "100",
        "--customers",
        "50",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--quiet",
        "--json",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let streamed = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["decisions"]
        .as_u64()
        .unwrap();
    assert!(streamed > 0);
    let body = scrape(port);
    let counted: u64 = ["allow", "deny", "defer"]
        .iter()
        .filter_map(|v| {
            let line = format!("tact_decisions_total{{verdict=\"{v}\"}} ");
            body.lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .map(|n| n.parse::<u64>().unwrap())
        })
        .sum();
    // Answers sent and not yet read when the load stopped are counted too.
    assert!(
        counted >= 3 + streamed,
        "{counted} counted, 3 + {streamed} answered: {body}"
    );
    // The storage engines' write buffers, sampled every second: there, and in bounds.
    for store in ["log", "audit"] {
        assert!(
            body.contains(&format!(
                "tact_storage_write_buffer_over_bound{{store=\"{store}\"}} 0\n"
            )),
            "{body}"
        );
        assert!(
            body.contains(&format!("tact_storage_write_buffer_bytes{{store=\"{store}\"}} ")),
            "{body}"
        );
    }
    assert!(server.terminate().success());
}

/// Found probing a release build: the metrics listener accepted any number of
/// connections and never timed one out, so idle ones took every file descriptor (the
/// event log then failed to flush and refused every write, withdrawals included), and
/// it retried a failed accept at once, logging a million lines a second. Now at most
/// 16 are served at once and each must send its request within 5 s.
#[test]
fn idle_connections_to_the_metrics_listener_are_bounded_and_timed_out() {
    let cwd = tempfile::tempdir().unwrap();
    let (server, port) = serve_with_metrics(cwd.path());
    let idle: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // A scrape behind them is answered once the first 16 are timed out (after the 5 s
    // header timeout: the scrape waits longer than that).
    let started = std::time::Instant::now();
    let body = scrape_within(port, Duration::from_secs(20));
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(body.contains("# TYPE"), "{body}");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    // The idle connections were closed by the server (end of stream, not a timeout).
    for mut s in idle.into_iter().take(16) {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    // Anything but GET /metrics is told where the metrics are.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.contains(" 404 ") && out.contains("GET /metrics"), "{out}");
    drop(server);
}
