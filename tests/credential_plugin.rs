//! kubelet credential provider exec plugins run for real: a shell script
//! (`tests/credential_plugin/fake_provider.sh`) that logs every request it gets and
//! answers as its configured environment says.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kruised::credentials::plugin::ResponseProblem;
use kruised::credentials::{
    AuthAttempts, AuthConfig, CredentialPlugins, CredentialProviderConfig, Credentials,
    PluginConfigError, PluginError,
};
use kruised::imageref::ImageReference;

const SCRIPT: &str = include_str!("credential_plugin/fake_provider.sh");
/// The names the script is installed under; each is a plugin a config can name.
const PLUGIN_NAMES: [&str; 3] = ["fake-a", "fake-b", "fake-c"];
const V1: &str = "credentialprovider.kubelet.k8s.io/v1";

/// The plugin directory, written once before any test runs a plugin: writing an
/// executable while another thread forks can make its exec fail with "text file busy".
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("credential-plugin-bin");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("fake_provider.sh");
        std::fs::write(&script, SCRIPT).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        for name in PLUGIN_NAMES {
            std::os::unix::fs::symlink(&script, dir.join(name)).unwrap();
        }
        dir
    })
}

/// One test's plugin: its config entry and the log its runs append to.
struct Fake {
    name: &'static str,
    match_images: Vec<&'static str>,
    default_cache_duration: &'static str,
    api_version: &'static str,
    user: &'static str,
    env: Vec<(&'static str, String)>,
}

impl Fake {
    fn new(name: &'static str, log: &Path) -> Self {
        Self {
            name,
            match_images: vec!["*.registry.io"],
            default_cache_duration: "0s",
            api_version: V1,
            user: "alice",
            env: vec![
                ("FAKE_LOG", log.display().to_string()),
                ("FAKE_PASSWORD", "pw-of-alice".into()),
            ],
        }
    }

    fn env(mut self, name: &'static str, value: &str) -> Self {
        self.env.push((name, value.to_owned()));
        self
    }

    fn yaml(&self) -> String {
        let match_images = self
            .match_images
            .iter()
            .map(|image| format!("\"{image}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let env = self
            .env
            .iter()
            .map(|(name, value)| format!("{{name: {name}, value: \"{value}\"}}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "  - name: {}\n    matchImages: [{match_images}]\n    defaultCacheDuration: \"{}\"\n    apiVersion: {}\n    args: [\"{}\"]\n    env: [{env}]\n",
            self.name, self.default_cache_duration, self.api_version, self.user
        )
    }
}

fn config_yaml(fakes: &[Fake]) -> String {
    let providers: String = fakes.iter().map(Fake::yaml).collect();
    format!(
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n{providers}"
    )
}

fn plugins(fakes: &[Fake]) -> CredentialPlugins {
    let config = CredentialProviderConfig::parse(&config_yaml(fakes)).unwrap();
    CredentialPlugins::from_config(config, plugin_dir()).unwrap()
}

fn runs(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

fn usernames(credentials: &[AuthConfig]) -> Vec<&str> {
    credentials.iter().map(AuthConfig::username).collect()
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        plugin_dir();
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }
}

#[tokio::test]
async fn plugin_gets_the_request_on_stdin_with_args_and_env_and_its_credentials_are_used() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log)]);

    let found = plugins.lookup("quay.registry.io/org/app").await;

    assert_eq!(found, [AuthConfig::new("alice", "pw-of-alice")]);
    let request = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        request,
        "{\"kind\":\"CredentialProviderRequest\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"image\":\"quay.registry.io/org/app\"}\n"
    );
}

#[tokio::test]
async fn plugin_is_not_run_for_images_outside_its_match_images() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log)]);

    assert!(plugins.lookup("quay.io/org/app").await.is_empty());
    assert!(plugins.provide_each("registry.io/app").await.is_empty());
    assert_eq!(runs(&log), 0);
}

#[tokio::test]
async fn plugin_credentials_apply_only_to_images_their_auth_keys_match() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log).env("FAKE_AUTH_KEY", "other.registry.io")]);

    assert!(plugins.lookup("team.registry.io/app").await.is_empty());
    assert_eq!(runs(&log), 1);
    assert_eq!(
        usernames(&plugins.lookup("other.registry.io/app").await),
        ["alice"]
    );
}

#[tokio::test]
async fn image_cache_key_serves_the_same_image_from_cache_only() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log)
        .env("FAKE_CACHE_KEY_TYPE", "Image")
        .env("FAKE_CACHE_DURATION", "1h")]);

    plugins.lookup("a.registry.io/app").await;
    let cached = plugins.lookup("a.registry.io/app").await;
    assert_eq!(usernames(&cached), ["alice"]);
    assert_eq!(runs(&log), 1);

    plugins.lookup("a.registry.io/other").await;
    assert_eq!(runs(&log), 2);
}

