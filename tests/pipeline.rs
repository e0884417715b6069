//! The write pipeline: `check_cmd` (gets the stage path via `{{.src}}`; a
//! failure keeps the old file), `reload_cmd` (only when something changed),
//! mode and owner, destination directories created, no stage file left on any
//! path, `--noop`, `--diff`, `--sync-only` and `--keep-stage-file`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::harness::{stage_files, Dir};

/// A confdir with one resource `app` rendering `app {{ /v }}` to out/app.conf.
fn app(extra: &str) -> Dir {
    let dir = Dir::new();
    dir.data("v: one\n");
    dir.simple("app", "app {{ getv(key=\"/v\") }}\n", extra);
    dir
}

fn lines(dir: &Dir, rel: &str) -> usize {
    dir.try_read(rel).map_or(0, |t| t.lines().count())
}

#[test]
fn check_cmd_failure_keeps_the_old_file() {
    let dir = app(
        "check_cmd = \"grep -q one {{.src}} || { echo 'config test failed: no one' >&2; exit 3; }\"\nreload_cmd = \"echo r >> @DIR@/reloads\"",
    );
    dir.onetime().run();
    assert_eq!(dir.read("out/app.conf"), "app one\n");
    assert_eq!(lines(&dir, "reloads"), 1);

    dir.data("v: two\n");
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&["check_cmd", "config test failed: no one"]);
    assert_eq!(dir.read("out/app.conf"), "app one\n", "old file kept");
    assert_eq!(lines(&dir, "reloads"), 1, "no reload after a failed check");
    dir.assert_no_stage_files();
}

#[test]
fn check_cmd_failure_on_first_render_writes_nothing() {
    let dir = app("check_cmd = \"false\"");
    dir.onetime().run_fail();
    assert!(!dir.out("app.conf").exists());
    dir.assert_no_stage_files();
}

#[test]
fn check_cmd_receives_the_stage_file_path() {
    let dir = app("check_cmd = \"echo {{.src}} >> @DIR@/checked && grep -q 'app one' {{.src}}\"");
    dir.onetime().run();
    assert_eq!(dir.read("out/app.conf"), "app one\n");
    let checked = dir.read("checked");
    let stage = std::path::Path::new(checked.trim());
    assert_eq!(
        stage.parent(),
        Some(dir.path("out").as_path()),
        "stage file sits beside dest"
    );
    let name = stage.file_name().unwrap().to_string_lossy();
    assert!(name.starts_with(".app.conf.sidekick-"), "{name}");
    assert!(!stage.exists(), "stage file was renamed into place");

    // The check sees the new content, not the old file.
    dir.data("v: two\n");
    dir.onetime().run_fail();
    assert_eq!(dir.read("out/app.conf"), "app one\n");
    dir.assert_no_stage_files();
}

#[test]
fn unchanged_render_runs_no_reload() {
    let dir = app("reload_cmd = \"cat @OUT@/app.conf >> @DIR@/reloads\"");
    dir.onetime().run();
    dir.onetime().run();
    assert_eq!(
        dir.read("reloads"),
        "app one\n",
        "one reload for two identical runs"
    );

    // A change reloads again, after the new file is in place.
    dir.data("v: two\n");
    dir.onetime().run();
    assert_eq!(dir.read("reloads"), "app one\napp two\n");
    dir.onetime().run();
    assert_eq!(lines(&dir, "reloads"), 2);
}

#[test]
fn reload_cmd_failure_fails_the_run_with_the_new_file_in_place() {
    let dir = app("reload_cmd = \"echo reload broke >&2; exit 1\"");
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&["reload_cmd", "reload broke"]);
    assert_eq!(dir.read("out/app.conf"), "app one\n");
    dir.assert_no_stage_files();
}

