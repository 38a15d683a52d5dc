//! Every object `kruised manifests` renders is accepted by an API server through kubectl
//! (`kubectl apply -f`), in both modes, and applying again is a no-op.

use std::time::Duration;

use kruised::manifests::{self, Mode, Options};
use serde_json::Value;
use testbed::apiserver::{ApiServer, ApiServerConfig};
use tokio::process::Command;

async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output(),
    )
    .await
    .expect("kubectl finished")
    .expect("kubectl is installed (scripts/testenv install provides it)");
    assert!(
        output.status.success(),
        "kubectl {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `plural.group` for kubectl, from the rendered object's apiVersion and kind.
fn resource_arg(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap();
    let plural = match kind {
        "PriorityClass" => "priorityclasses".to_string(),
        "ValidatingAdmissionPolicy" => "validatingadmissionpolicies".to_string(),
        other => format!("{}s", other.to_ascii_lowercase()),
    };
    match object["apiVersion"].as_str().unwrap().rsplit_once('/') {
        Some((group, _)) => format!("{plural}.{group}"),
        None => plural,
    }
}

async fn applies_and_reads_back(options: Options) {
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let objects = manifests::render(&options).unwrap();
    if options.mode == Mode::WithOpenkruise {
        // OpenKruise's install created these (kruised's with-openkruise output leaves
        // them to it).
        let namespaces = dir.path().join("openkruise-namespaces.yaml");
        std::fs::write(
            &namespaces,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: kruise-system}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: kruise-daemon-config}\n",
        )
        .unwrap();
        kubectl(&kubeconfig, &["create", "-f", namespaces.to_str().unwrap()]).await;
    }
    if options.service_monitor {
        // The Prometheus Operator's CRD, as a cluster that uses `--service-monitor` has.
        let crd = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/servicemonitor-crd.yaml"
        );
        kubectl(&kubeconfig, &["create", "-f", crd]).await;
    }
    let file = dir.path().join("kruised.yaml");
    std::fs::write(&file, manifests::to_yaml(&objects)).unwrap();
    let file = file.to_str().unwrap();

    let out = kubectl(&kubeconfig, &["apply", "-f", file]).await;
    assert_eq!(out.lines().count(), objects.len(), "{out}");
    assert!(out.lines().all(|line| line.ends_with(" created")), "{out}");

    for object in &objects {
        let name = object["metadata"]["name"].as_str().unwrap();
        let resource = resource_arg(object);
        let mut args = vec!["get", resource.as_str(), name, "-o", "json"];
        if let Some(ns) = object["metadata"]["namespace"].as_str() {
            args.extend(["-n", ns]);
        }
        let stored: Value = serde_json::from_str(&kubectl(&kubeconfig, &args).await).unwrap();
        assert_eq!(stored["kind"], object["kind"], "{resource}/{name}");
        for (key, value) in object["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            assert_eq!(
                &stored["metadata"]["labels"][key], value,
                "{resource}/{name}"
            );
        }
        if object["kind"] == "CustomResourceDefinition" {
            // The server defaults CRD fields (conversion); tests/deploy_drift.rs and
            // crd_compat.rs cover the CRDs' content.
            continue;
        }
        // Everything that was sent is kept as sent.
        assert!(
            stored["spec"] == object["spec"],
            "{resource}/{name}: spec changed"
        );
        assert!(
            stored["rules"] == object["rules"],
            "{resource}/{name}: rules changed"
        );
    }

    // A second apply finds nothing to change.
    let again = kubectl(&kubeconfig, &["apply", "-f", file]).await;
    assert!(
        again.lines().all(|line| line.ends_with(" unchanged")),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_every_standalone_object_with_crds_and_service_monitors() {
    applies_and_reads_back(Options {
        include_crds: true,
        service_monitor: true,
        ..Options::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_every_with_openkruise_object() {
    applies_and_reads_back(Options {
        mode: Mode::WithOpenkruise,
        ..Options::default()
    })
    .await;
}
