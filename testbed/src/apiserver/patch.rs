//! The three PATCH flavours kube-apiserver accepts, applied to JSON objects.
//!
//! * JSON merge patch (RFC 7386) and JSON patch (RFC 6902) use the `json-patch` crate.
//! * Strategic merge patch is a port of apimachinery's `strategicpatch` apply path
//!   (`mergeMap`, `mergeSlice`, `normalizeElementOrder`, the `$patch`, `$retainKeys`,
//!   `$deleteFromPrimitiveList/` and `$setElementOrder/` directives) driven by a table
//!   of the `patchStrategy`/`patchMergeKey` struct tags of Kubernetes 1.33 for the core
//!   kinds the daemon touches. Lists without a merge strategy are replaced wholesale,
//!   which notably includes `spec.tolerations`, `spec.taints`, `spec.readinessGates`
//!   and all `status.*containerStatuses` (they are `+listType=atomic` with no patch
//!   strategy in 1.33).
//!
//! Kube quirks kept on purpose: items a patch adds to a merge list are placed *before*
//! the items only the server had (the kubectl-patch documentation shows the same
//! ordering); `$patch: merge` is rejected in maps and lists; errors that apimachinery
//! does not map to an API status surface as HTTP 500.
//!
//! One deliberate deviation: values copied from the patch into places the original did
//! not have are stripped of directives and `null`s (newer apimachinery's
//! `removeDirectives`); 1.33 copies them verbatim and only loses them when decoding into
//! the typed object, so the stored result is the same for valid objects.

use serde_json::{Map, Value};
use thiserror::Error;

use super::schema::go;

/// Why a patch could not be applied. [`PatchError::status_code`] gives the HTTP status
/// kube answers with and [`PatchError::status_message`] the `Status.message`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatchError {
    /// The patch document is malformed for its content type (400 BadRequest).
    #[error("{0}")]
    BadRequest(String),
    /// A JSON patch operation failed, e.g. a `test` or a missing path (422 Invalid).
    /// Kube hides the detail behind a generic message; the detail is kept for logs.
    #[error("{0}")]
    Unprocessable(String),
    /// Strategic merge patch on a kind it is not defined for, such as any custom
    /// resource (415 UnsupportedMediaType).
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )]
    StrategicMergeUnsupported {
        /// The kind that was patched.
        kind: String,
    },
    /// A strategic merge patch error apimachinery returns as a plain error, which the
    /// apiserver turns into a 500 with an empty reason (e.g. a missing merge key).
    #[error("{0}")]
    Failed(String),
}

impl PatchError {
    /// The HTTP status code kube-apiserver responds with.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::BadRequest(_) => 400,
            PatchError::Unprocessable(_) => 422,
            PatchError::StrategicMergeUnsupported { .. } => 415,
            PatchError::Failed(_) => 500,
        }
    }

    /// The `Status.reason` kube sets (`""` is `StatusReasonUnknown`).
    pub fn reason(&self) -> &'static str {
        match self {
            PatchError::BadRequest(_) => "BadRequest",
            PatchError::Unprocessable(_) => "Invalid",
            PatchError::StrategicMergeUnsupported { .. } => "UnsupportedMediaType",
            PatchError::Failed(_) => "",
        }
    }

    /// The `Status.message` kube returns. JSON patch failures come back through
    /// `NewGenericServerResponse`, which replaces the detail with a fixed sentence.
    pub fn status_message(&self) -> String {
        match self {
            PatchError::Unprocessable(_) => {
                "the server rejected our request due to an error in our request".to_string()
            }
            other => other.to_string(),
        }
    }
}

/// Applies a JSON merge patch (RFC 7386): objects merge recursively, `null` deletes a
/// key, everything else (including arrays) replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut result = target.clone();
    json_patch::merge(&mut result, patch);
    result
}

/// Applies a JSON patch (RFC 6902, including `test`). A body that is not a list of
/// operations is a 400; an operation that fails is a 422. Either all operations apply
/// or none.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::BadRequest(format!("invalid JSON patch: {e}")))?;
    let mut result = target.clone();
    json_patch::patch(&mut result, &operations)
        .map_err(|e| PatchError::Unprocessable(e.to_string()))?;
    Ok(result)
}

/// Kinds whose strategic-merge metadata this module knows. Kube accepts strategic merge
/// patch for every built-in kind and for no custom resource.
pub const STRATEGIC_MERGE_KINDS: &[&str] = &[
    "Pod",
    "Node",
    "Secret",
    "ConfigMap",
    "Namespace",
    "Event",
    "Lease",
];

/// Whether [`strategic_merge_patch`] accepts `kind`.
pub fn supports_strategic_merge(kind: &str) -> bool {
    STRATEGIC_MERGE_KINDS.contains(&kind)
}

