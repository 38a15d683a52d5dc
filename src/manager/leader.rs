//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's algorithm and
//! defaults (lease 15 s, renew deadline 10 s, retry 2 s).
//!
//! Why not a crate: kube-lease-manager (the obvious candidate, compatible with kube 5)
//! takes an orphaned lease with a server-side apply and relies on the API server's
//! field-manager conflicts for mutual exclusion, and renews with an unconditional
//! strategic merge patch. Every write here is instead a full `PUT` carrying the
//! `resourceVersion` that was read, so two candidates can never both win a round, whatever
//! server-side apply support the API server has (the test bed's has no managed fields).
//!
//! Expiry is judged like client-go: not from the holder's `renewTime` (clocks differ
//! between machines) but from the local monotonic instant at which this replica last saw
//! the lease record change. A candidate takes the lease only after it has watched the
//! record stay unchanged for `lease_duration`.
//!
//! Fencing: the leader measures its deadline from the instant it *sent* its last
//! successful renewal, which is no later than the instant any other replica observed
//! that renewal. It stops all work once `renew_deadline` has passed since then, which is
//! `lease_duration − renew_deadline` (5 s by default) before another replica can
//! possibly take over. See [`crate::manager`] for how work is stopped.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tracing::{debug, info};

/// How a replica takes part in the election.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (unique per process).
    pub identity: String,
    /// How long an unrenewed lease keeps others out.
    pub lease_duration: Duration,
    /// How long the leader acts without a successful renewal.
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

/// Why the configuration cannot give a safe election.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseConfigError {
    /// The fencing margin would be zero or negative.
    #[error(
        "leader election renew deadline ({renew_deadline:?}) must be shorter than the lease duration ({lease_duration:?})"
    )]
    DeadlineNotShorter {
        /// The renew deadline.
        renew_deadline: Duration,
        /// The lease duration.
        lease_duration: Duration,
    },
    /// Renewals would not fit in the deadline.
    #[error(
        "leader election retry period ({retry_period:?}) must be shorter than the renew deadline ({renew_deadline:?})"
    )]
    RetryNotShorter {
        /// The retry period.
        retry_period: Duration,
        /// The renew deadline.
        renew_deadline: Duration,
    },
    /// A Lease holds whole seconds.
    #[error("leader election lease duration must be at least 1s")]
    LeaseTooShort,
}

impl LeaseConfig {
    /// Checks client-go's constraints: retry < renew deadline < lease duration.
    pub fn validate(&self) -> Result<(), LeaseConfigError> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err(LeaseConfigError::LeaseTooShort);
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(LeaseConfigError::DeadlineNotShorter {
                renew_deadline: self.renew_deadline,
                lease_duration: self.lease_duration,
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(LeaseConfigError::RetryNotShorter {
                retry_period: self.retry_period,
                renew_deadline: self.renew_deadline,
            });
        }
        Ok(())
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// A unique identity: `base` (pod or host name) plus a random suffix, so two processes
/// with the same host name never share a holder identity.
pub fn default_identity(base: Option<&str>) -> String {
    let base = base
        .map(str::to_owned)
        .filter(|b| !b.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kruised-manager".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{base}_{:x}{:x}", std::process::id(), nanos & 0xff_ffff)
}

/// The parts of a lease record that count as "the record changed" (client-go compares
/// the whole record; these are the fields any holder rewrites).
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    acquire_time: Option<Timestamp>,
    transitions: i32,
    duration_seconds: Option<i32>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| t.0),
            acquire_time: spec.acquire_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
            duration_seconds: spec.lease_duration_seconds,
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease; the write was sent at this instant.
    Held {
        /// When the successful request was sent.
        sent_at: Instant,
    },
    /// Someone else holds it (or won the race this round).
    HeldBy(Option<String>),
}

