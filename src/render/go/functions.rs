//! confd's function map for the Go engine, called as confd's templates call
//! them (`{{getv "/a" "default"}}`, `{{range gets "/u/*"}}{{.Key}}{{end}}`,
//! `{{add 1 2}}`). Each function checks its arguments as Go's reflection
//! would, then calls the shared meaning in [`crate::render::confd`]. Values
//! come back shaped as confd's: `get`/`gets` give maps with `Key` and
//! `Value`, numbers from `json` are floats (Go's `float64`), lists print as
//! `[a b]`.

use std::collections::BTreeMap;
use std::sync::Arc;

use gotemplate::{Funcs, Struct, Value};
use sidekick_backend::ServiceInstance;

use crate::render::confd::{self, Scope, Slot};

/// Every function name the Go engine knows besides Go's builtins.
pub(crate) const NAMES: &[&str] = &[
    "backend",
    "getv",
    "getvs",
    "get",
    "gets",
    "exists",
    "ls",
    "lsdir",
    "services",
    "service",
    "json",
    "jsonArray",
    "map",
    "base",
    "dir",
    "split",
    "join",
    "replace",
    "contains",
    "toUpper",
    "toLower",
    "trimSuffix",
    "trimPrefix",
    "datetime",
    "getenv",
    "lookupIP",
    "lookupIPV4",
    "lookupIPV6",
    "lookupSRV",
    "fileExists",
    "base64Encode",
    "base64Decode",
    "parseBool",
    "atoi",
    "reverse",
    "sortByLength",
    "sortKVByLength",
    "seq",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "hostname",
];

type R = Result<Value, String>;

/// Go's complaint about an argument of the wrong type.
fn wrong_type(expected: &str, got: &Value) -> String {
    format!(
        "wrong type for value; expected {expected}; got {}",
        got.type_name()
    )
}

/// Go's complaint about the number of arguments (`want` is `"1"` or `"at least 1"`).
fn arity(args: &[Value], min: usize, max: usize) -> Result<(), String> {
    if args.len() < min || args.len() > max {
        let want = if max == usize::MAX {
            format!("at least {min}")
        } else if min == max {
            min.to_string()
        } else {
            format!("{min} to {max}")
        };
        return Err(format!(
            "wrong number of args: want {want} got {}",
            args.len()
        ));
    }
    Ok(())
}

fn string(v: &Value) -> Result<&str, String> {
    v.as_str().ok_or_else(|| wrong_type("string", v))
}

/// An `int` argument: Go converts untyped integer constants; a float with no
/// fraction is taken too (a `json` number), anything else is the wrong type.
fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(*f as i64),
        other => Err(wrong_type("int", other)),
    }
}

fn strings(v: &Value) -> Result<Vec<&str>, String> {
    match v {
        Value::List(items) => items.iter().map(string).collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(wrong_type("[]string", other)),
    }
}

fn list_of_str<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::List(Arc::new(
        items.into_iter().map(|s| Value::from(s.as_ref())).collect(),
    ))
}

/// confd's `memkv.KVPair`: `.Key` and `.Value`, printed as Go prints the
/// struct (`{/key value}`).
pub(crate) fn kv(key: &str, value: &str) -> Value {
    Value::from(Struct {
        type_name: "memkv.KVPair",
        names: &["Key", "Value"],
        values: Box::new([Value::from(key), Value::from(value)]),
    })
}

/// A catalog instance with Go-style field names (`.Address`, `.Port`, ...).
fn instance(i: &ServiceInstance) -> Value {
    let mut m = BTreeMap::new();
    m.insert("ID".to_string(), Value::from(i.id.as_str()));
    m.insert("Name".to_string(), Value::from(i.name.as_str()));
    m.insert("Address".to_string(), Value::from(i.address.as_str()));
    m.insert("Port".to_string(), Value::from(i.port));
    m.insert("Node".to_string(), Value::from(i.node.as_str()));
    m.insert("Tags".to_string(), list_of_str(&i.tags));
    m.insert(
        "Meta".to_string(),
        Value::Map(Arc::new(
            i.meta
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect(),
        )),
    );
    m.insert("Healthy".to_string(), Value::Bool(i.healthy));
    Value::Map(Arc::new(m))
}

