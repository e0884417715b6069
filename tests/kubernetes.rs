//! End-to-end tests of `--backend kubernetes`: the real binary, watching the
//! Kubernetes API test server (or a real cluster when
//! `SIDEKICK_TEST_KUBECONFIG` is set; tests that need the server's hooks skip
//! there), rendering into temp confdirs.

use std::collections::BTreeMap;

use crate::harness::{copy_tree, repo_root, Dir, Running};
use sidekick_testkit::kubernetes::objects::{self, ep, Ep};
use sidekick_testkit::kubernetes::Cluster;

/// sidekick watching `cluster` with the confdir `dir`.
fn watch(cluster: &Cluster, dir: &Dir, extra: &[&str]) -> Running {
    let mut cmd = dir.command();
    cmd.args(["--backend", "kubernetes", "--kubeconfig"])
        .arg(cluster.kubeconfig())
        .args(["--namespace", cluster.namespace(), "--watch"])
        .args(extra);
    cmd.spawn()
}

/// `conf.d/NAME.toml` rendering `templates/NAME.tmpl` (holding `template`) to
/// `out/NAME.conf`, reading `keys`; `extra` lines go into the table. Returns
/// the dest.
fn resource(
    dir: &Dir,
    name: &str,
    keys: &[&str],
    template: &str,
    extra: &str,
) -> std::path::PathBuf {
    dir.template(&format!("{name}.tmpl"), template);
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    dir.resource(
        name,
        &format!(
            "[template]\nsrc = \"{name}.tmpl\"\ndest = \"@OUT@/{name}.conf\"\nkeys = [{}]\n{extra}\n",
            keys.join(", ")
        ),
    );
    dir.out(&format!("{name}.conf"))
}

#[test]
fn configmap_change_rerenders() {
    let cluster = Cluster::start();
    cluster.put_configmap("app", &[("greeting", "hello"), ("name", "web")]);
    let dir = Dir::new();
    let dest = resource(
        &dir,
        "app",
        &["/configmaps/app"],
        "{{ getv(key=\"/configmaps/app/greeting\") }} {{ getv(key=\"/configmaps/app/name\") }}\n",
        "",
    );
    let mut sk = watch(&cluster, &dir, &[]);
    sk.wait_for_file(&dest, "hello web\n");
    cluster.put_configmap("app", &[("greeting", "bye"), ("name", "web")]);
    sk.wait_for_file(&dest, "bye web\n");
    cluster.put_configmap("app", &[("greeting", "bye"), ("name", "api")]);
    sk.wait_for_file(&dest, "bye api\n");
}

#[test]
fn secret_change_rerenders_and_values_stay_out_of_logs() {
    let cluster = Cluster::start();
    cluster.put_secret("db", &[("password", b"first-Pa55")]);
    let dir = Dir::new();
    let dest = resource(
        &dir,
        "db",
        &["/secrets/db"],
        "password={{ getv(key=\"/secrets/db/password\") }}\n",
        "",
    );
    let mut sk = watch(&cluster, &dir, &["--log-level", "debug"]);
    sk.wait_for_file(&dest, "password=first-Pa55\n");
    cluster.put_secret("db", &[("password", b"second-Pa55")]);
    sk.wait_for_file(&dest, "password=second-Pa55\n");
    let logs = sk.stderr.text();
    assert!(
        !logs.contains("Pa55"),
        "a secret value reached the log:{}",
        sk.transcript()
    );
}

#[test]
fn secret_diff_shows_only_a_size() {
    let cluster = Cluster::start();
    cluster.put_secret("db", &[("password", b"first-Pa55")]);
    let dir = Dir::new();
    let dest = resource(
        &dir,
        "db",
        &["/secrets/db"],
        "password={{ getv(key=\"/secrets/db/password\") }}\n",
        "",
    );
    let mut sk = watch(&cluster, &dir, &["--diff"]);
    sk.wait_for_file(&dest, "password=first-Pa55\n");
    let mark = sk.stdout_mark();
    cluster.put_secret("db", &[("password", b"second-Pa55")]);
    sk.wait_for_file(&dest, "password=second-Pa55\n");
    let shown = sk.wait_stdout_after(mark, "<secret: ");
    assert!(shown.contains("bytes changed>"), "{}", sk.transcript());
    let all = format!("{}{}", sk.stdout.text(), sk.stderr.text());
    assert!(
        !all.contains("Pa55"),
        "a secret value was shown:{}",
        sk.transcript()
    );
}

