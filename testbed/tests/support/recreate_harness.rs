//! The test bed of the CRR suites (`tests/recreate*.rs`): the test bed's API server, the
//! kubelet stand-in on real containerd, a stand-in for kruise-manager, and the CRR controller
//! under test, either in-process or as the real `kruised` binary ([`Kruised`]).
//!
//! No kruise-manager runs: [`play_manager`] plays its part as §4.2 and §4.3 describe (the
//! webhook's labels, statusContext, preStop and ports on create; the
//! `containerStatusSnapshot` and the unready acquisition while a CRR is Recreating), as
//! master (`v1beta1` status) or as 1.9 (`v1alpha1` annotations) does it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Event, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use testbed::kubelet::spec::POD_NETWORK_ANNOTATION;

const REFERENCE_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");
/// The namespace of every pod and CRR.
pub const NAMESPACE: &str = "default";
/// The kubelet stand-in's sync interval.
pub const KUBELET_SYNC: Duration = Duration::from_millis(200);
/// How often the stand-in manager syncs Recreating CRRs.
pub const MANAGER_SYNC: Duration = Duration::from_millis(200);
/// Deadline for anything that takes a few syncs.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// CRRs with this label get no snapshot from the stand-in manager: they stay Recreating.
pub const NO_SNAPSHOT_LABEL: &str = "test.kruised.io/no-snapshot";
/// CRRs with this label are not acquired unready by the stand-in manager (§4.3 step 5):
/// with `unreadyGracePeriodSeconds` they wait.
pub const NO_UNREADY_LABEL: &str = "test.kruised.io/no-unready-acquire";
/// The v1alpha1 annotation of the unready acquisition time (§4.1).
pub const UNREADY_ACQUIRED_ANNOTATION: &str = "crr.apps.kruise.io/unready-acquired";
/// The v1alpha1 annotation of the snapshot (§4.1).
pub const SYNC_CONTAINER_STATUSES_ANNOTATION: &str = "crr.apps.kruise.io/sync-container-statuses";
/// Exits 0 on SIGTERM, so stops are quick.
pub const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";

/// A name unique in this test run.
pub fn unique(prefix: &str) -> String {
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
pub async fn poll<T, F, Fut>(deadline: Duration, every: Duration, what: &str, mut check: F) -> T
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

/// [`poll`] every 50 ms until [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll(DEADLINE, Duration::from_millis(50), what, check).await
}

/// A busybox container running `script` under `sh -c`.
pub fn script_container(name: &str, script: &str) -> Container {
    Container {
        name: name.to_string(),
        image: Some(TestEnv::get().image("test/busybox:1")),
        command: Some(vec!["/bin/sh".into(), "-c".into()]),
        args: Some(vec![script.to_string()]),
        ..Default::default()
    }
}

/// A busybox container that runs until SIGTERM ([`SERVE`]).
pub fn shell_container(name: &str) -> Container {
    script_container(name, SERVE)
}

/// `["/bin/sh", "-c", script]`.
pub fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// The CRR resource at `version`.
pub fn crr_resource(version: KruiseVersion) -> kube::core::ApiResource {
    version.resource("ContainerRecreateRequest", "containerrecreaterequests")
}

/// The pod's container statuses.
pub fn container_statuses(pod: &Pod) -> &[ContainerStatus] {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_deref())
        .unwrap_or(&[])
}

/// The status of container `name`; panics without one.
pub fn status_of<'a>(pod: &'a Pod, name: &str) -> &'a ContainerStatus {
    container_statuses(pod)
        .iter()
        .find(|status| status.name == name)
        .unwrap_or_else(|| panic!("pod has a status for container {name}"))
}

/// Whether the container is running.
pub fn running(status: &ContainerStatus) -> bool {
    status
        .state
        .as_ref()
        .is_some_and(|state| state.running.is_some())
}

/// When the running container started.
pub fn started_at(status: &ContainerStatus) -> Option<Timestamp> {
    Some(
        status
            .state
            .as_ref()?
            .running
            .as_ref()?
            .started_at
            .as_ref()?
            .0,
    )
}

