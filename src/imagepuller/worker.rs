//! One tag's pull: Waiting → Pulling → Succeeded | Failed, with kruise's pull policy
//! (§3.5 "Pull worker"): per-attempt timeout, `backoffLimit + 1` attempts with back-off
//! from 1 s doubling to 30 s, an active deadline that clamps the last attempt,
//! `IfNotPresent`, and credentials tried in order without anonymous fallback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::pulls::{PullSpec, Pulls};
use crate::api::ImagePullPhase;
use crate::api::shared::nodeimage::ImageTagStatus;
use crate::backoff::Backoff;
use crate::credentials::AuthConfig;
use crate::cri::{CriError, PullFailure};
use tracing::debug;

use crate::proto::runtime::v1 as cri;

/// kruise's defaults (§3.2, §3.5).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// `backoffLimit` when unset or negative.
pub const DEFAULT_BACKOFF_LIMIT: u32 = 3;

/// Resolves the credentials to try for a reference: empty means anonymous.
pub type CredentialResolver =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Vec<AuthConfig>, String>> + Send + Sync>;

/// Everything one tag's worker needs, captured when it starts.
#[derive(Clone)]
pub struct TagWork {
    /// Image key (familiar name) as in the NodeImage spec.
    pub image: String,
    /// Tag (or digest) as in the spec.
    pub tag: String,
    /// `version` of the tag spec, echoed in the status.
    pub version: i64,
    /// The CRI reference, or why the spec cannot be pulled at all.
    pub reference: Result<String, String>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts in total (`backoffLimit + 1`).
    pub attempts: u32,
    /// `activeDeadlineSeconds`, counted from the start of the first pull.
    pub active_deadline: Option<Duration>,
    /// `imagePullPolicy == "IfNotPresent"` (exactly that string).
    pub if_not_present: bool,
    /// The sandbox config sent with the pull.
    pub sandbox: cri::PodSandboxConfig,
    /// Credentials to try.
    pub credentials: CredentialResolver,
    /// First back-off delay (1 s in kruise; shorter in tests).
    pub backoff_initial: Duration,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// A status in one phase.
pub fn tag_status(work: &TagWork, phase: ImagePullPhase) -> ImageTagStatus {
    ImageTagStatus {
        tag: work.tag.clone(),
        phase: phase.as_str().to_string(),
        progress: None,
        start_time: None,
        completion_time: None,
        version: Some(work.version),
        image_id: None,
        message: None,
    }
}

/// The ID of the image in `images` that is `key` + `tag`, RepoTags (or, for a digest,
/// RepoDigests) compared by familiar name (`docker.io/library/nginx:1` ≡ `nginx:1`).
fn present(images: &[cri::Image], key: &str, tag: &str) -> Option<String> {
    images
        .iter()
        .find(|image| {
            crate::imageref::repo_tags_contain(&image.repo_tags, key, tag)
                || crate::imageref::repo_digests_contain(&image.repo_digests, key, tag)
        })
        .map(|image| image.id.clone())
}

/// The Succeeded status: `imageID` is `<key>@<CRI image id>` (§3.5).
fn succeeded(work: &TagWork, start_time: Option<Time>, id: &str) -> ImageTagStatus {
    let mut status = tag_status(work, ImagePullPhase::Succeeded);
    status.start_time = Some(start_time.unwrap_or_else(now));
    status.completion_time = Some(now());
    status.progress = Some(100);
    status.image_id = Some(format!("{}@{id}", work.image));
    status
}

/// The Pulling status with what is known so far.
fn pulling(work: &TagWork, start_time: &Option<Time>, progress: u8) -> ImageTagStatus {
    let mut status = tag_status(work, ImagePullPhase::Pulling);
    status.start_time = start_time.clone();
    status.progress = Some(progress.into());
    status
}

/// Runs the worker; `report` receives every intermediate status (Pulling, progress), and
/// the final status is returned.
pub async fn run(
    work: TagWork,
    pulls: Arc<Pulls>,
    report: impl Fn(ImageTagStatus) + Send + Sync,
) -> ImageTagStatus {
    let fail = |start: Option<Time>, message: String| {
        let mut status = tag_status(&work, ImagePullPhase::Failed);
        status.start_time = start;
        status.completion_time = Some(now());
        status.message = Some(message);
        status
    };
    let reference = match &work.reference {
        Ok(reference) => reference.clone(),
        Err(message) => return fail(None, message.clone()),
    };
    let mut start_time: Option<Time> = None;
    let mut started_at: Option<Instant> = None;
    let mut best_progress = 0u8;
    let mut backoff = Backoff::new(work.backoff_initial, Duration::from_secs(30));
    let mut last_error = String::from("no pull attempt was made");
    let attempts = work.attempts.max(1);
    for attempt in 1..=attempts {
        let remaining = match (work.active_deadline, started_at) {
            (Some(deadline), Some(at)) => match deadline.checked_sub(at.elapsed()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => {
                    return fail(
                        start_time,
                        "pulling exceeds the activeDeadlineSeconds".to_string(),
                    );
                }
            },
            _ => None,
        };
        let timeout = remaining.map_or(work.timeout, |left| left.min(work.timeout));
        if work.if_not_present {
            // Boxed: a CRI call's future is large and most workers never make this one.
            match Box::pin(pulls.cri().list_images(None)).await {
                Ok(images) => {
                    if let Some(id) = present(&images, &work.image, &work.tag) {
                        return succeeded(&work, start_time, &id);
                    }
                }
                // The pull itself will report a broken runtime more precisely.
                Err(error) => debug!(%error, "ListImages before the pull failed"),
            }
        }
        let auths = match (work.credentials)(reference.clone()).await {
            Ok(auths) => auths,
            // A bad or missing Secret cannot fix itself by retrying the pull.
            Err(message) => return fail(start_time, message),
        };
        let candidates: Vec<Option<AuthConfig>> = if auths.is_empty() {
            vec![None]
        } else {
            auths.into_iter().map(Some).collect()
        };
        let mut last_failure = None;
        let mut attempt_errors = Vec::new();
        for auth in candidates {
            let handle = pulls.pull(PullSpec {
                reference: reference.clone(),
                auth,
                sandbox: work.sandbox.clone(),
                timeout,
            });
            let mut started = handle.started.clone();
            let mut progress = handle.progress.clone();
            let mut result = handle.result.clone();
            // Joining a de-duplicated pull that is already running: it has started.
            if *started.borrow() && start_time.is_none() {
                start_time = Some(now());
                started_at = Some(Instant::now());
                report(pulling(&work, &start_time, best_progress));
            }
            let outcome = loop {
                // The active deadline clamps the running attempt too (§3.5 step 5).
                let deadline_at = match (work.active_deadline, started_at) {
                    (Some(deadline), Some(at)) => at + deadline,
                    _ => Instant::now() + Duration::from_secs(365 * 24 * 3600),
                };
                tokio::select! {
                    // A start seen in the same wake-up as the result still counts: the
                    // active deadline runs from it.
                    biased;
                    changed = started.changed(), if !*started.borrow() => {
                        if changed.is_ok() && *started.borrow() && start_time.is_none() {
                            start_time = Some(now());
                            started_at = Some(Instant::now());
                            report(pulling(&work, &start_time, best_progress));
                        }
                    }
                    outcome = &mut result => break outcome,
                    () = tokio::time::sleep_until(deadline_at.into()) => {
                        return fail(start_time, "pulling exceeds the activeDeadlineSeconds".to_string());
                    }
                    changed = progress.changed() => {
                        let value = *progress.borrow();
                        if changed.is_ok() && value > best_progress {
                            best_progress = value.min(99);
                            report(pulling(&work, &start_time, best_progress));
                        }
                    }
                }
            };
            match outcome {
                Ok(id) => return succeeded(&work, start_time, &id),
                Err(error) => {
                    last_failure = error.pull_failure();
                    attempt_errors.push(describe(&reference, &error, timeout, attempt, attempts));
                    // Rejected credentials: the next matching credential may work
                    // (§3.5 Auth step 2). Anything else ends this attempt.
                    if last_failure != Some(PullFailure::Unauthorized) {
                        break;
                    }
                }
            }
        }
        // Retrying cannot fix these without someone changing the registry or the
        // Secret; kruise retries anyway, which only delays the Failed status.
        let permanent = matches!(
            last_failure,
            Some(
                PullFailure::ImageNotFound
                    | PullFailure::InvalidReference
                    | PullFailure::Unauthorized
            )
        );
        last_error = attempt_errors.join("; ");
        if permanent || attempt == attempts {
            break;
        }
        let mut delay = backoff.next_delay();
        if let (Some(deadline), Some(at)) = (work.active_deadline, started_at) {
            delay = delay.min(deadline.saturating_sub(at.elapsed()));
        }
        tokio::time::sleep(delay).await;
    }
    fail(start_time, last_error)
}

/// The Failed message of one attempt, for `kubectl describe nodeimage`.
fn describe(
    reference: &str,
    error: &CriError,
    timeout: Duration,
    attempt: u32,
    attempts: u32,
) -> String {
    match error {
        CriError::DeadlineExceeded { .. } => {
            format!(
                "pulling image {reference} timed out after {timeout:?} (attempt {attempt} of {attempts})"
            )
        }
        other => format!("Failed to pull image reference \"{reference}\": {other}"),
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
