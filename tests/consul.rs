//! End-to-end: the real `sidekick` binary with `--backend consul` against the
//! in-process fake Consul agent (or a real one with
//! `SIDEKICK_TEST_CONSUL_ADDR`). The fake and its harness are
//! `sidekick_testkit::consul`, shared with the backend crate's tests.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use crate::harness::{copy_tree, repo_root, Dir, TestCommand};
use sidekick_testkit::consul::{Consul, Instance, Policy};

/// The shared upstream fixture, copied into `dir` with `@OUT@` replaced.
fn upstream_fixture(dir: &Dir) {
    let vars = BTreeMap::from([("OUT", dir.out_dir())]);
    copy_tree(
        &repo_root().join("tests/fixtures/upstream"),
        dir.root(),
        &vars,
    );
}

/// Tests that register instances of the fixture's fixed service name `web`
/// take this, so that they do not see each other's instances on a shared
/// real agent.
fn web_service() -> std::sync::MutexGuard<'static, ()> {
    static WEB: std::sync::Mutex<()> = std::sync::Mutex::new(());
    WEB.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `server` lines of the rendered upstream block.
fn servers(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("server "))
        .map(str::to_string)
        .collect()
}

#[test]
fn upstream_follows_instances_and_their_health() {
    let _web = web_service();
    let consul = Consul::start();
    let mut web1 = Instance::new("web", "web-1", "10.0.0.1", 8080);
    consul.register(&web1);
    let dir = Dir::new();
    upstream_fixture(&dir);
    let dest = dir.out("upstream.conf");
    let mut run = dir
        .command()
        .args(["--backend", "consul", "--node", &consul.url(), "--watch"])
        .spawn();

    let text = run.wait_for_file_matching(&dest, "web-1 listed", |t| {
        servers(t) == ["server 10.0.0.1:8080;"]
    });
    assert!(text.starts_with("upstream web {"), "{text}");

    // A new healthy instance is added.
    let web2 = Instance::new("web", "web-2", "10.0.0.2", 8080);
    consul.register(&web2);
    run.wait_for_file_matching(&dest, "both instances", |t| {
        servers(t) == ["server 10.0.0.1:8080;", "server 10.0.0.2:8080;"]
    });

    // web-1 fails its health check: it leaves the upstream.
    consul.set_status(&mut web1, "critical");
    run.wait_for_file_matching(&dest, "web-1 gone after failing", |t| {
        servers(t) == ["server 10.0.0.2:8080;"]
    });

    // Both gone: the template's fallback line.
    consul.deregister(&web2);
    run.wait_for_file_matching(&dest, "the no-instance fallback", |t| {
        t.contains("server 127.0.0.1:65535 down;")
    });
    dir.assert_no_stage_files();
}

#[test]
fn kv_resource_renders_and_follows_changes() {
    let consul = Consul::start();
    let p = consul.prefix();
    consul.put(&format!("{p}/app/db/host"), "db1.internal");
    consul.put(&format!("{p}/app/db/port"), "5432");
    let dir = Dir::new();
    let dest = dir.out("db.conf");
    dir.template(
        "db.tmpl",
        "host={{ getv(key=\"/db/host\") }}\nport={{ getv(key=\"/db/port\") }}\n\
         {% for k in ls(path=\"/db\") %}key={{ k }}\n{% endfor %}",
    );
    dir.resource(
        "db",
        &format!(
            "[template]\nsrc = \"db.tmpl\"\ndest = \"@OUT@/db.conf\"\nprefix = \"{p}/app\"\nkeys = [\"/db\"]\n"
        ),
    );
    let mut run = dir
        .command()
        .args(["--backend", "consul", "--node", &consul.url(), "--watch"])
        .spawn();
    run.wait_for_file(&dest, "host=db1.internal\nport=5432\nkey=host\nkey=port\n");
    consul.put(&format!("{p}/app/db/host"), "db2.internal");
    consul.put(&format!("{p}/app/db/user"), "app");
    run.wait_for_file(
        &dest,
        "host=db2.internal\nport=5432\nkey=host\nkey=port\nkey=user\n",
    );
}

#[test]
fn onetime_renders_and_exits() {
    let consul = Consul::start();
    let p = consul.prefix();
    consul.put(&format!("{p}/greeting"), "hello");
    let dir = Dir::new();
    let dest = dir.simple(
        "hello",
        &format!("{{{{ getv(key=\"{p}/greeting\") }}}}\n"),
        "",
    );
    dir.command()
        .args(["--backend", "consul", "--node", &consul.url(), "--onetime"])
        .run();
    assert_eq!(fs::read_to_string(dest).unwrap(), "hello\n");
}

