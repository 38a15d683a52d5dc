//! Stopping one container for a CRR: kruise-daemon's copy of the kubelet's `KillContainer`
//! (§2.5), with the fixes §11.2 allows.
//!
//! # Grace period
//!
//! Kruise builds a synthetic pod from the CRR (§4.4 step 5.2) whose
//! `terminationGracePeriodSeconds` is `strategy.terminationGracePeriodSeconds`, else 30, and
//! no `deletionGracePeriodSeconds`; the kubelet code (§2.5 step 2) then takes the deletion
//! grace, else the termination grace, else 2. So kruise's grace is the strategy's value or 30.
//! kruised resolves, in this order ([`grace_period`]):
//!
//! 1. `strategy.terminationGracePeriodSeconds`: what the user asked for. The webhook defaults it
//!    to the pod's own, so this is almost always the answer, and it is kruise's.
//! 2. the pod's `deletionGracePeriodSeconds`, then 3. its `terminationGracePeriodSeconds`, as
//!    the kubelet recorded them on the container (`io.kubernetes.pod.deletionGracePeriod`,
//!    `io.kubernetes.pod.terminationGracePeriod`). This is the kubelet's own order when it has
//!    no pod object (`restoreSpecsFromContainerLabels`), and it replaces kruise's blind 30 with
//!    the pod's real value for a CRR written without a strategy.
//! 4. 30, kruise's fallback (§4.4 step 5.2).
//!
//! The preStop hook runs only when that grace is above 0, and for at most that many seconds;
//! its elapsed whole seconds (truncated, as Go's `int64(d.Seconds())`) are subtracted; the stop
//! gets at least [`MINIMUM_GRACE_PERIOD_SECONDS`] (§2.5 step 4).
//!
//! # Hooks
//!
//! The CRR's `preStop` (copied from the pod by the webhook) is run like the kubelet 1.32 runs a
//! `LifecycleHandler`, plus what §11.2 allows: a host-less `httpGet` gets the pod IP from CRI
//! `PodSandboxStatus` (kruise has none and always fails), and `tcpSocket` connects (kruise's
//! handler runner rejects it, §10 item 25). `sleep` cannot be written in a CRR's `preStop`:
//! the webhook leaves an empty `preStop: {}` for it, and for exactly that case the handler is
//! read from the kubelet's `io.kubernetes.container.preStopHandler` annotation on the
//! container. A hook that fails yields a [`HookFailure`] (event `FailedPreStopHook`), and the
//! container is stopped regardless.

use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, LifecycleHandler, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

use super::go_text;
use super::runtime::RuntimeContainer;
use super::version::{CrrView, Strategy};
use crate::api::shared::containerrecreaterequest::ContainerRecreateRequestContainer;
use crate::cri::{CriClient, CriError};

/// The shortest stop grace period: the kubelet's `minimumGracePeriodInSeconds` (§2.5 step 4).
pub const MINIMUM_GRACE_PERIOD_SECONDS: i64 = 2;

/// Kruise's grace period when the CRR has none (§4.4 step 5.2).
pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 30;

/// The `User-Agent` of HTTP hooks that do not set one: the kubelet's `kube-lifecycle/<major>.
/// <minor>`, for the Kubernetes 1.32 libraries kruise-daemon is built with.
pub const HTTP_HOOK_USER_AGENT: &str = "kube-lifecycle/1.32";

/// The `Killing` event reason (kubelet `events.KillingContainer`).
pub const KILLING_REASON: &str = "Killing";

/// The `FailedPreStopHook` event reason (kubelet `events.FailedPreStopHook`).
pub const FAILED_PRE_STOP_HOOK_REASON: &str = "FailedPreStopHook";

/// Where the grace period came from; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraceSource {
    /// `strategy.terminationGracePeriodSeconds`.
    Strategy,
    /// The pod's `deletionGracePeriodSeconds`, from the kubelet's container annotation.
    PodDeletionGracePeriod,
    /// The pod's `terminationGracePeriodSeconds`, from the kubelet's container annotation.
    PodTerminationGracePeriod,
    /// [`DEFAULT_GRACE_PERIOD_SECONDS`].
    Default,
}

/// The grace period for the hook and the stop, before the hook's time is subtracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracePeriod {
    /// Seconds.
    pub seconds: i64,
    /// Where they came from.
    pub source: GraceSource,
}

