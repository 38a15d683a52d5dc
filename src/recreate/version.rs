//! A version-neutral view of a ContainerRecreateRequest: everything the daemon's algorithm
//! reads (§4.4), taken from a `v1alpha1` or a `v1beta1` object (§11.1 item 2).
//!
//! The two versions differ, for the daemon, only in where the manager reports two facts:
//!
//! | fact | `v1beta1` (master) | `v1alpha1` (≤ 1.9) |
//! | --- | --- | --- |
//! | unready acquisition time | `status.conditions[PreRecreateGrace]` (status `True`), `lastTransitionTime` | annotation `crr.apps.kruise.io/unready-acquired`, RFC 3339 |
//! | container status snapshot | `status.containerStatusSnapshot` | annotation `crr.apps.kruise.io/sync-container-statuses`, JSON |

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::go_text;
use crate::api::shared::containerrecreaterequest::{
    ContainerRecreateRequestContainer, ContainerRecreateRequestSyncContainerStatus,
};
use crate::api::{
    CRR_POD_UID_LABEL, CRR_SYNC_CONTAINER_STATUSES_ANNOTATION, CRR_UNREADY_ACQUIRED_ANNOTATION,
    ContainerRecreateRequestFailurePolicy, ContainerRecreateRequestPhase,
    PRE_RECREATE_GRACE_CONDITION, v1alpha1, v1beta1,
};

/// The API version a [`CrrView`] was read from, and so the version its writes must use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// `apps.kruise.io/v1alpha1`: kruise ≤ 1.9, still served on master.
    V1alpha1,
    /// `apps.kruise.io/v1beta1`: the storage version on master.
    V1beta1,
}

/// The recreation strategy, with kruise's defaults applied where the Go code reads a zero
/// value (`strategy` absent reads as all defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strategy {
    /// `failurePolicy`. Kruise compares the string with `Ignore`; anything else, including
    /// empty, behaves as `Fail`.
    pub failure_policy: ContainerRecreateRequestFailurePolicy,
    /// `orderedRecreate`.
    pub ordered_recreate: bool,
    /// `forceRecreate`.
    pub force_recreate: bool,
    /// `terminationGracePeriodSeconds` (the webhook defaults it to the pod's).
    pub termination_grace_period_seconds: Option<i64>,
    /// `unreadyGracePeriodSeconds`: when set, the daemon waits this long after the manager
    /// forced the pod not-ready.
    pub unready_grace_period_seconds: Option<i64>,
    /// `minStartedSeconds`, 0 when absent.
    pub min_started_seconds: i32,
}

impl Default for Strategy {
    fn default() -> Self {
        Self {
            // The webhook's default, and what kruise does with anything but `Ignore`.
            failure_policy: ContainerRecreateRequestFailurePolicy::Fail,
            ordered_recreate: false,
            force_recreate: false,
            termination_grace_period_seconds: None,
            unready_grace_period_seconds: None,
            min_started_seconds: 0,
        }
    }
}

/// When the manager forced the pod not-ready for the `unreadyGracePeriodSeconds` wait (§4.3,
/// §4.4 step 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnreadyAcquisition {
    /// Not (yet) acquired: wait for the manager's update.
    NotAcquired,
    /// Acquired at this time.
    AcquiredAt(Timestamp),
    /// `v1alpha1` only: the annotation is not an RFC 3339 time. Kruise completes the CRR with
    /// [`UnreadyAcquisition::completion_message`].
    Unparseable {
        /// The annotation's value.
        value: String,
        /// Go's `time.Parse` error for it.
        error: String,
    },
}

impl UnreadyAcquisition {
    /// The CRR completion message for an unparseable time, exactly kruise's
    /// `failed to parse unready time <s>: <err>`; `None` otherwise.
    pub fn completion_message(&self) -> Option<String> {
        match self {
            Self::Unparseable { value, error } => {
                Some(format!("failed to parse unready time {value}: {error}"))
            }
            _ => None,
        }
    }
}

