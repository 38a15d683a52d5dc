//! `kruised manager`: the cluster-side controller that takes over kruise-manager's duties
//! for NodeImage, ImagePullJob, ImageListPullJob and ContainerRecreateRequest (§11.3), so
//! that the agents work with no OpenKruise installed. Same CRDs, same protocol (§3.1,
//! §3.3, §3.4, §4.2, §4.3): a cluster can move between OpenKruise and kruised either way.
//!
//! Lifecycle of one replica:
//!
//! 1. Serve HTTP (`/metrics`, `/healthz`, `/livez`, `/readyz`), reach the API server.
//! 2. [`detect`]: refuse to run (exit non-zero, with the evidence) while kruise-manager is
//!    active; checked again every minute while running.
//! 3. [`leader`]: wait to hold the Lease. Standbys only watch the Lease.
//! 4. Leading: start the caches and controllers ([`controllers`]), renew every retry
//!    period. **Fencing**: if no renewal succeeds within the renew deadline, every
//!    controller task is aborted (in-flight reconciles are cancelled with them) and the
//!    process exits non-zero, before another replica can take the Lease. A fresh process
//!    starts from fresh caches, as controller-runtime does.
//! 5. SIGTERM: stop the controllers first, then release the Lease (hand-over: a standby
//!    takes over at its next attempt rather than after the lease duration).
//!
//! Least-privilege RBAC (ClusterRole unless noted):
//!
//! | apiGroup | resource | verbs | why |
//! | --- | --- | --- | --- |
//! | coordination.k8s.io | leases (own namespace, Role) | get create update | leader election |
//! | coordination.k8s.io | leases `kruise-manager` (kruise namespace, Role) | get | detection |
//! | admissionregistration.k8s.io | mutating/validatingwebhookconfigurations | get | detection |
//! | apps | deployments `kruise-controller-manager` (kruise namespace, Role) | get | detection |
//! | "" | nodes | get list watch | NodeImage lifecycle |
//! | "" | pods | get list watch | podSelector, CRR admission and snapshots |
//! | "" | pods/status | get update | `KruisePodReady` readiness gate |
//! | "" | secrets | get | job pull secrets (source namespaces) |
//! | "" | secrets (daemon config namespace, Role) | get list watch create update delete | copies for the agents |
//! | "" | events | create patch | events |
//! | apps.kruise.io | nodeimages | get list watch create update delete | lifecycle and job fan-out |
//! | apps.kruise.io | nodeimages/status | update | silent-node failures |
//! | apps.kruise.io | imagepulljobs | get list watch create update patch delete | jobs, list-job children, finalizer, TTL |
//! | apps.kruise.io | imagepulljobs/status | update | status |
//! | apps.kruise.io | imagelistpulljobs | get list watch delete | list jobs, TTL |
//! | apps.kruise.io | imagelistpulljobs/status | update | status |
//! | apps.kruise.io | containerrecreaterequests | get list watch update patch delete | admission, labels, finalizer, TTL |
//! | apps.kruise.io | containerrecreaterequests/status | patch | completion, snapshot, conditions |

pub mod cache;
pub mod context;
pub mod controllers;
pub mod crr;
pub mod crr_admission;
pub mod detect;
pub mod expectations;
pub mod http;
pub mod imagelistpulljob;
pub mod imagepulljob;
pub mod jobview;
pub mod leader;
pub mod metrics;
pub mod nodeimage;
pub mod nodeimage_io;
pub mod podreadiness;
pub mod secrets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tracing::{Instrument, error, info, warn};

use crate::agent::Shutdown;
use crate::apiversions::ServedVersions;
use crate::backoff::Backoff;
use crate::kubeconfig::{self, KubeconfigError};
use crate::readiness::{Readiness, ReadinessCheck};
use context::Settings;
use detect::{Detector, KruiseManagerDetected};
use leader::{Attempt, Elector, LeaseConfig, LeaseConfigError};
use metrics::ManagerMetrics;