/// The grace period, in the order of the [module docs](self).
pub fn grace_period(strategy: &Strategy, container: &RuntimeContainer) -> GracePeriod {
    let candidates = [
        (
            strategy.termination_grace_period_seconds,
            GraceSource::Strategy,
        ),
        (
            container.pod_deletion_grace_period_seconds,
            GraceSource::PodDeletionGracePeriod,
        ),
        (
            container.pod_termination_grace_period_seconds,
            GraceSource::PodTerminationGracePeriod,
        ),
    ];
    candidates
        .into_iter()
        .find_map(|(seconds, source)| seconds.map(|seconds| GracePeriod { seconds, source }))
        .unwrap_or(GracePeriod {
            seconds: DEFAULT_GRACE_PERIOD_SECONDS,
            source: GraceSource::Default,
        })
}

/// The grace period `StopContainer` gets: what is left after the hook, at least
/// [`MINIMUM_GRACE_PERIOD_SECONDS`].
pub fn stop_grace_seconds(grace: i64, hook_elapsed: Duration) -> i64 {
    let elapsed = i64::try_from(hook_elapsed.as_secs()).unwrap_or(i64::MAX);
    grace
        .saturating_sub(elapsed)
        .max(MINIMUM_GRACE_PERIOD_SECONDS)
}

/// A preStop hook to run.
#[derive(Debug, Clone, PartialEq)]
pub enum PreStopHook {
    /// Run a command in the container (CRI `ExecSync`).
    Exec {
        /// The command.
        command: Vec<String>,
    },
    /// HTTP GET.
    HttpGet(HTTPGetAction),
    /// Open a TCP connection.
    TcpSocket(TCPSocketAction),
    /// Sleep (only from the kubelet's annotation).
    Sleep {
        /// Seconds.
        seconds: i64,
    },
    /// A handler with nothing set: the kubelet's "invalid handler".
    Invalid,
}

/// The hook for a CRR container: its `preStop`, first of `exec`, `httpGet`, `tcpSocket`; an
/// empty `preStop: {}` is the webhook's trace of a `sleep` hook, read from the kubelet's
/// annotation; no `preStop`, no hook.
pub fn pre_stop_hook(
    spec: &ContainerRecreateRequestContainer,
    runtime: &RuntimeContainer,
) -> Option<PreStopHook> {
    let handler = spec.pre_stop.as_ref()?;
    if let Some(exec) = &handler.exec {
        return Some(PreStopHook::Exec {
            command: exec.command.clone().unwrap_or_default(),
        });
    }
    if let Some(http_get) = &handler.http_get {
        return Some(PreStopHook::HttpGet(http_get.clone()));
    }
    if let Some(tcp_socket) = &handler.tcp_socket {
        return Some(PreStopHook::TcpSocket(tcp_socket.clone()));
    }
    let sleep = runtime
        .pre_stop_handler
        .as_deref()
        .and_then(|json| serde_json::from_str::<LifecycleHandler>(json).ok())
        .and_then(|handler| handler.sleep);
    Some(match sleep {
        Some(sleep) => PreStopHook::Sleep {
            seconds: sleep.seconds,
        },
        None => PreStopHook::Invalid,
    })
}

/// A preStop hook that failed: the message of the Warning event `FailedPreStopHook`, worded
/// as the kubelet's handler runner words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    /// The event message.
    pub message: String,
}

/// What became of the preStop hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// The container has no preStop hook.
    None,
    /// The grace period is 0, so the kubelet code skips the hook.
    Skipped,
    /// The hook finished without error.
    Succeeded,
    /// The hook was still running when the grace period ran out, and was cancelled. The
    /// kubelet only logs this.
    TimedOut,
    /// The hook failed.
    Failed(HookFailure),
}

/// The type of a Kubernetes event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

/// An event kruise records on the pod's container (`fieldPath: spec.containers{<name>}`)
/// while stopping it (§2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// Normal or Warning.
    pub event_type: EventType,
    /// `Killing` or `FailedPreStopHook`.
    pub reason: &'static str,
    /// The message, the runtime's container ID replaced by the container name (kubelet).
    pub message: String,
    /// The container's name.
    pub container_name: String,
}

impl ContainerEvent {
    /// The `involvedObject.fieldPath`: `spec.containers{<name>}`.
    pub fn field_path(&self) -> String {
        format!("spec.containers{{{}}}", self.container_name)
    }
}

