//! The CRR controller (§4.4) in-process against the test bed's API server, the kubelet
//! stand-in and real containerd. No kruise-manager runs: the test plays its part as §4.2 and
//! §4.3 describe (the webhook's labels, statusContext and strategy defaults on create; the
//! `containerStatusSnapshot` while a CRR is Recreating).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, Event, ExecAction, Lifecycle, LifecycleHandler, Pod, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kruised::agent::{ShutdownTrigger, shutdown_channel};
use kruised::api::{CRR_ACTIVE_LABEL, CRR_NODE_NAME_LABEL, CRR_POD_UID_LABEL};
use kruised::apiversions::KruiseVersion;
use kruised::cri::{CriClient, RuntimeEndpoint, RuntimeSet};
use kruised::events::Recorder;
use kruised::readiness::{Readiness, ReadinessCheck};
use kruised::recreate::controller::{DEFAULT_WORKERS, EVENT_COMPONENT, RecreateController};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use testbed::apiserver::{ApiServer, ApiServerConfig};
use testbed::kubelet::{Kubelet, KubeletConfig, KubeletHandle};
use testbed::testenv::TestEnv;

const REFERENCE_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");
const NAMESPACE: &str = "default";
/// The kubelet stand-in's sync interval.
const KUBELET_SYNC: Duration = Duration::from_millis(200);
/// How often the stand-in manager copies pod status into the CRR snapshot.
const MANAGER_SYNC: Duration = Duration::from_millis(200);
/// Deadline for anything that takes a few syncs.
const DEADLINE: Duration = Duration::from_secs(30);
/// CRRs with this label get no snapshot from the stand-in manager: they stay Recreating.
const NO_SNAPSHOT_LABEL: &str = "test.kruised.io/no-snapshot";
/// Exits 0 on SIGTERM, so stops are quick.
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";

/// A name unique in this test run.
fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// Polls `check` every `every` until it returns `Some`, or panics after `deadline`.
async fn poll<T, F, Fut>(deadline: Duration, every: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll(DEADLINE, Duration::from_millis(50), what, check).await
}

fn shell_container(name: &str) -> Container {
    Container {
        name: name.to_string(),
        image: Some(TestEnv::get().image("test/busybox:1")),
        command: Some(vec!["/bin/sh".into(), "-c".into()]),
        args: Some(vec![SERVE.to_string()]),
        ..Default::default()
    }
}

fn crr_resource() -> kube::core::ApiResource {
    KruiseVersion::V1beta1.resource("ContainerRecreateRequest", "containerrecreaterequests")
}

fn container_statuses(pod: &Pod) -> &[ContainerStatus] {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_deref())
        .unwrap_or(&[])
}

fn status_of<'a>(pod: &'a Pod, name: &str) -> &'a ContainerStatus {
    container_statuses(pod)
        .iter()
        .find(|status| status.name == name)
        .unwrap_or_else(|| panic!("pod has a status for container {name}"))
}

fn running(status: &ContainerStatus) -> bool {
    status
        .state
        .as_ref()
        .is_some_and(|state| state.running.is_some())
}

fn phase(crr: &DynamicObject) -> &str {
    crr.data["status"]["phase"].as_str().unwrap_or("")
}

fn states(crr: &DynamicObject) -> Vec<Value> {
    crr.data["status"]["containerRecreateStates"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The stand-in for kruise-manager's snapshot sync (§4.3 step 5, master): while a CRR is
/// Recreating, copy the pod's running containers started at or after the CRR's creation
/// into `status.containerStatusSnapshot`.
async fn play_manager(client: kube::Client) {
    let crrs: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &crr_resource());
    let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
    loop {
        for crr in crrs
            .list(&ListParams::default())
            .await
            .map(|list| list.items)
            .unwrap_or_default()
        {
            let _ = sync_snapshot(&crrs, &pods, &crr).await;
        }
        tokio::time::sleep(MANAGER_SYNC).await;
    }
}

async fn sync_snapshot(
    crrs: &Api<DynamicObject>,
    pods: &Api<Pod>,
    crr: &DynamicObject,
) -> Option<()> {
    let labels = crr.metadata.labels.clone().unwrap_or_default();
    if phase(crr) != "Recreating"
        || !crr.data["status"]["completionTime"].is_null()
        || labels.contains_key(NO_SNAPSHOT_LABEL)
    {
        return None;
    }
    // The test bed's API server rounds creationTimestamp to the nearest second where a real
    // one truncates (testbed/src/apiserver/store.rs `rfc3339_after`), so a container started
    // in the same second as the CRR can look older by one second. An older container in the
    // snapshot is harmless: its ID never matches the replacement's.
    let created = crr.metadata.creation_timestamp.clone()?.0
        - k8s_openapi::jiff::SignedDuration::from_secs(1);
    let pod = pods.get(crr.data["spec"]["podName"].as_str()?).await.ok()?;
    if pod.metadata.uid.as_deref() != labels.get(CRR_POD_UID_LABEL).map(String::as_str) {
        return None;
    }
    let names: Vec<&str> = crr.data["spec"]["containers"]
        .as_array()?
        .iter()
        .filter_map(|container| container["name"].as_str())
        .collect();
    let snapshot: Vec<Value> = container_statuses(&pod)
        .iter()
        .filter(|status| names.contains(&status.name.as_str()))
        .filter(|status| {
            status
                .state
                .as_ref()
                .and_then(|state| state.running.as_ref())
                .and_then(|running| running.started_at.as_ref())
                .is_some_and(|started| started.0 >= created)
        })
        .map(|status| {
            json!({
                "name": status.name,
                "ready": status.ready,
                "restartCount": status.restart_count,
                "containerID": status.container_id,
            })
        })
        .collect();
    // The manager keeps the previous snapshot when the new one is empty.
    if snapshot.is_empty() || crr.data["status"]["containerStatusSnapshot"] == json!(snapshot) {
        return None;
    }
    crrs.patch_status(
        crr.metadata.name.as_deref()?,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "containerStatusSnapshot": snapshot } })),
    )
    .await
    .ok()?;
    Some(())
}

