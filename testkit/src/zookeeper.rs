//! Starts a real, throw-away ZooKeeper for a test: Debian's `zookeeper`
//! package (`/usr/share/java/zookeeper.jar`, run with `java`), standalone
//! (`ZooKeeperServerMain`) on a free loopback port with a temp data dir,
//! kill on drop. The JVM is up in about half a second, so each test starts
//! its own. Writes go through [`Session`], a blocking wrapper around
//! `zookeeper-client` on a thread of its own (so it works from plain and
//! from async tests alike).
//!
//! Under `CI=true` a missing ZooKeeper (or java) is a failure; elsewhere the
//! test is skipped with a note.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use crate::net::free_port;
use crate::process::Server;
use crate::temp::ram_dir;

/// How long to wait for ZooKeeper to serve.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The session timeout the test server allows at most (its
/// `maxSessionTimeout`), so that tests about expiry are quick.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(4);

/// The ZooKeeper jar: `$ZOOKEEPER_JAR`, else Debian's. `None` (after a note)
/// when it or `java` is missing and `CI` is not `true`; panics under `CI=true`.
pub fn zookeeper_jar() -> Option<PathBuf> {
    Server {
        name: "java (for ZooKeeper)",
        env: "JAVA_BIN",
        program: "java",
        fallbacks: &["/usr/bin/java"],
        package: "default-jre-headless",
    }
    .find()?;
    Server {
        name: "ZooKeeper",
        env: "ZOOKEEPER_JAR",
        program: "zookeeper.jar",
        fallbacks: &["/usr/share/java/zookeeper.jar"],
        package: "zookeeper",
    }
    .find()
}

/// A running ZooKeeper, killed when dropped.
pub struct ZooKeeper {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    session: Option<Session>,
    /// The server's `maxSessionTimeout`.
    max_session: Duration,
}

impl ZooKeeper {
    /// Starts a standalone ZooKeeper; `None` when it is not installed.
    /// Sessions are capped at [`MAX_SESSION_TIMEOUT`], so that tests see a
    /// lost session soon.
    pub fn start() -> Option<ZooKeeper> {
        ZooKeeper::start_with_max_session(MAX_SESSION_TIMEOUT)
    }

