//! ImagePullJob and ImageListPullJob end to end: the manager, the test API server, and
//! in-process agents for several node names pulling through the one real containerd
//! from the real registries of `scripts/testenv`.

mod manager_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use manager_support::*;
use serde_json::{Value, json};
use testbed::testenv::TestEnv;

/// An API server, a manager, and Ready nodes with agents.
struct Bed {
    _server: testbed::apiserver::ApiServer,
    client: kube::Client,
    manager: Option<Manager>,
    agents: Vec<Agent>,
}

impl Bed {
    /// `nodes`: (name, labels, with an agent).
    async fn start(nodes: &[(&str, Value, bool)]) -> Self {
        let server = server().await;
        let client = server.client();
        let mut bed = Self {
            manager: Some(Manager::start(client.clone(), settings())),
            _server: server,
            client,
            agents: Vec::new(),
        };
        for (name, labels, agent) in nodes {
            bed.add_node(name, labels.clone(), *agent).await;
        }
        bed
    }

    async fn add_node(&mut self, name: &str, labels: Value, agent: bool) {
        if agent {
            self.agents
                .push(Agent::start(self.client.clone(), name).await);
        }
        ready_node(&self.client, name, labels).await;
        let images = node_images(&self.client);
        eventually(&format!("{name}'s NodeImage"), || async {
            images.get(name).await.ok()
        })
        .await;
    }

    async fn job(&self, name: &str, spec: Value) -> DynamicObject {
        create(
            &jobs(&self.client),
            json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
                   "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}),
        )
        .await
    }

    async fn job_status_until(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let api = jobs(&self.client);
        eventually(&format!("job {name}: {what}"), || async {
            let status = api.get(name).await.ok()?.data["status"].clone();
            done(&status).then_some(status)
        })
        .await
    }

    /// The job's tag entry in a NodeImage, if any.
    async fn entry(&self, node: &str, key: &str, uid: &str) -> Option<Value> {
        let object = node_images(&self.client).get(node).await.ok()?;
        object.data["spec"]["images"][key]["tags"]
            .as_array()?
            .iter()
            .find(|t| {
                t["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
            })
            .cloned()
    }
}

fn completed(status: &Value) -> bool {
    status["completionTime"].is_string()
}

/// The NodeImage key of a test image: its familiar name without the tag.
fn key(image: &str) -> String {
    image.rsplit_once(':').unwrap().0.to_owned()
}

/// Records every NodeImage version the API server sends, in order.
fn record_history(client: &kube::Client) -> Arc<Mutex<Vec<DynamicObject>>> {
    let history = Arc::new(Mutex::new(Vec::new()));
    let sink = history.clone();
    let stream = watcher(node_images(client), watcher::Config::default()).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(object)) = stream.next().await {
            sink.lock().unwrap().push(object);
        }
    });
    history
}

/// Whether the job's tag is written and not finished on a NodeImage version.
fn active_on(object: &DynamicObject, key: &str, uid: &str) -> bool {
    let Some(tag) = object.data["spec"]["images"][key]["tags"]
        .as_array()
        .and_then(|tags| {
            tags.iter().find(|t| {
                t["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
            })
        })
    else {
        return false;
    };
    let finished = object.data["status"]["imageStatuses"][key]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| {
            s["tag"] == tag["tag"]
                && s["version"] == tag["version"]
                && (s["phase"] == "Succeeded" || s["phase"] == "Failed")
        });
    !finished
}

