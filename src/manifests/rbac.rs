//! Least-privilege RBAC, each rule with the reason it exists.
//!
//! The agent (one per node, so one per possibly-compromised node) gets only what it calls
//! (§8.3 "daemon actually uses", checked against kruised's code):
//!
//! | apiGroup | resource | verbs | why |
//! | --- | --- | --- | --- |
//! | apps.kruise.io | nodeimages | list watch | its own NodeImage (field selector on the name) |
//! | apps.kruise.io | nodeimages/status | update | pull results (§8.4: PUT .../status) |
//! | apps.kruise.io | containerrecreaterequests | get list watch | CRRs labelled with its node |
//! | apps.kruise.io | containerrecreaterequests/status | update patch | CRR progress |
//! | apps.kruise.io | nodepodprobes | list watch | its own NodePodProbe (§5.3) |
//! | apps.kruise.io | nodepodprobes/status | update | probe results (§5.3) |
//! | "" | pods | get list watch | pods on its node; `get` to see where a CRR's pod is bound |
//! | "" | pods/status | patch | container meta (§6.1): the `apps.kruise.io/runtime-containers-meta` annotation, as kruise-daemon writes it; the admission policy limits it to pods bound to the caller's node |
//! | "" | events | create patch | events, and client-go style count bumps of repeats |
//! | "" | secrets (config namespace only, Role) | get | pull secrets the manager copied there |
//!
//! Deliberately absent, compared with kruise-daemon's role: pod `patch`/`update` (the chart
//! adds them; no daemon code path uses them), `pods/status` `update` (container meta needs
//! only `patch`), `nodeimages` patch/update (only the manager writes
//! specs), NodeImage `create`, event `update`, and Secret `list`/`watch` (the agent reads
//! the Secrets a NodeImage names, one `get` each). Writes that RBAC cannot scope to a node
//! are bound to the caller's node by the ValidatingAdmissionPolicy in `admission`.
//!
//! The manager's role is separate (see `crate::manager`'s module doc for its table).

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use serde_json::Value;

use super::{AGENT_NAME, MANAGER_NAME, ManifestError, Mode, Options, meta, to_value};

const KRUISE: &str = "apps.kruise.io";

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

fn named_rule(group: &str, resource: &str, names: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        resource_names: Some(names.iter().map(|n| n.to_string()).collect()),
        ..rule(group, &[resource], verbs)
    }
}

/// The agent's cluster-wide rules.
pub fn agent_cluster_rules() -> Vec<PolicyRule> {
    vec![
        rule(KRUISE, &["nodeimages"], &["list", "watch"]),
        rule(KRUISE, &["nodeimages/status"], &["update"]),
        rule(
            KRUISE,
            &["containerrecreaterequests"],
            &["get", "list", "watch"],
        ),
        rule(
            KRUISE,
            &["containerrecreaterequests/status"],
            &["update", "patch"],
        ),
        rule(KRUISE, &["nodepodprobes"], &["list", "watch"]),
        rule(KRUISE, &["nodepodprobes/status"], &["update"]),
        rule("", &["pods"], &["get", "list", "watch"]),
        // Container meta (§6.1) publishes its annotation through pods/status; the admission
        // policy binds the write to pods on the caller's own node.
        rule("", &["pods/status"], &["patch"]),
        rule("", &["events"], &["create", "patch"]),
    ]
}

/// The agent's rules in the config namespace.
pub fn agent_config_rules() -> Vec<PolicyRule> {
    vec![rule("", &["secrets"], &["get"])]
}

/// The manager's cluster-wide rules (`crate::manager` module doc).
pub fn manager_cluster_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            "admissionregistration.k8s.io",
            &[
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ],
            &["get"],
        ),
        rule("", &["nodes"], &["get", "list", "watch"]),
        rule("", &["pods"], &["get", "list", "watch"]),
        rule("", &["pods/status"], &["get", "update"]),
        rule("", &["secrets"], &["get"]),
        rule("", &["events"], &["create", "patch"]),
        rule(
            KRUISE,
            &["nodeimages"],
            &["get", "list", "watch", "create", "update", "delete"],
        ),
        rule(KRUISE, &["nodeimages/status"], &["update"]),
        rule(
            KRUISE,
            &["imagepulljobs"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        rule(KRUISE, &["imagepulljobs/status"], &["update"]),
        rule(
            KRUISE,
            &["imagelistpulljobs"],
            &["get", "list", "watch", "delete"],
        ),
        rule(KRUISE, &["imagelistpulljobs/status"], &["update"]),
        rule(
            KRUISE,
            &["containerrecreaterequests"],
            &["get", "list", "watch", "update", "patch", "delete"],
        ),
        rule(KRUISE, &["containerrecreaterequests/status"], &["patch"]),
    ]
}

