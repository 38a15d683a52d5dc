//! The one benchmark report (`testbed bench`): every number the benchmarks measure, next to
//! its target and its anchor, written as `bench/results.json` and `bench/REPORT.md`.
//!
//! The benchmarks themselves live in `bench.rs` (pull), `bench_recreate.rs`,
//! `bench_scale.rs` and `bench_startup.rs`; each returns [`Measurement`]s and this module only
//! attaches targets, renders and writes. Targets come from the issues that asked for the
//! numbers; anchors are what the number is compared against (kruise-daemon's 128 MiB memory
//! limit, a direct CRI pull as the floor).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

/// One measured number: a median unless the label says otherwise.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// Stable key, e.g. `pull.overhead_ms`.
    pub key: String,
    /// What was measured, for people.
    pub label: String,
    /// The median (or the single value).
    pub value: f64,
    /// `ms`, `s`, `MiB`, `requests`, …
    pub unit: String,
    /// Smallest sample, when there were several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest sample, when there were several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// How many samples the median is of.
    pub samples: usize,
}

impl Measurement {
    /// A single value.
    pub fn single(key: &str, label: &str, value: f64, unit: &str) -> Self {
        Self {
            key: key.to_owned(),
            label: label.to_owned(),
            value,
            unit: unit.to_owned(),
            min: None,
            max: None,
            samples: 1,
        }
    }

    /// The median of `samples`, with their range. Panics on no samples: a benchmark that
    /// measured nothing has failed before it gets here.
    pub fn median_of(key: &str, label: &str, samples: &[f64], unit: &str) -> Self {
        assert!(!samples.is_empty(), "{key}: no samples");
        let mut sorted = samples.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        Self {
            key: key.to_owned(),
            label: label.to_owned(),
            value: sorted[sorted.len() / 2],
            unit: unit.to_owned(),
            min: (sorted.len() > 1).then(|| sorted[0]),
            max: (sorted.len() > 1).then(|| sorted[sorted.len() - 1]),
            samples: sorted.len(),
        }
    }
}

/// A target a number is held to.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    /// The value must be at most this.
    AtMost(f64),
    /// The value must be exactly this (counts).
    Exactly(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtMost(limit) => value <= limit,
            Target::Exactly(expected) => (value - expected).abs() < 1e-9,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::AtMost(limit) => format!("≤ {} {unit}", number(limit)),
            Target::Exactly(expected) => format!("= {} {unit}", number(expected)),
        }
    }
}

/// Target and anchor of a key; keys not listed have neither (context numbers).
pub fn target_of(key: &str) -> (Option<Target>, Option<&'static str>) {
    use Target::*;
    match key {
        "pull.overhead_ms" => (
            Some(AtMost(50.0)),
            Some("direct CRI PullImage of the same image, same run (the floor)"),
        ),
        "pull.rss_idle_mib" => (
            Some(AtMost(16.0)),
            Some("kruise-daemon's chart memory limit 128 MiB"),
        ),
        "pull.rss_peak_mib" => (
            Some(AtMost(24.0)),
            Some("kruise-daemon's chart memory limit 128 MiB"),
        ),
        "recreate.create_to_stop_ms" => (Some(AtMost(100.0)), None),
        "recreate.started_to_completed_ms" => (Some(AtMost(1000.0)), None),
        "recreate.stop_calls_per_crr" => (Some(Exactly(1.0)), None),
        "recreate.rss_peak_mib" => (
            Some(AtMost(20.0)),
            Some("kruise-daemon's chart memory limit 128 MiB"),
        ),
        "recreate.rss_idle_mib" => (None, Some("kruise-daemon's chart memory limit 128 MiB")),
        "scale.agent_polling_requests_per_node_minute" => (Some(Exactly(0.0)), None),
        "scale.agent_rss_median_mib" => (None, Some("kruise-daemon's chart memory limit 128 MiB")),
        _ => (None, None),
    }
}

