//! The `dcos.toml` format (reference §2): one file's text to a [`DcosFile`].
//!
//! Only the keys the proxy uses are read (`core.dcos_url`, `core.dcos_acs_token`,
//! `core.ssl_verify`, `core.timeout`, `cluster.name`), each type-checked; every other key
//! and section is ignored, as the DC/OS CLI writes many. Nothing here merges the
//! environment or validates the URL: an override may replace it (see `env`). A syntax
//! error is rebuilt from the parser's short message and position, never from its
//! `Display`, which quotes the offending line (maybe a token).

use std::path::Path;
use std::time::Duration;

use super::SslVerify;
use super::error::{ConfigError, ValueSource, shown};
use crate::dcos::token::{Token, TokenError};
use crate::text::line_col;

/// The `[core]` table.
const KEY_CORE: &str = "core";
/// The `[cluster]` table.
const KEY_CLUSTER: &str = "cluster";
/// The master URL key.
pub(super) const KEY_DCOS_URL: &str = "core.dcos_url";
/// The token key.
pub(super) const KEY_DCOS_ACS_TOKEN: &str = "core.dcos_acs_token";
/// The TLS verification key.
const KEY_SSL_VERIFY: &str = "core.ssl_verify";
/// The request timeout key.
const KEY_TIMEOUT: &str = "core.timeout";
/// The cluster's human name key.
const KEY_CLUSTER_NAME: &str = "cluster.name";

/// The token as found in one file, kept apart from its validation so that a valid
/// `DCOS_ACS_TOKEN` can still override a file whose token is unusable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FileToken {
    /// No `core.dcos_acs_token`, or an empty one: not logged in.
    #[default]
    Absent,
    /// A usable token.
    Valid(Token),
    /// A token that holds characters not allowed in an HTTP header (the value is dropped).
    NotHeaderSafe,
}

/// The keys we use from one `dcos.toml`, parsed and type-checked but not yet merged with
/// the environment. Every other key in the file is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DcosFile {
    /// `core.dcos_url` as written (trimmed; empty counts as absent). Validated only after
    /// the overrides, because `DCOS_URL` or `--upstream` may replace it.
    pub dcos_url: Option<String>,
    /// `core.dcos_acs_token`.
    pub token: FileToken,
    /// `core.ssl_verify`; None when absent.
    pub ssl_verify: Option<SslVerify>,
    /// `core.timeout`; None when absent or 0.
    pub timeout: Option<Duration>,
    /// `cluster.name`; None when absent or empty.
    pub name: Option<String>,
}

/// Parse TOML into a table. The error is rebuilt from the parser's short message and
/// position, never from its `Display`, which quotes the offending line (maybe a token).
pub(super) fn parse_table(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            position: e.span().map(|span| line_col(text, span.start)),
            message: e.message().replace(['\n', '\r'], " ").trim().to_owned(),
        })
}

fn sub_table<'a>(
    path: &Path,
    table: &'a toml::Table,
    key: &'static str,
) -> Result<Option<&'a toml::Table>, ConfigError> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::Table(t)) => Ok(Some(t)),
        Some(_) => Err(ConfigError::WrongType {
            at: ValueSource::file(path, key),
            expected: "a table",
        }),
    }
}

/// The value of `full_key` (`table.short`) in an optional table.
fn value<'a>(table: Option<&'a toml::Table>, full_key: &str) -> Option<&'a toml::Value> {
    let short = full_key.rsplit('.').next().unwrap_or(full_key);
    table?.get(short)
}

fn string_value<'a>(
    path: &Path,
    table: Option<&'a toml::Table>,
    key: &'static str,
) -> Result<Option<&'a str>, ConfigError> {
    match value(table, key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ConfigError::WrongType {
            at: ValueSource::file(path, key),
            expected: "a string",
        }),
    }
}

