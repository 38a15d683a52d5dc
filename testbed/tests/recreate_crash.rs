//! Crash safety of container recreation with the real `kruised` binary (issue 5): SIGKILLed
//! at each step of a CRR and restarted, it finishes the CRR and restarts each container
//! exactly once.
//!
//! Each step is held still from outside until the agent is killed there, so every kill
//! point is reached deterministically: the unready gate (the stand-in manager withholds the
//! acquisition), the preStop hook (it blocks the first time it runs), the stopped container
//! (the kubelet stand-in is stopped, so nothing restarts it) and the running replacement (no
//! snapshot, so it cannot succeed). The window between `StopContainer` and the write of
//! `isKilled` cannot be held from outside; the state machine's unit tests kill the agent
//! there (src/recreate/state.rs, "crash safety").

mod support;

use serde_json::json;
use support::recreate_harness::{
    Answer, Bed, BedOptions, Controller, HookServer, Kruised, ManagerVersion, NO_SNAPSHOT_LABEL,
    NO_UNREADY_LABEL, eventually, is_killed, kruised_binary, phase, running, runtime_id, sh,
    shell_container, states, status_of, unique,
};

/// The CRI state of an exited container.
const CONTAINER_EXITED: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crr_survives_sigkill_of_kruised_at_every_step_and_each_container_restarts_exactly_once()
{
    sigkill_at_every_step(ManagerVersion::Master).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_kruise_1_9_a_v1alpha1_crr_survives_sigkill_at_every_step_with_one_restart_per_container()
 {
    // Only v1alpha1 is served: kruised discovers it and reads the 1.9 manager's annotations.
    sigkill_at_every_step(ManagerVersion::V1_9).await;
}

/// One CRR of two ordered containers, kruised SIGKILLed and restarted at each step.
async fn sigkill_at_every_step(manager: ManagerVersion) {
    let mut bed = Bed::start_opts(BedOptions {
        controller: Controller::External,
        manager,
    })
    .await;
    let binary = kruised_binary();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    bed.server().write_kubeconfig(kubeconfig.path()).unwrap();
    let start = |bed: &Bed| Kruised::start(&binary, kubeconfig.path(), &bed.node);

    // app's preStop hook reports "first" and blocks the first time it runs, "again" and
    // returns after that.
    let hook = HookServer::start("127.0.0.1", Answer::Close).await;
    let (ip, port) = (hook.addr.ip(), hook.addr.port());
    let app = k8s_openapi::api::core::v1::Container {
        lifecycle: Some(k8s_openapi::api::core::v1::Lifecycle {
            pre_stop: Some(k8s_openapi::api::core::v1::LifecycleHandler {
                exec: Some(k8s_openapi::api::core::v1::ExecAction {
                    command: Some(sh(&format!(
                        "if [ -e /tmp/hooked ]; then echo again | nc {ip} {port}; exit 0; fi; \
                         touch /tmp/hooked; echo first | nc {ip} {port}; sleep 3600"
                    ))),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..shell_container("app")
    };
    let pod = bed
        .running_pod_of(&unique("crash"), vec![app, shell_container("side")])
        .await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    let old_app = status_of(&pod, "app").container_id.clone().unwrap();
    let crr = bed
        .create_crr(
            &pod,
            &["app", "side"],
            json!({
                "orderedRecreate": true,
                "unreadyGracePeriodSeconds": 1,
                "terminationGracePeriodSeconds": 30,
            }),
            &[(NO_UNREADY_LABEL, "true")],
        )
        .await;
    let crr_name = crr.metadata.name.clone().unwrap();

    // 1. Recreating, waiting at the unready gate: nothing decided yet.
    let agent = start(&bed);
    bed.crr_until(&crr_name, "Recreating", |crr| phase(crr) == "Recreating")
        .await;
    agent.sigkill();
    let agent = start(&bed);
    bed.patch_labels(&crr_name, json!({ NO_UNREADY_LABEL: null }))
        .await;

    // 2. In the middle of stopping app: its preStop hook is running.
    let hits = hook.wait_for_hits(1).await;
    assert_eq!(hits[0].data, "first\n");
    agent.sigkill();
    assert_eq!(
        bed.runtime_containers(&pod_uid, "app").await,
        vec![(runtime_id(&old_app).to_string(), 1)],
        "app was not stopped yet"
    );
    bed.stop_kubelet().await;
    let agent = start(&bed);

    // 3. app stopped and recorded as killed; the kubelet has not restarted it.
    bed.crr_until(&crr_name, "app killed", |crr| is_killed(crr, "app"))
        .await;
    eventually("app exited in the runtime", || async {
        let containers = bed.runtime_containers(&pod_uid, "app").await;
        (containers == vec![(runtime_id(&old_app).to_string(), CONTAINER_EXITED)]).then_some(())
    })
    .await;
    agent.sigkill();
    bed.patch_labels(&crr_name, json!({ NO_SNAPSHOT_LABEL: "true" }))
        .await;
    bed.start_kubelet().await;
    let agent = start(&bed);

    // 4. app's replacement runs but cannot succeed yet; side waits for it (ordered).
    bed.pod_until(&pod_name, "app restarted", |pod| {
        let app = status_of(pod, "app");
        running(app) && app.restart_count == 1
    })
    .await;
    let recreating = bed
        .crr_until(&crr_name, "app Recreating, side Pending", |crr| {
            states(crr)
                == vec![
                    json!({"name": "app", "phase": "Recreating", "isKilled": true}),
                    json!({"name": "side", "phase": "Pending"}),
                ]
        })
        .await;
    assert_eq!(phase(&recreating), "Recreating");
    agent.sigkill();
    let agent = start(&bed);
    bed.patch_labels(&crr_name, json!({ NO_SNAPSHOT_LABEL: null }))
        .await;

    // 5. app succeeded and side was stopped.
    bed.crr_until(&crr_name, "side killed", |crr| is_killed(crr, "side"))
        .await;
    agent.sigkill();
    let agent = start(&bed);

    let crr = bed.completed(&crr_name).await;
    assert_eq!(
        states(&crr),
        vec![
            json!({"name": "app", "phase": "Succeeded", "isKilled": true}),
            json!({"name": "side", "phase": "Succeeded", "isKilled": true}),
        ]
    );
    let after = bed.pods.get(&pod_name).await.unwrap();
    for name in ["app", "side"] {
        assert_eq!(status_of(&after, name).restart_count, 1, "{name}");
        assert_eq!(bed.kills(&pod_uid, name).await, 1, "{name}");
    }
    // The hook ran twice, once in each of the two agents that stopped app.
    let hits: Vec<String> = hook.hits().into_iter().map(|hit| hit.data).collect();
    assert_eq!(hits, ["first\n", "again\n"]);
    assert!(
        bed.pod_events(&pod_uid, "FailedPreStopHook")
            .await
            .is_empty()
    );
    drop(agent);
    bed.finish().await;
}
