//! Core benchmarks (issue 3): one template over 10,000 keys (`gets` + loop),
//! in the Tera engine and in the Go engine (issue 14: Go <= 1.5x Tera), and the whole `--onetime` run of the real binary on a 10,000-key YAML file.
//! Prints medians and p99 over repeated runs, the peak RSS of the onetime run
//! and the binary's size. Run with `cargo bench --bench core`.

// Benchmark: a panic ends the run with its message, which is what it should do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sidekick::render::{TemplateEngine, View};
use sidekick_backend::KeyTree;

const KEYS: usize = 10_000;
const TEMPLATE: &str = "upstream app {\n{% for kv in gets(pattern=\"/app/upstreams/*\") %}    server {{ kv.value }}; # {{ kv.key | base }}\n{% endfor %}}\n";
/// The same template in Go's syntax, as confd writes it.
const GO_TEMPLATE: &str = "upstream app {\n{{range gets \"/app/upstreams/*\"}}    server {{.Value}}; # {{base .Key}}\n{{end}}}\n";

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("conf.d")).expect("mkdir");
    std::fs::create_dir_all(root.join("templates")).expect("mkdir");
    std::fs::write(root.join("templates/big.tmpl"), TEMPLATE).expect("write template");
    std::fs::write(root.join("templates/big-go.tmpl"), GO_TEMPLATE).expect("write template");
    let dest = root.join("out/big.conf");
    std::fs::write(
        root.join("conf.d/big.toml"),
        format!(
            "[template]\nsrc = \"big.tmpl\"\ndest = \"{}\"\nkeys = [\"/app/upstreams\"]\n",
            dest.display()
        ),
    )
    .expect("write resource");
    let mut yaml = String::from("app:\n  upstreams:\n");
    let mut tree = KeyTree::new();
    for i in 0..KEYS {
        let value = format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256);
        let _ = writeln!(yaml, "    host{i:05}: \"{value}\"");
        tree.insert(&format!("/app/upstreams/host{i:05}"), value);
    }
    std::fs::write(root.join("data.yaml"), &yaml).expect("write data");

    let tera = bench_render(root, &tree, TemplateEngine::Tera, "big.tmpl");
    let go = bench_render(root, &tree, TemplateEngine::Go, "big-go.tmpl");
    println!("  go / tera median: {:.2}x (target <= 1.5x)", go / tera);
    bench_onetime(root, &dest, "tera");
    // The same run with the Go template.
    std::fs::write(
        root.join("conf.d/big.toml"),
        format!(
            "[template]\nsrc = \"big-go.tmpl\"\ndest = \"{}\"\nkeys = [\"/app/upstreams\"]\nengine = \"go\"\n",
            dest.display()
        ),
    )
    .expect("write resource");
    bench_onetime(root, &dest, "go");
}

/// Renders `src` with `engine` 200 times; returns the median in ms.
fn bench_render(root: &Path, tree: &KeyTree, engine: TemplateEngine, src: &str) -> f64 {
    let renderer =
        sidekick::render::load(engine, &root.join("templates"), src).expect("template parses");
    let view = Arc::new(View {
        keys: Arc::new(tree.clone()),
        prefix: "/".into(),
        visible: vec!["/app/upstreams".into()],
        catalog: None,
        backend: "bench",
        limits: Default::default(),
        named: Vec::new(),
    });
    // Warm up once, then measure.
    let out = renderer.render(Arc::clone(&view)).expect("renders");
    assert_eq!(out.lines().count(), KEYS + 2);
    let mut times = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let out = renderer.render(Arc::clone(&view)).expect("renders");
        times.push(start.elapsed());
        std::hint::black_box(out);
    }
    report(
        &format!(
            "render 10,000 keys (gets + loop), {} engine",
            engine.as_str()
        ),
        &mut times,
    )
}

fn bench_onetime(root: &Path, dest: &Path, engine: &str) {
    let bin = env!("CARGO_BIN_EXE_sidekick");
    let mut times = Vec::new();
    for _ in 0..50 {
        let _ = std::fs::remove_file(dest);
        let start = Instant::now();
        let status = Command::new(bin)
            .args(["--onetime", "--log-level", "warn", "--confdir"])
            .arg(root)
            .arg("--file")
            .arg(root.join("data.yaml"))
            .status()
            .expect("sidekick runs");
        times.push(start.elapsed());
        assert!(status.success(), "sidekick --onetime failed");
    }
    report(
        &format!("--onetime, 10,000-key YAML, write included, {engine} engine"),
        &mut times,
    );
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    println!(
        "  peak RSS of the --onetime runs: {:.1} MB",
        usage.max_rss() as f64 / 1024.0
    );
    if let Ok(meta) = std::fs::metadata(bin) {
        println!(
            "  binary: {} ({:.1} MB)",
            bin,
            meta.len() as f64 / 1_048_576.0
        );
    }
}

/// Prints median, p99 and min; returns the median in ms.
fn report(what: &str, times: &mut [Duration]) -> f64 {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    println!(
        "{what}: median {:.2} ms, p99 {:.2} ms, min {:.2} ms over {} runs",
        ms(times[times.len() / 2]),
        ms(p99),
        ms(times[0]),
        times.len()
    );
    ms(times[times.len() / 2])
}
