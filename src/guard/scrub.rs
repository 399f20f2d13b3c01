//! What an admitted request loses before the master sees it: every occurrence of the
//! path secret (in any header and anywhere in the target), the client's own forwarding
//! headers, and its cookies.
//!
//! - **The path secret** is per session and only for this proxy. A page loaded through
//!   the proxy sends its own URL as `Referer`, puts it in query strings and custom
//!   headers; a client may repeat the prefix. Every occurrence goes, written plainly or
//!   with some of its characters percent-encoded (`%68` for `h`), together with the `/`
//!   before it, so `…/<secret>/ui/?next=/<secret>/x` becomes `…/ui/?next=/x`.
//! - **`Forwarded`, `X-Forwarded-*`, `X-Real-IP`** (RFC 7239 and its predecessors): to
//!   the master, the proxy is the client. A local caller must not claim another address,
//!   scheme or host to the master's access control and logs. `pass_forwarding_headers`
//!   keeps them.
//! - **`Cookie`**: a browser sends the proxy every cookie set for `localhost`, by any
//!   local application on any port (cookies are not separated by port). The master
//!   authenticates the proxy by its token, so cookies are dropped; `pass_cookies` keeps
//!   them (e.g. for a service behind Admin Router that keeps a session in a cookie).
//!
//! Nothing here allocates unless there is something to remove.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::census::{X_FORWARDED_PREFIX, X_REAL_IP};

/// Remove the client's forwarding headers: `Forwarded`, `X-Forwarded-*`, `X-Real-IP`.
/// One pass over the names present finds them (the guard calls this only when its
/// [`crate::census::Census`] found one).
pub fn strip_forwarding(headers: &mut HeaderMap) {
    let forwarding = |n: &HeaderName| {
        *n == header::FORWARDED
            || n.as_str() == X_REAL_IP
            || n.as_str().starts_with(X_FORWARDED_PREFIX)
    };
    if headers.keys().any(forwarding) {
        let names: Vec<HeaderName> = headers.keys().filter(|n| forwarding(n)).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Remove the client's cookies.
pub fn strip_cookies(headers: &mut HeaderMap) {
    headers.remove(header::COOKIE);
}

/// Remove every occurrence of `secret` from every header value.
pub fn scrub_headers(headers: &mut HeaderMap, secret: &[u8]) {
    for value in headers.values_mut() {
        if let Some(clean) = without_secret(value.as_bytes(), secret) {
            let sensitive = value.is_sensitive();
            // Removing bytes from a valid value leaves a valid value; should that ever
            // fail, the value is emptied rather than forwarded.
            let mut v = HeaderValue::from_bytes(&clean).unwrap_or(HeaderValue::from_static(""));
            v.set_sensitive(sensitive);
            *value = v;
        }
    }
}

/// `text` with every occurrence of `secret` removed (with the `/` just before each), or
/// `None` when there is none. Repeats until none is left, because a removal can join
/// two pieces into a new occurrence.
pub fn without_secret(text: &[u8], secret: &[u8]) -> Option<Vec<u8>> {
    let (mut start, mut end) = find(text, secret, 0)?;
    let mut out = text.to_vec();
    loop {
        if start > 0 && out[start - 1] == b'/' {
            start -= 1;
        }
        out.drain(start..end);
        // A new occurrence can only start up to one encoded secret length before the cut.
        let from = start.saturating_sub(3 * secret.len());
        match find(&out, secret, from) {
            Some(span) => (start, end) = span,
            None => return Some(out),
        }
    }
}

/// The first span of `text` at or after `from` that spells `secret`, each character
/// written plainly or as `%XX` (either case of hex digit).
fn find(text: &[u8], secret: &[u8], from: usize) -> Option<(usize, usize)> {
    let first = *secret.first()?;
    (from..text.len())
        .filter(|&i| text[i] == first || text[i] == b'%')
        .find_map(|i| matches_at(text, secret, i).map(|end| (i, end)))
}

fn matches_at(text: &[u8], secret: &[u8], mut at: usize) -> Option<usize> {
    let hex = |b: u8| (b as char).to_digit(16);
    for &want in secret {
        match *text.get(at)? {
            b if b == want => at += 1,
            b'%' => {
                let (h, l) = (hex(*text.get(at + 1)?)?, hex(*text.get(at + 2)?)?);
                if (h * 16 + l) as u8 != want {
                    return None;
                }
                at += 3;
            }
            _ => return None,
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &[u8] = b"s3cret-s3cret-s3cret";

    fn clean(text: &str) -> Option<String> {
        without_secret(text.as_bytes(), S).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn every_occurrence_goes_with_its_slash() {
        assert_eq!(clean("http://h/ui/"), None);
        assert_eq!(
            clean("http://h/s3cret-s3cret-s3cret/ui/?next=/s3cret-s3cret-s3cret/x&a=s3cret-s3cret-s3cret")
                .unwrap(),
            "http://h/ui/?next=/x&a="
        );
        assert_eq!(clean("/s3cret-s3cret-s3cret").unwrap(), "");
        assert_eq!(clean("%73%33cret-s3cret-s3cre%74!").unwrap(), "!");
        assert_eq!(clean("%2Fs3cret-s3cret-s3cret").unwrap(), "%2F");
        // A removal that joins two halves into a new occurrence.
        assert_eq!(
            clean("s3cret-s3s3cret-s3cret-s3cretcret-s3cret").unwrap(),
            ""
        );
        // Case matters: the secret is compared exactly.
        assert_eq!(clean("S3CRET-S3CRET-S3CRET"), None);
        assert_eq!(clean("s3cret-s3cret-s3cre"), None);
    }

    #[test]
    fn headers_lose_the_secret_and_keep_sensitivity() {
        let mut h = HeaderMap::new();
        let mut v = HeaderValue::from_static("a=s3cret-s3cret-s3cret");
        v.set_sensitive(true);
        h.insert("x-a", v);
        h.append("x-b", HeaderValue::from_static("plain"));
        h.append("x-b", HeaderValue::from_static("/s3cret-s3cret-s3cret/x"));
        scrub_headers(&mut h, S);
        assert_eq!(h["x-a"], "a=");
        assert!(h["x-a"].is_sensitive());
        let b: Vec<_> = h.get_all("x-b").iter().collect();
        assert_eq!(b, ["plain", "/x"]);
    }

    #[test]
    fn forwarding_headers_and_cookies_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("forwarded", "for=1"),
            ("x-forwarded-for", "1"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "1"),
            ("x-forwarding", "kept"),
            ("cookie", "a=1"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_forwarding(&mut h);
        strip_cookies(&mut h);
        let left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-forwarding"]);

        // Each on its own, beside a field that stays.
        for name in [
            "forwarded",
            "x-real-ip",
            "x-forwarded-host",
            "X-Forwarded-Prefix",
        ] {
            let mut h = HeaderMap::new();
            h.append(name, HeaderValue::from_static("1"));
            h.append("x-keep", HeaderValue::from_static("1"));
            strip_forwarding(&mut h);
            let left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
            assert_eq!(left, ["x-keep"], "{name}");
        }
    }
}
