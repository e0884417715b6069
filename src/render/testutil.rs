//! Helpers shared by the render tests.

use std::path::Path;
use std::sync::Arc;

use sidekick_backend::{Catalog, KeyTree};

use super::go::GoRenderer;
use super::tera::TeraRenderer;
use super::{Renderer, View};

/// A temporary templates directory holding `files` (`(relative path, content)`).
pub(crate) fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, content).expect("write template");
    }
    dir
}

/// A view over `keys` with `prefix` and `visible` prefixes, no catalog.
pub(crate) fn view(keys: &[(&str, &str)], prefix: &str, visible: &[&str]) -> Arc<View> {
    let mut tree = KeyTree::new();
    for (k, v) in keys {
        tree.insert(k, *v);
    }
    Arc::new(View {
        keys: Arc::new(tree),
        prefix: prefix.to_string(),
        visible: visible.iter().map(|s| s.to_string()).collect(),
        catalog: None,
        backend: "env",
        limits: Default::default(),
        named: Vec::new(),
    })
}

/// `base` with a named source `name` (`backend="NAME"`) over `keys`, all of
/// which it may read.
pub(crate) fn with_named(base: Arc<View>, name: &str, keys: &[(&str, &str)]) -> Arc<View> {
    let mut v = (*base).clone();
    v.named.push((name.to_string(), view(keys, "/", &["/"])));
    Arc::new(v)
}

/// Same as [`view`] with a catalog.
pub(crate) fn view_with_catalog(keys: &[(&str, &str)], catalog: Catalog) -> Arc<View> {
    let mut v = (*view(keys, "/", &["/"])).clone();
    v.catalog = Some(Arc::new(catalog));
    v.backend = "file";
    Arc::new(v)
}

/// Renders `src` in `dir` with every key visible and no prefix; panics on error.
pub(crate) fn render_one(dir: &Path, src: &str, keys: &[(&str, &str)]) -> String {
    let r = TeraRenderer::new(dir, src).unwrap_or_else(|e| panic!("load: {e}"));
    r.render(view(keys, "/", &["/"]))
        .unwrap_or_else(|e| panic!("render: {e}"))
}

/// Renders the template text `tpl` with `view`, returning Tera's result.
pub(crate) fn try_render_view(tpl: &str, view: Arc<View>) -> Result<String, String> {
    let dir = dir_with(&[("t.tmpl", tpl)]);
    let r = TeraRenderer::new(dir.path(), "t.tmpl").map_err(|e| e.to_string())?;
    r.render(view).map_err(|e| e.to_string())
}

/// Renders the template text `tpl` over `keys` (no prefix, all visible).
pub(crate) fn try_render(tpl: &str, keys: &[(&str, &str)]) -> Result<String, String> {
    try_render_view(tpl, view(keys, "/", &["/"]))
}

/// Like [`try_render`], panicking on error.
pub(crate) fn render(tpl: &str, keys: &[(&str, &str)]) -> String {
    try_render(tpl, keys).unwrap_or_else(|e| panic!("{e}"))
}

/// Renders the Go template text `tpl` with `view`.
pub(crate) fn try_render_go_view(tpl: &str, view: Arc<View>) -> Result<String, String> {
    let dir = dir_with(&[("t.tmpl", tpl)]);
    let r = GoRenderer::new(dir.path(), "t.tmpl").map_err(|e| e.to_string())?;
    r.render(view).map_err(|e| e.to_string())
}

/// Renders the Go template text `tpl` over `keys` (no prefix, all visible).
pub(crate) fn try_render_go(tpl: &str, keys: &[(&str, &str)]) -> Result<String, String> {
    try_render_go_view(tpl, view(keys, "/", &["/"]))
}

/// Like [`try_render_go`], panicking on error.
pub(crate) fn render_go(tpl: &str, keys: &[(&str, &str)]) -> String {
    try_render_go(tpl, keys).unwrap_or_else(|e| panic!("{e}"))
}
