//! YAML data files read as confd reads them (Go's `gopkg.in/yaml.v2` into
//! `interface{}`, then its file backend's printing): YAML 1.1 plain scalars
//! (`yes`/`on`/`n` are booleans, `0755` is octal, `1e3` a float), merge keys
//! merged in document order, the first document only.
//!
//! Built on the event parser alone: a small tree per document, no serde layer
//! (on a 10,000-key file about two thirds of the time `serde-saphyr`'s
//! deserializer took, the parser itself most of it). Aliases share the
//! anchored node; what they expand to is bounded, so an alias bomb is
//! refused, not expanded.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use granit_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// Keys that aliases and merge keys may add beyond those written out: far more
/// than any real data file, far less than a "billion laughs".
const MAX_EXPANDED: u64 = 1_000_000;
/// Collections nested deeper than this are refused (the reader recurses).
const MAX_DEPTH: usize = 500;

/// A document, with scalars already in the text confd prints for them.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// `~`, `null`, nothing: no key, as in confd.
    Null,
    /// A scalar as confd's file backend prints it.
    Scalar(String),
    /// A sequence: keys `0`, `1`, ...
    Seq(Vec<Node>),
    /// A mapping, keyed by the keys' text.
    Map(BTreeMap<String, Node>),
    /// An aliased node (`*name`), shared with its anchor.
    Shared(Rc<Node>),
}

/// A YAML error at a 1-based line and column.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) message: String,
}

impl Error {
    fn at(span: &Span, message: impl Into<String>) -> Error {
        Error {
            line: span.start.line(),
            column: span.start.col() + 1,
            message: message.into(),
        }
    }
}

/// Parses the first document of `text`; `None` when there is none.
pub(crate) fn parse(text: &str) -> Result<Option<Node>, Error> {
    let mut reader = Reader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        expanded: 0,
        depth: 0,
    };
    loop {
        let (event, span) = reader.next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd => {}
            Event::DocumentStart(..) => {
                let (event, span) = reader.next()?;
                if matches!(event, Event::DocumentEnd) {
                    return Ok(None);
                }
                return reader.node(event, &span).map(Some);
            }
            Event::StreamEnd => return Ok(None),
            _ => return Err(Error::at(&span, "unexpected YAML event before a document")),
        }
    }
}

