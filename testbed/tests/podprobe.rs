//! The NodePodProbe controller (§5.3) in-process against the test bed's API server, the
//! kubelet stand-in and real containerd. No kruise-manager runs: the test writes the
//! NodePodProbe spec as the PodProbeMarker controller would (§5.2).
//!
//! The kubelet stand-in runs pods in the host network, so the pod IP is 127.0.0.1: HTTP and
//! TCP probes reach busybox's `httpd` in the pod, and gRPC probes reach a `grpc.health.v1`
//! server this test runs in its own process on 127.0.0.1, which is where a pod-network
//! server would be from the node's point of view.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Event, ExecAction, GRPCAction, HTTPGetAction, Pod, PodSpec, Probe,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kruised::agent::{ShutdownTrigger, shutdown_channel};
use kruised::api::v1alpha1::{
    ContainerProbe, ContainerProbeState, NodePodProbe, NodePodProbeSpec, PodProbe,
};
use kruised::cri::{CriClient, RuntimeEndpoint};
use kruised::events::Recorder;
use kruised::metrics::Metrics;
use kruised::podprobe::EVENT_COMPONENT;
use kruised::podprobe::controller::PodProbeController;
use kruised::proto::grpc::health::v1::health_check_response::ServingStatus;
use kruised::proto::grpc::health::v1::health_server::{Health, HealthServer};
use kruised::proto::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use kruised::readiness::Readiness;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::recreate_harness::{SERVE, poll, unique};
use testbed::apiserver::{ApiServer, ApiServerConfig};
use testbed::kubelet::{Kubelet, KubeletConfig, KubeletHandle};
use testbed::testenv::TestEnv;
use tokio::net::TcpListener;

const REFERENCE_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");
const NAMESPACE: &str = "default";
const KUBELET_SYNC: Duration = Duration::from_millis(200);
/// Deadline for anything that takes a few probe periods.
const DEADLINE: Duration = Duration::from_secs(40);

/// Polls `check` every 50 ms until it returns `Some`, or panics after [`DEADLINE`] with
/// `what` and whatever `context` says about the world then.
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll(DEADLINE, Duration::from_millis(50), what, check).await
}

/// A port nothing listens on right now.
async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn shell(name: &str, script: &str) -> Container {
    Container {
        name: name.to_string(),
        image: Some(TestEnv::get().image("test/busybox:1")),
        command: Some(vec!["/bin/sh".into(), "-c".into()]),
        args: Some(vec![script.to_string()]),
        ..Default::default()
    }
}

/// busybox `httpd` serving `/healthz` (body `ok\n`) on `port`, named `web`.
fn web_server(name: &str, port: u16) -> Container {
    let mut container = shell(
        name,
        &format!("mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p {port} -h /www"),
    );
    container.ports = Some(vec![ContainerPort {
        name: Some("web".into()),
        container_port: i32::from(port),
        ..Default::default()
    }]);
    container
}

fn exec_probe(script: &str) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        }),
        period_seconds: Some(1),
        ..Probe::default()
    }
}

fn http_probe(port: IntOrString, path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            port,
            path: Some(path.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(1),
        ..Probe::default()
    }
}

fn tcp_probe(port: IntOrString) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction { host: None, port }),
        period_seconds: Some(1),
        ..Probe::default()
    }
}

fn grpc_probe(port: u16, service: Option<&str>) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: i32::from(port),
            service: service.map(str::to_owned),
        }),
        period_seconds: Some(1),
        ..Probe::default()
    }
}

/// A `grpc.health.v1` server whose per-service answers the test sets.
#[derive(Clone, Default)]
struct HealthService {
    statuses: Arc<Mutex<HashMap<String, ServingStatus>>>,
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        let service = request.into_inner().service;
        match self.statuses.lock().unwrap().get(&service) {
            Some(status) => Ok(tonic::Response::new(HealthCheckResponse {
                status: *status as i32,
            })),
            None => Err(tonic::Status::not_found(format!(
                "unknown service {service:?}"
            ))),
        }
    }
}

