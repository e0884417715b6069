//! Telling the executor (issue 6), end to end with real processes: a signal
//! to a process sidekick does not own (pid file, process name), debounce and
//! `min_reload_interval`, and `sidekick exec` as the application's parent
//! (signal forwarding, restart, kill timeout, exit codes, zombie reaping as
//! subreaper and as PID 1), and `sidekick dev -- CMD`.
//!
//! The applications are small `/bin/sh` scripts that append what they see
//! (their start, each signal, the destination's content at that moment) to an
//! `events` file; every wait polls with a timeout and no test sleeps to
//! assert speed.

mod process;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Dir, Running, TestCommand};
use process::{children_of, lines, read_pid, script, send, stat, wait_for, App, KillOnDrop};

/// `sidekick exec` in `dir` with the file backend on `data.yaml`, `flags`,
/// then `-- child`.
fn exec(dir: &Dir, flags: &[&str], child: &Path) -> TestCommand {
    let mut cmd = TestCommand::new(dir.root());
    cmd.arg("exec")
        .arg("--confdir")
        .arg(dir.root())
        .args(["--backend", "file", "--file"])
        .arg(dir.path("data.yaml"))
        .args(flags)
        .arg("--")
        .arg(child);
    cmd
}

/// sidekick (not exec) watching `data.yaml`.
fn watch(dir: &Dir) -> Running {
    dir.command()
        .args(["--backend", "file", "--watch", "--file"])
        .arg(dir.path("data.yaml"))
        .spawn()
}

/// Waits until the `events` file has at least `n` lines; returns them all.
fn wait_events(p: &mut Running, dir: &Dir, n: usize) -> Vec<String> {
    let path = dir.path("events");
    p.wait_until(&format!("{n} line(s) in {}", path.display()), |_| {
        lines(&path).len() >= n
    });
    lines(&path)
}

/// Waits until some line of `events` is `line`; returns them all.
fn wait_event(p: &mut Running, dir: &Dir, line: &str) -> Vec<String> {
    let path = dir.path("events");
    p.wait_until(&format!("event {line:?} in {}", path.display()), |_| {
        lines(&path).iter().any(|l| l == line)
    });
    lines(&path)
}

/// Waits for `rel` (a pid file a script writes) and returns the pid.
fn wait_pid(p: &mut Running, dir: &Dir, rel: &str) -> u32 {
    let path = dir.path(rel);
    let mut pid = None;
    p.wait_until(&format!("a pid in {}", path.display()), |_| {
        pid = read_pid(&path);
        pid.is_some()
    });
    pid.unwrap()
}

/// Saves `data.yaml` the way editors do (temp file, rename), so the file
/// backend never reads a half-written file.
fn save(dir: &Dir, yaml: &str) {
    dir.write_by_rename("data.yaml", yaml);
}

/// Waits (up to the harness timeout) for sidekick to exit on its own, without
/// sending it anything.
fn wait_for_exit(p: &mut Running) {
    let deadline = Instant::now() + crate::harness::TIMEOUT;
    while p.is_running() && Instant::now() < deadline {
        thread::sleep(crate::harness::POLL);
    }
}

/// Whether `pid` is gone, or is no longer a child of `parent` (reaped and reused).
fn gone_from(pid: u32, parent: u32) -> bool {
    stat(pid).is_none_or(|(_, ppid)| ppid != parent)
}

// ---------------------------------------------------------------------------
// Sidecar shape: signalling a process sidekick does not own.
// ---------------------------------------------------------------------------

/// The application: writes its pid to `app.pid`, and on HUP appends
/// "HUP <pid> <dest content>" to `events`.
fn hup_app(dir: &Dir) -> std::path::PathBuf {
    script(
        dir,
        "bin/app.sh",
        "trap 'echo \"HUP $$ $(cat @OUT@/app.conf)\" >> @DIR@/events' HUP\n\
         echo $$ > @DIR@/app.pid.tmp && mv @DIR@/app.pid.tmp @DIR@/app.pid\n\
         while :; do sleep 1 & wait $!; done\n",
    )
}

fn start_app(dir: &Dir, program: &Path) -> App {
    let app = App::start(program, &[]);
    let pid_file = dir.path("app.pid");
    wait_for(
        "the application to write its pid",
        || read_pid(&pid_file) == Some(app.pid()),
        || format!("{} holds {:?}", pid_file.display(), dir.try_read("app.pid")),
    );
    app
}

