//! What confd's template functions mean, written once for both engines: key
//! lookups (`getv`, `get`, `gets`, `getvs`, `exists`, `ls`, `lsdir`) relative to
//! the resource's prefix and limited to the keys it declared, the service
//! catalog, the environment (`getenv`, `fileExists`, `hostname`, `datetime`),
//! DNS (`lookupIP*`, `lookupSRV`), and the string, path and list helpers with
//! Go's rules (`path.Base`, `strings.Split`, `strings.ToUpper`, integer
//! division, ...). The Tera and Go function maps (`tera/functions.rs`,
//! `tera/filters.rs`, `go/functions.rs`) convert arguments and results and call
//! these.
//!
//! Key arguments are matched as confd's store matches them: exactly. confd
//! keeps keys cleaned (`path.Join("/", key)`), so `getv "/app/"`, `getv
//! "app"` or `getv "/a//b"` find nothing, and a `gets` pattern with a trailing
//! slash matches nothing; `ls`/`lsdir` clean their argument first, as confd
//! does.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::ToSocketAddrs;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use sidekick_backend::{
    join_prefix, minimal_prefixes, normalize_key, Catalog, KeyTree, ServiceInstance,
};

use super::View;

/// Upper bound on the length of a `seq` list, so a typo cannot exhaust memory.
pub(crate) const MAX_SEQ_LEN: i64 = 100_000;

/// A template function failed; the message is what the template author sees
/// (each engine adds the function's name and the place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FuncError(pub String);

impl FuncError {
    pub(crate) fn new(msg: impl Into<String>) -> FuncError {
        FuncError(msg.into())
    }
}

/// Result of a template function.
pub(crate) type FuncResult<T> = Result<T, FuncError>;

/// Where the functions of one renderer find the view of the render in
/// progress; `None` between renders.
pub(crate) type Slot = Arc<RwLock<Option<Arc<Scope>>>>;

/// One render's view, plus the part of the key tree it may see, built on first use.
pub(crate) struct Scope {
    view: Arc<View>,
    /// The view's prefix, normalized once for every key this render strips.
    prefix: String,
    visible: OnceLock<Arc<KeyTree>>,
    /// The named sources' scopes (`backend="NAME"`), in the view's order.
    named: Vec<(String, Scope)>,
}

/// Makes `scope` the current one until the returned guard is dropped.
pub(crate) fn enter(slot: &Slot, scope: Scope) -> ScopeGuard<'_> {
    *slot.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(scope));
    ScopeGuard { slot }
}

/// Clears the slot when a render ends, so the view's tree is not kept alive.
pub(crate) struct ScopeGuard<'a> {
    slot: &'a Slot,
}

impl Drop for ScopeGuard<'_> {
    fn drop(&mut self) {
        *self.slot.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The scope of the render in progress.
pub(crate) fn current(slot: &Slot) -> FuncResult<Arc<Scope>> {
    slot.read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .ok_or_else(|| {
            FuncError::new("no keys to read: template functions only work during a render")
        })
}

/// True when `key` is written as confd's store keeps keys: a leading `/`, no
/// empty, `.` or `..` segment, no trailing `/` (the root is `/`).
fn is_clean_key(key: &str) -> bool {
    key == "/"
        || (key.starts_with('/')
            && !key.ends_with('/')
            && key[1..]
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".."))
}

impl Scope {
    /// Wraps the view of one render.
    pub(crate) fn new(view: Arc<View>) -> Scope {
        Scope {
            prefix: normalize_key(&view.prefix),
            named: view
                .named
                .iter()
                .map(|(name, v)| (name.clone(), Scope::new(Arc::clone(v))))
                .collect(),
            view,
            visible: OnceLock::new(),
        }
    }

