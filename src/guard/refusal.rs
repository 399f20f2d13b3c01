//! Why a request was refused ([`Refusal`]), and the one-line plain-text answer each
//! refusal gets: what was refused and which setting would allow it deliberately. A
//! client-sent value is quoted at most [`MAX_QUOTED`] characters long.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// The most characters of a client-sent value (`Host`, `Origin`) quoted in a refusal.
const MAX_QUOTED: usize = 100;

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
    /// `Sec-Fetch-Site` other than `same-origin` or `none` (the value is given) without
    /// an allowed `Origin`.
    CrossSite(String),
    /// The path secret is missing or wrong.
    PathSecret,
    /// `read_only` and a method other than GET, HEAD, OPTIONS (or an upgrade).
    ReadOnly(String),
    /// The method is in `deny_methods`.
    DeniedMethod(String),
    /// The path matches a `deny_paths` rule (the rule is given).
    DeniedPath(String),
    /// The request head is larger than `max_header_bytes`.
    HeadTooLarge,
    /// An `Upgrade` to a protocol outside `allowed_upgrades` (the protocol is given).
    Upgrade(String),
    /// The request carries this proxy's own loop marker: it has come round again.
    Loop,
}

impl Refusal {
    /// The status code of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Loop => StatusCode::LOOP_DETECTED,
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
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
        if *self == Self::HeadTooLarge {
            // The body (if any) was never read: this connection ends with the answer.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
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
            Self::CrossSite(site) => write!(
                f,
                "request from another page refused (Sec-Fetch-Site: {site}; only same-origin \
                 and none pass): a web page from another site, another localhost port or a \
                 *.localhost name may not use your DC/OS login; to allow a page \
                 deliberately, add its origin to allowed_origins (--allowed-origins)"
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
            Self::HeadTooLarge => f.write_str(
                "request head too large: the request line and headers together exceed \
                 max_header_bytes (--max-header-bytes); send smaller headers (e.g. fewer \
                 cookies), or raise the limit",
            ),
            Self::Upgrade(proto) => write!(
                f,
                "upgrade to {proto:?} refused by the allowed_upgrades setting (default: \
                 websocket only): the content of a switched connection is not filtered; add \
                 the protocol to allowed_upgrades (--allowed-upgrades) to allow it \
                 deliberately"
            ),
            Self::Loop => f.write_str(
                "loop detected: this request has already passed through this proxy (its Via \
                 marker came back), so the master URL leads back to the proxy itself, e.g. \
                 through an alias of its address; point core.dcos_url (or --upstream) at the \
                 real DC/OS master",
            ),
            Self::DeniedPath(rule) => write!(
                f,
                "path refused by the deny_paths rule {rule:?} (--deny-path); remove the rule \
                 to allow it"
            ),
        }
    }
}

pub(super) fn quoted(text: &str) -> String {
    text.chars().take(MAX_QUOTED).collect()
}

pub(super) fn quoted_value(v: &HeaderValue) -> String {
    quoted(&String::from_utf8_lossy(v.as_bytes()))
}
