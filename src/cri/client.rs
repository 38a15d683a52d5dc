//! A CRI client for one runtime: the generated clients plus deadlines, metrics and
//! typed errors.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::endpoint::{MAX_MESSAGE_BYTES, RuntimeEndpoint};
use super::error::{CriError, code_label};
use crate::metrics::CriMetrics;
use crate::proto::runtime::v1 as cri;
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;

/// Deadline for calls that only read runtime state.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for calls that may need a pull or a process start (sandbox and container
/// creation), matching the kubelet's default runtime request timeout.
pub const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Slack added to deadlines that wrap a runtime-side timeout (stop grace, exec timeout),
/// so the runtime reports its own timeout before ours fires.
pub const DEADLINE_SLACK: Duration = Duration::from_secs(10);
/// The CRI version string the kubelet sends in `Version`.
const KUBELET_API_VERSION: &str = "0.1.0";

/// Identity of a runtime, from CRI `Version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// For example `containerd`, `cri-o`, `docker` (cri-dockerd). It is also the
    /// `<runtime>://` prefix of container IDs in pod status.
    pub name: String,
    /// The runtime's own version, for example `1.6.20~ds1`.
    pub version: String,
    /// The CRI API version the runtime speaks, for example `v1`.
    pub api_version: String,
}

/// A validated connection to one CRI runtime. Cheap to clone.
#[derive(Clone)]
pub struct CriClient {
    endpoint: RuntimeEndpoint,
    channel: Channel,
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
    info: RuntimeInfo,
    metrics: Option<CriMetrics>,
}

impl std::fmt::Debug for CriClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriClient")
            .field("endpoint", &self.endpoint)
            .field("info", &self.info)
            .finish()
    }
}

fn request<T>(message: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(timeout) = timeout {
        // Sends grpc-timeout so the runtime abandons the work too.
        request.set_timeout(timeout);
    }
    request
}

impl CriClient {
    /// Connects on a fresh channel and validates the endpoint the way kruise-daemon does
    /// (§2.2): `ImageFsInfo` proves the v1 image API, `ListImages` must work, and
    /// `Version` names the runtime.
    pub async fn connect(
        endpoint: &RuntimeEndpoint,
        metrics: Option<CriMetrics>,
    ) -> Result<Self, CriError> {
        let channel = endpoint.connect(Duration::from_secs(30)).await?;
        let mut client = Self::from_channel(endpoint.clone(), channel, metrics);
        client.image_fs_info().await?;
        client.list_images(None).await?;
        let version = client.version().await?;
        client.info = RuntimeInfo {
            name: version.runtime_name,
            version: version.runtime_version,
            api_version: version.runtime_api_version,
        };
        Ok(client)
    }

