//! The kruised binary SIGKILLed mid-pull and restarted: the unfinished tag finishes, and
//! the finished one is not pulled again (its final status is adopted, §3.5).

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kruised::apiversions::KruiseVersion;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use support::recreate_harness::kruised_binary;
use testbed::apiserver::{ApiServer, ApiServerConfig};
use testbed::testenv::TestEnv;

const REFERENCE_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the agent when dropped, so a failing assertion leaves no process behind.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(binary: &std::path::Path, kubeconfig: &std::path::Path, port: u16) -> Agent {
    Agent(
        Command::new(binary)
            .args([
                "--node-name",
                "restart-node",
                "--runtime-endpoint",
                TestEnv::get().runtime_endpoint(),
            ])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn pull_calls(port: u16) -> Option<u64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(
        text.lines()
            .filter(|l| {
                l.starts_with("kruised_cri_call_duration_seconds_count{method=\"PullImage\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum(),
    )
}

async fn tag(api: &Api<DynamicObject>, image: &str, tag: &str) -> Value {
    let status = api.get("restart-node").await.unwrap().data["status"].clone();
    status["imageStatuses"][image]["tags"]
        .as_array()
        .and_then(|tags| tags.iter().find(|t| t["tag"] == tag).cloned())
        .unwrap_or(Value::Null)
}

async fn wait_for(
    api: &Api<DynamicObject>,
    image: &str,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let found = tag(api, image, name).await;
        if done(&found) {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}: {found}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_pull_then_restart_finishes_and_never_repulls_finished_tags() {
    let env = TestEnv::get();
    let binary = kruised_binary();
    let proxy = testbed::proxy::Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        env.registry().parse().unwrap(),
        0,
    )
    .await
    .unwrap();
    testbed::proxy::trust_plain_http(&env.dir().join("certs.d"), proxy.addr()).unwrap();
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    server
        .apply_crds_from_dir(std::path::Path::new(REFERENCE_CRDS))
        .unwrap();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    server.write_kubeconfig(kubeconfig.path()).unwrap();
    let api: Api<DynamicObject> = Api::all_with(
        server.client(),
        &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
    );
    let fast = env.image("test/busybox");
    let slow = format!("{}/test/big", proxy.addr());
    let spec = |t: &str| {
        json!({"tag": t, "version": 1, "createdAt": "2026-11-25T10:00:00Z",
                                "imagePullPolicy": "Always", "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}})
    };
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "restart-node"},
        "spec": {"images": {fast.clone(): {"tags": [spec("1")]}, slow.clone(): {"tags": [spec("1")]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();

    let port = free_port();
    let mut first = start_agent(&binary, kubeconfig.path(), port);
    let finished = wait_for(&api, &fast, "1", "the fast tag to succeed", |t| {
        t["phase"] == "Succeeded"
    })
    .await;
    wait_for(&api, &slow, "1", "the slow tag to be pulling", |t| {
        t["phase"] == "Pulling"
    })
    .await;
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();

    let port = free_port();
    let second = start_agent(&binary, kubeconfig.path(), port);
    proxy.set_rate(u64::MAX);
    wait_for(
        &api,
        &slow,
        "1",
        "the slow tag to finish after the restart",
        |t| t["phase"] == "Succeeded",
    )
    .await;
    let again = tag(&api, &fast, "1").await;
    assert_eq!(
        again["completionTime"], finished["completionTime"],
        "the finished tag kept its status"
    );
    let calls = pull_calls(port).expect("metrics of the restarted agent");
    assert_eq!(
        calls, 1,
        "the restarted agent pulled only the unfinished tag"
    );
    drop(second);
}
