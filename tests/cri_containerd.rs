//! The CRI layer against real containerd and real registries (scripts/testenv).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use kruised::cri::{
    ContainerId, CriClient, CriError, DiscoveryConfig, PullFailure, RuntimeEndpoint,
};
use kruised::proto::runtime::v1 as cri;
use support::{TestEnv, closed_port, unique};

async fn client() -> CriClient {
    let env = TestEnv::get();
    let endpoint = RuntimeEndpoint::parse(env.runtime_endpoint()).unwrap();
    CriClient::connect(&endpoint, None)
        .await
        .expect("containerd from scripts/testenv answers CRI")
}

fn pull_request(image: &str, auth: Option<(&str, &str)>) -> cri::PullImageRequest {
    cri::PullImageRequest {
        image: Some(kruised::cri::client::image_spec(image)),
        auth: auth.map(|(username, password)| cri::AuthConfig {
            username: username.to_string(),
            password: password.to_string(),
            ..Default::default()
        }),
        sandbox_config: None,
    }
}

async fn pull_error(client: &CriClient, image: &str, auth: Option<(&str, &str)>) -> CriError {
    client
        .pull_image(pull_request(image, auth), Some(Duration::from_secs(60)))
        .await
        .expect_err("pull should fail")
}

/// A host-network pod sandbox shaped like the kubelet's (empty hostname, cgroupfs parent).
struct Pod {
    uid: String,
    sandbox_id: String,
    config: cri::PodSandboxConfig,
}

async fn run_host_network_pod(client: &CriClient) -> Pod {
    let env = TestEnv::get();
    let name = unique("pod");
    let uid = unique("uid");
    let log_directory = env.dir().join("pod-logs").join(&uid);
    std::fs::create_dir_all(&log_directory).unwrap();
    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        // containerd 1.6 fails on a hostname with the host UTS namespace (testenv §5.1).
        hostname: String::new(),
        log_directory: log_directory.display().to_string(),
        labels: HashMap::from([
            ("io.kubernetes.pod.uid".to_string(), uid.clone()),
            ("io.kubernetes.pod.name".to_string(), name.clone()),
            (
                "io.kubernetes.pod.namespace".to_string(),
                "default".to_string(),
            ),
        ]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod{uid}", env.var("CGROUP_PARENT_PREFIX")),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox_id = client
        .run_pod_sandbox(config.clone(), "")
        .await
        .expect("RunPodSandbox");
    Pod {
        uid,
        sandbox_id,
        config,
    }
}

impl Pod {
    async fn start_container(
        &self,
        client: &CriClient,
        name: &str,
        attempt: u32,
        script: &str,
    ) -> String {
        let image = TestEnv::get().image("test/busybox:1");
        client
            .pull_image(pull_request(&image, None), Some(Duration::from_secs(60)))
            .await
            .expect("pull busybox");
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt,
            }),
            image: Some(kruised::cri::client::image_spec(&image)),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            labels: HashMap::from([
                ("io.kubernetes.pod.uid".to_string(), self.uid.clone()),
                ("io.kubernetes.container.name".to_string(), name.to_string()),
            ]),
            annotations: HashMap::from([(
                "io.kubernetes.container.restartCount".to_string(),
                attempt.to_string(),
            )]),
            log_path: format!("{name}_{attempt}.log"),
            ..Default::default()
        };
        let id = client
            .create_container(&self.sandbox_id, config, self.config.clone())
            .await
            .expect("CreateContainer");
        client.start_container(&id).await.expect("StartContainer");
        id
    }

    async fn remove(self, client: &CriClient) {
        client
            .stop_pod_sandbox(&self.sandbox_id)
            .await
            .expect("StopPodSandbox");
        client
            .remove_pod_sandbox(&self.sandbox_id)
            .await
            .expect("RemovePodSandbox");
    }
}

const TERM_TRAPPING: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";
const TERM_IGNORING: &str = "trap '' TERM; while true; do sleep 0.2; done";

#[tokio::test]
async fn discovery_by_runtime_endpoint_names_containerd() {
    let env = TestEnv::get();
    let runtimes = DiscoveryConfig {
        runtime_endpoint: Some(env.runtime_endpoint().to_string()),
        ..Default::default()
    }
    .discover(None)
    .await
    .expect("discovery");
    let info = runtimes.primary().info();
    assert_eq!(info.name, "containerd");
    assert!(!info.version.is_empty());
    assert_eq!(info.api_version, "v1");
    let owned = ContainerId::parse("containerd://abc").unwrap();
    assert_eq!(
        runtimes.for_container(&owned).unwrap().info().name,
        "containerd"
    );
    let foreign = ContainerId::parse("cri-o://abc").unwrap();
    assert!(matches!(
        runtimes.for_container(&foreign),
        Err(CriError::UnknownRuntime { .. })
    ));
}

#[tokio::test]
async fn discovery_by_socket_file_is_relative_to_host_var_run() {
    let env = TestEnv::get();
    let socket = std::path::PathBuf::from(env.var("CONTAINERD_SOCKET"));
    let runtimes = DiscoveryConfig {
        host_var_run: socket.parent().unwrap().to_path_buf(),
        socket_file: Some(socket.file_name().unwrap().to_string_lossy().into_owned()),
        runtime_endpoint: None,
    }
    .discover(None)
    .await
    .expect("discovery");
    assert_eq!(runtimes.all().len(), 1);
    assert_eq!(runtimes.primary().endpoint().path(), socket);
}