/// kruise-daemon's memory limit in its Helm chart (compatibility spec §7), the anchor for
/// every agent memory number.
pub const KRUISE_DAEMON_MEMORY_LIMIT_MIB: f64 = 128.0;

/// Where and when the report was made.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// `uname -srm`-like kernel and architecture.
    pub kernel: String,
    /// The CPU model.
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Memory in GiB.
    pub memory_gib: f64,
    /// Load average (1 min) when the run started: these machines are shared and noisy.
    pub load_at_start: f64,
    /// UTC date and time of the run.
    pub date: String,
    /// `git rev-parse HEAD` of the tree measured, if known.
    pub commit: String,
}

impl Machine {
    /// Reads the machine from /proc.
    pub fn read() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        let load_at_start = read("/proc/loadavg")
            .split_whitespace()
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0.0);
        let kernel = format!(
            "{} {}",
            read("/proc/sys/kernel/ostype").trim(),
            read("/proc/sys/kernel/osrelease").trim()
        );
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        Self {
            kernel,
            cpu,
            cpus,
            memory_gib: memory_kib / 1024.0 / 1024.0,
            load_at_start,
            date: k8s_openapi::jiff::Timestamp::now()
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
            commit,
        }
    }
}

/// One section of the report: a benchmark's numbers and how they were made.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Section {
    /// Heading.
    pub title: String,
    /// How the numbers were made (setup, rounds).
    pub method: String,
    /// The numbers.
    pub measurements: Vec<Measurement>,
    /// Free-text findings (extrapolations and the like), rendered after the table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The machine and the date.
    pub machine: Machine,
    /// The command that produced it.
    pub command: String,
    /// Every section.
    pub sections: Vec<Section>,
}

/// A JSON row: the measurement with its target and anchor resolved.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row<'a> {
    #[serde(flatten)]
    measurement: &'a Measurement,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_met: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anchor: Option<&'static str>,
}

impl Report {
    /// `results.json`: machine, command and every measurement with its target.
    pub fn to_json(&self) -> serde_json::Value {
        let sections: Vec<serde_json::Value> = self
            .sections
            .iter()
            .map(|section| {
                let rows: Vec<Row> = section
                    .measurements
                    .iter()
                    .map(|m| {
                        let (target, anchor) = target_of(&m.key);
                        Row {
                            measurement: m,
                            target: target.map(|t| t.describe(&m.unit)),
                            target_met: target.map(|t| t.met(m.value)),
                            anchor,
                        }
                    })
                    .collect();
                serde_json::json!({
                    "title": section.title,
                    "method": section.method,
                    "measurements": rows,
                    "notes": section.notes,
                })
            })
            .collect();
        serde_json::json!({
            "machine": self.machine,
            "command": self.command,
            "sections": sections,
        })
    }

