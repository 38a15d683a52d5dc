//! containerd's own `content.v1.Content` and `version.v1.Version` services, which
//! containerd serves on the CRI socket and kruised uses for pull progress.
//!
//! Content calls need the `containerd-namespace` header, as containerd's do; only
//! `k8s.io` has content (pull-progress.md, "Namespace"). `Content/List` is served too,
//! though kruised's proto subset lacks it, because it is pull-progress.md's
//! registry-free way to find a pull's manifest: its messages are declared here by hand
//! with upstream's names and field numbers.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::content::{CRI_NAMESPACE, NAMESPACE_HEADER};
use super::filters::Filters;
use super::reference::is_valid_digest;
use super::server::Dispatch;
use crate::proto::containerd::services::content::v1 as content;
use crate::proto::containerd::services::content::v1::content_server::Content;
use crate::proto::containerd::services::version::v1 as version;
use crate::proto::containerd::services::version::v1::version_server::Version;

/// containerd's content service reads with a 1 MiB buffer, one message per buffer.
const READ_CHUNK_BYTES: u64 = 1 << 20;
/// `Content/List` sends infos in batches of this many, as containerd's service does.
const LIST_BATCH: usize = 100;

/// The namespace a containerd call names, or containerd's FAILED_PRECONDITION.
fn namespace<T>(request: &Request<T>) -> Result<String, Status> {
    match request
        .metadata()
        .get(NAMESPACE_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        Some(namespace) if !namespace.is_empty() => Ok(namespace.to_owned()),
        // containerd's `namespaces.NamespaceRequired`, wrapping ErrFailedPrecondition.
        _ => Err(Status::failed_precondition(
            "namespace is required: failed precondition",
        )),
    }
}

/// containerd's metadata store's NOT_FOUND for a digest.
fn content_not_found(digest: &str) -> Status {
    Status::not_found(format!("content digest {digest}: not found"))
}

/// containerd parses the digest before anything else.
fn check_digest(digest: &str) -> Result<(), Status> {
    if is_valid_digest(digest) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid checksum digest format: {digest:?}"
        )))
    }
}

/// The fake's `Content` service.
#[derive(Debug)]
pub(crate) struct FakeContentService(pub(crate) Dispatch);

#[tonic::async_trait]
impl Content for FakeContentService {
    /// NOT_FOUND until the blob is committed: a layer still downloading has a status but
    /// no info (pull-progress.md, "Other content RPCs").
    async fn info(
        &self,
        request: Request<content::InfoRequest>,
    ) -> Result<Response<content::InfoResponse>, Status> {
        self.0.begin_containerd()?;
        let namespace = namespace(&request)?;
        let digest = request.into_inner().digest;
        check_digest(&digest)?;
        let info = (namespace == CRI_NAMESPACE)
            .then(|| self.0.lock().content.info(&digest))
            .flatten()
            .ok_or_else(|| content_not_found(&digest))?;
        Ok(Response::new(content::InfoResponse { info: Some(info) }))
    }

    type ReadStream = BoxStream<'static, Result<content::ReadContentResponse, Status>>;

    type ListStream = BoxStream<'static, Result<content::ListContentResponse, Status>>;

    async fn list(
        &self,
        request: Request<content::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let batches = list_content(&self.0, request)?;
        Ok(Response::new(
            stream::iter(batches.into_iter().map(Ok)).boxed(),
        ))
    }

