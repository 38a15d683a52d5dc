//! kubelet credential provider exec plugins (`pkg/credentialprovider/plugin`), as
//! kruise-daemon registers them at start-up from `--plugin-config-file` and
//! `--plugin-bin-dir` (spec §1.2 step 9, issue #866 → PR #1383).
//!
//! * The config is a `CredentialProviderConfig` (`kubelet.config.k8s.io/v1`, also
//!   `v1beta1` and `v1alpha1`), YAML or JSON, validated like the kubelet validates it.
//!   A missing config file means no plugins.
//! * A plugin runs only for images matching one of its `matchImages` (the keyring's URL
//!   glob rules). It is started as `<bin-dir>/<name> <args...>` with the daemon's
//!   environment plus the configured `env`, gets a `CredentialProviderRequest` with the
//!   image on stdin and must print a `CredentialProviderResponse` of the same apiVersion
//!   on stdout within one minute.
//! * Answers are cached per plugin under the image, its registry or one global key, as the
//!   response's `cacheKeyType` says, for its `cacheDuration`, else the plugin's
//!   `defaultCacheDuration`; zero means no caching. Lookups try image, registry, global.
//! * The `auth` entries of all matching plugins form one keyring, matched against the
//!   image like pull Secrets.
//!
//! A plugin that fails yields no credentials (the kubelet logs and carries on, and so do
//! we); [`CredentialPlugins::provide_each`] exposes each plugin's error.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::AuthConfig;
use super::dockerconfig::DockerConfigEntry;
use super::keyring::{Keyring, is_valid_schemeless_url, urls_match};

/// Where kruise-daemon looks for the plugin config (`--plugin-config-file`).
pub const DEFAULT_PLUGIN_CONFIG_FILE: &str = "/kruise/CredentialProviderPlugin.yaml";
/// Where kruise-daemon looks for plugin binaries (`--plugin-bin-dir`).
pub const DEFAULT_PLUGIN_BIN_DIR: &str = "/kruise/plugins";
/// How long a plugin may run: the kubelet's catch-all one minute.
pub const PLUGIN_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// The API group of `CredentialProviderConfig`.
const CONFIG_GROUP: &str = "kubelet.config.k8s.io";
/// The versions of `CredentialProviderConfig` accepted.
const CONFIG_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha1"];
/// The plugin protocol versions a provider may name.
const PROVIDER_API_VERSIONS: [&str; 3] = [
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
];
/// The most of a plugin's stderr an error message carries.
const STDERR_LIMIT: usize = 1024;

/// A validated `CredentialProviderConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialProviderConfig {
    /// The plugins, in config order.
    pub providers: Vec<CredentialProvider>,
}

/// One exec plugin of a [`CredentialProviderConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialProvider {
    /// The plugin's name, which is also its binary's name in the plugin directory.
    pub name: String,
    /// The images it serves, as keyring URL globs (`*.dkr.ecr.*.amazonaws.com`).
    pub match_images: Vec<String>,
    /// How long to cache answers that carry no `cacheDuration`.
    pub default_cache_duration: Duration,
    /// The plugin protocol version, e.g. `credentialprovider.kubelet.k8s.io/v1`.
    pub api_version: String,
    /// Command-line arguments.
    pub args: Vec<String>,
    /// Extra environment variables, on top of the daemon's environment.
    pub env: Vec<ExecEnvVar>,
}

/// An environment variable for a plugin. `Debug` hides the value, which may be a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ExecEnvVar {
    /// The variable's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

