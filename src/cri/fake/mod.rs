//! An in-process fake container runtime for tests: a tonic server on a unix socket that
//! serves CRI `runtime.v1` `RuntimeService` and `ImageService` the way containerd 1.6
//! does wherever kruised can observe it, including containerd's error codes and texts
//! (spec/test-environment.md §5).
//!
//! It follows linkerd2-proxy's integration-test mock controllers: the test builds a
//! [`FakeCri`], serves it with [`FakeCri::serve_unix`], points the code under test at
//! [`FakeCriHandle::endpoint`], and then scripts and inspects the world through the
//! shared state while the server runs:
//!
//! * the world: images ([`FakeCri::add_image`]), kubelet-made pods
//!   ([`FakeCri::add_pod_with_containers`], [`FakeCri::restart_container`]) and
//!   anything a client creates over CRI;
//! * the calls: every RPC is recorded in order with its request ([`FakeCri::calls`]);
//! * the faults: failures, latency and unavailability per method
//!   ([`FakeCri::fail_next`]), scripted pulls ([`FakeCri::script_pull`]) with a gate and
//!   concurrency counters ([`FakeCri::hold_pulls`], [`FakeCri::max_concurrent_pulls`]),
//!   scripted execs ([`FakeCri::script_exec`]) and stop behaviours ([`StopBehaviour`]);
//! * pull progress: on the same socket, as containerd does, the fake serves containerd's
//!   `content.v1.Content` (`Info`, `Read`, `ListStatuses`, and `List`) and
//!   `version.v1.Version`. A pull scripted with layers ([`PullScript::layers`]) writes
//!   real OCI manifest JSON and shows per-layer ingests growing at the scripted rate,
//!   at most three at a time, the way spec/pull-progress.md measured containerd 1.6;
//!   [`FakeCri::scripted_image`] tells a test the digests and sizes to expect.
//!
//! Where the fake knowingly departs from containerd 1.6: ids are never looked up by
//! prefix; lists come back in creation order (containerd's order is a map's);
//! [`StopBehaviour::KilledAtOnce`], the default, does not wait out grace periods.

mod calls;
mod containerd_services;
mod content;
mod content_pull;
mod filters;
mod image_service;
mod kubelet;
mod reference;
mod runtime_service;
mod scripts;
mod server;
mod sha256;
mod state;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tonic::{Code, Status};

pub use calls::{Call, IntoMethod, Method, UnknownMethod};
pub use content::{CRI_NAMESPACE, Descriptor, NAMESPACE_HEADER, ScriptedImage};
pub use kubelet::{
    CONTAINER_HASH_ANNOTATION, CONTAINER_NAME_LABEL, CONTAINER_PORTS_ANNOTATION,
    CONTAINER_PRE_STOP_HANDLER_ANNOTATION, CONTAINER_RESTART_COUNT_ANNOTATION, FakePod,
    KubeletContainer, KubeletPod, POD_DELETION_GRACE_PERIOD_ANNOTATION, POD_NAME_LABEL,
    POD_NAMESPACE_LABEL, POD_TERMINATION_GRACE_PERIOD_ANNOTATION, POD_UID_LABEL,
    TERMINATION_MESSAGE_PATH_ANNOTATION, TERMINATION_MESSAGE_POLICY_ANNOTATION,
};
pub use scripts::{
    DEFAULT_BYTES_PER_SECOND, DEFAULT_MAX_CONCURRENT_DOWNLOADS, ExecScript, PullProgressScript,
    PullResult, PullScript, PullStats, StopBehaviour,
};
pub use server::{FakeCriError, FakeCriHandle};

use crate::proto::containerd::services::content::v1 as content_v1;
use crate::proto::runtime::v1;
use calls::Failure;
use reference::ImageReference;
use state::{Config, State};

