//! The HTTP face of the test API server: routing, verbs, version conversion, list and
//! watch, errors as `Status` objects.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::accounting::Accounting;
use super::faults::Faults;
use super::patch;
use super::resources::ResourceInfo;
use super::schema;
use super::selectors::{FieldSelector, FieldSelectorTarget, LabelSelector};
use super::status::ApiError;
use super::store::{Change, ChangeType, DeleteOptions, Store, WatchStart, WriteTarget};
use super::{conversion, events};

/// Response body: buffered or streamed (watch).
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest accepted request body, as kube-apiserver (3 MiB).
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// kube's limit on the total size of an object's annotations.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Watch duration when the client gives no `timeoutSeconds` (kube: min-request-timeout).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Everything a request handler needs.
pub struct ApiState {
    /// Objects.
    pub store: Arc<Store>,
    /// Fault injection.
    pub faults: Arc<Faults>,
    /// Request accounting.
    pub accounting: Arc<Accounting>,
    /// How often watches with `allowWatchBookmarks` get a bookmark.
    pub bookmark_interval: Duration,
}

/// A request on a resource path.
#[derive(Debug, Clone)]
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

enum Route {
    Version,
    OpenApiRoot,
    OpenApi(String, String),
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    Resource(Target),
    NotFound,
}

fn parse_route(state: &ApiState, path: &str) -> Route {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Route::Version,
        ["openapi", "v3"] => return Route::OpenApiRoot,
        ["openapi", "v3", "api", version] => {
            return Route::OpenApi(String::new(), version.to_string());
        }
        ["openapi", "v3", "apis", group, version] => {
            return Route::OpenApi(group.to_string(), version.to_string());
        }
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::Groups,
        ["apis", group] => return Route::Group(group.to_string()),
        ["api", version] => return Route::ResourceList(String::new(), version.to_string()),
        ["apis", group, version] => {
            return Route::ResourceList(group.to_string(), version.to_string());
        }
        ["api", version, rest @ ..] => (String::new(), version.to_string(), rest),
        ["apis", group, version, rest @ ..] => (group.to_string(), version.to_string(), rest),
        _ => return Route::NotFound,
    };
    let namespaced_resource = |plural: &str| {
        state
            .store
            .resource(&group, &version, plural)
            .is_some_and(|info| info.namespaced)
    };
    let target = |plural: &str, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        Route::Resource(Target {
            group: group.clone(),
            version: version.clone(),
            plural: plural.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        })
    };
    match rest {
        ["namespaces", ns, plural] if namespaced_resource(plural) => {
            target(plural, Some(ns), None, None)
        }
        ["namespaces", ns, plural, name] if namespaced_resource(plural) => {
            target(plural, Some(ns), Some(name), None)
        }
        ["namespaces", ns, plural, name, sub] if namespaced_resource(plural) => {
            target(plural, Some(ns), Some(name), Some(sub))
        }
        [plural] => target(plural, None, None, None),
        [plural, name] => target(plural, None, Some(name), None),
        [plural, name, sub] => target(plural, None, Some(name), Some(sub)),
        _ => Route::NotFound,
    }
}

/// Decodes `a=b&c=%2Fd` (also `+` as space).
pub fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(status: StatusCode, value: &Value) -> (Response<Body>, u64) {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let len = bytes.len() as u64;
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (response, len)
}

fn error_response(error: &ApiError) -> (Response<Body>, u64) {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (mut response, len) = json_response(status, &error.to_status());
    if let Some(seconds) = error.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    (response, len)
}

/// The verb and the accounting name of a request.
fn classify(
    route: &Route,
    method: &Method,
    query: &HashMap<String, String>,
) -> (&'static str, String) {
    let Route::Resource(target) = route else {
        return ("get", "discovery".to_string());
    };
    let mut resource = if target.group.is_empty() {
        target.plural.clone()
    } else {
        format!("{}.{}", target.plural, target.group)
    };
    if let Some(sub) = &target.subresource {
        resource = format!("{resource}/{sub}");
    }
    let watch = matches!(
        query.get("watch").map(String::as_str),
        Some("true") | Some("1")
    );
    let verb = match (method, target.name.is_some()) {
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, false) => "deletecollection",
        (&Method::DELETE, true) => "delete",
        _ => "unknown",
    };
    (verb, resource)
}

