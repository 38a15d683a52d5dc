//! Refuses to run next to OpenKruise's kruise-manager: two controllers writing the same
//! NodeImages, ImagePullJobs and ContainerRecreateRequests would fight.
//!
//! Evidence, strongest first (any one is enough):
//!
//! 1. kruise-manager's leader election Lease (`kruise-manager` in `--kruise-namespace`,
//!    default `kruise-system`) is held and was renewed recently. A running kruise-manager
//!    renews it every 2 s whatever its version or install method, and an uninstalled one
//!    stops renewing it, so this tells "running" from "left over".
//! 2. kruise's admission webhook configurations
//!    (`kruise-mutating-webhook-configuration`, `kruise-validating-webhook-configuration`)
//!    exist: they intercept every write to the same CRDs (failurePolicy Fail), so even a
//!    stopped kruise-manager still takes part in every CRR and NodeImage write.
//! 3. The `kruise-controller-manager` Deployment in that namespace wants replicas.
//!
//! A check the manager is not allowed to make (403) or a group the API server does not
//! serve (404) counts as "no evidence" and is logged once: the Lease check needs only
//! `get` on one Lease, which kruised's own RBAC grants.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use tracing::warn;

/// kruise-manager's leader election id (controller-runtime `LeaderElectionID`).
pub const KRUISE_MANAGER_LEASE: &str = "kruise-manager";
/// kruise's mutating webhook configuration.
pub const KRUISE_MUTATING_WEBHOOK: &str = "kruise-mutating-webhook-configuration";
/// kruise's validating webhook configuration.
pub const KRUISE_VALIDATING_WEBHOOK: &str = "kruise-validating-webhook-configuration";
/// kruise-manager's Deployment.
pub const KRUISE_MANAGER_DEPLOYMENT: &str = "kruise-controller-manager";
/// Tolerated clock difference when judging the Lease's `renewTime`.
const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// One piece of evidence that kruise-manager is active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Its leader Lease is held and fresh.
    ActiveLease {
        /// `namespace/name`.
        lease: String,
        /// The holder.
        holder: String,
    },
    /// One of its webhook configurations exists.
    WebhookConfiguration {
        /// `MutatingWebhookConfiguration` or `ValidatingWebhookConfiguration`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Its Deployment wants replicas.
    Deployment {
        /// `namespace/name`.
        deployment: String,
        /// `spec.replicas`.
        replicas: i32,
    },
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ActiveLease { lease, holder } => {
                write!(
                    f,
                    "its leader Lease {lease} is held by {holder} and renewed"
                )
            }
            Self::WebhookConfiguration { kind, name } => {
                write!(f, "its {kind} {name} intercepts writes to the same CRDs")
            }
            Self::Deployment {
                deployment,
                replicas,
            } => write!(f, "its Deployment {deployment} wants {replicas} replica(s)"),
        }
    }
}

/// kruise-manager was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "kruise-manager is active in this cluster ({}); kruised manager refuses to run next to it because two controllers would write the same NodeImages, ImagePullJobs and ContainerRecreateRequests. Uninstall OpenKruise's manager (helm uninstall, or scale {KRUISE_MANAGER_DEPLOYMENT} to 0 and delete {KRUISE_MUTATING_WEBHOOK} and {KRUISE_VALIDATING_WEBHOOK}) first",
    .evidence.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
)]
pub struct KruiseManagerDetected {
    /// What was found.
    pub evidence: Vec<Evidence>,
}

/// Where to look.
#[derive(Clone)]
pub struct Detector {
    client: kube::Client,
    namespace: String,
}

/// Whether a lease record shows a live holder at `now`.
pub fn lease_is_active(lease: &Lease, now: Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1));
    let horizon = renewed
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
            duration + CLOCK_SKEW.as_secs() as i64,
        ))
        .ok()?;
    (horizon > now).then_some(holder)
}

impl Detector {
    /// A detector looking in `kruise_namespace`.
    pub fn new(client: kube::Client, kruise_namespace: &str) -> Self {
        Self {
            client,
            namespace: kruise_namespace.to_owned(),
        }
    }

