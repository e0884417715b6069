//! Finds and reads the templates one resource needs: its `src` and, transitively,
//! every template named by an `{% include %}` or `{% extends %}` tag, all inside
//! the templates directory.
//!
//! Tera only resolves includes among templates it already holds, and it rejects
//! a whole batch when one template in it is broken. Loading just this closure
//! (instead of the whole directory) keeps a broken, unrelated template from
//! breaking this resource. The tags are found by a small scanner that knows
//! Tera's comments, `raw` blocks and string literals; anything it could miss is
//! still caught by Tera, which checks every include when the templates are added.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::path::{Component, Path, PathBuf};

use super::RenderError;

/// The templates of one resource, ready for Tera.
#[derive(Debug)]
pub(super) struct Loaded {
    /// The templates directory as a Tera fallback prefix: absolute, ending in `/`.
    pub prefix: String,
    /// Tera's name for `src`: `prefix` followed by `src`.
    pub src_name: String,
    /// Absolute path of `src`.
    pub src_path: PathBuf,
    /// `(Tera name, source)` of every template, `src` first. A template is named
    /// `prefix` + the name it was referred by, which is what Tera looks up.
    pub templates: Vec<(String, String)>,
    /// Absolute paths of the files read, sorted, without duplicates.
    pub files: Vec<PathBuf>,
    /// Whether any of the templates calls a service catalog function, so the
    /// backend loads and watches the catalog only when one is read.
    pub uses_catalog: bool,
    /// The named sources the templates read (`backend="NAME"`), sorted.
    pub backends: Vec<String>,
}

/// Template functions that read the service catalog.
const CATALOG_FUNCTIONS: &[&[u8]] = &[b"service", b"services"];

/// Where a template name was written: `path:line:col` of the include tag's
/// string, for errors.
struct Origin {
    at: String,
}

/// Reads `src` and every template it reaches, all from `dir`.
pub(super) fn load(dir: &Path, src: &str) -> Result<Loaded, RenderError> {
    let dir = std::path::absolute(dir).map_err(|error| RenderError::Read {
        path: dir.to_path_buf(),
        error,
    })?;
    let Some(dir_str) = dir.to_str() else {
        return Err(RenderError::Name {
            at: dir.display().to_string(),
            message: "the templates directory path is not valid UTF-8".into(),
        });
    };
    let prefix = if dir_str.ends_with('/') {
        dir_str.to_string()
    } else {
        format!("{dir_str}/")
    };

    let src_rel = relative(src).map_err(|message| RenderError::Name {
        at: format!("{prefix}{src}"),
        message,
    })?;

    let mut queue: VecDeque<(String, Option<Origin>)> = VecDeque::new();
    queue.push_back((src.to_string(), None));
    let mut seen: HashSet<String> = HashSet::new();
    let mut templates = Vec::new();
    let mut files = Vec::new();

    while let Some((name, origin)) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let tera_name = format!("{prefix}{name}");
        let rel = relative(&name).map_err(|message| RenderError::Name {
            at: origin
                .as_ref()
                .map_or_else(|| tera_name.clone(), |o| o.at.clone()),
            message,
        })?;
        let path = dir.join(&rel);
        let source = match std::fs::read_to_string(&path) {
            Ok(source) => source,
            Err(e) if e.kind() == io::ErrorKind::NotFound && origin.is_some() => {
                let at = origin.map(|o| o.at).unwrap_or_default();
                return Err(RenderError::Name {
                    at,
                    message: format!("template `{name}` not found: no file {}", path.display()),
                });
            }
            Err(error) => return Err(RenderError::Read { path, error }),
        };
        for r in scan(&source) {
            let at = format!("{tera_name}:{}:{}", r.line, r.col);
            queue.push_back((r.name, Some(Origin { at })));
        }
        templates.push((tera_name, source));
        files.push(path);
    }

    let src_path = dir.join(src_rel);
    files.sort();
    files.dedup();
    let uses_catalog = templates
        .iter()
        .any(|(_, source)| calls_any(source, CATALOG_FUNCTIONS));
    let mut backends: Vec<String> = templates
        .iter()
        .flat_map(|(_, source)| backend_args(source))
        .collect();
    backends.sort();
    backends.dedup();
    Ok(Loaded {
        src_name: format!("{prefix}{src}"),
        prefix,
        src_path,
        templates,
        files,
        uses_catalog,
        backends,
    })
}

/// The path `name` designates relative to the templates directory, with `.` and
/// `..` resolved; an error when it is empty, absolute, or climbs out.
pub(super) fn relative(name: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(format!(
                        "template `{name}` is outside the templates directory"
                    ));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "template `{name}` is an absolute path; template names are relative to the templates directory"
                ));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("`{name}` does not name a template file"));
    }
    Ok(out)
}

