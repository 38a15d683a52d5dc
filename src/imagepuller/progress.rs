//! Real byte progress of a CRI pull on containerd, from its content store
//! (spec pull-progress.md): committed blobs plus active ingest offsets, over the sum of
//! the manifest's blob sizes, kept monotonic per attempt and below 100 until the CRI
//! call returns.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::cri::CriError;
use crate::proto::containerd::services::content::v1 as content;
use content::content_client::ContentClient;

/// How often the content store is polled during a pull (the doc measured 1 ms per call).
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// containerd namespace of CRI-managed content.
const NAMESPACE: &str = "k8s.io";
/// Largest blob read as a possible manifest or index (registries cap manifests at 4 MiB).
const MAX_MANIFEST_BYTES: i64 = 4 * 1024 * 1024;
/// Label prefix containerd puts on a manifest or index for each blob it references.
const GC_REF_CONTENT_LABEL_PREFIX: &str = "containerd.io/gc.ref.content.";

/// Polls containerd's content service for the progress of pulls.
#[derive(Clone)]
pub struct ProgressSource {
    channel: Channel,
}

/// Where a reference comes from, as containerd labels its content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    /// Registry host without the port (containerd drops it in the label key).
    host: String,
    /// Repository path, e.g. `library/nginx`.
    repository: String,
}

fn source_of(reference: &str) -> Option<Source> {
    let parsed = crate::imageref::ImageReference::parse(reference).ok()?;
    let domain = parsed.domain();
    Some(Source {
        // containerd's label key drops the port (pull-progress.md, "Labels").
        host: domain.split(':').next().unwrap_or(domain).to_string(),
        repository: parsed.path().to_string(),
    })
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = NAMESPACE.parse() {
        request.metadata_mut().insert("containerd-namespace", value);
    }
    request.set_timeout(Duration::from_secs(5));
    request
}

/// What the manifest says the image consists of.
#[derive(Debug, Clone, Default)]
struct Blobs {
    sizes: BTreeMap<String, i64>,
}

impl Blobs {
    fn total(&self) -> i64 {
        self.sizes.values().sum()
    }
}

