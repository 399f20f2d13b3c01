//! The overrides (reference §4) and the validation that follows them: one parsed
//! [`DcosFile`] plus the environment and the flags become one [`ClusterConfig`].
//!
//! `--upstream` > `DCOS_URL` > `core.dcos_url`; `DCOS_ACS_TOKEN` > `core.dcos_acs_token`;
//! `DCOS_SSL_VERIFY` > `core.ssl_verify` > the system's roots; `DCOS_TIMEOUT` >
//! `core.timeout`. An empty variable counts as unset, as in the Python CLI. The master URL
//! is validated here, after the overrides, since one may replace a bad value in the file.
//! No I/O.

use std::path::{Path, PathBuf};

use http::Uri;

use super::error::{ConfigError, ValueSource, shown};
use super::parse::{DcosFile, FileToken, KEY_DCOS_ACS_TOKEN, KEY_DCOS_URL, parse_timeout_str};
use super::{ClusterConfig, ConfigSource, DiscoverOptions, Origins, SslVerify};
use crate::dcos::token::{Token, TokenError};
use crate::env::Env;

/// Environment variable overriding `core.dcos_url`.
pub(super) const ENV_DCOS_URL: &str = "DCOS_URL";
/// Environment variable overriding `core.dcos_acs_token`.
const ENV_DCOS_ACS_TOKEN: &str = "DCOS_ACS_TOKEN";
/// Environment variable overriding `core.ssl_verify`.
const ENV_DCOS_SSL_VERIFY: &str = "DCOS_SSL_VERIFY";
/// Environment variable overriding `core.timeout`.
pub(super) const ENV_DCOS_TIMEOUT: &str = "DCOS_TIMEOUT";

/// The command-line flag that overrides every other source of the master URL.
const FLAG_UPSTREAM: &str = "--upstream";

/// The URL that overrides the file: `opts.upstream`, else `DCOS_URL`, with where it came
/// from. Not yet validated.
pub(super) fn url_override<'a>(
    opts: &'a DiscoverOptions,
    env: &'a Env,
) -> Option<(&'a str, ValueSource)> {
    if let Some(url) = opts.upstream.as_deref().filter(|u| !u.trim().is_empty()) {
        return Some((url, ValueSource::Flag(FLAG_UPSTREAM)));
    }
    env.get(ENV_DCOS_URL)
        .filter(|u| !u.trim().is_empty())
        .map(|url| (url, ValueSource::Env(ENV_DCOS_URL)))
}

/// Validate a master URL: an absolute `http`/`https` URL with a host, no credentials, no
/// query and no fragment. A path prefix is kept, minus one trailing `/`.
fn parse_dcos_url(raw: &str, at: &ValueSource) -> Result<Uri, ConfigError> {
    let value = raw.trim();
    let invalid = |reason: &str| ConfigError::InvalidUrl {
        at: at.clone(),
        value: shown(value),
        reason: reason.to_owned(),
    };
    let uri: Uri = value
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(authority)) => authority,
        (Some("http" | "https"), None) => return Err(invalid("it has no host")),
        (Some(_), _) => return Err(invalid("the scheme must be http or https")),
        (None, _) => {
            return Err(invalid(
                "it must be an absolute URL such as https://master.example.com",
            ));
        }
    };
    if authority.as_str().contains('@') {
        return Err(ConfigError::UrlHasCredentials { at: at.clone() });
    }
    if authority.host().is_empty() {
        return Err(invalid("it has no host"));
    }
    if uri.query().is_some() || value.contains('?') {
        return Err(invalid("it must not have a query (?…)"));
    }
    if value.contains('#') {
        return Err(invalid("it must not have a fragment (#…)"));
    }
    let path = uri.path();
    match path.strip_suffix('/') {
        Some(prefix) if !prefix.is_empty() => {
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(
                prefix
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?,
            );
            Uri::from_parts(parts).map_err(|e| invalid(&e.to_string()))
        }
        _ => Ok(uri),
    }
}

