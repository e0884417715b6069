//! Where keys and settings come from: prefix joining and stripping (global
//! `--prefix` + resource `prefix`), the file backend's merge of several data
//! files (and the conflict error naming both), other data formats and
//! directories, the env backend, and the settings file with flag-over-env-
//! over-file precedence.

use crate::harness::Dir;

const PREFIX_TEMPLATE: &str = "host={{ getv(key=\"/db/host\") }}\n\
{% for kv in gets(pattern=\"/db/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}\
ls={{ ls(path=\"/\") | join(sep=\",\") }}\n\
{% set kv = get(key=\"/db/port\") %}get={{ kv.key }}\n";

const PREFIX_EXPECTED: &str =
    "host=db.prod\n/db/host=db.prod\n/db/port=5432\nls=db\nget=/db/port\n";

fn prefix_dir(resource_prefix: &str) -> Dir {
    let dir = Dir::new();
    dir.data(
        "production:\n  myapp:\n    db:\n      host: db.prod\n      port: 5432\n  other:\n    db:\n      host: wrong\nmyapp:\n  db:\n    host: wrong too\n",
    );
    dir.template("app.tmpl", PREFIX_TEMPLATE);
    dir.resource(
        "app",
        &format!(
            "[template]\nsrc = \"app.tmpl\"\ndest = \"@OUT@/app.conf\"\nprefix = \"{resource_prefix}\"\nkeys = [\"/db\"]\n"
        ),
    );
    dir
}

#[test]
fn global_and_resource_prefix_join_and_are_stripped() {
    for (global, resource) in [
        ("/production", "myapp"),
        ("/production", "/myapp"),
        ("production/", "/myapp/"),
        ("/production/myapp", ""),
    ] {
        let dir = prefix_dir(resource);
        let out = dir.onetime().args(["--prefix", global]).run();
        assert_eq!(
            dir.try_read("out/app.conf").as_deref(),
            Some(PREFIX_EXPECTED),
            "--prefix {global:?} + prefix {resource:?}{out}"
        );
    }
}

#[test]
fn resource_prefix_alone() {
    let dir = prefix_dir("/production/myapp");
    dir.onetime().run();
    assert_eq!(dir.read("out/app.conf"), PREFIX_EXPECTED);
}

#[test]
fn missing_key_under_a_prefix_says_where_it_looked() {
    let dir = Dir::new();
    dir.data("production:\n  myapp:\n    a: 1\n");
    dir.simple("app", "{{ getv(key=\"/db/host\") }}", "prefix = \"myapp\"");
    dir.onetime()
        .args(["--prefix", "/production"])
        .run_fail()
        .assert_stderr_has(&["/db/host", "/production/myapp/db/host"]);
}

#[test]
fn two_data_files_merge() {
    let dir = Dir::new();
    let a = dir.write("a.yaml", "db:\n  host: h\n  port: 5432\n");
    // Same value for /db/host in both files: not a conflict.
    let b = dir.write("b.yaml", "db:\n  host: h\n  user: admin\ncache: [c1, c2]\n");
    dir.simple(
        "app",
        "{% for kv in gets(pattern=\"/*/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
        "",
    );
    dir.command()
        .args(["--onetime", "--file"])
        .arg(&a)
        .arg("--file")
        .arg(&b)
        .run();
    assert_eq!(
        dir.read("out/app.conf"),
        "/cache/0=c1\n/cache/1=c2\n/db/host=h\n/db/port=5432\n/db/user=admin\n"
    );

    // The same, with the comma-separated form of --file.
    std::fs::remove_file(dir.out("app.conf")).unwrap();
    dir.command()
        .args(["--onetime", "--file"])
        .arg(format!("{},{}", a.display(), b.display()))
        .run();
    assert!(dir.read("out/app.conf").contains("/db/user=admin"));
}

#[test]
fn conflicting_data_files_name_both_files_and_the_key() {
    let dir = Dir::new();
    let a = dir.write("a.yaml", "db:\n  host: x\n");
    let b = dir.write("b.yaml", "db:\n  host: y\n");
    dir.simple("app", "{{ getv(key=\"/db/host\") }}", "");
    let out = dir
        .command()
        .args(["--onetime", "--file"])
        .arg(&a)
        .arg("--file")
        .arg(&b)
        .run_fail();
    out.assert_stderr_has(&[
        &a.display().to_string(),
        &b.display().to_string(),
        "/db/host",
    ]);
    assert!(!dir.out("app.conf").exists());
}

