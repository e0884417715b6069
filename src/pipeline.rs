//! The safe write path of one resource: compare, stage, check, swap. It stops
//! at the swap; telling the executor is [`crate::executor::after_swap`].
//!
//! The destination is only ever replaced by `rename` of a fully written and
//! checked stage file in the same directory, so readers never see a half-written
//! file and a failed check leaves the old one untouched.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::command::{self, CommandError};
use crate::diff;
use crate::redact::Redactor;
use crate::resource::{OutputFormat, Resource};

/// How the pipeline behaves for this run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// Compare only; write nothing, run nothing.
    pub noop: bool,
    /// Print a unified diff of each change.
    pub diff: bool,
    /// Skip the check command (and, in the executor, the reload).
    pub sync_only: bool,
    /// Keep the stage file when a check fails.
    pub keep_stage_file: bool,
    /// Colour the diff.
    pub color: bool,
}

/// What happened to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Render equals the file (content, mode and owner): nothing done.
    Unchanged,
    /// The file was replaced; the executor is still to be told.
    Updated,
    /// `--noop`: the file would have been replaced.
    WouldUpdate,
}

/// Why a resource's write failed. The old destination is intact in every case.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PipelineError {
    #[error("rendered output is not valid {format}: {message}")]
    Format {
        format: &'static str,
        message: String,
    },
    #[error("{}", io_message(op, path, dest, source))]
    Io {
        op: &'static str,
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The destination being written.
        dest: PathBuf,
        source: io::Error,
    },
    #[error("check_cmd failed, {} left unchanged: {source}", dest.display())]
    Check {
        #[source]
        source: CommandError,
        dest: PathBuf,
    },
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
    dest: &'a Path,
) -> impl FnOnce(io::Error) -> PipelineError + 'a {
    move |source| PipelineError::Io {
        op,
        path: path.to_path_buf(),
        dest: dest.to_path_buf(),
        source,
    }
}

/// "cannot write DEST: OP PATH: ERROR", without repeating DEST when the
/// operation was on it.
fn io_message(op: &str, path: &Path, dest: &Path, source: &io::Error) -> String {
    if path == dest {
        format!("{op} {}: {source}", path.display())
    } else {
        format!(
            "cannot write {}: {op} {}: {source}",
            dest.display(),
            path.display()
        )
    }
}

impl PipelineError {
    /// The failure's kind, as `sidekick_render_failures_total` labels it.
    pub fn reason(&self) -> &'static str {
        match self {
            PipelineError::Format { .. } => "render",
            PipelineError::Io { .. } => "write",
            PipelineError::Check { .. } => "check",
        }
    }

    /// Whether trying again later may succeed without any change of data or
    /// templates: a write that failed (disk full, read-only, permissions).
    pub fn is_retryable(&self) -> bool {
        matches!(self, PipelineError::Io { .. })
    }
}

/// Checks `content` against the resource's `output_format`.
pub(crate) fn validate_format(format: OutputFormat, content: &str) -> Result<(), PipelineError> {
    let result = match format {
        OutputFormat::Json => serde_json::from_str::<serde_json::Value>(content)
            .map(drop)
            .map_err(|e| {
                (
                    format!("line {} column {}: {e}", e.line(), e.column()),
                    "json",
                )
            }),
        OutputFormat::Yaml => serde_norway::from_str::<serde_norway::Value>(content)
            .map(drop)
            .map_err(|e| (e.to_string(), "yaml")),
        OutputFormat::Toml => toml::from_str::<toml::Table>(content)
            .map(drop)
            .map_err(|e| (e.to_string().trim_end().to_string(), "toml")),
    };
    result.map_err(|(message, format)| PipelineError::Format { format, message })
}

/// Mode and owner the destination should have.
struct Wanted {
    mode: u32,
    uid: u32,
    gid: u32,
}

