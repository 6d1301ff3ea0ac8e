//! `tact clients` and `tact serve --clients` end to end: keys printed once, SIGHUP
//! picks up a new client, a non-loopback address without clients is refused.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, run, tact, text};

fn check(cwd: &std::path::Path, url: &str, key: Option<&str>) -> std::process::Output {
    let mut cmd = tact(cwd);
    cmd.args([
        "check",
        "--server",
        url,
        "--customer",
        "c1",
        "--channel",
        "email",
        "--purpose",
        "marketing",
    ]);
    if let Some(key) = key {
        cmd.env("TACT_API_KEY", key);
    }
    run(&mut cmd)
}

fn add(cwd: &std::path::Path, clients: &str, id: &str, scopes: &str) -> String {
    let out = run(tact(cwd).args(["clients", "--clients", clients, "add", id, "--scopes", scopes]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the key alone on stdout: {stdout:?}");
    lines[0].to_owned()
}

#[test]
fn clients_add_list_remove_and_sighup_picks_up_a_new_key() {
    let cwd = tempfile::tempdir().unwrap();
    let clients = cwd.path().join("clients.toml");
    let clients = clients.to_str().unwrap();
    let crm = add(cwd.path(), clients, "crm", "decide,authorize");
    let file = std::fs::read_to_string(clients).unwrap();
    assert!(!file.contains(&crm), "the key itself is never stored");
    let out = run(tact(cwd.path()).args([
        "clients",
        "--clients",
        clients,
        "add",
        "ingest",
        "--scopes",
        "record",
        "--events-per-second",
        "500",
        "--burst",
        "100",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(tact(cwd.path()).args(["clients", "--clients", clients, "list"]));
    let listed = text(&out.stdout);
    assert!(listed.contains("crm\tscopes=decide,authorize"), "{listed}");
    assert!(
        listed.contains("ingest\tscopes=record\tdecisions=unlimited\tevents=500/s\tburst=100"),
        "{listed}"
    );
    let out = run(tact(cwd.path()).args(["clients", "--clients", clients, "add", "crm", "--scopes", "read"]));
    assert!(!out.status.success() && text(&out.stderr).contains("already"));
    let out = run(tact(cwd.path()).args(["clients", "--clients", clients, "remove", "ingest"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(tact(cwd.path()).args(["clients", "--clients", clients, "list"]));
    assert!(!text(&out.stdout).contains("ingest"));

    let server = Server::start_with(cwd.path(), &cwd.path().join("data"), &["--clients", clients]);
    let url = server.url();
    let out = check(cwd.path(), &url, None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).to_lowercase().contains("unauthenticated") || text(&out.stderr).contains("api key"),
        "{}",
        text(&out.stderr)
    );
    let out = check(cwd.path(), &url, Some(&crm));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let rep = add(cwd.path(), clients, "rep", "decide");
    assert!(
        !check(cwd.path(), &url, Some(&rep)).status.success(),
        "not before SIGHUP"
    );
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = check(cwd.path(), &url, Some(&rep));
        if out.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.terminate().success());
}

#[test]
fn serve_on_a_public_address_without_clients_refuses_to_start() {
    let cwd = tempfile::tempdir().unwrap();
    let out = run(tact(cwd.path())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(cwd.path().join("data"))
        .arg("--policy")
        .arg(common::policy_path()));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("refusing to serve without authentication on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--clients") && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );
}
