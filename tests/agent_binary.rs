//! The `kruised` binary: start-up against real containerd, HTTP surface, signals.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{TestEnv, closed_port};

/// A running kruised whose stderr is collected line by line.
struct Agent {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kruised"))
            .args(args)
            .env_remove("NODE_NAME")
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kruised");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, log }
    }

    fn wait_for_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        self.wait_for_line_while(what, || {}, matches)
    }

    /// Like [`Self::wait_for_line`], doing `action` before each look.
    fn wait_for_line_while(
        &self,
        what: &str,
        mut action: impl FnMut(),
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            action();
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| matches(l)) {
                return line.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no log line for {what}; log so far:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every line logged so far.
    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "kruised did not exit within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to kruised");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A kubeconfig whose server refuses connections: the API server "doesn't answer".
fn dead_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster: {{server: \"http://127.0.0.1:{}\"}}\ncontexts:\n- name: dead\n  context: {{cluster: dead, user: u}}\ncurrent-context: dead\nusers:\n- name: u\n  user: {{token: t}}\n",
            closed_port()
        ),
    )
    .unwrap();
    path
}

#[test]
fn connects_to_containerd_serves_health_and_stops_on_sigterm() {
    let env = TestEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dead_kubeconfig(dir.path());
    let port = closed_port();
    let addr = format!("127.0.0.1:{port}");
    let mut agent = Agent::start(&[
        "--node-name=test-node",
        "--runtime-endpoint",
        env.runtime_endpoint(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--addr",
        &addr,
        // kruise-daemon's own manifest arguments must be accepted (§8.1).
        "--logtostderr=true",
        "-v=5",
        "--feature-gates=AllAlpha=true,AllBeta=true",
    ]);
    let line = agent.wait_for_line("CRI connected", |l| l.contains("CRI connected"));
    assert!(line.contains("runtime=containerd"), "{line}");
    assert!(line.contains("version="), "{line}");
    assert!(line.contains(env.runtime_endpoint()), "{line}");
    agent.wait_for_line("API server retry", |l| {
        l.contains("API server not reachable yet")
    });

    let (status, body) = http_get(port, "/livez");
    assert_eq!((status, body.as_str()), (200, "ok"));
    // CRI is up, the API server is not: not ready, and healthz names the check.
    let (status, body) = http_get(port, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("[+]cri ok") && body.contains("[-]apiserver not ready"),
        "{body}"
    );
    let (status, body) = http_get(port, "/healthz");
    assert_eq!(
        (status, body.as_str()),
        (500, "check apiserver failed, err: not synced")
    );
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("kruised_cri_call_duration_seconds_count{method=\"Version\",code=\"OK\"}"),
        "{body}"
    );

    kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    agent.wait_for_line("stop message", |l| l.contains("kruised stopped"));
}

#[test]
fn sigusr1_raises_the_log_level_at_runtime_and_sigusr2_restores_it() {
    let env = TestEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dead_kubeconfig(dir.path());
    let port = closed_port();
    let addr = format!("127.0.0.1:{port}");
    let mut agent = Agent::start(&[
        "--node-name=test-node",
        "--runtime-endpoint",
        env.runtime_endpoint(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--addr",
        &addr,
        "--log-format=json",
    ]);
    agent.wait_for_line("CRI connected", |l| l.contains("CRI connected"));
    let pid = Pid::from_raw(agent.child.id() as i32);
    // At the default level a probe leaves no trace; the request lines are debug.
    assert_eq!(http_get(port, "/livez?before").0, 200);
    kill(pid, Signal::SIGUSR1).unwrap();
    let line = agent.wait_for_line("the raise", |l| l.contains("log filter changed"));
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["filter"], "info,kruised=debug", "{line}");
    // Poll: the request that proves the new level may race the reload by a moment.
    agent.wait_for_line_while(
        "a debug line for a probe",
        || {
            let _ = http_get(port, "/livez?after");
        },
        |l| l.contains("/livez") && l.contains("DEBUG"),
    );
    kill(pid, Signal::SIGUSR2).unwrap();
    let line = agent.wait_for_line("the restore", |l| {
        l.contains("log filter changed") && l.contains(r#""filter":"info""#)
    });
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["level"], "INFO", "{line}");
    // The line for `?before` was never written: the default level really was info.
    assert!(
        !agent
            .lines()
            .iter()
            .any(|l| l.contains("/livez") && l.contains("DEBUG") && l.contains("before")),
        "a debug line was written before SIGUSR1"
    );
    kill(pid, Signal::SIGTERM).unwrap();
    assert!(agent.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn missing_node_name_is_a_one_line_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_kruised"))
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("NODE_NAME"), "{stderr}");
}

#[test]
fn unknown_flags_are_rejected_like_kruise_daemon() {
    let output = Command::new(env!("CARGO_BIN_EXE_kruised"))
        .args(["--node-name=x", "--no-such-flag"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[test]
fn help_lists_the_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_kruised"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--runtime-endpoint",
        "--socket-file",
        "--addr",
        "--node-name",
        "--log-format",
        "--feature-gates",
        "--max-workers-for-pull-image",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}