/// Serves one request.
pub async fn handle(state: Arc<ApiState>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = parse_query(request.uri().query().unwrap_or(""));
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let route = parse_route(&state, &path);
    let (verb, resource) = classify(&route, &method, &query);
    state.accounting.request(verb, &resource, &user_agent);
    let (delay, injected) = state.faults.check_request(verb, &resource, &user_agent);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let account = Account {
        accounting: state.accounting.clone(),
        verb,
        resource: resource.clone(),
        user_agent,
    };
    if let Some(error) = injected {
        let (response, len) = error_response(&error);
        account.bytes(len);
        return response;
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let (response, len) = error_response(&ApiError {
                code: 413,
                reason: "RequestEntityTooLarge",
                message: "the request body is too large".into(),
                details: None,
                retry_after: None,
            });
            account.bytes(len);
            return response;
        }
    };
    let result = match route {
        Route::Version => Ok(Reply::Json(StatusCode::OK, version_document())),
        Route::OpenApiRoot => Ok(Reply::Json(
            StatusCode::OK,
            state.store.with_registry(|r| r.openapi_v3_root()),
        )),
        Route::OpenApi(group, version) => state
            .store
            .with_registry(|r| r.openapi_v3_group_version(&group, &version))
            .map(|doc| Reply::Json(StatusCode::OK, doc))
            .ok_or_else(|| ApiError::no_route(&path)),
        Route::CoreVersions => Ok(Reply::Json(
            StatusCode::OK,
            state.store.with_registry(|r| r.core_versions()),
        )),
        Route::Groups => Ok(Reply::Json(
            StatusCode::OK,
            state.store.with_registry(|r| r.group_list()),
        )),
        Route::Group(group) => state
            .store
            .with_registry(|r| r.group(&group))
            .map(|doc| Reply::Json(StatusCode::OK, doc))
            .ok_or_else(|| ApiError::no_route(&path)),
        Route::ResourceList(group, version) => state
            .store
            .with_registry(|r| r.resource_list(&group, &version))
            .map(|doc| Reply::Json(StatusCode::OK, doc))
            .ok_or_else(|| ApiError::no_route(&path)),
        Route::Resource(target) => {
            resource_request(
                &state,
                target,
                &method,
                verb,
                &query,
                &content_type,
                &body,
                &account,
            )
            .await
        }
        Route::NotFound => Err(ApiError::no_route(&path)),
    };
    match result {
        Ok(Reply::Json(status, value)) => {
            let (response, len) = json_response(status, &value);
            account.bytes(len);
            response
        }
        Ok(Reply::Stream(response)) => response,
        Err(error) => {
            let (response, len) = error_response(&error);
            account.bytes(len);
            response
        }
    }
}

/// Where response bytes of one request are counted.
#[derive(Clone)]
struct Account {
    accounting: Arc<Accounting>,
    verb: &'static str,
    resource: String,
    user_agent: String,
}

impl Account {
    fn bytes(&self, bytes: u64) {
        self.accounting
            .bytes(self.verb, &self.resource, &self.user_agent, bytes);
    }
}

enum Reply {
    Json(StatusCode, Value),
    Stream(Response<Body>),
}

fn version_document() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-testbed", "gitCommit": "testbed",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64"
    })
}

