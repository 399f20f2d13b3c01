//! The door: which requests may use the credential-holding port at all.
//!
//! Every check runs here, once per request and before anything is forwarded: the
//! request framing (a head with both `Content-Length` and `Transfer-Encoding`, found by
//! [`super::framing`], is refused), the method (`CONNECT` is refused), the request
//! target (an absolute-form target never picks the destination), `Host` against an
//! anchored allow-list (DNS rebinding),
//! `Origin` and `Sec-Fetch-Site` (web pages in the user's browser), the optional path
//! secret (stripped before forwarding), and the operator's filters (`read_only`,
//! `deny_methods`, `deny_paths`). A refused request gets a one-line answer saying what
//! was refused and which setting would allow it deliberately; the master never sees it.
//!
//! Everything is compiled once at startup ([`Policy`], then [`Guard`]); a check does no
//! I/O, takes no lock and allocates only with a path secret (the stripped target, and a
//! `Referer` that carries the secret), to normalise a path that holds `%`, `//` or dot
//! segments when `deny_paths` is set, and to word a refusal.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use regex::RegexSet;

use super::framing::FramingConflict;

/// Host patterns allowed by default: loopback names, each with any port.
pub const DEFAULT_ALLOWED_HOSTS: [&str; 4] = ["localhost", "127.0.0.1", "[::1]", "*.localhost"];

/// Methods `read_only = true` lets through.
pub const READ_ONLY_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::OPTIONS];

/// The shortest path secret accepted from a file or the environment.
pub const MIN_PATH_SECRET_LEN: usize = 16;

/// Random bytes in a generated path secret (hex-encoded: 64 characters, 256 bits).
const GENERATED_SECRET_BYTES: usize = 32;

