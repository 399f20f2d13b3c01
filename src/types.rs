//! The settings' plain value types, shared by the flag parser ([`crate::cli`]) and the
//! settings resolver ([`crate::settings`]) so that neither imports the other's internals:
//! the client-`Authorization` policy, the watch mode, the log format, the listen address
//! and the duration syntax. Each parses from text and names what it expected on failure.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// What to do with an `Authorization` header the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Keep the client's credentials: `token=X` passes, `Bearer X` becomes `token=X`,
    /// no header or any other scheme gets the proxy's token.
    #[default]
    Keep,
    /// Always send the proxy's own token, whatever the client sent.
    Replace,
}

/// How the DC/OS CLI config is followed for changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// The platform's file events (inotify, FSEvents, …), falling back to polling when
    /// they cannot be used.
    #[default]
    Auto,
    /// Read the files every second, e.g. on network file systems that deliver no events.
    Poll,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Parse `"250ms"`, `"30s"`, `"2m"`, `"1h"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected a whole number with a unit, e.g. \"30s\", \"500ms\", \"2m\"")
    })?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    Ok(d)
}

/// Where to listen: a TCP address or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `IP:PORT`.
    Tcp(SocketAddr),
    /// `unix:/path`.
    Unix(PathBuf),
}

impl ListenAddr {
    /// Whether only this machine can connect: a loopback IP or a Unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Tcp(a) => a.ip().to_canonical().is_loopback(),
            Self::Unix(_) => true,
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => a.fmt(f),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_listen(s)
    }
}

/// Parse a listen address: `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` or `unix:/path`.
pub fn parse_listen(text: &str) -> Result<ListenAddr, String> {
    let t = text.trim();
    if let Some(path) = t.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!(
                "invalid listen address {text:?}: expected unix:/path/to/socket"
            ));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    if let Some(port) = t.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid listen address {text:?}: bad port {port:?}"))?;
        return Ok(ListenAddr::Tcp(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
        )));
    }
    t.parse().map(ListenAddr::Tcp).map_err(|_| {
        format!(
            "invalid listen address {text:?}: expected IP:PORT, e.g. 127.0.0.1:8079 or \
             [::1]:8079, or unix:/path/to/socket"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            parse_listen("localhost:9000").unwrap(),
            ListenAddr::Tcp("127.0.0.1:9000".parse().unwrap())
        );
        assert!(parse_listen("[::1]:8079").unwrap().is_local());
        assert!(!parse_listen("0.0.0.0:8079").unwrap().is_local());
        assert!(!parse_listen("[::]:8079").unwrap().is_local());
        assert!(parse_listen("[::ffff:127.0.0.1]:8079").unwrap().is_local());
        assert_eq!(
            parse_listen("unix:/run/p.sock").unwrap(),
            ListenAddr::Unix("/run/p.sock".into())
        );
        assert_eq!(
            parse_listen("unix:/run/p.sock").unwrap().to_string(),
            "unix:/run/p.sock"
        );
        assert!(parse_listen("unix:").is_err());
        assert!(parse_listen("8079").unwrap_err().contains("IP:PORT"));
    }
}
