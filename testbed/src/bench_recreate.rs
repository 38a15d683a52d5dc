//! `testbed bench-recreate`: the container recreate numbers (issue 5, Benchmarks), with the
//! real kruised binary, the test API server, the kubelet stand-in, and a stand-in for
//! kruise-manager's part (the webhook's CRR shape, §4.2, and the `containerStatusSnapshot`
//! sync, §4.3 step 5, written as soon as a pod update shows it). Medians are printed;
//! nothing here asserts on time.
//!
//! 1. Latency, on the real containerd of `--dir`, one fresh single-container pod per round:
//!    - CRR creation → StopContainer: the stopped container's `finishedAt` from CRI
//!      (nanoseconds) minus this process's clock just before the create call. The container
//!      traps SIGTERM and exits at once, so `finishedAt` is the StopContainer call plus the
//!      signal's delivery and containerd's exit event: an upper bound, by a few ms.
//!    - CRR creation → Completed (as this process's watch sees it), minus the container's own
//!      stop and start: the new container's `startedAt` minus the old one's `finishedAt`
//!      (which includes the kubelet stand-in noticing the exit).
//!    - new container started → Completed, and snapshot written → Completed: what follows
//!      the new container being ready, the second only kruised's part of it.
//! 2. Throughput, on the fake CRI served from this process (the kubelet stand-in runs on it
//!    too): CRRs spread over pods of two containers, one CRR per container, created at once;
//!    CRRs completed per second, and kruised's peak RSS (`VmHWM`) and sampled `VmRSS`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kruised::api::{CRR_ACTIVE_LABEL, CRR_NODE_NAME_LABEL, CRR_POD_UID_LABEL};
use kruised::apiversions::KruiseVersion;
use kruised::cri::fake::FakeCri;
use kruised::cri::{CriClient, RuntimeEndpoint};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::apiserver::{ApiServer, ApiServerConfig};
use crate::bench_process::{AgentProcess, cpu_time, proc_status_kib};
use crate::bench_report::Measurement;
use crate::env::{REFERENCE_CRDS, read_env};
use crate::kubelet::{Kubelet, KubeletConfig, KubeletHandle};

const NAMESPACE: &str = "default";
/// The kubelet stand-in's CRI relist interval: how soon it restarts a stopped container.
const KUBELET_SYNC: Duration = Duration::from_millis(100);
/// Longest wait for anything one step takes.
const DEADLINE: Duration = Duration::from_secs(120);
/// Exits 0 at once on SIGTERM: `wait` returns as soon as a trapped signal arrives.
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done";

/// The arguments of `testbed bench-recreate`.
#[derive(Debug, Clone)]
pub struct RecreateBench {
    /// An environment from `testbed up` or `scripts/testenv up`.
    pub dir: PathBuf,
    /// The kruised binary.
    pub kruised: PathBuf,
    /// Rounds of the latency measurement.
    pub rounds: usize,
    /// Pods of the throughput run.
    pub pods: usize,
    /// CRRs of the throughput run (spread over the pods' two containers).
    pub crrs: usize,
    /// Run the latency part.
    pub latency: bool,
    /// Run the throughput part.
    pub throughput: bool,
}

/// Runs both parts and prints the numbers.
pub async fn recreate(bench: &RecreateBench) -> anyhow::Result<Vec<Measurement>> {
    anyhow::ensure!(bench.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        bench.pods > 0 && bench.crrs <= 2 * bench.pods,
        "--crrs must be at most twice --pods (one CRR per container)"
    );
    let logs = bench.dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut measurements = Vec::new();
    if bench.latency {
        measurements.extend(latency(bench).await?);
    }
    if bench.throughput {
        measurements.extend(throughput(bench).await?);
    }
    println!("  kruised logs: {}/bench-recreate-*.log", logs.display());
    Ok(measurements)
}

// ---- part 1: latency on real containerd ---------------------------------------------------

/// One latency column of the rounds.
type Column = fn(&Round) -> f64;

/// One round's times, in milliseconds.
struct Round {
    create_to_stop: f64,
    own_stop_start: f64,
    create_to_completed: f64,
    started_to_completed: f64,
    snapshot_to_completed: f64,
}