#[test]
fn pid_file_target_gets_the_signal_after_the_swap_and_only_after_a_passing_check() {
    let dir = Dir::new();
    save(&dir, "x: good1\n");
    dir.simple(
        "app",
        "{{ getv(key=\"/x\") }}\n",
        "check_cmd = \"! grep -q bad {{.src}}\"\nreload_signal = \"HUP\"\npid_file = \"@DIR@/app.pid\"",
    );
    let program = hup_app(&dir);
    let mut app = start_app(&dir, &program);
    let pid1 = app.pid();

    let mut p = watch(&dir);
    // The first render is a swap too: the application hears about it.
    let events = wait_events(&mut p, &dir, 1);
    assert_eq!(events, [format!("HUP {pid1} good1")], "{}", p.transcript());

    // The HUP handler reads the file: it sees the new content, so the signal
    // came after the swap.
    save(&dir, "x: good2\n");
    let events = wait_events(&mut p, &dir, 2);
    assert_eq!(events[1], format!("HUP {pid1} good2"), "{}", p.transcript());

    // A failing check: the destination stays, nothing is sent.
    let mark = p.stderr_mark();
    save(&dir, "x: bad\n");
    p.wait_stderr_after(mark, "check_cmd failed", 1);
    assert_eq!(dir.read("out/app.conf"), "good2\n");

    // The next good change is signalled; no signal came for the failed one
    // (it would show as a line between the two).
    save(&dir, "x: good3\n");
    let events = wait_events(&mut p, &dir, 3);
    assert_eq!(
        events,
        [
            format!("HUP {pid1} good1"),
            format!("HUP {pid1} good2"),
            format!("HUP {pid1} good3"),
        ],
        "{}",
        p.transcript()
    );

    // The application restarts with a new pid: the pid file is read at signal
    // time, so the new process is the one signalled.
    app.kill();
    let app2 = start_app(&dir, &program);
    let pid2 = app2.pid();
    assert_ne!(pid1, pid2);
    save(&dir, "x: good4\n");
    let events = wait_events(&mut p, &dir, 4);
    assert_eq!(events[3], format!("HUP {pid2} good4"), "{}", p.transcript());
    assert!(p.is_running(), "{}", p.transcript());
}

#[test]
fn process_name_target_signals_the_top_most_process_of_that_name() {
    let dir = Dir::new();
    // A name no other process on the machine has (and within comm's 15 bytes).
    let name = format!("skp{}", std::process::id());
    assert!(name.len() <= 15);
    save(&dir, "x: one\n");
    dir.simple(
        "app",
        "{{ getv(key=\"/x\") }}\n",
        &format!(
            "reload_signal = 10\nprocess = \"{name}\"\nreload_cmd = \"echo cmd >> @DIR@/events\""
        ),
    );
    // A master (comm = the script's name) with a forked worker of the same
    // name, like nginx: only the master may get the signal.
    let program = script(
        &dir,
        &format!("bin/{name}"),
        "( trap 'echo worker >> @DIR@/events' USR1\n\
           touch @DIR@/worker.ready\n\
           while :; do sleep 1 & wait $!; done ) &\n\
         trap 'echo \"master $(cat @OUT@/app.conf)\" >> @DIR@/events' USR1\n\
         echo $$ > @DIR@/app.pid.tmp && mv @DIR@/app.pid.tmp @DIR@/app.pid\n\
         while :; do sleep 1 & wait $!; done\n",
    );
    let _app = start_app(&dir, &program);
    let ready = dir.path("worker.ready");
    wait_for("the worker", || ready.exists(), String::new);

    let mut p = watch(&dir);
    wait_event(&mut p, &dir, "master one");
    save(&dir, "x: two\n");
    let events = wait_event(&mut p, &dir, "master two");
    // reload_cmd ran first, then the signal went out. The worker would have
    // got the first signal long before the second one reached the master: it
    // got none.
    assert_eq!(
        events,
        ["cmd", "master one", "cmd", "master two"],
        "{}",
        p.transcript()
    );
}

/// `process` also matches argv[0] (here set with bash's `exec -a`, while comm
/// stays "sleep"), and a name longer than comm's 15 bytes is fine there.
#[test]
fn process_name_target_matches_argv0() {
    use std::os::unix::process::ExitStatusExt;

    let dir = Dir::new();
    let name = format!("sidekick-argv0-{}", std::process::id());
    save(&dir, "x: 1\n");
    dir.simple(
        "app",
        "{{ getv(key=\"/x\") }}\n",
        &format!("reload_signal = \"USR1\"\nprocess = \"{name}\""),
    );
    let mut app = App::start(
        Path::new("bash"),
        &["-c", &format!("exec -a {name} sleep 60")],
    );
    let cmdline = format!("/proc/{}/cmdline", app.pid());
    wait_for(
        "bash to exec sleep as the name",
        || std::fs::read(&cmdline).is_ok_and(|c| c.starts_with(name.as_bytes())),
        String::new,
    );
    // sleep does not handle USR1: it dies of it, which is how we see it came.
    let mut p = watch(&dir);
    let mut status = None;
    p.wait_until("the process to get USR1", |_| {
        status = app.exited();
        status.is_some()
    });
    assert_eq!(status.unwrap().signal(), Some(10), "{}", p.transcript());
    assert!(p.is_running(), "{}", p.transcript());
}

#[test]
fn bad_targets_are_logged_errors_and_other_resources_still_render() {
    let dir = Dir::new();
    save(&dir, "x: 1\n");
    // The pid of a process that has exited: a stale pid file.
    let mut done = std::process::Command::new("true").spawn().unwrap();
    let dead = done.id();
    done.wait().unwrap();
    dir.write("stale.pid", &format!("{dead}\n"));
    dir.write("garbage.pid", "not a pid\n");
    let t = "{{ getv(key=\"/x\") }}\n";
    dir.simple("stale", t, "pid_file = \"@DIR@/stale.pid\"");
    dir.simple("garbage", t, "pid_file = \"@DIR@/garbage.pid\"");
    dir.simple("missing", t, "pid_file = \"@DIR@/missing.pid\"");
    dir.simple(
        "noproc",
        t,
        "reload_signal = \"USR2\"\nprocess = \"no-such-proc-sk\"",
    );
    let ok = dir.simple("ok", t, "");

    let mut p = watch(&dir);
    p.wait_for_file(&ok, "1\n");
    let wanted = [
        "stale pid file",
        "\"not a pid\" is not a process id",
        "missing.pid: No such file or directory",
        "no running process named \"no-such-proc-sk\"",
    ];
    for needle in wanted {
        p.wait_stderr_after(0, needle, 1);
    }
    // The files were swapped; only the signal failed.
    for name in ["stale", "garbage", "missing", "noproc"] {
        assert_eq!(dir.read(format!("out/{name}.conf")), "1\n");
    }
    // Still running, still rendering, still reporting.
    save(&dir, "x: 2\n");
    p.wait_for_file(&ok, "2\n");
    for needle in wanted {
        p.wait_stderr_after(0, needle, 2);
    }
    assert!(p.is_running(), "{}", p.transcript());
    let stderr = p.stderr.text();
    assert!(!stderr.contains("panicked"), "no crash{}", p.transcript());
}

