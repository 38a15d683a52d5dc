//! Many fake container runtimes from one process: each simulated node gets its own
//! [`FakeCri`] (its own images, pods, scripts and content store) served on
//! `DIR/node-<i>.sock`, all on the caller's tokio runtime, so a scale test can run
//! hundreds of kruised instances against "nodes" without hundreds of containerds.
//!
//! An idle node costs one listening socket (one file descriptor) and one server task;
//! each client connection adds one descriptor. [`serve_many`] refuses to start when the
//! listeners alone would not fit under the soft `RLIMIT_NOFILE`, and warns when there
//! is no room for about two connections per node.

use std::future::Future;
use std::path::{Path, PathBuf};

use kruised::cri::fake::{FakeCri, FakeCriError, FakeCriHandle};

/// Descriptors kept free for everything else the process opens (logs, the runtime's
/// own, the admin listeners of other testbed parts).
const RESERVED_DESCRIPTORS: u64 = 64;
/// Connections a node is expected to carry: kruised's channel and a kubelet stand-in's.
const EXPECTED_CONNECTIONS_PER_NODE: u64 = 2;

/// Why a fleet could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The socket directory could not be created.
    #[error("failed to create the socket directory {}: {source}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The listeners alone would exceed the process's open-file limit.
    #[error(
        "{nodes} nodes need {needed} open files but the soft limit is {limit}; raise it with `ulimit -n`"
    )]
    TooManyNodes {
        /// Nodes asked for.
        nodes: usize,
        /// Descriptors needed: those open now, one listener per node, and a reserve.
        needed: u64,
        /// The soft `RLIMIT_NOFILE`.
        limit: u64,
    },
    /// One node's server could not be started or did not stop cleanly.
    #[error("fake CRI node {node}: {source}")]
    Node {
        /// The node's index.
        node: usize,
        /// The underlying error.
        source: FakeCriError,
    },
}

/// N fake runtimes served from one process; see the [module docs](self). Dropping the
/// fleet stops every server and removes its socket.
#[derive(Debug)]
pub struct FakeCriFleet {
    dir: PathBuf,
    nodes: Vec<FakeCriHandle>,
}

impl FakeCriFleet {
    /// The directory holding the sockets.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many nodes the fleet serves.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the fleet serves no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `index`'s fake runtime, to script and inspect while clients talk to it.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`FakeCriFleet::len`].
    pub fn node(&self, index: usize) -> &FakeCri {
        self.nodes[index].fake()
    }

    /// Node `index`'s running server (its socket path and `unix://` endpoint).
    ///
    /// # Panics
    ///
    /// If `index` is not below [`FakeCriFleet::len`].
    pub fn handle(&self, index: usize) -> &FakeCriHandle {
        &self.nodes[index]
    }

    /// Every node's running server, in index order.
    pub fn handles(&self) -> &[FakeCriHandle] {
        &self.nodes
    }

    /// Stops every server at once, ending the calls still waiting with UNAVAILABLE, and
    /// removes the sockets. Reports the first node that did not stop cleanly.
    pub async fn shutdown(self) -> Result<(), FleetError> {
        let results =
            futures::future::join_all(self.nodes.into_iter().map(|node| node.shutdown())).await;
        results
            .into_iter()
            .enumerate()
            .try_for_each(|(node, result)| {
                result.map_err(|source| FleetError::Node { node, source })
            })
    }
}

/// The socket path of node `index` under `dir`: `DIR/node-<index>.sock`.
pub fn socket_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("node-{index}.sock"))
}

/// Serves `nodes` independent fakes, node `i` built by `builder(i)`, on
/// `DIR/node-<i>.sock` (creating `dir` if need be) from the current tokio runtime.
/// A node that fails to start stops the ones already started.
pub async fn serve_many(
    dir: &Path,
    nodes: usize,
    builder: impl Fn(usize) -> FakeCri,
) -> Result<FakeCriFleet, FleetError> {
    std::fs::create_dir_all(dir).map_err(|source| FleetError::CreateDir {
        dir: dir.to_owned(),
        source,
    })?;
    check_descriptor_budget(nodes)?;
    let mut handles = Vec::with_capacity(nodes);
    for node in 0..nodes {
        let handle = builder(node)
            .serve_unix(socket_path(dir, node))
            .await
            .map_err(|source| FleetError::Node { node, source })?;
        handles.push(handle);
    }
    Ok(FakeCriFleet {
        dir: dir.to_owned(),
        nodes: handles,
    })
}

/// `testbed fakecri --dir DIR --nodes N`: serves N default fakes until `shutdown`
/// resolves, then stops them. Prints `FAKECRI_DIR=<dir>` and `FAKECRI_NODES=<n>` on
/// stdout once every socket is listening, and logs the process's memory and open files.
pub async fn run(
    dir: &Path,
    nodes: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FleetError> {
    let fleet = serve_many(dir, nodes, |_| FakeCri::new()).await?;
    let usage = ProcessUsage::now();
    tracing::info!(
        nodes,
        dir = %dir.display(),
        rss_kib = usage.as_ref().map(|usage| usage.rss_kib),
        open_files = usage.as_ref().map(|usage| usage.open_files),
        "fake CRI nodes serving"
    );
    println!("FAKECRI_DIR={}", fleet.dir().display());
    println!("FAKECRI_NODES={}", fleet.len());
    shutdown.await;
    fleet.shutdown().await
}

/// This process's resident memory and open files, from `/proc/self`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessUsage {
    /// Resident set size (`VmRSS`), in KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub open_files: u64,
    /// The soft `RLIMIT_NOFILE`; `None` when unlimited.
    pub open_files_limit: Option<u64>,
}

