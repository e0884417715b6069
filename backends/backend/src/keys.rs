//! Keys are `/`-separated paths with string values, kept sorted.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// Turns any spelling of a key into the one form the tree uses: a leading `/`, no
/// empty segments, no trailing `/` (the root stays `/`).
pub fn normalize_key(key: &str) -> String {
    if is_normal(key) {
        return key.to_string();
    }
    let mut out = String::with_capacity(key.len() + 1);
    for segment in key.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// True when [`normalize_key`] would return `key` unchanged: most keys from a
/// backend already are, and need no copy.
pub fn is_normal(key: &str) -> bool {
    key == "/" || (key.starts_with('/') && !key.ends_with('/') && !key.contains("//"))
}

/// [`normalize_key`] for an owned key, reusing it when it is already normal.
pub fn normalize_owned(key: String) -> String {
    if is_normal(&key) {
        key
    } else {
        normalize_key(&key)
    }
}

/// The prefixes normalized, sorted, without repeats and without those already
/// covered by a shorter one (`/a` covers `/a/b`, not `/ab`), so each key is
/// read or counted once.
pub fn minimal_prefixes<S: AsRef<str>>(prefixes: &[S]) -> Vec<String> {
    let mut sorted: Vec<String> = prefixes.iter().map(|p| normalize_key(p.as_ref())).collect();
    sorted.sort();
    sorted.dedup();
    if sorted.first().is_some_and(|p| p == "/") {
        return vec!["/".to_string()];
    }
    // Sorted, an outer prefix comes before the ones inside it. A prefix is
    // covered only by one of its own ancestors (`/a` and `/a/b` for
    // `/a/b/c`): look those up rather than compare with every kept prefix,
    // which made 16,000 `keys` entries cost 8 s.
    let mut kept: Vec<String> = Vec::new();
    let mut kept_set: std::collections::HashSet<String> = std::collections::HashSet::new();
    for p in sorted {
        let covered = p
            .match_indices('/')
            .skip(1)
            .any(|(i, _)| kept_set.contains(&p[..i]));
        if !covered {
            kept_set.insert(p.clone());
            kept.push(p);
        }
    }
    kept
}

/// Joins a global prefix and a resource prefix (or a prefix and a key) as confd
/// does: `/production` + `myapp` is `/production/myapp`.
pub fn join_prefix(prefix: &str, rest: &str) -> String {
    normalize_key(&format!("{prefix}/{rest}"))
}

/// True when `key` is `prefix` itself or lies below it, segment-wise: `/app`
/// covers `/app/x` but not `/apple`.
pub fn is_under(key: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match key.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A sorted map from normalized keys to values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyTree {
    entries: BTreeMap<String, String>,
}

impl KeyTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (normalized here) to `value`; returns the old value.
    pub fn insert(&mut self, key: &str, value: impl Into<String>) -> Option<String> {
        self.entries.insert(normalize_key(key), value.into())
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.entries.remove(&normalize_key(key))
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        match self.entries.get(key) {
            Some(v) => Some(v.as_str()),
            None => self.entries.get(&normalize_key(key)).map(String::as_str),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Entries at or below `prefix` (normalized), in key order.
    pub fn under<'a>(&'a self, prefix: &str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let prefix = normalize_key(prefix);
        let range = self
            .entries
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded));
        // Every key starting with the prefix's text sorts in one run after it;
        // within it, `/app-x` shares the text but is not below `/app`.
        range
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .take_while({
                let prefix = prefix.clone();
                move |(k, _)| k.starts_with(prefix.as_str())
            })
            .filter(move |(k, _)| is_under(k, &prefix))
    }

    /// True when some key lies at or below `prefix`.
    pub fn has_under(&self, prefix: &str) -> bool {
        self.under(prefix).next().is_some()
    }

    /// Keeps only the keys covered by one of `prefixes`.
    pub fn retain_under(&mut self, prefixes: &[String]) {
        if prefixes.len() <= 4 {
            self.entries
                .retain(|k, _| prefixes.iter().any(|p| is_under(k, p)));
            return;
        }
        // Many prefixes: look up each key's ancestors instead of comparing
        // every key with every prefix (16,000 of each took seconds).
        let set: std::collections::HashSet<String> =
            prefixes.iter().map(|p| normalize_key(p)).collect();
        if set.contains("/") {
            return;
        }
        self.entries.retain(|k, _| {
            set.contains(k.as_str())
                || k.match_indices('/')
                    .skip(1)
                    .any(|(i, _)| set.contains(&k[..i]))
        });
    }

    /// Moves every entry of `other` into this tree.
    pub fn extend(&mut self, other: KeyTree) {
        self.entries.extend(other.entries);
    }

    /// Keys whose value differs between the two trees, including keys only one has.
    pub fn changed_keys(&self, other: &KeyTree) -> BTreeSet<String> {
        use std::cmp::Ordering;
        // Both trees are sorted: one walk side by side, no lookups.
        let mut changed = Vec::new();
        let (mut a, mut b) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
        loop {
            let order = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
            };
            match order {
                Ordering::Less => changed.extend(a.next().map(|(k, _)| k.clone())),
                Ordering::Greater => changed.extend(b.next().map(|(k, _)| k.clone())),
                Ordering::Equal => {
                    if let (Some((k, va)), Some((_, vb))) = (a.next(), b.next()) {
                        if va != vb {
                            changed.push(k.clone());
                        }
                    }
                }
            }
        }
        // Already sorted, so the set is built without comparisons beyond a check.
        changed.into_iter().collect()
    }

    /// Sorted, distinct names of the direct children of `path` (confd's `ls`).
    pub fn ls(&self, path: &str) -> Vec<String> {
        self.children(path, false)
    }

    /// Sorted names of the direct children of `path` that have children of their
    /// own (confd's `lsdir`).
    pub fn lsdir(&self, path: &str) -> Vec<String> {
        self.children(path, true)
    }

    fn children(&self, path: &str, dirs_only: bool) -> Vec<String> {
        let path = normalize_key(path);
        let base_len = if path == "/" { 1 } else { path.len() + 1 };
        let mut names: Vec<String> = Vec::new();
        for (key, _) in self.under(&path) {
            if key.len() <= base_len {
                continue; // the path itself
            }
            let rest = &key[base_len..];
            let (name, deeper) = match rest.find('/') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            if dirs_only && !deeper {
                continue;
            }
            if names.last().map(String::as_str) != Some(name) {
                names.push(name.to_string());
            }
        }
        names.dedup();
        names
    }

    /// Entries whose key matches `pattern` (confd's `gets`/`getvs` rule: `*`
    /// matches within one segment, `?` one character), in key order.
    pub fn glob<'a>(&'a self, pattern: &str) -> Vec<(&'a str, &'a str)> {
        let pattern = normalize_key(pattern);
        // Only keys below the literal part of the pattern can match, and they
        // share its segments: compare the rest only.
        let literal: &str = match pattern.find(WILDCARDS) {
            Some(i) => pattern[..i].rsplit_once('/').map_or("/", |(p, _)| p),
            None => &pattern,
        };
        let literal = if literal.is_empty() { "/" } else { literal };
        let skip = if literal == "/" { 0 } else { literal.len() };
        let rest: Vec<&str> = pattern[skip..].split('/').collect();
        self.under(literal)
            .filter(|(k, _)| path_matches(&rest, &k[skip..]))
            .collect()
    }
}

