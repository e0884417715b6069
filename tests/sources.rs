//! End to end: several backends in one process (`src/source.rs`). A template
//! reads a named source (`[backends.NAME]` in sidekick.toml) with
//! `backend="NAME"`; a resource's `[backend]` table replaces the global
//! backend for it, and equal tables share one source. Real etcd, the Vault
//! test server (or a real Vault, see tests/vault.rs), and plain files.

use std::time::Duration;

use serde_json::json;
use sidekick_testkit::etcd::Etcd;
use sidekick_testkit::net::free_port;
use sidekick_testkit::vault::Vault;

use crate::harness::Dir;

/// The acceptance test of issue 16: config from etcd, the password from
/// Vault, in one file that follows changes of both; the password is never in
/// the logs.
#[test]
fn one_resource_renders_from_etcd_and_vault_and_follows_both() {
    let Some(etcd) = Etcd::start() else { return };
    let vault = Vault::start();
    let m = vault.mount("kv", 2);
    etcd.put("/app/db/host", "db1");
    vault.put(&m, 2, "app/db", json!({"password": "pw-first-1"}));

    let dir = Dir::new();
    dir.write(
        "sidekick.toml",
        &format!(
            "backend = \"etcdv3\"\nnodes = [\"{}\"]\n\n[backends.secrets]\nbackend = \"vault\"\nnodes = [\"{}\"]\nkeys = [\"/{m}/app\"]\n",
            etcd.url(),
            vault.url()
        ),
    );
    dir.template(
        "db.tmpl",
        &format!(
            "host={{{{ getv(key=\"/db/host\") }}}}\npassword={{{{ getv(key=\"/{m}/app/db/password\", backend=\"secrets\") }}}}\n"
        ),
    );
    dir.resource(
        "db",
        "[template]\nsrc = \"db.tmpl\"\ndest = \"@OUT@/db.conf\"\nprefix = \"/app\"\nkeys = [\"/db\"]\n",
    );
    // A second resource that reads etcd alone: Vault's changes leave it be.
    dir.simple("plain", "host={{ getv(key=\"/app/db/host\") }}\n", "");

    // The token comes from VAULT_TOKEN, as the vault CLI reads it.
    let mut p = dir
        .command()
        .args(["--watch", "--interval", "1", "--diff"])
        .env("VAULT_TOKEN", vault.root_token())
        .spawn();
    let db = dir.out("db.conf");
    p.wait_for_file(&db, "host=db1\npassword=pw-first-1\n");
    p.wait_for_file(&dir.out("plain.conf"), "host=db1\n");
    let plain = std::fs::metadata(dir.out("plain.conf"))
        .unwrap()
        .modified()
        .unwrap();

    etcd.put("/app/db/host", "db2");
    p.wait_for_file(&db, "host=db2\npassword=pw-first-1\n");
    vault.put(&m, 2, "app/db", json!({"password": "pw-second-2"}));
    p.wait_for_file(&db, "host=db2\npassword=pw-second-2\n");
    p.wait_for_file(&dir.out("plain.conf"), "host=db2\n");
    let after = std::fs::metadata(dir.out("plain.conf"))
        .unwrap()
        .modified()
        .unwrap();
    assert_ne!(plain, after, "plain.conf follows etcd");

    let transcript = p.transcript();
    assert!(
        !transcript.contains("pw-first-1") && !transcript.contains("pw-second-2"),
        "a Vault value reached the logs or the diff:{transcript}"
    );
}