/// Applies a strategic merge patch to an object of `kind` the way kube-apiserver does
/// (`StrategicMergeMapPatch` with `MergeParallelList` and `IgnoreUnmatchedNulls`).
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    kind: &str,
) -> Result<Value, PatchError> {
    let root = match kind {
        "Pod" => Ty::Pod,
        "Node" => Ty::Node,
        k if supports_strategic_merge(k) => Ty::OtherRoot,
        _ => {
            return Err(PatchError::StrategicMergeUnsupported {
                kind: kind.to_string(),
            });
        }
    };
    let Value::Object(patch) = patch else {
        return Err(PatchError::BadRequest(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(patch)
        )));
    };
    let original = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    merge_map(original, patch.clone(), root).map(Value::Object)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---------------------------------------------------------------------------------------
// Patch metadata (the `patchStrategy`/`patchMergeKey` struct tags).

/// The Go struct a JSON object corresponds to, as far as merge metadata goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// No merge lists below: maps merge, lists are replaced.
    Unknown,
    Pod,
    Node,
    /// Secret, ConfigMap, Namespace, Event, Lease: only `metadata` has merge lists.
    OtherRoot,
    ObjectMeta,
    PodSpec,
    PodStatus,
    Container,
    NodeSpec,
    NodeStatus,
}

#[derive(Debug, Clone, Copy)]
struct FieldMeta {
    /// `patchStrategy:"merge"`; without it lists are replaced.
    merge: bool,
    /// `patchMergeKey`, for lists of objects.
    merge_key: Option<&'static str>,
    /// The element (for lists) or value (for maps) type.
    ty: Ty,
}

fn lookup(ty: Ty, field: &str) -> FieldMeta {
    let plain = |ty| FieldMeta {
        merge: false,
        merge_key: None,
        ty,
    };
    let merge = |key, ty| FieldMeta {
        merge: true,
        merge_key: key,
        ty,
    };
    match (ty, field) {
        (Ty::Pod | Ty::Node | Ty::OtherRoot, "metadata") => plain(Ty::ObjectMeta),
        (Ty::Pod, "spec") => plain(Ty::PodSpec),
        (Ty::Pod, "status") => plain(Ty::PodStatus),
        (Ty::Node, "spec") => plain(Ty::NodeSpec),
        (Ty::Node, "status") => plain(Ty::NodeStatus),
        (Ty::ObjectMeta, "finalizers") => merge(None, Ty::Unknown),
        (Ty::ObjectMeta, "ownerReferences") => merge(Some("uid"), Ty::Unknown),
        (Ty::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
            merge(Some("name"), Ty::Container)
        }
        // `volumes` and `resourceClaims` are "merge,retainKeys"; `$retainKeys` is
        // honoured wherever it appears, so only the merge part matters here.
        (Ty::PodSpec, "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims") => {
            merge(Some("name"), Ty::Unknown)
        }
        (Ty::PodSpec, "hostAliases") => merge(Some("ip"), Ty::Unknown),
        (Ty::PodSpec, "topologySpreadConstraints") => merge(Some("topologyKey"), Ty::Unknown),
        (Ty::Container, "ports") => merge(Some("containerPort"), Ty::Unknown),
        (Ty::Container, "env") => merge(Some("name"), Ty::Unknown),
        (Ty::Container, "volumeMounts") => merge(Some("mountPath"), Ty::Unknown),
        (Ty::Container, "volumeDevices") => merge(Some("devicePath"), Ty::Unknown),
        (Ty::PodStatus, "conditions") => merge(Some("type"), Ty::Unknown),
        (Ty::PodStatus, "podIPs" | "hostIPs") => merge(Some("ip"), Ty::Unknown),
        (Ty::PodStatus, "resourceClaimStatuses") => merge(Some("name"), Ty::Unknown),
        (Ty::NodeSpec, "podCIDRs") => merge(None, Ty::Unknown),
        (Ty::NodeStatus, "conditions" | "addresses") => merge(Some("type"), Ty::Unknown),
        _ => plain(Ty::Unknown),
    }
}

// ---------------------------------------------------------------------------------------
// mergeMap and friends.

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

const BAD_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const BAD_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const BAD_SET_ELEMENT_ORDER: &str = "invalid patch format of setElementOrder list";

type JsonMap = Map<String, Value>;

