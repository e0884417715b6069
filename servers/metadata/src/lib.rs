//! `sidekick metadata-server`: a Rancher-metadata-compatible HTTP API served
//! from a YAML answers file, so images that configure themselves from
//! `http://rancher-metadata` run on a laptop or in CI, and templates can be
//! tried against a made-up environment.
//!
//! # The answers file
//!
//! Stacks, services, containers and hosts, each container written once:
//!
//! ```yaml
//! environment: Default          # optional
//! self: zk-zookeeper-1          # optional: `self` for clients no other rule places
//! hosts:
//!   - name: host-1              # required; hostname defaults to it
//!     agent_ip: 10.10.0.1
//!     labels: {zone: a}
//! stacks:
//!   - name: zk
//!     services:
//!       - name: zookeeper
//!         ports: ["2181:2181/tcp"]
//!         metadata: {zk: {client_port: 2181}}   # free-form, as in rancher-compose.yml
//!         links: {other/service: alias}         # or `service: alias` within this stack
//!         containers:
//!           - primary_ip: 10.42.0.11            # required
//!             host: host-1                      # a host's name; default: the first host
//!           - primary_ip: 10.42.0.12
//! ```
//!
//! Everything else is derived: a container's `name` (`<stack>-<service>-<index>`),
//! `service_index` (its position from 1), `create_index` (its position in the
//! file), `ips`, `stack_name`, `service_name`, `host_uuid`, `state: running`,
//! `health_state: healthy`; a service's `scale` (its number of containers),
//! `kind: service`; stable `uuid`s from the names; and the views Rancher
//! serves: `/containers`, `/services` (with their containers), `/stacks`
//! (with their services), `/hosts`, `/version`, and per client `/self`
//! (`container`, `service`, `stack`, `host`). Each derived field can be given
//! to override it, and `extra:` on a host, stack, service or container adds
//! fields as they are. Unknown fields are errors, so a typo never silently
//! drops a value; errors name the file and line.
//!
//! # The API
//!
//! - `GET /` lists the API versions; `GET /<version>/<path>` answers for any
//!   version string (`latest`, `2015-12-19`, ...), all with the same tree.
//! - Plain text by default, as Rancher gives it: a scalar's value; a map's
//!   keys one per line, `key/` for those with children; a list's items as
//!   `index=name` (items with a `name` or `uuid`), `index/` or `index`.
//!   JSON with `Accept: application/json`. List items can be addressed by
//!   index, `name` or `uuid`. Unknown paths are `404 Not found`.
//! - `self` is the asking container: the one named by the
//!   `X-Sidekick-Self` header, else `--self`, else the one whose
//!   `primary_ip` the request comes from, else the answers file's `self`.
//! - Long-poll: `?wait=true&value=V[&maxWait=S]` on any path holds the request
//!   until its plain-text answer differs from `V`, or `S` seconds (default 60,
//!   at most 120) passed. Clients long-poll `/latest/version`.
//! - Editing the answers file (also by rename, as editors save) reloads it: a
//!   new version wakes the waiters; a bad edit keeps the last good tree and
//!   logs why, with file and line. The version is a hash of the content, so a
//!   restart on the same file keeps it and watching clients read nothing again.
//!
//! Every answer is computed once per version (see the module `tree`), so the
//! server stays fast on big answers files: a request is a path walk and a
//! buffer clone.

mod answers;
mod http;
mod tree;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::tree::Tree;

/// Header naming the container to answer `/self` for. The rancher backend
/// (`sidekick_backend_rancher::SELF_HEADER`, the client side) sends it; the two
/// crates do not depend on each other, so the name is written in both.
pub const SELF_HEADER: &str = "x-sidekick-self";

/// How long to let a save settle before reloading (editors write in steps).
const SETTLE: Duration = Duration::from_millis(25);

/// Where the server listens without `--listen`: port 80 on every interface,
/// as Rancher's own metadata service (so images that read
/// `http://rancher-metadata` find it under that name on a container network).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:80";

/// Settings of the metadata server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (`0.0.0.0:80` to stand in for `rancher-metadata`).
    pub listen: SocketAddr,
    /// The YAML answers file.
    pub answers: PathBuf,
    /// `--self`: the container every client is answered `self` for (unless it
    /// sends `X-Sidekick-Self`).
    pub self_container: Option<String>,
}

impl ServerConfig {
    /// Builds the settings from the command line: `--listen ADDR` (`host:port`,
    /// `:port` for every interface; default [`DEFAULT_LISTEN`]), exactly one
    /// `--file ANSWERS.yaml`, and `--self CONTAINER`.
    pub fn from_settings(
        listen: Option<&str>,
        files: &[PathBuf],
        self_container: Option<String>,
    ) -> Result<ServerConfig, ServerError> {
        let listen = parse_listen(listen.unwrap_or(DEFAULT_LISTEN))?;
        let answers = match files {
            [one] => one.clone(),
            [] => {
                return Err(ServerError::Usage {
                    message: "metadata-server needs the answers file: --file answers.yaml".into(),
                })
            }
            _ => {
                return Err(ServerError::Usage {
                    message: format!(
                        "metadata-server serves one answers file, got {} --file",
                        files.len()
                    ),
                })
            }
        };
        let self_container = self_container
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Ok(ServerConfig {
            listen,
            answers,
            self_container,
        })
    }
}

/// `host:port`, `[v6]:port`, or `:port` (every interface).
fn parse_listen(text: &str) -> Result<SocketAddr, ServerError> {
    let text = text.trim();
    let spelled = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    if let Ok(addr) = spelled.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // A host name (`localhost:8080`): resolve it once, at startup.
    std::net::ToSocketAddrs::to_socket_addrs(spelled.as_str())
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ServerError::Usage {
            message: format!("--listen {text:?}: expected HOST:PORT or :PORT"),
        })
}

