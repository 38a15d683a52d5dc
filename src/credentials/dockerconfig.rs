//! Registry credentials from image pull Secrets: `kubernetes.io/dockerconfigjson`
//! (`.dockerconfigjson`, a docker `config.json` with an `auths` map) and the legacy
//! `kubernetes.io/dockercfg` (`.dockercfg`, the bare map).
//!
//! Each entry has `auth` (base64 of `username:password`; the password may contain `:`)
//! or `username` and `password`; `email` and tokens are ignored, as by the kubelet. When
//! `auth` is present it wins over the separate fields.
//!
//! Errors name the Secret and the JSON path and never contain a value from the Secret, so
//! they can go into a NodeImage status and logs as they are.

use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use serde_json::{Map, Value};

use super::AuthConfig;

/// The Secret type of a docker `config.json` pull secret.
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// The data key of a [`DOCKER_CONFIG_JSON_TYPE`] Secret.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// The Secret type of a legacy `.dockercfg` pull secret.
pub const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";
/// The data key of a [`DOCKERCFG_TYPE`] Secret.
pub const DOCKERCFG_KEY: &str = ".dockercfg";

/// Which Secret a problem is in: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// The Secret's namespace (normally `kruise-daemon-config`).
    pub namespace: String,
    /// The Secret's name.
    pub name: String,
}

impl SecretRef {
    /// A reference from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The reference to `secret`, from its metadata (empty parts when unset).
    pub fn of(secret: &Secret) -> Self {
        Self::new(
            secret.metadata.namespace.clone().unwrap_or_default(),
            secret.metadata.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.namespace, self.name)
    }
}

/// One registry entry of a docker config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfigEntry {
    /// The registry key as written, e.g. `https://index.docker.io/v1/`, `quay.io/org`.
    pub registry: String,
    /// Its credential.
    pub auth: AuthConfig,
}

/// A Secret that does not hold usable registry credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse secret {secret}: {problem}")]
pub struct SecretError {
    /// The Secret.
    pub secret: SecretRef,
    /// What is wrong with it.
    pub problem: DockerConfigError,
}

/// What is wrong with docker config data. Paths look like `auths["quay.io"].auth`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    /// The Secret has another type, e.g. `Opaque`.
    #[error(
        "type {found:?} is not a registry credential; expected \"kubernetes.io/dockerconfigjson\" or \"kubernetes.io/dockercfg\""
    )]
    UnsupportedType {
        /// The Secret's type (empty when unset).
        found: String,
    },
    /// The data key for the Secret's type is absent or empty.
    #[error("{key} is missing or empty")]
    MissingKey {
        /// `.dockerconfigjson` or `.dockercfg`.
        key: &'static str,
    },
    /// The data is not JSON.
    #[error("{key} is not valid JSON: {detail}")]
    InvalidJson {
        /// `.dockerconfigjson` or `.dockercfg`.
        key: &'static str,
        /// The kind and position of the syntax error (never the text around it).
        detail: String,
    },
    /// A value has the wrong JSON type.
    #[error("{path} must be {expected}")]
    WrongType {
        /// Where.
        path: String,
        /// What it must be, e.g. "an object".
        expected: &'static str,
    },
    /// A required field is absent.
    #[error("{path} is missing")]
    MissingField {
        /// The path of the absent field.
        path: String,
    },
    /// Only one of `username` and `password` is set, and there is no `auth`.
    #[error("{path} has {present} but no {missing}")]
    IncompleteCredential {
        /// The entry.
        path: String,
        /// The field that is set.
        present: &'static str,
        /// The field that is not.
        missing: &'static str,
    },
    /// `auth` is not base64.
    #[error("invalid base64 in {path}")]
    InvalidBase64 {
        /// The `auth` field.
        path: String,
    },
    /// `auth` decodes to something without a `:`.
    #[error("{path} must be base64 of \"username:password\"")]
    AuthWithoutColon {
        /// The `auth` field.
        path: String,
    },
    /// `auth` decodes to bytes that are not UTF-8.
    #[error("{path} does not decode to UTF-8 text")]
    AuthNotUtf8 {
        /// The `auth` field.
        path: String,
    },
}

