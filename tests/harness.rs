//! The end-to-end tests' harness: a temporary confdir ([`Dir`]), the real
//! `sidekick` binary run in it ([`TestCommand`]), and a long-running child
//! (dev mode, `--watch`) with waits that poll until a condition holds or a
//! timeout passes ([`Running`]).
//!
//! Modelled on ripgrep's `tests/util.rs`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a wait may take before the test fails. Generous: a loaded CI
/// machine can be slow, and a passing wait returns as soon as it holds.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How often waits check their condition.
pub const POLL: Duration = Duration::from_millis(10);

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sidekick"))
}

/// Root of the repository (where `Cargo.toml`, `examples/` and `tests/` are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary directory laid out as a confdir: `conf.d/`, `templates/`, and
/// `out/` for destinations. Removed when dropped.
pub struct Dir {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Default for Dir {
    fn default() -> Self {
        Self::new()
    }
}

impl Dir {
    /// A fresh confdir.
    pub fn new() -> Dir {
        let tmp = sidekick_testkit::temp::dir("sidekick-test-");
        // Canonical, so that paths in messages compare equal to ours.
        let root = tmp.path().canonicalize().expect("canonicalize temp dir");
        for sub in ["conf.d", "templates", "out"] {
            fs::create_dir_all(root.join(sub)).expect("create confdir layout");
        }
        Dir { _tmp: tmp, root }
    }

    /// The confdir itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` under the confdir.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// `name` under `out/` (where tests put destinations).
    pub fn out(&self, name: &str) -> PathBuf {
        self.root.join("out").join(name)
    }

    /// `out/` as text, for substituting into resource files.
    pub fn out_dir(&self) -> String {
        self.root.join("out").display().to_string()
    }

    /// Writes `content` to `rel` under the confdir, creating parent directories.
    /// `@OUT@` in `content` becomes the `out/` directory and `@DIR@` the confdir.
    pub fn write(&self, rel: impl AsRef<Path>, content: &str) -> PathBuf {
        let path = self.path(rel);
        write_file(&path, &self.expand(content));
        path
    }

    /// Writes `content` to `rel` the way vim and many editors save: to a temp file
    /// in the same directory, then `rename` over the original.
    pub fn write_by_rename(&self, rel: impl AsRef<Path>, content: &str) -> PathBuf {
        let path = self.path(rel);
        let tmp = path.with_file_name(format!(
            ".{}.tmp-save",
            path.file_name().unwrap().to_string_lossy()
        ));
        write_file(&tmp, &self.expand(content));
        fs::rename(&tmp, &path).expect("rename temp file over original");
        path
    }

    /// Writes `conf.d/NAME.toml`.
    pub fn resource(&self, name: &str, toml: &str) -> PathBuf {
        self.write(format!("conf.d/{name}.toml"), toml)
    }

    /// Writes `templates/NAME`.
    pub fn template(&self, name: &str, content: &str) -> PathBuf {
        self.write(format!("templates/{name}"), content)
    }

    /// Writes `data.yaml` (the default data file).
    pub fn data(&self, yaml: &str) -> PathBuf {
        self.write("data.yaml", yaml)
    }

    /// A simple resource: `conf.d/NAME.toml` rendering `templates/NAME.tmpl`
    /// (holding `template`) to `out/NAME.conf`, reading every key under `keys`.
    /// `extra` lines are appended to the `[template]` table. Returns the dest.
    pub fn simple(&self, name: &str, template: &str, extra: &str) -> PathBuf {
        self.template(&format!("{name}.tmpl"), template);
        self.resource(
            name,
            &format!(
                "[template]\nsrc = \"{name}.tmpl\"\ndest = \"@OUT@/{name}.conf\"\nkeys = [\"/\"]\n{extra}\n"
            ),
        );
        self.out(&format!("{name}.conf"))
    }

    /// Replaces the placeholders `@OUT@` and `@DIR@`.
    pub fn expand(&self, text: &str) -> String {
        text.replace("@OUT@", &self.out_dir())
            .replace("@DIR@", &self.root.display().to_string())
    }

