//! The NodeImage lifecycle (§3.1, §3.4, §11.3): one NodeImage per Ready node after a
//! delay, labels copied from the node, deleted with it; what kruise's NodeImage webhooks
//! default and validate; garbage collection of finished and ownerless tags; failing tags
//! whose node stays silent.
//!
//! Decisions are the pure [`plan_spec`] and [`plan_status`]; the reconcilers apply them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::core::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, info, warn};

use super::context::{Context, reference};
use super::controllers::ReconcileError;
use super::nodeimage_io::{self, Edit};
use crate::api::shared::nodeimage::{
    ImageStatus, ImageTagPullPolicy, ImageTagStatus, NodeImageStatus,
};
use crate::api::v1beta1::ImageSpec;
use crate::api::{
    FAKE_NODE_IMAGE_LABEL, GROUP, ImagePullPhase, PULL_SECRET_MODE_BATCH, VIRTUAL_KUBELET_LABEL,
    VIRTUAL_KUBELET_LABEL_VALUE,
};
use crate::events::EventType;
use crate::imagepuller::view::NodeImageView;

/// Default `pullPolicy.timeoutSeconds` (kruise's NodeImage webhook).
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 600;
/// Default `pullPolicy.backoffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 3;
/// kruise's cap on images per NodeImage.
pub const MAX_IMAGES: usize = 256;
/// kruise's message for a tag the node never acknowledged.
pub const NOT_RESPONDED: &str = "node has not responded for a long time";
/// kruise's message for a tag past its deadline.
pub const PAST_DEADLINE: &str = "pulling exceeds the activeDeadlineSeconds";
/// Shortest requeue for timers (kruise: 3 s + up to 2 s).
const MIN_REQUEUE: Duration = Duration::from_secs(3);

/// The controller names (metrics labels).
pub const NODE_CONTROLLER: &str = "node";
/// See [`NODE_CONTROLLER`].
pub const NODE_IMAGE_CONTROLLER: &str = "nodeimage";

fn since(now: Timestamp, then: Timestamp) -> Duration {
    now.duration_since(then)
        .try_into()
        .unwrap_or(Duration::ZERO)
}

fn until(total: Duration, elapsed: Duration) -> Option<Duration> {
    total.checked_sub(elapsed).filter(|left| !left.is_zero())
}

/// When a node's Ready condition turned True, if it is Ready.
pub fn ready_since(node: &Node) -> Option<Timestamp> {
    let condition = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (condition.status == "True").then(|| {
        condition
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
    })
}

/// Whether kruise skips this node (label `type=virtual-kubelet`).
pub fn is_virtual_kubelet(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(VIRTUAL_KUBELET_LABEL))
        .is_some_and(|v| v == VIRTUAL_KUBELET_LABEL_VALUE)
}

/// Whether an owner of a tag still exists: `Some(false)` when the ImagePullJob is gone
/// or was recreated (UID differs), `None` for owners this manager does not track.
pub type OwnerCheck<'a> = dyn Fn(&ObjectReference) -> Option<bool> + 'a;

/// What [`plan_spec`] decided, for logs and events.
#[derive(Debug, Default, PartialEq)]
pub struct SpecPlan {
    /// Why the spec changes (empty: unchanged).
    pub changes: Vec<String>,
    /// Entries a webhook would have rejected, dropped with a Warning.
    pub rejected: Vec<String>,
    /// The earliest TTL still running.
    pub next_ttl: Option<Duration>,
}

fn is_job_owner(owner: &ObjectReference) -> bool {
    owner.kind.as_deref() == Some("ImagePullJob")
        && owner
            .api_version
            .as_deref()
            .is_some_and(|v| v.split('/').next() == Some(GROUP))
}