async fn latency(bench: &RecreateBench) -> anyhow::Result<Vec<Measurement>> {
    let env = read_env(&bench.dir.join("env"))?;
    let var = |key: &str| {
        env.get(key)
            .cloned()
            .with_context(|| format!("{}/env has no {key}", bench.dir.display()))
    };
    let endpoint = var("RUNTIME_ENDPOINT")?;
    let image = format!("{}/test/busybox:1", var("REGISTRY")?);
    let cri = CriClient::connect(&RuntimeEndpoint::parse(&endpoint)?, None).await?;
    let bed = Bed::start(
        bench,
        "bench-recreate-latency",
        &endpoint,
        &var("CGROUP_PARENT_PREFIX")?,
    )
    .await?;

    let mut rounds = Vec::new();
    let result = async {
        for round in 0..bench.rounds {
            rounds.push(bed.latency_round(&cri, &image, round).await?);
        }
        anyhow::Ok(())
    }
    .await;
    let metrics = bed.agent.scrape().await.unwrap_or_default();
    bed.tear_down(Some(&cri)).await;
    result?;

    println!(
        "container recreate latency ({} rounds, real containerd, one fresh pod per round; median [min, max])",
        bench.rounds
    );
    let rows: [(&str, Column); 6] = [
        ("CRR create → StopContainer (old finishedAt)", |r| {
            r.create_to_stop
        }),
        ("CRR create → Completed", |r| r.create_to_completed),
        ("  container's own stop + start", |r| r.own_stop_start),
        ("  create → Completed − own stop + start", |r| {
            r.create_to_completed - r.own_stop_start
        }),
        ("new container started → Completed", |r| {
            r.started_to_completed
        }),
        ("  snapshot written → Completed (kruised)", |r| {
            r.snapshot_to_completed
        }),
    ];
    for (label, pick) in rows {
        let mut values: Vec<f64> = rounds.iter().map(pick).collect();
        let median = median(&mut values);
        let (min, max) = (values[0], values[values.len() - 1]);
        println!("  {label:46} {median:8.1} ms  [{min:.1}, {max:.1}]");
    }
    let column = |pick: Column| rounds.iter().map(pick).collect::<Vec<f64>>();
    let measurements = vec![
        Measurement::median_of(
            "recreate.create_to_stop_ms",
            "CRR created → old container stopped (its finishedAt), real containerd",
            &column(|r| r.create_to_stop),
            "ms",
        ),
        Measurement::median_of(
            "recreate.create_to_completed_net_ms",
            "CRR created → Completed, minus the container's own stop + start",
            &column(|r| r.create_to_completed - r.own_stop_start),
            "ms",
        ),
        Measurement::median_of(
            "recreate.started_to_completed_ms",
            "new container started → CRR Completed",
            &column(|r| r.started_to_completed),
            "ms",
        ),
    ];
    for (name, label) in [
        (
            "kruised_crr_creation_to_kill_seconds",
            "kruised's own creation → StopContainer",
        ),
        (
            "kruised_crr_kill_to_running_seconds",
            "kruised's own StopContainer → running",
        ),
    ] {
        if let Some(mean) = histogram_mean(&metrics, name) {
            println!(
                "  {label:46} {:8.1} ms  (mean of its histogram)",
                mean * 1000.0
            );
        }
    }
    Ok(measurements)
}

