//! The per-container state machine of a picked CRR (§4.4 steps 5.4 to 5.9), as pure
//! decisions: [`compute_states`] reads the runtime, [`decide`] says what to do next.
//!
//! # Crash safety
//!
//! The daemon can die between stopping a container and writing `isKilled` (§4.4 step 5.6
//! writes after the kill). Whatever survives, a kill is only ever issued against the container
//! the request asked to replace:
//!
//! * by default, the container named by `statusContext` (ID and restart count). Once that one
//!   is stopped, the pod's newest container for the name is either the exited one
//!   (`Recreating`) or a new one whose ID differs or whose restart count is higher
//!   (`Recreating`, later `Succeeded`); neither is ever `Pending`, so neither is killed, with
//!   or without `isKilled`.
//! * with `forceRecreate`, which kills the current container even when it is already not the
//!   `statusContext` one, kruise relies on `isKilled` alone, and a lost `isKilled` made it kill
//!   the replacement too. Here the container to kill is first written into the `Pending`
//!   state's message ([`FORCE_RECREATE_TARGET_PREFIX`]), and killed only on a later sync, once
//!   the cache shows that write. A newest container other than the recorded one was started
//!   after the record (by our kill, or because the recorded one died anyway) and is
//!   `Recreating` with `isKilled`, never killed. This costs one status write per forced
//!   container.
//!
//! With `restartPolicy: Never` the stopped container stays exited, so its state stays
//! `Recreating` and it is not stopped again; the manager ends the CRR at its deadline (§4.4).

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::runtime::{RuntimeContainer, RuntimeContainerState, RuntimePod};
use super::version::{ContainerRecreateState, CrrView};
use crate::api::shared::containerrecreaterequest::ContainerRecreateRequestContainerContext;
use crate::api::{ContainerRecreateRequestFailurePolicy, ContainerRecreateRequestPhase};

/// The message of a `Pending` state whose container the runtime does not have (kruise's).
pub const NOT_FOUND_ON_NODE: &str = "not found container on Node";

/// Prefix of the `Pending` state message that records, before the kill, which container a
/// `forceRecreate` is about to stop (see the [module docs](self)).
pub const FORCE_RECREATE_TARGET_PREFIX: &str = "forceRecreate: stopping container ";

/// Computes every container's state from the previous states and the runtime (§4.4 step
/// 5.4), in `spec.containers` order.
///
/// For each container, with `prev` its stored state:
/// 1. `prev` Succeeded or Failed: kept as is.
/// 2. no runtime container of that name: `Pending`, [`NOT_FOUND_ON_NODE`].
/// 3. the newest one exited: `Recreating` (the kubelet will restart it, or with
///    `restartPolicy: Never` it stays so).
/// 4. `forceRecreate` and not yet killed: `Pending` naming the container, unless a previously
///    named container has been replaced, which is `Recreating` and killed (crash safety).
/// 5. it differs from `statusContext` (ID, or a higher restart count): `Recreating`, and
///    `Succeeded` once the manager's snapshot has that ID ready and it has run for more than
///    `minStartedSeconds`; killed either way (it was replaced).
/// 6. otherwise: `Pending`.
///
/// `isKilled` carries over from `prev` except where said.
pub fn compute_states(
    crr: &CrrView,
    pod: &RuntimePod,
    now: Timestamp,
) -> Vec<ContainerRecreateState> {
    crr.containers
        .iter()
        .map(|container| {
            let previous = crr.state_of(&container.name);
            if let Some(previous) = previous.filter(|previous| {
                matches!(
                    previous.phase,
                    ContainerRecreateRequestPhase::Succeeded
                        | ContainerRecreateRequestPhase::Failed
                )
            }) {
                return previous.clone();
            }
            let previously_killed = previous.is_some_and(|previous| previous.is_killed);
            let with = |phase, message: String, is_killed| ContainerRecreateState {
                name: container.name.clone(),
                phase,
                message,
                is_killed,
            };

            let Some(runtime) = pod.newest(&container.name) else {
                return with(
                    ContainerRecreateRequestPhase::Pending,
                    NOT_FOUND_ON_NODE.to_owned(),
                    previously_killed,
                );
            };
            if runtime.state == RuntimeContainerState::Exited {
                return with(
                    ContainerRecreateRequestPhase::Recreating,
                    String::new(),
                    previously_killed,
                );
            }
            if crr.strategy.force_recreate && !previously_killed {
                let recorded_target = previous.and_then(|previous| {
                    previous.message.strip_prefix(FORCE_RECREATE_TARGET_PREFIX)
                });
                return match recorded_target {
                    // The container we set out to stop is gone: this one replaced it.
                    Some(target) if target != runtime.container_id() => {
                        with(recreated_phase(crr, runtime, now), String::new(), true)
                    }
                    _ => with(
                        ContainerRecreateRequestPhase::Pending,
                        format!("{FORCE_RECREATE_TARGET_PREFIX}{}", runtime.container_id()),
                        false,
                    ),
                };
            }
            if already_recreated(container.status_context.as_ref(), runtime) {
                // Replaced, so stopped (by us or otherwise): killed, as the action pass marks
                // every `Recreating` state. Carrying `prev` over instead (kruise) loses a
                // failed write of `isKilled` whenever the retry finds the replacement ready
                // at once: the CRR then ends `Succeeded` without `isKilled`, though the
                // container was stopped.
                return with(recreated_phase(crr, runtime, now), String::new(), true);
            }
            with(
                ContainerRecreateRequestPhase::Pending,
                String::new(),
                previously_killed,
            )
        })
        .collect()
}

