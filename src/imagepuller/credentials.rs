//! Credentials for one NodeImage image: its `pullSecrets`, each read by name from its
//! namespace (never a cluster-wide list; §3.6, CVE-2023-30617) through a short-TTL
//! cache, layered over the credential provider plugins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::worker::CredentialResolver;
use crate::api::v1beta1::ImageSpec;
use crate::credentials::Credentials;
use crate::credentials::dockerconfig::SecretRef;
use crate::imageref::ImageReference;

/// How long a fetched Secret is trusted (kruise: a random 5–10 min; §3.6).
const SECRET_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a failed fetch is remembered, so a missing Secret is not asked for on every
/// retry of every tag.
const FAILURE_TTL: Duration = Duration::from_secs(10);

/// A fetched Secret (or why not) and when that answer expires.
type CacheEntry = (Instant, Result<Secret, String>);

/// Reads pull Secrets by reference, with a cache.
pub struct SecretSource {
    client: kube::Client,
    cache: Mutex<HashMap<SecretRef, CacheEntry>>,
}

impl SecretSource {
    /// A source reading through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The Secret, or why it cannot be used (worded for a NodeImage status).
    pub async fn get(&self, reference: &SecretRef) -> Result<Secret, String> {
        if let Some((expires, cached)) = self.lock().get(reference)
            && *expires > Instant::now()
        {
            return cached.clone();
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &reference.namespace);
        let fetched = match api.get(&reference.name).await {
            Ok(secret) => Ok(secret),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(format!(
                "pull secret {}/{} not found",
                reference.namespace, reference.name
            )),
            Err(kube::Error::Api(status)) if status.code == 403 => Err(format!(
                "pull secret {}/{} is not readable by kruised (forbidden): pull secrets must be in its config namespace",
                reference.namespace, reference.name
            )),
            Err(error) => Err(format!(
                "failed to get pull secret {}/{}: {error}",
                reference.namespace, reference.name
            )),
        };
        let ttl = if fetched.is_ok() {
            SECRET_TTL
        } else {
            FAILURE_TTL
        };
        let mut cache = self.lock();
        cache.retain(|_, (expires, _)| *expires > Instant::now());
        cache.insert(reference.clone(), (Instant::now() + ttl, fetched.clone()));
        fetched
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SecretRef, CacheEntry>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A factory of per-image credential resolvers: each resolver reads that image's pull
/// Secrets and returns the credentials to try for a reference, in kruise's order.
pub fn resolver_factory(
    secrets: Arc<SecretSource>,
    credentials: Credentials,
) -> Arc<dyn Fn(&ImageSpec) -> CredentialResolver + Send + Sync> {
    Arc::new(move |spec: &ImageSpec| -> CredentialResolver {
        let references: Vec<Result<SecretRef, String>> = spec
            .pull_secrets
            .iter()
            .flatten()
            .map(|r| match (r.namespace.as_deref(), r.name.as_deref()) {
                (Some(namespace), Some(name)) if !namespace.is_empty() && !name.is_empty() => {
                    Ok(SecretRef::new(namespace, name))
                }
                _ => Err(format!(
                    "invalid pull secret reference {{namespace: {:?}, name: {:?}}}: both are required",
                    r.namespace, r.name
                )),
            })
            .collect();
        let secrets = secrets.clone();
        let credentials = credentials.clone();
        Arc::new(move |reference: String| {
            let references = references.clone();
            let secrets = secrets.clone();
            let credentials = credentials.clone();
            Box::pin(async move {
                let image = ImageReference::parse(&reference).map_err(|e| e.to_string())?;
                let mut fetched = Vec::with_capacity(references.len());
                for reference in references {
                    fetched.push(secrets.get(&reference?).await?);
                }
                credentials
                    .for_image(&image, &fetched)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
    })
}
