//! `kruised manager` replicas against the test API server: leader election on a Lease
//! (exactly one acts, crash fail-over, hand-over on shutdown, fencing when renewals
//! fail), and refusal next to an active kruise-manager.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kruised::agent::{ShutdownTrigger, shutdown_channel};
use kruised::apiversions::KruiseVersion;
use kruised::manager::context::Settings;
use kruised::manager::leader::LeaseConfig;
use kruised::manager::metrics::ManagerMetrics;
use kruised::manager::{ManagerConfig, ManagerError, run_with_client};
use kruised::readiness::Readiness;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use serde_json::json;
use testbed::apiserver::faults::{FailRule, Matcher};
use testbed::apiserver::{ApiServer, ApiServerConfig};

const REFERENCE_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");
const LEASE_NAMESPACE: &str = "kruise-system";
const LEASE_NAME: &str = "kruised-manager";

async fn server() -> ApiServer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    server
        .apply_crds_from_dir(Path::new(REFERENCE_CRDS))
        .unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(server.client());
    for name in [LEASE_NAMESPACE, "kruise-daemon-config"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
            )
            .await
            .unwrap();
    }
    server
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Replica {
    identity: String,
    metrics: Arc<ManagerMetrics>,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), ManagerError>>,
}

impl Replica {
    fn start(client: kube::Client, identity: &str) -> Self {
        let config = ManagerConfig {
            lease: Some(LeaseConfig {
                namespace: LEASE_NAMESPACE.into(),
                name: LEASE_NAME.into(),
                identity: identity.into(),
                lease_duration: Duration::from_secs(4),
                renew_deadline: Duration::from_secs(2),
                retry_period: Duration::from_millis(300),
            }),
            kruise_namespace: LEASE_NAMESPACE.into(),
            settings: Settings {
                nodeimage_creation_delay: Duration::ZERO,
                ..Settings::default()
            },
            detection_interval: Duration::from_secs(60),
        };
        let metrics = ManagerMetrics::new();
        let (trigger, shutdown) = shutdown_channel();
        let task = tokio::spawn(run_with_client(
            client,
            config,
            Readiness::new(),
            metrics.clone(),
            shutdown,
        ));
        Self {
            identity: identity.into(),
            metrics,
            trigger,
            task,
        }
    }

    fn leading(&self) -> bool {
        leading(&self.metrics)
    }

    fn writes(&self) -> u64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("kruised_manager_api_writes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

fn leading(metrics: &ManagerMetrics) -> bool {
    metrics
        .encode()
        .lines()
        .any(|l| l == "kruised_manager_leader 1")
}

async fn holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    leases
        .get(LEASE_NAME)
        .await
        .ok()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

async fn ready_node(client: &kube::Client, name: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

async fn node_image_exists(client: &kube::Client, name: &str) -> bool {
    Api::<DynamicObject>::all_with(
        client.clone(),
        &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
    )
    .get(name)
    .await
    .is_ok()
}

/// Waits until one of `replicas` holds the Lease and says so; returns its index.
async fn leader_of(client: &kube::Client, replicas: &[&Replica]) -> usize {
    eventually("a leader", || async {
        let holder = holder(client).await?;
        let index = replicas.iter().position(|r| r.identity == holder)?;
        replicas[index].leading().then_some(index)
    })
    .await
}

#[tokio::test]
async fn exactly_one_replica_acts_and_the_other_takes_over_when_it_dies() {
    let server = server().await;
    let client = server.client();
    ready_node(&client, "node-a").await;
    let a = Replica::start(client.clone(), "replica-a");
    let b = Replica::start(client.clone(), "replica-b");
    let first = leader_of(&client, &[&a, &b]).await;
    let (leader, standby) = if first == 0 { (a, b) } else { (b, a) };
    eventually("the leader to create node-a's NodeImage", || async {
        node_image_exists(&client, "node-a").await.then_some(())
    })
    .await;
    // The standby watched the Lease only.
    assert!(!standby.leading());
    assert_eq!(standby.writes(), 0);
    assert!(leader.writes() > 0);

    // A crash: no release, the Lease is left held.
    leader.task.abort();
    let _ = leader.task.await;
    eventually("the standby to take the Lease over", || async {
        (holder(&client).await.as_deref() == Some(standby.identity.as_str()) && standby.leading())
            .then_some(())
    })
    .await;
    ready_node(&client, "node-b").await;
    eventually("the new leader to act on a new node", || async {
        node_image_exists(&client, "node-b").await.then_some(())
    })
    .await;
    standby.trigger.trigger();
    standby.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_stopped_leader_releases_the_lease_for_its_standby() {
    let server = server().await;
    let client = server.client();
    let a = Replica::start(client.clone(), "replica-a");
    let b = Replica::start(client.clone(), "replica-b");
    let first = leader_of(&client, &[&a, &b]).await;
    let (leader, standby) = if first == 0 { (a, b) } else { (b, a) };
    leader.trigger.trigger();
    leader
        .task
        .await
        .unwrap()
        .expect("a shutdown is a clean stop");
    assert!(!leading(&leader.metrics));
    // Released, not left to expire: the standby's next attempt wins.
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let released = leases.get(LEASE_NAME).await.unwrap().spec.unwrap();
    assert!(
        released.holder_identity.as_deref() != Some(leader.identity.as_str()),
        "{released:?}"
    );
    eventually("the standby to lead", || async {
        (holder(&client).await.as_deref() == Some(standby.identity.as_str()) && standby.leading())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_before_the_standby_takes_over() {
    let server = server().await;
    let client = server.client();
    let a = Replica::start(client.clone(), "replica-a");
    let b = Replica::start(client.clone(), "replica-b");
    let first = leader_of(&client, &[&a, &b]).await;
    let (leader, standby) = if first == 0 { (a, b) } else { (b, a) };
    // Every Lease write fails for a while: nobody can renew or acquire.
    server.faults().fail(FailRule {
        matcher: Matcher {
            verb: Some("update".into()),
            resource: Some("leases.coordination.k8s.io".into()),
            user_agent: None,
        },
        code: 500,
        count: None,
        percent: None,
        duration_seconds: Some(6.0),
        retry_after_seconds: None,
    });
    eventually("the standby to take over after the outage", || async {
        (holder(&client).await.as_deref() == Some(standby.identity.as_str())).then_some(())
    })
    .await;
    // By the time anyone else held the Lease, the old leader had stopped all work.
    assert!(leader.task.is_finished());
    let error = leader.task.await.unwrap().unwrap_err();
    assert!(
        matches!(error, ManagerError::LeadershipLost { .. }),
        "{error}"
    );
    assert!(!leading(&leader.metrics));
    eventually("the standby to lead", || async {
        standby.leading().then_some(())
    })
    .await;
}

#[tokio::test]
async fn kruise_manager_holding_its_lease_makes_the_manager_refuse_to_run() {
    let server = server().await;
    let client = server.client();
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("kruise-manager".into()),
            namespace: Some(LEASE_NAMESPACE.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("kruise-controller-manager-7d9f_1234".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        }),
    };
    Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE)
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();
    let replica = Replica::start(client.clone(), "replica-a");
    let error = replica.task.await.unwrap().unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, ManagerError::KruiseManagerDetected(_)),
        "{message}"
    );
    assert!(
        message.contains(
            "its leader Lease kruise-system/kruise-manager is held by kruise-controller-manager-7d9f_1234"
        ),
        "{message}"
    );
    // It never competed for its own Lease.
    assert_eq!(holder(&client).await, None);
}
