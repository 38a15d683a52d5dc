//! CRRs that cannot be carried out (§4.4 steps 4 and 5.1, issue 5 "bad input"): each gets
//! a precise message in its status and a Warning event, nothing is stopped, the agent keeps
//! running and a well-formed CRR of another pod, created at the same time, completes.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kruised::api::{CRR_ACTIVE_LABEL, CRR_NODE_NAME_LABEL, CRR_POD_UID_LABEL};
use kruised::apiversions::KruiseVersion;
use kube::api::ListParams;
use kube::core::DynamicObject;
use serde_json::{Value, json};
use support::recreate_harness::{
    Bed, BedOptions, Controller, CrrContainer, ManagerVersion, NO_UNREADY_LABEL,
    UNREADY_ACQUIRED_ANNOTATION, eventually, message, phase, shell_container, states, status_of,
    unique,
};

/// The reason of the Warning event on a CRR the agent gives up on.
const FAILED_RECREATE: &str = "FailedRecreate";

/// The Warning events on the CRR.
async fn crr_warnings(bed: &Bed, crr: &DynamicObject) -> Vec<Event> {
    bed.events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.involved_object.uid == crr.metadata.uid)
        .collect()
}

/// Waits until the CRR completed with `expected` as its message and one Warning event
/// saying the same, and checks that nothing of its pod was stopped.
async fn assert_completed_with(bed: &Bed, crr: &DynamicObject, pods: &[&Pod], expected: &str) {
    let name = crr.metadata.name.as_deref().unwrap();
    let crr = bed.completed(name).await;
    assert_eq!(message(&crr), expected, "{name}");
    assert!(crr.data["status"]["completionTime"].is_string());
    assert!(states(&crr).is_empty(), "{crr:?}");
    // Recorded right after the status write.
    let warnings = eventually(&format!("the Warning event of {name}"), || async {
        let warnings = crr_warnings(bed, &crr).await;
        (!warnings.is_empty()).then_some(warnings)
    })
    .await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = &warnings[0];
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(warning.reason.as_deref(), Some(FAILED_RECREATE));
    assert_eq!(warning.message.as_deref(), Some(expected));
    assert_eq!(
        warning.involved_object.kind.as_deref(),
        Some("ContainerRecreateRequest")
    );
    for pod in pods {
        let uid = pod.metadata.uid.as_deref().unwrap();
        assert!(bed.killing_events(uid).await.is_empty(), "{name}");
        let Ok(now) = bed.pods.get(pod.metadata.name.as_deref().unwrap()).await else {
            continue;
        };
        for container in pod.spec.as_ref().unwrap().containers.iter() {
            if let Some(status) = now
                .status
                .as_ref()
                .and_then(|status| status.container_statuses.as_ref())
                .and_then(|statuses| statuses.iter().find(|s| s.name == container.name))
            {
                assert_eq!(status.restart_count, 0, "{name}");
            }
        }
    }
}

