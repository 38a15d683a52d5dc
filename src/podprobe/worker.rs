//! One probe worker: one probe of one container, on its period (kruise's `worker`, §5.3).
//!
//! Each tick:
//!
//! 1. find the pod's newest container of that name through CRI (`ListContainers` by pod UID,
//!    newest `CreatedAt`, then `ContainerStatus`); none, no tick;
//! 2. a new container ID drops the old container's result and records `Unknown` for the new one;
//! 3. a container that is not running records `Failed` with kruise's `Container(<name>) is
//!    Non-running` (kruise then runs the probe anyway; kruised does not, so the result does not
//!    flip between that message and the probe's own every tick);
//! 4. the probe waits `initialDelaySeconds` (at least 1) after the container started;
//! 5. the probe runs with `timeoutSeconds` (at least 1); a result is recorded once it has come
//!    `successThreshold` or `failureThreshold` times in a row (each at least 1, kruise's
//!    defaults rather than the kubelet's). A probe that could not run is logged and changes
//!    nothing.
//!
//! A worker stops when its spec sender is dropped or its task is aborted; either way its
//! result leaves the cache with it.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::handlers::{self, Outcome, Target};
use super::{ProbeKey, ResultCache, truncate_message};
use crate::api::ProbeState;
use crate::cri::CriClient;
use crate::metrics::ProbeMetrics;
use crate::proto::runtime::v1 as cri;

/// What every worker shares.
pub struct WorkerContext {
    /// The runtime probes run against (kruise: the first runtime found).
    pub cri: CriClient,
    /// Where results go.
    pub results: Arc<ResultCache>,
    /// Probe metrics, if exported.
    pub metrics: Option<ProbeMetrics>,
    /// When the agent started: workers started within one period of it wait a random part of
    /// the period first, so that a restart does not fire every probe at once.
    pub agent_started: Instant,
}

/// The state of one probe between ticks.
pub struct Worker {
    key: ProbeKey,
    probe: Probe,
    results: Arc<ResultCache>,
    container_id: Option<String>,
    last: Option<ProbeState>,
    run: i32,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(container_id) = &self.container_id {
            self.results.remove(container_id, &self.key);
        }
    }
}

/// `value`, or 1 when it is not positive (kruise's defaults for thresholds and delays).
fn at_least_one(value: Option<i32>) -> i32 {
    value.filter(|value| *value > 0).unwrap_or(1)
}

impl Worker {
    /// A worker for `key` running `probe`, recording into `results`.
    pub fn new(key: ProbeKey, probe: Probe, results: Arc<ResultCache>) -> Self {
        Self {
            key,
            probe,
            results,
            container_id: None,
            last: None,
            run: 0,
        }
    }

    /// The probe's key.
    pub fn key(&self) -> &ProbeKey {
        &self.key
    }

    /// `periodSeconds`, at least 1 s.
    pub fn period(&self) -> Duration {
        Duration::from_secs(
            at_least_one(self.probe.period_seconds)
                .unsigned_abs()
                .into(),
        )
    }

    /// Takes a changed spec. A changed handler resets the result to `Unknown` (kruise's
    /// `updateProbeSpec`); timing and thresholds apply from the next tick.
    pub fn update_spec(&mut self, probe: Probe, now: Timestamp) {
        if !handlers::same_handler(&self.probe, &probe) {
            if let Some(container_id) = &self.container_id {
                info!(probe = %self.key, "probe handler changed; result reset to Unknown");
                self.results
                    .set(container_id, &self.key, ProbeState::Unknown, "", now);
            }
            self.last = None;
            self.run = 0;
        }
        self.probe = probe;
    }