/// The spec half of a NodeImage reconcile: labels from the node, the webhook's defaults
/// and validation, and garbage collection. Edits `labels` and `images` in place.
pub fn plan_spec(
    labels: &mut BTreeMap<String, String>,
    images: &mut BTreeMap<String, ImageSpec>,
    status: Option<&NodeImageStatus>,
    node_labels: Option<&BTreeMap<String, String>>,
    owner_alive: &OwnerCheck<'_>,
    secret_exists: &dyn Fn(&str, &str) -> bool,
    now: Timestamp,
) -> SpecPlan {
    let mut plan = SpecPlan::default();
    if let Some(node_labels) = node_labels
        && node_labels != labels
    {
        *labels = node_labels.clone();
        plan.changes.push("node labels changed".into());
    }
    let mut result = BTreeMap::new();
    for (name, mut image) in std::mem::take(images) {
        if name.is_empty() {
            plan.rejected
                .push("an image with an empty name".to_string());
            continue;
        }
        if let Some(secrets) = image.pull_secrets.as_mut() {
            let before = secrets.len();
            secrets.retain(|secret| {
                secret.mode.as_deref() == Some(PULL_SECRET_MODE_BATCH)
                    || secret_exists(
                        secret.namespace.as_deref().unwrap_or_default(),
                        secret.name.as_deref().unwrap_or_default(),
                    )
            });
            if secrets.len() != before {
                plan.changes.push(format!(
                    "image {name} dropped pull secrets that no longer exist"
                ));
            }
        }
        let mut seen = BTreeSet::new();
        let mut tags = Vec::new();
        for mut tag in std::mem::take(&mut image.tags) {
            let full = format!("{name}:{}", tag.tag);
            if tag.tag.is_empty() {
                plan.rejected
                    .push(format!("image {name} has a tag with an empty name"));
                continue;
            }
            if !seen.insert(tag.tag.clone()) {
                plan.rejected.push(format!("image {full} is listed twice"));
                continue;
            }
            if tag.version.unwrap_or(0) < 0 {
                plan.rejected
                    .push(format!("image {full} has a negative version"));
                continue;
            }
            if tag.created_at.is_none() {
                tag.created_at = Some(Time(now));
                plan.changes
                    .push(format!("image {full} defaulted createdAt"));
            }
            let policy = tag
                .pull_policy
                .get_or_insert_with(ImageTagPullPolicy::default);
            if policy.timeout_seconds.is_none() || policy.backoff_limit.is_none() {
                policy
                    .timeout_seconds
                    .get_or_insert(DEFAULT_TIMEOUT_SECONDS);
                policy.backoff_limit.get_or_insert(DEFAULT_BACKOFF_LIMIT);
                plan.changes
                    .push(format!("image {full} defaulted its pull policy"));
            }
            if let Some(owners) = tag.owner_references.as_mut()
                && !owners.is_empty()
            {
                let before = owners.len();
                owners.retain(|owner| !is_job_owner(owner) || owner_alive(owner) != Some(false));
                if owners.len() != before {
                    plan.changes.push(format!(
                        "image {full} lost {} gone owner(s)",
                        before - owners.len()
                    ));
                    if owners.is_empty() {
                        continue;
                    }
                }
            }
            let ttl = tag
                .pull_policy
                .as_ref()
                .and_then(|p| p.ttl_seconds_after_finished);
            let completed = status
                .and_then(|s| s.image_statuses.as_ref())
                .and_then(|s| s.get(&name))
                .and_then(|s| {
                    s.tags.iter().find(|t| {
                        t.tag == tag.tag && t.version.unwrap_or(0) == tag.version.unwrap_or(0)
                    })
                })
                .and_then(|t| t.completion_time.as_ref())
                .map(|t| t.0);
            if let (Some(ttl), Some(completed)) = (ttl, completed) {
                let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
                match until(ttl, since(now, completed)) {
                    None => {
                        plan.changes
                            .push(format!("image {full} finished more than {ttl:?} ago"));
                        continue;
                    }
                    Some(left) => {
                        plan.next_ttl = Some(plan.next_ttl.map_or(left, |n| n.min(left)));
                    }
                }
            }
            tags.push(tag);
        }
        if tags.is_empty() {
            plan.changes.push(format!("image {name} has no tags left"));
            continue;
        }
        let sorted = tags.windows(2).all(|w| w[0].tag <= w[1].tag);
        if !sorted {
            tags.sort_by(|a, b| a.tag.cmp(&b.tag));
            plan.changes.push(format!("image {name} tags sorted"));
        }
        image.tags = tags;
        result.insert(name, image);
    }
    if !plan.rejected.is_empty() {
        plan.changes.push("invalid entries dropped".into());
    }
    *images = result;
    plan
}