    /// Reads `rel` (relative to the confdir, or absolute) as text; panics if absent.
    pub fn read(&self, rel: impl AsRef<Path>) -> String {
        let path = self.path(rel);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// Reads `rel` if it exists.
    pub fn try_read(&self, rel: impl AsRef<Path>) -> Option<String> {
        fs::read_to_string(self.path(rel)).ok()
    }

    /// A command running sidekick with `--confdir` set to this directory and
    /// the working directory set to it.
    pub fn command(&self) -> TestCommand {
        let mut cmd = TestCommand::new(&self.root);
        cmd.arg("--confdir").arg(&self.root);
        cmd
    }

    /// `command()` with the file backend reading `data.yaml`, plus `--onetime`.
    pub fn onetime(&self) -> TestCommand {
        let mut cmd = self.command();
        cmd.args(["--backend", "file", "--onetime", "--file"])
            .arg(self.path("data.yaml"));
        cmd
    }

    /// Panics if a stage file (`.NAME.sidekick-PID-N`) is left anywhere under
    /// the confdir.
    pub fn assert_no_stage_files(&self) {
        let left = stage_files(&self.root);
        assert!(left.is_empty(), "stage files left behind: {left:?}");
    }
}

/// Writes a file, creating its parent directories.
pub fn write_file(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Every file under `dir` (recursively) named like a stage file.
pub fn stage_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if is_stage_name(&entry.file_name().to_string_lossy()) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Whether `name` looks like sidekick's stage file names: `.DEST.sidekick-PID-N`.
pub fn is_stage_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".sidekick-")
}

/// Copies the directory tree `from` into `to`, replacing `@KEY@` placeholders in
/// every file's text by `vars[KEY]`.
pub fn copy_tree(from: &Path, to: &Path, vars: &BTreeMap<&str, String>) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if src.is_dir() {
            copy_tree(&src, &dst, vars);
        } else {
            let mut text =
                fs::read_to_string(&src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
            for (key, value) in vars {
                text = text.replace(&format!("@{key}@"), value);
            }
            write_file(&dst, &text);
        }
    }
}

/// A run of the binary that is being set up.
pub struct TestCommand {
    cmd: Command,
    shown: Vec<String>,
}

/// What a finished run left: exit status, stdout, stderr.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for messages.
    pub shown: String,
}

impl Output {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics unless the run succeeded.
    pub fn assert_success(&self) -> &Output {
        assert!(self.status.success(), "expected success, got {self}");
        self
    }

    /// Panics unless the run failed with a non-zero exit code.
    pub fn assert_failure(&self) -> &Output {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "expected a non-zero exit, got {self}"
        );
        self
    }

    /// Panics unless stderr contains every one of `parts`.
    pub fn assert_stderr_has(&self, parts: &[&str]) -> &Output {
        for part in parts {
            assert!(self.stderr.contains(part), "stderr lacks {part:?}: {self}");
        }
        self
    }

    /// Panics unless stdout contains every one of `parts`.
    pub fn assert_stdout_has(&self, parts: &[&str]) -> &Output {
        for part in parts {
            assert!(self.stdout.contains(part), "stdout lacks {part:?}: {self}");
        }
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "\n$ {}\nexit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.shown, self.status, self.stdout, self.stderr
        )
    }
}

impl TestCommand {
    /// sidekick with working directory `cwd`, `NO_COLOR=1`, and no inherited
    /// `SIDEKICK_*` variables.
    pub fn new(cwd: &Path) -> TestCommand {
        let mut cmd = Command::new(bin());
        cmd.current_dir(cwd)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SIDEKICK_") {
                cmd.env_remove(name);
            }
        }
        TestCommand {
            cmd,
            shown: vec!["sidekick".to_string()],
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut TestCommand {
        self.shown.push(arg.as_ref().to_string_lossy().into_owned());
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, A>(&mut self, args: I) -> &mut TestCommand
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    pub fn env(&mut self, name: &str, value: impl AsRef<OsStr>) -> &mut TestCommand {
        self.cmd.env(name, value);
        self
    }

    pub fn env_remove(&mut self, name: &str) -> &mut TestCommand {
        self.cmd.env_remove(name);
        self
    }

    /// Starts the binary with its output captured.
    fn start(&mut self) -> (String, Child, Capture, Capture) {
        let shown = self.shown.join(" ");
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
        let stdout = Capture::start(child.stdout.take().expect("stdout"));
        let stderr = Capture::start(child.stderr.take().expect("stderr"));
        (shown, child, stdout, stderr)
    }

    /// Runs to completion (killing it after [`TIMEOUT`] × 3) and captures output.
    pub fn output(&mut self) -> Output {
        let (shown, mut child, stdout, stderr) = self.start();
        let deadline = Instant::now() + TIMEOUT * 3;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for sidekick") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{shown} did not finish within {:?}\nstdout: {}\nstderr: {}",
                    TIMEOUT * 3,
                    stdout.text(),
                    stderr.text()
                );
            }
            thread::sleep(POLL);
        };
        Output {
            status,
            stdout: stdout.finish(),
            stderr: stderr.finish(),
            shown,
        }
    }

    /// Runs and asserts success.
    pub fn run(&mut self) -> Output {
        let out = self.output();
        out.assert_success();
        out
    }

    /// Runs and asserts a non-zero exit.
    pub fn run_fail(&mut self) -> Output {
        let out = self.output();
        out.assert_failure();
        out
    }

    /// Starts the binary and returns at once; the child is stopped when the
    /// returned [`Running`] is dropped.
    pub fn spawn(&mut self) -> Running {
        let (shown, child, stdout, stderr) = self.start();
        Running {
            child: Some(child),
            stdout,
            stderr,
            shown,
        }
    }
}