#[test]
fn endpoints_scaling_renders_the_shared_upstream_template() {
    let cluster = Cluster::start();
    cluster.put_service("web", &[("http", 80)]);
    cluster.put_endpoints("web", &[ep("10.1.0.1", "web-1")], 8080);
    let dir = Dir::new();
    let vars = BTreeMap::from([("OUT", dir.out_dir())]);
    copy_tree(
        &repo_root().join("tests/fixtures/upstream"),
        dir.root(),
        &vars,
    );
    let dest = dir.out("upstream.conf");
    let mut sk = watch(&cluster, &dir, &[]);
    wait_upstream(&mut sk, &dest, &["server 10.1.0.1:8080;"]);

    cluster.put_endpoints(
        "web",
        &[
            ep("10.1.0.1", "web-1"),
            ep("10.1.0.2", "web-2"),
            ep("10.1.0.3", "web-3"),
            // Not ready: left out (service() passes ready instances by default).
            Ep {
                ready: Some(false),
                ..ep("10.1.0.4", "web-4")
            },
        ],
        8080,
    );
    wait_upstream(
        &mut sk,
        &dest,
        &[
            "server 10.1.0.1:8080;",
            "server 10.1.0.2:8080;",
            "server 10.1.0.3:8080;",
        ],
    );

    cluster.put_endpoints("web", &[], 8080);
    wait_upstream(
        &mut sk,
        &dest,
        &["server 127.0.0.1:65535 down; # no healthy instance"],
    );
}

/// Waits until the upstream block lists exactly `servers`.
fn wait_upstream(sk: &mut Running, dest: &std::path::Path, servers: &[&str]) {
    let mut want = String::from("upstream web {\n");
    for s in servers {
        want.push_str(&format!("    {s}\n"));
    }
    want.push('}');
    sk.wait_for_file_matching(dest, &format!("{want:?}"), |c| c.trim_end() == want);
}

#[test]
fn relist_after_410_causes_no_reload() {
    let cluster = Cluster::start();
    let Some(server) = cluster.server_or_skip("410 recovery") else {
        return;
    };
    cluster.put_configmap("app", &[("greeting", "hello")]);
    let dir = Dir::new();
    let dest = resource(
        &dir,
        "app",
        &["/configmaps/app"],
        "{{ getv(key=\"/configmaps/app/greeting\") }}\n",
        "reload_cmd = \"cat @OUT@/app.conf >> @OUT@/reloads\"",
    );
    let reloads = dir.out("reloads");
    let mut sk = watch(&cluster, &dir, &[]);
    sk.wait_for_file(&reloads, "hello\n");
    server.wait_for("the watch", sidekick_testkit::kubernetes::TIMEOUT, |s| {
        s.open_watches("configmaps") == 1
    });

    // Move the resourceVersion on elsewhere, compact, end the watch: the
    // re-watch from the old resourceVersion gets 410 and the client relists.
    let lists = server.count("list", "configmaps");
    let mut elsewhere =
        sidekick_testkit::kubernetes::objects::configmap("elsewhere", &[("x", "1")]);
    elsewhere["metadata"]["namespace"] = "other".into();
    server.apply(elsewhere);
    server.compact();
    server.close_watches();
    server.wait_for(
        "410 and a relist",
        sidekick_testkit::kubernetes::TIMEOUT,
        |s| {
            s.expired_count() > 0
                && s.count("list", "configmaps") > lists
                && s.open_watches("configmaps") == 1
        },
    );

    cluster.put_configmap("app", &[("greeting", "bye")]);
    sk.wait_for_file(&dest, "bye\n");
    // One reload for the start, one for the change: none for the relist.
    sk.wait_for_file(&reloads, "hello\nbye\n");
}

