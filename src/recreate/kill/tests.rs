//! `kill_container` against the fake containerd, and the pure parts of §2.5.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ExecAction, HTTPHeader};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::api::shared::containerrecreaterequest::ProbeHandler;
use crate::cri::fake::{Call, ExecScript, KubeletContainer, KubeletPod};
use crate::recreate::runtime::RuntimeContainerState;
use crate::recreate::testing::{CriWorld, runtime_container};

const IMAGE: &str = "registry.k8s.io/busybox:1.36";

fn exec(command: &[&str]) -> ProbeHandler {
    ProbeHandler {
        exec: Some(ExecAction {
            command: Some(command.iter().map(|part| (*part).to_owned()).collect()),
        }),
        ..ProbeHandler::default()
    }
}

async fn world() -> CriWorld {
    CriWorld::start(KubeletPod::new("ns", "pod").container(KubeletContainer::new("app", IMAGE)))
        .await
}

/// The CRR for `app` with `pre_stop` and a grace period of `grace` seconds.
fn crr(world: &CriWorld, pre_stop: Option<ProbeHandler>, grace: Option<i64>) -> CrrView {
    let mut crr = world.crr(&["app"]);
    crr.containers[0].pre_stop = pre_stop;
    crr.strategy.termination_grace_period_seconds = grace;
    crr
}

fn stop_timeouts(world: &CriWorld) -> Vec<(String, i64)> {
    world
        .handle
        .calls_of("StopContainer")
        .into_iter()
        .map(|call| match call {
            Call::StopContainer(request) => (request.container_id, request.timeout),
            other => panic!("not a stop: {other:?}"),
        })
        .collect()
}

fn exec_calls(world: &CriWorld) -> Vec<(Vec<String>, i64)> {
    world
        .handle
        .calls_of("ExecSync")
        .into_iter()
        .map(|call| match call {
            Call::ExecSync(request) => (request.cmd, request.timeout),
            other => panic!("not an exec: {other:?}"),
        })
        .collect()
}

fn app_id(world: &CriWorld) -> String {
    world.pod.container_id("app").unwrap().to_owned()
}

#[tokio::test]
async fn exec_hook_runs_then_the_stop_gets_the_remaining_grace() {
    let world = world().await;
    let id = app_id(&world);
    world.handle.script_exec(
        &id,
        ["sh", "-c", "drain"],
        ExecScript::exit(0).taking(Duration::from_millis(1200)),
    );
    let crr = crr(&world, Some(exec(&["sh", "-c", "drain"])), Some(5));
    let container = world.runtime_container("app").await;
    world.handle.clear_calls();

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    report.result.expect("stopped");
    assert_eq!(report.hook, HookOutcome::Succeeded);
    assert!(report.hook_elapsed >= Duration::from_millis(1200));
    assert_eq!(
        report.grace,
        GracePeriod {
            seconds: 5,
            source: GraceSource::Strategy
        }
    );
    // 5 s minus the hook's one whole second.
    assert_eq!(report.stop_grace_seconds, 4);
    // ExecSync without a timeout (the kubelet's 0), then StopContainer.
    assert_eq!(
        exec_calls(&world),
        [(vec!["sh".into(), "-c".into(), "drain".into()], 0)]
    );
    assert_eq!(stop_timeouts(&world), [(id.clone(), 4)]);
    let methods: Vec<_> = world.handle.calls().iter().map(Call::method).collect();
    let exec_at = methods
        .iter()
        .position(|m| m.as_str() == "ExecSync")
        .unwrap();
    let stop_at = methods
        .iter()
        .position(|m| m.as_str() == "StopContainer")
        .unwrap();
    assert!(exec_at < stop_at);
    assert_eq!(
        report.events,
        [ContainerEvent {
            event_type: EventType::Normal,
            reason: "Killing",
            message: "Stopping container app by ContainerRecreateRequest crr".into(),
            container_name: "app".into(),
        }]
    );
    assert_eq!(report.events[0].field_path(), "spec.containers{app}");
    let status = world.handle.container_status(&id).unwrap();
    assert_eq!(
        status.state,
        crate::proto::runtime::v1::ContainerState::ContainerExited as i32
    );
}

