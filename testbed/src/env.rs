//! `testbed up` / `testbed down`: the whole local environment in one folder.
//!
//! `up DIR` brings up the real runtime side with `scripts/testenv up DIR` (registries,
//! containerd, test images), then starts one background `testbed serve-env DIR` process
//! that runs the API test server (with the reference CRDs applied) and a kubelet stand-in
//! for `NODE_NAME`. It returns once the node is Ready, after adding `KUBECONFIG`,
//! `APISERVER` and `APISERVER_ADMIN` to `DIR/env`. `down DIR` stops that process and then
//! the runtime side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::apiserver::{ApiServer, ApiServerConfig};
use crate::kubelet::{Kubelet, KubeletConfig};

/// The repository's scripts/testenv (the test bed is a dev-only tool run from the repo).
const TESTENV_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/testenv");
/// The reference CRDs applied to the API server (OpenKruise master).
pub const REFERENCE_CRDS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");
/// How long `up` waits for the node to become Ready.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Why the environment could not be brought up or down.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// scripts/testenv failed.
    #[error("scripts/testenv {action} failed ({status})")]
    Testenv {
        /// The subcommand (`up`, `down`, `stop-containerd`, …).
        action: &'static str,
        /// Its exit status.
        status: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The environment did not become ready.
    #[error("{0}")]
    NotReady(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EnvError + '_ {
    move |source| EnvError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a `KEY=value` file.
pub fn read_env(path: &Path) -> Result<BTreeMap<String, String>, EnvError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn write_env(path: &Path, values: &BTreeMap<String, String>) -> Result<(), EnvError> {
    let text: String = values.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(path, text).map_err(io(path))
}

fn testenv(action: &'static str, dir: &Path) -> Result<(), EnvError> {
    let status = Command::new(TESTENV_SCRIPT)
        .arg(action)
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .map_err(io(Path::new(TESTENV_SCRIPT)))?;
    if status.success() {
        Ok(())
    } else {
        Err(EnvError::Testenv {
            action,
            status: status.to_string(),
        })
    }
}

/// A daemon of the runtime side that fault-injection tests stop and start again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// containerd: stopped with SIGTERM (its shims and pods survive), started again on the
    /// same root, state and socket.
    Containerd,
    /// The plain registry: started again on the same port and storage.
    Registry,
}

/// `scripts/testenv stop-containerd|stop-registry DIR`.
pub fn stop_daemon(dir: &Path, daemon: Daemon) -> Result<(), EnvError> {
    match daemon {
        Daemon::Containerd => testenv("stop-containerd", dir),
        Daemon::Registry => testenv("stop-registry", dir),
    }
}

/// `scripts/testenv kill-containerd DIR`: SIGKILL, as in a crash (the socket file stays).
pub fn kill_containerd(dir: &Path) -> Result<(), EnvError> {
    testenv("kill-containerd", dir)
}

/// `scripts/testenv freeze-containerd|thaw-containerd DIR`: SIGSTOP (every CRI call hangs,
/// as on a runtime stuck on a slow disk) or SIGCONT.
pub fn freeze_containerd(dir: &Path, frozen: bool) -> Result<(), EnvError> {
    testenv(
        if frozen {
            "freeze-containerd"
        } else {
            "thaw-containerd"
        },
        dir,
    )
}

/// `scripts/testenv start-containerd|start-registry DIR`: returns once it serves.
pub fn start_daemon(dir: &Path, daemon: Daemon) -> Result<(), EnvError> {
    match daemon {
        Daemon::Containerd => testenv("start-containerd", dir),
        Daemon::Registry => testenv("start-registry", dir),
    }
}

/// `scripts/testenv down DIR`: stops the runtime side (containerd, its shims and pods,
/// the registries) and removes its mounts and cgroups.
pub fn runtime_down(dir: &Path) -> Result<(), EnvError> {
    testenv("down", dir)
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("pids/testbed.pid")
}

fn ready_file(dir: &Path) -> PathBuf {
    dir.join("testbed.env")
}

fn alive(pid: i32) -> bool {
    // Zombies count as gone: PID 1 on these machines reaps slowly.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.split_whitespace()
                .nth(2)
                .is_none_or(|state| state != "Z")
        })
        .unwrap_or(false)
}

fn running_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

