//! What `--namespace`, `--all-namespaces` and `--kube-label` select: the
//! namespaces read (one, several, or every one), and the label selector sent
//! to the API server with every ConfigMap and Secret list and watch.
//!
//! Both are checked at start, so a typo is an error naming the flag and the
//! offending part rather than a `400` from the API server later.

use sidekick_backend::BackendError;

use crate::NAME;

/// The namespaces to read, as the settings give them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Namespaces {
    /// No `--namespace`: the pod's own, or the kubeconfig context's.
    Default,
    /// One namespace: keys keep today's layout, `/configmaps/<name>/<key>`.
    One(String),
    /// Several: keys are `/configmaps/<ns>/<name>/<key>`.
    Several(Vec<String>),
    /// Every namespace (a cluster-wide list and watch): keys as for several.
    All,
}

impl Namespaces {
    /// Parses `--namespace` (one name, `a,b`, or `ALL`) and `--all-namespaces`.
    pub(crate) fn parse(namespace: Option<&str>, all: bool) -> Result<Namespaces, BackendError> {
        let Some(text) = namespace else {
            return Ok(if all {
                Namespaces::All
            } else {
                Namespaces::Default
            });
        };
        if text.trim() == "ALL" {
            return Ok(Namespaces::All);
        }
        if all {
            return Err(config_error(format!(
                "--namespace {text:?} and --all-namespaces contradict each other; give one"
            )));
        }
        if text.trim().is_empty() {
            return Err(config_error("--namespace is empty".into()));
        }
        let mut names: Vec<String> = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(config_error(format!(
                    "--namespace {text:?} has an empty name (write a,b)"
                )));
            }
            if !is_dns_label(part) {
                let hint = if part == "*" {
                    " (for every namespace use --all-namespaces or --namespace ALL)"
                } else {
                    ""
                };
                return Err(config_error(format!(
                    "--namespace {text:?}: {part:?} is not a namespace name (lowercase letters, \
                     digits and '-', at most 63){hint}"
                )));
            }
            if !names.iter().any(|n| n == part) {
                names.push(part.to_string());
            }
        }
        Ok(match <[String; 1]>::try_from(names) {
            Ok([one]) => Namespaces::One(one),
            Err(names) => Namespaces::Several(names),
        })
    }
}

/// The namespaces resolved at connect time (the default filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    /// `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
}

impl Scope {
    /// One namespace, unqualified keys.
    pub(crate) fn one(namespace: &str) -> Scope {
        Scope {
            namespaces: Some(vec![namespace.to_string()]),
        }
    }

    /// `namespaces` with `default` standing in for [`Namespaces::Default`].
    pub(crate) fn resolve(namespaces: &Namespaces, default: &str) -> Scope {
        match namespaces {
            Namespaces::Default => Scope::one(default),
            Namespaces::One(ns) => Scope::one(ns),
            Namespaces::Several(list) => Scope {
                namespaces: Some(list.clone()),
            },
            Namespaces::All => Scope { namespaces: None },
        }
    }

    /// Keys carry the namespace (`/configmaps/<ns>/<name>/<key>`): several
    /// namespaces or all. One namespace keeps `/configmaps/<name>/<key>`.
    pub(crate) fn qualified(&self) -> bool {
        self.namespaces.as_ref().is_none_or(|list| list.len() > 1)
    }

    /// True when `ns` is read.
    pub(crate) fn contains(&self, ns: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == ns))
    }

    /// `a,b`, or `all namespaces`, for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.namespaces {
            Some(list) => list.join(","),
            None => "all namespaces".into(),
        }
    }
}

/// `--kube-label` values (each a selector; several are ANDed) joined into the
/// one `labelSelector` the API server gets; `None` when none is given.
pub(crate) fn label_selector(labels: &[String]) -> Result<Option<String>, BackendError> {
    let mut terms = Vec::new();
    for text in labels {
        if text.trim().is_empty() {
            return Err(config_error("--kube-label is empty".into()));
        }
        for term in split_terms(text) {
            check_term(term)
                .map_err(|why| config_error(format!("--kube-label {text:?}: {term:?}: {why}")))?;
            terms.push(normalize(term));
        }
    }
    Ok((!terms.is_empty()).then(|| terms.join(",")))
}

/// Splits a selector on the commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts
}

/// One requirement with its whitespace tidied (`a in (x, y)` -> `a in (x,y)`).
fn normalize(term: &str) -> String {
    match set_term(term) {
        Some((key, op, values)) => format!("{key} {op} ({})", values.join(",")),
        None => term.split_whitespace().collect::<Vec<_>>().join(""),
    }
}

