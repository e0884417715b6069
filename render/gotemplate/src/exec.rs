//! The executor: walks a parsed tree against a data value, writing output
//! into a `String`, with Go's scoping (variables declared in `if`, `with` and
//! `range` bodies end with the body; `$x = v` assigns an outer variable),
//! `break`/`continue`, and Go's execution errors.
//!
//! Values are borrowed while walking (a range body sees its element by
//! reference); evaluating a field clones a [`Value`], which for strings,
//! lists and maps is a reference-count increment.

use crate::error::Error;
use crate::format::write_value;
use crate::funcs::{Builtin, Funcs};
use crate::parse::{go_quote, Arg, Branch, Callable, Command, Node, Pipe, Tree};
use crate::value::{FuncImpl, Value};
use crate::Template;
use std::fmt::Display;
use std::sync::Arc;

/// How deep `{{template}}` calls may nest; Rust's stack is smaller than
/// Go's growable one, so this is far lower than Go's 100,000: a level
/// takes about 0.9 KB of stack in release builds, 3.3 KB in debug builds
/// (measured by `tests::measure_stack_per_level`), so 200 levels fit any
/// thread.
pub(crate) const MAX_DEPTH: usize = 200;

static NO_VALUE: Value = Value::NoValue;

/// The fast path of `{{.A.B}}`, `{{$x.A}}` and `{{.}}`: the printed value
/// found by reference, without cloning it. `None` when the action is anything
/// else or the lookup would fail (the general path then reports the error).
fn lookup<'v>(vars: &'v [(&str, Value)], dot: &'v Value, pipe: &Pipe) -> Option<&'v Value> {
    if !pipe.decl.is_empty() || pipe.cmds.len() != 1 || pipe.cmds[0].args.len() != 1 {
        return None;
    }
    let (mut cur, idents) = match &pipe.cmds[0].args[0] {
        Arg::Field { idents, .. } => (dot, &idents[..]),
        Arg::Dot(_) => (dot, &[][..]),
        Arg::Variable { name, idents, .. } => (
            vars.iter()
                .rev()
                .find(|(n, _)| *n == &**name)
                .map(|(_, v)| v)?,
            &idents[..],
        ),
        _ => return None,
    };
    for name in idents {
        match cur {
            Value::Map(m) => match m.get(&**name) {
                Some(v) => cur = v,
                None => return Some(&NO_VALUE),
            },
            Value::Struct(st) => cur = st.field(name)?,
            Value::NoValue => return Some(&NO_VALUE),
            _ => return None,
        }
    }
    match cur {
        Value::Func(_) => None,
        v => Some(v),
    }
}

/// What a walk asks of the enclosing range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

type R<T> = Result<T, Box<Error>>;

pub(crate) struct Exec<'a> {
    tmpl: &'a Template,
    extra: Option<&'a Funcs>,
    pub out: String,
    vars: Vec<(&'a str, Value)>,
    tree: &'a Tree,
    depth: usize,
    pub limits: crate::Limits,
    /// Nodes walked since the clock was last read.
    ticks: u32,
}

impl<'a> Exec<'a> {
    pub fn new(tmpl: &'a Template, tree: &'a Tree, extra: Option<&'a Funcs>, out: String) -> Self {
        Exec {
            tmpl,
            extra,
            out,
            vars: Vec::with_capacity(8),
            tree,
            depth: 0,
            limits: crate::Limits::default(),
            ticks: 0,
        }
    }

    /// Runs the tree with `data` as dot and `$`.
    pub fn run(&mut self, data: &Value) -> Result<(), Error> {
        self.vars.push(("$", data.clone()));
        let tree = self.tree;
        self.walk_list(data, &tree.root).map(|_| ()).map_err(|e| *e)
    }

    fn error(&self, pos: usize, context: &dyn Display, message: impl Into<String>) -> Box<Error> {
        let (line, column) = self.tree.source.line_col(pos);
        Box::new(Error::Exec {
            name: self.tree.source.name.clone(),
            line,
            column,
            template: self.tree.name.clone(),
            context: context.to_string(),
            message: message.into(),
        })
    }

