//! kruised: a node agent for OpenKruise's `apps.kruise.io` API.
//!
//! The folder tree is the architecture: [`cri`] talks to the container runtime, [`api`]
//! holds the custom resource types, [`server`] is the HTTP surface, and [`agent`] wires
//! them together. `main.rs` only parses flags, starts logging and runs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod apiversions;
pub mod backoff;
pub mod cli;
pub mod containermeta;
pub mod credentials;
pub mod cri;
pub mod events;
pub mod feature_gates;
pub mod imagepuller;
pub mod imageref;
pub mod kubeconfig;
pub mod logging;
pub mod manager;
pub mod manifests;
pub mod metrics;
pub mod podprobe;
pub mod proto;
pub mod readiness;
pub mod recreate;
pub mod server;
