//! The ImagePullJob controller (§3.3): selects NodeImages, writes the job's image/tag into
//! them respecting `parallelism`, copies pull secrets, aggregates NodeImage statuses into
//! the job's status with a real progress percentage, and completes and deletes jobs.
//!
//! Differences from kruise, all fixes: editing a job's pull policy reaches the tags it
//! owns (kruise #2221); NodeImage writes are `PUT`s with a resourceVersion precondition
//! retried from a fresh read, so concurrent jobs never overwrite each other (#1517); the
//! progress counts bytes pulled on unfinished nodes, not only finished nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::{debug, info, warn};

use super::context::{Context, reference};
use super::controllers::ReconcileError;
use super::jobview::{self, JobView, Selection, ValidJob};
use super::nodeimage::MAX_IMAGES;
use super::nodeimage_io::{self, Edit};
use super::secrets::SecretSync;
use crate::api::shared::imagepulljob::ImagePullJobStatus;
use crate::api::shared::nodeimage::ImageTagSpec;
use crate::api::v1beta1::{ImageSpec, ReferenceObject};
use crate::api::{CompletionPolicyType, DELETION_PROTECTION_FINALIZER, ImagePullPhase};
use crate::events::EventType;
use crate::imagepuller::view::NodeImageView;

/// Metrics label.
pub const CONTROLLER: &str = "imagepulljob";
/// How often every job is looked at even without events (deadlines, new nodes missed).
pub const RESYNC: Duration = Duration::from_secs(30);

/// One NodeImage's standing for a job.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeState {
    /// The job's tag (with its secrets) is not in the NodeImage yet.
    NotSynced,
    /// Written, not finished; the tag's progress (0–100) if known.
    Active(u8),
    /// Pulled.
    Succeeded,
    /// Failed.
    Failed,
}

/// The job's tag in a NodeImage, if this job owns it: (version, policy outdated).
fn owned_tag<'a>(image: &'a ImageSpec, tag: &str, uid: &str) -> Option<&'a ImageTagSpec> {
    image.tags.iter().find(|t| {
        t.tag == tag
            && t.owner_references
                .iter()
                .flatten()
                .any(|o| o.uid.as_deref() == Some(uid))
    })
}

/// Where one NodeImage stands for `job` (kruise `calculateStatus`, per node).
pub fn node_state(
    view: &NodeImageView,
    job: &ValidJob,
    uid: &str,
    secrets: &[ReferenceObject],
) -> NodeState {
    let Some(image) = view.images.get(&job.image_key) else {
        return NodeState::NotSynced;
    };
    let has_secret = |wanted: &ReferenceObject| {
        image
            .pull_secrets
            .iter()
            .flatten()
            .any(|s| s.namespace == wanted.namespace && s.name == wanted.name)
    };
    if !secrets.iter().all(has_secret) {
        return NodeState::NotSynced;
    }
    let Some(tag) = owned_tag(image, &job.tag, uid) else {
        return NodeState::NotSynced;
    };
    let version = tag.version.unwrap_or(0);
    let status = view
        .status
        .as_ref()
        .and_then(|s| s.image_statuses.as_ref())
        .and_then(|s| s.get(&job.image_key))
        .and_then(|s| s.tags.iter().find(|t| t.tag == job.tag))
        .filter(|t| t.version.unwrap_or(0) == version);
    match status.map(|s| (s.phase.parse::<ImagePullPhase>(), s.progress)) {
        Some((Ok(ImagePullPhase::Succeeded), _)) => NodeState::Succeeded,
        Some((Ok(ImagePullPhase::Failed), _)) => NodeState::Failed,
        Some((_, progress)) => {
            NodeState::Active(u8::try_from(progress.unwrap_or(0).clamp(0, 100)).unwrap_or(0))
        }
        None => NodeState::Active(0),
    }
}

