//! Which credential flags were given, checked for combinations that make no sense
//! (`--private-key-file` without `--service-account-uid`, two sources at once). Reading
//! the key, password and credential files is the credential source's job
//! ([`crate::source::credential`]); settings only say where they are.
//!
//! A password is never a flag value (flags show in `ps`): it comes from
//! `--password-file` or `DCOS_PASSWORD`.

use std::path::PathBuf;

use super::{SettingsError, invalid};
use crate::cli::Cli;

/// The credential flags as given (all optional: none means "use the DC/OS CLI config,
/// or `DCOS_SERVICE_ACCOUNT_CREDENTIAL` when set").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialFlags {
    /// `--service-account-uid`: log in as this service account.
    pub service_account_uid: Option<String>,
    /// `--private-key-file`: the service account's PEM private key.
    pub private_key_file: Option<PathBuf>,
    /// `--uid`: log in as this user, with a password.
    pub uid: Option<String>,
    /// `--password-file`: the user's password (else `DCOS_PASSWORD`).
    pub password_file: Option<PathBuf>,
    /// `--token-file`: a token that something else keeps fresh.
    pub token_file: Option<PathBuf>,
}

impl CredentialFlags {
    /// Take the credential flags from `cli`, refusing combinations that cannot work.
    pub fn from_cli(cli: &Cli) -> Result<Self, SettingsError> {
        let flags = Self {
            service_account_uid: cli.service_account_uid.clone().filter(|s| !s.is_empty()),
            private_key_file: cli.private_key_file.clone(),
            uid: cli.uid.clone().filter(|s| !s.is_empty()),
            password_file: cli.password_file.clone(),
            token_file: cli.token_file.clone(),
        };
        flags.validate()?;
        Ok(flags)
    }

    /// True when no credential flag was given.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    fn validate(&self) -> Result<(), SettingsError> {
        match (&self.service_account_uid, &self.private_key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "--service-account-uid",
                    "needs --private-key-file FILE (the account's PEM private key)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "--private-key-file",
                    "needs --service-account-uid ID (whose key it is)".into(),
                ));
            }
            _ => {}
        }
        if self.password_file.is_some() && self.uid.is_none() {
            return Err(invalid(
                "--password-file",
                "needs --uid USER (whose password it is)".into(),
            ));
        }
        let given: Vec<&str> = [
            self.service_account_uid
                .as_ref()
                .map(|_| "--service-account-uid"),
            self.uid.as_ref().map(|_| "--uid"),
            self.token_file.as_ref().map(|_| "--token-file"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() > 1 {
            return Err(invalid(
                given[0],
                format!(
                    "cannot be combined with {}: give one credential source",
                    given[1..].join(" and ")
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(args: &[&str]) -> Result<CredentialFlags, SettingsError> {
        let mut all = vec!["dcos-token-proxy"];
        all.extend_from_slice(args);
        CredentialFlags::from_cli(&Cli::try_parse_from(all).unwrap())
    }

    #[test]
    fn each_source_alone_is_accepted() {
        assert!(flags(&[]).unwrap().is_empty());
        let sa = flags(&["--service-account-uid", "sa", "--private-key-file", "k"]).unwrap();
        assert_eq!(sa.service_account_uid.as_deref(), Some("sa"));
        let user = flags(&["--uid", "alice", "--password-file", "p"]).unwrap();
        assert_eq!(user.uid.as_deref(), Some("alice"));
        // The password may come from DCOS_PASSWORD instead.
        assert!(flags(&["--uid", "alice"]).is_ok());
        assert!(flags(&["--token-file", "t"]).unwrap().token_file.is_some());
    }

    #[test]
    fn half_given_and_combined_sources_are_refused() {
        let e = flags(&["--service-account-uid", "sa"]).unwrap_err();
        assert!(e.to_string().contains("--private-key-file"), "{e}");
        let e = flags(&["--private-key-file", "k"]).unwrap_err();
        assert!(e.to_string().contains("--service-account-uid"), "{e}");
        let e = flags(&["--password-file", "p"]).unwrap_err();
        assert!(e.to_string().contains("--uid"), "{e}");
        let e = flags(&["--uid", "a", "--token-file", "t"]).unwrap_err();
        assert!(e.to_string().contains("--token-file"), "{e}");
    }

    #[test]
    fn there_is_no_password_flag() {
        let parsed = Cli::try_parse_from(["dcos-token-proxy", "--password", "hunter2"]);
        assert!(parsed.is_err());
    }
}
