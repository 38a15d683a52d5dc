//! Image references normalised the way containerd's CRI plugin does it
//! (`docker.ParseDockerRef`), made-up digests and ids, and Go-style formatting for the
//! error texts the fake copies from containerd.

use std::fmt;

/// Why an image reference does not parse; the texts are distribution/reference's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReferenceError {
    /// Anything else that is not a reference.
    #[error("invalid reference format")]
    InvalidFormat,
    /// A repository with upper-case letters.
    #[error("invalid reference format: repository name must be lowercase")]
    NotLowercase,
}

/// A normalised image reference: a repository with exactly one of a tag or a digest.
/// Parsing is kruised's own ([`crate::imageref`]); this adds what containerd fills in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ImageReference {
    /// Registry host, with its port if any, e.g. `docker.io`, `127.0.0.1:5000`.
    domain: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    path: String,
    /// What follows the repository.
    version: Version,
}

/// The part of a reference after the repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Version {
    Tag(String),
    Digest(String),
}

impl ImageReference {
    /// Parses `input` and fills in what containerd fills in: the `docker.io` domain, the
    /// `library/` namespace and the `latest` tag. A reference with both a tag and a digest
    /// keeps only the digest.
    pub(crate) fn parse_normalized(input: &str) -> Result<Self, ReferenceError> {
        let parsed =
            crate::imageref::ImageReference::parse(input).map_err(|error| match error {
                crate::imageref::ImageRefError::Uppercase { .. } => ReferenceError::NotLowercase,
                _ => ReferenceError::InvalidFormat,
            })?;
        let version = match (parsed.digest(), parsed.tag()) {
            (Some(digest), _) if is_valid_digest(digest) => Version::Digest(digest.to_owned()),
            (Some(_), _) => return Err(ReferenceError::InvalidFormat),
            (None, Some(tag)) => Version::Tag(tag.to_owned()),
            (None, None) => Version::Tag(crate::imageref::DEFAULT_TAG.to_owned()),
        };
        Ok(Self {
            domain: parsed.domain().to_owned(),
            path: parsed.path().to_owned(),
            version,
        })
    }

    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub(crate) fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The registry host, e.g. `127.0.0.1:5000`.
    pub(crate) fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, e.g. `test/busybox`.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The digest, when the reference pins one.
    pub(crate) fn digest(&self) -> Option<&str> {
        match &self.version {
            Version::Digest(digest) => Some(digest),
            Version::Tag(_) => None,
        }
    }

    /// The tag or the digest: what a registry's manifest URL ends with.
    pub(crate) fn tag_or_digest(&self) -> &str {
        match &self.version {
            Version::Tag(tag) => tag,
            Version::Digest(digest) => digest,
        }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Version::Tag(tag) => write!(formatter, "{}/{}:{tag}", self.domain, self.path),
            Version::Digest(digest) => write!(formatter, "{}/{}@{digest}", self.domain, self.path),
        }
    }
}

/// `sha256:` and 64 lower-case hex digits (the only algorithm the fake deals in), or
/// another `algorithm:hex` pair as the OCI digest grammar allows.
pub(crate) fn is_valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let hex_ok =
        |length_ok: bool| length_ok && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
    match algorithm {
        "sha256" => hex_ok(hex.len() == 64),
        "sha512" => hex_ok(hex.len() == 128),
        _ => false,
    }
}

/// A `sha256:<64 hex>` digest that is a deterministic function of `input`.
///
/// No content exists to hash, so a real SHA-256 would be no more faithful than this: what
/// kruised can observe is the shape, and that one input always gives the same digest.
pub(crate) fn fake_digest(input: &str) -> String {
    format!("sha256:{}", hex64(input.as_bytes()))
}

/// 64 hex digits derived from `bytes`: four FNV-1a lanes, each finished with splitmix64.
pub(crate) fn hex64(bytes: &[u8]) -> String {
    (0..4u64)
        .map(|lane| format!("{:016x}", mix(fnv1a64(bytes, lane))))
        .collect()
}

/// FNV-1a over `bytes`, with `lane` folded into the offset basis.
pub(crate) fn fnv1a64(bytes: &[u8], lane: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(
        OFFSET_BASIS ^ lane.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME),
    )
}

/// FNV-1a 32-bit, the hash the kubelet uses for `io.kubernetes.container.hash`.
pub(crate) fn fnv1a32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(PRIME)
    })
}

/// The splitmix64 finaliser, so that lanes differing in one bit share no digits.
fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// Go's `%q` for the strings containerd quotes (Rust's `{:?}` escapes the same ASCII).
pub(crate) fn quote(text: &str) -> String {
    format!("{text:?}")
}

/// Go's `time.Duration.String()` for a whole number of seconds: `1s`, `1m30s`, `1h0m0s`.
pub(crate) fn go_duration(seconds: i64) -> String {
    let (hours, minutes, seconds) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(input: &str) -> String {
        match ImageReference::parse_normalized(input) {
            Ok(reference) => reference.to_string(),
            Err(error) => format!("error: {error}"),
        }
    }

    #[test]
    fn short_names_gain_docker_io_library_and_latest() {
        assert_eq!(normalized("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalized("busybox:1"), "docker.io/library/busybox:1");
        assert_eq!(normalized("kruise/web:v2"), "docker.io/kruise/web:v2");
        assert_eq!(
            normalized("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn registries_with_ports_and_localhost_are_domains() {
        assert_eq!(
            normalized("127.0.0.1:5000/test/busybox:1"),
            "127.0.0.1:5000/test/busybox:1"
        );
        assert_eq!(normalized("localhost/busybox"), "localhost/busybox:latest");
        assert_eq!(
            normalized("127.0.0.1:5000/test/busybox"),
            "127.0.0.1:5000/test/busybox:latest"
        );
    }

    #[test]
    fn a_digest_wins_over_a_tag() {
        let digest = fake_digest("x");
        assert_eq!(
            normalized(&format!("busybox:1@{digest}")),
            format!("docker.io/library/busybox@{digest}")
        );
    }

    #[test]
    fn malformed_references_are_rejected_with_distribution_texts() {
        assert_eq!(
            normalized("Busybox"),
            "error: invalid reference format: repository name must be lowercase"
        );
        assert_eq!(normalized(""), "error: invalid reference format");
        assert_eq!(normalized("busybox:"), "error: invalid reference format");
        assert_eq!(
            normalized("busybox@sha256:abc"),
            "error: invalid reference format"
        );
        assert_eq!(normalized("bad//path"), "error: invalid reference format");
    }

    #[test]
    fn go_durations_read_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1), "1s");
        assert_eq!(go_duration(90), "1m30s");
        assert_eq!(go_duration(3600), "1h0m0s");
    }

    #[test]
    fn fake_digests_are_stable_and_well_formed() {
        assert_eq!(fake_digest("a"), fake_digest("a"));
        assert_ne!(fake_digest("a"), fake_digest("b"));
        assert!(is_valid_digest(&fake_digest("a")));
    }
}
