//! End to end with `--backend zookeeper`: the real sidekick binary against a
//! real ZooKeeper (Debian's package) started for each test by
//! `sidekick_testkit::zookeeper`, shared with the backend crate's tests.
//! Under `CI=true` a missing ZooKeeper fails.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::harness::{self, Dir};
use sidekick_testkit::zookeeper::ZooKeeper;

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
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}

#[test]
fn onetime_then_watch_rerenders_only_the_resource_whose_znodes_changed() {
    let Some(mut zk) = ZooKeeper::start() else {
        return;
    };
    zk.put("/app/db/host", "db1");
    zk.put("/app/web/upstreams/a", "10.0.0.1:80");
    zk.put("/other/x", "ignored");
    let dir = two_resources();
    let node = zk.address();

    dir.command()
        .args(["--backend", "zookeeper", "--node", &node, "--onetime"])
        .run();
    assert_eq!(dir.read("out/app.conf"), "host=db1\nport=5432\n");
    assert_eq!(dir.read("out/web.conf"), "server 10.0.0.1:80\n");

    zk.put("/app/db/host", "db-primary");
    let mut p = dir
        .command()
        .args(["--backend", "zookeeper", "--node", &node, "--watch"])
        .args(["--log-level", "info"])
        .spawn();
    p.wait_for_file(&dir.out("app.conf"), "host=db-primary\nport=5432\n");
    let web = version(&dir.out("web.conf"));

    // A new znode under /app/db re-renders app only.
    zk.put("/app/db/port", "6432-pooled");
    p.wait_for_file(&dir.out("app.conf"), "host=db-primary\nport=6432-pooled\n");
    assert_eq!(version(&dir.out("web.conf")), web, "web.conf was rewritten");

    // Create, change and delete under /app/web re-render web only.
    let app = version(&dir.out("app.conf"));
    zk.put("/app/web/upstreams/b", "10.0.0.2:80");
    p.wait_for_file(
        &dir.out("web.conf"),
        "server 10.0.0.1:80\nserver 10.0.0.2:80\n",
    );
    zk.put("/app/web/upstreams/b", "10.0.0.3:80");
    p.wait_for_file(
        &dir.out("web.conf"),
        "server 10.0.0.1:80\nserver 10.0.0.3:80\n",
    );
    zk.delete("/app/web/upstreams/a");
    p.wait_for_file(&dir.out("web.conf"), "server 10.0.0.3:80\n");
    // A znode outside every resource changes nothing.
    zk.put("/other/x", "still ignored");
    zk.put("/app/web/upstreams/c", "10.0.0.4:80");
    p.wait_for_file(
        &dir.out("web.conf"),
        "server 10.0.0.3:80\nserver 10.0.0.4:80\n",
    );
    assert_eq!(version(&dir.out("app.conf")), app, "app.conf was rewritten");

    p.stop();
    // No value reaches the log at info level (values no session id or
    // timestamp can contain by chance).
    let log = p.stderr.text();
    for value in ["db-primary", "6432-pooled", "10.0.0.3:80"] {
        assert!(!log.contains(value), "{value} in the log:\n{log}");
    }
    dir.assert_no_stage_files();
}

#[test]
fn a_zookeeper_restart_mid_watch_ends_with_the_right_files() {
    let Some(mut zk) = ZooKeeper::start() else {
        return;
    };
    zk.put("/app/db/host", "db1");
    zk.put("/app/web/upstreams/a", "10.0.0.1:80");
    let dir = two_resources();
    let mut p = dir
        .command()
        .args(["--backend", "zookeeper", "--node", &zk.address(), "--watch"])
        .spawn();
    p.wait_for_file(&dir.out("app.conf"), "host=db1\nport=5432\n");
    p.wait_for_file(&dir.out("web.conf"), "server 10.0.0.1:80\n");
    let mark = p.stderr_mark();

    zk.kill();
    p.wait_stderr_after(mark, "ZooKeeper watch interrupted", 1);
    assert_eq!(dir.read("out/app.conf"), "host=db1\nport=5432\n");

    // Changes made right after the restart, while sidekick is backing off.
    zk.restart();
    zk.put("/app/db/host", "db2");
    zk.delete("/app/web/upstreams/a");
    zk.put("/app/web/upstreams/b", "10.0.0.2:80");
    p.wait_for_file(&dir.out("app.conf"), "host=db2\nport=5432\n");
    p.wait_for_file(&dir.out("web.conf"), "server 10.0.0.2:80\n");
    // ...and it watches again.
    zk.put("/app/db/port", "7000");
    p.wait_for_file(&dir.out("app.conf"), "host=db2\nport=7000\n");
    let log = p.stderr.text()[mark..].to_string();
    assert_eq!(
        log.matches("ZooKeeper watch interrupted").count(),
        1,
        "the outage is logged once, not per retry:\n{log}"
    );
    assert!(
        log.contains(&zk.address()),
        "logs name the endpoint:\n{log}"
    );
    p.stop();
}