/// Two resources with the same `[backend]` table share one etcd source (one
/// `backend_up` series); a third renders from the global file backend.
#[test]
fn resource_backend_tables_override_the_global_backend_and_equal_ones_share() {
    let Some(etcd) = Etcd::start() else { return };
    etcd.put("/app/x", "from-etcd");
    let dir = Dir::new();
    dir.data("app:\n  x: from-file\n");
    let table = format!(
        "\n[backend]\nbackend = \"etcdv3\"\nnodes = [\"{}\"]\n",
        etcd.url()
    );
    let reordered = format!(
        "\n[backend]\nnodes = [ \"{}\" ]\nbackend = \"etcdv3\"\n",
        etcd.url()
    );
    dir.simple("a", "a={{ getv(key=\"/app/x\") }}\n", &table);
    dir.simple("b", "b={{ getv(key=\"/app/x\") }}\n", &reordered);
    dir.simple("c", "c={{ getv(key=\"/app/x\") }}\n", "");
    let port = free_port();
    let mut p = dir
        .command()
        .args(["--backend", "file", "--watch", "--file"])
        .arg(dir.path("data.yaml"))
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .spawn();
    p.wait_for_file(&dir.out("a.conf"), "a=from-etcd\n");
    p.wait_for_file(&dir.out("b.conf"), "b=from-etcd\n");
    p.wait_for_file(&dir.out("c.conf"), "c=from-file\n");

    etcd.put("/app/x", "etcd-2");
    p.wait_for_file(&dir.out("a.conf"), "a=etcd-2\n");
    p.wait_for_file(&dir.out("b.conf"), "b=etcd-2\n");
    dir.write_by_rename("data.yaml", "app:\n  x: file-2\n");
    p.wait_for_file(&dir.out("c.conf"), "c=file-2\n");

    let metrics = sidekick_testkit::http::request(
        &format!("127.0.0.1:{port}"),
        "GET",
        "/metrics",
        &[],
        b"",
        Duration::from_secs(5),
    )
    .unwrap()
    .text();
    let mut up: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sidekick_backend_up{"))
        .collect();
    up.sort_unstable();
    assert_eq!(
        up,
        [
            "sidekick_backend_up{backend=\"etcdv3:a.toml\"} 1",
            "sidekick_backend_up{backend=\"file\"} 1"
        ],
        "{metrics}"
    );
}

/// Every resource has its own backend: no global `--file` is needed.
#[test]
fn resources_with_their_own_backends_need_no_global_one() {
    let dir = Dir::new();
    dir.write("one.yaml", "x: 1\n");
    dir.simple(
        "one",
        "x={{ getv(key=\"/x\") }}\n",
        "\n[backend]\nbackend = \"file\"\nfile = [\"one.yaml\"]\n",
    );
    dir.command().arg("--onetime").run();
    assert_eq!(dir.read("out/one.conf"), "x=1\n");

    // A resource that reads the global backend brings its error back.
    dir.simple("two", "x={{ getv(key=\"/x\") }}\n", "");
    dir.command()
        .arg("--onetime")
        .run_fail()
        .assert_stderr_has(&["file: needs at least one --file"]);
}

/// A named file source read from Go and Tera; saving it re-renders only the
/// resource that reads it.
#[test]
fn a_named_file_source_is_watched_and_read_from_both_engines() {
    let dir = Dir::new();
    dir.data("app:\n  name: web\n");
    dir.write("extra.yaml", "db:\n  password: hunter2\n");
    dir.write(
        "sidekick.toml",
        "[backends.extra]\nbackend = \"file\"\nfile = [\"extra.yaml\"]\nkeys = [\"/db\"]\n",
    );
    dir.simple(
        "tera",
        "{{ getv(key=\"/app/name\") }}:{{ getv(key=\"/db/password\", backend=\"extra\") }}\n",
        "",
    );
    dir.simple(
        "go",
        "{{getv \"/app/name\"}}:{{backend \"extra\" \"getv\" \"/db/password\"}}\n",
        "engine = \"go\"",
    );
    dir.simple("alone", "{{ getv(key=\"/app/name\") }}\n", "");
    let mut p = dir
        .command()
        .args(["--backend", "file", "--watch", "--file"])
        .arg(dir.path("data.yaml"))
        .spawn();
    p.wait_for_file(&dir.out("tera.conf"), "web:hunter2\n");
    p.wait_for_file(&dir.out("go.conf"), "web:hunter2\n");
    p.wait_for_file(&dir.out("alone.conf"), "web\n");
    let alone = std::fs::metadata(dir.out("alone.conf"))
        .unwrap()
        .modified()
        .unwrap();

    dir.write_by_rename("extra.yaml", "db:\n  password: swordfish\n");
    p.wait_for_file(&dir.out("tera.conf"), "web:swordfish\n");
    p.wait_for_file(&dir.out("go.conf"), "web:swordfish\n");
    let still = std::fs::metadata(dir.out("alone.conf"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(alone, still, "alone.conf does not read extra");

    // `sidekick render` reads the named source from its own backend too.
    let out = dir
        .command()
        .args(["render", "go", "--backend", "file", "--file"])
        .arg(dir.path("data.yaml"))
        .run();
    assert_eq!(out.stdout, "web:swordfish\n");
}

/// Mistakes name their file and line: an undeclared backend in a template,
/// a misspelt field in `[backends.NAME]` and in a resource's `[backend]`.
#[test]
fn named_source_mistakes_name_file_and_line() {
    let dir = Dir::new();
    dir.data("x: 1\n");
    dir.simple("r", "{{ getv(key=\"/x\", backend=\"secrets\") }}\n", "");
    dir.onetime().run_fail().assert_stderr_has(&[
        "conf.d/r.toml",
        "r.tmpl",
        "reads backend \"secrets\", which the settings file does not declare",
        "[backends.secrets]",
    ]);

    dir.write(
        "sidekick.toml",
        "[backends.secrets]\nbackend = \"file\"\n\nfiles = [\"x.yaml\"]\nnodez = [\"x\"]\n",
    );
    dir.onetime()
        .run_fail()
        .assert_stderr_has(&["sidekick.toml: line 5: [backends.secrets]: unknown field `nodez`"]);

    std::fs::remove_file(dir.path("sidekick.toml")).unwrap();
    dir.simple(
        "r",
        "{{ getv(key=\"/x\") }}\n",
        "\n[backend]\nbackend = \"etcdv3\"\nnodse = [\"http://127.0.0.1:1\"]\n",
    );
    dir.onetime()
        .run_fail()
        .assert_stderr_has(&["conf.d/r.toml:8: [backend]: unknown field `nodse`"]);
}

/// `--onetime` with a named source's server down fails, naming where it
/// looked; nothing is written.
#[test]
fn onetime_with_a_named_source_down_names_its_endpoint() {
    let dir = Dir::new();
    dir.data("x: 1\n");
    let port = free_port();
    dir.write(
        "sidekick.toml",
        &format!(
            "[backends.secrets]\nbackend = \"vault\"\nnodes = [\"http://127.0.0.1:{port}\"]\nvault_token = \"t\"\nvault_mount = [\"kv\"]\nkeys = [\"/kv/app\"]\n"
        ),
    );
    dir.simple(
        "r",
        "{{ getv(key=\"/x\") }} {{ getv(key=\"/kv/app/p\", backend=\"secrets\") }}\n",
        "",
    );
    dir.onetime()
        .run_fail()
        .assert_stderr_has(&[&format!("127.0.0.1:{port}")]);
    assert!(dir.try_read("out/r.conf").is_none());
}
