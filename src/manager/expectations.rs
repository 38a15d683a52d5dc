//! Resource-version expectations (kruise `pkg/util/expectations`): after a write, the
//! caches lag; a controller that decides from a cached copy older than its own write
//! would decide twice (write a second NodeImage past `parallelism`, bump a version
//! again). So each write records the resourceVersion it produced, and decisions wait
//! until the cache has caught up, or until [`EXPECTATION_TIMEOUT`] passes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a write is waited for before the cache is trusted anyway.
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Written resource versions by object key (`kind/namespace/name`).
#[derive(Debug, Default)]
pub struct Expectations {
    written: Mutex<HashMap<String, (u64, Instant)>>,
}

/// A resourceVersion as a number (etcd revisions; the test bed's too). Opaque or
/// missing versions read as 0, which satisfies nothing and is satisfied by anything.
pub fn numeric(resource_version: Option<&str>) -> u64 {
    resource_version.and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl Expectations {
    /// Records that our write of `key` produced `resource_version`.
    pub fn expect(&self, key: &str, resource_version: Option<&str>) {
        let version = numeric(resource_version);
        if version == 0 {
            return;
        }
        let mut written = self.lock();
        let entry = written
            .entry(key.to_owned())
            .or_insert((version, Instant::now()));
        if version >= entry.0 {
            *entry = (version, Instant::now());
        }
    }

    /// Whether the cached copy at `cached` has caught up with our last write of `key`
    /// (forgetting the expectation when it has, or when it timed out).
    pub fn satisfied(&self, key: &str, cached: Option<&str>) -> bool {
        let mut written = self.lock();
        let Some((version, at)) = written.get(key).copied() else {
            return true;
        };
        if numeric(cached) >= version || at.elapsed() >= EXPECTATION_TIMEOUT {
            written.remove(key);
            return true;
        }
        false
    }

    /// Forgets `key` (the object was deleted).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_cache_is_not_trusted_until_it_catches_up() {
        let expectations = Expectations::default();
        assert!(expectations.satisfied("ni/a", Some("5")));
        expectations.expect("ni/a", Some("10"));
        assert!(!expectations.satisfied("ni/a", Some("9")));
        assert!(expectations.satisfied("ni/a", Some("10")));
        // Forgotten once satisfied.
        assert!(expectations.satisfied("ni/a", Some("1")));
    }

    #[test]
    fn an_older_write_never_lowers_the_expectation() {
        let expectations = Expectations::default();
        expectations.expect("k", Some("10"));
        expectations.expect("k", Some("7"));
        assert!(!expectations.satisfied("k", Some("8")));
    }
}
