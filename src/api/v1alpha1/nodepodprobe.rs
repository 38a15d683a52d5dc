//! `apps.kruise.io/v1alpha1` NodePodProbe: the probes kruise-daemon runs for PodProbeMarkers on
//! its node, and their results (spec §5.1). There is no other version.

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::api::enums::string_enum;
use crate::api::schema;
use crate::api::shared::spec_or_default;

string_enum! {
    /// Result of a probe (`ContainerProbeState.state`). The schema declares no `enum`, so the
    /// field is a `String`.
    pub enum ProbeState {
        /// The probe succeeded.
        Succeeded,
        /// The probe failed (or the container is not running).
        Failed,
        /// No result yet for the current container.
        Unknown,
    }
}

/// NodePodProbeSpec defines the desired state of NodePodProbe.
///
/// The NodePodProbe is cluster-scoped and named like its node.
#[derive(CustomResource, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "NodePodProbe",
    plural = "nodepodprobes",
    status = "NodePodProbeStatus",
    derive = "PartialEq",
    doc = "NodePodProbe is the Schema for the NodePodProbe API"
)]
#[serde(rename_all = "camelCase")]
pub struct NodePodProbeSpec {
    /// The pods on this node and the probes to run in them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_probes: Option<Vec<PodProbe>>,
}

/// The fields of [`NodePodProbeSpec`], read through [`spec_or_default`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodePodProbeSpecFields {
    pod_probes: Option<Vec<PodProbe>>,
}

impl From<NodePodProbeSpecFields> for NodePodProbeSpec {
    fn from(NodePodProbeSpecFields { pod_probes }: NodePodProbeSpecFields) -> Self {
        Self { pod_probes }
    }
}

impl<'de> Deserialize<'de> for NodePodProbeSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        spec_or_default::<D, NodePodProbeSpecFields, Self>(deserializer)
    }
}

/// A pod on this node and the probes to run in its containers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodProbe {
    /// Pod name.
    pub name: String,

    /// Pod namespace.
    pub namespace: String,

    /// Pod UID.
    pub uid: String,

    /// Pod IP (`pod.status.podIP`), the target of HTTP and TCP probes without `host`.
    /// The JSON key is `IP`.
    #[serde(rename = "IP")]
    pub ip: String,

    /// Custom container probes; the results are reported in the status and mapped onto the Pod by
    /// the manager.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<Vec<ContainerProbe>>,
}

/// One probe of one container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProbe {
    /// Name is `<podProbeMarker name>#<probe name>`.
    pub name: String,

    /// Container name.
    pub container_name: String,

    /// Container probe spec: a core/v1 Probe (handler, timing and thresholds).
    #[schemars(transform = schema::probe)]
    pub probe: Probe,
}

/// NodePodProbeStatus defines the observed state of NodePodProbe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePodProbeStatus {
    /// Pod probe results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_probe_statuses: Option<Vec<PodProbeStatus>>,
}

/// The probe results of one pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodProbeStatus {
    /// Pod name.
    pub name: String,

    /// Pod namespace.
    pub namespace: String,

    /// Pod UID.
    pub uid: String,

    /// Pod probe results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_states: Option<Vec<ContainerProbeState>>,
}

/// The result of one probe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProbeState {
    /// Name is `<podProbeMarker name>#<probe name>`.
    pub name: String,

    /// Container probe state: Succeeded, Failed or Unknown.
    pub state: String,

    /// Last time we probed the condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,

    /// Last time the condition transitioned from one status to another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// If the probe succeeded, Message records the return result of Probe; otherwise Probe's
    /// error message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