/// The runtime name containerd reports from `Version`.
pub const DEFAULT_RUNTIME_NAME: &str = "containerd";
/// The runtime version Debian 12's containerd reports, the one the test environment runs.
pub const DEFAULT_RUNTIME_VERSION: &str = "1.6.20~ds1";
/// containerd 1.6's default sandbox (pause) image, pulled by the first `RunPodSandbox`.
pub const DEFAULT_SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.6";
/// The pod IP the test environment's loopback-only CNI plugin hands out.
pub const DEFAULT_POD_IP: &str = "127.0.0.2";
/// Where containerd's overlayfs snapshotter keeps image layers.
pub const DEFAULT_IMAGE_FS_MOUNTPOINT: &str =
    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs";

/// Counts fakes, so that two in one process hand out different ids.
static FAKES_BUILT: AtomicU64 = AtomicU64::new(0);

/// An in-memory container runtime that speaks CRI like containerd 1.6. Clones share one
/// world; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct FakeCri {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// `true` while pulls may proceed; see [`FakeCri::hold_pulls`].
    pull_gate: watch::Sender<bool>,
    /// Woken whenever a blob is committed or an ingest ends, for pulls waiting on
    /// another pull's ingest of the same layer.
    content_changed: Notify,
}

/// Builds a [`FakeCri`] with settings other than the defaults.
#[derive(Debug, Clone)]
pub struct FakeCriBuilder {
    config: Config,
}

impl Default for FakeCriBuilder {
    fn default() -> Self {
        Self {
            config: Config {
                runtime_name: DEFAULT_RUNTIME_NAME.to_owned(),
                runtime_version: DEFAULT_RUNTIME_VERSION.to_owned(),
                containerd_revision: String::new(),
                sandbox_image: DEFAULT_SANDBOX_IMAGE.to_owned(),
                pod_ip: DEFAULT_POD_IP.to_owned(),
                image_fs_mountpoint: DEFAULT_IMAGE_FS_MOUNTPOINT.to_owned(),
            },
        }
    }
}

impl FakeCriBuilder {
    /// The `runtime_name` `Version` reports (and that prefixes pods' container ids).
    #[must_use]
    pub fn runtime_name(mut self, name: impl Into<String>) -> Self {
        self.config.runtime_name = name.into();
        self
    }

    /// The `runtime_version` `Version` reports.
    #[must_use]
    pub fn runtime_version(mut self, version: impl Into<String>) -> Self {
        self.config.runtime_version = version.into();
        self
    }

    /// The `revision` containerd's own `Version` service reports (its `version` is the
    /// runtime version). Empty by default: the test environment's value was not
    /// recorded.
    #[must_use]
    pub fn containerd_revision(mut self, revision: impl Into<String>) -> Self {
        self.config.containerd_revision = revision.into();
        self
    }

    /// The image `RunPodSandbox` makes sure is present.
    #[must_use]
    pub fn sandbox_image(mut self, image: impl Into<String>) -> Self {
        self.config.sandbox_image = image.into();
        self
    }

    /// The IP new sandboxes with their own network namespace report.
    #[must_use]
    pub fn pod_ip(mut self, ip: impl Into<String>) -> Self {
        self.config.pod_ip = ip.into();
        self
    }

    /// The mountpoint `ImageFsInfo` reports.
    #[must_use]
    pub fn image_fs_mountpoint(mut self, mountpoint: impl Into<String>) -> Self {
        self.config.image_fs_mountpoint = mountpoint.into();
        self
    }

    /// The fake, with an empty world.
    pub fn build(self) -> FakeCri {
        let instance = FAKES_BUILT.fetch_add(1, Ordering::Relaxed);
        let salt = reference::fnv1a64(
            format!("{} {instance}", std::process::id()).as_bytes(),
            instance,
        );
        FakeCri {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(self.config, salt)),
                pull_gate: watch::Sender::new(true),
                content_changed: Notify::new(),
            }),
        }
    }
}

impl Default for FakeCri {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeCri {
    /// A fake containerd 1.6 with an empty world.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a fake with other settings.
    pub fn builder() -> FakeCriBuilder {
        FakeCriBuilder::default()
    }

