//! The kubelet stand-in against real containerd (scripts/testenv) and the test bed's API
//! server: pods run, restart, report status and are torn down as a kubelet does it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kruised::cri::{CriClient, RuntimeEndpoint};
use kruised::proto::runtime::v1 as cri;
use testbed::kubelet::spec::{
    PodIdentity, container_config, container_hash_hex, pod_log_directory, sandbox_config,
};

/// The values `scripts/testenv up` writes into `DIR/env`.
struct TestEnv {
    vars: HashMap<String, String>,
}

impl TestEnv {
    /// The running test environment: `TESTENV_DIR`, else one brought up (once per test
    /// binary) under the workspace's target folder. It never skips: a missing
    /// environment fails the test loudly.
    fn get() -> &'static TestEnv {
        static ENV: OnceLock<TestEnv> = OnceLock::new();
        ENV.get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let dir = match std::env::var("TESTENV_DIR") {
                Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => {
                    let dir = workspace.join("target/testenv");
                    let script = workspace.join("scripts/testenv");
                    let status = Command::new(&script)
                        .arg("up")
                        .arg(&dir)
                        .stdout(std::process::Stdio::null())
                        .status()
                        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
                    assert!(
                        status.success(),
                        "scripts/testenv up {} failed",
                        dir.display()
                    );
                    dir
                }
            };
            let text = std::fs::read_to_string(dir.join("env")).unwrap_or_else(|e| {
                panic!(
                    "the test environment is not up ({}/env: {e}); run scripts/testenv up DIR",
                    dir.display()
                )
            });
            let vars = text
                .lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            TestEnv { vars }
        })
    }

    fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("test environment has no {key}"))
    }

    fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.var("REGISTRY"))
    }

    fn dir(&self) -> PathBuf {
        PathBuf::from(self.var("TESTENV_DIR"))
    }
}

async fn cri_client() -> CriClient {
    let endpoint = RuntimeEndpoint::parse(TestEnv::get().var("RUNTIME_ENDPOINT")).unwrap();
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
