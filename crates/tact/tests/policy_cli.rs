//! `tact policy` end to end: check (plain words, differences, the rule and field at
//! fault), SIGHUP puts a new policy file in force, `tact policy reload`, and `tact
//! policy history` lists what took effect.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, policy_path, run, tact, text};

fn default_policy() -> String {
    std::fs::read_to_string(policy_path()).unwrap()
}

/// The shipped policy, renamed, with the email cap lowered from 3 to 2 a week.
fn two_emails() -> String {
    let text = default_policy()
        .replacen("version = \"default-2026.12\"", "version = \"two-emails\"", 1)
        .replacen("max = 3", "max = 2", 1);
    assert!(text.contains("two-emails"));
    text
}

#[test]
fn check_prints_the_rules_in_plain_words_and_the_differences() {
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("new.toml");
    std::fs::write(&file, two_emails()).unwrap();
    let out = run(tact(cwd.path())
        .args(["policy", "check"])
        .arg(&file)
        .arg("--against")
        .arg(policy_path()));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains(": valid"), "{stdout}");
    assert!(stdout.contains("policy two-emails"), "{stdout}");
    assert!(
        stdout.contains(
            "cap-email (frequency_cap): marketing, sales on email channels: at most 2 outreach in any 7 days"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("version: default-2026.12 -> two-emails"),
        "{stdout}"
    );
    assert!(stdout.contains("~ cap-email: was (frequency_cap)"), "{stdout}");
    // Against itself: nothing.
    let out = run(tact(cwd.path())
        .args(["policy", "check"])
        .arg(policy_path())
        .arg("--against")
        .arg(policy_path()));
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("no differences"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_names_the_rule_and_field_at_fault() {
    let cwd = tempfile::tempdir().unwrap();
    for (bad, rule, field) in [
        (
            default_policy().replacen("max = 3", "max = 0", 1),
            "cap-email",
            "max",
        ),
        (
            default_policy().replacen("window = \"7d\"", "window = \"a week\"", 1),
            "cap-call",
            "window",
        ),
        (
            default_policy().replacen("type = \"frequency_cap\"", "type = \"frequency_kap\"", 1),
            "cap-call",
            "type",
        ),
    ] {
        let file = cwd.path().join("bad.toml");
        std::fs::write(&file, bad).unwrap();
        let out = run(tact(cwd.path()).args(["policy", "check"]).arg(&file));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("rule `{rule}`")), "{stderr}");
        assert!(stderr.contains(&format!("field `{field}`")), "{stderr}");
    }
    // A file that is not there.
    let out = run(tact(cwd.path()).args(["policy", "check", "missing.toml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing.toml"),
        "{}",
        text(&out.stderr)
    );
}

fn check_version(cwd: &std::path::Path, url: &str) -> String {
    let out = run(tact(cwd).args([
        "check",
        "--server",
        url,
        "--customer",
        "c1",
        "--channel",
        "email",
        "--purpose",
        "marketing",
        "--json",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["policyVersion"].as_str().unwrap_or_default().to_owned()
}

fn wait_for_version(cwd: &std::path::Path, url: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = check_version(cwd, url);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "policy version {got}, never {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_and_reload_put_a_new_policy_in_force_and_history_lists_them() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let file = cwd.path().join("policy.toml");
    std::fs::write(&file, default_policy()).unwrap();
    let server = Server::start_with_policy(cwd.path(), &data, &file, &[]);
    let url = server.url();
    assert_eq!(check_version(cwd.path(), &url), "default-2026.12");

    // A bad file on SIGHUP keeps the policy in force.
    std::fs::write(&file, default_policy().replacen("max = 3", "max = 0", 1)).unwrap();
    let hup = |pid: u32| {
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    };
    hup(server.child.id());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(check_version(cwd.path(), &url), "default-2026.12");

    // A good one takes effect.
    std::fs::write(&file, two_emails()).unwrap();
    hup(server.child.id());
    wait_for_version(cwd.path(), &url, "two-emails");

    // `tact policy reload` does the same through the admin RPC.
    std::fs::write(&file, default_policy()).unwrap();
    let out = run(tact(cwd.path()).args(["policy", "reload", "--server", &url]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("policy default-2026.12 in force (was two-emails)"),
        "{stdout}"
    );
    assert_eq!(check_version(cwd.path(), &url), "default-2026.12");
    let out = run(tact(cwd.path()).args(["policy", "history", "--live", "--server", &url]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 3, "{}", text(&out.stdout));

    assert!(server.terminate().success());
    // Offline, on the data directory.
    let out = run(tact(cwd.path())
        .args(["policy", "history", "--json", "--data-dir"])
        .arg(&data));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let versions: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["version"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(versions, ["default-2026.12", "two-emails", "default-2026.12"]);
}
