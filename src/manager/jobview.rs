//! An ImagePullJob as the manager reads it (either served version: the schemas are the
//! same), with what kruise's ImagePullJob webhooks would default and reject (§3.3), and
//! label selector matching.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::DynamicObject;

use crate::api::shared::imagepulljob::{ImagePullJobSpec, ImagePullJobStatus, SandboxConfig};
use crate::api::shared::nodeimage::ImageTagPullPolicy;
use crate::api::{CompletionPolicyType, ImagePullPolicy};
use crate::imageref;

/// kruise's defaults.
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 600;
/// See [`DEFAULT_TIMEOUT_SECONDS`].
pub const DEFAULT_BACKOFF_LIMIT: i32 = 3;
/// Base TTL of `Never` jobs' tags (24 h ± 10 min).
pub const NEVER_TTL_SECONDS: i32 = 24 * 3600;
/// Minimum deadline of `Never` jobs' tags.
pub const NEVER_DEADLINE_SECONDS: i64 = 1800;

/// An ImagePullJob's parts.
#[derive(Debug, Clone)]
pub struct JobView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// `metadata.finalizers`.
    pub finalizers: Vec<String>,
    /// `spec`.
    pub spec: ImagePullJobSpec,
    /// `status` (default when absent).
    pub status: ImagePullJobStatus,
}

impl JobView {
    /// Decodes a watched job.
    pub fn from_object(object: &DynamicObject) -> Result<Self, String> {
        let spec = serde_json::from_value(object.data.get("spec").cloned().unwrap_or_default())
            .map_err(|e| format!("spec: {e}"))?;
        let status = match object.data.get("status") {
            None | Some(serde_json::Value::Null) => ImagePullJobStatus::default(),
            Some(status) => {
                serde_json::from_value(status.clone()).map_err(|e| format!("status: {e}"))?
            }
        };
        Ok(Self {
            name: object.metadata.name.clone().unwrap_or_default(),
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            uid: object.metadata.uid.clone().unwrap_or_default(),
            deleting: object.metadata.deletion_timestamp.is_some(),
            finalizers: object.metadata.finalizers.clone().unwrap_or_default(),
            spec,
            status,
        })
    }

    /// `namespace/name`, the key in secret references.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Which nodes a job pulls on.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Every NodeImage.
    All,
    /// `selector.names`.
    Names(Vec<String>),
    /// `selector` labels, over NodeImage (= node) labels.
    Labels(LabelSelector),
    /// The nodes of active scheduled pods matching `podSelector` in the job's namespace.
    Pods(LabelSelector),
}

/// A job with defaults applied and kruise's validation passed.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob {
    /// NodeImage key (familiar name).
    pub image_key: String,
    /// NodeImage tag (or digest).
    pub tag: String,
    /// Nodes pulling at once; 0 pauses.
    pub parallelism: usize,
    /// `Always` or `Never`.
    pub completion: CompletionPolicyType,
    /// `completionPolicy.activeDeadlineSeconds`.
    pub active_deadline_seconds: Option<i64>,
    /// `completionPolicy.ttlSecondsAfterFinished`.
    pub ttl_seconds_after_finished: Option<i32>,
    /// `pullPolicy.timeoutSeconds`.
    pub timeout_seconds: i32,
    /// `pullPolicy.backoffLimit`.
    pub backoff_limit: i32,
    /// `imagePullPolicy`.
    pub image_pull_policy: ImagePullPolicy,
    /// Where.
    pub selection: Selection,
    /// `sandboxConfig`.
    pub sandbox_config: Option<SandboxConfig>,
}

fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