    /// The scope a function with `backend` reads: this one for `None`, else
    /// the named source's.
    pub(crate) fn on(&self, backend: Option<&str>) -> FuncResult<&Scope> {
        let Some(name) = backend else {
            return Ok(self);
        };
        self.named
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, scope)| scope)
            .ok_or_else(|| {
                FuncError(format!(
                    "backend {name:?} is not one this resource reads: declare it as \
                     [backends.{name}] in sidekick.toml and write its name as a literal \
                     (backend=\"{name}\")"
                ))
            })
    }

    /// The keys under the resource's declared prefixes (the whole tree, shared,
    /// when it holds no other keys).
    fn tree(&self) -> &KeyTree {
        self.visible.get_or_init(|| {
            let outer = minimal_prefixes(&self.view.visible);
            let seen: usize = outer.iter().map(|p| self.view.keys.under(p).count()).sum();
            // Usually the tree holds only what this resource sees: share it.
            if seen == self.view.keys.len() {
                return Arc::clone(&self.view.keys);
            }
            let tree: KeyTree = outer
                .iter()
                .flat_map(|prefix| self.view.keys.under(prefix))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Arc::new(tree)
        })
    }

    /// The absolute key for `key` as written in the template.
    fn absolute(&self, key: &str) -> String {
        join_prefix(&self.view.prefix, key)
    }

    /// `abs` without the resource's prefix, as templates see keys.
    fn relative<'a>(&self, abs: &'a str) -> &'a str {
        if self.prefix == "/" {
            return abs;
        }
        match abs.strip_prefix(self.prefix.as_str()) {
            Some("") => "/",
            Some(rest) if rest.starts_with('/') => rest,
            _ => abs,
        }
    }

    /// The value of `key` (as written, matched exactly as confd does), if visible.
    pub(crate) fn lookup(&self, key: &str) -> Option<&str> {
        if !is_clean_key(key) {
            return None;
        }
        self.tree().get(&self.absolute(key))
    }

    /// The error for a key that is not visible, saying where it was looked for.
    pub(crate) fn not_found(&self, key: &str) -> FuncError {
        let abs = self.absolute(key);
        let mut msg = format!("key not found: {key}");
        if !is_clean_key(key) {
            let _ = write!(
                msg,
                " (keys are matched exactly, as in confd: write {})",
                normalize_key(key)
            );
        } else if normalize_key(&self.view.prefix) != "/" {
            let _ = write!(msg, " (looked up as {abs})");
        }
        if is_clean_key(key) && self.view.keys.get(&abs).is_some() {
            let _ = write!(
                msg,
                "; {abs} exists but is outside this resource's keys ({}): add it to `keys`",
                self.view.visible.join(", ")
            );
        }
        FuncError(msg)
    }

    /// confd's `getv`: the value, the default, or "not found".
    pub(crate) fn getv<'s>(&'s self, key: &str, default: Option<&'s str>) -> FuncResult<&'s str> {
        match (self.lookup(key), default) {
            (Some(v), _) => Ok(v),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.not_found(key)),
        }
    }

    /// confd's `get`: `(key, value)` with the key as written.
    pub(crate) fn get<'s, 'k>(&'s self, key: &'k str) -> FuncResult<(&'k str, &'s str)> {
        match self.lookup(key) {
            Some(v) => Ok((key, v)),
            None => Err(self.not_found(key)),
        }
    }

    /// confd's `exists`.
    pub(crate) fn exists(&self, key: &str) -> bool {
        self.lookup(key).is_some()
    }

    /// confd's `gets`: `(key without prefix, value)` of every key matching the
    /// `path.Match` pattern, in key order.
    pub(crate) fn gets(&self, pattern: &str) -> Vec<(&str, &str)> {
        // A pattern confd's clean keys cannot match (trailing or double slash,
        // no leading slash) matches nothing, as in confd.
        if !is_clean_key(pattern) {
            return Vec::new();
        }
        self.tree()
            .glob(&self.absolute(pattern))
            .into_iter()
            .map(|(k, v)| (self.relative(k), v))
            .collect()
    }

    /// confd's `getvs`: the values of [`Scope::gets`], sorted (confd sorts the
    /// values, not the keys).
    pub(crate) fn getvs(&self, pattern: &str) -> Vec<&str> {
        let mut values: Vec<&str> = self.gets(pattern).into_iter().map(|(_, v)| v).collect();
        values.sort_unstable();
        values
    }

    /// confd's `ls`: the names of the children of `path` (cleaned as confd
    /// does); a key that is `path` itself lists its own base name, as in confd.
    pub(crate) fn ls(&self, path: &str) -> Vec<String> {
        self.children(path, false)
    }

    /// confd's `lsdir`: the children of `path` that have children of their own.
    pub(crate) fn lsdir(&self, path: &str) -> Vec<String> {
        self.children(path, true)
    }

    fn children(&self, path: &str, dirs_only: bool) -> Vec<String> {
        let cleaned = go_clean(path);
        if !cleaned.starts_with('/') {
            return Vec::new();
        }
        let abs = self.absolute(&cleaned);
        let mut names = if dirs_only {
            self.tree().lsdir(&abs)
        } else {
            self.tree().ls(&abs)
        };
        if !dirs_only && cleaned != "/" && path == cleaned && self.tree().get(&abs).is_some() {
            let own = go_base(&cleaned).to_string();
            if let Err(i) = names.binary_search(&own) {
                names.insert(i, own);
            }
        }
        names
    }

    /// The catalog, or the error explaining that this backend has none.
    pub(crate) fn catalog(&self, what: &str) -> FuncResult<&Catalog> {
        self.view.catalog.as_deref().ok_or_else(|| {
            FuncError(format!(
                "backend {} has no service catalog ({what}() needs consul, kubernetes, rancher, or the file backend with --services-file)",
                self.view.backend
            ))
        })
    }

    /// `services`: the service names, sorted.
    pub(crate) fn services(&self) -> FuncResult<Vec<&str>> {
        Ok(self.catalog("services")?.services())
    }

    /// `service`: the instances of `name` (with `tag`, passing only unless
    /// `passing` is false).
    pub(crate) fn service(
        &self,
        name: &str,
        tag: Option<&str>,
        passing: bool,
    ) -> FuncResult<Vec<&ServiceInstance>> {
        Ok(self.catalog("service")?.service(name, tag, passing))
    }
}

