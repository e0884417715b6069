//! Change-to-file latency, request rate and idle CPU of
//! `sidekick --backend consul --watch` against the in-process fake agent
//! (`sidekick_testkit::consul`).
//!
//! Run from the repository root:
//!
//! ```text
//! cargo build --release
//! cargo bench -p sidekick-backend-consul --bench latency
//! ```
//!
//! It spawns the release binary (`target/release/sidekick`, or `$SIDEKICK_BIN`)
//! and measures, for each change, the time from just before the HTTP PUT to
//! the moment the rendered file holds the new value (or a later one, when
//! changes come faster than files are written); in the same run it measures
//! the fake's own PUT round trip, so the difference is what sidekick adds.
//! The scenarios, in order:
//! - single changes, each meeting an idle watch (`SIDEKICK_BENCH_GAP_MS`
//!   apart), and check flips the same way;
//! - bursts: rounds of `SIDEKICK_BENCH_BURST` puts 20 ms apart on a fixed
//!   schedule, a second of quiet between rounds;
//! - a sustained run of 100 puts 20 ms apart (two seconds), with the
//!   requests per second the agent received meanwhile;
//! - one after another: each put 20 ms after the previous value reached the
//!   file;
//! - idle: requests per second and CPU ticks (`/proc/<pid>/stat` utime +
//!   stime) while nothing changes.
//!
//! Knobs (environment): `SIDEKICK_BENCH_CHANGES` (single KV changes, default
//! 200), `SIDEKICK_BENCH_HEALTH_CHANGES` (check flips, default 100),
//! `SIDEKICK_BENCH_GAP_MS` (pause between single changes, default 150: enough
//! for the backend's re-query bucket to refill, so each change meets an idle
//! watch), `SIDEKICK_BENCH_BURST` (puts per burst, default 5, the bucket's
//! size), `SIDEKICK_BENCH_ROUNDS` (bursts, default 20),
//! `SIDEKICK_BENCH_IDLE_SECS` (idle window, default 60), `SIDEKICK_BENCH_LOG`
//! (sidekick's `--log-level`, default warn), `SIDEKICK_BENCH_DIR` (where the
//! confdir and rendered files go, default the system temp dir). The pipeline
//! fsyncs each file and its directory, which on a busy disk adds a millisecond
//! or more; `SIDEKICK_BENCH_DIR=/dev/shm` leaves the disk out.

// Benchmark: a panic ends the run with its message, which is what it should do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sidekick_testkit::consul::{Consul, Instance};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SIDEKICK_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("release/sidekick")
}

