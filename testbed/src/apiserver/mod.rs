//! The Kubernetes API test server.

// ApiError carries a whole kube Status (message, details, causes); it is built once per
// failed request, so its size on the Err path does not matter.
#![allow(clippy::result_large_err)]

pub mod resources;
pub mod status;
pub mod store;