fn merge_map(mut original: JsonMap, mut patch: JsonMap, ty: Ty) -> Result<JsonMap, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE);
                Ok(clean_map(patch))
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(bad_patch_type(directive, &patch)),
        };
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_orders(&mut original, &mut patch, ty)?;

    for (key, patch_value) in patch {
        let (key, is_delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            (extract_key(&key, DELETE_FROM_PRIMITIVE_LIST)?, true)
        } else {
            (key, false)
        };
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(current) = original.get_mut(&key) else {
            if !is_delete_list && let Some(cleaned) = clean_value(patch_value) {
                original.insert(key, cleaned);
            }
            continue;
        };
        let meta = lookup(ty, &key);
        match (current, patch_value) {
            (Value::Object(current_map), Value::Object(patch_map)) => {
                let merged = merge_map(std::mem::take(current_map), patch_map, meta.ty)?;
                *current_map = merged;
            }
            (Value::Array(current_list), Value::Array(patch_list)) => {
                let merged = merge_slice_handler(
                    std::mem::take(current_list),
                    patch_list,
                    meta,
                    is_delete_list,
                )?;
                *current_list = merged;
            }
            (current, patch_value) => {
                let same_kind = json_kind(current) == json_kind(&patch_value);
                // A type change is skipped for deletion lists; scalars always replace.
                if (same_kind || !is_delete_list)
                    && let Some(cleaned) = clean_value(patch_value)
                {
                    *current = cleaned;
                }
            }
        }
    }
    Ok(original)
}

fn bad_patch_type(directive: &Value, map: &JsonMap) -> PatchError {
    PatchError::Failed(format!(
        "unknown patch type: {} in map: {}",
        go::v(directive),
        go::v(&Value::Object(map.clone()))
    ))
}

fn no_merge_key(map: &JsonMap, key: &str) -> PatchError {
    PatchError::Failed(format!(
        "map: {} does not contain declared merge key: {key}",
        go::v(&Value::Object(map.clone()))
    ))
}

/// `extractKey`: `$prefix/field` gives `field`.
fn extract_key(key: &str, prefix: &str) -> Result<String, PatchError> {
    match key.split_once('/') {
        Some((head, rest)) if head == prefix => Ok(rest.to_string()),
        _ => Err(PatchError::BadRequest(
            if prefix == DELETE_FROM_PRIMITIVE_LIST {
                BAD_PRIMITIVE_LIST
            } else {
                BAD_SET_ELEMENT_ORDER
            }
            .to_string(),
        )),
    }
}

/// `$retainKeys`: every non-null patch key must be listed, and keys of the original
/// that are not listed are cleared.
fn apply_retain_keys(original: &mut JsonMap, patch: &mut JsonMap) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::BadRequest(BAD_RETAIN_KEYS.to_string()));
    };
    let listed = |key: &str| retain.iter().any(|v| v.as_str() == Some(key));
    for (key, value) in patch.iter() {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || key.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !listed(key) {
            return Err(PatchError::BadRequest(BAD_RETAIN_KEYS.to_string()));
        }
    }
    original.retain(|key, _| listed(key));
    Ok(())
}

/// `mergePatchIntoOriginal`: each `$setElementOrder/<field>` is merged together with
/// `<field>` and then orders the result: `$setElementOrder` first, then the patch, then
/// the live list.
fn merge_set_element_orders(
    original: &mut JsonMap,
    patch: &mut JsonMap,
    ty: Ty,
) -> Result<(), PatchError> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive_key in directives {
        let order = patch.remove(&directive_key).expect("key listed");
        let Value::Array(order) = order else {
            return Err(PatchError::Failed(format!(
                "expected a []interface {{}}, but received a {}",
                json_kind(&order)
            )));
        };
        let field = extract_key(&directive_key, SET_ELEMENT_ORDER)?;
        let original_list = match original.get(&field) {
            None => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(other) => return Err(bad_arg_type("[]interface {}", other)),
        };
        let patch_list = match patch.get(&field) {
            None => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(other) => return Err(bad_arg_type("[]interface {}", other)),
        };
        let meta = lookup(ty, &field);
        validate_patch_with_set_order_list(
            patch_list.as_deref().unwrap_or_default(),
            &order,
            meta.merge_key,
        )?;
        let merged = match (&original_list, &patch_list) {
            (Some(current), None) => current.clone(),
            (None, Some(added)) => clean_list(added.clone()),
            (Some(current), Some(added)) => {
                merge_slice_handler(current.clone(), added.clone(), meta, false)?
            }
            (None, None) => continue,
        };
        let (in_order, server_only) = partition(&merged, &order, meta.merge_key)?;
        let original_list = original_list.unwrap_or_default();
        let kind = element_kind(&original_list, patch_list.as_deref().unwrap_or_default())?;
        let ordered = normalize_element_order(
            in_order,
            server_only,
            &order,
            &original_list,
            meta.merge_key,
            kind,
        )?;
        original.insert(field.clone(), Value::Array(ordered));
        patch.remove(&field);
    }
    Ok(())
}

fn bad_arg_type(expected: &str, actual: &Value) -> PatchError {
    PatchError::Failed(format!(
        "expected a {expected}, but received a {}",
        json_kind(actual)
    ))
}

