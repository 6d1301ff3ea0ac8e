//! `tact decision` and `tact decisions` against a running `tact serve`, and the
//! records surviving its restart.

mod common;

use common::{Server, run, tact, text};

#[test]
fn decision_and_decisions_print_what_was_answered() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let server = Server::start(cwd.path(), &data);
    let url = server.url();
    let check = |args: &[&str]| {
        let out = run(tact(cwd.path())
            .args(["check", "--server", &url, "--json"])
            .args(args));
        assert!(out.status.success(), "check {args:?}: {}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["decisionId"].as_str().unwrap().to_owned()
    };
    let first = check(&["--customer", "c1", "--channel", "email", "--purpose", "marketing"]);
    let second = check(&[
        "--customer",
        "c1",
        "--channel",
        "call",
        "--purpose",
        "sales",
        "--campaign",
        "q4",
    ]);
    let _ = check(&["--customer", "c2", "--channel", "call", "--purpose", "sales"]);
    assert!(server.terminate().success());

    // The records survive the restart.
    let server = Server::start(cwd.path(), &data);
    let url = server.url();
    let out = run(tact(cwd.path()).args(["decision", "--server", &url, &second]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("Decide answered"), "{stdout}");
    assert!(
        stdout.contains("asked: call for sales to c1, campaign q4"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[consent] DENY: Customer never agreed to sales calls."),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("decision {second}")), "{stdout}");

    let out = run(tact(cwd.path()).args(["decisions", "--server", &url, "--customer", "c1", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ids: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["decision"]["decisionId"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids, [second.clone(), first.clone()], "newest first, only c1's");

    let out = run(tact(cwd.path()).args([
        "decisions",
        "--server",
        &url,
        "--customer",
        "c1",
        "--to",
        "2000-01-01T00:00:00Z",
    ]));
    assert!(
        text(&out.stdout).contains("no decisions kept for c1"),
        "{}",
        text(&out.stdout)
    );

    let out = run(tact(cwd.path()).args(["decision", "--server", &url, "d-unknown"]));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("NotFound"), "{}", text(&out.stderr));
    assert!(server.terminate().success());
}
