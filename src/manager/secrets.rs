//! Pull secrets for the agents (§3.3): the agents may read Secrets only in the daemon
//! config namespace (CVE-2023-30617), so each job's `pullSecrets` are copied there, one
//! shared copy per source Secret (kruise 1.9+ "batch" mode) named `<source>-<6 hex>`,
//! annotated with the source and the sorted `namespace/job` references. A copy no job
//! references any more is deleted.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::reflector::Store;
use tracing::info;

use super::jobview::JobView;
use crate::api::v1beta1::ReferenceObject;
use crate::api::{
    PULL_SECRET_MODE_ANNOTATION, PULL_SECRET_MODE_BATCH, PULL_SECRET_REFERENCES_ANNOTATION,
    PULL_SECRET_SOURCE_KEY_ANNOTATION,
};

/// The deprecated label kruise still sets on copies: the source Secret's UID.
pub const SOURCE_UID_LABEL: &str = "imagepulljobs.kruise.io/source-uid";

/// The name of the copy of `namespace/name`: the source name and 6 hex digits of a
/// stable hash of the source key, so concurrent reconciles of two jobs agree on it.
pub fn copy_name(namespace: &str, name: &str) -> String {
    // FNV-1a: stable across runs and versions, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{namespace}/{name}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let base: String = name.chars().take(253 - 7).collect();
    format!("{base}-{:06x}", hash & 0xff_ffff)
}

/// The references on a copy.
pub fn references(secret: &Secret) -> BTreeSet<String> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PULL_SECRET_REFERENCES_ANNOTATION))
        .map(|value| {
            value
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn source_key(secret: &Secret) -> Option<String> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(PULL_SECRET_SOURCE_KEY_ANNOTATION)
        .cloned()
}

fn with_references(mut secret: Secret, refs: &BTreeSet<String>) -> Secret {
    secret
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            PULL_SECRET_REFERENCES_ANNOTATION.to_owned(),
            refs.iter().cloned().collect::<Vec<_>>().join(","),
        );
    secret.metadata.managed_fields = None;
    secret
}

/// Copies and releases pull secrets for jobs.
pub struct SecretSync<'a> {
    /// The API client.
    pub client: &'a kube::Client,
    /// The daemon config namespace.
    pub namespace: &'a str,
    /// Copies in that namespace (cache).
    pub copies: &'a Store<Secret>,
}