/// Why the container was not stopped. The text follows `kill container error: ` in the
/// container's state (§4.4 step 5.6).
#[derive(Debug, Clone, thiserror::Error)]
pub enum KillError {
    /// The CRR has no container of that name (the kubelet's `GetContainerSpec` failed).
    #[error(
        "failed to get containerSpec {}(id={}) in pod {} when killing container for reason {}",
        go_text::quote(.container), go_text::quote(.container_id), go_text::quote(.pod), go_text::quote(.reason)
    )]
    NotInRequest {
        /// The container name asked for.
        container: String,
        /// The runtime container ID.
        container_id: String,
        /// The pod, `<name>_<namespace>(<uid>)`.
        pod: String,
        /// The kill message.
        reason: String,
    },
    /// `StopContainer` failed.
    #[error("{}", go_text::cri_error_text(.0))]
    Stop(#[source] CriError),
}

/// Everything a kill did, for the caller's events, logs and metrics.
#[derive(Debug)]
pub struct KillReport {
    /// The events to record, in order: `Killing` (unless the container was not in the
    /// request), then `FailedPreStopHook` if the hook failed.
    pub events: Vec<ContainerEvent>,
    /// The grace period before the hook.
    pub grace: GracePeriod,
    /// The hook's outcome.
    pub hook: HookOutcome,
    /// How long the hook ran.
    pub hook_elapsed: Duration,
    /// The grace period sent with `StopContainer`, in seconds (0 if not sent).
    pub stop_grace_seconds: i64,
    /// Wall time of the whole kill.
    pub elapsed: Duration,
    /// Whether the container was stopped.
    pub result: Result<(), KillError>,
}

/// `<name>_<namespace>(<uid>)`, the kubelet's `format.Pod` of kruise's synthetic pod.
pub fn pod_description(crr: &CrrView) -> String {
    format!("{}_{}({})", crr.pod_name, crr.namespace, crr.pod_uid())
}

/// The Normal `Killing` event message kruise records: `Stopping container <c> by
/// ContainerRecreateRequest <crr>`.
pub fn killing_message(container_name: &str, crr_name: &str) -> String {
    format!("Stopping container {container_name} by ContainerRecreateRequest {crr_name}")
}

/// Stops `container` for the CRR's container `name` (§2.5): `Killing` event, preStop hook
/// within the grace period, `StopContainer` with what is left (at least 2 s).
pub async fn kill_container(
    cri: &CriClient,
    crr: &CrrView,
    name: &str,
    container: &RuntimeContainer,
) -> KillReport {
    let started = Instant::now();
    let grace = grace_period(&crr.strategy, container);
    let reason = killing_message(name, &crr.name);
    let mut report = KillReport {
        events: Vec::new(),
        grace,
        hook: HookOutcome::None,
        hook_elapsed: Duration::ZERO,
        stop_grace_seconds: 0,
        elapsed: Duration::ZERO,
        result: Ok(()),
    };
    let Some(spec) = crr.containers.iter().find(|spec| spec.name == name) else {
        report.result = Err(KillError::NotInRequest {
            container: name.to_owned(),
            container_id: container.container_id(),
            pod: pod_description(crr),
            reason,
        });
        report.elapsed = started.elapsed();
        return report;
    };
    // The kubelet keeps container IDs out of event messages so that events aggregate.
    let event = |event_type, reason, message: &str| ContainerEvent {
        event_type,
        reason,
        message: if container.id.id.is_empty() {
            message.to_owned()
        } else {
            message.replace(&container.id.id, name)
        },
        container_name: name.to_owned(),
    };
    report
        .events
        .push(event(EventType::Normal, KILLING_REASON, &reason));

    if let Some(hook) = pre_stop_hook(spec, container) {
        if grace.seconds > 0 {
            let hook_started = Instant::now();
            let budget = Duration::from_secs(grace.seconds.unsigned_abs());
            let run = run_hook(cri, crr, spec, container, &hook);
            report.hook = match tokio::time::timeout(budget, run).await {
                Ok(Ok(())) => HookOutcome::Succeeded,
                Ok(Err(failure)) => {
                    report.events.push(event(
                        EventType::Warning,
                        FAILED_PRE_STOP_HOOK_REASON,
                        &failure.message,
                    ));
                    HookOutcome::Failed(failure)
                }
                Err(_) => {
                    tracing::info!(
                        container = name,
                        grace_seconds = grace.seconds,
                        "preStop hook did not complete in time"
                    );
                    HookOutcome::TimedOut
                }
            };
            report.hook_elapsed = hook_started.elapsed();
        } else {
            report.hook = HookOutcome::Skipped;
        }
    }

    report.stop_grace_seconds = stop_grace_seconds(grace.seconds, report.hook_elapsed);
    let stop_grace = Duration::from_secs(report.stop_grace_seconds.unsigned_abs());
    report.result = cri
        .stop_container(&container.id.id, stop_grace)
        .await
        .map_err(KillError::Stop);
    report.elapsed = started.elapsed();
    report
}

