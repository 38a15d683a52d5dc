//! The node agent's lifecycle: HTTP surface, CRI connection, API server connection,
//! and a clean stop on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument, info, warn};

use crate::apiversions::ServedVersions;
use crate::backoff::Backoff;
use crate::cri::{DiscoveryConfig, RuntimeSet};
use crate::kubeconfig::{self, KubeconfigError};
use crate::metrics::Metrics;
use crate::readiness::{Readiness, ReadinessCheck};
use crate::server::{self, HttpState};

/// How often a connected runtime is asked whether it still answers.
const CRI_HEALTH_INTERVAL: Duration = Duration::from_secs(10);

/// Everything the agent needs to start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's name.
    pub node_name: String,
    /// Where to serve HTTP.
    pub listen: SocketAddr,
    /// How to find the runtime.
    pub discovery: DiscoveryConfig,
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// Node-wide cap on concurrent CRI pulls.
    pub max_concurrent_pulls: usize,
    /// Pods worked on in parallel for ContainerRecreateRequests (`--crr-workers`).
    pub crr_workers: usize,
    /// kubelet `CredentialProviderConfig` (`--plugin-config-file`).
    pub plugin_config_file: PathBuf,
    /// Credential provider plugin binaries (`--plugin-bin-dir`).
    pub plugin_bin_dir: PathBuf,
    /// kruise's feature gates (`--feature-gates`): `PodProbeMarkerGate` runs NodePodProbe probes.
    pub feature_gates: crate::feature_gates::FeatureGates,
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// No Kubernetes client configuration.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// The client could not be built from the configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    KubeClient(#[source] kube::Error),
}

/// A shutdown signal that any number of tasks can wait on.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Triggers a [`Shutdown`].
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A linked trigger and signal.
pub fn shutdown_channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger(sender), Shutdown(receiver))
}

impl ShutdownTrigger {
    /// Tells every waiter to stop.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Completes once shutdown has been triggered (or the trigger dropped).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

/// Runs the agent until `shutdown` fires.
pub async fn run(config: AgentConfig, shutdown: Shutdown) -> Result<(), AgentError> {
    let metrics = Metrics::new();
    let readiness = Readiness::new();
    let cri_check = readiness.register("cri");
    let api_check = readiness.register("apiserver");

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: config.listen,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(config.listen);
    info!(node = %config.node_name, addr = %bound, "kruised starting");

    // Resolve the client configuration before any work: a missing kubeconfig is a
    // deployment mistake that retrying cannot fix.
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let (mut kube_config, source) = kubeconfig::resolve(
        config.kubeconfig.as_deref(),
        std::env::var("KUBECONFIG").ok(),
        home,
    )
    .await?;
    kube_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("kruised/", env!("CARGO_PKG_VERSION"))),
    ));
    info!(source = ?source, server = %kube_config.cluster_url, "Kubernetes configuration resolved");
    let client = kube::Client::try_from(kube_config).map_err(AgentError::KubeClient)?;

    let state = HttpState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    };
    // Every task carries the caller's span (the root span with the node name), so each
    // log line of the agent says which node wrote it.
    let http =
        tokio::spawn(server::serve(listener, state, shutdown.clone().wait()).in_current_span());
    let (runtimes_tx, runtimes_rx) = tokio::sync::oneshot::channel();
    let cri = tokio::spawn(
        keep_cri_connected(
            config.discovery.clone(),
            metrics.clone(),
            cri_check,
            runtimes_tx,
            shutdown.clone(),
        )
        .in_current_span(),
    );
    // kruise-daemon's /healthz check names (§7.1).
    let node_image_check = readiness.register("nodeImageInformerSynced");
    let crr_check = readiness.register("crrInformerSynced");
    let probe_check = config
        .feature_gates
        .enabled("PodProbeMarkerGate")
        .then(|| readiness.register("nodePodProbeInformerSynced"));
    // kruise serves nothing until its pod informer synced (§1.2 step 10); a named check says so.
    let pod_check = config
        .feature_gates
        .enabled("DaemonWatchingPod")
        .then(|| readiness.register("podInformerSynced"));
    let started = std::time::Instant::now();
    let controllers = tokio::spawn(
        {
            let client = client.clone();
            let shutdown = shutdown.clone();
            let metrics = metrics.clone();
            let config = config.clone();
            async move {
                if !wait_for_api_server(client.clone(), api_check, shutdown.clone()).await {
                    return;
                }
                let Ok(runtimes) = runtimes_rx.await else {
                    return;
                };
                let Some(versions) = discover_versions(&client, &shutdown).await else {
                    return;
                };
                info!(
                    node_image = versions.node_image.as_str(),
                    container_recreate_request = versions.container_recreate_request.as_str(),
                    "apps.kruise.io versions chosen"
                );
                // A broken plugin config must not stop pulls that need no plugin (§1.2 step 9).
                let plugins = crate::credentials::plugin::CredentialPlugins::load(
                    &config.plugin_config_file,
                    &config.plugin_bin_dir,
                )
                .await
                .unwrap_or_else(|error| {
                    warn!(%error, "credential provider plugins disabled");
                    crate::credentials::plugin::CredentialPlugins::none()
                });
                let puller = crate::imagepuller::build(
                    client.clone(),
                    &config.node_name,
                    versions.node_image,
                    &runtimes,
                    config.max_concurrent_pulls,
                    metrics.clone(),
                    plugins,
                );
                let recorder = Arc::new(crate::events::Recorder::new(
                    client.clone(),
                    crate::recreate::controller::EVENT_COMPONENT,
                    &config.node_name,
                ));
                let recreate = crate::recreate::controller::RecreateController::new(
                    client.clone(),
                    &config.node_name,
                    versions.container_recreate_request,
                    runtimes.clone(),
                    config.crr_workers,
                    recorder,
                )
                .with_metrics(metrics.recreate.clone());
                let probes = probe_check.map(|check| {
                    let recorder = Arc::new(crate::events::Recorder::new(
                        client.clone(),
                        crate::podprobe::EVENT_COMPONENT,
                        &config.node_name,
                    ));
                    let controller = crate::podprobe::controller::PodProbeController::new(
                        client.clone(),
                        &config.node_name,
                        runtimes.primary().clone(),
                        recorder,
                        Some(metrics.probe.clone()),
                        started,
                    );
                    controller.run(check, shutdown.clone())
                });
                let container_meta = pod_check.map(|check| {
                    let recorder = Arc::new(crate::events::Recorder::new(
                        client.clone(),
                        crate::containermeta::EVENT_COMPONENT,
                        &config.node_name,
                    ));
                    crate::containermeta::ContainerMetaController::new(
                        client.clone(),
                        &config.node_name,
                        runtimes.clone(),
                        recorder,
                        config.feature_gates.enabled("InPlaceUpdateEnvFromMetadata"),
                    )
                    .run(check, shutdown.clone())
                });
                tokio::join!(
                    puller.run(node_image_check, shutdown.clone()),
                    recreate.run(crr_check, shutdown.clone()),
                    async {
                        if let Some(probes) = probes {
                            probes.await;
                        }
                    },
                    async {
                        if let Some(container_meta) = container_meta {
                            container_meta.await;
                        }
                    },
                );
            }
        }
        .in_current_span(),
    );

    shutdown.wait().await;
    info!("shutting down");
    cri.abort();
    controllers.abort();
    if let Ok(Err(error)) = http.await {
        warn!(%error, "HTTP server stopped with an error");
    }
    info!("kruised stopped");
    Ok(())
}