    /// Fails with every piece of evidence found, or succeeds when there is none.
    /// API errors other than 403/404 are returned as they are (retry).
    pub async fn check(&self) -> Result<Result<(), KruiseManagerDetected>, kube::Error> {
        let mut evidence = Vec::new();
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        if let Some(lease) = absent_ok(leases.get(KRUISE_MANAGER_LEASE).await, "Lease")?
            && let Some(holder) = lease_is_active(&lease, Timestamp::now())
        {
            evidence.push(Evidence::ActiveLease {
                lease: format!("{}/{KRUISE_MANAGER_LEASE}", self.namespace),
                holder,
            });
        }
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        if absent_ok(
            mutating.get(KRUISE_MUTATING_WEBHOOK).await,
            "MutatingWebhookConfiguration",
        )?
        .is_some()
        {
            evidence.push(Evidence::WebhookConfiguration {
                kind: "MutatingWebhookConfiguration",
                name: KRUISE_MUTATING_WEBHOOK.into(),
            });
        }
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        if absent_ok(
            validating.get(KRUISE_VALIDATING_WEBHOOK).await,
            "ValidatingWebhookConfiguration",
        )?
        .is_some()
        {
            evidence.push(Evidence::WebhookConfiguration {
                kind: "ValidatingWebhookConfiguration",
                name: KRUISE_VALIDATING_WEBHOOK.into(),
            });
        }
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        if let Some(deployment) = absent_ok(
            deployments.get(KRUISE_MANAGER_DEPLOYMENT).await,
            "Deployment",
        )? {
            let replicas = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            if replicas > 0 {
                evidence.push(Evidence::Deployment {
                    deployment: format!("{}/{KRUISE_MANAGER_DEPLOYMENT}", self.namespace),
                    replicas,
                });
            }
        }
        Ok(if evidence.is_empty() {
            Ok(())
        } else {
            Err(KruiseManagerDetected { evidence })
        })
    }
}

/// 404 (absent, or the group is not served) and 403 (not allowed to look) are "no
/// evidence"; the 403 is logged so an operator can grant the read.
fn absent_ok<T>(result: Result<T, kube::Error>, kind: &str) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(object) => Ok(Some(object)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            warn!(kind, message = %status.message, "cannot check for kruise-manager's {kind}: forbidden");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    fn lease(holder: Option<&str>, renewed: &str) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: Some(MicroTime(renewed.parse().unwrap())),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_held_lease_is_active_a_stale_or_free_one_is_not() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        assert_eq!(
            lease_is_active(&lease(Some("kruise-abc"), "2026-01-01T00:00:58Z"), now),
            Some("kruise-abc".into())
        );
        // Left over by an uninstalled kruise-manager.
        assert_eq!(
            lease_is_active(&lease(Some("kruise-abc"), "2026-01-01T00:00:00Z"), now),
            None
        );
        assert_eq!(
            lease_is_active(&lease(None, "2026-01-01T00:00:58Z"), now),
            None
        );
    }

    #[test]
    fn the_refusal_names_the_evidence_and_the_way_out() {
        let error = KruiseManagerDetected {
            evidence: vec![
                Evidence::ActiveLease {
                    lease: "kruise-system/kruise-manager".into(),
                    holder: "kruise-abc".into(),
                },
                Evidence::WebhookConfiguration {
                    kind: "MutatingWebhookConfiguration",
                    name: KRUISE_MUTATING_WEBHOOK.into(),
                },
            ],
        }
        .to_string();
        assert!(
            error.starts_with("kruise-manager is active in this cluster (its leader Lease kruise-system/kruise-manager is held by kruise-abc and renewed; its MutatingWebhookConfiguration kruise-mutating-webhook-configuration intercepts writes to the same CRDs)"),
            "{error}"
        );
        assert!(error.contains("Uninstall OpenKruise's manager"), "{error}");
    }
}
