//! Go template -> Tera template, for `sidekick convert`: what maps one to one
//! is written in Tera (`{{getv "/a" "d"}}` -> `{{ getv(key="/a", default="d") }}`,
//! `{{range gets "/u/*"}}{{.Value}}{{end}}` -> `{% for item in
//! gets(pattern="/u/*") %}{{ item.value }}{% endfor %}`); an action that does
//! not (`printf`, `{{template}}`, `datetime.Format`, methods) is left as a
//! Tera comment naming its line, for a person to port.

use gotemplate::ast::{self, BranchKind, Node, Operand, Pipe};

use super::functions::NAMES;

/// A converted template and the lines left for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Converted {
    /// The Tera template.
    pub text: String,
    /// 1-based lines of the Go template that were not converted.
    pub unconverted: Vec<usize>,
}

/// Converts the Go template `source` (named `name`, for errors).
pub(crate) fn convert(name: &str, source: &str) -> Result<Converted, gotemplate::Error> {
    let trees = ast::parse(name, source, NAMES)?;
    let mut c = Converter {
        lines: source.lines().collect(),
        out: String::new(),
        unconverted: Vec::new(),
        dots: vec![None],
        fresh: 0,
    };
    if let Some(main) = trees.first() {
        c.nodes(&main.body);
    }
    for t in trees.iter().skip(1) {
        c.comment_text(&format!(
            "sidekick convert: {{{{define {:?}}}}} not converted (Tera has no templates inside a file); port it with an include",
            t.name
        ));
    }
    c.unconverted.sort_unstable();
    c.unconverted.dedup();
    Ok(Converted {
        text: c.out,
        unconverted: c.unconverted,
    })
}

/// An action that has no Tera form.
struct Unmappable;

type R = Result<String, Unmappable>;

struct Converter<'s> {
    lines: Vec<&'s str>,
    out: String,
    unconverted: Vec<usize>,
    /// What `.` is: `None` at the top (confd runs templates with no data).
    dots: Vec<Option<String>>,
    fresh: usize,
}

/// Go field names of sidekick's values, as Tera spells them (`.Key` ->
/// `.key`); other fields (of `json` maps) keep their case.
fn field(name: &str) -> String {
    match name {
        "Key" | "Value" | "Target" | "Port" | "Priority" | "Weight" | "Address" | "Name"
        | "Node" | "Tags" | "Meta" | "Healthy" => name.to_ascii_lowercase(),
        "ID" => "id".to_string(),
        other => other.to_string(),
    }
}

/// A Tera string literal.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// `e`, in parentheses unless it is a name, a literal or a call.
fn atom(e: &str) -> String {
    let simple = e
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
        || (e.starts_with('"') && e.ends_with('"') && !e[1..e.len() - 1].contains('"'))
        || (e.ends_with(')')
            && e.starts_with(|c: char| c.is_ascii_alphabetic())
            && !e.contains(' '));
    if simple {
        e.to_string()
    } else {
        format!("({e})")
    }
}

