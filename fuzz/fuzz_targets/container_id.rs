//! Container IDs (`<runtime>://<id>`, `src/cri/container_id.rs`), CRI endpoints
//! (`src/cri/endpoint.rs`) and the runtime a CRR's containers select
//! (`src/recreate/runtime.rs` `runtime_name`).
//!
//! Input: one container ID per line; the first line is also tried as an endpoint.
//!
//! Invariants: a parsed ID prints back to the input and re-parses to itself; what fails
//! has no `://` or an empty part; an endpoint is an absolute path that re-parses to
//! itself; a runtime selected for a CRR is non-empty and is the prefix of every one of
//! its containers' IDs (or that ID's prefix is empty, which kruise skips).
#![no_main]

use kruised::api::v1beta1::ContainerRecreateRequest;
use kruised::cri::container_id::ContainerIdError;
use kruised::cri::{ContainerId, RuntimeEndpoint};
use kruised::recreate::runtime::runtime_name;
use kruised::recreate::version::CrrView;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fn check_container_id(input: &str) {
    match ContainerId::parse(input) {
        Ok(id) => {
            assert!(!id.runtime.is_empty() && !id.id.is_empty());
            assert!(!id.runtime.contains("://"), "split at the first separator");
            assert_eq!(id.to_string(), input);
            assert_eq!(ContainerId::parse(&id.to_string()), Ok(id));
        }
        Err(ContainerIdError::MissingSeparator(value)) => {
            assert_eq!(value, input);
            assert!(!input.contains("://"));
        }
        Err(ContainerIdError::EmptyPart(value)) => {
            assert_eq!(value, input);
            assert!(input.starts_with("://") || input.split_once("://").unwrap().1.is_empty());
        }
    }
}

fn check_endpoint(input: &str) {
    let Ok(endpoint) = RuntimeEndpoint::parse(input) else {
        return;
    };
    assert!(endpoint.path().is_absolute(), "{input:?}");
    let path = endpoint.path().to_str().expect("parsed from a str");
    // A bare path with `://` in it reads as a scheme; only the URI form is unambiguous.
    if !path.contains("://") {
        assert_eq!(RuntimeEndpoint::parse(path).ok().as_ref(), Some(&endpoint));
    }
    assert_eq!(
        RuntimeEndpoint::parse(&format!("unix://{path}")).ok(),
        Some(endpoint)
    );
}

fn check_runtime_selection(ids: &[&str]) {
    let containers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(index, id)| json!({"name": format!("c{index}"), "statusContext": {"containerID": id, "restartCount": 0}}))
        .collect();
    let crr: ContainerRecreateRequest = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1",
        "kind": "ContainerRecreateRequest",
        "metadata": {"name": "crr", "namespace": "default"},
        "spec": {"podName": "pod", "containers": containers},
    }))
    .expect("a well-formed CRR");
    let view = CrrView::from_v1beta1(&crr);
    let Ok(name) = runtime_name(&view) else {
        return;
    };
    assert!(!name.is_empty());
    for id in ids {
        let parts: Vec<&str> = id.trim_matches('"').split("://").collect();
        assert_eq!(parts.len(), 2, "{id:?} selected runtime {name:?}");
        assert!(
            parts[0] == name || parts[0].is_empty(),
            "{id:?} vs {name:?}"
        );
        if let Ok(parsed) = ContainerId::parse(id.trim_matches('"')) {
            assert!(parsed.runtime == name || parsed.runtime.is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = input.lines().take(16).collect();
    for line in &lines {
        check_container_id(line);
    }
    check_container_id(input);
    if let Some(first) = lines.first() {
        check_endpoint(first);
    }
    check_endpoint(input);
    if !lines.is_empty() {
        check_runtime_selection(&lines);
    }
});
