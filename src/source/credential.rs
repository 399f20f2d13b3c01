//! Where a sidecar's credential comes from, and the secret types that hold it.
//!
//! Precedence (the first that is given wins):
//! 1. explicit flags: `--token-file`, `--service-account-uid` with `--private-key-file`,
//!    or `--uid` with a password from `--password-file` or `DCOS_PASSWORD`;
//! 2. `DCOS_SERVICE_ACCOUNT_CREDENTIAL`: the service-account JSON itself, or the path of
//!    a file that holds it (reference §7; DC/OS injects it as a secret);
//! 3. none of these: the DC/OS CLI config, followed by [`super::watch`].
//!
//! Every file is read as hostile input (regular files only, bounded). A private key is
//! parsed once, here, so a bad key fails at startup and not at the first login. Secrets
//! live in [`Secret`] and [`SigningKey`], whose `Debug` and `Display` print a mask; no
//! error message here ever holds a key, a password or a credential's bytes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::Uri;
use ring::signature::RsaKeyPair;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::env::Env;
use crate::files::{ReadError, read_bounded};
use crate::settings::CredentialFlags;

/// The variable DC/OS fills with a service-account credential (JSON, or a file path).
pub const ENV_SERVICE_ACCOUNT_CREDENTIAL: &str = "DCOS_SERVICE_ACCOUNT_CREDENTIAL";
/// The variable that holds the `--uid` user's password when `--password-file` is not given.
pub const ENV_PASSWORD: &str = "DCOS_PASSWORD";
/// The only signature scheme DC/OS service accounts use.
pub const SCHEME_RS256: &str = "RS256";
/// The largest credential, key or password file read.
const MAX_CREDENTIAL_FILE: u64 = 64 * 1024;

/// A secret string (a password, a login JWT). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wrap `value`.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A service account's RSA private key, parsed and ready to sign. Never printed.
#[derive(Clone)]
pub struct SigningKey(Arc<RsaKeyPair>);

impl SigningKey {
    /// Parse a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`), RSA of 2048 bits or more.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NotPem)?;
        let pair = match &der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(KeyError::NotRsa),
        };
        // ring's reasons are static descriptions of the key's shape, never its bytes.
        let pair = pair.map_err(|e| match e.to_string().as_str() {
            // A PKCS#8 key of another algorithm (EC, Ed25519).
            "WrongAlgorithm" => KeyError::NotRsa,
            why => KeyError::Rejected(why.to_owned()),
        })?;
        Ok(Self(Arc::new(pair)))
    }

    /// The key pair, for signing.
    pub(crate) fn pair(&self) -> &RsaKeyPair {
        &self.0
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Why a private key cannot be used. Never holds the key's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No PEM private-key block was found.
    #[error(
        "it holds no PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)"
    )]
    NotPem,
    /// A private key, but not an RSA one.
    #[error("it is not an RSA key; DC/OS service accounts sign with RS256")]
    NotRsa,
    /// An RSA key that cannot sign (too small, malformed).
    #[error("the RSA key cannot be used: {0}")]
    Rejected(String),
}

/// A DC/OS service account: who, its key, and where to log in.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    /// The account's ID (`uid`).
    pub uid: String,
    /// Its private key.
    pub key: SigningKey,
    /// `login_endpoint` from the credential, if given; else the master's
    /// `/acs/api/v1/auth/login`.
    pub login_endpoint: Option<Uri>,
}

/// Where the proxy's token comes from, when not from the DC/OS CLI config.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Log in as a service account (RS256 login token), and keep logging in.
    ServiceAccount {
        /// The account.
        account: ServiceAccount,
        /// Where it came from, for the startup line.
        origin: &'static str,
    },
    /// Log in as a user with a password, and keep logging in.
    Password {
        /// The user.
        uid: String,
        /// The password.
        password: Secret,
        /// Where the password came from, for the startup line.
        origin: &'static str,
    },
    /// Read the token from this file, and follow it.
    TokenFile(PathBuf),
}

impl Credential {
    /// One line for the startup log: which source is in use (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Self::ServiceAccount { account, origin } => {
                format!(
                    "service account {} ({origin})",
                    super::printable(&account.uid)
                )
            }
            Self::Password { uid, origin, .. } => {
                format!("user {} with a password ({origin})", super::printable(uid))
            }
            Self::TokenFile(path) => format!("token file {}", path.display()),
        }
    }
}

