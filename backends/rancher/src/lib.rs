//! Rancher-style metadata for sidekick: the `rancher` backend, which reads a
//! Rancher metadata service (`http://rancher-metadata/latest`). The server side,
//! `sidekick metadata-server`, is the crate `sidekick-metadata-server`
//! (`servers/metadata`).
//!
//! # The backend
//!
//! - It reads each API version's whole tree as JSON (`Accept: application/json`)
//!   and flattens it the way confd's rancher backend does: maps by key, list
//!   items by their `name` when they are objects that have one, by index
//!   otherwise. So `getv(key="/self/container/primary_ip")`,
//!   `ls(path="/self/service/containers")` (container names) and
//!   `getv(key="/self/service/metadata/zk/port")` work.
//! - Plain keys read the tree `--node` points at (`/latest` when its URL has no
//!   path); keys starting with an API version (`/2015-12-19/...`, `/latest/...`)
//!   read that version, so `--prefix /2015-12-19/self/service/metadata` works.
//! - It watches with the long-poll of `/<version>/version?wait=true&value=V&maxWait=60`
//!   (a state machine in the module `watch`, run by `sidekick_backend::drive`):
//!   the watch reads the trees first and sends them as a snapshot, then an idle
//!   watch costs one request a minute; a new version re-reads the trees.
//!   Errors back off with jitter and never end the watch.
//! - It has the service catalog (the module `catalog` documents the
//!   mapping): `stack/service` for every service, the bare name for services
//!   of the own stack; address `primary_ip`; healthy from `health_state`.
//! - With [`RancherBackend::with_self_container`] it sends `X-Sidekick-Self: NAME`,
//!   so sidekick's metadata server answers `/self` as that container.

mod catalog;
mod client;
mod flatten;
mod layout;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use sidekick_backend::{
    drive, Backend, BackendError, Backoff, Interest, KeyTree, Label, Snapshot, UpdateStream,
};

pub use client::SELF_HEADER;
pub use layout::{DEFAULT_NODE, DEFAULT_VERSION};

use crate::client::{encode_query, Client};
use crate::layout::Layout;
use crate::watch::{Loaded, Source, Timing, Watch};

/// The backend's name in logs and errors.
pub(crate) const NAME: &str = "rancher";

/// How long a plain read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer than its `maxWait` a long-poll may take before the
/// service is taken for gone (a host that vanished without closing sockets).
const WAIT_GRACE: Duration = Duration::from_secs(15);

/// Settings the binary passes in.
#[derive(Debug, Clone, Default)]
pub struct RancherConfig {
    /// Metadata service URL (`http://rancher-metadata`, the default), with an
    /// optional API version or subtree path (`/latest`, the default;
    /// `/2015-12-19`).
    pub node: Option<String>,
}

/// Reads the Rancher metadata tree.
pub struct RancherBackend {
    source: Arc<HttpSource>,
    timing: Timing,
}

impl RancherBackend {
    /// Checks the settings (nothing is contacted yet).
    pub fn new(config: RancherConfig) -> Result<RancherBackend, BackendError> {
        let layout = Layout::parse(config.node.as_deref())?;
        tracing::debug!(backend = NAME, endpoint = %layout.label(), "metadata service");
        Ok(RancherBackend {
            source: Arc::new(HttpSource {
                client: Client::new(&layout, None),
                layout,
            }),
            timing: Timing::default(),
        })
    }

    /// Asks to be answered `/self` as container `name` (`--self`): sent as
    /// the `X-Sidekick-Self` header, which sidekick's metadata server honours
    /// (Rancher's own service picks `self` by the client's address and
    /// ignores it). `None` or an empty name changes nothing.
    pub fn with_self_container(self, name: Option<String>) -> Result<RancherBackend, BackendError> {
        let Some(name) = name.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) else {
            return Ok(self);
        };
        if name.bytes().any(|b| b.is_ascii_control()) {
            return Err(BackendError::Config {
                backend: NAME,
                message: format!("--self {name:?}: not a container name"),
            });
        }
        let layout = self.source.layout.clone();
        Ok(RancherBackend {
            source: Arc::new(HttpSource {
                client: Client::new(&layout, Some(name)),
                layout,
            }),
            timing: self.timing,
        })
    }
}

