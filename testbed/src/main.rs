//! `testbed`: the dev-only test bed's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use testbed::apiserver::{ApiServer, ApiServerConfig};

/// kruised's test bed: a Kubernetes API test server, a kubelet stand-in, and the local
/// environment around them.
#[derive(Debug, Parser)]
#[command(name = "testbed", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Kubernetes API test server until SIGTERM/SIGINT.
    Apiserver {
        /// API address (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Admin (fault injection, accounting) address.
        #[arg(long, default_value = "127.0.0.1:0")]
        admin_listen: SocketAddr,
        /// Where to write a kubeconfig for the server.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Apply every CRD YAML in this folder at start-up.
        #[arg(long)]
        crds: Option<PathBuf>,
        /// Changes of history kept for watches (older resourceVersions get 410 Gone).
        #[arg(long, default_value_t = 10_000)]
        history_window: usize,
        /// Seconds between watch bookmarks.
        #[arg(long, default_value_t = 60.0)]
        bookmark_interval: f64,
    },
    /// Run a kubelet stand-in for one node on a real CRI runtime until SIGTERM/SIGINT.
    Kubelet {
        /// The node's name.
        #[arg(long)]
        node: String,
        /// Kubeconfig of the API server.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// CRI endpoint (`unix:///…`).
        #[arg(long)]
        runtime_endpoint: String,
        /// cgroupfs parent prefix for pods.
        #[arg(long, default_value = "/kruised-testbed")]
        cgroup_parent_prefix: String,
        /// Where pod log folders go.
        #[arg(long, default_value = "/tmp/testbed-pod-logs")]
        pod_log_dir: PathBuf,
    },
    /// Bring up the local environment in DIR (runtime, registries, API server, kubelet)
    /// and print DIR/env.
    Up {
        /// The environment's folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Stop everything `up` started in DIR.
    Down {
        /// The environment's folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// The background process of `up` (not for direct use).
    #[command(hide = true)]
    ServeEnv {
        /// The environment's folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Serve N independent fake CRI runtimes (DIR/node-<i>.sock) from one process, for
    /// scale runs, until SIGTERM/SIGINT.
    Fakecri {
        /// Where the sockets go.
        #[arg(long)]
        dir: PathBuf,
        /// How many nodes.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
    },
    /// Benchmark the image puller against the environment in DIR (see README).
    BenchPull {
        /// An environment from `testbed up` or `scripts/testenv up`.
        #[arg(long)]
        dir: PathBuf,
        /// Rounds of the overhead measurement.
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// The kruised binary (default: next to this one).
        #[arg(long)]
        kruised: Option<PathBuf>,
    },
    /// Benchmark container recreate: latency on the real runtime of DIR, throughput and
    /// agent memory on the fake CRI (see README).
    BenchRecreate {
        /// An environment from `testbed up` or `scripts/testenv up`.
        #[arg(long)]
        dir: PathBuf,
        /// Rounds of the latency measurement (one fresh pod each).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Pods of the throughput run (two containers each).
        #[arg(long, default_value_t = 50)]
        pods: usize,
        /// CRRs of the throughput run, one per container, at most twice --pods.
        #[arg(long, default_value_t = 100)]
        crrs: usize,
        /// The kruised binary (default: next to this one).
        #[arg(long)]
        kruised: Option<PathBuf>,
        /// Which part to run.
        #[arg(long, value_parser = ["all", "latency", "throughput"], default_value = "all")]
        part: String,
    },
    /// Benchmark `kruised manager` on N simulated nodes (see README).
    BenchManager {
        /// Simulated nodes.
        #[arg(long, default_value_t = 500)]
        nodes: usize,
        /// Jobs per parallelism setting.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Milliseconds each fake CRI pull takes.
        #[arg(long, default_value_t = 1000)]
        pull_ms: u64,
        /// The kruised binary (default: next to this one).
        #[arg(long)]
        kruised: Option<PathBuf>,
    },
    /// Simulate a fleet: N real agent processes on fake CRIs and a manager (see README).
    BenchScale {
        /// Simulated nodes (agent processes).
        #[arg(long, default_value_t = 500)]
        nodes: usize,
        /// The ImagePullJob's parallelism.
        #[arg(long, default_value_t = 50)]
        parallelism: usize,
        /// Milliseconds each fake CRI pull takes.
        #[arg(long, default_value_t = 1000)]
        pull_ms: u64,
        /// Seconds of the steady-state window: longer than kube-rs's 290 s watch timeout,
        /// so that every watch is reopened once inside it.
        #[arg(long, default_value_t = 330)]
        steady_seconds: u64,
        /// The kruised binary (default: next to this one).
        #[arg(long)]
        kruised: Option<PathBuf>,
    },
    /// Every benchmark in one run; writes OUT/results.json and OUT/REPORT.md.
    Bench {
        /// An environment from `testbed up` or `scripts/testenv up`.
        #[arg(long)]
        dir: PathBuf,
        /// Where the report goes.
        #[arg(long, default_value = "bench")]
        out: PathBuf,
        /// Rounds of the pull, recreate and start-up measurements.
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Nodes of the fleet simulation.
        #[arg(long, default_value_t = 500)]
        nodes: usize,
        /// The fleet's ImagePullJob parallelism.
        #[arg(long, default_value_t = 50)]
        parallelism: usize,
        /// Seconds of the fleet's steady-state window (longer than kube-rs's 290 s watch
        /// timeout, so that every watch is reopened once inside it).
        #[arg(long, default_value_t = 330)]
        steady_seconds: u64,
        /// The kruised binary (default: next to this one).
        #[arg(long)]
        kruised: Option<PathBuf>,
    },
    /// Run a bandwidth-limiting TCP proxy until SIGTERM/SIGINT.
    Proxy {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Upstream address (e.g. the registry).
        #[arg(long)]
        upstream: SocketAddr,
        /// Bytes per second passed downstream (0 stalls).
        #[arg(long)]
        rate: u64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Apiserver {
                listen,
                admin_listen,
                kubeconfig,
                crds,
                history_window,
                bookmark_interval,
            } => {
                let server = ApiServer::start(ApiServerConfig {
                    listen,
                    admin_listen,
                    history_window,
                    bookmark_interval: Duration::from_secs_f64(bookmark_interval),
                })
                .await?;
                if let Some(dir) = crds {
                    let applied = server.apply_crds_from_dir(&dir)?;
                    tracing::info!(applied, dir = %dir.display(), "CRDs applied");
                }
                server.write_kubeconfig(&kubeconfig)?;
                println!("APISERVER={}", server.url());
                println!("APISERVER_ADMIN={}", server.admin_url());
                println!("KUBECONFIG={}", kubeconfig.display());
                wait_for_signal().await;
                server.shutdown();
                Ok(())
            }
            Command::Kubelet {
                node,
                kubeconfig,
                runtime_endpoint,
                cgroup_parent_prefix,
                pod_log_dir,
            } => {
                let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig)?;
                let config =
                    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
                let client = kube::Client::try_from(config)?;
                let config = testbed::kubelet::KubeletConfig::new(
                    node,
                    client,
                    runtime_endpoint,
                    cgroup_parent_prefix,
                    pod_log_dir,
                );
                testbed::kubelet::run(config, wait_for_signal()).await?;
                Ok(())
            }
            Command::Up { dir } => {
                print!("{}", testbed::env::up(&dir)?);
                Ok(())
            }
            Command::Down { dir } => {
                testbed::env::down(&dir)?;
                Ok(())
            }
            Command::ServeEnv { dir } => {
                testbed::env::serve(&dir, wait_for_signal()).await?;
                Ok(())
            }
            Command::BenchPull {
                dir,
                rounds,
                kruised,
            } => {
                let kruised = kruised.unwrap_or_else(testbed::bench::sibling_kruised);
                testbed::bench::pull(&dir, &kruised, rounds).await.map(drop)
            }
            Command::BenchRecreate {
                dir,
                rounds,
                pods,
                crrs,
                kruised,
                part,
            } => {
                let kruised = kruised.unwrap_or_else(testbed::bench::sibling_kruised);
                testbed::bench_recreate::recreate(&testbed::bench_recreate::RecreateBench {
                    dir,
                    kruised,
                    rounds,
                    pods,
                    crrs,
                    latency: part != "throughput",
                    throughput: part != "latency",
                })
                .await
                .map(drop)
            }
            Command::BenchManager {
                nodes,
                rounds,
                pull_ms,
                kruised,
            } => {
                let kruised = kruised.unwrap_or_else(testbed::bench::sibling_kruised);
                let config = testbed::bench_manager::BenchManagerConfig {
                    nodes,
                    rounds,
                    pull_duration: Duration::from_millis(pull_ms),
                    parallelisms: vec![Some(50), None],
                };
                testbed::bench_manager::manager(config, &kruised).await
            }
            Command::BenchScale {
                nodes,
                parallelism,
                pull_ms,
                steady_seconds,
                kruised,
            } => {
                let kruised = kruised.unwrap_or_else(testbed::bench::sibling_kruised);
                let config = testbed::bench_scale::ScaleConfig {
                    nodes,
                    parallelism,
                    pull_duration: Duration::from_millis(pull_ms),
                    steady: Duration::from_secs(steady_seconds),
                };
                let measurements = testbed::bench_scale::scale(&config, &kruised).await?;
                println!(
                    "{}",
                    testbed::bench_scale::extrapolate(&measurements, nodes, 5000)
                );
                Ok(())
            }
            Command::Bench {
                dir,
                out,
                rounds,
                nodes,
                parallelism,
                steady_seconds,
                kruised,
            } => {
                let kruised = kruised.unwrap_or_else(testbed::bench::sibling_kruised);
                let command = std::env::args().collect::<Vec<_>>().join(" ");
                let report = testbed::bench_suite::run(&testbed::bench_suite::SuiteConfig {
                    dir,
                    kruised,
                    out: out.clone(),
                    rounds,
                    scale: testbed::bench_scale::ScaleConfig {
                        nodes,
                        parallelism,
                        pull_duration: Duration::from_millis(1000),
                        steady: Duration::from_secs(steady_seconds),
                    },
                    command,
                })
                .await?;
                println!("{}", report.to_markdown());
                eprintln!(
                    "wrote {}/results.json and {}/REPORT.md",
                    out.display(),
                    out.display()
                );
                Ok(())
            }
            Command::Fakecri { dir, nodes } => {
                testbed::fakecri::run(&dir, nodes, wait_for_signal()).await?;
                Ok(())
            }
            Command::Proxy {
                listen,
                upstream,
                rate,
            } => {
                let proxy = testbed::proxy::Proxy::start(listen, upstream, rate).await?;
                println!("PROXY={}", proxy.addr());
                wait_for_signal().await;
                Ok(())
            }
        }
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
