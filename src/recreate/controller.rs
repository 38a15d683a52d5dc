//! The daemon's ContainerRecreateRequest controller (§4.4): watches this node's active CRRs
//! and pods, serialises the work per pod (`<namespace>/<podName>`), and for each pod picks
//! a CRR, runs the core ([`super::sync_picked`]) and writes what it returns.
//!
//! Writes follow kruise master: phase changes and completion are a fresh GET and a PUT of
//! the status subresource (resourceVersion precondition, retried on conflict); the
//! per-container states are a merge patch of `/status`. Each write's resourceVersion is
//! remembered so a stale cached copy is not acted on (§1.4).
//!
//! Metrics ([`RecreateMetrics`]): containers and CRRs finished by result, CRR creation to
//! StopContainer and StopContainer to the replacement's start (see [`super::timing`]),
//! active CRRs by phase, failed syncs by reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, warn};

use super::queue::WorkQueue;
use super::timing::Timings;
use super::version::states_merge_patch;
use super::{
    ContainerRecreateState, CrrSync, CrrView, KillReport, SyncError, Write, WriteExpectations,
};
use crate::agent::Shutdown;
use crate::api::{
    CRR_ACTIVE_LABEL, CRR_NODE_NAME_LABEL, ContainerRecreateRequestPhase, v1alpha1, v1beta1,
};
use crate::apiversions::{GROUP, KruiseVersion};
use crate::cri::RuntimeSet;
use crate::events::{EventType, Recorder};
use crate::metrics::RecreateMetrics;
use crate::readiness::ReadinessCheck;

/// Kruise's hard-coded number of CRR workers (§1.3); `--crr-workers` may change it.
pub const DEFAULT_WORKERS: usize = 32;
/// The event component of the controller (§1.4).
pub const EVENT_COMPONENT: &str = "kruise-daemon-crr";
/// How many times a status PUT is retried on a conflict before the sync is retried later.
const CONFLICT_RETRIES: usize = 5;
/// How soon a pod is looked at again while the CRR cache is behind our last write (the
/// watch event usually comes first).
const CACHE_WAIT: Duration = Duration::from_millis(200);
/// How soon a pod is looked at again while the pod watch has not listed yet.
const POD_LIST_WAIT: Duration = Duration::from_secs(1);
/// How often a pod whose picked CRR is past its deadline is looked at again, waiting for the
/// manager to complete it (§4.3 step 4).
const DEADLINE_RECHECK: Duration = Duration::from_secs(5);
/// The reason of the Warning event on a CRR completed with a message: one the daemon can
/// never carry out (bad input).
pub const FAILED_RECREATE_REASON: &str = "FailedRecreate";
/// How long shutdown waits for workers in the middle of a sync.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a sync failed; the pod is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The core could not read the runtime's view of the pod.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// A status write failed.
    #[error("failed to {action} ContainerRecreateRequest {namespace}/{name}: {source}")]
    Write {
        /// What was written.
        action: &'static str,
        /// The CRR's namespace.
        namespace: String,
        /// The CRR's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The pod of CRRs labelled with this node, not among this node's pods, could not be
    /// read.
    #[error("failed to get pod {namespace}/{name}: {source}")]
    PodLookup {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A status PUT kept conflicting.
    #[error(
        "failed to {action} ContainerRecreateRequest {namespace}/{name}: still conflicting after {CONFLICT_RETRIES} attempts"
    )]
    Conflict {
        /// What was written.
        action: &'static str,
        /// The CRR's namespace.
        namespace: String,
        /// The CRR's name.
        name: String,
    },
}

impl ControllerError {
    /// A bounded label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Sync(error) => error.metric_label(),
            Self::Write { .. } => "write",
            Self::PodLookup { .. } => "pod_lookup",
            Self::Conflict { .. } => "conflict",
        }
    }
}

/// What the controller knows of one pod of this node.
#[derive(Debug, Clone)]
struct PodMeta {
    uid: String,
    deleting: bool,
}

#[derive(Default)]
struct Cache {
    /// CRRs by queue key, then by name.
    crrs: HashMap<String, BTreeMap<String, CrrView>>,
    /// Pods by `<namespace>/<name>`.
    pods: HashMap<String, PodMeta>,
    /// Whether the pod watch has listed once.
    pods_listed: bool,
    /// The CRR list in progress after a watch (re)start.
    crr_relist: Option<HashMap<String, BTreeMap<String, CrrView>>>,
    /// The pod list in progress after a watch (re)start.
    pod_relist: Option<HashMap<String, PodMeta>>,
}

