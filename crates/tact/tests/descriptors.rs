//! File descriptors: connections must never take the ones the event log needs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{BIN, policy_path};
use tact_core::{Channel, Purpose};
use tact_proto::pb;
use tact_tests::{consent, event, opted_in, wed_10am};

/// Found probing a release build: with the common soft limit of 1,024 open files and
/// the default `max_connections` of 10,000, idle connections took every descriptor, a
/// flush of the log could not open its file, and from then on every write, a consent
/// withdrawal included, was refused until a restart. tact now raises its soft limit to
/// the hard one and lowers `max_connections` to keep 512 descriptors (or half the
/// limit) for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_under_a_low_open_file_limit_leaves_the_log_writable() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "ulimit -n 400 && exec {BIN} serve --log-level warn --listen 127.0.0.1:0 \
         --data-dir {} --policy {}",
        dir.path().join("data").display(),
        policy_path().display()
    );
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tact serve");
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx_err.send(format!("stderr: {line}"));
        }
    });
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut warned, mut addr) = (None, None);
    while addr.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("tact serve starts");
        if line.contains("max_connections lowered") {
            warned = Some(line);
        } else if let Some(a) = line.strip_prefix("listening on ") {
            addr = Some(a.to_owned());
        }
    }
    let warned = warned.expect("a warning that max_connections was lowered");
    assert!(warned.contains("lowered_to=200"), "{warned}");
    let addr = addr.unwrap();
    let url = format!("http://{addr}");
    let mut client = pb::contact_policy_client::ContactPolicyClient::connect(url)
        .await
        .unwrap();
    let now = wed_10am();
    let record = async |client: &mut pb::contact_policy_client::ContactPolicyClient<_>, events| {
        client
            .record_events(pb::RecordEventsRequest { events })
            .await
            .map(|r| r.into_inner())
    };
    record(&mut client, opted_in("c1", now)).await.unwrap();
    // Far more idle connections than the limit allows: the server refuses those over
    // its lowered cap, and keeps its own descriptors.
    let idle: Vec<std::net::TcpStream> = (0..450)
        .filter_map(|_| std::net::TcpStream::connect(&*addr).ok())
        .collect();
    assert!(!idle.is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Writes keep going through (each its own flush), and the withdrawal takes effect.
    for i in 0..40 {
        let e = event(
            &format!("v{i}"),
            "c1",
            now,
            consent(Channel::Sms, Purpose::Service, i % 2 == 0),
        );
        record(&mut client, vec![e])
            .await
            .expect("the log stays writable");
    }
    let withdrawal = event(
        "w1",
        "c1",
        now,
        consent(Channel::Email, Purpose::Marketing, false),
    );
    let r = record(&mut client, vec![withdrawal])
        .await
        .expect("the withdrawal is recorded");
    assert_eq!(
        r.results[0].status,
        pb::RecordStatus::Recorded as i32,
        "{:?}",
        r.results[0]
    );
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
}
