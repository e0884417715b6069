//! Change-to-file latency of `sidekick --backend kubernetes --watch` against
//! the Kubernetes API test server, and the idle memory of the watching process.
//!
//! Build the release binary first, then run the bench:
//!
//! ```text
//! cargo build --release
//! cargo bench -p sidekick-backend-kubernetes --bench latency
//! ```
//!
//! `SIDEKICK_BIN` overrides the binary (default `target/release/sidekick`);
//! `SIDEKICK_BENCH_CHANGES` the number of changes per series (default 300).
//!
//! Two series: a ConfigMap value read with `getv`, and an EndpointSlice
//! rendered by the shared upstream template. For each change the clock starts
//! when the server has stored the object (its watchers are woken then) and
//! stops when the destination file holds the new content (polled every 50 µs).

// Benchmark: a panic ends the run with its message, which is what it should do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidekick_testkit::kubernetes::ApiServer;

const TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let bin = std::env::var_os("SIDEKICK_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/sidekick"),
        PathBuf::from,
    );
    if !bin.exists() {
        eprintln!(
            "{} not found: run `cargo build --release` first (or set SIDEKICK_BIN)",
            bin.display()
        );
        std::process::exit(2);
    }
    let changes: usize = std::env::var("SIDEKICK_BENCH_CHANGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
        .max(200);

    let tmp = tempfile::Builder::new()
        .prefix("sidekick-k8s-bench-")
        .tempdir()
        .expect("temp dir");
    let root = tmp.path();
    let out = root.join("out");
    for d in ["conf.d", "templates", "out"] {
        fs::create_dir_all(root.join(d)).expect("confdir");
    }
    fs::write(
        root.join("templates/value.tmpl"),
        "value={{ getv(key=\"/configmaps/bench/value\") }}\n",
    )
    .expect("template");
    fs::write(
        root.join("conf.d/value.toml"),
        format!(
            "[template]\nsrc = \"value.tmpl\"\ndest = \"{}/value.conf\"\nkeys = [\"/configmaps/bench\"]\n",
            out.display()
        ),
    )
    .expect("resource");
    let upstream = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/upstream");
    fs::copy(
        upstream.join("templates/upstream.conf.tmpl"),
        root.join("templates/upstream.conf.tmpl"),
    )
    .expect("copy upstream template");
    // The fixture's resource with `keys` narrowed, so the bench watches one
    // ConfigMap and the catalog rather than every ConfigMap and Secret.
    fs::write(
        root.join("conf.d/upstream.toml"),
        format!(
            "[template]\nsrc = \"upstream.conf.tmpl\"\ndest = \"{}/upstream.conf\"\nkeys = [\"/configmaps/bench\"]\n",
            out.display()
        ),
    )
    .expect("resource");

    let server = ApiServer::start();
    let kubeconfig = root.join("kubeconfig");
    fs::write(&kubeconfig, server.kubeconfig("default")).expect("kubeconfig");
    server.apply(configmap(0));
    server.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": {"ports": [{"name": "http", "port": 80}]}}));
    server.apply(slice(1));

    let mut child = Command::new(&bin)
        .args(["--backend", "kubernetes", "--watch", "--log-level", "warn"])
        .arg("--confdir")
        .arg(root)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--namespace", "default"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sidekick");
    let value_conf = out.join("value.conf");
    let upstream_conf = out.join("upstream.conf");
    wait_for(&mut child, &value_conf, "value=0\n");
    wait_for(&mut child, &upstream_conf, &upstream_text(1));
    // Let the watches open before the clock starts.
    let deadline = Instant::now() + TIMEOUT;
    while server.open_watches("configmaps") + server.open_watches("endpointslices") < 2 {
        assert!(Instant::now() < deadline, "watches did not open");
        std::thread::sleep(Duration::from_millis(5));
    }

    let mut cm = Vec::with_capacity(changes);
    for i in 1..=changes {
        let t0 = Instant::now();
        server.apply(configmap(i));
        wait_for(&mut child, &value_conf, &format!("value={i}\n"));
        cm.push(t0.elapsed());
    }
    // 1, 2, 3, 4, 5, 4, 3, 2, 1, ... endpoints: every step changes the file.
    let pattern = [1, 2, 3, 4, 5, 4, 3, 2];
    let mut ep = Vec::with_capacity(changes);
    for i in 1..=changes {
        let n = pattern[i % pattern.len()];
        let t0 = Instant::now();
        server.apply(slice(n));
        wait_for(&mut child, &upstream_conf, &upstream_text(n));
        ep.push(t0.elapsed());
    }

    std::thread::sleep(Duration::from_secs(2));
    let status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map_or_else(|| "?".to_string(), |l| l[name.len()..].trim().to_string())
    };
    let size = fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();

    println!("sidekick kubernetes backend: change-to-file latency ({changes} changes per series)");
    report("ConfigMap value (getv)", &mut cm);
    report("EndpointSlice (upstream template)", &mut ep);
    println!(
        "idle watching process: VmRSS {} (RssAnon {}, RssFile {}), VmHWM {}; binary {:.1} MB",
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("VmHWM:"),
        size as f64 / 1e6
    );
}

fn configmap(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bench", "namespace": "default"}, "data": {"value": i.to_string()}})
}

fn slice(n: usize) -> Value {
    let endpoints: Vec<Value> = (1..=n)
        .map(|i| json!({"addresses": [format!("10.0.0.{i}")], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": format!("web-{i}")}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-bench", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

fn upstream_text(n: usize) -> String {
    let mut s = String::from("upstream web {\n");
    for i in 1..=n {
        s.push_str(&format!("    server 10.0.0.{i}:8080;\n"));
    }
    s.push('}');
    s
}

/// Polls `path` until its trimmed content is `want` trimmed.
fn wait_for(child: &mut Child, path: &Path, want: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if fs::read_to_string(path).is_ok_and(|c| c.trim_end() == want.trim_end()) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "sidekick exited ({status}) before {} held {want:?}",
                path.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {} to hold {want:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_micros(50));
    }
}

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e3
    };
    println!(
        "  {name:<36} median {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
