//! Ctrl-C and SIGTERM, as one future the run loop selects on.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Listens for SIGINT and SIGTERM from creation on, so a signal that arrives
/// while a render is in flight is kept and handled once the render finished.
pub(crate) struct Shutdown {
    int: Signal,
    term: Signal,
}

impl Shutdown {
    /// Installs the handlers (replacing the default "die at once").
    pub fn new() -> std::io::Result<Shutdown> {
        Ok(Shutdown {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => tracing::info!("SIGINT received, stopping"),
            _ = self.term.recv() => tracing::info!("SIGTERM received, stopping"),
        }
    }
}