/// One entry of `status.containerRecreateStates`, in either version.
///
/// The serialized form is kruise's: `message` and `isKilled` are omitted when empty or false,
/// so [`CrrView::container_recreate_states`] compares with computed states the way Go's
/// `reflect.DeepEqual` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateState {
    /// The container's name.
    pub name: String,
    /// Pending, Recreating, Succeeded or Failed.
    pub phase: ContainerRecreateRequestPhase,
    /// Why, for a user reading `kubectl describe`; empty for none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Whether the daemon has stopped this container for the request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_killed: bool,
}

impl ContainerRecreateState {
    /// A state with no message that was not killed.
    pub fn new(name: impl Into<String>, phase: ContainerRecreateRequestPhase) -> Self {
        Self {
            name: name.into(),
            phase,
            message: String::new(),
            is_killed: false,
        }
    }

    /// The `v1alpha1` status entry.
    pub fn to_v1alpha1(&self) -> v1alpha1::ContainerRecreateRequestContainerRecreateState {
        v1alpha1::ContainerRecreateRequestContainerRecreateState {
            name: self.name.clone(),
            phase: self.phase.as_str().to_owned(),
            message: (!self.message.is_empty()).then(|| self.message.clone()),
            is_killed: self.is_killed.then_some(true),
        }
    }

    /// The `v1beta1` status entry.
    pub fn to_v1beta1(&self) -> v1beta1::ContainerRecreateRequestContainerRecreateState {
        v1beta1::ContainerRecreateRequestContainerRecreateState {
            name: self.name.clone(),
            phase: self.phase,
            message: (!self.message.is_empty()).then(|| self.message.clone()),
            is_killed: self.is_killed.then_some(true),
        }
    }
}

/// Everything the daemon reads from a ContainerRecreateRequest, whatever its version.
#[derive(Debug, Clone, PartialEq)]
pub struct CrrView {
    /// The version this view was read from.
    pub version: ApiVersion,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`, for the write expectations (§1.4).
    pub resource_version: Option<String>,
    /// `metadata.creationTimestamp`.
    pub creation_timestamp: Option<Timestamp>,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.podName`.
    pub pod_name: String,
    /// `spec.containers`, in order.
    pub containers: Vec<ContainerRecreateRequestContainer>,
    /// `spec.strategy`, defaults applied.
    pub strategy: Strategy,
    /// `spec.activeDeadlineSeconds` (enforced by the manager, §4.3).
    pub active_deadline_seconds: Option<i64>,
    /// `status.phase` as written; empty before the daemon's first write. Kept as a string so
    /// that an empty phase and an unknown one stay apart (§4.4 step 2).
    pub phase: String,
    /// `status.completionTime`.
    pub completion_time: Option<Timestamp>,
    /// `status.containerRecreateStates`, in order.
    pub container_recreate_states: Vec<ContainerRecreateState>,
    /// Whether a stored state had a phase outside the vocabulary (possible only by hand in
    /// `v1alpha1`). It was read as `Pending` and the stored list counts as changed, so the
    /// daemon rewrites it, as Go's `DeepEqual` would.
    pub states_need_rewrite: bool,
    /// When the manager forced the pod not-ready.
    pub unready_acquisition: UnreadyAcquisition,
    /// The manager's snapshot of the pod's container statuses (§4.3).
    pub container_status_snapshot: Vec<ContainerRecreateRequestSyncContainerStatus>,
    /// `v1alpha1` only: why the snapshot annotation could not be read. Kruise logs it and
    /// reads no snapshot, which is what [`CrrView::container_status_snapshot`] holds then.
    pub snapshot_error: Option<String>,
}

