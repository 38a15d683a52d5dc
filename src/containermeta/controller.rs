//! The daemon's containermeta controller (§6.1): watches this node's pods
//! (`spec.nodeName=<node>`), and for kruise's pods keeps the
//! `apps.kruise.io/runtime-containers-meta` annotation in step with the runtime, written
//! through `pods/status` (a strategic merge patch of the annotation; the pod status strategy
//! lets metadata change there). Containers whose env from metadata is stale during an
//! in-place update go to the [`super::restarter`].
//!
//! Pods first seen without the annotation are left alone until they change (no write storm
//! at start-up); work is queued one second after the event, as kruise does; after a write,
//! cached copies older than the written resourceVersion are not acted on for up to
//! [`MAX_EXPECTATION_WAIT`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, warn};

use super::filter::{can_enqueue, has_meta, meta_of, needs_sync};
use super::meta::RUNTIME_CONTAINERS_META_ANNOTATION;
use super::restarter::{self, Restart};
use super::sync::{manage, read_containers, runtime_for_pod};
use crate::agent::Shutdown;
use crate::cri::{ContainerId, CriError, RuntimeSet};
use crate::events::{EventType, Recorder};
use crate::readiness::ReadinessCheck;
use crate::recreate::queue::WorkQueue;

/// The event component of the controller (§1.4).
pub const EVENT_COMPONENT: &str = "kruise-daemon-containermeta";
/// Kruise's hard-coded sync workers.
pub const WORKERS: usize = 5;
/// Kruise's hard-coded restart workers.
pub const RESTART_WORKERS: usize = 10;
/// How long after an event a pod is synced (kruise's `enqueue`).
pub const ENQUEUE_DELAY: Duration = Duration::from_secs(1);
/// How long kruise waits before restarting a container (its restart queue's first delay).
pub const RESTART_DELAY: Duration = Duration::from_secs(3);
/// How soon a pod whose environment could not be read is looked at again.
pub const ENV_RETRY: Duration = Duration::from_secs(3);
/// How long a stale cached pod is waited out after our write (kruise: 30 s).
pub const MAX_EXPECTATION_WAIT: Duration = Duration::from_secs(30);
/// How soon a pod is looked at again while the cache is behind our write.
const CACHE_WAIT: Duration = Duration::from_millis(500);