/// When the previous container of this name finished.
pub fn previous_finished_at(status: &ContainerStatus) -> Option<Timestamp> {
    Some(
        status
            .last_state
            .as_ref()?
            .terminated
            .as_ref()?
            .finished_at
            .as_ref()?
            .0,
    )
}

/// The runtime's ID without the `<runtime>://` prefix.
pub fn runtime_id(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

/// `status.phase` of a CRR, `""` without one.
pub fn phase(crr: &DynamicObject) -> &str {
    crr.data["status"]["phase"].as_str().unwrap_or("")
}

/// `status.message` of a CRR, `""` without one.
pub fn message(crr: &DynamicObject) -> &str {
    crr.data["status"]["message"].as_str().unwrap_or("")
}

/// `status.containerRecreateStates` of a CRR.
pub fn states(crr: &DynamicObject) -> Vec<Value> {
    crr.data["status"]["containerRecreateStates"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether the state of container `name` has `isKilled: true`.
pub fn is_killed(crr: &DynamicObject, name: &str) -> bool {
    states(crr)
        .iter()
        .any(|state| state["name"] == name && state["isKilled"] == json!(true))
}

/// The `lastTransitionTime` of the CRR's `PreRecreateGrace=True` condition (v1beta1 view).
pub fn unready_acquired_at(crr: &DynamicObject) -> Option<Timestamp> {
    crr.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| {
            condition["type"] == "PreRecreateGrace" && condition["status"] == "True"
        })?["lastTransitionTime"]
        .as_str()?
        .parse()
        .ok()
}

/// The kruise installation the stand-in manager plays (§4.1, §4.3 step 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagerVersion {
    /// master: CRDs serve `v1alpha1` and `v1beta1` (storage, converted by the test API
    /// server as kruise's webhook does); the manager writes `status.containerStatusSnapshot`
    /// and the `PreRecreateGrace` condition.
    Master,
    /// 1.9: the CRD serves `v1alpha1` only; the manager writes the
    /// `sync-container-statuses` and `unready-acquired` annotations.
    V1_9,
}

impl ManagerVersion {
    /// The CRR version the cluster stores, which the test reads and writes.
    pub fn crr_version(self) -> KruiseVersion {
        match self {
            Self::Master => KruiseVersion::V1beta1,
            Self::V1_9 => KruiseVersion::V1alpha1,
        }
    }
}

/// Which CRR controller the bed runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// [`RecreateController`] in this process, speaking this version.
    InProcess(KruiseVersion),
    /// None: the test runs the `kruised` binary itself ([`Kruised`]).
    External,
}

/// How to start a [`Bed`].
#[derive(Debug, Clone, Copy)]
pub struct BedOptions {
    /// The controller under test.
    pub controller: Controller,
    /// The kruise installation the stand-in manager plays.
    pub manager: ManagerVersion,
}

impl Default for BedOptions {
    fn default() -> Self {
        Self {
            controller: Controller::InProcess(KruiseVersion::V1beta1),
            manager: ManagerVersion::Master,
        }
    }
}

/// The stand-in for kruise-manager's CRR controller (§4.3 step 5) while a CRR is
/// Recreating: the snapshot of the pod's containers started at or after the CRR's creation,
/// and, with `unreadyGracePeriodSeconds`, the unready acquisition.
pub async fn play_manager(client: kube::Client, version: ManagerVersion) {
    let crrs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &crr_resource(version.crr_version()),
    );
    let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
    loop {
        for crr in crrs
            .list(&ListParams::default())
            .await
            .map(|list| list.items)
            .unwrap_or_default()
        {
            let _ = sync_snapshot(&crrs, &pods, &crr, version).await;
            let _ = acquire_unready(&crrs, &crr, version).await;
        }
        tokio::time::sleep(MANAGER_SYNC).await;
    }
}

fn recreating(crr: &DynamicObject) -> bool {
    phase(crr) == "Recreating" && crr.data["status"]["completionTime"].is_null()
}

