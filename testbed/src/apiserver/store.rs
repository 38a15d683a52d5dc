//! Object storage with kube-apiserver's write semantics and a watch history.
//!
//! One lock guards objects, the resource registry and the history, and every change is
//! published to watchers while that lock is held, so a watcher that subscribes under the
//! lock sees each change exactly once, in resourceVersion order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::resources::{Registry, ResourceInfo, StoreKey};
use super::status::ApiError;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated (including deletion started, i.e. `deletionTimestamp` set).
    Modified,
    /// Removed from storage.
    Deleted,
}

impl ChangeType {
    /// The watch event type string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as stored in the history and sent to watchers (storage version).
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// Which resource.
    pub key: StoreKey,
    /// What happened.
    pub change: ChangeType,
    /// The object after the change (for `Deleted`: its last state, with the new rv).
    pub object: Value,
    /// The object before the change, for selector transitions.
    pub previous: Option<Value>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// `resourceVersion` unset or `"0"`: synthetic `ADDED` for current objects, then live.
    Current,
    /// Changes after this resourceVersion.
    After(u64),
}

/// A watch's starting material: current objects (for [`WatchStart::Current`]), the
/// history backlog, and the live feed.
pub struct Subscription {
    /// Objects to send as `ADDED` first.
    pub initial: Vec<Value>,
    /// History changes after the requested resourceVersion.
    pub backlog: Vec<Arc<Change>>,
    /// Live changes; those with `rv <= start_rv` are already covered above.
    pub live: broadcast::Receiver<Arc<Change>>,
    /// The resourceVersion the initial material is consistent with.
    pub start_rv: u64,
}

/// Options of a DELETE.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteTarget {
    /// The main resource: status changes are ignored when there is a status subresource.
    Main,
    /// The `/status` subresource: only status (and, for core kinds, metadata) change.
    Status,
}

struct State {
    registry: Registry,
    rv: u64,
    objects: HashMap<StoreKey, BTreeMap<(String, String), Value>>,
    history: VecDeque<Arc<Change>>,
    compacted_rv: u64,
    window: usize,
}

/// The object store.
pub struct Store {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// The current time as kube writes it (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    rfc3339_after(0)
}