    fn from_channel(
        endpoint: RuntimeEndpoint,
        channel: Channel,
        metrics: Option<CriMetrics>,
    ) -> Self {
        let runtime = RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let image = ImageServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Self {
            endpoint,
            channel,
            runtime,
            image,
            info: RuntimeInfo {
                name: String::new(),
                version: String::new(),
                api_version: String::new(),
            },
            metrics,
        }
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &RuntimeEndpoint {
        &self.endpoint
    }

    /// The runtime's name and version, as validated at connect time.
    pub fn info(&self) -> &RuntimeInfo {
        &self.info
    }

    /// The underlying channel, for other services on the same socket (containerd's
    /// content store, used for pull progress).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Runs one call with a deadline and records its latency and code.
    async fn call<R>(
        &self,
        method: &'static str,
        timeout: Option<Duration>,
        call: impl Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    ) -> Result<R, CriError> {
        let started = Instant::now();
        let result = match timeout {
            Some(timeout) => match tokio::time::timeout(timeout, call).await {
                // tonic's own grpc-timeout fires at the same moment and reports
                // "Timeout expired"; either way it is our deadline that passed.
                Ok(Err(_)) if started.elapsed() >= timeout => {
                    Err(CriError::DeadlineExceeded { method, timeout })
                }
                Ok(result) => result.map_err(|status| CriError::from_status(method, status)),
                Err(_) => Err(CriError::DeadlineExceeded { method, timeout }),
            },
            None => call
                .await
                .map_err(|status| CriError::from_status(method, status)),
        };
        if let Some(metrics) = &self.metrics {
            let code = match &result {
                Ok(_) => code_label(tonic::Code::Ok),
                Err(error) => error.metric_label(),
            };
            metrics.observe(method, code, started.elapsed().as_secs_f64());
        }
        result.map(tonic::Response::into_inner)
    }

    /// CRI `Version`.
    pub async fn version(&self) -> Result<cri::VersionResponse, CriError> {
        let message = cri::VersionRequest {
            version: KUBELET_API_VERSION.to_string(),
        };
        let timeout = Some(Duration::from_secs(5));
        self.call(
            "Version",
            timeout,
            self.runtime.clone().version(request(message, timeout)),
        )
        .await
    }

    /// CRI `Status`: whether the runtime and its network are ready.
    pub async fn status(&self) -> Result<cri::StatusResponse, CriError> {
        let timeout = Some(READ_TIMEOUT);
        let message = cri::StatusRequest { verbose: false };
        self.call(
            "Status",
            timeout,
            self.runtime.clone().status(request(message, timeout)),
        )
        .await
    }

    /// CRI `ImageFsInfo`.
    pub async fn image_fs_info(&self) -> Result<cri::ImageFsInfoResponse, CriError> {
        let timeout = Some(READ_TIMEOUT);
        let message = cri::ImageFsInfoRequest {};
        self.call(
            "ImageFsInfo",
            timeout,
            self.image.clone().image_fs_info(request(message, timeout)),
        )
        .await
    }

    /// CRI `ListImages`, optionally filtered by image reference.
    pub async fn list_images(&self, image: Option<&str>) -> Result<Vec<cri::Image>, CriError> {
        let timeout = Some(READ_TIMEOUT);
        let message = cri::ListImagesRequest {
            filter: image.map(|image| cri::ImageFilter {
                image: Some(image_spec(image)),
            }),
        };
        self.call(
            "ListImages",
            timeout,
            self.image.clone().list_images(request(message, timeout)),
        )
        .await
        .map(|response| response.images)
    }

    /// CRI `ImageStatus`: `None` when the runtime does not have the image.
    pub async fn image_status(&self, image: &str) -> Result<Option<cri::Image>, CriError> {
        let timeout = Some(READ_TIMEOUT);
        let message = cri::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        self.call(
            "ImageStatus",
            timeout,
            self.image.clone().image_status(request(message, timeout)),
        )
        .await
        .map(|response| response.image)
    }

    /// CRI `PullImage`. Returns the runtime's image reference (its image ID).
    ///
    /// `timeout` bounds the whole pull; dropping the returned future cancels the call,
    /// which containerd turns into a cancelled pull.
    pub async fn pull_image(
        &self,
        message: cri::PullImageRequest,
        timeout: Option<Duration>,
    ) -> Result<String, CriError> {
        self.call(
            "PullImage",
            timeout,
            self.image.clone().pull_image(request(message, timeout)),
        )
        .await
        .map(|response| response.image_ref)
    }

    /// CRI `RemoveImage`.
    pub async fn remove_image(&self, image: &str) -> Result<(), CriError> {
        let timeout = Some(LIFECYCLE_TIMEOUT);
        let message = cri::RemoveImageRequest {
            image: Some(image_spec(image)),
        };
        self.call(
            "RemoveImage",
            timeout,
            self.image.clone().remove_image(request(message, timeout)),
        )
        .await
        .map(drop)
    }

    /// CRI `RunPodSandbox`. Returns the sandbox ID.
    pub async fn run_pod_sandbox(
        &self,
        config: cri::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, CriError> {
        let timeout = Some(LIFECYCLE_TIMEOUT);
        let message = cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: runtime_handler.to_string(),
        };
        self.call(
            "RunPodSandbox",
            timeout,
            self.runtime
                .clone()
                .run_pod_sandbox(request(message, timeout)),
        )
        .await
        .map(|response| response.pod_sandbox_id)
    }

    /// CRI `StopPodSandbox`.
    pub async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<(), CriError> {
        let timeout = Some(LIFECYCLE_TIMEOUT);
        let message = cri::StopPodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        self.call(
            "StopPodSandbox",
            timeout,
            self.runtime
                .clone()
                .stop_pod_sandbox(request(message, timeout)),
        )
        .await
        .map(drop)
    }

    /// CRI `RemovePodSandbox`.
    pub async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<(), CriError> {
        let timeout = Some(LIFECYCLE_TIMEOUT);
        let message = cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        self.call(
            "RemovePodSandbox",
            timeout,
            self.runtime
                .clone()
                .remove_pod_sandbox(request(message, timeout)),
        )
        .await
        .map(drop)
    }

    /// CRI `PodSandboxStatus`. The pod IP is in `status.network.ip`.
    pub async fn pod_sandbox_status(
        &self,
        sandbox_id: &str,
    ) -> Result<cri::PodSandboxStatusResponse, CriError> {
        let timeout = Some(READ_TIMEOUT);
        let message = cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            verbose: false,
        };
        self.call(
            "PodSandboxStatus",
            timeout,
            self.runtime
                .clone()
                .pod_sandbox_status(request(message, timeout)),
        )
        .await
    }

