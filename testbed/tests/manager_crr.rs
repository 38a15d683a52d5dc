//! ContainerRecreateRequests end to end with the manager instead of a stand-in: CRRs are
//! created as plain user objects (no labels, no statusContext), the manager admits them
//! (§4.2) and controls them (§4.3), the real agent's CRR controller recreates containers
//! on real containerd, and the kubelet stand-in restarts them.

mod manager_support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodCondition};
use kruised::agent::{ShutdownTrigger, shutdown_channel};
use kruised::api::{CRR_ACTIVE_LABEL, CRR_NODE_NAME_LABEL, CRR_POD_UID_LABEL};
use kruised::apiversions::KruiseVersion;
use kruised::cri::{CriClient, RuntimeEndpoint, RuntimeSet};
use kruised::events::Recorder;
use kruised::readiness::Readiness;
use kruised::recreate::controller::{DEFAULT_WORKERS, EVENT_COMPONENT, RecreateController};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use manager_support::*;
use serde_json::{Value, json};
use testbed::kubelet::{Kubelet, KubeletConfig, KubeletHandle};
use testbed::testenv::TestEnv;

const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";

struct Bed {
    _server: testbed::apiserver::ApiServer,
    node: String,
    pods: Api<Pod>,
    crrs: Api<DynamicObject>,
    kubelet: Option<KubeletHandle>,
    agent: Option<(ShutdownTrigger, tokio::task::JoinHandle<()>)>,
    _manager: Manager,
}

impl Bed {
    async fn start() -> Self {
        let env = TestEnv::get();
        let server = server().await;
        let client = server.client();
        let node = unique("crr-node");
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
            KruiseVersion::V1beta1,
            RuntimeSet::new(vec![cri]).unwrap(),
            DEFAULT_WORKERS,
            Arc::new(Recorder::new(client.clone(), EVENT_COMPONENT, &node)),
        );
        let readiness = Readiness::new();
        let check = readiness.register("crr");
        let (trigger, shutdown) = shutdown_channel();
        let task = tokio::spawn(agent.run(check.clone(), shutdown));
        eventually("the agent's CRR watch", || async {
            check.is_ready().then_some(())
        })
        .await;
        Self {
            _manager: Manager::start(client.clone(), settings()),
            pods: Api::namespaced(client.clone(), NAMESPACE),
            crrs: Api::namespaced_with(
                client.clone(),
                NAMESPACE,
                &KruiseVersion::V1beta1
                    .resource("ContainerRecreateRequest", "containerrecreaterequests"),
            ),
            _server: server,
            node,
            kubelet: Some(kubelet),
            agent: Some((trigger, task)),
        }
    }

    async fn running_pod(&self, name: &str, containers: &[&str], extra: Value) -> Pod {
        let containers: Vec<Container> = containers
            .iter()
            .map(|c| Container {
                name: (*c).into(),
                image: Some(TestEnv::get().image("test/busybox:1")),
                command: Some(vec!["/bin/sh".into(), "-c".into()]),
                args: Some(vec![SERVE.into()]),
                ..Default::default()
            })
            .collect();
        let mut value = json!({
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"nodeName": self.node, "containers": containers, "terminationGracePeriodSeconds": 3}
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            value["spec"][k] = v.clone();
        }
        self.pods
            .create(
                &PostParams::default(),
                &serde_json::from_value(value).unwrap(),
            )
            .await
            .unwrap();
        let count = containers.len();
        eventually(&format!("pod {name} running"), || async {
            let pod = self.pods.get(name).await.ok()?;
            let statuses = pod.status.as_ref()?.container_statuses.clone()?;
            (statuses.len() == count
                && statuses
                    .iter()
                    .all(|s| s.state.as_ref().is_some_and(|s| s.running.is_some())))
            .then_some(pod)
        })
        .await
    }

    /// A CRR as a user writes it: no labels, no injected fields.
    async fn plain_crr(
        &self,
        name: &str,
        pod: &str,
        containers: &[&str],
        extra: Value,
    ) -> DynamicObject {
        let containers: Vec<Value> = containers.iter().map(|c| json!({"name": c})).collect();
        let mut spec = json!({"podName": pod, "containers": containers});
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        create(
            &self.crrs,
            json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "ContainerRecreateRequest",
                   "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}),
        )
        .await
    }

    async fn crr_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&DynamicObject) -> bool,
    ) -> DynamicObject {
        eventually(&format!("CRR {name}: {what}"), || async {
            self.crrs.get(name).await.ok().filter(|c| check(c))
        })
        .await
    }

    async fn finish(mut self) {
        if let Some((trigger, task)) = self.agent.take() {
            trigger.trigger();
            let _ = task.await;
        }
        for pod in self.pods.list(&ListParams::default()).await.unwrap().items {
            let name = pod.metadata.name.unwrap();
            let _ = self.pods.delete(&name, &DeleteParams::default()).await;
            eventually(&format!("pod {name} gone"), || async {
                self.pods.get_opt(&name).await.ok()?.is_none().then_some(())
            })
            .await;
        }
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
    }
}