fn has_label(crr: &DynamicObject, label: &str) -> bool {
    crr.metadata
        .labels
        .as_ref()
        .is_some_and(|labels| labels.contains_key(label))
}

/// The annotation `key` of the CRR.
pub fn annotation<'a>(crr: &'a DynamicObject, key: &str) -> Option<&'a str> {
    crr.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// A 1.9 manager's write: the main resource, whose status changes would be dropped.
async fn annotate(crrs: &Api<DynamicObject>, name: &str, key: &str, value: String) -> Option<()> {
    crrs.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { key: value } } })),
    )
    .await
    .ok()
    .map(drop)
}

async fn sync_snapshot(
    crrs: &Api<DynamicObject>,
    pods: &Api<Pod>,
    crr: &DynamicObject,
    version: ManagerVersion,
) -> Option<()> {
    if !recreating(crr) || has_label(crr, NO_SNAPSHOT_LABEL) {
        return None;
    }
    // The test bed's API server rounds creationTimestamp to the nearest second where a real
    // one truncates (testbed/src/apiserver/store.rs `rfc3339_after`), so a container started
    // in the same second as the CRR can look older by one second. An older container in the
    // snapshot is harmless: its ID never matches the replacement's.
    let created = crr.metadata.creation_timestamp.clone()?.0 - SignedDuration::from_secs(1);
    let pod = pods.get(crr.data["spec"]["podName"].as_str()?).await.ok()?;
    let uid_label = crr.metadata.labels.as_ref()?.get(CRR_POD_UID_LABEL)?;
    if pod.metadata.uid.as_ref() != Some(uid_label) {
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
        .filter(|status| started_at(status).is_some_and(|started| started >= created))
        .map(|status| {
            json!({
                "name": status.name,
                "ready": status.ready,
                "restartCount": status.restart_count,
                "containerID": status.container_id,
            })
        })
        .collect();
    let name = crr.metadata.name.as_deref()?;
    match version {
        ManagerVersion::Master => {
            // The manager keeps the previous snapshot when the new one is empty.
            if snapshot.is_empty()
                || crr.data["status"]["containerStatusSnapshot"] == json!(snapshot)
            {
                return None;
            }
            crrs.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "containerStatusSnapshot": snapshot } })),
            )
            .await
            .ok()
            .map(drop)
        }
        ManagerVersion::V1_9 => {
            // 1.9 always overwrites the annotation.
            let text = Value::Array(snapshot).to_string();
            if annotation(crr, SYNC_CONTAINER_STATUSES_ANNOTATION) == Some(text.as_str()) {
                return None;
            }
            annotate(crrs, name, SYNC_CONTAINER_STATUSES_ANNOTATION, text).await
        }
    }
}

/// §4.3 step 5: record once when the pod was forced not-ready. The pod's readiness itself
/// is not touched: kruised never reads it.
async fn acquire_unready(
    crrs: &Api<DynamicObject>,
    crr: &DynamicObject,
    version: ManagerVersion,
) -> Option<()> {
    if !recreating(crr)
        || has_label(crr, NO_UNREADY_LABEL)
        || crr.data["spec"]["strategy"]["unreadyGracePeriodSeconds"].is_null()
        || unready_acquired_at(crr).is_some()
        || annotation(crr, UNREADY_ACQUIRED_ANNOTATION).is_some()
    {
        return None;
    }
    let name = crr.metadata.name.as_deref()?;
    // Second precision, as metav1.Time and RFC 3339 in the annotation carry it.
    let now = Timestamp::from_second(Timestamp::now().as_second()).ok()?;
    match version {
        ManagerVersion::Master => {
            let mut conditions = crr.data["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conditions.push(json!({
                "type": "PreRecreateGrace",
                "status": "True",
                "reason": "PreRecreateGrace",
                "message": "",
                "lastTransitionTime": now.to_string(),
            }));
            crrs.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "conditions": conditions } })),
            )
            .await
            .ok()
            .map(drop)
        }
        ManagerVersion::V1_9 => {
            annotate(crrs, name, UNREADY_ACQUIRED_ANNOTATION, now.to_string()).await
        }
    }
}

