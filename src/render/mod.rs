//! Template rendering: turns a resource's template and the keys it may see into
//! the text of its config file.
//!
//! Templates are [Tera 2](https://keats.github.io/tera/) templates extended with
//! confd's functions (`getv`, `gets`, `ls`, `lookupSRV`, `service`, ...) and
//! filters (`base`, `json`, `toUpper`, ...), so a confd template ports one-to-one
//! apart from the syntax. See `docs/templates.md` for the user-facing reference.
//!
//! A [`Renderer`] belongs to one resource. It parses only the resource's `src`
//! and the templates that one includes or extends, so a broken, unrelated
//! template in the templates directory never stops this resource. Template
//! functions read the keys through a shared slot that [`Renderer::render`] fills
//! with a [`View`] for the duration of one render.
//!
//! Autoescaping is off: the output is a config file, not HTML.

mod args;
mod filters;
mod functions;
mod loader;
#[cfg(test)]
mod testutil;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sidekick_backend::{Catalog, KeyTree};
use tera::{Context, ErrorKind, Tera};

use functions::{Scope, Slot};

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
}

/// Renders one resource's template. Build it once with [`Renderer::new`] (and
/// again when a template file changes), then call [`Renderer::render`] for every
/// new set of keys.
pub struct Renderer {
    tera: Tera,
    /// Tera's name of the resource's `src` template (its absolute path).
    name: String,
    /// Absolute path of `src`, for errors that do not point into a template.
    path: PathBuf,
    /// Every template file this renderer parsed, absolute, sorted.
    files: Vec<PathBuf>,
    /// Whether a template calls `service()` or `services()`.
    uses_catalog: bool,
    /// Where template functions find the current [`View`].
    slot: Slot,
    /// Serializes renders, since they share `slot`.
    turn: Mutex<()>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("path", &self.path)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Renderer {
    /// Parses `src` (a path relative to `templates_dir`) and every template it
    /// includes or extends, resolved inside `templates_dir` only: an absolute name
    /// or one whose `../` leaves the directory is an error. Other files in the
    /// directory are not read.
    pub fn new(templates_dir: &Path, src: &str) -> Result<Renderer, RenderError> {
        let loaded = loader::load(templates_dir, src)?;
        let slot = Slot::default();

        let mut tera = Tera::new();
        // Config files, not HTML: never escape, whatever the template's extension.
        tera.autoescape_on(Vec::<&'static str>::new());
        // Templates are named by their absolute path, so that Tera's reports point
        // at the real file; includes are written relative to the templates
        // directory and reach those names through this fallback prefix.
        tera.set_fallback_prefixes([loaded.prefix.clone()])
            .map_err(|e| RenderError::from_tera(e, &loaded.src_path))?;
        // Tera checks at load time that every filter and function a template
        // calls exists, so ours must be registered first.
        filters::register(&mut tera);
        functions::register(&mut tera, &slot);
        tera.add_raw_templates(loaded.templates.iter().map(|(n, c)| (n, c)))
            .map_err(|e| RenderError::from_tera(e, &loaded.src_path))?;

        Ok(Renderer {
            tera,
            name: loaded.src_name,
            path: loaded.src_path,
            files: loaded.files,
            uses_catalog: loaded.uses_catalog,
            slot,
            turn: Mutex::new(()),
        })
    }

    /// Renders the template with `view`. Synchronous (DNS lookups and file checks
    /// block): call it from a blocking context. Renders through one renderer
    /// run one at a time.
    pub fn render(&self, view: Arc<View>) -> Result<String, RenderError> {
        let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let _scope = functions::enter(&self.slot, Scope::new(view));
        self.tera
            .render(&self.name, &Context::new())
            .map_err(|e| RenderError::from_tera(e, &self.path))
    }

    /// Every template file this renderer read (absolute paths, sorted), so that
    /// dev mode knows which resources a template save affects.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Whether the templates call a service catalog function, found when they
    /// were loaded: only then does the backend load and watch the catalog.
    pub fn uses_catalog(&self) -> bool {
        self.uses_catalog
    }
}

/// Why a template could not be loaded or rendered. The message always names the
/// template file; errors inside a template carry Tera's report, which points at
/// `file:line:col` and shows the source line with a `^^^` underline.
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
    /// Tera rejected a template (syntax, unknown function or filter) or failed
    /// while rendering it. `report` is Tera's report: `error: <message>`, then
    /// ` --> <file>:<line>:<col>`, the source line and an underline.
    #[error("{report}")]
    Template {
        /// Tera's report, possibly several separated by blank lines.
        report: String,
    },
    /// Tera failed without pointing into a template (an include cycle, a missing
    /// parent template).
    #[error("{}: {message}", path.display())]
    Other {
        /// The resource's template.
        path: PathBuf,
        /// Tera's message.
        message: String,
    },
}

impl RenderError {
    /// Maps a Tera error; `path` names the resource's template for errors that
    /// carry no location of their own.
    fn from_tera(err: tera::Error, path: &Path) -> RenderError {
        let text = err.to_string();
        match err.kind() {
            ErrorKind::SyntaxError(_) | ErrorKind::RenderingError(_) => {
                RenderError::Template { report: text }
            }
            // Load-time checks (unknown filter, function or template) come as a
            // plain message made of reports; they already name file:line:col.
            ErrorKind::Msg(_) if text.starts_with("error: ") => {
                RenderError::Template { report: text }
            }
            _ => RenderError::Other {
                path: path.to_path_buf(),
                message: text,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{dir_with, render_one, view};
    use super::*;

    #[test]
    fn renders_with_include_and_extends() {
        let dir = dir_with(&[
            ("base.tmpl", "head\n{% block body %}default{% endblock %}\ntail"),
            (
                "app.tmpl",
                "{% extends \"base.tmpl\" %}{% block body %}[{% include \"partials/x.tmpl\" %}]{% endblock %}",
            ),
            ("partials/x.tmpl", "{{ getv(key=\"/db/host\") }}"),
            ("unused.tmpl", "never read"),
        ]);
        let r = Renderer::new(dir.path(), "app.tmpl").unwrap();
        let out = r.render(view(&[("/db/host", "h1")], "/", &["/"])).unwrap();
        assert_eq!(out, "head\n[h1]\ntail");
        let root = std::path::absolute(dir.path()).unwrap();
        assert_eq!(
            r.files(),
            [
                root.join("app.tmpl"),
                root.join("base.tmpl"),
                root.join("partials/x.tmpl")
            ]
        );
    }

    #[test]
    fn include_written_with_dot_segments_resolves() {
        let dir = dir_with(&[
            ("a.tmpl", "{% include \"./p/../p/x.tmpl\" %}"),
            ("p/x.tmpl", "x"),
        ]);
        let r = Renderer::new(dir.path(), "a.tmpl").unwrap();
        assert_eq!(r.render(view(&[], "/", &["/"])).unwrap(), "x");
        assert_eq!(r.files().len(), 2);
    }

    #[test]
    fn include_escaping_the_directory_is_refused() {
        let outer = tempfile::tempdir().unwrap();
        std::fs::write(outer.path().join("secret"), "s3cret").unwrap();
        std::fs::create_dir(outer.path().join("t")).unwrap();
        std::fs::write(
            outer.path().join("t/a.tmpl"),
            "line1\n  {% include \"../secret\" %}",
        )
        .unwrap();
        let err = Renderer::new(&outer.path().join("t"), "a.tmpl").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RenderError::Name { .. }), "{msg}");
        assert!(msg.contains("a.tmpl:2:"), "{msg}");
        assert!(msg.contains("outside the templates directory"), "{msg}");

        for bad in ["../t/a.tmpl", "/etc/passwd", ""] {
            let err = Renderer::new(&outer.path().join("t"), bad).unwrap_err();
            assert!(matches!(err, RenderError::Name { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn absolute_include_is_refused() {
        let dir = dir_with(&[("a.tmpl", "{% include \"/etc/hostname\" %}")]);
        let msg = Renderer::new(dir.path(), "a.tmpl").unwrap_err().to_string();
        assert!(msg.contains("absolute"), "{msg}");
    }

    #[test]
    fn missing_include_names_the_including_line() {
        let dir = dir_with(&[("a.tmpl", "x\n{% include 'nope.tmpl' %}")]);
        let msg = Renderer::new(dir.path(), "a.tmpl").unwrap_err().to_string();
        assert!(msg.contains("a.tmpl:2:12"), "{msg}");
        assert!(msg.contains("nope.tmpl"), "{msg}");
    }

    #[test]
    fn missing_src_is_a_read_error() {
        let dir = dir_with(&[]);
        let err = Renderer::new(dir.path(), "none.tmpl").unwrap_err();
        assert!(matches!(err, RenderError::Read { .. }));
        assert!(err.to_string().contains("none.tmpl"));
    }

    #[test]
    fn broken_unrelated_template_does_not_matter() {
        let dir = dir_with(&[
            ("good.tmpl", "ok {{ getv(key=\"/a\") }}"),
            ("broken.tmpl", "{% if %}{{ nosuchfn() }}"),
        ]);
        let r = Renderer::new(dir.path(), "good.tmpl").unwrap();
        assert_eq!(r.render(view(&[("/a", "1")], "/", &["/"])).unwrap(), "ok 1");
        assert!(Renderer::new(dir.path(), "broken.tmpl").is_err());
    }

    #[test]
    fn syntax_error_points_at_file_line_col() {
        let dir = dir_with(&[("bad.tmpl", "a\nb {{ 1 + }}\n")]);
        let err = Renderer::new(dir.path(), "bad.tmpl").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RenderError::Template { .. }), "{msg}");
        let path = std::path::absolute(dir.path()).unwrap().join("bad.tmpl");
        assert!(msg.contains(&format!("{}:2:", path.display())), "{msg}");
    }

    #[test]
    fn unknown_function_is_reported_at_load() {
        let dir = dir_with(&[("a.tmpl", "{{ nosuch(key=1) }}")]);
        let msg = Renderer::new(dir.path(), "a.tmpl").unwrap_err().to_string();
        assert!(msg.contains("Unknown function `nosuch`"), "{msg}");
        assert!(msg.contains("a.tmpl:1:4"), "{msg}");
    }

    #[test]
    fn missing_key_error_has_file_line_col_and_source_line() {
        let (msg, path) = render_err(&[("rt.tmpl", "one\ntwo\nx: {{ getv(key=\"/missing\") }}\n")]);
        assert!(msg.starts_with("error: key not found: /missing\n"), "{msg}");
        assert!(msg.contains(&format!("--> {}:3:", path.display())), "{msg}");
        assert!(msg.contains("x: {{ getv(key=\"/missing\") }}"), "{msg}");
        assert!(msg.contains('^'), "{msg}");
    }

    #[test]
    fn error_in_include_names_the_included_file() {
        let (msg, path) = render_err(&[
            ("rt.tmpl", "{% include \"inc.tmpl\" %}"),
            ("inc.tmpl", "\n{{ getv(key=\"/nope\") }}"),
        ]);
        let inc = path.with_file_name("inc.tmpl");
        assert!(msg.contains(&format!("{}:2:", inc.display())), "{msg}");
        assert!(msg.contains("called from"), "{msg}");
    }

    #[test]
    fn include_sees_loop_variables_but_not_loop() {
        let dir = dir_with(&[
            (
                "a.tmpl",
                "{% for u in [\"x\", \"y\"] %}{% set i = loop.index %}{% include \"p.tmpl\" %}{% endfor %}",
            ),
            ("p.tmpl", "[{{ u }} {{ i }}]"),
            ("b.tmpl", "{% for u in [1] %}{% include \"q.tmpl\" %}{% endfor %}"),
            ("q.tmpl", "{{ loop.index }}"),
        ]);
        assert_eq!(render_one(dir.path(), "a.tmpl", &[]), "[x 1][y 2]");
        let r = Renderer::new(dir.path(), "b.tmpl").unwrap();
        let msg = r.render(view(&[], "/", &["/"])).unwrap_err().to_string();
        assert!(msg.contains("Variable `loop` is not defined"), "{msg}");
    }

    #[test]
    fn include_cycle_is_an_error() {
        let dir = dir_with(&[
            ("a.tmpl", "{% include \"b.tmpl\" %}"),
            ("b.tmpl", "{% include \"a.tmpl\" %}"),
        ]);
        let msg = Renderer::new(dir.path(), "a.tmpl").unwrap_err().to_string();
        assert!(msg.contains("ircular include"), "{msg}");
    }

    #[test]
    fn autoescape_is_off_even_for_html_names() {
        let dir = dir_with(&[("page.html", "{{ getv(key=\"/x\") }}")]);
        let out = render_one(dir.path(), "page.html", &[("/x", "<a href='x'>&</a>")]);
        assert_eq!(out, "<a href='x'>&</a>");
    }

    #[test]
    fn tera_builtins_remain() {
        let dir = dir_with(&[(
            "a.tmpl",
            "{{ getv(key=\"/x\") | upper }} {{ range(end=3) | join(sep=\",\") }} {{ \"a,b\" | split(pat=\",\") | length }}",
        )]);
        assert_eq!(
            render_one(dir.path(), "a.tmpl", &[("/x", "v")]),
            "V 0,1,2 2"
        );
    }

    #[test]
    fn components_defined_in_an_included_file_work() {
        let dir = dir_with(&[
            (
                "a.tmpl",
                "{% include \"lib.tmpl\" %}{{ <upstream name=\"web\" /> }}",
            ),
            (
                "lib.tmpl",
                "{% component upstream(name) %}upstream {{ name }};{% endcomponent upstream %}",
            ),
        ]);
        assert_eq!(render_one(dir.path(), "a.tmpl", &[]), "upstream web;");
    }

    #[test]
    fn renders_again_with_a_new_view() {
        let dir = dir_with(&[("a.tmpl", "{{ getv(key=\"/a\") }}")]);
        let r = Renderer::new(dir.path(), "a.tmpl").unwrap();
        assert_eq!(r.render(view(&[("/a", "1")], "/", &["/"])).unwrap(), "1");
        assert_eq!(r.render(view(&[("/a", "2")], "/", &["/"])).unwrap(), "2");
    }

    #[test]
    fn renderer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Renderer>();
        check::<RenderError>();
    }

    fn render_err(files: &[(&str, &str)]) -> (String, PathBuf) {
        let dir = dir_with(files);
        let r = Renderer::new(dir.path(), "rt.tmpl").unwrap();
        let err = r.render(view(&[], "/", &["/"])).unwrap_err();
        assert!(matches!(err, RenderError::Template { .. }), "{err}");
        let path = std::path::absolute(dir.path()).unwrap().join("rt.tmpl");
        (err.to_string(), path)
    }
}