/// JSON as Go's `encoding/json` decodes into `interface{}`: numbers are
/// float64, objects `map[string]interface{}`.
fn from_json(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::from(s),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.into_iter().map(from_json).collect()))
        }
        serde_json::Value::Object(m) => Value::Map(Arc::new(
            m.into_iter().map(|(k, v)| (k, from_json(v))).collect(),
        )),
    }
}

fn parse_json(text: &str, object: bool) -> R {
    let parsed: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    match (&parsed, object) {
        (serde_json::Value::Object(_), true) | (serde_json::Value::Array(_), false) => {
            Ok(from_json(parsed))
        }
        // Go's json.Unmarshal of null leaves the map or slice nil.
        (serde_json::Value::Null, _) => Ok(Value::Nil),
        _ => Err(format!(
            "json: cannot unmarshal {} into Go value of type {}",
            match parsed {
                serde_json::Value::Bool(_) => "bool",
                serde_json::Value::Number(_) => "number",
                serde_json::Value::String(_) => "string",
                serde_json::Value::Array(_) => "array",
                _ => "object",
            },
            if object {
                "map[string]interface {}"
            } else {
                "[]interface {}"
            }
        )),
    }
}

/// The functions that read a source's keys or catalog: what `backend NAME`
/// may call on a named source.
const SOURCE_FUNCTIONS: &[&str] = &[
    "getv", "get", "gets", "getvs", "exists", "ls", "lsdir", "services", "service",
];

/// Calls source function `name` (one of [`SOURCE_FUNCTIONS`]) on scope `s`.
fn source_call(name: &str, s: &Scope, a: &[Value]) -> R {
    match name {
        "getv" => {
            arity(a, 1, 2)?;
            let key = string(&a[0])?;
            let default = a.get(1).map(string).transpose()?;
            s.getv(key, default).map(Value::from).map_err(|e| e.0)
        }
        "get" => {
            arity(a, 1, 1)?;
            let (k, v) = s.get(string(&a[0])?).map_err(|e| e.0)?;
            Ok(kv(k, v))
        }
        "gets" => {
            arity(a, 1, 1)?;
            let found = s.gets(string(&a[0])?);
            Ok(Value::List(Arc::new(
                found.into_iter().map(|(k, v)| kv(k, v)).collect(),
            )))
        }
        "getvs" => {
            arity(a, 1, 1)?;
            Ok(list_of_str(s.getvs(string(&a[0])?)))
        }
        "exists" => {
            arity(a, 1, 1)?;
            Ok(Value::Bool(s.exists(string(&a[0])?)))
        }
        "ls" => {
            arity(a, 1, 1)?;
            Ok(list_of_str(s.ls(string(&a[0])?)))
        }
        "lsdir" => {
            arity(a, 1, 1)?;
            Ok(list_of_str(s.lsdir(string(&a[0])?)))
        }
        "services" => {
            arity(a, 0, 0)?;
            Ok(list_of_str(s.services().map_err(|e| e.0)?))
        }
        "service" => {
            // service NAME [TAG [PASSING]]: TAG "" is any tag.
            arity(a, 1, 3)?;
            let name = string(&a[0])?;
            let tag = a.get(1).map(string).transpose()?.filter(|t| !t.is_empty());
            let passing = match a.get(2) {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(other) => return Err(wrong_type("bool", other)),
            };
            let found = s.service(name, tag, passing).map_err(|e| e.0)?;
            Ok(Value::List(Arc::new(
                found.into_iter().map(instance).collect(),
            )))
        }
        other => Err(format!(
            "backend: {other:?} is not a function of a source (one of {})",
            SOURCE_FUNCTIONS.join(", ")
        )),
    }
}

