//! The event loop: waits for the next [`Event`] (a backend batch, a debounce
//! deadline, a dev-mode save, the child's exit, SIGINT/SIGTERM) and handles it
//! in one place, always ending the same way: process what is due, then act on
//! the supervised child. The engine (`engine.rs`) does the rendering; this
//! module only decides when.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use sidekick_backend::{Backend, BackendError, Backoff, Interest, Update, UpdateStream};

use crate::config::Settings;
use crate::debounce::Debouncer;
use crate::dev::{DevEvent, DevWatcher};
use crate::endpoints::{self, Endpoints, Ping};
use crate::engine::{Engine, Report};
use crate::executor::ChildAction;
use crate::metrics;
use crate::report::Reporter;
use crate::shutdown::Shutdown;
use crate::status::Status;
use crate::supervise::{self, Supervisor, EXIT_CANNOT_START};
use crate::systemd;

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
    /// An item of source `.0`'s stream; `None` when it ended.
    Backend(usize, Option<Result<Vec<Update>, BackendError>>),
    /// A debounce deadline passed.
    Due,
    /// A dev-mode save; `None` when the dev watcher stopped.
    Dev(Option<DevEvent>),
    /// `/healthz` asks whether the loop is alive.
    Ping(Ping),
    /// Time for systemd's `WATCHDOG=1`.
    Watchdog,
}

/// The settings the endpoints need, kept before the engine takes the rest.
struct OpsSettings {
    metrics_addr: Option<String>,
    ready_timeout: Duration,
}

/// Which resources a pass renders.
enum Which {
    All,
    These(Vec<usize>),
}

/// The operations endpoints and what they read (`--metrics-addr`).
struct Ops {
    status: Arc<Status>,
    pings: tokio::sync::mpsc::Receiver<Ping>,
    /// Serving while held.
    _endpoints: Endpoints,
}

/// One source's stream (`source.rs`) and how it is doing.
#[derive(Default)]
struct Feed {
    /// `None` while no resource reads the source.
    stream: Option<UpdateStream>,
    /// What the stream was opened for.
    interest: Option<Interest>,
    /// It is failing (an error came after its last good batch).
    down: bool,
    /// It was (re)opened for a new interest: its first batch replaces the
    /// source's data and every resource reading it renders.
    resync: bool,
    /// It has answered once.
    answered: bool,
}

/// What to do after an event.
enum Flow {
    Continue,
    Exit(i32),
}

/// The running loop's state.
struct Loop {
    /// `None` only while a pass has it on a worker thread ([`Loop::pass`]).
    engine: Option<Engine>,
    shutdown: Shutdown,
    supervisor: Option<Supervisor>,
    /// One per source, by the engine's source index.
    feeds: Vec<Feed>,
    /// The feed polled first next time, so that a busy one cannot starve the others.
    next_feed: usize,
    dev: Option<DevWatcher>,
    debouncer: Debouncer,
    watch: bool,
    interval: Duration,
    ops: Option<Ops>,
    watchdog: Option<tokio::time::Interval>,
    /// The child ended while a pass ran: exit with this code after it.
    child_exit: Option<i32>,
    /// SIGINT/SIGTERM came while a pass ran (not under exec): stop after it.
    stop: bool,
}

