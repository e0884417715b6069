//! The Rancher metadata backend and `metadata-server`, end to end: the server
//! runs in-process on a free port (the library function the subcommand
//! calls), the real `sidekick` binary reads it with `--backend rancher`.
//!
//! Golden files live under `tests/golden/rancher/`; `UPDATE_GOLDEN=1 cargo
//! test --test tests rancher::` rewrites them (check the diff before committing).

mod metadata_server;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::Dir;
use metadata_server::{
    example_file, get, get_json, golden, kafka_answers, save_by_rename, use_example, zk_answers,
    MetadataServer,
};
use sidekick_metadata_server::{Server, ServerConfig};

/// Writes `answers.yaml` into `dir` and returns its path.
fn answers(dir: &Dir, yaml: &str) -> std::path::PathBuf {
    dir.write("answers.yaml", yaml)
}

/// `sidekick --backend rancher --node URL --onetime` in `dir`.
fn onetime(dir: &Dir, server: &MetadataServer) -> crate::harness::Output {
    dir.command()
        .args(["--backend", "rancher", "--node", &server.url(), "--onetime"])
        .output()
}

// ---------------------------------------------------------------------------
// The server's API, against Rancher's documented formats.

#[test]
fn plain_text_answers_follow_rancher() {
    let dir = Dir::new();
    let file = answers(&dir, &zk_answers(3));
    let server = MetadataServer::start(&file, None);
    let a = server.addr;
    let me = [("X-Sidekick-Self", "zk-zookeeper-2")];

    // A leaf is its value, as is.
    let leaf = get(a, "/latest/self/container/primary_ip", &me);
    assert_eq!((leaf.status, leaf.body.as_str()), (200, "10.42.0.12"));
    assert_eq!(leaf.content_type, "text/plain; charset=utf-8");
    assert_eq!(get(a, "/latest/self/service/scale", &me).body, "3");
    // A map: its keys one per line, sorted, `key/` for maps and lists.
    assert_eq!(
        get(a, "/latest/self/container", &me).body,
        "create_index\nenvironment_uuid\nhealth_state\nhost_uuid\nips/\nlabels/\nname\n\
         ports/\nprimary_ip\nservice_index\nservice_name\nstack_name\nstack_uuid\nstate\nuuid\n"
    );
    assert_eq!(
        get(a, "/latest/self", &me).body,
        "container/\nhost/\nservice/\nstack/\n"
    );
    assert_eq!(
        get(a, "/latest/", &me).body,
        "containers/\nhosts/\nself/\nservices/\nstacks/\nversion\n"
    );
    // A list: `index=name` for items with a name, `index` for scalars.
    assert_eq!(
        get(a, "/latest/self/service/containers", &me).body,
        "0=zk-zookeeper-1\n1=zk-zookeeper-2\n2=zk-zookeeper-3\n"
    );
    assert_eq!(get(a, "/latest/self/container/ips", &me).body, "0\n");
    // List items by index, by name and by uuid.
    let by_index = get(a, "/latest/services/0/containers/2/primary_ip", &[]).body;
    let by_name = get(
        a,
        "/latest/services/zookeeper/containers/zk-zookeeper-3/primary_ip",
        &[],
    )
    .body;
    let uuid = get(a, "/latest/containers/2/uuid", &[]).body;
    let by_uuid = get(a, &format!("/latest/containers/{uuid}/primary_ip"), &[]).body;
    assert_eq!(
        (by_index.as_str(), by_name.as_str()),
        ("10.42.0.13", "10.42.0.13")
    );
    assert_eq!(by_uuid, "10.42.0.13");
    // Any version string reads the same tree; `/` lists the versions.
    assert_eq!(
        get(a, "/2015-12-19/self/container/name", &me).body,
        "zk-zookeeper-2"
    );
    assert_eq!(
        get(a, "/", &[]).body,
        "2015-07-25\n2015-12-19\n2016-07-29\nlatest\n"
    );
    // Not found, as text; without self (no header, --self or address match,
    // answers' `self` aside) the file's `self` answers.
    let missing = get(a, "/latest/self/container/nope", &me);
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "Not found\n")
    );
    assert_eq!(
        get(a, "/latest/self/container/name", &[]).body,
        "zk-zookeeper-1"
    );
    let unknown = get(
        a,
        "/latest/self/container/name",
        &[("X-Sidekick-Self", "nobody")],
    );
    assert_eq!(unknown.status, 404);
    // The version is a plain value.
    assert_eq!(get(a, "/latest/version", &[]).body, server.handle.version());
}

