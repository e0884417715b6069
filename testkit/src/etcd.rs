//! Starts a real, throw-away etcd for a test: free loopback ports, a temp data
//! dir, health wait, kill on drop. For the etcd crate's tests and the binary's
//! end-to-end tests (feature `etcd`). It needs no etcd client: keys are written
//! through etcd's JSON gateway (`/v3/kv/...`) with [`crate::http`], and
//! health is read from the metrics listener.
//!
//! Under `CI=true` a missing etcd binary is a failure; elsewhere the test is
//! skipped with a note.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::http::Connection;
use crate::net::free_port;
use crate::process::Server;
use crate::temp::ram_dir;

/// How long to wait for etcd to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// TLS files for an etcd that serves clients over https.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
    /// CA that client certificates must chain to (PEM); enables client-cert auth.
    pub client_ca: Option<PathBuf>,
}

/// Why etcd did not come up.
struct StartError {
    /// It exited (a port was taken, say) rather than hanging.
    exited: bool,
    message: String,
}

/// A running etcd, killed when dropped.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    tls: Option<ServerTls>,
}

/// The etcd binary: `$ETCD_BIN`, else `etcd` on the PATH, else `/usr/bin/etcd`.
/// `None` (after printing a note) when there is none and `CI` is not `true`;
/// panics under `CI=true` (see [`crate::process`]).
pub fn etcd_binary() -> Option<PathBuf> {
    Server {
        name: "etcd",
        env: "ETCD_BIN",
        program: "etcd",
        fallbacks: &["/usr/bin/etcd"],
        package: "etcd-server",
    }
    .find()
}

impl Etcd {
    /// Starts a plain-http etcd; `None` when etcd is not installed (see [`etcd_binary`]).
    pub fn start() -> Option<Etcd> {
        Self::start_with(None)
    }