impl Converter<'_> {
    fn comment_text(&mut self, text: &str) {
        self.out.push_str("{# ");
        self.out.push_str(&text.replace("#}", "# }"));
        self.out.push_str(" #}");
    }

    /// The comment for an action at `line` that is left as it was.
    fn unconverted(&mut self, line: usize) {
        self.unconverted.push(line);
        let src = self
            .lines
            .get(line - 1)
            .map_or("", |l| l.trim())
            .to_string();
        self.comment_text(&format!(
            "sidekick convert: line {line} not converted, port it by hand: {src}"
        ));
    }

    fn nodes(&mut self, nodes: &[Node]) {
        for n in nodes {
            self.node(n);
        }
    }

    fn node(&mut self, n: &Node) {
        match n {
            Node::Text(t) => {
                if t.contains("{{") || t.contains("{%") || t.contains("{#") {
                    self.out.push_str("{% raw %}");
                    self.out.push_str(t);
                    self.out.push_str("{% endraw %}");
                } else if let Some(head) = t.strip_suffix('{') {
                    // A `{` before the next tag would read as `{{` or `{%`.
                    self.out.push_str(head);
                    self.out.push_str("{{ \"{\" }}");
                } else {
                    self.out.push_str(t);
                }
            }
            Node::Action { line, pipe } => match self.action(pipe) {
                Ok(s) => self.out.push_str(&s),
                Err(Unmappable) => self.unconverted(*line),
            },
            Node::Branch {
                kind,
                line,
                pipe,
                body,
                else_body,
            } => self.branch(*kind, *line, pipe, body, else_body.as_deref(), false),
            Node::Template { line, .. } => self.unconverted(*line),
            Node::Break => self.out.push_str("{% break %}"),
            Node::Continue => self.out.push_str("{% continue %}"),
        }
    }

    fn action(&mut self, pipe: &Pipe) -> R {
        let e = self.pipe(pipe)?;
        match pipe.decl.as_slice() {
            [] => Ok(format!("{{{{ {e} }}}}")),
            [var] => {
                let tag = if pipe.is_assign { "set_global" } else { "set" };
                Ok(format!(
                    "{{% {tag} {} = {e} %}}",
                    var.trim_start_matches('$')
                ))
            }
            _ => Err(Unmappable),
        }
    }

    fn branch(
        &mut self,
        kind: BranchKind,
        line: usize,
        pipe: &Pipe,
        body: &[Node],
        else_body: Option<&[Node]>,
        elif: bool,
    ) {
        match kind {
            BranchKind::If => {
                let cond = if pipe.decl.is_empty() {
                    self.pipe(pipe)
                } else {
                    Err(Unmappable)
                };
                let cond = cond.unwrap_or_else(|Unmappable| {
                    self.unconverted(line);
                    "false".to_string()
                });
                let tag = if elif { "elif" } else { "if" };
                self.out.push_str(&format!("{{% {tag} {cond} %}}"));
                self.nodes(body);
                match else_body {
                    Some(
                        [Node::Branch {
                            kind: BranchKind::If,
                            line,
                            pipe,
                            body,
                            else_body,
                        }],
                    ) => {
                        return self.branch(
                            BranchKind::If,
                            *line,
                            pipe,
                            body,
                            else_body.as_deref(),
                            true,
                        );
                    }
                    Some(list) => {
                        self.out.push_str("{% else %}");
                        self.nodes(list);
                    }
                    None => {}
                }
                self.out.push_str("{% endif %}");
            }
            BranchKind::Range => {
                let (var, index) = match pipe.decl.as_slice() {
                    [] => (self.fresh_name(), None),
                    [v] => (v.trim_start_matches('$').to_string(), None),
                    [i, v] => (
                        v.trim_start_matches('$').to_string(),
                        Some(i.trim_start_matches('$').to_string()),
                    ),
                    _ => (self.fresh_name(), None),
                };
                let seq = self.pipe(pipe).unwrap_or_else(|Unmappable| {
                    self.unconverted(line);
                    "[]".to_string()
                });
                self.out
                    .push_str(&format!("{{% for {var} in {} %}}", atom(&seq)));
                if let Some(i) = index {
                    self.out.push_str(&format!("{{% set {i} = loop.index0 %}}"));
                }
                self.dots.push(Some(var));
                self.nodes(body);
                self.dots.pop();
                if let Some(list) = else_body {
                    // Tera's for has no else: the else body runs when the
                    // list is empty.
                    self.out.push_str("{% endfor %}");
                    self.out
                        .push_str(&format!("{{% if {} | length == 0 %}}", atom(&seq)));
                    self.nodes(list);
                    self.out.push_str("{% endif %}");
                } else {
                    self.out.push_str("{% endfor %}");
                }
            }
            BranchKind::With => {
                let var = match pipe.decl.as_slice() {
                    [v] => v.trim_start_matches('$').to_string(),
                    _ => self.fresh_name(),
                };
                let value = self.pipe(pipe).unwrap_or_else(|Unmappable| {
                    self.unconverted(line);
                    "false".to_string()
                });
                self.out
                    .push_str(&format!("{{% set {var} = {value} %}}{{% if {var} %}}"));
                self.dots.push(Some(var));
                self.nodes(body);
                self.dots.pop();
                if let Some(list) = else_body {
                    self.out.push_str("{% else %}");
                    self.nodes(list);
                }
                self.out.push_str("{% endif %}");
            }
        }
    }

    fn fresh_name(&mut self) -> String {
        self.fresh += 1;
        if self.fresh == 1 {
            "item".to_string()
        } else {
            format!("item{}", self.fresh)
        }
    }

    fn pipe(&self, p: &Pipe) -> R {
        let mut acc: Option<String> = None;
        for cmd in &p.cmds {
            acc = Some(self.command(&cmd.args, acc)?);
        }
        acc.ok_or(Unmappable)
    }

    fn command(&self, args: &[Operand], piped: Option<String>) -> R {
        let Some(first) = args.first() else {
            return Err(Unmappable);
        };
        if let (Operand::Func(name), Some(Operand::String(format))) = (first, args.get(1)) {
            if name == "printf" {
                let mut rest = args[2..]
                    .iter()
                    .map(|a| self.operand(a))
                    .collect::<Result<Vec<_>, _>>()?;
                rest.extend(piped);
                return printf(format, &rest);
            }
        }
        // `datetime.Format "layout"` -> `datetime(format="strftime")`.
        if let (Operand::Chain { operand, fields }, [_, Operand::String(layout)], None) =
            (first, args, &piped)
        {
            if **operand == Operand::Func("datetime".into()) && fields == &["Format"] {
                let format = super::time::to_strftime(layout).ok_or(Unmappable)?;
                return Ok(format!("datetime(format={})", quote(&format)));
            }
        }
        if let Operand::Func(name) = first {
            let mut argv = args[1..]
                .iter()
                .map(|a| self.operand(a))
                .collect::<Result<Vec<_>, _>>()?;
            argv.extend(piped);
            return call(name, &argv);
        }
        if args.len() > 1 || piped.is_some() {
            // A method call (`.T.Format "x"`).
            return Err(Unmappable);
        }
        self.operand(first)
    }

    fn operand(&self, op: &Operand) -> R {
        match op {
            Operand::Field(names) => {
                let dot = self.dots.last().cloned().flatten().ok_or(Unmappable)?;
                Ok(std::iter::once(dot)
                    .chain(names.iter().map(|n| field(n)))
                    .collect::<Vec<_>>()
                    .join("."))
            }
            Operand::Variable { name, fields } => {
                if name == "$" {
                    return Err(Unmappable);
                }
                Ok(std::iter::once(name.trim_start_matches('$').to_string())
                    .chain(fields.iter().map(|n| field(n)))
                    .collect::<Vec<_>>()
                    .join("."))
            }
            Operand::Nil => Ok("none".to_string()),
            Operand::Bool(b) => Ok(b.to_string()),
            Operand::Number(n) if n.starts_with('\'') => Err(Unmappable),
            Operand::Number(n) => Ok(n.clone()),
            Operand::String(s) => Ok(quote(s)),
            Operand::Func(name) => call(name, &[]),
            Operand::Pipe(p) => Ok(format!("({})", self.pipe(p)?)),
            Operand::Chain { .. } => Err(Unmappable),
        }
    }
}

