//! Helpers for tests that run the `tact` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tact_proto::pb::contact_policy_client::ContactPolicyClient;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_tact");

/// The shipped policy.
pub fn policy_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/policy.toml")
}

/// A `tact` command run in `cwd` (where no config/tact.toml exists), with no `TACT_*`
/// settings from the environment and quiet logs.
pub fn tact(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd);
    for (key, _) in std::env::vars() {
        if key.starts_with("TACT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG").args(["--log-level", "warn"]);
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run tact")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `tact serve` child process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Keeps reading the child's stdout so that it never writes into a closed pipe.
    _stdout: std::thread::JoinHandle<()>,
}

impl Server {
    /// Starts `tact serve` on an ephemeral port over `data_dir` and waits for its
    /// `listening on ADDR` line.
    pub fn start(cwd: &Path, data_dir: &Path) -> Server {
        Self::start_with(cwd, data_dir, &[])
    }

    /// Like [`Server::start`], with extra `serve` flags.
    pub fn start_with(cwd: &Path, data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_with_policy(cwd, data_dir, &policy_path(), extra)
    }

    /// Like [`Server::start_with`], with the policy file `policy`.
    pub fn start_with_policy(cwd: &Path, data_dir: &Path, policy: &Path, extra: &[&str]) -> Server {
        let mut child = tact(cwd)
            .arg("serve")
            .args(extra)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--policy")
            .arg(policy)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tact serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "tact serve did not print its address: {e}; exit: {:?}",
                    child.wait()
                );
            }
        };
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Server {
            child,
            addr,
            _stdout: reader,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> ContactPolicyClient<Channel> {
        ContactPolicyClient::connect(self.url()).await.expect("connect")
    }

    /// Sends SIGTERM (through kill(1): the tests do not link libc) and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        wait_timeout(&mut self.child, Duration::from_secs(30))
    }

    /// SIGKILL, as a crash.
    pub fn crash(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
