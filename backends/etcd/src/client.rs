//! The real [`Source`]: etcd-client calls with timeouts, and etcd's errors
//! turned into [`BackendError`]s that name the endpoint (and never a password).

use std::error::Error as _;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchStream};
use sidekick_backend::{is_normal, is_under, normalize_owned, BackendError, KeyTree};
use tonic::Code;

use crate::config::{config_error, Resolved, MAX_MESSAGE};
use crate::watch::{unavailable, Event, Loaded, Position, Response, Source};
use crate::NAME;

/// Time allowed, beyond the TCP connect timeout, for the TLS and HTTP/2
/// handshakes and the first answer of a new client.
const HANDSHAKE_SLACK: Duration = Duration::from_secs(1);

/// How often a ranged read is retried when the revision it was pinned to is
/// compacted between two prefixes.
const LOAD_ATTEMPTS: usize = 3;

/// One etcd cluster, as configured. Each connection goes to one endpoint:
/// the one that answered last, else the next that answers.
pub(crate) struct Cluster {
    config: Resolved,
    /// Index of the endpoint that answered last.
    preferred: AtomicUsize,
}

/// A client connected to one endpoint.
pub(crate) struct Conn {
    client: Client,
    endpoint: String,
    /// Where the endpoint's store stood when it answered the connect.
    position: Position,
}

/// A watch stream on one endpoint.
pub(crate) struct Watch {
    stream: WatchStream,
    endpoint: String,
}

impl Cluster {
    pub fn new(config: Resolved) -> Cluster {
        Cluster {
            config,
            preferred: AtomicUsize::new(0),
        }
    }

    /// Connects to `endpoint`: TCP (and TLS), then authentication or a status
    /// request, so that a dead or silent endpoint fails here, within the
    /// connect limit, rather than in the first real request.
    /// The status request also says which cluster it is and its revision
    /// (the [`Position`]), for the watch to tell a wiped or restored store.
    async fn connect_one(&self, endpoint: &str) -> Result<(Client, Position), BackendError> {
        let options = self.config.connect_options();
        let connect = async {
            let mut client = Client::connect([endpoint], Some(options)).await?;
            let status = client.status().await?;
            let position = status.header().map_or(Position::default(), |h| Position {
                cluster_id: h.cluster_id(),
                revision: h.revision(),
            });
            Ok::<(Client, Position), etcd_client::Error>((client, position))
        };
        let limit = self.config.timing.connect_timeout + HANDSHAKE_SLACK;
        match tokio::time::timeout(limit, connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e @ etcd_client::Error::TransportError(_))) => {
                // Building the channel failed (bad TLS material), before any I/O.
                Err(config_error(format!(
                    "cannot set up a client for {endpoint}: {}",
                    describe(&e)
                )))
            }
            Ok(Err(e)) => Err(self.classify(e, endpoint)),
            Err(_) => Err(unavailable(
                endpoint,
                format!("no answer within {limit:?} (connect and handshake)"),
            )),
        }
    }

    /// Runs `call` with the request limit; a timeout is an `Unavailable` error.
    async fn timed<T>(
        &self,
        endpoint: &str,
        what: &str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, BackendError> {
        let limit = self.config.timing.request_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.classify(e, endpoint)),
            Err(_) => Err(unavailable(
                endpoint,
                format!("{what}: no answer within {limit:?}"),
            )),
        }
    }

    /// Maps an etcd-client error from `endpoint` to a [`BackendError`].
    fn classify(&self, error: etcd_client::Error, endpoint: &str) -> BackendError {
        let user = self.config.user_name().unwrap_or("");
        match &error {
            etcd_client::Error::GRpcStatus(status) => {
                let message = status.message();
                match status.code() {
                    _ if message.contains("authentication failed") => BackendError::Denied {
                        backend: NAME,
                        message: format!("authentication failed for user {user} at {endpoint}"),
                    },
                    _ if message.contains("authentication is not enabled") => {
                        BackendError::Denied {
                            backend: NAME,
                            message: format!(
                                "--username {user} given but authentication is not enabled on {endpoint}"
                            ),
                        }
                    }
                    Code::PermissionDenied => BackendError::Denied {
                        backend: NAME,
                        message: match user {
                            "" => format!("permission denied by {endpoint}: {message}"),
                            user => format!(
                                "permission denied for user {user} by {endpoint}: {message}"
                            ),
                        },
                    },
                    _ => unavailable(endpoint, describe(&error)),
                }
            }
            etcd_client::Error::InvalidArgs(_)
            | etcd_client::Error::InvalidUri(_)
            | etcd_client::Error::EndpointError(_) => {
                config_error(format!("endpoint {endpoint}: {}", describe(&error)))
            }
            _ => unavailable(endpoint, describe(&error)),
        }
    }
}

