//! Fault injection on the API server side (issue 8 §1): the real `kruised` binary, real
//! containerd and registries, the kubelet stand-in, and the test API server misbehaving as
//! real ones do: watches dropped every 2 s, re-watches answered 410 Gone, 30 % of requests
//! failing with 500 or 429, a 30 s outage. A mixed workload (NodeImage pulls and CRRs) runs
//! through each fault, and the end state is asserted: every tag Succeeded or Failed with
//! the registry's message, every CRR Completed, every container restarted exactly once
//! (restartCount and Killing events), each tag pulled exactly once, no panic, the agent
//! alive and ready. Faults are aimed at kruised only (by User-Agent), so the kubelet
//! stand-in and the test's own requests stay reliable.
//!
//! Then bad input in bulk: 200 hostile objects next to 10 good ones.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kruised::apiversions::KruiseVersion;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use support::agent_process::{AgentProcess, inject, requests, usage_of};
use support::recreate_harness::{
    Bed, BedOptions, Controller, ManagerVersion, kruised_binary, message, phase, poll, states,
    status_of, unique,
};
use testbed::testenv::TestEnv;

/// kruised's User-Agent prefix (src/agent.rs): faults are aimed at it alone.
const AGENT: &str = "kruised/";
/// Deadline for work to finish once the fault is over (watch back-off after an outage
/// reaches 30 s).
const WORK_DEADLINE: Duration = Duration::from_secs(150);
/// How often end states are polled.
const EVERY: Duration = Duration::from_millis(200);

/// A tag as kruise-manager writes it (§3.3).
fn tag_spec(tag: &str) -> Value {
    json!({
        "tag": tag, "version": 1, "createdAt": "2026-11-25T10:00:00Z",
        "imagePullPolicy": "Always",
        "pullPolicy": {"timeoutSeconds": 120, "backoffLimit": 3, "ttlSecondsAfterFinished": 600},
    })
}

/// One case: a bed (API server, kubelet stand-in, manager stand-in), the kruised binary
/// for its node, and pods to recreate.
struct Case {
    bed: Bed,
    agent: AgentProcess,
    _kubeconfig: tempfile::NamedTempFile,
    pods: Vec<Pod>,
}

impl Case {
    /// A bed whose node runs `pods` pods of one container `app`, an empty NodeImage (the
    /// manager creates it before any job), and a ready agent.
    async fn start(pods: usize) -> Self {
        let bed = Bed::start_opts(BedOptions {
            controller: Controller::External,
            manager: ManagerVersion::Master,
        })
        .await;
        let kubeconfig = tempfile::NamedTempFile::new().unwrap();
        bed.server().write_kubeconfig(kubeconfig.path()).unwrap();
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
            "metadata": {"name": bed.node, "labels": {"kubernetes.io/hostname": bed.node}},
            "spec": {"images": {}},
        }))
        .unwrap();
        nodeimages(&bed)
            .create(&PostParams::default(), &object)
            .await
            .expect("create NodeImage");
        let agent = AgentProcess::start(&kruised_binary(), kubeconfig.path(), &bed.node);
        let names: Vec<String> = (0..pods).map(|_| unique("fault")).collect();
        let pods =
            futures::future::join_all(names.iter().map(|name| bed.running_pod(name, &["app"])))
                .await;
        poll(Duration::from_secs(60), EVERY, "kruised ready", || async {
            agent.ready().then_some(())
        })
        .await;
        Self {
            bed,
            agent,
            _kubeconfig: kubeconfig,
            pods,
        }
    }

    fn server(&self) -> &testbed::apiserver::ApiServer {
        self.bed.server()
    }

    /// Sets the NodeImage's images (a merge patch, as the manager's writes add up).
    async fn set_images(&self, images: Value) {
        nodeimages(&self.bed)
            .patch(
                &self.bed.node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"images": images}})),
            )
            .await
            .expect("patch NodeImage");
    }

    /// Creates a CRR for container `app` of pod `index`, as the webhook completes it.
    async fn recreate(&self, index: usize) -> String {
        self.bed
            .create_crr(&self.pods[index], &["app"], json!({}), &[])
            .await
            .metadata
            .name
            .unwrap()
    }

    /// Submits the whole standard workload: the pulls, then a CRR per pod.
    async fn submit(&self) -> Vec<String> {
        self.set_images(work_images()).await;
        let mut crrs = Vec::new();
        for index in 0..self.pods.len() {
            crrs.push(self.recreate(index).await);
        }
        crrs
    }

    /// The end state of the standard workload: see the module documentation.
    async fn assert_done(&mut self, crrs: &[String]) {
        let env = TestEnv::get();
        let busybox = env.image("test/busybox");
        let pause = env.image("test/pause");
        for (image, tag) in [(&busybox, "1"), (&busybox, "2"), (&pause, "1")] {
            let status = tag_until(&self.bed, image, tag, "Succeeded", |t| {
                t["phase"] == "Succeeded"
            })
            .await;
            assert_eq!(status["progress"], 100, "{status}");
            assert!(
                status["imageID"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(&format!("{image}@sha256:"))),
                "{status}"
            );
        }
        let missing = tag_until(&self.bed, &busybox, "nope", "Failed", |t| {
            t["phase"] == "Failed"
        })
        .await;
        let text = missing["message"].as_str().unwrap();
        assert!(
            text.starts_with(&format!(
                "Failed to pull image reference \"{busybox}:nope\": "
            )) && text.contains("not found"),
            "{text}"
        );
        let status = nodeimage_status(&self.bed).await;
        assert_eq!(
            [&status["desired"], &status["succeeded"], &status["failed"]],
            [&json!(4), &json!(3), &json!(1)],
            "{status}"
        );
        for name in crrs {
            let crr = crr_until(&self.bed, name, "Completed", |crr| {
                phase(crr) == "Completed"
            })
            .await;
            assert_eq!(message(&crr), "", "{name}");
            assert_eq!(
                states(&crr),
                vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})],
                "{name}"
            );
        }
        for pod in &self.pods {
            let name = pod.metadata.name.as_deref().unwrap();
            let uid = pod.metadata.uid.as_deref().unwrap();
            let now = poll(
                WORK_DEADLINE,
                EVERY,
                &format!("{name} restarted"),
                || async {
                    let pod = self.bed.pods.get(name).await.ok()?;
                    (status_of(&pod, "app").restart_count >= 1).then_some(pod)
                },
            )
            .await;
            assert_eq!(
                status_of(&now, "app").restart_count,
                1,
                "{name} restarted exactly once"
            );
            assert_eq!(self.bed.kills(uid, "app").await, 1, "{name}: one Killing");
        }
        assert_eq!(
            self.agent.pull_calls(),
            4,
            "each tag pulled exactly once (three found, one not found)"
        );
        self.assert_healthy().await;
    }

    /// Alive, no panic, ready.
    async fn assert_healthy(&mut self) {
        assert!(self.agent.alive(), "kruised exited");
        self.agent.assert_no_panic();
        poll(Duration::from_secs(60), EVERY, "kruised ready", || async {
            self.agent.ready().then_some(())
        })
        .await;
    }

    /// kruised's requests by (verb, resource), for the report.
    fn report(&self, case: &str) {
        let rows: Vec<String> = usage_of(self.server(), AGENT)
            .iter()
            .map(|row| format!("{} {}: {}", row.verb, row.resource, row.requests))
            .collect();
        eprintln!("[{case}] kruised's API requests: {}", rows.join(", "));
    }
}

