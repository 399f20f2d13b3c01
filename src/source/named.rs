//! One proxy for every cluster: the clusters served by name, as the request path sees
//! them.
//!
//! A request whose `Host` is `<label>.localhost[:PORT]` goes to the DC/OS cluster whose
//! `cluster.name` or ID is `<label>` (ASCII case-insensitively), with that cluster's own
//! token and TLS settings; any other `Host` (the plain address, `localhost`) goes to the
//! current cluster as before. The watcher ([`super::watch`]) builds one [`Clusters`]
//! after every change, with one immutable [`Snapshot`] per cluster, and publishes it next
//! to the main snapshot ([`super::Published::store_clusters`]); the request path only
//! loads it, and only for a `*.localhost` host. A name two clusters share reaches
//! neither: their IDs do.
//!
//! Routing by name is on only while the proxy follows the DC/OS CLI config; with a token
//! file or a service-account login there is one cluster and `*.localhost` is plain.

use std::sync::Arc;

use super::Snapshot;

/// The DNS suffix that names a cluster: `*.localhost` resolves to loopback in curl and
/// browsers (RFC 6761 §6.3).
pub const LOCALHOST_SUFFIX: &str = ".localhost";

/// One cluster served by name.
#[derive(Debug, Clone)]
pub struct ClusterEntry {
    /// The cluster ID (its directory name).
    pub id: Arc<str>,
    /// `cluster.name`, if the file names one.
    pub name: Option<String>,
    /// The label its local URL uses: the name when it is unique and a plain DNS label,
    /// else the ID; lower case.
    pub label: String,
    /// What requests to it are served with: its master, or why there is none (a broken
    /// file that never held a good config).
    pub snapshot: Arc<Snapshot>,
}

/// Every cluster served by name.
#[derive(Debug, Clone, Default)]
pub struct Clusters {
    /// Whether routing by name is on (the proxy follows the DC/OS CLI config).
    pub active: bool,
    /// The clusters, sorted by ID.
    pub entries: Vec<ClusterEntry>,
}

/// Where a request with a `*.localhost` host goes.
#[derive(Debug)]
pub enum NamedRoute {
    /// Routing by name is off: the host is like any other.
    Plain,
    /// That cluster: its ID and snapshot.
    Cluster(Arc<str>, Arc<Snapshot>),
    /// No cluster has that name or ID: the 404 text, listing the known clusters.
    Unknown(String),
}

impl Clusters {
    /// The entries whose name or ID is `label`, ID first (a shared name matches none).
    pub fn find(&self, label: &str) -> Option<&ClusterEntry> {
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.id.eq_ignore_ascii_case(label))
        {
            return Some(e);
        }
        let mut named = self.entries.iter().filter(|e| {
            e.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(label))
        });
        match (named.next(), named.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// The entry with ID `id`.
    pub fn by_id(&self, id: &str) -> Option<&ClusterEntry> {
        self.entries.iter().find(|e| &*e.id == id)
    }

    /// Where a request for `label` goes; `port` (from its `Host`) is used in the list of
    /// known clusters that an unknown label gets.
    pub fn route(&self, label: &str, port: Option<&str>) -> NamedRoute {
        if !self.active {
            return NamedRoute::Plain;
        }
        match self.find(label) {
            Some(e) => NamedRoute::Cluster(e.id.clone(), e.snapshot.clone()),
            None => NamedRoute::Unknown(self.unknown(label, port)),
        }
    }

    /// The 404 text for `label`: the clusters there are, with their local URLs. Never a
    /// token; names are shown printable.
    fn unknown(&self, label: &str, port: Option<&str>) -> String {
        let label = super::printable(label);
        if self.entries.is_empty() {
            return format!(
                "no DC/OS cluster named {label:?}: there are no clusters to choose from by \
                 name (names need the DC/OS CLI's per-cluster layout: `dcos cluster setup`); \
                 use the plain address for the current cluster\n"
            );
        }
        let mut text = format!(
            "no DC/OS cluster has the name or ID {label:?}; the clusters are (`dcos-token-proxy \
             clusters` lists them too):\n"
        );
        for e in &self.entries {
            let name = e
                .name
                .as_deref()
                .map_or_else(|| "-".to_owned(), super::printable);
            text.push_str(&format!(
                "  {name}  {}  {}\n",
                e.id,
                local_url(&e.label, port)
            ));
        }
        text
    }
}

