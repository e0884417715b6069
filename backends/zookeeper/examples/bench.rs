//! Benchmark of sidekick's ZooKeeper backend against a local ZooKeeper (run
//! by `benches/zookeeper.sh`, which builds both in release mode):
//!
//! 1. setData -> destination file latency, median and p99 over `CHANGES`
//!    writes, next to the write's own round trip measured in the same run;
//! 2. the same latency on the backend alone (in this process), to tell the
//!    backend's share from the core's;
//! 3. CPU ticks and RSS of an idle `--watch` with 100 watched znodes (the
//!    session's pings are all that happens);
//! 4. wall time of `--onetime` over 10,000 znodes, next to the backend's own
//!    load in this process.
//!
//! Usage: `bench SIDEKICK_BINARY` with optional environment: `CHANGES` (200),
//! `IDLE_SECS` (10), `ONETIME_RUNS` (10), `BENCH_DIR` (where confdirs and
//! destinations go; default: the system temp dir).

// A measuring program: a failure is a message and an exit, as in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sidekick_backend::{Backend, Interest, Update};
use sidekick_backend_zookeeper::{ZookeeperBackend, ZookeeperConfig};
use sidekick_testkit::bench::{
    self, confdir, cpu_ticks, env_num, ms, percentile, status_kb, time_to_file, Result, Stop,
};
use sidekick_testkit::wait;
use sidekick_testkit::zookeeper::ZooKeeper;
use zookeeper_client as zk;

fn main() -> Result<()> {
    let sidekick = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: bench SIDEKICK_BINARY")?,
    );
    // ZooKeeper's default cap (20 ticks of 2 s), not the tests' 4 s: sidekick
    // gets the 20 s session it asks for, so idle pings are as in production.
    let Some(server) = ZooKeeper::start_with_max_session(Duration::from_secs(40)) else {
        return Err("ZooKeeper is not installed".into());
    };
    // A worker thread of its own: the client's session task (pings) must run
    // while this thread sleeps between the measurements.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = runtime.block_on(zk::Client::connect(&server.address()))?;
    let base = match std::env::var_os("BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir(),
    };
    println!(
        "ZooKeeper 3.8 (Debian) {} (data on tmpfs); confdirs under {}",
        server.address(),
        base.display()
    );
    latency(&runtime, &client, &server, &sidekick, &base)?;
    backend_latency(&runtime, &client, &server)?;
    idle(&runtime, &client, &server, &sidekick, &base)?;
    onetime(&runtime, &client, &server, &sidekick, &base)?;
    Ok(())
}

fn interest(prefix: &str) -> Interest {
    Interest {
        prefixes: vec![prefix.to_string()],
        services: false,
    }
}

