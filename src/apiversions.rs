//! Which apps.kruise.io versions the API server serves, decided once at start-up
//! (§11.1 item 2): v1beta1 when served (OpenKruise master), else v1alpha1 (1.8/1.9).

use kube::core::{ApiResource, GroupVersionKind};

/// The group of every kruise kind.
pub const GROUP: &str = "apps.kruise.io";

/// A served version of apps.kruise.io.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KruiseVersion {
    /// OpenKruise 1.8/1.9.
    V1alpha1,
    /// OpenKruise master (1.10+).
    V1beta1,
}

impl KruiseVersion {
    /// `v1alpha1` or `v1beta1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1alpha1 => "v1alpha1",
            Self::V1beta1 => "v1beta1",
        }
    }

    /// The ApiResource for `kind` (with its `plural`) in this version.
    pub fn resource(self, kind: &str, plural: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, self.as_str(), kind),
            plural,
        )
    }
}

/// Why the served versions could not be learned.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The API server could not be asked.
    #[error("discovery of {GROUP} failed: {0}")]
    Request(#[source] kube::Error),
    /// The group is not served at all: the CRDs are not installed.
    #[error(
        "{GROUP} is not served: install the OpenKruise CRDs (kruised crds | kubectl apply -f -)"
    )]
    NotServed,
}

/// Versions served for the kinds the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedVersions {
    /// For NodeImage (and the job kinds).
    pub node_image: KruiseVersion,
    /// For ContainerRecreateRequest.
    pub container_recreate_request: KruiseVersion,
}

impl ServedVersions {
    /// Asks the API server which versions serve NodeImage and ContainerRecreateRequest.
    pub async fn discover(client: &kube::Client) -> Result<Self, DiscoveryError> {
        let group = match client
            .list_api_group_resources(&format!("{GROUP}/v1beta1"))
            .await
        {
            Ok(list) => Some(list),
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(error) => return Err(DiscoveryError::Request(error)),
        };
        let beta_has = |kind: &str| {
            group.as_ref().is_some_and(|list| {
                list.resources
                    .iter()
                    .any(|r| r.kind == kind && !r.name.contains('/'))
            })
        };
        let alpha = match client
            .list_api_group_resources(&format!("{GROUP}/v1alpha1"))
            .await
        {
            Ok(list) => Some(list),
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(error) => return Err(DiscoveryError::Request(error)),
        };
        if group.is_none() && alpha.is_none() {
            return Err(DiscoveryError::NotServed);
        }
        let pick = |kind: &str| {
            if beta_has(kind) {
                KruiseVersion::V1beta1
            } else {
                KruiseVersion::V1alpha1
            }
        };
        Ok(Self {
            node_image: pick("NodeImage"),
            container_recreate_request: pick("ContainerRecreateRequest"),
        })
    }
}
