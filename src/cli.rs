//! Command-line flags: every kruise-daemon flag (§7.3), plus kruised's own.
//!
//! kruise-daemon is a Go binary: bool flags take `--flag` or `--flag=false` (never a
//! separate value), and `-v=5` and `--v=5` are both accepted. Unknown flags make the Go
//! binary exit, so a drop-in must accept the whole list.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand, ValueEnum};

use crate::cri::discovery::DEFAULT_HOST_VAR_RUN;

/// kruised: a node agent for OpenKruise (image pre-pull and in-place container recreate).
#[derive(Debug, Parser)]
#[command(
    name = "kruised",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run; without a subcommand, kruised runs the node agent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The node agent's flags.
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the apps.kruise.io CustomResourceDefinitions kruised serves, as YAML.
    Crds,
    /// Run the cluster-side controller (one leader-elected Deployment per cluster) that
    /// replaces kruise-manager for NodeImage, ImagePullJob, ImageListPullJob and
    /// ContainerRecreateRequest.
    Manager(Box<ManagerArgs>),
    /// Print every install object (namespaces, service accounts, RBAC, the agent
    /// DaemonSet, the manager Deployment, services, the admission policy) as YAML.
    Manifests(Box<ManifestsArgs>),
}

/// Flags of `kruised manifests`. Defaults render the committed deploy/ tree.
#[derive(Debug, Clone, Args)]
pub struct ManifestsArgs {
    /// `standalone` (agent + manager) or `with-openkruise` (the agent replaces
    /// kruise-daemon; kruise-manager stays).
    #[arg(long, value_enum, default_value = "standalone")]
    pub mode: crate::manifests::Mode,
    /// Namespace of the agent and the manager.
    #[arg(long, default_value = "kruise-system", value_name = "NS")]
    pub namespace: String,
    /// Namespace the agents read pull secrets from.
    #[arg(long, default_value = "kruise-daemon-config", value_name = "NS")]
    pub config_namespace: String,
    /// Image of the agent and the manager (default: kruised:v<version>).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// imagePullPolicy of both containers.
    #[arg(long, default_value = "IfNotPresent", value_name = "POLICY")]
    pub image_pull_policy: String,
    /// Agent toleration, `KEY[=VALUE][:EFFECT]` or `Exists`; repeatable. Default: one
    /// `operator: Exists` (every taint).
    #[arg(long = "toleration", value_name = "TOLERATION", value_parser = crate::manifests::options::parse_toleration)]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    /// Agent CPU request.
    #[arg(long, default_value = "10m")]
    pub agent_cpu_request: String,
    /// Agent memory request.
    #[arg(long, default_value = "32Mi")]
    pub agent_memory_request: String,
    /// Agent CPU limit ("" for none).
    #[arg(long, default_value = "100m")]
    pub agent_cpu_limit: String,
    /// Agent memory limit.
    #[arg(long, default_value = "96Mi")]
    pub agent_memory_limit: String,
    /// Manager CPU request.
    #[arg(long, default_value = "20m")]
    pub manager_cpu_request: String,
    /// Manager memory request.
    #[arg(long, default_value = "64Mi")]
    pub manager_memory_request: String,
    /// Manager CPU limit ("" for none).
    #[arg(long, default_value = "")]
    pub manager_cpu_limit: String,
    /// Manager memory limit.
    #[arg(long, default_value = "256Mi")]
    pub manager_memory_limit: String,
    /// Host directory holding the runtime socket (mounted read-only at /hostvarrun).
    #[arg(long, default_value = "/var/run", value_name = "DIR")]
    pub socket_location: String,
    /// Socket file name under /hostvarrun (default: detect).
    #[arg(long, default_value = "", value_name = "NAME")]
    pub socket_file: String,
    /// Group owning the runtime socket: the agent then runs as non-root (65532) with it
    /// as a supplementary group. Without it, uid 0 with every capability dropped.
    #[arg(long, value_name = "GID")]
    pub socket_group: Option<i64>,
    /// Run the agent in the host network namespace (only if it must pull before CNI).
    #[arg(long)]
    pub host_network: bool,
    /// The agent's PriorityClass (the default one is rendered too).
    #[arg(long, default_value = crate::manifests::options::DEFAULT_PRIORITY_CLASS)]
    pub priority_class: String,
    /// Manager replicas (leader-elected).
    #[arg(long, default_value_t = 2)]
    pub manager_replicas: i32,
    /// Also render the apps.kruise.io CRDs (standalone only).
    #[arg(long)]
    pub include_crds: bool,
    /// Also render Prometheus Operator ServiceMonitors.
    #[arg(long)]
    pub service_monitor: bool,
    /// Namespace where OpenKruise's kruise-manager would run (the manager checks it).
    #[arg(long, default_value = "kruise-system", value_name = "NS")]
    pub kruise_namespace: String,
}

