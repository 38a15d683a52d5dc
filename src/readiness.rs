//! Readiness as a set of latches: ready when every registered check is released.
//!
//! Each subsystem (CRI connection, each watch) registers one check at start-up and
//! flips it; nothing else decides readiness, so there are no scattered flags.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The registry of readiness checks. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

/// One named check; set it ready or not ready as its subsystem's state changes.
#[derive(Debug, Clone)]
pub struct ReadinessCheck {
    name: &'static str,
    checks: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Readiness {
    /// An empty registry (ready, until a check is registered).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a check, initially not ready.
    pub fn register(&self, name: &'static str) -> ReadinessCheck {
        self.lock().insert(name, false);
        ReadinessCheck {
            name,
            checks: self.checks.clone(),
        }
    }

    /// Names of the checks that are not ready, in name order.
    pub fn pending(&self) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Every check and its state, in name order.
    pub fn snapshot(&self) -> Vec<(&'static str, bool)> {
        self.lock().iter().map(|(n, r)| (*n, *r)).collect()
    }

    /// Whether every check is ready.
    pub fn is_ready(&self) -> bool {
        self.pending().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, bool>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map of
        // booleans is still consistent.
        self.checks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ReadinessCheck {
    /// Marks this check ready or not ready.
    pub fn set(&self, ready: bool) {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.name, ready);
    }

    /// Whether this check is currently ready.
    pub fn is_ready(&self) -> bool {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(self.name)
            .copied()
            .unwrap_or(false)
    }

    /// The check's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_is_released() {
        let readiness = Readiness::new();
        assert!(readiness.is_ready());
        let cri = readiness.register("cri");
        let watch = readiness.register("nodeImageInformerSynced");
        assert_eq!(readiness.pending(), vec!["cri", "nodeImageInformerSynced"]);
        cri.set(true);
        assert!(!readiness.is_ready());
        watch.set(true);
        assert!(readiness.is_ready());
        cri.set(false);
        assert_eq!(readiness.pending(), vec!["cri"]);
    }
}
