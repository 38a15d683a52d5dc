//! Workers against the fake containerd.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ExecAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::cri::fake::{ExecScript, KubeletContainer, KubeletPod};
use crate::podprobe::ProbeResult;
use crate::podprobe::testing::World;

async fn world() -> World {
    let world = World::start(
        KubeletPod::new("ns", "pod").container(KubeletContainer::new("app", "busybox:1")),
    )
    .await;
    backdate(&world, &world.id("app"));
    world
}

/// Moves the container's start a minute back, past any initial delay.
fn backdate(world: &World, id: &str) {
    let minute_ago = Timestamp::now().as_nanosecond() - 60_000_000_000;
    world
        .handle
        .set_container_started_at(id, i64::try_from(minute_ago).unwrap())
        .unwrap();
}

fn key(world: &World, probe: &str) -> ProbeKey {
    ProbeKey {
        pod_namespace: "ns".into(),
        pod_name: "pod".into(),
        pod_uid: world.pod.uid.clone(),
        pod_ip: "127.0.0.1".into(),
        container_name: "app".into(),
        probe_name: probe.into(),
    }
}

fn exec(command: &str) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![command.into()]),
        }),
        ..Probe::default()
    }
}

fn context(world: &World, results: &Arc<ResultCache>) -> WorkerContext {
    WorkerContext {
        cri: world.cri.clone(),
        results: Arc::clone(results),
        metrics: None,
        agent_started: Instant::now(),
    }
}

