//! The built `alias-server` binary run as a child process, configured by environment variables
//! alone, as it is deployed. The guard kills it when dropped (the test ended or panicked) and,
//! when the test panicked, prints what it wrote on stdout and stderr.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use crate::helpers::TestClient;

/// How long a process may take to migrate its database and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ServerProcess {
    pub client: TestClient,
    name: &'static str,
    child: Child,
    /// Its stdout and stderr so far, line by line.
    output: Arc<Mutex<String>>,
    pub data_dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts the binary with only `env` (plus a data directory of its own, a free loopback
    /// port and JSON logs at `info`), and waits until it logs the address it listens on.
    pub async fn start(name: &'static str, env: &[(&str, String)]) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_alias-server"));
        command
            .env_clear()
            .env("ALIAS_BIND", "127.0.0.1:0")
            .env("ALIAS_DATA_DIR", data_dir.path())
            .env("ALIAS_LOG_FORMAT", "json")
            .env("ALIAS_LOG", "info")
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the alias-server binary");
        let output = Arc::new(Mutex::new(String::new()));
        let (listening, address) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            capture(stdout, Arc::clone(&output), Some(listening));
        }
        if let Some(stderr) = child.stderr.take() {
            capture(stderr, Arc::clone(&output), None);
        }
        let mut process = Self {
            client: TestClient::new(SocketAddr::from(([127, 0, 0, 1], 0))),
            name,
            child,
            output,
            data_dir,
        };
        let addr = tokio::task::spawn_blocking(move || address.recv_timeout(START_TIMEOUT))
            .await
            .expect("wait for the address");
        match addr {
            Ok(addr) => process.client = TestClient::new(addr),
            Err(_) => {
                let status = process.child.try_wait().ok().flatten();
                panic!(
                    "{name} did not start listening (exit status {status:?}):\n{}",
                    process.output()
                );
            }
        }
        process
    }

    /// Kills the process at once (SIGKILL: no shutdown, no last save), and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it wrote on stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl std::ops::Deref for ServerProcess {
    type Target = TestClient;
    fn deref(&self) -> &TestClient {
        &self.client
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- {} (alias-server, pid {}) output -----\n{}----- end of {} -----",
                self.name,
                self.child.id(),
                self.output(),
                self.name
            );
        }
    }
}

/// Copies `pipe` line by line into `output` on a thread of its own (until the process closes
/// it), handing the address of the `listening` log line to `listening`.
fn capture(
    pipe: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
    listening: Option<mpsc::Sender<SocketAddr>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(sender) = &listening
                && let Some(addr) = listening_address(&line)
            {
                let _ = sender.send(addr);
            }
            let mut output = output.lock().unwrap_or_else(PoisonError::into_inner);
            output.push_str(&line);
            output.push('\n');
        }
    });
}

/// The address in the server's JSON log line `{"message":"listening","address":"…"}`.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event["message"] != "listening" {
        return None;
    }
    event["address"].as_str()?.parse().ok()
}
