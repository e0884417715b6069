//! Talking to Redis: connections with timeouts, reading keys as confd maps
//! them (`SCAN` with a pattern, strings by `GET`, hashes flattened to
//! `key/field`), the keyspace-notification setting, and Redis's errors turned
//! into [`BackendError`]s that name the node (and never a password).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, RedisError, Value};
use sidekick_backend::{normalize_key, BackendError, Interest, KeyTree};

use crate::config::{config_error, Resolved};
use crate::NAME;

/// Keys asked for per `SCAN` page and per pipeline of reads.
const PAGE: usize = 1000;

/// The keyspace-notification classes the watch needs: `K` (keyspace
/// channels), `g` (DEL, EXPIRE, RENAME...), `$` (strings), `h` (hashes), `x`
/// (expired), `e` (evicted).
pub(crate) const NEEDED_EVENTS: &str = "Kg$hxe";

/// What one Redis key holds, as far as sidekick reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A string: the key itself.
    Str(String),
    /// A hash: each field is the key `KEY/FIELD` (confd's flattening).
    Hash(BTreeMap<String, String>),
}

impl Entry {
    /// The tree keys and values of the Redis key `key` holding `self`,
    /// those under `interest` only.
    pub fn flatten<'a>(
        &'a self,
        key: &'a str,
        interest: &'a Interest,
    ) -> impl Iterator<Item = (String, &'a str)> + 'a {
        let pairs: Vec<(String, &str)> = match self {
            Entry::Str(value) => vec![(normalize_key(key), value.as_str())],
            Entry::Hash(fields) => fields
                .iter()
                .map(|(field, value)| (normalize_key(&format!("{key}/{field}")), value.as_str()))
                .collect(),
        };
        pairs.into_iter().filter(move |(k, _)| interest.covers(k))
    }
}

/// Redis keys and what they hold: what a load read, and what the watch has
/// delivered since.
pub(crate) type Mirror = BTreeMap<String, Entry>;

/// The key tree of `mirror` under `interest`.
pub(crate) fn tree(mirror: &Mirror, interest: &Interest) -> KeyTree {
    let mut keys = KeyTree::new();
    for (key, entry) in mirror {
        for (k, v) in entry.flatten(key, interest) {
            keys.insert(&k, v);
        }
    }
    keys
}

