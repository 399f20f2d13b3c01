//! The door: which requests may use the credential-holding port at all.
//!
//! Every check runs here, once per request and before anything is forwarded: the
//! request framing (a head with both `Content-Length` and `Transfer-Encoding`, found by
//! [`crate::framing`], is refused), the method (`CONNECT` is refused, in any letter
//! case), the request target (an absolute-form target never picks the destination; the
//! asterisk form `*` is for `OPTIONS` only; a path that holds a control character once
//! percent-decoded is refused), `Host` against an anchored allow-list (DNS rebinding),
//! `Origin` and `Sec-Fetch-Site` (web pages in the user's browser), the optional path
//! secret (stripped before forwarding), and the operator's filters (`read_only`,
//! `deny_methods`, `deny_paths`). A refused request gets a one-line answer saying what
//! was refused and which setting would allow it deliberately; the master never sees it.
//! An admitted request then loses what the master must not see ([`scrub`]): the path
//! secret wherever else it appears, the client's forwarding headers and its cookies;
//! and it gains this proxy's loop marker, a `Via` entry with a random ID
//! ([`LoopMarker`]). A request that arrives already carrying the marker has come round
//! to this proxy again (a master URL that is an alias of the proxy's own address) and
//! gets 508 Loop Detected instead of going round once more.
//!
//! Everything is compiled once at startup ([`Policy`], then [`Guard`]); a check does no
//! I/O, takes no lock and allocates only with a path secret (the stripped target, and a
//! header or target that repeats the secret), to normalise a path that holds `%`, `//`,
//! `;` or dot segments when `deny_paths` is set, to list `X-Forwarded-*` names to
//! remove, and to word a refusal.

mod marker;
mod path;
mod policy;
mod refusal;
mod scrub;

use std::borrow::Cow;

use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, HeaderName, Method, Request, Version, header};

pub use self::marker::LoopMarker;
pub use self::path::{has_control_character, normalize_path, servlet_path};
use self::policy::split_host_port;
pub use self::policy::{
    DEFAULT_ALLOWED_HOSTS, DEFAULT_ALLOWED_UPGRADES, DEFAULT_PASS_COOKIES,
    DEFAULT_PASS_FORWARDING_HEADERS, DenyPaths, HostPattern, MIN_PATH_SECRET_LEN, PathSecret,
    Policy, PolicyError, READ_ONLY_METHODS,
};
pub use self::refusal::Refusal;
use self::refusal::{quoted, quoted_value};
use crate::census::{Census, Field};
use crate::framing::{FramingConflict, OversizedHead};

