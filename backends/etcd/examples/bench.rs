//! Benchmark of sidekick's etcd backend against a local etcd (run by
//! `benches/etcd.sh`, which builds both in release mode):
//!
//! 1. put -> destination file latency, median and p99 over `CHANGES` puts,
//!    next to the put's own gRPC round trip measured in the same run;
//! 2. CPU ticks and RSS of an idle `--watch` with 100 watched keys;
//! 3. wall time of `--onetime` over 10,000 keys, each run paired with the
//!    same load by the backend alone (in this process);
//!
//! and, to tell the backend's share from the core's, the same latency measured
//! on the backend alone.
//!
//! Usage: `bench SIDEKICK_BINARY` with optional environment: `CHANGES` (300),
//! `IDLE_SECS` (60), `ONETIME_RUNS` (20), `BENCH_DIR` (where confdirs and
//! destinations go; default: the system temp dir).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};
use futures::StreamExt;
use sidekick_backend::{Backend, Interest, Update};
use sidekick_backend_etcd::{EtcdBackend, EtcdConfig};
use sidekick_testkit::bench::{
    self, confdir, cpu_ticks, env_num, ms, percentile, status_kb, time_to_file, wait_for, Result,
    Stop,
};
use sidekick_testkit::etcd::Etcd;
use sidekick_testkit::wait;

fn main() -> Result<()> {
    let sidekick = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: bench SIDEKICK_BINARY")?,
    );
    let Some(etcd) = Etcd::start() else {
        return Err("etcd is not installed".into());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut client = runtime.block_on(Client::connect([etcd.url()], None))?;
    let base = match std::env::var_os("BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir(),
    };
    println!(
        "etcd {} (data on tmpfs); confdirs under {}",
        etcd.url(),
        base.display()
    );

    latency(&runtime, &mut client, &etcd, &sidekick, &base)?;
    backend_latency(&runtime, &mut client, &etcd)?;
    idle(&runtime, &mut client, &etcd, &sidekick, &base)?;
    onetime(&runtime, &mut client, &etcd, &sidekick, &base)?;
    Ok(())
}

fn interest(prefix: &str) -> Interest {
    Interest {
        prefixes: vec![prefix.to_string()],
        services: false,
    }
}

/// The backend alone, in this process: put -> update out of the watch stream.
/// What the binary adds on top of this is the core's (apply, render, write).
fn backend_latency(
    runtime: &tokio::runtime::Runtime,
    client: &mut Client,
    etcd: &Etcd,
) -> Result<()> {
    let changes = env_num("CHANGES", 300) as usize;
    let backend = EtcdBackend::new(EtcdConfig {
        endpoints: vec![etcd.url()],
        ..Default::default()
    })?;
    let interest = interest("/inproc");
    let (to_update, round_trip) = runtime.block_on(async {
        let mut stream = backend.watch(&interest).ok_or("no watch")?;
        // The first item is the watch's own read (a snapshot); changes follow.
        stream.next().await.ok_or("stream ended")??;
        let mut to_update = Vec::with_capacity(changes);
        let mut round_trip = Vec::with_capacity(changes);
        for i in 0..changes + 20 {
            let value = format!("v{i}");
            let started = Instant::now();
            // The put and the stream run concurrently, as in sidekick.
            let mut put = std::pin::pin!(client.put("/inproc/v", value.as_str(), None));
            let mut put_done = None;
            let mut seen = None;
            while put_done.is_none() || seen.is_none() {
                tokio::select! {
                    r = &mut put, if put_done.is_none() => {
                        r?;
                        put_done = Some(started.elapsed());
                    }
                    item = stream.next(), if seen.is_none() => {
                        let batch = item.ok_or("stream ended")??;
                        let hit = batch.iter().any(|u| {
                            matches!(u, Update::Put { value: v, .. } if *v == value)
                        });
                        if hit {
                            seen = Some(started.elapsed());
                        }
                    }
                }
            }
            if i >= 20 {
                to_update.extend(seen);
                round_trip.extend(put_done);
            }
        }
        Ok::<_, Box<dyn std::error::Error>>((to_update, round_trip))
    })?;
    let (mut to_update, mut round_trip) = (to_update, round_trip);
    to_update.sort();
    round_trip.sort();
    println!("\n== backend alone (in-process watch stream), {changes} changes");
    println!(
        "put round trip:         median {}  p99 {}",
        ms(percentile(&round_trip, 0.5)),
        ms(percentile(&round_trip, 0.99))
    );
    println!(
        "put -> stream update:   median {}  p99 {}",
        ms(percentile(&to_update, 0.5)),
        ms(percentile(&to_update, 0.99))
    );
    Ok(())
}

