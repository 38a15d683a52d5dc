//! CRR strategies (§4.4 steps 4 and 5) against real containerd, the kubelet stand-in and the
//! stand-in manager: unordered containers, `forceRecreate`, `failurePolicy`, the unready
//! grace period in both API versions, and a pod with `restartPolicy: Never`.

mod support;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, Pod, PodSpec, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kruised::apiversions::KruiseVersion;
use kube::api::DeleteParams;
use kube::core::DynamicObject;
use serde_json::{Value, json};
use support::recreate_harness::{
    Answer, Bed, BedOptions, Controller, HookServer, ManagerVersion, NO_SNAPSHOT_LABEL,
    NO_UNREADY_LABEL, UNREADY_ACQUIRED_ANNOTATION, annotation, container_statuses, eventually,
    is_killed, message, phase, previous_finished_at, running, runtime_id, sh, shell_container,
    states, status_of, unique, unready_acquired_at,
};

/// The CRI state of an exited container.
const CONTAINER_EXITED: i32 = 2;

/// Kills container `name` of the pod through CRI, as a crash would, and waits for the kubelet
/// to have started its replacement.
async fn crash(bed: &Bed, pod: &Pod, name: &str) -> Pod {
    let pod_name = pod.metadata.name.clone().unwrap();
    let before = status_of(pod, name).clone();
    bed.cri
        .stop_container(
            runtime_id(before.container_id.as_deref().unwrap()),
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
    bed.pod_until(&pod_name, "the crashed container replaced", |pod| {
        let now = status_of(pod, name);
        running(now) && now.restart_count == before.restart_count + 1
    })
    .await
}

/// Creates `count` plain CRRs for the pod one after the other, each time waiting until the
/// controller set it Pending. The pod's CRRs are synced one at a time, so once the last is
/// Pending the controller has fully synced the pod at least `count - 1` times, each time
/// deciding about the picked CRR again. Returns their names.
async fn sync_pod_by_queueing(bed: &Bed, pod: &Pod, count: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..count {
        let queued = bed.create_crr(pod, &["app"], json!({}), &[]).await;
        let name = queued.metadata.name.clone().unwrap();
        bed.crr_until(&name, "Pending behind the picked CRR", |crr| {
            phase(crr) == "Pending"
        })
        .await;
        names.push(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unordered_containers_are_all_stopped_without_waiting_and_each_recreated_once() {
    let bed = Bed::start().await;
    let pod = bed
        .running_pod(&unique("unordered"), &["first", "second"])
        .await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    // Without a snapshot `first` cannot succeed: `second` is stopped anyway, on a later sync
    // (one kill per sync), where `orderedRecreate` would wait.
    let crr = bed
        .create_crr(
            &pod,
            &["first", "second"],
            json!({}),
            &[(NO_SNAPSHOT_LABEL, "true")],
        )
        .await;
    let crr_name = crr.metadata.name.clone().unwrap();
    let both = bed
        .crr_until(&crr_name, "both containers killed", |crr| {
            is_killed(crr, "first") && is_killed(crr, "second")
        })
        .await;
    assert_eq!(phase(&both), "Recreating");
    assert!(
        states(&both)
            .iter()
            .all(|state| state["phase"] == "Recreating"),
        "{both:?}"
    );

    bed.patch_labels(&crr_name, json!({ NO_SNAPSHOT_LABEL: null }))
        .await;
    let crr = bed.completed(&crr_name).await;
    assert_eq!(message(&crr), "");
    assert_eq!(
        states(&crr),
        vec![
            json!({"name": "first", "phase": "Succeeded", "isKilled": true}),
            json!({"name": "second", "phase": "Succeeded", "isKilled": true}),
        ]
    );
    let after = bed.pods.get(&pod_name).await.unwrap();
    for name in ["first", "second"] {
        let status = status_of(&after, name);
        assert_eq!(status.restart_count, 1, "{name}");
        assert_ne!(status.container_id, status_of(&pod, name).container_id);
        assert_eq!(bed.kills(&pod_uid, name).await, 1, "{name}");
    }
    bed.finish().await;
}

/// A container that becomes ready only once `/tmp/ready` exists in it.
fn gated_container(name: &str) -> Container {
    Container {
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(sh("test -e /tmp/ready")),
            }),
            period_seconds: Some(1),
            ..Default::default()
        }),
        ..shell_container(name)
    }
}

