//! The fault suite (issue 18): the real binary, real files, real etcd, made
//! to fail the way production fails: a backend that answers with nothing, a
//! kill in the middle of a write, a full or read-only disk, a destination
//! that is a symlink, a directory or a bind-mounted file, an etcd back with
//! a wiped data dir, a check command that prints without end. Each case ends
//! with the destination either the old complete file or the new complete
//! one, never partial or empty, and no stage file left (except where noted).
//!
//! The tmpfs and bind-mount cases need root (CI runs as root); elsewhere they
//! print why and skip.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{current_uid, stage_files, Dir, Running, POLL, TIMEOUT};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Sends `signal` (a name such as `KILL`) to `pid` through the shell.
fn send(pid: u32, signal: &str) {
    let _ = Command::new("/bin/sh")
        .args(["-c", &format!("kill -{signal} {pid}")])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `cond` until it holds or [`TIMEOUT`] passes; panics with `what`.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(POLL);
    }
}

/// Waits until `path` holds a number (a pid a script wrote) and returns it.
fn wait_pid(path: &Path) -> u32 {
    let mut pid = None;
    wait_for(&format!("a pid in {}", path.display()), || {
        pid = fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        pid.is_some()
    });
    pid.unwrap()
}

/// Waits for `p` to exit by itself within `limit`; returns whether it did.
fn exits_within(p: &mut Running, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !p.is_running() {
            return true;
        }
        thread::sleep(POLL);
    }
    false
}

/// sidekick `--watch` on the file backend reading `data.yaml`.
fn watch(dir: &Dir) -> Running {
    dir.command()
        .args(["--backend", "file", "--watch", "--file"])
        .arg(dir.path("data.yaml"))
        .spawn()
}

/// The nginx-style upstream resource `web` under prefix `/app`, reading
/// `/app/upstreams/*`; `extra` lines go into its `[template]` table.
fn upstream(dir: &Dir, extra: &str) -> PathBuf {
    dir.template(
        "web.tmpl",
        "upstream app {\n{% for s in getvs(pattern=\"/upstreams/*\") %}  server {{ s }};\n{% endfor %}}\n",
    );
    dir.resource(
        "web",
        &format!(
            "[template]\nsrc = \"web.tmpl\"\ndest = \"@OUT@/web.conf\"\nprefix = \"/app\"\nkeys = [\"/upstreams\"]\n{extra}\n"
        ),
    );
    dir.out("web.conf")
}

const WORKING: &str = "upstream app {\n  server 10.0.0.1:80;\n}\n";
const EMPTY: &str = "upstream app {\n}\n";

// ---------------------------------------------------------------------------
// An empty answer never blanks a working file, not even on the first render
// ---------------------------------------------------------------------------

#[test]
fn empty_backend_on_first_render_keeps_a_working_file() {
    let dir = Dir::new();
    let dest = upstream(&dir, "");
    fs::write(&dest, WORKING).unwrap();
    // Up, but nothing under /app (a wiped or not yet filled store).
    dir.data("other: x\n");
    let out = dir.onetime().run();
    assert_eq!(dir.read("out/web.conf"), WORKING, "working file kept");
    out.assert_stderr_has(&["no keys", "web.toml", "allow_empty"]);

    // A restarted --watch keeps it too, and renders once keys come.
    let mut p = watch(&dir);
    p.wait_stderr_after(0, "no keys", 1);
    assert_eq!(dir.read("out/web.conf"), WORKING);
    dir.write_by_rename("data.yaml", "app:\n  upstreams:\n    a: 10.0.0.2:80\n");
    p.wait_for_file(&dest, "upstream app {\n  server 10.0.0.2:80;\n}\n");
    p.stop();
    dir.assert_no_stage_files();
}

#[test]
fn a_failed_first_render_does_not_lift_the_guard() {
    let dir = Dir::new();
    let dest = upstream(&dir, "check_cmd = \"! grep -q bad {{.src}}\"");
    fs::write(&dest, WORKING).unwrap();
    dir.data("app:\n  upstreams:\n    a: bad\n");
    let mut p = watch(&dir);
    p.wait_stderr_after(0, "check_cmd failed", 1);
    dir.write_by_rename("data.yaml", "other: x\n");
    p.wait_stderr_after(0, "no keys", 1);
    assert_eq!(dir.read("out/web.conf"), WORKING);
    p.stop();
}

#[test]
fn allow_empty_lets_a_deliberate_scale_to_zero_through() {
    let dir = Dir::new();
    let dest = upstream(&dir, "allow_empty = true");
    fs::write(&dest, WORKING).unwrap();
    dir.data("other: x\n");
    dir.onetime().run();
    assert_eq!(dir.read("out/web.conf"), EMPTY);

    // And under --watch, after keys were there.
    dir.data("app:\n  upstreams:\n    a: 10.0.0.1:80\n");
    let mut p = watch(&dir);
    p.wait_for_file(&dest, WORKING);
    dir.write_by_rename("data.yaml", "other: x\n");
    p.wait_for_file(&dest, EMPTY);
    p.stop();
}

