//! The fake served on a real unix socket and driven by a real tonic client.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

use super::*;
use crate::proto::runtime::v1::image_service_client::ImageServiceClient;
use crate::proto::runtime::v1::runtime_service_client::RuntimeServiceClient;

/// How long any poll in these tests may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// A fake served in a temporary directory, with clients for both services.
struct Harness {
    handle: FakeCriHandle,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    // Last, so the socket's directory outlives the server.
    _directory: tempfile::TempDir,
}

impl Harness {
    async fn start(fake: FakeCri) -> anyhow::Result<Self> {
        let directory = tempfile::tempdir()?;
        let handle = fake
            .serve_unix(directory.path().join("containerd.sock"))
            .await?;
        let channel = connect(handle.path()).await?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            handle,
            _directory: directory,
        })
    }
}

/// A channel to the unix socket at `path`, the way kruised's CRI client dials one.
async fn connect(path: &Path) -> anyhow::Result<Channel> {
    let path: PathBuf = path.to_owned();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await?;
    Ok(channel)
}

/// Polls `condition` until it holds, failing the test at [`DEADLINE`].
async fn eventually(what: &str, condition: impl Fn() -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while !condition() {
        anyhow::ensure!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn pull_request(image: &str) -> v1::PullImageRequest {
    v1::PullImageRequest {
        image: Some(v1::ImageSpec {
            image: image.to_owned(),
            ..v1::ImageSpec::default()
        }),
        ..v1::PullImageRequest::default()
    }
}

fn container_status_request(id: &str) -> v1::ContainerStatusRequest {
    v1::ContainerStatusRequest {
        container_id: id.to_owned(),
        verbose: false,
    }
}

fn sandbox_ip(fake: &FakeCri, sandbox_id: &str) -> Option<String> {
    fake.sandbox_status(sandbox_id)
        .and_then(|status| status.network)
        .map(|network| network.ip)
}

fn web_pod(name: &str) -> KubeletPod {
    KubeletPod::new("default", name)
        .label("app", "web")
        .container(KubeletContainer::new(
            "app",
            "127.0.0.1:5000/test/busybox:1",
        ))
        .container(KubeletContainer::new(
            "sidecar",
            "127.0.0.1:5000/test/pause:1",
        ))
}

#[tokio::test]
async fn version_reports_the_configured_runtime_and_cri_v1() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::builder().runtime_version("1.6.99").build()).await?;
    let version = harness
        .runtime
        .version(v1::VersionRequest {
            version: "0.1.0".to_owned(),
        })
        .await?
        .into_inner();
    assert_eq!(
        version,
        v1::VersionResponse {
            version: "0.1.0".to_owned(),
            runtime_name: "containerd".to_owned(),
            runtime_version: "1.6.99".to_owned(),
            runtime_api_version: "v1".to_owned(),
        }
    );
    assert!(harness.handle.endpoint().starts_with("unix:///"));
    assert!(harness.handle.endpoint().ends_with("/containerd.sock"));
    Ok(())
}

