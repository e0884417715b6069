//! Reading every configured file into one key tree (and the catalog), merging
//! files and refusing keys that two files disagree on.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sidekick_backend::{BackendError, Catalog, Interest, KeyTree, Snapshot};

use crate::parse::{self, Format};
use crate::{Config, Source, SourceKind, NAME};

/// How long to wait before reading again when a file is missing: an editor's
/// rename-save can leave the name absent for a moment.
pub(crate) const MISSING_RETRY: Duration = Duration::from_millis(50);

/// A failed read; `missing` when the cause is a file or directory that does
/// not exist (worth one retry).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: BackendError,
    pub(crate) missing: bool,
}

impl From<BackendError> for Failure {
    fn from(error: BackendError) -> Self {
        Failure {
            error,
            missing: false,
        }
    }
}

/// Reads everything for `interest` off the async threads, retries once after
/// [`MISSING_RETRY`] when a file is missing, and keeps only the keys under the
/// interest's prefixes.
pub(crate) async fn snapshot(
    config: Arc<Config>,
    interest: Interest,
) -> Result<Snapshot, BackendError> {
    let want_catalog = interest.services;
    let (mut keys, catalog) = match read_blocking(Arc::clone(&config), want_catalog).await {
        Err(failure) if failure.missing => {
            tokio::time::sleep(MISSING_RETRY).await;
            read_blocking(config, want_catalog)
                .await
                .map_err(|f| f.error)?
        }
        other => other.map_err(|f| f.error)?,
    };
    keys.retain_under(&interest.prefixes);
    Ok(Snapshot { keys, catalog })
}

async fn read_blocking(
    config: Arc<Config>,
    want_catalog: bool,
) -> Result<(KeyTree, Option<Catalog>), Failure> {
    match tokio::task::spawn_blocking(move || read_all(&config, want_catalog)).await {
        Ok(result) => result,
        Err(join) => Err(BackendError::Unavailable {
            backend: NAME,
            endpoint: "file reader thread".to_string(),
            source: Box::new(join),
        }
        .into()),
    }
}

/// Reads and merges every data file, and the services file when `want_catalog`.
pub(crate) fn read_all(
    config: &Config,
    want_catalog: bool,
) -> Result<(KeyTree, Option<Catalog>), Failure> {
    let mut merge = Merge::default();
    for source in &config.data {
        match source.kind {
            SourceKind::File(format) => merge.file(&source.shown, &source.abs, format)?,
            SourceKind::Dir => {
                for (shown, abs, format) in list_dir(source)? {
                    merge.file(&shown, &abs, format)?;
                }
            }
        }
    }
    let catalog = match (&config.services, want_catalog) {
        (Some(src), true) => {
            let text = read_text(&src.shown, &src.abs)?;
            let services = parse::parse_services(src.format, &text, &src.shown)?;
            Some(Catalog::from_services(services))
        }
        _ => None,
    };
    Ok((merge.finish()?, catalog))
}

/// True for a directory entry name that is a data file: a known extension, not
/// hidden, not an editor backup (`foo~`). Swap files (`.foo.swp`), vim's `4913`
/// probe and the like fail the extension or hidden test.
pub(crate) fn is_data_file_name(name: &str) -> bool {
    !name.starts_with('.') && !name.ends_with('~') && Format::from_path(Path::new(name)).is_some()
}

/// The data files directly inside the directory `source`, sorted by name, as
/// (shown path, absolute path, format).
fn list_dir(source: &Source) -> Result<Vec<(PathBuf, PathBuf, Format)>, Failure> {
    let entries =
        std::fs::read_dir(&source.abs).map_err(|e| io_failure(&source.shown, e, "directory"))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_failure(&source.shown, e, "directory"))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue; // not UTF-8: cannot be one of our names
        };
        if !is_data_file_name(&name) {
            continue;
        }
        let Some(format) = Format::from_path(Path::new(&name)) else {
            continue;
        };
        let abs = entry.path();
        // Follows symlinks; an entry gone since the listing is simply skipped.
        match std::fs::metadata(&abs) {
            Ok(meta) if meta.is_file() => found.push((name, abs, format)),
            _ => continue,
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found
        .into_iter()
        .map(|(name, abs, format)| (source.shown.join(&name), abs, format))
        .collect())
}

/// Reads a whole file as text, mapping I/O errors to backend errors that name
/// the file as the user gave it.
fn read_text(shown: &Path, abs: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(abs).map_err(|e| io_failure(shown, e, "file"))
}

