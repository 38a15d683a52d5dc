//! One pod's life on the node: converge the runtime to the spec, report status, and tear
//! the pod down when it is deleted. One worker per pod uid, polling CRI every sync
//! interval (containerd 1.6 has no container event stream).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kruised::cri::client::image_spec;
use kruised::cri::{CriClient, CriError};
use kruised::proto::runtime::v1 as cri;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use tokio::sync::{Notify, watch};

use super::Context;
use super::probe::{ProbeTiming, Prober, exec_readiness_probe};
use super::restart::{RestartBackoff, RestartPolicy, Step, next_step};
use super::runtime::{ObservedContainer, PodRuntime, RunState, is_not_found, observe};
use super::spec::{
    DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS, PodIdentity, container_config, pod_log_directory,
    pull_policy, sandbox_config,
};
use super::status::{StatusInputs, Waiting, pod_status};

/// How long a pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);

/// Why one sync of a pod failed; the next sync retries.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A CRI call failed.
    #[error(transparent)]
    Runtime(#[from] CriError),
    /// An API call failed.
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// The pod's log folder could not be created.
    #[error("cannot create the log folder {path}: {source}")]
    LogDirectory {
        /// The folder.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The status this worker wrote last, the resourceVersion that write produced, and the
/// versions our chain of writes superseded (a watch still showing one of them lags).
struct LastWrite {
    status: PodStatus,
    version: Option<String>,
    superseded: Vec<Option<String>>,
}

/// The worker of one pod uid.
pub struct PodWorker {
    context: Arc<Context>,
    store: Store<Pod>,
    uid: String,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    /// `ContainerStatus` of exited containers, which never changes.
    exited: HashMap<String, ObservedContainer>,
    /// Restart back-off by container name.
    backoff: HashMap<String, RestartBackoff>,
    /// When the restart of an exited container (by ID) is due.
    restart_due: HashMap<String, SystemTime>,
    /// Why containers wait, by container name.
    waiting: HashMap<String, Waiting>,
    prober: Prober,
    /// The status last written, so that a watch lagging behind our writes causes no
    /// second write.
    last_written: Option<LastWrite>,
    /// The end of the grace period, once termination started.
    termination_deadline: Option<Instant>,
    /// The kubelet's final grace-0 delete went through.
    deleted: bool,
}

impl PodWorker {
    /// A worker for pod `uid`; `wake` makes it sync before its interval elapses.
    pub fn new(
        context: Arc<Context>,
        store: Store<Pod>,
        uid: String,
        wake: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            context,
            store,
            uid,
            wake,
            shutdown,
            exited: HashMap::new(),
            backoff: HashMap::new(),
            restart_due: HashMap::new(),
            waiting: HashMap::new(),
            prober: Prober::default(),
            last_written: None,
            termination_deadline: None,
            deleted: false,
        }
    }

    /// Syncs until the pod is gone from both the API and the runtime, or until shutdown
    /// (which leaves the pod running, as a stopped kubelet does). Returns the pod uid.
    pub async fn run(mut self) -> String {
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let pod = self
                .store
                .find(|pod| pod.metadata.uid.as_deref() == Some(self.uid.as_str()));
            let result = match &pod {
                None => self.tear_down().await,
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                    self.terminate(pod).await.map(|()| false)
                }
                Some(pod) => self.sync(pod).await.map(|()| false),
            };
            match result {
                Ok(true) => {
                    tracing::info!(uid = %self.uid, "pod removed from the runtime");
                    break;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(uid = %self.uid, %error, "pod sync failed; retrying"),
            }
            let interval = self.context.sync_interval;
            tokio::select! {
                _ = self.shutdown.changed() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
        self.uid
    }

    async fn observe(&mut self) -> Result<PodRuntime, CriError> {
        observe(&self.context.cri, &self.uid, &mut self.exited).await
    }

    /// One sync of a live pod: converge, probe, report.
    async fn sync(&mut self, pod: &Pod) -> Result<(), SyncError> {
        let mut runtime = self.observe().await?;
        let terminal = matches!(
            pod.status
                .as_ref()
                .and_then(|status| status.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if terminal {
            // The kubelet stops the sandbox of a finished pod and keeps its containers.
            for sandbox in runtime.sandboxes.iter().filter(|sandbox| sandbox.ready) {
                self.context.cri.stop_pod_sandbox(&sandbox.id).await?;
            }
            self.run_probes(pod, &runtime).await;
            return self.write_status(pod, &runtime).await.map(drop);
        }
        // Report what is there before acting, as the kubelet does: Pending with
        // ContainerCreating, or the exited container that is about to restart.
        self.run_probes(pod, &runtime).await;
        let written = self.write_status(pod, &runtime).await?;
        let pod = written.as_ref().unwrap_or(pod);
        if self.converge(pod, &runtime).await? {
            runtime = self.observe().await?;
            self.run_probes(pod, &runtime).await;
            self.write_status(pod, &runtime).await?;
        }
        Ok(())
    }

    /// Creates the sandbox and containers that are missing and restarts exited ones.
    /// Returns whether anything was done.
    async fn converge(&mut self, pod: &Pod, runtime: &PodRuntime) -> Result<bool, SyncError> {
        let identity = PodIdentity::of(pod);
        let policy = RestartPolicy::parse(
            pod.spec
                .as_ref()
                .and_then(|spec| spec.restart_policy.as_deref()),
        );
        let mut acted = false;
        let (sandbox_id, sandbox_attempt) = match runtime.ready_sandbox() {
            Some(sandbox) => (sandbox.id.clone(), sandbox.attempt),
            None => {
                // A Never pod whose containers already ran is done; no new sandbox.
                if policy == RestartPolicy::Never && !runtime.containers.is_empty() {
                    return Ok(false);
                }
                for sandbox in &runtime.sandboxes {
                    match self.context.cri.stop_pod_sandbox(&sandbox.id).await {
                        Err(error) if !is_not_found(&error) => return Err(error.into()),
                        _ => {}
                    }
                }
                let attempt = runtime.next_sandbox_attempt();
                let log_directory = pod_log_directory(&self.context.pod_log_dir, &identity);
                create_dir(&log_directory).await?;
                let config = self.sandbox_config(pod, attempt);
                let id = self.context.cri.run_pod_sandbox(config, "").await?;
                tracing::info!(pod = %identity, sandbox = %id, attempt, "started the pod sandbox");
                acted = true;
                (id, attempt)
            }
        };
        let sandbox_config = self.sandbox_config(pod, sandbox_attempt);
        let containers = pod
            .spec
            .as_ref()
            .map(|spec| spec.containers.as_slice())
            .unwrap_or_default();
        for container in containers {
            let latest = runtime.latest(&container.name);
            match next_step(policy, latest, &sandbox_id) {
                Step::Keep => {}
                Step::Start { id } => {
                    acted = true;
                    if let Err(error) = self.context.cri.start_container(&id).await {
                        self.wait(container, "RunContainerError", &error);
                    }
                }
                Step::Create { attempt } => {
                    acted = true;
                    self.create_and_start(pod, container, attempt, &sandbox_id, &sandbox_config)
                        .await?;
                }
                Step::Restart { attempt, exited } => {
                    let due = match self.restart_due.get(&exited) {
                        Some(due) => *due,
                        None => {
                            let due = latest.map_or_else(SystemTime::now, |latest| {
                                let delay = self
                                    .backoff
                                    .entry(container.name.clone())
                                    .or_default()
                                    .delay_after_exit(latest.ran_for());
                                exit_time(latest) + delay
                            });
                            self.restart_due.insert(exited.clone(), due);
                            due
                        }
                    };
                    if SystemTime::now() >= due {
                        acted = true;
                        tracing::info!(
                            pod = %identity,
                            container = %container.name,
                            attempt,
                            "restarting the exited container"
                        );
                        self.create_and_start(
                            pod,
                            container,
                            attempt,
                            &sandbox_id,
                            &sandbox_config,
                        )
                        .await?;
                    }
                }
            }
        }
        self.restart_due
            .retain(|id, _| runtime.containers.iter().any(|c| &c.id == id));
        self.remove_old_attempts(runtime, containers).await;
        Ok(acted)
    }

    fn sandbox_config(&self, pod: &Pod, attempt: u32) -> cri::PodSandboxConfig {
        sandbox_config(
            pod,
            &self.context.node_name,
            &self.context.pod_log_dir,
            &self.context.cgroup_parent_prefix,
            attempt,
        )
    }

    fn wait(&mut self, container: &Container, reason: &str, error: &dyn std::fmt::Display) {
        tracing::warn!(container = %container.name, reason, %error, "container cannot run");
        self.waiting.insert(
            container.name.clone(),
            Waiting {
                reason: reason.to_string(),
                message: error.to_string(),
            },
        );
    }

    /// Pulls the image per its pull policy, then creates and starts the container. A
    /// failure is reported as the container's waiting reason, not as a sync error.
    async fn create_and_start(
        &mut self,
        pod: &Pod,
        container: &Container,
        attempt: u32,
        sandbox_id: &str,
        sandbox_config: &cri::PodSandboxConfig,
    ) -> Result<(), SyncError> {
        let cri = self.context.cri.clone();
        let image = container.image.clone().unwrap_or_default();
        let policy = pull_policy(container);
        let present = match policy.as_str() {
            "Always" => false,
            _ => match cri.image_status(&image).await {
                Ok(status) => status.is_some(),
                Err(error) => {
                    self.wait(container, "ErrImagePull", &error);
                    return Ok(());
                }
            },
        };
        if !present {
            if policy == "Never" {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.wait(container, "ErrImageNeverPull", &message);
                return Ok(());
            }
            let request = cri::PullImageRequest {
                image: Some(image_spec(&image)),
                auth: None,
                sandbox_config: Some(sandbox_config.clone()),
            };
            if let Err(error) = cri.pull_image(request, Some(PULL_TIMEOUT)).await {
                self.wait(container, "ErrImagePull", &error);
                return Ok(());
            }
        }
        let log_directory = std::path::Path::new(&sandbox_config.log_directory);
        create_dir(&log_directory.join(&container.name)).await?;
        let config = container_config(pod, container, attempt);
        let id = match cri
            .create_container(sandbox_id, config, sandbox_config.clone())
            .await
        {
            Ok(id) => id,
            Err(error) => {
                self.wait(container, "CreateContainerError", &error);
                return Ok(());
            }
        };
        if let Err(error) = cri.start_container(&id).await {
            self.wait(container, "RunContainerError", &error);
            return Ok(());
        }
        self.waiting.remove(&container.name);
        tracing::info!(
            pod = %PodIdentity::of(pod),
            container = %container.name,
            id = %id,
            attempt,
            "started the container"
        );
        Ok(())
    }

    /// Removes exited attempts older than the previous one: like the kubelet's container
    /// garbage collection, it keeps the newest exited container for `lastState`.
    async fn remove_old_attempts(&mut self, runtime: &PodRuntime, containers: &[Container]) {
        for container in containers {
            for old in runtime.attempts(&container.name).iter().skip(2) {
                if old.state != RunState::Exited {
                    continue;
                }
                match self.context.cri.remove_container(&old.id).await {
                    Ok(()) => {
                        self.exited.remove(&old.id);
                    }
                    Err(error) => {
                        tracing::debug!(id = %old.id, %error, "cannot remove an old attempt")
                    }
                }
            }
        }
    }

    /// Runs the exec readiness probes that are due.
    async fn run_probes(&mut self, pod: &Pod, runtime: &PodRuntime) {
        let containers = pod
            .spec
            .as_ref()
            .map(|spec| spec.containers.as_slice())
            .unwrap_or_default();
        let mut running = Vec::new();
        for container in containers {
            let Some(probe) = exec_readiness_probe(container) else {
                continue;
            };
            let Some(latest) = runtime
                .latest(&container.name)
                .filter(|latest| latest.state == RunState::Running)
            else {
                continue;
            };
            running.push(latest.id.as_str());
            let timing = ProbeTiming::of(probe);
            if !self
                .prober
                .state(&latest.id, &timing, Instant::now())
                .due(Instant::now())
            {
                continue;
            }
            let command = probe
                .exec
                .as_ref()
                .and_then(|exec| exec.command.clone())
                .unwrap_or_default();
            let success = match self
                .context
                .cri
                .exec_sync(&latest.id, command, timing.timeout)
                .await
            {
                Ok(response) => response.exit_code == 0,
                Err(error) => {
                    tracing::debug!(container = %container.name, %error, "readiness probe errored");
                    false
                }
            };
            self.prober
                .state(&latest.id, &timing, Instant::now())
                .record(&timing, success, Instant::now());
        }
        self.prober.retain(&running);
    }

    fn status_for(&self, pod: &Pod, runtime: &PodRuntime) -> PodStatus {
        pod_status(StatusInputs {
            pod,
            runtime,
            runtime_name: &self.context.runtime_name,
            probe_readiness: &self.prober.readiness(),
            waiting: &self.waiting,
            now: Timestamp::now(),
        })
    }

    /// Writes the status through `pods/status` when it changed, with the pod's
    /// resourceVersion; on a conflict, reads the pod again and recomputes, so that
    /// conditions others wrote meanwhile (readiness gates) are kept. Returns the pod as
    /// written, if it was.
    async fn write_status(
        &mut self,
        pod: &Pod,
        runtime: &PodRuntime,
    ) -> Result<Option<Pod>, SyncError> {
        let identity = PodIdentity::of(pod);
        let api: Api<Pod> = Api::namespaced(self.context.client.clone(), &identity.namespace);
        let mut current = pod.clone();
        for _ in 0..3 {
            let status = self.status_for(&current, runtime);
            if current.status.as_ref() == Some(&status) {
                return Ok(None);
            }
            let based_on = current.metadata.resource_version.clone();
            if self
                .last_written
                .as_ref()
                .is_some_and(|last| last.status == status && last.superseded.contains(&based_on))
            {
                // Our write is not in the watch yet.
                return Ok(None);
            }
            let mut updated = current.clone();
            updated.status = Some(status.clone());
            match api
                .replace_status(&identity.name, &PostParams::default(), &updated)
                .await
            {
                Ok(written) => {
                    tracing::debug!(pod = %identity, phase = ?status.phase, "wrote pod status");
                    let mut superseded = match self.last_written.take() {
                        // Written over our own previous write: older versions stay stale.
                        Some(last) if last.version == based_on => last.superseded,
                        _ => Vec::new(),
                    };
                    superseded.push(based_on);
                    self.last_written = Some(LastWrite {
                        status,
                        version: written.metadata.resource_version.clone(),
                        superseded,
                    });
                    return Ok(Some(written));
                }
                Err(kube::Error::Api(error)) if error.is_conflict() => {
                    match api.get_opt(&identity.name).await? {
                        Some(fresh) if fresh.metadata.uid == pod.metadata.uid => current = fresh,
                        _ => return Ok(None),
                    }
                }
                Err(kube::Error::Api(error)) if error.is_not_found() => return Ok(None),
                Err(error) => return Err(error.into()),
            }
        }
        Ok(None)
    }

    /// Graceful termination of a pod with a deletionTimestamp: preStop hooks and
    /// StopContainer within the grace period, then the sandbox, then the final delete
    /// with grace 0 that lets the API server drop the pod.
    async fn terminate(&mut self, pod: &Pod) -> Result<(), SyncError> {
        if self.deleted {
            return Ok(());
        }
        let identity = PodIdentity::of(pod);
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|spec| spec.termination_grace_period_seconds)
            })
            .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS)
            .max(0);
        let deadline = *self.termination_deadline.get_or_insert_with(|| {
            tracing::info!(pod = %identity, grace, "killing the pod");
            Instant::now() + Duration::from_secs(grace as u64)
        });
        let runtime = self.observe().await?;
        let containers = pod
            .spec
            .as_ref()
            .map(|spec| spec.containers.as_slice())
            .unwrap_or_default();
        let kills = runtime
            .containers
            .iter()
            .filter(|observed| observed.state != RunState::Exited)
            .map(|observed| {
                let spec = containers.iter().find(|c| c.name == observed.name);
                kill_container(&self.context.cri, spec, observed, deadline)
            });
        for result in futures::future::join_all(kills).await {
            result?;
        }
        remove_sandboxes(&self.context.cri, &runtime).await?;

        let api: Api<Pod> = Api::namespaced(self.context.client.clone(), &identity.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&identity.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(error)) if error.is_not_found() || error.is_conflict() => {}
            Err(error) => return Err(error.into()),
        }
        tracing::info!(pod = %identity, "pod terminated and deleted");
        self.deleted = true;
        Ok(())
    }

    /// The pod is gone from the API: remove whatever the runtime still holds of it.
    /// Returns whether nothing is left.
    async fn tear_down(&mut self) -> Result<bool, SyncError> {
        let runtime = self.observe().await?;
        if runtime.is_empty() {
            return Ok(true);
        }
        tracing::info!(uid = %self.uid, "pod no longer in the API; removing its sandboxes");
        remove_sandboxes(&self.context.cri, &runtime).await?;
        Ok(self.observe().await?.is_empty())
    }
}

