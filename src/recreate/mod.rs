//! ContainerRecreateRequest, the daemon side (§4.4). The controller entry point comes with
//! the last module; see the submodules.

pub mod expectations;
mod go_text;
pub mod kill;
pub mod picking;
pub mod runtime;
pub mod state;
#[cfg(test)]
mod testing;
pub mod version;