/// A tag the manager failed.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedTag {
    /// `image:tag`.
    pub full_name: String,
    /// Why.
    pub message: &'static str,
    /// The tag's owners, to notify.
    pub owners: Vec<ObjectReference>,
}

/// What [`plan_status`] decided.
#[derive(Debug, Default, PartialEq)]
pub struct StatusPlan {
    /// The status to write, if it changed.
    pub status: Option<NodeImageStatus>,
    /// Tags failed now.
    pub failed: Vec<FailedTag>,
    /// The earliest pending timeout.
    pub next: Option<Duration>,
}

/// The status half (§3.4): fail tags the node never acknowledged within
/// `response_timeout` of `createdAt`, and unfinished tags past `activeDeadlineSeconds +
/// response_timeout`. Counts are recomputed only when a tag status changed, as kruise
/// does, so the manager and the agent never rewrite each other's counts.
pub fn plan_status(
    images: &BTreeMap<String, ImageSpec>,
    status: Option<&NodeImageStatus>,
    now: Timestamp,
    response_timeout: Duration,
) -> StatusPlan {
    let mut plan = StatusPlan::default();
    let old = status.cloned().unwrap_or_default();
    let mut statuses = old.image_statuses.clone().unwrap_or_default();
    let mut spec_tags = BTreeSet::new();
    let next = |left: Duration, plan: &mut StatusPlan| {
        plan.next = Some(plan.next.map_or(left, |n: Duration| n.min(left)));
    };
    for (name, image) in images {
        let entry = statuses.entry(name.clone()).or_default();
        for tag in &image.tags {
            spec_tags.insert((name.clone(), tag.tag.clone()));
            let Some(created) = tag.created_at.as_ref().map(|t| t.0) else {
                continue;
            };
            let version = tag.version.unwrap_or(0);
            let full_name = format!("{name}:{}", tag.tag);
            let index = entry.tags.iter().position(|t| t.tag == tag.tag);
            let mut failed = None;
            let acknowledged = index.is_some_and(|i| entry.tags[i].version.unwrap_or(0) == version);
            if !acknowledged {
                if let Some(left) = until(response_timeout, since(now, created)) {
                    next(left, &mut plan);
                    continue;
                }
                failed = Some(NOT_RESPONDED);
            } else if let Some(i) = index
                && entry.tags[i].completion_time.is_none()
                && let Some(deadline) = tag
                    .pull_policy
                    .as_ref()
                    .and_then(|p| p.active_deadline_seconds)
            {
                let total =
                    Duration::from_secs(u64::try_from(deadline).unwrap_or(0)) + response_timeout;
                if let Some(left) = until(total, since(now, created)) {
                    next(left, &mut plan);
                    continue;
                }
                failed = Some(PAST_DEADLINE);
            }
            let Some(message) = failed else { continue };
            let failed_status = ImageTagStatus {
                tag: tag.tag.clone(),
                phase: ImagePullPhase::Failed.as_str().to_owned(),
                progress: None,
                start_time: None,
                completion_time: Some(Time(now)),
                version: Some(version),
                image_id: None,
                message: Some(message.to_owned()),
            };
            match index {
                Some(i) => {
                    let existing = &mut entry.tags[i];
                    existing.phase = failed_status.phase;
                    existing.completion_time = failed_status.completion_time;
                    existing.version = failed_status.version;
                    existing.message = failed_status.message;
                }
                None => entry.tags.push(failed_status),
            }
            plan.failed.push(FailedTag {
                full_name,
                message,
                owners: tag.owner_references.clone().unwrap_or_default(),
            });
        }
    }
    if plan.failed.is_empty() {
        return plan;
    }
    let mut counts = (0, 0, 0, 0);
    let mut kept = BTreeMap::new();
    for (name, mut image) in statuses {
        image
            .tags
            .retain(|t| spec_tags.contains(&(name.clone(), t.tag.clone())));
        image.tags.sort_by(|a, b| a.tag.cmp(&b.tag));
        for tag in &image.tags {
            match tag.phase.parse::<ImagePullPhase>() {
                Ok(ImagePullPhase::Succeeded) => counts.0 += 1,
                Ok(ImagePullPhase::Failed) => counts.1 += 1,
                Ok(ImagePullPhase::Pulling) => counts.2 += 1,
                Ok(ImagePullPhase::Waiting) => counts.3 += 1,
                Err(_) => {}
            }
        }
        if !image.tags.is_empty() {
            kept.insert(name, ImageStatus { tags: image.tags });
        }
    }
    let desired = images.values().map(|i| i.tags.len()).sum::<usize>();
    plan.status = Some(NodeImageStatus {
        desired: i32::try_from(desired).unwrap_or(i32::MAX),
        succeeded: counts.0,
        failed: counts.1,
        pulling: counts.2,
        waiting: counts.3,
        image_statuses: (!kept.is_empty()).then_some(kept),
        first_sync_status: old.first_sync_status,
    });
    plan
}

