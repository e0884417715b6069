//! The `file` backend: keys from local YAML, JSON and TOML files, and an optional
//! service catalog from a services file, re-read as soon as an editor saves.
//!
//! Each `--file PATH` is a data file (format chosen by its extension: `.yaml`,
//! `.yml`, `.json`, `.toml`) or a directory whose data files (directly inside it,
//! sorted by name) are all read. Nested maps become `/`-separated keys, list items
//! their index, scalars their text: `db: {hosts: [a, b], port: 5432}` gives
//! `/db/hosts/0 = a`, `/db/hosts/1 = b` and `/db/port = 5432`. Several files merge;
//! a key given two different values is an error naming both files, so a typo in
//! one file cannot silently shadow another.
//!
//! [`FileBackend::watch`](sidekick_backend::Backend::watch) watches the parent
//! directories of the files (not the files themselves), so saves that write a
//! temporary file and rename it over the original are seen, and a file deleted and
//! recreated keeps working.

mod parse;
mod read;
mod watch;
mod yaml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use sidekick_backend::{Backend, BackendError, Interest, Snapshot, UpdateStream};

use parse::Format;

/// The backend's name, as used in logs and errors.
pub const NAME: &str = "file";

/// Reads keys from data files and directories and the service catalog from an
/// optional services file; see the crate documentation for the file layout.
///
/// Cheap to share: the configuration lives behind an [`Arc`], so watch streams hold
/// their own reference and outlive no borrow.
#[derive(Debug, Clone)]
pub struct FileBackend {
    config: Arc<Config>,
}

/// What to read, resolved once at construction.
#[derive(Debug)]
pub(crate) struct Config {
    /// Data files and directories, in the order given (merge order for errors).
    pub(crate) data: Vec<Source>,
    /// The services file, when one was given.
    pub(crate) services: Option<ServicesFile>,
}

/// The services file: always a single file of a known format.
#[derive(Debug, Clone)]
pub(crate) struct ServicesFile {
    /// The path as the user spelled it, for messages.
    pub(crate) shown: PathBuf,
    /// The same path made absolute, for reading and watching.
    pub(crate) abs: PathBuf,
    /// Its format, from its extension.
    pub(crate) format: Format,
}

/// One path given on the command line.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The path as the user spelled it, for messages.
    pub(crate) shown: PathBuf,
    /// The same path made absolute, for watching and matching events.
    pub(crate) abs: PathBuf,
    /// File of a known format, or directory of such files.
    pub(crate) kind: SourceKind,
}

/// Whether a [`Source`] is one file or a directory of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKind {
    /// A single data file in this format.
    File(Format),
    /// A directory; its data files are found when it is read.
    Dir,
}

impl FileBackend {
    /// Creates a backend reading `files` (each a data file or a directory of
    /// them, `--file`, repeatable) and, when given, the services file
    /// (`--services-file`).
    ///
    /// Fails with [`BackendError::Config`] when nothing at all is given, when a
    /// path is neither an existing directory nor named like a data file, or when
    /// the services file's extension names no known format. A data file that does
    /// not exist yet is accepted here and reported by [`Backend::load`], so the
    /// file can be created after sidekick starts.
    pub fn new<I, P>(files: I, services_file: Option<PathBuf>) -> Result<Self, BackendError>
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        let mut data = Vec::new();
        for path in files {
            let shown: PathBuf = path.into();
            let abs = absolute(&shown)?;
            let kind = if abs.is_dir() {
                SourceKind::Dir
            } else if let Some(format) = Format::from_path(&shown) {
                SourceKind::File(format)
            } else {
                return Err(config_error(format!(
                    "{} is not a directory and not a .yaml, .yml, .json or .toml file",
                    shown.display()
                )));
            };
            data.push(Source { shown, abs, kind });
        }
        let services = match services_file {
            None => None,
            Some(shown) => {
                let Some(format) = Format::from_path(&shown) else {
                    return Err(config_error(format!(
                        "services file {} is not a .yaml, .yml, .json or .toml file",
                        shown.display()
                    )));
                };
                let abs = absolute(&shown)?;
                Some(ServicesFile { shown, abs, format })
            }
        };
        if data.is_empty() && services.is_none() {
            return Err(config_error(
                "no --file or --services-file given".to_string(),
            ));
        }
        Ok(Self {
            config: Arc::new(Config { data, services }),
        })
    }

    /// The data paths, as given, in merge order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.config.data.iter().map(|s| s.shown.as_path())
    }

    /// The services file, as given, if any.
    pub fn services_file(&self) -> Option<&Path> {
        self.config.services.as_ref().map(|s| s.shown.as_path())
    }
}

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Reads every file now (on the blocking thread pool) and returns the keys
    /// under the interest's prefixes, plus the catalog when asked for and a
    /// services file was given. A missing file is retried once after a short
    /// pause, in case an editor is in the middle of a rename-save.
    fn load<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        read::snapshot(Arc::clone(&self.config), interest.clone()).boxed()
    }

    /// Always watches: see the crate documentation. The first item is the
    /// snapshot as of when the watch was set up, so nothing changed between
    /// [`Backend::load`] and this call is lost.
    fn watch(&self, interest: &Interest) -> Option<UpdateStream> {
        Some(watch::stream(Arc::clone(&self.config), interest.clone()))
    }

    fn has_catalog(&self) -> bool {
        self.config.services.is_some()
    }
}

fn absolute(path: &Path) -> Result<PathBuf, BackendError> {
    std::path::absolute(path)
        .map_err(|e| config_error(format!("cannot resolve {}: {e}", path.display())))
}

fn config_error(message: String) -> BackendError {
    BackendError::config(NAME, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_paths() {
        let dir = tempfile::tempdir().unwrap();
        let none: Vec<PathBuf> = Vec::new();
        assert!(matches!(
            FileBackend::new(none.clone(), None),
            Err(BackendError::Config { .. })
        ));
        let err = FileBackend::new([dir.path().join("x.txt")], None).unwrap_err();
        assert!(err.to_string().contains("x.txt"), "{err}");
        let err = FileBackend::new(none.clone(), Some(dir.path().join("s.ini"))).unwrap_err();
        assert!(matches!(err, BackendError::Config { .. }));

        // A missing data file is fine at construction; a directory is recognised.
        let b = FileBackend::new(
            [dir.path().join("later.yaml"), dir.path().to_path_buf()],
            None,
        )
        .unwrap();
        assert!(!b.has_catalog());
        assert_eq!(b.files().count(), 2);
        assert_eq!(b.config.data[1].kind, SourceKind::Dir);

        let b = FileBackend::new(none, Some(dir.path().join("s.yaml"))).unwrap();
        assert!(b.has_catalog());
        assert_eq!(b.name(), "file");
    }
}
