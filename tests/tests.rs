//! The binary's end-to-end tests, one test binary with a module per area (as
//! ripgrep's `tests/tests.rs`): each runs the real `sidekick` in a temporary
//! confdir through [`harness`]. Protocol test servers (Consul, Kubernetes,
//! etcd, DNS) come from `sidekick-testkit`, shared with the backend crates.
//!
//! `autotests = false` in Cargo.toml: a new `tests/NAME.rs` runs once it is
//! listed below (`mod NAME;`). Fixtures stay in `tests/golden/` and
//! `tests/fixtures/`. One area: `cargo test --test tests golden::`.

// Test code: a panic is a failed test, so unwrap/expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

// One module per area; keep the list sorted.
mod confd;
#[cfg(feature = "consul")]
mod consul;
mod dev;
mod errors;
#[cfg(feature = "etcd")]
mod etcd;
mod executor;
mod faults;
mod functions;
mod golden;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod ops;
mod pipeline;
#[cfg(feature = "rancher")]
mod rancher;
#[cfg(feature = "redis")]
mod redis;
mod settings;
#[cfg(all(feature = "etcd", feature = "vault"))]
mod sources;
mod tools;
#[cfg(feature = "vault")]
mod vault;
mod watch;
#[cfg(feature = "zookeeper")]
mod zookeeper;