/// Brings `resource.dest` in line with `content`.
/// `secret`: the render read secret keys, so a diff shows only a size.
/// `redact`: their values, masked in a check's output and a format error.
pub(crate) fn apply(
    resource: &Resource,
    content: &str,
    opts: &Options,
    secret: bool,
    redact: &Redactor,
) -> Result<Outcome, PipelineError> {
    if let Some(format) = resource.output_format {
        validate_format(format, content).map_err(|e| match e {
            PipelineError::Format { format, message } => PipelineError::Format {
                format,
                message: redact.apply(&message),
            },
            other => other,
        })?;
    }
    let dest = &resource.dest;
    let current = match fs::read(dest) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("read", dest, dest)(e)),
    };
    let meta = match fs::metadata(dest) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("stat", dest, dest)(e)),
    };
    let wanted = Wanted {
        mode: resource
            .mode
            .or_else(|| meta.as_ref().map(|m| m.mode() & 0o7777))
            .unwrap_or(0o644),
        uid: resource
            .uid
            .or_else(|| meta.as_ref().map(|m| m.uid()))
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw()),
        gid: resource
            .gid
            .or_else(|| meta.as_ref().map(|m| m.gid()))
            .unwrap_or_else(|| nix::unistd::getegid().as_raw()),
    };
    let same_content = current.as_deref() == Some(content.as_bytes());
    let same_meta = meta.as_ref().is_some_and(|m| {
        m.mode() & 0o7777 == wanted.mode && m.uid() == wanted.uid && m.gid() == wanted.gid
    });
    if same_content && same_meta {
        return Ok(Outcome::Unchanged);
    }
    if opts.diff {
        let old = current
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if secret {
            diff::print_secret(dest, &old, content);
        } else {
            diff::print(dest, &old, content, opts.color);
        }
    }
    if opts.noop {
        return Ok(Outcome::WouldUpdate);
    }

    let mut stage = Stage::create(dest, opts.keep_stage_file)?;
    stage.write(content.as_bytes())?;
    stage.set_meta(&wanted)?;
    if let (Some(cmd), false) = (&resource.check_cmd, opts.sync_only) {
        let cmd = cmd
            .replace("{{.src}}", &stage.path.to_string_lossy())
            .replace("{{ .src }}", &stage.path.to_string_lossy());
        let spec = command::Spec {
            cmd: &cmd,
            field: "check_cmd",
            timeout: resource.check_cmd_timeout,
        };
        command::run(spec, redact).map_err(|source| PipelineError::Check {
            source,
            dest: dest.clone(),
        })?;
    }
    stage.persist(dest, content.as_bytes(), &wanted)?;
    Ok(Outcome::Updated)
}

/// Makes the rename of `dest` durable: fsync of its directory. Called after
/// the executor was told, off the path to it, since the rename itself is atomic
/// and a crash before this leaves the old, complete file. Best effort: a
/// failure only weakens durability.
pub(crate) fn sync_dir(dest: &Path) {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Removes the stage files of `dest` that an earlier sidekick left behind when
/// it was killed mid-write (SIGKILL, a crash, a power cut): files named
/// `.NAME.sidekick-PID-N` beside it whose PID is this process's own (a
/// container's sidekick is often PID 1 in every run, and this process has
/// staged nothing yet) or no running process's. Call it before the first
/// pass. Best effort: a file that cannot be removed is logged and left.
pub(crate) fn remove_stale_stages(dest: &Path) {
    if dest.file_name().is_none() {
        return;
    }
    let prefix = stage_prefix(dest);
    let Ok(entries) = fs::read_dir(dest_dir(dest)) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(stage_pid)
        else {
            continue;
        };
        if pid != std::process::id() && process_exists(pid) {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => tracing::warn!(
                stage = %path.display(),
                dest = %dest.display(),
                pid,
                "removed a stale stage file left by a sidekick that was killed mid-write"
            ),
            Err(e) => tracing::warn!(
                stage = %path.display(),
                error = %e,
                "cannot remove a stale stage file"
            ),
        }
    }
}

/// The directory `dest` is in (`.` for a bare file name).
fn dest_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `.NAME.sidekick-`: what every stage file of `dest` is named, before its
/// `PID-N`.
fn stage_prefix(dest: &Path) -> String {
    let name = dest
        .file_name()
        .map_or_else(|| "dest".into(), |n| n.to_string_lossy());
    format!(".{name}.sidekick-")
}

/// The PID of a stage file name's `PID-N` tail.
fn stage_pid(tail: &str) -> Option<u32> {
    let (pid, n) = tail.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(n) {
        return None;
    }
    digits(pid).then(|| pid.parse().ok()).flatten()
}

