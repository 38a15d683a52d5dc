//! Our generated CRDs against kruise-manager's (spec §9).
//!
//! For every kind and version the CRD metadata (group, names, scope, served/storage, status
//! subresource, printer columns) must equal upstream master's, and the schemas must declare the
//! same property paths with the same validation keywords: `type`, `format`, `required`, `enum`,
//! `x-kubernetes-*`, `additionalProperties`, `anyOf`, `default`, `minimum`, `maxLength`,
//! `pattern`, ... — everything except `description`. Equal schemas accept, prune and default the
//! same objects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

const MASTER_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference/crds");
const KRUISE_1_8_4_CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/crds-v1.8.4"
);

#[test]
fn nodeimage_crd_accepts_same_objects_as_upstream() {
    assert_same_as_upstream("nodeimages.apps.kruise.io");
}

#[test]
fn imagepulljob_crd_accepts_same_objects_as_upstream() {
    assert_same_as_upstream("imagepulljobs.apps.kruise.io");
}

#[test]
fn imagelistpulljob_crd_accepts_same_objects_as_upstream() {
    assert_same_as_upstream("imagelistpulljobs.apps.kruise.io");
}

#[test]
fn containerrecreaterequest_crd_accepts_same_objects_as_upstream() {
    assert_same_as_upstream("containerrecreaterequests.apps.kruise.io");
}

#[test]
fn nodepodprobe_crd_accepts_same_objects_as_upstream() {
    assert_same_as_upstream("nodepodprobes.apps.kruise.io");
}

#[test]
fn crds_are_exactly_the_upstream_crd_files() {
    let ours: BTreeSet<String> = kruised::api::crds().iter().map(crd_name).collect();
    let upstream: BTreeSet<String> = load_crds(MASTER_CRDS).keys().cloned().collect();
    assert_eq!(ours, upstream);
}

#[test]
fn crds_yaml_is_a_stream_of_the_crds() {
    let yaml = kruised::api::crds_yaml();
    assert!(
        yaml.starts_with("---\n"),
        "stream starts with a document separator"
    );
    let documents: Vec<CustomResourceDefinition> = yaml
        .split("---\n")
        .filter(|document| !document.trim().is_empty())
        .map(|document| serde_yaml::from_str(document).expect("each document is a CRD"))
        .collect();
    assert_eq!(documents, kruised::api::crds());
}

/// kruised must also work against a kruise-manager 1.8 cluster, which serves only `v1alpha1`.
#[test]
fn kruise_1_8_v1alpha1_properties_all_exist_in_ours_with_the_same_type() {
    let ours = our_crds();
    let mut differences = Vec::new();
    for (name, old) in load_crds(KRUISE_1_8_4_CRDS) {
        let Some(ours) = ours.get(&name) else {
            differences.push(format!("{name}: missing from kruised::api::crds()"));
            continue;
        };
        for version in old["spec"]["versions"].as_array().expect("versions") {
            let version_name = version["name"].as_str().expect("version name");
            let Some(our_version) = find_version(ours, version_name) else {
                differences.push(format!("{name} {version_name}: version missing"));
                continue;
            };
            let old_paths = schema_paths(&version["schema"]["openAPIV3Schema"]);
            let our_paths = schema_paths(&our_version["schema"]["openAPIV3Schema"]);
            for (path, old_keywords) in &old_paths {
                let Some(our_keywords) = our_paths.get(path) else {
                    differences.push(format!("{name} {version_name} {path}: missing"));
                    continue;
                };
                for keyword in ["type", "format", "x-kubernetes-int-or-string"] {
                    if old_keywords.get(keyword) != our_keywords.get(keyword) {
                        differences.push(format!(
                            "{name} {version_name} {path}: {keyword} is {} in 1.8.4, {} in ours",
                            show(old_keywords.get(keyword)),
                            show(our_keywords.get(keyword)),
                        ));
                    }
                }
            }
        }
    }
    assert!(
        differences.is_empty(),
        "differences from kruise 1.8.4:\n{}",
        differences.join("\n")
    );
}

/// Compares one CRD with upstream master and fails with the list of differing paths.
fn assert_same_as_upstream(name: &str) {
    let upstream = load_crds(MASTER_CRDS)
        .remove(name)
        .unwrap_or_else(|| panic!("no upstream {name}"));
    let ours = our_crds()
        .remove(name)
        .unwrap_or_else(|| panic!("kruised::api::crds() has no {name}"));
    let differences = crd_differences(&upstream, &ours);
    assert!(
        differences.is_empty(),
        "{name} differs from upstream ({} differences):\n{}",
        differences.len(),
        differences.join("\n")
    );
}