/// Applies the reference CRDs (§9, master's). For a 1.9 cluster the CRR CRD is cut back to
/// what 1.9 installs: `v1alpha1` only, stored, no conversion.
fn apply_crds(server: &ApiServer, version: ManagerVersion) {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(REFERENCE_CRDS).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = if version == ManagerVersion::V1_9
            && path.to_string_lossy().contains("containerrecreaterequests")
        {
            let mut crd: Value = serde_yaml::from_str(&text).unwrap();
            let versions = crd["spec"]["versions"].as_array_mut().unwrap();
            versions.retain(|version| version["name"] == "v1alpha1");
            versions[0]["storage"] = json!(true);
            crd["spec"].as_object_mut().unwrap().remove("conversion");
            serde_yaml::to_string(&crd).unwrap()
        } else {
            text
        };
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    server
        .apply_crds_from_dir(dir.path())
        .expect("reference CRDs apply");
}

/// What a CRR container is made of, before the webhook fills it in: a name, and the
/// statusContext to use instead of the pod's (bad-input tests).
#[derive(Debug, Clone)]
pub struct CrrContainer {
    /// The container name.
    pub name: String,
    /// `statusContext.containerID` to write; `None`: the pod's, as the webhook does.
    pub container_id: Option<String>,
}

impl From<&str> for CrrContainer {
    fn from(name: &str) -> Self {
        Self {
            name: name.to_string(),
            container_id: None,
        }
    }
}

/// API server, kubelet stand-in, stand-in manager and (unless [`Controller::External`]) the
/// controller under test.
pub struct Bed {
    server: ApiServer,
    /// The node the kubelet runs and the controller serves.
    pub node: String,
    /// The real containerd.
    pub cri: CriClient,
    /// An API client.
    pub client: kube::Client,
    /// Pods in [`NAMESPACE`].
    pub pods: Api<Pod>,
    /// CRRs in [`NAMESPACE`], at the storage version ([`ManagerVersion::crr_version`]).
    pub crrs: Api<DynamicObject>,
    crr_version: KruiseVersion,
    /// Events in [`NAMESPACE`].
    pub events: Api<Event>,
    kubelet_config: KubeletConfig,
    kubelet: Option<KubeletHandle>,
    manager: tokio::task::JoinHandle<()>,
    controller: Option<(ShutdownTrigger, tokio::task::JoinHandle<()>)>,
    /// The in-process controller's metrics (empty for an external controller).
    pub metrics: Arc<kruised::metrics::Metrics>,
}

impl Bed {
    /// A bed whose controller speaks v1beta1, as against kruise master.
    pub async fn start() -> Self {
        Self::start_with(KruiseVersion::V1beta1).await
    }

    /// A bed whose controller speaks `version`; the stand-in manager is master's.
    pub async fn start_with(version: KruiseVersion) -> Self {
        Self::start_opts(BedOptions {
            controller: Controller::InProcess(version),
            ..BedOptions::default()
        })
        .await
    }

    /// A bed as `options` say.
    pub async fn start_opts(options: BedOptions) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let env = TestEnv::get();
        let server = ApiServer::start(ApiServerConfig::default())
            .await
            .expect("test bed API server starts");
        apply_crds(&server, options.manager);
        let client = server.client();
        let node = unique("crr-node");
        let endpoint = RuntimeEndpoint::parse(env.runtime_endpoint()).unwrap();
        let cri = CriClient::connect(&endpoint, None)
            .await
            .expect("containerd from scripts/testenv answers CRI");

        let kubelet_config = KubeletConfig {
            sync_interval: KUBELET_SYNC,
            ..KubeletConfig::new(
                node.clone(),
                client.clone(),
                env.var("RUNTIME_ENDPOINT"),
                env.var("CGROUP_PARENT_PREFIX"),
                env.dir().join("kubelet-pod-logs"),
            )
        };
        let kubelet = Kubelet::start(kubelet_config.clone())
            .await
            .expect("kubelet starts");