/// Waits (polling every 50 µs) until `path` satisfies `pred`; returns when.
/// Exits if sidekick is gone or after 10 s.
fn wait_file(child: &mut Child, path: &Path, what: &str, pred: impl Fn(&str) -> bool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if pred(&text) {
                return Instant::now();
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("sidekick exited ({status}) while waiting for {what}");
            std::process::exit(1);
        }
        if Instant::now() > deadline {
            eprintln!("timed out waiting for {what}");
            let _ = child.kill();
            let _ = child.wait();
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Puts `count` values (`{tag}{i}`) on `key`, `gap` apart on a fixed
/// schedule, and returns for each the time from just before its PUT until
/// `path` shows it or a later one, and the time from the first PUT until the
/// last value showed.
fn scheduled_puts(
    consul: &Consul,
    child: &mut Child,
    key: &str,
    path: &Path,
    tag: &str,
    count: usize,
    gap: Duration,
) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let deadline = start + gap * count as u32 + Duration::from_secs(10);
    let mut sent: Vec<Instant> = Vec::with_capacity(count);
    let mut seen: Vec<Duration> = Vec::with_capacity(count);
    while seen.len() < count {
        if sent.len() < count && Instant::now() >= start + gap * sent.len() as u32 {
            let t0 = Instant::now();
            consul.put(key, &format!("{tag}{}", sent.len()));
            sent.push(t0);
            continue;
        }
        let shown = std::fs::read_to_string(path).ok().and_then(|text| {
            text.trim_end()
                .strip_prefix(tag)
                .and_then(|n| n.parse::<usize>().ok())
        });
        if let Some(j) = shown.filter(|j| *j < sent.len()) {
            let now = Instant::now();
            while seen.len() <= j {
                seen.push(now - sent[seen.len()]);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("sidekick exited ({status}) during the {tag} puts");
            std::process::exit(1);
        }
        if Instant::now() > deadline {
            eprintln!(
                "timed out waiting for the {tag} puts ({} of {count} seen)",
                seen.len()
            );
            let _ = child.kill();
            let _ = child.wait();
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    // The loop ends the moment the last value showed.
    (seen, sent[0].elapsed())
}

fn stats(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let n = v.len();
    let median = v[n / 2];
    let p99 = v[((n * 99) / 100).min(n - 1)];
    println!(
        "{name:<40} n={n:<4} p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
        ms(median),
        ms(p99),
        ms(v[n - 1])
    );
    median
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the `(comm)`, which may contain spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; 12 and 13 here.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

struct Sidekick(Child);

impl Drop for Sidekick {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let bin = binary();
    if !bin.is_file() {
        eprintln!(
            "{} not found: build it first with `cargo build --release` (or set SIDEKICK_BIN)",
            bin.display()
        );
        std::process::exit(1);
    }
    let changes = env_num("SIDEKICK_BENCH_CHANGES", 200).max(1);
    let health_changes = env_num("SIDEKICK_BENCH_HEALTH_CHANGES", 100);
    let gap = Duration::from_millis(env_num("SIDEKICK_BENCH_GAP_MS", 150));
    let idle = Duration::from_secs(env_num("SIDEKICK_BENCH_IDLE_SECS", 60));
    let burst = env_num("SIDEKICK_BENCH_BURST", 5).max(1) as usize;
    let rounds = env_num("SIDEKICK_BENCH_ROUNDS", 20).max(1);

    let consul = Consul::start();
    let p = consul.prefix();
    consul.put(&format!("{p}/bench/value"), "init");
    let web1 = Instance::new("web", "web-1", "10.0.0.1", 8080);
    let mut web2 = Instance::new("web", "web-2", "10.0.0.2", 8080);
    consul.register(&web1);
    consul.register(&web2);

    let dir = match std::env::var_os("SIDEKICK_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let root = dir.path();
    let out = root.join("out");
    std::fs::create_dir_all(root.join("conf.d")).expect("conf.d");
    std::fs::create_dir_all(root.join("templates")).expect("templates");
    std::fs::create_dir_all(&out).expect("out");
    std::fs::write(
        root.join("templates/value.tmpl"),
        "{{ getv(key=\"/bench/value\") }}\n",
    )
    .expect("template");
    std::fs::write(
        root.join("conf.d/value.toml"),
        format!(
            "[template]\nsrc = \"value.tmpl\"\ndest = \"{}/value.conf\"\nprefix = \"{p}\"\nkeys = [\"/bench\"]\n",
            out.display()
        ),
    )
    .expect("resource");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/upstream");
    std::fs::copy(
        fixture.join("templates/upstream.conf.tmpl"),
        root.join("templates/upstream.conf.tmpl"),
    )
    .expect("copy the upstream template");
    let resource = std::fs::read_to_string(fixture.join("conf.d/upstream.toml"))
        .expect("read the upstream resource")
        .replace("@OUT@", &out.display().to_string())
        // Only the catalog is needed; do not read the whole KV store.
        .replace("keys = [\"/\"]", &format!("keys = [\"{p}/none\"]"));
    std::fs::write(root.join("conf.d/upstream.toml"), resource).expect("resource");

    println!(
        "sidekick {} against the fake Consul agent at {} ({changes} KV changes, {health_changes} check flips, {gap:?} apart; {rounds} bursts of {burst})",
        bin.display(),
        consul.url()
    );
    let child = Command::new(&bin)
        .args([
            "--backend",
            "consul",
            "--node",
            &consul.url(),
            "--watch",
            "--log-level",
        ])
        .arg(std::env::var("SIDEKICK_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .arg("--confdir")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sidekick");
    let mut sidekick = Sidekick(child);
    let value = out.join("value.conf");
    let upstream = out.join("upstream.conf");
    wait_file(&mut sidekick.0, &value, "the first render", |t| {
        t == "init\n"
    });
    wait_file(&mut sidekick.0, &upstream, "the first upstream", |t| {
        t.contains("10.0.0.2:8080")
    });
    std::thread::sleep(gap);

    let reads = || -> u64 {
        consul.fake("the request count").map_or(0, |f| {
            ["kv", "services", "health"]
                .iter()
                .map(|k| f.reads(k))
                .sum()
        })
    };

    // Single changes: PUT -> file, each meeting an idle watch.
    let key = format!("{p}/bench/value");
    let mut latency = Vec::new();
    let mut put_rtt = Vec::new();
    for i in 0..changes {
        let want = format!("v{i}\n");
        let t0 = Instant::now();
        consul.put(&key, &format!("v{i}"));
        put_rtt.push(t0.elapsed());
        let seen = wait_file(&mut sidekick.0, &value, "a KV change", |t| t == want);
        latency.push(seen - t0);
        std::thread::sleep(gap);
    }
    // Health: a check flips -> the upstream gains or loses web-2.
    let mut health = Vec::new();
    let mut register_rtt = Vec::new();
    for i in 0..health_changes {
        let failing = i % 2 == 0;
        let t0 = Instant::now();
        consul.set_status(&mut web2, if failing { "critical" } else { "passing" });
        register_rtt.push(t0.elapsed());
        let seen = wait_file(&mut sidekick.0, &upstream, "a health change", |t| {
            t.contains("10.0.0.2:8080") != failing
        });
        health.push(seen - t0);
        std::thread::sleep(gap);
    }

    // Bursts: rounds of a few puts 20 ms apart, a second of quiet between.
    let fast = Duration::from_millis(20);
    let mut bursts = Vec::new();
    for round in 0..rounds {
        let (l, _) = scheduled_puts(
            &consul,
            &mut sidekick.0,
            &key,
            &value,
            &format!("r{round}-"),
            burst,
            fast,
        );
        bursts.extend(l);
        std::thread::sleep(Duration::from_secs(1));
    }

    // Sustained: 100 puts 20 ms apart, and the requests they cost.
    let before = reads();
    let (sustained, took) = scheduled_puts(&consul, &mut sidekick.0, &key, &value, "s", 100, fast);
    let burst_requests = reads() - before;
    std::thread::sleep(Duration::from_secs(1));

    // One after another: each put 20 ms after the previous one showed.
    let mut sequential = Vec::new();
    for i in 0..100 {
        let want = format!("q{i}\n");
        let t0 = Instant::now();
        consul.put(&key, &format!("q{i}"));
        let seen = wait_file(&mut sidekick.0, &value, "a KV change", |t| t == want);
        sequential.push(seen - t0);
        std::thread::sleep(fast);
    }

    println!();
    let lat = stats(
        &format!("single KV change -> file ({gap:?} apart)"),
        latency,
    );
    let rtt = stats("fake agent PUT round trip", put_rtt);
    println!(
        "{:<40} {:>+8.3} ms (p50 latency - p50 PUT round trip)",
        "sidekick's share",
        ms(lat) - ms(rtt)
    );
    if health_changes > 0 {
        let h = stats("check flip -> upstream file", health);
        let r = stats("fake catalog/register round trip", register_rtt);
        println!(
            "{:<40} {:>+8.3} ms (p50 latency - p50 register round trip)",
            "sidekick's share",
            ms(h) - ms(r)
        );
    }
    stats(
        &format!("bursts of {burst} puts 20 ms apart -> file"),
        bursts,
    );
    stats("100 puts 20 ms apart -> file", sustained);
    println!(
        "{:<40} {burst_requests} requests in {:.3} s: {:.1} requests/s",
        "  requests to the agent meanwhile",
        took.as_secs_f64(),
        burst_requests as f64 / took.as_secs_f64()
    );
    stats("one after another, 20 ms after each", sequential);

    // Idle: nothing changes; the blocking queries just wait.
    let pid = sidekick.0.id();
    let reads_before = reads();
    let before = cpu_ticks(pid);
    std::thread::sleep(idle);
    let after = cpu_ticks(pid);
    let requests = reads() - reads_before;
    println!();
    println!(
        "idle {:?}: {} CPU ticks (utime+stime, 1 tick = 1/100 s on Linux), {requests} requests to the agent ({:.3} requests/s)",
        idle,
        after - before,
        requests as f64 / idle.as_secs_f64()
    );
}