/// `printf` with only `%s`, `%d`, `%v` and `%%` as Tera's `~` concatenation
/// (`printf "/apps/%s/port" .` -> `"/apps/" ~ item ~ "/port"`); other verbs
/// (widths, `%q`, `%x`) are left for a person.
fn printf(format: &str, args: &[String]) -> R {
    let mut parts: Vec<String> = Vec::new();
    let mut lit = String::new();
    let mut next = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            lit.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => lit.push('%'),
            Some('s' | 'd' | 'v') => {
                if !lit.is_empty() {
                    parts.push(quote(&std::mem::take(&mut lit)));
                }
                parts.push(atom(next.next().ok_or(Unmappable)?));
            }
            _ => return Err(Unmappable),
        }
    }
    if next.next().is_some() {
        return Err(Unmappable);
    }
    if !lit.is_empty() || parts.is_empty() {
        parts.push(quote(&lit));
    }
    Ok(parts.join(" ~ "))
}

/// A confd function or Go builtin called with Tera expressions `a`.
fn call(name: &str, a: &[String]) -> R {
    let named = |f: &str, names: &[&str]| -> R {
        if a.len() > names.len() || a.is_empty() && !names.is_empty() {
            return Err(Unmappable);
        }
        let args: Vec<String> = names
            .iter()
            .zip(a)
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        Ok(format!("{f}({})", args.join(", ")))
    };
    let filter = |f: &str, extra: &[&str]| -> R {
        if a.len() != 1 + extra.len() {
            return Err(Unmappable);
        }
        let args: Vec<String> = extra
            .iter()
            .zip(&a[1..])
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        Ok(if args.is_empty() {
            format!("{} | {f}", atom(&a[0]))
        } else {
            format!("{} | {f}({})", atom(&a[0]), args.join(", "))
        })
    };
    let op = |o: &str| -> R {
        match a {
            [x, y] => Ok(format!("{} {o} {}", atom(x), atom(y))),
            _ => Err(Unmappable),
        }
    };
    match name {
        "getv" => named("getv", &["key", "default"]),
        "get" | "exists" => named(name, &["key"]),
        "gets" | "getvs" => named(name, &["pattern"]),
        "ls" | "lsdir" | "fileExists" => named(name, &["path"]),
        "getenv" => named("getenv", &["name", "default"]),
        "lookupIP" | "lookupIPV4" | "lookupIPV6" => named(name, &["name"]),
        "lookupSRV" if a.len() == 3 => named("lookupSRV", &["service", "proto", "name"]),
        "seq" if a.len() == 2 => named("seq", &["start", "end"]),
        "hostname" | "services" if a.is_empty() => Ok(format!("{name}()")),
        "service" if !a.is_empty() => named("service", &["name", "tag", "passing"]),
        "base" | "dir" | "json" | "jsonArray" | "base64Encode" | "base64Decode" | "parseBool"
        | "atoi" | "toUpper" | "toLower" | "reverse" | "sortByLength" | "sortKVByLength" => {
            filter(name, &[])
        }
        "trimSuffix" => filter("trimSuffix", &["suffix"]),
        "trimPrefix" => filter("trimPrefix", &["prefix"]),
        "contains" => filter("contains", &["substring"]),
        "split" => filter("split", &["pat"]),
        "join" => filter("join", &["sep"]),
        "replace" if a.len() == 4 && a[3] == "-1" => Ok(format!(
            "{} | replace(from={}, to={})",
            atom(&a[0]),
            a[1],
            a[2]
        )),
        "add" => op("+"),
        "sub" => op("-"),
        "mul" => op("*"),
        "div" | "mod" if a.len() == 2 => Ok(format!("{name}(a={}, b={})", a[0], a[1])),
        "eq" if a.len() == 2 => op("=="),
        "ne" => op("!="),
        "lt" => op("<"),
        "le" => op("<="),
        "gt" => op(">"),
        "ge" => op(">="),
        "and" | "or" if a.len() >= 2 => Ok(a
            .iter()
            .map(|x| atom(x))
            .collect::<Vec<_>>()
            .join(&format!(" {name} "))),
        "not" if a.len() == 1 => Ok(format!("not {}", atom(&a[0]))),
        "len" if a.len() == 1 => Ok(format!("{} | length", atom(&a[0]))),
        "index" if a.len() >= 2 => Ok(format!(
            "{}{}",
            atom(&a[0]),
            a[1..].iter().map(|i| format!("[{i}]")).collect::<String>()
        )),
        "map" if a.len() % 2 == 0 => Ok(format!(
            "{{{}}}",
            a.chunks(2)
                .map(|kv| format!("{}: {}", kv[0], kv[1]))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        // print, printf with other verbs, datetime without Format,
        // html, js, urlquery, slice, call: by hand.
        _ => Err(Unmappable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testutil::{render, render_go};

    fn tera(go: &str) -> Converted {
        convert("t", go).unwrap()
    }

    /// Converts `go` and checks both engines render the same over `keys`.
    fn same(go: &str, keys: &[(&str, &str)]) -> String {
        let c = tera(go);
        assert!(c.unconverted.is_empty(), "{go}: {c:?}");
        let want = render_go(go, keys);
        assert_eq!(render(&c.text, keys), want, "{go}\n->\n{}", c.text);
        c.text
    }

    const KEYS: &[(&str, &str)] = &[
        ("/upstream/a", "10.0.0.1"),
        ("/upstream/b", "10.0.0.2"),
        ("/db/host", "db1"),
        ("/key", "foobar"),
        ("/j", "{\"Id\":\"h1\"}"),
    ];

    #[test]
    fn confds_integration_templates_convert_and_render_the_same() {
        same(
            "upstream app {\n{{- range gets \"/upstream/*\" }}\n  server {{ .Value }};\n{{- end }}\n}\n",
            KEYS,
        );
        same(
            "{{ if exists \"/key\" }}value: {{ getv \"/key\" }}{{ end }}\n{{- if exists \"/doesnotexist\" }}no{{ end }}\n",
            KEYS,
        );
        assert_eq!(
            same("host={{getv \"/db/host\"}} {{getv \"/x\" \"d\"}}\n", KEYS),
            "host={{ getv(key=\"/db/host\") }} {{ getv(key=\"/x\", default=\"d\") }}\n"
        );
    }

    #[test]
    fn variables_pipes_and_branches() {
        same(
            "{{$d := json (getv \"/j\")}}{{$d.Id}} {{getv \"/db/host\" | toUpper}} {{base \"/a/b\"}}",
            KEYS,
        );
        same(
            "{{range $i, $v := getvs \"/upstream/*\"}}{{$i}}={{$v}};{{end}}{{with get \"/key\"}}{{.Key}}{{end}}",
            KEYS,
        );
        same(
            "{{if eq (getv \"/key\") \"x\"}}a{{else if ne 1 2}}b{{else}}c{{end}} {{len (ls \"/\")}} {{add 1 2}}",
            KEYS,
        );
        same(
            "{{range gets \"/none/*\"}}x{{else}}empty{{end}} {{join (split \"a,b\" \",\") \"-\"}}",
            KEYS,
        );
        same("{{/* c */}}{{\"{{ raw }}\"}} {{`x`}}", KEYS);
    }

    #[test]
    fn printf_and_datetime_format() {
        same(
            "{{range ls \"/upstream\"}}{{getv (printf \"/upstream/%s\" .)}} {{printf \"%s:%d%%\" . 80}};{{end}}",
            KEYS,
        );
        assert_eq!(
            tera("{{datetime.Format \"2006-01-02\"}}").text,
            "{{ datetime(format=\"%Y-%m-%d\") }}"
        );
        let year = render(&tera("{{datetime.Format \"2006\"}}").text, &[]);
        assert_eq!(year, render_go("{{datetime.Format \"2006\"}}", &[]));
    }

    #[test]
    fn what_has_no_tera_form_is_a_comment_naming_the_line() {
        let c = tera("a\n{{printf \"%5s:%x\" \"h\" 1}}\n{{datetime.Format \"05.999\"}}\n{{template \"x\"}}{{define \"x\"}}X{{end}}");
        assert_eq!(c.unconverted, [2, 3, 4]);
        assert!(
            c.text.contains("{# sidekick convert: line 2 not converted, port it by hand: {{printf \"%5s:%x\" \"h\" 1}} #}"),
            "{}",
            c.text
        );
        assert!(
            c.text.contains("{{define \"x\"}} not converted"),
            "{}",
            c.text
        );
        // The rest still renders.
        assert!(render(&c.text, &[]).starts_with("a\n"));
    }
}
