//! The NodeImage status, computed whole from what the puller knows (§3.5 step 4).

use std::collections::BTreeMap;

use crate::api::ImagePullPhase;
use crate::api::shared::nodeimage::{ImageStatus, ImageTagStatus, NodeImageStatus};
use crate::api::v1beta1::ImageSpec;

/// `(image key, tag)`: one pull task of a NodeImage.
pub type TagKey = (String, String);

/// Builds the status: `desired` counts every tag in the spec, each image lists the
/// statuses of its tags that are still in the spec, sorted by tag, and the phase counts
/// follow. `firstSyncStatus` is kept (kruise drops it; §11.2 lists keeping it as safe).
pub fn compute(
    spec: &BTreeMap<String, ImageSpec>,
    known: &BTreeMap<TagKey, ImageTagStatus>,
    previous: Option<&NodeImageStatus>,
) -> NodeImageStatus {
    let desired: usize = spec.values().map(|image| image.tags.len()).sum();
    let mut images: BTreeMap<String, ImageStatus> = BTreeMap::new();
    let (mut succeeded, mut failed, mut pulling, mut waiting) = (0, 0, 0, 0);
    for (name, image) in spec {
        let mut tags: Vec<ImageTagStatus> = image
            .tags
            .iter()
            .filter_map(|tag| known.get(&(name.clone(), tag.tag.clone())).cloned())
            .collect();
        if tags.is_empty() {
            continue;
        }
        tags.sort_by(|a, b| a.tag.cmp(&b.tag));
        tags.dedup_by(|a, b| a.tag == b.tag);
        for tag in &tags {
            match tag.phase.parse::<ImagePullPhase>() {
                Ok(ImagePullPhase::Succeeded) => succeeded += 1,
                Ok(ImagePullPhase::Failed) => failed += 1,
                Ok(ImagePullPhase::Pulling) => pulling += 1,
                Ok(ImagePullPhase::Waiting) => waiting += 1,
                Err(_) => {}
            }
        }
        images.insert(name.clone(), ImageStatus { tags });
    }
    NodeImageStatus {
        desired: i32::try_from(desired).unwrap_or(i32::MAX),
        succeeded,
        failed,
        pulling,
        waiting,
        image_statuses: (!images.is_empty()).then_some(images),
        first_sync_status: previous.and_then(|p| p.first_sync_status.clone()),
    }
}

/// The final status of a tag in `status`, if there is one: same tag, same version and a
/// `completionTime` (§3.5 step 3). Such a tag is never pulled again, which also honours
/// the manager's own Failed marks and survives agent restarts.
pub fn final_status<'a>(
    status: Option<&'a NodeImageStatus>,
    image: &str,
    tag: &str,
    version: i64,
) -> Option<&'a ImageTagStatus> {
    status?
        .image_statuses
        .as_ref()?
        .get(image)?
        .tags
        .iter()
        .find(|t| t.tag == tag && t.version.unwrap_or(0) == version && t.completion_time.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> BTreeMap<String, ImageSpec> {
        serde_json::from_value(value).unwrap()
    }

    fn tag(tag: &str, phase: &str) -> ImageTagStatus {
        serde_json::from_value(json!({"tag": tag, "phase": phase, "version": 1})).unwrap()
    }

    #[test]
    fn counts_phases_sorts_tags_and_drops_tags_left_out_of_the_spec() {
        let spec = spec(json!({
            "nginx": {"tags": [{"tag": "2"}, {"tag": "1"}, {"tag": "3"}]},
            "redis": {"tags": [{"tag": "7"}]}
        }));
        let known = BTreeMap::from([
            (("nginx".into(), "2".into()), tag("2", "Pulling")),
            (("nginx".into(), "1".into()), tag("1", "Succeeded")),
            (("nginx".into(), "gone".into()), tag("gone", "Failed")),
            (("redis".into(), "7".into()), tag("7", "Waiting")),
        ]);
        let status = compute(&spec, &known, None);
        assert_eq!(status.desired, 4);
        assert_eq!(
            (
                status.succeeded,
                status.failed,
                status.pulling,
                status.waiting
            ),
            (1, 0, 1, 1)
        );
        let images = status.image_statuses.unwrap();
        let nginx: Vec<&str> = images["nginx"]
            .tags
            .iter()
            .map(|t| t.tag.as_str())
            .collect();
        assert_eq!(nginx, vec!["1", "2"]);
    }

    #[test]
    fn empty_status_has_no_image_map_and_keeps_first_sync_status() {
        let previous: NodeImageStatus = serde_json::from_value(json!({
            "desired": 0, "firstSyncStatus": {"status": "Succeeded", "message": "m"}
        }))
        .unwrap();
        let status = compute(&BTreeMap::new(), &BTreeMap::new(), Some(&previous));
        assert!(status.image_statuses.is_none());
        assert_eq!(status.first_sync_status, previous.first_sync_status);
    }

    #[test]
    fn final_status_needs_same_tag_version_and_completion_time() {
        let status: NodeImageStatus = serde_json::from_value(json!({
            "desired": 1,
            "imageStatuses": {"nginx": {"tags": [
                {"tag": "1", "phase": "Failed", "version": 2, "completionTime": "2026-01-01T00:00:00Z",
                 "message": "node has not responded for a long time"},
                {"tag": "2", "phase": "Pulling", "version": 1}
            ]}}
        }))
        .unwrap();
        assert!(final_status(Some(&status), "nginx", "1", 2).is_some());
        assert!(
            final_status(Some(&status), "nginx", "1", 3).is_none(),
            "a version bump re-pulls"
        );
        assert!(
            final_status(Some(&status), "nginx", "2", 1).is_none(),
            "not complete"
        );
        assert!(final_status(None, "nginx", "1", 2).is_none());
    }
}