impl Cache {
    fn has_active(&self, key: &str) -> bool {
        self.crrs.get(key).is_some_and(|crrs| {
            crrs.values()
                .any(|crr| !crr.deleting && !crr.is_completed())
        })
    }
}

struct Shared {
    client: kube::Client,
    node_name: String,
    version: KruiseVersion,
    runtimes: RuntimeSet,
    recorder: Arc<Recorder>,
    cache: Mutex<Cache>,
    expectations: Mutex<super::ResourceVersionExpectations>,
    queue: Arc<WorkQueue>,
    metrics: RecreateMetrics,
    timings: Mutex<Timings>,
}

/// The CRR controller of one node.
pub struct RecreateController {
    node_name: String,
    workers: usize,
    shared: Shared,
}

/// A sync task that is aborted when its worker is (at shutdown).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a sync asks of the queue.
enum Next {
    Done,
    After(Duration),
}

impl RecreateController {
    /// A controller for `node_name`, speaking `version` of the CRR API, with `workers` pods
    /// synced in parallel (kruise: 32), recording events with `recorder` (component
    /// [`EVENT_COMPONENT`]).
    pub fn new(
        client: kube::Client,
        node_name: &str,
        version: KruiseVersion,
        runtimes: RuntimeSet,
        workers: usize,
        recorder: Arc<Recorder>,
    ) -> Self {
        Self {
            node_name: node_name.to_owned(),
            workers: workers.max(1),
            shared: Shared {
                client,
                node_name: node_name.to_owned(),
                version,
                runtimes,
                recorder,
                cache: Mutex::new(Cache::default()),
                expectations: Mutex::new(super::ResourceVersionExpectations::new()),
                queue: WorkQueue::new(),
                metrics: RecreateMetrics::default(),
                timings: Mutex::new(Timings::default()),
            },
        }
    }

    /// Reports into `metrics` (by default the controller's metrics are in no registry).
    #[must_use]
    pub fn with_metrics(mut self, metrics: RecreateMetrics) -> Self {
        self.shared.metrics = metrics;
        self
    }

    /// Runs until shutdown. `ready` is set once the CRR watch has listed (kruise's
    /// `crrInformerSynced`).
    pub async fn run(self, ready: ReadinessCheck, shutdown: Shutdown) {
        let shared = &Arc::new(self.shared);
        let crr_api: Api<DynamicObject> = Api::all_with(
            shared.client.clone(),
            &shared
                .version
                .resource("ContainerRecreateRequest", "containerrecreaterequests"),
        );
        let crr_selector = format!(
            "{CRR_NODE_NAME_LABEL}={},{CRR_ACTIVE_LABEL}=true",
            self.node_name
        );
        let crr_stream =
            watcher(crr_api, watcher::Config::default().labels(&crr_selector)).default_backoff();
        // Metadata only: the pod's UID and deletion are all the controller needs of it.
        let pod_api: Api<PartialObjectMeta<Pod>> = Api::all(shared.client.clone());
        let pod_selector = format!("spec.nodeName={}", self.node_name);
        let pod_stream =
            watcher(pod_api, watcher::Config::default().fields(&pod_selector)).default_backoff();
        let mut crr_stream = std::pin::pin!(crr_stream);
        let mut pod_stream = std::pin::pin!(pod_stream);

        let mut workers = JoinSet::new();
        for _ in 0..self.workers {
            let shared = Arc::clone(shared);
            workers.spawn(async move { shared.work().await }.in_current_span());
        }

        let shutdown_signal = shutdown.wait();
        tokio::pin!(shutdown_signal);
        loop {
            tokio::select! {
                event = crr_stream.next() => match event {
                    Some(Ok(event)) => shared.on_crr_event(event, &ready),
                    Some(Err(error)) => warn!(%error, "ContainerRecreateRequest watch error; retrying"),
                    None => break,
                },
                event = pod_stream.next() => match event {
                    Some(Ok(event)) => shared.on_pod_event(event),
                    Some(Err(error)) => warn!(%error, "pod watch error; retrying"),
                    None => break,
                },
                () = &mut shutdown_signal => break,
            }
        }
        shared.queue.shut_down();
        // Let a sync in the middle of a kill finish its write; the core is crash-safe if not.
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("CRR workers still busy at shutdown; aborting them");
        }
    }
}

fn decode(object: DynamicObject, version: KruiseVersion) -> Result<CrrView, serde_json::Error> {
    let value = serde_json::to_value(object)?;
    Ok(match version {
        KruiseVersion::V1alpha1 => CrrView::from_v1alpha1(&serde_json::from_value::<
            v1alpha1::ContainerRecreateRequest,
        >(value)?),
        KruiseVersion::V1beta1 => CrrView::from_v1beta1(&serde_json::from_value::<
            v1beta1::ContainerRecreateRequest,
        >(value)?),
    })
}