#[test]
fn empty_backend_with_no_destination_yet_renders() {
    // Nothing to protect: the first file is written (as before).
    let dir = Dir::new();
    upstream(&dir, "");
    dir.data("other: x\n");
    dir.onetime().run();
    assert_eq!(dir.read("out/web.conf"), EMPTY);
}

// ---------------------------------------------------------------------------
// Resource files: what was accepted silently
// ---------------------------------------------------------------------------

#[test]
fn mode_beyond_07777_is_rejected() {
    let dir = Dir::new();
    dir.data("v: 1\n");
    dir.simple("app", "x\n", "mode = \"7777777\"");
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&["app.toml", "mode", "7777777"]);
    assert!(!dir.out("app.conf").exists());
}

#[test]
fn two_resources_with_the_same_dest_are_an_error_naming_both() {
    let dir = Dir::new();
    dir.data("v: 1\n");
    dir.template("a.tmpl", "a\n");
    dir.template("b.tmpl", "b\n");
    dir.resource(
        "a",
        "[template]\nsrc = \"a.tmpl\"\ndest = \"@OUT@/same.conf\"\nkeys = [\"/\"]\n",
    );
    dir.resource(
        "b",
        "[template]\nsrc = \"b.tmpl\"\ndest = \"@OUT@/./same.conf\"\nkeys = [\"/\"]\n",
    );
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&["a.toml", "b.toml", "same.conf"]);
}

// ---------------------------------------------------------------------------
// Kills and signals in the middle of a write
// ---------------------------------------------------------------------------

/// A 50 MB render: ten copies of a 5 MB value.
fn big(dir: &Dir, extra: &str) -> PathBuf {
    let value = "x".repeat(5 * 1024 * 1024);
    dir.data(&format!("big: {value}\nv: one\n"));
    dir.simple(
        "big",
        "{{ getv(key=\"/v\") }}\n{% for i in range(end=10) %}{{ getv(key=\"/big\") }}\n{% endfor %}",
        extra,
    )
}

/// A `check_cmd` that writes its pid to `check.pid` and then hangs.
const HANGING_CHECK: &str = "check_cmd = \"echo $$ > @DIR@/check.pid; exec sleep 60\"";

#[test]
fn sigkill_mid_write_leaves_a_stage_file_the_next_start_removes() {
    let dir = Dir::new();
    let dest = big(&dir, HANGING_CHECK);
    fs::write(&dest, "old\n").unwrap();
    let mut p = dir.onetime().spawn();
    // The whole render is staged and being checked.
    let check = wait_pid(&dir.path("check.pid"));
    send(p.pid(), "KILL");
    send(check, "KILL");
    assert!(exits_within(&mut p, TIMEOUT));
    let left = stage_files(dir.root());
    assert_eq!(left.len(), 1, "the kill left one stage file: {left:?}");
    assert!(fs::metadata(&left[0]).unwrap().len() > 50_000_000);
    assert_eq!(dir.read("out/big.conf"), "old\n", "old file intact");

    // The next start removes it, and writes the new file.
    big(&dir, "");
    let out = dir.onetime().run();
    out.assert_stderr_has(&["removed a stale stage file"]);
    dir.assert_no_stage_files();
    assert!(dir.read("out/big.conf").starts_with("one\nxxx"));
}

#[test]
fn sigterm_while_check_cmd_runs_stops_at_once_under_watch() {
    let dir = Dir::new();
    let dest = big(&dir, HANGING_CHECK);
    fs::write(&dest, "old\n").unwrap();
    let mut p = watch(&dir);
    let check = wait_pid(&dir.path("check.pid"));
    send(p.pid(), "TERM");
    let stopped = exits_within(&mut p, Duration::from_secs(5));
    send(check, "KILL");
    assert!(
        stopped,
        "sidekick still running 5 s after SIGTERM{}",
        p.transcript()
    );
    assert!(!alive(check), "the check command was left running");
    assert_eq!(dir.read("out/big.conf"), "old\n");
    dir.assert_no_stage_files();
}

#[test]
fn onetime_stops_on_sigterm_and_sigint() {
    for signal in ["TERM", "INT"] {
        let dir = Dir::new();
        let dest = big(&dir, HANGING_CHECK);
        fs::write(&dest, "old\n").unwrap();
        let mut p = dir.onetime().spawn();
        let check = wait_pid(&dir.path("check.pid"));
        send(p.pid(), signal);
        let stopped = exits_within(&mut p, Duration::from_secs(5));
        send(check, "KILL");
        assert!(
            stopped,
            "--onetime still running 5 s after SIG{signal}{}",
            p.transcript()
        );
        assert_eq!(dir.read("out/big.conf"), "old\n");
        dir.assert_no_stage_files();
        assert!(p.stderr.text().contains(&format!("SIG{signal}")));
    }
}