/// `key in (v, ...)` / `key notin (v, ...)`, split up.
fn set_term(term: &str) -> Option<(&str, &str, Vec<&str>)> {
    let open = term.find('(')?;
    let head = term[..open].trim();
    let (key, op) = head.rsplit_once(char::is_whitespace)?;
    let op = op.trim();
    if op != "in" && op != "notin" {
        return None;
    }
    let inner = term[open + 1..].trim_end().strip_suffix(')')?;
    Some((key.trim(), op, inner.split(',').map(str::trim).collect()))
}

/// Checks one requirement as the API server's parser would.
fn check_term(term: &str) -> Result<(), String> {
    if term.is_empty() {
        return Err("empty requirement (a stray comma?)".into());
    }
    if term.contains('(') || term.contains(')') {
        let (key, _, values) = set_term(term)
            .ok_or("expected `key in (a,b)` or `key notin (a,b)`, with both parentheses")?;
        check_key(key)?;
        if values.iter().all(|v| v.is_empty()) {
            return Err("a set needs at least one value".into());
        }
        return values.iter().try_for_each(|v| check_value(v));
    }
    if let Some(key) = term.strip_prefix('!') {
        return check_key(key.trim());
    }
    for op in ["!=", "==", "="] {
        if let Some((key, value)) = term.split_once(op) {
            check_key(key.trim())?;
            return check_value(value.trim());
        }
    }
    check_key(term)
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label);
        if !ok {
            return Err(format!(
                "the key prefix {p:?} must be a DNS subdomain (example.com)"
            ));
        }
    }
    if name.is_empty() {
        return Err("a label key is missing".into());
    }
    if !is_label_word(name) {
        return Err(format!(
            "{name:?} is not a label key (at most 63 letters, digits, '-', '_', '.', starting \
             and ending with a letter or digit)"
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_word(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a label value (at most 63 letters, digits, '-', '_', '.', starting \
             and ending with a letter or digit)"
        ))
    }
}

/// A label name or value: 1-63 of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
fn is_label_word(s: &str) -> bool {
    is_word(s, |c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
}

/// An RFC 1123 label (a namespace name): 1-63 of `[a-z0-9-]`, alphanumeric at
/// both ends.
fn is_dns_label(s: &str) -> bool {
    is_word(s, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
    })
}

/// 1-63 bytes, each `allowed`, the first and last alphanumeric.
fn is_word(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| allowed(c))
}

fn config_error(message: String) -> BackendError {
    BackendError::config(NAME, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(labels: &[&str]) -> Result<Option<String>, String> {
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        label_selector(&labels).map_err(|e| e.to_string())
    }

    #[test]
    fn selectors_of_every_form_pass_and_are_joined() {
        assert_eq!(sel(&[]).unwrap(), None);
        assert_eq!(
            sel(&["app=web", "tier != cache", "env in (prod, staging)"]).unwrap(),
            Some("app=web,tier!=cache,env in (prod,staging)".into())
        );
        assert_eq!(
            sel(&["!legacy,example.com/team,k notin (a),x==y,e="]).unwrap(),
            Some("!legacy,example.com/team,k notin (a),x==y,e=".into())
        );
    }

    #[test]
    fn bad_selectors_name_the_part() {
        let e = sel(&["app=web,,x"]).unwrap_err();
        assert!(
            e.contains("--kube-label \"app=web,,x\"") && e.contains("stray comma"),
            "{e}"
        );
        let e = sel(&["env in (a,b"]).unwrap_err();
        assert!(e.contains("parentheses"), "{e}");
        let e = sel(&["app=-web"]).unwrap_err();
        assert!(e.contains("\"-web\" is not a label value"), "{e}");
        let e = sel(&["Bad_/x=1"]).unwrap_err();
        assert!(e.contains("DNS subdomain"), "{e}");
        assert!(sel(&["  "]).unwrap_err().contains("empty"));
    }

    #[test]
    fn namespaces_parse() {
        let p = |s: Option<&str>, all| Namespaces::parse(s, all).map_err(|e| e.to_string());
        assert_eq!(p(None, false).unwrap(), Namespaces::Default);
        assert_eq!(p(None, true).unwrap(), Namespaces::All);
        assert_eq!(p(Some("ALL"), false).unwrap(), Namespaces::All);
        assert_eq!(p(Some("a"), false).unwrap(), Namespaces::One("a".into()));
        assert_eq!(p(Some("a,a"), false).unwrap(), Namespaces::One("a".into()));
        assert_eq!(
            p(Some("a, b"), false).unwrap(),
            Namespaces::Several(vec!["a".into(), "b".into()])
        );
        assert!(p(Some("a,,b"), false).unwrap_err().contains("empty name"));
        assert!(p(Some("*"), false)
            .unwrap_err()
            .contains("--all-namespaces"));
        assert!(p(Some("Prod"), false)
            .unwrap_err()
            .contains("not a namespace name"));
        assert!(p(Some("a"), true).unwrap_err().contains("contradict"));
        assert!(p(Some(""), false).unwrap_err().contains("empty"));
    }
}