fn spawn_watch(sidekick: &Path, etcd: &Etcd, dir: &Path) -> Result<Child> {
    bench::spawn_watch(
        sidekick,
        &["--backend", "etcdv3", "--node", &etcd.url()],
        dir,
    )
}

fn latency(
    runtime: &tokio::runtime::Runtime,
    client: &mut Client,
    etcd: &Etcd,
    sidekick: &Path,
    base: &Path,
) -> Result<()> {
    let changes = env_num("CHANGES", 300) as usize;
    let dir = confdir(base, "lat", "/lat", "{{ getv(key=\"/lat/v\") }}\n")?;
    let dest = dir.path().join("lat.out");
    runtime.block_on(client.put("/lat/v", "start", None))?;
    let _sidekick = Stop(spawn_watch(sidekick, etcd, dir.path())?);
    wait_for(&dest, "start\n", Duration::from_secs(10))?;

    let mut to_file = Vec::with_capacity(changes);
    let mut round_trip = Vec::with_capacity(changes);
    let mut buf = String::new();
    for i in 0..changes + 20 {
        let value = format!("v{i}");
        let expected = format!("{value}\n");
        let started = Instant::now();
        runtime.block_on(client.put("/lat/v", value.as_str(), None))?;
        let put_done = started.elapsed();
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
            round_trip.push(put_done);
        }
    }
    to_file.sort();
    round_trip.sort();
    let (f50, f99) = (percentile(&to_file, 0.5), percentile(&to_file, 0.99));
    let (r50, r99) = (percentile(&round_trip, 0.5), percentile(&round_trip, 0.99));
    println!(
        "\n== put -> file latency over {changes} changes (dest in {})",
        base.display()
    );
    println!(
        "put round trip (gRPC):  median {}  p99 {}",
        ms(r50),
        ms(r99)
    );
    println!(
        "put -> dest file:       median {}  p99 {}",
        ms(f50),
        ms(f99)
    );
    println!("difference of medians:  {}", ms(f50.saturating_sub(r50)));
    Ok(())
}

fn idle(
    runtime: &tokio::runtime::Runtime,
    client: &mut Client,
    etcd: &Etcd,
    sidekick: &Path,
    base: &Path,
) -> Result<()> {
    let secs = env_num("IDLE_SECS", 60);
    let mut txn_ops = Vec::new();
    for i in 0..100 {
        txn_ops.push(TxnOp::put(
            format!("/idle/k{i:03}"),
            format!("value {i}"),
            None,
        ));
    }
    runtime.block_on(client.txn(Txn::new().and_then(txn_ops)))?;
    let dir = confdir(
        base,
        "idle",
        "/idle",
        "{% for kv in gets(pattern=\"/idle/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
    )?;
    let dest = dir.path().join("idle.out");
    let child = spawn_watch(sidekick, etcd, dir.path())?;
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

fn onetime(
    runtime: &tokio::runtime::Runtime,
    client: &mut Client,
    etcd: &Etcd,
    sidekick: &Path,
    base: &Path,
) -> Result<()> {
    let runs = env_num("ONETIME_RUNS", 20) as usize;
    // 10,000 keys, 100 per transaction (etcd allows 128 operations in one).
    for chunk in 0..100 {
        let ops: Vec<TxnOp> = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                TxnOp::put(format!("/big/k{n:05}"), format!("value-{n}"), None)
            })
            .collect();
        runtime.block_on(client.txn(Txn::new().and_then(ops)))?;
    }
    let dir = confdir(
        base,
        "big",
        "/big",
        "{% for kv in gets(pattern=\"/big/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
    )?;
    let dest = dir.path().join("big.out");
    // Each run is paired with a load by the backend alone (connect + one
    // ranged read, in this process): etcd's own time for 10,000 keys moves by
    // several ms from run to run, and pairing keeps that drift out of the
    // difference.
    let backend = EtcdBackend::new(EtcdConfig {
        endpoints: vec![etcd.url()],
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
            &["--backend", "etcdv3", "--node", &etcd.url()],
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
        "backend alone (connect + one ranged read): median {}  min {}  p90 {}",
        ms(percentile(&loads, 0.5)),
        ms(loads[0]),
        ms(percentile(&loads, 0.9))
    );
    println!(
        "difference of medians:         {}",
        ms(percentile(&walls, 0.5).saturating_sub(percentile(&loads, 0.5)))
    );
    // Peak RSS of one run, when GNU time is there to tell.
    if Path::new("/usr/bin/time").exists() {
        let out = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(sidekick)
            .args(["--backend", "etcdv3", "--node", &etcd.url(), "--onetime"])
            .arg("--confdir")
            .arg(dir.path())
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stderr);
        if let Some(kb) = text
            .lines()
            .last()
            .and_then(|l| l.trim().parse::<u64>().ok())
        {
            println!("peak RSS of one run: {kb} kB");
        }
    }
    Ok(())
}
