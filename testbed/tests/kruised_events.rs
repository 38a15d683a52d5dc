//! kruised's event recorder against the test API server.

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kruised::events::{EventType, Recorder};
use kube::api::{Api, ListParams};
use testbed::apiserver::{ApiServer, ApiServerConfig};

fn node_image_ref() -> ObjectReference {
    ObjectReference {
        api_version: Some("apps.kruise.io/v1beta1".into()),
        kind: Some("NodeImage".into()),
        name: Some("node-1".into()),
        uid: Some("u-1".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn repeated_events_are_counted_not_duplicated() {
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    let recorder = Recorder::new(server.client(), "kruise-daemon-imagepuller", "node-1");
    let object = node_image_ref();
    for _ in 0..3 {
        recorder
            .publish(
                &object,
                EventType::Warning,
                "PullImageFailed",
                "Image nginx:1 not found",
            )
            .await;
    }
    recorder
        .publish(
            &object,
            EventType::Normal,
            "PullImageSucceed",
            "Image nginx:2, ecalpsedTime 1s",
        )
        .await;
    // Cluster-scoped objects' events go to "default", like client-go's recorder.
    let events: Api<Event> = Api::namespaced(server.client(), "default");
    let mut list = events.list(&ListParams::default()).await.unwrap().items;
    list.sort_by_key(|e| e.reason.clone());
    assert_eq!(list.len(), 2);
    let failed = &list[0];
    assert_eq!(failed.reason.as_deref(), Some("PullImageFailed"));
    assert_eq!(failed.count, Some(3));
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    let source = failed.source.as_ref().unwrap();
    assert_eq!(
        source.component.as_deref(),
        Some("kruise-daemon-imagepuller")
    );
    assert_eq!(source.host.as_deref(), Some("node-1"));
    assert_eq!(failed.involved_object.kind.as_deref(), Some("NodeImage"));
    assert_eq!(list[1].count, Some(1));
}