#[tokio::test]
async fn pull_from_plain_registry_then_list_and_image_status() {
    let client = client().await;
    let image = TestEnv::get().image("test/busybox:1");
    let image_ref = client
        .pull_image(pull_request(&image, None), Some(Duration::from_secs(60)))
        .await
        .expect("pull");
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let images = client.list_images(None).await.unwrap();
    let listed = images
        .iter()
        .find(|i| i.repo_tags.contains(&image))
        .expect("pulled image is listed");
    assert_eq!(listed.id, image_ref);
    let status = client.image_status(&image).await.unwrap().expect("present");
    assert_eq!(status.id, image_ref);
    let absent = TestEnv::get().image("test/never-pulled:1");
    assert_eq!(client.image_status(&absent).await.unwrap(), None);
}

#[tokio::test]
async fn pull_with_credentials_from_htpasswd_registry() {
    let env = TestEnv::get();
    let client = client().await;
    let image = format!("{}/test/busybox:1", env.registry_auth());
    let auth = (env.var("REGISTRY_USER"), env.var("REGISTRY_PASSWORD"));
    let image_ref = client
        .pull_image(
            pull_request(&image, Some(auth)),
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("authenticated pull");
    assert!(image_ref.starts_with("sha256:"));
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_unauthorized_and_permanent() {
    let env = TestEnv::get();
    let client = client().await;
    let image = format!("{}/test/busybox:1", env.registry_auth());
    for auth in [Some((env.var("REGISTRY_USER"), "wrong-password")), None] {
        let error = pull_error(&client, &image, auth).await;
        assert_eq!(
            error.pull_failure(),
            Some(PullFailure::Unauthorized),
            "{error}"
        );
        assert!(!error.is_retryable(), "{error}");
    }
}

#[tokio::test]
async fn missing_tag_is_image_not_found_and_permanent() {
    let client = client().await;
    let image = TestEnv::get().image("test/busybox:no-such-tag");
    let error = pull_error(&client, &image, None).await;
    assert_eq!(error.code(), Some(tonic::Code::NotFound), "{error}");
    assert_eq!(error.pull_failure(), Some(PullFailure::ImageNotFound));
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("not found"), "{error}");
}

#[tokio::test]
async fn registry_down_is_unavailable_and_retryable() {
    let client = client().await;
    let image = format!("127.0.0.1:{}/test/busybox:1", closed_port());
    let error = pull_error(&client, &image, None).await;
    assert_eq!(
        error.pull_failure(),
        Some(PullFailure::RegistryUnavailable),
        "{error}"
    );
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("connection refused"), "{error}");
}

#[tokio::test]
async fn sandbox_container_exec_stop_and_attempt_one_in_the_same_sandbox() {
    let client = client().await;
    let pod = run_host_network_pod(&client).await;
    let sandbox = client.pod_sandbox_status(&pod.sandbox_id).await.unwrap();
    let state = sandbox.status.as_ref().unwrap().state;
    assert_eq!(state, cri::PodSandboxState::SandboxReady as i32);

    let first = pod.start_container(&client, "main", 0, TERM_TRAPPING).await;
    let status = client.container_status(&first).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(status.metadata.as_ref().unwrap().name, "main");

    let exec = client
        .exec_sync(
            &first,
            vec![
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 3".into(),
            ],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(exec.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&exec.stderr), "err\n");

    client
        .stop_container(&first, Duration::from_secs(10))
        .await
        .unwrap();
    let stopped = client.container_status(&first).await.unwrap();
    assert_eq!(stopped.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(
        stopped.exit_code, 0,
        "the TERM trap exits cleanly within the grace period"
    );

    // What the kubelet does after a kill: attempt 1 in the same sandbox.
    let second = pod.start_container(&client, "main", 1, TERM_TRAPPING).await;
    assert_ne!(first, second);
    let status = client.container_status(&second).await.unwrap();
    assert_eq!(status.metadata.as_ref().unwrap().attempt, 1);
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    let containers = client.list_pod_containers(&pod.uid).await.unwrap();
    let mut ids: Vec<_> = containers.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(ids, expected);
    pod.remove(&client).await;
}

#[tokio::test]
async fn stop_kills_a_term_ignoring_container_after_the_grace_period() {
    let client = client().await;
    let pod = run_host_network_pod(&client).await;
    let id = pod
        .start_container(&client, "stubborn", 0, TERM_IGNORING)
        .await;
    client
        .stop_container(&id, Duration::from_secs(2))
        .await
        .unwrap();
    let status = client.container_status(&id).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 137, "SIGKILL after the grace period");
    pod.remove(&client).await;
}

#[tokio::test]
async fn unknown_container_is_not_found_and_permanent() {
    let client = client().await;
    let error = client.container_status("doesnotexist").await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::NotFound), "{error}");
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("not found"), "{error}");
}

#[tokio::test]
async fn exec_past_its_timeout_is_deadline_exceeded() {
    let client = client().await;
    let pod = run_host_network_pod(&client).await;
    let id = pod.start_container(&client, "main", 0, TERM_TRAPPING).await;
    let error = client
        .exec_sync(
            &id,
            vec!["sleep".into(), "30".into()],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::DeadlineExceeded), "{error}");
    assert!(error.is_retryable());
    pod.remove(&client).await;
}