/// `http://<label>.localhost[:PORT]/`.
pub fn local_url(label: &str, port: Option<&str>) -> String {
    match port {
        Some(port) => format!("http://{label}{LOCALHOST_SUFFIX}:{port}/"),
        None => format!("http://{label}{LOCALHOST_SUFFIX}/"),
    }
}

/// The label each cluster's local URL uses: its name, lower-cased, when that is a plain
/// DNS label (letters, digits, `-`) no other cluster shares; else its ID.
pub fn labels(clusters: &[(&str, Option<&str>)]) -> Vec<String> {
    let names: Vec<Option<String>> = clusters
        .iter()
        .map(|(_, n)| n.map(str::to_ascii_lowercase))
        .collect();
    clusters
        .iter()
        .zip(&names)
        .map(|((id, _), name)| match name {
            Some(n)
                if is_dns_label(n)
                    && names.iter().filter(|m| m.as_ref() == Some(n)).count() == 1 =>
            {
                n.clone()
            }
            _ => id.to_ascii_lowercase(),
        })
        .collect()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The cluster label of a request's host (`prod` in `prod.localhost:8079`), and its port
/// if any; `None` for any other host. No allocation.
pub fn label_of(host: &str) -> Option<(&str, Option<&str>)> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (name, Some(port))
        }
        _ => (host, None),
    };
    let cut = name.len().checked_sub(LOCALHOST_SUFFIX.len())?;
    let suffix = name.get(cut..)?;
    if cut == 0 || !suffix.eq_ignore_ascii_case(LOCALHOST_SUFFIX) {
        return None;
    }
    Some((name.get(..cut)?, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_is_what_comes_before_localhost() {
        assert_eq!(
            label_of("prod.localhost:8079"),
            Some(("prod", Some("8079")))
        );
        assert_eq!(label_of("Prod.LocalHost"), Some(("Prod", None)));
        assert_eq!(label_of("a-b.localhost:1"), Some(("a-b", Some("1"))));
        for plain in [
            "localhost",
            "localhost:8079",
            ".localhost:8079",
            "127.0.0.1:8079",
            "[::1]:8079",
            "prod.localhost.example",
            "prodlocalhost",
            "",
        ] {
            assert_eq!(label_of(plain), None, "{plain}");
        }
    }

    #[test]
    fn labels_are_unique_names_else_ids() {
        let got = labels(&[
            ("id-1", Some("Prod")),
            ("id-2", Some("dup")),
            ("id-3", Some("dup")),
            ("id-4", None),
            ("ID-5", Some("has space")),
        ]);
        assert_eq!(got, ["prod", "id-2", "id-3", "id-4", "id-5"]);
    }

    fn entry(id: &str, name: Option<&str>) -> ClusterEntry {
        ClusterEntry {
            id: id.into(),
            name: name.map(str::to_owned),
            label: id.to_owned(),
            snapshot: Arc::new(Snapshot::Waiting("x".into())),
        }
    }

    #[test]
    fn finds_by_id_then_by_a_unique_name_ignoring_case() {
        let c = Clusters {
            active: true,
            entries: vec![
                entry("a1", Some("prod")),
                entry("b2", Some("dup")),
                entry("c3", Some("DUP")),
            ],
        };
        assert_eq!(&*c.find("PROD").unwrap().id, "a1");
        assert_eq!(&*c.find("A1").unwrap().id, "a1");
        assert_eq!(&*c.find("c3").unwrap().id, "c3");
        assert!(c.find("dup").is_none(), "a shared name reaches neither");
        match c.route("nosuch", Some("8079")) {
            NamedRoute::Unknown(text) => {
                assert!(text.contains("\"nosuch\""), "{text}");
                assert!(text.contains("http://a1.localhost:8079/"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        let off = Clusters::default();
        assert!(matches!(off.route("a1", None), NamedRoute::Plain));
    }
}
