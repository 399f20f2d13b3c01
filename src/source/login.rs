//! Logging in to DC/OS (reference §7): `POST <login endpoint>` with
//! `{"uid", "token": <login JWT>}` for a service account or `{"uid", "password"}` for a
//! user, and the DC/OS token read from the answer's JSON `token` field.
//!
//! The service-account login JWT is RS256 (RFC 7518 §3.3: RSASSA-PKCS1-v1_5 with SHA-256)
//! over the claims `{"uid", "exp": now + 5 min}` (RFC 7519 §4.1.4), signed with `ring`,
//! the crypto the TLS stack already uses. `jsonwebtoken` was considered: its current
//! releases sign RSA only through aws-lc-rs (needs cmake) or RustCrypto's `rsa` crate
//! (RUSTSEC-2023-0071, no fixed release), while a JWS compact serialisation is three
//! base64url segments (RFC 7515 §7.1) around a signature ring computes in constant time.
//!
//! The answers are classified: a bad key ([`LoginError::BadKey`]), a refusal
//! ([`LoginError::Rejected`], with the master's short reason), a master that is not
//! answering properly ([`LoginError::Unavailable`], [`LoginError::Unreachable`],
//! [`LoginError::Timeout`]) and an answer that is not a login answer
//! ([`LoginError::Malformed`]). No message here holds a key, a password or a token.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Either, Full, Limited};
use ring::rand::SystemRandom;
use ring::signature::RSA_PKCS1_SHA256;

use super::credential::{Credential, Secret, ServiceAccount, SigningKey};
use crate::dcos::token::Token;
use crate::upstream::HttpsClient;

/// The login path under the master URL, used when the credential names no
/// `login_endpoint`.
pub const LOGIN_PATH: &str = "/acs/api/v1/auth/login";
/// How long a service-account login JWT is valid (the master accepts at most 10 min).
pub const LOGIN_JWT_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long one login may take, answer included.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest login answer read (a token is about 1 KiB).
const MAX_LOGIN_ANSWER: usize = 64 * 1024;
/// The most characters of the master's error answer quoted in a message.
const MAX_DETAIL: usize = 200;

/// Why a login failed. Never holds a key, a password or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The private key could not sign the login token.
    #[error("cannot sign the login token for {uid} with its private key; check the key file")]
    BadKey {
        /// The account.
        uid: String,
    },
    /// The login endpoint could not be reached.
    #[error("cannot reach the login endpoint {endpoint}: {cause}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// Why.
        cause: String,
    },
    /// No answer in time.
    #[error("the login endpoint {endpoint} did not answer within {}s", after.as_secs())]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The time allowed.
        after: Duration,
    },
    /// The master refused the credential (4xx).
    #[error(
        "login as {uid} refused by {endpoint} ({status}): {detail}; check the uid and its \
         key or password (for a service account: is its public key registered?)"
    )]
    Rejected {
        /// The account.
        uid: String,
        /// The endpoint.
        endpoint: String,
        /// The status code.
        status: u16,
        /// The master's short reason.
        detail: String,
    },
    /// The master could not serve the login (5xx): worth retrying.
    #[error("the login endpoint {endpoint} answered {status}: {detail}")]
    Unavailable {
        /// The endpoint.
        endpoint: String,
        /// The status code.
        status: u16,
        /// The master's short reason.
        detail: String,
    },
    /// A 200 answer without a usable token.
    #[error("the login endpoint {endpoint} gave a malformed answer: {why}; is it a DC/OS master?")]
    Malformed {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        why: String,
    },
}

/// A credential that logs in (everything but a token file).
#[derive(Debug, Clone)]
pub enum LoginCredential {
    /// A service account: a signed login JWT.
    ServiceAccount(ServiceAccount),
    /// A user and a password.
    Password {
        /// The user.
        uid: String,
        /// The password.
        password: Secret,
    },
}

impl LoginCredential {
    /// The login part of `credential`; `None` for a token file.
    pub fn of(credential: &Credential) -> Option<Self> {
        match credential {
            Credential::ServiceAccount { account, .. } => {
                Some(Self::ServiceAccount(account.clone()))
            }
            Credential::Password { uid, password, .. } => Some(Self::Password {
                uid: uid.clone(),
                password: password.clone(),
            }),
            Credential::TokenFile(_) => None,
        }
    }

    /// The account or user logging in.
    pub fn uid(&self) -> &str {
        match self {
            Self::ServiceAccount(a) => &a.uid,
            Self::Password { uid, .. } => uid,
        }
    }

