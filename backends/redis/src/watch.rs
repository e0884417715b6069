//! The watch as a resumable state machine (the shape of every sidekick
//! watch): one [`State`] enum and one [`Machine::step`] that moves between
//! states. `sidekick_backend::drive` runs it, waiting a backoff delay after a
//! failed step and reporting each outage once.
//!
//! ```text
//! Connecting ──notifications on──▶ Subscribing ──▶ Loading ──▶ Watching ──(events)──▶ Watching
//!     │  ▲                                            ▲           │ error / closed
//!     │  └──────────── (any failure) ◀────────────────┼───────────┘
//!     └──notifications off──▶ Loading ──▶ Waiting ──(--interval)──┘ (and checks again)
//! ```
//!
//! Redis keeps no history to resume from: every (re)connection subscribes to
//! the keyspace channels of the interest's keys first, then reads everything
//! (a new [`Update::Snapshot`]), so no change made while it reads is lost: it
//! arrives as a notification afterwards. A notification names a key, not its
//! new value (and for a hash, not the field): the key is read again and
//! compared with what was delivered, which gives the puts and deletes.
//!
//! Keyspace notifications are a server setting (`notify-keyspace-events`).
//! When they are off, and `--redis-notify-config` does not let sidekick turn
//! them on, the watch says so in a warning and reads everything every
//! `--interval` instead, checking the setting again each time.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use redis::Msg;
use sidekick_backend::{BackendError, Interest, Machine, Names, Snapshot, Step, Update};

use crate::client::{
    tree, unavailable, wanted, Conn, Entry, Mirror, Notifications, Server, Subscription,
    NEEDED_EVENTS,
};
use crate::NAME;

/// Most notifications taken into one batch.
const BATCH: usize = 1000;

/// Where the machine is.
pub(crate) enum State {
    /// Opening a command connection and reading the notification setting.
    Connecting,
    /// Subscribing to the keyspace channels, before reading.
    Subscribing { conn: Conn },
    /// Reading everything; then watching when `sub` is open, else polling.
    Loading {
        conn: Conn,
        sub: Option<Subscription>,
    },
    /// Following notifications.
    Watching {
        conn: Conn,
        sub: Subscription,
        mirror: Mirror,
    },
    /// Polling: waiting `--interval` before reading again.
    Waiting { conn: Conn },
}

/// The watch over one [`Interest`], for `sidekick_backend::drive`.
pub(crate) struct Watch {
    server: Arc<Server>,
    interest: Interest,
    state: State,
    /// Whether the polling warning was given (once per watch).
    warned: bool,
}

impl Watch {
    pub fn new(server: Arc<Server>, interest: Interest) -> Watch {
        Watch {
            server,
            interest,
            state: State::Connecting,
            warned: false,
        }
    }

    fn failed(&mut self, error: BackendError) -> Step {
        self.state = State::Connecting;
        Step::Failed(error)
    }

    /// Where a connection goes, given the notification setting: subscribe,
    /// or poll (with a warning saying why, once).
    fn route(&mut self, conn: Conn, notifications: Notifications) -> State {
        let why = match notifications {
            Notifications::On => return State::Subscribing { conn },
            Notifications::Missing { current, missing } => format!(
                "keyspace notifications are off on {} (notify-keyspace-events is {current:?}; \
                 the watch needs {NEEDED_EVENTS:?}, missing {missing:?}): run \
                 `CONFIG SET notify-keyspace-events {NEEDED_EVENTS}` (or set it in redis.conf), \
                 or pass --redis-notify-config to let sidekick set it",
                conn.label
            ),
            Notifications::Unknown(reason) => format!(
                "cannot read notify-keyspace-events on {} ({reason}), so changes may not be \
                 notified",
                conn.label
            ),
        };
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                backend = NAME,
                endpoint = %conn.label,
                interval = ?self.server.config.poll_interval,
                "{why}; polling every --interval instead"
            );
        }
        State::Loading { conn, sub: None }
    }

    /// Reads the keys named by `first` and the notifications already
    /// waiting behind it, and turns what changed into updates.
    async fn changes(
        &self,
        conn: &mut Conn,
        sub: &mut Subscription,
        mirror: &mut Mirror,
        first: Msg,
    ) -> Result<Vec<Update>, BackendError> {
        let mut keys = BTreeSet::new();
        let add = |keys: &mut BTreeSet<String>, msg: &Msg| {
            if let Some(key) = notified_key(msg) {
                if wanted(key, &self.interest) {
                    keys.insert(key.to_string());
                }
            }
        };
        add(&mut keys, &first);
        while keys.len() < BATCH {
            match sub.stream.next().now_or_never() {
                Some(Some(msg)) => add(&mut keys, &msg),
                // Closed, or nothing more waiting: the next step sees a close.
                Some(None) | None => break,
            }
        }
        let keys: Vec<String> = keys.into_iter().collect();
        let read = self.server.read(conn, &keys).await?;
        let mut updates = Vec::new();
        for (key, now) in read {
            let before = match &now {
                Some(entry) => mirror.insert(key.clone(), entry.clone()),
                None => mirror.remove(&key),
            };
            diff(
                &key,
                before.as_ref(),
                now.as_ref(),
                &self.interest,
                &mut updates,
            );
        }
        Ok(updates)
    }
}

/// The key a keyspace notification is about (`__keyspace@0__:KEY`).
pub(crate) fn notified_key(msg: &Msg) -> Option<&str> {
    let channel = msg.get_channel_name();
    let rest = channel.strip_prefix("__keyspace@")?;
    let (_db, key) = rest.split_once("__:")?;
    Some(key)
}

