//! Fault injection: failed requests, latency, dropped watches (once or periodically),
//! expired re-watches (410 Gone), outages, compaction.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;

use super::status::ApiError;

/// Which requests a rule applies to. Empty fields match everything.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    #[serde(default)]
    pub verb: Option<String>,
    /// The resource as accounting names it: `pods`, `pods/status`,
    /// `nodeimages.apps.kruise.io/status`.
    #[serde(default)]
    pub resource: Option<String>,
    /// A prefix of the client's User-Agent, e.g. `kruised/`: faults for one client only,
    /// so the test's own requests, the kubelet stand-in's and the agent's can be told apart.
    #[serde(default)]
    pub user_agent: Option<String>,
}

impl Matcher {
    fn matches(&self, verb: &str, resource: &str, user_agent: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb)
            && self
                .user_agent
                .as_deref()
                .is_none_or(|prefix| user_agent.starts_with(prefix))
            && self.resource.as_deref().is_none_or(|r| {
                // "pods" also matches "pods/status": a resource names all its subresources.
                r == resource
                    || resource
                        .strip_prefix(r)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

/// Fail matching requests with an error status.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailRule {
    /// Which requests.
    #[serde(flatten)]
    pub matcher: Matcher,
    /// 500, 503 or 429.
    pub code: u16,
    /// Fail only this many requests, then stop (unset: no count limit).
    #[serde(default)]
    pub count: Option<u32>,
    /// Fail this percentage of matching requests (unset: all).
    #[serde(default)]
    pub percent: Option<u8>,
    /// Stop after this many seconds (unset: no time limit).
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    /// `Retry-After` seconds (429 and 503).
    #[serde(default)]
    pub retry_after_seconds: Option<u32>,
}

/// Delay matching requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyRule {
    /// Which requests.
    #[serde(flatten)]
    pub matcher: Matcher,
    /// Added delay.
    pub millis: u64,
    /// Stop after this many seconds (unset: until cleared).
    #[serde(default)]
    pub duration_seconds: Option<f64>,
}

/// Answer re-watches (watches from a resourceVersion) with 410 Gone, as an API server
/// whose watch cache no longer holds that resourceVersion does.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpireRule {
    /// Which watches (the verb is always `watch`).
    #[serde(flatten)]
    pub matcher: Matcher,
    /// Expire only this many re-watches, then stop (unset: no count limit).
    #[serde(default)]
    pub count: Option<u32>,
    /// Stop after this many seconds (unset: no time limit).
    #[serde(default)]
    pub duration_seconds: Option<f64>,
}

struct ActiveExpire {
    rule: ExpireRule,
    until: Option<Instant>,
    expired: u32,
}

struct ActiveFail {
    rule: FailRule,
    until: Option<Instant>,
    seen: u64,
    failed: u32,
}

struct ActiveLatency {
    rule: LatencyRule,
    until: Option<Instant>,
}

/// The fault-injection switchboard shared by the API handlers and the admin endpoint.
pub struct Faults {
    fails: Mutex<Vec<ActiveFail>>,
    latencies: Mutex<Vec<ActiveLatency>>,
    expiries: Mutex<Vec<ActiveExpire>>,
    watch_generation: watch::Sender<u64>,
    outage: watch::Sender<Option<Instant>>,
    /// Re-watches answered 410 Gone by an [`ExpireRule`].
    expired_watches: AtomicU64,
    /// Requests failed by a [`FailRule`].
    injected_failures: AtomicU64,
    /// Bumped by [`Faults::clear`]: periodic watch drops started before it stop.
    epoch: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new()
    }
}