struct Reader<'a> {
    parser: Parser<'a, granit_parser::StrInput<'a>>,
    /// Anchored nodes by the parser's anchor id, with their leaf counts.
    anchors: HashMap<usize, (Rc<Node>, u64)>,
    /// Leaves added so far by aliases and merges.
    expanded: u64,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// The next event that is data: comments (and any other presentation
    /// metadata the parser is built to emit) are skipped.
    fn next(&mut self) -> Result<(Event<'a>, Span), Error> {
        loop {
            match self.parser.next_event() {
                Some(Ok((event, span))) => {
                    let data = matches!(
                        event,
                        Event::StreamStart
                            | Event::StreamEnd
                            | Event::DocumentStart(..)
                            | Event::DocumentEnd
                            | Event::Alias(_)
                            | Event::Scalar(..)
                            | Event::SequenceStart(..)
                            | Event::SequenceEnd
                            | Event::MappingStart(..)
                            | Event::MappingEnd
                    );
                    if data {
                        return Ok((event, span));
                    }
                }
                Some(Err(e)) => {
                    return Err(Error {
                        line: e.marker().line(),
                        column: e.marker().col() + 1,
                        message: e.info(),
                    })
                }
                None => {
                    return Err(Error {
                        line: 0,
                        column: 0,
                        message: "unexpected end of YAML".into(),
                    })
                }
            }
        }
    }

    /// Reads the node that starts with `event`.
    fn node(&mut self, event: Event<'a>, span: &Span) -> Result<Node, Error> {
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                (scalar(text, style, tag.as_deref()), anchor)
            }
            Event::SequenceStart(_, anchor, _) => (self.nested(span, Self::seq)?, anchor),
            Event::MappingStart(_, anchor, _) => (self.nested(span, Self::map)?, anchor),
            Event::Alias(id) => {
                let Some((node, leaves)) = self.anchors.get(&id) else {
                    return Err(Error::at(span, "unknown anchor"));
                };
                let node = Node::Shared(Rc::clone(node));
                let leaves = *leaves;
                self.expand(span, leaves)?;
                return Ok(node);
            }
            _ => return Err(Error::at(span, "unexpected YAML event")),
        };
        if anchor == 0 {
            return Ok(node);
        }
        let shared = Rc::new(node);
        self.anchors
            .insert(anchor, (Rc::clone(&shared), leaves(&shared)));
        Ok(Node::Shared(shared))
    }

    fn nested(
        &mut self,
        span: &Span,
        read: fn(&mut Self) -> Result<Node, Error>,
    ) -> Result<Node, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::at(
                span,
                format!("collections nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.depth += 1;
        let node = read(self);
        self.depth -= 1;
        node
    }

    fn seq(&mut self) -> Result<Node, Error> {
        let mut items = Vec::new();
        loop {
            let (event, span) = self.next()?;
            if matches!(event, Event::SequenceEnd) {
                return Ok(Node::Seq(items));
            }
            items.push(self.node(event, &span)?);
        }
    }

    fn map(&mut self) -> Result<Node, Error> {
        let mut map = BTreeMap::new();
        // Once a merge key has added entries, the keys written out, which
        // alone may not repeat.
        let mut explicit: Option<HashSet<String>> = None;
        loop {
            let (event, span) = self.next()?;
            let key = match event {
                Event::MappingEnd => return Ok(Node::Map(map)),
                Event::Scalar(text, style, _, tag) => {
                    let merge = text == "<<"
                        && (style == ScalarStyle::Plain || yaml_tag(tag.as_deref(), "merge"));
                    if merge {
                        let (event, span) = self.next()?;
                        let value = self.node(event, &span)?;
                        if explicit.is_none() {
                            explicit = Some(map.keys().cloned().collect());
                        }
                        self.merge(&mut map, &value, &span)?;
                        continue;
                    }
                    text.into_owned()
                }
                Event::Alias(_) => match self.node(event, &span)? {
                    Node::Shared(node) => match &*node {
                        Node::Scalar(text) => text.clone(),
                        _ => return Err(Error::at(&span, "a mapping key must be a scalar")),
                    },
                    _ => return Err(Error::at(&span, "a mapping key must be a scalar")),
                },
                _ => return Err(Error::at(&span, "a mapping key must be a scalar")),
            };
            let (event, value_span) = self.next()?;
            let value = self.node(event, &value_span)?;
            let repeated = match &mut explicit {
                None => map.contains_key(&key),
                Some(seen) => !seen.insert(key.clone()),
            };
            if repeated {
                return Err(Error::at(
                    &span,
                    format!("duplicate entry with key {key:?}"),
                ));
            }
            map.insert(key, value);
        }
    }

    /// `<<: value`: its entries assigned into `map` here, in document order
    /// (a later key wins, as in yaml.v2); a list of maps is merged from its
    /// last to its first, so the first wins.
    fn merge(
        &mut self,
        map: &mut BTreeMap<String, Node>,
        value: &Node,
        span: &Span,
    ) -> Result<(), Error> {
        match resolve(value) {
            Node::Map(entries) => {
                for (key, item) in entries {
                    self.expand(span, leaves(item))?;
                    map.insert(key.clone(), item.clone());
                }
                Ok(())
            }
            Node::Seq(items) => {
                for item in items.iter().rev() {
                    if !matches!(resolve(item), Node::Map(_)) {
                        return Err(Error::at(span, MERGE_ERROR));
                    }
                    self.merge(map, item, span)?;
                }
                Ok(())
            }
            _ => Err(Error::at(span, MERGE_ERROR)),
        }
    }

    /// Counts `leaves` more keys against the expansion bound.
    fn expand(&mut self, span: &Span, leaves: u64) -> Result<(), Error> {
        self.expanded = self.expanded.saturating_add(leaves);
        if self.expanded > MAX_EXPANDED {
            return Err(Error::at(
                span,
                format!("aliases expand to more than {MAX_EXPANDED} keys (an alias bomb?)"),
            ));
        }
        Ok(())
    }
}

const MERGE_ERROR: &str = "map merge requires map or sequence of maps as the value";

/// The node an alias stands for.
fn resolve(node: &Node) -> &Node {
    match node {
        Node::Shared(inner) => resolve(inner),
        other => other,
    }
}

/// How many keys `node` flattens to.
fn leaves(node: &Node) -> u64 {
    match node {
        Node::Null => 0,
        Node::Scalar(_) => 1,
        Node::Seq(items) => items.iter().map(leaves).fold(0, u64::saturating_add),
        Node::Map(entries) => entries.values().map(leaves).fold(0, u64::saturating_add),
        Node::Shared(inner) => leaves(inner),
    }
}

/// A scalar as yaml.v2 resolves it and confd's file backend prints it.
fn scalar(text: Cow<'_, str>, style: ScalarStyle, tag: Option<&Tag>) -> Node {
    let core = |name: &str| yaml_tag(tag, name);
    // Quoted and block scalars are text unless a tag says otherwise; `!!str`
    // and `!!binary` are text always.
    if core("str") || core("binary") {
        return Node::Scalar(text.into_owned());
    }
    let typed = core("int") || core("float") || core("bool") || core("null");
    if style != ScalarStyle::Plain && !typed {
        return Node::Scalar(text.into_owned());
    }
    match resolve_plain(&text) {
        Plain::Null => Node::Null,
        Plain::Text => Node::Scalar(text.into_owned()),
        Plain::Printed(s) => Node::Scalar(s),
    }
}

/// Whether `tag` is YAML's `!!name` (`tag:yaml.org,2002:name`).
fn yaml_tag(tag: Option<&Tag>, name: &str) -> bool {
    tag.and_then(|t| t.suffix_in_namespace("tag:yaml.org,2002:"))
        .is_some_and(|suffix| suffix == name)
}

enum Plain {
    Null,
    Text,
    Printed(String),
}

