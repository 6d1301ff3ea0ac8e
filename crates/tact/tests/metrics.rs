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
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn metrics_without_kafka_show_requests_and_decisions_by_verdict_and_rule() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let server = Server::start_with(
        cwd.path(),
        &cwd.path().join("data"),
        &["--metrics-listen", &metrics],
    );
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
