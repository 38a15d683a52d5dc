//! Watches this node's NodeImage, runs one worker per (image, tag, version), and writes
//! the status computed from what the workers know.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, mpsc};
use tracing::{Instrument, debug, info, warn};

use super::pulls::Pulls;
use super::status::{self, TagKey};
use super::view::NodeImageView;
use super::worker::{self, CredentialResolver, DEFAULT_BACKOFF_LIMIT, DEFAULT_TIMEOUT, TagWork};
use super::writer::{StatusWriter, Target, WriteTiming};
use crate::agent::Shutdown;
use crate::api::shared::nodeimage::ImageTagStatus;
use crate::api::v1beta1::ImageSpec;
use crate::api::{ImagePullPhase, PULLING_IMAGE_BY_ANNOTATION};
use crate::apiversions::KruiseVersion;
use crate::events::{EventType, Recorder};
use crate::metrics::ImagePullMetrics;
use crate::proto::runtime::v1 as cri;
use crate::readiness::ReadinessCheck;

/// kruise's cap on images per NodeImage (§3.1 webhook).
pub const MAX_IMAGES: usize = 256;
/// Longest `timeoutSeconds` accepted: a week. Larger values are typos.
const MAX_TIMEOUT_SECONDS: i64 = 7 * 24 * 3600;

/// How the puller runs.
#[derive(Clone)]
pub struct PullerConfig {
    /// This node.
    pub node_name: String,
    /// The NodeImage version to speak.
    pub version: KruiseVersion,
    /// Shortest gap between two status writes that only move progress.
    pub progress_interval: Duration,
    /// Changes within this long after a status write are written together at its end (a
    /// fast pull's Pulling and Succeeded become one write); the first change after a
    /// quiet period is written at once.
    pub batch_window: Duration,
    /// Status write token bucket: burst and refill per second (kruise: 5 and 0.5).
    pub write_burst: u32,
    /// Refill rate of the write bucket.
    pub writes_per_second: f64,
    /// Rewrite an unchanged status after this long (kruise: 12 h + up to 1 h).
    pub heartbeat: Duration,
    /// First back-off delay between attempts.
    pub backoff_initial: Duration,
}

impl PullerConfig {
    /// kruise-compatible defaults.
    pub fn new(node_name: &str, version: KruiseVersion) -> Self {
        Self {
            node_name: node_name.to_string(),
            version,
            progress_interval: Duration::from_secs(2),
            batch_window: Duration::from_millis(50),
            // kruise allows 0.5 writes/s with a burst of 5 and writes on a timer; ours are
            // driven by transitions and coalesced, so the bucket is only a safety net and
            // must not delay a Succeeded by seconds.
            write_burst: 10,
            writes_per_second: 2.0,
            heartbeat: Duration::from_secs(12 * 3600),
            backoff_initial: Duration::from_secs(1),
        }
    }

    fn timing(&self) -> WriteTiming {
        WriteTiming {
            batch_window: self.batch_window,
            progress_interval: self.progress_interval,
            write_burst: self.write_burst,
            writes_per_second: self.writes_per_second,
            heartbeat: self.heartbeat,
        }
    }
}

struct Running {
    version: i64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropping the worker drops its pull handle; the last handle cancels the CRI call.
        self.task.abort();
    }
}

struct Done {
    key: TagKey,
    version: i64,
    status: ImageTagStatus,
    owners: Vec<ObjectReference>,
    elapsed: Duration,
}

/// The NodeImage agent.
pub struct Puller {
    config: PullerConfig,
    api: Api<DynamicObject>,
    pulls: Arc<Pulls>,
    credentials: Arc<dyn Fn(&ImageSpec) -> CredentialResolver + Send + Sync>,
    recorder: Arc<Recorder>,
    metrics: ImagePullMetrics,
    known: Arc<Mutex<BTreeMap<TagKey, ImageTagStatus>>>,
    workers: HashMap<TagKey, Running>,
    dirty: Arc<Notify>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: Option<mpsc::UnboundedReceiver<Done>>,
    current: Option<NodeImageView>,
    writer: StatusWriter,
}