#[test]
fn sigterm_mid_50mb_render_leaves_old_or_new_file_and_no_stage_file() {
    // Held before issue 18: kept as a case of the suite.
    for delay_ms in [0u64, 20, 60, 150] {
        let dir = Dir::new();
        let dest = big(&dir, "");
        fs::write(&dest, "old\n").unwrap();
        let mut p = watch(&dir);
        thread::sleep(Duration::from_millis(delay_ms));
        // Killed by the signal's default action (before the handlers were
        // in) or stopped by it: either way the file must be whole.
        p.stop();
        let text = fs::read_to_string(&dest).unwrap();
        assert!(
            text == "old\n" || (text.starts_with("one\n") && text.len() > 50_000_000),
            "partial file after SIGTERM at {delay_ms} ms: {} bytes",
            text.len()
        );
        dir.assert_no_stage_files();
    }
}

#[test]
fn exec_killed_by_sigkill_takes_the_app_with_it() {
    let dir = Dir::new();
    dir.data("v: one\n");
    dir.simple("app", "{{ getv(key=\"/v\") }}\n", "");
    let app = dir.write(
        "bin/app.sh",
        "echo $$ > @DIR@/app.pid.tmp && mv @DIR@/app.pid.tmp @DIR@/app.pid\nexec sleep 60\n",
    );
    let mut cmd = crate::harness::TestCommand::new(dir.root());
    cmd.arg("exec")
        .arg("--confdir")
        .arg(dir.root())
        .args(["--backend", "file", "--file"])
        .arg(dir.path("data.yaml"))
        .args(["--", "/bin/sh"])
        .arg(&app);
    let mut p = cmd.spawn();
    let pid = wait_pid(&dir.path("app.pid"));
    send(p.pid(), "KILL");
    assert!(exits_within(&mut p, TIMEOUT));
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    let orphaned = alive(pid);
    send(pid, "KILL");
    assert!(!orphaned, "the app outlived its killed supervisor");
}

// ---------------------------------------------------------------------------
// Commands that print without end
// ---------------------------------------------------------------------------