    /// As [`ZooKeeper::start`] with `maxSessionTimeout` = `max_session`
    /// (ZooKeeper's own default is 40 s): benchmarks that measure idle cost
    /// let sidekick have the session it asks for.
    pub fn start_with_max_session(max_session: Duration) -> Option<ZooKeeper> {
        zookeeper_jar()?;
        let mut server = ZooKeeper {
            child: None,
            dir: ram_dir("sidekick-zookeeper-"),
            port: free_port(),
            session: None,
            max_session,
        };
        for attempt in 1..=3 {
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(e) if attempt < 3 => {
                    eprintln!("ZooKeeper did not start ({e}); trying another port");
                    server.kill();
                    server.port = free_port();
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `127.0.0.1:PORT`, as `--node` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the data and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let jar = zookeeper_jar().expect("zookeeper jar");
        let java = std::env::var_os("JAVA_BIN").unwrap_or_else(|| "java".into());
        let cfg = self.dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                 maxSessionTimeout={}\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=ruok,srvr,mntr\n",
                self.dir.path().join("data").display(),
                self.port,
                self.max_session.as_millis(),
            ),
        )
        .expect("write zoo.cfg");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("zookeeper.log"))
            .expect("ZooKeeper log file");
        // slf4j-simple (when there) logs warnings to stderr, into the log file.
        let simple = Path::new("/usr/share/java/slf4j-simple.jar");
        let mut classpath = jar.display().to_string();
        if simple.is_file() {
            classpath = format!("{classpath}:{}", simple.display());
        }
        let child = Command::new(java)
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-Xss1m"])
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .arg("-Dzookeeper.jmx.log4j.disable=true")
            .arg("-cp")
            .arg(classpath)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("start java: {e}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // `srvr` names the mode once the server serves sessions (`ruok`
            // answers `imok` before that).
            if four_letter(self.port, "srvr").is_ok_and(|a| a.contains("Mode:")) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "ZooKeeper exited early ({status}):\n{}",
                        self.log_tail()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ZooKeeper not ready after {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines ZooKeeper logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("zookeeper.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills ZooKeeper (SIGKILL) and waits for it; data stay for
    /// [`ZooKeeper::restart`].
    pub fn kill(&mut self) {
        self.session = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts ZooKeeper again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill();
        // The port may linger a moment after the kill.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart: {e}; again");
                    self.kill();
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("restart: {e}"),
            }
        }
    }

    /// Freezes the server (SIGSTOP): it keeps its sockets but answers
    /// nothing, as a hung or partitioned server would.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a [`ZooKeeper::pause`]d server (SIGCONT). The writer's own
    /// session may have expired meanwhile: the next write opens a new one.
    pub fn resume(&mut self) {
        self.signal("-CONT");
        self.session = None;
    }

    fn signal(&self, which: &str) {
        let pid = self.child.as_ref().expect("ZooKeeper runs").id();
        let status = Command::new("kill")
            .arg(which)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {which} {pid}");
    }

    /// The number of client connections the server has open (`mntr`'s
    /// `zk_num_alive_connections`), the testkit's own session included.
    pub fn connections(&self) -> usize {
        let answer = four_letter(self.port, "mntr").expect("mntr");
        answer
            .lines()
            .find_map(|l| l.strip_prefix("zk_num_alive_connections"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no zk_num_alive_connections in:\n{answer}"))
    }

    /// A new session of its own (for credentials, or ephemeral znodes that
    /// go when it is dropped).
    pub fn session(&self) -> Session {
        Session::open(&self.address(), None)
    }

    /// A new session authenticated as digest `user:password`.
    pub fn session_as(&self, user: &str, password: &str) -> Session {
        Session::open(&self.address(), Some(format!("{user}:{password}")))
    }

    fn writer(&mut self) -> &Session {
        let address = self.address();
        self.session
            .get_or_insert_with(|| Session::open(&address, None))
    }

    /// Creates `path` (and missing parents) with `data`, or sets its data.
    pub fn put(&mut self, path: &str, data: &str) {
        self.writer().put(path, data);
    }

    /// Deletes `path` and everything below it (nothing when absent).
    pub fn delete(&mut self, path: &str) {
        self.writer().delete(path);
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a four-letter command, returns the answer.
fn four_letter(port: u16, command: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(command.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// One request to the session thread.
enum Request {
    Put {
        path: String,
        data: String,
        mode: zk::CreateMode,
        creator_only: bool,
    },
    Delete(String),
}

type Reply = Result<(), String>;

/// A ZooKeeper session on a thread of its own, driven by blocking calls;
/// dropping it closes the session (its ephemeral znodes go).
pub struct Session {
    requests: Option<tokio::sync::mpsc::UnboundedSender<(Request, mpsc::Sender<Reply>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Session {
    fn open(address: &str, digest: Option<String>) -> Session {
        let (requests, mut inbox) =
            tokio::sync::mpsc::unbounded_channel::<(Request, mpsc::Sender<Reply>)>();
        let (ready, started) = mpsc::channel::<Reply>();
        let address = address.to_string();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut connector = zk::Client::connector()
                    .with_session_timeout(MAX_SESSION_TIMEOUT)
                    .with_fail_eagerly();
                if let Some(digest) = &digest {
                    connector = connector.with_auth("digest", digest.as_bytes());
                }
                let client = match connector.connect(&address).await {
                    Ok(client) => {
                        let _ = ready.send(Ok(()));
                        client
                    }
                    Err(e) => {
                        let _ = ready.send(Err(format!("connect to ZooKeeper {address}: {e}")));
                        return;
                    }
                };
                // Awaited, not blocked on: the session's own task (pings)
                // runs on this runtime between requests.
                while let Some((request, reply)) = inbox.recv().await {
                    let _ = reply.send(serve(&client, request).await);
                }
            });
        });
        started
            .recv()
            .expect("session thread")
            .unwrap_or_else(|e| panic!("{e}"));
        Session {
            requests: Some(requests),
            thread: Some(thread),
        }
    }

    fn call(&self, request: Request) {
        let (reply, answer) = mpsc::channel();
        self.requests
            .as_ref()
            .expect("open session")
            .send((request, reply))
            .expect("session thread alive");
        answer
            .recv()
            .expect("session thread answers")
            .unwrap_or_else(|e| panic!("ZooKeeper: {e}"));
    }

    /// Creates `path` (and missing parents) with `data`, or sets its data.
    pub fn put(&self, path: &str, data: &str) {
        self.call(Request::Put {
            path: path.into(),
            data: data.into(),
            mode: zk::CreateMode::Persistent,
            creator_only: false,
        });
    }

    /// Creates `path` as an ephemeral znode of this session (parents are
    /// created persistent), as Kafka registers a broker under `/brokers/ids`.
    pub fn put_ephemeral(&self, path: &str, data: &str) {
        self.call(Request::Put {
            path: path.into(),
            data: data.into(),
            mode: zk::CreateMode::Ephemeral,
            creator_only: false,
        });
    }

    /// Creates `path` readable only by this session's digest user (ACL
    /// `auth::cdrwa`); missing parents are created open.
    pub fn put_private(&self, path: &str, data: &str) {
        self.call(Request::Put {
            path: path.into(),
            data: data.into(),
            mode: zk::CreateMode::Persistent,
            creator_only: true,
        });
    }

    /// Deletes `path` and everything below it (nothing when absent).
    pub fn delete(&self, path: &str) {
        self.call(Request::Delete(path.into()));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(client: &zk::Client, request: Request) -> Reply {
    match request {
        Request::Put {
            path,
            data,
            mode,
            creator_only,
        } => {
            let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            if let Some((parent, _)) = path.rsplit_once('/') {
                if !parent.is_empty() {
                    client
                        .mkdir(parent, &open)
                        .await
                        .map_err(|e| format!("mkdir {parent}: {e}"))?;
                }
            }
            let acls = match creator_only {
                true => zk::Acls::creator_all(),
                false => zk::Acls::anyone_all(),
            };
            let options = mode.with_acls(acls);
            match client.create(&path, data.as_bytes(), &options).await {
                Ok(_) => Ok(()),
                Err(zk::Error::NodeExists) => client
                    .set_data(&path, data.as_bytes(), None)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("set {path}: {e}")),
                Err(e) => Err(format!("create {path}: {e}")),
            }
        }
        Request::Delete(path) => delete_tree(client, path).await,
    }
}

/// Deletes `path`'s subtree, children first.
fn delete_tree(
    client: &zk::Client,
    path: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send + '_>> {
    Box::pin(async move {
        let children = match client.list_children(&path).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return Ok(()),
            Err(e) => return Err(format!("list {path}: {e}")),
        };
        for name in children {
            let below = match path.as_str() {
                "/" => format!("/{name}"),
                _ => format!("{path}/{name}"),
            };
            delete_tree(client, below).await?;
        }
        match client.delete(&path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(format!("delete {path}: {e}")),
        }
    })
}
