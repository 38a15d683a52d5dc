//! The resources the test API server serves: built-in kinds and every CRD applied to it,
//! with the discovery documents kubectl and kube-rs read.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

/// Where objects of a resource are stored: `(group, plural)`. `events.k8s.io` events
/// share the core `events` storage, as in kube-apiserver.
pub type StoreKey = (String, String);

/// One served version of a resource.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    /// `v1`, `v1beta1`, …
    pub name: String,
    /// The CRD's `openAPIV3Schema` for this version, if it is a custom resource.
    pub schema: Option<Value>,
    /// Whether `/status` is a separate subresource.
    pub status_subresource: bool,
    /// CRD `selectableFields` json paths, without the leading dot.
    pub selectable_fields: Vec<String>,
}

/// A resource type.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group; empty for the core group.
    pub group: String,
    /// Served versions, in the order discovery lists them (preferred first).
    pub versions: Vec<VersionInfo>,
    /// The version objects are stored in.
    pub storage_version: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// e.g. `PodList`.
    pub list_kind: String,
    /// e.g. `pods`.
    pub plural: String,
    /// e.g. `pod`.
    pub singular: String,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether this is a custom resource (schema-validated, JSON-merge-patch only).
    pub custom: bool,
    /// Where objects are stored (differs from `(group, plural)` only for aliases).
    pub store_key: StoreKey,
}

