//! The fake runtime's in-memory world: images, sandboxes and containers, and the rules
//! containerd 1.6's CRI plugin applies to them, with its error texts.
//!
//! Everything here is synchronous and runs under the fake's one lock; the services in
//! `runtime_service` and `image_service` do the waiting (latency, slow pulls, grace
//! periods) outside it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::Status;

use super::calls::{Call, Faults};
use super::content::{ContentStore, ScriptedImage};
use super::reference::{self, ImageReference, fake_digest, quote};
use super::scripts::{ExecScript, PullScript, PullStats, SIGKILL_EXIT_CODE, StopBehaviour};
use crate::proto::runtime::v1;

/// containerd's `errorStartExitCode`: the exit code of a container that failed to start.
const START_ERROR_EXIT_CODE: i32 = 128;

/// Settings fixed when the fake is built.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) runtime_name: String,
    pub(crate) runtime_version: String,
    pub(crate) containerd_revision: String,
    pub(crate) sandbox_image: String,
    pub(crate) pod_ip: String,
    pub(crate) image_fs_mountpoint: String,
}

/// The whole fake world, behind [`super::FakeCri`]'s lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: Config,
    images: Vec<ImageRecord>,
    sandboxes: Vec<SandboxRecord>,
    containers: Vec<ContainerRecord>,
    pub(crate) calls: Vec<Call>,
    pub(crate) faults: Faults,
    pull_scripts: HashMap<String, PullScripts>,
    exec_scripts: HashMap<(String, Vec<String>), ExecScript>,
    pub(crate) pulls: PullStats,
    /// containerd's content store in the `k8s.io` namespace.
    pub(crate) content: ContentStore,
    /// The last timestamp handed out, so that no two objects share a creation time.
    last_timestamp: i64,
    /// How many ids have been handed out.
    issued_ids: u64,
    /// Makes ids differ between two fakes in one test.
    salt: u64,
}

/// Scripts for one normalised reference: one-shot ones first, then the standing one.
#[derive(Debug, Default)]
struct PullScripts {
    once: VecDeque<PullScript>,
    always: Option<PullScript>,
}

#[derive(Debug, Clone)]
struct ImageRecord {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    size: u64,
    /// The content-store blobs the image keeps from garbage collection: empty for an
    /// image whose pull modelled no content.
    content: Vec<String>,
}

#[derive(Debug, Clone)]
struct SandboxRecord {
    id: String,
    /// The name containerd reserves: `name_namespace_uid_attempt`.
    name: String,
    config: v1::PodSandboxConfig,
    runtime_handler: String,
    state: v1::PodSandboxState,
    created_at: i64,
    /// The IP the sandbox reports, as the test set it; `None` for containerd's default.
    ip: Option<String>,
}

#[derive(Debug, Clone)]
struct ContainerRecord {
    id: String,
    sandbox_id: String,
    /// The name containerd reserves: `container_pod_namespace_uid_attempt`.
    name: String,
    config: v1::ContainerConfig,
    /// The id of the image the container was created from.
    image_id: String,
    log_path: String,
    state: v1::ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    reason: String,
    message: String,
    stop_behaviour: StopBehaviour,
}

/// NOT_FOUND for a container id, worded as containerd's Start/Stop/Status do.
pub(crate) fn container_not_found(id: &str) -> Status {
    Status::not_found(format!(
        "an error occurred when try to find container {}: not found",
        quote(id)
    ))
}

/// NOT_FOUND for a sandbox id, worded as containerd's StopPodSandbox does.
pub(crate) fn sandbox_not_found(id: &str) -> Status {
    Status::not_found(format!(
        "an error occurred when try to find sandbox {}: not found",
        quote(id)
    ))
}

/// Whether every `key=value` of `selector` is among `labels` (CRI selectors are ANDed).
fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

