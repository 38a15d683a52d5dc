//! The ContainerRecreateRequest controller, the manager's half of §4.2 and §4.3:
//! admission of new CRRs (in place of kruise's webhook), the 60 s no-response timeout,
//! `activeDeadlineSeconds`, the container-status snapshot the agent waits for, the
//! unready grace with the `KruisePodReady` readiness gate, removal of the `active` label
//! and TTL deletion. Both API versions: `v1beta1` keeps the snapshot and the unready
//! acquisition in the status, `v1alpha1` in annotations.
//!
//! One fix over kruise: past `activeDeadlineSeconds`, containers that did not finish are
//! marked `Failed` with the reason (kruise #2353 left them `Recreating`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::context::{Context, reference};
use super::controllers::ReconcileError;
use super::crr_admission;
use super::podreadiness::{self, CRR_USER_AGENT, Message};
use crate::api::shared::containerrecreaterequest::ContainerRecreateRequestSyncContainerStatus;
use crate::api::{
    CRR_ACTIVE_LABEL, CRR_POD_UID_LABEL, CRR_SYNC_CONTAINER_STATUSES_ANNOTATION,
    CRR_UNREADY_ACQUIRED_ANNOTATION, CRR_UNREADY_ACQUIRED_FINALIZER, ContainerRecreateRequestPhase,
    PRE_RECREATE_GRACE_CONDITION, v1alpha1, v1beta1,
};
use crate::apiversions::KruiseVersion;
use crate::events::EventType;
use crate::recreate::version::{ContainerRecreateState, CrrView, UnreadyAcquisition};

/// Metrics label.
pub const CONTROLLER: &str = "crr";
/// kruise's messages.
pub const POD_GONE: &str = "pod has gone";
/// See [`POD_GONE`].
pub const NOT_RESPONDED: &str = "daemon has not responded for a long time";
/// See [`POD_GONE`].
pub const PAST_DEADLINE: &str = "recreating has exceeded the activeDeadlineSeconds";
/// How often a Recreating CRR's snapshot is refreshed without pod events (kruise: 3 s).
const RECREATING_RESYNC: Duration = Duration::from_secs(3);
/// Tolerance when comparing a container's start with the CRR's creation: API servers
/// store `creationTimestamp` in whole seconds (the test bed rounds rather than
/// truncates). Including an older container is harmless: its ID is never a recreated one.
const CREATION_SLACK: SignedDuration = SignedDuration::from_secs(1);

fn decode(object: &DynamicObject, version: KruiseVersion) -> Result<CrrView, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    match version {
        KruiseVersion::V1beta1 => {
            serde_json::from_value::<v1beta1::ContainerRecreateRequest>(value)
                .map(|crr| CrrView::from_v1beta1(&crr))
                .map_err(|e| e.to_string())
        }
        KruiseVersion::V1alpha1 => {
            serde_json::from_value::<v1alpha1::ContainerRecreateRequest>(value)
                .map(|crr| CrrView::from_v1alpha1(&crr))
                .map_err(|e| e.to_string())
        }
    }
}

/// The snapshot of the pod's containers the agent needs (§4.3 step 5): the CRR's
/// containers running and started at or after the CRR's creation.
pub fn snapshot(view: &CrrView, pod: &Pod) -> Vec<ContainerRecreateRequestSyncContainerStatus> {
    let created = view
        .creation_timestamp
        .map(|t| t - CREATION_SLACK)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    view.containers
        .iter()
        .filter_map(|c| statuses?.iter().find(|s| s.name == c.name))
        .filter(|s| {
            s.state
                .as_ref()
                .and_then(|state| state.running.as_ref())
                .and_then(|running| running.started_at.as_ref())
                .is_some_and(|started| started.0 >= created)
        })
        .map(|s| ContainerRecreateRequestSyncContainerStatus {
            name: s.name.clone(),
            ready: s.ready,
            restart_count: s.restart_count,
            container_id: s.container_id.clone(),
        })
        .collect()
}

