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

/// How long the self-loop check waits for a name to resolve; past it, the check passes
/// and the runtime loop marker (see [`crate::guard::LoopMarker`]) is the defence.
pub(crate) const LOOP_CHECK_RESOLVE_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(5);

/// Whether `url` would reach the listener bound at `local`: its host is resolved the way
/// the upstream connector resolves it (the system resolver, which also reads `127.1`,
/// `0x7f.0.0.1` and `2130706433` as 127.0.0.1), and every address it yields is compared
/// with `local` by [`reaches`]. A name that does not resolve (in time) is not a loop as
/// far as this check can tell.
pub(crate) async fn resolves_to_self(url: &http::Uri, local: SocketAddr) -> bool {
    let default_port = if url.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let port = url.port_u16().unwrap_or(default_port);
    if port != local.port() {
        return false;
    }
    let Some(host) = url.host() else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(LOOP_CHECK_RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => reaches(&addrs.collect::<Vec<_>>(), local),
        _ => false,
    }
}

/// Whether a connection to any of `resolved` would reach the listener bound at `local`:
/// the same port, and the same address once IPv4-mapped IPv6 (`::ffff:127.0.0.1`) is
/// read as IPv4; or the unspecified address (`0.0.0.0`, `::`, which a connection takes
/// as this host) while the listener is on loopback or on every address; or any loopback
/// address while the listener is on every address.
pub(crate) fn reaches(resolved: &[SocketAddr], local: SocketAddr) -> bool {
    let local_ip = canonical(local.ip());
    resolved.iter().any(|a| {
        let ip = canonical(a.ip());
        a.port() == local.port()
            && (ip == local_ip
                || (ip.is_unspecified() && (local_ip.is_loopback() || local_ip.is_unspecified()))
                || (local_ip.is_unspecified() && ip.is_loopback()))
    })
}

/// `ip`, with an IPv4-mapped IPv6 address read as the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::{HostKind, reaches, resolves_to_self};

    #[tokio::test]
    async fn detects_a_master_url_that_is_the_proxy_itself() {
        let local = "127.0.0.1:8079".parse().unwrap();
        for url in [
            "http://127.0.0.1:8079",
            "http://localhost:8079/",
            // Aliases the system resolver reads as 127.0.0.1, and ones that reach it.
            "http://127.1:8079",
            "http://2130706433:8079",
            "http://0x7f.0.0.1:8079",
            "http://0.0.0.0:8079",
            "http://[::ffff:127.0.0.1]:8079",
        ] {
            assert!(
                resolves_to_self(&url.parse().unwrap(), local).await,
                "{url}"
            );
        }
        for url in [
            "http://127.0.0.1:8080",
            "https://master.example:8079",
            "http://10.0.0.1:8079",
            "http://127.0.0.2:8079",
            "https://127.0.0.1",
            "http://[::1]:8079",
        ] {
            assert!(
                !resolves_to_self(&url.parse().unwrap(), local).await,
                "{url}"
            );
        }
        let any = "0.0.0.0:80".parse().unwrap();
        assert!(resolves_to_self(&"http://localhost".parse().unwrap(), any).await);
        assert!(resolves_to_self(&"http://127.0.0.5".parse().unwrap(), any).await);
    }

    #[test]
    fn a_name_is_judged_by_the_addresses_it_resolves_to() {
        let local: SocketAddr = "127.0.0.1:8079".parse().unwrap();
        let addrs = |list: &[&str]| -> Vec<SocketAddr> {
            list.iter().map(|a| a.parse().unwrap()).collect()
        };
        // e.g. a name in /etc/hosts, or *.localhost with systemd-resolved.
        assert!(reaches(&addrs(&["10.1.1.1:8079", "127.0.0.1:8079"]), local));
        assert!(reaches(&addrs(&["[::ffff:127.0.0.1]:8079"]), local));
        assert!(!reaches(&addrs(&["10.1.1.1:8079", "[::1]:8079"]), local));
        assert!(!reaches(&addrs(&["127.0.0.1:8080"]), local));
        let v6: SocketAddr = "[::1]:8079".parse().unwrap();
        assert!(reaches(&addrs(&["[::1]:8079"]), v6));
        assert!(reaches(&addrs(&["[::]:8079"]), v6));
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