/// When the container exited, as a wall-clock time (now if the runtime did not say).
fn exit_time(container: &ObservedContainer) -> SystemTime {
    if container.finished_at > 0 {
        UNIX_EPOCH + Duration::from_nanos(container.finished_at as u64)
    } else {
        SystemTime::now()
    }
}

async fn create_dir(path: &std::path::Path) -> Result<(), SyncError> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|source| SyncError::LogDirectory {
            path: path.display().to_string(),
            source,
        })
}

/// Runs the preStop exec hook (if any) within the grace period, then stops the container
/// with what is left of it (spec/kruise-daemon.md §2.5 describes the kubelet's kill).
async fn kill_container(
    cri: &CriClient,
    spec: Option<&Container>,
    observed: &ObservedContainer,
    deadline: Instant,
) -> Result<(), SyncError> {
    let pre_stop = spec
        .and_then(|spec| spec.lifecycle.as_ref())
        .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
        .and_then(|handler| handler.exec.as_ref())
        .and_then(|exec| exec.command.clone())
        .filter(|command| !command.is_empty());
    if let Some(command) = pre_stop
        && observed.state == RunState::Running
    {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if !remaining.is_zero() {
            // Timeout 0: no limit of its own; the grace period bounds it.
            let hook = cri.exec_sync(&observed.id, command, Duration::ZERO);
            match tokio::time::timeout(remaining, hook).await {
                Ok(Ok(response)) if response.exit_code == 0 => {}
                Ok(Ok(response)) => tracing::warn!(
                    container = %observed.name,
                    exit_code = response.exit_code,
                    "preStop hook failed"
                ),
                Ok(Err(error)) => {
                    tracing::warn!(container = %observed.name, %error, "preStop hook failed")
                }
                Err(_) => tracing::warn!(
                    container = %observed.name,
                    "preStop hook did not finish within the grace period"
                ),
            }
        }
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    match cri.stop_container(&observed.id, remaining).await {
        Err(error) if !is_not_found(&error) => Err(error.into()),
        _ => Ok(()),
    }
}

/// Stops and removes every sandbox of the pod (which removes their containers), then any
/// container left outside them.
async fn remove_sandboxes(cri: &CriClient, runtime: &PodRuntime) -> Result<(), SyncError> {
    for sandbox in &runtime.sandboxes {
        for result in [
            cri.stop_pod_sandbox(&sandbox.id).await,
            cri.remove_pod_sandbox(&sandbox.id).await,
        ] {
            match result {
                Err(error) if !is_not_found(&error) => return Err(error.into()),
                _ => {}
            }
        }
    }
    for container in &runtime.containers {
        if runtime
            .sandboxes
            .iter()
            .any(|s| s.id == container.sandbox_id)
        {
            continue;
        }
        match cri.remove_container(&container.id).await {
            Err(error) if !is_not_found(&error) => return Err(error.into()),
            _ => {}
        }
    }
    Ok(())
}
