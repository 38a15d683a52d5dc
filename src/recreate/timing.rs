//! The moments behind the recreate latency metrics: when each CRR was created, when kruised
//! stopped each of its containers, and when the replacement started.
//!
//! `creationTimestamp` has whole seconds (the API server truncates it), too coarse for a
//! kill that takes tens of milliseconds. So a CRR's creation is taken as the moment kruised
//! first saw it, unless the end of its `creationTimestamp`'s second is earlier (a CRR created
//! while kruised was down or behind): never later than the real creation, and at most the
//! watch's delivery time after it.
//!
//! The replacement's start is the runtime's own `startedAt` of the pod's newest container of
//! that name, whenever a later sync reads the pod, so the sync's timing does not matter.
//! Everything here lives in memory: a kill made before a restart of kruised is not timed.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::runtime::RuntimePod;
use super::version::CrrView;

/// A container stopped and not yet seen running again.
#[derive(Debug, Clone)]
struct Kill {
    crr_uid: String,
    container: String,
    at: Timestamp,
}

/// First sightings and kills of the active CRRs, keyed by CRR UID. Entries go when the CRR
/// completes or leaves the watch ([`Timings::forget`]), so memory is bounded by the active
/// CRRs.
#[derive(Debug, Default)]
pub struct Timings {
    first_seen: HashMap<String, Timestamp>,
    kills: Vec<Kill>,
}

impl Timings {
    /// Remembers when the CRR was first seen (later sightings change nothing).
    pub fn seen(&mut self, crr: &CrrView, now: Timestamp) {
        self.first_seen.entry(crr.uid.clone()).or_insert(now);
    }

    /// The CRR's creation, as the [module docs](self) define it.
    pub fn created(&self, crr: &CrrView) -> Option<Timestamp> {
        let seen = self.first_seen.get(&crr.uid).copied();
        let second_end = crr
            .creation_timestamp
            .and_then(|created| created.checked_add(SignedDuration::from_secs(1)).ok());
        match (seen, second_end) {
            (Some(seen), Some(end)) => Some(seen.min(end)),
            (seen, end) => seen.or(end),
        }
    }

    /// Records that the CRR's container `container` was stopped at `at` (the StopContainer
    /// call); returns the time since the CRR's creation.
    pub fn killed(&mut self, crr: &CrrView, container: &str, at: Timestamp) -> Option<Duration> {
        self.kills
            .retain(|kill| !(kill.crr_uid == crr.uid && kill.container == container));
        self.kills.push(Kill {
            crr_uid: crr.uid.clone(),
            container: container.to_owned(),
            at,
        });
        self.created(crr)
            .map(|created| non_negative(at.duration_since(created)))
    }

    /// For each container of this CRR stopped earlier whose pod now has a newer container of
    /// the same name that has started, the time from the stop to that start; those kills are
    /// then forgotten.
    pub fn restarted(&mut self, crr_uid: &str, pod: &RuntimePod) -> Vec<Duration> {
        let mut restarts = Vec::new();
        self.kills.retain(|kill| {
            if kill.crr_uid != crr_uid {
                return true;
            }
            // The stopped container started before the stop; a start after it is a newer one.
            let started = pod
                .newest(&kill.container)
                .and_then(|container| container.started_at)
                .filter(|started| *started > kill.at);
            match started {
                Some(started) => {
                    restarts.push(non_negative(started.duration_since(kill.at)));
                    false
                }
                None => true,
            }
        });
        restarts
    }

    /// Forgets the CRR (completed, deleted, or no longer active).
    pub fn forget(&mut self, crr_uid: &str) {
        self.first_seen.remove(crr_uid);
        self.kills.retain(|kill| kill.crr_uid != crr_uid);
    }

    /// Keeps only the CRRs `keep` accepts (after a relist).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.first_seen.retain(|uid, _| keep(uid));
        self.kills.retain(|kill| keep(&kill.crr_uid));
    }

    /// How many CRRs and kills are remembered.
    pub fn remembered(&self) -> (usize, usize) {
        (self.first_seen.len(), self.kills.len())
    }
}

