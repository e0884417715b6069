//! `sidekick exec`: run the application as our child, like an init. Forward
//! signals to it, reap every zombie (as PID 1 or as a child subreaper), restart
//! or signal it on a config change, and leave with its exit code.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use crate::reap;

/// Exit code when the command cannot be started, as shells use.
pub(crate) const EXIT_CANNOT_START: i32 = 127;

/// Signals passed on to the child.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// What the child gets when sidekick dies without stopping it (SIGKILL, a
/// crash): PR_SET_PDEATHSIG. SIGTERM, so the app can shut down cleanly.
const PARENT_DEATH_SIGNAL: Signal = Signal::SIGTERM;

/// What the supervisor saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The child ended with this exit code (128 + signal if killed).
    Exited(i32),
    /// A signal that stops sidekick (TERM, INT) was forwarded; the child was
    /// then stopped, with this exit code.
    Stopped(i32),
}

/// Why the child could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SuperviseError {
    #[error("cannot start {cmd:?}: {source}")]
    Start { cmd: String, source: std::io::Error },
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error("cannot send {signal} to the child {pid}: {source}")]
    Kill {
        signal: Signal,
        pid: i32,
        source: Errno,
    },
}

/// Owns the child process and the signal handlers.
pub(crate) struct Supervisor {
    argv: Vec<String>,
    group: bool,
    kill_timeout: Duration,
    child: Option<Pid>,
    /// Set once the child is being stopped: SIGKILL is due at this instant.
    /// Kept here so a cancelled `next()` resumes the stop instead of losing it.
    stopping: Option<tokio::time::Instant>,
    killed: bool,
    sigchld: tokio::signal::unix::Signal,
    forwarded: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Supervisor {
    /// Installs the signal handlers and, unless we are PID 1, becomes a child
    /// subreaper so orphans of the child are ours to reap.
    pub fn new(
        argv: Vec<String>,
        group: bool,
        kill_timeout: Duration,
    ) -> Result<Supervisor, SuperviseError> {
        if std::process::id() != 1 {
            if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                tracing::warn!("cannot become a child subreaper, orphans may stay zombies: {e}");
            }
        }
        let sigchld = signal(SignalKind::child()).map_err(SuperviseError::Signals)?;
        let mut forwarded = Vec::new();
        for sig in FORWARDED {
            let s = signal(SignalKind::from_raw(sig as i32)).map_err(SuperviseError::Signals)?;
            forwarded.push((sig, s));
        }
        Ok(Supervisor {
            argv,
            group,
            kill_timeout,
            child: None,
            stopping: None,
            killed: false,
            sigchld,
            forwarded,
        })
    }

