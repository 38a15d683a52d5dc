//! The real test environment (containerd + registries from `scripts/testenv`), as tests
//! see it. Shared by the test bed's tests and, through `#[path]`, by kruised's own
//! integration tests, so there is one definition of where the environment lives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The values `scripts/testenv up` writes into `DIR/env`.
#[derive(Debug, Clone)]
pub struct TestEnv {
    vars: HashMap<String, String>,
}

/// The environment of this process: [`TestEnv::get`] or [`TestEnv::use_dir`].
static ENV: OnceLock<TestEnv> = OnceLock::new();

/// `scripts/testenv up DIR`; panics if it fails.
fn up(root: &Path, dir: &Path) {
    let script = root.join("scripts/testenv");
    let status = Command::new(&script)
        .arg("up")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "scripts/testenv up {} failed",
        dir.display()
    );
}

/// The repository root (this file is in testbed/src/, and also compiled from tests/).
fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("scripts/testenv").exists() {
        here.to_path_buf()
    } else {
        here.join("..")
    }
}

impl TestEnv {
    /// The running test environment. When `TESTENV_DIR` is not set (a bare
    /// `cargo test`), this brings one up under the target directory, once per test
    /// binary. It never skips: a missing environment fails the test loudly.
    pub fn get() -> &'static TestEnv {
        ENV.get_or_init(|| {
            let dir = match std::env::var("TESTENV_DIR") {
                Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => {
                    let root = repo_root();
                    let dir = root.join("target/testenv");
                    up(&root, &dir);
                    dir
                }
            };
            Self::load(&dir)
        })
    }

    /// Makes `dir` this process's environment instead of the shared one, bringing it up
    /// if needed: for a suite that stops and starts containerd or the registry, which must
    /// not disturb the test binaries running in parallel on the shared environment. Call
    /// it before anything calls [`TestEnv::get`]; panics if another one is in use.
    pub fn use_dir(dir: &Path) -> &'static TestEnv {
        let env = ENV.get_or_init(|| {
            up(&repo_root(), dir);
            Self::load(dir)
        });
        assert_eq!(
            env.dir(),
            dir,
            "this test binary already uses another test environment"
        );
        env
    }

    /// Reads `dir/env`.
    fn load(dir: &Path) -> TestEnv {
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