fn decode_body(content_type: &str, body: &Bytes) -> Result<Value, ApiError> {
    if content_type.contains("protobuf") {
        // Real servers speak protobuf for built-in kinds; this one only JSON and YAML.
        return Err(ApiError::unsupported_media_type(format!(
            "the test API server does not decode {content_type}: send application/json"
        )));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let value: Result<Value, String> = if content_type.contains("yaml") {
        serde_yaml::from_slice(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    };
    value.map_err(|e| ApiError::bad_request(format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml: {e}")))
}

/// Converts an object from the storage version to `version` (and stamps apiVersion/kind).
fn from_storage(info: &ResourceInfo, version: &str, mut object: Value) -> Result<Value, ApiError> {
    if info.group == "events.k8s.io" {
        object = events::core_to_events_v1(object);
    } else if info.custom && version != info.storage_version && info.group == "apps.kruise.io" {
        object = conversion::convert(object, &info.api_version(version)).map_err(|e| {
            ApiError::internal(format!("conversion webhook for {}: {e}", info.kind))
        })?;
    }
    object["apiVersion"] = json!(info.api_version(version));
    object["kind"] = json!(info.kind);
    Ok(object)
}

/// Converts a request object in `version` to the storage version.
fn to_storage(info: &ResourceInfo, version: &str, mut object: Value) -> Result<Value, ApiError> {
    if info.group == "events.k8s.io" {
        object = events::events_v1_to_core(object);
        object["apiVersion"] = json!("v1");
        return Ok(object);
    }
    if info.custom && version != info.storage_version && info.group == "apps.kruise.io" {
        object =
            conversion::convert(object, &info.api_version(&info.storage_version)).map_err(|e| {
                ApiError::internal(format!("conversion webhook for {}: {e}", info.kind))
            })?;
    }
    object["apiVersion"] = json!(info.api_version(&info.storage_version));
    object["kind"] = json!(info.kind);
    Ok(object)
}

/// Prunes and validates a custom resource against its version's schema, and checks
/// the metadata limits every kind has.
fn admit(info: &ResourceInfo, version: &str, object: &mut Value) -> Result<(), ApiError> {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut causes = Vec::new();
    if let Some(annotations) = object["metadata"]["annotations"].as_object() {
        let size: usize = annotations
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if size > MAX_ANNOTATIONS_BYTES {
            causes.push((
                "metadata.annotations".to_string(),
                "FieldValueTooLong".to_string(),
                format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"),
            ));
        }
    }
    if info.custom
        && let Some(schema) = info.version(version).and_then(|v| v.schema.as_ref())
    {
        schema::prune(schema, object);
        for error in schema::validate(schema, object) {
            causes.push((
                error.path.clone(),
                error.kind.reason().to_string(),
                error.message(),
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&info.kind, &info.group, &name, causes))
    }
}

#[allow(clippy::too_many_arguments)]
async fn resource_request(
    state: &Arc<ApiState>,
    target: Target,
    method: &Method,
    verb: &str,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &Bytes,
    account: &Account,
) -> Result<Reply, ApiError> {
    let info = state
        .store
        .resource(&target.group, &target.version, &target.plural)
        .ok_or_else(|| ApiError::no_route(&format!("{}/{}", target.version, target.plural)))?;
    let version = target.version.clone();
    let namespace = if info.namespaced {
        target.namespace.clone()
    } else {
        None
    };
    if !info.namespaced && target.namespace.is_some() {
        return Err(ApiError::no_route(&target.plural));
    }
    let write_target = match target.subresource.as_deref() {
        None => WriteTarget::Main,
        Some("status") if info.has_status(&version) => WriteTarget::Status,
        Some(other) => {
            return Err(ApiError::no_route(&format!("{}/{other}", target.plural)));
        }
    };
    match verb {
        "get" => {
            let name = target.name.as_deref().unwrap_or("");
            let object = state
                .store
                .get(&info, namespace.as_deref().unwrap_or(""), name)?;
            Ok(Reply::Json(
                StatusCode::OK,
                from_storage(&info, &version, object)?,
            ))
        }
        "list" => list(state, &info, &version, namespace.as_deref(), query),
        "watch" => watch(
            state,
            info.clone(),
            version,
            namespace,
            query,
            account.clone(),
        ),
        "create" => {
            if target.name.is_some() {
                return Err(ApiError::method_not_allowed(
                    "POST on a named object is not supported",
                ));
            }
            let mut object = decode_body(content_type, body)?;
            stamp_namespace(&info, namespace.as_deref(), &mut object)?;
            admit(&info, &version, &mut object)?;
            let stored = state
                .store
                .create(&info, to_storage(&info, &version, object)?)?;
            Ok(Reply::Json(
                StatusCode::CREATED,
                from_storage(&info, &version, stored)?,
            ))
        }
        "update" => {
            let name = target.name.clone().unwrap_or_default();
            let mut object = decode_body(content_type, body)?;
            if object["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n != name)
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    object["metadata"]["name"].as_str().unwrap_or("")
                )));
            }
            object["metadata"]["name"] = json!(name);
            stamp_namespace(&info, namespace.as_deref(), &mut object)?;
            admit(&info, &version, &mut object)?;
            let stored = state.store.update(
                &info,
                to_storage(&info, &version, object)?,
                write_target,
                info.custom,
            )?;
            Ok(Reply::Json(
                StatusCode::OK,
                from_storage(&info, &version, stored)?,
            ))
        }
        "patch" => {
            let name = target.name.clone().unwrap_or_default();
            patch_object(
                state,
                &info,
                &version,
                namespace.as_deref(),
                &name,
                write_target,
                content_type,
                body,
                query,
            )
        }
        "delete" => {
            let name = target.name.clone().unwrap_or_default();
            let options = delete_options(query, body)?;
            let (object, _) =
                state
                    .store
                    .delete(&info, namespace.as_deref().unwrap_or(""), &name, &options)?;
            Ok(Reply::Json(
                StatusCode::OK,
                from_storage(&info, &version, object)?,
            ))
        }
        "deletecollection" => {
            let options = delete_options(query, body)?;
            let (items, _) = state.store.list(&info, namespace.as_deref());
            let filter = Filter::from_query(&info, &version, query)?;
            for item in items.iter().filter(|item| filter.matches(item)) {
                let ns = item["metadata"]["namespace"].as_str().unwrap_or("");
                let name = item["metadata"]["name"].as_str().unwrap_or("");
                match state.store.delete(&info, ns, name, &options) {
                    Ok(_) => {}
                    Err(error) if error.code == 404 => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(Reply::Json(
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported here"
        ))),
    }
}

fn stamp_namespace(
    info: &ResourceInfo,
    namespace: Option<&str>,
    object: &mut Value,
) -> Result<(), ApiError> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    if let Some(namespace) = namespace {
        match object["metadata"]["namespace"].as_str() {
            Some(given) if !given.is_empty() && given != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => object["metadata"]["namespace"] = json!(namespace),
        }
    } else if info.namespaced {
        return Err(ApiError::bad_request(
            "the namespace of the object is required on this path",
        ));
    }
    Ok(())
}

fn delete_options(
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Result<DeleteOptions, ApiError> {
    let mut options = DeleteOptions::default();
    if !body.is_empty() {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        options.grace_period_seconds = value["gracePeriodSeconds"].as_i64();
        options.uid = value["preconditions"]["uid"].as_str().map(str::to_string);
        options.resource_version = value["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
    }
    if let Some(grace) = query.get("gracePeriodSeconds") {
        options.grace_period_seconds =
            Some(grace.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds {grace:?}"))
            })?);
    }
    Ok(options)
}

#[allow(clippy::too_many_arguments)]
fn patch_object(
    state: &Arc<ApiState>,
    info: &ResourceInfo,
    version: &str,
    namespace: Option<&str>,
    name: &str,
    target: WriteTarget,
    content_type: &str,
    body: &Bytes,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
    let apply = content_type == "application/apply-patch+yaml";
    if apply && query.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(ApiError::bad_request(
            "PATCH, fieldManager is required for apply requests",
        ));
    }
    let patch_document = decode_body(content_type, body)?;
    // kube retries patches internally on conflict unless the patch itself carries a
    // resourceVersion precondition.
    for _ in 0..10 {
        let current = match state.store.get(info, namespace.unwrap_or(""), name) {
            Ok(current) => from_storage(info, version, current)?,
            Err(error) if error.code == 404 && apply && target == WriteTarget::Main => {
                // Server-side apply creates a missing object.
                let mut object = patch_document.clone();
                object["metadata"]["name"] = json!(name);
                stamp_namespace(info, namespace, &mut object)?;
                admit(info, version, &mut object)?;
                let stored = state
                    .store
                    .create(info, to_storage(info, version, object)?)?;
                return Ok(Reply::Json(
                    StatusCode::CREATED,
                    from_storage(info, version, stored)?,
                ));
            }
            Err(error) => return Err(error),
        };
        let mut patched = match content_type {
            "application/json-patch+json" => {
                patch::json_patch(&current, &patch_document).map_err(patch_error)?
            }
            "application/merge-patch+json" | "application/apply-patch+yaml" => {
                // Server-side apply is approximated by a merge of the applied
                // configuration (see testbed README: no managed-fields ownership).
                patch::merge_patch(&current, &patch_document)
            }
            "application/strategic-merge-patch+json" => {
                if info.custom {
                    return Err(ApiError::unsupported_media_type(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    ));
                }
                patch::strategic_merge_patch(&current, &patch_document, &info.kind)
                    .map_err(patch_error)?
            }
            other => {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"
                )));
            }
        };
        let precondition = patched["metadata"]["resourceVersion"]
            != current["metadata"]["resourceVersion"]
            || patch_document["metadata"]["resourceVersion"].is_string();
        // Identity comes from the URL, whatever the patch says.
        patched["metadata"]["name"] = json!(name);
        if let Some(namespace) = namespace {
            patched["metadata"]["namespace"] = json!(namespace);
        }
        admit(info, version, &mut patched)?;
        match state
            .store
            .update(info, to_storage(info, version, patched)?, target, false)
        {
            Ok(stored) => {
                return Ok(Reply::Json(
                    StatusCode::OK,
                    from_storage(info, version, stored)?,
                ));
            }
            Err(error) if error.code == 409 && error.reason == "Conflict" && !precondition => {
                continue;
            }
            Err(error) => return Err(error),
        }
    }
    Err(ApiError::stale(&info.qualified_plural(), name))
}