/// Peak resident memory of `pid` in kB (`VmHWM`).
fn peak_rss_kb(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn check_cmd_printing_100mb_keeps_only_its_tail_and_logs_it_in_lines() {
    let dir = Dir::new();
    dir.data("v: one\n");
    dir.simple(
        "app",
        "{{ getv(key=\"/v\") }}\n",
        "check_cmd = \"head -c 100000000 /dev/zero | tr '\\\\0' x; echo; echo second-$((40+2)); echo end-$((40+2)); exit 1\"",
    );
    let mut p = watch(&dir);
    let log = p.wait_stderr_after(0, "end-42", 1);
    let rss = peak_rss_kb(p.pid());
    eprintln!("peak RSS while a check printed 100 MB: {rss} kB");
    p.stop();
    assert!(
        rss < 60_000,
        "peak RSS {rss} kB while reading 100 MB of output"
    );
    assert!(
        log.len() < 1_000_000,
        "{} bytes of log for one failed check",
        log.len()
    );
    let end = log
        .lines()
        .find(|l| l.contains("end-42"))
        .unwrap()
        .to_string();
    assert!(
        !end.contains("second-42"),
        "output logged as one line: {end:.300}"
    );
    assert!(!dir.out("app.conf").exists());
}

// ---------------------------------------------------------------------------
// Destinations: full, read-only, bind-mounted, a symlink, a directory, missing
// ---------------------------------------------------------------------------

/// Runs `mount` (or `umount`) with `args`; panics when it fails.
fn mount(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mount the test made, unmounted when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A `size` tmpfs on `dir` (created), or `None` with a note when not root.
fn tmpfs(dir: &Path, size: &str) -> Option<Mounted> {
    if current_uid() != 0 {
        eprintln!("note: not root: skipping a case that mounts a tmpfs");
        return None;
    }
    fs::create_dir_all(dir).unwrap();
    mount(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            dir.to_str().unwrap(),
        ],
    );
    Some(Mounted(dir.to_path_buf()))
}

/// A resource `app` rendering `/v` (and `/pad`, for size) to `dest`.
fn app_to(dir: &Dir, dest: &Path, data: &str) {
    dir.data(data);
    dir.template(
        "app.tmpl",
        "{{ getv(key=\"/v\") }}\n{{ getv(key=\"/pad\", default=\"\") }}",
    );
    dir.resource(
        "app",
        &format!(
            "[template]\nsrc = \"app.tmpl\"\ndest = \"{}\"\nkeys = [\"/\"]\n",
            dest.display()
        ),
    );
}

#[test]
fn disk_full_keeps_the_old_file_names_the_path_and_recovers_once_space_is_freed() {
    let dir = Dir::new();
    let mnt = dir.path("small");
    let Some(_tmpfs) = tmpfs(&mnt, "4m") else {
        return;
    };
    let dest = mnt.join("app.conf");
    fs::write(&dest, "old\n").unwrap();
    // 3 MB taken, a 2 MB render: does not fit.
    let filler = mnt.join("filler");
    fs::write(&filler, vec![b'f'; 3 * 1024 * 1024]).unwrap();
    let pad = "p".repeat(2 * 1024 * 1024);
    app_to(&dir, &dest, &format!("v: new\npad: {pad}\n"));

    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&["No space left on device", dest.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(&dest).unwrap(), "old\n");
    assert!(stage_files(&mnt).is_empty(), "{:?}", stage_files(&mnt));

    // Under --watch the failed write is retried, and lands once space frees.
    let mut p = watch(&dir);
    p.wait_stderr_after(0, "No space left on device", 1);
    assert_eq!(fs::read_to_string(&dest).unwrap(), "old\n");
    fs::remove_file(&filler).unwrap();
    p.wait_until("the retried write", |_| {
        fs::read_to_string(&dest).is_ok_and(|t| t.starts_with("new\npp"))
    });
    p.stop();
    assert!(stage_files(&mnt).is_empty());
}

#[test]
fn read_only_destination_directory_keeps_the_old_file_and_names_the_path() {
    let dir = Dir::new();
    let mnt = dir.path("ro");
    let Some(_tmpfs) = tmpfs(&mnt, "1m") else {
        return;
    };
    let dest = mnt.join("app.conf");
    fs::write(&dest, "old\n").unwrap();
    mount("mount", &["-o", "remount,ro", mnt.to_str().unwrap()]);
    app_to(&dir, &dest, "v: new\n");
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&["Read-only file system", mnt.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(&dest).unwrap(), "old\n");
}

#[test]
fn a_bind_mounted_destination_file_is_written_in_place() {
    // Docker's `-v file:file` and Kubernetes' subPath: rename over a mount
    // point fails with EBUSY.
    if current_uid() != 0 {
        eprintln!("note: not root: skipping the bind-mount case");
        return;
    }
    let dir = Dir::new();
    let host = dir.path("host.conf");
    fs::write(&host, "old\n").unwrap();
    let dest = dir.out("app.conf");
    fs::write(&dest, "old\n").unwrap();
    mount(
        "mount",
        &["--bind", host.to_str().unwrap(), dest.to_str().unwrap()],
    );
    let _bind = Mounted(dest.clone());
    app_to(&dir, &dest, "v: new\n");
    let out = dir
        .command()
        .args(["--backend", "file", "--onetime", "--file"])
        .arg(dir.path("data.yaml"))
        .env("SIDEKICK_LOG_LEVEL", "info")
        .run();
    out.assert_stderr_has(&["in place"]);
    assert_eq!(fs::read_to_string(&dest).unwrap(), "new\n");
    assert_eq!(
        fs::read_to_string(&host).unwrap(),
        "new\n",
        "written through"
    );
    dir.assert_no_stage_files();
    // The next run compares equal: nothing to do.
    let out = dir.onetime().run();
    assert!(!out.stderr.contains("in place"), "{out}");
}

#[test]
fn a_symlink_destination_is_replaced_by_a_regular_file_as_confd_does() {
    // Held before issue 18; the decision is in docs/architecture.md.
    let dir = Dir::new();
    let target = dir.path("elsewhere.conf");
    fs::write(&target, "old\n").unwrap();
    let dest = dir.out("app.conf");
    std::os::unix::fs::symlink(&target, &dest).unwrap();
    app_to(&dir, &dest, "v: new\n");
    dir.onetime().run();
    let meta = fs::symlink_metadata(&dest).unwrap();
    assert!(meta.file_type().is_file(), "still a link: {meta:?}");
    assert_eq!(fs::read_to_string(&dest).unwrap(), "new\n");
    assert_eq!(
        fs::read_to_string(&target).unwrap(),
        "old\n",
        "target untouched"
    );
}

#[test]
fn a_directory_destination_is_an_error_naming_it_and_left_alone() {
    // Held before issue 18.
    let dir = Dir::new();
    let dest = dir.out("app.conf");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("inside"), "x").unwrap();
    app_to(&dir, &dest, "v: new\n");
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&[dest.to_str().unwrap(), "directory"]);
    assert_eq!(fs::read_to_string(dest.join("inside")).unwrap(), "x");
    dir.assert_no_stage_files();
}

#[test]
fn a_missing_destination_directory_is_created() {
    // Held before issue 18.
    let dir = Dir::new();
    let dest = dir.out("a/b/app.conf");
    app_to(&dir, &dest, "v: new\n");
    dir.onetime().run();
    assert_eq!(fs::read_to_string(&dest).unwrap(), "new\n");
}

// ---------------------------------------------------------------------------
// Renders too large
// ---------------------------------------------------------------------------

#[test]
fn a_render_over_max_output_is_refused_not_written() {
    let dir = Dir::new();
    dir.data(&format!("v: {}\n", "x".repeat(2048)));
    let dest = dir.simple("app", "{{ getv(key=\"/v\") }}\n", "max_output = \"1KB\"");
    fs::write(&dest, "old\n").unwrap();
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&["max_output (1024 bytes)", "stopped at", "app.conf"]);
    assert_eq!(dir.read("out/app.conf"), "old\n");
    dir.assert_no_stage_files();

    // Raised, it goes through.
    dir.simple("app", "{{ getv(key=\"/v\") }}\n", "max_output = 4096");
    dir.onetime().run();
    assert_eq!(dir.read("out/app.conf").len(), 2049);
}

