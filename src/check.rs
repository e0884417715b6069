//! `sidekick check` and `sidekick render`: a confdir tried by hand, with no
//! file written and no command run. Both load conf.d through the engine
//! ([`Engine::new`]: the resource loader's and the template parsers'
//! file:line errors, the same-`dest` rule) and render through its render step
//! ([`Engine::render_to_memory`]: `max_output`, `render_timeout` and
//! `output_format` included); neither reaches the pipeline.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use sidekick_backend::{Backend, Snapshot};
use sidekick_backend_env::EnvBackend;
use sidekick_backend_file::FileBackend;

use crate::config::Settings;
use crate::engine::Engine;
use crate::report::Reporter;

/// `sidekick check [--data F] [--exec]`: one line per resource (`ok` or
/// `error`, in file order) and a summary on stdout. Exit 1 when any resource
/// (or the data) failed, or when conf.d holds no resource at all.
pub(crate) fn check(settings: Settings, data: &[PathBuf], exec: bool) -> anyhow::Result<u8> {
    let confd = settings.confd_dir();
    let backend: Arc<dyn Backend> = if data.is_empty() {
        // Nothing is rendered, so nothing asks it for data.
        Arc::new(EnvBackend::new())
    } else {
        data_backend(&settings, data)?
    };
    let mut engine = load(settings, Ok(Arc::clone(&backend)), exec)?;
    if engine.resources().next().is_none() && engine.broken().is_empty() {
        anyhow::bail!("no template resources (*.toml) in {}", confd.display());
    }
    // With --data, every source (named ones too) reads the data files.
    let data_error = if data.is_empty() {
        None
    } else {
        let all = engine.all();
        engine.sources_of(&all).into_iter().find_map(|s| {
            match load_data(&backend, &engine.interest_in(s, &all)) {
                Ok(snapshot) => {
                    engine.set_data_of(s, snapshot);
                    None
                }
                Err(e) => Some(format!("{e:#}")),
            }
        })
    };
    let render = !data.is_empty() && data_error.is_none();

    let mut lines: Vec<(&Path, Result<String, String>)> = Vec::new();
    for (i, resource) in engine.resources().enumerate() {
        let rendered = if render {
            engine
                .render_to_memory(i)
                .map(|text| format!(", {} bytes", text.len()))
        } else {
            Ok(String::new())
        };
        let line = rendered.map(|size| {
            format!(
                "{} -> {}{size}",
                resource.renderer.engine().as_str(),
                resource.dest.display()
            )
        });
        lines.push((&resource.file, line));
    }
    for e in engine.broken() {
        lines.push((e.file(), Err(e.to_string())));
    }
    lines.sort_by(|a, b| a.0.cmp(b.0));

    let failed = lines.iter().filter(|(_, l)| l.is_err()).count();
    let mut out = std::io::stdout().lock();
    for (file, line) in &lines {
        let name = short_name(&confd, file);
        match line {
            Ok(detail) => writeln!(out, "ok     {name}: {detail}")?,
            Err(message) => writeln!(out, "error  {name}: {}", indent(message))?,
        }
    }
    if let Some(e) = &data_error {
        writeln!(out, "error  data: {}", indent(e))?;
    }
    let how = match (data.is_empty(), &data_error) {
        (true, _) => "parsed, not rendered (--data F renders them)",
        (false, None) => "parsed and rendered",
        (false, Some(_)) => "parsed; the data did not load, so none rendered",
    };
    writeln!(
        out,
        "{} resource{}: {} ok, {failed} failed; {how}",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        lines.len() - failed,
    )?;
    out.flush()?;
    Ok(if failed > 0 || data_error.is_some() {
        1
    } else {
        0
    })
}

/// `sidekick render RESOURCE [--data F]`: the resource's render on stdout,
/// exactly the bytes a pass would write, and nothing else. Other resources
/// that fail to load are not reported (only `RESOURCE` is rendered).
pub(crate) fn render(settings: Settings, wanted: &str, data: &[PathBuf]) -> anyhow::Result<u8> {
    let confd = settings.confd_dir();
    let data_files = if data.is_empty() {
        None
    } else {
        Some(data_backend(&settings, data)?)
    };
    let backend = match &data_files {
        None => crate::backend::build(&settings),
        Some(b) => Ok(Arc::clone(b)),
    };
    // Loaded as `exec` would: a resource meant for `sidekick exec` renders too
    // (rendering never signals anything).
    let mut engine = load(settings, backend, true)?;
    let i = match find(&engine, &confd, wanted)? {
        Found::Loaded(i) => i,
        Found::Broken(message) => anyhow::bail!("{message}"),
    };
    // Each source the resource reads, from its own backend (or the data files).
    for s in engine.sources_of(&[i]) {
        let from = data_files
            .clone()
            .unwrap_or_else(|| Arc::clone(engine.source_backend(s)));
        let snapshot = load_data(&from, &engine.interest_in(s, &[i]))?;
        engine.set_data_of(s, snapshot);
    }
    let text = engine.render_to_memory(i).map_err(|message| {
        let file = engine
            .resources()
            .nth(i)
            .map(|r| short_name(&confd, &r.file));
        // Tera's reports start with "error: ", which sidekick's line says.
        let message = message.strip_prefix("error: ").unwrap_or(&message);
        anyhow::anyhow!("{}: {message}", file.unwrap_or_default())
    })?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write the render to stdout")?;
    Ok(0)
}

