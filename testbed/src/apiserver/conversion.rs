//! apps.kruise.io version conversion between `v1alpha1` and `v1beta1`, as a cluster
//! running OpenKruise master does it (spec/kruise-daemon.md §4.1, §9, §11.1 item 2).
//!
//! * NodeImage, ImagePullJob and ImageListPullJob have conversion strategy `None`: the
//!   apiserver only rewrites `apiVersion` and then prunes with the target version's
//!   schema. The only schema difference is NodeImage `spec.images[*].pullSecrets[].mode`
//!   (v1beta1 only), so converting to v1alpha1 drops it.
//! * ContainerRecreateRequest uses kruise-manager's conversion webhook. v1alpha1 keeps
//!   two annotations that v1beta1 holds in status:
//!   `crr.apps.kruise.io/sync-container-statuses` (JSON list of
//!   `{name, ready, restartCount, containerID}`) ⇄ `status.containerStatusSnapshot`, and
//!   `crr.apps.kruise.io/unready-acquired` (RFC 3339) ⇄ the `status.conditions` entry
//!   `{type: PreRecreateGrace, status: "True", reason: PreRecreateGrace, message: ""}`
//!   whose `lastTransitionTime` carries the time in UTC at second precision.
//! * NodePodProbe exists only as v1alpha1.
//!
//! Promoting to v1beta1 copies the annotations into status and, like kruise's
//! `ConvertTo` (which copies `ObjectMeta` unchanged), keeps them in metadata: a
//! v1alpha1-speaking manager (1.9) writes them through the main resource, where status
//! changes are discarded, so metadata is where they must survive. v1alpha1 → v1beta1 →
//! v1alpha1 is lossless; v1beta1 → v1alpha1 → v1beta1 keeps status and gains the two
//! annotations, as on a real cluster. An annotation that does not parse (bad JSON, wrong
//! field types, a time that is not RFC 3339) is silently not promoted. In the other direction a
//! malformed status (a condition time that is not RFC 3339, a snapshot entry of the wrong
//! type) is an error: kruise's webhook cannot decode such an object, and the apiserver
//! then fails the request with 500 (see [`ConversionError::status_message`]).
//!
//! Other `status.conditions` entries, and a `PreRecreateGrace` condition that is not
//! `True`, have no v1alpha1 form and are dropped when converting to v1alpha1, as the
//! kruise conversion does.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use thiserror::Error;

use k8s_openapi::jiff::Timestamp;

/// The API group converted here.
pub const GROUP: &str = "apps.kruise.io";
/// v1alpha1 annotation holding the container status snapshot as JSON.
pub const SYNC_CONTAINER_STATUSES_ANNOTATION: &str = "crr.apps.kruise.io/sync-container-statuses";
/// v1alpha1 annotation holding the moment the pod was forced not-ready (RFC 3339).
pub const UNREADY_ACQUIRED_ANNOTATION: &str = "crr.apps.kruise.io/unready-acquired";
/// The v1beta1 condition type (and reason) recording the start of the unready grace.
pub const PRE_RECREATE_GRACE: &str = "PreRecreateGrace";

