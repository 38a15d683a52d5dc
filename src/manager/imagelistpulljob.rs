//! The ImageListPullJob controller (§3.1, §3.2): one ImagePullJob per listed image
//! (`generateName: <list>-`, controller ownerReference, label `controller-revision-hash`
//! with a hash of the template), recreated when the template changes, removed when its
//! image leaves the list; the list's status aggregates its jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::core::DynamicObject;
use kube::runtime::controller::Action;
use serde_json::json;
use tracing::info;

use super::context::{Context, reference};
use super::controllers::ReconcileError;
use crate::api::CompletionPolicyType;
use crate::api::shared::imagelistpulljob::{
    FailedImageStatus, ImageListPullJobSpec, ImageListPullJobStatus,
};
use crate::api::shared::imagepulljob::{ImagePullJobStatus, ImagePullJobTemplate};
use crate::events::EventType;

/// Metrics label.
pub const CONTROLLER: &str = "imagelistpulljob";
/// The label with the template hash on child jobs.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// A stable hash of the template (FNV-1a over its JSON), as a short hex string.
pub fn template_hash(template: &ImagePullJobTemplate) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:x}", hash & 0xff_ffff_ffff)
}

/// A child job as the list sees it.
#[derive(Debug, Clone)]
pub struct Child {
    /// Its name.
    pub name: String,
    /// `spec.image`.
    pub image: String,
    /// Its template hash label.
    pub revision: String,
    /// Its status.
    pub status: ImagePullJobStatus,
}

/// What to do with the children, and the list's status.
#[derive(Debug, Default, PartialEq)]
pub struct ListPlan {
    /// Images to create a job for.
    pub create: Vec<String>,
    /// Child jobs to delete (outdated template or image no longer listed).
    pub delete: Vec<String>,
    /// The new status.
    pub status: ImageListPullJobStatus,
}

/// Plans the children and aggregates their status (kruise's list job controller).
pub fn plan(
    images: &[String],
    completion: CompletionPolicyType,
    revision: &str,
    children: &[Child],
    old: &ImageListPullJobStatus,
    now: Timestamp,
) -> ListPlan {
    let wanted: BTreeSet<&str> = images.iter().map(String::as_str).collect();
    let mut plan = ListPlan::default();
    let mut current: BTreeMap<&str, &Child> = BTreeMap::new();
    for child in children {
        if child.revision != revision || !wanted.contains(child.image.as_str()) {
            plan.delete.push(child.name.clone());
        } else if current.insert(child.image.as_str(), child).is_some() {
            // A duplicate from an earlier race: keep one.
            plan.delete.push(child.name.clone());
        }
    }
    for image in &wanted {
        if !current.contains_key(image) {
            plan.create.push((*image).to_owned());
        }
    }
    let mut status = ImageListPullJobStatus {
        start_time: Some(old.start_time.clone().unwrap_or(Time(now))),
        desired: i32::try_from(wanted.len()).unwrap_or(i32::MAX),
        ..Default::default()
    };
    let mut failed = Vec::new();
    for child in current.values() {
        if child.status.completion_time.is_some() {
            status.completed += 1;
            if child.status.succeeded == child.status.desired {
                status.succeeded += 1;
            }
        } else {
            status.active += 1;
        }
        if child.status.failed > 0 {
            failed.push(FailedImageStatus {
                image_pull_job: Some(child.name.clone()),
                name: Some(child.image.clone()),
                message: child.status.message.clone(),
            });
        }
    }
    status.failed_image_statuses = (!failed.is_empty()).then_some(failed);
    if completion != CompletionPolicyType::Never
        && plan.create.is_empty()
        && status.completed == status.desired
    {
        status.completion_time = Some(old.completion_time.clone().unwrap_or(Time(now)));
    }
    plan.status = status;
    plan
}

