//! The NodePodProbe status computed from the spec, the current status and the result cache
//! (kruise's `syncUpdateNodePodProbeStatus`, §5.3). Pure: the controller writes what this
//! returns, and only when it differs from what is stored.
//!
//! 1. Keep the current entries whose `(pod uid, probe name)` is still in the spec, dropping
//!    pods left with none.
//! 2. Overlay each cached result whose `(pod uid, probe name)` is in the spec: state, message
//!    and `lastProbeTime` from the result; `lastTransitionTime` set to now when the state
//!    changed or the entry is new.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::results::{ProbeResult, whole_seconds};
use crate::api::v1alpha1::{
    ContainerProbeState, NodePodProbeSpec, NodePodProbeStatus, PodProbeStatus,
};

/// The `(pod uid, probe name)` pairs of the spec.
fn spec_probes(spec: &NodePodProbeSpec) -> HashSet<(&str, &str)> {
    spec.pod_probes
        .iter()
        .flatten()
        .flat_map(|pod| {
            pod.probes
                .iter()
                .flatten()
                .map(move |probe| (pod.uid.as_str(), probe.name.as_str()))
        })
        .collect()
}

/// The status to write. `results` may be in any order; when two results name the same
/// `(pod uid, probe name)` (a replaced container whose old result was not removed yet), the
/// most recently recorded wins.
pub fn desired_status(
    spec: &NodePodProbeSpec,
    current: Option<&NodePodProbeStatus>,
    results: &[ProbeResult],
    now: Timestamp,
) -> NodePodProbeStatus {
    let valid = spec_probes(spec);
    let now = Time(whole_seconds(now));
    let mut pods: Vec<PodProbeStatus> = current
        .and_then(|status| status.pod_probe_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|pod| {
            let states: Vec<ContainerProbeState> = pod
                .probe_states
                .iter()
                .flatten()
                .filter(|state| valid.contains(&(pod.uid.as_str(), state.name.as_str())))
                .cloned()
                .collect();
            (!states.is_empty()).then(|| PodProbeStatus {
                probe_states: Some(states),
                ..pod.clone()
            })
        })
        .collect();

    let mut ordered: Vec<&ProbeResult> = results
        .iter()
        .filter(|result| {
            valid.contains(&(result.key.pod_uid.as_str(), result.key.probe_name.as_str()))
        })
        .collect();
    ordered.sort_by_key(|result| result.last_probe_time);
    for result in ordered {
        let index = match pods.iter().position(|pod| pod.uid == result.key.pod_uid) {
            Some(index) => index,
            None => {
                pods.push(PodProbeStatus {
                    name: result.key.pod_name.clone(),
                    namespace: result.key.pod_namespace.clone(),
                    uid: result.key.pod_uid.clone(),
                    probe_states: None,
                });
                pods.len() - 1
            }
        };
        let states = pods[index].probe_states.get_or_insert_with(Vec::new);
        let message = (!result.message.is_empty()).then(|| result.message.clone());
        let last_probe_time = Some(Time(result.last_probe_time));
        match states
            .iter_mut()
            .find(|state| state.name == result.key.probe_name)
        {
            Some(state) => {
                if state.state != result.state.as_str() {
                    state.last_transition_time = Some(now.clone());
                }
                state.state = result.state.as_str().to_owned();
                state.message = message;
                state.last_probe_time = last_probe_time;
            }
            None => states.push(ContainerProbeState {
                name: result.key.probe_name.clone(),
                state: result.state.as_str().to_owned(),
                last_probe_time,
                last_transition_time: Some(now.clone()),
                message,
            }),
        }
    }
    NodePodProbeStatus {
        pod_probe_statuses: (!pods.is_empty()).then_some(pods),
    }
}