/// A process name longer than comm's 15 bytes whose 15th byte falls inside
/// a UTF-8 character: looking for it must be a logged "no such process", not
/// a crash.
#[test]
fn a_long_non_ascii_process_name_is_no_crash() {
    let dir = Dir::new();
    save(&dir, "x: 1\n");
    let name = "sidekick-proc-\u{e9}";
    assert_eq!(name.len(), 16);
    assert!(!name.is_char_boundary(15));
    let t = "{{ getv(key=\"/x\") }}\n";
    dir.simple("app", t, &format!("process = \"{name}\""));
    let ok = dir.simple("ok", t, "");
    let mut p = watch(&dir);
    p.wait_for_file(&ok, "1\n");
    p.wait_stderr_after(0, &format!("no running process named {name:?}"), 1);
    save(&dir, "x: 2\n");
    p.wait_for_file(&ok, "2\n");
    assert!(p.is_running(), "{}", p.transcript());
}

#[test]
fn a_reload_signal_needs_a_target_and_a_valid_name() {
    let cases = [
        ("reload_signal = \"HUP\"", "needs `pid_file` or `process`"),
        (
            "pid_file = \"/tmp/x.pid\"\nprocess = \"nginx\"",
            "set one of them, not both",
        ),
        (
            "reload_signal = \"SIGNOPE\"\npid_file = \"/tmp/x.pid\"",
            "is not a signal name",
        ),
        (
            "kill_signal = 999\nrestart = true",
            "999 is not a signal number",
        ),
    ];
    for (extra, message) in cases {
        let dir = Dir::new();
        save(&dir, "x: 1\n");
        dir.simple("app", "{{ getv(key=\"/x\") }}\n", extra);
        dir.onetime()
            .run_fail()
            .assert_stderr_has(&["app.toml", message]);
    }
}

// ---------------------------------------------------------------------------
// Debounce and min_reload_interval.
// ---------------------------------------------------------------------------

/// Saves `data.yaml` as `x: I` for I in 1..=n, by rename, `gap` apart.
fn burst(dir: &Dir, n: usize, gap: Duration) -> Burst {
    let start = Instant::now();
    let mut last = start;
    let mut gaps = Vec::with_capacity(n);
    for i in 1..=n {
        dir.write_by_rename("data.yaml", &format!("x: {i}\n"));
        let now = Instant::now();
        gaps.push(now - last);
        last = now;
        thread::sleep(gap);
    }
    Burst {
        took: start.elapsed(),
        gaps,
    }
}

/// How a burst of saves went: a loaded machine can stall the writer, and a
/// stall is a real quiet period that a debounce rightly renders in.
struct Burst {
    took: Duration,
    /// Time between one save and the next (the first is from the start).
    gaps: Vec<Duration>,
}

impl Burst {
    /// Gaps between saves of at least `d`.
    fn stalls(&self, d: Duration) -> usize {
        self.gaps.iter().skip(1).filter(|g| **g >= d).count()
    }
}

impl std::fmt::Debug for Burst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let longest = self.gaps.iter().skip(1).max().copied().unwrap_or_default();
        write!(f, "{:?} (longest gap {longest:?})", self.took)
    }
}

/// Resource `name` whose reload_cmd appends the destination's content to
/// `NAME.reloads`.
fn counted(dir: &Dir, name: &str, extra: &str) {
    dir.simple(
        name,
        "v={{ getv(key=\"/x\") }}\n",
        &format!("reload_cmd = \"cat @OUT@/{name}.conf >> @DIR@/{name}.reloads\"\n{extra}"),
    );
}

#[test]
fn a_burst_of_500_saves_gives_a_handful_of_reloads() {
    let dir = Dir::new();
    save(&dir, "x: 0\n");
    counted(&dir, "slow", "wait = \"200ms:1s\"");
    counted(&dir, "fast", "");
    let mut p = watch(&dir);
    for name in ["slow", "fast"] {
        let path = dir.path(format!("{name}.reloads"));
        p.wait_until("the first render", |_| lines(&path) == ["v=0"]);
    }

    let took = burst(&dir, 500, Duration::from_millis(2));
    for name in ["slow", "fast"] {
        let path = dir.path(format!("{name}.reloads"));
        p.wait_until(&format!("{name} to reload with the last value"), |_| {
            lines(&path).last().is_some_and(|l| l == "v=500")
        });
    }
    assert_eq!(dir.read("out/slow.conf"), "v=500\n");
    let slow = lines(&dir.path("slow.reloads")).len() - 1;
    let fast = lines(&dir.path("fast.reloads")).len() - 1;
    eprintln!("500 saves in {took:?}: {slow} debounced reloads, {fast} without wait");
    assert!(
        (1..=10).contains(&slow),
        "{slow} reloads for 500 saves in {took:?} with wait = 200ms:1s{}",
        p.transcript()
    );
}

