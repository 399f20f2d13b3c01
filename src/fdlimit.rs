//! The process's open-files limit (`RLIMIT_NOFILE`) and the connection limits that fit
//! below it.
//!
//! Every client connection can hold two file descriptors (its own and, while a request
//! is forwarded, one to the master), and so can every tunnel (the client's upgraded
//! connection and the master's). At startup the binary raises its soft limit to the
//! hard limit ([`raise_open_files_limit`]), then lowers `max_connections` and
//! `max_tunnels` if together they would not fit ([`fit`]), keeping [`FD_RESERVE`]
//! descriptors for everything else. Out of descriptors, `accept` would fail and every
//! new request would get 502 "Too many open files" from the upstream connector; with the
//! limits below the ceiling, the excess waits in the listen backlog (connections) or
//! gets 503 (tunnels) instead.

/// Descriptors kept for everything but client connections and tunnels: standard
/// streams, the runtime's event loop and wakers, the signal handlers, the listener, the
/// config watcher, DNS lookups, the CA bundle and settings files being read.
pub const FD_RESERVE: u64 = 64;

/// Descriptors one client connection or one tunnel can hold: the client side and the
/// master side.
pub const FDS_PER_SLOT: u64 = 2;

/// The limits after [`fit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    /// Client connections served at once.
    pub max_connections: usize,
    /// Tunnels open at once.
    pub max_tunnels: usize,
}

/// `max_connections` and `max_tunnels`, lowered if need be so that both, at
/// [`FDS_PER_SLOT`] descriptors each, fit in `open_files` less [`FD_RESERVE`]. When they
/// must shrink, tunnels get at most half of the room (so that ordinary requests always
/// have connections left) and connections the rest, at least one.
pub fn fit(open_files: u64, max_connections: usize, max_tunnels: usize) -> Fitted {
    let room = open_files.saturating_sub(FD_RESERVE) / FDS_PER_SLOT;
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if max_connections.saturating_add(max_tunnels) <= room {
        return Fitted {
            max_connections,
            max_tunnels,
        };
    }
    let max_tunnels = max_tunnels.min(room / 2);
    let max_connections = max_connections.min(room - max_tunnels).max(1);
    Fitted {
        max_connections,
        max_tunnels,
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit, and return the soft limit now in
/// force (unchanged if it could not be raised).
#[cfg(unix)]
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer to one.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit` through a valid pointer to one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            // E.g. an "unlimited" hard limit above the kernel's nr_open: keep the soft
            // one, and fit the connection limits below it.
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot raise the open-files limit to the hard limit"
            );
        }
    }
    Ok(rlim_to_u64(lim.rlim_cur))
}

/// `rlim_t` is `u64` on Linux but not on every Unix.
#[cfg(unix)]
#[allow(clippy::useless_conversion)]
fn rlim_to_u64(n: libc::rlim_t) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_fit_below_the_open_files_limit() {
        // Plenty of room: unchanged.
        assert_eq!(
            fit(1 << 20, 1024, 512),
            Fitted {
                max_connections: 1024,
                max_tunnels: 512
            }
        );
        // 1024 descriptors, the common default: (1024 - 64) / 2 = 480 slots.
        let f = fit(1024, 1024, 512);
        assert_eq!(f.max_tunnels, 240);
        assert_eq!(f.max_connections, 240);
        assert!((f.max_connections + f.max_tunnels) as u64 * FDS_PER_SLOT + FD_RESERVE <= 1024);
        // Few tunnels asked for: connections get the rest.
        assert_eq!(fit(1024, 1024, 10).max_connections, 470);
        // Hardly any room: still one connection, no tunnel.
        assert_eq!(
            fit(40, 1024, 512),
            Fitted {
                max_connections: 1,
                max_tunnels: 0
            }
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let now = raise_open_files_limit().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(rlim_to_u64(lim.rlim_cur), now);
    }
}
