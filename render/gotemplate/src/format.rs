//! Go's `fmt` printing for template values: `%v` (what `{{.}}` prints),
//! `Sprint`/`Sprintln` spacing, and `Sprintf` with the verbs, flags, width
//! and precision templates use, including Go's in-band error strings
//! (`%!d(string=x)`, `%!v(MISSING)`, `%!(EXTRA int=1)`).
//!
//! Floats follow `strconv.FormatFloat`: `%v` is the shortest representation
//! that round-trips, in exponent form when the exponent is below -4 or at
//! least 6 (`1e+06`, `3.5`, `1e-07`).

use crate::value::Value;
use std::fmt::Write as _;

/// Writes `v` as Go's `fmt.Print` would (`%v`), with `<no value>` for a
/// missing value.
pub(crate) fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::NoValue => out.push_str("<no value>"),
        Value::String(s) => out.push_str(s),
        Value::Int(i) => {
            // Writing to a String cannot fail.
            let _ = write!(out, "{i}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        _ => fmt_value(out, &Spec::default(), 'v', v, 0),
    }
}

/// Go's `fmt.Sprint`: operands printed with `%v`, a space between two
/// operands when neither is a string.
pub(crate) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    let mut prev_string = false;
    for (i, a) in args.iter().enumerate() {
        let is_string = matches!(a, Value::String(_));
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        write_arg(&mut out, a);
        prev_string = is_string;
    }
    out
}

/// Go's `fmt.Sprintln`: operands with `%v`, always space-separated, then a
/// newline.
pub(crate) fn sprintln(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_arg(&mut out, a);
    }
    out.push('\n');
    out
}

/// One function argument with `%v` (a missing value is nil by then).
fn write_arg(out: &mut String, a: &Value) {
    match a {
        Value::NoValue => out.push_str("<nil>"),
        v => write_value(out, v),
    }
}

/// Flags, width and precision of one `%` directive.
#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Go's `fmt.Sprintf`.
pub(crate) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(format.len() + 8 * args.len());
    let b = format.as_bytes();
    let mut i = 0;
    let mut argi = 0;
    let mut reordered = false;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i] != b'%' {
            i += 1;
        }
        out.push_str(&format[start..i]);
        if i >= b.len() {
            break;
        }
        i += 1; // the '%'
        let mut spec = Spec::default();
        while i < b.len() {
            match b[i] {
                b'#' => spec.sharp = true,
                b'0' => spec.zero = !spec.minus,
                b'+' => spec.plus = true,
                b'-' => {
                    spec.minus = true;
                    spec.zero = false;
                }
                b' ' => spec.space = true,
                _ => break,
            }
            i += 1;
        }
        // Explicit argument index: %[2]d.
        let arg_index = |i: &mut usize, argi: &mut usize, reordered: &mut bool| {
            if *i < b.len() && b[*i] == b'[' {
                if let Some(close) = format[*i..].find(']') {
                    if let Ok(n) = format[*i + 1..*i + close].parse::<usize>() {
                        if n >= 1 {
                            *argi = n - 1;
                            *reordered = true;
                        }
                    }
                    *i += close + 1;
                }
            }
        };
        arg_index(&mut i, &mut argi, &mut reordered);
        if i < b.len() && b[i] == b'*' {
            i += 1;
            match args.get(argi) {
                Some(Value::Int(w)) => {
                    if *w < 0 {
                        spec.minus = true;
                        spec.zero = false;
                    }
                    spec.width = Some(w.unsigned_abs() as usize);
                }
                _ => out.push_str("%!(BADWIDTH)"),
            }
            argi += 1;
        } else {
            let (n, next) = digits(b, i);
            spec.width = n;
            i = next;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            arg_index(&mut i, &mut argi, &mut reordered);
            if i < b.len() && b[i] == b'*' {
                i += 1;
                match args.get(argi) {
                    Some(Value::Int(p)) if *p >= 0 => spec.prec = Some(*p as usize),
                    _ => out.push_str("%!(BADPREC)"),
                }
                argi += 1;
            } else {
                let (n, next) = digits(b, i);
                spec.prec = Some(n.unwrap_or(0));
                i = next;
            }
        }
        arg_index(&mut i, &mut argi, &mut reordered);
        let Some(verb) = format[i..].chars().next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += verb.len_utf8();
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            out.push_str("%!");
            out.push(verb);
            out.push_str("(MISSING)");
            continue;
        };
        argi += 1;
        if verb == 'T' {
            pad(&mut out, &spec, arg.type_name());
            continue;
        }
        fmt_value(&mut out, &spec, verb, arg, 0);
    }
    if !reordered && argi < args.len() {
        out.push_str("%!(EXTRA ");
        for (n, a) in args[argi..].iter().enumerate() {
            if n > 0 {
                out.push_str(", ");
            }
            if matches!(a, Value::Nil | Value::NoValue) {
                out.push_str("<nil>");
            } else {
                out.push_str(a.type_name());
                out.push('=');
                fmt_value(&mut out, &Spec::default(), 'v', a, 0);
            }
        }
        out.push(')');
    }
    out
}

