//! Log output: human-readable text or one JSON object per line, filtered by a tracing
//! `EnvFilter` (`-v`, `RUST_LOG` or `log.level`). Logs go to stderr; stdout carries only
//! the one "listening on" line scripts can wait for.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::types::LogFormat;

/// Added to the filter unless it names `notify` or asks for debug/trace detail: the
/// file-watching library logs its own bookkeeping at info and warn level, in its Debug
/// form (`unable to remove watch descriptor from inotify: Os { code: 22, … }` after
/// `dcos cluster remove`), which is expected and needs nothing from the user. The proxy
/// reports every watcher problem that matters in its own words.
pub const QUIET_LIBRARIES: &str = "notify=error";

/// The filter actually installed: `filter`, plus [`QUIET_LIBRARIES`] unless the user
/// asked for library detail.
pub fn effective_filter(filter: &str) -> String {
    let detailed =
        filter.contains("notify") || filter.contains("debug") || filter.contains("trace");
    if detailed || filter.trim().is_empty() {
        filter.to_owned()
    } else {
        format!("{filter},{QUIET_LIBRARIES}")
    }
}

/// The log filter did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter {filter:?} (from -v, RUST_LOG or log.level): {source}")]
pub struct LogFilterError {
    filter: String,
    source: tracing_subscriber::filter::ParseError,
}

/// Install the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat, filter: &str) -> Result<(), LogFilterError> {
    let env_filter =
        EnvFilter::try_new(effective_filter(filter)).map_err(|source| LogFilterError {
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

#[cfg(test)]
mod tests {
    use super::{QUIET_LIBRARIES, effective_filter};

    #[test]
    fn library_bookkeeping_is_quiet_unless_asked_for() {
        assert_eq!(effective_filter("info"), format!("info,{QUIET_LIBRARIES}"));
        assert_eq!(effective_filter("warn"), format!("warn,{QUIET_LIBRARIES}"));
        assert_eq!(effective_filter("debug"), "debug");
        assert_eq!(effective_filter("info,notify=info"), "info,notify=info");
        assert!(tracing_subscriber::EnvFilter::try_new(effective_filter("info")).is_ok());
    }
}
