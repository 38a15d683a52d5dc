//! kruised's image puller against real containerd, the real registries and the test
//! API server, with NodeImages written the way kruise-manager writes them (§3.3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kruised::apiversions::KruiseVersion;
use kruised::cri::DiscoveryConfig;
use kruised::metrics::Metrics;
use kruised::readiness::Readiness;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use testbed::apiserver::{ApiServer, ApiServerConfig};
use testbed::testenv::TestEnv;

const REFERENCE_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");

struct Bed {
    server: ApiServer,
    metrics: Arc<Metrics>,
    node: String,
    _trigger: kruised::agent::ShutdownTrigger,
}

impl Bed {
    async fn start(node: &str, max_concurrent: usize) -> Self {
        let env = TestEnv::get();
        let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
        server
            .apply_crds_from_dir(std::path::Path::new(REFERENCE_CRDS))
            .unwrap();
        let metrics = Metrics::new();
        let runtimes = DiscoveryConfig {
            runtime_endpoint: Some(env.runtime_endpoint().to_string()),
            ..Default::default()
        }
        .discover(Some(metrics.cri.clone()))
        .await
        .unwrap();
        let puller = kruised::imagepuller::build(
            server.client(),
            node,
            KruiseVersion::V1beta1,
            &runtimes,
            max_concurrent,
            metrics.clone(),
            kruised::credentials::plugin::CredentialPlugins::none(),
        );
        let readiness = Readiness::new();
        let check = readiness.register("nodeImageInformerSynced");
        let (trigger, shutdown) = kruised::agent::shutdown_channel();
        tokio::spawn(puller.run(check, shutdown));
        Self {
            server,
            metrics,
            node: node.to_string(),
            _trigger: trigger,
        }
    }

    fn api(&self) -> Api<DynamicObject> {
        Api::all_with(
            self.server.client(),
            &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
        )
    }

