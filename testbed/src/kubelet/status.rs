//! Pod status from observed runtime state: phase, conditions, IPs and container statuses,
//! computed the way the kubelet's `generateAPIPodStatus` does for the parts kruised and
//! kruise-manager read (container IDs, restart counts, readiness, readiness gates).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::probe::exec_readiness_probe;
use super::restart::RestartPolicy;
use super::runtime::{ObservedContainer, PodRuntime, RunState};
use super::spec::NODE_IP;

/// Condition: all containers are ready.
pub const CONTAINERS_READY: &str = "ContainersReady";
/// Condition: the pod is ready (containers ready and every readiness gate True).
pub const READY: &str = "Ready";
/// Condition: init containers are done (there are none to run here).
pub const INITIALIZED: &str = "Initialized";
/// Condition: the scheduler placed the pod.
pub const POD_SCHEDULED: &str = "PodScheduled";
/// Condition: the sandbox is up.
pub const POD_READY_TO_START_CONTAINERS: &str = "PodReadyToStartContainers";

/// Why a container is waiting, from the last failed pull, create or start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// `ErrImagePull`, `ErrImageNeverPull`, `CreateContainerError`, `RunContainerError`.
    pub reason: String,
    /// The runtime's error.
    pub message: String,
}

/// Everything the status is computed from.
#[derive(Debug, Clone, Copy)]
pub struct StatusInputs<'a> {
    /// The pod as last seen in the API (its status keeps fields others own).
    pub pod: &'a Pod,
    /// The runtime's view of the pod.
    pub runtime: &'a PodRuntime,
    /// The runtime's name, the `<runtime>://` prefix of container IDs.
    pub runtime_name: &'a str,
    /// Readiness by container ID of containers with an exec readiness probe.
    pub probe_readiness: &'a HashMap<String, bool>,
    /// Why containers are waiting, by container name.
    pub waiting: &'a HashMap<String, Waiting>,
    /// The current time.
    pub now: Timestamp,
}

/// A Kubernetes `Time` (second precision, as the API stores it) from nanoseconds since the
/// epoch; `None` for 0.
pub fn time_from_nanos(nanos: i64) -> Option<Time> {
    if nanos <= 0 {
        return None;
    }
    Timestamp::from_second(nanos / 1_000_000_000).ok().map(Time)
}

