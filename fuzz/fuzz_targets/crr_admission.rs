//! The manager's admission of user-created ContainerRecreateRequests
//! (`src/manager/crr_admission.rs`): `needs_admission`, `admit` and `guard_spec`, on any
//! JSON document (the manager applies them to the raw object, whatever its version).
//!
//! Input: one JSON document, the CRR. It is admitted against a fixed, realistic pod (two
//! containers, one with an HTTP preStop hook), then against the pod in its own
//! `x-fuzz-pod` field when there is one (and that is a Pod).
//!
//! Invariants: an admitted CRR no longer needs admission, carries the pod's labels, has
//! one container per requested one with the pod's `statusContext`, and is rejected if
//! admitted again (its containers now hold read-only fields); a spec recorded by
//! `guard_spec` is then intact, and a changed spec is reverted to the recorded one.
#![no_main]

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Pod;
use kruised::api::{CRR_NODE_NAME_LABEL, CRR_POD_UID_LABEL};
use kruised::manager::crr_admission::{
    ADMITTED_SPEC_ANNOTATION, SpecGuard, admit, guard_spec, needs_admission,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn fixed_pod() -> &'static Pod {
    static POD: OnceLock<Pod> = OnceLock::new();
    POD.get_or_init(|| {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "pod-uid"},
            "spec": {
                "nodeName": "node-1",
                "terminationGracePeriodSeconds": 30,
                "containers": [
                    {"name": "app", "image": "nginx",
                     "ports": [{"containerPort": 80}],
                     "lifecycle": {"preStop": {"httpGet": {"path": "/quit", "port": 80}}}},
                    {"name": "sidecar", "image": "busybox"}
                ]
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": "app", "containerID": "containerd://aaa", "restartCount": 2,
                     "image": "nginx", "imageID": "", "ready": true},
                    {"name": "sidecar", "containerID": "containerd://bbb", "restartCount": 0,
                     "image": "busybox", "imageID": "", "ready": true}
                ]
            }
        }))
        .expect("a valid pod")
    })
}

fn check(object: &Value, pod: &Pod, node_is_virtual: bool) {
    let _ = needs_admission(object);
    let Ok(admitted) = admit(object, Some(pod), node_is_virtual) else {
        return;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if !uid.is_empty() {
        assert!(
            !needs_admission(&admitted),
            "admitted but still needs admission"
        );
        assert_eq!(
            admitted["metadata"]["labels"][CRR_POD_UID_LABEL],
            json!(uid)
        );
    }
    if admitted["metadata"].is_object() {
        assert_eq!(
            admitted["metadata"]["labels"][CRR_NODE_NAME_LABEL],
            json!(pod.spec.as_ref().unwrap().node_name.clone().unwrap())
        );
    }
    let requested = object["spec"]["containers"].as_array().unwrap();
    let containers = admitted["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), requested.len());
    let statuses = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap();
    for container in containers {
        let name = container["name"].as_str().unwrap_or_default();
        let status = statuses.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            container["statusContext"]["containerID"],
            json!(status.container_id.clone().unwrap())
        );
    }
    assert!(
        admit(&admitted, Some(pod), node_is_virtual).is_err(),
        "admitted twice"
    );
    assert!(
        admit(object, None, node_is_virtual).is_err(),
        "admitted without a pod"
    );

    // The spec guard: record, then intact; a change is reverted to the record.
    let SpecGuard::Record(text) = guard_spec(&admitted) else {
        // The admitted object may carry a readable record of its own from the input.
        return;
    };
    let mut recorded = admitted.clone();
    let Some(metadata) = recorded["metadata"].as_object_mut() else {
        return;
    };
    let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations[ADMITTED_SPEC_ANNOTATION] = json!(text);
    assert_eq!(guard_spec(&recorded), SpecGuard::Intact);
    // A change is reverted to the record, as read back from its text.
    let mut changed = recorded.clone();
    let other_pod = format!(
        "{}-x",
        admitted["spec"]["podName"].as_str().unwrap_or_default()
    );
    changed["spec"]["podName"] = json!(other_pod);
    assert_eq!(
        guard_spec(&changed),
        SpecGuard::Revert(serde_json::from_str(&text).unwrap())
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(object) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let virtual_node = data.len() % 2 == 1;
    check(&object, fixed_pod(), virtual_node);
    if let Ok(pod) = serde_json::from_value::<Pod>(object["x-fuzz-pod"].clone())
        && pod.spec.is_some()
        && pod.status.is_some()
    {
        let _ = admit(&object, Some(&pod), virtual_node);
        if pod.metadata.deletion_timestamp.is_none()
            && pod.spec.as_ref().is_some_and(|s| s.node_name.is_some())
            && pod
                .status
                .as_ref()
                .is_some_and(|s| s.container_statuses.is_some())
        {
            check(&object, &pod, virtual_node);
        }
    }
});
