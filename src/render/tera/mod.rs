//! The Tera engine: [Tera 2](https://keats.github.io/tera/) templates with
//! confd's functions (`getv`, `gets`, `ls`, `lookupSRV`, `service`, ...) and
//! filters (`base`, `json`, `toUpper`, ...), so a confd template ports
//! one-to-one apart from the syntax. See `docs/templates.md`.
//!
//! A [`TeraRenderer`] parses only the resource's `src` and the templates that
//! one includes or extends ([`loader`]).

mod args;
mod filters;
mod functions;
mod loader;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tera::{Context, ErrorKind, Tera};

use super::confd::{self, Scope, Slot};
use super::{Limits, RenderError, Renderer, Stop, TemplateEngine, View};

/// Renders one resource's Tera template.
pub struct TeraRenderer {
    tera: Tera,
    /// Tera's name of the resource's `src` template (its absolute path).
    name: String,
    /// Absolute path of `src`, for errors that do not point into a template.
    path: PathBuf,
    /// Every template file this renderer parsed, absolute, sorted.
    files: Vec<PathBuf>,
    /// Whether a template calls `service()` or `services()`.
    uses_catalog: bool,
    /// The named sources the templates read (`backend="NAME"`), sorted.
    backends: Vec<String>,
    /// Where template functions find the current [`View`].
    slot: Slot,
    /// Serializes renders, since they share `slot`.
    turn: Mutex<()>,
}

