//! The probe handlers, each the kubelet 1.32 prober kruise-daemon uses (§5.3), plus gRPC:
//!
//! - [`exec`]: CRI `ExecSync` in the container;
//! - [`http`]: an HTTP(S) GET to the pod IP (or `host`) with the kubelet's headers and
//!   redirect rules;
//! - [`tcp`]: a TCP connection;
//! - [`grpc`]: the `grpc.health.v1.Health/Check` call.
//!
//! A handler answers [`Outcome::Success`] or [`Outcome::Failure`] with the message kruise would
//! report; a [`ProbeError`] is a probe that could not be run at all, which kruise logs without
//! changing the result.

pub mod exec;
pub mod grpc;
pub mod http;
pub mod tcp;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cri::{CriClient, CriError};

/// The kubelet's `io.kubernetes.container.ports` annotation on CRI containers: the container's
/// ports as JSON, for named ports.
pub const CONTAINER_PORTS_ANNOTATION: &str = "io.kubernetes.container.ports";

/// What a probe found. A kubelet `Warning` (an HTTP redirect not followed) is a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The probe passed; the message is its output.
    Success(String),
    /// The probe failed; the message says why.
    Failure(String),
}

/// A probe that could not be run: logged, and the result is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe names no handler kruised knows.
    #[error("missing probe handler for {container}")]
    MissingHandler {
        /// The container's name.
        container: String,
    },
    /// The port is neither a number in 1..=65535 nor one of the container's port names.
    #[error("{0}")]
    InvalidPort(String),
    /// `ExecSync` failed for another reason than the command's exit code or a timeout.
    #[error("exec probe could not run: {0}")]
    Exec(#[source] CriError),
}

/// Which handler a probe uses, as a bounded metric label.
pub fn handler_label(probe: &Probe) -> &'static str {
    if probe.exec.is_some() {
        "exec"
    } else if probe.http_get.is_some() {
        "http"
    } else if probe.tcp_socket.is_some() {
        "tcp"
    } else if probe.grpc.is_some() {
        "grpc"
    } else {
        "none"
    }
}

/// Whether two probes have the same handler (kruise compares `ProbeHandler` to decide whether
/// a spec change resets the result).
pub fn same_handler(a: &Probe, b: &Probe) -> bool {
    a.exec == b.exec && a.http_get == b.http_get && a.tcp_socket == b.tcp_socket && a.grpc == b.grpc
}

/// The probe timeout: `timeoutSeconds`, at least 1 s (kruise's default for ≤ 0).
pub fn timeout_of(probe: &Probe) -> Duration {
    Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(0).max(1)).unwrap_or(1))
}

/// What a probe runs against.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The runtime that runs the container.
    pub cri: &'a CriClient,
    /// The runtime's ID of the container.
    pub container_id: &'a str,
    /// The container's name.
    pub container_name: &'a str,
    /// The pod IP from the NodePodProbe.
    pub pod_ip: &'a str,
    /// The container's ports, for named ports.
    pub ports: &'a [ContainerPort],
}

/// Runs `probe` once against `target`: the first handler of exec, httpGet, tcpSocket, gRPC.
pub async fn run(probe: &Probe, target: &Target<'_>) -> Result<Outcome, ProbeError> {
    let timeout = timeout_of(probe);
    if let Some(action) = &probe.exec {
        let command = action.command.clone().unwrap_or_default();
        return exec::probe(target.cri, target.container_id, command, timeout).await;
    }
    if let Some(action) = &probe.http_get {
        return http::probe(action, target.pod_ip, target.ports, timeout).await;
    }
    if let Some(action) = &probe.tcp_socket {
        let host = action
            .host
            .as_deref()
            .filter(|host| !host.is_empty())
            .unwrap_or(target.pod_ip);
        let port = resolve_port(&action.port, target.ports)?;
        return Ok(tcp::probe(host, port, timeout).await);
    }
    if let Some(action) = &probe.grpc {
        let port = u16::try_from(action.port)
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| {
                ProbeError::InvalidPort(format!("invalid port number: {}", action.port))
            })?;
        let service = action.service.as_deref().unwrap_or_default();
        return Ok(grpc::probe(target.pod_ip, port, service, timeout).await);
    }
    Err(ProbeError::MissingHandler {
        container: target.container_name.to_owned(),
    })
}