    /// containerd's `Read`: from `offset` (negative: 0) for `size` bytes (0 or past the
    /// end: to the end), in 1 MiB messages; an offset past the end is OUT_OF_RANGE.
    async fn read(
        &self,
        request: Request<content::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        self.0.begin_containerd()?;
        let namespace = namespace(&request)?;
        let request = request.into_inner();
        check_digest(&request.digest)?;
        let (size, data) = (namespace == CRI_NAMESPACE)
            .then(|| self.0.lock().content.blob_data(&request.digest))
            .flatten()
            .ok_or_else(|| content_not_found(&request.digest))?;
        let start = u64::try_from(request.offset).unwrap_or(0);
        if start > size {
            return Err(Status::out_of_range(format!(
                "read past object length {size} bytes"
            )));
        }
        let length = u64::try_from(request.size)
            .ok()
            .filter(|length| *length > 0 && start.saturating_add(*length) <= size)
            .unwrap_or(size - start);
        let end = start + length;
        let chunks = (0..length.div_ceil(READ_CHUNK_BYTES)).map(move |chunk| {
            let from = start + chunk * READ_CHUNK_BYTES;
            let to = (from + READ_CHUNK_BYTES).min(end);
            Ok(content::ReadContentResponse {
                offset: i64::try_from(from).unwrap_or(i64::MAX),
                data: blob_bytes(data.as_ref(), from, to),
            })
        });
        Ok(Response::new(stream::iter(chunks).boxed()))
    }

    /// Ingests in `k8s.io`, filtered on `ref` server-side; an empty list elsewhere
    /// (pull-progress.md, "Namespace" and "Filters").
    async fn list_statuses(
        &self,
        request: Request<content::ListStatusesRequest>,
    ) -> Result<Response<content::ListStatusesResponse>, Status> {
        self.0.begin_containerd()?;
        let namespace = namespace(&request)?;
        let filters = Filters::parse(&request.into_inner().filters)?;
        let statuses = if namespace == CRI_NAMESPACE {
            self.0.lock().content.statuses()
        } else {
            Vec::new()
        };
        let statuses = statuses
            .into_iter()
            .filter(|status| {
                filters.matches(|fieldpath| {
                    // containerd's `adaptContentStatus` knows only `ref`.
                    (fieldpath == ["ref"]).then(|| status.r#ref.clone())
                })
            })
            .collect();
        Ok(Response::new(content::ListStatusesResponse { statuses }))
    }
}

/// Bytes `from..to` of a blob: its own for a JSON document, filler for a layer, whose
/// bytes the fake does not keep.
fn blob_bytes(data: Option<&Arc<[u8]>>, from: u64, to: u64) -> Vec<u8> {
    let index = |position: u64| usize::try_from(position).unwrap_or(usize::MAX);
    match data {
        Some(data) => data
            .get(index(from)..index(to))
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        None => (from..to).map(|position| (position % 251) as u8).collect(),
    }
}

/// `Content/List`: committed blobs in `k8s.io` matching the filters on `digest` and
/// `labels.<key>`, in batches; nothing in other namespaces. pull-progress.md finds a
/// pull's manifest this way, by its distribution-source label.
fn list_content(
    dispatch: &Dispatch,
    request: Request<content::ListContentRequest>,
) -> Result<Vec<content::ListContentResponse>, Status> {
    dispatch.begin_containerd()?;
    let namespace = namespace(&request)?;
    let filters = Filters::parse(&request.into_inner().filters)?;
    let infos = if namespace == CRI_NAMESPACE {
        dispatch.lock().content.infos()
    } else {
        Vec::new()
    };
    let matching: Vec<content::Info> = infos
        .into_iter()
        .filter(|info| {
            // containerd's `content.AdaptInfo`: digest and labels (size is not
            // supported there either).
            filters.matches(|fieldpath| match fieldpath {
                [field] if field == "digest" => Some(info.digest.clone()),
                [field, key] if field == "labels" => info.labels.get(key).cloned(),
                _ => None,
            })
        })
        .collect();
    Ok(matching
        .chunks(LIST_BATCH)
        .map(|batch| content::ListContentResponse {
            info: batch.to_vec(),
        })
        .collect())
}

/// The fake's `Version` service: containerd's version and revision.
#[derive(Debug)]
pub(crate) struct FakeVersionService(pub(crate) Dispatch);

#[tonic::async_trait]
impl Version for FakeVersionService {
    async fn version(
        &self,
        _request: Request<()>,
    ) -> Result<Response<version::VersionResponse>, Status> {
        self.0.begin_containerd()?;
        let state = self.0.lock();
        Ok(Response::new(version::VersionResponse {
            version: state.config.runtime_version.clone(),
            revision: state.config.containerd_revision.clone(),
        }))
    }
}