/// API server, kubelet stand-in, stand-in manager and the controller under test.
struct Bed {
    _server: ApiServer,
    node: String,
    cri: CriClient,
    pods: Api<Pod>,
    crrs: Api<DynamicObject>,
    events: Api<Event>,
    kubelet: Option<KubeletHandle>,
    manager: tokio::task::JoinHandle<()>,
    controller: Option<(ShutdownTrigger, tokio::task::JoinHandle<()>)>,
    ready: ReadinessCheck,
    metrics: Arc<kruised::metrics::Metrics>,
}

impl Bed {
    /// A bed whose controller speaks v1beta1, as against kruise master.
    async fn start() -> Self {
        Self::start_with(KruiseVersion::V1beta1).await
    }

    /// A bed whose controller speaks `version`; the stand-in manager always writes v1beta1.
    async fn start_with(version: KruiseVersion) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let env = TestEnv::get();
        let server = ApiServer::start(ApiServerConfig::default())
            .await
            .expect("test bed API server starts");
        server
            .apply_crds_from_dir(Path::new(REFERENCE_CRDS))
            .expect("reference CRDs apply");
        let client = server.client();
        let node = unique("crr-node");
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

        let recorder = Arc::new(Recorder::new(client.clone(), EVENT_COMPONENT, &node));
        let controller = RecreateController::new(
            client.clone(),
            &node,
            version,
            RuntimeSet::new(vec![cri.clone()]).unwrap(),
            DEFAULT_WORKERS,
            recorder,
        );
        let metrics = kruised::metrics::Metrics::new();
        let controller = controller.with_metrics(metrics.recreate.clone());
        let readiness = Readiness::new();
        let ready = readiness.register("crr");
        let (trigger, shutdown) = shutdown_channel();
        let task = tokio::spawn(controller.run(ready.clone(), shutdown));

