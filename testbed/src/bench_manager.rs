//! `testbed bench-manager`: `kruised manager` at scale (issue "kruised manager",
//! Benchmark). N simulated nodes: N Ready Node objects, N in-process image pullers (the
//! agent's NodeImage code, one kube client each) on N fake CRI runtimes served from this
//! process, the test API server in this process, and the manager as a separate
//! `kruised manager` process so its memory is its own. One ImagePullJob is run to
//! completion with each parallelism; the times, the API requests per node (manager and
//! agents separately) and the manager's memory are printed. Medians, no assertions on time.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kruised::agent::{ShutdownTrigger, shutdown_channel};
use kruised::apiversions::KruiseVersion;
use kruised::cri::fake::{FakeCri, PullScript};
use kruised::readiness::Readiness;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::DynamicObject;
use serde_json::json;

use crate::apiserver::{ApiServer, ApiServerConfig, Usage};
use crate::bench_process::{ManagerProcess, PHASE_DEADLINE, Scratch, proc_status_kib, until};
use crate::env::REFERENCE_CRDS;

/// The User-Agent of the simulated agents' clients, to tell them apart in the accounting.
const AGENT_USER_AGENT: &str = "kruised-agent-bench";
/// The User-Agent of the benchmark's own client (excluded from the per-node numbers).
const DRIVER_USER_AGENT: &str = "bench-manager-driver";

/// How often the benchmark looks at the API while waiting.
const POLL: Duration = Duration::from_millis(100);

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchManagerConfig {
    /// Simulated nodes.
    pub nodes: usize,
    /// Jobs per parallelism setting.
    pub rounds: usize,
    /// How long each fake CRI pull takes.
    pub pull_duration: Duration,
    /// The parallelism settings to measure; `None` is unlimited (parallelism ≥ nodes).
    pub parallelisms: Vec<Option<usize>>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn client_with_agent(url: &str, user_agent: &'static str) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::new(url.parse()?);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(user_agent),
    ));
    Ok(kube::Client::try_from(config)?)
}

/// Requests and bytes of the rows whose user agent starts with `prefix`, and the rows.
fn usage_of<'a>(rows: &'a [Usage], prefix: &str) -> (u64, u64, Vec<&'a Usage>) {
    let rows: Vec<&Usage> = rows
        .iter()
        .filter(|r| r.user_agent.starts_with(prefix))
        .collect();
    (
        rows.iter().map(|r| r.requests).sum(),
        rows.iter().map(|r| r.response_bytes).sum(),
        rows,
    )
}

/// One measured job.
struct Round {
    seconds: f64,
    manager_requests: u64,
    agent_requests: u64,
    manager_rows: BTreeMap<(String, String), u64>,
    cleanup_seconds: f64,
}