#[tokio::test]
async fn status_reports_runtime_and_network_ready() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    let status = harness
        .runtime
        .status(v1::StatusRequest::default())
        .await?
        .into_inner();
    let conditions: Vec<_> = status
        .status
        .context("no runtime status")?
        .conditions
        .into_iter()
        .map(|condition| (condition.r#type, condition.status))
        .collect();
    assert_eq!(
        conditions,
        [
            ("RuntimeReady".to_owned(), true),
            ("NetworkReady".to_owned(), true)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_pulled_image_is_listed_normalised_and_pulling_it_again_keeps_its_id()
-> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    let first = harness
        .images
        .pull_image(pull_request("busybox:1"))
        .await?
        .into_inner()
        .image_ref;
    let again = harness
        .images
        .pull_image(pull_request("docker.io/library/busybox:1"))
        .await?
        .into_inner()
        .image_ref;
    assert_eq!(first, again);
    assert!(first.starts_with("sha256:") && first.len() == 71, "{first}");

    let images = harness
        .images
        .list_images(v1::ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!(image.id, first);
    assert_eq!(image.repo_tags, ["docker.io/library/busybox:1"]);
    assert_eq!(image.repo_digests.len(), 1);
    assert!(image.repo_digests[0].starts_with("docker.io/library/busybox@sha256:"));
    assert!(image.size > 0);

    // The repo digest names the same image.
    let by_digest = harness
        .images
        .pull_image(pull_request(&image.repo_digests[0]))
        .await?
        .into_inner()
        .image_ref;
    assert_eq!(by_digest, first);
    assert_eq!(harness.handle.pulled_images().len(), 3);
    Ok(())
}

#[tokio::test]
async fn image_status_of_a_missing_image_is_empty_and_remove_is_idempotent() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    let status_of = |image: &str| v1::ImageStatusRequest {
        image: Some(v1::ImageSpec {
            image: image.to_owned(),
            ..v1::ImageSpec::default()
        }),
        verbose: false,
    };
    let missing = harness
        .images
        .image_status(status_of("busybox:1"))
        .await?
        .into_inner();
    assert_eq!(missing.image, None);

    let id = harness.handle.add_image("busybox:1")?;
    let found = harness
        .images
        .image_status(status_of(&id))
        .await?
        .into_inner();
    assert_eq!(
        found.image.map(|image| image.repo_tags),
        Some(vec!["docker.io/library/busybox:1".to_owned()])
    );

    for _ in 0..2 {
        harness
            .images
            .remove_image(v1::RemoveImageRequest {
                image: Some(v1::ImageSpec {
                    image: "busybox:1".to_owned(),
                    ..v1::ImageSpec::default()
                }),
            })
            .await?;
    }
    assert!(!harness.handle.has_image(&id));

    let info = harness
        .images
        .image_fs_info(v1::ImageFsInfoRequest {})
        .await?
        .into_inner();
    assert_eq!(info.image_filesystems.len(), 1);
    assert!(info.image_filesystems[0].timestamp > 0);
    Ok(())
}

#[tokio::test]
async fn a_missing_tag_fails_the_pull_with_containerds_not_found_text() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    harness
        .handle
        .script_pull("127.0.0.1:5000/test/nope:1", PullScript::not_found());
    let status = harness
        .images
        .pull_image(pull_request("127.0.0.1:5000/test/nope:1"))
        .await
        .err()
        .context("the pull succeeded")?;
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "failed to pull and unpack image \"127.0.0.1:5000/test/nope:1\": failed to resolve reference \"127.0.0.1:5000/test/nope:1\": 127.0.0.1:5000/test/nope:1: not found"
    );
    assert!(harness.handle.images().is_empty());

    let invalid = harness
        .images
        .pull_image(pull_request("Busybox"))
        .await
        .err()
        .context("pulled Busybox")?;
    assert_eq!(invalid.code(), Code::Unknown);
    assert_eq!(
        invalid.message(),
        "failed to parse image reference \"Busybox\": invalid reference format: repository name must be lowercase"
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_container_is_not_found_with_containerds_text() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    let expected = "an error occurred when try to find container \"doesnotexist\": not found";

    let status = harness
        .runtime
        .container_status(container_status_request("doesnotexist"))
        .await
        .err()
        .context("ContainerStatus succeeded")?;
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, expected)
    );

    let stop = harness
        .runtime
        .stop_container(v1::StopContainerRequest {
            container_id: "doesnotexist".to_owned(),
            timeout: 2,
        })
        .await
        .err()
        .context("StopContainer succeeded")?;
    assert_eq!((stop.code(), stop.message()), (Code::NotFound, expected));

    let exec = harness
        .runtime
        .exec_sync(v1::ExecSyncRequest {
            container_id: "doesnotexist".to_owned(),
            cmd: vec!["true".to_owned()],
            timeout: 1,
        })
        .await
        .err()
        .context("ExecSync succeeded")?;
    assert_eq!(
        (exec.code(), exec.message()),
        (
            Code::NotFound,
            "failed to exec in container: failed to find container \"doesnotexist\" in store: not found"
        )
    );

    // Removing what is not there is not an error.
    harness
        .runtime
        .remove_container(v1::RemoveContainerRequest {
            container_id: "doesnotexist".to_owned(),
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn fail_next_fails_exactly_n_calls_then_the_method_recovers() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    harness
        .handle
        .fail_next("ListImages", 2, Code::Internal, "boom");
    let mut codes = Vec::new();
    for _ in 0..4 {
        let result = harness
            .images
            .list_images(v1::ListImagesRequest::default())
            .await;
        codes.push(
            result
                .err()
                .map(|status| (status.code(), status.message().to_owned())),
        );
    }
    let boom = Some((Code::Internal, "boom".to_owned()));
    assert_eq!(codes, [boom.clone(), boom, None, None]);
    assert_eq!(harness.handle.count(Method::ListImages), 4);
    // Other methods were never affected.
    harness
        .images
        .image_fs_info(v1::ImageFsInfoRequest {})
        .await?;
    Ok(())
}

#[tokio::test]
async fn fail_always_lasts_until_cleared_and_unavailable_fails_every_call() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    harness
        .handle
        .fail_always(Method::Version, Code::Unknown, "no");
    for _ in 0..3 {
        let status = harness
            .runtime
            .version(v1::VersionRequest::default())
            .await
            .err();
        assert_eq!(status.map(|status| status.code()), Some(Code::Unknown));
    }
    harness.handle.clear_failures();
    harness
        .runtime
        .version(v1::VersionRequest::default())
        .await?;

    harness.handle.set_unavailable(true);
    let status = harness
        .images
        .list_images(v1::ListImagesRequest::default())
        .await
        .err();
    assert_eq!(status.map(|status| status.code()), Some(Code::Unavailable));
    harness.handle.set_unavailable(false);
    harness
        .images
        .list_images(v1::ListImagesRequest::default())
        .await?;
    assert_eq!(harness.handle.count("ListImages"), 2);
    Ok(())
}

#[tokio::test]
async fn latency_delays_only_its_method() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    let latency = Duration::from_millis(200);
    harness.handle.set_latency(Method::ListContainers, latency);

    let started = Instant::now();
    harness
        .runtime
        .list_containers(v1::ListContainersRequest::default())
        .await?;
    assert!(started.elapsed() >= latency, "took {:?}", started.elapsed());

    let started = Instant::now();
    harness
        .runtime
        .version(v1::VersionRequest::default())
        .await?;
    assert!(started.elapsed() < latency, "took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn held_pulls_run_concurrently_and_the_maximum_is_observed() -> anyhow::Result<()> {
    let harness = Harness::start(FakeCri::new()).await?;
    harness.handle.hold_pulls();
    let pulls: Vec<_> = (0..3)
        .map(|index| {
            let mut images = harness.images.clone();
            tokio::spawn(async move {
                images
                    .pull_image(pull_request(&format!("busybox:{index}")))
                    .await
            })
        })
        .collect();
    eventually("three pulls in flight", || {
        harness.handle.in_flight_pulls() == 3
    })
    .await?;
    assert!(
        harness.handle.images().is_empty(),
        "held pulls must not have finished"
    );

    harness.handle.release_pulls();
    for pull in pulls {
        pull.await??;
    }
    let stats = harness.handle.pull_stats();
    assert_eq!(
        stats,
        PullStats {
            in_flight: 0,
            max_in_flight: 3,
            started: 3,
            succeeded: 3,
            failed: 0,
            cancelled: 0,
        }
    );
    assert_eq!(harness.handle.max_concurrent_pulls(), 3);
    assert_eq!(harness.handle.images().len(), 3);
    Ok(())
}

#[tokio::test]
async fn a_scripted_pull_takes_its_time_and_a_cancelled_one_adds_no_image() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    let duration = Duration::from_millis(150);
    harness
        .handle
        .script_pull("busybox:slow", PullScript::succeed_after(duration));

    let started = Instant::now();
    harness
        .images
        .pull_image(pull_request("docker.io/library/busybox:slow"))
        .await?;
    assert!(
        started.elapsed() >= duration,
        "took {:?}",
        started.elapsed()
    );

    harness.handle.script_pull(
        "busybox:stuck",
        PullScript::succeed_after(Duration::from_secs(3600)),
    );
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        harness.images.pull_image(pull_request("busybox:stuck")),
    )
    .await;
    assert!(gave_up.is_err(), "the stuck pull finished");
    eventually("the stuck pull to be cancelled", || {
        harness.handle.pull_stats().cancelled == 1
    })
    .await?;
    assert_eq!(harness.handle.in_flight_pulls(), 0);
    assert!(!harness.handle.has_image("busybox:stuck"));
    Ok(())
}

#[tokio::test]
async fn one_shot_pull_scripts_come_before_the_standing_one() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    harness.handle.script_pull(
        "busybox",
        PullScript::fail(Code::Unknown, "registry is down"),
    );
    harness
        .handle
        .script_pull_once("busybox", PullScript::succeed_after(Duration::ZERO));
    harness
        .images
        .pull_image(pull_request("busybox:latest"))
        .await?;
    let status = harness
        .images
        .pull_image(pull_request("busybox"))
        .await
        .err();
    assert_eq!(
        status.map(|status| (status.code(), status.message().to_owned())),
        Some((Code::Unknown, "registry is down".to_owned()))
    );
    Ok(())
}

