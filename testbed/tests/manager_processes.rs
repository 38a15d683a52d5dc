//! The whole product as an operator runs it, every part a real `kruised` process: one
//! `kruised manager` and three `kruised` agents with three node names sharing the test
//! environment's containerd, plus one kubelet stand-in for the first node. An ImagePullJob
//! is pulled on all three nodes and a plain ContainerRecreateRequest (no labels, as a user
//! writes it) restarts a container on the kubelet's node. The manager and the first agent
//! log JSON, which is checked for the fields an operator filters on: node, kind, object.

mod manager_support;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kruised::apiversions::KruiseVersion;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::DynamicObject;
use manager_support::{
    LEASE_NAMESPACE, NAMESPACE, create, eventually, jobs, node_images, ready_node, server,
};
use serde_json::json;
use support::recreate_harness::{Kruised, kruised_binary, unique};
use testbed::kubelet::{Kubelet, KubeletConfig};
use testbed::testenv::TestEnv;

/// Exits 0 on SIGTERM, so stops are quick.
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";

/// A `kruised manager` process; SIGKILLed when dropped.
struct ManagerProcess(Child);

impl ManagerProcess {
    /// Logs JSON to the file `log`.
    fn start(binary: &Path, kubeconfig: &Path, log: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(log).expect("create the manager's log");
        let child = Command::new(binary)
            .arg("manager")
            .arg("--log-format=json")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--leader-election-namespace", LEASE_NAMESPACE])
            .args(["--nodeimage-creation-delay", "0s"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("kruised manager starts");
        Self(child)
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn crrs(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &KruiseVersion::V1beta1.resource("ContainerRecreateRequest", "containerrecreaterequests"),
    )
}

fn restart_count(pod: &Pod, container: &str) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)
        .map(|s| s.restart_count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manager_and_three_agent_processes_pull_a_job_everywhere_and_recreate_a_plain_crr() {
    let env = TestEnv::get();
    let binary = kruised_binary();
    let server = server().await;
    let client = server.client();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    server.write_kubeconfig(kubeconfig.path()).unwrap();

    // The first node is the kubelet stand-in's (it registers its Node); the other two are
    // plain Ready nodes. Each gets its own agent process on the one containerd.
    let nodes = [unique("proc-a"), unique("proc-b"), unique("proc-c")];
    let kubelet = Kubelet::start(KubeletConfig {
        sync_interval: Duration::from_millis(200),
        ..KubeletConfig::new(
            nodes[0].clone(),
            client.clone(),
            env.var("RUNTIME_ENDPOINT"),
            env.var("CGROUP_PARENT_PREFIX"),
            env.dir().join("kubelet-pod-logs"),
        )
    })
    .await
    .expect("kubelet starts");
    for node in &nodes[1..] {
        ready_node(&client, node, json!({"pool": "processes"})).await;
    }
    let logs = tempfile::tempdir().unwrap();
    let agent_log = logs.path().join("agent.json");
    let manager_log = logs.path().join("manager.json");
    let _agents: Vec<Kruised> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| match i {
            0 => Kruised::start_json_logged(&binary, kubeconfig.path(), node, &agent_log),
            _ => Kruised::start(&binary, kubeconfig.path(), node),
        })
        .collect();
    let _manager = ManagerProcess::start(&binary, kubeconfig.path(), &manager_log);

    // The manager creates one NodeImage per Ready node.
    let images = node_images(&client);
    for node in &nodes {
        eventually(&format!("{node}'s NodeImage"), || async {
            images.get(node).await.ok()
        })
        .await;
    }

    // An ImagePullJob over the three nodes, two at a time.
    let image = env.image("test/busybox:1");
    let job = create(
        &jobs(&client),
        json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
               "metadata": {"name": "everywhere", "namespace": NAMESPACE},
               "spec": {"image": image, "parallelism": 2, "imagePullPolicy": "Always",
                        "selector": {"names": nodes}, "completionPolicy": {}}}),
    )
    .await;
    let uid = job.metadata.uid.clone().unwrap();
    let status = eventually("the job to complete on every node", || async {
        let status = jobs(&client).get("everywhere").await.ok()?.data["status"].clone();
        status["completionTime"].is_string().then_some(status)
    })
    .await;
    assert_eq!(status["desired"], 3, "{status}");
    assert_eq!(status["succeeded"], 3, "{status}");
    assert_eq!(status["failed"], 0, "{status}");
    // Each agent process reported its own node's pull.
    let (name, tag) = image.rsplit_once(':').unwrap();
    for node in &nodes {
        let object = images.get(node).await.unwrap();
        let tags = object.data["status"]["imageStatuses"][name]["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let reported = tags
            .iter()
            .find(|t| t["tag"] == tag)
            .unwrap_or_else(|| panic!("{node}: no status for {image} in {}", object.data));
        assert_eq!(reported["phase"], "Succeeded", "{node}: {reported}");
        assert!(
            reported["imageID"]
                .as_str()
                .is_some_and(|id| id.contains("@sha256:")),
            "{node}: {reported}"
        );
        let spec_tags = object.data["spec"]["images"][name]["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            spec_tags.iter().any(|t| t["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["uid"] == uid.as_str()))),
            "{node}: the job's entry is missing from {}",
            object.data["spec"]
        );
    }

    // A plain CRR on the kubelet's node: the manager admits it, that node's agent recreates
    // the container, the kubelet restarts it, the manager releases the CRR.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let container = Container {
        name: "app".into(),
        image: Some(env.image("test/busybox:1")),
        command: Some(vec!["/bin/sh".into(), "-c".into()]),
        args: Some(vec![SERVE.into()]),
        ..Default::default()
    };
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"nodeName": nodes[0], "containers": [container],
                     "terminationGracePeriodSeconds": 3}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    eventually("pod web running", || async {
        let pod = pods.get("web").await.ok()?;
        (restart_count(&pod, "app") == Some(0)
            && pod.status.as_ref()?.container_statuses.as_ref()?[0]
                .state
                .as_ref()?
                .running
                .is_some())
        .then_some(())
    })
    .await;
    create(
        &crrs(&client),
        json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "ContainerRecreateRequest",
               "metadata": {"name": "restart-app", "namespace": NAMESPACE},
               "spec": {"podName": "web", "containers": [{"name": "app"}]}}),
    )
    .await;
    let done = eventually("the CRR to complete", || async {
        let crr = crrs(&client).get("restart-app").await.ok()?;
        (crr.data["status"]["phase"] == "Completed").then_some(crr)
    })
    .await;
    assert_eq!(
        done.data["status"]["message"].as_str().unwrap_or(""),
        "",
        "{}",
        done.data
    );
    assert_eq!(
        done.data["status"]["containerRecreateStates"][0]["phase"], "Succeeded",
        "{}",
        done.data
    );
    let pod = pods.get("web").await.unwrap();
    assert_eq!(
        restart_count(&pod, "app"),
        Some(1),
        "recreated exactly once"
    );

    check_json_logs(&agent_log, &manager_log, &nodes[0]);

    pods.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("pod web gone", || async {
        pods.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    kubelet.shutdown().await;
}

/// Every line of both logs is a JSON object with time, level, target and message; the
/// agent's lines carry its node (root span), and work on an object names the object's kind
/// and `namespace/name` (or name) in a span, as do the manager's reconciles.
fn check_json_logs(agent_log: &Path, manager_log: &Path, node: &str) {
    let agent = json_lines(agent_log);
    let manager = json_lines(manager_log);
    for line in agent.iter().chain(&manager) {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "no {key} in {line}");
        }
    }
    // Lines logged inside the agent's tasks carry the root span with the node name.
    let started = agent
        .iter()
        .find(|line| line["message"] == "apps.kruise.io versions chosen")
        .expect("the agent logged its versions");
    assert!(has_span(started, "kruised", "node", node), "{started}");

    let pulled = agent
        .iter()
        .find(|line| line["message"] == "Successfully pull image")
        .expect("the agent logged the pull");
    assert!(has_span(pulled, "kruised", "node", node), "{pulled}");
    assert!(has_span(pulled, "pull", "kind", "NodeImage"), "{pulled}");
    assert!(has_span(pulled, "pull", "object", node), "{pulled}");

    let stopped = agent
        .iter()
        .find(|line| line["message"] == "stopped container")
        .expect("the agent logged the stop");
    assert!(has_span(stopped, "kruised", "node", node), "{stopped}");
    assert!(
        has_span(stopped, "crr", "kind", "ContainerRecreateRequest"),
        "{stopped}"
    );
    assert!(
        has_span(
            stopped,
            "crr",
            "object",
            &format!("{NAMESPACE}/restart-app")
        ),
        "{stopped}"
    );

    let job_line = manager
        .iter()
        .find(|line| {
            has_span(
                line,
                "reconcile",
                "object",
                &format!("{NAMESPACE}/everywhere"),
            )
        })
        .expect("the manager logged while reconciling the job");
    assert!(
        has_span(job_line, "reconcile", "kind", "ImagePullJob"),
        "{job_line}"
    );
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// Whether the line's span list has a span `span` whose field `field` is `value`.
fn has_span(line: &serde_json::Value, span: &str, field: &str, value: &str) -> bool {
    line["spans"].as_array().is_some_and(|spans| {
        spans
            .iter()
            .any(|s| s["name"] == span && s[field].as_str() == Some(value))
    })
}