impl std::fmt::Debug for TeraRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeraRenderer")
            .field("path", &self.path)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TeraRenderer {
    /// Parses `src` (a path relative to `templates_dir`) and every template it
    /// includes or extends, resolved inside `templates_dir` only: an absolute name
    /// or one whose `../` leaves the directory is an error. Other files in the
    /// directory are not read.
    pub fn new(templates_dir: &Path, src: &str) -> Result<TeraRenderer, RenderError> {
        let loaded = loader::load(templates_dir, src)?;
        let slot = Slot::default();

        let mut tera = Tera::new();
        // Config files, not HTML: never escape, whatever the template's extension.
        tera.autoescape_on(Vec::<&'static str>::new());
        // Templates are named by their absolute path, so that Tera's reports point
        // at the real file; includes are written relative to the templates
        // directory and reach those names through this fallback prefix.
        tera.set_fallback_prefixes([loaded.prefix.clone()])
            .map_err(|e| from_tera(e, &loaded.src_path))?;
        // Tera checks at load time that every filter and function a template
        // calls exists, so ours must be registered first.
        filters::register(&mut tera);
        functions::register(&mut tera, &slot);
        tera.add_raw_templates(loaded.templates.iter().map(|(n, c)| (n, c)))
            .map_err(|e| go_syntax_hint(from_tera(e, &loaded.src_path), &loaded.templates))?;

        Ok(TeraRenderer {
            tera,
            name: loaded.src_name,
            path: loaded.src_path,
            files: loaded.files,
            uses_catalog: loaded.uses_catalog,
            backends: loaded.backends,
            slot,
            turn: Mutex::new(()),
        })
    }
}

impl Renderer for TeraRenderer {
    fn render(&self, view: Arc<View>) -> Result<String, RenderError> {
        let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = view.limits;
        let _scope = confd::enter(&self.slot, Scope::new(view));
        let mut out = Bounded::new(limits);
        let rendered = self.tera.render_to(&self.name, &Context::new(), &mut out);
        match (rendered, out.stopped) {
            (Ok(()), _) => {}
            (Err(_), Some(stop)) => return Err(limits.exceeded(&self.path, stop)),
            (Err(e), None) => return Err(from_tera(e, &self.path)),
        }
        // Tera writes only `str`s; a failure here would be Tera's bug.
        String::from_utf8(out.buf).map_err(|e| RenderError::Other {
            path: self.path.clone(),
            message: format!("the render is not UTF-8: {e}"),
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
        TemplateEngine::Tera
    }
}

/// The render's output, refusing writes past the [`Limits`] (which makes
/// Tera stop the render).
struct Bounded {
    buf: Vec<u8>,
    max: u64,
    deadline: Option<std::time::Instant>,
    writes: u32,
    stopped: Option<Stop>,
}

impl Bounded {
    fn new(limits: Limits) -> Bounded {
        Bounded {
            buf: Vec::new(),
            max: limits.max_bytes.unwrap_or(u64::MAX),
            deadline: limits.timeout.map(|t| std::time::Instant::now() + t),
            writes: 0,
            stopped: None,
        }
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let reached = (self.buf.len() + data.len()) as u64;
        if reached > self.max {
            self.stopped = Some(Stop::Size { reached });
        }
        // The clock every 1024 writes: a render is many small writes.
        self.writes += 1;
        if self.writes >= 1024 {
            self.writes = 0;
            if self
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
            {
                self.stopped = Some(Stop::Time);
            }
        }
        if self.stopped.is_some() {
            return Err(std::io::Error::other("render limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `name` as a path inside the templates directory: relative, not leaving it.
pub(crate) fn relative_name(name: &str) -> Result<PathBuf, String> {
    loader::relative(name)
}

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
        ErrorKind::Msg(_) if text.starts_with("error: ") => RenderError::Template { report: text },
        _ => RenderError::Other {
            path: path.to_path_buf(),
            message: text,
        },
    }
}

/// A template Tera rejects that reads like Go's text/template (confd's
/// `{{ getv "/x" }}`, `{{ range ... }}`, `{{ end }}`, `{{ .Key }}`) gets a
/// hint naming the Go engine.
fn go_syntax_hint(err: RenderError, templates: &[(String, String)]) -> RenderError {
    match err {
        RenderError::Template { report } if templates.iter().any(|(_, s)| looks_like_go(s)) => {
            RenderError::Template {
                report: format!(
                    "{report}\n\nhint: this looks like a Go text/template (confd) template; \
                     render it with `--template-engine go` (or `engine = \"go\"` in its resource), \
                     or port it with `sidekick convert`"
                ),
            }
        }
        other => other,
    }
}

/// Whether `source` uses Go template syntax Tera has not: `{{ end }}`,
/// `{{ range`, `{{ if` / `{{ with` / `{{ define`, a `{{ .Field`, a `{{ $var`,
/// or a confd function called with a space (`{{ getv "`).
pub(crate) fn looks_like_go(source: &str) -> bool {
    let mut rest = source;
    while let Some(i) = rest.find("{{") {
        let tag = rest[i + 2..].trim_start_matches('-').trim_start();
        let word: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.' || *c == '$')
            .collect();
        let after = tag[word.len()..].chars().next();
        if matches!(
            word.as_str(),
            "end" | "range" | "if" | "with" | "define" | "template" | "else" | "block"
        ) || word.starts_with('.') && word.len() > 1
            || word.starts_with('$')
            || (!word.is_empty()
                && after == Some(' ')
                && tag[word.len()..].trim_start().starts_with('"'))
        {
            return true;
        }
        rest = &rest[i + 2..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testutil::{dir_with, render_one, view};

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
        let r = TeraRenderer::new(dir.path(), "app.tmpl").unwrap();
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
        let r = TeraRenderer::new(dir.path(), "a.tmpl").unwrap();
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
        let err = TeraRenderer::new(&outer.path().join("t"), "a.tmpl").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RenderError::Name { .. }), "{msg}");
        assert!(msg.contains("a.tmpl:2:"), "{msg}");
        assert!(msg.contains("outside the templates directory"), "{msg}");

        for bad in ["../t/a.tmpl", "/etc/passwd", ""] {
            let err = TeraRenderer::new(&outer.path().join("t"), bad).unwrap_err();
            assert!(matches!(err, RenderError::Name { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn absolute_include_is_refused() {
        let dir = dir_with(&[("a.tmpl", "{% include \"/etc/hostname\" %}")]);
        let msg = TeraRenderer::new(dir.path(), "a.tmpl")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("absolute"), "{msg}");
    }

    #[test]
    fn missing_include_names_the_including_line() {
        let dir = dir_with(&[("a.tmpl", "x\n{% include 'nope.tmpl' %}")]);
        let msg = TeraRenderer::new(dir.path(), "a.tmpl")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("a.tmpl:2:12"), "{msg}");
        assert!(msg.contains("nope.tmpl"), "{msg}");
    }

    #[test]
    fn missing_src_is_a_read_error() {
        let dir = dir_with(&[]);
        let err = TeraRenderer::new(dir.path(), "none.tmpl").unwrap_err();
        assert!(matches!(err, RenderError::Read { .. }));
        assert!(err.to_string().contains("none.tmpl"));
    }

    #[test]
    fn broken_unrelated_template_does_not_matter() {
        let dir = dir_with(&[
            ("good.tmpl", "ok {{ getv(key=\"/a\") }}"),
            ("broken.tmpl", "{% if %}{{ nosuchfn() }}"),
        ]);
        let r = TeraRenderer::new(dir.path(), "good.tmpl").unwrap();
        assert_eq!(r.render(view(&[("/a", "1")], "/", &["/"])).unwrap(), "ok 1");
        assert!(TeraRenderer::new(dir.path(), "broken.tmpl").is_err());
    }

    #[test]
    fn syntax_error_points_at_file_line_col() {
        let dir = dir_with(&[("bad.tmpl", "a\nb {{ 1 + }}\n")]);
        let err = TeraRenderer::new(dir.path(), "bad.tmpl").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RenderError::Template { .. }), "{msg}");
        let path = std::path::absolute(dir.path()).unwrap().join("bad.tmpl");
        assert!(msg.contains(&format!("{}:2:", path.display())), "{msg}");
    }

    #[test]
    fn unknown_function_is_reported_at_load() {
        let dir = dir_with(&[("a.tmpl", "{{ nosuch(key=1) }}")]);
        let msg = TeraRenderer::new(dir.path(), "a.tmpl")
            .unwrap_err()
            .to_string();
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
        let r = TeraRenderer::new(dir.path(), "b.tmpl").unwrap();
        let msg = r.render(view(&[], "/", &["/"])).unwrap_err().to_string();
        assert!(msg.contains("Variable `loop` is not defined"), "{msg}");
    }

    #[test]
    fn include_cycle_is_an_error() {
        let dir = dir_with(&[
            ("a.tmpl", "{% include \"b.tmpl\" %}"),
            ("b.tmpl", "{% include \"a.tmpl\" %}"),
        ]);
        let msg = TeraRenderer::new(dir.path(), "a.tmpl")
            .unwrap_err()
            .to_string();
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
        let r = TeraRenderer::new(dir.path(), "a.tmpl").unwrap();
        assert_eq!(r.render(view(&[("/a", "1")], "/", &["/"])).unwrap(), "1");
        assert_eq!(r.render(view(&[("/a", "2")], "/", &["/"])).unwrap(), "2");
    }

    #[test]
    fn renderer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TeraRenderer>();
        check::<RenderError>();
    }

    fn render_err(files: &[(&str, &str)]) -> (String, PathBuf) {
        let dir = dir_with(files);
        let r = TeraRenderer::new(dir.path(), "rt.tmpl").unwrap();
        let err = r.render(view(&[], "/", &["/"])).unwrap_err();
        assert!(matches!(err, RenderError::Template { .. }), "{err}");
        let path = std::path::absolute(dir.path()).unwrap().join("rt.tmpl");
        (err.to_string(), path)
    }
}
