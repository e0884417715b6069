//! Starts a real, throw-away `redis-server` for a test: a free loopback port,
//! a temp dir (RAM-backed where possible) holding its append-only file, so
//! its data outlive a kill and restart, a PING wait, kill on drop. For the
//! Redis crate's tests, the binary's end-to-end tests and the benchmark
//! (feature `redis`). It needs no Redis client: [`Resp`] speaks RESP over a
//! plain TCP connection (a TLS server also listens on a plain port for it).
//!
//! Under `CI=true` a missing redis-server is a failure; elsewhere the test
//! is skipped with a note.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::process::Server;
use crate::temp::ram_dir;

/// How long to wait for redis-server to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one command may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS files for a redis-server that also listens for TLS clients.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
    /// CA (PEM) that client certificates must chain to.
    pub ca: PathBuf,
    /// Whether clients must present a certificate (`tls-auth-clients`).
    pub client_certs: bool,
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// `requirepass`: clients must AUTH with it.
    pub password: Option<String>,
    /// `notify-keyspace-events` (`""`: off).
    pub notify: String,
    /// Listen for TLS clients too.
    pub tls: Option<ServerTls>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            password: None,
            notify: "KEA".into(),
            tls: None,
        }
    }
}

/// A running redis-server, killed when dropped.
pub struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    tls_port: u16,
    options: Options,
}

/// The redis-server binary: `$REDIS_SERVER_BIN`, else `redis-server` on the
/// PATH, else `/usr/bin/redis-server`. `None` (after printing a note) when
/// there is none and `CI` is not `true`; panics under `CI=true`.
pub fn redis_binary() -> Option<PathBuf> {
    Server {
        name: "redis-server",
        env: "REDIS_SERVER_BIN",
        program: "redis-server",
        fallbacks: &["/usr/bin/redis-server"],
        package: "redis-server",
    }
    .find()
}

impl Redis {
    /// Starts a plain redis-server with keyspace notifications on and no
    /// password; `None` when redis-server is not installed.
    pub fn start() -> Option<Redis> {
        Self::start_with(Options::default())
    }

    /// Starts a redis-server with `options`.
    pub fn start_with(options: Options) -> Option<Redis> {
        redis_binary()?;
        let mut redis = Redis {
            child: None,
            dir: ram_dir("sidekick-redis-"),
            port: free_port(),
            tls_port: free_port(),
            options,
        };
        // A port picked as free may be taken before the server binds it: it
        // then exits at once, and it is tried on fresh ports.
        for attempt in 1..=3 {
            match redis.spawn() {
                Ok(()) => return Some(redis),
                Err((true, message)) if attempt < 3 => {
                    eprintln!("redis-server did not start ({message}); trying other ports");
                    redis.port = free_port();
                    redis.tls_port = free_port();
                }
                Err((_, message)) => panic!("{message}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `redis://127.0.0.1:PORT` (the plain port).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://127.0.0.1:TLS_PORT`, for a server started with TLS.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }

    /// The plain port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<(), (bool, String)> {
        let bin = redis_binary().expect("redis-server binary");
        let mut cmd = Command::new(bin);
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(["--daemonize", "no", "--save", ""])
            // Data survive a SIGKILL: every write is in the AOF at once.
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--databases", "16", "--loglevel", "warning"])
            .arg("--notify-keyspace-events")
            .arg(&self.options.notify)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.options.password {
            cmd.arg("--requirepass").arg(password);
        }
        if let Some(tls) = &self.options.tls {
            cmd.arg("--tls-port")
                .arg(self.tls_port.to_string())
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .arg("--tls-auth-clients")
                .arg(if tls.client_certs { "yes" } else { "no" });
        }
        self.child = Some(cmd.spawn().expect("start redis-server"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Reply::Simple(pong)) = self.try_cmd(0, &["PING"]) {
                if pong == "PONG" {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err((
                        true,
                        format!("redis-server exited early ({status}):\n{}", self.log_tail()),
                    ));
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err((
                    false,
                    format!(
                        "redis-server not answering after {START_TIMEOUT:?}:\n{}",
                        self.log_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines the server logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills the server (SIGKILL) and waits for it; its data stay.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        if let Err((_, message)) = self.spawn() {
            panic!("restart: {message}");
        }
    }

    /// Opens a connection to database `db` (authenticated when the server
    /// has a password).
    pub fn connect(&self, db: u32) -> std::io::Result<Resp> {
        let mut resp = Resp::open(self.port)?;
        if let Some(password) = &self.options.password {
            resp.call(&["AUTH", password])?;
        }
        if db != 0 {
            resp.call(&["SELECT", &db.to_string()])?;
        }
        Ok(resp)
    }

    fn try_cmd(&self, db: u32, args: &[&str]) -> std::io::Result<Reply> {
        self.connect(db)?.call(args)
    }

    /// Runs one command on database `db`; panics on an I/O error.
    pub fn cmd_db(&self, db: u32, args: &[&str]) -> Reply {
        self.try_cmd(db, args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Runs one command on database 0; panics on an I/O error or an error reply.
    pub fn cmd(&self, args: &[&str]) -> Reply {
        let reply = self.cmd_db(0, args);
        if let Reply::Error(e) = &reply {
            panic!("redis {args:?}: {e}");
        }
        reply
    }

    /// `SET key value` on database 0.
    pub fn set(&self, key: &str, value: &str) {
        self.cmd(&["SET", key, value]);
    }

    /// `DEL key` on database 0.
    pub fn del(&self, key: &str) {
        self.cmd(&["DEL", key]);
    }

    /// `HSET key field value` on database 0.
    pub fn hset(&self, key: &str, field: &str, value: &str) {
        self.cmd(&["HSET", key, field, value]);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A reply, as RESP2 sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`.
    Error(String),
    /// `:1`.
    Int(i64),
    /// `$3 abc`, `None` for `$-1`.
    Bulk(Option<String>),
    /// `*2 ...`, `None` for `*-1`.
    Array(Option<Vec<Reply>>),
}

/// A blocking RESP2 connection, for the writes a test makes and for loops
/// of writes (the benchmark).
pub struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Resp {
    /// Connects to 127.0.0.1:`port`.
    pub fn open(port: u16) -> std::io::Result<Resp> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Resp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)?;
        self.read()
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(line.trim_end_matches("\r\n").to_string())
    }

    fn read(&mut self) -> std::io::Result<Reply> {
        let line = self.line()?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad RESP");
        let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut buf = vec![0; len as usize + 2];
                    std::io::Read::read_exact(&mut self.reader, &mut buf)?;
                    buf.truncate(len as usize);
                    Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
                }
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(len as usize);
                    for _ in 0..len {
                        items.push(self.read()?);
                    }
                    Reply::Array(Some(items))
                }
            }
            _ => return Err(bad()),
        })
    }
}
