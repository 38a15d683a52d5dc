//! Serving the fake over a unix socket, and what every RPC does before its own work:
//! record the call, then apply the injected faults.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::Status;
use tonic::transport::Server;

use super::FakeCri;
use super::calls::Call;
use super::containerd_services::{FakeContentService, FakeVersionService};
use super::image_service::FakeImageService;
use super::runtime_service::FakeRuntimeService;
use super::state::State;
use crate::proto::containerd::services::content::v1::content_server::ContentServer;
use crate::proto::containerd::services::version::v1::version_server::VersionServer;
use crate::proto::runtime::v1::image_service_server::ImageServiceServer;
use crate::proto::runtime::v1::runtime_service_server::RuntimeServiceServer;

/// Why the fake could not be served or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum FakeCriError {
    /// The socket could not be bound.
    #[error("failed to listen on {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("fake CRI server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The server task panicked or was cancelled.
    #[error("fake CRI server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A running fake CRI server. It shares its state with the [`FakeCri`] it was started
/// from (and derefs to it), so a test can inspect and change the world while kruised
/// talks to it. Dropping the handle stops the server and removes the socket.
#[derive(Debug)]
pub struct FakeCriHandle {
    fake: FakeCri,
    path: PathBuf,
    endpoint: String,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl FakeCriHandle {
    /// The CRI endpoint, `unix:///absolute/path`, as the kubelet and kruised spell it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The absolute socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fake this server serves.
    pub fn fake(&self) -> &FakeCri {
        &self.fake
    }

    /// Stops accepting connections, ends the calls still waiting (slow pulls, latency,
    /// grace periods) with UNAVAILABLE, waits for the server to finish and removes the
    /// socket. The fake's state survives: serve it again to model a runtime restart.
    pub async fn shutdown(mut self) -> Result<(), FakeCriError> {
        self.stop.send_replace(true);
        let result = match self.server.take() {
            Some(server) => server
                .await
                .map_err(FakeCriError::from)
                .and_then(|served| Ok(served?)),
            None => Ok(()),
        };
        remove_socket(&self.path);
        result
    }
}

impl std::ops::Deref for FakeCriHandle {
    type Target = FakeCri;

    fn deref(&self) -> &FakeCri {
        &self.fake
    }
}

impl Drop for FakeCriHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if self.server.is_some() {
            remove_socket(&self.path);
        }
    }
}

fn remove_socket(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "failed to remove the fake CRI socket");
    }
}

/// Binds `path` (replacing a stale socket, as containerd does) and serves the CRI
/// services and, on the same socket as containerd does, its content and version
/// services.
pub(crate) fn serve_unix(fake: &FakeCri, path: &Path) -> Result<FakeCriHandle, FakeCriError> {
    let bind_error = |source| FakeCriError::Bind {
        path: path.to_owned(),
        source,
    };
    let path = std::path::absolute(path).map_err(bind_error)?;
    match std::fs::symlink_metadata(&path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            std::fs::remove_file(&path).map_err(bind_error)?;
        }
        _ => {}
    }
    let listener = UnixListener::bind(&path).map_err(bind_error)?;
    let (stop, stopping) = watch::channel(false);
    let dispatch = Dispatch {
        fake: fake.clone(),
        stopping: stopping.clone(),
    };
    let runtime_service = RuntimeServiceServer::new(FakeRuntimeService(dispatch.clone()));
    let image_service = ImageServiceServer::new(FakeImageService(dispatch.clone()));
    let content_service = ContentServer::new(FakeContentService(dispatch.clone()));
    let version_service = VersionServer::new(FakeVersionService(dispatch));
    let mut shutdown = stopping;
    let server = tokio::spawn(
        Server::builder()
            .add_service(runtime_service)
            .add_service(image_service)
            .add_service(content_service)
            .add_service(version_service)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                // A dropped sender also ends the wait, and so the server.
                let _stopped = shutdown.wait_for(|stop| *stop).await.is_ok();
            }),
    );
    let endpoint = format!("unix://{}", path.display());
    tracing::debug!(%endpoint, "fake CRI serving");
    Ok(FakeCriHandle {
        fake: fake.clone(),
        path,
        endpoint,
        stop,
        server: Some(server),
    })
}

/// What the services share: the fake, and a signal that their server is stopping.
#[derive(Debug, Clone)]
pub(crate) struct Dispatch {
    pub(crate) fake: FakeCri,
    stopping: watch::Receiver<bool>,
}

impl Dispatch {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.fake.lock()
    }

    /// Records the call, then applies the faults for its method: unavailability, then
    /// latency, then a scripted failure.
    pub(crate) async fn begin(&self, call: Call) -> Result<(), Status> {
        let method = call.method();
        tracing::debug!(%method, "fake CRI call");
        let latency = {
            let mut state = self.lock();
            state.calls.push(call);
            if state.faults.unavailable {
                return Err(Status::unavailable("fake CRI runtime is unavailable"));
            }
            state.faults.latency(method)
        };
        if let Some(latency) = latency {
            self.sleep(latency).await?;
        }
        match self.lock().faults.take_failure(method) {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }

    /// What a containerd service call does first: fail while the runtime is
    /// unavailable. containerd calls are not recorded, because a progress poller makes
    /// hundreds of them and [`super::Call`] holds CRI requests only.
    pub(crate) fn begin_containerd(&self) -> Result<(), Status> {
        if self.lock().faults.unavailable {
            return Err(Status::unavailable("fake CRI runtime is unavailable"));
        }
        Ok(())
    }

    /// Waits `duration`, or fails with UNAVAILABLE as soon as the server stops.
    pub(crate) async fn sleep(&self, duration: Duration) -> Result<(), Status> {
        if duration.is_zero() {
            return Ok(());
        }
        self.until_stopped(tokio::time::sleep(duration)).await
    }

    /// Waits until `deadline`, or fails with UNAVAILABLE as soon as the server stops.
    pub(crate) async fn sleep_until(&self, deadline: tokio::time::Instant) -> Result<(), Status> {
        self.until_stopped(tokio::time::sleep_until(deadline)).await
    }

    /// Runs `future` to completion, or fails with UNAVAILABLE as soon as the server
    /// stops.
    pub(crate) async fn until_stopped<F: Future>(&self, future: F) -> Result<F::Output, Status> {
        let mut stopping = self.stopping.clone();
        tokio::select! {
            output = future => Ok(output),
            _ = stopping.wait_for(|stop| *stop) => Err(shutting_down()),
        }
    }

    /// Waits until pulls are released (see [`FakeCri::hold_pulls`]), or the server stops.
    pub(crate) async fn pull_gate(&self) -> Result<(), Status> {
        let mut gate = self.fake.shared.pull_gate.subscribe();
        let mut stopping = self.stopping.clone();
        tokio::select! {
            _ = async { gate.wait_for(|open| *open).await.map(|_| ()) } => Ok(()),
            _ = stopping.wait_for(|stop| *stop) => Err(shutting_down()),
        }
    }
}

fn shutting_down() -> Status {
    Status::unavailable("fake CRI runtime is shutting down")
}