#[tokio::test]
async fn registry_cache_key_serves_every_image_of_the_registry_from_cache() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log)
        .env("FAKE_CACHE_KEY_TYPE", "Registry")
        .env("FAKE_CACHE_DURATION", "1h")]);

    plugins.lookup("a.registry.io/app").await;
    let cached = plugins.lookup("a.registry.io/team/other").await;
    assert_eq!(usernames(&cached), ["alice"]);
    assert_eq!(runs(&log), 1);

    plugins.lookup("b.registry.io/app").await;
    assert_eq!(runs(&log), 2);
}

#[tokio::test]
async fn global_cache_key_serves_every_image_from_cache() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log)
        .env("FAKE_CACHE_KEY_TYPE", "Global")
        .env("FAKE_CACHE_DURATION", "1h")]);

    plugins.lookup("a.registry.io/app").await;
    plugins.lookup("b.registry.io/other").await;
    assert_eq!(
        usernames(&plugins.lookup("c.registry.io/x").await),
        ["alice"]
    );
    assert_eq!(runs(&log), 1);
}

#[tokio::test]
async fn zero_cache_duration_runs_the_plugin_every_time_despite_a_default() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let mut fake = Fake::new("fake-a", &log).env("FAKE_CACHE_DURATION", "0s");
    fake.default_cache_duration = "1h";
    let plugins = plugins(&[fake]);

    plugins.lookup("a.registry.io/app").await;
    plugins.lookup("a.registry.io/app").await;
    assert_eq!(runs(&log), 2);
}

#[tokio::test]
async fn default_cache_duration_applies_when_the_response_has_none() {
    let scratch = Scratch::new();
    let cached_log = scratch.log("cached");
    let uncached_log = scratch.log("uncached");
    let mut cached = Fake::new("fake-a", &cached_log);
    cached.default_cache_duration = "1h";
    let uncached = Fake::new("fake-b", &uncached_log);
    let plugins = plugins(&[cached, uncached]);

    plugins.lookup("a.registry.io/app").await;
    plugins.lookup("a.registry.io/app").await;
    assert_eq!(runs(&cached_log), 1);
    assert_eq!(runs(&uncached_log), 2);
}

#[tokio::test]
async fn cached_answer_expires_after_its_cache_duration() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log).env("FAKE_CACHE_DURATION", "1s")]);

    let started = Instant::now();
    plugins.lookup("a.registry.io/app").await;
    plugins.lookup("a.registry.io/app").await;
    assert_eq!(runs(&log), 1, "a fresh answer comes from the cache");

    let deadline = started + Duration::from_secs(10);
    while runs(&log) < 2 {
        assert!(Instant::now() < deadline, "the cached answer never expired");
        assert_eq!(
            usernames(&plugins.lookup("a.registry.io/app").await),
            ["alice"]
        );
        if runs(&log) < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn concurrent_lookups_of_one_image_run_the_plugin_once() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log)
        .env("FAKE_DELAY", "0.3")
        .env("FAKE_CACHE_DURATION", "1h")]);

    let lookups = (0..5).map(|_| plugins.lookup("a.registry.io/app"));
    let results = futures::future::join_all(lookups).await;

    assert!(results.iter().all(|found| usernames(found) == ["alice"]));
    assert_eq!(runs(&log), 1);
}

#[tokio::test]
async fn every_matching_plugin_contributes_and_each_keeps_its_own_cache() {
    let scratch = Scratch::new();
    let log_a = scratch.log("a");
    let log_b = scratch.log("b");
    let mut fake_b = Fake::new("fake-b", &log_b)
        .env("FAKE_AUTH_KEY", "team.registry.io")
        .env("FAKE_CACHE_DURATION", "1h");
    fake_b.user = "bob";
    let plugins = plugins(&[Fake::new("fake-a", &log_a), fake_b]);

    let found = plugins.lookup("team.registry.io/app").await;
    // One keyring: the literal key of fake-b sorts before fake-a's wildcard.
    assert_eq!(usernames(&found), ["bob", "alice"]);
    plugins.lookup("team.registry.io/app").await;
    assert_eq!((runs(&log_a), runs(&log_b)), (2, 1));
}

#[tokio::test]
async fn older_plugin_api_versions_are_spoken_when_configured() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let alpha = "credentialprovider.kubelet.k8s.io/v1alpha1";
    let mut fake = Fake::new("fake-a", &log).env("FAKE_API_VERSION", alpha);
    fake.api_version = alpha;
    let plugins = plugins(&[fake]);

    assert_eq!(
        usernames(&plugins.lookup("a.registry.io/app").await),
        ["alice"]
    );
    assert!(std::fs::read_to_string(&log).unwrap().contains(alpha));
}