#[test]
fn max_output_defaults_to_64_mib() {
    let dir = Dir::new();
    let value = "x".repeat(7 * 1024 * 1024);
    dir.data(&format!("big: {value}\n"));
    let dest = dir.simple(
        "big",
        "{% for i in range(end=10) %}{{ getv(key=\"/big\") }}{% endfor %}",
        "",
    );
    fs::write(&dest, "old\n").unwrap();
    dir.onetime()
        .run_fail()
        .assert_stderr_has(&["more than max_output (67108864 bytes)"]);
    assert_eq!(dir.read("out/big.conf"), "old\n");
}

/// 100,000,000 iterations in small loops (no huge range list), each writing
/// one byte: far longer than the one second allowed.
const TERA_RUNAWAY: &str =
    "{% for i in range(end=10000) %}{% for j in range(end=10000) %}x{% endfor %}{% endfor %}";
const GO_RUNAWAY: &str = "{{range seq 1 10000}}{{range seq 1 10000}}x{{end}}{{end}}";

#[test]
fn a_runaway_render_is_stopped_at_render_timeout_in_both_engines() {
    for (template, engine) in [(TERA_RUNAWAY, ""), (GO_RUNAWAY, "engine = \"go\"\n")] {
        let dir = Dir::new();
        dir.data("v: 1\n");
        let fields = format!("{engine}max_output = \"10GB\"\nrender_timeout = \"1s\"");
        let dest = dir.simple("app", template, &fields);
        fs::write(&dest, "old\n").unwrap();
        let start = std::time::Instant::now();
        dir.onetime().run_fail().assert_stderr_has(&[
            "render_timeout (1s)",
            "stopped",
            "app.conf not written",
        ]);
        // Stopped, not run to its end (which takes minutes in a debug build).
        assert!(start.elapsed() < Duration::from_secs(30), "{engine}");
        assert_eq!(dir.read("out/app.conf"), "old\n");
        dir.assert_no_stage_files();
    }
}

#[test]
fn a_runaway_render_is_stopped_at_max_output_as_it_grows() {
    // Without the stop the output would be 100 MB; it ends at the first
    // write past 1 MB.
    for (template, engine) in [(TERA_RUNAWAY, ""), (GO_RUNAWAY, "engine = \"go\"\n")] {
        let dir = Dir::new();
        dir.data("v: 1\n");
        let dest = dir.simple("app", template, &format!("{engine}max_output = \"1MB\""));
        fs::write(&dest, "old\n").unwrap();
        dir.onetime().run_fail().assert_stderr_has(&[
            "more than max_output (1048576 bytes): stopped at 1048577 bytes",
            "app.conf not written",
        ]);
        assert_eq!(dir.read("out/app.conf"), "old\n");
    }
}

#[test]
fn render_timeout_must_be_a_duration() {
    let dir = Dir::new();
    dir.data("v: 1\n");
    dir.simple("app", "x", "render_timeout = \"soon\"");
    dir.onetime()
        .run_fail()
        .assert_stderr_has(&["app.toml", "render_timeout", "soon"]);
}

