//! Functions: the host's [`Funcs`] map and Go's builtins (`and`, `or`,
//! `not`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `len`, `index`, `slice`,
//! `print`, `printf`, `println`, `html`, `js`, `urlquery`, `call`) with Go's
//! semantics and error messages.

use crate::format::{sprint, sprintf, sprintln};
use crate::value::{FuncImpl, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Host functions by name, callable from templates like builtins (and
/// shadowing a builtin of the same name).
///
/// Functions are resolved when a template is parsed, as in Go: a template
/// naming a function that is neither here nor a builtin fails to parse with
/// `function "foo" not defined`.
#[derive(Clone, Default)]
pub struct Funcs {
    map: HashMap<String, Arc<FuncImpl>>,
}

impl std::fmt::Debug for Funcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.map.keys().collect();
        names.sort();
        f.debug_struct("Funcs").field("names", &names).finish()
    }
}

impl Funcs {
    /// An empty map (templates still have the builtins).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) function `name`.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        f: impl Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.map.insert(name.into(), Arc::new(f));
        self
    }

    /// Builder form of [`Funcs::insert`].
    pub fn with(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.insert(name, f);
        self
    }

    /// The function called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Arc<FuncImpl>> {
        self.map.get(name)
    }

    /// Whether `name` is defined here.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
}

/// Go's builtin functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    And,
    Or,
    Not,
    Len,
    Index,
    Slice,
    Print,
    Printf,
    Println,
    Html,
    Js,
    Urlquery,
    Call,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

const BAD_TYPE: &str = "invalid type for comparison";
const INCOMPATIBLE: &str = "incompatible types for comparison";

impl Builtin {
    pub fn from_name(name: &str) -> Option<Builtin> {
        Some(match name {
            "and" => Builtin::And,
            "or" => Builtin::Or,
            "not" => Builtin::Not,
            "len" => Builtin::Len,
            "index" => Builtin::Index,
            "slice" => Builtin::Slice,
            "print" => Builtin::Print,
            "printf" => Builtin::Printf,
            "println" => Builtin::Println,
            "html" => Builtin::Html,
            "js" => Builtin::Js,
            "urlquery" => Builtin::Urlquery,
            "call" => Builtin::Call,
            "eq" => Builtin::Eq,
            "ne" => Builtin::Ne,
            "lt" => Builtin::Lt,
            "le" => Builtin::Le,
            "gt" => Builtin::Gt,
            "ge" => Builtin::Ge,
            _ => return None,
        })
    }

    /// Go's signature as (fixed arguments, variadic).
    pub fn arity(self) -> (usize, bool) {
        match self {
            Builtin::And | Builtin::Or | Builtin::Index | Builtin::Slice | Builtin::Call => {
                (1, true)
            }
            Builtin::Eq | Builtin::Printf => (1, true),
            Builtin::Print | Builtin::Println | Builtin::Html | Builtin::Js | Builtin::Urlquery => {
                (0, true)
            }
            Builtin::Not | Builtin::Len => (1, false),
            Builtin::Ne | Builtin::Lt | Builtin::Le | Builtin::Gt | Builtin::Ge => (2, false),
        }
    }

    /// Calls the builtin on evaluated arguments (`and`/`or` short-circuit in
    /// the executor; here they see all arguments).
    pub fn call(self, args: &[Value]) -> Result<Value, String> {
        let a = |i: usize| args.get(i).unwrap_or(&Value::Nil);
        Ok(match self {
            Builtin::And => args
                .iter()
                .find(|v| !v.is_true())
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Nil),
            Builtin::Or => args
                .iter()
                .find(|v| v.is_true())
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Nil),
            Builtin::Not => Value::Bool(!a(0).is_true()),
            Builtin::Len => Value::Int(length(a(0))?),
            Builtin::Index => index(a(0), &args[1.min(args.len())..])?,
            Builtin::Slice => slice(a(0), &args[1.min(args.len())..])?,
            Builtin::Print => Value::from(sprint(args)),
            Builtin::Printf => match a(0) {
                Value::String(f) => Value::from(sprintf(f, &args[1..])),
                v => {
                    return Err(format!(
                        "wrong type for value; expected string; got {}",
                        v.type_name()
                    ))
                }
            },
            Builtin::Println => Value::from(sprintln(args)),
            Builtin::Html => Value::from(html_escape(&eval_args(args))),
            Builtin::Js => Value::from(js_escape(&eval_args(args))),
            Builtin::Urlquery => Value::from(query_escape(&eval_args(args))),
            Builtin::Call => match a(0) {
                Value::Func(f) => (f.0)(&args[1..])?,
                Value::Nil | Value::NoValue => return Err("call of nil".into()),
                v => return Err(format!("non-function of type {}", v.type_name())),
            },
            Builtin::Eq => Value::Bool(eq(a(0), &args[1.min(args.len())..])?),
            Builtin::Ne => Value::Bool(!eq(a(0), std::slice::from_ref(a(1)))?),
            Builtin::Lt => Value::Bool(lt(a(0), a(1))?),
            Builtin::Le => Value::Bool(le(a(0), a(1))?),
            Builtin::Gt => Value::Bool(!le(a(0), a(1))?),
            Builtin::Ge => Value::Bool(!lt(a(0), a(1))?),
        })
    }
}

