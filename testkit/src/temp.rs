//! Temporary directories for test servers and confdirs, removed on drop.

use std::path::Path;

use tempfile::TempDir;

/// A fresh temp dir named `<prefix>...`.
pub fn dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir")
}

/// A fresh temp dir in RAM (`/dev/shm`) when there is one, else like [`dir`]:
/// for servers that fsync every write (etcd), which a disk makes slow.
pub fn ram_dir(prefix: &str) -> TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/dev/shm")
            .expect("create temp dir in /dev/shm"),
        false => dir(prefix),
    }
}