#[test]
fn json_answers_follow_rancher() {
    let dir = Dir::new();
    let file = answers(&dir, &kafka_answers(3));
    let server = MetadataServer::start(&file, Some("kafka-broker-2"));
    let a = server.addr;

    let root = get_json(a, "/latest");
    let keys: Vec<&String> = root.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "containers",
            "hosts",
            "self",
            "services",
            "stacks",
            "version"
        ]
    );
    let me = &root["self"];
    assert_eq!(me["container"]["name"], "kafka-broker-2");
    assert_eq!(me["container"]["service_index"], "2");
    assert_eq!(me["container"]["create_index"], 5);
    assert_eq!(me["container"]["primary_ip"], "10.42.1.2");
    assert_eq!(me["container"]["ips"], serde_json::json!(["10.42.1.2"]));
    assert_eq!(me["container"]["state"], "running");
    assert_eq!(me["container"]["health_state"], "healthy");
    assert_eq!(me["host"]["name"], "host-2");
    assert_eq!(me["host"]["uuid"], me["container"]["host_uuid"]);
    assert_eq!(me["service"]["name"], "broker");
    assert_eq!(me["service"]["scale"], 3);
    assert_eq!(me["service"]["kind"], "service");
    assert_eq!(me["service"]["links"]["kafka/zookeeper"], "zookeeper");
    assert_eq!(me["service"]["metadata"]["kafka"]["num_partitions"], 3);
    assert_eq!(me["service"]["containers"][1], root["containers"][4]);
    assert_eq!(me["stack"]["name"], "kafka");
    assert_eq!(me["stack"]["environment_name"], "Default");
    assert_eq!(me["stack"]["services"][1], me["service"]);
    assert_eq!(root["services"].as_array().unwrap().len(), 2);
    assert_eq!(root["containers"].as_array().unwrap().len(), 6);
    assert_eq!(root["version"], server.handle.version().as_str());

    // Leaves are JSON values; subtrees are the same objects as in the root.
    assert_eq!(get_json(a, "/latest/self/container/name"), "kafka-broker-2");
    assert_eq!(get_json(a, "/latest/self/service/scale"), 3);
    assert_eq!(get_json(a, "/latest/self/container"), me["container"]);
    assert_eq!(get_json(a, "/latest/version"), root["version"]);
    assert_eq!(
        get_json(a, "/"),
        serde_json::json!({"2015-07-25": "/2015-07-25", "2015-12-19": "/2015-12-19",
                           "2016-07-29": "/2016-07-29", "latest": "/latest"})
    );
    let missing = get(a, "/latest/nope", &[("Accept", "application/json")]);
    assert_eq!(missing.status, 404);
    let error: serde_json::Value = serde_json::from_str(&missing.body).unwrap();
    assert_eq!(
        error,
        serde_json::json!({"code": 404, "message": "Not found", "type": "error"})
    );
}

#[test]
fn long_poll_holds_until_the_version_changes() {
    let dir = Dir::new();
    let file = answers(&dir, &zk_answers(3));
    let server = MetadataServer::start(&file, None);
    let a = server.addr;
    let v1 = server.handle.version();
    let waited_on = v1.clone();

    // Another value than the current one: answered at once.
    let started = Instant::now();
    let now = get(a, "/latest/version?wait=true&value=other&maxWait=30", &[]);
    assert_eq!(now.body, v1);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The current one and no change: held for maxWait, then the same value.
    let started = Instant::now();
    let same = get(
        a,
        &format!("/latest/version?wait=true&value={v1}&maxWait=1"),
        &[],
    );
    assert_eq!(same.body, v1);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A save (by rename, as editors do) wakes a waiting client at once.
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = get(
            a,
            &format!("/latest/version?wait=true&value={waited_on}&maxWait=60"),
            &[],
        );
        (answer.body, started.elapsed())
    });
    // Let the request reach the server (it answers nothing until the change).
    let deadline = Instant::now() + crate::harness::TIMEOUT;
    while server.handle.requests() < 3 && Instant::now() < deadline {
        std::thread::sleep(crate::harness::POLL);
    }
    save_by_rename(&file, &zk_answers(5));
    let (v2, waited) = waiter.join().unwrap();
    assert_ne!(v2, v1, "the version must change");
    assert_eq!(v2, server.handle.version());
    assert!(waited < Duration::from_secs(10), "woke after {waited:?}");
    assert_eq!(get(a, "/latest/services/zookeeper/scale", &[]).body, "5");
}

