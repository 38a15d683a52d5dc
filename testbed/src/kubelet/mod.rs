//! A kubelet stand-in on real containerd: registers a Node, runs the node's pods as
//! host-network sandboxes over CRI with the kubelet's labels and annotations, restarts
//! containers per `restartPolicy`, reports pod status and honours graceful deletion.
//!
//! What kruised can observe of a real kubelet is reproduced; the rest is left out: no
//! volumes, init containers, pod networking, liveness or startup probes, image pull
//! secrets, Leases, events or stats. Readiness probes run only when they are exec probes.
//!
//! - [`spec`] turns a pod into CRI sandbox and container configs.
//! - [`runtime`] reads one pod's sandboxes and containers from CRI.
//! - [`restart`] decides what to do with each container next.
//! - [`probe`] tracks exec readiness probes.
//! - [`status`] computes the pod status from what the runtime reports.
//! - [`node`] registers the Node and heart-beats it.
//! - `pod_worker` drives one pod; this module watches pods and runs the workers.

pub mod node;
mod pod_worker;
pub mod probe;
pub mod restart;
pub mod runtime;
pub mod spec;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kruised::cri::fake::POD_UID_LABEL;
use kruised::cri::{CriClient, CriError, RuntimeEndpoint};
use kruised::proto::runtime::v1 as cri;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use node::NodeFacts;
use pod_worker::PodWorker;
use spec::NODE_NAME_LABEL;

/// The default pause between two syncs of a pod.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// How often the Node's `lastHeartbeatTime` is refreshed.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// How often the runtime is searched for sandboxes of pods that no longer exist.
const ORPHAN_SCAN_INTERVAL: Duration = Duration::from_secs(2);
/// How long shutdown waits for pod workers to finish their current step.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to run a kubelet stand-in.
#[derive(Clone)]
pub struct KubeletConfig {
    /// The Node's name; pods with this `spec.nodeName` run here.
    pub node_name: String,
    /// The Kubernetes API client.
    pub client: kube::Client,
    /// The CRI endpoint, `unix:///…/containerd.sock`.
    pub runtime_endpoint: String,
    /// The cgroupfs parent under which each pod gets `<prefix>/pod<uid>`
    /// (`CGROUP_PARENT_PREFIX` of scripts/testenv).
    pub cgroup_parent_prefix: String,
    /// Where pod log folders `<namespace>_<name>_<uid>` are created.
    pub pod_log_dir: PathBuf,
    /// The pause between two syncs of a pod (CRI relist and status check).
    pub sync_interval: Duration,
}

impl KubeletConfig {
    /// A config with the default sync interval.
    pub fn new(
        node_name: impl Into<String>,
        client: kube::Client,
        runtime_endpoint: impl Into<String>,
        cgroup_parent_prefix: impl Into<String>,
        pod_log_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            node_name: node_name.into(),
            client,
            runtime_endpoint: runtime_endpoint.into(),
            cgroup_parent_prefix: cgroup_parent_prefix.into(),
            pod_log_dir: pod_log_dir.into(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
        }
    }
}

impl std::fmt::Debug for KubeletConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletConfig")
            .field("node_name", &self.node_name)
            .field("runtime_endpoint", &self.runtime_endpoint)
            .field("cgroup_parent_prefix", &self.cgroup_parent_prefix)
            .field("pod_log_dir", &self.pod_log_dir)
            .field("sync_interval", &self.sync_interval)
            .finish_non_exhaustive()
    }
}

