//! `testbed bench-scale`: a fleet on one machine (issue "Prove it under stress", §3).
//!
//! N simulated nodes, each a real `kruised` agent process with its own fake CRI runtime
//! (served from this process), all against the test API server in this process, plus one
//! `kruised manager` process. Measured:
//! - steady state: API requests per node per minute by the agents with nothing to do,
//!   split into polling (anything but a watch) and re-watches (kube's watches end after
//!   ~5 min and are reopened from their resourceVersion);
//! - watch connections open per agent, and on which resources;
//! - the time to roll one ImagePullJob over every node at a given parallelism, and the API
//!   requests per node it costs;
//! - memory: each agent's RSS and anonymous RSS (its private share: the binary's pages are
//!   shared between the processes), and the manager's.
//!
//! Medians; nothing here asserts on time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kruised::apiversions::KruiseVersion;
use kruised::cri::fake::{FakeCri, PullScript};
use kube::api::{Api, ListParams, PostParams};
use kube::core::DynamicObject;
use serde_json::json;

use crate::apiserver::{ApiServer, ApiServerConfig, Usage};
use crate::bench_process::{AgentProcess, ManagerProcess, Scratch, mib, proc_status_kib, until};
use crate::bench_report::Measurement;
use crate::env::REFERENCE_CRDS;

/// The User-Agent prefix of the agents (`kruised/<version>`).
const AGENT_USER_AGENT: &str = "kruised/";
/// The User-Agent prefix of the manager (`kruised-manager/<version>`).
const MANAGER_USER_AGENT: &str = "kruised-manager/";
/// How often the benchmark looks at the API while waiting.
const POLL: Duration = Duration::from_millis(200);
/// The image every node pulls.
const IMAGE: &str = "bench.local/scale-app:1";

/// What to run.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// Simulated nodes (agent processes).
    pub nodes: usize,
    /// The ImagePullJob's parallelism.
    pub parallelism: usize,
    /// How long each fake CRI pull takes.
    pub pull_duration: Duration,
    /// How long the steady-state window lasts.
    pub steady: Duration,
}

fn name_of(i: usize) -> String {
    format!("scale-node-{i:04}")
}

/// Requests of the rows whose user agent starts with `prefix`, split into watches and
/// everything else, and by (verb, resource).
fn requests_of(rows: &[Usage], prefix: &str) -> (u64, u64, BTreeMap<(String, String), u64>) {
    let mut watches = 0;
    let mut other = 0;
    let mut by_kind = BTreeMap::new();
    for row in rows.iter().filter(|r| r.user_agent.starts_with(prefix)) {
        if row.verb == "watch" {
            watches += row.requests;
        } else {
            other += row.requests;
        }
        *by_kind
            .entry((row.verb.clone(), row.resource.clone()))
            .or_default() += row.requests;
    }
    (watches, other, by_kind)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[sorted.len() / 2]
}

