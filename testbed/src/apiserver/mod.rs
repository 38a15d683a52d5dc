//! The Kubernetes API test server.

pub mod resources;
pub mod status;
pub mod store;