fn until(seconds: Option<f64>) -> Option<Instant> {
    seconds.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)))
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Self {
            fails: Mutex::new(Vec::new()),
            latencies: Mutex::new(Vec::new()),
            expiries: Mutex::new(Vec::new()),
            watch_generation: watch::channel(0).0,
            outage: watch::channel(None).0,
            expired_watches: AtomicU64::new(0),
            injected_failures: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    /// Adds a failure rule.
    pub fn fail(&self, rule: FailRule) {
        let until = until(rule.duration_seconds);
        lock(&self.fails).push(ActiveFail {
            rule,
            until,
            seen: 0,
            failed: 0,
        });
    }

    /// Fails the next `count` requests matching `verb`/`resource` with `code`.
    pub fn fail_next(&self, verb: Option<&str>, resource: Option<&str>, count: u32, code: u16) {
        self.fail(FailRule {
            matcher: Matcher {
                verb: verb.map(str::to_string),
                resource: resource.map(str::to_string),
                user_agent: None,
            },
            code,
            count: Some(count),
            percent: None,
            duration_seconds: None,
            retry_after_seconds: (code == 429 || code == 503).then_some(1),
        });
    }

    /// Adds a latency rule.
    pub fn add_latency(&self, rule: LatencyRule) {
        let until = until(rule.duration_seconds);
        lock(&self.latencies).push(ActiveLatency { rule, until });
    }

    /// Ends every open watch now; clients re-watch from their last resourceVersion.
    pub fn drop_watches(&self) {
        self.watch_generation.send_modify(|g| *g += 1);
    }

    /// Ends every open watch now and then every `every` until `duration` has passed (or
    /// [`Faults::clear`]); each client re-watches in between. Needs a tokio runtime; the
    /// handle ends with the drops.
    pub fn drop_watches_every(
        self: &Arc<Self>,
        every: Duration,
        duration: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let faults = Arc::downgrade(self);
        let epoch = self.epoch.load(Ordering::SeqCst);
        let end = Instant::now() + duration;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
            loop {
                ticks.tick().await;
                let Some(faults) = faults.upgrade() else {
                    return;
                };
                if Instant::now() >= end || faults.epoch.load(Ordering::SeqCst) != epoch {
                    return;
                }
                faults.drop_watches();
            }
        })
    }

    /// How many times watches were dropped so far.
    pub fn watch_drops_done(&self) -> u64 {
        *self.watch_generation.borrow()
    }

    /// Adds a rule expiring re-watches with 410 Gone.
    pub fn expire_watches(&self, rule: ExpireRule) {
        let until = until(rule.duration_seconds);
        lock(&self.expiries).push(ActiveExpire {
            rule,
            until,
            expired: 0,
        });
    }

    /// Whether a watch of `resource` from a resourceVersion by `user_agent` must be
    /// answered 410 Gone (counts it when so).
    pub fn check_rewatch(&self, resource: &str, user_agent: &str) -> bool {
        let now = Instant::now();
        let mut expiries = lock(&self.expiries);
        expiries.retain(|e| {
            e.until.is_none_or(|u| now < u) && e.rule.count.is_none_or(|c| e.expired < c)
        });
        let Some(expiry) = expiries
            .iter_mut()
            .find(|e| e.rule.matcher.matches("watch", resource, user_agent))
        else {
            return false;
        };
        expiry.expired += 1;
        self.expired_watches.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// How many re-watches were answered 410 Gone by an [`ExpireRule`].
    pub fn expired_watches(&self) -> u64 {
        self.expired_watches.load(Ordering::SeqCst)
    }

    /// How many requests [`FailRule`]s have failed so far.
    pub fn injected_failures(&self) -> u64 {
        self.injected_failures.load(Ordering::SeqCst)
    }

    /// A receiver that changes whenever watches must be dropped.
    pub fn watch_drops(&self) -> watch::Receiver<u64> {
        self.watch_generation.subscribe()
    }

    /// Makes the server refuse connections for `duration`.
    pub fn outage(&self, duration: Duration) {
        // send_replace stores the value even before the listener task subscribes.
        self.outage.send_replace(Some(Instant::now() + duration));
    }

    /// The outage signal the listener follows.
    pub fn outages(&self) -> watch::Receiver<Option<Instant>> {
        self.outage.subscribe()
    }

    /// Removes every rule and stops periodic watch drops (an ongoing outage still ends on
    /// its own).
    pub fn clear(&self) {
        lock(&self.fails).clear();
        lock(&self.latencies).clear();
        lock(&self.expiries).clear();
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// [`Faults::check_request`] for a request without a User-Agent.
    pub fn check(&self, verb: &str, resource: &str) -> (Duration, Option<ApiError>) {
        self.check_request(verb, resource, "")
    }

    /// What to do with a request: the delay to add, then an error to answer, if any.
    pub fn check_request(
        &self,
        verb: &str,
        resource: &str,
        user_agent: &str,
    ) -> (Duration, Option<ApiError>) {
        let now = Instant::now();
        let mut delay = Duration::ZERO;
        {
            let mut latencies = lock(&self.latencies);
            latencies.retain(|l| l.until.is_none_or(|u| now < u));
            for latency in latencies
                .iter()
                .filter(|l| l.rule.matcher.matches(verb, resource, user_agent))
            {
                delay += Duration::from_millis(latency.rule.millis);
            }
        }
        let mut fails = lock(&self.fails);
        fails.retain(|f| {
            f.until.is_none_or(|u| now < u) && f.rule.count.is_none_or(|c| f.failed < c)
        });
        for fail in fails
            .iter_mut()
            .filter(|f| f.rule.matcher.matches(verb, resource, user_agent))
        {
            fail.seen += 1;
            // Deterministic spreading: with percent p, fail whenever the running share
            // of failures falls below p. Tests get the same sequence every run.
            let hit = match fail.rule.percent {
                None => true,
                Some(percent) => (fail.failed as u64) * 100 < fail.seen * percent.min(100) as u64,
            };
            if hit {
                fail.failed += 1;
                self.injected_failures.fetch_add(1, Ordering::SeqCst);
                return (
                    delay,
                    Some(ApiError::injected(
                        fail.rule.code,
                        fail.rule.retry_after_seconds,
                    )),
                );
            }
        }
        (delay, None)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_applies_exactly_n_times_to_matching_requests() {
        let faults = Faults::new();
        faults.fail_next(Some("list"), Some("pods"), 2, 500);
        assert!(faults.check("get", "pods").1.is_none());
        assert_eq!(faults.check("list", "pods").1.unwrap().code, 500);
        assert!(faults.check("list", "nodes").1.is_none());
        assert_eq!(faults.check("list", "pods").1.unwrap().code, 500);
        assert!(faults.check("list", "pods").1.is_none());
    }

    #[test]
    fn resource_matches_its_subresources_and_429_carries_retry_after() {
        let faults = Faults::new();
        faults.fail_next(None, Some("pods"), 1, 429);
        let error = faults.check("update", "pods/status").1.unwrap();
        assert_eq!(error.code, 429);
        assert_eq!(error.retry_after, Some(1));
    }

    #[test]
    fn percent_rules_fail_that_share_of_requests() {
        let faults = Faults::new();
        faults.fail(FailRule {
            matcher: Matcher::default(),
            code: 500,
            count: None,
            percent: Some(30),
            duration_seconds: None,
            retry_after_seconds: None,
        });
        let failed = (0..100)
            .filter(|_| faults.check("get", "pods").1.is_some())
            .count();
        assert_eq!(failed, 30);
        assert_eq!(faults.injected_failures(), 30);
    }

    #[test]
    fn latency_adds_up_and_clear_removes_rules() {
        let faults = Faults::new();
        faults.add_latency(LatencyRule {
            matcher: Matcher {
                verb: Some("get".into()),
                resource: None,
                user_agent: None,
            },
            millis: 40,
            duration_seconds: None,
        });
        assert_eq!(faults.check("get", "pods").0, Duration::from_millis(40));
        assert_eq!(faults.check("list", "pods").0, Duration::ZERO);
        faults.clear();
        assert_eq!(faults.check("get", "pods").0, Duration::ZERO);
    }

    #[test]
    fn a_user_agent_matcher_faults_only_that_client() {
        let faults = Faults::new();
        faults.fail(FailRule {
            matcher: Matcher {
                user_agent: Some("kruised/".into()),
                ..Matcher::default()
            },
            code: 500,
            count: None,
            percent: None,
            duration_seconds: None,
            retry_after_seconds: None,
        });
        assert!(faults.check_request("get", "pods", "kube-rs").1.is_none());
        assert!(faults.check_request("get", "pods", "").1.is_none());
        assert_eq!(
            faults
                .check_request("get", "pods", "kruised/0.1.0")
                .1
                .unwrap()
                .code,
            500
        );
    }

    #[test]
    fn expire_rules_answer_that_many_rewatches_of_the_matching_resource() {
        let faults = Faults::new();
        faults.expire_watches(ExpireRule {
            matcher: Matcher {
                resource: Some("pods".into()),
                ..Matcher::default()
            },
            count: Some(2),
            duration_seconds: None,
        });
        assert!(!faults.check_rewatch("nodes", ""));
        assert!(faults.check_rewatch("pods", ""));
        assert!(faults.check_rewatch("pods", ""));
        assert!(!faults.check_rewatch("pods", ""));
        assert_eq!(faults.expired_watches(), 2);
    }

    #[test]
    fn clear_removes_expire_rules() {
        let faults = Faults::new();
        faults.expire_watches(ExpireRule {
            matcher: Matcher::default(),
            count: None,
            duration_seconds: None,
        });
        faults.clear();
        assert!(!faults.check_rewatch("pods", ""));
    }

    #[tokio::test]
    async fn periodic_drops_repeat_and_end_with_the_duration() {
        let faults = Arc::new(Faults::new());
        let task = faults.drop_watches_every(Duration::from_millis(20), Duration::from_millis(300));
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the drops end after their duration")
            .unwrap();
        assert!(
            faults.watch_drops_done() >= 2,
            "{}",
            faults.watch_drops_done()
        );
    }

    #[tokio::test]
    async fn clear_stops_periodic_drops() {
        let faults = Arc::new(Faults::new());
        let task = faults.drop_watches_every(Duration::from_millis(10), Duration::from_secs(3600));
        let mut drops = faults.watch_drops();
        drops.changed().await.unwrap();
        faults.clear();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("clear ends the drops long before their hour")
            .unwrap();
    }
}