impl ManifestsArgs {
    /// The render options these flags describe.
    pub fn to_options(&self) -> crate::manifests::Options {
        use crate::manifests::{Options, ResourceSizes, options};
        Options {
            mode: self.mode,
            namespace: self.namespace.clone(),
            config_namespace: self.config_namespace.clone(),
            image: self.image.clone().unwrap_or_else(options::default_image),
            image_pull_policy: self.image_pull_policy.clone(),
            tolerations: if self.tolerations.is_empty() {
                vec![options::tolerate_everything()]
            } else {
                self.tolerations.clone()
            },
            agent_resources: ResourceSizes {
                cpu_request: self.agent_cpu_request.clone(),
                memory_request: self.agent_memory_request.clone(),
                cpu_limit: self.agent_cpu_limit.clone(),
                memory_limit: self.agent_memory_limit.clone(),
            },
            manager_resources: ResourceSizes {
                cpu_request: self.manager_cpu_request.clone(),
                memory_request: self.manager_memory_request.clone(),
                cpu_limit: self.manager_cpu_limit.clone(),
                memory_limit: self.manager_memory_limit.clone(),
            },
            socket_location: self.socket_location.clone(),
            socket_file: self.socket_file.clone(),
            socket_group: self.socket_group,
            host_network: self.host_network,
            priority_class: self.priority_class.clone(),
            manager_replicas: self.manager_replicas,
            include_crds: self.include_crds,
            service_monitor: self.service_monitor,
            kruise_namespace: self.kruise_namespace.clone(),
        }
    }
}

/// Flags of `kruised manager`. Durations are Go-style (`30s`, `1m30s`, `500ms`).
#[derive(Debug, Clone, Args)]
pub struct ManagerArgs {
    /// Path to a kubeconfig (same resolution order as the agent).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Address for /metrics, /healthz, /livez and /readyz.
    #[arg(long, default_value = ":10231", value_name = "ADDR")]
    pub addr: String,

    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// klog verbosity: 0-3 info, 4-5 debug, 6+ trace. RUST_LOG overrides it.
    #[arg(short = 'v', long = "v", default_value_t = 0, value_name = "LEVEL")]
    pub verbosity: u8,

    /// Elect a leader on a coordination.k8s.io/v1 Lease; only the leader acts. Turn off
    /// only for a single replica.
    #[arg(long, value_parser = parse_go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
    pub leader_elect: bool,