/// `wait = "200ms:10s"`: saves every 5 ms for about 1.5 s are never 200 ms
/// apart, so the only render due is the one after the burst (the cap is far).
#[test]
fn a_continuous_burst_renders_once_when_quiet_comes() {
    let dir = Dir::new();
    save(&dir, "x: 0\n");
    counted(&dir, "slow", "wait = \"200ms:10s\"");
    let mut p = watch(&dir);
    let path = dir.path("slow.reloads");
    p.wait_until("the first render", |_| lines(&path) == ["v=0"]);
    let took = burst(&dir, 300, Duration::from_millis(5));
    p.wait_until("the reload with the last value", |_| {
        lines(&path).last().is_some_and(|l| l == "v=300")
    });
    let renders = lines(&path).len() - 1;
    // A writer stalled by a loaded machine makes quiet periods of its own
    // (event delivery jitters too, hence the margin under 200 ms).
    let stalls = took.stalls(Duration::from_millis(100));
    assert!(
        renders <= 2 + stalls,
        "{renders} renders for saves 5 ms apart over {took:?} with wait = 200ms:10s \
         and {stalls} stalls of 100 ms or more (quiet for 200 ms only came at the end): {:?}{}",
        lines(&path),
        p.transcript()
    );
}

#[test]
fn global_wait_flag_debounces_and_a_resource_can_opt_out() {
    let dir = Dir::new();
    save(&dir, "x: 0\n");
    counted(&dir, "slow", "");
    counted(&dir, "fast", "wait = \"0ms:0ms\"");
    let mut p = dir
        .command()
        .args([
            "--backend",
            "file",
            "--watch",
            "--wait",
            "200ms:1s",
            "--file",
        ])
        .arg(dir.path("data.yaml"))
        .spawn();
    for name in ["slow", "fast"] {
        let path = dir.path(format!("{name}.reloads"));
        p.wait_until("the first render", |_| lines(&path) == ["v=0"]);
    }
    // Saves spaced wider than the file backend's own coalescing, so that
    // without a wait each one is a render.
    let took = burst(&dir, 30, Duration::from_millis(40));
    for name in ["slow", "fast"] {
        let path = dir.path(format!("{name}.reloads"));
        p.wait_until(&format!("{name} to reload with the last value"), |_| {
            lines(&path).last().is_some_and(|l| l == "v=30")
        });
    }
    let slow = lines(&dir.path("slow.reloads")).len() - 1;
    let fast = lines(&dir.path("fast.reloads")).len() - 1;
    eprintln!("30 saves in {took:?}: {slow} with --wait, {fast} with wait = 0ms:0ms");
    assert!(
        (1..=5).contains(&slow) && fast > slow,
        "--wait 200ms:1s gave {slow} reloads, wait = 0ms:0ms gave {fast}{}",
        p.transcript()
    );
}

#[test]
fn min_reload_interval_spaces_reloads() {
    let dir = Dir::new();
    save(&dir, "x: 0\n");
    dir.simple(
        "mri",
        "v={{ getv(key=\"/x\") }}\n",
        "min_reload_interval = \"1s\"\n\
         reload_cmd = \"echo $(date +%s%N) $(cat @OUT@/mri.conf) >> @DIR@/reloads\"",
    );
    // Already up to date: the start is no reload, so the first change reloads at once.
    dir.write("out/mri.conf", "v=0\n");
    let marker = dir.simple("marker", "{{ getv(key=\"/x\") }}\n", "");
    let mut p = watch(&dir);
    p.wait_for_file(&marker, "0\n");

    let reloads = dir.path("reloads");
    save(&dir, "x: 1\n");
    p.wait_until("the first reload", |_| lines(&reloads).len() == 1);
    // Two more changes 100 ms apart, right after that reload.
    save(&dir, "x: 2\n");
    thread::sleep(Duration::from_millis(100));
    save(&dir, "x: 3\n");
    p.wait_until("the reload with the last value", |_| {
        lines(&reloads).last().is_some_and(|l| l.ends_with(" v=3"))
    });

    let entries: Vec<(u128, String)> = lines(&reloads)
        .iter()
        .map(|l| {
            let (t, v) = l.split_once(' ').expect("timestamp and value");
            (t.parse().expect("nanoseconds"), v.to_string())
        })
        .collect();
    assert_eq!(entries[0].1, "v=1", "{entries:?}");
    assert!(entries.len() <= 3, "{entries:?}");
    for pair in entries.windows(2) {
        let gap_ms = (pair[1].0 - pair[0].0) / 1_000_000;
        assert!(
            gap_ms >= 800,
            "reloads {gap_ms} ms apart with min_reload_interval = 1s: {entries:?}{}",
            p.transcript()
        );
    }
    assert_eq!(dir.read("out/mri.conf"), "v=3\n");
}

// ---------------------------------------------------------------------------
// `sidekick exec`: the init shape.
// ---------------------------------------------------------------------------