    /// Where to log in: the credential's `login_endpoint`, else `<dcos_url>/acs/api/v1/auth/login`.
    pub fn endpoint(&self, dcos_url: &Uri) -> Uri {
        if let Self::ServiceAccount(ServiceAccount {
            login_endpoint: Some(url),
            ..
        }) = self
        {
            return url.clone();
        }
        default_endpoint(dcos_url)
    }

    /// The request body, as a secret (it holds a password or a signed login token).
    fn body(&self, now: SystemTime) -> Result<Secret, LoginError> {
        let json = match self {
            Self::ServiceAccount(a) => {
                let jwt = login_jwt(&a.uid, &a.key, now)?;
                serde_json::json!({"uid": a.uid, "token": jwt.expose()})
            }
            Self::Password { uid, password } => {
                serde_json::json!({"uid": uid, "password": password.expose()})
            }
        };
        Ok(Secret::new(json.to_string()))
    }
}

/// `<dcos_url>/acs/api/v1/auth/login`, keeping any path prefix of `dcos_url`.
pub fn default_endpoint(dcos_url: &Uri) -> Uri {
    let base = dcos_url.to_string();
    let url = format!("{}{LOGIN_PATH}", base.trim_end_matches('/'));
    // A valid URI with a valid absolute path appended is a valid URI.
    url.parse().unwrap_or_else(|_| dcos_url.clone())
}

/// An RS256 login JWT for `uid`, valid for [`LOGIN_JWT_LIFETIME`] from `now`.
pub fn login_jwt(uid: &str, key: &SigningKey, now: SystemTime) -> Result<Secret, LoginError> {
    let bad = || LoginError::BadKey {
        uid: uid.to_owned(),
    };
    let exp = now
        .checked_add(LOGIN_JWT_LIFETIME)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .ok_or_else(bad)?
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::json!({"uid": uid, "exp": exp}).to_string());
    let signing_input = format!("{header}.{claims}");
    let pair = key.pair();
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| bad())?;
    Ok(Secret::new(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    )))
}

/// Logs one credential in at one endpoint, over the upstream's pooled client.
#[derive(Clone)]
pub struct Login {
    credential: LoginCredential,
    endpoint: Uri,
    client: HttpsClient,
    timeout: Duration,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("uid", &self.credential.uid())
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// Log `credential` in at `endpoint` with `client` (whose TLS set-up is the master's).
    pub fn new(credential: LoginCredential, endpoint: Uri, client: HttpsClient) -> Self {
        Self {
            credential,
            endpoint,
            client,
            timeout: LOGIN_TIMEOUT,
        }
    }

    /// The account or user logging in.
    pub fn uid(&self) -> &str {
        self.credential.uid()
    }

    /// The login endpoint.
    pub fn endpoint(&self) -> &Uri {
        &self.endpoint
    }

    /// Log in once and return the new DC/OS token.
    pub async fn login(&self) -> Result<Token, LoginError> {
        let endpoint = self.endpoint.to_string();
        let body = self.credential.body(SystemTime::now())?;
        let mut req = Request::new(Either::Left(Full::new(Bytes::from(
            body.expose().to_owned(),
        ))));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.endpoint.clone();
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| LoginError::Unreachable {
                    endpoint: endpoint.clone(),
                    cause: error_chain(&e),
                })?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_LOGIN_ANSWER)
                .collect()
                .await
                .map_err(|e| LoginError::Malformed {
                    endpoint: endpoint.clone(),
                    why: format!("cannot read the answer: {e}"),
                })?
                .to_bytes();
            Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| LoginError::Timeout {
                endpoint: endpoint.clone(),
                after: self.timeout,
            })??;
        parse_answer(self.uid(), &endpoint, status, &bytes)
    }
}