fn non_negative(duration: SignedDuration) -> Duration {
    Duration::try_from(duration).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recreate::runtime::RuntimeContainerState::{Exited, Running};
    use crate::recreate::testing::{crr_with_containers, runtime_container, timestamp};

    fn at(time: &str) -> Timestamp {
        timestamp(time)
    }

    fn started(
        name: &str,
        id: &str,
        state: crate::recreate::runtime::RuntimeContainerState,
        started: &str,
        created_at: i64,
    ) -> crate::recreate::runtime::RuntimeContainer {
        let mut container = runtime_container(name, id, state, 0, created_at);
        container.started_at = Some(at(started));
        container
    }

    #[test]
    fn creation_is_the_first_sighting_when_it_falls_within_the_timestamps_second() {
        let mut timings = Timings::default();
        let mut crr = crr_with_containers(&[]);
        crr.creation_timestamp = Some(at("2024-01-01T00:00:10Z"));
        timings.seen(&crr, at("2024-01-01T00:00:10.400Z"));
        // A later sighting does not move it.
        timings.seen(&crr, at("2024-01-01T00:00:10.900Z"));
        assert_eq!(timings.created(&crr), Some(at("2024-01-01T00:00:10.400Z")));

        let elapsed = timings.killed(&crr, "app", at("2024-01-01T00:00:10.450Z"));
        assert_eq!(elapsed, Some(Duration::from_millis(50)));
    }

    #[test]
    fn a_crr_seen_late_counts_from_the_end_of_its_creation_second() {
        let mut timings = Timings::default();
        let mut crr = crr_with_containers(&[]);
        crr.creation_timestamp = Some(at("2024-01-01T00:00:10Z"));
        timings.seen(&crr, at("2024-01-01T00:01:00Z"));
        let elapsed = timings.killed(&crr, "app", at("2024-01-01T00:01:00.200Z"));
        assert_eq!(elapsed, Some(Duration::from_millis(49_200)));
    }

    #[test]
    fn kill_to_running_is_the_replacements_start_and_is_reported_once() {
        let mut timings = Timings::default();
        let crr = crr_with_containers(&[("app", "containerd://old", 0)]);
        timings.seen(&crr, at("2024-01-01T00:00:00.100Z"));
        timings.killed(&crr, "app", at("2024-01-01T00:00:01Z"));

        // Only the stopped container: nothing yet, whatever its state.
        let stopped = RuntimePod::new(vec![started(
            "app",
            "old",
            Exited,
            "2023-12-31T23:00:00Z",
            1,
        )]);
        assert!(timings.restarted(&crr.uid, &stopped).is_empty());

        let replaced = RuntimePod::new(vec![
            started("app", "new", Running, "2024-01-01T00:00:01.750Z", 2),
            started("app", "old", Exited, "2023-12-31T23:00:00Z", 1),
        ]);
        assert_eq!(
            timings.restarted(&crr.uid, &replaced),
            [Duration::from_millis(750)]
        );
        assert!(timings.restarted(&crr.uid, &replaced).is_empty());
        assert_eq!(timings.remembered(), (1, 0));
        timings.forget(&crr.uid);
        assert_eq!(timings.remembered(), (0, 0));
    }

    #[test]
    fn kills_of_other_crrs_and_containers_are_kept_apart() {
        let mut timings = Timings::default();
        let first = crr_with_containers(&[]);
        let mut second = crr_with_containers(&[]);
        second.uid = "second-uid".into();
        timings.killed(&first, "a", at("2024-01-01T00:00:01Z"));
        timings.killed(&first, "b", at("2024-01-01T00:00:01Z"));
        timings.killed(&second, "a", at("2024-01-01T00:00:01Z"));
        let pod = RuntimePod::new(vec![started(
            "a",
            "new",
            Running,
            "2024-01-01T00:00:02Z",
            2,
        )]);
        assert_eq!(
            timings.restarted(&first.uid, &pod),
            [Duration::from_secs(1)]
        );
        assert_eq!(timings.remembered(), (0, 2));
        timings.retain(|uid| uid == "second-uid");
        assert_eq!(timings.remembered(), (0, 1));
    }
}