/// The child: logs its start with the destination's content, logs forwarded
/// signals (HUP with the content at that moment), exits 7 on TERM and 5 on INT.
fn logging_child(dir: &Dir) -> std::path::PathBuf {
    script(
        dir,
        "bin/child.sh",
        "log() { echo \"$*\" >> @DIR@/events; }\n\
         log \"start $(cat @OUT@/app.conf)\"\n\
         trap 'log \"HUP $(cat @OUT@/app.conf)\"' HUP\n\
         for s in USR1 USR2 WINCH QUIT; do trap \"log $s\" $s; done\n\
         trap 'log TERM; exit 7' TERM\n\
         trap 'log INT; exit 5' INT\n\
         echo $$ > @DIR@/child.pid.tmp && mv @DIR@/child.pid.tmp @DIR@/child.pid\n\
         while :; do sleep 1 & wait $!; done\n",
    )
}

#[test]
fn exec_renders_first_forwards_signals_and_signals_the_child_on_change() {
    let dir = Dir::new();
    save(&dir, "x: v1\n");
    dir.simple(
        "app",
        "{{ getv(key=\"/x\") }}\n",
        "reload_signal = \"SIGHUP\"\ncheck_cmd = \"! grep -q bad {{.src}}\"",
    );
    let child = logging_child(&dir);
    let mut p = exec(&dir, &["--watch", "--kill-timeout", "5s"], &child).spawn();
    let child_pid = wait_pid(&mut p, &dir, "child.pid");
    assert_eq!(
        stat(child_pid).map(|(_, ppid)| ppid),
        Some(p.pid()),
        "the command is sidekick's child"
    );
    // Rendered before the start, and no reload signal for that first render.
    assert_eq!(lines(&dir.path("events")), ["start v1"]);

    // Signals sent to sidekick reach the child.
    let mut expected = vec!["start v1".to_string()];
    for (sig, line) in [
        ("HUP", "HUP v1"),
        ("USR1", "USR1"),
        ("USR2", "USR2"),
        ("WINCH", "WINCH"),
        ("QUIT", "QUIT"),
    ] {
        send(p.pid(), sig);
        expected.push(line.to_string());
        let events = wait_events(&mut p, &dir, expected.len());
        assert_eq!(events, expected, "after {sig}{}", p.transcript());
    }

    // A change: HUP after the swap (the child reads the new content).
    save(&dir, "x: v2\n");
    expected.push("HUP v2".into());
    let events = wait_events(&mut p, &dir, expected.len());
    assert_eq!(events, expected, "{}", p.transcript());

    // A failed check sends nothing; the next good change does.
    let mark = p.stderr_mark();
    save(&dir, "x: bad\n");
    p.wait_stderr_after(mark, "check_cmd failed", 1);
    save(&dir, "x: v3\n");
    expected.push("HUP v3".into());
    let events = wait_events(&mut p, &dir, expected.len());
    assert_eq!(events, expected, "{}", p.transcript());

    // SIGTERM: forwarded, the child exits 7, sidekick exits 7.
    let sidekick = p.pid();
    let status = p.stop();
    assert_eq!(status.code(), Some(7), "{status}{}", p.transcript());
    assert_eq!(lines(&dir.path("events")).last().unwrap(), "TERM");
    assert!(gone_from(child_pid, sidekick), "the child was reaped");
}

#[test]
fn exec_sigint_is_forwarded_and_sidekick_leaves_with_the_childs_code() {
    let dir = Dir::new();
    save(&dir, "x: v1\n");
    dir.simple("app", "{{ getv(key=\"/x\") }}\n", "");
    let child = logging_child(&dir);
    let mut p = exec(&dir, &["--watch", "--kill-timeout", "5s"], &child).spawn();
    wait_pid(&mut p, &dir, "child.pid");
    send(p.pid(), "INT");
    wait_for_exit(&mut p);
    let status = p.stop();
    assert_eq!(status.code(), Some(5), "{status}{}", p.transcript());
    assert_eq!(lines(&dir.path("events")), ["start v1", "INT"]);
}

/// A child that ignores SIGTERM and logs "USR1 <content>" on USR1; sidekick
/// runs it with `--kill-timeout T` and signals USR1 on a change. Returns once
/// a change was signalled, so the watch is up and nothing else is pending.
fn stubborn(dir: &Dir, kill_timeout: &str) -> (Running, u32, KillOnDrop) {
    save(dir, "x: 1\n");
    dir.simple(
        "app",
        "{{ getv(key=\"/x\") }}\n",
        "reload_signal = \"USR1\"",
    );
    let child = script(
        dir,
        "bin/stubborn.sh",
        "trap '' TERM\n\
         trap 'echo \"USR1 $(cat @OUT@/app.conf)\" >> @DIR@/events' USR1\n\
         echo $$ > @DIR@/child.pid.tmp && mv @DIR@/child.pid.tmp @DIR@/child.pid\n\
         while :; do sleep 1 & wait $!; done\n",
    );
    let mut p = exec(dir, &["--watch", "--kill-timeout", kill_timeout], &child).spawn();
    let child_pid = wait_pid(&mut p, dir, "child.pid");
    save(dir, "x: 2\n");
    wait_event(&mut p, dir, "USR1 2");
    let guard = KillOnDrop {
        pid: child_pid,
        marker: child.display().to_string(),
    };
    (p, child_pid, guard)
}

