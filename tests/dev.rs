//! `sidekick dev`: watches the data files, templates/ and conf.d/ together;
//! every save re-renders at once and prints a diff and a `✔` line; a template
//! error prints `✘` with the file and line and keeps the last good output; a
//! new conf.d file renders at once.

use crate::harness::{Dir, Running};

/// A confdir with resource `app` (template `app.tmpl` including
/// `partials/p.tmpl`), started in dev mode and waited for its first render.
fn start() -> (Dir, Running) {
    let dir = Dir::new();
    dir.data("greeting: hello\nname: world\n");
    dir.template("partials/p.tmpl", "partial");
    dir.simple(
        "app",
        "{{ getv(key=\"/greeting\") }} {{ getv(key=\"/name\") }}\n{% include \"partials/p.tmpl\" %}\n",
        "",
    );
    let mut p = dir
        .command()
        .arg("dev")
        .arg("--file")
        .arg(dir.path("data.yaml"))
        .spawn();
    p.wait_for_file(&dir.out("app.conf"), "hello world\npartial\n");
    (dir, p)
}

#[test]
fn first_render_prints_a_diff_and_a_check_mark() {
    let (dir, mut p) = start();
    let dest = dir.out("app.conf").display().to_string();
    let out = p.wait_stdout_after(0, &format!("✔ app.toml: {dest} updated"));
    assert!(
        out.contains(&format!("+++ {dest} (new)")),
        "{}",
        p.transcript()
    );
    assert!(out.contains("+hello world"), "{}", p.transcript());
    assert!(
        !out.contains('\x1b'),
        "no colour on a pipe{}",
        p.transcript()
    );
}

#[test]
fn data_save_re_renders() {
    let (dir, mut p) = start();
    let mark = p.stdout_mark();
    dir.data("greeting: hi\nname: world\n");
    p.wait_for_file(&dir.out("app.conf"), "hi world\npartial\n");
    let out = p.wait_stdout_after(mark, "✔ app.toml");
    assert!(
        out.contains("-hello world") && out.contains("+hi world"),
        "{out}"
    );

    // Saved the way vim does: write a temp file, rename it over the original.
    dir.write_by_rename("data.yaml", "greeting: hey\nname: world\n");
    p.wait_for_file(&dir.out("app.conf"), "hey world\npartial\n");
    // And again, to show the watch survived the rename.
    dir.write_by_rename("data.yaml", "greeting: hey\nname: you\n");
    p.wait_for_file(&dir.out("app.conf"), "hey you\npartial\n");
    drop(p);
    dir.assert_no_stage_files();
}

#[test]
fn template_save_re_renders() {
    let (dir, mut p) = start();
    dir.template("app.tmpl", "{{ getv(key=\"/greeting\") | upper }}!\n");
    p.wait_for_file(&dir.out("app.conf"), "HELLO!\n");
    // Editor-style save of a template.
    dir.write_by_rename(
        "templates/app.tmpl",
        "{{ getv(key=\"/name\") }}\n{% include \"partials/p.tmpl\" %}\n",
    );
    p.wait_for_file(&dir.out("app.conf"), "world\npartial\n");
    // A save of an included partial re-renders too.
    dir.template("partials/p.tmpl", "partial v2");
    p.wait_for_file(&dir.out("app.conf"), "world\npartial v2\n");
}

#[test]
fn template_typo_shows_error_and_keeps_last_good_output() {
    let (dir, mut p) = start();
    let mark = p.stdout_mark();
    let tmpl = dir.template("app.tmpl", "fine line\n{{ getv(key=\"/greeting\") \n");
    let out = p.wait_stdout_after(mark, "✘");
    p.wait_stdout_after(mark, &format!("{}:2", tmpl.display()));
    assert!(out.contains("app.tmpl"), "{out}");
    assert_eq!(
        dir.read("out/app.conf"),
        "hello world\npartial\n",
        "last good output kept"
    );

    // A typo in the included partial is reported with that file's name.
    dir.template("app.tmpl", "{{ getv(key=\"/greeting\") }} {{ getv(key=\"/name\") }}\n{% include \"partials/p.tmpl\" %}\n");
    p.wait_for_file(&dir.out("app.conf"), "hello world\npartial\n");
    let mark = p.stdout_mark();
    let partial = dir.template("partials/p.tmpl", "ok\n{% if %}");
    p.wait_stdout_after(mark, &format!("{}:2", partial.display()));
    assert_eq!(dir.read("out/app.conf"), "hello world\npartial\n");

    // The data changes while the template is broken; the fix renders the new data.
    dir.data("greeting: bye\nname: world\n");
    dir.template("partials/p.tmpl", "fixed");
    p.wait_for_file(&dir.out("app.conf"), "bye world\nfixed\n");
    drop(p);
    dir.assert_no_stage_files();
}

#[test]
fn render_error_shows_and_keeps_last_good_output() {
    let (dir, mut p) = start();
    let mark = p.stdout_mark();
    dir.template("app.tmpl", "{{ getv(key=\"/no/such/key\") }}\n");
    let out = p.wait_stdout_after(mark, "/no/such/key");
    assert!(out.contains('✘'), "{out}");
    assert_eq!(dir.read("out/app.conf"), "hello world\npartial\n");
    // The data gains the key: the next data save renders.
    dir.data("greeting: hello\nname: world\nno: {such: {key: found}}\n");
    p.wait_for_file(&dir.out("app.conf"), "found\n");
}

