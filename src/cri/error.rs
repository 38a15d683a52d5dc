//! CRI errors, classified once: retryable or permanent, and for pulls, why.

use std::time::Duration;

use tonic::Code;

/// What went wrong talking to a container runtime.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CriError {
    /// The endpoint string is not a usable unix socket address.
    #[error("invalid runtime endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The socket could not be reached.
    #[error("cannot connect to container runtime at {endpoint}: {reason}")]
    Connect {
        /// The endpoint dialled.
        endpoint: String,
        /// The transport's explanation.
        reason: String,
    },
    /// The runtime answered a call with an error status.
    #[error("{message}")]
    Call {
        /// The CRI method, for example `PullImage`.
        method: &'static str,
        /// The gRPC status code.
        code: Code,
        /// The runtime's message, unchanged: it is what users search for.
        message: String,
    },
    /// The call did not finish within its deadline.
    #[error("{method} did not finish within {timeout:?}")]
    DeadlineExceeded {
        /// The CRI method.
        method: &'static str,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// No usable runtime socket was found on this node.
    #[error("not found container runtime sock: {0}")]
    NoRuntime(String),
    /// No discovered runtime has the name a container ID asks for.
    #[error("no runtime named {name:?} on this node (have: {available})")]
    UnknownRuntime {
        /// The runtime name from the `<runtime>://` prefix.
        name: String,
        /// The runtime names that were discovered.
        available: String,
    },
}

/// Why an image pull failed, in the terms the kubelet uses for `ErrImagePull` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailure {
    /// The repository or tag does not exist in the registry.
    ImageNotFound,
    /// The registry refused the credentials, or wanted some and got none.
    Unauthorized,
    /// The registry could not be reached or answered with a server error.
    RegistryUnavailable,
    /// The reference is not a valid image name.
    InvalidReference,
    /// Anything else, for example a failed unpack.
    Other,
}

impl PullFailure {
    /// Whether trying the same pull again can succeed without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::RegistryUnavailable | Self::Other)
    }

    /// A short, bounded label for metrics and events.
    pub fn label(self) -> &'static str {
        match self {
            Self::ImageNotFound => "image_not_found",
            Self::Unauthorized => "unauthorized",
            Self::RegistryUnavailable => "registry_unavailable",
            Self::InvalidReference => "invalid_reference",
            Self::Other => "other",
        }
    }
}

// Substrings of containerd, CRI-O and distribution error texts. The gRPC code alone
// cannot tell these apart: containerd reports most registry failures as UNKNOWN.
const UNAUTHORIZED_MARKERS: &[&str] = &[
    "401 unauthorized",
    "403 forbidden",
    "unauthorized",
    "authorization failed",
    "authentication required",
    "no basic auth credentials",
    "pull access denied",
    "insufficient_scope",
    "denied: requested access",
];
const UNAVAILABLE_MARKERS: &[&str] = &[
    "connection refused",
    "connection reset",
    "no such host",
    "i/o timeout",
    "tls handshake timeout",
    "server misbehaving",
    "network is unreachable",
    "no route to host",
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway timeout",
    "429 too many requests",
    "toomanyrequests",
    "unexpected eof",
];
const INVALID_REFERENCE_MARKERS: &[&str] = &["invalid reference format", "parse image name"];

impl CriError {
    /// The gRPC code, when the runtime answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Call { code, .. } => Some(*code),
            Self::DeadlineExceeded { .. } => Some(Code::DeadlineExceeded),
            _ => None,
        }
    }

    /// Whether the same call may succeed later without any change of input.
    ///
    /// This is the one place that decides it; callers must not re-derive it from codes.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::DeadlineExceeded { .. } | Self::NoRuntime(_) => true,
            Self::InvalidEndpoint { .. } | Self::UnknownRuntime { .. } => false,
            Self::Call { code, .. } => match code {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Cancelled => true,
                // containerd wraps registry and unpack failures as UNKNOWN: only the text
                // tells a dead registry (retry) from bad credentials (don't).
                Code::Unknown | Code::Internal => {
                    self.pull_failure().is_none_or(PullFailure::is_transient)
                }
                _ => false,
            },
        }
    }

    /// Classifies a failed `PullImage` the way the kubelet reports pull errors.
    /// Returns `None` for errors that did not come from a pull attempt.
    pub fn pull_failure(&self) -> Option<PullFailure> {
        match self {
            Self::Call { code, message, .. } => Some(classify_pull(*code, message)),
            Self::DeadlineExceeded { .. } => Some(PullFailure::RegistryUnavailable),
            Self::Connect { .. } => Some(PullFailure::Other),
            _ => None,
        }
    }

    /// A bounded label for metrics: the gRPC code name or the error kind.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Call { code, .. } => code_label(*code),
            Self::DeadlineExceeded { .. } => "DeadlineExceeded",
            Self::Connect { .. } => "ConnectError",
            Self::InvalidEndpoint { .. } => "InvalidEndpoint",
            Self::NoRuntime(_) => "NoRuntime",
            Self::UnknownRuntime { .. } => "UnknownRuntime",
        }
    }

    /// Builds a [`CriError::Call`] from a gRPC status.
    ///
    /// A status the runtime sent keeps its message unchanged. One made on this side from a
    /// broken connection (containerd restarted mid-call) says only "transport error"; its
    /// source chain has the cause, which is appended so CRR states and tag messages say
    /// what happened.
    pub fn from_status(method: &'static str, status: tonic::Status) -> Self {
        let mut message = status.message().to_string();
        let mut source = std::error::Error::source(&status);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !text.is_empty() && !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        Self::Call {
            method,
            code: status.code(),
            message,
        }
    }
}

