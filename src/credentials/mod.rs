//! Registry credentials for image pulls: pull Secrets, the kubelet-compatible keyring and
//! kubelet credential provider exec plugins (spec §3.5 "Auth", §1.2 step 9).
//!
//! The pieces, in the order a pull uses them:
//!
//! * [`dockerconfig`] turns a `kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg`
//!   Secret into registry entries, with errors written for a NodeImage status.
//! * [`keyring`] matches entries against an image the way the kubelet's
//!   `BasicDockerKeyring` does (host with port, `*` globs per domain component, path
//!   prefixes, most specific first).
//! * [`plugin`] runs kubelet credential provider plugins and caches their answers.
//! * [`Credentials`] layers the request's Secrets over the plugins, in kubelet/kruise
//!   order, and [`AuthAttempts`] is kruise's policy for using the result: try each
//!   credential in order, and pull anonymously only when none matched.
//!
//! Only username and password ever leave this module ([`AuthConfig`]); they are what the
//! CRI `AuthConfig` carries. Neither `Debug` nor `Display` prints a password.

pub mod dockerconfig;
pub mod keyring;
pub mod plugin;

use std::fmt;
use std::future::Future;

use k8s_openapi::api::core::v1::Secret;

pub use dockerconfig::{DockerConfigEntry, DockerConfigError, SecretError, SecretRef};
pub use keyring::Keyring;
pub use plugin::{CredentialPlugins, CredentialProviderConfig, PluginConfigError, PluginError};

use crate::imageref::ImageReference;

/// A username and password for a registry: exactly what kruised puts into the CRI
/// `AuthConfig` (spec §3.5: auth, identity and registry tokens are never sent).
///
/// `Debug` and `Display` redact the password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AuthConfig {
    username: String,
    password: String,
}

impl AuthConfig {
    /// A credential from its parts.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The user name; not secret, it may be logged.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password or token. Only for building the CRI request: never log it.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for AuthConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "user {:?} (password redacted)", self.username)
    }
}

/// Where the credentials for a pull come from: the request's pull Secrets layered over the
/// node-wide credential provider plugins. Cheap to clone; clones share plugin caches.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    plugins: CredentialPlugins,
}

impl Credentials {
    /// Credentials backed by `plugins` (use [`CredentialPlugins::none`] when none are
    /// configured).
    pub fn new(plugins: CredentialPlugins) -> Self {
        Self { plugins }
    }

    /// The credential provider plugins in use.
    pub fn plugins(&self) -> &CredentialPlugins {
        &self.plugins
    }

    /// Every credential that applies to `image`, in the order to try them: first the
    /// matches from `secrets` (one keyring built from all of them, most specific registry
    /// key first), then the plugins' matches. This is the kubelet's
    /// `UnionDockerKeyring{secrets, default keyring}` that kruise uses, except that a
    /// credential already listed is not listed again: retrying it cannot help.
    ///
    /// Fails when a Secret cannot be parsed, as kruise does when building the keyring
    /// fails: the pull must not go ahead anonymously with credentials silently missing.
    pub async fn for_image(
        &self,
        image: &ImageReference,
        secrets: &[Secret],
    ) -> Result<Vec<AuthConfig>, SecretError> {
        let repository = image.repository();
        let mut matches = keyring_from_secrets(secrets)?.lookup(&repository);
        matches.extend(self.plugins.lookup(&repository).await);
        let mut unique: Vec<AuthConfig> = Vec::with_capacity(matches.len());
        for auth in matches {
            if !unique.contains(&auth) {
                unique.push(auth);
            }
        }
        Ok(unique)
    }

    /// [`Credentials::for_image`] turned into kruise's pull policy.
    pub async fn auth_attempts(
        &self,
        image: &ImageReference,
        secrets: &[Secret],
    ) -> Result<AuthAttempts, SecretError> {
        Ok(AuthAttempts::from_matches(
            self.for_image(image, secrets).await?,
        ))
    }
}

/// One keyring from the registry entries of all `secrets`, like the kubelet's
/// `MakeDockerKeyring`: entries of every Secret share one index, so the most specific
/// registry key wins across Secrets, and equal keys keep Secret order.
pub fn keyring_from_secrets(secrets: &[Secret]) -> Result<Keyring, SecretError> {
    let mut keyring = Keyring::new();
    for secret in secrets {
        keyring.extend(dockerconfig::entries_from_secret(secret)?);
    }
    Ok(keyring)
}