/// Go's comparison kinds.
#[derive(PartialEq, Clone, Copy)]
enum BasicKind {
    Invalid,
    Bool,
    Int,
    Float,
    String,
    Other,
}

fn basic_kind(v: &Value) -> BasicKind {
    match v {
        Value::Nil | Value::NoValue => BasicKind::Invalid,
        Value::Bool(_) => BasicKind::Bool,
        Value::Int(_) => BasicKind::Int,
        Value::Float(_) => BasicKind::Float,
        Value::String(_) => BasicKind::String,
        _ => BasicKind::Other,
    }
}

/// `eq arg1 arg2...`: true if arg1 equals any of the others.
fn eq(arg1: &Value, others: &[Value]) -> Result<bool, String> {
    if others.is_empty() {
        return Err("missing argument for comparison".into());
    }
    let k1 = basic_kind(arg1);
    for arg in others {
        let k2 = basic_kind(arg);
        let truth = if k1 != k2 {
            if k1 != BasicKind::Invalid && k2 != BasicKind::Invalid {
                return Err(INCOMPATIBLE.into());
            }
            false
        } else {
            match (arg1, arg) {
                (Value::Bool(a), Value::Bool(b)) => a == b,
                (Value::Int(a), Value::Int(b)) => a == b,
                (Value::Float(a), Value::Float(b)) => a == b,
                (Value::String(a), Value::String(b)) => a == b,
                _ if k1 == BasicKind::Invalid => true,
                // Structs of the same type compare field by field, as Go's `==`.
                (Value::Struct(a), Value::Struct(b)) if a.type_name == b.type_name => a == b,
                (_, v) => {
                    return Err(format!("non-comparable type {v}: {}", v.type_name()));
                }
            }
        };
        if truth {
            return Ok(true);
        }
    }
    Ok(false)
}

fn lt(a: &Value, b: &Value) -> Result<bool, String> {
    let (k1, k2) = (basic_kind(a), basic_kind(b));
    for k in [k1, k2] {
        if matches!(k, BasicKind::Invalid | BasicKind::Other) {
            return Err(BAD_TYPE.into());
        }
    }
    if k1 != k2 {
        return Err(INCOMPATIBLE.into());
    }
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x < y),
        (Value::Float(x), Value::Float(y)) => Ok(x < y),
        (Value::String(x), Value::String(y)) => Ok(x < y),
        _ => Err(BAD_TYPE.into()),
    }
}

fn le(a: &Value, b: &Value) -> Result<bool, String> {
    if lt(a, b)? {
        return Ok(true);
    }
    eq(a, std::slice::from_ref(b))
}