fn sandbox_config(image: &ImageSpec) -> cri::PodSandboxConfig {
    let mut config = cri::PodSandboxConfig::default();
    if let Some(sandbox) = &image.sandbox_config {
        config.labels = sandbox
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        config.annotations = sandbox
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
    }
    // Always sent: some runtimes panic on a pull without sandbox annotations (§3.5).
    config.annotations.insert(
        PULLING_IMAGE_BY_ANNOTATION.to_string(),
        "kruise-daemon".to_string(),
    );
    config
}

fn lock(
    known: &Mutex<BTreeMap<TagKey, ImageTagStatus>>,
) -> std::sync::MutexGuard<'_, BTreeMap<TagKey, ImageTagStatus>> {
    known.lock().unwrap_or_else(|e| e.into_inner())
}

impl Puller {
    /// A puller for this node.
    pub fn new(
        client: kube::Client,
        config: PullerConfig,
        pulls: Arc<Pulls>,
        credentials: Arc<dyn Fn(&ImageSpec) -> CredentialResolver + Send + Sync>,
        recorder: Arc<Recorder>,
        metrics: ImagePullMetrics,
    ) -> Self {
        let resource = config.version.resource("NodeImage", "nodeimages");
        let api = Api::all_with(client, &resource);
        let writer = StatusWriter::new(
            api.clone(),
            resource.api_version,
            &config.node_name,
            config.timing(),
            metrics.clone(),
        );
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            config,
            api,
            pulls,
            credentials,
            recorder,
            metrics,
            known: Arc::new(Mutex::new(BTreeMap::new())),
            workers: HashMap::new(),
            dirty: Arc::new(Notify::new()),
            done_tx,
            done_rx: Some(done_rx),
            current: None,
            writer,
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeMap<TagKey, ImageTagStatus>> {
        lock(&self.known)
    }

    /// Runs until shutdown: watch, reconcile, write status.
    pub async fn run(mut self, ready: ReadinessCheck, shutdown: Shutdown) {
        let Some(mut done_rx) = self.done_rx.take() else {
            return;
        };
        let selector = format!("metadata.name={}", self.config.node_name);
        let stream = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&selector),
        )
        .default_backoff();
        let mut stream = std::pin::pin!(stream);
        let dirty = self.dirty.clone();
        let shutdown_signal = shutdown.clone().wait();
        tokio::pin!(shutdown_signal);
        loop {
            let next_write = self.writer.next(Instant::now());
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(event)) => self.on_event(event, &ready),
                    Some(Err(error)) => warn!(%error, "NodeImage watch error; retrying"),
                    None => return,
                },
                Some(done) = done_rx.recv() => self.on_done(done),
                () = dirty.notified() => self.writer.changed(Instant::now()),
                () = tokio::time::sleep_until(next_write.into()) => self.write_status().await,
                () = &mut shutdown_signal => {
                    self.workers.clear();
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, event: watcher::Event<DynamicObject>, ready: &ReadinessCheck) {
        match event {
            watcher::Event::Init => {}
            watcher::Event::InitDone => ready.set(true),
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                if object.metadata.deletion_timestamp.is_some() {
                    return self.forget_all("NodeImage is being deleted");
                }
                match NodeImageView::from_object(object) {
                    Ok(view) => {
                        self.reconcile(&view);
                        self.current = Some(view);
                    }
                    Err(error) => warn!(%error, "ignoring an undecodable NodeImage"),
                }
            }
            watcher::Event::Delete(_) => self.forget_all("NodeImage deleted"),
        }
    }

    fn forget_all(&mut self, why: &str) {
        if !self.workers.is_empty() {
            info!(
                workers = self.workers.len(),
                why, "stopping every pull of this node"
            );
        }
        self.workers.clear();
        self.known().clear();
        self.current = None;
        self.writer.forget();
    }

    /// Starts, keeps or stops workers so that exactly the active tags of `view` run.
    fn reconcile(&mut self, view: &NodeImageView) {
        let mut wanted: BTreeMap<TagKey, ()> = BTreeMap::new();
        let mut changed = false;
        for (index, (image, spec)) in view.images.iter().enumerate() {
            let resolver = (self.credentials)(spec);
            let sandbox = sandbox_config(spec);
            for tag_spec in &spec.tags {
                let key: TagKey = (image.clone(), tag_spec.tag.clone());
                if wanted.insert(key.clone(), ()).is_some() {
                    // A duplicate tag: the first entry owns the status (kruise's webhook
                    // rejects duplicates, so only a bypassed webhook gets here).
                    continue;
                }
                let version = tag_spec.version.unwrap_or(0);
                if let Some(done) =
                    status::final_status(view.status.as_ref(), image, &tag_spec.tag, version)
                {
                    // Final: ours from before a restart, or the manager's Failed mark.
                    if self.workers.remove(&key).is_some() {
                        info!(image, tag = %tag_spec.tag, "tag completed elsewhere; stopping its pull");
                    }
                    let mut known = lock(&self.known);
                    if known.get(&key) != Some(done) {
                        known.insert(key.clone(), done.clone());
                        changed = true;
                    }
                    continue;
                }
                let finished_here = lock(&self.known)
                    .get(&key)
                    .is_some_and(|s| s.version == Some(version) && s.completion_time.is_some());
                let running = self.workers.get(&key).is_some_and(|w| w.version == version);
                if finished_here || running {
                    continue;
                }
                self.workers.remove(&key);
                let work = self.work(
                    view, index, image, spec, tag_spec, version, &resolver, &sandbox,
                );
                self.start(
                    key,
                    version,
                    work,
                    tag_spec.owner_references.clone().unwrap_or_default(),
                );
                changed = true;
            }
        }
        let before = self.workers.len();
        self.workers.retain(|key, _| wanted.contains_key(key));
        let mut known = lock(&self.known);
        let known_before = known.len();
        known.retain(|key, _| wanted.contains_key(key));
        if before != self.workers.len() || known_before != known.len() {
            changed = true;
        }
        drop(known);
        if changed {
            self.dirty.notify_one();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn work(
        &self,
        view: &NodeImageView,
        index: usize,
        image: &str,
        spec: &ImageSpec,
        tag_spec: &crate::api::shared::nodeimage::ImageTagSpec,
        version: i64,
        resolver: &CredentialResolver,
        sandbox: &cri::PodSandboxConfig,
    ) -> TagWork {
        let _ = spec;
        let policy = tag_spec.pull_policy.clone().unwrap_or_default();
        let mut reference =
            crate::imageref::pull_reference(image, &tag_spec.tag).map_err(|e| e.to_string());
        if index >= MAX_IMAGES {
            reference = Err(format!(
                "NodeImage {} has {} images; at most {MAX_IMAGES} are allowed",
                view.name,
                view.images.len()
            ));
        }
        let timeout = match policy.timeout_seconds.map(i64::from) {
            None => Ok(DEFAULT_TIMEOUT),
            Some(seconds) if seconds <= 0 => Err(format!(
                "invalid pullPolicy.timeoutSeconds {seconds}: must be greater than 0"
            )),
            Some(seconds) if seconds > MAX_TIMEOUT_SECONDS => Err(format!(
                "invalid pullPolicy.timeoutSeconds {seconds}: must be at most {MAX_TIMEOUT_SECONDS}"
            )),
            Some(seconds) => Ok(Duration::from_secs(seconds as u64)),
        };
        let (timeout, reference) = match timeout {
            Ok(timeout) => (timeout, reference),
            Err(message) => (DEFAULT_TIMEOUT, Err(message)),
        };
        let backoff_limit = policy
            .backoff_limit
            .filter(|limit| *limit >= 0)
            .map_or(DEFAULT_BACKOFF_LIMIT, |limit| limit as u32);
        TagWork {
            image: image.to_string(),
            tag: tag_spec.tag.clone(),
            version,
            reference,
            timeout,
            attempts: backoff_limit.saturating_add(1),
            active_deadline: policy
                .active_deadline_seconds
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64)),
            if_not_present: tag_spec.image_pull_policy.as_deref() == Some("IfNotPresent"),
            sandbox: sandbox.clone(),
            credentials: resolver.clone(),
            backoff_initial: self.config.backoff_initial,
        }
    }

    fn start(&mut self, key: TagKey, version: i64, work: TagWork, owners: Vec<ObjectReference>) {
        self.known().insert(
            key.clone(),
            worker::tag_status(&work, ImagePullPhase::Waiting),
        );
        let known = self.known.clone();
        let dirty = self.dirty.clone();
        let pulls = self.pulls.clone();
        let done_tx = self.done_tx.clone();
        let report_key = key.clone();
        let done_key = key.clone();
        debug!(image = %key.0, tag = %key.1, version, "starting pull worker");
        let span = tag_span(&self.config.node_name, &key);
        let task = tokio::spawn(
            async move {
                let began = Instant::now();
                let report = move |status: ImageTagStatus| {
                    let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
                    // A stale worker (version bumped) must not overwrite the new one's status.
                    if known
                        .get(&report_key)
                        .is_some_and(|s| s.version == status.version)
                    {
                        known.insert(report_key.clone(), status);
                        dirty.notify_one();
                    }
                };
                let status = worker::run(work, pulls, report).await;
                let _ = done_tx.send(Done {
                    key: done_key,
                    version,
                    status,
                    owners,
                    elapsed: began.elapsed(),
                });
            }
            .instrument(span),
        );
        self.workers.insert(key, Running { version, task });
    }

    fn on_done(&mut self, done: Done) {
        if self
            .workers
            .get(&done.key)
            .is_none_or(|w| w.version != done.version)
        {
            return; // A stopped worker's result is discarded (§3.5 step 7).
        }
        self.workers.remove(&done.key);
        let _span = tag_span(&self.config.node_name, &done.key).entered();
        self.known().insert(done.key.clone(), done.status.clone());
        self.dirty.notify_one();
        let (image, tag) = &done.key;
        let node_image = ObjectReference {
            api_version: Some(format!(
                "{}/{}",
                crate::apiversions::GROUP,
                self.config.version.as_str()
            )),
            kind: Some("NodeImage".into()),
            name: Some(self.config.node_name.clone()),
            uid: self.current.as_ref().map(|c| c.uid.clone()),
            ..Default::default()
        };
        // Events are posted off the loop: the status write must not wait for them.
        let recorder = self.recorder.clone();
        if done.status.phase == ImagePullPhase::Succeeded.as_str() {
            self.metrics.tag_finished("succeeded");
            info!(image, tag, elapsed = ?done.elapsed, "Successfully pull image");
            // kruise's message, typo included (§3.5).
            let message = format!("Image {image}:{tag}, ecalpsedTime {:?}", done.elapsed);
            tokio::spawn(
                async move {
                    recorder
                        .publish(&node_image, EventType::Normal, "PullImageSucceed", &message)
                        .await;
                }
                .in_current_span(),
            );
        } else {
            self.metrics.tag_finished("failed");
            let error = done.status.message.clone().unwrap_or_default();
            warn!(image, tag, %error, "Worker failed to pull image");
            let message = format!("Image {image}:{tag} {error}");
            tokio::spawn(
                async move {
                    for owner in done.owners.iter().chain([&node_image]) {
                        recorder
                            .publish(owner, EventType::Warning, "PullImageFailed", &message)
                            .await;
                    }
                }
                .in_current_span(),
            );
        }
    }

    /// Computes the status and hands it to the writer; a written object becomes the
    /// current view (it is the newest state there is).
    async fn write_status(&mut self) {
        let Some(view) = self.current.as_ref() else {
            return;
        };
        let status = status::compute(&view.images, &self.known(), view.status.as_ref());
        let target = Target {
            resource_version: &view.resource_version,
            status: view.status.as_ref(),
        };
        let Some(written) = self.writer.write(target, status).await else {
            return;
        };
        match NodeImageView::from_object(written) {
            Ok(view) => {
                // After a conflict the object may hold a spec the watch has not shown yet.
                self.reconcile(&view);
                self.current = Some(view);
            }
            Err(error) => warn!(%error, "ignoring an undecodable written NodeImage"),
        }
    }
}

/// The object and the tag a pull serves, on every line logged about it.
fn tag_span(node_name: &str, (image, tag): &TagKey) -> tracing::Span {
    tracing::info_span!(
        "pull",
        kind = "NodeImage",
        // klog's KObj: `name`, or `namespace/name` for namespaced objects (a field called
        // `name` would clash with the span's own name in JSON).
        object = %node_name,
        image = %image,
        tag = %tag
    )
}