/// SIGTERM while the first render is still running (here a slow
/// reload_cmd): sidekick must stop, not start the command and then ignore
/// the signal it already received.
#[test]
fn exec_sigterm_during_the_first_render_is_not_lost() {
    let dir = Dir::new();
    save(&dir, "x: v1\n");
    dir.simple(
        "app",
        "{{ getv(key=\"/x\") }}\n",
        "reload_cmd = \"touch @DIR@/rendering; sleep 1\"",
    );
    let child = logging_child(&dir);
    let mut p = exec(&dir, &["--watch", "--kill-timeout", "5s"], &child).spawn();
    let rendering = dir.path("rendering");
    p.wait_until("the first render's reload_cmd", |_| rendering.exists());
    send(p.pid(), "TERM");
    wait_for_exit(&mut p);
    let running = p.is_running();
    let events = lines(&dir.path("events"));
    assert!(
        !running,
        "sidekick still runs {:?} after a SIGTERM sent during the first render; \
         child events: {events:?}{}",
        crate::harness::TIMEOUT,
        p.transcript()
    );
    // Either the command never started, or it was stopped with the signal.
    assert!(
        events.is_empty() || events.last().is_some_and(|l| l == "TERM"),
        "{events:?}"
    );
}

/// SIGTERM while the first backend load is still in flight (a backend slow to
/// answer; here the data file is a FIFO nobody has written yet): sidekick must
/// stop, not start the command once the answer comes and then run on.
#[test]
fn exec_sigterm_during_a_slow_first_load_is_not_lost() {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let dir = Dir::new();
    dir.simple("app", "{{ getv(key=\"/x\") }}\n", "");
    let fifo = dir.path("data.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let child = logging_child(&dir);
    // No --watch: only the first load reads the FIFO.
    let mut p = exec(&dir, &["--kill-timeout", "5s"], &child).spawn();
    // Opening the write end without blocking succeeds once sidekick has the
    // FIFO open for reading, that is, once its first load is under way.
    const O_NONBLOCK: i32 = 0o4000; // Linux
    let mut writer = None;
    p.wait_until("sidekick to open the data FIFO", |_| {
        writer = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo)
            .ok();
        writer.is_some()
    });
    send(p.pid(), "TERM");
    // Let the signal be taken in before the backend answers.
    thread::sleep(Duration::from_millis(200));
    let mut writer = writer.unwrap();
    writer.write_all(b"x: v1\n").unwrap();
    drop(writer);

    wait_for_exit(&mut p);
    let running = p.is_running();
    let events = lines(&dir.path("events"));
    assert!(
        !running,
        "sidekick still runs {:?} after a SIGTERM sent during its first load; \
         child events: {events:?}{}",
        crate::harness::TIMEOUT,
        p.transcript()
    );
    assert!(
        events.is_empty() || events.last().is_some_and(|l| l == "TERM"),
        "{events:?}"
    );
}

#[test]
fn exec_kill_timeout_sigkills_a_child_that_ignores_term() {
    let dir = Dir::new();
    let (mut p, child_pid, _guard) = stubborn(&dir, "500ms");
    let sidekick = p.pid();
    let asked = Instant::now();
    let status = p.stop();
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(137), "{status}{}", p.transcript());
    assert!(
        took >= Duration::from_millis(400),
        "SIGKILL came {took:?} after SIGTERM, before the 500ms kill timeout"
    );
    assert!(p.stderr.text().contains("SIGKILL"), "{}", p.transcript());
    assert!(gone_from(child_pid, sidekick), "the child was reaped");
}

/// The kill timeout must hold whatever else happens while it runs: here a
/// data change arrives between the forwarded SIGTERM and the SIGKILL.
#[test]
fn exec_kill_timeout_holds_when_a_change_arrives_during_the_stop() {
    let dir = Dir::new();
    let (mut p, child_pid, _guard) = stubborn(&dir, "1s");
    let sidekick = p.pid();
    let mark = p.stderr_mark();
    send(sidekick, "TERM");
    p.wait_stderr_after(mark, "forwarding signal to the child", 1);
    save(&dir, "x: 3\n");
    // No second SIGTERM (that would start the timeout again): just wait.
    wait_for_exit(&mut p);
    assert!(
        !p.is_running(),
        "sidekick still runs {:?} after SIGTERM with --kill-timeout 1s; \
         the child {child_pid} was never killed{}",
        crate::harness::TIMEOUT,
        p.transcript()
    );
    let status = p.stop();
    assert_eq!(status.code(), Some(137), "{status}{}", p.transcript());
}

#[test]
fn exec_exit_codes_of_the_child_propagate() {
    for (body, code) in [
        ("exit 0", 0),
        ("exit 7", 7),
        ("kill -KILL $$", 128 + 9),
        ("kill -TERM $$", 128 + 15),
    ] {
        let dir = Dir::new();
        save(&dir, "x: 1\n");
        dir.simple("app", "{{ getv(key=\"/x\") }}\n", "");
        let child = script(&dir, "bin/child.sh", &format!("{body}\n"));
        let out = exec(&dir, &["--watch"], &child).output();
        assert_eq!(out.code(), Some(code), "child `{body}`{out}");
    }
}

