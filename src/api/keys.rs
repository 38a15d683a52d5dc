//! Well-known label, annotation, finalizer and condition keys of the `apps.kruise.io` API that
//! kruise-daemon reads or writes (spec §3.2, §3.3, §3.5, §4.1, §5.1).

// ContainerRecreateRequest (spec §4.1).

/// Label with the UID of the CRR's pod, set by the manager's webhook (immutable). The daemon
/// filters CRI containers by it (`io.kubernetes.pod.uid`).
pub const CRR_POD_UID_LABEL: &str = "crr.apps.kruise.io/pod-uid";

/// Label with the name of the CRR's node, set by the manager's webhook (immutable). Part of the
/// daemon's informer selector.
pub const CRR_NODE_NAME_LABEL: &str = "crr.apps.kruise.io/node-name";

/// Label `"true"` while the CRR is active; the manager removes it after completion. Part of the
/// daemon's informer selector.
pub const CRR_ACTIVE_LABEL: &str = "crr.apps.kruise.io/active";

/// `v1alpha1` (kruise ≤ 1.9) annotation with the manager's container status snapshot, a JSON list
/// of [`ContainerRecreateRequestSyncContainerStatus`](crate::api::v1alpha1::ContainerRecreateRequestSyncContainerStatus).
/// `v1beta1` carries it in `status.containerStatusSnapshot`.
pub const CRR_SYNC_CONTAINER_STATUSES_ANNOTATION: &str =
    "crr.apps.kruise.io/sync-container-statuses";

/// `v1alpha1` (kruise ≤ 1.9) annotation with the RFC 3339 time the manager forced the pod
/// not-ready (immutable once set). `v1beta1` carries it as the `lastTransitionTime` of the
/// [`PRE_RECREATE_GRACE_CONDITION`] condition.
pub const CRR_UNREADY_ACQUIRED_ANNOTATION: &str = "crr.apps.kruise.io/unready-acquired";

/// Finalizer the manager holds on a CRR while the pod's `KruisePodReady` is forced `False`
/// (same string as [`CRR_UNREADY_ACQUIRED_ANNOTATION`]).
pub const CRR_UNREADY_ACQUIRED_FINALIZER: &str = "crr.apps.kruise.io/unready-acquired";

/// `v1beta1` CRR condition type set (status `True`) by the manager when it has forced the pod
/// not-ready; its `lastTransitionTime` starts the `unreadyGracePeriodSeconds` wait.
pub const PRE_RECREATE_GRACE_CONDITION: &str = "PreRecreateGrace";

/// Label key the webhook sets on CRRs (and the manager checks on Nodes) for virtual-kubelet nodes.
pub const VIRTUAL_KUBELET_LABEL: &str = "type";

/// Value of [`VIRTUAL_KUBELET_LABEL`] for virtual-kubelet nodes.
pub const VIRTUAL_KUBELET_LABEL_VALUE: &str = "virtual-kubelet";

// Image pulling (spec §3.1, §3.3, §3.5).

/// Annotation the daemon adds to the CRI sandbox config of every pull request.
pub const PULLING_IMAGE_BY_ANNOTATION: &str = "apps.kruise.io/pulling-image-by";

/// Value of [`PULLING_IMAGE_BY_ANNOTATION`].
pub const PULLING_IMAGE_BY_KRUISE_DAEMON: &str = "kruise-daemon";

/// `ReferenceObject.mode` of pull secrets synced in the 1.9+ shared ("batch") mode.
pub const PULL_SECRET_MODE_BATCH: &str = "batch";

/// Namespace the manager copies job pull secrets into (overridable on the manager with env
/// `KRUISE_DAEMON_CONFIG_NS`).
pub const DAEMON_CONFIG_NAMESPACE: &str = "kruise-daemon-config";

/// Label that keeps the manager from deleting a NodeImage whose Node is gone.
pub const FAKE_NODE_IMAGE_LABEL: &str = "apps.kruise.io/fake-nodeimage";

/// Finalizer guarding an ImagePullJob's synced secrets.
pub const DELETION_PROTECTION_FINALIZER: &str = "apps.kruise.io/deletion-protection";

/// Annotation on a synced pull secret: `<namespace>/<name>` of its source secret.
pub const PULL_SECRET_SOURCE_KEY_ANNOTATION: &str = "imagepulljobs.kruise.io/source-key";

/// Annotation on a synced pull secret: sorted, comma-joined `<namespace>/<job>` references.
pub const PULL_SECRET_REFERENCES_ANNOTATION: &str = "imagepulljobs.kruise.io/references";

/// Annotation on a synced pull secret: its sync mode ([`PULL_SECRET_MODE_BATCH`]).
pub const PULL_SECRET_MODE_ANNOTATION: &str = "imagepulljobs.kruise.io/mode";

/// Workload annotation: parallelism of image pre-download jobs.
pub const IMAGE_PREDOWNLOAD_PARALLELISM_ANNOTATION: &str =
    "apps.kruise.io/image-predownload-parallelism";

/// Workload annotation: `timeoutSeconds` of image pre-download jobs.
pub const IMAGE_PREDOWNLOAD_TIMEOUT_SECONDS_ANNOTATION: &str =
    "apps.kruise.io/image-predownload-timeout-seconds";

/// Workload annotation: updated ready pods required before pre-downloading.
pub const IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS_ANNOTATION: &str =
    "apps.kruise.io/image-predownload-min-updated-ready-pods";

// NodePodProbe (spec §5.1).

/// Finalizer of PodProbeMarkers, removed once their probes left the NodePodProbes.
pub const NODE_POD_PROBE_CLEANUP_FINALIZER: &str = "kruise.io/node-pod-probe-cleanup";

/// Pod annotation with serverless probe results (JSON).
pub const POD_PROBE_ANNOTATION: &str = "kruise.io/podprobe";

/// Pod annotation listing the PodProbeMarkers that select the pod.
pub const POD_PROBE_MARKER_LIST_ANNOTATION: &str = "kruise.io/podprobemarker-list";