    /// Starts the command. Its own process group with `--exec-group`.
    pub fn start(&mut self) -> Result<(), SuperviseError> {
        let (program, args) = match self.argv.split_first() {
            Some(x) => x,
            None => {
                return Err(SuperviseError::Start {
                    cmd: String::new(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "no command given",
                    ),
                })
            }
        };
        let mut cmd = Command::new(program);
        cmd.args(args);
        if self.group {
            cmd.process_group(0);
        }
        let parent = nix::unistd::getpid();
        // SAFETY: between fork and exec the closure makes two system calls
        // (prctl, getppid) and allocates nothing, as `pre_exec` requires.
        unsafe {
            cmd.pre_exec(move || {
                // A sidekick killed by SIGKILL (or crashing) takes the app
                // with it instead of leaving it running unsupervised.
                nix::sys::prctl::set_pdeathsig(PARENT_DEATH_SIGNAL)?;
                // We may have died before the prctl: then no signal comes.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other(
                        "sidekick exited while starting the child",
                    ));
                }
                Ok(())
            })
        };
        let child = cmd.spawn().map_err(|source| SuperviseError::Start {
            cmd: self.argv.join(" "),
            source,
        })?;
        let pid = Pid::from_raw(child.id() as i32);
        // Dropping a std Child neither waits nor kills: we reap it ourselves.
        drop(child);
        tracing::info!(pid = pid.as_raw(), cmd = %self.argv.join(" "), "child started");
        self.child = Some(pid);
        Ok(())
    }

    /// Whether the child is running (started, not yet reaped).
    pub fn has_child(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `sig` to the child (or its process group).
    pub fn signal(&self, sig: Signal) -> Result<(), SuperviseError> {
        let Some(pid) = self.child else { return Ok(()) };
        let target = if self.group {
            Pid::from_raw(-pid.as_raw())
        } else {
            pid
        };
        match kill(target, sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(SuperviseError::Kill {
                signal: sig,
                pid: pid.as_raw(),
                source,
            }),
        }
    }

    /// Waits for the next thing that matters: the child's end, or a stopping
    /// signal (after which the child is stopped too). Other signals are
    /// forwarded on the way.
    pub async fn next(&mut self) -> Event {
        if self.stopping.is_some() {
            return Event::Stopped(self.wait_or_kill().await);
        }
        loop {
            if let Some(code) = self.reap() {
                return Event::Exited(code);
            }
            let sig = {
                let sigchld = &mut self.sigchld;
                let forwarded = &mut self.forwarded;
                let any_forwarded = futures::future::select_all(
                    forwarded
                        .iter_mut()
                        .map(|(sig, s)| Box::pin(async move { s.recv().await.map(|_| *sig) })),
                );
                tokio::select! {
                    _ = sigchld.recv() => None,
                    (got, _, _) = any_forwarded => got,
                }
            };
            let Some(sig) = sig else { continue };
            tracing::info!(signal = %sig, "forwarding signal to the child");
            if let Err(e) = self.signal(sig) {
                tracing::error!("{e}");
            }
            if matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
                self.stopping = Some(tokio::time::Instant::now() + self.kill_timeout);
                return Event::Stopped(self.wait_or_kill().await);
            }
        }
    }

    /// Stops the child with `sig`, waits `--kill-timeout`, then SIGKILL.
    /// Returns its exit code.
    pub async fn stop(&mut self, sig: Signal) -> i32 {
        if let Err(e) = self.signal(sig) {
            tracing::error!("{e}");
        }
        self.stopping = Some(tokio::time::Instant::now() + self.kill_timeout);
        self.wait_or_kill().await
    }

    /// Stops the child with `sig` and starts it again.
    pub async fn restart(&mut self, sig: Signal) -> Result<(), SuperviseError> {
        let code = self.stop(sig).await;
        tracing::info!(code, "child stopped for restart");
        self.start()
    }

    /// Waits for the child to exit; SIGKILL once the stop deadline passed.
    /// Cancel-safe: the deadline and whether SIGKILL went out live in `self`.
    async fn wait_or_kill(&mut self) -> i32 {
        loop {
            if let Some(code) = self.reap() {
                self.stopping = None;
                self.killed = false;
                return code;
            }
            let deadline = self.stopping.unwrap_or_else(tokio::time::Instant::now);
            if !self.killed && tokio::time::Instant::now() >= deadline {
                tracing::warn!(timeout = ?self.kill_timeout, "child did not stop in time, sending SIGKILL");
                if let Err(e) = self.signal(Signal::SIGKILL) {
                    tracing::error!("{e}");
                }
                self.killed = true;
            }
            let wake = if self.killed {
                tokio::time::Instant::now() + Duration::from_millis(50)
            } else {
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(50))
            };
            tokio::select! {
                _ = self.sigchld.recv() => {}
                // SIGCHLD can coalesce; a short tick makes sure we look again.
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Reaps every exited child; returns the exit code if ours was among them.
    /// A running `check_cmd`'s or `reload_cmd`'s shell gets its status back
    /// (`reap::claim`): its thread is waiting for it.
    fn reap(&mut self) -> Option<i32> {
        let mut ours = None;
        let mut commands = reap::reaping();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    if Some(pid) == self.child {
                        ours = Some(code);
                    } else if !commands.claim(pid.as_raw(), code << 8) {
                        tracing::debug!(pid = pid.as_raw(), code, "reaped orphan");
                    }
                }
                Ok(WaitStatus::Signaled(pid, sig, core)) => {
                    let raw = sig as i32 | if core { 0x80 } else { 0 };
                    if Some(pid) == self.child {
                        ours = Some(128 + sig as i32);
                    } else if !commands.claim(pid.as_raw(), raw) {
                        tracing::debug!(pid = pid.as_raw(), signal = %sig, "reaped orphan");
                    }
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        if ours.is_some() {
            self.child = None;
            tracing::info!(code = ours, "child exited");
        }
        ours
    }
}