    /// CRI `ListPodSandbox`.
    pub async fn list_pod_sandbox(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>, CriError> {
        let timeout = Some(READ_TIMEOUT);
        let message = cri::ListPodSandboxRequest { filter };
        self.call(
            "ListPodSandbox",
            timeout,
            self.runtime
                .clone()
                .list_pod_sandbox(request(message, timeout)),
        )
        .await
        .map(|response| response.items)
    }

    /// CRI `CreateContainer`. Returns the container ID.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let timeout = Some(LIFECYCLE_TIMEOUT);
        let message = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        self.call(
            "CreateContainer",
            timeout,
            self.runtime
                .clone()
                .create_container(request(message, timeout)),
        )
        .await
        .map(|response| response.container_id)
    }

    /// CRI `StartContainer`.
    pub async fn start_container(&self, container_id: &str) -> Result<(), CriError> {
        let timeout = Some(LIFECYCLE_TIMEOUT);
        let message = cri::StartContainerRequest {
            container_id: container_id.to_string(),
        };
        self.call(
            "StartContainer",
            timeout,
            self.runtime
                .clone()
                .start_container(request(message, timeout)),
        )
        .await
        .map(drop)
    }

    /// CRI `StopContainer`: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop_container(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> Result<(), CriError> {
        let timeout = Some(grace + DEADLINE_SLACK);
        let message = cri::StopContainerRequest {
            container_id: container_id.to_string(),
            // CRI takes whole seconds; round up so a sub-second grace is not zero.
            timeout: grace.as_secs() as i64 + i64::from(grace.subsec_nanos() > 0),
        };
        self.call(
            "StopContainer",
            timeout,
            self.runtime
                .clone()
                .stop_container(request(message, timeout)),
        )
        .await
        .map(drop)
    }

    /// CRI `RemoveContainer`.
    pub async fn remove_container(&self, container_id: &str) -> Result<(), CriError> {
        let timeout = Some(LIFECYCLE_TIMEOUT);
        let message = cri::RemoveContainerRequest {
            container_id: container_id.to_string(),
        };
        self.call(
            "RemoveContainer",
            timeout,
            self.runtime
                .clone()
                .remove_container(request(message, timeout)),
        )
        .await
        .map(drop)
    }

    /// CRI `ListContainers`.
    pub async fn list_containers(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>, CriError> {
        let timeout = Some(READ_TIMEOUT);
        let message = cri::ListContainersRequest { filter };
        self.call(
            "ListContainers",
            timeout,
            self.runtime
                .clone()
                .list_containers(request(message, timeout)),
        )
        .await
        .map(|response| response.containers)
    }

    /// CRI `ListContainers` for one pod, by the kubelet's `io.kubernetes.pod.uid` label.
    pub async fn list_pod_containers(
        &self,
        pod_uid: &str,
    ) -> Result<Vec<cri::Container>, CriError> {
        let label_selector =
            HashMap::from([("io.kubernetes.pod.uid".to_string(), pod_uid.to_string())]);
        self.list_containers(Some(cri::ContainerFilter {
            label_selector,
            ..Default::default()
        }))
        .await
    }

    /// CRI `ContainerStatus`.
    pub async fn container_status(
        &self,
        container_id: &str,
    ) -> Result<cri::ContainerStatus, CriError> {
        let timeout = Some(READ_TIMEOUT);
        let message = cri::ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose: false,
        };
        let response = self
            .call(
                "ContainerStatus",
                timeout,
                self.runtime
                    .clone()
                    .container_status(request(message, timeout)),
            )
            .await?;
        response.status.ok_or_else(|| CriError::Call {
            method: "ContainerStatus",
            code: tonic::Code::Internal,
            message: format!("runtime returned no status for container {container_id:?}"),
        })
    }

    /// CRI `ExecSync`. A zero `timeout` means no limit, as in the CRI (preStop hooks).
    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<cri::ExecSyncResponse, CriError> {
        let deadline = (!timeout.is_zero()).then(|| timeout + DEADLINE_SLACK);
        let message = cri::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd,
            timeout: timeout.as_secs() as i64 + i64::from(timeout.subsec_nanos() > 0),
        };
        self.call(
            "ExecSync",
            deadline,
            self.runtime.clone().exec_sync(request(message, deadline)),
        )
        .await
    }
}

/// An `ImageSpec` for a reference, with no annotations (as kruise-daemon sends).
pub fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}
