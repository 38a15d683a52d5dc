//! kruise's `--feature-gates` flag: the same gate names, defaults and cascade (§7.3).

use std::collections::BTreeMap;

/// How mature a gate is; `AllAlpha=`/`AllBeta=` switch whole classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Alpha,
    Beta,
}

/// Every gate kruise registers (`pkg/features/kruise_features.go`), with its default.
/// Most are manager-side; the agent must still accept them because the chart passes the
/// same `--feature-gates` value to both binaries.
const KNOWN_GATES: &[(&str, bool, Stage)] = &[
    ("PodWebhook", true, Stage::Beta),
    ("KruiseDaemon", true, Stage::Beta),
    ("DaemonWatchingPod", true, Stage::Beta),
    ("CloneSetShortHash", false, Stage::Alpha),
    ("KruisePodReadinessGate", false, Stage::Alpha),
    ("PreDownloadImageForInPlaceUpdate", false, Stage::Alpha),
    ("CloneSetPartitionRollback", false, Stage::Alpha),
    ("ResourcesDeletionProtection", true, Stage::Beta),
    ("WorkloadSpread", true, Stage::Beta),
    ("PodUnavailableBudgetDeleteGate", true, Stage::Beta),
    ("PodUnavailableBudgetUpdateGate", false, Stage::Alpha),
    ("TemplateNoDefaults", false, Stage::Alpha),
    ("InPlaceUpdateEnvFromMetadata", true, Stage::Beta),
    ("StatefulSetAutoDeletePVC", true, Stage::Beta),
    (
        "SidecarSetPatchPodMetadataDefaultsAllowed",
        false,
        Stage::Alpha,
    ),
    ("SidecarTerminator", false, Stage::Alpha),
    ("PodProbeMarkerGate", true, Stage::Beta),
    ("PreDownloadImageForDaemonSetUpdate", false, Stage::Alpha),
    ("CloneSetEventHandlerOptimization", false, Stage::Alpha),
    ("PreparingUpdateAsUpdate", false, Stage::Alpha),
    ("ImagePullJobGate", false, Stage::Alpha),
    ("ResourceDistributionGate", false, Stage::Alpha),
    ("DeletionProtectionForCRDCascadingGate", false, Stage::Alpha),
    ("EnhancedLivenessProbe", false, Stage::Alpha),
    (
        "RecreatePodWhenChangeVCTInCloneSetGate",
        false,
        Stage::Alpha,
    ),
    ("StatefulSetStartOrdinal", false, Stage::Alpha),
    ("PodIndexLabel", true, Stage::Beta),
    ("EnableExternalCerts", false, Stage::Alpha),
    ("StatefulSetAutoResizePVCGate", false, Stage::Alpha),
    ("ForceDeleteTimeoutExpectationGate", false, Stage::Alpha),
    ("InPlaceWorkloadVerticalScaling", false, Stage::Alpha),
    ("EnablePodProbeMarkerOnServerless", false, Stage::Alpha),
];

/// A malformed `--feature-gates` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureGateError {
    /// An entry is not `Name=bool`.
    #[error("invalid feature gate entry {0:?}: expected Name=true|false")]
    Malformed(String),
    /// The value is not a Go boolean.
    #[error("invalid value of {name}={value}: {value:?} is not a boolean")]
    NotBool {
        /// The gate.
        name: String,
        /// The value given.
        value: String,
    },
}

/// The resolved state of every gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureGates {
    enabled: BTreeMap<&'static str, bool>,
    /// Names given on the command line that kruise does not define. kruise would refuse
    /// to start; we accept and report them, because a gate added upstream after this
    /// list was written must not crash-loop a node agent.
    pub unknown: Vec<String>,
}

impl Default for FeatureGates {
    fn default() -> Self {
        Self::parse("").expect("the empty gate list is valid")
    }
}