        let bed = Self {
            _server: server,
            pods: Api::namespaced(client.clone(), NAMESPACE),
            crrs: Api::namespaced_with(client.clone(), NAMESPACE, &crr_resource()),
            events: Api::namespaced(client.clone(), NAMESPACE),
            manager: tokio::spawn(play_manager(client)),
            node,
            cri,
            kubelet: Some(kubelet),
            controller: Some((trigger, task)),
            ready,
            metrics,
        };
        eventually("the CRR watch to list", || async {
            bed.ready.is_ready().then_some(())
        })
        .await;
        bed
    }

    async fn running_pod(&self, name: &str, containers: &[&str]) -> Pod {
        let containers: Vec<Container> = containers
            .iter()
            .map(|name| shell_container(name))
            .collect();
        self.running_pod_of(name, containers).await
    }

    async fn running_pod_of(&self, name: &str, containers: Vec<Container>) -> Pod {
        let count = containers.len();
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(self.node.clone()),
                containers,
                termination_grace_period_seconds: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        self.pod_until(name, "all containers running", |pod| {
            let statuses = container_statuses(pod);
            statuses.len() == count && statuses.iter().all(running)
        })
        .await
    }

    async fn pod_until(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        eventually(&format!("pod {name}: {what}"), || async {
            let pod = self.pods.get(name).await.ok()?;
            check(&pod).then_some(pod)
        })
        .await
    }

    /// Creates a CRR as the webhook would complete it (§4.2): labels, statusContext from
    /// the pod status, strategy defaults.
    async fn create_crr(
        &self,
        pod: &Pod,
        containers: &[&str],
        strategy: Value,
        extra_labels: &[(&str, &str)],
    ) -> DynamicObject {
        self.create_crr_with_deadline(pod, containers, strategy, extra_labels, 300)
            .await
    }

    /// [`Bed::create_crr`] with `activeDeadlineSeconds` (the webhook requires at least 3).
    async fn create_crr_with_deadline(
        &self,
        pod: &Pod,
        containers: &[&str],
        strategy: Value,
        extra_labels: &[(&str, &str)],
        active_deadline_seconds: i64,
    ) -> DynamicObject {
        self.create_crr_full(
            pod,
            containers,
            strategy,
            extra_labels,
            active_deadline_seconds,
        )
        .await
    }

    /// The most general create: the webhook also copies each container's `lifecycle.preStop`
    /// from the pod spec (§4.2).
    async fn create_crr_full(
        &self,
        pod: &Pod,
        containers: &[&str],
        strategy: Value,
        extra_labels: &[(&str, &str)],
        active_deadline_seconds: i64,
    ) -> DynamicObject {
        let name = unique("crr");
        let mut labels = BTreeMap::from([
            (CRR_NODE_NAME_LABEL.to_string(), self.node.clone()),
            (
                CRR_POD_UID_LABEL.to_string(),
                pod.metadata.uid.clone().unwrap(),
            ),
            (CRR_ACTIVE_LABEL.to_string(), "true".to_string()),
        ]);
        for (key, value) in extra_labels {
            labels.insert(key.to_string(), value.to_string());
        }
        let containers: Vec<Value> = containers
            .iter()
            .map(|name| {
                let status = container_statuses(pod)
                    .iter()
                    .find(|status| status.name == *name);
                let pre_stop = pod
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.containers.iter().find(|c| c.name == *name))
                    .and_then(|c| c.lifecycle.as_ref())
                    .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
                    .map(|hook| serde_json::to_value(hook).unwrap());
                let mut container = json!({
                    "name": name,
                    "statusContext": {
                        "containerID": status
                            .and_then(|status| status.container_id.clone())
                            .unwrap_or_else(|| "containerd://0123456789abcdef".into()),
                        "restartCount": status.map_or(0, |status| status.restart_count),
                    },
                });
                if let Some(pre_stop) = pre_stop {
                    container["preStop"] = pre_stop;
                }
                container
            })
            .collect();
        let mut strategy = strategy;
        let defaults = strategy.as_object_mut().unwrap();
        defaults
            .entry("failurePolicy")
            .or_insert_with(|| json!("Fail"));
        defaults
            .entry("terminationGracePeriodSeconds")
            .or_insert_with(|| json!(5));
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1beta1",
            "kind": "ContainerRecreateRequest",
            "metadata": { "name": name, "namespace": NAMESPACE, "labels": labels },
            "spec": {
                "podName": pod.metadata.name,
                "containers": containers,
                "strategy": strategy,
                "activeDeadlineSeconds": active_deadline_seconds,
            },
        }))
        .unwrap();
        self.crrs
            .create(&PostParams::default(), &object)
            .await
            .expect("create CRR")
    }

    async fn crr_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&DynamicObject) -> bool,
    ) -> DynamicObject {
        let start = Instant::now();
        loop {
            let crr = self.crrs.get(name).await.ok();
            if let Some(crr) = crr.filter(|crr| check(crr)) {
                return crr;
            }
            if start.elapsed() > DEADLINE {
                let crr = self.crrs.get(name).await.ok();
                let pods = self.pods.list(&ListParams::default()).await.ok();
                panic!(
                    "timed out after {DEADLINE:?} waiting for CRR {name}: {what}\nCRR: {}\npods: {:?}",
                    serde_json::to_string_pretty(&crr).unwrap(),
                    pods.map(|pods| pods
                        .items
                        .into_iter()
                        .map(|pod| pod.status)
                        .collect::<Vec<_>>())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn completed(&self, name: &str) -> DynamicObject {
        self.crr_until(name, "Completed", |crr| phase(crr) == "Completed")
            .await
    }

    /// The `Killing` events recorded on the pod with this UID.
    async fn killing_events(&self, pod_uid: &str) -> Vec<Event> {
        self.events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|event| {
                event.involved_object.uid.as_deref() == Some(pod_uid)
                    && event.reason.as_deref() == Some("Killing")
            })
            .collect()
    }

    async fn delete_pod_and_wait(&self, name: &str, uid: &str) {
        self.pods
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete pod");
        eventually(&format!("pod {name} gone"), || async {
            let gone = match self.pods.get_opt(name).await {
                Ok(None) => true,
                Ok(Some(pod)) => pod.metadata.uid.as_deref() != Some(uid),
                Err(_) => false,
            };
            let containers = self.cri.list_pod_containers(uid).await.ok()?;
            (gone && containers.is_empty()).then_some(())
        })
        .await;
    }

    async fn finish(mut self) {
        if let Some((trigger, task)) = self.controller.take() {
            trigger.trigger();
            task.await.unwrap();
        }
        self.manager.abort();
        let pods = self.pods.list(&ListParams::default()).await.unwrap();
        for pod in pods.items {
            let name = pod.metadata.name.clone().unwrap();
            let uid = pod.metadata.uid.clone().unwrap();
            self.delete_pod_and_wait(&name, &uid).await;
        }
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
    }
}

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
    eventually("no CRR in flight", || async {
        let text = bed.metrics.encode();
        ["Pending", "Recreating", "Unset"]
            .iter()
            .all(|phase| text.contains(&format!("kruised_crrs_in_flight{{phase=\"{phase}\"}} 0")))
            .then_some(())
    })
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
