//! End to end with `--backend etcdv3`: the real sidekick binary against a real
//! etcd started for each test (the launcher is `sidekick_testkit::etcd`,
//! shared with the etcd crate's tests). Under `CI=true` a missing etcd fails.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::harness::Dir;
use sidekick_testkit::etcd::Etcd;

/// Two resources under prefix `/app`: `app` reads `/db`, `web` reads `/web`.
fn two_resources() -> Dir {
    let dir = Dir::new();
    dir.template(
        "app.tmpl",
        "host={{ getv(key=\"/db/host\") }}\nport={{ getv(key=\"/db/port\", default=\"5432\") }}\n",
    );
    dir.resource(
        "app",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"@OUT@/app.conf\"\nprefix = \"/app\"\nkeys = [\"/db\"]\n",
    );
    dir.template(
        "web.tmpl",
        "{% for s in getvs(pattern=\"/web/upstreams/*\") %}server {{ s }}\n{% endfor %}",
    );
    dir.resource(
        "web",
        "[template]\nsrc = \"web.tmpl\"\ndest = \"@OUT@/web.conf\"\nprefix = \"/app\"\nkeys = [\"/web\"]\n",
    );
    dir
}

/// Identity of a file's current version: a rewrite renames a new file over it.
fn version(path: &Path) -> (u64, i64, i64) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}

#[test]
fn onetime_then_watch_rerenders_only_the_resource_whose_keys_changed() {
    let Some(etcd) = Etcd::start() else { return };
    etcd.put("/app/db/host", "db1");
    etcd.put("/app/web/upstreams/a", "10.0.0.1:80");
    etcd.put("/other/x", "ignored");
    let dir = two_resources();
    let node = etcd.url();

    dir.command()
        .args(["--backend", "etcdv3", "--node", &node, "--onetime"])
        .run();
    assert_eq!(dir.read("out/app.conf"), "host=db1\nport=5432\n");
    assert_eq!(dir.read("out/web.conf"), "server 10.0.0.1:80\n");

    etcd.put("/app/db/host", "db2");
    let mut p = dir
        .command()
        .args(["--backend", "etcdv3", "--node", &node, "--watch"])
        .spawn();
    p.wait_for_file(&dir.out("app.conf"), "host=db2\nport=5432\n");
    let web = version(&dir.out("web.conf"));

    // A put under /app/db re-renders app only.
    etcd.put("/app/db/port", "6432");
    p.wait_for_file(&dir.out("app.conf"), "host=db2\nport=6432\n");
    assert_eq!(version(&dir.out("web.conf")), web, "web.conf was rewritten");
    assert_eq!(dir.read("out/web.conf"), "server 10.0.0.1:80\n");

    // Create and delete under /app/web re-render web only.
    let app = version(&dir.out("app.conf"));
    etcd.put("/app/web/upstreams/b", "10.0.0.2:80");
    p.wait_for_file(
        &dir.out("web.conf"),
        "server 10.0.0.1:80\nserver 10.0.0.2:80\n",
    );
    etcd.delete("/app/web/upstreams/a");
    p.wait_for_file(&dir.out("web.conf"), "server 10.0.0.2:80\n");
    // A key outside every resource changes nothing.
    etcd.put("/other/x", "still ignored");
    etcd.put("/app/web/upstreams/c", "10.0.0.3:80");
    p.wait_for_file(
        &dir.out("web.conf"),
        "server 10.0.0.2:80\nserver 10.0.0.3:80\n",
    );
    assert_eq!(version(&dir.out("app.conf")), app, "app.conf was rewritten");

    p.stop();
    dir.assert_no_stage_files();
}

#[test]
fn etcd_restart_keeps_the_files_and_catches_up() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    etcd.put("/app/db/host", "db1");
    etcd.put("/app/web/upstreams/a", "10.0.0.1:80");
    let dir = two_resources();
    let mut p = dir
        .command()
        .args(["--backend", "etcdv3", "--node", &etcd.url(), "--watch"])
        .spawn();
    p.wait_for_file(&dir.out("app.conf"), "host=db1\nport=5432\n");
    p.wait_for_file(&dir.out("web.conf"), "server 10.0.0.1:80\n");
    let mark = p.stderr_mark();

    etcd.kill();
    p.wait_stderr_after(mark, "etcd watch interrupted", 1);
    assert_eq!(dir.read("out/app.conf"), "host=db1\nport=5432\n");

    // Changes made right after the restart, while sidekick is still backing off.
    etcd.restart();
    etcd.put("/app/db/host", "db2");
    etcd.delete("/app/web/upstreams/a");
    etcd.put("/app/web/upstreams/b", "10.0.0.2:80");
    p.wait_for_file(&dir.out("app.conf"), "host=db2\nport=5432\n");
    p.wait_for_file(&dir.out("web.conf"), "server 10.0.0.2:80\n");
    let log = p.stderr.text()[mark..].to_string();
    assert_eq!(
        log.matches("etcd watch interrupted").count(),
        1,
        "the outage is logged once, not per retry:\n{log}"
    );
    assert!(log.contains(&etcd.url()), "logs name the endpoint:\n{log}");
    p.stop();
}

#[test]
fn onetime_with_etcd_down_fails_naming_the_endpoint() {
    // Nothing listens on this port: no etcd needed.
    let node = format!("http://127.0.0.1:{}", sidekick_testkit::net::free_port());
    let dir = two_resources();
    let out = dir
        .command()
        .args(["--backend", "etcdv3", "--node", &node, "--onetime"])
        .run_fail();
    out.assert_stderr_has(&[&node, "etcdv3", "Connection refused"]);
    assert!(!dir.out("app.conf").exists());
}

#[test]
fn password_auth_and_a_wrong_password() {
    let Some(etcd) = Etcd::start() else { return };
    etcd.put("/app/db/host", "secured");
    etcd.enable_auth("rootpw");
    let dir = two_resources();
    let node = etcd.url();

    let out = dir
        .command()
        .args(["--backend", "etcdv3", "--node", &node, "--onetime"])
        .args(["--username", "root", "--log-level", "debug"])
        .env("SIDEKICK_ETCD_PASSWORD", "not-the-password")
        .run_fail();
    out.assert_stderr_has(&["authentication failed for user root", &node]);
    assert!(
        !out.stderr.contains("not-the-password") && !out.stdout.contains("not-the-password"),
        "the password leaked:{out}"
    );

    // The right password, from the environment.
    dir.command()
        .args(["--backend", "etcdv3", "--node", &node, "--onetime"])
        .args(["--username", "root"])
        .env("SIDEKICK_ETCD_PASSWORD", "rootpw")
        .run();
    assert_eq!(dir.read("out/app.conf"), "host=secured\nport=5432\n");
}
