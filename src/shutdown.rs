//! Ctrl-C and SIGTERM, as one future the run loop selects on, and as a flag
//! that blocking work (a running `check_cmd` or `reload_cmd`, the next
//! resource of a pass) reads to stop early.

use std::sync::atomic::{AtomicI32, Ordering};

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The first SIGINT or SIGTERM received (its number), 0 while none came.
static REQUESTED: AtomicI32 = AtomicI32::new(0);

/// The signal that asked sidekick to stop, once one came. Read by work that
/// blocks the event loop, which cannot see the [`Shutdown`] future.
pub(crate) fn requested() -> Option<nix::sys::signal::Signal> {
    match REQUESTED.load(Ordering::Relaxed) {
        0 => None,
        n => nix::sys::signal::Signal::try_from(n).ok(),
    }
}

/// Listens for SIGINT and SIGTERM from creation on, so a signal that arrives
/// while a render is in flight is kept and handled once the render finished.
pub(crate) struct Shutdown {
    int: Signal,
    term: Signal,
}

impl Shutdown {
    /// Installs the handlers (replacing the default "die at once").
    pub fn new() -> std::io::Result<Shutdown> {
        let shutdown = Shutdown {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        };
        for sig in [
            nix::sys::signal::Signal::SIGINT as i32,
            nix::sys::signal::Signal::SIGTERM as i32,
        ] {
            // SAFETY: the action only stores into an atomic, which is
            // async-signal-safe; the registry chains it with tokio's handler
            // (the same registry tokio uses), so both see every signal.
            unsafe {
                signal_hook_registry::register(sig, move || {
                    let _ =
                        REQUESTED.compare_exchange(0, sig, Ordering::Relaxed, Ordering::Relaxed);
                })
            }?;
        }
        Ok(shutdown)
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => tracing::info!("SIGINT received, stopping"),
            _ = self.term.recv() => tracing::info!("SIGTERM received, stopping"),
        }
    }
}