impl CrrView {
    /// Reads a `v1alpha1` object.
    pub fn from_v1alpha1(crr: &v1alpha1::ContainerRecreateRequest) -> Self {
        let annotations = crr.metadata.annotations.clone().unwrap_or_default();
        let strategy = crr.spec.strategy.clone().unwrap_or_default();
        let status = crr.status.clone().unwrap_or_default();

        let mut states_need_rewrite = false;
        let container_recreate_states = status
            .container_recreate_states
            .unwrap_or_default()
            .into_iter()
            .map(|state| {
                let phase = state.phase.parse().unwrap_or_else(|_| {
                    states_need_rewrite = true;
                    ContainerRecreateRequestPhase::Pending
                });
                ContainerRecreateState {
                    name: state.name,
                    phase,
                    message: state.message.unwrap_or_default(),
                    is_killed: state.is_killed.unwrap_or(false),
                }
            })
            .collect();

        let unready_acquisition = match annotations
            .get(CRR_UNREADY_ACQUIRED_ANNOTATION)
            .map(String::as_str)
        {
            None | Some("") => UnreadyAcquisition::NotAcquired,
            Some(value) => match go_text::parse_rfc3339(value) {
                Ok(time) => UnreadyAcquisition::AcquiredAt(time),
                Err(error) => UnreadyAcquisition::Unparseable {
                    value: value.to_owned(),
                    error: error.to_string(),
                },
            },
        };

        let (container_status_snapshot, snapshot_error) = match annotations
            .get(CRR_SYNC_CONTAINER_STATUSES_ANNOTATION)
            .map(String::as_str)
        {
            None | Some("") => (Vec::new(), None),
            Some(json) => match serde_json::from_str(json) {
                Ok(snapshot) => (snapshot, None),
                Err(error) => (
                    Vec::new(),
                    Some(format!(
                        "failed to unmarshal annotation {CRR_SYNC_CONTAINER_STATUSES_ANNOTATION}: {error}"
                    )),
                ),
            },
        };

        let mut view = Self::from_meta(ApiVersion::V1alpha1, &crr.metadata);
        view.pod_name = crr.spec.pod_name.clone();
        view.containers = crr.spec.containers.clone();
        view.strategy = Strategy {
            // Kruise: `FailurePolicy == Ignore`, so anything else fails.
            failure_policy: match strategy.failure_policy.as_deref() {
                Some("Ignore") => ContainerRecreateRequestFailurePolicy::Ignore,
                _ => ContainerRecreateRequestFailurePolicy::Fail,
            },
            ordered_recreate: strategy.ordered_recreate.unwrap_or(false),
            force_recreate: strategy.force_recreate.unwrap_or(false),
            termination_grace_period_seconds: strategy.termination_grace_period_seconds,
            unready_grace_period_seconds: strategy.unready_grace_period_seconds,
            min_started_seconds: strategy.min_started_seconds.unwrap_or(0),
        };
        view.active_deadline_seconds = crr.spec.active_deadline_seconds;
        view.phase = status.phase;
        view.completion_time = status.completion_time.map(|Time(time)| time);
        view.container_recreate_states = container_recreate_states;
        view.states_need_rewrite = states_need_rewrite;
        view.unready_acquisition = unready_acquisition;
        view.container_status_snapshot = container_status_snapshot;
        view.snapshot_error = snapshot_error;
        view
    }

    /// Reads a `v1beta1` object.
    pub fn from_v1beta1(crr: &v1beta1::ContainerRecreateRequest) -> Self {
        let strategy = crr.spec.strategy.clone().unwrap_or_default();
        let mut view = Self::from_meta(ApiVersion::V1beta1, &crr.metadata);
        view.pod_name = crr.spec.pod_name.clone();
        view.containers = crr.spec.containers.clone();
        view.strategy = Strategy {
            failure_policy: strategy
                .failure_policy
                .unwrap_or(ContainerRecreateRequestFailurePolicy::Fail),
            ordered_recreate: strategy.ordered_recreate.unwrap_or(false),
            force_recreate: strategy.force_recreate.unwrap_or(false),
            termination_grace_period_seconds: strategy.termination_grace_period_seconds,
            unready_grace_period_seconds: strategy.unready_grace_period_seconds,
            min_started_seconds: strategy.min_started_seconds.unwrap_or(0),
        };
        view.active_deadline_seconds = crr.spec.active_deadline_seconds;
        if let Some(status) = &crr.status {
            view.phase = status.phase.as_str().to_owned();
            view.completion_time = status.completion_time.clone().map(|Time(time)| time);
            view.container_recreate_states = status
                .container_recreate_states
                .iter()
                .flatten()
                .map(|state| ContainerRecreateState {
                    name: state.name.clone(),
                    phase: state.phase,
                    message: state.message.clone().unwrap_or_default(),
                    is_killed: state.is_killed.unwrap_or(false),
                })
                .collect();
            view.unready_acquisition = status
                .conditions
                .iter()
                .flatten()
                .find(|condition| {
                    condition.type_ == PRE_RECREATE_GRACE_CONDITION && condition.status == "True"
                })
                .map_or(UnreadyAcquisition::NotAcquired, |condition| {
                    UnreadyAcquisition::AcquiredAt(condition.last_transition_time.0)
                });
            view.container_status_snapshot =
                status.container_status_snapshot.clone().unwrap_or_default();
        }
        view
    }

