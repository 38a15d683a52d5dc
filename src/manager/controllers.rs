//! Wires the leader's work: one cache per watched kind, the shared [`Context`], and every
//! controller, all inside one future so that dropping it (fencing, shutdown) stops them
//! all together.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::Resource;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tracing::{debug, info, warn};

use super::cache::Cache;
use super::context::{Context, Settings, Stores};
use super::expectations::Expectations;
use super::metrics::ManagerMetrics;
use super::nodeimage;
use super::nodeimage_io::NodeImageWriteError;
use crate::apiversions::ServedVersions;
use crate::events::Recorder;

/// The Event source component of the manager.
pub const EVENT_COMPONENT: &str = "kruised-manager";

/// Why a reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// A NodeImage write failed.
    #[error(transparent)]
    NodeImage(#[from] NodeImageWriteError),
}

/// Back-off after a failed reconcile (kruise: 500 ms doubling; here flat and short, the
/// controller's own trigger back-off spreads repeats).
fn error_policy<K>(_: Arc<K>, error: &ReconcileError, _: Arc<Context>) -> Action {
    warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Wraps a reconciler with metrics.
fn measured<K, F, Fut>(
    controller: &'static str,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> BoxFuture<'static, Result<Action, ReconcileError>>
where
    K: Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    move |object, ctx| {
        Box::pin(async move {
            let start = Instant::now();
            let metrics = ctx.metrics.clone();
            let result = reconcile(object, ctx).await;
            metrics.reconciled(controller, result.is_ok(), start.elapsed());
            result
        })
    }
}

/// Drains a controller's result stream (results are logged by the reconcilers).
async fn drain<S, T, E>(name: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(result) = stream.next().await {
        if let Err(error) = result {
            debug!(controller = name, %error, "controller event");
        }
    }
}

async fn ready<K>(store: &kube::runtime::reflector::Store<K>, what: &str)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    if store.wait_until_ready().await.is_err() {
        warn!(cache = what, "cache stopped before it was ready");
    }
}

/// Runs every controller until dropped.
pub async fn run(
    client: kube::Client,
    versions: ServedVersions,
    settings: Settings,
    metrics: Arc<ManagerMetrics>,
    identity: String,
) {
    let node_image_resource = versions.node_image.resource("NodeImage", "nodeimages");
    let job_resource = versions
        .node_image
        .resource("ImagePullJob", "imagepulljobs");

    let mut nodes = Cache::new(
        "nodes",
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
    );
    let mut node_images = Cache::new_with(
        "nodeimages",
        Api::<DynamicObject>::all_with(client.clone(), &node_image_resource),
        watcher::Config::default(),
        node_image_resource.clone(),
    );
    let jobs = Cache::new_with(
        "imagepulljobs",
        Api::<DynamicObject>::all_with(client.clone(), &job_resource),
        watcher::Config::default(),
        job_resource.clone(),
    );
    let pods = Cache::new(
        "pods",
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
    );
    let synced_secrets = Cache::new(
        "synced-secrets",
        Api::<Secret>::namespaced(client.clone(), &settings.daemon_config_namespace),
        watcher::Config::default(),
    );
    let stores = Stores {
        nodes: nodes.store(),
        node_images: node_images.store(),
        jobs: jobs.store(),
        pods: pods.store(),
        synced_secrets: synced_secrets.store(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), EVENT_COMPONENT, &identity),
        client: client.clone(),
        versions,
        settings: settings.clone(),
        stores: stores.clone(),
        metrics,
        expectations: Expectations::default(),
    });

    // Triggers must be subscribed before the caches run.
    let node_trigger = nodes.subscribe();
    let node_trigger_for_images = nodes.subscribe();
    let node_image_trigger = node_images.subscribe();
    let caches: Vec<BoxFuture<'static, ()>> = vec![
        Box::pin(nodes.run()),
        Box::pin(node_images.run()),
        Box::pin(jobs.run()),
        Box::pin(pods.run()),
        Box::pin(synced_secrets.run()),
    ];
    let caches = futures::future::join_all(caches);

    let controllers = async {
        // Decisions about deletion and garbage collection need complete caches.
        ready(&stores.nodes, "nodes").await;
        ready(&stores.node_images, "nodeimages").await;
        ready(&stores.jobs, "imagepulljobs").await;
        ready(&stores.pods, "pods").await;
        ready(&stores.synced_secrets, "synced-secrets").await;
        info!("caches synced; controllers running");

        let node_controller = Controller::for_stream(node_trigger, stores.nodes.clone())
            .with_config(Config::default().concurrency(settings.nodeimage_workers))
            .run(
                measured(nodeimage::NODE_CONTROLLER, nodeimage::reconcile_node),
                error_policy,
                ctx.clone(),
            );
        let image_resource = node_image_resource.clone();
        let node_image_controller = Controller::for_stream_with(
            node_image_trigger,
            stores.node_images.clone(),
            node_image_resource.clone(),
        )
        .watches_stream_with(
            node_trigger_for_images,
            move |node: Node| {
                node.metadata
                    .name
                    .map(|name| ObjectRef::new_with(&name, image_resource.clone()))
            },
            (),
        )
        .with_config(Config::default().concurrency(settings.nodeimage_workers))
        .run(
            measured(
                nodeimage::NODE_IMAGE_CONTROLLER,
                nodeimage::reconcile_node_image,
            ),
            error_policy,
            ctx.clone(),
        );
        futures::join!(
            drain(nodeimage::NODE_CONTROLLER, node_controller),
            drain(nodeimage::NODE_IMAGE_CONTROLLER, node_image_controller),
        );
    };
    futures::join!(caches, controllers);
}

/// The key of an object in a dynamic store, for lookups from mappers.
pub fn key_of<K>(object: &K) -> String
where
    K: Resource + Debug,
{
    format!(
        "{}/{}",
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
}