impl fmt::Debug for ExecEnvVar {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ExecEnvVar")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// Everything wrong with a config, one problem per entry (`providers[0].name: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigProblems(pub Vec<String>);

/// Why the plugins could not be set up. kruise-daemon logs this and runs without plugins.
#[derive(Debug, thiserror::Error)]
pub enum PluginConfigError {
    /// The config file exists but cannot be read.
    #[error("cannot read credential provider config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The config does not parse or validate.
    #[error("invalid credential provider config {path}: {problems}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        problems: ConfigProblems,
    },
    /// The plugin directory does not exist.
    #[error("credential provider plugin directory {dir} does not exist")]
    BinDirMissing {
        /// The directory.
        dir: PathBuf,
    },
    /// The plugin directory cannot be inspected.
    #[error("cannot inspect credential provider plugin directory {dir}: {source}")]
    BinDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A configured plugin has no binary.
    #[error("credential provider plugin binary {path} does not exist")]
    BinaryMissing {
        /// Where the binary should be.
        path: PathBuf,
    },
    /// A configured plugin's binary cannot be inspected.
    #[error("cannot inspect credential provider plugin binary {path}: {source}")]
    BinaryInspect {
        /// The binary.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A configured plugin's binary is not an executable file.
    #[error("credential provider plugin binary {path} is not an executable file")]
    BinaryNotExecutable {
        /// The binary.
        path: PathBuf,
    },
}

/// Why one plugin gave no credentials for one image. Never contains the plugin's stdout,
/// which may hold credentials.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The binary could not be started.
    #[error("cannot run credential provider plugin {plugin:?} for image {image:?}: {source}")]
    Spawn {
        /// The plugin's name.
        plugin: String,
        /// The image asked about.
        image: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The plugin did not finish in time and was killed.
    #[error(
        "credential provider plugin {plugin:?} did not answer for image {image:?} within {timeout:?}"
    )]
    Timeout {
        /// The plugin's name.
        plugin: String,
        /// The image asked about.
        image: String,
        /// The limit.
        timeout: Duration,
    },
    /// The plugin exited unsuccessfully.
    #[error("credential provider plugin {plugin:?} failed for image {image:?}: {status}{}", stderr_suffix(.stderr))]
    Failed {
        /// The plugin's name.
        plugin: String,
        /// The image asked about.
        image: String,
        /// `exit status N` or `killed by signal N`.
        status: String,
        /// The start of its stderr.
        stderr: String,
    },
    /// The plugin's stdout is not a usable `CredentialProviderResponse`.
    #[error("credential provider plugin {plugin:?} answered for image {image:?} with {problem}")]
    InvalidResponse {
        /// The plugin's name.
        plugin: String,
        /// The image asked about.
        image: String,
        /// What is wrong with the answer.
        problem: ResponseProblem,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// What is wrong with a plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseProblem {
    /// stdout is not JSON.
    #[error("invalid JSON ({0})")]
    InvalidJson(String),
    /// The answer's apiVersion is not the request's.
    #[error("apiVersion {found:?}, expected {expected:?}")]
    ApiVersion {
        /// What the plugin sent.
        found: String,
        /// The provider's apiVersion.
        expected: String,
    },
    /// The answer is not a `CredentialProviderResponse`.
    #[error("kind {found:?}, expected \"CredentialProviderResponse\"")]
    Kind {
        /// What the plugin sent.
        found: String,
    },
    /// `cacheKeyType` is missing or unknown.
    #[error("cacheKeyType {found:?}, expected \"Image\", \"Registry\" or \"Global\"")]
    CacheKeyType {
        /// What the plugin sent.
        found: String,
    },
    /// `cacheDuration` is not a Go duration.
    #[error("invalid cacheDuration {value:?}: {reason}")]
    CacheDuration {
        /// What the plugin sent.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A value has the wrong JSON type.
    #[error("{path} that is not {expected}")]
    WrongType {
        /// Where, e.g. `auth["*.registry.io"].password`.
        path: String,
        /// What it must be.
        expected: &'static str,
    },
}

/// The result of asking one plugin about one image.
#[derive(Debug)]
pub struct PluginOutcome {
    /// The plugin's name.
    pub plugin: String,
    /// Its registry entries (from cache or a fresh run), or why there are none.
    pub result: Result<Vec<DockerConfigEntry>, PluginError>,
}

impl CredentialProviderConfig {
    /// Parses and validates a config (YAML or JSON) the way the kubelet does: known
    /// apiVersion and kind, no unknown fields, at least one provider, names usable as file
    /// names and unique, a known provider apiVersion, at least one parseable matchImage,
    /// and a `defaultCacheDuration` of at least zero. `tokenAttributes` (service account
    /// tokens for pods) has no meaning for a node agent and is rejected.
    pub fn parse(text: &str) -> Result<Self, ConfigProblems> {
        let raw: RawConfig =
            serde_yaml::from_str(text).map_err(|error| ConfigProblems(vec![error.to_string()]))?;
        let mut problems = Vec::new();
        match raw.api_version.as_deref().and_then(|api| api.split_once('/')) {
            Some((CONFIG_GROUP, version)) if CONFIG_VERSIONS.contains(&version) => {}
            _ => problems.push(format!(
                "apiVersion: unsupported value {:?}: supported values: \"kubelet.config.k8s.io/v1\", \"kubelet.config.k8s.io/v1beta1\", \"kubelet.config.k8s.io/v1alpha1\"",
                raw.api_version.unwrap_or_default()
            )),
        }
        if raw.kind.as_deref() != Some("CredentialProviderConfig") {
            problems.push(format!(
                "kind: unsupported value {:?}: expected \"CredentialProviderConfig\"",
                raw.kind.unwrap_or_default()
            ));
        }
        let raw_providers = raw.providers.unwrap_or_default();
        if raw_providers.is_empty() {
            problems
                .push("providers: Required value: at least 1 item in plugins is required".into());
        }
        let mut seen_names = HashSet::new();
        let mut providers = Vec::with_capacity(raw_providers.len());
        for (i, raw) in raw_providers.into_iter().enumerate() {
            let field = |name: &str| format!("providers[{i}].{name}");
            let name = raw.name.unwrap_or_default();
            if name.is_empty() {
                problems.push(format!("{}: Required value", field("name")));
            } else if name.contains('/') || name.contains(' ') || name == "." || name == ".." {
                problems.push(format!(
                    "{}: Invalid value {name:?}: provider name cannot contain '/' or spaces or be '.' or '..'",
                    field("name")
                ));
            } else if !seen_names.insert(name.clone()) {
                problems.push(format!("{}: Duplicate value {name:?}", field("name")));
            }
            let api_version = raw.api_version.unwrap_or_default();
            if api_version.is_empty() {
                problems.push(format!("{}: Required value", field("apiVersion")));
            } else if !PROVIDER_API_VERSIONS.contains(&api_version.as_str()) {
                problems.push(format!(
                    "{}: Unsupported value {api_version:?}: supported values: {}",
                    field("apiVersion"),
                    PROVIDER_API_VERSIONS.map(|v| format!("{v:?}")).join(", ")
                ));
            }
            let match_images = raw.match_images.unwrap_or_default();
            if match_images.is_empty() {
                problems.push(format!(
                    "{}: Required value: at least 1 item in matchImages is required",
                    field("matchImages")
                ));
            }
            for match_image in &match_images {
                if !is_valid_schemeless_url(match_image) {
                    problems.push(format!(
                        "{}: Invalid value {match_image:?}: match image is invalid",
                        field("matchImages")
                    ));
                }
            }
            let default_cache_duration = match raw.default_cache_duration.as_deref() {
                None => {
                    problems.push(format!("{}: Required value", field("defaultCacheDuration")));
                    Duration::ZERO
                }
                Some(text) => match parse_go_duration(text) {
                    Ok(nanos) if nanos < 0 => {
                        problems.push(format!(
                            "{}: Invalid value {text:?}: defaultCacheDuration must be greater than or equal to 0",
                            field("defaultCacheDuration")
                        ));
                        Duration::ZERO
                    }
                    Ok(nanos) => nanos_to_duration(nanos),
                    Err(reason) => {
                        problems.push(format!(
                            "{}: Invalid value {text:?}: {reason}",
                            field("defaultCacheDuration")
                        ));
                        Duration::ZERO
                    }
                },
            };
            if raw.token_attributes.is_some() {
                problems.push(format!(
                    "{}: Forbidden: service account token mode is for pod image pulls and is not supported by kruised",
                    field("tokenAttributes")
                ));
            }
            providers.push(CredentialProvider {
                name,
                match_images,
                default_cache_duration,
                api_version,
                args: raw.args.unwrap_or_default(),
                env: raw
                    .env
                    .unwrap_or_default()
                    .into_iter()
                    .map(|env| ExecEnvVar {
                        name: env.name,
                        value: env.value.unwrap_or_default(),
                    })
                    .collect(),
            });
        }
        if problems.is_empty() {
            Ok(Self { providers })
        } else {
            Err(ConfigProblems(problems))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    api_version: Option<String>,
    kind: Option<String>,
    providers: Option<Vec<RawProvider>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProvider {
    name: Option<String>,
    match_images: Option<Vec<String>>,
    default_cache_duration: Option<String>,
    api_version: Option<String>,
    args: Option<Vec<String>>,
    env: Option<Vec<RawEnvVar>>,
    token_attributes: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvVar {
    name: String,
    value: Option<String>,
}

/// The registered plugins with their caches. Cheap to clone; clones share caches.
#[derive(Clone)]
pub struct CredentialPlugins {
    providers: Arc<[PluginProvider]>,
    exec_timeout: Duration,
}

impl Default for CredentialPlugins {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Debug for CredentialPlugins {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CredentialPlugins")
            .field("providers", &self.names().collect::<Vec<_>>())
            .field("exec_timeout", &self.exec_timeout)
            .finish()
    }
}

struct PluginProvider {
    config: CredentialProvider,
    binary: PathBuf,
    cache: Mutex<HashMap<CacheKey, CacheEntry>>,
    /// One lock per image being asked about, so concurrent pulls of one image run the
    /// plugin once (the kubelet uses a singleflight group for this).
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Image(String),
    Registry(String),
    Global,
}

struct CacheEntry {
    entries: Vec<DockerConfigEntry>,
    expires_at: Instant,
}

/// The fields of a `CredentialProviderResponse` that matter.
struct PluginResponse {
    cache_key_type: CacheKeyType,
    /// Signed nanoseconds; `None` when absent.
    cache_duration: Option<i128>,
    entries: Vec<DockerConfigEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheKeyType {
    Image,
    Registry,
    Global,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PluginRequest<'a> {
    kind: &'static str,
    api_version: &'a str,
    image: &'a str,
}

impl CredentialPlugins {
    /// No plugins.
    pub fn none() -> Self {
        Self {
            providers: Arc::from(Vec::new()),
            exec_timeout: PLUGIN_EXEC_TIMEOUT,
        }
    }

    /// kruise-daemon's start-up step: no config file means no plugins (logged at info);
    /// otherwise the plugin directory must exist, the config must be valid and every
    /// plugin's binary must be an executable file in the directory.
    pub async fn load(config_file: &Path, bin_dir: &Path) -> Result<Self, PluginConfigError> {
        match tokio::fs::metadata(config_file).await {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                tracing::info!(
                    config_file = %config_file.display(),
                    "No plugin config file found, skipping"
                );
                return Ok(Self::none());
            }
            Err(source) => {
                return Err(PluginConfigError::Read {
                    path: config_file.to_owned(),
                    source,
                });
            }
            Ok(_) => {}
        }
        match tokio::fs::metadata(bin_dir).await {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(PluginConfigError::BinDirMissing {
                    dir: bin_dir.to_owned(),
                });
            }
            Err(source) => {
                return Err(PluginConfigError::BinDir {
                    dir: bin_dir.to_owned(),
                    source,
                });
            }
            Ok(_) => {}
        }
        let text = tokio::fs::read_to_string(config_file)
            .await
            .map_err(|source| PluginConfigError::Read {
                path: config_file.to_owned(),
                source,
            })?;
        let config = CredentialProviderConfig::parse(&text).map_err(|problems| {
            PluginConfigError::Invalid {
                path: config_file.to_owned(),
                problems,
            }
        })?;
        let plugins = Self::from_config(config, bin_dir)?;
        tracing::info!(
            config_file = %config_file.display(),
            providers = ?plugins.names().collect::<Vec<_>>(),
            "Registered credential provider plugins"
        );
        Ok(plugins)
    }

    /// Plugins for a parsed config, with binaries in `bin_dir`; checks that every binary
    /// is an executable file.
    pub fn from_config(
        config: CredentialProviderConfig,
        bin_dir: &Path,
    ) -> Result<Self, PluginConfigError> {
        let mut providers = Vec::with_capacity(config.providers.len());
        for provider in config.providers {
            let binary = bin_dir.join(&provider.name);
            let metadata = std::fs::metadata(&binary).map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    PluginConfigError::BinaryMissing {
                        path: binary.clone(),
                    }
                } else {
                    PluginConfigError::BinaryInspect {
                        path: binary.clone(),
                        source,
                    }
                }
            })?;
            if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
                return Err(PluginConfigError::BinaryNotExecutable { path: binary });
            }
            providers.push(PluginProvider {
                config: provider,
                binary,
                cache: Mutex::default(),
                in_flight: Mutex::default(),
            });
        }
        Ok(Self {
            providers: Arc::from(providers),
            exec_timeout: PLUGIN_EXEC_TIMEOUT,
        })
    }

    /// The same plugins with another run-time limit (tests use a short one). Clones made
    /// before keep theirs; caches stay shared.
    pub fn with_exec_timeout(mut self, timeout: Duration) -> Self {
        self.exec_timeout = timeout;
        self
    }

    /// Whether there are no plugins.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// The plugins' names, in config order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers
            .iter()
            .map(|provider| provider.config.name.as_str())
    }

    /// Asks every plugin whose `matchImages` match `image` (a normalised repository such
    /// as `docker.io/library/nginx`), concurrently, using cached answers when fresh.
    /// Outcomes are in config order; plugins that do not match are left out.
    pub async fn provide_each(&self, image: &str) -> Vec<PluginOutcome> {
        let asks = self
            .providers
            .iter()
            .filter(|provider| provider.matches(image))
            .map(|provider| async move {
                PluginOutcome {
                    plugin: provider.config.name.clone(),
                    result: provider.provide(image, self.exec_timeout).await,
                }
            });
        futures::future::join_all(asks).await
    }

    /// The registry entries all matching plugins give for `image`. Failures are logged and
    /// yield nothing, as in the kubelet.
    pub async fn provide(&self, image: &str) -> Vec<DockerConfigEntry> {
        let mut entries = Vec::new();
        for outcome in self.provide_each(image).await {
            match outcome.result {
                Ok(found) => entries.extend(found),
                Err(error) => tracing::warn!(
                    plugin = %outcome.plugin,
                    %error,
                    "Failed getting credential from external registry credential provider"
                ),
            }
        }
        entries
    }

    /// The keyring of everything the plugins give for `image`.
    pub async fn keyring(&self, image: &str) -> Keyring {
        let mut keyring = Keyring::new();
        if !self.is_empty() {
            keyring.extend(self.provide(image).await);
        }
        keyring
    }

    /// The plugin credentials for `image`, most specific `auth` key first.
    pub async fn lookup(&self, image: &str) -> Vec<AuthConfig> {
        self.keyring(image).await.lookup(image)
    }
}

