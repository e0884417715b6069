//! Parsing data and services files, and flattening data into `/`-separated keys.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use sidekick_backend::{normalize_key, BackendError, ServiceInstance};

use crate::yaml;

/// The formats a data or services file can be in, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `.yaml` or `.yml`.
    Yaml,
    /// `.json`.
    Json,
    /// `.toml`.
    Toml,
}

impl Format {
    /// The format `path`'s extension names (case-insensitively), if any.
    pub(crate) fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

/// One file's keys (normalized) and values, in the order found.
pub(crate) type Pairs = Vec<(String, String)>;

/// Parses one data file and flattens it into keys. A file holding only
/// whitespace, or a null document, has no keys (a freshly created file is empty).
pub(crate) fn parse_keys(format: Format, text: &str, shown: &Path) -> Result<Pairs, BackendError> {
    let mut flat = Flattener::default();
    if text.trim().is_empty() {
        return Ok(flat.out);
    }
    match format {
        Format::Yaml => yaml_stream(&mut flat, text, shown)?,
        Format::Json => {
            let value: serde_json::Value = deserialize(format, text, shown)?;
            if !value.is_null() {
                flat.json(value);
            }
        }
        Format::Toml => {
            let table: toml::Table = deserialize(format, text, shown)?;
            flat.toml(toml::Value::Table(table));
        }
    }
    Ok(flat.out)
}

/// A YAML data file read as confd reads it ([`crate::yaml`]), then flattened.
fn yaml_stream(flat: &mut Flattener, text: &str, shown: &Path) -> Result<(), BackendError> {
    match yaml::parse(text) {
        Ok(Some(node)) => {
            flat.yaml(node);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) if e.line == 0 => Err(BackendError::Invalid {
            location: shown.display().to_string(),
            message: e.message,
        }),
        Err(e) => Err(located(shown, e.line, e.column, e.message)),
    }
}

/// How YAML plain scalars are read: as confd's parser (Go's yaml.v2, YAML
/// 1.1) reads them, so `yes`/`on`/`off` are booleans and `0755` is octal;
/// merge keys (`<<`) are merged; alias expansion is bounded.
fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.legacy_octal_numbers = true;
    options.strict_booleans = false;
    options.with_snippet = false;
    options.non_finite_float_policy = serde_saphyr::options::NonFiniteFloatPolicy::PassThrough;
    options
}

/// Parses a services file: a map from service name to its instances. An empty
/// file is an empty catalog.
pub(crate) fn parse_services(
    format: Format,
    text: &str,
    shown: &Path,
) -> Result<BTreeMap<String, Vec<ServiceInstance>>, BackendError> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    deserialize(format, text, shown)
}

/// Deserializes `text` in `format`, turning the parser's error into
/// [`BackendError::Invalid`] located at `path:line:column` when it knows where.
fn deserialize<T: DeserializeOwned>(
    format: Format,
    text: &str,
    shown: &Path,
) -> Result<T, BackendError> {
    match format {
        Format::Yaml => serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| yaml_error(&e, shown)),
        Format::Json => serde_json::from_str(text).map_err(|e| json_error(&e, shown)),
        Format::Toml => toml::from_str(text).map_err(|e| toml_error(&e, text, shown)),
    }
}

fn yaml_error(e: &serde_saphyr::Error, shown: &Path) -> BackendError {
    let message = e.without_snippet().to_string();
    match e.location() {
        Some(loc) => located(
            shown,
            usize::try_from(loc.line()).unwrap_or(usize::MAX),
            usize::try_from(loc.column()).unwrap_or(usize::MAX),
            message,
        ),
        None => BackendError::Invalid {
            location: shown.display().to_string(),
            message,
        },
    }
}

fn json_error(e: &serde_json::Error, shown: &Path) -> BackendError {
    let message = e.to_string();
    if e.line() == 0 {
        return BackendError::Invalid {
            location: shown.display().to_string(),
            message,
        };
    }
    located(shown, e.line(), e.column(), message)
}

fn toml_error(e: &toml::de::Error, text: &str, shown: &Path) -> BackendError {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            located(shown, line, column, message)
        }
        None => BackendError::Invalid {
            location: shown.display().to_string(),
            message,
        },
    }
}