/// `error` and its sources, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The token in a login answer, or why there is none.
pub fn parse_answer(
    uid: &str,
    endpoint: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<Token, LoginError> {
    if status.is_client_error() {
        return Err(LoginError::Rejected {
            uid: uid.to_owned(),
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            detail: detail(body),
        });
    }
    if !status.is_success() {
        return Err(LoginError::Unavailable {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            detail: detail(body),
        });
    }
    let malformed = |why: &str| LoginError::Malformed {
        endpoint: endpoint.to_owned(),
        why: why.to_owned(),
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| malformed("it is not JSON"))?;
    let Some(serde_json::Value::String(token)) = value.get("token") else {
        return Err(malformed("it has no `token` string"));
    };
    Token::new(token).map_err(|e| malformed(&format!("its `token` is unusable: {e}")))
}

/// The master's short reason: `description` (and `code`) of its JSON error, else the
/// start of the body, made safe for a log line.
fn detail(body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        json.as_ref()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let text = match (
        field("code"),
        field("description").or_else(|| field("title")),
    ) {
        (Some(code), Some(d)) => format!("{code}: {d}"),
        (None, Some(d)) => d,
        (Some(code), None) => code,
        (None, None) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.is_empty() {
        return "no reason given".to_owned();
    }
    let short: String = text.chars().take(MAX_DETAIL).collect();
    let mut out = super::printable(&short);
    if text.chars().count() > MAX_DETAIL {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    const PKCS8: &str = include_str!("../../tests/fixtures/keys/sa_pkcs8.pem");
    const PKCS1: &str = include_str!("../../tests/fixtures/keys/sa_pkcs1.pem");

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn the_login_jwt_is_rs256_over_uid_and_exp_and_verifies_with_the_public_key() {
        for pem in [PKCS8, PKCS1] {
            let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let jwt = login_jwt("my-sa", &key, now).unwrap();
            let parts: Vec<&str> = jwt.expose().split('.').collect();
            assert_eq!(parts.len(), 3);
            assert_eq!(decode(parts[0])["alg"], "RS256");
            let claims = decode(parts[1]);
            assert_eq!(claims["uid"], "my-sa");
            assert_eq!(claims["exp"], 1_700_000_300u64);
            let public = UnparsedPublicKey::new(
                &RSA_PKCS1_2048_8192_SHA256,
                key.pair().public().as_ref().to_vec(),
            );
            let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            let input = format!("{}.{}", parts[0], parts[1]);
            public.verify(input.as_bytes(), &sig).unwrap();
            assert!(public.verify(b"tampered", &sig).is_err());
        }
    }

    #[test]
    fn the_endpoint_is_the_credentials_or_under_the_master_url() {
        let key = SigningKey::from_pem(PKCS8.as_bytes()).unwrap();
        let mut account = ServiceAccount {
            uid: "sa".into(),
            key,
            login_endpoint: None,
        };
        let master: Uri = "https://m.example/dcos/".parse().unwrap();
        let c = LoginCredential::ServiceAccount(account.clone());
        assert_eq!(
            c.endpoint(&master),
            "https://m.example/dcos/acs/api/v1/auth/login"
        );
        account.login_endpoint = Some(
            "https://leader.mesos/acs/api/v1/auth/login"
                .parse()
                .unwrap(),
        );
        let c = LoginCredential::ServiceAccount(account);
        assert_eq!(
            c.endpoint(&master),
            "https://leader.mesos/acs/api/v1/auth/login"
        );
    }

    #[test]
    fn answers_are_a_token_a_rejection_an_outage_or_malformed() {
        let ok = parse_answer("sa", "e", StatusCode::OK, br#"{"token":"a.b.c"}"#).unwrap();
        assert_eq!(ok.header_value(), "token=a.b.c");

        let refusal = br#"{"title":"Bad credentials","description":"Login token signature cannot be verified.","code":"ERR_INVALID_CREDENTIALS"}"#;
        let e = parse_answer("sa", "https://m/acs", StatusCode::UNAUTHORIZED, refusal).unwrap_err();
        assert!(
            matches!(e, LoginError::Rejected { status: 401, .. }),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("ERR_INVALID_CREDENTIALS: Login token signature cannot be verified."),
            "{msg}"
        );
        assert!(msg.contains("sa") && msg.contains("https://m/acs"), "{msg}");

        let e = parse_answer(
            "sa",
            "e",
            StatusCode::SERVICE_UNAVAILABLE,
            b"<html>down\n</html>",
        )
        .unwrap_err();
        assert!(
            matches!(e, LoginError::Unavailable { status: 503, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("<html>down\\n</html>"), "{e}");

        for (body, why) in [
            (&b"<html>"[..], "not JSON"),
            (br#"{"tok":"x"}"#, "no `token`"),
            (br#"{"token":"a b"}"#, "unusable"),
        ] {
            let e = parse_answer("sa", "e", StatusCode::OK, body).unwrap_err();
            assert!(matches!(e, LoginError::Malformed { .. }), "{e:?}");
            assert!(e.to_string().contains(why), "{e}");
        }
        let long = "x".repeat(5000);
        let e = parse_answer("sa", "e", StatusCode::FORBIDDEN, long.as_bytes()).unwrap_err();
        assert!(e.to_string().len() < 600, "the reason is cut short");
    }

    #[test]
    fn the_request_body_holds_the_secret_but_prints_none() {
        let c = LoginCredential::Password {
            uid: "alice".into(),
            password: Secret::new("hunter2"),
        };
        let body = c.body(SystemTime::now()).unwrap();
        let json: serde_json::Value = serde_json::from_str(body.expose()).unwrap();
        assert_eq!(json["password"], "hunter2");
        assert!(!format!("{body:?} {body} {c:?}").contains("hunter2"));
    }
}