impl Bed {
    async fn latency_round(
        &self,
        cri: &CriClient,
        image: &str,
        round: usize,
    ) -> anyhow::Result<Round> {
        let pod_name = format!("latency-{round}");
        let container = Container {
            name: "app".into(),
            image: Some(image.to_owned()),
            command: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: Some(vec![SERVE.into()]),
            ..Container::default()
        };
        let pod = self.running_pod(&pod_name, vec![container]).await?;
        let old = status_of(&pod, "app")?;
        let old_id = container_id(old)?;

        let created_wall = Timestamp::now();
        let created = Instant::now();
        let name = self.create_crr(&pod, &["app"]).await?;
        let completed = self.manager.completed(&name, DEADLINE).await?;

        let crr = self.crrs.get(&name).await?;
        let states = &crr.data["status"]["containerRecreateStates"];
        anyhow::ensure!(
            states[0]["phase"] == "Succeeded"
                && crr.data["status"]["message"]
                    .as_str()
                    .is_none_or(str::is_empty),
            "CRR {name} did not succeed: {}",
            crr.data["status"]
        );
        let pod = self.pods.get(&pod_name).await?;
        let new_id = container_id(status_of(&pod, "app")?)?;
        anyhow::ensure!(new_id != old_id, "pod {pod_name} still runs {old_id}");
        let finished_at = cri.container_status(&old_id).await?.finished_at;
        let started_at = cri.container_status(&new_id).await?.started_at;
        let snapshot = self
            .manager
            .snapshot_ready(&name)
            .context("no snapshot with the new container ready was written")?;

        let ms = |nanos: i128| nanos as f64 / 1e6;
        let created_ns = created_wall.as_nanosecond();
        let completed_ns = created_ns + completed.duration_since(created).as_nanos() as i128;
        Ok(Round {
            create_to_stop: ms(i128::from(finished_at) - created_ns),
            own_stop_start: ms(i128::from(started_at) - i128::from(finished_at)),
            create_to_completed: ms(completed_ns - created_ns),
            started_to_completed: ms(completed_ns - i128::from(started_at)),
            snapshot_to_completed: completed.duration_since(snapshot).as_secs_f64() * 1000.0,
        })
    }
}

// ---- part 2: throughput on the fake CRI ---------------------------------------------------

async fn throughput(bench: &RecreateBench) -> anyhow::Result<Vec<Measurement>> {
    let sockets = tempfile_dir("kruised-bench-recreate")?;
    let fake = FakeCri::new();
    let handle = fake.serve_unix(sockets.join("cri.sock")).await?;
    let bed = Bed::start(
        bench,
        "bench-recreate-throughput",
        handle.endpoint(),
        "/kruised-bench-recreate",
    )
    .await?;
    let result = bed.throughput_run(bench, &fake).await;
    bed.tear_down(None).await;
    let _ = handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&sockets);
    let run = result?;

    let mut per_crr = run.per_crr;
    let total = run.wall.as_secs_f64();
    println!(
        "container recreate throughput ({} CRRs over {} pods of 2 containers, fake CRI, created at once)",
        bench.crrs, bench.pods
    );
    println!(
        "  all Completed after                        {:8.0} ms  ({:.1} CRRs/s)",
        total * 1000.0,
        bench.crrs as f64 / total
    );
    println!(
        "  CRR create → Completed                     {:8.0} ms median, {:.0} ms max",
        median(&mut per_crr),
        per_crr[per_crr.len() - 1]
    );
    println!(
        "  StopContainer calls                        {:8}     (one per CRR: {})",
        run.stops, bench.crrs
    );
    println!(
        "  CPU time during the run: kruised           {:8.0} ms, test bed (API server, kubelet, manager) {:.0} ms",
        run.cpu.as_secs_f64() * 1000.0,
        run.bed_cpu.as_secs_f64() * 1000.0
    );
    println!(
        "  kruised RSS idle with {} pods                {:8.1} MiB",
        bench.pods,
        run.idle_rss_kib as f64 / 1024.0
    );
    println!(
        "  kruised RSS peak (VmHWM; sampled VmRSS max) {:7.1} MiB ({:.1} MiB)",
        run.hwm_kib as f64 / 1024.0,
        run.sampled_peak_kib as f64 / 1024.0
    );
    Ok(vec![
        Measurement::single(
            "recreate.throughput_crrs_per_s",
            &format!(
                "{} CRRs over {} pods created at once, fake CRI: CRRs completed per second",
                bench.crrs, bench.pods
            ),
            bench.crrs as f64 / total,
            "CRRs/s",
        ),
        Measurement::single(
            "recreate.stop_calls_per_crr",
            "StopContainer calls per CRR",
            run.stops as f64 / bench.crrs as f64,
            "calls",
        ),
        Measurement::single(
            "recreate.rss_idle_mib",
            &format!("agent RSS idle with {} pods", bench.pods),
            run.idle_rss_kib as f64 / 1024.0,
            "MiB",
        ),
        Measurement::single(
            "recreate.rss_peak_mib",
            &format!("agent peak RSS (VmHWM) during the {} CRRs", bench.crrs),
            run.hwm_kib as f64 / 1024.0,
            "MiB",
        ),
    ])
}

struct ThroughputRun {
    wall: Duration,
    cpu: Duration,
    bed_cpu: Duration,
    per_crr: Vec<f64>,
    stops: usize,
    idle_rss_kib: u64,
    hwm_kib: u64,
    sampled_peak_kib: u64,
}