/// The updates that turn `before` into `now` for the Redis key `key`.
pub(crate) fn diff(
    key: &str,
    before: Option<&Entry>,
    now: Option<&Entry>,
    interest: &Interest,
    updates: &mut Vec<Update>,
) {
    let old: Vec<(String, &str)> = before
        .map(|e| e.flatten(key, interest).collect())
        .unwrap_or_default();
    let new: Vec<(String, &str)> = now
        .map(|e| e.flatten(key, interest).collect())
        .unwrap_or_default();
    for (k, _) in &old {
        if !new.iter().any(|(n, _)| n == k) {
            updates.push(Update::Delete { key: k.clone() });
        }
    }
    for (k, v) in new {
        if !old.iter().any(|(o, ov)| *o == k && *ov == v) {
            updates.push(Update::Put {
                key: k,
                value: v.to_string(),
            });
        }
    }
}

impl Machine for Watch {
    const NAMES: Names = Names::new("Redis watch", "Redis");

    fn state(&self) -> &'static str {
        match self.state {
            State::Connecting => "connecting",
            State::Subscribing { .. } => "subscribing",
            State::Loading { .. } => "loading",
            State::Watching { .. } => "watching",
            State::Waiting { .. } => "waiting",
        }
    }

    async fn step(&mut self) -> Step {
        let state = std::mem::replace(&mut self.state, State::Connecting);
        match state {
            State::Connecting => {
                let mut conn = match self.server.connect().await {
                    Ok(conn) => conn,
                    Err(e) => return self.failed(e),
                };
                match self.server.notifications(&mut conn).await {
                    Ok(n) => {
                        self.state = self.route(conn, n);
                        Step::Pending
                    }
                    Err(e) => self.failed(e),
                }
            }
            State::Subscribing { conn } => {
                match self.server.subscribe(&conn, &self.interest).await {
                    Ok(sub) => {
                        tracing::debug!(
                            backend = NAME,
                            endpoint = %conn.label,
                            prefixes = self.interest.prefixes.len(),
                            "subscribed to keyspace notifications"
                        );
                        self.state = State::Loading {
                            conn,
                            sub: Some(sub),
                        };
                        Step::Pending
                    }
                    Err(e) => self.failed(e),
                }
            }
            State::Loading { mut conn, sub } => {
                match self.server.load(&mut conn, &self.interest).await {
                    Ok(mirror) => {
                        let keys = tree(&mirror, &self.interest);
                        self.state = match sub {
                            Some(sub) => State::Watching { conn, sub, mirror },
                            None => State::Waiting { conn },
                        };
                        Step::Updates(vec![Update::Snapshot(Snapshot {
                            keys,
                            catalog: None,
                        })])
                    }
                    Err(e) => self.failed(e),
                }
            }
            State::Watching {
                mut conn,
                mut sub,
                mut mirror,
            } => {
                let ping_every = self.server.config.timing.ping_interval;
                let next = tokio::select! {
                    msg = sub.stream.next() => msg.ok_or(()),
                    _ = tokio::time::sleep(ping_every) => {
                        // Idle: make sure the subscription is still alive.
                        let timeout = self.server.config.timing.request_timeout;
                        let ping = sub.sink.ping::<redis::Value>();
                        if let Err(e) = self.server.limit(&conn.label, "PING", timeout, ping).await {
                            return self.failed(e);
                        }
                        self.state = State::Watching { conn, sub, mirror };
                        return Step::Pending;
                    }
                };
                let Ok(first) = next else {
                    let error = unavailable(
                        &conn.label,
                        "connection closed by the server (subscription ended)".into(),
                    );
                    return self.failed(error);
                };
                match self.changes(&mut conn, &mut sub, &mut mirror, first).await {
                    Ok(updates) => {
                        self.state = State::Watching { conn, sub, mirror };
                        Step::Updates(updates)
                    }
                    Err(e) => self.failed(e),
                }
            }
            State::Waiting { mut conn } => {
                tokio::time::sleep(self.server.config.poll_interval).await;
                match self.server.notifications(&mut conn).await {
                    Ok(Notifications::On) => {
                        tracing::info!(
                            backend = NAME,
                            endpoint = %conn.label,
                            "keyspace notifications are on now; watching instead of polling"
                        );
                        self.state = State::Subscribing { conn };
                        Step::Pending
                    }
                    Ok(_) => {
                        self.state = State::Loading { conn, sub: None };
                        Step::Pending
                    }
                    Err(e) => self.failed(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn interest(prefixes: &[&str]) -> Interest {
        Interest {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            services: false,
        }
    }

    #[test]
    fn a_changed_hash_gives_puts_for_new_fields_and_deletes_for_gone_ones() {
        let i = interest(&["/"]);
        let before = Entry::Hash(BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]));
        let now = Entry::Hash(BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("c".to_string(), "3".to_string()),
        ]));
        let mut updates = Vec::new();
        diff("/h", Some(&before), Some(&now), &i, &mut updates);
        assert_eq!(
            updates,
            [
                Update::Delete { key: "/h/b".into() },
                Update::Put {
                    key: "/h/c".into(),
                    value: "3".into()
                }
            ]
        );
        let mut updates = Vec::new();
        diff("/s", Some(&Entry::Str("x".into())), None, &i, &mut updates);
        assert_eq!(updates, [Update::Delete { key: "/s".into() }]);
        let mut updates = Vec::new();
        let same = Entry::Str("x".into());
        diff("/s", Some(&same), Some(&same), &i, &mut updates);
        assert!(updates.is_empty());
    }
}