/// Parses a run of decimal digits at `i`.
fn digits(b: &[u8], mut i: usize) -> (Option<usize>, usize) {
    let start = i;
    let mut n: usize = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        n = n
            .saturating_mul(10)
            .saturating_add(usize::from(b[i] - b'0'));
        i += 1;
    }
    ((i > start).then_some(n), i)
}

/// Pads `s` to the width, counting characters as Go counts runes.
fn pad(out: &mut String, spec: &Spec, s: &str) {
    let Some(width) = spec.width else {
        out.push_str(s);
        return;
    };
    let n = s.chars().count();
    if width <= n {
        out.push_str(s);
        return;
    }
    let fill = if spec.zero { '0' } else { ' ' };
    if spec.minus {
        out.push_str(s);
        out.extend(std::iter::repeat_n(' ', width - n));
    } else {
        out.extend(std::iter::repeat_n(fill, width - n));
        out.push_str(s);
    }
}

/// `%!verb(type=value)`.
fn bad_verb(out: &mut String, verb: char, v: &Value) {
    out.push_str("%!");
    out.push(verb);
    out.push('(');
    match v {
        Value::Nil | Value::NoValue => out.push_str("<nil>"),
        v => {
            out.push_str(v.type_name());
            out.push('=');
            fmt_value(out, &Spec::default(), 'v', v, 0);
        }
    }
    out.push(')');
}

/// Formats one value for one verb; `depth` > 0 inside lists and maps.
fn fmt_value(out: &mut String, spec: &Spec, verb: char, v: &Value, depth: usize) {
    match v {
        Value::Nil | Value::NoValue => {
            if depth > 0 || verb == 'v' {
                pad(out, spec, "<nil>");
            } else {
                bad_verb(out, verb, v);
            }
        }
        Value::Bool(b) => match verb {
            'v' | 't' => pad(out, spec, if *b { "true" } else { "false" }),
            _ => bad_verb(out, verb, v),
        },
        Value::Int(i) => fmt_int(out, spec, verb, *i, v),
        Value::Float(f) => fmt_float(out, spec, verb, *f, v),
        Value::String(s) => fmt_string(out, spec, verb, s, v),
        Value::List(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(' ');
                }
                fmt_value(out, spec, verb, item, depth + 1);
            }
            out.push(']');
        }
        Value::Map(m) => {
            // A map with a `String` function prints as Go prints a value with
            // a String method (fmt's Stringer), for %v and %s.
            if let (Some(Value::Func(f)), 'v' | 's') = (m.get("String"), verb) {
                if let Ok(Value::String(text)) = (f.0)(&[]) {
                    let text = text.to_string();
                    fmt_string(out, spec, verb, &text, &Value::from(text.as_str()));
                    return;
                }
            }
            out.push_str("map[");
            for (n, (k, item)) in m.iter().enumerate() {
                if n > 0 {
                    out.push(' ');
                }
                fmt_string(out, spec, verb, k, &Value::from(k.as_str()));
                out.push(':');
                fmt_value(out, spec, verb, item, depth + 1);
            }
            out.push(']');
        }
        Value::Struct(st) => {
            // `{v1 v2}`; `%+v` names the fields: `{Key:v1 Value:v2}`.
            out.push('{');
            for (n, (name, item)) in st.names.iter().zip(st.values.iter()).enumerate() {
                if n > 0 {
                    out.push(' ');
                }
                if spec.plus && verb == 'v' {
                    out.push_str(name);
                    out.push(':');
                }
                fmt_value(out, spec, verb, item, depth + 1);
            }
            out.push('}');
        }
        Value::Func(_) => bad_verb(out, verb, &Value::from("func")),
    }
}