    fn from_meta(version: ApiVersion, metadata: &ObjectMeta) -> Self {
        Self {
            version,
            name: metadata.name.clone().unwrap_or_default(),
            namespace: metadata.namespace.clone().unwrap_or_default(),
            uid: metadata.uid.clone().unwrap_or_default(),
            resource_version: metadata.resource_version.clone(),
            creation_timestamp: metadata.creation_timestamp.clone().map(|Time(time)| time),
            deleting: metadata.deletion_timestamp.is_some(),
            labels: metadata.labels.clone().unwrap_or_default(),
            pod_name: String::new(),
            containers: Vec::new(),
            strategy: Strategy::default(),
            active_deadline_seconds: None,
            phase: String::new(),
            completion_time: None,
            container_recreate_states: Vec::new(),
            states_need_rewrite: false,
            unready_acquisition: UnreadyAcquisition::NotAcquired,
            container_status_snapshot: Vec::new(),
            snapshot_error: None,
        }
    }

    /// The pod's UID from the webhook's `crr.apps.kruise.io/pod-uid` label: the CRI
    /// `io.kubernetes.pod.uid` filter. Empty when the label is missing.
    pub fn pod_uid(&self) -> &str {
        self.labels
            .get(CRR_POD_UID_LABEL)
            .map_or("", String::as_str)
    }

    /// The work-queue key of the daemon: `<namespace>/<spec.podName>` (§4.4).
    pub fn queue_key(&self) -> String {
        format!("{}/{}", self.namespace, self.pod_name)
    }

    /// `status.phase` when it is one of the vocabulary.
    pub fn phase(&self) -> Option<ContainerRecreateRequestPhase> {
        self.phase.parse().ok()
    }

    /// Whether the CRR is finished for the daemon: `completionTime` set (kruise's test) or
    /// phase `Completed`.
    pub fn is_completed(&self) -> bool {
        self.completion_time.is_some()
            || self.phase() == Some(ContainerRecreateRequestPhase::Completed)
    }

    /// The last snapshot entry for a container (kruise builds a map, so the last wins).
    pub fn snapshot_of(&self, name: &str) -> Option<&ContainerRecreateRequestSyncContainerStatus> {
        self.container_status_snapshot
            .iter()
            .rev()
            .find(|status| status.name == name)
    }

    /// The first stored state for a container (kruise's `getCRRContainerRecreateState`).
    pub fn state_of(&self, name: &str) -> Option<&ContainerRecreateState> {
        self.container_recreate_states
            .iter()
            .find(|state| state.name == name)
    }
}