    /// `REPORT.md`: one table per section, medians with their range, target and anchor.
    pub fn to_markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "# kruised benchmark report\n");
        let _ = writeln!(
            out,
            "Machine: {} ({} CPUs), {:.0} GiB, {}; load average {:.1} at the start. Date: {}. Commit: {}.\n",
            m.cpu, m.cpus, m.memory_gib, m.kernel, m.load_at_start, m.date, m.commit
        );
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "Values are medians (range in brackets, n samples) unless the label says otherwise. \
             Nothing here is asserted by a test: the tests check behaviour, this checks cost. \
             A target marked ✗ was missed in this run.\n"
        );
        for section in &self.sections {
            let _ = writeln!(out, "## {}\n\n{}\n", section.title, section.method);
            let _ = writeln!(out, "| measurement | value | target | anchor |");
            let _ = writeln!(out, "| --- | --- | --- | --- |");
            for measurement in &section.measurements {
                let (target, anchor) = target_of(&measurement.key);
                let mut value = format!("{} {}", number(measurement.value), measurement.unit);
                if let (Some(min), Some(max)) = (measurement.min, measurement.max) {
                    let _ = write!(
                        value,
                        " [{}, {}] n={}",
                        number(min),
                        number(max),
                        measurement.samples
                    );
                }
                let target = target.map_or(String::new(), |t| {
                    let mark = if t.met(measurement.value) {
                        "✓"
                    } else {
                        "✗"
                    };
                    format!("{} {mark}", t.describe(&measurement.unit))
                });
                let mut anchor = anchor.unwrap_or("").to_owned();
                if measurement.unit == "MiB" && anchor.contains("128 MiB") {
                    let _ = write!(
                        anchor,
                        " ({:.0} % of it)",
                        measurement.value / KRUISE_DAEMON_MEMORY_LIMIT_MIB * 100.0
                    );
                }
                let _ = writeln!(
                    out,
                    "| {} | {value} | {target} | {anchor} |",
                    measurement.label
                );
            }
            for note in &section.notes {
                let _ = writeln!(out, "\n{note}");
            }
            out.push('\n');
        }
        out
    }

    /// Writes `results.json` and `REPORT.md` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(&self.to_json()).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("results.json"), json + "\n")?;
        std::fs::write(dir.join("REPORT.md"), self.to_markdown())
    }
}

/// A number with as many decimals as it deserves.
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 || magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(measurements: Vec<Measurement>) -> Report {
        Report {
            machine: Machine {
                kernel: "Linux 6.1".into(),
                cpu: "test cpu".into(),
                cpus: 2,
                memory_gib: 24.0,
                load_at_start: 1.5,
                date: "2026-11-25 18:00 UTC".into(),
                commit: "abc1234".into(),
            },
            command: "testbed bench".into(),
            sections: vec![Section {
                title: "Image pre-pull".into(),
                method: "7 rounds".into(),
                measurements,
                notes: vec!["a note".into()],
            }],
        }
    }

    #[test]
    fn median_of_takes_the_middle_sample_and_keeps_the_range() {
        let m = Measurement::median_of("k", "l", &[5.0, 1.0, 3.0], "ms");
        assert_eq!(
            (m.value, m.min, m.max, m.samples),
            (3.0, Some(1.0), Some(5.0), 3)
        );
        let single = Measurement::median_of("k", "l", &[2.0], "ms");
        assert_eq!((single.min, single.max), (None, None));
    }

    #[test]
    fn markdown_marks_targets_met_and_missed_and_relates_memory_to_the_anchor() {
        let text = report(vec![
            Measurement::single("pull.rss_idle_mib", "agent RSS idle", 12.8, "MiB"),
            Measurement::single("pull.overhead_ms", "overhead", 75.0, "ms"),
            Measurement::single("binary.size_mib", "binary", 9.5, "MiB"),
        ])
        .to_markdown();
        assert!(
            text.contains("| agent RSS idle | 12.8 MiB | ≤ 16.0 MiB ✓ |"),
            "{text}"
        );
        assert!(text.contains("(10 % of it)"), "{text}");
        assert!(
            text.contains("| overhead | 75.0 ms | ≤ 50.0 ms ✗ |"),
            "{text}"
        );
        assert!(text.contains("| binary | 9.50 MiB |  |  |"), "{text}");
        assert!(text.contains("a note"));
        assert!(text.contains("Commit: abc1234"));
    }

    #[test]
    fn json_carries_target_verdicts() {
        let json = report(vec![Measurement::median_of(
            "recreate.stop_calls_per_crr",
            "stops per CRR",
            &[1.0, 1.0],
            "calls",
        )])
        .to_json();
        let row = &json["sections"][0]["measurements"][0];
        assert_eq!(row["targetMet"], true);
        assert_eq!(row["target"], "= 1.00 calls");
        assert_eq!(row["samples"], 2);
        assert_eq!(json["machine"]["cpus"], 2);
    }
}