fn fmt_int(out: &mut String, spec: &Spec, verb: char, i: i64, v: &Value) {
    let (base, upper) = match verb {
        'v' | 'd' => (10, false),
        'b' => (2, false),
        'o' | 'O' => (8, false),
        'x' => (16, false),
        'X' => (16, true),
        'c' => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            let mut buf = [0u8; 4];
            pad(
                out,
                &Spec {
                    zero: false,
                    ..*spec
                },
                c.encode_utf8(&mut buf),
            );
            return;
        }
        'q' => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            let mut s = String::new();
            if spec.sharp && is_print(c) && c != '\'' {
                s.push('\'');
                s.push(c);
                s.push('\'');
            } else {
                quote_rune_into(&mut s, c, spec.plus);
            }
            pad(
                out,
                &Spec {
                    zero: false,
                    ..*spec
                },
                &s,
            );
            return;
        }
        'U' => {
            let mut s = format!("U+{:0w$X}", i, w = spec.prec.unwrap_or(0).max(4));
            if spec.sharp {
                if let Some(c) = u32::try_from(i).ok().and_then(char::from_u32) {
                    if is_print(c) {
                        s.push_str(" '");
                        s.push(c);
                        s.push('\'');
                    }
                }
            }
            pad(
                out,
                &Spec {
                    zero: false,
                    ..*spec
                },
                &s,
            );
            return;
        }
        _ => return bad_verb(out, verb, v),
    };
    let negative = i < 0;
    let u = i.unsigned_abs();
    let mut prec = 0;
    if let Some(p) = spec.prec {
        if p == 0 && u == 0 {
            pad(
                out,
                &Spec {
                    zero: false,
                    ..*spec
                },
                "",
            );
            return;
        }
        prec = p;
    } else if spec.zero && !spec.minus {
        if let Some(w) = spec.width {
            prec = w;
            if negative || spec.plus || spec.space {
                prec = prec.saturating_sub(1);
            }
        }
    }
    let mut digits = match (base, upper) {
        (10, _) => u.to_string(),
        (2, _) => format!("{u:b}"),
        (8, _) => format!("{u:o}"),
        (_, false) => format!("{u:x}"),
        (_, true) => format!("{u:X}"),
    };
    if digits.len() < prec {
        digits.insert_str(0, &"0".repeat(prec - digits.len()));
    }
    let mut s = String::with_capacity(digits.len() + 3);
    if negative {
        s.push('-');
    } else if spec.plus {
        s.push('+');
    } else if spec.space {
        s.push(' ');
    }
    if spec.sharp {
        match base {
            2 => s.push_str("0b"),
            8 if !digits.starts_with('0') => s.push('0'),
            16 => s.push_str(if upper { "0X" } else { "0x" }),
            _ => {}
        }
    }
    if verb == 'O' {
        s.push_str("0o");
    }
    s.push_str(&digits);
    pad(
        out,
        &Spec {
            zero: false,
            ..*spec
        },
        &s,
    );
}

