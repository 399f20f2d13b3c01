//! The DC/OS authentication token (a JWT) as a secret that cannot be printed.
//!
//! [`Token`]'s `Debug` and `Display` print a mask, never the value, so a token that ends
//! up in a log line by accident still leaks nothing. The only way to the bytes is
//! [`Token::header_value`], which builds the `Authorization: token=<jwt>` value that every
//! DC/OS version accepts (reference §5) and marks it sensitive so hyper's HPACK and any
//! header-logging layer treat it as a secret.
//!
//! [`Token::claims`] reads the JWT's `uid` and `exp` (reference §6) without verifying the
//! signature: the proxy only needs them to say who is logged in and when the token runs
//! out; the master does the verifying.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
    /// The value holds a byte other than visible ASCII inside it: a control character
    /// such as a newline (never allowed in a header, RFC 9110 §5.5), a space, or a
    /// non-ASCII byte (obsolete in a header). A JWT holds none of them.
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

/// What a token says about itself, read without verifying its signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// The `uid` claim: the user or service account the token is for.
    pub uid: Option<String>,
    /// The `exp` claim; `None` means the token never expires.
    pub exp: Option<SystemTime>,
}

/// Why a token's claims cannot be read. The message never holds token bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Not three dot-separated segments.
    #[error("the token is not a JWT (expected three dot-separated parts)")]
    NotJwt,
    /// The middle segment is not base64url.
    #[error("the token's payload is not base64url")]
    NotBase64,
    /// The payload is not a JSON object.
    #[error("the token's payload is not a JSON object")]
    NotJson,
    /// `exp` is not a non-negative number of seconds.
    #[error("the token's `exp` claim is not a time (seconds since 1970)")]
    BadExp,
}

impl Claims {
    /// How long until expiry at `now`: `None` when the token never expires, zero once it
    /// has expired.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        self.exp
            .map(|exp| exp.duration_since(now).unwrap_or(Duration::ZERO))
    }
}

impl Token {
    /// Decode the JWT payload's `uid` and `exp`. The signature is not checked.
    pub fn claims(&self) -> Result<Claims, ClaimsError> {
        let mut parts = self.0.split('.');
        let (Some(_header), Some(payload), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ClaimsError::NotJwt);
        };
        let json = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| ClaimsError::NotBase64)?;
        let serde_json::Value::Object(map) =
            serde_json::from_slice(&json).map_err(|_| ClaimsError::NotJson)?
        else {
            return Err(ClaimsError::NotJson);
        };
        let uid = match map.get("uid") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let exp = match map.get("exp") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let secs = v.as_f64().ok_or(ClaimsError::BadExp)?;
                // Up to the year ~2554; beyond that (or negative, or NaN) is not a time.
                if !(0.0..=18_446_744_073.0).contains(&secs) {
                    return Err(ClaimsError::BadExp);
                }
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
            }
        };
        Ok(Claims { uid, exp })
    }
}

/// A duration as people read it, in one word: `4d23h`, `5h12m`, `3m20s`, `42s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{mins}m")
    } else if mins > 0 {
        format!("{mins}m{secs}s")
    } else {
        format!("{secs}s")
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

    fn jwt(payload: &str) -> Token {
        Token::new(&format!(
            "eyJhbGciOiJIUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        ))
        .unwrap()
    }

    #[test]
    fn reads_uid_and_exp_without_verifying() {
        let c = jwt(r#"{"uid":"alice","exp":1700000000}"#).claims().unwrap();
        assert_eq!(c.uid.as_deref(), Some("alice"));
        assert_eq!(
            c.exp,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_699_999_000);
        assert_eq!(c.remaining(now), Some(Duration::from_secs(1000)));
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(c.remaining(later), Some(Duration::ZERO));
        // A fractional NumericDate is allowed by RFC 7519.
        let c = jwt(r#"{"uid":"bob","exp":1700000000.5}"#).claims().unwrap();
        assert!(c.exp.is_some());
    }

    #[test]
    fn a_token_without_exp_never_expires() {
        let c = jwt(r#"{"uid":"svc"}"#).claims().unwrap();
        assert_eq!(c.exp, None);
        assert_eq!(c.remaining(SystemTime::now()), None);
        assert_eq!(jwt("{}").claims().unwrap(), Claims::default());
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        assert_eq!(
            Token::new("not-a-jwt").unwrap().claims(),
            Err(ClaimsError::NotJwt)
        );
        assert_eq!(
            Token::new("a.b.c.d").unwrap().claims(),
            Err(ClaimsError::NotJwt)
        );
        assert_eq!(
            Token::new("a.!!!.c").unwrap().claims(),
            Err(ClaimsError::NotBase64)
        );
        assert_eq!(jwt("[1,2]").claims(), Err(ClaimsError::NotJson));
        assert_eq!(jwt("not json").claims(), Err(ClaimsError::NotJson));
        for exp in [r#""soon""#, "-1", "1e300"] {
            assert_eq!(
                jwt(&format!(r#"{{"exp":{exp}}}"#)).claims(),
                Err(ClaimsError::BadExp),
                "{exp}"
            );
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(5 * 86_400 - 1)), "4d23h");
        assert_eq!(human_duration(Duration::from_secs(3 * 3_600 + 125)), "3h2m");
        assert_eq!(human_duration(Duration::from_secs(200)), "3m20s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
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