async fn serve_health(service: HealthService) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    port
}

/// A probe of the spec: `(name, container, probe)`.
type NamedProbe<'a> = (&'a str, &'a str, Probe);

/// API server, kubelet stand-in, the node's NodePodProbe and the controller under test.
struct Bed {
    _server: ApiServer,
    node: String,
    cri: CriClient,
    pods: Api<Pod>,
    probes: Api<NodePodProbe>,
    events: Api<Event>,
    metrics: Arc<Metrics>,
    kubelet: Option<KubeletHandle>,
    controller: Option<(ShutdownTrigger, tokio::task::JoinHandle<()>)>,
}

impl Bed {
    async fn start() -> Self {
        Self::start_with_heartbeat(None).await
    }

    /// A bed whose controller refreshes unchanged results after `heartbeat` (kruise: 600 s).
    async fn start_with_heartbeat(heartbeat: Option<Duration>) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let env = TestEnv::get();
        let server = ApiServer::start(ApiServerConfig::default())
            .await
            .expect("test bed API server starts");
        server
            .apply_crds_from_dir(Path::new(REFERENCE_CRDS))
            .expect("reference CRDs apply");
        let client = server.client();
        let node = unique("probe-node");
        let endpoint = RuntimeEndpoint::parse(env.runtime_endpoint()).unwrap();
        let cri = CriClient::connect(&endpoint, None)
            .await
            .expect("containerd from scripts/testenv answers CRI");
        let kubelet = Kubelet::start(KubeletConfig {
            sync_interval: KUBELET_SYNC,
            ..KubeletConfig::new(
                node.clone(),
                client.clone(),
                env.var("RUNTIME_ENDPOINT"),
                env.var("CGROUP_PARENT_PREFIX"),
                env.dir().join("kubelet-pod-logs"),
            )
        })
        .await
        .expect("kubelet starts");

        // The manager creates the node's NodePodProbe when the node appears (§5.2).
        let probes: Api<NodePodProbe> = Api::all(client.clone());
        probes
            .create(
                &PostParams::default(),
                &NodePodProbe::new(&node, NodePodProbeSpec::default()),
            )
            .await
            .expect("create NodePodProbe");