    /// Stops the render once it passes its [`crate::Limits`]: the output
    /// size after every node, the clock every 1024 nodes.
    fn check_limits(&mut self) -> R<()> {
        if self.out.len() > self.limits.max_bytes {
            return Err(Box::new(Error::Limit {
                reached: Some(self.out.len()),
                message: format!(
                    "the output passed {} bytes; render stopped",
                    self.limits.max_bytes
                ),
            }));
        }
        self.ticks += 1;
        if self.ticks >= 1024 {
            self.ticks = 0;
            if self
                .limits
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
            {
                return Err(Box::new(Error::Limit {
                    reached: None,
                    message: "the render ran past its time limit; render stopped".into(),
                }));
            }
        }
        Ok(())
    }

    fn walk_list(&mut self, dot: &Value, list: &'a [Node]) -> R<Flow> {
        for node in list {
            self.check_limits()?;
            let flow = self.walk(dot, node)?;
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn walk(&mut self, dot: &Value, node: &'a Node) -> R<Flow> {
        match node {
            Node::Text(t) => self.out.push_str(t),
            Node::Action(pipe) => {
                if let Some(v) = lookup(&self.vars, dot, pipe) {
                    write_value(&mut self.out, v);
                    return Ok(Flow::Normal);
                }
                let v = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    if let Value::Func(_) = v {
                        return Err(self.error(
                            pipe.pos,
                            &format_args!("{{{{{pipe}}}}}"),
                            format!("can't print {{{{{pipe}}}}} of type {}", v.type_name()),
                        ));
                    }
                    write_value(&mut self.out, &v);
                }
            }
            Node::If(b) | Node::With(b) => {
                let mark = self.vars.len();
                let v = self.eval_pipeline(dot, &b.pipe)?;
                let flow = if v.is_true() {
                    if matches!(node, Node::With(_)) {
                        self.walk_list(&v, &b.list)?
                    } else {
                        self.walk_list(dot, &b.list)?
                    }
                } else if let Some(e) = &b.else_list {
                    self.walk_list(dot, e)?
                } else {
                    Flow::Normal
                };
                self.vars.truncate(mark);
                return Ok(flow);
            }
            Node::Range(b) => self.walk_range(dot, b)?,
            Node::Template { pos, name, pipe } => self.walk_template(dot, *pos, name, pipe)?,
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    /// One range iteration: sets the range variables, walks the body, pops
    /// what the body declared. Returns false to stop the loop.
    fn iteration(
        &mut self,
        b: &'a Branch,
        mark: usize,
        index: impl FnOnce() -> Value,
        elem: &Value,
    ) -> R<bool> {
        let decl = &b.pipe.decl;
        if b.pipe.is_assign {
            // `range $i, $v = ...` assigns outer variables, index first.
            let mut set = |name: &str, v: Value| {
                if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| *n == name) {
                    slot.1 = v;
                }
            };
            match &decl[..] {
                [v] => set(v, elem.clone()),
                [i, v, ..] => {
                    set(i, index());
                    set(v, elem.clone());
                }
                [] => {}
            }
        } else {
            // Declared variables sit on top of the stack, the element last.
            if !decl.is_empty() {
                self.vars[mark - 1].1 = elem.clone();
            }
            if decl.len() > 1 {
                self.vars[mark - 2].1 = index();
            }
        }
        self.check_limits()?;
        let flow = self.walk_list(elem, &b.list)?;
        self.vars.truncate(mark);
        Ok(flow != Flow::Break)
    }

    fn walk_range(&mut self, dot: &Value, b: &'a Branch) -> R<()> {
        let outer = self.vars.len();
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let mark = self.vars.len();
        let mut ran = false;
        match &val {
            Value::List(items) => {
                for (i, e) in items.iter().enumerate() {
                    ran = true;
                    if !self.iteration(b, mark, || Value::Int(i as i64), e)? {
                        break;
                    }
                }
            }
            Value::Map(m) => {
                for (k, e) in m.iter() {
                    ran = true;
                    if !self.iteration(b, mark, || Value::from(k.as_str()), e)? {
                        break;
                    }
                }
            }
            Value::Int(n) => {
                if b.pipe.decl.len() > 1 {
                    return Err(self.error(
                        b.pipe.pos,
                        &b.pipe,
                        format!("can't use {n} to iterate over more than one variable"),
                    ));
                }
                for i in 0..*n {
                    ran = true;
                    if !self.iteration(b, mark, || Value::Int(i), &Value::Int(i))? {
                        break;
                    }
                }
            }
            Value::Nil | Value::NoValue => {}
            v => {
                return Err(self.error(
                    b.pipe.pos,
                    &b.pipe,
                    format!("range can't iterate over {v}"),
                ))
            }
        }
        if !ran {
            if let Some(e) = &b.else_list {
                self.walk_list(dot, e)?;
            }
        }
        self.vars.truncate(outer);
        Ok(())
    }

    fn walk_template(
        &mut self,
        dot: &Value,
        pos: usize,
        name: &str,
        pipe: &'a Option<Pipe>,
    ) -> R<()> {
        let node = || match pipe {
            Some(p) => format!("{{{{template {} {p}}}}}", go_quote(name)),
            None => format!("{{{{template {}}}}}", go_quote(name)),
        };
        let Some(tree) = self.tmpl.tree(name) else {
            return Err(self.error(
                pos,
                &node(),
                format!("template {} not defined", go_quote(name)),
            ));
        };
        if self.depth >= MAX_DEPTH {
            return Err(self.error(
                pos,
                &node(),
                format!("exceeded maximum template depth ({MAX_DEPTH})"),
            ));
        }
        let new_dot = match pipe {
            Some(p) => self.eval_pipeline(dot, p)?,
            None => Value::NoValue,
        };
        let vars = std::mem::replace(&mut self.vars, vec![("$", new_dot.clone())]);
        let caller = std::mem::replace(&mut self.tree, tree);
        self.depth += 1;
        let r = self.walk_list(&new_dot, &tree.root);
        self.depth -= 1;
        self.tree = caller;
        self.vars = vars;
        r.map(|_| ())
    }

    fn eval_pipeline(&mut self, dot: &Value, pipe: &'a Pipe) -> R<Value> {
        let mut value = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Value::NoValue);
        for name in &pipe.decl {
            if pipe.is_assign {
                match self.vars.iter_mut().rev().find(|(n, _)| *n == &**name) {
                    Some(slot) => slot.1 = value.clone(),
                    None => {
                        return Err(self.error(
                            pipe.pos,
                            pipe,
                            format!("undefined variable: {name}"),
                        ))
                    }
                }
            } else {
                self.vars.push((name, value.clone()));
            }
        }
        Ok(value)
    }

    fn not_a_function(&self, cmd: &Command, fin: &Option<Value>) -> R<()> {
        if cmd.args.len() > 1 || fin.is_some() {
            let first = &cmd.args[0];
            return Err(self.error(
                first.pos(),
                first,
                format!("can't give argument to non-function {first}"),
            ));
        }
        Ok(())
    }

    fn eval_command(&mut self, dot: &Value, cmd: &'a Command, fin: Option<Value>) -> R<Value> {
        let first = &cmd.args[0];
        let has_args = cmd.args.len() > 1 || fin.is_some();
        match first {
            Arg::Field { pos, idents } => {
                if has_args {
                    if let Some(v) = self.method(dot, dot, *pos, idents, cmd, &fin)? {
                        return Ok(v);
                    }
                }
                self.field_chain(dot, *pos, first, idents, has_args)
            }
            Arg::Variable { pos, name, idents } => {
                if idents.is_empty() {
                    self.not_a_function(cmd, &fin)?;
                }
                let v = self.var(*pos, first, name)?.clone();
                if idents.is_empty() {
                    return Ok(v);
                }
                if has_args {
                    if let Some(r) = self.method(dot, &v, *pos, idents, cmd, &fin)? {
                        return Ok(r);
                    }
                }
                self.field_chain(&v, *pos, first, idents, has_args)
            }
            Arg::Chain { pos, node, fields } => {
                if let Arg::Nil(_) = **node {
                    return Err(self.error(
                        *pos,
                        first,
                        format!("indirection through explicit nil in {first}"),
                    ));
                }
                let recv = self.eval_arg(dot, node)?;
                if has_args {
                    if let Some(r) = self.method(dot, &recv, *pos, fields, cmd, &fin)? {
                        return Ok(r);
                    }
                }
                self.field_chain(&recv, *pos, first, fields, has_args)
            }
            Arg::Func { pos, name, func } => {
                self.eval_function(dot, *pos, name, func, cmd, &cmd.args[1..], fin)
            }
            Arg::Pipe(p) => {
                self.not_a_function(cmd, &fin)?;
                self.eval_pipeline(dot, p)
            }
            Arg::Nil(pos) => Err(self.error(*pos, first, "nil is not a command")),
            Arg::Dot(_) | Arg::Bool(..) | Arg::Number { .. } | Arg::String { .. } => {
                self.not_a_function(cmd, &fin)?;
                self.eval_arg(dot, first)
            }
        }
    }

    fn var(&self, pos: usize, node: &Arg, name: &str) -> R<&Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| self.error(pos, node, format!("undefined variable: {name}")))
    }

    /// A method call: `.A.B arg...` where `.A` is a map whose `B` is a
    /// function (how a host gives values methods, such as a time's
    /// `.Format`). `None` when the chain does not end at a function, so the
    /// caller reports the field as Go does.
    fn method(
        &mut self,
        dot: &Value,
        receiver: &Value,
        pos: usize,
        idents: &'a [Box<str>],
        cmd: &'a Command,
        fin: &Option<Value>,
    ) -> R<Option<Value>> {
        let Some((last, path)) = idents.split_last() else {
            return Ok(None);
        };
        let first = &cmd.args[0];
        let recv = self.field_chain(receiver, pos, first, path, false)?;
        let f = match &recv {
            Value::Map(m) => match m.get(&**last) {
                Some(Value::Func(f)) => f.clone(),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let mut argv = Vec::with_capacity(cmd.args.len());
        for a in &cmd.args[1..] {
            argv.push(self.eval_arg(dot, a)?.into_arg());
        }
        if let Some(v) = fin {
            argv.push(v.clone().into_arg());
        }
        (f.0)(&argv).map(Some).map_err(|e| {
            self.error(
                cmd.pos,
                &cmd.to_string(),
                format!("error calling {last}: {e}"),
            )
        })
    }

    /// Looks up `.A.B...` on `receiver`.
    fn field_chain(
        &self,
        receiver: &Value,
        pos: usize,
        node: &Arg,
        idents: &[Box<str>],
        has_args: bool,
    ) -> R<Value> {
        let mut cur = receiver;
        for (i, name) in idents.iter().enumerate() {
            match cur {
                Value::Map(m) => {
                    if has_args && i == idents.len() - 1 {
                        return Err(self.error(
                            pos,
                            node,
                            format!("{name} is not a method but has arguments"),
                        ));
                    }
                    match m.get(&**name) {
                        Some(v) => cur = v,
                        None => return Ok(Value::NoValue),
                    }
                }
                Value::Struct(st) => match st.field(name) {
                    Some(_) if has_args && i == idents.len() - 1 => {
                        return Err(self.error(
                            pos,
                            node,
                            format!("{name} is not a method but has arguments"),
                        ));
                    }
                    Some(v) => cur = v,
                    None => {
                        return Err(self.error(
                            pos,
                            node,
                            format!("can't evaluate field {name} in type {}", st.type_name),
                        ))
                    }
                },
                Value::NoValue => return Ok(Value::NoValue),
                Value::Nil => {
                    return Err(self.error(
                        pos,
                        node,
                        format!("nil pointer evaluating interface {{}}.{name}"),
                    ))
                }
                v => {
                    return Err(self.error(
                        pos,
                        node,
                        format!("can't evaluate field {name} in type {}", v.type_name()),
                    ))
                }
            }
        }
        Ok(cur.clone())
    }

    /// Evaluates an argument of a function or the head of a chain.
    fn eval_arg(&mut self, dot: &Value, arg: &'a Arg) -> R<Value> {
        match arg {
            Arg::Dot(_) => Ok(dot.clone()),
            Arg::Nil(_) => Ok(Value::Nil),
            Arg::Bool(_, b) => Ok(Value::Bool(*b)),
            Arg::Number { value, .. } | Arg::String { value, .. } => Ok(value.clone()),
            Arg::Field { pos, idents } => self.field_chain(dot, *pos, arg, idents, false),
            Arg::Variable { pos, name, idents } => {
                let v = self.var(*pos, arg, name)?;
                if idents.is_empty() {
                    return Ok(v.clone());
                }
                self.field_chain(v, *pos, arg, idents, false)
            }
            Arg::Pipe(p) => self.eval_pipeline(dot, p),
            Arg::Func { pos, name, func } => {
                self.eval_function(dot, *pos, name, func, arg, &[], None)
            }
            Arg::Chain { pos, node, fields } => {
                if let Arg::Nil(_) = **node {
                    return Err(self.error(
                        *pos,
                        arg,
                        format!("indirection through explicit nil in {arg}"),
                    ));
                }
                let recv = self.eval_arg(dot, node)?;
                self.field_chain(&recv, *pos, arg, fields, false)
            }
        }
    }

    /// Calls function `name` with `args` (unevaluated) and the piped `fin`;
    /// `cmd` is the node errors from the call are reported at.
    #[allow(clippy::too_many_arguments)]
    fn eval_function(
        &mut self,
        dot: &Value,
        pos: usize,
        name: &str,
        func: &'a Callable,
        cmd: &dyn CmdNode,
        args: &'a [Arg],
        fin: Option<Value>,
    ) -> R<Value> {
        let host: Option<&'a Arc<FuncImpl>> = match (self.extra.and_then(|f| f.get(name)), func) {
            (Some(f), _) => Some(f),
            (None, Callable::Host(f)) => Some(f),
            (None, Callable::Builtin(_)) => None,
        };
        let n = args.len() + usize::from(fin.is_some());
        let builtin = match (&host, func) {
            (None, Callable::Builtin(b)) => Some(*b),
            _ => None,
        };
        if let Some(b) = builtin {
            let (fixed, variadic) = b.arity();
            if variadic && n < fixed {
                return Err(self.error(
                    pos,
                    &name,
                    format!(
                        "wrong number of args for {name}: want at least {fixed} got {}",
                        args.len()
                    ),
                ));
            }
            if !variadic && n != fixed {
                return Err(self.error(
                    pos,
                    &name,
                    format!("wrong number of args for {name}: want {fixed} got {n}"),
                ));
            }
            if matches!(b, Builtin::And | Builtin::Or) {
                let or = b == Builtin::Or;
                let mut v = Value::NoValue;
                for a in args {
                    v = self.eval_arg(dot, a)?.into_arg();
                    if v.is_true() == or {
                        return Ok(v);
                    }
                }
                if let Some(f) = fin {
                    v = f.into_arg();
                }
                return Ok(v);
            }
        }
        let mut argv = Vec::with_capacity(n);
        for a in args {
            argv.push(self.eval_arg(dot, a)?.into_arg());
        }
        if let Some(f) = fin {
            argv.push(f.into_arg());
        }
        let result = match (&host, builtin) {
            (Some(f), _) => f(&argv),
            (None, Some(b)) => b.call(&argv),
            (None, None) => Err(format!("{} is not a defined function", go_quote(name))),
        };
        result.map_err(|e| {
            self.error(
                cmd.cmd_pos(),
                &cmd.cmd_display(),
                format!("error calling {name}: {e}"),
            )
        })
    }
}

/// A node a function call's errors are reported at: the whole command, or
/// the function name when it is an argument.
trait CmdNode {
    fn cmd_pos(&self) -> usize;
    fn cmd_display(&self) -> String;
}

impl CmdNode for Command {
    fn cmd_pos(&self) -> usize {
        self.pos
    }
    fn cmd_display(&self) -> String {
        self.to_string()
    }
}

impl CmdNode for Arg {
    fn cmd_pos(&self) -> usize {
        self.pos()
    }
    fn cmd_display(&self) -> String {
        self.to_string()
    }
}
