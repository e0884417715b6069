//! The event loop: waits for the next [`Event`] (a backend batch, a debounce
//! deadline, a dev-mode save, the child's exit, SIGINT/SIGTERM) and handles it
//! in one place, always ending the same way: process what is due, then act on
//! the supervised child. The engine (`engine.rs`) does the rendering; this
//! module only decides when.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use sidekick_backend::{Backend, BackendError, Backoff, Update, UpdateStream};

use crate::config::Settings;
use crate::debounce::Debouncer;
use crate::dev::{DevEvent, DevWatcher};
use crate::engine::Engine;
use crate::executor::ChildAction;
use crate::report::Reporter;
use crate::shutdown::Shutdown;
use crate::supervise::{self, Supervisor, EXIT_CANNOT_START};

/// How the loop reports to a person: plain logs, or dev mode's live output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Normal,
    Dev,
}

/// How `sidekick exec` runs its child.
pub(crate) struct ExecSpec {
    pub argv: Vec<String>,
    pub group: bool,
    pub kill_timeout: Duration,
}

/// Retry delays of a poll that failed (and of the first load when polling).
fn poll_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(5))
}

/// One thing that happened.
enum Event {
    /// SIGINT or SIGTERM (not under exec, where they go to the child).
    Shutdown,
    /// The supervised child is gone, with this exit code.
    ChildGone(i32),
    /// An item of the backend's stream; `None` when it ended.
    Backend(Option<Result<Vec<Update>, BackendError>>),
    /// A debounce deadline passed.
    Due,
    /// A dev-mode save; `None` when the dev watcher stopped.
    Dev(Option<DevEvent>),
}

/// What to do after an event.
enum Flow {
    Continue,
    Exit(i32),
}

/// The running loop's state.
struct Loop {
    engine: Engine,
    shutdown: Shutdown,
    supervisor: Option<Supervisor>,
    stream: Option<UpdateStream>,
    dev: Option<DevWatcher>,
    debouncer: Debouncer,
    watch: bool,
    interval: Duration,
    /// The backend is failing (an error came after the last good batch).
    down: bool,
    /// The stream was restarted for a new interest: its first batch replaces
    /// the data and every resource renders.
    resync: bool,
}

/// Runs until `--onetime` is done, until SIGINT/SIGTERM, or (exec) until the
/// child ends. Returns the exit code.
pub(crate) async fn run(
    settings: Settings,
    backend: Arc<dyn Backend>,
    mode: Mode,
    exec: Option<ExecSpec>,
) -> anyhow::Result<i32> {
    let mut shutdown = Shutdown::new()?;
    let onetime = settings.onetime && mode == Mode::Normal;
    let watch = settings.watch || mode == Mode::Dev;
    let interval = Duration::from_secs(settings.interval.max(1));
    let confdir = settings.confdir.clone();
    let noop = settings.noop;
    let reporter = match mode {
        Mode::Normal => Reporter::Log,
        Mode::Dev => Reporter::Dev {
            color: crate::color_stdout(),
        },
    };
    let mut engine = Engine::new(settings, backend, reporter, exec.is_some())?;

    if onetime && exec.is_none() {
        let interest = engine.interest();
        let backend = Arc::clone(engine.backend());
        let snapshot = tokio::select! {
            loaded = backend.load(&interest) => loaded.map_err(|e| anyhow::anyhow!(e))?,
            _ = shutdown.recv() => return Ok(interrupted_code()),
        };
        engine.set_data(snapshot);
        let report = engine.process_all();
        if let Some(signal) = crate::shutdown::requested() {
            tracing::info!(%signal, "{signal} received during the onetime run, stopped");
            return Ok(interrupted_code());
        }
        tracing::info!(
            updated = report.updated,
            unchanged = report.unchanged,
            failed = report.failed,
            skipped = report.skipped,
            "onetime run done"
        );
        // The process ends now: the OS frees the tree and the templates at
        // once, faster than dropping them entry by entry.
        std::mem::forget(engine);
        // `--noop` tells a CI gate whether files would change: 2 if so.
        return Ok(if report.failed > 0 {
            1
        } else if noop && report.updated > 0 {
            2
        } else {
            0
        });
    }

    let dev = match mode {
        Mode::Dev => Some(DevWatcher::new(&confdir)?),
        Mode::Normal => None,
    };
    if mode == Mode::Dev {
        println!(
            "sidekick dev: watching {} (conf.d, templates) and the data files; Ctrl-C to stop",
            confdir.display()
        );
    }

    // Under exec, our handlers for the forwarded signals go in before anything
    // slow happens, so an early SIGHUP cannot kill us by its default action.
    let supervisor = match &exec {
        Some(spec) => Some(Supervisor::new(
            spec.argv.clone(),
            spec.group,
            spec.kill_timeout,
        )?),
        None => None,
    };

    let mut lp = Loop {
        engine,
        shutdown,
        supervisor,
        stream: None,
        dev,
        debouncer: Debouncer::default(),
        watch,
        interval,
        down: false,
        resync: false,
    };
    lp.stream = Some(lp.open_stream());

    // First render: wait for the stream's first batch (a snapshot); nothing
    // is written before. A SIGINT/SIGTERM meanwhile stops sidekick (no child
    // started yet).
    let Some(first) = lp.first_batch().await? else {
        return Ok(0);
    };
    lp.engine.set_first(first);
    let report = lp.engine.process_all();
    lp.schedule_retries(&report.retry);
    // The child starts with the files as they are now.
    lp.engine.take_child_actions();
    if onetime {
        // `exec --onetime`: render once, then only supervise.
        lp.stream = None;
    }

    // A SIGINT/SIGTERM that came during the first render: stop before anything
    // starts. Yielding lets the runtime take in a signal delivered meanwhile.
    tokio::task::yield_now().await;
    if lp.shutdown.recv().now_or_never().is_some() {
        return Ok(0);
    }

    if let (Some(spec), Some(sup)) = (&exec, lp.supervisor.as_mut()) {
        if report.failed > 0 && mode == Mode::Normal {
            anyhow::bail!(
                "not starting {:?}: {} resource(s) failed to render (see above)",
                spec.argv.join(" "),
                report.failed
            );
        }
        if let Err(e) = sup.start() {
            eprintln!("sidekick: error: {e}");
            return Ok(EXIT_CANNOT_START);
        }
    }

    loop {
        let event = lp.next_event().await;
        if let Flow::Exit(code) = lp.handle(event).await {
            return Ok(code);
        }
    }
}