/// `validatePatchWithSetOrderList`: the patch list's order must agree with the
/// `$setElementOrder` list, and every patched item must appear in it.
fn validate_patch_with_set_order_list(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = match merge_key {
        Some(_) => {
            let mut kept = Vec::new();
            for item in patch_list {
                let map = item
                    .as_object()
                    .ok_or_else(|| bad_arg_type("map[string]interface {}", item))?;
                if map.get(DIRECTIVE).and_then(Value::as_str) != Some("delete") {
                    kept.push(item);
                }
            }
            kept
        }
        None => patch_list.iter().collect(),
    };
    let (mut patch_index, mut order_index) = (0, 0);
    while patch_index < non_delete.len() && order_index < order.len() {
        let item = non_delete[patch_index];
        if item.get(DIRECTIVE).is_some() {
            patch_index += 1;
            continue;
        }
        if merge_key_value_equal(item, &order[order_index], merge_key)? {
            patch_index += 1;
        }
        order_index += 1;
    }
    if patch_index < non_delete.len() && order_index >= order.len() {
        return Err(PatchError::Failed(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}\n",
            go::v(&Value::Array(patch_list.to_vec())),
            go::v(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

fn merge_key_value_equal(
    left: &Value,
    right: &Value,
    merge_key: Option<&str>,
) -> Result<bool, PatchError> {
    let Some(key) = merge_key else {
        return Ok(left == right);
    };
    let left = left
        .as_object()
        .ok_or_else(|| bad_arg_type("map[string]interface {}", left))?;
    let right = right
        .as_object()
        .ok_or_else(|| bad_arg_type("map[string]interface {}", right))?;
    let l = left.get(key).ok_or_else(|| no_merge_key(left, key))?;
    let r = right.get(key).ok_or_else(|| no_merge_key(right, key))?;
    Ok(l == r)
}

// ---------------------------------------------------------------------------------------
// mergeSlice.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    Map,
    Scalar,
}

/// `sliceElementType`: all elements must share one JSON type, and lists of lists are
/// refused.
fn element_kind(original: &[Value], patch: &[Value]) -> Result<ElementKind, PatchError> {
    let mut seen: Option<&'static str> = None;
    for item in original.iter().chain(patch) {
        let kind = json_kind(item);
        match seen {
            None if kind == "array" => {
                return Err(PatchError::Unprocessable(
                    "lists of lists are not supported".to_string(),
                ));
            }
            None => seen = Some(kind),
            Some(previous) if previous != kind => {
                return Err(PatchError::Failed(format!(
                    "list element types are not identical: [{} {}]",
                    go::v(&Value::Array(original.to_vec())),
                    go::v(&Value::Array(patch.to_vec()))
                )));
            }
            Some(_) => {}
        }
    }
    match seen {
        None => Err(PatchError::Failed(
            "no elements in any of the given slices".to_string(),
        )),
        Some("object") => Ok(ElementKind::Map),
        Some(_) => Ok(ElementKind::Scalar),
    }
}

fn merge_slice_handler(
    original: Vec<Value>,
    patch: Vec<Value>,
    meta: FieldMeta,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if meta.merge {
        merge_slice(original, patch, meta.merge_key, meta.ty, is_delete_list)
    } else {
        // Without a merge strategy the patch list replaces the live one (even a
        // `$deleteFromPrimitiveList` list, as in kube).
        Ok(clean_list(patch))
    }
}

fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: Option<&str>,
    item_ty: Ty,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let kind = element_kind(&original, &patch)?;
    let (original, patch, merged) = if kind == ElementKind::Scalar {
        if is_delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.contains(v))
                .collect());
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for item in original.iter().chain(&patch) {
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        (original, patch, merged)
    } else {
        let Some(key) = merge_key else {
            return Err(PatchError::Failed(
                "cannot merge lists without merge key for type map".to_string(),
            ));
        };
        let (original, patch) = merge_slice_with_special_elements(original, patch, key)?;
        let merged = merge_slice_without_special_elements(original.clone(), &patch, key, item_ty)?;
        (original, patch, merged)
    };
    let (patch_items, server_only) = partition(&merged, &patch, merge_key)?;
    normalize_element_order(patch_items, server_only, &patch, &original, merge_key, kind)
}

/// `mergeSliceWithSpecialElements`: `{$patch: delete, key: v}` removes matching items,
/// `{$patch: replace}` makes the rest of the patch list the whole list.
fn merge_slice_with_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::new();
    let mut replace = false;
    for item in patch {
        let map = item
            .as_object()
            .ok_or_else(|| bad_arg_type("map[string]interface {}", &item))?;
        let Some(directive) = map.get(DIRECTIVE) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let value = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
                for (index, candidate) in original.iter().enumerate() {
                    if !candidate.is_object() {
                        return Err(PatchError::Failed(format!(
                            "value for key {index} is not a map."
                        )));
                    }
                }
                original.retain(|candidate| candidate.get(key) != Some(value));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(PatchError::Failed(
                    "merging lists cannot yet be specified in the patch".to_string(),
                ));
            }
            _ => return Err(bad_patch_type(directive, map)),
        }
    }
    if replace {
        Ok((clean_list(plain), Vec::new()))
    } else {
        Ok((original, plain))
    }
}

