//! The `tact` binary end to end: demo, serve + import + check + customer + replay, bad
//! configuration.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{Server, run, tact, text};

#[test]
fn demo_tells_every_story() {
    let cwd = tempfile::tempdir().unwrap();
    let out = run(tact(cwd.path()).arg("demo"));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    for verdict in ["verdict: DEFER", "verdict: DENY", "verdict: ALLOW"] {
        assert!(stdout.contains(verdict), "no {verdict} in:\n{stdout}");
    }
    // The stories are decided by the rules they are about.
    for rule in [
        "[research-cooldown] DEFER",
        "[earned-meeting] DENY",
        "[cap-all-channels] DEFER",
        "[quiet-hours] DEFER",
    ] {
        assert!(stdout.contains(rule), "no {rule} in:\n{stdout}");
    }
    assert!(stdout.contains("-> Authorize"), "{stdout}");
    assert!(
        stdout.contains("every story got the answer it expects"),
        "{stdout}"
    );
}

const EVENTS: &str = r#"{"eventId":"e1","customerId":"c1","occurredAt":"2025-03-02T09:00:00Z","source":"crm","consentChanged":{"channel":"CHANNEL_CALL","purpose":"PURPOSE_SALES","granted":true,"proof":"form-1"}}

{"eventId":"e2","customerId":"c1","occurredAt":"2026-03-02T09:00:00Z","source":"web","pageViewed":{"url":"/car/compare","category":"compare"}}
{"eventId":"e3","customerId":"c1","source":"web","pageViewed":{"url":"/blog","category":"blog"}}
{"eventId":"e4","customerId":"c2","occurredAt":"2026-03-01T09:00:00Z","source":"crm","consentChanged":{"channel":"CHANNEL_EMAIL","purpose":"PURPOSE_MARKETING","granted":true}}
this is not json
"#;

