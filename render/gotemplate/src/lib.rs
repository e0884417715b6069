//! Go's `text/template` language in pure Rust, for rendering confd-style
//! templates without a Go runtime.
//!
//! The language is Go's (pkg.go.dev/text/template): actions in `{{ }}`
//! with `{{-`/`-}}` trimming and `{{/* */}}` comments; pipelines with `|`
//! and parentheses; variables (`$x := ...`, `$x = ...`, `$`); `if`/`else
//! if`/`else`, `range` (lists, maps in key order, integers; `else`, `break`,
//! `continue`), `with`/`else with`; `define`, `template` and `block`; and the
//! builtins `and or not eq ne lt le gt ge len index slice print printf
//! println html js urlquery call`. Output and error messages follow Go: fmt's
//! `%v` printing (`[a b]`, `map[k:v]`, `1e+06`, `<nil>`, `<no value>`),
//! `printf` verbs, and errors like
//! `template: t:1:2: executing "t" at <.Foo.Bar>: ...`.
//!
//! Data is a [`Value`] tree; `.Key` on a map looks the key up. The host adds
//! functions through [`Funcs`] (confd's `getv`, `ls`, ... live outside this
//! crate); functions are checked when a template is parsed, as in Go.
//!
//! ```
//! use gotemplate::{Funcs, Template, Value};
//!
//! let funcs = Funcs::new().with("upper", |args: &[Value]| match args {
//!     [Value::String(s)] => Ok(Value::from(s.to_uppercase())),
//!     _ => Err("upper wants one string".to_string()),
//! });
//! let t = Template::parse_with("hosts", "{{range .}}{{.name | upper}}={{.ip}}\n{{end}}", funcs)?;
//! let data = Value::list([
//!     Value::map([("name", "a"), ("ip", "10.0.0.1")]),
//!     Value::map([("name", "b"), ("ip", "10.0.0.2")]),
//! ]);
//! assert_eq!(t.execute(&data)?, "A=10.0.0.1\nB=10.0.0.2\n");
//! # Ok::<(), gotemplate::Error>(())
//! ```
//!
//! Not implemented: custom delimiters, complex numbers, methods and struct
//! fields (data is maps and lists only), the `missingkey` option (a missing
//! key is always `<no value>`), and `%x`/`%b` of floats.

#![warn(missing_docs)]

pub mod ast;
mod error;
mod exec;
mod format;
mod funcs;
mod lex;
mod parse;
mod value;

#[cfg(test)]
mod tests;

pub use error::Error;
pub use funcs::Funcs;
pub use value::{FuncImpl, Function, Struct, Value};

/// Bounds on one render: what a runaway template (a loop over a huge range,
/// say) may cost before it is stopped.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest output, in bytes.
    pub max_bytes: usize,
    /// When to give up, if ever.
    pub deadline: Option<std::time::Instant>,
}

impl Default for Limits {
    /// No bounds.
    fn default() -> Limits {
        Limits {
            max_bytes: usize::MAX,
            deadline: None,
        }
    }
}

use parse::{is_empty_tree, Tree};
use std::collections::HashMap;
use std::sync::Arc;

/// A set of parsed templates sharing one function map: a main template and
/// the templates it (or text added later) defines.
///
/// Cheap to clone (trees are shared) and `Send + Sync`, so one parse can
/// serve many renders.
#[derive(Clone, Debug)]
pub struct Template {
    name: String,
    trees: HashMap<String, Arc<Tree>>,
    funcs: Funcs,
}

impl Template {
    /// An empty set whose main template will be `name`; parse text into it
    /// with [`Template::add`].
    pub fn new(name: impl Into<String>, funcs: Funcs) -> Template {
        Template {
            name: name.into(),
            trees: HashMap::new(),
            funcs,
        }
    }

    /// Parses `text` as template `name`, with only the builtin functions.
    pub fn parse(name: &str, text: &str) -> Result<Template, Error> {
        Template::parse_with(name, text, Funcs::new())
    }