#[test]
fn mode_is_applied() {
    let dir = app("mode = \"0600\"");
    dir.onetime().run();
    let meta = fs::metadata(dir.out("app.conf")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);

    // A mode change alone rewrites the file.
    dir.simple("app", "app {{ getv(key=\"/v\") }}\n", "mode = \"0640\"");
    dir.onetime().run();
    let meta = fs::metadata(dir.out("app.conf")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    dir.assert_no_stage_files();
}

#[test]
fn default_mode_is_0644_for_new_files_and_kept_for_existing_ones() {
    let dir = app("");
    dir.onetime().run();
    assert_eq!(
        fs::metadata(dir.out("app.conf")).unwrap().mode() & 0o7777,
        0o644
    );

    fs::set_permissions(dir.out("app.conf"), fs::Permissions::from_mode(0o600)).unwrap();
    dir.data("v: two\n");
    dir.onetime().run();
    assert_eq!(dir.read("out/app.conf"), "app two\n");
    assert_eq!(
        fs::metadata(dir.out("app.conf")).unwrap().mode() & 0o7777,
        0o600
    );
}

#[test]
fn uid_and_gid_are_applied_when_root() {
    if crate::harness::current_uid() != 0 {
        eprintln!("skipped: uid/gid can only be tested as root (chown to 65534)");
        return;
    }
    let dir = app("uid = 65534\ngid = 65534\nmode = \"0640\"");
    dir.onetime().run();
    let meta = fs::metadata(dir.out("app.conf")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.mode() & 0o7777, 0o640);

    // Same content, same owner: nothing to do (a reload would show it).
    let dir = app("uid = 65534\ngid = 65534\nreload_cmd = \"echo r >> @DIR@/reloads\"");
    dir.onetime().run();
    dir.onetime().run();
    assert_eq!(lines(&dir, "reloads"), 1);

    // Owner changed by hand: put back.
    std::os::unix::fs::chown(dir.out("app.conf"), Some(0), Some(0)).unwrap();
    dir.onetime().run();
    let meta = fs::metadata(dir.out("app.conf")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    dir.assert_no_stage_files();
}

#[test]
fn owner_names_a_user() {
    if crate::harness::current_uid() != 0 {
        eprintln!("skipped: owner can only be tested as root");
        return;
    }
    let out = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .unwrap();
    let Ok(nobody) = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>() else {
        eprintln!("skipped: no user nobody");
        return;
    };
    let dir = app("owner = \"nobody\"");
    dir.onetime().run();
    assert_eq!(fs::metadata(dir.out("app.conf")).unwrap().uid(), nobody);

    let dir = app("owner = \"no-such-user-sidekick\"");
    dir.onetime()
        .run_fail()
        .assert_stderr_has(&["app.toml:5", "owner", "no-such-user-sidekick"]);
}

#[test]
fn missing_dest_directories_are_created() {
    let dir = Dir::new();
    dir.data("v: one\n");
    dir.template("app.tmpl", "{{ getv(key=\"/v\") }}");
    dir.resource(
        "app",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"@OUT@/deep/er/app.conf\"\nkeys = [\"/\"]\n",
    );
    dir.onetime().run();
    assert_eq!(dir.read("out/deep/er/app.conf"), "one");
    dir.assert_no_stage_files();
}

#[test]
fn no_stage_file_left_after_success_check_failure_or_render_error() {
    let dir = Dir::new();
    dir.data("v: one\n");
    dir.simple(
        "ok",
        "{{ getv(key=\"/v\") }}\n",
        "check_cmd = \"test -s {{.src}}\"",
    );
    dir.simple(
        "check",
        "{{ getv(key=\"/v\") }}\n",
        "check_cmd = \"exit 1\"",
    );
    dir.simple("render", "{{ getv(key=\"/nope\") }}\n", "");
    dir.simple("format", "not: [json\n", "output_format = \"json\"");
    dir.onetime().run_fail();
    assert_eq!(dir.read("out/ok.conf"), "one\n");
    for name in ["check", "render", "format"] {
        assert!(!dir.out(&format!("{name}.conf")).exists(), "{name}");
    }
    dir.assert_no_stage_files();
}

#[test]
fn keep_stage_file_keeps_it_after_a_failed_check() {
    let dir = app("check_cmd = \"false\"");
    let out = dir.onetime().arg("--keep-stage-file").run_fail();
    let left = stage_files(&dir.path("out"));
    assert_eq!(left.len(), 1, "{left:?}{out}");
    assert_eq!(fs::read_to_string(&left[0]).unwrap(), "app one\n");
    assert!(!dir.out("app.conf").exists());
}

#[test]
fn noop_writes_nothing_and_runs_nothing() {
    let dir =
        app("check_cmd = \"echo c >> @DIR@/checks\"\nreload_cmd = \"echo r >> @DIR@/reloads\"");
    // A file would change: exit 2, so CI can gate on it.
    let out = dir.onetime().arg("--noop").output();
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(!dir.out("app.conf").exists(), "{out}");
    assert_eq!(lines(&dir, "checks") + lines(&dir, "reloads"), 0);

    dir.write("out/app.conf", "old\n");
    let out = dir.onetime().arg("--noop").output();
    assert_eq!(out.code(), Some(2), "{out}");
    assert_eq!(dir.read("out/app.conf"), "old\n");
    assert_eq!(lines(&dir, "checks") + lines(&dir, "reloads"), 0);
    dir.assert_no_stage_files();

    // Nothing would change: exit 0.
    dir.onetime().run();
    let out = dir.onetime().arg("--noop").output();
    assert_eq!(out.code(), Some(0), "{out}");
}

#[test]
fn diff_prints_a_plain_unified_diff() {
    let dir = Dir::new();
    dir.data("v: two\n");
    dir.simple("app", "first\n{{ getv(key=\"/v\") }}\nlast\n", "");
    let dest = dir.out("app.conf");
    dir.write("out/app.conf", "first\none\nlast\n");
    let out = dir.onetime().arg("--diff").run();
    let d = dest.display();
    assert_eq!(
        out.stdout,
        format!("--- {d}\n+++ {d} (new)\n@@ -1,3 +1,3 @@\n first\n-one\n+two\n last\n"),
        "{out}"
    );
    assert!(
        !out.stdout.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
    assert_eq!(dir.read("out/app.conf"), "first\ntwo\nlast\n");

    // Nothing changed: no diff.
    let out = dir.onetime().arg("--diff").run();
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn noop_diff_shows_what_would_change() {
    let dir = Dir::new();
    dir.data("v: two\n");
    dir.simple("app", "{{ getv(key=\"/v\") }}\n", "");
    dir.write("out/app.conf", "one\n");
    let out = dir.onetime().args(["--noop", "--diff"]).output();
    assert_eq!(out.code(), Some(2), "{out}");
    out.assert_stdout_has(&["-one", "+two", "(new)", "@@"]);
    assert_eq!(dir.read("out/app.conf"), "one\n");

    // A file that does not exist yet: all lines added.
    let dir = Dir::new();
    dir.data("v: two\n");
    dir.simple("app", "{{ getv(key=\"/v\") }}\n", "");
    let out = dir.onetime().args(["--noop", "--diff"]).output();
    assert_eq!(out.code(), Some(2), "{out}");
    out.assert_stdout_has(&["+two"]);
    assert!(!dir.out("app.conf").exists());
}

#[test]
fn diff_is_uncoloured_even_with_no_color_unset() {
    let dir = app("");
    dir.write("out/app.conf", "old\n");
    let out = dir.onetime().arg("--diff").env_remove("NO_COLOR").run();
    assert!(out.stdout.contains("+app one"), "{out}");
    assert!(!out.stdout.contains('\x1b'), "{out}");
}

#[test]
fn sync_only_skips_check_and_reload() {
    let dir = app("check_cmd = \"false\"\nreload_cmd = \"echo r >> @DIR@/reloads\"");
    dir.onetime().arg("--sync-only").run();
    assert_eq!(dir.read("out/app.conf"), "app one\n");
    assert_eq!(lines(&dir, "reloads"), 0);
    dir.assert_no_stage_files();
}

#[test]
fn check_cmd_sees_the_stage_file_with_its_final_mode() {
    let dir = app("mode = \"0640\"\ncheck_cmd = \"stat -c %a {{.src}} > @DIR@/stage-mode\"");
    dir.onetime().run();
    assert_eq!(dir.read("stage-mode").trim(), "640");
}
