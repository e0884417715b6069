//! Template resources: confd's `conf.d/NAME.toml` files, read as-is.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use serde::Deserialize;
use sidekick_backend::{join_prefix, normalize_key};
use toml::Spanned;

use crate::debounce::{parse_duration, Wait};
use crate::reload::{parse_signal, Target};
use crate::render::{RenderError, Renderer, TemplateEngine};
use crate::source::{self, SourceSpec, TableKind};

/// The `[template]` table of a resource file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceFile {
    template: TemplateSection,
    /// A backend of the resource's own (`source.rs` reads it).
    #[allow(dead_code)] // Present so that the table is not an unknown field.
    backend: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateSection {
    src: Spanned<String>,
    dest: Spanned<String>,
    /// Key prefixes the template reads, relative to the prefix. `["/"]` is
    /// everything under it; `[]` is no keys at all (a template that reads only
    /// the service catalog, the environment or files), as in confd; left out,
    /// everything under the prefix.
    keys: Option<Vec<String>>,
    prefix: Option<String>,
    mode: Option<Spanned<String>>,
    uid: Option<u32>,
    gid: Option<u32>,
    owner: Option<Spanned<String>>,
    check_cmd: Option<String>,
    reload_cmd: Option<String>,
    output_format: Option<Spanned<String>>,
    reload_signal: Option<Spanned<SignalSpec>>,
    pid_file: Option<String>,
    process: Option<String>,
    wait: Option<Spanned<String>>,
    min_reload_interval: Option<Spanned<String>>,
    #[serde(default)]
    restart: bool,
    /// Let an answer with no keys replace a file that has content (a
    /// deliberate scale to zero); off, such a file is kept.
    #[serde(default)]
    allow_empty: bool,
    /// Largest render written, in bytes or with a unit ("64MB").
    max_output: Option<Spanned<SizeSpec>>,
    /// Longest a render may take ("30s").
    render_timeout: Option<Spanned<String>>,
    /// Longest `check_cmd` may run ("30s"); overrides `--check-cmd-timeout`.
    check_cmd_timeout: Option<Spanned<String>>,
    /// Longest `reload_cmd` (or `reload_url`) may take; overrides `--reload-cmd-timeout`.
    reload_cmd_timeout: Option<Spanned<String>>,
    /// An HTTP endpoint to call after a swap (an app that reloads over HTTP).
    reload_url: Option<Spanned<String>>,
    /// `reload_url`'s method [default: POST].
    reload_method: Option<Spanned<String>>,
    kill_signal: Option<Spanned<SignalSpec>>,
    /// `"go"` or `"tera"`: overrides `--template-engine` for this resource.
    engine: Option<Spanned<String>>,
}

/// The fields of a `[template]` table, as written in lower case; confd's TOML
/// decoder also takes `Src`, `DEST`, ... (Go's `strings.EqualFold`).
const FIELDS: &[&str] = &[
    "src",
    "dest",
    "keys",
    "prefix",
    "mode",
    "uid",
    "gid",
    "owner",
    "check_cmd",
    "reload_cmd",
    "output_format",
    "reload_signal",
    "pid_file",
    "process",
    "wait",
    "min_reload_interval",
    "restart",
    "allow_empty",
    "max_output",
    "render_timeout",
    "check_cmd_timeout",
    "reload_cmd_timeout",
    "reload_url",
    "reload_method",
    "kill_signal",
    "engine",
];

/// `text` with every bare key at the start of a line (and the `[template]`
/// header) that is one of [`FIELDS`] in another case written in lower case,
/// as confd's decoder matches them. Byte offsets stay the same, so errors
/// still point at the right line.
pub(crate) fn fold_field_case(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start().len();
        let rest = &line[indent..];
        let (start, word) = if let Some(inner) = rest.strip_prefix('[') {
            let w: &str = &inner[..inner.find(']').unwrap_or(0)];
            (indent + 1, w.trim())
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            let after = rest[end..].trim_start();
            if end == 0 || !after.starts_with('=') {
                (indent, "")
            } else {
                (indent, &rest[..end])
            }
        };
        let lower = word.to_ascii_lowercase();
        let known = FIELDS.contains(&lower.as_str()) || lower == "template";
        if !word.is_empty() && known && word != lower {
            let s = out.get_or_insert_with(|| text.to_string());
            // Same length: ASCII case only.
            let at = offset + start + (line[start..].find(word).unwrap_or(0));
            s.replace_range(at..at + word.len(), &lower);
        }
        offset += line.len();
    }
    match out {
        Some(s) => std::borrow::Cow::Owned(s),
        None => std::borrow::Cow::Borrowed(text),
    }
}