#[test]
fn bad_answers_are_refused_with_file_and_line() {
    let dir = Dir::new();
    let file = answers(
        &dir,
        "stacks:\n  - name: zk\n    services:\n      - name: zookeeper\n        containers:\n          - primay_ip: 10.0.0.1\n",
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        answers: file.clone(),
        self_container: None,
    };
    let err = runtime
        .block_on(Server::bind(config))
        .unwrap_err()
        .to_string();
    let want = format!("{}:6: ", file.display());
    assert!(err.starts_with(&want), "{err}");
    assert!(err.contains("unknown field `primay_ip`"), "{err}");

    let missing = dir.path("nope.yaml");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        answers: missing.clone(),
        self_container: None,
    };
    let err = runtime
        .block_on(Server::bind(config))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("{}: cannot read", missing.display())),
        "{err}"
    );
}

#[test]
fn a_bad_edit_keeps_the_last_good_answers() {
    let dir = Dir::new();
    let file = answers(&dir, &zk_answers(3));
    let server = MetadataServer::start(&file, None);
    let v1 = server.handle.version();
    fs::write(&file, "stacks: [\n").unwrap();
    let err = server.handle.reload().unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:", file.display())), "{err}");
    assert_eq!(server.handle.version(), v1);
    assert_eq!(
        get(server.addr, "/latest/self/service/scale", &[]).body,
        "3"
    );
    fs::write(&file, zk_answers(4)).unwrap();
    let v2 = server.handle.reload().unwrap();
    assert_ne!(v1, v2);
    assert_eq!(
        get(server.addr, "/latest/self/service/scale", &[]).body,
        "4"
    );
}

#[test]
fn the_example_answers_are_what_the_tests_generate() {
    // The goldens for scale 3 come from the examples' files; scale 1 and 5
    // from the generators. Same content, same version.
    for (name, generated) in [("zookeeper", zk_answers(3)), ("kafka", kafka_answers(3))] {
        let dir = Dir::new();
        let file = answers(&dir, &generated);
        let ours = MetadataServer::start(&file, None);
        let theirs = MetadataServer::start(&example_file(name, "answers-3.yaml"), None);
        assert_eq!(ours.handle.version(), theirs.handle.version(), "{name}");
    }
}

// ---------------------------------------------------------------------------
// sidekick against the server.

/// Renders the ZooKeeper example at scale `n` (scale 3 from the example's own
/// answers file) as the last container of the ensemble (`myid` is `n`), and
/// checks the goldens.
fn zookeeper_scale(n: usize) {
    let dir = Dir::new();
    use_example(&dir, "zookeeper");
    let file = if n == 3 {
        example_file("zookeeper", "answers-3.yaml")
    } else {
        answers(&dir, &zk_answers(n))
    };
    let server = MetadataServer::start(&file, Some(&format!("zk-zookeeper-{n}")));
    let out = onetime(&dir, &server);
    assert!(out.status.success(), "{out}");
    golden(
        &format!("zookeeper/scale-{n}/zoo.cfg"),
        &dir.read("out/zoo.cfg"),
    );
    golden(&format!("zookeeper/scale-{n}/myid"), &dir.read("out/myid"));
    dir.assert_no_stage_files();
}

fn kafka_scale(n: usize) {
    let dir = Dir::new();
    use_example(&dir, "kafka");
    let file = if n == 3 {
        example_file("kafka", "answers-3.yaml")
    } else {
        answers(&dir, &kafka_answers(n))
    };
    let server = MetadataServer::start(&file, Some(&format!("kafka-broker-{n}")));
    let out = onetime(&dir, &server);
    assert!(out.status.success(), "{out}");
    golden(
        &format!("kafka/scale-{n}/server.properties"),
        &dir.read("out/server.properties"),
    );
}