/// Whether two statuses say the same thing: an absent list and an empty one are equal, as
/// they are on the wire.
pub fn same_status(a: Option<&NodePodProbeStatus>, b: &NodePodProbeStatus) -> bool {
    let pods = |status: Option<&NodePodProbeStatus>| -> Vec<PodProbeStatus> {
        status
            .and_then(|status| status.pod_probe_statuses.clone())
            .unwrap_or_default()
    };
    pods(a) == pods(Some(b))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Probe;
    use k8s_openapi::jiff::SignedDuration;

    use super::*;
    use crate::api::ProbeState;
    use crate::api::v1alpha1::{ContainerProbe, PodProbe};
    use crate::podprobe::ProbeKey;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn spec(pods: &[(&str, &[&str])]) -> NodePodProbeSpec {
        NodePodProbeSpec {
            pod_probes: Some(
                pods.iter()
                    .map(|(uid, probes)| PodProbe {
                        name: format!("pod-{uid}"),
                        namespace: "ns".into(),
                        uid: (*uid).into(),
                        ip: "10.0.0.1".into(),
                        probes: Some(
                            probes
                                .iter()
                                .map(|name| ContainerProbe {
                                    name: (*name).into(),
                                    container_name: "app".into(),
                                    probe: Probe::default(),
                                })
                                .collect(),
                        ),
                    })
                    .collect(),
            ),
        }
    }

    fn result(uid: &str, probe: &str, state: ProbeState, message: &str, time: i64) -> ProbeResult {
        ProbeResult {
            key: ProbeKey {
                pod_namespace: "ns".into(),
                pod_name: format!("pod-{uid}"),
                pod_uid: uid.into(),
                pod_ip: "10.0.0.1".into(),
                container_name: "app".into(),
                probe_name: probe.into(),
            },
            container_id: format!("c-{uid}"),
            state,
            message: message.into(),
            last_probe_time: at(time),
        }
    }

    fn state_of<'a>(
        status: &'a NodePodProbeStatus,
        uid: &str,
        probe: &str,
    ) -> &'a ContainerProbeState {
        status
            .pod_probe_statuses
            .iter()
            .flatten()
            .find(|pod| pod.uid == uid)
            .and_then(|pod| pod.probe_states.iter().flatten().find(|s| s.name == probe))
            .unwrap_or_else(|| panic!("no state for {uid} {probe}"))
    }

    #[test]
    fn new_results_become_entries_with_both_times() {
        let spec = spec(&[("u1", &["ppm#a", "ppm#b"])]);
        let results = [
            result("u1", "ppm#a", ProbeState::Succeeded, "ok", 10),
            result("u1", "ppm#b", ProbeState::Failed, "", 10),
        ];
        let status = desired_status(&spec, None, &results, at(12));
        let a = state_of(&status, "u1", "ppm#a");
        assert_eq!(a.state, "Succeeded");
        assert_eq!(a.message.as_deref(), Some("ok"));
        assert_eq!(a.last_probe_time, Some(Time(at(10))));
        assert_eq!(a.last_transition_time, Some(Time(at(12))));
        let b = state_of(&status, "u1", "ppm#b");
        assert_eq!(b.state, "Failed");
        assert_eq!(
            b.message, None,
            "an empty message is left out, as Go's omitempty does"
        );
        let pod = &status.pod_probe_statuses.as_ref().unwrap()[0];
        assert_eq!(
            (pod.name.as_str(), pod.namespace.as_str()),
            ("pod-u1", "ns")
        );
    }

    #[test]
    fn the_transition_time_moves_only_when_the_state_changes() {
        let spec = spec(&[("u1", &["ppm#a"])]);
        let first = desired_status(
            &spec,
            None,
            &[result("u1", "ppm#a", ProbeState::Succeeded, "ok", 10)],
            at(10),
        );
        let refreshed = desired_status(
            &spec,
            Some(&first),
            &[result("u1", "ppm#a", ProbeState::Succeeded, "ok", 610)],
            at(611),
        );
        let state = state_of(&refreshed, "u1", "ppm#a");
        assert_eq!(state.last_probe_time, Some(Time(at(610))));
        assert_eq!(state.last_transition_time, Some(Time(at(10))));

        let failed = desired_status(
            &spec,
            Some(&refreshed),
            &[result("u1", "ppm#a", ProbeState::Failed, "down", 700)],
            at(701),
        );
        let state = state_of(&failed, "u1", "ppm#a");
        assert_eq!(state.state, "Failed");
        assert_eq!(state.last_transition_time, Some(Time(at(701))));
    }

    #[test]
    fn entries_leave_with_their_pod_or_probe() {
        let both = spec(&[("u1", &["ppm#a", "ppm#b"]), ("u2", &["ppm#a"])]);
        let results = [
            result("u1", "ppm#a", ProbeState::Succeeded, "", 1),
            result("u1", "ppm#b", ProbeState::Succeeded, "", 1),
            result("u2", "ppm#a", ProbeState::Succeeded, "", 1),
        ];
        let full = desired_status(&both, None, &results, at(2));
        assert_eq!(full.pod_probe_statuses.as_ref().unwrap().len(), 2);

        // Probe b of u1 and the whole pod u2 leave the spec; their results linger in the cache.
        let fewer = spec(&[("u1", &["ppm#a"])]);
        let status = desired_status(&fewer, Some(&full), &results, at(3));
        let pods = status.pod_probe_statuses.as_ref().unwrap();
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].uid, "u1");
        let names: Vec<&str> = pods[0]
            .probe_states
            .iter()
            .flatten()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["ppm#a"]);

        let none = desired_status(&NodePodProbeSpec::default(), Some(&status), &results, at(4));
        assert_eq!(none.pod_probe_statuses, None);
    }

    #[test]
    fn entries_without_a_result_yet_are_kept() {
        let spec = spec(&[("u1", &["ppm#a"])]);
        let stored = desired_status(
            &spec,
            None,
            &[result("u1", "ppm#a", ProbeState::Failed, "x", 1)],
            at(1),
        );
        // After a restart the cache is empty: the stored entry stays as it was.
        let status = desired_status(&spec, Some(&stored), &[], at(50));
        assert!(same_status(Some(&stored), &status));
    }

    #[test]
    fn the_newest_of_two_results_for_one_probe_wins() {
        let spec = spec(&[("u1", &["ppm#a"])]);
        let mut old = result("u1", "ppm#a", ProbeState::Failed, "old", 5);
        old.container_id = "old".into();
        let new = result("u1", "ppm#a", ProbeState::Unknown, "", 6);
        let status = desired_status(&spec, None, &[new, old], at(7));
        assert_eq!(state_of(&status, "u1", "ppm#a").state, "Unknown");
    }

    #[test]
    fn the_same_results_give_the_same_status_so_nothing_is_written() {
        let spec = spec(&[("u1", &["ppm#a"])]);
        let results = [result("u1", "ppm#a", ProbeState::Succeeded, "ok", 1)];
        let first = desired_status(&spec, None, &results, at(1));
        let again = desired_status(
            &spec,
            Some(&first),
            &results,
            at(1) + SignedDuration::from_secs(30),
        );
        assert!(same_status(Some(&first), &again));
        assert!(same_status(None, &NodePodProbeStatus::default()));
        assert!(!same_status(None, &first));
    }
}
