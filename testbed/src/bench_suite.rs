//! `testbed bench`: every benchmark in one run, side by side on the same machine, written
//! as `bench/results.json` and `bench/REPORT.md` (issue "Prove it under stress", §4).
//!
//! Runs the pull benchmark, the recreate benchmark, the start-up measurement and the fleet
//! simulation one after the other, so that ratios (agent against direct pull, agent memory
//! against kruise-daemon's limit) come from one run on one machine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::apiserver::{ApiServer, ApiServerConfig};
use crate::bench_process::AgentProcess;
use crate::bench_recreate::RecreateBench;
use crate::bench_report::{Machine, Measurement, Report, Section};
use crate::bench_scale::ScaleConfig;
use crate::env::{REFERENCE_CRDS, read_env};

/// What to run.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// An environment from `testbed up` or `scripts/testenv up` (real containerd, registry).
    pub dir: PathBuf,
    /// The kruised binary.
    pub kruised: PathBuf,
    /// Where results.json and REPORT.md go.
    pub out: PathBuf,
    /// Rounds of the pull, recreate and start-up measurements.
    pub rounds: usize,
    /// The fleet simulation.
    pub scale: ScaleConfig,
    /// The command line, for the report.
    pub command: String,
}

/// Runs everything and writes the report; returns it.
pub async fn run(config: &SuiteConfig) -> anyhow::Result<Report> {
    let machine = Machine::read();
    let mut sections = Vec::new();

    eprintln!("== image pre-pull");
    let pull = crate::bench::pull(&config.dir, &config.kruised, config.rounds)
        .await
        .context("the pull benchmark")?;
    sections.push(Section {
        title: "Image pre-pull (real containerd, local registry)".into(),
        method: format!(
            "`testbed bench-pull`: {} interleaved rounds of a direct CRI PullImage and the same \
             pull through a NodeImage tag, the image's blobs removed before each; the agent is \
             the release binary against the test API server.",
            config.rounds
        ),
        measurements: pull,
        notes: Vec::new(),
    });

    eprintln!("== container recreate");
    let recreate = crate::bench_recreate::recreate(&RecreateBench {
        dir: config.dir.clone(),
        kruised: config.kruised.clone(),
        rounds: config.rounds,
        pods: 50,
        crrs: 100,
        latency: true,
        throughput: true,
    })
    .await
    .context("the recreate benchmark")?;
    sections.push(Section {
        title: "Container recreate".into(),
        method: format!(
            "`testbed bench-recreate`: latency over {} rounds on real containerd with the kubelet \
             stand-in (one fresh pod per round); throughput and memory with 100 CRRs over 50 \
             two-container pods on the fake CRI.",
            config.rounds
        ),
        measurements: recreate,
        notes: Vec::new(),
    });

    eprintln!("== start-up and binary");
    let mut startup = startup(&config.dir, &config.kruised, config.rounds).await?;
    startup.push(binary_size(&config.kruised)?);
    sections.push(Section {
        title: "Start-up and binary".into(),
        method: format!(
            "{} starts of the release binary against real containerd and a test API server \
             with the CRDs: process spawned → `/readyz` answers 200 (CRI validated, every \
             watch listed).",
            config.rounds
        ),
        measurements: startup,
        notes: Vec::new(),
    });

    eprintln!("== fleet simulation ({} nodes)", config.scale.nodes);
    let scale = crate::bench_scale::scale(&config.scale, &config.kruised)
        .await
        .context("the fleet simulation")?;
    let notes = vec![crate::bench_scale::extrapolate(
        &scale,
        config.scale.nodes,
        5000,
    )];
    sections.push(Section {
        title: format!("Fleet simulation ({} nodes)", config.scale.nodes),
        method: format!(
            "`testbed bench-scale`: {} real agent processes, each on its own fake CRI, one \
             `kruised manager` process, the test API server; steady state counted over {} s \
             after start-up settled; then one ImagePullJob over every node.",
            config.scale.nodes,
            config.scale.steady.as_secs()
        ),
        measurements: scale,
        notes,
    });

    let report = Report {
        machine,
        command: config.command.clone(),
        sections,
    };
    report
        .write(&config.out)
        .with_context(|| format!("writing {}", config.out.display()))?;
    Ok(report)
}

/// Spawn → `/readyz` 200, `rounds` times, against the environment's containerd and a fresh
/// API server with the CRDs.
pub async fn startup(
    dir: &Path,
    kruised: &Path,
    rounds: usize,
) -> anyhow::Result<Vec<Measurement>> {
    let env = read_env(&dir.join("env"))?;
    let endpoint = env
        .get("RUNTIME_ENDPOINT")
        .with_context(|| format!("{}/env has no RUNTIME_ENDPOINT", dir.display()))?
        .clone();
    let server = ApiServer::start(ApiServerConfig::default()).await?;
    server.apply_crds_from_dir(Path::new(REFERENCE_CRDS))?;
    let scratch = dir.join("bench-startup");
    std::fs::create_dir_all(&scratch)?;
    let kubeconfig = scratch.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let mut seconds = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        let agent = AgentProcess::spawn(
            kruised,
            &format!("bench-startup-{round}"),
            &endpoint,
            &kubeconfig,
            &scratch.join(format!("kruised-{round}.log")),
        )?;
        agent.wait_ready_every(Duration::from_millis(5)).await?;
        seconds.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "start-up to /readyz: {:?} ms",
        seconds.iter().map(|s| s.round()).collect::<Vec<_>>()
    );
    Ok(vec![Measurement::median_of(
        "startup.readyz_ms",
        "process start → /readyz 200",
        &seconds,
        "ms",
    )])
}

/// The size of the binary on disk.
pub fn binary_size(kruised: &Path) -> anyhow::Result<Measurement> {
    let bytes = std::fs::metadata(kruised)
        .with_context(|| format!("reading {}", kruised.display()))?
        .len();
    println!("binary: {} bytes", bytes);
    Ok(Measurement::single(
        "binary.size_mib",
        "kruised binary (release, debuginfo stripped; agent and manager in one)",
        bytes as f64 / 1024.0 / 1024.0,
        "MiB",
    ))
}
