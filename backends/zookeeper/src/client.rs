//! Talking to ZooKeeper through `zookeeper-client`: opening a session (with
//! digest credentials), reading every znode under a prefix, and turning the
//! client's errors into [`BackendError`]s that name the servers, the znode
//! and, for a refusal, the user (never the password or a value).

use std::time::Duration;

use futures::future::join_all;
use sidekick_backend::BackendError;
use zookeeper_client as zk;

use crate::config::Resolved;
use crate::tree::{text, Mirror};
use crate::NAME;

/// ZooKeeper's own znodes (quotas, the ensemble config): not read under `/`
/// unless a prefix names them.
pub(crate) const SYSTEM: &str = "/zookeeper";

/// Opens a session with the ensemble (and sends the digest credentials).
pub(crate) async fn connect(config: &Resolved) -> Result<zk::Client, BackendError> {
    let timing = config.timing;
    let mut connector = zk::Client::connector()
        .with_session_timeout(timing.session_timeout)
        .with_connection_timeout(timing.liveness_timeout)
        .with_fail_eagerly();
    if let Some((user, password)) = &config.user {
        connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
    }
    let servers = reachable_servers(config).await?;
    let attempt = connector.connect(&servers);
    // The library gives up after one round over the servers (fail eagerly),
    // but a server that accepts and then says nothing is bounded here too.
    let limit = timing.connect_timeout + Duration::from_secs(1);
    match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(connect_error(config, e).await),
        Err(_) => Err(unavailable(
            &config.label,
            format!("no session established within {limit:?}"),
        )),
    }
}

/// The connect string: the servers that accept a TCP connection. The library
/// tries servers in a random order, each for up to the liveness timeout, so a
/// firewalled server (SYN dropped) would use up the connect limit whenever it
/// came first. One server is not probed; with several and none reachable, the
/// probes' reasons are the error.
async fn reachable_servers(config: &Resolved) -> Result<String, BackendError> {
    if config.nodes.len() < 2 {
        return Ok(config.label.clone());
    }
    let probes = probe(config).await;
    let up: Vec<&str> = config
        .nodes
        .iter()
        .zip(&probes)
        .filter(|(_, probe)| probe.is_ok())
        .map(|(node, _)| node.as_str())
        .collect();
    if up.is_empty() {
        let reasons = config
            .nodes
            .iter()
            .zip(probes)
            .filter_map(|(node, probe)| probe.err().map(|why| format!("{node}: {why}")));
        return Err(unavailable(
            &config.label,
            reasons.collect::<Vec<_>>().join("; "),
        ));
    }
    Ok(up.join(","))
}

/// A TCP connect to each server, all at once, each bounded by the connect
/// timeout: `Err` says why one cannot be reached (refused, timed out...).
async fn probe(config: &Resolved) -> Vec<Result<(), String>> {
    let probes = config.nodes.iter().map(|node| async move {
        let connect = tokio::net::TcpStream::connect(node.as_str());
        match tokio::time::timeout(config.timing.connect_timeout, connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connect timed out".to_string()),
        }
    });
    join_all(probes).await
}

/// Why a session could not be opened. The library reports every refused or
/// timed-out server as "no available hosts"; a plain TCP connect to each says
/// which (connection refused, no route...).
async fn connect_error(config: &Resolved, error: zk::Error) -> BackendError {
    if !matches!(
        error,
        zk::Error::NoHosts | zk::Error::Timeout | zk::Error::ConnectionLoss
    ) {
        return client_error(config, error, "/");
    }
    let reasons: Vec<String> = config
        .nodes
        .iter()
        .zip(probe(config).await)
        .map(|(node, probe)| {
            let reason = probe
                .err()
                .unwrap_or_else(|| format!("no ZooKeeper session ({error})"));
            // The error names the servers already; with several, say which is which.
            match config.nodes.len() {
                1 => reason,
                _ => format!("{node}: {reason}"),
            }
        })
        .collect();
    unavailable(&config.label, reasons.join("; "))
}

