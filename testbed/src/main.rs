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
