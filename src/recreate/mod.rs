//! ContainerRecreateRequest, the daemon side (§4.4): which CRR of a pod to work on, what
//! state each of its containers is in, and stopping them through CRI.
//!
//! This is the core the CRR controller calls; it makes CRI calls but no API calls, and
//! returns what to write. Decisions are pure functions over a version-neutral view of the
//! CRR and the runtime's view of the pod; the effects are two thin CRI layers:
//!
//! - [`version`]: [`CrrView`], read from `v1alpha1` or `v1beta1` (§11.1 item 2).
//! - [`picking`]: which of a pod's CRRs goes next, which to mark `Pending` (§4.4 step 2),
//!   with the write [`expectations`] of §1.4.
//! - [`runtime`]: the runtime that owns the CRR (§4.4 step 5.1) and the pod's containers as
//!   it reports them (§2.4, step 5.3).
//! - [`state`]: per-container states and the action pass (steps 5.4 to 5.9), crash-safe.
//! - [`kill`]: stopping one container, preStop hook first (§2.5).
//!
//! A controller's sync of the work item `<namespace>/<podName>`:
//!
//! ```text
//! let pick = recreate::pick(&crrs, &mut expectations, Instant::now());
//! for crr in &pick.mark_pending { write phase Pending }   // kruise writes these first
//! if let Some(crr) = pick.picked {
//!     let outcome = recreate::sync_picked(crr, &runtimes, Timestamp::now()).await?;
//!     emit outcome.events; apply outcome.write; requeue after outcome.requeue_after
//! }
//! ```
//!
//! [`sync_pod`] does the same in one call when the order of the writes does not matter.

pub mod controller;
pub mod expectations;
mod go_text;
pub mod kill;
pub mod picking;
pub mod queue;
pub mod runtime;
pub mod state;
#[cfg(test)]
mod testing;
pub mod timing;
pub mod version;

use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

pub use expectations::{
    Expectation, MAX_EXPECTATION_WAIT, ResourceVersionExpectations, WriteExpectations,
};
pub use kill::{ContainerEvent, EventType, HookFailure, HookOutcome, KillReport, kill_container};
pub use picking::{Pick, pick};
pub use runtime::{PodStatusError, RuntimeContainer, RuntimeLookupError, RuntimePod};
pub use state::{Action, KillTarget, PendingKill, compute_states, decide};
pub use version::{ApiVersion, ContainerRecreateState, CrrView, UnreadyAcquisition};

use crate::api::ContainerRecreateRequestPhase;
use crate::cri::RuntimeSet;

/// How long after the unready grace period ends the CRR is looked at again (kruise's
/// `leftTime + 100ms`, §4.4 step 4).
pub const UNREADY_REQUEUE_SLACK: Duration = Duration::from_millis(100);

/// A write to one CRR's status. Exactly one per sync of the picked CRR, as in kruise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `status.phase` (kruise: update of the status subresource).
    Phase(ContainerRecreateRequestPhase),
    /// Merge-patch `{"status":{"containerRecreateStates":[...]}}`
    /// ([`version::states_merge_patch`]).
    States(Vec<ContainerRecreateState>),
    /// Complete: `phase: Completed`, `completionTime: now`, `message` (empty but for the
    /// failures kruise explains, §4.4 steps 4 and 5.1).
    Complete {
        /// The status message.
        message: String,
    },
}

/// What one sync of the picked CRR produced.
#[derive(Debug, Default)]
pub struct CrrSync {
    /// The status write, if any.
    pub write: Option<Write>,
    /// Look at the pod again after this long, if set.
    pub requeue_after: Option<Duration>,
    /// Events to record on the pod, in order (`Killing`, `FailedPreStopHook`).
    pub events: Vec<ContainerEvent>,
    /// Every kill attempted, for logs and metrics.
    pub kills: Vec<KillReport>,
    /// The runtime's view of the pod, if this sync read it (for metrics: when a stopped
    /// container's replacement started).
    pub pod: Option<RuntimePod>,
}

/// Why a sync failed before deciding anything; the work item is retried with backoff.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    /// The runtime's view of the pod could not be read (§4.4 step 5.3).
    #[error("failed to GetPodStatus {namespace}/{pod} with uid {uid}: {source}")]
    PodStatus {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// The pod's UID.
        uid: String,
        /// What failed.
        #[source]
        source: PodStatusError,
    },
}

impl SyncError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::PodStatus { .. } => "pod_status",
        }
    }
}

/// Whether the unready grace period lets the CRR proceed (§4.4 step 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnreadyGate {
    /// No unready grace, or it is over.
    Proceed,
    /// The manager has not forced the pod not-ready yet; its update will bring the CRR back.
    WaitForManager,
    /// The grace period is running; look again after this long.
    RequeueAfter(Duration),
    /// `v1alpha1` with an unparseable acquisition time: complete with this message.
    Complete(String),
}