fn phase(crr: &DynamicObject) -> &str {
    crr.data["status"]["phase"].as_str().unwrap_or("")
}

fn container_id(pod: &Pod, name: &str) -> String {
    pod.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| s.container_id.clone())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_crr_is_admitted_recreated_completed_released_and_deleted_after_its_ttl() {
    let bed = Bed::start().await;
    let pod = bed.running_pod("web", &["app", "side"], json!({})).await;
    let before = container_id(&pod, "app");
    bed.plain_crr(
        "restart-app",
        "web",
        &["app"],
        json!({"ttlSecondsAfterFinished": 3}),
    )
    .await;
    let admitted = bed
        .crr_until("restart-app", "admission", |c| {
            c.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(CRR_POD_UID_LABEL))
        })
        .await;
    let labels = admitted.metadata.labels.clone().unwrap();
    assert_eq!(labels[CRR_POD_UID_LABEL], pod.metadata.uid.clone().unwrap());
    assert_eq!(labels[CRR_NODE_NAME_LABEL], bed.node);
    assert_eq!(
        admitted.data["spec"]["containers"][0]["statusContext"]["containerID"],
        before.as_str()
    );
    assert_eq!(admitted.data["spec"]["strategy"]["failurePolicy"], "Fail");
    assert_eq!(
        admitted.data["spec"]["strategy"]["terminationGracePeriodSeconds"],
        3
    );

    let done = bed
        .crr_until("restart-app", "completion and release", |c| {
            phase(c) == "Completed"
                && !c
                    .metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(CRR_ACTIVE_LABEL))
        })
        .await;
    assert_eq!(done.data["status"]["message"].as_str().unwrap_or(""), "");
    assert_eq!(
        done.data["status"]["containerRecreateStates"][0]["phase"],
        "Succeeded"
    );
    // The agent waited for the manager's snapshot of the new container.
    let snapshot = &done.data["status"]["containerStatusSnapshot"][0];
    assert_eq!(snapshot["name"], "app");
    assert_ne!(snapshot["containerID"], before.as_str());
    let pod = bed.pods.get("web").await.unwrap();
    assert_eq!(
        container_id(&pod, "app"),
        snapshot["containerID"].as_str().unwrap()
    );
    eventually("the TTL deletion", || async {
        bed.crrs.get("restart-app").await.is_err().then_some(())
    })
    .await;
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_plain_crrs_are_completed_with_the_reason() {
    let bed = Bed::start().await;
    bed.running_pod("web", &["app"], json!({})).await;
    let cases = [
        (
            "no-pod",
            "ghost",
            vec!["app"],
            "invalid ContainerRecreateRequest: no found Pod named ghost",
        ),
        (
            "no-container",
            "web",
            vec!["db"],
            "invalid ContainerRecreateRequest: container db not found in Pod",
        ),
        (
            "twice",
            "web",
            vec!["app", "app"],
            "invalid ContainerRecreateRequest: can not recreate app multi times",
        ),
    ];
    for (name, pod, containers, _) in &cases {
        bed.plain_crr(name, pod, containers, json!({})).await;
    }
    for (name, _, _, message) in cases {
        let done = bed
            .crr_until(name, "rejection", |c| phase(c) == "Completed")
            .await;
        assert_eq!(done.data["status"]["message"], message);
        // Never admitted, so never seen by an agent.
        assert!(
            !done
                .metadata
                .labels
                .unwrap_or_default()
                .contains_key(CRR_NODE_NAME_LABEL)
        );
    }
    // An unscheduled pod.
    let pending: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pending"},
        "spec": {"containers": [{"name": "app", "image": "x"}]}
    }))
    .unwrap();
    bed.pods
        .create(&PostParams::default(), &pending)
        .await
        .unwrap();
    bed.plain_crr("unscheduled", "pending", &["app"], json!({}))
        .await;
    let done = bed
        .crr_until("unscheduled", "rejection", |c| phase(c) == "Completed")
        .await;
    assert_eq!(
        done.data["status"]["message"],
        "invalid ContainerRecreateRequest: not allowed to recreate containers in a pending Pod"
    );
    bed.pods
        .delete("pending", &DeleteParams::default())
        .await
        .unwrap();
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_unready_grace_takes_the_pod_out_of_service_and_gives_it_back() {
    let bed = Bed::start().await;
    let pod = bed
        .running_pod(
            "gated",
            &["app"],
            json!({"readinessGates": [{"conditionType": "KruisePodReady"}]}),
        )
        .await;
    // A workload controller would have set the gate True.
    bed.pods
        .patch_status(
            "gated",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"status": {"conditions": [{"type": "KruisePodReady", "status": "True"}]}}),
            ),
        )
        .await
        .unwrap();
    let before = container_id(&pod, "app");
    bed.plain_crr(
        "drain",
        "gated",
        &["app"],
        json!({"strategy": {"unreadyGracePeriodSeconds": 1}}),
    )
    .await;
    let acquired = bed
        .crr_until("drain", "the unready acquisition", |c| {
            c.data["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "PreRecreateGrace" && c["status"] == "True")
            })
        })
        .await;
    assert!(
        acquired
            .metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .contains(&"crr.apps.kruise.io/unready-acquired".to_owned())
            || phase(&acquired) == "Completed"
    );
    let gate = |pod: &Pod| -> Option<PodCondition> {
        pod.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "KruisePodReady")
            .cloned()
    };
    let done = bed
        .crr_until("drain", "completion and release", |c| {
            phase(c) == "Completed" && c.metadata.finalizers.as_ref().is_none_or(Vec::is_empty)
        })
        .await;
    assert_eq!(
        done.data["status"]["containerRecreateStates"][0]["phase"],
        "Succeeded"
    );
    let pod = eventually("the gate to be True again", || async {
        let pod = bed.pods.get("gated").await.ok()?;
        (gate(&pod)?.status == "True").then_some(pod)
    })
    .await;
    assert_eq!(gate(&pod).unwrap().message.as_deref(), Some("[]"));
    assert_ne!(container_id(&pod, "app"), before);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_its_deadline_a_crr_completes_and_unfinished_containers_fail() {
    let bed = Bed::start().await;
    // restartPolicy Never: the killed container never comes back.
    bed.running_pod("stuck", &["app", "side"], json!({"restartPolicy": "Never"}))
        .await;
    bed.plain_crr(
        "late",
        "stuck",
        &["app"],
        json!({"activeDeadlineSeconds": 4}),
    )
    .await;
    let done = bed
        .crr_until("late", "the deadline", |c| phase(c) == "Completed")
        .await;
    assert_eq!(
        done.data["status"]["message"],
        "recreating has exceeded the activeDeadlineSeconds"
    );
    let state = &done.data["status"]["containerRecreateStates"][0];
    assert_eq!(state["phase"], "Failed", "{state}");
    assert_eq!(
        state["message"],
        "recreating has exceeded the activeDeadlineSeconds"
    );
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spec_changed_after_admission_is_reverted_with_a_warning() {
    let mut bed = Bed::start().await;
    bed.running_pod("web", &["app"], json!({})).await;
    // No agent: the CRR stays unstarted (phase "") while its spec is edited.
    if let Some((trigger, task)) = bed.agent.take() {
        trigger.trigger();
        let _ = task.await;
    }
    bed.plain_crr("edited", "web", &["app"], json!({})).await;
    let recorded = bed
        .crr_until("edited", "the admitted spec recorded", |c| {
            c.metadata.annotations.as_ref().is_some_and(|a| {
                a.contains_key(kruised::manager::crr_admission::ADMITTED_SPEC_ANNOTATION)
            })
        })
        .await;
    let admitted = recorded.data["spec"].clone();
    assert_eq!(admitted["strategy"]["failurePolicy"], "Fail");
    bed.crrs
        .patch(
            "edited",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"strategy": {"failurePolicy": "Ignore"},
                                           "containers": [{"name": "app"}]}})),
        )
        .await
        .unwrap();
    let reverted = bed
        // Read after the edit was stored: the admitted spec is back only through a revert.
        .crr_until("edited", "the spec reverted", |c| {
            c.data["spec"] == admitted
        })
        .await;
    assert_eq!(
        phase(&reverted),
        "",
        "the CRR is still waiting for its agent"
    );
    let events = eventually("a SpecImmutable event", || async {
        let events = events_about(&bed.pods.clone().into_client(), NAMESPACE, "edited").await;
        events
            .iter()
            .any(|(r, _)| r == "SpecImmutable")
            .then_some(events)
    })
    .await;
    assert!(
        events
            .iter()
            .any(|(_, m)| m.contains("immutable after admission")),
        "{events:?}"
    );
    bed.finish().await;
}