/// Why the kubelet stand-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The runtime endpoint is not a usable unix socket URI.
    #[error("invalid runtime endpoint: {0}")]
    InvalidEndpoint(#[source] CriError),
    /// The runtime did not answer CRI.
    #[error("cannot reach the container runtime: {0}")]
    Runtime(#[source] CriError),
    /// The pod log folder could not be created.
    #[error("cannot create the pod log folder {path}: {source}")]
    PodLogDir {
        /// The folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What the workers share.
pub(crate) struct Context {
    node_name: String,
    client: kube::Client,
    cri: CriClient,
    runtime_name: String,
    runtime_version: String,
    cgroup_parent_prefix: String,
    pod_log_dir: PathBuf,
    sync_interval: Duration,
}

/// The kubelet stand-in. [`Kubelet::start`] runs one in the background.
#[derive(Debug)]
pub struct Kubelet;

impl Kubelet {
    /// Connects to the runtime and starts the kubelet in the background: Node
    /// registration and heart-beat, the pod watch, and one worker per pod.
    ///
    /// Fails only when the runtime cannot be reached; API errors are retried in the
    /// background. Must be called within a Tokio runtime.
    pub async fn start(config: KubeletConfig) -> Result<KubeletHandle, KubeletError> {
        let endpoint = RuntimeEndpoint::parse(&config.runtime_endpoint)
            .map_err(KubeletError::InvalidEndpoint)?;
        let cri = CriClient::connect(&endpoint, None)
            .await
            .map_err(KubeletError::Runtime)?;
        tokio::fs::create_dir_all(&config.pod_log_dir)
            .await
            .map_err(|source| KubeletError::PodLogDir {
                path: config.pod_log_dir.clone(),
                source,
            })?;
        let info = cri.info().clone();
        let context = Arc::new(Context {
            node_name: config.node_name.clone(),
            client: config.client,
            cri,
            runtime_name: info.name,
            runtime_version: info.version,
            cgroup_parent_prefix: config.cgroup_parent_prefix,
            pod_log_dir: config.pod_log_dir,
            sync_interval: config.sync_interval,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let span = tracing::info_span!("kubelet", node = %config.node_name);
        let task = tokio::spawn(manage(context, shutdown_rx).instrument(span));
        tracing::info!(node = %config.node_name, "kubelet stand-in started");
        Ok(KubeletHandle {
            node_name: config.node_name,
            shutdown,
            task: Some(task),
        })
    }
}

/// A running kubelet stand-in. Dropping it stops it; [`KubeletHandle::shutdown`] stops
/// it and waits. Either way the pods' containers keep running, as when a real kubelet
/// stops, and a new kubelet for the same node adopts them.
#[derive(Debug)]
pub struct KubeletHandle {
    node_name: String,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl KubeletHandle {
    /// The node this kubelet runs.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Stops the kubelet and waits until its tasks have ended.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
            && error.is_panic()
        {
            tracing::error!(%error, "the kubelet stand-in panicked");
        }
    }
}

impl Drop for KubeletHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            // Dropping the task's future drops its worker set, which aborts the workers.
            task.abort();
        }
    }
}

/// Runs a kubelet until `shutdown` completes: the entry point of `testbed kubelet`.
pub async fn run(
    config: KubeletConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), KubeletError> {
    let handle = Kubelet::start(config).await?;
    shutdown.await;
    handle.shutdown().await;
    Ok(())
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until the shutdown flag is set.
async fn shut_down(shutdown: &mut watch::Receiver<bool>) {
    // An error means the handle is gone, which is a shutdown too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The kubelet's main loop: watch the node's pods and keep one worker per pod uid, plus
/// one for each sandbox of this node whose pod is gone.
async fn manage(context: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let _node = AbortOnDrop(tokio::spawn(
        heartbeat(context.clone(), shutdown.clone()).in_current_span(),
    ));
    let (store, writer) = reflector::store::<Pod>();
    let events = Arc::new(Notify::new());
    let _watch = AbortOnDrop(tokio::spawn(
        watch_pods(context.clone(), writer, events.clone()).in_current_span(),
    ));
    // Before the first list the store is empty, which would read as "every pod deleted".
    tokio::select! {
        result = store.wait_until_ready() => {
            if result.is_err() {
                tracing::error!("the pod watch ended before its first list");
                return;
            }
        }
        () = shut_down(&mut shutdown) => return,
    }
    tracing::info!("pod watch synced");

    let mut workers = Workers::new(context.clone(), store.clone(), shutdown.clone());
    let mut last_orphan_scan: Option<Instant> = None;
    loop {
        workers.reap();
        for pod in store.state() {
            if let Some(uid) = pod.metadata.uid.as_deref() {
                workers.ensure(uid);
            }
        }
        if last_orphan_scan.is_none_or(|at| at.elapsed() >= ORPHAN_SCAN_INTERVAL) {
            last_orphan_scan = Some(Instant::now());
            match sandbox_uids(&context).await {
                // A worker for a uid without a pod removes its sandboxes, then ends.
                Ok(uids) => uids.iter().for_each(|uid| workers.ensure(uid)),
                Err(error) => tracing::warn!(%error, "cannot list pod sandboxes"),
            }
        }
        tokio::select! {
            () = shut_down(&mut shutdown) => break,
            () = events.notified() => workers.wake_all(),
            () = tokio::time::sleep(context.sync_interval) => {}
        }
    }
    workers.stop().await;
    tracing::info!("kubelet stand-in stopped");
}

/// Pod uids of this node's sandboxes in the runtime.
async fn sandbox_uids(context: &Context) -> Result<HashSet<String>, CriError> {
    let filter = cri::PodSandboxFilter {
        label_selector: HashMap::from([(NODE_NAME_LABEL.to_string(), context.node_name.clone())]),
        ..Default::default()
    };
    Ok(context
        .cri
        .list_pod_sandbox(Some(filter))
        .await?
        .into_iter()
        .filter_map(|sandbox| sandbox.labels.get(POD_UID_LABEL).cloned())
        .collect())
}

/// Keeps the reflector store of the node's pods (`spec.nodeName=<node>`) up to date and
/// signals every change.
async fn watch_pods(
    context: Arc<Context>,
    writer: reflector::store::Writer<Pod>,
    events: Arc<Notify>,
) {
    let pods: Api<Pod> = Api::all(context.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", context.node_name));
    let stream = watcher(pods, config).default_backoff().reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => events.notify_one(),
            Err(error) => tracing::warn!(%error, "pod watch failed; retrying"),
        }
    }
}

/// Registers the Node, then refreshes its status every [`HEARTBEAT_INTERVAL`].
async fn heartbeat(context: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let facts = NodeFacts::gather(
        &context.node_name,
        &context.runtime_name,
        &context.runtime_version,
    );
    let nodes: Api<Node> = Api::all(context.client.clone());
    let mut registered = false;
    loop {
        let result = if registered {
            node::heartbeat(&nodes, &facts).await
        } else {
            node::register(&nodes, &facts).await
        };
        match result {
            Ok(()) => registered = true,
            Err(error) => {
                if matches!(&error, kube::Error::Api(status) if status.is_not_found()) {
                    // The Node was deleted: register it again.
                    registered = false;
                }
                tracing::warn!(%error, "node status update failed; retrying");
            }
        }
        let pause = if registered {
            HEARTBEAT_INTERVAL
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = shut_down(&mut shutdown) => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// The running pod workers, by pod uid.
struct Workers {
    context: Arc<Context>,
    store: Store<Pod>,
    shutdown: watch::Receiver<bool>,
    wakers: HashMap<String, Arc<Notify>>,
    uids: HashMap<tokio::task::Id, String>,
    tasks: JoinSet<String>,
}

impl Workers {
    fn new(context: Arc<Context>, store: Store<Pod>, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            context,
            store,
            shutdown,
            wakers: HashMap::new(),
            uids: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Starts a worker for `uid` unless one runs.
    fn ensure(&mut self, uid: &str) {
        if self.wakers.contains_key(uid) {
            return;
        }
        let wake = Arc::new(Notify::new());
        let worker = PodWorker::new(
            self.context.clone(),
            self.store.clone(),
            uid.to_string(),
            wake.clone(),
            self.shutdown.clone(),
        );
        let span = tracing::info_span!("pod", uid = %uid);
        let handle = self.tasks.spawn(worker.run().instrument(span));
        self.uids.insert(handle.id(), uid.to_string());
        self.wakers.insert(uid.to_string(), wake);
    }

    /// Forgets workers that ended (their pod is gone) or panicked (restarted next round).
    fn reap(&mut self) {
        while let Some(result) = self.tasks.try_join_next_with_id() {
            let id = match result {
                Ok((id, _)) => id,
                Err(error) => {
                    tracing::error!(%error, "a pod worker panicked");
                    error.id()
                }
            };
            if let Some(uid) = self.uids.remove(&id) {
                self.wakers.remove(&uid);
            }
        }
    }

    fn wake_all(&self) {
        self.wakers.values().for_each(|wake| wake.notify_one());
    }

    /// Waits a little for the workers to notice the shutdown, then aborts the rest.
    async fn stop(mut self) {
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            self.tasks.abort_all();
        }
    }
}
