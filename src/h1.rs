//! Small pieces of HTTP/1.1 head handling shared by the server's lean path
//! (`server::lean`, requests) and the upstream's (`upstream::lean`, answers): where a
//! parsed field lies in its head, and how the framing and connection fields read.

use http::HeaderValue;

/// Where one header field lies in the head: name and value, as offsets.
#[derive(Clone, Copy)]
pub(crate) struct Field {
    pub name: (usize, usize),
    pub value: (usize, usize),
}

/// The offsets of `part`, a slice of `whole`, within it.
pub(crate) fn range(whole: &[u8], part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    (start, start + part.len())
}

/// Whether a `Connection` value lists `token` (ASCII case-insensitive).
pub(crate) fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked`.
pub(crate) fn is_chunked(value: &HeaderValue) -> bool {
    value
        .to_str()
        .ok()
        .and_then(|s| s.rsplit(',').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

/// A `Content-Length` value: digits (at most 19), or a comma-separated list of equal
/// ones; `None` for anything else.
pub(crate) fn content_length(value: &HeaderValue) -> Option<u64> {
    let mut length = None;
    for item in value.to_str().ok()?.split(',') {
        let item = item.trim();
        if item.is_empty() || item.len() > 19 || !item.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = item.parse::<u64>().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_as_hyper_reads_them() {
        let v = HeaderValue::from_static;
        assert!(has_token(&v("Keep-Alive, CLOSE"), "close"));
        assert!(!has_token(&v("closed"), "close"));
        assert!(is_chunked(&v("gzip, Chunked")));
        assert!(!is_chunked(&v("chunked, gzip")));
        assert_eq!(content_length(&v("42")), Some(42));
        assert_eq!(content_length(&v("4, 4")), Some(4));
        for bad in [
            "4, 40",
            "",
            "+4",
            "-1",
            "4 4",
            "99999999999999999999",
            "0x10",
        ] {
            assert_eq!(content_length(&v(bad)), None, "{bad:?}");
        }
    }
}