/// Why a pod's sync failed; retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ContainerMetaError {
    /// The runtime's view of the pod could not be read.
    #[error("failed to GetPodStatus of {key}: {source}")]
    Runtime {
        /// `<namespace>/<name>`.
        key: String,
        /// The CRI error.
        #[source]
        source: CriError,
    },
    /// The annotation could not be written.
    #[error("failed to patch pod {key}: {source}")]
    Patch {
        /// `<namespace>/<name>`.
        key: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// kruise's resource-version expectations for pods, keyed by UID.
#[derive(Default)]
struct Expectations {
    expected: HashMap<String, (u64, Option<Instant>)>,
}

impl Expectations {
    fn expect(&mut self, uid: &str, resource_version: &str) {
        if let Ok(version) = resource_version.parse::<u64>() {
            let entry = self.expected.entry(uid.to_owned()).or_insert((0, None));
            if version >= entry.0 {
                *entry = (version, None);
            }
        }
    }

    /// Whether the cached copy may be acted on: it is at least as new as our last write, or
    /// it has been stale for [`MAX_EXPECTATION_WAIT`].
    fn satisfied(&mut self, pod: &Pod, now: Instant) -> bool {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let Some((expected, since)) = self.expected.get_mut(uid) else {
            return true;
        };
        let observed = pod
            .metadata
            .resource_version
            .as_deref()
            .and_then(|version| version.parse::<u64>().ok());
        if observed.is_none_or(|observed| observed >= *expected) {
            self.expected.remove(uid);
            return true;
        }
        let since = *since.get_or_insert(now);
        if now.saturating_duration_since(since) >= MAX_EXPECTATION_WAIT {
            warn!(%uid, "waited too long for our own pod write to be seen; going on");
            self.expected.remove(uid);
            return true;
        }
        false
    }

    fn forget(&mut self, uid: &str) {
        self.expected.remove(uid);
    }
}

struct Shared {
    client: kube::Client,
    runtimes: RuntimeSet,
    recorder: Arc<Recorder>,
    env_gate: bool,
    pods: Mutex<HashMap<String, Pod>>,
    expectations: Mutex<Expectations>,
    queue: Arc<WorkQueue>,
    restarts: Arc<WorkQueue>,
}

/// The containermeta controller of one node.
pub struct ContainerMetaController {
    node_name: String,
    shared: Arc<Shared>,
}

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

enum Next {
    Done,
    After(Duration),
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ContainerMetaController {
    /// A controller for `node_name`; `env_gate` is kruise's `InPlaceUpdateEnvFromMetadata`.
    /// Events go through `recorder` (component [`EVENT_COMPONENT`]).
    pub fn new(
        client: kube::Client,
        node_name: &str,
        runtimes: RuntimeSet,
        recorder: Arc<Recorder>,
        env_gate: bool,
    ) -> Self {
        Self {
            node_name: node_name.to_owned(),
            shared: Arc::new(Shared {
                client,
                runtimes,
                recorder,
                env_gate,
                pods: Mutex::new(HashMap::new()),
                expectations: Mutex::new(Expectations::default()),
                queue: WorkQueue::new(),
                restarts: WorkQueue::new(),
            }),
        }
    }

    /// Runs until shutdown; `ready` is set once the pod watch has listed.
    pub async fn run(self, ready: ReadinessCheck, shutdown: Shutdown) {
        let shared = &self.shared;
        let api: Api<Pod> = Api::all(shared.client.clone());
        let selector = format!("spec.nodeName={}", self.node_name);
        let stream = watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut workers = JoinSet::new();
        for _ in 0..WORKERS {
            let shared = Arc::clone(shared);
            workers.spawn(async move { shared.work().await }.in_current_span());
        }
        for _ in 0..RESTART_WORKERS {
            let shared = Arc::clone(shared);
            workers.spawn(async move { shared.restart_work().await }.in_current_span());
        }
        let mut relist: Option<HashMap<String, Pod>> = None;
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = &mut stop => break,
            };
            match event {
                Some(Ok(watcher::Event::Init)) => relist = Some(HashMap::new()),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let Some(relist) = relist.as_mut() {
                        relist.insert(key_of(&pod), pod);
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let listed = relist.take().unwrap_or_default();
                    let gone: Vec<Pod> = {
                        let pods = shared.pods();
                        pods.iter()
                            .filter(|(key, _)| !listed.contains_key(*key))
                            .map(|(_, pod)| pod.clone())
                            .collect()
                    };
                    for pod in gone {
                        shared.on_delete(&pod);
                    }
                    for pod in listed.into_values() {
                        shared.on_apply(pod);
                    }
                    ready.set(true);
                }
                Some(Ok(watcher::Event::Apply(pod))) => shared.on_apply(pod),
                Some(Ok(watcher::Event::Delete(pod))) => shared.on_delete(&pod),
                Some(Err(error)) => warn!(%error, "pod watch error; retrying"),
                None => break,
            }
        }
        shared.queue.shut_down();
        shared.restarts.shut_down();
        workers.abort_all();
    }
}

