//! ContainerRecreateRequest, the daemon side (§4.4). The controller entry point comes with
//! the last module; see the submodules.

mod go_text;
pub mod runtime;
#[cfg(test)]
mod testing;
pub mod version;
