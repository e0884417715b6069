//! A read-only syntax tree of a template, for tools that translate Go
//! templates into another language (sidekick's `convert`). Trimming
//! (`{{-`/`-}}`) is already applied to the text and comments are gone, as
//! after Go's parse; every action carries its 1-based line.

use crate::parse::{self, Arg, Source};
use crate::{Error, Funcs, Value};

/// One template: the main text or a `define`d one.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Its name (the parse name, or the `define`d name).
    pub name: String,
    /// Its body.
    pub body: Vec<Node>,
}

/// A node of a template's body.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Literal text.
    Text(String),
    /// `{{pipeline}}`, which prints unless it declares or assigns variables.
    Action {
        /// Line of the action.
        line: usize,
        /// The pipeline.
        pipe: Pipe,
    },
    /// `{{if}}`, `{{range}}` or `{{with}}`.
    Branch {
        /// Which one.
        kind: BranchKind,
        /// Line of the action.
        line: usize,
        /// The condition or the ranged-over value.
        pipe: Pipe,
        /// The body.
        body: Vec<Node>,
        /// The `{{else}}` body; an `{{else if}}` is a single `Branch` here.
        else_body: Option<Vec<Node>>,
    },
    /// `{{template "name" pipeline}}`.
    Template {
        /// Line of the action.
        line: usize,
        /// The template called.
        name: String,
        /// Its dot.
        pipe: Option<Pipe>,
    },
    /// `{{break}}`.
    Break,
    /// `{{continue}}`.
    Continue,
}

/// Which branching action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchKind {
    /// `{{if}}`.
    If,
    /// `{{range}}`.
    Range,
    /// `{{with}}`.
    With,
}

/// A pipeline: declared (`$x :=`) or assigned (`$x =`) variables, then
/// commands joined by `|`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipe {
    /// The variables, with their `$`.
    pub decl: Vec<String>,
    /// `=` rather than `:=`.
    pub is_assign: bool,
    /// The commands; each one's result is the last argument of the next.
    pub cmds: Vec<Command>,
}

/// One command: a function and its arguments, or a single operand.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The operands, the function first when there is one.
    pub args: Vec<Operand>,
}

/// An operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// `.A.B` (no names: `.`).
    Field(Vec<String>),
    /// `$x.A.B`; the name has its `$`.
    Variable {
        /// `$x` or `$`.
        name: String,
        /// The fields after it.
        fields: Vec<String>,
    },
    /// `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// A number or character constant, as written.
    Number(String),
    /// A string constant's value.
    String(String),
    /// A function's name.
    Func(String),
    /// A parenthesized pipeline.
    Pipe(Box<Pipe>),
    /// `(pipeline).A` or `func.A`.
    Chain {
        /// What the fields are taken from.
        operand: Box<Operand>,
        /// The fields.
        fields: Vec<String>,
    },
}

/// Parses `text` as Go does, knowing the host functions `funcs` by name
/// only, into the main template (first) and the `define`d ones.
pub fn parse(name: &str, text: &str, funcs: &[&str]) -> Result<Vec<Template>, Error> {
    let mut known = Funcs::new();
    for f in funcs {
        known.insert(*f, |_: &[Value]| Ok(Value::Nil));
    }
    let trees = parse::parse(name, text, &known)?;
    let mut out: Vec<Template> = trees
        .iter()
        .map(|t| Template {
            name: t.name.clone(),
            body: nodes(&t.source, &t.root),
        })
        .collect();
    // The main template first.
    out.sort_by_key(|t| t.name != name);
    Ok(out)
}

fn nodes(src: &Source, list: &[parse::Node]) -> Vec<Node> {
    list.iter().map(|n| node(src, n)).collect()
}

fn node(src: &Source, n: &parse::Node) -> Node {
    let line = |pos: usize| src.line_col(pos).0;
    match n {
        parse::Node::Text(t) => Node::Text(t.to_string()),
        parse::Node::Action(p) => Node::Action {
            line: line(p.pos),
            pipe: pipe(p),
        },
        parse::Node::If(b) | parse::Node::Range(b) | parse::Node::With(b) => Node::Branch {
            kind: match n {
                parse::Node::If(_) => BranchKind::If,
                parse::Node::Range(_) => BranchKind::Range,
                _ => BranchKind::With,
            },
            line: line(b.pipe.pos),
            pipe: pipe(&b.pipe),
            body: nodes(src, &b.list),
            else_body: b.else_list.as_ref().map(|l| nodes(src, l)),
        },
        parse::Node::Template { pos, name, pipe: p } => Node::Template {
            line: line(*pos),
            name: name.to_string(),
            pipe: p.as_ref().map(pipe),
        },
        parse::Node::Break => Node::Break,
        parse::Node::Continue => Node::Continue,
    }
}

fn pipe(p: &parse::Pipe) -> Pipe {
    Pipe {
        decl: p.decl.iter().map(|d| d.to_string()).collect(),
        is_assign: p.is_assign,
        cmds: p
            .cmds
            .iter()
            .map(|c| Command {
                args: c.args.iter().map(operand).collect(),
            })
            .collect(),
    }
}

fn strings(v: &[Box<str>]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn operand(a: &Arg) -> Operand {
    match a {
        Arg::Field { idents, .. } => Operand::Field(strings(idents)),
        Arg::Variable { name, idents, .. } => Operand::Variable {
            name: name.to_string(),
            fields: strings(idents),
        },
        Arg::Dot(_) => Operand::Field(Vec::new()),
        Arg::Nil(_) => Operand::Nil,
        Arg::Bool(_, b) => Operand::Bool(*b),
        Arg::Number { text, .. } => Operand::Number(text.to_string()),
        Arg::String { value, .. } => Operand::String(value.as_str().unwrap_or("").to_string()),
        Arg::Func { name, .. } => Operand::Func(name.to_string()),
        Arg::Pipe(p) => Operand::Pipe(Box::new(pipe(p))),
        Arg::Chain { node, fields, .. } => Operand::Chain {
            operand: Box::new(operand(node)),
            fields: strings(fields),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_of_a_confd_template() {
        let t = parse(
            "t",
            "a\n{{- range $i, $kv := gets \"/u/*\"}}{{$kv.Key}}{{else}}none{{end}}\n{{define \"x\"}}X{{end}}",
            &["gets"],
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "t");
        let Node::Branch {
            kind,
            line,
            pipe,
            body,
            else_body,
        } = &t[0].body[1]
        else {
            panic!("{:?}", t[0].body)
        };
        assert_eq!((*kind, *line), (BranchKind::Range, 2));
        assert_eq!(pipe.decl, ["$i", "$kv"]);
        assert_eq!(
            pipe.cmds[0].args,
            [Operand::Func("gets".into()), Operand::String("/u/*".into())]
        );
        assert_eq!(body.len(), 1);
        assert_eq!(else_body.as_ref().unwrap()[0], Node::Text("none".into()));
        assert_eq!(t[0].body[0], Node::Text("a".into()));
        assert!(parse("t", "{{nosuch}}", &[]).is_err());
    }
}
