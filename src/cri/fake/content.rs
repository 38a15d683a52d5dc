//! containerd's content store as a CRI pull leaves it, modelled on what
//! spec/pull-progress.md measured on containerd 1.6.20: committed blobs with their
//! labels, and ingests (in-flight writes) that `ListStatuses` reports while a layer
//! downloads and that vanish when it is committed.
//!
//! Only the `k8s.io` namespace has content, because only CRI pulls write any; every
//! other namespace is empty, as `containerd-namespace: default` was during a CRI pull.
//!
//! The image content a scripted pull writes ([`ScriptedImage`]) is real OCI JSON, so a
//! progress computer can `Read` the manifest and learn every layer's size up front, and
//! its index, manifest and config digests are the SHA-256 of those bytes. Layers have no
//! bytes: their digests are made up and `Read` returns filler of the right length.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::reference::{ImageReference, fake_digest};
use super::sha256;
use crate::proto::containerd::services::content::v1 as content;

/// The containerd namespace CRI works in; the only one with content in the fake.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The gRPC metadata key that carries the containerd namespace of a call.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// OCI media types, as umoci wrote them for the measured images.
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Labels containerd puts on content (pull-progress.md, "Labels on the manifest blob"
/// and "Unpack phase").
pub(crate) const GC_REF_CONFIG_LABEL: &str = "containerd.io/gc.ref.content.config";
pub(crate) const GC_REF_LAYER_LABEL_PREFIX: &str = "containerd.io/gc.ref.content.l.";
pub(crate) const GC_REF_MANIFEST_LABEL_PREFIX: &str = "containerd.io/gc.ref.content.m.";
pub(crate) const DISTRIBUTION_SOURCE_LABEL_PREFIX: &str = "containerd.io/distribution.source.";
pub(crate) const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

/// A content descriptor: what a manifest or index says about a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    /// The blob's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    /// The blob's size in bytes (compressed, for a layer).
    pub size: u64,
}

/// The content a scripted pull of one reference writes, known before the pull starts
/// (see [`super::FakeCri::scripted_image`]), so a test can check a progress computer's
/// figures against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedImage {
    /// The image index the tag resolves to, when the script models a multi-platform
    /// image, with its JSON.
    pub index: Option<(Descriptor, Vec<u8>)>,
    /// The `linux/amd64` image manifest.
    pub manifest: Descriptor,
    /// The manifest's JSON, exactly the bytes `Content/Read` returns.
    pub manifest_json: Vec<u8>,
    /// The image config; its digest is the CRI image id.
    pub config: Descriptor,
    /// The config's JSON.
    pub config_json: Vec<u8>,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// The layers' uncompressed digests (`rootfs.diff_ids`), which containerd writes to
    /// the `containerd.io/uncompressed` label once a layer is unpacked.
    pub diff_ids: Vec<String>,
    /// The registry host the reference names, port included; see
    /// [`ScriptedImage::distribution_source_label`].
    pub registry_host: String,
    /// The repository path inside the registry, e.g. `test/huge`.
    pub repository_path: String,
}

impl ScriptedImage {
    /// The digest the reference resolves to, as the registry's `Docker-Content-Digest`
    /// header says it: the index's when there is one, else the manifest's. It is also
    /// the digest in the pulled image's `repoDigests`.
    pub fn resolved_digest(&self) -> &str {
        self.index
            .as_ref()
            .map_or(&self.manifest.digest, |(index, _)| &index.digest)
    }

    /// The bytes a pull downloads and that progress is measured against: config plus
    /// layers, the manifest's own sizes (pull-progress.md, "Recommended algorithm", T).
    pub fn total_bytes(&self) -> u64 {
        self.config.size + self.layers.iter().map(|layer| layer.size).sum::<u64>()
    }

    /// The size CRI reports for the pulled image: every blob of it, as containerd's
    /// `image.Size` walks them.
    pub fn image_size(&self) -> u64 {
        self.total_bytes()
            + self.manifest.size
            + self.index.as_ref().map_or(0, |(index, _)| index.size)
    }

    /// The distribution-source label key containerd puts on every blob it fetched:
    /// `containerd.io/distribution.source.<host without port>`; its value is
    /// [`ScriptedImage::repository_path`]. The key drops the port (pull-progress.md,
    /// "Labels on the manifest blob").
    pub fn distribution_source_label(&self) -> String {
        distribution_source_label(&self.registry_host)
    }