/// kruise's requeue for timers: at least 3 s, plus up to 2 s of jitter.
pub fn timer_requeue(left: Duration) -> Duration {
    if left >= MIN_REQUEUE {
        return left;
    }
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_millis()) * 2)
        .unwrap_or(0);
    MIN_REQUEUE + Duration::from_millis(jitter % 2000)
}

/// Node controller: creates the NodeImage of a node Ready for the creation delay.
pub async fn reconcile_node(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let Some(name) = node.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    if node.metadata.deletion_timestamp.is_some()
        || is_virtual_kubelet(node.metadata.labels.as_ref())
    {
        return Ok(Action::await_change());
    }
    let existing = ctx
        .stores
        .node_images
        .get(&ObjectRef::new_with(&name, ctx.node_image_resource()));
    if existing.is_some() {
        return Ok(Action::await_change());
    }
    let Some(ready) = ready_since(&node) else {
        debug!(node = %name, "not Ready: no NodeImage yet");
        return Ok(Action::await_change());
    };
    if let Some(left) = until(
        ctx.settings.nodeimage_creation_delay,
        since(Timestamp::now(), ready),
    ) {
        return Ok(Action::requeue(left));
    }
    let resource = ctx.node_image_resource();
    let mut object = DynamicObject::new(&name, &resource);
    object.metadata = ObjectMeta {
        name: Some(name.clone()),
        labels: node.metadata.labels.clone(),
        ..Default::default()
    };
    object.data = serde_json::json!({"spec": {}});
    let result = ctx
        .node_images()
        .create(&PostParams::default(), &object)
        .await;
    ctx.metrics
        .write(NODE_CONTROLLER, "create_nodeimage", &result);
    match result {
        Ok(created) => {
            info!(node = %name, "created NodeImage");
            ctx.expectations.expect(
                &format!("nodeimage/{name}"),
                created.metadata.resource_version.as_deref(),
            );
            ctx.event(
                &node_reference(&node),
                EventType::Normal,
                "NodeImageCreated",
                &format!("Created NodeImage {name} for the Ready node"),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Action::await_change()),
        Err(error) => Err(ReconcileError::Api(error)),
    }
}

fn node_reference(node: &Node) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: node.metadata.name.clone(),
        uid: node.metadata.uid.clone(),
        ..Default::default()
    }
}

