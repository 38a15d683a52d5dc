//! Kubernetes Events, written as core `v1` Events like kruise-daemon's client-go
//! recorder (§1.4), so the RBAC of §8.3 (`events` in the core group) is all we need.
//!
//! Repeats of the same event (same object, type, reason and message) within
//! [`DEDUP_WINDOW`] bump `count` and `lastTimestamp` on the existing Event instead of
//! creating another, as client-go's EventCorrelator does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
/// Attempts per event write, as client-go's `maxTriesPerEvent`: an API server answering
/// 500/429 or briefly unreachable must not lose the event.
const MAX_ATTEMPTS: u32 = 12;
/// Delay before the first retry; doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// The longest delay between retries (client-go sleeps 10 s between tries).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// Upper bound on events being retried at once: an outage during bad input in bulk must
/// not pile up tasks; past it an event is dropped (and logged).
const MAX_RETRYING: usize = 256;

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

type Seen = Arc<Mutex<HashMap<Key, Remembered>>>;

/// A write of an event that failed for a reason that may pass.
enum Write {
    /// Bump the count of an existing event.
    Patch {
        namespace: String,
        name: String,
        patch: serde_json::Value,
    },
    /// Create a new event, remembered under `key` once created.
    Create { key: Key, event: Box<Event> },
}

/// Records events for one component (e.g. `kruise-daemon-imagepuller`) on one node.
/// A write failing with 5xx, 429 or no answer is retried in the background (up to
/// [`MAX_ATTEMPTS`] in all), so the caller's work is never held up by its events.
pub struct Recorder {
    client: kube::Client,
    component: String,
    host: String,
    seen: Seen,
    retrying: Arc<AtomicUsize>,
    first_retry_delay: Duration,
}

impl Recorder {
    /// A recorder; `component` and `host` become the event's `source`.
    pub fn new(client: kube::Client, component: &str, host: &str) -> Self {
        Self {
            client,
            component: component.to_string(),
            host: host.to_string(),
            seen: Arc::new(Mutex::new(HashMap::new())),
            retrying: Arc::new(AtomicUsize::new(0)),
            first_retry_delay: FIRST_RETRY_DELAY,
        }
    }

    /// The same recorder with another delay before the first retry (tests).
    pub fn with_first_retry_delay(mut self, delay: Duration) -> Self {
        self.first_retry_delay = delay;
        self
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
                Err(error) if transient(&error) => {
                    warn!(%error, reason, "updating an event failed; retrying");
                    self.retry(Write::Patch {
                        namespace,
                        name,
                        patch,
                    });
                    return;
                }
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
            Ok(_) => remember(&self.seen, key, &event),
            Err(error) if transient(&error) => {
                warn!(%error, reason, "recording an event failed; retrying");
                self.retry(Write::Create {
                    key,
                    event: Box::new(event),
                });
            }
            Err(error) => warn!(%error, reason, "recording an event failed"),
        }
    }

    /// Retries `write` in the background, with a doubling delay.
    fn retry(&self, write: Write) {
        if self.retrying.fetch_add(1, Ordering::SeqCst) >= MAX_RETRYING {
            self.retrying.fetch_sub(1, Ordering::SeqCst);
            warn!("too many events waiting for a retry; dropping one");
            return;
        }
        let client = self.client.clone();
        let seen = self.seen.clone();
        let retrying = self.retrying.clone();
        let mut delay = self.first_retry_delay;
        tokio::spawn(async move {
            for attempt in 2..=MAX_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                let result = match &write {
                    Write::Patch {
                        namespace,
                        name,
                        patch,
                    } => Api::<Event>::namespaced(client.clone(), namespace)
                        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .map(drop),
                    Write::Create { key, event } => {
                        let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
                        match Api::<Event>::namespaced(client.clone(), namespace)
                            .create(&PostParams::default(), event)
                            .await
                        {
                            // An earlier attempt got through after all.
                            Ok(_) => {
                                remember(&seen, key.clone(), event);
                                Ok(())
                            }
                            Err(kube::Error::Api(status)) if status.code == 409 => {
                                remember(&seen, key.clone(), event);
                                Ok(())
                            }
                            Err(error) => Err(error),
                        }
                    }
                };
                match result {
                    Ok(()) => break,
                    Err(error) if transient(&error) && attempt < MAX_ATTEMPTS => {}
                    Err(error) => {
                        warn!(%error, attempt, "writing an event failed; giving up");
                        break;
                    }
                }
            }
            retrying.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Remembers a created event for de-duplication.
fn remember(seen: &Seen, key: Key, event: &Event) {
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    if seen.len() >= MAX_REMEMBERED {
        seen.clear();
    }
    seen.insert(
        key,
        Remembered {
            namespace: event.metadata.namespace.clone().unwrap_or_default(),
            name: event.metadata.name.clone().unwrap_or_default(),
            count: 1,
            at: Instant::now(),
        },
    );
}

/// Whether a failed write may succeed later: the API server overloaded, failing or not
/// answering (not a rejection of the event itself).
fn transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An API server that answers the first `failures` event creates with 500, then 201
    /// (echoing the event); counts the creates.
    async fn flaky_server(failures: u32) -> (String, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let creates = Arc::new(AtomicU32::new(0));
        let counter = creates.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let (head, body_start) = loop {
                        let n = stream.read(&mut buffer).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buffer[..n]);
                        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                            break (String::from_utf8_lossy(&data[..end]).to_string(), end + 4);
                        }
                    };
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    while data.len() < body_start + length {
                        let n = stream.read(&mut buffer).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buffer[..n]);
                    }
                    let body = String::from_utf8_lossy(&data[body_start..]).to_string();
                    let seen = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let (status, reply) = if seen <= failures {
                        (
                            "500 Internal Server Error",
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": "injected", "reason": "InternalError", "code": 500})
                            .to_string(),
                        )
                    } else {
                        ("201 Created", body)
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        (url, creates)
    }

    fn pod() -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("default".into()),
            name: Some("p".into()),
            uid: Some("u".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_event_refused_with_500_is_retried_until_created_and_then_remembered() {
        let (url, creates) = flaky_server(2).await;
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let recorder =
            Recorder::new(client, "test", "node").with_first_retry_delay(Duration::from_millis(10));
        recorder
            .publish(&pod(), EventType::Normal, "Killing", "stopping")
            .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while recorder.retrying.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "the retry never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            creates.load(Ordering::SeqCst),
            3,
            "two refusals, then created"
        );
        assert_eq!(
            recorder.seen.lock().unwrap().len(),
            1,
            "the created event is remembered for de-duplication"
        );
    }

    #[tokio::test]
    async fn an_event_rejected_as_invalid_is_not_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let creates = Arc::new(AtomicU32::new(0));
        let counter = creates.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0u8; 8192];
                let _ = stream.read(&mut buffer).await;
                let reply = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": "invalid", "reason": "Invalid", "code": 422})
                .to_string();
                let response = format!(
                    "HTTP/1.1 422 Unprocessable Entity\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let recorder = Recorder::new(client, "test", "node");
        recorder
            .publish(&pod(), EventType::Warning, "Bad", "bad")
            .await;
        assert_eq!(recorder.retrying.load(Ordering::SeqCst), 0);
        assert_eq!(creates.load(Ordering::SeqCst), 1);
    }
}