/// The engine with conf.d loaded, without the log lines loading writes (each
/// command reports the resources it is about itself). `noop`: an engine that
/// is not noop removes stale stage files, and these commands write nothing.
fn load(
    mut settings: Settings,
    backend: Result<Arc<dyn Backend>, crate::backend::BuildError>,
    exec: bool,
) -> anyhow::Result<Engine> {
    settings.noop = true;
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
        Engine::new(settings, backend, Reporter::Log, exec)
    })
}

/// The file backend reading `data` (and `--services-file`, when given), as
/// `--backend file --file F` would.
fn data_backend(settings: &Settings, data: &[PathBuf]) -> anyhow::Result<Arc<dyn Backend>> {
    let services = settings.backends.file.services_file.clone();
    let backend = FileBackend::new(data.iter().cloned(), services)
        .map_err(|e| anyhow::anyhow!("--data: {e}"))?;
    Ok(Arc::new(backend))
}

/// One `Backend::load` of `interest`, as `--onetime` does.
fn load_data(
    backend: &Arc<dyn Backend>,
    interest: &sidekick_backend::Interest,
) -> anyhow::Result<Snapshot> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(backend.load(interest))
        .map_err(|e| anyhow::anyhow!(e))
}

/// Which resource `render` was asked for.
enum Found {
    /// Loaded: its index.
    Loaded(usize),
    /// Its file did not load: why.
    Broken(String),
}

/// The resource `wanted` names: a path to its file, its path under conf.d, or
/// (when no path matches) its file name in a subdirectory, each with or
/// without `.toml`. An unknown or ambiguous name is an error listing the
/// candidates.
fn find(engine: &Engine, confd: &Path, wanted: &str) -> anyhow::Result<Found> {
    let mut candidates: Vec<(&Path, Found)> = engine
        .resources()
        .enumerate()
        .map(|(i, r)| (r.file.as_path(), Found::Loaded(i)))
        .collect();
    candidates.extend(
        engine
            .broken()
            .iter()
            .map(|e| (e.file(), Found::Broken(e.to_string()))),
    );
    candidates.sort_by(|a, b| a.0.cmp(b.0));
    let by_path = Path::new(wanted).canonicalize().ok();
    let names = [wanted.to_string(), format!("{wanted}.toml")];
    // 0: the file's own path; 1: its file name only.
    let rank = |file: &Path| {
        let is_path = by_path.as_deref() == Some(file)
            || names.iter().any(|n| {
                file.strip_prefix(confd)
                    .is_ok_and(|rel| rel == Path::new(n))
            });
        let is_name = names
            .iter()
            .any(|n| file.file_name().is_some_and(|f| f == n.as_str()));
        if is_path {
            Some(0)
        } else if is_name {
            Some(1)
        } else {
            None
        }
    };
    let known: Vec<String> = candidates
        .iter()
        .map(|(f, _)| short_name(confd, f))
        .collect();
    let best = candidates.iter().filter_map(|(f, _)| rank(f)).min();
    let mut hits: Vec<(&Path, Found)> = candidates
        .into_iter()
        .filter(|(f, _)| best.is_some() && rank(f) == best)
        .collect();
    match hits.len() {
        1 => Ok(hits.remove(0).1),
        0 if known.is_empty() => anyhow::bail!(
            "no resource {wanted:?}: {} holds no template resources (*.toml)",
            confd.display()
        ),
        0 => anyhow::bail!(
            "no resource {wanted:?} in {}; the resources are: {}",
            confd.display(),
            known.join(", ")
        ),
        _ => anyhow::bail!(
            "{wanted:?} names more than one resource: {}; give its path under conf.d",
            hits.iter()
                .map(|(f, _)| short_name(confd, f))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A resource file as shown to a person: its path under conf.d.
fn short_name(confd: &Path, file: &Path) -> String {
    file.strip_prefix(confd)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// `message` with every line after the first indented under the report's
/// columns (Tera's reports span lines).
fn indent(message: &str) -> String {
    // Tera's reports start with "error: ", which the line already says.
    let message = message.strip_prefix("error: ").unwrap_or(message);
    message.trim_end().replace('\n', "\n       ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_lines_are_indented_under_the_message() {
        assert_eq!(indent("a\n --> b:2:3\n"), "a\n        --> b:2:3");
        assert_eq!(indent("one line"), "one line");
        assert_eq!(indent("error: key not found"), "key not found");
    }

    #[test]
    fn short_names_are_paths_under_conf_d() {
        let confd = Path::new("/c/conf.d");
        assert_eq!(short_name(confd, Path::new("/c/conf.d/a.toml")), "a.toml");
        assert_eq!(
            short_name(confd, Path::new("/c/conf.d/sub/b.toml")),
            "sub/b.toml"
        );
        assert_eq!(short_name(confd, Path::new("/x/b.toml")), "/x/b.toml");
    }
}
