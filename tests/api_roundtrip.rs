//! Objects as kruise-manager and the API server hand them to kruised survive a trip through our
//! types unchanged; unknown fields disappear exactly where the upstream schema prunes them;
//! objects missing a schema-required field are rejected.

use std::collections::{BTreeMap, BTreeSet};

use kruised::api::{self, v1alpha1, v1beta1};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const MASTER_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference/crds");

/// The NodeImage example of spec §3.7, with real values where the spec elides them.
const NODEIMAGE_V1BETA1_SPEC_EXAMPLE: &str = r#"
apiVersion: apps.kruise.io/v1beta1
kind: NodeImage
metadata: {name: node-1, labels: {kubernetes.io/hostname: node-1, kubernetes.io/os: linux}}
spec:
  images:
    nginx:
      pullSecrets: [{namespace: kruise-daemon-config, name: regcred-3fa9c1, mode: batch}]
      sandboxConfig: {labels: {a: b}, annotations: {c: d}}
      tags:
      - tag: "1.25"
        version: 2
        createdAt: "2026-07-01T10:00:00Z"
        imagePullPolicy: IfNotPresent
        pullPolicy: {timeoutSeconds: 600, backoffLimit: 3, ttlSecondsAfterFinished: 2345, activeDeadlineSeconds: 1800}
        ownerReferences: [{apiVersion: apps.kruise.io/v1beta1, kind: ImagePullJob, namespace: default, name: job1, uid: "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"}]
status:
  desired: 1
  succeeded: 1
  failed: 0
  pulling: 0
  waiting: 0
  imageStatuses:
    nginx:
      tags:
      - {tag: "1.25", version: 2, phase: Succeeded, progress: 100, startTime: "2026-07-01T10:00:03Z", completionTime: "2026-07-01T10:00:41Z", imageID: "nginx@sha256:6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae"}
"#;

/// A v1beta1 NodeImage with the fields §3.7 leaves out: a failed tag, an old-style secret
/// reference, `firstSyncStatus`, `fieldPath`/`resourceVersion` in the owner reference.
const NODEIMAGE_V1BETA1_FAILED_PULL: &str = r#"
apiVersion: apps.kruise.io/v1beta1
kind: NodeImage
metadata:
  name: node-2
  uid: 0c7d7a4e-1f43-4b7a-9d51-2f6e9b0a8c31
  resourceVersion: "48213"
  creationTimestamp: "2026-06-30T08:00:00Z"
spec:
  images:
    quay.io/org/app:
      pullSecrets: [{namespace: kruise-daemon-config, name: quay-7c21d0}]
      tags:
      - tag: v2
        version: 0
        createdAt: "2026-07-01T09:00:00Z"
        imagePullPolicy: Always
        pullPolicy: {timeoutSeconds: 300, backoffLimit: 1}
        ownerReferences:
        - {apiVersion: apps.kruise.io/v1beta1, kind: ImagePullJob, namespace: ops, name: warm-app, uid: "1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7081", resourceVersion: "991", fieldPath: spec}
status:
  desired: 1
  succeeded: 0
  failed: 1
  pulling: 0
  waiting: 0
  imageStatuses:
    quay.io/org/app:
      tags:
      - tag: v2
        version: 0
        phase: Failed
        startTime: "2026-07-01T09:00:02Z"
        completionTime: "2026-07-01T09:10:02Z"
        message: 'rpc error: code = Unknown desc = failed to pull and unpack image "quay.io/org/app:v2": 401 Unauthorized'
  firstSyncStatus: {syncAt: "2026-06-30T08:05:00Z", status: Succeeded, message: all images pulled}
"#;

