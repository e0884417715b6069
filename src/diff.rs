//! Unified diffs of a destination's old and new content, for `--diff` and dev mode.

use std::io::Write;
use std::path::Path;

use similar::{ChangeTag, TextDiff};

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// The unified diff from `old` to `new`, headed by the destination path.
pub(crate) fn unified(dest: &Path, old: &str, new: &str, color: bool) -> String {
    let diff = TextDiff::from_lines(old, new);
    let mut out = String::new();
    let name = dest.display().to_string();
    let (bold, red, green, cyan, reset) = if color {
        (BOLD, RED, GREEN, CYAN, RESET)
    } else {
        ("", "", "", "", "")
    };
    out.push_str(&format!(
        "{bold}--- {name}{reset}\n{bold}+++ {name} (new){reset}\n"
    ));
    for group in diff.grouped_ops(3) {
        let (first, last) = match (group.first(), group.last()) {
            (Some(f), Some(l)) => (f, l),
            _ => continue,
        };
        let (o, n) = (first.old_range().start, first.new_range().start);
        let (ol, nl) = (last.old_range().end - o, last.new_range().end - n);
        out.push_str(&format!(
            "{cyan}@@ -{} +{} @@{reset}\n",
            range(o, ol),
            range(n, nl)
        ));
        for op in &group {
            for change in diff.iter_changes(op) {
                let (sign, colour) = match change.tag() {
                    ChangeTag::Delete => ('-', red),
                    ChangeTag::Insert => ('+', green),
                    ChangeTag::Equal => (' ', ""),
                };
                let text = change.value();
                let reset = if colour.is_empty() { "" } else { reset };
                out.push_str(&format!(
                    "{colour}{sign}{}{reset}\n",
                    text.trim_end_matches('\n')
                ));
                if !text.ends_with('\n') {
                    out.push_str("\\ No newline at end of file\n");
                }
            }
        }
    }
    out
}

/// Unified-diff line range: `start,len` (1-based; `start` is the line before an empty hunk).
fn range(start: usize, len: usize) -> String {
    match len {
        1 => format!("{}", start + 1),
        0 => format!("{start},0"),
        _ => format!("{},{len}", start + 1),
    }
}

/// Writes the diff to stdout in one piece.
pub(crate) fn print(dest: &Path, old: &str, new: &str, color: bool) {
    let text = unified(dest, old, new, color);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// For files rendered from secrets: the header and how many bytes of changed
/// lines there are, never the lines themselves.
pub(crate) fn secret_summary(dest: &Path, old: &str, new: &str) -> String {
    let diff = TextDiff::from_lines(old, new);
    let changed: usize = diff
        .iter_all_changes()
        .filter(|c| c.tag() != ChangeTag::Equal)
        .map(|c| c.value().len())
        .sum();
    let name = dest.display();
    format!("--- {name}\n+++ {name} (new)\n<secret: {changed} bytes changed>\n")
}

/// Writes the secret summary to stdout.
pub(crate) fn print_secret(dest: &Path, old: &str, new: &str) {
    let text = secret_summary(dest, old, new);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_unified_diff() {
        let d = unified(Path::new("/x"), "a\nb\nc\n", "a\nB\nc\n", false);
        assert_eq!(d, "--- /x\n+++ /x (new)\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
    }

    #[test]
    fn secret_shows_size_only() {
        let d = secret_summary(Path::new("/x"), "a\npw=old\n", "a\npw=newer\n");
        assert_eq!(d, "--- /x\n+++ /x (new)\n<secret: 16 bytes changed>\n");
    }

    #[test]
    fn new_file() {
        let d = unified(Path::new("/x"), "", "a\n", false);
        assert_eq!(d, "--- /x\n+++ /x (new)\n@@ -0,0 +1 @@\n+a\n");
    }
}
