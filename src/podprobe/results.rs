//! The probe result cache (kruise's `resultManager`, §5.3), keyed by container ID **and**
//! probe name so that two probes of one container keep their own results.
//!
//! A result is recorded when it is new, when its state or message changed, or when the last
//! recorded one is [`HEARTBEAT`] old, so that `lastProbeTime` is refreshed at least that often.
//! Every recording wakes the status writer ([`ResultCache::changed`]); recordings that changed
//! the state or message are also queued as events ([`ResultCache::take_events`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;

use super::ProbeKey;
use crate::api::ProbeState;

/// How old the last recorded result may get before an unchanged one is recorded again
/// (kruise's `maxSyncProbeTime`, 600 s).
pub const HEARTBEAT: Duration = Duration::from_secs(600);

/// One recorded result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The probe.
    pub key: ProbeKey,
    /// The runtime's ID of the container probed.
    pub container_id: String,
    /// Succeeded, Failed or Unknown.
    pub state: ProbeState,
    /// The probe's output or error, at most [`super::MAX_MESSAGE_CHARS`] characters.
    pub message: String,
    /// When it was recorded, in whole seconds (what `metav1.Time` keeps).
    pub last_probe_time: Timestamp,
}

#[derive(Default)]
struct Inner {
    results: HashMap<(String, String), ProbeResult>,
    events: Vec<ProbeResult>,
}

/// The results of every probe of the node.
pub struct ResultCache {
    inner: Mutex<Inner>,
    changed: Notify,
    heartbeat: SignedDuration,
}

impl Default for ResultCache {
    fn default() -> Self {
        Self::with_heartbeat(HEARTBEAT)
    }
}

/// `time` without its fraction of a second: `metav1.Time` serializes whole seconds, so a finer
/// time would never compare equal with what the API server returns.
pub fn whole_seconds(time: Timestamp) -> Timestamp {
    Timestamp::from_second(time.as_second()).unwrap_or(time)
}