impl FeatureGates {
    /// Parses `A=true,B=false,AllAlpha=true` and applies kruise's cascade.
    pub fn parse(value: &str) -> Result<Self, FeatureGateError> {
        let mut all_alpha = None;
        let mut all_beta = None;
        let mut explicit = BTreeMap::new();
        let mut unknown = Vec::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, raw) = entry
                .split_once('=')
                .ok_or_else(|| FeatureGateError::Malformed(entry.to_string()))?;
            let (name, raw) = (name.trim(), raw.trim());
            let value = crate::cli::parse_go_bool(raw).map_err(|_| FeatureGateError::NotBool {
                name: name.to_string(),
                value: raw.to_string(),
            })?;
            match name {
                "AllAlpha" => all_alpha = Some(value),
                "AllBeta" => all_beta = Some(value),
                _ => match KNOWN_GATES.iter().find(|(known, _, _)| *known == name) {
                    Some((known, _, _)) => {
                        explicit.insert(*known, value);
                    }
                    None => unknown.push(name.to_string()),
                },
            }
        }
        let mut enabled = BTreeMap::new();
        for (name, default, stage) in KNOWN_GATES {
            let class = match stage {
                Stage::Alpha => all_alpha,
                Stage::Beta => all_beta,
            };
            let value = explicit.get(name).copied().or(class).unwrap_or(*default);
            enabled.insert(*name, value);
        }
        let mut gates = Self { enabled, unknown };
        gates.cascade();
        Ok(gates)
    }

    /// kruise's `SetDefaultFeatureGates` (§7.3): switching a parent off switches its
    /// dependants off, whatever the user asked for them.
    fn cascade(&mut self) {
        if !self.enabled("PodWebhook") {
            for gate in [
                "KruisePodReadinessGate",
                "PodUnavailableBudgetDeleteGate",
                "PodUnavailableBudgetUpdateGate",
                "WorkloadSpread",
                "SidecarSetPatchPodMetadataDefaultsAllowed",
                "EnhancedLivenessProbe",
                "EnablePodProbeMarkerOnServerless",
            ] {
                self.enabled.insert(gate, false);
            }
        }
        if !self.enabled("KruiseDaemon") {
            for gate in [
                "PreDownloadImageForInPlaceUpdate",
                "DaemonWatchingPod",
                "InPlaceUpdateEnvFromMetadata",
                "PreDownloadImageForDaemonSetUpdate",
                "PodProbeMarkerGate",
                "SidecarTerminator",
                "ImagePullJobGate",
                "EnhancedLivenessProbe",
            ] {
                self.enabled.insert(gate, false);
            }
        }
        if self.enabled("PreDownloadImageForInPlaceUpdate")
            || self.enabled("PreDownloadImageForDaemonSetUpdate")
        {
            self.enabled.insert("ImagePullJobGate", true);
        }
        if !self.enabled("ResourcesDeletionProtection") {
            self.enabled
                .insert("DeletionProtectionForCRDCascadingGate", false);
        }
    }

    /// Whether a gate is on. Unknown names are off.
    pub fn enabled(&self, name: &str) -> bool {
        self.enabled.get(name).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kruise() {
        let gates = FeatureGates::default();
        assert!(gates.enabled("KruiseDaemon"));
        assert!(gates.enabled("DaemonWatchingPod"));
        assert!(gates.enabled("PodProbeMarkerGate"));
        assert!(gates.enabled("InPlaceUpdateEnvFromMetadata"));
        assert!(!gates.enabled("ImagePullJobGate"));
    }

    #[test]
    fn chart_and_manifest_values_parse() {
        // config/manager/manager.yaml and the Helm chart's default (§8.1, §8.2).
        let gates = FeatureGates::parse("AllAlpha=true,AllBeta=true").unwrap();
        assert!(gates.enabled("ImagePullJobGate"));
        assert!(gates.enabled("SidecarTerminator"));
        let gates = FeatureGates::parse("ImagePullJobGate=true").unwrap();
        assert!(gates.enabled("ImagePullJobGate"));
        assert!(gates.unknown.is_empty());
    }

    #[test]
    fn kruise_daemon_off_cascades_to_agent_gates() {
        let gates = FeatureGates::parse("KruiseDaemon=false,PodProbeMarkerGate=true").unwrap();
        assert!(!gates.enabled("PodProbeMarkerGate"));
        assert!(!gates.enabled("DaemonWatchingPod"));
        assert!(!gates.enabled("ImagePullJobGate"));
    }

    #[test]
    fn predownload_switches_image_pull_job_gate_on() {
        let gates = FeatureGates::parse("PreDownloadImageForInPlaceUpdate=true").unwrap();
        assert!(gates.enabled("ImagePullJobGate"));
    }

    #[test]
    fn malformed_entries_are_errors_and_unknown_names_are_reported() {
        assert_eq!(
            FeatureGates::parse("KruiseDaemon"),
            Err(FeatureGateError::Malformed("KruiseDaemon".into()))
        );
        assert!(matches!(
            FeatureGates::parse("KruiseDaemon=maybe"),
            Err(FeatureGateError::NotBool { .. })
        ));
        let gates = FeatureGates::parse("SomeFutureGate=true").unwrap();
        assert_eq!(gates.unknown, vec!["SomeFutureGate".to_string()]);
    }
}