/// One replica's view of the election.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// An elector for `config` (validate it first).
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One round of client-go's `tryAcquireOrRenew`: read the lease, and write ourselves
    /// in as holder if it is ours, free, or expired by our own observation.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let sent_at = Instant::now();
        let now = Timestamp::now();
        let existing = match self.api.get(&self.config.name).await {
            Ok(lease) => lease,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, now, 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.observed = Some((Record::of(&created), Instant::now()));
                        info!(lease = %self.config.name, identity = %self.config.identity, "created the leader election lease and hold it");
                        Ok(Attempt::Held { sent_at })
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        Ok(Attempt::HeldBy(None))
                    }
                    Err(error) => Err(error),
                };
            }
            Err(error) => return Err(error),
        };
        let record = Record::of(&existing);
        let observed_at = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record.clone(), at));
                at
            }
        };
        let ours = record.holder.as_deref() == Some(self.config.identity.as_str());
        // The holder's own duration counts when it is longer than ours (a replica with a
        // different flag value must not be overrun).
        let duration = record
            .duration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
            .unwrap_or_default()
            .max(self.config.lease_duration);
        if !ours && record.holder.is_some() && observed_at.elapsed() < duration {
            return Ok(Attempt::HeldBy(record.holder));
        }
        let (acquired, transitions) = if ours {
            (record.acquire_time.unwrap_or(now), record.transitions)
        } else {
            (now, record.transitions.saturating_add(1))
        };
        let mut lease = existing;
        lease.spec = Some(self.spec(now, acquired, transitions));
        // `replace` sends metadata.resourceVersion: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                if !ours {
                    info!(lease = %self.config.name, identity = %self.config.identity, previous = ?record.holder, "acquired the leader election lease");
                }
                self.observed = Some((Record::of(&written), Instant::now()));
                Ok(Attempt::Held { sent_at })
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(lease = %self.config.name, "lost a lease write race");
                Ok(Attempt::HeldBy(record.holder))
            }
            Err(error) => Err(error),
        }
    }

    /// Gives the lease up so a standby takes over at its next attempt instead of after
    /// the lease duration (client-go's `ReleaseOnCancel`). Only clears it if still ours.
    pub async fn release(&mut self) -> Result<bool, kube::Error> {
        let mut lease = match self.api.get(&self.config.name).await {
            Ok(lease) => lease,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
            Err(error) => return Err(error),
        };
        let record = Record::of(&lease);
        if record.holder.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(now.clone()),
            acquire_time: Some(now),
            lease_transitions: Some(record.transitions),
            ..Default::default()
        });
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                info!(lease = %self.config.name, identity = %self.config.identity, "released the leader election lease");
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_seconds()),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

/// When a leader must stop: `renew_deadline` after the last successful renewal was sent.
pub fn fencing_deadline(last_renewal_sent: Instant, config: &LeaseConfig) -> Instant {
    last_renewal_sent + config.renew_deadline
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    #[test]
    fn client_go_constraints_are_enforced() {
        assert_eq!(config().validate(), Ok(()));
        let mut bad = config();
        bad.renew_deadline = Duration::from_secs(15);
        assert!(matches!(
            bad.validate(),
            Err(LeaseConfigError::DeadlineNotShorter { .. })
        ));
        let mut bad = config();
        bad.retry_period = Duration::from_secs(10);
        assert!(matches!(
            bad.validate(),
            Err(LeaseConfigError::RetryNotShorter { .. })
        ));
        let mut bad = config();
        bad.lease_duration = Duration::from_millis(500);
        assert_eq!(bad.validate(), Err(LeaseConfigError::LeaseTooShort));
    }

    #[test]
    fn the_fencing_deadline_comes_before_anyone_can_take_over() {
        let config = config();
        let sent = Instant::now();
        // Any other replica observed the renewal no earlier than it was sent, and waits
        // a whole lease duration from its observation.
        let earliest_takeover = sent + config.lease_duration;
        assert!(fencing_deadline(sent, &config) < earliest_takeover);
    }

    #[test]
    fn identities_are_unique_per_process_and_keep_the_base() {
        let id = default_identity(Some("pod-a"));
        assert!(id.starts_with("pod-a_"), "{id}");
        assert!(!default_identity(None).is_empty());
    }

    #[test]
    fn an_empty_holder_reads_as_free() {
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(Record::of(&lease).holder, None);
    }
}
