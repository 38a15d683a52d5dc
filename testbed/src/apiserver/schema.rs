//! CRD structural-schema handling as kube-apiserver does it: pruning of unknown fields,
//! defaulting, and validation with kube's exact error wording.
//!
//! The behaviour follows `k8s.io/apiextensions-apiserver` (pruning, defaulting, list-type
//! checks, `kubeOpenAPIResultToFieldErrors`) and `k8s.io/kube-openapi/pkg/validation`
//! (the validators and their messages) as of Kubernetes 1.33. Where kube's own output
//! is quirky we copy the quirk on purpose, because the point of the test bed is that a
//! client sees what it would see on a real cluster:
//!
//! * `format: int32` / `int64` are *not* range-checked: apiextensions strips every
//!   format that is not in its supported list (ints are not in it) before validating.
//! * errors raised outside a field validator (the `anyOf` summary) carry the path
//!   `<nil>`, exactly as kube renders a nil `field.Path`.
//! * openapi errors name map entries with dots (`spec.images.nginx.tags`) while the
//!   list-type checks use `field.Path` syntax (`spec.images[nginx].tags[1]`).
//! * properties are validated in schema order; kube iterates a Go map, so its order is
//!   random and any order is faithful.

use std::fmt;

use regex::Regex;
use serde_json::{Map, Value};

/// What kind of problem a [`FieldError`] reports; mirrors apimachinery's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    /// A referenced value does not exist (`FieldValueNotFound`).
    NotFound,
    /// A required value is missing (`FieldValueRequired`).
    Required,
    /// A value that must be unique appears twice (`FieldValueDuplicate`).
    Duplicate,
    /// A value is malformed or out of bounds (`FieldValueInvalid`).
    Invalid,
    /// A value is not one of an enumeration (`FieldValueNotSupported`).
    NotSupported,
    /// A value is not allowed in this context (`FieldValueForbidden`).
    Forbidden,
    /// A string is too long (`FieldValueTooLong`); the value itself is never printed.
    TooLong,
    /// A list has too many items (`FieldValueTooMany`).
    TooMany,
    /// Something went wrong that is not the caller's fault (`InternalError`).
    Internal,
    /// A value does not have the schema's type (`FieldValueTypeInvalid`).
    TypeInvalid,
}

impl FieldErrorKind {
    /// The machine-readable cause type used in `Status.details.causes[].reason`.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::NotFound => "FieldValueNotFound",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Internal => "InternalError",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The human wording kube prints, e.g. `Required value`.
    pub fn description(self) -> &'static str {
        match self {
            FieldErrorKind::NotFound => "Not found",
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Invalid | FieldErrorKind::TypeInvalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::Internal => "Internal error",
        }
    }
}

/// One field-level validation error, rendered like apimachinery's `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field path as kube prints it, e.g. `spec.containers[0].name`; `<nil>` when
    /// kube reports the error without a path.
    pub path: String,
    /// What went wrong.
    pub kind: FieldErrorKind,
    /// The offending value; `None` when kube omits it from the message.
    pub value: Option<Value>,
    /// The detail appended after the value, e.g. `supported values: "A", "B"`.
    pub detail: String,
}

impl FieldError {
    /// Builds an error of any kind.
    pub fn new(
        path: impl Into<String>,
        kind: FieldErrorKind,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            path: path.into(),
            kind,
            value,
            detail: detail.into(),
        }
    }

    /// `field.Required(path, detail)`.
    pub fn required(path: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError::new(path, FieldErrorKind::Required, None, detail)
    }

    /// `field.Invalid(path, value, detail)`.
    pub fn invalid(path: impl Into<String>, value: Value, detail: impl Into<String>) -> FieldError {
        FieldError::new(path, FieldErrorKind::Invalid, Some(value), detail)
    }

    /// `field.NotSupported(path, value, supported)`, detail `supported values: "A", "B"`.
    pub fn not_supported(
        path: impl Into<String>,
        value: Value,
        supported: &[String],
    ) -> FieldError {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go::quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        FieldError::new(path, FieldErrorKind::NotSupported, Some(value), detail)
    }

    /// The message without the field name (`ErrorBody()` in Go), as used in
    /// `Status.details.causes[].message`.
    pub fn message(&self) -> String {
        let mut body = match (self.kind, &self.value) {
            (
                FieldErrorKind::Required
                | FieldErrorKind::Forbidden
                | FieldErrorKind::TooLong
                | FieldErrorKind::Internal,
                _,
            )
            | (_, None) => self.kind.description().to_string(),
            (_, Some(value)) => format!("{}: {}", self.kind.description(), go::error_value(value)),
        };
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }

    /// The entry for `Status.details.causes`.
    pub fn cause(&self) -> Value {
        serde_json::json!({
            "reason": self.kind.reason(),
            "message": self.message(),
            "field": self.path,
        })
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message())
    }
}

/// Joins messages like apimachinery's `utilerrors.Aggregate`: duplicates are dropped,
/// one message is printed bare and several are wrapped in `[a, b]`.
pub fn aggregate(messages: impl IntoIterator<Item = String>) -> String {
    let mut seen = Vec::<String>::new();
    for message in messages {
        if !seen.contains(&message) {
            seen.push(message);
        }
    }
    match seen.len() {
        0 => String::new(),
        1 => seen.remove(0),
        _ => format!("[{}]", seen.join(", ")),
    }
}

/// The 422 message kube returns for an invalid object, e.g.
/// `ContainerRecreateRequest.apps.kruise.io "crr-1" is invalid: spec.podName: Required value`
/// (several errors are bracketed and comma-separated).
pub fn invalid_message(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> String {
    let qualified_kind = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let aggregated = aggregate(errors.iter().map(ToString::to_string));
    if aggregated.is_empty() {
        format!("{qualified_kind} {} is invalid", go::quote(name))
    } else {
        format!(
            "{qualified_kind} {} is invalid: {aggregated}",
            go::quote(name)
        )
    }
}

/// The whole 422 `Status` object kube returns for an invalid object (`errors.NewInvalid`).
pub fn invalid_status(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": invalid_message(kind, group, name, errors),
        "reason": "Invalid",
        "details": {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": errors.iter().map(FieldError::cause).collect::<Vec<_>>(),
        },
        "code": 422,
    })
}

/// Returns the `openAPIV3Schema` of one version of a CustomResourceDefinition, if the
/// CRD declares that version with a schema.
pub fn crd_version_schema<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))?
        .pointer("/schema/openAPIV3Schema")
}

/// Drops fields unknown to `schema` from `object`, like kube-apiserver does on every
/// write and read of a custom resource. See [`StructuralSchema::prune`].
pub fn prune(schema: &Value, object: &mut Value) {
    StructuralSchema::new(schema).prune(object);
}

/// Validates `object` against `schema` like kube-apiserver on create. See
/// [`StructuralSchema::validate`].
pub fn validate(schema: &Value, object: &Value) -> Vec<FieldError> {
    StructuralSchema::new(schema).validate(object)
}

/// Fills `default`s from `schema` into `object`. See [`StructuralSchema::apply_defaults`].
pub fn apply_defaults(schema: &Value, object: &mut Value) {
    StructuralSchema::new(schema).apply_defaults(object);
}

/// A compiled `openAPIV3Schema`: parse once, then prune, default and validate many
/// objects. Regular expressions in `pattern` are compiled here.
#[derive(Debug, Clone)]
pub struct StructuralSchema {
    root: Node,
}

impl StructuralSchema {
    /// Compiles a schema. Never fails: an unparseable `pattern` is kept and reported on
    /// every validated string, the way kube-openapi reports it.
    pub fn new(open_api_v3_schema: &Value) -> StructuralSchema {
        StructuralSchema {
            root: Node::compile(open_api_v3_schema),
        }
    }

