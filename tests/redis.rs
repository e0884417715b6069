//! End to end with `--backend redis`: the real sidekick binary against a real
//! redis-server started for each test (the launcher is
//! `sidekick_testkit::redis`, shared with the Redis crate's tests). Under
//! `CI=true` a missing redis-server fails.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::harness::Dir;
use sidekick_testkit::redis::{Options, Redis};

/// Two resources under prefix `/app`: `app` reads `/db` (a hash in some
/// tests), `web` reads `/web`.
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
    let Some(redis) = Redis::start() else { return };
    // `/app/db` is a hash: its fields are `/app/db/host`, `/app/db/port`.
    redis.hset("/app/db", "host", "db1");
    redis.set("/app/web/upstreams/a", "10.0.0.1:80");
    redis.set("/other/x", "ignored");
    let dir = two_resources();
    let node = redis.url();

    dir.command()
        .args(["--backend", "redis", "--node", &node, "--onetime"])
        .run();
    assert_eq!(dir.read("out/app.conf"), "host=db1\nport=5432\n");
    assert_eq!(dir.read("out/web.conf"), "server 10.0.0.1:80\n");

    redis.hset("/app/db", "host", "db2");
    let mut p = dir
        .command()
        .args(["--backend", "redis", "--node", &node, "--watch"])
        .spawn();
    p.wait_for_file(&dir.out("app.conf"), "host=db2\nport=5432\n");
    let web = version(&dir.out("web.conf"));

    // A new field of the hash re-renders app only.
    redis.hset("/app/db", "port", "6432");
    p.wait_for_file(&dir.out("app.conf"), "host=db2\nport=6432\n");
    assert_eq!(version(&dir.out("web.conf")), web, "web.conf was rewritten");

    // Create and delete under /app/web re-render web only.
    let app = version(&dir.out("app.conf"));
    redis.set("/app/web/upstreams/b", "10.0.0.2:80");
    p.wait_for_file(
        &dir.out("web.conf"),
        "server 10.0.0.1:80\nserver 10.0.0.2:80\n",
    );
    redis.del("/app/web/upstreams/a");
    p.wait_for_file(&dir.out("web.conf"), "server 10.0.0.2:80\n");
    // A key outside every resource changes nothing.
    redis.set("/other/x", "still ignored");
    redis.set("/app/web/upstreams/c", "10.0.0.3:80");
    p.wait_for_file(
        &dir.out("web.conf"),
        "server 10.0.0.2:80\nserver 10.0.0.3:80\n",
    );
    assert_eq!(version(&dir.out("app.conf")), app, "app.conf was rewritten");
    p.stop();
    dir.assert_no_stage_files();
}

#[test]
fn redis_killed_and_restarted_mid_watch_ends_with_the_right_file() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    redis.set("/app/db/host", "db1");
    redis.set("/app/web/upstreams/a", "10.0.0.1:80");
    let dir = two_resources();
    let mut p = dir
        .command()
        .args(["--backend", "redis", "--node", &redis.url(), "--watch"])
        .spawn();
    p.wait_for_file(&dir.out("app.conf"), "host=db1\nport=5432\n");
    p.wait_for_file(&dir.out("web.conf"), "server 10.0.0.1:80\n");
    let mark = p.stderr_mark();

    redis.kill();
    p.wait_stderr_after(mark, "Redis watch interrupted", 1);
    assert_eq!(dir.read("out/app.conf"), "host=db1\nport=5432\n");

    // Changes made right after the restart, while sidekick is still backing off.
    redis.restart();
    redis.set("/app/db/host", "db2");
    redis.del("/app/web/upstreams/a");
    redis.set("/app/web/upstreams/b", "10.0.0.2:80");
    p.wait_for_file(&dir.out("app.conf"), "host=db2\nport=5432\n");
    p.wait_for_file(&dir.out("web.conf"), "server 10.0.0.2:80\n");
    let log = p.stderr.text()[mark..].to_string();
    assert_eq!(
        log.matches("Redis watch interrupted").count(),
        1,
        "the outage is logged once, not per retry:\n{log}"
    );
    assert!(log.contains(&redis.url()), "logs name the endpoint:\n{log}");
    p.stop();
}

#[test]
fn onetime_with_redis_down_fails_naming_the_endpoint() {
    // Nothing listens on this port: no redis-server needed.
    let node = format!("redis://127.0.0.1:{}", sidekick_testkit::net::free_port());
    let dir = two_resources();
    let out = dir
        .command()
        .args(["--backend", "redis", "--node", &node, "--onetime"])
        .run_fail();
    out.assert_stderr_has(&[&node, "redis", "refused"]);
    assert!(!dir.out("app.conf").exists());
}

#[test]
fn password_auth_database_and_secrets_never_in_logs() {
    let Some(redis) = Redis::start_with(Options {
        password: Some("the-real-pw".into()),
        ..Options::default()
    }) else {
        return;
    };
    redis.cmd_db(2, &["SET", "/app/db/host", "in-db-2"]);
    redis.set("/app/db/host", "in-db-0");
    let dir = two_resources();
    let node = redis.url();

    // No password: a clear refusal.
    let out = dir
        .command()
        .args(["--backend", "redis", "--node", &node, "--onetime"])
        .run_fail();
    out.assert_stderr_has(&["authentication failed", &node, "--password"]);

    // A wrong one: refused, and never shown, even at debug level.
    let out = dir
        .command()
        .args(["--backend", "redis", "--node", &node, "--onetime"])
        .args(["--log-level", "debug"])
        .env("SIDEKICK_REDIS_PASSWORD", "not-the-password")
        .run_fail();
    out.assert_stderr_has(&["authentication failed", &node]);
    assert!(
        !out.stderr.contains("not-the-password") && !out.stdout.contains("not-the-password"),
        "the password leaked:{out}"
    );

    // The right one, with --database.
    let out = dir
        .command()
        .args(["--backend", "redis", "--node", &node, "--onetime"])
        .args(["--password", "the-real-pw", "--database", "2"])
        .args(["--log-level", "debug"])
        .run();
    assert_eq!(dir.read("out/app.conf"), "host=in-db-2\nport=5432\n");
    assert!(
        !out.stderr.contains("the-real-pw") && !out.stdout.contains("the-real-pw"),
        "the password leaked:{out}"
    );
}

#[test]
fn notifications_off_warn_and_poll_or_are_turned_on_by_the_flag() {
    let Some(redis) = Redis::start_with(Options {
        notify: String::new(),
        ..Options::default()
    }) else {
        return;
    };
    redis.set("/app/db/host", "db1");
    let dir = two_resources();
    let node = redis.url();
    let mut p = dir
        .command()
        .args(["--backend", "redis", "--node", &node, "--watch"])
        .args(["--interval", "1"])
        .spawn();
    p.wait_for_file(&dir.out("app.conf"), "host=db1\nport=5432\n");
    p.wait_stderr_after(0, "keyspace notifications are off", 1);
    p.wait_stderr_after(0, "--redis-notify-config", 1);
    redis.set("/app/db/host", "db2");
    p.wait_for_file(&dir.out("app.conf"), "host=db2\nport=5432\n");
    p.stop();

    let mut p = dir
        .command()
        .args(["--backend", "redis", "--node", &node, "--watch"])
        .args(["--redis-notify-config"])
        .spawn();
    p.wait_for_file(&dir.out("app.conf"), "host=db2\nport=5432\n");
    p.wait_stderr_after(0, "turned on keyspace notifications", 1);
    redis.set("/app/db/host", "db3");
    p.wait_for_file(&dir.out("app.conf"), "host=db3\nport=5432\n");
    p.stop();
}