impl FromIterator<(String, String)> for KeyTree {
    /// Builds a tree from pairs (keys normalized here; a later pair wins over an
    /// earlier one with the same key). Sorted input, the usual case for a
    /// backend's answer, is built in one pass.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        KeyTree {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (normalize_owned(k), v))
                .collect(),
        }
    }
}

/// The characters that make a glob segment more than a literal name.
const WILDCARDS: [char; 4] = ['*', '?', '[', '\\'];

/// True when `key`'s segments match the pattern's, one for one.
fn path_matches(pattern: &[&str], key: &str) -> bool {
    let mut segments = key.split('/');
    for p in pattern {
        let Some(s) = segments.next() else {
            return false;
        };
        let matched = match *p {
            "*" => true,
            p if !p.contains(WILDCARDS) => p == s,
            p => segment_matches(p.as_bytes(), s.as_bytes()),
        };
        if !matched {
            return false;
        }
    }
    segments.next().is_none()
}

/// Shell-style match of one path segment: `*` any run, `?` one character,
/// `[abc]`/`[a-z]`/`[!a]` a class, `\x` a literal.
fn segment_matches(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let (mut star_p, mut star_i) = (usize::MAX, 0usize);
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star_p = p;
                    star_i = i;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((true, next)) = class_matches(pat, p, s[i]) {
                        p = next;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pat.len() && pat[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        if star_p != usize::MAX {
            p = star_p + 1;
            star_i += 1;
            i = star_i;
            continue;
        }
        return false;
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// Matches `c` against the class starting at `pat[start] == b'['`; returns
/// whether it matched and the index after the class, or `None` if unterminated.
fn class_matches(pat: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = start + 1;
    let negate = j < pat.len() && (pat[j] == b'!' || pat[j] == b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < pat.len() && (first || pat[j] != b']') {
        first = false;
        let lo = pat[j];
        if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            if lo <= c && c <= pat[j + 2] {
                matched = true;
            }
            j += 3;
        } else {
            if lo == c {
                matched = true;
            }
            j += 1;
        }
    }
    if j >= pat.len() {
        return None;
    }
    Some((matched != negate, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(pairs: &[(&str, &str)]) -> KeyTree {
        let mut t = KeyTree::new();
        for (k, v) in pairs {
            t.insert(k, *v);
        }
        t
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize_key(""), "/");
        assert_eq!(normalize_key("a//b/"), "/a/b");
        assert_eq!(join_prefix("/production", "myapp"), "/production/myapp");
        assert_eq!(join_prefix("/", "/db/host"), "/db/host");
    }

    #[test]
    fn under_is_segment_wise() {
        let t = tree(&[("/app/x", "1"), ("/apple", "2"), ("/app", "0")]);
        let keys: Vec<_> = t.under("/app").map(|(k, _)| k).collect();
        assert_eq!(keys, ["/app", "/app/x"]);
        assert_eq!(t.under("/").count(), 3);
    }

    #[test]
    fn ls_and_lsdir() {
        let t = tree(&[
            ("/s/b/x", "1"),
            ("/s/a", "1"),
            ("/s/b/y", "1"),
            ("/s/c/d/e", "1"),
        ]);
        assert_eq!(t.ls("/s"), ["a", "b", "c"]);
        assert_eq!(t.lsdir("/s"), ["b", "c"]);
        assert_eq!(t.ls("/"), ["s"]);
        assert!(t.ls("/nope").is_empty());
    }

    #[test]
    fn glob_stays_in_segment() {
        let t = tree(&[
            ("/u/a/host", "1"),
            ("/u/b/host", "2"),
            ("/u/b/c/host", "3"),
            ("/u/b/port", "4"),
        ]);
        let m: Vec<_> = t.glob("/u/*/host").into_iter().map(|(k, _)| k).collect();
        assert_eq!(m, ["/u/a/host", "/u/b/host"]);
        assert_eq!(t.glob("/u/b/*").len(), 2);
        assert_eq!(t.glob("/u/[ab]/h?st").len(), 2);
        assert_eq!(t.glob("/u/[!a]/host").len(), 1);
        assert_eq!(t.glob("/u/b/port").len(), 1);
    }

    #[test]
    fn changed_keys_both_ways() {
        let a = tree(&[("/a", "1"), ("/b", "2"), ("/d", "5")]);
        let b = tree(&[("/b", "3"), ("/c", "4"), ("/d", "5"), ("/e", "6")]);
        let c: Vec<_> = a.changed_keys(&b).into_iter().collect();
        assert_eq!(c, ["/a", "/b", "/c", "/e"]);
        assert_eq!(b.changed_keys(&a), a.changed_keys(&b));
        assert!(a.changed_keys(&a).is_empty());
        assert_eq!(KeyTree::new().changed_keys(&a).len(), 3);
    }

    #[test]
    fn retain_under_many_prefixes_keeps_what_few_would() {
        let pairs = [
            ("/a", "1"),
            ("/a/x", "2"),
            ("/a-b/c", "3"),
            ("/ab", "4"),
            ("/q/r/s", "5"),
            ("/z", "6"),
        ];
        let prefixes: Vec<String> = ["/a", "/q/r", "/m", "/n", "/o", "/p"]
            .iter()
            .map(|p| p.to_string())
            .collect();
        let mut many = tree(&pairs);
        many.retain_under(&prefixes);
        let kept: Vec<_> = many.under("/").map(|(k, _)| k).collect();
        assert_eq!(kept, ["/a", "/a/x", "/q/r/s"]);
        let mut all = tree(&pairs);
        all.retain_under(&[
            "/".to_string(),
            "/a".into(),
            "/b".into(),
            "/c".into(),
            "/d".into(),
        ]);
        assert_eq!(all.len(), pairs.len());
    }

    #[test]
    fn minimal_prefixes_drop_covered_ones() {
        assert_eq!(
            minimal_prefixes(&["/a/b", "/a", "/ab", "a/"]),
            ["/a", "/ab"]
        );
        assert_eq!(minimal_prefixes(&["/x", "/"]), ["/"]);
        // `-` sorts before `/`: the covering prefix is not the one just before.
        assert_eq!(
            minimal_prefixes(&["/a/x", "/a-b", "/a", "/a-b/c/d", "/a-b/c", "/z//y/"]),
            ["/a", "/a-b", "/z/y"]
        );
        let many: Vec<String> = (0..20_000).map(|i| format!("/k{i}/v")).collect();
        assert_eq!(minimal_prefixes(&many).len(), 20_000);
    }

    #[test]
    fn under_skips_keys_sharing_only_text() {
        let t = tree(&[("/app", "0"), ("/app-x", "1"), ("/app/a", "2"), ("/b", "3")]);
        let keys: Vec<_> = t.under("/app").map(|(k, _)| k).collect();
        assert_eq!(keys, ["/app", "/app/a"]);
        assert_eq!(t.under("/app/").count(), 2);
        assert_eq!(t.under("/zzz").count(), 0);
    }

    #[test]
    fn from_pairs_normalizes_and_last_wins() {
        let t: KeyTree = vec![
            ("b//c/".to_string(), "1".to_string()),
            ("/a".to_string(), "2".to_string()),
            ("/b/c".to_string(), "3".to_string()),
        ]
        .into_iter()
        .collect();
        let all: Vec<_> = t.iter().collect();
        assert_eq!(all, [("/a", "2"), ("/b/c", "3")]);
        for key in ["/", "/a", "/a/b", "", "a", "/a/", "//a", "/a//b", "a/b/"] {
            assert_eq!(is_normal(key), normalize_key(key) == key, "{key:?}");
            assert_eq!(
                normalize_owned(key.to_string()),
                normalize_key(key),
                "{key:?}"
            );
        }
    }
}