        let metrics = Metrics::new();
        let recorder = Arc::new(Recorder::new(client.clone(), EVENT_COMPONENT, &node));
        let controller = PodProbeController::new(
            client.clone(),
            &node,
            cri.clone(),
            recorder,
            Some(metrics.probe.clone()),
            Instant::now(),
        );
        let controller = match heartbeat {
            Some(heartbeat) => controller.with_heartbeat(heartbeat),
            None => controller,
        };
        let readiness = Readiness::new();
        let ready = readiness.register("nodePodProbeInformerSynced");
        let (trigger, shutdown) = shutdown_channel();
        let task = tokio::spawn(controller.run(ready.clone(), shutdown));
        eventually("the NodePodProbe watch to list", || async {
            ready.is_ready().then_some(())
        })
        .await;
        Self {
            _server: server,
            pods: Api::namespaced(client.clone(), NAMESPACE),
            events: Api::namespaced(client.clone(), NAMESPACE),
            probes,
            metrics,
            node,
            cri,
            kubelet: Some(kubelet),
            controller: Some((trigger, task)),
        }
    }

    /// Creates a pod on the node and waits for all its containers to run.
    async fn running_pod(&self, name: &str, containers: Vec<Container>) -> Pod {
        self.running_pod_with(name, containers, None).await
    }

    async fn running_pod_with(
        &self,
        name: &str,
        containers: Vec<Container>,
        restart_policy: Option<&str>,
    ) -> Pod {
        let count = containers.len();
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(self.node.clone()),
                containers,
                termination_grace_period_seconds: Some(2),
                restart_policy: restart_policy.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        eventually(&format!("pod {name} running"), || async {
            let pod = self.pods.get(name).await.ok()?;
            let statuses = pod.status.as_ref()?.container_statuses.clone()?;
            (statuses.len() == count
                && statuses
                    .iter()
                    .all(|status| status.state.as_ref().is_some_and(|s| s.running.is_some())))
            .then_some(pod)
        })
        .await
    }

    /// Sets the NodePodProbe's spec: for each pod, its probes as `(name, container, probe)`.
    async fn set_probes(&self, pods: &[(&Pod, Vec<NamedProbe<'_>>)]) {
        let pod_probes: Vec<PodProbe> = pods
            .iter()
            .map(|(pod, probes)| PodProbe {
                name: pod.metadata.name.clone().unwrap(),
                namespace: NAMESPACE.into(),
                uid: pod.metadata.uid.clone().unwrap(),
                ip: pod
                    .status
                    .as_ref()
                    .and_then(|status| status.pod_ip.clone())
                    .expect("the kubelet reports the pod IP"),
                probes: Some(
                    probes
                        .iter()
                        .map(|(name, container, probe)| ContainerProbe {
                            name: (*name).into(),
                            container_name: (*container).into(),
                            probe: probe.clone(),
                        })
                        .collect(),
                ),
            })
            .collect();
        self.probes
            .patch(
                &self.node,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "podProbes": pod_probes } })),
            )
            .await
            .expect("patch NodePodProbe spec");
    }

    async fn state(&self, pod_uid: &str, probe: &str) -> Option<ContainerProbeState> {
        let object = self.probes.get(&self.node).await.ok()?;
        object
            .status?
            .pod_probe_statuses?
            .into_iter()
            .find(|pod| pod.uid == pod_uid)?
            .probe_states?
            .into_iter()
            .find(|state| state.name == probe)
    }

    /// Waits for the probe's state to satisfy `check`.
    async fn state_until(
        &self,
        pod_uid: &str,
        probe: &str,
        what: &str,
        check: impl Fn(&ContainerProbeState) -> bool,
    ) -> ContainerProbeState {
        eventually(&format!("probe {probe}: {what}"), || async {
            self.state(pod_uid, probe)
                .await
                .filter(|state| check(state))
        })
        .await
    }

    /// Waits for `probe` to be `state` with `message` (absent for empty).
    async fn reported(&self, pod_uid: &str, probe: &str, state: &str, message: Option<&str>) {
        let found = eventually(&format!("probe {probe} {state} {message:?}"), || async {
            let found = self.state(pod_uid, probe).await?;
            (found.state == state && found.message.as_deref() == message).then_some(found)
        })
        .await;
        assert!(found.last_probe_time.is_some() && found.last_transition_time.is_some());
    }

    /// Probe runs counted by the controller's metrics, for `handler`.
    fn runs(&self, handler: &str) -> u64 {
        let prefix = format!("kruised_probe_duration_seconds_count{{handler=\"{handler}\",");
        self.metrics
            .encode()
            .lines()
            .filter(|line| line.starts_with(&prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    async fn wait_for_more_runs(&self, handler: &str, more: u64) {
        let target = self.runs(handler) + more;
        eventually(&format!("{more} more {handler} probe runs"), || async {
            (self.runs(handler) >= target).then_some(())
        })
        .await;
    }

    async fn container_id(&self, pod_uid: &str, name: &str) -> String {
        self.cri
            .list_pod_containers(pod_uid)
            .await
            .unwrap()
            .into_iter()
            .filter(|container| container.metadata.as_ref().is_some_and(|m| m.name == name))
            .max_by_key(|container| container.created_at)
            .map(|container| container.id)
            .expect("the container exists")
    }

    async fn finish(mut self) {
        if let Some((trigger, task)) = self.controller.take() {
            trigger.trigger();
            task.await.unwrap();
        }
        let pods = self.pods.list(&ListParams::default()).await.unwrap();
        for pod in pods.items {
            let name = pod.metadata.name.clone().unwrap();
            let uid = pod.metadata.uid.clone().unwrap();
            self.pods
                .delete(&name, &DeleteParams::default())
                .await
                .expect("delete pod");
            eventually(&format!("pod {name}'s containers gone"), || async {
                let containers = self.cri.list_pod_containers(&uid).await.ok()?;
                containers.is_empty().then_some(())
            })
            .await;
        }
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
    }
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_handler_reports_on_one_container_without_overwriting_the_others() {
    let bed = Bed::start().await;
    let web = free_port().await;
    let closed = free_port().await;
    let health = HealthService::default();
    health.statuses.lock().unwrap().extend([
        (String::new(), ServingStatus::Serving),
        ("down".to_owned(), ServingStatus::NotServing),
    ]);
    let grpc = serve_health(health).await;
    let pod = bed
        .running_pod(&unique("handlers"), vec![web_server("app", web)])
        .await;
    let pod_uid = uid(&pod);
    let named = || IntOrString::String("web".into());
    bed.set_probes(&[(
        &pod,
        vec![
            ("ppm#exec-ok", "app", exec_probe("echo fine")),
            ("ppm#exec-bad", "app", exec_probe("echo broken >&2; exit 1")),
            ("ppm#http-ok", "app", http_probe(named(), "/healthz")),
            (
                "ppm#http-404",
                "app",
                http_probe(IntOrString::Int(i32::from(web)), "/missing"),
            ),
            ("ppm#tcp-ok", "app", tcp_probe(named())),
            (
                "ppm#tcp-closed",
                "app",
                tcp_probe(IntOrString::Int(i32::from(closed))),
            ),
            ("ppm#grpc-ok", "app", grpc_probe(grpc, None)),
            ("ppm#grpc-down", "app", grpc_probe(grpc, Some("down"))),
        ],
    )])
    .await;

    bed.reported(&pod_uid, "ppm#exec-ok", "Succeeded", Some("fine\n"))
        .await;
    bed.reported(&pod_uid, "ppm#exec-bad", "Failed", Some("broken\n"))
        .await;
    bed.reported(&pod_uid, "ppm#http-ok", "Succeeded", Some("ok\n"))
        .await;
    bed.reported(
        &pod_uid,
        "ppm#http-404",
        "Failed",
        Some("HTTP probe failed with statuscode: 404"),
    )
    .await;
    bed.reported(&pod_uid, "ppm#tcp-ok", "Succeeded", None)
        .await;
    let refused = format!("dial tcp 127.0.0.1:{closed}: connect: connection refused");
    bed.reported(&pod_uid, "ppm#tcp-closed", "Failed", Some(&refused))
        .await;
    bed.reported(
        &pod_uid,
        "ppm#grpc-ok",
        "Succeeded",
        Some("service healthy"),
    )
    .await;
    bed.reported(
        &pod_uid,
        "ppm#grpc-down",
        "Failed",
        Some("service unhealthy (responded with \"NOT_SERVING\")"),
    )
    .await;
    // All eight at once: none overwrote another.
    let object = bed.probes.get(&bed.node).await.unwrap();
    let pods = object.status.unwrap().pod_probe_statuses.unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(
        (pods[0].name.as_str(), pods[0].namespace.as_str()),
        (pod.metadata.name.as_deref().unwrap(), NAMESPACE)
    );
    assert_eq!(pods[0].probe_states.as_ref().unwrap().len(), 8);

    // Events on the pod, from kruise's component, with the probe's output.
    let events = eventually("probe events", || async {
        let events: Vec<Event> = bed
            .events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|event| event.involved_object.uid.as_deref() == Some(pod_uid.as_str()))
            .collect();
        let has = |reason: &str, message: &str| {
            events.iter().any(|event| {
                event.reason.as_deref() == Some(reason) && event.message.as_deref() == Some(message)
            })
        };
        (has("KruiseProbeSucceeded", "fine\n") && has("KruiseProbeFailed", "broken\n"))
            .then_some(events)
    })
    .await;
    for event in &events {
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
        let source = event.source.as_ref().unwrap();
        assert_eq!(source.component.as_deref(), Some(EVENT_COMPONENT));
        assert_eq!(source.host.as_deref(), Some(bed.node.as_str()));
    }
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thresholds_hold_a_flapping_probe_until_it_repeats() {
    let bed = Bed::start().await;
    let pod = bed
        .running_pod(&unique("flap"), vec![shell("app", SERVE)])
        .await;
    let pod_uid = uid(&pod);
    // Each run flips the result: succeed, fail, succeed, …
    let flip = "if [ -f /tmp/flip ]; then rm /tmp/flip; exit 1; else touch /tmp/flip; fi";
    let mut probe = exec_probe(flip);
    probe.success_threshold = Some(2);
    probe.failure_threshold = Some(2);
    bed.set_probes(&[(&pod, vec![("ppm#flip", "app", probe.clone())])])
        .await;
    bed.reported(&pod_uid, "ppm#flip", "Unknown", None).await;
    bed.wait_for_more_runs("exec", 6).await;
    let state = bed.state(&pod_uid, "ppm#flip").await.unwrap();
    assert_eq!(state.state, "Unknown", "no result repeated twice in a row");

    // Thresholds of 1 (not a handler change, so no reset): every run is published.
    probe.success_threshold = Some(1);
    probe.failure_threshold = Some(1);
    bed.set_probes(&[(&pod, vec![("ppm#flip", "app", probe)])])
        .await;
    let succeeded = bed
        .state_until(&pod_uid, "ppm#flip", "Succeeded", |state| {
            state.state == "Succeeded"
        })
        .await;
    let failed = bed
        .state_until(&pod_uid, "ppm#flip", "Failed", |state| {
            state.state == "Failed"
        })
        .await;
    assert!(
        failed.last_transition_time.unwrap().0 >= succeeded.last_transition_time.unwrap().0,
        "each flip is a transition"
    );
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_container_resets_its_result_to_unknown() {
    let bed = Bed::start().await;
    let pod = bed
        .running_pod(&unique("restart"), vec![shell("app", SERVE)])
        .await;
    let pod_uid = uid(&pod);
    let mut probe = exec_probe("echo alive");
    // Long enough that the reset is seen before the new container is probed.
    probe.initial_delay_seconds = Some(5);
    bed.set_probes(&[(&pod, vec![("ppm#alive", "app", probe)])])
        .await;
    bed.reported(&pod_uid, "ppm#alive", "Succeeded", Some("alive\n"))
        .await;

    let old = bed.container_id(&pod_uid, "app").await;
    bed.cri
        .stop_container(&old, Duration::from_secs(2))
        .await
        .expect("stop the container; the kubelet starts a new one");
    let reset = bed
        .state_until(
            &pod_uid,
            "ppm#alive",
            "Unknown after the restart",
            |state| state.state == "Unknown",
        )
        .await;
    assert_eq!(reset.message, None);
    let new = bed.container_id(&pod_uid, "app").await;
    assert_ne!(new, old);
    bed.reported(&pod_uid, "ppm#alive", "Succeeded", Some("alive\n"))
        .await;
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_that_stopped_fails_with_kruises_message() {
    let bed = Bed::start().await;
    let pod = bed
        .running_pod_with(
            &unique("exited"),
            vec![shell("app", "sleep 3")],
            Some("Never"),
        )
        .await;
    let pod_uid = uid(&pod);
    bed.set_probes(&[(&pod, vec![("ppm#alive", "app", exec_probe("true"))])])
        .await;
    bed.reported(
        &pod_uid,
        "ppm#alive",
        "Failed",
        Some("Container(app) is Non-running"),
    )
    .await;
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_leave_the_status_with_their_pod_or_probe_and_unchanged_status_is_not_rewritten() {
    let bed = Bed::start().await;
    let first = bed
        .running_pod(&unique("first"), vec![shell("app", SERVE)])
        .await;
    let second = bed
        .running_pod(&unique("second"), vec![shell("app", SERVE)])
        .await;
    let (first_uid, second_uid) = (uid(&first), uid(&second));
    bed.set_probes(&[
        (
            &first,
            vec![
                ("ppm#a", "app", exec_probe("echo a")),
                ("ppm#b", "app", exec_probe("echo b")),
            ],
        ),
        (&second, vec![("ppm#a", "app", exec_probe("echo a"))]),
    ])
    .await;
    bed.reported(&first_uid, "ppm#a", "Succeeded", Some("a\n"))
        .await;
    bed.reported(&first_uid, "ppm#b", "Succeeded", Some("b\n"))
        .await;
    bed.reported(&second_uid, "ppm#a", "Succeeded", Some("a\n"))
        .await;

    // Steady results: the status is not written again.
    let version = bed
        .probes
        .get(&bed.node)
        .await
        .unwrap()
        .metadata
        .resource_version;
    bed.wait_for_more_runs("exec", 9).await;
    assert_eq!(
        bed.probes
            .get(&bed.node)
            .await
            .unwrap()
            .metadata
            .resource_version,
        version,
        "no status write without a change"
    );

    // Probe b of the first pod and the whole second pod leave the spec.
    bed.set_probes(&[(&first, vec![("ppm#a", "app", exec_probe("echo a"))])])
        .await;
    let pods = eventually("entries of removed probes gone", || async {
        let status = bed.probes.get(&bed.node).await.ok()?.status?;
        let pods = status.pod_probe_statuses?;
        (pods.len() == 1 && pods[0].probe_states.as_ref()?.len() == 1).then_some(pods)
    })
    .await;
    assert_eq!(pods[0].uid, first_uid);
    assert_eq!(pods[0].probe_states.as_ref().unwrap()[0].name, "ppm#a");
    eventually("one probe worker left", || async {
        bed.metrics
            .encode()
            .contains("kruised_probe_workers 1\n")
            .then_some(())
    })
    .await;

    // An empty spec empties the status.
    bed.set_probes(&[]).await;
    eventually("the status emptied", || async {
        let status = bed
            .probes
            .get(&bed.node)
            .await
            .ok()?
            .status
            .unwrap_or_default();
        status
            .pod_probe_statuses
            .is_none_or(|pods| pods.is_empty())
            .then_some(())
    })
    .await;
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steady_results_refresh_last_probe_time_on_the_heartbeat_only() {
    // kruise refreshes every 600 s; the same rule with a 3 s heartbeat.
    let bed = Bed::start_with_heartbeat(Some(Duration::from_secs(3))).await;
    let pod = bed
        .running_pod(&unique("heartbeat"), vec![shell("app", SERVE)])
        .await;
    let pod_uid = uid(&pod);
    bed.set_probes(&[(&pod, vec![("ppm#steady", "app", exec_probe("echo same"))])])
        .await;
    let first = bed
        .state_until(&pod_uid, "ppm#steady", "Succeeded", |state| {
            state.state == "Succeeded"
        })
        .await;
    let refreshed = bed
        .state_until(
            &pod_uid,
            "ppm#steady",
            "a refreshed lastProbeTime",
            |state| state.last_probe_time != first.last_probe_time,
        )
        .await;
    assert_eq!(refreshed.state, "Succeeded");
    assert_eq!(
        refreshed.last_transition_time, first.last_transition_time,
        "no transition"
    );
    assert!(refreshed.last_probe_time.unwrap().0 > first.last_probe_time.unwrap().0);
    bed.finish().await;
}
