//! systemd's notify protocol (`sd_notify`): `READY=1` once the first full
//! render is done, so a `Type=notify` unit starts what depends on the files
//! only then, and `WATCHDOG=1` pings while the event loop runs, when the unit
//! sets `WatchdogSec=`. A datagram to `$NOTIFY_SOCKET`; nothing when unset.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The socket systemd listens on, if any.
fn socket_path() -> Option<std::ffi::OsString> {
    std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty())
}

/// Sends `state` ("READY=1", "WATCHDOG=1", ...). Best effort: a failure is
/// logged at debug level, since systemd may simply not be listening.
pub(crate) fn notify(state: &str) {
    let Some(path) = socket_path() else { return };
    if let Err(e) = send(&path, state) {
        tracing::debug!(socket = ?path, "sd_notify {state}: {e}");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    // `@name` is a socket in the abstract namespace.
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as systemd
/// advises, when the watchdog is meant for this process (`$WATCHDOG_PID`
/// unset or ours).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    socket_path()?;
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
