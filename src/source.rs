//! Sources: the backends one process reads. The global one comes from the
//! flags (`--backend`); more are declared in tables, each a backend and that
//! backend's settings under the same names as in the settings file:
//!
//! - `[backends.NAME]` in `sidekick.toml`: a named source that a template
//!   reads with `getv(key="/db/password", backend="NAME")` (Go:
//!   `{{backend "NAME" "getv" "/db/password"}}`), with its own `prefix` and
//!   `keys` (the keys of it that templates may read, default `/`);
//! - `[backend]` in a resource file (confd's fork's per-resource backend):
//!   the resource's own keys come from it instead of the global backend.
//!
//! Tables with the same settings are one source: one connection, one watch.
//! A table's settings are its own: the flags and `SIDEKICK_*` variables set
//! the global backend only (but a `vault` table that names no node or login
//! takes `VAULT_ADDR` and `VAULT_TOKEN`, as the vault CLI does).

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sidekick_backend::{normalize_key, Backend};

use crate::backend::{self, BackendOptions};
use crate::config::SettingsFile;

/// A backend declared in a table, before it is built.
#[derive(Clone)]
pub(crate) struct SourceSpec {
    /// `backend = "..."`: which backend.
    pub kind: String,
    /// That backend's settings.
    pub options: BackendOptions,
    /// `[backends.NAME]` only: the prefix keys are read relative to
    /// (normalized, `/` if none).
    pub prefix: String,
    /// `[backends.NAME]` only: the absolute key prefixes templates may read.
    pub keys: Vec<String>,
    /// The table's settings, normalized: equal for tables that share a source.
    pub identity: String,
    /// Where the table is (`FILE:LINE`), for messages.
    pub at: String,
    /// The line of its header.
    pub line: usize,
}

impl SourceSpec {
    /// Builds the backend this table declares; `interval` is `--interval`.
    pub fn build(&self, interval: u64) -> Result<Arc<dyn Backend>, String> {
        backend::build_kind(&self.kind, &self.options, interval)
            .map_err(|e| format!("{}: [backend] table: {e}", self.at))
    }
}

/// The keys of a source table besides its backend's settings.
#[derive(Default, Deserialize)]
#[serde(default)]
struct TableKeys {
    backend: Option<String>,
    prefix: Option<String>,
    keys: Option<Vec<String>>,
}

/// Why a source table was refused: the file, the line and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub(crate) struct TableError {
    pub file: std::path::PathBuf,
    pub line: usize,
    pub message: String,
}

/// Whether a table may set `prefix` and `keys` (a named source) or takes
/// them from its resource's `[template]`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableKind {
    Named,
    Resource,
}

/// Reads the table whose header is `[header]` (`backend`, `backends.NAME`)
/// out of `text` (the whole file, at `file`). `None` when there is none.
pub(crate) fn read_table(
    file: &Path,
    text: &str,
    header: &str,
    kind: TableKind,
) -> Result<Option<SourceSpec>, TableError> {
    let Some((body, line)) = table_body(text, header) else {
        return Ok(None);
    };
    let error = |line: usize, message: String| TableError {
        file: file.to_path_buf(),
        line,
        message,
    };
    let mut settings = SettingsFile::new(&body);
    let keys: TableKeys = settings.read();
    let options = BackendOptions::read(&mut settings);
    settings.finish(()).map_err(|e| {
        let at = e.span().map_or(line, |s| line_of(&body, s.start));
        error(at, format!("[{header}]: {}", e.message().trim_end()))
    })?;
    let Some(backend) = keys.backend.filter(|b| !b.trim().is_empty()) else {
        return Err(error(
            line,
            format!(
                "[{header}]: field `backend` is missing (one of {})",
                backend::NAMES.join(", ")
            ),
        ));
    };
    if kind == TableKind::Resource && (keys.prefix.is_some() || keys.keys.is_some()) {
        return Err(error(
            line,
            format!(
                "[{header}]: `prefix` and `keys` of a resource's backend are the [template]'s: \
                 write them there"
            ),
        ));
    }
    let prefix = normalize_key(keys.prefix.as_deref().unwrap_or("/"));
    let keys = keys
        .keys
        .unwrap_or_else(|| vec!["/".to_string()])
        .iter()
        .map(|k| sidekick_backend::join_prefix(&prefix, k))
        .collect();
    // The table as its settings read, whatever the order and spacing: equal
    // tables share one source.
    let identity = match toml::from_str::<toml::Table>(&body) {
        Ok(table) => table.to_string(),
        Err(_) => body.clone(),
    };
    let mut options = options;
    if backend == "vault" {
        options.vault_from_environment();
    }
    Ok(Some(SourceSpec {
        kind: backend,
        options,
        prefix,
        keys,
        identity,
        at: format!("{}:{line}", file.display()),
        line,
    }))
}

