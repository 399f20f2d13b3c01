//! Proxy errors and the short, actionable responses they become.
//!
//! Classified by where they came from, as pingora does: the master unreachable, a TLS
//! failure or a reset is **502**; no response headers in time is **504**; a request the
//! proxy cannot forward is **400**. The body is one line of plain text naming the
//! upstream URL, the cause and, where there is one, the fix. With no cluster set up yet,
//! every request gets **503** saying how to set one up. A `<name>.localhost` host that
//! names no cluster gets **404** listing the clusters there are.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use rustls::CertificateError;

/// A request the proxy could not complete.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The master could not be reached or broke the exchange.
    #[error("cannot reach the DC/OS master at {url}: {cause}")]
    BadGateway {
        /// The upstream URL.
        url: String,
        /// What went wrong, with the fix where known.
        cause: String,
    },
    /// The master sent no response headers in time.
    #[error(
        "the DC/OS master at {url} sent no response within {}s \
         (upstream.response_timeout); is it overloaded?",
        .after.as_secs_f64()
    )]
    GatewayTimeout {
        /// The upstream URL.
        url: String,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The client's own request body failed (it hung up or sent less than it promised)
    /// while it was being forwarded: not the master's fault.
    #[error("the request body ended early ({cause}); the request to the master was abandoned")]
    ClientBody {
        /// What went wrong with the body.
        cause: String,
    },
    /// The request target could not be mapped onto the master.
    #[error("cannot forward this request target: {0}")]
    BadRequest(String),
    /// The client did not send its (small, buffered) request body in time.
    #[error("the request body did not arrive within {}s; send it, or a shorter Content-Length", .0.as_secs_f64())]
    BodyTimeout(Duration),
    /// The client's (streamed) request body stalled or trickled; the request to the
    /// master was abandoned.
    #[error("{0}; the request to the master was abandoned")]
    BodyCut(crate::upstream::BodyCut),
    /// Every tunnel slot is taken (`max_tunnels`).
    #[error(
        "too many open tunnels (WebSocket connections): {0} are open, the max_tunnels \
         limit (--max-tunnels); close some, or raise the limit"
    )]
    TooManyTunnels(usize),
    /// A `dcos task exec` input stream found every tunnel slot taken (`max_tunnels`).
    #[error(
        "too many open input streams and tunnels (dcos task exec, WebSocket connections): \
         {0} are open, the max_tunnels limit (--max-tunnels); close some, or raise the limit"
    )]
    TooManyInputStreams(usize),
    /// No DC/OS cluster is set up yet; the message says how to set one up.
    #[error("no DC/OS cluster to forward to yet: {0}")]
    Unconfigured(std::sync::Arc<str>),
    /// `<name>.localhost` names no cluster; the message lists the clusters there are.
    #[error("{0}")]
    UnknownCluster(String),
}

impl ProxyError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadRequest(_) | Self::ClientBody { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTimeout(_) | Self::BodyCut(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unconfigured(_) | Self::TooManyTunnels(_) | Self::TooManyInputStreams(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::UnknownCluster(_) => StatusCode::NOT_FOUND,
        }
    }

    /// What kind of failure this is, for the `errors_total` metric.
    pub fn kind(&self) -> crate::metrics::ErrorKind {
        use crate::metrics::ErrorKind;
        match self {
            Self::BadGateway { .. } => ErrorKind::Upstream,
            Self::GatewayTimeout { .. } => ErrorKind::Timeout,
            Self::BadRequest(_)
            | Self::ClientBody { .. }
            | Self::BodyTimeout(_)
            | Self::BodyCut(_)
            | Self::TooManyTunnels(_)
            | Self::TooManyInputStreams(_)
            | Self::UnknownCluster(_) => ErrorKind::Client,
            Self::Unconfigured(_) => ErrorKind::Unconfigured,
        }
    }

    /// The error for a failed exchange with the master, with the cause worked out from
    /// `err`: a 400 when the client's own request body broke, else a 502.
    pub fn upstream(url: &str, err: &(dyn StdError + 'static)) -> Self {
        if let Some(cut) = crate::upstream::idle::body_cut(err) {
            return Self::BodyCut(cut);
        }
        if let Some(cause) = client_body_failure(err) {
            return Self::ClientBody { cause };
        }
        Self::BadGateway {
            url: url.to_owned(),
            cause: describe(err),
        }
    }

    /// The response sent to the client.
    pub fn to_response(&self) -> Response<Bytes> {
        let mut resp = Response::new(Bytes::from(format!("dcos-token-proxy: {self}\n")));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // For the metrics layer: a local answer, and why.
        resp.extensions_mut().insert(self.kind());
        resp
    }
}

/// hyper reports an error from the body it was sending as a "user" error: the body is
/// the client's, so the client, not the master, broke the exchange.
fn client_body_failure(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_user() {
                let cause = inner(e).map_or_else(|| h.to_string(), |c| c.to_string());
                return Some(cause);
            }
        }
        next = inner(e);
    }
    None
}

