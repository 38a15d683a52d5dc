//! The ValidatingAdmissionPolicy that binds each agent's writes to its own node.
//!
//! RBAC cannot say "only the NodeImage named after your node": every agent shares one
//! ClusterRole. Kubernetes (1.30+, `ServiceAccountTokenPodNodeInfo`) puts the pod's node
//! into its service-account token; the API server exposes it to admission as
//! `request.userInfo.extra["authentication.kubernetes.io/node-name"]`. The policy matches
//! only requests by the agent's service account and allows:
//!
//! - `nodeimages/status`, `nodepodprobes/status`: only the object named after the node;
//! - `containerrecreaterequests/status`: only CRRs labelled
//!   `crr.apps.kruise.io/node-name=<node>`, before and after the write;
//! - `pods/status` (container meta's annotation patch): only pods whose `spec.nodeName` is
//!   the node, before and after the write;
//! - `events`: only with `source.host` = the node and, for NodeImage/NodePodProbe, only
//!   about the node's own object; other kinds are limited to what the agent reports on
//!   (Pod, ContainerRecreateRequest, ImagePullJob, ImageListPullJob). CEL cannot read
//!   another object, so an event about a CRR is bound by `source.host`, not by the CRR's
//!   label.
//!
//! A token without the claim (older clusters, a token minted outside a pod) is denied:
//! the policy fails closed.

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
use serde_json::Value;

use super::{AGENT_NAME, ManifestError, Options, meta, to_value};
use crate::api::CRR_NODE_NAME_LABEL;

/// Name of the policy and of its binding.
pub const POLICY_NAME: &str = "kruised-agent-node-binding";

/// The user-info extra key carrying the node name.
pub const NODE_CLAIM: &str = "authentication.kubernetes.io/node-name";

/// The policy's match condition: requests by the agent's service account only.
pub fn match_condition(options: &Options) -> MatchCondition {
    MatchCondition {
        name: "is-kruised-agent".into(),
        expression: format!(
            "request.userInfo.username == 'system:serviceaccount:{}:{AGENT_NAME}'",
            options.namespace
        ),
    }
}

/// The policy's variables, in evaluation order (`nodeName` uses `nodeClaim`).
pub fn variables() -> Vec<Variable> {
    vec![
        Variable {
            name: "nodeClaim".into(),
            expression: format!(
                "has(request.userInfo.extra) && '{NODE_CLAIM}' in request.userInfo.extra \
                 ? request.userInfo.extra['{NODE_CLAIM}'] : []"
            ),
        },
        Variable {
            name: "nodeName".into(),
            expression: "size(variables.nodeClaim) == 1 ? variables.nodeClaim[0] : ''".into(),
        },
    ]
}

/// Whether `obj`'s CRR node label names the caller's node.
fn crr_on_node(obj: &str) -> String {
    format!(
        "(has({obj}.metadata.labels) && '{CRR_NODE_NAME_LABEL}' in {obj}.metadata.labels \
         && {obj}.metadata.labels['{CRR_NODE_NAME_LABEL}'] == variables.nodeName)"
    )
}

/// Whether event `obj` is the caller node's.
fn event_on_node(obj: &str) -> String {
    format!(
        "(has({obj}.source) && has({obj}.source.host) && {obj}.source.host == variables.nodeName \
         && has({obj}.involvedObject.kind) && has({obj}.involvedObject.name) \
         && ({obj}.involvedObject.kind in ['NodeImage', 'NodePodProbe'] \
         ? {obj}.involvedObject.name == variables.nodeName \
         : {obj}.involvedObject.kind in ['Pod', 'ContainerRecreateRequest', 'ImagePullJob', 'ImageListPullJob']))"
    )
}

/// The validations, each with its denial message.
pub fn validations() -> Vec<Validation> {
    let validation = |expression: String, message: &str| Validation {
        expression,
        message: Some(message.into()),
        reason: Some("Forbidden".into()),
        ..Default::default()
    };
    vec![
        validation(
            "variables.nodeName != ''".into(),
            "kruised agent: the service-account token carries no node claim \
             (authentication.kubernetes.io/node-name); writes are refused",
        ),
        validation(
            "!(request.resource.resource in ['nodeimages', 'nodepodprobes']) \
             || request.name == variables.nodeName"
                .into(),
            "kruised agent: may write only the NodeImage/NodePodProbe named after its own node",
        ),
        validation(
            format!(
                "request.resource.resource != 'containerrecreaterequests' || ({} \
                 && (request.operation != 'UPDATE' || {}))",
                crr_on_node("object"),
                crr_on_node("oldObject")
            ),
            "kruised agent: may write only ContainerRecreateRequests labelled with its own node",
        ),
        validation(
            "request.resource.resource != 'pods' || (has(object.spec) && has(object.spec.nodeName) \
             && object.spec.nodeName == variables.nodeName && has(oldObject.spec) \
             && has(oldObject.spec.nodeName) && oldObject.spec.nodeName == variables.nodeName)"
                .into(),
            "kruised agent: may write the status of only the pods bound to its own node",
        ),
        validation(
            format!(
                "request.resource.resource != 'events' || ({} \
                 && (request.operation != 'UPDATE' || {}))",
                event_on_node("object"),
                event_on_node("oldObject")
            ),
            "kruised agent: may record events only from its own node about its own objects",
        ),
    ]
}

fn rules() -> Vec<NamedRuleWithOperations> {
    let rule = |group: &str, resources: &[&str], operations: &[&str]| NamedRuleWithOperations {
        api_groups: Some(vec![group.into()]),
        api_versions: Some(vec!["*".into()]),
        operations: Some(operations.iter().map(|o| o.to_string()).collect()),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        ..Default::default()
    };
    vec![
        rule(
            "apps.kruise.io",
            &[
                "nodeimages/status",
                "nodepodprobes/status",
                "containerrecreaterequests/status",
            ],
            &["UPDATE"],
        ),
        rule("", &["pods/status"], &["UPDATE"]),
        rule("", &["events"], &["CREATE", "UPDATE"]),
    ]
}

/// The policy and its binding.
pub fn objects(options: &Options) -> Result<Vec<Value>, ManifestError> {
    let policy = ValidatingAdmissionPolicy {
        metadata: meta(POLICY_NAME, None, Some("agent")),
        spec: Some(ValidatingAdmissionPolicySpec {
            // Fail closed: an evaluation error must not let a node write elsewhere.
            failure_policy: Some("Fail".into()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(rules()),
                match_policy: Some("Equivalent".into()),
                ..Default::default()
            }),
            match_conditions: Some(vec![match_condition(options)]),
            variables: Some(variables()),
            validations: Some(validations()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let binding = ValidatingAdmissionPolicyBinding {
        metadata: meta(POLICY_NAME, None, Some("agent")),
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(POLICY_NAME.into()),
            validation_actions: Some(vec!["Deny".into()]),
            ..Default::default()
        }),
    };
    Ok(vec![
        to_value("ValidatingAdmissionPolicy", &policy)?,
        to_value("ValidatingAdmissionPolicyBinding", &binding)?,
    ])
}
