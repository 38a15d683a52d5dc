//! Namespaces, ServiceAccounts, Services and the agent's PriorityClass.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::options::DEFAULT_PRIORITY_CLASS;
use super::{
    AGENT_NAME, AGENT_PORT, MANAGER_NAME, MANAGER_PORT, ManifestError, Mode, Options, meta,
    selector, to_value,
};

/// The PriorityClass value: high enough that the agent is scheduled ahead of workloads
/// (it must run on every node), far below `system-node-critical` (2000001000), which
/// kube-system components keep.
pub const PRIORITY_VALUE: i32 = 100_000_000;

/// Namespaces, ServiceAccounts, Services and (default name only) the PriorityClass.
pub fn objects(options: &Options) -> Result<Vec<Value>, ManifestError> {
    let mut namespaces = vec![options.namespace.clone()];
    // The agents read pull secrets only from here; the manager copies job secrets here.
    namespaces.push(options.config_namespace.clone());
    if options.mode == Mode::Standalone {
        // The manager's detection Role lives there (a Role needs its namespace).
        namespaces.push(options.kruise_namespace.clone());
    }
    if options.mode == Mode::WithOpenkruise {
        // OpenKruise's install owns these; rendering them would make `kubectl delete -f`
        // of kruised's manifests delete OpenKruise's namespaces.
        namespaces.retain(|n| *n != options.kruise_namespace && *n != options.config_namespace);
    }
    let mut seen = Vec::new();
    let mut objects = Vec::new();
    for name in namespaces {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name.clone());
        objects.push(to_value(
            "Namespace",
            &Namespace {
                metadata: meta(&name, None, None),
                ..Default::default()
            },
        )?);
    }
    objects.push(service_account(AGENT_NAME, "agent", options)?);
    if options.mode == Mode::Standalone {
        objects.push(service_account(MANAGER_NAME, "manager", options)?);
    }
    objects.push(service(AGENT_NAME, "agent", AGENT_PORT, options)?);
    if options.mode == Mode::Standalone {
        objects.push(service(MANAGER_NAME, "manager", MANAGER_PORT, options)?);
    }
    if options.priority_class == DEFAULT_PRIORITY_CLASS {
        objects.push(to_value(
            "PriorityClass",
            &PriorityClass {
                metadata: meta(DEFAULT_PRIORITY_CLASS, None, Some("agent")),
                value: PRIORITY_VALUE,
                global_default: Some(false),
                preemption_policy: Some("PreemptLowerPriority".into()),
                description: Some(
                    "kruised's node agent: runs on every node, ahead of workloads".into(),
                ),
            },
        )?);
    }
    Ok(objects)
}

fn service_account(name: &str, component: &str, options: &Options) -> Result<Value, ManifestError> {
    to_value(
        "ServiceAccount",
        &ServiceAccount {
            metadata: meta(name, Some(&options.namespace), Some(component)),
            ..Default::default()
        },
    )
}

/// A headless Service over the component's metrics port, for Prometheus discovery.
fn service(
    name: &str,
    component: &str,
    port: i32,
    options: &Options,
) -> Result<Value, ManifestError> {
    to_value(
        "Service",
        &Service {
            metadata: meta(name, Some(&options.namespace), Some(component)),
            spec: Some(ServiceSpec {
                // Headless: scrapers address each pod; nothing load-balances metrics.
                cluster_ip: Some("None".into()),
                selector: Some(BTreeMap::from_iter(selector(component))),
                ports: Some(vec![ServicePort {
                    name: Some("http-metrics".into()),
                    port,
                    target_port: Some(IntOrString::String("http-metrics".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}
