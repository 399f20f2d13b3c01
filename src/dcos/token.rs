//! The DC/OS authentication token (a JWT) as a secret that cannot be printed.
//!
//! [`Token`]'s `Debug` and `Display` print a mask, never the value, so a token that ends
//! up in a log line by accident still leaks nothing. The only way to the bytes is
//! [`Token::header_value`], which builds the `Authorization: token=<jwt>` value that every
//! DC/OS version accepts (reference §5) and marks it sensitive so hyper's HPACK and any
//! header-logging layer treat it as a secret.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

/// The scheme prefix Admin Router matches with the Lua pattern `token=(.+)`.
pub const TOKEN_PREFIX: &str = "token=";

/// A DC/OS auth token. Cheap to clone; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

/// Why a string cannot be used as a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The value is empty or only whitespace.
    #[error("the token is empty")]
    Empty,
    /// The value holds bytes that may not appear in an HTTP header (RFC 9110 §5.5),
    /// such as a newline, or non-ASCII bytes.
    #[error("the token holds characters that are not allowed in an HTTP header")]
    NotHeaderSafe,
}

impl Token {
    /// Accept `raw` as a token. Surrounding whitespace is trimmed; the rest must be
    /// visible ASCII, as a JWT always is.
    pub fn new(raw: &str) -> Result<Self, TokenError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(TokenError::Empty);
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotHeaderSafe);
        }
        Ok(Self(raw.into()))
    }

    /// The ready-made `Authorization` header value `token=<jwt>`, marked sensitive.
    pub fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::try_from(format!("{TOKEN_PREFIX}{}", self.0))
            .expect("Token::new admits only visible ASCII, which is always a valid header value");
        value.set_sensitive(true);
        value
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let t = Token::new("eyJhbGciOiJIUzI1NiJ9.e30.c2ln").unwrap();
        assert!(!format!("{t:?}").contains("eyJ"));
        assert!(!format!("{t}").contains("eyJ"));
        assert!(!format!("{:?}", Some(&t)).contains("eyJ"));
    }

    #[test]
    fn header_value_is_token_form_and_sensitive() {
        let t = Token::new("  abc.def.ghi\n").unwrap();
        let v = t.header_value();
        assert_eq!(v.as_bytes(), b"token=abc.def.ghi");
        assert!(v.is_sensitive());
    }

    #[test]
    fn rejects_empty_and_unsafe_values() {
        assert_eq!(Token::new(""), Err(TokenError::Empty));
        assert_eq!(Token::new("   "), Err(TokenError::Empty));
        assert_eq!(Token::new("a\r\nX-Evil: 1"), Err(TokenError::NotHeaderSafe));
        assert_eq!(Token::new("a b"), Err(TokenError::NotHeaderSafe));
        assert_eq!(Token::new("jwt\u{e9}"), Err(TokenError::NotHeaderSafe));
    }
}
