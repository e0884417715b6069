//! Where keys live in the metadata service: the `--node` URL and how key
//! prefixes pick an API version.
//!
//! Keys whose first segment is an API version (`/latest/...`, `/2015-12-19/...`)
//! are read from that version's tree, so `--prefix /2015-12-19/self/service/metadata`
//! works as it does in confd. Every other key is read from the default tree: the
//! path of `--node` (`/latest` when it has none), so `getv(key="/self/container/primary_ip")`
//! needs no prefix at all.

use sidekick_backend::{BackendError, Interest};

use crate::NAME;

/// The metadata service's address when `--node` is not given (Rancher's DNS name).
pub const DEFAULT_NODE: &str = "http://rancher-metadata";
/// The API version read when `--node` has no path.
pub const DEFAULT_VERSION: &str = "latest";

/// The parsed `--node`: where to connect and which tree plain keys read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// `host:port` to connect to.
    pub authority: String,
    /// `Host` header value (the authority as written).
    pub host: String,
    /// API version of the default tree (`latest`).
    pub version: String,
    /// Path below the version that plain keys start at (usually empty).
    pub subpath: Vec<String>,
}

/// Which tree a group of key prefixes reads, and where its keys are rooted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    /// API version to fetch.
    pub version: String,
    /// Key the fetched (sub)tree is flattened under: `/` or `/<version>`.
    pub root: String,
    /// Path inside the version's tree that `root` stands for.
    pub subpath: Vec<String>,
    /// The interest's prefixes this group serves.
    pub prefixes: Vec<String>,
}

impl Layout {
    /// Parses `--node` (`http://rancher-metadata`, `rancher-metadata:8080`,
    /// `http://127.0.0.1:9000/2015-12-19`). Only plain HTTP: the metadata
    /// service never speaks TLS.
    pub fn parse(node: Option<&str>) -> Result<Layout, BackendError> {
        let raw = node.map(str::trim).filter(|s| !s.is_empty());
        let raw = raw.unwrap_or(DEFAULT_NODE);
        let rest = if let Some(rest) = raw.strip_prefix("http://") {
            rest
        } else if raw.starts_with("https://") {
            return Err(config(format!(
                "--node {raw}: https is not supported; the metadata service speaks plain HTTP"
            )));
        } else if raw.contains("://") {
            return Err(config(format!(
                "--node {raw}: expected an http:// URL (like http://rancher-metadata)"
            )));
        } else {
            raw
        };
        let (host, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty() || host.contains('@') {
            return Err(config(format!(
                "--node {raw}: expected http://HOST[:PORT][/VERSION]"
            )));
        }
        if path.contains(['?', '#']) {
            return Err(config(format!(
                "--node {raw}: a query or fragment is not supported"
            )));
        }
        let authority = if has_port(host) {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let version = segments.next().unwrap_or(DEFAULT_VERSION).to_string();
        let subpath = segments.map(str::to_string).collect();
        Ok(Layout {
            authority,
            host: host.to_string(),
            version,
            subpath,
        })
    }

    /// The URL of the default tree, for logs.
    pub fn label(&self) -> String {
        let mut url = format!("http://{}/{}", self.host, self.version);
        for s in &self.subpath {
            url.push('/');
            url.push_str(s);
        }
        url
    }

    /// Groups the interest's prefixes by the tree they read. The default tree
    /// always comes first (it is read in any case: it carries the version that
    /// is watched and the service catalog).
    pub fn groups(&self, interest: &Interest) -> Vec<Group> {
        let mut groups = vec![Group {
            version: self.version.clone(),
            root: "/".to_string(),
            subpath: self.subpath.clone(),
            prefixes: Vec::new(),
        }];
        for prefix in &interest.prefixes {
            let first = prefix.split('/').find(|s| !s.is_empty());
            match first.filter(|s| is_version(s)) {
                Some(version) => {
                    let root = format!("/{version}");
                    match groups.iter_mut().find(|g| g.root == root) {
                        Some(g) => g.prefixes.push(prefix.clone()),
                        None => groups.push(Group {
                            version: version.to_string(),
                            root,
                            subpath: Vec::new(),
                            prefixes: vec![prefix.clone()],
                        }),
                    }
                }
                None => groups[0].prefixes.push(prefix.clone()),
            }
        }
        groups
    }
}

/// Whether a path segment names an API version: `latest`, or a date like
/// `2015-12-19` (the form Rancher's versions take).
pub(crate) fn is_version(segment: &str) -> bool {
    if segment == "latest" {
        return true;
    }
    let b = segment.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// Whether `host` (`name`, `name:port`, `[::1]:port`, `[::1]`) has a port.
fn has_port(host: &str) -> bool {
    match host.rfind(']') {
        Some(close) => host[close..].contains(':'),
        None => host.contains(':'),
    }
}

fn config(message: String) -> BackendError {
    BackendError::config(NAME, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nodes() {
        let l = Layout::parse(None).unwrap();
        assert_eq!(l.authority, "rancher-metadata:80");
        assert_eq!(l.version, "latest");
        assert!(l.subpath.is_empty());

        let l = Layout::parse(Some("127.0.0.1:9000")).unwrap();
        assert_eq!(l.authority, "127.0.0.1:9000");
        assert_eq!(l.label(), "http://127.0.0.1:9000/latest");

        let l = Layout::parse(Some("http://[::1]:9000/2015-12-19/self/")).unwrap();
        assert_eq!(l.authority, "[::1]:9000");
        assert_eq!(l.version, "2015-12-19");
        assert_eq!(l.subpath, ["self"]);

        let l = Layout::parse(Some("http://[::1]")).unwrap();
        assert_eq!(l.authority, "[::1]:80");

        for bad in [
            "https://x",
            "ftp://x",
            "http:///latest",
            "http://x/latest?a=b",
            "http://u@x",
        ] {
            let e = Layout::parse(Some(bad)).unwrap_err();
            assert!(matches!(e, BackendError::Config { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn versions() {
        assert!(is_version("latest"));
        assert!(is_version("2015-12-19"));
        assert!(!is_version("self"));
        assert!(!is_version("2015-12-1x"));
        assert!(!is_version("20151219"));
    }

    #[test]
    fn groups_by_version() {
        let l = Layout::parse(Some("http://m")).unwrap();
        let interest = Interest {
            prefixes: vec![
                "/2015-12-19/self/service/metadata".into(),
                "/self/container".into(),
                "/latest/hosts".into(),
                "/2015-12-19/stacks".into(),
            ],
            services: false,
        };
        let g = l.groups(&interest);
        assert_eq!(g.len(), 3);
        assert_eq!((g[0].version.as_str(), g[0].root.as_str()), ("latest", "/"));
        assert_eq!(g[0].prefixes, ["/self/container"]);
        assert_eq!(g[1].root, "/2015-12-19");
        assert_eq!(g[1].prefixes.len(), 2);
        assert_eq!(
            (g[2].version.as_str(), g[2].root.as_str()),
            ("latest", "/latest")
        );
    }
}
