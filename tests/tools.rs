//! Tools for people: `sidekick check` (every resource and template parsed,
//! rendered to memory with `--data`, file:line errors, nothing written or
//! run), `sidekick render RESOURCE` (exactly the bytes `--onetime` writes, on
//! stdout), `sidekick completions SHELL` and `sidekick man`.

use crate::harness::{Dir, Output};

/// A confdir with one good resource per engine, reading `/k`, and the data.
fn good_dir() -> Dir {
    let dir = Dir::new();
    dir.data("k: value\nlist:\n  - a\n  - b\n");
    dir.simple(
        "tera",
        "t {{ getv(key=\"/k\") }}\n{% for v in getvs(pattern=\"/list/*\") %}{{ v }},{% endfor %}",
        "",
    );
    dir.simple(
        "go",
        "g {{ getv \"/k\" }}\n{{ range getvs \"/list/*\" }}{{ . }};{{ end }}\n",
        "engine = \"go\"",
    );
    dir
}

fn check(dir: &Dir, args: &[&str]) -> Output {
    let mut cmd = dir.command();
    cmd.arg("check").args(args);
    cmd.output()
}

fn render(dir: &Dir, args: &[&str]) -> Output {
    let mut cmd = dir.command();
    cmd.arg("render").args(args);
    cmd.output()
}

/// The data file's path, as `--data` takes it.
fn data(dir: &Dir) -> String {
    dir.path("data.yaml").display().to_string()
}

#[test]
fn check_passes_a_good_confdir_of_tera_and_go_templates_and_writes_nothing() {
    let dir = good_dir();
    // A command a run would start: check must never run it.
    dir.simple(
        "with-cmds",
        "{{ getv(key=\"/k\") }}\n",
        "check_cmd = \"touch @OUT@/check-ran\"\nreload_cmd = \"touch @OUT@/reload-ran\"",
    );
    let out = check(&dir, &[]);
    out.assert_success().assert_stdout_has(&[
        "ok     go.toml: go -> ",
        "ok     tera.toml: tera -> ",
        "ok     with-cmds.toml: tera -> ",
        "3 resources: 3 ok, 0 failed; parsed, not rendered",
    ]);
    let data = data(&dir);
    let out = check(&dir, &["--data", &data]);
    out.assert_success().assert_stdout_has(&[
        &format!(
            "ok     go.toml: go -> {}, 13 bytes",
            dir.out("go.conf").display()
        ),
        "ok     tera.toml: tera -> ",
        "3 resources: 3 ok, 0 failed; parsed and rendered",
    ]);
    let written: Vec<_> = std::fs::read_dir(dir.path("out")).unwrap().collect();
    assert!(written.is_empty(), "check wrote {written:?}{out}");
    dir.assert_no_stage_files();
}

#[test]
fn check_names_file_and_line_of_a_broken_resource_and_of_broken_templates() {
    let dir = good_dir();
    dir.template("x.tmpl", "x\n");
    let toml = dir.resource(
        "bad-toml",
        "[template]\nsrc = \"x.tmpl\"\ndest = \"@OUT@/x.conf\"\nkeys = [\"/\"]\nbogus_field = 1\n",
    );
    dir.simple("bad-tera", "fine\n{{ getv(key=\"/k\") \n", "");
    dir.simple("bad-go", "fine\n{{ end }}\n", "engine = \"go\"");
    let out = check(&dir, &[]);
    out.assert_failure().assert_stdout_has(&[
        &format!("error  bad-toml.toml: {}:5:", toml.display()),
        "bogus_field",
        &format!("{}:2:", dir.path("templates/bad-tera.tmpl").display()),
        &format!("{}:2:", dir.path("templates/bad-go.tmpl").display()),
        "error  bad-go.toml: ",
        "error  bad-tera.toml: ",
        "ok     go.toml",
        "ok     tera.toml",
        "5 resources: 2 ok, 3 failed",
    ]);
    assert_eq!(out.code(), Some(1), "{out}");
}

#[test]
fn check_with_data_catches_render_errors_with_their_file_and_line() {
    let dir = good_dir();
    dir.simple("miss-tera", "a\n{{ getv(key=\"/missing/key\") }}\n", "");
    dir.simple(
        "miss-go",
        "a\n{{ getv \"/missing/key\" }}\n",
        "engine = \"go\"",
    );
    dir.simple(
        "too-big",
        "{% for i in range(end=100) %}0123456789{% endfor %}",
        "max_output = 64",
    );
    dir.simple(
        "not-json",
        "{ \"k\": {{ getv(key=\"/k\") }} }",
        "output_format = \"json\"",
    );
    // Parsing alone finds nothing wrong.
    check(&dir, &[]).assert_success();
    let data = data(&dir);
    let out = check(&dir, &["--data", &data]);
    out.assert_failure().assert_stdout_has(&[
        "error  miss-tera.toml: ",
        &format!("{}:2:", dir.path("templates/miss-tera.tmpl").display()),
        "error  miss-go.toml: ",
        &format!("{}:2:", dir.path("templates/miss-go.tmpl").display()),
        "/missing/key",
        "error  too-big.toml: ",
        "max_output (64 bytes)",
        "error  not-json.toml: rendered output is not valid json",
        "ok     go.toml",
        "ok     tera.toml",
        "6 resources: 2 ok, 4 failed; parsed and rendered",
    ]);
    let written: Vec<_> = std::fs::read_dir(dir.path("out")).unwrap().collect();
    assert!(written.is_empty(), "check wrote {written:?}{out}");
}

#[test]
fn check_reports_a_data_file_that_does_not_parse() {
    let dir = good_dir();
    dir.data("k: [unclosed\n");
    let data = data(&dir);
    check(&dir, &["--data", &data])
        .assert_failure()
        .assert_stdout_has(&[
            "error  data: ",
            &data,
            "parsed; the data did not load, so none rendered",
        ]);
}

