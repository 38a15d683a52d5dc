//! The image puller with credentials from a kubelet credential provider exec plugin only
//! (no pull Secret), against real containerd and the htpasswd registry: the plugin is
//! the test bed's `test-credential-provider` binary, registered the way the agent does
//! from `--plugin-config-file` and `--plugin-bin-dir`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kruised::apiversions::KruiseVersion;
use kruised::credentials::plugin::CredentialPlugins;
use kruised::cri::DiscoveryConfig;
use kruised::metrics::Metrics;
use kruised::readiness::Readiness;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use testbed::apiserver::{ApiServer, ApiServerConfig};
use testbed::testenv::TestEnv;

const REFERENCE_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");
const PLUGIN: &str = "test-credential-provider";

/// The tests remove and pull the same images of one containerd: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the plugin hands out and how it is registered.
struct Plugin {
    password: String,
    match_images: String,
    cache_duration: Option<&'static str>,
}

/// A plugin directory and config file, as an operator installs them on a node.
struct Installed {
    dir: tempfile::TempDir,
}

impl Installed {
    fn new(plugin: &Plugin) -> Self {
        let env = TestEnv::get();
        let dir = tempfile::tempdir().unwrap();
        let bin_dir = dir.path().join("plugins");
        std::fs::create_dir(&bin_dir).unwrap();
        std::fs::copy(
            env!("CARGO_BIN_EXE_test-credential-provider"),
            bin_dir.join(PLUGIN),
        )
        .unwrap();
        let mut vars = vec![
            (
                "TEST_PROVIDER_USERNAME",
                env.var("REGISTRY_USER").to_string(),
            ),
            ("TEST_PROVIDER_PASSWORD", plugin.password.clone()),
            (
                "TEST_PROVIDER_LOG",
                dir.path().join("runs.log").display().to_string(),
            ),
        ];
        if let Some(duration) = plugin.cache_duration {
            vars.push(("TEST_PROVIDER_CACHE_DURATION", duration.to_string()));
        }
        let vars: Vec<String> = vars
            .iter()
            .map(|(name, value)| format!("      - {{name: {name}, value: \"{value}\"}}\n"))
            .collect();
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - name: {PLUGIN}\n    matchImages: [\"{}\"]\n    defaultCacheDuration: \"0s\"\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n    env:\n{}",
            plugin.match_images,
            vars.concat()
        );
        std::fs::write(dir.path().join("CredentialProviderPlugin.yaml"), config).unwrap();
        Self { dir }
    }