fn check_selector(selector: &LabelSelector) -> Result<(), String> {
    for expression in selector.match_expressions.iter().flatten() {
        match expression.operator.as_str() {
            "In" | "NotIn" if expression.values.as_ref().is_none_or(Vec::is_empty) => {
                return Err(format!(
                    "matchExpressions: operator {} on {} needs values",
                    expression.operator, expression.key
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => return Err(format!("matchExpressions: unknown operator {other:?}")),
        }
    }
    Ok(())
}

/// kruise's mutating defaults and validating rules for ImagePullJob (§3.3); the error is
/// the status message.
pub fn validate(spec: &ImagePullJobSpec) -> Result<ValidJob, String> {
    let (image_key, tag) = imageref::image_key_and_tag(&spec.image)
        .map_err(|e| format!("image {:?} is not a valid reference: {e}", spec.image))?;
    let template = &spec.template;
    let selection = match (&template.selector, &template.pod_selector) {
        (Some(_), Some(_)) => {
            return Err("selector and podSelector are mutually exclusive".into());
        }
        (None, Some(pods)) => {
            check_selector(&pods.label_selector)?;
            Selection::Pods(pods.label_selector.clone())
        }
        (Some(nodes), None) => {
            let names = nodes.names.clone().unwrap_or_default();
            let labels_empty = selector_is_empty(&nodes.label_selector);
            if !names.is_empty() && !labels_empty {
                return Err(
                    "selector.names and selector.matchLabels/matchExpressions are mutually exclusive"
                        .into(),
                );
            }
            if !names.is_empty() {
                Selection::Names(names)
            } else if labels_empty {
                Selection::All
            } else {
                check_selector(&nodes.label_selector)?;
                Selection::Labels(nodes.label_selector.clone())
            }
        }
        (None, None) => Selection::All,
    };
    let parallelism = match &template.parallelism {
        None => 1,
        Some(IntOrString::Int(n)) if *n >= 0 => usize::try_from(*n).unwrap_or(0),
        Some(IntOrString::Int(n)) => return Err(format!("parallelism {n} must not be negative")),
        Some(IntOrString::String(s)) => {
            return Err(format!("parallelism {s:?} must be an integer"));
        }
    };
    let policy = &template.completion_policy;
    let completion = match policy.type_.as_deref() {
        None | Some("") => CompletionPolicyType::Always,
        Some(other) => other
            .parse()
            .map_err(|_| format!("completionPolicy.type {other:?} must be Always or Never"))?,
    };
    let pull = template.pull_policy.clone().unwrap_or_default();
    let timeout_seconds = pull.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let backoff_limit = pull.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
    if timeout_seconds <= 0 || backoff_limit < 0 {
        return Err(
            "pullPolicy.timeoutSeconds must be positive and backoffLimit not negative".into(),
        );
    }
    match completion {
        CompletionPolicyType::Always => {
            if let Some(deadline) = policy.active_deadline_seconds
                && deadline < i64::from(timeout_seconds)
            {
                return Err(format!(
                    "completionPolicy.activeDeadlineSeconds {deadline} must be at least pullPolicy.timeoutSeconds {timeout_seconds}"
                ));
            }
        }
        CompletionPolicyType::Never => {
            if policy.active_deadline_seconds.is_some()
                || policy.ttl_seconds_after_finished.is_some()
            {
                return Err(
                    "completionPolicy Never does not allow activeDeadlineSeconds or ttlSecondsAfterFinished"
                        .into(),
                );
            }
        }
    }
    let image_pull_policy = match template.image_pull_policy.as_deref() {
        None | Some("") => ImagePullPolicy::IfNotPresent,
        Some(other) => other
            .parse()
            .map_err(|_| format!("imagePullPolicy {other:?} must be Always or IfNotPresent"))?,
    };
    Ok(ValidJob {
        image_key,
        tag,
        parallelism,
        completion,
        active_deadline_seconds: policy.active_deadline_seconds,
        ttl_seconds_after_finished: policy.ttl_seconds_after_finished,
        timeout_seconds,
        backoff_limit,
        image_pull_policy,
        selection,
        sandbox_config: template.sandbox_config.clone(),
    })
}

/// A pseudo-random number in `0..n` (jitter for TTLs; not for security).
pub fn jitter(n: u32) -> i32 {
    if n == 0 {
        return 0;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = u64::from(nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    i32::try_from(x % u64::from(n)).unwrap_or(0)
}

/// The pull policy of the tags a job writes (§3.3), with kruise's random spreads.
pub fn tag_pull_policy(job: &ValidJob, default_ttl_for_always: i32) -> ImageTagPullPolicy {
    let (ttl, deadline) = match job.completion {
        CompletionPolicyType::Never => (
            NEVER_TTL_SECONDS + jitter(1200) - 600,
            Some(NEVER_DEADLINE_SECONDS.max(i64::from(job.timeout_seconds))),
        ),
        CompletionPolicyType::Always => {
            let base = job
                .ttl_seconds_after_finished
                .or_else(|| {
                    job.active_deadline_seconds
                        .map(|d| i32::try_from(d).unwrap_or(i32::MAX))
                })
                .unwrap_or_else(|| job.timeout_seconds.saturating_mul(job.backoff_limit));
            (
                base.saturating_add(default_ttl_for_always)
                    .saturating_add(jitter(300)),
                job.active_deadline_seconds,
            )
        }
    };
    ImageTagPullPolicy {
        timeout_seconds: Some(job.timeout_seconds),
        backoff_limit: Some(job.backoff_limit),
        ttl_seconds_after_finished: Some(ttl),
        active_deadline_seconds: deadline,
    }
}

/// Whether a tag's pull policy differs from what the job asks now, ignoring the TTL's
/// random part (so an unchanged job never rewrites its tags).
pub fn policy_outdated(current: Option<&ImageTagPullPolicy>, wanted: &ImageTagPullPolicy) -> bool {
    let current = current.cloned().unwrap_or_default();
    current.timeout_seconds != wanted.timeout_seconds
        || current.backoff_limit != wanted.backoff_limit
        || current.active_deadline_seconds != wanted.active_deadline_seconds
}

/// Whether `labels` match `selector` (matchLabels and matchExpressions; an empty selector
/// matches everything).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> ImagePullJobSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn defaults_are_kruises() {
        let job = validate(&spec(json!({"image": "nginx", "completionPolicy": {}}))).unwrap();
        assert_eq!(job.image_key, "nginx");
        assert_eq!(job.tag, "latest");
        assert_eq!(job.parallelism, 1);
        assert_eq!(job.completion, CompletionPolicyType::Always);
        assert_eq!((job.timeout_seconds, job.backoff_limit), (600, 3));
        assert_eq!(job.image_pull_policy, ImagePullPolicy::IfNotPresent);
        assert_eq!(job.selection, Selection::All);
    }

    #[test]
    fn the_webhooks_rejections_are_reported() {
        let cases = [
            (
                json!({"image": "nginx", "completionPolicy": {}, "selector": {"names": ["a"], "matchLabels": {"x": "y"}}}),
                "selector.names and selector.matchLabels/matchExpressions are mutually exclusive",
            ),
            (
                json!({"image": "nginx", "completionPolicy": {}, "selector": {"names": ["a"]}, "podSelector": {"matchLabels": {"x": "y"}}}),
                "selector and podSelector are mutually exclusive",
            ),
            (
                json!({"image": "nginx", "completionPolicy": {}, "parallelism": "50%"}),
                "parallelism \"50%\" must be an integer",
            ),
            (
                json!({"image": "nginx", "completionPolicy": {"type": "Never", "ttlSecondsAfterFinished": 5}}),
                "completionPolicy Never does not allow activeDeadlineSeconds or ttlSecondsAfterFinished",
            ),
            (
                json!({"image": "nginx", "completionPolicy": {"activeDeadlineSeconds": 100}}),
                "completionPolicy.activeDeadlineSeconds 100 must be at least pullPolicy.timeoutSeconds 600",
            ),
        ];
        for (value, message) in cases {
            assert_eq!(validate(&spec(value)).unwrap_err(), message);
        }
        assert!(
            validate(&spec(
                json!({"image": "Not An Image", "completionPolicy": {}})
            ))
            .unwrap_err()
            .starts_with("image \"Not An Image\" is not a valid reference")
        );
    }

    #[test]
    fn tag_policies_follow_the_completion_policy() {
        let never = validate(&spec(
            json!({"image": "nginx:1", "completionPolicy": {"type": "Never"}, "pullPolicy": {"timeoutSeconds": 3600}}),
        ))
        .unwrap();
        let policy = tag_pull_policy(&never, 300);
        let ttl = policy.ttl_seconds_after_finished.unwrap();
        assert!((86400 - 600..86400 + 600).contains(&ttl), "{ttl}");
        assert_eq!(policy.active_deadline_seconds, Some(3600));

        let always = validate(&spec(
            json!({"image": "nginx:1", "completionPolicy": {"activeDeadlineSeconds": 1200}}),
        ))
        .unwrap();
        let policy = tag_pull_policy(&always, 300);
        let ttl = policy.ttl_seconds_after_finished.unwrap();
        assert!((1500..1800).contains(&ttl), "{ttl}");
        assert_eq!(policy.active_deadline_seconds, Some(1200));
        // Another call differs only in the random TTL: not an outdated policy.
        assert!(!policy_outdated(
            Some(&tag_pull_policy(&always, 300)),
            &policy
        ));
        let mut edited = always.clone();
        edited.timeout_seconds = 60;
        assert!(policy_outdated(
            Some(&policy),
            &tag_pull_policy(&edited, 300)
        ));
    }

    #[test]
    fn label_selectors_match_like_kubernetes() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"pool": "a"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["z1", "z2"]},
                {"key": "gpu", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(matches(
            &selector,
            &labels(&[("pool", "a"), ("zone", "z2")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("pool", "a"), ("zone", "z3")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("pool", "a"), ("zone", "z1"), ("gpu", "1")])
        ));
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }
}
