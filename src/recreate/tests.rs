//! Whole syncs against the fake containerd, the CRR's writes applied as the API server would.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tonic::Code;

use super::*;
use crate::api::shared::containerrecreaterequest::ContainerRecreateRequestSyncContainerStatus;
use crate::cri::fake::{KubeletContainer, KubeletPod};
use crate::recreate::state::FORCE_RECREATE_TARGET_PREFIX;
use crate::recreate::testing::{CriWorld, crr_named, timestamp};

use ContainerRecreateRequestPhase::{Pending, Recreating, Succeeded};

const IMAGE: &str = "registry.k8s.io/busybox:1.36";

async fn world() -> (CriWorld, RuntimeSet) {
    let world = CriWorld::start(
        KubeletPod::new("ns", "pod").container(KubeletContainer::new("app", IMAGE)),
    )
    .await;
    let runtimes = RuntimeSet::new(vec![world.cri.clone()]).unwrap();
    (world, runtimes)
}

/// Applies a write the way the API server would.
fn apply(crr: &mut CrrView, write: &Write) {
    match write {
        Write::Phase(phase) => crr.phase = phase.as_str().to_owned(),
        Write::States(states) => crr.container_recreate_states.clone_from(states),
        Write::Complete { message } => {
            crr.phase = "Completed".into();
            crr.completion_time = Some(Timestamp::now());
            assert!(
                message.is_empty(),
                "unexpected completion message {message:?}"
            );
        }
    }
}

/// Syncs and applies writes until a sync writes nothing; returns the last sync.
async fn settle(crr: &mut CrrView, runtimes: &RuntimeSet) -> CrrSync {
    for _ in 0..10 {
        let outcome = sync_picked(crr, runtimes, Timestamp::now()).await.unwrap();
        match &outcome.write {
            Some(write) => apply(crr, write),
            None => return outcome,
        }
        if crr.is_completed() {
            return outcome;
        }
    }
    panic!("the CRR never settled: {crr:?}");
}

fn phases(crr: &CrrView) -> Vec<(ContainerRecreateRequestPhase, bool)> {
    crr.container_recreate_states
        .iter()
        .map(|state| (state.phase, state.is_killed))
        .collect()
}

fn snapshot_ready(crr: &mut CrrView, name: &str, id: &str) {
    crr.container_status_snapshot = vec![ContainerRecreateRequestSyncContainerStatus {
        name: name.into(),
        ready: true,
        restart_count: 1,
        container_id: Some(format!("containerd://{id}")),
    }];
}

