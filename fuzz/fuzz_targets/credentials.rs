//! Pull-secret parsing (`src/credentials/dockerconfig.rs`) and kubelet-style keyring
//! matching (`src/credentials/keyring.rs`).
//!
//! Input: byte 0 picks the format (even: `.dockerconfigjson`, odd: `.dockercfg`), the
//! rest is the Secret's data.
//!
//! Invariants: the Secret path and the bare parser agree; every entry names a registry key
//! of the document; error messages never quote a credential value; the keyring never
//! returns a credential whose key does not match the image (except Docker Hub's fallback
//! when nothing matched), returns every one whose key does, most specific key first; a
//! literal key matches itself.
#![no_main]

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kruised::credentials::AuthConfig;
use kruised::credentials::dockerconfig::{
    DOCKER_CONFIG_JSON_KEY, DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_KEY, DOCKERCFG_TYPE,
    DockerConfigEntry, DockerConfigError, entries_from_secret, parse_docker_config_json,
    parse_dockercfg,
};
use kruised::credentials::keyring::{
    Keyring, is_default_registry_match, is_valid_schemeless_url, registry_key, urls_match,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Images every keyring is asked about, besides the entries' own registries.
const IMAGES: &[&str] = &[
    "docker.io/library/nginx",
    "docker.io/user/app",
    "quay.io/org/app",
    "127.0.0.1:5000/test/busybox",
    "registry.example.com:5000/team/app",
    "prefix.kubernetes.io/app",
    "[::1]:5000/app",
    "localhost/app",
];

/// Fixed text of the error messages: a "secret" that is part of it is no leak.
const MESSAGE_TEXT: &str = "failed to parse secret fuzz/regcred: type is not a registry credential; expected \"kubernetes.io/dockerconfigjson\" or \"kubernetes.io/dockercfg\" .dockerconfigjson .dockercfg is missing or empty is not valid JSON: unexpected end of data syntax error unexpected data read error at line column must be an object must be a string has username but no password has password but no username invalid base64 in auth must be base64 of \"username:password\" does not decode to UTF-8 text";

/// The string values of `auth`, `username` and `password` fields, and every object key.
fn collect(value: &Value, secrets: &mut Vec<String>, keys: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                keys.push(key.clone());
                if let Value::String(text) = value
                    && ["auth", "username", "password"]
                        .iter()
                        .any(|field| key.eq_ignore_ascii_case(field))
                {
                    secrets.push(text.clone());
                }
                collect(value, secrets, keys);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect(item, secrets, keys)),
        _ => {}
    }
}

fn assert_no_secret_in(message: &str, data: &[u8]) {
    let Ok(document) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (mut secrets, mut keys) = (Vec::new(), Vec::new());
    collect(&document, &mut secrets, &mut keys);
    for secret in secrets {
        // Short values and ones that are also keys (which messages name) or message text
        // would match by coincidence.
        if secret.len() < 12
            || keys.iter().any(|key| key.contains(&secret))
            || MESSAGE_TEXT.contains(&secret)
        {
            continue;
        }
        assert!(!message.contains(&secret), "{message:?} leaks {secret:?}");
    }
}

