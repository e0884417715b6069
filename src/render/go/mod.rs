//! The Go engine: Go's `text/template` language (the `gotemplate` crate) with
//! confd's function map ([`functions`]), so a confd template renders
//! unchanged.
//!
//! As in confd, a resource's `src` is parsed on its own under its base name
//! (`{{template "x"}}` reaches the `define`s in that file), and executed with
//! no data (`{{.}}` is `<no value>`). Errors name the file, line and column:
//! `/etc/sidekick/templates/app.tmpl:3:7: executing "app.tmpl" at <getv
//! "/x">: error calling getv: key not found: /x`.

pub(crate) mod convert;
mod functions;
mod time;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use gotemplate::{Template, Value};

use super::confd::{self, Scope, Slot};
use super::{RenderError, Renderer, Stop, TemplateEngine, View};

/// Renders one resource's Go template.
pub struct GoRenderer {
    template: Template,
    /// Absolute path of `src`.
    path: PathBuf,
    /// `[path]`: confd reads no other file.
    files: Vec<PathBuf>,
    /// Whether the template calls `service` or `services`.
    uses_catalog: bool,
    /// The named sources it reads (`backend "NAME" ...`), sorted.
    backends: Vec<String>,
    /// Where template functions find the current [`View`].
    slot: Slot,
    /// Serializes renders, since they share `slot`.
    turn: Mutex<()>,
}

impl std::fmt::Debug for GoRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoRenderer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl GoRenderer {
    /// Reads and parses `src` (relative to `templates_dir`, which it may not
    /// leave).
    pub fn new(templates_dir: &Path, src: &str) -> Result<GoRenderer, RenderError> {
        let dir = std::path::absolute(templates_dir).map_err(|error| RenderError::Read {
            path: templates_dir.to_path_buf(),
            error,
        })?;
        let rel = super::tera::relative_name(src).map_err(|message| RenderError::Name {
            at: dir.join(src).display().to_string(),
            message,
        })?;
        let path = dir.join(rel);
        let source = std::fs::read_to_string(&path).map_err(|error| RenderError::Read {
            path: path.clone(),
            error,
        })?;
        let name = path
            .file_name()
            .map_or_else(|| src.to_string(), |n| n.to_string_lossy().into_owned());
        let slot = Slot::default();
        let template = Template::parse_with(&name, &source, functions::funcs(&slot))
            .map_err(|e| from_go(&e, &path))?;
        Ok(GoRenderer {
            template,
            uses_catalog: calls_catalog(&source),
            backends: backend_args(&source),
            files: vec![path.clone()],
            path,
            slot,
            turn: Mutex::new(()),
        })
    }
}

impl Renderer for GoRenderer {
    fn render(&self, view: Arc<View>) -> Result<String, RenderError> {
        let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = view.limits;
        let bounds = gotemplate::Limits {
            max_bytes: limits
                .max_bytes
                .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            deadline: limits.timeout.map(|t| std::time::Instant::now() + t),
        };
        let _scope = confd::enter(&self.slot, Scope::new(view));
        // confd executes with nil data.
        self.template
            .execute_limited(&Value::NoValue, None, bounds)
            .map_err(|e| match e {
                gotemplate::Error::Limit { reached, .. } => limits.exceeded(
                    &self.path,
                    reached.map_or(Stop::Time, |n| Stop::Size { reached: n as u64 }),
                ),
                e => from_go(&e, &self.path),
            })
    }

    fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn uses_catalog(&self) -> bool {
        self.uses_catalog
    }

    fn backends(&self) -> &[String] {
        &self.backends
    }

    fn engine(&self) -> TemplateEngine {
        TemplateEngine::Go
    }
}

/// A Go error as `file:line:col: message` (`file:line: message` for a parse
/// error, which Go gives no column), so dev mode and logs point at the file.
fn from_go(err: &gotemplate::Error, path: &Path) -> RenderError {
    let report = match err {
        gotemplate::Error::Parse { line, message, .. } => {
            format!("{}:{line}: {message}", path.display())
        }
        gotemplate::Error::Exec {
            line,
            column,
            template,
            context,
            message,
            ..
        } => format!(
            "{}:{line}:{column}: executing {template:?} at <{context}>: {message}",
            path.display()
        ),
        gotemplate::Error::Lookup(message) | gotemplate::Error::Limit { message, .. } => {
            return RenderError::Other {
                path: path.to_path_buf(),
                message: message.clone(),
            }
        }
    };
    RenderError::Template { report }
}

/// The names in `backend "NAME"` calls (a string literal first argument),
/// outside comments: the named sources the template reads, sorted.
fn backend_args(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        let body = &rest[open + 2..];
        let end = body.find("}}").unwrap_or(body.len());
        let action = &body[..end];
        if !action
            .trim_start_matches('-')
            .trim_start()
            .starts_with("/*")
        {
            let mut from = 0;
            while let Some(at) = action[from..].find("backend") {
                let start = from + at;
                from = start + "backend".len();
                let before = action[..start].chars().next_back();
                let after = action[from..].chars().next();
                if before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '$'))
                    || !after.is_some_and(char::is_whitespace)
                {
                    continue;
                }
                let arg = action[from..].trim_start();
                if let Some(quote @ ('"' | '`')) = arg.chars().next() {
                    if let Some(close) = arg[1..].find(quote) {
                        names.push(arg[1..1 + close].to_string());
                    }
                }
            }
        }
        rest = &body[end..];
    }
    names.sort();
    names.dedup();
    names
}

/// Whether an action calls `service` or `services` (outside strings and
/// comments).
fn calls_catalog(source: &str) -> bool {
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        let body = &rest[open + 2..];
        let end = body.find("}}").unwrap_or(body.len());
        let action = &body[..end];
        if !action
            .trim_start_matches('-')
            .trim_start()
            .starts_with("/*")
            && action_calls(action, &["service", "services"])
        {
            return true;
        }
        rest = &body[end..];
    }
    false
}

/// Whether `action` names one of `names` as a function (a word not after `.`
/// or `$`, outside string literals).
fn action_calls(action: &str, names: &[&str]) -> bool {
    let b = action.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'`' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let before = start.checked_sub(1).map(|j| b[j]);
                if !matches!(before, Some(b'.' | b'$')) && names.contains(&&action[start..i]) {
                    return true;
                }
            }
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests;