fn io_failure(shown: &Path, e: io::Error, what: &str) -> Failure {
    let location = shown.display().to_string();
    let (error, missing) = match e.kind() {
        io::ErrorKind::NotFound => (
            BackendError::Invalid {
                location,
                message: format!("no such {what}"),
            },
            true,
        ),
        io::ErrorKind::PermissionDenied => (
            BackendError::Denied {
                backend: NAME,
                message: format!("cannot read {location}: permission denied"),
            },
            false,
        ),
        io::ErrorKind::InvalidData => (
            BackendError::Invalid {
                location,
                message: "not UTF-8 text".to_string(),
            },
            false,
        ),
        io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory => (
            BackendError::Invalid {
                location,
                message: e.to_string(),
            },
            false,
        ),
        _ => (
            BackendError::Unavailable {
                backend: NAME,
                endpoint: location,
                source: Box::new(e),
            },
            false,
        ),
    };
    Failure { error, missing }
}

/// Keys read so far, each with the index of the file that set it.
#[derive(Default)]
struct Merge {
    files: Vec<PathBuf>,
    entries: Vec<(String, String, usize)>,
}

impl Merge {
    /// Reads, parses and adds one data file.
    fn file(&mut self, shown: &Path, abs: &Path, format: Format) -> Result<(), Failure> {
        let text = read_text(shown, abs)?;
        let pairs = parse::parse_keys(format, &text, shown)?;
        let index = self.files.len();
        self.files.push(shown.to_path_buf());
        self.entries
            .extend(pairs.into_iter().map(|(k, v)| (k, v, index)));
        Ok(())
    }

    /// The merged tree, or an error naming the file(s) of a key given two values:
    /// within one file (`a: {b: 1}` and `a/b: 2` both spell `/a/b`) or in two.
    fn finish(mut self) -> Result<KeyTree, Failure> {
        // Stable: equal keys stay in file order, and in order within a file.
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        for pair in self.entries.windows(2) {
            let [(key, old, first), (next, value, other)] = pair else {
                continue;
            };
            if key != next || old == value {
                continue;
            }
            let error = if first == other {
                BackendError::Invalid {
                    location: self.files[*first].display().to_string(),
                    message: format!("key {key} is both {old:?} and {value:?} in this file"),
                }
            } else {
                BackendError::Invalid {
                    location: self.files[*first].display().to_string(),
                    message: format!(
                        "key {key} is {old:?} here but {value:?} in {}",
                        self.files[*other].display()
                    ),
                }
            };
            return Err(error.into());
        }
        // Sorted, so the tree is built in one pass.
        Ok(self.entries.into_iter().map(|(k, v, _)| (k, v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileBackend;
    use sidekick_backend::Backend;
    use std::fs;

    fn interest(prefixes: &[&str], services: bool) -> Interest {
        Interest {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            services,
        }
    }

    fn keys_of(snapshot: &Snapshot) -> Vec<(String, String)> {
        snapshot
            .keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn merges_files_of_all_formats() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.json");
        let c = dir.path().join("c.toml");
        fs::write(&a, "db:\n  host: x\n").unwrap();
        fs::write(&b, r#"{"db": {"host": "x", "port": 5432}}"#).unwrap();
        fs::write(&c, "[cache]\nsize = 3\n").unwrap();
        let backend = FileBackend::new([&a, &b, &c], None).unwrap();
        let snap = backend.load(&interest(&["/"], true)).await.unwrap();
        assert_eq!(
            keys_of(&snap),
            [
                ("/cache/size".to_string(), "3".to_string()),
                ("/db/host".to_string(), "x".to_string()),
                ("/db/port".to_string(), "5432".to_string()),
            ]
        );
        assert_eq!(snap.catalog, None);
    }

    #[tokio::test]
    async fn conflict_names_both_files_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        fs::write(&a, "db:\n  host: x\n").unwrap();
        // `z`: a plain `y` is YAML 1.1's true, as confd reads it.
        fs::write(&b, "db: {host: z}\n").unwrap();
        let backend = FileBackend::new([&a, &b], None).unwrap();
        let err = backend.load(&interest(&["/"], false)).await.unwrap_err();
        let BackendError::Invalid { location, message } = &err else {
            panic!("not Invalid: {err}")
        };
        assert_eq!(location, &a.display().to_string());
        assert_eq!(
            message,
            &format!("key /db/host is \"x\" here but \"z\" in {}", b.display())
        );
    }

    #[tokio::test]
    async fn conflict_inside_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        fs::write(&a, "a: {b: 1}\na/b: 2\n").unwrap();
        let backend = FileBackend::new([&a], None).unwrap();
        let err = backend.load(&interest(&["/"], false)).await.unwrap_err();
        assert!(err.to_string().contains("/a/b"), "{err}");
    }

    #[tokio::test]
    async fn parse_error_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        fs::write(&a, "ok: 1\nbad: [unclosed\n").unwrap();
        let backend = FileBackend::new([&a], None).unwrap();
        let err = backend.load(&interest(&["/"], false)).await.unwrap_err();
        let BackendError::Invalid { location, .. } = &err else {
            panic!("not Invalid: {err}")
        };
        let prefix = format!("{}:", a.display());
        let line: usize = location
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split(':').next())
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("no line in {location}"));
        assert!(line >= 2, "{location}");
    }