#[tokio::test]
async fn a_hook_longer_than_the_grace_is_cut_and_the_stop_still_gets_two_seconds() {
    let world = world().await;
    let id = app_id(&world);
    world.handle.script_exec(
        &id,
        ["hang"],
        ExecScript::exit(0).taking(Duration::from_secs(30)),
    );
    let crr = crr(&world, Some(exec(&["hang"])), Some(1));
    let container = world.runtime_container("app").await;
    let started = Instant::now();

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    report.result.expect("stopped");
    assert_eq!(report.hook, HookOutcome::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.stop_grace_seconds, MINIMUM_GRACE_PERIOD_SECONDS);
    assert_eq!(stop_timeouts(&world), [(id, 2)]);
    // A timeout is not a hook failure: the kubelet only logs it.
    assert_eq!(report.events.len(), 1);
}

#[tokio::test]
async fn a_failing_exec_hook_is_reported_and_the_container_is_still_stopped() {
    let world = world().await;
    let id = app_id(&world);
    world.handle.script_exec(
        &id,
        ["drain"],
        ExecScript::exit(3)
            .with_stdout("draining\n")
            .with_stderr("no upstream"),
    );
    let crr = crr(&world, Some(exec(&["drain"])), Some(10));
    let container = world.runtime_container("app").await;

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    report.result.expect("stopped anyway");
    let expected = format!(
        "Exec lifecycle hook ([drain]) for Container \"app\" in Pod \"pod_ns({})\" failed - error: command 'drain' exited with 3: no upstream, message: \"draining\\nno upstream\"",
        world.pod.uid
    );
    assert_eq!(
        report.hook,
        HookOutcome::Failed(HookFailure {
            message: expected.clone()
        })
    );
    assert_eq!(report.events.len(), 2);
    assert_eq!(report.events[1].event_type, EventType::Warning);
    assert_eq!(report.events[1].reason, "FailedPreStopHook");
    assert_eq!(report.events[1].message, expected);
    assert_eq!(stop_timeouts(&world), [(id, 10)]);
}

/// A one-request HTTP server that records the request head and answers `status`.
async fn http_server(status: u16) -> (u16, Arc<Mutex<Option<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(None));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buffer = [0_u8; 1024];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await.unwrap();
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        *record.lock().unwrap() = Some(String::from_utf8_lossy(&head).into_owned());
        let response = format!("HTTP/1.1 {status} Whatever\r\ncontent-length: 0\r\n\r\n");
        stream.write_all(response.as_bytes()).await.unwrap();
        // Keep-alive: the hook must not wait for the server to close.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    (port, seen)
}

#[tokio::test]
async fn http_hook_without_host_calls_the_sandbox_ip_on_the_named_port() {
    let world = world().await;
    world
        .handle
        .set_sandbox_ip(&world.pod.sandbox_id, "127.0.0.1")
        .unwrap();
    // Any response will do, as for the kubelet's lifecycle hooks.
    let (port, seen) = http_server(500).await;
    let mut crr = crr(
        &world,
        Some(ProbeHandler {
            http_get: Some(HTTPGetAction {
                path: Some("/pre-stop?drain=1".into()),
                port: IntOrString::String("admin".into()),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-Drain".into(),
                    value: "now".into(),
                }]),
                ..HTTPGetAction::default()
            }),
            ..ProbeHandler::default()
        }),
        Some(10),
    );
    crr.containers[0].ports = Some(vec![ContainerPort {
        name: Some("admin".into()),
        container_port: i32::from(port),
        ..ContainerPort::default()
    }]);
    let container = world.runtime_container("app").await;

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    assert_eq!(report.hook, HookOutcome::Succeeded);
    assert!(
        report.hook_elapsed < Duration::from_secs(5),
        "{:?}",
        report.hook_elapsed
    );
    report.result.expect("stopped");
    let head = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the hook reached the server");
    let lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with("GET /pre-stop?drain=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        lower.contains(&format!("host: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
    assert!(
        lower.contains("user-agent: kube-lifecycle/1.32\r\n"),
        "{head}"
    );
    assert!(lower.contains("accept: */*\r\n"), "{head}");
    assert!(lower.contains("x-drain: now\r\n"), "{head}");
    assert_eq!(world.handle.count("PodSandboxStatus"), 1);
    assert_eq!(world.handle.count("StopContainer"), 1);
}

