//! `kruised manifests`: every object an install needs, built from typed k8s-openapi values
//! (so the YAML is always well-formed for its kind) and rendered as one multi-document
//! YAML stream.
//!
//! One file per concern: [`options`] (the knobs), [`core`] (Namespaces, ServiceAccounts,
//! Services, PriorityClass), [`rbac`] (least-privilege roles), [`agent`] (the DaemonSet),
//! [`manager`] (the Deployment, standalone only), [`admission`] (the node-binding
//! ValidatingAdmissionPolicy) and [`monitoring`] (an optional ServiceMonitor).

pub mod admission;
pub mod agent;
pub mod core;
pub mod manager;
pub mod monitoring;
pub mod options;
pub mod rbac;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

pub use options::{Mode, Options, ResourceSizes};

/// Name of the agent's DaemonSet, ServiceAccount and roles.
pub const AGENT_NAME: &str = "kruised-agent";
/// Name of the manager's Deployment, ServiceAccount and roles.
pub const MANAGER_NAME: &str = "kruised-manager";
/// The agent's HTTP port (`/metrics`, `/livez`, `/readyz`; kruise-daemon's `--addr`).
pub const AGENT_PORT: i32 = 10221;
/// The manager's HTTP port.
pub const MANAGER_PORT: i32 = 10231;
/// Where the host's socket directory is mounted in the agent (kruise's path).
pub const HOST_VAR_RUN: &str = "/hostvarrun";

/// Errors from rendering.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// An option combination that cannot be rendered.
    #[error("{0}")]
    InvalidOptions(String),
    /// A typed object did not serialize (a bug).
    #[error("serializing {kind}: {source}")]
    Serialize {
        /// The object's kind.
        kind: &'static str,
        /// The serde error.
        source: serde_json::Error,
    },
}

/// Every object, in apply order (namespaces and CRDs first, policies last).
pub fn render(options: &Options) -> Result<Vec<Value>, ManifestError> {
    if options.include_crds && options.mode == Mode::WithOpenkruise {
        return Err(ManifestError::InvalidOptions(
            "--include-crds is for --mode standalone: with OpenKruise, kruise-manager owns the CRDs"
                .into(),
        ));
    }
    if options.manager_replicas < 1 {
        return Err(ManifestError::InvalidOptions(
            "--manager-replicas must be at least 1".into(),
        ));
    }
    let mut objects = Vec::new();
    if options.include_crds {
        for crd in crate::api::crds() {
            objects.push(to_value("CustomResourceDefinition", &crd)?);
        }
    }
    objects.extend(core::objects(options)?);
    objects.extend(rbac::objects(options)?);
    objects.push(agent::daemon_set(options)?);
    if options.mode == Mode::Standalone {
        objects.push(manager::deployment(options)?);
    }
    objects.extend(admission::objects(options)?);
    if options.service_monitor {
        objects.extend(monitoring::service_monitors(options));
    }
    Ok(objects)
}

/// The objects as a YAML stream (`---` between documents).
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        // A serde_json::Value always serializes to YAML.
        out.push_str(&serde_yaml::to_string(&sorted(object)).unwrap_or_default());
    }
    out
}

/// `value` with every object's keys in sorted order. The rendered files must not depend
/// on whether serde_json's `preserve_order` feature happens to be unified into the build.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|key| (key.clone(), sorted(&map[key])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Serializes a typed object (k8s-openapi adds `apiVersion` and `kind`).
pub(crate) fn to_value<T: serde::Serialize>(
    kind: &'static str,
    object: &T,
) -> Result<Value, ManifestError> {
    serde_json::to_value(object).map_err(|source| ManifestError::Serialize { kind, source })
}

/// The labels every object carries, plus the component's.
pub(crate) fn labels(component: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "kruised".to_string()),
        (
            "app.kubernetes.io/part-of".to_string(),
            "kruised".to_string(),
        ),
    ]);
    if let Some(component) = component {
        labels.insert(
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        );
    }
    labels
}

/// The selector labels of a component's pods (stable across upgrades: selectors are
/// immutable).
pub(crate) fn selector(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "kruised".to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
    ])
}

/// Object metadata with the common labels.
pub(crate) fn meta(name: &str, namespace: Option<&str>, component: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels(component)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn standalone_renders_the_manager_and_with_openkruise_does_not() {
        let standalone = render(&Options::default()).unwrap();
        assert!(kinds(&standalone).contains(&"Deployment".to_string()));
        let with = render(&Options {
            mode: Mode::WithOpenkruise,
            ..Options::default()
        })
        .unwrap();
        assert!(!kinds(&with).contains(&"Deployment".to_string()));
        assert!(kinds(&with).contains(&"DaemonSet".to_string()));
        assert!(
            !with
                .iter()
                .any(|o| o["metadata"]["name"].as_str() == Some(MANAGER_NAME))
        );
    }

    #[test]
    fn crds_only_on_request_and_only_standalone() {
        let plain = render(&Options::default()).unwrap();
        assert!(!kinds(&plain).contains(&"CustomResourceDefinition".to_string()));
        let with_crds = render(&Options {
            include_crds: true,
            ..Options::default()
        })
        .unwrap();
        assert_eq!(
            kinds(&with_crds)
                .iter()
                .filter(|k| *k == "CustomResourceDefinition")
                .count(),
            5
        );
        let error = render(&Options {
            include_crds: true,
            mode: Mode::WithOpenkruise,
            ..Options::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("standalone"), "{error}");
    }

    #[test]
    fn every_object_has_api_version_kind_and_name() {
        let objects = render(&Options {
            service_monitor: true,
            include_crds: true,
            ..Options::default()
        })
        .unwrap();
        for object in &objects {
            assert!(object["apiVersion"].is_string(), "{object}");
            assert!(object["kind"].is_string(), "{object}");
            assert!(object["metadata"]["name"].is_string(), "{object}");
        }
    }
}