#[tokio::test]
async fn a_label_selector_job_pulls_on_the_matching_nodes_only() {
    let bed = Bed::start(&[
        ("n1", json!({"pool": "a"}), true),
        ("n2", json!({"pool": "a"}), true),
        ("n3", json!({"pool": "b"}), true),
    ])
    .await;
    let image = TestEnv::get().image("test/busybox:1");
    let job = bed
        .job(
            "by-label",
            json!({"image": image, "parallelism": 2, "imagePullPolicy": "Always",
                   "selector": {"matchLabels": {"pool": "a"}}, "completionPolicy": {}}),
        )
        .await;
    let uid = job.metadata.uid.unwrap();
    let status = bed
        .job_status_until("by-label", "completion", completed)
        .await;
    assert_eq!(status["desired"], 2);
    assert_eq!(status["succeeded"], 2);
    assert_eq!(status["failed"], 0);
    assert_eq!(status["message"], "job has completed");
    assert!(status["startTime"].is_string());
    for node in ["n1", "n2"] {
        let entry = bed
            .entry(node, &key(&image), &uid)
            .await
            .expect("tag written");
        assert_eq!(entry["version"], 0);
        assert_eq!(entry["imagePullPolicy"], "Always");
        assert!(entry["createdAt"].is_string());
        let owner = &entry["ownerReferences"][0];
        assert_eq!(
            (
                owner["apiVersion"].as_str(),
                owner["kind"].as_str(),
                owner["name"].as_str()
            ),
            (
                Some("apps.kruise.io/v1beta1"),
                Some("ImagePullJob"),
                Some("by-label")
            )
        );
        let policy = &entry["pullPolicy"];
        assert_eq!(
            (
                policy["timeoutSeconds"].as_i64(),
                policy["backoffLimit"].as_i64()
            ),
            (Some(600), Some(3))
        );
        // Always: timeout × backoff + 300 + up to 300.
        let ttl = policy["ttlSecondsAfterFinished"].as_i64().unwrap();
        assert!((2100..2400).contains(&ttl), "{ttl}");
    }
    assert!(bed.entry("n3", &key(&image), &uid).await.is_none());
    // Finished: the protection finalizer is gone.
    eventually("the protection finalizer to be released", || async {
        let object = jobs(&bed.client).get("by-label").await.ok()?;
        object
            .metadata
            .finalizers
            .unwrap_or_default()
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn parallelism_one_never_has_two_nodes_pulling_at_once() {
    let bed = Bed::start(&[
        ("n1", json!({}), true),
        ("n2", json!({}), true),
        ("n3", json!({}), true),
    ])
    .await;
    let history = record_history(&bed.client);
    let image = TestEnv::get().image("test/busybox:2");
    let job = bed
        .job(
            "one-at-a-time",
            json!({"image": image, "parallelism": 1, "imagePullPolicy": "Always", "completionPolicy": {}}),
        )
        .await;
    let uid = job.metadata.uid.unwrap();
    let status = bed
        .job_status_until("one-at-a-time", "completion", completed)
        .await;
    assert_eq!(
        (status["desired"].as_i64(), status["succeeded"].as_i64()),
        (Some(3), Some(3))
    );
    let history = history.lock().unwrap().clone();
    let mut latest: BTreeMap<String, DynamicObject> = BTreeMap::new();
    let mut most = 0;
    for object in history {
        latest.insert(object.metadata.name.clone().unwrap(), object);
        let active = latest
            .values()
            .filter(|o| active_on(o, &key(&image), &uid))
            .count();
        most = most.max(active);
    }
    assert_eq!(most, 1, "at most one node pulls at a time, and one did");
}

#[tokio::test]
async fn a_pod_selector_job_pulls_on_the_nodes_of_the_matching_pods() {
    let bed = Bed::start(&[
        ("n1", json!({}), true),
        ("n2", json!({}), true),
        ("n3", json!({}), true),
    ])
    .await;
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), NAMESPACE);
    for (name, node, app) in [("web-1", "n2", "web"), ("db-1", "n3", "db")] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let image = TestEnv::get().image("test/busybox:1");
    let job = bed
        .job(
            "by-pod",
            json!({"image": image, "parallelism": 3, "podSelector": {"matchLabels": {"app": "web"}},
                   "completionPolicy": {}}),
        )
        .await;
    let uid = job.metadata.uid.unwrap();
    let status = bed
        .job_status_until("by-pod", "completion", completed)
        .await;
    assert_eq!(
        (status["desired"].as_i64(), status["succeeded"].as_i64()),
        (Some(1), Some(1))
    );
    assert!(bed.entry("n2", &key(&image), &uid).await.is_some());
    assert!(bed.entry("n1", &key(&image), &uid).await.is_none());
    assert!(bed.entry("n3", &key(&image), &uid).await.is_none());
}

#[tokio::test]
async fn a_selector_violation_is_reported_in_the_status_message() {
    let bed = Bed::start(&[("n1", json!({}), false)]).await;
    bed.job(
        "both",
        json!({"image": "nginx:1", "selector": {"names": ["n1"]},
               "podSelector": {"matchLabels": {"app": "web"}}, "completionPolicy": {}}),
    )
    .await;
    let status = bed
        .job_status_until("both", "the rejection", |s| s["message"].is_string())
        .await;
    assert_eq!(
        status["message"],
        "invalid ImagePullJob: selector and podSelector are mutually exclusive"
    );
    let object = node_images(&bed.client).get("n1").await.unwrap();
    assert!(
        object.data["spec"]["images"]
            .as_object()
            .is_none_or(|m| m.is_empty())
    );
}

#[tokio::test]
async fn a_never_job_serves_a_node_that_joins_later_and_never_completes() {
    let mut bed = Bed::start(&[
        ("n1", json!({"pool": "a"}), true),
        ("n2", json!({"pool": "a"}), true),
    ])
    .await;
    let image = TestEnv::get().image("test/busybox:1");
    let job = bed
        .job(
            "forever",
            json!({"image": image, "parallelism": 5, "selector": {"matchLabels": {"pool": "a"}},
                   "completionPolicy": {"type": "Never"}}),
        )
        .await;
    let uid = job.metadata.uid.unwrap();
    bed.job_status_until("forever", "both nodes", |s| s["succeeded"] == 2)
        .await;
    bed.add_node("n3", json!({"pool": "a"}), true).await;
    let status = bed
        .job_status_until("forever", "the new node too", |s| s["succeeded"] == 3)
        .await;
    assert_eq!(status["desired"], 3);
    assert!(status["completionTime"].is_null());
    assert_eq!(status["message"], "job is running, progress 100.0%");
    let entry = bed.entry("n3", &key(&image), &uid).await.unwrap();
    // Never: a day ± 10 minutes, deadline at least 1800 s.
    let ttl = entry["pullPolicy"]["ttlSecondsAfterFinished"]
        .as_i64()
        .unwrap();
    assert!((86400 - 600..86400 + 600).contains(&ttl), "{ttl}");
    assert_eq!(entry["pullPolicy"]["activeDeadlineSeconds"], 1800);
}

#[tokio::test]
async fn an_always_job_past_its_deadline_fails_its_nodes_and_is_deleted_after_its_ttl() {
    let bed = Bed::start(&[("n1", json!({}), false), ("n2", json!({}), false)]).await;
    // Paused: nothing is ever written, so the deadline decides.
    bed.job(
        "late",
        json!({"image": "nginx:1", "parallelism": 0, "pullPolicy": {"timeoutSeconds": 2},
               "completionPolicy": {"activeDeadlineSeconds": 2, "ttlSecondsAfterFinished": 2}}),
    )
    .await;
    let status = bed
        .job_status_until("late", "the deadline", completed)
        .await;
    assert_eq!(status["message"], "job exceeds activeDeadlineSeconds");
    assert_eq!(status["failed"], 2);
    assert_eq!(status["failedNodes"], json!(["n1", "n2"]));
    let api = jobs(&bed.client);
    eventually("the TTL deletion", || async {
        api.get("late").await.is_err().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_private_image_is_pulled_with_a_secret_copied_to_the_config_namespace() {
    let bed = Bed::start(&[("n1", json!({}), true)]).await;
    let env = TestEnv::get();
    let registry = env.registry_auth();
    let auth = json!({"auths": {registry: {"username": env.var("REGISTRY_USER"),
                                            "password": env.var("REGISTRY_PASSWORD")}}});
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "regcred", "namespace": NAMESPACE},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64(&auth.to_string())}
    }))
    .unwrap();
    Api::<Secret>::namespaced(bed.client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let image = format!("{registry}/test/busybox:1");
    let job = bed
        .job(
            "private",
            json!({"image": image, "pullSecrets": ["regcred"], "imagePullPolicy": "Always",
                   "completionPolicy": {}}),
        )
        .await;
    let uid = job.metadata.uid.unwrap();
    let copies: Api<Secret> = Api::namespaced(bed.client.clone(), CONFIG_NAMESPACE);
    let copy = eventually("the copy", || async {
        copies
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let annotations = copy.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations["imagepulljobs.kruise.io/source-key"],
        "default/regcred"
    );
    assert_eq!(
        annotations["imagepulljobs.kruise.io/references"],
        "default/private"
    );
    assert_eq!(annotations["imagepulljobs.kruise.io/mode"], "batch");
    assert_eq!(
        copy.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let name = copy.metadata.name.unwrap();
    assert!(
        name.starts_with("regcred-") && name.len() == "regcred-".len() + 6,
        "{name}"
    );
    let status = bed
        .job_status_until("private", "completion", completed)
        .await;
    assert_eq!(status["succeeded"], 1, "{status}");
    let object = node_images(&bed.client).get("n1").await.unwrap();
    assert_eq!(
        object.data["spec"]["images"][key(&image)]["pullSecrets"],
        json!([{"namespace": CONFIG_NAMESPACE, "name": name, "mode": "batch"}])
    );
    assert!(bed.entry("n1", &key(&image), &uid).await.is_some());
    // No job references the copy once the job finished.
    eventually("the copy to be collected", || async {
        copies.get(&name).await.is_err().then_some(())
    })
    .await;
}

fn base64(text: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn a_job_deleted_mid_way_leaves_no_tags_behind() {
    // n2 and n3 have no agent: once written, they stay active, so the job is mid-way.
    let bed = Bed::start(&[
        ("n1", json!({}), true),
        ("n2", json!({}), false),
        ("n3", json!({}), false),
    ])
    .await;
    let image = TestEnv::get().image("test/busybox:1");
    let job = bed
        .job(
            "doomed",
            json!({"image": image, "parallelism": 1, "completionPolicy": {}}),
        )
        .await;
    let uid = job.metadata.uid.unwrap();
    bed.job_status_until("doomed", "one node done and the next written", |s| {
        s["succeeded"] == 1 && s["active"] == 1
    })
    .await;
    jobs(&bed.client)
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the job to be gone (finalizer released)", || async {
        jobs(&bed.client).get("doomed").await.is_err().then_some(())
    })
    .await;
    for node in ["n1", "n2", "n3"] {
        eventually(&format!("{node}'s tags to be collected"), || async {
            bed.entry(node, &key(&image), &uid)
                .await
                .is_none()
                .then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn two_jobs_for_the_same_image_share_the_tag_without_overwriting_each_other() {
    let bed = Bed::start(&[("n1", json!({}), true), ("n2", json!({}), true)]).await;
    let image = TestEnv::get().image("test/busybox:1");
    let a = bed
        .job(
            "first",
            json!({"image": image, "parallelism": 2, "completionPolicy": {}}),
        )
        .await;
    let b = bed
        .job(
            "second",
            json!({"image": image, "parallelism": 2, "completionPolicy": {}}),
        )
        .await;
    for name in ["first", "second"] {
        let status = bed.job_status_until(name, "completion", completed).await;
        assert_eq!(status["succeeded"], 2, "{name}: {status}");
    }
    for node in ["n1", "n2"] {
        let entry = bed
            .entry(node, &key(&image), a.metadata.uid.as_deref().unwrap())
            .await
            .unwrap();
        let owners: BTreeSet<&str> = entry["ownerReferences"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["uid"].as_str())
            .collect();
        assert_eq!(
            owners,
            BTreeSet::from([
                a.metadata.uid.as_deref().unwrap(),
                b.metadata.uid.as_deref().unwrap()
            ])
        );
        // The second owner started one more round.
        assert_eq!(entry["version"], 1);
    }
}

#[tokio::test]
async fn an_image_list_pull_job_runs_one_job_per_image_and_aggregates_them() {
    let bed = Bed::start(&[("n1", json!({}), true), ("n2", json!({}), true)]).await;
    let env = TestEnv::get();
    let images = [
        env.image("test/busybox:1"),
        env.image("test/busybox:2"),
        env.image("test/pause:1"),
    ];
    let list = create(
        &list_jobs(&bed.client),
        json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImageListPullJob",
               "metadata": {"name": "three", "namespace": NAMESPACE},
               "spec": {"images": images, "parallelism": 2, "completionPolicy": {}}}),
    )
    .await;
    let api = list_jobs(&bed.client);
    let status = eventually("the list to complete", || async {
        let status = api.get("three").await.ok()?.data["status"].clone();
        completed(&status).then_some(status)
    })
    .await;
    assert_eq!(
        (
            status["desired"].as_i64(),
            status["completed"].as_i64(),
            status["succeeded"].as_i64()
        ),
        (Some(3), Some(3), Some(3))
    );
    let children = jobs(&bed.client)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let mut pulled: Vec<String> =
        children
            .iter()
            .filter(|j| {
                j.metadata.owner_references.iter().flatten().any(|o| {
                    Some(&o.uid) == list.metadata.uid.as_ref() && o.controller == Some(true)
                })
            })
            .map(|j| {
                assert!(j.metadata.name.as_deref().unwrap().starts_with("three-"));
                assert!(
                    j.metadata
                        .labels
                        .as_ref()
                        .unwrap()
                        .contains_key("controller-revision-hash")
                );
                j.data["spec"]["image"].as_str().unwrap().to_owned()
            })
            .collect();
    pulled.sort();
    let mut expected = images.to_vec();
    expected.sort();
    assert_eq!(pulled, expected);
}

#[tokio::test]
async fn after_a_leader_failover_mid_job_the_job_completes_and_no_entry_is_written_twice() {
    let server = server().await;
    let client = server.client();
    let history = record_history(&client);
    let mut agents = Vec::new();
    for node in ["n1", "n2", "n3"] {
        agents.push(Agent::start(client.clone(), node).await);
        ready_node(&client, node, json!({})).await;
    }
    let a = Manager::start_elected(client.clone(), settings(), "replica-a");
    let b = Manager::start_elected(client.clone(), settings(), "replica-b");
    let leader_is_a = eventually("a leader", || async {
        if a.leading() {
            Some(true)
        } else if b.leading() {
            Some(false)
        } else {
            None
        }
    })
    .await;
    let (leader, standby) = if leader_is_a { (a, b) } else { (b, a) };
    let image = TestEnv::get().image("test/big:1");
    let job = create(
        &jobs(&client),
        json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
               "metadata": {"name": "failover", "namespace": NAMESPACE},
               "spec": {"image": image, "parallelism": 1, "completionPolicy": {}}}),
    )
    .await;
    let uid = job.metadata.uid.unwrap();
    let bed = Bed {
        _server: server,
        client: client.clone(),
        manager: None,
        agents,
    };
    eventually("the first node to be written", || async {
        let mut written = 0;
        for node in ["n1", "n2", "n3"] {
            written += usize::from(bed.entry(node, &key(&image), &uid).await.is_some());
        }
        (written >= 1).then_some(())
    })
    .await;
    leader.task.abort();
    let _ = leader.task.await;
    let status = bed
        .job_status_until("failover", "completion", completed)
        .await;
    assert_eq!(status["succeeded"], 3, "{status}");
    assert!(standby.leading());
    // Every node got the tag once: one createdAt per node, version 0, one owner.
    let mut writes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for object in history.lock().unwrap().iter() {
        let node = object.metadata.name.clone().unwrap();
        for tag in object.data["spec"]["images"][key(&image)]["tags"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(tag["version"], 0, "{tag}");
            assert_eq!(tag["ownerReferences"].as_array().unwrap().len(), 1, "{tag}");
            writes
                .entry(node.clone())
                .or_default()
                .insert(tag["createdAt"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert!(writes.values().all(|w| w.len() == 1), "{writes:?}");
    drop(bed.manager);
}
