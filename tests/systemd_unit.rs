//! systemd/kruised.service: systemd's own verifier accepts it, its hardening is in place,
//! and the command line it runs is one kruised accepts.

use std::collections::BTreeMap;
use std::process::Command;

use clap::{CommandFactory, FromArgMatches};
use kruised::cli::Cli;

const UNIT: &str = include_str!("../systemd/kruised.service");
const ENV_EXAMPLE: &str = include_str!("../systemd/kruised.env");

/// `[Service]` keys (multi-valued keys keep every value), continuation lines joined.
fn service_section() -> BTreeMap<String, Vec<String>> {
    let joined = UNIT.replace("\\\n", " ");
    let mut section = String::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in joined.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[Service]" && !line.starts_with('#') && !line.is_empty() {
            let (key, value) = line.split_once('=').expect("key=value");
            keys.entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    keys
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's binary exists and is executable: point it at the
    // binary this test suite built.
    let unit = UNIT.replace("/usr/local/bin/kruised", env!("CARGO_BIN_EXE_kruised"));
    let path = dir.path().join("kruised.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed (scripts/testenv install provides systemd)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("kruised.service"))
        .collect();
    assert!(
        output.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        output.status
    );
}

#[test]
fn unit_is_hardened() {
    let keys = service_section();
    let one = |key: &str| {
        keys.get(key)
            .and_then(|values| values.last())
            .map(String::as_str)
    };
    assert_eq!(one("ProtectSystem"), Some("strict"));
    assert_eq!(one("NoNewPrivileges"), Some("yes"));
    assert_eq!(one("CapabilityBoundingSet"), Some(""));
    assert_eq!(one("AmbientCapabilities"), Some(""));
    assert_eq!(one("PrivateTmp"), Some("yes"));
    assert_eq!(one("ProtectHome"), Some("yes"));
    // kruised writes no files: no path is made writable.
    assert_eq!(keys.get("ReadWritePaths"), None);
    assert!(
        keys["Environment"].contains(&"NODE_NAME=%H".to_string()),
        "{keys:?}"
    );
    assert_eq!(
        one("EnvironmentFile"),
        Some("-/etc/kruised/kruised.env"),
        "the env file is optional and overrides the defaults"
    );
}

#[test]
fn exec_start_is_a_command_line_kruised_accepts() {
    let keys = service_section();
    let environment: BTreeMap<String, String> = keys["Environment"]
        .iter()
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    let mut args: Vec<String> = keys["ExecStart"][0]
        .split_whitespace()
        .map(|word| {
            let mut word = word.to_string();
            for (key, value) in &environment {
                word = word.replace(&format!("${{{key}}}"), value);
            }
            word
        })
        .collect();
    assert_eq!(args[0], "/usr/local/bin/kruised");
    assert!(
        !args.iter().any(|a| a.contains("${")),
        "every variable has a default: {args:?}"
    );
    args[0] = "kruised".into();
    let matches = Cli::command()
        .try_get_matches_from(&args)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let cli = Cli::from_arg_matches(&matches).unwrap();
    assert!(cli.command.is_none(), "runs the agent");
    assert_eq!(
        cli.agent.runtime_endpoint.as_deref(),
        Some("unix:///run/containerd/containerd.sock")
    );
    assert_eq!(
        cli.agent.kubeconfig.as_deref(),
        Some(std::path::Path::new("/etc/kruised/kubeconfig"))
    );
    kruised::cli::parse_listen_addr(&cli.agent.addr).unwrap();
}

#[test]
fn env_example_sets_only_variables_the_unit_uses() {
    let used = [
        "NODE_NAME",
        "KUBECONFIG",
        "KRUISED_RUNTIME_ENDPOINT",
        "KRUISED_ADDR",
        "KRUISED_VERBOSITY",
        "RUST_LOG",
    ];
    for line in ENV_EXAMPLE.lines() {
        let line = line.trim_start_matches('#');
        if let Some((key, _)) = line.split_once('=')
            && key.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            assert!(
                used.contains(&key),
                "{key} is not read by kruised.service or kruised"
            );
        }
    }
}