#[tokio::test]
async fn list_containers_honours_id_state_sandbox_and_label_filters() -> anyhow::Result<()> {
    let harness = Harness::start(FakeCri::new()).await?;
    let web_0 = harness.handle.add_pod_with_containers(web_pod("web-0"))?;
    let web_1 = harness
        .handle
        .add_pod_with_containers(web_pod("web-1").label("tier", "canary"))?;
    let exited = web_1
        .container_id("sidecar")
        .context("no sidecar")?
        .to_owned();
    harness.handle.exit_container(&exited, 3)?;
    assert!(
        harness.handle.calls().is_empty(),
        "helpers must not record calls"
    );

    let list = |filter: v1::ContainerFilter| {
        let mut runtime = harness.runtime.clone();
        async move {
            let containers = runtime
                .list_containers(v1::ListContainersRequest {
                    filter: Some(filter),
                })
                .await?
                .into_inner()
                .containers;
            let mut ids: Vec<String> = containers
                .into_iter()
                .map(|container| container.id)
                .collect();
            ids.sort();
            anyhow::Ok(ids)
        }
    };
    let sorted = |ids: &[&str]| {
        let mut ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
        ids.sort();
        ids
    };
    let app_0 = web_0.container_id("app").context("no app")?;
    let sidecar_0 = web_0.container_id("sidecar").context("no sidecar")?;
    let app_1 = web_1.container_id("app").context("no app")?;

    assert_eq!(list(v1::ContainerFilter::default()).await?.len(), 4);
    let by_uid = v1::ContainerFilter {
        label_selector: HashMap::from([(POD_UID_LABEL.to_owned(), web_0.uid.clone())]),
        ..v1::ContainerFilter::default()
    };
    assert_eq!(list(by_uid).await?, sorted(&[app_0, sidecar_0]));
    let by_id = v1::ContainerFilter {
        id: app_1.to_owned(),
        ..v1::ContainerFilter::default()
    };
    assert_eq!(list(by_id).await?, sorted(&[app_1]));
    let by_sandbox = v1::ContainerFilter {
        pod_sandbox_id: web_1.sandbox_id.clone(),
        ..v1::ContainerFilter::default()
    };
    assert_eq!(list(by_sandbox).await?, sorted(&[app_1, &exited]));
    let exited_only = v1::ContainerFilter {
        state: Some(v1::ContainerStateValue {
            state: v1::ContainerState::ContainerExited as i32,
        }),
        ..v1::ContainerFilter::default()
    };
    assert_eq!(list(exited_only).await?, sorted(&[&exited]));
    // Labels are ANDed: a container must carry every pair. Pod labels are not copied
    // onto containers by the kubelet, so only the pod-identity labels select here.
    let both = v1::ContainerFilter {
        label_selector: HashMap::from([
            (POD_NAME_LABEL.to_owned(), "web-1".to_owned()),
            (CONTAINER_NAME_LABEL.to_owned(), "app".to_owned()),
        ]),
        ..v1::ContainerFilter::default()
    };
    assert_eq!(list(both).await?, sorted(&[app_1]));
    let none = v1::ContainerFilter {
        label_selector: HashMap::from([
            (POD_NAME_LABEL.to_owned(), "web-1".to_owned()),
            (CONTAINER_NAME_LABEL.to_owned(), "nope".to_owned()),
        ]),
        ..v1::ContainerFilter::default()
    };
    assert!(list(none).await?.is_empty());
    assert_eq!(harness.handle.count(Method::ListContainers), 7);
    Ok(())
}

#[tokio::test]
async fn the_kubelet_helper_writes_kubelet_labels_and_annotations() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    let pod = harness.handle.add_pod_with_containers(
        KubeletPod::new("ns", "p")
            .uid("0b5c7d0e-1111-4222-8333-444455556666")
            .termination_grace_period_seconds(Some(45))
            .container(
                KubeletContainer::new("app", "busybox:1")
                    .hash(0xdead_beef)
                    .pre_stop_exec(["sh", "-c", "sleep 1"]),
            ),
    )?;
    let id = pod.container_id("app").context("no app")?;
    let status = harness
        .runtime
        .container_status(container_status_request(id))
        .await?
        .into_inner()
        .status
        .context("no status")?;
    assert_eq!(status.state(), v1::ContainerState::ContainerRunning);
    assert!(status.started_at >= status.created_at && status.created_at > 0);
    assert_eq!(
        status.labels.get(POD_UID_LABEL).map(String::as_str),
        Some("0b5c7d0e-1111-4222-8333-444455556666")
    );
    assert_eq!(
        status.labels.get(POD_NAMESPACE_LABEL).map(String::as_str),
        Some("ns")
    );
    assert_eq!(
        status.labels.get(CONTAINER_NAME_LABEL).map(String::as_str),
        Some("app")
    );
    assert_eq!(
        status
            .annotations
            .get(CONTAINER_HASH_ANNOTATION)
            .map(String::as_str),
        Some("deadbeef")
    );
    assert_eq!(
        status
            .annotations
            .get(CONTAINER_RESTART_COUNT_ANNOTATION)
            .map(String::as_str),
        Some("0")
    );
    assert_eq!(
        status
            .annotations
            .get(POD_TERMINATION_GRACE_PERIOD_ANNOTATION)
            .map(String::as_str),
        Some("45")
    );
    assert_eq!(
        status
            .annotations
            .get(CONTAINER_PRE_STOP_HANDLER_ANNOTATION)
            .map(String::as_str),
        Some(r#"{"exec":{"command":["sh","-c","sleep 1"]}}"#)
    );
    // containerd shows the image's tag and repo digest, not the id the kubelet used.
    assert_eq!(
        status.image.map(|image| image.image).as_deref(),
        Some("docker.io/library/busybox:1")
    );
    assert!(
        status
            .image_ref
            .starts_with("docker.io/library/busybox@sha256:")
    );
    // The sandbox brought the pause image in, as containerd does.
    assert!(harness.handle.has_image(DEFAULT_SANDBOX_IMAGE));
    let sandbox = harness
        .handle
        .sandbox_status(&pod.sandbox_id)
        .context("no sandbox")?;
    assert_eq!(
        sandbox.network.map(|network| network.ip).as_deref(),
        Some(DEFAULT_POD_IP)
    );
    Ok(())
}

#[tokio::test]
async fn stop_leaves_the_container_exited_with_137_or_its_trap_code() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    let pod = harness.handle.add_pod_with_containers(web_pod("web-0"))?;
    let app = pod.container_id("app").context("no app")?;
    let sidecar = pod.container_id("sidecar").context("no sidecar")?;
    harness.handle.set_stop_behaviour(
        sidecar,
        StopBehaviour::ExitsOnSigterm {
            exit_code: 0,
            after: Duration::from_millis(50),
        },
    )?;

    for id in [app, sidecar] {
        harness
            .runtime
            .stop_container(v1::StopContainerRequest {
                container_id: id.to_owned(),
                timeout: 30,
            })
            .await?;
    }
    let status_of = |id: &str| {
        let mut runtime = harness.runtime.clone();
        let request = container_status_request(id);
        async move {
            anyhow::Ok(
                runtime
                    .container_status(request)
                    .await?
                    .into_inner()
                    .status
                    .context("no status")?,
            )
        }
    };
    let app_status = status_of(app).await?;
    assert_eq!(app_status.state(), v1::ContainerState::ContainerExited);
    assert_eq!(
        (app_status.exit_code, app_status.reason.as_str()),
        (137, "Error")
    );
    assert!(app_status.finished_at >= app_status.started_at && app_status.started_at > 0);
    let sidecar_status = status_of(sidecar).await?;
    assert_eq!(
        (sidecar_status.exit_code, sidecar_status.reason.as_str()),
        (0, "Completed")
    );

    // Stopping again is a no-op; exec in an exited container fails as in containerd.
    harness
        .runtime
        .stop_container(v1::StopContainerRequest {
            container_id: app.to_owned(),
            timeout: 0,
        })
        .await?;
    let exec = harness
        .runtime
        .exec_sync(v1::ExecSyncRequest {
            container_id: app.to_owned(),
            cmd: vec!["env".to_owned()],
            timeout: 3,
        })
        .await
        .err()
        .context("exec in an exited container succeeded")?;
    assert_eq!(
        (exec.code(), exec.message()),
        (
            Code::Unknown,
            "failed to exec in container: container is in CONTAINER_EXITED state"
        )
    );
    Ok(())
}

