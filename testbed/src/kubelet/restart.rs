//! What to do next with each spec container: create it, start it, restart it as the next
//! attempt, or leave it; and how long to back off when a container keeps exiting at once.

use std::time::Duration;

use super::runtime::{ObservedContainer, RunState};

/// The pod's `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart every exited container.
    Always,
    /// Restart containers that exited with a non-zero code.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Parses the spec value; the API server defaults a missing one to `Always`.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is restarted.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// The next step for one spec container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create and start the container as `attempt` in the ready sandbox.
    Create {
        /// The new attempt.
        attempt: u32,
    },
    /// Start the created-but-not-started container `id`.
    Start {
        /// Its ID.
        id: String,
    },
    /// The container `exited` has exited and the policy restarts it as `attempt`, subject
    /// to back-off.
    Restart {
        /// The new attempt.
        attempt: u32,
        /// The exited container's ID.
        exited: String,
    },
    /// Nothing to do.
    Keep,
}

/// The next step for a spec container whose newest attempt is `latest`, with the ready
/// sandbox `sandbox_id`.
pub fn next_step(
    policy: RestartPolicy,
    latest: Option<&ObservedContainer>,
    sandbox_id: &str,
) -> Step {
    let Some(latest) = latest else {
        return Step::Create { attempt: 0 };
    };
    let in_sandbox = latest.sandbox_id == sandbox_id;
    match latest.state {
        RunState::Created if in_sandbox => Step::Start {
            id: latest.id.clone(),
        },
        RunState::Running | RunState::Unknown if in_sandbox => Step::Keep,
        // The sandbox was replaced: the kubelet starts the containers again in the new one,
        // counting attempts on.
        _ if !in_sandbox => {
            if latest.state == RunState::Exited && !policy.restarts(latest.exit_code) {
                Step::Keep
            } else {
                Step::Restart {
                    attempt: latest.attempt + 1,
                    exited: latest.id.clone(),
                }
            }
        }
        RunState::Exited if policy.restarts(latest.exit_code) => Step::Restart {
            attempt: latest.attempt + 1,
            exited: latest.id.clone(),
        },
        _ => Step::Keep,
    }
}

/// Restart back-off of one spec container: the first quick exit restarts at once, further
/// quick exits wait 0.5 s, 1 s, 2 s, … up to [`RestartBackoff::MAX`]. A container that ran
/// for at least [`RestartBackoff::MAX`] before exiting resets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartBackoff {
    next: Duration,
}

impl RestartBackoff {
    /// The longest wait before a restart.
    pub const MAX: Duration = Duration::from_secs(10);
    /// The wait after the second quick exit in a row.
    pub const FIRST: Duration = Duration::from_millis(500);

    /// The delay before restarting a container that exited after running `ran_for`
    /// (`None`: it never started); advances the back-off.
    pub fn delay_after_exit(&mut self, ran_for: Option<Duration>) -> Duration {
        if ran_for.is_some_and(|ran_for| ran_for >= Self::MAX) {
            self.next = Duration::ZERO;
        }
        let delay = self.next;
        self.next = if delay.is_zero() {
            Self::FIRST
        } else {
            (delay * 2).min(Self::MAX)
        };
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::runtime::tests::container;

    fn exited(name: &str, attempt: u32, exit_code: i32) -> ObservedContainer {
        let mut container = container(name, attempt, RunState::Exited);
        container.exit_code = exit_code;
        container
    }

    #[test]
    fn missing_containers_are_created_as_attempt_zero() {
        assert_eq!(
            next_step(RestartPolicy::Never, None, "sandbox"),
            Step::Create { attempt: 0 }
        );
    }

    #[test]
    fn running_containers_are_kept_and_created_ones_started() {
        let running = container("app", 0, RunState::Running);
        assert_eq!(
            next_step(RestartPolicy::Always, Some(&running), "sandbox"),
            Step::Keep
        );
        let created = container("app", 1, RunState::Created);
        assert_eq!(
            next_step(RestartPolicy::Always, Some(&created), "sandbox"),
            Step::Start { id: "app-1".into() }
        );
    }

    #[test]
    fn exited_containers_restart_per_policy() {
        let cases = [
            (RestartPolicy::Always, 0, true),
            (RestartPolicy::Always, 137, true),
            (RestartPolicy::OnFailure, 0, false),
            (RestartPolicy::OnFailure, 1, true),
            (RestartPolicy::Never, 0, false),
            (RestartPolicy::Never, 1, false),
        ];
        for (policy, exit_code, restarts) in cases {
            let latest = exited("app", 2, exit_code);
            let expected = if restarts {
                Step::Restart {
                    attempt: 3,
                    exited: "app-2".into(),
                }
            } else {
                Step::Keep
            };
            assert_eq!(
                next_step(policy, Some(&latest), "sandbox"),
                expected,
                "{policy:?} exit {exit_code}"
            );
        }
    }

    #[test]
    fn a_new_sandbox_restarts_containers_of_the_old_one() {
        let mut old = container("app", 0, RunState::Unknown);
        old.sandbox_id = "old".into();
        assert_eq!(
            next_step(RestartPolicy::Always, Some(&old), "new"),
            Step::Restart {
                attempt: 1,
                exited: "app-0".into()
            }
        );
        let mut done = exited("app", 0, 0);
        done.sandbox_id = "old".into();
        assert_eq!(
            next_step(RestartPolicy::OnFailure, Some(&done), "new"),
            Step::Keep
        );
    }

    #[test]
    fn policy_parsing_defaults_to_always() {
        assert_eq!(RestartPolicy::parse(None), RestartPolicy::Always);
        assert_eq!(RestartPolicy::parse(Some("Always")), RestartPolicy::Always);
        assert_eq!(
            RestartPolicy::parse(Some("OnFailure")),
            RestartPolicy::OnFailure
        );
        assert_eq!(RestartPolicy::parse(Some("Never")), RestartPolicy::Never);
    }

    #[test]
    fn backoff_doubles_from_zero_to_ten_seconds_and_resets_after_a_long_run() {
        let mut backoff = RestartBackoff::default();
        let quick = Some(Duration::from_millis(10));
        let delays: Vec<u64> = (0..8)
            .map(|_| backoff.delay_after_exit(quick).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![0, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(
            backoff.delay_after_exit(Some(Duration::from_secs(60))),
            Duration::ZERO
        );
        assert_eq!(backoff.delay_after_exit(None), RestartBackoff::FIRST);
    }
}
