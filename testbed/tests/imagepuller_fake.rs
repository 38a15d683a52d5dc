//! The image puller's concurrency cap and de-duplication, seen in the CRI calls of the
//! fake runtime (a real registry cannot be held mid-pull on demand).

use std::time::{Duration, Instant};

use kruised::apiversions::KruiseVersion;
use kruised::cri::DiscoveryConfig;
use kruised::cri::fake::FakeCri;
use kruised::metrics::Metrics;
use kruised::readiness::Readiness;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use serde_json::json;
use testbed::apiserver::{ApiServer, ApiServerConfig};

const REFERENCE_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");

fn tag(tag: &str) -> serde_json::Value {
    json!({"tag": tag, "version": 1, "createdAt": "2026-11-25T10:00:00Z", "imagePullPolicy": "Always",
           "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}})
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_are_capped_node_wide_and_identical_references_share_one_pull() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCri::builder().runtime_name("fake").build();
    let handle = fake.serve_unix(dir.path().join("cri.sock")).await.unwrap();
    fake.hold_pulls();
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    server
        .apply_crds_from_dir(std::path::Path::new(REFERENCE_CRDS))
        .unwrap();
    let metrics = Metrics::new();
    let runtimes = DiscoveryConfig {
        runtime_endpoint: Some(handle.endpoint().to_string()),
        ..Default::default()
    }
    .discover(None)
    .await
    .unwrap();
    let puller = kruised::imagepuller::build(
        server.client(),
        "fake-node",
        KruiseVersion::V1beta1,
        &runtimes,
        2,
        metrics,
        kruised::credentials::plugin::CredentialPlugins::none(),
    );
    let readiness = Readiness::new();
    let (_trigger, shutdown) = kruised::agent::shutdown_channel();
    tokio::spawn(puller.run(readiness.register("nodeImageInformerSynced"), shutdown));

    // Five images, plus one alias of the first (`nginx` ≡ `docker.io/library/nginx`).
    let api: Api<DynamicObject> = Api::all_with(
        server.client(),
        &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "fake-node"},
        "spec": {"images": {
            "nginx": {"tags": [tag("1")]},
            "docker.io/library/nginx": {"tags": [tag("1")]},
            "redis": {"tags": [tag("7")]},
            "quay.io/org/a": {"tags": [tag("1")]},
            "quay.io/org/b": {"tags": [tag("1")]},
            "quay.io/org/c": {"tags": [tag("1")]}
        }}
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    eventually("two pulls held in flight", || fake.in_flight_pulls() == 2).await;
    // Both started pulls are reported Pulling (writes are batched; wait for them).
    let start = Instant::now();
    let status = loop {
        let status = api.get("fake-node").await.unwrap().data["status"].clone();
        if status["pulling"].as_i64().unwrap_or(0) >= 2 {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "two tags Pulling: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        status["pulling"].as_i64().unwrap() + status["waiting"].as_i64().unwrap(),
        6,
        "every tag is Waiting or Pulling while pulls are held: {status}"
    );
    assert_eq!(fake.in_flight_pulls(), 2);
    fake.release_pulls();
    let start = Instant::now();
    loop {
        let status = api.get("fake-node").await.unwrap().data["status"].clone();
        if status["succeeded"] == 6 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "all tags succeed: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.max_concurrent_pulls(), 2, "the node-wide cap held");
    assert_eq!(
        fake.count("PullImage"),
        5,
        "the two nginx tags shared one CRI pull"
    );
    let calls = fake.calls_of("PullImage");
    for call in calls {
        let text = format!("{call:?}");
        assert!(
            text.contains("apps.kruise.io/pulling-image-by"),
            "sandbox annotation sent: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn more_than_256_images_fail_the_excess_with_a_precise_message_and_duplicates_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCri::builder().runtime_name("fake").build();
    let handle = fake.serve_unix(dir.path().join("cri.sock")).await.unwrap();
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    server
        .apply_crds_from_dir(std::path::Path::new(REFERENCE_CRDS))
        .unwrap();
    let runtimes = DiscoveryConfig {
        runtime_endpoint: Some(handle.endpoint().to_string()),
        ..Default::default()
    }
    .discover(None)
    .await
    .unwrap();
    let puller = kruised::imagepuller::build(
        server.client(),
        "big-node",
        KruiseVersion::V1beta1,
        &runtimes,
        8,
        Metrics::new(),
        kruised::credentials::plugin::CredentialPlugins::none(),
    );
    let readiness = Readiness::new();
    let (_trigger, shutdown) = kruised::agent::shutdown_channel();
    tokio::spawn(puller.run(readiness.register("nodeImageInformerSynced"), shutdown));
    let mut images = serde_json::Map::new();
    for i in 0..257 {
        images.insert(
            format!("quay.io/org/app-{i:03}"),
            json!({"tags": [tag("1")]}),
        );
    }
    // A duplicate tag (a bypassed webhook): the first entry owns the status.
    images.insert(
        "quay.io/org/app-000".into(),
        json!({"tags": [tag("1"), tag("1")]}),
    );
    let api: Api<DynamicObject> = Api::all_with(
        server.client(),
        &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "big-node"},
        "spec": {"images": images}
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    let start = Instant::now();
    let status = loop {
        let status = api.get("big-node").await.unwrap().data["status"].clone();
        if status["succeeded"].as_i64().unwrap_or(0) + status["failed"].as_i64().unwrap_or(0) == 257
        {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "every tag finishes: {}",
            status["succeeded"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status["desired"], 258,
        "desired counts every tag entry of the spec"
    );
    assert_eq!(status["succeeded"], 256);
    assert_eq!(status["failed"], 1);
    let excess = &status["imageStatuses"]["quay.io/org/app-256"]["tags"][0];
    assert_eq!(excess["phase"], "Failed");
    assert_eq!(
        excess["message"],
        "NodeImage big-node has 257 images; at most 256 are allowed"
    );
    assert_eq!(
        status["imageStatuses"]["quay.io/org/app-000"]["tags"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(fake.count("PullImage"), 256);
}

/// Requests of `verb` on NodeImages (any client), from the server's accounting.
fn node_image_requests(server: &ApiServer, verb: &str) -> u64 {
    server
        .accounting()
        .snapshot()
        .iter()
        .filter(|row| row.verb == verb && row.resource == "nodeimages.apps.kruise.io")
        .map(|row| row.requests)
        .sum()
}

fn status_writes(metrics: &Metrics, result: &str) -> u64 {
    let prefix = format!("kruised_nodeimage_status_writes_total{{result=\"{result}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_status_write_that_meets_a_conflict_reads_the_object_again_and_lands() {
    use testbed::apiserver::faults::{FailRule, Matcher};
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCri::builder().runtime_name("fake").build();
    let handle = fake.serve_unix(dir.path().join("cri.sock")).await.unwrap();
    fake.hold_pulls();
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    server
        .apply_crds_from_dir(std::path::Path::new(REFERENCE_CRDS))
        .unwrap();
    let metrics = Metrics::new();
    let runtimes = DiscoveryConfig {
        runtime_endpoint: Some(handle.endpoint().to_string()),
        ..Default::default()
    }
    .discover(None)
    .await
    .unwrap();
    let puller = kruised::imagepuller::build(
        server.client(),
        "conflict-node",
        KruiseVersion::V1beta1,
        &runtimes,
        2,
        metrics.clone(),
        kruised::credentials::plugin::CredentialPlugins::none(),
    );
    let readiness = Readiness::new();
    let (_trigger, shutdown) = kruised::agent::shutdown_channel();
    tokio::spawn(puller.run(readiness.register("nodeImageInformerSynced"), shutdown));
    let api: Api<DynamicObject> = Api::all_with(
        server.client(),
        &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "conflict-node"},
        "spec": {"images": {"quay.io/org/app": {"tags": [tag("1")]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    // The store is read directly from here on: the test's own API reads would count.
    let info = server
        .store()
        .resource("apps.kruise.io", "v1beta1", "nodeimages")
        .unwrap();
    let stored = || server.store().get(&info, "", "conflict-node").unwrap();
    eventually("the tag is Pulling on the server", || {
        stored()["status"]["pulling"] == 1
    })
    .await;

    // Cut the agent off from changes: its watch ends and every new one is refused.
    for verb in ["watch", "list"] {
        server.faults().fail(FailRule {
            matcher: Matcher {
                verb: Some(verb.into()),
                resource: Some("nodeimages.apps.kruise.io".into()),
                user_agent: None,
            },
            code: 500,
            count: None,
            percent: None,
            duration_seconds: None,
            retry_after_seconds: None,
        });
    }
    let watches = node_image_requests(&server, "watch");
    server.faults().drop_watches();
    eventually(
        "the agent's old watch has ended (it asked for a new one)",
        || node_image_requests(&server, "watch") > watches,
    )
    .await;
    // Another writer (the manager) changes the object: the agent's copy is now stale.
    let patch = json!({"metadata": {"labels": {"touched-by": "manager"}}});
    api.patch(
        "conflict-node",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let gets = node_image_requests(&server, "get");
    assert_eq!(status_writes(&metrics, "conflict"), 0);

    fake.release_pulls();
    eventually("the Succeeded status lands despite the conflict", || {
        stored()["status"]["succeeded"] == 1
    })
    .await;
    assert_eq!(
        status_writes(&metrics, "conflict"),
        1,
        "the stale write was counted"
    );
    assert!(
        node_image_requests(&server, "get") > gets,
        "the agent read the object again after the conflict"
    );
    let object = stored();
    assert_eq!(
        object["metadata"]["labels"]["touched-by"], "manager",
        "the other writer's change survives"
    );
    let tag = &object["status"]["imageStatuses"]["quay.io/org/app"]["tags"][0];
    assert_eq!(tag["phase"], "Succeeded");
    assert!(tag["completionTime"].is_string());
    server.faults().clear();
}