#[tokio::test]
async fn answer_with_another_api_version_is_rejected() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log).env(
        "FAKE_API_VERSION",
        "credentialprovider.kubelet.k8s.io/v1beta1",
    )]);

    let outcomes = plugins.provide_each("a.registry.io/app").await;
    assert_eq!(outcomes.len(), 1);
    let error = outcomes.into_iter().next().unwrap().result.unwrap_err();
    assert!(
        matches!(
            &error,
            PluginError::InvalidResponse {
                problem: ResponseProblem::ApiVersion { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "credential provider plugin \"fake-a\" answered for image \"a.registry.io/app\" with apiVersion \"credentialprovider.kubelet.k8s.io/v1beta1\", expected \"credentialprovider.kubelet.k8s.io/v1\""
    );
    assert!(plugins.lookup("a.registry.io/app").await.is_empty());
}

#[tokio::test]
async fn failing_plugin_reports_its_exit_status_and_stderr() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log).env("FAKE_EXIT", "3")]);

    let outcome = plugins.provide_each("a.registry.io/app").await.remove(0);
    assert_eq!(outcome.plugin, "fake-a");
    assert_eq!(
        outcome.result.unwrap_err().to_string(),
        "credential provider plugin \"fake-a\" failed for image \"a.registry.io/app\": exit status 3: fake failure for alice"
    );
    assert!(plugins.lookup("a.registry.io/app").await.is_empty());
}

#[tokio::test]
async fn invalid_output_is_reported_without_repeating_it() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log).env(
        "FAKE_STDOUT",
        r#"{\"auth\":{\"r.io\":{\"password\":\"hunter2\""#,
    )]);

    let error = plugins
        .provide_each("a.registry.io/app")
        .await
        .remove(0)
        .result
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("invalid JSON"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!format!("{error:?}").contains("hunter2"));
}

#[tokio::test]
async fn plugin_that_hangs_is_killed_at_the_timeout() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let plugins = plugins(&[Fake::new("fake-a", &log).env("FAKE_SLEEP", "30")])
        .with_exec_timeout(Duration::from_millis(300));

    let started = Instant::now();
    let error = plugins
        .provide_each("a.registry.io/app")
        .await
        .remove(0)
        .result
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(error, PluginError::Timeout { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "credential provider plugin \"fake-a\" did not answer for image \"a.registry.io/app\" within 300ms"
    );
}

#[tokio::test]
async fn credentials_try_pull_secrets_before_plugins() {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    let scratch = Scratch::new();
    let log = scratch.log("a");
    let credentials = Credentials::new(plugins(&[Fake::new("fake-a", &log)]));
    let secret = Secret {
        metadata: ObjectMeta {
            namespace: Some("kruise-daemon-config".into()),
            name: Some("regcred-3fa9c1".into()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            ByteString(
                br#"{"auths":{"team.registry.io":{"username":"from-secret","password":"p"}}}"#
                    .to_vec(),
            ),
        )])),
        ..Secret::default()
    };
    let image = ImageReference::parse("team.registry.io/app:1").unwrap();

    let attempts = credentials
        .auth_attempts(&image, std::slice::from_ref(&secret))
        .await
        .unwrap();
    match attempts {
        AuthAttempts::Credentials(found) => {
            assert_eq!(usernames(&found), ["from-secret", "alice"])
        }
        AuthAttempts::Anonymous => panic!("credentials matched"),
    }

    let elsewhere = ImageReference::parse("quay.io/org/app").unwrap();
    assert_eq!(
        credentials
            .auth_attempts(&elsewhere, &[secret])
            .await
            .unwrap(),
        AuthAttempts::Anonymous
    );
}

#[tokio::test]
async fn missing_config_file_means_no_plugins() {
    let scratch = Scratch::new();
    let plugins = CredentialPlugins::load(&scratch.dir.path().join("absent.yaml"), plugin_dir())
        .await
        .unwrap();
    assert!(plugins.is_empty());
    assert!(plugins.lookup("a.registry.io/app").await.is_empty());
}

#[tokio::test]
async fn config_file_is_loaded_with_its_plugins() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let file = scratch.dir.path().join("CredentialProviderPlugin.yaml");
    std::fs::write(&file, config_yaml(&[Fake::new("fake-a", &log)])).unwrap();

    let plugins = CredentialPlugins::load(&file, plugin_dir()).await.unwrap();
    assert_eq!(plugins.names().collect::<Vec<_>>(), ["fake-a"]);
    assert_eq!(
        usernames(&plugins.lookup("a.registry.io/app").await),
        ["alice"]
    );
}

#[tokio::test]
async fn loading_fails_precisely_for_bad_setups() {
    let scratch = Scratch::new();
    let log = scratch.log("a");
    let file = scratch.dir.path().join("config.yaml");

    std::fs::write(&file, config_yaml(&[Fake::new("fake-a", &log)])).unwrap();
    let missing_dir = scratch.dir.path().join("no-plugins");
    let error = CredentialPlugins::load(&file, &missing_dir)
        .await
        .unwrap_err();
    assert!(
        matches!(error, PluginConfigError::BinDirMissing { .. }),
        "{error}"
    );

    let mut unknown = Fake::new("fake-a", &log);
    unknown.name = "not-installed";
    std::fs::write(&file, config_yaml(&[unknown])).unwrap();
    let error = CredentialPlugins::load(&file, plugin_dir())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "credential provider plugin binary {} does not exist",
            plugin_dir().join("not-installed").display()
        )
    );

    std::fs::write(
        &file,
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders: []\n",
    )
    .unwrap();
    let error = CredentialPlugins::load(&file, plugin_dir())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "invalid credential provider config {}: providers: Required value: at least 1 item in plugins is required",
            file.display()
        )
    );
}
