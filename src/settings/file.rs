//! The settings file (`--config FILE`) as written: [`FileSettings`] and its tables, read
//! with a size bound and parsed strictly (unknown keys are errors that name the line and
//! column). Validation happens later, in [`super::Settings::resolve`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::SettingsError;
use crate::files::{ReadError, read_bounded};
use crate::types::{ClientAuth, LogFormat, WatchMode, parse_duration};
use crate::upstream::route::ProxyText;

/// The largest settings file read; anything bigger is not a settings file.
const MAX_SETTINGS_FILE: u64 = 1024 * 1024;

/// The settings file (`--config FILE`), as written. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// `listen`: address to listen on.
    pub listen: Option<String>,
    /// `client_auth`: "keep" or "replace".
    pub client_auth: Option<ClientAuth>,
    /// `shutdown_grace`: e.g. "30s".
    pub shutdown_grace: Option<DurationSetting>,
    /// `header_read_timeout`: e.g. "10s".
    pub header_read_timeout: Option<DurationSetting>,
    /// `body_idle_timeout`: e.g. "60s".
    pub body_idle_timeout: Option<DurationSetting>,
    /// `body_min_rate`: bytes per second, 0 for none.
    pub body_min_rate: Option<u64>,
    /// `send_timeout`: e.g. "60s".
    pub send_timeout: Option<DurationSetting>,
    /// `allow_remote`: permit a non-loopback `listen` address.
    pub allow_remote: Option<bool>,
    /// `allowed_hosts`: `Host` patterns.
    pub allowed_hosts: Option<Vec<String>>,
    /// `allowed_origins`: browser origins.
    pub allowed_origins: Option<Vec<String>>,
    /// `path_secret`: generate a path secret.
    pub path_secret: Option<bool>,
    /// `path_secret_file`: read the path secret from this file.
    pub path_secret_file: Option<PathBuf>,
    /// `read_only`: pass only GET, HEAD and OPTIONS.
    pub read_only: Option<bool>,
    /// `deny_paths`: anchored regexes.
    pub deny_paths: Option<Vec<String>>,
    /// `deny_methods`: methods refused.
    pub deny_methods: Option<Vec<String>>,
    /// `pass_forwarding_headers`: forward a client's `Forwarded`, `X-Forwarded-*`,
    /// `X-Real-IP`.
    pub pass_forwarding_headers: Option<bool>,
    /// `pass_cookies`: forward a client's `Cookie`.
    pub pass_cookies: Option<bool>,
    /// `allowed_upgrades`: protocols a client may switch to.
    pub allowed_upgrades: Option<Vec<String>>,
    /// `max_connections`.
    pub max_connections: Option<usize>,
    /// `max_tunnels`.
    pub max_tunnels: Option<usize>,
    /// `worker_threads`: serving threads.
    pub worker_threads: Option<usize>,
    /// `tunnel_idle_timeout`: e.g. "1h".
    pub tunnel_idle_timeout: Option<DurationSetting>,
    /// `max_header_bytes`.
    pub max_header_bytes: Option<usize>,
    /// `[dcos]` table.
    #[serde(default)]
    pub dcos: DcosSection,
    /// `[upstream]` table.
    #[serde(default)]
    pub upstream: UpstreamSection,
    /// `[log]` table.
    #[serde(default)]
    pub log: LogSection,
}

/// `[dcos]`: where the DC/OS CLI config lives and which cluster to use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcosSection {
    /// `dcos.dir`: the DC/OS CLI directory (`~` is expanded).
    pub dir: Option<PathBuf>,
    /// `dcos.cluster`: cluster name or ID.
    pub cluster: Option<String>,
    /// `dcos.watch`: "auto" or "poll".
    pub watch: Option<WatchMode>,
}

/// `[upstream]`: the master and how to talk to it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `upstream.url`: overrides `core.dcos_url`.
    pub url: Option<String>,
    /// `upstream.response_timeout`.
    pub response_timeout: Option<DurationSetting>,
    /// `upstream.connect_timeout`.
    pub connect_timeout: Option<DurationSetting>,
    /// `upstream.proxy`: a proxy URL, or "none" to ignore the proxy variables.
    pub proxy: Option<ProxyText>,
    /// `upstream.proxy_command`: a command carrying each connection (`%h`, `%p`).
    pub proxy_command: Option<String>,
    /// `upstream.tls_server_name`: the name the master's certificate is checked against.
    pub tls_server_name: Option<String>,
}

/// `[log]`: log format and level.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `log.format`: "text" or "json".
    pub format: Option<LogFormat>,
    /// `log.level`: a tracing filter such as "info" or "dcos_token_proxy=debug".
    pub level: Option<String>,
}

/// A duration in the settings file: whole seconds (`30`) or a string (`"30s"`, `"500ms"`,
/// `"2m"`, `"1h"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSetting(pub Duration);

impl<'de> Deserialize<'de> for DurationSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Self(Duration::from_secs(s))),
            Raw::Text(t) => parse_duration(&t)
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl FileSettings {
    /// Read and parse a settings file.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let read_err = |error| SettingsError::Read {
            path: path.to_owned(),
            error,
        };
        let bytes = read_bounded(path, MAX_SETTINGS_FILE).map_err(|e| match e {
            ReadError::Io(e) => read_err(e),
            ReadError::NotAFile => read_err(std::io::Error::other("not a regular file")),
            ReadError::TooLarge => SettingsError::TooLarge {
                path: path.to_owned(),
            },
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| read_err(std::io::Error::other("not UTF-8 text, so not TOML")))?;
        Self::parse(path, &text)
    }

    /// Parse the text of a settings file; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SettingsError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let (line, column) = e
                .span()
                .map(|s| crate::text::line_col(text, s.start))
                .unwrap_or((1, 1));
            SettingsError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim_end().to_owned(),
            }
        })
    }
}
