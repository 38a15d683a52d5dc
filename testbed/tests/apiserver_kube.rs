//! The test API server against a real client: kube-rs (Api, watcher, reflector,
//! discovery, events).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use testbed::apiserver::{ApiServer, ApiServerConfig};

const REFERENCE_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crds");

async fn server_with(config: ApiServerConfig) -> ApiServer {
    let server = ApiServer::start(config).await.expect("server starts");
    let applied = server
        .apply_crds_from_dir(Path::new(REFERENCE_CRDS))
        .expect("reference CRDs apply");
    assert_eq!(applied, 5);
    server
}

async fn server() -> ApiServer {
    server_with(ApiServerConfig::default()).await
}

fn pod(name: &str, labels: &[(&str, &str)], node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]}
    }))
    .unwrap()
}

fn api_error(error: kube::Error) -> (u16, String, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone(), status.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn dynamic(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

#[tokio::test]
async fn discovery_serves_core_builtin_groups_and_every_crd_version() {
    let server = server().await;
    let discovery = kube::Discovery::new(server.client()).run().await.unwrap();
    let kruise = discovery
        .get("apps.kruise.io")
        .expect("apps.kruise.io is discovered");
    let versions: Vec<&str> = kruise.versions().collect();
    assert_eq!(
        versions,
        vec!["v1beta1", "v1alpha1"],
        "preferred version first"
    );
    let (resource, caps) = kruise.recommended_kind("NodeImage").unwrap();
    assert_eq!(resource.plural, "nodeimages");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "nodeimages/status" || r.plural == "status")
    );
    for group in [
        "",
        "coordination.k8s.io",
        "events.k8s.io",
        "apiextensions.k8s.io",
    ] {
        assert!(discovery.has_group(group), "group {group:?}");
    }
    let version = server.client().apiserver_version().await.unwrap();
    assert_eq!(version.minor, "33");
}

#[tokio::test]
async fn objects_get_identity_and_optimistic_concurrency() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("a", &[], ""))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_ref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    let rv: u64 = meta.resource_version.as_ref().unwrap().parse().unwrap();
    let other = pods
        .create(&PostParams::default(), &pod("b", &[], ""))
        .await
        .unwrap();
    let rv_b: u64 = other.metadata.resource_version.unwrap().parse().unwrap();
    assert!(rv_b > rv, "one cluster-wide, monotonic resourceVersion");

    let mut update = created.clone();
    update.metadata.labels = Some(BTreeMap::from([("x".into(), "1".into())]));
    pods.replace("a", &PostParams::default(), &update)
        .await
        .unwrap();
    let (code, reason, message) = api_error(
        pods.replace("a", &PostParams::default(), &update)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );

    // A merge patch carrying a stale resourceVersion is a precondition failure too.
    let stale = json!({"metadata": {"resourceVersion": rv.to_string(), "labels": {"y": "2"}}});
    let (code, _, _) = api_error(
        pods.patch("a", &PatchParams::default(), &Patch::Merge(&stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);

    let (code, reason, message) = api_error(pods.get("missing").await.unwrap_err());
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (404, "NotFound", "pods \"missing\" not found")
    );
    let (code, reason, _) = api_error(
        pods.create(&PostParams::default(), &pod("a", &[], ""))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
}

#[tokio::test]
async fn status_subresource_is_isolated_and_generation_tracks_spec() {
    let server = server().await;
    let resource = dynamic("apps.kruise.io", "v1beta1", "NodeImage", "nodeimages");
    let images: Api<DynamicObject> = Api::all_with(server.client(), &resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
        "metadata": {"name": "node-1"},
        "spec": {"images": {"nginx": {"tags": [{"tag": "1", "version": 1}]}}},
        "status": {"desired": 5}
    }))
    .unwrap();
    let created = images
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is ignored on create"
    );
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({"status": {"desired": 1, "succeeded": 1}, "spec": {"images": {}}});
    let written = images
        .patch_status("node-1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(written.data["status"]["desired"], 1);
    assert_eq!(
        written.data["spec"]["images"]["nginx"]["tags"][0]["tag"], "1",
        "status writes leave spec"
    );
    assert_eq!(
        written.metadata.generation,
        Some(1),
        "status writes keep generation"
    );

    let spec = json!({"spec": {"images": {"nginx": {"tags": [{"tag": "2", "version": 1}]}}}, "status": {"desired": 9}});
    let written = images
        .patch("node-1", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    assert_eq!(written.metadata.generation, Some(2));
    assert_eq!(
        written.data["status"]["desired"], 1,
        "main writes leave status"
    );
}

#[tokio::test]
async fn custom_resources_are_validated_against_their_schema() {
    let server = server().await;
    let resource = dynamic(
        "apps.kruise.io",
        "v1beta1",
        "ContainerRecreateRequest",
        "containerrecreaterequests",
    );
    let crrs: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &resource);
    let missing_pod_name: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "ContainerRecreateRequest",
        "metadata": {"name": "bad"}, "spec": {"containers": [{"name": "main"}]}
    }))
    .unwrap();
    let (code, reason, message) = api_error(
        crrs.create(&PostParams::default(), &missing_pod_name)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(message.contains("spec.podName"), "{message}");

    let wrong_type: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "ContainerRecreateRequest",
        "metadata": {"name": "bad2"},
        "spec": {"podName": "p", "containers": [{"name": "main"}], "activeDeadlineSeconds": "soon"}
    }))
    .unwrap();
    let (code, _, message) = api_error(
        crrs.create(&PostParams::default(), &wrong_type)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("spec.activeDeadlineSeconds"), "{message}");

    let unknown_field: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "ContainerRecreateRequest",
        "metadata": {"name": "good"},
        "spec": {"podName": "p", "containers": [{"name": "main"}], "bogus": true}
    }))
    .unwrap();
    let created = crrs
        .create(&PostParams::default(), &unknown_field)
        .await
        .unwrap();
    assert!(
        created.data["spec"].get("bogus").is_none(),
        "unknown fields are pruned"
    );
}

