//! `--watch` with the file backend: saves (in place and by rename) re-render
//! only what changed; a backend answer that is empty where there were keys
//! never blanks a file; bad data keeps the last good files; SIGTERM stops the
//! process cleanly with no stage file left.

use crate::harness::Dir;

/// Two resources, `a` reading under /a and `b` under /b.
fn two_resources() -> Dir {
    let dir = Dir::new();
    for name in ["a", "b"] {
        dir.template(
            &format!("{name}.tmpl"),
            &format!("{name}={{{{ getv(key=\"/x\") }}}}\n"),
        );
        dir.resource(
            name,
            &format!(
                "[template]\nsrc = \"{name}.tmpl\"\ndest = \"@OUT@/{name}.conf\"\nprefix = \"/{name}\"\nkeys = [\"/\"]\nreload_cmd = \"echo {name} >> @DIR@/reloads\"\n"
            ),
        );
    }
    dir
}

fn watch(dir: &Dir) -> crate::harness::Running {
    dir.command()
        .args(["--backend", "file", "--watch", "--file"])
        .arg(dir.path("data.yaml"))
        .spawn()
}

#[test]
fn empty_answer_never_blanks_a_file() {
    let dir = two_resources();
    dir.data("a: {x: 1}\nb: {x: 1}\n");
    let mut p = watch(&dir);
    p.wait_for_file(&dir.out("a.conf"), "a=1\n");
    p.wait_for_file(&dir.out("b.conf"), "b=1\n");
    let mark = p.stderr_mark();

    // a's keys vanish while b changes: b's update is the sync point.
    dir.data("b: {x: 2}\n");
    p.wait_for_file(&dir.out("b.conf"), "b=2\n");
    assert_eq!(
        dir.read("out/a.conf"),
        "a=1\n",
        "a kept its last good content"
    );
    p.wait_stderr_after(mark, "keeping the last good file", 1);

    // Everything gone: both kept; the warning for b is the sync point.
    dir.write_by_rename("data.yaml", "{}\n");
    p.wait_stderr_after(mark, "keeping the last good file", 2);
    assert_eq!(dir.read("out/a.conf"), "a=1\n");
    assert_eq!(dir.read("out/b.conf"), "b=2\n");

    // Keys come back: both render again.
    dir.data("a: {x: 3}\nb: {x: 3}\n");
    p.wait_for_file(&dir.out("a.conf"), "a=3\n");
    p.wait_for_file(&dir.out("b.conf"), "b=3\n");
    let status = p.stop();
    assert!(status.success(), "exit after SIGTERM: {status}");
    dir.assert_no_stage_files();
}

#[test]
fn a_save_re_renders_only_the_resources_it_touches() {
    let dir = two_resources();
    dir.data("a: {x: 1}\nb: {x: 1}\n");
    let mut p = watch(&dir);
    p.wait_for_file(&dir.out("a.conf"), "a=1\n");
    p.wait_for_file(&dir.out("b.conf"), "b=1\n");
    p.wait_until("both reloads", |_| {
        dir.try_read("reloads")
            .is_some_and(|r| r.lines().count() == 2)
    });

    // In-place save changing only /b.
    dir.data("a: {x: 1}\nb: {x: 2}\n");
    p.wait_for_file(&dir.out("b.conf"), "b=2\n");
    // Editor-style save (temp file + rename) changing only /a.
    dir.write_by_rename("data.yaml", "a: {x: 2}\nb: {x: 2}\n");
    p.wait_for_file(&dir.out("a.conf"), "a=2\n");
    p.wait_until("four reloads", |_| {
        dir.try_read("reloads")
            .is_some_and(|r| r.lines().count() == 4)
    });
    let reloads = dir.read("reloads");
    let lines: Vec<&str> = reloads.lines().collect();
    assert_eq!(&lines[2..], ["b", "a"], "one reload per changed resource");
    drop(p);
    dir.assert_no_stage_files();
}