/// How to authenticate a pull (kruise `pullImageV1`, spec §3.5 steps 2–5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAttempts {
    /// No credential matched the image: pull once without credentials.
    Anonymous,
    /// Try each credential in order until one pull succeeds. When all fail the pull
    /// fails; there is no anonymous fallback.
    Credentials(Vec<AuthConfig>),
}

impl AuthAttempts {
    /// The policy for the credentials that matched an image.
    pub fn from_matches(matches: Vec<AuthConfig>) -> Self {
        if matches.is_empty() {
            Self::Anonymous
        } else {
            Self::Credentials(matches)
        }
    }

    /// Runs `attempt` once per credential in order (or once with `None` when anonymous)
    /// and returns the first success. Failures with credentials are logged with the user
    /// name and collected; an anonymous failure is returned as it is.
    pub async fn run<T, E, F, Fut>(self, mut attempt: F) -> Result<T, PullAuthError<E>>
    where
        F: FnMut(Option<AuthConfig>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        match self {
            Self::Anonymous => attempt(None).await.map_err(PullAuthError::Anonymous),
            Self::Credentials(credentials) => {
                let mut errors = Vec::with_capacity(credentials.len());
                for auth in credentials {
                    let username = auth.username().to_owned();
                    match attempt(Some(auth)).await {
                        Ok(value) => return Ok(value),
                        Err(error) => {
                            tracing::warn!(user = %username, %error, "Failed to pull image with user");
                            errors.push(error);
                        }
                    }
                }
                Err(PullAuthError::AllCredentialsFailed(errors))
            }
        }
    }
}

/// Why [`AuthAttempts::run`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullAuthError<E> {
    /// The anonymous pull failed.
    Anonymous(E),
    /// Every matching credential was tried and each pull failed, in order.
    AllCredentialsFailed(Vec<E>),
}

