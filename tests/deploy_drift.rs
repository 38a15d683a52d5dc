//! The files in deploy/ are exactly what the binary renders.

use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;

fn kruised(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kruised"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kruised {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn committed(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn deploy_crds_match_kruised_crds_output() {
    assert!(
        committed("deploy/crds/apps.kruise.io.yaml") == kruised(&["crds"]),
        "deploy/crds/apps.kruise.io.yaml is stale: run `cargo run -- crds > deploy/crds/apps.kruise.io.yaml`"
    );
}

#[test]
fn deploy_standalone_matches_kruised_manifests_output() {
    assert!(
        committed("deploy/standalone/kruised.yaml") == kruised(&["manifests"]),
        "deploy/standalone/kruised.yaml is stale: run `cargo run -- manifests > deploy/standalone/kruised.yaml`"
    );
}

#[test]
fn deploy_with_openkruise_matches_kruised_manifests_output() {
    assert!(
        committed("deploy/with-openkruise/kruised.yaml")
            == kruised(&["manifests", "--mode", "with-openkruise"]),
        "deploy/with-openkruise/kruised.yaml is stale: run `cargo run -- manifests --mode with-openkruise > deploy/with-openkruise/kruised.yaml`"
    );
}

#[test]
fn kustomizations_list_the_rendered_files() {
    let standalone: serde_yaml::Value =
        serde_yaml::from_str(&committed("deploy/standalone/kustomization.yaml")).unwrap();
    assert_eq!(
        standalone["resources"],
        serde_yaml::from_str::<serde_yaml::Value>("[../crds/apps.kruise.io.yaml, kruised.yaml]")
            .unwrap()
    );
    let with: serde_yaml::Value =
        serde_yaml::from_str(&committed("deploy/with-openkruise/kustomization.yaml")).unwrap();
    assert_eq!(
        with["resources"],
        serde_yaml::from_str::<serde_yaml::Value>("[kruised.yaml]").unwrap()
    );
}

#[test]
fn rendered_objects_parse_as_their_typed_kinds() {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let text = kruised(&["manifests"]);
    let mut kinds = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(document).unwrap();
        let kind = value["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "DaemonSet" => drop(serde_json::from_value::<DaemonSet>(value).unwrap()),
            "Deployment" => drop(serde_json::from_value::<Deployment>(value).unwrap()),
            "ClusterRole" => drop(serde_json::from_value::<ClusterRole>(value).unwrap()),
            _ => {}
        }
        kinds.push(kind);
    }
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "DaemonSet",
        "Deployment",
        "Service",
        "PriorityClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing: {kinds:?}");
    }
}

#[test]
fn kruised_crds_output_is_the_compatibility_tested_crds() {
    let text = kruised(&["crds"]);
    let parsed: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&text)
        .map(|document| CustomResourceDefinition::deserialize(document).unwrap())
        .collect();
    // tests/crd_compat.rs proves kruised::api::crds() against the reference CRDs.
    assert_eq!(parsed, kruised::api::crds());
    let names: Vec<_> = parsed
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "containerrecreaterequests.apps.kruise.io",
            "imagelistpulljobs.apps.kruise.io",
            "imagepulljobs.apps.kruise.io",
            "nodeimages.apps.kruise.io",
            "nodepodprobes.apps.kruise.io"
        ]
    );
}
