//! Process helpers for the executor tests: shell scripts written into the
//! confdir, signals sent with kill(1), a process group that is killed when
//! the test ends, and a look at /proc.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Dir, POLL, TIMEOUT};

/// Writes an executable `/bin/sh` script `rel` under the confdir; `@DIR@` and
/// `@OUT@` in `body` are expanded as in [`Dir::write`].
pub fn script(dir: &Dir, rel: &str, body: &str) -> PathBuf {
    let path = dir.write(rel, &format!("#!/bin/sh\n{body}"));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
    path
}

/// Sends `signal` ("HUP", "TERM", ...) to `pid` with kill(1).
pub fn send(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg("-s")
        .arg(signal)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

/// The lines of a file, or nothing if it does not exist yet.
pub fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A pid written to a file (by a script), once the file holds a whole line.
pub fn read_pid(path: &Path) -> Option<u32> {
    let text = fs::read_to_string(path).ok()?;
    if !text.ends_with('\n') {
        return None;
    }
    text.trim().parse().ok()
}

/// Polls `cond` until it holds; panics after [`TIMEOUT`] with `what` and the
/// text `context` returns. For waits with no sidekick [`crate::harness::Running`].
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        if Instant::now() > deadline {
            panic!(
                "timed out after {TIMEOUT:?} waiting for {what}\n{}",
                context()
            );
        }
        thread::sleep(POLL);
    }
}

/// State letter and parent pid of `pid`, from /proc/PID/stat.
pub fn stat(pid: u32) -> Option<(char, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Every process whose parent is `parent`, with its state letter.
pub fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some((state, ppid)) = stat(pid) {
            if ppid == parent {
                found.push((pid, state));
            }
        }
    }
    found
}

/// A process started by the test itself (the "application" of the sidecar
/// shape), in its own process group; the whole group is killed on drop.
pub struct App {
    child: Child,
}

impl App {
    /// Starts `program` with `args` in a new process group.
    pub fn start(program: &Path, args: &[&str]) -> App {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        App { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the group and reaps the leader.
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .arg("-s")
            .arg("KILL")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` to the end, killing it after `limit`; returns (status, stdout,
/// stderr). For runs that are not sidekick alone (`unshare ... sidekick`).
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> (std::process::ExitStatus, String) {
    let out_file = tempfile::NamedTempFile::new().expect("temp file");
    let err_file = out_file.reopen().expect("reopen temp file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(err_file.try_clone().expect("clone")))
        .stderr(Stdio::from(err_file))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}; output:\n{}",
                fs::read_to_string(out_file.path()).unwrap_or_default()
            );
        }
        thread::sleep(POLL);
    };
    (
        status,
        fs::read_to_string(out_file.path()).unwrap_or_default(),
    )
}

/// Kills `pid` with SIGKILL when dropped, if its command line still holds
/// `marker` (so a reused pid is left alone): a child that ignores SIGTERM must
/// not outlive a failed test.
pub struct KillOnDrop {
    pub pid: u32,
    pub marker: String,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let ours = fs::read(format!("/proc/{}/cmdline", self.pid))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&self.marker));
        if ours {
            // Not `send`: no panic in a drop that may run while unwinding.
            let _ = Command::new("kill")
                .args(["-s", "KILL", &self.pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}
