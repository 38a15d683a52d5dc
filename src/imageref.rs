//! Image references parsed and normalised the way docker's `distribution/reference`
//! (`ParseNormalizedNamed`, `FamiliarName`, `TagNameOnly`) does it, and the names kruised
//! derives from them for NodeImage keys, CRI pulls and the `IfNotPresent` check.
//!
//! Grammar (distribution/reference):
//!
//! ```text
//! reference   := name [ ":" tag ] [ "@" digest ]
//! name        := [domain "/"] path
//! domain      := host [":" port]        host: DNS-ish components or [IPv6]
//! path        := component ("/" component)*   component: [a-z0-9]+ ([._]|__|-+ [a-z0-9]+)*
//! tag         := [\w][\w.-]{0,127}
//! digest      := algorithm ":" hex      sha256 (64), sha384 (96) or sha512 (128) lower-case hex
//! ```

use std::fmt;

/// The registry a reference names when it names none.
const DEFAULT_DOMAIN: &str = "docker.io";
/// The old spelling of [`DEFAULT_DOMAIN`], rewritten to it.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of Docker Hub's official images (`nginx` → `library/nginx`).
const OFFICIAL_REPOSITORY_PREFIX: &str = "library/";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";
/// The longest repository path distribution/reference accepts.
const PATH_LENGTH_MAX: usize = 255;

/// Why a string is not an image reference. Messages name the offending part so they can go
/// into a NodeImage status as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// The input is empty.
    #[error("image reference is empty")]
    Empty,
    /// A bare 64-character hex string: an image ID, not a name.
    #[error("invalid image reference {0:?}: cannot specify 64-byte hexadecimal strings")]
    HexIdentifier(String),
    /// The repository contains upper-case letters.
    #[error("invalid image reference {input:?}: repository name {repository:?} must be lowercase")]
    Uppercase {
        /// The reference as given.
        input: String,
        /// The repository part that is not lower case.
        repository: String,
    },
    /// The name (domain and path) does not follow the grammar.
    #[error("invalid image reference {input:?}: invalid repository name {name:?}")]
    InvalidName {
        /// The reference as given.
        input: String,
        /// The name part.
        name: String,
    },
    /// The repository path is longer than 255 characters.
    #[error("invalid image reference {0:?}: repository name must not be more than 255 characters")]
    NameTooLong(String),
    /// The tag does not match `[\w][\w.-]{0,127}`.
    #[error("invalid image reference {input:?}: invalid tag {tag:?}")]
    InvalidTag {
        /// The reference as given.
        input: String,
        /// The tag part.
        tag: String,
    },
    /// The digest is malformed, of the wrong length or uses an unknown algorithm.
    #[error("invalid image reference {input:?}: invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The reference as given.
        input: String,
        /// The digest part.
        digest: String,
        /// What is wrong with it, in go-digest's words.
        reason: &'static str,
    },
}

/// A parsed, normalised image reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageReference {
    /// Parses `input` like docker's `ParseNormalizedNamed`: `nginx` becomes
    /// `docker.io/library/nginx`, `user/app` becomes `docker.io/user/app`, a first
    /// component with a `.` or `:` (or `localhost`) is a registry. Tag and digest are kept
    /// as given; no default tag is added (see [`ImageReference::with_default_tag`]).
    pub fn parse(input: &str) -> Result<Self, ImageRefError> {
        if input.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if input.len() == 64
            && input
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(ImageRefError::HexIdentifier(input.to_owned()));
        }
        let (domain, remainder) = split_docker_domain(input);
        // distribution/reference checks the lower case of everything before the first ':'
        // of the remainder, which includes a digest algorithm when there is no tag.
        let remote = remainder.split(':').next().unwrap_or_default();
        if remote.to_lowercase() != remote {
            return Err(ImageRefError::Uppercase {
                input: input.to_owned(),
                repository: remote.to_owned(),
            });
        }
        parse_full(input, &format!("{domain}/{remainder}"))
    }

    /// The registry host with its port, e.g. `docker.io`, `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, e.g. `library/nginx`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `domain/path`, e.g. `docker.io/library/nginx`: what the kubelet keyring and
    /// credential plugins match against (docker's `Named.Name()`).
    pub fn repository(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// docker's `FamiliarName`: the repository without `docker.io/`, and without
    /// `library/` for official images (`docker.io/library/nginx` → `nginx`,
    /// `docker.io/user/app` → `user/app`, `quay.io/org/app` unchanged).
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.repository();
        }
        match self.path.strip_prefix(OFFICIAL_REPOSITORY_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => self.path.clone(),
        }
    }

    /// The tag, when the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:<hex>`), when the reference has one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// docker's `TagNameOnly`: adds the `latest` tag when there is neither tag nor digest.
    pub fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_owned());
        }
        self
    }
}