/// Whether the runtime's container is not the one `statusContext` names: another ID, or the
/// same one restarted (§4.4 step 5.4).
pub fn already_recreated(
    context: Option<&ContainerRecreateRequestContainerContext>,
    runtime: &RuntimeContainer,
) -> bool {
    context.is_some_and(|context| {
        runtime.container_id() != context.container_id
            || runtime.restart_count > context.restart_count
    })
}

/// `Succeeded` when the manager's snapshot shows this very container ready and it has run
/// longer than `minStartedSeconds`, else `Recreating`.
fn recreated_phase(
    crr: &CrrView,
    runtime: &RuntimeContainer,
    now: Timestamp,
) -> ContainerRecreateRequestPhase {
    let started_long_enough = runtime.started_at.is_none_or(|started_at| {
        // Go: time.Since(StartedAt) > minStartedDuration; a zero StartedAt is long ago.
        now.duration_since(started_at)
            > SignedDuration::from_secs(i64::from(crr.strategy.min_started_seconds))
    });
    let ready_in_snapshot = crr.snapshot_of(&runtime.name).is_some_and(|snapshot| {
        snapshot.ready && snapshot.container_id.as_deref() == Some(&runtime.container_id())
    });
    if ready_in_snapshot && started_long_enough {
        ContainerRecreateRequestPhase::Succeeded
    } else {
        ContainerRecreateRequestPhase::Recreating
    }
}

/// What the daemon does next for the picked CRR.
#[derive(Debug)]
pub enum Action {
    /// Stop a container (§2.5), then report the outcome to the [`PendingKill`], which
    /// decides the next action. At most one kill succeeds per sync.
    Kill(Box<PendingKill>),
    /// Merge-patch `status.containerRecreateStates` with these, and end the sync.
    PatchStates(Vec<ContainerRecreateState>),
    /// Complete the CRR: phase `Completed`, `completionTime` now, this message.
    Complete {
        /// Empty, except for the failures kruise reports in the CRR (§4.4 steps 4, 5.1).
        message: String,
    },
    /// Nothing to write; look again after this long (`minStartedSeconds`, unready grace).
    Requeue {
        /// The delay.
        after: Duration,
    },
    /// Nothing to write; a watch event will bring the CRR back.
    Wait,
}

/// The container to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillTarget {
    /// Index in `spec.containers` and in the states.
    pub index: usize,
    /// The container's name.
    pub name: String,
    /// The runtime's newest container of that name.
    pub container: RuntimeContainer,
}

