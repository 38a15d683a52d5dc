//! The containermeta controller (§6.1) in-process against the test bed's API server, the
//! kubelet stand-in and real containerd. The test plays kruise-manager's part of an in-place
//! update with env from metadata: it changes a label that a container reads through the
//! downward API and sets the pod's `InPlaceUpdateReady` condition to `False`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Event, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kruised::agent::{ShutdownTrigger, shutdown_channel};
use kruised::containermeta::envhash::{env_from_metadata, expected_hash};
use kruised::containermeta::{
    ContainerMetaController, EVENT_COMPONENT, RUNTIME_CONTAINERS_META_ANNOTATION,
    RuntimeContainerMetaSet,
};
use kruised::cri::{CriClient, RuntimeEndpoint, RuntimeSet};
use kruised::events::Recorder;
use kruised::readiness::Readiness;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::recreate_harness::{SERVE, poll, unique};
use testbed::apiserver::{ApiServer, ApiServerConfig};
use testbed::kubelet::{Kubelet, KubeletConfig, KubeletHandle};
use testbed::testenv::TestEnv;

const NAMESPACE: &str = "default";
const KUBELET_SYNC: Duration = Duration::from_millis(200);
const DEADLINE: Duration = Duration::from_secs(40);

async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll(DEADLINE, Duration::from_millis(50), what, check).await
}

/// A container that prints nothing and reads label `color` into `COLOR`.
fn app() -> Container {
    Container {
        name: "app".into(),
        image: Some(TestEnv::get().image("test/busybox:1")),
        command: Some(vec!["/bin/sh".into(), "-c".into()]),
        args: Some(vec![SERVE.into()]),
        env: Some(vec![env_from_metadata("COLOR", "metadata.labels['color']")]),
        ..Default::default()
    }
}

/// A pod a CloneSet controls (the owner need not exist: nothing here collects garbage).
fn kruise_owner() -> Vec<OwnerReference> {
    vec![OwnerReference {
        api_version: "apps.kruise.io/v1alpha1".into(),
        kind: "CloneSet".into(),
        name: "demo".into(),
        uid: "cloneset-uid".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]
}

struct Bed {
    _server: ApiServer,
    client: kube::Client,
    node: String,
    cri: CriClient,
    pods: Api<Pod>,
    events: Api<Event>,
    kubelet: Option<KubeletHandle>,
    controller: Option<(ShutdownTrigger, tokio::task::JoinHandle<()>)>,
}

impl Bed {
    /// API server and kubelet stand-in; the controller starts with [`Bed::start_controller`].
    async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let env = TestEnv::get();
        let server = ApiServer::start(ApiServerConfig::default())
            .await
            .expect("test bed API server starts");
        server
            .apply_crds_from_dir(Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/reference/crds"
            )))
            .expect("reference CRDs apply");
        let client = server.client();
        let node = unique("meta-node");
        let endpoint = RuntimeEndpoint::parse(env.runtime_endpoint()).unwrap();
        let cri = CriClient::connect(&endpoint, None)
            .await
            .expect("containerd from scripts/testenv answers CRI");
        let kubelet = Kubelet::start(KubeletConfig {
            sync_interval: KUBELET_SYNC,
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
        Self {
            _server: server,
            pods: Api::namespaced(client.clone(), NAMESPACE),
            events: Api::namespaced(client.clone(), NAMESPACE),
            client,
            node,
            cri,
            kubelet: Some(kubelet),
            controller: None,
        }
    }

    async fn start_controller(&mut self) {
        let recorder = Arc::new(Recorder::new(
            self.client.clone(),
            EVENT_COMPONENT,
            &self.node,
        ));
        let controller = ContainerMetaController::new(
            self.client.clone(),
            &self.node,
            RuntimeSet::new(vec![self.cri.clone()]).unwrap(),
            recorder,
            true,
        );
        let readiness = Readiness::new();
        let ready = readiness.register("podInformerSynced");
        let (trigger, shutdown) = shutdown_channel();
        self.controller = Some((
            trigger,
            tokio::spawn(controller.run(ready.clone(), shutdown)),
        ));
        eventually("the pod watch to list", || async {
            ready.is_ready().then_some(())
        })
        .await;
    }

    async fn running_pod(
        &self,
        name: &str,
        owners: Option<Vec<OwnerReference>>,
        annotations: &[(&str, &str)],
    ) -> Pod {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(NAMESPACE.into()),
                labels: Some(BTreeMap::from([("color".into(), "red".into())])),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                owner_references: owners,
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(self.node.clone()),
                containers: vec![app()],
                termination_grace_period_seconds: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        eventually(&format!("pod {name} running"), || async {
            let pod = self.pods.get(name).await.ok()?;
            let status = pod
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .clone();
            status.state.as_ref()?.running.as_ref()?;
            Some(pod)
        })
        .await
    }

    /// The pod once its meta annotation satisfies `check`.
    async fn meta_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Pod, &RuntimeContainerMetaSet) -> bool,
    ) -> (Pod, RuntimeContainerMetaSet) {
        eventually(&format!("pod {name} meta: {what}"), || async {
            let pod = self.pods.get(name).await.ok()?;
            let json = pod
                .metadata
                .annotations
                .as_ref()?
                .get(RUNTIME_CONTAINERS_META_ANNOTATION)?;
            let meta = RuntimeContainerMetaSet::parse(json).ok()?;
            check(&pod, &meta).then_some((pod, meta))
        })
        .await
    }

    async fn finish(mut self) {
        if let Some((trigger, task)) = self.controller.take() {
            trigger.trigger();
            task.await.unwrap();
        }
        for pod in self.pods.list(&ListParams::default()).await.unwrap().items {
            let name = pod.metadata.name.clone().unwrap();
            let uid = pod.metadata.uid.clone().unwrap();
            self.pods
                .delete(&name, &DeleteParams::default())
                .await
                .expect("delete pod");
            eventually(&format!("pod {name}'s containers gone"), || async {
                self.cri
                    .list_pod_containers(&uid)
                    .await
                    .ok()?
                    .is_empty()
                    .then_some(())
            })
            .await;
        }
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
    }
}

