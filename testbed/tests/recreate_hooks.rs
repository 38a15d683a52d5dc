//! preStop hooks of a CRR kill (§2.5) against real containerd: exec through CRI `ExecSync`,
//! httpGet and tcpSocket without a host (the pod IP from CRI `PodSandboxStatus`, which
//! kruise-daemon lacks), and sleep (read from the kubelet's annotation). Each hook that can
//! outlast the grace period is given one that never ends: the kill must cut it off, and the
//! container must still be recreated exactly once.
//!
//! Pods with their own network namespace get 127.0.0.2 from the test environment's fake
//! CNI, an address nothing in the pod listens on: the test listens there itself, on the
//! node, so a connection proves the address came from CRI.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ExecAction, HTTPGetAction, HTTPHeader, Lifecycle, LifecycleHandler,
    Pod, PodSpec, SleepAction, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;
use support::recreate_harness::{
    Answer, Bed, HookServer, POD_NETWORK_ANNOTATION, previous_finished_at, runtime_id, sh,
    shell_container, states, status_of, unique,
};

/// The pod IP the fake CNI hands out (spec/test-environment.md §4.5).
const POD_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn with_pre_stop(container: Container, handler: LifecycleHandler) -> Container {
    Container {
        lifecycle: Some(Lifecycle {
            pre_stop: Some(handler),
            ..Default::default()
        }),
        ..container
    }
}