/// Why an object could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConversionError {
    /// The input is not a JSON object.
    #[error("object to convert is not a JSON object")]
    NotAnObject,
    /// The input has no string `apiVersion`.
    #[error("object to convert has no apiVersion")]
    MissingApiVersion,
    /// The input has no string `kind`.
    #[error("object to convert has no kind")]
    MissingKind,
    /// The source or target `apiVersion` is not in apps.kruise.io.
    #[error("{api_version} is not an apps.kruise.io version")]
    UnsupportedGroup {
        /// The offending apiVersion.
        api_version: String,
    },
    /// The kind is not one the apps.kruise.io conversion knows.
    #[error("kind {kind} is not converted by the apps.kruise.io conversion")]
    UnsupportedKind {
        /// The offending kind.
        kind: String,
    },
    /// The kind is not served at that version (e.g. NodePodProbe v1beta1).
    #[error("{kind} is not served as apps.kruise.io/{version}")]
    UnsupportedVersion {
        /// The kind.
        kind: String,
        /// The version asked for or found.
        version: String,
    },
    /// A field the conversion must decode is malformed; a real conversion webhook fails
    /// on such an object.
    #[error("{field}: {reason}")]
    Malformed {
        /// The JSON path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConversionError {
    /// The HTTP status the apiserver answers with when a conversion fails (an internal
    /// error: kube wraps webhook failures with `NewInternalError`).
    pub fn status_code(&self) -> u16 {
        500
    }

    /// The `Status.message` kube returns when the conversion webhook for
    /// `from_api_version`/`kind` fails with this error.
    pub fn status_message(&self, from_api_version: &str, kind: &str) -> String {
        format!(
            "Internal error occurred: conversion webhook for {from_api_version}, Kind={kind} failed: {self}"
        )
    }
}

/// The apps.kruise.io versions served for `kind`, oldest first.
pub fn served_versions(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "NodeImage" | "ImagePullJob" | "ImageListPullJob" | "ContainerRecreateRequest" => {
            Some(&["v1alpha1", "v1beta1"])
        }
        "NodePodProbe" => Some(&["v1alpha1"]),
        _ => None,
    }
}

/// Converts an apps.kruise.io object to `to_api_version` (e.g. `apps.kruise.io/v1alpha1`).
/// Converting to the version the object already has returns it unchanged.
pub fn convert(object: Value, to_api_version: &str) -> Result<Value, ConversionError> {
    let Value::Object(mut object) = object else {
        return Err(ConversionError::NotAnObject);
    };
    let from_api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(ConversionError::MissingApiVersion)?
        .to_string();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(ConversionError::MissingKind)?
        .to_string();
    let from = version_of(&from_api_version)?;
    let to = version_of(to_api_version)?;
    let versions = served_versions(&kind)
        .ok_or_else(|| ConversionError::UnsupportedKind { kind: kind.clone() })?;
    for version in [from, to] {
        if !versions.contains(&version) {
            return Err(ConversionError::UnsupportedVersion {
                kind: kind.clone(),
                version: version.to_string(),
            });
        }
    }
    if from == to {
        return Ok(Value::Object(object));
    }
    object.insert(
        "apiVersion".to_string(),
        Value::String(to_api_version.to_string()),
    );
    match (kind.as_str(), to) {
        ("NodeImage", "v1alpha1") => drop_pull_secret_modes(&mut object),
        ("ContainerRecreateRequest", "v1beta1") => promote_crr(&mut object),
        ("ContainerRecreateRequest", "v1alpha1") => demote_crr(&mut object)?,
        // ImagePullJob and ImageListPullJob schemas are identical in both versions.
        _ => {}
    }
    Ok(Value::Object(object))
}

fn version_of(api_version: &str) -> Result<&str, ConversionError> {
    match api_version.split_once('/') {
        Some((GROUP, version)) => Ok(version),
        _ => Err(ConversionError::UnsupportedGroup {
            api_version: api_version.to_string(),
        }),
    }
}

