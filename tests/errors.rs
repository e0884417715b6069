//! Error cases and their messages: bad conf.d files (unknown field, missing
//! `src`/`dest`, missing template, bad mode/output_format), template syntax and
//! render errors, output that fails its `output_format`, broken data files.
//! With `--onetime` each makes the exit non-zero while the other, good
//! resources are still rendered, and no stage file is left behind.

use crate::harness::{Dir, Output};

/// A confdir with two good resources around the one under test (resources
/// are processed in file-name order, so one comes before and one after
/// `m-bad`), and the data they read.
fn dir_with_good_neighbours() -> Dir {
    let dir = Dir::new();
    dir.data("k: value\nother: thing\n");
    dir.simple("a-good", "a {{ getv(key=\"/k\") }}\n", "");
    dir.simple("z-good", "z {{ getv(key=\"/k\") }}\n", "");
    dir
}

/// Runs `--onetime`, expecting failure, and checks that both good resources
/// were rendered anyway and that no stage file is left.
fn run_expecting_failure(dir: &Dir) -> Output {
    let out = dir.onetime().run_fail();
    assert_eq!(
        dir.try_read("out/a-good.conf").as_deref(),
        Some("a value\n"),
        "{out}"
    );
    assert_eq!(
        dir.try_read("out/z-good.conf").as_deref(),
        Some("z value\n"),
        "{out}"
    );
    dir.assert_no_stage_files();
    out
}

fn bad_resource(dir: &Dir, toml: &str) -> String {
    dir.resource("m-bad", toml);
    dir.path("conf.d/m-bad.toml").display().to_string()
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let dir = dir_with_good_neighbours();
    dir.template("bad.tmpl", "x\n");
    let file = bad_resource(
        &dir,
        "[template]\nsrc = \"bad.tmpl\"\ndest = \"@OUT@/bad.conf\"\nkeys = [\"/\"]\nbogus_field = \"x\"\n",
    );
    let out = run_expecting_failure(&dir);
    out.assert_stderr_has(&[&format!("{file}:5"), "bogus_field"]);
    assert!(!dir.out("bad.conf").exists());
}

#[test]
fn missing_src_is_an_error_naming_the_file() {
    let dir = dir_with_good_neighbours();
    let file = bad_resource(
        &dir,
        "[template]\ndest = \"@OUT@/bad.conf\"\nkeys = [\"/\"]\n",
    );
    let out = run_expecting_failure(&dir);
    out.assert_stderr_has(&[&file, "src"]);
}

#[test]
fn missing_dest_is_an_error_naming_the_file() {
    let dir = dir_with_good_neighbours();
    dir.template("bad.tmpl", "x\n");
    let file = bad_resource(&dir, "[template]\nsrc = \"bad.tmpl\"\nkeys = [\"/\"]\n");
    let out = run_expecting_failure(&dir);
    out.assert_stderr_has(&[&file, "dest"]);
}

#[test]
fn empty_src_and_dest_are_errors() {
    let dir = dir_with_good_neighbours();
    let file = bad_resource(&dir, "[template]\nsrc = \"\"\ndest = \"@OUT@/bad.conf\"\n");
    run_expecting_failure(&dir).assert_stderr_has(&[&format!("{file}:2"), "src"]);

    let dir = dir_with_good_neighbours();
    dir.template("bad.tmpl", "x\n");
    let file = bad_resource(&dir, "[template]\nsrc = \"bad.tmpl\"\ndest = \" \"\n");
    run_expecting_failure(&dir).assert_stderr_has(&[&format!("{file}:3"), "dest"]);
}

#[test]
fn src_that_does_not_exist_names_file_line_and_template() {
    let dir = dir_with_good_neighbours();
    let file = bad_resource(
        &dir,
        "[template]\nsrc = \"nope.tmpl\"\ndest = \"@OUT@/bad.conf\"\n",
    );
    let out = run_expecting_failure(&dir);
    out.assert_stderr_has(&[&format!("{file}:2"), "nope.tmpl", "does not exist"]);
}

