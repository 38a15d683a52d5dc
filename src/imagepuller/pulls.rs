//! CRI pulls with a node-wide concurrency cap and de-duplication.
//!
//! Two tags (or two NodeImage specs) that resolve to the same reference with the same
//! credentials share one CRI `PullImage`; each still gets its own status. The cap counts
//! CRI pulls, not tags, so a de-duplicated pull takes one slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use tokio::sync::{Semaphore, watch};

use crate::credentials::AuthConfig;
use crate::cri::{CriClient, CriError};
use crate::metrics::ImagePullMetrics;
use crate::proto::runtime::v1 as cri;

/// What one pull needs.
#[derive(Debug, Clone)]
pub struct PullSpec {
    /// The reference passed to CRI (`name:tag` or `name@sha256:…`).
    pub reference: String,
    /// Credentials, or anonymous.
    pub auth: Option<AuthConfig>,
    /// The sandbox config sent along (labels, annotations; §3.5).
    pub sandbox: cri::PodSandboxConfig,
    /// Deadline of the CRI call once it has started.
    pub timeout: Duration,
}

type PullResult = Result<String, CriError>;

/// A pull in flight, as one waiter sees it.
pub struct PullHandle {
    /// Flips to `true` when the CRI call starts (a slot was free).
    pub started: watch::Receiver<bool>,
    /// Byte progress 0–100 while in flight, when the runtime exposes it.
    pub progress: watch::Receiver<u8>,
    /// The runtime's image ID, or the error.
    pub result: Shared<BoxFuture<'static, PullResult>>,
}

struct Entry {
    started: watch::Receiver<bool>,
    progress: watch::Receiver<u8>,
    result: WeakShared<BoxFuture<'static, PullResult>>,
}

/// The node's pulls.
pub struct Pulls {
    cri: CriClient,
    slots: Arc<Semaphore>,
    inflight: Mutex<HashMap<(String, Option<AuthConfig>), Entry>>,
    metrics: ImagePullMetrics,
    progress: Option<super::progress::ProgressSource>,
}

impl Pulls {
    /// Pulls on `cri`, at most `max_concurrent` CRI pulls at once.
    pub fn new(
        cri: CriClient,
        max_concurrent: usize,
        metrics: ImagePullMetrics,
        progress: Option<super::progress::ProgressSource>,
    ) -> Self {
        Self {
            cri,
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            inflight: Mutex::new(HashMap::new()),
            metrics,
            progress,
        }
    }

    /// The CRI client pulls go through.
    pub fn cri(&self) -> &CriClient {
        &self.cri
    }

    /// Joins the pull of the same reference and credentials if one is in flight, or
    /// starts a new one. Dropping every handle of a pull cancels its CRI call.
    pub fn pull(&self, spec: PullSpec) -> PullHandle {
        // `nginx:1` and `docker.io/library/nginx:1` are one image: one pull.
        let normalised = crate::imageref::ImageReference::parse(&spec.reference)
            .map(|r| r.with_default_tag().to_string())
            .unwrap_or_else(|_| spec.reference.clone());
        let key = (normalised, spec.auth.clone());
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = inflight.get(&key)
            && let Some(result) = entry.result.upgrade()
            && result.peek().is_none()
        {
            return PullHandle {
                started: entry.started.clone(),
                progress: entry.progress.clone(),
                result,
            };
        }
        let (started_tx, started) = watch::channel(false);
        let (progress_tx, progress) = watch::channel(0u8);
        let cri = self.cri.clone();
        let slots = self.slots.clone();
        let metrics = self.metrics.clone();
        let progress_source = self.progress.clone();
        let future: BoxFuture<'static, PullResult> = async move {
            let _slot = slots
                .acquire_owned()
                .await
                .map_err(|_| CriError::NoRuntime("puller stopped".into()))?;
            let _ = started_tx.send(true);
            // The call with its progress polling is tens of KiB of future state: it is
            // allocated only now, so tags queued behind the cap cost next to nothing.
            Box::pin(call(cri, spec, metrics, progress_source, progress_tx)).await
        }
        .boxed();
        let result = future.shared();
        if let Some(weak) = result.downgrade() {
            inflight.retain(|_, entry| entry.result.upgrade().is_some_and(|r| r.peek().is_none()));
            inflight.insert(
                key,
                Entry {
                    started: started.clone(),
                    progress: progress.clone(),
                    result: weak,
                },
            );
        }
        PullHandle {
            started,
            progress,
            result,
        }
    }
}

/// One CRI pull, with progress when the runtime exposes it.
async fn call(
    cri: CriClient,
    spec: PullSpec,
    metrics: ImagePullMetrics,
    progress_source: Option<super::progress::ProgressSource>,
    progress: watch::Sender<u8>,
) -> PullResult {
    let _in_flight = metrics.in_flight();
    let began = Instant::now();
    let request = cri::PullImageRequest {
        image: Some(crate::cri::client::image_spec(&spec.reference)),
        auth: spec.auth.as_ref().map(|auth| cri::AuthConfig {
            username: auth.username().to_string(),
            password: auth.password().to_string(),
            ..Default::default()
        }),
        sandbox_config: Some(spec.sandbox.clone()),
    };
    let call = cri.pull_image(request, Some(spec.timeout));
    let result = match progress_source {
        Some(source) => source.track(&spec.reference, call, progress).await,
        None => call.await,
    };
    metrics.observe_pull(began.elapsed(), result.is_ok());
    if result.is_ok() {
        // Off the result's path: the waiters' Succeeded must not wait for it.
        tokio::spawn(async move {
            if let Ok(Some(image)) = cri.image_status(&spec.reference).await {
                // The image's size as the runtime stores it: bytes this node now holds.
                metrics.add_bytes(image.size);
            }
        });
    }
    result
}