/// A kill the action pass is waiting on. Reporting its outcome consumes it, so a pass can
/// neither go on without the outcome nor record one twice.
#[derive(Debug)]
#[must_use = "the kill's outcome decides the next action"]
pub struct PendingKill {
    target: KillTarget,
    pass: ActionPass,
}

impl PendingKill {
    /// The container to stop.
    pub fn target(&self) -> &KillTarget {
        &self.target
    }

    /// The container was stopped: it is `Recreating` and killed, and the pass ends (one kill
    /// per sync, even without `orderedRecreate`).
    pub fn succeeded(mut self) -> Action {
        let state = &mut self.pass.states[self.target.index];
        state.phase = ContainerRecreateRequestPhase::Recreating;
        state.is_killed = true;
        // Only a forced kill's target record can be here; it has served its purpose.
        state.message.clear();
        self.pass.finish()
    }

    /// Stopping failed with `error`: the container is `Failed`, `kill container error:
    /// <error>`. With `failurePolicy: Ignore` the pass goes on (and may kill the next
    /// container); with `Fail` the states are written at once.
    pub fn failed(mut self, error: &str) -> Action {
        let state = &mut self.pass.states[self.target.index];
        state.phase = ContainerRecreateRequestPhase::Failed;
        state.message = format!("kill container error: {error}");
        match self.pass.failure_policy {
            ContainerRecreateRequestFailurePolicy::Ignore => self.pass.run(),
            ContainerRecreateRequestFailurePolicy::Fail => Action::PatchStates(self.pass.states),
        }
    }
}

/// The action pass over the states (§4.4 steps 5.6 to 5.9).
#[derive(Debug)]
struct ActionPass {
    stored: Vec<ContainerRecreateState>,
    states: Vec<ContainerRecreateState>,
    /// The newest runtime container of each state's name.
    targets: Vec<Option<RuntimeContainer>>,
    next: usize,
    completed: usize,
    failure_policy: ContainerRecreateRequestFailurePolicy,
    ordered_recreate: bool,
    min_started_seconds: i32,
}

impl ActionPass {
    fn run(mut self) -> Action {
        while self.next < self.states.len() {
            let index = self.next;
            self.next += 1;
            match self.states[index].phase {
                ContainerRecreateRequestPhase::Succeeded => self.completed += 1,
                ContainerRecreateRequestPhase::Failed => {
                    self.completed += 1;
                    if self.failure_policy == ContainerRecreateRequestFailurePolicy::Fail {
                        // §4.4 step 5.6: the CRR completes with an empty message.
                        return Action::Complete {
                            message: String::new(),
                        };
                    }
                }
                ContainerRecreateRequestPhase::Recreating => {
                    // Seen recreating, so it was stopped, by us or otherwise (kruise).
                    self.states[index].is_killed = true;
                    if self.ordered_recreate {
                        break;
                    }
                }
                ContainerRecreateRequestPhase::Pending
                | ContainerRecreateRequestPhase::Completed => {
                    let Some(container) = self.targets[index].clone() else {
                        break;
                    };
                    let target = KillTarget {
                        index,
                        name: self.states[index].name.clone(),
                        container,
                    };
                    return Action::Kill(Box::new(PendingKill { target, pass: self }));
                }
            }
        }
        self.finish()
    }

    fn finish(self) -> Action {
        if self.states != self.stored {
            Action::PatchStates(self.states)
        } else if self.completed == self.states.len() {
            Action::Complete {
                message: String::new(),
            }
        } else if self.min_started_seconds > 0 {
            Action::Requeue {
                after: Duration::from_secs(u64::from(self.min_started_seconds.unsigned_abs())),
            }
        } else {
            Action::Wait
        }
    }
}