#[test]
fn zookeeper_scale_1() {
    zookeeper_scale(1);
}

#[test]
fn zookeeper_scale_3() {
    zookeeper_scale(3);
}

#[test]
fn kafka_scale_1() {
    kafka_scale(1);
}

#[test]
fn kafka_scale_3() {
    kafka_scale(3);
}

/// Watching sidekick, answers scaled 3 -> 5 (saved by rename): the files
/// follow at once (the long-poll wakes; nothing waits for a poll interval).
/// Rendered as the third container, so the first render is the scale-3 golden.
fn scale_3_to_5(name: &str, me: &str, files: &[&str], answers_for: fn(usize) -> String) {
    let dir = Dir::new();
    use_example(&dir, name);
    let file = answers(&dir, &answers_for(3));
    let server = MetadataServer::start(&file, Some(me));
    let mut running = dir
        .command()
        .args(["--backend", "rancher", "--node", &server.url(), "--watch"])
        .args(["--interval", "3600"])
        .spawn();
    let first = dir.out(files[0]);
    running.wait_for_file_matching(&first, "the 3-node render", |c| c.contains("10.42.0.13"));
    for f in files {
        golden(
            &format!("{name}/scale-3/{f}"),
            &dir.read(format!("out/{f}")),
        );
    }

    let changed = Instant::now();
    save_by_rename(&file, &answers_for(5));
    running.wait_for_file_matching(&first, "the 5-node render", |c| c.contains("10.42.0.15"));
    let took = changed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "re-render took {took:?}: the long-poll should have woken at once"
    );
    for f in files {
        golden(
            &format!("{name}/scaled-3-to-5/{f}"),
            &dir.read(format!("out/{f}")),
        );
    }
    dir.assert_no_stage_files();
}

#[test]
fn zookeeper_scales_3_to_5_while_watching() {
    scale_3_to_5(
        "zookeeper",
        "zk-zookeeper-3",
        &["zoo.cfg", "myid"],
        zk_answers,
    );
}

#[test]
fn kafka_scales_3_to_5_while_watching() {
    scale_3_to_5(
        "kafka",
        "kafka-broker-3",
        &["server.properties"],
        kafka_answers,
    );
}

#[test]
fn a_restarted_server_is_picked_up_again() {
    let dir = Dir::new();
    use_example(&dir, "zookeeper");
    let file = answers(&dir, &zk_answers(3));
    let mut server = MetadataServer::start(&file, Some("zk-zookeeper-1"));
    let addr = server.addr;
    let mut running = dir
        .command()
        .args(["--backend", "rancher", "--node", &server.url(), "--watch"])
        .spawn();
    let cfg = dir.out("zoo.cfg");
    running.wait_for_file_matching(&cfg, "the first render", |c| c.contains("server.3="));

    // Down: the watch fails (once in the log), the file stays.
    let mark = running.stderr_mark();
    server.stop();
    running.wait_stderr_after(mark, "metadata watch interrupted", 1);
    assert!(dir.read("out/zoo.cfg").contains("server.3="));

    // Back on the same port with new answers: picked up without a restart.
    fs::write(&file, zk_answers(4)).unwrap();
    let _server = MetadataServer::start_on(addr, &file, Some("zk-zookeeper-1"));
    running.wait_for_file_matching(&cfg, "the render after the restart", |c| {
        c.contains("server.4=10.42.0.14")
    });
    running.wait_stderr_after(mark, "metadata service reachable again", 1);
    dir.assert_no_stage_files();
}