impl Bed {
    async fn throughput_run(
        &self,
        bench: &RecreateBench,
        fake: &FakeCri,
    ) -> anyhow::Result<ThroughputRun> {
        let containers = |pod: usize| {
            ["a", "b"]
                .map(|name| Container {
                    name: name.into(),
                    image: Some(format!("registry.example/bench/pod-{pod}:1")),
                    ..Container::default()
                })
                .to_vec()
        };
        let pods: Vec<Pod> = futures::future::try_join_all((0..bench.pods).map(|i| {
            let name = format!("pod-{i}");
            async move { self.running_pod(&name, containers(i)).await }
        }))
        .await?;
        // Let kruised's watches settle on the running pods before measuring.
        self.agent.wait_ready().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_rss_kib = proc_status_kib(self.agent.pid(), "VmRSS").unwrap_or(0);
        fake.clear_calls();

        let pid = self.agent.pid();
        let cpu_before = cpu_time(pid).unwrap_or_default();
        let bed_cpu_before = cpu_time(std::process::id()).unwrap_or_default();
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = tokio::spawn({
            let sampling = Arc::clone(&sampling);
            async move {
                let mut peak = 0;
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(proc_status_kib(pid, "VmRSS").unwrap_or(0));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                peak
            }
        });

        let start = Instant::now();
        let creates = (0..bench.crrs).map(|i| {
            let pod = &pods[i % bench.pods];
            let container = ["a", "b"][(i / bench.pods) % 2];
            async move {
                let created = Instant::now();
                let name = self.create_crr(pod, &[container]).await?;
                anyhow::Ok((name, created))
            }
        });
        let created = futures::future::try_join_all(creates).await?;
        let mut per_crr = Vec::new();
        let mut last = start;
        for (name, created) in &created {
            let completed = self.manager.completed(name, DEADLINE).await?;
            per_crr.push(completed.duration_since(*created).as_secs_f64() * 1000.0);
            last = last.max(completed);
        }
        let wall = last.duration_since(start);
        let cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu_before);
        let bed_cpu = cpu_time(std::process::id())
            .unwrap_or_default()
            .saturating_sub(bed_cpu_before);
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let sampled_peak_kib = sampler.await.unwrap_or(0);
        for (name, _) in &created {
            let crr = self.crrs.get(name).await?;
            anyhow::ensure!(
                crr.data["status"]["containerRecreateStates"][0]["phase"] == "Succeeded",
                "CRR {name} did not succeed: {}",
                crr.data["status"]
            );
        }
        Ok(ThroughputRun {
            wall,
            cpu,
            bed_cpu,
            per_crr,
            stops: fake.count("StopContainer"),
            idle_rss_kib,
            hwm_kib: proc_status_kib(pid, "VmHWM").unwrap_or(0),
            sampled_peak_kib,
        })
    }
}

// ---- the bed: API server, kubelet stand-in, manager stand-in, kruised ---------------------

struct Bed {
    _server: ApiServer,
    node: String,
    pods: Api<Pod>,
    crrs: Api<DynamicObject>,
    kubelet: KubeletHandle,
    manager: Manager,
    agent: AgentProcess,
}

impl Bed {
    async fn start(
        bench: &RecreateBench,
        node: &str,
        runtime_endpoint: &str,
        cgroup_parent_prefix: &str,
    ) -> anyhow::Result<Self> {
        let server = ApiServer::start(ApiServerConfig::default()).await?;
        server.apply_crds_from_dir(Path::new(REFERENCE_CRDS))?;
        let kubeconfig = bench.dir.join(format!("{node}.kubeconfig"));
        server.write_kubeconfig(&kubeconfig)?;
        let client = server.client();
        let kubelet = Kubelet::start(KubeletConfig {
            sync_interval: KUBELET_SYNC,
            ..KubeletConfig::new(
                node,
                client.clone(),
                runtime_endpoint,
                cgroup_parent_prefix,
                bench.dir.join(format!("{node}-pod-logs")),
            )
        })
        .await?;
        let agent = AgentProcess::spawn(
            &bench.kruised,
            node,
            runtime_endpoint,
            &kubeconfig,
            &bench.dir.join(format!("logs/{node}.log")),
        )?;
        agent.wait_ready().await?;
        Ok(Self {
            _server: server,
            node: node.to_owned(),
            pods: Api::namespaced(client.clone(), NAMESPACE),
            crrs: Api::namespaced_with(client.clone(), NAMESPACE, &crr_resource()),
            kubelet,
            manager: Manager::start(client),
            agent,
        })
    }

