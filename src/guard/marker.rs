//! The loop marker: a `Via` entry (RFC 9110 §7.6.3) with a random ID that this proxy adds
//! to every request it forwards, so that a request arriving with it is known to have
//! come round again.
//!
//! The startup and reload checks catch a master URL that names the proxy's own address
//! (see [`crate::host`]); this catches every alias they cannot see (a name that resolves
//! to the proxy only later, a chain through another proxy, a port forward). The ID is
//! random per guard, so two proxies in a chain never mistake each other's entries for
//! their own. It is not a secret: a client that copies it only gets 508 itself.

use std::hash::{BuildHasher, Hasher};

use http::header::{self, HeaderMap, HeaderValue};

/// The pseudonym before the random ID in our `Via` entry.
const PSEUDONYM: &str = "dcos-token-proxy-";
/// Random bytes in the ID (hex-encoded: 32 characters).
const ID_BYTES: usize = 16;

/// This proxy's `Via` entry: `1.1 dcos-token-proxy-<random hex>`.
#[derive(Debug, Clone)]
pub struct LoopMarker {
    /// `dcos-token-proxy-<hex>`: what is searched for in arriving `Via` values.
    token: String,
    /// `1.1 dcos-token-proxy-<hex>`: what is appended.
    entry: HeaderValue,
}

impl Default for LoopMarker {
    fn default() -> Self {
        Self::new()
    }
}

impl LoopMarker {
    /// A fresh marker with a random ID from the OS random source (or, should that fail,
    /// from the standard library's randomly seeded hasher: uniqueness, not secrecy, is
    /// what matters here).
    pub fn new() -> Self {
        use ring::rand::{SecureRandom, SystemRandom};
        let mut bytes = [0u8; ID_BYTES];
        if SystemRandom::new().fill(&mut bytes).is_err() {
            for half in bytes.chunks_mut(8) {
                let n = std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish();
                half.copy_from_slice(&n.to_le_bytes()[..half.len()]);
            }
        }
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let token = format!("{PSEUDONYM}{hex}");
        let entry = HeaderValue::from_str(&format!("1.1 {token}"))
            .unwrap_or(HeaderValue::from_static("1.1 dcos-token-proxy"));
        Self { token, entry }
    }

    /// The `Via` entry, e.g. for a test to recognise it.
    pub fn entry(&self) -> &HeaderValue {
        &self.entry
    }

    /// Whether any `Via` value in `headers` holds this marker.
    pub fn is_in(&self, headers: &HeaderMap) -> bool {
        let needle = self.token.as_bytes();
        headers
            .get_all(header::VIA)
            .iter()
            .any(|v| v.as_bytes().windows(needle.len()).any(|w| w == needle))
    }

    /// Append this marker to `headers` as one more `Via` entry (RFC 9110 §7.6.3: each
    /// proxy appends its own, after the ones already there).
    pub fn append_to(&self, headers: &mut HeaderMap) {
        headers.append(header::VIA, self.entry.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_finds_itself_and_not_another() {
        let (a, b) = (LoopMarker::new(), LoopMarker::new());
        assert_ne!(a.entry(), b.entry());
        let mut h = HeaderMap::new();
        h.append(
            header::VIA,
            HeaderValue::from_static("1.0 fred, 1.1 p.example"),
        );
        assert!(!a.is_in(&h));
        b.append_to(&mut h);
        assert!(b.is_in(&h) && !a.is_in(&h));
        // Inside a combined value too.
        let combined = format!("1.1 x, {}, 1.1 y", a.entry().to_str().unwrap());
        let mut h = HeaderMap::new();
        h.insert(header::VIA, HeaderValue::from_str(&combined).unwrap());
        assert!(a.is_in(&h));
    }
}
