//! Reading and writing NodeImages in whichever version is served, with optimistic
//! concurrency: every write is a `PUT` of a freshly read object carrying its
//! resourceVersion, retried on conflict after reading again. Two writers (two jobs, the
//! NodeImage controller and a job, or the agent's status writes) therefore never lose
//! each other's changes (kruise bug #1517).

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use serde_json::Value;

use crate::api::shared::nodeimage::NodeImageStatus;
use crate::api::v1beta1::ImageSpec;
use crate::apiversions::KruiseVersion;
use crate::imagepuller::view::NodeImageView;

/// Conflict retries before giving up (the reconcile is then retried with back-off).
const MAX_ATTEMPTS: usize = 8;

/// Why a NodeImage write failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeImageWriteError {
    /// The API call failed.
    #[error("writing NodeImage {name}: {source}")]
    Api {
        /// The NodeImage.
        name: String,
        /// The error.
        source: kube::Error,
    },
    /// The stored object does not decode.
    #[error(transparent)]
    Undecodable(#[from] crate::imagepuller::view::ViewError),
    /// Still conflicting after every retry.
    #[error("writing NodeImage {name}: still conflicting after {MAX_ATTEMPTS} attempts")]
    Conflicts {
        /// The NodeImage.
        name: String,
    },
}

/// `spec.images` as JSON for `version` (v1alpha1 has no `pullSecrets[].mode`).
pub fn images_value(images: &BTreeMap<String, ImageSpec>, version: KruiseVersion) -> Value {
    let mut value = serde_json::to_value(images).unwrap_or(Value::Null);
    if version == KruiseVersion::V1alpha1
        && let Some(map) = value.as_object_mut()
    {
        for image in map.values_mut() {
            if let Some(secrets) = image.get_mut("pullSecrets").and_then(Value::as_array_mut) {
                for secret in secrets {
                    if let Some(secret) = secret.as_object_mut() {
                        secret.remove("mode");
                    }
                }
            }
        }
    }
    value
}

/// What a spec edit did.
pub enum Edit {
    /// Nothing to write.
    Unchanged,
    /// Write the edited object.
    Changed,
}

/// Reads `name` fresh, lets `edit` change its labels and images, and writes it back if
/// it changed, retrying from a fresh read on conflict. Returns the written object, or
/// `None` when nothing changed or the NodeImage is gone.
pub async fn edit_spec(
    api: &Api<DynamicObject>,
    version: KruiseVersion,
    name: &str,
    mut edit: impl FnMut(
        &mut BTreeMap<String, String>,
        &mut BTreeMap<String, ImageSpec>,
        &NodeImageView,
    ) -> Edit,
) -> Result<Option<DynamicObject>, NodeImageWriteError> {
    for attempt in 0..MAX_ATTEMPTS {
        let object = match api.get(name).await {
            Ok(object) => object,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(source) => {
                return Err(NodeImageWriteError::Api {
                    name: name.to_owned(),
                    source,
                });
            }
        };
        let view = NodeImageView::from_object(object.clone())?;
        if object.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let mut labels = object.metadata.labels.clone().unwrap_or_default();
        let mut images = view.images.clone();
        if let Edit::Unchanged = edit(&mut labels, &mut images, &view) {
            return Ok(None);
        }
        let mut updated = object;
        updated.metadata.labels = Some(labels);
        updated.metadata.managed_fields = None;
        let spec = updated.data.as_object_mut().map(|data| {
            data.entry("spec")
                .or_insert_with(|| Value::Object(Default::default()))
        });
        if let Some(spec) = spec {
            if !spec.is_object() {
                *spec = Value::Object(Default::default());
            }
            spec["images"] = images_value(&images, version);
        }
        match api.replace(name, &PostParams::default(), &updated).await {
            Ok(written) => return Ok(Some(written)),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tokio::time::sleep(conflict_pause(attempt)).await;
            }
            Err(source) => {
                return Err(NodeImageWriteError::Api {
                    name: name.to_owned(),
                    source,
                });
            }
        }
    }
    Err(NodeImageWriteError::Conflicts {
        name: name.to_owned(),
    })
}

/// Writes `status` onto the cached `object` (a `PUT` of the status subresource with the
/// cached resourceVersion). A conflict is returned: the caller recomputes from a fresher
/// copy rather than overwrite what the agent just wrote.
pub async fn write_status(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    status: &NodeImageStatus,
) -> Result<DynamicObject, kube::Error> {
    let mut updated = object.clone();
    updated.metadata.managed_fields = None;
    if let Some(data) = updated.data.as_object_mut() {
        data.insert(
            "status".into(),
            serde_json::to_value(status).unwrap_or(Value::Null),
        );
    }
    let name = object.metadata.name.clone().unwrap_or_default();
    api.replace_status(&name, &PostParams::default(), &updated)
        .await
}

/// client-go's `retry.DefaultBackoff`-like pause: 10 ms doubling, capped.
fn conflict_pause(attempt: usize) -> Duration {
    Duration::from_millis(10u64 << attempt.min(6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1beta1::ReferenceObject;

    #[test]
    fn v1alpha1_writes_drop_the_secret_mode() {
        let images = BTreeMap::from([(
            "nginx".to_owned(),
            ImageSpec {
                pull_secrets: Some(vec![ReferenceObject {
                    namespace: Some("kruise-daemon-config".into()),
                    name: Some("cred-abc123".into()),
                    mode: Some("batch".into()),
                }]),
                tags: vec![],
                sandbox_config: None,
            },
        )]);
        assert_eq!(
            images_value(&images, KruiseVersion::V1alpha1)["nginx"]["pullSecrets"][0],
            serde_json::json!({"namespace": "kruise-daemon-config", "name": "cred-abc123"})
        );
        assert_eq!(
            images_value(&images, KruiseVersion::V1beta1)["nginx"]["pullSecrets"][0]["mode"],
            "batch"
        );
    }
}