    /// Namespace of the leader election Lease (normally the manager's own namespace).
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "kruise-system",
        value_name = "NS"
    )]
    pub leader_election_namespace: String,

    /// Name of the leader election Lease. Deliberately not kruise-manager's.
    #[arg(long, default_value = "kruised-manager", value_name = "NAME")]
    pub leader_election_id: String,

    /// This replica's identity in the Lease (default: pod name or host name, plus a
    /// random suffix).
    #[arg(long, env = "POD_NAME", value_name = "ID")]
    pub leader_election_identity: Option<String>,

    /// How long a Lease holds without renewal before another replica may take it.
    #[arg(long, default_value = "15s", value_parser = parse_go_duration, value_name = "DURATION")]
    pub leader_election_lease_duration: std::time::Duration,

    /// How long the leader keeps acting without a successful renewal. Must be shorter
    /// than the lease duration: the difference is the fencing margin.
    #[arg(long, default_value = "10s", value_parser = parse_go_duration, value_name = "DURATION")]
    pub leader_election_renew_deadline: std::time::Duration,

    /// Pause between acquisition or renewal attempts.
    #[arg(long, default_value = "2s", value_parser = parse_go_duration, value_name = "DURATION")]
    pub leader_election_retry_period: std::time::Duration,

    /// Namespace where OpenKruise's kruise-manager would run (checked at start and
    /// periodically: kruised manager refuses to run next to it).
    #[arg(long, default_value = "kruise-system", value_name = "NS")]
    pub kruise_namespace: String,

    /// Delay after a Node turns Ready before its NodeImage is created.
    #[arg(long, default_value = "30s", value_parser = parse_go_duration, value_name = "DURATION")]
    pub nodeimage_creation_delay: std::time::Duration,

    /// Seconds added to the TTL of tags written for `completionPolicy: Always` jobs (kruise:
    /// 300, at most 31 days).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub default_ttlseconds_for_always_nodeimage: i32,

    /// Namespace the agents read pull secrets from; job secrets are copied there.
    #[arg(
        long,
        env = "KRUISE_DAEMON_CONFIG_NS",
        default_value = "kruise-daemon-config",
        value_name = "NS"
    )]
    pub daemon_config_namespace: String,

    /// NodeImages reconciled in parallel.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub nodeimage_workers: u16,

    /// ImagePullJobs and ImageListPullJobs reconciled in parallel.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub imagepulljob_workers: u16,

    /// ContainerRecreateRequests reconciled in parallel.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub crr_workers: u16,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of the node agent.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Name of the node this agent runs on (normally from the downward API).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Path to a kubeconfig. Resolution order: this flag, $KUBECONFIG, in-cluster,
    /// ~/.kube/config.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Address for /metrics, /healthz, /livez and /readyz (Go style: ":10221" = all
    /// interfaces).
    #[arg(long, default_value = ":10221", value_name = "ADDR")]
    pub addr: String,

    /// CRI endpoint (absolute socket path or unix:// URI). Overrides discovery.
    #[arg(long, value_name = "ENDPOINT")]
    pub runtime_endpoint: Option<String>,

    /// CRI socket file name relative to --host-var-run (kruise semantics).
    #[arg(long, default_value = "", value_name = "NAME")]
    pub socket_file: String,

    /// Where the host's /var/run is mounted.
    #[arg(long, default_value = DEFAULT_HOST_VAR_RUN, value_name = "DIR")]
    pub host_var_run: PathBuf,

    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// klog verbosity: 0-3 info, 4-5 debug, 6+ trace. RUST_LOG overrides it.
    #[arg(short = 'v', long = "v", default_value_t = 0, value_name = "LEVEL")]
    pub verbosity: u8,

    /// kruise feature gates, e.g. "ImagePullJobGate=true,AllBeta=true".
    #[arg(long, default_value = "", value_name = "GATES")]
    pub feature_gates: String,

    /// Node-wide cap on concurrent CRI image pulls. kruise's -1 ("unlimited") and 0
    /// mean kruised's bounded default.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_name = "N")]
    pub max_workers_for_pull_image: i32,

    /// Pods whose ContainerRecreateRequests are worked on in parallel (kruise: 32, fixed).
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub crr_workers: usize,

    /// kubelet CredentialProviderConfig for image pull credential plugins.
    #[arg(
        long,
        default_value = "/kruise/CredentialProviderPlugin.yaml",
        value_name = "PATH"
    )]
    pub plugin_config_file: PathBuf,

    /// Directory of credential provider plugin binaries.
    #[arg(long, default_value = "/kruise/plugins", value_name = "DIR")]
    pub plugin_bin_dir: PathBuf,

    /// Flags kept only so kruise-daemon manifests keep working.
    #[command(flatten)]
    pub compat: CompatArgs,
}

