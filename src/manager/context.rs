//! What every controller shares: the client, the versions to speak, the settings, the
//! caches' stores, the event recorder and the metrics.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Secret};
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::reflector::Store;

use super::expectations::Expectations;
use super::metrics::ManagerMetrics;
use crate::apiversions::ServedVersions;
use crate::events::{EventType, Recorder};

/// Tunables of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node Ready this long before its NodeImage is created (kruise: 30 s).
    pub nodeimage_creation_delay: Duration,
    /// A tag without a same-version status this long after `createdAt` is failed
    /// (kruise master: 10 min).
    pub nodeimage_response_timeout: Duration,
    /// Added to TTLs of `Always` jobs' tags (kruise: 300 s).
    pub default_ttl_for_always: i32,
    /// Where pull secrets are copied for the agents.
    pub daemon_config_namespace: String,
    /// A CRR with no phase this long after creation is completed (kruise: 60 s).
    pub crr_response_timeout: Duration,
    /// Parallel reconciles of NodeImages (and Nodes).
    pub nodeimage_workers: u16,
    /// Parallel reconciles of ImagePullJobs and ImageListPullJobs.
    pub imagepulljob_workers: u16,
    /// Parallel reconciles of ContainerRecreateRequests.
    pub crr_workers: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            nodeimage_creation_delay: Duration::from_secs(30),
            nodeimage_response_timeout: Duration::from_secs(600),
            default_ttl_for_always: 300,
            daemon_config_namespace: crate::api::DAEMON_CONFIG_NAMESPACE.to_owned(),
            crr_response_timeout: Duration::from_secs(60),
            nodeimage_workers: 3,
            imagepulljob_workers: 3,
            crr_workers: 3,
        }
    }
}

/// The caches' stores.
#[derive(Clone)]
pub struct Stores {
    /// Nodes.
    pub nodes: Store<Node>,
    /// NodeImages.
    pub node_images: Store<DynamicObject>,
    /// ImagePullJobs.
    pub jobs: Store<DynamicObject>,
    /// ImageListPullJobs.
    pub list_jobs: Store<DynamicObject>,
    /// ContainerRecreateRequests.
    pub crrs: Store<DynamicObject>,
    /// Pods (for podSelector jobs and CRRs).
    pub pods: Store<Pod>,
    /// Secrets in the daemon config namespace (the synced copies).
    pub synced_secrets: Store<Secret>,
}

/// Shared by every controller.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Versions to speak.
    pub versions: ServedVersions,
    /// Tunables.
    pub settings: Settings,
    /// Lookups.
    pub stores: Stores,
    /// Events (component `kruised-manager`).
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<ManagerMetrics>,
    /// Writes not yet seen in the caches.
    pub expectations: Expectations,
}

impl Context {
    /// NodeImage in the served version.
    pub fn node_image_resource(&self) -> ApiResource {
        self.versions.node_image.resource("NodeImage", "nodeimages")
    }

    /// ImagePullJob in the served version (same as NodeImage's: they ship together).
    pub fn job_resource(&self) -> ApiResource {
        self.versions
            .node_image
            .resource("ImagePullJob", "imagepulljobs")
    }

    /// ImageListPullJob in the served version.
    pub fn list_job_resource(&self) -> ApiResource {
        self.versions
            .node_image
            .resource("ImageListPullJob", "imagelistpulljobs")
    }

    /// ContainerRecreateRequest in the served version.
    pub fn crr_resource(&self) -> ApiResource {
        self.versions
            .container_recreate_request
            .resource("ContainerRecreateRequest", "containerrecreaterequests")
    }

    /// The NodeImage API.
    pub fn node_images(&self) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &self.node_image_resource())
    }

    /// The ImagePullJob API of a namespace.
    pub fn jobs(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.job_resource())
    }

    /// Records an Event and counts it.
    pub async fn event(
        &self,
        object: &ObjectReference,
        event_type: EventType,
        reason: &'static str,
        message: &str,
    ) {
        self.metrics.event(reason);
        self.recorder
            .publish(object, event_type, reason, message)
            .await;
    }
}

/// An ObjectReference to a dynamic object, for events.
pub fn reference(object: &DynamicObject, resource: &ApiResource) -> ObjectReference {
    ObjectReference {
        api_version: Some(resource.api_version.clone()),
        kind: Some(resource.kind.clone()),
        name: object.metadata.name.clone(),
        namespace: object.metadata.namespace.clone(),
        uid: object.metadata.uid.clone(),
        resource_version: object.metadata.resource_version.clone(),
        ..Default::default()
    }
}