/// Runs until `--onetime` is done, until SIGINT/SIGTERM, or (exec) until the
/// child ends. Returns the exit code.
pub(crate) async fn run(
    settings: Settings,
    backend: Result<Arc<dyn Backend>, crate::backend::BuildError>,
    mode: Mode,
    exec: Option<ExecSpec>,
) -> anyhow::Result<i32> {
    let mut shutdown = Shutdown::new()?;
    let onetime = settings.onetime && mode == Mode::Normal;
    let watch = settings.watch || mode == Mode::Dev;
    let interval = Duration::from_secs(settings.interval.max(1));
    let confdir = settings.confdir.clone();
    let noop = settings.noop;
    let settings_ops = OpsSettings {
        metrics_addr: settings.metrics_addr.clone(),
        ready_timeout: settings.ready_timeout,
    };
    let reporter = match mode {
        Mode::Normal => Reporter::Log,
        Mode::Dev => Reporter::Dev {
            color: crate::color_stdout(),
        },
    };
    let mut engine = Engine::new(settings, backend, reporter, exec.is_some())?;

    if onetime && exec.is_none() {
        for s in engine.sources_of(&engine.all()) {
            let interest = engine.source_interest(s);
            let backend = Arc::clone(engine.source_backend(s));
            let snapshot = tokio::select! {
                loaded = backend.load(&interest) => loaded.map_err(|e| anyhow::anyhow!(e))?,
                _ = shutdown.recv() => return Ok(interrupted_code()),
            };
            engine.set_data_of(s, snapshot);
        }
        // On a worker thread, as every pass (a `reload_url` call blocks on
        // the runtime, which the runtime's own thread cannot).
        let (engine, report) = tokio::task::spawn_blocking(move || {
            let report = engine.process_all();
            (engine, report)
        })
        .await
        .map_err(|e| anyhow::anyhow!("the render pass failed: {e}"))?;
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

    let ops = match &settings_ops.metrics_addr {
        Some(addr) => {
            let handle = metrics::install()?;
            let status = Arc::new(Status::new(settings_ops.ready_timeout));
            status.set_not_ready(engine.not_ready());
            let (tx, pings) = tokio::sync::mpsc::channel(16);
            let endpoints = endpoints::start(addr, handle, Arc::clone(&status), tx).await?;
            Some(Ops {
                status,
                pings,
                _endpoints: endpoints,
            })
        }
        None => None,
    };
    let watchdog = systemd::watchdog_interval().map(|every| {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });

    let mut lp = Loop {
        engine: Some(engine),
        shutdown,
        supervisor,
        feeds: Vec::new(),
        next_feed: 0,
        dev,
        debouncer: Debouncer::default(),
        watch,
        interval,
        ops,
        watchdog,
        child_exit: None,
        stop: false,
    };
    lp.open_feeds();

    // First render: wait for every stream's first batch (a snapshot); nothing
    // is written before. A SIGINT/SIGTERM meanwhile stops sidekick (no child
    // started yet).
    if !lp.first_batches().await? {
        return Ok(0);
    }
    let report = lp.pass(Which::All).await?;
    lp.schedule_retries(&report.retry);
    // The child starts with the files as they are now.
    lp.engine_mut().take_child_actions();
    systemd::notify("READY=1");
    if lp.stop {
        return Ok(0);
    }
    if onetime {
        // `exec --onetime`: render once, then only supervise.
        lp.feeds.clear();
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
    /// The engine, between passes.
    fn engine(&self) -> &Engine {
        match &self.engine {
            Some(engine) => engine,
            // Only `pass` takes the engine, and it puts it back before it
            // returns; nothing else runs meanwhile.
            None => unreachable!("the engine is away only during a pass"),
        }
    }

    fn engine_mut(&mut self) -> &mut Engine {
        match &mut self.engine {
            Some(engine) => engine,
            // As in `engine`.
            None => unreachable!("the engine is away only during a pass"),
        }
    }

    /// Whether a supervised child is running (signals then go to it).
    fn child_running(&self) -> bool {
        self.supervisor.as_ref().is_some_and(Supervisor::has_child)
    }

    /// Runs one pass on a worker thread (tokio's blocking pool), so renders,
    /// DNS lookups and `check_cmd`/`reload_cmd` never hold up the loop: it
    /// keeps forwarding signals to the child, reaping, and answering
    /// `/healthz` and the systemd watchdog. SIGINT/SIGTERM meanwhile stop the
    /// pass (it reads `shutdown::requested`) and then sidekick (`self.stop`).
    async fn pass(&mut self, which: Which) -> anyhow::Result<Report> {
        let Some(mut engine) = self.engine.take() else {
            anyhow::bail!("internal error: a pass started while another ran");
        };
        let mut task = tokio::task::spawn_blocking(move || {
            let report = match which {
                Which::All => engine.process_all(),
                Which::These(which) => engine.process(&which),
            };
            (engine, report)
        });
        loop {
            let child = self.child_running() && self.child_exit.is_none();
            tokio::select! {
                joined = &mut task => {
                    let (engine, report) = joined
                        .map_err(|e| anyhow::anyhow!("the render pass failed: {e}"))?;
                    self.engine = Some(engine);
                    if let Some(ops) = &self.ops {
                        ops.status.set_not_ready(self.engine().not_ready());
                    }
                    return Ok(report);
                }
                event = next_child_event(&mut self.supervisor), if child => {
                    let (supervise::Event::Exited(code) | supervise::Event::Stopped(code)) = event;
                    self.child_exit = Some(code);
                }
                _ = self.shutdown.recv(), if !self.child_running() && !self.stop => self.stop = true,
                Some(ping) = next_ping(&mut self.ops) => {
                    let _ = ping.send(());
                }
                _ = next_tick(&mut self.watchdog) => systemd::notify("WATCHDOG=1"),
            }
        }
    }

    /// Opens the stream of every source whose interest changed (or that is
    /// new) and closes those no resource reads any more. Returns the sources
    /// opened: each one's first batch replaces its data ([`Feed::resync`]).
    fn open_feeds(&mut self) -> Vec<usize> {
        let engine = self.engine();
        let count = engine.source_count();
        let used = engine.sources_of(&engine.all());
        let wanted: Vec<Option<Interest>> = (0..count)
            .map(|s| used.contains(&s).then(|| engine.source_interest(s)))
            .collect();
        self.feeds.resize_with(count, Feed::default);
        let mut opened = Vec::new();
        for (s, interest) in wanted.into_iter().enumerate() {
            if self.feeds[s].interest == interest {
                continue;
            }
            let stream = interest.as_ref().map(|i| self.open_stream(s, i.clone()));
            if let (Some(ops), Some(_)) = (&self.ops, &stream) {
                ops.status.expect(self.engine().source_label(s));
            }
            let feed = &mut self.feeds[s];
            feed.resync = stream.is_some();
            feed.stream = stream;
            feed.interest = interest;
            if feed.stream.is_some() {
                opened.push(s);
            }
        }
        opened
    }

    /// Source `s`'s watch for `interest`, or a poll in the same shape when
    /// the backend cannot watch or `--watch` is off.
    fn open_stream(&self, s: usize, interest: Interest) -> UpdateStream {
        let backend = self.engine().source_backend(s);
        if self.watch {
            if let Some(stream) = backend.watch(&interest) {
                return stream;
            }
            tracing::warn!(
                backend = self.engine().source_label(s),
                interval = self.interval.as_secs(),
                "backend cannot watch; polling instead"
            );
        }
        sidekick_backend::poll(Arc::clone(backend), interest, self.interval, poll_backoff())
    }

    /// Waits for the first good batch of every stream and takes each as its
    /// source's data, logging errors on the way. False when told to stop
    /// first.
    async fn first_batches(&mut self) -> anyhow::Result<bool> {
        while self.feeds.iter().any(|f| f.stream.is_some() && !f.answered) {
            let (s, item) = tokio::select! {
                next = next_update(&mut self.feeds, &mut self.next_feed) => next,
                _ = self.shutdown.recv() => return Ok(false),
                Some(ping) = next_ping(&mut self.ops) => {
                    let _ = ping.send(());
                    continue;
                }
                _ = next_tick(&mut self.watchdog) => {
                    systemd::notify("WATCHDOG=1");
                    continue;
                }
            };
            match item {
                Some(Ok(batch)) => {
                    self.answered(s, batch.len());
                    self.feeds[s].resync = false;
                    self.engine_mut().set_first(s, batch);
                    self.data_changed(s);
                }
                Some(Err(e)) => {
                    if !self.feeds[s].down {
                        tracing::error!(
                            backend = self.engine().source_label(s),
                            "initial load failed, retrying: {e}"
                        );
                        self.engine().reporter().console_error(&e.to_string());
                    }
                    self.went_down(s);
                }
                None => anyhow::bail!(
                    "{}: the backend stopped before its first answer (see above)",
                    self.engine().source_label(s)
                ),
            }
        }
        Ok(true)
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
            (s, item) = next_update(&mut self.feeds, &mut self.next_feed) => Event::Backend(s, item),
            _ = sleep_until_due(due) => Event::Due,
            event = next_dev_event(&mut self.dev) => Event::Dev(event),
            Some(ping) = next_ping(&mut self.ops) => Event::Ping(ping),
            _ = next_tick(&mut self.watchdog) => Event::Watchdog,
        }
    }

    /// Handles one event: works out what to render now, renders it, then acts
    /// on the child.
    async fn handle(&mut self, event: Event) -> Flow {
        let now = tokio::time::Instant::now();
        let which = match event {
            Event::Shutdown => return Flow::Exit(0),
            Event::ChildGone(code) => return Flow::Exit(code),
            Event::Ping(ping) => {
                let _ = ping.send(());
                return Flow::Continue;
            }
            Event::Watchdog => {
                systemd::notify("WATCHDOG=1");
                return Flow::Continue;
            }
            Event::Backend(s, Some(Ok(batch))) => {
                self.answered(s, batch.len());
                if std::mem::take(&mut self.feeds[s].resync) {
                    self.engine_mut().set_first(s, batch);
                    self.data_changed(s);
                    self.engine().readers_of(s)
                } else {
                    self.schedule(s, batch, now)
                }
            }
            Event::Backend(s, Some(Err(e))) => {
                // The driver yields an error only when the backend's state
                // changes, so each one is worth a line.
                let backend = self.engine().source_label(s);
                self.engine()
                    .reporter()
                    .backend_error(backend, &e.to_string());
                self.went_down(s);
                return Flow::Continue;
            }
            Event::Backend(s, None) => {
                tracing::error!(
                    backend = self.engine().source_label(s),
                    "watch ended; falling back to polling"
                );
                let backend = Arc::clone(self.engine().source_backend(s));
                let interest = self.engine().source_interest(s);
                self.feeds[s].stream = Some(sidekick_backend::poll(
                    backend,
                    interest,
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
                let which = self.engine_mut().on_dev_event(event);
                // New keys to read: a resource reading such a source renders
                // once its new stream's first snapshot is in.
                let opened = self.open_feeds();
                let engine = self.engine();
                which
                    .into_iter()
                    .filter(|&i| !engine.sources_of(&[i]).iter().any(|s| opened.contains(s)))
                    .collect()
            }
        };
        if !which.is_empty() {
            match self.pass(Which::These(which)).await {
                Ok(report) => self.schedule_retries(&report.retry),
                Err(e) => {
                    eprintln!("sidekick: error: {e:#}");
                    return Flow::Exit(1);
                }
            }
            if let Some(code) = self.child_exit.take() {
                return Flow::Exit(code);
            }
            if self.stop {
                return Flow::Exit(0);
            }
        }
        self.act_on_child().await
    }

    /// Applies a batch and schedules the resources it touches; returns those
    /// due now (no `wait`).
    fn schedule(&mut self, s: usize, batch: Vec<Update>, now: tokio::time::Instant) -> Vec<usize> {
        let changes = self.engine_mut().apply(s, batch);
        if changes.is_empty() {
            return Vec::new();
        }
        self.data_changed(s);
        let which = self.engine().affected(&changes);
        tracing::debug!(
            keys = changes.key_count(),
            resources = which.len(),
            "change"
        );
        for i in which {
            let (wait, not_before) = self.engine().pacing(i);
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

    /// A good batch of `updates` came from source `s`.
    fn answered(&mut self, s: usize, updates: usize) {
        let feed = &mut self.feeds[s];
        let was_down = std::mem::take(&mut feed.down);
        feed.answered = true;
        let backend = self.engine().source_label(s);
        if was_down {
            tracing::info!(backend, "backend is back");
            metrics::backend_reconnected(backend);
        }
        metrics::backend_up(backend, true);
        metrics::watch_events(backend, updates);
        if let Some(ops) = &self.ops {
            ops.status.backend_answered(backend);
        }
    }

    /// Source `s` failed.
    fn went_down(&mut self, s: usize) {
        self.feeds[s].down = true;
        let backend = self.engine().source_label(s);
        metrics::backend_up(backend, false);
        if let Some(ops) = &self.ops {
            ops.status.backend_down(backend);
        }
    }

    /// Source `s`'s data changed: for the keys gauge.
    fn data_changed(&self, s: usize) {
        metrics::keys(self.engine().source_label(s), self.engine().key_count(s));
    }

    /// Signals or restarts the supervised child as the last pass asked.
    async fn act_on_child(&mut self) -> Flow {
        let actions = self.engine_mut().take_child_actions();
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
                    metrics::child_restarted();
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

async fn next_ping(ops: &mut Option<Ops>) -> Option<Ping> {
    match ops {
        Some(o) => o.pings.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
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

/// The next item of any source's stream, with the source's index; pending
/// while no stream is open. Polling starts at `*start`, which moves on, so
/// every stream gets its turn.
async fn next_update(
    feeds: &mut [Feed],
    start: &mut usize,
) -> (usize, Option<Result<Vec<Update>, BackendError>>) {
    std::future::poll_fn(|cx| {
        let n = feeds.len();
        for k in 0..n {
            let s = (*start + k) % n;
            if let Some(stream) = &mut feeds[s].stream {
                if let std::task::Poll::Ready(item) = stream.poll_next_unpin(cx) {
                    *start = (s + 1) % n;
                    return std::task::Poll::Ready((s, item));
                }
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn next_dev_event(dev: &mut Option<DevWatcher>) -> Option<DevEvent> {
    match dev {
        Some(d) => d.next().await,
        None => std::future::pending().await,
    }
}