/// `now` with second precision, so a status computed twice compares equal to itself after
/// a round trip through the API.
fn time_at(now: Timestamp) -> Time {
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// The status the kubelet would write for the pod.
pub fn pod_status(inputs: StatusInputs<'_>) -> PodStatus {
    let StatusInputs { pod, runtime, .. } = inputs;
    let now = time_at(inputs.now);
    let spec_containers: &[Container] = pod
        .spec
        .as_ref()
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default();
    let policy = RestartPolicy::parse(
        pod.spec
            .as_ref()
            .and_then(|spec| spec.restart_policy.as_deref()),
    );
    let mut status = pod.status.clone().unwrap_or_default();

    let container_statuses: Vec<ContainerStatus> = spec_containers
        .iter()
        .map(|container| container_status(inputs, container))
        .collect();

    let previous_phase = status.phase.as_deref();
    let phase = match previous_phase {
        // The API server refuses to move a pod out of a terminal phase.
        Some(terminal @ ("Succeeded" | "Failed")) => terminal.to_string(),
        _ => phase(policy, &container_statuses).to_string(),
    };
    let terminal = phase == "Succeeded" || phase == "Failed";
    let sandbox_ready = runtime.ready_sandbox().is_some();

    let mut conditions = status.conditions.take().unwrap_or_default();
    let unready: Vec<&str> = container_statuses
        .iter()
        .filter(|container| !container.ready)
        .map(|container| container.name.as_str())
        .collect();
    let containers_ready = unready.is_empty() && !terminal;
    let not_ready_reason = || {
        if terminal {
            ("PodCompleted".to_string(), String::new())
        } else {
            (
                "ContainersNotReady".to_string(),
                format!("containers with unready status: [{}]", unready.join(" ")),
            )
        }
    };
    let gate_problems = readiness_gate_problems(pod, &conditions);
    let ready = containers_ready && gate_problems.is_empty();
    let ready_reason = if !containers_ready {
        Some(not_ready_reason())
    } else if !gate_problems.is_empty() {
        Some((
            "ReadinessGatesNotReady".to_string(),
            gate_problems.join(", "),
        ))
    } else {
        None
    };
    set_condition(
        &mut conditions,
        POD_READY_TO_START_CONTAINERS,
        sandbox_ready,
        None,
        &now,
    );
    set_condition(&mut conditions, INITIALIZED, true, None, &now);
    set_condition(&mut conditions, READY, ready, ready_reason, &now);
    set_condition(
        &mut conditions,
        CONTAINERS_READY,
        containers_ready,
        (!containers_ready).then(not_ready_reason),
        &now,
    );
    if !conditions.iter().any(|c| c.type_ == POD_SCHEDULED) {
        set_condition(&mut conditions, POD_SCHEDULED, true, None, &now);
    }

    status.phase = Some(phase);
    status.conditions = Some(conditions);
    status.host_ip = Some(NODE_IP.to_string());
    status.host_ips = Some(vec![HostIP {
        ip: NODE_IP.to_string(),
    }]);
    if sandbox_ready || status.pod_ip.is_some() {
        // A host-network pod has the node's address.
        let pod_ip = runtime
            .ready_sandbox()
            .and_then(|sandbox| sandbox.ip.clone())
            .or_else(|| status.pod_ip.clone().filter(|_| !sandbox_ready))
            .unwrap_or_else(|| NODE_IP.to_string());
        status.pod_ips = Some(vec![PodIP { ip: pod_ip.clone() }]);
        status.pod_ip = Some(pod_ip);
    }
    if status.start_time.is_none() {
        status.start_time = Some(now.clone());
    }
    status.container_statuses = Some(container_statuses);
    status
}

/// Messages for each readiness gate whose condition is missing or not True, worded as
/// the kubelet words them.
fn readiness_gate_problems(pod: &Pod, conditions: &[PodCondition]) -> Vec<String> {
    let gates = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.readiness_gates.as_ref());
    gates
        .into_iter()
        .flatten()
        .filter_map(|gate| {
            let gate = &gate.condition_type;
            match conditions.iter().find(|c| &c.type_ == gate) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate \"{gate}\" does not exist."
                )),
                Some(condition) if condition.status != "True" => Some(format!(
                    "the status of pod readiness gate \"{gate}\" is not \"True\", but {}",
                    condition.status
                )),
                Some(_) => None,
            }
        })
        .collect()
}

/// Sets condition `type_` in place (appending it when absent), keeping its
/// `lastTransitionTime` unless the status flips. Conditions of other types are untouched.
fn set_condition(
    conditions: &mut Vec<PodCondition>,
    type_: &str,
    value: bool,
    reason: Option<(String, String)>,
    now: &Time,
) {
    let status = if value { "True" } else { "False" }.to_string();
    let (reason, message) = match reason {
        Some((reason, message)) => (Some(reason), (!message.is_empty()).then_some(message)),
        None => (None, None),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(condition) => {
            if condition.status != status {
                condition.last_transition_time = Some(now.clone());
                condition.status = status;
            }
            condition.reason = reason;
            condition.message = message;
        }
        None => conditions.push(PodCondition {
            type_: type_.to_string(),
            status,
            reason,
            message,
            last_transition_time: Some(now.clone()),
            ..Default::default()
        }),
    }
}

/// The status of one spec container from its newest two attempts.
fn container_status(inputs: StatusInputs<'_>, container: &Container) -> ContainerStatus {
    let attempts = inputs.runtime.attempts(&container.name);
    let spec_image = container.image.clone().unwrap_or_default();
    let waiting = inputs.waiting.get(&container.name);
    let Some(latest) = attempts.first().copied() else {
        let (reason, message) = match waiting {
            Some(waiting) => (waiting.reason.clone(), Some(waiting.message.clone())),
            None => ("ContainerCreating".to_string(), None),
        };
        return ContainerStatus {
            name: container.name.clone(),
            image: spec_image,
            image_id: String::new(),
            ready: false,
            restart_count: 0,
            started: Some(false),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason),
                    message,
                }),
                ..Default::default()
            }),
            last_state: Some(ContainerState::default()),
            ..Default::default()
        };
    };
    let container_id = format!("{}://{}", inputs.runtime_name, latest.id);
    let running = latest.state == RunState::Running;
    let ready = running
        && (exec_readiness_probe(container).is_none()
            || inputs.probe_readiness.get(&latest.id) == Some(&true));
    let (state, last_state) = match (latest.state, waiting) {
        // A restart that failed: the kubelet shows the error and the exit before it.
        (RunState::Exited, Some(waiting)) => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(waiting.reason.clone()),
                    message: Some(waiting.message.clone()),
                }),
                ..Default::default()
            },
            terminated_state(inputs.runtime_name, latest),
        ),
        _ => (
            current_state(inputs.runtime_name, latest),
            attempts
                .get(1)
                .filter(|previous| previous.state == RunState::Exited)
                .map(|previous| terminated_state(inputs.runtime_name, previous))
                .unwrap_or_default(),
        ),
    };
    ContainerStatus {
        name: container.name.clone(),
        container_id: Some(container_id),
        image: if latest.image.is_empty() {
            spec_image
        } else {
            latest.image.clone()
        },
        image_id: latest.image_ref.clone(),
        ready,
        restart_count: latest.attempt as i32,
        started: Some(running),
        state: Some(state),
        last_state: Some(last_state),
        ..Default::default()
    }
}

