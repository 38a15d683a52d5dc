//! Custom resources as the API server (or a user with `kubectl apply`) hands them to
//! kruised: NodeImage, ImagePullJob, ImageListPullJob and ContainerRecreateRequest in
//! `v1alpha1` and `v1beta1`, NodePodProbe in `v1alpha1` (`src/api/`), in JSON or YAML,
//! then what the agent and the manager do with a decoded object before any I/O.
//!
//! Input: one JSON document (first non-blank byte `{`) or one YAML document. The type is
//! chosen from `apiVersion` and `kind`; without a known pair every type is tried.
//!
//! Invariants: a decoded object re-encodes (JSON and YAML) to a document that decodes to an
//! equal object, and re-encoding that is stable; the agent's and manager's views of an
//! object that decodes as its type exist and agree with it; what they derive holds (every
//! valid ImagePullJob yields a pullable reference, status counts never exceed `desired`,
//! every CRR container gets exactly one state, ...).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kruised::api::shared::imagepulljob::ImagePullJobSpec;
use kruised::api::{CompletionPolicyType, v1alpha1, v1beta1};
use kruised::cri::ContainerId;
use kruised::imagepuller::status as nodeimage_status;
use kruised::imagepuller::view::NodeImageView;
use kruised::imageref;
use kruised::manager::imagelistpulljob::{plan, template_hash};
use kruised::manager::jobview::{JobView, tag_pull_policy, validate};
use kruised::podprobe::status::{desired_status, same_status};
use kruised::recreate::picking::picking_order;
use kruised::recreate::runtime::{
    RuntimeContainer, RuntimeContainerState, RuntimePod, runtime_name,
};
use kruised::recreate::state::{compute_states, decide};
use kruised::recreate::version::{CrrView, states_merge_patch};
use kube::core::DynamicObject;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A fixed "now", so a run is reproducible.
fn now() -> Timestamp {
    Timestamp::from_second(1_780_000_000).unwrap()
}

/// Decodes `K` from the document as the API server hands it over (JSON; kubectl turns YAML
/// into JSON first, so a YAML input is decoded from its JSON value) and checks that the
/// re-encoding round trips. A YAML input must also round trip through YAML directly.
fn decode<K>(text: &str, raw: &Value, json: bool) -> Option<K>
where
    K: Serialize + DeserializeOwned + PartialEq + Debug,
{
    if !json && let Ok(from_text) = serde_yaml::from_str::<K>(text) {
        round_trip(&from_text);
    }
    let first: K = serde_json::from_value(raw.clone()).ok()?;
    // The text itself may not decode where its value does: serde rejects a duplicate
    // field that the JSON value resolved to its last occurrence (as Go and the API server do).
    if json && let Ok(from_text) = serde_json::from_str::<K>(text) {
        assert_eq!(from_text, first);
    }
    round_trip(&first);
    Some(first)
}

fn round_trip<K>(first: &K)
where
    K: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let encoded = serde_json::to_value(first).expect("a decoded object encodes");
    let second: K = serde_json::from_value(encoded.clone())
        .unwrap_or_else(|error| panic!("re-encoded {encoded} does not decode: {error}"));
    assert_eq!(&second, first, "JSON round trip changed the object");
    assert_eq!(serde_json::to_value(&second).unwrap(), encoded);
    let text_json = serde_json::to_string(first).unwrap();
    assert_eq!(&serde_json::from_str::<K>(&text_json).unwrap(), first);
    let text_yaml = serde_yaml::to_string(first).expect("a decoded object encodes as YAML");
    let from_yaml: K = serde_yaml::from_str(&text_yaml)
        .unwrap_or_else(|error| panic!("re-encoded YAML {text_yaml} does not decode: {error}"));
    assert_eq!(&from_yaml, first, "YAML round trip changed the object");
}

fn dynamic(raw: &Value) -> Option<DynamicObject> {
    serde_json::from_value(raw.clone()).ok()
}