/// Decides what to do for the picked, `Recreating` CRR given its pod's runtime containers
/// (§4.4 steps 5.4 to 5.9): write changed states first, else run the action pass.
pub fn decide(crr: &CrrView, pod: &RuntimePod, now: Timestamp) -> Action {
    let states = compute_states(crr, pod, now);
    if crr.states_need_rewrite || states != crr.container_recreate_states {
        return Action::PatchStates(states);
    }
    let targets = states
        .iter()
        .map(|state| pod.newest(&state.name).cloned())
        .collect();
    ActionPass {
        stored: states.clone(),
        states,
        targets,
        next: 0,
        completed: 0,
        failure_policy: crr.strategy.failure_policy,
        ordered_recreate: crr.strategy.ordered_recreate,
        min_started_seconds: crr.strategy.min_started_seconds,
    }
    .run()
}

#[cfg(test)]
mod tests {
    use ContainerRecreateRequestPhase::{Failed, Pending, Recreating, Succeeded};
    use RuntimeContainerState::{Created, Exited, Running};

    use super::*;
    use crate::api::shared::containerrecreaterequest::ContainerRecreateRequestSyncContainerStatus;
    use crate::recreate::testing::{crr_with_containers, runtime_container, timestamp};

    const NOW: &str = "2024-01-01T00:10:00Z";

    fn now() -> Timestamp {
        timestamp(NOW)
    }

    fn state(
        name: &str,
        phase: ContainerRecreateRequestPhase,
        is_killed: bool,
    ) -> ContainerRecreateState {
        ContainerRecreateState {
            is_killed,
            ..ContainerRecreateState::new(name, phase)
        }
    }

    fn ready(crr: &mut CrrView, name: &str, id: &str) {
        crr.container_status_snapshot
            .push(ContainerRecreateRequestSyncContainerStatus {
                name: name.into(),
                ready: true,
                restart_count: 1,
                container_id: Some(format!("containerd://{id}")),
            });
    }

    /// Runs `decide` the way the daemon does, stopping containers through `kill`, and
    /// returns the final action with the IDs it stopped.
    fn sync(
        crr: &CrrView,
        pod: &RuntimePod,
        mut kill: impl FnMut(&KillTarget) -> Result<(), String>,
    ) -> (Action, Vec<String>) {
        let mut killed = Vec::new();
        let mut action = decide(crr, pod, now());
        loop {
            match action {
                Action::Kill(pending) => {
                    killed.push(pending.target().container.id.id.clone());
                    action = match kill(pending.target()) {
                        Ok(()) => pending.succeeded(),
                        Err(error) => pending.failed(&error),
                    };
                }
                other => return (other, killed),
            }
        }
    }

    fn ok(_: &KillTarget) -> Result<(), String> {
        Ok(())
    }

    fn patched(action: Action) -> Vec<ContainerRecreateState> {
        match action {
            Action::PatchStates(states) => states,
            other => panic!("expected a states patch, got {other:?}"),
        }
    }

    /// Applies a patch to the CRR, as the API server would.
    fn write(crr: &mut CrrView, states: Vec<ContainerRecreateState>) {
        crr.container_recreate_states = states;
    }

    #[test]
    fn first_sync_writes_pending_then_kills_then_records_the_kill() {
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        let pod = RuntimePod::new(vec![runtime_container("app", "app-1", Running, 0, 1)]);

        let (action, killed) = sync(&crr, &pod, ok);
        assert!(killed.is_empty());
        write(&mut crr, patched(action));
        assert_eq!(
            crr.container_recreate_states,
            [state("app", Pending, false)]
        );

        let (action, killed) = sync(&crr, &pod, ok);
        assert_eq!(killed, ["app-1"]);
        write(&mut crr, patched(action));
        assert_eq!(
            crr.container_recreate_states,
            [state("app", Recreating, true)]
        );
    }