fn fmt_float(out: &mut String, spec: &Spec, verb: char, f: f64, v: &Value) {
    let body = match verb {
        'v' | 'g' | 'G' => {
            let s = match spec.prec {
                Some(p) => format_g(f.abs(), Some(p)),
                None => format_g(f.abs(), None),
            };
            if verb == 'G' {
                s.to_uppercase()
            } else {
                s
            }
        }
        'e' | 'E' => {
            let s = format_e(f.abs(), spec.prec.unwrap_or(6));
            if verb == 'E' {
                s.to_uppercase()
            } else {
                s
            }
        }
        'f' | 'F' => format!("{:.*}", spec.prec.unwrap_or(6), f.abs()),
        _ => return bad_verb(out, verb, v),
    };
    if f.is_nan() || f.is_infinite() {
        let s = if f.is_nan() {
            if spec.plus {
                "+NaN"
            } else if spec.space {
                " NaN"
            } else {
                "NaN"
            }
        } else if f < 0.0 {
            "-Inf"
        } else if spec.plus || !spec.space {
            "+Inf"
        } else {
            " Inf"
        };
        pad(
            out,
            &Spec {
                zero: false,
                ..*spec
            },
            s,
        );
        return;
    }
    let sign = if f.is_sign_negative() {
        Some('-')
    } else if spec.plus {
        Some('+')
    } else if spec.space {
        Some(' ')
    } else {
        None
    };
    let len = body.len() + usize::from(sign.is_some());
    match (sign, spec.width) {
        (Some(sign), Some(w)) if spec.zero && !spec.minus && w > len => {
            out.push(sign);
            out.extend(std::iter::repeat_n('0', w - len));
            out.push_str(&body);
        }
        (Some(sign), _) => {
            let mut s = String::with_capacity(len);
            s.push(sign);
            s.push_str(&body);
            pad(out, spec, &s);
        }
        (None, _) => pad(out, spec, &body),
    }
}