#[test]
fn bad_mode_names_the_field() {
    let dir = dir_with_good_neighbours();
    dir.template("bad.tmpl", "x\n");
    let file = bad_resource(
        &dir,
        "[template]\nsrc = \"bad.tmpl\"\ndest = \"@OUT@/bad.conf\"\nmode = \"rw-r--r--\"\n",
    );
    run_expecting_failure(&dir).assert_stderr_has(&[&format!("{file}:4"), "mode"]);
}

#[test]
fn unknown_output_format_names_the_field() {
    let dir = dir_with_good_neighbours();
    dir.template("bad.tmpl", "x\n");
    let file = bad_resource(
        &dir,
        "[template]\nsrc = \"bad.tmpl\"\ndest = \"@OUT@/bad.conf\"\n\noutput_format = \"xml\"\n",
    );
    run_expecting_failure(&dir).assert_stderr_has(&[&format!("{file}:5"), "output_format", "xml"]);
}

#[test]
fn template_syntax_error_names_template_file_and_line() {
    let dir = dir_with_good_neighbours();
    let tmpl = dir.template("bad.tmpl", "line one\nline {{ 1 + }} two\n");
    let file = bad_resource(
        &dir,
        "[template]\nsrc = \"bad.tmpl\"\ndest = \"@OUT@/bad.conf\"\n",
    );
    let out = run_expecting_failure(&dir);
    out.assert_stderr_has(&[&file, &format!("{}:2:", tmpl.display())]);
    assert!(!dir.out("bad.conf").exists());
}

#[test]
fn syntax_error_in_an_included_template_names_that_file() {
    let dir = dir_with_good_neighbours();
    dir.template("bad.tmpl", "{% include \"partials/p.tmpl\" %}\n");
    let partial = dir.template("partials/p.tmpl", "ok\n{% if %}\n");
    bad_resource(
        &dir,
        "[template]\nsrc = \"bad.tmpl\"\ndest = \"@OUT@/bad.conf\"\n",
    );
    let out = run_expecting_failure(&dir);
    out.assert_stderr_has(&[&format!("{}:2:", partial.display())]);
}

#[test]
fn unknown_function_names_template_file_and_line() {
    let dir = dir_with_good_neighbours();
    let tmpl = dir.template("bad.tmpl", "a\nb\n{{ getvv(key=\"/k\") }}\n");
    bad_resource(
        &dir,
        "[template]\nsrc = \"bad.tmpl\"\ndest = \"@OUT@/bad.conf\"\n",
    );
    let out = run_expecting_failure(&dir);
    out.assert_stderr_has(&["getvv", &format!("{}:3:", tmpl.display())]);
}

#[test]
fn getv_of_a_missing_key_names_the_key_and_line() {
    let dir = dir_with_good_neighbours();
    let tmpl = dir.template("bad.tmpl", "first\nx = {{ getv(key=\"/missing/key\") }}\n");
    bad_resource(
        &dir,
        "[template]\nsrc = \"bad.tmpl\"\ndest = \"@OUT@/bad.conf\"\nkeys = [\"/\"]\n",
    );
    // An old file is left alone.
    dir.write("out/bad.conf", "old\n");
    let out = run_expecting_failure(&dir);
    out.assert_stderr_has(&["/missing/key", &format!("{}:2:", tmpl.display())]);
    assert_eq!(dir.read("out/bad.conf"), "old\n");
}

#[test]
fn getv_of_a_key_outside_the_declared_keys_says_so() {
    let dir = dir_with_good_neighbours();
    dir.template("bad.tmpl", "{{ getv(key=\"/other\") }}\n");
    bad_resource(
        &dir,
        "[template]\nsrc = \"bad.tmpl\"\ndest = \"@OUT@/bad.conf\"\nkeys = [\"/k\"]\n",
    );
    run_expecting_failure(&dir).assert_stderr_has(&["/other", "keys"]);
}

