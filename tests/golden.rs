//! Golden-file tests: every case under `tests/golden/<case>/` is rendered with
//! `--onetime` and its outputs compared with `expected/`; plus the README's
//! nginx example. `UPDATE_GOLDEN=1 cargo test --test tests golden::` rewrites the
//! expected files (check the diff by eye before committing).
//!
//! A case holds `conf.d/`, `templates/`, `data.yaml`, optionally
//! `services.yaml` (passed as `--services-file`) and `args` (extra flags, one
//! per line). In every file `@OUT@` becomes the temporary output directory and
//! `@DIR@` the temporary confdir. The run gets `GOLDEN_GREETING` set,
//! `GOLDEN_UNSET_VARIABLE` unset and `SIDEKICK_DNS_SERVER` pointing at the
//! test DNS server of `sidekick_testkit::dns`. Every file written under `@OUT@` must match
//! `expected/`, and every expected file must have been written.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::{copy_tree, Dir, TestCommand};
use sidekick_testkit::dns::DnsServer;

fn golden_dir() -> PathBuf {
    crate::harness::repo_root().join("tests/golden")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Files under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Compares every file of `actual_dir` with `expected_dir` (or, when
/// updating, replaces `expected_dir` with them).
fn compare_tree(case: &str, actual_dir: &Path, expected_dir: &Path) {
    let actual = files_under(actual_dir);
    if updating() {
        let _ = fs::remove_dir_all(expected_dir);
        for rel in &actual {
            let text = fs::read_to_string(actual_dir.join(rel)).unwrap();
            crate::harness::write_file(&expected_dir.join(rel), &text);
        }
        eprintln!("{case}: updated {} expected file(s)", actual.len());
        return;
    }
    let expected = files_under(expected_dir);
    assert!(
        !expected.is_empty(),
        "{case}: no expected files in {}; run with UPDATE_GOLDEN=1 to create them",
        expected_dir.display()
    );
    assert_eq!(
        actual, expected,
        "{case}: files written (left) differ from expected files (right)"
    );
    let mut mismatches = Vec::new();
    for rel in &actual {
        let got = fs::read_to_string(actual_dir.join(rel)).unwrap();
        let want = fs::read_to_string(expected_dir.join(rel)).unwrap();
        if got != want {
            mismatches.push(format!(
                "--- {case}/expected/{rel}\n{want}\n+++ rendered {rel}\n{got}\n",
                rel = rel.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{case}: output differs from golden (UPDATE_GOLDEN=1 rewrites it):\n{}",
        mismatches.join("\n")
    );
}

/// Runs one case and checks its outputs.
fn run_case(case: &str) {
    let src = golden_dir().join(case);
    assert!(src.join("conf.d").is_dir(), "no case {}", src.display());
    let dir = Dir::new();
    let vars = BTreeMap::from([
        ("OUT", dir.out_dir()),
        ("DIR", dir.root().display().to_string()),
    ]);
    for sub in ["conf.d", "templates"] {
        copy_tree(&src.join(sub), &dir.path(sub), &vars);
    }
    for file in ["data.yaml", "services.yaml", "args"] {
        if src.join(file).exists() {
            let text = fs::read_to_string(src.join(file)).unwrap();
            dir.write(file, &text);
        }
    }
    // No search domains: the DNS test server only knows absolute names.
    dir.write("resolv.conf", "options ndots:1\n");
    let dns = DnsServer::start();

    let mut cmd = dir.onetime();
    if dir.path("services.yaml").exists() {
        cmd.arg("--services-file").arg(dir.path("services.yaml"));
    }
    if let Some(args) = dir.try_read("args") {
        cmd.args(args.lines().map(str::trim).filter(|l| !l.is_empty()));
    }
    cmd.env("GOLDEN_GREETING", "hello from the environment")
        .env_remove("GOLDEN_UNSET_VARIABLE")
        .env("SIDEKICK_DNS_SERVER", dns.addr())
        .env("SIDEKICK_RESOLV_CONF", dir.path("resolv.conf"));
    let out = cmd.output();
    assert!(out.status.success(), "{case}: sidekick failed:{out}");
    assert!(out.stdout.is_empty(), "{case}: unexpected stdout:{out}");
    dir.assert_no_stage_files();
    compare_tree(case, &dir.path("out"), &src.join("expected"));
}

/// Cases run by this file; `every_case_is_listed` keeps it in step with the
/// directory.
const CASES: &[&str] = &[
    "dns",
    "env-file",
    "filters",
    "include",
    "keys",
    "output-format",
    "seq",
    "services",
];

macro_rules! golden {
    ($($name:ident => $case:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_case($case);
            }
        )*
    };
}

golden! {
    golden_dns => "dns",
    golden_env_file => "env-file",
    golden_filters => "filters",
    golden_include => "include",
    golden_keys => "keys",
    golden_output_format => "output-format",
    golden_seq => "seq",
    golden_services => "services",
}

#[test]
fn every_case_is_listed() {
    let mut found: Vec<String> = fs::read_dir(golden_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("conf.d").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(
        found, CASES,
        "add new golden cases to CASES and golden!{{}}"
    );
}

/// The README's first command (`--onetime --diff`, file backend), run from a
/// directory laid out like the repository (the example's dest paths are
/// relative to it).
#[test]
fn readme_example_renders_golden_output() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    copy_tree(
        &crate::harness::repo_root().join("examples/nginx"),
        &root.join("examples/nginx"),
        &BTreeMap::new(),
    );
    // A stale out/ from someone running the example in the repository would
    // make this test pass vacuously.
    let _ = fs::remove_dir_all(root.join("examples/nginx/out"));
    let readme = [
        "--onetime",
        "--diff",
        "--confdir",
        "examples/nginx",
        "--file",
        "examples/nginx/data.yaml",
        "--services-file",
        "examples/nginx/services.yaml",
    ];
    let out = TestCommand::new(root).args(readme).run();
    out.assert_stdout_has(&[
        "+++ examples/nginx/out/nginx.conf (new)",
        "+++ examples/nginx/out/upstream.conf (new)",
        "+    server 10.0.1.1:80; # node-a",
    ]);
    compare_tree(
        "example-nginx",
        &root.join("examples/nginx/out"),
        &golden_dir().join("example-nginx/expected"),
    );
    // A second run finds nothing to do.
    let out = TestCommand::new(root).args(readme).run();
    assert!(out.stdout.is_empty(), "second run changed something:{out}");
}
