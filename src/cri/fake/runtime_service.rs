//! `runtime.v1.RuntimeService` over the fake's state.

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::calls::Call;
use super::reference::go_duration;
use super::scripts::StopBehaviour;
use super::server::Dispatch;
use crate::proto::runtime::v1;
use crate::proto::runtime::v1::runtime_service_server::RuntimeService;

/// The version of the kubelet runtime API containerd 1.6 reports.
const KUBE_API_VERSION: &str = "0.1.0";
/// The CRI version containerd 1.6 reports.
const CRI_VERSION: &str = "v1";

/// The fake's `RuntimeService`.
#[derive(Debug)]
pub(crate) struct FakeRuntimeService(pub(crate) Dispatch);

#[tonic::async_trait]
impl RuntimeService for FakeRuntimeService {
    async fn version(
        &self,
        request: Request<v1::VersionRequest>,
    ) -> Result<Response<v1::VersionResponse>, Status> {
        self.0
            .begin(Call::Version(Box::new(request.into_inner())))
            .await?;
        let config = self.0.lock().config.clone();
        Ok(Response::new(v1::VersionResponse {
            version: KUBE_API_VERSION.to_owned(),
            runtime_name: config.runtime_name,
            runtime_version: config.runtime_version,
            runtime_api_version: CRI_VERSION.to_owned(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<v1::RunPodSandboxRequest>,
    ) -> Result<Response<v1::RunPodSandboxResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::RunPodSandbox(Box::new(request.clone())))
            .await?;
        let pod_sandbox_id = self.0.lock().run_sandbox(request)?;
        Ok(Response::new(v1::RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<v1::StopPodSandboxRequest>,
    ) -> Result<Response<v1::StopPodSandboxResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::StopPodSandbox(Box::new(request.clone())))
            .await?;
        self.0.lock().stop_sandbox(&request.pod_sandbox_id)?;
        Ok(Response::new(v1::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<v1::RemovePodSandboxRequest>,
    ) -> Result<Response<v1::RemovePodSandboxResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::RemovePodSandbox(Box::new(request.clone())))
            .await?;
        self.0.lock().remove_sandbox(&request.pod_sandbox_id);
        Ok(Response::new(v1::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<v1::PodSandboxStatusRequest>,
    ) -> Result<Response<v1::PodSandboxStatusResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::PodSandboxStatus(Box::new(request.clone())))
            .await?;
        let status = self.0.lock().sandbox_status(&request.pod_sandbox_id)?;
        Ok(Response::new(v1::PodSandboxStatusResponse {
            status: Some(status),
            ..v1::PodSandboxStatusResponse::default()
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<v1::ListPodSandboxRequest>,
    ) -> Result<Response<v1::ListPodSandboxResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::ListPodSandbox(Box::new(request.clone())))
            .await?;
        let items = self.0.lock().list_sandboxes(request.filter.as_ref());
        Ok(Response::new(v1::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<v1::CreateContainerRequest>,
    ) -> Result<Response<v1::CreateContainerResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::CreateContainer(Box::new(request.clone())))
            .await?;
        let container_id = self
            .0
            .lock()
            .create_container(request, StopBehaviour::default())?;
        Ok(Response::new(v1::CreateContainerResponse { container_id }))
    }

    async fn start_container(
        &self,
        request: Request<v1::StartContainerRequest>,
    ) -> Result<Response<v1::StartContainerResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::StartContainer(Box::new(request.clone())))
            .await?;
        self.0.lock().start_container(&request.container_id)?;
        Ok(Response::new(v1::StartContainerResponse {}))
    }

    /// containerd 1.6 (before the idempotence fix of 2024) fails for an unknown id; a
    /// container that is not running is left alone.
    async fn stop_container(
        &self,
        request: Request<v1::StopContainerRequest>,
    ) -> Result<Response<v1::StopContainerResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::StopContainer(Box::new(request.clone())))
            .await?;
        let plan = self
            .0
            .lock()
            .plan_stop(&request.container_id, request.timeout)?;
        if let Some((duration, exit_code)) = plan {
            // The container runs on during the grace period; a client that gives up
            // leaves it running, as with containerd.
            self.0.sleep(duration).await?;
            self.0.lock().finish_stop(&request.container_id, exit_code);
        }
        Ok(Response::new(v1::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<v1::RemoveContainerRequest>,
    ) -> Result<Response<v1::RemoveContainerResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::RemoveContainer(Box::new(request.clone())))
            .await?;
        self.0.lock().remove_container(&request.container_id);
        Ok(Response::new(v1::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::ListContainers(Box::new(request.clone())))
            .await?;
        let containers = self.0.lock().list_containers(request.filter.as_ref());
        Ok(Response::new(v1::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<v1::ContainerStatusRequest>,
    ) -> Result<Response<v1::ContainerStatusResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::ContainerStatus(Box::new(request.clone())))
            .await?;
        let status = self.0.lock().container_status(&request.container_id)?;
        Ok(Response::new(v1::ContainerStatusResponse {
            status: Some(status),
            ..v1::ContainerStatusResponse::default()
        }))
    }

    async fn exec_sync(
        &self,
        request: Request<v1::ExecSyncRequest>,
    ) -> Result<Response<v1::ExecSyncResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::ExecSync(Box::new(request.clone())))
            .await?;
        let script = self
            .0
            .lock()
            .plan_exec(&request.container_id, &request.cmd)?;
        let timeout = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
        if !timeout.is_zero() && script.duration > timeout {
            self.0.sleep(timeout).await?;
            return Err(Status::deadline_exceeded(format!(
                "failed to exec in container: timeout {} exceeded: context deadline exceeded",
                go_duration(request.timeout)
            )));
        }
        self.0.sleep(script.duration).await?;
        Ok(Response::new(v1::ExecSyncResponse {
            stdout: script.stdout,
            stderr: script.stderr,
            exit_code: script.exit_code,
        }))
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        self.0
            .begin(Call::Status(Box::new(request.into_inner())))
            .await?;
        let ready = |condition: &str| v1::RuntimeCondition {
            r#type: condition.to_owned(),
            status: true,
            ..v1::RuntimeCondition::default()
        };
        Ok(Response::new(v1::StatusResponse {
            status: Some(v1::RuntimeStatus {
                conditions: vec![ready("RuntimeReady"), ready("NetworkReady")],
            }),
            ..v1::StatusResponse::default()
        }))
    }
}
