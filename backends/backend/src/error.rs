use std::error::Error as StdError;

/// Boxed source error, so backends can keep their client's error without this
/// crate depending on every client.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What can go wrong inside a backend. Messages name the endpoint, file or key
/// involved and never carry a secret value.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached; worth retrying.
    #[error("{backend}: cannot reach {endpoint}: {source}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// The address or path that failed.
        endpoint: String,
        /// What the client said.
        #[source]
        source: BoxError,
    },
    /// Data the backend read is malformed (a data file that does not parse, two
    /// files that disagree). `location` is a path, with a line where known.
    #[error("{location}: {message}")]
    Invalid {
        /// `path` or `path:line`.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The backend refused us (bad credentials, missing permission).
    #[error("{backend}: {message}")]
    Denied {
        /// Backend name.
        backend: &'static str,
        /// What was refused and why, without secrets.
        message: String,
    },
    /// The backend's own settings are wrong (missing flag, unknown option).
    #[error("{backend}: {message}")]
    Config {
        /// Backend name.
        backend: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The kind of a [`BackendError`], without its text: what the watch driver and
/// the core compare to log a failure once per change of state, not once per
/// retry or per change of wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`BackendError::Unavailable`].
    Unavailable,
    /// [`BackendError::Invalid`].
    Invalid,
    /// [`BackendError::Denied`].
    Denied,
    /// [`BackendError::Config`]: retrying cannot help.
    Config,
}

impl ErrorKind {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Denied => "denied",
            ErrorKind::Config => "config",
        }
    }
}

impl BackendError {
    /// A [`BackendError::Config`] of `backend`.
    pub fn config(backend: &'static str, message: impl Into<String>) -> BackendError {
        BackendError::Config {
            backend,
            message: message.into(),
        }
    }

    /// True for errors that may go away by themselves (retry with backoff).
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Unavailable { .. })
    }

    /// The kind of error, for logging once per state change.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BackendError::Unavailable { .. } => ErrorKind::Unavailable,
            BackendError::Invalid { .. } => ErrorKind::Invalid,
            BackendError::Denied { .. } => ErrorKind::Denied,
            BackendError::Config { .. } => ErrorKind::Config,
        }
    }
}