/// The states written on a deadline completion: unfinished containers fail with the
/// reason (the fix for kruise #2353).
pub fn deadline_states(view: &CrrView) -> Vec<ContainerRecreateState> {
    let mut states: Vec<ContainerRecreateState> = view
        .containers
        .iter()
        .map(|c| {
            view.state_of(&c.name).cloned().unwrap_or_else(|| {
                ContainerRecreateState::new(c.name.clone(), ContainerRecreateRequestPhase::Pending)
            })
        })
        .collect();
    for state in &mut states {
        if !matches!(
            state.phase,
            ContainerRecreateRequestPhase::Succeeded | ContainerRecreateRequestPhase::Failed
        ) {
            state.phase = ContainerRecreateRequestPhase::Failed;
            state.message = PAST_DEADLINE.to_owned();
        }
    }
    states
}

fn left(total: Duration, since: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    let elapsed: Duration = since
        .map(|t| now.duration_since(t).try_into().unwrap_or(Duration::ZERO))
        .unwrap_or(Duration::ZERO);
    total.checked_sub(elapsed).filter(|l| !l.is_zero())
}

struct Crr<'a> {
    ctx: &'a Context,
    object: &'a DynamicObject,
    view: CrrView,
    api: Api<DynamicObject>,
}

impl Crr<'_> {
    fn key(&self) -> String {
        format!("crr/{}/{}", self.view.namespace, self.view.name)
    }

    fn reference(&self) -> ObjectReference {
        reference(self.object, &self.ctx.crr_resource())
    }

    async fn patch(
        &self,
        action: &'static str,
        patch: Value,
        status: bool,
    ) -> Result<bool, ReconcileError> {
        let params = PatchParams::default();
        let result = if status {
            self.api
                .patch_status(&self.view.name, &params, &Patch::Merge(&patch))
                .await
        } else {
            self.api
                .patch(&self.view.name, &params, &Patch::Merge(&patch))
                .await
        };
        self.ctx.metrics.write(CONTROLLER, action, &result);
        match result {
            Ok(written) => {
                self.ctx
                    .expectations
                    .expect(&self.key(), written.metadata.resource_version.as_deref());
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn complete(
        &self,
        message: &str,
        states: Option<Vec<ContainerRecreateState>>,
    ) -> Result<Action, ReconcileError> {
        let mut status = json!({
            "phase": "Completed",
            "completionTime": Time(Timestamp::now()),
            "message": message,
        });
        if let Some(states) = states {
            status["containerRecreateStates"] = json!(states);
        }
        if self
            .patch("complete_crr", json!({"status": status}), true)
            .await?
        {
            info!(crr = %self.key(), %message, "completed ContainerRecreateRequest");
            self.ctx
                .event(&self.reference(), EventType::Warning, "Completed", message)
                .await;
        }
        Ok(Action::requeue(Duration::from_millis(500)))
    }

    /// Adds or removes the unready finalizer; `false` when the write lost a race (the
    /// caller retries from a fresher copy).
    async fn set_finalizer(&self, present: bool) -> Result<bool, ReconcileError> {
        let mut finalizers = self.object.metadata.finalizers.clone().unwrap_or_default();
        if finalizers
            .iter()
            .any(|f| f == CRR_UNREADY_ACQUIRED_FINALIZER)
            == present
        {
            return Ok(true);
        }
        if present {
            finalizers.push(CRR_UNREADY_ACQUIRED_FINALIZER.to_owned());
        } else {
            finalizers.retain(|f| f != CRR_UNREADY_ACQUIRED_FINALIZER);
        }
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": self.object.metadata.resource_version,
        }});
        let action = if present {
            "add_finalizer"
        } else {
            "remove_finalizer"
        };
        self.patch(action, patch, false).await
    }

    fn message(&self) -> Message {
        Message {
            user_agent: CRR_USER_AGENT.into(),
            key: format!("{}/{}", self.view.namespace, self.view.name),
        }
    }

    async fn release_pod(&self, pod: Option<&Pod>) -> Result<(), ReconcileError> {
        if let Some(pod) = pod
            && pod.metadata.deletion_timestamp.is_none()
            && podreadiness::has_gate(pod)
        {
            let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.view.namespace);
            let result =
                podreadiness::set_not_ready(&pods, &self.view.pod_name, &self.message(), false)
                    .await;
            self.ctx
                .metrics
                .write(CONTROLLER, "release_pod_not_ready", &result);
            result?;
        }
        self.set_finalizer(false).await?;
        Ok(())
    }

    async fn acquire_pod(&self, pod: &Pod) -> Result<(), ReconcileError> {
        // Finalizer first, then the pod condition, then the record (kruise's order): a
        // crash in between never leaves a pod not-ready without a finalizer to undo it.
        if podreadiness::has_gate(pod) {
            if !self.set_finalizer(true).await? {
                return Ok(());
            }
            let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.view.namespace);
            let result =
                podreadiness::set_not_ready(&pods, &self.view.pod_name, &self.message(), true)
                    .await;
            self.ctx
                .metrics
                .write(CONTROLLER, "acquire_pod_not_ready", &result);
            result?;
        } else {
            info!(crr = %self.key(), "pod has no KruisePodReady readiness gate: only recording the unready time");
        }
        let now = Timestamp::now();
        let patch = match self.ctx.versions.container_recreate_request {
            KruiseVersion::V1beta1 => {
                let mut conditions: Vec<Value> = self.object.data["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                conditions.retain(|c| c["type"] != PRE_RECREATE_GRACE_CONDITION);
                conditions.push(json!({
                    "type": PRE_RECREATE_GRACE_CONDITION,
                    "status": "True",
                    "reason": PRE_RECREATE_GRACE_CONDITION,
                    "message": "",
                    "lastTransitionTime": Time(now),
                }));
                (json!({"status": {"conditions": conditions}}), true)
            }
            KruiseVersion::V1alpha1 => (
                json!({"metadata": {"annotations": {CRR_UNREADY_ACQUIRED_ANNOTATION: Time(now)}}}),
                false,
            ),
        };
        if self
            .patch("record_unready_acquired", patch.0, patch.1)
            .await?
        {
            self.ctx
                .event(
                    &self.reference(),
                    EventType::Normal,
                    "PodNotReady",
                    "Pod marked not ready for the unready grace period",
                )
                .await;
        }
        Ok(())
    }

    /// Writes the snapshot if it changed; `true` when it wrote (the object moved on).
    async fn sync_snapshot(&self, pod: &Pod) -> Result<bool, ReconcileError> {
        let snapshot = snapshot(&self.view, pod);
        match self.ctx.versions.container_recreate_request {
            KruiseVersion::V1beta1 => {
                // master keeps the previous snapshot when there is nothing new.
                if snapshot.is_empty() || snapshot == self.view.container_status_snapshot {
                    return Ok(false);
                }
                self.patch(
                    "sync_snapshot",
                    json!({"status": {"containerStatusSnapshot": snapshot}}),
                    true,
                )
                .await
            }
            KruiseVersion::V1alpha1 => {
                let text = serde_json::to_string(&snapshot).unwrap_or_else(|_| "[]".into());
                let current = self
                    .object
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CRR_SYNC_CONTAINER_STATUSES_ANNOTATION));
                if current == Some(&text) {
                    return Ok(false);
                }
                self.patch(
                    "sync_snapshot",
                    json!({"metadata": {"annotations": {CRR_SYNC_CONTAINER_STATUSES_ANNOTATION: text}}}),
                    false,
                )
                .await
            }
        }
    }
}