#[test]
fn api_server_restart_is_survived() {
    let cluster = Cluster::start();
    let Some(server) = cluster.server_or_skip("restart") else {
        return;
    };
    cluster.put_configmap("app", &[("greeting", "hello")]);
    let dir = Dir::new();
    let dest = resource(
        &dir,
        "app",
        &["/configmaps/app"],
        "{{ getv(key=\"/configmaps/app/greeting\") }}\n",
        "",
    );
    let mut sk = watch(&cluster, &dir, &[]);
    sk.wait_for_file(&dest, "hello\n");
    server.wait_for("the watch", sidekick_testkit::kubernetes::TIMEOUT, |s| {
        s.open_watches("configmaps") == 1
    });
    server.stop();
    cluster.put_configmap("app", &[("greeting", "changed while down")]);
    server.start_again();
    sk.wait_for_file(&dest, "changed while down\n");
    cluster.put_configmap("app", &[("greeting", "after restart")]);
    sk.wait_for_file(&dest, "after restart\n");
}

#[test]
fn forbidden_names_verb_resource_and_namespace() {
    let cluster = Cluster::start();
    let Some(server) = cluster.server_or_skip("RBAC") else {
        return;
    };
    cluster.put_configmap("app", &[("greeting", "hello")]);
    cluster.put_secret("db", &[("password", b"pw")]);
    let dir = Dir::new();
    let dest = resource(
        &dir,
        "app",
        &["/configmaps/app", "/secrets/db"],
        "{{ getv(key=\"/configmaps/app/greeting\") }}\n",
        "",
    );

    // A refused list fails a one-time run, naming what to grant.
    server.forbid("list", "configmaps");
    let out = dir
        .command()
        .args(["--backend", "kubernetes", "--onetime", "--kubeconfig"])
        .arg(cluster.kubeconfig())
        .args(["--namespace", "default"])
        .run_fail();
    out.assert_stderr_has(&[
        "forbidden: cannot list configmaps in namespace default (grant get, list, watch)",
    ]);
    server.allow("list", "configmaps");

    // A refused watch: the listed data still render, and the log says why
    // changes will not come, once.
    server.forbid("watch", "secrets");
    let mut sk = watch(&cluster, &dir, &[]);
    sk.wait_for_file(&dest, "hello\n");
    let needle = "forbidden: cannot watch secrets in namespace default (grant get, list, watch)";
    sk.wait_stderr_after(0, needle, 1);
    // Changes to what may be watched still come through.
    cluster.put_configmap("app", &[("greeting", "still watched")]);
    sk.wait_for_file(&dest, "still watched\n");
    assert_eq!(
        sk.stderr.text().matches(needle).count(),
        1,
        "{}",
        sk.transcript()
    );
}

#[test]
fn resources_reading_one_configmap_share_one_watch() {
    let cluster = Cluster::start();
    let Some(server) = cluster.server_or_skip("shared watch") else {
        return;
    };
    cluster.put_configmap("app", &[("a", "1"), ("b", "2")]);
    let dir = Dir::new();
    let a = resource(
        &dir,
        "a",
        &["/configmaps/app/a"],
        "a={{ getv(key=\"/configmaps/app/a\") }}\n",
        "",
    );
    let b = resource(
        &dir,
        "b",
        &["/configmaps/app/b"],
        "b={{ getv(key=\"/configmaps/app/b\") }}\n",
        "",
    );
    let mut sk = watch(&cluster, &dir, &[]);
    sk.wait_for_file(&a, "a=1\n");
    sk.wait_for_file(&b, "b=2\n");
    cluster.put_configmap("app", &[("a", "10"), ("b", "20")]);
    sk.wait_for_file(&a, "a=10\n");
    sk.wait_for_file(&b, "b=20\n");
    let watches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.verb == "watch" && r.resource == "configmaps")
        .collect();
    assert_eq!(watches.len(), 1, "{watches:#?}");
    assert_eq!(
        watches[0].query.get("fieldSelector").map(String::as_str),
        Some("metadata.name=app")
    );
    assert_eq!(server.open_watches("configmaps"), 1);
}