/// How often kruise-manager is looked for while running.
pub const DETECTION_INTERVAL: Duration = Duration::from_secs(60);

/// Everything a replica needs.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Leader election; `None` runs without (a single replica).
    pub lease: Option<LeaseConfig>,
    /// Where kruise-manager would run.
    pub kruise_namespace: String,
    /// Controller tunables.
    pub settings: Settings,
    /// How often to look for kruise-manager while running.
    pub detection_interval: Duration,
}

impl ManagerConfig {
    /// The configuration `kruised manager` flags describe.
    pub fn from_args(args: &crate::cli::ManagerArgs) -> Self {
        let lease = args.leader_elect.then(|| LeaseConfig {
            namespace: args.leader_election_namespace.clone(),
            name: args.leader_election_id.clone(),
            identity: leader::default_identity(args.leader_election_identity.as_deref()),
            lease_duration: args.leader_election_lease_duration,
            renew_deadline: args.leader_election_renew_deadline,
            retry_period: args.leader_election_retry_period,
        });
        Self {
            lease,
            kruise_namespace: args.kruise_namespace.clone(),
            settings: Settings {
                nodeimage_creation_delay: args.nodeimage_creation_delay,
                default_ttl_for_always: args
                    .default_ttlseconds_for_always_nodeimage
                    .clamp(0, 31 * 24 * 3600),
                daemon_config_namespace: args.daemon_config_namespace.clone(),
                nodeimage_workers: args.nodeimage_workers.max(1),
                imagepulljob_workers: args.imagepulljob_workers.max(1),
                crr_workers: args.crr_workers.max(1),
                ..Settings::default()
            },
            detection_interval: DETECTION_INTERVAL,
        }
    }
}

/// Why the manager stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
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
    /// The client could not be built.
    #[error("cannot build a Kubernetes client: {0}")]
    KubeClient(#[source] kube::Error),
    /// The election parameters are unsafe.
    #[error(transparent)]
    LeaseConfig(#[from] LeaseConfigError),
    /// kruise-manager is active.
    #[error(transparent)]
    KruiseManagerDetected(#[from] KruiseManagerDetected),
    /// Leadership was lost; work was stopped before the Lease could pass on.
    #[error(
        "lost the leader election Lease {lease}: {reason}; stopped all work (exiting so a fresh process can stand by)"
    )]
    LeadershipLost {
        /// `namespace/name`.
        lease: String,
        /// Why.
        reason: String,
    },
    /// The controllers stopped on their own.
    #[error("the controllers stopped unexpectedly: {0}")]
    ControllersStopped(String),
}

/// Runs a replica with its HTTP surface until `shutdown`, resolving the kubeconfig like
/// the agent.
pub async fn run(
    config: ManagerConfig,
    listen: SocketAddr,
    kubeconfig_path: Option<PathBuf>,
    shutdown: Shutdown,
) -> Result<(), ManagerError> {
    if let Some(lease) = &config.lease {
        lease.validate()?;
    }
    let metrics = ManagerMetrics::new();
    let readiness = Readiness::new();
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ManagerError::Listen {
            addr: listen,
            source,
        })?;
    info!(addr = %listener.local_addr().unwrap_or(listen), "kruised manager starting");
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let (mut kube_config, source) = kubeconfig::resolve(
        kubeconfig_path.as_deref(),
        std::env::var("KUBECONFIG").ok(),
        home,
    )
    .await?;
    kube_config.headers.push((
        ::http::header::USER_AGENT,
        ::http::HeaderValue::from_static(concat!("kruised-manager/", env!("CARGO_PKG_VERSION"))),
    ));
    info!(source = ?source, server = %kube_config.cluster_url, "Kubernetes configuration resolved");
    let client = kube::Client::try_from(kube_config).map_err(ManagerError::KubeClient)?;
    let http = tokio::spawn(
        http::serve(
            listener,
            readiness.clone(),
            metrics.clone(),
            shutdown.clone().wait(),
        )
        .in_current_span(),
    );
    let result = run_with_client(client, config, readiness, metrics, shutdown).await;
    http.abort();
    result
}