fn patch_error(error: patch::PatchError) -> ApiError {
    ApiError {
        code: error.status_code(),
        reason: error.reason(),
        message: error.status_message(),
        details: None,
        retry_after: None,
    }
}

/// Label, field and namespace filtering for list and watch.
struct Filter {
    namespace: Option<String>,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
    /// How fields are read: the builtin plural, or a custom resource's shape.
    builtin: Option<String>,
    namespaced: bool,
    selectable_fields: Vec<String>,
}

impl Filter {
    fn from_query(
        info: &ResourceInfo,
        version: &str,
        query: &HashMap<String, String>,
    ) -> Result<Self, ApiError> {
        let labels = match query.get("labelSelector").filter(|s| !s.is_empty()) {
            Some(text) => {
                Some(LabelSelector::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))?)
            }
            None => None,
        };
        let mut filter = Self {
            namespace: None,
            labels,
            fields: None,
            builtin: (!info.custom).then(|| info.plural.clone()),
            namespaced: info.namespaced,
            selectable_fields: info
                .version(version)
                .map(|v| v.selectable_fields.clone())
                .unwrap_or_default(),
        };
        if let Some(text) = query.get("fieldSelector").filter(|s| !s.is_empty()) {
            let selector =
                FieldSelector::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let resolved = selector
                .resolve(&filter.target())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            filter.fields = Some(resolved);
        }
        Ok(filter)
    }

    fn target(&self) -> FieldSelectorTarget<'_> {
        match &self.builtin {
            Some(plural) => FieldSelectorTarget::Builtin(plural),
            None => FieldSelectorTarget::Custom {
                namespaced: self.namespaced,
                selectable_fields: &self.selectable_fields,
            },
        }
    }

    fn with_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    fn matches(&self, object: &Value) -> bool {
        if let Some(namespace) = &self.namespace
            && object["metadata"]["namespace"].as_str() != Some(namespace.as_str())
        {
            return false;
        }
        if let Some(labels) = &self.labels
            && !labels.matches_object(object)
        {
            return false;
        }
        if let Some(fields) = &self.fields
            && !fields.matches_object(&self.target(), object)
        {
            return false;
        }
        true
    }
}