#[allow(dead_code)]
fn inode(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

// ---------------------------------------------------------------------------
// etcd back with a wiped data dir
// ---------------------------------------------------------------------------

#[cfg(feature = "etcd")]
#[test]
fn etcd_back_with_a_wiped_data_dir_is_read_again_not_resumed() {
    use sidekick_testkit::etcd::Etcd;
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    etcd.put("/app/upstreams/a", "10.0.0.1:80");
    etcd.put("/app/upstreams/b", "10.0.0.2:80");
    // History elsewhere in the store: the revision climbs past 50.
    for i in 0..50 {
        etcd.put("/other/counter", &i.to_string());
    }
    let before = etcd.revision();
    let dir = Dir::new();
    let dest = upstream(&dir, "");
    let mut p = dir
        .command()
        .args(["--backend", "etcdv3", "--node", &etcd.url(), "--watch"])
        .spawn();
    p.wait_for_file(
        &dest,
        "upstream app {\n  server 10.0.0.1:80;\n  server 10.0.0.2:80;\n}\n",
    );
    let mark = p.stderr_mark();

    etcd.wipe_and_restart();
    etcd.put("/app/upstreams/c", "10.0.0.3:80");
    let after = etcd.revision();
    assert!(after < before, "revision {before} -> {after}");
    p.wait_for_file(&dest, "upstream app {\n  server 10.0.0.3:80;\n}\n");
    p.wait_stderr_after(mark, "reading everything again", 1);
    // And it watches the new store from where it really is.
    etcd.put("/app/upstreams/d", "10.0.0.4:80");
    p.wait_for_file(
        &dest,
        "upstream app {\n  server 10.0.0.3:80;\n  server 10.0.0.4:80;\n}\n",
    );
    p.stop();
    dir.assert_no_stage_files();
}

// ---------------------------------------------------------------------------
// Secret values never reach a log line
// ---------------------------------------------------------------------------

/// A Kubernetes Secret `db` with a password, a resource `db` reading it with
/// `template` and `extra`, and sidekick watching with `flags`. Returns the log
/// once it shows `needle`.
#[cfg(feature = "kubernetes")]
fn secret_log(template: &str, extra: &str, flags: &[&str], needle: &str) -> String {
    use sidekick_testkit::kubernetes::Cluster;
    let cluster = Cluster::start();
    cluster.put_secret(
        "db",
        &[
            ("password", b"Zq9-secret-Pa55"),
            ("key", b"line-one-XyZ\nline-two-XyZ\n"),
        ],
    );
    let dir = Dir::new();
    dir.template("db.tmpl", template);
    dir.resource(
        "db",
        &format!(
            "[template]\nsrc = \"db.tmpl\"\ndest = \"@OUT@/db.conf\"\nkeys = [\"/secrets/db\"]\n{extra}\n"
        ),
    );
    let mut p = dir
        .command()
        .args(["--backend", "kubernetes", "--kubeconfig"])
        .arg(cluster.kubeconfig())
        .args(["--namespace", cluster.namespace(), "--watch"])
        .args(flags)
        .spawn();
    let log = p.wait_stderr_after(0, needle, 1);
    p.stop();
    let log = p.stderr.text().max(log);
    for leak in [
        "Zq9-secret-Pa55",
        "secret-Pa55",
        "line-one-XyZ",
        "line-two-XyZ",
    ] {
        assert!(!log.contains(leak), "{leak:?} reached the log:\n{log}");
    }
    log
}

#[cfg(feature = "kubernetes")]
#[test]
fn a_filter_error_on_a_secret_value_does_not_log_it() {
    let log = secret_log(
        "port={{ getv(key=\"/secrets/db/password\") | int }}\n",
        "",
        &[],
        "ERROR",
    );
    assert!(log.contains("<secret>"), "{log}");
}

#[cfg(feature = "kubernetes")]
#[test]
fn an_output_format_error_does_not_quote_a_secret_value() {
    secret_log(
        "password = {{ getv(key=\"/secrets/db/password\") }}\nkey = {{ getv(key=\"/secrets/db/key\") }}\n",
        "output_format = \"toml\"",
        &[],
        "not valid toml",
    );
}

#[cfg(feature = "kubernetes")]
#[test]
fn check_cmd_output_does_not_log_a_secret_value_on_failure_or_success() {
    let template =
        "{{ getv(key=\"/secrets/db/password\") }}\n{{ getv(key=\"/secrets/db/key\") }}\n";
    let log = secret_log(
        template,
        "check_cmd = \"cat {{.src}}; exit 1\"",
        &[],
        "exited with",
    );
    assert!(log.contains("<secret>"), "{log}");
    secret_log(
        template,
        "check_cmd = \"cat {{.src}}\"",
        &["--log-level", "debug"],
        "command succeeded",
    );
}

#[cfg(feature = "etcd")]
#[test]
fn etcd_keys_that_collide_once_normalized_are_logged_and_the_plain_one_wins() {
    use sidekick_testkit::etcd::Etcd;
    let Some(etcd) = Etcd::start() else {
        return;
    };
    etcd.put("/app/upstreams/a", "10.0.0.1:80");
    etcd.put("/app/upstreams//a", "10.9.9.9:80");
    etcd.put("/app/upstreams//c", "10.0.0.3:80");
    etcd.put("/app/upstreams/c/", "10.0.0.4:80");
    let dir = Dir::new();
    let dest = upstream(&dir, "");
    let out = dir
        .command()
        .args(["--backend", "etcdv3", "--node", &etcd.url(), "--onetime"])
        .run();
    assert_eq!(
        fs::read_to_string(&dest).unwrap(),
        "upstream app {\n  server 10.0.0.1:80;\n  server 10.0.0.4:80;\n}\n"
    );
    out.assert_stderr_has(&[
        "one key once empty segments are dropped",
        "key=/app/upstreams//a",
        "same_as=/app/upstreams/a",
        "key=/app/upstreams//c",
        "same_as=/app/upstreams/c/",
    ]);
}

// ---------------------------------------------------------------------------
// Hostile data files (the file backend): bounded, and a clear error or a
// defined result. All held before issue 18.
// ---------------------------------------------------------------------------

/// A resource `all` listing every key two levels deep as `key=value`.
fn all_keys(dir: &Dir) -> PathBuf {
    dir.simple(
        "all",
        "{% for kv in gets(pattern=\"/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}\
         {% for kv in gets(pattern=\"/*/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
        "",
    )
}

/// Runs `--watch` on `data.yaml` until it logs `needle`; returns the log and
/// the peak RSS in kB.
fn watch_until_logged(dir: &Dir, needle: &str) -> (String, u64) {
    let mut p = watch(dir);
    let log = p.wait_stderr_after(0, needle, 1);
    let rss = peak_rss_kb(p.pid());
    p.stop();
    (log, rss)
}

#[test]
fn a_yaml_alias_bomb_is_a_bounded_error() {
    let dir = Dir::new();
    let dest = all_keys(&dir);
    fs::write(&dest, "old\n").unwrap();
    let mut yaml = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for level in "bcdefghi".chars() {
        let refs = vec![format!("*{prev}"); 9].join(",");
        yaml.push_str(&format!("{level}: &{level} [{refs}]\n"));
        prev = level;
    }
    dir.data(&yaml);
    let started = Instant::now();
    let out = dir.onetime().run_fail();
    let took = started.elapsed();
    out.assert_stderr_has(&["data.yaml"]);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(dir.read("out/all.conf"), "old\n");
    let (_, rss) = watch_until_logged(&dir, "initial load failed");
    eprintln!("alias bomb: onetime {took:?}, --watch peak RSS {rss} kB");
    assert!(rss < 200_000, "peak RSS {rss} kB");
}

#[test]
fn ten_thousand_levels_of_nesting_are_a_bounded_error() {
    let dir = Dir::new();
    all_keys(&dir);
    let flow = format!("a: {}1{}\n", "{a: ".repeat(10_000), "}".repeat(10_000));
    dir.data(&flow);
    // The parser's words for it differ by version ("Depth", "nested deeper").
    dir.onetime().run_fail().assert_stderr_has(&["data.yaml"]);
    let block: String = (0..10_000)
        .map(|i| format!("{}a:\n", " ".repeat(i)))
        .chain(std::iter::once(format!("{}x: 1\n", " ".repeat(10_000))))
        .collect();
    dir.data(&block);
    dir.onetime().run_fail().assert_stderr_has(&["data.yaml"]);
    assert!(!dir.out("all.conf").exists());
}

#[test]
fn a_100_mb_value_is_read_or_refused_in_bounded_memory() {
    let dir = Dir::new();
    let dest = dir.simple("app", "{{ getv(key=\"/v\") | length }}\n", "");
    fs::write(&dest, "old\n").unwrap();
    dir.data(&format!("v: {}\n", "x".repeat(100 * 1024 * 1024)));
    // Either the reader refuses it (serde-saphyr's scalar budget: an error
    // naming data.yaml, the old file kept) or it reads it whole.
    let mut p = watch(&dir);
    p.wait_until("the value read or refused", |r| {
        r.stderr.text().contains("data.yaml") || dir.read("out/app.conf") != "old\n"
    });
    let rss = peak_rss_kb(p.pid());
    p.stop();
    let text = dir.read("out/app.conf");
    eprintln!("100 MB value: {text:?}, --watch peak RSS {rss} kB");
    assert!(text == "old\n" || text == "104857600\n", "{text:?}");
    // 4x the file: the text, the value, the tree a watch diffs against.
    assert!(rss < 400_000, "peak RSS {rss} kB for a 100 MB value");
}

#[test]
fn nul_bytes_in_a_value_are_rendered_as_they_are() {
    let dir = Dir::new();
    dir.data("v: \"a\\0b\"\n");
    let dest = dir.simple("app", "[{{ getv(key=\"/v\") }}]\n", "");
    dir.onetime().run();
    assert_eq!(fs::read(&dest).unwrap(), b"[a\0b]\n");
}

#[test]
fn odd_keys_have_a_defined_meaning() {
    // `..` is a name like any other (keys are not paths: nothing is left),
    // spaces and unicode stay, empty segments are dropped.
    let dir = Dir::new();
    dir.data(
        "\"..\": {x: 1}\n\"a b\": 2\n\"ключ\": {\"ü ber\": 3}\n\"\": {y: 4}\n\"b//c\": 5\n\"/d/\": {e: 6}\n",
    );
    let dest = all_keys(&dir);
    dir.onetime().run();
    assert_eq!(
        fs::read_to_string(&dest).unwrap(),
        "/a b=2\n/y=4\n/../x=1\n/b/c=5\n/d/e=6\n/ключ/ü ber=3\n"
    );
    // Two keys that meet once empty segments are dropped: an error naming it.
    dir.data("\"a/\": {z: 6}\na: {z: 7}\n");
    dir.onetime()
        .run_fail()
        .assert_stderr_has(&["key /a/z is both", "\"6\"", "\"7\""]);
}

#[test]
fn an_include_outside_templates_is_refused() {
    let dir = Dir::new();
    dir.data("v: 1\n");
    dir.write("secret.txt", "do not include me\n");
    dir.simple("tera", "{% include \"../secret.txt\" %}\n", "");
    dir.simple(
        "go",
        "{{ template \"../secret.txt\" . }}\n",
        "engine = \"go\"",
    );
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&["tera.toml", "go.toml"]);
    assert!(!out.stderr.contains("do not include me"), "{out}");
    assert!(!dir.out("tera.conf").exists());
    assert!(!dir.out("go.conf").exists());
}

