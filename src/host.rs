//! Host classification for loopback and self-loop checks: what the host part of a URL
//! names (`localhost`, an IP literal, or another name), and whether a master URL would
//! reach this proxy's own listener.

use std::net::{IpAddr, SocketAddr};

/// What the host part of a URL names, as far as loopback checks care.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HostKind {
    /// `localhost`: resolves to loopback.
    Localhost,
    /// An IP literal (IPv6 without its brackets).
    Ip(IpAddr),
    /// Any other name.
    Name,
}

impl HostKind {
    pub(crate) fn of(url: &http::Uri) -> Option<Self> {
        let host = url.host()?.trim_start_matches('[').trim_end_matches(']');
        Some(if host.eq_ignore_ascii_case("localhost") {
            Self::Localhost
        } else if let Ok(ip) = host.parse() {
            Self::Ip(ip)
        } else {
            Self::Name
        })
    }

    pub(crate) fn is_loopback(&self) -> bool {
        match self {
            Self::Localhost => true,
            Self::Ip(ip) => ip.is_loopback(),
            Self::Name => false,
        }
    }
}

/// Whether `url` would reach the listener bound at `local`.
pub(crate) fn points_at(url: &http::Uri, local: SocketAddr) -> bool {
    let default_port = if url.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    if url.port_u16().unwrap_or(default_port) != local.port() {
        return false;
    }
    let any = local.ip().is_unspecified();
    match HostKind::of(url) {
        Some(HostKind::Localhost) => any || local.ip().is_loopback(),
        Some(HostKind::Ip(ip)) => any || ip == local.ip(),
        Some(HostKind::Name) | None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{HostKind, points_at};

    #[test]
    fn detects_a_master_url_that_is_the_proxy_itself() {
        let local = "127.0.0.1:8079".parse().unwrap();
        for url in ["http://127.0.0.1:8079", "http://localhost:8079/"] {
            assert!(points_at(&url.parse().unwrap(), local), "{url}");
        }
        for url in [
            "http://127.0.0.1:8080",
            "https://master.example:8079",
            "http://10.0.0.1:8079",
            "http://127.0.0.2:8079",
            "https://127.0.0.1",
        ] {
            assert!(!points_at(&url.parse().unwrap(), local), "{url}");
        }
        let any = "0.0.0.0:80".parse().unwrap();
        assert!(points_at(&"http://localhost".parse().unwrap(), any));
    }

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://localhost:1",
            "http://127.0.0.1",
            "http://[::1]:8080",
        ] {
            assert!(
                HostKind::of(&url.parse().unwrap()).unwrap().is_loopback(),
                "{url}"
            );
        }
        for url in [
            "http://10.0.0.1",
            "http://master.example",
            "http://[2001:db8::1]",
        ] {
            assert!(
                !HostKind::of(&url.parse().unwrap()).unwrap().is_loopback(),
                "{url}"
            );
        }
    }
}