/// An [`BackendError::Invalid`] at `path:line:column`, with the parser's own
/// " at line L column C" dropped from the message since the location says it.
fn located(shown: &Path, line: usize, column: usize, mut message: String) -> BackendError {
    let suffix = format!(" at line {line} column {column}");
    if let Some(i) = message.find(&suffix) {
        message.replace_range(i..i + suffix.len(), "");
    }
    BackendError::Invalid {
        location: format!("{}:{line}:{column}", shown.display()),
        message,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let tail = &before[line_start..];
    let column = match std::str::from_utf8(tail) {
        Ok(s) => s.chars().count(),
        Err(_) => tail.len(),
    };
    (line, column + 1)
}

/// Walks a parsed document, collecting one key per scalar.
#[derive(Default)]
struct Flattener {
    /// The path of the value being visited, segments joined by `/`.
    path: String,
    out: Pairs,
}

impl Flattener {
    fn leaf(&mut self, value: String) {
        self.out.push((normalize_key(&self.path), value));
    }

    /// Runs `visit` with `segment` appended to the current path.
    fn enter<R>(&mut self, segment: &str, visit: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        self.path.push('/');
        self.path.push_str(segment);
        let result = visit(self);
        self.path.truncate(len);
        result
    }

    fn json(&mut self, value: serde_json::Value) {
        use serde_json::Value as V;
        match value {
            V::Null => self.leaf(String::new()),
            V::Bool(b) => self.leaf(b.to_string()),
            V::Number(n) => self.leaf(n.to_string()),
            V::String(s) => self.leaf(s),
            V::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    self.enter(&i.to_string(), |f| f.json(item));
                }
            }
            V::Object(map) => {
                for (key, item) in map {
                    self.enter(&key, |f| f.json(item));
                }
            }
        }
    }

    fn yaml(&mut self, node: yaml::Node) {
        use yaml::Node as N;
        match node {
            N::Null => {}
            N::Scalar(s) => self.leaf(s),
            N::Seq(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    self.enter(&i.to_string(), |f| f.yaml(item));
                }
            }
            N::Map(map) => {
                for (key, item) in map {
                    self.enter(&key, |f| f.yaml(item));
                }
            }
            // A copy only while another alias still shares it.
            N::Shared(inner) => self.yaml(std::rc::Rc::unwrap_or_clone(inner)),
        }
    }

    fn toml(&mut self, value: toml::Value) {
        use toml::Value as V;
        match value {
            V::String(s) => self.leaf(s),
            V::Integer(i) => self.leaf(i.to_string()),
            V::Float(x) => self.leaf(toml_float(x)),
            V::Boolean(b) => self.leaf(b.to_string()),
            V::Datetime(d) => self.leaf(d.to_string()),
            V::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    self.enter(&i.to_string(), |f| f.toml(item));
                }
            }
            V::Table(map) => {
                for (key, item) in map {
                    self.enter(&key, |f| f.toml(item));
                }
            }
        }
    }
}