#[test]
fn json_toml_and_directory_data() {
    let dir = Dir::new();
    dir.write("data.d/a.json", r#"{"db": {"host": "h", "ports": [1, 2]}}"#);
    dir.write("data.d/b.toml", "[cache]\nsize = 3\nenabled = true\n");
    // Not a lone `n`: that is YAML 1.1's false, as confd reads it.
    dir.write("data.d/c.yml", "app:\n  name: nina\n");
    dir.write("data.d/notes.txt", "not data");
    dir.simple(
        "app",
        "{{ getv(key=\"/db/host\") }} {{ getvs(pattern=\"/db/ports/*\") | join(sep=\",\") }} {{ getv(key=\"/cache/size\") }} {{ getv(key=\"/cache/enabled\") }} {{ getv(key=\"/app/name\") }}",
        "",
    );
    dir.command()
        .args(["--onetime", "--file"])
        .arg(dir.path("data.d"))
        .run();
    assert_eq!(dir.read("out/app.conf"), "h 1,2 3 true nina");
}

#[test]
fn env_backend_maps_variables_to_keys() {
    let dir = Dir::new();
    dir.template(
        "app.tmpl",
        "host={{ getv(key=\"/db/host\") }} port={{ getv(key=\"/db/port\", default=\"5432\") }}\n",
    );
    dir.resource(
        "app",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"@OUT@/app.conf\"\nkeys = [\"/db\"]\n",
    );
    // With a resource prefix, keys are read relative to it.
    dir.template("pre.tmpl", "{{ getv(key=\"/host\") }}\n");
    dir.resource(
        "pre",
        "[template]\nsrc = \"pre.tmpl\"\ndest = \"@OUT@/pre.conf\"\nprefix = \"/db\"\nkeys = [\"/host\"]\n",
    );
    // Only the resource's keys are read: APP_SECRET is not /app/secret here.
    dir.template("other.tmpl", "{{ exists(key=\"/app/secret\") }}\n");
    dir.resource(
        "other",
        "[template]\nsrc = \"other.tmpl\"\ndest = \"@OUT@/other.conf\"\nkeys = [\"/db\"]\n",
    );
    dir.command()
        .args(["--backend", "env", "--onetime"])
        .env("DB_HOST", "x")
        .env("APP_SECRET", "s")
        .env_remove("DB_PORT")
        .run();
    assert_eq!(dir.read("out/app.conf"), "host=x port=5432\n");
    assert_eq!(dir.read("out/pre.conf"), "x\n");
    assert_eq!(dir.read("out/other.conf"), "false\n");
}

#[test]
fn env_backend_missing_variable_names_the_key() {
    let dir = Dir::new();
    dir.simple("app", "{{ getv(key=\"/sidekick_test/absent\") }}", "");
    dir.resource(
        "app",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"@OUT@/app.conf\"\nkeys = [\"/sidekick_test\"]\n",
    );
    dir.command()
        .args(["--backend", "env", "--onetime"])
        .env_remove("SIDEKICK_TEST_ABSENT")
        .run_fail()
        .assert_stderr_has(&["/sidekick_test/absent"]);
}

/// A confdir whose data has a value under each of /file, /env and /flag, and a
/// resource printing `/v` under the global prefix.
fn precedence_dir() -> Dir {
    let dir = Dir::new();
    dir.data("file: {v: from-file}\nenv: {v: from-env}\nflag: {v: from-flag}\n");
    dir.simple("app", "{{ getv(key=\"/v\") }}\n", "");
    dir
}

#[test]
fn settings_file_in_confdir_is_read() {
    let dir = precedence_dir();
    dir.write(
        "sidekick.toml",
        "backend = \"file\"\nfile = [\"@DIR@/data.yaml\"]\nprefix = \"/file\"\nonetime = true\nlog-level = \"warn\"\n",
    );
    let out = dir.command().run();
    assert_eq!(dir.read("out/app.conf"), "from-file\n");
    // log-level = warn: no info lines.
    assert!(!out.stderr.contains("INFO"), "{out}");
}

#[test]
fn flag_wins_over_env_which_wins_over_file() {
    let dir = precedence_dir();
    dir.write(
        "sidekick.toml",
        "file = [\"@DIR@/data.yaml\"]\nprefix = \"/file\"\nonetime = true\n",
    );
    dir.command().env("SIDEKICK_PREFIX", "/env").run();
    assert_eq!(dir.read("out/app.conf"), "from-env\n");

    dir.command()
        .env("SIDEKICK_PREFIX", "/env")
        .args(["--prefix", "/flag"])
        .run();
    assert_eq!(dir.read("out/app.conf"), "from-flag\n");

    dir.command().run();
    assert_eq!(dir.read("out/app.conf"), "from-file\n");

    // Lists too: --file replaces the file's list.
    dir.write("other.yaml", "file: {v: other-data}\n");
    dir.command()
        .arg("--file")
        .arg(dir.path("other.yaml"))
        .run();
    assert_eq!(dir.read("out/app.conf"), "other-data\n");
    dir.command()
        .env("SIDEKICK_FILE", dir.path("other.yaml"))
        .run();
    assert_eq!(dir.read("out/app.conf"), "other-data\n");
}

#[test]
fn explicit_config_file_and_confdir_from_it() {
    let dir = precedence_dir();
    let cfg = dir.write(
        "elsewhere/settings.toml",
        "confdir = \"@DIR@\"\nfile = [\"@DIR@/data.yaml\"]\nprefix = \"/flag\"\nonetime = true\n",
    );
    // No --confdir: it comes from the file.
    crate::harness::TestCommand::new(dir.root())
        .arg("--config-file")
        .arg(&cfg)
        .run();
    assert_eq!(dir.read("out/app.conf"), "from-flag\n");

    // SIDEKICK_CONFIG_FILE does the same.
    std::fs::remove_file(dir.out("app.conf")).unwrap();
    crate::harness::TestCommand::new(dir.root())
        .env("SIDEKICK_CONFIG_FILE", &cfg)
        .run();
    assert_eq!(dir.read("out/app.conf"), "from-flag\n");
}

#[test]
fn bad_settings_file_names_file_line_and_key() {
    let dir = precedence_dir();
    let cfg = dir.write("sidekick.toml", "onetime = true\nbogus_setting = 1\n");
    dir.command().run_fail().assert_stderr_has(&[
        &cfg.display().to_string(),
        "line 2",
        "bogus_setting",
    ]);

    let missing = dir.path("missing.toml");
    dir.command()
        .arg("--config-file")
        .arg(&missing)
        .arg("--onetime")
        .run_fail()
        .assert_stderr_has(&[&missing.display().to_string()]);
}

#[test]
fn relative_paths_resolve_from_the_working_directory() {
    let dir = Dir::new();
    dir.data("v: rel\n");
    dir.template("app.tmpl", "{{ getv(key=\"/v\") }}");
    dir.resource(
        "app",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nkeys = [\"/\"]\n",
    );
    crate::harness::TestCommand::new(dir.root())
        .args(["--onetime", "--confdir", ".", "--file", "data.yaml"])
        .run();
    assert_eq!(dir.read("out/app.conf"), "rel");
}

/// Issue 3: "flags win, then `SIDEKICK_*` environment variables, then the
/// file" — for on/off settings too: `SIDEKICK_NOOP=false` must beat
/// `noop = true` in the settings file.
#[test]
fn env_false_wins_over_true_in_the_settings_file() {
    let dir = precedence_dir();
    dir.write(
        "sidekick.toml",
        "file = [\"@DIR@/data.yaml\"]\nprefix = \"/file\"\nonetime = true\nnoop = true\n",
    );
    // noop: nothing written, exit 2 as a file would change.
    let out = dir.command().output();
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(!dir.out("app.conf").exists(), "noop = true from the file");
    let out = dir.command().env("SIDEKICK_NOOP", "false").run();
    assert_eq!(
        dir.try_read("out/app.conf").as_deref(),
        Some("from-file\n"),
        "SIDEKICK_NOOP=false should override noop = true from sidekick.toml{out}"
    );
}

/// Issue 15: `--version` names the git commit it was built from.
#[test]
fn version_names_the_commit() {
    let out = std::process::Command::new(crate::harness::bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.trim();
    let commit = text
        .strip_prefix(concat!("sidekick ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text}"
    );
}