#[tokio::test]
async fn a_restart_creates_attempt_1_with_a_new_id_in_the_same_sandbox() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    let pod = harness.handle.add_pod_with_containers(web_pod("web-0"))?;
    let first = pod.container_id("app").context("no app")?.to_owned();
    harness
        .runtime
        .stop_container(v1::StopContainerRequest {
            container_id: first.clone(),
            timeout: 2,
        })
        .await?;

    let second = harness.handle.restart_container(&pod.uid, "app")?;
    assert_ne!(second, first);
    assert_eq!(
        harness.handle.container_id(&pod.uid, "app"),
        Some(second.clone())
    );
    let status = harness
        .runtime
        .container_status(container_status_request(&second))
        .await?
        .into_inner()
        .status
        .context("no status")?;
    assert_eq!(
        status.metadata.as_ref().map(|metadata| metadata.attempt),
        Some(1)
    );
    assert_eq!(
        status
            .annotations
            .get(CONTAINER_RESTART_COUNT_ANNOTATION)
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(status.state(), v1::ContainerState::ContainerRunning);

    let in_sandbox = harness
        .runtime
        .list_containers(v1::ListContainersRequest {
            filter: Some(v1::ContainerFilter {
                pod_sandbox_id: pod.sandbox_id.clone(),
                label_selector: HashMap::from([(
                    CONTAINER_NAME_LABEL.to_owned(),
                    "app".to_owned(),
                )]),
                ..v1::ContainerFilter::default()
            }),
        })
        .await?
        .into_inner()
        .containers;
    let attempts: Vec<_> = in_sandbox
        .iter()
        .map(|container| {
            (
                container.id.clone(),
                container.state(),
                container.metadata.as_ref().map(|m| m.attempt),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (first, v1::ContainerState::ContainerExited, Some(0)),
            (second, v1::ContainerState::ContainerRunning, Some(1)),
        ]
    );

    // An in-place update: the kubelet recreates with the new image and hash.
    let third = harness
        .handle
        .restart_container_with(&pod.uid, "app", |config| {
            if let Some(image) = config.image.as_mut() {
                "127.0.0.1:5000/test/busybox:2".clone_into(&mut image.image);
            }
            config
                .annotations
                .insert(CONTAINER_HASH_ANNOTATION.to_owned(), "abc".to_owned());
        })?;
    let status = harness
        .handle
        .container_status(&third)
        .context("no status")?;
    assert_eq!(
        status.image.map(|image| image.image).as_deref(),
        Some("127.0.0.1:5000/test/busybox:2")
    );
    assert_eq!(status.metadata.map(|metadata| metadata.attempt), Some(2));
    Ok(())
}

#[tokio::test]
async fn exec_sync_returns_its_script_and_times_out_like_containerd() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    let pod = harness.handle.add_pod_with_containers(web_pod("web-0"))?;
    let app = pod.container_id("app").context("no app")?;
    harness
        .handle
        .script_exec(app, ["env"], ExecScript::exit(0).with_stdout("A=1\n"));
    harness
        .handle
        .script_exec(app, ["probe"], ExecScript::exit(1).with_stderr("unhealthy"));
    harness.handle.script_exec(
        app,
        ["sleep"],
        ExecScript::exit(0).taking(Duration::from_secs(3600)),
    );
    let exec = |cmd: &str, timeout: i64| v1::ExecSyncRequest {
        container_id: app.to_owned(),
        cmd: vec![cmd.to_owned()],
        timeout,
    };

    let env = harness
        .runtime
        .exec_sync(exec("env", 3))
        .await?
        .into_inner();
    assert_eq!(
        (env.exit_code, env.stdout.as_slice()),
        (0, b"A=1\n".as_slice())
    );
    let probe = harness
        .runtime
        .exec_sync(exec("probe", 1))
        .await?
        .into_inner();
    assert_eq!(
        (probe.exit_code, probe.stderr.as_slice()),
        (1, b"unhealthy".as_slice())
    );
    let unscripted = harness
        .runtime
        .exec_sync(exec("true", 1))
        .await?
        .into_inner();
    assert_eq!(unscripted, v1::ExecSyncResponse::default());

    let started = Instant::now();
    let timeout = harness
        .runtime
        .exec_sync(exec("sleep", 1))
        .await
        .err()
        .context("sleep finished")?;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        (timeout.code(), timeout.message()),
        (
            Code::DeadlineExceeded,
            "failed to exec in container: timeout 1s exceeded: context deadline exceeded"
        )
    );
    Ok(())
}

#[tokio::test]
async fn calls_are_recorded_in_order_with_their_requests() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    harness
        .runtime
        .version(v1::VersionRequest::default())
        .await?;
    harness.images.pull_image(pull_request("busybox:1")).await?;
    harness
        .images
        .list_images(v1::ListImagesRequest::default())
        .await?;

    let methods: Vec<Method> = harness.handle.calls().iter().map(Call::method).collect();
    assert_eq!(
        methods,
        [Method::Version, Method::PullImage, Method::ListImages]
    );
    assert_eq!(
        harness.handle.calls_of("PullImage"),
        [Call::PullImage(Box::new(pull_request("busybox:1")))]
    );
    harness.handle.clear_calls();
    assert!(harness.handle.calls().is_empty());
    Ok(())
}