impl State {
    pub(crate) fn new(config: Config, salt: u64) -> Self {
        Self {
            config,
            images: Vec::new(),
            sandboxes: Vec::new(),
            containers: Vec::new(),
            calls: Vec::new(),
            faults: Faults::default(),
            pull_scripts: HashMap::new(),
            exec_scripts: HashMap::new(),
            pulls: PullStats::default(),
            content: ContentStore::default(),
            last_timestamp: 0,
            issued_ids: 0,
            salt,
        }
    }

    /// Nanoseconds since the epoch, strictly later than any earlier call's.
    pub(crate) fn now(&mut self) -> i64 {
        let wall_clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
            });
        self.last_timestamp = wall_clock.max(self.last_timestamp.saturating_add(1));
        self.last_timestamp
    }

    /// A fresh 64-hex-digit id, shaped like containerd's `util.GenerateID`.
    fn new_id(&mut self) -> String {
        self.issued_ids += 1;
        reference::hex64(format!("{} {}", self.salt, self.issued_ids).as_bytes())
    }

    // ---- images -------------------------------------------------------------------

    /// Stores the image `reference` names, or adds the reference to the stored image, and
    /// returns the image id. The id is a function of the manifest, and the manifest of a
    /// tag is a function of the tag, so one reference always yields one id, and pulling
    /// `repo@<digest>` finds the image `repo:<tag>` brought in.
    pub(crate) fn add_image(&mut self, reference: &ImageReference) -> String {
        let manifest_digest = reference.digest().map_or_else(
            || fake_digest(&format!("manifest {reference}")),
            str::to_owned,
        );
        let id = fake_digest(&format!("config {manifest_digest}"));
        let repo_digest = format!("{}@{manifest_digest}", reference.repository());
        let repo_tag = reference.digest().is_none().then(|| reference.to_string());
        let index = match self.images.iter().position(|image| image.id == id) {
            Some(index) => index,
            None => {
                self.images.push(ImageRecord {
                    id: id.clone(),
                    repo_tags: Vec::new(),
                    repo_digests: Vec::new(),
                    // Some plausible size between 1 and 51 MB (CRI requires > 0).
                    size: 1_000_000 + reference::fnv1a64(id.as_bytes(), 0) % 50_000_000,
                    content: Vec::new(),
                });
                self.images.len() - 1
            }
        };
        let image = &mut self.images[index];
        if let Some(repo_tag) = repo_tag
            && !image.repo_tags.contains(&repo_tag)
        {
            image.repo_tags.push(repo_tag);
        }
        if !image.repo_digests.contains(&repo_digest) {
            image.repo_digests.push(repo_digest);
        }
        id
    }

    /// Stores the image a pull with modelled content brought in: its id is the config
    /// digest and its repo digest the digest the tag resolved to, as with containerd.
    pub(crate) fn add_pulled_image(
        &mut self,
        reference: &ImageReference,
        image: &ScriptedImage,
    ) -> String {
        let id = image.config.digest.clone();
        let repo_digest = format!("{}@{}", reference.repository(), image.resolved_digest());
        let repo_tag = reference.digest().is_none().then(|| reference.to_string());
        // A tag moves to the image it now resolves to; the old image stays, reachable by
        // its digest and id, as in containerd's CRI image store.
        if let Some(repo_tag) = &repo_tag {
            for other in self.images.iter_mut().filter(|other| other.id != id) {
                other.repo_tags.retain(|tag| tag != repo_tag);
            }
        }
        let index = match self.images.iter().position(|stored| stored.id == id) {
            Some(index) => index,
            None => {
                self.images.push(ImageRecord {
                    id: id.clone(),
                    repo_tags: Vec::new(),
                    repo_digests: Vec::new(),
                    size: image.image_size(),
                    content: Vec::new(),
                });
                self.images.len() - 1
            }
        };
        let stored = &mut self.images[index];
        if let Some(repo_tag) = repo_tag
            && !stored.repo_tags.contains(&repo_tag)
        {
            stored.repo_tags.push(repo_tag);
        }
        if !stored.repo_digests.contains(&repo_digest) {
            stored.repo_digests.push(repo_digest);
        }
        for blob in image.blobs() {
            if !stored.content.contains(&blob.digest) {
                stored.content.push(blob.digest.clone());
            }
        }
        id
    }

    /// The blobs stored images keep from garbage collection.
    pub(crate) fn pinned_content(&self) -> BTreeSet<String> {
        self.images
            .iter()
            .flat_map(|image| image.content.iter().cloned())
            .collect()
    }

    /// containerd's `localResolve`: a full `sha256:` id, else a tag or digest reference
    /// after normalisation.
    fn resolve_image(&self, reference_or_id: &str) -> Option<&ImageRecord> {
        if reference::is_valid_digest(reference_or_id) {
            return self.images.iter().find(|image| image.id == reference_or_id);
        }
        let normalized = ImageReference::parse_normalized(reference_or_id)
            .ok()?
            .to_string();
        self.images.iter().find(|image| {
            image.repo_tags.contains(&normalized) || image.repo_digests.contains(&normalized)
        })
    }

    fn image_by_id(&self, id: &str) -> Option<&ImageRecord> {
        self.images.iter().find(|image| image.id == id)
    }

    /// The id of the image `reference_or_id` names, storing it first if need be (what
    /// the kubelet's pull-if-not-present amounts to).
    pub(crate) fn ensure_image(&mut self, reference_or_id: &str) -> Result<String, Status> {
        if let Some(image) = self.resolve_image(reference_or_id) {
            return Ok(image.id.clone());
        }
        let reference = ImageReference::parse_normalized(reference_or_id).map_err(|error| {
            Status::unknown(format!(
                "failed to parse image reference {}: {error}",
                quote(reference_or_id)
            ))
        })?;
        Ok(self.add_image(&reference))
    }

    /// Removes the image with every tag and digest it has, as containerd's RemoveImage
    /// does; `false` when there was no such image.
    pub(crate) fn remove_image(&mut self, reference_or_id: &str) -> bool {
        let Some(id) = self
            .resolve_image(reference_or_id)
            .map(|image| image.id.clone())
        else {
            return false;
        };
        self.images.retain(|image| image.id != id);
        // containerd's garbage collector then drops the image's content, which is what
        // pull-progress.md's reset between runs relied on.
        let pinned = self.pinned_content();
        self.content.collect_garbage(&pinned);
        true
    }

    pub(crate) fn list_images(&self) -> Vec<v1::Image> {
        self.images.iter().map(ImageRecord::to_cri).collect()
    }

    pub(crate) fn image_status(&self, reference_or_id: &str) -> Option<v1::Image> {
        self.resolve_image(reference_or_id).map(ImageRecord::to_cri)
    }

    pub(crate) fn image_fs_info(&mut self) -> v1::ImageFsInfoResponse {
        let used_bytes = self.images.iter().map(|image| image.size).sum();
        let inodes_used = u64::try_from(self.images.len()).unwrap_or(u64::MAX) * 100;
        v1::ImageFsInfoResponse {
            image_filesystems: vec![v1::FilesystemUsage {
                timestamp: self.now(),
                fs_id: Some(v1::FilesystemIdentifier {
                    mountpoint: self.config.image_fs_mountpoint.clone(),
                }),
                used_bytes: Some(v1::UInt64Value { value: used_bytes }),
                inodes_used: Some(v1::UInt64Value { value: inodes_used }),
            }],
            container_filesystems: Vec::new(),
        }
    }

    pub(crate) fn script_pull(&mut self, key: String, script: PullScript, once: bool) {
        let scripts = self.pull_scripts.entry(key).or_default();
        if once {
            scripts.once.push_back(script);
        } else {
            scripts.always = Some(script);
        }
    }

    pub(crate) fn clear_pull_scripts(&mut self) {
        self.pull_scripts.clear();
    }

    /// The script the next pull of `reference` will follow, left in place.
    pub(crate) fn peek_pull_script(&self, reference: &ImageReference) -> PullScript {
        self.pull_scripts
            .get(&reference.to_string())
            .and_then(|scripts| scripts.once.front().or(scripts.always.as_ref()))
            .cloned()
            .unwrap_or_default()
    }

    /// The script the next pull of `reference` follows: a one-shot script if any is
    /// left, else the standing one, else an instant success.
    pub(crate) fn next_pull_script(&mut self, reference: &ImageReference) -> PullScript {
        let Some(scripts) = self.pull_scripts.get_mut(&reference.to_string()) else {
            return PullScript::default();
        };
        scripts
            .once
            .pop_front()
            .or_else(|| scripts.always.clone())
            .unwrap_or_default()
    }

    // ---- sandboxes ----------------------------------------------------------------

    fn sandbox(&self, id: &str) -> Option<&SandboxRecord> {
        self.sandboxes.iter().find(|sandbox| sandbox.id == id)
    }

    fn sandbox_mut(&mut self, id: &str) -> Option<&mut SandboxRecord> {
        self.sandboxes.iter_mut().find(|sandbox| sandbox.id == id)
    }

    /// containerd's RunPodSandbox: reserve the name, make sure the sandbox (pause) image
    /// is there, and start the sandbox READY.
    pub(crate) fn run_sandbox(
        &mut self,
        request: v1::RunPodSandboxRequest,
    ) -> Result<String, Status> {
        let config = request.config.unwrap_or_default();
        let Some(metadata) = config.metadata.as_ref() else {
            return Err(Status::unknown("sandbox config must include metadata"));
        };
        let name = [
            metadata.name.as_str(),
            metadata.namespace.as_str(),
            metadata.uid.as_str(),
            &metadata.attempt.to_string(),
        ]
        .join("_");
        if let Some(holder) = self.sandboxes.iter().find(|sandbox| sandbox.name == name) {
            return Err(Status::unknown(format!(
                "failed to reserve sandbox name {name}: name {name} is reserved for {holder}",
                name = quote(&name),
                holder = quote(&holder.id),
            )));
        }
        let sandbox_image = self.config.sandbox_image.clone();
        self.ensure_image(&sandbox_image).map_err(|error| {
            Status::new(
                error.code(),
                format!(
                    "failed to get sandbox image {}: {}",
                    quote(&sandbox_image),
                    error.message()
                ),
            )
        })?;
        let id = self.new_id();
        let created_at = self.now();
        self.sandboxes.push(SandboxRecord {
            id: id.clone(),
            name,
            config,
            runtime_handler: request.runtime_handler,
            state: v1::PodSandboxState::SandboxReady,
            created_at,
            ip: None,
        });
        Ok(id)
    }

    /// containerd's StopPodSandbox: kill every container in it, then mark it NOTREADY.
    pub(crate) fn stop_sandbox(&mut self, id: &str) -> Result<(), Status> {
        if self.sandbox(id).is_none() {
            return Err(sandbox_not_found(id));
        }
        let now = self.now();
        for container in self
            .containers
            .iter_mut()
            .filter(|container| container.sandbox_id == id)
        {
            if container.is_running_or_unknown() {
                container.exit(now, SIGKILL_EXIT_CODE);
            }
        }
        if let Some(sandbox) = self.sandbox_mut(id) {
            sandbox.state = v1::PodSandboxState::SandboxNotready;
        }
        Ok(())
    }

    /// containerd's RemovePodSandbox: stop it, remove its containers, forget it. An
    /// unknown id is not an error.
    pub(crate) fn remove_sandbox(&mut self, id: &str) {
        if self.stop_sandbox(id).is_err() {
            return;
        }
        self.containers
            .retain(|container| container.sandbox_id != id);
        self.sandboxes.retain(|sandbox| sandbox.id != id);
    }

    pub(crate) fn sandbox_status(&self, id: &str) -> Result<v1::PodSandboxStatus, Status> {
        self.sandbox(id)
            .map(|sandbox| sandbox.to_status(&self.config.pod_ip))
            // containerd 1.6 leaves the id out of this one message.
            .ok_or_else(|| {
                Status::not_found("an error occurred when try to find sandbox: not found")
            })
    }

    pub(crate) fn list_sandboxes(
        &self,
        filter: Option<&v1::PodSandboxFilter>,
    ) -> Vec<v1::PodSandbox> {
        self.sandboxes
            .iter()
            .filter(|sandbox| filter.is_none_or(|filter| sandbox.matches(filter)))
            .map(SandboxRecord::to_cri)
            .collect()
    }

    pub(crate) fn set_sandbox_ip(&mut self, id: &str, ip: String) -> Result<(), Status> {
        let sandbox = self.sandbox_mut(id).ok_or_else(|| sandbox_not_found(id))?;
        sandbox.ip = Some(ip);
        Ok(())
    }

    pub(crate) fn set_sandbox_state(
        &mut self,
        id: &str,
        state: v1::PodSandboxState,
    ) -> Result<(), Status> {
        let sandbox = self.sandbox_mut(id).ok_or_else(|| sandbox_not_found(id))?;
        sandbox.state = state;
        Ok(())
    }

    /// The config the sandbox was created with.
    pub(crate) fn sandbox_config(&self, id: &str) -> Option<v1::PodSandboxConfig> {
        self.sandbox(id).map(|sandbox| sandbox.config.clone())
    }

    /// The newest READY sandbox of the pod with this uid.
    pub(crate) fn ready_sandbox_of_pod(&self, pod_uid: &str) -> Option<String> {
        self.sandboxes
            .iter()
            .rev()
            .find(|sandbox| {
                sandbox.state == v1::PodSandboxState::SandboxReady
                    && sandbox
                        .config
                        .metadata
                        .as_ref()
                        .is_some_and(|metadata| metadata.uid == pod_uid)
            })
            .map(|sandbox| sandbox.id.clone())
    }

    // ---- containers ---------------------------------------------------------------

    fn container(&self, id: &str) -> Option<&ContainerRecord> {
        self.containers.iter().find(|container| container.id == id)
    }

    fn container_mut(&mut self, id: &str) -> Option<&mut ContainerRecord> {
        self.containers
            .iter_mut()
            .find(|container| container.id == id)
    }

    /// containerd's CreateContainer: the sandbox must be running, the name free and the
    /// image present.
    pub(crate) fn create_container(
        &mut self,
        request: v1::CreateContainerRequest,
        stop_behaviour: StopBehaviour,
    ) -> Result<String, Status> {
        let sandbox_id = request.pod_sandbox_id;
        let Some(sandbox) = self.sandbox(&sandbox_id) else {
            return Err(Status::not_found(format!(
                "failed to find sandbox id {}: not found",
                quote(&sandbox_id)
            )));
        };
        if sandbox.state != v1::PodSandboxState::SandboxReady {
            // The sandbox's task is gone once it is stopped.
            return Err(Status::not_found(format!(
                "failed to get sandbox container task: no running task found: task {sandbox_id} not found: not found"
            )));
        }
        let config = request.config.unwrap_or_default();
        let Some(metadata) = config.metadata.as_ref() else {
            return Err(Status::unknown("container config must include metadata"));
        };
        // containerd builds the name from the sandbox config sent with this request, not
        // the stored one; the kubelet always sends it.
        let sandbox_config = request.sandbox_config.unwrap_or_default();
        let sandbox_metadata = sandbox_config.metadata.clone().unwrap_or_default();
        let name = [
            metadata.name.as_str(),
            sandbox_metadata.name.as_str(),
            sandbox_metadata.namespace.as_str(),
            sandbox_metadata.uid.as_str(),
            &metadata.attempt.to_string(),
        ]
        .join("_");
        if let Some(holder) = self
            .containers
            .iter()
            .find(|container| container.name == name)
        {
            return Err(Status::unknown(format!(
                "failed to reserve container name {name}: name {name} is reserved for {holder}",
                name = quote(&name),
                holder = quote(&holder.id),
            )));
        }
        let image = config
            .image
            .as_ref()
            .map_or("", |image| image.image.as_str());
        let Some(image_id) = self.resolve_image(image).map(|image| image.id.clone()) else {
            return Err(Status::not_found(format!(
                "failed to resolve image {}: not found",
                quote(image)
            )));
        };
        let log_path = if config.log_path.is_empty() {
            String::new()
        } else {
            Path::new(&sandbox_config.log_directory)
                .join(&config.log_path)
                .to_string_lossy()
                .into_owned()
        };
        let id = self.new_id();
        let created_at = self.now();
        self.containers.push(ContainerRecord {
            id: id.clone(),
            sandbox_id,
            name,
            config,
            image_id,
            log_path,
            state: v1::ContainerState::ContainerCreated,
            created_at,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            stop_behaviour,
        });
        Ok(id)
    }

    /// containerd's StartContainer: CREATED → RUNNING, or EXITED with 128 and
    /// `StartError` when the sandbox is not running.
    pub(crate) fn start_container(&mut self, id: &str) -> Result<(), Status> {
        let now = self.now();
        let container = self.container(id).ok_or_else(|| container_not_found(id))?;
        if container.state != v1::ContainerState::ContainerCreated {
            return Err(Status::unknown(format!(
                "failed to set starting state for container {}: container is in {} state",
                quote(id),
                container.state.as_str_name()
            )));
        }
        let sandbox_id = container.sandbox_id.clone();
        let failure = match self.sandbox(&sandbox_id) {
            None => Some(Status::not_found(format!(
                "sandbox {} not found: not found",
                quote(&sandbox_id)
            ))),
            Some(sandbox) if sandbox.state != v1::PodSandboxState::SandboxReady => {
                Some(Status::unknown(format!(
                    "sandbox container {} is not running",
                    quote(&sandbox_id)
                )))
            }
            Some(_) => None,
        };
        let Some(container) = self.container_mut(id) else {
            return Err(container_not_found(id));
        };
        match failure {
            None => {
                container.state = v1::ContainerState::ContainerRunning;
                container.started_at = now;
                Ok(())
            }
            Some(status) => {
                container.exit(now, START_ERROR_EXIT_CODE);
                "StartError".clone_into(&mut container.reason);
                status.message().clone_into(&mut container.message);
                Err(status)
            }
        }
    }

    /// How `StopContainer(id, timeout)` plays out: `None` when the container is not
    /// running (a no-op), else how long it takes and the exit code it leaves.
    pub(crate) fn plan_stop(
        &self,
        id: &str,
        timeout_seconds: i64,
    ) -> Result<Option<(Duration, i32)>, Status> {
        let container = self.container(id).ok_or_else(|| container_not_found(id))?;
        Ok(container
            .is_running_or_unknown()
            .then(|| container.stop_behaviour.plan(timeout_seconds)))
    }

    /// Ends the container with `exit_code` if it is still running.
    pub(crate) fn finish_stop(&mut self, id: &str, exit_code: i32) {
        let now = self.now();
        if let Some(container) = self.container_mut(id)
            && container.is_running_or_unknown()
        {
            container.exit(now, exit_code);
        }
    }

    /// containerd's RemoveContainer: a running container is killed first; an unknown id
    /// is not an error.
    pub(crate) fn remove_container(&mut self, id: &str) {
        self.containers.retain(|container| container.id != id);
    }

    pub(crate) fn list_containers(
        &self,
        filter: Option<&v1::ContainerFilter>,
    ) -> Vec<v1::Container> {
        self.containers
            .iter()
            .filter(|container| filter.is_none_or(|filter| container.matches(filter)))
            .map(ContainerRecord::to_cri)
            .collect()
    }

    pub(crate) fn container_status(&self, id: &str) -> Result<v1::ContainerStatus, Status> {
        let container = self.container(id).ok_or_else(|| container_not_found(id))?;
        Ok(container.to_status(self.image_by_id(&container.image_id)))
    }

    /// What `ExecSync(id, cmd)` returns, once the container is found running.
    pub(crate) fn plan_exec(&self, id: &str, cmd: &[String]) -> Result<ExecScript, Status> {
        let container = self.container(id).ok_or_else(|| {
            Status::not_found(format!(
                "failed to exec in container: failed to find container {} in store: not found",
                quote(id)
            ))
        })?;
        if container.state != v1::ContainerState::ContainerRunning {
            return Err(Status::unknown(format!(
                "failed to exec in container: container is in {} state",
                container.state.as_str_name()
            )));
        }
        Ok(self
            .exec_scripts
            .get(&(id.to_owned(), cmd.to_vec()))
            .cloned()
            .unwrap_or_default())
    }

    pub(crate) fn script_exec(&mut self, id: String, cmd: Vec<String>, script: ExecScript) {
        self.exec_scripts.insert((id, cmd), script);
    }

    /// The container exits by itself with `exit_code`.
    pub(crate) fn exit_container(&mut self, id: &str, exit_code: i32) -> Result<(), Status> {
        let now = self.now();
        let container = self
            .container_mut(id)
            .ok_or_else(|| container_not_found(id))?;
        container.exit(now, exit_code);
        Ok(())
    }

    pub(crate) fn set_container_started_at(
        &mut self,
        id: &str,
        started_at: i64,
    ) -> Result<(), Status> {
        let container = self
            .container_mut(id)
            .ok_or_else(|| container_not_found(id))?;
        container.started_at = started_at;
        Ok(())
    }

    pub(crate) fn set_stop_behaviour(
        &mut self,
        id: &str,
        stop_behaviour: StopBehaviour,
    ) -> Result<(), Status> {
        let container = self
            .container_mut(id)
            .ok_or_else(|| container_not_found(id))?;
        container.stop_behaviour = stop_behaviour;
        Ok(())
    }

    pub(crate) fn stop_behaviour(&self, id: &str) -> Option<StopBehaviour> {
        self.container(id).map(|container| container.stop_behaviour)
    }

    /// The newest container with this name in the sandbox.
    pub(crate) fn newest_container_named(
        &self,
        sandbox_id: &str,
        name: &str,
    ) -> Option<(String, v1::ContainerConfig)> {
        self.containers
            .iter()
            .filter(|container| {
                container.sandbox_id == sandbox_id
                    && container
                        .config
                        .metadata
                        .as_ref()
                        .is_some_and(|metadata| metadata.name == name)
            })
            .max_by_key(|container| container.created_at)
            .map(|container| (container.id.clone(), container.config.clone()))
    }
}