/// The job's status from the states of its nodes (kruise `calculateStatus`), and which
/// nodes still need the tag written.
pub fn compute_status(
    job: &ValidJob,
    old: &ImagePullJobStatus,
    states: &BTreeMap<String, NodeState>,
    now: Timestamp,
) -> (ImagePullJobStatus, Vec<String>) {
    let start = old.start_time.clone().unwrap_or(Time(now));
    let mut status = ImagePullJobStatus {
        start_time: Some(start.clone()),
        desired: i32::try_from(states.len()).unwrap_or(i32::MAX),
        ..Default::default()
    };
    let (mut not_synced, mut active, mut succeeded, mut failed) =
        (Vec::new(), Vec::new(), 0, Vec::new());
    let mut progress = 0u64;
    for (node, state) in states {
        match state {
            NodeState::NotSynced => not_synced.push(node.clone()),
            NodeState::Active(p) => {
                active.push(node.clone());
                progress += u64::from(*p);
            }
            NodeState::Succeeded => {
                succeeded += 1;
                progress += 100;
            }
            NodeState::Failed => {
                failed.push(node.clone());
                progress += 100;
            }
        }
    }
    let finished = succeeded + failed.len();
    if job.completion == CompletionPolicyType::Always
        && let Some(deadline) = job.active_deadline_seconds
        && finished != states.len()
    {
        let elapsed = now.duration_since(start.0).as_secs();
        if elapsed >= deadline {
            failed.extend(active);
            failed.extend(not_synced);
            failed.sort();
            status.completion_time = Some(Time(now));
            status.succeeded = i32::try_from(succeeded).unwrap_or(i32::MAX);
            status.failed = i32::try_from(failed.len()).unwrap_or(i32::MAX);
            status.failed_nodes = Some(failed);
            status.message = Some("job exceeds activeDeadlineSeconds".into());
            return (status, Vec::new());
        }
    }
    status.active = i32::try_from(active.len()).unwrap_or(i32::MAX);
    status.succeeded = i32::try_from(succeeded).unwrap_or(i32::MAX);
    status.failed = i32::try_from(failed.len()).unwrap_or(i32::MAX);
    failed.sort();
    status.failed_nodes = (!failed.is_empty()).then_some(failed);
    if job.completion != CompletionPolicyType::Never && finished == states.len() {
        status.completion_time = Some(old.completion_time.clone().unwrap_or(Time(now)));
    }
    status.message = Some(if status.completion_time.is_some() {
        "job has completed".into()
    } else if states.is_empty() {
        "job is running, no progress".into()
    } else {
        format!(
            "job is running, progress {:.1}%",
            progress as f64 / states.len() as f64
        )
    });
    (status, not_synced)
}

/// The NodeImages a job targets, by name (sorted), excluding ones being deleted.
pub fn select(
    ctx: &Context,
    job: &ValidJob,
    namespace: &str,
) -> BTreeMap<String, Arc<DynamicObject>> {
    let all = ctx.stores.node_images.state();
    let live = all
        .into_iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none());
    let labels = |n: &DynamicObject| n.metadata.labels.clone().unwrap_or_default();
    let chosen: Vec<Arc<DynamicObject>> = match &job.selection {
        Selection::All => live.collect(),
        Selection::Names(names) => live
            .filter(|n| names.contains(n.metadata.name.as_ref().unwrap_or(&String::new())))
            .collect(),
        Selection::Labels(selector) => live
            .filter(|n| jobview::matches(selector, &labels(n)))
            .collect(),
        Selection::Pods(selector) => {
            let nodes: BTreeSet<String> = ctx
                .stores
                .pods
                .state()
                .into_iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                })
                .filter(|p| {
                    jobview::matches(selector, &p.metadata.labels.clone().unwrap_or_default())
                })
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .filter(|n| !n.is_empty())
                .collect();
            live.filter(|n| nodes.contains(n.metadata.name.as_ref().unwrap_or(&String::new())))
                .collect()
        }
    };
    chosen
        .into_iter()
        .map(|n| (n.metadata.name.clone().unwrap_or_default(), n))
        .collect()
}

