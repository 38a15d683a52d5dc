//! Request accounting: count and response bytes by verb, resource and user agent.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// One accounting row.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// The verb.
    pub verb: String,
    /// The resource, e.g. `pods`, `nodeimages.apps.kruise.io/status`, `discovery`.
    pub resource: String,
    /// The client's User-Agent.
    pub user_agent: String,
    /// Requests seen.
    pub requests: u64,
    /// Response body bytes sent (streamed watch bytes included).
    pub response_bytes: u64,
}

/// The accounting table.
#[derive(Debug, Default)]
pub struct Accounting {
    rows: Mutex<BTreeMap<(String, String, String), Usage>>,
    /// Watches open now, by (resource, user agent): the scale benchmark's connections per
    /// agent. Not cleared by [`Accounting::reset`]: it is a gauge, not a count.
    open_watches: Mutex<BTreeMap<(String, String), u64>>,
}

/// An open watch; the gauge goes down when it is dropped.
#[derive(Debug)]
pub struct OpenWatch {
    accounting: std::sync::Arc<Accounting>,
    key: (String, String),
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        let mut open = self
            .accounting
            .open_watches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl Accounting {
    /// Counts one request.
    pub fn request(&self, verb: &str, resource: &str, user_agent: &str) {
        self.with_row(verb, resource, user_agent, |row| row.requests += 1);
    }

    /// Adds response bytes.
    pub fn bytes(&self, verb: &str, resource: &str, user_agent: &str, bytes: u64) {
        self.with_row(verb, resource, user_agent, |row| {
            row.response_bytes += bytes
        });
    }

    fn with_row(&self, verb: &str, resource: &str, user_agent: &str, f: impl FnOnce(&mut Usage)) {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let row = rows
            .entry((
                verb.to_string(),
                resource.to_string(),
                user_agent.to_string(),
            ))
            .or_insert_with(|| Usage {
                verb: verb.to_string(),
                resource: resource.to_string(),
                user_agent: user_agent.to_string(),
                ..Default::default()
            });
        f(row);
    }

    /// Every row, ordered by verb, resource and user agent.
    pub fn snapshot(&self) -> Vec<Usage> {
        self.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Counts a watch as open until the returned guard is dropped.
    pub fn watch_opened(
        self: &std::sync::Arc<Self>,
        resource: &str,
        user_agent: &str,
    ) -> OpenWatch {
        let key = (resource.to_string(), user_agent.to_string());
        *self
            .open_watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default() += 1;
        OpenWatch {
            accounting: std::sync::Arc::clone(self),
            key,
        }
    }

    /// Watches open now: `(resource, user agent, count)`.
    pub fn open_watches(&self) -> Vec<(String, String, u64)> {
        self.open_watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((resource, agent), count)| (resource.clone(), agent.clone(), *count))
            .collect()
    }

    /// Forgets everything counted so far.
    pub fn reset(&self) {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_and_bytes_per_key() {
        let accounting = Accounting::default();
        accounting.request("list", "pods", "kruised/0.1.0");
        accounting.bytes("list", "pods", "kruised/0.1.0", 100);
        accounting.request("list", "pods", "kruised/0.1.0");
        accounting.request("watch", "pods", "kubectl");
        let rows = accounting.snapshot();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].requests, 2);
        assert_eq!(rows[0].response_bytes, 100);
        accounting.reset();
        assert!(accounting.snapshot().is_empty());
    }

    #[test]
    fn open_watches_are_a_gauge_that_reset_keeps() {
        let accounting = std::sync::Arc::new(Accounting::default());
        let first = accounting.watch_opened("pods", "kruised/0.1.0");
        let second = accounting.watch_opened("pods", "kruised/0.1.0");
        accounting.reset();
        assert_eq!(
            accounting.open_watches(),
            vec![("pods".to_string(), "kruised/0.1.0".to_string(), 2)]
        );
        drop(first);
        assert_eq!(accounting.open_watches()[0].2, 1);
        drop(second);
        assert!(accounting.open_watches().is_empty());
    }
}