/// A v1alpha1 NodeImage as a kruise 1.8 manager writes it (no `mode`, no `waiting` from 1.8).
const NODEIMAGE_V1ALPHA1: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: NodeImage
metadata: {name: node-3}
spec:
  images:
    busybox:
      pullSecrets: [{namespace: kruise-daemon-config, name: regcred-a1b2c3}]
      sandboxConfig: {labels: {team: infra}, annotations: {purpose: warmup}}
      tags:
      - tag: "1.36"
        version: 1
        createdAt: "2026-07-01T10:00:00Z"
        imagePullPolicy: IfNotPresent
        pullPolicy: {timeoutSeconds: 600, backoffLimit: 3, ttlSecondsAfterFinished: 86400, activeDeadlineSeconds: 1800}
        ownerReferences:
        - {apiVersion: apps.kruise.io/v1alpha1, kind: ImagePullJob, namespace: default, name: bb, uid: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", resourceVersion: "12", fieldPath: spec}
      - tag: "1.37"
        version: 0
status:
  desired: 2
  succeeded: 0
  failed: 0
  pulling: 1
  waiting: 1
  imageStatuses:
    busybox:
      tags:
      - {tag: "1.36", version: 1, phase: Pulling, progress: 0, startTime: "2026-07-01T10:00:01Z"}
      - {tag: "1.37", version: 0, phase: Waiting, message: queued, imageID: "", completionTime: "2026-07-01T10:00:09Z"}
  firstSyncStatus: {syncAt: "2026-07-01T10:00:00Z", status: Failed, message: busybox:1.35 failed}
"#;

/// A full ImagePullJob. `selector` and `podSelector` are mutually exclusive for the manager's
/// webhook, not for the schema; both appear so that every field is exercised.
const IMAGEPULLJOB_V1BETA1: &str = r#"
apiVersion: apps.kruise.io/v1beta1
kind: ImagePullJob
metadata:
  name: warm-nginx
  namespace: default
  uid: 6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b
  finalizers: [apps.kruise.io/deletion-protection]
spec:
  image: nginx:1.25
  pullSecrets: [regcred]
  selector:
    names: [node-1, node-2]
    matchLabels: {node-role.kubernetes.io/worker: ""}
    matchExpressions:
    - {key: topology.kubernetes.io/zone, operator: In, values: [zone-a, zone-b]}
    - {key: node.kubernetes.io/exclude-from-external-load-balancers, operator: DoesNotExist}
  podSelector:
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: NotIn, values: [batch]}]
  parallelism: 10
  pullPolicy: {timeoutSeconds: 600, backoffLimit: 3}
  completionPolicy: {type: Always, activeDeadlineSeconds: 1200, ttlSecondsAfterFinished: 300}
  sandboxConfig: {labels: {a: b}, annotations: {c: d}}
  imagePullPolicy: IfNotPresent
status:
  startTime: "2026-07-01T10:00:00Z"
  completionTime: "2026-07-01T10:03:00Z"
  desired: 3
  active: 0
  succeeded: 2
  failed: 1
  message: job has completed
  failedNodes: [node-3]
"#;

/// A v1alpha1 ImagePullJob with a percentage (string) parallelism and a `Never` policy.
const IMAGEPULLJOB_V1ALPHA1: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ImagePullJob
metadata: {name: warm-redis, namespace: cache}
spec:
  image: redis:7
  pullSecrets: [regcred, mirror]
  selector:
    names: [node-4]
    matchLabels: {disk: ssd}
    matchExpressions: [{key: arch, operator: In, values: [amd64]}]
  podSelector:
    matchLabels: {app: redis}
    matchExpressions: [{key: role, operator: In, values: [primary, replica]}]
  parallelism: "50%"
  pullPolicy: {timeoutSeconds: 900, backoffLimit: 5}
  completionPolicy: {type: Never, activeDeadlineSeconds: 0, ttlSecondsAfterFinished: 0}
  sandboxConfig: {labels: {x: y}, annotations: {z: w}}
  imagePullPolicy: Always
status:
  startTime: "2026-07-01T10:00:00Z"
  completionTime: "2026-07-01T11:00:00Z"
  desired: 1
  active: 1
  succeeded: 0
  failed: 0
  message: job is running, no progress
  failedNodes: []
"#;

const IMAGELISTPULLJOB_V1BETA1: &str = r#"
apiVersion: apps.kruise.io/v1beta1
kind: ImageListPullJob
metadata: {name: warm-list, namespace: default}
spec:
  images: [nginx:1.25, redis:7, quay.io/org/app@sha256:6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae]
  pullSecrets: [regcred]
  selector:
    names: [node-1]
    matchLabels: {pool: web}
    matchExpressions: [{key: zone, operator: In, values: [a]}]
  podSelector:
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: NotIn, values: [batch]}]
  parallelism: 2
  pullPolicy: {timeoutSeconds: 600, backoffLimit: 3}
  completionPolicy: {type: Always, activeDeadlineSeconds: 3600, ttlSecondsAfterFinished: 600}
  sandboxConfig: {labels: {a: b}, annotations: {c: d}}
  imagePullPolicy: IfNotPresent
status:
  startTime: "2026-07-01T10:00:00Z"
  completionTime: "2026-07-01T10:20:00Z"
  desired: 3
  active: 0
  completed: 3
  succeeded: 2
  failedImageStatuses:
  - {imagePullJob: warm-list-x7k2p, name: redis:7, message: "Please check for details"}
"#;

const IMAGELISTPULLJOB_V1ALPHA1: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ImageListPullJob
metadata: {name: warm-list-old, namespace: default}
spec:
  images: [nginx:1.24]
  pullSecrets: [regcred]
  selector:
    names: [node-1]
    matchLabels: {pool: web}
    matchExpressions: [{key: zone, operator: In, values: [a]}]
  podSelector:
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: NotIn, values: [batch]}]
  parallelism: 1
  pullPolicy: {timeoutSeconds: 60, backoffLimit: 0}
  completionPolicy: {type: Never, activeDeadlineSeconds: 60, ttlSecondsAfterFinished: 60}
  sandboxConfig: {labels: {a: b}, annotations: {c: d}}
  imagePullPolicy: Always
status:
  startTime: "2026-07-01T10:00:00Z"
  completionTime: "2026-07-01T10:20:00Z"
  desired: 1
  active: 1
  completed: 0
  succeeded: 0
  failedImageStatuses: [{imagePullJob: warm-list-old-abcde, name: "nginx:1.24", message: failed}]