fn encode_continue(rv: u64, after: &str) -> String {
    json!({"rv": rv, "start": after})
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Option<(u64, String)> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
        .collect();
    let value: Value = serde_json::from_slice(&bytes?).ok()?;
    Some((value["rv"].as_u64()?, value["start"].as_str()?.to_string()))
}

fn object_key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn list(
    state: &Arc<ApiState>,
    info: &ResourceInfo,
    version: &str,
    namespace: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
    let filter = Filter::from_query(info, version, query)?;
    let (items, rv) = state.store.list(info, namespace);
    let mut matching: Vec<Value> = items
        .into_iter()
        .filter(|item| filter.matches(item))
        .collect();
    let mut list_rv = rv;
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let (token_rv, after) = decode_continue(token)
            .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
        list_rv = token_rv;
        matching.retain(|item| object_key(item) > after);
    }
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if matching.len() > limit {
        let remaining = matching.len() - limit;
        matching.truncate(limit);
        let last = matching.last().map(object_key).unwrap_or_default();
        metadata["continue"] = json!(encode_continue(list_rv, &last));
        metadata["remainingItemCount"] = json!(remaining);
    }
    let items: Result<Vec<Value>, ApiError> = matching
        .into_iter()
        .map(|item| from_storage(info, version, item))
        .collect();
    Ok(Reply::Json(
        StatusCode::OK,
        json!({
            "kind": info.list_kind,
            "apiVersion": info.api_version(version),
            "metadata": metadata,
            "items": items?,
        }),
    ))
}