/// The time `seconds` from now, as RFC 3339.
pub fn rfc3339_after(seconds: i64) -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    let then = now
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
        .unwrap_or(now);
    // Truncated to the second, as metav1.Time serialises (rounding up would put an
    // object's creation after events of the same second).
    then.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn random_token(len: usize, alphabet: &[u8]) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            alphabet[(seed % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

/// A random UUID-shaped string (version 4 layout).
pub fn new_uid() -> String {
    let hex = random_token(32, b"0123456789abcdef");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn meta(object: &Value) -> &Value {
    &object["metadata"]
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or("")
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// The object without the parts that do not count as a spec change.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// The resource a CRD object declares, or kube's 422 for a malformed CRD.
fn crd_resource(crd: &Value) -> Result<ResourceInfo, ApiError> {
    ResourceInfo::from_crd(crd).map_err(|message| {
        ApiError::invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            meta_str(crd, "name"),
            vec![("spec".into(), "FieldValueInvalid".into(), message)],
        )
    })
}

/// Pods on a node are deleted in two steps: the API sets `deletionTimestamp`, the kubelet
/// kills the containers and then deletes with grace 0 (kube's graceful pod deletion).
fn awaits_kubelet(info: &ResourceInfo, object: &Value) -> bool {
    info.group.is_empty()
        && info.plural == "pods"
        && !object["spec"]["nodeName"].as_str().unwrap_or("").is_empty()
        && !matches!(
            object["status"]["phase"].as_str(),
            Some("Succeeded") | Some("Failed")
        )
}

impl Store {
    /// An empty store that keeps `window` changes of history for watches.
    pub fn new(window: usize) -> Self {
        let (changes, _) = broadcast::channel(65_536);
        let mut objects = HashMap::new();
        let namespaces: BTreeMap<(String, String), Value> = ["default", "kube-system", "kube-public", "kube-node-lease"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    (String::new(), name.to_string()),
                    json!({
                        "apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": name, "uid": new_uid(), "resourceVersion": (i + 1).to_string(),
                                     "creationTimestamp": now_rfc3339(),
                                     "labels": {"kubernetes.io/metadata.name": name}},
                        "spec": {"finalizers": ["kubernetes"]},
                        "status": {"phase": "Active"}
                    }),
                )
            })
            .collect();
        objects.insert((String::new(), "namespaces".to_string()), namespaces);
        Self {
            state: Mutex::new(State {
                registry: Registry::new(),
                rv: 4,
                objects,
                history: VecDeque::new(),
                compacted_rv: 0,
                window: window.max(1),
            }),
            changes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with the registry (read-only).
    pub fn with_registry<R>(&self, f: impl FnOnce(&Registry) -> R) -> R {
        f(&self.lock().registry)
    }

    /// The resource `plural` of `group` serving `version`.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.lock().registry.find(group, version, plural).cloned()
    }

    /// The current (latest) resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Forgets the whole history: the next watch from any older resourceVersion gets 410.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.compacted_rv = state.rv;
        state.history.clear();
    }

    /// Sets how many changes of history are kept.
    pub fn set_window(&self, window: usize) {
        self.lock().window = window.max(1);
    }

    /// One object, in storage version.
    pub fn get(&self, info: &ResourceInfo, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let state = self.lock();
        state
            .objects
            .get(&info.store_key)
            .and_then(|objects| objects.get(&(namespace.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&info.qualified_plural(), name))
    }

    /// Every object of a resource (in one namespace, or all), ordered by namespace and
    /// name, with the resourceVersion the list is consistent with.
    pub fn list(&self, info: &ResourceInfo, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let state = self.lock();
        let items = state
            .objects
            .get(&info.store_key)
            .map(|objects| {
                objects
                    .iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|wanted| ns == wanted))
                    .map(|(_, object)| object.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, state.rv)
    }

    /// Starts a watch on a resource.
    pub fn watch(&self, info: &ResourceInfo, start: WatchStart) -> Result<Subscription, ApiError> {
        let state = self.lock();
        let live = self.changes.subscribe();
        match start {
            WatchStart::Current => {
                let initial = state
                    .objects
                    .get(&info.store_key)
                    .map(|objects| objects.values().cloned().collect())
                    .unwrap_or_default();
                Ok(Subscription {
                    initial,
                    backlog: Vec::new(),
                    live,
                    start_rv: state.rv,
                })
            }
            WatchStart::After(rv) => {
                if rv < state.compacted_rv {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        state.compacted_rv + 1
                    )));
                }
                let backlog = state
                    .history
                    .iter()
                    .filter(|change| change.rv > rv && change.key == info.store_key)
                    .cloned()
                    .collect();
                Ok(Subscription {
                    initial: Vec::new(),
                    backlog,
                    live,
                    start_rv: state.rv.max(rv),
                })
            }
        }
    }

    fn publish(&self, state: &mut State, change: Change) {
        let change = Arc::new(change);
        state.history.push_back(change.clone());
        while state.history.len() > state.window {
            if let Some(dropped) = state.history.pop_front() {
                state.compacted_rv = dropped.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.changes.send(change);
    }

    fn next_rv(state: &mut State) -> u64 {
        state.rv += 1;
        state.rv
    }

    /// Creates an object (already in storage version, namespace set for namespaced kinds).
    pub fn create(&self, info: &ResourceInfo, mut object: Value) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let metadata = meta_mut(&mut object);
        let mut name = metadata
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            let prefix = metadata
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &info.kind,
                    &info.group,
                    "",
                    vec![(
                        "metadata.name".into(),
                        "FieldValueRequired".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
            name = format!(
                "{prefix}{}",
                random_token(5, b"bcdfghjklmnpqrstvwxz2456789")
            );
            metadata.insert("name".into(), json!(name));
        }
        let namespace = if info.namespaced {
            let namespace = metadata
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let namespaces = (String::new(), "namespaces".to_string());
            let exists = state
                .objects
                .get(&namespaces)
                .is_some_and(|ns| ns.contains_key(&(String::new(), namespace.clone())));
            if !exists {
                return Err(ApiError::not_found("namespaces", &namespace));
            }
            namespace
        } else {
            metadata.remove("namespace");
            String::new()
        };
        let key = (namespace.clone(), name.clone());
        if state
            .objects
            .get(&info.store_key)
            .is_some_and(|objects| objects.contains_key(&key))
        {
            return Err(ApiError::already_exists(&info.qualified_plural(), &name));
        }
        let rv = Self::next_rv(&mut state);
        let metadata = meta_mut(&mut object);
        metadata.insert("uid".into(), json!(new_uid()));
        metadata.insert("creationTimestamp".into(), json!(now_rfc3339()));
        metadata.insert("resourceVersion".into(), json!(rv.to_string()));
        metadata.insert("generation".into(), json!(1));
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
        self.prepare_for_create(&mut state, info, &mut object)?;
        state
            .objects
            .entry(info.store_key.clone())
            .or_default()
            .insert(key, object.clone());
        self.publish(
            &mut state,
            Change {
                rv,
                key: info.store_key.clone(),
                change: ChangeType::Added,
                object: object.clone(),
                previous: None,
            },
        );
        Ok(object)
    }

    /// Kind-specific defaults on create, mirroring kube's registry strategies.
    fn prepare_for_create(
        &self,
        state: &mut State,
        info: &ResourceInfo,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        match (info.group.as_str(), info.plural.as_str()) {
            ("", "pods") => {
                // kube resets pod status on create.
                object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
            ("", "namespaces") => {
                object["status"] = json!({"phase": "Active"});
                let name = meta_str(object, "name").to_string();
                let labels = meta_mut(object)
                    .entry("labels")
                    .or_insert_with(|| json!({}));
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let resource = crd_resource(object)?;
                let expected = format!("{}.{}", resource.plural, resource.group);
                if meta_str(object, "name") != expected {
                    return Err(ApiError::invalid(
                        "CustomResourceDefinition",
                        "apiextensions.k8s.io",
                        meta_str(object, "name"),
                        vec![(
                            "metadata.name".into(),
                            "FieldValueInvalid".into(),
                            format!(
                                "Invalid value: \"{}\": must be spec.names.plural+\".\"+spec.group",
                                meta_str(object, "name")
                            ),
                        )],
                    ));
                }
                Self::set_crd_status(object, &resource);
                state.registry.register(resource);
            }
            _ if info.custom && info.has_status(&info.storage_version) => {
                // CRDs with a status subresource ignore status on create.
                if let Some(map) = object.as_object_mut() {
                    map.remove("status");
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn set_crd_status(object: &mut Value, resource: &ResourceInfo) {
        let now = now_rfc3339();
        let stored: Vec<&str> = vec![resource.storage_version.as_str()];
        object["status"] = json!({
            "acceptedNames": object["spec"]["names"].clone(),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now}
            ],
            "storedVersions": stored,
        });
    }

    /// Replaces an object (PUT, or the result of a PATCH), with optimistic concurrency.
    ///
    /// `require_rv`: whether an empty `metadata.resourceVersion` is rejected (kube does
    /// so for custom resources on PUT).
    pub fn update(
        &self,
        info: &ResourceInfo,
        object: Value,
        target: WriteTarget,
        require_rv: bool,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let namespace = if info.namespaced {
            meta_str(&object, "namespace").to_string()
        } else {
            String::new()
        };
        let name = meta_str(&object, "name").to_string();
        let key = (namespace, name.clone());
        let old = state
            .objects
            .get(&info.store_key)
            .and_then(|objects| objects.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&info.qualified_plural(), &name))?;
        let given_rv = meta_str(&object, "resourceVersion");
        if given_rv.is_empty() {
            if require_rv {
                return Err(ApiError::invalid(
                    &info.kind,
                    &info.group,
                    &name,
                    vec![(
                        "metadata.resourceVersion".into(),
                        "FieldValueInvalid".into(),
                        "Invalid value: 0x0: must be specified for an update".into(),
                    )],
                ));
            }
        } else if given_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(&info.qualified_plural(), &name));
        }
        let given_uid = meta_str(&object, "uid");
        if !given_uid.is_empty() && given_uid != meta_str(&old, "uid") {
            return Err(ApiError::conflict(
                &info.qualified_plural(),
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {given_uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        let mut new = Self::prepare_for_update(info, &old, object, target);
        // Fields the server owns.
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            let metadata = meta_mut(&mut new);
            match meta(&old).get(field) {
                Some(value) => {
                    metadata.insert(field.into(), value.clone());
                }
                None => {
                    metadata.remove(field);
                }
            }
        }
        meta_mut(&mut new).insert(
            "resourceVersion".into(),
            json!(meta_str(&old, "resourceVersion")),
        );
        if new == old {
            // A no-op write changes nothing, not even the resourceVersion (as in kube).
            return Ok(old);
        }
        if spec_part(&new) != spec_part(&old) {
            let generation = meta(&old)["generation"].as_i64().unwrap_or(1) + 1;
            meta_mut(&mut new).insert("generation".into(), json!(generation));
        }
        if info.group == "apiextensions.k8s.io" && target == WriteTarget::Main {
            let resource = crd_resource(&new)?;
            Self::set_crd_status(&mut new, &resource);
            state.registry.register(resource);
        }
        let rv = Self::next_rv(&mut state);
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        let finalizers_empty = meta(&new)["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        if meta(&new).get("deletionTimestamp").is_some()
            && finalizers_empty
            && !awaits_kubelet(info, &new)
        {
            return Ok(self.remove_locked(&mut state, info, key, new, old));
        }
        self.store_modified(&mut state, info, key, rv, new.clone(), old);
        Ok(new)
    }

    /// Stores an updated object (its resourceVersion already `rv`) and tells watchers.
    fn store_modified(
        &self,
        state: &mut State,
        info: &ResourceInfo,
        key: (String, String),
        rv: u64,
        new: Value,
        old: Value,
    ) {
        state
            .objects
            .entry(info.store_key.clone())
            .or_default()
            .insert(key, new.clone());
        self.publish(
            state,
            Change {
                rv,
                key: info.store_key.clone(),
                change: ChangeType::Modified,
                object: new,
                previous: Some(old),
            },
        );
    }

    /// kube's `PrepareForUpdate`: which parts of the new object are kept.
    fn prepare_for_update(
        info: &ResourceInfo,
        old: &Value,
        mut new: Value,
        target: WriteTarget,
    ) -> Value {
        let has_status = info.has_status(&info.storage_version);
        match target {
            WriteTarget::Main => {
                if has_status {
                    match old.get("status") {
                        Some(status) => new["status"] = status.clone(),
                        None => {
                            if let Some(map) = new.as_object_mut() {
                                map.remove("status");
                            }
                        }
                    }
                }
                new
            }
            WriteTarget::Status if info.custom || info.group == "apiextensions.k8s.io" => {
                // Custom resources: a status write changes status and nothing else.
                let mut result = old.clone();
                match new.get("status") {
                    Some(status) => result["status"] = status.clone(),
                    None => {
                        if let Some(map) = result.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
                result
            }
            WriteTarget::Status => {
                // Core kinds: spec is reset, metadata may change (pods/status is how
                // kruise-daemon publishes its annotation, §6.1).
                match old.get("spec") {
                    Some(spec) => new["spec"] = spec.clone(),
                    None => {
                        if let Some(map) = new.as_object_mut() {
                            map.remove("spec");
                        }
                    }
                }
                if info.plural == "pods" {
                    let owners = meta(old).get("ownerReferences").cloned();
                    let metadata = meta_mut(&mut new);
                    match owners {
                        Some(owners) => {
                            metadata.insert("ownerReferences".into(), owners);
                        }
                        None => {
                            metadata.remove("ownerReferences");
                        }
                    }
                }
                new
            }
        }
    }

    /// Deletes an object, gracefully where kube would.
    /// Returns the object and whether it left storage.
    pub fn delete(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let mut state = self.lock();
        let key = (namespace.to_string(), name.to_string());
        let old = state
            .objects
            .get(&info.store_key)
            .and_then(|objects| objects.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&info.qualified_plural(), name))?;
        if let Some(uid) = options
            .uid
            .as_deref()
            .filter(|u| *u != meta_str(&old, "uid"))
        {
            return Err(ApiError::conflict(
                &info.qualified_plural(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = options
            .resource_version
            .as_deref()
            .filter(|rv| *rv != meta_str(&old, "resourceVersion"))
        {
            return Err(ApiError::conflict(
                &info.qualified_plural(),
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion")
                ),
            ));
        }
        let mut new = old.clone();
        let mut graceful = false;
        if awaits_kubelet(info, &old) {
            let grace = options
                .grace_period_seconds
                .or_else(|| old["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30)
                .max(0);
            if grace > 0 {
                let current = meta(&old)["deletionGracePeriodSeconds"].as_i64();
                if current.is_none_or(|c| grace < c) {
                    let metadata = meta_mut(&mut new);
                    metadata.insert("deletionTimestamp".into(), json!(rfc3339_after(grace)));
                    metadata.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                graceful = true;
            }
        }
        let has_finalizers = meta(&old)["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers && !graceful && meta(&old).get("deletionTimestamp").is_none() {
            let metadata = meta_mut(&mut new);
            metadata.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        if graceful || has_finalizers {
            if new == old {
                return Ok((old, false));
            }
            let rv = Self::next_rv(&mut state);
            meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
            self.store_modified(&mut state, info, key, rv, new.clone(), old);
            return Ok((new, false));
        }
        let _ = Self::next_rv(&mut state);
        let rv = state.rv;
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        Ok((self.remove_locked(&mut state, info, key, new, old), true))
    }

    /// Removes an object (its rv already set) and everything that depends on it.
    fn remove_locked(
        &self,
        state: &mut State,
        info: &ResourceInfo,
        key: (String, String),
        object: Value,
        previous: Value,
    ) -> Value {
        if let Some(objects) = state.objects.get_mut(&info.store_key) {
            objects.remove(&key);
        }
        let rv = meta_str(&object, "resourceVersion")
            .parse()
            .unwrap_or(state.rv);
        self.publish(
            state,
            Change {
                rv,
                key: info.store_key.clone(),
                change: ChangeType::Deleted,
                object: object.clone(),
                previous: Some(previous),
            },
        );
        // Cascades kube performs through controllers, done inline here.
        if info.group == "apiextensions.k8s.io" {
            if let (Some(group), Some(plural)) = (
                object["spec"]["group"].as_str(),
                object["spec"]["names"]["plural"].as_str(),
            ) && let Some(resource) = state.registry.unregister(group, plural)
            {
                self.remove_all(state, &resource.store_key, |_| true);
            }
        } else if info.group.is_empty() && info.plural == "namespaces" {
            let namespace = key.1.clone();
            let namespaced: Vec<StoreKey> = state
                .registry
                .all()
                .filter(|r| r.namespaced)
                .map(|r| r.store_key.clone())
                .collect();
            for store_key in namespaced {
                self.remove_all(state, &store_key, |(ns, _)| *ns == namespace);
            }
        }
        object
    }

    fn remove_all(
        &self,
        state: &mut State,
        store_key: &StoreKey,
        selected: impl Fn(&(String, String)) -> bool,
    ) {
        let keys: Vec<(String, String)> = state
            .objects
            .get(store_key)
            .map(|objects| objects.keys().filter(|k| selected(k)).cloned().collect())
            .unwrap_or_default();
        for key in keys {
            let Some(mut object) = state
                .objects
                .get_mut(store_key)
                .and_then(|o| o.remove(&key))
            else {
                continue;
            };
            let previous = object.clone();
            let rv = Self::next_rv(state);
            meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
            self.publish(
                state,
                Change {
                    rv,
                    key: store_key.clone(),
                    change: ChangeType::Deleted,
                    object,
                    previous: Some(previous),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(store: &Store) -> Arc<ResourceInfo> {
        store.resource("", "v1", "pods").unwrap()
    }

    fn pod(name: &str, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})
    }

    #[test]
    fn create_assigns_identity_and_a_cluster_wide_resource_version() {
        let store = Store::new(100);
        let info = pods(&store);
        let a = store.create(&info, pod("a", "")).unwrap();
        let b = store.create(&info, pod("b", "")).unwrap();
        let rv_a: u64 = meta_str(&a, "resourceVersion").parse().unwrap();
        let rv_b: u64 = meta_str(&b, "resourceVersion").parse().unwrap();
        assert!(rv_b > rv_a);
        assert_eq!(a["metadata"]["generation"], 1);
        assert_eq!(meta_str(&a, "uid").len(), 36);
        assert_eq!(a["status"]["phase"], "Pending");
        let error = store.create(&info, pod("a", "")).unwrap_err();
        assert_eq!(error.code, 409);
    }

    #[test]
    fn stale_resource_version_conflicts_and_status_is_isolated() {
        let store = Store::new(100);
        let info = pods(&store);
        let created = store.create(&info, pod("a", "")).unwrap();
        let mut update = created.clone();
        update["spec"]["containers"][0]["image"] = json!("j");
        update["status"]["phase"] = json!("Running");
        let updated = store
            .update(&info, update.clone(), WriteTarget::Main, false)
            .unwrap();
        assert_eq!(
            updated["status"]["phase"], "Pending",
            "main writes ignore status"
        );
        assert_eq!(updated["metadata"]["generation"], 2);
        let error = store
            .update(&info, update, WriteTarget::Main, false)
            .unwrap_err();
        assert_eq!(error.code, 409, "the old resourceVersion is stale now");
        let mut status = updated.clone();
        status["status"]["phase"] = json!("Running");
        status["spec"]["containers"][0]["image"] = json!("ignored");
        let written = store
            .update(&info, status, WriteTarget::Status, false)
            .unwrap();
        assert_eq!(written["status"]["phase"], "Running");
        assert_eq!(written["spec"]["containers"][0]["image"], "j");
        assert_eq!(
            written["metadata"]["generation"], 2,
            "status writes keep generation"
        );
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let store = Store::new(100);
        let info = store.resource("", "v1", "configmaps").unwrap();
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "c", "namespace": "default", "finalizers": ["x/y"]}});
        cm = store.create(&info, cm).unwrap();
        let (deleting, gone) = store
            .delete(&info, "default", "c", &DeleteOptions::default())
            .unwrap();
        assert!(!gone);
        assert!(deleting["metadata"]["deletionTimestamp"].is_string());
        let mut release = deleting.clone();
        release["metadata"]["finalizers"] = json!([]);
        store
            .update(&info, release, WriteTarget::Main, false)
            .unwrap();
        assert_eq!(store.get(&info, "default", "c").unwrap_err().code, 404);
        let _ = cm;
    }

    #[test]
    fn scheduled_pods_wait_for_the_kubelet_before_leaving() {
        let store = Store::new(100);
        let info = pods(&store);
        store.create(&info, pod("a", "node-1")).unwrap();
        let (pod, gone) = store
            .delete(&info, "default", "a", &DeleteOptions::default())
            .unwrap();
        assert!(!gone);
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30);
        let final_delete = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let (_, gone) = store.delete(&info, "default", "a", &final_delete).unwrap();
        assert!(gone);
    }

    #[test]
    fn watch_after_compaction_is_gone_and_history_is_replayed_otherwise() {
        let store = Store::new(100);
        let info = pods(&store);
        let first = store.create(&info, pod("a", "")).unwrap();
        let rv: u64 = meta_str(&first, "resourceVersion").parse().unwrap();
        store.create(&info, pod("b", "")).unwrap();
        let subscription = store.watch(&info, WatchStart::After(rv)).unwrap();
        assert_eq!(subscription.backlog.len(), 1);
        assert_eq!(meta_str(&subscription.backlog[0].object, "name"), "b");
        store.compact();
        let error = store.watch(&info, WatchStart::After(rv)).err().unwrap();
        assert_eq!(error.code, 410);
    }

    #[test]
    fn noop_update_keeps_the_resource_version() {
        let store = Store::new(100);
        let info = pods(&store);
        let created = store.create(&info, pod("a", "")).unwrap();
        let same = store
            .update(&info, created.clone(), WriteTarget::Main, false)
            .unwrap();
        assert_eq!(
            same["metadata"]["resourceVersion"],
            created["metadata"]["resourceVersion"]
        );
    }
}
