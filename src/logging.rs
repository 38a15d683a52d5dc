//! Structured logs with tracing: text or JSON, filtered by `RUST_LOG` or `-v`, and a
//! runtime switch of the level by signal (`SIGUSR1`: debug for kruised's own code,
//! `SIGUSR2`: back to the start-up filter) so an operator can look closer at a running
//! agent without restarting it (a restart would lose the state being investigated).

use tracing::info;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

/// The filter installed by `SIGUSR1`: what `-v=5` gives.
pub const RAISED_FILTER: &str = "info,kruised=debug";

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

/// Changes the log filter of a running process.
#[derive(Clone)]
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    initial: String,
}

impl LogLevel {
    /// Installs `filter` (an `EnvFilter` directive string such as `info,kruised=debug`).
    pub fn set(&self, filter: &str) -> Result<(), LogLevelError> {
        let parsed = EnvFilter::try_new(filter).map_err(|source| LogLevelError::Filter {
            filter: filter.to_owned(),
            reason: source.to_string(),
        })?;
        self.handle
            .reload(parsed)
            .map_err(|source| LogLevelError::Reload(source.to_string()))
    }

    /// The filter the process started with.
    pub fn initial(&self) -> &str {
        &self.initial
    }

    /// Until the process ends: `SIGUSR1` raises kruised's own logs to debug, `SIGUSR2`
    /// restores the start-up filter.
    pub async fn follow_signals(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut raise), Ok(mut restore)) = (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::warn!("cannot listen for SIGUSR1/SIGUSR2: the log level is fixed");
            return;
        };
        loop {
            let filter = tokio::select! {
                _ = raise.recv() => RAISED_FILTER.to_owned(),
                _ = restore.recv() => self.initial.clone(),
            };
            match self.set(&filter) {
                Ok(()) => info!(%filter, "log filter changed by signal"),
                Err(error) => tracing::warn!(%error, "log filter unchanged"),
            }
        }
    }
}

/// Why the log filter could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    /// Not a valid filter directive.
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter {
        /// The directive given.
        filter: String,
        /// The parser's explanation.
        reason: String,
    },
    /// The subscriber is gone.
    #[error("log filter reload failed: {0}")]
    Reload(String),
}

/// Installs the global subscriber and returns the switch of its level. `RUST_LOG`, when
/// set, wins over `-v`.
pub fn init(format: LogFormat, verbosity: u8) -> LogLevel {
    let initial = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| EnvFilter::try_new(value).is_ok())
        .unwrap_or_else(|| filter_for_verbosity(verbosity));
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&initial));
    // Colour codes only on a terminal: kubectl logs and journald want plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    // The span list carries the trace context: the agent's root span
                    // (node) and the object being worked on (kind, namespace, name).
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    LogLevel { handle, initial }
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

    #[test]
    fn the_raised_filter_is_what_v5_gives() {
        assert_eq!(RAISED_FILTER, filter_for_verbosity(5));
    }
}
