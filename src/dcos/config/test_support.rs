//! What the `config` tests share: the fixtures under `tests/fixtures/dcos`, a fake token
//! that must never appear in an error, and small builders for options and environments.

use std::path::{Path, PathBuf};

use super::layout::CONFIG_FILE;
use super::{ConfigError, DiscoverOptions, discover};
use crate::dcos::token::Token;
use crate::env::Env;

/// The fake token every fixture uses; it must never appear in an error.
pub(super) const TOKEN: &str = "eyJhbGciOiJub25lIn0.eyJ1aWQiOiJhbGljZSJ9.sig";
/// The start every fixture token shares (a JWT header), also never in an error.
pub(super) const TOKEN_MARK: &str = "eyJ";

pub(super) fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dcos")
        .join(case)
}

pub(super) fn opts(case: &str) -> DiscoverOptions {
    DiscoverOptions {
        dcos_dir: Some(fixture(case)),
        ..DiscoverOptions::default()
    }
}

pub(super) fn with_cluster(case: &str, cluster: &str) -> DiscoverOptions {
    DiscoverOptions {
        cluster: Some(cluster.to_owned()),
        ..opts(case)
    }
}

pub(super) fn env<const N: usize>(pairs: [(&str, &str); N]) -> Env {
    Env::from_pairs(pairs)
}

pub(super) fn no_env() -> Env {
    Env::default()
}

pub(super) fn token() -> Token {
    Token::new(TOKEN).unwrap()
}

/// Discover, expecting an error; check that neither its message nor its Debug form
/// leaks a token, and return the message.
pub(super) fn discover_err(opts: &DiscoverOptions, env: &Env) -> (ConfigError, String) {
    let err = discover(opts, env).expect_err("discover should fail");
    let msg = err.to_string();
    assert_no_secret(&msg);
    assert_no_secret(&format!("{err:?}"));
    (err, msg)
}

pub(super) fn assert_no_secret(text: &str) {
    assert!(!text.contains(TOKEN), "token leaked: {text}");
    assert!(!text.contains(TOKEN_MARK), "token leaked: {text}");
    assert!(!text.contains("hunter2"), "password leaked: {text}");
}

pub(super) fn cluster_file(case: &str, id: &str) -> PathBuf {
    fixture(case).join("clusters").join(id).join(CONFIG_FILE)
}
