//! How a test scripts what the fake runtime does: pulls, execs and container stops.

use std::time::Duration;

use tonic::{Code, Status};

use super::reference::{ImageReference, quote};

/// The exit code of a process killed by SIGKILL (128 + 9), as containerd reports it.
pub(crate) const SIGKILL_EXIT_CODE: i32 = 137;

/// What one `PullImage` of a reference does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullScript {
    /// How long the pull takes before it resolves. The wait is dropped, and no image is
    /// added, when the client cancels the call.
    pub duration: Duration,
    /// How the pull ends.
    pub result: PullResult,
}

impl PullScript {
    /// A pull that succeeds after `duration`.
    pub fn succeed_after(duration: Duration) -> Self {
        Self {
            duration,
            result: PullResult::Ok,
        }
    }

    /// A pull that fails at once with `code` and `message`.
    pub fn fail(code: Code, message: impl Into<String>) -> Self {
        Self {
            duration: Duration::ZERO,
            result: PullResult::Err(code, message.into()),
        }
    }

    /// A pull of a tag the registry does not have, with containerd's NOT_FOUND text.
    pub fn not_found() -> Self {
        Self {
            duration: Duration::ZERO,
            result: PullResult::NotFound,
        }
    }

    /// A pull from a registry that refuses connections, with containerd's UNKNOWN text.
    pub fn registry_unreachable() -> Self {
        Self {
            duration: Duration::ZERO,
            result: PullResult::RegistryUnreachable,
        }
    }

    /// The same outcome, reached after `duration`.
    #[must_use]
    pub fn after(self, duration: Duration) -> Self {
        Self { duration, ..self }
    }
}

/// How a scripted pull ends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PullResult {
    /// The image is added to the store and its id returned.
    #[default]
    Ok,
    /// The call fails with this code and message, verbatim.
    Err(Code, String),
    /// NOT_FOUND `failed to pull and unpack image "<ref>": failed to resolve reference
    /// "<ref>": <ref>: not found`, as containerd 1.6 says for a missing tag.
    NotFound,
    /// UNKNOWN `failed to pull and unpack image "<ref>": failed to resolve reference
    /// "<ref>": failed to do request: Head "<url>": dial tcp <host>: connect: connection
    /// refused`, as containerd 1.6 says when the registry is down.
    RegistryUnreachable,
}

impl PullResult {
    /// The status a failed pull of `reference` returns; `None` for [`PullResult::Ok`].
    pub(crate) fn to_status(&self, reference: &ImageReference) -> Option<Status> {
        let quoted = quote(&reference.to_string());
        let unpack_and_resolve = format!(
            "failed to pull and unpack image {quoted}: failed to resolve reference {quoted}"
        );
        match self {
            PullResult::Ok => None,
            PullResult::Err(code, message) => Some(Status::new(*code, message.clone())),
            PullResult::NotFound => Some(Status::not_found(format!(
                "{unpack_and_resolve}: {reference}: not found"
            ))),
            PullResult::RegistryUnreachable => {
                let (url_host, dial_address) = registry_address(reference.domain());
                Some(Status::unknown(format!(
                    "{unpack_and_resolve}: failed to do request: Head \"{url_host}/v2/{}/manifests/{}\": dial tcp {dial_address}: connect: connection refused",
                    reference.path(),
                    reference.tag_or_digest(),
                )))
            }
        }
    }
}

/// The scheme-and-host a registry is reached at and the address dialled, as containerd
/// resolves them: Docker Hub behind `registry-1.docker.io`, plain HTTP for loopback
/// registries (what `hosts.toml` sets up in the test environment), HTTPS otherwise.
fn registry_address(domain: &str) -> (String, String) {
    let host = if domain == "docker.io" {
        "registry-1.docker.io"
    } else {
        domain
    };
    let hostname = host.rsplit_once(':').map_or(host, |(hostname, _)| hostname);
    let scheme = if matches!(hostname, "127.0.0.1" | "localhost" | "[::1]") {
        "http"
    } else {
        "https"
    };
    let dial_address = if host.contains(':') {
        host.to_owned()
    } else if scheme == "http" {
        format!("{host}:80")
    } else {
        format!("{host}:443")
    };
    (format!("{scheme}://{host}"), dial_address)
}

/// What one `ExecSync` of a command in a container returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecScript {
    /// Captured standard output.
    pub stdout: Vec<u8>,
    /// Captured standard error.
    pub stderr: Vec<u8>,
    /// The command's exit code; a non-zero code is a normal response, not an error.
    pub exit_code: i32,
    /// How long the command runs. When it outlasts the request's timeout the call fails
    /// with DEADLINE_EXCEEDED at the timeout, as containerd does.
    pub duration: Duration,
}