    /// Serves this fake on a unix socket at `path` until the handle is shut down or
    /// dropped. A stale socket at `path` is replaced. Serving the same fake again after
    /// a shutdown models a runtime restart: the world survives.
    pub async fn serve_unix(&self, path: impl AsRef<Path>) -> Result<FakeCriHandle, FakeCriError> {
        server::serve_unix(self, path.as_ref())
    }

    /// The state, even if a panicking test thread poisoned the lock: a test double must
    /// keep answering so that the real failure is the one reported.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    // ---- images -------------------------------------------------------------------

    /// Stores the image `reference` names, as if it had been pulled, and returns its id.
    /// Adding the same reference again changes nothing and returns the same id.
    pub fn add_image(&self, reference: &str) -> Result<String, Status> {
        self.lock().ensure_image(reference)
    }

    /// Removes an image by reference or id, with all its tags; `false` if there was none.
    pub fn remove_image(&self, reference_or_id: &str) -> bool {
        self.lock().remove_image(reference_or_id)
    }

    /// Whether an image is stored under this reference or id.
    pub fn has_image(&self, reference_or_id: &str) -> bool {
        self.lock().image_status(reference_or_id).is_some()
    }

    /// The stored images, as `ListImages` returns them.
    pub fn images(&self) -> Vec<v1::Image> {
        self.lock().list_images()
    }

    // ---- pulls --------------------------------------------------------------------

    /// Every later pull of `reference` (normalised, so `busybox` and
    /// `docker.io/library/busybox:latest` are one) follows `script`.
    pub fn script_pull(&self, reference: &str, script: PullScript) {
        self.lock()
            .script_pull(pull_script_key(reference), script, false);
    }

    /// The next pull of `reference` follows `script`, ahead of any standing script;
    /// one-shot scripts queue up in order.
    pub fn script_pull_once(&self, reference: &str, script: PullScript) {
        self.lock()
            .script_pull(pull_script_key(reference), script, true);
    }

    /// The content the next pull of `reference` will write, from the script it will
    /// follow; `None` when that script models no content. This is how a test learns the
    /// digests and sizes a progress computer should find, including
    /// [`ScriptedImage::resolved_digest`], the digest a registry's
    /// `Docker-Content-Digest` header would give for the tag.
    pub fn scripted_image(&self, reference: &str) -> Option<ScriptedImage> {
        let reference = ImageReference::parse_normalized(reference).ok()?;
        self.lock()
            .peek_pull_script(&reference)
            .image_for(&reference)
    }

    /// The in-flight writes of the `k8s.io` content store, as `Content/ListStatuses`
    /// reports them.
    pub fn content_statuses(&self) -> Vec<content_v1::Status> {
        self.lock().content.statuses()
    }

    /// A committed blob of the `k8s.io` content store, as `Content/Info` reports it.
    pub fn content_info(&self, digest: &str) -> Option<content_v1::Info> {
        self.lock().content.info(digest)
    }

    /// Forgets all pull scripts: pulls succeed at once again.
    pub fn clear_pull_scripts(&self) {
        self.lock().clear_pull_scripts();
    }

    /// Makes pulls wait, once started and counted as in flight, until
    /// [`FakeCri::release_pulls`]: a gate for testing concurrency caps without timing.
    pub fn hold_pulls(&self) {
        self.shared.pull_gate.send_replace(false);
    }

    /// Lets held and future pulls proceed.
    pub fn release_pulls(&self) {
        self.shared.pull_gate.send_replace(true);
    }

    /// The pull counters.
    pub fn pull_stats(&self) -> PullStats {
        self.lock().pulls
    }

    /// Pulls running now.
    pub fn in_flight_pulls(&self) -> usize {
        self.lock().pulls.in_flight
    }

    /// The most pulls seen running at once.
    pub fn max_concurrent_pulls(&self) -> usize {
        self.lock().pulls.max_in_flight
    }