fn current_state(runtime_name: &str, container: &ObservedContainer) -> ContainerState {
    match container.state {
        RunState::Running => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time_from_nanos(container.started_at),
            }),
            ..Default::default()
        },
        RunState::Exited => terminated_state(runtime_name, container),
        RunState::Created => waiting_state("ContainerCreating"),
        RunState::Unknown => waiting_state("ContainerStatusUnknown"),
    }
}

fn waiting_state(reason: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: None,
        }),
        ..Default::default()
    }
}

fn terminated_state(runtime_name: &str, container: &ObservedContainer) -> ContainerState {
    let reason = if !container.reason.is_empty() {
        container.reason.clone()
    } else if container.exit_code == 0 {
        "Completed".to_string()
    } else {
        "Error".to_string()
    };
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: container.exit_code,
            reason: Some(reason),
            message: (!container.message.is_empty()).then(|| container.message.clone()),
            started_at: time_from_nanos(container.started_at),
            finished_at: time_from_nanos(container.finished_at),
            container_id: Some(format!("{runtime_name}://{}", container.id)),
            signal: None,
        }),
        ..Default::default()
    }
}

/// The kubelet's `getPhase` for a pod without init containers.
pub fn phase(policy: RestartPolicy, statuses: &[ContainerStatus]) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for status in statuses {
        let state = status.state.clone().unwrap_or_default();
        let last_terminated = status
            .last_state
            .as_ref()
            .is_some_and(|last| last.terminated.is_some());
        if state.running.is_some() {
            running += 1;
        } else if let Some(terminated) = &state.terminated {
            stopped += 1;
            if terminated.exit_code == 0 {
                succeeded += 1;
            }
        } else if last_terminated {
            // Waiting to restart after an exit.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if statuses.is_empty() || waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if policy == RestartPolicy::Always {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == RestartPolicy::Never {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::runtime::ObservedSandbox;
    use crate::kubelet::runtime::tests::container as observed;
    use k8s_openapi::api::core::v1::{ExecAction, PodReadinessGate, PodSpec, Probe};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(names: &[&str], policy: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: names
                    .iter()
                    .map(|name| Container {
                        name: name.to_string(),
                        image: Some("busybox:1".into()),
                        ..Default::default()
                    })
                    .collect(),
                restart_policy: Some(policy.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sandbox() -> ObservedSandbox {
        ObservedSandbox {
            id: "sandbox".into(),
            attempt: 0,
            ready: true,
            created_at: 1,
            ip: None,
        }
    }

    fn running(name: &str, attempt: u32) -> ObservedContainer {
        let mut container = observed(name, attempt, RunState::Running);
        container.started_at = 1_700_000_000_123_456_789;
        container
    }

    fn exited(name: &str, attempt: u32, exit_code: i32) -> ObservedContainer {
        let mut container = observed(name, attempt, RunState::Exited);
        container.exit_code = exit_code;
        container.started_at = 1_700_000_000_000_000_000;
        container.finished_at = 1_700_000_005_000_000_000;
        container
    }

    fn compute(pod: &Pod, runtime: &PodRuntime) -> PodStatus {
        compute_with(pod, runtime, &HashMap::new(), &HashMap::new())
    }

    fn compute_with(
        pod: &Pod,
        runtime: &PodRuntime,
        probe_readiness: &HashMap<String, bool>,
        waiting: &HashMap<String, Waiting>,
    ) -> PodStatus {
        pod_status(StatusInputs {
            pod,
            runtime,
            runtime_name: "containerd",
            probe_readiness,
            waiting,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
        })
    }

    fn condition<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
    }

    #[test]
    fn nothing_created_yet_is_pending_with_container_creating() {
        let pod = pod(&["app"], "Always");
        let status = compute(&pod, &PodRuntime::default());
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.pod_ip, None);
        assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
        let app = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(app.container_id, None);
        assert_eq!(
            app.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
        assert_eq!(condition(&status, READY).status, "False");
        assert_eq!(condition(&status, POD_SCHEDULED).status, "True");
        assert_eq!(
            condition(&status, POD_READY_TO_START_CONTAINERS).status,
            "False"
        );
    }

    #[test]
    fn the_pod_ip_is_the_sandbox_ip_when_the_runtime_reports_one() {
        let pod = pod(&["a"], "Always");
        let runtime = PodRuntime {
            sandboxes: vec![ObservedSandbox {
                ip: Some("127.0.0.2".into()),
                ..sandbox()
            }],
            containers: vec![running("a", 0)],
        };
        let status = compute(&pod, &runtime);
        assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.2"));
        assert_eq!(status.pod_ips.as_ref().unwrap()[0].ip, "127.0.0.2");
        assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn all_running_is_running_and_ready_with_runtime_ids_in_spec_order() {
        let pod = pod(&["b", "a"], "Always");
        let runtime = PodRuntime {
            sandboxes: vec![sandbox()],
            containers: vec![running("a", 0), running("b", 0)],
        };
        let status = compute(&pod, &runtime);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(status.pod_ips.as_ref().unwrap()[0].ip, "127.0.0.1");
        let statuses = status.container_statuses.as_ref().unwrap();
        let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["b", "a"]);
        let b = &statuses[0];
        assert_eq!(b.container_id.as_deref(), Some("containerd://b-0"));
        assert_eq!(b.image_id, "sha256:ab");
        assert!(b.ready);
        assert_eq!(b.started, Some(true));
        let started_at = &b
            .state
            .as_ref()
            .unwrap()
            .running
            .as_ref()
            .unwrap()
            .started_at;
        assert_eq!(
            started_at.as_ref().unwrap().0,
            Timestamp::from_second(1_700_000_000).unwrap()
        );
        assert_eq!(b.last_state, Some(ContainerState::default()));
        assert_eq!(condition(&status, READY).status, "True");
        assert_eq!(condition(&status, CONTAINERS_READY).status, "True");
    }

    #[test]
    fn a_restarted_container_reports_attempt_and_the_previous_exit() {
        let pod = pod(&["app"], "Always");
        let runtime = PodRuntime {
            sandboxes: vec![sandbox()],
            containers: vec![exited("app", 0, 137), running("app", 1)],
        };
        let status = compute(&pod, &runtime);
        let app = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(app.restart_count, 1);
        assert_eq!(app.container_id.as_deref(), Some("containerd://app-1"));
        let last = app
            .last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!(last.exit_code, 137);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert_eq!(last.container_id.as_deref(), Some("containerd://app-0"));
        assert!(last.finished_at.is_some());
    }

    #[test]
    fn restart_policy_never_with_exited_containers_is_terminal() {
        let runtime = |code| PodRuntime {
            sandboxes: vec![sandbox()],
            containers: vec![exited("app", 0, code)],
        };
        let failed = compute(&pod(&["app"], "Never"), &runtime(3));
        assert_eq!(failed.phase.as_deref(), Some("Failed"));
        let app = &failed.container_statuses.as_ref().unwrap()[0];
        let terminated = app.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(terminated.exit_code, 3);
        assert_eq!(
            condition(&failed, READY).reason.as_deref(),
            Some("PodCompleted")
        );

        let succeeded = compute(&pod(&["app"], "OnFailure"), &runtime(0));
        assert_eq!(succeeded.phase.as_deref(), Some("Succeeded"));
        let restarting = compute(&pod(&["app"], "OnFailure"), &runtime(1));
        assert_eq!(restarting.phase.as_deref(), Some("Running"));
        let always = compute(&pod(&["app"], "Always"), &runtime(0));
        assert_eq!(always.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn a_terminal_phase_is_never_left() {
        let mut pod = pod(&["app"], "Never");
        pod.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let runtime = PodRuntime {
            sandboxes: vec![sandbox()],
            containers: vec![running("app", 0)],
        };
        assert_eq!(compute(&pod, &runtime).phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn readiness_gates_hold_ready_false_until_their_condition_is_true() {
        let mut pod = pod(&["app"], "Always");
        pod.spec.as_mut().unwrap().readiness_gates = Some(vec![PodReadinessGate {
            condition_type: "KruisePodReady".into(),
        }]);
        let runtime = PodRuntime {
            sandboxes: vec![sandbox()],
            containers: vec![running("app", 0)],
        };
        let status = compute(&pod, &runtime);
        assert_eq!(condition(&status, CONTAINERS_READY).status, "True");
        let ready = condition(&status, READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"KruisePodReady\" does not exist."
            )
        );

        let gate = |value: &str| PodCondition {
            type_: "KruisePodReady".into(),
            status: value.into(),
            ..Default::default()
        };
        let mut status = status.clone();
        status.conditions.as_mut().unwrap().push(gate("False"));
        pod.status = Some(status);
        let status = compute(&pod, &runtime);
        assert_eq!(condition(&status, READY).status, "False");
        assert_eq!(condition(&status, "KruisePodReady").status, "False");

        let mut status = status.clone();
        status
            .conditions
            .as_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c.type_ == "KruisePodReady")
            .unwrap()
            .status = "True".into();
        pod.status = Some(status);
        let status = compute(&pod, &runtime);
        assert_eq!(condition(&status, READY).status, "True");
        assert_eq!(
            condition(&status, "KruisePodReady").status,
            "True",
            "conditions of other writers are kept"
        );
    }

    #[test]
    fn recomputing_an_unchanged_pod_gives_the_same_status() {
        let mut pod = pod(&["app"], "Always");
        let runtime = PodRuntime {
            sandboxes: vec![sandbox()],
            containers: vec![exited("app", 0, 1), running("app", 1)],
        };
        let first = compute(&pod, &runtime);
        // Round trip through JSON as the API would store it.
        let stored: PodStatus =
            serde_json::from_value(serde_json::to_value(&first).unwrap()).unwrap();
        pod.status = Some(stored.clone());
        let later = pod_status(StatusInputs {
            pod: &pod,
            runtime: &runtime,
            runtime_name: "containerd",
            probe_readiness: &HashMap::new(),
            waiting: &HashMap::new(),
            now: Timestamp::from_second(1_800_000_100).unwrap(),
        });
        assert_eq!(later, stored, "no write when nothing changed");
    }

    #[test]
    fn exec_probe_readiness_decides_ready() {
        let mut pod = pod(&["app"], "Always");
        pod.spec.as_mut().unwrap().containers[0].readiness_probe = Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Default::default()
        });
        let runtime = PodRuntime {
            sandboxes: vec![sandbox()],
            containers: vec![running("app", 0)],
        };
        let unprobed = compute(&pod, &runtime);
        assert!(!unprobed.container_statuses.as_ref().unwrap()[0].ready);
        assert_eq!(unprobed.phase.as_deref(), Some("Running"));
        let probed = compute_with(
            &pod,
            &runtime,
            &HashMap::from([("app-0".to_string(), true)]),
            &HashMap::new(),
        );
        assert!(probed.container_statuses.as_ref().unwrap()[0].ready);
        assert_eq!(condition(&probed, READY).status, "True");
    }

    #[test]
    fn pull_errors_show_as_waiting_reasons() {
        let pod = pod(&["app"], "Always");
        let waiting = HashMap::from([(
            "app".to_string(),
            Waiting {
                reason: "ErrImagePull".into(),
                message: "not found".into(),
            },
        )]);
        let status = compute_with(
            &pod,
            &PodRuntime {
                sandboxes: vec![sandbox()],
                containers: vec![],
            },
            &HashMap::new(),
            &waiting,
        );
        let app = &status.container_statuses.as_ref().unwrap()[0];
        let state = app.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(state.reason.as_deref(), Some("ErrImagePull"));
        assert_eq!(state.message.as_deref(), Some("not found"));
        assert_eq!(status.phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn condition_transition_times_move_only_when_the_status_flips() {
        let then = Time(Timestamp::from_second(1).unwrap());
        let now = Time(Timestamp::from_second(2).unwrap());
        let mut conditions = vec![];
        set_condition(&mut conditions, READY, false, None, &then);
        set_condition(&mut conditions, READY, false, None, &now);
        assert_eq!(conditions[0].last_transition_time, Some(then.clone()));
        set_condition(&mut conditions, READY, true, None, &now);
        assert_eq!(conditions[0].last_transition_time, Some(now));
        assert_eq!(conditions.len(), 1);
    }
}