/// Whether the Redis key `key` can hold data under the interest's prefixes:
/// the prefix itself, or a key under `prefix/` (everything for `/`), as
/// [`scan_patterns`] finds them.
pub(crate) fn wanted(key: &str, interest: &Interest) -> bool {
    interest.prefixes.iter().any(|p| {
        p == "/"
            || key == p
            || key
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Escapes `*?[]\` for a Redis glob pattern.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The patterns that find the Redis keys under `prefix`, as confd scans
/// them: everything (`*`) for `/`, else the key itself and `prefix/*`.
pub(crate) fn scan_patterns(prefix: &str) -> Vec<String> {
    match prefix {
        "/" => vec!["*".into()],
        p => {
            let escaped = glob_escape(p);
            vec![escaped.clone(), format!("{escaped}/*")]
        }
    }
}

/// The classes of `needed` missing from a `notify-keyspace-events` value
/// (`A` stands for `g$lshzxe` and more).
pub(crate) fn missing_events(current: &str, needed: &str) -> String {
    // `A` covers the event classes, not the channel kinds `K` and `E`.
    let has = |c: char| current.contains(c) || (current.contains('A') && !matches!(c, 'K' | 'E'));
    needed.chars().filter(|c| !has(*c)).collect()
}

/// One Redis deployment, as configured: several nodes are tried in turn.
pub(crate) struct Server {
    pub config: Resolved,
    /// Index of the node that answered last.
    preferred: AtomicUsize,
}

/// A command connection to one node.
pub(crate) struct Conn {
    conn: MultiplexedConnection,
    /// Which node.
    node: usize,
    /// Its label, for errors.
    pub label: String,
}

/// A subscription connection, split so a ping can go out while messages
/// are awaited.
pub(crate) struct Subscription {
    pub sink: PubSubSink,
    pub stream: PubSubStream,
}

/// What the server says about keyspace notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notifications {
    /// On, with every class the watch needs.
    On,
    /// Off or partly: the current value and the classes missing.
    Missing { current: String, missing: String },
    /// `CONFIG GET` was refused (renamed command, ACL): unknown.
    Unknown(String),
}

impl Server {
    pub fn new(config: Resolved) -> Server {
        Server {
            config,
            preferred: AtomicUsize::new(0),
        }
    }

    /// All nodes, for logs.
    pub fn label(&self) -> &str {
        &self.config.label
    }

    /// Connects to the node that answered last, else each other in turn;
    /// the error is the last node's.
    pub async fn connect(&self) -> Result<Conn, BackendError> {
        let count = self.config.nodes.len();
        let first = self.preferred.load(Ordering::Relaxed) % count;
        let mut last = None;
        for i in (0..count).map(|n| (first + n) % count) {
            match self.connect_node(i).await {
                Ok(conn) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(conn);
                }
                // Bad credentials or settings are the same on every node.
                Err(e @ (BackendError::Denied { .. } | BackendError::Config { .. })) => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::debug!(backend = NAME, endpoint = %self.config.nodes[i].label, error = %e, "node failed");
                    last = Some(e);
                }
            }
        }
        // `count` is at least 1 (Resolved adds the default node), so `last` is set.
        Err(last.unwrap_or_else(|| unavailable(self.label(), "no node".into())))
    }

    async fn connect_node(&self, i: usize) -> Result<Conn, BackendError> {
        let node = &self.config.nodes[i];
        let timing = self.config.timing;
        let options = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timing.connect_timeout))
            .set_response_timeout(Some(timing.request_timeout));
        let connect = node
            .client
            .get_multiplexed_async_connection_with_config(&options);
        let conn = self
            .limit(&node.label, "connect", timing.connect_timeout * 2, connect)
            .await?;
        Ok(Conn {
            conn,
            node: i,
            label: node.label.clone(),
        })
    }

    /// Opens a subscription connection to `conn`'s node and subscribes to
    /// the keyspace channels of `interest`'s keys; confirmed on return.
    pub async fn subscribe(
        &self,
        conn: &Conn,
        interest: &Interest,
    ) -> Result<Subscription, BackendError> {
        let node = &self.config.nodes[conn.node];
        let timing = self.config.timing;
        let open = node.client.get_async_pubsub();
        let pubsub = self
            .limit(&node.label, "subscribe", timing.connect_timeout * 2, open)
            .await?;
        let (mut sink, stream) = pubsub.split();
        let channel = format!("__keyspace@{}__:", node.db);
        let patterns: BTreeSet<String> = interest
            .prefixes
            .iter()
            .flat_map(|p| scan_patterns(p))
            .map(|p| format!("{channel}{p}"))
            .collect();
        let patterns: Vec<String> = patterns.into_iter().collect();
        self.limit(
            &node.label,
            "PSUBSCRIBE",
            timing.request_timeout,
            sink.psubscribe(&patterns),
        )
        .await?;
        Ok(Subscription { sink, stream })
    }

    /// Reads `notify-keyspace-events`; with `--redis-notify-config`, adds
    /// the classes the watch needs when some are missing.
    pub async fn notifications(&self, conn: &mut Conn) -> Result<Notifications, BackendError> {
        let mut get = redis::cmd("CONFIG");
        get.arg("GET").arg("notify-keyspace-events");
        let timing = self.config.timing;
        let answer: Result<Vec<String>, BackendError> = self
            .limit(
                &conn.label,
                "CONFIG GET",
                timing.request_timeout,
                get.query_async(&mut conn.conn),
            )
            .await;
        let current = match answer {
            Ok(pair) => pair.get(1).cloned().unwrap_or_default(),
            Err(BackendError::Unavailable { source, .. })
                if source.to_string().contains("unknown command") =>
            {
                return Ok(Notifications::Unknown(source.to_string()));
            }
            Err(BackendError::Denied { message, .. }) => {
                return Ok(Notifications::Unknown(message));
            }
            Err(e) => return Err(e),
        };
        let missing = missing_events(&current, NEEDED_EVENTS);
        if missing.is_empty() {
            return Ok(Notifications::On);
        }
        if !self.config.notify_config {
            return Ok(Notifications::Missing { current, missing });
        }
        let wanted = format!("{current}{missing}");
        let mut set = redis::cmd("CONFIG");
        set.arg("SET").arg("notify-keyspace-events").arg(&wanted);
        let done: Result<(), BackendError> = self
            .limit(
                &conn.label,
                "CONFIG SET",
                timing.request_timeout,
                set.query_async(&mut conn.conn),
            )
            .await;
        match done {
            Ok(()) => {
                tracing::info!(
                    backend = NAME,
                    endpoint = %conn.label,
                    was = %current,
                    now = %wanted,
                    "turned on keyspace notifications (--redis-notify-config)"
                );
                Ok(Notifications::On)
            }
            Err(BackendError::Unavailable { source, .. })
                if source.to_string().contains("unknown command") =>
            {
                Ok(Notifications::Unknown(source.to_string()))
            }
            Err(BackendError::Denied { message, .. }) => Ok(Notifications::Unknown(message)),
            Err(e) => Err(e),
        }
    }

    /// Reads every Redis key under `interest` (confd's mapping).
    pub async fn load(&self, conn: &mut Conn, interest: &Interest) -> Result<Mirror, BackendError> {
        let mut names = BTreeSet::new();
        for prefix in &interest.prefixes {
            for pattern in scan_patterns(prefix) {
                match pattern.as_str() {
                    // The prefix itself: no scan needed.
                    p if p == glob_escape(prefix) && prefix != "/" => {
                        names.insert(prefix.clone());
                    }
                    p => self.scan(conn, p, &mut names).await?,
                }
            }
        }
        let names: Vec<String> = names.into_iter().collect();
        let mut mirror = Mirror::new();
        for chunk in names.chunks(PAGE) {
            for (key, entry) in self.read(conn, chunk).await? {
                if let Some(entry) = entry {
                    mirror.insert(key, entry);
                }
            }
        }
        tracing::debug!(
            backend = NAME,
            endpoint = %conn.label,
            keys = mirror.len(),
            "read keys"
        );
        Ok(mirror)
    }

    /// Adds the names of the keys matching `pattern` to `names`.
    async fn scan(
        &self,
        conn: &mut Conn,
        pattern: &str,
        names: &mut BTreeSet<String>,
    ) -> Result<(), BackendError> {
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(PAGE);
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .limit(
                    &conn.label,
                    "SCAN",
                    self.config.timing.request_timeout,
                    scan.query_async(&mut conn.conn),
                )
                .await?;
            names.extend(keys.into_iter().map(utf8));
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// What each of `keys` holds now (`None`: absent, or of a type sidekick
    /// does not read: lists, sets, sorted sets, streams, as confd).
    pub async fn read(
        &self,
        conn: &mut Conn,
        keys: &[String],
    ) -> Result<Vec<(String, Option<Entry>)>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let timing = self.config.timing;
        // One round trip for strings: TYPE of each, then MGET of all (nil for
        // other types).
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("TYPE").arg(key);
        }
        pipe.cmd("MGET").arg(keys);
        let mut answers: Vec<Value> = self
            .limit(
                &conn.label,
                "read",
                timing.request_timeout,
                pipe.query_async(&mut conn.conn),
            )
            .await?;
        let values: Vec<Option<Vec<u8>>> = match answers.pop() {
            Some(v) => redis::from_redis_value(v).map_err(|e| self.odd(conn, e.to_string()))?,
            None => return Err(self.odd(conn, "no answer to MGET".into())),
        };
        let mut out = Vec::with_capacity(keys.len());
        let mut hashes = Vec::new();
        for ((key, kind), value) in keys.iter().zip(answers).zip(values) {
            let kind: String = redis::from_redis_value(kind).unwrap_or_default();
            let entry = match (kind.as_str(), value) {
                ("string", Some(v)) => Some(Entry::Str(utf8(v))),
                ("hash", _) => {
                    hashes.push(out.len());
                    None
                }
                ("string" | "none", _) => None,
                (other, _) => {
                    tracing::debug!(
                        backend = NAME,
                        key = %key,
                        kind = %other,
                        "key of a type sidekick does not read (only strings and hashes); skipped"
                    );
                    None
                }
            };
            out.push((key.clone(), entry));
        }
        if !hashes.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &hashes {
                pipe.cmd("HGETALL").arg(&out[i].0);
            }
            let answers: Vec<Value> = self
                .limit(
                    &conn.label,
                    "read",
                    timing.request_timeout,
                    pipe.query_async(&mut conn.conn),
                )
                .await?;
            for (&i, answer) in hashes.iter().zip(answers) {
                let fields: Vec<(Vec<u8>, Vec<u8>)> =
                    redis::from_redis_value(answer).map_err(|e| self.odd(conn, e.to_string()))?;
                if !fields.is_empty() {
                    let fields = fields
                        .into_iter()
                        .map(|(f, v)| (utf8(f), utf8(v)))
                        .collect();
                    out[i].1 = Some(Entry::Hash(fields));
                }
            }
        }
        Ok(out)
    }

    /// An answer that does not parse.
    fn odd(&self, conn: &Conn, message: String) -> BackendError {
        unavailable(&conn.label, format!("unexpected answer: {message}"))
    }

    /// Runs `call` within `limit`; maps its error.
    pub async fn limit<T>(
        &self,
        endpoint: &str,
        what: &str,
        limit: std::time::Duration,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, BackendError> {
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.classify(&e, endpoint)),
            Err(_) => Err(unavailable(
                endpoint,
                format!("{what}: no answer within {limit:?}"),
            )),
        }
    }

    /// Maps a redis error from `endpoint` to a [`BackendError`].
    pub fn classify(&self, error: &RedisError, endpoint: &str) -> BackendError {
        let code = error.code().unwrap_or("");
        let text = error.to_string();
        let who = match (&self.config.username, self.config.has_password) {
            (Some(user), _) => format!("user {user} with the password given"),
            (None, true) => "the password given (not shown)".to_string(),
            (None, false) => "no password".to_string(),
        };
        if matches!(code, "WRONGPASS" | "NOAUTH")
            || error.kind() == redis::ErrorKind::AuthenticationFailed
            || text.contains("WRONGPASS")
            || text.contains("NOAUTH")
        {
            let hint = if self.config.has_password {
                "check --password"
            } else {
                "the server has requirepass set: give --password"
            };
            return BackendError::Denied {
                backend: NAME,
                message: format!("authentication failed at {endpoint} with {who} ({hint})"),
            };
        }
        if text.contains("without any password configured") {
            return BackendError::Denied {
                backend: NAME,
                message: format!(
                    "a password was given but {endpoint} has none set (no requirepass): \
                     drop --password"
                ),
            };
        }
        if code == "NOPERM" || text.contains("NOPERM") {
            return BackendError::Denied {
                backend: NAME,
                message: format!(
                    "permission denied at {endpoint} for {who}: {}",
                    detail(error)
                ),
            };
        }
        if text.contains("DB index is out of range") || text.contains("invalid DB index") {
            return config_error(format!(
                "{endpoint}: no such database (the server has fewer; see its `databases` setting)"
            ));
        }
        if error.kind() == redis::ErrorKind::InvalidClientConfig {
            return config_error(format!("{endpoint}: {}", detail(error)));
        }
        unavailable(endpoint, detail(error))
    }
}

/// Redis's text for an error, without anything of ours.
fn detail(error: &RedisError) -> String {
    error.to_string()
}

/// Bytes from Redis as text (invalid UTF-8 replaced).
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// An `Unavailable` error with a plain message.
pub(crate) fn unavailable(endpoint: &str, message: String) -> BackendError {
    BackendError::Unavailable {
        backend: NAME,
        endpoint: endpoint.to_string(),
        source: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interest(prefixes: &[&str]) -> Interest {
        Interest {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            services: false,
        }
    }

    #[test]
    fn patterns_as_confd_scans_them_and_escaped() {
        assert_eq!(scan_patterns("/"), ["*"]);
        assert_eq!(scan_patterns("/app/db"), ["/app/db", "/app/db/*"]);
        assert_eq!(scan_patterns("/a*b"), ["/a\\*b", "/a\\*b/*"]);
    }

    #[test]
    fn which_keys_a_prefix_wants() {
        let i = interest(&["/app"]);
        assert!(wanted("/app", &i));
        assert!(wanted("/app/db/host", &i));
        assert!(!wanted("/apple", &i));
        assert!(!wanted("app/x", &i));
        assert!(wanted("anything", &interest(&["/"])));
    }

    #[test]
    fn hashes_flatten_to_key_slash_field() {
        let i = interest(&["/app"]);
        let mut mirror = Mirror::new();
        mirror.insert(
            "/app/db".into(),
            Entry::Hash(BTreeMap::from([
                ("host".to_string(), "h".to_string()),
                ("port".to_string(), "5432".to_string()),
            ])),
        );
        mirror.insert("/app/name".into(), Entry::Str("web".into()));
        mirror.insert("/other".into(), Entry::Str("x".into()));
        let keys = tree(&mirror, &i);
        assert_eq!(keys.get("/app/db/host"), Some("h"));
        assert_eq!(keys.get("/app/db/port"), Some("5432"));
        assert_eq!(keys.get("/app/name"), Some("web"));
        assert_eq!(keys.get("/other"), None);
        // A key without a leading slash is read under `/`, as confd's clean().
        let mut m = Mirror::new();
        m.insert("plain".into(), Entry::Str("v".into()));
        assert_eq!(tree(&m, &interest(&["/"])).get("/plain"), Some("v"));
    }

    #[test]
    fn missing_notification_classes() {
        assert_eq!(missing_events("", NEEDED_EVENTS), "Kg$hxe");
        assert_eq!(missing_events("AKE", NEEDED_EVENTS), "");
        assert_eq!(missing_events("Ex", NEEDED_EVENTS), "Kg$he");
        assert_eq!(missing_events("AE", NEEDED_EVENTS), "K");
        assert_eq!(missing_events("K$gxeh", NEEDED_EVENTS), "");
    }
}