/// A size as written: bytes, or a string with a unit ("64MB").
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    Bytes(i64),
    Text(String),
}

/// What `render_timeout` is when a resource leaves it out.
pub(crate) const DEFAULT_RENDER_TIMEOUT: Duration = Duration::from_secs(60);

/// What `max_output` is when a resource leaves it out: 64 MiB.
pub(crate) const DEFAULT_MAX_OUTPUT: u64 = 64 * 1024 * 1024;

impl SizeSpec {
    /// Bytes; units K, M, G (also KB, KiB, ...) are powers of 1024.
    fn bytes(&self) -> Result<u64, String> {
        let text = match self {
            SizeSpec::Bytes(n) => {
                return u64::try_from(*n).map_err(|_| format!("{n} is not a size in bytes"))
            }
            SizeSpec::Text(t) => t.trim(),
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (num, unit) = text.split_at(split);
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            _ => {
                return Err(format!(
                    "{text:?} is not a size like \"64MB\", \"512KB\" or 1048576"
                ))
            }
        };
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1 << shift))
            .ok_or_else(|| format!("{text:?} is not a size like \"64MB\", \"512KB\" or 1048576"))
    }
}

/// A signal as written: a name ("SIGHUP", "HUP") or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SignalSpec {
    Number(i64),
    Name(String),
}

impl SignalSpec {
    fn parse(&self) -> Result<Signal, String> {
        match self {
            SignalSpec::Number(n) => parse_signal(&n.to_string()),
            SignalSpec::Name(s) => parse_signal(s),
        }
    }
}

/// What resource loading needs from the run: where templates are, the global
/// prefix and wait, and whether sidekick supervises the executor.
pub(crate) struct LoadContext<'a> {
    pub templates_dir: &'a Path,
    pub prefix: &'a str,
    pub wait: Option<Wait>,
    pub exec: bool,
    /// `--template-engine`, for resources that name none.
    pub engine: TemplateEngine,
    /// `--check-cmd-timeout` and `--reload-cmd-timeout`, for resources that set none.
    pub check_cmd_timeout: Duration,
    pub reload_cmd_timeout: Duration,
    /// The names of the `[backends.NAME]` tables, which templates may read.
    pub named: &'a [String],
}

/// `reload_url` and its method: an HTTP reload hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReloadUrl {
    pub url: String,
    pub method: String,
}

/// A format the rendered output must parse as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    Json,
    Yaml,
    Toml,
}

/// A template resource ready to render: paths resolved, prefix joined, template parsed.
pub(crate) struct Resource {
    /// The conf.d file it came from.
    pub file: PathBuf,
    /// Short name for logs: the conf.d file name.
    pub name: String,
    pub dest: PathBuf,
    /// Normalized prefix (global joined with the resource's).
    pub prefix: String,
    /// Absolute key prefixes the template may read.
    pub visible: Vec<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub check_cmd: Option<String>,
    pub reload_cmd: Option<String>,
    pub output_format: Option<OutputFormat>,
    /// Signal sent to `target` after a successful swap.
    pub reload_signal: Option<Signal>,
    pub target: Option<Target>,
    /// Debounce: quiet period and cap.
    pub wait: Option<Wait>,
    pub min_reload_interval: Option<Duration>,
    /// Restart the supervised child instead of signalling it.
    pub restart: bool,
    pub kill_signal: Signal,
    /// An answer with no keys may replace a file that has content.
    pub allow_empty: bool,
    /// A render longer than this many bytes is refused, not written.
    pub max_output: u64,
    /// A render that takes longer is stopped and refused.
    pub render_timeout: Duration,
    /// A `check_cmd` that runs longer is stopped; the resource fails.
    pub check_cmd_timeout: Duration,
    /// A `reload_cmd` (or `reload_url` call) that takes longer is stopped.
    pub reload_cmd_timeout: Duration,
    pub reload_url: Option<ReloadUrl>,
    /// The template (or an include) calls `service()` or `services()`.
    pub uses_catalog: bool,
    /// Its own `[backend]` table: its keys come from that backend, not the
    /// global one.
    pub backend: Option<SourceSpec>,
    /// The named sources its templates read (`backend="NAME"`).
    pub reads: Vec<String>,
    pub renderer: Box<dyn Renderer>,
}

