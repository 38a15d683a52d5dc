//! The container runtime, reached over CRI `runtime.v1`.
#[cfg(any(test, feature = "fake-cri"))]
pub mod fake;