/// The most telling text of an etcd-client error: the gRPC message and the
/// innermost cause (`tcp connect error: Connection refused (os error 111)`).
fn describe(error: &etcd_client::Error) -> String {
    let (head, mut cause) = match error {
        etcd_client::Error::GRpcStatus(status) => (status.message().to_string(), status.source()),
        other => (other.to_string(), other.source()),
    };
    let mut innermost = None;
    while let Some(e) = cause {
        innermost = Some(e.to_string());
        cause = e.source();
    }
    match innermost {
        Some(inner) if !head.contains(&inner) => format!("{head}: {inner}"),
        _ => head,
    }
}

/// Two etcd keys that are one key in the tree (`/a//x` and `/a/x`: empty
/// segments are dropped) would have one value win silently: each such pair
/// is logged, naming both keys, and the key written in the tree's form wins
/// (between two in other forms, the later in etcd's order). `renamed` holds
/// the indices in `pairs` of keys stored in another form, and those forms.
fn drop_colliding(pairs: &mut Vec<(String, String)>, renamed: &[(usize, String)], endpoint: &str) {
    let mut drop = vec![false; pairs.len()];
    for (n, (i, stored)) in renamed.iter().enumerate() {
        let key = &pairs[*i].0;
        let normal_twin = pairs
            .iter()
            .enumerate()
            .any(|(j, (k, _))| j != *i && k == key && !renamed.iter().any(|(r, _)| *r == j));
        let later_twin = renamed[n + 1..]
            .iter()
            .find(|(j, _)| pairs[*j].0 == *key)
            .map(|(_, s)| s.as_str());
        let winner = if normal_twin {
            Some(key.as_str())
        } else {
            later_twin
        };
        if let Some(winner) = winner {
            tracing::warn!(
                backend = NAME,
                endpoint,
                key = %stored,
                same_as = %winner,
                "two etcd keys are one key once empty segments are dropped; using {winner:?}'s \
                 value, not {stored:?}'s"
            );
            drop[*i] = true;
        }
    }
    let mut index = 0;
    pairs.retain(|_| {
        let keep = !drop[index];
        index += 1;
        keep
    });
}

/// Key and options for reading or watching everything under `prefix`. etcd's
/// prefixes are bytes (`/app` also matches `/apple`); callers filter with
/// [`is_under`].
fn range(prefix: &str) -> (Vec<u8>, bool) {
    if prefix == "/" {
        (Vec::new(), true)
    } else {
        (prefix.as_bytes().to_vec(), false)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `bytes` as text without a copy when they are valid UTF-8.
fn owned_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| text(e.as_bytes()))
}

impl Source for Cluster {
    type Conn = Conn;
    type Watch = Watch;

    fn label(&self) -> &str {
        &self.config.label
    }

    fn position(&self, conn: &Conn) -> Position {
        conn.position
    }