/// `cluster.name`, trimmed; None when absent or empty.
pub(super) fn cluster_name(
    path: &Path,
    table: &toml::Table,
) -> Result<Option<String>, ConfigError> {
    let cluster = sub_table(path, table, KEY_CLUSTER)?;
    Ok(string_value(path, cluster, KEY_CLUSTER_NAME)?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned))
}

/// Parse a timeout in seconds from its string form (file or `DCOS_TIMEOUT`).
pub(super) fn parse_timeout_str(
    value: &str,
    at: impl FnOnce() -> ValueSource,
) -> Result<Option<Duration>, ConfigError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    match trimmed.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(secs) => Ok(Some(Duration::from_secs(secs))),
        Err(_) => Err(ConfigError::InvalidTimeout {
            at: at(),
            value: shown(trimmed),
        }),
    }
}

/// Parse one `dcos.toml`'s text. `path` is only used in error messages. An empty text is
/// a valid, empty file. Unknown keys and sections are ignored; a wrong type for a key we
/// use, bad TOML, or an unusable `core.timeout` is an error naming the file and the key.
/// The URL is checked later, by [`super::apply_overrides`], since an override may replace
/// it.
pub fn parse_file(path: &Path, text: &str) -> Result<DcosFile, ConfigError> {
    let table = parse_table(path, text)?;
    let core = sub_table(path, &table, KEY_CORE)?;

    let dcos_url = string_value(path, core, KEY_DCOS_URL)?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);

    let token = match string_value(path, core, KEY_DCOS_ACS_TOKEN)? {
        None => FileToken::Absent,
        Some(raw) => match Token::new(raw) {
            Ok(token) => FileToken::Valid(token),
            Err(TokenError::Empty) => FileToken::Absent,
            Err(TokenError::NotHeaderSafe) => FileToken::NotHeaderSafe,
        },
    };

    let ssl_verify = match value(core, KEY_SSL_VERIFY) {
        None => None,
        Some(toml::Value::Boolean(true)) => Some(SslVerify::System),
        Some(toml::Value::Boolean(false)) => Some(SslVerify::Insecure),
        Some(toml::Value::String(s)) => Some(SslVerify::from_setting(s)),
        Some(_) => {
            return Err(ConfigError::WrongType {
                at: ValueSource::file(path, KEY_SSL_VERIFY),
                expected: "\"true\", \"false\", the path of a CA bundle, or a boolean",
            });
        }
    };

    let at_timeout = || ValueSource::file(path, KEY_TIMEOUT);
    let timeout = match value(core, KEY_TIMEOUT) {
        None => None,
        Some(toml::Value::Integer(0)) => None,
        Some(toml::Value::Integer(secs)) => match u64::try_from(*secs) {
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => {
                return Err(ConfigError::InvalidTimeout {
                    at: at_timeout(),
                    value: secs.to_string(),
                });
            }
        },
        Some(toml::Value::String(s)) => parse_timeout_str(s, at_timeout)?,
        Some(_) => {
            return Err(ConfigError::WrongType {
                at: at_timeout(),
                expected: "a whole number of seconds",
            });
        }
    };

    let name = cluster_name(path, &table)?;

    Ok(DcosFile {
        dcos_url,
        token,
        ssl_verify,
        timeout,
        name,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::dcos::config::discover;
    use crate::dcos::config::env::{ENV_DCOS_TIMEOUT, ENV_DCOS_URL};
    use crate::dcos::config::test_support::*;

    #[test]
    fn empty_file_is_valid_but_has_no_url() {
        assert_eq!(
            parse_file(Path::new("/x"), "").unwrap(),
            DcosFile::default()
        );
        let (err, _) = discover_err(&opts("empty_file"), &no_env());
        assert!(matches!(err, ConfigError::MissingUrl { .. }), "{err:?}");
        let cfg = discover(
            &opts("empty_file"),
            &env([(ENV_DCOS_URL, "http://e.example.com")]),
        )
        .unwrap();
        assert_eq!(cfg.dcos_url, "http://e.example.com/");
        assert_eq!(cfg.token, None);
        assert_eq!(cfg.name, None);
        assert_eq!(cfg.ssl_verify, SslVerify::System);
        assert_eq!(cfg.timeout, None);
    }

    #[test]
    fn bad_toml_names_file_line_and_column_but_not_the_line() {
        let (err, msg) = discover_err(&opts("bad_toml"), &no_env());
        let ConfigError::Syntax { path, position, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path, &cluster_file("bad_toml", "a1"));
        assert_eq!(*position, Some((3, 63)));
        assert_eq!(
            msg,
            format!(
                "{} line 3, column 63: invalid basic string, expected `\"`; fix the TOML \
                 there (or rewrite it with `dcos cluster setup <url>`)",
                cluster_file("bad_toml", "a1").display()
            )
        );
    }

    #[test]
    fn syntax_errors_never_echo_the_source() {
        let secret_lines = [
            format!("[core]\ndcos_acs_token = \"{TOKEN}\" trailing"),
            format!("[core]\ndcos_acs_token = \"{TOKEN}\\q\""),
            format!("[core]\ndcos_acs_token = {TOKEN}"),
            format!("[core]\ndcos_acs_token = \"{TOKEN}\"\ndcos_acs_token = \"{TOKEN}\""),
        ];
        let wants = [
            "/x/dcos.toml line 2, column 65: unexpected key or value",
            "/x/dcos.toml line 2, column 64: missing escaped value",
            "/x/dcos.toml line 2, column 18: string values must be quoted",
            "/x/dcos.toml line 3, column 1: duplicate key",
        ];
        for (text, want) in secret_lines.iter().zip(wants) {
            let err = parse_file(Path::new("/x/dcos.toml"), text).unwrap_err();
            assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
            assert_no_secret(&err.to_string());
            assert_no_secret(&format!("{err:?}"));
            assert!(err.to_string().starts_with(want), "{err}");
        }
    }

    #[test]
    fn no_token_means_not_logged_in() {
        let cfg = discover(&opts("no_token"), &no_env()).unwrap();
        assert_eq!(cfg.token, None);
        assert_eq!(cfg.dcos_url, "https://master.example.com/");
        assert_eq!(cfg.ssl_verify, SslVerify::Insecure);
        assert_eq!(cfg.name.as_deref(), Some("logged-out"));
        // Empty and whitespace-only tokens are the same.
        for text in [
            "[core]\ndcos_acs_token = \"\"",
            "[core]\ndcos_acs_token = \"  \"",
        ] {
            let file = parse_file(Path::new("/x"), text).unwrap();
            assert_eq!(file.token, FileToken::Absent);
        }
    }

    #[test]
    fn ssl_verify_variants() {
        let cases = [
            ("str_true", SslVerify::System),
            ("str_false", SslVerify::Insecure),
            ("upper_false", SslVerify::Insecure),
            ("bool_true", SslVerify::System),
            ("bool_false", SslVerify::Insecure),
            ("empty", SslVerify::System),
            ("absent", SslVerify::System),
            (
                "path",
                SslVerify::CaBundle("/home/u/.dcos/clusters/path/dcos_ca.crt".into()),
            ),
        ];
        for (id, want) in cases {
            let cfg = discover(&with_cluster("ssl_verify", id), &no_env()).unwrap();
            assert_eq!(cfg.ssl_verify, want, "cluster {id}");
        }
    }

    #[test]
    fn unknown_keys_and_sections_are_ignored() {
        let cfg = discover(&opts("extra_keys"), &no_env()).unwrap();
        assert_eq!(cfg.dcos_url, "https://extra.example.com/");
        assert_eq!(cfg.token, Some(token()));
        assert_eq!(
            cfg.ssl_verify,
            SslVerify::CaBundle("/home/u/.dcos/clusters/x1/dcos_ca.crt".into())
        );
        assert_eq!(cfg.timeout, Some(Duration::from_secs(30)));
        assert_eq!(cfg.name.as_deref(), Some("extra"));
    }

    #[test]
    fn wrong_types_name_the_file_and_the_key() {
        let cases = [
            ("url_int", "core.dcos_url in ", "must be a string"),
            ("token_int", "core.dcos_acs_token in ", "must be a string"),
            ("ssl_int", "core.ssl_verify in ", "must be \"true\""),
            (
                "timeout_float",
                "core.timeout in ",
                "whole number of seconds",
            ),
            ("name_int", "cluster.name in ", "must be a string"),
            ("core_string", "core in ", "must be a table"),
            ("cluster_string", "cluster in ", "must be a table"),
        ];
        for (id, key, expected) in cases {
            let (err, msg) = discover_err(&with_cluster("wrong_types", id), &no_env());
            assert!(
                matches!(err, ConfigError::WrongType { .. }),
                "{id}: {err:?}"
            );
            let at = format!("{key}{}", cluster_file("wrong_types", id).display());
            assert!(msg.starts_with(&at), "{id}: {msg}");
            assert!(msg.contains(expected), "{id}: {msg}");
        }
        // The token's value is never shown, even when its type is wrong.
        let (_, msg) = discover_err(&with_cluster("wrong_types", "token_int"), &no_env());
        assert!(!msg.contains("12345"), "{msg}");
    }

    #[test]
    fn timeouts() {
        let (err, msg) = discover_err(&with_cluster("wrong_types", "timeout_negative"), &no_env());
        assert!(matches!(err, ConfigError::InvalidTimeout { .. }), "{err:?}");
        assert!(
            msg.starts_with("core.timeout in ") && msg.contains("\"-5\""),
            "{msg}"
        );
        let (err, msg) = discover_err(&with_cluster("wrong_types", "timeout_word"), &no_env());
        assert!(matches!(err, ConfigError::InvalidTimeout { .. }), "{err:?}");
        assert!(msg.contains("\"soon\""), "{msg}");
        // A numeric string is accepted; 0 means none.
        let cfg = discover(&opts("url_prefix"), &no_env()).unwrap();
        assert_eq!(cfg.timeout, Some(Duration::from_secs(60)));
        let parsed = |t: &str| parse_file(Path::new("/x"), &format!("[core]\ntimeout = {t}"));
        assert_eq!(parsed("0").unwrap().timeout, None);
        assert_eq!(parsed("\"0\"").unwrap().timeout, None);
        assert_eq!(
            parsed("\" 42 \"").unwrap().timeout,
            Some(Duration::from_secs(42))
        );
        // DCOS_TIMEOUT overrides, 0 clears, empty is unset, garbage is an error naming it.
        let o = opts("single");
        let t = |v: &str| discover(&o, &env([(ENV_DCOS_TIMEOUT, v)]));
        assert_eq!(t("5").unwrap().timeout, Some(Duration::from_secs(5)));
        assert_eq!(t("0").unwrap().timeout, None);
        assert_eq!(t("").unwrap().timeout, Some(Duration::from_secs(180)));
        let err = t("1m").unwrap_err();
        assert!(matches!(err, ConfigError::InvalidTimeout { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "DCOS_TIMEOUT must be a whole number of seconds (0 = none), not \"1m\""
        );
    }

    #[test]
    fn config_debug_never_shows_the_token() {
        let cfg = discover(&opts("single"), &no_env()).unwrap();
        assert_no_secret(&format!("{cfg:?}"));
        let file = parse_file(
            Path::new("/x"),
            &format!("[core]\ndcos_acs_token = \"{TOKEN}\""),
        )
        .unwrap();
        assert_eq!(file.token, FileToken::Valid(token()));
        assert_no_secret(&format!("{file:?}"));
    }
}