/// One `include` or `extends` target found in a template.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Reference {
    /// The template name, unescaped.
    pub name: String,
    /// 1-based line of the name's string literal.
    pub line: usize,
    /// 1-based column (in characters) of the string literal.
    pub col: usize,
}

/// Lists the `{% include "x" %}` and `{% extends "x" %}` targets of a template,
/// skipping comments, `{% raw %}` blocks and string literals.
pub(super) fn scan(source: &str) -> Vec<Reference> {
    let b = source.as_bytes();
    let mut refs = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        match b[i + 1] {
            b'#' => match find(b, i + 2, b"#}") {
                Some(end) => i = end + 2,
                None => break,
            },
            b'{' => i = skip_to_close(b, i + 2, b"}}"),
            b'%' => {
                let mut j = i + 2;
                if b.get(j) == Some(&b'-') {
                    j += 1;
                }
                j = skip_ws(b, j);
                let ident_end = j + b[j..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                match &b[j..ident_end] {
                    b"raw" => match find_endraw(b, ident_end) {
                        Some(end) => i = end,
                        None => break,
                    },
                    b"include" | b"extends" => {
                        let start = skip_ws(b, ident_end);
                        if let Some((name, after)) = string_literal(b, start) {
                            let (line, col) = line_col(source, start);
                            refs.push(Reference { name, line, col });
                            i = skip_to_close(b, after, b"%}");
                        } else {
                            i = skip_to_close(b, start, b"%}");
                        }
                    }
                    _ => i = skip_to_close(b, ident_end, b"%}"),
                }
            }
            _ => i += 1,
        }
    }
    refs
}

/// Whether the template calls one of the functions `names` inside a `{{ }}` or
/// `{% %}` tag: an identifier followed by `(`, outside comments, `raw` blocks
/// and string literals (so `"service("` in text or a comment does not count).
pub(super) fn calls_any(source: &str, names: &[&[u8]]) -> bool {
    let mut found = false;
    for_each_ident(source, |b, start, end| {
        found = names.contains(&&b[start..end]) && b.get(skip_ws(b, end)) == Some(&b'(');
        found
    });
    found
}

/// The names given as `backend="NAME"` (a string literal) in a call inside a
/// tag: the named sources the template reads (`source.rs`), sorted.
pub(super) fn backend_args(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for_each_ident(source, |b, start, end| {
        if &b[start..end] == b"backend" {
            let eq = skip_ws(b, end);
            if b.get(eq) == Some(&b'=') && b.get(eq + 1) != Some(&b'=') {
                if let Some((name, _)) = string_literal(b, skip_ws(b, eq + 1)) {
                    names.push(name);
                }
            }
        }
        false
    });
    names.sort();
    names.dedup();
    names
}

/// Calls `visit(bytes, start, end)` for each identifier inside a `{{ }}` or
/// `{% %}` tag, outside comments, `raw` blocks and string literals, until it
/// returns true.
fn for_each_ident(source: &str, mut visit: impl FnMut(&[u8], usize, usize) -> bool) {
    let b = source.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        let close: &[u8] = match b[i + 1] {
            b'#' => match find(b, i + 2, b"#}") {
                Some(end) => {
                    i = end + 2;
                    continue;
                }
                None => return,
            },
            b'{' => b"}}",
            b'%' => {
                let j = skip_ws(b, i + 2 + usize::from(b.get(i + 2) == Some(&b'-')));
                if b[j..].starts_with(b"raw") && !is_ident(b.get(j + 3).copied()) {
                    match find_endraw(b, j + 3) {
                        Some(end) => {
                            i = end;
                            continue;
                        }
                        None => return,
                    }
                }
                b"%}"
            }
            _ => {
                i += 1;
                continue;
            }
        };
        // Inside a tag: walk tokens up to its close.
        let mut j = i + 2;
        while j < b.len() && !b[j..].starts_with(close) {
            if matches!(b[j], b'"' | b'\'' | b'`') {
                match string_literal(b, j) {
                    Some((_, after)) => j = after,
                    None => return,
                }
            } else if is_ident(Some(b[j])) && !is_ident(j.checked_sub(1).map(|k| b[k])) {
                let end = j + b[j..].iter().take_while(|c| is_ident(Some(**c))).count();
                if visit(b, j, end) {
                    return;
                }
                j = end;
            } else {
                j += 1;
            }
        }
        i = j + close.len();
    }
}

