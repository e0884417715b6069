//! What the backends that speak HTTP through reqwest (Consul, Vault) share
//! beyond TLS (see [`crate::tls::TlsFiles::apply_to`]).

use std::time::Duration;

/// A short description of a transport failure: the innermost cause (such as
/// "Connection refused (os error 111)"), not reqwest's URL-laden summary;
/// `timeout` is the one the request had, named when it ran out.
pub fn transport_message(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let cause = inner.to_string();
    if e.is_connect() {
        format!("cannot connect: {cause}")
    } else {
        cause
    }
}