/// The agent's NodeImage view, and the status it computes from it.
fn nodeimage(raw: &Value, typed_images: Option<Vec<(String, Vec<String>)>>) {
    let Some(object) = dynamic(raw) else {
        assert!(
            typed_images.is_none(),
            "a typed NodeImage is a DynamicObject"
        );
        return;
    };
    let view = NodeImageView::from_object(object);
    if let Some(images) = typed_images {
        let view = view.as_ref().expect("a NodeImage that decodes has a view");
        let seen: Vec<(String, Vec<String>)> = view
            .images
            .iter()
            .map(|(key, image)| {
                (
                    key.clone(),
                    image.tags.iter().map(|t| t.tag.clone()).collect(),
                )
            })
            .collect();
        assert_eq!(seen, images);
    }
    let Ok(view) = view else {
        return;
    };
    for (key, image) in &view.images {
        for tag in &image.tags {
            let _ = imageref::pull_reference(key, &tag.tag).map_err(|e| e.to_string());
        }
    }
    let known: BTreeMap<_, _> = view
        .status
        .iter()
        .flat_map(|status| status.image_statuses.iter().flatten())
        .flat_map(|(key, image)| {
            image
                .tags
                .iter()
                .map(move |tag| ((key.clone(), tag.tag.clone()), tag.clone()))
        })
        .collect();
    let status = nodeimage_status::compute(&view.images, &known, view.status.as_ref());
    let tags: usize = view.images.values().map(|image| image.tags.len()).sum();
    assert_eq!(status.desired, i32::try_from(tags).unwrap_or(i32::MAX));
    let counted = i64::from(status.succeeded)
        + i64::from(status.failed)
        + i64::from(status.pulling)
        + i64::from(status.waiting);
    assert!(counted <= i64::from(status.desired), "{status:?}");
}

/// The manager's checks of an ImagePullJob spec.
fn pull_job_spec(spec: &ImagePullJobSpec) {
    let Ok(job) = validate(spec) else {
        return;
    };
    assert_eq!(
        validate(spec).as_ref(),
        Ok(&job),
        "validation is deterministic"
    );
    assert_eq!(
        imageref::image_key_and_tag(&spec.image),
        Ok((job.image_key.clone(), job.tag.clone()))
    );
    imageref::pull_reference(&job.image_key, &job.tag)
        .unwrap_or_else(|error| panic!("valid job {:?} yields no pull: {error}", spec.image));
    let _ = tag_pull_policy(&job, 3600);
}

fn imagepulljob(raw: &Value, typed: Option<&ImagePullJobSpec>) {
    let Some(object) = dynamic(raw) else {
        return;
    };
    let view = JobView::from_object(&object);
    if let Some(spec) = typed {
        let view = view
            .as_ref()
            .expect("an ImagePullJob that decodes has a view");
        assert_eq!(&view.spec, spec);
    }
    if let Ok(view) = view {
        pull_job_spec(&view.spec);
    }
}

fn imagelistpulljob(
    spec: &kruised::api::shared::imagelistpulljob::ImageListPullJobSpec,
    status: Option<&kruised::api::shared::imagelistpulljob::ImageListPullJobStatus>,
) {
    let hash = template_hash(&spec.template);
    assert_eq!(hash, template_hash(&spec.template.clone()));
    let completion = spec
        .template
        .completion_policy
        .type_
        .as_deref()
        .and_then(|value| value.parse().ok())
        .unwrap_or(CompletionPolicyType::Always);
    let planned = plan(
        &spec.images,
        completion,
        &hash,
        &[],
        &status.cloned().unwrap_or_default(),
        now(),
    );
    let unique: BTreeSet<&String> = spec.images.iter().collect();
    assert_eq!(planned.create.iter().collect::<BTreeSet<_>>(), unique);
    assert_eq!(planned.create.len(), unique.len());
    assert!(planned.delete.is_empty());
    assert_eq!(
        planned.status.desired,
        i32::try_from(unique.len()).unwrap_or(i32::MAX)
    );
    for image in spec.images.iter().take(8) {
        pull_job_spec(&ImagePullJobSpec {
            image: image.clone(),
            template: spec.template.clone(),
        });
    }
}

/// A pod whose every CRR container was replaced by a running one.
fn runtime_pod(view: &CrrView) -> RuntimePod {
    RuntimePod::new(
        view.containers
            .iter()
            .enumerate()
            .map(|(index, container)| RuntimeContainer {
                id: ContainerId {
                    runtime: "containerd".into(),
                    id: format!("new-{index}"),
                },
                name: container.name.clone(),
                state: RuntimeContainerState::Running,
                restart_count: 1,
                created_at: 1_000 + i64::try_from(index).unwrap(),
                started_at: Some(now() - Duration::from_secs(100)),
                sandbox_id: "sandbox".into(),
                pre_stop_handler: None,
                pod_deletion_grace_period_seconds: None,
                pod_termination_grace_period_seconds: None,
            })
            .collect(),
    )
}

/// The agent's CRR view and its decisions on it.
fn crr(view: CrrView) {
    assert_eq!(picking_order(&view, &view), std::cmp::Ordering::Equal);
    let _ = view.unready_acquisition.completion_message();
    let _ = runtime_name(&view).map_err(|e| e.completion_message());
    let pod = runtime_pod(&view);
    let states = compute_states(&view, &pod, now());
    assert_eq!(
        states.len(),
        view.containers.len(),
        "one state per container"
    );
    for (state, container) in states.iter().zip(&view.containers) {
        assert_eq!(state.name, container.name);
    }
    let _ = states_merge_patch(&states);
    let _ = decide(&view, &pod, now());
    // Computing again from what was just written changes nothing more than once.
    let mut written = view.clone();
    written.container_recreate_states = states;
    written.states_need_rewrite = false;
    let again = compute_states(&written, &pod, now());
    let _ = decide(&written, &pod, now());
    assert_eq!(again.len(), view.containers.len());
}