#[test]
fn new_conf_d_file_renders() {
    let (dir, mut p) = start();
    dir.template("second.tmpl", "second: {{ getv(key=\"/name\") }}\n");
    dir.resource(
        "second",
        "[template]\nsrc = \"second.tmpl\"\ndest = \"@OUT@/second.conf\"\nkeys = [\"/name\"]\n",
    );
    p.wait_for_file(&dir.out("second.conf"), "second: world\n");
    // It follows data saves like the first one.
    dir.data("greeting: hello\nname: there\n");
    p.wait_for_file(&dir.out("second.conf"), "second: there\n");
    p.wait_for_file(&dir.out("app.conf"), "hello there\npartial\n");
}

#[test]
fn bad_conf_d_file_shows_error_and_others_keep_working() {
    let (dir, mut p) = start();
    let mark = p.stdout_mark();
    let bad = dir.resource(
        "bad",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"@OUT@/bad.conf\"\nbogus = 1\n",
    );
    p.wait_stdout_after(mark, &format!("{}:4", bad.display()));
    dir.data("greeting: still\nname: working\n");
    p.wait_for_file(&dir.out("app.conf"), "still working\npartial\n");
    // Fixed: it renders.
    dir.resource(
        "bad",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"@OUT@/bad.conf\"\n",
    );
    p.wait_for_file(&dir.out("bad.conf"), "still working\npartial\n");
}

#[test]
fn stops_cleanly_on_sigterm() {
    let (dir, mut p) = start();
    let status = p.stop();
    assert!(status.success(), "{status}");
    dir.assert_no_stage_files();
}

#[test]
fn data_typo_shows_error_with_file_and_line_and_keeps_output() {
    let (dir, mut p) = start();
    let mark = p.stdout_mark();
    let data = dir.data("greeting: hello\nname: [oops\n");
    let out = p.wait_stdout_after(mark, &format!("{}:", data.display()));
    assert!(out.contains('✘'), "{out}");
    assert_eq!(dir.read("out/app.conf"), "hello world\npartial\n");
    dir.data("greeting: hello\nname: again\n");
    p.wait_for_file(&dir.out("app.conf"), "hello again\npartial\n");
}

#[test]
fn a_template_shared_by_two_resources_re_renders_both() {
    let (dir, mut p) = start();
    dir.resource(
        "copy",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"@OUT@/copy.conf\"\nkeys = [\"/\"]\n",
    );
    p.wait_for_file(&dir.out("copy.conf"), "hello world\npartial\n");
    dir.template("partials/p.tmpl", "shared");
    p.wait_for_file(&dir.out("app.conf"), "hello world\nshared\n");
    p.wait_for_file(&dir.out("copy.conf"), "hello world\nshared\n");
}

/// A template and the data saved together (as vim's `:wa` does): the output
/// shows both changes.
#[test]
fn template_and_data_saved_together() {
    let (dir, mut p) = start();
    // A data save applied first, so that this is not about the first moments.
    dir.data("greeting: hi\nname: world\n");
    p.wait_for_file(&dir.out("app.conf"), "hi world\npartial\n");
    dir.template("app.tmpl", "new template: {{ getv(key=\"/greeting\") }}\n");
    dir.data("greeting: new data\nname: world\n");
    p.wait_for_file(&dir.out("app.conf"), "new template: new data\n");
}

/// The README's dev-mode command on a copy of the nginx example.
#[test]
fn readme_dev_command_on_the_example() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    crate::harness::copy_tree(
        &crate::harness::repo_root().join("examples/nginx"),
        &root.join("examples/nginx"),
        &std::collections::BTreeMap::new(),
    );
    let _ = std::fs::remove_dir_all(root.join("examples/nginx/out"));
    let mut p = crate::harness::TestCommand::new(root)
        .args([
            "dev",
            "--confdir",
            "examples/nginx",
            "--file",
            "examples/nginx/data.yaml",
            "--services-file",
            "examples/nginx/services.yaml",
        ])
        .spawn();
    let nginx = root.join("examples/nginx/out/nginx.conf");
    let upstream = root.join("examples/nginx/out/upstream.conf");
    p.wait_for_file_matching(&nginx, "rendered", |c| {
        c.contains("server_name example.local;")
    });
    p.wait_for_file_matching(&upstream, "rendered", |c| c.contains("10.0.1.2:80"));
    let data = root.join("examples/nginx/data.yaml");
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&data, text.replace("example.local", "example.test")).unwrap();
    p.wait_for_file_matching(&nginx, "the new server_name", |c| {
        c.contains("server_name example.test;")
    });
    let services = root.join("examples/nginx/services.yaml");
    let text = std::fs::read_to_string(&services).unwrap();
    std::fs::write(&services, text.replace("10.0.1.2", "10.0.1.7")).unwrap();
    p.wait_for_file_matching(&upstream, "the new address", |c| c.contains("10.0.1.7:80"));
}