/// A short cause for an upstream failure, found by walking the error chain (through
/// `io::Error` wrappers, which hide their inner error from `source()`).
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    let mut innermost = err.to_string();
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return describe_tls(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => {
                    return "connection refused: is the master up, and is core.dcos_url right?"
                        .into();
                }
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    return "the connection was reset by the master".into();
                }
                TimedOut => return "connection timed out (upstream.connect_timeout)".into(),
                _ => {}
            }
        }
        if let Some(lean) = e.downcast_ref::<crate::upstream::LeanError>() {
            use crate::upstream::LeanError::*;
            match lean {
                Closed => return "the master closed the connection before answering".into(),
                Malformed(_) | IncompleteBody => return lean.to_string(),
                Io(_) => {}
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return "the master closed the connection before answering".into();
            }
            if h.is_parse() {
                return "the master sent a malformed HTTP response".into();
            }
        }
        innermost = e.to_string();
        next = inner(e);
    }
    if innermost.contains("dns error") || innermost.contains("failed to lookup address") {
        return format!("cannot resolve the master's host name ({innermost})");
    }
    innermost
}

/// The next error in the chain. `io::Error::source` skips the error it wraps, so an
/// `io::Error` (hyper-rustls wraps tokio-rustls' `io::Error` in another) is opened with
/// `get_ref` instead.
fn inner<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    match e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        Some(wrapped) => Some(wrapped as &(dyn StdError + 'static)),
        None => e.source(),
    }
}

fn describe_tls(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "certificate not trusted: set core.ssl_verify to the cluster CA (dcos_ca.crt)"
                    .into()
            }
            CertificateError::NotValidForName => crate::upstream::tls::name_mismatch(None, &[]),
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => crate::upstream::tls::name_mismatch(Some(expected), presented),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the master's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the master's certificate is not valid yet: check this machine's clock".into()
            }
            CertificateError::Revoked => "the master's certificate has been revoked".into(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "the master's certificate is not meant for a TLS server (extended key usage)".into()
            }
            CertificateError::Other(other)
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                CA_AS_MASTER_CERT.into()
            }
            CertificateError::Other(other) => {
                format!(
                    "the master's certificate was refused: {}",
                    plain_words(&format!("{:?}", other.0))
                )
            }
            other => format!(
                "the master's certificate was refused: {}",
                plain_words(&format!("{other:?}"))
            ),
        },
        other => format!("TLS handshake failed: {other}"),
    }
}

/// What `CaUsedAsEndEntity` means, for a user who made a certificate with
/// `openssl req -x509` and named it in `ssl_verify`.
pub const CA_AS_MASTER_CERT: &str = "this certificate is a CA, not the master's certificate; \
    point ssl_verify at the CA that signed the master's certificate, or regenerate it as a leaf";

/// A library's Debug name (`UnsupportedSignatureAlgorithm`, `Other(OtherError(Foo))`) in
/// plain lowercase words (`unsupported signature algorithm`), for the variants no
/// sentence is written for: no braces, no type names of wrappers.
fn plain_words(debug: &str) -> String {
    let mut name = debug;
    // Open wrappers: `Other(OtherError(Inner))` -> `Inner`.
    while let Some((head, rest)) = name.split_once('(') {
        if matches!(head, "Other" | "OtherError" | "Some") {
            name = rest.trim_end_matches(')');
        } else {
            name = head;
            break;
        }
    }
    let name = name.split([' ', '{']).next().unwrap_or_default();
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        }
    }
    if out.is_empty() {
        "no reason given".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_causes_say_what_to_do() {
        let e = std::io::Error::other(std::io::Error::other(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )));
        assert_eq!(
            describe(&e),
            "certificate not trusted: set core.ssl_verify to the cluster CA (dcos_ca.crt)"
        );
        let e = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(describe(&e).contains("host name"));
    }

    #[test]
    fn a_ca_used_as_the_masters_certificate_is_explained() {
        let e = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(webpki::Error::CaUsedAsEndEntity),
        )));
        assert_eq!(describe(&e), CA_AS_MASTER_CERT);
        assert!(!describe(&e).contains("CaUsedAsEndEntity"));
    }

    #[test]
    fn other_certificate_errors_read_as_words() {
        let e = rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
        assert_eq!(
            describe(&e),
            "the master's certificate was refused: bad encoding"
        );
        let e = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(webpki::Error::UnknownIssuer),
        )));
        assert_eq!(
            describe(&e),
            "the master's certificate was refused: unknown issuer"
        );
    }

    #[test]
    fn io_causes() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(describe(&e).starts_with("connection refused"));
    }

    #[test]
    fn responses_carry_status_and_url() {
        let e = ProxyError::GatewayTimeout {
            url: "https://m.example".into(),
            after: Duration::from_millis(1500),
        };
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(e.to_string().contains("https://m.example"));
        assert!(e.to_string().contains("1.5s"));
    }
}