#[tokio::test]
async fn crr_is_served_in_both_versions_with_kruise_conversion() {
    let server = server().await;
    let alpha = dynamic(
        "apps.kruise.io",
        "v1alpha1",
        "ContainerRecreateRequest",
        "containerrecreaterequests",
    );
    let beta = dynamic(
        "apps.kruise.io",
        "v1beta1",
        "ContainerRecreateRequest",
        "containerrecreaterequests",
    );
    let alpha_api: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &alpha);
    let beta_api: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &beta);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "ContainerRecreateRequest",
        "metadata": {"name": "crr1"},
        "spec": {"podName": "p", "containers": [{"name": "main"}]}
    }))
    .unwrap();
    beta_api
        .create(&PostParams::default(), &object)
        .await
        .unwrap();

    // A master manager writes the v1beta1 status; a v1alpha1 reader sees annotations (§4.1).
    let status = json!({"status": {
        "phase": "Recreating",
        "containerStatusSnapshot": [{"name": "main", "ready": true, "restartCount": 1, "containerID": "containerd://abc"}],
        "conditions": [{"type": "PreRecreateGrace", "status": "True", "reason": "PreRecreateGrace",
                        "message": "", "lastTransitionTime": "2026-07-01T10:00:00Z"}]
    }});
    beta_api
        .patch_status("crr1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let as_alpha = alpha_api.get("crr1").await.unwrap();
    assert_eq!(
        as_alpha.types.as_ref().unwrap().api_version,
        "apps.kruise.io/v1alpha1"
    );
    let annotations = as_alpha.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations["crr.apps.kruise.io/unready-acquired"],
        "2026-07-01T10:00:00Z"
    );
    let synced: serde_json::Value =
        serde_json::from_str(&annotations["crr.apps.kruise.io/sync-container-statuses"]).unwrap();
    assert_eq!(synced[0]["containerID"], "containerd://abc");
    assert!(
        as_alpha.data["status"]
            .get("containerStatusSnapshot")
            .is_none()
    );
}

