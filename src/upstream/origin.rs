//! The master's origin (scheme, host, port, path prefix), precomputed once per
//! snapshot, and the rewrite of `Location` headers that point at it (RFC 9110 §10.2.2).

use http::HeaderValue;
use http::uri::{Authority, Scheme};

/// The master's address, precomputed once per cluster snapshot, for rewriting
/// `Location` headers that point at it.
#[derive(Debug, Clone)]
pub struct MasterOrigin {
    scheme: Scheme,
    host: String,
    port: u16,
    /// Path prefix of `dcos_url`, without a trailing slash (often empty).
    prefix: String,
}

impl MasterOrigin {
    /// Describe the master at `scheme://authority<prefix>`.
    pub fn new(scheme: Scheme, authority: &Authority, prefix: &str) -> Self {
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        Self {
            port: authority.port_u16().unwrap_or(default_port),
            host: authority.host().to_ascii_lowercase(),
            scheme,
            prefix: prefix.to_owned(),
        }
    }

    /// Rewrite a `Location` value that points at the master so that it points at the
    /// proxy as the client addressed it (`client_host`, the request's `Host`), keeping
    /// path and query. Marathon's non-leader redirect of `/v2/events` is the case that
    /// matters. Other locations (other hosts, unparsable values) come back as `None`:
    /// leave them alone. RFC 9110 §10.2.2.
    ///
    /// Clients that put `client_prefix` (the path secret, `/<secret>`; else empty) before
    /// every path get it in the rewritten location too, so that following the redirect
    /// passes the guard; an absolute-path location then needs rewriting as well.
    pub fn rewrite_location(
        &self,
        location: &HeaderValue,
        client_host: &str,
        client_prefix: &str,
    ) -> Option<HeaderValue> {
        let text = location.to_str().ok()?;
        let rest = if text.starts_with('/') && !text.starts_with("//") {
            // An absolute path on the master: only its prefix needs to go.
            if self.prefix.is_empty() && client_prefix.is_empty() {
                return None;
            }
            text
        } else {
            let uri: http::Uri = text.parse().ok()?;
            let (scheme, authority) = (uri.scheme()?, uri.authority()?);
            let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
            let same = *scheme == self.scheme
                && authority.host().eq_ignore_ascii_case(&self.host)
                && authority.port_u16().unwrap_or(default_port) == self.port;
            if !same {
                return None;
            }
            // Everything after the authority, byte for byte.
            let start = text.find(authority.as_str())? + authority.as_str().len();
            let rest = &text[start..];
            if rest.is_empty() { "/" } else { rest }
        };
        let path = match rest.strip_prefix(self.prefix.as_str()) {
            Some(p) if p.is_empty() || p.starts_with(['/', '?', '#']) => p,
            _ if self.prefix.is_empty() => rest,
            // Points at the master but outside our prefix: not ours to map.
            _ => return None,
        };
        let path = if path.is_empty() || !path.starts_with('/') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let mut value =
            HeaderValue::from_str(&format!("http://{client_host}{client_prefix}{path}")).ok()?;
        value.set_sensitive(!client_prefix.is_empty());
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str, prefix: &str) -> MasterOrigin {
        let uri: http::Uri = url.parse().unwrap();
        MasterOrigin::new(
            uri.scheme().unwrap().clone(),
            uri.authority().unwrap(),
            prefix,
        )
    }

    fn loc(o: &MasterOrigin, value: &str) -> Option<String> {
        o.rewrite_location(&HeaderValue::from_str(value).unwrap(), "127.0.0.1:8079", "")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn location_pointing_at_master_is_rewritten() {
        let o = origin("https://Master.example:443", "");
        assert_eq!(
            loc(
                &o,
                "https://master.example/service/marathon/v2/events?a=%2F"
            )
            .as_deref(),
            Some("http://127.0.0.1:8079/service/marathon/v2/events?a=%2F")
        );
        assert_eq!(
            loc(&o, "https://master.example").as_deref(),
            Some("http://127.0.0.1:8079/")
        );
        assert_eq!(loc(&o, "https://other.example/x"), None);
        assert_eq!(loc(&o, "http://master.example/x"), None, "scheme differs");
        assert_eq!(
            loc(&o, "https://master.example:8443/x"),
            None,
            "port differs"
        );
        assert_eq!(loc(&o, "/relative/path"), None, "already relative");
        assert_eq!(loc(&o, "not a url at all"), None);
    }

    #[test]
    fn location_gets_the_clients_path_secret() {
        let o = origin("https://master.example", "");
        let at = |v: &str| {
            o.rewrite_location(&HeaderValue::from_str(v).unwrap(), "localhost:8079", "/s3")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            at("https://master.example/v2/events?a=%2F").as_deref(),
            Some("http://localhost:8079/s3/v2/events?a=%2F")
        );
        assert_eq!(
            at("/v2/events").as_deref(),
            Some("http://localhost:8079/s3/v2/events")
        );
        assert_eq!(at("https://other.example/x"), None);
        assert_eq!(at("relative"), None);
    }

    #[test]
    fn location_under_a_prefix_loses_the_prefix() {
        let o = origin("http://m.example:8080", "/dcos");
        assert_eq!(
            loc(&o, "http://m.example:8080/dcos/x?y").as_deref(),
            Some("http://127.0.0.1:8079/x?y")
        );
        assert_eq!(
            loc(&o, "/dcos/x").as_deref(),
            Some("http://127.0.0.1:8079/x")
        );
        assert_eq!(
            loc(&o, "http://m.example:8080/dcos").as_deref(),
            Some("http://127.0.0.1:8079/")
        );
        assert_eq!(loc(&o, "http://m.example:8080/dcosx"), None);
        assert_eq!(loc(&o, "http://m.example:8080/elsewhere"), None);
    }
}
