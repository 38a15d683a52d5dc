//! NodePodProbe, the daemon side (§5.3): run the probes of this node's NodePodProbe against
//! the containers of its pods and report the results in its status.
//!
//! Data flows one way: the NodePodProbe spec names the probes, one [`worker`] per probe asks
//! the runtime for its container, runs the probe through a [`handlers`] entry and records the
//! result in the [`results`] cache; the [`controller`]'s status writer folds the cache into the
//! status ([`status`]) and writes it when it differs.
//!
//! Where kruised departs from kruise-daemon, as §11.2 allows:
//!
//! - results are keyed by container ID **and** probe name, so two probes of one container no
//!   longer overwrite each other;
//! - gRPC probes run (`grpc.health.v1.Health/Check`, the kubelet's prober); kruise fails them
//!   with "missing probe handler";
//! - named ports of `httpGet` and `tcpSocket` resolve from the container's ports (the kubelet's
//!   `io.kubernetes.container.ports` annotation); kruise accepts numbers only;
//! - an event is recorded when a result changes, not on every status write for every result;
//! - the per-probe success/failure run restarts with a new container.

pub mod controller;
pub mod handlers;
pub mod results;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;
pub mod worker;

use std::fmt;

pub use results::{ProbeResult, ResultCache};

/// The event component of the controller (§1.4).
pub const EVENT_COMPONENT: &str = "kruise-daemon-podprobe";
/// The Normal event reason of a probe that succeeded (§5.3).
pub const PROBE_SUCCEEDED_REASON: &str = "KruiseProbeSucceeded";
/// The Normal event reason of a probe that failed (§5.3).
pub const PROBE_FAILED_REASON: &str = "KruiseProbeFailed";
/// The longest probe message kept, in characters (kruise's `maxProbeMessageLength`).
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// One probe of one container of one pod: kruise's `probeKey`. A worker runs for each.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeKey {
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// The pod's IP from the NodePodProbe, the target of network probes without `host`.
    pub pod_ip: String,
    /// The container's name.
    pub container_name: String,
    /// `<podProbeMarker>#<probe>`.
    pub probe_name: String,
}

impl fmt::Display for ProbeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} container {} probe {}",
            self.pod_namespace, self.pod_name, self.container_name, self.probe_name
        )
    }
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] characters.
pub fn truncate_message(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => message[..end].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_to_1024_characters_not_bytes() {
        assert_eq!(truncate_message("short"), "short");
        let long = "é".repeat(2000);
        let cut = truncate_message(&long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS);
        assert_eq!(cut.len(), MAX_MESSAGE_CHARS * 2);
        let exact = "a".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(truncate_message(&exact), exact);
    }
}
