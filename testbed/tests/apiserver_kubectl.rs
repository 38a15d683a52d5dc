//! The test API server against a real client: kubectl.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use testbed::apiserver::{ApiServer, ApiServerConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const REFERENCE_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");

struct Kubectl {
    kubeconfig: tempfile::NamedTempFile,
    _server: ApiServer,
}

impl Kubectl {
    async fn start() -> Self {
        let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
        let kubeconfig = tempfile::NamedTempFile::new().unwrap();
        server.write_kubeconfig(kubeconfig.path()).unwrap();
        let version = Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .await;
        let version = version.expect("kubectl is installed (scripts/testenv install provides it)");
        eprintln!(
            "kubectl under test: {}",
            String::from_utf8_lossy(&version.stdout).trim()
        );
        Self {
            kubeconfig,
            _server: server,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig.path())
            .args(args);
        command
    }

    /// Runs kubectl, asserting success; returns stdout.
    async fn run(&self, args: &[&str]) -> String {
        self.run_with_stdin(args, None).await
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut command = self.command(args);
        command.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(input) = stdin {
            use tokio::io::AsyncWriteExt;
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
            drop(pipe);
        }
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finished")
            .unwrap();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeName: node-1
  containers:
  - name: main
    image: busybox
  - name: side
    image: busybox
"#;

const CRR: &str = r#"
apiVersion: apps.kruise.io/v1beta1
kind: ContainerRecreateRequest
metadata:
  name: crr1
  labels: {crr.apps.kruise.io/node-name: node-1}
spec:
  podName: web
  containers:
  - name: main
"#;

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_reference_crds_and_creates_custom_resources() {
    let kubectl = Kubectl::start().await;
    let out = kubectl.run(&["apply", "-f", REFERENCE_CRDS]).await;
    assert_eq!(out.lines().count(), 5, "{out}");
    let crds = kubectl.run(&["get", "crds", "-o", "name"]).await;
    assert!(crds.contains("nodeimages.apps.kruise.io"), "{crds}");
    kubectl
        .run_with_stdin(&["create", "-f", "-"], Some(CRR))
        .await;
    let yaml = kubectl.run(&["get", "crr", "crr1", "-o", "yaml"]).await;
    assert!(
        yaml.contains("podName: web") && yaml.contains("uid:"),
        "{yaml}"
    );
    let names = kubectl
        .run(&[
            "get",
            "containerrecreaterequests.v1alpha1.apps.kruise.io",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(names.trim(), "containerrecreaterequest.apps.kruise.io/crr1");
    kubectl
        .run(&[
            "patch",
            "crr",
            "crr1",
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"phase":"Recreating"}}"#,
        ])
        .await;
    let phase = kubectl
        .run(&["get", "crr", "crr1", "-o", "jsonpath={.status.phase}"])
        .await;
    assert_eq!(phase, "Recreating");
    let rejected = kubectl
        .command(&[
            "patch",
            "crr",
            "crr1",
            "--type",
            "strategic",
            "-p",
            r#"{"spec":{"podName":"x"}}"#,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        !rejected.status.success(),
        "strategic merge is not supported for custom resources"
    );
    let _ = Path::new(REFERENCE_CRDS);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_crud_patch_and_selectors_on_pods() {
    let kubectl = Kubectl::start().await;
    kubectl
        .run_with_stdin(&["create", "-f", "-"], Some(POD))
        .await;
    let yaml = kubectl.run(&["get", "pod", "web", "-o", "yaml"]).await;
    assert!(
        yaml.contains("resourceVersion:") && yaml.contains("nodeName: node-1"),
        "{yaml}"
    );

    kubectl
        .run(&[
            "patch",
            "pod",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"tier":"front"}}}"#,
        ])
        .await;
    kubectl
        .run(&[
            "patch",
            "pod",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/containers/0/image","value":"busybox:2"}]"#,
        ])
        .await;
    kubectl
        .run(&[
            "patch",
            "pod",
            "web",
            "--type",
            "strategic",
            "-p",
            r#"{"spec":{"containers":[{"name":"side","image":"busybox:3"}]}}"#,
        ])
        .await;
    let images = kubectl
        .run(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.spec.containers[*].image}",
        ])
        .await;
    assert_eq!(images, "busybox:2 busybox:3");
    kubectl
        .run(&[
            "patch",
            "pod",
            "web",
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ])
        .await;
    let phase = kubectl
        .run(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"])
        .await;
    assert_eq!(phase, "Running");

    assert_eq!(
        kubectl
            .run(&["get", "pods", "-l", "tier=front", "-o", "name"])
            .await
            .trim(),
        "pod/web"
    );
    assert_eq!(
        kubectl
            .run(&["get", "pods", "-l", "tier!=front", "-o", "name"])
            .await
            .trim(),
        ""
    );
    assert_eq!(
        kubectl
            .run(&[
                "get",
                "pods",
                "--field-selector",
                "spec.nodeName=node-1",
                "-o",
                "name"
            ])
            .await
            .trim(),
        "pod/web"
    );
    assert_eq!(
        kubectl
            .run(&[
                "get",
                "pods",
                "--field-selector",
                "spec.nodeName=node-2",
                "-o",
                "name"
            ])
            .await
            .trim(),
        ""
    );
    kubectl
        .run(&["delete", "pod", "web", "--grace-period=0", "--force"])
        .await;
    assert_eq!(kubectl.run(&["get", "pods", "-o", "name"]).await.trim(), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_get_watch_streams_changes() {
    let kubectl = Kubectl::start().await;
    let mut watch = kubectl
        .command(&[
            "get",
            "configmaps",
            "-w",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.metadata.name}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // Give the watch a moment to be established by checking with a first object.
    // `kubectl create configmap` sends protobuf, which this server does not decode;
    // `create -f` sends JSON.
    kubectl
        .run_with_stdin(
            &["create", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n"),
        )
        .await;
    let mut seen = Vec::new();
    let start = Instant::now();
    let mut created_second = false;
    while start.elapsed() < Duration::from_secs(30) {
        let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await
        else {
            continue;
        };
        seen.push(line.clone());
        if line == "ADDED first" && !created_second {
            created_second = true;
            kubectl.run(&["label", "configmap", "first", "x=y"]).await;
            kubectl.run(&["delete", "configmap", "first"]).await;
        }
        if line.starts_with("DELETED") {
            break;
        }
    }
    assert_eq!(seen, vec!["ADDED first", "MODIFIED first", "DELETED first"]);
}