#[test]
fn onetime_with_zookeeper_down_fails_naming_the_endpoint() {
    // Nothing listens on this port: no ZooKeeper needed.
    let node = format!("127.0.0.1:{}", sidekick_testkit::net::free_port());
    let dir = two_resources();
    let out = dir
        .command()
        .args(["--backend", "zookeeper", "--node", &node, "--onetime"])
        .run_fail();
    out.assert_stderr_has(&[&node, "zookeeper", "Connection refused"]);
    assert!(!dir.out("app.conf").exists());
}

#[test]
fn a_wrong_digest_password_is_a_clear_error_and_never_logged() {
    let Some(zk) = ZooKeeper::start() else { return };
    let owner = zk.session_as("app", "rightpw");
    owner.put_private("/app/db/host", "secured");
    let dir = two_resources();
    let node = zk.address();

    let out = dir
        .command()
        .args(["--backend", "zookeeper", "--node", &node, "--onetime"])
        .args(["--username", "app", "--log-level", "debug"])
        .env("SIDEKICK_ETCD_PASSWORD", "not-the-password")
        .run_fail();
    out.assert_stderr_has(&["NOAUTH", "/app/db/host", "digest user app", &node]);
    assert!(
        !out.stderr.contains("not-the-password") && !out.stdout.contains("not-the-password"),
        "the password leaked:{out}"
    );

    dir.command()
        .args(["--backend", "zookeeper", "--node", &node, "--onetime"])
        .args(["--username", "app"])
        .env("SIDEKICK_ETCD_PASSWORD", "rightpw")
        .run();
    assert_eq!(dir.read("out/app.conf"), "host=secured\nport=5432\n");
}

/// Writes every leaf of `yaml` (maps by key, scalars as text) as a znode
/// under `/`: the layout the file backend reads from the same file.
fn put_yaml(zk: &mut ZooKeeper, path: &str, yaml: &serde_norway::Value) {
    use serde_norway::Value;
    match yaml {
        Value::Mapping(map) => {
            for (k, v) in map {
                let k = match k {
                    Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other).unwrap().trim().to_string(),
                };
                put_yaml(zk, &format!("{path}/{k}"), v);
            }
        }
        Value::String(s) => zk.put(path, s),
        Value::Number(n) => zk.put(path, &n.to_string()),
        Value::Bool(b) => zk.put(path, &b.to_string()),
        other => panic!("{path}: unexpected {other:?} in an example's data.yaml"),
    }
}

/// Copies `examples/NAME/{conf.d,templates}` into `dir`, destinations moved
/// from `examples/NAME/out/` to `dir`'s `out/`.
fn use_example(dir: &Dir, name: &str) {
    let example = harness::repo_root().join("examples").join(name);
    for sub in ["conf.d", "templates"] {
        for entry in fs::read_dir(example.join(sub)).unwrap().flatten() {
            let text = fs::read_to_string(entry.path()).unwrap();
            let text = text.replace(
                &format!("examples/{name}/out/"),
                &format!("{}/", dir.out_dir()),
            );
            dir.write(Path::new(sub).join(entry.file_name()), &text);
        }
    }
}

/// A broker's registration as Kafka writes it (`/brokers/ids/ID`, ephemeral,
/// JSON, version 5).
fn broker_json(host: &str, port: u16) -> String {
    format!(
        r#"{{"features":{{}},"listener_security_protocol_map":{{"PLAINTEXT":"PLAINTEXT"}},"endpoints":["PLAINTEXT://{host}:{port}"],"jmx_port":-1,"port":{port},"host":"{host}","version":5,"timestamp":"1764700000000"}}"#
    )
}

