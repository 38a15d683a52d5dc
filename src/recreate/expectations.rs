//! Resource-version expectations, kruise's `pkg/util/expectations` (§1.4): after a write the
//! daemon remembers the resourceVersion the API server returned and treats cached copies older
//! than it as stale, for up to [`MAX_EXPECTATION_WAIT`] (§4.4 step 2).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::version::CrrView;

/// How long the daemon waits for its informer to catch up with its own CRR write before it
/// gives up and works from the stale copy (kruise's `maxExpectationWaitDuration`).
pub const MAX_EXPECTATION_WAIT: Duration = Duration::from_secs(10);

/// Whether the cached copy of a CRR is at least as new as the daemon's last write of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// Nothing pending, or the cache caught up.
    Satisfied,
    /// The cache is older than our last write, and has been for `waited`.
    Unsatisfied {
        /// Time since the first check that found the cache stale.
        waited: Duration,
    },
}

/// The expectations hook of the picking pass (§4.4 step 2). Implemented by
/// [`ResourceVersionExpectations`] and by any `FnMut(&CrrView) -> Expectation`.
pub trait WriteExpectations {
    /// Observes the cached copy and tells whether it may be acted on.
    fn check(&mut self, crr: &CrrView, now: Instant) -> Expectation;

    /// Drops what is expected of this CRR (deleted, completed, or waited out).
    fn forget(&mut self, _crr: &CrrView) {}
}

impl<F> WriteExpectations for F
where
    F: FnMut(&CrrView) -> Expectation,
{
    fn check(&mut self, crr: &CrrView, _now: Instant) -> Expectation {
        self(crr)
    }
}

#[derive(Debug, Clone)]
struct Expected {
    resource_version: String,
    first_unsatisfied: Option<Instant>,
}

/// Kruise's `ResourceVersionExpectation`, keyed by object UID, with time passed in.
#[derive(Debug, Clone, Default)]
pub struct ResourceVersionExpectations {
    expected: HashMap<String, Expected>,
}

impl ResourceVersionExpectations {
    /// No expectations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the resourceVersion a write returned for the CRR with this UID. An older
    /// version than one already expected is ignored.
    pub fn expect(&mut self, uid: &str, resource_version: &str) {
        let expected = self
            .expected
            .entry(uid.to_owned())
            .or_insert_with(|| Expected {
                resource_version: String::new(),
                first_unsatisfied: None,
            });
        if is_at_least(&expected.resource_version, resource_version) {
            expected.resource_version = resource_version.to_owned();
        }
    }

    /// Whether anything is expected of this UID.
    pub fn is_expecting(&self, uid: &str) -> bool {
        self.expected.contains_key(uid)
    }
}

impl WriteExpectations for ResourceVersionExpectations {
    fn check(&mut self, crr: &CrrView, now: Instant) -> Expectation {
        let observed = crr.resource_version.as_deref().unwrap_or_default();
        let Some(expected) = self.expected.get_mut(&crr.uid) else {
            return Expectation::Satisfied;
        };
        if is_at_least(&expected.resource_version, observed) {
            self.expected.remove(&crr.uid);
            return Expectation::Satisfied;
        }
        let since = *expected.first_unsatisfied.get_or_insert(now);
        Expectation::Unsatisfied {
            waited: now.saturating_duration_since(since),
        }
    }

    fn forget(&mut self, crr: &CrrView) {
        self.expected.remove(&crr.uid);
    }
}

/// Kruise's `isResourceVersionNewer(old, new)`: `new >= old` as unsigned integers; an empty
/// or non-numeric `old` is always passed, a non-numeric `new` never passes.
fn is_at_least(old: &str, new: &str) -> bool {
    let Ok(old) = old.parse::<u64>() else {
        return true;
    };
    new.parse::<u64>().is_ok_and(|new| new >= old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recreate::testing::crr_with_containers;

    fn crr(resource_version: &str) -> CrrView {
        let mut crr = crr_with_containers(&[]);
        crr.uid = "uid-1".into();
        crr.resource_version = Some(resource_version.into());
        crr
    }

    #[test]
    fn a_stale_cache_is_unsatisfied_until_it_catches_up() {
        let start = Instant::now();
        let mut expectations = ResourceVersionExpectations::new();
        assert_eq!(expectations.check(&crr("5"), start), Expectation::Satisfied);
        expectations.expect("uid-1", "7");
        assert_eq!(
            expectations.check(&crr("6"), start),
            Expectation::Unsatisfied {
                waited: Duration::ZERO
            }
        );
        assert_eq!(
            expectations.check(&crr("6"), start + Duration::from_secs(4)),
            Expectation::Unsatisfied {
                waited: Duration::from_secs(4)
            }
        );
        assert_eq!(
            expectations.check(&crr("7"), start + Duration::from_secs(5)),
            Expectation::Satisfied
        );
        assert!(!expectations.is_expecting("uid-1"));
    }

    #[test]
    fn an_older_write_does_not_lower_the_expectation() {
        let mut expectations = ResourceVersionExpectations::new();
        expectations.expect("uid-1", "9");
        expectations.expect("uid-1", "8");
        assert!(matches!(
            expectations.check(&crr("8"), Instant::now()),
            Expectation::Unsatisfied { .. }
        ));
        expectations.forget(&crr("8"));
        assert_eq!(
            expectations.check(&crr("8"), Instant::now()),
            Expectation::Satisfied
        );
    }
}
