//! Finding the node's container runtimes, compatibly with kruise-daemon (§2.1, §2.2).

use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use super::client::CriClient;
use super::container_id::ContainerId;
use super::endpoint::RuntimeEndpoint;
use super::error::CriError;
use crate::metrics::CriMetrics;

/// Where the host's `/var/run` is mounted in the agent's container (§2.1, §8.1).
pub const DEFAULT_HOST_VAR_RUN: &str = "/hostvarrun";

/// kruise-daemon's candidate sockets, relative to `/hostvarrun`, in its probing order.
const KRUISE_CANDIDATES: &[&str] = &[
    "containerd.sock",
    "containerd/containerd.sock",
    "crio.sock",
    "crio/crio.sock",
    "cri-dockerd.sock",
    "cri-dockerd/cri-dockerd.sock",
];

/// Sockets probed after kruise's: k3s/RKE2's containerd under the mounted `/var/run`,
/// then the same paths on the host itself for an agent running as a host service.
const EXTRA_HOST_VAR_RUN_CANDIDATES: &[&str] = &["k3s/containerd/containerd.sock"];
const HOST_CANDIDATES: &[&str] = &[
    "/run/k3s/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
];

/// How to look for runtimes.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Where the host's `/var/run` is mounted (`/hostvarrun` in the DaemonSet).
    pub host_var_run: PathBuf,
    /// kruise's `--socket-file`: a file name relative to `host_var_run`. When set, it is
    /// the only candidate.
    pub socket_file: Option<String>,
    /// `--runtime-endpoint`: an absolute socket path or `unix://` URI. When set, it is
    /// the only candidate and wins over `socket_file`.
    pub runtime_endpoint: Option<String>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            host_var_run: PathBuf::from(DEFAULT_HOST_VAR_RUN),
            socket_file: None,
            runtime_endpoint: None,
        }
    }
}

impl DiscoveryConfig {
    /// The endpoints to try, in order. Only sockets that exist are returned, except an
    /// explicit `--runtime-endpoint`, which is always tried so its error is reported.
    pub fn candidates(&self) -> Result<Vec<RuntimeEndpoint>, CriError> {
        if let Some(endpoint) = &self.runtime_endpoint {
            return Ok(vec![RuntimeEndpoint::parse(endpoint)?]);
        }
        if let Some(file) = self.socket_file.as_deref().filter(|f| !f.is_empty()) {
            // kruise joins the name under /hostvarrun even when it is absolute, giving
            // "/hostvarrun//var/run/x.sock" (§2.1, §10 item 4). Path::join would instead
            // replace the base with an absolute name, so strip the leading slash to keep
            // kruise's meaning.
            let path = self.host_var_run.join(file.trim_start_matches('/'));
            return Ok(existing(vec![path]));
        }
        let mut paths: Vec<PathBuf> = KRUISE_CANDIDATES
            .iter()
            .chain(EXTRA_HOST_VAR_RUN_CANDIDATES)
            .map(|name| self.host_var_run.join(name))
            .collect();
        paths.extend(HOST_CANDIDATES.iter().map(PathBuf::from));
        Ok(existing(paths))
    }

    /// Finds, connects and validates every candidate. A candidate that fails validation
    /// is skipped with a warning, as kruise-daemon does; no surviving runtime is an error
    /// naming what was tried.
    pub async fn discover(&self, metrics: Option<CriMetrics>) -> Result<RuntimeSet, CriError> {
        let candidates = self.candidates()?;
        if candidates.is_empty() {
            return Err(CriError::NoRuntime(format!(
                "no CRI socket found under {} or the standard host paths",
                self.host_var_run.display()
            )));
        }
        let mut runtimes: Vec<CriClient> = Vec::new();
        let mut last_error = None;
        for endpoint in candidates {
            debug!(%endpoint, "validating CRI endpoint");
            match CriClient::connect(&endpoint, metrics.clone()).await {
                // Two paths to one socket (for example /hostvarrun/containerd.sock and
                // a symlink) must not make the same runtime appear twice.
                Ok(client)
                    if runtimes
                        .iter()
                        .any(|r| same_socket(r.endpoint(), &endpoint)) =>
                {
                    debug!(%endpoint, runtime = %client.info().name, "duplicate socket skipped");
                }
                Ok(client) => runtimes.push(client),
                Err(error) => {
                    warn!(%endpoint, %error, "CRI endpoint failed validation, skipping it");
                    last_error = Some(error);
                }
            }
        }
        if runtimes.is_empty() {
            return Err(last_error
                .unwrap_or_else(|| CriError::NoRuntime("no candidate survived".to_string())));
        }
        Ok(RuntimeSet { runtimes })
    }
}

fn existing(paths: Vec<PathBuf>) -> Vec<RuntimeEndpoint> {
    let mut found: Vec<RuntimeEndpoint> = Vec::new();
    for path in paths {
        if path.exists() && !found.iter().any(|e| e.path() == path) {
            found.push(RuntimeEndpoint::from_path(path));
        }
    }
    found
}