/// Runs a replica against `client` until `shutdown` (no HTTP; tests use this directly).
pub async fn run_with_client(
    client: kube::Client,
    config: ManagerConfig,
    readiness: Readiness,
    metrics: Arc<ManagerMetrics>,
    shutdown: Shutdown,
) -> Result<(), ManagerError> {
    if let Some(lease) = &config.lease {
        lease.validate()?;
    }
    let api_check = readiness.register("apiserver");
    let detection_check = readiness.register("noKruiseManager");
    let Some(version) = retry("API server not reachable yet", &shutdown, || {
        client.apiserver_version()
    })
    .await
    else {
        return Ok(());
    };
    info!(version = %version.git_version, "API server reached");
    api_check.set(true);

    let detector = Detector::new(client.clone(), &config.kruise_namespace);
    let Some(found) = retry("cannot check for kruise-manager yet", &shutdown, || {
        detector.check()
    })
    .await
    else {
        return Ok(());
    };
    found?;
    detection_check.set(true);

    let Some(versions) = retry(
        "cannot tell which apps.kruise.io versions are served yet",
        &shutdown,
        || ServedVersions::discover(&client),
    )
    .await
    else {
        return Ok(());
    };
    info!(
        node_image = versions.node_image.as_str(),
        container_recreate_request = versions.container_recreate_request.as_str(),
        "apps.kruise.io versions chosen"
    );

    // kruise-manager appearing while we run is as bad as at start.
    let (detected_tx, mut detected_rx) = tokio::sync::mpsc::channel(1);
    let watchdog = AbortOnDrop(tokio::spawn(
        watch_for_kruise_manager(
            detector,
            config.detection_interval,
            detected_tx,
            detection_check,
        )
        .in_current_span(),
    ));
    let result = lead(
        client,
        versions,
        &config,
        metrics,
        &mut detected_rx,
        shutdown,
    )
    .await;
    drop(watchdog);
    result
}

/// A task that is aborted when its handle is dropped, so that dropping (or aborting) the
/// future that owns it stops it too: tokio tasks otherwise outlive their spawner.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn watch_for_kruise_manager(
    detector: Detector,
    interval: Duration,
    found: tokio::sync::mpsc::Sender<KruiseManagerDetected>,
    check: ReadinessCheck,
) {
    loop {
        tokio::time::sleep(interval).await;
        match detector.check().await {
            Ok(Ok(())) => {}
            Ok(Err(detected)) => {
                check.set(false);
                let _ = found.send(detected).await;
                return;
            }
            Err(error) => warn!(%error, "checking for kruise-manager failed; will retry"),
        }
    }
}