/// A TOML float as written in the other formats: `1.0` stays `1.0` (Rust's
/// `Display` would print `1`), infinities and NaN use TOML's spelling.
fn toml_float(x: f64) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{x:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(format: Format, text: &str) -> Vec<(String, String)> {
        parse_keys(format, text, Path::new("t")).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
        v.sort();
        v
    }

    #[test]
    fn format_by_extension() {
        assert_eq!(Format::from_path(Path::new("a.yml")), Some(Format::Yaml));
        assert_eq!(Format::from_path(Path::new("a.YAML")), Some(Format::Yaml));
        assert_eq!(Format::from_path(Path::new("a.json")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("a.toml")), Some(Format::Toml));
        assert_eq!(Format::from_path(Path::new("a.yaml~")), None);
        assert_eq!(Format::from_path(Path::new("4913")), None);
    }

    #[test]
    fn flattens_yaml() {
        let text = "db:\n  host: x\n  port: 2\nupstreams: [a, b]\nflags: {on: true, ratio: 1.5, one: 1.0, none: null}\n7: seven\n";
        assert_eq!(
            sorted(keys(Format::Yaml, text)),
            pairs(&[
                ("/7", "seven"),
                ("/db/host", "x"),
                ("/db/port", "2"),
                ("/flags/on", "true"),
                ("/flags/one", "1"),
                ("/flags/ratio", "1.5"),
                ("/upstreams/0", "a"),
                ("/upstreams/1", "b"),
            ])
        );
    }

    #[test]
    fn flattens_yaml_roots_and_merge_keys() {
        assert_eq!(
            keys(Format::Yaml, "- a\n- b\n"),
            pairs(&[("/0", "a"), ("/1", "b")])
        );
        assert_eq!(keys(Format::Yaml, "hello\n"), pairs(&[("/", "hello")]));
        assert!(keys(Format::Yaml, "").is_empty());
        assert!(keys(Format::Yaml, "~\n").is_empty());
        assert!(keys(Format::Yaml, "a: {}\nb: []\n").is_empty());
        let text = "base: &b {host: h, port: 1}\nweb:\n  <<: *b\n  port: 2\n";
        assert_eq!(
            sorted(keys(Format::Yaml, text)),
            pairs(&[
                ("/base/host", "h"),
                ("/base/port", "1"),
                ("/web/host", "h"),
                ("/web/port", "2"),
            ])
        );
        let err = parse_keys(Format::Yaml, "? [a]\n: b\n", Path::new("t.yaml")).unwrap_err();
        assert!(matches!(err, BackendError::Invalid { .. }), "{err}");
    }

    /// Plain scalars as confd's YAML 1.1 parser (Go's yaml.v2) and its file
    /// backend's printing give them; quoted ones stay text.
    #[test]
    fn yaml_scalars_read_as_confd_reads_them() {
        let text = "\
b1: yes\nb2: on\nb3: Off\nb4: NO\nb5: 'yes'\nb6: \"on\"\n\
o1: 0755\no2: '0755'\nh: 0x1F\nu: 1_000\nneg: -7\n\
f1: 1e3\nf2: 1.0\nf3: 1.5\nf4: .inf\nf5: -.inf\nf6: .nan\nf7: 1.5e-7\n\
n1: ~\nn2: null\nn3:\nn4: ''\n\
t: 2001-12-14t21:59:43.10-05:00\nmulti: |\n  line one\n  line two\n";
        assert_eq!(
            sorted(keys(Format::Yaml, text)),
            sorted(pairs(&[
                ("/b1", "true"),
                ("/b2", "true"),
                ("/b3", "false"),
                ("/b4", "false"),
                ("/b5", "yes"),
                ("/b6", "on"),
                ("/o1", "493"),
                ("/o2", "0755"),
                ("/h", "31"),
                ("/u", "1000"),
                ("/neg", "-7"),
                ("/f1", "1000"),
                ("/f2", "1"),
                ("/f3", "1.5"),
                ("/f4", "+Inf"),
                ("/f5", "-Inf"),
                ("/f6", "NaN"),
                ("/f7", "0.00000015"),
                ("/n4", ""),
                ("/t", "2001-12-14t21:59:43.10-05:00"),
                ("/multi", "line one\nline two\n"),
            ]))
        );
    }

    #[test]
    fn yaml_scalars_as_confd_reads_them_in_flow_collections_too() {
        let text = "a: yes\nb: on\nc: 0755\nd: 1e3\ne: ~\nf: 'yes'\ng: 1.50\nh: .inf\ni: NO\nj: [yes, 0755, ~, n]\n";
        assert_eq!(
            sorted(keys(Format::Yaml, text)),
            pairs(&[
                ("/a", "true"),
                ("/b", "true"),
                ("/c", "493"),
                ("/d", "1000"),
                ("/f", "yes"),
                ("/g", "1.5"),
                ("/h", "+Inf"),
                ("/i", "false"),
                ("/j/0", "true"),
                ("/j/1", "493"),
                ("/j/3", "false"),
            ])
        );
    }

    #[test]
    fn yaml_keys_tags_and_aliases() {
        let text =
            "t: !custom {x: 1}\nu: !!str 12\n? 1.5\n: float key\ntrue: bool key\non: on key\n\
'quoted': q\na: &x {b: 1}\nc: *x\nd: [*x, *x]\n- \n";
        let text = text.trim_end_matches("- \n");
        assert_eq!(
            sorted(keys(Format::Yaml, text)),
            sorted(pairs(&[
                ("/t/x", "1"),
                ("/u", "12"),
                ("/1.5", "float key"),
                ("/true", "bool key"),
                ("/on", "on key"),
                ("/quoted", "q"),
                ("/a/b", "1"),
                ("/c/b", "1"),
                ("/d/0/b", "1"),
                ("/d/1/b", "1"),
            ]))
        );
    }

    #[test]
    fn yaml_errors_say_where() {
        for text in ["a: 1\na: 2\n", "? [a]\n: b\n", "a: [\n"] {
            let err = parse_keys(Format::Yaml, text, Path::new("t.yaml")).unwrap_err();
            let BackendError::Invalid { location, message } = &err else {
                panic!("{text}: {err}");
            };
            assert!(location.starts_with("t.yaml:"), "{text}: {location}");
            assert!(!message.contains('\n'), "{text}: {message}");
        }
    }

    /// An alias bomb ("billion laughs") is refused, not expanded.
    #[test]
    fn yaml_alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse_keys(Format::Yaml, &text, Path::new("t.yaml")).unwrap_err();
        assert!(matches!(err, BackendError::Invalid { .. }), "{err}");
    }

    #[test]
    fn flattens_json() {
        let text = r#"{"db": {"host": "x", "port": 2}, "upstreams": ["a", {"n": null}], "f": 1.5, "t": true}"#;
        assert_eq!(
            sorted(keys(Format::Json, text)),
            pairs(&[
                ("/db/host", "x"),
                ("/db/port", "2"),
                ("/f", "1.5"),
                ("/t", "true"),
                ("/upstreams/0", "a"),
                ("/upstreams/1/n", ""),
            ])
        );
        assert_eq!(
            keys(Format::Json, "[1, 2]"),
            pairs(&[("/0", "1"), ("/1", "2")])
        );
        assert_eq!(keys(Format::Json, "\"s\""), pairs(&[("/", "s")]));
    }

    #[test]
    fn flattens_toml() {
        let text = "upstreams = [\"a\", \"b\"]\nf = 1.0\ng = 1.5\nt = true\nwhen = 1979-05-27\n[db]\nhost = \"x\"\nport = 2\n[[srv]]\nname = \"s\"\n";
        assert_eq!(
            sorted(keys(Format::Toml, text)),
            pairs(&[
                ("/db/host", "x"),
                ("/db/port", "2"),
                ("/f", "1.0"),
                ("/g", "1.5"),
                ("/srv/0/name", "s"),
                ("/t", "true"),
                ("/upstreams/0", "a"),
                ("/upstreams/1", "b"),
                ("/when", "1979-05-27"),
            ])
        );
    }

    #[test]
    fn parse_errors_have_line_and_column() {
        let err = parse_keys(Format::Yaml, "a: 1\nb: [\n", Path::new("x.yaml")).unwrap_err();
        let BackendError::Invalid { location, message } = err else {
            panic!("not Invalid")
        };
        assert!(location.starts_with("x.yaml:"), "{location}");
        assert!(
            location
                .split(':')
                .nth(1)
                .unwrap()
                .parse::<usize>()
                .unwrap()
                >= 2
        );
        assert!(!message.is_empty());

        let err = parse_keys(Format::Json, "{\n\"a\": 1,\n}", Path::new("x.json")).unwrap_err();
        let BackendError::Invalid { location, message } = err else {
            panic!("not Invalid")
        };
        assert_eq!(location, "x.json:3:1");
        assert!(!message.contains("at line"), "{message}");

        let err = parse_keys(Format::Toml, "a = 1\nb = \n", Path::new("x.toml")).unwrap_err();
        let BackendError::Invalid { location, .. } = err else {
            panic!("not Invalid")
        };
        assert!(location.starts_with("x.toml:2:"), "{location}");
    }

    #[test]
    fn line_column_counts_chars() {
        assert_eq!(line_column("ab\ncé", 5), (2, 3));
        assert_eq!(line_column("", 0), (1, 1));
        assert_eq!(line_column("abc", 99), (1, 4));
    }

    #[test]
    fn services_parse_and_reject_unknown_fields() {
        let text = "web:\n  - address: 10.0.0.1\n    port: 80\n    tags: [http]\n  - address: 10.0.0.2\n    healthy: false\n";
        let s = parse_services(Format::Yaml, text, Path::new("s.yaml")).unwrap();
        assert_eq!(s["web"].len(), 2);
        assert_eq!(s["web"][0].port, 80);
        assert!(!s["web"][1].healthy);

        let text = "web:\n  - address: 10.0.0.1\n    colour: red\n";
        let err = parse_services(Format::Yaml, text, Path::new("s.yaml")).unwrap_err();
        let BackendError::Invalid { location, message } = err else {
            panic!("not Invalid")
        };
        assert!(location.starts_with("s.yaml:3:"), "{location}");
        assert!(message.contains("colour"), "{message}");

        let text = "[[web]]\naddress = \"10.0.0.1\"\nport = 80\n\n[[web]]\naddress = \"10.0.0.2\"\nbogus = 1\n";
        let err = parse_services(Format::Toml, text, Path::new("s.toml")).unwrap_err();
        let BackendError::Invalid { location, message } = err else {
            panic!("not Invalid")
        };
        assert!(location.starts_with("s.toml:"), "{location}");
        assert!(message.contains("bogus"), "{message}");

        let text = r#"{"db": [{"address": "10.0.0.3", "port": 5432, "meta": {"zone": "a"}}]}"#;
        let s = parse_services(Format::Json, text, Path::new("s.json")).unwrap();
        assert_eq!(s["db"][0].meta["zone"], "a");
        assert!(parse_services(Format::Json, " \n", Path::new("s.json"))
            .unwrap()
            .is_empty());
    }
}