/// The function map; the key and catalog functions read `slot`.
pub(crate) fn funcs(slot: &Slot) -> Funcs {
    let mut f = Funcs::new();
    for &name in SOURCE_FUNCTIONS {
        let slot = Arc::clone(slot);
        f.insert(name, move |a: &[Value]| -> R {
            let scope = confd::current(&slot).map_err(|e| e.0)?;
            source_call(name, &scope, a)
        });
    }
    // `backend NAME FUNCTION ARGS...`: FUNCTION on the named source
    // (`{{backend "secrets" "getv" "/db/password"}}`).
    let source_slot = Arc::clone(slot);
    f.insert("backend", move |a: &[Value]| -> R {
        arity(a, 2, usize::MAX)?;
        let scope = confd::current(&source_slot).map_err(|e| e.0)?;
        let scope = scope.on(Some(string(&a[0])?)).map_err(|e| e.0)?;
        source_call(string(&a[1])?, scope, &a[2..])
    });

    f.insert("json", |a: &[Value]| {
        arity(a, 1, 1)?;
        parse_json(string(&a[0])?, true)
    });
    f.insert("jsonArray", |a: &[Value]| {
        arity(a, 1, 1)?;
        parse_json(string(&a[0])?, false)
    });
    f.insert("map", |a: &[Value]| {
        if a.len() % 2 != 0 {
            return Err("invalid map call".into());
        }
        let mut m = BTreeMap::new();
        for pair in a.chunks(2) {
            let key = pair[0].as_str().ok_or("map keys must be strings")?;
            m.insert(key.to_string(), pair[1].clone());
        }
        Ok(Value::Map(Arc::new(m)))
    });
    f.insert("base", |a: &[Value]| {
        arity(a, 1, 1)?;
        Ok(Value::from(confd::go_base(string(&a[0])?)))
    });
    f.insert("dir", |a: &[Value]| {
        arity(a, 1, 1)?;
        Ok(Value::from(confd::go_dir(string(&a[0])?)))
    });
    f.insert("split", |a: &[Value]| {
        arity(a, 2, 2)?;
        Ok(list_of_str(confd::go_split(string(&a[0])?, string(&a[1])?)))
    });
    f.insert("join", |a: &[Value]| {
        arity(a, 2, 2)?;
        Ok(Value::from(strings(&a[0])?.join(string(&a[1])?)))
    });
    f.insert("replace", |a: &[Value]| {
        arity(a, 4, 4)?;
        Ok(Value::from(confd::go_replace(
            string(&a[0])?,
            string(&a[1])?,
            string(&a[2])?,
            int(&a[3])?,
        )))
    });
    f.insert("contains", |a: &[Value]| {
        arity(a, 2, 2)?;
        Ok(Value::Bool(string(&a[0])?.contains(string(&a[1])?)))
    });
    f.insert("toUpper", |a: &[Value]| {
        arity(a, 1, 1)?;
        Ok(Value::from(confd::go_to_upper(string(&a[0])?)))
    });
    f.insert("toLower", |a: &[Value]| {
        arity(a, 1, 1)?;
        Ok(Value::from(confd::go_to_lower(string(&a[0])?)))
    });
    f.insert("trimSuffix", |a: &[Value]| {
        arity(a, 2, 2)?;
        let (s, suffix) = (string(&a[0])?, string(&a[1])?);
        Ok(Value::from(s.strip_suffix(suffix).unwrap_or(s)))
    });
    f.insert("trimPrefix", |a: &[Value]| {
        arity(a, 2, 2)?;
        let (s, prefix) = (string(&a[0])?, string(&a[1])?);
        Ok(Value::from(s.strip_prefix(prefix).unwrap_or(s)))
    });
    f.insert("datetime", |a: &[Value]| {
        arity(a, 0, 0)?;
        Ok(super::time::now())
    });
    f.insert("getenv", |a: &[Value]| {
        arity(a, 1, usize::MAX)?;
        let default = a.get(1).map(string).transpose()?;
        Ok(Value::from(confd::getenv(string(&a[0])?, default)))
    });
    fn ips(a: &[Value], mark: Option<char>) -> R {
        arity(a, 1, 1)?;
        // confd: a name that does not resolve gives no addresses.
        let found = confd::lookup_ip(string(&a[0])?).unwrap_or_default();
        let kept: Vec<String> = found
            .into_iter()
            .filter(|ip| mark.is_none_or(|m| ip.contains(m)))
            .collect();
        Ok(list_of_str(kept))
    }
    f.insert("lookupIP", |a: &[Value]| ips(a, None));
    f.insert("lookupIPV4", |a: &[Value]| ips(a, Some('.')));
    f.insert("lookupIPV6", |a: &[Value]| ips(a, Some(':')));
    f.insert("lookupSRV", |a: &[Value]| {
        arity(a, 3, 3)?;
        let records =
            confd::lookup_srv(string(&a[0])?, string(&a[1])?, string(&a[2])?).unwrap_or_default();
        Ok(Value::List(Arc::new(
            records
                .into_iter()
                .map(|r| {
                    Value::map([
                        ("Target", Value::from(r.target)),
                        ("Port", Value::from(r.port)),
                        ("Priority", Value::from(r.priority)),
                        ("Weight", Value::from(r.weight)),
                    ])
                })
                .collect(),
        )))
    });
    f.insert("fileExists", |a: &[Value]| {
        arity(a, 1, 1)?;
        Ok(Value::Bool(confd::file_exists(string(&a[0])?)))
    });
    f.insert("base64Encode", |a: &[Value]| {
        arity(a, 1, 1)?;
        Ok(Value::from(confd::base64_encode(string(&a[0])?)))
    });
    f.insert("base64Decode", |a: &[Value]| {
        arity(a, 1, 1)?;
        confd::base64_decode(string(&a[0])?)
            .map(Value::from)
            .map_err(|e| e.0)
    });
    f.insert("parseBool", |a: &[Value]| {
        arity(a, 1, 1)?;
        confd::parse_bool(string(&a[0])?)
            .map(Value::Bool)
            .map_err(|e| e.0)
    });
    f.insert("atoi", |a: &[Value]| {
        arity(a, 1, 1)?;
        confd::atoi(string(&a[0])?).map(Value::Int).map_err(|e| e.0)
    });
    f.insert("reverse", |a: &[Value]| {
        arity(a, 1, 1)?;
        // confd reverses []string and []KVPair and returns anything else as is.
        Ok(match &a[0] {
            Value::List(items) => Value::List(Arc::new(items.iter().rev().cloned().collect())),
            other => other.clone(),
        })
    });
    f.insert("sortByLength", |a: &[Value]| {
        arity(a, 1, 1)?;
        let mut items = strings(&a[0])?;
        confd::sort_by_len(&mut items, |s| s.len());
        Ok(list_of_str(items))
    });
    f.insert("sortKVByLength", |a: &[Value]| {
        arity(a, 1, 1)?;
        let Value::List(items) = &a[0] else {
            return Err(wrong_type("[]memkv.KVPair", &a[0]));
        };
        let mut keyed: Vec<(usize, Value)> = items
            .iter()
            .map(|v| match v {
                Value::Struct(st) => match st.field("Key") {
                    Some(Value::String(k)) => Ok((k.len(), v.clone())),
                    _ => Err(wrong_type("memkv.KVPair", v)),
                },
                other => Err(wrong_type("memkv.KVPair", other)),
            })
            .collect::<Result<_, String>>()?;
        confd::sort_by_len(&mut keyed, |(n, _)| *n);
        Ok(Value::List(Arc::new(
            keyed.into_iter().map(|(_, v)| v).collect(),
        )))
    });
    f.insert("seq", |a: &[Value]| {
        arity(a, 2, 2)?;
        let items = confd::seq(int(&a[0])?, int(&a[1])?).map_err(|e| e.0)?;
        Ok(Value::List(Arc::new(
            items.into_iter().map(Value::Int).collect(),
        )))
    });
    for op in ["add", "sub", "mul", "div", "mod"] {
        f.insert(op, move |a: &[Value]| {
            arity(a, 2, 2)?;
            confd::arith(op, int(&a[0])?, int(&a[1])?)
                .map(Value::Int)
                .map_err(|e| e.0)
        });
    }
    f.insert("hostname", |a: &[Value]| {
        arity(a, 0, 0)?;
        confd::hostname().map(Value::from).map_err(|e| e.0)
    });
    debug_assert!(NAMES.iter().all(|n| f.contains(n)));
    f
}
