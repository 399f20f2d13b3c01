//! The guard's settings, validated: which hosts and origins may use the proxy
//! ([`HostPattern`], origins), the optional [`PathSecret`], and the operator's filters
//! ([`DenyPaths`], `deny_methods`, `read_only`), gathered in [`Policy`]. The settings
//! resolver builds a [`Policy`]; [`super::Guard::new`] compiles it. Nothing here looks at
//! a request.

use std::fmt;

use http::Method;
use regex::RegexSet;

/// Host patterns allowed by default: loopback names, each with any port.
pub const DEFAULT_ALLOWED_HOSTS: [&str; 4] = ["localhost", "127.0.0.1", "[::1]", "*.localhost"];

/// Methods `read_only = true` lets through.
pub const READ_ONLY_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::OPTIONS];

/// The shortest path secret accepted from a file or the environment.
pub const MIN_PATH_SECRET_LEN: usize = 16;

/// Whether a client's `Forwarded`, `X-Forwarded-*` and `X-Real-IP` reach the master by
/// default: no, because to the master the proxy is the client, and a local caller must
/// not claim another address, scheme or host.
pub const DEFAULT_PASS_FORWARDING_HEADERS: bool = false;

/// Whether a client's `Cookie` reaches the master by default: no. A browser sends the
/// proxy every cookie of every local application on `localhost` (cookies are not
/// separated by port), and the master authenticates the proxy by its token.
pub const DEFAULT_PASS_COOKIES: bool = false;

/// The protocols a client may switch to (RFC 9110 §7.8 `Upgrade`) by default: only
/// WebSocket, which the DC/OS CLI's `task exec`, the UI's logs and terminals use. A
/// tunnel's content is not filtered, so another protocol behind a master that switches
/// (`h2c`) would carry requests past every rule.
pub const DEFAULT_ALLOWED_UPGRADES: [&str; 1] = ["websocket"];

/// Random bytes in a generated path secret (hex-encoded: 64 characters, 256 bits).
const GENERATED_SECRET_BYTES: usize = 32;

/// A setting of the guard that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyError {
    /// The setting (flag / key) involved.
    pub key: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn policy_error(key: &'static str, message: String) -> PolicyError {
    PolicyError { key, message }
}

/// One entry of `allowed_hosts`: an exact host or a `*.suffix`, optionally pinned to a
/// port. Matching is ASCII case-insensitive and anchored at both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase host (`[..]` kept for IPv6); for a suffix pattern, `.suffix`.
    host: String,
    suffix: bool,
    port: Option<u16>,
}

