//! The data model templates run over: a dynamically typed [`Value`], shaped
//! like the `interface{}` trees (`map[string]interface{}`, `[]interface{}`)
//! that confd hands to Go's text/template.
//!
//! Containers and strings sit behind [`Arc`], so handing a value to a range
//! body, a variable or a function costs a reference-count increment, not a
//! copy.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A host function callable from a template: it receives the evaluated
/// arguments (a piped value comes last) and returns a value or an error
/// message. Every function is variadic; check the argument count yourself.
pub type FuncImpl = dyn Fn(&[Value]) -> Result<Value, String> + Send + Sync;

/// A function as a value, for the `call` builtin (`{{call .F 1 2}}`), either
/// stored in the data or returned by another function.
#[derive(Clone)]
pub struct Function(pub Arc<FuncImpl>);

impl Function {
    /// Wraps a closure as a function value.
    pub fn new(f: impl Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static) -> Self {
        Function(Arc::new(f))
    }
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Function")
    }
}

/// A template value.
///
/// Maps are ordered by key ([`BTreeMap`]), which is the order Go uses to
/// range over and print maps.
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// Go's untyped `nil` (a nil `interface{}`): prints `<nil>`, is false.
    #[default]
    Nil,
    /// What a missing map key or an absent dot evaluates to (Go's invalid
    /// `reflect.Value`): prints `<no value>`, is false, and reaches functions
    /// as [`Value::Nil`].
    NoValue,
    /// A boolean.
    Bool(bool),
    /// An integer (Go's `int` on 64-bit platforms).
    Int(i64),
    /// A float (Go's `float64`).
    Float(f64),
    /// A string.
    String(Arc<str>),
    /// A list (Go's `[]interface{}`).
    List(Arc<Vec<Value>>),
    /// A map with string keys (Go's `map[string]interface{}`); `.Key` on a
    /// map looks up `"Key"`.
    Map(Arc<BTreeMap<String, Value>>),
    /// A Go struct (confd's `memkv.KVPair`): fields by name, printed as
    /// `{v1 v2}`. Smaller than a map: one allocation per value.
    Struct(Arc<Struct>),
    /// A function value, for `call`.
    Func(Function),
}

/// A Go struct value: its type's name and fields, and the fields' values.
///
/// The names are the type's (`&'static`), so a value holds only its fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Struct {
    /// The Go type name, as `%T` and error messages print it (`memkv.KVPair`).
    pub type_name: &'static str,
    /// The field names, in declaration order.
    pub names: &'static [&'static str],
    /// One value per name.
    pub values: Box<[Value]>,
}

impl Struct {
    /// The value of field `name`, if the type has it.
    pub fn field(&self, name: &str) -> Option<&Value> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.values.get(i)
    }
}

impl Value {
    /// A list value from anything that yields values.
    pub fn list(items: impl IntoIterator<Item = impl Into<Value>>) -> Value {
        Value::List(Arc::new(items.into_iter().map(Into::into).collect()))
    }

    /// A map value from `(key, value)` pairs.
    pub fn map<K: Into<String>, V: Into<Value>>(pairs: impl IntoIterator<Item = (K, V)>) -> Value {
        Value::Map(Arc::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }

    /// Go's notion of truth used by `if`, `with`, `and`, `or` and `not`:
    /// false, 0, 0.0, "", empty lists and maps, nil and "no value" are false.
    pub fn is_true(&self) -> bool {
        match self {
            Value::Nil | Value::NoValue => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Struct(_) | Value::Func(_) => true,
        }
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The Go type name, as Go's error messages and `%T` print it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil | Value::NoValue => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::String(_) => "string",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
            Value::Struct(s) => s.type_name,
            Value::Func(_) => "func(...interface {}) (interface {}, error)",
        }
    }

    /// [`Value::NoValue`] becomes [`Value::Nil`], as Go does when an invalid
    /// value is passed to a function.
    pub(crate) fn into_arg(self) -> Value {
        match self {
            Value::NoValue => Value::Nil,
            v => v,
        }
    }
}

impl PartialEq for Value {
    /// Structural equality (functions are equal when they are the same
    /// closure). This is for tests and hosts; the template `eq` builtin
    /// follows Go's stricter rules.
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) | (Value::NoValue, Value::NoValue) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            (Value::Struct(a), Value::Struct(b)) => a == b,
            (Value::Func(a), Value::Func(b)) => Arc::ptr_eq(&a.0, &b.0),
            _ => false,
        }
    }
}

impl fmt::Display for Value {
    /// Go's `%v` (what `{{.}}` prints).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        crate::format::write_value(&mut s, self);
        f.write_str(&s)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Int(i64::from(v))
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(Arc::from(v))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::String(Arc::from(v))
    }
}

impl From<Arc<str>> for Value {
    fn from(v: Arc<str>) -> Value {
        Value::String(v)
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Value {
        Value::List(Arc::new(v))
    }
}

impl From<BTreeMap<String, Value>> for Value {
    fn from(v: BTreeMap<String, Value>) -> Value {
        Value::Map(Arc::new(v))
    }
}

impl From<Struct> for Value {
    fn from(v: Struct) -> Value {
        Value::Struct(Arc::new(v))
    }
}

impl From<Function> for Value {
    fn from(v: Function) -> Value {
        Value::Func(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Nil, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truth_follows_go() {
        assert!(!Value::Nil.is_true());
        assert!(!Value::NoValue.is_true());
        assert!(!Value::from(0).is_true());
        assert!(Value::from(-1).is_true());
        assert!(!Value::from(0.0).is_true());
        assert!(!Value::from("").is_true());
        assert!(Value::from("x").is_true());
        assert!(!Value::list(Vec::<Value>::new()).is_true());
        assert!(Value::list([1]).is_true());
        assert!(!Value::map(Vec::<(String, Value)>::new()).is_true());
    }

    #[test]
    fn constructors_and_equality() {
        let m = Value::map([("a", 1), ("b", 2)]);
        assert_eq!(m, Value::map([("b", 2), ("a", 1)]));
        assert_eq!(Value::list(["x", "y"]).to_string(), "[x y]");
        assert_eq!(Value::from(Some(3)), Value::Int(3));
        assert_eq!(Value::from(None::<i32>), Value::Nil);
        assert_eq!(Value::NoValue.into_arg(), Value::Nil);
        assert_eq!(m.type_name(), "map[string]interface {}");
    }
}
