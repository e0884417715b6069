//! What `/readyz` answers from: the event loop writes here after each pass and
//! each change of the backend's state; the endpoint reads. Ready means every
//! resource has rendered once (or found its file up to date) and the backend
//! has answered, and stops meaning it while the backend has been unreachable
//! for longer than `--ready-timeout`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared between the event loop and the endpoints.
pub(crate) struct Status {
    ready_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each source the loop reads (its label), and how it is doing.
    backends: Vec<(String, Backend)>,
    /// What holds readiness back on the resources' side (`Engine::not_ready`).
    not_ready: Vec<String>,
}

/// One source's state.
#[derive(Default)]
struct Backend {
    /// It has answered at least once.
    answered: bool,
    /// Since when it has been unreachable, if it is.
    down_since: Option<Instant>,
}

impl Status {
    /// Not ready: nothing has answered or rendered yet.
    pub fn new(ready_timeout: Duration) -> Status {
        Status {
            ready_timeout,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data: usable after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Source `backend`'s entry, added (not answered yet) if new.
    fn with(&self, backend: &str, f: impl FnOnce(&mut Backend)) {
        let mut s = self.state();
        let i = match s.backends.iter().position(|(b, _)| b == backend) {
            Some(i) => i,
            None => {
                s.backends.push((backend.to_string(), Backend::default()));
                s.backends.len() - 1
            }
        };
        f(&mut s.backends[i].1);
    }

    /// Source `backend` is read: ready waits for its first answer.
    pub fn expect(&self, backend: &str) {
        self.with(backend, |_| {});
    }

    /// Source `backend` answered (a batch came in).
    pub fn backend_answered(&self, backend: &str) {
        self.with(backend, |b| {
            b.answered = true;
            b.down_since = None;
        });
    }

    /// Source `backend` failed; the clock of `--ready-timeout` starts now
    /// unless it was already running.
    pub fn backend_down(&self, backend: &str) {
        self.with(backend, |b| {
            b.down_since.get_or_insert_with(Instant::now);
        });
    }

    /// The resources that are not ready yet, after a pass.
    pub fn set_not_ready(&self, not_ready: Vec<String>) {
        self.state().not_ready = not_ready;
    }

    /// Whether sidekick is ready, and the body that says so or why not.
    pub fn readiness(&self) -> (bool, String) {
        let s = self.state();
        let mut why = Vec::new();
        for (name, b) in &s.backends {
            if !b.answered {
                why.push(format!("backend {name}: no answer yet"));
            }
            if let Some(since) = b.down_since {
                let down = since.elapsed();
                if down > self.ready_timeout {
                    why.push(format!(
                        "backend {name}: unreachable for {}s (--ready-timeout {})",
                        down.as_secs(),
                        crate::debounce::format_duration(self.ready_timeout)
                    ));
                }
            }
        }
        why.extend(s.not_ready.iter().map(|r| format!("resource {r}")));
        if why.is_empty() {
            (true, "ready\n".to_string())
        } else {
            let mut body = String::from("not ready:\n");
            for line in why {
                body.push_str("  ");
                body.push_str(&line);
                body.push('\n');
            }
            (false, body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_an_answer_and_every_render_and_not_while_down_too_long() {
        let status = Status::new(Duration::from_millis(20));
        status.expect("etcdv3");
        status.expect("vault:secrets");
        status.backend_answered("vault:secrets");
        let (ready, body) = status.readiness();
        assert!(!ready);
        assert!(body.contains("backend etcdv3: no answer yet"), "{body}");
        assert!(!body.contains("vault"), "{body}");
        status.backend_answered("etcdv3");
        status.set_not_ready(vec!["app.toml (not rendered yet)".into()]);
        let (ready, body) = status.readiness();
        assert!(
            !ready && body.contains("resource app.toml (not rendered yet)"),
            "{body}"
        );
        status.set_not_ready(Vec::new());
        assert_eq!(status.readiness(), (true, "ready\n".to_string()));
        status.backend_down("vault:secrets");
        assert!(
            status.readiness().0,
            "down, but not yet for --ready-timeout"
        );
        std::thread::sleep(Duration::from_millis(30));
        let (ready, body) = status.readiness();
        assert!(
            !ready && body.contains("backend vault:secrets: unreachable for"),
            "{body}"
        );
        status.backend_answered("vault:secrets");
        assert!(status.readiness().0);
    }
}