#[test]
fn exec_a_missing_command_exits_127_and_says_why() {
    let dir = Dir::new();
    save(&dir, "x: 1\n");
    dir.simple("app", "{{ getv(key=\"/x\") }}\n", "");
    let missing = dir.path("bin/no-such-command");
    let out = exec(&dir, &["--watch"], &missing).output();
    assert_eq!(out.code(), Some(127), "{out}");
    out.assert_stderr_has(&["no-such-command", "No such file or directory"]);
    // The files were rendered before the attempt.
    assert_eq!(dir.read("out/app.conf"), "1\n");
}

#[test]
fn exec_does_not_start_the_command_when_a_resource_cannot_render() {
    let dir = Dir::new();
    save(&dir, "x: 1\n");
    dir.simple("good", "{{ getv(key=\"/x\") }}\n", "");
    dir.simple("broken", "{{ getv(key=\"/missing\") }}\n", "");
    let child = script(&dir, "bin/child.sh", "touch @DIR@/started\n");
    let out = exec(&dir, &["--watch"], &child).output();
    assert!(
        !out.status.success() && out.code() != Some(127),
        "expected a render failure exit{out}"
    );
    out.assert_stderr_has(&["broken.toml", "not starting"]);
    assert!(!dir.path("started").exists(), "the command ran{out}");
}

#[test]
fn exec_restart_mode_restarts_with_kill_signal_and_the_new_child_sees_the_new_file() {
    let dir = Dir::new();
    save(&dir, "x: v1\n");
    dir.simple(
        "app",
        "{{ getv(key=\"/x\") }}\n",
        "restart = true\nkill_signal = \"SIGUSR2\"",
    );
    let child = script(
        &dir,
        "bin/child.sh",
        "log() { echo \"$*\" >> @DIR@/events; }\n\
         log \"start $$ $(cat @OUT@/app.conf)\"\n\
         trap 'log \"USR2 $$\"; exit 0' USR2\n\
         trap 'log \"TERM $$\"; exit 0' TERM\n\
         trap 'log \"HUP $$\"' HUP\n\
         while :; do sleep 1 & wait $!; done\n",
    );
    let mut p = exec(&dir, &["--watch", "--kill-timeout", "5s"], &child).spawn();
    let first = wait_events(&mut p, &dir, 1);
    let pid1 = first[0].split(' ').nth(1).unwrap().to_string();
    assert_eq!(first[0], format!("start {pid1} v1"));

    save(&dir, "x: v2\n");
    let events = wait_events(&mut p, &dir, 3);
    let pid2 = events[2].split(' ').nth(1).unwrap().to_string();
    assert_ne!(pid1, pid2, "a new process{}", p.transcript());
    assert_eq!(
        events,
        [
            format!("start {pid1} v1"),
            format!("USR2 {pid1}"),
            format!("start {pid2} v2"),
        ],
        "stopped with kill_signal, started again after the swap{}",
        p.transcript()
    );
    assert_eq!(
        stat(pid2.parse().unwrap()).map(|(_, ppid)| ppid),
        Some(p.pid()),
        "the new child is sidekick's"
    );
    // The new child is supervised like the first: SIGTERM ends both.
    let status = p.stop();
    assert_eq!(status.code(), Some(0), "{status}{}", p.transcript());
    assert_eq!(
        lines(&dir.path("events")).last().unwrap(),
        &format!("TERM {pid2}")
    );
}

#[test]
fn exec_group_signals_the_whole_process_group() {
    let dir = Dir::new();
    save(&dir, "x: 1\n");
    dir.simple("app", "{{ getv(key=\"/x\") }}\n", "");
    let child = script(
        &dir,
        "bin/child.sh",
        "log() { echo \"$*\" >> @DIR@/events; }\n\
         ( trap 'log grandchild-HUP' HUP\n\
           trap 'log grandchild-TERM; exit 0' TERM\n\
           touch @DIR@/grandchild.ready\n\
           while :; do sleep 1 & wait $!; done ) &\n\
         trap 'log child-HUP' HUP\n\
         trap 'log child-TERM; wait; exit 3' TERM\n\
         echo $$ > @DIR@/child.pid.tmp && mv @DIR@/child.pid.tmp @DIR@/child.pid\n\
         while :; do sleep 1 & wait $!; done\n",
    );
    let mut p = exec(
        &dir,
        &["--watch", "--exec-group", "--kill-timeout", "5s"],
        &child,
    )
    .spawn();
    wait_pid(&mut p, &dir, "child.pid");
    let ready = dir.path("grandchild.ready");
    p.wait_until("the grandchild", |_| ready.exists());

    send(p.pid(), "HUP");
    wait_event(&mut p, &dir, "child-HUP");
    wait_event(&mut p, &dir, "grandchild-HUP");

    let status = p.stop();
    assert_eq!(status.code(), Some(3), "{status}{}", p.transcript());
    let events = lines(&dir.path("events"));
    assert!(
        events.iter().any(|l| l == "grandchild-TERM"),
        "TERM went to the group: {events:?}"
    );
}