#[tokio::test]
async fn http_hook_without_a_pod_ip_fails_and_the_container_is_still_stopped() {
    let world = CriWorld::start(
        KubeletPod::new("ns", "pod")
            .host_network(true)
            .container(KubeletContainer::new("app", IMAGE)),
    )
    .await;
    let crr = crr(
        &world,
        Some(ProbeHandler {
            http_get: Some(HTTPGetAction {
                path: Some("/stop".into()),
                port: IntOrString::Int(8080),
                ..HTTPGetAction::default()
            }),
            ..ProbeHandler::default()
        }),
        Some(10),
    );
    let container = world.runtime_container("app").await;

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    report.result.expect("stopped anyway");
    let HookOutcome::Failed(failure) = &report.hook else {
        panic!("expected a failure, got {:?}", report.hook);
    };
    assert_eq!(
        failure.message,
        format!(
            "HTTP lifecycle hook (/stop) for Container \"app\" in Pod \"pod_ns({})\" failed - error: failed to find networking container: sandbox {} reports no IP",
            world.pod.uid, world.pod.sandbox_id
        )
    );
    assert_eq!(world.handle.count("StopContainer"), 1);
}

#[tokio::test]
async fn http_hook_to_a_closed_port_fails_with_the_url() {
    let world = world().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let crr = crr(
        &world,
        Some(ProbeHandler {
            http_get: Some(HTTPGetAction {
                host: Some("127.0.0.1".into()),
                path: Some("stop".into()),
                port: IntOrString::Int(i32::from(port)),
                ..HTTPGetAction::default()
            }),
            ..ProbeHandler::default()
        }),
        Some(10),
    );
    let container = world.runtime_container("app").await;

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    let HookOutcome::Failed(failure) = &report.hook else {
        panic!("expected a failure, got {:?}", report.hook);
    };
    let prefix = format!(
        "HTTP lifecycle hook (stop) for Container \"app\" in Pod \"pod_ns({})\" failed - error: Get \"http://127.0.0.1:{port}/stop\": dial tcp 127.0.0.1:{port}: ",
        world.pod.uid
    );
    assert!(failure.message.starts_with(&prefix), "{}", failure.message);
    // An explicit host needs no sandbox lookup.
    assert_eq!(world.handle.count("PodSandboxStatus"), 0);
    report.result.expect("stopped anyway");
}

#[tokio::test]
async fn tcp_hook_connects_to_the_sandbox_ip() {
    let world = world().await;
    world
        .handle
        .set_sandbox_ip(&world.pod.sandbox_id, "127.0.0.1")
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
    let crr = crr(
        &world,
        Some(ProbeHandler {
            tcp_socket: Some(TCPSocketAction {
                host: None,
                port: IntOrString::String(port.to_string()),
            }),
            ..ProbeHandler::default()
        }),
        Some(10),
    );
    let container = world.runtime_container("app").await;

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    assert_eq!(report.hook, HookOutcome::Succeeded);
    assert!(accepted.await.unwrap());
    report.result.expect("stopped");
}