/// The names of the `[backends.NAME]` tables of `text`, in file order.
pub(crate) fn named_tables(text: &str) -> Vec<String> {
    headers(text)
        .filter_map(|(_, name)| name.strip_prefix("backends.").map(str::to_string))
        .filter(|name| !name.is_empty() && !name.contains('.'))
        .collect()
}

/// `text` with every line blanked but those of the table `[header]`, and the
/// header's line too (so the table's keys read as a file's top-level keys at
/// their own line numbers), and the header's line number.
fn table_body(text: &str, header: &str) -> Option<(String, usize)> {
    let start = headers(text).find(|(_, name)| name == header)?.0;
    let mut body = String::with_capacity(text.len());
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        if header_name(line).is_some() {
            inside = i == start;
        } else if inside {
            body.push_str(line);
        }
        body.push('\n');
    }
    Some((body, start + 1))
}

/// Every table header of `text`: its line index and its name (`backends.x`).
fn headers(text: &str) -> impl Iterator<Item = (usize, String)> + '_ {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| header_name(line).map(|name| (i, name)))
}

/// The table name of a `[a.b]` (or `[[a.b]]`) header line, quotes and spaces
/// taken out of each part.
fn header_name(line: &str) -> Option<String> {
    let line = line.trim();
    let line = line.split_once('#').map_or(line, |(l, _)| l).trim_end();
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(inner);
    let parts: Vec<String> = inner
        .split('.')
        .map(|p| p.trim().trim_matches('"').trim_matches('\'').to_string())
        .collect();
    Some(parts.join("."))
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
[template]
src = \"a.tmpl\"

[backend]
backend = \"etcdv3\"
nodes = [\"http://127.0.0.1:2379\"]

[other]
x = 1
";

    #[test]
    fn a_table_reads_at_its_own_lines_and_equal_tables_are_one_identity() {
        let spec = read_table(Path::new("r.toml"), FILE, "backend", TableKind::Resource)
            .unwrap()
            .unwrap();
        assert_eq!(spec.kind, "etcdv3");
        assert_eq!(spec.at, "r.toml:4");
        let reordered = "[backend]\nnodes = [ \"http://127.0.0.1:2379\" ]\nbackend = \"etcdv3\"\n";
        let other = read_table(
            Path::new("s.toml"),
            reordered,
            "backend",
            TableKind::Resource,
        )
        .unwrap()
        .unwrap();
        assert_eq!(spec.identity, other.identity);
        assert!(
            read_table(Path::new("r.toml"), FILE, "nothing", TableKind::Resource)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_unknown_field_is_named_at_its_line() {
        let text = "[backends.secrets]\nbackend = \"vault\"\n\nnodez = [\"x\"]\n";
        let e = read_table(
            Path::new("s.toml"),
            text,
            "backends.secrets",
            TableKind::Named,
        )
        .err()
        .unwrap();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.to_string().contains("unknown field `nodez`"), "{e}");
        let spec = read_table(
            Path::new("s.toml"),
            "[backends.s]\nbackend = \"nope\"\n",
            "backends.s",
            TableKind::Named,
        )
        .unwrap()
        .unwrap();
        let e = spec.build(600).err().unwrap();
        assert!(e.starts_with("s.toml:1: "), "{e}");
        assert!(e.contains("unknown backend \"nope\""), "{e}");
    }

    #[test]
    fn named_tables_have_prefix_and_keys() {
        let text = "prefix = \"/x\"\n[backends.secrets]\nbackend = \"file\"\nprefix = \"/secret\"\nkeys = [\"/app\"]\n[backends.\"two\"]\nbackend = \"env\"\n";
        assert_eq!(named_tables(text), ["secrets", "two"]);
        let spec = read_table(
            Path::new("s.toml"),
            text,
            "backends.secrets",
            TableKind::Named,
        )
        .unwrap()
        .unwrap();
        assert_eq!(spec.prefix, "/secret");
        assert_eq!(spec.keys, ["/secret/app"]);
        let e = read_table(
            Path::new("r.toml"),
            "[backend]\nbackend = \"env\"\nkeys = [\"/a\"]\n",
            "backend",
            TableKind::Resource,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("[template]"), "{e}");
    }
}
