//! The agent's DaemonSet.
//!
//! Compared with kruise-daemon's (§8.1, §8.2):
//! - **No hostNetwork** (kruise: `true`). The agent only dials out (API server, and the
//!   runtime over a unix socket) and serves `/metrics` and probes, which work on the pod
//!   IP. Host networking would expose port 10221 on every node address and share the
//!   node's network namespace for nothing. `--host-network` exists for clusters whose
//!   agent must pull before the CNI is up.
//! - **Runtime socket** from hostPath `--socket-location` (default `/var/run`) mounted
//!   read-only at `/hostvarrun`, as kruise does; read-only still allows `connect(2)`.
//! - **User**: the socket is usually `root:root 0660`. Without `--socket-group` the agent
//!   runs as uid 0 with **every capability dropped**: it reaches the socket as its owner
//!   and has no privilege beyond that (no DAC override, no setuid, no raw sockets). With
//!   `--socket-group GID` (containerd `[grpc] gid = GID`, CRI-O `listen_gid`... or a
//!   `chgrp` by the node's provisioning) it runs as uid/gid 65532 (`runAsNonRoot`) with
//!   GID as a supplementary group.
//! - All capabilities dropped (kruise keeps `NET_BIND_SERVICE`; 10221 needs none),
//!   read-only root filesystem, `seccompProfile: RuntimeDefault`, no privilege escalation.
//! - Probes: liveness `/livez` (the process serves HTTP), readiness `/readyz` (runtime
//!   connected and informers synced), instead of one `/healthz` for both.
//! - Resources from measurements (see [`super::ResourceSizes::agent_default`]).
//! - Tolerates every taint, has its own PriorityClass, rolls 10% of nodes at a time.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::{
    AGENT_NAME, AGENT_PORT, HOST_VAR_RUN, ManifestError, Options, ResourceSizes, labels, meta,
    selector, to_value,
};

/// The unprivileged uid/gid used when the socket's group allows it (distroless "nonroot").
pub const NON_ROOT_ID: i64 = 65532;

/// `requests`/`limits` from sizes; an empty CPU limit is left out.
pub(crate) fn resources(sizes: &ResourceSizes) -> ResourceRequirements {
    let mut limits = BTreeMap::new();
    if !sizes.cpu_limit.is_empty() {
        limits.insert("cpu".to_string(), Quantity(sizes.cpu_limit.clone()));
    }
    limits.insert("memory".to_string(), Quantity(sizes.memory_limit.clone()));
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(sizes.cpu_request.clone())),
            ("memory".to_string(), Quantity(sizes.memory_request.clone())),
        ])),
        limits: Some(limits),
        ..Default::default()
    }
}

/// The locked-down container security context both components share.
pub(crate) fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// An HTTP GET probe on the named metrics port.
pub(crate) fn http_probe(path: &str, initial_delay: i32, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http-metrics".into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// `NAME` from a downward-API field.
pub(crate) fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The agent's DaemonSet.
pub fn daemon_set(options: &Options) -> Result<Value, ManifestError> {
    let mut args = vec![
        format!("--addr=:{AGENT_PORT}"),
        format!("--host-var-run={HOST_VAR_RUN}"),
        "--log-format=json".to_string(),
    ];
    if !options.socket_file.is_empty() {
        args.push(format!("--socket-file={}", options.socket_file));
    }
    let pod_security = match options.socket_group {
        Some(group) => PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NON_ROOT_ID),
            run_as_group: Some(NON_ROOT_ID),
            supplemental_groups: Some(vec![group]),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        },
        // uid 0 without capabilities: owner access to a root:root 0660 socket, no more.
        None => PodSecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        },
    };
    let container = Container {
        name: "agent".into(),
        image: Some(options.image.clone()),
        image_pull_policy: Some(options.image_pull_policy.clone()),
        args: Some(args),
        env: Some(vec![
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http-metrics".into()),
            container_port: AGENT_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        liveness_probe: Some(http_probe("/livez", 10, 10)),
        readiness_probe: Some(http_probe("/readyz", 2, 5)),
        resources: Some(resources(&options.agent_resources)),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "runtime-socket".into(),
                mount_path: HOST_VAR_RUN.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let spec = PodSpec {
        service_account_name: Some(AGENT_NAME.into()),
        // The projected token carries the node-name claim the admission policy checks.
        automount_service_account_token: Some(true),
        host_network: Some(options.host_network),
        dns_policy: Some(
            if options.host_network {
                "ClusterFirstWithHostNet"
            } else {
                "ClusterFirst"
            }
            .into(),
        ),
        priority_class_name: Some(options.priority_class.clone()),
        tolerations: Some(options.tolerations.clone()),
        termination_grace_period_seconds: Some(10),
        security_context: Some(pod_security),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "runtime-socket".into(),
                host_path: Some(HostPathVolumeSource {
                    path: options.socket_location.clone(),
                    type_: Some("Directory".into()),
                }),
                ..Default::default()
            },
            Volume {
                // Credential provider plugins may write temp files; the root fs is read-only.
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: None,
                    size_limit: Some(Quantity("16Mi".into())),
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    to_value(
        "DaemonSet",
        &DaemonSet {
            metadata: meta(AGENT_NAME, Some(&options.namespace), Some("agent")),
            spec: Some(DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: Some(selector("agent")),
                    ..Default::default()
                },
                min_ready_seconds: Some(3),
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDaemonSet {
                        max_unavailable: Some(IntOrString::String("10%".into())),
                        max_surge: Some(IntOrString::Int(0)),
                    }),
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(Some("agent"))),
                        ..Default::default()
                    }),
                    spec: Some(spec),
                },
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(options: &Options) -> Value {
        daemon_set(options).unwrap()["spec"]["template"]["spec"].clone()
    }

    #[test]
    fn socket_group_switches_to_non_root_with_the_supplementary_group() {
        let root = pod(&Options::default());
        assert_eq!(root["securityContext"]["runAsUser"], 0);
        let non_root = pod(&Options {
            socket_group: Some(1001),
            ..Options::default()
        });
        assert_eq!(non_root["securityContext"]["runAsNonRoot"], true);
        assert_eq!(non_root["securityContext"]["runAsUser"], NON_ROOT_ID);
        assert_eq!(
            non_root["securityContext"]["supplementalGroups"],
            serde_json::json!([1001])
        );
    }

    #[test]
    fn container_is_locked_down_and_mounts_the_socket_read_only() {
        let spec = pod(&Options::default());
        let container = &spec["containers"][0];
        let security = &container["securityContext"];
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(security["capabilities"].get("add").is_none());
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(spec["hostNetwork"], false);
        let mount = &container["volumeMounts"][0];
        assert_eq!(mount["mountPath"], HOST_VAR_RUN);
        assert_eq!(mount["readOnly"], true);
        assert_eq!(spec["volumes"][0]["hostPath"]["path"], "/var/run");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(
            spec["tolerations"],
            serde_json::json!([{"operator": "Exists"}])
        );
    }

    #[test]
    fn rolls_ten_percent_of_nodes_at_a_time() {
        let ds = daemon_set(&Options::default()).unwrap();
        assert_eq!(
            ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            "10%"
        );
    }
}