        let mut ready = None;
        let metrics = kruised::metrics::Metrics::new();
        let controller = match options.controller {
            Controller::InProcess(version) => {
                let recorder = Arc::new(Recorder::new(client.clone(), EVENT_COMPONENT, &node));
                let controller = RecreateController::new(
                    client.clone(),
                    &node,
                    version,
                    RuntimeSet::new(vec![cri.clone()]).unwrap(),
                    DEFAULT_WORKERS,
                    recorder,
                )
                .with_metrics(metrics.recreate.clone());
                let readiness = Readiness::new();
                let check: ReadinessCheck = readiness.register("crr");
                let (trigger, shutdown) = shutdown_channel();
                let task = tokio::spawn(controller.run(check.clone(), shutdown));
                ready = Some(check);
                Some((trigger, task))
            }
            Controller::External => None,
        };

        let bed = Self {
            pods: Api::namespaced(client.clone(), NAMESPACE),
            crrs: Api::namespaced_with(
                client.clone(),
                NAMESPACE,
                &crr_resource(options.manager.crr_version()),
            ),
            crr_version: options.manager.crr_version(),
            events: Api::namespaced(client.clone(), NAMESPACE),
            manager: tokio::spawn(play_manager(client.clone(), options.manager)),
            client,
            server,
            node,
            cri,
            kubelet_config,
            kubelet: Some(kubelet),
            controller,
            metrics,
        };
        if let Some(ready) = ready {
            eventually("the CRR watch to list", || async {
                ready.is_ready().then_some(())
            })
            .await;
        }
        bed
    }

    /// The API server.
    pub fn server(&self) -> &ApiServer {
        &self.server
    }

    /// Stops the kubelet stand-in: containers keep running, and exited ones stay exited
    /// until [`Bed::start_kubelet`].
    pub async fn stop_kubelet(&mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
    }

    /// Starts the kubelet stand-in again; it adopts the node's pods.
    pub async fn start_kubelet(&mut self) {
        assert!(self.kubelet.is_none(), "the kubelet is running already");
        self.kubelet = Some(
            Kubelet::start(self.kubelet_config.clone())
                .await
                .expect("kubelet starts"),
        );
    }

    /// Creates a pod of `containers` on this node and waits until all of them run.
    pub async fn running_pod(&self, name: &str, containers: &[&str]) -> Pod {
        let containers: Vec<Container> = containers
            .iter()
            .map(|name| shell_container(name))
            .collect();
        self.running_pod_of(name, containers).await
    }

    /// [`Bed::running_pod`] with these containers.
    pub async fn running_pod_of(&self, name: &str, containers: Vec<Container>) -> Pod {
        self.running_pod_from(Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
    }

    /// Creates `pod` in [`NAMESPACE`] on this node (terminationGracePeriodSeconds 5 unless
    /// set) and waits until all of its containers run.
    pub async fn running_pod_from(&self, pod: Pod) -> Pod {
        let pod = self.create_pod(pod).await;
        let name = pod.metadata.name.clone().unwrap();
        let count = pod.spec.as_ref().unwrap().containers.len();
        self.pod_until(&name, "all containers running", |pod| {
            let statuses = container_statuses(pod);
            statuses.len() == count && statuses.iter().all(running)
        })
        .await
    }

    /// Creates `pod` in [`NAMESPACE`] on this node unless it names a node
    /// (terminationGracePeriodSeconds 5 unless set).
    pub async fn create_pod(&self, mut pod: Pod) -> Pod {
        pod.metadata.namespace = Some(NAMESPACE.into());
        let spec = pod.spec.get_or_insert_default();
        spec.node_name.get_or_insert_with(|| self.node.clone());
        spec.termination_grace_period_seconds.get_or_insert(5);
        self.pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// Waits until `check` holds for the pod.
    pub async fn pod_until(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        eventually(&format!("pod {name}: {what}"), || async {
            let pod = self.pods.get(name).await.ok()?;
            check(&pod).then_some(pod)
        })
        .await
    }

    /// Creates a CRR as the webhook would complete it (§4.2): labels, statusContext from
    /// the pod status, strategy defaults.
    pub async fn create_crr(
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
    pub async fn create_crr_with_deadline(
        &self,
        pod: &Pod,
        containers: &[&str],
        strategy: Value,
        extra_labels: &[(&str, &str)],
        active_deadline_seconds: i64,
    ) -> DynamicObject {
        let containers: Vec<CrrContainer> = containers
            .iter()
            .map(|name| CrrContainer::from(*name))
            .collect();
        self.create_crr_full(
            pod,
            &containers,
            strategy,
            extra_labels,
            active_deadline_seconds,
        )
        .await
    }

    /// The most general create. Per container the webhook copies `lifecycle.preStop`
    /// (exec, httpGet, tcpSocket: a `sleep` hook leaves `preStop: {}`), the container's
    /// `ports` when the hook is an httpGet, and the statusContext from the pod status (§4.2).
    pub async fn create_crr_full(
        &self,
        pod: &Pod,
        containers: &[CrrContainer],
        strategy: Value,
        extra_labels: &[(&str, &str)],
        active_deadline_seconds: i64,
    ) -> DynamicObject {
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
            .map(|wanted| {
                let name = wanted.name.as_str();
                let status = container_statuses(pod)
                    .iter()
                    .find(|status| status.name == name);
                let spec = pod
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.containers.iter().find(|c| c.name == name));
                let pre_stop = spec
                    .and_then(|c| c.lifecycle.as_ref())
                    .and_then(|lifecycle| lifecycle.pre_stop.as_ref());
                let container_id = wanted.container_id.clone().unwrap_or_else(|| {
                    status
                        .and_then(|status| status.container_id.clone())
                        .unwrap_or_else(|| "containerd://0123456789abcdef".into())
                });
                let mut container = json!({
                    "name": name,
                    "statusContext": {
                        "containerID": container_id,
                        "restartCount": status.map_or(0, |status| status.restart_count),
                    },
                });
                if let Some(pre_stop) = pre_stop {
                    let mut copied = json!({});
                    for handler in ["exec", "httpGet", "tcpSocket"] {
                        let value = serde_json::to_value(pre_stop).unwrap()[handler].clone();
                        if !value.is_null() {
                            copied[handler] = value;
                        }
                    }
                    if pre_stop.http_get.is_some()
                        && let Some(ports) = spec.and_then(|c| c.ports.as_ref())
                    {
                        container["ports"] = serde_json::to_value(ports).unwrap();
                    }
                    container["preStop"] = copied;
                }
                container
            })
            .collect();
        self.create_crr_object(
            pod.metadata.name.as_deref().unwrap(),
            labels,
            containers,
            strategy,
            active_deadline_seconds,
        )
        .await
    }

    /// Creates a CRR from its parts, applying the webhook's strategy defaults (failurePolicy
    /// Fail, terminationGracePeriodSeconds 5, the pods' own).
    pub async fn create_crr_object(
        &self,
        pod_name: &str,
        labels: BTreeMap<String, String>,
        containers: Vec<Value>,
        mut strategy: Value,
        active_deadline_seconds: i64,
    ) -> DynamicObject {
        let defaults = strategy.as_object_mut().unwrap();
        defaults
            .entry("failurePolicy")
            .or_insert_with(|| json!("Fail"));
        defaults
            .entry("terminationGracePeriodSeconds")
            .or_insert_with(|| json!(5));
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("apps.kruise.io/{}", self.crr_version.as_str()),
            "kind": "ContainerRecreateRequest",
            "metadata": { "name": unique("crr"), "namespace": NAMESPACE, "labels": labels },
            "spec": {
                "podName": pod_name,
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

    /// Merge-patches the CRR's labels (`null` removes one).
    pub async fn patch_labels(&self, name: &str, labels: Value) {
        self.crrs
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": labels } })),
            )
            .await
            .expect("patch CRR labels");
    }

    /// Waits until `check` holds for the CRR; the panic shows the CRR and the pods.
    pub async fn crr_until(
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

    /// Waits until the CRR is Completed.
    pub async fn completed(&self, name: &str) -> DynamicObject {
        self.crr_until(name, "Completed", |crr| phase(crr) == "Completed")
            .await
    }

    /// The events with `reason` recorded on the pod with this UID.
    pub async fn pod_events(&self, pod_uid: &str, reason: &str) -> Vec<Event> {
        self.events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|event| {
                event.involved_object.uid.as_deref() == Some(pod_uid)
                    && event.reason.as_deref() == Some(reason)
            })
            .collect()
    }

    /// The `Killing` events recorded on the pod with this UID.
    pub async fn killing_events(&self, pod_uid: &str) -> Vec<Event> {
        self.pod_events(pod_uid, "Killing").await
    }

    /// How many times the controller stopped container `name` of the pod: the counts of
    /// the `Killing` events on `spec.containers{name}`.
    pub async fn kills(&self, pod_uid: &str, name: &str) -> i32 {
        let field_path = format!("spec.containers{{{name}}}");
        self.killing_events(pod_uid)
            .await
            .iter()
            .filter(|event| event.involved_object.field_path.as_deref() == Some(&field_path))
            .map(|event| event.count.unwrap_or(1))
            .sum()
    }

    /// The runtime's containers of the pod named `name`, as `(id, state)`.
    pub async fn runtime_containers(&self, pod_uid: &str, name: &str) -> Vec<(String, i32)> {
        self.cri
            .list_pod_containers(pod_uid)
            .await
            .unwrap()
            .into_iter()
            .filter(|container| {
                container
                    .metadata
                    .as_ref()
                    .is_some_and(|metadata| metadata.name == name)
            })
            .map(|container| (container.id, container.state))
            .collect()
    }

    /// Deletes the pod (grace period 1 s, which also bounds the kubelet's run of preStop
    /// hooks that never end) and waits until it and its containers are gone.
    pub async fn delete_pod_and_wait(&self, name: &str, uid: &str) {
        self.pods
            .delete(name, &DeleteParams::default().grace_period(1))
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

    /// Stops the controller and the stand-in manager, deletes every pod (waiting for its
    /// containers to go) and stops the kubelet.
    pub async fn finish(mut self) {
        if let Some((trigger, task)) = self.controller.take() {
            trigger.trigger();
            task.await.unwrap();
        }
        self.manager.abort();
        if self.kubelet.is_none() {
            self.start_kubelet().await;
        }
        let pods = self.pods.list(&ListParams::default()).await.unwrap();
        for pod in pods.items {
            let name = pod.metadata.name.clone().unwrap();
            let uid = pod.metadata.uid.clone().unwrap();
            if pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref())
                != Some(self.node.as_str())
            {
                // Not run here: nothing of it is in the runtime.
                self.pods.delete(&name, &DeleteParams::default()).await.ok();
                continue;
            }
            self.delete_pod_and_wait(&name, &uid).await;
        }
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
    }
}

/// One connection to a [`HookServer`].
#[derive(Debug, Clone)]
pub struct Hit {
    /// The address the connection was made to.
    pub local: SocketAddr,
    /// What the client sent: its first line, or, for HTTP, the request head.
    pub data: String,
}

/// How a [`HookServer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Reads what comes, up to the end of the first line, and closes (TCP hooks, `nc` in
    /// exec hooks).
    Close,
    /// Reads an HTTP request head and answers `200 OK` once [`HookServer::release`] was
    /// called; until then the connection stays open without an answer.
    HttpWhenReleased,
}

/// A TCP server that records every connection: the far end of preStop hooks.
pub struct HookServer {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    release: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HookServer {
    /// Listens on `ip`, an ephemeral port.
    pub async fn start(ip: &str, answer: Answer) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind hook server");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (release, released) = watch::channel(false);
        let task = tokio::spawn({
            let hits = hits.clone();
            async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    let hits = hits.clone();
                    let mut released = released.clone();
                    tokio::spawn(async move {
                        let local = stream.local_addr().unwrap_or(addr);
                        let mut data = Vec::new();
                        let mut buffer = [0u8; 1024];
                        loop {
                            match stream.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => data.extend_from_slice(&buffer[..n]),
                            }
                            let end: &[u8] = match answer {
                                Answer::Close => b"\n",
                                Answer::HttpWhenReleased => b"\r\n\r\n",
                            };
                            if data.windows(end.len()).any(|window| window == end) {
                                break;
                            }
                        }
                        hits.lock().unwrap().push(Hit {
                            local,
                            data: String::from_utf8_lossy(&data).into_owned(),
                        });
                        if answer == Answer::HttpWhenReleased {
                            if released.wait_for(|released| *released).await.is_err() {
                                return;
                            }
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                                .await;
                        }
                        let _ = stream.shutdown().await;
                    });
                }
            }
        });
        Self {
            addr,
            hits,
            release,
            task,
        }
    }

    /// Every connection so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits for at least `count` connections and returns them all.
    pub async fn wait_for_hits(&self, count: usize) -> Vec<Hit> {
        eventually(
            &format!("{count} connection(s) to {}", self.addr),
            || async {
                let hits = self.hits();
                (hits.len() >= count).then_some(hits)
            },
        )
        .await
    }

    /// Lets held HTTP requests have their answer.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether cargo sets the variable `name` for a test process (or a build script): the