fn only(results: &ResultCache) -> ProbeResult {
    let all = results.results();
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_first_tick_records_unknown_then_the_probe_result() {
    let world = world().await;
    let id = world.id("app");
    world
        .handle
        .script_exec(&id, ["check"], ExecScript::exit(0).with_stdout("ok"));
    let results = Arc::new(ResultCache::new());
    let context = context(&world, &results);
    let mut worker = Worker::new(key(&world, "ppm#a"), exec("check"), Arc::clone(&results));
    worker.probe_once(&context).await;
    let events: Vec<ProbeState> = results.take_events().iter().map(|r| r.state).collect();
    assert_eq!(events, [ProbeState::Unknown, ProbeState::Succeeded]);
    let result = only(&results);
    assert_eq!(
        (result.state, result.message.as_str()),
        (ProbeState::Succeeded, "ok")
    );
    assert_eq!(result.container_id, id);
}

#[tokio::test]
async fn a_result_is_recorded_only_after_its_threshold_in_a_row() {
    let world = world().await;
    let id = world.id("app");
    world
        .handle
        .script_exec(&id, ["check"], ExecScript::exit(1).with_stderr("down"));
    let results = Arc::new(ResultCache::new());
    let context = context(&world, &results);
    let mut probe = exec("check");
    probe.failure_threshold = Some(3);
    probe.success_threshold = Some(2);
    let mut worker = Worker::new(key(&world, "ppm#a"), probe, Arc::clone(&results));
    for _ in 0..2 {
        worker.probe_once(&context).await;
        assert_eq!(only(&results).state, ProbeState::Unknown);
    }
    worker.probe_once(&context).await;
    assert_eq!(only(&results).state, ProbeState::Failed);
    assert_eq!(only(&results).message, "down");

    // Flapping: one success is below the success threshold, and breaks the failure run.
    world
        .handle
        .script_exec(&id, ["check"], ExecScript::exit(0));
    worker.probe_once(&context).await;
    assert_eq!(only(&results).state, ProbeState::Failed);
    world
        .handle
        .script_exec(&id, ["check"], ExecScript::exit(1).with_stderr("down"));
    worker.probe_once(&context).await;
    world
        .handle
        .script_exec(&id, ["check"], ExecScript::exit(0));
    worker.probe_once(&context).await;
    assert_eq!(only(&results).state, ProbeState::Failed);
    worker.probe_once(&context).await;
    assert_eq!(only(&results).state, ProbeState::Succeeded);
}

#[tokio::test]
async fn a_replaced_container_resets_the_result_to_unknown() {
    let world = world().await;
    let results = Arc::new(ResultCache::new());
    let context = context(&world, &results);
    let mut worker = Worker::new(key(&world, "ppm#a"), exec("check"), Arc::clone(&results));
    worker.probe_once(&context).await;
    assert_eq!(only(&results).state, ProbeState::Succeeded);

    let new_id = world
        .handle
        .restart_container(&world.pod.uid, "app")
        .unwrap();
    // The new container has just started: within the initial delay, only Unknown is recorded.
    worker.probe_once(&context).await;
    let result = only(&results);
    assert_eq!(
        result.container_id, new_id,
        "the old container's result is gone"
    );
    assert_eq!(
        (result.state, result.message.as_str()),
        (ProbeState::Unknown, "")
    );

    backdate(&world, &new_id);
    worker.probe_once(&context).await;
    assert_eq!(only(&results).state, ProbeState::Succeeded);
}

#[tokio::test]
async fn a_container_that_is_not_running_fails_with_kruises_message() {
    let world = world().await;
    let id = world.id("app");
    world.handle.exit_container(&id, 1).unwrap();
    let results = Arc::new(ResultCache::new());
    let context = context(&world, &results);
    let mut worker = Worker::new(key(&world, "ppm#a"), exec("check"), Arc::clone(&results));
    world.handle.clear_calls();
    worker.probe_once(&context).await;
    let result = only(&results);
    assert_eq!(
        (result.state, result.message.as_str()),
        (ProbeState::Failed, "Container(app) is Non-running")
    );
    assert_eq!(
        world.handle.count("ExecSync"),
        0,
        "no probe into a stopped container"
    );
}

#[tokio::test]
async fn nothing_runs_within_the_initial_delay() {
    let world = world().await;
    let mut probe = exec("check");
    probe.initial_delay_seconds = Some(3600);
    let results = Arc::new(ResultCache::new());
    let context = context(&world, &results);
    let mut worker = Worker::new(key(&world, "ppm#a"), probe, Arc::clone(&results));
    world.handle.clear_calls();
    worker.probe_once(&context).await;
    assert_eq!(only(&results).state, ProbeState::Unknown);
    assert_eq!(world.handle.count("ExecSync"), 0);
}

#[tokio::test]
async fn two_probes_on_one_container_do_not_overwrite_each_other() {
    let world = world().await;
    let id = world.id("app");
    world
        .handle
        .script_exec(&id, ["bad"], ExecScript::exit(2).with_stderr("bad"));
    let results = Arc::new(ResultCache::new());
    let context = context(&world, &results);
    let mut good = Worker::new(key(&world, "ppm#good"), exec("good"), Arc::clone(&results));
    let mut bad = Worker::new(key(&world, "ppm#bad"), exec("bad"), Arc::clone(&results));
    for _ in 0..2 {
        good.probe_once(&context).await;
        bad.probe_once(&context).await;
    }
    let mut all = results.results();
    all.sort_by(|a, b| a.key.probe_name.cmp(&b.key.probe_name));
    let states: Vec<(&str, ProbeState)> = all
        .iter()
        .map(|result| (result.key.probe_name.as_str(), result.state))
        .collect();
    assert_eq!(
        states,
        [
            ("ppm#bad", ProbeState::Failed),
            ("ppm#good", ProbeState::Succeeded)
        ]
    );
    drop(good);
    assert_eq!(
        only(&results).key.probe_name,
        "ppm#bad",
        "a stopped worker's result leaves"
    );
}

#[tokio::test]
async fn a_changed_handler_resets_to_unknown_but_a_changed_period_does_not() {
    let world = world().await;
    let results = Arc::new(ResultCache::new());
    let context = context(&world, &results);
    let mut worker = Worker::new(key(&world, "ppm#a"), exec("check"), Arc::clone(&results));
    worker.probe_once(&context).await;
    let mut slower = exec("check");
    slower.period_seconds = Some(30);
    worker.update_spec(slower, Timestamp::now());
    assert_eq!(only(&results).state, ProbeState::Succeeded);
    assert_eq!(worker.period(), Duration::from_secs(30));
    let tcp = Probe {
        tcp_socket: Some(TCPSocketAction {
            host: None,
            port: IntOrString::Int(1),
        }),
        ..Probe::default()
    };
    worker.update_spec(tcp, Timestamp::now());
    assert_eq!(only(&results).state, ProbeState::Unknown);
}

#[tokio::test]
async fn a_missing_container_records_nothing() {
    let world = world().await;
    let results = Arc::new(ResultCache::new());
    let context = context(&world, &results);
    let mut missing = key(&world, "ppm#a");
    missing.container_name = "sidecar".into();
    let mut worker = Worker::new(missing, exec("check"), Arc::clone(&results));
    worker.probe_once(&context).await;
    assert!(results.results().is_empty());
}

#[tokio::test]
async fn the_run_loop_probes_on_its_period_and_stops_with_its_spec_sender() {
    let world = world().await;
    let results = Arc::new(ResultCache::new());
    let context = Arc::new(WorkerContext {
        agent_started: Instant::now() - Duration::from_secs(3600),
        ..context(&world, &results)
    });
    let worker = Worker::new(key(&world, "ppm#a"), exec("check"), Arc::clone(&results));
    let (sender, receiver) = watch::channel(exec("check"));
    let task = tokio::spawn(run(worker, receiver, context));
    let deadline = Instant::now() + Duration::from_secs(10);
    while world.handle.count("ExecSync") < 2 {
        assert!(Instant::now() < deadline, "two probe runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(only(&results).state, ProbeState::Succeeded);
    drop(sender);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the worker stops")
        .unwrap();
    assert!(results.results().is_empty());
}