    async fn running_pod(&self, name: &str, containers: Vec<Container>) -> anyhow::Result<Pod> {
        self.create_pod(name, containers).await?;
        self.wait_running(name).await
    }

    async fn create_pod(&self, name: &str, containers: Vec<Container>) -> anyhow::Result<()> {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(self.node.clone()),
                containers,
                termination_grace_period_seconds: Some(5),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        self.pods.create(&PostParams::default(), &pod).await?;
        Ok(())
    }

    async fn wait_running(&self, name: &str) -> anyhow::Result<Pod> {
        let start = Instant::now();
        loop {
            if let Ok(pod) = self.pods.get(name).await {
                let count = pod.spec.as_ref().map_or(0, |spec| spec.containers.len());
                let statuses = container_statuses(&pod);
                if statuses.len() == count && statuses.iter().all(running) {
                    return Ok(pod);
                }
            }
            anyhow::ensure!(
                start.elapsed() < DEADLINE,
                "pod {name} not running after {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a CRR as kruise's webhook completes it (§4.2): labels, each container's
    /// `statusContext` from the pod status, strategy defaults. Returns its name.
    async fn create_crr(&self, pod: &Pod, containers: &[&str]) -> anyhow::Result<String> {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let name = format!("{pod_name}-{}", containers.join("-"));
        let containers: Vec<Value> = containers
            .iter()
            .map(|container| {
                let status = status_of(pod, container)?;
                anyhow::Ok(json!({
                    "name": container,
                    "statusContext": {
                        "containerID": status.container_id,
                        "restartCount": status.restart_count,
                    },
                }))
            })
            .collect::<Result<_, _>>()?;
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1beta1",
            "kind": "ContainerRecreateRequest",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {
                    CRR_NODE_NAME_LABEL: self.node,
                    CRR_POD_UID_LABEL: pod.metadata.uid,
                    CRR_ACTIVE_LABEL: "true",
                },
            },
            "spec": {
                "podName": pod_name,
                "containers": containers,
                "strategy": {"failurePolicy": "Fail", "terminationGracePeriodSeconds": 5},
                "activeDeadlineSeconds": 300,
            },
        }))?;
        self.crrs.create(&PostParams::default(), &object).await?;
        Ok(name)
    }

    /// Stops kruised, deletes the pods (waiting for their containers to go when `cri` is
    /// the real runtime), then stops the kubelet.
    async fn tear_down(self, cri: Option<&CriClient>) {
        drop(self.agent);
        drop(self.manager);
        if let Ok(pods) = self.pods.list(&Default::default()).await {
            for pod in pods.items {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let _ = self.pods.delete(&name, &DeleteParams::default()).await;
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let Some(cri) = cri else { continue };
                let start = Instant::now();
                while start.elapsed() < DEADLINE
                    && cri
                        .list_pod_containers(&uid)
                        .await
                        .map_or(true, |containers| !containers.is_empty())
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        self.kubelet.shutdown().await;
    }
}

// ---- the manager stand-in ------------------------------------------------------------------

/// What the manager stand-in saw, by CRR name.
#[derive(Default)]
struct Observations {
    /// When the CRR was first seen `Completed`.
    completed: HashMap<String, Instant>,
    /// When a snapshot showing every container replaced and ready was written.
    snapshot_ready: HashMap<String, Instant>,
}

/// kruise-manager's snapshot sync, driven by the pod and CRR watches, and the bench's eyes
/// on completion. Stops when dropped.
struct Manager {
    observations: Arc<Mutex<Observations>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Manager {
    fn start(client: kube::Client) -> Self {
        let observations = Arc::new(Mutex::new(Observations::default()));
        let changed = Arc::new(Notify::new());
        let task = tokio::spawn(manage(
            client,
            Arc::clone(&observations),
            Arc::clone(&changed),
        ));
        Self {
            observations,
            changed,
            task,
        }
    }

    fn observations(&self) -> std::sync::MutexGuard<'_, Observations> {
        self.observations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the CRR was seen `Completed`, waiting up to `deadline`.
    async fn completed(&self, name: &str, deadline: Duration) -> anyhow::Result<Instant> {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if let Some(at) = self.observations().completed.get(name) {
                    return *at;
                }
                notified.await;
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .with_context(|| format!("CRR {name} not Completed after {deadline:?}"))
    }

    fn snapshot_ready(&self, name: &str) -> Option<Instant> {
        self.observations().snapshot_ready.get(name).copied()
    }
}

async fn manage(
    client: kube::Client,
    observations: Arc<Mutex<Observations>>,
    changed: Arc<Notify>,
) {
    let crr_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &crr_resource());
    let pod_api: Api<Pod> = Api::namespaced(client, NAMESPACE);
    let mut pod_events =
        std::pin::pin!(watcher(pod_api, watcher::Config::default()).default_backoff());
    let mut crr_events =
        std::pin::pin!(watcher(crr_api.clone(), watcher::Config::default()).default_backoff());
    let mut pods: HashMap<String, Pod> = HashMap::new();
    let mut crrs: HashMap<String, DynamicObject> = HashMap::new();
    let mut sent: HashMap<String, Value> = HashMap::new();
    loop {
        let pod_name = tokio::select! {
            Some(event) = pod_events.next() => match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    pods.insert(name.clone(), pod);
                    name
                }
                Ok(watcher::Event::Delete(pod)) => {
                    pods.remove(pod.metadata.name.as_deref().unwrap_or_default());
                    continue;
                }
                _ => continue,
            },
            Some(event) = crr_events.next() => match event {
                Ok(watcher::Event::Apply(crr) | watcher::Event::InitApply(crr)) => {
                    let name = crr.metadata.name.clone().unwrap_or_default();
                    if crr.data["status"]["phase"] == "Completed" {
                        let mut seen = observations.lock().unwrap_or_else(|e| e.into_inner());
                        seen.completed.entry(name.clone()).or_insert_with(Instant::now);
                        drop(seen);
                        changed.notify_waiters();
                    }
                    let pod = crr.data["spec"]["podName"].as_str().unwrap_or_default().to_owned();
                    crrs.insert(name, crr);
                    pod
                }
                Ok(watcher::Event::Delete(crr)) => {
                    crrs.remove(crr.metadata.name.as_deref().unwrap_or_default());
                    continue;
                }
                _ => continue,
            },
            else => return,
        };
        let Some(pod) = pods.get(&pod_name) else {
            continue;
        };
        for crr in crrs
            .values()
            .filter(|crr| crr.data["spec"]["podName"] == pod_name.as_str())
        {
            let Some(snapshot) = snapshot(crr, pod) else {
                continue;
            };
            let name = crr.metadata.name.clone().unwrap_or_default();
            if crr.data["status"]["containerStatusSnapshot"] == snapshot
                || sent.get(&name) == Some(&snapshot)
            {
                continue;
            }
            sent.insert(name.clone(), snapshot.clone());
            if every_container_replaced_and_ready(crr, &snapshot) {
                let mut seen = observations.lock().unwrap_or_else(|e| e.into_inner());
                seen.snapshot_ready
                    .entry(name.clone())
                    .or_insert_with(Instant::now);
            }
            let api = crr_api.clone();
            tokio::spawn(async move {
                let patch = json!({"status": {"containerStatusSnapshot": snapshot}});
                if let Err(error) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    tracing::warn!(%name, %error, "snapshot write failed");
                }
            });
        }
    }
}