/// Why the credential could not be set up. Messages name the flag, variable or file and
/// never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {error}")]
    Read {
        /// What the file is for (e.g. "--private-key-file").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: ReadError,
    },
    /// The private key is unusable.
    #[error(
        "{origin}: the private key {where_} is not usable: {error}; give the account's PEM key"
    )]
    Key {
        /// The flag or variable that named it.
        origin: &'static str,
        /// The file, or "in the credential JSON".
        where_: String,
        /// Why.
        error: KeyError,
    },
    /// The service-account credential JSON is not usable.
    #[error(
        "{origin}: {why}; expected JSON like {{\"scheme\": \"RS256\", \"uid\": \"my-sa\", \
         \"private_key\": \"-----BEGIN PRIVATE KEY-----...\", \"login_endpoint\": \
         \"https://leader.mesos/acs/api/v1/auth/login\"}}, or the path of a file holding it"
    )]
    BadJson {
        /// The variable, or the file that held it.
        origin: String,
        /// What is wrong (never the secret's value).
        why: String,
    },
    /// `--uid` was given without a password.
    #[error(
        "--uid {uid} needs a password: put it in a file named by --password-file, or in \
         DCOS_PASSWORD (never on the command line)"
    )]
    NoPassword {
        /// The user.
        uid: String,
    },
    /// The password is empty.
    #[error("{origin}: the password is empty")]
    EmptyPassword {
        /// Where it came from.
        origin: &'static str,
    },
}