fn open() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// Creates `path` with `data`, or sets it.
async fn put(client: &zk::Client, path: &str, data: &str) -> Result<()> {
    match client.create(path, data.as_bytes(), &open()).await {
        Ok(_) => Ok(()),
        Err(zk::Error::NodeExists) => {
            client.set_data(path, data.as_bytes(), None).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn spawn_watch(sidekick: &Path, server: &ZooKeeper, dir: &Path) -> Result<Child> {
    let node = server.address();
    bench::spawn_watch(sidekick, &["--backend", "zookeeper", "--node", &node], dir)
}

fn latency(
    runtime: &tokio::runtime::Runtime,
    client: &zk::Client,
    server: &ZooKeeper,
    sidekick: &Path,
    base: &Path,
) -> Result<()> {
    let changes = env_num("CHANGES", 200) as usize;
    let dir = confdir(base, "lat", "/lat", "{{ getv(key=\"/lat/v\") }}\n")?;
    let dest = dir.path().join("lat.out");
    runtime.block_on(async {
        put(client, "/lat", "").await?;
        put(client, "/lat/v", "start").await
    })?;
    let _sidekick = Stop(spawn_watch(sidekick, server, dir.path())?);
    if !wait::until(Duration::from_secs(10), || {
        std::fs::read_to_string(&dest).is_ok_and(|t| t == "start\n")
    }) {
        return Err("the first render never came".into());
    }
    let mut to_file = Vec::with_capacity(changes);
    let mut round_trip = Vec::with_capacity(changes);
    let mut buf = String::new();
    for i in 0..changes + 20 {
        let value = format!("v{i}");
        let expected = format!("{value}\n");
        let started = Instant::now();
        runtime.block_on(client.set_data("/lat/v", value.as_bytes(), None))?;
        let write_done = started.elapsed();
        let seen = time_to_file(
            &dest,
            &expected,
            started,
            Duration::from_micros(20),
            &mut buf,
        )?;
        if i >= 20 {
            // The first 20 warm up caches, the JIT and connections.
            to_file.push(seen);
            round_trip.push(write_done);
        }
    }
    to_file.sort();
    round_trip.sort();
    let (f50, f99) = (percentile(&to_file, 0.5), percentile(&to_file, 0.99));
    let (r50, r99) = (percentile(&round_trip, 0.5), percentile(&round_trip, 0.99));
    println!(
        "\n== setData -> file latency over {changes} changes (dest in {})",
        base.display()
    );
    println!(
        "setData round trip:     median {}  p99 {}",
        ms(r50),
        ms(r99)
    );
    println!(
        "setData -> dest file:   median {}  p99 {}",
        ms(f50),
        ms(f99)
    );
    println!("difference of medians:  {}", ms(f50.saturating_sub(r50)));
    Ok(())
}

/// The backend alone, in this process: setData -> update out of the stream.
fn backend_latency(
    runtime: &tokio::runtime::Runtime,
    client: &zk::Client,
    server: &ZooKeeper,
) -> Result<()> {
    let changes = env_num("CHANGES", 200) as usize;
    let backend = ZookeeperBackend::new(ZookeeperConfig {
        nodes: vec![server.address()],
        ..Default::default()
    })?;
    let (mut to_update, mut round_trip) = runtime.block_on(async {
        put(client, "/inproc", "").await?;
        put(client, "/inproc/v", "start").await?;
        let mut stream = backend.watch(&interest("/inproc")).ok_or("no watch")?;
        stream.next().await.ok_or("stream ended")??;
        let mut to_update = Vec::with_capacity(changes);
        let mut round_trip = Vec::with_capacity(changes);
        for i in 0..changes + 20 {
            let value = format!("v{i}");
            let started = Instant::now();
            let mut write = std::pin::pin!(client.set_data("/inproc/v", value.as_bytes(), None));
            let mut write_done = None;
            let mut seen = None;
            while write_done.is_none() || seen.is_none() {
                tokio::select! {
                    r = &mut write, if write_done.is_none() => {
                        r?;
                        write_done = Some(started.elapsed());
                    }
                    item = stream.next(), if seen.is_none() => {
                        let batch = item.ok_or("stream ended")??;
                        if batch.iter().any(|u| matches!(u, Update::Put { value: v, .. } if *v == value)) {
                            seen = Some(started.elapsed());
                        }
                    }
                }
            }
            if i >= 20 {
                to_update.extend(seen);
                round_trip.extend(write_done);
            }
        }
        Ok::<_, Box<dyn std::error::Error>>((to_update, round_trip))
    })?;
    to_update.sort();
    round_trip.sort();
    println!("\n== backend alone (in-process watch stream), {changes} changes");
    println!(
        "setData round trip:     median {}  p99 {}",
        ms(percentile(&round_trip, 0.5)),
        ms(percentile(&round_trip, 0.99))
    );
    println!(
        "setData -> update:      median {}  p99 {}",
        ms(percentile(&to_update, 0.5)),
        ms(percentile(&to_update, 0.99))
    );
    Ok(())
}

fn idle(
    runtime: &tokio::runtime::Runtime,
    client: &zk::Client,
    server: &ZooKeeper,
    sidekick: &Path,
    base: &Path,
) -> Result<()> {
    let secs = env_num("IDLE_SECS", 10);
    runtime.block_on(async {
        put(client, "/idle", "").await?;
        let writes = (0..100).map(|i| {
            let path = format!("/idle/k{i:03}");
            let data = format!("value {i}");
            async move { put(client, &path, &data).await }
        });
        for r in futures::future::join_all(writes).await {
            r?;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let dir = confdir(
        base,
        "idle",
        "/idle",
        "{% for kv in gets(pattern=\"/idle/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
    )?;
    let dest = dir.path().join("idle.out");
    let child = spawn_watch(sidekick, server, dir.path())?;
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
    let threads = status_kb(pid, "Threads:")?;
    println!("\n== idle --watch, 100 watched znodes, {secs} s (12 s liveness: a tick every 1.5 s, a ping every 4.5 s)");
    println!("CPU ticks (utime+stime) while idle: {}", after - before);
    println!(
        "VmRSS {} kB (anon {} kB, file {} kB), VmHWM {} kB, {threads} threads",
        status_kb(pid, "VmRSS:")?,
        status_kb(pid, "RssAnon:")?,
        status_kb(pid, "RssFile:")?,
        status_kb(pid, "VmHWM:")?
    );
    Ok(())
}

fn onetime(
    runtime: &tokio::runtime::Runtime,
    client: &zk::Client,
    server: &ZooKeeper,
    sidekick: &Path,
    base: &Path,
) -> Result<()> {
    let runs = env_num("ONETIME_RUNS", 10) as usize;
    runtime.block_on(async {
        put(client, "/big", "").await?;
        for chunk in 0..50 {
            let writes = (0..200).map(|i| {
                let n = chunk * 200 + i;
                let path = format!("/big/k{n:05}");
                let data = format!("value-{n}");
                async move { put(client, &path, &data).await }
            });
            for r in futures::future::join_all(writes).await {
                r?;
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let dir = confdir(
        base,
        "big",
        "/big",
        "{% for kv in gets(pattern=\"/big/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
    )?;
    let dest = dir.path().join("big.out");
    let backend = ZookeeperBackend::new(ZookeeperConfig {
        nodes: vec![server.address()],
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
            &["--backend", "zookeeper", "--node", &server.address()],
            dir.path(),
            &dest,
        )?;
        if i >= 2 {
            walls.push(wall);
            loads.push(load);
        }
    }
    walls.sort();
    loads.sort();
    println!("\n== --onetime over 10,000 znodes ({runs} runs)");
    println!(
        "sidekick --onetime, wall:            median {}  min {}",
        ms(percentile(&walls, 0.5)),
        ms(walls[0])
    );
    println!(
        "backend alone (session + tree read): median {}  min {}",
        ms(percentile(&loads, 0.5)),
        ms(loads[0])
    );
    Ok(())
}
