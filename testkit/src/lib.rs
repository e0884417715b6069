//! Test servers and helpers shared by sidekick's tests and benchmarks, written
//! once here instead of being included by `#[path]` into every test crate.
//!
//! - [`consul`]: an in-process Consul agent (or a real one), and the writes a
//!   test makes to it.
//! - [`kubernetes`]: a Kubernetes API test server (or a real cluster).
//! - [`etcd`]: a real, throw-away etcd process.
//! - [`zookeeper`]: a real, throw-away ZooKeeper (Debian's package) and
//!   blocking sessions to write to it.
//! - [`vault`]: an in-process Vault server (or a real one).
//! - [`redis`]: a real, throw-away redis-server process.
//! - [`bench`]: what the backends' benchmark programs share.
//! - [`dns`]: a tiny DNS server for `lookupSRV`.
//! - [`tls`]: a CA with server and client certificates (rcgen).
//! - [`process`], [`net`], [`temp`], [`wait`]: finding a server binary (a
//!   failure under `CI=true`, a skip elsewhere), free ports, temp dirs, polling.
//! - `http` (with `consul` or `etcd`): a blocking HTTP/1.1 client for their APIs.
//!
//! Each server is behind a cargo feature of the same name, so a test crate
//! builds only what it talks to. Test code: it panics on failure, which is how
//! a test fails.

// Test-only crate: a panic is a failed test, so unwrap/expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(any(feature = "consul", feature = "vault"))]
pub mod acceptor;
pub mod bench;
#[cfg(feature = "consul")]
pub mod consul;
#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(any(feature = "consul", feature = "etcd", feature = "vault"))]
pub mod http;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod net;
pub mod process;
#[cfg(feature = "redis")]
pub mod redis;
pub mod temp;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "vault")]
pub mod vault;
pub mod wait;
#[cfg(feature = "zookeeper")]
pub mod zookeeper;