/// yaml.v2's `resolve` for an untagged plain scalar.
fn resolve_plain(s: &str) -> Plain {
    let Some(first) = s.bytes().next() else {
        return Plain::Null;
    };
    match s {
        "~" | "null" | "Null" | "NULL" => return Plain::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            return Plain::Printed("true".into())
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            return Plain::Printed("false".into())
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Plain::Printed("+Inf".into())
        }
        "-.inf" | "-.Inf" | "-.INF" => return Plain::Printed("-Inf".into()),
        ".nan" | ".NaN" | ".NAN" => return Plain::Printed("NaN".into()),
        _ => {}
    }
    match first {
        b'.' => match go_parse_float(s) {
            Some(f) => Plain::Printed(go_float(f)),
            None => Plain::Text,
        },
        b'+' | b'-' | b'0'..=b'9' => {
            let plain = s.replace('_', "");
            if let Some(i) = go_parse_int(&plain) {
                return Plain::Printed(i.to_string());
            }
            if let Some(u) = go_parse_uint(&plain) {
                return Plain::Printed(u.to_string());
            }
            if yaml_style_float(&plain) {
                if let Some(f) = go_parse_float(&plain) {
                    return Plain::Printed(go_float(f));
                }
            }
            Plain::Text
        }
        _ => Plain::Text,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: optional sign, then `0x`, `0o`, `0b`
/// or a leading `0` (octal) choose the base.
fn go_parse_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = go_parse_uint(digits)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)` (no sign).
fn go_parse_uint(s: &str) -> Option<u64> {
    let lower = |p: &str| s.len() > 2 && s[..2].eq_ignore_ascii_case(p);
    let (radix, digits) = if lower("0x") {
        (16, &s[2..])
    } else if lower("0o") {
        (8, &s[2..])
    } else if lower("0b") {
        (2, &s[2..])
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if digits.is_empty() || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// yaml.v2's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` for the decimal forms YAML reaches here.
fn go_parse_float(s: &str) -> Option<f64> {
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !ok {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A float as confd prints it (Go's `strconv.FormatFloat(v, 'f', -1, 64)`):
/// the shortest decimal that reads back, never an exponent, so `1e3` is
/// `1000` and `1.0` is `1`.
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        // Rust's `Display` is the same shortest round-trip form, without exponent.
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(s: &str) -> Option<String> {
        match resolve_plain(s) {
            Plain::Null => None,
            Plain::Text => Some(s.to_string()),
            Plain::Printed(p) => Some(p),
        }
    }

    /// Each plain scalar as yaml.v2 resolves it and confd prints it.
    #[test]
    fn plain_scalars_resolve_as_yaml_v2() {
        for (input, want) in [
            ("0755", "493"),
            ("0x1F", "31"),
            ("0o17", "15"),
            ("0b101", "5"),
            ("-0b101", "-5"),
            ("+7", "7"),
            ("1_000", "1000"),
            ("08", "8"),
            ("1e3", "1000"),
            ("1.", "1"),
            (".5", "0.5"),
            ("-1.5e-7", "-0.00000015"),
            ("9223372036854775807", "9223372036854775807"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("18446744073709551615", "18446744073709551615"),
            ("1e400", "1e400"),
            ("1.2.3", "1.2.3"),
            ("0x", "0x"),
            ("-", "-"),
            ("y", "true"),
            ("Off", "false"),
            ("+.inf", "+Inf"),
            ("2001-12-14", "2001-12-14"),
            ("10.0.0.1:8080", "10.0.0.1:8080"),
        ] {
            assert_eq!(printed(input).as_deref(), Some(want), "{input}");
        }
        assert_eq!(printed(""), None);
        assert_eq!(printed("~"), None);
        assert_eq!(printed("NULL"), None);
    }

    #[test]
    fn merges_follow_document_order_and_replace_whole_values() {
        let text = "b: &b {db: {host: a, port: 1}, x: 1}\nw:\n  x: 0\n  <<: *b\n  db: {host: c}\n";
        let Some(Node::Map(root)) = parse(text).unwrap() else {
            panic!("not a map")
        };
        let Node::Map(w) = &root["w"] else { panic!() };
        // `x` was written before the merge: the merge's value wins, as in yaml.v2.
        assert!(matches!(&w["x"], Node::Scalar(s) if s == "1"));
        // `db` after it replaces the merged map whole: no `port`.
        let Node::Map(db) = resolve(&w["db"]) else {
            panic!()
        };
        assert_eq!(db.len(), 1);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}x{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse(&text).unwrap_err();
        // The parser's own limit or ours, whichever comes first.
        assert!(
            e.message.contains("nested deeper") || e.message.contains("recursion limit"),
            "{}",
            e.message
        );
    }

    #[test]
    fn only_the_first_document_is_read() {
        let Some(Node::Scalar(s)) = parse("--- a\n--- b\n").unwrap() else {
            panic!()
        };
        assert_eq!(s, "a");
        assert!(parse("").unwrap().is_none());
        assert!(parse("# only a comment\n").unwrap().is_none());
    }
}
