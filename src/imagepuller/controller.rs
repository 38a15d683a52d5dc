//! Watches this node's NodeImage, runs one worker per (image, tag, version), and writes
//! the status computed from what the workers know.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use super::pulls::Pulls;
use super::status::{self, TagKey};
use super::view::NodeImageView;
use super::worker::{self, CredentialResolver, DEFAULT_BACKOFF_LIMIT, DEFAULT_TIMEOUT, TagWork};
use crate::agent::Shutdown;
use crate::api::shared::nodeimage::{ImageTagStatus, NodeImageStatus};
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
    /// Shortest gap between any two status writes: changes inside it are written
    /// together (a fast pull's Pulling and Succeeded become one write).
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

/// A token bucket for status writes.
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.rate.max(1e-6),
            ))
        }
    }
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
    last_written: Option<(NodeImageStatus, Instant)>,
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

fn strip_progress(status: &NodeImageStatus) -> NodeImageStatus {
    let mut status = status.clone();
    if let Some(images) = status.image_statuses.as_mut() {
        for image in images.values_mut() {
            for tag in &mut image.tags {
                tag.progress = None;
            }
        }
    }
    status
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
        let api = Api::all_with(client, &config.version.resource("NodeImage", "nodeimages"));
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
            last_written: None,
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
        let mut bucket = Bucket {
            tokens: self.config.write_burst as f64,
            burst: self.config.write_burst as f64,
            rate: self.config.writes_per_second,
            at: Instant::now(),
        };
        let mut write_at: Option<Instant> = None;
        let dirty = self.dirty.clone();
        let shutdown_signal = shutdown.clone().wait();
        tokio::pin!(shutdown_signal);
        loop {
            let sleep_until = write_at.unwrap_or_else(|| Instant::now() + self.config.heartbeat);
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(event)) => self.on_event(event, &ready),
                    Some(Err(error)) => warn!(%error, "NodeImage watch error; retrying"),
                    None => return,
                },
                Some(done) = done_rx.recv() => self.on_done(done).await,
                () = dirty.notified() => {
                    let earliest = self
                        .last_written
                        .as_ref()
                        .map_or_else(Instant::now, |(_, at)| (*at + self.config.batch_window).max(Instant::now()));
                    write_at = Some(write_at.map_or(earliest, |at| at.min(earliest).max(Instant::now())));
                }
                () = tokio::time::sleep_until(sleep_until.into()) => {
                    write_at = None;
                    match self.write_status(&mut bucket).await {
                        Ok(Some(retry)) => write_at = Some(Instant::now() + retry),
                        Ok(None) => {}
                        Err(retry) => write_at = Some(Instant::now() + retry),
                    }
                }
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
        self.last_written = None;
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
        let task = tokio::spawn(async move {
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
        });
        self.workers.insert(key, Running { version, task });
    }

    async fn on_done(&mut self, done: Done) {
        if self
            .workers
            .get(&done.key)
            .is_none_or(|w| w.version != done.version)
        {
            return; // A stopped worker's result is discarded (§3.5 step 7).
        }
        self.workers.remove(&done.key);
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
        if done.status.phase == ImagePullPhase::Succeeded.as_str() {
            self.metrics.tag_finished("succeeded");
            info!(image, tag, elapsed = ?done.elapsed, "Successfully pull image");
            // kruise's message, typo included (§3.5).
            let message = format!("Image {image}:{tag}, ecalpsedTime {:?}", done.elapsed);
            self.recorder
                .publish(&node_image, EventType::Normal, "PullImageSucceed", &message)
                .await;
        } else {
            self.metrics.tag_finished("failed");
            let error = done.status.message.clone().unwrap_or_default();
            warn!(image, tag, %error, "Worker failed to pull image");
            let message = format!("Image {image}:{tag} {error}");
            for owner in &done.owners {
                self.recorder
                    .publish(owner, EventType::Warning, "PullImageFailed", &message)
                    .await;
            }
            self.recorder
                .publish(&node_image, EventType::Warning, "PullImageFailed", &message)
                .await;
        }
    }

    /// Writes the status if it changed. Returns when to try again, if needed.
    async fn write_status(&mut self, bucket: &mut Bucket) -> Result<Option<Duration>, Duration> {
        let Some(view) = self.current.clone() else {
            return Ok(None);
        };
        let status = status::compute(&view.images, &self.known(), view.status.as_ref());
        if let Some((last, at)) = &self.last_written {
            let same = *last == status;
            if same && at.elapsed() < self.config.heartbeat {
                return Ok(None);
            }
            // Progress-only changes are coalesced to one write per progress_interval.
            if !same
                && strip_progress(last) == strip_progress(&status)
                && at.elapsed() < self.config.progress_interval
            {
                return Ok(Some(self.config.progress_interval - at.elapsed()));
            }
        } else if view.status.as_ref() == Some(&status) {
            self.last_written = Some((status, Instant::now()));
            return Ok(None);
        }
        if let Err(wait) = bucket.take() {
            self.metrics.status_write("rate_limited");
            return Ok(Some(wait));
        }
        let mut object = view.object.clone();
        for attempt in 0..3 {
            object.data["status"] = serde_json::to_value(&status).unwrap_or_default();
            match self
                .api
                .replace_status(&self.config.node_name, &PostParams::default(), &object)
                .await
            {
                Ok(written) => {
                    self.metrics.status_write("ok");
                    self.last_written = Some((status, Instant::now()));
                    if let Ok(view) = NodeImageView::from_object(written) {
                        self.current = Some(view);
                    }
                    return Ok(None);
                }
                Err(kube::Error::Api(response)) if response.code == 409 && attempt < 2 => {
                    self.metrics.status_write("conflict");
                    match self.api.get(&self.config.node_name).await {
                        Ok(fresh) => object = fresh,
                        Err(error) => {
                            warn!(%error, "re-reading NodeImage after a conflict failed");
                            return Err(Duration::from_secs(3));
                        }
                    }
                }
                Err(kube::Error::Api(response)) if response.code == 404 => {
                    self.metrics.status_write("not_found");
                    return Ok(None);
                }
                Err(error) => {
                    self.metrics.status_write("error");
                    warn!(%error, "writing NodeImage status failed; retrying");
                    return Err(Duration::from_secs(3));
                }
            }
        }
        Err(Duration::from_secs(3))
    }
}