/// `mergeSliceWithoutSpecialElements`: items with a known key merge into the live item,
/// new ones are appended (and later moved by `normalizeElementOrder`).
fn merge_slice_without_special_elements(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    item_ty: Ty,
) -> Result<Vec<Value>, PatchError> {
    for item in patch {
        let map = item
            .as_object()
            .ok_or_else(|| bad_arg_type("map[string]interface {}", item))?;
        let value = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
        let position = find_by_key(&original, key, value)?;
        match position {
            Some(index) => {
                let current = original[index].as_object().cloned().unwrap_or_default();
                original[index] = Value::Object(merge_map(current, map.clone(), item_ty)?);
            }
            None => {
                if let Some(cleaned) = clean_value(item.clone()) {
                    original.push(cleaned);
                }
            }
        }
    }
    Ok(original)
}

/// `findMapInSliceBasedOnKeyValue`.
fn find_by_key(list: &[Value], key: &str, value: &Value) -> Result<Option<usize>, PatchError> {
    for (index, item) in list.iter().enumerate() {
        let Some(map) = item.as_object() else {
            return Err(PatchError::Failed(format!(
                "value for key {index} is not a map."
            )));
        };
        if map.get(key) == Some(value) {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

/// Splits `merged` into items present in `by` (by merge key, or by value for scalars)
/// and the rest.
fn partition(
    merged: &[Value],
    by: &[Value],
    merge_key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut present = Vec::new();
    let mut rest = Vec::new();
    for item in merged {
        let found = match merge_key {
            None => by.contains(item),
            Some(key) => {
                let map = item
                    .as_object()
                    .ok_or_else(|| bad_arg_type("map[string]interface {}", item))?;
                let value = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
                find_by_key(by, key, value)?.is_some()
            }
        };
        if found {
            present.push(item.clone());
        } else {
            rest.push(item.clone());
        }
    }
    Ok((present, rest))
}

/// Position of `item` in `list`, comparing merge-key values for maps (a missing key
/// compares equal to another missing key, as Go's nil == nil).
fn index_of(
    list: &[Value],
    item: &Value,
    merge_key: Option<&str>,
    kind: ElementKind,
) -> Option<usize> {
    let project = |v: &Value| -> Option<Value> {
        match (kind, merge_key) {
            (ElementKind::Map, Some(key)) => v.get(key).cloned(),
            _ => Some(v.clone()),
        }
    };
    let wanted = project(item);
    list.iter()
        .position(|candidate| project(candidate) == wanted)
}

/// `normalizeElementOrder`: sort the patch items by the patch order and the server-only
/// items by the live order, then interleave them.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
    kind: ElementKind,
) -> Result<Vec<Value>, PatchError> {
    let patch_items = normalize_slice_order(patch_items, patch_order, merge_key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, merge_key, kind)?;
    Ok(merge_sorted_slice(
        server_only,
        patch_items,
        server_order,
        merge_key,
        kind,
    ))
}

fn normalize_slice_order(
    mut to_sort: Vec<Value>,
    order: &[Value],
    merge_key: Option<&str>,
    kind: ElementKind,
) -> Result<Vec<Value>, PatchError> {
    let mut to_delete = Vec::new();
    if kind == ElementKind::Map {
        let key = merge_key.unwrap_or_default();
        for item in to_sort.iter().chain(order) {
            let map = item
                .as_object()
                .ok_or_else(|| bad_arg_type("map[string]interface {}", item))?;
            if !map.contains_key(key) {
                return Err(no_merge_key(map, key));
            }
        }
        let (keep, delete): (Vec<Value>, Vec<Value>) = to_sort
            .into_iter()
            .partition(|v| v.get(DIRECTIVE).and_then(Value::as_str) != Some("delete"));
        to_sort = keep;
        to_delete = delete;
    }
    // Go's sort.SliceStable on a small slice is an insertion sort, and its comparator
    // treats items missing from `order` as smaller; an insertion sort reproduces that
    // without needing a total order.
    let less = |a: &Value, b: &Value| match (
        index_of(order, a, merge_key, kind),
        index_of(order, b, merge_key, kind),
    ) {
        (Some(ia), Some(ib)) => ia < ib,
        _ => true,
    };
    for i in 1..to_sort.len() {
        let mut j = i;
        while j > 0 && less(&to_sort[j], &to_sort[j - 1]) {
            to_sort.swap(j, j - 1);
            j -= 1;
        }
    }
    to_sort.extend(to_delete);
    Ok(to_sort)
}

/// `mergeSortedSlice`: a server-only item goes before a patch item only when both are in
/// the live list and it came first there; so patch items that are new to the list end up
/// before the remaining server-only items.
fn merge_sorted_slice(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: Option<&str>,
    kind: ElementKind,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (
                    index_of(server_order, l, merge_key, kind),
                    index_of(server_order, r, merge_key, kind),
                ),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Copying patch values into the result.

/// Strips directives and nulls from a value the patch adds wholesale; `None` when the
/// value itself is a deletion directive.
fn clean_value(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if map.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                return None;
            }
            Some(Value::Object(clean_map(map)))
        }
        Value::Array(items) => Some(Value::Array(clean_list(items))),
        Value::Null => None,
        other => Some(other),
    }
}