fn nodeimages(bed: &Bed) -> Api<DynamicObject> {
    Api::all_with(
        bed.client.clone(),
        &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
    )
}

/// Three tags that exist and one that does not.
fn work_images() -> Value {
    let env = TestEnv::get();
    json!({
        env.image("test/busybox"): {"tags": [tag_spec("1"), tag_spec("2"), tag_spec("nope")]},
        env.image("test/pause"): {"tags": [tag_spec("1")]},
    })
}

async fn nodeimage_status(bed: &Bed) -> Value {
    poll(WORK_DEADLINE, EVERY, "NodeImage readable", || async {
        nodeimages(bed)
            .get(&bed.node)
            .await
            .ok()
            .map(|object| object.data["status"].clone())
    })
    .await
}

fn tag_status(status: &Value, image: &str, tag: &str) -> Value {
    status["imageStatuses"][image]["tags"]
        .as_array()
        .and_then(|tags| tags.iter().find(|t| t["tag"] == tag).cloned())
        .unwrap_or(Value::Null)
}

/// Polls until the tag's status satisfies `done`; the panic shows the whole status.
async fn tag_until(
    bed: &Bed,
    image: &str,
    tag: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let status = nodeimages(bed)
            .get(&bed.node)
            .await
            .map(|object| object.data["status"].clone())
            .unwrap_or(Value::Null);
        let found = tag_status(&status, image, tag);
        if done(&found) {
            return found;
        }
        assert!(
            start.elapsed() < WORK_DEADLINE,
            "timed out waiting for {image}:{tag} {what}; status: {status}"
        );
        tokio::time::sleep(EVERY).await;
    }
}

/// Polls until `check` holds for the CRR; the panic shows it.
async fn crr_until(
    bed: &Bed,
    name: &str,
    what: &str,
    check: impl Fn(&DynamicObject) -> bool,
) -> DynamicObject {
    let start = Instant::now();
    loop {
        let crr = bed.crrs.get(name).await.ok();
        if let Some(crr) = crr.as_ref().filter(|crr| check(crr)) {
            return crr.clone();
        }
        assert!(
            start.elapsed() < WORK_DEADLINE,
            "timed out waiting for CRR {name} {what}: {}",
            serde_json::to_string_pretty(&crr).unwrap()
        );
        tokio::time::sleep(EVERY).await;
    }
}

