//! Keeping secret values out of messages. A [`Redactor`] holds the values a
//! resource could read from keys its backend marks secret (a Kubernetes
//! Secret's data), and replaces them by `<secret>` in any text about that
//! resource before it is logged: a template error that quotes a value, an
//! `output_format` error that quotes a line of the render, the output of a
//! `check_cmd` that printed the stage file.

use sidekick_backend::{Backend, KeyTree};

/// What replaces a secret value.
pub(crate) const MASK: &str = "<secret>";

/// The secret values to take out of messages, longest first (so a value that
/// contains another is replaced whole).
#[derive(Debug, Default, Clone)]
pub(crate) struct Redactor {
    needles: Vec<String>,
}

impl Redactor {
    /// The secret values a resource can read: for each source, those under
    /// `prefixes` of its `tree`, as its `backend` marks them.
    pub fn for_reads<'t>(
        reads: impl IntoIterator<Item = (&'t dyn Backend, &'t KeyTree, &'t [String])>,
    ) -> Redactor {
        let mut values = Vec::new();
        for (backend, tree, prefixes) in reads {
            if !backend.has_secrets() {
                continue;
            }
            for prefix in prefixes {
                let all = backend.is_secret(prefix);
                for (key, value) in tree.under(prefix) {
                    if all || backend.is_secret(key) {
                        values.push(value);
                    }
                }
            }
        }
        Redactor::of(values)
    }

    /// A redactor for `values`, each in every form a message may quote it.
    fn of<'v>(values: impl IntoIterator<Item = &'v str>) -> Redactor {
        let mut needles = Vec::new();
        for value in values {
            add_forms(&mut needles, value);
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Redactor { needles }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret value replaced by [`MASK`].
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), MASK);
            }
        }
        out
    }
}

/// A value as it may appear in a message: itself, escaped as Rust's and
/// Go's `%q` quoting would (newlines as `\n`), and each of its lines (a TOML
/// or YAML error quotes one line of the render).
fn add_forms(needles: &mut Vec<String>, value: &str) {
    if value.is_empty() {
        return;
    }
    needles.push(value.to_string());
    let escaped = value.escape_debug().to_string();
    if escaped != value {
        needles.push(escaped);
    }
    if value.contains('\n') {
        needles.extend(
            value
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_string),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(values: &[&str]) -> Redactor {
        Redactor::of(values.iter().copied())
    }

    #[test]
    fn values_their_escaped_forms_and_lines_are_masked() {
        let r = redactor(&["pa55", "pa55word", "one\ntwo \"q\""]);
        assert_eq!(r.apply("x=pa55word y=pa55"), "x=<secret> y=<secret>");
        assert_eq!(r.apply("got \"one\\ntwo \\\"q\\\"\""), "got \"<secret>\"");
        assert_eq!(r.apply("line 2: two \"q\""), "line 2: <secret>");
        assert_eq!(r.apply("nothing here"), "nothing here");
        assert!(redactor(&[""]).is_empty());
    }
}