impl Shared {
    fn pods(&self) -> MutexGuard<'_, HashMap<String, Pod>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expectations(&self) -> MutexGuard<'_, Expectations> {
        self.expectations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An added or updated pod (kruise's `AddFunc` / `UpdateFunc`).
    fn on_apply(&self, pod: Pod) {
        let key = key_of(&pod);
        let old = self.pods().insert(key.clone(), pod.clone());
        let interesting = match &old {
            // Pods first seen without meta wait for their next change.
            None => has_meta(&pod) && needs_sync(None, &pod, self.env_gate),
            Some(old) => needs_sync(Some(old), &pod, self.env_gate),
        };
        if interesting && can_enqueue(&pod) {
            self.queue.add_after(&key, ENQUEUE_DELAY);
        }
    }

    fn on_delete(&self, pod: &Pod) {
        self.pods().remove(&key_of(pod));
        if let Some(uid) = pod.metadata.uid.as_deref() {
            self.expectations().forget(uid);
        }
    }

    async fn work(self: Arc<Self>) {
        while let Some(key) = self.queue.get().await {
            let mut sync = AbortOnDrop(tokio::spawn({
                let shared = Arc::clone(&self);
                let key = key.clone();
                let span = tracing::info_span!("pod", kind = "Pod", object = %key);
                async move { shared.sync(&key).await }.instrument(span)
            }));
            match (&mut sync.0).await {
                Ok(Ok(Next::Done)) => self.queue.forget(&key),
                Ok(Ok(Next::After(delay))) => {
                    self.queue.forget(&key);
                    self.queue.add_after(&key, delay);
                }
                Ok(Err(error)) => {
                    let delay = self.queue.add_rate_limited(&key);
                    warn!(%key, %error, ?delay, "container meta sync failed; retrying");
                }
                Err(error) => {
                    let delay = self.queue.add_rate_limited(&key);
                    warn!(%key, %error, ?delay, "container meta sync panicked; retrying");
                }
            }
            self.queue.done(&key);
        }
    }

    /// One sync of a pod (kruise's `sync`).
    async fn sync(&self, key: &str) -> Result<Next, ContainerMetaError> {
        let Some(pod) = self.pods().get(key).cloned() else {
            return Ok(Next::Done);
        };
        if !can_enqueue(&pod) {
            return Ok(Next::Done);
        }
        if !self.expectations().satisfied(&pod, Instant::now()) {
            return Ok(Next::After(CACHE_WAIT));
        }
        let cri = match runtime_for_pod(&pod, &self.runtimes) {
            Ok(Some(cri)) => cri,
            Ok(None) => return Ok(Next::Done),
            Err(error) => {
                warn!(%key, %error, "failed to get the runtime for the pod");
                return Ok(Next::Done);
            }
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let containers =
            read_containers(cri, &uid)
                .await
                .map_err(|source| ContainerMetaError::Runtime {
                    key: key.to_owned(),
                    source,
                })?;
        let old = meta_of(&pod).unwrap_or_else(|error| {
            warn!(%key, %error, "unreadable runtime container meta; rewriting it");
            None
        });
        let sync = manage(&pod, &containers, old.as_ref(), cri, self.env_gate).await;
        for id in &sync.restarts {
            self.restarts.add_after(&id.to_string(), RESTART_DELAY);
        }
        if old.as_ref() != Some(&sync.meta) {
            let json = sync.meta.to_json();
            let patch =
                json!({"metadata": {"annotations": {RUNTIME_CONTAINERS_META_ANNOTATION: json}}});
            let api: Api<Pod> = Api::namespaced(
                self.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let written = api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map_err(|source| ContainerMetaError::Patch {
                    key: key.to_owned(),
                    source,
                })?;
            info!(%key, meta = %json, "reported runtime container meta");
            if let Some(version) = written.metadata.resource_version.as_deref() {
                self.expectations().expect(&uid, version);
            }
        }
        Ok(if sync.retry {
            Next::After(ENV_RETRY)
        } else {
            Next::Done
        })
    }

    async fn restart_work(self: Arc<Self>) {
        while let Some(key) = self.restarts.get().await {
            match self.restart(&key).await {
                Ok(()) => self.restarts.forget(&key),
                Err(error) => {
                    let delay = self.restarts.add_rate_limited(&key);
                    warn!(container = %key, %error, ?delay, "container restart failed; retrying");
                }
            }
            self.restarts.done(&key);
        }
    }

    /// kruise's restarter `sync`.
    async fn restart(&self, key: &str) -> Result<(), restarter::RestartError> {
        let Ok(id) = ContainerId::parse(key) else {
            return Ok(());
        };
        let Ok(cri) = self.runtimes.for_container(&id) else {
            info!(runtime = %id.runtime, "no such runtime on this node; not restarting");
            return Ok(());
        };
        match restarter::restart(cri, &id).await? {
            Restart::Skipped => debug!(container = %key, "not running; not restarted"),
            Restart::Killed {
                pod,
                events,
                report,
            } => {
                info!(container = %key, pod = %format!("{}/{}", pod.namespace, pod.name), elapsed = ?report.elapsed, "stopped container for its env from metadata");
                for event in events {
                    let reference = ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        namespace: Some(pod.namespace.clone()),
                        name: Some(pod.name.clone()),
                        uid: Some(pod.uid.clone()),
                        field_path: Some(event.field_path()),
                        ..ObjectReference::default()
                    };
                    let event_type = match event.event_type {
                        crate::recreate::EventType::Normal => EventType::Normal,
                        crate::recreate::EventType::Warning => EventType::Warning,
                    };
                    self.recorder
                        .publish(&reference, event_type, event.reason, &event.message)
                        .await;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(uid: &str, version: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn a_cached_pod_older_than_our_write_is_waited_out_for_30_seconds() {
        let mut expectations = Expectations::default();
        let now = Instant::now();
        assert!(expectations.satisfied(&pod("u", "5"), now));
        expectations.expect("u", "10");
        assert!(!expectations.satisfied(&pod("u", "9"), now));
        assert!(!expectations.satisfied(&pod("u", "9"), now + Duration::from_secs(29)));
        assert!(expectations.satisfied(&pod("u", "9"), now + MAX_EXPECTATION_WAIT));
        expectations.expect("u", "12");
        assert!(expectations.satisfied(&pod("u", "12"), now));
        assert!(
            expectations.satisfied(&pod("u", "1"), now),
            "satisfied once, then forgotten"
        );
        expectations.expect("v", "3");
        expectations.forget("v");
        assert!(expectations.satisfied(&pod("v", "1"), now));
    }
}