#[test]
fn render_failing_output_format_is_rejected() {
    for (format, body) in [
        ("json", "{\"a\": 1,}\n"),
        ("yaml", "a: [1, 2\n"),
        ("toml", "a = \n"),
    ] {
        let dir = dir_with_good_neighbours();
        dir.template("bad.tmpl", body);
        bad_resource(
            &dir,
            &format!(
                "[template]\nsrc = \"bad.tmpl\"\ndest = \"@OUT@/bad.conf\"\noutput_format = \"{format}\"\n"
            ),
        );
        dir.write("out/bad.conf", "old\n");
        let out = run_expecting_failure(&dir);
        out.assert_stderr_has(&[&format!("not valid {format}"), "m-bad.toml"]);
        assert_eq!(dir.read("out/bad.conf"), "old\n", "{format}");
    }
}

#[test]
fn data_file_syntax_error_names_file_and_line() {
    let dir = Dir::new();
    let data = dir.data("ok: 1\nlist: [unclosed\nmore: 2\n");
    dir.simple("app", "{{ getv(key=\"/ok\") }}\n", "");
    let out = dir.onetime().run_fail();
    let prefix = format!("{}:", data.display());
    let at = out
        .stderr
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {prefix} in stderr:{out}"));
    let line: usize = out.stderr[at + prefix.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line number after {prefix}:{out}"));
    assert!((2..=4).contains(&line), "line {line}:{out}");
    assert!(!dir.out("app.conf").exists());
    dir.assert_no_stage_files();
}

#[test]
fn missing_data_file_is_an_error_naming_it() {
    let dir = Dir::new();
    dir.simple("app", "x\n", "");
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&[&dir.path("data.yaml").display().to_string()]);
}

#[test]
fn several_bad_resources_are_all_reported() {
    let dir = dir_with_good_neighbours();
    dir.resource(
        "m-bad1",
        "[template]\nsrc = \"x.tmpl\"\ndest = \"@OUT@/x\"\n",
    );
    dir.resource(
        "m-bad2",
        "[template]\nsrc = \"a-good.tmpl\"\ndest = \"@OUT@/y\"\nnope = 1\n",
    );
    let out = run_expecting_failure(&dir);
    out.assert_stderr_has(&["m-bad1.toml:2", "m-bad2.toml:4"]);
}

#[test]
fn unknown_backend_and_missing_file_flag_are_fatal_errors() {
    let dir = Dir::new();
    dir.simple("app", "x\n", "");
    dir.command()
        .args(["--onetime", "--backend", "nosuch"])
        .run_fail()
        .assert_stderr_has(&["sidekick: error:", "nosuch"]);
    dir.command()
        .args(["--onetime", "--backend", "file"])
        .run_fail()
        .assert_stderr_has(&["sidekick: error:", "--file"]);
}

#[test]
fn include_outside_the_templates_directory_is_refused() {
    let dir = dir_with_good_neighbours();
    let tmpl = dir.template("bad.tmpl", "line one\n{% include \"../data.yaml\" %}\n");
    bad_resource(
        &dir,
        "[template]\nsrc = \"bad.tmpl\"\ndest = \"@OUT@/bad.conf\"\n",
    );
    let out = run_expecting_failure(&dir);
    out.assert_stderr_has(&[
        &format!("{}:2:", tmpl.display()),
        "outside the templates directory",
    ]);
    assert!(!dir.out("bad.conf").exists());
}

#[test]
fn non_toml_files_in_conf_d_are_ignored() {
    let dir = dir_with_good_neighbours();
    dir.write("conf.d/README.md", "not a resource = [\n");
    dir.write("conf.d/app.toml.bak", "[template]\nbroken");
    let out = dir.onetime().run();
    assert_eq!(dir.read("out/a-good.conf"), "a value\n", "{out}");
}