"#;

/// A NodePodProbe with an exec and an httpGet probe, plus tcpSocket and gRPC probes so that every
/// Probe field is exercised.
const NODEPODPROBE_V1ALPHA1: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: NodePodProbe
metadata: {name: node-1}
spec:
  podProbes:
  - name: web-0
    namespace: default
    uid: 2f0c8d1e-7a6b-4c5d-9e8f-0a1b2c3d4e5f
    IP: 10.244.1.17
    probes:
    - name: "ppm-1#healthy"
      containerName: main
      probe:
        exec: {command: [/bin/sh, -c, "test -f /tmp/healthy"]}
        initialDelaySeconds: 5
        timeoutSeconds: 2
        periodSeconds: 10
        successThreshold: 1
        failureThreshold: 3
        terminationGracePeriodSeconds: 30
    - name: "ppm-1#http"
      containerName: main
      probe:
        httpGet:
          path: /healthz
          port: 8080
          host: 127.0.0.1
          scheme: HTTP
          httpHeaders: [{name: X-Probe, value: kruise}]
        periodSeconds: 5
  - name: db-0
    namespace: data
    uid: 7e6d5c4b-3a29-4187-b6a5-948372615041
    IP: 10.244.1.18
    probes:
    - name: "ppm-2#tcp"
      containerName: db
      probe:
        tcpSocket: {port: postgres, host: 10.244.1.18}
    - name: "ppm-2#grpc"
      containerName: db
      probe:
        grpc: {port: 9090, service: health}
status:
  podProbeStatuses:
  - name: web-0
    namespace: default
    uid: 2f0c8d1e-7a6b-4c5d-9e8f-0a1b2c3d4e5f
    probeStates:
    - name: "ppm-1#healthy"
      state: Succeeded
      lastProbeTime: "2026-07-01T10:00:30Z"
      lastTransitionTime: "2026-07-01T10:00:10Z"
      message: ok
    - {name: "ppm-1#http", state: Failed, message: "HTTP probe failed with statuscode: 503"}
  - {name: db-0, namespace: data, uid: 7e6d5c4b-3a29-4187-b6a5-948372615041}
"#;

/// A v1alpha1 CRR the manager completed at its deadline: the snapshot and the unready time live
/// in annotations.
const CRR_V1ALPHA1: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata:
  name: web-0-restart
  namespace: default
  uid: 8d3f1a2b-4c5d-4e6f-a7b8-c9d0e1f2a3b4
  creationTimestamp: "2026-07-01T10:00:00Z"
  labels:
    crr.apps.kruise.io/pod-uid: 2f0c8d1e-7a6b-4c5d-9e8f-0a1b2c3d4e5f
    crr.apps.kruise.io/node-name: node-1
    crr.apps.kruise.io/active: "true"
  annotations:
    crr.apps.kruise.io/sync-container-statuses: '[{"name":"main","ready":false,"restartCount":3,"containerID":"containerd://4f2a"},{"name":"sidecar","ready":true,"restartCount":0}]'
    crr.apps.kruise.io/unready-acquired: "2026-07-01T10:00:05Z"
  finalizers: [crr.apps.kruise.io/unready-acquired]
spec:
  podName: web-0
  containers:
  - name: main
    preStop:
      httpGet:
        path: /shutdown
        port: http
        host: 10.244.1.17
        scheme: HTTP
        httpHeaders: [{name: X-Reason, value: recreate}]
    ports:
    - {name: http, containerPort: 8080, protocol: TCP, hostPort: 18080, hostIP: 0.0.0.0}
    statusContext: {containerID: "containerd://9e1b", restartCount: 2}
  - name: sidecar
    preStop: {exec: {command: [/bin/sh, -c, sleep 5]}}
    statusContext: {containerID: "containerd://1c0d", restartCount: 0}
  - name: proxy
    preStop: {tcpSocket: {port: 15000, host: 127.0.0.1}}
    statusContext: {containerID: "containerd://77aa", restartCount: 1}
  strategy:
    failurePolicy: Fail
    orderedRecreate: true
    forceRecreate: false
    terminationGracePeriodSeconds: 30
    unreadyGracePeriodSeconds: 3
    minStartedSeconds: 10
  activeDeadlineSeconds: 300
  ttlSecondsAfterFinished: 1800
status:
  phase: Completed
  completionTime: "2026-07-01T10:05:00Z"
  message: recreating has exceeded the activeDeadlineSeconds
  containerRecreateStates:
  - {name: main, phase: Recreating, isKilled: true}
  - {name: sidecar, phase: Pending}
  - {name: proxy, phase: Pending, message: not found container on Node}
"#;

