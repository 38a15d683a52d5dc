//! The `apps.kruise.io/runtime-containers-meta` annotation (§6.1): kruise's
//! `RuntimeContainerMetaSet`, serialized as Go's `encoding/json` does, compact.
//!
//! ```json
//! {"containers":[{"name":"app","containerID":"containerd://…","restartCount":0,"hashes":{"plainHash":123,"extractedEnvFromMetadataHash":456}}]}
//! ```

use serde::{Deserialize, Serialize};

use super::envhash::go_json_string;

/// The pod annotation kruised writes and kruise-manager reads.
pub const RUNTIME_CONTAINERS_META_ANNOTATION: &str = "apps.kruise.io/runtime-containers-meta";

/// Every container's runtime meta.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeContainerMetaSet {
    /// One entry per container status with a runtime container.
    #[serde(default)]
    pub containers: Vec<RuntimeContainerMeta>,
}

/// One container's runtime meta.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeContainerMeta {
    /// The container's name.
    #[serde(default)]
    pub name: String,
    /// `<runtime>://<id>`.
    #[serde(default, rename = "containerID")]
    pub container_id: String,
    /// The kubelet's `io.kubernetes.container.restartCount`.
    #[serde(default)]
    pub restart_count: i32,
    /// The container's hashes.
    #[serde(default)]
    pub hashes: RuntimeContainerHashes,
}

/// A container's hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeContainerHashes {
    /// The kubelet's `io.kubernetes.container.hash`, hex on the container, decimal here.
    #[serde(default)]
    pub plain_hash: u64,
    /// The env-from-metadata hash of the running container; 0 (left out) until computed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub extracted_env_from_metadata_hash: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl RuntimeContainerMetaSet {
    /// Reads the annotation value.
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The annotation value, byte for byte as kruise writes it (Go's field order, HTML-safe
    /// string escapes, `extractedEnvFromMetadataHash` omitted when 0).
    pub fn to_json(&self) -> String {
        let containers: Vec<String> = self
            .containers
            .iter()
            .map(|container| {
                let mut hashes = format!("\"plainHash\":{}", container.hashes.plain_hash);
                if container.hashes.extracted_env_from_metadata_hash != 0 {
                    hashes.push_str(&format!(
                        ",\"extractedEnvFromMetadataHash\":{}",
                        container.hashes.extracted_env_from_metadata_hash
                    ));
                }
                format!(
                    "{{\"name\":{},\"containerID\":{},\"restartCount\":{},\"hashes\":{{{hashes}}}}}",
                    go_json_string(&container.name),
                    go_json_string(&container.container_id),
                    container.restart_count,
                )
            })
            .collect();
        format!("{{\"containers\":[{}]}}", containers.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_is_kruises_shape() {
        let set = RuntimeContainerMetaSet {
            containers: vec![
                RuntimeContainerMeta {
                    name: "app".into(),
                    container_id: "containerd://abc".into(),
                    restart_count: 2,
                    hashes: RuntimeContainerHashes {
                        plain_hash: 123,
                        extracted_env_from_metadata_hash: 456,
                    },
                },
                RuntimeContainerMeta {
                    name: "sidecar".into(),
                    container_id: "containerd://def".into(),
                    restart_count: 0,
                    hashes: RuntimeContainerHashes {
                        plain_hash: 7,
                        extracted_env_from_metadata_hash: 0,
                    },
                },
            ],
        };
        let json = set.to_json();
        assert_eq!(
            json,
            r#"{"containers":[{"name":"app","containerID":"containerd://abc","restartCount":2,"hashes":{"plainHash":123,"extractedEnvFromMetadataHash":456}},{"name":"sidecar","containerID":"containerd://def","restartCount":0,"hashes":{"plainHash":7}}]}"#
        );
        assert_eq!(RuntimeContainerMetaSet::parse(&json).unwrap(), set);
        // serde agrees with the hand-made encoder.
        let via_serde: serde_json::Value = serde_json::to_value(&set).unwrap();
        let by_hand: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(via_serde, by_hand);
        assert_eq!(
            RuntimeContainerMetaSet::default().to_json(),
            r#"{"containers":[]}"#
        );
    }

    #[test]
    fn annotations_from_older_kruise_still_parse() {
        // kruise 1.8 adds plainHashWithoutResources; unknown fields are ignored as in Go.
        let old = r#"{"containers":[{"name":"nginx","containerID":"containerd://302f","restartCount":0,"hashes":{"plainHash":2641665875,"plainHashWithoutResources":0,"extractedEnvFromMetadataHash":86995377}}]}"#;
        let set = RuntimeContainerMetaSet::parse(old).unwrap();
        assert_eq!(set.containers[0].hashes.plain_hash, 2_641_665_875);
        assert_eq!(
            set.containers[0].hashes.extracted_env_from_metadata_hash,
            86_995_377
        );
        assert!(RuntimeContainerMetaSet::parse("not json").is_err());
    }
}
