//! Benchmark of sidekick's Vault backend against the Vault test server of
//! `sidekick-testkit` (run by `benches/vault.sh`, which builds both in
//! release mode). Vault has no watch, so sidekick polls: a change reaches
//! the file within one `--interval` (1 s here, the smallest the flag takes)
//! and the figures mostly measure that interval.
//!
//! 1. write -> destination file latency, median and p99 over `CHANGES`
//!    writes made at a random moment of the poll cycle, next to the write's
//!    own HTTP round trip and one KV v2 read's;
//! 2. the backend alone, in this process, polling every 10 ms: what the
//!    poll itself costs on top of the interval;
//! 3. CPU ticks and RSS of an idle `--watch` over `IDLE_SECS`, at
//!    `--interval 1` and at the default `--interval 600`.
//!
//! Usage: `bench SIDEKICK_BINARY`; environment: `CHANGES` (200), `IDLE_SECS`
//! (10), `BENCH_DIR` (where confdirs go; default: the system temp dir).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use sidekick_backend::{Backend, Interest, Update};
use sidekick_backend_vault::{Auth, Mount, Timing, VaultBackend, VaultConfig};
use sidekick_testkit::bench::{
    self, confdir, cpu_ticks, env_num, ms, percentile, status_kb, time_to_file, Result, Stop,
};
use sidekick_testkit::vault::Vault;
use sidekick_testkit::wait;

/// A small xorshift for the write phases (no crate for that).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn main() -> Result<()> {
    let sidekick = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: bench SIDEKICK_BINARY")?,
    );
    let vault = Vault::start();
    let base = match std::env::var_os("BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir(),
    };
    println!(
        "Vault test server {}; confdirs under {}",
        vault.url(),
        base.display()
    );
    let m = vault.mount("bench", 2);
    latency(&vault, &m, &sidekick, &base)?;
    backend_latency(&vault, &m)?;
    idle(&vault, &m, &sidekick, &base, 1)?;
    idle(&vault, &m, &sidekick, &base, 600)?;
    Ok(())
}

fn spawn_watch(sidekick: &Path, vault: &Vault, dir: &Path, interval: u64) -> Result<Child> {
    let (url, interval, token) = (vault.url(), interval.to_string(), vault.root_token());
    let args = [
        "--backend",
        "vault",
        "--node",
        &url,
        "--interval",
        &interval,
        "--vault-token",
        &token,
    ];
    bench::spawn_watch(sidekick, &args, dir)
}