/// §4.4 step 4: with `unreadyGracePeriodSeconds`, wait that long after the manager forced
/// the pod not-ready.
pub fn unready_gate(crr: &CrrView, now: Timestamp) -> UnreadyGate {
    let Some(grace_seconds) = crr.strategy.unready_grace_period_seconds else {
        return UnreadyGate::Proceed;
    };
    match &crr.unready_acquisition {
        UnreadyAcquisition::NotAcquired => UnreadyGate::WaitForManager,
        unparseable @ UnreadyAcquisition::Unparseable { .. } => {
            UnreadyGate::Complete(unparseable.completion_message().unwrap_or_default())
        }
        UnreadyAcquisition::AcquiredAt(acquired) => {
            let left = SignedDuration::from_secs(grace_seconds) - now.duration_since(*acquired);
            match Duration::try_from(left) {
                Ok(left) if !left.is_zero() => {
                    UnreadyGate::RequeueAfter(left + UNREADY_REQUEUE_SLACK)
                }
                _ => UnreadyGate::Proceed,
            }
        }
    }
}

/// One sync of the picked CRR (§4.4 steps 3 to 5.9): set it `Recreating` first, honour the
/// unready grace period, find its runtime, read the pod's containers, and run the action
/// pass, stopping at most one container successfully ([`kill_container`]).
///
/// The CRR must be the one [`pick`] chose. `now` is the wall clock, compared with the CRR's
/// and the runtime's times.
pub async fn sync_picked(
    crr: &CrrView,
    runtimes: &RuntimeSet,
    now: Timestamp,
) -> Result<CrrSync, SyncError> {
    let mut outcome = CrrSync::default();
    if crr.phase() != Some(ContainerRecreateRequestPhase::Recreating) {
        outcome.write = Some(Write::Phase(ContainerRecreateRequestPhase::Recreating));
        return Ok(outcome);
    }
    match unready_gate(crr, now) {
        UnreadyGate::Proceed => {}
        UnreadyGate::WaitForManager => return Ok(outcome),
        UnreadyGate::RequeueAfter(after) => {
            outcome.requeue_after = Some(after);
            return Ok(outcome);
        }
        UnreadyGate::Complete(message) => {
            outcome.write = Some(Write::Complete { message });
            return Ok(outcome);
        }
    }
    let cri = match runtime::select_runtime(runtimes, crr) {
        Ok(cri) => cri,
        Err(error) => {
            outcome.write = Some(Write::Complete {
                message: error.completion_message(),
            });
            return Ok(outcome);
        }
    };
    let pod = runtime::read_pod(cri, crr.pod_uid())
        .await
        .map_err(|source| SyncError::PodStatus {
            namespace: crr.namespace.clone(),
            pod: crr.pod_name.clone(),
            uid: crr.pod_uid().to_owned(),
            source,
        })?;

    let mut action = decide(crr, &pod, now);
    outcome.pod = Some(pod);
    loop {
        match action {
            Action::Kill(pending) => {
                let target = pending.target();
                let report = kill_container(cri, crr, &target.name, &target.container).await;
                outcome.events.extend(report.events.iter().cloned());
                action = match &report.result {
                    Ok(()) => pending.succeeded(),
                    Err(error) => {
                        tracing::warn!(
                            namespace = %crr.namespace,
                            crr = %crr.name,
                            container = %target.name,
                            %error,
                            "failed to stop container"
                        );
                        pending.failed(&error.to_string())
                    }
                };
                outcome.kills.push(report);
            }
            Action::PatchStates(states) => {
                outcome.write = Some(Write::States(states));
                return Ok(outcome);
            }
            Action::Complete { message } => {
                outcome.write = Some(Write::Complete { message });
                return Ok(outcome);
            }
            Action::Requeue { after } => {
                outcome.requeue_after = Some(after);
                return Ok(outcome);
            }
            Action::Wait => return Ok(outcome),
        }
    }
}

/// The result of [`sync_pod`].
#[derive(Debug, Default)]
pub struct PodSync {
    /// Names of the CRRs to set `Pending`.
    pub mark_pending: Vec<String>,
    /// The picked CRR's name and sync, if one was picked.
    pub picked: Option<(String, CrrSync)>,
    /// Whether a stale cache stopped picking (see [`Pick::waiting_for_cache`]): the caller
    /// may requeue shortly.
    pub waiting_for_cache: bool,
}

/// [`pick`] then [`sync_picked`] in one call, for one pod's CRRs.
///
/// The picked CRR's container may be stopped before the caller writes the `Pending` marks;
/// kruise writes them first (its 60 s "daemon has not responded" clock, §4.3 step 3, runs on
/// them), so a controller that cares should call the two steps itself.
pub async fn sync_pod(
    crrs: &[CrrView],
    runtimes: &RuntimeSet,
    expectations: &mut impl WriteExpectations,
    now: Timestamp,
    monotonic_now: Instant,
) -> Result<PodSync, SyncError> {
    let pick = pick(crrs, expectations, monotonic_now);
    let picked = match pick.picked {
        Some(crr) => Some((crr.name.clone(), sync_picked(crr, runtimes, now).await?)),
        None => None,
    };
    Ok(PodSync {
        mark_pending: pick
            .mark_pending
            .iter()
            .map(|crr| crr.name.clone())
            .collect(),
        picked,
        waiting_for_cache: pick.waiting_for_cache.is_some(),
    })
}

#[cfg(test)]
mod tests;
