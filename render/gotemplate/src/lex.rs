//! The lexer: splits template text into tokens the way Go's
//! `text/template/parse` lexer does, including `{{-`/`-}}` trimming (of
//! spaces, tabs and newlines around the action) and `{{/* */}}` comments.
//!
//! The whole input is lexed up front into a vector; a lexical error becomes
//! the last token, so the parser reports it where it meets it.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Plain text outside actions (already trimmed).
    Text,
    /// `{{` (with its trim marker, if any).
    LeftDelim,
    /// `}}` (with its trim marker, if any).
    RightDelim,
    /// A run of spaces inside an action.
    Space,
    /// `|`
    Pipe,
    /// `(`
    LeftParen,
    /// `)`
    RightParen,
    /// `:=`
    Declare,
    /// `=`
    Assign,
    /// Any other printable ASCII character (`,` in range declarations).
    Char,
    /// `.Name`
    Field,
    /// `$` or `$name`
    Variable,
    /// A function name.
    Identifier,
    /// `.` alone.
    Dot,
    /// `true` / `false`
    Bool,
    /// `nil`
    Nil,
    /// A number literal (ints, floats, chars are lexed separately).
    Number,
    /// `'c'`
    CharConstant,
    /// `"..."`
    String,
    /// `` `...` ``
    RawString,
    /// A keyword.
    Keyword(Keyword),
    /// End of input.
    Eof,
    /// A lexical error; the message is in [`Lexed::errors`].
    Error,
}

/// The keywords of the action language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    Block,
    Break,
    Continue,
    Define,
    Else,
    End,
    If,
    Range,
    Template,
    With,
}

impl Keyword {
    fn from_word(w: &str) -> Option<Keyword> {
        Some(match w {
            "block" => Keyword::Block,
            "break" => Keyword::Break,
            "continue" => Keyword::Continue,
            "define" => Keyword::Define,
            "else" => Keyword::Else,
            "end" => Keyword::End,
            "if" => Keyword::If,
            "range" => Keyword::Range,
            "template" => Keyword::Template,
            "with" => Keyword::With,
            _ => return None,
        })
    }
}

/// One token: its kind, byte range in the input and line of its start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
    pub line: usize,
}

/// The tokens of one input, ending in `Eof` or `Error`.
pub(crate) struct Lexed {
    pub tokens: Vec<Token>,
    /// The message of the trailing `Error` token, if any.
    pub error: Option<String>,
}

