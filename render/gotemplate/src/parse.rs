//! The parser: turns tokens into trees of [`Node`]s, one tree per template
//! (the top-level text and each `{{define}}`/`{{block}}`), following Go's
//! `text/template/parse`: the same grammar, the same checks at parse time
//! (undefined functions and variables, `{{break}}` outside `{{range}}`) and
//! the same error messages.

use crate::error::Error;
use crate::format::quote_into;
use crate::funcs::{Builtin, Funcs};
use crate::lex::{lex, Keyword, Kind, Token};
use crate::value::{FuncImpl, Value};
use std::fmt;
use std::sync::Arc;

/// The text a tree was parsed from, for error positions.
#[derive(Debug)]
pub(crate) struct Source {
    /// The name given to the parse (Go's `ParseName`), shown in locations.
    pub name: String,
    pub text: String,
}

impl Source {
    /// Go's `ErrorContext` location: 1-based line, 0-based byte column
    /// (the byte offset on the first line).
    pub fn line_col(&self, pos: usize) -> (usize, usize) {
        let before = &self.text.as_bytes()[..pos.min(self.text.len())];
        let line = 1 + before.iter().filter(|c| **c == b'\n').count();
        let col = match before.iter().rposition(|c| *c == b'\n') {
            Some(nl) => pos - (nl + 1),
            None => pos,
        };
        (line, col)
    }
}

/// One parsed template.
#[derive(Debug)]
pub(crate) struct Tree {
    /// The template's name (what `{{template "name"}}` uses).
    pub name: String,
    pub source: Arc<Source>,
    pub root: Vec<Node>,
}

/// A node of a template's body.
#[derive(Debug)]
pub(crate) enum Node {
    Text(Box<str>),
    Action(Pipe),
    If(Box<Branch>),
    Range(Box<Branch>),
    With(Box<Branch>),
    Template {
        pos: usize,
        name: Box<str>,
        pipe: Option<Pipe>,
    },
    Break,
    Continue,
}

/// The pipeline, body and else-body of `if`, `range` and `with`.
#[derive(Debug)]
pub(crate) struct Branch {
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Option<Vec<Node>>,
}

/// A pipeline: optional variable declarations, then commands joined by `|`.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub pos: usize,
    pub is_assign: bool,
    pub decl: Vec<Box<str>>,
    pub cmds: Vec<Command>,
}

/// One command of a pipeline: a function and its arguments, or a value.
#[derive(Debug)]
pub(crate) struct Command {
    pub pos: usize,
    pub args: Vec<Arg>,
}

/// A function an identifier resolved to at parse time.
#[derive(Clone)]
pub(crate) enum Callable {
    Builtin(Builtin),
    Host(Arc<FuncImpl>),
}

impl fmt::Debug for Callable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Callable::Builtin(b) => write!(f, "Builtin({b:?})"),
            Callable::Host(_) => f.write_str("Host"),
        }
    }
}

/// An operand.
#[derive(Debug)]
pub(crate) enum Arg {
    /// `.A.B`
    Field {
        pos: usize,
        idents: Vec<Box<str>>,
    },
    /// `$x` or `$x.A.B`
    Variable {
        pos: usize,
        name: Box<str>,
        idents: Vec<Box<str>>,
    },
    Dot(usize),
    Nil(usize),
    Bool(usize, bool),
    /// A number or character literal; `text` is how it was written.
    Number {
        pos: usize,
        value: Value,
        text: Box<str>,
    },
    /// A string literal; `text` is how it was written (with quotes).
    String {
        pos: usize,
        value: Value,
        text: Box<str>,
    },
    /// A function name.
    Func {
        pos: usize,
        name: Box<str>,
        func: Callable,
    },
    /// A parenthesized pipeline.
    Pipe(Box<Pipe>),
    /// `(pipeline).A.B` or `func.A`.
    Chain {
        pos: usize,
        node: Box<Arg>,
        fields: Vec<Box<str>>,
    },
}

impl Arg {
    pub fn pos(&self) -> usize {
        match self {
            Arg::Field { pos, .. }
            | Arg::Variable { pos, .. }
            | Arg::Dot(pos)
            | Arg::Nil(pos)
            | Arg::Bool(pos, _)
            | Arg::Number { pos, .. }
            | Arg::String { pos, .. }
            | Arg::Func { pos, .. }
            | Arg::Chain { pos, .. } => *pos,
            Arg::Pipe(p) => p.pos,
        }
    }
}

