//! Operations (issue 15): `/healthz`, `/readyz` and `/metrics` on
//! `--metrics-addr` (scraped by a real Prometheus), systemd's notify protocol,
//! command time limits, `reload_url`, and a loop that stays responsive while a
//! pass runs on its worker thread.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sidekick_testkit::http;
use sidekick_testkit::net::free_port;
use sidekick_testkit::process::Server;

use crate::harness::{Dir, POLL, TIMEOUT};

/// `GET path` on `addr`: status and body, or `None` when nothing answers.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    http::request(addr, "GET", path, &[], b"", Duration::from_secs(5))
        .ok()
        .map(|r| (r.status, r.text()))
}

/// Waits until `GET path` answers `status`; returns the body.
fn wait_status(addr: &str, path: &str, status: u16) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = None;
    while Instant::now() < deadline {
        match get(addr, path) {
            Some((s, body)) if s == status => return body,
            other => last = other,
        }
        thread::sleep(POLL * 5);
    }
    panic!("{path} on {addr} never answered {status}; last: {last:?}");
}

fn addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A resource `app` whose check_cmd takes `secs` seconds (it marks the file
/// `check.started` when it begins).
fn slow_check(dir: &Dir, secs: u32) -> std::path::PathBuf {
    let marker = dir.path("check.started");
    dir.simple(
        "app",
        "v={{ getv(key=\"/app/v\") }}\n",
        &format!("check_cmd = \"touch {} && sleep {secs}\"", marker.display()),
    )
}

#[test]
fn readyz_waits_for_the_first_render_while_healthz_answers_during_it() {
    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    let dest = slow_check(&dir, 3);
    let addr = addr();
    let mut p = dir
        .command()
        .args(["--backend", "file", "--watch", "--metrics-addr", &addr])
        .arg("--file")
        .arg(dir.path("data.yaml"))
        .spawn();
    let started = dir.path("check.started");
    p.wait_until("the check to start", |_| started.exists());
    // The pass runs on a worker thread: the loop answers meanwhile.
    let (status, body) = get(&addr, "/healthz").expect("healthz answers during the check");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = get(&addr, "/readyz").expect("readyz answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("app.toml (not rendered yet)"), "{body}");
    assert!(!dest.exists());
    let body = wait_status(&addr, "/readyz", 200);
    assert_eq!(body, "ready\n");
    assert_eq!(fs::read_to_string(&dest).unwrap(), "v=one\n");
    let (status, _) = get(&addr, "/nosuch").unwrap();
    assert_eq!(status, 404);
    p.stop();
}

#[cfg(feature = "etcd")]
#[test]
fn readyz_fails_while_the_backend_is_down_past_ready_timeout() {
    use sidekick_testkit::etcd::Etcd;
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    etcd.put("/app/v", "one");
    let dir = Dir::new();
    let dest = dir.simple("app", "v={{ getv(key=\"/app/v\") }}\n", "");
    let addr = addr();
    let mut p = dir
        .command()
        .args(["--backend", "etcdv3", "--node", &etcd.url(), "--watch"])
        .args(["--metrics-addr", &addr, "--ready-timeout", "1s"])
        .spawn();
    p.wait_for_file(&dest, "v=one\n");
    wait_status(&addr, "/readyz", 200);
    etcd.kill();
    let body = wait_status(&addr, "/readyz", 503);
    assert!(body.contains("backend etcdv3: unreachable for"), "{body}");
    assert!(body.contains("--ready-timeout 1s"), "{body}");
    // Still alive, and the file is kept.
    assert_eq!(get(&addr, "/healthz").unwrap().0, 200);
    let metrics = get(&addr, "/metrics").unwrap().1;
    assert!(
        metrics.contains("sidekick_backend_up{backend=\"etcdv3\"} 0"),
        "{metrics}"
    );
    etcd.restart();
    wait_status(&addr, "/readyz", 200);
    etcd.put("/app/v", "two");
    p.wait_for_file(&dest, "v=two\n");
    let metrics = get(&addr, "/metrics").unwrap().1;
    assert!(
        metrics.contains("sidekick_backend_up{backend=\"etcdv3\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sidekick_backend_reconnects_total{backend=\"etcdv3\"} 1"),
        "{metrics}"
    );
    p.stop();
}

/// A Prometheus server scraping `target` every second.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Option<Prometheus> {
        let bin = Server {
            name: "prometheus",
            env: "PROMETHEUS_BIN",
            program: "prometheus",
            fallbacks: &["/usr/bin/prometheus"],
            package: "prometheus",
        }
        .find()?;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sidekick\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        Some(Prometheus {
            child,
            addr,
            _dir: dir,
        })
    }

    /// The result of an instant query, as JSON text, once it has any sample.
    fn query_until_found(&self, query: &str) -> String {
        let path = format!("/api/v1/query?query={query}");
        let deadline = Instant::now() + TIMEOUT * 3;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some((200, body)) = get(&self.addr, &path) {
                if body.contains("\"result\":[{") {
                    return body;
                }
                last = body;
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!("prometheus never had {query}; last answer: {last}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_the_metrics_and_promtool_accepts_them() {
    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    let dest = dir.simple("app", "v={{ getv(key=\"/app/v\") }}\n", "");
    let addr = addr();
    let mut p = dir
        .command()
        .args(["--backend", "file", "--watch", "--metrics-addr", &addr])
        .arg("--file")
        .arg(dir.path("data.yaml"))
        .spawn();
    p.wait_for_file(&dest, "v=one\n");
    dir.data("app:\n  v: two\n");
    p.wait_for_file(&dest, "v=two\n");
    // The counter goes up just after the rename the test saw.
    let deadline = Instant::now() + TIMEOUT;
    let body = loop {
        let (status, body) = get(&addr, "/metrics").unwrap();
        assert_eq!(status, 200);
        if body.contains("result=\"updated\"} 2") || Instant::now() > deadline {
            break body;
        }
        thread::sleep(POLL);
    };
    for needle in [
        "sidekick_renders_total{resource=\"app.toml\",result=\"updated\"} 2",
        "sidekick_render_duration_seconds_bucket{resource=\"app.toml\",le=\"+Inf\"} 2",
        "sidekick_last_render_success_timestamp_seconds{resource=\"app.toml\"}",
        "sidekick_backend_up{backend=\"file\"} 1",
        "sidekick_keys{backend=\"file\"} 1",
        "sidekick_build_info{version=\"",
        "# HELP sidekick_renders_total ",
        "# TYPE sidekick_render_duration_seconds histogram",
    ] {
        assert!(body.contains(needle), "no {needle:?} in\n{body}");
    }
    // promtool's own check of the exposition (Debian ships it with prometheus).
    if let Some(promtool) = (Server {
        name: "promtool",
        env: "PROMTOOL_BIN",
        program: "promtool",
        fallbacks: &["/usr/bin/promtool"],
        package: "prometheus",
    })
    .find()
    {
        let mut check = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{body}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let Some(prometheus) = Prometheus::start(&addr) else {
        return;
    };
    let answer = prometheus.query_until_found("sidekick_renders_total");
    assert!(answer.contains("\"resource\":\"app.toml\""), "{answer}");
    assert!(answer.contains("\"job\":\"sidekick\""), "{answer}");
    p.stop();
}

#[test]
fn a_check_cmd_past_its_timeout_is_stopped_and_the_old_file_stays() {
    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    let dest = dir.simple(
        "app",
        "v={{ getv(key=\"/app/v\") }}\n",
        "check_cmd = \"sleep 20\"\ncheck_cmd_timeout = \"1s\"",
    );
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::write(&dest, "old\n").unwrap();
    let start = Instant::now();
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&["check_cmd timed out after 1s", "`sleep 20` was stopped"]);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(fs::read_to_string(&dest).unwrap(), "old\n");
    dir.assert_no_stage_files();
    // The flag sets it for every resource that sets none.
    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    dir.simple("app", "v\n", "check_cmd = \"sleep 20\"");
    dir.onetime()
        .args(["--check-cmd-timeout", "1s"])
        .run_fail()
        .assert_stderr_has(&["check_cmd timed out after 1s"]);
}

#[test]
fn a_reload_cmd_past_its_timeout_is_stopped_with_the_new_file_in_place() {
    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    let dest = dir.simple(
        "app",
        "v={{ getv(key=\"/app/v\") }}\n",
        "reload_cmd = \"sleep 20\"",
    );
    dir.onetime()
        .args(["--reload-cmd-timeout", "1s"])
        .run_fail()
        .assert_stderr_has(&["reload_cmd timed out after 1s", "the new file is in place"]);
    assert_eq!(fs::read_to_string(&dest).unwrap(), "v=one\n");
}

#[test]
fn sigterm_during_a_hanging_check_cmd_stops_within_two_seconds() {
    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    let dest = slow_check(&dir, 30);
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::write(&dest, "old\n").unwrap();
    let mut p = dir
        .command()
        .args(["--backend", "file", "--watch", "--file"])
        .arg(dir.path("data.yaml"))
        .spawn();
    let started = dir.path("check.started");
    p.wait_until("the check to start", |_| started.exists());
    let t = Instant::now();
    crate::harness::send_sigterm(p.pid());
    while p.is_running() && t.elapsed() < TIMEOUT {
        thread::sleep(POLL);
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after SIGTERM"
    );
    assert_eq!(fs::read_to_string(&dest).unwrap(), "old\n");
    dir.assert_no_stage_files();
}

#[test]
fn the_exec_child_gets_a_forwarded_signal_while_a_check_runs() {
    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    // The check is slow only for the second render (v=two).
    let started = dir.path("check.started");
    dir.simple(
        "app",
        "v={{ getv(key=\"/app/v\") }}\n",
        &format!(
            "check_cmd = \"touch {}; if grep -q two {{{{.src}}}}; then sleep 6; fi\"",
            started.display()
        ),
    );
    let got = dir.path("child.got-usr1");
    let ready = dir.path("child.ready");
    let script = dir.write(
        "child.sh",
        &format!(
            "trap 'touch {got}' USR1\ntouch {ready}\nwhile true; do sleep 0.05; done\n",
            got = got.display(),
            ready = ready.display()
        ),
    );
    let mut p = dir
        .command()
        .args(["exec", "--backend", "file", "--watch", "--file"])
        .arg(dir.path("data.yaml"))
        .args(["--", "/bin/sh"])
        .arg(&script)
        .spawn();
    p.wait_until("the first check to start", |_| started.exists());
    fs::remove_file(&started).unwrap();
    p.wait_until("the child to start", |_| ready.exists());
    dir.data("app:\n  v: two\n");
    p.wait_until("the second check to start", |_| started.exists());
    let _ = Command::new("/bin/sh")
        .args(["-c", &format!("kill -USR1 {}", p.pid())])
        .status();
    p.wait_until("the child to get SIGUSR1 during the check", |_| {
        got.exists()
    });
    assert_ne!(
        fs::read_to_string(dir.out("app.conf")).unwrap_or_default(),
        "v=two\n",
        "the check was still running"
    );
    p.stop();
}

#[test]
fn sd_notify_says_ready_after_the_first_render_and_pings_the_watchdog() {
    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    let dest = dir.simple("app", "v={{ getv(key=\"/app/v\") }}\n", "");
    let socket_path = dir.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut p = dir
        .command()
        .args(["--backend", "file", "--watch", "--file"])
        .arg(dir.path("data.yaml"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .spawn();
    let mut buf = [0u8; 256];
    let mut seen = Vec::new();
    while !(seen.iter().any(|m| m == "READY=1") && seen.iter().any(|m| m == "WATCHDOG=1")) {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no message from sidekick ({e}); got {seen:?}"));
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message == "READY=1" {
            assert_eq!(
                fs::read_to_string(&dest).unwrap(),
                "v=one\n",
                "READY=1 before the first render"
            );
        }
        seen.push(message);
    }
    p.stop();
}

/// An HTTP server answering every request with `status`; records "METHOD PATH".
fn hook_server(status: u16) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let _ = http::read_headers(&mut reader);
            let mut parts = line.split_whitespace();
            let request = format!(
                "{} {}",
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("")
            );
            log.lock().unwrap().push(request);
            let body = if status == 200 {
                ""
            } else {
                "config is broken"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

#[test]
fn reload_url_calls_the_app_after_a_swap_and_names_a_failed_answer() {
    let (addr, seen) = hook_server(200);
    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    let dest = dir.simple(
        "app",
        "v={{ getv(key=\"/app/v\") }}\n",
        &format!("reload_url = \"http://{addr}/-/reload\""),
    );
    dir.onetime().run().assert_success();
    assert_eq!(fs::read_to_string(&dest).unwrap(), "v=one\n");
    assert_eq!(*seen.lock().unwrap(), ["POST /-/reload"]);

    let (addr, seen) = hook_server(500);
    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    dir.simple(
        "app",
        "v\n",
        &format!("reload_url = \"http://{addr}/reload\"\nreload_method = \"put\""),
    );
    dir.onetime().run_fail().assert_stderr_has(&[
        &format!("reload_url PUT http://{addr}/reload answered 500"),
        "config is broken",
        "the new file is in place",
    ]);
    assert_eq!(*seen.lock().unwrap(), ["PUT /reload"]);

    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    dir.simple("app", "v\n", "reload_url = \"ftp://x\"");
    dir.onetime().run_fail().assert_stderr_has(&[
        "app.toml:",
        "field `reload_url`",
        "not an http:// or https:// URL",
    ]);
}

#[test]
fn a_metrics_addr_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = Dir::new();
    dir.data("app:\n  v: one\n");
    dir.simple("app", "v\n", "");
    dir.command()
        .args(["--backend", "file", "--watch", "--metrics-addr", &addr])
        .arg("--file")
        .arg(dir.path("data.yaml"))
        .run_fail()
        .assert_stderr_has(&[&format!("--metrics-addr {addr}: cannot listen")]);
}