    /// Every blob of the image: index, manifest, config, then layers.
    pub(crate) fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.index
            .iter()
            .map(|(index, _)| index)
            .chain([&self.manifest, &self.config])
            .chain(&self.layers)
    }

    /// Builds the content for `reference` with layers of `layer_sizes`. Layer digests
    /// are a function of `layer_seed`, position and size, so two images given one seed
    /// share layers. A reference pinned by digest keeps that digest for its manifest (or
    /// index), though the bytes then do not hash to it.
    pub(crate) fn build(
        reference: &ImageReference,
        layer_sizes: &[u64],
        layer_seed: Option<&str>,
        with_index: bool,
    ) -> Self {
        let reference_text = reference.to_string();
        let seed = layer_seed.unwrap_or(&reference_text);
        let layers: Vec<Descriptor> = layer_sizes
            .iter()
            .enumerate()
            .map(|(position, size)| Descriptor {
                media_type: OCI_LAYER_GZIP.to_owned(),
                digest: fake_digest(&format!("layer {position} of {size} bytes from {seed}")),
                size: *size,
            })
            .collect();
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|layer| fake_digest(&format!("diff of {}", layer.digest)))
            .collect();
        let config_json = to_json(&ImageConfig {
            architecture: "amd64",
            os: "linux",
            config: ContainerConfig {
                labels: BTreeMap::from([("io.kruise.fake.reference", reference_text.as_str())]),
            },
            rootfs: RootFs {
                kind: "layers",
                diff_ids: &diff_ids,
            },
        });
        let config = Descriptor {
            media_type: OCI_CONFIG.to_owned(),
            digest: sha256::digest(&config_json),
            size: len(&config_json),
        };
        let manifest_json = to_json(&Manifest {
            schema_version: 2,
            media_type: OCI_MANIFEST,
            config: &config,
            layers: &layers,
        });
        let pinned = reference.digest().map(str::to_owned);
        let manifest = Descriptor {
            media_type: OCI_MANIFEST.to_owned(),
            digest: match &pinned {
                Some(digest) if !with_index => digest.clone(),
                _ => sha256::digest(&manifest_json),
            },
            size: len(&manifest_json),
        };
        let index = with_index.then(|| {
            let other_platform = Descriptor {
                media_type: OCI_MANIFEST.to_owned(),
                digest: fake_digest(&format!("linux/arm64 manifest of {reference_text}")),
                size: manifest.size,
            };
            let index_json = to_json(&Index {
                schema_version: 2,
                media_type: OCI_INDEX,
                manifests: vec![
                    PlatformDescriptor {
                        descriptor: &manifest,
                        platform: Platform {
                            architecture: "amd64",
                            os: "linux",
                        },
                    },
                    PlatformDescriptor {
                        descriptor: &other_platform,
                        platform: Platform {
                            architecture: "arm64",
                            os: "linux",
                        },
                    },
                ],
            });
            let descriptor = Descriptor {
                media_type: OCI_INDEX.to_owned(),
                digest: pinned
                    .clone()
                    .unwrap_or_else(|| sha256::digest(&index_json)),
                size: len(&index_json),
            };
            (descriptor, index_json)
        });
        Self {
            index,
            manifest,
            manifest_json,
            config,
            config_json,
            layers,
            diff_ids,
            registry_host: reference.domain().to_owned(),
            repository_path: reference.path().to_owned(),
        }
    }
}

fn len(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// `containerd.io/distribution.source.<host without port>`.
pub(crate) fn distribution_source_label(registry_host: &str) -> String {
    let host = if registry_host.starts_with('[') {
        registry_host
            .split_once(']')
            .map_or(registry_host, |(host, _)| host.trim_start_matches('['))
    } else {
        registry_host
            .rsplit_once(':')
            .map_or(registry_host, |(host, _)| host)
    };
    format!("{DISTRIBUTION_SOURCE_LABEL_PREFIX}{host}")
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
}

#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<PlatformDescriptor<'a>>,
}