/// The Fetch Metadata header that says where a browser request came from (a ready
/// name: looking it up by a string would parse and check the string each time).
static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The last `Host` value admitted on one client connection (a connection's requests
/// nearly always carry the same one): those bytes again need no parsing or matching.
/// Kept inline, not as a `HeaderValue`, which would share (and so keep alive) the
/// connection's read buffer. Values longer than [`HostMemo::CAPACITY`] are not kept.
#[derive(Debug, Clone)]
pub struct HostMemo {
    len: u8,
    bytes: [u8; HostMemo::CAPACITY],
}

impl Default for HostMemo {
    fn default() -> Self {
        Self {
            len: 0,
            bytes: [0; Self::CAPACITY],
        }
    }
}

impl HostMemo {
    /// The longest value kept, in bytes.
    const CAPACITY: usize = 64;

    fn holds(&self, value: &[u8]) -> bool {
        self.len != 0 && self.bytes[..usize::from(self.len)] == *value
    }

    fn keep(&mut self, value: &[u8]) {
        // CAPACITY fits in `len`'s u8.
        if (1..=Self::CAPACITY).contains(&value.len()) {
            self.bytes[..value.len()].copy_from_slice(value);
            self.len = value.len() as u8;
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
    pass_forwarding_headers: bool,
    pass_cookies: bool,
    allowed_upgrades: Vec<String>,
    marker: LoopMarker,
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
            pass_forwarding_headers: policy.pass_forwarding_headers,
            pass_cookies: policy.pass_cookies,
            allowed_upgrades: policy.allowed_upgrades.clone(),
            marker: LoopMarker::new(),
        }
    }

    /// The `Via` entry this proxy adds to every request it admits.
    pub fn loop_marker(&self) -> &LoopMarker {
        &self.marker
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
        self.check_remembering(req, &mut HostMemo::default())
    }

    /// [`Self::check`] for one connection's requests: `memo` keeps the last `Host` value
    /// admitted on the connection, and the same bytes again are admitted without being
    /// parsed (the verdict on a `Host` value depends on nothing else).
    pub fn check_remembering<B>(
        &self,
        req: &mut Request<B>,
        memo: &mut HostMemo,
    ) -> Result<(), Refusal> {
        let result = self.check_inner(req, memo);
        if result.is_err() && self.secret.is_some() {
            *req.uri_mut() = Uri::from_static("/-redacted-");
        }
        result
    }

    fn check_inner<B>(&self, req: &mut Request<B>, memo: &mut HostMemo) -> Result<(), Refusal> {
        if req.extensions().get::<OversizedHead>().is_some() {
            return Err(Refusal::HeadTooLarge);
        }
        if req.extensions().get::<FramingConflict>().is_some() {
            return Err(Refusal::Malformed(
                "both Content-Length and Transfer-Encoding (a request-smuggling shape, \
                 RFC 9112 §6.3); send one of them",
            ));
        }
        // Which of the fields looked at below are present, in one pass over the names:
        // a lookup is made only for a field that is there.
        let census = Census::of(req.headers());
        // Before anything else: a request of our own that came round again is never
        // forwarded, whatever else it holds.
        if census.has(Field::Via) && self.marker.is_in(req.headers()) {
            return Err(Refusal::Loop);
        }
        let method = req.method();
        // `http::Method` compares exactly: `connect` is an extension method to it.
        if method
            .as_str()
            .eq_ignore_ascii_case(Method::CONNECT.as_str())
        {
            return Err(Refusal::Connect);
        }
        // RFC 9112 §3.2.4: the asterisk form is only for a server-wide OPTIONS.
        if req.uri() == "*" && method != Method::OPTIONS {
            return Err(Refusal::Malformed(
                "the request target `*` is only for OPTIONS (RFC 9112 §3.2.4); send `GET /path`",
            ));
        }
        // Before any rule: a rule written for printable paths must not be asked about
        // `\n` or NUL, and no server behind the proxy should see them.
        if has_control_character(req.uri().path()) {
            return Err(Refusal::Malformed(
                "the path holds a control character (%00-%1F or %7F once decoded)",
            ));
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

        self.check_host(req.headers(), census, req.version(), memo)?;
        self.check_origin(req.headers(), census)?;

        let method = req.method();
        if self.read_only && (!READ_ONLY_METHODS.contains(method) || census.has(Field::Upgrade)) {
            return Err(Refusal::ReadOnly(method.to_string()));
        }
        self.check_upgrade(req.headers(), census)?;
        // Case-insensitively: `delete` is an extension method to `http::Method`, and a
        // server behind the proxy may still treat it as DELETE.
        let denied = self
            .deny_methods
            .iter()
            .any(|m| m.as_str().eq_ignore_ascii_case(method.as_str()));
        if denied {
            return Err(Refusal::DeniedMethod(method.to_string()));
        }

        let stripped = self.strip_secret(req.uri())?;
        if let Some(deny) = &self.deny_paths {
            let path = stripped
                .as_ref()
                .map_or(req.uri().path(), PathAndQuery::path);
            // As sent, as nginx routes it, and as a servlet container routes it.
            let hit = deny
                .matching(path)
                .or_else(|| match normalize_path(path) {
                    Cow::Owned(n) => deny.matching(&n),
                    Cow::Borrowed(_) => None,
                })
                .or_else(|| match servlet_path(path) {
                    Cow::Owned(n) => deny.matching(&n),
                    Cow::Borrowed(_) => None,
                });
            if let Some(rule) = hit {
                return Err(Refusal::DeniedPath(rule.to_owned()));
            }
        }
        if let Some(secret) = &self.secret {
            scrub::scrub_headers(req.headers_mut(), secret.expose().as_bytes());
        }
        // (Scrubbing changes values, not names: the census still holds.)
        if !self.pass_forwarding_headers && census.has(Field::Forwarding) {
            scrub::strip_forwarding(req.headers_mut());
        }
        if !self.pass_cookies && census.has(Field::Cookie) {
            scrub::strip_cookies(req.headers_mut());
        }
        self.marker.append_to(req.headers_mut());
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

    /// RFC 9110 §7.8: `Upgrade` lists protocols (`name[/version]`, comma-separated);
    /// in a request that asks to switch (`Connection: upgrade`), every one must be
    /// allowed. A tunnel's content is never filtered, so this is the only say the proxy
    /// has over what a switched connection carries. (Without the `upgrade` option,
    /// `Upgrade` is a plain hop-by-hop field, removed before forwarding.)
    fn check_upgrade(&self, headers: &HeaderMap, census: Census) -> Result<(), Refusal> {
        if !census.has(Field::Connection) {
            return Ok(());
        }
        let asks = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|opt| opt.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        if !asks {
            return Ok(());
        }
        for value in headers.get_all(header::UPGRADE) {
            let Ok(text) = value.to_str() else {
                return Err(Refusal::Upgrade(quoted_value(value)));
            };
            for proto in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let name = proto.split('/').next().unwrap_or_default().trim();
                let allowed = self
                    .allowed_upgrades
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(name));
                if !allowed {
                    return Err(Refusal::Upgrade(quoted(proto)));
                }
            }
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str, port: Option<u16>) -> bool {
        self.hosts.iter().any(|p| p.matches(host, port))
    }

    fn check_host(
        &self,
        headers: &HeaderMap,
        census: Census,
        version: Version,
        memo: &mut HostMemo,
    ) -> Result<(), Refusal> {
        let mut all = census
            .has(Field::Host)
            .then(|| headers.get_all(header::HOST).iter())
            .into_iter()
            .flatten();
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
        if memo.holds(value.as_bytes()) {
            return Ok(());
        }
        let allowed = value
            .to_str()
            .ok()
            .and_then(split_host_port)
            .is_some_and(|(h, p)| self.host_allowed(h, p));
        if allowed {
            memo.keep(value.as_bytes());
            Ok(())
        } else {
            Err(Refusal::Host(quoted_value(value)))
        }
    }

    /// RFC 6454 §7: browsers send `Origin` with cross-origin requests, every POST and
    /// every WebSocket handshake (RFC 6455 §4.1); its serialisation (`scheme://host[:port]`,
    /// default port omitted, or `null`) is compared ASCII case-insensitively.
    fn check_origin(&self, headers: &HeaderMap, census: Census) -> Result<(), Refusal> {
        let mut all = census
            .has(Field::Origin)
            .then(|| headers.get_all(header::ORIGIN).iter())
            .into_iter()
            .flatten();
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
        // Fetch metadata (W3C): a navigation or `<img>` from another page carries no
        // Origin, but browsers say where it came from. `same-site` is not enough: every
        // other localhost port and every `*.localhost` name is the same site. Only the
        // proxy's own pages (`same-origin`) and the user's own doing (`none`: the
        // address bar, a bookmark) pass; tools send no such header.
        if origin_allowed || !census.has(Field::SecFetchSite) {
            return Ok(());
        }
        for value in headers.get_all(&SEC_FETCH_SITE) {
            let b = value.as_bytes();
            if !(b.eq_ignore_ascii_case(b"same-origin") || b.eq_ignore_ascii_case(b"none")) {
                return Err(Refusal::CrossSite(quoted_value(value)));
            }
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
        let mut target = match uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        // A client that repeats the secret (`/<secret>/<secret>/x`, `?next=/<secret>/`)
        // must not carry it to the master, nor into a log line of the target.
        if let Some(clean) = scrub::without_secret(target.as_bytes(), secret.expose().as_bytes()) {
            target = String::from_utf8_lossy(&clean).into_owned();
        }
        if !target.starts_with('/') {
            target.insert(0, '/');
        }
        // The pieces came from a valid target, so they form one again.
        PathAndQuery::try_from(target)
            .map(Some)
            .map_err(|_| Refusal::PathSecret)
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

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
    fn a_connections_remembered_host_gives_the_same_verdicts() {
        let g = Guard::new(&Policy::default(), Some(8079));
        let mut memo = HostMemo::default();
        let mut check = |headers: &[(&str, &str)]| {
            g.check_remembering(&mut req("GET", "/", headers), &mut memo)
                .is_ok()
        };
        // Admitted, then remembered: the same bytes again, then other hosts, good and
        // bad, each judged as without a memo.
        for (host, ok) in [
            ("127.0.0.1:8079", true),
            ("127.0.0.1:8079", true),
            ("evil.example", false),
            ("127.0.0.1:8079", true),
            ("localhost.evil.example", false),
            ("LOCALHOST", true),
            ("localhost", true),
            ("127.0.0.1:8079.evil", false),
            ("127.0.0.1:807", true),
            ("127.0.0.1:8079", true),
        ] {
            assert_eq!(check(&[("host", host)]), ok, "{host}");
            assert_eq!(host_ok(&g, host), ok, "{host} without a memo");
        }
        // The remembered value does not excuse a second Host field, or a missing one.
        assert!(check(&[("host", "127.0.0.1:8079")]));
        assert!(!check(&[
            ("host", "127.0.0.1:8079"),
            ("host", "127.0.0.1:8079")
        ]));
        assert!(!check(&[
            ("host", "127.0.0.1:8079"),
            ("host", "evil.example")
        ]));
        assert!(!check(&[]));
        // Only admitted values are kept, and only short ones.
        let mut memo = HostMemo::default();
        assert!(!memo.holds(b"127.0.0.1:8079"));
        let long = format!("{}.localhost", "a".repeat(60));
        assert!(
            g.check_remembering(&mut req("GET", "/", &[("host", &long)]), &mut memo)
                .is_ok()
        );
        assert!(
            !memo.holds(long.as_bytes()),
            "longer than the memo: not kept"
        );
        let _ = g.check_remembering(&mut req("GET", "/", &[("host", "evil.example")]), &mut memo);
        assert!(!memo.holds(b"evil.example"), "a refused host is never kept");
        assert!(
            g.check_remembering(&mut req("GET", "/", &[("host", "[::1]:1")]), &mut memo)
                .is_ok()
        );
        assert!(memo.holds(b"[::1]:1"));
        assert!(
            !memo.holds(b"[::1]:"),
            "a prefix of the kept value is not it"
        );
        assert!(!memo.holds(b""));
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
            Err(Refusal::CrossSite("cross-site".into()))
        );
        assert_eq!(
            ok(&[("sec-fetch-site", "same-site")]),
            Err(Refusal::CrossSite("same-site".into()))
        );
        assert!(ok(&[("sec-fetch-site", "none")]).is_ok());

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

    /// Each field the guard's rules read, alone beside `Host` and in any letter case, is
    /// seen: the census that spares the lookups of absent fields must find it.
    #[test]
    fn each_field_the_rules_read_is_seen_alone_in_any_case() {
        let g = Guard::new(&Policy::default(), Some(8079));
        let run = |h: &[(&str, &str)]| {
            let mut all = vec![("HOST", "localhost:8079")];
            all.extend_from_slice(h);
            let mut r = req("GET", "/", &all);
            g.check(&mut r).map(|()| r)
        };
        for name in [
            "Forwarded",
            "X-Real-IP",
            "x-forwarded-for",
            "X-Forwarded-Host",
            "X-FORWARDED-PROTO",
            "X-Forwarded-",
            "Cookie",
            "COOKIE",
        ] {
            let r = run(&[(name, "1")]).unwrap();
            let left: Vec<_> = r.headers().keys().map(HeaderName::as_str).collect();
            assert_eq!(left, ["host", "via"], "{name}");
        }
        assert!(matches!(
            run(&[("ORIGIN", "http://evil.example")]),
            Err(Refusal::Origin(_))
        ));
        assert!(matches!(
            run(&[("Sec-Fetch-Site", "cross-site")]),
            Err(Refusal::CrossSite(_))
        ));
        assert!(matches!(
            run(&[("CONNECTION", "Upgrade"), ("UPGRADE", "h2c")]),
            Err(Refusal::Upgrade(_))
        ));
        let marker = g.loop_marker().entry().to_str().unwrap().to_owned();
        assert_eq!(run(&[("VIA", &marker)]).err(), Some(Refusal::Loop));
        assert!(matches!(
            g.check(&mut req("GET", "/", &[("Accept", "*/*")])),
            Err(Refusal::Malformed(_))
        ));
        let read_only = Guard::new(
            &Policy {
                read_only: true,
                ..Policy::default()
            },
            Some(8079),
        );
        let mut r = req(
            "GET",
            "/",
            &[("host", "localhost"), ("Upgrade", "websocket")],
        );
        assert!(matches!(read_only.check(&mut r), Err(Refusal::ReadOnly(_))));
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
    fn refusals_say_how_to_allow_deliberately() {
        let cases = [
            (Refusal::Host("x".into()), "allowed_hosts"),
            (Refusal::Origin("x".into()), "allowed_origins"),
            (Refusal::CrossSite("same-site".into()), "allowed_origins"),
            (Refusal::AbsoluteTarget("x".into()), "allowed_hosts"),
            (Refusal::ReadOnly("POST".into()), "read_only"),
            (Refusal::DeniedMethod("POST".into()), "deny_methods"),
            (Refusal::DeniedPath("r".into()), "deny_paths"),
            (Refusal::Upgrade("h2c".into()), "allowed_upgrades"),
            (Refusal::HeadTooLarge, "max_header_bytes"),
            (Refusal::PathSecret, "base URL"),
        ];
        for (r, needle) in cases {
            let line = r.to_string();
            assert!(line.contains(needle), "{line}");
            assert!(!line.contains('\n'));
        }
    }
}