/// A v1beta1 CRR with the manager's status snapshot and PreRecreateGrace condition (master).
const CRR_V1BETA1: &str = r#"
apiVersion: apps.kruise.io/v1beta1
kind: ContainerRecreateRequest
metadata:
  name: web-1-restart
  namespace: default
  labels:
    crr.apps.kruise.io/pod-uid: 5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d
    crr.apps.kruise.io/node-name: node-2
  finalizers: [crr.apps.kruise.io/unready-acquired]
spec:
  podName: web-1
  containers:
  - name: main
    preStop:
      httpGet:
        path: /shutdown
        port: 8080
        host: 10.244.2.9
        scheme: HTTPS
        httpHeaders: [{name: X-Reason, value: recreate}]
    ports: [{name: http, containerPort: 8080, protocol: TCP, hostPort: 0, hostIP: ""}]
    statusContext: {containerID: "containerd://9e1b", restartCount: 2}
  - name: sidecar
    preStop: {exec: {command: [sleep, "5"]}}
    statusContext: {containerID: "containerd://1c0d", restartCount: 0}
  - name: proxy
    preStop: {tcpSocket: {port: admin, host: 10.244.2.9}}
    statusContext: {containerID: "containerd://77aa", restartCount: 1}
  strategy:
    failurePolicy: Ignore
    orderedRecreate: false
    forceRecreate: true
    terminationGracePeriodSeconds: 0
    unreadyGracePeriodSeconds: 5
    minStartedSeconds: 0
  activeDeadlineSeconds: 3
  ttlSecondsAfterFinished: 0
status:
  phase: Completed
  completionTime: "2026-07-01T10:01:00Z"
  message: ""
  containerRecreateStates:
  - {name: main, phase: Succeeded, isKilled: true}
  - {name: sidecar, phase: Failed, message: "kill container error: context deadline exceeded", isKilled: false}
  - {name: proxy, phase: Succeeded, isKilled: true}
  containerStatusSnapshot:
  - {name: main, ready: true, restartCount: 3, containerID: "containerd://4f2a"}
  - {name: sidecar, ready: false, restartCount: 0}
  conditions:
  - type: PreRecreateGrace
    status: "True"
    reason: PreRecreateGrace
    message: ""
    lastTransitionTime: "2026-07-01T10:00:05Z"
    observedGeneration: 1
"#;

/// One sample object, the upstream CRD and version it belongs to, and our type for it.
struct Sample {
    name: &'static str,
    crd: &'static str,
    version: &'static str,
    yaml: &'static str,
    round_trip: fn(&Value) -> Result<Value, serde_json::Error>,
}

const SAMPLES: &[Sample] = &[
    Sample {
        name: "NodeImage v1beta1 (spec §3.7)",
        crd: "nodeimages.apps.kruise.io",
        version: "v1beta1",
        yaml: NODEIMAGE_V1BETA1_SPEC_EXAMPLE,
        round_trip: round_trip::<v1beta1::NodeImage>,
    },
    Sample {
        name: "NodeImage v1beta1 (failed pull)",
        crd: "nodeimages.apps.kruise.io",
        version: "v1beta1",
        yaml: NODEIMAGE_V1BETA1_FAILED_PULL,
        round_trip: round_trip::<v1beta1::NodeImage>,
    },
    Sample {
        name: "NodeImage v1alpha1",
        crd: "nodeimages.apps.kruise.io",
        version: "v1alpha1",
        yaml: NODEIMAGE_V1ALPHA1,
        round_trip: round_trip::<v1alpha1::NodeImage>,
    },
    Sample {
        name: "ImagePullJob v1beta1",
        crd: "imagepulljobs.apps.kruise.io",
        version: "v1beta1",
        yaml: IMAGEPULLJOB_V1BETA1,
        round_trip: round_trip::<v1beta1::ImagePullJob>,
    },
    Sample {
        name: "ImagePullJob v1alpha1",
        crd: "imagepulljobs.apps.kruise.io",
        version: "v1alpha1",
        yaml: IMAGEPULLJOB_V1ALPHA1,
        round_trip: round_trip::<v1alpha1::ImagePullJob>,
    },
    Sample {
        name: "ImageListPullJob v1beta1",
        crd: "imagelistpulljobs.apps.kruise.io",
        version: "v1beta1",
        yaml: IMAGELISTPULLJOB_V1BETA1,
        round_trip: round_trip::<v1beta1::ImageListPullJob>,
    },
    Sample {
        name: "ImageListPullJob v1alpha1",
        crd: "imagelistpulljobs.apps.kruise.io",
        version: "v1alpha1",
        yaml: IMAGELISTPULLJOB_V1ALPHA1,
        round_trip: round_trip::<v1alpha1::ImageListPullJob>,
    },
    Sample {
        name: "NodePodProbe v1alpha1",
        crd: "nodepodprobes.apps.kruise.io",
        version: "v1alpha1",
        yaml: NODEPODPROBE_V1ALPHA1,
        round_trip: round_trip::<v1alpha1::NodePodProbe>,
    },
    Sample {
        name: "ContainerRecreateRequest v1alpha1",
        crd: "containerrecreaterequests.apps.kruise.io",
        version: "v1alpha1",
        yaml: CRR_V1ALPHA1,
        round_trip: round_trip::<v1alpha1::ContainerRecreateRequest>,
    },
    Sample {
        name: "ContainerRecreateRequest v1beta1",
        crd: "containerrecreaterequests.apps.kruise.io",
        version: "v1beta1",
        yaml: CRR_V1BETA1,
        round_trip: round_trip::<v1beta1::ContainerRecreateRequest>,
    },
];

