//! The node-binding ValidatingAdmissionPolicy, as rendered, evaluated with a CEL
//! interpreter against the admission requests an agent makes: its own node's objects are
//! allowed; another node's, or any write from a token without a node claim, are denied.
//!
//! Evaluation follows kube-apiserver's order: the match conditions decide whether the
//! policy applies, then the variables are computed in order (each may use the previous
//! ones as `variables.NAME`), then every validation must be true.

use cel_interpreter::{Context, Program, Value as CelValue};
use kruised::manifests::{self, Options};
use serde_json::{Value, json};

const AGENT: &str = "system:serviceaccount:kruise-system:kruised-agent";
const CLAIM: &str = "authentication.kubernetes.io/node-name";
const CRR_LABEL: &str = "crr.apps.kruise.io/node-name";

/// The rendered policy's spec (from the same output as deploy/).
fn policy() -> Value {
    manifests::render(&Options::default())
        .unwrap()
        .into_iter()
        .find(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .expect("the policy is rendered")["spec"]
        .clone()
}

#[derive(Debug, PartialEq)]
enum Verdict {
    /// The policy does not match the request (not the agent).
    NotApplicable,
    Allowed,
    /// Denied with the failed validation's message.
    Denied(String),
}

fn eval(expression: &str, context: &Context) -> CelValue {
    let program = Program::compile(expression).unwrap_or_else(|e| panic!("{expression}: {e:?}"));
    program
        .execute(context)
        .unwrap_or_else(|e| panic!("{expression}: {e:?}"))
}

fn admit(request: Value, object: Value, old_object: Value) -> Verdict {
    let spec = policy();
    let mut context = Context::default();
    context.add_variable("request", &request).unwrap();
    context.add_variable("object", &object).unwrap();
    context.add_variable("oldObject", &old_object).unwrap();
    for condition in spec["matchConditions"].as_array().unwrap() {
        let expression = condition["expression"].as_str().unwrap();
        if eval(expression, &context) != CelValue::Bool(true) {
            return Verdict::NotApplicable;
        }
    }
    let mut variables = serde_json::Map::new();
    for variable in spec["variables"].as_array().unwrap() {
        context
            .add_variable("variables", &Value::Object(variables.clone()))
            .unwrap();
        let value = eval(variable["expression"].as_str().unwrap(), &context);
        let value = match value {
            CelValue::String(s) => json!(s.as_str()),
            CelValue::List(items) => Value::Array(
                items
                    .iter()
                    .map(|item| match item {
                        CelValue::String(s) => json!(s.as_str()),
                        other => panic!("unexpected list item {other:?}"),
                    })
                    .collect(),
            ),
            other => panic!("unexpected variable value {other:?}"),
        };
        variables.insert(variable["name"].as_str().unwrap().to_string(), value);
    }
    context
        .add_variable("variables", &Value::Object(variables))
        .unwrap();
    for validation in spec["validations"].as_array().unwrap() {
        let expression = validation["expression"].as_str().unwrap();
        match eval(expression, &context) {
            CelValue::Bool(true) => {}
            CelValue::Bool(false) => {
                return Verdict::Denied(validation["message"].as_str().unwrap().to_string());
            }
            other => panic!("{expression} returned {other:?}"),
        }
    }
    Verdict::Allowed
}

/// An agent on `node` (None: a token without the claim).
fn user(node: Option<&str>) -> Value {
    match node {
        Some(node) => json!({"username": AGENT, "extra": {CLAIM: [node]}}),
        None => json!({"username": AGENT, "extra": {}}),
    }
}

fn status_update(node: Option<&str>, resource: &str, name: &str, namespace: &str) -> Value {
    json!({
        "operation": "UPDATE",
        "userInfo": user(node),
        "resource": {"group": "apps.kruise.io", "version": "v1beta1", "resource": resource},
        "subResource": "status",
        "name": name,
        "namespace": namespace,
    })
}

fn crr(label: Option<&str>) -> Value {
    let labels = match label {
        Some(node) => json!({CRR_LABEL: node, "app": "web"}),
        None => json!({"app": "web"}),
    };
    json!({"metadata": {"name": "crr-1", "namespace": "default", "labels": labels}})
}

fn event_create(node: Option<&str>, event: Value) -> Value {
    json!({
        "operation": "CREATE",
        "userInfo": user(node),
        "resource": {"group": "", "version": "v1", "resource": "events"},
        "subResource": "",
        "name": event["metadata"]["name"],
        "namespace": "default",
    })
}

fn event(host: &str, kind: &str, name: &str) -> Value {
    json!({
        "metadata": {"name": "e1", "namespace": "default"},
        "involvedObject": {"kind": kind, "name": name, "namespace": "default"},
        "source": {"component": "kruised", "host": host},
        "reason": "PullImageSucceed",
    })
}

fn denied(verdict: Verdict, containing: &str) {
    match verdict {
        Verdict::Denied(message) => assert!(message.contains(containing), "{message}"),
        other => panic!("expected a denial containing {containing:?}, got {other:?}"),
    }
}

#[test]
fn nodeimage_status_only_for_the_callers_own_node() {
    let ni = json!({"metadata": {"name": "node-a"}});
    assert_eq!(
        admit(
            status_update(Some("node-a"), "nodeimages", "node-a", ""),
            ni.clone(),
            ni.clone()
        ),
        Verdict::Allowed
    );
    denied(
        admit(
            status_update(Some("node-b"), "nodeimages", "node-a", ""),
            ni.clone(),
            ni.clone(),
        ),
        "named after its own node",
    );
    denied(
        admit(
            status_update(None, "nodeimages", "node-a", ""),
            ni.clone(),
            ni,
        ),
        "no node claim",
    );
}

#[test]
fn nodepodprobe_status_only_for_the_callers_own_node() {
    let npp = json!({"metadata": {"name": "node-a"}});
    assert_eq!(
        admit(
            status_update(Some("node-a"), "nodepodprobes", "node-a", ""),
            npp.clone(),
            npp.clone()
        ),
        Verdict::Allowed
    );
    denied(
        admit(
            status_update(Some("node-b"), "nodepodprobes", "node-a", ""),
            npp.clone(),
            npp,
        ),
        "named after its own node",
    );
}

#[test]
fn crr_status_only_for_crrs_labelled_with_the_callers_node() {
    let request = |node| status_update(node, "containerrecreaterequests", "crr-1", "default");
    assert_eq!(
        admit(
            request(Some("node-a")),
            crr(Some("node-a")),
            crr(Some("node-a"))
        ),
        Verdict::Allowed
    );
    denied(
        admit(
            request(Some("node-b")),
            crr(Some("node-a")),
            crr(Some("node-a")),
        ),
        "labelled with its own node",
    );
    denied(
        admit(request(Some("node-a")), crr(None), crr(None)),
        "labelled with its own node",
    );
    // Relabelling another node's CRR to one's own node in the same write is refused too.
    denied(
        admit(
            request(Some("node-a")),
            crr(Some("node-a")),
            crr(Some("node-b")),
        ),
        "labelled with its own node",
    );
    denied(
        admit(request(None), crr(Some("node-a")), crr(Some("node-a"))),
        "no node claim",
    );
}

#[test]
fn pod_status_only_for_pods_bound_to_the_callers_node() {
    let pod = |node: &str| json!({"metadata": {"name": "web-0", "namespace": "default"}, "spec": {"nodeName": node}});
    let request = |node| {
        let mut request = status_update(node, "pods", "web-0", "default");
        request["resource"] = json!({"group": "", "version": "v1", "resource": "pods"});
        request
    };
    assert_eq!(
        admit(request(Some("node-a")), pod("node-a"), pod("node-a")),
        Verdict::Allowed
    );
    denied(
        admit(request(Some("node-b")), pod("node-a"), pod("node-a")),
        "pods bound to its own node",
    );
    denied(
        admit(
            request(Some("node-a")),
            json!({"metadata": {"name": "web-0"}, "spec": {}}),
            json!({"metadata": {"name": "web-0"}, "spec": {}}),
        ),
        "pods bound to its own node",
    );
    denied(
        admit(request(None), pod("node-a"), pod("node-a")),
        "no node claim",
    );
}

#[test]
fn events_only_from_the_callers_node_about_its_own_objects() {
    let allowed = [
        event("node-a", "NodeImage", "node-a"),
        event("node-a", "Pod", "web-0"),
        event("node-a", "ContainerRecreateRequest", "crr-1"),
        event("node-a", "ImagePullJob", "job-1"),
    ];
    for e in allowed {
        assert_eq!(
            admit(
                event_create(Some("node-a"), e.clone()),
                e.clone(),
                Value::Null
            ),
            Verdict::Allowed,
            "{e}"
        );
    }
    let refused = [
        // Another node's NodeImage.
        event("node-a", "NodeImage", "node-b"),
        // Posing as another node.
        event("node-b", "Pod", "web-0"),
        // Kinds the agent never reports on.
        event("node-a", "Secret", "regcred"),
        event("node-a", "Node", "node-a"),
    ];
    for e in refused {
        denied(
            admit(event_create(Some("node-a"), e.clone()), e, Value::Null),
            "events only from its own node",
        );
    }
    let own = event("node-a", "NodeImage", "node-a");
    denied(
        admit(event_create(None, own.clone()), own, Value::Null),
        "no node claim",
    );
}

#[test]
fn a_claim_with_several_node_names_is_refused() {
    let mut request = status_update(Some("node-a"), "nodeimages", "node-a", "");
    request["userInfo"]["extra"][CLAIM] = json!(["node-a", "node-b"]);
    let ni = json!({"metadata": {"name": "node-a"}});
    denied(admit(request, ni.clone(), ni), "no node claim");
}

#[test]
fn other_identities_are_not_matched_by_the_policy() {
    let mut request = status_update(None, "nodeimages", "node-a", "");
    request["userInfo"]["username"] = json!("system:serviceaccount:kruise-system:kruised-manager");
    let ni = json!({"metadata": {"name": "node-a"}});
    assert_eq!(admit(request, ni.clone(), ni), Verdict::NotApplicable);
}