    #[tokio::test]
    async fn missing_file_is_invalid_with_path() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("gone.yaml");
        let backend = FileBackend::new([&a], None).unwrap();
        let err = backend.load(&interest(&["/"], false)).await.unwrap_err();
        let BackendError::Invalid { location, message } = &err else {
            panic!("not Invalid: {err}")
        };
        assert_eq!(location, &a.display().to_string());
        assert_eq!(message, "no such file");
    }

    #[tokio::test]
    async fn directory_reads_data_files_in_order_and_ignores_others() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("b.yml"), "b: 2\n").unwrap();
        fs::write(d.join("a.json"), r#"{"a": 1}"#).unwrap();
        fs::write(d.join("c.toml"), "c = 3\n").unwrap();
        for junk in [
            "notes.txt",
            ".hidden.yaml",
            ".a.yaml.swp",
            "a.yaml~",
            "4913",
            "x.yaml.bak",
        ] {
            fs::write(d.join(junk), "{{{ not data").unwrap();
        }
        fs::create_dir(d.join("sub.yaml")).unwrap();
        let backend = FileBackend::new([d], None).unwrap();
        let snap = backend.load(&interest(&["/"], false)).await.unwrap();
        let keys: Vec<_> = snap.keys.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["/a", "/b", "/c"]);
        let (shown, _, _) = &list_dir(&backend.config.data[0]).unwrap()[0];
        assert_eq!(shown, &d.join("a.json"));
    }

    #[tokio::test]
    async fn prefixes_restrict_keys() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        fs::write(&a, "app: {x: 1}\napple: 2\nother: {y: 3}\ndb: {host: h}\n").unwrap();
        let backend = FileBackend::new([&a], None).unwrap();
        let snap = backend
            .load(&interest(&["/app", "/db/host"], false))
            .await
            .unwrap();
        let keys: Vec<_> = snap.keys.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["/app/x", "/db/host"]);
        let snap = backend.load(&interest(&[], false)).await.unwrap();
        assert!(snap.keys.is_empty());
    }

    #[tokio::test]
    async fn services_file_gives_catalog_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("services.yaml");
        fs::write(
            &s,
            "web:\n  - address: 10.0.0.2\n    port: 80\n  - address: 10.0.0.1\n    port: 80\n    healthy: false\n",
        )
        .unwrap();
        let a = dir.path().join("a.yaml");
        fs::write(&a, "k: v\n").unwrap();
        let backend = FileBackend::new([&a], Some(s.clone())).unwrap();
        assert!(backend.has_catalog());
        let snap = backend.load(&interest(&["/"], true)).await.unwrap();
        let catalog = snap.catalog.expect("catalog");
        assert_eq!(catalog.services(), ["web"]);
        let all = catalog.service("web", None, false);
        assert_eq!(all[0].address, "10.0.0.1");
        assert_eq!(all[0].id, "web:10.0.0.1:80");
        assert_eq!(all[0].name, "web");
        assert_eq!(catalog.service("web", None, true).len(), 1);

        // Not asked for: not read (so not even a broken file matters).
        fs::write(&s, "web: [{address: a, nope: 1}]\n").unwrap();
        let snap = backend.load(&interest(&["/"], false)).await.unwrap();
        assert!(snap.catalog.is_none());
        let err = backend.load(&interest(&["/"], true)).await.unwrap_err();
        let BackendError::Invalid { location, message } = &err else {
            panic!("not Invalid: {err}")
        };
        assert!(
            location.starts_with(&format!("{}:1:", s.display())),
            "{location}"
        );
        assert!(message.contains("nope"), "{message}");
    }

    #[tokio::test]
    async fn services_only_backend() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("services.json");
        fs::write(&s, r#"{"db": [{"address": "10.0.0.9", "port": 5432}]}"#).unwrap();
        let backend = FileBackend::new(Vec::<PathBuf>::new(), Some(s)).unwrap();
        let snap = backend.load(&interest(&["/"], true)).await.unwrap();
        assert!(snap.keys.is_empty());
        assert_eq!(
            snap.catalog.unwrap().service("db", None, true)[0].port,
            5432
        );
    }
}