/// A pod of `app`, in its own network namespace if `pod_network`.
fn pod(prefix: &str, app: Container, pod_network: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(unique(prefix)),
            annotations: pod_network.then(|| {
                [(POD_NETWORK_ANNOTATION.to_string(), "true".to_string())]
                    .into_iter()
                    .collect()
            }),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![app],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Recreates `app` with a stop grace period of `grace` seconds and checks the result: the
/// CRR completed, `app` restarted exactly once by exactly one kill, and no
/// `FailedPreStopHook` unless `hook_failure` (then exactly one, returned).
async fn recreate(bed: &Bed, pod: &Pod, grace: i64, hook_failure: bool) -> Option<String> {
    let pod_name = pod.metadata.name.clone().unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    let crr = bed
        .create_crr(
            pod,
            &["app"],
            json!({"terminationGracePeriodSeconds": grace}),
            &[],
        )
        .await;
    let crr = bed.completed(crr.metadata.name.as_deref().unwrap()).await;
    assert_eq!(
        states(&crr),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    let after = bed.pods.get(&pod_name).await.unwrap();
    assert_eq!(status_of(&after, "app").restart_count, 1);
    assert_eq!(bed.kills(&pod_uid, "app").await, 1);
    let failures = bed.pod_events(&pod_uid, "FailedPreStopHook").await;
    if !hook_failure {
        assert!(failures.is_empty(), "{failures:?}");
        return None;
    }
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].type_.as_deref(), Some("Warning"));
    failures[0].message.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exec_hook_runs_in_the_old_container_and_a_shorter_grace_cuts_it_off() {
    let bed = Bed::start().await;
    let hook = HookServer::start("127.0.0.1", Answer::Close).await;
    // The hook reports the token the container drew at start, then never ends.
    let app = with_pre_stop(
        Container {
            args: Some(vec![format!(
                "head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /tmp/token; {}",
                support::recreate_harness::SERVE
            )]),
            ..shell_container("app")
        },
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(sh(&format!(
                    "(cat /tmp/token; echo) | nc {} {}; sleep 3600",
                    hook.addr.ip(),
                    hook.addr.port()
                ))),
            }),
            ..Default::default()
        },
    );
    let pod = bed.running_pod_from(pod("exec-hook", app, false)).await;
    let old = status_of(&pod, "app").container_id.clone().unwrap();
    let token = String::from_utf8(
        bed.cri
            .exec_sync(
                runtime_id(&old),
                sh("cat /tmp/token"),
                std::time::Duration::from_secs(10),
            )
            .await
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(token.len(), 16, "{token:?}");

    recreate(&bed, &pod, 2, false).await;
    let hits = hook.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].data.trim_end(), token);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http_hook_without_host_goes_to_the_pod_ip_from_cri_and_a_shorter_grace_cuts_it_off() {
    let bed = Bed::start().await;
    // Never answers: the hook lasts until the grace period ends.
    let hook = HookServer::start(&POD_IP.to_string(), Answer::HttpWhenReleased).await;
    let app = with_pre_stop(
        Container {
            ports: Some(vec![ContainerPort {
                name: Some("hook".into()),
                container_port: i32::from(hook.addr.port()),
                ..Default::default()
            }]),
            ..shell_container("app")
        },
        LifecycleHandler {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("hook".into()),
                path: Some("/pre-stop".into()),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-Test".into(),
                    value: "crr".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let pod = bed.running_pod_from(pod("http-hook", app, true)).await;
    assert_eq!(
        pod.status.as_ref().unwrap().pod_ip.as_deref(),
        Some("127.0.0.2")
    );

    recreate(&bed, &pod, 2, false).await;
    let hits = hook.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].local.ip(), POD_IP);
    let head = hits[0].data.to_ascii_lowercase();
    assert!(head.starts_with("get /pre-stop http/1.1\r\n"), "{head}");
    for header in [
        format!("host: 127.0.0.2:{}\r\n", hook.addr.port()),
        "user-agent: kube-lifecycle/1.32\r\n".to_string(),
        "x-test: crr\r\n".to_string(),
    ] {
        assert!(head.contains(&header), "{header:?} in {head}");
    }
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tcp_hook_without_host_connects_to_the_pod_ip_from_cri() {
    let bed = Bed::start().await;
    let hook = HookServer::start(&POD_IP.to_string(), Answer::Close).await;
    let app = with_pre_stop(
        shell_container("app"),
        LifecycleHandler {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(hook.addr.port())),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let pod = bed.running_pod_from(pod("tcp-hook", app, true)).await;

    recreate(&bed, &pod, 2, false).await;
    let hits = hook.wait_for_hits(1).await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].local.ip(), POD_IP);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http_hook_without_host_on_a_host_network_pod_fails_with_a_warning_and_the_container_is_still_recreated()
 {
    // containerd reports no IP for a host-network sandbox, so there is nowhere to send it.
    let bed = Bed::start().await;
    let app = with_pre_stop(
        shell_container("app"),
        LifecycleHandler {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(1),
                path: Some("/pre-stop".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let pod = bed.running_pod_from(pod("http-host", app, false)).await;
    let message = recreate(&bed, &pod, 2, true).await.unwrap();
    let expected = format!(
        "HTTP lifecycle hook (/pre-stop) for Container \"app\" in Pod \"{}_default({})\" failed - error: failed to find networking container: sandbox ",
        pod.metadata.name.as_deref().unwrap(),
        pod.metadata.uid.as_deref().unwrap()
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.ends_with(" reports no IP"), "{message}");
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sleep_hook_holds_the_stop_until_a_shorter_grace_runs_out() {
    // The webhook cannot copy `sleep` into the CRR (it leaves `preStop: {}`); the daemon
    // reads it from the kubelet's preStopHandler annotation on the container.
    let bed = Bed::start().await;
    let app = with_pre_stop(
        shell_container("app"),
        LifecycleHandler {
            sleep: Some(SleepAction { seconds: 3600 }),
            ..Default::default()
        },
    );
    let pod = bed.running_pod_from(pod("sleep-hook", app, false)).await;

    let before = Timestamp::now();
    recreate(&bed, &pod, 4, false).await;
    // The hook held the stop for the whole 4 s grace, so the old container ended at least
    // 4 s after the CRR was created; at second precision, not before the second `before`
    // was in plus 4. A lower bound, however fast or slow the rest went.
    let after = bed
        .pods
        .get(pod.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    let finished = previous_finished_at(status_of(&after, "app")).unwrap();
    let earliest =
        Timestamp::from_second(before.as_second()).unwrap() + SignedDuration::from_secs(4);
    assert!(
        finished >= earliest,
        "the old container ended at {finished}, the CRR was created at {before}"
    );
    bed.finish().await;
}