#[test]
fn onetime_with_the_agent_down_fails_fast_naming_it() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = Dir::new();
    dir.simple("x", "{{ getv(key=\"/x\", default=\"d\") }}\n", "");
    let started = Instant::now();
    let out = dir
        .command()
        .args([
            "--backend",
            "consul",
            "--node",
            &format!("http://{addr}"),
            "--onetime",
        ])
        .run_fail();
    assert!(started.elapsed() < Duration::from_secs(10), "{out}");
    out.assert_stderr_has(&[&addr.to_string()]);
}

#[test]
fn refused_token_is_reported_without_the_token() {
    let consul = Consul::start();
    let Some(fake) = consul.fake("the ACL refusal test") else {
        return;
    };
    fake.enable_acl(&[("the-good-one", Policy::all())], Policy::default());
    let dir = Dir::new();
    dir.simple("x", "{{ getv(key=\"/x\", default=\"d\") }}\n", "");
    let out = dir
        .command()
        .args(["--backend", "consul", "--node", &consul.url(), "--onetime"])
        .env("SIDEKICK_CONSUL_TOKEN", "s3cret-but-wrong")
        .run_fail();
    out.assert_stderr_has(&["refused the ACL token", "/v1/kv/", "ACL not found"]);
    assert!(!out.stderr.contains("s3cret-but-wrong"), "{out}");
    assert!(!out.stdout.contains("s3cret-but-wrong"), "{out}");
}

#[test]
fn agent_restart_keeps_the_file_logs_once_and_resumes() {
    let consul = Consul::start();
    let Some(fake) = consul.fake("the agent restart test") else {
        return;
    };
    let p = consul.prefix();
    consul.put(&format!("{p}/v"), "1");
    let dir = Dir::new();
    let dest = dir.simple("v", &format!("v={{{{ getv(key=\"{p}/v\") }}}}\n"), "");
    let mut run = dir
        .command()
        .args(["--backend", "consul", "--node", &consul.url(), "--watch"])
        .spawn();
    run.wait_for_file(&dest, "v=1\n");
    // Let the blocking query reach the agent before killing it.
    let deadline = Instant::now() + sidekick_testkit::consul::TIMEOUT;
    while !fake
        .log()
        .iter()
        .any(|l| l.contains("/v1/kv/") && l.contains("index="))
    {
        assert!(
            Instant::now() < deadline,
            "no blocking query{}",
            run.transcript()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mark = run.stderr_mark();
    fake.stop();
    run.wait_stderr_after(mark, "cannot reach", 1);
    // A change made elsewhere in the cluster while this agent is down.
    fake.kv_set(&format!("{}/v", p.trim_start_matches('/')), "2");
    fake.restart();
    run.wait_for_file(&dest, "v=2\n");
    let log = run.stderr.text()[mark..].to_string();
    assert_eq!(
        log.matches("cannot reach").count(),
        1,
        "logged once:{}",
        run.transcript()
    );
    run.wait_stderr_after(mark, "backend is back", 1);
}

#[test]
fn consul_example_renders_the_shared_upstream_template() {
    let root = repo_root();
    let example = root.join("examples/consul");
    assert_eq!(
        fs::read_to_string(example.join("templates/upstream.conf.tmpl")).unwrap(),
        fs::read_to_string(root.join("tests/fixtures/upstream/templates/upstream.conf.tmpl"))
            .unwrap(),
        "the example renders the shared upstream template unchanged"
    );
    let _web = web_service();
    let consul = Consul::start();
    consul.register(&Instance::new("web", "web-1", "10.0.0.1", 8080));
    let mut down = Instance::new("web", "web-9", "10.0.0.9", 8080);
    down.status = "critical".into();
    consul.register(&down);
    // The example's dest is relative to the repository root: run it from a
    // copy laid out the same way.
    let dir = Dir::new();
    let confdir = dir.path("examples/consul");
    copy_tree(&example, &confdir, &BTreeMap::new());
    let _ = fs::remove_dir_all(confdir.join("out"));
    TestCommand::new(dir.root())
        .args(["--backend", "consul", "--node", &consul.url(), "--onetime"])
        .arg("--confdir")
        .arg(&confdir)
        .run();
    let text = fs::read_to_string(confdir.join("out/upstream.conf")).unwrap();
    assert_eq!(servers(&text), ["server 10.0.0.1:8080;"], "{text}");
}
