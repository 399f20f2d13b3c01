//! The binary's subcommands other than serving: `config example`, `completions` and
//! `man` here (they write to the given output, read no DC/OS config and touch no
//! network), and `doctor` and `exec` in their own modules.
//!
//! The settings example is `config/dcos-token-proxy.toml`, compiled into the binary so
//! that `cargo install` users, who have no checkout, can still get it.

pub mod doctor;
pub mod exec;

use std::io::{self, Write};

use dcos_token_proxy::cli::{ConfigCommand, command};

/// The annotated settings file shipped in `config/`, every key with its default.
pub const SETTINGS_EXAMPLE: &str = include_str!("../../config/dcos-token-proxy.toml");

/// `dcos-token-proxy config example`.
pub fn config(command: &ConfigCommand, out: &mut impl Write) -> io::Result<()> {
    match command {
        ConfigCommand::Example => out.write_all(SETTINGS_EXAMPLE.as_bytes()),
    }
}

/// `dcos-token-proxy completions SHELL`: a completion script generated from the flag
/// definitions.
pub fn completions(shell: clap_complete::Shell, out: &mut impl Write) {
    let mut cmd = command();
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// `dcos-token-proxy man`: the man page (roff) generated from the flag definitions.
pub fn man(out: &mut impl Write) -> io::Result<()> {
    clap_mangen::Man::new(command()).render(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcos_token_proxy::settings::FileSettings;
    use std::path::Path;

    #[test]
    fn the_embedded_example_parses_as_a_settings_file() {
        let mut out = Vec::new();
        config(&ConfigCommand::Example, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        FileSettings::parse(Path::new("config example"), &text).unwrap();
        assert!(text.contains("listen = \"127.0.0.1:8079\""), "{text}");
    }

    #[test]
    fn completions_and_man_name_the_flags() {
        let mut bash = Vec::new();
        completions(clap_complete::Shell::Bash, &mut bash);
        let bash = String::from_utf8(bash).unwrap();
        assert!(bash.contains("--dcos-dir"), "{bash}");
        let mut page = Vec::new();
        man(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with(".ie"), "{page}");
        assert!(page.contains("dcos\\-token\\-proxy"), "{page}");
    }
}
