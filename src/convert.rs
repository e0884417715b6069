//! `sidekick convert`: writes a copy of a confdir whose Go templates
//! (confd's) are Tera templates, so a confd setup can move to the Tera engine
//! when it wants to. What maps one to one is converted; an action that does
//! not is left as a Tera comment naming its line (`render/go/convert.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::render::go::convert::convert;
use crate::resource::{fold_field_case, resource_files};

/// Converts `confdir` into `out` (`conf.d/` and the templates the resources
/// name); prints what it wrote and the lines left for a person. Returns the
/// exit code: 0, or 1 when a template could not be parsed.
pub(crate) fn run(confdir: &Path, out: &Path) -> anyhow::Result<u8> {
    if std::path::absolute(out).ok() == std::path::absolute(confdir).ok() {
        anyhow::bail!("convert: --out must be another directory than the confdir");
    }
    let confd = confdir.join("conf.d");
    let templates = confdir.join("templates");
    let files = resource_files(&confd)
        .with_context(|| format!("cannot read template resources in {}", confd.display()))?;
    let mut done: BTreeSet<PathBuf> = BTreeSet::new();
    let mut failed = false;
    let mut left = 0usize;
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let table: toml::Table = toml::from_str(&fold_field_case(&text))
            .with_context(|| format!("{}: not a resource file", file.display()))?;
        let section = table.get("template").and_then(toml::Value::as_table);
        let src = section
            .and_then(|t| t.get("src"))
            .and_then(toml::Value::as_str);
        let engine = section
            .and_then(|t| t.get("engine"))
            .and_then(toml::Value::as_str);
        let rel = file.strip_prefix(confdir).unwrap_or(&file);
        // The resource, without an `engine = "go"` line: Tera is the default.
        let kept: String = text
            .split_inclusive('\n')
            .filter(|l| {
                let t = l.trim_start().to_ascii_lowercase();
                !(engine == Some("go") && t.starts_with("engine") && t.contains("go"))
            })
            .collect();
        write(&out.join(rel), &kept)?;
        let Some(src) = src else { continue };
        let from = templates.join(src);
        if !done.insert(from.clone()) {
            continue;
        }
        let to = out.join("templates").join(src);
        let source = std::fs::read_to_string(&from)
            .with_context(|| format!("cannot read template {}", from.display()))?;
        if engine == Some("tera") {
            write(&to, &source)?;
            println!("copied   {} (already Tera)", from.display());
            continue;
        }
        let name = from
            .file_name()
            .map_or_else(|| src.to_string(), |n| n.to_string_lossy().into_owned());
        match convert(&name, &source) {
            Ok(c) => {
                write(&to, &c.text)?;
                println!("converted {} -> {}", from.display(), to.display());
                for line in &c.unconverted {
                    println!(
                        "  {}:{line}: not converted (left as a comment in {})",
                        from.display(),
                        to.display()
                    );
                }
                left += c.unconverted.len();
            }
            Err(e) => {
                eprintln!("sidekick: convert: {}: {e}", from.display());
                failed = true;
            }
        }
    }
    println!(
        "{} template(s) in {}; {left} line(s) to port by hand; render it with `sidekick --confdir {}`",
        done.len(),
        out.display(),
        out.display()
    );
    Ok(u8::from(failed))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
