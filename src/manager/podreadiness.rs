//! kruise's `KruisePodReady` readiness gate (`pkg/util/podreadiness`): components that
//! need a pod out of Service endpoints add a `{userAgent, key}` entry to the JSON list in
//! the condition's message and set it `False`; the condition turns `True` again when the
//! list is empty.

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};

/// The readiness gate condition type.
pub const KRUISE_POD_READY: &str = "KruisePodReady";
/// The user agent of CRR entries.
pub const CRR_USER_AGENT: &str = "ContainerRecreateRequest";

/// One holder of the pod's not-ready state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Who (e.g. `ContainerRecreateRequest`).
    pub user_agent: String,
    /// Which (e.g. `namespace/crr`).
    pub key: String,
}

/// Whether the pod declares the `KruisePodReady` readiness gate.
pub fn has_gate(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|gates| gates.iter().any(|g| g.condition_type == KRUISE_POD_READY))
}

fn messages(condition: &PodCondition) -> Vec<Message> {
    condition
        .message
        .as_deref()
        .filter(|m| !m.is_empty())
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default()
}

fn dump(mut list: Vec<Message>) -> String {
    list.sort();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

/// Adds (`add`) or removes `message` in the pod's conditions; `true` when they changed.
pub fn edit_conditions(pod: &mut Pod, message: &Message, add: bool, now: Timestamp) -> bool {
    let status = pod.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let index = conditions.iter().position(|c| c.type_ == KRUISE_POD_READY);
    let changed = match (index, add) {
        (None, false) => false,
        (None, true) => {
            conditions.push(PodCondition {
                type_: KRUISE_POD_READY.into(),
                status: "False".into(),
                message: Some(dump(vec![message.clone()])),
                last_transition_time: Some(Time(now)),
                ..Default::default()
            });
            true
        }
        (Some(i), add) => {
            let condition = &mut conditions[i];
            let mut list = messages(condition);
            let present = list.contains(message);
            if add == present {
                // Already there (and False), or already gone.
                add && condition.status != "False" && {
                    condition.status = "False".into();
                    condition.last_transition_time = Some(Time(now));
                    true
                }
            } else {
                if add {
                    list.push(message.clone());
                    condition.status = "False".into();
                } else {
                    list.retain(|m| m != message);
                    if list.is_empty() {
                        condition.status = "True".into();
                    }
                }
                condition.message = Some(dump(list));
                condition.last_transition_time = Some(Time(now));
                true
            }
        }
    };
    if changed && add {
        // Out of endpoints now, not at the kubelet's next status sync.
        if let Some(ready) = conditions.iter_mut().find(|c| c.type_ == "Ready")
            && ready.status == "True"
        {
            ready.status = "False".into();
            ready.reason = Some("ReadinessGatesNotReady".into());
            ready.last_transition_time = Some(Time(now));
        }
    }
    changed
}

/// Reads the pod, edits its readiness gate condition and writes `pods/status`, retrying
/// conflicts from a fresh read. Pods without the gate are left alone (`Ok(false)`).
pub async fn set_not_ready(
    pods: &Api<Pod>,
    name: &str,
    message: &Message,
    add: bool,
) -> Result<bool, kube::Error> {
    for _ in 0..5 {
        let mut pod = match pods.get(name).await {
            Ok(pod) => pod,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
            Err(error) => return Err(error),
        };
        if !has_gate(&pod) || pod.metadata.deletion_timestamp.is_some() && add {
            return Ok(false);
        }
        if !edit_conditions(&mut pod, message, add, Timestamp::now()) {
            return Ok(true);
        }
        pod.metadata.managed_fields = None;
        match pods
            .replace_status(name, &PostParams::default(), &pod)
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error),
        }
    }
    Err(kube::Error::Api(
        kube::core::Status::failure(&format!("pod {name} status kept conflicting"), "Conflict")
            .with_code(409)
            .boxed(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "readinessGates": [{"conditionType": "KruisePodReady"}]},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    fn message(key: &str) -> Message {
        Message {
            user_agent: CRR_USER_AGENT.into(),
            key: key.into(),
        }
    }

    fn condition<'a>(pod: &'a Pod, kind: &str) -> &'a PodCondition {
        pod.status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
    }

    #[test]
    fn adding_a_key_makes_the_pod_not_ready_and_removing_the_last_makes_it_ready() {
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut pod = pod(json!([{"type": "Ready", "status": "True"}]));
        assert!(has_gate(&pod));
        assert!(edit_conditions(&mut pod, &message("ns/b"), true, now));
        assert!(edit_conditions(&mut pod, &message("ns/a"), true, now));
        assert!(!edit_conditions(&mut pod, &message("ns/a"), true, now));
        let gate = condition(&pod, KRUISE_POD_READY);
        assert_eq!(gate.status, "False");
        assert_eq!(
            gate.message.as_deref(),
            Some(
                r#"[{"userAgent":"ContainerRecreateRequest","key":"ns/a"},{"userAgent":"ContainerRecreateRequest","key":"ns/b"}]"#
            )
        );
        assert_eq!(condition(&pod, "Ready").status, "False");
        assert!(edit_conditions(&mut pod, &message("ns/a"), false, now));
        assert_eq!(condition(&pod, KRUISE_POD_READY).status, "False");
        assert!(edit_conditions(&mut pod, &message("ns/b"), false, now));
        let gate = condition(&pod, KRUISE_POD_READY);
        assert_eq!(gate.status, "True");
        assert_eq!(gate.message.as_deref(), Some("[]"));
        assert!(!edit_conditions(&mut pod, &message("ns/b"), false, now));
    }
}