    /// Counts `state` into the run of equal results; whether the run reached its threshold.
    fn reaches_threshold(&mut self, state: ProbeState) -> bool {
        if self.last == Some(state) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(state);
            self.run = 1;
        }
        let threshold = match state {
            ProbeState::Succeeded => at_least_one(self.probe.success_threshold),
            _ => at_least_one(self.probe.failure_threshold),
        };
        self.run >= threshold
    }

    /// One tick (see the [module docs](self)).
    pub async fn probe_once(&mut self, context: &WorkerContext) {
        let Some(container) = self.latest_container(&context.cri).await else {
            return;
        };
        let now = Timestamp::now();
        if self.container_id.as_deref() != Some(container.id.as_str()) {
            if let Some(old) = self.container_id.take() {
                debug!(probe = %self.key, %old, new = %container.id, "container replaced");
                self.results.remove(&old, &self.key);
            }
            self.container_id = Some(container.id.clone());
            self.last = None;
            self.run = 0;
            self.results
                .set(&container.id, &self.key, ProbeState::Unknown, "", now);
        }
        if container.state != cri::ContainerState::ContainerRunning as i32 {
            let message = format!("Container({}) is Non-running", self.key.container_name);
            self.results
                .set(&container.id, &self.key, ProbeState::Failed, &message, now);
            return;
        }
        let initial_delay = i64::from(at_least_one(self.probe.initial_delay_seconds));
        let running_for = (now.as_nanosecond() - i128::from(container.started_at)) / 1_000_000_000;
        if running_for < i128::from(initial_delay) {
            return;
        }

        let ports = handlers::container_ports(&container.annotations);
        let target = Target {
            cri: &context.cri,
            container_id: &container.id,
            container_name: &self.key.container_name,
            pod_ip: &self.key.pod_ip,
            ports: &ports,
        };
        let started = Instant::now();
        let outcome = handlers::run(&self.probe, &target).await;
        let handler = handlers::handler_label(&self.probe);
        let (state, message) = match outcome {
            Ok(Outcome::Success(message)) => (ProbeState::Succeeded, message),
            Ok(Outcome::Failure(message)) => (ProbeState::Failed, message),
            Err(error) => {
                if let Some(metrics) = &context.metrics {
                    metrics.observe_run(handler, "error", started.elapsed().as_secs_f64());
                }
                warn!(probe = %self.key, %error, "probe could not run");
                return;
            }
        };
        if let Some(metrics) = &context.metrics {
            let result = if state == ProbeState::Succeeded {
                "succeeded"
            } else {
                "failed"
            };
            metrics.observe_run(handler, result, started.elapsed().as_secs_f64());
        }
        if self.reaches_threshold(state) {
            self.results.set(
                &container.id,
                &self.key,
                state,
                &truncate_message(&message),
                Timestamp::now(),
            );
        }
    }

    /// The newest container of the probe's name in the pod, with its status.
    async fn latest_container(&self, cri: &CriClient) -> Option<cri::ContainerStatus> {
        let containers = match cri.list_pod_containers(&self.key.pod_uid).await {
            Ok(containers) => containers,
            Err(error) => {
                warn!(probe = %self.key, %error, "listing the pod's containers failed");
                return None;
            }
        };
        let newest = containers
            .into_iter()
            .filter(|container| {
                container
                    .metadata
                    .as_ref()
                    .is_some_and(|metadata| metadata.name == self.key.container_name)
            })
            .max_by_key(|container| container.created_at)?;
        match cri.container_status(&newest.id).await {
            Ok(status) => Some(status),
            Err(error) => {
                warn!(probe = %self.key, container_id = %newest.id, %error, "reading the container's status failed");
                None
            }
        }
    }
}

/// A random part of `period`, without a random number crate: `RandomState` is seeded
/// randomly per process and per instance.
fn random_part(period: Duration, key: &ProbeKey) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(key);
    let fraction = (random % 1_000_000) as f64 / 1_000_000.0;
    period.mul_f64(fraction)
}

/// Runs `worker` until `spec` closes (or the task is aborted), taking spec changes as they
/// come.
pub async fn run(
    mut worker: Worker,
    mut spec: watch::Receiver<Probe>,
    context: Arc<WorkerContext>,
) {
    let _running = context.metrics.as_ref().map(ProbeMetrics::worker_running);
    let mut period = worker.period();
    if context.agent_started.elapsed() < period {
        let pause = random_part(period, worker.key());
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            closed = spec.changed() => {
                if closed.is_err() {
                    return;
                }
                worker.update_spec(spec.borrow_and_update().clone(), Timestamp::now());
                period = worker.period();
            }
        }
    }
    let mut ticks = interval(period);
    loop {
        tokio::select! {
            changed = spec.changed() => {
                if changed.is_err() {
                    return;
                }
                worker.update_spec(spec.borrow_and_update().clone(), Timestamp::now());
                if worker.period() != period {
                    period = worker.period();
                    ticks = interval(period);
                    // The next run comes one new period after the change, not at once.
                    ticks.reset();
                }
            }
            scheduled = ticks.tick() => {
                if let Some(metrics) = &context.metrics {
                    metrics.observe_schedule_delay(scheduled.elapsed().as_secs_f64());
                }
                worker.probe_once(&context).await;
            }
        }
    }
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(period);
    // After a slow probe, keep the period between runs rather than bursting to catch up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

#[cfg(test)]
mod tests;