#[test]
fn nodeimage_spec_example_round_trips_unchanged() {
    assert_round_trips_unchanged(
        NODEIMAGE_V1BETA1_SPEC_EXAMPLE,
        round_trip::<v1beta1::NodeImage>,
    );
    assert_round_trips_unchanged(
        NODEIMAGE_V1BETA1_FAILED_PULL,
        round_trip::<v1beta1::NodeImage>,
    );
    assert_round_trips_unchanged(NODEIMAGE_V1ALPHA1, round_trip::<v1alpha1::NodeImage>);
}

#[test]
fn imagepulljob_round_trips_unchanged() {
    assert_round_trips_unchanged(IMAGEPULLJOB_V1BETA1, round_trip::<v1beta1::ImagePullJob>);
    assert_round_trips_unchanged(IMAGEPULLJOB_V1ALPHA1, round_trip::<v1alpha1::ImagePullJob>);
}

#[test]
fn imagelistpulljob_round_trips_unchanged() {
    assert_round_trips_unchanged(
        IMAGELISTPULLJOB_V1BETA1,
        round_trip::<v1beta1::ImageListPullJob>,
    );
    assert_round_trips_unchanged(
        IMAGELISTPULLJOB_V1ALPHA1,
        round_trip::<v1alpha1::ImageListPullJob>,
    );
}

#[test]
fn nodepodprobe_with_exec_and_http_probes_round_trips_unchanged() {
    assert_round_trips_unchanged(NODEPODPROBE_V1ALPHA1, round_trip::<v1alpha1::NodePodProbe>);
}

#[test]
fn crr_v1alpha1_with_manager_annotations_round_trips_unchanged() {
    assert_round_trips_unchanged(
        CRR_V1ALPHA1,
        round_trip::<v1alpha1::ContainerRecreateRequest>,
    );
}

#[test]
fn crr_v1beta1_with_snapshot_and_pre_recreate_grace_condition_round_trips_unchanged() {
    assert_round_trips_unchanged(CRR_V1BETA1, round_trip::<v1beta1::ContainerRecreateRequest>);
}

#[test]
fn typed_fields_hold_the_sample_values() {
    let node_image: v1beta1::NodeImage = from_yaml(NODEIMAGE_V1BETA1_SPEC_EXAMPLE);
    let images = node_image.spec.images.as_ref().expect("images");
    let nginx = &images["nginx"];
    let secret = &nginx.pull_secrets.as_ref().expect("pull secrets")[0];
    assert_eq!(secret.mode.as_deref(), Some(api::PULL_SECRET_MODE_BATCH));
    let tag = &nginx.tags[0];
    assert_eq!((tag.tag.as_str(), tag.version), ("1.25", Some(2)));
    assert_eq!(
        tag.image_pull_policy.as_deref(),
        Some(api::ImagePullPolicy::IfNotPresent.as_str())
    );
    let status = node_image.status.as_ref().expect("status");
    let tag_status = &status.image_statuses.as_ref().expect("image statuses")["nginx"].tags[0];
    assert_eq!(tag_status.phase.parse(), Ok(api::ImagePullPhase::Succeeded));

    let probe: v1alpha1::NodePodProbe = from_yaml(NODEPODPROBE_V1ALPHA1);
    let pod = &probe.spec.pod_probes.as_ref().expect("pod probes")[0];
    assert_eq!(pod.ip, "10.244.1.17");

    let crr: v1beta1::ContainerRecreateRequest = from_yaml(CRR_V1BETA1);
    let strategy = crr.spec.strategy.as_ref().expect("strategy");
    assert_eq!(
        strategy.failure_policy,
        Some(api::ContainerRecreateRequestFailurePolicy::Ignore)
    );
    let status = crr.status.as_ref().expect("status");
    assert_eq!(status.phase, api::ContainerRecreateRequestPhase::Completed);
    let grace = status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == api::PRE_RECREATE_GRACE_CONDITION)
        .expect("PreRecreateGrace condition");
    assert_eq!(
        grace.last_transition_time.0.to_string(),
        "2026-07-01T10:00:05Z"
    );

    let job: v1beta1::ImagePullJob = from_yaml(IMAGEPULLJOB_V1BETA1);
    assert_eq!(
        job.spec.image, "nginx:1.25",
        "the versioned spec dereferences to the shared spec"
    );
}