/// The exit code of a `--onetime` run stopped by a signal: 128 + its number,
/// as a shell reports a process killed by it.
fn interrupted_code() -> i32 {
    crate::shutdown::requested().map_or(1, |signal| 128 + signal as i32)
}

impl Loop {
    /// The backend's watch for the current interest, or a poll in the same
    /// shape when the backend cannot watch or `--watch` is off.
    fn open_stream(&self) -> UpdateStream {
        let backend = self.engine.backend();
        let interest = self.engine.interest();
        if self.watch {
            if let Some(stream) = backend.watch(&interest) {
                return stream;
            }
            tracing::warn!(
                backend = backend.name(),
                interval = self.interval.as_secs(),
                "backend cannot watch; polling instead"
            );
        }
        sidekick_backend::poll(Arc::clone(backend), interest, self.interval, poll_backoff())
    }

    /// Waits for the first good batch of the stream, logging errors on the
    /// way. `None` when told to stop first.
    async fn first_batch(&mut self) -> anyhow::Result<Option<Vec<Update>>> {
        loop {
            let item = tokio::select! {
                item = next_update(&mut self.stream) => item,
                _ = self.shutdown.recv() => return Ok(None),
            };
            match item {
                Some(Ok(batch)) => {
                    if self.down {
                        self.back_up();
                    }
                    return Ok(Some(batch));
                }
                Some(Err(e)) => {
                    if !self.down {
                        tracing::error!(
                            backend = self.engine.backend().name(),
                            "initial load failed, retrying: {e}"
                        );
                        self.engine.reporter().console_error(&e.to_string());
                    }
                    self.down = true;
                }
                None => anyhow::bail!(
                    "{}: the backend stopped before its first answer (see above)",
                    self.engine.backend().name()
                ),
            }
        }
    }

    /// Waits for the next event.
    async fn next_event(&mut self) -> Event {
        let due = self.debouncer.next_due();
        let exec = self.supervisor.is_some();
        tokio::select! {
            _ = self.shutdown.recv(), if !exec => Event::Shutdown,
            event = next_child_event(&mut self.supervisor) => match event {
                supervise::Event::Exited(code) | supervise::Event::Stopped(code) => {
                    Event::ChildGone(code)
                }
            },
            item = next_update(&mut self.stream) => Event::Backend(item),
            _ = sleep_until_due(due) => Event::Due,
            event = next_dev_event(&mut self.dev) => Event::Dev(event),
        }
    }

