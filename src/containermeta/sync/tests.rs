//! `manage` against the fake containerd.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::containermeta::envhash::env_from_metadata;
use crate::cri::fake::{ExecScript, KubeletContainer, KubeletPod};
use crate::podprobe::testing::World;

/// A pod whose `app` container reads label `color` into `COLOR`, matching the fake's pod.
fn pod(world: &World, color: &str, in_place_update_ready: Option<&str>) -> Pod {
    let id = format!("containerd://{}", world.id("app"));
    Pod {
        metadata: ObjectMeta {
            name: Some("pod".into()),
            namespace: Some("ns".into()),
            uid: Some(world.pod.uid.clone()),
            labels: Some(BTreeMap::from([("color".into(), color.into())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                env: Some(vec![env_from_metadata("COLOR", "metadata.labels['color']")]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "app".into(),
                container_id: Some(id),
                ..ContainerStatus::default()
            }]),
            conditions: in_place_update_ready.map(|status| {
                vec![PodCondition {
                    type_: "InPlaceUpdateReady".into(),
                    status: status.into(),
                    ..PodCondition::default()
                }]
            }),
            ..PodStatus::default()
        }),
    }
}

async fn world() -> World {
    World::start(
        KubeletPod::new("ns", "pod")
            .container(KubeletContainer::new("app", "busybox:1").hash(0xabc)),
    )
    .await
}

fn script_env(world: &World, output: &str) {
    world.handle.script_exec(
        &world.id("app"),
        ["env"],
        ExecScript::exit(0).with_stdout(output.to_owned()),
    );
}

async fn containers(world: &World) -> Vec<RuntimeContainer> {
    read_containers(&world.cri, &world.pod.uid).await.unwrap()
}

#[tokio::test]
async fn the_meta_carries_the_kubelets_hash_and_the_running_envs_hash() {
    let world = world().await;
    script_env(&world, "PATH=/bin\nCOLOR=red\n");
    let pod = pod(&world, "red", None);
    let sync = manage(&pod, &containers(&world).await, None, &world.cri, true).await;
    assert!(!sync.retry);
    assert!(sync.restarts.is_empty());
    let meta = &sync.meta.containers[0];
    assert_eq!(meta.name, "app");
    assert_eq!(
        meta.container_id,
        format!("containerd://{}", world.id("app"))
    );
    assert_eq!(meta.restart_count, 0);
    assert_eq!(meta.hashes.plain_hash, 0xabc);
    let expected = expected_hash_in(&pod.spec.as_ref().unwrap().containers[0], &pod);
    assert_eq!(meta.hashes.extracted_env_from_metadata_hash, expected);

    // Without the gate, no exec and no env hash.
    world.handle.clear_calls();
    let sync = manage(&pod, &containers(&world).await, None, &world.cri, false).await;
    assert_eq!(
        sync.meta.containers[0]
            .hashes
            .extracted_env_from_metadata_hash,
        0
    );
    assert_eq!(world.handle.count("ExecSync"), 0);
}

#[tokio::test]
async fn an_existing_entry_for_the_same_container_is_reused_without_exec() {
    let world = world().await;
    let pod = pod(&world, "red", None);
    let old = RuntimeContainerMetaSet {
        containers: vec![RuntimeContainerMeta {
            name: "app".into(),
            container_id: format!("containerd://{}", world.id("app")),
            restart_count: 0,
            hashes: RuntimeContainerHashes {
                plain_hash: 0xabc,
                extracted_env_from_metadata_hash: 42,
            },
        }],
    };
    world.handle.clear_calls();
    let sync = manage(
        &pod,
        &containers(&world).await,
        Some(&old),
        &world.cri,
        true,
    )
    .await;
    assert_eq!(sync.meta, old);
    assert_eq!(world.handle.count("ExecSync"), 0);
}

#[tokio::test]
async fn a_stale_env_restarts_the_container_only_during_an_in_place_update() {
    let world = world().await;
    // The container runs with COLOR=red; the pod's label now says blue.
    script_env(&world, "COLOR=red\n");
    let idle = pod(&world, "blue", None);
    let sync = manage(&idle, &containers(&world).await, None, &world.cri, true).await;
    assert!(sync.restarts.is_empty(), "no in-place update: no restart");
    let ready = pod(&world, "blue", Some("True"));
    assert!(
        manage(&ready, &containers(&world).await, None, &world.cri, true)
            .await
            .restarts
            .is_empty()
    );

    let updating = pod(&world, "blue", Some("False"));
    let sync = manage(&updating, &containers(&world).await, None, &world.cri, true).await;
    assert_eq!(
        sync.restarts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [format!("containerd://{}", world.id("app"))]
    );
    // Once the container runs with blue, nothing more to restart.
    script_env(&world, "COLOR=blue\n");
    let sync = manage(&updating, &containers(&world).await, None, &world.cri, true).await;
    assert!(sync.restarts.is_empty());
}

#[tokio::test]
async fn a_failed_env_read_is_retried_and_leaves_the_hash_out() {
    let world = world().await;
    world
        .handle
        .fail_next("ExecSync", 1, tonic::Code::Unknown, "exec failed");
    let pod = pod(&world, "red", Some("False"));
    let sync = manage(&pod, &containers(&world).await, None, &world.cri, true).await;
    assert!(sync.retry);
    assert!(sync.restarts.is_empty());
    assert_eq!(
        sync.meta.containers[0]
            .hashes
            .extracted_env_from_metadata_hash,
        0
    );
    assert!(!sync.meta.to_json().contains("extractedEnvFromMetadataHash"));
}

#[tokio::test]
async fn the_newest_container_of_a_name_is_reported() {
    let world = world().await;
    let new_id = world
        .handle
        .restart_container(&world.pod.uid, "app")
        .unwrap();
    let containers = containers(&world).await;
    let mut pod = pod(&world, "red", None);
    pod.status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .container_id = Some(format!("containerd://{new_id}"));
    let sync = manage(&pod, &containers, None, &world.cri, false).await;
    assert_eq!(
        sync.meta.containers[0].container_id,
        format!("containerd://{new_id}")
    );
    assert_eq!(sync.meta.containers[0].restart_count, 1);
}

#[tokio::test]
async fn the_runtime_is_named_by_the_first_container_status() {
    let world = world().await;
    let runtimes = RuntimeSet::new(vec![world.cri.clone()]).unwrap();
    let mut pod = pod(&world, "red", None);
    assert!(runtime_for_pod(&pod, &runtimes).unwrap().is_some());
    first_status(&mut pod).container_id = Some("cri-o://abc".into());
    assert_eq!(
        runtime_for_pod(&pod, &runtimes).unwrap_err(),
        RuntimeChoiceError::NotFound("cri-o".into())
    );
    first_status(&mut pod).container_id = Some("abc".into());
    assert!(matches!(
        runtime_for_pod(&pod, &runtimes),
        Err(RuntimeChoiceError::InvalidContainerId(_))
    ));
    first_status(&mut pod).container_id = None;
    assert!(
        runtime_for_pod(&pod, &runtimes).unwrap().is_none(),
        "nothing started yet"
    );
}

fn first_status(pod: &mut Pod) -> &mut ContainerStatus {
    &mut pod
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
}