#[test]
fn the_zookeeper_and_kafka_examples_render_from_zookeeper_as_from_their_data_files() {
    let Some(mut zk) = ZooKeeper::start() else {
        return;
    };
    for name in ["zookeeper", "kafka"] {
        let data = harness::repo_root().join(format!("examples/{name}/data.yaml"));
        let from_file = Dir::new();
        use_example(&from_file, name);
        from_file
            .command()
            .args(["--backend", "file", "--onetime", "--file"])
            .arg(&data)
            .run();

        // The same keys as znodes, in a ZooKeeper of their own.
        zk.delete("/self");
        zk.delete("/stacks");
        let yaml: serde_norway::Value =
            serde_norway::from_str(&fs::read_to_string(&data).unwrap()).unwrap();
        put_yaml(&mut zk, "", &yaml);
        let from_zk = Dir::new();
        use_example(&from_zk, name);
        from_zk
            .command()
            .args([
                "--backend",
                "zookeeper",
                "--node",
                &zk.address(),
                "--onetime",
            ])
            .run();
        let outs: Vec<_> = fs::read_dir(from_file.out_dir())
            .unwrap()
            .flatten()
            .collect();
        assert!(!outs.is_empty(), "{name} rendered nothing");
        for entry in outs {
            let file = entry.file_name();
            assert_eq!(
                from_zk.read(Path::new("out").join(&file)),
                fs::read_to_string(entry.path()).unwrap(),
                "examples/{name}: {file:?} differs between the file and zookeeper backends"
            );
        }
    }
}

#[test]
fn kafka_brokers_registered_in_zookeeper_render_and_follow_their_sessions() {
    let Some(mut zk) = ZooKeeper::start() else {
        return;
    };
    // What a Kafka cluster leaves in ZooKeeper besides the brokers.
    zk.put(
        "/cluster/id",
        r#"{"version":"1","id":"sV1Iu4YRQGK2IvZ8bq0gVg"}"#,
    );
    zk.put(
        "/brokers/topics/orders",
        r#"{"partitions":{"0":[1,2]},"version":3}"#,
    );
    zk.put("/brokers/seqid", "");
    zk.put("/brokers/ids", "");
    // Each broker registers from its own session, as an ephemeral znode.
    let broker1 = zk.session();
    broker1.put_ephemeral("/brokers/ids/1", &broker_json("10.42.1.1", 9092));
    let broker2 = zk.session();
    broker2.put_ephemeral("/brokers/ids/2", &broker_json("10.42.1.2", 9093));

    // examples/kafka's server.properties from the same ZooKeeper...
    let yaml: serde_norway::Value = serde_norway::from_str(
        &fs::read_to_string(harness::repo_root().join("examples/kafka/data.yaml")).unwrap(),
    )
    .unwrap();
    put_yaml(&mut zk, "", &yaml);
    let dir = Dir::new();
    use_example(&dir, "kafka");
    // ...and a client's bootstrap list from the brokers' registrations.
    dir.template(
        "client.properties.tmpl",
        "bootstrap.servers=\
         {%- for b in getvs(pattern=\"/brokers/ids/*\") %}{% set r = b | json %}\
         {{- r.host }}:{{ r.port }}{% if not loop.last %},{% endif %}{% endfor %}\n",
    );
    dir.resource(
        "client",
        "[template]\nsrc = \"client.properties.tmpl\"\ndest = \"@OUT@/client.properties\"\nkeys = [\"/brokers/ids\"]\n",
    );
    let mut p = dir
        .command()
        .args(["--backend", "zookeeper", "--node", &zk.address(), "--watch"])
        .spawn();
    p.wait_for_file(
        &dir.out("client.properties"),
        "bootstrap.servers=10.42.1.1:9092,10.42.1.2:9093\n",
    );
    // Rendered in the same pass as client.properties, maybe just after it.
    let server = p.wait_for_file_matching(&dir.out("server.properties"), "rendered", |_| true);
    assert!(
        server.contains("broker.id=1\n")
            && server.contains(
                "zookeeper.connect=10.42.0.11:2181,10.42.0.12:2181,10.42.0.13:2181/kafka\n"
            ),
        "{server}"
    );
    let server_version = version(&dir.out("server.properties"));

    // A broker whose session ends drops out; a new one joins.
    drop(broker1);
    p.wait_for_file(
        &dir.out("client.properties"),
        "bootstrap.servers=10.42.1.2:9093\n",
    );
    let broker3 = zk.session();
    broker3.put_ephemeral("/brokers/ids/3", &broker_json("10.42.1.3", 9092));
    p.wait_for_file(
        &dir.out("client.properties"),
        "bootstrap.servers=10.42.1.2:9093,10.42.1.3:9092\n",
    );
    // The last broker gone: `/brokers/ids` is a leaf again, no broker is listed.
    drop(broker2);
    drop(broker3);
    p.wait_for_file(&dir.out("client.properties"), "bootstrap.servers=\n");
    assert_eq!(
        version(&dir.out("server.properties")),
        server_version,
        "server.properties does not read /brokers and was rewritten"
    );
    p.stop();
}