/// The most characters of a client-sent value (`Host`, `Origin`) quoted in a refusal.
const MAX_QUOTED: usize = 100;

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

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
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
fn split_host_port(value: &str) -> Option<(&str, Option<u16>)> {
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

    fn matches(&self, candidate: &[u8]) -> bool {
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
    /// Compile `patterns`, each anchored as `^(?:pattern)$`.
    pub fn new(patterns: &[String]) -> Result<Self, PolicyError> {
        let mut anchored = Vec::with_capacity(patterns.len());
        for p in patterns {
            let a = format!("^(?:{p})$");
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

    fn matching(&self, path: &str) -> Option<&str> {
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
    /// `deny_methods`.
    pub deny_methods: Vec<Method>,
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

/// Why a request was refused. Each becomes a one-line plain-text answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `CONNECT`: this is not a forward proxy.
    Connect,
    /// HTTP/1.1 without `Host`, or more than one `Host` / `Origin`.
    Malformed(&'static str),
    /// An absolute-form target whose authority is not an allowed host.
    AbsoluteTarget(String),
    /// `Host` outside `allowed_hosts`.
    Host(String),
    /// `Origin` outside `allowed_origins`.
    Origin(String),
    /// `Sec-Fetch-Site: cross-site` without an allowed `Origin`.
    CrossSite,
    /// The path secret is missing or wrong.
    PathSecret,
    /// `read_only` and a method other than GET, HEAD, OPTIONS (or an upgrade).
    ReadOnly(String),
    /// The method is in `deny_methods`.
    DeniedMethod(String),
    /// The path matches a `deny_paths` rule (the rule is given).
    DeniedPath(String),
}

impl Refusal {
    /// The status code of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// The answer: status, one line of text, `nosniff`.
    pub fn to_response(&self) -> Response<Bytes> {
        let mut resp = Response::new(Bytes::from(format!("dcos-token-proxy: {self}\n")));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if *self == Self::Connect {
            h.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"),
            );
        }
        resp
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect => f.write_str(
                "CONNECT refused: this proxy forwards only to the DC/OS master, it is not a \
                 forward proxy; send requests as `GET /path`",
            ),
            Self::Malformed(what) => write!(f, "bad request: {what}"),
            Self::AbsoluteTarget(host) => write!(
                f,
                "request target http://{host}/… refused: the proxy always forwards to the \
                 DC/OS master; send `GET /path`, or add {host} to allowed_hosts \
                 (--allowed-hosts) if clients really address the proxy by that name"
            ),
            Self::Host(host) => write!(
                f,
                "Host {host:?} is not allowed (protection against DNS rebinding): if you \
                 reach the proxy under that name on purpose (e.g. with --allow-remote), add it \
                 to allowed_hosts (--allowed-hosts)"
            ),
            Self::Origin(origin) => write!(
                f,
                "Origin {origin:?} is not allowed: a web page from another origin may not use \
                 your DC/OS login; to allow that page deliberately, add it to allowed_origins \
                 (--allowed-origins)"
            ),
            Self::CrossSite => f.write_str(
                "cross-site request refused (Sec-Fetch-Site: cross-site): a web page from \
                 another site may not use your DC/OS login; to allow a page deliberately, add \
                 its origin to allowed_origins (--allowed-origins)",
            ),
            Self::PathSecret => f.write_str(
                "missing or wrong path secret: use the base URL printed at startup \
                 (http://HOST:PORT/<secret>/); the proxy was started with a path secret \
                 (--path-secret, --path-secret-file or DCOS_TOKEN_PROXY_PATH_SECRET)",
            ),
            Self::ReadOnly(method) => write!(
                f,
                "{method} refused: the proxy is read-only (read_only / --read-only), which \
                 passes only GET, HEAD and OPTIONS and no WebSocket or other upgrade; \
                 start it without read_only to allow this"
            ),
            Self::DeniedMethod(method) => write!(
                f,
                "{method} refused by the deny_methods setting (--deny-methods); remove it \
                 there to allow it"
            ),
            Self::DeniedPath(rule) => write!(
                f,
                "path refused by the deny_paths rule {rule:?} (--deny-path); remove the rule \
                 to allow it"
            ),
        }
    }
}

/// The compiled checks for one listening proxy.
#[derive(Debug, Clone)]
pub struct Guard {
    hosts: Vec<HostPattern>,
    /// Lowercase `scheme://host[:port]`.
    origins: Vec<String>,
    secret: Option<PathSecret>,
    /// `/<secret>` or empty: the prefix clients put before every path.
    client_prefix: String,
    read_only: bool,
    deny_paths: Option<DenyPaths>,
    deny_methods: Vec<Method>,
}

impl Guard {
    /// Compile `policy` for a proxy listening on TCP `port` (`None` for a Unix socket):
    /// the default allowed origins are `http://localhost:PORT`, `http://127.0.0.1:PORT`
    /// and `http://[::1]:PORT`.
    pub fn new(policy: &Policy, port: Option<u16>) -> Self {
        let origins = match (&policy.allowed_origins, port) {
            (Some(list), _) => list.clone(),
            (None, Some(port)) => {
                let mut v: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
                    .iter()
                    .map(|h| format!("http://{h}:{port}"))
                    .collect();
                if port == 80 {
                    v.extend(
                        ["http://localhost", "http://127.0.0.1", "http://[::1]"].map(String::from),
                    );
                }
                v
            }
            (None, None) => Vec::new(),
        };
        Self {
            hosts: policy.allowed_hosts.clone(),
            origins,
            client_prefix: policy
                .path_secret
                .as_ref()
                .map(|s| format!("/{}", s.expose()))
                .unwrap_or_default(),
            secret: policy.path_secret.clone(),
            read_only: policy.read_only,
            deny_paths: policy.deny_paths.clone(),
            deny_methods: policy.deny_methods.clone(),
        }
    }

    /// What clients put before every path: `/<secret>`, or empty without a secret. For
    /// rewriting the master's `Location`s so that redirects keep working.
    pub fn client_prefix(&self) -> &str {
        &self.client_prefix
    }

    /// Check a request. On success the request target is left in origin-form with the
    /// path secret stripped (the rest of the path and the query byte for byte). On
    /// failure, when a path secret is configured, the target is replaced by a redacted
    /// one, so that whatever logs the target afterwards cannot log a secret or a guess.
    pub fn check<B>(&self, req: &mut Request<B>) -> Result<(), Refusal> {
        let result = self.check_inner(req);
        if result.is_err() && self.secret.is_some() {
            *req.uri_mut() = Uri::from_static("/-redacted-");
        }
        result
    }

    fn check_inner<B>(&self, req: &mut Request<B>) -> Result<(), Refusal> {
        if req.extensions().get::<FramingConflict>().is_some() {
            return Err(Refusal::Malformed(
                "both Content-Length and Transfer-Encoding (a request-smuggling shape, \
                 RFC 9112 §6.3); send one of them",
            ));
        }
        let method = req.method();
        if method == Method::CONNECT {
            return Err(Refusal::Connect);
        }

        // RFC 9112 §3.2.2: an absolute-form target's authority replaces Host. It never
        // picks the destination (always the master), but must name this proxy.
        if let Some(authority) = req.uri().authority() {
            let allowed =
                split_host_port(authority.as_str()).is_some_and(|(h, p)| self.host_allowed(h, p));
            if !allowed {
                // The host only: user info (`user:password@`) is never repeated.
                return Err(Refusal::AbsoluteTarget(quoted(authority.host())));
            }
        }

        self.check_host(req.headers(), req.version())?;
        self.check_origin(req.headers())?;

        let method = req.method();
        if self.read_only
            && (!READ_ONLY_METHODS.contains(method) || req.headers().contains_key(header::UPGRADE))
        {
            return Err(Refusal::ReadOnly(method.to_string()));
        }
        if self.deny_methods.contains(method) {
            return Err(Refusal::DeniedMethod(method.to_string()));
        }

        let stripped = self.strip_secret(req.uri())?;
        if let Some(deny) = &self.deny_paths {
            let path = stripped
                .as_ref()
                .map_or(req.uri().path(), PathAndQuery::path);
            let hit = deny.matching(path).or_else(|| match normalize_path(path) {
                Cow::Owned(n) => deny.matching(&n),
                Cow::Borrowed(_) => None,
            });
            if let Some(rule) = hit {
                return Err(Refusal::DeniedPath(rule.to_owned()));
            }
        }
        if self.secret.is_some() {
            scrub_referer(req.headers_mut(), &self.client_prefix);
        }
        match stripped {
            Some(pq) => *req.uri_mut() = Uri::from(pq),
            None if req.uri().authority().is_some() => {
                let pq = req
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::from(pq);
            }
            None => {}
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str, port: Option<u16>) -> bool {
        self.hosts.iter().any(|p| p.matches(host, port))
    }

    fn check_host(&self, headers: &HeaderMap, version: Version) -> Result<(), Refusal> {
        let mut all = headers.get_all(header::HOST).iter();
        let Some(value) = all.next() else {
            // RFC 9112 §3.2: HTTP/1.1 requires Host. An HTTP/1.0 client may omit it; no
            // browser does, so DNS rebinding cannot use that.
            return if version == Version::HTTP_11 {
                Err(Refusal::Malformed("no Host header (HTTP/1.1 requires one)"))
            } else {
                Ok(())
            };
        };
        if all.next().is_some() {
            return Err(Refusal::Malformed("more than one Host header"));
        }
        let allowed = value
            .to_str()
            .ok()
            .and_then(split_host_port)
            .is_some_and(|(h, p)| self.host_allowed(h, p));
        if allowed {
            Ok(())
        } else {
            Err(Refusal::Host(quoted_value(value)))
        }
    }

    /// RFC 6454 §7: browsers send `Origin` with cross-origin requests, every POST and
    /// every WebSocket handshake (RFC 6455 §4.1); its serialisation (`scheme://host[:port]`,
    /// default port omitted, or `null`) is compared ASCII case-insensitively.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let mut all = headers.get_all(header::ORIGIN).iter();
        let origin_allowed = match all.next() {
            None => false,
            Some(value) => {
                if all.next().is_some() {
                    return Err(Refusal::Malformed("more than one Origin header"));
                }
                let ok = self
                    .origins
                    .iter()
                    .any(|o| o.as_bytes().eq_ignore_ascii_case(value.as_bytes()));
                if !ok {
                    return Err(Refusal::Origin(quoted_value(value)));
                }
                true
            }
        };
        // Fetch metadata (W3C): a navigation or `<img>` from another site carries no
        // Origin, but browsers mark it cross-site.
        let cross_site = headers
            .get_all("sec-fetch-site")
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if cross_site && !origin_allowed {
            return Err(Refusal::CrossSite);
        }
        Ok(())
    }

    /// With a path secret: the target without it, or a refusal. Without one: `None`.
    fn strip_secret(&self, uri: &Uri) -> Result<Option<PathAndQuery>, Refusal> {
        let Some(secret) = &self.secret else {
            return Ok(None);
        };
        let path = uri.path();
        let after_slash = path.strip_prefix('/').ok_or(Refusal::PathSecret)?;
        let end = after_slash.find('/').unwrap_or(after_slash.len());
        if !secret.matches(&after_slash.as_bytes()[..end]) {
            return Err(Refusal::PathSecret);
        }
        let rest = &after_slash[end..];
        let rest = if rest.is_empty() { "/" } else { rest };
        let pq = match uri.query() {
            Some(q) => PathAndQuery::try_from(format!("{rest}?{q}")),
            None => PathAndQuery::try_from(rest),
        };
        // The pieces came from a valid target, so they form one again.
        pq.map(Some).map_err(|_| Refusal::PathSecret)
    }
}

/// A page loaded through the proxy sends its own URL, path secret included, as
/// `Referer`: take the secret out before the master (and its logs) see it.
fn scrub_referer(headers: &mut HeaderMap, client_prefix: &str) {
    let Some(value) = headers.get(header::REFERER) else {
        return;
    };
    let bytes = value.as_bytes();
    let needle = client_prefix.as_bytes();
    let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) else {
        return;
    };
    let mut scrubbed = Vec::with_capacity(bytes.len());
    scrubbed.extend_from_slice(&bytes[..at]);
    scrubbed.extend_from_slice(&bytes[at + needle.len()..]);
    match HeaderValue::from_bytes(&scrubbed) {
        Ok(v) => {
            headers.insert(header::REFERER, v);
        }
        Err(_) => {
            headers.remove(header::REFERER);
        }
    }
}

/// The path as a server behind us would route it: percent-decoded, `//` merged, `.`
/// and `..` segments resolved (what nginx, Admin Router's base, does before matching
/// its `location`s). Borrowed when there is nothing to normalise.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') && !path.contains("//") && !path.contains("/.") {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                decoded.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let text = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    for seg in text.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(text.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    let trailing = text.ends_with('/') || text.ends_with("/.") || text.ends_with("/..");
    if out.is_empty() || trailing {
        out.push('/');
    }
    Cow::Owned(out)
}

fn quoted(text: &str) -> String {
    text.chars().take(MAX_QUOTED).collect()
}

fn quoted_value(v: &HeaderValue) -> String {
    quoted(&String::from_utf8_lossy(v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn host_ok(g: &Guard, host: &str) -> bool {
        g.check(&mut req("GET", "/", &[("host", host)])).is_ok()
    }

    #[test]
    fn default_hosts_are_anchored_and_case_insensitive() {
        let g = Guard::new(&Policy::default(), Some(8079));
        for h in [
            "localhost",
            "LOCALHOST:8079",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:8079",
            "app.localhost",
            "a.b.Localhost:9",
        ] {
            assert!(host_ok(&g, h), "{h}");
        }
        for h in [
            "localhost.evil.example",
            "evil.example",
            "localhostx",
            "xlocalhost",
            ".localhost",
            "127.0.0.1.nip.io",
            "127.0.0.2",
            "[::2]",
            "localhost:",
            "localhost:x",
            "user@localhost",
            "localhost/x",
            "",
            "10.0.0.1:8079",
        ] {
            assert!(!host_ok(&g, h), "{h}");
        }
    }

    #[test]
    fn host_patterns_parse_and_pin_ports() {
        let p = Policy {
            allowed_hosts: Policy::hosts(&["proxy.internal:8079".into(), "*.svc".into()]).unwrap(),
            ..Policy::default()
        };
        let g = Guard::new(&p, Some(8079));
        assert!(host_ok(&g, "proxy.internal:8079"));
        assert!(!host_ok(&g, "proxy.internal"));
        assert!(!host_ok(&g, "proxy.internal:80"));
        assert!(host_ok(&g, "a.svc"));
        assert!(!host_ok(&g, "localhost"), "the list replaces the defaults");
        for bad in ["*", "*.*", "a*.b", "*.[::1]", "host:port", "a b"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            HostPattern::parse("*.LocalHost").unwrap().to_string(),
            "*.localhost"
        );
    }

    #[test]
    fn origins() {
        let g = Guard::new(&Policy::default(), Some(8079));
        let ok = |h: &[(&str, &str)]| {
            let mut all = vec![("host", "localhost:8079")];
            all.extend_from_slice(h);
            g.check(&mut req("GET", "/", &all))
        };
        assert!(ok(&[("origin", "http://localhost:8079")]).is_ok());
        assert!(ok(&[("origin", "http://127.0.0.1:8079")]).is_ok());
        assert!(ok(&[("origin", "HTTP://[::1]:8079")]).is_ok());
        assert!(ok(&[("sec-fetch-site", "same-origin")]).is_ok());
        assert!(matches!(
            ok(&[("origin", "http://localhost:3000")]),
            Err(Refusal::Origin(_))
        ));
        assert!(matches!(ok(&[("origin", "null")]), Err(Refusal::Origin(_))));
        assert!(matches!(
            ok(&[("origin", "https://evil.example")]),
            Err(Refusal::Origin(_))
        ));
        assert_eq!(
            ok(&[("sec-fetch-site", "cross-site")]),
            Err(Refusal::CrossSite)
        );

        let p = Policy {
            allowed_origins: Some(Policy::origins(&["https://Dash.example/".into()]).unwrap()),
            ..Policy::default()
        };
        let g = Guard::new(&p, Some(8079));
        let mut r = req(
            "GET",
            "/",
            &[
                ("host", "localhost"),
                ("origin", "https://dash.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        );
        assert!(
            g.check(&mut r).is_ok(),
            "an allowed origin may be cross-site"
        );
        for bad in ["dash.example", "ftp://x", "http://x/path"] {
            assert!(Policy::origins(&[bad.into()]).is_err(), "{bad}");
        }
    }

    fn with_secret() -> Guard {
        let p = Policy {
            path_secret: Some(PathSecret::new("s3cret-s3cret-s3cret", "test").unwrap()),
            ..Policy::default()
        };
        Guard::new(&p, Some(8079))
    }

    #[test]
    fn path_secret_is_required_and_stripped_byte_for_byte() {
        let g = with_secret();
        let run = |target: &str| {
            let mut r = req("GET", target, &[("host", "localhost")]);
            g.check(&mut r)
                .map(|()| r.uri().to_string())
                .map_err(|e| (e, r.uri().to_string()))
        };
        assert_eq!(
            run("/s3cret-s3cret-s3cret/a%2Fb?x=%2F").unwrap(),
            "/a%2Fb?x=%2F"
        );
        assert_eq!(run("/s3cret-s3cret-s3cret").unwrap(), "/");
        assert_eq!(run("/s3cret-s3cret-s3cret?q").unwrap(), "/?q");
        assert_eq!(run("/s3cret-s3cret-s3cret//x").unwrap(), "//x");
        for bad in [
            "/",
            "/x",
            "/s3cret-s3cret-s3cre",
            "/s3cret-s3cret-s3cretX/",
            "/S3CRET-S3CRET-S3CRET/",
            "/x/s3cret-s3cret-s3cret/",
            "/s3cret-s3cret-s3cret%2F",
        ] {
            let (e, logged) = run(bad).unwrap_err();
            assert_eq!(e, Refusal::PathSecret, "{bad}");
            assert!(!logged.contains("s3cret"), "{logged}");
        }
        // The page's own URL, sent as Referer, loses the secret too.
        let mut r = req(
            "GET",
            "/s3cret-s3cret-s3cret/x",
            &[
                ("host", "localhost"),
                ("referer", "http://localhost/s3cret-s3cret-s3cret/ui/#/apps"),
            ],
        );
        g.check(&mut r).unwrap();
        assert_eq!(r.headers()["referer"], "http://localhost/ui/#/apps");
        // A refusal for another reason still hides the target.
        let mut r = req(
            "GET",
            "/s3cret-s3cret-s3cret/x",
            &[("host", "evil.example")],
        );
        assert!(g.check(&mut r).is_err());
        assert!(!r.uri().to_string().contains("s3cret"));
        assert_eq!(g.client_prefix(), "/s3cret-s3cret-s3cret");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn given_secrets_are_validated_and_never_printed() {
        assert!(PathSecret::new("short", "k").is_err());
        assert!(PathSecret::new("has/slash/in/the/secret", "k").is_err());
        assert!(PathSecret::new("has%20percent-encoding", "k").is_err());
        assert!(PathSecret::new("................", "k").is_err());
        let s = PathSecret::generate().unwrap();
        assert_eq!(s.expose().len(), 64);
        assert_ne!(s, PathSecret::generate().unwrap());
        assert!(!format!("{s:?}").contains(s.expose()));
    }

    #[test]
    fn targets_and_methods() {
        let g = Guard::new(&Policy::default(), Some(8079));
        let mut r = req(
            "CONNECT",
            "master.example:443",
            &[("host", "master.example:443")],
        );
        assert_eq!(g.check(&mut r), Err(Refusal::Connect));
        assert_eq!(Refusal::Connect.status(), StatusCode::METHOD_NOT_ALLOWED);
        let mut r = req("GET", "http://evil.example/x", &[("host", "localhost")]);
        assert!(matches!(g.check(&mut r), Err(Refusal::AbsoluteTarget(_))));
        let mut r = req(
            "GET",
            "http://user:pa55word@localhost/x",
            &[("host", "localhost")],
        );
        let refused = g.check(&mut r).unwrap_err();
        assert!(!refused.to_string().contains("pa55word"), "{refused}");
        let mut r = req("GET", "http://localhost:8079/x?y", &[("host", "localhost")]);
        assert!(g.check(&mut r).is_ok());
        assert_eq!(r.uri(), "/x?y", "reduced to origin-form");
        let mut r = req("GET", "/", &[]);
        assert!(matches!(g.check(&mut r), Err(Refusal::Malformed(_))));
        let mut r = req("POST", "/", &[("host", "localhost")]);
        r.extensions_mut().insert(FramingConflict);
        assert!(
            matches!(g.check(&mut r), Err(Refusal::Malformed(m)) if m.contains("Content-Length"))
        );
        let mut r = Request::builder()
            .version(Version::HTTP_10)
            .uri("/")
            .body(())
            .unwrap();
        assert!(g.check(&mut r).is_ok(), "HTTP/1.0 may omit Host");
    }

    #[test]
    fn filters() {
        let p = Policy {
            read_only: true,
            deny_methods: Policy::methods(&["options".into()]).unwrap(),
            deny_paths: Some(
                DenyPaths::new(&["/mesos/.*".into(), "/secrets(/.*)?".into()]).unwrap(),
            ),
            ..Policy::default()
        };
        let g = Guard::new(&p, Some(8079));
        let run = |m: &str, t: &str, h: &[(&str, &str)]| {
            let mut all = vec![("host", "localhost")];
            all.extend_from_slice(h);
            g.check(&mut req(m, t, &all))
        };
        assert!(run("GET", "/x", &[]).is_ok());
        assert!(run("HEAD", "/x", &[]).is_ok());
        assert!(matches!(run("POST", "/x", &[]), Err(Refusal::ReadOnly(_))));
        assert!(matches!(
            run("DELETE", "/x", &[]),
            Err(Refusal::ReadOnly(_))
        ));
        assert!(matches!(
            run(
                "GET",
                "/ws",
                &[("connection", "upgrade"), ("upgrade", "websocket")]
            ),
            Err(Refusal::ReadOnly(_))
        ));
        assert!(matches!(
            run("OPTIONS", "/x", &[]),
            Err(Refusal::DeniedMethod(_))
        ));
        assert_eq!(
            run("GET", "/mesos/state", &[]),
            Err(Refusal::DeniedPath("/mesos/.*".into()))
        );
        assert!(run("GET", "/x/mesos/state", &[]).is_ok(), "anchored");
        assert!(run("GET", "/secretsx", &[]).is_ok(), "anchored at the end");
        for sneaky in [
            "/%6desos/state",
            "//mesos/state",
            "/x/../mesos/state",
            "/./secrets",
        ] {
            assert!(
                matches!(run("GET", sneaky, &[]), Err(Refusal::DeniedPath(_))),
                "{sneaky}"
            );
        }
        let err = DenyPaths::new(&["/ok".into(), "/bad(".into()])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("deny_paths"), "{err}");
        assert!(err.contains("\"/bad(\""), "{err}");
        assert!(Policy::methods(&["GE T".into()]).is_err());
    }

    #[test]
    fn paths_normalise_like_the_server_behind() {
        assert!(matches!(normalize_path("/a/b"), Cow::Borrowed("/a/b")));
        assert_eq!(normalize_path("/a//b/./c/../d/"), "/a/b/d/");
        assert_eq!(normalize_path("/%2e%2e/%2E/x%2Fy"), "/x/y");
        assert_eq!(normalize_path("/../.."), "/");
        assert_eq!(normalize_path("/a%"), "/a%");
        assert_eq!(normalize_path("/a%4"), "/a%4");
        assert_eq!(normalize_path("/a%zz//"), "/a%zz/");
    }

    #[test]
    fn refusals_say_how_to_allow_deliberately() {
        let cases = [
            (Refusal::Host("x".into()), "allowed_hosts"),
            (Refusal::Origin("x".into()), "allowed_origins"),
            (Refusal::CrossSite, "allowed_origins"),
            (Refusal::AbsoluteTarget("x".into()), "allowed_hosts"),
            (Refusal::ReadOnly("POST".into()), "read_only"),
            (Refusal::DeniedMethod("POST".into()), "deny_methods"),
            (Refusal::DeniedPath("r".into()), "deny_paths"),
            (Refusal::PathSecret, "base URL"),
        ];
        for (r, needle) in cases {
            let line = r.to_string();
            assert!(line.contains(needle), "{line}");
            assert!(!line.contains('\n'));
        }
    }
}
