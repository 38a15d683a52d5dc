//! ContainerRecreateRequest, the daemon side (§4.4). The controller entry point comes with
//! the last module; see the submodules.

mod go_text;
pub mod version;
