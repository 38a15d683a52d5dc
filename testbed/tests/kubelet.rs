//! The kubelet stand-in against real containerd (scripts/testenv) and the test bed's API
//! server: pods run, restart, report status and are torn down as a kubelet does it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, EnvVar, ExecAction, Lifecycle, LifecycleHandler, Node, Pod,
    PodCondition, PodReadinessGate, PodSpec, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kruised::cri::{CriClient, RuntimeEndpoint};
use kruised::proto::runtime::v1 as cri;
use kube::api::{Api, DeleteParams, PostParams};
use testbed::apiserver::{ApiServer, ApiServerConfig};
use testbed::kubelet::spec::{
    PodIdentity, container_config, container_hash_hex, pod_log_directory, sandbox_config,
};
use testbed::kubelet::{Kubelet, KubeletConfig, KubeletHandle};
use testbed::testenv::TestEnv;

async fn cri_client() -> CriClient {
    let endpoint = RuntimeEndpoint::parse(TestEnv::get().runtime_endpoint()).unwrap();
    CriClient::connect(&endpoint, None)
        .await
        .expect("containerd from scripts/testenv answers CRI")
}

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

/// Polls `check` every 50 ms until it returns `Some`, or panics after `deadline`.
async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A busybox container running `script` under `sh -c`.
fn shell_container(name: &str, script: &str) -> Container {
    Container {
        name: name.to_string(),
        image: Some(TestEnv::get().image("test/busybox:1")),
        command: Some(vec!["/bin/sh".into(), "-c".into()]),
        args: Some(vec![script.to_string()]),
        ..Default::default()
    }
}

/// Exits 0 on SIGTERM, so stops are quick.
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";

