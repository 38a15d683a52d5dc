//! The container runtime side: CRI `runtime.v1` over a unix socket.
//!
//! - [`endpoint`] parses `unix://` URIs and opens gRPC channels on them.
//! - [`discovery`] finds the node's runtimes the way kruise-daemon does (§2.1, §2.2).
//! - [`client`] wraps the generated clients with per-call deadlines and metrics.
//! - [`error`] decides, once, whether a failure is worth retrying.
//! - [`container_id`] parses `<runtime>://<id>` container IDs from pod status.

pub mod client;
pub mod container_id;
pub mod discovery;
pub mod endpoint;
pub mod error;
#[cfg(any(test, feature = "fake-cri"))]
pub mod fake;

pub use client::{CriClient, RuntimeInfo};
pub use container_id::ContainerId;
pub use discovery::{DiscoveryConfig, RuntimeSet};
pub use endpoint::RuntimeEndpoint;
pub use error::{CriError, PullFailure};