/// The manager writes `crr.apps.kruise.io/sync-container-statuses` with Go's `encoding/json`;
/// our snapshot type reads it and writes the identical bytes.
#[test]
fn sync_container_statuses_annotation_round_trips_byte_for_byte() {
    let crr: v1alpha1::ContainerRecreateRequest = from_yaml(CRR_V1ALPHA1);
    let annotation = &crr.metadata.annotations.as_ref().expect("annotations")
        [api::CRR_SYNC_CONTAINER_STATUSES_ANNOTATION];
    let snapshot: Vec<v1alpha1::ContainerRecreateRequestSyncContainerStatus> =
        serde_json::from_str(annotation).expect("annotation is a snapshot list");
    assert_eq!(
        snapshot[0].container_id.as_deref(),
        Some("containerd://4f2a")
    );
    assert_eq!(
        &serde_json::to_string(&snapshot).expect("serializes"),
        annotation
    );
}

/// Every property of every upstream schema appears in some sample, so the round-trip tests
/// prove that no field is lost.
#[test]
fn samples_exercise_every_upstream_property() {
    let crds = upstream_crds();
    let mut missing = Vec::new();
    for (crd, version) in SAMPLES
        .iter()
        .map(|s| (s.crd, s.version))
        .collect::<BTreeSet<_>>()
    {
        let schema = upstream_schema(&crds, crd, version);
        let mut declared = BTreeSet::new();
        declared_paths(schema, String::new(), &mut declared);
        let mut exercised = BTreeSet::new();
        for sample in SAMPLES
            .iter()
            .filter(|s| s.crd == crd && s.version == version)
        {
            present_paths(
                schema,
                &yaml_value(sample.yaml),
                String::new(),
                &mut exercised,
            );
        }
        missing.extend(
            declared
                .difference(&exercised)
                .map(|path| format!("{crd} {version} {path}")),
        );
    }
    assert!(
        missing.is_empty(),
        "properties no sample exercises:\n{}",
        missing.join("\n")
    );
}

/// The API server prunes fields its schema does not declare (no CRD here preserves unknown
/// fields); our types must drop the same fields and keep everything else.
#[test]
fn unknown_fields_are_dropped_exactly_where_the_upstream_schema_prunes_them() {
    let crds = upstream_crds();
    for sample in SAMPLES {
        let schema = upstream_schema(&crds, sample.crd, sample.version);
        let original = yaml_value(sample.yaml);
        let mut with_unknown_fields = original.clone();
        add_unknown_fields(schema, &mut with_unknown_fields, true);
        assert_ne!(
            with_unknown_fields, original,
            "{}: unknown fields were added",
            sample.name
        );

        let pruned_by_api_server = prune(schema, &with_unknown_fields, true);
        assert_eq!(
            pruned_by_api_server, original,
            "{}: upstream schema prunes every added field",
            sample.name
        );
        let ours = (sample.round_trip)(&with_unknown_fields).unwrap_or_else(|e| {
            panic!("{}: unknown fields must not be rejected: {e}", sample.name)
        });
        assert_eq!(
            ours, pruned_by_api_server,
            "{}: our types drop what the API server prunes",
            sample.name
        );
    }
}

#[test]
fn nodeimage_tag_without_tag_fails_to_deserialize() {
    let mut node_image = yaml_value(NODEIMAGE_V1BETA1_SPEC_EXAMPLE);
    remove(&mut node_image, "/spec/images/nginx/tags/0", "tag");
    let error = round_trip::<v1beta1::NodeImage>(&node_image).expect_err("tag is required");
    assert!(error.to_string().contains("missing field `tag`"), "{error}");
}

#[test]
fn crr_without_pod_name_fails_to_deserialize() {
    for (yaml, round_trip) in [
        (
            CRR_V1ALPHA1,
            round_trip::<v1alpha1::ContainerRecreateRequest> as fn(&Value) -> _,
        ),
        (CRR_V1BETA1, round_trip::<v1beta1::ContainerRecreateRequest>),
    ] {
        let mut crr = yaml_value(yaml);
        remove(&mut crr, "/spec", "podName");
        let error = round_trip(&crr).expect_err("podName is required");
        assert!(
            error.to_string().contains("missing field `podName`"),
            "{error}"
        );
    }
}

