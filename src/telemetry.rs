//! Telemetry: the tracing subscriber every command installs first. Filtered by
//! `RUST_LOG` (default `info`), written to stderr as text for people or as JSON
//! lines for machines (`--log-format json`). A fatal error ends a command with
//! exactly one message, in the same format.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The format [`init`] was first called with.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Prints the error that ends a command, once: `error: …` on stderr, or with
/// `--log-format json` one JSON log line (level ERROR), so journald and log
/// shippers see each failure a single time.
pub fn report_fatal(message: &str) {
    match FORMAT.get() {
        Some(LogFormat::Json) => tracing::error!(fatal = true, "{message}"),
        _ => eprintln!("error: {message}"),
    }
}

/// An error and its causes on one line, `outer: cause: root`, leaving out a
/// cause whose text the line already holds (database drivers often repeat their
/// cause inside their own message).
pub fn error_chain(error: &anyhow::Error) -> String {
    let error: &(dyn std::error::Error + Send + Sync + 'static) = error.as_ref();
    cause_chain(error)
}

/// An error and its causes on one line, each cause left out when its text is empty
/// or already in the line (many errors repeat their source in their own message).
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(error);
    while let Some(e) = cause {
        cause = e.source();
        let text = e.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The text a panic was raised with.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("database error: {0}")]
    struct Wrapping(#[source] std::io::Error);

    #[test]
    fn a_cause_repeated_in_its_parent_is_printed_once() {
        let inner = std::io::Error::other("connection refused");
        let error = anyhow::Error::new(Wrapping(inner)).context("opening the store");
        assert_eq!(
            error_chain(&error),
            "opening the store: database error: connection refused"
        );
    }
}
