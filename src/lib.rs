//! kruised: a node agent for OpenKruise's `apps.kruise.io` API.
#![forbid(unsafe_code)]

pub mod api;
pub mod proto;