/// The decimal digits (no trailing zeros, at least one digit) and the
/// decimal point position of `f` (`0.0123` is `("123", -1)`), shortest
/// round-trip or rounded to `sig` significant digits.
fn decimal_digits(f: f64, sig: Option<usize>) -> (String, i32) {
    let s = match sig {
        None => format!("{f:e}"),
        Some(p) => format!("{:.*e}", p.max(1) - 1, f),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    if digits == "0" {
        return (digits, 1);
    }
    (digits, exp + 1)
}

/// `strconv.FormatFloat(f, 'g', prec, 64)` of a non-negative `f`
/// (`prec` None = shortest).
fn format_g(f: f64, prec: Option<usize>) -> String {
    if !f.is_finite() {
        return String::new();
    }
    let (digits, dp) = decimal_digits(f, prec.map(|p| p.max(1)));
    let nd = digits.len() as i32;
    let shortest = prec.is_none();
    let mut p = prec.map_or(nd, |p| p.max(1) as i32);
    let mut eprec = p;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if shortest {
        eprec = 6;
    }
    let exp = dp - 1;
    if exp < -4 || exp >= eprec {
        if p > nd {
            p = nd;
        }
        return digits_e(&digits, dp, (p - 1).max(0) as usize);
    }
    if p > dp {
        p = nd;
    }
    digits_f(&digits, dp, (p - dp).max(0) as usize)
}

/// `d.ddde±XX` from digits.
fn digits_e(digits: &str, dp: i32, prec: usize) -> String {
    let b = digits.as_bytes();
    let mut s = String::with_capacity(prec + 6);
    s.push(char::from(b[0]));
    if prec > 0 {
        s.push('.');
        for i in 1..=prec {
            s.push(b.get(i).map_or('0', |c| char::from(*c)));
        }
    }
    let exp = if digits == "0" { 0 } else { dp - 1 };
    push_exp(&mut s, exp);
    s
}

/// `ddd.ddd` from digits.
fn digits_f(digits: &str, dp: i32, frac: usize) -> String {
    let b = digits.as_bytes();
    let mut s = String::new();
    if dp > 0 {
        for i in 0..dp as usize {
            s.push(b.get(i).map_or('0', |c| char::from(*c)));
        }
    } else {
        s.push('0');
    }
    if frac > 0 {
        s.push('.');
        for i in 0..frac as i32 {
            let idx = dp + i;
            let c = if idx >= 0 {
                b.get(idx as usize).map_or('0', |c| char::from(*c))
            } else {
                '0'
            };
            s.push(c);
        }
    }
    s
}

fn push_exp(s: &mut String, exp: i32) {
    s.push('e');
    s.push(if exp < 0 { '-' } else { '+' });
    let e = exp.unsigned_abs();
    if e < 10 {
        s.push('0');
    }
    let _ = write!(s, "{e}");
}

/// `%e` with `prec` digits after the point, of a non-negative `f`.
fn format_e(f: f64, prec: usize) -> String {
    if !f.is_finite() {
        return String::new();
    }
    let s = format!("{f:.prec$e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut out = mant.to_string();
    push_exp(&mut out, exp);
    out
}

/// `%v` of a float: `strconv.FormatFloat(f, 'g', -1, 64)`.
#[cfg(test)]
pub(crate) fn format_float(f: f64) -> String {
    let mut s = String::new();
    fmt_float(&mut s, &Spec::default(), 'v', f, &Value::Float(f));
    s
}

fn fmt_string(out: &mut String, spec: &Spec, verb: char, s: &str, v: &Value) {
    match verb {
        'v' | 's' => match spec.prec {
            Some(p) => {
                let end = s.char_indices().nth(p).map_or(s.len(), |(i, _)| i);
                pad(out, spec, &s[..end]);
            }
            None => pad(out, spec, s),
        },
        'q' => {
            let mut q = String::with_capacity(s.len() + 2);
            if spec.sharp && can_backquote(s) {
                q.push('`');
                q.push_str(s);
                q.push('`');
            } else {
                quote_into(&mut q, s, spec.plus);
            }
            pad(out, spec, &q);
        }
        'x' | 'X' => {
            let bytes = s.as_bytes();
            let n = spec.prec.map_or(bytes.len(), |p| p.min(bytes.len()));
            let mut h = String::with_capacity(n * 3);
            for (i, c) in bytes[..n].iter().enumerate() {
                if spec.space && i > 0 {
                    h.push(' ');
                }
                if spec.sharp && (spec.space || i == 0) {
                    h.push_str(if verb == 'x' { "0x" } else { "0X" });
                }
                if verb == 'x' {
                    let _ = write!(h, "{c:02x}");
                } else {
                    let _ = write!(h, "{c:02X}");
                }
            }
            pad(out, spec, &h);
        }
        _ => bad_verb(out, verb, v),
    }
}

/// An approximation of Go's `strconv.IsPrint`: letters, marks, numbers,
/// punctuation, symbols and the ASCII space; not controls, other spaces or
/// format characters.
pub(crate) fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c,
        '\u{AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{FDD0}'..='\u{FDEF}' | '\u{FFFE}' | '\u{FFFF}'
        | '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{10FFFF}')
}

fn can_backquote(s: &str) -> bool {
    s.chars()
        .all(|c| c != '`' && c != '\u{FEFF}' && (c == '\t' || !c.is_control()))
}

/// Go's `strconv.Quote` (or `QuoteToASCII` when `ascii`).
pub(crate) fn quote_into(out: &mut String, s: &str, ascii: bool) {
    out.push('"');
    for c in s.chars() {
        escape_char(out, c, '"', ascii);
    }
    out.push('"');
}

fn quote_rune_into(out: &mut String, c: char, ascii: bool) {
    out.push('\'');
    escape_char(out, c, '\'', ascii);
    out.push('\'');
}