/// confd's `getenv`: the variable, or `default` when it is unset or empty.
pub(crate) fn getenv(name: &str, default: Option<&str>) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => default.unwrap_or("").to_string(),
    }
}

/// confd's `fileExists`.
pub(crate) fn file_exists(path: &str) -> bool {
    std::path::Path::new(path).exists()
}

/// The addresses of `name`, sorted as strings (Go's `sort.Strings`), unique.
pub(crate) fn lookup_ip(name: &str) -> FuncResult<Vec<String>> {
    let addrs = (name, 0u16)
        .to_socket_addrs()
        .map_err(|e| FuncError(format!("cannot resolve `{name}`: {e}")))?;
    let ips: BTreeSet<String> = addrs.map(|a| a.ip().to_string()).collect();
    Ok(ips.into_iter().collect())
}

/// One SRV record, as `lookupSRV` returns them.
pub(crate) struct Srv {
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// `lookupSRV`: the records, sorted as confd sorts them (by
/// target, port, priority and weight printed one after another).
pub(crate) fn lookup_srv(service: &str, proto: &str, name: &str) -> FuncResult<Vec<Srv>> {
    let records =
        crate::dns::lookup_srv(service, proto, name).map_err(|e| FuncError(e.to_string()))?;
    let mut out: Vec<Srv> = records
        .into_iter()
        .map(|r| Srv {
            target: r.target,
            port: r.port,
            priority: r.priority,
            weight: r.weight,
        })
        .collect();
    out.sort_by_cached_key(|s| format!("{}{}{}{}", s.target, s.port, s.priority, s.weight));
    Ok(out)
}

/// `seq`: `start..=end`, empty when `end < start`, bounded by [`MAX_SEQ_LEN`].
pub(crate) fn seq(start: i64, end: i64) -> FuncResult<Vec<i64>> {
    if end >= start && end.abs_diff(start) >= MAX_SEQ_LEN as u64 {
        return Err(FuncError(format!(
            "{start}..{end} has more than {MAX_SEQ_LEN} numbers"
        )));
    }
    Ok((start..=end).collect())
}

/// The host name.
pub(crate) fn hostname() -> FuncResult<String> {
    let name = nix::unistd::gethostname().map_err(|e| FuncError(e.to_string()))?;
    name.into_string()
        .map_err(|_| FuncError::new("the host name is not valid UTF-8"))
}

/// Go's `path.Clean`: shortest equivalent slash-separated path.
pub(crate) fn go_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

/// Go's `path.Base`: the last element, `.` for an empty path, `/` for slashes only.
pub(crate) fn go_base(path: &str) -> &str {
    if path.is_empty() {
        return ".";
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Go's `path.Dir`: everything but the last element, cleaned.
pub(crate) fn go_dir(path: &str) -> String {
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "",
    };
    go_clean(dir)
}

/// Go's `strings.Split`: `sep` empty splits into characters; `""` with a
/// non-empty `sep` is `[""]`.
pub(crate) fn go_split<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    if sep.is_empty() {
        return s
            .char_indices()
            .map(|(i, c)| &s[i..i + c.len_utf8()])
            .collect();
    }
    s.split(sep).collect()
}

/// Go's `strings.Replace(s, old, new, n)`: at most `n` replacements, all when
/// `n < 0`.
pub(crate) fn go_replace(s: &str, old: &str, new: &str, n: i64) -> String {
    if n < 0 {
        return s.replace(old, new);
    }
    s.replacen(old, new, usize::try_from(n).unwrap_or(usize::MAX))
}

/// Go's `strings.ToUpper`: each character mapped on its own, so a character
/// whose upper case is several (`ß`) stays as it is.
pub(crate) fn go_to_upper(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

/// Go's `strings.ToLower`: each character mapped on its own.
pub(crate) fn go_to_lower(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut low = c.to_lowercase();
            match (low.next(), low.next()) {
                (Some(l), None) => l,
                _ => c,
            }
        })
        .collect()
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> FuncResult<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(FuncError(format!(
            "strconv.ParseBool: parsing {s:?}: invalid syntax"
        ))),
    }
}

