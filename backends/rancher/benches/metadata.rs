//! Benchmarks of the Rancher metadata backend and `metadata-server`.
//!
//! ```text
//! cargo build --release                                   # the sidekick binary it runs
//! cargo bench -p sidekick-backend-rancher --bench metadata
//! ```
//!
//! 1. Change-to-file latency: a watching `sidekick --backend rancher` (the
//!    release binary, `target/release/sidekick`, or `RANCHER_BENCH_BIN`)
//!    against the server in-process; each round writes the answers file,
//!    reloads it and times until the rendered file holds the new value
//!    (median, p99, max over `RANCHER_BENCH_CHANGES` rounds, default 200).
//! 2. Idle cost of that watching sidekick over `RANCHER_BENCH_IDLE_SECS`
//!    (default 60): CPU ticks (utime + stime from /proc) and requests it made.
//! 3. Server throughput on one core: the server on a one-thread runtime with
//!    a 1,000-container answers file, loaded from loopback by 16 keep-alive
//!    connections for `RANCHER_BENCH_LOAD_SECS` (default 5 s, at most 2
//!    million requests).
//!
//! Without the release binary, parts 1 and 2 are skipped with a note.

// Benchmark: a panic ends the run with its message, which is what it should do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sidekick_metadata_server::{Server, ServerConfig, ServerHandle};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The server on its own thread with a one-thread runtime (as the binary
/// runs it); stopped when dropped.
struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(answers: &Path, self_container: Option<&str>) -> Running {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let server = runtime
            .block_on(Server::bind(ServerConfig {
                listen: "127.0.0.1:0".parse().expect("address"),
                answers: answers.to_path_buf(),
                self_container: self_container.map(str::to_string),
            }))
            .expect("metadata server");
        let addr = server.local_addr();
        let handle = server.handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = runtime.block_on(server.run(async {
                let _ = stopped.await;
            }));
        });
        Running {
            addr,
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// A small ZooKeeper stack whose service metadata carries `n`.
fn small_answers(n: u64) -> String {
    format!(
        "stacks:
  - name: zk
    services:
      - name: zookeeper
        metadata: {{bench: {{n: {n}}}}}
        containers:
          - primary_ip: 10.42.0.11
          - primary_ip: 10.42.0.12
          - primary_ip: 10.42.0.13
self: zk-zookeeper-1
"
    )
}

/// 1,000 containers: 10 stacks of 4 services of 25 containers, on 50 hosts.
fn big_answers() -> String {
    let mut out = String::from("hosts:\n");
    for h in 1..=50 {
        let _ = writeln!(out, "  - {{name: host-{h}, agent_ip: 10.10.0.{h}}}");
    }
    out.push_str("stacks:\n");
    let mut ip = 0u32;
    for s in 1..=10 {
        let _ = writeln!(out, "  - name: stack-{s}\n    services:");
        for v in 1..=4 {
            let _ = writeln!(
                out,
                "      - name: svc-{v}\n        ports: [\"8080:80/tcp\"]\n        labels: {{tier: t{v}}}\n        metadata: {{app: {{port: 80, name: svc-{v}}}}}\n        containers:"
            );
            for _ in 1..=25 {
                ip += 1;
                let _ = writeln!(
                    out,
                    "          - {{primary_ip: 10.{}.{}.{}, host: host-{}, labels: {{io.rancher.container.pull_image: always}}}}",
                    42 + ip / 65536,
                    (ip / 256) % 256,
                    ip % 256,
                    ip % 50 + 1
                );
            }
        }
    }
    out
}

fn sidekick_binary() -> Option<PathBuf> {
    let path = std::env::var_os("RANCHER_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/sidekick")
        });
    path.exists().then_some(path)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

struct Sidekick(Child);