impl HostPattern {
    /// Parse `localhost`, `*.localhost`, `127.0.0.1:8079`, `[::1]`, `proxy.internal`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim().to_ascii_lowercase();
        let (suffix, rest) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, t.as_str()),
        };
        let bad = |why: &str| format!("invalid host pattern {text:?}: {why}");
        let (host, port) =
            split_host_port(rest).ok_or_else(|| bad("expected HOST, HOST:PORT or *.DOMAIN"))?;
        if host.contains('*') {
            return Err(bad(
                "only a leading `*.` is allowed; a pattern matching every host would switch \
                 off the DNS-rebinding protection, so list the names clients use instead",
            ));
        }
        if suffix && host.starts_with('[') {
            return Err(bad("`*.` cannot go before an IP address"));
        }
        Ok(Self {
            host: if suffix {
                format!(".{host}")
            } else {
                host.to_owned()
            },
            suffix,
            port,
        })
    }

    pub(super) fn matches(&self, host: &str, port: Option<u16>) -> bool {
        if self.port.is_some() && self.port != port {
            return false;
        }
        if self.suffix {
            host.len() > self.host.len()
                && host.is_char_boundary(host.len() - self.host.len())
                && host[host.len() - self.host.len()..].eq_ignore_ascii_case(&self.host)
        } else {
            host.eq_ignore_ascii_case(&self.host)
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.suffix {
            write!(f, "*{}", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// Split `host[:port]` / `[v6][:port]`; `None` when it is not a plausible authority
/// (empty host, bad port, user info, characters a host name cannot hold).
pub(super) fn split_host_port(value: &str) -> Option<(&str, Option<u16>)> {
    let (host, after) = if value.starts_with('[') {
        let end = value.find(']')?;
        let host = &value[..=end];
        host[1..end].parse::<std::net::Ipv6Addr>().ok()?;
        (host, &value[end + 1..])
    } else {
        match value.find(':') {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, ""),
        }
    };
    let port = match after.strip_prefix(':') {
        None if after.is_empty() => None,
        None => return None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    let plain = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if host.is_empty() || !(plain || host.starts_with('[')) {
        return None;
    }
    Some((host, port))
}

/// An `allowed_origins` entry, normalised to lowercase `scheme://host[:port]`.
fn parse_origin(text: &str) -> Result<String, String> {
    let t = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let bad = |why: &str| format!("invalid origin {text:?}: {why}");
    let (scheme, rest) = t
        .split_once("://")
        .ok_or_else(|| bad("expected scheme://host[:port], e.g. http://localhost:3000"))?;
    if !matches!(scheme, "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    split_host_port(rest).ok_or_else(|| bad("expected scheme://host[:port] with no path"))?;
    Ok(t)
}

/// The per-session secret that must open every request path: `/<secret>/…`.
/// Its `Debug` prints a mask; the only ways to the value are [`PathSecret::expose`] (for
/// the one startup line) and the constant-time comparison.
#[derive(Clone, PartialEq, Eq)]
pub struct PathSecret(String);

impl PathSecret {
    /// Generate a fresh secret: 32 bytes from the OS random source, hex-encoded.
    pub fn generate() -> Result<Self, PolicyError> {
        use ring::rand::{SecureRandom, SystemRandom};
        let mut bytes = [0u8; GENERATED_SECRET_BYTES];
        SystemRandom::new().fill(&mut bytes).map_err(|_| {
            policy_error(
                "--path-secret",
                "the operating system's random source failed".into(),
            )
        })?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// Accept a given secret (file or environment; surrounding whitespace trimmed): at
    /// least [`MIN_PATH_SECRET_LEN`] characters, only `A-Z a-z 0-9 - . _ ~` (RFC 3986
    /// unreserved), so it is one path segment that no client re-encodes.
    pub fn new(raw: &str, from: &'static str) -> Result<Self, PolicyError> {
        let s = raw.trim();
        if s.len() < MIN_PATH_SECRET_LEN {
            return Err(policy_error(
                from,
                format!(
                    "the path secret must be at least {MIN_PATH_SECRET_LEN} characters \
                     (use --path-secret to generate one)"
                ),
            ));
        }
        let unreserved =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if !s.bytes().all(unreserved) || s.bytes().all(|b| b == b'.') {
            return Err(policy_error(
                from,
                "the path secret may hold only letters, digits and - . _ ~".into(),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The secret itself: for the base URL printed once at startup, nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(super) fn matches(&self, candidate: &[u8]) -> bool {
        // The length is not the secret (it is fixed for generated ones); the bytes are
        // compared in constant time.
        candidate.len() == self.0.len() && constant_time_eq(candidate, self.0.as_bytes())
    }
}

impl fmt::Debug for PathSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PathSecret(<redacted>)")
    }
}

/// Compare equal-length slices, touching every byte whatever the first difference, so
/// the time taken says nothing about how much of a guess was right. (ring's own helper
/// is deprecated for outside use.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// `deny_paths`: anchored regexes, compiled once into one set.
#[derive(Debug, Clone)]
pub struct DenyPaths {
    set: RegexSet,
    sources: Vec<String>,
}

impl DenyPaths {
    /// Compile `patterns`, each anchored as `^(?:pattern)$` and with `.` matching every
    /// character, `\n` included (the regex flag `s`), so that no character of a path
    /// steps outside a rule.
    pub fn new(patterns: &[String]) -> Result<Self, PolicyError> {
        let mut anchored = Vec::with_capacity(patterns.len());
        for p in patterns {
            let a = format!("(?s)^(?:{p})$");
            if let Err(e) = regex::Regex::new(&a) {
                let why = e.to_string().lines().last().unwrap_or_default().to_owned();
                return Err(policy_error(
                    "deny_paths",
                    format!("invalid regular expression {p:?}: {}", why.trim()),
                ));
            }
            anchored.push(a);
        }
        let set = RegexSet::new(&anchored)
            .map_err(|e| policy_error("deny_paths", format!("cannot compile: {e}")))?;
        Ok(Self {
            set,
            sources: patterns.to_vec(),
        })
    }

    pub(super) fn matching(&self, path: &str) -> Option<&str> {
        let first = self.set.matches(path).into_iter().next()?;
        Some(&self.sources[first])
    }
}

/// The validated guard settings, as [`crate::settings::Settings`] carries them.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `allowed_hosts`.
    pub allowed_hosts: Vec<HostPattern>,
    /// `allowed_origins`; `None` means the proxy's own loopback origins.
    pub allowed_origins: Option<Vec<String>>,
    /// The path secret, if any.
    pub path_secret: Option<PathSecret>,
    /// `read_only`.
    pub read_only: bool,
    /// `deny_paths`, if any.
    pub deny_paths: Option<DenyPaths>,
    /// `deny_methods`, upper-cased; matched without regard to letter case.
    pub deny_methods: Vec<Method>,
    /// `pass_forwarding_headers`: forward a client's `Forwarded`, `X-Forwarded-*` and
    /// `X-Real-IP` (removed by default).
    pub pass_forwarding_headers: bool,
    /// `pass_cookies`: forward a client's `Cookie` (removed by default).
    pub pass_cookies: bool,
    /// `allowed_upgrades`: protocol names (lowercase, no version) a client may ask to
    /// switch to.
    pub allowed_upgrades: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_hosts: DEFAULT_ALLOWED_HOSTS
                .iter()
                .map(|h| HostPattern::parse(h).expect("the default host patterns are valid"))
                .collect(),
            allowed_origins: None,
            path_secret: None,
            read_only: false,
            deny_paths: None,
            deny_methods: Vec::new(),
            pass_forwarding_headers: DEFAULT_PASS_FORWARDING_HEADERS,
            pass_cookies: DEFAULT_PASS_COOKIES,
            allowed_upgrades: DEFAULT_ALLOWED_UPGRADES.map(String::from).to_vec(),
        }
    }
}

impl Policy {
    /// Validate `allowed_hosts` entries.
    pub fn hosts(list: &[String]) -> Result<Vec<HostPattern>, PolicyError> {
        list.iter()
            .map(|h| HostPattern::parse(h).map_err(|m| policy_error("allowed_hosts", m)))
            .collect()
    }

    /// Validate `allowed_origins` entries.
    pub fn origins(list: &[String]) -> Result<Vec<String>, PolicyError> {
        list.iter()
            .map(|o| parse_origin(o).map_err(|m| policy_error("allowed_origins", m)))
            .collect()
    }

    /// Validate `allowed_upgrades` entries: protocol names (RFC 9110 §7.8 tokens),
    /// lower-cased.
    pub fn upgrades(list: &[String]) -> Result<Vec<String>, PolicyError> {
        list.iter()
            .map(|u| {
                let name = u.trim().to_ascii_lowercase();
                let token = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if token {
                    Ok(name)
                } else {
                    Err(policy_error(
                        "allowed_upgrades",
                        format!("invalid protocol name {u:?} (e.g. websocket)"),
                    ))
                }
            })
            .collect()
    }

    /// Validate `deny_methods` entries (method tokens, upper-cased).
    pub fn methods(list: &[String]) -> Result<Vec<Method>, PolicyError> {
        list.iter()
            .map(|m| {
                Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                    .map_err(|_| policy_error("deny_methods", format!("invalid HTTP method {m:?}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_paths_match_across_every_character() {
        let d = DenyPaths::new(&["/mesos/.*".into(), "/a.b".into()]).unwrap();
        assert_eq!(d.matching("/mesos/state\n"), Some("/mesos/.*"));
        assert_eq!(d.matching("/mesos/\r\n\0x"), Some("/mesos/.*"));
        assert_eq!(d.matching("/a\nb"), Some("/a.b"));
        assert_eq!(d.matching("/x/mesos/state\n"), None, "still anchored");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
