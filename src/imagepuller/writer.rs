//! The NodeImage status writer (§3.5 "Status writer"): decides when a computed status is
//! written and writes it.
//!
//! When: the first change after a quiet period is written at once, so a tag's Succeeded
//! is never held back; changes that follow within `batch_window` of a write are written
//! together at the end of it; a change that only moves `progress` waits until
//! `progress_interval` after the last write; a token bucket caps the rate as a safety
//! net; an unchanged status is rewritten after `heartbeat`.
//!
//! How: a PUT of `/status` carrying only the status and the resourceVersion of the
//! object as last seen (the server keeps the rest, as kube-apiserver does for custom
//! resources), so a concurrent change is detected; only a 409 makes the writer read the
//! object again before retrying.

use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use kube::core::{DynamicObject, ObjectMeta, TypeMeta};
use tracing::warn;

use crate::api::shared::nodeimage::NodeImageStatus;
use crate::metrics::ImagePullMetrics;

/// How long to wait before retrying after a failed write.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(3);
/// PUT attempts per write when each one meets a conflict.
const CONFLICT_ATTEMPTS: u32 = 3;

/// When the writer writes.
#[derive(Debug, Clone)]
pub struct WriteTiming {
    /// Changes within this long after a write are written together at its end.
    pub batch_window: Duration,
    /// Shortest gap between a write and one that only moves progress.
    pub progress_interval: Duration,
    /// Token bucket burst.
    pub write_burst: u32,
    /// Token bucket refill per second.
    pub writes_per_second: f64,
    /// Rewrite an unchanged status after this long.
    pub heartbeat: Duration,
}

/// A token bucket for status writes.
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn new(burst: u32, rate: f64) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            rate,
            at: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.tokens = (self.tokens
            + now.saturating_duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.burst);
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

/// What the object looks like to the writer: enough to write its status.
pub struct Target<'a> {
    /// The resourceVersion last seen (watch or own write).
    pub resource_version: &'a str,
    /// The status last seen.
    pub status: Option<&'a NodeImageStatus>,
}

/// Writes one NodeImage's status.
pub struct StatusWriter {
    api: Api<DynamicObject>,
    types: TypeMeta,
    name: String,
    timing: WriteTiming,
    bucket: Bucket,
    metrics: ImagePullMetrics,
    /// The status the server holds as far as we know, and when we wrote (or first saw) it.
    last: Option<(NodeImageStatus, Instant)>,
    /// When the next write is due, if one is.
    due: Option<Instant>,
}

fn strip_progress(status: &NodeImageStatus) -> NodeImageStatus {
    let mut status = status.clone();
    for image in status
        .image_statuses
        .iter_mut()
        .flat_map(|m| m.values_mut())
    {
        for tag in &mut image.tags {
            tag.progress = None;
        }
    }
    status
}

impl StatusWriter {
    /// A writer of the NodeImage `name` through `api` (`api_version` is what `api` speaks).
    pub fn new(
        api: Api<DynamicObject>,
        api_version: String,
        name: &str,
        timing: WriteTiming,
        metrics: ImagePullMetrics,
    ) -> Self {
        Self {
            api,
            types: TypeMeta {
                api_version,
                kind: "NodeImage".into(),
            },
            name: name.to_string(),
            bucket: Bucket::new(timing.write_burst, timing.writes_per_second),
            timing,
            metrics,
            last: None,
            due: None,
        }
    }

    /// Something the status is computed from changed at `now`: a write is due at once
    /// after a quiet period, or at the end of the batch window that a recent write opened.
    pub fn changed(&mut self, now: Instant) {
        let earliest = self
            .last
            .as_ref()
            .map_or(now, |(_, at)| (*at + self.timing.batch_window).max(now));
        self.due = Some(self.due.map_or(earliest, |due| due.min(earliest)));
    }

    /// When [`StatusWriter::write`] should be called next: a due write, else the heartbeat.
    pub fn next(&self, now: Instant) -> Instant {
        self.due.unwrap_or_else(|| match &self.last {
            Some((_, at)) => (*at + self.timing.heartbeat).max(now),
            None => now + self.timing.heartbeat,
        })
    }

    /// The object is gone: nothing is known to be on the server any more.
    pub fn forget(&mut self) {
        self.last = None;
        self.due = None;
    }

