//! API errors as kube-apiserver's `Status` objects.

use serde_json::{Value, json};

/// An error answered to a client, shaped like kube-apiserver's `metav1.Status`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `StatusReason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// Human-readable message, worded like kube's.
    pub message: String,
    /// `details`: name, group, kind, causes.
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: None,
            retry_after: None,
        }
    }

    /// 404: `pods "x" not found`.
    pub fn not_found(qualified_plural: &str, name: &str) -> Self {
        let mut error = Self::new(
            404,
            "NotFound",
            format!("{qualified_plural} \"{name}\" not found"),
        );
        error.details = Some(json!({"name": name, "kind": plural_only(qualified_plural)}));
        error
    }

    /// 404 for a path that matches no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409: already exists.
    pub fn already_exists(qualified_plural: &str, name: &str) -> Self {
        let mut error = Self::new(
            409,
            "AlreadyExists",
            format!("{qualified_plural} \"{name}\" already exists"),
        );
        error.details = Some(json!({"name": name, "kind": plural_only(qualified_plural)}));
        error
    }

    /// 409: stale resourceVersion or failed precondition.
    pub fn conflict(qualified_plural: &str, name: &str, why: &str) -> Self {
        let mut error = Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {qualified_plural} \"{name}\": {why}"),
        );
        error.details = Some(json!({"name": name, "kind": plural_only(qualified_plural)}));
        error
    }

    /// The standard optimistic-concurrency conflict.
    pub fn stale(qualified_plural: &str, name: &str) -> Self {
        Self::conflict(
            qualified_plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 with field causes.
    pub fn invalid(
        kind: &str,
        group: &str,
        name: &str,
        causes: Vec<(String, String, String)>,
    ) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let summary: Vec<String> = causes
            .iter()
            .map(|(field, _, message)| format!("{field}: {message}"))
            .collect();
        let message = if summary.len() == 1 {
            format!("{qualified} \"{name}\" is invalid: {}", summary[0])
        } else {
            format!(
                "{qualified} \"{name}\" is invalid: [{}]",
                summary.join(", ")
            )
        };
        let mut error = Self::new(422, "Invalid", message);
        error.details = Some(json!({
            "name": name,
            "group": group,
            "kind": kind,
            "causes": causes.iter().map(|(field, reason, message)| json!({
                "reason": reason, "message": message, "field": field
            })).collect::<Vec<_>>(),
        }));
        error
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message.into())
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message.into())
    }

    /// 410: the requested resourceVersion is older than the retained history.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into())
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into())
    }

    /// An injected failure: 500, 503 or 429 (with Retry-After).
    pub fn injected(code: u16, retry_after: Option<u32>) -> Self {
        let (reason, message) = match code {
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            _ => (
                "InternalError",
                "an error on the server (\"injected fault\") has prevented the request from succeeding",
            ),
        };
        let mut error = Self::new(code, reason, message.to_string());
        error.retry_after = retry_after;
        error
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        if let Some(seconds) = self.retry_after {
            let details = status
                .as_object_mut()
                .map(|s| s.entry("details").or_insert_with(|| json!({})));
            if let Some(details) = details {
                details["retryAfterSeconds"] = json!(seconds);
            }
        }
        status
    }
}

fn plural_only(qualified_plural: &str) -> &str {
    qualified_plural
        .split('.')
        .next()
        .unwrap_or(qualified_plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_shaped_like_kube() {
        let status = ApiError::not_found("pods", "web-0").to_status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["message"], "pods \"web-0\" not found");
        assert_eq!(status["details"]["name"], "web-0");
        assert_eq!(status["details"]["kind"], "pods");
    }

    #[test]
    fn invalid_lists_causes() {
        let error = ApiError::invalid(
            "ContainerRecreateRequest",
            "apps.kruise.io",
            "crr1",
            vec![(
                "spec.podName".into(),
                "FieldValueRequired".into(),
                "Required value".into(),
            )],
        );
        assert_eq!(
            error.message,
            "ContainerRecreateRequest.apps.kruise.io \"crr1\" is invalid: spec.podName: Required value"
        );
        assert_eq!(
            error.to_status()["details"]["causes"][0]["field"],
            "spec.podName"
        );
    }
}
