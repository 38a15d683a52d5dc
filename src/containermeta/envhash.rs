//! The env-from-metadata hash, bit-identical with kruise's `envFromMetadataHasher` (§6.1), which
//! kruise-manager compares with the annotation's `extractedEnvFromMetadataHash`:
//!
//! 1. take the container's `env` entries with an empty `value`, a `valueFrom.fieldRef`, a name
//!    other than `SIDECARSET_VERSION` / `SIDECARSET_VERSION_ALT`, and a field path
//!    `metadata.labels['K']` or `metadata.annotations['K']`;
//! 2. pair each name with a value: the pod's label or annotation `K` for the *expected* hash,
//!    the running container's variable of that name for the *current* one ("" when absent);
//! 3. sort by name (stable), marshal as Go's `encoding/json` marshals `[]core/v1.EnvVar`
//!    (`[{"name":"A","value":"x"}]`, `value` left out when empty, `null` for none);
//! 4. hash with FNV-1a 32 the go-spew `%#v` rendering of those JSON bytes (the kubelet's
//!    `hashutil.DeepHashObject`): `([]uint8)[` + the bytes in decimal, space-separated + `]`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar};

/// Env names kruise leaves out of the hash (SidecarSet bookkeeping).
const EXCLUDED: [&str; 2] = ["SIDECARSET_VERSION", "SIDECARSET_VERSION_ALT"];

/// Which metadata map a field path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Labels,
    Annotations,
}

/// The k8s `fieldpath.SplitMaybeSubscriptedPath`: `metadata.labels['k']` is
/// `("metadata.labels", "k")`; a path without a subscript is not split.
pub fn split_subscripted_path(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (head, key) = inner.split_once("['")?;
    (!head.is_empty()).then_some((head, key))
}

/// The env entries the hash covers, in spec order: name, source and key.
fn metadata_envs(container: &Container) -> Vec<(&str, Source, &str)> {
    container
        .env
        .iter()
        .flatten()
        .filter(|env| env.value.as_deref().unwrap_or_default().is_empty())
        .filter(|env| !EXCLUDED.contains(&env.name.as_str()))
        .filter_map(|env| {
            let path = &env.value_from.as_ref()?.field_ref.as_ref()?.field_path;
            let (head, key) = split_subscripted_path(path)?;
            let source = match head {
                "metadata.labels" => Source::Labels,
                "metadata.annotations" => Source::Annotations,
                _ => return None,
            };
            Some((env.name.as_str(), source, key))
        })
        .collect()
}

/// Whether the container has any env from labels or annotations.
pub fn uses_metadata(container: &Container) -> bool {
    !metadata_envs(container).is_empty()
}