/// Connects to the runtime, retrying with back-off (a fresh channel each time), then
/// watches that it keeps answering.
async fn keep_cri_connected(
    discovery: DiscoveryConfig,
    metrics: Arc<Metrics>,
    check: ReadinessCheck,
    connected: tokio::sync::oneshot::Sender<RuntimeSet>,
    shutdown: Shutdown,
) {
    let runtimes = connect_cri(&discovery, &metrics, &shutdown).await;
    let Some(runtimes) = runtimes else { return };
    check.set(true);
    let _ = connected.send(runtimes.clone());
    let primary = runtimes.primary().clone();
    let mut interval = tokio::time::interval(CRI_HEALTH_INTERVAL);
    interval.tick().await;
    loop {
        interval.tick().await;
        let healthy = primary.version().await.is_ok();
        if healthy != check.is_ready() {
            if healthy {
                info!(endpoint = %primary.endpoint(), "CRI answers again");
            } else {
                warn!(endpoint = %primary.endpoint(), "CRI stopped answering");
            }
        }
        check.set(healthy);
    }
}

/// Runs `attempt` until it succeeds, waiting with back-off from `initial` to 30 s and
/// logging `waiting` with the error between tries. `None` if shutdown came first.
async fn retry<T, E, F, Fut>(
    initial: Duration,
    waiting: &str,
    shutdown: &Shutdown,
    mut attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(initial, Duration::from_secs(30));
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(%error, retry_in = ?delay, "{waiting}");
                if sleep_or_shutdown(delay, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Discovers the runtimes, retrying until one answers or shutdown.
pub async fn connect_cri(
    discovery: &DiscoveryConfig,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Option<RuntimeSet> {
    let runtimes = retry(
        Duration::from_millis(200),
        "no usable container runtime yet",
        shutdown,
        || discovery.discover(Some(metrics.cri.clone())),
    )
    .await?;
    for runtime in runtimes.all() {
        let info = runtime.info();
        info!(
            endpoint = %runtime.endpoint(),
            runtime = %info.name,
            version = %info.version,
            api = %info.api_version,
            "CRI connected"
        );
    }
    Some(runtimes)
}

/// Waits for `GET /version` to succeed, with back-off, and marks the check ready.
/// Returns `false` if shutdown came first.
async fn wait_for_api_server(
    client: kube::Client,
    check: ReadinessCheck,
    shutdown: Shutdown,
) -> bool {
    let Some(version) = retry(
        Duration::from_millis(500),
        "API server not reachable yet",
        &shutdown,
        || client.apiserver_version(),
    )
    .await
    else {
        return false;
    };
    info!(version = %version.git_version, "API server reached");
    check.set(true);
    true
}

/// Learns which apps.kruise.io versions are served, retrying until it can.
async fn discover_versions(client: &kube::Client, shutdown: &Shutdown) -> Option<ServedVersions> {
    retry(
        Duration::from_millis(500),
        "cannot tell which apps.kruise.io versions are served yet",
        shutdown,
        || ServedVersions::discover(client),
    )
    .await
}

/// Sleeps, returning `true` early if shutdown fires first.
async fn sleep_or_shutdown(delay: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = shutdown.clone().wait() => true,
    }
}