fn clean_map(map: JsonMap) -> JsonMap {
    map.into_iter()
        .filter(|(key, _)| {
            key != DIRECTIVE
                && key != RETAIN_KEYS
                && !key.starts_with(SET_ELEMENT_ORDER)
                && !key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
        })
        .filter_map(|(key, value)| clean_value(value).map(|v| (key, v)))
        .collect()
}

fn clean_list(items: Vec<Value>) -> Vec<Value> {
    items
        .into_iter()
        .filter(|item| {
            // A lone `{$patch: replace}` marker carries no item.
            !(item.get(DIRECTIVE).is_some() && item.as_object().is_some_and(|m| m.len() == 1))
        })
        .filter_map(clean_value)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn smp(target: Value, patch: Value, kind: &str) -> Value {
        strategic_merge_patch(&target, &patch, kind).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn merge_patch_null_deletes_and_lists_replace() {
        let target = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        let result = merge_patch(
            &target,
            &json!({"a": null, "b": {"c": null, "e": 4}, "l": [3]}),
        );
        assert_eq!(result, json!({"b": {"d": 3, "e": 4}, "l": [3]}));
    }

    #[test]
    fn merge_patch_removes_crr_active_label() {
        let crr = json!({"metadata": {"labels": {"crr.apps.kruise.io/active": "true", "x": "y"}}});
        let result = merge_patch(
            &crr,
            &json!({"metadata": {"labels": {"crr.apps.kruise.io/active": null}}}),
        );
        assert_eq!(result, json!({"metadata": {"labels": {"x": "y"}}}));
    }

    #[test]
    fn json_patch_applies_operations_and_test() {
        let target = json!({"status": {"phase": "Pending"}});
        let result = json_patch(
            &target,
            &json!([
                {"op": "test", "path": "/status/phase", "value": "Pending"},
                {"op": "replace", "path": "/status/phase", "value": "Recreating"},
                {"op": "add", "path": "/status/message", "value": "m"}
            ]),
        )
        .unwrap();
        assert_eq!(
            result,
            json!({"status": {"phase": "Recreating", "message": "m"}})
        );
    }

    #[test]
    fn json_patch_failed_test_is_422_and_atomic() {
        let target = json!({"status": {"phase": "Pending"}});
        let err = json_patch(
            &target,
            &json!([{"op": "test", "path": "/status/phase", "value": "Done"}]),
        )
        .unwrap_err();
        assert_eq!(err.status_code(), 422);
        assert_eq!(err.reason(), "Invalid");
        assert_eq!(
            err.status_message(),
            "the server rejected our request due to an error in our request"
        );
    }

    #[test]
    fn json_patch_garbage_is_400() {
        let err = json_patch(&json!({}), &json!({"op": "add"})).unwrap_err();
        assert_eq!(err.status_code(), 400);
    }

    #[test]
    fn strategic_merge_on_custom_resource_is_415() {
        let err = strategic_merge_patch(&json!({}), &json!({}), "NodeImage").unwrap_err();
        assert_eq!(err.status_code(), 415);
        assert_eq!(err.reason(), "UnsupportedMediaType");
        assert_eq!(
            err.to_string(),
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        );
    }

    #[test]
    fn containers_merge_by_name() {
        let target = pod(json!({"containers": [
            {"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "busybox"}
        ]}));
        let result = smp(
            target,
            json!({"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}),
            "Pod",
        );
        assert_eq!(
            result["spec"]["containers"],
            json!([
                {"name": "app", "image": "nginx:2", "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "busybox"}
            ])
        );
    }

    #[test]
    fn new_merge_list_items_go_first_like_kube() {
        let target = pod(json!({"containers": [{"name": "patch-demo-ctr", "image": "nginx"}]}));
        let result = smp(
            target,
            json!({"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}}),
            "Pod",
        );
        assert_eq!(
            result["spec"]["containers"],
            json!([
                {"name": "patch-demo-ctr-2", "image": "redis"},
                {"name": "patch-demo-ctr", "image": "nginx"}
            ])
        );
    }

    #[test]
    fn env_ports_and_mounts_merge_by_their_keys() {
        let target = pod(json!({"containers": [{
            "name": "app",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 80, "name": "http"}],
            "volumeMounts": [{"mountPath": "/a", "name": "va"}]
        }]}));
        let result = smp(
            target,
            json!({"spec": {"containers": [{
                "name": "app",
                "env": [{"name": "B", "value": "3"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "volumeMounts": [{"mountPath": "/a", "readOnly": true}]
            }]}}),
            "Pod",
        );
        let app = &result["spec"]["containers"][0];
        assert_eq!(
            app["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}])
        );
        assert_eq!(
            app["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
        );
        assert_eq!(
            app["volumeMounts"],
            json!([{"mountPath": "/a", "name": "va", "readOnly": true}])
        );
    }

    #[test]
    fn tolerations_are_replaced_not_merged() {
        let target = pod(json!({"tolerations": [{"key": "a", "operator": "Exists"}]}));
        let result = smp(
            target,
            json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}),
            "Pod",
        );
        assert_eq!(
            result["spec"]["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
    }

    #[test]
    fn container_statuses_are_replaced_not_merged() {
        let target = json!({"status": {"containerStatuses": [
            {"name": "a", "ready": true}, {"name": "b", "ready": true}
        ]}});
        let result = smp(
            target,
            json!({"status": {"containerStatuses": [{"name": "a", "ready": false}]}}),
            "Pod",
        );
        assert_eq!(
            result["status"]["containerStatuses"],
            json!([{"name": "a", "ready": false}])
        );
    }

    #[test]
    fn pod_conditions_merge_by_type() {
        let target = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "KruisePodReady", "status": "True"}
        ]}});
        let result = smp(
            target,
            json!({"status": {"conditions": [{"type": "KruisePodReady", "status": "False",
                                              "message": "[]"}]}}),
            "Pod",
        );
        assert_eq!(
            result["status"]["conditions"],
            json!([
                {"type": "Ready", "status": "True"},
                {"type": "KruisePodReady", "status": "False", "message": "[]"}
            ])
        );
    }

    #[test]
    fn set_element_order_orders_conditions() {
        let target = json!({"status": {"conditions": [
            {"type": "A", "status": "True"}, {"type": "B", "status": "True"}
        ]}});
        let result = smp(
            target,
            json!({"status": {
                "$setElementOrder/conditions": [{"type": "B"}, {"type": "A"}, {"type": "C"}],
                "conditions": [{"type": "C", "status": "False"}]
            }}),
            "Pod",
        );
        assert_eq!(
            result["status"]["conditions"],
            json!([
                {"type": "B", "status": "True"},
                {"type": "A", "status": "True"},
                {"type": "C", "status": "False"}
            ])
        );
    }

    #[test]
    fn set_element_order_must_agree_with_patch_list() {
        let target = json!({"status": {"conditions": [{"type": "A"}, {"type": "B"}]}});
        let err = strategic_merge_patch(
            &target,
            &json!({"status": {
                "$setElementOrder/conditions": [{"type": "A"}],
                "conditions": [{"type": "B", "status": "x"}]
            }}),
            "Pod",
        )
        .unwrap_err();
        assert_eq!(err.status_code(), 500);
        assert!(err.to_string().starts_with("The order in patch list:"));
    }

    #[test]
    fn delete_directive_removes_list_element() {
        let target = pod(json!({"containers": [{"name": "a"}, {"name": "b"}]}));
        let result = smp(
            target,
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
            "Pod",
        );
        assert_eq!(result["spec"]["containers"], json!([{"name": "b"}]));
    }

    #[test]
    fn replace_directive_in_list_replaces_whole_list() {
        let target = pod(json!({"volumes": [{"name": "a"}, {"name": "b"}]}));
        let result = smp(
            target,
            json!({"spec": {"volumes": [{"$patch": "replace"}, {"name": "c", "emptyDir": {}}]}}),
            "Pod",
        );
        assert_eq!(
            result["spec"]["volumes"],
            json!([{"name": "c", "emptyDir": {}}])
        );
    }

    #[test]
    fn replace_directive_in_map_replaces_the_map() {
        let target = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let result = smp(
            target,
            json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
            "ConfigMap",
        );
        assert_eq!(result["metadata"]["labels"], json!({"c": "3"}));
    }

    #[test]
    fn delete_directive_in_map_empties_it() {
        let target = json!({"data": {"a": "1"}});
        let result = smp(target, json!({"data": {"$patch": "delete"}}), "ConfigMap");
        assert_eq!(result["data"], json!({}));
    }

    #[test]
    fn merge_directive_is_rejected_like_kube() {
        let err = strategic_merge_patch(
            &json!({"data": {"a": "1"}}),
            &json!({"data": {"$patch": "merge", "b": "2"}}),
            "ConfigMap",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown patch type: merge in map: map[$patch:merge b:2]"
        );
        let err = strategic_merge_patch(
            &pod(json!({"containers": [{"name": "a"}]})),
            &json!({"spec": {"containers": [{"$patch": "merge", "name": "a"}]}}),
            "Pod",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "merging lists cannot yet be specified in the patch"
        );
    }

    #[test]
    fn null_deletes_map_keys() {
        let target = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"x": "y"}});
        let result = smp(
            target,
            json!({"metadata": {"labels": {"a": null, "c": null}}}),
            "ConfigMap",
        );
        assert_eq!(result["metadata"]["labels"], json!({"b": "2"}));
    }

    #[test]
    fn finalizers_merge_as_a_set_with_new_items_first() {
        let target = json!({"metadata": {"finalizers": ["a", "b"]}});
        let result = smp(
            target,
            json!({"metadata": {"finalizers": ["b", "c"]}}),
            "Pod",
        );
        assert_eq!(result["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let target = json!({"metadata": {"finalizers": ["a"]}});
        let result = smp(target, json!({"metadata": {"finalizers": ["z"]}}), "Pod");
        assert_eq!(result["metadata"]["finalizers"], json!(["z", "a"]));
    }

    #[test]
    fn delete_from_primitive_list_removes_values() {
        let target = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
        let result = smp(
            target,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            "Pod",
        );
        assert_eq!(result["metadata"]["finalizers"], json!(["a", "c"]));
    }

    #[test]
    fn delete_from_primitive_list_on_missing_list_does_nothing() {
        let target = json!({"metadata": {"name": "x"}});
        let result = smp(
            target.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            "Pod",
        );
        assert_eq!(result, target);
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let target = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}});
        let result = smp(
            target,
            json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}]}}),
            "Node",
        );
        assert_eq!(
            result["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "a", "controller": true}])
        );
    }

    #[test]
    fn node_addresses_and_conditions_merge_by_type_but_taints_replace() {
        let target = json!({
            "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                     {"type": "Hostname", "address": "n1"}]}
        });
        let result = smp(
            target,
            json!({
                "spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}
            }),
            "Node",
        );
        assert_eq!(
            result["spec"]["taints"],
            json!([{"key": "b", "effect": "NoSchedule"}])
        );
        assert_eq!(
            result["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.2"},
                   {"type": "Hostname", "address": "n1"}])
        );
    }

    #[test]
    fn pod_ips_merge_by_ip() {
        let target = json!({"status": {"podIPs": [{"ip": "10.0.0.1"}]}});
        let result = smp(
            target,
            json!({"status": {"podIPs": [{"ip": "fd00::1"}]}}),
            "Pod",
        );
        assert_eq!(
            result["status"]["podIPs"],
            json!([{"ip": "fd00::1"}, {"ip": "10.0.0.1"}])
        );
    }

    #[test]
    fn retain_keys_clears_unlisted_fields() {
        let target = pod(json!({"volumes": [{"name": "v", "hostPath": {"path": "/x"}}]}));
        let result = smp(
            target,
            json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "emptyDir"],
                                         "emptyDir": {}}]}}),
            "Pod",
        );
        assert_eq!(
            result["spec"]["volumes"],
            json!([{"name": "v", "emptyDir": {}}])
        );
    }

    #[test]
    fn retain_keys_must_cover_the_patch() {
        let err = strategic_merge_patch(
            &json!({"data": {"a": "1"}}),
            &json!({"data": {"$retainKeys": ["a"], "b": "2"}}),
            "ConfigMap",
        )
        .unwrap_err();
        assert_eq!(err.status_code(), 400);
        assert_eq!(err.to_string(), "invalid patch format of retainKeys");
    }

    #[test]
    fn missing_merge_key_fails_like_kube() {
        let err = strategic_merge_patch(
            &pod(json!({"containers": [{"name": "a"}]})),
            &json!({"spec": {"containers": [{"image": "x"}]}}),
            "Pod",
        )
        .unwrap_err();
        assert_eq!(err.status_code(), 500);
        assert_eq!(
            err.to_string(),
            "map: map[image:x] does not contain declared merge key: name"
        );
    }

    #[test]
    fn new_subtrees_lose_directives_and_nulls() {
        let target = json!({"metadata": {"name": "x"}});
        let result = smp(
            target,
            json!({"spec": {"containers": [{"name": "a", "image": null},
                                           {"name": "b", "$patch": "delete"}]}}),
            "Pod",
        );
        assert_eq!(result["spec"], json!({"containers": [{"name": "a"}]}));
    }

    #[test]
    fn secret_data_merges_key_wise() {
        let target = json!({"data": {"a": "MQ==", "b": "Mg=="}, "type": "Opaque"});
        let result = smp(target, json!({"data": {"b": null, "c": "Mw=="}}), "Secret");
        assert_eq!(result["data"], json!({"a": "MQ==", "c": "Mw=="}));
    }

    #[test]
    fn non_object_patch_is_400() {
        let err = strategic_merge_patch(&json!({}), &json!([1]), "Pod").unwrap_err();
        assert_eq!(err.status_code(), 400);
    }
}
