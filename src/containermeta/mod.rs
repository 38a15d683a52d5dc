//! containermeta (§6.1): publish runtime container identity and hashes on kruise's pods for
//! in-place update, and restart containers whose env from metadata changed during one.
//!
//! - [`envhash`]: the env-from-metadata hash, bit-identical with kruise-manager's.
//! - [`meta`]: the `apps.kruise.io/runtime-containers-meta` annotation's JSON.
//! - [`filter`]: which pod events matter.
//! - [`sync`]: the meta of one pod from the runtime, and which containers to restart.
//! - [`restarter`]: stopping a container through the Container recreate kill path.
//! - [`controller`]: the pod watch, work queues and the `pods/status` write.

pub mod controller;
pub mod envhash;
pub mod filter;
pub mod meta;
pub mod restarter;
pub mod sync;

pub use controller::{ContainerMetaController, EVENT_COMPONENT};
pub use meta::{RUNTIME_CONTAINERS_META_ANNOTATION, RuntimeContainerMetaSet};