fn length(v: &Value) -> Result<i64, String> {
    let n = match v {
        Value::String(s) => s.len(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.len(),
        Value::Nil | Value::NoValue => return Err("len of nil pointer".into()),
        v => return Err(format!("len of type {}", v.type_name())),
    };
    Ok(n as i64)
}

/// An integer index within `0..=cap`.
fn index_arg(index: &Value, cap: usize) -> Result<usize, String> {
    match index {
        Value::Int(x) => {
            if *x < 0 || *x as u64 > cap as u64 {
                Err(format!("index out of range: {x}"))
            } else {
                Ok(*x as usize)
            }
        }
        Value::Nil | Value::NoValue => Err("cannot index slice/array with nil".into()),
        v => Err(format!(
            "cannot index slice/array with type {}",
            v.type_name()
        )),
    }
}

/// `index item i j...`: `item[i][j]...`.
fn index(item: &Value, indexes: &[Value]) -> Result<Value, String> {
    if matches!(item, Value::Nil | Value::NoValue) {
        return Err("index of untyped nil".into());
    }
    let mut cur = item.clone();
    for idx in indexes {
        cur = match &cur {
            Value::List(l) => {
                let i = index_arg(idx, l.len())?;
                l.get(i)
                    .cloned()
                    .ok_or_else(|| format!("index out of range: {i}"))?
            }
            Value::String(s) => {
                let i = index_arg(idx, s.len())?;
                Value::Int(i64::from(
                    *s.as_bytes()
                        .get(i)
                        .ok_or_else(|| format!("index out of range: {i}"))?,
                ))
            }
            Value::Map(m) => match idx {
                Value::String(k) => m.get(&**k).cloned().unwrap_or(Value::Nil),
                Value::Nil | Value::NoValue => {
                    return Err("value is nil; should be of type string".into())
                }
                v => {
                    return Err(format!(
                        "value has type {}; should be string",
                        v.type_name()
                    ))
                }
            },
            Value::Nil | Value::NoValue => return Err("index of nil pointer".into()),
            v => return Err(format!("can't index item of type {}", v.type_name())),
        };
    }
    Ok(cur)
}

/// `slice item i j k`: `item[i:j:k]`.
fn slice(item: &Value, indexes: &[Value]) -> Result<Value, String> {
    if matches!(item, Value::Nil | Value::NoValue) {
        return Err("slice of untyped nil".into());
    }
    if indexes.len() > 3 {
        return Err(format!("too many slice indexes: {}", indexes.len()));
    }
    let len = match item {
        Value::String(s) => {
            if indexes.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            s.len()
        }
        Value::List(l) => l.len(),
        v => return Err(format!("can't slice item of type {}", v.type_name())),
    };
    let mut idx = [0, len, len];
    for (i, index) in indexes.iter().enumerate() {
        idx[i] = index_arg(index, len)?;
    }
    if idx[0] > idx[1] {
        return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
    }
    if indexes.len() == 3 && idx[1] > idx[2] {
        return Err(format!("invalid slice index: {} > {}", idx[1], idx[2]));
    }
    Ok(match item {
        Value::String(s) => {
            Value::from(String::from_utf8_lossy(&s.as_bytes()[idx[0]..idx[1]]).into_owned())
        }
        Value::List(l) => Value::from(l[idx[0]..idx[1]].to_vec()),
        _ => Value::Nil,
    })
}

/// The text `html`, `js` and `urlquery` escape: a lone string as is,
/// otherwise the arguments as `print` joins them.
fn eval_args(args: &[Value]) -> std::borrow::Cow<'_, str> {
    if let [Value::String(s)] = args {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(sprint(args))
}

/// Go's `HTMLEscapeString`.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `JSEscapeString`.
pub(crate) fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c if c.is_ascii() || crate::format::is_print(c) => out.push(c),
            c => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
        }
    }
    out
}

