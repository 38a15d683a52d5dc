//! How a test scripts what the fake runtime does: pulls, execs and container stops.

use std::time::Duration;

use tonic::{Code, Status};

use super::content::ScriptedImage;
use super::reference::{ImageReference, quote};

/// The exit code of a process killed by SIGKILL (128 + 9), as containerd reports it.
pub(crate) const SIGKILL_EXIT_CODE: i32 = 137;

/// What one `PullImage` of a reference does.
///
/// A plain script only waits `duration` and ends with `result`. A script with content
/// ([`PullScript::layers`] and the other content builders, or [`PullScript::progress`])
/// also writes the image's content to the fake's containerd content store the way
/// containerd 1.6 does (spec/pull-progress.md): after `duration` (resolving the tag) the
/// index, manifest and config are committed at once; then the layers download at
/// [`PullProgressScript::bytes_per_second`], at most
/// [`PullProgressScript::max_concurrent_downloads`] at a time, each visible to
/// `Content/ListStatuses` as `layer-<digest>` with an offset growing in 1 MiB steps
/// until it is committed and its status vanishes; then the unpack tail passes; then the
/// call returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullScript {
    /// How long the pull takes before it resolves. The wait is dropped, and no image is
    /// added, when the client cancels the call. With content: how long resolving the
    /// tag takes, before any content is written.
    pub duration: Duration,
    /// How the pull ends. With content, NOT_FOUND and an unreachable registry end the
    /// pull after `duration`, before any content is written (resolving failed); any
    /// other error ends it once every layer is fetched, before the unpack, and the
    /// content it wrote is collected.
    pub result: PullResult,
    /// The content the pull writes and how fast; `None`: no content is modelled.
    pub progress: Option<PullProgressScript>,
}

impl PullScript {
    /// A pull that succeeds after `duration`.
    pub fn succeed_after(duration: Duration) -> Self {
        Self {
            duration,
            ..Self::default()
        }
    }

    /// A pull that fails at once with `code` and `message`.
    pub fn fail(code: Code, message: impl Into<String>) -> Self {
        Self {
            result: PullResult::Err(code, message.into()),
            ..Self::default()
        }
    }

    /// A pull of a tag the registry does not have, with containerd's NOT_FOUND text.
    pub fn not_found() -> Self {
        Self {
            result: PullResult::NotFound,
            ..Self::default()
        }
    }

    /// A pull from a registry that refuses connections, with containerd's UNKNOWN text.
    pub fn registry_unreachable() -> Self {
        Self {
            result: PullResult::RegistryUnreachable,
            ..Self::default()
        }
    }

    /// The same outcome, reached after `duration`.
    #[must_use]
    pub fn after(self, duration: Duration) -> Self {
        Self { duration, ..self }
    }

    /// The same script, writing content as `progress` says.
    #[must_use]
    pub fn progress(self, progress: PullProgressScript) -> Self {
        Self {
            progress: Some(progress),
            ..self
        }
    }

    /// The same script, for an image whose layers have these compressed sizes in bytes,
    /// bottom first (other content settings at their defaults unless set).
    #[must_use]
    pub fn layers(mut self, sizes: impl IntoIterator<Item = u64>) -> Self {
        self.progress_mut().layer_sizes = sizes.into_iter().collect();
        self
    }

    /// The same script, downloading at `bytes_per_second` (0: no limit).
    #[must_use]
    pub fn bytes_per_second(mut self, bytes_per_second: u64) -> Self {
        self.progress_mut().bytes_per_second = bytes_per_second;
        self
    }

    /// The same script, fetching at most `downloads` layers at once (at least 1).
    #[must_use]
    pub fn max_concurrent_downloads(mut self, downloads: usize) -> Self {
        self.progress_mut().max_concurrent_downloads = downloads;
        self
    }

    /// The same script, unpacking for `duration` after the last byte.
    #[must_use]
    pub fn unpack_taking(mut self, duration: Duration) -> Self {
        self.progress_mut().unpack = duration;
        self
    }

    /// The same script, with layer digests derived from `seed` instead of the
    /// reference, so that images scripted with one seed share layers.
    #[must_use]
    pub fn layer_seed(mut self, seed: impl Into<String>) -> Self {
        self.progress_mut().layer_seed = Some(seed.into());
        self
    }

    /// The same script, for a multi-platform image: the tag resolves to an image index
    /// listing `linux/amd64` (pulled) and `linux/arm64` (never fetched).
    #[must_use]
    pub fn image_index(mut self) -> Self {
        self.progress_mut().image_index = true;
        self
    }

    /// The content a pull of `reference` following this script writes; `None` when the
    /// script models no content or the reference does not parse.
    pub fn image(&self, reference: &str) -> Option<ScriptedImage> {
        let reference = ImageReference::parse_normalized(reference).ok()?;
        self.image_for(&reference)
    }

    pub(crate) fn image_for(&self, reference: &ImageReference) -> Option<ScriptedImage> {
        self.progress.as_ref().map(|progress| {
            ScriptedImage::build(
                reference,
                &progress.layer_sizes,
                progress.layer_seed.as_deref(),
                progress.image_index,
            )
        })
    }

    fn progress_mut(&mut self) -> &mut PullProgressScript {
        self.progress
            .get_or_insert_with(PullProgressScript::default)
    }
}

/// The content a scripted pull writes, and how fast (see [`PullScript`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgressScript {
    /// The compressed size of each layer in bytes, bottom first.
    pub layer_sizes: Vec<u64>,
    /// The link speed, shared by the pull's concurrent layer downloads, like the
    /// measurements' single 10 MB/s token bucket (3 layers got about 3.3 MB/s each).
    /// 0: no limit. Default: 10 MB/s.
    pub bytes_per_second: u64,
    /// containerd's `max_concurrent_downloads`: 3 by default, and what was measured.
    pub max_concurrent_downloads: usize,
    /// The unpack tail: from the last byte committed to PullImage returning. Each new
    /// layer gains the `containerd.io/uncompressed` label in turn, bottom first, during
    /// it. Measured: 0.6–1.1 s for 200 MB left to the end on 2 vCPUs, 0.09 s when the
    /// layers finished bottom-first. Default: zero.
    pub unpack: Duration,
    /// Layer digests derive from this instead of the reference when set.
    pub layer_seed: Option<String>,
    /// Whether the tag resolves to an image index rather than the manifest.
    pub image_index: bool,
}

impl Default for PullProgressScript {
    fn default() -> Self {
        Self {
            layer_sizes: Vec::new(),
            bytes_per_second: DEFAULT_BYTES_PER_SECOND,
            max_concurrent_downloads: DEFAULT_MAX_CONCURRENT_DOWNLOADS,
            unpack: Duration::ZERO,
            layer_seed: None,
            image_index: false,
        }
    }
}

/// The measured link: pull-progress.md throttled its registry to 10 MB/s.
pub const DEFAULT_BYTES_PER_SECOND: u64 = 10_000_000;
/// containerd 1.6's default `max_concurrent_downloads`.
pub const DEFAULT_MAX_CONCURRENT_DOWNLOADS: usize = 3;

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
    /// Whether the pull fails while resolving the tag, before any content is written.
    pub(crate) fn fails_resolving(&self) -> bool {
        matches!(self, PullResult::NotFound | PullResult::RegistryUnreachable)
    }

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
