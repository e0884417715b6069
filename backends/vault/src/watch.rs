//! The watch: Vault has none, so this is polling, written as a resumable
//! state machine for `sidekick_backend::drive` (which owns the backoff after
//! a failed step and reports each outage once).
//!
//! ```text
//! Polling ──ok──▶ Waiting ──interval──▶ Polling
//!   ▲  │ failed (drive backs off)  │ token due
//!   └──┘                           ▼
//!   ◀──────── failed ──────── Renewing ──ok──▶ Waiting
//! ```
//!
//! Each poll lists the secrets under the interest and, for KV v2, reads
//! each one's metadata: a secret whose `current_version` did not move is
//! not read again. The first poll's keys go out as one `Update::Snapshot`;
//! later polls send only what changed (`Put`/`Delete`), so only the
//! resources reading those keys render. Between polls the machine wakes to
//! renew the token two thirds into its TTL (or log in again when it cannot
//! be renewed), so a token never lapses between two polls that are further
//! apart than its TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sidekick_backend::{Interest, KeyTree, Machine, Names, Snapshot, Step, Update};

use crate::read::{read_all, Cache, Session};

/// Where the machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading everything (after logging in, if need be).
    Polling,
    /// Sleeping until the next poll or the token's renewal.
    Waiting,
    /// Renewing the token (or logging in again).
    Renewing,
}

/// The poll over one [`Interest`].
pub(crate) struct Watch {
    session: Arc<Session>,
    interest: Interest,
    interval: Duration,
    state: State,
    cache: Cache,
    /// What was last delivered; `None` before the first snapshot.
    last: Option<KeyTree>,
    next_poll: Instant,
}

impl Watch {
    pub fn new(session: Arc<Session>, interest: Interest) -> Watch {
        let interval = session.api.cfg.interval;
        Watch {
            session,
            interest,
            interval,
            state: State::Polling,
            cache: Cache::default(),
            last: None,
            next_poll: Instant::now(),
        }
    }
}

/// The updates that take `old` to `new`.
fn diff(old: &KeyTree, new: &KeyTree) -> Vec<Update> {
    old.changed_keys(new)
        .into_iter()
        .map(|key| match new.get(&key) {
            Some(value) => Update::Put {
                value: value.to_string(),
                key,
            },
            None => Update::Delete { key },
        })
        .collect()
}

impl Machine for Watch {
    const NAMES: Names = Names::new("Vault poll", "Vault");

    fn state(&self) -> &'static str {
        match self.state {
            State::Polling => "polling",
            State::Waiting => "waiting",
            State::Renewing => "renewing",
        }
    }

    async fn step(&mut self) -> Step {
        match self.state {
            State::Polling => {
                match read_all(&self.session, &self.interest, Some(&mut self.cache)).await {
                    Ok(tree) => {
                        self.next_poll = Instant::now() + self.interval;
                        self.state = State::Waiting;
                        let updates = match &self.last {
                            None => vec![Update::Snapshot(Snapshot {
                                keys: tree.clone(),
                                catalog: None,
                            })],
                            Some(old) => diff(old, &tree),
                        };
                        if !updates.is_empty() {
                            tracing::debug!(
                                backend = crate::NAME,
                                changes = updates.len(),
                                keys = tree.len(),
                                "Vault poll found changes"
                            );
                        }
                        self.last = Some(tree);
                        Step::Updates(updates)
                    }
                    // Stay here: the driver waits a backoff delay first.
                    Err(e) => Step::Failed(e),
                }
            }
            State::Waiting => {
                let renew = self.session.renew_at();
                let (until, then) = match renew {
                    Some(r) if r < self.next_poll => (r, State::Renewing),
                    _ => (self.next_poll, State::Polling),
                };
                tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
                self.state = then;
                Step::Pending
            }
            State::Renewing => match self.session.token().await {
                Ok(_) => {
                    self.state = State::Waiting;
                    Step::Updates(Vec::new())
                }
                Err(e) => {
                    self.state = State::Polling;
                    Step::Failed(e)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_sends_only_what_changed() {
        let mut old = KeyTree::new();
        old.insert("/s/a/x", "1");
        old.insert("/s/a/y", "2");
        let mut new = KeyTree::new();
        new.insert("/s/a/x", "1");
        new.insert("/s/a/z", "3");
        assert_eq!(
            diff(&old, &new),
            [
                Update::Delete {
                    key: "/s/a/y".into()
                },
                Update::Put {
                    key: "/s/a/z".into(),
                    value: "3".into()
                },
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