fn owner_reference(ctx: &Context, job: &JobView) -> ObjectReference {
    ObjectReference {
        api_version: Some(ctx.job_resource().api_version),
        kind: Some("ImagePullJob".into()),
        name: Some(job.name.clone()),
        namespace: Some(job.namespace.clone()),
        uid: Some(job.uid.clone()),
        ..Default::default()
    }
}

/// What writing the job into one NodeImage did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryWrite {
    /// Nothing to change.
    Unchanged,
    /// Written.
    Written,
    /// The NodeImage already has 256 other images.
    Full,
}

/// Writes (or updates) the job's entry into `images` (§3.3). `status_version` is the
/// version in the NodeImage status for the tag, if any.
#[allow(clippy::too_many_arguments)]
pub fn write_entry(
    images: &mut BTreeMap<String, ImageSpec>,
    view: &NodeImageView,
    job: &ValidJob,
    owner: &ObjectReference,
    secrets: &[ReferenceObject],
    default_ttl: i32,
    now: Timestamp,
) -> EntryWrite {
    let uid = owner.uid.clone().unwrap_or_default();
    if !images.contains_key(&job.image_key) && images.len() >= MAX_IMAGES {
        return EntryWrite::Full;
    }
    let before = images.get(&job.image_key).cloned();
    let image = images
        .entry(job.image_key.clone())
        .or_insert_with(|| ImageSpec {
            pull_secrets: None,
            tags: Vec::new(),
            sandbox_config: None,
        });
    image.sandbox_config.clone_from(&job.sandbox_config);
    for secret in secrets {
        let list = image.pull_secrets.get_or_insert_with(Vec::new);
        if !list
            .iter()
            .any(|s| s.namespace == secret.namespace && s.name == secret.name)
        {
            list.push(secret.clone());
        }
    }
    let wanted = jobview::tag_pull_policy(job, default_ttl);
    let pull_policy = job.image_pull_policy.as_str().to_owned();
    let status_of = |tag: &str| {
        view.status
            .as_ref()
            .and_then(|s| s.image_statuses.as_ref())
            .and_then(|s| s.get(&job.image_key))
            .and_then(|s| s.tags.iter().find(|t| t.tag == tag))
    };
    match image.tags.iter_mut().find(|t| t.tag == job.tag) {
        Some(tag) => {
            let owners = tag.owner_references.get_or_insert_with(Vec::new);
            if owners
                .iter()
                .any(|o| o.uid.as_deref() == Some(uid.as_str()))
            {
                // Ours already: follow edits of the job's pull policy when we are the
                // only owner (kruise #2221). An unfinished pull restarts with it.
                let sole = owners.len() == 1;
                let outdated = jobview::policy_outdated(tag.pull_policy.as_ref(), &wanted)
                    || tag.image_pull_policy.as_deref() != Some(pull_policy.as_str());
                if sole && outdated {
                    let version = tag.version.unwrap_or(0);
                    let finished = status_of(&job.tag).is_some_and(|s| {
                        s.version.unwrap_or(0) == version && s.completion_time.is_some()
                    });
                    if !finished {
                        tag.version = Some(version + 1);
                        tag.created_at = Some(Time(now));
                    }
                    tag.pull_policy = Some(wanted);
                    tag.image_pull_policy = Some(pull_policy);
                }
            } else {
                // Another job's tag: a new round for both (kruise: version++).
                tag.version = Some(tag.version.unwrap_or(0) + 1);
                owners.push(owner.clone());
                tag.created_at = Some(Time(now));
                tag.image_pull_policy = Some(pull_policy);
            }
        }
        None => {
            let version = status_of(&job.tag)
                .and_then(|s| s.version)
                .map_or(0, |v| v + 1);
            image.tags.push(ImageTagSpec {
                tag: job.tag.clone(),
                created_at: Some(Time(now)),
                pull_policy: Some(wanted),
                owner_references: Some(vec![owner.clone()]),
                version: Some(version),
                image_pull_policy: Some(pull_policy),
            });
        }
    }
    image.tags.sort_by(|a, b| a.tag.cmp(&b.tag));
    if before.as_ref() == Some(&*image) {
        EntryWrite::Unchanged
    } else {
        EntryWrite::Written
    }
}

