//! `testbed bench-pull`: the image puller's numbers (issue "Image pre-pull", Benchmarks):
//! agent overhead over a direct CRI pull, agent RSS idle and while pulling, and API cost
//! per pulled tag. The overhead is also given with the agent's own PullImage time (from
//! its /metrics) subtracted instead of the direct pull's, which removes the pull's
//! round-to-round variance on a loaded machine. Medians are printed; nothing here asserts on time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kruised::apiversions::KruiseVersion;
use kruised::cri::{CriClient, RuntimeEndpoint};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};

use crate::apiserver::{ApiServer, ApiServerConfig};
use crate::bench_report::Measurement;
use crate::env::{REFERENCE_CRDS, read_env};

const NODE: &str = "bench-node";

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Resident memory of a process: total, anonymous (heap, stacks) and file-backed (the
/// binary's and libraries' pages), in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

fn rss(pid: u32) -> Rss {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        total: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn remove_repository(cri: &CriClient, path: &str) {
    if let Ok(images) = cri.list_images(None).await {
        for image in images {
            if image.repo_tags.iter().any(|t| t.contains(path)) {
                let _ = cri.remove_image(&image.id).await;
            }
        }
    }
}

/// Waits, through a watch from `after` (no polling load on the machine), until the tag's
/// status has `version` and a final phase.
async fn wait_tag(
    api: &Api<DynamicObject>,
    after: &str,
    image: &str,
    version: i64,
) -> anyhow::Result<Value> {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};
    let params = WatchParams::default().fields(&format!("metadata.name={NODE}"));
    let mut stream = api.watch(&params, after).await?.boxed();
    while let Some(event) = stream.try_next().await? {
        if let WatchEvent::Modified(object) | WatchEvent::Added(object) = event {
            let tags = &object.data["status"]["imageStatuses"][image]["tags"];
            if let Some(tag) = tags.as_array().and_then(|t| t.first())
                && tag["version"] == version
                && (tag["phase"] == "Succeeded" || tag["phase"] == "Failed")
            {
                return Ok(tag.clone());
            }
        }
    }
    anyhow::bail!("the watch ended before {image} version {version} finished")
}

fn tag(name: &str, version: i64) -> Value {
    json!({"tag": name, "version": version, "imagePullPolicy": "Always",
           "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}})
}

/// Seconds the agent has spent in CRI `PullImage` calls, from its `/metrics`.
async fn agent_pull_seconds(addr: std::net::SocketAddr) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SUM: &str = "kruised_cri_call_duration_seconds_sum{method=\"PullImage\"";
    let start = Instant::now();
    let mut stream = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => break stream,
            // The agent may still be starting.
            Err(_) if start.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with(SUM))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Kills the agent when dropped, also when the benchmark fails half-way.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the benchmark against the environment in `dir` (from `testbed up` or
/// `scripts/testenv up`), with the kruised binary at `kruised`.
pub async fn pull(dir: &Path, kruised: &Path, rounds: usize) -> anyhow::Result<Vec<Measurement>> {
    let env = read_env(&dir.join("env"))?;
    let endpoint = env.get("RUNTIME_ENDPOINT").cloned().unwrap_or_default();
    let registry = env.get("REGISTRY").cloned().unwrap_or_default();
    let cri = CriClient::connect(&RuntimeEndpoint::parse(&endpoint)?, None).await?;
    let server = ApiServer::start(ApiServerConfig::default()).await?;
    server.apply_crds_from_dir(Path::new(REFERENCE_CRDS))?;
    let kubeconfig = dir.join("bench.kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let api: Api<DynamicObject> = Api::all_with(
        server.client(),
        &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
        "metadata": {"name": NODE}, "spec": {"images": {}}
    }))?;
    api.create(&PostParams::default(), &object).await?;
    // A free port for the agent's /metrics, where its own PullImage time is read.
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let agent = AgentProcess(
        Command::new(kruised)
            .args([
                "--node-name",
                NODE,
                "--runtime-endpoint",
                &endpoint,
                "--addr",
                &metrics_addr.to_string(),
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--max-workers-for-pull-image=4")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = agent.0.id();
    let image = format!("{registry}/test/big");
    let reference = format!("{image}:1");

    // 1. Overhead: spec write → Succeeded, minus a direct CRI pull of the same image.
    let (mut direct, mut through_agent, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    let mut own_overhead = Vec::new();
    server.accounting().reset();
    for round in 0..rounds {
        remove_repository(&cri, "/test/big").await;
        let start = Instant::now();
        cri.pull_image(
            kruised::proto::runtime::v1::PullImageRequest {
                image: Some(kruised::cri::client::image_spec(&reference)),
                ..Default::default()
            },
            Some(Duration::from_secs(120)),
        )
        .await?;
        let direct_seconds = start.elapsed().as_secs_f64();
        remove_repository(&cri, "/test/big").await;
        let version = round as i64 + 1;
        let patch = json!({"spec": {"images": {image.clone(): {"tags": [tag("1", version)]}}}});
        let agent_pulling_before = agent_pull_seconds(metrics_addr).await?;
        let start = Instant::now();
        let patched = api
            .patch(NODE, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let after = patched.metadata.resource_version.unwrap_or_default();
        let done = wait_tag(&api, &after, &image, version).await?;
        let agent_seconds = start.elapsed().as_secs_f64();
        anyhow::ensure!(done["phase"] == "Succeeded", "pull failed: {done}");
        direct.push(direct_seconds * 1000.0);
        through_agent.push(agent_seconds * 1000.0);
        overhead.push((agent_seconds - direct_seconds) * 1000.0);
        let agent_pulling = agent_pull_seconds(metrics_addr).await? - agent_pulling_before;
        own_overhead.push((agent_seconds - agent_pulling) * 1000.0);
    }
    let usage = server.accounting().snapshot();
    let agent_rows: Vec<_> = usage
        .iter()
        .filter(|r| r.user_agent.starts_with("kruised"))
        .collect();
    let requests: u64 = agent_rows.iter().map(|r| r.requests).sum();
    let bytes: u64 = agent_rows.iter().map(|r| r.response_bytes).sum();

    // 2. RSS idle with 50 tags tracked (they fail at once: the image does not exist).
    let tags: Vec<Value> = (0..50).map(|i| tag(&format!("missing-{i}"), 1)).collect();
    let idle_image = format!("{registry}/test/absent");
    let patch =
        json!({"spec": {"images": {image.clone(): null, idle_image.clone(): {"tags": tags}}}});
    api.patch(NODE, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    loop {
        let status = api.get(NODE).await?.data["status"].clone();
        if status["failed"] == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the last writes and events settle before reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss(pid);

    // 3. RSS during 4 concurrent pulls, throttled so they overlap.
    let proxy =
        crate::proxy::Proxy::start("127.0.0.1:0".parse()?, registry.parse()?, 40 * 1024 * 1024)
            .await?;
    crate::proxy::trust_plain_http(&dir.join("certs.d"), proxy.addr())?;
    remove_repository(&cri, "/test/huge").await;
    remove_repository(&cri, "/test/big").await;
    let mut images = serde_json::Map::new();
    images.insert(idle_image.clone(), Value::Null);
    for name in [
        "test/big:1",
        "test/huge:1",
        "test/busybox:2",
        "test/pause:1",
    ] {
        let (repo, tag_name) = name.split_once(':').unwrap_or((name, "1"));
        images.insert(
            format!("{}/{repo}", proxy.addr()),
            json!({"tags": [tag(tag_name, 1)]}),
        );
    }
    api.patch(
        NODE,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"images": images}})),
    )
    .await?;
    let mut peak = Rss::default();
    let start = Instant::now();
    for sample in 0u64.. {
        let now = rss(pid);
        if now.total > peak.total {
            peak = now;
        }
        // RSS every 20 ms, the status every 100 ms.
        if sample % 5 == 0 {
            let status = api.get(NODE).await?.data["status"].clone();
            let finished =
                status["succeeded"].as_i64().unwrap_or(0) + status["failed"].as_i64().unwrap_or(0);
            if finished == 4 {
                break;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(300),
                "concurrent pulls did not finish: {status}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(agent);

    println!("image puller benchmark ({rounds} rounds, {reference}, 53.5 MB, local registry)");
    let spread = |values: &mut [f64]| {
        let middle = median(values);
        format!(
            "median {middle:8.1} ms  (min {:.1}, max {:.1})",
            values[0],
            values[values.len() - 1]
        )
    };
    println!("  direct CRI PullImage        {}", spread(&mut direct));
    println!(
        "  spec write → Succeeded      {}",
        spread(&mut through_agent)
    );
    println!("  agent overhead              {}", spread(&mut overhead));
    println!(
        "  … minus its own PullImage   {}",
        spread(&mut own_overhead)
    );
    println!(
        "  agent RSS idle, 50 tags            {:8.1} MiB  (anon {:.1}, file {:.1})",
        mib(idle_rss.total),
        mib(idle_rss.anon),
        mib(idle_rss.file)
    );
    println!(
        "  agent RSS peak, 4 concurrent pulls {:8.1} MiB  (anon {:.1}, file {:.1})",
        mib(peak.total),
        mib(peak.anon),
        mib(peak.file)
    );
    println!(
        "  API per pulled tag          {:8.1} requests, {:8.0} bytes",
        requests as f64 / rounds as f64,
        bytes as f64 / rounds as f64
    );
    for row in agent_rows {
        println!(
            "    {:8} {:45} {:5} requests {:9} bytes",
            row.verb, row.resource, row.requests, row.response_bytes
        );
    }
    Ok(vec![
        Measurement::median_of(
            "pull.direct_ms",
            "direct CRI PullImage, 53.5 MB image (the floor)",
            &direct,
            "ms",
        ),
        Measurement::median_of(
            "pull.through_agent_ms",
            "NodeImage spec write → tag Succeeded, same image",
            &through_agent,
            "ms",
        ),
        Measurement::median_of(
            "pull.overhead_ms",
            "pull overhead: through the agent − direct pull, interleaved rounds",
            &overhead,
            "ms",
        ),
        Measurement::median_of(
            "pull.own_overhead_ms",
            "pull overhead: through the agent − the agent's own PullImage time",
            &own_overhead,
            "ms",
        ),
        Measurement::single(
            "pull.rss_idle_mib",
            "agent RSS idle, 50 tags on its NodeImage",
            mib(idle_rss.total),
            "MiB",
        ),
        Measurement::single(
            "pull.rss_peak_mib",
            "agent RSS peak during 4 concurrent pulls",
            mib(peak.total),
            "MiB",
        ),
        Measurement::single(
            "pull.api_requests_per_tag",
            "agent API requests per pulled tag",
            requests as f64 / rounds as f64,
            "requests",
        ),
        Measurement::single(
            "pull.api_kib_per_tag",
            "agent API response bytes per pulled tag",
            bytes as f64 / rounds as f64 / 1024.0,
            "KiB",
        ),
    ])
}

/// The kruised binary next to this testbed binary (same target profile).
pub fn sibling_kruised() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("kruised")))
        .unwrap_or_else(|| PathBuf::from("kruised"))
}
