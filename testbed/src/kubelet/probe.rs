//! Readiness probes. Exec probes run through CRI `ExecSync`; other handlers (HTTP, TCP,
//! gRPC) are not run and a running container counts as ready, as without a probe.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};

/// The exec readiness probe of `container`, if it has one with a command.
pub fn exec_readiness_probe(container: &Container) -> Option<&Probe> {
    container.readiness_probe.as_ref().filter(|probe| {
        probe
            .exec
            .as_ref()
            .and_then(|exec| exec.command.as_ref())
            .is_some_and(|command| !command.is_empty())
    })
}

/// The probe's timing and thresholds with the API server's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// `initialDelaySeconds` (default 0).
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10, at least 1).
    pub period: Duration,
    /// `timeoutSeconds` (default 1, at least 1).
    pub timeout: Duration,
    /// `successThreshold` (default 1).
    pub success_threshold: u32,
    /// `failureThreshold` (default 3).
    pub failure_threshold: u32,
}

impl ProbeTiming {
    /// The timing of `probe`.
    pub fn of(probe: &Probe) -> Self {
        let seconds = |value: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(value.unwrap_or(default).max(min) as u64)
        };
        let count = |value: Option<i32>, default: i32| value.unwrap_or(default).max(1) as u32;
        Self {
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            timeout: seconds(probe.timeout_seconds, 1, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// The readiness of one container (one container ID) under its probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    ready: bool,
    successes: u32,
    failures: u32,
    next_run: Instant,
}

impl ProbeState {
    /// A container seen running since `first_seen`: not ready until the probe passes, and
    /// first probed after the initial delay.
    pub fn new(timing: &ProbeTiming, first_seen: Instant) -> Self {
        Self {
            ready: false,
            successes: 0,
            failures: 0,
            next_run: first_seen + timing.initial_delay,
        }
    }

    /// Whether the container is ready.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Whether the probe is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_run
    }

    /// Records one probe result at `now`; readiness flips after `successThreshold`
    /// successes or `failureThreshold` failures in a row.
    pub fn record(&mut self, timing: &ProbeTiming, success: bool, now: Instant) {
        if success {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= timing.success_threshold {
                self.ready = true;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= timing.failure_threshold {
                self.ready = false;
            }
        }
        self.next_run = now + timing.period;
    }
}

/// Probe states by container ID.
#[derive(Debug, Default)]
pub struct Prober {
    states: HashMap<String, ProbeState>,
}

impl Prober {
    /// The state for container `id`, created at `now` if new.
    pub fn state(&mut self, id: &str, timing: &ProbeTiming, now: Instant) -> &mut ProbeState {
        self.states
            .entry(id.to_string())
            .or_insert_with(|| ProbeState::new(timing, now))
    }

    /// Readiness by container ID, for the containers that have an exec probe.
    pub fn readiness(&self) -> HashMap<String, bool> {
        self.states
            .iter()
            .map(|(id, state)| (id.clone(), state.ready()))
            .collect()
    }

    /// Forgets containers that are no longer running.
    pub fn retain(&mut self, running: &[&str]) {
        self.states.retain(|id, _| running.contains(&id.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ExecAction;

    fn probe() -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            initial_delay_seconds: Some(2),
            period_seconds: Some(1),
            success_threshold: Some(2),
            failure_threshold: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn only_exec_probes_with_a_command_are_run() {
        let mut container = Container {
            readiness_probe: Some(probe()),
            ..Default::default()
        };
        assert!(exec_readiness_probe(&container).is_some());
        container.readiness_probe.as_mut().unwrap().exec = None;
        assert!(exec_readiness_probe(&container).is_none());
        container.readiness_probe = None;
        assert!(exec_readiness_probe(&container).is_none());
    }

    #[test]
    fn defaults_follow_the_api_server() {
        let timing = ProbeTiming::of(&Probe::default());
        assert_eq!(
            timing,
            ProbeTiming {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
    }

    #[test]
    fn readiness_waits_for_the_initial_delay_and_honours_thresholds() {
        let timing = ProbeTiming::of(&probe());
        let start = Instant::now();
        let mut state = ProbeState::new(&timing, start);
        assert!(!state.ready());
        assert!(!state.due(start + Duration::from_secs(1)));
        let mut now = start + Duration::from_secs(2);
        assert!(state.due(now));

        state.record(&timing, true, now);
        assert!(!state.ready(), "one success of two");
        assert!(!state.due(now));
        now += Duration::from_secs(1);
        assert!(state.due(now));
        state.record(&timing, true, now);
        assert!(state.ready());

        state.record(&timing, false, now);
        assert!(state.ready(), "one failure of two");
        state.record(&timing, true, now);
        state.record(&timing, false, now);
        assert!(state.ready(), "failures must be consecutive");
        state.record(&timing, false, now);
        assert!(!state.ready());
    }

    #[test]
    fn prober_forgets_stopped_containers() {
        let timing = ProbeTiming::of(&probe());
        let now = Instant::now();
        let mut prober = Prober::default();
        prober.state("a", &timing, now).record(&timing, true, now);
        prober.state("a", &timing, now).record(&timing, true, now);
        prober.state("b", &timing, now);
        assert_eq!(
            prober.readiness(),
            HashMap::from([("a".to_string(), true), ("b".to_string(), false)])
        );
        prober.retain(&["b"]);
        assert_eq!(prober.readiness().len(), 1);
    }
}