    /// Parses `text` as template `name`, with `funcs` besides the builtins.
    pub fn parse_with(name: &str, text: &str, funcs: Funcs) -> Result<Template, Error> {
        let mut t = Template::new(name, funcs);
        t.add(name, text)?;
        Ok(t)
    }

    /// Parses `text` as template `name` into this set, with the set's
    /// functions, so `{{template "name"}}` works across texts (Go's
    /// `t.New(name).Parse(text)`). The `define`s in `text` are added too. A
    /// template with a non-empty body replaces one of the same name; an empty
    /// body (only space and defines) does not.
    pub fn add(&mut self, name: &str, text: &str) -> Result<(), Error> {
        let trees = parse::parse(name, text, &self.funcs)?;
        for tree in trees {
            if let Some(old) = self.trees.get(&tree.name) {
                if is_empty_tree(&tree.root) && !is_empty_tree(&old.root) {
                    continue;
                }
            }
            self.trees.insert(tree.name.clone(), Arc::new(tree));
        }
        Ok(())
    }

    /// The main template's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a template called `name` is in the set.
    pub fn has(&self, name: &str) -> bool {
        self.trees.contains_key(name)
    }

    /// The names of all templates in the set, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.trees.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn tree(&self, name: &str) -> Option<&Tree> {
        self.trees.get(name).map(|t| &**t)
    }

    /// Renders the main template with `data` as dot.
    pub fn execute(&self, data: &Value) -> Result<String, Error> {
        self.run(&self.name, data, None, Limits::default())
    }

    /// Renders the main template, appending to `out` (which keeps what was
    /// written before an error).
    pub fn execute_to(&self, out: &mut String, data: &Value) -> Result<(), Error> {
        let buf = std::mem::take(out);
        let mut exec = self.start(&self.name, None, buf)?;
        let r = exec.run(data);
        *out = exec.out;
        r
    }

    /// Renders the main template like [`Template::execute_with`], stopped
    /// with [`Error::Limit`] once its output passes `limits.max_bytes` or
    /// the render passes `limits.deadline`.
    pub fn execute_limited(
        &self,
        data: &Value,
        funcs: Option<&Funcs>,
        limits: Limits,
    ) -> Result<String, Error> {
        self.run(&self.name, data, funcs, limits)
    }

    /// Renders template `name` of the set (Go's `ExecuteTemplate`).
    pub fn execute_template(&self, name: &str, data: &Value) -> Result<String, Error> {
        self.run(name, data, None, Limits::default())
    }

    /// Renders the main template with `funcs` taking precedence over the
    /// functions given at parse time: for functions whose behaviour depends
    /// on the render (a snapshot of keys, say). Names still have to be known
    /// at parse time.
    pub fn execute_with(&self, data: &Value, funcs: &Funcs) -> Result<String, Error> {
        self.run(&self.name, data, Some(funcs), Limits::default())
    }

    fn start<'a>(
        &'a self,
        name: &str,
        extra: Option<&'a Funcs>,
        out: String,
    ) -> Result<exec::Exec<'a>, Error> {
        let tree = self.tree(name).ok_or_else(|| {
            if name == self.name {
                Error::Lookup(format!(
                    "{name}: {} is an incomplete or empty template",
                    parse::go_quote(name)
                ))
            } else {
                Error::Lookup(format!(
                    "no template {} associated with template {}",
                    parse::go_quote(name),
                    parse::go_quote(&self.name)
                ))
            }
        })?;
        Ok(exec::Exec::new(self, tree, extra, out))
    }

    fn run(
        &self,
        name: &str,
        data: &Value,
        extra: Option<&Funcs>,
        limits: Limits,
    ) -> Result<String, Error> {
        let mut exec = self.start(name, extra, String::new())?;
        exec.limits = limits;
        exec.run(data)?;
        Ok(exec.out)
    }
}