impl PluginProvider {
    fn matches(&self, image: &str) -> bool {
        self.config
            .match_images
            .iter()
            .any(|match_image| urls_match(match_image, image))
    }

    async fn provide(
        &self,
        image: &str,
        exec_timeout: Duration,
    ) -> Result<Vec<DockerConfigEntry>, PluginError> {
        if let Some(entries) = self.cached(image) {
            return Ok(entries);
        }
        let gate = {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(in_flight.entry(image.to_owned()).or_default())
        };
        let result = {
            let _turn = gate.lock().await;
            // Whoever held the gate before may have cached the answer meanwhile.
            match self.cached(image) {
                Some(entries) => Ok(entries),
                None => self.run(image, exec_timeout).await,
            }
        };
        {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Only the map and this task hold the gate: nobody else is waiting on it.
            if Arc::strong_count(&gate) == 2 {
                in_flight.remove(image);
            }
        }
        result
    }

    /// A fresh cached answer for `image`: by image, then registry, then global.
    fn cached(&self, image: &str) -> Option<Vec<DockerConfigEntry>> {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|_, entry| entry.expires_at >= now);
        [
            CacheKey::Image(image.to_owned()),
            CacheKey::Registry(registry_of(image).to_owned()),
            CacheKey::Global,
        ]
        .iter()
        .find_map(|key| cache.get(key))
        .map(|entry| entry.entries.clone())
    }

    async fn run(
        &self,
        image: &str,
        exec_timeout: Duration,
    ) -> Result<Vec<DockerConfigEntry>, PluginError> {
        let response = self.exec(image, exec_timeout).await?;
        let key = match response.cache_key_type {
            CacheKeyType::Image => CacheKey::Image(image.to_owned()),
            CacheKeyType::Registry => CacheKey::Registry(registry_of(image).to_owned()),
            CacheKeyType::Global => CacheKey::Global,
        };
        // An explicit cacheDuration (even 0, meaning "do not cache") beats the default.
        let ttl_nanos = response
            .cache_duration
            .unwrap_or(self.config.default_cache_duration.as_nanos() as i128);
        if ttl_nanos > 0 {
            let expires_at = Instant::now()
                .checked_add(nanos_to_duration(ttl_nanos))
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    key,
                    CacheEntry {
                        entries: response.entries.clone(),
                        expires_at,
                    },
                );
        }
        Ok(response.entries)
    }

    /// Runs the binary once: request on stdin, response on stdout, killed at the limit.
    async fn exec(
        &self,
        image: &str,
        exec_timeout: Duration,
    ) -> Result<PluginResponse, PluginError> {
        let plugin = &self.config.name;
        tracing::debug!(plugin = %plugin, image, "Getting image credentials from external exec plugin");
        let mut request = serde_json::to_vec(&PluginRequest {
            kind: "CredentialProviderRequest",
            api_version: &self.config.api_version,
            image,
        })
        .expect("a request of strings always serialises");
        request.push(b'\n');
        let mut child = tokio::process::Command::new(&self.binary)
            .args(&self.config.args)
            .envs(
                self.config
                    .env
                    .iter()
                    .map(|env| (env.name.as_str(), env.value.as_str())),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PluginError::Spawn {
                plugin: plugin.clone(),
                image: image.to_owned(),
                source,
            })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let feed = async move {
            let written = stdin.write_all(&request).await;
            drop(stdin);
            written
        };
        let run = async { tokio::join!(feed, child.wait_with_output()) };
        // On timeout the child is dropped, and kill_on_drop kills it.
        let (written, output) =
            tokio::time::timeout(exec_timeout, run)
                .await
                .map_err(|_| PluginError::Timeout {
                    plugin: plugin.clone(),
                    image: image.to_owned(),
                    timeout: exec_timeout,
                })?;
        let output = output.map_err(|source| PluginError::Spawn {
            plugin: plugin.clone(),
            image: image.to_owned(),
            source,
        })?;
        if !output.status.success() {
            let status = match (output.status.code(), output.status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => output.status.to_string(),
            };
            return Err(PluginError::Failed {
                plugin: plugin.clone(),
                image: image.to_owned(),
                status,
                stderr: truncated(String::from_utf8_lossy(&output.stderr).trim()),
            });
        }
        // Like Go's exec, a plugin that exits without reading its stdin is fine.
        if let Err(error) = written
            && error.kind() != io::ErrorKind::BrokenPipe
        {
            return Err(PluginError::Spawn {
                plugin: plugin.clone(),
                image: image.to_owned(),
                source: error,
            });
        }
        parse_response(&output.stdout, &self.config.api_version).map_err(|problem| {
            PluginError::InvalidResponse {
                plugin: plugin.clone(),
                image: image.to_owned(),
                problem,
            }
        })
    }
}

