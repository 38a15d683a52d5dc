//! Benchmark of the NodePodProbe controller (issue "NodePodProbe and container meta",
//! Benchmarks): the kruised binary's CPU and RSS with 100 probes at a 1 s period on one node,
//! and the jitter of probe scheduling at the median and p99. Nothing is asserted on time.
//!
//! Ignored by default because it takes about a minute and measures rather than tests; run it
//! with the binary built first:
//!
//! ```sh
//! cargo build --release --bin kruised   # or a debug build, named with KRUISED_BIN
//! cargo test -p testbed --test podprobe_bench -- --ignored --nocapture
//! ```
//!
//! The 100 probes are TCP probes (10 pods × 10 probes) against 100 listeners in this process
//! on 127.0.0.1 (the pods' IP in the host-network test bed): the accept times of each listener
//! are the times its probe ran, so the jitter is measured from outside the agent, as the
//! deviation of each interval between two runs of a probe from its 1 s period.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kruised::api::v1alpha1::{ContainerProbe, NodePodProbe, NodePodProbeSpec, PodProbe};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testbed::apiserver::{ApiServer, ApiServerConfig};
use testbed::kubelet::{Kubelet, KubeletConfig};
use testbed::testenv::TestEnv;
use tokio::net::TcpListener;

const PODS: usize = 10;
const PROBES_PER_POD: usize = 10;
/// Time for every probe to have started (they spread their first run over one period).
const WARM_UP: Duration = Duration::from_secs(5);
/// The measurement window.
const WINDOW: Duration = Duration::from_secs(30);
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

/// The kruised binary: `KRUISED_BIN`, else the release build, else the debug build.
fn kruised_binary() -> PathBuf {
    if let Ok(path) = std::env::var("KRUISED_BIN") {
        return PathBuf::from(path);
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("kruised"))
        .find(|path| path.exists())
        .expect("build kruised first (cargo build --release --bin kruised) or set KRUISED_BIN")
}