// Go's `String()` of nodes, used in "executing ... at <...>" context.

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Field { idents, .. } => {
                for i in idents {
                    write!(f, ".{i}")?;
                }
                Ok(())
            }
            Arg::Variable { name, idents, .. } => {
                f.write_str(name)?;
                for i in idents {
                    write!(f, ".{i}")?;
                }
                Ok(())
            }
            Arg::Dot(_) => f.write_str("."),
            Arg::Nil(_) => f.write_str("nil"),
            Arg::Bool(_, b) => write!(f, "{b}"),
            Arg::Number { text, .. } | Arg::String { text, .. } => f.write_str(text),
            Arg::Func { name, .. } => f.write_str(name),
            Arg::Pipe(p) => write!(f, "({p})"),
            Arg::Chain { node, fields, .. } => {
                // A pipe head already prints its parentheses.
                write!(f, "{node}")?;
                for i in fields {
                    write!(f, ".{i}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            for (i, d) in self.decl.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                f.write_str(d)?;
            }
            f.write_str(" := ")?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Go's `%q` of a string.
pub(crate) fn go_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    quote_into(&mut q, s, false);
    q
}

/// How an item list ended.
enum Item {
    Node(Node),
    End,
    Else,
}

struct Parser<'a> {
    src: &'a str,
    source: &'a Arc<Source>,
    toks: Vec<Token>,
    lex_error: Option<String>,
    /// Index of the next token.
    i: usize,
    /// The furthest token read, for the line of an error.
    furthest: usize,
    vars: Vec<Box<str>>,
    range_depth: usize,
    action_line: usize,
    funcs: &'a Funcs,
    /// Trees defined so far in this parse (the main one last).
    trees: Vec<Tree>,
}

/// Parses `text` as template `name`: returns the main tree and the trees of
/// its `{{define}}`s and `{{block}}`s.
pub(crate) fn parse(name: &str, text: &str, funcs: &Funcs) -> Result<Vec<Tree>, Error> {
    let source = Arc::new(Source {
        name: name.to_string(),
        text: text.to_string(),
    });
    let lexed = lex(text);
    let mut p = Parser {
        src: text,
        source: &source,
        toks: lexed.tokens,
        lex_error: lexed.error,
        i: 0,
        furthest: 0,
        vars: vec!["$".into()],
        range_depth: 0,
        action_line: 0,
        funcs,
        trees: Vec::new(),
    };
    let root = p.parse_top()?;
    p.add_tree(name.to_string(), root)?;
    Ok(p.trees)
}

/// Go's `IsEmptyTree`: only whitespace text.
pub(crate) fn is_empty_tree(nodes: &[Node]) -> bool {
    nodes.iter().all(|n| match n {
        Node::Text(t) => t.trim().is_empty(),
        _ => false,
    })
}

type PResult<T> = Result<T, Error>;

