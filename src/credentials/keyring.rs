//! A registry keyring that matches images exactly like the kubelet's `BasicDockerKeyring`
//! (`pkg/credentialprovider/keyring.go`), so a pull Secret that works for a Pod works for
//! a NodeImage.
//!
//! * A registry key is read as a URL: an optional `http://`/`https://` scheme is dropped,
//!   a `/v1/` or `/v2/` path prefix means the host alone
//!   (`https://index.docker.io/v1/` → `index.docker.io`), another path is kept
//!   (`quay.io/org`).
//! * A key matches an image (the normalised repository, e.g. `docker.io/library/nginx`)
//!   when the ports are equal, the hosts have as many `.`-separated components and each
//!   component matches as a glob (`*.example.com`, `registry.*.io`, `*-good.example.com`;
//!   one `*` never spans a `.`), and the key's path is a string prefix of the image's path
//!   (`quay.io/org` matches `quay.io/org/app` and `quay.io/organisation`).
//! * Lookup returns the credentials of every matching key, keys in reverse lexical order,
//!   so longer keys come before their prefixes and literal components before `*`.
//! * Only when nothing matched, an image on Docker Hub uses the credentials stored under
//!   `index.docker.io` (the usual `https://index.docker.io/v1/` key).

use std::collections::HashMap;

use super::AuthConfig;
use super::dockerconfig::DockerConfigEntry;

/// The key Docker Hub credentials are stored under (`https://index.docker.io/v1/`).
const DEFAULT_REGISTRY_KEY: &str = "index.docker.io";

/// Registry credentials indexed for kubelet-style lookup.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    /// Distinct keys, reverse-sorted: the order lookups walk them in.
    index: Vec<String>,
    /// The credentials of each key, in the order they were added.
    credentials: HashMap<String, Vec<AuthConfig>>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a credential under a registry key as written in a docker config
    /// (`https://index.docker.io/v1/`, `quay.io`, `*.azurecr.io`, `registry:5000/team`).
    /// Returns `false`, adding nothing, when the key does not parse as a URL; the kubelet
    /// logs and skips such keys too.
    pub fn add(&mut self, registry: &str, auth: AuthConfig) -> bool {
        let added = self.insert(registry, auth);
        self.reindex();
        added
    }

    /// Adds every entry (see [`Keyring::add`]).
    pub fn extend(&mut self, entries: impl IntoIterator<Item = DockerConfigEntry>) {
        for entry in entries {
            self.insert(&entry.registry, entry.auth);
        }
        self.reindex();
    }

    /// Whether the keyring holds no credentials.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The credentials for `image`, most specific key first. `image` is what the kubelet
    /// looks up: a normalised repository such as `docker.io/library/nginx` or
    /// `127.0.0.1:5000/test/busybox` (see
    /// [`ImageReference::repository`](crate::imageref::ImageReference::repository)).
    pub fn lookup(&self, image: &str) -> Vec<AuthConfig> {
        let matched: Vec<AuthConfig> = self
            .index
            .iter()
            .filter(|key| urls_match(key, image))
            .flat_map(|key| self.credentials[key].iter().cloned())
            .collect();
        if !matched.is_empty() {
            return matched;
        }
        if is_default_registry_match(image)
            && let Some(credentials) = self.credentials.get(DEFAULT_REGISTRY_KEY)
        {
            return credentials.clone();
        }
        Vec::new()
    }

    fn insert(&mut self, registry: &str, auth: AuthConfig) -> bool {
        let Some(key) = registry_key(registry) else {
            tracing::warn!(
                registry,
                "Registry key in docker config is not a valid URL; ignoring it"
            );
            return false;
        };
        self.credentials.entry(key).or_default().push(auth);
        true
    }

    fn reindex(&mut self) {
        self.index = self.credentials.keys().cloned().collect();
        self.index.sort_unstable_by(|a, b| b.cmp(a));
    }
}

/// The kubelet's `BasicDockerKeyring.Add` key: host (with port) plus path, where a `/v1/`
/// or `/v2/` path prefix is dropped and a bare `/` path means none. `None` when the
/// registry does not parse as a URL ([`Keyring::add`] skips it). Public for the fuzz
/// targets, which check lookups against it.
pub fn registry_key(registry: &str) -> Option<String> {
    let schemeless = registry
        .strip_prefix("https://")
        .or_else(|| registry.strip_prefix("http://"))
        .unwrap_or(registry);
    let url = SchemelessUrl::parse(schemeless)?;
    let path = if url.path.starts_with("/v1/") || url.path.starts_with("/v2/") {
        &url.path[3..]
    } else {
        &url.path[..]
    };
    if path.is_empty() || path == "/" {
        Some(url.host)
    } else {
        Some(format!("{}{path}", url.host))
    }
}