/// Why a resource file was rejected. Display names the file, and the line and
/// field where known.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResourceError {
    #[error("{}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{}: field `dest`: {} is also the destination of {}; two resources cannot write one file",
        file.display(),
        dest.display(),
        other.display()
    )]
    SameDest {
        file: PathBuf,
        dest: PathBuf,
        other: PathBuf,
    },
    #[error("{}: template {src:?}: {source}", file.display())]
    Template {
        file: PathBuf,
        src: String,
        #[source]
        source: RenderError,
    },
}

impl ResourceError {
    /// The conf.d file this error is about.
    pub fn file(&self) -> &Path {
        match self {
            ResourceError::Read { file, .. }
            | ResourceError::Invalid { file, .. }
            | ResourceError::SameDest { file, .. }
            | ResourceError::Template { file, .. } => file,
        }
    }
}

/// The `*.toml` files in `confd_dir` and, as confd reads them, in its
/// subdirectories, sorted by path.
pub(crate) fn resource_files(confd_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![confd_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A subdirectory that vanished or cannot be read is skipped; the
            // top one must be there.
            Err(e) if dir != confd_dir => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read conf.d subdirectory");
                continue;
            }
            Err(e) => return Err(e),
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "toml") && path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

impl Resource {
    /// Reads and checks one conf.d file; `global_prefix` is `--prefix`.
    pub fn load(file: &Path, ctx: &LoadContext<'_>) -> Result<Resource, ResourceError> {
        let templates_dir = ctx.templates_dir;
        let global_prefix = ctx.prefix;
        let text = std::fs::read_to_string(file).map_err(|source| ResourceError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let invalid = |span: Option<Range<usize>>, message: String| ResourceError::Invalid {
            file: file.to_path_buf(),
            line: span.map_or(1, |s| line_of(&text, s.start)),
            message,
        };
        let folded = fold_field_case(&text);
        let parsed: ResourceFile = toml::from_str(&folded)
            .map_err(|e| invalid(e.span(), e.message().trim_end().to_string()))?;
        let t = parsed.template;
        let backend =
            match parsed.backend {
                None => None,
                Some(_) => source::read_table(file, &folded, "backend", TableKind::Resource)
                    .map_err(|e| ResourceError::Invalid {
                        file: file.to_path_buf(),
                        line: e.line,
                        message: e.message,
                    })?,
            };

        if t.src.get_ref().trim().is_empty() {
            return Err(invalid(Some(t.src.span()), "field `src` is empty".into()));
        }
        if t.dest.get_ref().trim().is_empty() {
            return Err(invalid(Some(t.dest.span()), "field `dest` is empty".into()));
        }
        let src_path = templates_dir.join(t.src.get_ref());
        if !src_path.is_file() {
            return Err(invalid(
                Some(t.src.span()),
                format!(
                    "field `src`: template {} does not exist",
                    src_path.display()
                ),
            ));
        }
        let mode = match &t.mode {
            Some(m) => Some(
                u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8)
                    .ok()
                    .filter(|&mode| mode <= 0o7777)
                    .ok_or_else(|| {
                        invalid(
                            Some(m.span()),
                            format!(
                                "field `mode`: {:?} is not an octal file mode from \"0000\" to \"7777\" (like \"0644\")",
                                m.get_ref()
                            ),
                        )
                    })?,
            ),
            None => None,
        };
        let mut uid = t.uid;
        if let Some(owner) = &t.owner {
            match nix::unistd::User::from_name(owner.get_ref()) {
                Ok(Some(user)) => {
                    uid = Some(user.uid.as_raw());
                }
                _ => {
                    return Err(invalid(
                        Some(owner.span()),
                        format!("field `owner`: no user named {:?}", owner.get_ref()),
                    ))
                }
            }
        }
        let output_format = match &t.output_format {
            None => None,
            Some(f) => Some(match f.get_ref().to_ascii_lowercase().as_str() {
                "json" => OutputFormat::Json,
                "yaml" | "yml" => OutputFormat::Yaml,
                "toml" => OutputFormat::Toml,
                other => {
                    return Err(invalid(
                        Some(f.span()),
                        format!("field `output_format`: {other:?} is not one of json, yaml, toml"),
                    ))
                }
            }),
        };
        let signal = |spec: &Option<Spanned<SignalSpec>>,
                      field: &str|
         -> Result<Option<Signal>, ResourceError> {
            match spec {
                None => Ok(None),
                Some(s) => s
                    .get_ref()
                    .parse()
                    .map(Some)
                    .map_err(|m| invalid(Some(s.span()), format!("field `{field}`: {m}"))),
            }
        };
        let mut reload_signal = signal(&t.reload_signal, "reload_signal")?;
        let kill_signal = signal(&t.kill_signal, "kill_signal")?.unwrap_or(Signal::SIGTERM);
        let target = match (t.pid_file, t.process) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    None,
                    "fields `pid_file` and `process`: set one of them, not both".into(),
                ))
            }
            (Some(p), None) => Some(Target::PidFile(PathBuf::from(p))),
            (None, Some(name)) => Some(Target::Process(name)),
            (None, None) if ctx.exec => Some(Target::Child),
            (None, None) => None,
        };
        if let (Some(spec), None) = (&t.reload_signal, &target) {
            return Err(invalid(
                Some(spec.span()),
                "field `reload_signal`: needs `pid_file` or `process` to say which process gets it \
                 (or run under `sidekick exec`, which signals its child)"
                    .into(),
            ));
        }
        if reload_signal.is_none()
            && matches!(target, Some(Target::PidFile(_) | Target::Process(_)))
        {
            reload_signal = Some(Signal::SIGHUP);
        }
        if t.restart && !ctx.exec {
            tracing::warn!(
                resource = %file.display(),
                "restart = true only has an effect under `sidekick exec`"
            );
        }
        let wait = match &t.wait {
            Some(w) => Some(
                Wait::parse(w.get_ref())
                    .map_err(|m| invalid(Some(w.span()), format!("field `wait`: {m}")))?,
            ),
            None => ctx.wait,
        };
        let min_reload_interval = match &t.min_reload_interval {
            Some(d) => Some(parse_duration(d.get_ref()).map_err(|m| {
                invalid(Some(d.span()), format!("field `min_reload_interval`: {m}"))
            })?),
            None => None,
        };
        let max_output = match &t.max_output {
            Some(m) => m
                .get_ref()
                .bytes()
                .map_err(|e| invalid(Some(m.span()), format!("field `max_output`: {e}")))?,
            None => DEFAULT_MAX_OUTPUT,
        };
        // A time limit: a duration above zero, or the default.
        let limit = |spec: &Option<Spanned<String>>, field: &str, default: Duration| match spec {
            Some(d) => parse_duration(d.get_ref())
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    invalid(
                        Some(d.span()),
                        format!(
                            "field `{field}`: {:?} is not a duration above zero (\"30s\", \"2m\")",
                            d.get_ref()
                        ),
                    )
                }),
            None => Ok(default),
        };
        let render_timeout = limit(&t.render_timeout, "render_timeout", DEFAULT_RENDER_TIMEOUT)?;
        let check_cmd_timeout = limit(
            &t.check_cmd_timeout,
            "check_cmd_timeout",
            ctx.check_cmd_timeout,
        )?;
        let reload_cmd_timeout = limit(
            &t.reload_cmd_timeout,
            "reload_cmd_timeout",
            ctx.reload_cmd_timeout,
        )?;
        let reload_url = match (&t.reload_url, &t.reload_method) {
            (None, Some(m)) => {
                return Err(invalid(
                    Some(m.span()),
                    "field `reload_method`: needs `reload_url`".into(),
                ))
            }
            (None, None) => None,
            (Some(u), method) => {
                let url = u.get_ref().trim();
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || reqwest::Url::parse(url).is_err()
                {
                    return Err(invalid(
                        Some(u.span()),
                        format!("field `reload_url`: {url:?} is not an http:// or https:// URL"),
                    ));
                }
                let method = match method {
                    None => "POST".to_string(),
                    Some(m) => {
                        let upper = m.get_ref().trim().to_ascii_uppercase();
                        if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
                            .contains(&upper.as_str())
                        {
                            return Err(invalid(
                                Some(m.span()),
                                format!(
                                    "field `reload_method`: {:?} is not GET, POST, PUT, PATCH, DELETE or HEAD",
                                    m.get_ref()
                                ),
                            ));
                        }
                        upper
                    }
                };
                Some(ReloadUrl {
                    url: url.to_string(),
                    method,
                })
            }
        };
        let prefix = join_prefix(global_prefix, t.prefix.as_deref().unwrap_or(""));
        // `keys = []` reads nothing from the backend: it must never widen to the
        // whole store (for Consul, every KV pair of the datacenter).
        let visible = match &t.keys {
            None => vec![prefix.clone()],
            Some(keys) => keys.iter().map(|k| join_prefix(&prefix, k)).collect(),
        };
        let engine = match &t.engine {
            None => ctx.engine,
            Some(e) => e
                .get_ref()
                .parse()
                .map_err(|m| invalid(Some(e.span()), format!("field `engine`: {m}")))?,
        };
        let renderer =
            crate::render::load(engine, templates_dir, t.src.get_ref()).map_err(|source| {
                ResourceError::Template {
                    file: file.to_path_buf(),
                    src: t.src.get_ref().clone(),
                    source,
                }
            })?;
        let reads = renderer.backends().to_vec();
        if let Some(unknown) = reads.iter().find(|n| !ctx.named.contains(n)) {
            return Err(ResourceError::Template {
                file: file.to_path_buf(),
                src: t.src.get_ref().clone(),
                source: RenderError::Other {
                    path: templates_dir.join(t.src.get_ref()),
                    message: format!(
                        "reads backend {unknown:?}, which the settings file does not declare \
                         (add a [backends.{unknown}] table to sidekick.toml{})",
                        if ctx.named.is_empty() {
                            String::new()
                        } else {
                            format!("; declared: {}", ctx.named.join(", "))
                        }
                    ),
                },
            });
        }
        Ok(Resource {
            file: file.to_path_buf(),
            name: file.file_name().map_or_else(
                || file.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            dest: PathBuf::from(t.dest.into_inner()),
            prefix: normalize_key(&prefix),
            visible,
            mode,
            uid,
            gid: t.gid,
            check_cmd: t.check_cmd,
            reload_cmd: t.reload_cmd,
            output_format,
            reload_signal,
            target,
            wait,
            min_reload_interval,
            restart: t.restart,
            kill_signal,
            allow_empty: t.allow_empty,
            max_output,
            render_timeout,
            check_cmd_timeout,
            reload_cmd_timeout,
            reload_url,
            uses_catalog: renderer.uses_catalog(),
            backend,
            reads,
            renderer,
        })
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The visible prefixes of a resource with `keys_line` (or none) and
    /// resource prefix `/app`, under `--prefix /prod`.
    fn visible(keys_line: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("templates/t.tmpl"), "x\n").unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            format!(
                "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/t\"\nprefix = \"/app\"\n{keys_line}\n"
            ),
        )
        .unwrap();
        let templates = dir.path().join("templates");
        let ctx = LoadContext {
            templates_dir: &templates,
            prefix: "/prod",
            wait: None,
            exec: false,
            engine: TemplateEngine::Tera,
            check_cmd_timeout: Duration::from_secs(30),
            reload_cmd_timeout: Duration::from_secs(60),
            named: &[],
        };
        Resource::load(&file, &ctx).unwrap().visible
    }

    #[test]
    fn sizes_are_bytes_or_have_a_binary_unit() {
        let size = |t: &str| SizeSpec::Text(t.into()).bytes();
        assert_eq!(SizeSpec::Bytes(1000).bytes(), Ok(1000));
        assert!(SizeSpec::Bytes(-1).bytes().is_err());
        assert_eq!(size("64MB"), Ok(64 << 20));
        assert_eq!(size("64 MiB"), Ok(64 << 20));
        assert_eq!(size("1k"), Ok(1024));
        assert_eq!(size("2G"), Ok(2 << 30));
        assert_eq!(size("12"), Ok(12));
        assert!(size("lots").is_err());
        assert!(size("1.5MB").is_err());
        assert!(size("99999999999999999999G").is_err());
    }

    #[test]
    fn field_names_match_in_any_case_as_confds_decoder() {
        let text = "[Template]\nSrc = \"a\"\n  DEST = \"b\" # Src = x\nKeys = [\n  \"Src = 1\",\n]\ncheck_cmd = \"Mode = 1\"\nBogus = 1\n";
        assert_eq!(
            fold_field_case(text),
            "[template]\nsrc = \"a\"\n  dest = \"b\" # Src = x\nkeys = [\n  \"Src = 1\",\n]\ncheck_cmd = \"Mode = 1\"\nBogus = 1\n"
        );
        assert!(matches!(
            fold_field_case("[template]\nsrc = \"a\"\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn empty_keys_read_nothing_and_slash_reads_everything_under_the_prefix() {
        assert!(visible("keys = []").is_empty());
        assert_eq!(visible("keys = [\"/\"]"), ["/prod/app"]);
        assert_eq!(
            visible("keys = [\"/db\", \"web\"]"),
            ["/prod/app/db", "/prod/app/web"]
        );
        assert_eq!(
            visible(""),
            ["/prod/app"],
            "left out: everything under the prefix"
        );
    }
}