impl Drop for Sidekick {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path, want: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if fs::read_to_string(path).is_ok_and(|c| c == want) {
            return true;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    false
}

/// CPU time of every thread of a process, from the scheduler (nanoseconds).
fn cpu_nanos(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let stat = fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += stat.split(' ').next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Runs the latency rounds (and, with `idle`, the idle measurement) with the
/// confdir and rendered file in `base`.
fn latency_and_idle(bin: &Path, base: &Path, label: &str, idle: bool) {
    let tmp = tempfile::tempdir_in(base).expect("temp dir");
    let root = tmp.path();
    let answers = root.join("answers.yaml");
    fs::write(&answers, small_answers(0)).expect("write answers");
    fs::create_dir_all(root.join("conf.d")).expect("conf.d");
    fs::create_dir_all(root.join("templates")).expect("templates");
    let dest = root.join("out.conf");
    fs::write(
        root.join("conf.d/bench.toml"),
        format!(
            "[template]\nsrc = \"bench.tmpl\"\ndest = \"{}\"\nkeys = [\"/self\"]\n",
            dest.display()
        ),
    )
    .expect("resource");
    fs::write(
        root.join("templates/bench.tmpl"),
        "n={{ getv(key=\"/self/service/metadata/bench/n\") }} ip={{ getv(key=\"/self/container/primary_ip\") }}\n",
    )
    .expect("template");
    let server = Running::start(&answers, None);
    let child = Command::new(bin)
        .args(["--backend", "rancher", "--watch", "--log-level"])
        .arg(std::env::var("RANCHER_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .arg("--node")
        .arg(format!("http://{}", server.addr))
        .arg("--confdir")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sidekick");
    let child = Sidekick(child);
    if !wait_for(&dest, "n=0 ip=10.42.0.11\n", Duration::from_secs(10)) {
        eprintln!("sidekick did not render the first file; skipping the latency run");
        return;
    }
    // Let the watch settle into its long-poll.
    std::thread::sleep(Duration::from_millis(200));

    let rounds = env_u64("RANCHER_BENCH_CHANGES", 200);
    let mut latencies = Vec::with_capacity(rounds as usize);
    for n in 1..=rounds {
        let want = format!("n={n} ip=10.42.0.11\n");
        let started = Instant::now();
        fs::write(&answers, small_answers(n)).expect("write answers");
        server.handle.reload().expect("reload");
        if !wait_for(&dest, &want, Duration::from_secs(10)) {
            eprintln!("round {n}: no re-render within 10 s");
            return;
        }
        latencies.push(started.elapsed());
        // Let the server's own file watch see the write (a no-op reload).
        std::thread::sleep(Duration::from_millis(40));
    }
    latencies.sort();
    println!(
        "change-to-file latency, {label}, over {rounds} changes: median {}, p99 {}, max {}",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
    );

    if !idle {
        return;
    }
    let idle = env_u64("RANCHER_BENCH_IDLE_SECS", 60);
    let pid = child.0.id();
    // Let the last render's work finish before measuring.
    std::thread::sleep(Duration::from_secs(1));
    let (Some(before), Some(nanos_before)) = (cpu_ticks(pid), cpu_nanos(pid)) else {
        eprintln!("cannot read /proc/{pid}; skipping the idle run");
        return;
    };
    let requests_before = server.handle.requests();
    std::thread::sleep(Duration::from_secs(idle));
    let after = cpu_ticks(pid).unwrap_or(before);
    let nanos = cpu_nanos(pid).unwrap_or(nanos_before) - nanos_before;
    let requests = server.handle.requests() - requests_before;
    println!(
        "idle watching sidekick over {idle} s: {} CPU ticks ({:.3} ms on CPU), {requests} request(s) to the metadata server",
        after - before,
        nanos as f64 / 1e6
    );
}

async fn load_connection(
    addr: SocketAddr,
    paths: Arc<Vec<(String, Option<String>, bool)>>,
    offset: usize,
    deadline: Instant,
    budget: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
) {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return;
    };
    let driver = tokio::spawn(conn);
    let mut i = offset;
    while Instant::now() < deadline {
        if budget.fetch_sub(1, Ordering::Relaxed) == 0 {
            break;
        }
        let (path, me, json) = &paths[i % paths.len()];
        i += 7;
        let mut request = Request::get(path.as_str()).header("host", "bench");
        if let Some(me) = me {
            request = request.header("x-sidekick-self", me.as_str());
        }
        if *json {
            request = request.header("accept", "application/json");
        }
        let Ok(request) = request.body(Empty::<Bytes>::new()) else {
            break;
        };
        if sender.ready().await.is_err() {
            break;
        }
        let Ok(response) = sender.send_request(request).await else {
            break;
        };
        if !response.status().is_success() {
            eprintln!("{path}: {}", response.status());
            break;
        }
        if response.into_body().collect().await.is_err() {
            break;
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    drop(sender);
    let _ = driver.await;
}

fn throughput() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let answers = tmp.path().join("answers.yaml");
    let text = big_answers();
    fs::write(&answers, &text).expect("write answers");
    let started = Instant::now();
    let server = Running::start(&answers, None);
    println!(
        "1,000-container answers ({} KiB of YAML): loaded and answers precomputed in {}",
        text.len() / 1024,
        ms(started.elapsed())
    );

    // What requests look like: containers asking about themselves and their
    // service, by name, in text and JSON, and the version.
    let mut paths = Vec::new();
    for c in (0..1000).step_by(37) {
        let s = c / 100 + 1;
        let v = (c / 25) % 4 + 1;
        let name = format!("stack-{s}-svc-{v}-{}", c % 25 + 1);
        paths.push((
            "/latest/self/container/primary_ip".to_string(),
            Some(name.clone()),
            false,
        ));
        paths.push((
            "/latest/self/service/containers".to_string(),
            Some(name.clone()),
            false,
        ));
        paths.push((
            "/latest/self/container".to_string(),
            Some(name.clone()),
            true,
        ));
        paths.push((
            format!("/2015-12-19/stacks/stack-{s}/services/svc-{v}/containers/{name}/primary_ip"),
            None,
            false,
        ));
        paths.push((
            "/latest/self/service/metadata/app/port".to_string(),
            Some(name),
            false,
        ));
        paths.push(("/latest/version".to_string(), None, false));
    }
    let paths = Arc::new(paths);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // The backend's read: the whole tree as JSON, once.
    let addr = server.addr;
    let (size, took) = runtime.block_on(async move {
        let started = Instant::now();
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let driver = tokio::spawn(conn);
        let request = Request::get("/latest")
            .header("host", "bench")
            .header("accept", "application/json")
            .header("x-sidekick-self", "stack-1-svc-1-1")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        drop(sender);
        let _ = driver.await;
        (body.len(), started.elapsed())
    });
    println!(
        "whole /latest tree as JSON (what the backend reads): {} KiB in {}",
        size / 1024,
        ms(took)
    );

    let secs = env_u64("RANCHER_BENCH_LOAD_SECS", 5);
    let budget = Arc::new(AtomicU64::new(2_000_000));
    let done = Arc::new(AtomicU64::new(0));
    let before = server.handle.requests();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..16 {
            tasks.push(tokio::spawn(load_connection(
                addr,
                Arc::clone(&paths),
                c,
                deadline,
                Arc::clone(&budget),
                Arc::clone(&done),
            )));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let elapsed = started.elapsed();
    let answered = done.load(Ordering::Relaxed);
    println!(
        "server on one core, 1,000 containers: {answered} requests in {:.2} s = {:.0} requests/s ({} seen by the server)",
        elapsed.as_secs_f64(),
        answered as f64 / elapsed.as_secs_f64(),
        server.handle.requests() - before
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us too: keep that quick.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    match sidekick_binary() {
        Some(bin) => {
            // On disk the core's fsync before the rename dominates; on tmpfs
            // what is left is the long-poll, the read and the render.
            latency_and_idle(
                &bin,
                &std::env::temp_dir(),
                "temp dir (fsync to disk)",
                false,
            );
            let shm = Path::new("/dev/shm");
            if shm.is_dir() {
                latency_and_idle(&bin, shm, "tmpfs (/dev/shm)", true);
            } else {
                latency_and_idle(&bin, &std::env::temp_dir(), "temp dir", true);
            }
        }
        None => println!(
            "target/release/sidekick not found (run `cargo build --release` first, or set \
             RANCHER_BENCH_BIN): skipping the latency and idle runs"
        ),
    }
    throughput();
}