fn pod_key(meta: &PartialObjectMeta<Pod>) -> String {
    format!(
        "{}/{}",
        meta.metadata.namespace.as_deref().unwrap_or_default(),
        meta.metadata.name.as_deref().unwrap_or_default()
    )
}

fn pod_meta(meta: &PartialObjectMeta<Pod>) -> PodMeta {
    PodMeta {
        uid: meta.metadata.uid.clone().unwrap_or_default(),
        deleting: meta.metadata.deletion_timestamp.is_some(),
    }
}

fn insert(crrs: &mut HashMap<String, BTreeMap<String, CrrView>>, view: CrrView) {
    crrs.entry(view.queue_key())
        .or_default()
        .insert(view.name.clone(), view);
}

fn remove(crrs: &mut HashMap<String, BTreeMap<String, CrrView>>, key: &str, name: &str) {
    if let Some(of_pod) = crrs.get_mut(key) {
        of_pod.remove(name);
        if of_pod.is_empty() {
            crrs.remove(key);
        }
    }
}

fn active(view: &CrrView) -> bool {
    !view.deleting && !view.is_completed()
}

/// Active CRRs by phase, in the order of [`crate::metrics::IN_FLIGHT_PHASES`].
fn in_flight(crrs: &HashMap<String, BTreeMap<String, CrrView>>) -> [i64; 3] {
    let mut counts = [0; 3];
    for view in crrs.values().flat_map(BTreeMap::values) {
        if !active(view) {
            continue;
        }
        let index = match view.phase() {
            Some(ContainerRecreateRequestPhase::Pending) => 0,
            Some(ContainerRecreateRequestPhase::Recreating) => 1,
            // No phase yet, or one kruise does not know: the daemon has not answered.
            _ => 2,
        };
        counts[index] += 1;
    }
    counts
}

/// The `container_recreates` result of each container that `after` moves to `Succeeded` or
/// `Failed` from another state in `before`.
fn finished_containers(
    before: &[ContainerRecreateState],
    after: &[ContainerRecreateState],
) -> Vec<&'static str> {
    after
        .iter()
        .filter(|state| {
            before
                .iter()
                .find(|previous| previous.name == state.name)
                .is_none_or(|previous| previous.phase != state.phase)
        })
        .filter_map(|state| match state.phase {
            ContainerRecreateRequestPhase::Succeeded => Some("succeeded"),
            ContainerRecreateRequestPhase::Failed => Some("failed"),
            _ => None,
        })
        .collect()
}

/// The `crr_completions` result of completing `crr` with `message`: kruised explains only
/// the requests it could not act on (§4.4 steps 4, 5.1).
fn completion_result(crr: &CrrView, message: &str) -> &'static str {
    if !message.is_empty() {
        "invalid"
    } else if crr
        .container_recreate_states
        .iter()
        .any(|state| state.phase == ContainerRecreateRequestPhase::Failed)
    {
        "failed"
    } else {
        "succeeded"
    }
}

/// The container a successful kill stopped: the one its `Killing` event names (the event
/// is recorded for every kill that reaches StopContainer).
fn killed_container(report: &KillReport) -> Option<&str> {
    report
        .events
        .iter()
        .find(|event| event.reason == super::kill::KILLING_REASON)
        .map(|event| event.container_name.as_str())
}

/// When each successful kill of a sync that returned at `returned` called StopContainer:
/// the kill is the last thing a sync does, so each kill's start is `returned` less its own
/// and the later kills' time, and its StopContainer comes after its preStop hook.
fn stop_times(kills: &[KillReport], returned: Timestamp) -> Vec<(&str, Timestamp)> {
    let mut after = Duration::ZERO;
    let mut stops = Vec::new();
    for report in kills.iter().rev() {
        let before_return = after + report.elapsed.saturating_sub(report.hook_elapsed);
        after += report.elapsed;
        if report.result.is_ok()
            && let Some(container) = killed_container(report)
        {
            stops.push((
                container,
                returned.checked_sub(before_return).unwrap_or(returned),
            ));
        }
    }
    stops
}

impl Shared {
    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expectations(&self) -> MutexGuard<'_, super::ResourceVersionExpectations> {
        self.expectations.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn timings(&self) -> MutexGuard<'_, Timings> {
        self.timings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes the first sighting of an active CRR, forgets a finished one.
    fn observe(&self, view: &CrrView) {
        if active(view) {
            self.timings().seen(view, Timestamp::now());
        } else {
            self.timings().forget(&view.uid);
        }
    }