/// Why the metadata server cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The command line is incomplete or wrong.
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
    },
    /// The answers file is invalid. `line` is where the problem is, when known.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Answers {
        /// The answers file.
        path: PathBuf,
        /// Line (from 1) of the problem, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The answers file cannot be read.
    #[error("{}: cannot read the answers file: {source}", path.display())]
    Read {
        /// The answers file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The answers file's directory cannot be watched.
    #[error("cannot watch {} for changes: {source}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// What the watcher said.
        #[source]
        source: notify::Error,
    },
}

/// State shared by the accept loop, the connections and handles.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The current tree; long-polls wait on it.
    tree: watch::Sender<Arc<Tree>>,
    /// Requests answered so far.
    requests: AtomicU64,
    answers: PathBuf,
    fixed_self: Option<String>,
}

impl Shared {
    /// Re-reads the answers file; publishes it when its version is new.
    fn reload(&self) -> Result<String, ServerError> {
        let tree = answers::load(&self.answers, self.fixed_self.as_deref())?;
        let version = tree.version.clone();
        let containers = tree.selves.len();
        let changed = self.tree.send_if_modified(|current| {
            if current.version == tree.version {
                false
            } else {
                *current = Arc::new(tree);
                true
            }
        });
        if changed {
            tracing::info!(
                answers = %self.answers.display(),
                version = %version,
                containers,
                "answers reloaded; new metadata version"
            );
        } else {
            tracing::debug!(answers = %self.answers.display(), "answers saved without change");
        }
        Ok(version)
    }
}

/// A cheap handle on a running (or bound) server, for tests and benchmarks.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// The metadata version being served.
    pub fn version(&self) -> String {
        self.shared.tree.borrow().version.clone()
    }

    /// Number of requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Re-reads the answers file now (without waiting for the file watch);
    /// returns the version served afterwards. On error the last good tree stays.
    pub fn reload(&self) -> Result<String, ServerError> {
        self.shared.reload()
    }
}

/// A metadata server whose answers are loaded and whose socket is bound.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Loads the answers file (an invalid one is an error naming file and
    /// line) and binds the listen address.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let tree = answers::load(&config.answers, config.self_container.as_deref())?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let (tx, _) = watch::channel(Arc::new(tree));
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                tree: tx,
                requests: AtomicU64::new(0),
                answers: config.answers,
                fixed_self: config.self_container,
            }),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address; fall back to an unspecified one.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// A handle to query and reload the server.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until `shutdown` completes, reloading the answers file when it
    /// changes. Open connections (and held long-polls) are closed on return.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server { listener, shared } = self;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let dir = watch_dir(&shared.answers);
        let mut watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the server stopped.
            let _ = events_tx.send(event);
        })
        .map_err(|source| ServerError::Watch {
            path: dir.clone(),
            source,
        })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| ServerError::Watch {
                path: dir.clone(),
                source,
            })?;
        let file_name = shared.answers.file_name().map(|n| n.to_os_string());
        {
            let tree = shared.tree.borrow();
            tracing::info!(
                listen = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
                answers = %shared.answers.display(),
                version = %tree.version,
                containers = tree.selves.len(),
                "metadata server listening"
            );
        }

        let mut connections = JoinSet::new();
        let mut reload_at: Option<Instant> = None;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let shared = Arc::clone(&shared);
                        connections.spawn(serve_connection(stream, peer, shared));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(event) = events.recv() => match event {
                    Ok(event) => {
                        let ours = event.paths.iter().any(|p| p.file_name() == file_name.as_deref());
                        if ours && !matches!(event.kind, EventKind::Access(_)) {
                            reload_at = Some(Instant::now() + SETTLE);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "file watch error"),
                },
                _ = tokio::time::sleep_until(reload_at.unwrap_or_else(Instant::now)), if reload_at.is_some() => {
                    reload_at = None;
                    if let Err(e) = shared.reload() {
                        tracing::error!(error = %e, "answers file not reloaded; serving the last good answers");
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        tracing::info!("metadata server stopping");
        connections.shutdown().await;
        drop(watcher);
        Ok(())
    }
}

/// Loads the answers, binds `config.listen` and serves until `shutdown`.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    Server::bind(config).await?.run(shutdown).await
}

/// The directory to watch for the answers file (its parent, so saves by
/// rename are seen).
fn watch_dir(answers: &Path) -> PathBuf {
    match answers.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, std::convert::Infallible>(http::answer(request, &shared, peer.ip()).await) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings() {
        let files = [PathBuf::from("a.yaml")];
        let c = ServerConfig::from_settings(None, &files, Some(" zk-1 ".into())).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:80");
        assert_eq!(c.self_container.as_deref(), Some("zk-1"));
        let c = ServerConfig::from_settings(Some(":8080"), &files, Some("".into())).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.self_container, None);
        let c = ServerConfig::from_settings(Some("[::1]:9"), &files, None).unwrap();
        assert_eq!(c.listen.to_string(), "[::1]:9");
        let c = ServerConfig::from_settings(Some("localhost:9"), &files, None).unwrap();
        assert_eq!(c.listen.port(), 9);
        let e = ServerConfig::from_settings(Some("nope"), &files, None).unwrap_err();
        assert!(e.to_string().contains("--listen \"nope\""), "{e}");
        let e = ServerConfig::from_settings(None, &[], None).unwrap_err();
        assert!(e.to_string().contains("--file answers.yaml"), "{e}");
        let two = [PathBuf::from("a"), PathBuf::from("b")];
        assert!(ServerConfig::from_settings(None, &two, None).is_err());
    }
}
