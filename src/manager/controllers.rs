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
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tracing::{debug, info, warn};

use super::cache::Cache;
use super::context::{Context, Settings, Stores};
use super::expectations::Expectations;
use super::metrics::ManagerMetrics;
use super::nodeimage_io::NodeImageWriteError;
use super::{crr, imagelistpulljob, imagepulljob, nodeimage};
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
    kind: &'static str,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> BoxFuture<'static, Result<Action, ReconcileError>>
where
    K: kube::Resource + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    move |object, ctx| {
        // kube's own "reconciling object" span covers only the future's creation, not its
        // polling: this one names the object on every line the reconcile logs.
        let span = tracing::info_span!(
            "reconcile",
            controller,
            kind,
            // klog's KObj form; `name` would clash with the span's own name in JSON.
            object = %match (&object.meta().namespace, &object.meta().name) {
                (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
                (None, Some(name)) => name.clone(),
                _ => String::new(),
            }
        );
        Box::pin(tracing::Instrument::instrument(
            async move {
                let start = Instant::now();
                let metrics = ctx.metrics.clone();
                let result = reconcile(object, ctx).await;
                metrics.reconciled(controller, result.is_ok(), start.elapsed());
                result
            },
            span,
        ))
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
    let list_job_resource = versions
        .node_image
        .resource("ImageListPullJob", "imagelistpulljobs");
    let crr_resource = versions
        .container_recreate_request
        .resource("ContainerRecreateRequest", "containerrecreaterequests");
    let dynamic = |name, resource: &kube::core::ApiResource| {
        Cache::new_with(
            name,
            Api::<DynamicObject>::all_with(client.clone(), resource),
            watcher::Config::default(),
            resource.clone(),
        )
    };
    let mut nodes = Cache::new(
        "nodes",
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
    );
    let mut node_images = dynamic("nodeimages", &node_image_resource);
    let mut jobs = dynamic("imagepulljobs", &job_resource);
    let mut list_jobs = dynamic("imagelistpulljobs", &list_job_resource);
    let mut crrs = dynamic("containerrecreaterequests", &crr_resource);
    let mut pods = Cache::new(
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
        list_jobs: list_jobs.store(),
        crrs: crrs.store(),
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
    let triggers = Triggers {
        nodes: nodes.subscribe(),
        nodes_for_images: nodes.subscribe(),
        node_images: node_images.subscribe(),
        node_images_for_jobs: node_images.subscribe(),
        jobs: jobs.subscribe(),
        jobs_for_images: jobs.subscribe(),
        jobs_for_lists: jobs.subscribe(),
        list_jobs: list_jobs.subscribe(),
        pods_for_jobs: pods.subscribe(),
        pods_for_crrs: pods.subscribe(),
        crrs: crrs.subscribe(),
    };
    let caches: Vec<BoxFuture<'static, ()>> = vec![
        Box::pin(nodes.run()),
        Box::pin(node_images.run()),
        Box::pin(jobs.run()),
        Box::pin(list_jobs.run()),
        Box::pin(crrs.run()),
        Box::pin(pods.run()),
        Box::pin(synced_secrets.run()),
    ];
    let caches = futures::future::join_all(caches);

    let controllers = async {
        // Decisions about deletion and garbage collection need complete caches.
        ready(&stores.nodes, "nodes").await;
        ready(&stores.node_images, "nodeimages").await;
        ready(&stores.jobs, "imagepulljobs").await;
        ready(&stores.list_jobs, "imagelistpulljobs").await;
        ready(&stores.crrs, "containerrecreaterequests").await;
        ready(&stores.pods, "pods").await;
        ready(&stores.synced_secrets, "synced-secrets").await;
        info!("caches synced; controllers running");
        let resources = Resources {
            node_image: node_image_resource,
            job: job_resource,
            list_job: list_job_resource,
            crr: crr_resource,
        };
        run_controllers(ctx, stores, triggers, resources, &settings).await;
    };
    futures::join!(caches, controllers);
}

type Trigger<K> = futures::stream::BoxStream<'static, Result<K, watcher::Error>>;

/// The trigger streams, one per (kind, consumer).
struct Triggers {
    nodes: Trigger<Node>,
    nodes_for_images: Trigger<Node>,
    node_images: Trigger<DynamicObject>,
    node_images_for_jobs: Trigger<DynamicObject>,
    jobs: Trigger<DynamicObject>,
    jobs_for_images: Trigger<DynamicObject>,
    jobs_for_lists: Trigger<DynamicObject>,
    list_jobs: Trigger<DynamicObject>,
    pods_for_jobs: Trigger<Pod>,
    pods_for_crrs: Trigger<Pod>,
    crrs: Trigger<DynamicObject>,
}

struct Resources {
    node_image: ApiResource,
    job: ApiResource,
    list_job: ApiResource,
    crr: ApiResource,
}

async fn run_controllers(
    ctx: Arc<Context>,
    stores: Stores,
    triggers: Triggers,
    resources: Resources,
    settings: &Settings,
) {
    let Resources {
        node_image: node_image_resource,
        job: job_resource,
        list_job: list_job_resource,
        crr: crr_resource,
    } = resources;

    let node_controller = Controller::for_stream(triggers.nodes, stores.nodes.clone())
        .with_config(Config::default().concurrency(settings.nodeimage_workers))
        .run(
            measured(
                nodeimage::NODE_CONTROLLER,
                "Node",
                nodeimage::reconcile_node,
            ),
            error_policy,
            ctx.clone(),
        );

    let image_resource = node_image_resource.clone();
    let node_image_controller = Controller::for_stream_with(
        triggers.node_images,
        stores.node_images.clone(),
        node_image_resource.clone(),
    )
    .watches_stream_with(
        triggers.nodes_for_images,
        move |node: Node| {
            node.metadata
                .name
                .map(|name| ObjectRef::new_with(&name, image_resource.clone()))
        },
        (),
    )
    .watches_stream_with(
        triggers.jobs_for_images,
        {
            let stores = stores.clone();
            let node_image_resource = node_image_resource.clone();
            let job_resource = job_resource.clone();
            // Only a job that is gone (or going) frees tags: map it to the NodeImages
            // holding them.
            move |job: DynamicObject| {
                let live = stores
                    .jobs
                    .get(&ObjectRef::from_obj_with(&job, job_resource.clone()))
                    .is_some_and(|j| j.metadata.deletion_timestamp.is_none());
                if live {
                    return Vec::new();
                }
                let uid = job.metadata.uid.clone().unwrap_or_default();
                stores
                    .node_images
                    .state()
                    .into_iter()
                    .filter(|ni| owned_by(ni, &uid))
                    .filter_map(|ni| {
                        ni.metadata
                            .name
                            .as_ref()
                            .map(|n| ObjectRef::new_with(n, node_image_resource.clone()))
                    })
                    .collect::<Vec<_>>()
            }
        },
        job_resource.clone(),
    )
    .with_config(Config::default().concurrency(settings.nodeimage_workers))
    .run(
        measured(
            nodeimage::NODE_IMAGE_CONTROLLER,
            "NodeImage",
            nodeimage::reconcile_node_image,
        ),
        error_policy,
        ctx.clone(),
    );

    let seen_images = std::sync::Mutex::new(std::collections::HashMap::<String, u64>::new());
    let job_controller =
        Controller::for_stream_with(triggers.jobs, stores.jobs.clone(), job_resource.clone())
            .watches_stream_with(
                triggers.node_images_for_jobs,
                {
                    let stores = stores.clone();
                    let job_resource = job_resource.clone();
                    let node_image_resource = node_image_resource.clone();
                    move |node_image: DynamicObject| {
                        let name = node_image.metadata.name.clone().unwrap_or_default();
                        let exists = stores
                            .node_images
                            .get(&ObjectRef::new_with(&name, node_image_resource.clone()))
                            .is_some();
                        let fingerprint = labels_fingerprint(&node_image);
                        let changed = {
                            let mut seen = seen_images.lock().unwrap_or_else(|e| e.into_inner());
                            if exists {
                                seen.insert(name, fingerprint) != Some(fingerprint)
                            } else {
                                seen.remove(&name);
                                true
                            }
                        };
                        // A new, relabelled or vanished node can change every job's nodes.
                        let jobs: Vec<(String, String)> = if changed {
                            stores
                                .jobs
                                .state()
                                .iter()
                                .map(|j| {
                                    (
                                        key_namespace(j),
                                        j.metadata.name.clone().unwrap_or_default(),
                                    )
                                })
                                .collect()
                        } else {
                            imagepulljob::owning_jobs(&node_image)
                        };
                        imagepulljob::job_refs(jobs, &job_resource)
                    }
                },
                node_image_resource.clone(),
            )
            .watches_stream_with(
                triggers.pods_for_jobs,
                {
                    let stores = stores.clone();
                    let job_resource = job_resource.clone();
                    move |pod: Pod| {
                        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                        let jobs: Vec<(String, String)> = stores
                            .jobs
                            .state()
                            .iter()
                            .filter(|j| j.metadata.namespace.as_deref() == Some(namespace.as_str()))
                            .filter(|j| !j.data["spec"]["podSelector"].is_null())
                            .map(|j| {
                                (
                                    namespace.clone(),
                                    j.metadata.name.clone().unwrap_or_default(),
                                )
                            })
                            .collect();
                        imagepulljob::job_refs(jobs, &job_resource)
                    }
                },
                (),
            )
            .reconcile_all_on(tick(imagepulljob::RESYNC))
            .with_config(
                Config::default()
                    .concurrency(settings.imagepulljob_workers)
                    .debounce(Duration::from_millis(100)),
            )
            .run(
                measured(
                    imagepulljob::CONTROLLER,
                    "ImagePullJob",
                    imagepulljob::reconcile,
                ),
                error_policy,
                ctx.clone(),
            );

    let list_job_controller = Controller::for_stream_with(
        triggers.list_jobs,
        stores.list_jobs.clone(),
        list_job_resource.clone(),
    )
    .owns_stream_with(triggers.jobs_for_lists, job_resource.clone())
    .reconcile_all_on(tick(imagepulljob::RESYNC))
    .with_config(
        Config::default()
            .concurrency(settings.imagepulljob_workers)
            .debounce(Duration::from_millis(100)),
    )
    .run(
        measured(
            imagelistpulljob::CONTROLLER,
            "ImageListPullJob",
            imagelistpulljob::reconcile,
        ),
        error_policy,
        ctx.clone(),
    );

    let crr_controller =
        Controller::for_stream_with(triggers.crrs, stores.crrs.clone(), crr_resource.clone())
            .watches_stream_with(
                triggers.pods_for_crrs,
                {
                    let stores = stores.clone();
                    let crr_resource = crr_resource.clone();
                    move |pod: Pod| {
                        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        stores
                            .crrs
                            .state()
                            .iter()
                            .filter(|c| c.metadata.namespace.as_deref() == Some(namespace.as_str()))
                            .filter(|c| c.data["spec"]["podName"] == name.as_str())
                            .map(|c| {
                                ObjectRef::new_with(
                                    c.metadata.name.as_deref().unwrap_or_default(),
                                    crr_resource.clone(),
                                )
                                .within(&namespace)
                            })
                            .collect::<Vec<_>>()
                    }
                },
                (),
            )
            .with_config(Config::default().concurrency(settings.crr_workers))
            .run(
                measured(crr::CONTROLLER, "ContainerRecreateRequest", crr::reconcile),
                error_policy,
                ctx.clone(),
            );

    futures::join!(
        drain(nodeimage::NODE_CONTROLLER, node_controller),
        drain(nodeimage::NODE_IMAGE_CONTROLLER, node_image_controller),
        drain(imagepulljob::CONTROLLER, job_controller),
        drain(imagelistpulljob::CONTROLLER, list_job_controller),
        drain(crr::CONTROLLER, crr_controller),
    );
}

/// A stream that yields every `period` (the first after one period).
fn tick(period: Duration) -> impl futures::Stream<Item = ()> + Send + 'static {
    tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + period,
        period,
    ))
    .map(|_| ())
}

fn key_namespace(object: &DynamicObject) -> String {
    object.metadata.namespace.clone().unwrap_or_default()
}

/// Whether any tag of a NodeImage names `uid` among its owners.
fn owned_by(node_image: &DynamicObject, uid: &str) -> bool {
    node_image.data["spec"]["images"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .flat_map(|image| image["tags"].as_array().into_iter().flatten())
        .flat_map(|tag| tag["ownerReferences"].as_array().into_iter().flatten())
        .any(|owner| owner["uid"] == uid)
}

/// A hash of a NodeImage's labels, to tell new or relabelled nodes from status updates.
fn labels_fingerprint(object: &DynamicObject) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut hasher = DefaultHasher::new();
    for (k, v) in object.metadata.labels.iter().flatten() {
        hasher.write(k.as_bytes());
        hasher.write_u8(0);
        hasher.write(v.as_bytes());
        hasher.write_u8(0);
    }
    hasher.finish()
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