/// Every RBAC object for the mode.
pub fn objects(options: &Options) -> Result<Vec<Value>, ManifestError> {
    let ns = options.namespace.as_str();
    let mut objects = vec![
        cluster_role(AGENT_NAME, "agent", agent_cluster_rules())?,
        cluster_role_binding(AGENT_NAME, "agent", ns)?,
        role(
            &format!("{AGENT_NAME}-secrets"),
            &options.config_namespace,
            "agent",
            agent_config_rules(),
        )?,
        role_binding(
            &format!("{AGENT_NAME}-secrets"),
            &options.config_namespace,
            "agent",
            AGENT_NAME,
            ns,
        )?,
    ];
    if options.mode == Mode::Standalone {
        objects.push(cluster_role(
            MANAGER_NAME,
            "manager",
            manager_cluster_rules(),
        )?);
        objects.push(cluster_role_binding(MANAGER_NAME, "manager", ns)?);
        // Leader election in its own namespace.
        objects.push(role(
            &format!("{MANAGER_NAME}-leader-election"),
            ns,
            "manager",
            vec![rule(
                "coordination.k8s.io",
                &["leases"],
                &["get", "create", "update"],
            )],
        )?);
        objects.push(role_binding(
            &format!("{MANAGER_NAME}-leader-election"),
            ns,
            "manager",
            MANAGER_NAME,
            ns,
        )?);
        // Detection of a running kruise-manager: two named objects, read-only.
        objects.push(role(
            &format!("{MANAGER_NAME}-detect-kruise"),
            &options.kruise_namespace,
            "manager",
            vec![
                named_rule(
                    "coordination.k8s.io",
                    "leases",
                    &["kruise-manager"],
                    &["get"],
                ),
                named_rule(
                    "apps",
                    "deployments",
                    &["kruise-controller-manager"],
                    &["get"],
                ),
            ],
        )?);
        objects.push(role_binding(
            &format!("{MANAGER_NAME}-detect-kruise"),
            &options.kruise_namespace,
            "manager",
            MANAGER_NAME,
            ns,
        )?);
        // Copies of job pull secrets for the agents.
        objects.push(role(
            &format!("{MANAGER_NAME}-secrets"),
            &options.config_namespace,
            "manager",
            vec![rule(
                "",
                &["secrets"],
                &["get", "list", "watch", "create", "update", "delete"],
            )],
        )?);
        objects.push(role_binding(
            &format!("{MANAGER_NAME}-secrets"),
            &options.config_namespace,
            "manager",
            MANAGER_NAME,
            ns,
        )?);
    }
    Ok(objects)
}

fn cluster_role(
    name: &str,
    component: &str,
    rules: Vec<PolicyRule>,
) -> Result<Value, ManifestError> {
    to_value(
        "ClusterRole",
        &ClusterRole {
            metadata: meta(name, None, Some(component)),
            rules: Some(rules),
            ..Default::default()
        },
    )
}

fn subject(service_account: &str, namespace: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: service_account.into(),
        namespace: Some(namespace.into()),
        ..Default::default()
    }
}

fn cluster_role_binding(
    name: &str,
    component: &str,
    namespace: &str,
) -> Result<Value, ManifestError> {
    to_value(
        "ClusterRoleBinding",
        &ClusterRoleBinding {
            metadata: meta(name, None, Some(component)),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: name.into(),
            },
            subjects: Some(vec![subject(name, namespace)]),
        },
    )
}

fn role(
    name: &str,
    namespace: &str,
    component: &str,
    rules: Vec<PolicyRule>,
) -> Result<Value, ManifestError> {
    to_value(
        "Role",
        &Role {
            metadata: meta(name, Some(namespace), Some(component)),
            rules: Some(rules),
        },
    )
}

fn role_binding(
    name: &str,
    namespace: &str,
    component: &str,
    service_account: &str,
    sa_namespace: &str,
) -> Result<Value, ManifestError> {
    to_value(
        "RoleBinding",
        &RoleBinding {
            metadata: meta(name, Some(namespace), Some(component)),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: name.into(),
            },
            subjects: Some(vec![subject(service_account, sa_namespace)]),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
        rules.iter().any(|r| {
            r.api_groups
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|g| g == group)
                && r.resources
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    }

    #[test]
    fn agent_cannot_write_pods_read_secrets_cluster_wide_or_create_nodeimages() {
        let rules = agent_cluster_rules();
        for verb in ["patch", "update", "create", "delete"] {
            assert!(!grants(&rules, "", "pods", verb), "pods {verb}");
        }
        // Only the container-meta annotation patch, bound to the node by admission.
        for verb in ["update", "create", "delete"] {
            assert!(
                !grants(&rules, "", "pods/status", verb),
                "pods/status {verb}"
            );
        }
        assert!(grants(&rules, "", "pods/status", "patch"));
        for verb in ["get", "list", "watch"] {
            assert!(!grants(&rules, "", "secrets", verb), "secrets {verb}");
        }
        for verb in ["create", "update", "patch", "delete"] {
            assert!(
                !grants(&rules, KRUISE, "nodeimages", verb),
                "nodeimages {verb}"
            );
        }
        assert!(rules.iter().all(|r| !r.verbs.iter().any(|v| v == "*")));
        assert!(grants(&agent_config_rules(), "", "secrets", "get"));
        assert!(!grants(&agent_config_rules(), "", "secrets", "list"));
    }

    #[test]
    fn with_openkruise_renders_no_manager_rbac() {
        let objects = objects(&Options {
            mode: Mode::WithOpenkruise,
            ..Options::default()
        })
        .unwrap();
        assert_eq!(objects.len(), 4);
        assert!(objects.iter().all(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(AGENT_NAME)
        }));
    }
}