#[derive(Serialize)]
struct PlatformDescriptor<'a> {
    #[serde(flatten)]
    descriptor: &'a Descriptor,
    platform: Platform<'a>,
}

#[derive(Serialize)]
struct Platform<'a> {
    architecture: &'a str,
    os: &'a str,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'a str,
    os: &'a str,
    config: ContainerConfig<'a>,
    rootfs: RootFs<'a>,
}

#[derive(Serialize)]
struct ContainerConfig<'a> {
    #[serde(rename = "Labels")]
    labels: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: &'a [String],
}

/// The `k8s.io` content store: committed blobs and in-flight ingests.
#[derive(Debug, Default)]
pub(crate) struct ContentStore {
    blobs: BTreeMap<String, Blob>,
    ingests: BTreeMap<String, Ingest>,
    /// Leases handed out so far; each pull attempt holds one.
    issued_leases: u64,
}

/// A committed blob.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    size: u64,
    /// The bytes of JSON documents; `None` for layers, which read as filler.
    data: Option<Arc<[u8]>>,
    created_at: i64,
    updated_at: i64,
    labels: HashMap<String, String>,
    /// Pull attempts still using the blob; it is not collected while any is.
    leases: BTreeSet<u64>,
}

/// An in-flight write, keyed by its ref.
#[derive(Debug, Clone)]
struct Ingest {
    offset: u64,
    total: u64,
    started_at: i64,
    updated_at: i64,
    lease: u64,
}

/// What a pull finds when it goes to write a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IngestStart {
    /// The blob is committed already: no ingest (pull-progress.md, edge case 5).
    Committed,
    /// Another pull is writing it: wait for that ingest (edge case 3, "one ingest per
    /// layer digest").
    Busy,
    /// A new ingest at offset 0.
    Started,
}

/// containerd's `remotes.MakeRefKey` for a layer: `layer-<digest>`. Clients see no
/// namespace or lease in the ref (pull-progress.md, "Ref").
pub(crate) fn layer_ref(digest: &str) -> String {
    format!("layer-{digest}")
}

/// containerd's `appendDistributionSourceLabel`: a blob pulled from several
/// repositories of one registry lists them all, sorted and comma-separated (hence the
/// `(^|,)<repo>(,|$)` regex in pull-progress.md's registry-free lookup).
fn merge_sources(existing: &str, repository: &str) -> String {
    let mut repositories: BTreeSet<&str> = existing.split(',').collect();
    repositories.insert(repository);
    repositories.into_iter().collect::<Vec<_>>().join(",")
}

/// A timestamp from nanoseconds since the epoch.
pub(crate) fn timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: i32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}

impl ContentStore {
    /// A lease for one pull attempt.
    pub(crate) fn new_lease(&mut self) -> u64 {
        self.issued_leases += 1;
        self.issued_leases
    }

    /// Stores a blob under `lease` (or adds the lease and `labels` to a stored one).
    pub(crate) fn commit(
        &mut self,
        descriptor: &Descriptor,
        data: Option<&[u8]>,
        labels: HashMap<String, String>,
        lease: u64,
        now: i64,
    ) {
        let blob = self
            .blobs
            .entry(descriptor.digest.clone())
            .or_insert_with(|| Blob {
                size: descriptor.size,
                data: data.map(Arc::from),
                created_at: now,
                updated_at: now,
                labels: HashMap::new(),
                leases: BTreeSet::new(),
            });
        let mut changed = false;
        for (key, value) in labels {
            let merged = match blob.labels.get(&key) {
                Some(existing) if key.starts_with(DISTRIBUTION_SOURCE_LABEL_PREFIX) => {
                    merge_sources(existing, &value)
                }
                _ => value,
            };
            if blob.labels.get(&key) != Some(&merged) {
                blob.labels.insert(key, merged);
                changed = true;
            }
        }
        if changed {
            blob.updated_at = now;
        }
        blob.leases.insert(lease);
    }