    /// Creates the NodeImage with `images` as the manager would (§3.3).
    async fn create(&self, images: Value) {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
            "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node}},
            "spec": {"images": images}
        }))
        .unwrap();
        self.api()
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }

    async fn set_images(&self, images: Value) {
        let patch = json!({"spec": {"images": images}});
        self.api()
            .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn status(&self) -> Value {
        self.api().get(&self.node).await.unwrap().data["status"].clone()
    }

    /// Polls until the tag's status satisfies `done`, returning it.
    async fn tag_status(
        &self,
        image: &str,
        tag: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let status = self.status().await;
            let tags = status["imageStatuses"][image]["tags"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(found) = tags.into_iter().find(|t| t["tag"] == tag)
                && done(&found)
            {
                return found;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "timed out waiting for {what}; status: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pull_calls(&self) -> u64 {
        let text = self.metrics.encode();
        text.lines()
            .filter(|l| {
                l.starts_with("kruised_cri_call_duration_seconds_count{method=\"PullImage\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

fn tag(tag: &str, version: i64, policy: Value) -> Value {
    json!({
        "tag": tag, "version": version, "createdAt": "2026-11-25T10:00:00Z",
        "imagePullPolicy": "Always",
        "pullPolicy": policy,
        "ownerReferences": [{"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
                              "namespace": "default", "name": "job1", "uid": "2f6ad4c7-2b07-4a1a-9b0f-1b3c5a2e9d11"}]
    })
}

fn policy() -> Value {
    json!({"timeoutSeconds": 600, "backoffLimit": 3, "ttlSecondsAfterFinished": 600, "activeDeadlineSeconds": 1800})
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_a_tag_and_reports_succeeded_with_the_image_id() {
    let bed = Bed::start("puller-success", 2).await;
    let image = TestEnv::get().image("test/busybox");
    bed.create(json!({image.clone(): {"tags": [tag("1", 1, policy())]}}))
        .await;
    let done = bed
        .tag_status(&image, "1", "Succeeded", |t| t["phase"] == "Succeeded")
        .await;
    assert_eq!(done["version"], 1);
    assert_eq!(done["progress"], 100);
    assert!(done["completionTime"].is_string() && done["startTime"].is_string());
    let image_id = done["imageID"].as_str().unwrap();
    assert!(
        image_id.starts_with(&format!("{image}@sha256:")),
        "{image_id}"
    );
    let status = bed.status().await;
    assert_eq!(
        (status["desired"].as_i64(), status["succeeded"].as_i64()),
        (Some(1), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_tag_fails_once_with_the_registrys_not_found() {
    let bed = Bed::start("puller-missing", 2).await;
    let image = TestEnv::get().image("test/busybox");
    bed.create(json!({image.clone(): {"tags": [tag("no-such-tag", 1, policy())]}}))
        .await;
    let failed = bed
        .tag_status(&image, "no-such-tag", "Failed", |t| t["phase"] == "Failed")
        .await;
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("not found"), "{message}");
    assert!(failed["completionTime"].is_string());
    assert_eq!(bed.pull_calls(), 1, "a missing tag is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn if_not_present_skips_the_pull_and_always_pulls_again() {
    let bed = Bed::start("puller-policy", 2).await;
    let image = TestEnv::get().image("test/busybox");
    bed.create(json!({image.clone(): {"tags": [tag("1", 1, policy())]}}))
        .await;
    bed.tag_status(&image, "1", "first pull", |t| t["phase"] == "Succeeded")
        .await;
    let calls = bed.pull_calls();
    let mut if_not_present = tag("1", 2, policy());
    if_not_present["imagePullPolicy"] = json!("IfNotPresent");
    bed.set_images(json!({image.clone(): {"tags": [if_not_present]}}))
        .await;
    bed.tag_status(&image, "1", "version 2", |t| {
        t["phase"] == "Succeeded" && t["version"] == 2
    })
    .await;
    assert_eq!(
        bed.pull_calls(),
        calls,
        "IfNotPresent found the image and did not pull"
    );
    bed.set_images(json!({image.clone(): {"tags": [tag("1", 3, policy())]}}))
        .await;
    bed.tag_status(&image, "1", "version 3", |t| {
        t["phase"] == "Succeeded" && t["version"] == 3
    })
    .await;
    assert_eq!(bed.pull_calls(), calls + 1, "Always pulls again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_digest_tag_pulls_by_digest() {
    let bed = Bed::start("puller-digest", 2).await;
    let env = TestEnv::get();
    let client = kruised::cri::CriClient::connect(
        &kruised::cri::RuntimeEndpoint::parse(env.runtime_endpoint()).unwrap(),
        None,
    )
    .await
    .unwrap();
    let image = env.image("test/busybox");
    client
        .pull_image(
            kruised::proto::runtime::v1::PullImageRequest {
                image: Some(kruised::cri::client::image_spec(&format!("{image}:1"))),
                ..Default::default()
            },
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let status = client
        .image_status(&format!("{image}:1"))
        .await
        .unwrap()
        .unwrap();
    let digest = status.repo_digests[0]
        .split('@')
        .nth(1)
        .unwrap()
        .to_string();
    bed.create(json!({image.clone(): {"tags": [tag(&digest, 1, policy())]}}))
        .await;
    let done = bed
        .tag_status(&image, &digest, "digest pull", |t| {
            t["phase"] == "Succeeded"
        })
        .await;
    assert_eq!(done["imageID"], format!("{image}@{}", status.id));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_pull_times_out_per_attempt_and_fails_after_backoff_limit_plus_one() {
    let env = TestEnv::get();
    let proxy = testbed::proxy::Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        env.registry().parse().unwrap(),
        0,
    )
    .await
    .unwrap();
    testbed::proxy::trust_plain_http(&env.dir().join("certs.d"), proxy.addr()).unwrap();
    let bed = Bed::start("puller-timeout", 2).await;
    let image = format!("{}/test/big", proxy.addr());
    let quick = json!({"timeoutSeconds": 1, "backoffLimit": 1});
    bed.create(json!({image.clone(): {"tags": [tag("1", 1, quick)]}}))
        .await;
    let pulling = bed
        .tag_status(&image, "1", "Pulling", |t| t["phase"] == "Pulling")
        .await;
    assert!(pulling["startTime"].is_string());
    let failed = bed
        .tag_status(&image, "1", "Failed", |t| t["phase"] == "Failed")
        .await;
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("timed out after 1s (attempt 2 of 2)"),
        "{message}"
    );
    assert_eq!(bed.pull_calls(), 2);
}

async fn throttled(rate: u64) -> testbed::proxy::Proxy {
    let env = TestEnv::get();
    let proxy = testbed::proxy::Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        env.registry().parse().unwrap(),
        rate,
    )
    .await
    .unwrap();
    testbed::proxy::trust_plain_http(&env.dir().join("certs.d"), proxy.addr()).unwrap();
    proxy
}

/// Removes every image of repository `path` (under any registry address, e.g. earlier
/// proxies) from containerd, so that the next pull downloads every byte again: blobs
/// are shared by digest and live as long as any image references them.
async fn forget_repository(path: &str) {
    let env = TestEnv::get();
    let client = kruised::cri::CriClient::connect(
        &kruised::cri::RuntimeEndpoint::parse(env.runtime_endpoint()).unwrap(),
        None,
    )
    .await
    .unwrap();
    for image in client.list_images(None).await.unwrap() {
        if image
            .repo_tags
            .iter()
            .chain(image.repo_digests.iter())
            .any(|r| r.contains(&format!("/{path}")))
        {
            client.remove_image(&image.id).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_is_real_monotonic_and_strictly_between_0_and_100_during_a_throttled_pull() {
    // Each test gets its own proxy port, so containerd sees a new repository name and
    // downloads every blob (blobs are shared by digest, so remove the image first).
    let proxy = throttled(25 * 1024 * 1024).await;
    let bed = Bed::start("puller-progress", 2).await;
    let image = format!("{}/test/huge", proxy.addr());
    forget_repository("test/huge").await;
    bed.create(json!({image.clone(): {"tags": [tag("1", 1, policy())]}}))
        .await;
    let mut seen: Vec<i64> = Vec::new();
    let start = Instant::now();
    loop {
        let status = bed.status().await;
        let found = status["imageStatuses"][&image]["tags"]
            .as_array()
            .and_then(|tags| tags.iter().find(|t| t["tag"] == "1"))
            .cloned();
        if let Some(found) = found {
            if let Some(progress) = found["progress"].as_i64()
                && seen.last() != Some(&progress)
            {
                seen.push(progress);
            }
            if found["phase"] == "Succeeded" || found["phase"] == "Failed" {
                assert_eq!(found["phase"], "Succeeded", "{found}");
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "pull did not finish: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "monotonic: {seen:?}");
    let between: Vec<&i64> = seen.iter().filter(|p| **p > 0 && **p < 100).collect();
    assert!(
        between.len() >= 2,
        "progress strictly between 0 and 100 at least twice: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&100));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_bump_or_removal_cancels_the_running_pull() {
    let proxy = throttled(0).await;
    let bed = Bed::start("puller-cancel", 2).await;
    let image = format!("{}/test/big", proxy.addr());
    bed.create(json!({image.clone(): {"tags": [tag("1", 1, policy())]}}))
        .await;
    bed.tag_status(&image, "1", "Pulling v1", |t| {
        t["phase"] == "Pulling" && t["version"] == 1
    })
    .await;
    bed.set_images(json!({image.clone(): {"tags": [tag("1", 2, policy())]}}))
        .await;
    bed.tag_status(&image, "1", "Pulling v2", |t| {
        t["phase"] == "Pulling" && t["version"] == 2
    })
    .await;
    // The first pull was cancelled: the version-1 worker never reports again.
    bed.set_images(json!(null)).await;
    let start = Instant::now();
    loop {
        let status = bed.status().await;
        if status["imageStatuses"].is_null() && status["desired"] == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tag removal clears its status: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both CRI pulls ended (cancelled), none succeeded.
    let text = bed.metrics.encode();
    assert!(
        !text.contains("kruised_image_pull_tags_total{result=\"succeeded\"}"),
        "{text}"
    );
    let in_flight = text
        .lines()
        .find(|l| l.starts_with("kruised_image_pulls_in_flight "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok());
    let start = Instant::now();
    let mut in_flight = in_flight;
    while in_flight != Some(0) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pulls still in flight: {in_flight:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        in_flight = bed
            .metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("kruised_image_pulls_in_flight "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn active_deadline_fails_the_tag_with_kruises_message() {
    let proxy = throttled(0).await;
    let bed = Bed::start("puller-deadline", 2).await;
    let image = format!("{}/test/big", proxy.addr());
    let deadline = json!({"timeoutSeconds": 600, "backoffLimit": 3, "activeDeadlineSeconds": 2});
    bed.create(json!({image.clone(): {"tags": [tag("1", 1, deadline)]}}))
        .await;
    let failed = bed
        .tag_status(&image, "1", "Failed", |t| t["phase"] == "Failed")
        .await;
    let message = failed["message"].as_str().unwrap();
    assert_eq!(message, "pulling exceeds the activeDeadlineSeconds");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_precise_messages_and_does_not_block_good_tags() {
    let bed = Bed::start("puller-bad-input", 2).await;
    let image = TestEnv::get().image("test/busybox");
    let negative = json!({"timeoutSeconds": -5});
    bed.create(json!({
        image.clone(): {"tags": [tag("1", 1, policy()), tag("Bad Tag!", 1, policy()), tag("2", 1, negative)]},
        "UPPER/Case": {"tags": [tag("1", 1, policy())]}
    }))
    .await;
    bed.tag_status(&image, "1", "good tag", |t| t["phase"] == "Succeeded")
        .await;
    let bad = bed
        .tag_status(&image, "Bad Tag!", "bad tag", |t| t["phase"] == "Failed")
        .await;
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("invalid tag \"Bad Tag!\""),
        "{bad}"
    );
    let negative = bed
        .tag_status(&image, "2", "negative timeout", |t| t["phase"] == "Failed")
        .await;
    assert!(
        negative["message"]
            .as_str()
            .unwrap()
            .contains("timeoutSeconds -5"),
        "{negative}"
    );
    let upper = bed
        .tag_status("UPPER/Case", "1", "bad name", |t| t["phase"] == "Failed")
        .await;
    assert!(
        upper["message"]
            .as_str()
            .unwrap()
            .contains("invalid image reference \"UPPER/Case:1\""),
        "{upper}"
    );
}

async fn pull_secret(bed: &Bed, name: &str, docker_config_json: &[u8]) {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    let namespaces: Api<Namespace> = Api::all(bed.server.client());
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "kruise-daemon-config"}})).unwrap();
    let _ = namespaces.create(&PostParams::default(), &namespace).await;
    let secrets: Api<Secret> = Api::namespaced(bed.server.client(), "kruise-daemon-config");
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(
            [(
                ".dockerconfigjson".to_string(),
                k8s_openapi::ByteString(docker_config_json.to_vec()),
            )]
            .into_iter()
            .collect(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

fn with_secret(name: &str) -> Value {
    json!([{"namespace": "kruise-daemon-config", "name": name, "mode": "batch"}])
}

#[tokio::test(flavor = "multi_thread")]
async fn htpasswd_registry_with_right_wrong_and_missing_credentials() {
    let env = TestEnv::get();
    let bed = Bed::start("puller-auth", 2).await;
    let registry = env.registry_auth();
    let config = |password: &str| {
        json!({"auths": {registry: {"username": env.var("REGISTRY_USER"), "password": password}}})
            .to_string()
    };
    pull_secret(
        &bed,
        "right",
        config(env.var("REGISTRY_PASSWORD")).as_bytes(),
    )
    .await;
    pull_secret(&bed, "wrong", config("not-the-password").as_bytes()).await;
    pull_secret(&bed, "broken", b"{not json").await;
    let right = format!("{registry}/test/busybox");
    bed.create(json!({
        right.clone(): {"pullSecrets": with_secret("right"), "tags": [tag("1", 1, policy())]},
    }))
    .await;
    bed.tag_status(&right, "1", "authenticated pull", |t| {
        t["phase"] == "Succeeded"
    })
    .await;
    for (secret, expected) in [
        (Some("wrong"), "401 Unauthorized"),
        (None, "401 Unauthorized"),
        (
            Some("broken"),
            "failed to parse secret kruise-daemon-config/broken",
        ),
        (
            Some("absent"),
            "pull secret kruise-daemon-config/absent not found",
        ),
    ] {
        let mut image = json!({"tags": [tag("1", 2, policy())]});
        if let Some(secret) = secret {
            image["pullSecrets"] = with_secret(secret);
        }
        bed.set_images(json!({right.clone(): image})).await;
        let failed = bed
            .tag_status(&right, "1", &format!("failure with {secret:?}"), |t| {
                t["phase"] == "Failed" && t["version"] == 2
            })
            .await;
        let message = failed["message"].as_str().unwrap();
        assert!(message.contains(expected), "{secret:?}: {message}");
        assert!(
            !message.contains(env.var("REGISTRY_PASSWORD")),
            "secrets never reach the status"
        );
        // Reset for the next case: drop the tag so version 2 can be written again.
        bed.set_images(json!(null)).await;
        let start = Instant::now();
        while !bed.status().await["imageStatuses"].is_null() {
            assert!(start.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_go_to_the_node_image_and_the_owning_jobs_and_metrics_count_results() {
    use k8s_openapi::api::core::v1::Event;
    let bed = Bed::start("puller-events", 2).await;
    let image = TestEnv::get().image("test/busybox");
    bed.create(
        json!({image.clone(): {"tags": [tag("1", 1, policy()), tag("no-such-tag", 1, policy())]}}),
    )
    .await;
    bed.tag_status(&image, "1", "Succeeded", |t| t["phase"] == "Succeeded")
        .await;
    bed.tag_status(&image, "no-such-tag", "Failed", |t| t["phase"] == "Failed")
        .await;
    let events: Api<Event> = Api::namespaced(bed.server.client(), "default");
    let start = Instant::now();
    let list = loop {
        let list = events.list(&Default::default()).await.unwrap().items;
        if list.len() >= 3 {
            break list;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "events: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let find = |reason: &str, kind: &str| {
        list.iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object.kind.as_deref() == Some(kind)
            })
            .unwrap_or_else(|| panic!("no {reason} event on a {kind}: {list:?}"))
    };
    let succeeded = find("PullImageSucceed", "NodeImage");
    assert_eq!(succeeded.type_.as_deref(), Some("Normal"));
    assert!(
        succeeded
            .message
            .as_deref()
            .unwrap()
            .starts_with(&format!("Image {image}:1, ecalpsedTime"))
    );
    let failed = find("PullImageFailed", "ImagePullJob");
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(failed.involved_object.name.as_deref(), Some("job1"));
    find("PullImageFailed", "NodeImage");
    let metrics = bed.metrics.encode();
    for expected in [
        "kruised_image_pull_tags_total{result=\"succeeded\"} 1",
        "kruised_image_pull_tags_total{result=\"failed\"} 1",
        "kruised_image_pulls_in_flight 0",
    ] {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }
    let bytes = metrics
        .lines()
        .find(|l| l.starts_with("kruised_image_pull_bytes_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(bytes > 1_000_000, "pulled bytes counted: {bytes}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_node_image_stops_every_pull() {
    let proxy = throttled(0).await;
    let bed = Bed::start("puller-deleted", 2).await;
    let image = format!("{}/test/big", proxy.addr());
    bed.create(json!({image.clone(): {"tags": [tag("1", 1, policy())]}}))
        .await;
    bed.tag_status(&image, "1", "Pulling", |t| t["phase"] == "Pulling")
        .await;
    bed.api()
        .delete(&bed.node, &Default::default())
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let in_flight = bed
            .metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("kruised_image_pulls_in_flight "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok());
        if in_flight == Some(0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the pull was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