/// The registry entries of a pull Secret. Any other Secret type is an error: such a Secret
/// was meant to authenticate a pull, and pulling anonymously instead would only fail later
/// with a less helpful message. (The kubelet and kruise skip such Secrets silently.)
pub fn entries_from_secret(secret: &Secret) -> Result<Vec<DockerConfigEntry>, SecretError> {
    let error = |problem| SecretError {
        secret: SecretRef::of(secret),
        problem,
    };
    let secret_type = secret.type_.as_deref().unwrap_or_default();
    let (key, parse): (_, fn(&[u8]) -> _) = match secret_type {
        DOCKER_CONFIG_JSON_TYPE => (DOCKER_CONFIG_JSON_KEY, parse_docker_config_json),
        DOCKERCFG_TYPE => (DOCKERCFG_KEY, parse_dockercfg),
        other => {
            return Err(error(DockerConfigError::UnsupportedType {
                found: other.to_owned(),
            }));
        }
    };
    let data = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .filter(|value| !value.0.is_empty())
        .ok_or_else(|| error(DockerConfigError::MissingKey { key }))?;
    parse(&data.0).map_err(error)
}

/// The entries of `.dockerconfigjson` data: `{"auths": {"<registry>": {...}}}`.
pub fn parse_docker_config_json(data: &[u8]) -> Result<Vec<DockerConfigEntry>, DockerConfigError> {
    let root = parse_json(data, DOCKER_CONFIG_JSON_KEY)?;
    let root = as_object(&root, DOCKER_CONFIG_JSON_KEY)?;
    let auths = field(root, "auths").ok_or_else(|| DockerConfigError::MissingField {
        path: "auths".to_owned(),
    })?;
    parse_entries(as_object(auths, "auths")?, "auths")
}

/// The entries of `.dockercfg` data: `{"<registry>": {...}}`.
pub fn parse_dockercfg(data: &[u8]) -> Result<Vec<DockerConfigEntry>, DockerConfigError> {
    let root = parse_json(data, DOCKERCFG_KEY)?;
    parse_entries(as_object(&root, DOCKERCFG_KEY)?, DOCKERCFG_KEY)
}

fn parse_json(data: &[u8], key: &'static str) -> Result<Value, DockerConfigError> {
    // serde_json's own message could quote the data; report only the kind and position.
    serde_json::from_slice(data).map_err(|error| {
        let kind = match error.classify() {
            serde_json::error::Category::Eof => "unexpected end of data",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Io => "read error",
        };
        DockerConfigError::InvalidJson {
            key,
            detail: format!("{kind} at line {} column {}", error.line(), error.column()),
        }
    })
}

fn as_object<'a>(
    value: &'a Value,
    path: &str,
) -> Result<&'a Map<String, Value>, DockerConfigError> {
    value
        .as_object()
        .ok_or_else(|| DockerConfigError::WrongType {
            path: path.to_owned(),
            expected: "an object",
        })
}

/// A field by name; like Go's encoding/json, an exact match first, else one that differs
/// only in case (`Username`).
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

/// A string field; absent, `null` and `""` are all "not set", as in Go.
fn string_field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    entry_path: &str,
) -> Result<Option<&'a str>, DockerConfigError> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) if value.is_empty() => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.as_str())),
        Some(_) => Err(DockerConfigError::WrongType {
            path: format!("{entry_path}.{name}"),
            expected: "a string",
        }),
    }
}

fn parse_entries(
    entries: &Map<String, Value>,
    parent: &str,
) -> Result<Vec<DockerConfigEntry>, DockerConfigError> {
    let mut parsed = Vec::with_capacity(entries.len());
    for (registry, value) in entries {
        let path = format!("{parent}[{}]", quoted(registry));
        let entry = match value {
            // An entry without credentials, e.g. `"https://index.docker.io/v1/": {}` written
            // by `docker login` with a credential store: nothing to use, nothing wrong.
            Value::Null => continue,
            Value::Object(entry) => entry,
            _ => {
                return Err(DockerConfigError::WrongType {
                    path,
                    expected: "an object",
                });
            }
        };
        let auth = if let Some(encoded) = string_field(entry, "auth", &path)? {
            decode_auth_field(encoded, &format!("{path}.auth"))?
        } else {
            let username = string_field(entry, "username", &path)?;
            let password = string_field(entry, "password", &path)?;
            match (username, password) {
                (Some(username), Some(password)) => AuthConfig::new(username, password),
                (None, None) => continue,
                (Some(_), None) => {
                    return Err(DockerConfigError::IncompleteCredential {
                        path,
                        present: "username",
                        missing: "password",
                    });
                }
                (None, Some(_)) => {
                    return Err(DockerConfigError::IncompleteCredential {
                        path,
                        present: "password",
                        missing: "username",
                    });
                }
            }
        };
        parsed.push(DockerConfigEntry {
            registry: registry.clone(),
            auth,
        });
    }
    Ok(parsed)
}