/// Reconciles one ContainerRecreateRequest.
pub async fn reconcile(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let resource = ctx.crr_resource();
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let key = format!(
        "crr/{namespace}/{}",
        object.metadata.name.as_deref().unwrap_or_default()
    );
    if !ctx
        .expectations
        .satisfied(&key, object.metadata.resource_version.as_deref())
    {
        return Ok(Action::requeue(Duration::from_millis(300)));
    }
    let version = ctx.versions.container_recreate_request;
    let view = match decode(&object, version) {
        Ok(view) => view,
        Err(error) => {
            warn!(crr = %key, %error, "ContainerRecreateRequest does not decode");
            ctx.event(
                &reference(&object, &resource),
                EventType::Warning,
                "InvalidContainerRecreateRequest",
                &format!("cannot decode: {error}"),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let pod = ctx
        .stores
        .pods
        .get(&ObjectRef::new(&view.pod_name).within(&namespace));
    let crr = Crr {
        api: Api::namespaced_with(ctx.client.clone(), &namespace, &resource),
        ctx: &ctx,
        object: &object,
        view,
    };
    let view = &crr.view;
    let now = Timestamp::now();
    let has_finalizer = object
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == CRR_UNREADY_ACQUIRED_FINALIZER);

    if view.deleting || view.is_completed() {
        if has_finalizer {
            crr.release_pod(pod.as_deref()).await?;
            return Ok(Action::requeue(Duration::from_millis(300)));
        }
        if view.deleting {
            ctx.expectations.forget(&key);
            return Ok(Action::await_change());
        }
        if view.labels.contains_key(CRR_ACTIVE_LABEL) {
            crr.patch(
                "remove_active_label",
                json!({"metadata": {"labels": {CRR_ACTIVE_LABEL: null}}}),
                false,
            )
            .await?;
            return Ok(Action::requeue(Duration::from_millis(300)));
        }
        let ttl = object.data["spec"]["ttlSecondsAfterFinished"].as_u64();
        let Some(ttl) = ttl else {
            return Ok(Action::await_change());
        };
        if let Some(left) = left(Duration::from_secs(ttl), view.completion_time, now) {
            return Ok(Action::requeue(left));
        }
        let result = crr.api.delete(&view.name, &DeleteParams::default()).await;
        ctx.metrics.write(CONTROLLER, "delete_crr_ttl", &result);
        return match result {
            Ok(_) => {
                info!(crr = %key, "deleted ContainerRecreateRequest: ttlSecondsAfterFinished passed");
                Ok(Action::await_change())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
            Err(error) => Err(error.into()),
        };
    }

    // Admission (kruise's mutating webhook), for CRRs created as plain objects.
    let raw = serde_json::to_value(&*object).unwrap_or_default();
    if crr_admission::needs_admission(&raw) {
        let node_is_virtual = pod
            .as_ref()
            .and_then(|p| p.spec.as_ref()?.node_name.clone())
            .and_then(|n| ctx.stores.nodes.get(&ObjectRef::new(&n)))
            .is_some_and(|n| super::nodeimage::is_virtual_kubelet(n.metadata.labels.as_ref()));
        return match crr_admission::admit(&raw, pod.as_deref(), node_is_virtual) {
            Ok(admitted) => {
                let admitted: DynamicObject =
                    serde_json::from_value(admitted).map_err(kube::Error::SerdeError)?;
                let result = crr
                    .api
                    .replace(&view.name, &PostParams::default(), &admitted)
                    .await;
                ctx.metrics.write(CONTROLLER, "admit_crr", &result);
                match result {
                    Ok(written) => {
                        ctx.expectations
                            .expect(&key, written.metadata.resource_version.as_deref());
                        info!(crr = %key, pod = %view.pod_name, "admitted ContainerRecreateRequest");
                        ctx.event(
                            &crr.reference(),
                            EventType::Normal,
                            "Admitted",
                            &format!(
                                "Admitted for pod {}: labels, statusContext and defaults set",
                                view.pod_name
                            ),
                        )
                        .await;
                        Ok(Action::requeue(Duration::from_millis(300)))
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                        Ok(Action::requeue(Duration::from_millis(300)))
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Err(reason) => {
                warn!(crr = %key, %reason, "rejected ContainerRecreateRequest");
                crr.complete(&format!("invalid ContainerRecreateRequest: {reason}"), None)
                    .await
            }
        };
    }

    // Spec immutability (kruise's webhook rejects spec updates): record, or revert.
    match crr_admission::guard_spec(&raw) {
        crr_admission::SpecGuard::Intact => {}
        crr_admission::SpecGuard::Record(text) => {
            crr.patch(
                "record_admitted_spec",
                json!({"metadata": {
                    "annotations": {crr_admission::ADMITTED_SPEC_ANNOTATION: text},
                    "resourceVersion": object.metadata.resource_version,
                }}),
                false,
            )
            .await?;
            return Ok(Action::requeue(Duration::from_millis(300)));
        }
        crr_admission::SpecGuard::Revert(admitted) => {
            let mut restored = (*object).clone();
            restored.data["spec"] = admitted;
            let result = crr
                .api
                .replace(&view.name, &PostParams::default(), &restored)
                .await;
            ctx.metrics.write(CONTROLLER, "revert_crr_spec", &result);
            return match result {
                Ok(written) => {
                    ctx.expectations
                        .expect(&key, written.metadata.resource_version.as_deref());
                    warn!(crr = %key, "reverted a change of an admitted ContainerRecreateRequest's spec");
                    ctx.event(
                        &crr.reference(),
                        EventType::Warning,
                        "SpecImmutable",
                        "the spec of a ContainerRecreateRequest is immutable after admission; the change was reverted",
                    )
                    .await;
                    Ok(Action::requeue(Duration::from_millis(300)))
                }
                Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                    Ok(Action::requeue(Duration::from_millis(300)))
                }
                Err(error) => Err(error.into()),
            };
        }
    }

    let pod_uid = view
        .labels
        .get(CRR_POD_UID_LABEL)
        .cloned()
        .unwrap_or_default();
    let Some(pod) = pod.filter(|p| {
        p.metadata.deletion_timestamp.is_none()
            && p.metadata.uid.as_deref() == Some(pod_uid.as_str())
    }) else {
        return crr.complete(POD_GONE, None).await;
    };

    let mut next: Option<Duration> = None;
    if view.phase.is_empty() {
        match left(
            ctx.settings.crr_response_timeout,
            view.creation_timestamp,
            now,
        ) {
            None => return crr.complete(NOT_RESPONDED, None).await,
            Some(left) => next = Some(left),
        }
    }
    if let Some(deadline) = view.active_deadline_seconds {
        let deadline = Duration::from_secs(u64::try_from(deadline).unwrap_or(0));
        match left(deadline, view.creation_timestamp, now) {
            None => {
                return crr
                    .complete(PAST_DEADLINE, Some(deadline_states(view)))
                    .await;
            }
            Some(left) => next = Some(next.map_or(left, |n| n.min(left))),
        }
    }
    if view.phase() != Some(ContainerRecreateRequestPhase::Recreating) {
        return Ok(next.map_or_else(Action::await_change, Action::requeue));
    }
    if crr.sync_snapshot(&pod).await? {
        // The next round works from the written copy.
        return Ok(Action::requeue(Duration::from_millis(300)));
    }
    if view.strategy.unready_grace_period_seconds.is_some()
        && view.unready_acquisition == UnreadyAcquisition::NotAcquired
    {
        crr.acquire_pod(&pod).await?;
    }
    let resync = next.map_or(RECREATING_RESYNC, |n| n.min(RECREATING_RESYNC));
    Ok(Action::requeue(resync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> CrrView {
        let crr: v1beta1::ContainerRecreateRequest = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1beta1", "kind": "ContainerRecreateRequest",
            "metadata": {"name": "r", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:10Z"},
            "spec": {"podName": "p", "containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
            "status": {"phase": "Recreating", "containerRecreateStates": [
                {"name": "a", "phase": "Succeeded"},
                {"name": "b", "phase": "Recreating", "isKilled": true}
            ]}
        }))
        .unwrap();
        CrrView::from_v1beta1(&crr)
    }

    #[test]
    fn past_the_deadline_unfinished_containers_fail_with_the_reason() {
        let states = deadline_states(&view());
        assert_eq!(states[0].phase, ContainerRecreateRequestPhase::Succeeded);
        assert_eq!(states[1].phase, ContainerRecreateRequestPhase::Failed);
        assert_eq!(states[1].message, PAST_DEADLINE);
        assert!(states[1].is_killed);
        assert_eq!(states[2].phase, ContainerRecreateRequestPhase::Failed);
    }

    #[test]
    fn the_snapshot_holds_running_containers_started_since_the_request() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "image": "", "imageID": "",
                 "containerID": "containerd://new", "state": {"running": {"startedAt": "2026-01-01T00:00:20Z"}}},
                {"name": "b", "ready": true, "restartCount": 0, "image": "", "imageID": "",
                 "containerID": "containerd://old", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}},
                {"name": "c", "ready": false, "restartCount": 0, "image": "", "imageID": "",
                 "containerID": "containerd://dead", "state": {"terminated": {"exitCode": 0}}},
                {"name": "other", "ready": true, "restartCount": 0, "image": "", "imageID": "",
                 "containerID": "containerd://x", "state": {"running": {"startedAt": "2026-01-01T00:00:20Z"}}}
            ]}
        }))
        .unwrap();
        let snapshot = snapshot(&view(), &pod);
        assert_eq!(
            snapshot,
            vec![ContainerRecreateRequestSyncContainerStatus {
                name: "a".into(),
                ready: true,
                restart_count: 1,
                container_id: Some("containerd://new".into()),
            }]
        );
    }

    #[test]
    fn timers_count_from_the_given_instant() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let created = Some("2026-01-01T00:00:30Z".parse().unwrap());
        assert_eq!(
            left(Duration::from_secs(60), created, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(left(Duration::from_secs(30), created, now), None);
    }
}
