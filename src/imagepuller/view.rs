//! A NodeImage as the puller sees it, whichever version the API server serves.
//!
//! v1alpha1 and v1beta1 differ only in `pullSecrets[].mode` (v1beta1 only), so both
//! decode into the v1beta1 spec type, and the status types are shared.

use std::collections::BTreeMap;

use kube::core::DynamicObject;

use crate::api::shared::nodeimage::NodeImageStatus;
use crate::api::v1beta1::{ImageSpec, NodeImageSpec};

/// The parts of a NodeImage the puller works from.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeImageView {
    /// The node's (and the object's) name.
    pub name: String,
    /// Object UID, for events.
    pub uid: String,
    /// The resourceVersion this view was read at.
    pub resource_version: String,
    /// `spec.images`.
    pub images: BTreeMap<String, ImageSpec>,
    /// `status`, as last written by anyone.
    pub status: Option<NodeImageStatus>,
}

/// A NodeImage that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("NodeImage {name} cannot be decoded: {reason}")]
pub struct ViewError {
    /// The object's name.
    pub name: String,
    /// What did not decode.
    pub reason: String,
}

impl NodeImageView {
    /// Decodes a watched object, taking its JSON apart rather than copying it (the agent
    /// keeps only the decoded view).
    pub fn from_object(mut object: DynamicObject) -> Result<Self, ViewError> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let error = |reason: String| ViewError {
            name: name.clone(),
            reason,
        };
        let mut take = |field: &str| {
            object
                .data
                .get_mut(field)
                .map(serde_json::Value::take)
                .filter(|value| !value.is_null())
        };
        let spec: NodeImageSpec = match take("spec") {
            None => NodeImageSpec::default(),
            Some(spec) => serde_json::from_value(spec).map_err(|e| error(format!("spec: {e}")))?,
        };
        let status = match take("status") {
            None => None,
            Some(status) => {
                Some(serde_json::from_value(status).map_err(|e| error(format!("status: {e}")))?)
            }
        };
        Ok(Self {
            uid: object.metadata.uid.unwrap_or_default(),
            resource_version: object.metadata.resource_version.unwrap_or_default(),
            images: spec.images.unwrap_or_default(),
            status,
            name,
        })
    }
}
