//! YAML 1.1 scalars, as confd's file backend reads them (Go's `yaml.v2`),
//! on top of the YAML 1.2 parser: before parsing, a plain (unquoted) scalar
//! that YAML 1.1 resolves differently is rewritten to what 1.1 makes of it:
//!
//! - `yes`, `Yes`, `YES`, `on`, `On`, `ON` are `true`; `no`, `No`, `NO`,
//!   `off`, `Off`, `OFF` are `false` (but a lone `y`, `Y`, `n` or `N`, which
//!   `yaml.v2` also reads as a boolean, stays a letter: `name: n` is `n`);
//! - an integer with a leading `0` is octal (`0755` is `493`), and `0b...`
//!   binary; `_` may separate digits (`1_000`);
//! - a leading-zero number that is not octal (`08`) is a float, printed `8`.
//!
//! The rest already agrees (`1e3` and `.inf` are floats, `~` and `null` are
//! null, `0x1F` is 31), and how values print is the flattener's part. Only
//! block-style lines are rewritten (`key: value`, `- value`); flow
//! collections, block scalars (`|`, `>`) and quoted or multi-line scalars
//! are left as written. Offsets change only within a rewritten line, so the
//! parser's line numbers stay right.

use std::borrow::Cow;

/// `text` with YAML 1.1-only plain scalars rewritten (see the module doc).
pub(crate) fn rewrite(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    // Indent of the key whose block scalar (`|`, `>`) is being skipped.
    let mut block: Option<usize> = None;
    // Inside a flow collection or quoted scalar spanning lines.
    let mut open_flow = 0i32;
    let mut open_quote: Option<char> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let body = line.trim_end_matches(['\n', '\r']);
        let indent = body.len() - body.trim_start_matches(' ').len();
        if let Some(b) = block {
            if body.trim().is_empty() || indent > b {
                continue;
            }
            block = None;
        }
        if let Some(q) = open_quote {
            if closes_quote(body, q) {
                open_quote = None;
            }
            continue;
        }
        if open_flow > 0 {
            open_flow += flow_depth(body);
            continue;
        }
        let Some((at, value)) = value_of(body) else {
            continue;
        };
        let value = strip_comment(value);
        match value.chars().next() {
            Some('|' | '>') => {
                block = Some(indent);
                continue;
            }
            Some('[' | '{') => {
                open_flow = flow_depth(value).max(0);
                continue;
            }
            Some(q @ ('"' | '\'')) => {
                if !closes_quote(&value[1..], q) {
                    open_quote = Some(q);
                }
                continue;
            }
            _ => {}
        }
        if let Some(resolved) = resolve(value) {
            let s = out.get_or_insert_with(|| text.to_string());
            // Earlier rewrites may have changed lengths: find the line anew.
            let shift = s.len() as isize - text.len() as isize;
            let from = (start + at) as isize + shift;
            let from = from as usize;
            s.replace_range(from..from + value.len(), &resolved);
        }
    }
    match out {
        Some(s) => Cow::Owned(s),
        None => Cow::Borrowed(text),
    }
}

/// The value part of a block-style line and its byte offset in the line:
/// after `key: ` or a run of `- `. `None` for lines with no scalar value.
fn value_of(line: &str) -> Option<(usize, &str)> {
    let mut i = line.len() - line.trim_start_matches(' ').len();
    let b = line.as_bytes();
    // Sequence entries: `- `, `- - `.
    while b.get(i) == Some(&b'-') && matches!(b.get(i + 1), Some(b' ') | None) {
        i += 2;
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
    }
    let rest = line.get(i..)?;
    if rest.is_empty() || rest.starts_with('#') || rest.starts_with("---") {
        return None;
    }
    // A key: plain (up to the first `: `) or quoted.
    let key_end = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let close = rest[1..].find(q)? + 1;
            let after = &rest[close + 1..];
            after.starts_with(':').then_some(close + 1)
        }
        _ => rest
            .find(": ")
            .or_else(|| rest.ends_with(':').then(|| rest.len() - 1)),
    };
    match key_end {
        Some(k) => {
            let after = &rest[k + 1..];
            let value = after.trim_start_matches(' ');
            let at = i + k + 1 + (after.len() - value.len());
            (!value.is_empty()).then_some((at, value))
        }
        // No key: the line is a sequence entry's scalar, or a continuation.
        None if i > 0 && line[..i].trim_end().ends_with('-') => Some((i, rest)),
        None => None,
    }
}