    /// Zeroes the pull counters, except the pulls still running.
    pub fn reset_pull_stats(&self) {
        let mut state = self.lock();
        let in_flight = state.pulls.in_flight;
        state.pulls = PullStats {
            in_flight,
            max_in_flight: in_flight,
            ..PullStats::default()
        };
    }

    // ---- pods and containers --------------------------------------------------------

    /// Starts `pod` the way the kubelet would: its sandbox, then each container created
    /// and started with the kubelet's labels and annotations, pulling missing images.
    /// No RPC is recorded.
    pub fn add_pod_with_containers(&self, pod: KubeletPod) -> Result<FakePod, Status> {
        kubelet::start_pod(&mut self.lock(), &pod)
    }

    /// Restarts the newest container called `container_name` in the pod's ready sandbox
    /// the way the kubelet does: a new container, attempt and `restartCount` one higher,
    /// same config, started. A previous attempt still running is killed (137) first.
    /// Returns the new container id.
    pub fn restart_container(&self, pod_uid: &str, container_name: &str) -> Result<String, Status> {
        self.restart_container_with(pod_uid, container_name, |_| {})
    }

    /// [`FakeCri::restart_container`], with the new attempt's config edited first, e.g.
    /// a new image and hash as after an in-place update. An image given by reference is
    /// pulled if need be and swapped for its id, as the kubelet does.
    pub fn restart_container_with(
        &self,
        pod_uid: &str,
        container_name: &str,
        edit: impl FnOnce(&mut v1::ContainerConfig),
    ) -> Result<String, Status> {
        let mut plan = kubelet::plan_restart(&self.lock(), pod_uid, container_name)?;
        edit(plan.config_mut());
        plan.execute(&mut self.lock())
    }

    /// The id of the newest container called `container_name` in the pod's ready sandbox.
    pub fn container_id(&self, pod_uid: &str, container_name: &str) -> Option<String> {
        let state = self.lock();
        let sandbox_id = state.ready_sandbox_of_pod(pod_uid)?;
        state
            .newest_container_named(&sandbox_id, container_name)
            .map(|(id, _)| id)
    }

    /// All sandboxes, as `ListPodSandbox` returns them.
    pub fn sandboxes(&self) -> Vec<v1::PodSandbox> {
        self.lock().list_sandboxes(None)
    }

    /// A sandbox's status, as `PodSandboxStatus` returns it.
    pub fn sandbox_status(&self, sandbox_id: &str) -> Option<v1::PodSandboxStatus> {
        self.lock().sandbox_status(sandbox_id).ok()
    }

    /// Sets the IP a sandbox reports while ready. Without it, a sandbox reports the
    /// builder's pod IP, or none for host network, as containerd does.
    pub fn set_sandbox_ip(&self, sandbox_id: &str, ip: impl Into<String>) -> Result<(), Status> {
        self.lock().set_sandbox_ip(sandbox_id, ip.into())
    }

    /// Sets a sandbox's state, e.g. NOTREADY after its pause process died.
    pub fn set_sandbox_state(
        &self,
        sandbox_id: &str,
        state: v1::PodSandboxState,
    ) -> Result<(), Status> {
        self.lock().set_sandbox_state(sandbox_id, state)
    }

    /// All containers, as `ListContainers` returns them.
    pub fn containers(&self) -> Vec<v1::Container> {
        self.lock().list_containers(None)
    }

    /// A container's status, as `ContainerStatus` returns it.
    pub fn container_status(&self, container_id: &str) -> Option<v1::ContainerStatus> {
        self.lock().container_status(container_id).ok()
    }

    /// The container's process exits by itself with `exit_code`.
    pub fn exit_container(&self, container_id: &str, exit_code: i32) -> Result<(), Status> {
        self.lock().exit_container(container_id, exit_code)
    }