impl ImageRecord {
    /// containerd 1.6's `toCRIImage`: no uid or user name for an image with no `User`.
    fn to_cri(&self) -> v1::Image {
        v1::Image {
            id: self.id.clone(),
            repo_tags: self.repo_tags.clone(),
            repo_digests: self.repo_digests.clone(),
            size: self.size,
            ..v1::Image::default()
        }
    }
}

impl SandboxRecord {
    fn namespace_options(&self) -> Option<v1::NamespaceOption> {
        self.config
            .linux
            .as_ref()
            .and_then(|linux| linux.security_context.as_ref())
            .and_then(|security_context| security_context.namespace_options.clone())
    }

    fn uses_host_network(&self) -> bool {
        self.namespace_options()
            .is_some_and(|options| options.network() == v1::NamespaceMode::Node)
    }

    fn matches(&self, filter: &v1::PodSandboxFilter) -> bool {
        (filter.id.is_empty() || filter.id == self.id)
            && filter
                .state
                .as_ref()
                .is_none_or(|state| state.state == self.state as i32)
            && labels_match(&self.config.labels, &filter.label_selector)
    }

    fn to_cri(&self) -> v1::PodSandbox {
        v1::PodSandbox {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state as i32,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    /// containerd reports no IP once the network namespace is closed by a stop, and none
    /// for host-network pods ("we are not responsible for reporting the IP"); an IP the
    /// test set is reported for any ready sandbox.
    fn to_status(&self, default_pod_ip: &str) -> v1::PodSandboxStatus {
        let ip = match &self.ip {
            _ if self.state != v1::PodSandboxState::SandboxReady => String::new(),
            Some(ip) => ip.clone(),
            None if self.uses_host_network() => String::new(),
            None => default_pod_ip.to_owned(),
        };
        v1::PodSandboxStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state as i32,
            created_at: self.created_at,
            network: Some(v1::PodSandboxNetworkStatus {
                ip,
                additional_ips: Vec::new(),
            }),
            linux: Some(v1::LinuxPodSandboxStatus {
                namespaces: Some(v1::Namespace {
                    options: self.namespace_options(),
                }),
            }),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }
}

impl ContainerRecord {
    fn is_running_or_unknown(&self) -> bool {
        matches!(
            self.state,
            v1::ContainerState::ContainerRunning | v1::ContainerState::ContainerUnknown
        )
    }

    fn exit(&mut self, now: i64, exit_code: i32) {
        self.state = v1::ContainerState::ContainerExited;
        self.finished_at = now;
        self.exit_code = exit_code;
    }

    fn matches(&self, filter: &v1::ContainerFilter) -> bool {
        (filter.id.is_empty() || filter.id == self.id)
            && (filter.pod_sandbox_id.is_empty() || filter.pod_sandbox_id == self.sandbox_id)
            && filter
                .state
                .as_ref()
                .is_none_or(|state| state.state == self.state as i32)
            && labels_match(&self.config.labels, &filter.label_selector)
    }

    /// containerd's `toCRIContainer`: the image as the client gave it, the image id as
    /// the image ref.
    fn to_cri(&self) -> v1::Container {
        v1::Container {
            id: self.id.clone(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: self.config.metadata.clone(),
            image: self.config.image.clone(),
            image_ref: self.image_id.clone(),
            state: self.state as i32,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            image_id: String::new(),
        }
    }

    /// containerd's ContainerStatus: while the image exists, its first tag stands for the
    /// image and its first repo digest for the image ref; timestamps only for the states
    /// that have them; `Completed`/`Error` as the reason of an exit that has none.
    fn to_status(&self, image: Option<&ImageRecord>) -> v1::ContainerStatus {
        let image_spec = image
            .and_then(|image| image.repo_tags.first())
            .map(|tag| v1::ImageSpec {
                image: tag.clone(),
                ..v1::ImageSpec::default()
            })
            .or_else(|| self.config.image.clone());
        let image_ref = image
            .and_then(|image| image.repo_digests.first().cloned())
            .unwrap_or_else(|| self.image_id.clone());
        let reason = match (self.state, self.exit_code) {
            (v1::ContainerState::ContainerExited, 0) if self.reason.is_empty() => {
                "Completed".to_owned()
            }
            (v1::ContainerState::ContainerExited, _) if self.reason.is_empty() => {
                "Error".to_owned()
            }
            _ => self.reason.clone(),
        };
        let (started_at, finished_at) = match self.state {
            v1::ContainerState::ContainerCreated => (0, 0),
            v1::ContainerState::ContainerRunning => (self.started_at, 0),
            v1::ContainerState::ContainerExited | v1::ContainerState::ContainerUnknown => {
                (self.started_at, self.finished_at)
            }
        };
        v1::ContainerStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state as i32,
            created_at: self.created_at,
            started_at,
            finished_at,
            exit_code: self.exit_code,
            image: image_spec,
            image_ref,
            reason,
            message: self.message.clone(),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.config.mounts.clone(),
            log_path: self.log_path.clone(),
            ..v1::ContainerStatus::default()
        }
    }
}
