//! The manager's NodeImage lifecycle against the test API server (§3.1, §3.4): creation
//! for Ready nodes with their labels, deletion with the node, the webhook's defaults and
//! validation, garbage collection, and failing tags of silent nodes. No agent runs here,
//! so nothing acknowledges tags.

mod manager_support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use manager_support::*;
use serde_json::json;

#[tokio::test]
async fn ready_nodes_get_a_nodeimage_with_their_labels_and_lose_it_with_the_node() {
    let server = server().await;
    let client = server.client();
    let manager = Manager::start(client.clone(), settings());
    ready_node(&client, "vk", json!({"type": "virtual-kubelet"})).await;
    let not_ready: Node = serde_json::from_value(json!({
        "metadata": {"name": "booting"},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]}
    }))
    .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.create(&Default::default(), &not_ready).await.unwrap();
    ready_node(&client, "n1", json!({"zone": "a"})).await;
    let images = node_images(&client);
    let created = eventually("n1's NodeImage", || async { images.get("n1").await.ok() }).await;
    let labels = created.metadata.labels.unwrap();
    assert_eq!(labels["zone"], "a");
    assert_eq!(labels["kubernetes.io/hostname"], "n1");
    // Every node was looked at; only the Ready, real one got a NodeImage.
    eventually("the three nodes to be reconciled", || async {
        (manager.counter("kruised_manager_reconciles_total", "controller=\"node\"") >= 3)
            .then_some(())
    })
    .await;
    assert!(images.get("vk").await.is_err());
    assert!(images.get("booting").await.is_err());

    // Becoming Ready is enough for the waiting one.
    nodes
        .patch_status(
            "booting",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
            ),
        )
        .await
        .unwrap();
    eventually("booting's NodeImage", || async {
        images.get("booting").await.ok()
    })
    .await;

    // Labels follow the node.
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"zone": "b"}}})),
        )
        .await
        .unwrap();
    eventually("n1's NodeImage to be relabelled", || async {
        let labels = images.get("n1").await.ok()?.metadata.labels?;
        (labels.get("zone").map(String::as_str) == Some("b")).then_some(())
    })
    .await;

    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    eventually("n1's NodeImage to go with its node", || async {
        images.get("n1").await.is_err().then_some(())
    })
    .await;
}

#[tokio::test]
async fn nodeimage_entries_get_the_webhook_defaults_and_invalid_or_orphaned_ones_leave() {
    let server = server().await;
    let client = server.client();
    let _manager = Manager::start(client.clone(), settings());
    ready_node(&client, "n1", json!({})).await;
    let images = node_images(&client);
    eventually("n1's NodeImage", || async { images.get("n1").await.ok() }).await;
    let orphan_owner = json!([{"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
        "namespace": "default", "name": "gone", "uid": "no-such-uid"}]);
    images
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"images": {
                "nginx": {"tags": [{"tag": "b"}, {"tag": "a"}, {"tag": "a", "version": 3}]},
                "redis": {"tags": [{"tag": "7", "createdAt": "2026-01-01T00:00:00Z",
                    "ownerReferences": orphan_owner}]}
            }}})),
        )
        .await
        .unwrap();
    let spec = eventually("the defaults", || async {
        let object = images.get("n1").await.ok()?;
        let spec = object.data["spec"]["images"].clone();
        (spec["nginx"]["tags"].as_array()?.len() == 2 && spec.get("redis").is_none())
            .then_some(spec)
    })
    .await;
    let tags = spec["nginx"]["tags"].as_array().unwrap();
    assert_eq!(tags[0]["tag"], "a");
    assert_eq!(tags[1]["tag"], "b");
    for tag in tags {
        assert!(tag["createdAt"].is_string(), "{tag}");
        assert_eq!(
            tag["pullPolicy"],
            json!({"timeoutSeconds": 600, "backoffLimit": 3})
        );
    }
    // The first "a" stays, the duplicate is dropped with a Warning.
    assert!(tags[0].get("version").is_none(), "{}", tags[0]);
    let events = eventually("the warning about the duplicate", || async {
        let events = events_about(&client, "default", "n1").await;
        events
            .iter()
            .any(|(reason, _)| reason == "InvalidNodeImageEntries")
            .then_some(events)
    })
    .await;
    assert!(
        events
            .iter()
            .any(|(_, message)| message.contains("image nginx:a is listed twice")),
        "{events:?}"
    );
}

#[tokio::test]
async fn tags_of_a_silent_node_fail_after_the_response_timeout_and_finished_tags_leave_after_their_ttl()
 {
    let server = server().await;
    let client = server.client();
    let _manager = Manager::start(
        client.clone(),
        kruised::manager::context::Settings {
            nodeimage_response_timeout: Duration::from_secs(2),
            ..settings()
        },
    );
    ready_node(&client, "n1", json!({})).await;
    let images = node_images(&client);
    eventually("n1's NodeImage", || async { images.get("n1").await.ok() }).await;
    images
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"images": {"nginx": {"tags": [
                {"tag": "1", "version": 0, "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3,
                    "ttlSecondsAfterFinished": 2}}
            ]}}}})),
        )
        .await
        .unwrap();
    let failed = eventually("the silent tag to fail", || async {
        let object = images.get("n1").await.ok()?;
        let tag = object.data["status"]["imageStatuses"]["nginx"]["tags"][0].clone();
        (tag["phase"] == "Failed").then_some((tag, object.data["status"].clone()))
    })
    .await;
    assert_eq!(
        failed.0["message"],
        "node has not responded for a long time"
    );
    assert_eq!(failed.0["version"], 0);
    assert!(failed.0["completionTime"].is_string());
    assert_eq!(failed.1["desired"], 1);
    assert_eq!(failed.1["failed"], 1);
    let events = events_about(&client, "default", "n1").await;
    assert!(
        events.iter().any(|(reason, message)| reason == "PullImageFailed"
            && message == "Failed to pull image nginx:1 on node n1 for node has not responded for a long time"),
        "{events:?}"
    );
    // Failed is finished: the TTL then removes the tag, and the image with it.
    eventually("the finished tag to leave after its TTL", || async {
        let object = images.get("n1").await.ok()?;
        object.data["spec"]["images"]
            .as_object()
            .is_none_or(|m| m.is_empty())
            .then_some(())
    })
    .await;
}