fn classify_pull(code: Code, message: &str) -> PullFailure {
    let lower = message.to_ascii_lowercase();
    let has = |markers: &[&str]| markers.iter().any(|m| lower.contains(m));
    // Credentials first: a 401 on a private repository often also says "not found".
    if code == Code::Unauthenticated || code == Code::PermissionDenied || has(UNAUTHORIZED_MARKERS)
    {
        PullFailure::Unauthorized
    } else if code == Code::InvalidArgument || has(INVALID_REFERENCE_MARKERS) {
        PullFailure::InvalidReference
    } else if code == Code::NotFound || lower.contains(": not found") {
        PullFailure::ImageNotFound
    } else if code == Code::Unavailable
        || code == Code::DeadlineExceeded
        || has(UNAVAILABLE_MARKERS)
    {
        PullFailure::RegistryUnavailable
    } else {
        PullFailure::Other
    }
}

/// The canonical name of a gRPC code, as a `'static` label.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(code: Code, message: &str) -> CriError {
        CriError::Call {
            method: "PullImage",
            code,
            message: message.to_string(),
        }
    }

    // Texts below are containerd 1.6's, measured (spec test-environment §5.6).
    #[test]
    fn missing_tag_is_not_found_and_permanent() {
        let error = call(
            Code::NotFound,
            "failed to pull and unpack image \"127.0.0.1:5000/test/nope:1\": failed to resolve reference \"127.0.0.1:5000/test/nope:1\": 127.0.0.1:5000/test/nope:1: not found",
        );
        assert_eq!(error.pull_failure(), Some(PullFailure::ImageNotFound));
        assert!(!error.is_retryable());
    }

    #[test]
    fn registry_down_is_unavailable_and_retryable() {
        let error = call(
            Code::Unknown,
            "failed to pull and unpack image \"127.0.0.1:5001/test/busybox:1\": failed to resolve reference \"127.0.0.1:5001/test/busybox:1\": failed to do request: Head \"http://127.0.0.1:5001/v2/test/busybox/manifests/1\": dial tcp 127.0.0.1:5001: connect: connection refused",
        );
        assert_eq!(error.pull_failure(), Some(PullFailure::RegistryUnavailable));
        assert!(error.is_retryable());
    }

    #[test]
    fn bad_credentials_are_unauthorized_and_permanent() {
        let error = call(
            Code::Unknown,
            "failed to pull and unpack image \"127.0.0.1:5002/test/busybox:1\": failed to resolve reference \"127.0.0.1:5002/test/busybox:1\": pulling from host 127.0.0.1:5002 failed with status code [manifests 1]: 401 Unauthorized",
        );
        assert_eq!(error.pull_failure(), Some(PullFailure::Unauthorized));
        assert!(!error.is_retryable());
    }

    #[test]
    fn invalid_reference_is_permanent() {
        let error = call(
            Code::InvalidArgument,
            "failed to pull and unpack image \"UPPER:1\": failed to resolve reference \"UPPER:1\": parse image name",
        );
        assert_eq!(error.pull_failure(), Some(PullFailure::InvalidReference));
        assert!(!error.is_retryable());
    }

    #[test]
    fn transport_codes_are_retryable_and_unknown_container_is_not() {
        assert!(call(Code::Unavailable, "connection closed").is_retryable());
        assert!(
            CriError::DeadlineExceeded {
                method: "PullImage",
                timeout: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(
            !call(
                Code::NotFound,
                "an error occurred when try to find container \"doesnotexist\": not found"
            )
            .is_retryable()
        );
    }

    /// An error with a source, as hyper and the OS nest them.
    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Nested {
        text: &'static str,
        #[source]
        source: Option<std::io::Error>,
    }

    #[test]
    fn a_broken_connection_names_its_cause_and_a_runtime_message_stays_unchanged() {
        let mut status = tonic::Status::unknown("transport error");
        status.set_source(std::sync::Arc::new(Nested {
            text: "connection error",
            source: Some(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "stream closed because of a broken pipe",
            )),
        }));
        let error = CriError::from_status("StopContainer", status);
        assert_eq!(
            error.to_string(),
            "transport error: connection error: stream closed because of a broken pipe"
        );
        assert_eq!(error.code(), Some(Code::Unknown));

        // tonic already put the cause into the message: not repeated.
        let mut status = tonic::Status::unavailable("No such file or directory (os error 2)");
        status.set_source(std::sync::Arc::new(std::io::Error::from_raw_os_error(2)));
        assert_eq!(
            CriError::from_status("ListContainers", status).to_string(),
            "No such file or directory (os error 2)"
        );

        let from_runtime = tonic::Status::not_found("container \"x\": not found");
        assert_eq!(
            CriError::from_status("ContainerStatus", from_runtime).to_string(),
            "container \"x\": not found"
        );
    }

    #[test]
    fn metric_labels_are_code_names() {
        assert_eq!(call(Code::NotFound, "x").metric_label(), "NotFound");
        assert_eq!(code_label(Code::Ok), "OK");
    }
}
