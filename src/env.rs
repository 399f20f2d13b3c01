//! A snapshot of the process environment, passed explicitly.
//!
//! The library never calls `std::env::var` itself: `main` takes one snapshot with
//! [`Env::from_process`] and hands it down, and tests build their own with
//! [`Env::from_pairs`]. That keeps tests free of `set_var` and lets them run in parallel.
//! Following the DC/OS CLI, an empty value counts as unset (reference §4).

use std::collections::HashMap;

/// An immutable map of environment variables. Its `Debug` lists the names only: values
/// such as `DCOS_ACS_TOKEN` or a proxy URL with a password must never be printed.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    /// Snapshot the current process environment. Variables whose name or value is not
    /// valid UTF-8 are skipped.
    pub fn from_process() -> Self {
        Self::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Build an environment from explicit pairs (tests, embedding).
    pub fn from_pairs<K, V, I>(pairs: I) -> Self
    where
        K: Into<String>,
        V: Into<String>,
        I: IntoIterator<Item = (K, V)>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key`, or `None` when it is unset **or empty**.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::Env;

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env::from_pairs([("A", ""), ("B", "x")]);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.get("B"), Some("x"));
        assert_eq!(env.get("C"), None);
    }

    #[test]
    fn debug_shows_names_not_values() {
        let env = Env::from_pairs([("HTTPS_PROXY", "http://u:pa55word@p:3128")]);
        let shown = format!("{env:?}");
        assert!(shown.contains("HTTPS_PROXY"), "{shown}");
        assert!(!shown.contains("pa55word"), "{shown}");
    }
}
