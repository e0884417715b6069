//! Finding the binary of a real server a test starts (etcd today; redis,
//! zookeeper, prometheus as their backends come), with one rule for all:
//! under `CI=true` a missing server fails the test, elsewhere the test is
//! skipped with a note, so a laptop without the server still runs the rest.

use std::path::PathBuf;

/// Whether this is a CI run (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A server program a test needs.
#[derive(Debug, Clone, Copy)]
pub struct Server<'a> {
    /// Its name in messages (`etcd`).
    pub name: &'a str,
    /// Variable that names the binary (`ETCD_BIN`), tried first.
    pub env: &'a str,
    /// File name looked up on the `PATH` (`etcd`).
    pub program: &'a str,
    /// Paths tried last (`/usr/bin/etcd`).
    pub fallbacks: &'a [&'a str],
    /// The Debian package that installs it (`etcd-server`), for the messages.
    pub package: &'a str,
}

impl Server<'_> {
    /// The binary: `$env`, else `program` on the `PATH`, else the fallbacks.
    /// `None` (after printing a note) when there is none and `CI` is not
    /// `true`; panics under `CI=true`.
    pub fn find(&self) -> Option<PathBuf> {
        let on_path = std::env::var_os("PATH").into_iter().flat_map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(self.program))
                .collect::<Vec<_>>()
        });
        let found = std::env::var_os(self.env)
            .map(PathBuf::from)
            .into_iter()
            .chain(on_path)
            .chain(self.fallbacks.iter().map(PathBuf::from))
            .find(|path| path.is_file());
        if found.is_none() {
            let Server {
                name, env, package, ..
            } = self;
            if in_ci() {
                panic!(
                    "{name} is not installed (CI=true): install Debian's {package} or set {env}"
                );
            }
            eprintln!(
                "note: {name} is not installed; skipping this test (install {package} to run it)"
            );
        }
        found
    }
}