impl fmt::Display for ImageReference {
    /// The normalised full form, `domain/path[:tag][@digest]`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.repository())?;
        if let Some(tag) = &self.tag {
            write!(formatter, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(formatter, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether a NodeImage "tag" is really a digest (`sha256:...`). A tag cannot contain `:`.
pub fn is_digest(tag: &str) -> bool {
    tag.contains(':')
}

/// The image string kruised passes to CRI `PullImage` for NodeImage key `key` and tag
/// `tag`: `key:tag`, or `key@sha256:...` when the tag is a digest.
///
/// kruise-daemon always builds `key:tag`, so a digest becomes the unparseable
/// `name:sha256:...` and digest pre-pulls fail (spec §3.5, issue "Digests"). The key is
/// kept as written (CRI normalises it), but the result must parse.
pub fn pull_reference(key: &str, tag: &str) -> Result<String, ImageRefError> {
    let reference = if is_digest(tag) {
        format!("{key}@{tag}")
    } else {
        format!("{key}:{tag}")
    };
    ImageReference::parse(&reference)?;
    Ok(reference)
}

/// The NodeImage image key and tag the manager derives from an ImagePullJob image (spec
/// §3.3, kruise `NormalizeImageRefToNameTag`): the familiar name, and the digest when
/// there is one (a tag next to a digest is dropped), else the tag, else `latest`.
pub fn image_key_and_tag(job_image: &str) -> Result<(String, String), ImageRefError> {
    let reference = ImageReference::parse(job_image)?;
    let tag = match (&reference.digest, &reference.tag) {
        (Some(digest), _) => digest.clone(),
        (None, Some(tag)) => tag.clone(),
        (None, None) => DEFAULT_TAG.to_owned(),
    };
    Ok((reference.familiar_name(), tag))
}

/// The `IfNotPresent` check: whether an image's CRI `RepoTags` contain `key:tag`, comparing
/// familiar names so that `docker.io/library/nginx:1` matches key `nginx`, tag `1` (kruise
/// `ImageInfo.ContainsImage`, fix for #1273). The key is normalised too, so a NodeImage
/// written with the full name matches as well. Digest "tags" never match here; use
/// [`repo_digests_contain`].
pub fn repo_tags_contain(repo_tags: &[String], key: &str, tag: &str) -> bool {
    if is_digest(tag) {
        return false;
    }
    let wanted = familiar_or_verbatim(key);
    repo_tags.iter().any(|repo_tag| {
        image_key_and_tag(repo_tag).is_ok_and(|(name, repo_tag)| name == wanted && repo_tag == tag)
    })
}

/// The `IfNotPresent` check for a digest "tag": whether an image's CRI `RepoDigests`
/// (`docker.io/library/nginx@sha256:...`) contain `key@digest`, comparing familiar names.
pub fn repo_digests_contain(repo_digests: &[String], key: &str, digest: &str) -> bool {
    let wanted = familiar_or_verbatim(key);
    repo_digests.iter().any(|repo_digest| {
        ImageReference::parse(repo_digest).is_ok_and(|reference| {
            reference.digest() == Some(digest) && reference.familiar_name() == wanted
        })
    })
}

/// The familiar name of a NodeImage key, or the key unchanged when it does not parse.
fn familiar_or_verbatim(key: &str) -> String {
    ImageReference::parse(key)
        .map(|reference| reference.familiar_name())
        .unwrap_or_else(|_| key.to_owned())
}

/// distribution/reference's `splitDockerDomain`: the registry and the rest.
fn split_docker_domain(name: &str) -> (&str, String) {
    let Some((first, rest)) = name.split_once('/') else {
        return (
            DEFAULT_DOMAIN,
            format!("{OFFICIAL_REPOSITORY_PREFIX}{name}"),
        );
    };
    let (domain, remainder) = if first == "localhost" {
        (first, rest)
    } else if first == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN, rest)
    } else if first.contains(['.', ':']) || first.to_lowercase() != first {
        // An upper-case first component cannot be a namespace, so it is taken as a host.
        (first, rest)
    } else {
        (DEFAULT_DOMAIN, name)
    };
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        return (domain, format!("{OFFICIAL_REPOSITORY_PREFIX}{remainder}"));
    }
    (domain, remainder.to_owned())
}

/// distribution/reference's `Parse` of a string that already has a domain prepended.
fn parse_full(input: &str, full: &str) -> Result<ImageReference, ImageRefError> {
    let (name_and_tag, digest) = match full.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (full, None),
    };
    // The name can hold a ':' only in its domain, before the first '/'.
    let first_slash = name_and_tag.find('/').unwrap_or(name_and_tag.len());
    let (name, tag) = match name_and_tag[first_slash..].find(':') {
        Some(colon) => {
            let colon = first_slash + colon;
            (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
        }
        None => (name_and_tag, None),
    };
    let invalid_name = || ImageRefError::InvalidName {
        input: input.to_owned(),
        name: name.to_owned(),
    };
    let (domain, path) = match name.split_once('/') {
        Some((domain, path)) if is_valid_domain(domain) && is_valid_path(path) => (domain, path),
        // Like the anchored regexp: when the first component is no valid host, the whole
        // name may still be a valid path (with no domain).
        _ if is_valid_path(name) => ("", name),
        _ => return Err(invalid_name()),
    };
    if path.len() > PATH_LENGTH_MAX {
        return Err(ImageRefError::NameTooLong(input.to_owned()));
    }
    if let Some(tag) = tag
        && !is_valid_tag(tag)
    {
        return Err(ImageRefError::InvalidTag {
            input: input.to_owned(),
            tag: tag.to_owned(),
        });
    }
    if let Some(digest) = digest
        && let Err(reason) = validate_digest(digest)
    {
        return Err(ImageRefError::InvalidDigest {
            input: input.to_owned(),
            digest: digest.to_owned(),
            reason,
        });
    }
    Ok(ImageReference {
        domain: domain.to_owned(),
        path: path.to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

/// `host[:port]`, host being DNS-ish components (`[a-zA-Z0-9]` with inner `-`) joined by
/// `.`, or a bracketed IPv6 address.
fn is_valid_domain(domain: &str) -> bool {
    let component_ok = |component: &str| {
        !component.is_empty()
            && component
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !component.starts_with('-')
            && !component.ends_with('-')
    };
    let (host_ok, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        let address_ok =
            !address.is_empty() && address.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
        (address_ok, port)
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        (host.split('.').all(component_ok), port)
    };
    let port_ok =
        port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// `component ("/" component)*`
fn is_valid_path(path: &str) -> bool {
    path.split('/').all(is_valid_path_component)
}

/// `[a-z0-9]+ (([._]|__|-+) [a-z0-9]+)*`
fn is_valid_path_component(component: &str) -> bool {
    let is_alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let (Some(first), Some(last)) = (component.chars().next(), component.chars().last()) else {
        return false;
    };
    if !is_alphanumeric(first) || !is_alphanumeric(last) {
        return false;
    }
    component
        .split(is_alphanumeric)
        .filter(|separator| !separator.is_empty())
        .all(|separator| {
            matches!(separator, "." | "_" | "__") || separator.chars().all(|c| c == '-')
        })
}

/// `[\w][\w.-]{0,127}`
fn is_valid_tag(tag: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    tag.len() <= 128
        && tag.chars().next().is_some_and(is_word)
        && tag.chars().all(|c| is_word(c) || c == '.' || c == '-')
}

/// The reference grammar's digest pattern, then go-digest's `Validate`: a known algorithm
/// and exactly its length of lower-case hex.
fn validate_digest(digest: &str) -> Result<(), &'static str> {
    const INVALID_FORMAT: &str = "invalid checksum digest format";
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(INVALID_FORMAT);
    };
    // [A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|component| {
        component
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && component.chars().all(|c| c.is_ascii_alphanumeric())
    });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(INVALID_FORMAT);
    }
    let expected_length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm"),
    };
    if hex.len() != expected_length {
        return Err("invalid checksum digest length");
    }
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(INVALID_FORMAT);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";

    fn parse(input: &str) -> ImageReference {
        ImageReference::parse(input).unwrap_or_else(|error| panic!("{input}: {error}"))
    }

    #[test]
    fn single_name_normalises_to_docker_hub_library() {
        let reference = parse("nginx");
        assert_eq!(reference.domain(), "docker.io");
        assert_eq!(reference.path(), "library/nginx");
        assert_eq!(reference.repository(), "docker.io/library/nginx");
        assert_eq!(reference.familiar_name(), "nginx");
        assert_eq!(reference.tag(), None);
        assert_eq!(reference.to_string(), "docker.io/library/nginx");
    }

    #[test]
    fn user_repository_normalises_to_docker_hub_without_library() {
        let reference = parse("user/app:2");
        assert_eq!(reference.repository(), "docker.io/user/app");
        assert_eq!(reference.familiar_name(), "user/app");
        assert_eq!(reference.tag(), Some("2"));
        assert_eq!(reference.to_string(), "docker.io/user/app:2");
    }

    #[test]
    fn docker_io_and_index_docker_io_spellings_normalise_alike() {
        for input in [
            "docker.io/nginx",
            "docker.io/library/nginx",
            "index.docker.io/library/nginx",
            "index.docker.io/nginx",
        ] {
            assert_eq!(
                parse(input).repository(),
                "docker.io/library/nginx",
                "{input}"
            );
            assert_eq!(parse(input).familiar_name(), "nginx", "{input}");
        }
    }

    #[test]
    fn nested_library_path_keeps_its_prefix_in_the_familiar_name() {
        assert_eq!(
            parse("library/distros/ubuntu").familiar_name(),
            "library/distros/ubuntu"
        );
    }

    #[test]
    fn other_registry_keeps_domain_in_the_familiar_name() {
        let reference = parse("quay.io/org/app:1");
        assert_eq!(reference.domain(), "quay.io");
        assert_eq!(reference.path(), "org/app");
        assert_eq!(reference.familiar_name(), "quay.io/org/app");
        assert_eq!(reference.tag(), Some("1"));
    }

    #[test]
    fn registry_with_port_is_not_mistaken_for_a_tag() {
        let reference = parse("127.0.0.1:5000/test/busybox:1");
        assert_eq!(reference.domain(), "127.0.0.1:5000");
        assert_eq!(reference.path(), "test/busybox");
        assert_eq!(reference.tag(), Some("1"));
        let untagged = parse("localhost:5000/app");
        assert_eq!(untagged.domain(), "localhost:5000");
        assert_eq!(untagged.tag(), None);
    }

    #[test]
    fn localhost_is_a_registry_but_other_single_words_are_namespaces() {
        assert_eq!(parse("localhost/app").domain(), "localhost");
        assert_eq!(parse("localhost/app").familiar_name(), "localhost/app");
        assert_eq!(parse("registry/app").repository(), "docker.io/registry/app");
    }

    #[test]
    fn upper_case_first_component_is_taken_as_a_host() {
        assert_eq!(parse("Registry/app").domain(), "Registry");
    }

    #[test]
    fn ipv6_registry_is_accepted() {
        let reference = parse("[::1]:5000/app:v1");
        assert_eq!(reference.domain(), "[::1]:5000");
        assert_eq!(reference.tag(), Some("v1"));
    }

    #[test]
    fn digest_reference_keeps_the_digest() {
        let reference = parse(&format!("nginx@{DIGEST}"));
        assert_eq!(reference.digest(), Some(DIGEST));
        assert_eq!(reference.tag(), None);
        assert_eq!(
            reference.to_string(),
            format!("docker.io/library/nginx@{DIGEST}")
        );
    }

    #[test]
    fn name_with_tag_and_digest_keeps_both() {
        let reference = parse(&format!("quay.io/org/app:1.0@{DIGEST}"));
        assert_eq!(reference.tag(), Some("1.0"));
        assert_eq!(reference.digest(), Some(DIGEST));
        assert_eq!(
            reference.to_string(),
            format!("quay.io/org/app:1.0@{DIGEST}")
        );
    }

    #[test]
    fn with_default_tag_adds_latest_only_without_tag_or_digest() {
        assert_eq!(parse("nginx").with_default_tag().tag(), Some("latest"));
        assert_eq!(parse("nginx:1").with_default_tag().tag(), Some("1"));
        assert_eq!(
            parse(&format!("nginx@{DIGEST}")).with_default_tag().tag(),
            None
        );
    }

    #[test]
    fn rejects_upper_case_repository() {
        assert!(matches!(
            ImageReference::parse("Nginx"),
            Err(ImageRefError::Uppercase { .. })
        ));
        assert!(matches!(
            ImageReference::parse("quay.io/Org/app"),
            Err(ImageRefError::Uppercase { .. })
        ));
        // Upper case is fine in the tag.
        assert_eq!(parse("nginx:V1").tag(), Some("V1"));
    }

    #[test]
    fn rejects_invalid_tags() {
        for input in [
            "nginx:-1",
            "nginx:.a",
            "nginx:a/b",
            "nginx:sha256:abc",
            "nginx:",
        ] {
            assert!(
                matches!(
                    ImageReference::parse(input),
                    Err(ImageRefError::InvalidTag { .. }) | Err(ImageRefError::InvalidName { .. })
                ),
                "{input}: {:?}",
                ImageReference::parse(input)
            );
        }
        let long = format!("nginx:{}", "a".repeat(129));
        assert!(matches!(
            ImageReference::parse(&long),
            Err(ImageRefError::InvalidTag { .. })
        ));
        assert!(ImageReference::parse(&format!("nginx:{}", "a".repeat(128))).is_ok());
        assert!(ImageReference::parse("nginx:_under.score-1").is_ok());
    }

    #[test]
    fn rejects_bad_digests() {
        let cases = [
            ("nginx@sha256:abc", "invalid checksum digest format"),
            (
                "nginx@sha256:7CC4B5AEFD1D0CADF8D97D4350462BA51C694EBCA145B08D7D41B41ACC8DB5AA",
                "invalid checksum digest format",
            ),
            (
                "nginx@sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5",
                "invalid checksum digest length",
            ),
            (
                "nginx@md5:7cc4b5aefd1d0cadf8d97d4350462ba5",
                "unsupported digest algorithm",
            ),
            (
                "nginx@7cc4b5aefd1d0cadf8d97d4350462ba5",
                "invalid checksum digest format",
            ),
        ];
        for (input, expected) in cases {
            match ImageReference::parse(input) {
                Err(ImageRefError::InvalidDigest { reason, .. }) => {
                    assert_eq!(reason, expected, "{input}")
                }
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_empty_and_hex_identifiers_and_bad_names() {
        assert_eq!(ImageReference::parse(""), Err(ImageRefError::Empty));
        assert!(matches!(
            ImageReference::parse(&DIGEST[7..]),
            Err(ImageRefError::HexIdentifier(_))
        ));
        for input in [
            "nginx/",
            "/nginx",
            "a//b",
            "-a",
            "a__-b",
            "quay.io/",
            "quay.io:port/app",
        ] {
            assert!(ImageReference::parse(input).is_err(), "{input}");
        }
        let long = format!("quay.io/{}", "a".repeat(256));
        assert_eq!(
            ImageReference::parse(&long),
            Err(ImageRefError::NameTooLong(long.clone()))
        );
    }

    #[test]
    fn path_separators_follow_the_grammar() {
        for valid in ["a.b/c", "a_b", "a__b", "a---b", "quay.io/a-b_c.d/e"] {
            assert!(ImageReference::parse(valid).is_ok(), "{valid}");
        }
        for invalid in ["a..b", "a___b", "a._b"] {
            assert!(ImageReference::parse(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn error_messages_name_the_input_and_the_part() {
        let error = ImageReference::parse("nginx:sha256:abc").unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"invalid image reference "nginx:sha256:abc": invalid tag "sha256:abc""#
        );
    }

    #[test]
    fn pull_reference_joins_tag_with_colon_and_digest_with_at() {
        assert_eq!(pull_reference("nginx", "1.25").unwrap(), "nginx:1.25");
        assert_eq!(
            pull_reference("127.0.0.1:5000/test/busybox", "1").unwrap(),
            "127.0.0.1:5000/test/busybox:1"
        );
        assert_eq!(
            pull_reference("nginx", DIGEST).unwrap(),
            format!("nginx@{DIGEST}")
        );
    }

    #[test]
    fn pull_reference_rejects_what_does_not_parse() {
        assert!(pull_reference("Nginx", "1").is_err());
        assert!(pull_reference("nginx", "sha256:short").is_err());
        assert!(pull_reference("nginx", "bad tag").is_err());
    }

    #[test]
    fn image_key_and_tag_matches_the_manager() {
        let cases = [
            ("nginx", ("nginx", "latest")),
            ("nginx:1.25", ("nginx", "1.25")),
            ("docker.io/library/nginx:1", ("nginx", "1")),
            ("docker.io/user/app", ("user/app", "latest")),
            ("quay.io/org/app:v2", ("quay.io/org/app", "v2")),
            (
                "127.0.0.1:5000/test/busybox:1",
                ("127.0.0.1:5000/test/busybox", "1"),
            ),
        ];
        for (image, (key, tag)) in cases {
            assert_eq!(
                image_key_and_tag(image).unwrap(),
                (key.to_owned(), tag.to_owned()),
                "{image}"
            );
        }
    }

    #[test]
    fn image_key_and_tag_prefers_the_digest_over_the_tag() {
        assert_eq!(
            image_key_and_tag(&format!("nginx:1@{DIGEST}")).unwrap(),
            ("nginx".to_owned(), DIGEST.to_owned())
        );
        assert_eq!(
            image_key_and_tag(&format!("quay.io/org/app@{DIGEST}")).unwrap(),
            ("quay.io/org/app".to_owned(), DIGEST.to_owned())
        );
    }

    #[test]
    fn repo_tags_match_after_normalising_both_sides() {
        let repo_tags = vec![
            "docker.io/library/nginx:1".to_owned(),
            "quay.io/org/app:v2".to_owned(),
            "garbage::".to_owned(),
        ];
        assert!(repo_tags_contain(&repo_tags, "nginx", "1"));
        assert!(repo_tags_contain(
            &repo_tags,
            "docker.io/library/nginx",
            "1"
        ));
        assert!(repo_tags_contain(&repo_tags, "quay.io/org/app", "v2"));
        assert!(!repo_tags_contain(&repo_tags, "nginx", "2"));
        assert!(!repo_tags_contain(&repo_tags, "app", "v2"));
        assert!(!repo_tags_contain(
            &["nginx:1".to_owned()],
            "user/nginx",
            "1"
        ));
    }

    #[test]
    fn repo_tags_never_match_a_digest() {
        let repo_tags = vec![format!("docker.io/library/nginx:{}", &DIGEST[7..20])];
        assert!(!repo_tags_contain(&repo_tags, "nginx", DIGEST));
    }

    #[test]
    fn repo_digests_match_a_digest_tag() {
        let repo_digests = vec![format!("docker.io/library/nginx@{DIGEST}")];
        assert!(repo_digests_contain(&repo_digests, "nginx", DIGEST));
        assert!(repo_digests_contain(
            &repo_digests,
            "docker.io/library/nginx",
            DIGEST
        ));
        assert!(!repo_digests_contain(&repo_digests, "user/nginx", DIGEST));
        let other = format!("sha256:{}", "0".repeat(64));
        assert!(!repo_digests_contain(&repo_digests, "nginx", &other));
    }
}