    fn config_file(&self) -> PathBuf {
        self.dir.path().join("CredentialProviderPlugin.yaml")
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// The requests the plugin got, one per run.
    fn runs(&self) -> Vec<Value> {
        read_runs(&self.dir.path().join("runs.log"))
    }
}

fn read_runs(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

struct Bed {
    server: ApiServer,
    node: String,
    plugin: Installed,
    _trigger: kruised::agent::ShutdownTrigger,
}

impl Bed {
    async fn start(node: &str, plugin: &Plugin) -> Self {
        let env = TestEnv::get();
        let plugin = Installed::new(plugin);
        let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
        server
            .apply_crds_from_dir(Path::new(REFERENCE_CRDS))
            .unwrap();
        let metrics = Metrics::new();
        let runtimes = DiscoveryConfig {
            runtime_endpoint: Some(env.runtime_endpoint().to_string()),
            ..Default::default()
        }
        .discover(Some(metrics.cri.clone()))
        .await
        .unwrap();
        // What the agent does with --plugin-config-file and --plugin-bin-dir.
        let plugins = CredentialPlugins::load(&plugin.config_file(), &plugin.bin_dir())
            .await
            .unwrap();
        assert_eq!(plugins.names().collect::<Vec<_>>(), [PLUGIN]);
        let puller = kruised::imagepuller::build(
            server.client(),
            node,
            KruiseVersion::V1beta1,
            &runtimes,
            2,
            metrics,
            plugins,
        );
        let readiness = Readiness::new();
        let (trigger, shutdown) = kruised::agent::shutdown_channel();
        tokio::spawn(puller.run(readiness.register("nodeImageInformerSynced"), shutdown));
        Self {
            server,
            node: node.to_string(),
            plugin,
            _trigger: trigger,
        }
    }

    fn api(&self) -> Api<DynamicObject> {
        Api::all_with(
            self.server.client(),
            &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
        )
    }

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

    /// Polls until the tag is Succeeded or Failed, returning its status.
    async fn finished(&self, image: &str, tag: &str) -> Value {
        let start = Instant::now();
        loop {
            let status = self.api().get(&self.node).await.unwrap().data["status"].clone();
            let found = status["imageStatuses"][image]["tags"]
                .as_array()
                .and_then(|tags| tags.iter().find(|t| t["tag"] == tag).cloned());
            if let Some(found) = found
                && (found["phase"] == "Succeeded" || found["phase"] == "Failed")
            {
                return found;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "timed out waiting for {image}:{tag} to finish; status: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn tag(tag: &str) -> Value {
    json!({"tag": tag, "version": 1, "createdAt": "2026-11-25T10:00:00Z",
           "imagePullPolicy": "Always",
           "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}})
}

/// Removes every image of the auth registry's busybox, so that pulls really go to the
/// registry (containerd shares blobs by digest across repositories).
async fn forget_auth_images() -> kruised::cri::CriClient {
    let env = TestEnv::get();
    let client = kruised::cri::CriClient::connect(
        &kruised::cri::RuntimeEndpoint::parse(env.runtime_endpoint()).unwrap(),
        None,
    )
    .await
    .unwrap();
    let repository = format!("{}/test/busybox", env.registry_auth());
    for image in client.list_images(None).await.unwrap() {
        if image
            .repo_tags
            .iter()
            .chain(&image.repo_digests)
            .any(|name| name.starts_with(&repository))
        {
            client.remove_image(&image.id).await.unwrap();
        }
    }
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_credentials_pull_from_the_htpasswd_registry_and_are_cached_for_their_duration() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::get();
    let registry = env.registry_auth();
    let cri = forget_auth_images().await;
    let bed = Bed::start(
        "plugin-right",
        &Plugin {
            password: env.var("REGISTRY_PASSWORD").to_string(),
            match_images: registry.to_string(),
            cache_duration: Some("1h"),
        },
    )
    .await;
    let image = format!("{registry}/test/busybox");
    bed.create(json!({image.clone(): {"tags": [tag("1")]}}))
        .await;
    let done = bed.finished(&image, "1").await;
    assert_eq!(done["phase"], "Succeeded", "{done}");
    let runs = bed.plugin.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["kind"], "CredentialProviderRequest");
    assert_eq!(runs[0]["image"], image);

    // A second tag of the same repository, by digest: another CRI pull, which needs the
    // registry's credentials again; the plugin's answer is still cached.
    let status = cri
        .image_status(&format!("{image}:1"))
        .await
        .unwrap()
        .unwrap();
    let digest = status.repo_digests[0]
        .split('@')
        .nth(1)
        .unwrap()
        .to_string();
    bed.set_images(json!({image.clone(): {"tags": [tag("1"), tag(&digest)]}}))
        .await;
    let done = bed.finished(&image, &digest).await;
    assert_eq!(done["phase"], "Succeeded", "{done}");
    assert_eq!(
        bed.plugin.runs().len(),
        1,
        "the cached answer served the second pull"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_cache_duration_every_pull_runs_the_plugin_again() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::get();
    let registry = env.registry_auth();
    let cri = forget_auth_images().await;
    let bed = Bed::start(
        "plugin-uncached",
        &Plugin {
            password: env.var("REGISTRY_PASSWORD").to_string(),
            match_images: registry.to_string(),
            cache_duration: Some("0s"),
        },
    )
    .await;
    let image = format!("{registry}/test/busybox");
    bed.create(json!({image.clone(): {"tags": [tag("1")]}}))
        .await;
    assert_eq!(bed.finished(&image, "1").await["phase"], "Succeeded");
    let status = cri
        .image_status(&format!("{image}:1"))
        .await
        .unwrap()
        .unwrap();
    let digest = status.repo_digests[0]
        .split('@')
        .nth(1)
        .unwrap()
        .to_string();
    bed.set_images(json!({image.clone(): {"tags": [tag("1"), tag(&digest)]}}))
        .await;
    assert_eq!(bed.finished(&image, &digest).await["phase"], "Succeeded");
    assert_eq!(bed.plugin.runs().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_plugin_credentials_fail_the_tag_with_the_registrys_401_and_no_anonymous_retry() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::get();
    let registry = env.registry_auth();
    forget_auth_images().await;
    let bed = Bed::start(
        "plugin-wrong",
        &Plugin {
            password: "not-the-password".into(),
            match_images: registry.to_string(),
            cache_duration: None,
        },
    )
    .await;
    let image = format!("{registry}/test/busybox");
    bed.create(json!({image.clone(): {"tags": [tag("1")]}}))
        .await;
    let failed = bed.finished(&image, "1").await;
    assert_eq!(failed["phase"], "Failed");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("Failed to pull image reference \"{image}:1\": "))
            && message.contains("401 Unauthorized"),
        "{message}"
    );
    assert!(
        !message.contains("not-the-password"),
        "secrets never reach the status"
    );
    assert!(failed["completionTime"].is_string());
    assert_eq!(
        bed.plugin.runs().len(),
        1,
        "rejected credentials are final: no retry, no anonymous attempt"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_whose_match_images_miss_the_registry_is_not_run_and_the_pull_is_anonymous() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::get();
    let registry = env.registry_auth();
    forget_auth_images().await;
    let bed = Bed::start(
        "plugin-unmatched",
        &Plugin {
            password: env.var("REGISTRY_PASSWORD").to_string(),
            match_images: "*.example.com".into(),
            cache_duration: None,
        },
    )
    .await;
    let image = format!("{registry}/test/busybox");
    bed.create(json!({image.clone(): {"tags": [tag("1")]}}))
        .await;
    let failed = bed.finished(&image, "1").await;
    assert_eq!(failed["phase"], "Failed");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("401 Unauthorized"),
        "{failed}"
    );
    assert!(bed.plugin.runs().is_empty());
}