#[test]
fn example_renders_against_the_test_server() {
    let example = repo_root().join("examples/kubernetes");
    let fixture = repo_root().join("tests/fixtures/upstream/templates/upstream.conf.tmpl");
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    };
    assert_eq!(
        read(&example.join("templates/upstream.conf.tmpl")),
        read(&fixture),
        "the example's upstream template is the shared fixture, unchanged"
    );

    let cluster = Cluster::start();
    cluster.put_configmap(
        "proxy-config",
        &[("listen", "8080"), ("server_name", "proxy.example")],
    );
    cluster.put_service("web", &[("http", 80)]);
    cluster.put_endpoints(
        "web",
        &[ep("10.2.0.1", "web-1"), ep("10.2.0.2", "web-2")],
        80,
    );
    let dir = Dir::new();
    for rel in [
        "conf.d/site.toml",
        "conf.d/upstream.toml",
        "templates/site.conf.tmpl",
        "templates/upstream.conf.tmpl",
    ] {
        let text = read(&example.join(rel)).replace("/etc/nginx/conf.d", "@OUT@");
        dir.write(rel, &text);
    }
    // --sync-only: no nginx to signal here.
    dir.command()
        .args([
            "--backend",
            "kubernetes",
            "--onetime",
            "--sync-only",
            "--kubeconfig",
        ])
        .arg(cluster.kubeconfig())
        .args(["--namespace", cluster.namespace()])
        .run();
    assert_eq!(
        dir.read(dir.out("upstream.conf")).trim_end(),
        "upstream web {\n    server 10.2.0.1:80;\n    server 10.2.0.2:80;\n}"
    );
    assert_eq!(
        dir.read(dir.out("default.conf")),
        "server {\n    listen 8080;\n    server_name proxy.example;\n    location / {\n        proxy_pass http://web;\n    }\n}\n"
    );
}

#[test]
fn label_selector_across_namespaces_renders_and_follows() {
    let cluster = Cluster::start_with_namespaces(2);
    let [a, b] = [&cluster.namespaces()[0], &cluster.namespaces()[1]];
    let (run, id) = cluster.run_label();
    let web = |port: &str| {
        objects::labelled(
            objects::configmap("web", &[("port", port)]),
            &[("app", "web"), (run, id)],
        )
    };
    cluster.apply_in(a, web("80"));
    cluster.apply_in(b, web("81"));
    cluster.apply_in(b, objects::configmap("db", &[("port", "5432")]));
    let dir = Dir::new();
    let dest = resource(
        &dir,
        "ports",
        &["/configmaps"],
        "{% for kv in gets(pattern=\"/configmaps/*/*/port\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
        "",
    );
    let selector = format!("app=web,{run}={id}");
    let mut cmd = dir.command();
    cmd.args(["--backend", "kubernetes", "--kubeconfig"])
        .arg(cluster.kubeconfig())
        .args([
            "--namespace",
            &format!("{a},{b}"),
            "--kube-label",
            &selector,
        ])
        .arg("--watch");
    let mut sk = cmd.spawn();
    sk.wait_for_file(
        &dest,
        &format!("/configmaps/{a}/web/port=80\n/configmaps/{b}/web/port=81\n"),
    );
    cluster.apply_in(b, web("82"));
    sk.wait_for_file(
        &dest,
        &format!("/configmaps/{a}/web/port=80\n/configmaps/{b}/web/port=82\n"),
    );
    cluster.delete_in(a, "configmaps", "web");
    sk.wait_for_file(&dest, &format!("/configmaps/{b}/web/port=82\n"));

    // A bad selector stops the start, naming the flag and the part.
    let out = dir
        .command()
        .args(["--backend", "kubernetes", "--onetime", "--kubeconfig"])
        .arg(cluster.kubeconfig())
        .args(["--all-namespaces", "--kube-label", "tier in (a,b"])
        .run_fail();
    out.assert_stderr_has(&["--kube-label \"tier in (a,b\"", "parentheses"]);
}