#[tokio::test]
async fn kruise_1_8_crds_serve_v1alpha1_only_with_plain_annotations() {
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/reference/crds-v1.8.4"
    );
    assert_eq!(server.apply_crds_from_dir(Path::new(dir)).unwrap(), 5);
    let discovery = kube::Discovery::new(server.client()).run().await.unwrap();
    let versions: Vec<&str> = discovery
        .get("apps.kruise.io")
        .unwrap()
        .versions()
        .collect();
    assert_eq!(versions, vec!["v1alpha1"]);
    let alpha = dynamic(
        "apps.kruise.io",
        "v1alpha1",
        "ContainerRecreateRequest",
        "containerrecreaterequests",
    );
    let crrs: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &alpha);
    let sync =
        r#"[{"name":"main","ready":true,"restartCount":2,"containerID":"containerd://def"}]"#;
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
        "metadata": {"name": "crr1", "annotations": {"crr.apps.kruise.io/sync-container-statuses": sync}},
        "spec": {"podName": "p", "containers": [{"name": "main"}]}
    }))
    .unwrap();
    crrs.create(&PostParams::default(), &object).await.unwrap();
    let read = crrs.get("crr1").await.unwrap();
    assert_eq!(
        read.metadata.annotations.unwrap()["crr.apps.kruise.io/sync-container-statuses"],
        sync
    );
    let beta = dynamic(
        "apps.kruise.io",
        "v1beta1",
        "ContainerRecreateRequest",
        "containerrecreaterequests",
    );
    let missing: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &beta);
    assert_eq!(api_error(missing.get("crr1").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    for (name, labels, node) in [
        ("a", vec![("app", "web"), ("tier", "front")], "n1"),
        ("b", vec![("app", "web")], "n2"),
        ("c", vec![("app", "db")], "n1"),
        ("d", vec![], "n2"),
    ] {
        pods.create(&PostParams::default(), &pod(name, &labels, node))
            .await
            .unwrap();
    }
    let names = |list: kube::core::ObjectList<Pod>| {
        list.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    for (selector, expected) in [
        ("app=web", vec!["a", "b"]),
        ("app==web", vec!["a", "b"]),
        ("app!=web", vec!["c", "d"]),
        ("app in (db,web),tier", vec!["a"]),
        ("app notin (web)", vec!["c", "d"]),
        ("tier", vec!["a"]),
        ("!tier", vec!["b", "c", "d"]),
    ] {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(names(list), expected, "labelSelector {selector}");
    }
    for (selector, expected) in [
        ("spec.nodeName=n1", vec!["a", "c"]),
        ("metadata.name=b", vec!["b"]),
        ("metadata.name!=b,spec.nodeName=n2", vec!["d"]),
    ] {
        let list = pods
            .list(&ListParams::default().fields(selector))
            .await
            .unwrap();
        assert_eq!(names(list), expected, "fieldSelector {selector}");
    }
    let (code, _, _) = api_error(
        pods.list(&ListParams::default().fields("spec.bogus=x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);
}

#[tokio::test]
async fn pagination_with_limit_and_continue_returns_everything_once() {
    let server = server().await;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    for i in 0..7 {
        let map: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")}})).unwrap();
        maps.create(&PostParams::default(), &map).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(3);
    loop {
        let page = maps.list(&params).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|m| m.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());
}

async fn reflector_converges(
    server: &ApiServer,
    config: watcher::Config,
    disturb: impl AsyncFnOnce(&ApiServer),
) {
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector::reflector(writer, watcher(maps.clone(), config)).applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    for i in 0..3 {
        let map: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("r-{i}")}})).unwrap();
        maps.create(&PostParams::default(), &map).await.unwrap();
    }
    eventually("initial objects in the reflector", || {
        let n = reader.state().len();
        async move { (n == 3).then_some(()) }
    })
    .await;
    disturb(server).await;
    for i in 3..6 {
        let map: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("r-{i}")}})).unwrap();
        maps.create(&PostParams::default(), &map).await.unwrap();
    }
    maps.delete("r-0", &DeleteParams::default()).await.unwrap();
    let patch = json!({"data": {"k": "v"}});
    maps.patch("r-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("the reflector to match the server", || {
        let reader = reader.clone();
        let maps = maps.clone();
        async move {
            let mut cached: Vec<(String, Option<BTreeMap<String, String>>)> = reader
                .state()
                .iter()
                .map(|m| (m.metadata.name.clone().unwrap(), m.data.clone()))
                .collect();
            cached.sort();
            let mut actual: Vec<(String, Option<BTreeMap<String, String>>)> = maps
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .map(|m| (m.metadata.name.unwrap(), m.data))
                .collect();
            actual.sort();
            (cached == actual && cached.len() == 5).then_some(())
        }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn reflector_stays_consistent_across_dropped_watches() {
    let server = server().await;
    reflector_converges(&server, watcher::Config::default(), async |server| {
        server.faults().drop_watches();
    })
    .await;
}

#[tokio::test]
async fn reflector_recovers_from_410_gone_after_compaction() {
    let server = server().await;
    reflector_converges(&server, watcher::Config::default(), async |server| {
        server.store().compact();
        server.faults().drop_watches();
    })
    .await;
}

#[tokio::test]
async fn reflector_works_with_streaming_lists_and_frequent_bookmarks() {
    let server = server_with(ApiServerConfig {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    reflector_converges(
        &server,
        watcher::Config::default().streaming_lists(),
        async |server| {
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.faults().drop_watches();
        },
    )
    .await;
}

#[tokio::test]
async fn watch_sends_bookmarks_and_selector_transitions() {
    let server = server_with(ApiServerConfig {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("w", &[("app", "a")], ""))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let params = kube::api::WatchParams::default()
        .labels("app=a")
        .timeout(10);
    let mut stream = pods.watch(&params, &rv).await.unwrap().boxed();
    let relabel = json!({"metadata": {"labels": {"app": "b"}}});
    pods.patch("w", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) && (seen.len() < 2) {
        match stream.next().await {
            Some(Ok(kube::core::WatchEvent::Deleted(pod))) => {
                seen.push(format!("DELETED {}", pod.metadata.name.unwrap()))
            }
            Some(Ok(kube::core::WatchEvent::Bookmark(_))) => {
                if !seen.iter().any(|s| s == "BOOKMARK") {
                    seen.push("BOOKMARK".into());
                }
            }
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(error)) => panic!("{error}"),
            None => break,
        }
    }
    assert!(
        seen.contains(&"DELETED w".to_string()),
        "leaving the selector is a DELETED event: {seen:?}"
    );
    assert!(seen.contains(&"BOOKMARK".to_string()), "{seen:?}");
}

#[tokio::test]
async fn finalizers_hold_objects_with_a_deletion_timestamp() {
    let server = server().await;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let map: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "f", "finalizers": ["example.com/hold"]}}),
    )
    .unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();
    maps.delete("f", &DeleteParams::default()).await.unwrap();
    let held = maps.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let release = json!({"metadata": {"finalizers": null}});
    maps.patch("f", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    let (code, _, _) = api_error(maps.get("f").await.unwrap_err());
    assert_eq!(code, 404);
}

