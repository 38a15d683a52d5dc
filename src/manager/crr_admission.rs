//! What kruise's ContainerRecreateRequest mutating webhook does on CREATE (§4.2), as a
//! pure function the CRR controller applies to CRRs that users created as plain objects:
//! validation (with the webhook's messages), the `pod-uid`, `node-name` and `active`
//! labels, strategy defaults, and each container's `preStop`, `ports` and
//! `statusContext` copied from the pod.
//!
//! Differences from a webhook: a CRR is admitted after it was stored, so an invalid one is
//! completed with the reason as its message instead of being rejected. Likewise the
//! webhook rejects any later change of the spec; here the controller records the spec as
//! stored right after admission ([`ADMITTED_SPEC_ANNOTATION`]) and reverts later changes
//! ([`guard_spec`]), with a Warning event. An agent may see the changed spec for the
//! moment before the revert; a user who edits or removes the annotation itself is not
//! stopped (the record is taken again from the spec at hand).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::api::{
    CRR_ACTIVE_LABEL, CRR_NODE_NAME_LABEL, CRR_POD_UID_LABEL, VIRTUAL_KUBELET_LABEL,
    VIRTUAL_KUBELET_LABEL_VALUE,
};

/// Label with the pod's name (kruise's webhook sets it too).
pub const CRR_POD_NAME_LABEL: &str = "crr.apps.kruise.io/pod-name";
/// The webhook's minimum `activeDeadlineSeconds`.
pub const MIN_DEADLINE_SECONDS: i64 = 3;

/// Annotation with the spec as stored right after admission (JSON), the reference
/// [`guard_spec`] compares later versions with.
pub const ADMITTED_SPEC_ANNOTATION: &str = "kruised.io/admitted-spec";

/// What to do about an admitted CRR's spec (kruise's webhook: spec immutable on UPDATE).
#[derive(Debug, Clone, PartialEq)]
pub enum SpecGuard {
    /// The spec is the admitted one.
    Intact,
    /// No (readable) record yet: record this text as [`ADMITTED_SPEC_ANNOTATION`].
    Record(String),
    /// The spec was changed after admission: write this admitted spec back.
    Revert(Value),
}

/// Compares an admitted CRR's spec (its JSON) with the recorded one.
pub fn guard_spec(object: &Value) -> SpecGuard {
    let spec = &object["spec"];
    let recorded = object["metadata"]["annotations"][ADMITTED_SPEC_ANNOTATION]
        .as_str()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .filter(Value::is_object);
    match recorded {
        None => SpecGuard::Record(spec.to_string()),
        Some(admitted) if admitted == *spec => SpecGuard::Intact,
        // The record went through text: a float (or an integer too large for 64 bits) may
        // read back one ulp off what was printed, so compare with the spec read back the
        // same way before calling it changed (found by the fuzz target).
        Some(admitted)
            if serde_json::from_str::<Value>(&spec.to_string()).is_ok_and(|s| s == admitted) =>
        {
            SpecGuard::Intact
        }
        Some(admitted) => SpecGuard::Revert(admitted),
    }
}

/// Whether a CRR still needs admission: the webhook always sets the pod-uid label.
pub fn needs_admission(object: &Value) -> bool {
    object["metadata"]["labels"][CRR_POD_UID_LABEL]
        .as_str()
        .is_none_or(str::is_empty)
}

fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Admits a CRR (its JSON, any version: the fields touched are the same): returns the
/// object to write, or the webhook's rejection message. `pod` is the pod named by
/// `spec.podName`, if it exists; `node_is_virtual` whether its node is a virtual kubelet.
pub fn admit(object: &Value, pod: Option<&Pod>, node_is_virtual: bool) -> Result<Value, String> {
    let mut object = object.clone();
    let spec = &object["spec"];
    let pod_name = spec["podName"].as_str().unwrap_or_default().to_owned();
    if pod_name.is_empty() {
        return Err("podName can not be empty".into());
    }
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        return Err("containers list can not be null".into());
    }
    if let Some(deadline) = spec["activeDeadlineSeconds"].as_i64()
        && deadline < MIN_DEADLINE_SECONDS
    {
        return Err(format!(
            "activeDeadlineSeconds can not be less than {MIN_DEADLINE_SECONDS}s"
        ));
    }
    let mut strategy = spec["strategy"].clone();
    if !strategy.is_object() {
        strategy = json!({});
    }
    if strategy["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|v| v < 0)
    {
        return Err("terminationGracePeriodSeconds must be non-negative integer".into());
    }
    if strategy["unreadyGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|v| v < 0)
    {
        return Err("unreadyGracePeriodSeconds must be non-negative integer".into());
    }
    match strategy["failurePolicy"].as_str().unwrap_or_default() {
        "" => strategy["failurePolicy"] = json!("Fail"),
        "Fail" | "Ignore" => {}
        other => return Err(format!("unknown failurePolicy {other}")),
    }
    let Some(pod) = pod else {
        return Err(format!("no found Pod named {pod_name}"));
    };
    if !is_active(pod) {
        return Err("not allowed to recreate containers in an inactive Pod".into());
    }
    let pod_spec = pod.spec.clone().unwrap_or_default();
    let node_name = pod_spec.node_name.clone().unwrap_or_default();
    if node_name.is_empty() {
        return Err("not allowed to recreate containers in a pending Pod".into());
    }
    if strategy["terminationGracePeriodSeconds"].is_null()
        && let Some(grace) = pod_spec.termination_grace_period_seconds
    {
        strategy["terminationGracePeriodSeconds"] = json!(grace);
    }
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let mut seen = BTreeSet::new();
    let mut admitted = Vec::new();
    for container in containers {
        let name = container["name"].as_str().unwrap_or_default().to_owned();
        if !seen.insert(name.clone()) {
            return Err(format!("can not recreate {name} multi times"));
        }
        if !container["preStop"].is_null()
            || !container["ports"].is_null()
            || !container["statusContext"].is_null()
        {
            return Err("preStop, ports, statusContext in container are ready-only fields".into());
        }
        let Some(pod_container) = pod_spec.containers.iter().find(|c| c.name == name) else {
            return Err(format!("container {name} not found in Pod"));
        };
        let Some(status) = statuses.iter().find(|s| s.name == name) else {
            return Err(format!("not found {name} containerStatus in Pod Status"));
        };
        let container_id = status.container_id.clone().unwrap_or_default();
        if container_id.is_empty() {
            return Err(format!(
                "no containerID in {name} containerStatus, maybe the container has not been initialized"
            ));
        }
        let mut entry = container.clone();
        if let Some(pre_stop) = pod_container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
        {
            let mut handler = serde_json::Map::new();
            if let Some(exec) = &pre_stop.exec {
                handler.insert("exec".into(), json!(exec));
            }
            if let Some(http_get) = &pre_stop.http_get {
                handler.insert("httpGet".into(), json!(http_get));
            }
            if let Some(tcp) = &pre_stop.tcp_socket {
                handler.insert("tcpSocket".into(), json!(tcp));
            }
            let http = handler.contains_key("httpGet");
            if !handler.is_empty() {
                entry["preStop"] = Value::Object(handler);
            }
            if http && let Some(ports) = &pod_container.ports {
                entry["ports"] = json!(ports);
            }
        }
        entry["statusContext"] = json!({
            "containerID": container_id,
            "restartCount": status.restart_count,
        });
        admitted.push(entry);
    }
    object["spec"]["strategy"] = strategy;
    object["spec"]["containers"] = Value::Array(admitted);
    // Without the labels the CRR would need admission again; the API server always sends
    // metadata, but a pure function should not depend on it (found by the fuzz target).
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    let labels = object["metadata"]
        .as_object_mut()
        .map(|m| m.entry("labels").or_insert_with(|| json!({})));
    if let Some(labels) = labels {
        if !labels.is_object() {
            *labels = json!({});
        }
        labels[CRR_POD_NAME_LABEL] = json!(pod_name);
        labels[CRR_ACTIVE_LABEL] = json!("true");
        labels[CRR_NODE_NAME_LABEL] = json!(node_name);
        labels[CRR_POD_UID_LABEL] = json!(pod.metadata.uid.clone().unwrap_or_default());
        if node_is_virtual {
            labels[VIRTUAL_KUBELET_LABEL] = json!(VIRTUAL_KUBELET_LABEL_VALUE);
        }
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "pod-uid"},
            "spec": {
                "nodeName": "node-1",
                "terminationGracePeriodSeconds": 7,
                "containers": [
                    {"name": "app", "image": "x", "ports": [{"containerPort": 80}],
                     "lifecycle": {"preStop": {"httpGet": {"path": "/stop", "port": 80}}}},
                    {"name": "side", "image": "y", "ports": [{"containerPort": 90}],
                     "lifecycle": {"preStop": {"exec": {"command": ["sh"]}}}}
                ]
            },
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 2, "image": "x", "imageID": "",
                 "containerID": "containerd://aaa"},
                {"name": "side", "ready": true, "restartCount": 0, "image": "y", "imageID": "",
                 "containerID": "containerd://bbb"}
            ]}
        }))
        .unwrap()
    }

    fn crr(containers: Value) -> Value {
        json!({"metadata": {"name": "r", "namespace": "default"},
               "spec": {"podName": "web", "containers": containers}})
    }

    /// Found by the `crr_admission` fuzz target: a number that is no 64-bit integer reads
    /// back from the recorded text one ulp off, which looked like a changed spec.
    #[test]
    fn a_recorded_spec_with_a_huge_number_stays_intact() {
        let mut object: Value = serde_json::from_str(
            r#"{"metadata": {"name": "r"}, "spec": {"podName": "web", "containers": [{"name": "app"}], "activeidelaDneSeconds": 111111111111111111111111}}"#,
        )
        .unwrap();
        let SpecGuard::Record(text) = guard_spec(&object) else {
            panic!("no record yet");
        };
        object["metadata"]["annotations"] = json!({ADMITTED_SPEC_ANNOTATION: text});
        assert_eq!(guard_spec(&object), SpecGuard::Intact);
        object["spec"]["podName"] = json!("other");
        assert!(matches!(guard_spec(&object), SpecGuard::Revert(_)));
    }

    /// Found by the `crr_admission` fuzz target: a CRR without `metadata` was admitted
    /// without labels, so it still needed admission.
    #[test]
    fn a_crr_without_metadata_is_admitted_with_labels() {
        let object = json!({"spec": {"podName": "web", "containers": [{"name": "app"}]}});
        let admitted = admit(&object, Some(&pod()), false).unwrap();
        assert!(!needs_admission(&admitted));
        assert_eq!(admitted["metadata"]["labels"][CRR_POD_UID_LABEL], "pod-uid");
    }

    #[test]
    fn a_plain_crr_gets_what_the_webhook_injects() {
        let admitted = admit(
            &crr(json!([{"name": "app"}, {"name": "side"}])),
            Some(&pod()),
            false,
        )
        .unwrap();
        let labels = &admitted["metadata"]["labels"];
        assert_eq!(labels[CRR_POD_UID_LABEL], "pod-uid");
        assert_eq!(labels[CRR_NODE_NAME_LABEL], "node-1");
        assert_eq!(labels[CRR_ACTIVE_LABEL], "true");
        assert!(labels.get(VIRTUAL_KUBELET_LABEL).is_none());
        let spec = &admitted["spec"];
        assert_eq!(
            spec["strategy"],
            json!({"failurePolicy": "Fail", "terminationGracePeriodSeconds": 7})
        );
        assert_eq!(
            spec["containers"][0]["statusContext"],
            json!({"containerID": "containerd://aaa", "restartCount": 2})
        );
        assert_eq!(spec["containers"][0]["preStop"]["httpGet"]["path"], "/stop");
        // Ports only come with an HTTP preStop.
        assert_eq!(spec["containers"][0]["ports"][0]["containerPort"], 80);
        assert!(spec["containers"][1]["ports"].is_null());
        assert_eq!(spec["containers"][1]["preStop"]["exec"]["command"][0], "sh");
        assert!(!needs_admission(&admitted));
        assert!(needs_admission(&crr(json!([]))));
    }

    #[test]
    fn invalid_crrs_get_the_webhooks_messages() {
        let mut pending = pod();
        pending.spec.as_mut().unwrap().node_name = None;
        let mut finished = pod();
        finished.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut uninitialised = pod();
        uninitialised
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .container_id = None;
        let cases: Vec<(Value, Option<Pod>, &str)> = vec![
            (
                crr(json!([{"name": "app"}])),
                None,
                "no found Pod named web",
            ),
            (
                crr(json!([{"name": "nope"}])),
                Some(pod()),
                "container nope not found in Pod",
            ),
            (
                crr(json!([{"name": "app"}, {"name": "app"}])),
                Some(pod()),
                "can not recreate app multi times",
            ),
            (
                crr(json!([{"name": "app"}])),
                Some(pending),
                "not allowed to recreate containers in a pending Pod",
            ),
            (
                crr(json!([{"name": "app"}])),
                Some(finished),
                "not allowed to recreate containers in an inactive Pod",
            ),
            (
                crr(json!([])),
                Some(pod()),
                "containers list can not be null",
            ),
            (
                crr(
                    json!([{"name": "app", "statusContext": {"containerID": "x", "restartCount": 0}}]),
                ),
                Some(pod()),
                "preStop, ports, statusContext in container are ready-only fields",
            ),
            (
                crr(json!([{"name": "app"}])),
                Some(uninitialised),
                "no containerID in app containerStatus, maybe the container has not been initialized",
            ),
        ];
        for (object, pod, message) in cases {
            assert_eq!(admit(&object, pod.as_ref(), false).unwrap_err(), message);
        }
        let mut short = crr(json!([{"name": "app"}]));
        short["spec"]["activeDeadlineSeconds"] = json!(2);
        assert_eq!(
            admit(&short, Some(&pod()), false).unwrap_err(),
            "activeDeadlineSeconds can not be less than 3s"
        );
        let mut policy = crr(json!([{"name": "app"}]));
        policy["spec"]["strategy"] = json!({"failurePolicy": "Retry"});
        assert_eq!(
            admit(&policy, Some(&pod()), false).unwrap_err(),
            "unknown failurePolicy Retry"
        );
    }

    #[test]
    fn a_changed_spec_is_reverted_to_the_recorded_one_and_an_unrecorded_one_is_recorded() {
        let admitted = admit(&crr(json!([{"name": "side"}])), Some(&pod()), false).unwrap();
        let SpecGuard::Record(text) = guard_spec(&admitted) else {
            panic!("an admitted CRR without a record gets one");
        };
        let mut recorded = admitted.clone();
        recorded["metadata"]["annotations"] = json!({ADMITTED_SPEC_ANNOTATION: text});
        assert_eq!(guard_spec(&recorded), SpecGuard::Intact);
        let mut changed = recorded.clone();
        changed["spec"]["strategy"]["failurePolicy"] = json!("Ignore");
        assert_eq!(
            guard_spec(&changed),
            SpecGuard::Revert(admitted["spec"].clone())
        );
        let mut garbled = changed.clone();
        garbled["metadata"]["annotations"][ADMITTED_SPEC_ANNOTATION] = json!("not json");
        assert!(matches!(guard_spec(&garbled), SpecGuard::Record(_)));
    }

    #[test]
    fn virtual_kubelet_pods_are_labelled() {
        let admitted = admit(&crr(json!([{"name": "side"}])), Some(&pod()), true).unwrap();
        assert_eq!(
            admitted["metadata"]["labels"][VIRTUAL_KUBELET_LABEL],
            VIRTUAL_KUBELET_LABEL_VALUE
        );
    }
}