// ---------------------------------------------------------------------------
// Soak: 10,000 changes over 60 s
// ---------------------------------------------------------------------------

/// Resident memory (`VmRSS`, kB) and open descriptors of `pid`.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    (rss, fds)
}

#[cfg(feature = "etcd")]
#[test]
fn soak_10000_changes_over_60_s_end_in_the_final_state_with_flat_rss_and_fds() {
    use sidekick_testkit::etcd::{Etcd, Gateway};
    const CHANGES: usize = 10_000;
    const WARM_UP: usize = 500;
    const KEYS: usize = 50;
    const SPAN: Duration = Duration::from_secs(60);
    let Some(etcd) = Etcd::start() else {
        return;
    };
    for k in 0..KEYS {
        etcd.put(&format!("/app/upstreams/{k:02}"), "10.0.0.0:80");
    }
    let dir = Dir::new();
    let dest = upstream(&dir, "");
    let mut p = dir
        .command()
        .args(["--backend", "etcdv3", "--node", &etcd.url(), "--watch"])
        .spawn();
    p.wait_for_file_matching(&dest, "the first render", |t| t.contains("10.0.0.0:80"));
    let mut gateway = Gateway::connect(&etcd);
    let value = |n: usize| format!("10.{}.{}.{}:80", n / 65536 % 256, n / 256 % 256, n % 256);
    let final_file = |upto: usize| {
        let mut last = vec!["10.0.0.0:80".to_string(); KEYS];
        for n in 1..=upto {
            last[n % KEYS] = value(n);
        }
        // getvs sorts the values, as confd's does.
        last.sort();
        let servers: String = last.iter().map(|v| format!("  server {v};\n")).collect();
        format!("upstream app {{\n{servers}}}\n")
    };
    let started = Instant::now();
    let mut baseline = None;
    for n in 1..=CHANGES {
        gateway.put(&format!("/app/upstreams/{:02}", n % KEYS), &value(n));
        if n == WARM_UP {
            p.wait_for_file(&dest, &final_file(n));
            baseline = Some(rss_and_fds(p.pid()));
        }
        // Spread over SPAN: wait for this change's moment.
        let due = started + SPAN.mul_f64(n as f64 / CHANGES as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    p.wait_for_file(&dest, &final_file(CHANGES));
    // Let the last passes finish, then measure.
    thread::sleep(Duration::from_millis(500));
    let (rss0, fds0) = baseline.unwrap();
    let (rss1, fds1) = rss_and_fds(p.pid());
    eprintln!(
        "soak: {CHANGES} changes in {:?}; RSS {rss0} -> {rss1} kB, fds {fds0} -> {fds1}",
        started.elapsed()
    );
    assert!(
        rss1 <= rss0 + 4096,
        "RSS grew from {rss0} to {rss1} kB over {CHANGES} changes"
    );
    assert!(fds1 <= fds0, "open fds grew from {fds0} to {fds1}");
    p.stop();
    dir.assert_no_stage_files();
}

// ---------------------------------------------------------------------------
// Cost: many `keys` entries
// ---------------------------------------------------------------------------

#[test]
fn sixteen_thousand_keys_entries_cost_linear_time() {
    // Before issue 18 every render compared each declared prefix with every
    // other one: 8 000 entries took 2.3 s, 16 000 took 8.7 s (debug build).
    const N: usize = 16_000;
    let dir = Dir::new();
    let keys: Vec<String> = (0..N).map(|i| format!("\"/k{i}\"")).collect();
    dir.template("t.tmpl", "{{ getv(key=\"/k1\") }}\n");
    dir.resource(
        "t",
        &format!(
            "[template]\nsrc = \"t.tmpl\"\ndest = \"@OUT@/t.conf\"\nkeys = [{}]\n",
            keys.join(",")
        ),
    );
    let data: String = (0..N).map(|i| format!("k{i}: a\n")).collect();
    dir.data(&data);
    let started = Instant::now();
    dir.onetime().run();
    let took = started.elapsed();
    eprintln!("{N} keys entries: onetime {took:?}");
    assert_eq!(dir.read("out/t.conf"), "a\n");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

#[cfg(feature = "etcd")]
#[test]
fn etcd_compaction_past_the_watched_revision_reloads() {
    // Held before issue 18 (the etcd crate's tests had it as a library);
    // here end to end: sidekick is frozen while etcd restarts and compacts
    // the history it would resume from.
    use sidekick_testkit::etcd::Etcd;
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    etcd.put("/app/upstreams/a", "10.0.0.1:80");
    let dir = Dir::new();
    let dest = upstream(&dir, "");
    let mut p = dir
        .command()
        .args(["--backend", "etcdv3", "--node", &etcd.url(), "--watch"])
        .spawn();
    p.wait_for_file(&dest, WORKING);
    let mark = p.stderr_mark();
    send(p.pid(), "STOP");
    etcd.restart();
    etcd.delete("/app/upstreams/a");
    etcd.put("/app/upstreams/b", "10.0.0.2:80");
    etcd.put("/other/x", "1");
    etcd.compact(etcd.revision());
    send(p.pid(), "CONT");
    p.wait_for_file(&dest, "upstream app {\n  server 10.0.0.2:80;\n}\n");
    p.wait_stderr_after(mark, "compacted", 1);
    etcd.put("/app/upstreams/c", "10.0.0.3:80");
    p.wait_for_file(
        &dest,
        "upstream app {\n  server 10.0.0.2:80;\n  server 10.0.0.3:80;\n}\n",
    );
    p.stop();
}