#[tokio::test]
async fn strategic_merge_and_json_patches_on_pods() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let mut two = pod("s", &[], "");
    two.spec
        .as_mut()
        .unwrap()
        .containers
        .push(serde_json::from_value(json!({"name": "side", "image": "x"})).unwrap());
    pods.create(&PostParams::default(), &two).await.unwrap();
    let patch = json!({"spec": {"containers": [{"name": "side", "image": "y"}]}});
    let patched = pods
        .patch("s", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let containers = patched.spec.unwrap().containers;
    assert_eq!(containers.len(), 2, "containers merge by name");
    assert_eq!(containers[1].image.as_deref(), Some("y"));
    let json_patch: json_patch_4::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/containers/0/image", "value": "z"}
    ]))
    .unwrap();
    let patched = pods
        .patch("s", &PatchParams::default(), &Patch::<()>::Json(json_patch))
        .await
        .unwrap();
    assert_eq!(
        patched.spec.unwrap().containers[0].image.as_deref(),
        Some("z")
    );
    let status = json!({"status": {"conditions": [{"type": "KruisePodReady", "status": "False"}]}});
    pods.patch_status("s", &PatchParams::default(), &Patch::Strategic(&status))
        .await
        .unwrap();
    let more = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let patched = pods
        .patch_status("s", &PatchParams::default(), &Patch::Strategic(&more))
        .await
        .unwrap();
    let types: Vec<String> = patched
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    // Conditions merge by type; kube puts elements the patch adds before the others.
    assert_eq!(types, vec!["Ready", "KruisePodReady"]);
}

#[tokio::test]
async fn scheduled_pods_are_deleted_gracefully() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(&PostParams::default(), &pod("g", &[], "node-1"))
        .await
        .unwrap();
    pods.delete("g", &DeleteParams::default()).await.unwrap();
    let terminating = pods.get("g").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    pods.delete("g", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(api_error(pods.get("g").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn events_from_the_kube_rs_recorder_are_listed_as_core_events() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("e", &[], ""))
        .await
        .unwrap();
    let recorder = Recorder::new(
        server.client(),
        Reporter {
            controller: "kruised".into(),
            instance: Some("node-1".into()),
        },
    );
    let reference = kube::Resource::object_ref(&created, &());
    recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: "Killing".into(),
                note: Some("Stopping container main".into()),
                action: "Kill".into(),
                secondary: None,
            },
            &reference,
        )
        .await
        .unwrap();
    let events: Api<CoreEvent> = Api::namespaced(server.client(), "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let event = &list.items[0];
    assert_eq!(event.reason.as_deref(), Some("Killing"));
    assert_eq!(event.message.as_deref(), Some("Stopping container main"));
    assert_eq!(event.involved_object.name.as_deref(), Some("e"));
}