/// A registry key as a JSON string literal, for paths.
fn quoted(key: &str) -> String {
    Value::String(key.to_owned()).to_string()
}

/// The kubelet's `decodeDockerConfigFieldAuth`: padded base64 when the field ends with
/// `=`, unpadded otherwise; split at the first `:`.
fn decode_auth_field(encoded: &str, path: &str) -> Result<AuthConfig, DockerConfigError> {
    let decoded = decode_base64(encoded).ok_or_else(|| DockerConfigError::InvalidBase64 {
        path: path.to_owned(),
    })?;
    let decoded = String::from_utf8(decoded).map_err(|_| DockerConfigError::AuthNotUtf8 {
        path: path.to_owned(),
    })?;
    let (username, password) =
        decoded
            .split_once(':')
            .ok_or_else(|| DockerConfigError::AuthWithoutColon {
                path: path.to_owned(),
            })?;
    Ok(AuthConfig::new(username, password))
}

/// Standard-alphabet base64 as Go decodes it: `StdEncoding` (padding required) when the
/// trimmed text ends with `=`, else `RawStdEncoding` (no padding). Line breaks are skipped;
/// stray bits in the last character are tolerated, as Go's non-strict decoder does.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let padded = text.trim().ends_with('=');
    let symbols: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    let body = if padded {
        let padding = symbols.iter().rev().take_while(|&&b| b == b'=').count();
        if !symbols.len().is_multiple_of(4) || !(1..=2).contains(&padding) {
            return None;
        }
        let body = &symbols[..symbols.len() - padding];
        // One '=' completes a group of three symbols, two complete a group of two.
        if body.len() % 4 != 4 - padding {
            return None;
        }
        body
    } else {
        if symbols.len() % 4 == 1 {
            return None;
        }
        &symbols[..]
    };
    let mut decoded = Vec::with_capacity(body.len() * 3 / 4);
    let mut bits: u32 = 0;
    let mut bit_count = 0;
    for &symbol in body {
        let value = match symbol {
            b'A'..=b'Z' => symbol - b'A',
            b'a'..=b'z' => symbol - b'a' + 26,
            b'0'..=b'9' => symbol - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        bit_count += 6;
        if bit_count >= 8 {
            bit_count -= 8;
            decoded.push((bits >> bit_count) as u8);
            bits &= (1 << bit_count) - 1;
        }
    }
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// Base64 of `alice:pa:ss` (a password with a colon).
    const ALICE_AUTH: &str = "YWxpY2U6cGE6c3M=";

    fn secret(secret_type: Option<&str>, key: &str, data: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some("kruise-daemon-config".into()),
                name: Some("regcred".into()),
                ..ObjectMeta::default()
            },
            type_: secret_type.map(str::to_owned),
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(data.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    fn entry(registry: &str, username: &str, password: &str) -> DockerConfigEntry {
        DockerConfigEntry {
            registry: registry.to_owned(),
            auth: AuthConfig::new(username, password),
        }
    }

    #[test]
    fn dockerconfigjson_auth_field_is_split_at_the_first_colon() {
        let data =
            format!(r#"{{"auths":{{"quay.io":{{"auth":"{ALICE_AUTH}","email":"a@b.c"}}}}}}"#);
        assert_eq!(
            parse_docker_config_json(data.as_bytes()).unwrap(),
            [entry("quay.io", "alice", "pa:ss")]
        );
    }

    #[test]
    fn dockerconfigjson_username_and_password_fields_are_used_without_auth() {
        let data =
            r#"{"auths":{"https://index.docker.io/v1/":{"username":"bob","password":"pw"}}}"#;
        assert_eq!(
            parse_docker_config_json(data.as_bytes()).unwrap(),
            [entry("https://index.docker.io/v1/", "bob", "pw")]
        );
    }

    #[test]
    fn auth_field_wins_over_username_and_password() {
        let data = format!(
            r#"{{"auths":{{"r.io":{{"auth":"{ALICE_AUTH}","username":"x","password":"y"}}}}}}"#
        );
        assert_eq!(
            parse_docker_config_json(data.as_bytes()).unwrap(),
            [entry("r.io", "alice", "pa:ss")]
        );
    }

    #[test]
    fn field_names_match_case_insensitively_like_go() {
        let data = r#"{"Auths":{"r.io":{"Username":"bob","PASSWORD":"pw"}}}"#;
        assert_eq!(
            parse_docker_config_json(data.as_bytes()).unwrap(),
            [entry("r.io", "bob", "pw")]
        );
    }

    #[test]
    fn dockercfg_is_the_bare_registry_map() {
        let data = format!(
            r#"{{"quay.io":{{"auth":"{ALICE_AUTH}"}},"r.io":{{"username":"u","password":"p"}}}}"#
        );
        assert_eq!(
            parse_dockercfg(data.as_bytes()).unwrap(),
            [entry("quay.io", "alice", "pa:ss"), entry("r.io", "u", "p")]
        );
    }

    #[test]
    fn unpadded_base64_is_accepted_like_the_kubelet() {
        // "alice:pa:ss" without its trailing '='.
        let data = r#"{"auths":{"r.io":{"auth":"YWxpY2U6cGE6c3M"}}}"#;
        assert_eq!(
            parse_docker_config_json(data.as_bytes()).unwrap(),
            [entry("r.io", "alice", "pa:ss")]
        );
    }

    #[test]
    fn entries_without_any_credential_are_skipped() {
        let data = r#"{"auths":{"https://index.docker.io/v1/":{},"r.io":null,"q.io":{"email":"e"}},"credsStore":"desktop"}"#;
        assert_eq!(parse_docker_config_json(data.as_bytes()).unwrap(), []);
    }

    #[test]
    fn invalid_base64_names_the_field() {
        let data = r#"{"auths":{"quay.io":{"auth":"not base64!"}}}"#;
        let error = entries_from_secret(&secret(
            Some(DOCKER_CONFIG_JSON_TYPE),
            DOCKER_CONFIG_JSON_KEY,
            data,
        ))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"failed to parse secret kruise-daemon-config/regcred: invalid base64 in auths["quay.io"].auth"#
        );
    }

    #[test]
    fn bad_padding_is_invalid_base64() {
        for auth in ["YWxpY2U6cGE6c3M==", "YQ===", "Y===", "YW=x", "Y"] {
            let data = format!(r#"{{"auths":{{"r.io":{{"auth":"{auth}"}}}}}}"#);
            assert!(
                matches!(
                    parse_docker_config_json(data.as_bytes()),
                    Err(DockerConfigError::InvalidBase64 { .. })
                ),
                "{auth}"
            );
        }
    }

    #[test]
    fn auth_without_colon_is_rejected_without_echoing_it() {
        // base64("justatoken")
        let data = r#"{"auths":{"r.io":{"auth":"anVzdGF0b2tlbg=="}}}"#;
        let error = parse_docker_config_json(data.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"auths["r.io"].auth must be base64 of "username:password""#
        );
        assert!(!error.to_string().contains("justatoken"));
    }

    #[test]
    fn incomplete_credentials_are_rejected() {
        let data = r#"{"auths":{"r.io":{"username":"bob"}}}"#;
        assert_eq!(
            parse_docker_config_json(data.as_bytes())
                .unwrap_err()
                .to_string(),
            r#"auths["r.io"] has username but no password"#
        );
        let data = r#"{"r.io":{"password":"pw"}}"#;
        assert_eq!(
            parse_dockercfg(data.as_bytes()).unwrap_err().to_string(),
            r#".dockercfg["r.io"] has password but no username"#
        );
    }

    #[test]
    fn bad_json_reports_position_but_not_content() {
        let data = r#"{"auths":{"r.io":{"password":"hunter2""#;
        let error = parse_docker_config_json(data.as_bytes()).unwrap_err();
        assert!(
            matches!(error, DockerConfigError::InvalidJson { .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with(".dockerconfigjson is not valid JSON: ")
        );
        assert!(!error.to_string().contains("hunter2"));
    }

    #[test]
    fn wrong_json_types_name_the_path() {
        let cases = [
            (r#"[]"#, ".dockerconfigjson must be an object"),
            (r#"{"auths":[]}"#, "auths must be an object"),
            (
                r#"{"auths":{"r.io":"hunter2"}}"#,
                r#"auths["r.io"] must be an object"#,
            ),
            (
                r#"{"auths":{"r.io":{"password":5,"username":"u"}}}"#,
                r#"auths["r.io"].password must be a string"#,
            ),
            (r#"{"credsStore":"x"}"#, "auths is missing"),
        ];
        for (data, message) in cases {
            assert_eq!(
                parse_docker_config_json(data.as_bytes())
                    .unwrap_err()
                    .to_string(),
                message,
                "{data}"
            );
        }
    }

    #[test]
    fn registry_keys_are_escaped_in_paths() {
        let data = r#"{"auths":{"we\"ird":{"auth":"%"}}}"#;
        assert_eq!(
            parse_docker_config_json(data.as_bytes())
                .unwrap_err()
                .to_string(),
            r#"invalid base64 in auths["we\"ird"].auth"#
        );
    }

    #[test]
    fn secret_of_another_type_is_rejected() {
        let error = entries_from_secret(&secret(Some("Opaque"), "username", "u")).unwrap_err();
        assert_eq!(
            error.secret,
            SecretRef::new("kruise-daemon-config", "regcred")
        );
        assert_eq!(
            error.to_string(),
            "failed to parse secret kruise-daemon-config/regcred: type \"Opaque\" is not a registry credential; expected \"kubernetes.io/dockerconfigjson\" or \"kubernetes.io/dockercfg\""
        );
    }

    #[test]
    fn secret_without_its_data_key_is_rejected() {
        let wrong_key = secret(Some(DOCKER_CONFIG_JSON_TYPE), DOCKERCFG_KEY, "{}");
        assert_eq!(
            entries_from_secret(&wrong_key).unwrap_err().problem,
            DockerConfigError::MissingKey {
                key: DOCKER_CONFIG_JSON_KEY
            }
        );
        let empty = secret(Some(DOCKERCFG_TYPE), DOCKERCFG_KEY, "");
        assert_eq!(
            entries_from_secret(&empty).unwrap_err().problem,
            DockerConfigError::MissingKey { key: DOCKERCFG_KEY }
        );
    }

    #[test]
    fn secret_types_select_their_format() {
        let json = format!(r#"{{"auths":{{"r.io":{{"auth":"{ALICE_AUTH}"}}}}}}"#);
        let cfg = format!(r#"{{"r.io":{{"auth":"{ALICE_AUTH}"}}}}"#);
        for secret in [
            secret(Some(DOCKER_CONFIG_JSON_TYPE), DOCKER_CONFIG_JSON_KEY, &json),
            secret(Some(DOCKERCFG_TYPE), DOCKERCFG_KEY, &cfg),
        ] {
            assert_eq!(
                entries_from_secret(&secret).unwrap(),
                [entry("r.io", "alice", "pa:ss")]
            );
        }
    }

    #[test]
    fn no_error_message_contains_a_password() {
        let password = "Sup3rS3cret";
        let bad_inputs = [
            format!(r#"{{"auths":{{"r.io":{{"password":"{password}"}}}}}}"#),
            format!(r#"{{"auths":{{"r.io":{{"password":"{password}","username":7}}}}}}"#),
            format!(r#"{{"auths":{{"r.io":"{password}"}}}}"#),
            format!(r#"{{"auths":{{"r.io":{{"password":"{password}""#),
            format!(r#"{{"auths":{{"r.io":{{"auth":"{password}!"}}}}}}"#),
        ];
        for data in bad_inputs {
            let error = parse_docker_config_json(data.as_bytes()).unwrap_err();
            assert!(!error.to_string().contains(password), "{error}");
            assert!(!format!("{error:?}").contains(password), "{error:?}");
        }
    }

    #[test]
    fn base64_decoder_agrees_with_known_vectors() {
        let cases: [(&str, &[u8]); 7] = [
            ("", b""),
            ("Zg==", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg", b"foob"),
            ("Zm9vYmE", b"fooba"),
            ("Zm9v\r\nYmFy", b"foobar"),
        ];
        for (encoded, decoded) in cases {
            assert_eq!(
                decode_base64(encoded).as_deref(),
                Some(decoded),
                "{encoded}"
            );
        }
        assert_eq!(decode_base64("Zm9v YmFy"), None);
        assert_eq!(decode_base64("Zm9v-_"), None);
    }
}