/// The hash the container should have for a pod with these labels and annotations
/// (kruise's `GetExpectHash`).
pub fn expected_hash(
    container: &Container,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> u64 {
    let envs = metadata_envs(container)
        .into_iter()
        .map(|(name, source, key)| {
            let map = match source {
                Source::Labels => labels,
                Source::Annotations => annotations,
            };
            (name.to_owned(), map.get(key).cloned().unwrap_or_default())
        })
        .collect();
    hash_envs(envs)
}

/// The hash of the container as it runs, from its environment (kruise's `GetCurrentHash`).
pub fn current_hash(container: &Container, environment: &BTreeMap<String, String>) -> u64 {
    let envs = metadata_envs(container)
        .into_iter()
        .map(|(name, _, _)| {
            (
                name.to_owned(),
                environment.get(name).cloned().unwrap_or_default(),
            )
        })
        .collect();
    hash_envs(envs)
}

/// Parses the output of `env` as kruise does: trimmed lines, split at the first `=`; lines
/// without one are skipped.
pub fn parse_env_output(output: &str) -> BTreeMap<String, String> {
    output
        .trim()
        .split('\n')
        .filter_map(|line| line.trim().split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Sort, marshal, hash (steps 3 and 4).
fn hash_envs(mut envs: Vec<(String, String)>) -> u64 {
    // Stable, as Go's `sort.SliceStable`.
    envs.sort_by(|a, b| a.0.cmp(&b.0));
    u64::from(fnv1a32(
        spew_byte_slice(go_json_env_vars(&envs).as_bytes()).as_bytes(),
    ))
}

/// Go's `json.Marshal` of a `[]core/v1.EnvVar` with only `name` and `value` set; `null` for
/// an empty (nil) list, as kruise's slice starts nil.
pub fn go_json_env_vars(envs: &[(String, String)]) -> String {
    if envs.is_empty() {
        return "null".to_owned();
    }
    let items: Vec<String> = envs
        .iter()
        .map(|(name, value)| {
            // `value` is `omitempty`.
            if value.is_empty() {
                format!("{{\"name\":{}}}", go_json_string(name))
            } else {
                format!(
                    "{{\"name\":{},\"value\":{}}}",
                    go_json_string(name),
                    go_json_string(value)
                )
            }
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// A JSON string as Go 1.22+ `encoding/json` writes it (HTML escaping on): `\"`, `\\`, `\b`,
/// `\f`, `\n`, `\r`, `\t`, other control characters as `\u00xx`, `<`, `>`, `&`, U+2028 and
/// U+2029 as `\uXXXX`.
pub fn go_json_string(text: &str) -> String {
    let mut json = String::with_capacity(text.len() + 2);
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            '\u{8}' => json.push_str("\\b"),
            '\u{c}' => json.push_str("\\f"),
            '\n' => json.push_str("\\n"),
            '\r' => json.push_str("\\r"),
            '\t' => json.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                json.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c if u32::from(c) < 0x20 => json.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => json.push(c),
        }
    }
    json.push('"');
    json
}

/// go-spew's `%#v` of a `[]byte` (`ConfigState{Indent: " ", SortKeys, DisableMethods,
/// SpewKeys}`): the type in parentheses, then the elements in decimal without their type.
pub fn spew_byte_slice(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(11 + bytes.len() * 4);
    text.push_str("([]uint8)[");
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 {
            text.push(' ');
        }
        text.push_str(&byte.to_string());
    }
    text.push(']');
    text
}

/// FNV-1a, 32 bits (Go's `hash/fnv.New32a`).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(PRIME)
    })
}