    /// Starts an etcd; with `tls`, clients must use https (and a client
    /// certificate when `client_ca` is set).
    pub fn start_with(tls: Option<ServerTls>) -> Option<Etcd> {
        etcd_binary()?;
        // RAM-backed when possible: etcd fsyncs every write.
        let dir = ram_dir("sidekick-etcd-");
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            tls,
        };
        // A port picked as free may be taken by someone else before etcd binds
        // it: then etcd exits at once, and it is tried on fresh ports.
        for attempt in 1..=3 {
            match etcd.spawn() {
                Ok(()) => return Some(etcd),
                Err(e) if attempt < 3 && e.exited => {
                    eprintln!("etcd did not start ({}); trying other ports", e.message);
                    etcd.client_port = free_port();
                    etcd.peer_port = free_port();
                    etcd.metrics_port = free_port();
                }
                Err(e) => panic!("{}", e.message),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The client URL (`http://127.0.0.1:PORT` or `https://...`).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The directory holding etcd's data and log; tests may put files there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The etcd process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<(), StartError> {
        let bin = etcd_binary().expect("etcd binary");
        let url = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let metrics = format!("http://127.0.0.1:{}", self.metrics_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let mut cmd = Command::new(bin);
        cmd.arg("--name=t")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .arg(format!("--listen-metrics-urls={metrics}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()));
            if let Some(ca) = &tls.client_ca {
                cmd.arg("--client-cert-auth")
                    .arg(format!("--trusted-ca-file={}", ca.display()));
            }
        }
        self.child = Some(cmd.spawn().expect("start etcd"));
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, body)) = http(self.metrics_port, "GET", "/health", "") {
                if body.contains("true") {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(StartError {
                        exited: true,
                        message: format!("etcd exited early ({status}):\n{}", self.log_tail()),
                    });
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(StartError {
                    exited: false,
                    message: format!(
                        "etcd not healthy after {START_TIMEOUT:?}:\n{}",
                        self.log_tail()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines etcd logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills etcd (SIGKILL) and waits for it; data stay for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data dir, and waits for health.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn() {
            panic!("restart: {}", e.message);
        }
    }

    /// Kills etcd, deletes its data dir and starts it again on the same ports:
    /// an etcd back with a wiped (or lost) data dir, its revision at 1 again.
    pub fn wipe_and_restart(&mut self) {
        self.kill();
        let data = self.dir.path().join("data");
        if let Err(e) = std::fs::remove_dir_all(&data) {
            panic!("wipe {}: {e}", data.display());
        }
        if let Err(e) = self.spawn() {
            panic!("restart after wipe: {}", e.message);
        }
    }

    /// Sets `key` to `value`; returns the new revision. Plain-http etcd only.
    pub fn put(&self, key: &str, value: &str) -> i64 {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            STANDARD.encode(key.as_bytes()),
            STANDARD.encode(value.as_bytes())
        );
        self.gateway("/v3/kv/put", &body)
    }

    /// Deletes `key`; returns the new revision. Plain-http etcd only.
    pub fn delete(&self, key: &str) -> i64 {
        let body = format!(r#"{{"key":"{}"}}"#, STANDARD.encode(key.as_bytes()));
        self.gateway("/v3/kv/deleterange", &body)
    }

    /// Compacts history up to `revision` (physically). Plain-http etcd only.
    pub fn compact(&self, revision: i64) {
        let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        self.gateway("/v3/kv/compaction", &body);
    }

    /// The current revision. Plain-http etcd only.
    pub fn revision(&self) -> i64 {
        let body = format!(r#"{{"key":"{}"}}"#, STANDARD.encode(b"\0"));
        self.gateway("/v3/kv/range", &body)
    }

    /// Adds user `root` with `password` and the root role, then turns
    /// authentication on. Write keys before: the gateway helpers send no token.
    pub fn enable_auth(&self, password: &str) {
        self.gateway(
            "/v3/auth/user/add",
            &format!(r#"{{"name":"root","password":"{password}"}}"#),
        );
        self.gateway("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#);
        self.gateway("/v3/auth/enable", "{}");
    }

    /// POSTs to the JSON gateway and returns the header revision (0 when absent).
    fn gateway(&self, path: &str, body: &str) -> i64 {
        let (status, text) = http(self.client_port, "POST", path, body)
            .unwrap_or_else(|e| panic!("etcd {path}: {e}"));
        assert_eq!(status, 200, "etcd {path}: {text}");
        header_revision(&text)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A persistent HTTP/1.1 connection to etcd's JSON gateway, for loops of puts
/// (the benchmark) where a new connection per request would dominate.
pub struct Gateway {
    conn: Connection,
}

impl Gateway {
    /// Connects to a plain-http etcd.
    pub fn connect(etcd: &Etcd) -> Gateway {
        let host = format!("127.0.0.1:{}", etcd.client_port);
        let conn = Connection::open(&host, HTTP_TIMEOUT).expect("connect gateway");
        Gateway { conn }
    }

    /// Sets `key` to `value` and waits for the answer; returns the revision.
    pub fn put(&mut self, key: &str, value: &str) -> i64 {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            STANDARD.encode(key.as_bytes()),
            STANDARD.encode(value.as_bytes())
        );
        let answer = self
            .conn
            .send("POST", "/v3/kv/put", JSON, body.as_bytes(), false)
            .expect("put");
        let text = answer.text();
        assert_eq!(answer.status, 200, "put: {text}");
        header_revision(&text)
    }
}

/// The header the gateway wants on every request.
const JSON: &[(&str, &str)] = &[("Content-Type", "application/json")];
/// How long a gateway or health request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 request on a fresh connection; returns status and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let host = format!("127.0.0.1:{port}");
    let answer = crate::http::request(&host, method, path, JSON, body.as_bytes(), HTTP_TIMEOUT)
        .map_err(|e| e.to_string())?;
    Ok((answer.status, answer.text()))
}

/// The `"revision":"N"` of a gateway answer's header.
fn header_revision(text: &str) -> i64 {
    text.split("\"revision\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
