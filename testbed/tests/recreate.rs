//! The CRR controller (§4.4) in-process against the test bed's API server, the kubelet
//! stand-in and real containerd, with the stand-in manager of `support::recreate_harness`:
//! the basic life of a CRR. Policies, hooks, bad input and crash safety have their own
//! suites (`recreate_*.rs`).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Event, ExecAction, Lifecycle, LifecycleHandler};
use kruised::apiversions::KruiseVersion;
use kruised::recreate::controller::EVENT_COMPONENT;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use support::recreate_harness::{
    Bed, DEADLINE, NO_SNAPSHOT_LABEL, phase, poll, running, shell_container, states, status_of,
    unique,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_is_recreated_once_and_the_crr_completes() {
    let bed = Bed::start().await;
    let pod = bed.running_pod(&unique("one"), &["app"]).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    let before = status_of(&pod, "app").clone();

    let created = Instant::now();
    let crr = bed.create_crr(&pod, &["app"], json!({}), &[]).await;
    let crr_name = crr.metadata.name.clone().unwrap();

    // Poll tightly to time the controller: the kill is visible as `isKilled` in the states.
    let killed_after = poll(
        DEADLINE,
        Duration::from_millis(10),
        "the container to be killed",
        || async {
            let crr = bed.crrs.get(&crr_name).await.ok()?;
            states(&crr)
                .iter()
                .any(|state| state["isKilled"] == json!(true))
                .then(|| created.elapsed())
        },
    )
    .await;
    let crr = bed.completed(&crr_name).await;
    let completed_after = created.elapsed();
    println!("CRR create → container killed: {killed_after:?}; → Completed: {completed_after:?}");

    assert!(crr.data["status"]["completionTime"].is_string(), "{crr:?}");
    assert_eq!(crr.data["status"]["message"].as_str().unwrap_or(""), "");
    assert_eq!(
        states(&crr),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );

    let pod = bed.pods.get(&pod_name).await.unwrap();
    let after = status_of(&pod, "app");
    assert_eq!(after.restart_count, before.restart_count + 1);
    assert_ne!(after.container_id, before.container_id);
    assert!(running(after));

    let killing = bed.killing_events(&pod_uid).await;
    assert_eq!(killing.len(), 1, "{killing:?}");
    let event = &killing[0];
    assert_eq!(event.count, Some(1));
    assert_eq!(
        event.involved_object.field_path.as_deref(),
        Some("spec.containers{app}")
    );
    assert_eq!(
        event.message.as_deref(),
        Some(format!("Stopping container app by ContainerRecreateRequest {crr_name}").as_str())
    );
    assert_eq!(
        event.source.as_ref().and_then(|s| s.component.as_deref()),
        Some(EVENT_COMPONENT)
    );

    // The metrics saw one container and one CRR succeed, one kill and its restart timed.
    let text = bed.metrics.encode();
    for line in [
        "kruised_container_recreates_total{result=\"succeeded\"} 1",
        "kruised_crr_completions_total{result=\"succeeded\"} 1",
        "kruised_crr_creation_to_kill_seconds_count 1",
        "kruised_crr_kill_to_running_seconds_count 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    poll(
        DEADLINE,
        Duration::from_millis(50),
        "no CRR in flight",
        || async {
            let text = bed.metrics.encode();
            ["Pending", "Recreating", "Unset"]
                .iter()
                .all(|phase| {
                    text.contains(&format!("kruised_crrs_in_flight{{phase=\"{phase}\"}} 0"))
                })
                .then_some(())
        },
    )
    .await;
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordered_containers_are_recreated_one_after_the_other() {
    let bed = Bed::start().await;
    let pod = bed
        .running_pod(&unique("ordered"), &["first", "second"])
        .await;
    let pod_name = pod.metadata.name.clone().unwrap();
    // minStartedSeconds holds `first` in Recreating for 2 s after its restart, so a
    // `second` killed before `first` succeeded would show in the times.
    let crr = bed
        .create_crr(
            &pod,
            &["first", "second"],
            json!({"orderedRecreate": true, "minStartedSeconds": 2}),
            &[],
        )
        .await;
    let crr = bed.completed(crr.metadata.name.as_deref().unwrap()).await;
    assert_eq!(
        states(&crr),
        vec![
            json!({"name": "first", "phase": "Succeeded", "isKilled": true}),
            json!({"name": "second", "phase": "Succeeded", "isKilled": true}),
        ]
    );

    let pod = bed.pods.get(&pod_name).await.unwrap();
    let first = status_of(&pod, "first");
    let second = status_of(&pod, "second");
    assert_eq!(first.restart_count, 1);
    assert_eq!(second.restart_count, 1);
    let first_started = first
        .state
        .as_ref()
        .and_then(|state| state.running.as_ref())
        .and_then(|running| running.started_at.clone())
        .unwrap()
        .0;
    let second_stopped = second
        .last_state
        .as_ref()
        .and_then(|state| state.terminated.as_ref())
        .and_then(|terminated| terminated.finished_at.clone())
        .unwrap()
        .0;
    // Second precision: the 2 s of minStartedSeconds leave at least 1 s between them.
    assert!(
        second_stopped.duration_since(first_started).as_secs() >= 1,
        "second stopped at {second_stopped}, first restarted at {first_started}"
    );
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_container_waits_with_a_precise_message_and_nothing_is_stopped() {
    let bed = Bed::start().await;
    let pod = bed.running_pod(&unique("unknown"), &["app"]).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let crr = bed.create_crr(&pod, &["nope"], json!({}), &[]).await;
    let crr = bed
        .crr_until(
            crr.metadata.name.as_deref().unwrap(),
            "a state for the unknown container",
            |crr| phase(crr) == "Recreating" && !states(crr).is_empty(),
        )
        .await;
    assert_eq!(
        states(&crr),
        vec![json!({"name": "nope", "phase": "Pending", "message": "not found container on Node"})]
    );
    let pod = bed.pods.get(&pod_name).await.unwrap();
    assert_eq!(status_of(&pod, "app").restart_count, 0);
    assert!(
        bed.killing_events(pod.metadata.uid.as_deref().unwrap())
            .await
            .is_empty()
    );
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_crr_of_the_pod_waits_pending_then_completes_without_a_second_kill() {
    let bed = Bed::start().await;
    let pod = bed.running_pod(&unique("queued"), &["app"]).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    // The first is held in Recreating (no snapshot) until the second is seen Pending.
    let first = bed
        .create_crr(&pod, &["app"], json!({}), &[(NO_SNAPSHOT_LABEL, "true")])
        .await;
    let first_name = first.metadata.name.clone().unwrap();
    bed.crr_until(&first_name, "Recreating", |crr| phase(crr) == "Recreating")
        .await;
    let second = bed.create_crr(&pod, &["app"], json!({}), &[]).await;
    let second_name = second.metadata.name.clone().unwrap();

    bed.crr_until(&first_name, "the container killed", |crr| {
        phase(crr) == "Recreating"
            && states(crr)
                .iter()
                .any(|state| state["isKilled"] == json!(true))
    })
    .await;
    let waiting = bed
        .crr_until(&second_name, "Pending", |crr| phase(crr) == "Pending")
        .await;
    assert!(states(&waiting).is_empty(), "{waiting:?}");

    bed.crrs
        .patch(
            &first_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {NO_SNAPSHOT_LABEL: null}}})),
        )
        .await
        .unwrap();
    let first = bed.completed(&first_name).await;
    let second = bed.completed(&second_name).await;
    assert!(
        first.data["status"]["completionTime"].as_str()
            <= second.data["status"]["completionTime"].as_str()
    );
    assert_eq!(
        states(&first),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    // Its statusContext names the container the first CRR replaced: already recreated
    // (§4.4 step 5.4), so it succeeds without stopping the new one. `isKilled` is set by
    // the action pass for a Recreating container whether or not this CRR stopped it.
    assert_eq!(
        states(&second),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    let pod = bed.pods.get(&pod_name).await.unwrap();
    assert_eq!(status_of(&pod, "app").restart_count, 1);
    assert_eq!(
        bed.killing_events(pod.metadata.uid.as_deref().unwrap())
            .await
            .len(),
        1
    );
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_deleted_mid_recreate_is_left_alone_and_its_replacement_is_not_touched() {
    let bed = Bed::start().await;
    let name = unique("replaced");
    let old_pod = bed.running_pod(&name, &["app"]).await;
    let old_uid = old_pod.metadata.uid.clone().unwrap();
    // No snapshot: once the container is stopped the CRR stays Recreating.
    let stale = bed
        .create_crr(
            &old_pod,
            &["app"],
            json!({}),
            &[(NO_SNAPSHOT_LABEL, "true")],
        )
        .await;
    let stale_name = stale.metadata.name.clone().unwrap();
    let stale = bed
        .crr_until(&stale_name, "the container killed", |crr| {
            states(crr)
                .iter()
                .any(|state| state["isKilled"] == json!(true))
        })
        .await;

    bed.delete_pod_and_wait(&name, &old_uid).await;
    let new_pod = bed.running_pod(&name, &["app"]).await;
    let new_uid = new_pod.metadata.uid.clone().unwrap();
    assert_ne!(new_uid, old_uid);

    // A CRR of the new pod is served even though the stale one is Recreating and would be
    // picked first if the pod's identity were not checked.
    let fresh = bed.create_crr(&new_pod, &["app"], json!({}), &[]).await;
    let fresh = bed.completed(fresh.metadata.name.as_deref().unwrap()).await;
    assert_eq!(
        states(&fresh),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );

    let stale_now = bed.crrs.get(&stale_name).await.unwrap();
    assert_eq!(phase(&stale_now), "Recreating");
    assert_eq!(states(&stale_now), states(&stale));
    let new_pod = bed.pods.get(&name).await.unwrap();
    assert_eq!(status_of(&new_pod, "app").restart_count, 1);
    assert_eq!(bed.killing_events(&new_uid).await.len(), 1);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_stopped_after_the_active_deadline() {
    let bed = Bed::start().await;
    let pod = bed
        .running_pod(&unique("deadline"), &["first", "second"])
        .await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    // `first` may succeed only 5 s after its restart, when the 3 s deadline has passed:
    // `second` must never be stopped. Completion is the manager's (§4.3 step 4).
    let crr = bed
        .create_crr_with_deadline(
            &pod,
            &["first", "second"],
            json!({"orderedRecreate": true, "minStartedSeconds": 5}),
            &[],
            3,
        )
        .await;
    let crr_name = crr.metadata.name.clone().unwrap();
    bed.crr_until(&crr_name, "first killed", |crr| {
        states(crr)
            .first()
            .is_some_and(|state| state["isKilled"] == json!(true))
    })
    .await;
    // Past the point where `first` would have succeeded and `second` been stopped.
    poll(
        DEADLINE,
        Duration::from_millis(200),
        "first to run for 8 s",
        || async {
            let pod = bed.pods.get(&pod_name).await.ok()?;
            let started = status_of(&pod, "first")
                .state
                .as_ref()?
                .running
                .as_ref()?
                .started_at
                .clone()?
                .0;
            (k8s_openapi::jiff::Timestamp::now()
                .duration_since(started)
                .as_secs()
                >= 8)
                .then_some(())
        },
    )
    .await;
    let crr = bed.crrs.get(&crr_name).await.unwrap();
    assert_eq!(phase(&crr), "Recreating");
    assert_eq!(
        states(&crr)[1],
        json!({"name": "second", "phase": "Pending"}),
        "{crr:?}"
    );
    let pod = bed.pods.get(&pod_name).await.unwrap();
    assert_eq!(status_of(&pod, "second").restart_count, 0);
    assert_eq!(bed.killing_events(&pod_uid).await.len(), 1);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v1alpha1_controller_reads_the_snapshot_annotation_and_completes() {
    // A 1.9-style daemon against a master manager: the conversion webhook turns the
    // manager's status.containerStatusSnapshot into the sync-container-statuses annotation.
    let bed = Bed::start_with(KruiseVersion::V1alpha1).await;
    let pod = bed.running_pod(&unique("alpha"), &["app"]).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let crr = bed.create_crr(&pod, &["app"], json!({}), &[]).await;
    let crr = bed.completed(crr.metadata.name.as_deref().unwrap()).await;
    assert!(crr.data["status"]["completionTime"].is_string(), "{crr:?}");
    assert_eq!(
        states(&crr),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    let pod = bed.pods.get(&pod_name).await.unwrap();
    assert_eq!(status_of(&pod, "app").restart_count, 1);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_pre_stop_hook_is_reported_and_the_container_still_recreated() {
    let bed = Bed::start().await;
    let name = unique("prestop");
    let app = Container {
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "echo no; exit 3".into(),
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..shell_container("app")
    };
    let pod = bed.running_pod_of(&name, vec![app]).await;
    let pod_uid = pod.metadata.uid.clone().unwrap();
    let crr = bed.create_crr(&pod, &["app"], json!({}), &[]).await;
    let crr = bed.completed(crr.metadata.name.as_deref().unwrap()).await;
    assert_eq!(
        states(&crr),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    let pod = bed.pods.get(&name).await.unwrap();
    assert_eq!(status_of(&pod, "app").restart_count, 1);

    let events = bed.events.list(&ListParams::default()).await.unwrap().items;
    let failed: Vec<&Event> = events
        .iter()
        .filter(|event| {
            event.involved_object.uid.as_deref() == Some(pod_uid.as_str())
                && event.reason.as_deref() == Some("FailedPreStopHook")
        })
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].type_.as_deref(), Some("Warning"));
    assert_eq!(
        failed[0].involved_object.field_path.as_deref(),
        Some("spec.containers{app}")
    );
    let message = failed[0].message.as_deref().unwrap_or_default();
    assert!(
        message.starts_with(
            "Exec lifecycle hook ([/bin/sh -c echo no; exit 3]) for Container \"app\""
        ),
        "{message}"
    );
    bed.finish().await;
}