/// Runs one hook to its end (the caller bounds it by the grace period).
async fn run_hook(
    cri: &CriClient,
    crr: &CrrView,
    spec: &ContainerRecreateRequestContainer,
    container: &RuntimeContainer,
    hook: &PreStopHook,
) -> Result<(), HookFailure> {
    let for_container = || {
        format!(
            "for Container {} in Pod {}",
            go_text::quote(&spec.name),
            go_text::quote(&pod_description(crr))
        )
    };
    match hook {
        PreStopHook::Exec { command } => {
            run_exec(cri, container, command)
                .await
                .map_err(|(error, output)| HookFailure {
                    message: format!(
                        "Exec lifecycle hook ({}) {} failed - error: {error}, message: {}",
                        go_slice(command),
                        for_container(),
                        go_text::quote(&output)
                    ),
                })
        }
        PreStopHook::HttpGet(action) => run_http_get(cri, container, spec, action)
            .await
            .map_err(|error| HookFailure {
                message: format!(
                    "HTTP lifecycle hook ({}) {} failed - error: {error}",
                    action.path.as_deref().unwrap_or_default(),
                    for_container()
                ),
            }),
        PreStopHook::TcpSocket(action) => run_tcp_socket(cri, container, spec, action)
            .await
            .map_err(|error| HookFailure {
                message: format!(
                    "TCP lifecycle hook ({}) {} failed - error: {error}",
                    port_text(&action.port),
                    for_container()
                ),
            }),
        PreStopHook::Sleep { seconds } => {
            tokio::time::sleep(Duration::from_secs(u64::try_from(*seconds).unwrap_or(0))).await;
            Ok(())
        }
        PreStopHook::Invalid => Err(HookFailure {
            message: "Cannot run handler: invalid handler: &LifecycleHandler{Exec:nil,HTTPGet:nil,TCPSocket:nil,Sleep:nil,}"
                .to_owned(),
        }),
    }
}

/// CRI `ExecSync` with no timeout (the kubelet passes 0); on failure, the error and the
/// combined output.
async fn run_exec(
    cri: &CriClient,
    container: &RuntimeContainer,
    command: &[String],
) -> Result<(), (String, String)> {
    match cri
        .exec_sync(&container.id.id, command.to_vec(), Duration::ZERO)
        .await
    {
        Ok(response) if response.exit_code == 0 => Ok(()),
        Ok(response) => {
            let stderr = String::from_utf8_lossy(&response.stderr).into_owned();
            let mut output = String::from_utf8_lossy(&response.stdout).into_owned();
            output.push_str(&stderr);
            // cri-client's `CodeExitError` text.
            Err((
                format!(
                    "command '{}' exited with {}: {stderr}",
                    command.join(" "),
                    response.exit_code
                ),
                output,
            ))
        }
        Err(error) => Err((go_text::cri_error_text(&error), String::new())),
    }
}

/// The host a hook connects to: its own, else the pod IP from the container's sandbox.
async fn hook_host(
    cri: &CriClient,
    container: &RuntimeContainer,
    host: Option<&str>,
) -> Result<String, String> {
    if let Some(host) = host.filter(|host| !host.is_empty()) {
        return Ok(host.to_owned());
    }
    let status = cri
        .pod_sandbox_status(&container.sandbox_id)
        .await
        .map_err(|error| go_text::cri_error_text(&error))?;
    status
        .status
        .and_then(|status| status.network)
        .map(|network| network.ip)
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| {
            format!(
                "failed to find networking container: sandbox {} reports no IP",
                container.sandbox_id
            )
        })
}