impl Credential {
    /// The credential that `flags` and `env` name, or `None` to use the DC/OS CLI config.
    pub fn resolve(flags: &CredentialFlags, env: &Env) -> Result<Option<Self>, CredentialError> {
        if let Some(path) = &flags.token_file {
            return Ok(Some(Self::TokenFile(path.clone())));
        }
        if let (Some(uid), Some(path)) = (&flags.service_account_uid, &flags.private_key_file) {
            let pem = read(path, "--private-key-file")?;
            let key = SigningKey::from_pem(&pem).map_err(|error| CredentialError::Key {
                origin: "--private-key-file",
                where_: path.display().to_string(),
                error,
            })?;
            return Ok(Some(Self::ServiceAccount {
                account: ServiceAccount {
                    uid: uid.clone(),
                    key,
                    login_endpoint: None,
                },
                origin: "--service-account-uid",
            }));
        }
        if let Some(uid) = &flags.uid {
            let (password, origin) = match &flags.password_file {
                Some(path) => {
                    let bytes = read(path, "--password-file")?;
                    let text = String::from_utf8_lossy(&bytes);
                    // A file ends with a newline; the password does not.
                    let pw = text.trim_end_matches(['\r', '\n']).to_owned();
                    (pw, "--password-file")
                }
                None => match env.get(ENV_PASSWORD) {
                    Some(pw) => (pw.to_owned(), ENV_PASSWORD),
                    None => return Err(CredentialError::NoPassword { uid: uid.clone() }),
                },
            };
            if password.is_empty() {
                return Err(CredentialError::EmptyPassword { origin });
            }
            return Ok(Some(Self::Password {
                uid: uid.clone(),
                password: Secret::new(password),
                origin,
            }));
        }
        if let Some(value) = env.get(ENV_SERVICE_ACCOUNT_CREDENTIAL) {
            let account = service_account_from_env(value)?;
            return Ok(Some(Self::ServiceAccount {
                account,
                origin: ENV_SERVICE_ACCOUNT_CREDENTIAL,
            }));
        }
        Ok(None)
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, CredentialError> {
    read_bounded(path, MAX_CREDENTIAL_FILE).map_err(|error| CredentialError::Read {
        what,
        path: path.to_owned(),
        error,
    })
}

/// `DCOS_SERVICE_ACCOUNT_CREDENTIAL`: the JSON itself, or a path to a file holding it.
fn service_account_from_env(value: &str) -> Result<ServiceAccount, CredentialError> {
    let trimmed = value.trim();
    if trimmed.starts_with('{') {
        return ServiceAccount::from_json(trimmed.as_bytes(), ENV_SERVICE_ACCOUNT_CREDENTIAL);
    }
    let path = Path::new(trimmed);
    let bytes = read(path, ENV_SERVICE_ACCOUNT_CREDENTIAL)?;
    let origin = format!("{ENV_SERVICE_ACCOUNT_CREDENTIAL} file {}", path.display());
    ServiceAccount::from_json(&bytes, &origin)
}

impl ServiceAccount {
    /// Parse the credential JSON of reference §7. Unknown keys are ignored (it is DC/OS's
    /// format); `scheme`, when present, must be `RS256`.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Self, CredentialError> {
        let bad = |why: String| CredentialError::BadJson {
            origin: origin.to_owned(),
            why,
        };
        // Parsed as a `Value` first: serde's typed errors would quote the offending
        // value, which may be the key. Syntax errors give only a line and column.
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            bad(format!(
                "not JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let serde_json::Value::Object(map) = value else {
            return Err(bad("not a JSON object".into()));
        };
        let text = |key: &str| -> Result<Option<&str>, CredentialError> {
            match map.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.trim())),
                Some(_) => Err(bad(format!("`{key}` is not a string"))),
            }
        };
        if let Some(scheme) = text("scheme")?
            && scheme != SCHEME_RS256
        {
            return Err(bad(format!(
                "`scheme` is {:?}, but only RS256 is supported",
                super::printable(scheme)
            )));
        }
        let uid = text("uid")?.ok_or_else(|| bad("`uid` is missing".into()))?;
        let pem = text("private_key")?.ok_or_else(|| bad("`private_key` is missing".into()))?;
        let key =
            SigningKey::from_pem(pem.as_bytes()).map_err(|e| bad(format!("`private_key`: {e}")))?;
        let login_endpoint = match text("login_endpoint")? {
            None => None,
            Some(url) => {
                let uri: Uri = url
                    .parse()
                    .map_err(|_| bad("`login_endpoint` is not a URL".into()))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(bad(
                        "`login_endpoint` must be an http:// or https:// URL with a host".into(),
                    ));
                }
                Some(uri)
            }
        };
        Ok(Self {
            uid: uid.to_owned(),
            key,
            login_endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const PKCS8: &str = include_str!("../../tests/fixtures/keys/sa_pkcs8.pem");
    const PKCS1: &str = include_str!("../../tests/fixtures/keys/sa_pkcs1.pem");
    const EC: &str = include_str!("../../tests/fixtures/keys/ec.pem");

    /// The credential JSON, with the keys of `extra` (a JSON object's members) added or
    /// replaced.
    fn json(uid: &str, key: &str, extra: &str) -> String {
        let mut v = serde_json::json!({"scheme": "RS256", "uid": uid, "private_key": key});
        let extra: serde_json::Value =
            serde_json::from_str(&format!("{{{}}}", extra.trim_end_matches(','))).unwrap();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v.to_string()
    }

    #[test]
    fn keys_in_both_pem_forms_are_accepted_and_others_are_named() {
        assert!(SigningKey::from_pem(PKCS8.as_bytes()).is_ok());
        assert!(SigningKey::from_pem(PKCS1.as_bytes()).is_ok());
        assert_eq!(
            SigningKey::from_pem(EC.as_bytes()).unwrap_err(),
            KeyError::NotRsa
        );
        assert_eq!(
            SigningKey::from_pem(b"not a key").unwrap_err(),
            KeyError::NotPem
        );
        let k = SigningKey::from_pem(PKCS8.as_bytes()).unwrap();
        assert_eq!(format!("{k:?}"), "SigningKey(<redacted>)");
    }

    #[test]
    fn the_env_credential_is_json_or_a_file_path() {
        let text = json(
            "my-sa",
            PKCS8,
            r#""login_endpoint":"https://leader.mesos/acs/api/v1/auth/login","extra":1,"#,
        );
        let env = Env::from_pairs([(ENV_SERVICE_ACCOUNT_CREDENTIAL, text.clone())]);
        let c = Credential::resolve(&CredentialFlags::default(), &env)
            .unwrap()
            .unwrap();
        let Credential::ServiceAccount { account, origin } = &c else {
            panic!("{c:?}")
        };
        assert_eq!(account.uid, "my-sa");
        assert_eq!(*origin, ENV_SERVICE_ACCOUNT_CREDENTIAL);
        assert_eq!(
            account.login_endpoint.as_ref().unwrap(),
            "https://leader.mesos/acs/api/v1/auth/login"
        );
        assert!(!format!("{c:?}").contains("BEGIN"));
        assert!(c.describe().contains("my-sa"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cred.json");
        std::fs::write(&file, &text).unwrap();
        let env = Env::from_pairs([(ENV_SERVICE_ACCOUNT_CREDENTIAL, file.display().to_string())]);
        let c = Credential::resolve(&CredentialFlags::default(), &env)
            .unwrap()
            .unwrap();
        assert!(matches!(c, Credential::ServiceAccount { .. }));
    }

    #[test]
    fn flags_beat_the_env_credential_and_none_means_the_cli_config() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, PKCS1).unwrap();
        let env = Env::from_pairs([(ENV_SERVICE_ACCOUNT_CREDENTIAL, json("env-sa", PKCS8, ""))]);
        let flags = CredentialFlags {
            service_account_uid: Some("flag-sa".into()),
            private_key_file: Some(key),
            ..Default::default()
        };
        let Some(Credential::ServiceAccount { account, .. }) =
            Credential::resolve(&flags, &env).unwrap()
        else {
            panic!("expected the flag's service account")
        };
        assert_eq!(account.uid, "flag-sa");
        let token_file = CredentialFlags {
            token_file: Some(dir.path().join("t")),
            ..Default::default()
        };
        assert!(matches!(
            Credential::resolve(&token_file, &env).unwrap(),
            Some(Credential::TokenFile(_))
        ));
        assert!(
            Credential::resolve(&CredentialFlags::default(), &Env::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn passwords_come_from_a_file_or_the_environment_and_are_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2\n").unwrap();
        let flags = CredentialFlags {
            uid: Some("alice".into()),
            password_file: Some(pw),
            ..Default::default()
        };
        let c = Credential::resolve(&flags, &Env::default())
            .unwrap()
            .unwrap();
        let Credential::Password { password, .. } = &c else {
            panic!()
        };
        assert_eq!(password.expose(), "hunter2");
        assert!(!format!("{c:?} {}", c.describe()).contains("hunter2"));

        let flags = CredentialFlags {
            uid: Some("alice".into()),
            ..Default::default()
        };
        let env = Env::from_pairs([(ENV_PASSWORD, "s3cret")]);
        let Some(Credential::Password {
            password, origin, ..
        }) = Credential::resolve(&flags, &env).unwrap()
        else {
            panic!()
        };
        assert_eq!((password.expose(), origin), ("s3cret", ENV_PASSWORD));
        let e = Credential::resolve(&flags, &Env::default()).unwrap_err();
        assert!(e.to_string().contains("--password-file"), "{e}");
    }

    #[test]
    fn bad_credentials_say_what_is_wrong_without_the_secret() {
        let cases = [
            (r#"{"uid":"sa"}"#.to_owned(), "`private_key` is missing"),
            (
                json(
                    "sa",
                    "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----",
                    "",
                ),
                "`private_key`",
            ),
            (json("sa", EC, ""), "not an RSA key"),
            (json("sa", PKCS8, r#""scheme":"HS256","#), "only RS256"),
            (
                json("sa", PKCS8, r#""login_endpoint":"leader.mesos","#),
                "login_endpoint",
            ),
            (
                r#"{"uid": 5, "private_key": "sekrit"}"#.to_owned(),
                "`uid` is not a string",
            ),
            (r#"{"uid": "sa", "private_key": "#.to_owned(), "not JSON"),
        ];
        for (text, want) in cases {
            let env = Env::from_pairs([(ENV_SERVICE_ACCOUNT_CREDENTIAL, text.clone())]);
            let e = Credential::resolve(&CredentialFlags::default(), &env).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(want), "{msg}");
            assert!(
                !msg.contains("sekrit") && !msg.contains("c2VjcmV0"),
                "{msg}"
            );
            assert!(!msg.contains("MII"), "a key leaked into: {msg}");
        }
        // A path that is not there names the variable and the path.
        let env = Env::from_pairs([(ENV_SERVICE_ACCOUNT_CREDENTIAL, "/nonexistent/cred.json")]);
        let e = Credential::resolve(&CredentialFlags::default(), &env).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cred.json"), "{e}");
    }
}