impl ResultCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache that records unchanged results again after `heartbeat` rather than
    /// [`HEARTBEAT`] (tests use a short one).
    pub fn with_heartbeat(heartbeat: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            changed: Notify::new(),
            heartbeat: SignedDuration::try_from(heartbeat).unwrap_or(SignedDuration::MAX),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `state` and `message` of `key` on container `container_id` at `now` if it is new,
    /// changed, or the last recording is a heartbeat ([`HEARTBEAT`]) old. Returns whether it was recorded.
    pub fn set(
        &self,
        container_id: &str,
        key: &ProbeKey,
        state: ProbeState,
        message: &str,
        now: Timestamp,
    ) -> bool {
        let now = whole_seconds(now);
        let mut inner = self.lock();
        let slot = (container_id.to_owned(), key.probe_name.clone());
        let (record, changed) = match inner.results.get(&slot) {
            None => (true, true),
            Some(previous) => {
                let changed = previous.state != state || previous.message != message;
                let stale = now.duration_since(previous.last_probe_time) >= self.heartbeat;
                (changed || stale, changed)
            }
        };
        if !record {
            return false;
        }
        let result = ProbeResult {
            key: key.clone(),
            container_id: container_id.to_owned(),
            state,
            message: message.to_owned(),
            last_probe_time: now,
        };
        if changed {
            inner.events.push(result.clone());
        }
        inner.results.insert(slot, result);
        drop(inner);
        self.changed.notify_one();
        true
    }

    /// Forgets the result of `key` on container `container_id` (its container was replaced or
    /// its worker stopped). A result recorded by another worker for the same probe name (one
    /// that replaced this worker after the pod IP changed) is left alone.
    pub fn remove(&self, container_id: &str, key: &ProbeKey) {
        let mut inner = self.lock();
        let slot = (container_id.to_owned(), key.probe_name.clone());
        if inner
            .results
            .get(&slot)
            .is_some_and(|result| &result.key == key)
        {
            inner.results.remove(&slot);
            drop(inner);
            self.changed.notify_one();
        }
    }

    /// Every recorded result, in no particular order.
    pub fn results(&self) -> Vec<ProbeResult> {
        self.lock().results.values().cloned().collect()
    }

    /// The recordings that changed a state or message since the last call, oldest first.
    pub fn take_events(&self) -> Vec<ProbeResult> {
        std::mem::take(&mut self.lock().events)
    }

    /// Completes after the next recording (or at once if one happened since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Wakes the status writer without a new result (the spec changed).
    pub fn poke(&self) {
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(probe: &str) -> ProbeKey {
        ProbeKey {
            pod_namespace: "ns".into(),
            pod_name: "pod".into(),
            pod_uid: "uid".into(),
            pod_ip: "10.0.0.1".into(),
            container_name: "app".into(),
            probe_name: probe.into(),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn two_probes_of_one_container_keep_their_own_results() {
        let cache = ResultCache::new();
        assert!(cache.set("c1", &key("ppm#a"), ProbeState::Succeeded, "ok", at(0)));
        assert!(cache.set("c1", &key("ppm#b"), ProbeState::Failed, "no", at(0)));
        let mut results = cache.results();
        results.sort_by(|a, b| a.key.probe_name.cmp(&b.key.probe_name));
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].state, ProbeState::Succeeded);
        assert_eq!(results[1].state, ProbeState::Failed);
    }

    #[test]
    fn unchanged_results_are_recorded_again_only_after_the_heartbeat() {
        let cache = ResultCache::new();
        let probe = key("ppm#a");
        assert!(cache.set("c1", &probe, ProbeState::Succeeded, "ok", at(0)));
        assert!(!cache.set("c1", &probe, ProbeState::Succeeded, "ok", at(599)));
        assert_eq!(cache.results()[0].last_probe_time, at(0));
        assert!(cache.set("c1", &probe, ProbeState::Succeeded, "ok", at(600)));
        assert_eq!(cache.results()[0].last_probe_time, at(600));
        // A changed message is recorded at once.
        assert!(cache.set("c1", &probe, ProbeState::Succeeded, "ok!", at(601)));
    }

    #[test]
    fn only_state_or_message_changes_are_events() {
        let cache = ResultCache::new();
        let probe = key("ppm#a");
        cache.set("c1", &probe, ProbeState::Unknown, "", at(0));
        cache.set("c1", &probe, ProbeState::Succeeded, "ok", at(1));
        cache.set("c1", &probe, ProbeState::Succeeded, "ok", at(700));
        let events = cache.take_events();
        assert_eq!(
            events.iter().map(|e| e.state).collect::<Vec<_>>(),
            vec![ProbeState::Unknown, ProbeState::Succeeded]
        );
        assert!(cache.take_events().is_empty());
    }

    #[test]
    fn times_are_kept_in_whole_seconds() {
        let cache = ResultCache::new();
        let fractional = at(5) + SignedDuration::from_millis(750);
        cache.set("c1", &key("ppm#a"), ProbeState::Failed, "x", fractional);
        assert_eq!(cache.results()[0].last_probe_time, at(5));
    }

    #[test]
    fn removing_a_result_leaves_the_others() {
        let cache = ResultCache::new();
        cache.set("c1", &key("ppm#a"), ProbeState::Failed, "x", at(0));
        cache.set("c1", &key("ppm#b"), ProbeState::Failed, "x", at(0));
        let mut other_worker = key("ppm#b");
        other_worker.pod_ip = "10.0.0.2".into();
        cache.remove("c1", &other_worker);
        assert_eq!(cache.results().len(), 2, "another worker's result stays");
        cache.remove("c1", &key("ppm#a"));
        let results = cache.results();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].key.probe_name, "ppm#b");
    }

    #[tokio::test]
    async fn a_recording_wakes_the_waiter() {
        let cache = std::sync::Arc::new(ResultCache::new());
        cache.set("c1", &key("ppm#a"), ProbeState::Failed, "x", at(0));
        // The permit left by the set completes the wait at once.
        tokio::time::timeout(Duration::from_secs(5), cache.changed())
            .await
            .expect("woken");
    }
}