fn container_id(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_meta_annotation_is_published_and_follows_a_container_restart() {
    let mut bed = Bed::start().await;
    bed.start_controller().await;
    let name = unique("meta");
    let pod = bed.running_pod(&name, Some(kruise_owner()), &[]).await;
    let first_id = container_id(&pod);
    let (pod, meta) = bed
        .meta_until(&name, "the running container", |pod, meta| {
            meta.containers.first().is_some_and(|c| {
                Some(&c.container_id)
                    == pod
                        .status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|s| s[0].container_id.as_ref())
            })
        })
        .await;
    assert_eq!(meta.containers.len(), 1);
    let entry = &meta.containers[0];
    assert_eq!(
        (
            entry.name.as_str(),
            entry.container_id.as_str(),
            entry.restart_count
        ),
        ("app", first_id.as_str(), 0)
    );
    // plainHash is the kubelet's hash annotation on the container, hex to decimal.
    let raw_id = first_id.strip_prefix("containerd://").unwrap();
    let status = bed.cri.container_status(raw_id).await.unwrap();
    let kubelet_hash =
        u64::from_str_radix(&status.annotations["io.kubernetes.container.hash"], 16).unwrap();
    assert_eq!(entry.hashes.plain_hash, kubelet_hash);
    // The env hash of the running container equals what the manager expects for color=red.
    assert_eq!(
        entry.hashes.extracted_env_from_metadata_hash,
        expected_hash(&app(), &labels(&[("color", "red")]), &BTreeMap::new())
    );
    // Byte for byte kruise's compact JSON.
    let written = &pod.metadata.annotations.as_ref().unwrap()[RUNTIME_CONTAINERS_META_ANNOTATION];
    assert_eq!(written, &meta.to_json());

    // The kubelet replaces the container: the meta follows with the new ID and restart count.
    bed.cri
        .stop_container(raw_id, Duration::from_secs(2))
        .await
        .unwrap();
    let (_, meta) = bed
        .meta_until(&name, "the replacement container", |_, meta| {
            meta.containers
                .first()
                .is_some_and(|c| c.container_id != first_id)
        })
        .await;
    assert_eq!(meta.containers[0].restart_count, 1);
    assert_eq!(
        meta.containers[0].hashes.plain_hash, kubelet_hash,
        "same spec, same kubelet hash"
    );
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_seen_first_without_meta_and_pods_kruise_does_not_own_are_left_alone() {
    let mut bed = Bed::start().await;
    // Both exist before the controller starts.
    let fresh = bed
        .running_pod(&unique("no-meta"), Some(kruise_owner()), &[])
        .await;
    let stale_json = r#"{"containers":[]}"#;
    let stale = bed
        .running_pod(
            &unique("stale"),
            Some(kruise_owner()),
            &[(RUNTIME_CONTAINERS_META_ANNOTATION, stale_json)],
        )
        .await;
    let foreign = bed.running_pod(&unique("foreign"), None, &[]).await;
    bed.start_controller().await;
    // The pod that had (stale) meta is synced from the first list...
    let stale_name = stale.metadata.name.clone().unwrap();
    bed.meta_until(&stale_name, "refreshed", |_, meta| {
        meta.containers.len() == 1
    })
    .await;
    // ...in the same pass that would have written the others, had they been eligible.
    for pod in [&fresh, &foreign] {
        let name = pod.metadata.name.as_deref().unwrap();
        let now = bed.pods.get(name).await.unwrap();
        assert!(
            !now.metadata
                .annotations
                .unwrap_or_default()
                .contains_key(RUNTIME_CONTAINERS_META_ANNOTATION),
            "pod {name} got meta without a change"
        );
    }
    // A later change makes the kruise pod eligible; the foreign pod is never written.
    let touch = json!({"metadata": {"labels": {"touched": "yes"}}});
    let fresh_name = fresh.metadata.name.clone().unwrap();
    let foreign_name = foreign.metadata.name.clone().unwrap();
    for name in [&foreign_name, &fresh_name] {
        bed.pods
            .patch(name, &PatchParams::default(), &Patch::Merge(&touch))
            .await
            .unwrap();
    }
    bed.meta_until(&fresh_name, "written after a change", |_, meta| {
        meta.containers.len() == 1
    })
    .await;
    let foreign_now = bed.pods.get(&foreign_name).await.unwrap();
    assert!(
        !foreign_now
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(RUNTIME_CONTAINERS_META_ANNOTATION),
        "a pod no kruise workload controls gets no meta"
    );
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_label_behind_an_env_restarts_the_container_during_an_in_place_update() {
    let mut bed = Bed::start().await;
    bed.start_controller().await;
    let name = unique("inplace");
    let pod = bed.running_pod(&name, Some(kruise_owner()), &[]).await;
    let first_id = container_id(&pod);
    let red = expected_hash(&app(), &labels(&[("color", "red")]), &BTreeMap::new());
    let blue = expected_hash(&app(), &labels(&[("color", "blue")]), &BTreeMap::new());
    assert_ne!(red, blue);
    bed.meta_until(&name, "red env hash", |_, meta| {
        meta.containers
            .first()
            .is_some_and(|c| c.hashes.extracted_env_from_metadata_hash == red)
    })
    .await;

    // The manager's in-place update: the label changes, InPlaceUpdateReady goes False.
    bed.pods
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"color": "blue"}}})),
        )
        .await
        .unwrap();
    bed.pods
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [
                {"type": "InPlaceUpdateReady", "status": "False", "reason": "StartInPlaceUpdate"}
            ]}})),
        )
        .await
        .unwrap();

    // The container is stopped; the kubelet starts it with COLOR=blue; the meta says so.
    let (pod, meta) = bed
        .meta_until(
            &name,
            "the restarted container with the blue env",
            |_, meta| {
                meta.containers.first().is_some_and(|c| {
                    c.container_id != first_id && c.hashes.extracted_env_from_metadata_hash == blue
                })
            },
        )
        .await;
    let new_id = meta.containers[0].container_id.clone();
    assert_eq!(container_id(&pod), new_id);
    let env = bed
        .cri
        .exec_sync(
            new_id.strip_prefix("containerd://").unwrap(),
            vec!["env".into()],
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&env.stdout).contains("COLOR=blue\n"));

    let killing = eventually("the restarter's Killing event", || async {
        bed.events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|event| {
                event.reason.as_deref() == Some("Killing")
                    && event.involved_object.name.as_deref() == Some(name.as_str())
            })
    })
    .await;
    assert_eq!(
        killing.message.as_deref(),
        Some("Stopping containerID containerd://app by container meta restarter")
    );
    assert_eq!(
        killing.source.unwrap().component.as_deref(),
        Some(EVENT_COMPONENT)
    );
    assert_eq!(
        killing.involved_object.field_path.as_deref(),
        Some("spec.containers{app}")
    );

    // Done: the manager sets the condition back; the new container is not restarted again.
    bed.pods
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [
                {"type": "InPlaceUpdateReady", "status": "True"}
            ]}})),
        )
        .await
        .unwrap();
    let pod = bed.pods.get(&name).await.unwrap();
    assert_eq!(container_id(&pod), new_id);
    assert_eq!(
        pod.status.unwrap().container_statuses.unwrap()[0].restart_count,
        1
    );
    bed.finish().await;
}