/// Runs the simulation with the kruised binary at `kruised`; prints as it goes and returns
/// the measurements.
pub async fn scale(config: &ScaleConfig, kruised: &Path) -> anyhow::Result<Vec<Measurement>> {
    let nodes = config.nodes;
    anyhow::ensure!(nodes > 0, "--nodes must be at least 1");
    let scratch = Scratch::new("bench-scale")?;
    let server = ApiServer::start(ApiServerConfig::default()).await?;
    server.apply_crds_from_dir(Path::new(REFERENCE_CRDS))?;
    let kubeconfig = scratch.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let driver = server.client();
    let namespaces: Api<Namespace> = Api::all(driver.clone());
    for name in ["kruise-system", "kruise-daemon-config"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}}))?,
            )
            .await?;
    }
    let fleet = crate::fakecri::serve_many(&scratch.path().join("cri"), nodes, |_| {
        let fake = FakeCri::new();
        fake.script_pull(IMAGE, PullScript::succeed_after(config.pull_duration));
        fake
    })
    .await?;

    let manager = ManagerProcess(
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
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.path().join("manager.log"))?)
            .spawn()?,
    );
    let manager_pid = manager.0.id();
    // The manager's memory with no node yet: the fixed part, for the extrapolation.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let manager_base = mib(proc_status_kib(manager_pid, "VmRSS").unwrap_or(0));

    let node_api: Api<Node> = Api::all(driver.clone());
    for i in 0..nodes {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name_of(i), "labels": {
                "kubernetes.io/hostname": name_of(i), "bench": "scale"}},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))?;
        node_api.create(&PostParams::default(), &node).await?;
    }

    // Every agent a process of its own, as on a real fleet.
    let logs = scratch.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let started = Instant::now();
    let mut agents = Vec::with_capacity(nodes);
    for i in 0..nodes {
        agents.push(AgentProcess::spawn(
            kruised,
            &name_of(i),
            fleet.handle(i).endpoint(),
            &kubeconfig,
            &logs.join(format!("{}.log", name_of(i))),
        )?);
    }
    for agent in &agents {
        agent.wait_ready_every(Duration::from_millis(250)).await?;
    }
    let fleet_ready = started.elapsed().as_secs_f64();
    let node_images: Api<DynamicObject> = Api::all_with(
        driver.clone(),
        &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
    );
    until("a NodeImage for every node", POLL, || async {
        (node_images
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .len()
            == nodes)
            .then_some(())
    })
    .await?;
    eprintln!("{nodes} agents ready after {fleet_ready:.1} s");

    // Steady state: let start-up writes settle, then count a quiet window.
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.accounting().reset();
    tokio::time::sleep(config.steady).await;
    let usage = server.accounting().snapshot();
    let minutes = config.steady.as_secs_f64() / 60.0;
    let per_node_minute = |v: u64| v as f64 / nodes as f64 / minutes;
    let (agent_watches, agent_polling, agent_rows) = requests_of(&usage, AGENT_USER_AGENT);
    let (_, manager_polling, _) = requests_of(&usage, MANAGER_USER_AGENT);
    let open: Vec<(String, String, u64)> = server
        .accounting()
        .open_watches()
        .into_iter()
        .filter(|(_, agent, _)| agent.starts_with(AGENT_USER_AGENT))
        .collect();
    let open_total: u64 = open.iter().map(|(_, _, n)| n).sum();
    let mut idle_rss: Vec<f64> = Vec::new();
    let mut idle_anon: Vec<f64> = Vec::new();
    for agent in &agents {
        idle_rss.push(mib(proc_status_kib(agent.pid(), "VmRSS").unwrap_or(0)));
        idle_anon.push(mib(proc_status_kib(agent.pid(), "RssAnon").unwrap_or(0)));
    }
    let manager_idle = mib(proc_status_kib(manager_pid, "VmRSS").unwrap_or(0));

    // One ImagePullJob over the fleet.
    let jobs: Api<DynamicObject> = Api::namespaced_with(
        driver.clone(),
        "default",
        &KruiseVersion::V1beta1.resource("ImagePullJob", "imagepulljobs"),
    );
    let job: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
        "metadata": {"name": "scale", "namespace": "default"},
        "spec": {"image": IMAGE, "parallelism": config.parallelism,
                 "selector": {"matchLabels": {"bench": "scale"}},
                 "completionPolicy": {"type": "Always"},
                 "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 1}}
    }))?;
    server.accounting().reset();
    let rolled = Instant::now();
    jobs.create(&PostParams::default(), &job).await?;
    let status = until("the job to complete on every node", POLL, || async {
        let status = jobs.get("scale").await.ok()?.data["status"].clone();
        status["completionTime"].is_string().then_some(status)
    })
    .await;
    let status = match status {
        Ok(status) => status,
        Err(error) => {
            scratch.keep();
            return Err(error);
        }
    };
    if status["succeeded"] != json!(nodes) {
        scratch.keep();
        for node in status["failedNodes"].as_array().into_iter().flatten() {
            let node = node.as_str().unwrap_or_default();
            if let Ok(image) = node_images.get(node).await {
                eprintln!("{node}: NodeImage {}", serde_json::to_string(&image.data)?);
            }
            let index: usize = node
                .rsplit('-')
                .next()
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            if let Some(agent) = agents.get_mut(index) {
                eprintln!("{node}: agent alive: {}", agent.alive());
            }
        }
    }
    let roll_seconds = rolled.elapsed().as_secs_f64();
    anyhow::ensure!(
        status["succeeded"] == json!(nodes),
        "the job completed without every node succeeding: {status}"
    );
    let usage = server.accounting().snapshot();
    let (_, job_agent, _) = requests_of(&usage, AGENT_USER_AGENT);
    let (_, job_manager, _) = requests_of(&usage, MANAGER_USER_AGENT);

    let mut busy_hwm: Vec<f64> = Vec::new();
    let mut dead = 0;
    for agent in &mut agents {
        if !agent.alive() {
            dead += 1;
        }
        busy_hwm.push(mib(proc_status_kib(agent.pid(), "VmHWM").unwrap_or(0)));
    }
    anyhow::ensure!(dead == 0, "{dead} agents exited during the run");
    let manager_peak = mib(proc_status_kib(manager_pid, "VmHWM").unwrap_or(0));
    let panics = count_panics(&logs)?;
    anyhow::ensure!(panics == 0, "{panics} agent logs mention a panic");

    drop(agents);
    drop(manager);
    fleet.shutdown().await?;

    println!("fleet simulation: {nodes} agent processes on fake CRIs, one manager");
    println!("  agents ready (all)                        {fleet_ready:8.1} s after start");
    println!(
        "  steady state ({:.0} s): agent polling requests per node per minute {:.3}, re-watches {:.3}; manager requests per minute {:.1}",
        config.steady.as_secs_f64(),
        per_node_minute(agent_polling),
        per_node_minute(agent_watches),
        manager_polling as f64 / minutes
    );
    for ((verb, resource), count) in &agent_rows {
        println!("    {verb:8} {resource:45} {count:6}");
    }
    println!(
        "  watches open per agent {:.2}:",
        open_total as f64 / nodes as f64
    );
    for (resource, _, count) in &open {
        println!("    {resource:45} {count:6}");
    }
    println!(
        "  job over {nodes} nodes at parallelism {}: {roll_seconds:.1} s; API requests per node: agents {:.2}, manager {:.2}",
        config.parallelism,
        job_agent as f64 / nodes as f64,
        job_manager as f64 / nodes as f64
    );
    println!(
        "  agent RSS idle median {:.1} MiB (anon {:.1}), peak (VmHWM) median {:.1}; manager idle {manager_idle:.1} MiB, peak {manager_peak:.1} MiB",
        median(&idle_rss),
        median(&idle_anon),
        median(&busy_hwm),
    );

    let watch_resources: Vec<String> = open
        .iter()
        .map(|(resource, _, count)| format!("{resource} ×{count}"))
        .collect();
    Ok(vec![
        Measurement::single(
            "scale.agents_ready_s",
            &format!("{nodes} agent processes started → all /readyz"),
            fleet_ready,
            "s",
        ),
        Measurement::single(
            "scale.agent_polling_requests_per_node_minute",
            "steady state: agent requests per node per minute other than watches",
            per_node_minute(agent_polling),
            "requests",
        ),
        Measurement::single(
            "scale.agent_rewatches_per_node_minute",
            "steady state: agent re-watches per node per minute",
            per_node_minute(agent_watches),
            "requests",
        ),
        Measurement::single(
            "scale.manager_requests_per_minute",
            "steady state: manager requests per minute other than watches",
            manager_polling as f64 / minutes,
            "requests",
        ),
        Measurement::single(
            "scale.watches_per_agent",
            &format!(
                "watch connections open per agent (fleet-wide: {})",
                watch_resources.join(", ")
            ),
            open_total as f64 / nodes as f64,
            "watches",
        ),
        Measurement::single(
            "scale.job_roll_s",
            &format!(
                "ImagePullJob over {nodes} nodes, parallelism {}, {} ms fake pulls",
                config.parallelism,
                config.pull_duration.as_millis()
            ),
            roll_seconds,
            "s",
        ),
        Measurement::single(
            "scale.job_agent_requests_per_node",
            "API requests per node for the job: agents",
            job_agent as f64 / nodes as f64,
            "requests",
        ),
        Measurement::single(
            "scale.job_manager_requests_per_node",
            "API requests per node for the job: manager",
            job_manager as f64 / nodes as f64,
            "requests",
        ),
        Measurement::median_of(
            "scale.agent_rss_median_mib",
            "agent RSS idle, over the fleet",
            &idle_rss,
            "MiB",
        ),
        Measurement::median_of(
            "scale.agent_anon_rss_median_mib",
            "agent anonymous RSS idle (its private memory), over the fleet",
            &idle_anon,
            "MiB",
        ),
        Measurement::median_of(
            "scale.agent_hwm_mib",
            "agent peak RSS (VmHWM) after the job, over the fleet",
            &busy_hwm,
            "MiB",
        ),
        Measurement::single(
            "scale.manager_rss_base_mib",
            "manager RSS with no node (its fixed part)",
            manager_base,
            "MiB",
        ),
        Measurement::single(
            "scale.manager_rss_idle_mib",
            &format!("manager RSS idle with {nodes} NodeImages"),
            manager_idle,
            "MiB",
        ),
        Measurement::single(
            "scale.manager_rss_peak_mib",
            "manager peak RSS (VmHWM) after the job",
            manager_peak,
            "MiB",
        ),
    ])
}