/// Reconciles one ImageListPullJob.
pub async fn reconcile(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let resource = ctx.list_job_resource();
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let uid = object.metadata.uid.clone().unwrap_or_default();
    if object.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = format!("imagelistpulljob/{namespace}/{name}");
    if !ctx
        .expectations
        .satisfied(&key, object.metadata.resource_version.as_deref())
    {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let decoded: Result<ImageListPullJobSpec, _> =
        serde_json::from_value(object.data["spec"].clone());
    let old: ImageListPullJobStatus =
        serde_json::from_value(object.data["status"].clone()).unwrap_or_default();
    let spec = match decoded {
        Ok(spec) => spec,
        Err(error) => {
            ctx.event(
                &reference(&object, &resource),
                EventType::Warning,
                "InvalidImageListPullJob",
                &format!("cannot decode the spec: {error}"),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let completion = match spec.template.completion_policy.type_.as_deref() {
        Some("Never") => CompletionPolicyType::Never,
        _ => CompletionPolicyType::Always,
    };
    if let Some(completed) = old.completion_time.clone() {
        let Some(ttl) = spec.template.completion_policy.ttl_seconds_after_finished else {
            return Ok(Action::await_change());
        };
        let elapsed: Duration = Timestamp::now()
            .duration_since(completed.0)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        if let Some(left) = ttl.checked_sub(elapsed).filter(|l| !l.is_zero()) {
            return Ok(Action::requeue(left));
        }
        let result =
            kube::Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &resource)
                .delete(&name, &DeleteParams::default())
                .await;
        ctx.metrics.write(CONTROLLER, "delete_list_ttl", &result);
        return match result {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
            Err(error) => Err(error.into()),
        };
    }
    let revision = template_hash(&spec.template);
    let children: Vec<Child> = ctx
        .stores
        .jobs
        .state()
        .iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .map(|j| Child {
            name: j.metadata.name.clone().unwrap_or_default(),
            image: j.data["spec"]["image"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            revision: j
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                .cloned()
                .unwrap_or_default(),
            status: serde_json::from_value(j.data["status"].clone()).unwrap_or_default(),
        })
        .collect();
    let now = Timestamp::now();
    let plan = plan(&spec.images, completion, &revision, &children, &old, now);
    let jobs = ctx.jobs(&namespace);
    for child in &plan.delete {
        let result = jobs.delete(child, &DeleteParams::default()).await;
        ctx.metrics.write(CONTROLLER, "delete_job", &result);
        match result {
            Ok(_) => info!(list = %name, job = %child, "deleted an outdated ImagePullJob"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    let owner = OwnerReference {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
        name: name.clone(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    for image in &plan.create {
        let mut job = DynamicObject::new("", &ctx.job_resource());
        job.metadata = ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([(
                REVISION_LABEL.to_owned(),
                revision.clone(),
            )])),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        };
        let mut spec_value = serde_json::to_value(&spec.template).unwrap_or_default();
        spec_value["image"] = json!(image);
        job.data = json!({ "spec": spec_value });
        let result = jobs.create(&PostParams::default(), &job).await;
        ctx.metrics.write(CONTROLLER, "create_job", &result);
        let created = result?;
        info!(list = %name, job = ?created.metadata.name, %image, "created an ImagePullJob");
        ctx.event(
            &reference(&object, &resource),
            EventType::Normal,
            "CreatedImagePullJob",
            &format!(
                "Created ImagePullJob {} for {image}",
                created.metadata.name.unwrap_or_default()
            ),
        )
        .await;
    }
    if !plan.create.is_empty() || !plan.delete.is_empty() {
        // The new children's events bring us back with a complete view.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if plan.status != old {
        let mut updated = (*object).clone();
        updated.metadata.managed_fields = None;
        updated.data["status"] = serde_json::to_value(&plan.status).unwrap_or_default();
        let result =
            kube::Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &resource)
                .replace_status(&name, &PostParams::default(), &updated)
                .await;
        ctx.metrics.write(CONTROLLER, "update_list_status", &result);
        match result {
            Ok(written) => ctx
                .expectations
                .expect(&key, written.metadata.resource_version.as_deref()),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(name: &str, image: &str, revision: &str, done: Option<(i32, i32)>) -> Child {
        Child {
            name: name.into(),
            image: image.into(),
            revision: revision.into(),
            status: ImagePullJobStatus {
                desired: 2,
                succeeded: done.map_or(0, |d| d.0),
                failed: done.map_or(0, |d| d.1),
                completion_time: done.map(|_| Time("2026-01-01T00:00:00Z".parse().unwrap())),
                message: Some("m".into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn one_job_per_image_and_outdated_templates_are_replaced() {
        let images = vec!["a:1".to_owned(), "b:1".to_owned(), "c:1".to_owned()];
        let children = vec![
            child("l-1", "a:1", "r2", None),
            child("l-2", "b:1", "r1", None),
            child("l-3", "gone:1", "r2", None),
        ];
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        let plan = plan(
            &images,
            CompletionPolicyType::Always,
            "r2",
            &children,
            &Default::default(),
            now,
        );
        assert_eq!(plan.create, ["b:1", "c:1"]);
        assert_eq!(plan.delete, ["l-2", "l-3"]);
        assert_eq!(plan.status.desired, 3);
        assert_eq!(plan.status.active, 1);
        assert_eq!(plan.status.completion_time, None);
    }

    #[test]
    fn the_status_aggregates_the_children() {
        let images = vec!["a:1".to_owned(), "b:1".to_owned()];
        let children = vec![
            child("l-1", "a:1", "r", Some((2, 0))),
            child("l-2", "b:1", "r", Some((1, 1))),
        ];
        let now = "2026-01-01T00:05:00Z".parse().unwrap();
        let plan = plan(
            &images,
            CompletionPolicyType::Always,
            "r",
            &children,
            &Default::default(),
            now,
        );
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        let status = plan.status;
        assert_eq!(
            (
                status.desired,
                status.completed,
                status.succeeded,
                status.active
            ),
            (2, 2, 1, 0)
        );
        assert_eq!(
            status.failed_image_statuses.unwrap()[0]
                .image_pull_job
                .as_deref(),
            Some("l-2")
        );
        assert!(status.completion_time.is_some());
    }

    #[test]
    fn the_template_hash_changes_with_the_template_only() {
        let template: ImagePullJobTemplate =
            serde_json::from_value(json!({"completionPolicy": {}})).unwrap();
        let mut edited = template.clone();
        edited.parallelism =
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(5));
        assert_eq!(template_hash(&template), template_hash(&template.clone()));
        assert_ne!(template_hash(&template), template_hash(&edited));
    }
}