    #[test]
    fn succeeded_needs_the_snapshot_to_show_the_new_container_ready_past_min_started() {
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        crr.strategy.min_started_seconds = 30;
        crr.container_recreate_states = vec![state("app", Recreating, true)];
        let mut new = runtime_container("app", "app-2", Running, 1, 2);
        new.started_at = Some(timestamp("2024-01-01T00:09:45Z"));
        let pod = RuntimePod::new(vec![runtime_container("app", "app-1", Exited, 0, 1), new]);

        // Not in the snapshot yet: still recreating, look again after minStartedSeconds.
        assert!(matches!(
            sync(&crr, &pod, ok).0,
            Action::Requeue { after } if after == Duration::from_secs(30)
        ));
        // Ready in the snapshot but started 15 s ago: still recreating.
        ready(&mut crr, "app", "app-2");
        assert!(matches!(sync(&crr, &pod, ok).0, Action::Requeue { .. }));
        // 16 s later it has run for 31 s.
        let action = decide(&crr, &pod, timestamp("2024-01-01T00:10:16Z"));
        write(&mut crr, patched(action));
        assert_eq!(
            crr.container_recreate_states,
            [state("app", Succeeded, true)]
        );
        assert!(matches!(
            sync(&crr, &pod, ok).0,
            Action::Complete { message } if message.is_empty()
        ));
    }

    #[test]
    fn a_snapshot_of_another_container_id_or_not_ready_is_not_success() {
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        crr.container_recreate_states = vec![state("app", Recreating, true)];
        let pod = RuntimePod::new(vec![runtime_container("app", "app-2", Running, 1, 2)]);
        ready(&mut crr, "app", "app-1");
        assert_eq!(compute_states(&crr, &pod, now())[0].phase, Recreating);
        crr.container_status_snapshot[0].container_id = Some("containerd://app-2".into());
        crr.container_status_snapshot[0].ready = false;
        assert_eq!(compute_states(&crr, &pod, now())[0].phase, Recreating);
    }

    // ---- crash safety: the agent is SIGKILLed at each point of a recreate ---------------

    /// The pod at each point: before the kill, just after it (exited, not restarted), and
    /// after the kubelet restarted the container.
    fn before_kill() -> RuntimePod {
        RuntimePod::new(vec![runtime_container("app", "app-1", Running, 0, 1)])
    }

    fn after_kill() -> RuntimePod {
        RuntimePod::new(vec![runtime_container("app", "app-1", Exited, 0, 1)])
    }

    fn after_restart() -> RuntimePod {
        RuntimePod::new(vec![
            runtime_container("app", "app-1", Exited, 0, 1),
            runtime_container("app", "app-2", Running, 1, 2),
        ])
    }

    /// Drives syncs until nothing is left to write, returning every container ID stopped.
    fn settle(crr: &mut CrrView, pod: &RuntimePod) -> Vec<String> {
        let mut all_killed = Vec::new();
        for _ in 0..10 {
            let (action, killed) = sync(crr, pod, ok);
            all_killed.extend(killed);
            match action {
                Action::PatchStates(states) => write(crr, states),
                _ => return all_killed,
            }
        }
        panic!("the states never settled");
    }

    /// A CRR after its first sync: states written `Pending`, nothing stopped yet.
    fn pending_crr(force_recreate: bool) -> CrrView {
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        crr.strategy.force_recreate = force_recreate;
        let (action, killed) = sync(&crr, &before_kill(), ok);
        assert!(killed.is_empty());
        write(&mut crr, patched(action));
        assert_eq!(crr.container_recreate_states[0].phase, Pending);
        crr
    }

    #[test]
    fn killed_before_the_kill_the_next_agent_kills_once() {
        for force_recreate in [false, true] {
            let mut crr = pending_crr(force_recreate);
            let (action, killed) = sync(&crr, &before_kill(), ok);
            assert_eq!(killed, ["app-1"], "force_recreate: {force_recreate}");
            write(&mut crr, patched(action));
            assert_eq!(
                crr.container_recreate_states,
                [state("app", Recreating, true)]
            );
            ready(&mut crr, "app", "app-2");
            for pod in [after_kill(), after_restart()] {
                assert!(settle(&mut crr, &pod).is_empty());
            }
            assert_eq!(
                crr.container_recreate_states,
                [state("app", Succeeded, true)]
            );
        }
    }

    #[test]
    fn killed_after_the_kill_before_the_patch_never_kills_again() {
        for force_recreate in [false, true] {
            for pod in [after_kill(), after_restart()] {
                // The kill happened but `isKilled` was never written.
                let mut crr = pending_crr(force_recreate);
                let killed = settle(&mut crr, &pod);
                assert!(
                    killed.is_empty(),
                    "force_recreate: {force_recreate}, pod: {pod:?}"
                );
                assert_eq!(
                    crr.container_recreate_states,
                    [state("app", Recreating, true)]
                );
            }
        }
    }