/// An env var read from a label or annotation, for building containers in tests and docs.
pub fn env_from_metadata(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                api_version: None,
                field_path: field_path.to_owned(),
            }),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn container(envs: Vec<EnvVar>) -> Container {
        Container {
            name: "app".into(),
            env: Some(envs),
            ..Container::default()
        }
    }

    fn literal(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    #[test]
    fn fnv1a32_matches_the_published_vectors() {
        // From the FNV reference test suite (http://www.isthe.com/chongo/tech/comp/fnv/).
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn the_spec_vectors_hold() {
        // §6.1 step 5.
        assert_eq!(hash_envs(Vec::new()), 86_995_377);
        assert_eq!(hash_envs(vec![("A".into(), "x".into())]), 496_662_434);
    }

    #[test]
    fn the_spec_vectors_rederived_from_hand_written_spew_output() {
        // `null` is the bytes 110 117 108 108; go-spew prints a []byte as its type and its
        // decimal elements. Written out by hand, not by `spew_byte_slice`:
        let null = "([]uint8)[110 117 108 108]";
        assert_eq!(spew_byte_slice(b"null"), null);
        assert_eq!(u64::from(fnv1a32(null.as_bytes())), 86_995_377);
        // [{"name":"A","value":"x"}]: [ { " n a m e " : " A " , " v a l u e " : " x " } ]
        let one = "([]uint8)[91 123 34 110 97 109 101 34 58 34 65 34 44 34 118 97 108 117 101 34 58 34 120 34 125 93]";
        assert_eq!(
            go_json_env_vars(&[("A".into(), "x".into())]),
            r#"[{"name":"A","value":"x"}]"#
        );
        assert_eq!(spew_byte_slice(br#"[{"name":"A","value":"x"}]"#), one);
        assert_eq!(u64::from(fnv1a32(one.as_bytes())), 496_662_434);
    }

    #[test]
    fn go_json_escapes_html_and_control_characters() {
        assert_eq!(go_json_string("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(
            go_json_string("q\"\\\n\t\u{1}\u{8}\u{c}"),
            r#""q\"\\\n\t\u0001\b\f""#
        );
        assert_eq!(go_json_string("\u{2028}é"), "\"\\u2028é\"");
        assert_eq!(
            go_json_env_vars(&[("E".into(), String::new()), ("F".into(), "v".into())]),
            r#"[{"name":"E"},{"name":"F","value":"v"}]"#
        );
    }

    #[test]
    fn field_paths_split_like_kubernetes() {
        assert_eq!(
            split_subscripted_path("metadata.labels['app.kubernetes.io/name']"),
            Some(("metadata.labels", "app.kubernetes.io/name"))
        );
        assert_eq!(split_subscripted_path("metadata.name"), None);
        assert_eq!(split_subscripted_path("['x']"), None);
        assert_eq!(
            split_subscripted_path("metadata.labels['a']b']"),
            Some(("metadata.labels", "a']b"))
        );
    }

    #[test]
    fn only_label_and_annotation_envs_without_a_value_count() {
        let c = container(vec![
            literal("LITERAL", "a"),
            env_from_metadata("FROM_LABEL", "metadata.labels['l1']"),
            env_from_metadata("FROM_NAME", "metadata.name"),
            env_from_metadata("SIDECARSET_VERSION", "metadata.annotations['v']"),
            env_from_metadata("FROM_ANNOTATION", "metadata.annotations['a1']"),
        ]);
        let names: Vec<&str> = metadata_envs(&c).iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, ["FROM_LABEL", "FROM_ANNOTATION"]);
        assert!(uses_metadata(&c));
        assert!(!uses_metadata(&container(vec![literal("A", "b")])));
    }

    #[test]
    fn expected_and_current_hashes_agree_when_the_container_saw_the_metadata() {
        // kruise's TestEnvFromMetadataHasher, both cases.
        let meta = labels(&[("l1", "foo"), ("l2", "bar")]);
        let c1 = container(vec![
            literal("e1", "a"),
            env_from_metadata("e2", "metadata.labels['l1']"),
        ]);
        let c2 = container(vec![
            literal("e1", "a"),
            env_from_metadata("e2", "metadata.labels['l1']"),
            literal("e3", "c"),
        ]);
        let expect = expected_hash(&c1, &meta, &BTreeMap::new());
        assert_ne!(expect, current_hash(&c2, &labels(&[("e2", "bar")])));
        let reordered = container(vec![
            env_from_metadata("e2", "metadata.labels['l1']"),
            literal("e1", "a"),
        ]);
        assert_eq!(expect, current_hash(&reordered, &labels(&[("e2", "foo")])));
    }

    #[test]
    fn the_hash_is_sorted_by_env_name() {
        let c = container(vec![
            env_from_metadata("B", "metadata.labels['b']"),
            env_from_metadata("A", "metadata.annotations['a']"),
        ]);
        let expected = expected_hash(&c, &labels(&[("b", "2")]), &labels(&[("a", "1")]));
        let by_hand = r#"[{"name":"A","value":"1"},{"name":"B","value":"2"}]"#;
        assert_eq!(
            expected,
            u64::from(fnv1a32(spew_byte_slice(by_hand.as_bytes()).as_bytes()))
        );
    }

    #[test]
    fn env_output_parses_like_kruise() {
        let env = parse_env_output("PATH=/bin\nA=x=y\n  B=  \nnoequals\n\n");
        assert_eq!(env.get("A").map(String::as_str), Some("x=y"));
        assert_eq!(env.get("B").map(String::as_str), Some(""));
        assert_eq!(env.get("PATH").map(String::as_str), Some("/bin"));
        assert_eq!(env.len(), 3);
    }
}