impl SecretSync<'_> {
    fn api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// Makes sure every pull secret of `job` has a copy referencing it and returns the
    /// references to write into NodeImages; drops the job's references to copies of
    /// secrets it no longer lists. Missing source Secrets are skipped (as kruise does).
    pub async fn sync(&self, job: &JobView) -> Result<Vec<ReferenceObject>, kube::Error> {
        let wanted: Vec<String> = job.spec.template.pull_secrets.clone().unwrap_or_default();
        if job.namespace == self.namespace {
            // The job's own secrets are already where the agents read.
            return Ok(wanted
                .into_iter()
                .map(|name| ReferenceObject {
                    namespace: Some(job.namespace.clone()),
                    name: Some(name),
                    mode: None,
                })
                .collect());
        }
        let wanted_keys: BTreeSet<String> = wanted
            .iter()
            .map(|name| format!("{}/{name}", job.namespace))
            .collect();
        self.release_where(job, |source| !wanted_keys.contains(source))
            .await?;
        let mut result = Vec::new();
        for name in &wanted {
            if let Some(copy) = self.ensure_copy(job, name).await? {
                result.push(ReferenceObject {
                    namespace: Some(self.namespace.to_owned()),
                    name: Some(copy),
                    mode: Some(PULL_SECRET_MODE_BATCH.to_owned()),
                });
            }
        }
        Ok(result)
    }

    /// Drops the job's references from every copy (job finished or deleted), deleting
    /// copies nobody references.
    pub async fn release_all(&self, job: &JobView) -> Result<(), kube::Error> {
        if job.namespace == self.namespace {
            return Ok(());
        }
        self.release_where(job, |_| true).await
    }

    async fn release_where(
        &self,
        job: &JobView,
        release: impl Fn(&str) -> bool,
    ) -> Result<(), kube::Error> {
        let key = job.key();
        for copy in self.copies.state() {
            let refs = references(&copy);
            let Some(source) = source_key(&copy) else {
                continue;
            };
            if !refs.contains(&key) || !release(&source) {
                continue;
            }
            let name = copy.metadata.name.clone().unwrap_or_default();
            // Re-read: another job may have just added its reference.
            let fresh = match self.api().get(&name).await {
                Ok(fresh) => fresh,
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(error) => return Err(error),
            };
            let mut refs = references(&fresh);
            refs.remove(&key);
            if refs.is_empty() {
                match self.api().delete(&name, &DeleteParams::default()).await {
                    Ok(_) => info!(secret = %name, "deleted a pull secret copy no job references"),
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error),
                }
            } else {
                self.api()
                    .replace(
                        &name,
                        &PostParams::default(),
                        &with_references(fresh, &refs),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// The copy of `job.namespace/name` referencing the job, created or updated; `None`
    /// when the source Secret does not exist.
    async fn ensure_copy(&self, job: &JobView, name: &str) -> Result<Option<String>, kube::Error> {
        let key = job.key();
        let copy_name = copy_name(&job.namespace, name);
        let cached = self
            .copies
            .get(&kube::runtime::reflector::ObjectRef::new(&copy_name).within(self.namespace));
        // Common case: already referenced; data changes are picked up when a job is
        // (re)synced without a reference, or when the copy is recreated.
        if cached
            .as_ref()
            .is_some_and(|c| references(c).contains(&key))
        {
            return Ok(Some(copy_name));
        }
        let sources: Api<Secret> = Api::namespaced(self.client.clone(), &job.namespace);
        let source = match sources.get(name).await {
            Ok(source) => source,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(error) => return Err(error),
        };
        for _ in 0..5 {
            match self.api().get(&copy_name).await {
                Ok(existing) => {
                    let mut refs = references(&existing);
                    let fresh = existing.data != source.data || existing.type_ != source.type_;
                    if refs.insert(key.clone()) || fresh {
                        let mut updated = with_references(existing, &refs);
                        updated.data = source.data.clone();
                        updated.type_ = source.type_.clone();
                        match self
                            .api()
                            .replace(&copy_name, &PostParams::default(), &updated)
                            .await
                        {
                            Ok(_) => return Ok(Some(copy_name)),
                            Err(kube::Error::Api(status)) if status.code == 409 => continue,
                            Err(error) => return Err(error),
                        }
                    }
                    return Ok(Some(copy_name));
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    let copy = with_references(
                        Secret {
                            metadata: ObjectMeta {
                                name: Some(copy_name.clone()),
                                namespace: Some(self.namespace.to_owned()),
                                annotations: Some(BTreeMap::from([
                                    (
                                        PULL_SECRET_SOURCE_KEY_ANNOTATION.to_owned(),
                                        format!("{}/{name}", job.namespace),
                                    ),
                                    (
                                        PULL_SECRET_MODE_ANNOTATION.to_owned(),
                                        PULL_SECRET_MODE_BATCH.to_owned(),
                                    ),
                                ])),
                                labels: source.metadata.uid.clone().map(|uid| {
                                    BTreeMap::from([(SOURCE_UID_LABEL.to_owned(), uid)])
                                }),
                                ..Default::default()
                            },
                            data: source.data.clone(),
                            type_: source.type_.clone(),
                            ..Default::default()
                        },
                        &BTreeSet::from([key.clone()]),
                    );
                    match self.api().create(&PostParams::default(), &copy).await {
                        Ok(_) => {
                            info!(secret = %copy_name, source = %format!("{}/{name}", job.namespace), "copied a pull secret for the agents");
                            return Ok(Some(copy_name));
                        }
                        Err(kube::Error::Api(status)) if status.code == 409 => continue,
                        Err(error) => return Err(error),
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Err(kube::Error::Api(
            kube::core::Status::failure(
                &format!("pull secret copy {copy_name} kept conflicting"),
                "Conflict",
            )
            .with_code(409)
            .boxed(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_names_are_stable_and_six_hex_digits_long() {
        let name = copy_name("default", "regcred");
        assert_eq!(name, copy_name("default", "regcred"));
        assert_ne!(name, copy_name("other", "regcred"));
        let (base, hex) = name.rsplit_once('-').unwrap();
        assert_eq!(base, "regcred");
        assert_eq!(hex.len(), 6);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn references_are_parsed_and_written_sorted() {
        let secret = with_references(
            Secret::default(),
            &BTreeSet::from(["b/j".to_owned(), "a/j".to_owned()]),
        );
        assert_eq!(
            secret.metadata.annotations.as_ref().unwrap()[PULL_SECRET_REFERENCES_ANNOTATION],
            "a/j,b/j"
        );
        assert_eq!(references(&secret).len(), 2);
    }
}