    /// Drops unknown fields and non-nullable `null`s (without a default), like the
    /// apiextensions decoder (`PruneWithOptions` then
    /// `PruneNonNullableNullsWithoutDefaults`). The root is treated as an embedded
    /// resource, so `apiVersion`, `kind` and `metadata` survive; `metadata` itself is
    /// left to the server. Subtrees under `x-kubernetes-preserve-unknown-fields: true`
    /// keep unknown fields, but their declared properties are still pruned.
    pub fn prune(&self, object: &mut Value) {
        prune_node(object, Some(&self.root), true);
        prune_nulls(object, &self.root);
    }

    /// Applies `default` values: a missing property, or a `null` where the schema is not
    /// nullable, takes a deep copy of its default; defaulting then continues inside.
    pub fn apply_defaults(&self, object: &mut Value) {
        apply_defaults_node(object, &self.root);
    }

    /// Validates like kube-apiserver on create: schema (kube-openapi) errors first, then
    /// the `x-kubernetes-list-type` uniqueness checks.
    pub fn validate(&self, object: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        validate_node(&self.root, object, None, "", &mut errors);
        list_type_errors(&self.root, object, &FieldPath::root(), &mut errors);
        errors
    }

    /// Validates an update with kube's validation ratcheting (CRDValidationRatcheting,
    /// on by default since 1.30): a value that is unchanged from `old` at the same path
    /// is not re-validated, so objects that became invalid through a schema change can
    /// still be updated elsewhere. Object properties correlate by name; list items only
    /// in `x-kubernetes-list-type: map` lists (by their keys). List-type checks are not
    /// ratcheted.
    pub fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        validate_node(&self.root, new, Some(old), "", &mut errors);
        list_type_errors(&self.root, new, &FieldPath::root(), &mut errors);
        errors
    }
}

// ---------------------------------------------------------------------------------------
// Compiled schema nodes.

/// Formats apiextensions keeps (`supportedVersionedFormats` in formats.go), compared
/// after removing dashes like go-openapi does. Everything else is stripped before
/// validation, which is why `int32` limits are never enforced.
const SUPPORTED_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
];

#[derive(Debug, Clone)]
enum AdditionalProperties {
    Allowed(bool),
    Schema(Box<Node>),
}

#[derive(Debug, Clone)]
struct Pattern {
    source: String,
    compiled: Result<Regex, String>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    types: Vec<String>,
    nullable: bool,
    /// The format as written (for messages) when apiextensions keeps it.
    format: Option<String>,
    properties: Vec<(String, Node)>,
    required: Vec<String>,
    additional_properties: Option<AdditionalProperties>,
    items: Option<Box<Node>>,
    enum_values: Option<Vec<Value>>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: bool,
    exclusive_maximum: bool,
    multiple_of: Option<f64>,
    min_length: Option<i64>,
    max_length: Option<i64>,
    pattern: Option<Pattern>,
    min_items: Option<i64>,
    max_items: Option<i64>,
    unique_items: bool,
    min_properties: Option<i64>,
    max_properties: Option<i64>,
    preserve_unknown_fields: bool,
    embedded_resource: bool,
    list_type: Option<String>,
    list_map_keys: Vec<String>,
    default: Option<Value>,
    any_of: Vec<Node>,
    all_of: Vec<Node>,
    one_of: Vec<Node>,
    not: Option<Box<Node>>,
}

impl Node {
    fn compile(schema: &Value) -> Node {
        let get = |key: &str| schema.get(key);
        let as_f64 = |key: &str| get(key).and_then(Value::as_f64);
        let as_i64 = |key: &str| get(key).and_then(Value::as_i64);
        let as_bool = |key: &str| get(key).and_then(Value::as_bool).unwrap_or(false);
        let compile_list = |key: &str| -> Vec<Node> {
            get(key)
                .and_then(Value::as_array)
                .map(|list| list.iter().map(Node::compile).collect())
                .unwrap_or_default()
        };

        let int_or_string = as_bool("x-kubernetes-int-or-string");
        let types = if int_or_string {
            // apiextensions turns the extension into `type: [integer, string]`.
            vec!["integer".to_string(), "string".to_string()]
        } else {
            get("type")
                .and_then(Value::as_str)
                .map(|t| vec![t.to_string()])
                .unwrap_or_default()
        };
        let format = get("format")
            .and_then(Value::as_str)
            .filter(|f| SUPPORTED_FORMATS.contains(&f.replace('-', "").as_str()))
            .map(str::to_string);
        let properties = get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .map(|(name, sub)| (name.clone(), Node::compile(sub)))
                    .collect()
            })
            .unwrap_or_default();
        let additional_properties = match get("additionalProperties") {
            Some(Value::Bool(allowed)) => Some(AdditionalProperties::Allowed(*allowed)),
            Some(sub @ Value::Object(_)) => {
                Some(AdditionalProperties::Schema(Box::new(Node::compile(sub))))
            }
            _ => None,
        };
        let strings = |key: &str| -> Vec<String> {
            get(key)
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        Node {
            types,
            nullable: as_bool("nullable"),
            format,
            properties,
            required: strings("required"),
            additional_properties,
            items: get("items")
                .filter(|i| i.is_object())
                .map(|i| Box::new(Node::compile(i))),
            enum_values: get("enum").and_then(Value::as_array).cloned(),
            minimum: as_f64("minimum"),
            maximum: as_f64("maximum"),
            exclusive_minimum: as_bool("exclusiveMinimum"),
            exclusive_maximum: as_bool("exclusiveMaximum"),
            multiple_of: as_f64("multipleOf"),
            min_length: as_i64("minLength"),
            max_length: as_i64("maxLength"),
            pattern: get("pattern").and_then(Value::as_str).map(|p| Pattern {
                source: p.to_string(),
                compiled: Regex::new(p).map_err(|e| e.to_string()),
            }),
            min_items: as_i64("minItems"),
            max_items: as_i64("maxItems"),
            unique_items: as_bool("uniqueItems"),
            min_properties: as_i64("minProperties"),
            max_properties: as_i64("maxProperties"),
            preserve_unknown_fields: as_bool("x-kubernetes-preserve-unknown-fields"),
            embedded_resource: as_bool("x-kubernetes-embedded-resource"),
            list_type: get("x-kubernetes-list-type")
                .and_then(Value::as_str)
                .map(str::to_string),
            list_map_keys: strings("x-kubernetes-list-map-keys"),
            default: get("default").cloned(),
            any_of: compile_list("anyOf"),
            all_of: compile_list("allOf"),
            one_of: compile_list("oneOf"),
            not: get("not").map(|n| Box::new(Node::compile(n))),
        }
    }

    fn property(&self, name: &str) -> Option<&Node> {
        self.properties
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, node)| node)
    }

    fn additional_schema(&self) -> Option<&Node> {
        match &self.additional_properties {
            Some(AdditionalProperties::Schema(node)) => Some(node),
            _ => None,
        }
    }

    fn has_type(&self, name: &str) -> bool {
        self.types.iter().any(|t| t == name)
    }
}

// ---------------------------------------------------------------------------------------
// Pruning.

fn prune_node(value: &mut Value, schema: Option<&Node>, is_resource_root: bool) {
    if let Some(node) = schema
        && node.preserve_unknown_fields
    {
        skip_prune(value, node, is_resource_root);
        return;
    }
    match value {
        Value::Object(map) => {
            let Some(node) = schema else {
                map.clear();
                return;
            };
            // The resource root behaves as an embedded resource (PruneWithOptions).
            let embedded = node.embedded_resource || is_resource_root;
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if embedded && keeps_embedded_meta(&key, &map[&key]) {
                    continue;
                }
                if let Some(prop) = node.property(&key) {
                    prune_node(map.get_mut(&key).expect("key listed"), Some(prop), false);
                } else if let Some(additional) = &node.additional_properties {
                    let sub = match additional {
                        AdditionalProperties::Schema(sub) => Some(sub.as_ref()),
                        // `additionalProperties: true` is not structural; keep entries.
                        AdditionalProperties::Allowed(true) => continue,
                        AdditionalProperties::Allowed(false) => None,
                    };
                    prune_node(map.get_mut(&key).expect("key listed"), sub, false);
                } else {
                    map.remove(&key);
                }
            }
        }
        Value::Array(items) => {
            let item_schema = schema.and_then(|node| node.items.as_deref());
            for item in items {
                prune_node(item, item_schema, false);
            }
        }
        _ => {}
    }
}

