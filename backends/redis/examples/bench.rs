//! Benchmark of sidekick's Redis backend against a local redis-server (run
//! by `benches/redis.sh`, which builds both in release mode):
//!
//! 1. SET -> destination file latency, median and p99 over `CHANGES` writes,
//!    next to the SET's own round trip measured in the same run;
//! 2. the same latency on the backend alone (SET -> update out of the watch
//!    stream, in this process), to tell the backend's share from the core's;
//! 3. CPU ticks and RSS of an idle `--watch` with 100 watched keys;
//! 4. wall time of `--onetime` over 10,000 keys, each run paired with the
//!    same load by the backend alone.
//!
//! Usage: `bench SIDEKICK_BINARY` with optional environment: `CHANGES` (200),
//! `IDLE_SECS` (10), `ONETIME_RUNS` (20), `BENCH_DIR` (where confdirs and
//! destinations go; default: the system temp dir).

// A benchmark program: a panic is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sidekick_backend::{Backend, Interest, Update};
use sidekick_backend_redis::{RedisBackend, RedisConfig};
use sidekick_testkit::bench::{
    self, confdir, cpu_ticks, env_num, ms, percentile, status_kb, time_to_file, wait_for, Result,
    Stop,
};
use sidekick_testkit::redis::{Redis, Resp};
use sidekick_testkit::wait;

fn main() -> Result<()> {
    let sidekick = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: bench SIDEKICK_BINARY")?,
    );
    let Some(redis) = Redis::start() else {
        return Err("redis-server is not installed".into());
    };
    let mut client = redis.connect(0)?;
    let base = match std::env::var_os("BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir(),
    };
    println!(
        "redis-server {} (AOF appendfsync always, on tmpfs); confdirs under {}",
        redis.url(),
        base.display()
    );
    latency(&mut client, &redis, &sidekick, &base)?;
    backend_latency(&mut client, &redis)?;
    idle(&mut client, &redis, &sidekick, &base)?;
    onetime(&mut client, &redis, &sidekick, &base)?;
    Ok(())
}

fn interest(prefix: &str) -> Interest {
    Interest {
        prefixes: vec![prefix.to_string()],
        services: false,
    }
}

fn set(client: &mut Resp, key: &str, value: &str) -> Result<()> {
    match client.call(&["SET", key, value])? {
        sidekick_testkit::redis::Reply::Simple(_) => Ok(()),
        other => Err(format!("SET: {other:?}").into()),
    }
}

fn spawn_watch(sidekick: &Path, redis: &Redis, dir: &Path) -> Result<Child> {
    bench::spawn_watch(
        sidekick,
        &["--backend", "redis", "--node", &redis.url()],
        dir,
    )
}

fn latency(client: &mut Resp, redis: &Redis, sidekick: &Path, base: &Path) -> Result<()> {
    let changes = env_num("CHANGES", 200) as usize;
    let dir = confdir(base, "lat", "/lat", "{{ getv(key=\"/lat/v\") }}\n")?;
    let dest = dir.path().join("lat.out");
    set(client, "/lat/v", "start")?;
    let _sidekick = Stop(spawn_watch(sidekick, redis, dir.path())?);
    wait_for(&dest, "start\n", Duration::from_secs(10))?;

    let mut to_file = Vec::with_capacity(changes);
    let mut round_trip = Vec::with_capacity(changes);
    let mut buf = String::new();
    for i in 0..changes + 20 {
        let value = format!("v{i}");
        let expected = format!("{value}\n");
        let started = Instant::now();
        set(client, "/lat/v", &value)?;
        let set_done = started.elapsed();
        let seen = time_to_file(
            &dest,
            &expected,
            started,
            Duration::from_micros(20),
            &mut buf,
        )?;
        if i >= 20 {
            // The first 20 warm up caches and connections.
            to_file.push(seen);
            round_trip.push(set_done);
        }
    }
    to_file.sort();
    round_trip.sort();
    let (f50, f99) = (percentile(&to_file, 0.5), percentile(&to_file, 0.99));
    let (r50, r99) = (percentile(&round_trip, 0.5), percentile(&round_trip, 0.99));
    println!(
        "\n== SET -> file latency over {changes} changes (dest in {})",
        base.display()
    );
    println!(
        "SET round trip:         median {}  p99 {}",
        ms(r50),
        ms(r99)
    );
    println!(
        "SET -> dest file:       median {}  p99 {}",
        ms(f50),
        ms(f99)
    );
    println!("difference of medians:  {}", ms(f50.saturating_sub(r50)));
    Ok(())
}