    /// Writes `status` unless the server already has it (or only its progress moved too
    /// recently). Returns the object as written, when a write happened.
    pub async fn write(
        &mut self,
        target: Target<'_>,
        mut status: NodeImageStatus,
    ) -> Option<DynamicObject> {
        let now = Instant::now();
        self.due = None;
        match &self.last {
            Some((last, at)) => {
                let since = now.saturating_duration_since(*at);
                if *last == status && since < self.timing.heartbeat {
                    return None;
                }
                if since < self.timing.progress_interval
                    && strip_progress(last) == strip_progress(&status)
                {
                    self.due = Some(*at + self.timing.progress_interval);
                    return None;
                }
            }
            None if target.status == Some(&status) => {
                // Already there (an agent restart): nothing to write until it changes.
                self.last = Some((status, now));
                return None;
            }
            None => {}
        }
        if let Err(wait) = self.bucket.take(now) {
            self.metrics.status_write("rate_limited");
            self.due = Some(now + wait);
            return None;
        }
        let mut resource_version = target.resource_version.to_string();
        for attempt in 1..=CONFLICT_ATTEMPTS {
            let body = DynamicObject {
                types: Some(self.types.clone()),
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    resource_version: Some(resource_version.clone()),
                    ..ObjectMeta::default()
                },
                data: serde_json::json!({ "status": &status }),
            };
            match self
                .api
                .replace_status(&self.name, &PostParams::default(), &body)
                .await
            {
                Ok(written) => {
                    self.metrics.status_write("ok");
                    self.last = Some((status, Instant::now()));
                    return Some(written);
                }
                Err(kube::Error::Api(response)) if response.code == 409 => {
                    self.metrics.status_write("conflict");
                    if attempt == CONFLICT_ATTEMPTS {
                        break;
                    }
                    match self.api.get(&self.name).await {
                        Ok(fresh) => {
                            resource_version = fresh.metadata.resource_version.unwrap_or_default();
                            // Someone else may have set it since (the manager does).
                            status.first_sync_status = fresh
                                .data
                                .get("status")
                                .and_then(|s| s.get("firstSyncStatus"))
                                .and_then(|s| serde_json::from_value(s.clone()).ok());
                        }
                        Err(error) => {
                            warn!(%error, "re-reading NodeImage after a conflict failed");
                            break;
                        }
                    }
                }
                Err(kube::Error::Api(response)) if response.code == 404 => {
                    // Deleted: the watch reports it and everything stops.
                    self.metrics.status_write("not_found");
                    return None;
                }
                Err(error) => {
                    self.metrics.status_write("error");
                    warn!(%error, "writing NodeImage status failed; retrying");
                    break;
                }
            }
        }
        self.due = Some(Instant::now() + RETRY_AFTER_ERROR);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> WriteTiming {
        WriteTiming {
            batch_window: Duration::from_millis(50),
            progress_interval: Duration::from_secs(2),
            write_burst: 2,
            writes_per_second: 1.0,
            heartbeat: Duration::from_secs(3600),
        }
    }

    fn writer() -> StatusWriter {
        // Never contacted by these tests: scheduling is pure.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let api = Api::all_with(
            client,
            &kube::core::ApiResource {
                group: "apps.kruise.io".into(),
                version: "v1beta1".into(),
                api_version: "apps.kruise.io/v1beta1".into(),
                kind: "NodeImage".into(),
                plural: "nodeimages".into(),
            },
        );
        StatusWriter::new(
            api,
            "apps.kruise.io/v1beta1".into(),
            "node",
            timing(),
            crate::metrics::Metrics::new().image_pull.clone(),
        )
    }

    #[tokio::test]
    async fn the_first_change_after_a_quiet_period_is_due_at_once() {
        let mut writer = writer();
        let now = Instant::now();
        writer.changed(now);
        assert_eq!(writer.next(now), now, "nothing written yet: at once");
        writer.last = Some((NodeImageStatus::default(), now - Duration::from_secs(1)));
        writer.due = None;
        writer.changed(now);
        assert_eq!(writer.next(now), now, "last write long ago: at once");
    }

    #[tokio::test]
    async fn changes_right_after_a_write_wait_for_the_end_of_the_batch_window() {
        let mut writer = writer();
        let written = Instant::now();
        writer.last = Some((NodeImageStatus::default(), written));
        let now = written + Duration::from_millis(10);
        writer.changed(now);
        assert_eq!(writer.next(now), written + Duration::from_millis(50));
        writer.changed(now + Duration::from_millis(20));
        assert_eq!(
            writer.next(now),
            written + Duration::from_millis(50),
            "a second change joins the pending write"
        );
    }

    #[tokio::test]
    async fn without_changes_the_next_write_is_the_heartbeat() {
        let mut writer = writer();
        let written = Instant::now();
        writer.last = Some((NodeImageStatus::default(), written));
        assert_eq!(writer.next(written), written + Duration::from_secs(3600));
        writer.forget();
        let now = Instant::now();
        assert_eq!(writer.next(now), now + Duration::from_secs(3600));
    }

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_its_burst() {
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: 2.0,
            burst: 2.0,
            rate: 1.0,
            at: start,
        };
        assert!(bucket.take(start).is_ok());
        assert!(bucket.take(start).is_ok());
        let wait = bucket.take(start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(bucket.take(start + Duration::from_secs(1)).is_ok());
        assert!(
            bucket.take(start + Duration::from_secs(100)).is_ok()
                && bucket.take(start + Duration::from_secs(100)).is_ok()
                && bucket.take(start + Duration::from_secs(100)).is_err(),
            "never more than the burst"
        );
    }

    #[test]
    fn progress_is_what_strip_progress_ignores() {
        let status = |progress: i32| -> NodeImageStatus {
            serde_json::from_value(serde_json::json!({
                "desired": 1, "pulling": 1,
                "imageStatuses": {"nginx": {"tags": [
                    {"tag": "1", "phase": "Pulling", "version": 1, "progress": progress}
                ]}}
            }))
            .unwrap()
        };
        assert_ne!(status(10), status(20));
        assert_eq!(strip_progress(&status(10)), strip_progress(&status(20)));
    }
}