/// Whether a process `pid` exists (signal 0: EPERM means it does).
fn process_exists(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// A temporary file beside the destination. Removed on drop unless it was
/// renamed into place (or kept on request after a failure).
struct Stage {
    path: PathBuf,
    dest: PathBuf,
    file: Option<File>,
    keep: bool,
}

static STAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Stage {
    fn create(dest: &Path, keep: bool) -> Result<Stage, PipelineError> {
        let dir = dest_dir(dest);
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir, dest))?;
        }
        let path = dir.join(format!(
            "{}{}-{}",
            stage_prefix(dest),
            std::process::id(),
            STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create stage file", &path, dest))?;
        Ok(Stage {
            path,
            dest: dest.to_path_buf(),
            file: Some(file),
            keep,
        })
    }

    fn file(&mut self) -> &mut File {
        // The file is only taken out in `persist`, which consumes the stage.
        self.file
            .as_mut()
            .unwrap_or_else(|| unreachable!("stage file used after persist"))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), PipelineError> {
        let (path, dest) = (self.path.clone(), self.dest.clone());
        self.file()
            .write_all(bytes)
            .map_err(io_err("write", &path, &dest))
    }

    fn set_meta(&mut self, wanted: &Wanted) -> Result<(), PipelineError> {
        let (path, dest) = (self.path.clone(), self.dest.clone());
        set_meta(self.file(), wanted).map_err(|(op, e)| io_err(op, &path, &dest)(e))
    }

    /// fsync, then rename over `dest`. The directory is synced later, by
    /// [`sync_dir`], once the executor has been told. A destination that is
    /// a mount point of its own (a file bind-mounted by Docker's `-v
    /// file:file` or Kubernetes' `subPath`) cannot be renamed over (EBUSY,
    /// or EXDEV): it is written in place instead.
    fn persist(
        mut self,
        dest: &Path,
        content: &[u8],
        wanted: &Wanted,
    ) -> Result<(), PipelineError> {
        if let Some(file) = self.file.take() {
            file.sync_all()
                .map_err(io_err("fsync", &self.path, &self.dest))?;
        }
        match fs::rename(&self.path, dest) {
            Ok(()) => {
                self.keep = true; // nothing left to remove
                Ok(())
            }
            Err(e) if is_mount_point_error(&e) => {
                tracing::warn!(
                    dest = %dest.display(),
                    error = %e,
                    "cannot rename over the destination (a bind-mounted file?); writing it in \
                     place, after the check: readers may see it half-written"
                );
                write_in_place(dest, content, wanted)
                // The stage file is removed on drop.
            }
            Err(e) => Err(io_err("rename stage file over", dest, dest)(e)),
        }
    }
}

/// EBUSY or EXDEV from a rename: the destination is a mount point.
fn is_mount_point_error(e: &io::Error) -> bool {
    let errno = e.raw_os_error().map(nix::errno::Errno::from_raw);
    matches!(
        errno,
        Some(nix::errno::Errno::EBUSY | nix::errno::Errno::EXDEV)
    )
}

/// Sets mode and owner of `file` as wanted; the error names the operation.
fn set_meta(file: &File, wanted: &Wanted) -> Result<(), (&'static str, io::Error)> {
    file.set_permissions(fs::Permissions::from_mode(wanted.mode))
        .map_err(|e| ("chmod", e))?;
    let meta = file.metadata().map_err(|e| ("stat", e))?;
    if meta.uid() != wanted.uid || meta.gid() != wanted.gid {
        std::os::unix::fs::fchown(file, Some(wanted.uid), Some(wanted.gid))
            .map_err(|e| ("chown", e))?;
    }
    Ok(())
}

/// Truncates `dest` and writes `content` into it, then mode, owner and fsync:
/// the one write that does not go through a rename (see `Stage::persist`).
fn write_in_place(dest: &Path, content: &[u8], wanted: &Wanted) -> Result<(), PipelineError> {
    let err = |op| io_err(op, dest, dest);
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dest)
        .map_err(err("open for an in-place write"))?;
    file.write_all(content).map_err(err("write in place"))?;
    set_meta(&file, wanted).map_err(|(op, e)| io_err(op, dest, dest)(e))?;
    file.sync_all().map_err(err("fsync"))
}

impl Drop for Stage {
    fn drop(&mut self) {
        if self.keep {
            if self.file.is_some() {
                tracing::warn!(stage = %self.path.display(), "keeping stage file for inspection");
            }
            return;
        }
        let _ = fs::remove_file(&self.path);
    }
}
