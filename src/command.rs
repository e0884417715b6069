//! Running `check_cmd` and `reload_cmd` through `sh -c`, as confd does.
//!
//! A command's stdout and stderr go to one pipe, read on a thread that keeps
//! only the last [`TAIL`] bytes: a command that prints 100 MB costs 64 KB,
//! and its output is logged line by line. The command runs in its own
//! process group, so a SIGINT or SIGTERM to sidekick while it runs stops the
//! whole group (TERM, then KILL) instead of waiting for it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::redact::Redactor;
use crate::shutdown;

/// How much of a command's output is kept: the last 64 KiB.
pub(crate) const TAIL: usize = 64 * 1024;

/// How long a stopped command's group gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(1);

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

/// Runs `cmd` with `sh -c`, waits, and returns the tail of its combined
/// output, with `redact`'s secret values masked (in the result, the log and
/// the error alike).
pub(crate) fn run(cmd: &str, redact: &Redactor) -> Result<String, CommandError> {
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
        command.spawn().map_err(spawn_error)?
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
    let status = wait(cmd, child, &closed)?;
    let _ = closed.recv_timeout(DRAIN);
    let output = tail
        .lock()
        .map(|t| redact.apply(&t.text()))
        .unwrap_or_default();
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

/// Waits for `child`, and stops its group if sidekick is told to stop first.
/// `closed` says when the output pipe closed, which is usually the moment
/// the command exits: waiting on it wakes at once then.
fn wait(
    cmd: &str,
    mut child: Child,
    closed: &mpsc::Receiver<()>,
) -> Result<ExitStatus, CommandError> {
    let mut step = Duration::from_millis(1);
    let mut pipe_open = true;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(status);
        }
        if let Some(signal) = shutdown::requested() {
            stop_group(&mut child);
            return Err(CommandError::Interrupted {
                cmd: cmd.to_string(),
                signal,
            });
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

/// SIGTERM to the command's process group, SIGKILL after [`STOP_GRACE`],
/// then reaps the command.
fn stop_group(child: &mut Child) {
    let Ok(raw) = i32::try_from(child.id()) else {
        return;
    };
    let group = Pid::from_raw(raw);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // The shell is gone; what it started may not be.
            let _ = killpg(group, Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
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