/// The kubelet's `isDefaultRegistryMatch`: whether `image` is pulled from Docker Hub,
/// judged from its name alone (no domain, `docker.io`, `index.docker.io`, or a first
/// component without `.` or `:`).
pub fn is_default_registry_match(image: &str) -> bool {
    let Some((first, _)) = image.split_once('/') else {
        return !image.is_empty();
    };
    if first.is_empty() {
        return false;
    }
    first == "docker.io" || first == "index.docker.io" || !first.contains(['.', ':'])
}

/// The kubelet's `URLsMatchStr`: whether `target` (an image) falls under `glob` (a
/// registry key or a plugin's `matchImages` entry). Both are scheme-less URLs. Ports must
/// be equal, hosts must have as many components and each must match as a glob, and the
/// glob's path must be a prefix of the target's path. Anything unparseable never matches.
pub fn urls_match(glob: &str, target: &str) -> bool {
    let (Some(glob), Some(target)) = (SchemelessUrl::parse(glob), SchemelessUrl::parse(target))
    else {
        return false;
    };
    let (glob_parts, glob_port) = glob.split_host();
    let (target_parts, target_port) = target.split_host();
    glob_port == target_port
        && glob_parts.len() == target_parts.len()
        && target.path.starts_with(&glob.path)
        && glob_parts
            .iter()
            .zip(&target_parts)
            .all(|(pattern, name)| glob_component_matches(pattern, name))
}

/// Whether a `matchImages` entry or registry key parses (the kubelet's
/// `ParseSchemelessURL` succeeds on it).
pub fn is_valid_schemeless_url(url: &str) -> bool {
    SchemelessUrl::parse(url).is_some()
}

/// What Go's `url.Parse("https://" + s)` yields for the keyring: host (with port) and the
/// decoded path; query and fragment are dropped.
#[derive(Debug, PartialEq, Eq)]
struct SchemelessUrl {
    host: String,
    path: String,
}

impl SchemelessUrl {
    fn parse(url: &str) -> Option<Self> {
        if url.chars().any(|c| c.is_ascii_control()) {
            return None;
        }
        let url = url.split('#').next().unwrap_or_default();
        let url = url.split('?').next().unwrap_or_default();
        let (authority, path) = match url.find('/') {
            Some(slash) => (&url[..slash], &url[slash..]),
            None => (url, ""),
        };
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if !is_valid_host(host) {
            return None;
        }
        Some(Self {
            host: host.to_owned(),
            path: percent_decode(path)?,
        })
    }

    /// Go's `net.SplitHostPort`, falling back to the whole host and no port when it
    /// fails; the host is then split into `.`-separated components.
    fn split_host(&self) -> (Vec<&str>, &str) {
        let (host, port) = split_host_port(&self.host).unwrap_or((&self.host, ""));
        (host.split('.').collect(), port)
    }
}

/// Go's `url.Parse` host check: an optional `:port` of digits, a bracketed IPv6 address or
/// characters allowed in a host.
fn is_valid_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        if !address
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", port),
                None => return false,
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, port),
            None => (host, ""),
        }
    };
    port.bytes().all(|b| b.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-._~!$&'()*+,;=:[]<>\"".contains(c))
}

/// Go's `net.SplitHostPort`; `None` where it returns an error.
fn split_host_port(host_port: &str) -> Option<(&str, &str)> {
    if let Some(rest) = host_port.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return (!port.contains([':', '[', ']'])).then_some((host, port));
    }
    let (host, port) = host_port.rsplit_once(':')?;
    (!host.contains([':', '[', ']'])).then_some((host, port))
}

/// `%XX` escapes decoded; `None` for a malformed escape, as Go's `url.Parse` rejects it.
fn percent_decode(path: &str) -> Option<String> {
    if !path.contains('%') {
        return Some(path.to_owned());
    }
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&decoded).into_owned())
}