fn with_id(name: &str, container_id: &str) -> CrrContainer {
    CrrContainer {
        name: name.into(),
        container_id: Some(container_id.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_no_runtime_can_serve_complete_with_kruises_message_while_another_pod_is_recreated()
 {
    let bed = Bed::start().await;
    let names: Vec<String> = ["good", "unknown-runtime", "mixed", "empty", "malformed"]
        .into_iter()
        .map(unique)
        .collect();
    let (good, unknown, mixed, empty, malformed) = tokio::join!(
        bed.running_pod(&names[0], &["app"]),
        bed.running_pod(&names[1], &["app"]),
        bed.running_pod(&names[2], &["app", "side"]),
        bed.running_pod(&names[3], &["app"]),
        bed.running_pod(&names[4], &["app"]),
    );
    let real = status_of(&mixed, "app").container_id.clone().unwrap();
    let unknown_crr = bed
        .create_crr_full(
            &unknown,
            &[with_id("app", "docker://0123456789abcdef")],
            json!({}),
            &[],
            300,
        )
        .await;
    let mixed_crr = bed
        .create_crr_full(
            &mixed,
            &[
                with_id("app", &real),
                with_id("side", "docker://0123456789abcdef"),
            ],
            json!({}),
            &[],
            300,
        )
        .await;
    let empty_crr = bed.create_crr_full(&empty, &[], json!({}), &[], 300).await;
    let malformed_crr = bed
        .create_crr_full(
            &malformed,
            &[with_id("app", "0123456789abcdef")],
            json!({}),
            &[],
            300,
        )
        .await;
    let good_crr = bed.create_crr(&good, &["app"], json!({}), &[]).await;

    assert_completed_with(
        &bed,
        &unknown_crr,
        &[&unknown],
        "failed to find runtime service: not found runtime service for docker in daemon",
    )
    .await;
    assert_completed_with(
        &bed,
        &mixed_crr,
        &[&mixed],
        "failed to find runtime service: has different runtime types containerd, docker in Pod",
    )
    .await;
    assert_completed_with(
        &bed,
        &empty_crr,
        &[&empty],
        "failed to find runtime service: no runtime type found in Pod",
    )
    .await;
    assert_completed_with(
        &bed,
        &malformed_crr,
        &[&malformed],
        "failed to find runtime service: failed to parse containerID 0123456789abcdef in app container: invalid container ID: \"0123456789abcdef\"",
    )
    .await;

    let good_crr = bed
        .completed(good_crr.metadata.name.as_deref().unwrap())
        .await;
    assert_eq!(message(&good_crr), "");
    assert_eq!(
        states(&good_crr),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    assert!(crr_warnings(&bed, &good_crr).await.is_empty());
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_unready_acquisition_time_completes_the_crr_with_kruises_parse_error() {
    // kruise 1.9: the time is an annotation a user can spoil; v1beta1 has a typed condition.
    let bed = Bed::start_opts(BedOptions {
        controller: Controller::InProcess(KruiseVersion::V1alpha1),
        manager: ManagerVersion::V1_9,
    })
    .await;
    let pod = bed.running_pod(&unique("bad-time"), &["app"]).await;
    let crr = bed
        .create_crr(
            &pod,
            &["app"],
            json!({"unreadyGracePeriodSeconds": 3}),
            &[(NO_UNREADY_LABEL, "true")],
        )
        .await;
    let name = crr.metadata.name.clone().unwrap();
    bed.crr_until(&name, "Recreating", |crr| phase(crr) == "Recreating")
        .await;
    bed.crrs
        .patch(
            &name,
            &Default::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {UNREADY_ACQUIRED_ANNOTATION: "yesterday"}}}),
            ),
        )
        .await
        .unwrap();
    assert_completed_with(
        &bed,
        &crr,
        &[&pod],
        "failed to parse unready time yesterday: parsing time \"yesterday\" as \"2006-01-02T15:04:05Z07:00\": cannot parse \"yesterday\" as \"2006\"",
    )
    .await;
    bed.finish().await;
}

/// A CRR for `pod` labelled with `node` (the webhook takes the label from the pod's
/// `spec.nodeName`, so these only come from a hand-made or copied object).
async fn crr_labelled(bed: &Bed, pod: &Pod, node: &str) -> DynamicObject {
    let labels = BTreeMap::from([
        (CRR_NODE_NAME_LABEL.to_string(), node.to_string()),
        (
            CRR_POD_UID_LABEL.to_string(),
            pod.metadata.uid.clone().unwrap(),
        ),
        (CRR_ACTIVE_LABEL.to_string(), "true".to_string()),
    ]);
    let containers = vec![json!({
        "name": "app",
        "statusContext": {"containerID": "containerd://0123456789abcdef", "restartCount": 0},
    })];
    bed.create_crr_object(
        pod.metadata.name.as_deref().unwrap(),
        labels,
        containers,
        json!({}),
        300,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crr_for_a_pod_bound_to_another_node_is_completed_with_where_the_pod_is_and_others_proceed()
 {
    let bed = Bed::start().await;
    // Bound to a node nobody runs: it never starts, but it exists, with this UID.
    let elsewhere = bed
        .create_pod(Pod {
            metadata: ObjectMeta {
                name: Some(unique("elsewhere")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("other-node".into()),
                containers: vec![shell_container("app")],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let here = bed.running_pod(&unique("here"), &["app"]).await;

    let misplaced = crr_labelled(&bed, &elsewhere, &bed.node).await;
    // The other way round: labelled for another node, so another node's agent serves it and
    // this one never sees it.
    let foreign = crr_labelled(&bed, &here, "other-node").await;
    let good = bed.create_crr(&here, &["app"], json!({}), &[]).await;

    assert_completed_with(
        &bed,
        &misplaced,
        &[],
        &format!(
            "pod default/{} is bound to node other-node, not to this node {}",
            elsewhere.metadata.name.as_deref().unwrap(),
            bed.node
        ),
    )
    .await;
    let good = bed.completed(good.metadata.name.as_deref().unwrap()).await;
    assert_eq!(
        states(&good),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    let foreign: DynamicObject = bed
        .crrs
        .get(foreign.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(foreign.data["status"], Value::Null, "{foreign:?}");
    assert!(crr_warnings(&bed, &foreign).await.is_empty());
    bed.finish().await;
}
