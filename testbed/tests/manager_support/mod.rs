//! Shared by the `manager_*` tests: the test API server with the reference CRDs and
//! kruise's namespaces, an in-process `kruised manager`, Ready nodes, in-process agents
//! (image puller) for any number of node names on the one real containerd.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, Node};
use kruised::agent::{ShutdownTrigger, shutdown_channel};
use kruised::apiversions::KruiseVersion;
use kruised::manager::context::Settings;
use kruised::manager::leader::LeaseConfig;
use kruised::manager::metrics::ManagerMetrics;
use kruised::manager::{ManagerConfig, ManagerError, run_with_client};
use kruised::readiness::Readiness;
use kube::api::{Api, ListParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use testbed::apiserver::{ApiServer, ApiServerConfig};
use testbed::testenv::TestEnv;

pub const REFERENCE_CRDS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");
pub const NAMESPACE: &str = "default";
pub const CONFIG_NAMESPACE: &str = "kruise-daemon-config";
pub const LEASE_NAMESPACE: &str = "kruise-system";

/// Polls `check` until it returns `Some`, panicking after `deadline`.
pub async fn within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
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
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`within`] a minute.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    within(Duration::from_secs(90), what, check).await
}

/// The API server, ready for kruise objects.
pub async fn server() -> ApiServer {
    server_with_crds(REFERENCE_CRDS).await
}

/// OpenKruise 1.8's CRDs: every kind served as v1alpha1 only.
pub const KRUISE_1_8_CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/reference/crds-v1.8.4"
);

/// The API server with the CRDs of `dir` and kruise's namespaces.
pub async fn server_with_crds(dir: &str) -> ApiServer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    server.apply_crds_from_dir(Path::new(dir)).unwrap();
    let namespaces: Api<Namespace> = Api::all(server.client());
    for name in [LEASE_NAMESPACE, CONFIG_NAMESPACE] {
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

/// Settings for tests: no creation delay.
pub fn settings() -> Settings {
    Settings {
        nodeimage_creation_delay: Duration::ZERO,
        ..Settings::default()
    }
}

/// A running manager replica.
pub struct Manager {
    pub identity: String,
    pub metrics: Arc<ManagerMetrics>,
    pub trigger: ShutdownTrigger,
    pub task: tokio::task::JoinHandle<Result<(), ManagerError>>,
}

impl Manager {
    /// One replica without leader election.
    pub fn start(client: kube::Client, settings: Settings) -> Self {
        Self::start_with(client, settings, None)
    }

    /// A replica electing on the test Lease as `identity`.
    pub fn start_elected(client: kube::Client, settings: Settings, identity: &str) -> Self {
        Self::start_with(client, settings, Some(identity))
    }

    fn start_with(client: kube::Client, settings: Settings, identity: Option<&str>) -> Self {
        let identity = identity.unwrap_or("solo").to_owned();
        let config = ManagerConfig {
            lease: (identity != "solo").then(|| LeaseConfig {
                namespace: LEASE_NAMESPACE.into(),
                name: "kruised-manager".into(),
                identity: identity.clone(),
                lease_duration: Duration::from_secs(4),
                renew_deadline: Duration::from_secs(2),
                retry_period: Duration::from_millis(300),
            }),
            kruise_namespace: LEASE_NAMESPACE.into(),
            settings,
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
            identity,
            metrics,
            trigger,
            task,
        }
    }

    pub fn leading(&self) -> bool {
        self.metrics
            .encode()
            .lines()
            .any(|l| l == "kruised_manager_leader 1")
    }

    /// The sum of a counter family's samples whose line contains `filter`.
    pub fn counter(&self, family: &str, filter: &str) -> u64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(family) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// Creates a Ready node with `labels`.
pub async fn ready_node(client: &kube::Client, name: &str, labels: Value) {
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

pub fn node_images(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
    )
}

pub fn jobs(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &KruiseVersion::V1beta1.resource("ImagePullJob", "imagepulljobs"),
    )
}

pub fn list_jobs(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &KruiseVersion::V1beta1.resource("ImageListPullJob", "imagelistpulljobs"),
    )
}

/// Creates an object of `api` from JSON.
pub async fn create(api: &Api<DynamicObject>, value: Value) -> DynamicObject {
    api.create(
        &PostParams::default(),
        &serde_json::from_value(value).unwrap(),
    )
    .await
    .unwrap()
}

/// The reasons and messages of the events about `name`.
pub async fn events_about(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Vec<(String, String)> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// An in-process agent (the image puller) for `node` on the test environment's
/// containerd. Dropping it stops it.
pub struct Agent {
    _trigger: ShutdownTrigger,
}

impl Agent {
    pub async fn start(client: kube::Client, node: &str) -> Self {
        Self::start_version(client, node, KruiseVersion::V1beta1).await
    }

    /// An agent reading NodeImages as `version`.
    pub async fn start_version(client: kube::Client, node: &str, version: KruiseVersion) -> Self {
        let env = TestEnv::get();
        let metrics = kruised::metrics::Metrics::new();
        let runtimes = kruised::cri::DiscoveryConfig {
            runtime_endpoint: Some(env.runtime_endpoint().to_string()),
            ..Default::default()
        }
        .discover(Some(metrics.cri.clone()))
        .await
        .unwrap();
        let puller = kruised::imagepuller::build(
            client,
            node,
            version,
            &runtimes,
            2,
            metrics,
            kruised::credentials::plugin::CredentialPlugins::none(),
        );
        let readiness = Readiness::new();
        let check = readiness.register("nodeImageInformerSynced");
        let (trigger, shutdown) = shutdown_channel();
        tokio::spawn(puller.run(check, shutdown));
        Self { _trigger: trigger }
    }
}

/// A name unique in this run.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