fn is_ident(c: Option<u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// Index just after `close` (e.g. `%}`), skipping string literals; the end of
/// input when there is none.
fn skip_to_close(b: &[u8], mut i: usize, close: &[u8]) -> usize {
    while i < b.len() {
        if matches!(b[i], b'"' | b'\'' | b'`') {
            i = match string_literal(b, i) {
                Some((_, after)) => after,
                None => return b.len(),
            };
        } else if b[i..].starts_with(close) {
            return i + close.len();
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Index just after the `{% endraw %}` (any whitespace control) that closes a
/// raw block whose opening tag name ends at `from`.
fn find_endraw(b: &[u8], from: usize) -> Option<usize> {
    let mut i = find(b, from, b"%}")? + 2;
    loop {
        let open = find(b, i, b"{%")?;
        let mut j = open + 2;
        if b.get(j) == Some(&b'-') {
            j += 1;
        }
        j = skip_ws(b, j);
        if b[j..].starts_with(b"endraw") {
            j = skip_ws(b, j + 6);
            if b.get(j) == Some(&b'-') {
                j += 1;
            }
            if b[j..].starts_with(b"%}") {
                return Some(j + 2);
            }
        }
        i = open + 2;
    }
}

/// The string literal starting at `b[i]` (`"…"`, `'…'` or `` `…` ``), unescaped
/// as Tera does, and the index after its closing quote.
fn string_literal(b: &[u8], i: usize) -> Option<(String, usize)> {
    let quote = *b.get(i)?;
    if !matches!(quote, b'"' | b'\'' | b'`') {
        return None;
    }
    let mut out = Vec::new();
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            c if c == quote => return Some((String::from_utf8_lossy(&out).into_owned(), j + 1)),
            b'\\' if j + 1 < b.len() => {
                out.push(match b[j + 1] {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    other => other,
                });
                j += 2;
            }
            c => {
                out.push(c);
                j += 1;
            }
        }
    }
    None
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> Vec<String> {
        scan(src).into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn finds_catalog_calls_in_code_only() {
        let calls = |src: &str| calls_any(src, CATALOG_FUNCTIONS);
        assert!(calls("{% for s in services() %}{{ s }}{% endfor %}"));
        assert!(calls("{{ service (name=\"db\") | length }}"));
        assert!(calls("{%- set x = service(name='a') -%}"));
        assert!(!calls("service(name) in plain text"));
        assert!(!calls("{# {{ service(name='a') }} #}"));
        assert!(!calls("{{ \"service(\" }}"));
        assert!(!calls("{% raw %}{{ services() }}{% endraw %}"));
        assert!(!calls("{{ my_service(x) }} {{ services }}"));
    }

    #[test]
    fn finds_named_backends_in_code_only() {
        let src = "{{ getv(key=\"/p\", backend=\"secrets\") }} backend=\"text\" \
                   {# getv(backend='comment') #}{% if exists(key='/a', backend = 'b') %}{% endif %}\
                   {{ x == backend }}{{ getv(key='/a', backend=\"secrets\") }}";
        assert_eq!(backend_args(src), ["b", "secrets"]);
    }

    #[test]
    fn finds_includes_and_extends() {
        let src = "{% extends \"base.tmpl\" %}\n{%- include 'a.tmpl' -%}{%include `b/c.tmpl`%}";
        assert_eq!(names(src), ["base.tmpl", "a.tmpl", "b/c.tmpl"]);
        let refs = scan(src);
        assert_eq!((refs[0].line, refs[0].col), (1, 12));
        assert_eq!((refs[1].line, refs[1].col), (2, 13));
    }

    #[test]
    fn skips_comments_raw_and_strings() {
        let src = concat!(
            "{# {% include 'c.tmpl' %} #}",
            "{% raw %}{% include 'r.tmpl' %}{%- endraw -%}",
            "{{ \"{% include 's.tmpl' %}\" }}",
            "{% set x = '%}{% include \"t.tmpl\" %}' %}",
            "{% include \"real.tmpl\" %}",
        );
        assert_eq!(names(src), ["real.tmpl"]);
    }

    #[test]
    fn unescapes_like_tera() {
        assert_eq!(names(r#"{% include "a\"b.tmpl" %}"#), ["a\"b.tmpl"]);
    }

    #[test]
    fn tolerates_unterminated_input() {
        assert!(names("{% include \"a").is_empty());
        assert!(names("{# x").is_empty());
        assert!(names("{% raw %} x").is_empty());
        assert!(names("{").is_empty());
        assert!(names("{% include").is_empty());
    }

    #[test]
    fn column_counts_characters() {
        let refs = scan("é {% include 'x' %}");
        assert_eq!((refs[0].line, refs[0].col), (1, 14));
    }

    #[test]
    fn relative_names() {
        assert_eq!(
            relative("a/./b/../c.tmpl").unwrap(),
            PathBuf::from("a/c.tmpl")
        );
        assert!(relative("../x").unwrap_err().contains("outside"));
        assert!(relative("a/../../x").unwrap_err().contains("outside"));
        assert!(relative("/etc/passwd").unwrap_err().contains("absolute"));
        assert!(relative("").is_err());
        assert!(relative("a/..").is_err());
    }
}