    async fn connect(&self) -> Result<Conn, BackendError> {
        let endpoints = &self.config.endpoints;
        let first = self.preferred.load(Ordering::Relaxed) % endpoints.len();
        let mut failures = Vec::new();
        for i in 0..endpoints.len() {
            let index = (first + i) % endpoints.len();
            let endpoint = &endpoints[index];
            match self.connect_one(endpoint).await {
                Ok((client, position)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(Conn {
                        client,
                        endpoint: endpoint.clone(),
                        position,
                    });
                }
                // Reachable but refused, or misconfigured: the same everywhere.
                Err(e @ (BackendError::Denied { .. } | BackendError::Config { .. })) => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::debug!(backend = NAME, endpoint = %endpoint, error = %e, "endpoint failed");
                    failures.push(e);
                }
            }
        }
        match failures.len() {
            1 => Err(failures.remove(0)),
            _ => Err(unavailable(
                &self.config.label,
                failures
                    .iter()
                    .map(|e| match e {
                        BackendError::Unavailable {
                            endpoint, source, ..
                        } => format!("{endpoint}: {source}"),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    async fn load(&self, conn: &mut Conn, prefixes: &[String]) -> Result<Loaded, BackendError> {
        let endpoint = conn.endpoint.as_str();
        let mut kv = conn
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut last_error = None;
        'attempt: for _ in 0..LOAD_ATTEMPTS {
            let mut pairs: Vec<(String, String)> = Vec::new();
            // Keys etcd holds in another form (`/a//x`): index in `pairs`, and as stored.
            let mut renamed: Vec<(usize, String)> = Vec::new();
            let mut revision = 0;
            for prefix in prefixes {
                let (key, all) = range(prefix);
                let mut options = if all {
                    GetOptions::new().with_all_keys()
                } else {
                    GetOptions::new().with_prefix()
                };
                // Every prefix at the revision of the first read: one consistent view.
                if revision > 0 {
                    options = options.with_revision(revision);
                }
                let call = kv.get(key, Some(options));
                let mut response =
                    match tokio::time::timeout(self.config.timing.request_timeout, call).await {
                        Ok(Ok(response)) => response,
                        Ok(Err(etcd_client::Error::GRpcStatus(status)))
                            if status.code() == Code::OutOfRange && revision > 0 =>
                        {
                            // Compacted between two prefixes: read again at the newest revision.
                            last_error = Some(status.message().to_string());
                            continue 'attempt;
                        }
                        Ok(Err(e)) => return Err(self.classify(e, endpoint)),
                        Err(_) => {
                            return Err(unavailable(
                                endpoint,
                                format!(
                                    "reading {prefix}: no answer within {:?}",
                                    self.config.timing.request_timeout
                                ),
                            ))
                        }
                    };
                if revision == 0 {
                    revision = response.header().map_or(0, |h| h.revision());
                }
                for kv in response.take_kvs() {
                    let (key, value) = kv.into_key_value();
                    let raw = owned_text(key);
                    // Most keys are already in the tree's form: no copy then.
                    let stored = (!is_normal(&raw)).then(|| raw.clone());
                    let key = normalize_owned(raw);
                    if is_under(&key, prefix) {
                        if let Some(stored) = stored {
                            renamed.push((pairs.len(), stored));
                        }
                        pairs.push((key, owned_text(value)));
                    }
                }
            }
            if !renamed.is_empty() {
                drop_colliding(&mut pairs, &renamed, endpoint);
            }
            // etcd answers in key order, so the tree is built in one pass.
            let keys: KeyTree = pairs.into_iter().collect();
            tracing::debug!(
                backend = NAME,
                endpoint,
                keys = keys.len(),
                revision,
                "loaded"
            );
            return Ok(Loaded { keys, revision });
        }
        Err(unavailable(
            endpoint,
            format!(
                "history compacted while reading, {LOAD_ATTEMPTS} times: {}",
                last_error.unwrap_or_default()
            ),
        ))
    }

    async fn subscribe(
        &self,
        conn: &mut Conn,
        from: &[(String, i64)],
    ) -> Result<Watch, BackendError> {
        let options = |prefix: &str, start: i64| {
            let (key, all) = range(prefix);
            let options = WatchOptions::new()
                .with_start_revision(start)
                .with_progress_notify();
            let options = if all {
                options.with_all_keys()
            } else {
                options.with_prefix()
            };
            (key, options)
        };
        let Some(((first_prefix, first_start), rest)) = from.split_first() else {
            return Err(config_error("nothing to watch".to_string()));
        };
        let endpoint = conn.endpoint.as_str();
        let mut client = conn
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let (key, opts) = options(first_prefix, *first_start);
        // Opening the stream waits for etcd's answer to the first watch.
        let mut stream = self
            .timed(endpoint, "opening the watch", client.watch(key, Some(opts)))
            .await?;
        // The other prefixes: more watches on the same gRPC stream.
        for (prefix, start) in rest {
            let (key, opts) = options(prefix, *start);
            self.timed(endpoint, "adding a watch", stream.watch(key, Some(opts)))
                .await?;
        }
        Ok(Watch {
            stream,
            endpoint: endpoint.to_string(),
        })
    }

    async fn next(&self, watch: &mut Watch) -> Result<Option<Response>, BackendError> {
        let message =
            watch
                .stream
                .message()
                .await
                .map_err(|e| match self.classify(e, &watch.endpoint) {
                    BackendError::Unavailable {
                        backend,
                        endpoint,
                        source,
                    } => BackendError::Unavailable {
                        backend,
                        endpoint,
                        source: format!("watch connection lost: {source}").into(),
                    },
                    other => other,
                });
        let Some(response) = message? else {
            return Ok(None);
        };
        let events = response
            .events()
            .iter()
            .filter_map(|event| {
                let kv = event.kv()?;
                Some(Event {
                    key: text(kv.key()),
                    value: match event.event_type() {
                        EventType::Put => Some(text(kv.value())),
                        EventType::Delete => None,
                    },
                    revision: kv.mod_revision(),
                })
            })
            .collect();
        Ok(Some(Response {
            watch_id: response.watch_id(),
            created: response.created(),
            canceled: response.canceled(),
            compact_revision: response.compact_revision(),
            cancel_reason: response.cancel_reason().to_string(),
            revision: response.header().map_or(0, |h| h.revision()),
            events,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_keeps_the_innermost_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = tonic::Status::from_error(Box::new(io));
        let text = describe(&etcd_client::Error::GRpcStatus(status));
        assert!(text.contains("refused"), "{text}");
    }
}