#[tokio::test]
async fn tcp_hook_to_a_closed_port_fails_and_still_stops() {
    let world = world().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let crr = crr(
        &world,
        Some(ProbeHandler {
            tcp_socket: Some(TCPSocketAction {
                host: Some("127.0.0.1".into()),
                port: IntOrString::Int(i32::from(port)),
            }),
            ..ProbeHandler::default()
        }),
        Some(10),
    );
    let container = world.runtime_container("app").await;

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    let HookOutcome::Failed(failure) = &report.hook else {
        panic!("expected a failure, got {:?}", report.hook);
    };
    assert!(
        failure.message.starts_with(&format!(
            "TCP lifecycle hook ({port}) for Container \"app\" in Pod \"pod_ns({})\" failed - error: dial tcp 127.0.0.1:{port}: ",
            world.pod.uid
        )),
        "{}",
        failure.message
    );
    report.result.expect("stopped anyway");
}

#[tokio::test]
async fn a_sleep_hook_comes_from_the_kubelet_annotation() {
    let world = CriWorld::start(KubeletPod::new("ns", "pod").container(
        KubeletContainer::new("app", IMAGE).pre_stop(json!({ "sleep": { "seconds": 1 } })),
    ))
    .await;
    // The webhook copies a sleep preStop as an empty handler.
    let crr = crr(&world, Some(ProbeHandler::default()), Some(4));
    let container = world.runtime_container("app").await;
    let started = Instant::now();

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    assert_eq!(report.hook, HookOutcome::Succeeded);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(report.stop_grace_seconds, 3);
    report.result.expect("stopped");
}

#[tokio::test]
async fn an_empty_handler_without_a_sleep_annotation_is_the_kubelets_invalid_handler() {
    let world = world().await;
    let crr = crr(&world, Some(ProbeHandler::default()), Some(4));
    let container = world.runtime_container("app").await;

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    assert_eq!(
        report.hook,
        HookOutcome::Failed(HookFailure {
            message: "Cannot run handler: invalid handler: &LifecycleHandler{Exec:nil,HTTPGet:nil,TCPSocket:nil,Sleep:nil,}".into()
        })
    );
    assert_eq!(report.stop_grace_seconds, 4);
    report.result.expect("stopped anyway");
}

#[tokio::test]
async fn a_zero_grace_skips_the_hook_and_stops_with_two_seconds() {
    let world = world().await;
    let crr = crr(&world, Some(exec(&["drain"])), Some(0));
    let container = world.runtime_container("app").await;

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    assert_eq!(report.hook, HookOutcome::Skipped);
    assert_eq!(world.handle.count("ExecSync"), 0);
    assert_eq!(stop_timeouts(&world), [(app_id(&world), 2)]);
    report.result.expect("stopped");
}

#[tokio::test]
async fn a_container_not_in_the_request_is_a_precise_error_and_nothing_is_stopped() {
    let world = world().await;
    let crr = crr(&world, None, Some(10));
    let container = world.runtime_container("app").await;

    let report = kill_container(&world.cri, &crr, "sidecar", &container).await;

    let error = report.result.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "failed to get containerSpec \"sidecar\"(id=\"containerd://{}\") in pod \"pod_ns({})\" when killing container for reason \"Stopping container sidecar by ContainerRecreateRequest crr\"",
            app_id(&world),
            world.pod.uid
        )
    );
    assert!(report.events.is_empty());
    assert_eq!(world.handle.count("StopContainer"), 0);
}

#[tokio::test]
async fn a_container_the_runtime_no_longer_has_fails_with_the_grpc_text() {
    let world = world().await;
    let crr = crr(&world, None, Some(10));
    let container = world.runtime_container("app").await;
    world.cri.remove_container(&container.id.id).await.unwrap();

    let report = kill_container(&world.cri, &crr, "app", &container).await;

    assert_eq!(
        report.result.unwrap_err().to_string(),
        format!(
            "rpc error: code = NotFound desc = an error occurred when try to find container \"{}\": not found",
            container.id.id
        )
    );
    assert_eq!(report.hook, HookOutcome::None);
}