    /// Backdates (or postdates) a container's start, in nanoseconds since the epoch.
    pub fn set_container_started_at(
        &self,
        container_id: &str,
        started_at: i64,
    ) -> Result<(), Status> {
        self.lock()
            .set_container_started_at(container_id, started_at)
    }

    /// Sets how a container's process reacts to `StopContainer`.
    pub fn set_stop_behaviour(
        &self,
        container_id: &str,
        stop_behaviour: StopBehaviour,
    ) -> Result<(), Status> {
        self.lock().set_stop_behaviour(container_id, stop_behaviour)
    }

    /// `ExecSync` of exactly `cmd` in the container returns `script`. Unscripted
    /// commands exit 0 at once with no output.
    pub fn script_exec<I, S>(&self, container_id: &str, cmd: I, script: ExecScript)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let cmd = cmd.into_iter().map(Into::into).collect();
        self.lock()
            .script_exec(container_id.to_owned(), cmd, script);
    }

    // ---- calls --------------------------------------------------------------------

    /// Every RPC received, in order, with its request.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The RPCs of one method, in order.
    ///
    /// # Panics
    ///
    /// If `method` is a string that names no method.
    pub fn calls_of(&self, method: impl IntoMethod) -> Vec<Call> {
        let method = method.into_method();
        self.lock()
            .calls
            .iter()
            .filter(|call| call.method() == method)
            .cloned()
            .collect()
    }

    /// How many RPCs of one method were received.
    ///
    /// # Panics
    ///
    /// If `method` is a string that names no method.
    pub fn count(&self, method: impl IntoMethod) -> usize {
        let method = method.into_method();
        self.lock()
            .calls
            .iter()
            .filter(|call| call.method() == method)
            .count()
    }

    /// The image of every `PullImage` received, as the client spelled it, in order.
    pub fn pulled_images(&self) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .filter_map(|call| match call {
                Call::PullImage(request) => Some(
                    request
                        .image
                        .as_ref()
                        .map(|image| image.image.clone())
                        .unwrap_or_default(),
                ),
                _ => None,
            })
            .collect()
    }

    /// Forgets the calls recorded so far.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    // ---- faults -------------------------------------------------------------------

    /// The next `times` calls of `method` fail with `code` and `message`, before any
    /// standing [`FakeCri::fail_always`] failure.
    ///
    /// # Panics
    ///
    /// If `method` is a string that names no method.
    pub fn fail_next(
        &self,
        method: impl IntoMethod,
        times: usize,
        code: Code,
        message: impl Into<String>,
    ) {
        let failure = Failure {
            code,
            message: message.into(),
        };
        self.lock()
            .faults
            .fail_next(method.into_method(), times, failure);
    }

    /// Every call of `method` fails with `code` and `message` until
    /// [`FakeCri::clear_failures`].
    ///
    /// # Panics
    ///
    /// If `method` is a string that names no method.
    pub fn fail_always(&self, method: impl IntoMethod, code: Code, message: impl Into<String>) {
        let failure = Failure {
            code,
            message: message.into(),
        };
        self.lock()
            .faults
            .fail_always(method.into_method(), failure);
    }

    /// Forgets every `fail_next` and `fail_always`.
    pub fn clear_failures(&self) {
        self.lock().faults.clear_failures();
    }

    /// Every call of `method` waits `latency` before doing anything; zero removes it.
    ///
    /// # Panics
    ///
    /// If `method` is a string that names no method.
    pub fn set_latency(&self, method: impl IntoMethod, latency: Duration) {
        self.lock()
            .faults
            .set_latency(method.into_method(), latency);
    }

    /// While `true`, every call fails at once with UNAVAILABLE (and is still recorded).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().faults.unavailable = unavailable;
    }
}

/// Pull scripts are keyed by normalised reference; one that does not parse is kept as
/// given (no pull of it gets as far as its script).
fn pull_script_key(reference: &str) -> String {
    ImageReference::parse_normalized(reference)
        .map_or_else(|_| reference.to_owned(), |reference| reference.to_string())
}