    #[test]
    fn killed_after_the_patch_never_kills_again() {
        for force_recreate in [false, true] {
            let mut crr = pending_crr(force_recreate);
            let (action, killed) = sync(&crr, &before_kill(), ok);
            assert_eq!(killed, ["app-1"]);
            write(&mut crr, patched(action));
            for pod in [after_kill(), after_restart()] {
                let mut crr = crr.clone();
                assert!(
                    settle(&mut crr, &pod).is_empty(),
                    "force_recreate: {force_recreate}"
                );
                assert_eq!(
                    crr.container_recreate_states,
                    [state("app", Recreating, true)]
                );
            }
        }
    }

    #[test]
    fn killed_after_the_new_container_started_never_kills_it() {
        for force_recreate in [false, true] {
            for stored in [state("app", Pending, false), state("app", Recreating, true)] {
                let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
                crr.strategy.force_recreate = force_recreate;
                // Force's record of the container it stopped, as written before its kill.
                crr.container_recreate_states = vec![ContainerRecreateState {
                    message: if force_recreate && stored.phase == Pending {
                        format!("{FORCE_RECREATE_TARGET_PREFIX}containerd://app-1")
                    } else {
                        String::new()
                    },
                    ..stored
                }];
                ready(&mut crr, "app", "app-2");
                let killed = settle(&mut crr, &after_restart());
                assert!(killed.is_empty(), "force_recreate: {force_recreate}");
                assert_eq!(crr.container_recreate_states[0].phase, Succeeded);
                assert!(matches!(
                    sync(&crr, &after_restart(), ok).0,
                    Action::Complete { .. }
                ));
            }
        }
    }

    #[test]
    fn a_lost_is_killed_write_is_restored_when_the_replacement_is_already_ready() {
        // The kill succeeded but the write of `isKilled` failed (API server 500); by the
        // retry the kubelet has started app-2 and the manager's snapshot shows it ready.
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        crr.container_recreate_states = vec![state("app", Pending, false)];
        ready(&mut crr, "app", "app-2");
        let killed = settle(&mut crr, &after_restart());
        assert!(killed.is_empty());
        assert_eq!(
            crr.container_recreate_states,
            [state("app", Succeeded, true)]
        );
    }

    #[test]
    fn a_restart_count_above_the_status_context_counts_as_recreated() {
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        // Same ID, restarted in place (a runtime that keeps IDs).
        let pod = RuntimePod::new(vec![runtime_container("app", "app-1", Running, 1, 1)]);
        assert!(settle(&mut crr, &pod).is_empty());
        assert_eq!(crr.container_recreate_states[0].phase, Recreating);
    }

    // ---- forceRecreate -----------------------------------------------------------------

    #[test]
    fn force_recreate_records_then_kills_a_container_that_already_restarted() {
        // statusContext is stale: the container restarted on its own before the CRR.
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        crr.strategy.force_recreate = true;
        let pod = RuntimePod::new(vec![runtime_container("app", "app-2", Running, 1, 2)]);

        let (action, killed) = sync(&crr, &pod, ok);
        assert!(killed.is_empty());
        let states = patched(action);
        assert_eq!(
            states[0].message,
            "forceRecreate: stopping container containerd://app-2"
        );
        write(&mut crr, states);

        let (action, killed) = sync(&crr, &pod, ok);
        assert_eq!(killed, ["app-2"]);
        write(&mut crr, patched(action));
        assert_eq!(
            crr.container_recreate_states,
            [state("app", Recreating, true)]
        );

        // Without force the stale container is taken as the recreated one and not killed.
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        assert!(settle(&mut crr, &pod).is_empty());
        assert_eq!(crr.container_recreate_states[0].phase, Recreating);
    }