/// Go's `filepath.Match` for one host component: `*` (any run of characters), `?` (one
/// character), `[...]` classes with ranges and `^` negation, and `\` escapes. A malformed
/// pattern matches nothing.
///
/// Every token but `*` matches exactly one character, so a mismatch only ever needs to
/// retry from the last `*`: linear in the pattern times the name. (Trying every split point
/// at every `*` recursively, as a first version did, took exponential time on a key like
/// `**********b` against a long host: a hostile pull Secret could stall every lookup.)
fn glob_component_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let Some(tokens) = glob_tokens(&pattern) else {
        return false;
    };
    let name: Vec<char> = name.chars().collect();
    let (mut token, mut position) = (0, 0);
    // The last `*` seen and the name position it currently stands for the end of.
    let mut star: Option<(usize, usize)> = None;
    while position < name.len() {
        match tokens.get(token) {
            Some(GlobToken::Star) => {
                star = Some((token, position));
                token += 1;
                continue;
            }
            Some(single) if single.matches(name[position]) => {
                token += 1;
                position += 1;
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more character, or fail.
        let Some((star_token, star_position)) = star else {
            return false;
        };
        star = Some((star_token, star_position + 1));
        token = star_token + 1;
        position = star_position + 1;
    }
    tokens[token..].iter().all(|t| matches!(t, GlobToken::Star))
}

/// One element of a host-component glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobToken<'a> {
    /// `*`: any run of characters.
    Star,
    /// `?`: any one character.
    Any,
    /// `[...]`: the class's text after the `[`, through its `]`.
    Class(&'a [char]),
    /// A character, possibly `\`-escaped.
    Literal(char),
}

impl GlobToken<'_> {
    /// Whether this single-character token matches `c` (`Star` never gets here).
    fn matches(self, c: char) -> bool {
        match self {
            GlobToken::Star | GlobToken::Any => true,
            GlobToken::Class(class) => match_class(class, Some(c)).is_some_and(|(hit, _)| hit),
            GlobToken::Literal(literal) => literal == c,
        }
    }
}

/// The pattern's tokens; `None` when it is malformed (an unterminated or empty class, a
/// bad range, a trailing `\`), which Go reports as `ErrBadPattern` and the kubelet as no
/// match.
fn glob_tokens(pattern: &[char]) -> Option<Vec<GlobToken<'_>>> {
    let mut tokens = Vec::new();
    let mut rest = pattern;
    while let Some((&first, after)) = rest.split_first() {
        rest = after;
        let token = match first {
            '*' => GlobToken::Star,
            '?' => GlobToken::Any,
            '[' => {
                let (_, after_class) = match_class(rest, None)?;
                let class = &rest[..rest.len() - after_class.len()];
                rest = after_class;
                GlobToken::Class(class)
            }
            '\\' => {
                let (&escaped, after) = rest.split_first()?;
                rest = after;
                GlobToken::Literal(escaped)
            }
            literal => GlobToken::Literal(literal),
        };
        tokens.push(token);
    }
    Some(tokens)
}

/// Parses a `[...]` class (after the `[`) and matches `c` against it. Returns whether it
/// matched (false when there is no character) and the pattern after the `]`.
fn match_class(class: &[char], c: Option<char>) -> Option<(bool, &[char])> {
    let (negated, mut rest) = match class.split_first() {
        Some(('^', rest)) => (true, rest),
        _ => (false, class),
    };
    let mut matched = false;
    let mut ranges = 0;
    loop {
        match rest.split_first() {
            None => return None,
            Some((']', after)) if ranges > 0 => {
                let hit = c.is_some() && matched != negated;
                return Some((hit, after));
            }
            _ => {}
        }
        let (low, after) = class_char(rest)?;
        rest = after;
        let mut high = low;
        if let Some(('-', after)) = rest.split_first() {
            let (end, after) = class_char(after)?;
            high = end;
            rest = after;
        }
        if c.is_some_and(|c| low <= c && c <= high) {
            matched = true;
        }
        ranges += 1;
    }
}