async fn make_ready(bed: &Bed, pod_name: &str, container_id: &str) {
    let response = bed
        .cri
        .exec_sync(
            runtime_id(container_id),
            sh("touch /tmp/ready"),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(response.exit_code, 0);
    bed.pod_until(pod_name, "app ready", |pod| {
        let status = status_of(pod, "app");
        status.ready && status.container_id.as_deref() == Some(container_id)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_still_starting_replacement_is_stopped_once_with_force_recreate_and_awaited_without() {
    // The webhook copies statusContext from the pod status, which can lag the runtime: the
    // CRR names container X while X has crashed and its replacement Y is still starting
    // (not ready). Without forceRecreate the daemon takes Y for the recreated container and
    // waits for it; with it, Y is stopped (§4.4 step 5.4).
    let bed = Bed::start().await;
    let mut cases = Vec::new();
    for force in [true, false] {
        let pod = bed
            .running_pod_of(&unique("starting"), vec![gated_container("app")])
            .await;
        // Held at the unready gate until Y runs, so Y starts after the CRR's creation (the
        // manager's snapshot leaves out older containers, §4.3 step 5).
        let crr = bed
            .create_crr(
                &pod,
                &["app"],
                json!({"forceRecreate": force, "unreadyGracePeriodSeconds": 0}),
                &[(NO_UNREADY_LABEL, "true")],
            )
            .await;
        let crr_name = crr.metadata.name.clone().unwrap();
        bed.crr_until(&crr_name, "Recreating", |crr| phase(crr) == "Recreating")
            .await;
        let starting = crash(&bed, &pod, "app").await;
        assert!(!status_of(&starting, "app").ready);
        bed.patch_labels(&crr_name, json!({ NO_UNREADY_LABEL: null }))
            .await;
        cases.push((force, pod, starting, crr_name));
    }

    for (force, pod, starting, crr_name) in cases {
        let pod_name = pod.metadata.name.clone().unwrap();
        let pod_uid = pod.metadata.uid.clone().unwrap();
        let starting_id = status_of(&starting, "app").container_id.clone().unwrap();
        if force {
            // Y is stopped while not ready, and its replacement Z comes up.
            bed.crr_until(&crr_name, "the starting container killed", |crr| {
                is_killed(crr, "app")
            })
            .await;
            let replaced = bed
                .pod_until(&pod_name, "the starting container replaced", |pod| {
                    let status = status_of(pod, "app");
                    running(status) && status.restart_count == 2
                })
                .await;
            let replacement = status_of(&replaced, "app").container_id.clone().unwrap();
            assert_ne!(replacement, starting_id);
            make_ready(&bed, &pod_name, &replacement).await;
        } else {
            // Y is left alone: the CRR succeeds once Y is ready.
            let waiting = bed
                .crr_until(&crr_name, "the starting container seen", |crr| {
                    !states(crr).is_empty()
                })
                .await;
            assert_eq!(states(&waiting)[0]["phase"], "Recreating", "{waiting:?}");
            make_ready(&bed, &pod_name, &starting_id).await;
        }
        let crr = bed.completed(&crr_name).await;
        assert_eq!(
            states(&crr),
            vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})],
            "forceRecreate: {force}"
        );
        let after = bed.pods.get(&pod_name).await.unwrap();
        let (restarts, kills) = if force { (2, 1) } else { (1, 0) };
        assert_eq!(
            status_of(&after, "app").restart_count,
            restarts,
            "forceRecreate: {force}"
        );
        assert_eq!(
            bed.kills(&pod_uid, "app").await,
            kills,
            "forceRecreate: {force}"
        );
    }
    bed.finish().await;
}

/// A pod of `victim`, whose preStop hook is an HTTP GET to `hook` (held open), and `other`.
fn victim_and_other(hook: &HookServer) -> Vec<Container> {
    let victim = Container {
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                http_get: Some(HTTPGetAction {
                    host: Some(hook.addr.ip().to_string()),
                    port: IntOrString::Int(i32::from(hook.addr.port())),
                    path: Some("/victim".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..shell_container("victim")
    };
    vec![victim, shell_container("other")]
}

/// Makes stopping `victim` fail deterministically: while its preStop hook is held, the
/// container is removed behind the daemon's back, so `StopContainer` finds nothing (a
/// healthy containerd has no other way to fail a stop).
async fn remove_victim_during_its_hook(bed: &Bed, hook: &HookServer, pod: &Pod) {
    hook.wait_for_hits(1).await;
    let id = status_of(pod, "victim").container_id.clone().unwrap();
    bed.cri
        .stop_container(runtime_id(&id), std::time::Duration::ZERO)
        .await
        .unwrap();
    bed.cri.remove_container(runtime_id(&id)).await.unwrap();
    hook.release();
}

fn assert_stop_failed(state: &Value) {
    assert_eq!(state["name"], "victim");
    assert_eq!(state["phase"], "Failed", "{state}");
    let text = state["message"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("kill container error: rpc error: code = NotFound desc = "),
        "{text}"
    );
    assert!(state["isKilled"].is_null(), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_failure_policy_ignore_a_container_that_cannot_be_stopped_fails_and_the_other_is_recreated()
 {
    let bed = Bed::start().await;
    let hook = HookServer::start("127.0.0.1", Answer::HttpWhenReleased).await;
    let pod = bed
        .running_pod_of(&unique("ignore"), victim_and_other(&hook))
        .await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    let crr = bed
        .create_crr(
            &pod,
            &["victim", "other"],
            json!({"failurePolicy": "Ignore", "terminationGracePeriodSeconds": 30}),
            &[],
        )
        .await;
    remove_victim_during_its_hook(&bed, &hook, &pod).await;

    let crr = bed.completed(crr.metadata.name.as_deref().unwrap()).await;
    assert_eq!(message(&crr), "");
    let states = states(&crr);
    assert_eq!(states.len(), 2);
    assert_stop_failed(&states[0]);
    assert_eq!(
        states[1],
        json!({"name": "other", "phase": "Succeeded", "isKilled": true})
    );
    let after = bed.pods.get(&pod_name).await.unwrap();
    assert_eq!(status_of(&after, "other").restart_count, 1);
    assert_eq!(bed.kills(&pod_uid, "victim").await, 1);
    assert_eq!(bed.kills(&pod_uid, "other").await, 1);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_failure_policy_fail_the_crr_completes_at_the_container_that_cannot_be_stopped() {
    let bed = Bed::start().await;
    let hook = HookServer::start("127.0.0.1", Answer::HttpWhenReleased).await;
    let pod = bed
        .running_pod_of(&unique("fail"), victim_and_other(&hook))
        .await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    let crr = bed
        .create_crr(
            &pod,
            &["victim", "other"],
            json!({"failurePolicy": "Fail", "terminationGracePeriodSeconds": 30}),
            &[],
        )
        .await;
    remove_victim_during_its_hook(&bed, &hook, &pod).await;

    let crr = bed.completed(crr.metadata.name.as_deref().unwrap()).await;
    // The daemon completes with an empty message (§4.4 step 5.6).
    assert_eq!(message(&crr), "");
    let states = states(&crr);
    assert_eq!(states.len(), 2);
    assert_stop_failed(&states[0]);
    assert_eq!(states[1], json!({"name": "other", "phase": "Pending"}));
    let after = bed.pods.get(&pod_name).await.unwrap();
    assert_eq!(status_of(&after, "other").restart_count, 0);
    assert_eq!(
        status_of(&after, "other").container_id,
        status_of(&pod, "other").container_id
    );
    assert_eq!(bed.kills(&pod_uid, "other").await, 0);
    bed.finish().await;
}

/// The old container's end and the `Killing` event are no earlier than the moment the
/// unready grace ran out. Both are at second precision, like `acquired`, so the order is
/// exact (this is the gate's logic, not a measure of speed).
async fn assert_stopped_after_the_grace(
    bed: &Bed,
    pod_name: &str,
    acquired: Timestamp,
    grace: i64,
) {
    let grace_over = acquired + SignedDuration::from_secs(grace);
    let pod = bed.pods.get(pod_name).await.unwrap();
    let app = status_of(&pod, "app");
    assert_eq!(app.restart_count, 1);
    let finished = previous_finished_at(app).expect("the old container's end");
    assert!(
        finished >= grace_over,
        "stopped at {finished}, the grace ran out at {grace_over}"
    );
    let killing = bed
        .killing_events(pod.metadata.uid.as_deref().unwrap())
        .await;
    assert_eq!(killing.len(), 1, "{killing:?}");
    assert_eq!(killing[0].count, Some(1));
    let killed = killing[0].first_timestamp.clone().unwrap().0;
    assert!(
        killed >= grace_over,
        "Killing at {killed}, the grace ran out at {grace_over}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kill_waits_for_the_managers_unready_acquisition_then_for_the_grace_period() {
    let bed = Bed::start().await;
    let pod = bed.running_pod(&unique("unready"), &["app"]).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    let crr = bed
        .create_crr(
            &pod,
            &["app"],
            json!({"unreadyGracePeriodSeconds": 3}),
            &[(NO_UNREADY_LABEL, "true")],
        )
        .await;
    let crr_name = crr.metadata.name.clone().unwrap();
    bed.crr_until(&crr_name, "Recreating", |crr| phase(crr) == "Recreating")
        .await;
    // Not acquired: whole syncs of the pod go by and nothing happens.
    for queued in sync_pod_by_queueing(&bed, &pod, 2).await {
        bed.crrs
            .delete(&queued, &DeleteParams::default())
            .await
            .unwrap();
    }
    let waiting = bed.crrs.get(&crr_name).await.unwrap();
    assert_eq!(phase(&waiting), "Recreating");
    assert!(states(&waiting).is_empty(), "{waiting:?}");
    assert_eq!(bed.kills(&pod_uid, "app").await, 0);

    // The manager acquires; the agent then waits 3 s from the condition's time.
    bed.patch_labels(&crr_name, json!({ NO_UNREADY_LABEL: null }))
        .await;
    let crr = bed.completed(&crr_name).await;
    assert_eq!(
        states(&crr),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    let acquired = unready_acquired_at(&crr).expect("the PreRecreateGrace condition");
    assert_stopped_after_the_grace(&bed, &pod_name, acquired, 3).await;
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v1alpha1_daemon_waits_out_the_unready_grace_from_a_1_9_managers_annotation() {
    // kruise 1.9 on both sides (v1alpha1-only CRD): the manager writes the unready-acquired
    // and sync-container-statuses annotations, the daemon reads them.
    let bed = Bed::start_opts(BedOptions {
        controller: Controller::InProcess(KruiseVersion::V1alpha1),
        manager: ManagerVersion::V1_9,
    })
    .await;
    let pod = bed.running_pod(&unique("alpha-unready"), &["app"]).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let crr = bed
        .create_crr(&pod, &["app"], json!({"unreadyGracePeriodSeconds": 3}), &[])
        .await;
    let crr = bed.completed(crr.metadata.name.as_deref().unwrap()).await;
    assert_eq!(
        states(&crr),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    let acquired: Timestamp = annotation(&crr, UNREADY_ACQUIRED_ANNOTATION)
        .expect("the unready-acquired annotation")
        .parse()
        .unwrap();
    assert_stopped_after_the_grace(&bed, &pod_name, acquired, 3).await;
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_restart_policy_never_the_container_is_stopped_once_and_the_crr_stays_recreating() {
    // The kubelet does not restart the stopped container: it stays exited, its state stays
    // Recreating (§4.4 note), and it is not stopped again however often the pod is synced.
    let bed = Bed::start().await;
    let pod = bed
        .running_pod_from(Pod {
            metadata: ObjectMeta {
                name: Some(unique("never")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![shell_container("app")],
                restart_policy: Some("Never".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    let crr = bed.create_crr(&pod, &["app"], json!({}), &[]).await;
    let crr_name = crr.metadata.name.clone().unwrap();
    let killed = bed
        .crr_until(&crr_name, "app killed", |crr| is_killed(crr, "app"))
        .await;
    eventually("app exited in the runtime", || async {
        let containers = bed.runtime_containers(&pod_uid, "app").await;
        (containers.len() == 1 && containers[0].1 == CONTAINER_EXITED).then_some(())
    })
    .await;

    sync_pod_by_queueing(&bed, &pod, 3).await;
    let after: DynamicObject = bed.crrs.get(&crr_name).await.unwrap();
    assert_eq!(phase(&after), "Recreating");
    assert_eq!(
        states(&after),
        vec![json!({"name": "app", "phase": "Recreating", "isKilled": true})]
    );
    assert_eq!(
        after.metadata.resource_version, killed.metadata.resource_version,
        "nothing more was written to the CRR"
    );
    assert_eq!(bed.kills(&pod_uid, "app").await, 1);
    let containers = bed.runtime_containers(&pod_uid, "app").await;
    assert_eq!(containers.len(), 1, "{containers:?}");
    let pod = bed.pods.get(&pod_name).await.unwrap();
    assert_eq!(container_statuses(&pod).len(), 1);
    assert_eq!(status_of(&pod, "app").restart_count, 0);
    assert!(!running(status_of(&pod, "app")));
    bed.finish().await;
}
