//! Running `check_cmd` and `reload_cmd` through `sh -c`, as confd does.
//!
//! A command's stdout and stderr go to one pipe, read on a thread that keeps
//! only the last [`TAIL`] bytes: a command that prints 100 MB costs 64 KB,
//! and its output is logged line by line. The command runs in its own
//! process group, so a SIGINT or SIGTERM to sidekick while it runs stops the
//! whole group (TERM, then KILL) instead of waiting for it; so does a
//! command that runs past its time limit (`check_cmd_timeout`,
//! `reload_cmd_timeout`). Commands run on the pass's worker thread, never on
//! the event loop's.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::reap;
use crate::redact::Redactor;
use crate::shutdown;

/// How much of a command's output is kept: the last 64 KiB.
pub(crate) const TAIL: usize = 64 * 1024;

/// How long a command stopped by a signal to sidekick gets between SIGTERM
/// and SIGKILL: sidekick is asked to stop, and does within 2 s.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long a command past its time limit gets between SIGTERM and SIGKILL.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// How long to wait for the output pipe to close once the command exited (a
/// background process it started may hold it open for ever).
const DRAIN: Duration = Duration::from_millis(200);

/// A command that could not run, exited non-zero or was stopped; carries the
/// tail of its output so the log says why.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("`{cmd}` could not start: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` exited with {status}{}", output_suffix(.output))]
    Failed {
        cmd: String,
        status: String,
        output: String,
    },
    #[error("`{cmd}` stopped: sidekick received {signal}")]
    Interrupted { cmd: String, signal: Signal },
    #[error("{field} timed out after {}: `{cmd}` was stopped (SIGTERM to its process group, SIGKILL 2s later){}", crate::debounce::format_duration(*.after), output_suffix(.output))]
    TimedOut {
        field: &'static str,
        cmd: String,
        after: Duration,
        output: String,
    },
}

/// A command to run: its text, the resource field it comes from (for
/// messages) and how long it may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec<'a> {
    pub cmd: &'a str,
    pub field: &'static str,
    pub timeout: Duration,
}

/// The output after the message, one line of it per line, so that a log
/// shows it as lines (see `Reporter::resource_error`).
fn output_suffix(output: &str) -> String {
    let trimmed = output.trim_end();
    if trimmed.trim().is_empty() {
        String::new()
    } else {
        format!("; output:\n{trimmed}")
    }
}

/// The last [`TAIL`] bytes of a stream, and how many came before them.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    cut: u64,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        // Trim in large steps, so a long stream is not moved byte by byte.
        if self.bytes.len() > 2 * TAIL {
            let extra = self.bytes.len() - TAIL;
            self.bytes.drain(..extra);
            self.cut += extra as u64;
        }
    }

    /// The kept text; when output was cut, from the first whole line on, after
    /// a note of how much was left out.
    fn text(&self) -> String {
        let mut bytes = &self.bytes[self.bytes.len().saturating_sub(TAIL)..];
        let mut cut = self.cut + (self.bytes.len() - bytes.len()) as u64;
        if cut > 0 {
            if let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
                cut += nl as u64 + 1;
                bytes = &bytes[nl + 1..];
            }
            format!(
                "[{cut} bytes of output left out]\n{}",
                String::from_utf8_lossy(bytes)
            )
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

/// Runs `spec.cmd` with `sh -c`, waits at most `spec.timeout`, and returns
/// the tail of its combined output, with `redact`'s secret values masked (in
/// the result, the log and the error alike).
pub(crate) fn run(spec: Spec<'_>, redact: &Redactor) -> Result<String, CommandError> {
    let cmd = spec.cmd;
    let spawn_error = |source| CommandError::Spawn {
        cmd: cmd.to_string(),
        source,
    };
    let (reader, writer) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| spawn_error(e.into()))?;
    let mut reader = std::fs::File::from(reader);
    let child = {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(writer.try_clone().map_err(spawn_error)?)
            .stderr(writer)
            .process_group(0);
        // The builder (and with it our copies of the pipe's write end) is
        // dropped here, so the pipe closes when the command's side does.
        reap::spawn(&mut command).map_err(spawn_error)?
    };
    let tail = Arc::new(Mutex::new(Tail::default()));
    let (closed_tx, closed) = mpsc::channel::<()>();
    let sink = Arc::clone(&tail);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if let Ok(mut t) = sink.lock() {
                t.push(&buf[..n]);
            }
        }
        let _ = closed_tx.send(());
    });
    let output = || {
        tail.lock()
            .map(|t| redact.apply(&t.text()))
            .unwrap_or_default()
    };
    let status = match wait(spec, child, &closed)? {
        Some(status) => status,
        None => {
            let _ = closed.recv_timeout(DRAIN);
            return Err(CommandError::TimedOut {
                field: spec.field,
                cmd: cmd.to_string(),
                after: spec.timeout,
                output: output(),
            });
        }
    };
    let _ = closed.recv_timeout(DRAIN);
    let output = output();
    if status.success() {
        for line in output.lines() {
            tracing::debug!(cmd, "| {line}");
        }
        tracing::debug!(cmd, "command succeeded");
        Ok(output)
    } else {
        Err(CommandError::Failed {
            cmd: cmd.to_string(),
            status: status.to_string(),
            output,
        })
    }
}