impl<'a> Parser<'a> {
    fn tok(&self, i: usize) -> Token {
        // The token list always ends with Eof or Error; reading past it
        // keeps returning that last token.
        self.toks[i.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.tok(self.i);
        self.furthest = self.furthest.max(self.i.min(self.toks.len() - 1));
        if self.i < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn backup(&mut self) {
        self.i -= 1;
    }

    fn peek(&mut self) -> Token {
        self.furthest = self.furthest.max(self.i.min(self.toks.len() - 1));
        self.tok(self.i)
    }

    fn next_non_space(&mut self) -> Token {
        loop {
            let t = self.next();
            if t.kind != Kind::Space {
                return t;
            }
        }
    }

    fn peek_non_space(&mut self) -> Token {
        let t = self.next_non_space();
        self.backup();
        t
    }

    fn text(&self, t: Token) -> &'a str {
        &self.src[t.start..t.end]
    }

    fn errorf(&self, msg: impl Into<String>) -> Error {
        let t = self.tok(self.furthest);
        let (_, column) = self.source.line_col(t.start);
        Error::Parse {
            name: self.source.name.clone(),
            line: t.line,
            column,
            message: msg.into(),
        }
    }

    /// Go's `item.String()`.
    fn describe(&self, t: Token) -> String {
        match t.kind {
            Kind::Eof => "EOF".into(),
            Kind::Error => self.lex_error.clone().unwrap_or_default(),
            Kind::Keyword(_) => format!("<{}>", self.text(t)),
            _ => {
                let s = self.text(t);
                if s.chars().count() > 10 {
                    let short: String = s.chars().take(10).collect();
                    format!("{}...", go_quote(&short))
                } else {
                    go_quote(s)
                }
            }
        }
    }

    fn unexpected(&self, t: Token, context: &str) -> Error {
        if t.kind == Kind::Error {
            let msg = self.lex_error.clone().unwrap_or_default();
            let mut extra = String::new();
            if self.action_line != 0 && self.action_line != t.line {
                extra = format!(
                    " in action started at {}:{}",
                    self.source.name, self.action_line
                );
                if msg.ends_with(" action") {
                    extra = extra[" in action".len()..].to_string();
                }
            }
            return self.errorf(format!("{msg}{extra}"));
        }
        self.errorf(format!("unexpected {} in {context}", self.describe(t)))
    }

    fn expect(&mut self, kind: Kind, context: &str) -> PResult<Token> {
        let t = self.next_non_space();
        if t.kind != kind {
            return Err(self.unexpected(t, context));
        }
        Ok(t)
    }

    fn add_tree(&mut self, name: String, root: Vec<Node>) -> PResult<()> {
        if let Some(i) = self.trees.iter().position(|t| t.name == name) {
            if is_empty_tree(&self.trees[i].root) {
                self.trees[i].root = root;
            } else if !is_empty_tree(&root) {
                return Err(self.errorf(format!(
                    "template: multiple definition of template {}",
                    go_quote(&name)
                )));
            }
            return Ok(());
        }
        self.trees.push(Tree {
            name,
            source: Arc::clone(self.source),
            root,
        });
        Ok(())
    }

    fn parse_top(&mut self) -> PResult<Vec<Node>> {
        let mut root = Vec::new();
        loop {
            let t = self.peek();
            match t.kind {
                Kind::Eof => return Ok(root),
                Kind::LeftDelim => {
                    let save = self.i;
                    self.next();
                    if self.next_non_space().kind == Kind::Keyword(Keyword::Define) {
                        self.action_line = t.line;
                        self.parse_definition()?;
                        self.action_line = 0;
                        continue;
                    }
                    self.i = save;
                }
                _ => {}
            }
            match self.text_or_action()? {
                Item::Node(n) => root.push(n),
                Item::End => return Err(self.errorf("unexpected {{end}}")),
                Item::Else => return Err(self.errorf("unexpected {{else}}")),
            }
        }
    }

    /// Parses the body of a `define` or `block` with its own variables.
    fn sub_tree(&mut self, context: &str) -> PResult<Vec<Node>> {
        let vars = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let depth = std::mem::replace(&mut self.range_depth, 0);
        let (list, end) = self.item_list()?;
        self.vars = vars;
        self.range_depth = depth;
        match end {
            Item::End => Ok(list),
            _ => Err(self.errorf(format!("unexpected {{{{else}}}} in {context}"))),
        }
    }

    fn parse_definition(&mut self) -> PResult<()> {
        const CONTEXT: &str = "define clause";
        let t = self.next_non_space();
        if !matches!(t.kind, Kind::String | Kind::RawString) {
            return Err(self.unexpected(t, CONTEXT));
        }
        let name = unquote(self.text(t)).map_err(|e| self.errorf(e))?;
        self.expect(Kind::RightDelim, CONTEXT)?;
        let root = self.sub_tree(CONTEXT)?;
        self.add_tree(name, root)
    }

    fn item_list(&mut self) -> PResult<(Vec<Node>, Item)> {
        let mut list = Vec::new();
        while self.peek_non_space().kind != Kind::Eof {
            match self.text_or_action()? {
                Item::Node(n) => list.push(n),
                end => return Ok((list, end)),
            }
        }
        Err(self.errorf("unexpected EOF"))
    }

    fn text_or_action(&mut self) -> PResult<Item> {
        let t = self.next_non_space();
        match t.kind {
            Kind::Text => Ok(Item::Node(Node::Text(self.text(t).into()))),
            Kind::LeftDelim => {
                let saved = self.action_line;
                self.action_line = t.line;
                let r = self.action();
                self.action_line = saved;
                r
            }
            _ => Err(self.unexpected(t, "input")),
        }
    }

    fn action(&mut self) -> PResult<Item> {
        let t = self.next_non_space();
        match t.kind {
            Kind::Keyword(Keyword::Block) => return self.block_control(),
            Kind::Keyword(Keyword::Break) => return self.loop_control("{{break}}", Node::Break),
            Kind::Keyword(Keyword::Continue) => {
                return self.loop_control("{{continue}}", Node::Continue)
            }
            Kind::Keyword(Keyword::Else) => return self.else_control(),
            Kind::Keyword(Keyword::End) => {
                self.expect(Kind::RightDelim, "end")?;
                return Ok(Item::End);
            }
            Kind::Keyword(Keyword::If) => return self.if_control(),
            Kind::Keyword(Keyword::Range) => return self.range_control(),
            Kind::Keyword(Keyword::Template) => return self.template_control(),
            Kind::Keyword(Keyword::With) => return self.with_control(),
            _ => {}
        }
        self.backup();
        let pipe = self.pipeline("command", Kind::RightDelim)?;
        Ok(Item::Node(Node::Action(pipe)))
    }

    fn loop_control(&mut self, what: &str, node: Node) -> PResult<Item> {
        let t = self.next_non_space();
        if t.kind != Kind::RightDelim {
            return Err(self.unexpected(t, what));
        }
        if self.range_depth == 0 {
            return Err(self.errorf(format!("{what} outside {{{{range}}}}")));
        }
        Ok(Item::Node(node))
    }

    fn else_control(&mut self) -> PResult<Item> {
        let peek = self.peek_non_space();
        if matches!(
            peek.kind,
            Kind::Keyword(Keyword::If) | Kind::Keyword(Keyword::With)
        ) {
            // `{{else if}}` / `{{else with}}`: the keyword stays pending.
            return Ok(Item::Else);
        }
        self.expect(Kind::RightDelim, "else")?;
        Ok(Item::Else)
    }

    fn parse_control(&mut self, context: &str) -> PResult<Branch> {
        let nvars = self.vars.len();
        let pipe = self.pipeline(context, Kind::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, next) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let mut else_list = None;
        if let Item::Else = next {
            let peek = self.peek();
            if context == "if" && peek.kind == Kind::Keyword(Keyword::If) {
                self.next();
                else_list = Some(vec![self.branch_node("if")?]);
            } else if context == "with" && peek.kind == Kind::Keyword(Keyword::With) {
                self.next();
                else_list = Some(vec![self.branch_node("with")?]);
            } else {
                let (list, next) = self.item_list()?;
                match next {
                    Item::End => {}
                    _ => return Err(self.errorf("expected end; found {{else}}")),
                }
                else_list = Some(list);
            }
        }
        self.vars.truncate(nvars);
        Ok(Branch {
            pipe,
            list,
            else_list,
        })
    }

    fn branch_node(&mut self, context: &str) -> PResult<Node> {
        let b = Box::new(self.parse_control(context)?);
        Ok(match context {
            "if" => Node::If(b),
            "with" => Node::With(b),
            _ => Node::Range(b),
        })
    }

    fn if_control(&mut self) -> PResult<Item> {
        self.branch_node("if").map(Item::Node)
    }

    fn range_control(&mut self) -> PResult<Item> {
        self.branch_node("range").map(Item::Node)
    }

    fn with_control(&mut self) -> PResult<Item> {
        self.branch_node("with").map(Item::Node)
    }

    fn template_name(&mut self, t: Token, context: &str) -> PResult<String> {
        match t.kind {
            Kind::String | Kind::RawString => unquote(self.text(t)).map_err(|e| self.errorf(e)),
            _ => Err(self.unexpected(t, context)),
        }
    }

    fn template_control(&mut self) -> PResult<Item> {
        const CONTEXT: &str = "template clause";
        let t = self.next_non_space();
        let name = self.template_name(t, CONTEXT)?;
        let pipe = if self.next_non_space().kind != Kind::RightDelim {
            self.backup();
            Some(self.pipeline(CONTEXT, Kind::RightDelim)?)
        } else {
            None
        };
        Ok(Item::Node(Node::Template {
            pos: t.start,
            name: name.into(),
            pipe,
        }))
    }

    fn block_control(&mut self) -> PResult<Item> {
        const CONTEXT: &str = "block clause";
        let t = self.next_non_space();
        let name = self.template_name(t, CONTEXT)?;
        let pipe = self.pipeline(CONTEXT, Kind::RightDelim)?;
        let root = self.sub_tree(CONTEXT)?;
        self.add_tree(name.clone(), root)?;
        Ok(Item::Node(Node::Template {
            pos: t.start,
            name: name.into(),
            pipe: Some(pipe),
        }))
    }

    fn pipeline(&mut self, context: &str, end: Kind) -> PResult<Pipe> {
        let pos = self.peek_non_space().start;
        let mut pipe = Pipe {
            pos,
            is_assign: false,
            decl: Vec::new(),
            cmds: Vec::new(),
        };
        'decls: loop {
            let before = self.i;
            let v = self.peek_non_space();
            if v.kind != Kind::Variable {
                break;
            }
            self.next_non_space();
            let next = self.peek_non_space();
            match next.kind {
                Kind::Assign | Kind::Declare => {
                    pipe.is_assign = next.kind == Kind::Assign;
                    self.next_non_space();
                    pipe.decl.push(self.text(v).into());
                    self.vars.push(self.text(v).into());
                    break;
                }
                Kind::Char if self.text(next) == "," => {
                    self.next_non_space();
                    pipe.decl.push(self.text(v).into());
                    self.vars.push(self.text(v).into());
                    if context == "range" && pipe.decl.len() < 2 {
                        match self.peek_non_space().kind {
                            Kind::Variable | Kind::RightDelim | Kind::RightParen => continue 'decls,
                            _ => return Err(self.errorf("range can only initialize variables")),
                        }
                    }
                    return Err(self.errorf(format!("too many declarations in {context}")));
                }
                _ => {
                    self.i = before;
                    break;
                }
            }
        }
        loop {
            let t = self.next_non_space();
            if t.kind == end {
                if pipe.cmds.is_empty() {
                    return Err(self.errorf(format!("missing value for {context}")));
                }
                for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
                    if matches!(
                        c.args[0],
                        Arg::Bool(..)
                            | Arg::Dot(_)
                            | Arg::Nil(_)
                            | Arg::Number { .. }
                            | Arg::String { .. }
                    ) {
                        return Err(self.errorf(format!(
                            "non executable command in pipeline stage {}",
                            i + 1
                        )));
                    }
                }
                return Ok(pipe);
            }
            match t.kind {
                Kind::Bool
                | Kind::CharConstant
                | Kind::Dot
                | Kind::Field
                | Kind::Identifier
                | Kind::Number
                | Kind::Nil
                | Kind::RawString
                | Kind::String
                | Kind::Variable
                | Kind::LeftParen => {
                    self.backup();
                    let cmd = self.command()?;
                    pipe.cmds.push(cmd);
                }
                _ => return Err(self.unexpected(t, context)),
            }
        }
    }

    fn command(&mut self) -> PResult<Command> {
        let pos = self.peek_non_space().start;
        let mut args = Vec::new();
        loop {
            self.peek_non_space();
            if let Some(op) = self.operand()? {
                args.push(op);
            }
            let t = self.next();
            match t.kind {
                Kind::Space => continue,
                Kind::RightDelim | Kind::RightParen => self.backup(),
                Kind::Pipe => {}
                _ => return Err(self.unexpected(t, "operand")),
            }
            break;
        }
        if args.is_empty() {
            return Err(self.errorf("empty command"));
        }
        Ok(Command { pos, args })
    }

    fn operand(&mut self) -> PResult<Option<Arg>> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        if self.peek().kind != Kind::Field {
            return Ok(Some(node));
        }
        let pos = self.peek().start;
        let mut fields: Vec<Box<str>> = Vec::new();
        while self.peek().kind == Kind::Field {
            let t = self.next();
            fields.push(self.text(t)[1..].into());
        }
        Ok(Some(match node {
            Arg::Field { mut idents, .. } => {
                idents.extend(fields);
                Arg::Field { pos, idents }
            }
            Arg::Variable {
                name, mut idents, ..
            } => {
                idents.extend(fields);
                Arg::Variable { pos, name, idents }
            }
            Arg::Bool(..) | Arg::String { .. } | Arg::Number { .. } | Arg::Nil(_) | Arg::Dot(_) => {
                return Err(self.errorf(format!(
                    "unexpected . after term {}",
                    go_quote(&node.to_string())
                )))
            }
            node => Arg::Chain {
                pos,
                node: Box::new(node),
                fields,
            },
        }))
    }

    fn term(&mut self) -> PResult<Option<Arg>> {
        let t = self.next_non_space();
        let pos = t.start;
        let text = self.text(t);
        Ok(Some(match t.kind {
            Kind::Identifier => {
                let func = if let Some(f) = self.funcs.get(text) {
                    Callable::Host(Arc::clone(f))
                } else if let Some(b) = Builtin::from_name(text) {
                    Callable::Builtin(b)
                } else {
                    return Err(self.errorf(format!("function {} not defined", go_quote(text))));
                };
                Arg::Func {
                    pos,
                    name: text.into(),
                    func,
                }
            }
            Kind::Dot => Arg::Dot(pos),
            Kind::Nil => Arg::Nil(pos),
            Kind::Variable => {
                if !self.vars.iter().any(|v| &**v == text) {
                    return Err(self.errorf(format!("undefined variable {}", go_quote(text))));
                }
                Arg::Variable {
                    pos,
                    name: text.into(),
                    idents: Vec::new(),
                }
            }
            Kind::Field => Arg::Field {
                pos,
                idents: vec![text[1..].into()],
            },
            Kind::Bool => Arg::Bool(pos, text == "true"),
            Kind::CharConstant | Kind::Number => Arg::Number {
                pos,
                value: self.number(t)?,
                text: text.into(),
            },
            Kind::LeftParen => Arg::Pipe(Box::new(
                self.pipeline("parenthesized pipeline", Kind::RightParen)?,
            )),
            Kind::String | Kind::RawString => Arg::String {
                pos,
                value: Value::from(unquote(text).map_err(|e| self.errorf(e))?),
                text: text.into(),
            },
            _ => {
                self.backup();
                return Ok(None);
            }
        }))
    }

    fn number(&self, t: Token) -> PResult<Value> {
        let text = self.text(t);
        if t.kind == Kind::CharConstant {
            let s = unquote(text)
                .map_err(|_| self.errorf(format!("malformed character constant: {text}")))?;
            let mut chars = s.chars();
            return match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(Value::Int(i64::from(u32::from(c)))),
                _ => Err(self.errorf(format!("malformed character constant: {text}"))),
            };
        }
        parse_number(text).map_err(|e| self.errorf(e))
    }
}

