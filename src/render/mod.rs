//! Template rendering: turns a resource's template and the keys it may see into
//! the text of its config file.
//!
//! One [`Renderer`] trait, two engines behind it:
//!
//! - [`tera`]: [Tera 2](https://keats.github.io/tera/) templates extended with
//!   confd's functions and filters (`getv(key="/a")`, `x | base`), the default;
//! - [`go`]: Go's `text/template` language (the `gotemplate` crate) with confd's
//!   function map, so confd's own templates run unchanged
//!   (`--template-engine go`, or `engine = "go"` in a resource).
//!
//! What confd's functions mean (keys relative to the prefix, what a template
//! may see, sorting, Go's string and path rules) is written once, in
//! [`confd`]; each engine's function map only converts arguments and results.
//!
//! A renderer belongs to one resource and parses only the templates that
//! resource reads, so a broken, unrelated template never stops it. Functions
//! read the keys through a shared slot that `render` fills with a [`View`] for
//! the duration of one render. Autoescaping is off: the output is a config
//! file, not HTML.

pub(crate) mod confd;
pub(crate) mod go;
pub(crate) mod tera;
#[cfg(test)]
mod testutil;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sidekick_backend::{Catalog, KeyTree};

/// What one render of one resource may read: the keys, the resource's prefix and
/// the key prefixes it declared, and the service catalog.
///
/// The core builds one per render from the tree it holds; it is cheap because the
/// tree and the catalog are shared.
#[derive(Debug, Clone)]
pub struct View {
    /// The whole tree the core holds, with absolute keys.
    pub keys: Arc<KeyTree>,
    /// Normalized prefix of this resource (global `--prefix` joined with the
    /// resource's `prefix`), `/` if none. Key arguments in templates are relative
    /// to it, and keys in results have it stripped, as in confd.
    pub prefix: String,
    /// Normalized absolute prefixes the resource declared in `keys` (already
    /// joined with `prefix`). The template sees only keys under these, so that a
    /// resource re-renders for, and depends on, exactly the keys it declared.
    pub visible: Vec<String>,
    /// The service catalog, `None` when the backend has none.
    pub catalog: Option<Arc<Catalog>>,
    /// The backend's name, for errors such as "backend env has no service catalog".
    pub backend: &'static str,
    /// The named sources this resource reads (`getv(key=..., backend="NAME")`),
    /// each as a view of its own keys and prefix.
    pub named: Vec<(String, Arc<View>)>,
    /// Bounds on this render (the resource's `max_output` and `render_timeout`).
    pub limits: Limits,
}

/// What one render may cost before it is stopped: a runaway template (a loop
/// over a huge range) ends with [`RenderError::Limit`], its partial output
/// dropped, instead of taking the memory and time it asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Largest output in bytes; `None` is no bound.
    pub max_bytes: Option<u64>,
    /// Longest render; `None` is no bound.
    pub timeout: Option<std::time::Duration>,
}

/// Which bound stopped a render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The output had reached `reached` bytes, over `max_bytes`.
    Size { reached: u64 },
    /// The render ran past `timeout`.
    Time,
}

impl Limits {
    /// The error for a render stopped at these bounds.
    pub(crate) fn exceeded(&self, path: &Path, stop: Stop) -> RenderError {
        let message = match stop {
            Stop::Size { reached } => format!(
                "the render is more than max_output ({} bytes): stopped at {reached} bytes",
                self.max_bytes.unwrap_or(u64::MAX)
            ),
            Stop::Time => format!(
                "the render ran longer than render_timeout ({}): stopped",
                crate::debounce::format_duration(self.timeout.unwrap_or_default())
            ),
        };
        RenderError::Limit {
            path: path.to_path_buf(),
            message,
        }
    }
}

/// The template languages sidekick renders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateEngine {
    /// Tera 2 with confd's functions (`{{ getv(key="/a") }}`).
    #[default]
    Tera,
    /// Go's `text/template` with confd's function map (`{{ getv "/a" }}`).
    Go,
}

impl TemplateEngine {
    /// The name as written in flags and resource files.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateEngine::Tera => "tera",
            TemplateEngine::Go => "go",
        }
    }
}

impl std::str::FromStr for TemplateEngine {
    type Err = String;
    fn from_str(s: &str) -> Result<TemplateEngine, String> {
        match s {
            "tera" => Ok(TemplateEngine::Tera),
            "go" => Ok(TemplateEngine::Go),
            other => Err(format!("{other:?} is not a template engine (go, tera)")),
        }
    }
}

/// One resource's parsed templates, in either engine. Build it with [`load`]
/// (again when a template file changes), then call [`Renderer::render`] for
/// every new set of keys.
pub trait Renderer: Send + Sync + std::fmt::Debug {
    /// Renders the template with `view`. Synchronous (DNS lookups and file
    /// checks block): call it from a blocking context. Renders through one
    /// renderer run one at a time.
    fn render(&self, view: Arc<View>) -> Result<String, RenderError>;

    /// Every template file this renderer read (absolute paths, sorted), so that
    /// dev mode knows which resources a template save affects.
    fn files(&self) -> &[PathBuf];

    /// Whether the templates call a service catalog function, found when they
    /// were loaded: only then does the backend load and watch the catalog.
    fn uses_catalog(&self) -> bool;

    /// The named sources (`[backends.NAME]`) the templates read, found when
    /// they were loaded (`backend="NAME"` in Tera, `backend "NAME"` in Go):
    /// only their changes re-render the resource.
    fn backends(&self) -> &[String];

    /// The engine this renderer belongs to.
    fn engine(&self) -> TemplateEngine;
}

/// Parses `src` (a path relative to `templates_dir`, which it may not leave)
/// with `engine`, and what it includes (Tera) or nothing more (Go, as confd).
pub fn load(
    engine: TemplateEngine,
    templates_dir: &Path,
    src: &str,
) -> Result<Box<dyn Renderer>, RenderError> {
    Ok(match engine {
        TemplateEngine::Tera => Box::new(tera::TeraRenderer::new(templates_dir, src)?),
        TemplateEngine::Go => Box::new(go::GoRenderer::new(templates_dir, src)?),
    })
}

/// Why a template could not be loaded or rendered. The message always names the
/// template file; errors inside a template point at `file:line:col`.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template file could not be read.
    #[error("{}: cannot read template: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A template name (the resource's `src`, or an `include`/`extends` target)
    /// is absolute, leaves the templates directory, or names no file.
    #[error("{at}: {message}")]
    Name {
        /// `path` of the template, or `path:line:col` of the include.
        at: String,
        /// What is wrong with the name.
        message: String,
    },
    /// The engine rejected a template (syntax, unknown function or filter) or
    /// failed while rendering it. For Tera, `report` is Tera's report: `error:
    /// <message>`, then ` --> <file>:<line>:<col>`, the source line and an
    /// underline; for Go, `<file>:<line>:<col>: <Go's message>`.
    #[error("{report}")]
    Template {
        /// The engine's report, possibly several separated by blank lines.
        report: String,
    },
    /// The render passed the resource's `max_output` or `render_timeout`.
    #[error("{}: {message}", path.display())]
    Limit {
        /// The resource's template.
        path: PathBuf,
        /// Which limit, and what happened.
        message: String,
    },
    /// The engine failed without pointing into a template (an include cycle, a
    /// missing parent template).
    #[error("{}: {message}", path.display())]
    Other {
        /// The resource's template.
        path: PathBuf,
        /// The engine's message.
        message: String,
    },
}
