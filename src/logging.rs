//! Structured logs with tracing: text or JSON, filtered by `RUST_LOG` or `-v`.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The default filter for a klog verbosity: 0-3 info, 4-5 debug, 6+ trace. Only our
/// own crate gets the raised level; dependencies (hyper, h2, kube) stay at info so `-v=5`
/// from kruise's manifests does not flood the log with frame dumps.
pub fn filter_for_verbosity(verbosity: u8) -> String {
    let ours = match verbosity {
        0..=3 => "info",
        4..=5 => "debug",
        _ => "trace",
    };
    format!("info,kruised={ours}")
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `-v`.
pub fn init(format: LogFormat, verbosity: u8) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(filter_for_verbosity(verbosity)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: kubectl logs and journald want plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_onto_levels() {
        assert_eq!(filter_for_verbosity(0), "info,kruised=info");
        assert_eq!(filter_for_verbosity(4), "info,kruised=debug");
        assert_eq!(filter_for_verbosity(5), "info,kruised=debug");
        assert_eq!(filter_for_verbosity(10), "info,kruised=trace");
    }
}
