//! The error type, printed in Go's formats:
//! `template: NAME:LINE: message` for parse errors and
//! `template: NAME:LINE:COL: executing "TMPL" at <NODE>: message` for
//! execution errors.

/// A parse or execution error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The text does not parse.
    #[error("template: {name}:{line}: {message}")]
    Parse {
        /// The name the text was parsed under.
        name: String,
        /// 1-based line of the token where parsing stopped.
        line: usize,
        /// 0-based byte column of that token (not printed, as in Go).
        column: usize,
        /// What is wrong, in Go's words.
        message: String,
    },
    /// Executing a template failed.
    #[error("template: {name}:{line}:{column}: executing {template:?} at <{context}>: {message}")]
    Exec {
        /// The name the failing template's text was parsed under.
        name: String,
        /// 1-based line of the failing node.
        line: usize,
        /// 0-based byte column of the failing node, as Go prints it.
        column: usize,
        /// The template being executed (a `define`d name, or the main one).
        template: String,
        /// The failing node as written (`.Foo`, `index . 1`).
        context: String,
        /// What went wrong (`error calling index: index out of range: 5`).
        message: String,
    },
    /// No such template, or an empty one.
    #[error("template: {0}")]
    Lookup(String),
    /// The render went past a [`Limits`](crate::Limits) bound and was stopped.
    #[error("template: {message}")]
    Limit {
        /// The output's length when it stopped at the size bound; `None` when
        /// it stopped at the deadline.
        reached: Option<usize>,
        /// Which bound.
        message: String,
    },
}

impl Error {
    /// The parse name of the text the error is in (for [`Error::Lookup`],
    /// nothing).
    pub fn name(&self) -> Option<&str> {
        match self {
            Error::Parse { name, .. } | Error::Exec { name, .. } => Some(name),
            Error::Lookup(_) | Error::Limit { .. } => None,
        }
    }

    /// The 1-based line, if the error has a position.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Parse { line, .. } | Error::Exec { line, .. } => Some(*line),
            Error::Lookup(_) | Error::Limit { .. } => None,
        }
    }

    /// The 0-based byte column, if the error has a position.
    pub fn column(&self) -> Option<usize> {
        match self {
            Error::Parse { column, .. } | Error::Exec { column, .. } => Some(*column),
            Error::Lookup(_) | Error::Limit { .. } => None,
        }
    }

    /// The message without the location prefix.
    pub fn message(&self) -> &str {
        match self {
            Error::Parse { message, .. }
            | Error::Exec { message, .. }
            | Error::Lookup(message)
            | Error::Limit { message, .. } => message,
        }
    }
}