/// Runs the benchmark with the kruised binary at `kruised`.
pub async fn manager(config: BenchManagerConfig, kruised: &Path) -> anyhow::Result<()> {
    let nodes = config.nodes;
    let scratch = Scratch::new("bench-manager")?;
    let server = ApiServer::start(ApiServerConfig::default()).await?;
    server.apply_crds_from_dir(Path::new(REFERENCE_CRDS))?;
    let kubeconfig = scratch.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let driver = client_with_agent(&server.url(), DRIVER_USER_AGENT)?;
    let namespaces: Api<Namespace> = Api::all(driver.clone());
    for name in ["kruise-system", "kruise-daemon-config"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}}))?,
            )
            .await?;
    }
    let node_api: Api<Node> = Api::all(driver.clone());
    let name_of = |i: usize| format!("bench-node-{i:04}");
    for i in 0..nodes {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name_of(i), "labels": {
                "kubernetes.io/hostname": name_of(i), "bench": "manager"}},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))?;
        node_api.create(&PostParams::default(), &node).await?;
    }

    // Every node's runtime answers every pull of the benchmark's images after
    // `pull_duration`.
    let images: Vec<String> = config
        .parallelisms
        .iter()
        .enumerate()
        .flat_map(|(p, _)| (0..config.rounds).map(move |r| format!("bench.local/app-p{p}-r{r}")))
        .collect();
    let fleet = crate::fakecri::serve_many(&scratch.path().join("cri"), nodes, |_| {
        let fake = FakeCri::new();
        for image in &images {
            fake.script_pull(
                &format!("{image}:1"),
                PullScript::succeed_after(config.pull_duration),
            );
        }
        fake
    })
    .await?;

    // One in-process agent (image puller) per node, each with its own API client.
    let mut triggers: Vec<ShutdownTrigger> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let runtimes = kruised::cri::DiscoveryConfig {
            runtime_endpoint: Some(fleet.handle(i).endpoint().to_string()),
            ..Default::default()
        }
        .discover(None)
        .await?;
        let puller = kruised::imagepuller::build(
            client_with_agent(&server.url(), AGENT_USER_AGENT)?,
            &name_of(i),
            KruiseVersion::V1beta1,
            &runtimes,
            2,
            kruised::metrics::Metrics::new(),
            kruised::credentials::plugin::CredentialPlugins::none(),
        );
        let readiness = Readiness::new();
        let check = readiness.register("nodeImageInformerSynced");
        let (trigger, shutdown) = shutdown_channel();
        tokio::spawn(puller.run(check, shutdown));
        triggers.push(trigger);
    }

    let started = Instant::now();
    let mut process = ManagerProcess(
        Command::new(kruised)
            .args([
                "manager",
                "--addr",
                "127.0.0.1:0",
                "--leader-elect=false",
                "--nodeimage-creation-delay",
                "0s",
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = process.0.id();
    let node_images: Api<DynamicObject> = Api::all_with(
        driver.clone(),
        &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
    );
    loop {
        if let Some(status) = process.0.try_wait()? {
            anyhow::bail!("the manager exited: {status}");
        }
        let created = node_images.list(&ListParams::default()).await?.items.len();
        if created == nodes {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < PHASE_DEADLINE,
            "only {created} of {nodes} NodeImages after {PHASE_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let startup_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, _) = memory_kib(pid);

    let jobs: Api<DynamicObject> = Api::namespaced_with(
        driver.clone(),
        "default",
        &KruiseVersion::V1beta1.resource("ImagePullJob", "imagepulljobs"),
    );
    let mut results: Vec<(Option<usize>, Vec<Round>)> = Vec::new();
    for (p, parallelism) in config.parallelisms.iter().enumerate() {
        let mut rounds = Vec::new();
        for r in 0..config.rounds {
            let image = format!("bench.local/app-p{p}-r{r}");
            let name = format!("bench-p{p}-r{r}");
            let value = parallelism.unwrap_or(nodes.max(1) * 2);
            let job: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"image": format!("{image}:1"), "parallelism": value,
                         "selector": {"matchLabels": {"bench": "manager"}},
                         "completionPolicy": {"type": "Always"},
                         "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 1}}
            }))?;
            server.accounting().reset();
            let start = Instant::now();
            jobs.create(&PostParams::default(), &job).await?;
            let status = until(&format!("job {name} to complete"), POLL, || async {
                let status = jobs.get(&name).await.ok()?.data["status"].clone();
                status["completionTime"].is_string().then_some(status)
            })
            .await?;
            let seconds = start.elapsed().as_secs_f64();
            anyhow::ensure!(
                status["succeeded"] == json!(nodes),
                "job {name} completed without every node succeeding: {status}"
            );
            let usage = server.accounting().snapshot();
            let (manager_requests, _, manager_rows) = usage_of(&usage, "kruised-manager");
            let (agent_requests, _, _) = usage_of(&usage, AGENT_USER_AGENT);
            let manager_rows = manager_rows
                .into_iter()
                .map(|r| ((r.verb.clone(), r.resource.clone()), r.requests))
                .collect();
            // Clean up before the next job: the NodeImage controller drops the tags of a
            // deleted job (owner gone), which is not part of the measured job.
            let start_cleanup = Instant::now();
            jobs.delete(&name, &DeleteParams::default()).await?;
            until(
                &format!("the tags of {name} to be collected"),
                POLL,
                || async {
                    let list = node_images.list(&ListParams::default()).await.ok()?;
                    list.items
                        .iter()
                        .all(|n| n.data["spec"]["images"].get(&image).is_none())
                        .then_some(())
                },
            )
            .await?;
            rounds.push(Round {
                seconds,
                manager_requests,
                agent_requests,
                manager_rows,
                cleanup_seconds: start_cleanup.elapsed().as_secs_f64(),
            });
            let (rss, _) = memory_kib(pid);
            eprintln!(
                "parallelism {}: round {r}: {seconds:.1} s, manager {manager_requests} requests, agents {agent_requests}, manager RSS {:.1} MiB",
                value,
                rss as f64 / 1024.0
            );
        }
        results.push((*parallelism, rounds));
    }
    let (final_rss, peak_rss) = memory_kib(pid);
    drop(process);
    drop(triggers);

    println!(
        "kruised manager benchmark: {nodes} nodes (fake CRI, {} ms per pull), {} round(s) per setting",
        config.pull_duration.as_millis(),
        config.rounds
    );
    println!("  NodeImages created for all nodes after start  {startup_seconds:8.1} s");
    for (parallelism, rounds) in &mut results {
        let label = match parallelism {
            Some(p) => format!("parallelism {p}"),
            None => "parallelism unlimited".to_owned(),
        };
        let per_node = |v: u64| v as f64 / nodes as f64;
        let mut seconds: Vec<f64> = rounds.iter().map(|r| r.seconds).collect();
        let mut cleanup: Vec<f64> = rounds.iter().map(|r| r.cleanup_seconds).collect();
        let mut manager: Vec<f64> = rounds
            .iter()
            .map(|r| per_node(r.manager_requests))
            .collect();
        let mut agents: Vec<f64> = rounds.iter().map(|r| per_node(r.agent_requests)).collect();
        println!("  {label}");
        println!(
            "    job created → complete on all nodes  median {:8.1} s",
            median(&mut seconds)
        );
        println!(
            "    manager API requests per node        median {:8.2}",
            median(&mut manager)
        );
        println!(
            "    agent API requests per node          median {:8.2}",
            median(&mut agents)
        );
        println!(
            "    tags collected after job deletion    median {:8.1} s",
            median(&mut cleanup)
        );
        if let Some(first) = rounds.first() {
            println!("    manager requests of the first round:");
            for ((verb, resource), requests) in &first.manager_rows {
                println!("      {verb:8} {resource:45} {requests:6}");
            }
        }
    }
    println!(
        "  manager RSS: idle with {nodes} NodeImages {:.1} MiB, at the end {:.1} MiB, peak {:.1} MiB",
        idle_rss as f64 / 1024.0,
        final_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    fleet.shutdown().await?;
    Ok(())
}

/// `(VmRSS, VmHWM)` of `pid` in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    (
        proc_status_kib(pid, "VmRSS").unwrap_or(0),
        proc_status_kib(pid, "VmHWM").unwrap_or(0),
    )
}