#[tokio::test]
async fn sandboxes_follow_containerds_rules() -> anyhow::Result<()> {
    let mut harness = Harness::start(FakeCri::new()).await?;
    let config = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: "p".to_owned(),
            uid: "u".to_owned(),
            namespace: "ns".to_owned(),
            attempt: 0,
        }),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: v1::NamespaceMode::Node as i32,
                    ..v1::NamespaceOption::default()
                }),
                ..v1::LinuxSandboxSecurityContext::default()
            }),
            ..v1::LinuxPodSandboxConfig::default()
        }),
        ..v1::PodSandboxConfig::default()
    };
    let run = v1::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    };
    let sandbox_id = harness
        .runtime
        .run_pod_sandbox(run.clone())
        .await?
        .into_inner()
        .pod_sandbox_id;
    let duplicate = harness
        .runtime
        .run_pod_sandbox(run)
        .await
        .err()
        .context("name reused")?;
    assert_eq!(
        duplicate.message(),
        format!(
            "failed to reserve sandbox name \"p_ns_u_0\": name \"p_ns_u_0\" is reserved for \"{sandbox_id}\""
        )
    );

    // containerd reports no IP for a host-network sandbox.
    let status = harness
        .runtime
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("no status")?;
    assert_eq!(status.state(), v1::PodSandboxState::SandboxReady);
    assert_eq!(
        status.network.map(|network| network.ip).as_deref(),
        Some("")
    );
    harness.handle.set_sandbox_ip(&sandbox_id, "10.0.0.7")?;
    assert_eq!(
        sandbox_ip(&harness.handle, &sandbox_id).as_deref(),
        Some("10.0.0.7")
    );

    let create = |image: &str| v1::CreateContainerRequest {
        pod_sandbox_id: sandbox_id.clone(),
        config: Some(v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: "c".to_owned(),
                attempt: 0,
            }),
            image: Some(v1::ImageSpec {
                image: image.to_owned(),
                ..v1::ImageSpec::default()
            }),
            ..v1::ContainerConfig::default()
        }),
        sandbox_config: Some(config.clone()),
    };
    let missing = harness
        .runtime
        .create_container(create("busybox:9"))
        .await
        .err()
        .context("created")?;
    assert_eq!(
        (missing.code(), missing.message()),
        (
            Code::NotFound,
            "failed to resolve image \"busybox:9\": not found"
        )
    );
    harness.handle.add_image("busybox:9")?;
    let container_id = harness
        .runtime
        .create_container(create("busybox:9"))
        .await?
        .into_inner()
        .container_id;
    let created = harness
        .handle
        .container_status(&container_id)
        .context("no status")?;
    assert_eq!(
        (created.state(), created.started_at),
        (v1::ContainerState::ContainerCreated, 0)
    );
    harness
        .runtime
        .start_container(v1::StartContainerRequest {
            container_id: container_id.clone(),
        })
        .await?;

    harness
        .runtime
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: sandbox_id.clone(),
        })
        .await?;
    // A stopped sandbox's network namespace is closed: no IP.
    assert_eq!(
        sandbox_ip(&harness.handle, &sandbox_id).as_deref(),
        Some("")
    );
    let stopped = harness
        .handle
        .container_status(&container_id)
        .context("no status")?;
    assert_eq!(
        (stopped.state(), stopped.exit_code),
        (v1::ContainerState::ContainerExited, 137)
    );
    let not_ready = v1::ListPodSandboxRequest {
        filter: Some(v1::PodSandboxFilter {
            state: Some(v1::PodSandboxStateValue {
                state: v1::PodSandboxState::SandboxNotready as i32,
            }),
            ..v1::PodSandboxFilter::default()
        }),
    };
    let items = harness
        .runtime
        .list_pod_sandbox(not_ready)
        .await?
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);

    for _ in 0..2 {
        harness
            .runtime
            .remove_pod_sandbox(v1::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox_id.clone(),
            })
            .await?;
    }
    assert!(harness.handle.containers().is_empty() && harness.handle.sandboxes().is_empty());
    let gone = harness
        .runtime
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id,
            verbose: false,
        })
        .await
        .err()
        .context("removed sandbox still has a status")?;
    assert_eq!(
        (gone.code(), gone.message()),
        (
            Code::NotFound,
            "an error occurred when try to find sandbox: not found"
        )
    );
    Ok(())
}