#[test]
fn serve_import_check_customer_replay() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let server = Server::start(cwd.path(), &data);
    let url = server.url();
    let events = cwd.path().join("events.jsonl");
    std::fs::write(&events, EVENTS).unwrap();

    // A bad line is reported with its number and reason and does not stop the others.
    let out = run(tact(cwd.path()).args(["import", "--server", &url]).arg(&events));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "import with bad lines must fail");
    assert!(
        stdout.contains("recorded 3, duplicate 0, rejected 2"),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("line 4: occurred_at: must be set"), "{stderr}");
    assert!(stderr.contains("line 6: json:"), "{stderr}");

    // Again, from stdin: everything good is now a duplicate.
    let mut child = tact(cwd.path())
        .args(["import", "-", "--server", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(EVENTS.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        text(&out.stdout).contains("recorded 0, duplicate 3, rejected 2"),
        "{}",
        text(&out.stdout)
    );

    // Only good lines: exit 0.
    let good: String = EVENTS
        .lines()
        .filter(|l| l.contains("occurredAt"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&events, &good).unwrap();
    let out = run(tact(cwd.path()).args(["import", "--server", &url]).arg(&events));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("recorded 0, duplicate 3, rejected 0"));
    // Written on Windows: a byte order mark and CRLF line ends read the same (found
    // probing: the first line, a withdrawal there, was rejected as not JSON).
    let windows = format!("\u{feff}{}", good.replace('\n', "\r\n"));
    std::fs::write(&events, windows).unwrap();
    let out = run(tact(cwd.path()).args(["import", "--server", &url]).arg(&events));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("recorded 0, duplicate 3, rejected 0"));

    let check = |args: &[&str]| {
        let out = run(tact(cwd.path()).args(["check", "--server", &url]).args(args));
        assert!(out.status.success(), "check {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let at = ["--at", "2026-03-02T10:00:00Z"];
    // Price research an hour ago: the call waits 48 h.
    let out = check(
        &[
            &["--customer", "c1", "--channel", "call", "--purpose", "sales"][..],
            &at[..],
        ]
        .concat(),
    );
    assert!(out.contains("verdict: DEFER until 2026-03-04T09:00:00Z"), "{out}");
    assert!(out.contains("- [research-cooldown] DEFER: "), "{out}");
    assert!(out.contains("- [consent] ALLOW: "), "{out}");
    // No consent for marketing email.
    let out = check(
        &[
            &["--customer", "c1", "--channel", "email", "--purpose", "marketing"][..],
            &at[..],
        ]
        .concat(),
    );
    assert!(out.contains("verdict: DENY"), "{out}");
    assert!(out.contains("- [consent] DENY: "), "{out}");
    // JSON, for machines.
    let out = check(
        &[
            &[
                "--customer",
                "c2",
                "--channel",
                "email",
                "--purpose",
                "marketing",
                "--json",
            ][..],
            &at[..],
        ]
        .concat(),
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(json["verdict"], "VERDICT_ALLOW", "{out}");
    assert_eq!(json["customerId"], "c2", "{out}");
    // Authorize records the authorization.
    let out = check(&[
        "--customer",
        "c2",
        "--channel",
        "email",
        "--purpose",
        "transactional",
        "--authorize",
    ]);
    assert!(
        out.contains("verdict: ALLOW") && out.contains("authorization recorded"),
        "{out}"
    );

    // Unknown channel names are refused with the list of known ones.
    let out = run(tact(cwd.path()).args([
        "check",
        "--customer",
        "c1",
        "--channel",
        "fax",
        "--purpose",
        "sales",
    ]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("sales_meeting"),
        "{}",
        text(&out.stderr)
    );

    let out = run(tact(cwd.path())
        .args(["customer", "c1", "--server", &url])
        .args(at));
    let view = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(view.contains("customer c1"), "{view}");
    assert!(view.contains("call for sales: granted via consent"), "{view}");
    assert!(view.contains("[research-cooldown]"), "{view}");
    let out = run(tact(cwd.path()).args(["customer", "c2", "--json", "--server", &url]));
    let json: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(json["customerId"], "c2");

    // Replay refuses while the server holds the data directory.
    let out = run(tact(cwd.path())
        .args(["replay", "--data-dir"])
        .arg(&data)
        .arg("--policy")
        .arg(common::policy_path()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("a running `tact serve` holds it"),
        "{}",
        text(&out.stderr)
    );

    // SIGTERM: a clean exit.
    let status = server.terminate();
    assert!(status.success(), "serve exited with {status}");

    let out = run(tact(cwd.path())
        .args(["replay", "--data-dir"])
        .arg(&data)
        .arg("--policy")
        .arg(common::policy_path()));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // 3 imported events and one authorization.
    assert!(stdout.contains("replayed 4 events (2 customers)"), "{stdout}");
    let out = run(tact(cwd.path())
        .args(["replay", "--until", "2026-03-01T12:00:00Z", "--data-dir"])
        .arg(&data)
        .arg("--policy")
        .arg(common::policy_path()));
    assert!(
        text(&out.stdout).contains("replayed 2 events that occurred until"),
        "{}",
        text(&out.stdout)
    );

    // The log moves to sled and back: every event (the 4 and the policy record) and the
    // same state each time.
    let digest = |stdout: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with("state digest"))
            .map(str::to_owned)
    };
    let before = digest(&stdout).expect("replay prints a state digest");
    for to in ["sled", "fjall"] {
        let out = run(tact(cwd.path())
            .args(["migrate-log", "--to", to, "--data-dir"])
            .arg(&data));
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("copied 5 events from"),
            "{}",
            text(&out.stdout)
        );
        assert!(data.join("log").is_dir());
        let out = run(tact(cwd.path())
            .args(["replay", "--data-dir"])
            .arg(&data)
            .arg("--policy")
            .arg(common::policy_path()));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("replayed 4 events (2 customers)"),
            "{to}: {stdout}"
        );
        assert_eq!(digest(&stdout).as_ref(), Some(&before), "{to}");
    }
    assert!(data.join("log.fjall-old").is_dir() && data.join("log.sled-old").is_dir());
    let out = run(tact(cwd.path())
        .args(["migrate-log", "--to", "fjall", "--data-dir"])
        .arg(&data));
    assert!(
        text(&out.stdout).contains("already in fjall"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bad_policy_stops_serve_naming_the_rule() {
    let cwd = tempfile::tempdir().unwrap();
    let policy = cwd.path().join("broken-policy.toml");
    std::fs::write(
        &policy,
        r#"version = "broken"
default_time_zone = "Europe/London"

[[rule]]
id = "cap-broken"
type = "frequency_cap"
max = 3
window = "7 days"
"#,
    )
    .unwrap();
    let out = run(tact(cwd.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(cwd.path().join("data"))
        .arg("--policy")
        .arg(&policy));
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cap-broken"), "{stderr}");
    assert!(stderr.contains("window"), "{stderr}");
    assert!(stderr.contains("broken-policy.toml"), "{stderr}");
}

#[test]
fn config_file_and_env_feed_settings() {
    let cwd = tempfile::tempdir().unwrap();
    // An explicit config file must exist.
    let out = run(tact(cwd.path()).args(["--config", "missing.toml", "replay"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing.toml"),
        "{}",
        text(&out.stderr)
    );

    // The file's policy setting is used, and the environment beats the file.
    let conf = cwd.path().join("tact.toml");
    std::fs::write(
        &conf,
        "policy = \"nowhere/policy.toml\"\ndata_dir = \"from-file\"\n",
    )
    .unwrap();
    let out = run(tact(cwd.path()).args(["--config"]).arg(&conf).arg("replay"));
    assert!(
        text(&out.stderr).contains("nowhere/policy.toml"),
        "{}",
        text(&out.stderr)
    );
    let out = run(tact(cwd.path())
        .args(["--config"])
        .arg(&conf)
        .arg("replay")
        .env("TACT_POLICY", common::policy_path()));
    assert!(
        text(&out.stderr).contains("no tact event log in from-file"),
        "{}",
        text(&out.stderr)
    );
    // And flags beat the environment.
    let out = run(tact(cwd.path())
        .args(["--config"])
        .arg(&conf)
        .args(["replay", "--data-dir", "from-flag"])
        .env("TACT_POLICY", common::policy_path())
        .env("TACT_DATA_DIR", "from-env"));
    assert!(
        text(&out.stderr).contains("no tact event log in from-flag"),
        "{}",
        text(&out.stderr)
    );

    // --help names the environment variables.
    let out = run(tact(cwd.path()).args(["serve", "--help"]));
    let help = text(&out.stdout);
    for var in [
        "TACT_LISTEN",
        "TACT_DATA_DIR",
        "TACT_POLICY",
        "TACT_CONFIG",
        "TACT_SNAPSHOT_ON_SHUTDOWN",
    ] {
        assert!(help.contains(var), "{var} not in --help:\n{help}");
    }
}

/// `tact backtest` re-decides the recorded outreach under a stricter candidate (one
/// marketing email a week instead of three) and reports what changes, as JSON and for
/// people.
#[test]
fn backtest_reports_what_a_stricter_policy_would_have_changed() {
    use tact_core::{Channel, Event, EventKind, Purpose, Span, Timestamp};
    use tact_log::Storage;

    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let t0 = Timestamp::parse_rfc3339("2026-11-02T10:00:00Z").unwrap();
    let day = |n: i64| t0.saturating_add(Span(n * 86_400_000));
    let mut events = Vec::new();
    for c in ["a", "b"] {
        events.push(Event {
            event_id: format!("{c}-consent"),
            customer_id: c.into(),
            occurred_at: day(-30),
            source: "crm".into(),
            kind: EventKind::ConsentChanged {
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                granted: true,
                expires_at: None,
                proof: "form".into(),
            },
        });
        for d in 0..3 {
            events.push(Event {
                event_id: format!("{c}-mail-{d}"),
                customer_id: c.into(),
                occurred_at: day(d),
                source: "esp".into(),
                kind: EventKind::OutreachSent {
                    channel: Channel::Email,
                    purpose: Purpose::Marketing,
                    campaign: "autumn".into(),
                    decision_id: None,
                },
            });
        }
    }
    {
        std::fs::create_dir_all(&data).unwrap();
        let storage = tact_log::SledStorage::open(data.join("log")).unwrap();
        storage.append(&events, &[]).unwrap();
        storage.flush().unwrap();
    }
    let policy = common::policy_path();
    let candidate = cwd.path().join("candidate.toml");
    let text_policy = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &candidate,
        text_policy
            .replacen("max = 3", "max = 1", 1)
            .replacen("version = \"", "version = \"strict-", 1),
    )
    .unwrap();
    let backtest = |json: bool| {
        let mut cmd = tact(cwd.path());
        cmd.args(["backtest", "--data-dir"])
            .arg(&data)
            .arg("--policy")
            .arg(&policy)
            .arg("--candidate")
            .arg(&candidate);
        if json {
            cmd.arg("--json");
        }
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let report: serde_json::Value = serde_json::from_str(&backtest(true)).unwrap();
    assert_eq!(report["outreach"], 6, "{report}");
    assert_eq!(report["baseline"]["allow"], 6, "{report}");
    assert_eq!(report["candidate"]["allow"], 2, "{report}");
    assert_eq!(report["candidate"]["defer"], 4, "{report}");
    assert_eq!(report["changed"], 4, "{report}");
    assert_eq!(report["customers_affected"], 2, "{report}");
    let change = &report["transitions"]["ALLOW->DEFER"];
    assert_eq!(change["count"], 4, "{report}");
    assert_eq!(change["by_rule"]["cap-email"], 4, "{report}");
    assert_eq!(change["by_channel_purpose"]["email/marketing"], 4, "{report}");
    assert_eq!(change["by_campaign"]["autumn"], 4, "{report}");

    let human = backtest(false);
    assert!(human.contains("changed: 4 (2 customers affected)"), "{human}");
    assert!(human.contains("ALLOW->DEFER: 4"), "{human}");
    assert!(human.contains("candidate: cap-email [DEFER]"), "{human}");

    // The same on a running server (--server): the same report, but for its timing.
    let timeless = |json: &str| {
        let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("elapsed_ms");
        o.remove("events_per_sec");
        v
    };
    let server = Server::start(cwd.path(), &data);
    let out = run(tact(cwd.path())
        .args(["backtest", "--json", "--server", &server.url(), "--baseline"])
        .arg(&policy)
        .arg("--candidate")
        .arg(&candidate));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let live = timeless(&text(&out.stdout));
    assert!(server.terminate().success());
    // Offline after the server stopped (its start recorded the policy: the same log).
    assert_eq!(live, timeless(&backtest(true)));
    assert_eq!(live["reading"], "as_happened");
}

/// `tact check` with several `--customer`s: one DecideBatch. A malformed id is named
/// (its index and field) and the others are still decided; the exit status says one
/// could not be.
#[test]
fn check_names_a_bad_customer_and_decides_the_rest() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let server = Server::start(cwd.path(), &data);
    let url = server.url();
    let out = run(tact(cwd.path()).args([
        "check",
        "--server",
        &url,
        "--customer",
        "c1",
        "--customer",
        "not an id",
        "--customer",
        "c3",
        "--channel",
        "email",
        "--purpose",
        "transactional",
    ]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        !out.status.success(),
        "a bad customer must fail the check:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("to 3 customers"), "{stdout}");
    // The good ones are decided, each under its name.
    for good in ["c1:", "c3:"] {
        let at = stdout
            .find(good)
            .unwrap_or_else(|| panic!("no {good} in:\n{stdout}"));
        assert!(
            stdout[at..]
                .lines()
                .nth(1)
                .is_some_and(|l| l.contains("verdict: ALLOW")),
            "{good} not decided:\n{stdout}"
        );
    }
    // The bad one is named: its index in the batch and the field at fault.
    assert!(
        stdout.contains("not decided: request 1 is not valid: customer_id:"),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 of 3 requests could not be decided"),
        "{stderr}"
    );
    assert!(server.terminate().success());
}

/// `tact bench`, the load generator users run against their deployment: it populates
/// customers, drives each call for the time asked and reports what it measured, its
/// own CPU use included; the verdicts it counts add up to the decisions it reports.
#[test]
fn bench_populates_drives_and_reports() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let server = Server::start(cwd.path(), &data);
    let url = server.url();
    let pid = server.child.id().to_string();
    let populate = run(tact(cwd.path()).args([
        "bench",
        "--target",
        &url,
        "--customers",
        "200",
        "--populate",
        "--populate-only",
        "--quiet",
    ]));
    assert!(populate.status.success(), "{}", text(&populate.stderr));
    for (op, detail) in [("batch", "verdict"), ("stream", "full"), ("decide", "rules")] {
        let out = run(tact(cwd.path()).args([
            "bench",
            "--target",
            &url,
            "--customers",
            "200",
            "--op",
            op,
            "--detail",
            detail,
            "--batch-size",
            "50",
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--server-pid",
            &pid,
            "--json",
            "--quiet",
        ]));
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{op}: {stdout}\n{stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{op}: not one JSON report ({e}):\n{stdout}"));
        let n = |k: &str| {
            report[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{op}: no {k} in {report}"))
        };
        assert!(n("decisions") > 0, "{op}: nothing decided: {report}");
        assert_eq!(n("errors"), 0, "{op}: {report}");
        assert_eq!(
            n("allow") + n("deny") + n("defer"),
            n("decisions"),
            "{op}: verdicts do not add up: {report}"
        );
        // A populated audience is not all one verdict.
        assert!(n("allow") > 0 && n("deny") > 0, "{op}: {report}");
        let client = report["client_cores"].as_f64().expect("client_cores");
        assert!(client > 0.0 && client < 4.0, "{op}: client_cores {client}");
        let server_cpu = report["server_cpu_us_per_decision"].as_f64().expect("server CPU");
        assert!(server_cpu > 0.0, "{op}: server CPU {server_cpu}");
        assert_eq!(n("requests"), n("latency_samples"), "{op}: {report}");
    }
    // Without --server-pid (a client on another host), every call in the window is
    // counted once: as many calls as latencies. (The counters used to be reset at every
    // tick of the window without it, so only the calls of its last instant counted.)
    let out = run(tact(cwd.path()).args([
        "bench",
        "--target",
        &url,
        "--customers",
        "200",
        "--op",
        "decide",
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--json",
        "--quiet",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let requests = report["requests"].as_u64().unwrap();
    assert!(requests > 2, "{report}");
    assert_eq!(Some(requests), report["latency_samples"].as_u64(), "{report}");
    assert_eq!(report["server_cores"], serde_json::Value::Null, "{report}");
    assert!(server.terminate().success());
}