/// Agent logs that mention a panic.
fn count_panics(logs: &Path) -> anyhow::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(logs)? {
        let path: PathBuf = entry?.path();
        if std::fs::read_to_string(&path)?.contains("panicked") {
            count += 1;
        }
    }
    Ok(count)
}

/// The extrapolation the report prints with the numbers: per-node API cost and memory
/// scaled from `measured_nodes` to `fleet` nodes.
pub fn extrapolate(measurements: &[Measurement], measured_nodes: usize, fleet: usize) -> String {
    let get = |key: &str| {
        measurements
            .iter()
            .find(|m| m.key == key)
            .map_or(f64::NAN, |m| m.value)
    };
    let polling = get("scale.agent_polling_requests_per_node_minute");
    let rewatch = get("scale.agent_rewatches_per_node_minute");
    let watches = get("scale.watches_per_agent");
    let job_agent = get("scale.job_agent_requests_per_node");
    let job_manager = get("scale.job_manager_requests_per_node");
    let roll = get("scale.job_roll_s");
    let manager_peak = get("scale.manager_rss_peak_mib");
    let manager_base = get("scale.manager_rss_base_mib");
    let factor = fleet as f64 / measured_nodes as f64;
    format!(
        "Extrapolation to {fleet} nodes (linear in nodes, from the {measured_nodes}-node run): \
         {:.0} open watches on the API servers ({watches:.2} per agent, each one HTTP/2 stream \
         served from the watch cache); steady state {:.2} polling requests/s and {:.2} \
         re-watches/s fleet-wide, against the API server's default `--max-requests-inflight` \
         of 400; one ImagePullJob over every node costs {:.0} agent and {:.0} manager requests \
         in all, spread over the roll-out, which at the same parallelism takes about {:.0} s \
         (the request rate depends on the parallelism, not on the fleet size); the manager \
         caches every Node and NodeImage: {manager_base:.1} MiB with no node and \
         {manager_peak:.1} MiB at peak with {measured_nodes}, so about {:.0} MiB at {fleet} \
         nodes if the difference grows linearly.",
        watches * fleet as f64,
        polling * fleet as f64 / 60.0,
        rewatch * fleet as f64 / 60.0,
        job_agent * fleet as f64,
        job_manager * fleet as f64,
        roll * factor,
        manager_base + (manager_peak - manager_base) * factor,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_split_into_watches_and_the_rest_by_user_agent() {
        let row = |verb: &str, agent: &str, requests| Usage {
            verb: verb.into(),
            resource: "pods".into(),
            user_agent: agent.into(),
            requests,
            response_bytes: 0,
        };
        let rows = [
            row("watch", "kruised/0.1.0", 3),
            row("list", "kruised/0.1.0", 2),
            row("list", "kruised-manager/0.1.0", 7),
        ];
        let (watches, other, by_kind) = requests_of(&rows, AGENT_USER_AGENT);
        assert_eq!((watches, other), (3, 2));
        assert_eq!(by_kind.len(), 2);
        let (_, manager, _) = requests_of(&rows, MANAGER_USER_AGENT);
        assert_eq!(manager, 7);
    }

    #[test]
    fn extrapolation_scales_the_per_node_numbers() {
        let m = |key: &str, value| Measurement::single(key, key, value, "x");
        let text = extrapolate(
            &[
                m("scale.agent_polling_requests_per_node_minute", 0.0),
                m("scale.agent_rewatches_per_node_minute", 0.6),
                m("scale.watches_per_agent", 4.0),
                m("scale.job_agent_requests_per_node", 5.0),
                m("scale.job_manager_requests_per_node", 2.0),
                m("scale.job_roll_s", 14.0),
                m("scale.manager_rss_peak_mib", 30.0),
                m("scale.manager_rss_base_mib", 20.0),
            ],
            500,
            5000,
        );
        assert!(text.contains("20000 open watches"), "{text}");
        assert!(text.contains("50.00 re-watches/s"), "{text}");
        assert!(text.contains("25000 agent and 10000 manager"), "{text}");
        assert!(text.contains("about 140 s"), "{text}");
        assert!(text.contains("about 120 MiB at 5000"), "{text}");
    }
}