/// An `Unavailable` error with a plain message.
pub(crate) fn unavailable(label: &str, message: String) -> BackendError {
    BackendError::Unavailable {
        backend: NAME,
        endpoint: label.to_string(),
        source: message.into(),
    }
}

/// Maps an error of a request about `path`.
pub(crate) fn client_error(config: &Resolved, error: zk::Error, path: &str) -> BackendError {
    let who = match config.user_name() {
        Some(user) => format!("digest user {user}"),
        None => "no credentials (--username/--password)".to_string(),
    };
    match error {
        zk::Error::NoAuth => BackendError::Denied {
            backend: NAME,
            message: format!(
                "not allowed to read znode {path} on {} (NOAUTH) with {who}: a wrong password, \
                 or the znode's ACL does not grant read",
                config.label
            ),
        },
        zk::Error::AuthFailed => BackendError::Denied {
            backend: NAME,
            message: format!("authentication failed on {} for {who}", config.label),
        },
        other => unavailable(&config.label, format!("{path}: {other}")),
    }
}

/// The child `name` of `path`.
pub(crate) fn child(path: &str, name: &str) -> String {
    match path {
        "/" => format!("/{name}"),
        _ => format!("{path}/{name}"),
    }
}

/// Reads every znode at and below `root` into `mirror`, a level at a time:
/// the data of every znode of the level (all requests in flight at once: the
/// client pipelines them on its one connection), then the children of those
/// whose stat says they have some. A missing `root` reads nothing; a znode
/// deleted while it is read is skipped (its delete event follows).
pub(crate) async fn read_tree(
    config: &Resolved,
    client: &zk::Client,
    root: &str,
    mirror: &mut Mirror,
) -> Result<(), BackendError> {
    let skip_system = root == "/";
    let mut level = vec![root.to_string()];
    while !level.is_empty() {
        let answers = join_all(level.iter().map(|path| client.get_data(path))).await;
        let mut parents = Vec::new();
        for (path, answer) in level.into_iter().zip(answers) {
            let (data, stat) = match answer {
                Ok(read) => read,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(client_error(config, e, &path)),
            };
            mirror.insert(path.clone(), text(&path, data));
            if stat.num_children > 0 {
                parents.push(path);
            }
        }
        let answers = join_all(parents.iter().map(|path| client.list_children(path))).await;
        let mut next = Vec::new();
        for (path, answer) in parents.iter().zip(answers) {
            let children = match answer {
                Ok(children) => children,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(client_error(config, e, path)),
            };
            for name in children {
                let below = child(path, &name);
                if !(skip_system && below == SYSTEM) {
                    next.push(below);
                }
            }
        }
        level = next;
    }
    Ok(())
}

/// Reads the data of one znode; `None` when it no longer exists.
pub(crate) async fn read_node(
    config: &Resolved,
    client: &zk::Client,
    path: &str,
) -> Result<Option<Option<String>>, BackendError> {
    match client.get_data(path).await {
        Ok((data, _stat)) => Ok(Some(text(path, data))),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(client_error(config, e, path)),
    }
}

/// Reads every prefix into one mirror, within the request timeout.
pub(crate) async fn load(
    config: &Resolved,
    client: &zk::Client,
    prefixes: &[String],
) -> Result<Mirror, BackendError> {
    let read = async {
        let mut mirror = Mirror::new();
        for prefix in prefixes {
            read_tree(config, client, prefix, &mut mirror).await?;
        }
        Ok(mirror)
    };
    let limit = config.timing.request_timeout;
    let mirror = tokio::time::timeout(limit, read).await.map_err(|_| {
        unavailable(
            &config.label,
            format!("reading the znodes took longer than {limit:?}"),
        )
    })??;
    tracing::debug!(
        backend = NAME,
        endpoint = %config.label,
        prefixes = prefixes.len(),
        znodes = mirror.len(),
        "read znodes"
    );
    Ok(mirror)
}