    /// Handles one event: works out what to render now, renders it, then acts
    /// on the child.
    async fn handle(&mut self, event: Event) -> Flow {
        let now = tokio::time::Instant::now();
        let which = match event {
            Event::Shutdown => return Flow::Exit(0),
            Event::ChildGone(code) => return Flow::Exit(code),
            Event::Backend(Some(Ok(batch))) => {
                if self.down {
                    self.back_up();
                }
                if std::mem::take(&mut self.resync) {
                    self.engine.set_first(batch);
                    self.debouncer.clear();
                    self.engine.all()
                } else {
                    self.schedule(batch, now)
                }
            }
            Event::Backend(Some(Err(e))) => {
                // The driver yields an error only when the backend's state
                // changes, so each one is worth a line.
                let backend = self.engine.backend().name();
                self.engine
                    .reporter()
                    .backend_error(backend, &e.to_string());
                self.down = true;
                return Flow::Continue;
            }
            Event::Backend(None) => {
                tracing::error!(
                    backend = self.engine.backend().name(),
                    "watch ended; falling back to polling"
                );
                let backend = Arc::clone(self.engine.backend());
                self.stream = Some(sidekick_backend::poll(
                    backend,
                    self.engine.interest(),
                    self.interval,
                    poll_backoff(),
                ));
                return Flow::Continue;
            }
            Event::Due => self.debouncer.take_due(now),
            Event::Dev(None) => {
                self.dev = None;
                return Flow::Continue;
            }
            Event::Dev(Some(event)) => {
                self.debouncer.clear();
                let interest = self.engine.interest();
                let which = self.engine.on_dev_event(event);
                if self.engine.interest() != interest {
                    // New keys to read: render once the new stream's first
                    // snapshot is in.
                    self.stream = Some(self.open_stream());
                    self.resync = true;
                    Vec::new()
                } else {
                    which
                }
            }
        };
        if !which.is_empty() {
            let report = self.engine.process(&which);
            self.schedule_retries(&report.retry);
        }
        self.act_on_child().await
    }

    /// Applies a batch and schedules the resources it touches; returns those
    /// due now (no `wait`).
    fn schedule(&mut self, batch: Vec<Update>, now: tokio::time::Instant) -> Vec<usize> {
        let changes = self.engine.apply(batch);
        if changes.is_empty() {
            return Vec::new();
        }
        let which = self.engine.affected(&changes);
        tracing::debug!(
            keys = changes.key_count(),
            resources = which.len(),
            "change"
        );
        for i in which {
            let (wait, not_before) = self.engine.pacing(i);
            self.debouncer.touch(i, wait, not_before, now);
        }
        // Without a wait, render now rather than through the timer.
        if self.debouncer.next_due().is_some_and(|due| due <= now) {
            self.debouncer.take_due(now)
        } else {
            Vec::new()
        }
    }

    /// Schedules each failed write to be tried again after its delay (a full
    /// or read-only disk may be fixed without any change sidekick would see).
    fn schedule_retries(&mut self, retry: &[(usize, Duration)]) {
        let now = tokio::time::Instant::now();
        for &(i, delay) in retry {
            self.debouncer.touch(i, None, Some(now + delay), now);
        }
    }

    fn back_up(&mut self) {
        self.down = false;
        tracing::info!(backend = self.engine.backend().name(), "backend is back");
    }

    /// Signals or restarts the supervised child as the last pass asked.
    async fn act_on_child(&mut self) -> Flow {
        let actions = self.engine.take_child_actions();
        let Some(sup) = self.supervisor.as_mut() else {
            return Flow::Continue;
        };
        for action in actions {
            match action {
                ChildAction::Signal(sig) => {
                    if let Err(e) = sup.signal(sig) {
                        tracing::error!("{e}");
                    }
                }
                ChildAction::Restart(sig) => {
                    if let Err(e) = sup.restart(sig).await {
                        eprintln!("sidekick: error: {e}");
                        return Flow::Exit(EXIT_CANNOT_START);
                    }
                }
            }
        }
        Flow::Continue
    }
}

async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_child_event(supervisor: &mut Option<Supervisor>) -> supervise::Event {
    match supervisor {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn next_update(
    stream: &mut Option<UpdateStream>,
) -> Option<Result<Vec<Update>, BackendError>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn next_dev_event(dev: &mut Option<DevWatcher>) -> Option<DevEvent> {
    match dev {
        Some(d) => d.next().await,
        None => std::future::pending().await,
    }
}