impl ProcessUsage {
    /// The figures now; `None` where `/proc` cannot be read (not Linux).
    pub fn now() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())?;
        let open_files = std::fs::read_dir("/proc/self/fd").ok()?.count();
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        // "Max open files            20000                20000                files"
        let open_files_limit = limits
            .lines()
            .find_map(|line| line.strip_prefix("Max open files"))
            .and_then(|values| values.split_whitespace().next())
            .and_then(|soft| soft.parse().ok());
        Some(Self {
            rss_kib,
            open_files: u64::try_from(open_files).unwrap_or(u64::MAX),
            open_files_limit,
        })
    }
}

/// Fails when the listeners cannot fit under the open-file limit; warns when the
/// connections clients are likely to open would not.
fn check_descriptor_budget(nodes: usize) -> Result<(), FleetError> {
    let Some(ProcessUsage {
        open_files,
        open_files_limit: Some(limit),
        ..
    }) = ProcessUsage::now()
    else {
        return Ok(());
    };
    let nodes_u64 = u64::try_from(nodes).unwrap_or(u64::MAX);
    let needed = open_files
        .saturating_add(nodes_u64)
        .saturating_add(RESERVED_DESCRIPTORS);
    if needed > limit {
        return Err(FleetError::TooManyNodes {
            nodes,
            needed,
            limit,
        });
    }
    let with_connections =
        needed.saturating_add(nodes_u64.saturating_mul(EXPECTED_CONNECTIONS_PER_NODE));
    if with_connections > limit {
        tracing::warn!(
            nodes,
            limit,
            with_connections,
            "the open-file limit leaves no room for two connections per node; raise it with `ulimit -n`"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use anyhow::Context as _;

    use kruised::cri::RuntimeEndpoint;
    use kruised::proto::containerd::services::version::v1::version_client::VersionClient;
    use kruised::proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
    use kruised::proto::runtime::v1::{PullImageRequest, VersionRequest};

    use super::*;

    #[tokio::test]
    async fn fifty_nodes_answer_version_each_on_its_own_socket_with_its_own_state()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let fleet = serve_many(dir.path(), 50, |node| {
            FakeCri::builder()
                .runtime_version(format!("1.6.20-node{node}"))
                .build()
        })
        .await?;
        assert_eq!(fleet.len(), 50);
        fleet.node(7).add_image("127.0.0.1:5000/test/busybox:1")?;

        for node in 0..fleet.len() {
            let socket = socket_path(dir.path(), node);
            assert_eq!(fleet.handle(node).path(), socket);
            let channel = RuntimeEndpoint::from_path(&socket)
                .connect(Duration::from_secs(5))
                .await?;
            let version = VersionClient::new(channel.clone())
                .version(())
                .await?
                .into_inner();
            assert_eq!(version.version, format!("1.6.20-node{node}"));
            let cri = RuntimeServiceClient::new(channel)
                .version(VersionRequest {
                    version: "0.1.0".to_owned(),
                })
                .await?
                .into_inner();
            assert_eq!(cri.runtime_version, version.version);
            assert_eq!(
                fleet.node(node).has_image("127.0.0.1:5000/test/busybox:1"),
                node == 7
            );
        }

        fleet.shutdown().await?;
        for node in 0..50 {
            assert!(!socket_path(dir.path(), node).exists());
        }
        Ok(())
    }

    #[tokio::test]
    async fn run_serves_until_shutdown_and_removes_the_sockets() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let path = dir.path().to_owned();
        let running = tokio::spawn(async move {
            run(&path, 3, async {
                let _ = stopped.await;
            })
            .await
        });
        let socket = socket_path(dir.path(), 2);
        let started = std::time::Instant::now();
        while !socket.exists() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "node 2 never listened"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let channel = RuntimeEndpoint::from_path(&socket)
            .connect(Duration::from_secs(5))
            .await?;
        let pulled =
            kruised::proto::runtime::v1::image_service_client::ImageServiceClient::new(channel)
                .pull_image(PullImageRequest {
                    image: Some(kruised::cri::client::image_spec("busybox")),
                    ..PullImageRequest::default()
                })
                .await?
                .into_inner();
        assert!(pulled.image_ref.starts_with("sha256:"));
        let _ = stop.send(());
        running.await??;
        assert!(!socket.exists());
        Ok(())
    }

    #[tokio::test]
    async fn more_nodes_than_open_files_allowed_is_refused_before_binding() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let limit = ProcessUsage::now()
            .and_then(|usage| usage.open_files_limit)
            .context("this test needs a finite RLIMIT_NOFILE")?;
        let nodes = usize::try_from(limit)?;
        let refused = serve_many(dir.path(), nodes, |_| FakeCri::new()).await;
        assert!(matches!(refused, Err(FleetError::TooManyNodes { .. })));
        assert!(!socket_path(dir.path(), 0).exists());
        Ok(())
    }
}