/// `ReferenceObject.mode` exists only in v1beta1; the v1alpha1 schema prunes it.
fn drop_pull_secret_modes(object: &mut Map<String, Value>) {
    let Some(images) = object
        .get_mut("spec")
        .and_then(|s| s.get_mut("images"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for image in images.values_mut() {
        if let Some(secrets) = image.get_mut("pullSecrets").and_then(Value::as_array_mut) {
            for secret in secrets.iter_mut().filter_map(Value::as_object_mut) {
                secret.remove("mode");
            }
        }
    }
}

/// One snapshot entry as kruise's `ContainerRecreateRequestSyncContainerStatus` decodes
/// it: missing or `null` fields take zero values, wrong types fail.
#[derive(Debug, Deserialize)]
struct SyncContainerStatus {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    ready: Option<bool>,
    #[serde(default, rename = "restartCount")]
    restart_count: Option<i32>,
    #[serde(default, rename = "containerID")]
    container_id: Option<String>,
}

impl SyncContainerStatus {
    /// The entry as Go's `json.Marshal` writes it (field order kept, empty ID omitted).
    fn to_json(&self) -> Value {
        let mut entry = Map::new();
        entry.insert(
            "name".to_string(),
            Value::String(self.name.clone().unwrap_or_default()),
        );
        entry.insert(
            "ready".to_string(),
            Value::Bool(self.ready.unwrap_or(false)),
        );
        entry.insert(
            "restartCount".to_string(),
            Value::from(self.restart_count.unwrap_or(0)),
        );
        if let Some(id) = self.container_id.as_deref().filter(|id| !id.is_empty()) {
            entry.insert("containerID".to_string(), Value::String(id.to_string()));
        }
        Value::Object(entry)
    }
}

/// Parses a time like Go's `time.Parse(time.RFC3339, s)` and returns it as
/// `metav1.Time` serialises: UTC, whole seconds, `Z`.
fn normalize_rfc3339(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    // Go's RFC 3339 layout: upper-case T and Z, seconds required, optional fraction.
    let shape_ok = bytes.len() >= 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
        && !text.contains(['t', 'z', ' ']);
    if !shape_ok {
        return None;
    }
    let timestamp: Timestamp = text.parse().ok()?;
    Some(format!("{timestamp:.0}"))
}

fn annotations_mut(object: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    object
        .get_mut("metadata")?
        .get_mut("annotations")?
        .as_object_mut()
}

/// v1alpha1 → v1beta1: annotations that parse are copied into status.
fn promote_crr(object: &mut Map<String, Value>) {
    let mut snapshot = None;
    let mut acquired = None;
    if let Some(annotations) = annotations_mut(object) {
        let text = |key: &str| {
            annotations
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let sync = text(SYNC_CONTAINER_STATUSES_ANNOTATION);
        let unready = text(UNREADY_ACQUIRED_ANNOTATION);
        if let Some(raw) = sync
            && let Ok(entries) = serde_json::from_str::<Vec<SyncContainerStatus>>(&raw)
        {
            snapshot = Some(Value::Array(
                entries.iter().map(SyncContainerStatus::to_json).collect(),
            ));
        }
        if let Some(raw) = unready
            && let Some(time) = normalize_rfc3339(&raw)
        {
            acquired = Some(time);
        }
    }
    // v1alpha1 has neither field; a typed decode would have dropped stray copies.
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        status.remove("containerStatusSnapshot");
        status.remove("conditions");
    }
    if snapshot.is_none() && acquired.is_none() {
        return;
    }
    let status = object
        .entry("status")
        .or_insert_with(|| Value::Object(Map::new()));
    if !status.is_object() {
        *status = Value::Object(Map::new());
    }
    let status = status.as_object_mut().expect("status is an object");
    if let Some(snapshot) = snapshot {
        status.insert("containerStatusSnapshot".to_string(), snapshot);
    }
    if let Some(time) = acquired {
        status.insert(
            "conditions".to_string(),
            json!([{
                "type": PRE_RECREATE_GRACE,
                "status": "True",
                "lastTransitionTime": time,
                "reason": PRE_RECREATE_GRACE,
                "message": "",
            }]),
        );
    }
}

/// v1beta1 → v1alpha1: snapshot and a true `PreRecreateGrace` condition move into the
/// annotations; status keeps only what v1alpha1 declares.
fn demote_crr(object: &mut Map<String, Value>) -> Result<(), ConversionError> {
    let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let snapshot = status.remove("containerStatusSnapshot");
    let conditions = status.remove("conditions");
    let emptied = status.is_empty() && (snapshot.is_some() || conditions.is_some());

    let mut annotations = Vec::new();
    if let Some(snapshot) = snapshot.filter(|s| !s.is_null()) {
        let entries: Vec<SyncContainerStatus> =
            serde_json::from_value(snapshot).map_err(|e| ConversionError::Malformed {
                field: "status.containerStatusSnapshot".to_string(),
                reason: e.to_string(),
            })?;
        let entries: Vec<Value> = entries.iter().map(SyncContainerStatus::to_json).collect();
        annotations.push((
            SYNC_CONTAINER_STATUSES_ANNOTATION,
            Value::Array(entries).to_string(),
        ));
    }
    if let Some(time) = acquired_time(conditions.as_ref())? {
        annotations.push((UNREADY_ACQUIRED_ANNOTATION, time));
    }

    if emptied {
        object.remove("status");
    }
    if annotations.is_empty() {
        return Ok(());
    }
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return Err(ConversionError::Malformed {
            field: "metadata".to_string(),
            reason: "not an object".to_string(),
        });
    };
    let existing = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !existing.is_object() {
        *existing = Value::Object(Map::new());
    }
    let existing = existing.as_object_mut().expect("annotations is an object");
    for (key, value) in annotations {
        existing.insert(key.to_string(), Value::String(value));
    }
    Ok(())
}

/// The `lastTransitionTime` of the first `PreRecreateGrace=True` condition. Every
/// condition's time must decode as `metav1.Time`, or the webhook would fail.
fn acquired_time(conditions: Option<&Value>) -> Result<Option<String>, ConversionError> {
    let Some(conditions) = conditions.filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    let malformed = |field: String, reason: &str| ConversionError::Malformed {
        field,
        reason: reason.to_string(),
    };
    let list = conditions
        .as_array()
        .ok_or_else(|| malformed("status.conditions".to_string(), "not a list"))?;
    let mut found = None;
    for (index, condition) in list.iter().enumerate() {
        let field = format!("status.conditions[{index}].lastTransitionTime");
        let time = match condition.get("lastTransitionTime") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(
                normalize_rfc3339(text).ok_or_else(|| malformed(field, "not an RFC 3339 time"))?,
            ),
            Some(_) => return Err(malformed(field, "not a string")),
        };
        let is_grace = condition.get("type").and_then(Value::as_str) == Some(PRE_RECREATE_GRACE)
            && condition.get("status").and_then(Value::as_str) == Some("True");
        if is_grace && found.is_none() {
            // A missing time is Go's zero time.
            found = Some(time.unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string()));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::schema::{StructuralSchema, crd_version_schema};

    fn alpha_crr() -> Value {
        json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "ContainerRecreateRequest",
            "metadata": {
                "name": "crr-1",
                "namespace": "default",
                "labels": {"crr.apps.kruise.io/node-name": "node-1"},
                "annotations": {
                    "keep": "me",
                    SYNC_CONTAINER_STATUSES_ANNOTATION:
                        r#"[{"name":"app","ready":true,"restartCount":1,"containerID":"containerd://abc"}]"#,
                    UNREADY_ACQUIRED_ANNOTATION: "2024-05-01T10:00:00Z"
                }
            },
            "spec": {"podName": "pod-1", "containers": [{"name": "app"}],
                     "strategy": {"unreadyGracePeriodSeconds": 10}},
            "status": {"phase": "Recreating"}
        })
    }

    fn beta_crr() -> Value {
        json!({
            "apiVersion": "apps.kruise.io/v1beta1",
            "kind": "ContainerRecreateRequest",
            "metadata": {"name": "crr-1", "namespace": "default"},
            "spec": {"podName": "pod-1", "containers": [{"name": "app"}]},
            "status": {
                "phase": "Recreating",
                "containerStatusSnapshot": [
                    {"name": "app", "ready": true, "restartCount": 2, "containerID": "containerd://new"},
                    {"name": "sidecar", "ready": false, "restartCount": 0}
                ],
                "conditions": [{
                    "type": PRE_RECREATE_GRACE, "status": "True",
                    "lastTransitionTime": "2024-05-01T10:00:00Z",
                    "reason": PRE_RECREATE_GRACE, "message": ""
                }]
            }
        })
    }

    fn crd_schema(file: &str, version: &str) -> StructuralSchema {
        let path = format!(
            "{}/../../shared/reference/crds/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let crd: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).expect("reference CRD")).unwrap();
        StructuralSchema::new(crd_version_schema(&crd, version).unwrap())
    }

    #[test]
    fn crr_v1alpha1_annotations_become_v1beta1_status() {
        let beta = convert(alpha_crr(), "apps.kruise.io/v1beta1").unwrap();
        assert_eq!(beta["apiVersion"], "apps.kruise.io/v1beta1");
        assert_eq!(
            beta["metadata"]["annotations"],
            alpha_crr()["metadata"]["annotations"]
        );
        assert_eq!(
            beta["status"]["containerStatusSnapshot"],
            json!([{"name": "app", "ready": true, "restartCount": 1, "containerID": "containerd://abc"}])
        );
        assert_eq!(
            beta["status"]["conditions"],
            json!([{"type": "PreRecreateGrace", "status": "True",
                    "lastTransitionTime": "2024-05-01T10:00:00Z",
                    "reason": "PreRecreateGrace", "message": ""}])
        );
        assert_eq!(beta["status"]["phase"], "Recreating");
    }

    #[test]
    fn crr_v1beta1_status_becomes_v1alpha1_annotations() {
        let alpha = convert(beta_crr(), "apps.kruise.io/v1alpha1").unwrap();
        assert_eq!(alpha["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(alpha["status"], json!({"phase": "Recreating"}));
        assert_eq!(
            alpha["metadata"]["annotations"][SYNC_CONTAINER_STATUSES_ANNOTATION],
            r#"[{"name":"app","ready":true,"restartCount":2,"containerID":"containerd://new"},{"name":"sidecar","ready":false,"restartCount":0}]"#
        );
        assert_eq!(
            alpha["metadata"]["annotations"][UNREADY_ACQUIRED_ANNOTATION],
            "2024-05-01T10:00:00Z"
        );
    }

    #[test]
    fn crr_round_trip_alpha_beta_alpha_is_lossless() {
        let original = alpha_crr();
        let beta = convert(original.clone(), "apps.kruise.io/v1beta1").unwrap();
        let back = convert(beta, "apps.kruise.io/v1alpha1").unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn crr_round_trip_beta_alpha_beta_keeps_status_and_gains_the_annotations() {
        let original = beta_crr();
        let alpha = convert(original.clone(), "apps.kruise.io/v1alpha1").unwrap();
        let back = convert(alpha.clone(), "apps.kruise.io/v1beta1").unwrap();
        assert_eq!(back["status"], original["status"]);
        assert_eq!(back["spec"], original["spec"]);
        assert_eq!(
            back["metadata"]["annotations"],
            alpha["metadata"]["annotations"]
        );
    }

    #[test]
    fn crr_without_status_round_trips_without_inventing_one() {
        let mut alpha = alpha_crr();
        alpha.as_object_mut().unwrap().remove("status");
        let beta = convert(alpha.clone(), "apps.kruise.io/v1beta1").unwrap();
        assert!(beta["status"].get("containerStatusSnapshot").is_some());
        assert_eq!(convert(beta, "apps.kruise.io/v1alpha1").unwrap(), alpha);
    }

    #[test]
    fn crr_without_extras_converts_by_api_version_only() {
        let mut alpha = alpha_crr();
        alpha["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        let beta = convert(alpha.clone(), "apps.kruise.io/v1beta1").unwrap();
        assert_eq!(beta["status"], json!({"phase": "Recreating"}));
        assert!(beta["metadata"].get("annotations").is_none());
        assert_eq!(convert(beta, "apps.kruise.io/v1alpha1").unwrap(), alpha);
    }

    #[test]
    fn unready_acquired_time_is_normalised_to_utc_seconds() {
        let mut alpha = alpha_crr();
        alpha["metadata"]["annotations"][UNREADY_ACQUIRED_ANNOTATION] =
            json!("2024-05-01T12:00:00.750+02:00");
        let beta = convert(alpha, "apps.kruise.io/v1beta1").unwrap();
        assert_eq!(
            beta["status"]["conditions"][0]["lastTransitionTime"],
            "2024-05-01T10:00:00Z"
        );
        let mut beta = beta_crr();
        beta["status"]["conditions"][0]["lastTransitionTime"] = json!("2024-05-01T10:00:00.9Z");
        let alpha = convert(beta, "apps.kruise.io/v1alpha1").unwrap();
        assert_eq!(
            alpha["metadata"]["annotations"][UNREADY_ACQUIRED_ANNOTATION],
            "2024-05-01T10:00:00Z"
        );
    }

    #[test]
    fn malformed_sync_annotation_is_kept_and_not_promoted() {
        let mut alpha = alpha_crr();
        alpha["metadata"]["annotations"][SYNC_CONTAINER_STATUSES_ANNOTATION] = json!("[{oops");
        let beta = convert(alpha.clone(), "apps.kruise.io/v1beta1").unwrap();
        assert!(beta["status"].get("containerStatusSnapshot").is_none());
        assert_eq!(
            beta["metadata"]["annotations"][SYNC_CONTAINER_STATUSES_ANNOTATION],
            "[{oops"
        );
        // The unready time still promotes, and the way back is lossless.
        assert!(beta["status"].get("conditions").is_some());
        assert_eq!(convert(beta, "apps.kruise.io/v1alpha1").unwrap(), alpha);
    }

    #[test]
    fn wrongly_typed_sync_entry_is_not_promoted() {
        let mut alpha = alpha_crr();
        alpha["metadata"]["annotations"][SYNC_CONTAINER_STATUSES_ANNOTATION] =
            json!(r#"[{"name":"app","ready":"yes","restartCount":1}]"#);
        let beta = convert(alpha, "apps.kruise.io/v1beta1").unwrap();
        assert!(beta["status"].get("containerStatusSnapshot").is_none());
    }

    #[test]
    fn malformed_unready_time_is_kept_and_not_promoted() {
        let mut alpha = alpha_crr();
        alpha["metadata"]["annotations"][UNREADY_ACQUIRED_ANNOTATION] = json!("yesterday");
        let beta = convert(alpha, "apps.kruise.io/v1beta1").unwrap();
        assert!(beta["status"].get("conditions").is_none());
        assert_eq!(
            beta["metadata"]["annotations"][UNREADY_ACQUIRED_ANNOTATION],
            "yesterday"
        );
    }

    #[test]
    fn false_pre_recreate_grace_condition_is_not_demoted() {
        let mut beta = beta_crr();
        beta["status"]["conditions"][0]["status"] = json!("False");
        let alpha = convert(beta, "apps.kruise.io/v1alpha1").unwrap();
        assert!(
            alpha["metadata"]["annotations"]
                .get(UNREADY_ACQUIRED_ANNOTATION)
                .is_none()
        );
        assert!(alpha["status"].get("conditions").is_none());
    }

    #[test]
    fn malformed_condition_time_fails_like_a_webhook() {
        let mut beta = beta_crr();
        beta["status"]["conditions"][0]["lastTransitionTime"] = json!("soon");
        let err = convert(beta, "apps.kruise.io/v1alpha1").unwrap_err();
        assert_eq!(err.status_code(), 500);
        assert_eq!(
            err.status_message("apps.kruise.io/v1beta1", "ContainerRecreateRequest"),
            "Internal error occurred: conversion webhook for apps.kruise.io/v1beta1, \
             Kind=ContainerRecreateRequest failed: status.conditions[0].lastTransitionTime: not \
             an RFC 3339 time"
        );
    }

    #[test]
    fn converted_crrs_validate_against_the_target_schemas() {
        let beta = convert(alpha_crr(), "apps.kruise.io/v1beta1").unwrap();
        let errors =
            crd_schema("apps.kruise.io_containerrecreaterequests.yaml", "v1beta1").validate(&beta);
        assert!(errors.is_empty(), "{errors:?}");
        let alpha = convert(beta_crr(), "apps.kruise.io/v1alpha1").unwrap();
        let errors = crd_schema("apps.kruise.io_containerrecreaterequests.yaml", "v1alpha1")
            .validate(&alpha);
        assert!(errors.is_empty(), "{errors:?}");
    }

    fn node_image(api_version: &str) -> Value {
        json!({
            "apiVersion": api_version,
            "kind": "NodeImage",
            "metadata": {"name": "node-1"},
            "spec": {"images": {"nginx": {
                "pullSecrets": [{"namespace": "kruise-daemon-config", "name": "s-abc123", "mode": "batch"}],
                "tags": [{"tag": "1.25", "version": 1}]
            }}},
            "status": {"desired": 1}
        })
    }

    #[test]
    fn node_image_to_v1alpha1_drops_pull_secret_mode() {
        let alpha = convert(
            node_image("apps.kruise.io/v1beta1"),
            "apps.kruise.io/v1alpha1",
        )
        .unwrap();
        assert_eq!(alpha["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(
            alpha["spec"]["images"]["nginx"]["pullSecrets"],
            json!([{"namespace": "kruise-daemon-config", "name": "s-abc123"}])
        );
        // The same as pruning with the v1alpha1 schema.
        let mut pruned = node_image("apps.kruise.io/v1alpha1");
        crd_schema("apps.kruise.io_nodeimages.yaml", "v1alpha1").prune(&mut pruned);
        assert_eq!(alpha, pruned);
    }

    #[test]
    fn node_image_to_v1beta1_keeps_everything() {
        let mut expected = node_image("apps.kruise.io/v1alpha1");
        expected["apiVersion"] = json!("apps.kruise.io/v1beta1");
        let beta = convert(
            node_image("apps.kruise.io/v1alpha1"),
            "apps.kruise.io/v1beta1",
        )
        .unwrap();
        assert_eq!(beta, expected);
    }

    #[test]
    fn image_pull_jobs_convert_by_api_version_only() {
        for kind in ["ImagePullJob", "ImageListPullJob"] {
            let job = json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": kind,
                             "metadata": {"name": "j"}, "spec": {"image": "nginx:1"}});
            let alpha = convert(job.clone(), "apps.kruise.io/v1alpha1").unwrap();
            let mut expected = job;
            expected["apiVersion"] = json!("apps.kruise.io/v1alpha1");
            assert_eq!(alpha, expected, "{kind}");
        }
    }

    #[test]
    fn same_version_is_returned_unchanged() {
        let crr = alpha_crr();
        assert_eq!(
            convert(crr.clone(), "apps.kruise.io/v1alpha1").unwrap(),
            crr
        );
    }

    #[test]
    fn node_pod_probe_has_no_v1beta1() {
        let probe = json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "NodePodProbe"});
        assert_eq!(
            convert(probe.clone(), "apps.kruise.io/v1beta1").unwrap_err(),
            ConversionError::UnsupportedVersion {
                kind: "NodePodProbe".to_string(),
                version: "v1beta1".to_string()
            }
        );
        assert_eq!(
            convert(probe.clone(), "apps.kruise.io/v1alpha1").unwrap(),
            probe
        );
    }

    #[test]
    fn foreign_groups_and_kinds_are_rejected() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod"});
        assert!(matches!(
            convert(pod, "apps.kruise.io/v1alpha1"),
            Err(ConversionError::UnsupportedGroup { .. })
        ));
        let cloneset = json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet"});
        assert!(matches!(
            convert(cloneset, "apps.kruise.io/v1beta1"),
            Err(ConversionError::UnsupportedKind { .. })
        ));
        assert_eq!(
            convert(json!([1]), "apps.kruise.io/v1beta1").unwrap_err(),
            ConversionError::NotAnObject
        );
    }
}