/// The kubelet's `parseRegistry`: everything before the first `/`.
fn registry_of(image: &str) -> &str {
    image.split('/').next().unwrap_or_default()
}

fn truncated(text: &str) -> String {
    if text.len() <= STDERR_LIMIT {
        return text.to_owned();
    }
    let mut end = STDERR_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Reads a `CredentialProviderResponse` without ever quoting a credential back.
fn parse_response(
    stdout: &[u8],
    expected_api_version: &str,
) -> Result<PluginResponse, ResponseProblem> {
    let root: Value = serde_json::from_slice(stdout).map_err(|error| {
        ResponseProblem::InvalidJson(format!("line {} column {}", error.line(), error.column()))
    })?;
    let root = root.as_object().ok_or(ResponseProblem::WrongType {
        path: "a response".into(),
        expected: "an object",
    })?;
    let api_version = text_field(root, "apiVersion")?.unwrap_or_default();
    if api_version != expected_api_version {
        return Err(ResponseProblem::ApiVersion {
            found: api_version.to_owned(),
            expected: expected_api_version.to_owned(),
        });
    }
    let kind = text_field(root, "kind")?.unwrap_or_default();
    if kind != "CredentialProviderResponse" {
        return Err(ResponseProblem::Kind {
            found: kind.to_owned(),
        });
    }
    let cache_key_type = match text_field(root, "cacheKeyType")?.unwrap_or_default() {
        "Image" => CacheKeyType::Image,
        "Registry" => CacheKeyType::Registry,
        "Global" => CacheKeyType::Global,
        other => {
            return Err(ResponseProblem::CacheKeyType {
                found: other.to_owned(),
            });
        }
    };
    let cache_duration = text_field(root, "cacheDuration")?
        .map(|value| {
            parse_go_duration(value).map_err(|reason| ResponseProblem::CacheDuration {
                value: value.to_owned(),
                reason,
            })
        })
        .transpose()?;
    let mut entries = Vec::new();
    match root.get("auth") {
        None | Some(Value::Null) => {}
        Some(Value::Object(auth)) => {
            for (registry, value) in auth {
                let path = format!("auth[{}]", Value::String(registry.clone()));
                let credential = match value {
                    Value::Null => continue,
                    Value::Object(credential) => credential,
                    _ => {
                        return Err(ResponseProblem::WrongType {
                            path,
                            expected: "an object",
                        });
                    }
                };
                let secret_field = |name: &str| match credential.get(name) {
                    None | Some(Value::Null) => Ok(""),
                    Some(Value::String(value)) => Ok(value.as_str()),
                    Some(_) => Err(ResponseProblem::WrongType {
                        path: format!("{path}.{name}"),
                        expected: "a string",
                    }),
                };
                entries.push(DockerConfigEntry {
                    registry: registry.clone(),
                    auth: AuthConfig::new(secret_field("username")?, secret_field("password")?),
                });
            }
        }
        Some(_) => {
            return Err(ResponseProblem::WrongType {
                path: "auth".into(),
                expected: "an object",
            });
        }
    }
    Ok(PluginResponse {
        cache_key_type,
        cache_duration,
        entries,
    })
}

/// A string field that may be absent or null. Its value is quoted in errors only for
/// the protocol fields read through here, never for credentials.
fn text_field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ResponseProblem> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.as_str())),
        Some(_) => Err(ResponseProblem::WrongType {
            path: name.to_owned(),
            expected: "a string",
        }),
    }
}

