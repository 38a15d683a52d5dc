//! The real `kruised` binary as a process under test (fault-injection suites): its log in
//! a file (to look for panics), its HTTP port (`/readyz`, `/metrics`), its memory from
//! `/proc`, and the test API server's admin endpoint to inject faults with.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use testbed::apiserver::{ApiServer, Usage};
use testbed::testenv::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running `kruised`; SIGKILLed when dropped, so a failing assertion leaves no process
/// behind.
pub struct AgentProcess {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Starts `binary` for `node` against the API server of `kubeconfig` and the test
    /// environment's containerd, logging at info to a file.
    pub fn start(binary: &Path, kubeconfig: &Path, node: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("kruised.log");
        let child = Command::new(binary)
            .args(["--node-name", node])
            .args(["--runtime-endpoint", TestEnv::get().runtime_endpoint()])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("kruised starts");
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET path` on the agent's HTTP port: the status code and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let code = text.get(9..12)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        self.get("/readyz").is_some_and(|(code, _)| code == 200)
    }

    /// The sum of the samples of `metric` whose label set contains `labels` (e.g.
    /// `method="PullImage"`), from `/metrics`.
    pub fn metric(&self, metric: &str, labels: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics")?;
        Some(
            text.lines()
                .filter(|line| {
                    line.strip_prefix(metric)
                        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                        && line.contains(labels)
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// CRI `PullImage` calls so far.
    pub fn pull_calls(&self) -> u64 {
        self.metric(
            "kruised_cri_call_duration_seconds_count",
            "method=\"PullImage\"",
        )
        .expect("the agent serves /metrics") as u64
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (showing the log's tail) if the agent's log reports a panic.
    pub fn assert_no_panic(&self) {
        let log = self.log();
        if log.contains("panicked") {
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("kruised panicked:\n{}", tail.join("\n"));
        }
    }

    /// The process's memory from `/proc/PID/status`.
    pub fn memory(&self) -> Memory {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            anon_kib: field("RssAnon:"),
            file_kib: field("RssFile:"),
        }
    }
}

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak of `VmRSS`.
    pub hwm_kib: u64,
    /// `RssAnon`: resident heap and stacks (what grows with input).
    pub anon_kib: u64,
    /// `RssFile`: resident pages of the binary and libraries (a debug binary's are large).
    pub file_kib: u64,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("KRUISED_TEST_LOG").is_some() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- kruised log (tail) ---\n{}", tail.join("\n"));
        }
    }
}

/// A request to the API server's admin endpoint: the status code and the JSON answer.
pub async fn admin(
    server: &ApiServer,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let addr = server.admin_url().trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let payload = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    // hyper may chunk the body: take the JSON between the first '{'/'[' and the last '}'/']'.
    let start = payload.find(['{', '[']).unwrap_or(0);
    let end = payload
        .rfind(['}', ']'])
        .map(|i| i + 1)
        .unwrap_or(payload.len());
    (
        status,
        serde_json::from_str(&payload[start..end]).unwrap_or(Value::Null),
    )
}

/// [`admin`] that must answer 200.
pub async fn inject(server: &ApiServer, path: &str, body: Value) {
    let (code, answer) = admin(server, "POST", path, Some(body)).await;
    assert_eq!(code, 200, "admin {path}: {answer}");
}

/// The accounting rows of clients whose User-Agent starts with `prefix`.
pub fn usage_of(server: &ApiServer, prefix: &str) -> Vec<Usage> {
    server
        .accounting()
        .snapshot()
        .into_iter()
        .filter(|row| row.user_agent.starts_with(prefix))
        .collect()
}

/// The requests of `verb` (on any resource) by clients whose User-Agent starts with
/// `prefix`.
pub fn requests(server: &ApiServer, prefix: &str, verb: &str) -> u64 {
    usage_of(server, prefix)
        .iter()
        .filter(|row| row.verb == verb)
        .map(|row| row.requests)
        .sum()
}