impl ExecScript {
    /// A command that exits with `exit_code` at once and prints nothing.
    pub fn exit(exit_code: i32) -> Self {
        Self {
            exit_code,
            ..Self::default()
        }
    }

    /// The same script, printing `stdout`.
    #[must_use]
    pub fn with_stdout(self, stdout: impl Into<Vec<u8>>) -> Self {
        Self {
            stdout: stdout.into(),
            ..self
        }
    }

    /// The same script, printing `stderr`.
    #[must_use]
    pub fn with_stderr(self, stderr: impl Into<Vec<u8>>) -> Self {
        Self {
            stderr: stderr.into(),
            ..self
        }
    }

    /// The same script, running for `duration`.
    #[must_use]
    pub fn taking(self, duration: Duration) -> Self {
        Self { duration, ..self }
    }
}

/// How a container's main process reacts to `StopContainer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopBehaviour {
    /// It dies at once with exit code 137, whatever the timeout, as if the grace period
    /// were already over. Not what a real runtime does with a timeout, but it keeps tests
    /// fast; pick [`StopBehaviour::IgnoresSigterm`] to wait the grace period out.
    #[default]
    KilledAtOnce,
    /// A PID 1 with no SIGTERM handler (a plain `/bin/sh`): `StopContainer` waits out the
    /// whole timeout, then SIGKILL gives exit code 137.
    IgnoresSigterm,
    /// It traps SIGTERM and exits with `exit_code` after `after` (the test environment's
    /// pause image exits 0 at once). If `after` exceeds the timeout, SIGKILL at the timeout
    /// gives 137.
    ExitsOnSigterm {
        /// The exit code the trap exits with.
        exit_code: i32,
        /// How long the trap takes.
        after: Duration,
    },
}

impl StopBehaviour {
    /// How long a stop with `timeout_seconds` takes and the exit code it leaves. A timeout
    /// of zero or less skips SIGTERM and kills at once, as containerd does.
    pub(crate) fn plan(self, timeout_seconds: i64) -> (Duration, i32) {
        let timeout = Duration::from_secs(u64::try_from(timeout_seconds).unwrap_or(0));
        match self {
            _ if timeout.is_zero() => (Duration::ZERO, SIGKILL_EXIT_CODE),
            StopBehaviour::KilledAtOnce => (Duration::ZERO, SIGKILL_EXIT_CODE),
            StopBehaviour::IgnoresSigterm => (timeout, SIGKILL_EXIT_CODE),
            StopBehaviour::ExitsOnSigterm { exit_code, after } if after <= timeout => {
                (after, exit_code)
            }
            StopBehaviour::ExitsOnSigterm { .. } => (timeout, SIGKILL_EXIT_CODE),
        }
    }
}

/// Counters over the fake's `PullImage` calls that got past fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PullStats {
    /// Pulls running now.
    pub in_flight: usize,
    /// The most pulls seen running at once.
    pub max_in_flight: usize,
    /// Pulls started.
    pub started: usize,
    /// Pulls that added their image.
    pub succeeded: usize,
    /// Pulls that ended with a scripted error.
    pub failed: usize,
    /// Pulls dropped before they ended: the client went away or the server shut down.
    pub cancelled: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_timeout_always_kills() {
        let trap = StopBehaviour::ExitsOnSigterm {
            exit_code: 0,
            after: Duration::ZERO,
        };
        assert_eq!(trap.plan(0), (Duration::ZERO, 137));
        assert_eq!(trap.plan(2), (Duration::ZERO, 0));
    }

    #[test]
    fn a_slow_trap_is_killed_at_the_timeout() {
        let trap = StopBehaviour::ExitsOnSigterm {
            exit_code: 0,
            after: Duration::from_secs(5),
        };
        assert_eq!(trap.plan(2), (Duration::from_secs(2), 137));
        assert_eq!(
            StopBehaviour::IgnoresSigterm.plan(2),
            (Duration::from_secs(2), 137)
        );
        assert_eq!(StopBehaviour::KilledAtOnce.plan(30), (Duration::ZERO, 137));
    }

    #[test]
    fn registry_unreachable_names_the_manifest_url() {
        let reference = ImageReference::parse_normalized("127.0.0.1:5001/test/busybox:1");
        let status = reference
            .ok()
            .and_then(|reference| PullResult::RegistryUnreachable.to_status(&reference));
        assert_eq!(
            status.map(|status| status.message().to_owned()).as_deref(),
            Some(
                "failed to pull and unpack image \"127.0.0.1:5001/test/busybox:1\": failed to resolve reference \"127.0.0.1:5001/test/busybox:1\": failed to do request: Head \"http://127.0.0.1:5001/v2/test/busybox/manifests/1\": dial tcp 127.0.0.1:5001: connect: connection refused"
            )
        );
    }
}