/// A pipe read to the end on its own thread, its text available at any time.
pub struct Capture {
    text: Arc<Mutex<String>>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(mut pipe: impl Read + Send + 'static) -> Capture {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&text);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut pending = Vec::new();
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        // Only whole UTF-8 sequences; keep a split one for the next read.
                        let valid = match std::str::from_utf8(&pending) {
                            Ok(s) => s.len(),
                            Err(e) if e.error_len().is_none() => e.valid_up_to(),
                            Err(_) => pending.len(),
                        };
                        let chunk: Vec<u8> = pending.drain(..valid).collect();
                        sink.lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&chunk));
                    }
                }
            }
            if !pending.is_empty() {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&pending));
            }
        });
        Capture {
            text,
            thread: Some(thread),
        }
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits for the end of the pipe and returns everything.
    fn finish(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }
}

/// A sidekick process that keeps running (`dev`, `--watch`). Dropping it stops
/// the process: SIGTERM, then SIGKILL if it has not exited within a few seconds.
pub struct Running {
    child: Option<Child>,
    pub stdout: Capture,
    pub stderr: Capture,
    shown: String,
}

impl Running {
    /// What the process printed so far, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "\n$ {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.shown,
            self.stdout.text(),
            self.stderr.text()
        )
    }

    /// Polls `cond` every [`POLL`] until it holds; panics after [`TIMEOUT`],
    /// or at once if the process exited, with `what` and the transcript.
    pub fn wait_until(&mut self, what: &str, mut cond: impl FnMut(&Running) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if cond(self) {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    // One last look: the condition may have become true just before exit.
                    if cond(self) {
                        return;
                    }
                    panic!(
                        "sidekick exited ({status}) while waiting for {what}{}",
                        self.transcript()
                    );
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {TIMEOUT:?} waiting for {what}{}",
                    self.transcript()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until `path` exists with exactly `content`.
    pub fn wait_for_file(&mut self, path: &Path, content: &str) {
        let what = format!("{} to hold {content:?}", path.display());
        self.wait_until(&what, |_| {
            fs::read_to_string(path).is_ok_and(|c| c == content)
        });
    }

    /// Waits until `path` exists and `pred` holds for its content.
    pub fn wait_for_file_matching(
        &mut self,
        path: &Path,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        self.wait_until(
            &format!("{}: {what}", path.display()),
            |_| match fs::read_to_string(path) {
                Ok(c) if pred(&c) => {
                    last = c;
                    true
                }
                _ => false,
            },
        );
        last
    }

    /// Length of stdout so far: pass it to [`Running::wait_stdout_after`] to
    /// wait for output printed from now on.
    pub fn stdout_mark(&self) -> usize {
        self.stdout.text().len()
    }

    /// Length of stderr so far.
    pub fn stderr_mark(&self) -> usize {
        self.stderr.text().len()
    }

    /// Waits until stdout printed after `mark` contains `needle`; returns that part.
    pub fn wait_stdout_after(&mut self, mark: usize, needle: &str) -> String {
        let mut seen = String::new();
        self.wait_until(&format!("stdout to show {needle:?}"), |r| {
            let text = r.stdout.text();
            seen = text.get(mark..).unwrap_or("").to_string();
            seen.contains(needle)
        });
        seen
    }

    /// Waits until stderr printed after `mark` contains `needle` `times` times.
    pub fn wait_stderr_after(&mut self, mark: usize, needle: &str, times: usize) -> String {
        let mut seen = String::new();
        self.wait_until(&format!("stderr to show {needle:?} {times} time(s)"), |r| {
            let text = r.stderr.text();
            seen = text.get(mark..).unwrap_or("").to_string();
            seen.matches(needle).count() >= times
        });
        seen
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process already stopped").id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM and waits (up to [`TIMEOUT`]) for the process to exit;
    /// returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("process already stopped");
        terminate(&mut child).unwrap_or_else(|| {
            panic!(
                "sidekick did not stop within {TIMEOUT:?} of SIGTERM; killed{}",
                self.transcript()
            )
        })
    }
}

/// SIGTERM, then wait up to [`TIMEOUT`]; SIGKILL if still running (returns None then).
fn terminate(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    send_sigterm(child.id());
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Sends SIGTERM to `pid` through the shell's `kill` builtin (always there,
/// unlike a `kill` binary; no libc dependency needed).
pub fn send_sigterm(pid: u32) {
    let _ = Command::new("/bin/sh")
        .args(["-c", "kill -TERM \"$0\"", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if terminate(&mut child).is_none() && !thread::panicking() {
                panic!(
                    "sidekick ignored SIGTERM for {TIMEOUT:?}; killed{}",
                    self.transcript()
                );
            }
        }
    }
}

/// Current user id, from `id -u` (no libc dependency needed).
pub fn current_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric uid")
}
