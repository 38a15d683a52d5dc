//! Shared test support: the real test environment (containerd + registries) and
//! polling helpers. Each integration test binary includes this with `mod support;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The values `scripts/testenv up` writes into `DIR/env`.
#[derive(Debug, Clone)]
pub struct TestEnv {
    vars: HashMap<String, String>,
}

impl TestEnv {
    /// The running test environment. When `TESTENV_DIR` is not set (a bare
    /// `cargo test`), this brings one up under the target directory, once per test
    /// binary. It never skips: a missing environment fails the test loudly.
    pub fn get() -> &'static TestEnv {
        static ENV: OnceLock<TestEnv> = OnceLock::new();
        ENV.get_or_init(|| {
            let dir = match std::env::var("TESTENV_DIR") {
                Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => {
                    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/testenv");
                    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testenv");
                    let status = Command::new(&script)
                        .arg("up")
                        .arg(&dir)
                        .stdout(std::process::Stdio::null())
                        .status()
                        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
                    assert!(
                        status.success(),
                        "scripts/testenv up {} failed",
                        dir.display()
                    );
                    dir
                }
            };
            let text = std::fs::read_to_string(dir.join("env")).unwrap_or_else(|e| {
                panic!(
                    "the test environment is not up ({}/env: {e}); run scripts/testenv up DIR",
                    dir.display()
                )
            });
            let vars = text
                .lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            TestEnv { vars }
        })
    }

    /// One value; panics naming the key if the environment lacks it.
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("test environment has no {key}"))
    }

    /// `unix:///…/containerd.sock`.
    pub fn runtime_endpoint(&self) -> &str {
        self.var("RUNTIME_ENDPOINT")
    }

    /// The plain registry, `127.0.0.1:PORT`.
    pub fn registry(&self) -> &str {
        self.var("REGISTRY")
    }

    /// The htpasswd-protected registry.
    pub fn registry_auth(&self) -> &str {
        self.var("REGISTRY_AUTH")
    }

    /// The test environment's folder.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(self.var("TESTENV_DIR"))
    }

    /// A reference in the plain registry, e.g. `image("test/busybox:1")`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.registry())
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `deadline`
/// with `what` in the message.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unique suffix for names in one test run.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// A TCP port on loopback where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