/// Go's `isSpace`: the characters trimming removes and that separate words.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// `%#U` of Go: `U+0041 'A'`.
fn char_desc(c: char) -> String {
    if crate::format::is_print(c) {
        format!("U+{:04X} '{}'", c as u32, c)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

struct Lexer<'a> {
    src: &'a str,
    b: &'a [u8],
    tokens: Vec<Token>,
    /// Line counting: the line at byte `line_pos`.
    line_pos: usize,
    line: usize,
    paren_depth: usize,
}

/// Lexes `src` into tokens.
pub(crate) fn lex(src: &str) -> Lexed {
    let mut l = Lexer {
        src,
        b: src.as_bytes(),
        tokens: Vec::new(),
        line_pos: 0,
        line: 1,
        paren_depth: 0,
    };
    let error = l.run().err();
    Lexed {
        tokens: l.tokens,
        error,
    }
}

impl Lexer<'_> {
    /// The line of byte `pos`; positions come in non-decreasing order, so the
    /// newlines are counted once.
    fn line_at(&mut self, pos: usize) -> usize {
        if pos >= self.line_pos {
            self.line += self.b[self.line_pos..pos]
                .iter()
                .filter(|c| **c == b'\n')
                .count();
        } else {
            self.line -= self.b[pos..self.line_pos]
                .iter()
                .filter(|c| **c == b'\n')
                .count();
        }
        self.line_pos = pos;
        self.line
    }

    fn emit(&mut self, kind: Kind, start: usize, end: usize) {
        let line = self.line_at(start);
        self.tokens.push(Token {
            kind,
            start,
            end,
            line,
        });
    }

    fn fail(&mut self, start: usize, msg: String) -> Result<(), String> {
        self.emit(Kind::Error, start, start);
        Err(msg)
    }

    /// `}}` or ` -}}` at `pos`: Some(length of the delimiter incl. marker,
    /// trims).
    fn right_delim(&self, pos: usize) -> Option<(usize, bool)> {
        let rest = &self.b[pos..];
        if rest.starts_with(b"}}") {
            return Some((2, false));
        }
        if rest.len() >= 4 && is_space(rest[0]) && rest[1] == b'-' && rest[2..].starts_with(b"}}") {
            return Some((4, true));
        }
        None
    }

    fn run(&mut self) -> Result<(), String> {
        let mut pos = 0;
        loop {
            let Some(off) = self.src[pos..].find("{{") else {
                if pos < self.b.len() {
                    self.emit(Kind::Text, pos, self.b.len());
                }
                self.emit(Kind::Eof, self.b.len(), self.b.len());
                return Ok(());
            };
            let delim = pos + off;
            let after = delim + 2;
            let trim_left = self.b.get(after) == Some(&b'-')
                && self.b.get(after + 1).is_some_and(|c| is_space(*c));
            let mut text_end = delim;
            if trim_left {
                while text_end > pos && is_space(self.b[text_end - 1]) {
                    text_end -= 1;
                }
            }
            if text_end > pos {
                self.emit(Kind::Text, pos, text_end);
            }
            let inner = if trim_left { after + 2 } else { after };
            if self.src[inner..].starts_with("/*") {
                pos = self.comment(delim, inner)?;
                continue;
            }
            self.emit(Kind::LeftDelim, delim, inner);
            self.paren_depth = 0;
            pos = self.action(inner)?;
        }
    }

    /// Skips a comment starting at `inner` (the `/*`); returns the position
    /// after its closing delimiter (and trimmed space).
    fn comment(&mut self, delim: usize, inner: usize) -> Result<usize, String> {
        let Some(close) = self.src[inner + 2..].find("*/") else {
            self.fail(delim, "unclosed comment".into())?;
            return Ok(0);
        };
        let after = inner + 2 + close + 2;
        let Some((len, trim)) = self.right_delim(after) else {
            self.fail(delim, "comment ends before closing delimiter".into())?;
            return Ok(0);
        };
        let mut pos = after + len;
        if trim {
            while pos < self.b.len() && is_space(self.b[pos]) {
                pos += 1;
            }
        }
        Ok(pos)
    }

    /// Lexes inside an action from `pos`; returns the position after the
    /// closing delimiter (and trimmed space).
    fn action(&mut self, mut pos: usize) -> Result<usize, String> {
        loop {
            if let Some((len, trim)) = self.right_delim(pos) {
                if self.paren_depth > 0 {
                    self.fail(pos, "unclosed left paren".into())?;
                }
                self.emit(Kind::RightDelim, pos, pos + len);
                let mut end = pos + len;
                if trim {
                    while end < self.b.len() && is_space(self.b[end]) {
                        end += 1;
                    }
                }
                return Ok(end);
            }
            let Some(c) = self.src[pos..].chars().next() else {
                self.fail(pos, "unclosed action".into())?;
                return Ok(pos);
            };
            let start = pos;
            match c {
                ' ' | '\t' | '\r' | '\n' => {
                    while pos < self.b.len() && is_space(self.b[pos]) {
                        pos += 1;
                    }
                    // A space that starts a ` -}}` belongs to the delimiter.
                    if self.right_delim(pos - 1).is_some_and(|(_, trim)| trim) {
                        pos -= 1;
                    }
                    if pos > start {
                        self.emit(Kind::Space, start, pos);
                    }
                }
                '=' => {
                    pos += 1;
                    self.emit(Kind::Assign, start, pos);
                }
                ':' => {
                    if self.b.get(pos + 1) != Some(&b'=') {
                        return self.fail(start, "expected :=".into()).map(|()| pos);
                    }
                    pos += 2;
                    self.emit(Kind::Declare, start, pos);
                }
                '|' => {
                    pos += 1;
                    self.emit(Kind::Pipe, start, pos);
                }
                '"' => {
                    pos += 1;
                    loop {
                        match self.b.get(pos) {
                            Some(b'\\') => {
                                if matches!(self.b.get(pos + 1), None | Some(b'\n')) {
                                    return self
                                        .fail(start, "unterminated quoted string".into())
                                        .map(|()| pos);
                                }
                                pos += 2;
                            }
                            Some(b'"') => break,
                            None | Some(b'\n') => {
                                return self
                                    .fail(start, "unterminated quoted string".into())
                                    .map(|()| pos);
                            }
                            Some(_) => pos += 1,
                        }
                    }
                    pos += 1;
                    self.emit(Kind::String, start, pos);
                }
                '`' => {
                    let Some(close) = self.src[pos + 1..].find('`') else {
                        return self
                            .fail(start, "unterminated raw quoted string".into())
                            .map(|()| pos);
                    };
                    pos += 1 + close + 1;
                    self.emit(Kind::RawString, start, pos);
                }
                '\'' => {
                    pos += 1;
                    loop {
                        match self.b.get(pos) {
                            Some(b'\\') if pos + 1 < self.b.len() && self.b[pos + 1] != b'\n' => {
                                pos += 2
                            }
                            Some(b'\'') => break,
                            None | Some(b'\n') | Some(b'\\') => {
                                return self
                                    .fail(start, "unterminated character constant".into())
                                    .map(|()| pos);
                            }
                            Some(_) => pos += 1,
                        }
                    }
                    pos += 1;
                    self.emit(Kind::CharConstant, start, pos);
                }
                '$' => {
                    pos = self.word(pos + 1);
                    if !self.at_terminator(pos) {
                        return self.bad_char(pos);
                    }
                    self.emit(Kind::Variable, start, pos);
                }
                '.' if self.b.get(pos + 1).is_some_and(u8::is_ascii_digit) => {
                    pos = self.number(pos)?;
                }
                '.' => {
                    pos = self.word(pos + 1);
                    if !self.at_terminator(pos) {
                        return self.bad_char(pos);
                    }
                    let kind = if pos == start + 1 {
                        Kind::Dot
                    } else {
                        Kind::Field
                    };
                    self.emit(kind, start, pos);
                }
                '+' | '-' | '0'..='9' => {
                    pos = self.number(pos)?;
                }
                '(' => {
                    pos += 1;
                    self.paren_depth += 1;
                    self.emit(Kind::LeftParen, start, pos);
                }
                ')' => {
                    if self.paren_depth == 0 {
                        return self
                            .fail(start, "unexpected right paren".into())
                            .map(|()| pos);
                    }
                    pos += 1;
                    self.paren_depth -= 1;
                    self.emit(Kind::RightParen, start, pos);
                }
                c if is_alnum(c) => {
                    pos = self.word(pos);
                    if !self.at_terminator(pos) {
                        return self.bad_char(pos);
                    }
                    let word = &self.src[start..pos];
                    let kind = match word {
                        "true" | "false" => Kind::Bool,
                        "nil" => Kind::Nil,
                        w => Keyword::from_word(w).map_or(Kind::Identifier, Kind::Keyword),
                    };
                    self.emit(kind, start, pos);
                }
                c if c.is_ascii() && !c.is_ascii_control() => {
                    pos += 1;
                    self.emit(Kind::Char, start, pos);
                }
                c => {
                    return self
                        .fail(
                            start,
                            format!("unrecognized character in action: {}", char_desc(c)),
                        )
                        .map(|()| pos);
                }
            }
        }
    }

    fn bad_char(&mut self, pos: usize) -> Result<usize, String> {
        let c = self.src[pos..].chars().next().unwrap_or(' ');
        self.fail(pos, format!("bad character {}", char_desc(c)))
            .map(|()| pos)
    }

    /// The end of the alphanumeric run at `pos`.
    fn word(&self, pos: usize) -> usize {
        let rest = &self.src[pos..];
        pos + rest
            .char_indices()
            .find(|(_, c)| !is_alnum(*c))
            .map_or(rest.len(), |(i, _)| i)
    }

    /// Go's `atTerminator`: what may follow a word.
    fn at_terminator(&self, pos: usize) -> bool {
        match self.b.get(pos) {
            None => true,
            Some(c) if is_space(*c) => true,
            Some(b'.' | b',' | b'|' | b':' | b')' | b'(' | b'=') => true,
            Some(_) => self.b[pos..].starts_with(b"}}"),
        }
    }

    /// Scans a number literal starting at `start` as Go's `scanNumber`
    /// does (sign, base prefix, digits, fraction, exponent); the value is
    /// checked by the parser.
    fn number(&mut self, start: usize) -> Result<usize, String> {
        let b = self.b;
        let mut pos = start;
        let accept = |pos: &mut usize, valid: &[u8]| {
            if b.get(*pos).is_some_and(|c| valid.contains(c)) {
                *pos += 1;
                true
            } else {
                false
            }
        };
        let run = |pos: &mut usize, valid: &[u8]| while accept(pos, valid) {};
        accept(&mut pos, b"+-");
        let mut digits: &[u8] = b"0123456789_";
        if accept(&mut pos, b"0") {
            if accept(&mut pos, b"xX") {
                digits = b"0123456789abcdefABCDEF_";
            } else if accept(&mut pos, b"oO") {
                digits = b"01234567_";
            } else if accept(&mut pos, b"bB") {
                digits = b"01_";
            }
        }
        run(&mut pos, digits);
        if accept(&mut pos, b".") {
            run(&mut pos, digits);
        }
        if digits.len() == 11 && accept(&mut pos, b"eE") {
            accept(&mut pos, b"+-");
            run(&mut pos, b"0123456789_");
        }
        if digits.len() == 23 && accept(&mut pos, b"pP") {
            accept(&mut pos, b"+-");
            run(&mut pos, b"0123456789_");
        }
        accept(&mut pos, b"i");
        let next = self.src[pos..].chars().next();
        if next.is_some_and(is_alnum) || pos == start + 1 && !b[start].is_ascii_digit() {
            let end = pos + next.filter(|c| is_alnum(*c)).map_or(0, char::len_utf8);
            return self
                .fail(
                    start,
                    format!("bad number syntax: {:?}", &self.src[start..end]),
                )
                .map(|()| pos);
        }
        self.emit(Kind::Number, start, pos);
        Ok(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(Kind, String)> {
        let l = lex(src);
        l.tokens
            .iter()
            .map(|t| (t.kind, src[t.start..t.end].to_string()))
            .collect()
    }

    #[test]
    fn text_and_action() {
        let k = kinds("a {{.X.Y | printf \"%d\" 3}} b");
        let want = [
            (Kind::Text, "a "),
            (Kind::LeftDelim, "{{"),
            (Kind::Field, ".X"),
            (Kind::Field, ".Y"),
            (Kind::Space, " "),
            (Kind::Pipe, "|"),
            (Kind::Space, " "),
            (Kind::Identifier, "printf"),
            (Kind::Space, " "),
            (Kind::String, "\"%d\""),
            (Kind::Space, " "),
            (Kind::Number, "3"),
            (Kind::RightDelim, "}}"),
            (Kind::Text, " b"),
            (Kind::Eof, ""),
        ];
        let want: Vec<(Kind, String)> = want.iter().map(|(k, s)| (*k, s.to_string())).collect();
        assert_eq!(k, want);
    }

    #[test]
    fn trim_markers() {
        let k = kinds("a \n {{- 3 -}} \n\t b");
        assert_eq!(k[0], (Kind::Text, "a".to_string()));
        assert_eq!(k[1], (Kind::LeftDelim, "{{- ".to_string()));
        assert_eq!(k[2], (Kind::Number, "3".to_string()));
        assert_eq!(k[3], (Kind::RightDelim, " -}}".to_string()));
        assert_eq!(k[4], (Kind::Text, "b".to_string()));
        // `{{-3}}` is the number -3, not a trim marker.
        let k = kinds("x {{-3}}");
        assert_eq!(k[0], (Kind::Text, "x ".to_string()));
        assert_eq!(k[2], (Kind::Number, "-3".to_string()));
    }

    #[test]
    fn comments() {
        let k = kinds("a {{/* c */}} b {{- /* c\n */ -}} c");
        let texts: Vec<&str> = k
            .iter()
            .filter(|t| t.0 == Kind::Text)
            .map(|t| t.1.as_str())
            .collect();
        assert_eq!(texts, ["a ", " b", "c"]);
        assert_eq!(lex("{{/* x").error.as_deref(), Some("unclosed comment"));
        assert_eq!(
            lex("{{/* x */ }}").error.as_deref(),
            Some("comment ends before closing delimiter")
        );
    }

    #[test]
    fn words_and_keywords() {
        let k = kinds("{{range $i, $v := .}}{{end}}");
        assert_eq!(k[1].0, Kind::Keyword(Keyword::Range));
        assert_eq!(k[3], (Kind::Variable, "$i".to_string()));
        assert_eq!(k[4], (Kind::Char, ",".to_string()));
        assert_eq!(k[8].0, Kind::Declare);
        assert_eq!(k[10].0, Kind::Dot);
        assert_eq!(kinds("{{$}}")[1], (Kind::Variable, "$".to_string()));
        assert_eq!(kinds("{{true}}")[1].0, Kind::Bool);
        assert_eq!(kinds("{{nil}}")[1].0, Kind::Nil);
        assert_eq!(kinds("{{'a'}}")[1].0, Kind::CharConstant);
        assert_eq!(kinds("{{`r`}}")[1].0, Kind::RawString);
        assert_eq!(kinds("{{1.5e-3}}")[1], (Kind::Number, "1.5e-3".to_string()));
        assert_eq!(kinds("{{0x1F}}")[1], (Kind::Number, "0x1F".to_string()));
    }

    #[test]
    fn errors_and_lines() {
        assert_eq!(lex("{{.X").error.as_deref(), Some("unclosed action"));
        assert_eq!(lex("{{(.X}}").error.as_deref(), Some("unclosed left paren"));
        assert_eq!(
            lex("{{.X)}}").error.as_deref(),
            Some("unexpected right paren")
        );
        assert_eq!(
            lex("{{\"abc}}").error.as_deref(),
            Some("unterminated quoted string")
        );
        assert_eq!(
            lex("{{`abc}}").error.as_deref(),
            Some("unterminated raw quoted string")
        );
        assert_eq!(lex("{{: }}").error.as_deref(), Some("expected :="));
        assert_eq!(
            lex("{{3k}}").error.as_deref(),
            Some("bad number syntax: \"3k\"")
        );
        assert_eq!(
            lex("{{\u{1}}}").error.as_deref(),
            Some("unrecognized character in action: U+0001")
        );
        let l = lex("a\nb\n{{.X}}\n{{\n.Y}}");
        let lines: Vec<usize> = l.tokens.iter().map(|t| t.line).collect();
        assert_eq!(lines, [1, 3, 3, 3, 3, 4, 4, 5, 5, 5]);
    }
}