/// Walks a `x-kubernetes-preserve-unknown-fields` subtree: unknown keys stay, declared
/// properties and additional properties are pruned normally (`skipPrune` in kube).
fn skip_prune(value: &mut Value, node: &Node, is_resource_root: bool) {
    match value {
        Value::Object(map) => {
            let embedded = node.embedded_resource || is_resource_root;
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if embedded && keeps_embedded_meta(&key, &map[&key]) {
                    continue;
                }
                let child = map.get_mut(&key).expect("key listed");
                if let Some(prop) = node.property(&key) {
                    prune_node(child, Some(prop), false);
                } else if let Some(sub) = node.additional_schema() {
                    prune_node(child, Some(sub), false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = node.items.as_deref() {
                for item in items {
                    skip_prune(item, item_schema, false);
                }
            }
        }
        _ => {}
    }
}

/// Embedded resources keep `apiVersion`/`kind` strings and a `metadata` object.
fn keeps_embedded_meta(key: &str, value: &Value) -> bool {
    match key {
        "apiVersion" | "kind" => value.is_string(),
        "metadata" => value.is_object(),
        _ => false,
    }
}

/// `PruneNonNullableNullsWithoutDefaults`: a `null` property whose schema is neither
/// nullable nor defaulted is removed, so it reads as absent (and `required` catches it).
fn prune_nulls(value: &mut Value, node: &Node) {
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let sub = node.property(&key).or_else(|| node.additional_schema());
                let Some(sub) = sub else { continue };
                if map[&key].is_null() && sub.default.is_none() && !sub.nullable {
                    map.remove(&key);
                } else {
                    prune_nulls(map.get_mut(&key).expect("key listed"), sub);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = node.items.as_deref() {
                for item in items {
                    prune_nulls(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Defaulting.

fn apply_defaults_node(value: &mut Value, node: &Node) {
    match value {
        Value::Object(map) => {
            for (key, prop) in &node.properties {
                let Some(default) = &prop.default else {
                    continue;
                };
                let missing = match map.get(key) {
                    None => true,
                    Some(Value::Null) => !prop.nullable,
                    Some(_) => false,
                };
                if missing {
                    map.insert(key.clone(), default.clone());
                }
            }
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child = map.get_mut(&key).expect("key listed");
                if let Some(prop) = node.property(&key) {
                    apply_defaults_node(child, prop);
                } else if let Some(sub) = node.additional_schema() {
                    if child.is_null()
                        && !sub.nullable
                        && let Some(default) = &sub.default
                    {
                        *child = default.clone();
                    }
                    apply_defaults_node(child, sub);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = node.items.as_deref() {
                for item in items {
                    if item.is_null()
                        && !item_schema.nullable
                        && let Some(default) = &item_schema.default
                    {
                        *item = default.clone();
                    }
                    apply_defaults_node(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Validation (kube-openapi SchemaValidator + kubeOpenAPIResultToFieldErrors).

/// The JSON type kube-openapi infers for decoded data (`schemaInfoForType`): integers
/// that fit an int64 decode as int64, everything else numeric as float64.
fn type_info(value: &Value) -> (&'static str, &'static str) {
    match value {
        Value::Null => ("null", ""),
        Value::Bool(_) => ("boolean", ""),
        Value::String(_) => ("string", ""),
        Value::Array(_) => ("array", ""),
        Value::Object(_) => ("object", ""),
        Value::Number(n) if n.is_i64() => ("integer", "int64"),
        Value::Number(_) => ("number", "float64"),
    }
}

/// The field path kube reports for a kube-openapi error named `name`: one leading dot
/// is trimmed, and an empty name means a nil path, printed `<nil>`.
fn error_path(name: &str) -> String {
    if name.is_empty() || name == "." {
        "<nil>".to_string()
    } else {
        name.strip_prefix('.').unwrap_or(name).to_string()
    }
}

fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// `errors.InvalidType` rendered through `field.TypeInvalid`.
fn type_error(path: &str, type_name: &str, got: &str) -> FieldError {
    FieldError::new(
        error_path(path),
        FieldErrorKind::TypeInvalid,
        Some(Value::String(got.to_string())),
        format!(
            "{path} in body must be of type {type_name}: {}",
            go::quote(got)
        ),
    )
}

fn validate_node(
    node: &Node,
    data: &Value,
    old: Option<&Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    // Ratcheting: an unchanged value keeps whatever errors it already had.
    if old == Some(data) {
        return;
    }
    if data.is_null() {
        if !node.types.is_empty() && !node.has_type("null") && !node.nullable {
            errors.push(type_error(path, &node.types.join(","), "null"));
        }
        validate_enum(node, data, path, errors);
        return;
    }
    validate_type(node, data, path, errors);
    validate_combinators(node, data, path, errors);
    match data {
        Value::String(s) => {
            validate_string(node, s, path, errors);
            validate_format(node, s, path, errors);
        }
        Value::Number(_) => validate_number(node, data, path, errors),
        Value::Array(items) => validate_array(node, items, old, path, errors),
        _ => {}
    }
    validate_enum(node, data, path, errors);
    if let Value::Object(map) = data {
        validate_object(node, map, old.and_then(Value::as_object), path, errors);
    }
}

fn validate_type(node: &Node, data: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let format = node.format.as_deref().unwrap_or("");
    if node.types.is_empty() && format.is_empty() {
        return;
    }
    let (sch_type, data_format) = type_info(data);
    let is_float_int = sch_type == "number"
        && data
            .as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
        && node.has_type("integer");
    let is_int_float = sch_type == "integer" && node.has_type("number");
    let stringish = matches!(data, Value::String(_) | Value::Array(_));
    let type_matches = node.has_type(sch_type) || is_float_int || is_int_float;
    let numeric = node.has_type("number") || node.has_type("integer");
    if !(stringish || format.is_empty() || type_matches || data_format == format) {
        // kube reports the *format* here, e.g. `must be of type date-time: "int64"`.
        errors.push(type_error(path, format, data_format));
        return;
    }
    if stringish && !(numeric || format.is_empty()) {
        return;
    }
    if !type_matches {
        errors.push(type_error(path, &node.types.join(","), sch_type));
    }
}

fn validate_combinators(node: &Node, data: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let run = |sub: &Node| {
        let mut found = Vec::new();
        validate_node(sub, data, None, path, &mut found);
        found
    };
    if !node.any_of.is_empty() {
        let mut best: Option<Vec<FieldError>> = None;
        let mut succeeded = false;
        for sub in &node.any_of {
            let found = run(sub);
            if found.is_empty() {
                succeeded = true;
                best = None;
                break;
            }
            // kube keeps the failure with the most passed checks; fewest errors is a
            // close, deterministic stand-in.
            if best.as_ref().is_none_or(|b| found.len() < b.len()) {
                best = Some(found);
            }
        }
        if !succeeded {
            // A plain error outside the field validators: kube reports it on a nil path.
            errors.push(FieldError::invalid(
                "<nil>",
                Value::String(String::new()),
                format!(
                    "{} must validate at least one schema (anyOf)",
                    go::quote(path)
                ),
            ));
        }
        errors.extend(best.unwrap_or_default());
    }
    if !node.one_of.is_empty() {
        let results: Vec<Vec<FieldError>> = node.one_of.iter().map(run).collect();
        let valid = results.iter().filter(|r| r.is_empty()).count();
        if valid != 1 {
            let additional = if valid == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {valid} valid alternatives")
            };
            errors.push(FieldError::invalid(
                "<nil>",
                Value::String(String::new()),
                format!(
                    "{} must validate one and only one schema (oneOf). {additional}",
                    go::quote(path)
                ),
            ));
            if valid == 0 {
                errors.extend(results.into_iter().min_by_key(Vec::len).unwrap_or_default());
            }
        }
    }
    if !node.all_of.is_empty() {
        let mut validated = 0;
        for sub in &node.all_of {
            let found = run(sub);
            if found.is_empty() {
                validated += 1;
            }
            errors.extend(found);
        }
        if validated != node.all_of.len() {
            let additional = if validated == 0 {
                ". None validated"
            } else {
                ""
            };
            errors.push(FieldError::invalid(
                "<nil>",
                Value::String(String::new()),
                format!(
                    "{} must validate all the schemas (allOf){additional}",
                    go::quote(path)
                ),
            ));
        }
    }
    if let Some(not) = &node.not
        && run(not).is_empty()
    {
        errors.push(FieldError::invalid(
            "<nil>",
            Value::String(String::new()),
            format!("{} must not validate the schema (not)", go::quote(path)),
        ));
    }
}

fn validate_string(node: &Node, s: &str, path: &str, errors: &mut Vec<FieldError>) {
    // kube-openapi counts runes, not bytes, even though kube words it "bytes".
    let length = s.chars().count() as i64;
    if let Some(max) = node.max_length
        && length > max
    {
        errors.push(FieldError::new(
            error_path(path),
            FieldErrorKind::TooLong,
            None,
            format!("may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = node.min_length
        && length < min
    {
        errors.push(FieldError::invalid(
            error_path(path),
            Value::String(s.to_string()),
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = &node.pattern {
        let shown = match &pattern.compiled {
            Ok(re) if re.is_match(s) => return,
            Ok(_) => pattern.source.clone(),
            Err(e) => format!("{}, but pattern is invalid: {e}", pattern.source),
        };
        errors.push(FieldError::invalid(
            error_path(path),
            Value::String(s.to_string()),
            format!("{path} in body should match '{shown}'"),
        ));
    }
}

fn validate_format(node: &Node, s: &str, path: &str, errors: &mut Vec<FieldError>) {
    let Some(format) = node.format.as_deref() else {
        return;
    };
    let valid = match format.replace('-', "").as_str() {
        "datetime" => formats::is_date_time(s),
        "date" => formats::is_date(s),
        "byte" => formats::is_base64(s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "uuid" | "uuid3" | "uuid4" | "uuid5" => formats::is_uuid(s, format),
        // The remaining supported formats are rare in CRDs and not checked here.
        _ => true,
    };
    if !valid {
        errors.push(FieldError::new(
            error_path(path),
            FieldErrorKind::TypeInvalid,
            Some(Value::String(s.to_string())),
            format!("{path} in body must be of type {format}: {}", go::quote(s)),
        ));
    }
}

fn validate_number(node: &Node, data: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let as_int = data.as_i64();
    let as_float = data.as_f64().unwrap_or(0.0);
    let bound = |b: f64| match as_int {
        // Native ints compare against the bound truncated to int64, and print it so.
        Some(_) => (b as i64).to_string(),
        None => go::float(b),
    };
    if let Some(factor) = node.multiple_of {
        let multiple = match as_int {
            Some(i) if factor >= 1.0 && factor.fract() == 0.0 => i % (factor as i64) == 0,
            _ => {
                let m = if factor < 1.0 {
                    1.0 / factor * as_float
                } else {
                    as_float / factor
                };
                m.fract() == 0.0
            }
        };
        if !multiple {
            errors.push(FieldError::invalid(
                error_path(path),
                data.clone(),
                format!(
                    "{path} in body should be a multiple of {}",
                    go::float(factor)
                ),
            ));
        }
    }
    if let Some(max) = node.maximum {
        let exceeded = match as_int {
            Some(i) => {
                let m = max as i64;
                if node.exclusive_maximum {
                    i >= m
                } else {
                    i > m
                }
            }
            None if node.exclusive_maximum => as_float >= max,
            None => as_float > max,
        };
        if exceeded {
            let relation = if node.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(FieldError::invalid(
                error_path(path),
                data.clone(),
                format!("{path} in body should be {relation} {}", bound(max)),
            ));
        }
    }
    if let Some(min) = node.minimum {
        let exceeded = match as_int {
            Some(i) => {
                let m = min as i64;
                if node.exclusive_minimum {
                    i <= m
                } else {
                    i < m
                }
            }
            None if node.exclusive_minimum => as_float <= min,
            None => as_float < min,
        };
        if exceeded {
            let relation = if node.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(FieldError::invalid(
                error_path(path),
                data.clone(),
                format!("{path} in body should be {relation} {}", bound(min)),
            ));
        }
    }
}

fn validate_array(
    node: &Node,
    items: &[Value],
    old: Option<&Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Some(item_schema) = node.items.as_deref() {
        for (index, item) in items.iter().enumerate() {
            let old_item = old.and_then(|o| correlate_list_item(node, item, o));
            validate_node(
                item_schema,
                item,
                old_item,
                &format!("{path}[{index}]"),
                errors,
            );
        }
    }
    let size = items.len() as i64;
    if let Some(min) = node.min_items
        && size < min
    {
        errors.push(FieldError::invalid(
            error_path(path),
            Value::from(size),
            format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(max) = node.max_items
        && size > max
    {
        errors.push(FieldError::new(
            error_path(path),
            FieldErrorKind::TooMany,
            Some(Value::from(size)),
            format!("must have at most {max} items"),
        ));
    }
    if node.unique_items {
        let duplicate = items
            .iter()
            .enumerate()
            .any(|(i, a)| items[..i].contains(a));
        if duplicate {
            errors.push(FieldError::invalid(
                error_path(path),
                Value::String(String::new()),
                format!("{path} in body shouldn't contain duplicates"),
            ));
        }
    }
}

/// Ratcheting correlates list items only for `x-kubernetes-list-type: map`, by keys.
fn correlate_list_item<'a>(node: &Node, item: &Value, old_list: &'a Value) -> Option<&'a Value> {
    if node.list_type.as_deref() != Some("map") || node.list_map_keys.is_empty() {
        return None;
    }
    let key_of = |v: &Value| -> Vec<Option<Value>> {
        node.list_map_keys
            .iter()
            .map(|k| v.get(k).cloned())
            .collect()
    };
    let wanted = key_of(item);
    old_list.as_array()?.iter().find(|o| key_of(o) == wanted)
}

fn validate_enum(node: &Node, data: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(values) = &node.enum_values else {
        return;
    };
    if values.is_empty() {
        return;
    }
    let matches = |candidate: &Value| match (candidate, data) {
        // Go converts the datum to the enum value's type before comparing.
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => candidate == data,
    };
    if values.iter().any(matches) {
        return;
    }
    let supported: Vec<String> = values
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    errors.push(FieldError::not_supported(
        error_path(path),
        data.clone(),
        &supported,
    ));
}

fn validate_object(
    node: &Node,
    map: &Map<String, Value>,
    old: Option<&Map<String, Value>>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let count = map.len() as i64;
    if let Some(min) = node.min_properties
        && count < min
    {
        errors.push(FieldError::invalid(
            error_path(path),
            Value::from(count),
            format!("{path} in body should have at least {min} properties"),
        ));
        return;
    }
    if let Some(max) = node.max_properties
        && count > max
    {
        errors.push(FieldError::new(
            error_path(path),
            FieldErrorKind::TooMany,
            Some(Value::from(count)),
            format!("must have at most {max} items"),
        ));
        return;
    }
    match &node.additional_properties {
        Some(AdditionalProperties::Allowed(false)) => {
            for key in map.keys() {
                if node.property(key).is_none() {
                    errors.push(FieldError::invalid(
                        error_path(path),
                        Value::String(key.clone()),
                        format!("{path}.{key} in body is a forbidden property"),
                    ));
                }
            }
        }
        Some(AdditionalProperties::Schema(sub)) => {
            for (key, value) in map {
                if node.property(key).is_none() {
                    let old_value = old.and_then(|o| o.get(key));
                    validate_node(sub, value, old_value, &format!("{path}.{key}"), errors);
                }
            }
        }
        _ => {}
    }
    for (name, prop) in &node.properties {
        if let Some(value) = map.get(name) {
            let old_value = old.and_then(|o| o.get(name));
            validate_node(prop, value, old_value, &child_path(path, name), errors);
        }
    }
    for name in &node.required {
        if !map.contains_key(name) {
            errors.push(FieldError::required(
                error_path(&format!("{path}.{name}")),
                "",
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// x-kubernetes-list-type uniqueness (apiextensions listtype.ValidateListSetsAndMaps).

/// A `field.Path` in apimachinery syntax: `a.b[0][key]`.
#[derive(Debug, Clone)]
struct FieldPath(String);

impl FieldPath {
    fn root() -> FieldPath {
        FieldPath(String::new())
    }
    fn child(&self, name: &str) -> FieldPath {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }
    fn index(&self, i: usize) -> FieldPath {
        FieldPath(format!("{}[{i}]", self.0))
    }
    fn key(&self, k: &str) -> FieldPath {
        FieldPath(format!("{}[{k}]", self.0))
    }
    fn render(&self) -> String {
        if self.0.is_empty() {
            "<nil>".to_string()
        } else {
            self.0.clone()
        }
    }
}

fn list_type_errors(node: &Node, value: &Value, path: &FieldPath, errors: &mut Vec<FieldError>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if let Some(prop) = node.property(key) {
                    list_type_errors(prop, child, &path.child(key), errors);
                } else if let Some(sub) = node.additional_schema() {
                    list_type_errors(sub, child, &path.key(key), errors);
                }
            }
        }
        Value::Array(items) => {
            match node.list_type.as_deref() {
                Some("set") => {
                    for i in first_repeats(items) {
                        errors.push(FieldError::new(
                            path.index(i).render(),
                            FieldErrorKind::Duplicate,
                            Some(items[i].clone()),
                            "",
                        ));
                    }
                }
                Some("map") => list_map_errors(node, items, path, errors),
                _ => {}
            }
            if let Some(item_schema) = node.items.as_deref() {
                for (i, item) in items.iter().enumerate() {
                    list_type_errors(item_schema, item, &path.index(i), errors);
                }
            }
        }
        _ => {}
    }
}

/// Indices of the second occurrence of each repeated value (kube reports each
/// duplicated value once).
fn first_repeats(items: &[Value]) -> Vec<usize> {
    let mut counts: Vec<(&Value, usize)> = Vec::new();
    let mut repeats = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match counts.iter_mut().find(|(v, _)| *v == item) {
            Some((_, n)) => {
                *n += 1;
                if *n == 2 {
                    repeats.push(i);
                }
            }
            None => counts.push((item, 1)),
        }
    }
    repeats
}

fn list_map_errors(node: &Node, items: &[Value], path: &FieldPath, errors: &mut Vec<FieldError>) {
    for (i, item) in items.iter().enumerate() {
        if !item.is_null() && !item.is_object() {
            errors.push(FieldError::invalid(
                path.index(i).render(),
                item.clone(),
                "must be an object for an array of list-type map",
            ));
            return;
        }
    }
    let keys: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut key = Map::new();
            for field in &node.list_map_keys {
                if let Some(v) = item.get(field) {
                    key.insert(field.clone(), v.clone());
                }
            }
            Value::Object(key)
        })
        .collect();
    for i in first_repeats(&keys) {
        errors.push(FieldError::new(
            path.index(i).render(),
            FieldErrorKind::Duplicate,
            Some(keys[i].clone()),
            "",
        ));
    }
}

// ---------------------------------------------------------------------------------------
// String formats (kube-openapi strfmt).

mod formats {
    use std::sync::LazyLock;

    use regex::Regex;

    static DATE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})").expect("static regex"));
    static TIME: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
            .expect("static regex")
    });
    static BASE64: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$",
        )
        .expect("static regex")
    });
    static UUID: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?([0-9a-f])[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$",
        )
        .expect("static regex")
    });

    /// strfmt `IsDate`: only the `YYYY-MM-DD` prefix is checked, with loose ranges.
    pub(super) fn is_date(s: &str) -> bool {
        DATE.captures(s).is_some_and(|c| {
            let (month, day) = (&c[2], &c[3]);
            ("01"..="12").contains(&month) && ("01"..="31").contains(&day)
        })
    }

    /// strfmt `IsDateTime`: lower-cased, split on `t`, date prefix plus a time with
    /// `z` or an offset.
    pub(super) fn is_date_time(s: &str) -> bool {
        if s.len() < 4 {
            return false;
        }
        let lower = s.to_lowercase();
        let parts: Vec<&str> = lower.split('t').collect();
        if parts.len() < 2 || !is_date(parts[0]) {
            return false;
        }
        TIME.captures(parts[1])
            .is_some_and(|c| &c[1] <= "23" && &c[2] <= "59" && &c[3] <= "59")
    }

    /// govalidator `IsBase64`.
    pub(super) fn is_base64(s: &str) -> bool {
        BASE64.is_match(s)
    }

    /// govalidator UUID checks; versioned formats pin the version nibble.
    pub(super) fn is_uuid(s: &str, format: &str) -> bool {
        UUID.captures(s).is_some_and(|c| match format {
            "uuid3" => &c[1] == "3",
            "uuid4" => &c[1] == "4",
            "uuid5" => &c[1] == "5",
            _ => true,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Go formatting, so messages read exactly like kube's.

/// Go `fmt` renderings used in kube messages (`%q`, `%v`, `%#v`). Shared by the other
/// apiserver modules.
pub(crate) mod go {
    use serde_json::Value;

    /// `strconv.Quote`: double-quoted with Go escapes; printable Unicode stays as is.
    pub(crate) fn quote(s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                    if (c as u32) <= 0xffff {
                        out.push_str(&format!("\\u{:04x}", c as u32));
                    } else {
                        out.push_str(&format!("\\U{:08x}", c as u32));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// `%v` of a float64: `strconv.FormatFloat(f, 'g', -1, 64)`, i.e. shortest digits,
    /// and the exponent form when the decimal exponent is below -4 or at least 6
    /// (`1e+06`, `1.5e-05`).
    pub(crate) fn float(f: f64) -> String {
        if f.is_nan() {
            return "NaN".to_string();
        }
        if f.is_infinite() {
            return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
        }
        if f == 0.0 {
            return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
        }
        let exp_form = format!("{f:e}");
        let (mantissa, exponent) = exp_form.split_once('e').expect("LowerExp has an e");
        let exponent: i32 = exponent.parse().expect("LowerExp exponent is an int");
        if !(-4..6).contains(&exponent) {
            let sign = if exponent < 0 { '-' } else { '+' };
            format!("{mantissa}e{sign}{:02}", exponent.abs())
        } else {
            // Display of f64 is the shortest round-trip decimal without exponent.
            format!("{f}")
        }
    }

    /// `%v` of a decoded JSON number (int64 or float64 in Go).
    pub(crate) fn number(n: &serde_json::Number) -> String {
        match n.as_i64() {
            Some(i) => i.to_string(),
            None => float(n.as_f64().unwrap_or(0.0)),
        }
    }

    /// `%v` of a decoded JSON value: maps as `map[k:v]` with sorted keys, slices as
    /// `[a b]`, nil as `<nil>`.
    pub(crate) fn v(value: &Value) -> String {
        match value {
            Value::Null => "<nil>".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => number(n),
            Value::String(s) => s.clone(),
            Value::Array(items) => {
                let inner: Vec<String> = items.iter().map(v).collect();
                format!("[{}]", inner.join(" "))
            }
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let inner: Vec<String> = entries
                    .into_iter()
                    .map(|(k, val)| format!("{k}:{}", v(val)))
                    .collect();
                format!("map[{}]", inner.join(" "))
            }
        }
    }

    /// `%#v` of a decoded JSON value held in an `interface{}`.
    pub(crate) fn sharp_v(value: &Value) -> String {
        match value {
            Value::Null => "interface {}(nil)".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => number(n),
            Value::String(s) => quote(s),
            Value::Array(items) => {
                let inner: Vec<String> = items.iter().map(sharp_v).collect();
                format!("[]interface {{}}{{{}}}", inner.join(", "))
            }
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let inner: Vec<String> = entries
                    .into_iter()
                    .map(|(k, val)| format!("{}:{}", quote(k), sharp_v(val)))
                    .collect();
                format!("map[string]interface {{}}{{{}}}", inner.join(", "))
            }
        }
    }

    /// How `field.Error.ErrorBody` prints a bad value: strings quoted, numbers and
    /// booleans bare, nil as `"null"`, composites with `%#v`.
    pub(crate) fn error_value(value: &Value) -> String {
        match value {
            Value::Null => quote("null"),
            Value::String(s) => quote(s),
            Value::Bool(_) | Value::Number(_) => v(value),
            Value::Array(_) | Value::Object(_) => sharp_v(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn crd(file: &str) -> Value {
        let path = format!(
            "{}/../../shared/reference/crds/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_yaml::from_str(&text).expect("CRD is YAML")
    }

    fn crr_schema(version: &str) -> StructuralSchema {
        let crd = crd("apps.kruise.io_containerrecreaterequests.yaml");
        StructuralSchema::new(crd_version_schema(&crd, version).expect("version exists"))
    }

    fn node_image_schema(version: &str) -> StructuralSchema {
        let crd = crd("apps.kruise.io_nodeimages.yaml");
        StructuralSchema::new(crd_version_schema(&crd, version).expect("version exists"))
    }

    fn good_crr(api_version: &str) -> Value {
        json!({
            "apiVersion": api_version,
            "kind": "ContainerRecreateRequest",
            "metadata": {"name": "crr-1", "namespace": "default", "labels": {"a": "b"}},
            "spec": {
                "podName": "pod-1",
                "containers": [{
                    "name": "app",
                    "preStop": {"httpGet": {"path": "/stop", "port": 8080}},
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "statusContext": {"containerID": "containerd://abc", "restartCount": 0}
                }],
                "strategy": {"failurePolicy": "Fail", "orderedRecreate": true},
                "activeDeadlineSeconds": 300
            },
            "status": {
                "phase": "Recreating",
                "completionTime": "2024-05-01T10:00:00Z",
                "containerRecreateStates": [{"name": "app", "phase": "Pending"}]
            }
        })
    }

    fn messages(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    fn schema(value: Value) -> StructuralSchema {
        StructuralSchema::new(&value)
    }

    #[test]
    fn reference_crd_path_resolves_from_the_manifest_dir() {
        let crd = crd("apps.kruise.io_containerrecreaterequests.yaml");
        assert_eq!(crd["kind"], "CustomResourceDefinition");
        assert!(crd_version_schema(&crd, "v1beta1").is_some());
        assert!(crd_version_schema(&crd, "v9").is_none());
    }

    #[test]
    fn valid_crr_passes_both_versions() {
        assert_eq!(
            messages(&crr_schema("v1beta1").validate(&good_crr("apps.kruise.io/v1beta1"))),
            Vec::<String>::new()
        );
        assert_eq!(
            messages(&crr_schema("v1alpha1").validate(&good_crr("apps.kruise.io/v1alpha1"))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn missing_pod_name_is_required_value() {
        let mut crr = good_crr("apps.kruise.io/v1beta1");
        crr["spec"].as_object_mut().unwrap().remove("podName");
        let errors = crr_schema("v1beta1").validate(&crr);
        assert_eq!(messages(&errors), vec!["spec.podName: Required value"]);
        assert_eq!(errors[0].kind, FieldErrorKind::Required);
    }

    #[test]
    fn crr_status_phase_outside_enum_is_unsupported_in_v1beta1_only() {
        let mut crr = good_crr("apps.kruise.io/v1beta1");
        crr["status"]["phase"] = json!("Bogus");
        assert_eq!(
            messages(&crr_schema("v1beta1").validate(&crr)),
            vec![
                "status.phase: Unsupported value: \"Bogus\": supported values: \"Pending\", \
                 \"Recreating\", \"Succeeded\", \"Failed\", \"Completed\""
            ]
        );
        // v1alpha1 declares the phase as a plain string.
        assert!(crr_schema("v1alpha1").validate(&crr).is_empty());
    }

    #[test]
    fn crr_negative_deadline_violates_v1beta1_minimum() {
        let mut crr = good_crr("apps.kruise.io/v1beta1");
        crr["spec"]["activeDeadlineSeconds"] = json!(-1);
        assert_eq!(
            messages(&crr_schema("v1beta1").validate(&crr)),
            vec![
                "spec.activeDeadlineSeconds: Invalid value: -1: spec.activeDeadlineSeconds in \
                 body should be greater than or equal to 0"
            ]
        );
    }

    #[test]
    fn crr_container_without_name_reports_indexed_path() {
        let mut crr = good_crr("apps.kruise.io/v1beta1");
        crr["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("name");
        assert_eq!(
            messages(&crr_schema("v1beta1").validate(&crr)),
            vec!["spec.containers[0].name: Required value"]
        );
    }

    #[test]
    fn crr_int_or_string_port_accepts_int_and_string_but_not_bool() {
        let schema = crr_schema("v1beta1");
        let mut crr = good_crr("apps.kruise.io/v1beta1");
        crr["spec"]["containers"][0]["preStop"]["httpGet"]["port"] = json!("http");
        assert!(schema.validate(&crr).is_empty());
        crr["spec"]["containers"][0]["preStop"]["httpGet"]["port"] = json!(true);
        let found = messages(&schema.validate(&crr));
        assert!(
            found.contains(
                &"spec.containers[0].preStop.httpGet.port: Invalid value: \"boolean\": \
              spec.containers[0].preStop.httpGet.port in body must be of type integer,string: \
              \"boolean\""
                    .to_string()
            )
        );
        assert!(
            found.contains(
                &"<nil>: Invalid value: \"\": \"spec.containers[0].preStop.httpGet.port\" must \
              validate at least one schema (anyOf)"
                    .to_string()
            )
        );
    }

    #[test]
    fn crr_duplicate_condition_type_is_duplicate_value() {
        let mut crr = good_crr("apps.kruise.io/v1beta1");
        let condition = json!({
            "type": "PreRecreateGrace", "status": "True", "reason": "PreRecreateGrace",
            "message": "", "lastTransitionTime": "2024-05-01T10:00:00Z"
        });
        crr["status"]["conditions"] = json!([condition.clone(), condition]);
        assert_eq!(
            messages(&crr_schema("v1beta1").validate(&crr)),
            vec![
                "status.conditions[1]: Duplicate value: map[string]interface {}{\"type\":\
                 \"PreRecreateGrace\"}"
            ]
        );
    }

    #[test]
    fn crr_condition_reason_must_match_pattern() {
        let mut crr = good_crr("apps.kruise.io/v1beta1");
        crr["status"]["conditions"] = json!([{
            "type": "PreRecreateGrace", "status": "True", "reason": "not ok!",
            "message": "", "lastTransitionTime": "2024-05-01T10:00:00Z"
        }]);
        assert_eq!(
            messages(&crr_schema("v1beta1").validate(&crr)),
            vec![
                "status.conditions[0].reason: Invalid value: \"not ok!\": \
                 status.conditions[0].reason in body should match \
                 '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$'"
            ]
        );
    }

    #[test]
    fn several_errors_render_as_kube_422_message() {
        let mut crr = good_crr("apps.kruise.io/v1beta1");
        let spec = crr["spec"].as_object_mut().unwrap();
        spec.remove("podName");
        spec.remove("containers");
        let errors = crr_schema("v1beta1").validate(&crr);
        assert_eq!(
            invalid_message(
                "ContainerRecreateRequest",
                "apps.kruise.io",
                "crr-1",
                &errors
            ),
            "ContainerRecreateRequest.apps.kruise.io \"crr-1\" is invalid: \
             [spec.containers: Required value, spec.podName: Required value]"
        );
        let status = invalid_status(
            "ContainerRecreateRequest",
            "apps.kruise.io",
            "crr-1",
            &errors,
        );
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(
            status["details"]["causes"][1],
            json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.podName"})
        );
    }

    #[test]
    fn single_error_renders_without_brackets() {
        let errors = vec![FieldError::required("spec.podName", "")];
        assert_eq!(
            invalid_message("ContainerRecreateRequest", "apps.kruise.io", "x", &errors),
            "ContainerRecreateRequest.apps.kruise.io \"x\" is invalid: spec.podName: Required value"
        );
    }

    #[test]
    fn core_group_kind_has_no_dot() {
        assert_eq!(invalid_message("Pod", "", "p", &[]), "Pod \"p\" is invalid");
    }

    fn good_node_image() -> Value {
        json!({
            "apiVersion": "apps.kruise.io/v1beta1",
            "kind": "NodeImage",
            "metadata": {"name": "node-1"},
            "spec": {"images": {"nginx": {
                "pullSecrets": [{"namespace": "kruise-daemon-config", "name": "s", "mode": "batch"}],
                "tags": [{"tag": "1.25", "version": 2, "createdAt": "2024-05-01T10:00:00Z",
                          "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}}]
            }}},
            "status": {"desired": 1, "imageStatuses": {"nginx": {"tags": [
                {"tag": "1.25", "phase": "Succeeded", "version": 2, "progress": 100}
            ]}}}
        })
    }

    #[test]
    fn valid_node_image_passes() {
        assert!(
            node_image_schema("v1beta1")
                .validate(&good_node_image())
                .is_empty()
        );
    }

    #[test]
    fn node_image_map_entries_use_dotted_paths() {
        let mut image = good_node_image();
        image["spec"]["images"]["nginx"]
            .as_object_mut()
            .unwrap()
            .remove("tags");
        image["status"]["imageStatuses"]["nginx"]["tags"][0]
            .as_object_mut()
            .unwrap()
            .remove("tag");
        // The tag phase is a free-form string in both versions (no enum in the CRD).
        image["status"]["imageStatuses"]["nginx"]["tags"][0]["phase"] = json!("Done");
        assert_eq!(
            messages(&node_image_schema("v1beta1").validate(&image)),
            vec![
                "spec.images.nginx.tags: Required value",
                "status.imageStatuses.nginx.tags[0].tag: Required value",
            ]
        );
    }

    #[test]
    fn node_image_bad_created_at_is_not_a_date_time() {
        let mut image = good_node_image();
        image["spec"]["images"]["nginx"]["tags"][0]["createdAt"] = json!("yesterday");
        assert_eq!(
            messages(&node_image_schema("v1beta1").validate(&image)),
            vec![
                "spec.images.nginx.tags[0].createdAt: Invalid value: \"yesterday\": \
                 spec.images.nginx.tags[0].createdAt in body must be of type date-time: \
                 \"yesterday\""
            ]
        );
    }

    #[test]
    fn int32_format_is_not_range_checked_like_kube() {
        let mut image = good_node_image();
        image["spec"]["images"]["nginx"]["tags"][0]["pullPolicy"]["timeoutSeconds"] =
            json!(9_999_999_999_i64);
        assert!(node_image_schema("v1beta1").validate(&image).is_empty());
    }

    #[test]
    fn pruning_with_v1alpha1_schema_drops_pull_secret_mode() {
        let mut image = good_node_image();
        image["spec"]["images"]["nginx"]["extra"] = json!(1);
        node_image_schema("v1alpha1").prune(&mut image);
        assert_eq!(
            image["spec"]["images"]["nginx"]["pullSecrets"],
            json!([{"namespace": "kruise-daemon-config", "name": "s"}])
        );
        assert!(image["spec"]["images"]["nginx"].get("extra").is_none());
        // The v1beta1 schema keeps `mode`.
        let mut image = good_node_image();
        node_image_schema("v1beta1").prune(&mut image);
        assert_eq!(
            image["spec"]["images"]["nginx"]["pullSecrets"][0]["mode"],
            "batch"
        );
    }

    #[test]
    fn pruning_keeps_root_type_meta_and_metadata() {
        let mut crr = good_crr("apps.kruise.io/v1beta1");
        crr["metadata"]["annotations"] = json!({"x": "y"});
        crr["unknownTopLevel"] = json!(true);
        crr["spec"]["bogus"] = json!("drop me");
        crr_schema("v1beta1").prune(&mut crr);
        assert_eq!(crr["apiVersion"], "apps.kruise.io/v1beta1");
        assert_eq!(crr["kind"], "ContainerRecreateRequest");
        assert_eq!(crr["metadata"]["annotations"]["x"], "y");
        assert!(crr.get("unknownTopLevel").is_none());
        assert!(crr["spec"].get("bogus").is_none());
    }

    #[test]
    fn pruning_drops_v1beta1_only_status_with_v1alpha1_schema() {
        let mut crr = good_crr("apps.kruise.io/v1alpha1");
        crr["status"]["containerStatusSnapshot"] =
            json!([{"name": "app", "ready": true, "restartCount": 1}]);
        crr_schema("v1alpha1").prune(&mut crr);
        assert!(crr["status"].get("containerStatusSnapshot").is_none());
    }

    #[test]
    fn preserve_unknown_fields_keeps_unknown_but_prunes_declared() {
        let s = schema(json!({
            "type": "object",
            "properties": {"spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}
            }}
        }));
        let mut obj = json!({"spec": {"free": {"x": 1}, "known": {"a": "1", "b": "2"}}});
        s.prune(&mut obj);
        assert_eq!(
            obj,
            json!({"spec": {"free": {"x": 1}, "known": {"a": "1"}}})
        );
    }

    #[test]
    fn embedded_resource_keeps_type_meta() {
        let s = schema(json!({
            "type": "object",
            "properties": {"template": {
                "type": "object",
                "x-kubernetes-embedded-resource": true,
                "properties": {"spec": {"type": "object"}}
            }}
        }));
        let mut obj = json!({"template": {"apiVersion": "v1", "kind": "Pod",
                                          "metadata": {"name": "x"}, "junk": 1, "spec": {}}});
        s.prune(&mut obj);
        assert_eq!(
            obj,
            json!({"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}})
        );
    }

    #[test]
    fn non_nullable_null_is_pruned_and_then_required() {
        let s = schema(json!({
            "type": "object",
            "required": ["a"],
            "properties": {"a": {"type": "string"}, "b": {"type": "string", "nullable": true}}
        }));
        let mut obj = json!({"a": null, "b": null});
        s.prune(&mut obj);
        assert_eq!(obj, json!({"b": null}));
        assert_eq!(messages(&s.validate(&obj)), vec!["a: Required value"]);
    }

    #[test]
    fn integer_field_rejects_float() {
        let s = schema(json!({"type": "object", "properties": {"n": {"type": "integer"}}}));
        assert_eq!(
            messages(&s.validate(&json!({"n": 1.5}))),
            vec!["n: Invalid value: \"number\": n in body must be of type integer: \"number\""]
        );
        // A float with no fraction is an integer for kube-openapi.
        assert!(s.validate(&json!({"n": 2.0})).is_empty());
    }

    #[test]
    fn string_field_rejects_integer() {
        let s = schema(
            json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"podName": {"type": "string"}}}}}),
        );
        assert_eq!(
            messages(&s.validate(&json!({"spec": {"podName": 5}}))),
            vec![
                "spec.podName: Invalid value: \"integer\": spec.podName in body must be of type \
                 string: \"integer\""
            ]
        );
    }

    #[test]
    fn date_time_field_rejects_integer_naming_the_format() {
        let s = schema(json!({"type": "object",
            "properties": {"t": {"type": "string", "format": "date-time"}}}));
        assert_eq!(
            messages(&s.validate(&json!({"t": 5}))),
            vec!["t: Invalid value: \"int64\": t in body must be of type date-time: \"int64\""]
        );
    }

    #[test]
    fn null_in_non_nullable_array_item_is_type_error() {
        let s = schema(
            json!({"type": "object", "properties": {"l": {"type": "array",
            "items": {"type": "string"}}}}),
        );
        assert_eq!(
            messages(&s.validate(&json!({"l": ["a", null]}))),
            vec!["l[1]: Invalid value: \"null\": l[1] in body must be of type string: \"null\""]
        );
    }

    #[test]
    fn nullable_accepts_null() {
        let s = schema(json!({"type": "object",
            "properties": {"l": {"type": "array", "items": {"type": "string", "nullable": true}}}}));
        assert!(s.validate(&json!({"l": [null]})).is_empty());
    }

    #[test]
    fn string_length_limits_use_kube_wording() {
        let s = schema(json!({"type": "object", "properties": {
            "long": {"type": "string", "maxLength": 3},
            "short": {"type": "string", "minLength": 2}
        }}));
        assert_eq!(
            messages(&s.validate(&json!({"long": "abcd", "short": "a"}))),
            vec![
                "long: Too long: may not be more than 3 bytes",
                "short: Invalid value: \"a\": short in body should be at least 2 chars long",
            ]
        );
        // Length counts characters, not bytes.
        assert!(s.validate(&json!({"long": "äöü"})).is_empty());
    }

    #[test]
    fn item_count_limits_use_kube_wording() {
        let s = schema(json!({"type": "object", "properties": {
            "few": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "many": {"type": "array", "maxItems": 1, "items": {"type": "string"}}
        }}));
        assert_eq!(
            messages(&s.validate(&json!({"few": [], "many": ["a", "b"]}))),
            vec![
                "few: Invalid value: 0: few in body should have at least 1 items",
                "many: Too many: 2: must have at most 1 items",
            ]
        );
    }

    #[test]
    fn maximum_and_exclusive_bounds() {
        let s = schema(json!({"type": "object", "properties": {
            "a": {"type": "integer", "maximum": 10},
            "b": {"type": "number", "minimum": 0.5, "exclusiveMinimum": true}
        }}));
        assert_eq!(
            messages(&s.validate(&json!({"a": 11, "b": 0.5}))),
            vec![
                "a: Invalid value: 11: a in body should be less than or equal to 10",
                "b: Invalid value: 0.5: b in body should be greater than 0.5",
            ]
        );
    }

    #[test]
    fn additional_properties_schema_validates_map_values() {
        let s = schema(json!({"type": "object", "properties": {"labels": {
            "type": "object", "additionalProperties": {"type": "string"}}}}));
        assert_eq!(
            messages(&s.validate(&json!({"labels": {"ok": "x", "bad": 1}}))),
            vec![
                "labels.bad: Invalid value: \"integer\": labels.bad in body must be of type \
                 string: \"integer\""
            ]
        );
    }

    #[test]
    fn list_type_set_reports_duplicates() {
        let s = schema(
            json!({"type": "object", "properties": {"s": {"type": "array",
            "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}),
        );
        assert_eq!(
            messages(&s.validate(&json!({"s": ["a", "b", "a", "a"]}))),
            vec!["s[2]: Duplicate value: \"a\""]
        );
    }

    #[test]
    fn list_type_errors_use_bracketed_map_keys() {
        let s = schema(
            json!({"type": "object", "properties": {"m": {"type": "object",
            "additionalProperties": {"type": "array", "x-kubernetes-list-type": "set",
                                     "items": {"type": "integer"}}}}}),
        );
        assert_eq!(
            messages(&s.validate(&json!({"m": {"k.x": [1, 1]}}))),
            vec!["m[k.x][1]: Duplicate value: 1"]
        );
    }

    #[test]
    fn defaults_fill_missing_and_non_nullable_null() {
        let s = schema(
            json!({"type": "object", "properties": {"spec": {"type": "object",
            "default": {},
            "properties": {
                "protocol": {"type": "string", "default": "TCP"},
                "keep": {"type": "string", "default": "d", "nullable": true}
            }}}}),
        );
        let mut obj = json!({"spec": {"keep": null}});
        s.apply_defaults(&mut obj);
        assert_eq!(obj, json!({"spec": {"keep": null, "protocol": "TCP"}}));
        // A missing key takes its default even when the schema is nullable.
        let mut obj = json!({});
        s.apply_defaults(&mut obj);
        assert_eq!(obj, json!({"spec": {"protocol": "TCP", "keep": "d"}}));
    }

    #[test]
    fn crr_port_protocol_default_comes_from_crd() {
        let crd = crd("apps.kruise.io_containerrecreaterequests.yaml");
        let mut crr = good_crr("apps.kruise.io/v1beta1");
        crr["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
        apply_defaults(crd_version_schema(&crd, "v1beta1").unwrap(), &mut crr);
        assert_eq!(crr["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn update_ratchets_unchanged_invalid_values() {
        let s = crr_schema("v1beta1");
        let mut old = good_crr("apps.kruise.io/v1beta1");
        old["status"]["phase"] = json!("Legacy");
        let mut new = old.clone();
        new["status"]["message"] = json!("changed elsewhere");
        assert!(s.validate_update(&new, &old).is_empty());
        assert_eq!(s.validate(&new).len(), 1);
        new["status"]["phase"] = json!("Other");
        assert_eq!(
            messages(&s.validate_update(&new, &old)),
            vec![
                "status.phase: Unsupported value: \"Other\": supported values: \"Pending\", \
                 \"Recreating\", \"Succeeded\", \"Failed\", \"Completed\""
            ]
        );
    }

    #[test]
    fn invalid_pattern_is_reported_like_kube() {
        let s = schema(
            json!({"type": "object", "properties": {"p": {"type": "string",
            "pattern": "("}}}),
        );
        let found = messages(&s.validate(&json!({"p": "x"})));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with(
            "p: Invalid value: \"x\": p in body should match '(, but pattern is invalid:"
        ));
    }

    #[test]
    fn go_float_formatting_matches_percent_v() {
        assert_eq!(go::float(1.0), "1");
        assert_eq!(go::float(0.5), "0.5");
        assert_eq!(go::float(1e21), "1e+21");
        assert_eq!(go::float(123456.0), "123456");
        assert_eq!(go::float(1234567.0), "1.234567e+06");
        assert_eq!(go::float(0.00001), "1e-05");
    }

    #[test]
    fn go_quote_escapes_like_strconv() {
        assert_eq!(go::quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
    }
}