#[test]
fn broken_data_keeps_the_last_good_files_and_recovers() {
    let dir = two_resources();
    dir.data("a: {x: 1}\nb: {x: 1}\n");
    let mut p = watch(&dir);
    p.wait_for_file(&dir.out("a.conf"), "a=1\n");
    let mark = p.stderr_mark();
    let data = dir.data("a: {x: 1}\nb: [unclosed\n");
    p.wait_stderr_after(mark, &data.display().to_string(), 1);
    assert_eq!(dir.read("out/a.conf"), "a=1\n");
    assert_eq!(dir.read("out/b.conf"), "b=1\n");

    dir.data("a: {x: 5}\nb: {x: 5}\n");
    p.wait_for_file(&dir.out("a.conf"), "a=5\n");
    p.wait_for_file(&dir.out("b.conf"), "b=5\n");
}

/// SIGTERM while a check command runs: sidekick exits without leaving the
/// stage file behind, in `--onetime` and in `--watch` mode.
#[test]
fn sigterm_during_check_cmd_leaves_no_stage_file() {
    for mode in ["--onetime", "--watch"] {
        let dir = Dir::new();
        dir.data("x: 1\n");
        // The check waits for the test to create `go`.
        dir.simple(
            "app",
            "{{ getv(key=\"/x\") }}\n",
            "check_cmd = \"while [ ! -e @DIR@/go ]; do sleep 0.01; done\"",
        );
        let mut p = dir
            .command()
            .args(["--backend", "file", mode, "--file"])
            .arg(dir.path("data.yaml"))
            .spawn();
        p.wait_until("the stage file to exist", |_| {
            !crate::harness::stage_files(&dir.path("out")).is_empty()
        });
        crate::harness::send_sigterm(p.pid());
        dir.write("go", "");
        let status = p.stop();
        assert!(
            status.code().is_some(),
            "{mode}: exited by itself, not killed: {status}"
        );
        dir.assert_no_stage_files();
    }
}

#[test]
fn services_file_is_watched() {
    let dir = Dir::new();
    dir.data("k: v\n");
    dir.write(
        "services.yaml",
        "web:\n  - {address: 10.0.0.2, port: 80}\n  - {address: 10.0.0.1, port: 80}\n",
    );
    dir.simple(
        "up",
        "{% for s in service(name=\"web\") %}{{ s.address }}:{{ s.port }}\n{% endfor %}",
        "",
    );
    let mut p = dir
        .command()
        .args(["--backend", "file", "--watch", "--file"])
        .arg(dir.path("data.yaml"))
        .arg("--services-file")
        .arg(dir.path("services.yaml"))
        .spawn();
    p.wait_for_file(&dir.out("up.conf"), "10.0.0.1:80\n10.0.0.2:80\n");
    dir.write(
        "services.yaml",
        "web:\n  - {address: 10.0.0.2, port: 80}\n  - {address: 10.0.0.1, port: 80, healthy: false}\n  - {address: 10.0.0.3, port: 8080}\n",
    );
    p.wait_for_file(&dir.out("up.conf"), "10.0.0.2:80\n10.0.0.3:8080\n");
    dir.write_by_rename("services.yaml", "web:\n  - {address: 10.0.0.9, port: 80}\n");
    p.wait_for_file(&dir.out("up.conf"), "10.0.0.9:80\n");
}

#[test]
fn deleted_and_recreated_data_file_keeps_working() {
    let dir = two_resources();
    dir.data("a: {x: 1}\nb: {x: 1}\n");
    let mut p = watch(&dir);
    p.wait_for_file(&dir.out("a.conf"), "a=1\n");
    let mark = p.stderr_mark();
    std::fs::remove_file(dir.path("data.yaml")).unwrap();
    p.wait_stderr_after(mark, "data.yaml", 1);
    assert_eq!(dir.read("out/a.conf"), "a=1\n");
    dir.data("a: {x: 2}\nb: {x: 2}\n");
    p.wait_for_file(&dir.out("a.conf"), "a=2\n");
    p.wait_for_file(&dir.out("b.conf"), "b=2\n");
}

#[test]
fn new_file_in_a_data_directory_is_picked_up() {
    let dir = two_resources();
    dir.write("data.d/a.yaml", "a: {x: 1}\n");
    let mut p = dir
        .command()
        .args(["--backend", "file", "--watch", "--file"])
        .arg(dir.path("data.d"))
        .spawn();
    p.wait_for_file(&dir.out("a.conf"), "a=1\n");
    dir.write("data.d/b.json", r#"{"b": {"x": "from json"}}"#);
    p.wait_for_file(&dir.out("b.conf"), "b=from json\n");
    assert_eq!(dir.read("out/a.conf"), "a=1\n");
}