/// The backend alone, in this process: SET -> update out of the watch stream.
fn backend_latency(client: &mut Resp, redis: &Redis) -> Result<()> {
    let changes = env_num("CHANGES", 200) as usize;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let backend = RedisBackend::new(RedisConfig {
        nodes: vec![redis.url()],
        ..Default::default()
    })?;
    let interest = interest("/inproc");
    let mut to_update = Vec::with_capacity(changes);
    runtime.block_on(async {
        let mut stream = backend.watch(&interest).ok_or("no watch")?;
        stream.next().await.ok_or("stream ended")??;
        for i in 0..changes + 20 {
            let value = format!("v{i}");
            let started = Instant::now();
            // Blocking, but the notification waits in the socket meanwhile.
            set(client, "/inproc/v", &value)?;
            loop {
                let batch = stream.next().await.ok_or("stream ended")??;
                if batch
                    .iter()
                    .any(|u| matches!(u, Update::Put { value: v, .. } if *v == value))
                {
                    break;
                }
            }
            if i >= 20 {
                to_update.push(started.elapsed());
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    to_update.sort();
    println!("\n== backend alone (in-process watch stream), {changes} changes");
    println!(
        "SET -> stream update:   median {}  p99 {}",
        ms(percentile(&to_update, 0.5)),
        ms(percentile(&to_update, 0.99))
    );
    Ok(())
}

fn idle(client: &mut Resp, redis: &Redis, sidekick: &Path, base: &Path) -> Result<()> {
    let secs = env_num("IDLE_SECS", 10);
    for i in 0..100 {
        set(client, &format!("/idle/k{i:03}"), &format!("value {i}"))?;
    }
    let dir = confdir(
        base,
        "idle",
        "/idle",
        "{% for kv in gets(pattern=\"/idle/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
    )?;
    let dest = dir.path().join("idle.out");
    let child = spawn_watch(sidekick, redis, dir.path())?;
    let pid = child.id();
    let _sidekick = Stop(child);
    if !wait::until(Duration::from_secs(10), || {
        std::fs::read_to_string(&dest).is_ok_and(|t| t.lines().count() == 100)
    }) {
        return Err("idle resource never rendered".into());
    }
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs(secs));
    let after = cpu_ticks(pid)?;
    println!("\n== idle --watch, 100 watched keys, {secs} s");
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

fn onetime(client: &mut Resp, redis: &Redis, sidekick: &Path, base: &Path) -> Result<()> {
    let runs = env_num("ONETIME_RUNS", 20) as usize;
    for chunk in 0..100 {
        let mut args: Vec<String> = vec!["MSET".into()];
        for i in 0..100 {
            let n = chunk * 100 + i;
            args.push(format!("/big/k{n:05}"));
            args.push(format!("value-{n}"));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        client.call(&refs)?;
    }
    let dir = confdir(
        base,
        "big",
        "/big",
        "{% for kv in gets(pattern=\"/big/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
    )?;
    let dest = dir.path().join("big.out");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let backend = RedisBackend::new(RedisConfig {
        nodes: vec![redis.url()],
        ..Default::default()
    })?;
    let interest = interest("/big");
    let mut walls = Vec::with_capacity(runs);
    let mut loads = Vec::with_capacity(runs);
    for i in 0..runs + 2 {
        let started = Instant::now();
        let snapshot = runtime.block_on(backend.load(&interest))?;
        let load = started.elapsed();
        if snapshot.keys.len() != 10_000 {
            return Err(format!("loaded {} keys", snapshot.keys.len()).into());
        }
        drop(snapshot);
        let wall = bench::onetime(
            sidekick,
            &["--backend", "redis", "--node", &redis.url()],
            dir.path(),
            &dest,
        )?;
        if i >= 2 {
            walls.push(wall);
            loads.push(load);
        }
    }
    let lines = std::fs::read_to_string(&dest)?.lines().count();
    walls.sort();
    loads.sort();
    println!("\n== --onetime over 10,000 keys ({runs} runs, {lines} lines rendered)");
    println!(
        "sidekick --onetime, wall:      median {}  min {}  p90 {}",
        ms(percentile(&walls, 0.5)),
        ms(walls[0]),
        ms(percentile(&walls, 0.9))
    );
    println!(
        "backend alone (connect + SCAN + reads): median {}  min {}  p90 {}",
        ms(percentile(&loads, 0.5)),
        ms(loads[0]),
        ms(percentile(&loads, 0.9))
    );
    Ok(())
}