#[tokio::test]
async fn a_crr_goes_from_new_to_completed_with_one_kill() {
    let (world, runtimes) = world().await;
    let mut crr = world.crr(&["app"]);
    crr.phase = String::new();

    // First the phase, alone.
    let outcome = sync_picked(&crr, &runtimes, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(outcome.write, Some(Write::Phase(Recreating)));
    apply(&mut crr, outcome.write.as_ref().unwrap());

    // Then the states, alone.
    let outcome = sync_picked(&crr, &runtimes, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        outcome.write,
        Some(Write::States(vec![ContainerRecreateState::new(
            "app", Pending
        )]))
    );
    assert_eq!(world.handle.count("StopContainer"), 0);
    apply(&mut crr, outcome.write.as_ref().unwrap());

    // Then the kill, recorded.
    let outcome = sync_picked(&crr, &runtimes, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(world.handle.count("StopContainer"), 1);
    assert_eq!(outcome.kills.len(), 1);
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(
        outcome.events[0].message,
        "Stopping container app by ContainerRecreateRequest crr"
    );
    apply(&mut crr, outcome.write.as_ref().unwrap());
    assert_eq!(phases(&crr), [(Recreating, true)]);

    // The kubelet restarts it; the manager reports it ready.
    let new_id = world
        .handle
        .restart_container(&world.pod.uid, "app")
        .unwrap();
    let outcome = settle(&mut crr, &runtimes).await;
    assert!(outcome.write.is_none());
    assert_eq!(phases(&crr), [(Recreating, true)]);
    snapshot_ready(&mut crr, "app", &new_id);
    settle(&mut crr, &runtimes).await;
    assert_eq!(phases(&crr), [(Succeeded, true)]);
    assert!(crr.is_completed());
    assert_eq!(world.handle.count("StopContainer"), 1);
}

#[tokio::test]
async fn an_agent_killed_between_the_kill_and_the_write_never_kills_twice() {
    for force_recreate in [false, true] {
        let (world, runtimes) = world().await;
        let mut crr = world.crr(&["app"]);
        crr.strategy.force_recreate = force_recreate;
        let first = sync_picked(&crr, &runtimes, Timestamp::now())
            .await
            .unwrap();
        apply(&mut crr, first.write.as_ref().unwrap());
        assert_eq!(world.handle.count("StopContainer"), 0);
        assert_eq!(crr.container_recreate_states[0].phase, Pending);

        // The kill happens; its write is lost with the agent.
        let lost = sync_picked(&crr, &runtimes, Timestamp::now())
            .await
            .unwrap();
        assert_eq!(world.handle.count("StopContainer"), 1);
        assert!(lost.write.is_some());

        // A new agent starts before and after the kubelet restarts the container.
        settle(&mut crr, &runtimes).await;
        let new_id = world
            .handle
            .restart_container(&world.pod.uid, "app")
            .unwrap();
        settle(&mut crr, &runtimes).await;
        assert_eq!(
            phases(&crr),
            [(Recreating, true)],
            "force: {force_recreate}"
        );
        snapshot_ready(&mut crr, "app", &new_id);
        settle(&mut crr, &runtimes).await;
        assert!(crr.is_completed());
        assert_eq!(
            world.handle.count("StopContainer"),
            1,
            "force: {force_recreate}"
        );
    }
}

#[tokio::test]
async fn force_recreate_records_its_target_before_stopping_it() {
    let (world, runtimes) = world().await;
    let mut crr = world.crr(&["app"]);
    crr.strategy.force_recreate = true;
    let outcome = sync_picked(&crr, &runtimes, Timestamp::now())
        .await
        .unwrap();
    let Some(Write::States(states)) = &outcome.write else {
        panic!("expected states, got {:?}", outcome.write);
    };
    assert_eq!(
        states[0].message,
        format!(
            "{FORCE_RECREATE_TARGET_PREFIX}containerd://{}",
            world.pod.container_id("app").unwrap()
        )
    );
    assert_eq!(world.handle.count("StopContainer"), 0);
}

#[tokio::test]
async fn restart_policy_never_leaves_the_crr_recreating_without_more_kills() {
    let (world, runtimes) = world().await;
    let mut crr = world.crr(&["app"]);
    settle(&mut crr, &runtimes).await;
    settle(&mut crr, &runtimes).await;
    for _ in 0..3 {
        let outcome = sync_picked(&crr, &runtimes, Timestamp::now())
            .await
            .unwrap();
        assert!(outcome.write.is_none());
    }
    assert_eq!(phases(&crr), [(Recreating, true)]);
    assert_eq!(world.handle.count("StopContainer"), 1);
}

#[tokio::test]
async fn min_started_seconds_requeues() {
    let (world, runtimes) = world().await;
    let mut crr = world.crr(&["app"]);
    crr.strategy.min_started_seconds = 15;
    settle(&mut crr, &runtimes).await;
    let outcome = settle(&mut crr, &runtimes).await;
    assert_eq!(outcome.requeue_after, Some(Duration::from_secs(15)));
    assert_eq!(world.handle.count("StopContainer"), 1);
}

#[tokio::test]
async fn an_unknown_runtime_completes_with_kruises_message() {
    let (world, runtimes) = world().await;
    let mut crr = world.crr(&["app"]);
    crr.containers[0]
        .status_context
        .as_mut()
        .unwrap()
        .container_id = "docker://abc".into();
    let outcome = sync_picked(&crr, &runtimes, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        outcome.write,
        Some(Write::Complete {
            message:
                "failed to find runtime service: not found runtime service for docker in daemon"
                    .into()
        })
    );
    assert_eq!(world.handle.count("ListContainers"), 0);
}

#[tokio::test]
async fn an_unknown_container_name_is_pending_not_found_on_node() {
    let (world, runtimes) = world().await;
    let mut crr = world.crr(&["app"]);
    crr.containers[0].name = "ghost".into();
    let outcome = sync_picked(&crr, &runtimes, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        outcome.write,
        Some(Write::States(vec![ContainerRecreateState {
            message: "not found container on Node".into(),
            ..ContainerRecreateState::new("ghost", Pending)
        }]))
    );
    apply(&mut crr, outcome.write.as_ref().unwrap());
    let outcome = sync_picked(&crr, &runtimes, Timestamp::now())
        .await
        .unwrap();
    assert!(outcome.write.is_none());
    assert_eq!(world.handle.count("StopContainer"), 0);
}

#[tokio::test]
async fn a_runtime_read_failure_is_retried_with_kruises_text() {
    let (world, runtimes) = world().await;
    let crr = world.crr(&["app"]);
    world
        .handle
        .fail_next("ListContainers", 1, Code::Unavailable, "runtime down");
    let error = sync_picked(&crr, &runtimes, Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "failed to GetPodStatus ns/pod with uid {}: run ListContainers error: rpc error: code = Unavailable desc = runtime down",
            world.pod.uid
        )
    );
    assert_eq!(error.metric_label(), "pod_status");
}

#[tokio::test]
async fn sync_pod_picks_one_crr_and_marks_the_others_pending() {
    let (world, runtimes) = world().await;
    let mut older = world.crr(&["app"]);
    older.name = "older".into();
    older.uid = "older-uid".into();
    older.phase = String::new();
    older.creation_timestamp = Some(timestamp("2024-01-01T00:00:01Z"));
    let mut newer = older.clone();
    newer.name = "newer".into();
    newer.uid = "newer-uid".into();
    newer.creation_timestamp = Some(timestamp("2024-01-01T00:00:02Z"));

    let mut satisfied = |_: &CrrView| Expectation::Satisfied;
    let sync = sync_pod(
        &[newer, older],
        &runtimes,
        &mut satisfied,
        Timestamp::now(),
        Instant::now(),
    )
    .await
    .unwrap();
    assert_eq!(sync.mark_pending, ["newer"]);
    let (name, outcome) = sync.picked.unwrap();
    assert_eq!(name, "older");
    assert_eq!(outcome.write, Some(Write::Phase(Recreating)));
    assert!(!sync.waiting_for_cache);
}

#[tokio::test]
async fn sync_pod_serves_the_recreating_crr_first_and_stops_only_its_container() {
    let (world, runtimes) = world().await;
    let mut newer = world.crr(&["app"]);
    newer.name = "newer-recreating".into();
    newer.uid = "newer-uid".into();
    newer.creation_timestamp = Some(timestamp("2024-01-01T00:00:05Z"));
    newer.container_recreate_states = vec![ContainerRecreateState::new("app", Pending)];
    let mut older = world.crr(&["app"]);
    older.name = "older-pending".into();
    older.uid = "older-uid".into();
    older.phase = "Pending".into();
    older.creation_timestamp = Some(timestamp("2024-01-01T00:00:01Z"));
    let mut fresh = older.clone();
    fresh.name = "fresh".into();
    fresh.uid = "fresh-uid".into();
    fresh.phase = String::new();

    let mut satisfied = |_: &CrrView| Expectation::Satisfied;
    let sync = sync_pod(
        &[older, fresh, newer],
        &runtimes,
        &mut satisfied,
        Timestamp::now(),
        Instant::now(),
    )
    .await
    .unwrap();
    assert_eq!(sync.mark_pending, ["fresh"]);
    let (name, outcome) = sync.picked.unwrap();
    assert_eq!(name, "newer-recreating");
    // The picked CRR's container was stopped, once, and the read pod is reported.
    assert_eq!(world.handle.count("StopContainer"), 1);
    assert_eq!(outcome.kills.len(), 1);
    assert!(outcome.pod.is_some_and(|pod| pod.newest("app").is_some()));
    assert_eq!(
        outcome.write,
        Some(Write::States(vec![ContainerRecreateState {
            is_killed: true,
            ..ContainerRecreateState::new("app", Recreating)
        }]))
    );
}

#[tokio::test]
async fn sync_pod_with_nothing_eligible_does_nothing() {
    let (_world, runtimes) = world().await;
    let mut done = crr_named("done", "Completed", "2024-01-01T00:00:01Z");
    done.completion_time = Some(timestamp("2024-01-01T00:01:00Z"));
    let mut satisfied = |_: &CrrView| Expectation::Satisfied;
    let sync = sync_pod(
        &[done],
        &runtimes,
        &mut satisfied,
        Timestamp::now(),
        Instant::now(),
    )
    .await
    .unwrap();
    assert!(sync.picked.is_none());
    assert!(sync.mark_pending.is_empty());
}

// ---- unready grace (pure) ------------------------------------------------------------------

#[test]
fn unready_grace_waits_for_the_manager_then_for_the_rest_of_the_period() {
    let now = timestamp("2024-01-01T00:10:00Z");
    let mut crr = crr_named("crr", "Recreating", "2024-01-01T00:00:00Z");
    assert_eq!(unready_gate(&crr, now), UnreadyGate::Proceed);

    crr.strategy.unready_grace_period_seconds = Some(10);
    assert_eq!(unready_gate(&crr, now), UnreadyGate::WaitForManager);

    crr.unready_acquisition = UnreadyAcquisition::AcquiredAt(now - SignedDuration::from_secs(3));
    assert_eq!(
        unready_gate(&crr, now),
        UnreadyGate::RequeueAfter(Duration::from_millis(7_100))
    );

    crr.unready_acquisition = UnreadyAcquisition::AcquiredAt(now - SignedDuration::from_secs(10));
    assert_eq!(unready_gate(&crr, now), UnreadyGate::Proceed);
}

#[tokio::test]
async fn an_unparseable_unready_time_completes_the_crr() {
    let (world, runtimes) = world().await;
    let mut crr = world.crr(&["app"]);
    crr.strategy.unready_grace_period_seconds = Some(10);
    crr.unready_acquisition = UnreadyAcquisition::Unparseable {
        value: "soon".into(),
        error: "parsing time \"soon\" as \"2006-01-02T15:04:05Z07:00\": cannot parse \"soon\" as \"2006\"".into(),
    };
    let outcome = sync_picked(&crr, &runtimes, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        outcome.write,
        Some(Write::Complete {
            message: "failed to parse unready time soon: parsing time \"soon\" as \"2006-01-02T15:04:05Z07:00\": cannot parse \"soon\" as \"2006\"".into()
        })
    );
}