#[tokio::test]
async fn injected_failures_latency_and_outages_reach_the_client() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    server
        .faults()
        .fail_next(Some("list"), Some("pods"), 1, 500);
    let (code, _, _) = api_error(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 500);
    pods.list(&ListParams::default())
        .await
        .expect("only one failure was injected");
    // kube-rs retries a 429 after its Retry-After: the client sees the real answer, and
    // the server saw the request twice.
    server.faults().fail_next(Some("get"), None, 1, 429);
    let (code, _, _) = api_error(pods.get("x").await.unwrap_err());
    assert_eq!(code, 404);
    let gets: u64 = server
        .accounting()
        .snapshot()
        .iter()
        .filter(|r| r.verb == "get" && r.resource == "pods")
        .map(|r| r.requests)
        .sum();
    assert_eq!(gets, 2);

    server.faults().outage(Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = pods.list(&ListParams::default()).await.unwrap_err();
    assert!(
        !matches!(refused, kube::Error::Api(_)),
        "an outage refuses connections: {refused:?}"
    );
    eventually("the server to come back", || {
        let pods = pods.clone();
        async move { pods.list(&ListParams::default()).await.ok().map(drop) }
    })
    .await;
}

#[tokio::test]
async fn accounting_counts_requests_by_verb_resource_and_user_agent() {
    let server = server().await;
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static("accounting-test"),
    ));
    let client = kube::Client::try_from(config).unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.list(&ListParams::default()).await.unwrap();
    pods.list(&ListParams::default()).await.unwrap();
    let _ = pods.get("nope").await;
    let rows = server.accounting().snapshot();
    let row = |verb: &str| {
        rows.iter()
            .find(|r| r.verb == verb && r.resource == "pods" && r.user_agent == "accounting-test")
            .cloned()
            .unwrap_or_else(|| panic!("no {verb} row in {rows:?}"))
    };
    assert_eq!(row("list").requests, 2);
    assert!(row("list").response_bytes > 0);
    assert_eq!(row("get").requests, 1);
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds() {
    let server = server().await;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let params = kube::api::WatchParams::default().timeout(1);
    let start = Instant::now();
    let mut stream = maps.watch(&params, "0").await.unwrap().boxed();
    while let Some(event) = stream.next().await {
        event.unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the watch closed on its own"
    );
}

#[tokio::test]
async fn crd_selectable_fields_and_namespace_field_selector() {
    let server = server().await;
    let crds: Api<DynamicObject> = Api::all_with(
        server.client(),
        &dynamic(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "selectableFields": [{"jsonPath": ".spec.color"}],
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {"color": {"type": "string"}}}}}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let widgets: Api<DynamicObject> = Api::all_with(
        server.client(),
        &dynamic("example.com", "v1", "Widget", "widgets"),
    );
    for (name, namespace, color) in [
        ("a", "default", "red"),
        ("b", "default", "blue"),
        ("c", "kube-system", "red"),
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(
            server.client(),
            namespace,
            &dynamic("example.com", "v1", "Widget", "widgets"),
        );
        let widget: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name}, "spec": {"color": color}
        }))
        .unwrap();
        api.create(&PostParams::default(), &widget).await.unwrap();
    }
    let names = |list: kube::core::ObjectList<DynamicObject>| {
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .map(|w| w.metadata.name.unwrap())
            .collect();
        names.sort();
        names
    };
    let red = widgets
        .list(&ListParams::default().fields("spec.color=red"))
        .await
        .unwrap();
    assert_eq!(names(red), vec!["a", "c"]);
    let in_default = widgets
        .list(&ListParams::default().fields("metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(names(in_default), vec!["a", "b"]);
    let (code, _, _) = api_error(
        widgets
            .list(&ListParams::default().fields("spec.size=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400, "fields that are not selectable are rejected");
}
