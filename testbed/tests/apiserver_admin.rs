//! The admin endpoint: fault injection and accounting over HTTP, as other processes
//! (and `testbed up` users) drive them.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::agent_process::admin;
use testbed::apiserver::{ApiServer, ApiServerConfig};

fn maps(server: &ApiServer) -> Api<ConfigMap> {
    Api::namespaced(server.client(), "default")
}

#[tokio::test]
async fn admin_fail_rule_fails_matching_requests_then_stops() {
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    let (status, _) = admin(
        &server,
        "POST",
        "/faults/fail",
        Some(json!({"verb": "list", "resource": "configmaps", "code": 503, "count": 2, "retryAfterSeconds": 0})),
    )
    .await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        match maps(&server).list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 503),
            // kube-rs may retry a 503 on its own; then both injected failures are used up.
            Ok(_) => break,
            Err(other) => panic!("{other:?}"),
        }
    }
    maps(&server)
        .list(&ListParams::default())
        .await
        .expect("the rule is used up");
    let (status, body) = admin(&server, "POST", "/faults/fail", Some(json!({"code": "x"}))).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn admin_latency_drop_watches_compact_and_clear_answer() {
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    for (path, body) in [
        (
            "/faults/latency",
            Some(json!({"verb": "get", "millis": 10})),
        ),
        ("/faults/drop-watches", None),
        ("/faults/compact", None),
        ("/faults/history", Some(json!({"window": 5}))),
        ("/faults/clear", None),
    ] {
        let (status, reply) = admin(&server, "POST", path, body).await;
        assert_eq!(status, 200, "{path}: {reply}");
    }
    let (status, _) = admin(
        &server,
        "POST",
        "/faults/unavailable",
        Some(json!({"seconds": 0.3})),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        maps(&server).list(&ListParams::default()).await.is_err(),
        "refused during the outage"
    );
    let start = std::time::Instant::now();
    while maps(&server).list(&ListParams::default()).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the server came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = admin(&server, "GET", "/nope", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn admin_accounting_reports_and_resets() {
    let server = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    let map: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "m"}})).unwrap();
    maps(&server)
        .create(&PostParams::default(), &map)
        .await
        .unwrap();
    maps(&server).list(&ListParams::default()).await.unwrap();
    let (status, rows) = admin(&server, "GET", "/accounting", None).await;
    assert_eq!(status, 200);
    let rows = rows.as_array().unwrap();
    let create = rows
        .iter()
        .find(|r| r["verb"] == "create" && r["resource"] == "configmaps")
        .expect("a create row");
    assert_eq!(create["requests"], 1);
    assert!(create["responseBytes"].as_u64().unwrap() > 0);
    let (status, _) = admin(&server, "POST", "/accounting/reset", None).await;
    assert_eq!(status, 200);
    let (_, rows) = admin(&server, "GET", "/accounting", None).await;
    assert_eq!(rows, json!([]));
}