/// Kills the agent when dropped, also when the benchmark fails half-way.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User plus system CPU time of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the agent runs");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The agent's `/metrics` text.
async fn metrics_text(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

/// CPU (percent of one core) over `window`, then RSS and peak RSS in MiB.
async fn measure(pid: u32, window: Duration) -> (f64, f64, f64) {
    let (ticks, started) = (cpu_ticks(pid), Instant::now());
    tokio::time::sleep(window).await;
    let used = (cpu_ticks(pid) - ticks) as f64 / 100.0;
    let cpu = used / started.elapsed().as_secs_f64() * 100.0;
    let mib = |kib: u64| kib as f64 / 1024.0;
    (
        cpu,
        mib(status_kib(pid, "VmRSS:")),
        mib(status_kib(pid, "VmHWM:")),
    )
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture after building kruised"]
async fn bench_one_hundred_probes_at_one_second() {
    let env = TestEnv::get();
    let binary = kruised_binary();
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    server
        .apply_crds_from_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/crds"),
        )
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let client = server.client();
    let node = format!("bench-probe-{}", std::process::id());
    let kubelet = Kubelet::start(KubeletConfig::new(
        node.clone(),
        client.clone(),
        env.var("RUNTIME_ENDPOINT"),
        env.var("CGROUP_PARENT_PREFIX"),
        env.dir().join("kubelet-pod-logs"),
    ))
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let probes: Api<NodePodProbe> = Api::all(client.clone());
    probes
        .create(
            &PostParams::default(),
            &NodePodProbe::new(&node, NodePodProbeSpec::default()),
        )
        .await
        .unwrap();

    // 100 listeners; each records when its probe connected.
    let accepts: Arc<Mutex<HashMap<u16, Vec<Instant>>>> = Arc::default();
    let mut ports = Vec::new();
    for _ in 0..PODS * PROBES_PER_POD {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        ports.push(port);
        let accepts = Arc::clone(&accepts);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let at = Instant::now();
                drop(stream);
                accepts.lock().unwrap().entry(port).or_default().push(at);
            }
        });
    }

    for index in 0..PODS {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(format!("bench-{index}")),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.clone()),
                termination_grace_period_seconds: Some(2),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(env.image("test/busybox:1")),
                    command: Some(vec!["/bin/sh".into(), "-c".into(), SERVE.into()]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let running = loop {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        let running: Vec<Pod> = list
            .into_iter()
            .filter(|pod| {
                pod.status
                    .as_ref()
                    .and_then(|status| status.container_statuses.as_ref())
                    .is_some_and(|statuses| {
                        statuses
                            .iter()
                            .all(|s| s.state.as_ref().is_some_and(|s| s.running.is_some()))
                    })
            })
            .collect();
        if running.len() == PODS {
            break running;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let metrics_port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent = Agent(
        Command::new(&binary)
            .env("NODE_NAME", &node)
            .args(["--runtime-endpoint", env.runtime_endpoint()])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--addr", &format!("127.0.0.1:{metrics_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = agent.0.id();
    tokio::time::sleep(WARM_UP).await;
    let (idle_cpu, idle_rss, _) = measure(pid, Duration::from_secs(10)).await;

    let mut next_port = ports.iter();
    let pod_probes: Vec<PodProbe> = running
        .iter()
        .map(|pod| PodProbe {
            name: pod.metadata.name.clone().unwrap(),
            namespace: "default".into(),
            uid: pod.metadata.uid.clone().unwrap(),
            ip: "127.0.0.1".into(),
            probes: Some(
                (0..PROBES_PER_POD)
                    .map(|probe| ContainerProbe {
                        name: format!("bench#tcp-{probe}"),
                        container_name: "app".into(),
                        probe: Probe {
                            tcp_socket: Some(TCPSocketAction {
                                host: None,
                                port: IntOrString::Int(i32::from(*next_port.next().unwrap())),
                            }),
                            period_seconds: Some(1),
                            ..Probe::default()
                        },
                    })
                    .collect(),
            ),
        })
        .collect();
    probes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podProbes": pod_probes}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(WARM_UP).await;
    accepts.lock().unwrap().clear();
    let (cpu, rss, peak) = measure(pid, WINDOW).await;

    let mut deviations: Vec<f64> = accepts
        .lock()
        .unwrap()
        .values()
        .flat_map(|times| {
            times
                .windows(2)
                .map(|pair| (pair[1] - pair[0]).as_secs_f64() - 1.0)
                .map(f64::abs)
                .collect::<Vec<_>>()
        })
        .collect();
    let probed = accepts.lock().unwrap().len();
    assert_eq!(
        probed,
        PODS * PROBES_PER_POD,
        "every probe ran in the window"
    );
    deviations.sort_by(f64::total_cmp);
    let status = probes.get(&node).await.unwrap().status.unwrap_or_default();
    let reported: usize = status
        .pod_probe_statuses
        .iter()
        .flatten()
        .map(|pod| pod.probe_states.as_ref().map_or(0, Vec::len))
        .sum();

    println!("kruised binary: {}", binary.display());
    println!("idle (no probes, {PODS} pods): CPU {idle_cpu:.1}% of a core, RSS {idle_rss:.1} MiB");
    println!(
        "{} probes at 1 s: CPU {cpu:.1}% of a core over {WINDOW:?}, RSS {rss:.1} MiB (peak {peak:.1} MiB)",
        PODS * PROBES_PER_POD
    );
    println!(
        "scheduling jitter |interval − 1 s| over {} intervals: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        deviations.len(),
        percentile(&deviations, 0.5) * 1000.0,
        percentile(&deviations, 0.99) * 1000.0,
        deviations.last().copied().unwrap_or_default() * 1000.0
    );
    println!("status entries reported: {reported}");
    // Where the time goes, from the agent's own metrics: tick lateness and CRI call latency.
    let text = metrics_text(metrics_port).await;
    for (label, sum, count) in [
        (
            "tick lateness (agent)",
            "kruised_probe_schedule_delay_seconds_sum",
            "kruised_probe_schedule_delay_seconds_count",
        ),
        (
            "CRI ListContainers",
            "kruised_cri_call_duration_seconds_sum{method=\"ListContainers\",code=\"OK\"}",
            "kruised_cri_call_duration_seconds_count{method=\"ListContainers\",code=\"OK\"}",
        ),
        (
            "CRI ContainerStatus",
            "kruised_cri_call_duration_seconds_sum{method=\"ContainerStatus\",code=\"OK\"}",
            "kruised_cri_call_duration_seconds_count{method=\"ContainerStatus\",code=\"OK\"}",
        ),
    ] {
        let value = |name: &str| {
            text.lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        println!("{label}: mean {:.2} ms", value(sum) / value(count) * 1000.0);
    }

    drop(agent);
    for pod in pods.list(&ListParams::default()).await.unwrap().items {
        let _ = pods
            .delete(
                pod.metadata.name.as_deref().unwrap(),
                &DeleteParams::default(),
            )
            .await;
    }
    let cri = kruised::cri::CriClient::connect(
        &kruised::cri::RuntimeEndpoint::parse(env.runtime_endpoint()).unwrap(),
        None,
    )
    .await
    .unwrap();
    for pod in &running {
        let uid = pod.metadata.uid.as_deref().unwrap();
        while !cri.list_pod_containers(uid).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    kubelet.shutdown().await;
}