    #[test]
    fn force_recreate_lost_is_killed_recognises_the_replacement() {
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        crr.strategy.force_recreate = true;
        crr.container_recreate_states = vec![ContainerRecreateState {
            message: format!("{FORCE_RECREATE_TARGET_PREFIX}containerd://app-2"),
            ..state("app", Pending, false)
        }];
        // app-2 was stopped; the kubelet started app-3; isKilled was never written.
        let pod = RuntimePod::new(vec![
            runtime_container("app", "app-2", Exited, 1, 2),
            runtime_container("app", "app-3", Running, 2, 3),
        ]);
        assert!(settle(&mut crr, &pod).is_empty());
        assert_eq!(
            crr.container_recreate_states,
            [state("app", Recreating, true)]
        );
    }

    // ---- bad input and other paths -----------------------------------------------------

    #[test]
    fn a_container_missing_on_the_node_is_pending_and_stops_the_pass() {
        let mut crr = crr_with_containers(&[
            ("gone", "containerd://gone-1", 0),
            ("app", "containerd://app-1", 0),
        ]);
        crr.container_recreate_states = vec![state("gone", Recreating, true)];
        let pod = RuntimePod::new(vec![runtime_container("app", "app-1", Running, 0, 1)]);
        let states = compute_states(&crr, &pod, now());
        assert_eq!(
            states[0],
            ContainerRecreateState {
                message: NOT_FOUND_ON_NODE.into(),
                ..state("gone", Pending, true)
            }
        );
        write(&mut crr, states);
        let (action, killed) = sync(&crr, &pod, ok);
        assert!(killed.is_empty(), "the pass stops at the missing container");
        assert!(matches!(action, Action::Wait));
    }

    #[test]
    fn restart_policy_never_stays_recreating_without_more_kills() {
        let mut crr = pending_crr(false);
        let (action, killed) = sync(&crr, &before_kill(), ok);
        assert_eq!(killed, ["app-1"]);
        write(&mut crr, patched(action));
        for _ in 0..3 {
            let (action, killed) = sync(&crr, &after_kill(), ok);
            assert!(killed.is_empty());
            assert!(matches!(action, Action::Wait));
        }
        assert_eq!(
            crr.container_recreate_states,
            [state("app", Recreating, true)]
        );
    }

    #[test]
    fn unordered_recreate_kills_one_container_per_sync() {
        let mut crr =
            crr_with_containers(&[("a", "containerd://a-1", 0), ("b", "containerd://b-1", 0)]);
        let mut pod = RuntimePod::new(vec![
            runtime_container("a", "a-1", Running, 0, 1),
            runtime_container("b", "b-1", Running, 0, 2),
        ]);
        let (action, killed) = sync(&crr, &pod, ok);
        assert!(killed.is_empty());
        write(&mut crr, patched(action));
        let (action, killed) = sync(&crr, &pod, ok);
        assert_eq!(killed, ["a-1"]);
        write(&mut crr, patched(action));
        // a is restarting (exited); not ordered, so b is killed on the next sync.
        pod = RuntimePod::new(vec![
            runtime_container("a", "a-1", Exited, 0, 1),
            runtime_container("b", "b-1", Running, 0, 2),
        ]);
        let (action, killed) = sync(&crr, &pod, ok);
        assert_eq!(killed, ["b-1"]);
        assert_eq!(
            patched(action),
            [state("a", Recreating, true), state("b", Recreating, true)]
        );
    }

    #[test]
    fn ordered_recreate_waits_for_the_previous_container() {
        let mut crr =
            crr_with_containers(&[("a", "containerd://a-1", 0), ("b", "containerd://b-1", 0)]);
        crr.strategy.ordered_recreate = true;
        crr.container_recreate_states =
            vec![state("a", Recreating, true), state("b", Pending, false)];
        let pod = RuntimePod::new(vec![
            runtime_container("a", "a-2", Running, 1, 3),
            runtime_container("b", "b-1", Running, 0, 2),
        ]);
        let (action, killed) = sync(&crr, &pod, ok);
        assert!(killed.is_empty());
        assert!(matches!(action, Action::Wait));
        // Once a succeeded, b goes.
        ready(&mut crr, "a", "a-2");
        let states = compute_states(&crr, &pod, now());
        write(&mut crr, states);
        let (_, killed) = sync(&crr, &pod, ok);
        assert_eq!(killed, ["b-1"]);
    }