/// The snapshot of a Recreating CRR's containers that are running in `pod`, if any.
fn snapshot(crr: &DynamicObject, pod: &Pod) -> Option<Value> {
    let status = &crr.data["status"];
    if status["phase"] != "Recreating" || !status["completionTime"].is_null() {
        return None;
    }
    let labels = crr.metadata.labels.as_ref()?;
    if pod.metadata.uid.as_deref() != labels.get(CRR_POD_UID_LABEL).map(String::as_str) {
        return None;
    }
    let names: Vec<&str> = crr.data["spec"]["containers"]
        .as_array()?
        .iter()
        .filter_map(|container| container["name"].as_str())
        .collect();
    let snapshot: Vec<Value> = container_statuses(pod)
        .iter()
        .filter(|status| names.contains(&status.name.as_str()) && running(status))
        .map(|status| {
            json!({
                "name": status.name,
                "ready": status.ready,
                "restartCount": status.restart_count,
                "containerID": status.container_id,
            })
        })
        .collect();
    (!snapshot.is_empty()).then(|| Value::Array(snapshot))
}

fn every_container_replaced_and_ready(crr: &DynamicObject, snapshot: &Value) -> bool {
    let entries = snapshot.as_array().map(Vec::as_slice).unwrap_or_default();
    crr.data["spec"]["containers"]
        .as_array()
        .is_some_and(|containers| {
            containers.iter().all(|container| {
                entries.iter().any(|entry| {
                    entry["name"] == container["name"]
                        && entry["ready"] == true
                        && entry["containerID"] != container["statusContext"]["containerID"]
                })
            })
        })
}