fn nodepodprobe(probe: &v1alpha1::NodePodProbe) {
    let desired = desired_status(&probe.spec, probe.status.as_ref(), &[], now());
    assert!(same_status(Some(&desired), &desired));
    let spec_probes: BTreeSet<(&str, &str)> = probe
        .spec
        .pod_probes
        .iter()
        .flatten()
        .flat_map(|pod| {
            pod.probes
                .iter()
                .flatten()
                .map(move |p| (pod.uid.as_str(), p.name.as_str()))
        })
        .collect();
    for pod in desired.pod_probe_statuses.iter().flatten() {
        for state in pod.probe_states.iter().flatten() {
            assert!(
                spec_probes.contains(&(pod.uid.as_str(), state.name.as_str())),
                "status keeps a probe the spec no longer has: {} {}",
                pod.uid,
                state.name
            );
        }
    }
}

fn nodeimage_tags<S>(
    images: Option<&BTreeMap<String, S>>,
    tags: impl Fn(&S) -> Vec<String>,
) -> Vec<(String, Vec<String>)> {
    images
        .into_iter()
        .flatten()
        .map(|(key, image)| (key.clone(), tags(image)))
        .collect()
}

fn run(text: &str, raw: &Value, json: bool, api_version: &str, kind: &str) {
    let any = !matches!(
        (api_version, kind),
        (
            "apps.kruise.io/v1alpha1" | "apps.kruise.io/v1beta1",
            "NodeImage" | "ImagePullJob" | "ImageListPullJob" | "ContainerRecreateRequest"
        ) | ("apps.kruise.io/v1alpha1", "NodePodProbe")
    );
    let is = |version: &str, name: &str| any || (api_version.ends_with(version) && kind == name);

    if is("v1alpha1", "NodeImage") {
        let typed = decode::<v1alpha1::NodeImage>(text, raw, json);
        let images = typed.as_ref().map(|n| {
            nodeimage_tags(n.spec.images.as_ref(), |i| {
                i.tags.iter().map(|t| t.tag.clone()).collect()
            })
        });
        nodeimage(raw, images);
    }
    if is("v1beta1", "NodeImage") {
        let typed = decode::<v1beta1::NodeImage>(text, raw, json);
        let images = typed.as_ref().map(|n| {
            nodeimage_tags(n.spec.images.as_ref(), |i| {
                i.tags.iter().map(|t| t.tag.clone()).collect()
            })
        });
        nodeimage(raw, images);
    }
    if is("v1alpha1", "ImagePullJob") {
        let typed = decode::<v1alpha1::ImagePullJob>(text, raw, json);
        imagepulljob(raw, typed.as_ref().map(|job| &*job.spec));
    }
    if is("v1beta1", "ImagePullJob") {
        let typed = decode::<v1beta1::ImagePullJob>(text, raw, json);
        imagepulljob(raw, typed.as_ref().map(|job| &*job.spec));
    }
    if is("v1alpha1", "ImageListPullJob")
        && let Some(list) = decode::<v1alpha1::ImageListPullJob>(text, raw, json)
    {
        imagelistpulljob(&list.spec, list.status.as_ref());
    }
    if is("v1beta1", "ImageListPullJob")
        && let Some(list) = decode::<v1beta1::ImageListPullJob>(text, raw, json)
    {
        imagelistpulljob(&list.spec, list.status.as_ref());
    }
    if is("v1alpha1", "ContainerRecreateRequest")
        && let Some(object) = decode::<v1alpha1::ContainerRecreateRequest>(text, raw, json)
    {
        let view = CrrView::from_v1alpha1(&object);
        assert_eq!(view.containers, object.spec.containers);
        crr(view);
    }
    if is("v1beta1", "ContainerRecreateRequest")
        && let Some(object) = decode::<v1beta1::ContainerRecreateRequest>(text, raw, json)
    {
        let view = CrrView::from_v1beta1(&object);
        assert_eq!(view.containers, object.spec.containers);
        crr(view);
    }
    if is("v1alpha1", "NodePodProbe")
        && let Some(probe) = decode::<v1alpha1::NodePodProbe>(text, raw, json)
    {
        nodepodprobe(&probe);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let json = text.trim_start().starts_with('{');
    let raw: Value = if json {
        match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(_) => return,
        }
    } else {
        match serde_yaml::from_str(text) {
            Ok(raw) => raw,
            Err(_) => return,
        }
    };
    let api_version = raw["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = raw["kind"].as_str().unwrap_or_default().to_owned();
    run(text, &raw, json, &api_version, &kind);
});