fn latency(vault: &Vault, m: &str, sidekick: &Path, base: &Path) -> Result<()> {
    let changes = env_num("CHANGES", 200) as usize;
    let dir = confdir(
        base,
        "lat",
        &format!("/{m}/lat"),
        &format!("{{{{ getv(key=\"/{m}/lat/v/value\") }}}}\n"),
    )?;
    let dest = dir.path().join("lat.out");
    vault.put(m, 2, "lat/v", json!({"value": "start"}));
    let _sidekick = Stop(spawn_watch(sidekick, vault, dir.path(), 1)?);
    if !wait::until(Duration::from_secs(10), || {
        std::fs::read_to_string(&dest).is_ok_and(|t| t == "start\n")
    }) {
        return Err("the first render never came".into());
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut to_file = Vec::with_capacity(changes);
    let mut write_rt = Vec::with_capacity(changes);
    let mut read_rt = Vec::with_capacity(changes);
    let mut buf = String::new();
    for i in 0..changes + 5 {
        // A change at a random moment of the 1 s poll cycle.
        std::thread::sleep(Duration::from_millis(rng.below(1000)));
        let value = format!("v{i}");
        let expected = format!("{value}\n");
        let started = Instant::now();
        vault.put(m, 2, "lat/v", json!({ "value": value }));
        let written = started.elapsed();
        let seen = time_to_file(
            &dest,
            &expected,
            started,
            Duration::from_micros(200),
            &mut buf,
        )?;
        let read_started = Instant::now();
        vault.ok("GET", &format!("{m}/data/lat/v"), &serde_json::Value::Null);
        let read = read_started.elapsed();
        if i >= 5 {
            to_file.push(seen);
            write_rt.push(written);
            read_rt.push(read);
        }
    }
    to_file.sort();
    write_rt.sort();
    read_rt.sort();
    println!(
        "\n== write -> file over {changes} changes, --watch --interval 1 (polling), dest in {}",
        base.display()
    );
    println!(
        "KV v2 write round trip (HTTP):  median {}  p99 {}",
        ms(percentile(&write_rt, 0.5)),
        ms(percentile(&write_rt, 0.99))
    );
    println!(
        "KV v2 read round trip (HTTP):   median {}  p99 {}",
        ms(percentile(&read_rt, 0.5)),
        ms(percentile(&read_rt, 0.99))
    );
    println!(
        "write -> dest file:             median {}  p99 {}  (expected: about interval/2 and the interval)",
        ms(percentile(&to_file, 0.5)),
        ms(percentile(&to_file, 0.99))
    );
    Ok(())
}

/// The backend alone, polling every 10 ms: write -> update out of the stream.
fn backend_latency(vault: &Vault, m: &str) -> Result<()> {
    let changes = env_num("CHANGES", 200) as usize;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let backend = VaultBackend::with_timing(
        VaultConfig {
            node: Some(vault.url()),
            auth: Some(Auth::Token(vault.root_token())),
            mounts: vec![Mount::parse(m)?],
            ..VaultConfig::default()
        },
        Timing {
            poll_interval: Some(Duration::from_millis(10)),
            ..Timing::default()
        },
    )?;
    vault.put(m, 2, "inproc/v", json!({"value": "start"}));
    let interest = Interest {
        prefixes: vec![format!("/{m}/inproc")],
        services: false,
    };
    let key = format!("/{m}/inproc/v/value");
    let mut to_update = runtime.block_on(async {
        let mut stream = backend.watch(&interest).ok_or("no watch")?;
        stream.next().await.ok_or("stream ended")??;
        let mut out = Vec::with_capacity(changes);
        for i in 0..changes + 5 {
            let value = format!("v{i}");
            let started = Instant::now();
            // The write is a blocking call: run it aside while the stream polls.
            let body = json!({ "value": value });
            let (host, token, path) = (vault.url(), vault.root_token(), format!("/v1/{m}/data/inproc/v"));
            let write = tokio::task::spawn_blocking(move || {
                let bytes = json!({ "data": body }).to_string();
                sidekick_testkit::http::request(
                    host.trim_start_matches("http://"),
                    "POST",
                    &path,
                    &[("X-Vault-Token", &token)],
                    bytes.as_bytes(),
                    Duration::from_secs(10),
                )
            });
            let mut write = std::pin::pin!(write);
            let mut written = false;
            loop {
                tokio::select! {
                    r = &mut write, if !written => { r??; written = true; }
                    item = stream.next() => {
                        let batch = item.ok_or("stream ended")??;
                        if batch.iter().any(|u| matches!(u, Update::Put { key: k, value: v } if *k == key && *v == value)) {
                            break;
                        }
                    }
                }
            }
            if !written {
                write.await??;
            }
            if i >= 5 {
                out.push(started.elapsed());
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(out)
    })?;
    to_update.sort();
    println!("\n== backend alone (in-process), polling every 10 ms, {changes} changes");
    println!(
        "write -> stream update:         median {}  p99 {}",
        ms(percentile(&to_update, 0.5)),
        ms(percentile(&to_update, 0.99))
    );
    Ok(())
}

fn idle(vault: &Vault, m: &str, sidekick: &Path, base: &Path, interval: u64) -> Result<()> {
    let secs = env_num("IDLE_SECS", 10);
    for i in 0..20 {
        vault.put(
            m,
            2,
            &format!("idle/s{i:02}"),
            json!({"a": format!("value {i}"), "b": "x"}),
        );
    }
    let dir = confdir(
        base,
        "idle",
        &format!("/{m}/idle"),
        &format!(
            "{{% for kv in gets(pattern=\"/{m}/idle/*/*\") %}}{{{{ kv.key }}}}={{{{ kv.value }}}}\n{{% endfor %}}"
        ),
    )?;
    let dest = dir.path().join("idle.out");
    let child = spawn_watch(sidekick, vault, dir.path(), interval)?;
    let pid = child.id();
    let _sidekick = Stop(child);
    if !wait::until(Duration::from_secs(10), || {
        std::fs::read_to_string(&dest).is_ok_and(|t| t.lines().count() == 40)
    }) {
        return Err("idle resource never rendered".into());
    }
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs(secs));
    let after = cpu_ticks(pid)?;
    println!("\n== idle --watch --interval {interval}, 20 secrets (40 keys), {secs} s");
    println!("CPU ticks (utime+stime) while idle: {}", after - before);
    println!(
        "VmRSS {} kB (anon {} kB, file {} kB), VmHWM {} kB",
        status_kb(pid, "VmRSS:")?,
        status_kb(pid, "RssAnon:")?,
        status_kb(pid, "RssFile:")?,
        status_kb(pid, "VmHWM:")?
    );
    Ok(())
}
