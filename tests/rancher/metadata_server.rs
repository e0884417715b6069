//! Helpers for the Rancher metadata tests: the metadata server run in-process
//! on a free port ([`MetadataServer`]), a raw HTTP GET to check its answers
//! byte for byte ([`get`]), answers files for a ZooKeeper or Kafka stack of any
//! scale, the examples copied into a test confdir, and golden-file checks
//! under `tests/golden/rancher/` (`UPDATE_GOLDEN=1` rewrites them).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use sidekick_metadata_server::{Server, ServerConfig, ServerHandle};

use crate::harness::{self, Dir};

/// The metadata server running on its own thread (one-thread runtime, as the
/// binary runs it). Stopped when dropped.
pub struct MetadataServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetadataServer {
    /// Serves `answers` on a free loopback port; `self_container` is `--self`.
    pub fn start(answers: &Path, self_container: Option<&str>) -> MetadataServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), answers, self_container)
    }

    /// Serves `answers` on `listen` (to restart on the same port).
    pub fn start_on(
        listen: SocketAddr,
        answers: &Path,
        self_container: Option<&str>,
    ) -> MetadataServer {
        let config = ServerConfig {
            listen,
            answers: answers.to_path_buf(),
            self_container: self_container.map(str::to_string),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // The port may still be held by the previous run's sockets for a moment.
        let mut tries = 0;
        let server = loop {
            match runtime.block_on(Server::bind(config.clone())) {
                Ok(s) => break s,
                Err(e) if tries < 50 && e.to_string().contains("in use") => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("metadata server: {e}"),
            }
        };
        let addr = server.local_addr();
        let handle = server.handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let result = runtime.block_on(server.run(async {
                let _ = stopped.await;
            }));
            result.expect("metadata server run");
        });
        MetadataServer {
            addr,
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `--node`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and closes every connection.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            t.join().expect("metadata server thread");
        }
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// GETs `path` with extra `headers` (`("Accept", "application/json")`).
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect to the metadata server");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(request, "{k}: {v}\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        body: body.to_string(),
    }
}

/// GETs `path` as JSON and parses it.
pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let a = get(addr, path, &[("Accept", "application/json")]);
    assert_eq!(a.status, 200, "{path}: {a:?}");
    assert_eq!(a.content_type, "application/json", "{path}");
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", a.body))
}

const HOSTS: &str = "\
hosts:
  - name: host-1
    agent_ip: 10.10.0.1
  - name: host-2
    agent_ip: 10.10.0.2
  - name: host-3
    agent_ip: 10.10.0.3
";

fn containers(n: usize, net: u8, first: u8) -> String {
    let mut out = String::new();
    for i in 1..=n {
        let _ = writeln!(
            out,
            "          - {{primary_ip: 10.42.{net}.{}, host: host-{}}}",
            usize::from(first) + i - 1,
            (i - 1) % 3 + 1
        );
    }
    out
}

/// The ZooKeeper stack of `examples/zookeeper/answers-3.yaml` at scale `n`.
pub fn zk_answers(n: usize) -> String {
    format!(
        "{HOSTS}stacks:
  - name: zk
    services:
      - name: zookeeper
        ports: [\"2181:2181/tcp\"]
        metadata:
          zk: {{client_port: 2181, tick_time: 2000, init_limit: 10, sync_limit: 5, data_dir: /var/lib/zookeeper}}
        containers:
{}self: zk-zookeeper-1
",
        containers(n, 0, 11)
    )
}

/// The Kafka stack of `examples/kafka/answers-3.yaml` with `n` ZooKeeper
/// nodes and `n` brokers.
pub fn kafka_answers(n: usize) -> String {
    format!(
        "{HOSTS}stacks:
  - name: kafka
    services:
      - name: zookeeper
        ports: [\"2181:2181/tcp\"]
        metadata: {{zk: {{client_port: 2181}}}}
        containers:
{}      - name: broker
        ports: [\"9092:9092/tcp\"]
        links: {{zookeeper: zookeeper}}
        metadata: {{kafka: {{port: 9092, num_partitions: 3, zk_chroot: /kafka}}}}
        containers:
{}self: kafka-broker-1
",
        containers(n, 0, 11),
        containers(n, 1, 1)
    )
}

/// Copies `examples/NAME/{conf.d,templates}` into `dir`, with destinations
/// moved from `examples/NAME/out/` to `dir`'s `out/`.
pub fn use_example(dir: &Dir, name: &str) {
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

/// `examples/NAME/FILE`.
pub fn example_file(name: &str, file: &str) -> PathBuf {
    harness::repo_root().join("examples").join(name).join(file)
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Compares `actual` with `tests/golden/rancher/REL` (or writes it when
/// `UPDATE_GOLDEN` is set).
pub fn golden(rel: &str, actual: &str) {
    let path = harness::repo_root().join("tests/golden/rancher").join(rel);
    if updating() {
        harness::write_file(&path, actual);
        eprintln!("updated {}", path.display());
        return;
    }
    let want = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        actual, want,
        "{rel} differs from golden (UPDATE_GOLDEN=1 rewrites it)"
    );
}

/// Writes `content` to `path` as editors save: a temp file renamed over it.
pub fn save_by_rename(path: &Path, content: &str) {
    let tmp = path.with_extension("yaml.tmp-save");
    fs::write(&tmp, content).unwrap();
    fs::rename(&tmp, path).unwrap();
}
