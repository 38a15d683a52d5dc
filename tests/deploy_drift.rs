//! The files in deploy/ are exactly what the binary renders.

use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;

fn kruised_crds() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kruised"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn deploy_crds_match_kruised_crds_output() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/crds/apps.kruise.io.yaml"
    ))
    .unwrap();
    assert!(
        committed == kruised_crds(),
        "deploy/crds/apps.kruise.io.yaml is stale: run `cargo run -- crds > deploy/crds/apps.kruise.io.yaml`"
    );
}

#[test]
fn kruised_crds_output_is_the_compatibility_tested_crds() {
    let text = kruised_crds();
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