/// `value` without a trailing ` # comment` and spaces.
fn strip_comment(value: &str) -> &str {
    let cut = value.find(" #").unwrap_or(value.len());
    value[..cut].trim_end()
}

/// Net `[`/`{` minus `]`/`}` on a line, quotes not counted.
fn flow_depth(s: &str) -> i32 {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, '#') => break,
            _ => {}
        }
    }
    depth
}

fn closes_quote(s: &str, q: char) -> bool {
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && q == '"' {
            escaped = true;
        } else if c == q {
            return true;
        }
    }
    false
}

/// What YAML 1.1 makes of a plain scalar where YAML 1.2 differs, written
/// so the 1.2 parser reads that value.
fn resolve(v: &str) -> Option<String> {
    match v {
        "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Some("true".into()),
        "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Some("false".into()),
        _ => {}
    }
    let (sign, digits) = match v.strip_prefix(['-', '+']) {
        Some(rest) => (&v[..1], rest),
        None => ("", v),
    };
    let plain: String = digits.chars().filter(|c| *c != '_').collect();
    if plain.is_empty() || (plain.len() == digits.len() && !needs_1_1(&plain)) {
        return None;
    }
    let sign = if sign == "-" { "-" } else { "" };
    if let Some(bin) = plain.strip_prefix("0b") {
        return i64::from_str_radix(bin, 2)
            .ok()
            .map(|n| format!("{sign}{n}"));
    }
    if let Some(hex) = plain.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16)
            .ok()
            .map(|n| format!("{sign}{n}"));
    }
    if plain.len() > 1 && plain.starts_with('0') && plain.bytes().all(|b| b.is_ascii_digit()) {
        // Octal as Go's ParseInt(s, 0, 64) reads it; else (`08`) a float.
        return Some(match i64::from_str_radix(&plain[1..], 8) {
            Ok(n) => format!("{sign}{n}"),
            Err(_) => format!("{sign}{}", plain.trim_start_matches('0')),
        });
    }
    if plain.bytes().all(|b| b.is_ascii_digit()) {
        // `1_000`.
        return Some(format!("{sign}{plain}"));
    }
    None
}

/// Whether an underscore-free number is one YAML 1.1 reads differently:
/// a leading zero (octal) or `0b` (binary).
fn needs_1_1(plain: &str) -> bool {
    (plain.len() > 1 && plain.starts_with('0') && plain.bytes().all(|b| b.is_ascii_digit()))
        || plain.starts_with("0b")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_1_1_scalars_in_block_lines_only() {
        let text = "a: yes\nb: on # c\nc: 'yes'\nd: \"no\"\ne: 0755\nf: 08\ng: 1_000\nh: -0b11\nlist:\n  - off\n  - Y\n  - n\ni: [yes, no]\nj: |\n  yes\nk: 10\nl: 0x1F\nm: yesterday\nn: 0\n";
        assert_eq!(
            rewrite(text),
            "a: true\nb: true # c\nc: 'yes'\nd: \"no\"\ne: 493\nf: 8\ng: 1000\nh: -3\nlist:\n  - false\n  - Y\n  - n\ni: [yes, no]\nj: |\n  yes\nk: 10\nl: 0x1F\nm: yesterday\nn: 0\n"
        );
        assert!(matches!(rewrite("a: 1\nb: x\n"), Cow::Borrowed(_)));
    }
}