/// Parses a Go number literal the way Go's templates type it: an integer
/// when it has no `.`, `e` or `p` (or is hex), otherwise a float.
pub(crate) fn parse_number(text: &str) -> Result<Value, String> {
    let illegal = || format!("illegal number syntax: {}", go_quote(text));
    if text.ends_with('i') {
        return Err(format!("complex numbers are not supported: {text}"));
    }
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let clean: String = body.chars().filter(|c| *c != '_').collect();
    let lower = clean.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|c| c.is_ascii_digit())
    {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix)) {
        let u = u64::from_str_radix(digits, radix).map_err(|_| format!("{text} overflows int"))?;
        let v = if neg {
            if u > 1u64 << 63 {
                return Err(format!("{text} overflows int"));
            }
            (u as i64).wrapping_neg()
        } else {
            i64::try_from(u).map_err(|_| format!("{text} overflows int"))?
        };
        return Ok(Value::Int(v));
    }
    if radix == 16 {
        return Err(illegal());
    }
    if !clean.contains(['.', 'e', 'E']) {
        return Err(illegal());
    }
    let f: f64 = clean.parse().map_err(|_| illegal())?;
    Ok(Value::Float(if neg { -f } else { f }))
}

/// Go's `strconv.Unquote` for `"..."`, `` `...` `` and `'...'`.
pub(crate) fn unquote(s: &str) -> Result<String, String> {
    let invalid = || "invalid syntax".to_string();
    let b = s.as_bytes();
    if b.len() < 2 || b[0] != b[b.len() - 1] {
        return Err(invalid());
    }
    let quote = b[0];
    let inner = &s[1..s.len() - 1];
    if quote == b'`' {
        return Ok(inner.replace('\r', ""));
    }
    if quote != b'"' && quote != b'\'' {
        return Err(invalid());
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            if c == char::from(quote) || c == '\n' {
                return Err(invalid());
            }
            out.push(c);
            continue;
        }
        let e = chars.next().ok_or_else(invalid)?;
        let hex = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| {
            let mut v: u32 = 0;
            for _ in 0..n {
                let d = chars
                    .next()
                    .and_then(|c| c.to_digit(16))
                    .ok_or_else(invalid)?;
                v = v * 16 + d;
            }
            Ok::<u32, String>(v)
        };
        match e {
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            '\\' => out.push('\\'),
            '\'' if quote == b'\'' => out.push('\''),
            '"' if quote == b'"' => out.push('"'),
            'x' => {
                let v = hex(&mut chars, 2)?;
                // A byte escape; only ASCII is representable in a Rust string.
                out.push(char::from_u32(v).filter(|_| v < 0x80).ok_or_else(invalid)?);
            }
            'u' => {
                let v = hex(&mut chars, 4)?;
                out.push(char::from_u32(v).ok_or_else(invalid)?);
            }
            'U' => {
                let v = hex(&mut chars, 8)?;
                out.push(char::from_u32(v).ok_or_else(invalid)?);
            }
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    let d = chars
                        .next()
                        .and_then(|c| c.to_digit(8))
                        .ok_or_else(invalid)?;
                    v = v * 8 + d;
                }
                out.push(char::from_u32(v).filter(|_| v < 0x80).ok_or_else(invalid)?);
            }
            _ => return Err(invalid()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        match parse("t", text, &Funcs::new()) {
            Ok(_) => panic!("expected a parse error for {text:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn pipe_string(text: &str) -> String {
        let trees = parse("t", text, &Funcs::new()).unwrap();
        match &trees.last().unwrap().root[0] {
            Node::Action(p) => p.to_string(),
            n => panic!("not an action: {n:?}"),
        }
    }

    #[test]
    fn node_strings_follow_go() {
        assert_eq!(pipe_string("{{.A.B}}"), ".A.B");
        assert_eq!(
            pipe_string("{{$x := .A | printf \"%d\" 1}}"),
            "$x := .A | printf \"%d\" 1"
        );
        assert_eq!(pipe_string("{{(index . 1).X}}"), "(index . 1).X");
        assert_eq!(pipe_string("{{$.A.B}}"), "$.A.B");
        assert_eq!(
            pipe_string("{{print `raw` 'c' 0x1F nil true}}"),
            "print `raw` 'c' 0x1F nil true"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("42"), Ok(Value::Int(42)));
        assert_eq!(parse_number("-42"), Ok(Value::Int(-42)));
        assert_eq!(parse_number("0x1F"), Ok(Value::Int(31)));
        assert_eq!(parse_number("0o17"), Ok(Value::Int(15)));
        assert_eq!(parse_number("017"), Ok(Value::Int(15)));
        assert_eq!(parse_number("0b101"), Ok(Value::Int(5)));
        assert_eq!(parse_number("1_000_000"), Ok(Value::Int(1_000_000)));
        assert_eq!(parse_number("1.5"), Ok(Value::Float(1.5)));
        assert_eq!(parse_number("1e3"), Ok(Value::Float(1000.0)));
        assert_eq!(parse_number(".5"), Ok(Value::Float(0.5)));
        assert_eq!(
            parse_number("-9223372036854775808"),
            Ok(Value::Int(i64::MIN))
        );
        assert_eq!(
            parse_number("9223372036854775808"),
            Err("9223372036854775808 overflows int".into())
        );
        assert_eq!(
            parse_number("1.2.3"),
            Err("illegal number syntax: \"1.2.3\"".into())
        );
        assert_eq!(
            parse_number("0x"),
            Err("illegal number syntax: \"0x\"".into())
        );
    }

    #[test]
    fn strings() {
        assert_eq!(
            unquote(r#""a\tb\n\"q\" \x41\101\u00e9\U0001F600""#).unwrap(),
            "a\tb\n\"q\" AAé😀"
        );
        assert_eq!(unquote("`a\\n\r`").unwrap(), "a\\n");
        assert_eq!(unquote(r"'\''").unwrap(), "'");
        assert!(unquote(r#""\q""#).is_err());
        assert!(unquote(r#""\'""#).is_err());
    }

    #[test]
    fn parse_errors_follow_go() {
        assert_eq!(
            parse_err("{{foo}}"),
            "template: t:1: function \"foo\" not defined"
        );
        assert_eq!(
            parse_err("{{$x}}"),
            "template: t:1: undefined variable \"$x\""
        );
        assert_eq!(parse_err("{{if .X}}a"), "template: t:1: unexpected EOF");
        assert_eq!(parse_err("a{{end}}"), "template: t:1: unexpected {{end}}");
        assert_eq!(parse_err("{{else}}"), "template: t:1: unexpected {{else}}");
        assert_eq!(
            parse_err("{{}}"),
            "template: t:1: missing value for command"
        );
        assert_eq!(
            parse_err("{{if}}{{end}}"),
            "template: t:1: missing value for if"
        );
        assert_eq!(parse_err("\n\n{{.X"), "template: t:3: unclosed action");
        assert_eq!(
            parse_err("{{.X\n\n"),
            "template: t:3: unclosed action started at t:1"
        );
        assert_eq!(
            parse_err("{{break}}"),
            "template: t:1: {{break}} outside {{range}}"
        );
        assert_eq!(
            parse_err("{{range .}}{{else}}{{continue}}{{end}}"),
            "template: t:1: {{continue}} outside {{range}}"
        );
        assert_eq!(
            parse_err("{{range .}}{{break 1}}{{end}}"),
            "template: t:1: unexpected \"1\" in {{break}}"
        );
        assert_eq!(
            parse_err("{{3 | 4}}"),
            "template: t:1: non executable command in pipeline stage 2"
        );
        assert_eq!(
            parse_err("{{\"x\".Y}}"),
            "template: t:1: unexpected . after term \"\\\"x\\\"\""
        );
        assert_eq!(
            parse_err("{{template .X}}"),
            "template: t:1: unexpected \".X\" in template clause"
        );
        assert_eq!(
            parse_err("{{define \"a\"}}{{end}}{{define \"b\"}}"),
            "template: t:1: unexpected EOF"
        );
        assert_eq!(
            parse_err("{{define \"a\"}}x{{end}}{{define \"a\"}}y{{end}}"),
            "template: t:1: template: multiple definition of template \"a\""
        );
        assert_eq!(
            parse_err("{{if .X}}{{else}}{{else}}{{end}}"),
            "template: t:1: expected end; found {{else}}"
        );
        assert_eq!(
            parse_err("{{range $i, $j, $k := .}}{{end}}"),
            "template: t:1: too many declarations in range"
        );
        assert_eq!(
            parse_err("{{with $i, $j := .}}{{end}}"),
            "template: t:1: too many declarations in with"
        );
        assert_eq!(
            parse_err("{{.X 3 4 +}}"),
            "template: t:1: bad number syntax: \"+\""
        );
        assert_eq!(
            parse_err("{{if 1}}{{define \"x\"}}{{end}}{{end}}"),
            "template: t:1: unexpected <define> in command"
        );
        assert_eq!(parse_err("{{(1}}"), "template: t:1: unclosed left paren");
        assert_eq!(
            parse_err("{{printf \"%d\" 1)}}"),
            "template: t:1: unexpected right paren"
        );
        assert_eq!(
            parse_err("{{12345678901 .X | x}}"),
            "template: t:1: function \"x\" not defined"
        );
        assert_eq!(
            parse_err("{{.X \"aaaaaaaaaaaa\" := }}"),
            "template: t:1: unexpected \":=\" in operand"
        );
        assert_eq!(
            parse_err("{{'ab'}}"),
            "template: t:1: malformed character constant: 'ab'"
        );
    }

    #[test]
    fn variable_scopes_at_parse_time() {
        // A variable declared in an if body is gone after its end.
        assert_eq!(
            parse_err("{{if true}}{{$x := 1}}{{end}}{{$x}}"),
            "template: t:1: undefined variable \"$x\""
        );
        // Declared in the pipeline: visible in the else branch too.
        assert!(parse("t", "{{with $x := 1}}{{else}}{{$x}}{{end}}", &Funcs::new()).is_ok());
        // Defines start with only `$`.
        assert_eq!(
            parse_err("{{$x := 1}}{{define \"a\"}}{{$x}}{{end}}"),
            "template: t:1: undefined variable \"$x\""
        );
    }

    #[test]
    fn positions() {
        let s = Source {
            name: "t".into(),
            text: "ab\ncd{{.X}}".into(),
        };
        assert_eq!(s.line_col(1), (1, 1));
        assert_eq!(s.line_col(5), (2, 2));
    }
}