fn check_keyring(entries: &[DockerConfigEntry]) {
    // Each entry gets a credential naming it, so a lookup tells which keys matched.
    let mut keyring = Keyring::new();
    keyring.extend(
        entries
            .iter()
            .enumerate()
            .map(|(index, entry)| DockerConfigEntry {
                registry: entry.registry.clone(),
                auth: AuthConfig::new(index.to_string(), "password"),
            }),
    );
    let keys: Vec<Option<String>> = entries.iter().map(|e| registry_key(&e.registry)).collect();
    assert_eq!(keyring.is_empty(), keys.iter().all(Option::is_none));

    let mut single = Keyring::new();
    for (entry, key) in entries.iter().zip(&keys) {
        assert_eq!(
            single.add(&entry.registry, AuthConfig::new("u", "p")),
            key.is_some()
        );
        if let Some(key) = key {
            let schemeless = entry
                .registry
                .strip_prefix("https://")
                .or_else(|| entry.registry.strip_prefix("http://"))
                .unwrap_or(&entry.registry);
            assert!(is_valid_schemeless_url(schemeless), "{:?}", entry.registry);
            // A key without glob characters matches itself, when it still parses: the key
            // holds the registry's *decoded* path, so `%1F` or `%25F:` in a registry make a
            // key that matches nothing, as in the kubelet (which stores the decoded path too).
            if !key.contains(['*', '?', '[', '\\']) && is_valid_schemeless_url(key) {
                assert!(urls_match(key, key), "{key:?}");
            }
        }
    }

    let images = IMAGES
        .iter()
        .map(|image| (*image).to_owned())
        .chain(keys.iter().flatten().cloned());
    for image in images.take(64) {
        let found = keyring.lookup(&image);
        let matching: Vec<usize> = keys
            .iter()
            .enumerate()
            .filter(|(_, key)| key.as_deref().is_some_and(|key| urls_match(key, &image)))
            .map(|(index, _)| index)
            .collect();
        let found: Vec<usize> = found
            .iter()
            .map(|auth| auth.username().parse().expect("an index"))
            .collect();
        if matching.is_empty() {
            // Only Docker Hub's fallback may answer, and only for a Docker Hub image.
            for index in &found {
                assert!(is_default_registry_match(&image), "{image:?} got {index}");
                assert_eq!(keys[*index].as_deref(), Some("index.docker.io"));
            }
            continue;
        }
        let mut sorted_found = found.clone();
        sorted_found.sort_unstable();
        assert_eq!(
            sorted_found, matching,
            "{image:?}: every match, nothing else"
        );
        // Most specific (reverse lexical) key first.
        let found_keys: Vec<&str> = found.iter().map(|i| keys[*i].as_deref().unwrap()).collect();
        assert!(
            found_keys.windows(2).all(|w| w[0] >= w[1]),
            "{found_keys:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let (secret_type, key, parsed) = if selector % 2 == 0 {
        (
            DOCKER_CONFIG_JSON_TYPE,
            DOCKER_CONFIG_JSON_KEY,
            parse_docker_config_json(data),
        )
    } else {
        (DOCKERCFG_TYPE, DOCKERCFG_KEY, parse_dockercfg(data))
    };
    let secret = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            namespace: Some("fuzz".into()),
            name: Some("regcred".into()),
            ..Default::default()
        },
        type_: Some(secret_type.into()),
        data: Some(BTreeMap::from([(
            key.to_owned(),
            ByteString(data.to_vec()),
        )])),
        ..Default::default()
    };
    let from_secret = entries_from_secret(&secret);
    match (&parsed, &from_secret) {
        // Empty data is "missing" for a Secret; the bare parser says invalid JSON.
        _ if data.is_empty() => {
            assert!(parsed.is_err());
            let problem = from_secret.expect_err("empty data is an error").problem;
            assert!(matches!(problem, DockerConfigError::MissingKey { .. }));
            return;
        }
        (Ok(entries), Ok(same)) => assert_eq!(entries, same),
        (Err(error), Err(secret_error)) => {
            assert_eq!(&secret_error.problem, error);
            assert_no_secret_in(&secret_error.to_string(), data);
        }
        (Err(_), Ok(_)) | (Ok(_), Err(_)) => panic!("{parsed:?} but {from_secret:?}"),
    }
    let Ok(entries) = parsed else {
        return;
    };
    let document: Value = serde_json::from_slice(data).expect("parsed, so JSON");
    let map = if selector % 2 == 0 {
        document
            .as_object()
            .and_then(|root| {
                root.get("auths").or_else(|| {
                    root.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("auths"))
                        .map(|(_, v)| v)
                })
            })
            .and_then(Value::as_object)
            .expect("parsed, so it has auths")
    } else {
        document.as_object().expect("parsed, so an object")
    };
    for entry in &entries {
        assert!(map.contains_key(&entry.registry), "{:?}", entry.registry);
    }
    check_keyring(&entries);
});