/// Every field the upstream schema requires, removed from a sample one at a time, makes
/// deserialization fail — except inside k8s-openapi's core types, whose deserializers default
/// missing required fields (listed exactly below; the API server never stores such objects).
#[test]
fn objects_missing_a_schema_required_field_fail_to_deserialize() {
    let k8s_openapi_lenient: BTreeSet<&str> = [
        ".spec.containers[].ports[].containerPort",
        ".spec.containers[].preStop.httpGet.httpHeaders[].name",
        ".spec.containers[].preStop.httpGet.httpHeaders[].value",
        ".spec.containers[].preStop.httpGet.port",
        ".spec.containers[].preStop.tcpSocket.port",
        ".spec.podProbes[].probes[].probe.grpc.port",
        ".spec.podProbes[].probes[].probe.httpGet.httpHeaders[].name",
        ".spec.podProbes[].probes[].probe.httpGet.httpHeaders[].value",
        ".spec.podProbes[].probes[].probe.httpGet.port",
        ".spec.podProbes[].probes[].probe.tcpSocket.port",
        ".spec.podSelector.matchExpressions[].key",
        ".spec.podSelector.matchExpressions[].operator",
        ".spec.selector.matchExpressions[].key",
        ".spec.selector.matchExpressions[].operator",
        ".status.conditions[].message",
        ".status.conditions[].reason",
        ".status.conditions[].status",
        ".status.conditions[].type",
    ]
    .into();
    let crds = upstream_crds();
    let mut accepted = BTreeSet::new();
    let mut checked = 0;
    for sample in SAMPLES {
        let schema = upstream_schema(&crds, sample.crd, sample.version);
        let original = yaml_value(sample.yaml);
        for (pointer, schema_path, field) in
            required_fields(schema, &original, String::new(), String::new())
        {
            let mut object = original.clone();
            remove(&mut object, &pointer, &field);
            checked += 1;
            if (sample.round_trip)(&object).is_ok() {
                accepted.insert(format!("{schema_path}.{field}"));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} required fields were exercised"
    );
    let accepted: BTreeSet<&str> = accepted.iter().map(String::as_str).collect();
    assert_eq!(
        accepted, k8s_openapi_lenient,
        "required fields whose absence was accepted"
    );
}

/// The upstream schemas do not require `spec`. For the node-named kinds, whose specs have no
/// required field, a missing `spec` is the empty spec.
#[test]
fn nodeimage_and_nodepodprobe_without_spec_deserialize_to_an_empty_spec() {
    let without_spec = |api_version: &str, kind: &str| json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "node-1"}});
    let node_image: v1beta1::NodeImage =
        serde_json::from_value(without_spec("apps.kruise.io/v1beta1", "NodeImage"))
            .expect("NodeImage");
    assert_eq!(node_image.spec, v1beta1::NodeImageSpec::default());

    let mut with_null_spec = without_spec("apps.kruise.io/v1alpha1", "NodeImage");
    with_null_spec["spec"] = Value::Null;
    let node_image: v1alpha1::NodeImage =
        serde_json::from_value(with_null_spec).expect("NodeImage");
    assert_eq!(node_image.spec, v1alpha1::NodeImageSpec::default());

    let probe: v1alpha1::NodePodProbe =
        serde_json::from_value(without_spec("apps.kruise.io/v1alpha1", "NodePodProbe"))
            .expect("NodePodProbe");
    assert_eq!(probe.spec, v1alpha1::NodePodProbeSpec::default());
}

/// `v1beta1` CRR phases and failure policy are schema `enum`s; `v1alpha1` accepts any string,
/// as its schema does.
#[test]
fn crr_enum_values_are_enforced_only_where_the_upstream_schema_declares_an_enum() {
    for (pointer, field) in [
        ("/status", "phase"),
        ("/status/containerRecreateStates/0", "phase"),
        ("/spec/strategy", "failurePolicy"),
    ] {
        for (yaml, round_trip, accepted) in [
            (
                CRR_V1ALPHA1,
                round_trip::<v1alpha1::ContainerRecreateRequest> as fn(&Value) -> _,
                true,
            ),
            (
                CRR_V1BETA1,
                round_trip::<v1beta1::ContainerRecreateRequest>,
                false,
            ),
        ] {
            let mut crr = yaml_value(yaml);
            set(&mut crr, pointer, field, json!("Exploded"));
            assert_eq!(
                round_trip(&crr).is_ok(),
                accepted,
                "{pointer}/{field} = Exploded"
            );
        }
    }
}

// Helpers.

fn round_trip<K: Serialize + DeserializeOwned>(value: &Value) -> Result<Value, serde_json::Error> {
    let typed: K = serde_json::from_value(value.clone())?;
    serde_json::to_value(&typed)
}

fn assert_round_trips_unchanged(
    yaml: &str,
    round_trip: fn(&Value) -> Result<Value, serde_json::Error>,
) {
    let original = yaml_value(yaml);
    let result = round_trip(&original).unwrap_or_else(|e| panic!("deserializing {original}: {e}"));
    assert_eq!(result, original, "round trip changed the object");
}

fn yaml_value(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("sample is valid YAML")
}

fn from_yaml<K: DeserializeOwned>(yaml: &str) -> K {
    serde_json::from_value(yaml_value(yaml)).expect("sample deserializes")
}

fn remove(value: &mut Value, pointer: &str, field: &str) {
    let object = value.pointer_mut(pointer).and_then(Value::as_object_mut);
    let object = object.unwrap_or_else(|| panic!("no object at {pointer}"));
    object
        .remove(field)
        .unwrap_or_else(|| panic!("no {field} at {pointer}"));
}

fn set(value: &mut Value, pointer: &str, field: &str, new: Value) {
    let object = value.pointer_mut(pointer).and_then(Value::as_object_mut);
    object
        .unwrap_or_else(|| panic!("no object at {pointer}"))
        .insert(field.to_owned(), new);
}