/// Flags kruise-daemon accepts that kruised accepts and ignores (logged once). They
/// exist so existing DaemonSet manifests and Helm values keep working.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Accepted for kruise-daemon compatibility (ignored)")]
pub struct CompatArgs {
    /// Go pprof address. kruised serves no pprof.
    #[arg(long, default_value = ":10222")]
    pub pprof_addr: String,
    /// Go pprof switch. kruised serves no pprof.
    #[arg(long, value_parser = parse_go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
    pub enable_pprof: bool,
    /// client-go QPS; kruised uses watches and needs no client-side limiter.
    #[arg(long, default_value_t = 0.0)]
    pub rest_config_qps: f32,
    /// client-go burst.
    #[arg(long, default_value_t = 0)]
    pub rest_config_burst: i32,
    /// klog: per-module verbosity.
    #[arg(long, default_value = "")]
    pub vmodule: String,
    /// klog: log to stderr (kruised always does).
    #[arg(long, value_parser = parse_go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
    pub logtostderr: bool,
    /// klog.
    #[arg(long, value_parser = parse_go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub alsologtostderr: bool,
    /// klog.
    #[arg(long = "log_dir", default_value = "")]
    pub log_dir: String,
    /// klog.
    #[arg(long = "log_file", default_value = "")]
    pub log_file: String,
    /// klog.
    #[arg(long = "log_file_max_size", default_value = "1800")]
    pub log_file_max_size: String,
    /// klog.
    #[arg(long = "one_output", value_parser = parse_go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub one_output: bool,
    /// klog.
    #[arg(long = "skip_headers", value_parser = parse_go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub skip_headers: bool,
    /// klog.
    #[arg(long = "skip_log_headers", value_parser = parse_go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub skip_log_headers: bool,
    /// klog.
    #[arg(long = "stderrthreshold", default_value = "2")]
    pub stderrthreshold: String,
    /// klog.
    #[arg(long = "add_dir_header", value_parser = parse_go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub add_dir_header: bool,
    /// klog.
    #[arg(long = "log_backtrace_at", default_value = ":0")]
    pub log_backtrace_at: String,
    /// Registered by kruise's transitive imports; no effect on the daemon.
    #[arg(long, default_value = "5m")]
    pub expectation_timeout: String,
    /// Ditto.
    #[arg(long, default_value = "5ms")]
    pub rate_limiter_base_delay: String,
    /// Ditto.
    #[arg(long, default_value = "1000s")]
    pub rate_limiter_max_delay: String,
    /// Ditto.
    #[arg(long, default_value = "10")]
    pub rate_limiter_qps: String,
    /// Ditto.
    #[arg(long, default_value = "100")]
    pub rate_limiter_bucket_size: String,
    /// Ditto.
    #[arg(long, value_parser = parse_go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub disable_no_deepcopy: bool,
    /// Ditto.
    #[arg(long, default_value = "/log")]
    pub protection_log_path: String,
    /// Ditto.
    #[arg(long, default_value = "3")]
    pub sidecarset_workers: String,
    /// Ditto.
    #[arg(long, default_value = "3")]
    pub statefulset_workers: String,
    /// Ditto.
    #[arg(long, value_parser = parse_go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub cloneset_scaling_exclude_preparing_delete: bool,
}

/// Concurrent CRI pulls when `--max-workers-for-pull-image` is not positive. kruise's own
/// manifest runs with 2: each containerd pull already fetches 3 layers at once, so 2 pulls
/// keep a node's link busy without thrashing its disk, and a node never runs an unbounded
/// number of 600 s pulls at once (§8.1, §10 item 19).
pub const DEFAULT_MAX_CONCURRENT_PULLS: usize = 2;

/// Flag ids that are accepted but have no effect, for the one-time "ignored" log.
const IGNORED_FLAGS: &[&str] = &[
    "pprof_addr",
    "enable_pprof",
    "rest_config_qps",
    "rest_config_burst",
    "vmodule",
    "logtostderr",
    "alsologtostderr",
    "log_dir",
    "log_file",
    "log_file_max_size",
    "one_output",
    "skip_headers",
    "skip_log_headers",
    "stderrthreshold",
    "add_dir_header",
    "log_backtrace_at",
    "expectation_timeout",
    "rate_limiter_base_delay",
    "rate_limiter_max_delay",
    "rate_limiter_qps",
    "rate_limiter_bucket_size",
    "disable_no_deepcopy",
    "protection_log_path",
    "sidecarset_workers",
    "statefulset_workers",
    "cloneset_scaling_exclude_preparing_delete",
];

