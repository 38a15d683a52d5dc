//! The container image: its file tree is assembled by deploy/image/assemble-rootfs.sh (the
//! script the Dockerfile runs), packed into an OCI layout with umoci, pushed to the test
//! registry, pulled by the test containerd over CRI and run with the DaemonSet's
//! lockdown (read-only root, every capability dropped, RuntimeDefault seccomp), as the
//! image's own non-root user.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kruised::cri::{CriClient, RuntimeEndpoint};
use kruised::proto::runtime::v1 as cri;
use support::{TestEnv, eventually, unique};

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/testenv install provides it)"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assemble(rootfs: &Path) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/image/assemble-rootfs.sh"
    );
    run(
        "sh",
        &[
            script,
            env!("CARGO_BIN_EXE_kruised"),
            rootfs.to_str().unwrap(),
        ],
    );
}

#[test]
fn image_tree_holds_the_binary_and_exactly_its_libraries_and_no_shell() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    assemble(&rootfs);
    assert!(rootfs.join("usr/local/bin/kruised").is_file());
    // The toolchain has no musl target offline: a glibc binary, whose every library
    // (as `ldd` resolves it) is in the tree at the same path.
    let ldd = run("ldd", &[env!("CARGO_BIN_EXE_kruised")]);
    let libraries: Vec<&str> = ldd
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .collect();
    assert!(
        libraries.iter().any(|l| l.contains("libc.so")),
        "a glibc binary: {ldd}"
    );
    for library in &libraries {
        assert!(
            rootfs.join(library.trim_start_matches('/')).is_file(),
            "{library} missing from the image"
        );
    }
    for absent in ["bin/sh", "usr/bin", "sbin"] {
        assert!(
            !rootfs.join(absent).exists(),
            "{absent} should not be shipped"
        );
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
}

#[tokio::test(flavor = "multi_thread")]
async fn image_is_pulled_and_run_by_containerd_as_non_root() {
    let env = TestEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    assemble(&rootfs);

    // OCI layout: one layer holding the tree, entrypoint and user as in the Dockerfile.
    let layout = dir.path().join("oci");
    let image = format!("{}:kruised", layout.display());
    run("umoci", &["init", "--layout", layout.to_str().unwrap()]);
    run("umoci", &["new", "--image", &image]);
    run(
        "umoci",
        &["insert", "--image", &image, rootfs.to_str().unwrap(), "/"],
    );
    run(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.entrypoint",
            "/usr/local/bin/kruised",
            "--config.user",
            "65532:65532",
            "--config.exposedports",
            "10221/tcp",
            "--architecture",
            "amd64",
            "--os",
            "linux",
        ],
    );
    let tag = unique("v");
    let reference = env.image(&format!("test/kruised:{tag}"));
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{image}"),
            &format!("docker://{reference}"),
        ],
    );

    let client = CriClient::connect(
        &RuntimeEndpoint::parse(env.runtime_endpoint()).unwrap(),
        None,
    )
    .await
    .expect("containerd from scripts/testenv answers CRI");
    client
        .pull_image(
            cri::PullImageRequest {
                image: Some(kruised::cri::client::image_spec(&reference)),
                ..Default::default()
            },
            Some(Duration::from_secs(120)),
        )
        .await
        .expect("containerd pulls the image from the test registry");

    let uid = unique("image-test");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: uid.clone(),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: String::new(),
        log_directory: logs.display().to_string(),
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
    let sandbox = client
        .run_pod_sandbox(sandbox_config.clone(), "")
        .await
        .expect("RunPodSandbox");
    let container_config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "kruised".into(),
            attempt: 0,
        }),
        image: Some(kruised::cri::client::image_spec(&reference)),
        // No command: the image's entrypoint; `crds` prints without any cluster.
        args: vec!["crds".into()],
        labels: HashMap::from([("io.kubernetes.pod.uid".to_string(), uid.clone())]),
        log_path: "kruised.log".into(),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                readonly_rootfs: true,
                no_new_privs: true,
                capabilities: Some(cri::Capability {
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container = client
        .create_container(&sandbox, container_config, sandbox_config)
        .await
        .expect("CreateContainer");
    client
        .start_container(&container)
        .await
        .expect("StartContainer");
    let status = eventually(Duration::from_secs(60), "the container to exit", || {
        let client = &client;
        let container = &container;
        async move {
            let status = client.container_status(container).await.ok()?;
            (status.state == cri::ContainerState::ContainerExited as i32).then_some(status)
        }
    })
    .await;
    let log = std::fs::read_to_string(logs.join("kruised.log")).unwrap_or_default();
    assert_eq!(status.exit_code, 0, "{}\n{log}", status.message);
    assert!(
        log.contains("name: nodeimages.apps.kruise.io"),
        "the containerised kruised printed the CRDs:\n{log}"
    );
    let image_status = client
        .image_status(&reference)
        .await
        .unwrap()
        .expect("the image is in containerd");
    assert_eq!(image_status.username, "", "user is numeric");
    assert_eq!(
        image_status.uid.map(|u| u.value),
        Some(65532),
        "non-root by default"
    );

    let _ = client.remove_container(&container).await;
    let _ = client.stop_pod_sandbox(&sandbox).await;
    let _ = client.remove_pod_sandbox(&sandbox).await;
    let _ = client.remove_image(&reference).await;
}
