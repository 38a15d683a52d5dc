//! CRI endpoints: a unix socket given as an absolute path or a `unix://` URI.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use super::error::CriError;

/// The largest gRPC message we accept from the runtime. kruise-daemon and the kubelet
/// use 16 MiB; `ListImages` and `ListContainers` on a busy node exceed tonic's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A CRI endpoint on a unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuntimeEndpoint {
    path: PathBuf,
}

impl RuntimeEndpoint {
    /// Parses `unix:///run/containerd/containerd.sock` or `/run/containerd/containerd.sock`.
    ///
    /// Relative paths are rejected: gRPC's `unix://relative.sock` is an authority, not a
    /// path, and fails with a confusing message much later (spec test-environment §4.6).
    pub fn parse(value: &str) -> Result<Self, CriError> {
        let invalid = |reason: &str| CriError::InvalidEndpoint {
            endpoint: value.to_string(),
            reason: reason.to_string(),
        };
        let path = match value.split_once("://") {
            Some(("unix", rest)) => rest,
            Some((scheme, _)) => {
                return Err(invalid(&format!(
                    "unsupported scheme {scheme:?}, only unix sockets are supported"
                )));
            }
            None => value,
        };
        if path.is_empty() {
            return Err(invalid("empty socket path"));
        }
        if !path.starts_with('/') {
            return Err(invalid("the socket path must be absolute"));
        }
        Ok(Self::from_path(path))
    }

    /// An endpoint for an absolute socket path.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The socket's path on this machine.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a new gRPC channel on the socket, failing after `timeout`.
    ///
    /// Every call makes a fresh channel on purpose: a channel whose first connect failed
    /// sits in gRPC reconnect back-off for about a second, which would turn a 35 ms
    /// runtime start-up into a one second wait (spec test-environment §4.6).
    pub async fn connect(&self, timeout: Duration) -> Result<Channel, CriError> {
        let path = self.path.clone();
        // The authority is never dialled; the connector below ignores it.
        let endpoint = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let connect = endpoint.connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }));
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(source)) => Err(CriError::Connect {
                endpoint: self.to_string(),
                reason: transport_error_chain(&source),
            }),
            Err(_) => Err(CriError::Connect {
                endpoint: self.to_string(),
                reason: format!("timed out after {timeout:?}"),
            }),
        }
    }
}

impl fmt::Display for RuntimeEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unix://{}", self.path.display())
    }
}

/// tonic's transport error says only "transport error"; the cause (for example
/// "No such file or directory") is in its source chain.
fn transport_error_chain(error: &tonic::transport::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_unix_uri_and_absolute_path() {
        let uri = RuntimeEndpoint::parse("unix:///run/containerd/containerd.sock").unwrap();
        let path = RuntimeEndpoint::parse("/run/containerd/containerd.sock").unwrap();
        assert_eq!(uri, path);
        assert_eq!(uri.path(), Path::new("/run/containerd/containerd.sock"));
        assert_eq!(uri.to_string(), "unix:///run/containerd/containerd.sock");
    }

    #[test]
    fn rejects_relative_paths_and_other_schemes() {
        for bad in [
            "unix://relative.sock",
            "containerd.sock",
            "tcp://127.0.0.1:1234",
            "npipe://./pipe/containerd-containerd",
            "unix://",
            "",
        ] {
            let error = RuntimeEndpoint::parse(bad).unwrap_err();
            assert!(
                matches!(error, CriError::InvalidEndpoint { .. }),
                "{bad:?} gave {error:?}"
            );
        }
    }

    #[tokio::test]
    async fn connecting_to_a_missing_socket_names_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = RuntimeEndpoint::from_path(dir.path().join("missing.sock"));
        let error = endpoint.connect(Duration::from_secs(2)).await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains("missing.sock"), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
    }
}
