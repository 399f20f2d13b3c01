//! Log output: human-readable text or one JSON object per line, filtered by a tracing
//! `EnvFilter` (`-v`, `RUST_LOG` or `log.level`). Logs go to stderr; stdout carries only
//! the one "listening on" line scripts can wait for.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::types::LogFormat;

/// The log filter did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter {filter:?} (from -v, RUST_LOG or log.level): {source}")]
pub struct LogFilterError {
    filter: String,
    source: tracing_subscriber::filter::ParseError,
}

/// Install the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat, filter: &str) -> Result<(), LogFilterError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| LogFilterError {
        filter: filter.to_owned(),
        source,
    })?;
    // Colour only for a person at a terminal, and never when NO_COLOR is set.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests embedding the library) is harmless: the first wins.
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}