fn crd_differences(upstream: &Value, ours: &Value) -> Vec<String> {
    let mut differences = Vec::new();
    let mut compare = |what: String, upstream: &Value, ours: &Value| {
        if upstream != ours {
            differences.push(format!("{what}: upstream {upstream}, ours {ours}"));
        }
    };
    compare(
        "metadata.name".into(),
        &upstream["metadata"]["name"],
        &ours["metadata"]["name"],
    );
    compare(
        "spec.group".into(),
        &upstream["spec"]["group"],
        &ours["spec"]["group"],
    );
    for field in [
        "kind",
        "listKind",
        "plural",
        "singular",
        "shortNames",
        "categories",
    ] {
        compare(
            format!("spec.names.{field}"),
            &upstream["spec"]["names"][field],
            &ours["spec"]["names"][field],
        );
    }
    compare(
        "spec.scope".into(),
        &upstream["spec"]["scope"],
        &ours["spec"]["scope"],
    );
    compare(
        "spec.conversion".into(),
        &upstream["spec"]["conversion"],
        &ours["spec"]["conversion"],
    );

    let version_names = |crd: &Value| -> Value {
        crd["spec"]["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .map(|v| v["name"].clone())
            .collect()
    };
    compare(
        "spec.versions[].name".into(),
        &version_names(upstream),
        &version_names(ours),
    );

    let mut schema_differences = Vec::new();
    for upstream_version in upstream["spec"]["versions"].as_array().expect("versions") {
        let version = upstream_version["name"].as_str().expect("version name");
        let Some(our_version) = find_version(ours, version) else {
            continue; // reported by the version name comparison
        };
        for field in [
            "served",
            "storage",
            "deprecated",
            "deprecationWarning",
            "subresources",
            "selectableFields",
            "additionalPrinterColumns",
        ] {
            compare(
                format!("{version} {field}"),
                &upstream_version[field],
                &our_version[field],
            );
        }
        schema_differences.extend(
            schema_differences_of(
                &upstream_version["schema"]["openAPIV3Schema"],
                &our_version["schema"]["openAPIV3Schema"],
            )
            .into_iter()
            .map(|difference| format!("{version} {difference}")),
        );
    }
    differences.extend(schema_differences);
    differences
}

/// Differences between two schemas, as `<path>: ...` lines.
fn schema_differences_of(upstream: &Value, ours: &Value) -> Vec<String> {
    let upstream_paths = schema_paths(upstream);
    let our_paths = schema_paths(ours);
    let mut differences = Vec::new();
    for path in upstream_paths
        .keys()
        .chain(our_paths.keys())
        .collect::<BTreeSet<_>>()
    {
        let (upstream_keywords, our_keywords) =
            match (upstream_paths.get(path), our_paths.get(path)) {
                (Some(upstream_keywords), Some(our_keywords)) => (upstream_keywords, our_keywords),
                (Some(_), None) => {
                    differences.push(format!("{path}: only upstream"));
                    continue;
                }
                (None, _) => {
                    differences.push(format!("{path}: only ours"));
                    continue;
                }
            };
        for keyword in upstream_keywords
            .keys()
            .chain(our_keywords.keys())
            .collect::<BTreeSet<_>>()
        {
            let (upstream_value, our_value) =
                (upstream_keywords.get(keyword), our_keywords.get(keyword));
            if upstream_value != our_value {
                differences.push(format!(
                    "{path}: {keyword} upstream {}, ours {}",
                    show(upstream_value),
                    show(our_value)
                ));
            }
        }
    }
    differences
}

/// Every schema node by property path (`.spec.images{}.tags[].tag`; `{}` is a map value, `[]` an
/// array item), with its keywords except `description` and the nested schemas. Numbers are
/// compared as floats (`minimum: 0` in YAML is `0.0` after a round trip through `f64`) and
/// `required` as a sorted list.
fn schema_paths(schema: &Value) -> BTreeMap<String, BTreeMap<String, Value>> {
    fn walk(schema: &Value, path: String, out: &mut BTreeMap<String, BTreeMap<String, Value>>) {
        let object = schema
            .as_object()
            .unwrap_or_else(|| panic!("{path}: schema is not an object"));
        let mut keywords = BTreeMap::new();
        for (keyword, value) in object {
            match keyword.as_str() {
                "description" => {}
                "properties" => {
                    for (name, property) in value.as_object().expect("properties is an object") {
                        walk(property, format!("{path}.{name}"), out);
                    }
                }
                "items" => walk(value, format!("{path}[]"), out),
                "additionalProperties" if value.is_object() => {
                    keywords.insert(keyword.clone(), json!("<schema>"));
                    walk(value, format!("{path}{{}}"), out);
                }
                "required" => {
                    let mut required: Vec<Value> =
                        value.as_array().expect("required is an array").clone();
                    required.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                    keywords.insert(keyword.clone(), Value::from(required));
                }
                _ => {
                    keywords.insert(keyword.clone(), numbers_as_floats(value));
                }
            }
        }
        out.insert(if path.is_empty() { ".".into() } else { path }, keywords);
    }
    let mut out = BTreeMap::new();
    walk(schema, String::new(), &mut out);
    out
}

fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(number) => json!(number.as_f64().expect("finite number")),
        Value::Array(items) => items.iter().map(numbers_as_floats).collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
            .collect(),
        other => other.clone(),
    }
}

fn show(value: Option<&Value>) -> String {
    value.map_or_else(|| "<absent>".to_owned(), Value::to_string)
}

fn find_version<'a>(crd: &'a Value, name: &str) -> Option<&'a Value> {
    crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|version| version["name"] == name)
}

fn crd_name(crd: &CustomResourceDefinition) -> String {
    crd.metadata.name.clone().expect("CRD has a name")
}

/// Our CRDs as JSON values, by CRD name.
fn our_crds() -> BTreeMap<String, Value> {
    kruised::api::crds()
        .iter()
        .map(|crd| {
            (
                crd_name(crd),
                serde_json::to_value(crd).expect("CRD serializes"),
            )
        })
        .collect()
}

/// The CRDs in the YAML files of `dir` as JSON values, by CRD name.
fn load_crds(dir: &str) -> BTreeMap<String, Value> {
    let mut crds = BTreeMap::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {dir}: {e}"));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", display(&path)));
            if value.is_null() {
                continue;
            }
            let name = value["metadata"]["name"]
                .as_str()
                .expect("CRD has a name")
                .to_owned();
            crds.insert(name, value);
        }
    }
    assert!(!crds.is_empty(), "no CRDs found in {dir}");
    crds
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