/// Merge one parsed file with the overrides and validate the result (no I/O):
/// `--upstream` > `DCOS_URL` > `core.dcos_url`; `DCOS_ACS_TOKEN` > `core.dcos_acs_token`;
/// `DCOS_SSL_VERIFY` > `core.ssl_verify` > system roots; `DCOS_TIMEOUT` > `core.timeout`.
/// Empty variables count as unset. For [`ConfigSource::EnvOnly`] pass
/// `DcosFile::default()`.
pub fn apply_overrides(
    source: ConfigSource,
    dcos_dir: PathBuf,
    file: &DcosFile,
    opts: &DiscoverOptions,
    env: &Env,
) -> Result<ClusterConfig, ConfigError> {
    let file_path = source.file().map(Path::to_path_buf);

    let (dcos_url, url_from) = match (url_override(opts, env), &file.dcos_url, &file_path) {
        (Some((url, at)), _, _) => (parse_dcos_url(url, &at)?, at),
        (None, Some(url), Some(path)) => {
            let at = ValueSource::file(path, KEY_DCOS_URL);
            (parse_dcos_url(url, &at)?, at)
        }
        (None, _, Some(path)) => return Err(ConfigError::MissingUrl { file: path.clone() }),
        (None, _, None) => {
            return Err(ConfigError::NoConfig {
                dir: dcos_dir,
                missing: false,
            });
        }
    };

    let env_token = match env.get(ENV_DCOS_ACS_TOKEN).map(Token::new) {
        None | Some(Err(TokenError::Empty)) => None,
        Some(Ok(token)) => Some(token),
        Some(Err(TokenError::NotHeaderSafe)) => {
            return Err(ConfigError::InvalidToken {
                at: ValueSource::Env(ENV_DCOS_ACS_TOKEN),
            });
        }
    };
    let file_has_token = !matches!(file.token, FileToken::Absent);
    let token_from = match (&env_token, &file.token, &file_path) {
        (Some(_), _, _) => Some(ValueSource::Env(ENV_DCOS_ACS_TOKEN)),
        (None, FileToken::Valid(_), Some(path)) => {
            Some(ValueSource::file(path, KEY_DCOS_ACS_TOKEN))
        }
        _ => None,
    };
    let token = match (env_token, &file.token, &file_path) {
        (Some(token), _, _) => Some(token),
        (None, FileToken::Valid(token), _) => Some(token.clone()),
        (None, FileToken::Absent, _) => None,
        (None, FileToken::NotHeaderSafe, path) => {
            return Err(ConfigError::InvalidToken {
                at: match path {
                    Some(path) => ValueSource::file(path, KEY_DCOS_ACS_TOKEN),
                    None => ValueSource::Env(ENV_DCOS_ACS_TOKEN),
                },
            });
        }
    };

    let ssl_verify = match env.get(ENV_DCOS_SSL_VERIFY) {
        Some(value) => SslVerify::from_setting(value),
        None => file.ssl_verify.clone().unwrap_or(SslVerify::System),
    };

    let timeout = match env.get(ENV_DCOS_TIMEOUT) {
        Some(value) => parse_timeout_str(value, || ValueSource::Env(ENV_DCOS_TIMEOUT))?,
        None => file.timeout,
    };

    let shadowed_file_token = match (&token_from, &file_path) {
        (Some(ValueSource::Env(_)), Some(path)) if file_has_token => Some(path.clone()),
        _ => None,
    };
    Ok(ClusterConfig {
        source,
        dcos_dir,
        name: file.name.clone(),
        dcos_url,
        token,
        ssl_verify,
        timeout,
        origins: Origins {
            url: Some(url_from),
            token: token_from,
            shadowed_file_token,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// Every value's origin is recorded, and an environment token that beats the file's
    /// is named as such, with advice that fits it.
    #[test]
    fn origins_name_where_each_value_came_from() {
        let cfg = discover(&opts("single"), &no_env()).unwrap();
        let file = cluster_file("single", "0f1e2d3c-0000-4000-8000-000000000001");
        assert_eq!(
            cfg.origins.url,
            Some(ValueSource::file(&file, KEY_DCOS_URL))
        );
        assert_eq!(
            cfg.origins.token,
            Some(ValueSource::file(&file, KEY_DCOS_ACS_TOKEN))
        );
        assert!(cfg.origins.token_refresh_hint().contains("dcos auth login"));

        let other = "eyJhbGciOiJIUzI1NiJ9.eyJ1aWQiOiJib2IifQ.c2ln";
        let e = env([
            (ENV_DCOS_ACS_TOKEN, other),
            (ENV_DCOS_URL, "https://m.example.com"),
        ]);
        let cfg = discover(&opts("single"), &e).unwrap();
        assert_eq!(cfg.origins.url, Some(ValueSource::Env(ENV_DCOS_URL)));
        assert_eq!(
            cfg.origins.token,
            Some(ValueSource::Env(ENV_DCOS_ACS_TOKEN))
        );
        assert_eq!(
            cfg.origins.shadowed_file_token.as_deref(),
            Some(file.as_path())
        );
        let hint = cfg.origins.token_refresh_hint();
        assert!(hint.contains("unset DCOS_ACS_TOKEN"), "{hint}");
        assert!(hint.contains(&file.display().to_string()), "{hint}");
    }

    use super::*;
    use crate::dcos::config::discover;
    use crate::dcos::config::test_support::*;

    #[test]
    fn env_only_takes_everything_from_the_environment() {
        let e = env([
            (ENV_DCOS_URL, "https://env.example.com/prefix/"),
            (ENV_DCOS_ACS_TOKEN, TOKEN),
            (ENV_DCOS_SSL_VERIFY, "false"),
            (ENV_DCOS_TIMEOUT, "7"),
        ]);
        let cfg = discover(&opts("does_not_exist"), &e).unwrap();
        assert_eq!(
            cfg,
            ClusterConfig {
                source: ConfigSource::EnvOnly,
                dcos_dir: fixture("does_not_exist"),
                name: None,
                dcos_url: "https://env.example.com/prefix".parse().unwrap(),
                token: Some(token()),
                ssl_verify: SslVerify::Insecure,
                timeout: Some(Duration::from_secs(7)),
                origins: Origins {
                    url: Some(ValueSource::Env(ENV_DCOS_URL)),
                    token: Some(ValueSource::Env(ENV_DCOS_ACS_TOKEN)),
                    shadowed_file_token: None,
                },
            }
        );
        // --upstream alone is enough; no token is "not logged in".
        let o = DiscoverOptions {
            upstream: Some("http://127.0.0.1:8080".into()),
            ..opts("does_not_exist")
        };
        let cfg = discover(&o, &no_env()).unwrap();
        assert_eq!(cfg.source, ConfigSource::EnvOnly);
        assert_eq!(cfg.dcos_url, "http://127.0.0.1:8080/");
        assert_eq!(cfg.token, None);
        assert_eq!(cfg.ssl_verify, SslVerify::System);
        // An empty DCOS_URL does not count.
        let (err, _) = discover_err(&opts("does_not_exist"), &env([(ENV_DCOS_URL, "")]));
        assert!(matches!(err, ConfigError::NoConfig { .. }), "{err:?}");
    }

    #[test]
    fn missing_url_names_the_file_and_the_fix() {
        let (err, msg) = discover_err(&opts("no_url"), &no_env());
        assert!(matches!(err, ConfigError::MissingUrl { .. }), "{err:?}");
        assert_eq!(
            msg,
            format!(
                "{} has no core.dcos_url: run `dcos cluster setup <url>`, or pass --upstream <url>",
                cluster_file("no_url", "a1").display()
            )
        );
        // Either override fills the gap; the file's token is still used.
        for (o, e) in [
            (
                opts("no_url"),
                env([(ENV_DCOS_URL, "https://env.example.com")]),
            ),
            (
                DiscoverOptions {
                    upstream: Some("https://env.example.com".into()),
                    ..opts("no_url")
                },
                no_env(),
            ),
        ] {
            let cfg = discover(&o, &e).unwrap();
            assert_eq!(cfg.dcos_url, "https://env.example.com/");
            assert_eq!(cfg.token, Some(token()));
            assert_eq!(cfg.name.as_deref(), Some("no-url"));
        }
    }

    #[test]
    fn dcos_ssl_verify_overrides_the_file() {
        let o = with_cluster("ssl_verify", "path");
        let cases = [
            ("false", SslVerify::Insecure),
            ("true", SslVerify::System),
            ("/etc/ca.pem", SslVerify::CaBundle("/etc/ca.pem".into())),
            // Empty means unset: the file's value stays.
            (
                "",
                SslVerify::CaBundle("/home/u/.dcos/clusters/path/dcos_ca.crt".into()),
            ),
        ];
        for (value, want) in cases {
            let cfg = discover(&o, &env([(ENV_DCOS_SSL_VERIFY, value)])).unwrap();
            assert_eq!(cfg.ssl_verify, want, "DCOS_SSL_VERIFY={value:?}");
        }
        let cfg = discover(
            &with_cluster("ssl_verify", "str_false"),
            &env([(ENV_DCOS_SSL_VERIFY, "TRUE")]),
        )
        .unwrap();
        assert_eq!(cfg.ssl_verify, SslVerify::System);
    }

    #[test]
    fn url_path_prefix_is_kept_without_trailing_slash() {
        let cfg = discover(&opts("url_prefix"), &no_env()).unwrap();
        assert_eq!(cfg.dcos_url.path(), "/dcos");
        assert_eq!(cfg.dcos_url, "https://gw.example.com/dcos");
        assert_eq!(cfg.dcos_url.host(), Some("gw.example.com"));
        let at = ValueSource::Flag(FLAG_UPSTREAM);
        let u = |s: &str| parse_dcos_url(s, &at).unwrap();
        assert_eq!(u("https://m.example.com/").path(), "/");
        assert_eq!(u("https://m.example.com").path(), "/");
        assert_eq!(u("https://m.example.com/a/b//").path(), "/a/b/");
        assert_eq!(
            u(" http://m.example.com:8080/x ").to_string(),
            "http://m.example.com:8080/x"
        );
        assert_eq!(u("HTTPS://m.example.com").scheme_str(), Some("https"));
    }

    #[test]
    fn dcos_url_then_upstream_override_the_file() {
        let e = env([(ENV_DCOS_URL, "https://env.example.com")]);
        let cfg = discover(&opts("single"), &e).unwrap();
        assert_eq!(cfg.dcos_url, "https://env.example.com/");
        let o = DiscoverOptions {
            upstream: Some("https://flag.example.com".into()),
            ..opts("single")
        };
        assert_eq!(
            discover(&o, &e).unwrap().dcos_url,
            "https://flag.example.com/"
        );
        // Empty DCOS_URL: the file's URL.
        let cfg = discover(&opts("single"), &env([(ENV_DCOS_URL, "")])).unwrap();
        assert_eq!(cfg.dcos_url, "https://master.single.example.com/");
        // A bad URL in the file does not matter when it is overridden.
        let cfg = discover(&with_cluster("bad_url", "ftp"), &e).unwrap();
        assert_eq!(cfg.dcos_url, "https://env.example.com/");
    }

    #[test]
    fn bad_urls_in_the_file_name_the_file_key_and_value() {
        let cases = [
            (
                "ftp",
                "ftp://master.example.com",
                "scheme must be http or https",
            ),
            ("relative", "master.example.com", "absolute URL"),
            ("query", "https://master.example.com/?x=1", "query"),
            ("fragment", "https://master.example.com/#top", "fragment"),
            ("spaces", "https://master example.com", ""),
        ];
        for (id, value, reason) in cases {
            let (err, msg) = discover_err(&with_cluster("bad_url", id), &no_env());
            assert!(
                matches!(err, ConfigError::InvalidUrl { .. }),
                "{id}: {err:?}"
            );
            let at = format!("core.dcos_url in {}", cluster_file("bad_url", id).display());
            assert!(msg.starts_with(&at), "{id}: {msg}");
            assert!(msg.contains(&format!("{value:?}")), "{id}: {msg}");
            assert!(msg.contains(reason), "{id}: {msg}");
        }
        let (err, msg) = discover_err(&with_cluster("bad_url", "userinfo"), &no_env());
        assert!(
            matches!(err, ConfigError::UrlHasCredentials { .. }),
            "{err:?}"
        );
        assert!(msg.starts_with("core.dcos_url in "), "{msg}");
    }

    #[test]
    fn bad_urls_from_env_and_flag_name_their_source() {
        let (err, msg) = discover_err(&opts("single"), &env([(ENV_DCOS_URL, "localhost:8080")]));
        assert!(matches!(err, ConfigError::InvalidUrl { .. }), "{err:?}");
        assert!(
            msg.starts_with("DCOS_URL is not a usable DC/OS URL (\"localhost:8080\")"),
            "{msg}"
        );
        let o = DiscoverOptions {
            upstream: Some("wss://m.example.com".into()),
            ..opts("single")
        };
        let (_, msg) = discover_err(&o, &no_env());
        assert!(
            msg.starts_with("--upstream is not a usable DC/OS URL (\"wss://m.example.com\")"),
            "{msg}"
        );
        let (_, msg) = discover_err(
            &opts("does_not_exist"),
            &env([(ENV_DCOS_URL, "https://u:hunter2@m.example.com")]),
        );
        assert!(msg.starts_with("DCOS_URL holds credentials"), "{msg}");
        for bad in [
            "https://",
            "http:///path",
            "/just/a/path",
            "https://m.example.com?",
        ] {
            let err = parse_dcos_url(bad, &ValueSource::Env(ENV_DCOS_URL)).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidUrl { .. }),
                "{bad}: {err:?}"
            );
        }
        // Long values are shortened in the message.
        let long = format!("ftp://{}", "a".repeat(5000));
        let err = parse_dcos_url(&long, &ValueSource::Env(ENV_DCOS_URL)).unwrap_err();
        assert!(err.to_string().len() < 400, "{err}");
    }

    #[test]
    fn dcos_acs_token_overrides_the_file() {
        let other = "eyJhbGciOiJub25lIn0.eyJ1aWQiOiJib2IifQ.sig";
        let cfg = discover(&opts("single"), &env([(ENV_DCOS_ACS_TOKEN, other)])).unwrap();
        assert_eq!(cfg.token, Some(Token::new(other).unwrap()));
        // Empty or blank: the file's token.
        for blank in ["", "   "] {
            let cfg = discover(&opts("single"), &env([(ENV_DCOS_ACS_TOKEN, blank)])).unwrap();
            assert_eq!(cfg.token, Some(token()));
        }
        // Logging in through the environment only.
        let cfg = discover(&opts("no_token"), &env([(ENV_DCOS_ACS_TOKEN, TOKEN)])).unwrap();
        assert_eq!(cfg.token, Some(token()));
    }

    #[test]
    fn unusable_token_is_an_error_that_never_shows_it() {
        let (err, msg) = discover_err(&opts("bad_token"), &no_env());
        assert!(matches!(err, ConfigError::InvalidToken { .. }), "{err:?}");
        assert!(
            msg.starts_with(&format!(
                "core.dcos_acs_token in {} holds characters",
                cluster_file("bad_token", "a1").display()
            )),
            "{msg}"
        );
        assert!(msg.contains("dcos auth login"), "{msg}");
        assert!(!msg.contains("Evil"), "{msg}");
        // A good DCOS_ACS_TOKEN overrides the unusable one in the file.
        let cfg = discover(&opts("bad_token"), &env([(ENV_DCOS_ACS_TOKEN, TOKEN)])).unwrap();
        assert_eq!(cfg.token, Some(token()));
        // A bad DCOS_ACS_TOKEN is named as such.
        let bad = format!("{TOKEN}\r\nX-Evil: 1");
        let (err, msg) = discover_err(&opts("single"), &env([(ENV_DCOS_ACS_TOKEN, bad.as_str())]));
        assert!(matches!(err, ConfigError::InvalidToken { .. }), "{err:?}");
        assert!(msg.starts_with("DCOS_ACS_TOKEN holds characters"), "{msg}");
    }
}