/// Go's `url.QueryEscape`.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(b: Builtin, args: &[Value]) -> Result<Value, String> {
        b.call(args)
    }

    #[test]
    fn comparisons() {
        use Builtin::*;
        let t = Value::Bool(true);
        let f = Value::Bool(false);
        assert_eq!(call(Eq, &[1.into(), 1.into()]), Ok(t.clone()));
        assert_eq!(
            call(Eq, &[1.into(), 2.into(), 3.into(), 1.into()]),
            Ok(t.clone())
        );
        assert_eq!(call(Eq, &["a".into(), "b".into()]), Ok(f.clone()));
        assert_eq!(
            call(Eq, &[1.into()]),
            Err("missing argument for comparison".into())
        );
        assert_eq!(call(Eq, &[1.into(), "1".into()]), Err(INCOMPATIBLE.into()));
        assert_eq!(call(Eq, &[1.into(), 1.0.into()]), Err(INCOMPATIBLE.into()));
        assert_eq!(call(Eq, &[Value::Nil, "x".into()]), Ok(f.clone()));
        assert_eq!(call(Eq, &[Value::Nil, Value::Nil]), Ok(t.clone()));
        assert!(call(Eq, &[Value::list([1]), Value::list([1])])
            .unwrap_err()
            .starts_with("non-comparable type"));
        assert_eq!(call(Ne, &[1.into(), 2.into()]), Ok(t.clone()));
        assert_eq!(call(Lt, &[1.into(), 2.into()]), Ok(t.clone()));
        assert_eq!(call(Lt, &["b".into(), "a".into()]), Ok(f.clone()));
        assert_eq!(call(Le, &[2.into(), 2.into()]), Ok(t.clone()));
        assert_eq!(call(Gt, &[1.5.into(), 0.5.into()]), Ok(t.clone()));
        assert_eq!(call(Ge, &[1.into(), 2.into()]), Ok(f.clone()));
        assert_eq!(call(Lt, &[1.into(), 1.5.into()]), Err(INCOMPATIBLE.into()));
        assert_eq!(call(Lt, &[true.into(), false.into()]), Err(BAD_TYPE.into()));
        assert_eq!(call(Lt, &[Value::Nil, 1.into()]), Err(BAD_TYPE.into()));
        assert_eq!(
            call(Gt, &[Value::list([1]), 1.into()]),
            Err(BAD_TYPE.into())
        );
    }

    #[test]
    fn len_index_slice() {
        use Builtin::*;
        assert_eq!(call(Len, &["héllo".into()]), Ok(Value::Int(6)));
        assert_eq!(call(Len, &[Value::list([1, 2, 3])]), Ok(Value::Int(3)));
        assert_eq!(call(Len, &[3.into()]), Err("len of type int".into()));
        let l = Value::list([3, 4, 5]);
        assert_eq!(call(Index, &[l.clone(), 1.into()]), Ok(Value::Int(4)));
        assert_eq!(call(Index, std::slice::from_ref(&l)), Ok(l.clone()));
        assert_eq!(
            call(Index, &[l.clone(), 3.into()]),
            Err("index out of range: 3".into())
        );
        assert_eq!(
            call(Index, &[l.clone(), (-1).into()]),
            Err("index out of range: -1".into())
        );
        assert_eq!(
            call(Index, &[l.clone(), "x".into()]),
            Err("cannot index slice/array with type string".into())
        );
        assert_eq!(call(Index, &["hi".into(), 1.into()]), Ok(Value::Int(105)));
        let m = Value::map([("a", Value::list(["x", "y"]))]);
        assert_eq!(
            call(Index, &[m.clone(), "a".into(), 1.into()]),
            Ok(Value::from("y"))
        );
        assert_eq!(call(Index, &[m.clone(), "zz".into()]), Ok(Value::Nil));
        assert_eq!(
            call(Index, &[m.clone(), 1.into()]),
            Err("value has type int; should be string".into())
        );
        assert_eq!(
            call(Index, &[Value::Nil, 1.into()]),
            Err("index of untyped nil".into())
        );
        assert_eq!(
            call(Index, &[3.into(), 1.into()]),
            Err("can't index item of type int".into())
        );
        assert_eq!(call(Slice, &[l.clone(), 1.into()]), Ok(Value::list([4, 5])));
        assert_eq!(
            call(Slice, &[l.clone(), 1.into(), 2.into()]),
            Ok(Value::list([4]))
        );
        assert_eq!(
            call(Slice, &[l.clone(), 0.into(), 2.into(), 3.into()]),
            Ok(Value::list([3, 4]))
        );
        assert_eq!(
            call(Slice, &["hello".into(), 1.into(), 3.into()]),
            Ok(Value::from("el"))
        );
        assert_eq!(
            call(Slice, &[l.clone(), 2.into(), 1.into()]),
            Err("invalid slice index: 2 > 1".into())
        );
        assert_eq!(
            call(Slice, &[l.clone(), 4.into()]),
            Err("index out of range: 4".into())
        );
        assert_eq!(
            call(Slice, &["abc".into(), 0.into(), 1.into(), 2.into()]),
            Err("cannot 3-index slice a string".into())
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(
            html_escape("<script>alert(\"XSS\");</script>"),
            "&lt;script&gt;alert(&#34;XSS&#34;);&lt;/script&gt;"
        );
        assert_eq!(js_escape("It'd be nice."), "It\\'d be nice.");
        assert_eq!(js_escape("Go \"jump\" \\"), "Go \\\"jump\\\" \\\\");
        assert_eq!(js_escape("<html>&="), "\\u003Chtml\\u003E\\u0026\\u003D");
        assert_eq!(js_escape("a\nb"), "a\\u000Ab");
        assert_eq!(js_escape("今日は"), "今日は");
        assert_eq!(
            query_escape("http://www.example.org/"),
            "http%3A%2F%2Fwww.example.org%2F"
        );
        assert_eq!(query_escape("a b&c"), "a+b%26c");
        assert_eq!(eval_args(&[1.into(), 2.into()]), "1 2");
    }

    #[test]
    fn funcs_map() {
        let f = Funcs::new().with("double", |a: &[Value]| match a {
            [Value::Int(i)] => Ok(Value::Int(i * 2)),
            _ => Err("want one int".into()),
        });
        assert!(f.contains("double"));
        assert!(!f.contains("triple"));
        let d = f.get("double").unwrap();
        assert_eq!(d(&[Value::Int(4)]), Ok(Value::Int(8)));
        assert_eq!(format!("{f:?}"), "Funcs { names: [\"double\"] }");
    }
}
