//! Where the engine and the event loop tell a person what happened: log lines
//! always, and in dev mode the same news on stdout, coloured, with errors whole
//! (Tera's reports span lines).

use std::path::Path;

/// How results reach a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reporter {
    /// Log lines only.
    Log,
    /// Log lines, and dev mode's live console on stdout.
    Dev {
        /// Colour the console lines.
        color: bool,
    },
}

impl Reporter {
    /// A resource failed (render, check, write or reload).
    /// The log gets one event per line of `message` (a command's output, a
    /// template error's report), never one line of unbounded length.
    pub fn resource_error(&self, resource: &str, message: &str) {
        let mut lines = message.lines();
        tracing::error!(resource, "{}", lines.next().unwrap_or_default());
        for line in lines {
            tracing::error!(resource, "| {line}");
        }
        self.console_error(&format!("{resource}: {message}"));
    }

    /// A conf.d file could not be loaded; logged with its path.
    pub fn resource_file_error(&self, file: &Path, message: &str) {
        tracing::error!(resource = %file.display(), "{message}");
        self.console_error(message);
    }

    /// The backend failed; the last good files stay.
    pub fn backend_error(&self, backend: &str, message: &str) {
        tracing::error!(backend, "{message}; keeping the last good files");
        if matches!(self, Reporter::Dev { .. }) {
            self.resource_error(backend, message);
        }
    }

    /// A failure that is not tied to one resource or the backend.
    pub fn error(&self, message: &str) {
        tracing::error!("{message}");
        self.console_error(message);
    }

    /// A destination was replaced.
    pub fn updated(&self, resource: &str, dest: &str) {
        tracing::info!(resource, dest, "updated");
        if let Reporter::Dev { color } = self {
            let (green, reset) = if *color {
                ("\x1b[32m", "\x1b[0m")
            } else {
                ("", "")
            };
            println!("{green}✔ {resource}: {dest} updated{reset}");
        }
    }

    /// Whether dev mode's console is on.
    pub fn is_dev(&self) -> bool {
        matches!(self, Reporter::Dev { .. })
    }

    /// Shows `message` as an error on dev mode's console only (it was logged
    /// already).
    pub fn console_error(&self, message: &str) {
        if let Reporter::Dev { color } = self {
            let (red, reset) = if *color {
                ("\x1b[31m", "\x1b[0m")
            } else {
                ("", "")
            };
            println!("{red}✘{reset} {message}");
        }
    }
}