#[test]
fn exec_reaps_orphans_as_a_child_subreaper() {
    let dir = Dir::new();
    save(&dir, "x: 1\n");
    dir.simple("app", "{{ getv(key=\"/x\") }}\n", "");
    // Each orphan: a grandchild whose parent (a subshell) exits at once; it
    // sleeps, records its pid and its parent after the re-parenting, and exits.
    let child = script(
        &dir,
        "bin/child.sh",
        "for i in 1 2 3 4 5; do\n\
           (sh -c 'sleep 0.3; echo $$ $(cut -d\" \" -f4 /proc/$$/stat) >> @DIR@/orphans' &)\n\
         done\n\
         trap 'exit 0' TERM\n\
         echo $$ > @DIR@/child.pid.tmp && mv @DIR@/child.pid.tmp @DIR@/child.pid\n\
         while :; do sleep 1 & wait $!; done\n",
    );
    let mut p = exec(&dir, &["--watch", "--kill-timeout", "5s"], &child).spawn();
    let sidekick = p.pid();
    wait_pid(&mut p, &dir, "child.pid");
    let orphans_file = dir.path("orphans");
    p.wait_until("five orphans", |_| lines(&orphans_file).len() >= 5);
    let orphans: Vec<(u32, u32)> = lines(&orphans_file)
        .iter()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    for &(pid, parent) in &orphans {
        assert_eq!(
            parent, sidekick,
            "orphan {pid} was re-parented to sidekick (the subreaper), not {parent}"
        );
    }
    // Once they exit, sidekick reaps them: no zombie of sidekick's stays.
    for &(pid, _) in &orphans {
        p.wait_until(&format!("orphan {pid} to be reaped"), |_| {
            gone_from(pid, sidekick)
        });
    }
    let zombies: Vec<(u32, char)> = children_of(sidekick)
        .into_iter()
        .filter(|&(_, state)| state == 'Z')
        .collect();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
    assert_eq!(p.stop().code(), Some(0));
}

#[test]
fn exec_as_pid_1_in_a_pid_namespace_reaps_orphans() {
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    let allowed = matches!(&probe, Ok(o) if o.status.success());
    if !allowed {
        let why = match &probe {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("unshare --pid --fork --mount-proc must work in CI (run as root): {why}");
        }
        eprintln!("note: skipping the PID 1 test, unshare is not allowed here: {why}");
        return;
    }

    let dir = Dir::new();
    save(&dir, "x: 1\n");
    dir.simple("app", "{{ getv(key=\"/x\") }}\n", "");
    // Inside the namespace sidekick is PID 1. The child makes orphans, waits
    // (up to 5 s) for them to be reaped, and writes what it saw.
    let child = script(
        &dir,
        "bin/child.sh",
        "echo \"ppid=$PPID\" > @DIR@/ns.ppid\n\
         trap 'echo hup > @DIR@/ns.hup' HUP\n\
         kill -HUP 1\n\
         for i in 1 2 3 4 5; do (sh -c 'echo $$ >> @DIR@/ns.orphans; sleep 0.2' &); done\n\
         (sh -c 'echo $$ >> @DIR@/ns.orphans; sleep 0.3; exit 3' &)\n\
         i=0\n\
         while [ $i -lt 50 ]; do\n\
           left=0\n\
           for o in $(cat @DIR@/ns.orphans); do [ -e /proc/$o ] && left=$((left+1)); done\n\
           [ $i -ge 5 ] && [ $left -eq 0 ] && break\n\
           sleep 0.1; i=$((i+1))\n\
         done\n\
         z=0\n\
         for f in /proc/[0-9]*/stat; do\n\
           s=$(sed 's/.*) //' $f 2>/dev/null | cut -d' ' -f1)\n\
           [ \"$s\" = Z ] && z=$((z+1))\n\
         done\n\
         echo \"orphans=$(wc -l < @DIR@/ns.orphans) left=$left zombies=$z\" > @DIR@/ns.result\n\
         exit 0\n",
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(crate::harness::bin())
        .arg("exec")
        .arg("--confdir")
        .arg(dir.root())
        .args(["--backend", "file", "--file"])
        .arg(dir.path("data.yaml"))
        .arg("--")
        .arg(&child)
        .current_dir(dir.root())
        .env("NO_COLOR", "1");
    let (status, output) = process::run_with_limit(&mut cmd, crate::harness::TIMEOUT * 2);
    assert_eq!(status.code(), Some(0), "{status}\n{output}");
    assert_eq!(
        dir.read("ns.ppid"),
        "ppid=1\n",
        "sidekick is PID 1\n{output}"
    );
    assert_eq!(
        dir.read("ns.result"),
        "orphans=6 left=0 zombies=0\n",
        "every orphan reaped by PID 1\n{output}"
    );
}

// ---------------------------------------------------------------------------
// `sidekick dev -- CMD`.
// ---------------------------------------------------------------------------

#[test]
fn dev_with_a_command_signals_the_child_on_a_data_save() {
    let dir = Dir::new();
    save(&dir, "x: v1\n");
    dir.simple("app", "{{ getv(key=\"/x\") }}\n", "reload_signal = \"HUP\"");
    let child = logging_child(&dir);
    let mut p = dir
        .command()
        .arg("dev")
        .arg("--file")
        .arg(dir.path("data.yaml"))
        .args(["--kill-timeout", "5s", "--"])
        .arg(&child)
        .spawn();
    let child_pid = wait_pid(&mut p, &dir, "child.pid");
    assert_eq!(stat(child_pid).map(|(_, ppid)| ppid), Some(p.pid()));
    assert_eq!(lines(&dir.path("events")), ["start v1"]);

    save(&dir, "x: v2\n");
    let events = wait_events(&mut p, &dir, 2);
    assert_eq!(events, ["start v1", "HUP v2"], "{}", p.transcript());
    p.wait_stdout_after(0, "✔ app.toml");

    let status = p.stop();
    assert_eq!(status.code(), Some(7), "{status}{}", p.transcript());
}