/// Waits for `child`; stops its group if sidekick is told to stop first, or
/// when `spec.timeout` passed (then `None`). `closed` says when the output
/// pipe closed, which is usually the moment the command exits: waiting on it
/// wakes at once then.
fn wait(
    spec: Spec<'_>,
    mut child: Child,
    closed: &mpsc::Receiver<()>,
) -> Result<Option<ExitStatus>, CommandError> {
    let deadline = Instant::now() + spec.timeout;
    let mut step = Duration::from_millis(1);
    let mut pipe_open = true;
    loop {
        if let Ok(Some(status)) = reap::try_wait(&mut child) {
            return Ok(Some(status));
        }
        if let Some(signal) = shutdown::requested() {
            stop_group(&mut child, STOP_GRACE);
            return Err(CommandError::Interrupted {
                cmd: spec.cmd.to_string(),
                signal,
            });
        }
        if Instant::now() >= deadline {
            tracing::warn!(cmd = spec.cmd, field = spec.field, timeout = ?spec.timeout, "command timed out, stopping it");
            stop_group(&mut child, TIMEOUT_GRACE);
            return Ok(None);
        }
        if pipe_open {
            match closed.recv_timeout(step) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => pipe_open = false,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        } else {
            std::thread::sleep(step);
        }
        step = (step * 2).min(Duration::from_millis(10));
    }
}

/// SIGTERM to the command's process group, SIGKILL after `grace` (or at
/// once when the shell is gone: what it started may not be), then reaps the
/// command.
fn stop_group(child: &mut Child, grace: Duration) {
    let Ok(raw) = i32::try_from(child.id()) else {
        return;
    };
    let group = Pid::from_raw(raw);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    let mut exited = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = reap::try_wait(child) {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = killpg(group, Signal::SIGKILL);
    if !exited {
        // Killed: its status comes at once (bounded all the same).
        let until = Instant::now() + Duration::from_secs(1);
        while matches!(reap::try_wait(child), Ok(None)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    reap::forget(child.id());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_from_a_whole_line_on() {
        let mut t = Tail::default();
        for i in 0..100_000 {
            t.push(format!("line {i}\n").as_bytes());
        }
        let text = t.text();
        assert!(text.len() <= TAIL + 64, "{}", text.len());
        assert!(text.starts_with('['), "{:.60}", text);
        assert!(text.lines().nth(1).unwrap().starts_with("line "));
        assert!(text.ends_with("line 99999\n"));
        let mut short = Tail::default();
        short.push(b"ok\n");
        assert_eq!(short.text(), "ok\n");
    }
}