/// The ignored flags the user actually set on the command line, as `--name` strings.
pub fn ignored_flags_set(matches: &ArgMatches) -> Vec<String> {
    IGNORED_FLAGS
        .iter()
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .map(|id| format!("--{}", long_name(id)))
        .collect()
}

/// The long flag for an argument id: klog's flags keep underscores, ours use dashes.
fn long_name(id: &str) -> String {
    const UNDERSCORED: &[&str] = &[
        "log_dir",
        "log_file",
        "log_file_max_size",
        "one_output",
        "skip_headers",
        "skip_log_headers",
        "add_dir_header",
        "log_backtrace_at",
    ];
    if UNDERSCORED.contains(&id) {
        id.to_string()
    } else {
        id.replace('_', "-")
    }
}

/// Go's `strconv.ParseBool`: what a Go bool flag accepts.
pub fn parse_go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("{other:?} is not a boolean")),
    }
}

/// Parses a Go duration (`300ms`, `1.5s`, `1m30s`, `2h`); a bare number is seconds.
pub fn parse_go_duration(value: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("invalid duration {value:?}");
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| std::time::Duration::from_secs_f64(seconds))
            .ok_or_else(invalid);
    }
    let mut rest = value;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// Parses a Go listen address: `:10221` means every interface.
pub fn parse_listen_addr(addr: &str) -> Result<std::net::SocketAddr, String> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    if let Ok(socket) = full.parse() {
        return Ok(socket);
    }
    // "localhost:10221" and other host names.
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .map_err(|e| format!("invalid listen address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("invalid listen address {addr:?}: no address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn parse(args: &[&str]) -> (Cli, ArgMatches) {
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("kruised").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        (Cli::from_arg_matches(&matches).unwrap(), matches)
    }

    #[test]
    fn accepts_kruise_manifest_and_chart_arguments() {
        // config/manager/manager.yaml (§8.1) and the Helm chart (§8.2).
        let (cli, _) = parse(&[
            "--logtostderr=true",
            "-v=5",
            "--feature-gates=AllAlpha=true,AllBeta=true",
            "--max-workers-for-pull-image=2",
        ]);
        assert_eq!(cli.agent.verbosity, 5);
        assert_eq!(cli.agent.max_workers_for_pull_image, 2);
        let (cli, matches) = parse(&[
            "--logtostderr=true",
            "--v=4",
            "--addr=:10221",
            "--feature-gates=ImagePullJobGate=true",
            "--socket-file=",
            "--enable-pprof=true",
            "--pprof-addr=localhost:10222",
            "--plugin-config-file=/credential-provider-config/CredentialProviderPlugin.yaml",
            "--plugin-bin-dir=/credential-provider-plugin",
        ]);
        assert_eq!(cli.agent.verbosity, 4);
        assert_eq!(cli.agent.socket_file, "");
        let ignored = ignored_flags_set(&matches);
        assert!(
            ignored.contains(&"--enable-pprof".to_string()),
            "{ignored:?}"
        );
        assert!(
            ignored.contains(&"--logtostderr".to_string()),
            "{ignored:?}"
        );
    }

    #[test]
    fn accepts_every_listed_kruise_flag() {
        let (cli, matches) = parse(&[
            "--kubeconfig=/tmp/kc",
            "--rest-config-qps=20",
            "--rest-config-burst=30",
            "--vmodule=x=2",
            "--alsologtostderr",
            "--log_dir=/tmp",
            "--log_file=/tmp/x",
            "--log_file_max_size=10",
            "--one_output=true",
            "--skip_headers",
            "--skip_log_headers=false",
            "--stderrthreshold=INFO",
            "--add_dir_header",
            "--log_backtrace_at=:0",
            "--expectation-timeout=5m",
            "--rate-limiter-base-delay=5ms",
            "--rate-limiter-max-delay=1000s",
            "--rate-limiter-qps=10",
            "--rate-limiter-bucket-size=100",
            "--disable-no-deepcopy",
            "--protection-log-path=/log",
            "--sidecarset-workers=3",
            "--statefulset-workers=3",
            "--cloneset-scaling-exclude-preparing-delete=false",
            "--enable-pprof=false",
        ]);
        assert!(!cli.agent.compat.enable_pprof);
        assert!(cli.agent.compat.skip_headers);
        assert!(ignored_flags_set(&matches).contains(&"--log_dir".to_string()));
    }

    #[test]
    fn go_bool_flags_do_not_swallow_the_next_argument() {
        let (cli, _) = parse(&["--logtostderr", "--addr", ":1234"]);
        assert!(cli.agent.compat.logtostderr);
        assert_eq!(cli.agent.addr, ":1234");
    }

    #[test]
    fn manifests_defaults_match_the_library_defaults() {
        let (cli, _) = parse(&["manifests"]);
        let Some(Command::Manifests(args)) = cli.command else {
            panic!("manifests subcommand expected");
        };
        let options = args.to_options();
        let defaults = crate::manifests::Options::default();
        assert_eq!(options.agent_resources, defaults.agent_resources);
        assert_eq!(options.manager_resources, defaults.manager_resources);
        assert_eq!(options.tolerations, defaults.tolerations);
        assert_eq!(options.namespace, defaults.namespace);
        assert_eq!(options.config_namespace, defaults.config_namespace);
        assert_eq!(options.image, defaults.image);
        assert_eq!(options.priority_class, defaults.priority_class);
        assert_eq!(options.socket_location, defaults.socket_location);
    }

    #[test]
    fn manifests_flags_parse() {
        let (cli, _) = parse(&[
            "manifests",
            "--mode=with-openkruise",
            "--socket-group=1001",
            "--toleration=dedicated=infra:NoSchedule",
            "--toleration=Exists",
        ]);
        let Some(Command::Manifests(args)) = cli.command else {
            panic!("manifests subcommand expected");
        };
        let options = args.to_options();
        assert_eq!(options.mode, crate::manifests::Mode::WithOpenkruise);
        assert_eq!(options.socket_group, Some(1001));
        assert_eq!(options.tolerations.len(), 2);
    }

    #[test]
    fn crds_subcommand_parses() {
        let (cli, _) = parse(&["crds"]);
        assert!(matches!(cli.command, Some(Command::Crds)));
    }

    #[test]
    fn manager_subcommand_takes_its_own_flags() {
        let (cli, _) = parse(&[
            "manager",
            "--leader-elect=false",
            "--nodeimage-creation-delay=1m30s",
            "--leader-election-retry-period=500ms",
            "--crr-workers=5",
        ]);
        let Some(Command::Manager(args)) = cli.command else {
            panic!("manager subcommand expected");
        };
        assert!(!args.leader_elect);
        assert_eq!(args.nodeimage_creation_delay.as_secs(), 90);
        assert_eq!(args.leader_election_retry_period.as_millis(), 500);
        assert_eq!(args.leader_election_lease_duration.as_secs(), 15);
        assert_eq!(args.crr_workers, 5);
    }

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(parse_go_duration("30s").unwrap().as_secs(), 30);
        assert_eq!(parse_go_duration("1.5s").unwrap().as_millis(), 1500);
        assert_eq!(parse_go_duration("2h1m").unwrap().as_secs(), 7260);
        assert_eq!(parse_go_duration("7").unwrap().as_secs(), 7);
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("5 days").is_err());
        assert!(parse_go_duration("-1s").is_err());
    }

    #[test]
    fn listen_addresses_follow_go_rules() {
        assert_eq!(
            parse_listen_addr(":10221").unwrap().to_string(),
            "0.0.0.0:10221"
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:0").unwrap().to_string(),
            "127.0.0.1:0"
        );
        assert!(
            parse_listen_addr("localhost:10222")
                .unwrap()
                .ip()
                .is_loopback()
        );
        assert!(parse_listen_addr("nope").is_err());
    }
}