/// `testbed up DIR`: returns the contents of `DIR/env` once everything is ready.
pub fn up(dir: &Path) -> Result<String, EnvError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
    testenv("up", &dir)?;
    if running_pid(&dir).is_none() {
        let _ = std::fs::remove_file(ready_file(&dir));
        let log_path = dir.join("logs/testbed.log");
        std::fs::create_dir_all(dir.join("logs")).map_err(io(&dir))?;
        std::fs::create_dir_all(dir.join("pids")).map_err(io(&dir))?;
        let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
        let log_err = log.try_clone().map_err(io(&log_path))?;
        let exe = std::env::current_exe().map_err(io(Path::new("testbed")))?;
        use std::os::unix::process::CommandExt;
        let child = Command::new(exe)
            .arg("serve-env")
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C in the caller's terminal must not stop it.
            .process_group(0)
            .spawn()
            .map_err(io(&dir))?;
        std::fs::write(pid_file(&dir), child.id().to_string()).map_err(io(&pid_file(&dir)))?;
    }
    let start = Instant::now();
    while !ready_file(&dir).exists() {
        if running_pid(&dir).is_none() {
            return Err(EnvError::NotReady(format!(
                "testbed serve-env exited; see {}",
                dir.join("logs/testbed.log").display()
            )));
        }
        if start.elapsed() > READY_DEADLINE {
            return Err(EnvError::NotReady(format!(
                "the node did not become Ready within {READY_DEADLINE:?}; see {}",
                dir.join("logs/testbed.log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut values = read_env(&dir.join("env"))?;
    values.extend(read_env(&ready_file(&dir))?);
    write_env(&dir.join("env"), &values)?;
    std::fs::read_to_string(dir.join("env")).map_err(io(&dir))
}

/// `testbed down DIR`: stops the API server and kubelet, then the runtime side.
pub fn down(dir: &Path) -> Result<(), EnvError> {
    if let Some(pid) = running_pid(dir) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let start = Instant::now();
        while alive(pid) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
    let _ = std::fs::remove_file(pid_file(dir));
    let _ = std::fs::remove_file(ready_file(dir));
    if let Ok(mut values) = read_env(&dir.join("env")) {
        for key in ["KUBECONFIG", "APISERVER", "APISERVER_ADMIN"] {
            values.remove(key);
        }
        let _ = write_env(&dir.join("env"), &values);
    }
    testenv("down", dir)
}

/// `testbed serve-env DIR`: the background process `up` starts.
pub async fn serve(
    dir: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), EnvError> {
    let env = read_env(&dir.join("env"))?;
    let get = |key: &str| {
        env.get(key)
            .cloned()
            .ok_or_else(|| EnvError::NotReady(format!("{}/env has no {key}", dir.display())))
    };
    let server = ApiServer::start(ApiServerConfig::default())
        .await
        .map_err(|e| EnvError::NotReady(e.to_string()))?;
    server
        .apply_crds_from_dir(Path::new(REFERENCE_CRDS))
        .map_err(|e| EnvError::NotReady(e.to_string()))?;
    let kubeconfig = dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .map_err(|e| EnvError::NotReady(e.to_string()))?;
    let node_name = get("NODE_NAME")?;
    let kubelet = Kubelet::start(KubeletConfig::new(
        node_name.clone(),
        server.client(),
        get("RUNTIME_ENDPOINT")?,
        get("CGROUP_PARENT_PREFIX")?,
        dir.join("pod-logs"),
    ))
    .await
    .map_err(|e| EnvError::NotReady(e.to_string()))?;
    let nodes: Api<Node> = Api::all(server.client());
    let start = Instant::now();
    loop {
        let ready = nodes
            .get_opt(&node_name)
            .await
            .ok()
            .flatten()
            .is_some_and(|node| {
                node.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        if ready {
            break;
        }
        if start.elapsed() > READY_DEADLINE {
            return Err(EnvError::NotReady(format!(
                "node {node_name} never became Ready"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let values = BTreeMap::from([
        ("KUBECONFIG".to_string(), kubeconfig.display().to_string()),
        ("APISERVER".to_string(), server.url()),
        ("APISERVER_ADMIN".to_string(), server.admin_url()),
    ]);
    // Written last: its existence tells `up` that everything is ready.
    let partial = dir.join("testbed.env.tmp");
    write_env(&partial, &values)?;
    std::fs::rename(&partial, ready_file(dir)).map_err(io(dir))?;
    tracing::info!(node = %node_name, api = %server.url(), "test bed ready");
    shutdown.await;
    kubelet.shutdown().await;
    server.shutdown();
    Ok(())
}
