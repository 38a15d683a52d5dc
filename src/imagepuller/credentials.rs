//! Credentials for one NodeImage image: its `pullSecrets`, read one by one (never a
//! cluster-wide list; §3.6, CVE-2023-30617).
//!
//! PLACEHOLDER until the credentials module lands: resolves to anonymous.

use std::sync::Arc;

use super::worker::CredentialResolver;
use crate::api::v1beta1::ImageSpec;

/// A factory of per-image credential resolvers.
pub fn resolver_factory(
    _client: kube::Client,
) -> Arc<dyn Fn(&ImageSpec) -> CredentialResolver + Send + Sync> {
    Arc::new(|_spec: &ImageSpec| -> CredentialResolver {
        Arc::new(|_reference| Box::pin(async { Ok(Vec::new()) }))
    })
}