impl ResourceInfo {
    /// The `apiVersion` string for a version of this resource.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// The served version named `version`.
    pub fn version(&self, version: &str) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.name == version)
    }

    /// `pods` or `nodeimages.apps.kruise.io`, as kube writes it in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether any version has a status subresource (status is then isolated).
    pub fn has_status(&self, version: &str) -> bool {
        self.version(version).is_some_and(|v| v.status_subresource)
    }

    fn builtin(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        short_names: &[&str],
        namespaced: bool,
        status: bool,
    ) -> Self {
        Self {
            group: group.to_string(),
            versions: vec![VersionInfo {
                name: version.to_string(),
                schema: None,
                status_subresource: status,
                selectable_fields: Vec::new(),
            }],
            storage_version: version.to_string(),
            kind: kind.to_string(),
            list_kind: format!("{kind}List"),
            plural: plural.to_string(),
            singular: kind.to_ascii_lowercase(),
            short_names: short_names.iter().map(|s| s.to_string()).collect(),
            namespaced,
            custom: false,
            store_key: (group.to_string(), plural.to_string()),
        }
    }

    /// Builds the resource a CRD object declares. Returns a message on a malformed CRD.
    pub fn from_crd(crd: &Value) -> Result<Self, String> {
        let spec = crd.get("spec").ok_or("spec is required")?;
        let group = spec["group"].as_str().ok_or("spec.group is required")?;
        let names = &spec["names"];
        let kind = names["kind"]
            .as_str()
            .ok_or("spec.names.kind is required")?;
        let plural = names["plural"]
            .as_str()
            .ok_or("spec.names.plural is required")?;
        let namespaced = match spec["scope"].as_str() {
            Some("Namespaced") => true,
            Some("Cluster") => false,
            other => return Err(format!("spec.scope: Unsupported value: {other:?}")),
        };
        let mut versions = Vec::new();
        let mut storage_version = None;
        for version in spec["versions"]
            .as_array()
            .ok_or("spec.versions is required")?
        {
            let name = version["name"]
                .as_str()
                .ok_or("spec.versions[].name is required")?;
            if version["storage"].as_bool() == Some(true) {
                storage_version = Some(name.to_string());
            }
            if version["served"].as_bool() != Some(true) {
                continue;
            }
            versions.push(VersionInfo {
                name: name.to_string(),
                schema: version.pointer("/schema/openAPIV3Schema").cloned(),
                status_subresource: version.pointer("/subresources/status").is_some(),
                selectable_fields: version["selectableFields"]
                    .as_array()
                    .map(|fields| {
                        fields
                            .iter()
                            .filter_map(|f| f["jsonPath"].as_str())
                            .map(|p| p.trim_start_matches('.').to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        // Discovery lists versions by kube's version priority: GA > beta > alpha.
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(&v.name)));
        Ok(Self {
            group: group.to_string(),
            versions,
            storage_version: storage_version
                .ok_or("spec.versions: one version must be the storage version")?,
            kind: kind.to_string(),
            list_kind: names["listKind"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{kind}List")),
            plural: plural.to_string(),
            singular: names["singular"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| kind.to_ascii_lowercase()),
            short_names: names["shortNames"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            namespaced,
            custom: true,
            store_key: (group.to_string(), plural.to_string()),
        })
    }
}

/// kube's version ordering key: `v1` > `v1beta2` > `v1beta1` > `v1alpha1` > other.
fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let suffix = &rest[digits.len()..];
    if suffix.is_empty() {
        return (3, major, 0);
    }
    let (stage, number) = if let Some(n) = suffix.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = suffix.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (stage, major, number.parse().unwrap_or(0))
}

/// Every resource the server knows, built-in and custom.
#[derive(Debug, Clone)]
pub struct Registry {
    resources: BTreeMap<StoreKey, Arc<ResourceInfo>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The built-in resources.
    pub fn new() -> Self {
        let builtins = [
            ResourceInfo::builtin("", "v1", "Pod", "pods", &["po"], true, true),
            ResourceInfo::builtin("", "v1", "Secret", "secrets", &[], true, false),
            ResourceInfo::builtin("", "v1", "ConfigMap", "configmaps", &["cm"], true, false),
            ResourceInfo::builtin("", "v1", "Namespace", "namespaces", &["ns"], false, true),
            ResourceInfo::builtin("", "v1", "Node", "nodes", &["no"], false, true),
            ResourceInfo::builtin("", "v1", "Event", "events", &["ev"], true, false),
            {
                let mut events = ResourceInfo::builtin(
                    "events.k8s.io",
                    "v1",
                    "Event",
                    "events",
                    &["ev"],
                    true,
                    false,
                );
                events.store_key = (String::new(), "events".to_string());
                events
            },
            ResourceInfo::builtin(
                "coordination.k8s.io",
                "v1",
                "Lease",
                "leases",
                &[],
                true,
                false,
            ),
            // What `kruised manifests` installs: stored generically (no controllers run).
            ResourceInfo::builtin(
                "",
                "v1",
                "ServiceAccount",
                "serviceaccounts",
                &["sa"],
                true,
                false,
            ),
            ResourceInfo::builtin("", "v1", "Service", "services", &["svc"], true, true),
            ResourceInfo::builtin("apps", "v1", "DaemonSet", "daemonsets", &["ds"], true, true),
            ResourceInfo::builtin(
                "apps",
                "v1",
                "Deployment",
                "deployments",
                &["deploy"],
                true,
                true,
            ),
            ResourceInfo::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                &[],
                false,
                false,
            ),
            ResourceInfo::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                &[],
                false,
                false,
            ),
            ResourceInfo::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "Role",
                "roles",
                &[],
                true,
                false,
            ),
            ResourceInfo::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                &[],
                true,
                false,
            ),
            ResourceInfo::builtin(
                "scheduling.k8s.io",
                "v1",
                "PriorityClass",
                "priorityclasses",
                &["pc"],
                false,
                false,
            ),
            ResourceInfo::builtin(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingAdmissionPolicy",
                "validatingadmissionpolicies",
                &[],
                false,
                true,
            ),
            ResourceInfo::builtin(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingAdmissionPolicyBinding",
                "validatingadmissionpolicybindings",
                &[],
                false,
                false,
            ),
            {
                let mut crds = ResourceInfo::builtin(
                    "apiextensions.k8s.io",
                    "v1",
                    "CustomResourceDefinition",
                    "customresourcedefinitions",
                    &["crd", "crds"],
                    false,
                    true,
                );
                crds.singular = "customresourcedefinition".into();
                crds
            },
        ];
        let mut resources = BTreeMap::new();
        for info in builtins {
            resources.insert((info.group.clone(), info.plural.clone()), Arc::new(info));
        }
        Self { resources }
    }

    /// The resource `plural` in `group` that serves `version`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceInfo>> {
        self.resources
            .get(&(group.to_string(), plural.to_string()))
            .filter(|info| info.version(version).is_some())
    }

    /// The resource whose objects are stored under `key` (the storage owner, not an alias).
    pub fn by_store_key(&self, key: &StoreKey) -> Option<&Arc<ResourceInfo>> {
        self.resources
            .values()
            .find(|info| &info.store_key == key && (info.group == key.0))
    }

    /// Adds or replaces a custom resource.
    pub fn register(&mut self, info: ResourceInfo) {
        self.resources
            .insert((info.group.clone(), info.plural.clone()), Arc::new(info));
    }

    /// Removes a custom resource.
    pub fn unregister(&mut self, group: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .remove(&(group.to_string(), plural.to_string()))
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceInfo>> {
        self.resources.values()
    }

    /// Groups (besides core) with their versions, preferred first.
    fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for info in self.resources.values().filter(|i| !i.group.is_empty()) {
            let versions = groups.entry(info.group.clone()).or_default();
            for version in &info.versions {
                if !versions.contains(&version.name) {
                    versions.push(version.name.clone());
                }
            }
        }
        for versions in groups.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        groups
    }

    /// `GET /api`.
    pub fn core_versions(&self) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]
        })
    }

    /// `GET /apis`.
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .map(|(name, versions)| group_doc(&name, &versions))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/<group>`.
    pub fn group(&self, group: &str) -> Option<Value> {
        self.groups().get(group).map(|versions| {
            let mut doc = group_doc(group, versions);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
    }

    /// `GET /api/v1` or `GET /apis/<group>/<version>`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let mut resources = Vec::new();
        for info in self.resources.values() {
            let Some(served) = info.version(version).filter(|_| info.group == group) else {
                continue;
            };
            resources.push(json!({
                "name": info.plural,
                "singularName": info.singular,
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": info.short_names,
            }));
            if served.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", info.plural),
                    "singularName": "",
                    "namespaced": info.namespaced,
                    "kind": info.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        if resources.is_empty() {
            return None;
        }
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }))
    }
}

impl Registry {
    /// `GET /openapi/v3`: one entry per group version, as kube-apiserver lists them.
    pub fn openapi_v3_root(&self) -> Value {
        let mut paths = serde_json::Map::new();
        let mut add = |path: String| {
            let url = format!("/openapi/v3/{path}?hash=testbed");
            paths.insert(path, json!({"serverRelativeURL": url}));
        };
        add("api/v1".to_string());
        for (group, versions) in self.groups() {
            for version in versions {
                add(format!("apis/{group}/{version}"));
            }
        }
        json!({"paths": paths})
    }

    /// `GET /openapi/v3/apis/<group>/<version>`: the operations of each resource with
    /// the `fieldValidation` parameter, which is what kubectl looks for to leave
    /// validation to the server. Schemas are not published (kubectl then skips its
    /// client-side validation, and the server validates custom resources itself).
    pub fn openapi_v3_group_version(&self, group: &str, version: &str) -> Option<Value> {
        let mut paths = serde_json::Map::new();
        for info in self.resources.values() {
            if info.group != group || info.version(version).is_none() {
                continue;
            }
            let prefix = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let collection = if info.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}", info.plural)
            } else {
                format!("{prefix}/{}", info.plural)
            };
            let gvk = json!({"group": group, "version": version, "kind": info.kind});
            let operation = |action: &str| {
                json!({
                    "x-kubernetes-action": action,
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": [
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                        {"name": "dryRun", "in": "query", "schema": {"type": "string"}}
                    ],
                    "responses": {}
                })
            };
            paths.insert(
                collection.clone(),
                json!({"post": operation("post"), "get": operation("list")}),
            );
            paths.insert(
                format!("{collection}/{{name}}"),
                json!({"get": operation("get"), "put": operation("put"), "patch": operation("patch"), "delete": operation("delete")}),
            );
            if info.has_status(version) {
                paths.insert(
                    format!("{collection}/{{name}}/status"),
                    json!({"get": operation("get"), "put": operation("put"), "patch": operation("patch")}),
                );
            }
        }
        (!paths.is_empty()).then(|| {
            json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.33.0-testbed"},
                "paths": paths,
                "components": {"schemas": {}}
            })
        })
    }
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": entries,
        "preferredVersion": entries.first().cloned().unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kube() {
        let mut versions = vec!["v1alpha1", "v1", "v1beta1", "v2beta1", "foo"];
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(
            versions,
            vec!["v1", "v2beta1", "v1beta1", "v1alpha1", "foo"]
        );
    }

    #[test]
    fn core_discovery_lists_pods_and_their_status() {
        let registry = Registry::new();
        let list = registry.resource_list("", "v1").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods") && names.contains(&"pods/status"));
        assert!(!names.contains(&"secrets/status"));
        assert!(registry.find("events.k8s.io", "v1", "events").is_some());
    }
}