// ---- the kruised process -------------------------------------------------------------------

// ---- helpers ---------------------------------------------------------------------------------

fn crr_resource() -> kube::core::ApiResource {
    KruiseVersion::V1beta1.resource("ContainerRecreateRequest", "containerrecreaterequests")
}

fn container_statuses(pod: &Pod) -> &[ContainerStatus] {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_deref())
        .unwrap_or(&[])
}

fn status_of<'a>(pod: &'a Pod, name: &str) -> anyhow::Result<&'a ContainerStatus> {
    container_statuses(pod)
        .iter()
        .find(|status| status.name == name)
        .with_context(|| format!("pod has no status for container {name}"))
}

/// The runtime's ID of a container status (`containerd://<id>` → `<id>`).
fn container_id(status: &ContainerStatus) -> anyhow::Result<String> {
    status
        .container_id
        .as_deref()
        .and_then(|id| id.split_once("://"))
        .map(|(_, id)| id.to_owned())
        .with_context(|| format!("container {} has no ID", status.name))
}

fn running(status: &ContainerStatus) -> bool {
    status
        .state
        .as_ref()
        .is_some_and(|state| state.running.is_some())
}

/// The median; sorts `values`.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `<name>_sum / <name>_count` of a histogram in OpenMetrics text.
fn histogram_mean(text: &str, name: &str) -> Option<f64> {
    let value = |suffix: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}_{suffix} ")))
            .and_then(|value| value.trim().parse::<f64>().ok())
    };
    let count = value("count")?;
    (count > 0.0).then(|| value("sum").map(|sum| sum / count))?
}

/// A fresh private folder under the temporary directory (short: unix socket paths are
/// limited to 107 bytes).
fn tempfile_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_means_and_proc_fields_are_read_from_their_text() {
        let text = "# TYPE x histogram\nx_sum 0.5\nx_count 4\nx_bucket{le=\"+Inf\"} 4\n";
        assert_eq!(histogram_mean(text, "x"), Some(0.125));
        assert_eq!(histogram_mean("x_sum 0\nx_count 0\n", "x"), None);
        assert_eq!(histogram_mean(text, "y"), None);
        let own = proc_status_kib(std::process::id(), "VmHWM");
        assert!(own.is_some_and(|kib| kib > 0));
        assert_eq!(proc_status_kib(std::process::id(), "NoSuchField"), None);
        assert!(cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn a_snapshot_counts_as_ready_only_with_every_container_replaced() {
        let crr: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1beta1", "kind": "ContainerRecreateRequest",
            "metadata": {"name": "c"},
            "spec": {"containers": [
                {"name": "a", "statusContext": {"containerID": "containerd://old-a"}},
                {"name": "b", "statusContext": {"containerID": "containerd://old-b"}},
            ]},
        }))
        .unwrap();
        let entry = |name: &str, id: &str, ready: bool| json!({"name": name, "ready": ready, "containerID": format!("containerd://{id}")});
        let half = json!([entry("a", "new-a", true), entry("b", "old-b", true)]);
        assert!(!every_container_replaced_and_ready(&crr, &half));
        let unready = json!([entry("a", "new-a", true), entry("b", "new-b", false)]);
        assert!(!every_container_replaced_and_ready(&crr, &unready));
        let done = json!([entry("a", "new-a", true), entry("b", "new-b", true)]);
        assert!(every_container_replaced_and_ready(&crr, &done));
    }
}