fn same_socket(a: &RuntimeEndpoint, b: &RuntimeEndpoint) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).ok();
    a.path() == b.path()
        || (canonical(a.path()).is_some() && canonical(a.path()) == canonical(b.path()))
}

/// The runtimes that survived validation, in discovery order.
#[derive(Debug, Clone)]
pub struct RuntimeSet {
    runtimes: Vec<CriClient>,
}

impl RuntimeSet {
    /// A set from already validated clients, first is primary.
    pub fn new(runtimes: Vec<CriClient>) -> Option<Self> {
        (!runtimes.is_empty()).then_some(Self { runtimes })
    }

    /// The first runtime found: used for image pulls and probes, as in kruise (§2.2).
    pub fn primary(&self) -> &CriClient {
        &self.runtimes[0]
    }

    /// Every runtime, in discovery order.
    pub fn all(&self) -> &[CriClient] {
        &self.runtimes
    }

    /// The runtime whose CRI name is `name` (`containerd`, `cri-o`, `docker`).
    pub fn by_name(&self, name: &str) -> Result<&CriClient, CriError> {
        self.runtimes
            .iter()
            .find(|runtime| runtime.info().name == name)
            .ok_or_else(|| CriError::UnknownRuntime {
                name: name.to_string(),
                available: self
                    .runtimes
                    .iter()
                    .map(|r| r.info().name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The runtime that owns a container, from its `<runtime>://<id>` prefix.
    pub fn for_container(&self, container_id: &ContainerId) -> Result<&CriClient, CriError> {
        self.by_name(&container_id.runtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    fn paths(endpoints: &[RuntimeEndpoint]) -> Vec<PathBuf> {
        endpoints.iter().map(|e| e.path().to_path_buf()).collect()
    }

    #[test]
    fn probes_kruise_candidates_in_kruise_order() {
        let root = tempfile::tempdir().unwrap();
        // Created in reverse to prove the order comes from the list, not the disk.
        for name in KRUISE_CANDIDATES.iter().rev() {
            touch(&root.path().join(name));
        }
        let config = DiscoveryConfig {
            host_var_run: root.path().to_path_buf(),
            ..Default::default()
        };
        let found = paths(&config.candidates().unwrap());
        let expected: Vec<PathBuf> = KRUISE_CANDIDATES
            .iter()
            .map(|n| root.path().join(n))
            .collect();
        assert_eq!(&found[..expected.len()], &expected[..]);
    }

    #[test]
    fn k3s_socket_under_host_var_run_is_probed_after_kruise_candidates() {
        let root = tempfile::tempdir().unwrap();
        touch(&root.path().join("k3s/containerd/containerd.sock"));
        touch(&root.path().join("crio.sock"));
        let config = DiscoveryConfig {
            host_var_run: root.path().to_path_buf(),
            ..Default::default()
        };
        let found = paths(&config.candidates().unwrap());
        assert_eq!(found[0], root.path().join("crio.sock"));
        assert_eq!(found[1], root.path().join("k3s/containerd/containerd.sock"));
    }

    #[test]
    fn socket_file_is_a_name_under_host_var_run_and_the_only_candidate() {
        let root = tempfile::tempdir().unwrap();
        touch(&root.path().join("containerd.sock"));
        touch(&root.path().join("custom/runtime.sock"));
        let config = DiscoveryConfig {
            host_var_run: root.path().to_path_buf(),
            socket_file: Some("custom/runtime.sock".into()),
            runtime_endpoint: None,
        };
        assert_eq!(
            paths(&config.candidates().unwrap()),
            vec![root.path().join("custom/runtime.sock")]
        );
        let missing = DiscoveryConfig {
            socket_file: Some("nope.sock".into()),
            ..config
        };
        assert!(missing.candidates().unwrap().is_empty());
    }

    #[test]
    fn runtime_endpoint_wins_and_is_tried_even_if_missing() {
        let config = DiscoveryConfig {
            host_var_run: PathBuf::from("/nonexistent"),
            socket_file: Some("containerd.sock".into()),
            runtime_endpoint: Some("unix:///tmp/does-not-exist.sock".into()),
        };
        assert_eq!(
            paths(&config.candidates().unwrap()),
            vec![PathBuf::from("/tmp/does-not-exist.sock")]
        );
    }

    #[tokio::test]
    async fn no_socket_anywhere_is_a_precise_error() {
        let root = tempfile::tempdir().unwrap();
        let config = DiscoveryConfig {
            host_var_run: root.path().to_path_buf(),
            socket_file: Some("absent.sock".into()),
            runtime_endpoint: None,
        };
        let error = config.discover(None).await.unwrap_err();
        assert!(matches!(error, CriError::NoRuntime(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("not found container runtime sock")
        );
    }
}
