//! A kubelet credential provider exec plugin for tests: it reads the
//! `CredentialProviderRequest` on stdin and answers a `CredentialProviderResponse` with
//! the credentials its environment names, for the registry of the requested image.
//!
//! Environment (set through the `env` of the `CredentialProviderConfig` entry):
//!
//! * `TEST_PROVIDER_USERNAME`, `TEST_PROVIDER_PASSWORD`: the credentials handed out;
//! * `TEST_PROVIDER_CACHE_DURATION`: the response's `cacheDuration` (left out if unset);
//! * `TEST_PROVIDER_CACHE_KEY_TYPE`: `Image`, `Registry` (default) or `Global`;
//! * `TEST_PROVIDER_LOG`: a file that gets one line per run, the request as received,
//!   so its line count is the number of invocations.
//!
//! Anything it cannot do (unreadable or malformed request) exits 1 with the reason on
//! stderr, as a real plugin would.

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::{Value, json};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("test-credential-provider: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn run() -> Result<(), String> {
    let mut request = String::new();
    std::io::stdin()
        .read_to_string(&mut request)
        .map_err(|e| format!("reading stdin: {e}"))?;
    if let Some(log) = env("TEST_PROVIDER_LOG") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("opening {log}: {e}"))?;
        // One write of one line: concurrent runs never interleave within a line.
        file.write_all(format!("{}\n", request.trim_end()).as_bytes())
            .map_err(|e| format!("writing {log}: {e}"))?;
    }
    let request: Value =
        serde_json::from_str(&request).map_err(|e| format!("malformed request: {e}"))?;
    if request["kind"] != "CredentialProviderRequest" {
        return Err(format!("not a CredentialProviderRequest: {request}"));
    }
    let api_version = request["apiVersion"]
        .as_str()
        .ok_or("the request has no apiVersion")?;
    let image = request["image"]
        .as_str()
        .ok_or("the request has no image")?;
    // The registry host: what precedes the first `/` of the image.
    let registry = image.split('/').next().unwrap_or(image);
    let mut response = json!({
        "apiVersion": api_version,
        "kind": "CredentialProviderResponse",
        "cacheKeyType": env("TEST_PROVIDER_CACHE_KEY_TYPE").unwrap_or_else(|| "Registry".into()),
        "auth": {registry: {
            "username": env("TEST_PROVIDER_USERNAME").unwrap_or_default(),
            "password": env("TEST_PROVIDER_PASSWORD").unwrap_or_default(),
        }},
    });
    if let Some(duration) = env("TEST_PROVIDER_CACHE_DURATION") {
        response["cacheDuration"] = json!(duration);
    }
    println!("{response}");
    Ok(())
}