/// kruised's request count per resource for `verb`.
fn per_resource(case: &Case, verb: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for row in usage_of(case.server(), AGENT) {
        if row.verb == verb {
            *counts.entry(row.resource).or_default() += row.requests;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_dropped_every_2s_for_30s_resume_from_their_resource_version_without_relisting_and_lose_no_work()
 {
    let mut case = Case::start(3).await;
    let faults = case.server().faults().clone();
    let lists = requests(case.server(), AGENT, "list");
    let watches = requests(case.server(), AGENT, "watch");
    inject(
        case.server(),
        "/faults/drop-watches",
        json!({"everySeconds": 2, "durationSeconds": 30}),
    )
    .await;
    let drops_reach = |n: u64| {
        let faults = faults.clone();
        async move {
            poll(
                Duration::from_secs(90),
                EVERY,
                &format!("{n} watch drops"),
                || async { (faults.watch_drops_done() >= n).then_some(()) },
            )
            .await
        }
    };
    // Work arrives in two waves, each between drops.
    drops_reach(2).await;
    let env = TestEnv::get();
    case.set_images(
        json!({env.image("test/busybox"): {"tags": [tag_spec("1"), tag_spec("nope")]}}),
    )
    .await;
    let mut crrs = vec![case.recreate(0).await, case.recreate(1).await];
    drops_reach(7).await;
    case.set_images(work_images()).await;
    crrs.push(case.recreate(2).await);
    // The whole 30 s: 15 drops, at 0, 2, …, 28 s.
    drops_reach(15).await;
    case.assert_done(&crrs).await;
    case.report("drop watches");
    // Each drop ends every watch the agent holds, and each is taken up again.
    let rewatches = requests(case.server(), AGENT, "watch") - watches;
    assert!(
        rewatches >= 15 * watches,
        "{watches} watches re-watched after each of 15 drops: {rewatches} re-watches"
    );
    assert_eq!(
        requests(case.server(), AGENT, "list") - lists,
        0,
        "watches resumed from their resourceVersion: no relist"
    );
    case.bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn re_watches_answered_410_gone_relist_once_per_watch_and_lose_no_work() {
    let mut case = Case::start(3).await;
    let faults = case.server().faults().clone();
    // One expiry per watch kruised holds: each watcher's next re-watch gets 410.
    let watchers = per_resource(&case, "watch");
    assert!(!watchers.is_empty());
    let expected: u64 = watchers.values().sum();
    for (resource, count) in &watchers {
        inject(
            case.server(),
            "/faults/expire-watches",
            json!({"resource": resource, "userAgent": AGENT, "count": count}),
        )
        .await;
    }
    let lists = per_resource(&case, "list");
    inject(case.server(), "/faults/drop-watches", json!({})).await;
    // Work written while the watches are gone: only the relists can bring it.
    let crrs = case.submit().await;
    poll(
        Duration::from_secs(60),
        EVERY,
        "every re-watch answered 410",
        || async { (faults.expired_watches() >= expected).then_some(()) },
    )
    .await;
    case.assert_done(&crrs).await;
    case.report("410 Gone");
    assert_eq!(faults.expired_watches(), expected);
    let relists = per_resource(&case, "list");
    for (resource, count) in &watchers {
        let before = lists.get(resource).copied().unwrap_or(0);
        let after = relists.get(resource).copied().unwrap_or(0);
        assert_eq!(
            after - before,
            *count,
            "{resource}: one relist per expired watch, no relist storm"
        );
    }
    case.bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_percent_of_requests_failing_with_500_or_429_for_20s_lose_no_status_write_and_repeat_nothing()
 {
    let mut case = Case::start(3).await;
    inject(
        case.server(),
        "/faults/fail",
        json!({"userAgent": AGENT, "code": 500, "percent": 15, "durationSeconds": 20}),
    )
    .await;
    // Of the requests the first rule lets through, 18 % more: 30 % in all.
    inject(
        case.server(),
        "/faults/fail",
        json!({"userAgent": AGENT, "code": 429, "percent": 18, "retryAfterSeconds": 1, "durationSeconds": 20}),
    )
    .await;
    let crrs = case.submit().await;
    case.assert_done(&crrs).await;
    case.report("30 % 500/429");
    case.bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_30s_outage_in_the_middle_of_work_is_ridden_out_and_nothing_is_done_twice() {
    let mut case = Case::start(3).await;
    let crrs = case.submit().await;
    // In the middle: the agent has taken up the work.
    crr_until(&case.bed, &crrs[0], "taken up", |crr| {
        !phase(crr).is_empty()
    })
    .await;
    let started = Instant::now();
    inject(case.server(), "/faults/unavailable", json!({"seconds": 30})).await;
    // Not asserted (how fast readiness notices is not the point), but reported.
    let mut unready_during_outage = false;
    while started.elapsed() < Duration::from_secs(28) && !unready_during_outage {
        unready_during_outage = !case.agent.ready();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("[outage] kruised reported not ready during the outage: {unready_during_outage}");
    case.assert_done(&crrs).await;
    case.report("outage");
    case.bed.finish().await;
}