#[test]
fn the_shared_upstream_template_renders_from_the_catalog() {
    let dir = Dir::new();
    let fixture = crate::harness::repo_root().join("tests/fixtures/upstream");
    for sub in ["conf.d", "templates"] {
        for entry in fs::read_dir(fixture.join(sub)).unwrap().flatten() {
            let text = fs::read_to_string(entry.path()).unwrap();
            dir.write(Path::new(sub).join(entry.file_name()), &text);
        }
    }
    let file = answers(
        &dir,
        "\
hosts: [{name: node-a}, {name: node-b}]
stacks:
  - name: app
    services:
      - name: web
        ports: [\"80:8080/tcp\"]
        containers:
          - {primary_ip: 10.0.0.12, host: node-b}
          - {primary_ip: 10.0.0.11, host: node-a}
          - {primary_ip: 10.0.0.13, health_state: unhealthy}
          - {primary_ip: 10.0.0.14, state: stopped}
      - name: proxy
        containers: [{primary_ip: 10.0.0.2}]
  - name: other
    services:
      - name: web
        containers: [{primary_ip: 10.9.9.9}]
self: app-proxy-1
",
    );
    let server = MetadataServer::start(&file, None);
    let out = onetime(&dir, &server);
    assert!(out.status.success(), "{out}");
    golden("upstream/upstream.conf", &dir.read("out/upstream.conf"));
}

#[test]
fn prefix_picks_an_api_version_and_a_subtree() {
    let dir = Dir::new();
    let file = answers(&dir, &zk_answers(3));
    let server = MetadataServer::start(&file, Some("zk-zookeeper-2"));
    let dest = dir.simple(
        "zk",
        "port={{ getv(key=\"/zk/client_port\") }} {{ ls(path=\"/zk\") | join(sep=\",\") }}\n",
        "",
    );
    let out = dir
        .command()
        .args(["--backend", "rancher", "--node", &server.url(), "--onetime"])
        .args(["--prefix", "/2015-12-19/self/service/metadata"])
        .output();
    assert!(out.status.success(), "{out}");
    assert_eq!(
        fs::read_to_string(&dest).unwrap(),
        "port=2181 client_port,data_dir,init_limit,sync_limit,tick_time\n"
    );

    // A version in --node: plain keys read it.
    let dir = Dir::new();
    let dest = dir.simple(
        "name",
        "{{ getv(key=\"/self/container/name\") }} {{ ls(path=\"/self/service/containers\") | join(sep=\",\") }}\n",
        "",
    );
    let out = dir
        .command()
        .args(["--backend", "rancher", "--onetime"])
        .args(["--node", &format!("{}/2015-12-19", server.url())])
        .output();
    assert!(out.status.success(), "{out}");
    assert_eq!(
        fs::read_to_string(&dest).unwrap(),
        "zk-zookeeper-2 zk-zookeeper-1,zk-zookeeper-2,zk-zookeeper-3\n"
    );
}

#[test]
fn the_examples_render_the_same_from_the_file_backend() {
    for (name, files) in [
        ("zookeeper", &["zoo.cfg", "myid"][..]),
        ("kafka", &["server.properties"][..]),
    ] {
        // The metadata server on the example's answers, `self` as they say.
        let from_rancher = Dir::new();
        use_example(&from_rancher, name);
        let server = MetadataServer::start(&example_file(name, "answers-3.yaml"), None);
        let out = onetime(&from_rancher, &server);
        assert!(out.status.success(), "{out}");
        // The file backend on the example's data.yaml.
        let from_file = Dir::new();
        use_example(&from_file, name);
        let out = from_file
            .command()
            .args(["--backend", "file", "--onetime", "--file"])
            .arg(example_file(name, "data.yaml"))
            .output();
        assert!(out.status.success(), "{out}");
        for f in files {
            let rel = format!("out/{f}");
            assert_eq!(
                from_file.read(&rel),
                from_rancher.read(&rel),
                "{name}/{f}: the file backend must render what the rancher backend does"
            );
        }
    }
}

#[test]
fn an_unreachable_service_is_a_clear_error() {
    let dir = Dir::new();
    dir.simple("x", "{{ getv(key=\"/self/container/name\") }}\n", "");
    // A port nobody listens on: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = dir
        .command()
        .args(["--backend", "rancher", "--onetime"])
        .args(["--node", &format!("127.0.0.1:{port}")])
        .output();
    assert!(!out.status.success(), "{out}");
    out.assert_stderr_has(&[&format!(
        "rancher: cannot reach http://127.0.0.1:{port}/latest"
    )]);
    let out = dir
        .command()
        .args(["--backend", "rancher", "--onetime", "--node", "https://x"])
        .output();
    out.assert_failure()
        .assert_stderr_has(&["https is not supported"]);
}