/// One character of a class: escaped with `\`, or any but `-` and `]`.
fn class_char(class: &[char]) -> Option<(char, &[char])> {
    match class.split_first()? {
        ('\\', rest) => rest.split_first().map(|(&c, rest)| (c, rest)),
        ('-' | ']', _) => None,
        (&c, rest) => Some((c, rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(username: &str) -> AuthConfig {
        AuthConfig::new(username, format!("{username}-password"))
    }

    fn usernames(credentials: &[AuthConfig]) -> Vec<&str> {
        credentials.iter().map(AuthConfig::username).collect()
    }

    /// kubelet `TestURLsMatch`.
    #[test]
    fn urls_match_like_the_kubelet() {
        let cases = [
            // match when there is no path component
            ("*.kubernetes.io", "prefix.kubernetes.io", true),
            ("prefix.*.io", "prefix.kubernetes.io", true),
            ("prefix.kubernetes.*", "prefix.kubernetes.io", true),
            ("*-good.kubernetes.io", "prefix-good.kubernetes.io", true),
            // match with path components
            ("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", true),
            ("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", true),
            // match with path components and ports
            (
                "*.kubernetes.io:1111/blah",
                "prefix.kubernetes.io:1111/blah",
                true,
            ),
            (
                "prefix.*.io:1111/foo",
                "prefix.kubernetes.io:1111/foo/bar",
                true,
            ),
            // no match when number of parts mismatch
            ("*.kubernetes.io", "kubernetes.io", false),
            ("*.*.kubernetes.io", "prefix.kubernetes.io", false),
            ("*.*.kubernetes.io", "kubernetes.io", false),
            ("*kubernetes.io", "a.kubernetes.io", false),
            // match when number of parts match
            ("*kubernetes.io", "kubernetes.io", true),
            ("*.*.*.kubernetes.io", "a.b.c.kubernetes.io", true),
            // no match when some parts mismatch
            ("kubernetes.io", "kubernetes.com", false),
            ("k*.io", "quay.io", false),
            // no match when ports mismatch
            (
                "*.kubernetes.io:1234/blah",
                "prefix.kubernetes.io:1111/blah",
                false,
            ),
            (
                "prefix.*.io/foo",
                "prefix.kubernetes.io:1111/foo/bar",
                false,
            ),
        ];
        for (glob, target, expected) in cases {
            assert_eq!(urls_match(glob, target), expected, "{glob} vs {target}");
        }
    }

    #[test]
    fn glob_classes_and_escapes_follow_filepath_match() {
        assert!(urls_match("reg[0-9].io", "reg1.io"));
        assert!(!urls_match("reg[^0-9].io", "reg1.io"));
        // As in Go, '?' starts the URL's query and a backslash is no host character, so neither
        // can be used in a glob.
        assert!(!urls_match("reg?.io", "regx.io"));
        assert!(!urls_match(r"re\g.io", "reg.io"));
        assert!(glob_component_matches("reg?", "regx"));
        assert!(!glob_component_matches("reg?", "reg"));
        assert!(glob_component_matches(r"re\g", "reg"));
        // Malformed patterns match nothing.
        assert!(!urls_match("reg[.io", "reg[.io"));
        assert!(!urls_match("reg[].io", "reg].io"));
    }

    /// Found by the `credentials` fuzz target: a key of many `*` against a long host took
    /// exponential time (every split point at every `*`), stalling each lookup.
    #[test]
    fn many_stars_against_a_long_host_answer_without_backtracking_blowup() {
        let stars = "*".repeat(40);
        let host = "a".repeat(200);
        assert!(!glob_component_matches(&format!("{stars}b"), &host));
        assert!(glob_component_matches(&format!("{stars}a"), &host));
        assert!(glob_component_matches(&format!("a{stars}a*"), &host));
        let mut keyring = Keyring::new();
        keyring.add(&format!("{stars}b.io"), auth("stars"));
        assert!(keyring.lookup(&format!("{host}.io/app")).is_empty());
        // A long literal key does not recurse once per character either.
        let long = "a".repeat(100_000);
        assert!(glob_component_matches(&long, &long));
    }

    #[test]
    fn stars_classes_and_escapes_combine_like_filepath_match() {
        assert!(glob_component_matches("*", ""));
        assert!(glob_component_matches("**", "abc"));
        assert!(glob_component_matches("a*c", "abbbc"));
        assert!(!glob_component_matches("a*c", "abbbd"));
        assert!(glob_component_matches("*[0-9]?x", "reg12x"));
        assert!(glob_component_matches(r"*\*", "ab*"));
        assert!(!glob_component_matches(r"*\*", "abc"));
        assert!(glob_component_matches("a*b*c", "aXbYbZc"));
        // Malformed anywhere means no match, even where the name already failed.
        assert!(!glob_component_matches("*[", "a"));
        assert!(!glob_component_matches("b*[", "a"));
        assert!(!glob_component_matches("a\\", "a"));
    }

    /// kubelet `TestDockerKeyringForGlob`: each key finds `<target>/foo/bar`.
    #[test]
    fn keyring_finds_images_under_glob_keys() {
        let cases = [
            ("https://hello.kubernetes.io", "hello.kubernetes.io"),
            ("https://*.docker.io", "prefix.docker.io"),
            ("https://prefix.*.io", "prefix.docker.io"),
            ("https://prefix.docker.*", "prefix.docker.io"),
            ("https://*.docker.io/path", "prefix.docker.io/path"),
            ("https://prefix.*.io/path", "prefix.docker.io/path/subpath"),
            ("https://prefix.docker.*/path", "prefix.docker.io/path"),
            ("https://*.docker.io:8888", "prefix.docker.io:8888"),
            ("https://prefix.*.io:8888", "prefix.docker.io:8888"),
            ("https://prefix.docker.*:8888", "prefix.docker.io:8888"),
            (
                "https://*.docker.io/path:1111",
                "prefix.docker.io/path:1111",
            ),
            ("https://*.docker.io/v1/", "prefix.docker.io/path:1111"),
            ("https://*.docker.io/v2/", "prefix.docker.io/path:1111"),
            (
                "https://prefix.docker.*/path:1111",
                "prefix.docker.io/path:1111",
            ),
            ("prefix.docker.io:1111", "prefix.docker.io:1111/path"),
            ("*.docker.io:1111", "prefix.docker.io:1111/path"),
        ];
        for (key, target) in cases {
            let mut keyring = Keyring::new();
            assert!(keyring.add(key, auth("foo")), "{key}");
            let found = keyring.lookup(&format!("{target}/foo/bar"));
            assert_eq!(usernames(&found), ["foo"], "{key} vs {target}");
        }
    }

    /// kubelet `TestKeyringMiss`.
    #[test]
    fn keyring_misses_images_outside_its_keys() {
        let cases = [
            ("https://hello.kubernetes.io", "world.mesos.org/foo/bar"),
            ("https://*.docker.com", "prefix.docker.io"),
            ("https://suffix.*.io", "prefix.docker.io"),
            ("https://prefix.docker.c*", "prefix.docker.io"),
            (
                "https://prefix.*.io/path:1111",
                "prefix.docker.io/path/subpath:1111",
            ),
            ("suffix.*.io", "prefix.docker.io"),
        ];
        for (key, target) in cases {
            let mut keyring = Keyring::new();
            keyring.add(key, auth("foo"));
            assert!(
                keyring.lookup(&format!("{target}/foo/bar")).is_empty(),
                "{key} vs {target}"
            );
        }
    }

    /// kubelet `TestKeyringMissWithDockerHubCredentials`.
    #[test]
    fn docker_hub_credentials_do_not_apply_to_other_registries() {
        let mut keyring = Keyring::new();
        keyring.add("https://index.docker.io/v1/", auth("hub"));
        assert!(keyring.lookup("world.mesos.org/foo/bar").is_empty());
    }

    /// kubelet `TestKeyringHitWithUnqualifiedDockerHub`,
    /// `TestKeyringHitWithUnqualifiedLibraryDockerHub` and
    /// `TestKeyringHitWithQualifiedDockerHub`, plus the normalised names kruised looks up.
    #[test]
    fn docker_hub_credentials_apply_to_docker_hub_images() {
        let mut keyring = Keyring::new();
        keyring.add("https://index.docker.io/v1/", auth("hub"));
        for image in [
            "google/docker-registry",
            "jenkins",
            "index.docker.io/v1//google/docker-registry",
            "docker.io/library/nginx",
            "docker.io/user/app",
        ] {
            assert_eq!(usernames(&keyring.lookup(image)), ["hub"], "{image}");
        }
    }

    #[test]
    fn docker_hub_fallback_is_used_only_when_nothing_else_matched() {
        let mut keyring = Keyring::new();
        keyring.add("https://index.docker.io/v1/", auth("legacy"));
        keyring.add("docker.io", auth("modern"));
        assert_eq!(
            usernames(&keyring.lookup("docker.io/library/nginx")),
            ["modern"]
        );
    }

    /// kubelet `TestIsDefaultRegistryMatch`.
    #[test]
    fn default_registry_match_judges_the_first_component() {
        let cases = [
            ("foo/bar", true),
            ("docker.io/foo/bar", true),
            ("index.docker.io/foo/bar", true),
            ("foo", true),
            ("", false),
            ("registry.tld/foo/bar", false),
            ("registry:5000/foo/bar", false),
            ("myhostdocker.io/foo/bar", false),
        ];
        for (image, expected) in cases {
            assert_eq!(is_default_registry_match(image), expected, "{image:?}");
        }
    }

    /// kubelet `TestDockerKeyringLookup`.
    #[test]
    fn longer_paths_come_before_their_prefixes() {
        let mut keyring = Keyring::new();
        keyring.add("bar.example.com/pong", auth("grace"));
        keyring.add("bar.example.com", auth("ada"));
        let cases: [(&str, &[&str]); 7] = [
            // direct match
            ("bar.example.com", &["ada"]),
            // direct match deeper than other possible matches
            ("bar.example.com/pong", &["grace", "ada"]),
            // no direct match, deeper path ignored
            ("bar.example.com/ping", &["ada"]),
            // match first part of path token
            ("bar.example.com/pongz", &["grace", "ada"]),
            // match regardless of sub-path
            ("bar.example.com/pong/pang", &["grace", "ada"]),
            // no host match
            ("example.com", &[]),
            ("foo.example.com", &[]),
        ];
        for (image, expected) in cases {
            assert_eq!(usernames(&keyring.lookup(image)), expected, "{image}");
        }
    }

    /// kubelet `TestIssue3797`: a key with scheme and `/v1/` matches by host.
    #[test]
    fn scheme_and_v1_path_in_a_key_mean_the_host() {
        let mut keyring = Keyring::new();
        keyring.add("https://quay.io/v1/", auth("rex"));
        for image in ["quay.io", "quay.io/foo", "quay.io/foo/bar"] {
            assert_eq!(usernames(&keyring.lookup(image)), ["rex"], "{image}");
        }
    }

    #[test]
    fn literal_components_come_before_wildcards() {
        let mut keyring = Keyring::new();
        keyring.add("*.registry.io", auth("wild"));
        keyring.add("team.registry.io", auth("team"));
        assert_eq!(
            usernames(&keyring.lookup("team.registry.io/app")),
            ["team", "wild"]
        );
    }

    #[test]
    fn ports_must_be_equal() {
        let mut keyring = Keyring::new();
        keyring.add("127.0.0.1:5000", auth("five"));
        keyring.add("127.0.0.1", auth("none"));
        assert_eq!(
            usernames(&keyring.lookup("127.0.0.1:5000/test/busybox")),
            ["five"]
        );
        assert_eq!(
            usernames(&keyring.lookup("127.0.0.1/test/busybox")),
            ["none"]
        );
        assert!(keyring.lookup("127.0.0.1:5001/test/busybox").is_empty());
    }

    #[test]
    fn equal_keys_keep_every_credential_in_insertion_order() {
        let mut keyring = Keyring::new();
        keyring.extend([
            DockerConfigEntry {
                registry: "https://quay.io".into(),
                auth: auth("first"),
            },
            DockerConfigEntry {
                registry: "quay.io/v2/".into(),
                auth: auth("second"),
            },
        ]);
        assert_eq!(
            usernames(&keyring.lookup("quay.io/org/app")),
            ["first", "second"]
        );
    }

    #[test]
    fn unparseable_keys_are_skipped() {
        let mut keyring = Keyring::new();
        assert!(!keyring.add("quay.io:http/x", auth("bad-port")));
        assert!(!keyring.add("bad host/x", auth("space")));
        assert!(keyring.is_empty());
    }

    #[test]
    fn registry_keys_normalise_like_the_kubelet() {
        let cases = [
            ("https://index.docker.io/v1/", "index.docker.io"),
            ("http://quay.io", "quay.io"),
            ("quay.io/", "quay.io"),
            ("quay.io/v2/org", "quay.io/org"),
            ("quay.io/org/", "quay.io/org/"),
            ("user@quay.io/org", "quay.io/org"),
            ("quay.io/a%20b", "quay.io/a b"),
            ("registry:5000/v1/team", "registry:5000/team"),
        ];
        for (registry, key) in cases {
            assert_eq!(registry_key(registry).as_deref(), Some(key), "{registry}");
        }
    }
}
