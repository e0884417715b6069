//! Loopback ports for test servers.

use std::net::TcpListener;

/// A loopback port that was free a moment ago (someone may take it before the
/// caller binds it: servers started on it retry on another).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