fn watch_event(event_type: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch(
    state: &Arc<ApiState>,
    info: Arc<ResourceInfo>,
    version: String,
    namespace: Option<String>,
    query: &HashMap<String, String>,
    account: Account,
) -> Result<Reply, ApiError> {
    let filter = Filter::from_query(&info, &version, query)?.with_namespace(namespace);
    let flag = |key: &str| matches!(query.get(key).map(String::as_str), Some("true") | Some("1"));
    let bookmarks = flag("allowWatchBookmarks");
    let send_initial = flag("sendInitialEvents");
    let requested_rv = query.get("resourceVersion").cloned().unwrap_or_default();
    if send_initial
        && (query.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan")
            || !bookmarks)
    {
        return Err(ApiError::invalid(
            &info.kind,
            &info.group,
            "",
            vec![(
                "sendInitialEvents".into(),
                "FieldValueForbidden".into(),
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks".into(),
            )],
        ));
    }
    let start = if send_initial || requested_rv.is_empty() || requested_rv == "0" {
        WatchStart::Current
    } else {
        WatchStart::After(requested_rv.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid resource version: {requested_rv}"))
        })?)
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let (sender, receiver) = mpsc::channel::<Bytes>(1024);
    let subscription = match start {
        // An injected expiry: as if the watch cache had moved past the resourceVersion.
        WatchStart::After(rv)
            if state
                .faults
                .check_rewatch(&account.resource, &account.user_agent) =>
        {
            Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                state.store.current_rv() + 1
            )))
        }
        _ => state.store.watch(&info, start),
    };
    let mut drops = state.faults.watch_drops();
    let bookmark_interval = state.bookmark_interval;
    let open = account
        .accounting
        .watch_opened(&account.resource, &account.user_agent);
    tokio::spawn(async move {
        // Open for as long as this task streams.
        let _open = open;
        let send = |bytes: Bytes| {
            account.bytes(bytes.len() as u64);
            sender.send(bytes)
        };
        let mut subscription = match subscription {
            Ok(subscription) => subscription,
            Err(error) => {
                // The watch cache reports an expired resourceVersion in the stream.
                let _ = send(watch_event("ERROR", &error.to_status())).await;
                return;
            }
        };
        let convert =
            |object: Value| from_storage(&info, &version, object).unwrap_or_else(|e| e.to_status());
        for object in std::mem::take(&mut subscription.initial) {
            if filter.matches(&object)
                && send(watch_event("ADDED", &convert(object))).await.is_err()
            {
                return;
            }
        }
        let bookmark = |rv: u64, initial_end: bool| {
            let mut metadata = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            watch_event(
                "BOOKMARK",
                &json!({"kind": info.kind, "apiVersion": info.api_version(&version), "metadata": metadata}),
            )
        };
        let mut progress = match start {
            WatchStart::Current => subscription.start_rv,
            WatchStart::After(rv) => rv,
        };
        if send_initial && send(bookmark(subscription.start_rv, true)).await.is_err() {
            return;
        }
        for change in std::mem::take(&mut subscription.backlog) {
            progress = progress.max(change.rv);
            if let Some(line) = event_for(&change, &filter, &convert)
                && send(line).await.is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                received = subscription.live.recv() => match received {
                    Ok(change) => {
                        if change.rv <= progress {
                            continue;
                        }
                        progress = change.rv;
                        if change.key != info.store_key {
                            continue;
                        }
                        if let Some(line) = event_for(&change, &filter, &convert)
                            && send(line).await.is_err()
                        {
                            return;
                        }
                    }
                    // Too slow a consumer: end the watch, as kube does; the client
                    // re-watches from its last resourceVersion.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    if send(bookmark(progress, false)).await.is_err() {
                        return;
                    }
                }
                () = &mut deadline => return,
                _ = drops.changed() => return,
                () = sender.closed() => return,
            }
        }
    });
    let stream = ReceiverStream::new(receiver).map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(Reply::Stream(response))
}

/// The watch event a change produces for a filtered watcher: objects entering the
/// selection are `ADDED`, leaving it `DELETED` (as kube's watch cache does).
fn event_for(change: &Change, filter: &Filter, convert: &impl Fn(Value) -> Value) -> Option<Bytes> {
    let now = filter.matches(&change.object);
    let before = change.previous.as_ref().is_some_and(|p| filter.matches(p));
    let event_type = match change.change {
        ChangeType::Added => now.then_some("ADDED"),
        ChangeType::Modified => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
        ChangeType::Deleted => (now || before).then_some("DELETED"),
    }?;
    Some(watch_event(event_type, &convert(change.object.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_percent_decoded() {
        let query = parse_query("labelSelector=a%3Db%2Cc+in+(x)&watch=1");
        assert_eq!(query["labelSelector"], "a=b,c in (x)");
        assert_eq!(query["watch"], "1");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, "default/web-1");
        assert_eq!(
            decode_continue(&token),
            Some((42, "default/web-1".to_string()))
        );
        assert_eq!(decode_continue("zz"), None);
    }
}