    fn update_in_flight(&self) {
        let counts = in_flight(&self.cache().crrs);
        self.metrics.set_in_flight(counts);
    }

    fn on_crr_event(&self, event: watcher::Event<DynamicObject>, ready: &ReadinessCheck) {
        match event {
            watcher::Event::Init => self.cache().crr_relist = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                if let Some(view) = self.decode(object) {
                    self.observe(&view);
                    let mut cache = self.cache();
                    if let Some(relist) = cache.crr_relist.as_mut() {
                        insert(relist, view);
                    }
                }
            }
            watcher::Event::InitDone => {
                let keys: Vec<String> = {
                    let mut cache = self.cache();
                    if let Some(relist) = cache.crr_relist.take() {
                        cache.crrs = relist;
                    }
                    let listed: std::collections::HashSet<&str> = cache
                        .crrs
                        .values()
                        .flat_map(BTreeMap::values)
                        .map(|view| view.uid.as_str())
                        .collect();
                    self.timings().retain(|uid| listed.contains(uid));
                    cache
                        .crrs
                        .keys()
                        .filter(|key| cache.has_active(key))
                        .cloned()
                        .collect()
                };
                self.update_in_flight();
                for key in keys {
                    self.queue.add(&key);
                }
                ready.set(true);
            }
            watcher::Event::Apply(object) => {
                let Some(view) = self.decode(object) else {
                    return;
                };
                let key = view.queue_key();
                self.observe(&view);
                let enqueue = {
                    let is_active = active(&view);
                    let mut cache = self.cache();
                    insert(&mut cache.crrs, view);
                    // Kruise enqueues only active CRRs; we also look again when one of a
                    // pod's CRRs finishes so that the next one is picked without waiting.
                    is_active || cache.has_active(&key)
                };
                self.update_in_flight();
                if enqueue {
                    self.queue.add(&key);
                }
            }
            watcher::Event::Delete(object) => {
                let Some(view) = self.decode(object) else {
                    return;
                };
                let key = view.queue_key();
                // Deleted, or the manager removed the `active` label: drop expectations.
                self.expectations().forget(&view);
                self.timings().forget(&view.uid);
                let enqueue = {
                    let mut cache = self.cache();
                    remove(&mut cache.crrs, &key, &view.name);
                    cache.has_active(&key)
                };
                self.update_in_flight();
                if enqueue {
                    self.queue.add(&key);
                }
            }
        }
    }

    fn on_pod_event(&self, event: watcher::Event<PartialObjectMeta<Pod>>) {
        let key = match event {
            watcher::Event::Init => {
                self.cache().pod_relist = Some(HashMap::new());
                return;
            }
            watcher::Event::InitApply(meta) => {
                let mut cache = self.cache();
                if let Some(relist) = cache.pod_relist.as_mut() {
                    relist.insert(pod_key(&meta), pod_meta(&meta));
                }
                return;
            }
            watcher::Event::InitDone => {
                let keys: Vec<String> = {
                    let mut cache = self.cache();
                    if let Some(relist) = cache.pod_relist.take() {
                        cache.pods = relist;
                    }
                    cache.pods_listed = true;
                    cache
                        .crrs
                        .keys()
                        .filter(|key| cache.has_active(key))
                        .cloned()
                        .collect()
                };
                for key in keys {
                    self.queue.add(&key);
                }
                return;
            }
            watcher::Event::Apply(meta) => {
                let key = pod_key(&meta);
                self.cache().pods.insert(key.clone(), pod_meta(&meta));
                key
            }
            watcher::Event::Delete(meta) => {
                let key = pod_key(&meta);
                self.cache().pods.remove(&key);
                key
            }
        };
        if self.cache().has_active(&key) {
            self.queue.add(&key);
        }
    }

    fn decode(&self, object: DynamicObject) -> Option<CrrView> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        match decode(object, self.version) {
            Ok(view) => Some(view),
            Err(error) => {
                warn!(%namespace, %name, %error, "ignoring an undecodable ContainerRecreateRequest");
                None
            }
        }
    }

    async fn work(self: Arc<Self>) {
        while let Some(key) = self.queue.get().await {
            let started = Instant::now();
            // Its own task, so that a panic fails this sync only: the pod is retried and the
            // worker and the other pods carry on.
            let mut sync = AbortOnDrop(tokio::spawn({
                let shared = Arc::clone(&self);
                let key = key.clone();
                async move { shared.sync(&key).await }.in_current_span()
            }));
            match (&mut sync.0).await {
                Ok(Ok(Next::Done)) => self.queue.forget(&key),
                Ok(Ok(Next::After(delay))) => {
                    self.queue.forget(&key);
                    self.queue.add_after(&key, delay);
                }
                Ok(Err(error)) => {
                    self.metrics.sync_error(error.metric_label());
                    let delay = self.queue.add_rate_limited(&key);
                    warn!(%key, %error, reason = error.metric_label(), ?delay, "CRR sync failed; retrying");
                }
                Err(error) => {
                    self.metrics.sync_error("panic");
                    let delay = self.queue.add_rate_limited(&key);
                    warn!(%key, %error, ?delay, "CRR sync panicked; retrying");
                }
            }
            debug!(%key, elapsed = ?started.elapsed(), "synced pod's CRRs");
            self.queue.done(&key);
        }
    }

    /// One sync of a pod's CRRs (§4.4 `sync(key)`).
    async fn sync(&self, key: &str) -> Result<Next, ControllerError> {
        let (crrs, pod) = {
            let cache = self.cache();
            if !cache.pods_listed {
                return Ok(Next::After(POD_LIST_WAIT));
            }
            let crrs: Vec<CrrView> = cache
                .crrs
                .get(key)
                .map(|crrs| crrs.values().cloned().collect())
                .unwrap_or_default();
            (crrs, cache.pods.get(key).cloned())
        };
        if crrs.is_empty() {
            return Ok(Next::Done);
        }
        // The pod is gone, going, or another pod of the same name: nothing of it is ours to
        // stop. The manager completes such CRRs with "pod has gone" (§4.3 step 2).
        let pod = match pod {
            Some(pod) if !pod.deleting => pod,
            Some(_) => {
                debug!(%key, "pod deleting; not acting on its CRRs");
                return Ok(Next::Done);
            }
            None => return self.complete_if_bound_elsewhere(&crrs).await,
        };
        let crrs: Vec<CrrView> = crrs
            .into_iter()
            .filter(|crr| crr.pod_uid() == pod.uid)
            .collect();

        let pick = {
            let mut expectations = self.expectations();
            let now = Instant::now();
            // Stricter than kruise, which stops only at the stale CRR in picking order: two
            // CRRs created in the same second sort by name, so a stale copy of the one we
            // just set Recreating could let the other be picked too. Wait for every copy.
            let stale = crrs.iter().any(|crr| {
                matches!(
                    expectations.check(crr, now),
                    super::Expectation::Unsatisfied { waited } if waited < super::MAX_EXPECTATION_WAIT
                )
            });
            if stale {
                return Ok(Next::After(CACHE_WAIT));
            }
            super::pick(&crrs, &mut *expectations, now)
        };
        for crr in &pick.mark_pending {
            self.set_phase(crr, ContainerRecreateRequestPhase::Pending)
                .await?;
        }
        let Some(crr) = pick.picked else {
            if pick.waiting_for_cache.is_some() {
                return Ok(Next::After(CACHE_WAIT));
            }
            return Ok(Next::Done);
        };

        // Everything logged while acting on this CRR names it.
        let span = tracing::info_span!(
            "crr",
            kind = "ContainerRecreateRequest",
            object = format_args!("{}/{}", crr.namespace, crr.name),
            uid = %crr.uid
        );
        self.act_on(crr, &pod).instrument(span).await
    }

    /// Acts on the picked CRR of a pod: stops what is due, writes its status and events.
    async fn act_on(&self, crr: &CrrView, pod: &PodMeta) -> Result<Next, ControllerError> {
        let now = Timestamp::now();
        if let Some(left) = deadline_left(crr, now)
            && left.is_zero()
        {
            // Past activeDeadlineSeconds: stop here and leave completion to the manager
            // (§4.3 step 4), so no container is stopped after the deadline.
            info!(namespace = %crr.namespace, name = %crr.name, "CRR past its activeDeadlineSeconds; not acting");
            return Ok(Next::After(DEADLINE_RECHECK));
        }

        let outcome = super::sync_picked(crr, &self.runtimes, now).await?;
        self.observe_timings(crr, &outcome, Timestamp::now());
        for kill in &outcome.kills {
            info!(
                namespace = %crr.namespace,
                crr = %crr.name,
                elapsed = ?kill.elapsed,
                stop_grace_seconds = kill.stop_grace_seconds,
                stopped = kill.result.is_ok(),
                "stopped container"
            );
        }
        for event in &outcome.events {
            self.publish(crr, pod, event).await;
        }
        match outcome.write {
            Some(Write::Phase(phase)) => self.set_phase(crr, phase).await?,
            Some(Write::States(states)) => {
                self.patch_states(crr, &states).await?;
                for result in finished_containers(&crr.container_recreate_states, &states) {
                    self.metrics.container_finished(result);
                }
            }
            Some(Write::Complete { message }) => self.complete(crr, &message).await?,
            None => {}
        }
        Ok(match outcome.requeue_after {
            Some(after) => Next::After(after),
            None => Next::Done,
        })
    }

    /// CRRs labelled with this node whose pod this node's pod watch does not have: usually
    /// the pod is gone (the manager's to report, §4.3 step 2). If it exists, is the CRR's
    /// and is bound to another node, no agent will ever act on them (the label is immutable
    /// and names this node), so they are completed with a message saying where the pod is.
    /// Kruise would set them Recreating with "not found container on Node" until their
    /// deadline, or forever without one.
    async fn complete_if_bound_elsewhere(&self, crrs: &[CrrView]) -> Result<Next, ControllerError> {
        let Some(first) = crrs.first() else {
            return Ok(Next::Done);
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &first.namespace);
        let pod =
            pods.get_opt(&first.pod_name)
                .await
                .map_err(|source| ControllerError::PodLookup {
                    namespace: first.namespace.clone(),
                    name: first.pod_name.clone(),
                    source,
                })?;
        let Some(pod) = pod.filter(|pod| pod.metadata.deletion_timestamp.is_none()) else {
            return Ok(Next::Done);
        };
        let node = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_deref())
            .unwrap_or_default();
        // Unbound, or bound here and not yet seen by the watch: its events will come.
        if node.is_empty() || node == self.node_name {
            return Ok(Next::Done);
        }
        let message = format!(
            "pod {}/{} is bound to node {node}, not to this node {}",
            first.namespace, first.pod_name, self.node_name
        );
        for crr in crrs
            .iter()
            .filter(|crr| active(crr) && Some(crr.pod_uid()) == pod.metadata.uid.as_deref())
        {
            self.complete(crr, &message).await?;
        }
        Ok(Next::Done)
    }

    /// Times the replacements this sync saw started, then the kills it made.
    fn observe_timings(&self, crr: &CrrView, outcome: &CrrSync, returned: Timestamp) {
        let mut timings = self.timings();
        if let Some(pod) = &outcome.pod {
            for elapsed in timings.restarted(&crr.uid, pod) {
                self.metrics.observe_kill_to_running(elapsed);
            }
        }
        for (container, at) in stop_times(&outcome.kills, returned) {
            if let Some(elapsed) = timings.killed(crr, container, at) {
                self.metrics.observe_creation_to_kill(elapsed);
            }
        }
    }

    async fn publish(&self, crr: &CrrView, pod: &PodMeta, event: &super::ContainerEvent) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(crr.namespace.clone()),
            name: Some(crr.pod_name.clone()),
            uid: Some(pod.uid.clone()),
            field_path: Some(event.field_path()),
            ..ObjectReference::default()
        };
        let event_type = match event.event_type {
            super::EventType::Normal => EventType::Normal,
            super::EventType::Warning => EventType::Warning,
        };
        self.recorder
            .publish(&reference, event_type, event.reason, &event.message)
            .await;
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            namespace,
            &self
                .version
                .resource("ContainerRecreateRequest", "containerrecreaterequests"),
        )
    }

    fn expect(&self, crr: &CrrView, object: &DynamicObject) {
        if let Some(resource_version) = object.metadata.resource_version.as_deref() {
            self.expectations().expect(&crr.uid, resource_version);
        }
    }

    async fn set_phase(
        &self,
        crr: &CrrView,
        phase: ContainerRecreateRequestPhase,
    ) -> Result<(), ControllerError> {
        let phase = phase.to_string();
        let written = self
            .put_status("update phase of", crr, |status| {
                status.insert("phase".into(), phase.clone().into());
            })
            .await?;
        if written {
            info!(namespace = %crr.namespace, name = %crr.name, %phase, "set CRR phase");
        }
        Ok(())
    }

    /// Completes the CRR and counts it, unless it was gone, replaced or already completed.
    async fn complete(&self, crr: &CrrView, message: &str) -> Result<(), ControllerError> {
        let completion_time = serde_json::to_value(Time(Timestamp::now())).unwrap_or_default();
        let written = self
            .put_status("complete", crr, |status| {
                status.insert(
                    "phase".into(),
                    ContainerRecreateRequestPhase::Completed.to_string().into(),
                );
                status.insert("completionTime".into(), completion_time.clone());
                status.insert("message".into(), message.into());
            })
            .await?;
        if written {
            info!(namespace = %crr.namespace, name = %crr.name, %message, "completed CRR");
            self.metrics.crr_completed(completion_result(crr, message));
            self.timings().forget(&crr.uid);
            if !message.is_empty() {
                // A message means the CRR could not be carried out: say so where users look.
                let reference = ObjectReference {
                    api_version: Some(format!("{}/{}", GROUP, self.version.as_str())),
                    kind: Some("ContainerRecreateRequest".into()),
                    namespace: Some(crr.namespace.clone()),
                    name: Some(crr.name.clone()),
                    uid: Some(crr.uid.clone()),
                    ..ObjectReference::default()
                };
                self.recorder
                    .publish(
                        &reference,
                        EventType::Warning,
                        FAILED_RECREATE_REASON,
                        message,
                    )
                    .await;
            }
        }
        Ok(())
    }

    /// Fresh GET and PUT of the status subresource, retried on conflict (kruise master's
    /// `RetryOnConflict` around `UpdateStatus`, §4.4 steps 3 and 5.8). Nothing is written to
    /// a CRR that was replaced or completed meanwhile; `Ok(false)` says so.
    async fn put_status(
        &self,
        action: &'static str,
        crr: &CrrView,
        change: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
    ) -> Result<bool, ControllerError> {
        let api = self.api(&crr.namespace);
        let failed = |source| ControllerError::Write {
            action,
            namespace: crr.namespace.clone(),
            name: crr.name.clone(),
            source,
        };
        for _ in 0..CONFLICT_RETRIES {
            let mut object = match api.get_status(&crr.name).await {
                Ok(object) => object,
                Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(false),
                Err(error) => return Err(failed(error)),
            };
            if object.metadata.uid.as_deref() != Some(crr.uid.as_str()) {
                return Ok(false);
            }
            let status = object
                .data
                .as_object_mut()
                .map(|data| {
                    data.entry("status")
                        .or_insert_with(|| serde_json::json!({}))
                })
                .and_then(serde_json::Value::as_object_mut);
            let Some(status) = status else {
                return Ok(false);
            };
            if status
                .get("completionTime")
                .is_some_and(|time| !time.is_null())
            {
                return Ok(false);
            }
            change(status);
            match api
                .replace_status(&crr.name, &PostParams::default(), &object)
                .await
            {
                Ok(written) => {
                    self.expect(crr, &written);
                    return Ok(true);
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(false),
                Err(error) => return Err(failed(error)),
            }
        }
        Err(ControllerError::Conflict {
            action,
            namespace: crr.namespace.clone(),
            name: crr.name.clone(),
        })
    }

    /// Merge patch of `status.containerRecreateStates` (§4.4 step 5.5).
    async fn patch_states(
        &self,
        crr: &CrrView,
        states: &[super::ContainerRecreateState],
    ) -> Result<(), ControllerError> {
        let written = self
            .api(&crr.namespace)
            .patch_status(
                &crr.name,
                &PatchParams::default(),
                &Patch::Merge(states_merge_patch(states)),
            )
            .await
            .map_err(|source| ControllerError::Write {
                action: "patch containerRecreateStates of",
                namespace: crr.namespace.clone(),
                name: crr.name.clone(),
                source,
            })?;
        self.expect(crr, &written);
        debug!(namespace = %crr.namespace, name = %crr.name, ?states, "patched CRR states");
        Ok(())
    }
}