/// Stands by until leading (or runs directly without election), then runs the
/// controllers under the renew loop.
async fn lead(
    client: kube::Client,
    versions: ServedVersions,
    config: &ManagerConfig,
    metrics: Arc<ManagerMetrics>,
    detected: &mut tokio::sync::mpsc::Receiver<KruiseManagerDetected>,
    shutdown: Shutdown,
) -> Result<(), ManagerError> {
    let identity = config
        .lease
        .as_ref()
        .map_or_else(|| leader::default_identity(None), |l| l.identity.clone());
    let start_work = || {
        let work = controllers::run(
            client.clone(),
            versions,
            config.settings.clone(),
            metrics.clone(),
            identity.clone(),
        );
        // The controllers log under the leader's identity.
        let span = tracing::info_span!("leader", identity = %identity);
        AbortOnDrop(tokio::spawn(work.instrument(span)))
    };

    let Some(lease) = config.lease.clone() else {
        metrics.set_leader(true);
        let mut work = start_work();
        let result = tokio::select! {
            () = shutdown.clone().wait() => Ok(()),
            found = detected.recv() => match found {
                Some(found) => Err(found.into()),
                None => Ok(()),
            },
            joined = &mut work.0 => Err(ManagerError::ControllersStopped(describe(joined))),
        };
        stop(work).await;
        metrics.set_leader(false);
        return result;
    };

    let lease_name = format!("{}/{}", lease.namespace, lease.name);
    let mut elector = Elector::new(client.clone(), lease.clone());
    // Standby.
    let mut last_sent = loop {
        match elector.try_acquire_or_renew().await {
            Ok(Attempt::Held { sent_at }) => break sent_at,
            Ok(Attempt::HeldBy(holder)) => {
                tracing::debug!(holder = ?holder, "standing by");
            }
            Err(error) => warn!(%error, lease = %lease_name, "leader election attempt failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(lease.retry_period) => {}
            () = shutdown.clone().wait() => return Ok(()),
            found = detected.recv() => if let Some(found) = found { return Err(found.into()) },
        }
    };
    info!(identity = %lease.identity, lease = %lease_name, "leading: starting the controllers");
    metrics.set_leader(true);
    let mut work = start_work();

    let outcome: Result<(), ManagerError> = loop {
        let deadline = leader::fencing_deadline(last_sent, &lease);
        tokio::select! {
            () = tokio::time::sleep(lease.retry_period) => {}
            () = tokio::time::sleep_until(deadline.into()) => {
                break Err(lost(&lease_name, "no renewal succeeded within the renew deadline"));
            }
            () = shutdown.clone().wait() => break Ok(()),
            found = detected.recv() => if let Some(found) = found { break Err(found.into()) },
            joined = &mut work.0 => break Err(ManagerError::ControllersStopped(describe(joined))),
        }
        match tokio::time::timeout_at(deadline.into(), elector.try_acquire_or_renew()).await {
            Ok(Ok(Attempt::Held { sent_at })) => last_sent = sent_at,
            Ok(Ok(Attempt::HeldBy(holder))) => {
                break Err(lost(
                    &lease_name,
                    &format!("the Lease is now held by {}", holder.unwrap_or_default()),
                ));
            }
            Ok(Err(error)) => {
                warn!(%error, lease = %lease_name, "renewing the Lease failed; retrying")
            }
            Err(_) => {
                break Err(lost(
                    &lease_name,
                    "renewal did not answer within the renew deadline",
                ));
            }
        }
    };
    // Fencing: no controller may write once we stop renewing.
    stop(work).await;
    metrics.set_leader(false);
    if Instant::now() < leader::fencing_deadline(last_sent, &lease)
        && !matches!(outcome, Err(ManagerError::LeadershipLost { .. }))
    {
        match elector.release().await {
            Ok(_) => {}
            Err(error) => {
                warn!(%error, "releasing the Lease failed; a standby takes over after the lease duration")
            }
        }
    }
    if let Err(error) = &outcome {
        error!(%error, "kruised manager stopping");
    }
    outcome
}

fn lost(lease: &str, reason: &str) -> ManagerError {
    ManagerError::LeadershipLost {
        lease: lease.to_owned(),
        reason: reason.to_owned(),
    }
}

fn describe(joined: Result<(), tokio::task::JoinError>) -> String {
    match joined {
        Ok(()) => "they returned".into(),
        Err(error) => error.to_string(),
    }
}

/// Aborts the controllers' task and waits until it is gone: every reconcile it spawned
/// is cancelled when the controller streams are dropped.
async fn stop(mut work: AbortOnDrop<()>) {
    work.0.abort();
    let _ = (&mut work.0).await;
}

/// Runs `attempt` until it succeeds, with back-off; `None` on shutdown.
async fn retry<T, E, F, Fut>(waiting: &str, shutdown: &Shutdown, mut attempt: F) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(%error, retry_in = ?delay, "{waiting}");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.clone().wait() => return None,
                }
            }
        }
    }
}
