//! etcd v3 backend (in progress).