impl ProgressSource {
    /// A source on the runtime's socket (containerd serves content on the CRI socket).
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }

    fn client(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone()).max_decoding_message_size(16 * 1024 * 1024)
    }

    /// Runs `call` (the CRI pull) and, while it is in flight, publishes progress 0–99 on
    /// `progress`. Progress is a best effort: any content-store failure just leaves it
    /// where it was, and the pull's own result decides success.
    pub async fn track(
        &self,
        reference: &str,
        call: impl Future<Output = Result<String, CriError>>,
        progress: watch::Sender<u8>,
    ) -> Result<String, CriError> {
        let started = SystemTime::now();
        let Some(source) = source_of(reference) else {
            // An unparseable reference fails in the runtime; nothing to track.
            return call.await;
        };
        let poller = async {
            let mut blobs: Option<Blobs> = None;
            let mut committed: HashSet<String> = HashSet::new();
            let mut best = 0u8;
            // The first look is one interval in: a short pull never pays for polling.
            let mut ticker = tokio::time::interval_at(
                tokio::time::Instant::now() + POLL_INTERVAL,
                POLL_INTERVAL,
            );
            loop {
                ticker.tick().await;
                if blobs.is_none() {
                    blobs = self.find_blobs(&source, started).await;
                }
                let Some(blobs) = blobs.as_ref().filter(|b| b.total() > 0) else {
                    continue;
                };
                if let Some(done) = self.bytes_done(blobs, &mut committed).await {
                    let percent = (done.saturating_mul(100) / blobs.total()).clamp(0, 99) as u8;
                    if percent > best {
                        best = percent;
                        let _ = progress.send(best);
                    }
                }
            }
        };
        tokio::select! {
            result = call => result,
            () = poller => unreachable!("the poller never ends"),
        }
    }

    /// Finds the manifest the pull is writing, through the content store's
    /// `distribution.source` labels (never by asking the registry), and reads its blobs.
    async fn find_blobs(&self, source: &Source, started: SystemTime) -> Option<Blobs> {
        let filter = format!(
            "labels.\"containerd.io/distribution.source.{}\"~=\"(^|,){}(,|$)\"",
            source.host,
            regex_escape(&source.repository)
        );
        let mut stream = self
            .client()
            .list(request(content::ListContentRequest {
                filters: vec![filter],
            }))
            .await
            .ok()?
            .into_inner();
        let since = started
            .checked_sub(Duration::from_secs(2))
            .unwrap_or(started);
        let mut candidates = Vec::new();
        while let Some(Ok(page)) = stream.next().await {
            for info in page.info {
                let created = info.created_at.as_ref().and_then(|t| {
                    SystemTime::UNIX_EPOCH
                        .checked_add(Duration::new(t.seconds as u64, t.nanos as u32))
                });
                // Layers carry the same source label: too big to be a manifest, skip them.
                if created.is_some_and(|c| c >= since) && info.size <= MAX_MANIFEST_BYTES {
                    candidates.push(info);
                }
            }
        }
        // Indexes and manifests reference their children through gc.ref labels: look at
        // those first, and never let one unreadable or non-JSON blob end the search.
        candidates.sort_by_key(|info| {
            !info
                .labels
                .keys()
                .any(|key| key.starts_with(GC_REF_CONTENT_LABEL_PREFIX))
        });
        for info in candidates {
            let Some(document) = self.read_json(&info.digest).await else {
                continue;
            };
            if let Some(blobs) = self.blobs_of(document).await {
                return Some(blobs);
            }
        }
        None
    }

    /// Config and layers of a manifest; for an index, of the linux/amd64 manifest.
    async fn blobs_of(&self, document: serde_json::Value) -> Option<Blobs> {
        let document = if let Some(manifests) = document["manifests"].as_array() {
            let chosen = manifests.iter().find(|m| {
                m["platform"]["os"] == "linux"
                    && m["platform"]["architecture"] == oci_architecture()
            })?;
            self.read_json(chosen["digest"].as_str()?).await?
        } else {
            document
        };
        let layers = document["layers"].as_array()?;
        let mut sizes = BTreeMap::new();
        let config = &document["config"];
        if let (Some(digest), Some(size)) = (config["digest"].as_str(), config["size"].as_i64()) {
            sizes.insert(digest.to_string(), size);
        }
        for layer in layers {
            sizes.insert(
                layer["digest"].as_str()?.to_string(),
                layer["size"].as_i64()?,
            );
        }
        Some(Blobs { sizes })
    }

    async fn read_json(&self, digest: &str) -> Option<serde_json::Value> {
        let mut stream = self
            .client()
            .read(request(content::ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .ok()?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend(chunk.ok()?.data);
            if bytes.len() as i64 > MAX_MANIFEST_BYTES {
                return None;
            }
        }
        serde_json::from_slice(&bytes).ok()
    }

    /// Committed blob bytes plus active ingest offsets.
    async fn bytes_done(&self, blobs: &Blobs, committed: &mut HashSet<String>) -> Option<i64> {
        let hexes: Vec<&str> = blobs
            .sizes
            .keys()
            .filter(|d| !committed.contains(*d))
            .filter_map(|d| d.strip_prefix("sha256:"))
            .collect();
        let mut active: BTreeMap<String, i64> = BTreeMap::new();
        if !hexes.is_empty() {
            let statuses = self
                .client()
                .list_statuses(request(content::ListStatusesRequest {
                    filters: vec![format!("ref~=\"({})\"", hexes.join("|"))],
                }))
                .await
                .ok()?
                .into_inner()
                .statuses;
            for status in statuses {
                // Refs are `layer-sha256:<hex>` (or `<kind>-<name>@sha256:<hex>`).
                if let Some(at) = status.r#ref.rfind("sha256:") {
                    active.insert(status.r#ref[at..].to_string(), status.offset);
                }
            }
        }
        let mut done = 0i64;
        for (digest, size) in &blobs.sizes {
            if committed.contains(digest) {
                done += size;
            } else if let Some(offset) = active.get(digest) {
                done += offset;
            } else if self
                .client()
                .info(request(content::InfoRequest {
                    digest: digest.clone(),
                }))
                .await
                .is_ok()
            {
                committed.insert(digest.clone());
                done += size;
            }
        }
        Some(done)
    }
}

/// This machine's architecture as OCI platforms name it (Go's `GOARCH`), which is the
/// platform containerd pulls from an index.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "progress_tests.rs"]
mod content_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_containerds_label_keys() {
        let source = |host: &str, repository: &str| {
            Some(Source {
                host: host.into(),
                repository: repository.into(),
            })
        };
        assert_eq!(
            source_of("127.0.0.1:5000/test/huge:1"),
            source("127.0.0.1", "test/huge")
        );
        assert_eq!(
            source_of("nginx:1.25"),
            source("docker.io", "library/nginx")
        );
        let digest = format!("quay.io/org/app@sha256:{}", "a".repeat(64));
        assert_eq!(source_of(&digest), source("quay.io", "org/app"));
        assert_eq!(source_of("localhost/app"), source("localhost", "app"));
        assert_eq!(source_of("UPPER:1"), None);
    }

    #[test]
    fn repository_names_are_escaped_for_containerd_filters() {
        assert_eq!(regex_escape("a.b/c+d"), "a\\.b/c\\+d");
    }
}