/// NodeImage controller: deletion with the node, spec upkeep, status timeouts.
pub async fn reconcile_node_image(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let resource = ctx.node_image_resource();
    if object.metadata.deletion_timestamp.is_some() {
        ctx.expectations.forget(&format!("nodeimage/{name}"));
        return Ok(Action::await_change());
    }
    let node = ctx.stores.nodes.get(&ObjectRef::new(&name));
    let node_gone = node
        .as_ref()
        .is_none_or(|n| n.metadata.deletion_timestamp.is_some());
    let fake = object
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(FAKE_NODE_IMAGE_LABEL));
    if node_gone && !fake {
        let result = ctx
            .node_images()
            .delete(&name, &DeleteParams::default())
            .await;
        ctx.metrics
            .write(NODE_IMAGE_CONTROLLER, "delete_nodeimage", &result);
        return match result {
            Ok(_) => {
                info!(nodeimage = %name, "deleted NodeImage: its node is gone");
                Ok(Action::await_change())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
            Err(error) => Err(ReconcileError::Api(error)),
        };
    }
    if !ctx.expectations.satisfied(
        &format!("nodeimage/{name}"),
        object.metadata.resource_version.as_deref(),
    ) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let view = match NodeImageView::from_object((*object).clone()) {
        Ok(view) => view,
        Err(error) => {
            warn!(%error, "NodeImage does not decode");
            ctx.event(
                &reference(&object, &resource),
                EventType::Warning,
                "InvalidNodeImage",
                &error.to_string(),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let node_labels = node
        .as_ref()
        .filter(|_| !node_gone)
        .map(|n| n.metadata.labels.clone().unwrap_or_default());

    // Spec: labels, defaults, validation, garbage collection. Planned on the cached copy
    // first: most reconciles follow the agent's status writes and change nothing, and
    // must then cost no API request. A change is redone on a fresh read.
    let now = Timestamp::now();
    let owner_alive = |owner: &ObjectReference| owner_alive(&ctx, owner);
    let secret_exists = |namespace: &str, secret: &str| {
        namespace != ctx.settings.daemon_config_namespace
            || ctx
                .stores
                .synced_secrets
                .get(&ObjectRef::new(secret).within(namespace))
                .is_some()
    };
    let mut cached_labels = object.metadata.labels.clone().unwrap_or_default();
    let mut cached_images = view.images.clone();
    let cached_plan = plan_spec(
        &mut cached_labels,
        &mut cached_images,
        view.status.as_ref(),
        node_labels.as_ref(),
        &owner_alive,
        &secret_exists,
        now,
    );
    let mut last_plan = SpecPlan::default();
    let written = if cached_plan.changes.is_empty() {
        last_plan = cached_plan;
        Ok(None)
    } else {
        nodeimage_io::edit_spec(
            &ctx.node_images(),
            ctx.versions.node_image,
            &name,
            |labels, images, fresh| {
                let plan = plan_spec(
                    labels,
                    images,
                    fresh.status.as_ref(),
                    node_labels.as_ref(),
                    &owner_alive,
                    &secret_exists,
                    now,
                );
                let changed = !plan.changes.is_empty();
                last_plan = plan;
                if changed {
                    Edit::Changed
                } else {
                    Edit::Unchanged
                }
            },
        )
        .await
    };
    let written = written?;
    if let Some(written) = written {
        ctx.metrics
            .write_outcome(NODE_IMAGE_CONTROLLER, "update_nodeimage_spec", true);
        info!(nodeimage = %name, changes = ?last_plan.changes, "updated NodeImage spec");
        ctx.expectations.expect(
            &format!("nodeimage/{name}"),
            written.metadata.resource_version.as_deref(),
        );
        if !last_plan.rejected.is_empty() {
            ctx.event(
                &reference(&written, &resource),
                EventType::Warning,
                "InvalidNodeImageEntries",
                &format!(
                    "Dropped entries kruise's webhook would have rejected: {}",
                    last_plan.rejected.join("; ")
                ),
            )
            .await;
        }
        // The status half runs on the next event, from the written object.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }

    // Status: silent nodes and deadlines.
    let plan = plan_status(
        &view.images,
        view.status.as_ref(),
        now,
        ctx.settings.nodeimage_response_timeout,
    );
    if let Some(status) = &plan.status {
        let result = nodeimage_io::write_status(&ctx.node_images(), &object, status).await;
        ctx.metrics
            .write(NODE_IMAGE_CONTROLLER, "fail_silent_tags", &result);
        match result {
            Ok(written) => {
                ctx.expectations.expect(
                    &format!("nodeimage/{name}"),
                    written.metadata.resource_version.as_deref(),
                );
                for failed in &plan.failed {
                    let message = format!(
                        "Failed to pull image {} on node {name} for {}",
                        failed.full_name, failed.message
                    );
                    warn!(nodeimage = %name, image = %failed.full_name, reason = failed.message, "failed a tag");
                    for owner in &failed.owners {
                        ctx.event(owner, EventType::Warning, "PullImageFailed", &message)
                            .await;
                    }
                    ctx.event(
                        &reference(&written, &resource),
                        EventType::Warning,
                        "PullImageFailed",
                        &message,
                    )
                    .await;
                }
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(500)));
            }
            Err(error) => return Err(ReconcileError::Api(error)),
        }
    }
    let next = [plan.next, last_plan.next_ttl].into_iter().flatten().min();
    Ok(next.map_or_else(Action::await_change, |left| {
        Action::requeue(timer_requeue(left))
    }))
}

/// Whether a tag's ImagePullJob owner still exists with the same UID.
fn owner_alive(ctx: &Context, owner: &ObjectReference) -> Option<bool> {
    let (Some(namespace), Some(name)) = (owner.namespace.as_deref(), owner.name.as_deref()) else {
        return Some(false);
    };
    let job = ctx
        .stores
        .jobs
        .get(&ObjectRef::new_with(name, ctx.job_resource()).within(namespace));
    Some(job.is_some_and(|job| job.metadata.uid == owner.uid))
}

/// `now + seconds`, for tests and timers.
pub fn after(now: Timestamp, seconds: i64) -> Timestamp {
    now.checked_add(SignedDuration::from_secs(seconds))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::shared::nodeimage::ImageTagSpec;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn owner(uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("apps.kruise.io/v1beta1".into()),
            kind: Some("ImagePullJob".into()),
            namespace: Some("default".into()),
            name: Some(format!("job-{uid}")),
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    fn tag(name: &str, version: i64, owners: &[&str]) -> ImageTagSpec {
        ImageTagSpec {
            tag: name.into(),
            created_at: Some(Time(ts("2026-01-01T00:00:00Z"))),
            pull_policy: Some(ImageTagPullPolicy {
                timeout_seconds: Some(600),
                backoff_limit: Some(3),
                ttl_seconds_after_finished: Some(100),
                active_deadline_seconds: None,
            }),
            owner_references: Some(owners.iter().map(|u| owner(u)).collect()),
            version: Some(version),
            image_pull_policy: Some("IfNotPresent".into()),
        }
    }

    fn image(tags: Vec<ImageTagSpec>) -> ImageSpec {
        ImageSpec {
            pull_secrets: None,
            tags,
            sandbox_config: None,
        }
    }

    fn tag_status(tag: &str, version: i64, phase: &str, completed: Option<&str>) -> ImageTagStatus {
        ImageTagStatus {
            tag: tag.into(),
            phase: phase.into(),
            progress: None,
            start_time: None,
            completion_time: completed.map(|c| Time(ts(c))),
            version: Some(version),
            image_id: None,
            message: None,
        }
    }

    fn status(image: &str, tags: Vec<ImageTagStatus>) -> NodeImageStatus {
        NodeImageStatus {
            desired: tags.len() as i32,
            image_statuses: Some(BTreeMap::from([(image.to_owned(), ImageStatus { tags })])),
            ..Default::default()
        }
    }

    fn alive(uids: &'static [&'static str]) -> impl Fn(&ObjectReference) -> Option<bool> {
        move |o| Some(uids.contains(&o.uid.as_deref().unwrap_or_default()))
    }

    #[test]
    fn defaults_are_applied_and_tags_sorted_like_the_webhook() {
        let mut bare = tag("b", 0, &["u1"]);
        bare.created_at = None;
        bare.pull_policy = None;
        let mut images =
            BTreeMap::from([("nginx".to_owned(), image(vec![bare, tag("a", 0, &["u1"])]))]);
        let mut labels = BTreeMap::new();
        let now = ts("2026-01-01T00:05:00Z");
        let plan = plan_spec(
            &mut labels,
            &mut images,
            None,
            None,
            &alive(&["u1"]),
            &|_, _| true,
            now,
        );
        let tags = &images["nginx"].tags;
        assert_eq!(
            tags.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(tags[1].created_at, Some(Time(now)));
        assert_eq!(
            tags[1].pull_policy,
            Some(ImageTagPullPolicy {
                timeout_seconds: Some(600),
                backoff_limit: Some(3),
                ..Default::default()
            })
        );
        assert!(!plan.changes.is_empty());
        assert!(plan.rejected.is_empty());
    }

    #[test]
    fn invalid_entries_are_rejected_and_named() {
        let mut images = BTreeMap::from([(
            "nginx".to_owned(),
            image(vec![
                tag("1", 0, &["u1"]),
                tag("1", 1, &["u1"]),
                tag("", 0, &["u1"]),
                tag("2", -1, &["u1"]),
            ]),
        )]);
        let plan = plan_spec(
            &mut BTreeMap::new(),
            &mut images,
            None,
            None,
            &alive(&["u1"]),
            &|_, _| true,
            ts("2026-01-01T00:00:01Z"),
        );
        assert_eq!(images["nginx"].tags.len(), 1);
        assert_eq!(plan.rejected.len(), 3, "{:?}", plan.rejected);
        assert!(plan.rejected.iter().any(|r| r.contains("listed twice")));
    }

    #[test]
    fn tags_of_gone_jobs_are_collected_and_shared_tags_keep_live_owners() {
        let mut images = BTreeMap::from([(
            "nginx".to_owned(),
            image(vec![tag("1", 0, &["gone"]), tag("2", 0, &["gone", "live"])]),
        )]);
        plan_spec(
            &mut BTreeMap::new(),
            &mut images,
            None,
            None,
            &alive(&["live"]),
            &|_, _| true,
            ts("2026-01-01T00:00:01Z"),
        );
        let tags = &images["nginx"].tags;
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].tag, "2");
        assert_eq!(tags[0].owner_references.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn finished_tags_leave_after_their_ttl_and_the_next_ttl_is_reported() {
        let mut images = BTreeMap::from([(
            "nginx".to_owned(),
            image(vec![
                tag("old", 0, &["u"]),
                tag("new", 2, &["u"]),
                tag("running", 0, &["u"]),
            ]),
        )]);
        let status = status(
            "nginx",
            vec![
                tag_status("old", 0, "Succeeded", Some("2026-01-01T00:00:00Z")),
                tag_status("new", 2, "Failed", Some("2026-01-01T00:01:00Z")),
                // A completion of an older version does not count.
                tag_status("running", 7, "Succeeded", Some("2026-01-01T00:00:00Z")),
            ],
        );
        let plan = plan_spec(
            &mut BTreeMap::new(),
            &mut images,
            Some(&status),
            None,
            &alive(&["u"]),
            &|_, _| true,
            ts("2026-01-01T00:02:00Z"),
        );
        let names: Vec<_> = images["nginx"]
            .tags
            .iter()
            .map(|t| t.tag.as_str())
            .collect();
        assert_eq!(names, ["new", "running"]);
        assert_eq!(plan.next_ttl, Some(Duration::from_secs(40)));
    }

    #[test]
    fn an_image_without_tags_leaves_and_node_labels_are_copied() {
        let mut images =
            BTreeMap::from([("nginx".to_owned(), image(vec![tag("1", 0, &["gone"])]))]);
        let mut labels = BTreeMap::from([("old".to_owned(), "x".to_owned())]);
        let node = BTreeMap::from([("zone".to_owned(), "a".to_owned())]);
        plan_spec(
            &mut labels,
            &mut images,
            None,
            Some(&node),
            &alive(&[]),
            &|_, _| true,
            ts("2026-01-01T00:00:01Z"),
        );
        assert!(images.is_empty());
        assert_eq!(labels, node);
    }

    #[test]
    fn old_style_secrets_leave_with_their_secret_batch_ones_stay() {
        use crate::api::v1beta1::ReferenceObject;
        let mut img = image(vec![tag("1", 0, &["u"])]);
        let reference = |name: &str, mode: Option<&str>| ReferenceObject {
            namespace: Some("kruise-daemon-config".into()),
            name: Some(name.into()),
            mode: mode.map(str::to_owned),
        };
        img.pull_secrets = Some(vec![
            reference("gone", None),
            reference("kept", None),
            reference("batch", Some("batch")),
        ]);
        let mut images = BTreeMap::from([("nginx".to_owned(), img)]);
        plan_spec(
            &mut BTreeMap::new(),
            &mut images,
            None,
            None,
            &alive(&["u"]),
            &|_, name| name == "kept",
            ts("2026-01-01T00:00:01Z"),
        );
        let names: Vec<_> = images["nginx"]
            .pull_secrets
            .as_ref()
            .unwrap()
            .iter()
            .map(|s| s.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["kept", "batch"]);
    }

    #[test]
    fn an_unchanged_spec_plans_no_write() {
        let mut images = BTreeMap::from([("nginx".to_owned(), image(vec![tag("1", 0, &["u"])]))]);
        let plan = plan_spec(
            &mut BTreeMap::new(),
            &mut images,
            None,
            None,
            &alive(&["u"]),
            &|_, _| true,
            ts("2026-01-01T00:00:01Z"),
        );
        assert_eq!(plan, SpecPlan::default());
    }

    #[test]
    fn silent_nodes_fail_after_the_response_timeout_only() {
        let images = BTreeMap::from([("nginx".to_owned(), image(vec![tag("1", 3, &["u"])]))]);
        let timeout = Duration::from_secs(600);
        let early = plan_status(&images, None, ts("2026-01-01T00:09:00Z"), timeout);
        assert_eq!(early.status, None);
        assert_eq!(early.next, Some(Duration::from_secs(60)));
        // A status of an older version is no acknowledgement.
        let stale = status(
            "nginx",
            vec![tag_status(
                "1",
                2,
                "Succeeded",
                Some("2025-12-31T00:00:00Z"),
            )],
        );
        let late = plan_status(&images, Some(&stale), ts("2026-01-01T00:10:00Z"), timeout);
        let written = late.status.expect("a failure is written");
        let tag = &written.image_statuses.as_ref().unwrap()["nginx"].tags[0];
        assert_eq!(tag.phase, "Failed");
        assert_eq!(tag.version, Some(3));
        assert_eq!(tag.message.as_deref(), Some(NOT_RESPONDED));
        assert_eq!((written.desired, written.failed), (1, 1));
        assert_eq!(late.failed[0].full_name, "nginx:1");
        assert_eq!(late.failed[0].owners.len(), 1);
    }

    #[test]
    fn unfinished_tags_fail_past_their_deadline() {
        let mut t = tag("1", 0, &["u"]);
        t.pull_policy.as_mut().unwrap().active_deadline_seconds = Some(60);
        let images = BTreeMap::from([("nginx".to_owned(), image(vec![t]))]);
        let pulling = status("nginx", vec![tag_status("1", 0, "Pulling", None)]);
        let timeout = Duration::from_secs(600);
        assert_eq!(
            plan_status(&images, Some(&pulling), ts("2026-01-01T00:10:59Z"), timeout).next,
            Some(Duration::from_secs(1))
        );
        let plan = plan_status(&images, Some(&pulling), ts("2026-01-01T00:11:00Z"), timeout);
        assert_eq!(plan.failed[0].message, PAST_DEADLINE);
        // A finished tag is never failed.
        let done = status(
            "nginx",
            vec![tag_status(
                "1",
                0,
                "Succeeded",
                Some("2026-01-01T00:00:30Z"),
            )],
        );
        assert_eq!(
            plan_status(&images, Some(&done), ts("2026-01-02T00:00:00Z"), timeout),
            StatusPlan::default()
        );
    }

    #[test]
    fn ready_nodes_and_virtual_kubelets_are_told_apart() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n", "labels": {"type": "virtual-kubelet"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        assert_eq!(ready_since(&node), Some(ts("2026-01-01T00:00:00Z")));
        assert!(is_virtual_kubelet(node.metadata.labels.as_ref()));
        assert!(!is_virtual_kubelet(None));
    }
}
