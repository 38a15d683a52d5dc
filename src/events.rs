//! Kubernetes Events, written as core `v1` Events like kruise-daemon's client-go
//! recorder (§1.4), so the RBAC of §8.3 (`events` in the core group) is all we need.
//!
//! Repeats of the same event (same object, type, reason and message) within
//! [`DEDUP_WINDOW`] bump `count` and `lastTimestamp` on the existing Event instead of
//! creating another, as client-go's EventCorrelator does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::warn;

/// How long an event is remembered for de-duplication.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Upper bound on remembered events: the cache must not grow with bad input.
const MAX_REMEMBERED: usize = 4096;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    object: String,
    event_type: EventType,
    reason: String,
    message: String,
}

struct Remembered {
    namespace: String,
    name: String,
    count: i32,
    at: Instant,
}

/// Records events for one component (e.g. `kruise-daemon-imagepuller`) on one node.
pub struct Recorder {
    client: kube::Client,
    component: String,
    host: String,
    seen: Mutex<HashMap<Key, Remembered>>,
}

impl Recorder {
    /// A recorder; `component` and `host` become the event's `source`.
    pub fn new(client: kube::Client, component: &str, host: &str) -> Self {
        Self {
            client,
            component: component.to_string(),
            host: host.to_string(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes an event. Failures are logged, never returned: an event is not worth
    /// failing the work it describes.
    pub async fn publish(
        &self,
        object: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) {
        // Events of cluster-scoped objects live in "default", as client-go puts them.
        let namespace = object
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let key = Key {
            object: format!(
                "{}/{}/{}/{}/{}",
                object.kind.as_deref().unwrap_or(""),
                namespace,
                object.name.as_deref().unwrap_or(""),
                object.uid.as_deref().unwrap_or(""),
                object.field_path.as_deref().unwrap_or("")
            ),
            event_type,
            reason: reason.to_string(),
            message: message.to_string(),
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.retain(|_, r| r.at.elapsed() < DEDUP_WINDOW);
            seen.get_mut(&key).map(|r| {
                r.count += 1;
                r.at = Instant::now();
                (r.namespace.clone(), r.name.clone(), r.count)
            })
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Some((namespace, name, count)) = repeat {
            let patch = json!({"count": count, "lastTimestamp": now});
            let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                // Expired or deleted on the server: fall through and create a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    warn!(%error, reason, "updating an event failed");
                    return;
                }
            }
        }
        let name = format!(
            "{}.{:x}",
            object.name.as_deref().unwrap_or("unknown"),
            k8s_openapi::jiff::Timestamp::now().as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(event_type.as_str().to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: Some(self.host.clone()),
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now.clone()),
            count: Some(1),
            event_time: None::<MicroTime>,
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone()),
            ..Default::default()
        };
        match events.create(&PostParams::default(), &event).await {
            Ok(_) => {
                let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                if seen.len() >= MAX_REMEMBERED {
                    seen.clear();
                }
                seen.insert(
                    key,
                    Remembered {
                        namespace,
                        name,
                        count: 1,
                        at: Instant::now(),
                    },
                );
            }
            Err(error) => warn!(%error, reason, "recording an event failed"),
        }
    }
}