fn nanos_to_duration(nanos: i128) -> Duration {
    let nanos = nanos.clamp(0, i128::from(u64::MAX) * 1_000_000_000);
    Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    )
}

/// Go's `time.ParseDuration` (what `metav1.Duration` accepts): an optional sign, then
/// one or more decimal numbers each with a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`,
/// `h`), e.g. `12h`, `1h30m`, `1.5s`, `-5m`; or `0`. Returns signed nanoseconds.
pub fn parse_go_duration(text: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let integer_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (integer, after) = rest.split_at(integer_end);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let end = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(end)
            }
            None => ("", after),
        };
        if integer.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_end = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let unit_nanos: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            other => return Err(format!("time: unknown unit {other:?} in duration {text:?}")),
        };
        let whole: i128 = if integer.is_empty() {
            0
        } else {
            integer.parse().map_err(|_| invalid())?
        };
        let mut value = whole.checked_mul(unit_nanos).ok_or_else(invalid)?;
        let mut scale = unit_nanos;
        for digit in fraction.bytes() {
            scale /= 10;
            value += i128::from(digit - b'0') * scale;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i128::from(i64::MAX) {
            return Err(invalid());
        }
        rest = after;
    }
    Ok(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECR_CONFIG: &str = r#"
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    matchImages:
      - "*.dkr.ecr.*.amazonaws.com"
      - "*.dkr.ecr.*.amazonaws.com.cn"
    defaultCacheDuration: "12h"
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: [get-credentials]
    env:
      - name: AWS_PROFILE
        value: temp
"#;

    #[test]
    fn parses_a_v1_yaml_config() {
        let config = CredentialProviderConfig::parse(ECR_CONFIG).unwrap();
        assert_eq!(
            config.providers,
            [CredentialProvider {
                name: "ecr-credential-provider".into(),
                match_images: vec![
                    "*.dkr.ecr.*.amazonaws.com".into(),
                    "*.dkr.ecr.*.amazonaws.com.cn".into()
                ],
                default_cache_duration: Duration::from_secs(12 * 3600),
                api_version: "credentialprovider.kubelet.k8s.io/v1".into(),
                args: vec!["get-credentials".into()],
                env: vec![ExecEnvVar {
                    name: "AWS_PROFILE".into(),
                    value: "temp".into()
                }],
            }]
        );
    }

    #[test]
    fn parses_json_and_older_api_versions() {
        let json = r#"{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"CredentialProviderConfig",
            "providers":[{"name":"p","matchImages":["registry.io:5000/team"],"defaultCacheDuration":"0",
            "apiVersion":"credentialprovider.kubelet.k8s.io/v1alpha1"}]}"#;
        let config = CredentialProviderConfig::parse(json).unwrap();
        assert_eq!(config.providers[0].default_cache_duration, Duration::ZERO);
        assert_eq!(
            config.providers[0].api_version,
            "credentialprovider.kubelet.k8s.io/v1alpha1"
        );
        let alpha =
            ECR_CONFIG.replace("kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1alpha1");
        assert!(CredentialProviderConfig::parse(&alpha).is_ok());
    }

    #[test]
    fn rejects_configs_the_kubelet_rejects() {
        let cases = [
            (
                ECR_CONFIG.replace("kubelet.config.k8s.io/v1\n", "kubelet.config.k8s.io/v2\n"),
                "apiVersion: unsupported value",
            ),
            (
                ECR_CONFIG.replace("kind: CredentialProviderConfig", "kind: KubeletConfiguration"),
                "kind: unsupported value",
            ),
            (
                ECR_CONFIG.replace("name: ecr-credential-provider", "name: ../ecr"),
                "providers[0].name: Invalid value \"../ecr\"",
            ),
            (
                ECR_CONFIG.replace("credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v2"),
                "providers[0].apiVersion: Unsupported value",
            ),
            (
                ECR_CONFIG.replace("defaultCacheDuration: \"12h\"", "defaultCacheDuration: \"-1s\""),
                "defaultCacheDuration must be greater than or equal to 0",
            ),
            (
                ECR_CONFIG.replace("defaultCacheDuration: \"12h\"", "defaultCacheDuration: \"12\""),
                "missing unit in duration",
            ),
            (
                ECR_CONFIG.replace("    defaultCacheDuration: \"12h\"\n", ""),
                "providers[0].defaultCacheDuration: Required value",
            ),
            (
                ECR_CONFIG.replace("      - \"*.dkr.ecr.*.amazonaws.com.cn\"\n", "      - \"bad host\"\n"),
                "providers[0].matchImages: Invalid value \"bad host\"",
            ),
            (
                ECR_CONFIG.replace("    args:", "    tokenAttributes: {serviceAccountTokenAudience: x}\n    args:"),
                "providers[0].tokenAttributes: Forbidden",
            ),
            (ECR_CONFIG.replace("    args:", "    argz:"), "unknown field `argz`"),
            (
                "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders: []\n".into(),
                "providers: Required value",
            ),
        ];
        for (config, expected) in cases {
            let problems = CredentialProviderConfig::parse(&config)
                .unwrap_err()
                .to_string();
            assert!(
                problems.contains(expected),
                "{problems:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn rejects_duplicate_provider_names_and_empty_match_images() {
        let config = r#"
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - {name: p, matchImages: [a.io], defaultCacheDuration: 1m, apiVersion: credentialprovider.kubelet.k8s.io/v1}
  - {name: p, matchImages: [], defaultCacheDuration: 1m, apiVersion: credentialprovider.kubelet.k8s.io/v1}
"#;
        let problems = CredentialProviderConfig::parse(config).unwrap_err();
        assert_eq!(
            problems.0,
            [
                "providers[1].name: Duplicate value \"p\"",
                "providers[1].matchImages: Required value: at least 1 item in matchImages is required",
            ]
        );
    }

    #[test]
    fn env_values_are_redacted_in_debug() {
        let env = ExecEnvVar {
            name: "TOKEN".into(),
            value: "t0ps3cret".into(),
        };
        assert!(!format!("{env:?}").contains("t0ps3cret"));
    }

    #[test]
    fn go_durations_parse_like_time_parse_duration() {
        let cases: [(&str, i128); 10] = [
            ("0", 0),
            ("1s", 1_000_000_000),
            ("12h", 12 * 3600 * 1_000_000_000),
            ("1h30m", 5400 * 1_000_000_000),
            ("1.5s", 1_500_000_000),
            (".5m", 30_000_000_000),
            ("300ms", 300_000_000),
            ("2us", 2_000),
            ("-5m", -300_000_000_000),
            ("1h0m0s", 3600 * 1_000_000_000),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse_go_duration(text), Ok(nanos), "{text}");
        }
        for bad in [
            "",
            "1",
            "h",
            "1x",
            ".h",
            ".s",
            "--1s",
            "1s2",
            "9999999999999h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
        // Go accepts a trailing point: "1.h" is one hour.
        assert_eq!(parse_go_duration("1.h"), Ok(3600 * 1_000_000_000));
    }

    const V1: &str = "credentialprovider.kubelet.k8s.io/v1";

    fn response(body: &str) -> Result<PluginResponse, ResponseProblem> {
        parse_response(body.as_bytes(), V1)
    }

    #[test]
    fn parses_a_response_with_auth_and_cache_fields() {
        let parsed = response(
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse",
               "cacheKeyType":"Registry","cacheDuration":"6h",
               "auth":{"*.registry.io":{"username":"u","password":"p"},"other.io":null}}"#,
        )
        .unwrap();
        assert_eq!(parsed.cache_key_type, CacheKeyType::Registry);
        assert_eq!(parsed.cache_duration, Some(6 * 3600 * 1_000_000_000));
        assert_eq!(
            parsed.entries,
            [DockerConfigEntry {
                registry: "*.registry.io".into(),
                auth: AuthConfig::new("u", "p")
            }]
        );
    }

    #[test]
    fn response_without_auth_or_duration_is_valid() {
        let parsed = response(
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Image"}"#,
        )
        .unwrap();
        assert!(parsed.entries.is_empty());
        assert_eq!(parsed.cache_duration, None);
    }

    #[test]
    fn rejects_responses_the_kubelet_rejects() {
        let cases = [
            ("not json", "invalid JSON (line 1 column 2)"),
            (
                r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","kind":"CredentialProviderResponse","cacheKeyType":"Image"}"#,
                r#"apiVersion "credentialprovider.kubelet.k8s.io/v1beta1", expected "credentialprovider.kubelet.k8s.io/v1""#,
            ),
            (
                r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","cacheKeyType":"Image"}"#,
                r#"kind "CredentialProviderRequest", expected "CredentialProviderResponse""#,
            ),
            (
                r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse"}"#,
                r#"cacheKeyType "", expected "Image", "Registry" or "Global""#,
            ),
            (
                r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Image","cacheDuration":"soon"}"#,
                r#"invalid cacheDuration "soon": time: invalid duration "soon""#,
            ),
            (
                r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Image","auth":{"r.io":{"password":42}}}"#,
                r#"auth["r.io"].password that is not a string"#,
            ),
        ];
        for (body, expected) in cases {
            match response(body) {
                Err(problem) => assert_eq!(problem.to_string(), expected, "{body}"),
                Ok(_) => panic!("accepted {body}"),
            }
        }
    }

    #[test]
    fn response_errors_never_quote_credentials() {
        let body = r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Image","auth":{"r.io":"hunter2"}}"#;
        let problem = response(body).err().unwrap();
        assert!(!problem.to_string().contains("hunter2"));
        let truncated_json = r#"{"auth":{"r.io":{"password":"hunter2""#;
        let problem = response(truncated_json).err().unwrap();
        assert!(!problem.to_string().contains("hunter2"));
    }

    #[test]
    fn registry_of_an_image_is_its_first_component() {
        assert_eq!(registry_of("docker.io/library/nginx"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/test/busybox"), "127.0.0.1:5000");
    }

    #[test]
    fn stderr_is_truncated_on_a_character_boundary() {
        let long = "é".repeat(STDERR_LIMIT);
        let cut = truncated(&long);
        assert!(cut.len() <= STDERR_LIMIT + "…".len());
        assert!(cut.ends_with('…'));
    }
}