#[tokio::test]
async fn a_restarted_server_keeps_its_world_and_shutdown_ends_waiting_calls() -> anyhow::Result<()>
{
    let directory = tempfile::tempdir()?;
    let socket = directory.path().join("containerd.sock");
    let fake = FakeCri::new();
    let handle = fake.serve_unix(&socket).await?;
    let mut images = ImageServiceClient::new(connect(&socket).await?);
    images.pull_image(pull_request("busybox:1")).await?;

    fake.script_pull(
        "busybox:stuck",
        PullScript::succeed_after(Duration::from_secs(3600)),
    );
    let stuck = tokio::spawn({
        let mut images = images.clone();
        async move { images.pull_image(pull_request("busybox:stuck")).await }
    });
    eventually("the stuck pull to start", || fake.in_flight_pulls() == 1).await?;
    handle.shutdown().await?;
    let ended = stuck.await?.err().context("the stuck pull succeeded")?;
    assert_eq!(ended.code(), Code::Unavailable);
    assert!(!socket.exists());

    let handle = fake.serve_unix(&socket).await?;
    let mut images = ImageServiceClient::new(connect(&socket).await?);
    let listed = images
        .list_images(v1::ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    assert_eq!(listed.len(), 1);

    drop(handle);
    assert!(!socket.exists());
    assert!(UnixStream::connect(&socket).await.is_err());
    Ok(())
}

// ---- containerd's content and version services ---------------------------------------

mod content_service {
    //! A progress poller's view of scripted pulls through containerd's content service,
    //! checked against what spec/pull-progress.md measured.

    use std::collections::{BTreeMap, BTreeSet};

    use tonic::metadata::MetadataValue;

    use super::*;
    use crate::proto::containerd::services::content::v1 as content;
    use crate::proto::containerd::services::content::v1::content_client::ContentClient;
    use crate::proto::containerd::services::version::v1::version_client::VersionClient;

    const MIB: u64 = 1 << 20;

    /// A request in containerd namespace `namespace` (none for `None`).
    fn in_namespace<T>(message: T, namespace: Option<&str>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(namespace) = namespace
            && let Ok(value) = MetadataValue::try_from(namespace)
        {
            request.metadata_mut().insert(NAMESPACE_HEADER, value);
        }
        request
    }

    fn cri<T>(message: T) -> tonic::Request<T> {
        in_namespace(message, Some(CRI_NAMESPACE))
    }

    async fn statuses(
        client: &mut ContentClient<Channel>,
        namespace: Option<&str>,
        filters: &[String],
    ) -> Result<Vec<content::Status>, tonic::Status> {
        let request = content::ListStatusesRequest {
            filters: filters.to_vec(),
        };
        Ok(client
            .list_statuses(in_namespace(request, namespace))
            .await?
            .into_inner()
            .statuses)
    }

    async fn info(
        client: &mut ContentClient<Channel>,
        digest: &str,
    ) -> Result<content::Info, tonic::Status> {
        let request = content::InfoRequest {
            digest: digest.to_owned(),
        };
        client
            .info(cri(request))
            .await?
            .into_inner()
            .info
            .ok_or_else(|| tonic::Status::internal("no info"))
    }

    /// `Read` as (offset, bytes) messages.
    async fn read(
        client: &mut ContentClient<Channel>,
        digest: &str,
        offset: i64,
        size: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, tonic::Status> {
        let request = content::ReadContentRequest {
            digest: digest.to_owned(),
            offset,
            size,
        };
        let mut stream = client.read(cri(request)).await?.into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await? {
            messages.push((message.offset, message.data));
        }
        Ok(messages)
    }

    /// `Content/List`, through the generated client.
    async fn list(
        channel: Channel,
        namespace: &str,
        filters: &[&str],
    ) -> anyhow::Result<Vec<content::Info>> {
        let request = content::ListContentRequest {
            filters: filters.iter().map(|filter| (*filter).to_owned()).collect(),
        };
        let mut stream = ContentClient::new(channel)
            .list(in_namespace(request, Some(namespace)))
            .await?
            .into_inner();
        let mut infos = Vec::new();
        while let Some(batch) = stream.message().await? {
            infos.extend(batch.info);
        }
        Ok(infos)
    }

    /// The `sha256:<hex>` at the end of a ref, parsed as pull-progress.md advises.
    fn ref_digest(reference: &str) -> &str {
        reference
            .rfind("sha256:")
            .map_or(reference, |start| &reference[start..])
    }

    /// What one poll of a scripted pull saw.
    #[derive(Debug)]
    struct Poll {
        pull_in_flight: bool,
        statuses: Vec<content::Status>,
        committed_layers: usize,
    }

    /// Polls ListStatuses (and Info for each layer) every 10 ms until `pull` ends.
    async fn poll_during(
        client: &mut ContentClient<Channel>,
        layers: &[Descriptor],
        pull: &tokio::task::JoinHandle<
            Result<tonic::Response<v1::PullImageResponse>, tonic::Status>,
        >,
    ) -> anyhow::Result<Vec<Poll>> {
        let started = Instant::now();
        let mut polls = Vec::new();
        loop {
            let pull_in_flight = !pull.is_finished();
            let statuses = statuses(client, Some(CRI_NAMESPACE), &[]).await?;
            let mut committed_layers = 0;
            for layer in layers {
                committed_layers += usize::from(info(client, &layer.digest).await.is_ok());
            }
            polls.push(Poll {
                pull_in_flight,
                statuses,
                committed_layers,
            });
            if !pull_in_flight {
                return Ok(polls);
            }
            anyhow::ensure!(started.elapsed() < DEADLINE, "the pull did not end");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_four_layer_pull_shows_three_growing_ingests_at_most_that_vanish_when_committed()
    -> anyhow::Result<()> {
        let fake = FakeCri::new();
        let image_name = "127.0.0.1:5000/test/many:1";
        let sizes = [3 * MIB, 2 * MIB, 4 * MIB, 2 * MIB + 12_345];
        fake.script_pull(
            image_name,
            PullScript::succeed_after(Duration::from_millis(20))
                .layers(sizes)
                .bytes_per_second(40 * MIB)
                .unpack_taking(Duration::from_millis(150)),
        );
        let image = fake
            .scripted_image(image_name)
            .context("the script models content")?;
        let harness = Harness::start(fake.clone()).await?;
        let mut client = ContentClient::new(connect(harness.handle.path()).await?);

        let pull = tokio::spawn({
            let mut images = harness.images.clone();
            async move { images.pull_image(pull_request(image_name)).await }
        });
        let polls = poll_during(&mut client, &image.layers, &pull).await?;
        let image_ref = pull.await??.into_inner().image_ref;
        assert_eq!(
            image_ref, image.config.digest,
            "the image id is the config digest"
        );

        // Every layer was seen, under `layer-<digest>`, with its manifest size as total.
        let sizes_by_ref: BTreeMap<String, u64> = image
            .layers
            .iter()
            .map(|layer| (format!("layer-{}", layer.digest), layer.size))
            .collect();
        let seen: BTreeSet<&str> = polls
            .iter()
            .flat_map(|poll| poll.statuses.iter().map(|status| status.r#ref.as_str()))
            .collect();
        assert_eq!(
            seen,
            sizes_by_ref
                .keys()
                .map(String::as_str)
                .collect::<BTreeSet<_>>()
        );

        // At most three at once, and three at some point.
        let most = polls.iter().map(|poll| poll.statuses.len()).max();
        assert_eq!(most, Some(3));

        // Per ref: offsets never go down and grow in 1 MiB steps; total and started_at
        // never change; once gone, a status never comes back and the layer is committed.
        let mut last: BTreeMap<&str, &content::Status> = BTreeMap::new();
        let mut gone: BTreeSet<&str> = BTreeSet::new();
        for poll in &polls {
            let present: BTreeSet<&str> = poll.statuses.iter().map(|s| s.r#ref.as_str()).collect();
            for status in &poll.statuses {
                let reference = status.r#ref.as_str();
                assert!(!gone.contains(reference), "{reference} came back");
                let total = u64::try_from(status.total)?;
                let offset = u64::try_from(status.offset)?;
                assert_eq!(Some(&total), sizes_by_ref.get(reference));
                assert!(offset % MIB == 0 || offset == total, "offset {offset}");
                assert!(status.started_at.is_some() && status.updated_at.is_some());
                assert!(status.expected.is_empty());
                if let Some(previous) = last.get(reference) {
                    assert!(status.offset >= previous.offset, "{reference} went back");
                    assert_eq!(status.started_at, previous.started_at);
                    assert_eq!(status.total, previous.total);
                }
                last.insert(reference, status);
            }
            gone.extend(
                last.keys()
                    .filter(|reference| !present.contains(*reference)),
            );
            let committed = gone.len();
            assert!(
                poll.committed_layers >= committed,
                "a vanished layer was not committed: {poll:?}"
            );
        }
        let growth: Vec<i64> = polls
            .iter()
            .filter_map(|poll| poll.statuses.first().map(|status| status.offset))
            .collect();
        assert!(
            growth.windows(2).any(|pair| pair[1] > pair[0]),
            "{growth:?}"
        );

        // The unpack tail: in flight, no ingest, every layer committed.
        assert!(polls.iter().any(|poll| poll.pull_in_flight
            && poll.statuses.is_empty()
            && poll.committed_layers == sizes.len()));

        // After the pull: nothing in flight, every layer unpacked.
        assert!(
            statuses(&mut client, Some(CRI_NAMESPACE), &[])
                .await?
                .is_empty()
        );
        for (layer, diff_id) in image.layers.iter().zip(&image.diff_ids) {
            let info = info(&mut client, &layer.digest).await?;
            assert_eq!(u64::try_from(info.size)?, layer.size);
            assert_eq!(info.labels.get("containerd.io/uncompressed"), Some(diff_id));
        }
        Ok(())
    }

    #[tokio::test]
    async fn the_manifest_is_readable_during_the_pull_and_gives_every_size_up_front()
    -> anyhow::Result<()> {
        let fake = FakeCri::new();
        let image_name = "127.0.0.1:5001/test/huge:1";
        let sizes = [5 * MIB, 4 * MIB, 3 * MIB, 2 * MIB];
        fake.script_pull(
            image_name,
            PullScript::default()
                .layers(sizes)
                .bytes_per_second(10 * MIB),
        );
        let image = fake.scripted_image(image_name).context("no content")?;
        let harness = Harness::start(fake.clone()).await?;
        let channel = connect(harness.handle.path()).await?;
        let mut client = ContentClient::new(channel.clone());
        let pull = tokio::spawn({
            let mut images = harness.images.clone();
            async move { images.pull_image(pull_request(image_name)).await }
        });
        eventually("a layer ingest", || !fake.content_statuses().is_empty()).await?;

        // Info: committed already, with containerd's GC and distribution labels; the
        // label key drops the registry's port.
        let manifest_digest = image.resolved_digest().to_owned();
        let manifest = info(&mut client, &manifest_digest).await?;
        assert_eq!(u64::try_from(manifest.size)?, image.manifest.size);
        assert_eq!(
            manifest.labels.get("containerd.io/gc.ref.content.config"),
            Some(&image.config.digest)
        );
        for (position, layer) in image.layers.iter().enumerate() {
            assert_eq!(
                manifest
                    .labels
                    .get(&format!("containerd.io/gc.ref.content.l.{position}")),
                Some(&layer.digest)
            );
        }
        assert_eq!(
            manifest
                .labels
                .get("containerd.io/distribution.source.127.0.0.1"),
            Some(&"test/huge".to_owned())
        );
        // A layer still downloading has no info yet.
        let in_flight = fake.content_statuses();
        let downloading = ref_digest(&in_flight[0].r#ref).to_owned();
        let missing = info(&mut client, &downloading)
            .await
            .err()
            .map(|s| s.code());
        assert_eq!(missing, Some(Code::NotFound));

        // Read: the manifest's JSON, hashing to its digest, with every size in it.
        let messages = read(&mut client, &manifest_digest, 0, 0).await?;
        let bytes: Vec<u8> = messages.into_iter().flat_map(|(_, data)| data).collect();
        assert_eq!(bytes, image.manifest_json);
        assert_eq!(super::super::sha256::digest(&bytes), manifest_digest);
        let json: serde_json::Value = serde_json::from_slice(&bytes)?;
        assert_eq!(
            json["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(json["config"]["digest"], image.config.digest.as_str());
        let layer_sizes: Vec<u64> = json["layers"]
            .as_array()
            .context("no layers")?
            .iter()
            .filter_map(|layer| layer["size"].as_u64())
            .collect();
        assert_eq!(layer_sizes, sizes);
        let config_size = json["config"]["size"].as_u64().context("no config size")?;
        assert_eq!(config_size + sizes.iter().sum::<u64>(), image.total_bytes());
        // The config is committed from the start too.
        assert_eq!(
            u64::try_from(info(&mut client, &image.config.digest).await?.size)?,
            config_size
        );

        // Offset and size are honoured.
        let part = read(&mut client, &manifest_digest, 10, 20).await?;
        assert_eq!(part, vec![(10, image.manifest_json[10..30].to_vec())]);
        let past = read(&mut client, &manifest_digest, 1 << 40, 0).await.err();
        assert_eq!(past.map(|status| status.code()), Some(Code::OutOfRange));

        // Filters work server-side on ref, as measured.
        let hex = &image.layers[0].digest["sha256:".len()..];
        let filtered = statuses(
            &mut client,
            Some(CRI_NAMESPACE),
            &[format!("ref~=\"({hex}|ffff0000)\"")],
        )
        .await?;
        assert!(filtered.iter().all(|status| status.r#ref.ends_with(hex)));
        assert_eq!(filtered.len(), 1);
        let bad = statuses(&mut client, Some(CRI_NAMESPACE), &["ref~=\"(\"".to_owned()])
            .await
            .err();
        assert_eq!(bad.map(|status| status.code()), Some(Code::InvalidArgument));

        // The registry-free fallback: List by distribution-source label.
        let label = image.distribution_source_label();
        let found = list(
            channel.clone(),
            CRI_NAMESPACE,
            &[&format!(r#"labels."{label}"~="(^|,)test/huge(,|$)""#)],
        )
        .await?;
        let found: BTreeSet<String> = found.into_iter().map(|info| info.digest).collect();
        assert!(found.contains(&manifest_digest) && found.contains(&image.config.digest));

        pull.await??;
        Ok(())
    }

    #[tokio::test]
    async fn other_namespaces_see_nothing_and_no_namespace_is_a_failed_precondition()
    -> anyhow::Result<()> {
        let fake = FakeCri::new();
        let image_name = "127.0.0.1:5000/test/other:1";
        fake.script_pull(
            image_name,
            PullScript::default()
                .layers([4 * MIB])
                .bytes_per_second(4 * MIB),
        );
        let image = fake.scripted_image(image_name).context("no content")?;
        let harness = Harness::start(fake.clone()).await?;
        let channel = connect(harness.handle.path()).await?;
        let mut client = ContentClient::new(channel.clone());
        let pull = tokio::spawn({
            let mut images = harness.images.clone();
            async move { images.pull_image(pull_request(image_name)).await }
        });
        eventually("a layer ingest", || !fake.content_statuses().is_empty()).await?;

        assert_eq!(
            statuses(&mut client, Some(CRI_NAMESPACE), &[]).await?.len(),
            1
        );
        assert!(
            statuses(&mut client, Some("default"), &[])
                .await?
                .is_empty()
        );
        let digest = image.resolved_digest().to_owned();
        let request = content::InfoRequest {
            digest: digest.clone(),
        };
        let other = client
            .info(in_namespace(request.clone(), Some("default")))
            .await;
        assert_eq!(
            other.err().map(|status| status.code()),
            Some(Code::NotFound)
        );
        assert!(list(channel, "default", &[]).await?.is_empty());

        let missing = statuses(&mut client, None, &[]).await.err();
        let missing = missing.context("no namespace was accepted")?;
        assert_eq!(missing.code(), Code::FailedPrecondition);
        assert!(missing.message().starts_with("namespace is required"));
        let missing = client.info(in_namespace(request, None)).await.err();
        assert_eq!(
            missing.map(|status| status.code()),
            Some(Code::FailedPrecondition)
        );
        pull.abort();
        Ok(())
    }

    #[tokio::test]
    async fn a_cancelled_pull_leaves_no_ingest_and_no_blob_and_a_retry_starts_from_zero()
    -> anyhow::Result<()> {
        let fake = FakeCri::new();
        let image_name = "127.0.0.1:5000/test/huge:1";
        fake.script_pull(
            image_name,
            PullScript::default()
                .layers([8 * MIB, 8 * MIB])
                .bytes_per_second(8 * MIB),
        );
        let image = fake.scripted_image(image_name).context("no content")?;
        let harness = Harness::start(fake.clone()).await?;
        let mut images = harness.images.clone();
        let cancelled = tokio::time::timeout(
            Duration::from_millis(400),
            images.pull_image(pull_request(image_name)),
        )
        .await;
        assert!(cancelled.is_err(), "the pull finished early");
        eventually("the cancelled pull to end", || fake.in_flight_pulls() == 0).await?;
        assert!(fake.content_statuses().is_empty());
        assert!(fake.content_info(image.resolved_digest()).is_none());
        assert!(fake.content_info(&image.config.digest).is_none());
        assert_eq!(fake.pull_stats().cancelled, 1);
        assert!(!fake.has_image(image_name));

        let retry = tokio::spawn(async move { images.pull_image(pull_request(image_name)).await });
        eventually("the retry's ingests", || fake.content_statuses().len() == 2).await?;
        assert!(
            fake.content_statuses()
                .iter()
                .all(|status| status.offset <= 1 << 20)
        );
        retry.abort();
        Ok(())
    }

    #[tokio::test]
    async fn images_sharing_layers_share_one_ingest_per_layer() -> anyhow::Result<()> {
        let fake = FakeCri::new();
        let script = PullScript::default()
            .layers([3 * MIB, 3 * MIB])
            .bytes_per_second(12 * MIB)
            .layer_seed("shared base");
        fake.script_pull("127.0.0.1:5000/test/huge:1", script.clone());
        fake.script_pull("127.0.0.1:5000/test/hugealias:1", script);
        let first = fake
            .scripted_image("127.0.0.1:5000/test/huge:1")
            .context("no content")?;
        let second = fake
            .scripted_image("127.0.0.1:5000/test/hugealias:1")
            .context("no content")?;
        assert_eq!(first.layers, second.layers);
        assert_ne!(first.config.digest, second.config.digest);

        let harness = Harness::start(fake.clone()).await?;
        let pulls: Vec<_> = [
            "127.0.0.1:5000/test/huge:1",
            "127.0.0.1:5000/test/hugealias:1",
        ]
        .into_iter()
        .map(|image_name| {
            let mut images = harness.images.clone();
            tokio::spawn(async move { images.pull_image(pull_request(image_name)).await })
        })
        .collect();
        let mut most = 0;
        while pulls.iter().any(|pull| !pull.is_finished()) {
            most = most.max(fake.content_statuses().len());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for pull in pulls {
            pull.await??;
        }
        assert_eq!(most, 2, "one ingest per layer, not per pull");
        let shared = fake
            .content_info(&first.layers[0].digest)
            .context("the shared layer is gone")?;
        assert_eq!(
            shared
                .labels
                .get("containerd.io/distribution.source.127.0.0.1")
                .map(String::as_str),
            Some("test/huge,test/hugealias")
        );
        assert!(fake.has_image("127.0.0.1:5000/test/huge:1"));
        assert!(fake.has_image("127.0.0.1:5000/test/hugealias:1"));
        Ok(())
    }

    #[tokio::test]
    async fn an_index_resolves_to_the_platform_manifest_and_names_the_repo_digest()
    -> anyhow::Result<()> {
        let fake = FakeCri::new();
        let image_name = "127.0.0.1:5000/test/multi:1";
        fake.script_pull(
            image_name,
            PullScript::default()
                .layers([MIB + 1, 2])
                .bytes_per_second(0)
                .image_index(),
        );
        let image = fake.scripted_image(image_name).context("no content")?;
        let (index, index_json) = image.index.clone().context("no index")?;
        let mut harness = Harness::start(fake.clone()).await?;
        harness.images.pull_image(pull_request(image_name)).await?;

        let mut client = ContentClient::new(connect(harness.handle.path()).await?);
        let bytes: Vec<u8> = read(&mut client, &index.digest, 0, 0)
            .await?
            .into_iter()
            .flat_map(|(_, data)| data)
            .collect();
        assert_eq!(bytes, index_json);
        let json: serde_json::Value = serde_json::from_slice(&bytes)?;
        let amd64 = json["manifests"]
            .as_array()
            .context("no manifests")?
            .iter()
            .find(|manifest| manifest["platform"]["architecture"] == "amd64")
            .context("no amd64 manifest")?;
        assert_eq!(amd64["digest"], image.manifest.digest.as_str());
        assert!(info(&mut client, &image.manifest.digest).await.is_ok());

        // A layer reads as filler of its size, in 1 MiB messages from the offset.
        let layer = &image.layers[0];
        let messages = read(&mut client, &layer.digest, 0, 0).await?;
        let offsets: Vec<i64> = messages.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(offsets, vec![0, 1 << 20]);
        let length: usize = messages.iter().map(|(_, data)| data.len()).sum();
        assert_eq!(u64::try_from(length)?, layer.size);
        let messages = read(&mut client, &layer.digest, 5, 0).await?;
        let offsets: Vec<i64> = messages.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(offsets, vec![5]);
        assert_eq!(u64::try_from(messages[0].1.len())?, layer.size - 5);

        let status = harness
            .images
            .image_status(v1::ImageStatusRequest {
                image: Some(v1::ImageSpec {
                    image: image_name.to_owned(),
                    ..v1::ImageSpec::default()
                }),
                verbose: false,
            })
            .await?
            .into_inner()
            .image
            .context("no image")?;
        assert_eq!(
            status.repo_digests,
            vec![format!("127.0.0.1:5000/test/multi@{}", index.digest)]
        );
        assert_eq!(status.id, image.config.digest);
        assert_eq!(status.size, image.image_size());

        // Removing the image collects its content.
        harness
            .images
            .remove_image(v1::RemoveImageRequest {
                image: Some(v1::ImageSpec {
                    image: image_name.to_owned(),
                    ..v1::ImageSpec::default()
                }),
            })
            .await?;
        assert!(fake.content_info(&index.digest).is_none());
        assert!(fake.content_info(&layer.digest).is_none());
        Ok(())
    }

    #[tokio::test]
    async fn a_present_image_pulls_again_without_ingests() -> anyhow::Result<()> {
        let fake = FakeCri::new();
        let image_name = "127.0.0.1:5000/test/again:1";
        fake.script_pull(
            image_name,
            PullScript::default()
                .layers([MIB])
                .bytes_per_second(0)
                .unpack_taking(Duration::from_secs(3600)),
        );
        let mut harness = Harness::start(fake.clone()).await?;
        fake.script_pull_once(
            image_name,
            PullScript::default().layers([MIB]).bytes_per_second(0),
        );
        harness.images.pull_image(pull_request(image_name)).await?;
        // Layers are unpacked already, so the hour-long unpack does not happen.
        let again = tokio::time::timeout(
            DEADLINE,
            harness.images.pull_image(pull_request(image_name)),
        )
        .await;
        assert!(matches!(again, Ok(Ok(_))));
        assert!(fake.content_statuses().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn the_version_service_reports_the_configured_containerd_version() -> anyhow::Result<()> {
        let fake = FakeCri::builder()
            .runtime_version("1.6.20~ds1")
            .containerd_revision("1.6.20~ds1-1")
            .build();
        let harness = Harness::start(fake.clone()).await?;
        let mut client = VersionClient::new(connect(harness.handle.path()).await?);
        let version = client.version(()).await?.into_inner();
        assert_eq!(version.version, "1.6.20~ds1");
        assert_eq!(version.revision, "1.6.20~ds1-1");
        fake.set_unavailable(true);
        let down = client.version(()).await.err().map(|status| status.code());
        assert_eq!(down, Some(Code::Unavailable));
        Ok(())
    }

    #[test]
    fn scripts_without_content_model_none() {
        assert!(
            PullScript::succeed_after(Duration::ZERO)
                .image("busybox")
                .is_none()
        );
        let image = PullScript::default().layers([1, 2]).image("busybox");
        assert_eq!(image.map(|image| image.total_bytes() > 3), Some(true));
    }
}
