//! Which pod events make containermeta look at a pod (kruise's `eventFilter` and `enqueue`,
//! §6.1).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::envhash::expected_hash;
use super::meta::{RUNTIME_CONTAINERS_META_ANNOTATION, RuntimeContainerMetaSet};

/// The annotation SidecarSet injection leaves on pods (kruise's `SidecarSetHashAnnotation`).
pub const SIDECARSET_HASH_ANNOTATION: &str = "kruise.io/sidecarset-hash";

/// The pod condition kruise sets `False` while it updates a pod in place.
pub const IN_PLACE_UPDATE_READY: &str = "InPlaceUpdateReady";

fn annotations(pod: &Pod) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.annotations.as_ref().unwrap_or(&EMPTY)
}

fn labels(pod: &Pod) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// Whether a kruise workload controls the pod (its controller's API group is
/// `apps.kruise.io`) or a SidecarSet injected it.
pub fn is_kruise_pod(pod: &Pod) -> bool {
    let owned = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
        .is_some_and(|owner| {
            owner.api_version.split_once('/').map(|(group, _)| group) == Some(crate::api::GROUP)
        });
    owned || annotations(pod).contains_key(SIDECARSET_HASH_ANNOTATION)
}

/// The pod's meta annotation: `Ok(None)` when absent.
pub fn meta_of(pod: &Pod) -> Result<Option<RuntimeContainerMetaSet>, serde_json::Error> {
    annotations(pod)
        .get(RUNTIME_CONTAINERS_META_ANNOTATION)
        .map(|json| RuntimeContainerMetaSet::parse(json))
        .transpose()
}

/// Whether the pod carries the meta annotation (pods without it are skipped when first seen,
/// so that a restart does not write every pod of the node at once).
pub fn has_meta(pod: &Pod) -> bool {
    annotations(pod).contains_key(RUNTIME_CONTAINERS_META_ANNOTATION)
}

/// The env-from-metadata hash `container` should have in `pod`.
pub fn expected_hash_in(container: &Container, pod: &Pod) -> u64 {
    expected_hash(container, labels(pod), annotations(pod))
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default()
}

/// kruise's `eventFilter`: a kruise pod whose container count changed, whose meta is missing
/// or stale against its container statuses, or (with `env_gate`) whose expected env hash
/// changed.
pub fn needs_sync(old: Option<&Pod>, new: &Pod, env_gate: bool) -> bool {
    if !is_kruise_pod(new) {
        return false;
    }
    if let Some(old) = old
        && containers(old).len() != containers(new).len()
    {
        return true;
    }
    let meta = meta_of(new).ok().flatten();
    let statuses = new
        .status
        .as_ref()
        .and_then(|status| status.container_statuses.as_deref())
        .unwrap_or_default();
    for (index, status) in statuses.iter().enumerate() {
        if status
            .container_id
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            continue;
        }
        let Some(meta) = meta
            .as_ref()
            .filter(|meta| meta.containers.len() == statuses.len())
        else {
            return true;
        };
        if meta.containers[index].container_id != status.container_id.as_deref().unwrap_or_default()
        {
            return true;
        }
        if env_gate {
            // Kruise pairs status i with spec container i; a pod whose lists differ in length
            // is left to the checks above instead of crashing.
            let Some(container) = containers(new).get(index) else {
                continue;
            };
            let expected = expected_hash_in(container, new);
            if expected
                != meta.containers[index]
                    .hashes
                    .extracted_env_from_metadata_hash
            {
                return true;
            }
            if let Some(old) = old
                && let Some(old_container) = containers(old).get(index)
                && expected != expected_hash_in(old_container, old)
            {
                return true;
            }
        }
    }
    false
}

/// kruise's `enqueue` guard: not deleting, and some container status to report.
pub fn can_enqueue(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|status| status.container_statuses.as_ref())
            .is_some_and(|statuses| !statuses.is_empty())
}

