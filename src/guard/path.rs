//! Path normalisation for the path filters: the path as each server behind the proxy
//! would route it, and the control characters no path may hold once decoded.
//!
//! Two servers read a path behind the proxy: Admin Router (nginx), which percent-decodes,
//! merges `//` and resolves dot segments but keeps `;` as a plain character
//! ([`normalize_path`]), and the Java services behind it (Marathon on Jetty, and other
//! servlet containers), which also drop each segment's `;parameters` before resolving dot
//! segments ([`servlet_path`]): `/v2/apps/..;/apps` is `/v2/apps` to Jetty. The guard
//! matches `deny_paths` against the path as sent and against both forms.

use std::borrow::Cow;

/// The path as nginx (Admin Router, in front of every DC/OS service) routes it:
/// percent-decoded, `//` merged, `.` and `..` segments resolved (RFC 3986 §5.2.4).
/// Borrowed when there is nothing to normalise.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') && !path.contains("//") && !path.contains("/.") {
        return Cow::Borrowed(path);
    }
    Cow::Owned(normalize(path, false))
}

/// The path as a servlet container (Jetty, under Marathon) routes it: as
/// [`normalize_path`], and each segment's path parameters (`;` and what follows, RFC 3986
/// §3.3) dropped before the dot segments are resolved. A decoded `%3B` counts as `;`
/// too, so no encoding hides a parameter from the rules. Borrowed when there is
/// nothing to normalise.
pub fn servlet_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') && !path.contains("//") && !path.contains("/.") && !path.contains(';') {
        return Cow::Borrowed(path);
    }
    Cow::Owned(normalize(path, true))
}

/// Whether `path`, percent-decoded once, holds a control character (U+0000–U+001F or
/// U+007F): a newline or NUL in a path has no legitimate use, and a regex or a server
/// behind the proxy may treat it in surprising ways (a `.` does not match `\n`).
pub fn has_control_character(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_control() {
            return true;
        }
        if b == b'%'
            && let Some(d) = decode_at(bytes, i)
        {
            if d.is_ascii_control() {
                return true;
            }
            i += 3;
            continue;
        }
        i += 1;
    }
    false
}

/// The byte `%XX` at `bytes[i..]` stands for, if it is one.
fn decode_at(bytes: &[u8], i: usize) -> Option<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
        (Some(b'%'), Some(&h), Some(&l)) => Some((hex(h)? * 16 + hex(l)?) as u8),
        _ => None,
    }
}

fn normalize(path: &str, strip_params: bool) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(d) = decode_at(bytes, i) {
            decoded.push(d);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    let mut last = "";
    for seg in text.split('/') {
        let seg = if strip_params {
            seg.split_once(';').map_or(seg, |(s, _)| s)
        } else {
            seg
        };
        last = seg;
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
    // A path ending in `/`, `/.` or `/..` names a directory.
    if out.is_empty() || matches!(last, "" | "." | "..") {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_like_the_server_behind() {
        assert!(matches!(normalize_path("/a/b"), Cow::Borrowed("/a/b")));
        assert_eq!(normalize_path("/a//b/./c/../d/"), "/a/b/d/");
        assert_eq!(normalize_path("/%2e%2e/%2E/x%2Fy"), "/x/y");
        assert_eq!(normalize_path("/../.."), "/");
        assert_eq!(normalize_path("/a%"), "/a%");
        assert_eq!(normalize_path("/a%4"), "/a%4");
        assert_eq!(normalize_path("/a%zz//"), "/a%zz/");
        assert_eq!(
            normalize_path("/a;x/..;/b"),
            "/a;x/..;/b",
            "nginx keeps `;`"
        );
    }

    #[test]
    fn servlet_paths_drop_parameters_before_resolving_dots() {
        assert!(matches!(servlet_path("/a/b"), Cow::Borrowed("/a/b")));
        assert_eq!(servlet_path("/v2/apps;x"), "/v2/apps");
        assert_eq!(servlet_path("/v2/apps/..;/apps"), "/v2/apps");
        assert_eq!(servlet_path("/v2;jsessionid=1/apps;a;b"), "/v2/apps");
        assert_eq!(servlet_path("/v2/apps/.;x"), "/v2/apps/");
        assert_eq!(servlet_path("/v2/apps%3Bx"), "/v2/apps");
        assert_eq!(servlet_path("/a/x;/../b"), "/a/b");
        assert_eq!(servlet_path("/;x"), "/");
    }

    #[test]
    fn control_characters_are_found_decoded_or_raw() {
        for bad in ["/a%0a", "/a%0A", "%00", "/%7f", "/%1F/x", "/a\nb", "/\x7f"] {
            assert!(has_control_character(bad), "{bad:?}");
        }
        for ok in [
            "/a", "/a%20b", "/%250a", "/%", "/%0", "/%g0", "/%80", "/%2F",
        ] {
            assert!(!has_control_character(ok), "{ok:?}");
        }
    }
}