/// Time left before `activeDeadlineSeconds` since creation, if the CRR has a deadline.
fn deadline_left(crr: &CrrView, now: Timestamp) -> Option<Duration> {
    let seconds = crr.active_deadline_seconds?;
    let created = crr.creation_timestamp?;
    let elapsed = now.duration_since(created);
    let left = k8s_openapi::jiff::SignedDuration::from_secs(seconds) - elapsed;
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recreate::kill::{GracePeriod, GraceSource, HookOutcome, KILLING_REASON, KillError};
    use crate::recreate::testing::{crr_named, crr_with_containers};
    use ContainerRecreateRequestPhase::{Failed, Pending, Recreating, Succeeded};

    fn state(name: &str, phase: ContainerRecreateRequestPhase) -> ContainerRecreateState {
        ContainerRecreateState::new(name, phase)
    }

    fn report(container: &str, elapsed_ms: u64, hook_ms: u64, stopped: bool) -> KillReport {
        KillReport {
            events: vec![super::super::ContainerEvent {
                event_type: super::super::EventType::Normal,
                reason: KILLING_REASON,
                message: String::new(),
                container_name: container.into(),
            }],
            grace: GracePeriod {
                seconds: 30,
                source: GraceSource::Default,
            },
            hook: HookOutcome::None,
            hook_elapsed: Duration::from_millis(hook_ms),
            stop_grace_seconds: 30,
            elapsed: Duration::from_millis(elapsed_ms),
            result: if stopped {
                Ok(())
            } else {
                Err(KillError::NotInRequest {
                    container: container.into(),
                    container_id: String::new(),
                    pod: String::new(),
                    reason: String::new(),
                })
            },
        }
    }

    #[test]
    fn in_flight_counts_active_crrs_by_phase() {
        let mut crrs = HashMap::new();
        let mut done = crr_named("done", "Recreating", "2024-01-01T00:00:00Z");
        done.completion_time = Some(Timestamp::now());
        let mut deleting = crr_named("deleting", "Pending", "2024-01-01T00:00:00Z");
        deleting.deleting = true;
        for view in [
            crr_named("a", "Pending", "2024-01-01T00:00:00Z"),
            crr_named("b", "Pending", "2024-01-01T00:00:00Z"),
            crr_named("c", "Recreating", "2024-01-01T00:00:00Z"),
            crr_named("d", "", "2024-01-01T00:00:00Z"),
            crr_named("e", "Restarting", "2024-01-01T00:00:00Z"),
            crr_named("f", "Completed", "2024-01-01T00:00:00Z"),
            done,
            deleting,
        ] {
            insert(&mut crrs, view);
        }
        assert_eq!(in_flight(&crrs), [2, 1, 2]);
        assert_eq!(in_flight(&HashMap::new()), [0, 0, 0]);
    }

    #[test]
    fn only_containers_newly_succeeded_or_failed_are_counted() {
        let before = [
            state("a", Recreating),
            state("b", Pending),
            state("c", Succeeded),
        ];
        let after = [
            state("a", Succeeded),
            state("b", Failed),
            state("c", Succeeded),
            state("d", Recreating),
        ];
        assert_eq!(
            finished_containers(&before, &after),
            ["succeeded", "failed"]
        );
        // A first write straight to a final state counts too.
        assert_eq!(
            finished_containers(&[], &[state("a", Succeeded)]),
            ["succeeded"]
        );
        assert!(finished_containers(&after, &after).is_empty());
    }

    #[test]
    fn a_completion_is_invalid_with_a_message_failed_with_a_failed_container() {
        let mut crr = crr_with_containers(&[]);
        crr.container_recreate_states = vec![state("a", Succeeded), state("b", Succeeded)];
        assert_eq!(completion_result(&crr, ""), "succeeded");
        crr.container_recreate_states[1].phase = Failed;
        assert_eq!(completion_result(&crr, ""), "failed");
        assert_eq!(
            completion_result(&crr, "has different runtime types"),
            "invalid"
        );
    }

    #[test]
    fn each_stop_is_timed_back_from_the_syncs_return_after_its_hook() {
        let returned: Timestamp = "2024-01-01T00:00:10Z".parse().unwrap();
        // failurePolicy Ignore: `a` failed to stop (not timed), then `b` ran a 300 ms hook
        // and a 200 ms stop, the last thing the sync did.
        let kills = [report("a", 100, 0, false), report("b", 500, 300, true)];
        assert_eq!(
            stop_times(&kills, returned),
            [("b", "2024-01-01T00:00:09.800Z".parse().unwrap())]
        );
        let kills = [report("a", 100, 0, true), report("b", 500, 300, true)];
        assert_eq!(
            stop_times(&kills, returned),
            [
                ("b", "2024-01-01T00:00:09.800Z".parse().unwrap()),
                ("a", "2024-01-01T00:00:09.400Z".parse().unwrap())
            ]
        );
        // Without a Killing event (the container was not in the request) nothing is timed.
        let mut odd = report("a", 100, 0, true);
        odd.events.clear();
        assert!(stop_times(&[odd], returned).is_empty());
    }

    #[test]
    fn the_deadline_counts_from_creation() {
        let mut crr = crr_with_containers(&[]);
        let created: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        crr.creation_timestamp = Some(created);
        assert_eq!(deadline_left(&crr, created), None);
        crr.active_deadline_seconds = Some(10);
        let later = created + k8s_openapi::jiff::SignedDuration::from_secs(4);
        assert_eq!(deadline_left(&crr, later), Some(Duration::from_secs(6)));
        let past = created + k8s_openapi::jiff::SignedDuration::from_secs(11);
        assert_eq!(deadline_left(&crr, past), Some(Duration::ZERO));
    }
}