/// The kubelet's `probe.ResolveContainerPort`: a number, or a port name of the container
/// (the CRR's `ports`), or a name that parses as a number; 1 to 65535.
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(number) => i64::from(*number),
        IntOrString::String(name) => match ports
            .iter()
            .find(|candidate| candidate.name.as_deref() == Some(name.as_str()))
        {
            Some(found) => i64::from(found.container_port),
            None => name.parse::<i64>().map_err(|_| {
                format!(
                    "strconv.Atoi: parsing {}: invalid syntax",
                    go_text::quote(name)
                )
            })?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|number| *number > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

fn port_text(port: &IntOrString) -> String {
    match port {
        IntOrString::Int(number) => number.to_string(),
        IntOrString::String(name) => name.clone(),
    }
}

/// Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Go's `%v` of a `[]string`: `[a b c]`.
fn go_slice(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// An HTTP GET with the kubelet's request (`NewRequestForHTTPGetAction`): scheme (lowercase,
/// default http), host or pod IP, resolved port, path, the hook's headers plus default
/// `User-Agent` and `Accept: */*`, `Host` from a `Host` header if given. Like the kubelet's
/// lifecycle handler (not its probe), any response counts as success, whatever its status.
async fn run_http_get(
    cri: &CriClient,
    container: &RuntimeContainer,
    spec: &ContainerRecreateRequestContainer,
    action: &HTTPGetAction,
) -> Result<(), String> {
    let scheme = action
        .scheme
        .as_deref()
        .unwrap_or("http")
        .to_ascii_lowercase();
    let host = hook_host(cri, container, action.host.as_deref()).await?;
    let port = resolve_port(&action.port, spec.ports.as_deref().unwrap_or_default())?;
    let mut path = action.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let authority = join_host_port(&host, port);
    let url = format!("{scheme}://{authority}{path}");
    let failed = |error: &dyn std::fmt::Display| format!("Get {}: {error}", go_text::quote(&url));
    match scheme.as_str() {
        "http" => {}
        // kruised carries no TLS client for hooks yet.
        "https" => return Err(failed(&"HTTPS preStop hooks are not supported by kruised")),
        other => {
            return Err(failed(&format!(
                "unsupported protocol scheme {}",
                go_text::quote(other)
            )));
        }
    }

    let mut request = http::Request::get(path.as_str());
    let mut host_header = authority.clone();
    let mut has_user_agent = false;
    let mut accept: Option<String> = None;
    for header in action.http_headers.iter().flatten() {
        if header.name.eq_ignore_ascii_case("host") {
            if !header.value.is_empty() {
                host_header.clone_from(&header.value);
            }
            continue;
        }
        if header.name.eq_ignore_ascii_case("user-agent") {
            has_user_agent = true;
            // Go sends no User-Agent at all for one set to empty.
            if header.value.is_empty() {
                continue;
            }
        }
        if header.name.eq_ignore_ascii_case("accept") {
            accept = Some(header.value.clone());
            continue;
        }
        request = request.header(header.name.as_str(), header.value.as_str());
    }
    if !has_user_agent {
        request = request.header(http::header::USER_AGENT, HTTP_HOOK_USER_AGENT);
    }
    match accept.as_deref() {
        None => request = request.header(http::header::ACCEPT, "*/*"),
        // An Accept header set to empty removes it.
        Some("") => {}
        Some(value) => request = request.header(http::header::ACCEPT, value),
    }
    let request = request
        .header(http::header::HOST, host_header)
        .body(Empty::<Bytes>::new())
        .map_err(|error| failed(&error))?;

    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|error| failed(&format!("dial tcp {authority}: {error}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| failed(&error))?;
    let exchange = async move {
        // The head is enough; the body is dropped with the connection.
        let response = sender.send_request(request).await.map(drop);
        // Dropping the sender lets the connection finish.
        drop(sender);
        response
    };
    let (response, _connection) = tokio::join!(exchange, connection);
    response.map_err(|error| failed(&error))
}

/// A TCP connection to the hook's host (or the pod IP) and resolved port, closed at once.
async fn run_tcp_socket(
    cri: &CriClient,
    container: &RuntimeContainer,
    spec: &ContainerRecreateRequestContainer,
    action: &TCPSocketAction,
) -> Result<(), String> {
    let host = hook_host(cri, container, action.host.as_deref()).await?;
    let port = resolve_port(&action.port, spec.ports.as_deref().unwrap_or_default())?;
    TcpStream::connect((host.as_str(), port))
        .await
        .map(drop)
        .map_err(|error| format!("dial tcp {}: {error}", join_host_port(&host, port)))
}

#[cfg(test)]
mod tests;