// ---- pure parts ------------------------------------------------------------------------

#[test]
fn grace_comes_from_strategy_then_deletion_then_termination_then_thirty() {
    let mut container = runtime_container("app", "app-1", RuntimeContainerState::Running, 0, 1);
    let mut strategy = Strategy::default();
    assert_eq!(
        grace_period(&strategy, &container),
        GracePeriod {
            seconds: 30,
            source: GraceSource::Default
        }
    );
    container.pod_termination_grace_period_seconds = Some(45);
    assert_eq!(
        grace_period(&strategy, &container),
        GracePeriod {
            seconds: 45,
            source: GraceSource::PodTerminationGracePeriod
        }
    );
    container.pod_deletion_grace_period_seconds = Some(5);
    assert_eq!(
        grace_period(&strategy, &container),
        GracePeriod {
            seconds: 5,
            source: GraceSource::PodDeletionGracePeriod
        }
    );
    strategy.termination_grace_period_seconds = Some(0);
    assert_eq!(
        grace_period(&strategy, &container),
        GracePeriod {
            seconds: 0,
            source: GraceSource::Strategy
        }
    );
}

#[test]
fn the_stop_grace_subtracts_whole_hook_seconds_with_a_floor_of_two() {
    assert_eq!(stop_grace_seconds(30, Duration::from_millis(2999)), 28);
    assert_eq!(stop_grace_seconds(30, Duration::ZERO), 30);
    assert_eq!(stop_grace_seconds(3, Duration::from_secs(2)), 2);
    assert_eq!(stop_grace_seconds(0, Duration::ZERO), 2);
    assert_eq!(stop_grace_seconds(-5, Duration::ZERO), 2);
}

#[test]
fn ports_resolve_like_the_kubelet() {
    let ports = [ContainerPort {
        name: Some("http".into()),
        container_port: 8080,
        ..ContainerPort::default()
    }];
    assert_eq!(resolve_port(&IntOrString::Int(80), &ports), Ok(80));
    assert_eq!(
        resolve_port(&IntOrString::String("http".into()), &ports),
        Ok(8080)
    );
    assert_eq!(
        resolve_port(&IntOrString::String("9090".into()), &ports),
        Ok(9090)
    );
    assert_eq!(
        resolve_port(&IntOrString::String("admin".into()), &ports),
        Err("strconv.Atoi: parsing \"admin\": invalid syntax".into())
    );
    assert_eq!(
        resolve_port(&IntOrString::Int(0), &ports),
        Err("invalid port number: 0".into())
    );
    assert_eq!(
        resolve_port(&IntOrString::Int(70000), &ports),
        Err("invalid port number: 70000".into())
    );
}

#[test]
fn the_crr_pre_stop_wins_over_the_annotation_and_no_pre_stop_means_no_hook() {
    let mut container = runtime_container("app", "app-1", RuntimeContainerState::Running, 0, 1);
    container.pre_stop_handler = Some(r#"{"sleep":{"seconds":3}}"#.into());
    let mut spec = ContainerRecreateRequestContainer {
        name: "app".into(),
        pre_stop: None,
        ports: None,
        status_context: None,
    };
    assert_eq!(pre_stop_hook(&spec, &container), None);
    spec.pre_stop = Some(exec(&["x"]));
    assert_eq!(
        pre_stop_hook(&spec, &container),
        Some(PreStopHook::Exec {
            command: vec!["x".into()]
        })
    );
    spec.pre_stop = Some(ProbeHandler::default());
    assert_eq!(
        pre_stop_hook(&spec, &container),
        Some(PreStopHook::Sleep { seconds: 3 })
    );
    container.pre_stop_handler = Some("not json".into());
    assert_eq!(pre_stop_hook(&spec, &container), Some(PreStopHook::Invalid));
}