/// Whether the pod's `InPlaceUpdateReady` condition is `False` (an in-place update is on).
pub fn in_place_update_pending(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|condition| condition.type_ == IN_PLACE_UPDATE_READY && condition.status == "False")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;
    use crate::containermeta::envhash::env_from_metadata;
    use crate::containermeta::meta::{RuntimeContainerHashes, RuntimeContainerMeta};

    fn pod(ids: &[&str], owner: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                owner_references: owner.map(|api_version| {
                    vec![OwnerReference {
                        api_version: api_version.into(),
                        kind: "CloneSet".into(),
                        name: "cs".into(),
                        uid: "u".into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                labels: Some(BTreeMap::from([("color".into(), "red".into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: (0..ids.len())
                    .map(|index| Container {
                        name: format!("c{index}"),
                        env: Some(vec![env_from_metadata("COLOR", "metadata.labels['color']")]),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(
                    ids.iter()
                        .enumerate()
                        .map(|(index, id)| ContainerStatus {
                            name: format!("c{index}"),
                            container_id: (!id.is_empty()).then(|| (*id).to_owned()),
                            ..ContainerStatus::default()
                        })
                        .collect(),
                ),
                ..PodStatus::default()
            }),
        }
    }

    fn with_meta(mut pod: Pod, ids: &[&str], env_hash: u64) -> Pod {
        let set = RuntimeContainerMetaSet {
            containers: ids
                .iter()
                .map(|id| RuntimeContainerMeta {
                    name: "c".into(),
                    container_id: (*id).into(),
                    restart_count: 0,
                    hashes: RuntimeContainerHashes {
                        plain_hash: 1,
                        extracted_env_from_metadata_hash: env_hash,
                    },
                })
                .collect(),
        };
        pod.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(RUNTIME_CONTAINERS_META_ANNOTATION.into(), set.to_json());
        pod
    }

    const KRUISE: Option<&str> = Some("apps.kruise.io/v1alpha1");

    #[test]
    fn only_kruise_pods_and_sidecarset_pods_count() {
        assert!(is_kruise_pod(&pod(&["containerd://a"], KRUISE)));
        assert!(!is_kruise_pod(&pod(&["containerd://a"], Some("apps/v1"))));
        assert!(!is_kruise_pod(&pod(&["containerd://a"], None)));
        let mut injected = pod(&["containerd://a"], None);
        injected.metadata.annotations = Some(BTreeMap::from([(
            SIDECARSET_HASH_ANNOTATION.into(),
            "{}".into(),
        )]));
        assert!(is_kruise_pod(&injected));
        assert!(!needs_sync(
            None,
            &pod(&["containerd://a"], Some("apps/v1")),
            true
        ));
    }

    #[test]
    fn missing_or_stale_meta_needs_a_sync() {
        let fresh = pod(&["containerd://a"], KRUISE);
        assert!(needs_sync(None, &fresh, false), "no meta yet");
        let expected = expected_hash_in(&fresh.spec.as_ref().unwrap().containers[0], &fresh);
        let current = with_meta(fresh.clone(), &["containerd://a"], expected);
        assert!(!needs_sync(Some(&current), &current, true));
        let restarted = with_meta(
            pod(&["containerd://b"], KRUISE),
            &["containerd://a"],
            expected,
        );
        assert!(
            needs_sync(Some(&current), &restarted, false),
            "container ID changed"
        );
        assert!(
            !needs_sync(None, &pod(&[""], KRUISE), false),
            "nothing started yet"
        );
    }

    #[test]
    fn a_label_change_behind_an_env_needs_a_sync_only_with_the_gate() {
        let base = pod(&["containerd://a"], KRUISE);
        let expected = expected_hash_in(&base.spec.as_ref().unwrap().containers[0], &base);
        let old = with_meta(base, &["containerd://a"], expected);
        let mut new = old.clone();
        new.metadata.labels = Some(BTreeMap::from([("color".into(), "blue".into())]));
        assert!(needs_sync(Some(&old), &new, true));
        assert!(!needs_sync(Some(&old), &new, false));
    }

    #[test]
    fn deleting_or_status_less_pods_are_not_enqueued() {
        assert!(can_enqueue(&pod(&["containerd://a"], KRUISE)));
        assert!(!can_enqueue(&pod(&[], KRUISE)));
        let mut deleting = pod(&["containerd://a"], KRUISE);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(!can_enqueue(&deleting));
    }

    #[test]
    fn in_place_update_pending_reads_the_condition() {
        let mut p = pod(&["containerd://a"], KRUISE);
        assert!(!in_place_update_pending(&p));
        p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: IN_PLACE_UPDATE_READY.into(),
            status: "False".into(),
            ..PodCondition::default()
        }]);
        assert!(in_place_update_pending(&p));
        p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        assert!(!in_place_update_pending(&p));
    }
}