impl Backend for RancherBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn load<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        Box::pin(async move { Ok(self.source.read(interest).await?.snapshot) })
    }

    /// Reads the trees (the first batch is that snapshot), then long-polls
    /// the version and reads again when it changes. Dropping the stream
    /// drops the request in flight and its connection.
    fn watch(&self, interest: &Interest) -> Option<UpdateStream> {
        let machine = Watch::new(Arc::clone(&self.source), interest.clone(), self.timing);
        let backoff = Backoff::new(self.timing.backoff_start, self.timing.backoff_cap);
        Some(drive(
            machine,
            backoff,
            Label::new(NAME, self.source.label()),
        ))
    }

    fn has_catalog(&self) -> bool {
        true
    }
}

/// The metadata service over HTTP.
pub(crate) struct HttpSource {
    client: Client,
    layout: Layout,
}

impl HttpSource {
    /// The whole tree of one API version.
    async fn tree(&self, version: &str) -> Result<Value, BackendError> {
        self.client
            .get_json(&format!("/{}", encode_path(version)), READ_TIMEOUT)
            .await
    }
}

impl Source for HttpSource {
    fn label(&self) -> String {
        self.layout.label()
    }

    async fn read(&self, interest: &Interest) -> Result<Loaded, BackendError> {
        let groups = self.layout.groups(interest);
        let mut trees: Vec<(String, Value)> = Vec::new();
        let mut keys = KeyTree::new();
        for group in &groups {
            if !trees.iter().any(|(v, _)| *v == group.version) {
                let tree = self.tree(&group.version).await?;
                trees.push((group.version.clone(), tree));
            }
            if group.prefixes.is_empty() {
                continue;
            }
            let Some((_, tree)) = trees.iter().find(|(v, _)| *v == group.version) else {
                continue;
            };
            if let Some(sub) = flatten::subtree(tree, &group.subpath) {
                flatten::flatten_into(sub, &group.root, &group.prefixes, &mut keys);
            }
        }
        // The default tree (always read first) carries the version and the catalog.
        let Some((_, default)) = trees.first() else {
            return Err(BackendError::Invalid {
                location: self.layout.label(),
                message: "nothing was read".into(),
            });
        };
        let catalog = interest.services.then(|| catalog::from_metadata(default));
        let version = match default.get("version") {
            Some(v @ (Value::String(_) | Value::Number(_))) => flatten::scalar_text(v),
            _ => self.version().await?,
        };
        Ok(Loaded {
            snapshot: Snapshot { keys, catalog },
            version,
        })
    }

    async fn wait(&self, version: &str, max_wait: Duration) -> Result<String, BackendError> {
        let path = format!(
            "/{}/version?wait=true&value={}&maxWait={}",
            encode_path(&self.layout.version),
            encode_query(version),
            max_wait.as_secs().max(1)
        );
        let answer = self.client.get_json(&path, max_wait + WAIT_GRACE).await?;
        version_text(&answer).ok_or_else(|| BackendError::Invalid {
            location: self.client.url(&path),
            message: format!("expected the version as a JSON string, got {answer}"),
        })
    }
}

impl HttpSource {
    /// `/version` on its own, for a tree that does not carry it.
    async fn version(&self) -> Result<String, BackendError> {
        let path = format!("/{}/version", encode_path(&self.layout.version));
        let answer = self.client.get_json(&path, READ_TIMEOUT).await?;
        version_text(&answer).ok_or_else(|| BackendError::Invalid {
            location: self.client.url(&path),
            message: format!("expected the version as a JSON string, got {answer}"),
        })
    }
}

fn version_text(answer: &Value) -> Option<String> {
    match answer {
        Value::String(_) | Value::Number(_) => Some(flatten::scalar_text(answer)),
        _ => None,
    }
}

/// A path segment as it goes on the wire (versions are plain, but be safe).
fn encode_path(segment: &str) -> String {
    encode_query(segment)
}