    /// Starts writing `descriptor` as `reference`, unless it is committed or being
    /// written. A committed blob gains `lease`.
    pub(crate) fn start_ingest(
        &mut self,
        reference: &str,
        descriptor: &Descriptor,
        lease: u64,
        now: i64,
    ) -> IngestStart {
        if let Some(blob) = self.blobs.get_mut(&descriptor.digest) {
            blob.leases.insert(lease);
            return IngestStart::Committed;
        }
        if self.ingests.contains_key(reference) {
            return IngestStart::Busy;
        }
        self.ingests.insert(
            reference.to_owned(),
            Ingest {
                offset: 0,
                total: descriptor.size,
                started_at: now,
                updated_at: now,
                lease,
            },
        );
        IngestStart::Started
    }

    /// Records `offset` bytes written to the ingest.
    pub(crate) fn advance_ingest(&mut self, reference: &str, offset: u64, now: i64) {
        if let Some(ingest) = self.ingests.get_mut(reference) {
            ingest.offset = offset;
            ingest.updated_at = now;
        }
    }

    /// Commits a finished ingest: its status disappears and the blob appears, in one
    /// step, as containerd's commit renames the ingest into the blob store.
    pub(crate) fn commit_ingest(
        &mut self,
        reference: &str,
        descriptor: &Descriptor,
        labels: HashMap<String, String>,
        now: i64,
    ) {
        if let Some(ingest) = self.ingests.remove(reference) {
            self.commit(descriptor, None, labels, ingest.lease, now);
        }
    }

    /// Sets one label on a committed blob.
    pub(crate) fn set_label(&mut self, digest: &str, key: &str, value: &str, now: i64) {
        if let Some(blob) = self.blobs.get_mut(digest) {
            blob.labels.insert(key.to_owned(), value.to_owned());
            blob.updated_at = now;
        }
    }

    /// Whether the blob is committed and carries `key`.
    pub(crate) fn has_label(&self, digest: &str, key: &str) -> bool {
        self.blobs
            .get(digest)
            .is_some_and(|blob| blob.labels.contains_key(key))
    }

    /// Ends a pull attempt: its ingests are dropped, and blobs that neither another
    /// attempt nor a stored image (`pinned`) uses are collected, so a failed or cancelled
    /// pull leaves nothing behind (pull-progress.md, edge case 4).
    pub(crate) fn release_lease(&mut self, lease: u64, pinned: &BTreeSet<String>) {
        self.ingests.retain(|_, ingest| ingest.lease != lease);
        for blob in self.blobs.values_mut() {
            blob.leases.remove(&lease);
        }
        self.collect_garbage(pinned);
    }

    /// Drops every blob no lease holds and no stored image pins, as containerd's
    /// garbage collector does after a pull's lease ends or an image is removed.
    pub(crate) fn collect_garbage(&mut self, pinned: &BTreeSet<String>) {
        self.blobs
            .retain(|digest, blob| !blob.leases.is_empty() || pinned.contains(digest));
    }

    /// `Content/Info`.
    pub(crate) fn info(&self, digest: &str) -> Option<content::Info> {
        self.blobs.get(digest).map(|blob| blob.to_info(digest))
    }

    /// Every committed blob, as `Content/List` returns them.
    pub(crate) fn infos(&self) -> Vec<content::Info> {
        self.blobs
            .iter()
            .map(|(digest, blob)| blob.to_info(digest))
            .collect()
    }

    /// The size and bytes of a committed blob.
    pub(crate) fn blob_data(&self, digest: &str) -> Option<(u64, Option<Arc<[u8]>>)> {
        self.blobs
            .get(digest)
            .map(|blob| (blob.size, blob.data.clone()))
    }

    /// Every ingest, as `ListStatuses` reports it.
    pub(crate) fn statuses(&self) -> Vec<content::Status> {
        self.ingests
            .iter()
            .map(|(reference, ingest)| content::Status {
                started_at: Some(timestamp(ingest.started_at)),
                updated_at: Some(timestamp(ingest.updated_at)),
                r#ref: reference.clone(),
                offset: i64::try_from(ingest.offset).unwrap_or(i64::MAX),
                total: i64::try_from(ingest.total).unwrap_or(i64::MAX),
                // Always empty in the measurements (pull-progress.md, "expected").
                expected: String::new(),
            })
            .collect()
    }
}

impl Blob {
    fn to_info(&self, digest: &str) -> content::Info {
        content::Info {
            digest: digest.to_owned(),
            size: i64::try_from(self.size).unwrap_or(i64::MAX),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            labels: self.labels.clone(),
        }
    }
}
