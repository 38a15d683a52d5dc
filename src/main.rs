//! The `kruised` binary: parse flags, start logging, run.

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use kruised::agent::{self, AgentConfig};
use kruised::cli::{self, Cli, Command};
use kruised::cri::DiscoveryConfig;
use kruised::feature_gates::FeatureGates;
use tracing::{Instrument, error, info, warn};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    match cli.command {
        Some(Command::Crds) => {
            use std::io::Write;
            // A closed pipe (`kruised crds | head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(kruised::api::crds_yaml().as_bytes());
            ExitCode::SUCCESS
        }
        Some(Command::Manifests(args)) => match kruised::manifests::render(&args.to_options()) {
            Ok(objects) => {
                use std::io::Write;
                let yaml = kruised::manifests::to_yaml(&objects);
                let _ = std::io::stdout().write_all(yaml.as_bytes());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("kruised manifests: {error}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Manager(args)) => match run_manager(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("kruised manager: {error:#}");
                ExitCode::FAILURE
            }
        },
        None => match run_agent(cli.agent, &matches) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                // One line, for `kubectl logs` and systemd's journal.
                eprintln!("kruised: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_agent(args: cli::AgentArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let node_name = args
        .node_name
        .clone()
        .filter(|name| !name.is_empty())
        .context("node name is required: set NODE_NAME or pass --node-name")?;
    let listen = cli::parse_listen_addr(&args.addr).map_err(anyhow::Error::msg)?;
    let gates = FeatureGates::parse(&args.feature_gates).context("--feature-gates")?;
    let log_level = kruised::logging::init(args.log_format, args.verbosity);
    for name in &gates.unknown {
        warn!(gate = %name, "unknown feature gate ignored");
    }
    let ignored = cli::ignored_flags_set(matches);
    if !ignored.is_empty() {
        info!(flags = ?ignored, "kruise-daemon flags accepted but not used by kruised");
    }
    let config = AgentConfig {
        node_name,
        listen,
        discovery: DiscoveryConfig {
            host_var_run: args.host_var_run.clone(),
            socket_file: Some(args.socket_file.clone()).filter(|s| !s.is_empty()),
            runtime_endpoint: args.runtime_endpoint.clone(),
        },
        kubeconfig: args.kubeconfig.clone(),
        // -1 (kruise's default, "unlimited") and 0 fall back to our bounded default.
        max_concurrent_pulls: usize::try_from(args.max_workers_for_pull_image)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(kruised::cli::DEFAULT_MAX_CONCURRENT_PULLS),
        crr_workers: args.crr_workers.max(1),
        plugin_config_file: args.plugin_config_file.clone(),
        plugin_bin_dir: args.plugin_bin_dir.clone(),
        feature_gates: gates,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // A node agent should not claim every core of the node.
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        tokio::spawn(log_level.follow_signals());
        let (trigger, shutdown) = agent::shutdown_channel();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("signal received, stopping (a second signal exits at once)");
            trigger.trigger();
            wait_for_signal().await;
            error!("second signal, exiting now");
            std::process::exit(1);
        });
        let span = tracing::info_span!("kruised", node = %config.node_name);
        agent::run(config, shutdown).instrument(span).await
    })?;
    Ok(())
}

fn run_manager(args: cli::ManagerArgs) -> anyhow::Result<()> {
    let listen = cli::parse_listen_addr(&args.addr).map_err(anyhow::Error::msg)?;
    let log_level = kruised::logging::init(args.log_format, args.verbosity);
    let config = kruised::manager::ManagerConfig::from_args(&args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        tokio::spawn(log_level.follow_signals());
        let (trigger, shutdown) = agent::shutdown_channel();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("signal received: stopping the controllers, then releasing the Lease");
            trigger.trigger();
            wait_for_signal().await;
            error!("second signal, exiting now");
            std::process::exit(1);
        });
        let span = tracing::info_span!("kruised_manager");
        kruised::manager::run(config, listen, args.kubeconfig.clone(), shutdown)
            .instrument(span)
            .await
    })?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