/// Go's `strconv.Atoi`.
pub(crate) fn atoi(s: &str) -> FuncResult<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FuncError(format!(
            "strconv.Atoi: parsing {s:?}: invalid syntax"
        )));
    }
    s.parse::<i64>()
        .map_err(|_| FuncError(format!("strconv.Atoi: parsing {s:?}: value out of range")))
}

/// Base64 (standard alphabet, padded) of `s`.
pub(crate) fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `s` decoded from base64, as text.
pub(crate) fn base64_decode(s: &str) -> FuncResult<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| FuncError(format!("invalid base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| FuncError::new("the decoded bytes are not UTF-8 text"))
}

/// Integer arithmetic as Go's `int`: wrapping, division truncating toward
/// zero, and division by zero an error (Go's runtime panic, which
/// text/template reports).
pub(crate) fn arith(op: &str, a: i64, b: i64) -> FuncResult<i64> {
    match op {
        "add" => Ok(a.wrapping_add(b)),
        "sub" => Ok(a.wrapping_sub(b)),
        "mul" => Ok(a.wrapping_mul(b)),
        "div" | "mod" if b == 0 => Err(FuncError::new("runtime error: integer divide by zero")),
        "div" => Ok(a.wrapping_div(b)),
        "mod" => Ok(a.wrapping_rem(b)),
        _ => Err(FuncError(format!("unknown operation {op}"))),
    }
}

/// Stable sort by length (equal lengths keep their order), as `sortByLength`
/// and `sortKVByLength` do; `len` is the length of each item.
pub(crate) fn sort_by_len<T>(items: &mut [T], len: impl Fn(&T) -> usize) {
    items.sort_by_key(|t| len(t));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_keys() {
        for k in ["/", "/a", "/a/b"] {
            assert!(is_clean_key(k), "{k}");
        }
        for k in ["", "a", "/a/", "/a//b", "/a/./b", "/a/../b", "//"] {
            assert!(!is_clean_key(k), "{k}");
        }
    }

    #[test]
    fn go_path_semantics() {
        for (input, want_dir, want_base) in [
            ("/a/b", "/a", "b"),
            ("a", ".", "a"),
            ("/a", "/", "a"),
            ("", ".", "."),
            ("/", "/", "/"),
            ("a/b/", "a/b", "b"),
            ("//a//b//", "/a/b", "b"),
            ("a/../b/c", "b", "c"),
            ("../x/y", "../x", "y"),
            ("/../x", "/", "x"),
        ] {
            assert_eq!(go_dir(input), want_dir, "dir {input:?}");
            assert_eq!(go_base(input), want_base, "base {input:?}");
        }
        assert_eq!(go_clean("a/./b/../../.."), "..");
    }

    #[test]
    fn go_strings() {
        assert_eq!(go_split("", ","), [""]);
        assert_eq!(go_split("a,b", ","), ["a", "b"]);
        assert_eq!(go_split("ab", ""), ["a", "b"]);
        assert_eq!(go_split("", ""), Vec::<&str>::new());
        assert_eq!(go_to_upper("straße é"), "STRAßE É");
        assert_eq!(go_to_lower("ÀB"), "àb");
        assert_eq!(go_replace("aaa", "a", "b", 2), "bba");
        assert_eq!(go_replace("aaa", "a", "b", -1), "bbb");
    }

    #[test]
    fn go_numbers() {
        assert_eq!(arith("div", -7, 2), Ok(-3));
        assert_eq!(arith("mod", -7, 2), Ok(-1));
        assert_eq!(arith("div", 7, -2), Ok(-3));
        assert!(arith("div", 1, 0).is_err());
        assert_eq!(atoi("+3"), Ok(3));
        assert_eq!(
            atoi(" 4").unwrap_err().0,
            "strconv.Atoi: parsing \" 4\": invalid syntax"
        );
        assert_eq!(
            parse_bool("yes").unwrap_err().0,
            "strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
    }

    #[test]
    fn sort_is_stable() {
        let mut v = vec!["ccc", "b", "aa", "a", "bb"];
        sort_by_len(&mut v, |s| s.len());
        assert_eq!(v, ["b", "a", "aa", "bb", "ccc"]);
    }

    #[test]
    fn getenv_empty_is_default() {
        std::env::set_var("SIDEKICK_CONFD_EMPTY", "");
        assert_eq!(getenv("SIDEKICK_CONFD_EMPTY", Some("d")), "d");
        assert_eq!(getenv("SIDEKICK_CONFD_UNSET_X", None), "");
    }
}