/// A probe port: a number, or the name of one of the container's ports (the kubelet's
/// `ResolveContainerPort`; kruise accepts numbers only).
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, ProbeError> {
    crate::recreate::kill::resolve_port(port, ports).map_err(ProbeError::InvalidPort)
}

/// The container's ports from its CRI annotations; none when absent or unreadable.
pub fn container_ports(
    annotations: &std::collections::HashMap<String, String>,
) -> Vec<ContainerPort> {
    annotations
        .get(CONTAINER_PORTS_ANNOTATION)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

/// Go's `net.JoinHostPort`.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Go's `strconv.Quote` for the texts probes quote (URLs, commands).
pub fn go_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() => quoted.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Go's `time.Duration` text for whole seconds: `1s`, `1m0s`.
pub fn go_seconds(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, seconds / 60 % 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ExecAction, GRPCAction, TCPSocketAction};

    use super::*;

    #[test]
    fn handler_changes_are_told_apart_from_timing_changes() {
        let exec = |command: &str| Probe {
            exec: Some(ExecAction {
                command: Some(vec![command.into()]),
            }),
            ..Probe::default()
        };
        let mut slower = exec("true");
        slower.period_seconds = Some(10);
        assert!(same_handler(&exec("true"), &slower));
        assert!(!same_handler(&exec("true"), &exec("false")));
        assert_eq!(handler_label(&exec("true")), "exec");
        let grpc = Probe {
            grpc: Some(GRPCAction {
                port: 9,
                service: None,
            }),
            ..Probe::default()
        };
        assert_eq!(handler_label(&grpc), "grpc");
        assert!(!same_handler(&grpc, &exec("true")));
        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                host: None,
                port: IntOrString::Int(80),
            }),
            ..Probe::default()
        };
        assert_eq!(handler_label(&tcp), "tcp");
        assert_eq!(handler_label(&Probe::default()), "none");
    }

    #[test]
    fn timeouts_default_to_one_second() {
        let with = |seconds: Option<i32>| Probe {
            timeout_seconds: seconds,
            ..Probe::default()
        };
        assert_eq!(timeout_of(&with(None)), Duration::from_secs(1));
        assert_eq!(timeout_of(&with(Some(0))), Duration::from_secs(1));
        assert_eq!(timeout_of(&with(Some(-3))), Duration::from_secs(1));
        assert_eq!(timeout_of(&with(Some(7))), Duration::from_secs(7));
    }

    #[test]
    fn named_ports_resolve_from_the_container_ports() {
        let ports: Vec<ContainerPort> = serde_json::from_value(serde_json::json!([
            {"name": "http", "containerPort": 8080, "protocol": "TCP"}
        ]))
        .unwrap();
        let annotations = std::collections::HashMap::from([(
            CONTAINER_PORTS_ANNOTATION.to_owned(),
            serde_json::to_string(&ports).unwrap(),
        )]);
        let ports = container_ports(&annotations);
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &ports).unwrap(),
            8080
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &ports).unwrap(), 81);
        assert_eq!(
            resolve_port(&IntOrString::String("grpc".into()), &ports)
                .unwrap_err()
                .to_string(),
            "strconv.Atoi: parsing \"grpc\": invalid syntax"
        );
        assert_eq!(
            resolve_port(&IntOrString::Int(0), &[])
                .unwrap_err()
                .to_string(),
            "invalid port number: 0"
        );
        assert!(container_ports(&Default::default()).is_empty());
    }

    #[test]
    fn go_texts() {
        assert_eq!(go_quote("http://a/b\"c"), "\"http://a/b\\\"c\"");
        assert_eq!(go_seconds(Duration::from_secs(1)), "1s");
        assert_eq!(go_seconds(Duration::from_secs(90)), "1m30s");
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
    }
}
