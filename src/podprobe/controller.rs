//! The daemon's NodePodProbe controller (§5.3): watches this node's NodePodProbe (field
//! selector `metadata.name=<node>`), keeps one [`super::worker`] per probe of its spec,
//! and writes the status from the result cache.
//!
//! - A new probe starts a worker; a changed probe is handed to its worker (a changed handler
//!   resets the result to `Unknown`); a probe gone from the spec (or the whole NodePodProbe)
//!   stops its worker, whose result leaves the cache.
//! - The status writer wakes on every recorded result and spec change, waits [`COALESCE`] so
//!   that results arriving together make one write, computes the status
//!   ([`desired_status`]) and PUTs `/status` only when it differs, retrying on conflict with a
//!   fresh copy. Results that changed a state or message are recorded as Normal events on the
//!   pod (`KruiseProbeSucceeded` / `KruiseProbeFailed`).
//!
//! Pods are not watched: the pod IP comes from the NodePodProbe (as in kruise) and named
//! ports from the container's CRI annotations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Probe};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use super::status::{desired_status, same_status};
use super::worker::{self, Worker, WorkerContext};
use super::{PROBE_FAILED_REASON, PROBE_SUCCEEDED_REASON, ProbeKey, ResultCache};
use crate::agent::Shutdown;
use crate::api::ProbeState;
use crate::api::v1alpha1::{NodePodProbe, NodePodProbeSpec};
use crate::backoff::Backoff;
use crate::cri::CriClient;
use crate::events::{EventType, Recorder};
use crate::metrics::ProbeMetrics;
use crate::readiness::ReadinessCheck;

/// How long the status writer waits after a wake-up for more results to come with it.
pub const COALESCE: Duration = Duration::from_millis(100);
/// How many times a status PUT is retried on a conflict before waiting for the next change.
const CONFLICT_RETRIES: usize = 5;
/// First delay after a failed status write (kruise's queue: 500 ms doubling to 50 s).
const WRITE_RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest delay after failed status writes.
const WRITE_RETRY_MAX: Duration = Duration::from_secs(50);

/// Why a status write failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusWriteError {
    /// The API server refused or could not be reached.
    #[error("failed to update the status of NodePodProbe {node}: {source}")]
    Api {
        /// The NodePodProbe (node) name.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The PUT kept conflicting.
    #[error(
        "failed to update the status of NodePodProbe {node}: still conflicting after {CONFLICT_RETRIES} attempts"
    )]
    Conflict {
        /// The NodePodProbe (node) name.
        node: String,
    },
}

/// A running worker.
struct WorkerHandle {
    spec: watch::Sender<Probe>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        // Dropping the task's future drops its worker, which removes its result.
        self.task.abort();
    }
}

/// The NodePodProbe controller of one node.
pub struct PodProbeController {
    client: kube::Client,
    node_name: String,
    recorder: Arc<Recorder>,
    metrics: Option<ProbeMetrics>,
    results: Arc<ResultCache>,
    context: Arc<WorkerContext>,
    /// The NodePodProbe as last seen (watch or our own write), `None` while there is none.
    latest: Arc<Mutex<Option<NodePodProbe>>>,
}

impl PodProbeController {
    /// A controller for `node_name` probing through `cri` (kruise: the first runtime found),
    /// recording events with `recorder` (component [`super::EVENT_COMPONENT`]). `agent_started`
    /// spreads the first runs of probes over their period after a restart.
    pub fn new(
        client: kube::Client,
        node_name: &str,
        cri: CriClient,
        recorder: Arc<Recorder>,
        metrics: Option<ProbeMetrics>,
        agent_started: Instant,
    ) -> Self {
        let results = Arc::new(ResultCache::new());
        Self {
            client,
            node_name: node_name.to_owned(),
            recorder,
            metrics: metrics.clone(),
            results: Arc::clone(&results),
            context: Arc::new(WorkerContext {
                cri,
                results,
                metrics,
                agent_started,
            }),
            latest: Arc::new(Mutex::new(None)),
        }
    }