async fn write_job_status(
    ctx: &Context,
    object: &DynamicObject,
    status: &ImagePullJobStatus,
) -> Result<(), ReconcileError> {
    let mut updated = object.clone();
    updated.metadata.managed_fields = None;
    if let Some(data) = updated.data.as_object_mut() {
        data.insert(
            "status".into(),
            serde_json::to_value(status).unwrap_or_default(),
        );
    }
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let result = ctx
        .jobs(&namespace)
        .replace_status(&name, &PostParams::default(), &updated)
        .await;
    ctx.metrics.write(CONTROLLER, "update_job_status", &result);
    match result {
        Ok(written) => {
            ctx.expectations.expect(
                &format!("imagepulljob/{namespace}/{name}"),
                written.metadata.resource_version.as_deref(),
            );
            Ok(())
        }
        // A newer copy is on its way: its event reconciles again.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

async fn set_finalizer(
    ctx: &Context,
    object: &DynamicObject,
    present: bool,
) -> Result<(), ReconcileError> {
    let mut finalizers = object.metadata.finalizers.clone().unwrap_or_default();
    let has = finalizers
        .iter()
        .any(|f| f == DELETION_PROTECTION_FINALIZER);
    if has == present {
        return Ok(());
    }
    if present {
        finalizers.push(DELETION_PROTECTION_FINALIZER.to_owned());
    } else {
        finalizers.retain(|f| f != DELETION_PROTECTION_FINALIZER);
    }
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    // The resourceVersion makes the list replacement safe against concurrent edits.
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": object.metadata.resource_version,
    }});
    let result = ctx
        .jobs(&namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    ctx.metrics.write(
        CONTROLLER,
        if present {
            "add_finalizer"
        } else {
            "remove_finalizer"
        },
        &result,
    );
    match result {
        Ok(written) => {
            ctx.expectations.expect(
                &format!("imagepulljob/{namespace}/{name}"),
                written.metadata.resource_version.as_deref(),
            );
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn secret_sync(ctx: &Context) -> SecretSync<'_> {
    SecretSync {
        client: &ctx.client,
        namespace: &ctx.settings.daemon_config_namespace,
        copies: &ctx.stores.synced_secrets,
    }
}

/// Reconciles one ImagePullJob.
pub async fn reconcile(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let resource = ctx.job_resource();
    let key = format!(
        "imagepulljob/{}/{}",
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default()
    );
    if !ctx
        .expectations
        .satisfied(&key, object.metadata.resource_version.as_deref())
    {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let job = match JobView::from_object(&object) {
        Ok(job) => job,
        Err(error) => {
            ctx.event(
                &reference(&object, &resource),
                EventType::Warning,
                "InvalidImagePullJob",
                &format!("cannot decode the job: {error}"),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    if job.deleting {
        // The tags it owns are collected by the NodeImage controller (owner gone).
        secret_sync(&ctx).release_all(&job).await?;
        set_finalizer(&ctx, &object, false).await?;
        ctx.expectations.forget(&key);
        return Ok(Action::await_change());
    }
    if let Some(completed) = job.status.completion_time.clone() {
        secret_sync(&ctx).release_all(&job).await?;
        set_finalizer(&ctx, &object, false).await?;
        let Some(ttl) = job
            .spec
            .template
            .completion_policy
            .ttl_seconds_after_finished
        else {
            return Ok(Action::await_change());
        };
        let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        let elapsed: Duration = Timestamp::now()
            .duration_since(completed.0)
            .try_into()
            .unwrap_or(Duration::ZERO);
        if let Some(left) = ttl.checked_sub(elapsed).filter(|l| !l.is_zero()) {
            return Ok(Action::requeue(left));
        }
        let result = ctx
            .jobs(&job.namespace)
            .delete(&job.name, &DeleteParams::default())
            .await;
        ctx.metrics.write(CONTROLLER, "delete_job_ttl", &result);
        info!(job = %job.key(), "deleted ImagePullJob: ttlSecondsAfterFinished passed");
        ctx.event(
            &reference(&object, &resource),
            EventType::Normal,
            "DeletedAfterTTL",
            "ttlSecondsAfterFinished passed since the job completed",
        )
        .await;
        return match result {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
            Err(error) => Err(error.into()),
        };
    }
    let valid = match jobview::validate(&job.spec) {
        Ok(valid) => valid,
        Err(message) => {
            let message = format!("invalid ImagePullJob: {message}");
            if job.status.message.as_deref() != Some(message.as_str()) {
                warn!(job = %job.key(), %message, "rejected");
                let status = ImagePullJobStatus {
                    message: Some(message.clone()),
                    ..Default::default()
                };
                write_job_status(&ctx, &object, &status).await?;
                ctx.event(
                    &reference(&object, &resource),
                    EventType::Warning,
                    "InvalidImagePullJob",
                    &message,
                )
                .await;
            }
            return Ok(Action::await_change());
        }
    };
    set_finalizer(&ctx, &object, true).await?;
    let nodes = select(&ctx, &valid, &job.namespace);
    for (name, node) in &nodes {
        if !ctx.expectations.satisfied(
            &format!("nodeimage/{name}"),
            node.metadata.resource_version.as_deref(),
        ) {
            debug!(job = %job.key(), nodeimage = %name, "waiting for the cache to see our write");
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
    }
    let secrets = secret_sync(&ctx).sync(&job).await?;
    let mut states = BTreeMap::new();
    let mut outdated = Vec::new();
    let owner = owner_reference(&ctx, &job);
    let wanted = jobview::tag_pull_policy(&valid, ctx.settings.default_ttl_for_always);
    for (name, node) in &nodes {
        let Ok(view) = NodeImageView::from_object((**node).clone()) else {
            continue;
        };
        let state = node_state(&view, &valid, &job.uid, &secrets);
        if state != NodeState::NotSynced
            && let Some(tag) = view
                .images
                .get(&valid.image_key)
                .and_then(|i| owned_tag(i, &valid.tag, &job.uid))
            && tag.owner_references.as_ref().is_some_and(|o| o.len() == 1)
            && (jobview::policy_outdated(tag.pull_policy.as_ref(), &wanted)
                || tag.image_pull_policy.as_deref() != Some(valid.image_pull_policy.as_str()))
        {
            outdated.push(name.clone());
        }
        states.insert(name.clone(), state);
    }
    let now = Timestamp::now();
    let (status, not_synced) = compute_status(&valid, &job.status, &states, now);
    let slots = valid
        .parallelism
        .saturating_sub(usize::try_from(status.active).unwrap_or(0));
    let targets: Vec<String> = not_synced.into_iter().take(slots).chain(outdated).collect();
    let mut wrote = false;
    for name in &targets {
        let mut outcome = EntryWrite::Unchanged;
        let written = nodeimage_io::edit_spec(
            &ctx.node_images(),
            ctx.versions.node_image,
            name,
            |_, images, view| {
                outcome = write_entry(
                    images,
                    view,
                    &valid,
                    &owner,
                    &secrets,
                    ctx.settings.default_ttl_for_always,
                    now,
                );
                if outcome == EntryWrite::Written {
                    Edit::Changed
                } else {
                    Edit::Unchanged
                }
            },
        )
        .await;
        ctx.metrics
            .write_outcome(CONTROLLER, "sync_tag", written.is_ok());
        if let Some(written) = written? {
            wrote = true;
            ctx.expectations.expect(
                &format!("nodeimage/{name}"),
                written.metadata.resource_version.as_deref(),
            );
            info!(job = %job.key(), nodeimage = %name, image = %job.spec.image, "wrote the image into the NodeImage");
        } else if outcome == EntryWrite::Full {
            ctx.event(
                &reference(&object, &resource),
                EventType::Warning,
                "NodeImageFull",
                &format!(
                    "NodeImage {name} already holds {MAX_IMAGES} images; {} is not pulled there",
                    job.spec.image
                ),
            )
            .await;
        }
    }
    if status != job.status {
        write_job_status(&ctx, &object, &status).await?;
        if status.completion_time.is_some() {
            info!(job = %job.key(), succeeded = status.succeeded, failed = status.failed, "ImagePullJob completed");
            ctx.event(
                &reference(&object, &resource),
                EventType::Normal,
                "Completed",
                &format!(
                    "{}: {} succeeded, {} failed of {}",
                    status.message.clone().unwrap_or_default(),
                    status.succeeded,
                    status.failed,
                    status.desired
                ),
            )
            .await;
        }
    }
    if wrote {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    if valid.completion == CompletionPolicyType::Always
        && let (Some(deadline), Some(start)) =
            (valid.active_deadline_seconds, status.start_time.as_ref())
    {
        let left = deadline.saturating_sub(now.duration_since(start.0).as_secs());
        return Ok(Action::requeue(Duration::from_secs(
            u64::try_from(left.max(1)).unwrap_or(1),
        )));
    }
    Ok(Action::requeue(RESYNC))
}

/// The jobs that own a tag in a NodeImage (for NodeImage events).
pub fn owning_jobs(node_image: &DynamicObject) -> Vec<(String, String)> {
    let mut jobs = BTreeSet::new();
    for image in node_image.data["spec"]["images"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for tag in image["tags"].as_array().into_iter().flatten() {
            for owner in tag["ownerReferences"].as_array().into_iter().flatten() {
                if owner["kind"] == "ImagePullJob"
                    && let (Some(ns), Some(name)) =
                        (owner["namespace"].as_str(), owner["name"].as_str())
                {
                    jobs.insert((ns.to_owned(), name.to_owned()));
                }
            }
        }
    }
    jobs.into_iter().collect()
}

/// Job refs for a set of `(namespace, name)`.
pub fn job_refs(
    jobs: impl IntoIterator<Item = (String, String)>,
    resource: &kube::core::ApiResource,
) -> Vec<ObjectRef<DynamicObject>> {
    jobs.into_iter()
        .map(|(ns, name)| ObjectRef::new_with(&name, resource.clone()).within(&ns))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::shared::imagepulljob::ImagePullJobSpec;
    use crate::api::shared::nodeimage::{ImageStatus, ImageTagStatus, NodeImageStatus};

    fn job(extra: serde_json::Value) -> ValidJob {
        let mut value = json!({"image": "nginx:1.25", "completionPolicy": {}});
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        jobview::validate(&serde_json::from_value::<ImagePullJobSpec>(value).unwrap()).unwrap()
    }

    fn owner(uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("apps.kruise.io/v1beta1".into()),
            kind: Some("ImagePullJob".into()),
            name: Some(format!("job-{uid}")),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    fn view(images: serde_json::Value, status: Option<NodeImageStatus>) -> NodeImageView {
        let mut data = json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
            "metadata": {"name": "n1"}, "spec": {"images": images}});
        if let Some(status) = status {
            data["status"] = serde_json::to_value(status).unwrap();
        }
        NodeImageView::from_object(serde_json::from_value(data).unwrap()).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_new_tag_gets_the_next_version_after_the_status_and_is_owned() {
        let status = NodeImageStatus {
            image_statuses: Some(BTreeMap::from([(
                "nginx".to_owned(),
                ImageStatus {
                    tags: vec![ImageTagStatus {
                        tag: "1.25".into(),
                        phase: "Succeeded".into(),
                        progress: None,
                        start_time: None,
                        completion_time: None,
                        version: Some(4),
                        image_id: None,
                        message: None,
                    }],
                },
            )])),
            ..Default::default()
        };
        let view = view(json!({}), Some(status));
        let mut images = view.images.clone();
        let now = ts("2026-01-01T00:00:00Z");
        let job = job(json!({"imagePullPolicy": "Always"}));
        assert_eq!(
            write_entry(&mut images, &view, &job, &owner("u1"), &[], 300, now),
            EntryWrite::Written
        );
        let tag = &images["nginx"].tags[0];
        assert_eq!(tag.version, Some(5));
        assert_eq!(tag.created_at, Some(Time(now)));
        assert_eq!(tag.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            tag.owner_references.as_ref().unwrap()[0].uid.as_deref(),
            Some("u1")
        );
        assert_eq!(tag.pull_policy.as_ref().unwrap().timeout_seconds, Some(600));
        // Writing again changes nothing: an entry is never written twice.
        let view2 = view.clone();
        assert_eq!(
            write_entry(&mut images, &view2, &job, &owner("u1"), &[], 300, now),
            EntryWrite::Unchanged
        );
    }

    #[test]
    fn a_second_job_on_the_same_tag_bumps_the_version_and_adds_its_owner() {
        let view = view(
            json!({"nginx": {"tags": [{"tag": "1.25", "version": 2,
            "ownerReferences": [serde_json::to_value(owner("u1")).unwrap()]}]}}),
            None,
        );
        let mut images = view.images.clone();
        write_entry(
            &mut images,
            &view,
            &job(json!({})),
            &owner("u2"),
            &[],
            300,
            ts("2026-01-01T00:00:00Z"),
        );
        let tag = &images["nginx"].tags[0];
        assert_eq!(tag.version, Some(3));
        assert_eq!(tag.owner_references.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn an_edited_pull_policy_reaches_the_tag_and_restarts_an_unfinished_pull() {
        let first = job(json!({}));
        let view0 = view(json!({}), None);
        let mut images = BTreeMap::new();
        write_entry(
            &mut images,
            &view0,
            &first,
            &owner("u1"),
            &[],
            300,
            ts("2026-01-01T00:00:00Z"),
        );
        let view1 = view(serde_json::to_value(&images).unwrap(), None);
        let edited = job(json!({"pullPolicy": {"timeoutSeconds": 60, "backoffLimit": 1}}));
        assert_eq!(
            write_entry(
                &mut images,
                &view1,
                &edited,
                &owner("u1"),
                &[],
                300,
                ts("2026-01-01T00:01:00Z")
            ),
            EntryWrite::Written
        );
        let tag = &images["nginx"].tags[0];
        assert_eq!(tag.pull_policy.as_ref().unwrap().timeout_seconds, Some(60));
        assert_eq!(tag.version, Some(1));
    }

    #[test]
    fn the_256_image_cap_is_kept() {
        let mut images: BTreeMap<String, ImageSpec> = (0..MAX_IMAGES)
            .map(|i| {
                (
                    format!("img{i}"),
                    ImageSpec {
                        pull_secrets: None,
                        tags: vec![],
                        sandbox_config: None,
                    },
                )
            })
            .collect();
        let view = view(json!({}), None);
        assert_eq!(
            write_entry(
                &mut images,
                &view,
                &job(json!({})),
                &owner("u1"),
                &[],
                300,
                ts("2026-01-01T00:00:00Z")
            ),
            EntryWrite::Full
        );
        assert_eq!(images.len(), MAX_IMAGES);
    }

    #[test]
    fn status_counts_nodes_and_reports_real_progress() {
        let job = job(json!({}));
        let states = BTreeMap::from([
            ("a".to_owned(), NodeState::Succeeded),
            ("b".to_owned(), NodeState::Active(50)),
            ("c".to_owned(), NodeState::NotSynced),
            ("d".to_owned(), NodeState::Failed),
        ]);
        let (status, not_synced) = compute_status(
            &job,
            &ImagePullJobStatus::default(),
            &states,
            ts("2026-01-01T00:00:00Z"),
        );
        assert_eq!(
            (
                status.desired,
                status.active,
                status.succeeded,
                status.failed
            ),
            (4, 1, 1, 1)
        );
        assert_eq!(status.failed_nodes, Some(vec!["d".to_owned()]));
        assert_eq!(
            status.message.as_deref(),
            Some("job is running, progress 62.5%")
        );
        assert_eq!(not_synced, ["c"]);
        assert_eq!(status.completion_time, None);
    }

    #[test]
    fn always_jobs_complete_and_never_jobs_do_not() {
        let states = BTreeMap::from([("a".to_owned(), NodeState::Succeeded)]);
        let now = ts("2026-01-01T00:00:00Z");
        let (done, _) = compute_status(
            &job(json!({})),
            &ImagePullJobStatus::default(),
            &states,
            now,
        );
        assert_eq!(done.completion_time, Some(Time(now)));
        assert_eq!(done.message.as_deref(), Some("job has completed"));
        let never = job(json!({"completionPolicy": {"type": "Never"}}));
        let (running, _) = compute_status(&never, &ImagePullJobStatus::default(), &states, now);
        assert_eq!(running.completion_time, None);
        assert_eq!(
            running.message.as_deref(),
            Some("job is running, progress 100.0%")
        );
    }

    #[test]
    fn past_the_deadline_unfinished_nodes_fail() {
        let job = job(json!({"completionPolicy": {"activeDeadlineSeconds": 600}}));
        let states = BTreeMap::from([
            ("a".to_owned(), NodeState::Succeeded),
            ("b".to_owned(), NodeState::Active(10)),
            ("c".to_owned(), NodeState::NotSynced),
        ]);
        let old = ImagePullJobStatus {
            start_time: Some(Time(ts("2026-01-01T00:00:00Z"))),
            ..Default::default()
        };
        let (status, not_synced) = compute_status(&job, &old, &states, ts("2026-01-01T00:10:00Z"));
        assert_eq!(
            status.message.as_deref(),
            Some("job exceeds activeDeadlineSeconds")
        );
        assert_eq!(
            status.failed_nodes,
            Some(vec!["b".to_owned(), "c".to_owned()])
        );
        assert_eq!((status.succeeded, status.failed), (1, 2));
        assert!(not_synced.is_empty());
    }

    #[test]
    fn node_states_follow_the_status_of_the_written_version() {
        let job = job(json!({}));
        let images = json!({"nginx": {"tags": [{"tag": "1.25", "version": 1,
            "ownerReferences": [serde_json::to_value(owner("u1")).unwrap()]}]}});
        let tag_status = |version: i64, phase: &str| NodeImageStatus {
            image_statuses: Some(BTreeMap::from([(
                "nginx".to_owned(),
                ImageStatus {
                    tags: vec![ImageTagStatus {
                        tag: "1.25".into(),
                        phase: phase.into(),
                        progress: Some(30),
                        start_time: None,
                        completion_time: None,
                        version: Some(version),
                        image_id: None,
                        message: None,
                    }],
                },
            )])),
            ..Default::default()
        };
        assert_eq!(
            node_state(
                &view(images.clone(), Some(tag_status(1, "Succeeded"))),
                &job,
                "u1",
                &[]
            ),
            NodeState::Succeeded
        );
        assert_eq!(
            node_state(
                &view(images.clone(), Some(tag_status(0, "Succeeded"))),
                &job,
                "u1",
                &[]
            ),
            NodeState::Active(0)
        );
        assert_eq!(
            node_state(
                &view(images.clone(), Some(tag_status(1, "Pulling"))),
                &job,
                "u1",
                &[]
            ),
            NodeState::Active(30)
        );
        assert_eq!(
            node_state(&view(images.clone(), None), &job, "other", &[]),
            NodeState::NotSynced
        );
        let secret = ReferenceObject {
            namespace: Some("kruise-daemon-config".into()),
            name: Some("s-abcdef".into()),
            mode: Some("batch".into()),
        };
        assert_eq!(
            node_state(&view(images, None), &job, "u1", &[secret]),
            NodeState::NotSynced
        );
    }
}