    #[test]
    fn a_failed_kill_with_policy_fail_writes_failed_then_completes() {
        let mut crr =
            crr_with_containers(&[("a", "containerd://a-1", 0), ("b", "containerd://b-1", 0)]);
        crr.container_recreate_states =
            vec![state("a", Pending, false), state("b", Pending, false)];
        let pod = RuntimePod::new(vec![
            runtime_container("a", "a-1", Running, 0, 1),
            runtime_container("b", "b-1", Running, 0, 2),
        ]);
        let fail = |_: &KillTarget| Err("rpc error: code = Unknown desc = boom".to_owned());
        let (action, killed) = sync(&crr, &pod, fail);
        assert_eq!(killed, ["a-1"]);
        let states = patched(action);
        assert_eq!(
            states[0],
            ContainerRecreateState {
                message: "kill container error: rpc error: code = Unknown desc = boom".into(),
                ..state("a", Failed, false)
            }
        );
        write(&mut crr, states);
        assert!(matches!(
            sync(&crr, &pod, ok).0,
            Action::Complete { message } if message.is_empty()
        ));
    }

    #[test]
    fn a_failed_kill_with_policy_ignore_goes_on_to_the_next_container() {
        let mut crr =
            crr_with_containers(&[("a", "containerd://a-1", 0), ("b", "containerd://b-1", 0)]);
        crr.strategy.failure_policy = ContainerRecreateRequestFailurePolicy::Ignore;
        crr.container_recreate_states =
            vec![state("a", Pending, false), state("b", Pending, false)];
        let pod = RuntimePod::new(vec![
            runtime_container("a", "a-1", Running, 0, 1),
            runtime_container("b", "b-1", Running, 0, 2),
        ]);
        let fail_a = |target: &KillTarget| {
            if target.name == "a" {
                Err("boom".to_owned())
            } else {
                Ok(())
            }
        };
        let (action, killed) = sync(&crr, &pod, fail_a);
        assert_eq!(killed, ["a-1", "b-1"]);
        let states = patched(action);
        assert_eq!(states[0].phase, Failed);
        assert_eq!(states[1], state("b", Recreating, true));
        // A Failed container counts as completed under Ignore.
        write(
            &mut crr,
            vec![states[0].clone(), state("b", Succeeded, true)],
        );
        assert!(matches!(sync(&crr, &pod, ok).0, Action::Complete { .. }));
    }

    #[test]
    fn terminal_states_are_kept_whatever_the_runtime_says() {
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        crr.container_recreate_states = vec![ContainerRecreateState {
            message: "kill container error: x".into(),
            ..state("app", Failed, false)
        }];
        let states = compute_states(&crr, &RuntimePod::default(), now());
        assert_eq!(states, crr.container_recreate_states);
    }

    #[test]
    fn a_created_container_with_the_context_id_is_still_pending() {
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        let pod = RuntimePod::new(vec![runtime_container("app", "app-1", Created, 0, 1)]);
        let states = patched(sync(&crr, &pod, ok).0);
        write(&mut crr, states);
        assert_eq!(
            crr.container_recreate_states,
            [state("app", Pending, false)]
        );
        assert_eq!(sync(&crr, &pod, ok).1, ["app-1"]);
    }

    #[test]
    fn an_unrecognised_stored_phase_is_rewritten_before_acting() {
        let mut crr = crr_with_containers(&[("app", "containerd://app-1", 0)]);
        crr.container_recreate_states = vec![state("app", Pending, false)];
        crr.states_need_rewrite = true;
        assert!(matches!(
            sync(&crr, &before_kill(), ok).0,
            Action::PatchStates(_)
        ));
    }

    #[test]
    fn empty_containers_complete_at_once() {
        let crr = crr_with_containers(&[]);
        assert!(matches!(
            decide(&crr, &RuntimePod::default(), now()),
            Action::Complete { .. }
        ));
    }
}