/// The merge patch kruise sends for a states change, identical in both versions:
/// `{"status":{"containerRecreateStates":[...]}}` (§4.4 step 5.5).
pub fn states_merge_patch(states: &[ContainerRecreateState]) -> serde_json::Value {
    serde_json::json!({ "status": { "containerRecreateStates": states } })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;
    use crate::api::v1alpha1::ContainerRecreateRequestContainerContext;

    fn container(name: &str) -> ContainerRecreateRequestContainer {
        ContainerRecreateRequestContainer {
            name: name.to_owned(),
            pre_stop: None,
            ports: None,
            status_context: Some(ContainerRecreateRequestContainerContext {
                container_id: format!("containerd://{name}-1"),
                restart_count: 0,
            }),
        }
    }

    fn metadata(annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("crr".into()),
            namespace: Some("ns".into()),
            uid: Some("crr-uid".into()),
            resource_version: Some("7".into()),
            creation_timestamp: Some(Time("2024-05-06T07:08:09Z".parse().unwrap())),
            labels: Some(BTreeMap::from([(
                CRR_POD_UID_LABEL.to_owned(),
                "pod-uid".to_owned(),
            )])),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    fn alpha(annotations: &[(&str, &str)]) -> v1alpha1::ContainerRecreateRequest {
        let mut crr = v1alpha1::ContainerRecreateRequest::new(
            "crr",
            v1alpha1::ContainerRecreateRequestSpec {
                pod_name: "pod".into(),
                containers: vec![container("app")],
                strategy: Some(v1alpha1::ContainerRecreateRequestStrategy {
                    failure_policy: Some("Ignore".into()),
                    min_started_seconds: Some(5),
                    ..Default::default()
                }),
                active_deadline_seconds: Some(300),
                ttl_seconds_after_finished: None,
            },
        );
        crr.metadata = metadata(annotations);
        crr
    }

    #[test]
    fn v1alpha1_reads_the_annotations() {
        let mut crr = alpha(&[
            (CRR_UNREADY_ACQUIRED_ANNOTATION, "2024-05-06T07:08:19+00:00"),
            (
                CRR_SYNC_CONTAINER_STATUSES_ANNOTATION,
                r#"[{"name":"app","ready":true,"restartCount":1,"containerID":"containerd://app-2"}]"#,
            ),
        ]);
        crr.status = Some(v1alpha1::ContainerRecreateRequestStatus {
            phase: "Recreating".into(),
            container_recreate_states: Some(vec![
                v1alpha1::ContainerRecreateRequestContainerRecreateState {
                    name: "app".into(),
                    phase: "Recreating".into(),
                    message: None,
                    is_killed: Some(true),
                },
            ]),
            ..Default::default()
        });
        let view = CrrView::from_v1alpha1(&crr);
        assert_eq!(view.version, ApiVersion::V1alpha1);
        assert_eq!(view.pod_uid(), "pod-uid");
        assert_eq!(view.queue_key(), "ns/pod");
        assert_eq!(
            view.strategy.failure_policy,
            ContainerRecreateRequestFailurePolicy::Ignore
        );
        assert_eq!(view.strategy.min_started_seconds, 5);
        assert_eq!(
            view.unready_acquisition,
            UnreadyAcquisition::AcquiredAt("2024-05-06T07:08:19Z".parse().unwrap())
        );
        assert_eq!(
            view.snapshot_of("app").unwrap().container_id.as_deref(),
            Some("containerd://app-2")
        );
        assert_eq!(
            view.container_recreate_states,
            vec![ContainerRecreateState {
                is_killed: true,
                ..ContainerRecreateState::new("app", ContainerRecreateRequestPhase::Recreating)
            }]
        );
        assert!(!view.states_need_rewrite);
    }

    #[test]
    fn an_unparseable_unready_time_gives_kruises_completion_message() {
        let view = CrrView::from_v1alpha1(&alpha(&[(CRR_UNREADY_ACQUIRED_ANNOTATION, "now")]));
        assert_eq!(
            view.unready_acquisition.completion_message().as_deref(),
            Some(
                r#"failed to parse unready time now: parsing time "now" as "2006-01-02T15:04:05Z07:00": cannot parse "now" as "2006""#
            )
        );
    }

    #[test]
    fn a_bad_snapshot_annotation_reads_as_no_snapshot() {
        let view = CrrView::from_v1alpha1(&alpha(&[(
            CRR_SYNC_CONTAINER_STATUSES_ANNOTATION,
            "{not json",
        )]));
        assert!(view.container_status_snapshot.is_empty());
        assert!(view.snapshot_error.is_some());
    }

    #[test]
    fn v1alpha1_unknown_policy_is_fail_and_unknown_state_phase_forces_a_rewrite() {
        let mut crr = alpha(&[]);
        crr.spec.strategy = Some(v1alpha1::ContainerRecreateRequestStrategy {
            failure_policy: Some("ignore".into()),
            ..Default::default()
        });
        crr.status = Some(v1alpha1::ContainerRecreateRequestStatus {
            phase: String::new(),
            container_recreate_states: Some(vec![
                v1alpha1::ContainerRecreateRequestContainerRecreateState {
                    name: "app".into(),
                    phase: "Restarting".into(),
                    message: None,
                    is_killed: None,
                },
            ]),
            ..Default::default()
        });
        let view = CrrView::from_v1alpha1(&crr);
        assert_eq!(
            view.strategy.failure_policy,
            ContainerRecreateRequestFailurePolicy::Fail
        );
        assert!(view.states_need_rewrite);
        assert_eq!(view.phase(), None);
        assert_eq!(view.unready_acquisition, UnreadyAcquisition::NotAcquired);
    }

    #[test]
    fn v1beta1_reads_the_condition_and_the_snapshot_from_status() {
        let mut crr = v1beta1::ContainerRecreateRequest::new(
            "crr",
            v1beta1::ContainerRecreateRequestSpec {
                pod_name: "pod".into(),
                containers: vec![container("app")],
                strategy: Some(v1beta1::ContainerRecreateRequestStrategy {
                    unready_grace_period_seconds: Some(10),
                    ..Default::default()
                }),
                active_deadline_seconds: None,
                ttl_seconds_after_finished: None,
            },
        );
        // A v1alpha1-style annotation on a v1beta1 object means nothing.
        crr.metadata = metadata(&[(CRR_UNREADY_ACQUIRED_ANNOTATION, "garbage")]);
        let condition = |status: &str, time: &str| Condition {
            type_: PRE_RECREATE_GRACE_CONDITION.into(),
            status: status.into(),
            reason: "PreRecreateGrace".into(),
            message: String::new(),
            last_transition_time: Time(time.parse().unwrap()),
            observed_generation: None,
        };
        crr.status = Some(v1beta1::ContainerRecreateRequestStatus {
            phase: ContainerRecreateRequestPhase::Recreating,
            completion_time: None,
            message: None,
            container_recreate_states: None,
            container_status_snapshot: Some(vec![ContainerRecreateRequestSyncContainerStatus {
                name: "app".into(),
                ready: true,
                restart_count: 1,
                container_id: Some("containerd://app-2".into()),
            }]),
            conditions: Some(vec![condition("True", "2024-05-06T07:08:19Z")]),
        });
        let view = CrrView::from_v1beta1(&crr);
        assert_eq!(view.version, ApiVersion::V1beta1);
        assert_eq!(view.phase, "Recreating");
        assert_eq!(view.strategy.unready_grace_period_seconds, Some(10));
        assert_eq!(
            view.unready_acquisition,
            UnreadyAcquisition::AcquiredAt("2024-05-06T07:08:19Z".parse().unwrap())
        );
        assert_eq!(view.container_status_snapshot.len(), 1);

        crr.status.as_mut().unwrap().conditions =
            Some(vec![condition("False", "2024-05-06T07:08:19Z")]);
        assert_eq!(
            CrrView::from_v1beta1(&crr).unready_acquisition,
            UnreadyAcquisition::NotAcquired
        );
    }

    #[test]
    fn states_serialize_like_kruise_and_convert_to_both_versions() {
        let state = ContainerRecreateState {
            is_killed: true,
            ..ContainerRecreateState::new("app", ContainerRecreateRequestPhase::Recreating)
        };
        // Compared as values: key order depends on serde_json's `preserve_order`, which
        // the test bed switches on for the whole workspace.
        assert_eq!(
            states_merge_patch(std::slice::from_ref(&state)),
            serde_json::json!({"status": {"containerRecreateStates": [
                {"isKilled": true, "name": "app", "phase": "Recreating"}
            ]}})
        );
        assert_eq!(
            serde_json::to_value(state.to_v1alpha1()).unwrap(),
            serde_json::to_value(state.to_v1beta1()).unwrap()
        );
        let pending = ContainerRecreateState::new("app", ContainerRecreateRequestPhase::Pending);
        assert_eq!(pending.to_v1alpha1().is_killed, None);
        assert_eq!(pending.to_v1alpha1().message, None);
    }
}