#[test]
fn check_loads_resources_as_exec_does_with_exec() {
    let dir = good_dir();
    dir.simple("child", "x\n", "reload_signal = \"SIGHUP\"");
    check(&dir, &[])
        .assert_failure()
        .assert_stdout_has(&["error  child.toml: ", "reload_signal"]);
    check(&dir, &["--exec"])
        .assert_success()
        .assert_stdout_has(&["ok     child.toml"]);
}

#[test]
fn check_of_an_empty_conf_d_fails() {
    let dir = Dir::new();
    check(&dir, &[])
        .assert_failure()
        .assert_stderr_has(&["no template resources"]);
}

#[test]
fn render_prints_exactly_what_onetime_writes() {
    let dir = good_dir();
    let data = data(&dir);
    dir.onetime().run();
    for name in ["tera", "go"] {
        let written = dir.read(format!("out/{name}.conf"));
        let toml = dir
            .path(format!("conf.d/{name}.toml"))
            .display()
            .to_string();
        let with_ext = format!("{name}.toml");
        for resource in [name, with_ext.as_str(), toml.as_str()] {
            let out = render(&dir, &[resource, "--data", &data]);
            out.assert_success();
            assert_eq!(out.stdout, written, "render {resource}{out}");
        }
        // From the backend the flags name, as --onetime reads it.
        let out = render(&dir, &[name, "--backend", "file", "--file", &data]);
        out.assert_success();
        assert_eq!(out.stdout, written, "{out}");
    }
}

#[test]
fn render_renders_one_resource_even_when_another_is_broken() {
    let dir = good_dir();
    dir.simple("broken", "{{ nope( }}\n", "");
    let data = data(&dir);
    let out = render(&dir, &["tera", "--data", &data]);
    out.assert_success();
    assert_eq!(out.stdout, "t value\na,b,", "{out}");
    assert!(!out.stderr.contains("broken"), "{out}");
}

#[test]
fn render_of_an_unknown_resource_names_the_known_ones() {
    let dir = good_dir();
    let data = data(&dir);
    let out = render(&dir, &["nosuch", "--data", &data]);
    out.assert_failure()
        .assert_stderr_has(&["\"nosuch\"", "go.toml, tera.toml"]);
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn render_failures_name_file_and_line_and_print_nothing() {
    let dir = good_dir();
    let data = data(&dir);
    let broken = dir.simple("broken", "ok\n{{ getv(key=\"/k\") \n", "");
    let _ = broken;
    let out = render(&dir, &["broken", "--data", &data]);
    out.assert_failure().assert_stderr_has(&[&format!(
        "{}:2:",
        dir.path("templates/broken.tmpl").display()
    )]);
    assert_eq!(out.stdout, "", "{out}");
    dir.simple(
        "missing",
        "a\n{{ getv \"/missing/key\" }}\n",
        "engine = \"go\"",
    );
    let out = render(&dir, &["missing", "--data", &data]);
    out.assert_failure().assert_stderr_has(&[
        &format!("{}:2:", dir.path("templates/missing.tmpl").display()),
        "/missing/key",
    ]);
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn completions_for_bash_zsh_and_fish_know_the_flags() {
    let dir = Dir::new();
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = dir.command();
        let out = cmd.args(["completions", shell]).output();
        out.assert_success();
        assert!(out.stdout.contains("onetime"), "{shell}: {out}");
        assert!(out.stdout.contains("check"), "{shell}: {out}");
    }
}

#[test]
fn man_pages_are_roff_with_the_flags() {
    let dir = Dir::new();
    let out = dir.command().arg("man").output();
    out.assert_success().assert_stdout_has(&[
        ".TH sidekick 1",
        "\\-\\-onetime",
        "sidekick\\-check(1)",
    ]);
    let out = dir.command().args(["man", "check"]).output();
    out.assert_success().assert_stdout_has(&[
        ".TH sidekick-check 1",
        "\\-\\-data",
        "\\-\\-confdir",
    ]);
    dir.command()
        .args(["man", "nosuch"])
        .output()
        .assert_failure()
        .assert_stderr_has(&["check, render"]);
}

#[test]
fn render_finds_a_resource_by_its_path_under_conf_d_then_by_file_name() {
    let dir = good_dir();
    dir.template("sub.tmpl", "in sub\n");
    for sub in ["a", "b"] {
        dir.write(
            format!("conf.d/{sub}/x.toml"),
            &format!("[template]\nsrc = \"sub.tmpl\"\ndest = \"@OUT@/{sub}.conf\"\nkeys = []\n"),
        );
    }
    dir.write(
        "conf.d/a/tera.toml",
        "[template]\nsrc = \"sub.tmpl\"\ndest = \"@OUT@/a-tera.conf\"\nkeys = []\n",
    );
    let data = data(&dir);
    // A file name in two subdirectories is ambiguous.
    let out = render(&dir, &["x", "--data", &data]);
    out.assert_failure()
        .assert_stderr_has(&["more than one resource", "a/x.toml, b/x.toml"]);
    let out = render(&dir, &["b/x", "--data", &data]);
    out.assert_success();
    assert_eq!(out.stdout, "in sub\n", "{out}");
    // conf.d/tera.toml is the path `tera` names; a/tera.toml only shares its name.
    let out = render(&dir, &["tera", "--data", &data]);
    out.assert_success();
    assert_eq!(out.stdout, "t value\na,b,", "{out}");
    let path = dir.path("conf.d/a/tera.toml").display().to_string();
    let out = render(&dir, &[&path, "--data", &data]);
    out.assert_success();
    assert_eq!(out.stdout, "in sub\n", "{out}");
}
