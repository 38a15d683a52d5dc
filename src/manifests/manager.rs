//! The `kruised manager` Deployment (standalone mode only): leader-elected replicas,
//! non-root, read-only root filesystem, every capability dropped.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::Value;

use super::agent::{NON_ROOT_ID, container_security, field_env, http_probe, resources};
use super::{MANAGER_NAME, MANAGER_PORT, ManifestError, Options, labels, meta, selector, to_value};

/// The manager's Deployment.
pub fn deployment(options: &Options) -> Result<Value, ManifestError> {
    let container = Container {
        name: "manager".into(),
        image: Some(options.image.clone()),
        image_pull_policy: Some(options.image_pull_policy.clone()),
        args: Some(vec![
            "manager".into(),
            format!("--addr=:{MANAGER_PORT}"),
            "--log-format=json".into(),
            format!("--kruise-namespace={}", options.kruise_namespace),
        ]),
        env: Some(vec![
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("POD_NAME", "metadata.name"),
            EnvVar {
                name: "KRUISE_DAEMON_CONFIG_NS".into(),
                value: Some(options.config_namespace.clone()),
                ..Default::default()
            },
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http-metrics".into()),
            container_port: MANAGER_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        liveness_probe: Some(http_probe("/livez", 10, 10)),
        // Standbys are ready too: readiness says "serving", not "leading".
        readiness_probe: Some(http_probe("/readyz", 2, 5)),
        resources: Some(resources(&options.manager_resources)),
        security_context: Some(container_security()),
        ..Default::default()
    };
    to_value(
        "Deployment",
        &Deployment {
            metadata: meta(MANAGER_NAME, Some(&options.namespace), Some("manager")),
            spec: Some(DeploymentSpec {
                replicas: Some(options.manager_replicas),
                selector: LabelSelector {
                    match_labels: Some(selector("manager")),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(Some("manager"))),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(MANAGER_NAME.into()),
                        termination_grace_period_seconds: Some(30),
                        security_context: Some(PodSecurityContext {
                            run_as_non_root: Some(true),
                            run_as_user: Some(NON_ROOT_ID),
                            run_as_group: Some(NON_ROOT_ID),
                            seccomp_profile: Some(SeccompProfile {
                                type_: "RuntimeDefault".into(),
                                localhost_profile: None,
                            }),
                            ..Default::default()
                        }),
                        containers: vec![container],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}