/// package's identity, which is not this build's.
fn set_by_cargo_for_the_test(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    EXACT.contains(&name) || name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_BIN_EXE_")
}

/// The `kruised` binary of this workspace, built if needed.
///
/// The build runs without the variables cargo set for this test: build scripts (ring's)
/// rerun when `CARGO_PKG_NAME` and the like change, so inheriting them would rebuild
/// ring, rustls, kube and kruised here and again in the next build from a shell.
pub fn kruised_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut build = Command::new(env!("CARGO"));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_the_test) {
            build.env_remove(name);
        }
    }
    let status = build
        .args(["build", "--quiet", "--bin", "kruised"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(root.join("target"));
    target.join("debug/kruised")
}

/// A running `kruised` for the bed's node; SIGKILLed when dropped, so a failing assertion
/// leaves no process behind.
pub struct Kruised {
    child: Child,
    port: u16,
}

impl Kruised {
    /// Starts `binary` against the bed's API server (kubeconfig at `kubeconfig`) and the
    /// test environment's containerd. Its log goes to stderr when `KRUISED_TEST_LOG` is set.
    pub fn start(binary: &Path, kubeconfig: &Path, node: &str) -> Self {
        Self::start_with(binary, kubeconfig, node, &[], None)
    }

    /// Like [`Kruised::start`], logging JSON (`--log-format=json`) to the file `log`.
    pub fn start_json_logged(binary: &Path, kubeconfig: &Path, node: &str, log: &Path) -> Self {
        Self::start_with(binary, kubeconfig, node, &["--log-format=json"], Some(log))
    }

    /// [`Kruised::start`] with `args` added to the command line, and its log appended to
    /// `log` when given (the fault-injection suite reads it for panics).
    pub fn start_with(
        binary: &Path,
        kubeconfig: &Path,
        node: &str,
        args: &[&str],
        log: Option<&Path>,
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open the kruised log"),
            ),
            None if std::env::var_os("KRUISED_TEST_LOG").is_some() => Stdio::inherit(),
            None => Stdio::null(),
        };
        let child = Command::new(binary)
            .args(["--node-name", node])
            .args(["--runtime-endpoint", TestEnv::get().runtime_endpoint()])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("kruised starts");
        Self { child, port }
    }

    /// The port of its HTTP endpoints (`/readyz`, `/metrics`) on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL kruised");
        self.child.wait().expect("reap kruised");
    }
}

impl Drop for Kruised {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