fn escape_char(out: &mut String, c: char, quote: char, ascii: bool) {
    if c == quote || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if (c.is_ascii() || !ascii) && is_print(c) {
        out.push(c);
        return;
    }
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(f: f64) -> String {
        format_float(f)
    }

    #[test]
    fn float_v_is_shortest_g() {
        assert_eq!(v(1e6), "1e+06");
        assert_eq!(v(100000.0), "100000");
        assert_eq!(v(3.5), "3.5");
        assert_eq!(v(1e-7), "1e-07");
        assert_eq!(v(0.0001), "0.0001");
        assert_eq!(v(0.00001), "1e-05");
        assert_eq!(v(123456789.0), "1.23456789e+08");
        assert_eq!(v(15.1), "15.1");
        assert_eq!(v(0.0), "0");
        assert_eq!(v(-0.0), "-0");
        assert_eq!(v(-2.5), "-2.5");
        assert_eq!(v(1e21), "1e+21");
        assert_eq!(v(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(v(f64::INFINITY), "+Inf");
        assert_eq!(v(f64::NEG_INFINITY), "-Inf");
        assert_eq!(v(f64::NAN), "NaN");
    }

    fn f(fmt: &str, args: &[Value]) -> String {
        sprintf(fmt, args)
    }

    #[test]
    fn printf_ints() {
        assert_eq!(f("%d", &[17.into()]), "17");
        assert_eq!(f("%5d|", &[42.into()]), "   42|");
        assert_eq!(f("%-5d|", &[42.into()]), "42   |");
        assert_eq!(f("%05d", &[(-42).into()]), "-0042");
        assert_eq!(f("%+d", &[5.into()]), "+5");
        assert_eq!(f("%.3d", &[7.into()]), "007");
        assert_eq!(f("%04x", &[127.into()]), "007f");
        assert_eq!(f("%X", &[255.into()]), "FF");
        assert_eq!(f("%#x", &[255.into()]), "0xff");
        assert_eq!(f("%o", &[8.into()]), "10");
        assert_eq!(f("%#o", &[8.into()]), "010");
        assert_eq!(f("%O", &[8.into()]), "0o10");
        assert_eq!(f("%b", &[5.into()]), "101");
        assert_eq!(f("%c", &[65.into()]), "A");
        assert_eq!(f("%q", &[65.into()]), "'A'");
        assert_eq!(f("%U", &[0x41.into()]), "U+0041");
        assert_eq!(f("%#U", &[0x263a.into()]), "U+263A '☺'");
        assert_eq!(f("%v", &[(-3).into()]), "-3");
        assert_eq!(f("%.0d", &[0.into()]), "");
    }

    #[test]
    fn printf_floats() {
        assert_eq!(f("%f", &[3.5.into()]), "3.500000");
        assert_eq!(f("%.2f", &[3.14259.into()]), "3.14");
        assert_eq!(f("%.2f", &[2.675.into()]), "2.67"); // 2.675 is 2.67499999...
        assert_eq!(f("%8.3f|", &[3.14259.into()]), "   3.143|");
        assert_eq!(f("%-8.2f|", &[2.5.into()]), "2.50    |");
        assert_eq!(f("%08.2f", &[(-2.5).into()]), "-0002.50");
        assert_eq!(f("%+.1f", &[2.0.into()]), "+2.0");
        assert_eq!(f("%e", &[1234.5678.into()]), "1.234568e+03");
        assert_eq!(f("%E", &[0.000123.into()]), "1.230000E-04");
        assert_eq!(f("%.2e", &[0.0.into()]), "0.00e+00");
        assert_eq!(f("%g", &[3.5.into()]), "3.5");
        assert_eq!(f("%g", &[1e6.into()]), "1e+06");
        assert_eq!(f("%.3g", &[3.14259.into()]), "3.14");
        assert_eq!(f("%.3g", &[1234.5.into()]), "1.23e+03");
        assert_eq!(f("%.10g", &[100.0.into()]), "100");
        assert_eq!(f("%G", &[1e-7.into()]), "1E-07");
        assert_eq!(f("%v", &[2.0.into()]), "2");
        assert_eq!(f("%6.2f|", &[f64::INFINITY.into()]), "  +Inf|");
    }

    #[test]
    fn printf_strings_and_bools() {
        assert_eq!(f("%s", &["hello".into()]), "hello");
        assert_eq!(f("%-5s|", &["ab".into()]), "ab   |");
        assert_eq!(f("%5s|", &["ab".into()]), "   ab|");
        assert_eq!(f("%.2s", &["héllo".into()]), "hé");
        assert_eq!(f("%q", &["a\"b\n".into()]), r#""a\"b\n""#);
        assert_eq!(f("%#q", &["zeroArgs".into()]), "`zeroArgs`");
        assert_eq!(f("%+q", &["é".into()]), r#""\u00e9""#);
        assert_eq!(f("%x", &["hi".into()]), "6869");
        assert_eq!(f("% X", &["hi".into()]), "68 69");
        assert_eq!(f("%t", &[true.into()]), "true");
        assert_eq!(f("%v", &[false.into()]), "false");
        assert_eq!(f("%5t|", &[true.into()]), " true|");
        assert_eq!(f("100%%", &[]), "100%");
    }

    #[test]
    fn printf_errors_in_band() {
        assert_eq!(f("%d", &["x".into()]), "%!d(string=x)");
        assert_eq!(f("%s", &[5.into()]), "%!s(int=5)");
        assert_eq!(f("%f", &[5.into()]), "%!f(int=5)");
        assert_eq!(f("%d", &[Value::Nil]), "%!d(<nil>)");
        assert_eq!(f("%v", &[Value::Nil]), "<nil>");
        assert_eq!(f("%d %d", &[1.into()]), "1 %!d(MISSING)");
        assert_eq!(f("%d", &[1.into(), "a".into()]), "1%!(EXTRA string=a)");
        assert_eq!(f("x", &[1.into(), 2.into()]), "x%!(EXTRA int=1, int=2)");
        assert_eq!(f("%", &[]), "%!(NOVERB)");
        assert_eq!(f("%z", &[1.into()]), "%!z(int=1)");
    }

    #[test]
    fn printf_misc() {
        assert_eq!(
            f("%T %T %T", &[1.into(), 1.5.into(), "s".into()]),
            "int float64 string"
        );
        assert_eq!(f("%*d", &[5.into(), 1.into()]), "    1");
        assert_eq!(f("%[2]d %[1]d", &[1.into(), 2.into()]), "2 1");
        assert_eq!(f("%v", &[Value::list([1, 2])]), "[1 2]");
        assert_eq!(f("%d", &[Value::list([1, 2])]), "[1 2]");
        assert_eq!(f("%q", &[Value::list(["a", "b"])]), r#"["a" "b"]"#);
        assert_eq!(f("%v", &[Value::map([("b", 2), ("a", 1)])]), "map[a:1 b:2]");
        assert_eq!(f("%05s", &["ab".into()]), "000ab");
    }

    #[test]
    fn sprint_spacing() {
        assert_eq!(sprint(&[1.into(), 2.into(), 3.into()]), "1 2 3");
        assert_eq!(sprint(&["a".into(), "b".into()]), "ab");
        assert_eq!(
            sprint(&["a".into(), 1.into(), 2.into(), "b".into()]),
            "a1 2b"
        );
        assert_eq!(sprint(&[Value::Nil]), "<nil>");
        assert_eq!(sprintln(&["a".into(), 1.into()]), "a 1\n");
    }

    #[test]
    fn values_print_like_go() {
        let mut s = String::new();
        write_value(
            &mut s,
            &Value::list([Value::from("a"), Value::Nil, Value::from(1.5)]),
        );
        assert_eq!(s, "[a <nil> 1.5]");
        s.clear();
        write_value(
            &mut s,
            &Value::map([("k", Value::list([1, 2])), ("a", Value::map([("x", true)]))]),
        );
        assert_eq!(s, "map[a:map[x:true] k:[1 2]]");
        s.clear();
        write_value(&mut s, &Value::NoValue);
        assert_eq!(s, "<no value>");
    }
}