fn upstream_crds() -> BTreeMap<String, Value> {
    let mut crds = BTreeMap::new();
    for entry in std::fs::read_dir(MASTER_CRDS).expect("reference CRD directory") {
        let path = entry.expect("directory entry").path();
        let text = std::fs::read_to_string(&path).expect("reference CRD file");
        let crd: Value = serde_yaml::from_str(&text).expect("reference CRD is YAML");
        crds.insert(
            crd["metadata"]["name"]
                .as_str()
                .expect("CRD name")
                .to_owned(),
            crd,
        );
    }
    crds
}

fn upstream_schema<'a>(crds: &'a BTreeMap<String, Value>, crd: &str, version: &str) -> &'a Value {
    let versions = crds[crd]["spec"]["versions"].as_array().expect("versions");
    let version = versions
        .iter()
        .find(|v| v["name"] == version)
        .expect("version exists upstream");
    &version["schema"]["openAPIV3Schema"]
}

/// Mimics the API server's pruning: keeps declared properties (and map entries), drops the rest,
/// leaves `metadata` to the API server's own handling.
fn prune(schema: &Value, value: &Value, is_root: bool) -> Value {
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return value.clone();
    }
    match value {
        Value::Object(object) => {
            let mut pruned = serde_json::Map::new();
            for (key, field) in object {
                if is_root && key == "metadata" {
                    pruned.insert(key.clone(), field.clone());
                } else if let Some(property) = schema["properties"].get(key) {
                    pruned.insert(key.clone(), prune(property, field, false));
                } else if schema["additionalProperties"].is_object() {
                    pruned.insert(
                        key.clone(),
                        prune(&schema["additionalProperties"], field, false),
                    );
                }
            }
            Value::Object(pruned)
        }
        Value::Array(items) => items
            .iter()
            .map(|item| prune(&schema["items"], item, false))
            .collect(),
        scalar => scalar.clone(),
    }
}

/// Adds an unknown field to every object of `value` whose schema declares properties (not to
/// maps, where any key is a valid entry, and not to `metadata`).
fn add_unknown_fields(schema: &Value, value: &mut Value, is_root: bool) {
    match value {
        Value::Object(object) => {
            for (key, field) in object.iter_mut() {
                if is_root && key == "metadata" {
                    continue;
                }
                if let Some(property) = schema["properties"].get(key.as_str()) {
                    add_unknown_fields(property, field, false);
                } else if schema["additionalProperties"].is_object() {
                    add_unknown_fields(&schema["additionalProperties"], field, false);
                }
            }
            if schema["properties"].is_object() {
                object.insert("kruisedUnknownField".into(), json!({"nested": [1, "two"]}));
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| add_unknown_fields(&schema["items"], item, false)),
        _ => {}
    }
}

/// Every `(JSON pointer of an object, its schema path, required field)` present in `value`.
fn required_fields(
    schema: &Value,
    value: &Value,
    pointer: String,
    path: String,
) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    match value {
        Value::Object(object) => {
            for field in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if object.contains_key(field) {
                    found.push((pointer.clone(), path.clone(), field.to_owned()));
                }
            }
            for (key, field) in object {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                if let Some(property) = schema["properties"].get(key) {
                    if path.is_empty() && key == "metadata" {
                        continue;
                    }
                    found.extend(required_fields(
                        property,
                        field,
                        format!("{pointer}/{escaped}"),
                        format!("{path}.{key}"),
                    ));
                } else if schema["additionalProperties"].is_object() {
                    let nested = &schema["additionalProperties"];
                    found.extend(required_fields(
                        nested,
                        field,
                        format!("{pointer}/{escaped}"),
                        format!("{path}{{}}"),
                    ));
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                found.extend(required_fields(
                    &schema["items"],
                    item,
                    format!("{pointer}/{index}"),
                    format!("{path}[]"),
                ));
            }
        }
        _ => {}
    }
    found
}

/// Property paths a schema declares (`{}` for map values, `[]` for array items).
fn declared_paths(schema: &Value, path: String, out: &mut BTreeSet<String>) {
    for (key, property) in schema["properties"].as_object().into_iter().flatten() {
        let nested = format!("{path}.{key}");
        out.insert(nested.clone());
        declared_paths(property, nested, out);
    }
    if schema["items"].is_object() {
        declared_paths(&schema["items"], format!("{path}[]"), out);
    }
    if schema["additionalProperties"].is_object() {
        declared_paths(&schema["additionalProperties"], format!("{path}{{}}"), out);
    }
}

/// Declared property paths that have a value in `value`.
fn present_paths(schema: &Value, value: &Value, path: String, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            for (key, field) in object {
                if let Some(property) = schema["properties"].get(key) {
                    let nested = format!("{path}.{key}");
                    out.insert(nested.clone());
                    present_paths(property, field, nested, out);
                } else if schema["additionalProperties"].is_object() {
                    present_paths(
                        &schema["additionalProperties"],
                        field,
                        format!("{path}{{}}"),
                        out,
                    );
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| present_paths(&schema["items"], item, format!("{path}[]"), out)),
        _ => {}
    }
}