fn pod_for(node: &str, name: &str, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([("app".into(), name.to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_string()),
            containers,
            termination_grace_period_seconds: Some(5),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn translated_configs_run_on_containerd_with_the_kubelet_labels_env_and_log_path() {
    let env = TestEnv::get();
    let cri = cri_client().await;
    let mut pod = pod_for(
        "translate-node",
        &unique("translate"),
        vec![Container {
            env: Some(vec![EnvVar {
                name: "GREETING".into(),
                value: Some("hello".into()),
                ..Default::default()
            }]),
            ..shell_container(
                "app",
                &format!("echo $(GREETING) from $HOSTNAME_UNSET; {SERVE}"),
            )
        }],
    );
    pod.metadata.uid = Some(unique("uid"));
    let identity = PodIdentity::of(&pod);
    let log_dir = env.dir().join("kubelet-translate-logs");
    let config = sandbox_config(
        &pod,
        "translate-node",
        &log_dir,
        env.var("CGROUP_PARENT_PREFIX"),
        0,
    );
    std::fs::create_dir_all(pod_log_directory(&log_dir, &identity).join("app")).unwrap();
    let sandbox = cri
        .run_pod_sandbox(config.clone(), "")
        .await
        .expect("RunPodSandbox");

    let app = &pod.spec.as_ref().unwrap().containers[0];
    let image = app.image.clone().unwrap();
    cri.pull_image(
        cri::PullImageRequest {
            image: Some(kruised::cri::client::image_spec(&image)),
            ..Default::default()
        },
        Some(Duration::from_secs(60)),
    )
    .await
    .expect("pull busybox");
    let id = cri
        .create_container(&sandbox, container_config(&pod, app, 0), config)
        .await
        .expect("CreateContainer");
    cri.start_container(&id).await.expect("StartContainer");

    let log = pod_log_directory(&log_dir, &identity).join("app/0.log");
    let line = eventually(
        Duration::from_secs(10),
        "the container's first log line",
        || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).ok()?;
                text.lines().next().map(str::to_string)
            }
        },
    )
    .await;
    assert!(line.ends_with("stdout F hello from"), "{line}");

    let status = cri.container_status(&id).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(status.labels["io.kubernetes.pod.uid"], identity.uid);
    assert_eq!(status.labels["io.kubernetes.container.name"], "app");
    assert_eq!(
        status.annotations["io.kubernetes.container.hash"],
        container_hash_hex(app)
    );
    assert_eq!(
        status.annotations["io.kubernetes.container.restartCount"],
        "0"
    );
    assert_eq!(
        status.annotations["io.kubernetes.pod.terminationGracePeriod"],
        "5"
    );
    let listed = cri.list_pod_containers(&identity.uid).await.unwrap();
    assert_eq!(listed.len(), 1);

    cri.stop_pod_sandbox(&sandbox).await.unwrap();
    cri.remove_pod_sandbox(&sandbox).await.unwrap();
    assert!(
        cri.list_pod_containers(&identity.uid)
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------- with the API server

/// One API server, one kubelet for a fresh node, and a CRI client on the same containerd.
struct Bed {
    _server: ApiServer,
    client: kube::Client,
    kubelet: Option<KubeletHandle>,
    node: String,
    cri: CriClient,
    pods: Api<Pod>,
}

/// The sync interval of the kubelets under test.
const SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// Deadline for anything the kubelet should do within a few syncs.
const DEADLINE: Duration = Duration::from_secs(20);

impl Bed {
    async fn start() -> Self {
        // RUST_LOG=testbed=debug shows what the kubelet does.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let server = ApiServer::start(ApiServerConfig::default())
            .await
            .expect("test bed API server starts");
        let client = server.client();
        let node = unique("node");
        let mut bed = Self {
            _server: server,
            pods: Api::namespaced(client.clone(), "default"),
            client,
            kubelet: None,
            node,
            cri: cri_client().await,
        };
        bed.start_kubelet().await;
        bed
    }

    fn kubelet_config(&self) -> KubeletConfig {
        let env = TestEnv::get();
        KubeletConfig {
            sync_interval: SYNC_INTERVAL,
            ..KubeletConfig::new(
                self.node.clone(),
                self.client.clone(),
                env.var("RUNTIME_ENDPOINT"),
                env.var("CGROUP_PARENT_PREFIX"),
                env.dir().join("kubelet-pod-logs"),
            )
        }
    }

    async fn start_kubelet(&mut self) {
        let kubelet = Kubelet::start(self.kubelet_config())
            .await
            .expect("kubelet starts");
        self.kubelet = Some(kubelet);
    }

    async fn stop_kubelet(&mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
    }

    async fn create(&self, name: &str, containers: Vec<Container>) -> Pod {
        self.create_pod(pod_for(&self.node, name, containers)).await
    }

    async fn create_pod(&self, pod: Pod) -> Pod {
        self.pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// Polls the pod until `check` accepts it.
    async fn pod_until(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        eventually(DEADLINE, what, || async {
            let pod = self.pods.get(name).await.ok()?;
            check(&pod).then_some(pod)
        })
        .await
    }

    async fn running(&self, name: &str) -> Pod {
        self.pod_until(
            name,
            &format!("pod {name} Running with running containers"),
            |pod| phase(pod) == "Running" && all_running(pod),
        )
        .await
    }

    /// Deletes every pod of the test and waits for the kubelet to finish them, so no
    /// container outlives the test.
    async fn finish(mut self) {
        let pods = self.pods.list(&Default::default()).await.unwrap();
        for pod in pods.items {
            let name = pod.metadata.name.clone().unwrap();
            let uid = pod.metadata.uid.clone().unwrap();
            let _ = self.pods.delete(&name, &DeleteParams::default()).await;
            self.gone(&name, &uid).await;
        }
        self.stop_kubelet().await;
    }

    /// Waits until the pod is gone from the API and the runtime.
    async fn gone(&self, name: &str, uid: &str) {
        eventually(
            DEADLINE,
            &format!("pod {name} gone from the API"),
            || async { matches!(self.pods.get_opt(name).await, Ok(None)).then_some(()) },
        )
        .await;
        eventually(
            DEADLINE,
            &format!("pod {name} gone from containerd"),
            || async {
                let containers = self.cri.list_pod_containers(uid).await.ok()?;
                let sandboxes = self.sandboxes(uid).await;
                (containers.is_empty() && sandboxes.is_empty()).then_some(())
            },
        )
        .await;
    }

    async fn sandboxes(&self, uid: &str) -> Vec<cri::PodSandbox> {
        self.cri
            .list_pod_sandbox(Some(cri::PodSandboxFilter {
                label_selector: HashMap::from([(
                    "io.kubernetes.pod.uid".to_string(),
                    uid.to_string(),
                )]),
                ..Default::default()
            }))
            .await
            .unwrap()
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

fn container_statuses(pod: &Pod) -> &[ContainerStatus] {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_deref())
        .unwrap_or_default()
}

fn all_running(pod: &Pod) -> bool {
    let statuses = container_statuses(pod);
    !statuses.is_empty()
        && statuses.iter().all(|status| {
            status
                .state
                .as_ref()
                .is_some_and(|state| state.running.is_some())
        })
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// The runtime container ID from a `containerd://<id>` status.
fn runtime_id(status: &ContainerStatus) -> &str {
    status
        .container_id
        .as_deref()
        .and_then(|id| id.strip_prefix("containerd://"))
        .unwrap_or_else(|| panic!("not a containerd ID: {:?}", status.container_id))
}

#[tokio::test]
async fn node_registers_ready_with_kubelet_labels_and_the_runtime_version() {
    let bed = Bed::start().await;
    let nodes: Api<Node> = Api::all(bed.client.clone());
    let node = eventually(DEADLINE, "the Node registered Ready", || async {
        let node = nodes.get_opt(&bed.node).await.ok()??;
        let ready = node
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(node)
    })
    .await;
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], bed.node);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    let status = node.status.unwrap();
    let info = status.node_info.unwrap();
    assert!(
        info.container_runtime_version
            .starts_with("containerd://1."),
        "{}",
        info.container_runtime_version
    );
    assert!(info.kubelet_version.starts_with("v1."));
    let addresses: Vec<(String, String)> = status
        .addresses
        .unwrap()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addresses,
        vec![
            ("InternalIP".to_string(), "127.0.0.1".to_string()),
            ("Hostname".to_string(), bed.node.clone()),
        ]
    );
    bed.finish().await;
}

#[tokio::test]
async fn a_pod_runs_in_containerd_and_reports_running_with_containerd_ids() {
    let bed = Bed::start().await;
    let started = Instant::now();
    let created = bed
        .create(
            "web",
            vec![
                shell_container("app", SERVE),
                shell_container("sidecar", SERVE),
            ],
        )
        .await;
    let pod = bed.running("web").await;
    eprintln!(
        "timing: pod create → Running in the API: {:?}",
        started.elapsed()
    );

    let uid = created.metadata.uid.clone().unwrap();
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    assert_eq!(condition(&pod, "Ready"), Some("True"));
    assert_eq!(condition(&pod, "ContainersReady"), Some("True"));
    let names: Vec<&str> = container_statuses(&pod)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, vec!["app", "sidecar"], "spec order");

    let runtime = bed.cri.list_pod_containers(&uid).await.unwrap();
    assert_eq!(runtime.len(), 2);
    for status in container_statuses(&pod) {
        assert_eq!(status.restart_count, 0);
        assert!(status.ready);
        assert!(status.image_id.contains("sha256:"), "{}", status.image_id);
        let id = runtime_id(status);
        let container = runtime
            .iter()
            .find(|c| c.id == id)
            .expect("status names a CRI container");
        assert_eq!(
            container.labels["io.kubernetes.container.name"],
            status.name
        );
        assert_eq!(container.labels["io.kubernetes.pod.name"], "web");
        assert_eq!(container.labels["io.kubernetes.pod.namespace"], "default");
        assert_eq!(
            container.annotations["io.kubernetes.container.restartCount"],
            "0"
        );
        assert!(
            container
                .annotations
                .contains_key("io.kubernetes.container.hash")
        );
    }
    let sandboxes = bed.sandboxes(&uid).await;
    assert_eq!(sandboxes.len(), 1);
    assert_eq!(
        sandboxes[0].state,
        cri::PodSandboxState::SandboxReady as i32
    );
    bed.finish().await;
}

#[tokio::test]
async fn a_stopped_container_restarts_as_attempt_one_with_a_new_id() {
    let bed = Bed::start().await;
    bed.create("restart", vec![shell_container("app", SERVE)])
        .await;
    let pod = bed.running("restart").await;
    let first = runtime_id(&container_statuses(&pod)[0]).to_string();

    let stopped = Instant::now();
    bed.cri
        .stop_container(&first, Duration::from_secs(10))
        .await
        .expect("StopContainer");
    let stop_call = stopped.elapsed();
    let pod = bed
        .pod_until(
            "restart",
            "restartCount 1 with a new running container",
            |pod| {
                let status = &container_statuses(pod)[0];
                status.restart_count == 1 && runtime_id(status) != first && all_running(pod)
            },
        )
        .await;
    eprintln!(
        "timing: container stop → restarted status: {:?} (of which the StopContainer call {stop_call:?})",
        stopped.elapsed()
    );

    let status = &container_statuses(&pod)[0];
    let last = status
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(
        last.container_id.as_deref(),
        Some(format!("containerd://{first}").as_str())
    );
    assert_eq!(last.exit_code, 0, "the TERM trap exits cleanly");
    let second = bed.cri.container_status(runtime_id(status)).await.unwrap();
    assert_eq!(second.metadata.as_ref().unwrap().attempt, 1);
    assert_eq!(
        second.annotations["io.kubernetes.container.restartCount"],
        "1"
    );
    assert_eq!(phase(&pod), "Running");
    bed.finish().await;
}

#[tokio::test]
async fn readiness_gates_keep_ready_false_until_the_gate_condition_is_true() {
    let bed = Bed::start().await;
    let mut pod = pod_for(&bed.node, "gated", vec![shell_container("app", SERVE)]);
    pod.spec.as_mut().unwrap().readiness_gates = Some(vec![PodReadinessGate {
        condition_type: "KruisePodReady".into(),
    }]);
    bed.create_pod(pod).await;
    let pod = bed
        .pod_until("gated", "ContainersReady True", |pod| {
            condition(pod, "ContainersReady") == Some("True")
        })
        .await;
    assert_eq!(condition(&pod, "Ready"), Some("False"));

    // Set the gate as kruise-manager does: pods/status update with conflict retry.
    eventually(DEADLINE, "the gate condition written", || async {
        let mut pod = bed.pods.get("gated").await.ok()?;
        let status = pod.status.get_or_insert_with(Default::default);
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(PodCondition {
                type_: "KruisePodReady".into(),
                status: "True".into(),
                ..Default::default()
            });
        bed.pods
            .replace_status("gated", &PostParams::default(), &pod)
            .await
            .ok()
            .map(drop)
    })
    .await;
    let pod = bed
        .pod_until("gated", "Ready True", |pod| {
            condition(pod, "Ready") == Some("True")
        })
        .await;
    assert_eq!(
        condition(&pod, "KruisePodReady"),
        Some("True"),
        "the kubelet keeps conditions it does not own"
    );
    bed.finish().await;
}

#[tokio::test]
async fn an_exec_readiness_probe_decides_container_readiness() {
    let bed = Bed::start().await;
    let mut app = shell_container("app", SERVE);
    app.readiness_probe = Some(Probe {
        exec: Some(ExecAction {
            command: Some(vec!["test".into(), "-f".into(), "/tmp/ready".into()]),
        }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    });
    bed.create("probed", vec![app]).await;
    let pod = bed.running("probed").await;
    assert!(!container_statuses(&pod)[0].ready);
    assert_eq!(condition(&pod, "Ready"), Some("False"));

    let id = runtime_id(&container_statuses(&pod)[0]).to_string();
    let touch = bed
        .cri
        .exec_sync(
            &id,
            vec!["touch".into(), "/tmp/ready".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(touch.exit_code, 0);
    bed.pod_until(
        "probed",
        "the container ready after its probe passes",
        |pod| container_statuses(pod)[0].ready && condition(pod, "Ready") == Some("True"),
    )
    .await;
    bed.finish().await;
}

#[tokio::test]
async fn deleting_a_pod_runs_pre_stop_then_tears_down_the_sandbox_and_the_pod_leaves_the_api() {
    let bed = Bed::start().await;
    let mut app = shell_container("app", SERVE);
    app.lifecycle = Some(Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo pre-stop-ran > /proc/1/fd/1".into(),
                ]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let created = bed.create("doomed", vec![app]).await;
    let uid = created.metadata.uid.clone().unwrap();
    bed.running("doomed").await;

    let deleted = Instant::now();
    bed.pods
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete");
    bed.gone("doomed", &uid).await;
    eprintln!(
        "timing: pod delete → gone from API and containerd: {:?}",
        deleted.elapsed()
    );

    let log = pod_log_directory(
        &TestEnv::get().dir().join("kubelet-pod-logs"),
        &PodIdentity::of(&created),
    )
    .join("app/0.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("stdout F pre-stop-ran"), "{text}");
    bed.finish().await;
}

#[tokio::test]
async fn a_pod_deleted_with_grace_zero_by_someone_else_is_torn_down() {
    let bed = Bed::start().await;
    let created = bed
        .create("forced", vec![shell_container("app", SERVE)])
        .await;
    let uid = created.metadata.uid.clone().unwrap();
    bed.running("forced").await;
    bed.pods
        .delete(
            "forced",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("delete with grace 0");
    bed.gone("forced", &uid).await;
    bed.finish().await;
}

#[tokio::test]
async fn restart_policy_never_leaves_an_exited_container_exited() {
    let bed = Bed::start().await;
    let mut pod = pod_for(&bed.node, "once", vec![shell_container("app", "exit 3")]);
    pod.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    let created = bed.create_pod(pod).await;
    let uid = created.metadata.uid.clone().unwrap();
    let pod = bed
        .pod_until("once", "phase Failed", |pod| phase(pod) == "Failed")
        .await;
    let status = &container_statuses(&pod)[0];
    let terminated = status.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));
    assert_eq!(status.restart_count, 0);
    assert_eq!(condition(&pod, "Ready"), Some("False"));

    // Watch a window of many kubelet syncs: nothing is restarted.
    let window = Instant::now();
    while window.elapsed() < SYNC_INTERVAL * 8 {
        let containers = bed.cri.list_pod_containers(&uid).await.unwrap();
        assert_eq!(containers.len(), 1, "no second attempt");
        assert_eq!(
            containers[0].state,
            cri::ContainerState::ContainerExited as i32
        );
        tokio::time::sleep(SYNC_INTERVAL / 2).await;
    }
    let pod = bed.pods.get("once").await.unwrap();
    assert_eq!(phase(&pod), "Failed");
    assert_eq!(container_statuses(&pod)[0].restart_count, 0);
    bed.finish().await;
}

#[tokio::test]
async fn a_restarted_kubelet_adopts_its_running_pods_without_duplicates() {
    let mut bed = Bed::start().await;
    let created = bed
        .create("adopted", vec![shell_container("app", SERVE)])
        .await;
    let uid = created.metadata.uid.clone().unwrap();
    let pod = bed.running("adopted").await;
    let first = runtime_id(&container_statuses(&pod)[0]).to_string();

    bed.stop_kubelet().await;
    bed.start_kubelet().await;
    // The new kubelet manages the old container: it restarts it when it stops.
    bed.cri
        .stop_container(&first, Duration::from_secs(10))
        .await
        .unwrap();
    let pod = bed
        .pod_until("adopted", "the adopted container restarted", |pod| {
            container_statuses(pod)[0].restart_count == 1 && all_running(pod)
        })
        .await;
    assert_ne!(runtime_id(&container_statuses(&pod)[0]), first);
    assert_eq!(bed.sandboxes(&uid).await.len(), 1, "one sandbox");
    assert_eq!(
        bed.cri.list_pod_containers(&uid).await.unwrap().len(),
        2,
        "attempts 0 and 1 only"
    );
    bed.finish().await;
}

#[tokio::test]
async fn sandboxes_of_pods_that_no_longer_exist_are_removed() {
    let bed = Bed::start().await;
    // A sandbox of this node for a pod the API never had, as left by a crash.
    let mut ghost = pod_for(&bed.node, "ghost", vec![]);
    ghost.metadata.uid = Some(unique("ghost-uid"));
    let env = TestEnv::get();
    let config = sandbox_config(
        &ghost,
        &bed.node,
        &env.dir().join("kubelet-pod-logs"),
        env.var("CGROUP_PARENT_PREFIX"),
        0,
    );
    let uid = ghost.metadata.uid.clone().unwrap();
    bed.cri
        .run_pod_sandbox(config, "")
        .await
        .expect("RunPodSandbox");
    eventually(DEADLINE, "the orphan sandbox removed", || async {
        bed.sandboxes(&uid).await.is_empty().then_some(())
    })
    .await;
    bed.finish().await;
}
