//! deploy/grafana/kruised-dashboard.json only queries metrics the agent serves: every
//! `kruised_*` series name in it is checked against a real `/metrics` scrape, including
//! the suffix its type implies (`_total` for counters, `_bucket`/`_sum`/`_count` for
//! histograms, `_info` for info metrics).

use std::collections::BTreeSet;

use kruised::metrics::Metrics;
use kruised::readiness::Readiness;
use kruised::server::{HttpState, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DASHBOARD: &str = include_str!("../deploy/grafana/kruised-dashboard.json");

/// Every query string in the dashboard (panel targets and template variables).
fn queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(start) = rest.find("kruised_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

async fn scrape() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Metrics::new();
    // Labelled families appear once a label set has a value: drive each through the
    // calls the agent makes (one pull, one status write, one CRI call).
    metrics.image_pull.tag_finished("succeeded");
    metrics
        .image_pull
        .observe_pull(std::time::Duration::from_millis(300), true);
    metrics.image_pull.add_bytes(1024);
    drop(metrics.image_pull.in_flight());
    metrics.image_pull.status_write("ok");
    metrics.cri.observe("PullImage", "OK", 0.3);
    let state = HttpState {
        metrics,
        readiness: Readiness::new(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_served_on_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    let names: BTreeSet<String> = all.iter().flat_map(|q| metric_names(q)).collect();
    assert!(
        names.len() >= 6,
        "the dashboard queries kruised metrics: {names:?}"
    );

    let body = scrape().await;
    // `# TYPE family type` lines: every registered family, with or without samples.
    let families: Vec<(&str, &str)> = body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    for name in &names {
        let (family, kinds): (&str, &[&str]) = if let Some(f) = name.strip_suffix("_total") {
            (f, &["counter"])
        } else if let Some(f) = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_sum"))
            .or_else(|| name.strip_suffix("_count"))
        {
            (f, &["histogram"])
        } else if let Some(f) = name.strip_suffix("_info") {
            (f, &["info"])
        } else {
            (name.as_str(), &["gauge", "unknown"])
        };
        assert!(
            families
                .iter()
                .any(|(f, kind)| *f == family && kinds.contains(kind)),
            "{name}: no {kinds:?} family {family} on /metrics:\n{body}"
        );
    }
}