    /// Refreshes `lastProbeTime` of unchanged results after `heartbeat` instead of kruise's
    /// 600 s (for tests).
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        let results = Arc::new(ResultCache::with_heartbeat(heartbeat));
        self.context = Arc::new(WorkerContext {
            cri: self.context.cri.clone(),
            results: Arc::clone(&results),
            metrics: self.metrics.clone(),
            agent_started: self.context.agent_started,
        });
        self.results = results;
        self
    }

    /// Runs until shutdown. `ready` is set once the watch has listed (kruise's
    /// `nodePodProbeInformerSynced`).
    pub async fn run(self, ready: ReadinessCheck, shutdown: Shutdown) {
        let api: Api<NodePodProbe> = Api::all(self.client.clone());
        let selector = format!("metadata.name={}", self.node_name);
        let stream =
            watcher(api.clone(), watcher::Config::default().fields(&selector)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let writer = AbortOnDrop(tokio::spawn(
            status_writer(StatusWriter {
                api,
                node_name: self.node_name.clone(),
                recorder: Arc::clone(&self.recorder),
                metrics: self.metrics.clone(),
                results: Arc::clone(&self.results),
                latest: Arc::clone(&self.latest),
            })
            .in_current_span(),
        ));

        let mut workers: HashMap<ProbeKey, WorkerHandle> = HashMap::new();
        let mut relist: Option<Option<NodePodProbe>> = None;
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = &mut stop => break,
            };
            let synced = match event {
                Some(Ok(watcher::Event::Init)) => {
                    relist = Some(None);
                    continue;
                }
                Some(Ok(watcher::Event::InitApply(object))) => {
                    if let Some(relist) = relist.as_mut() {
                        *relist = Some(object);
                    }
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let object = relist.take().flatten();
                    self.store(object.clone());
                    ready.set(true);
                    object
                }
                Some(Ok(watcher::Event::Apply(object))) => {
                    self.store(Some(object.clone()));
                    Some(object)
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    self.store(None);
                    None
                }
                Some(Err(error)) => {
                    warn!(%error, "NodePodProbe watch error; retrying");
                    continue;
                }
                None => break,
            };
            let spec = synced.map(|object| object.spec).unwrap_or_default();
            self.sync_workers(&mut workers, &spec);
            self.results.poke();
        }
        drop(workers);
        drop(writer);
    }

    /// Keeps the newer of `object` and the stored copy (our own status write may be newer than
    /// the watch event being handled).
    fn store(&self, object: Option<NodePodProbe>) {
        let mut latest = lock(&self.latest);
        *latest = match (latest.take(), object) {
            (Some(stored), Some(seen)) if is_newer(&stored, &seen) => Some(stored),
            (_, seen) => seen,
        };
    }

    /// Starts, updates and stops workers to match `spec` (kruise's `sync`).
    fn sync_workers(&self, workers: &mut HashMap<ProbeKey, WorkerHandle>, spec: &NodePodProbeSpec) {
        let mut wanted: HashMap<ProbeKey, Probe> = HashMap::new();
        for pod in spec.pod_probes.iter().flatten() {
            for probe in pod.probes.iter().flatten() {
                let key = ProbeKey {
                    pod_namespace: pod.namespace.clone(),
                    pod_name: pod.name.clone(),
                    pod_uid: pod.uid.clone(),
                    pod_ip: pod.ip.clone(),
                    container_name: probe.container_name.clone(),
                    probe_name: probe.name.clone(),
                };
                wanted.insert(key, probe.probe.clone());
            }
        }
        workers.retain(|key, _| {
            let keep = wanted.contains_key(key);
            if !keep {
                info!(probe = %key, "stopping probe worker");
            }
            keep
        });
        for (key, probe) in wanted {
            match workers.get(&key) {
                Some(handle) => {
                    if *handle.spec.borrow() != probe {
                        info!(probe = %key, "probe changed");
                        let _ = handle.spec.send(probe);
                    }
                }
                None => {
                    info!(probe = %key, "starting probe worker");
                    let (sender, receiver) = watch::channel(probe.clone());
                    let worker = Worker::new(key.clone(), probe, Arc::clone(&self.results));
                    // kind/name are the NodePodProbe; the probe key names pod, container, probe.
                    let span = tracing::info_span!(
                        "probe",
                        kind = "NodePodProbe",
                        object = %self.node_name,
                        probe = %key
                    );
                    let task = tokio::spawn(
                        worker::run(worker, receiver, Arc::clone(&self.context)).instrument(span),
                    );
                    workers.insert(key, WorkerHandle { spec: sender, task });
                }
            }
        }
    }
}

