//! The manager on a cluster whose CRDs serve only v1alpha1 (OpenKruise 1.8's): an
//! ImagePullJob reaches a real pull on containerd through a v1alpha1 NodeImage, and a
//! plain v1alpha1 ContainerRecreateRequest is admitted, carried out by the real agent and
//! completed.

mod manager_support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kruised::api::{CRR_ACTIVE_LABEL, CRR_NODE_NAME_LABEL, CRR_POD_UID_LABEL};
use kruised::apiversions::KruiseVersion;
use kruised::cri::{CriClient, RuntimeEndpoint, RuntimeSet};
use kruised::events::Recorder;
use kruised::readiness::Readiness;
use kruised::recreate::controller::{DEFAULT_WORKERS, EVENT_COMPONENT, RecreateController};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::DynamicObject;
use manager_support::*;
use serde_json::json;
use testbed::kubelet::{Kubelet, KubeletConfig};
use testbed::testenv::TestEnv;

const ALPHA: KruiseVersion = KruiseVersion::V1alpha1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_v1alpha1_only_crds_an_image_pull_job_pulls_through_a_v1alpha1_node_image() {
    let server = server_with_crds(KRUISE_1_8_CRDS).await;
    let client = server.client();
    let _manager = Manager::start(client.clone(), settings());
    let node = unique("alpha-node");
    let _agent = Agent::start_version(client.clone(), &node, ALPHA).await;
    ready_node(&client, &node, json!({"pool": "alpha"})).await;
    let node_images: Api<DynamicObject> =
        Api::all_with(client.clone(), &ALPHA.resource("NodeImage", "nodeimages"));
    eventually("the node's v1alpha1 NodeImage", || async {
        node_images.get(&node).await.ok()
    })
    .await;

    let image = TestEnv::get().image("test/busybox:1");
    let jobs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &ALPHA.resource("ImagePullJob", "imagepulljobs"),
    );
    let job = create(
        &jobs,
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
               "metadata": {"name": "alpha-job", "namespace": NAMESPACE},
               "spec": {"image": image, "parallelism": 1, "imagePullPolicy": "Always",
                        "selector": {"matchLabels": {"pool": "alpha"}},
                        "completionPolicy": {"type": "Always"}}}),
    )
    .await;
    let uid = job.metadata.uid.unwrap();
    let status = eventually("the job to complete", || async {
        let status = jobs.get("alpha-job").await.ok()?.data["status"].clone();
        status["completionTime"].is_string().then_some(status)
    })
    .await;
    assert_eq!(status["desired"], 1, "{status}");
    assert_eq!(status["succeeded"], 1, "{status}");
    assert_eq!(status["failed"], 0, "{status}");

    let key = image.rsplit_once(':').unwrap().0.to_owned();
    let object = node_images.get(&node).await.unwrap();
    let entry = object.data["spec"]["images"][&key]["tags"]
        .as_array()
        .and_then(|tags| tags.iter().find(|t| t["tag"] == "1"))
        .cloned()
        .expect("the job's tag is written in the v1alpha1 NodeImage");
    let owner = &entry["ownerReferences"][0];
    assert_eq!(owner["apiVersion"], "apps.kruise.io/v1alpha1");
    assert_eq!(owner["kind"], "ImagePullJob");
    assert_eq!(owner["uid"], uid.as_str());
    let tag_status = object.data["status"]["imageStatuses"][&key]["tags"]
        .as_array()
        .and_then(|tags| tags.iter().find(|t| t["tag"] == "1"))
        .cloned()
        .expect("the agent reported the tag");
    assert_eq!(tag_status["phase"], "Succeeded");
    assert!(
        tag_status["imageID"]
            .as_str()
            .is_some_and(|id| id.contains("@sha256:")),
        "a digest from the real pull: {tag_status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_v1alpha1_only_crds_a_plain_crr_is_admitted_recreated_and_completed() {
    let env = TestEnv::get();
    let server = server_with_crds(KRUISE_1_8_CRDS).await;
    let client = server.client();
    let node = unique("alpha-crr-node");
    let kubelet = Kubelet::start(KubeletConfig {
        sync_interval: Duration::from_millis(200),
        ..KubeletConfig::new(
            node.clone(),
            client.clone(),
            env.var("RUNTIME_ENDPOINT"),
            env.var("CGROUP_PARENT_PREFIX"),
            env.dir().join("kubelet-pod-logs"),
        )
    })
    .await
    .expect("kubelet starts");
    let cri = CriClient::connect(
        &RuntimeEndpoint::parse(env.runtime_endpoint()).unwrap(),
        None,
    )
    .await
    .unwrap();
    let agent = RecreateController::new(
        client.clone(),
        &node,
        ALPHA,
        RuntimeSet::new(vec![cri]).unwrap(),
        DEFAULT_WORKERS,
        Arc::new(Recorder::new(client.clone(), EVENT_COMPONENT, &node)),
    );
    let readiness = Readiness::new();
    let check = readiness.register("crr");
    let (trigger, shutdown) = kruised::agent::shutdown_channel();
    let agent_task = tokio::spawn(agent.run(check.clone(), shutdown));
    eventually("the agent's CRR watch", || async {
        check.is_ready().then_some(())
    })
    .await;
    let _manager = Manager::start(client.clone(), settings());

    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 3,
                 "containers": [Container {
                     name: "app".into(),
                     image: Some(env.image("test/busybox:1")),
                     command: Some(vec!["/bin/sh".into(), "-c".into()]),
                     args: Some(vec!["trap 'exit 0' TERM; while true; do sleep 0.2; done".into()]),
                     ..Default::default()
                 }]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running_id = |pod: &Pod| -> Option<String> {
        let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
        status.state.as_ref()?.running.as_ref()?;
        status.container_id.clone()
    };
    let (pod_uid, before) = eventually("the pod running", || async {
        let pod = pods.get("web").await.ok()?;
        Some((pod.metadata.uid.clone()?, running_id(&pod)?))
    })
    .await;

    let crrs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &ALPHA.resource("ContainerRecreateRequest", "containerrecreaterequests"),
    );
    create(
        &crrs,
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
               "metadata": {"name": "restart-app", "namespace": NAMESPACE},
               "spec": {"podName": "web", "containers": [{"name": "app"}]}}),
    )
    .await;
    let admitted = eventually("admission", || async {
        crrs.get("restart-app")
            .await
            .ok()
            .filter(|c| c.labels().contains_key(CRR_POD_UID_LABEL))
    })
    .await;
    assert_eq!(admitted.labels()[CRR_POD_UID_LABEL], pod_uid);
    assert_eq!(admitted.labels()[CRR_NODE_NAME_LABEL], node);
    assert_eq!(
        admitted.data["spec"]["containers"][0]["statusContext"]["containerID"],
        before.as_str()
    );
    let done = eventually("completion and release", || async {
        crrs.get("restart-app").await.ok().filter(|c| {
            c.data["status"]["phase"] == "Completed" && !c.labels().contains_key(CRR_ACTIVE_LABEL)
        })
    })
    .await;
    assert_eq!(
        done.data["status"]["message"].as_str().unwrap_or(""),
        "",
        "{:?}",
        done.data["status"]
    );
    assert_eq!(
        done.data["status"]["containerRecreateStates"][0]["phase"],
        "Succeeded"
    );
    let after = eventually("the recreated container running", || async {
        let id = running_id(&pods.get("web").await.ok()?)?;
        (id != before).then_some(id)
    })
    .await;
    assert_ne!(after, before);

    trigger.trigger();
    let _ = agent_task.await;
    for pod in pods.list(&ListParams::default()).await.unwrap().items {
        let name = pod.metadata.name.unwrap();
        let _ = pods.delete(&name, &DeleteParams::default()).await;
        eventually(&format!("pod {name} gone"), || async {
            pods.get_opt(&name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    kubelet.shutdown().await;
}
