//! What the benchmarks share about a `kruised` process: spawning it on a free port, its
//! `/readyz` and `/metrics`, and its memory and CPU time from `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long any one phase of a benchmark may take before it gives up.
pub const PHASE_DEADLINE: Duration = Duration::from_secs(900);

/// How long a started agent may take to become ready.
const READY_DEADLINE: Duration = Duration::from_secs(120);

/// A `kruised` agent process, killed when dropped (also when a benchmark fails half-way).
pub struct AgentProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentProcess {
    /// Starts `kruised` for `node` on `runtime_endpoint`, logging to `log`.
    pub fn spawn(
        kruised: &Path,
        node: &str,
        runtime_endpoint: &str,
        kubeconfig: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        // A free port for /metrics and /readyz (released just before kruised binds it).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(kruised)
            .args(["--node-name", node, "--runtime-endpoint", runtime_endpoint])
            .arg(format!("--addr={addr}"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", kruised.display()))?;
        Ok(Self { child, addr })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET path` over HTTP/1.0: whether it answered 200, and the body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(bool, String)> {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let ok = response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Ok((ok, body))
    }

    /// Waits for `/readyz` (watches listed, CRI and API server reached), polling every
    /// `every`.
    pub async fn wait_ready_every(&self, every: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Ok((true, _)) = self.get("/readyz").await {
                return Ok(());
            }
            anyhow::ensure!(
                start.elapsed() < READY_DEADLINE,
                "kruised not ready after {READY_DEADLINE:?}"
            );
            tokio::time::sleep(every).await;
        }
    }

    /// Waits for `/readyz`, polling every 50 ms.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        self.wait_ready_every(Duration::from_millis(50)).await
    }

    /// The `/metrics` text.
    pub async fn scrape(&self) -> anyhow::Result<String> {
        let (ok, body) = self.get("/metrics").await?;
        anyhow::ensure!(ok, "GET /metrics failed");
        Ok(body)
    }
}

/// A `kruised manager` process, killed when dropped (also when a benchmark fails half-way).
pub struct ManagerProcess(pub Child);

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch folder under the temporary directory, removed when dropped unless
/// [`Scratch::keep`] was called (a failed run's logs are the evidence).
pub struct Scratch {
    path: PathBuf,
    keep: std::sync::atomic::AtomicBool,
}

impl Scratch {
    /// Creates `<tmp>/<prefix>-<pid>`.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self {
            path,
            keep: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the folder when dropped.
    pub fn keep(&self) {
        self.keep.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() || self.keep.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!("logs kept in {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Polls `check` every `every` until it gives a value, for at most [`PHASE_DEADLINE`].
pub async fn until<T, F, Fut>(what: &str, every: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        anyhow::ensure!(
            start.elapsed() < PHASE_DEADLINE,
            "gave up after {PHASE_DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`, `RssAnon`, `RssFile`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// KiB to MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU time the process (all its threads, live or exited) has used: `utime + stime` of
/// `/proc/<pid>/stat`, in clock ticks of 10 ms (`USER_HZ` is 100 in Linux's user ABI).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_memory_and_cpu() {
        let pid = std::process::id();
        let rss = proc_status_kib(pid, "VmRSS").expect("VmRSS");
        let hwm = proc_status_kib(pid, "VmHWM").expect("VmHWM");
        assert!(rss > 0 && hwm >= rss, "rss {rss} hwm {hwm}");
        assert!(proc_status_kib(pid, "NoSuchField").is_none());
        assert!(cpu_time(pid).is_some());
    }
}