fn lock(latest: &Mutex<Option<NodePodProbe>>) -> MutexGuard<'_, Option<NodePodProbe>> {
    latest.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `a`'s resourceVersion is numerically above `b`'s (kruise's comparison; anything
/// unparseable counts as not newer).
fn is_newer(a: &NodePodProbe, b: &NodePodProbe) -> bool {
    let version = |object: &NodePodProbe| {
        object
            .metadata
            .resource_version
            .as_deref()
            .and_then(|version| version.parse::<u64>().ok())
    };
    a.metadata.uid == b.metadata.uid
        && matches!((version(a), version(b)), (Some(a), Some(b)) if a > b)
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the status writer needs.
struct StatusWriter {
    api: Api<NodePodProbe>,
    node_name: String,
    recorder: Arc<Recorder>,
    metrics: Option<ProbeMetrics>,
    results: Arc<ResultCache>,
    latest: Arc<Mutex<Option<NodePodProbe>>>,
}

/// Writes the status whenever a result or the spec changed, coalesced.
async fn status_writer(writer: StatusWriter) {
    let mut backoff = Backoff::new(WRITE_RETRY_FIRST, WRITE_RETRY_MAX);
    loop {
        writer.results.changed().await;
        tokio::time::sleep(COALESCE).await;
        writer.publish_events().await;
        match writer.write().await {
            Ok(()) => backoff = Backoff::new(WRITE_RETRY_FIRST, WRITE_RETRY_MAX),
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(%error, retry_in = ?delay, "NodePodProbe status not written; retrying");
                tokio::time::sleep(delay).await;
                // Look again even if no result changes meanwhile.
                writer.results.poke();
            }
        }
    }
}

impl StatusWriter {
    fn latest(&self) -> Option<NodePodProbe> {
        lock(&self.latest).clone()
    }

    /// Records an event for each result that changed a state or message and is still in
    /// the spec. `Unknown` (a new container, no result yet) is not an event.
    async fn publish_events(&self) {
        let events = self.results.take_events();
        let Some(object) = self.latest() else {
            return;
        };
        for result in events {
            let reason = match result.state {
                ProbeState::Succeeded => PROBE_SUCCEEDED_REASON,
                ProbeState::Failed => PROBE_FAILED_REASON,
                ProbeState::Unknown => continue,
            };
            let in_spec = object.spec.pod_probes.iter().flatten().any(|pod| {
                pod.uid == result.key.pod_uid
                    && pod
                        .probes
                        .iter()
                        .flatten()
                        .any(|probe| probe.name == result.key.probe_name)
            });
            if !in_spec {
                continue;
            }
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(result.key.pod_namespace.clone()),
                name: Some(result.key.pod_name.clone()),
                uid: Some(result.key.pod_uid.clone()),
                ..ObjectReference::default()
            };
            self.recorder
                .publish(&reference, EventType::Normal, reason, &result.message)
                .await;
        }
    }

    /// Computes the status and writes it if it differs, retrying conflicts on a fresh copy.
    async fn write(&self) -> Result<(), StatusWriteError> {
        let Some(mut object) = self.latest() else {
            return Ok(());
        };
        for _ in 0..CONFLICT_RETRIES {
            let desired = desired_status(
                &object.spec,
                object.status.as_ref(),
                &self.results.results(),
                Timestamp::now(),
            );
            if same_status(object.status.as_ref(), &desired) {
                return Ok(());
            }
            let mut updated = object.clone();
            updated.status = Some(desired);
            match self
                .api
                .replace_status(&self.node_name, &PostParams::default(), &updated)
                .await
            {
                Ok(written) => {
                    self.count("ok");
                    debug!(node = %self.node_name, "NodePodProbe status written");
                    self.store(written);
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    self.count("conflict");
                    object = match self.api.get(&self.node_name).await {
                        Ok(fresh) => fresh,
                        Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
                        Err(source) => {
                            return Err(StatusWriteError::Api {
                                node: self.node_name.clone(),
                                source,
                            });
                        }
                    };
                    self.store(object.clone());
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
                Err(source) => {
                    self.count("error");
                    return Err(StatusWriteError::Api {
                        node: self.node_name.clone(),
                        source,
                    });
                }
            }
        }
        Err(StatusWriteError::Conflict {
            node: self.node_name.clone(),
        })
    }

    fn store(&self, object: NodePodProbe) {
        let mut latest = lock(&self.latest);
        // The watch may have delivered a newer spec meanwhile (or a deletion): keep it.
        match latest.as_ref() {
            Some(stored) if !is_newer(stored, &object) => *latest = Some(object),
            _ => {}
        }
    }

    fn count(&self, result: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.status_write(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn object(uid: &str, version: &str) -> NodePodProbe {
        NodePodProbe {
            metadata: ObjectMeta {
                name: Some("node".into()),
                uid: Some(uid.into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            spec: NodePodProbeSpec::default(),
            status: None,
        }
    }

    #[test]
    fn resource_versions_compare_as_numbers_of_the_same_object() {
        assert!(is_newer(&object("u", "10"), &object("u", "9")));
        assert!(!is_newer(&object("u", "9"), &object("u", "10")));
        assert!(!is_newer(&object("u", "10"), &object("u", "10")));
        assert!(
            !is_newer(&object("u", "10"), &object("other", "9")),
            "a recreated object wins"
        );
        assert!(!is_newer(&object("u", "x"), &object("u", "9")));
    }
}