impl<E: fmt::Display> fmt::Display for PullAuthError<E> {
    /// The anonymous error as it is; the credential errors like Go's
    /// `utilerrors.NewAggregate`: one message alone, several distinct ones as `[a, b]`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous(error) => error.fmt(formatter),
            Self::AllCredentialsFailed(errors) => {
                let mut messages: Vec<String> = Vec::with_capacity(errors.len());
                for error in errors {
                    let message = error.to_string();
                    if !messages.contains(&message) {
                        messages.push(message);
                    }
                }
                match messages.as_slice() {
                    [single] => formatter.write_str(single),
                    _ => write!(formatter, "[{}]", messages.join(", ")),
                }
            }
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for PullAuthError<E> {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    const PASSWORD: &str = "s3cr3t-Pa55";

    fn config_json_secret(name: &str, config: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some("kruise-daemon-config".into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_owned(),
                ByteString(config.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    fn image(input: &str) -> ImageReference {
        ImageReference::parse(input).unwrap()
    }

    #[test]
    fn debug_and_display_of_a_credential_never_show_the_password() {
        let auth = AuthConfig::new("alice", PASSWORD);
        let debug = format!("{auth:?}");
        let display = auth.to_string();
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(!display.contains(PASSWORD), "{display}");
        assert!(debug.contains("alice") && debug.contains("<redacted>"));
        let attempts = AuthAttempts::from_matches(vec![auth]);
        assert!(!format!("{attempts:?}").contains(PASSWORD));
    }

    #[tokio::test]
    async fn secrets_are_matched_against_the_normalised_repository() {
        let secret = config_json_secret(
            "hub",
            r#"{"auths":{"https://index.docker.io/v1/":{"username":"hub","password":"p"}}}"#,
        );
        let credentials = Credentials::default();
        let matched = credentials
            .for_image(&image("nginx:1"), std::slice::from_ref(&secret))
            .await
            .unwrap();
        assert_eq!(matched, vec![AuthConfig::new("hub", "p")]);
        let other = credentials
            .for_image(&image("quay.io/org/app"), &[secret])
            .await
            .unwrap();
        assert!(other.is_empty());
    }

    #[tokio::test]
    async fn most_specific_key_wins_across_secrets() {
        let host = config_json_secret(
            "host",
            r#"{"auths":{"quay.io":{"username":"host","password":"p"}}}"#,
        );
        let org = config_json_secret(
            "org",
            r#"{"auths":{"quay.io/org":{"username":"org","password":"p"}}}"#,
        );
        let matched = Credentials::default()
            .for_image(&image("quay.io/org/app"), &[host, org])
            .await
            .unwrap();
        let users: Vec<&str> = matched.iter().map(AuthConfig::username).collect();
        assert_eq!(users, ["org", "host"]);
    }

    #[tokio::test]
    async fn identical_credentials_are_tried_once() {
        let first = config_json_secret(
            "a",
            r#"{"auths":{"quay.io":{"username":"u","password":"p"}}}"#,
        );
        let second = config_json_secret(
            "b",
            r#"{"auths":{"quay.io":{"username":"u","password":"p"}}}"#,
        );
        let matched = Credentials::default()
            .for_image(&image("quay.io/org/app"), &[first, second])
            .await
            .unwrap();
        assert_eq!(matched.len(), 1);
    }

    #[tokio::test]
    async fn a_broken_secret_fails_the_lookup_with_its_name() {
        let good = config_json_secret(
            "good",
            r#"{"auths":{"quay.io":{"username":"u","password":"p"}}}"#,
        );
        let broken = config_json_secret("regcred", r#"{"auths":{"quay.io":{"auth":"%%%"}}}"#);
        let error = Credentials::default()
            .for_image(&image("quay.io/org/app"), &[good, broken])
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"failed to parse secret kruise-daemon-config/regcred: invalid base64 in auths["quay.io"].auth"#
        );
    }

    #[test]
    fn no_match_means_anonymous_and_matches_mean_credentials() {
        assert_eq!(AuthAttempts::from_matches(vec![]), AuthAttempts::Anonymous);
        let auth = AuthConfig::new("u", "p");
        assert_eq!(
            AuthAttempts::from_matches(vec![auth.clone()]),
            AuthAttempts::Credentials(vec![auth])
        );
    }

    #[tokio::test]
    async fn first_successful_credential_wins() {
        let attempts = AuthAttempts::Credentials(vec![
            AuthConfig::new("bad", "1"),
            AuthConfig::new("good", "2"),
            AuthConfig::new("unused", "3"),
        ]);
        let mut tried = Vec::new();
        let result = attempts
            .run(|auth| {
                let user = auth.map(|auth| auth.username().to_owned());
                tried.push(user.clone());
                async move {
                    match user.as_deref() {
                        Some("good") => Ok("pulled"),
                        _ => Err("denied"),
                    }
                }
            })
            .await;
        assert_eq!(result, Ok("pulled"));
        assert_eq!(tried, [Some("bad".to_owned()), Some("good".to_owned())]);
    }

    #[tokio::test]
    async fn when_all_credentials_fail_there_is_no_anonymous_attempt() {
        let attempts =
            AuthAttempts::Credentials(vec![AuthConfig::new("a", "1"), AuthConfig::new("b", "2")]);
        let mut anonymous_tried = false;
        let result: Result<(), _> = attempts
            .run(|auth| {
                anonymous_tried |= auth.is_none();
                let user = auth
                    .map(|auth| auth.username().to_owned())
                    .unwrap_or_default();
                async move { Err(format!("401 for {user}")) }
            })
            .await;
        assert!(!anonymous_tried);
        let error = result.unwrap_err();
        assert_eq!(
            error,
            PullAuthError::AllCredentialsFailed(vec!["401 for a".into(), "401 for b".into()])
        );
        assert_eq!(error.to_string(), "[401 for a, 401 for b]");
    }

    #[tokio::test]
    async fn anonymous_pull_runs_once_without_credentials() {
        let mut calls = Vec::new();
        let result: Result<(), _> = AuthAttempts::Anonymous
            .run(|auth| {
                calls.push(auth.is_none());
                async { Err("not found") }
            })
            .await;
        assert_eq!(calls, [true]);
        assert_eq!(result, Err(PullAuthError::Anonymous("not found")));
        assert_eq!(result.unwrap_err().to_string(), "not found");
    }

    #[test]
    fn aggregate_message_is_deduplicated_like_go() {
        let same: PullAuthError<&str> = PullAuthError::AllCredentialsFailed(vec!["x", "x"]);
        assert_eq!(same.to_string(), "x");
        let one: PullAuthError<&str> = PullAuthError::AllCredentialsFailed(vec!["x"]);
        assert_eq!(one.to_string(), "x");
    }
}
