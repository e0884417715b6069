//! A small DNS client for the `lookupSRV` template function.
//!
//! The standard library resolves addresses (getaddrinfo) but not SRV records, and
//! one query type does not justify a resolver crate. This sends one UDP query
//! (with EDNS0, so answers up to 4096 bytes fit) to the first `nameserver` of
//! `/etc/resolv.conf`, waits 2 s, retries once, and parses the SRV answers,
//! following name compression. Names are tried through the `search` list the
//! way glibc and Go do (`ndots`), so `lookupSRV` of a short Kubernetes service
//! name works as it does in confd. There is no TCP fallback: a truncated answer
//! is an error rather than a silently partial list.
//!
//! Test and debug hooks: `SIDEKICK_DNS_SERVER` (`127.0.0.1:5353`, `[::1]:53` or
//! a bare address for port 53) replaces the nameserver, and
//! `SIDEKICK_RESOLV_CONF` replaces the path of `resolv.conf`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable replacing the nameserver (test and debug hook).
pub(crate) const SERVER_ENV: &str = "SIDEKICK_DNS_SERVER";
/// Environment variable replacing the path of `resolv.conf` (test and debug hook).
pub(crate) const RESOLV_CONF_ENV: &str = "SIDEKICK_RESOLV_CONF";
const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// How long to wait for one answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Queries sent per name before giving up (one retry).
const ATTEMPTS: u32 = 2;

const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// UDP payload size we advertise with EDNS0, and our receive buffer.
const EDNS_PAYLOAD: u16 = 4096;

const RCODE_FORMERR: u16 = 1;
const RCODE_NXDOMAIN: u16 = 3;

/// One SRV record. The derived order (target, port, priority, weight) is the
/// order `lookupSRV` returns, so that DNS shuffling never changes a config file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Srv {
    /// Target host, fully qualified with a trailing dot (as Go returns it).
    pub target: String,
    /// Port on the target.
    pub port: u16,
    /// Priority (lower is preferred).
    pub priority: u16,
    /// Relative weight among records of the same priority.
    pub weight: u16,
}

/// Why a lookup failed. A name that does not exist is not an error: it has no
/// records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DnsError {
    /// `resolv.conf` or `SIDEKICK_DNS_SERVER` could not be used.
    #[error("{source_name}: {message}")]
    Config {
        /// The file or variable.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// The name cannot be put in a query.
    #[error("invalid name `{name}`: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Sending or receiving failed.
    #[error("nameserver {server}: {error}")]
    Io {
        /// The nameserver.
        server: SocketAddr,
        /// What the OS said.
        error: io::Error,
    },
    /// No answer came.
    #[error("nameserver {server}: no answer for {name} after {ATTEMPTS} tries of {timeout:?}")]
    Timeout {
        /// The nameserver.
        server: SocketAddr,
        /// The name queried.
        name: String,
        /// How long each try waited.
        timeout: Duration,
    },
    /// The server answered with an error code (SERVFAIL, REFUSED, ...).
    #[error("nameserver {server}: {rcode} for {name}")]
    Rcode {
        /// The nameserver.
        server: SocketAddr,
        /// The name queried.
        name: String,
        /// The response code, by name.
        rcode: String,
    },
    /// The answer could not be parsed or was truncated.
    #[error("nameserver {server}: bad answer for {name}: {reason}")]
    BadAnswer {
        /// The nameserver.
        server: SocketAddr,
        /// The name queried.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Looks up the SRV records of `_service._proto.name` (of `name` itself when
/// `service` and `proto` are both empty, as Go does), sorted by target, port,
/// priority and weight. No such name, or no SRV records, is an empty list.
pub(crate) fn lookup_srv(service: &str, proto: &str, name: &str) -> Result<Vec<Srv>, DnsError> {
    let qname = if service.is_empty() && proto.is_empty() {
        name.to_string()
    } else {
        format!("_{service}._{proto}.{name}")
    };
    ResolverConfig::from_env()?.lookup_srv(&qname, TIMEOUT)
}

/// The parts of `resolv.conf` this client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolverConfig {
    /// The nameserver queried.
    pub server: SocketAddr,
    /// Search domains, without trailing dots.
    pub search: Vec<String>,
    /// Names with fewer dots than this are tried with the search domains first.
    pub ndots: usize,
}

impl Default for ResolverConfig {
    /// glibc's defaults when `resolv.conf` is missing: the local host, no search.
    fn default() -> Self {
        ResolverConfig {
            server: SocketAddr::from((Ipv4Addr::LOCALHOST, 53)),
            search: Vec::new(),
            ndots: 1,
        }
    }
}

impl ResolverConfig {
    /// Reads `resolv.conf` (or `$SIDEKICK_RESOLV_CONF`) and applies
    /// `$SIDEKICK_DNS_SERVER`. A missing file gives glibc's defaults.
    pub(crate) fn from_env() -> Result<Self, DnsError> {
        let path = std::env::var_os(RESOLV_CONF_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RESOLV_CONF));
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => ResolverConfig::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => ResolverConfig::default(),
            Err(e) => {
                return Err(DnsError::Config {
                    source_name: path.display().to_string(),
                    message: e.to_string(),
                })
            }
        };
        if let Some(server) = std::env::var_os(SERVER_ENV) {
            let server = server.to_string_lossy();
            config.server = parse_server(&server).ok_or_else(|| DnsError::Config {
                source_name: SERVER_ENV.to_string(),
                message: format!(
                    "`{server}` is not an address (want 127.0.0.1:5353, [::1]:53 or 10.0.0.2)"
                ),
            })?;
        }
        Ok(config)
    }

    /// Parses `resolv.conf` text: the first usable `nameserver`, the last
    /// `search`/`domain` line, `options ndots:N`. Unusable lines are skipped, as
    /// glibc does.
    pub(crate) fn parse(text: &str) -> Self {
        let mut config = ResolverConfig::default();
        let mut have_server = false;
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") if !have_server => {
                    if let Some(server) = words.next().and_then(parse_nameserver) {
                        config.server = server;
                        have_server = true;
                    }
                }
                Some("search") => {
                    config.search = words.map(|d| d.trim_end_matches('.').to_string()).collect();
                }
                Some("domain") => {
                    config.search = words
                        .take(1)
                        .map(|d| d.trim_end_matches('.').to_string())
                        .collect();
                }
                Some("options") => {
                    for option in words {
                        if let Some(n) = option
                            .strip_prefix("ndots:")
                            .and_then(|n| n.parse::<usize>().ok())
                        {
                            config.ndots = n.min(15);
                        }
                    }
                }
                _ => {}
            }
        }
        config.search.retain(|d| !d.is_empty());
        config
    }

    /// The names to try for `name`, in order (Go's and glibc's search rules): a
    /// name ending in `.` as is; otherwise the search domains, with the bare name
    /// first when it has at least `ndots` dots and last when not.
    pub(crate) fn candidates(&self, name: &str) -> Vec<String> {
        if name.ends_with('.') {
            return vec![name.to_string()];
        }
        let bare = format!("{name}.");
        let dotted = name.matches('.').count() >= self.ndots;
        let mut out = Vec::with_capacity(self.search.len() + 1);
        if dotted {
            out.push(bare.clone());
        }
        out.extend(self.search.iter().map(|d| format!("{name}.{d}.")));
        if !dotted {
            out.push(bare);
        }
        out
    }

    /// Tries each candidate of `name` until one has SRV records; an empty list
    /// when none has. Errors (timeouts, SERVFAIL) stop the search.
    pub(crate) fn lookup_srv(&self, name: &str, timeout: Duration) -> Result<Vec<Srv>, DnsError> {
        for candidate in self.candidates(name) {
            let mut records = query_srv(self.server, &candidate, timeout)?;
            if !records.is_empty() {
                records.sort();
                return Ok(records);
            }
        }
        Ok(Vec::new())
    }
}

/// `SIDEKICK_DNS_SERVER`: `ip:port`, `[ipv6]:port`, or a bare address (port 53).
fn parse_server(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| parse_nameserver(text))
}

/// A `nameserver` address: IPv4, or IPv6 with an optional numeric `%scope`.
fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    let (addr, scope) = text.split_once('%')?;
    let ip = addr.parse::<Ipv6Addr>().ok()?;
    let scope = scope.parse::<u32>().ok()?;
    Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, scope)))
}

/// Queries `server` for the SRV records of the absolute name `name`. Sends with
/// EDNS0, and again without it if the server does not understand it (FORMERR).
pub(crate) fn query_srv(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<Srv>, DnsError> {
    let qname = encode_name(name)?;
    let io_err = |error| DnsError::Io { server, error };
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(io_err)?;
    // Connected, so the kernel drops datagrams from anyone but the server.
    socket.connect(server).map_err(io_err)?;

    let mut edns = true;
    let mut tries = 0;
    while tries < ATTEMPTS {
        tries += 1;
        let id = random_id();
        socket
            .send(&build_query(id, &qname, edns))
            .map_err(io_err)?;
        let Some(answer) = receive(&socket, id, timeout).map_err(io_err)? else {
            continue;
        };
        let fail = |reason| DnsError::BadAnswer {
            server,
            name: name.to_string(),
            reason,
        };
        match parse_response(&answer).map_err(fail)? {
            Response::Records(records) => return Ok(records),
            Response::NoSuchName => return Ok(Vec::new()),
            Response::Truncated => {
                return Err(fail("truncated even with EDNS0, and TCP is not supported"))
            }
            Response::Error(RCODE_FORMERR) if edns => {
                // An old server that rejects EDNS0: ask again plainly.
                edns = false;
                tries -= 1;
            }
            Response::Error(rcode) => {
                return Err(DnsError::Rcode {
                    server,
                    name: name.to_string(),
                    rcode: rcode_name(rcode),
                })
            }
        }
    }
    Err(DnsError::Timeout {
        server,
        name: name.to_string(),
        timeout,
    })
}

fn rcode_name(rcode: u16) -> String {
    match rcode {
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => format!("error code {other}"),
    }
}

/// A query id nobody can predict: std's hasher keys are random per process and
/// per `RandomState`.
fn random_id() -> u16 {
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    h.write_u32(nanos);
    (h.finish() & 0xffff) as u16
}

/// Waits up to `timeout` for the answer to query `id`; `None` on timeout. Stray
/// datagrams (late answers to an earlier try) are skipped.
fn receive(socket: &UdpSocket, id: u16, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; usize::from(EDNS_PAYLOAD)];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buf) {
            Ok(n)
                if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id && buf[2] & 0x80 != 0 =>
            {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `name` in wire format (length-prefixed labels, then a zero byte).
fn encode_name(name: &str) -> Result<Vec<u8>, DnsError> {
    let bad = |reason| DnsError::BadName {
        name: name.to_string(),
        reason,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(bad("empty name"));
    }
    let mut out = Vec::with_capacity(trimmed.len() + 2);
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("label longer than 63 bytes"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() > 255 {
        return Err(bad("name longer than 255 bytes"));
    }
    Ok(out)
}

/// A recursive SRV query for `qname` (wire format), with an EDNS0 OPT record
/// when `edns`.
fn build_query(id: u16, qname: &[u8], edns: bool) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + qname.len() + 4 + 11);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&0u16.to_be_bytes()); // ANCOUNT
    q.extend_from_slice(&0u16.to_be_bytes()); // NSCOUNT
    q.extend_from_slice(&u16::from(edns).to_be_bytes()); // ARCOUNT
    q.extend_from_slice(qname);
    q.extend_from_slice(&TYPE_SRV.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    if edns {
        q.push(0); // root owner name
        q.extend_from_slice(&TYPE_OPT.to_be_bytes());
        q.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes()); // class = payload size
        q.extend_from_slice(&0u32.to_be_bytes()); // extended rcode, version, flags
        q.extend_from_slice(&0u16.to_be_bytes()); // no options
    }
    q
}

/// What an answer says.
#[derive(Debug, PartialEq, Eq)]
enum Response {
    /// NOERROR, with these SRV records (possibly none).
    Records(Vec<Srv>),
    /// NXDOMAIN.
    NoSuchName,
    /// The TC bit is set: the records did not fit.
    Truncated,
    /// Another response code.
    Error(u16),
}

fn u16_at(buf: &[u8], pos: usize) -> Result<u16, &'static str> {
    buf.get(pos..pos + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or("message too short")
}

/// Parses a response to an SRV query.
fn parse_response(buf: &[u8]) -> Result<Response, &'static str> {
    let flags = u16_at(buf, 2)?;
    let rcode = flags & 0x000f;
    if rcode == RCODE_NXDOMAIN {
        return Ok(Response::NoSuchName);
    }
    if rcode != 0 {
        return Ok(Response::Error(rcode));
    }
    if flags & 0x0200 != 0 {
        return Ok(Response::Truncated);
    }
    let questions = u16_at(buf, 4)?;
    let answers = u16_at(buf, 6)?;
    let mut pos = 12;
    for _ in 0..questions {
        pos = read_name(buf, pos)?.1 + 4;
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        pos = read_name(buf, pos)?.1;
        let rtype = u16_at(buf, pos)?;
        let class = u16_at(buf, pos + 2)?;
        let len = usize::from(u16_at(buf, pos + 8)?);
        let start = pos + 10;
        let end = start + len;
        if end > buf.len() {
            return Err("record runs past the end of the message");
        }
        if rtype == TYPE_SRV && class == CLASS_IN {
            if len < 7 {
                return Err("SRV record too short");
            }
            let (target, after) = read_name(buf, start + 6)?;
            if after > end {
                return Err("SRV target runs past its record");
            }
            records.push(Srv {
                target,
                port: u16_at(buf, start + 4)?,
                priority: u16_at(buf, start)?,
                weight: u16_at(buf, start + 2)?,
            });
        }
        pos = end;
    }
    Ok(Response::Records(records))
}

/// Reads the (possibly compressed) name at `pos`: the name with a trailing dot
/// (`.` for the root) and the position just after it in place.
fn read_name(buf: &[u8], mut pos: usize) -> Result<(String, usize), &'static str> {
    let mut name = String::new();
    let mut after: Option<usize> = None;
    let mut jumps = 0;
    loop {
        let len = *buf
            .get(pos)
            .ok_or("name runs past the end of the message")?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                pos += 1;
                break;
            }
            0x00 => {
                let label = buf
                    .get(pos + 1..pos + 1 + usize::from(len))
                    .ok_or("name runs past the end of the message")?;
                name.push_str(&String::from_utf8_lossy(label));
                name.push('.');
                if name.len() > 255 {
                    return Err("name longer than 255 bytes");
                }
                pos += 1 + usize::from(len);
            }
            0xc0 => {
                let low = *buf
                    .get(pos + 1)
                    .ok_or("name runs past the end of the message")?;
                after.get_or_insert(pos + 2);
                jumps += 1;
                if jumps > 64 {
                    return Err("name compression loop");
                }
                pos = (usize::from(len & 0x3f) << 8) | usize::from(low);
            }
            _ => return Err("unknown label type"),
        }
    }
    if name.is_empty() {
        name.push('.');
    }
    Ok((name, after.unwrap_or(pos)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;

    /// The two records every canned answer holds: web2 (listed first, with a
    /// compressed target) and web1.
    fn expected() -> Vec<Srv> {
        vec![
            Srv {
                target: "web1.example.com.".into(),
                port: 8080,
                priority: 10,
                weight: 5,
            },
            Srv {
                target: "web2.example.com.".into(),
                port: 8081,
                priority: 20,
                weight: 0,
            },
        ]
    }

    /// Index just after the question of `query`.
    fn question_end(query: &[u8]) -> usize {
        read_name(query, 12).unwrap().1 + 4
    }

    /// An answer to `query` with `flags` and, when `records`, two SRV records:
    /// the second target is "web1" + a pointer to "example.com" in the first.
    fn answer(query: &[u8], flags: u16, records: bool) -> Vec<u8> {
        let qend = question_end(query);
        let mut r = Vec::new();
        r.extend_from_slice(&query[0..2]);
        r.extend_from_slice(&flags.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&(if records { 3u16 } else { 0 }).to_be_bytes());
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&query[12..qend]);
        if !records {
            return r;
        }
        let srv = |r: &mut Vec<u8>, prio: u16, weight: u16, port: u16, target: &[u8]| {
            r.extend_from_slice(&[0xc0, 12]); // owner: the question name
            r.extend_from_slice(&TYPE_SRV.to_be_bytes());
            r.extend_from_slice(&CLASS_IN.to_be_bytes());
            r.extend_from_slice(&300u32.to_be_bytes());
            r.extend_from_slice(&((6 + target.len()) as u16).to_be_bytes());
            r.extend_from_slice(&prio.to_be_bytes());
            r.extend_from_slice(&weight.to_be_bytes());
            r.extend_from_slice(&port.to_be_bytes());
            r.extend_from_slice(target);
        };
        // A CNAME-ish record of another type, which must be skipped.
        r.extend_from_slice(&[0xc0, 12]);
        r.extend_from_slice(&5u16.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&300u32.to_be_bytes());
        r.extend_from_slice(&2u16.to_be_bytes());
        r.extend_from_slice(&[0xc0, 12]);
        let first_target = r.len() + 2 + 2 + 2 + 4 + 2 + 6;
        srv(&mut r, 20, 0, 8081, b"\x04web2\x07example\x03com\x00");
        // "example" starts 5 bytes into the first target.
        let ptr = (first_target + 5) as u16 | 0xc000;
        let mut target = b"\x04web1".to_vec();
        target.extend_from_slice(&ptr.to_be_bytes());
        srv(&mut r, 10, 5, 8080, &target);
        r
    }

    /// How the test server treats the queries it gets.
    #[derive(Clone, Copy)]
    enum Mode {
        /// Answer with records.
        Records,
        /// Ignore the first query, answer the second.
        DropFirst,
        /// NXDOMAIN.
        NxDomain,
        /// SERVFAIL.
        ServFail,
        /// FORMERR to queries with EDNS0, records to others.
        NoEdns,
        /// Set the TC bit.
        Truncate,
    }

    /// Starts a server on `bind` answering every query per `mode`; returns its
    /// address and a count of the queries it saw.
    fn spawn(bind: &str, mode: Mode) -> Option<(SocketAddr, Arc<AtomicUsize>)> {
        let socket = UdpSocket::bind(bind).ok()?;
        let addr = socket.local_addr().ok()?;
        let seen = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&seen);
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let query = &buf[..n];
                let nth = count.fetch_add(1, Ordering::SeqCst);
                let has_edns = u16_at(query, 10).unwrap() == 1;
                assert_eq!(u16_at(query, 2).unwrap(), 0x0100, "RD set");
                let reply = match mode {
                    Mode::Records => answer(query, 0x8180, true),
                    Mode::DropFirst if nth == 0 => continue,
                    Mode::DropFirst => answer(query, 0x8180, true),
                    Mode::NxDomain => answer(query, 0x8183, false),
                    Mode::ServFail => answer(query, 0x8182, false),
                    Mode::NoEdns if has_edns => answer(query, 0x8181, false),
                    Mode::NoEdns => answer(query, 0x8180, true),
                    Mode::Truncate => answer(query, 0x8380, false),
                };
                let _ = socket.send_to(&reply, from);
            }
        });
        Some((addr, seen))
    }

    /// A server on 127.0.0.1 answering every SRV query with [`expected`].
    pub(crate) fn spawn_srv_server() -> SocketAddr {
        spawn("127.0.0.1:0", Mode::Records)
            .expect("bind test server")
            .0
    }

    const SHORT: Duration = Duration::from_millis(300);

    #[test]
    fn queries_and_parses_compressed_answers() {
        let (addr, _) = spawn("127.0.0.1:0", Mode::Records).unwrap();
        let mut got = query_srv(addr, "_http._tcp.example.com.", TIMEOUT).unwrap();
        // Answer order is the server's; sorting is lookup_srv's job.
        assert_eq!(got[0].target, "web2.example.com.");
        got.sort();
        assert_eq!(got, expected());
    }

    #[test]
    fn lookup_sorts_and_follows_search_rules() {
        let (addr, seen) = spawn("127.0.0.1:0", Mode::Records).unwrap();
        let config = ResolverConfig {
            server: addr,
            search: vec!["svc.cluster.local".into()],
            ndots: 5,
        };
        assert_eq!(
            config.lookup_srv("_http._tcp.web", SHORT).unwrap(),
            expected()
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn retries_once_after_a_timeout() {
        let (addr, seen) = spawn("127.0.0.1:0", Mode::DropFirst).unwrap();
        let got = query_srv(addr, "_http._tcp.example.com", SHORT).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn nxdomain_is_empty_and_tries_every_candidate() {
        let (addr, seen) = spawn("127.0.0.1:0", Mode::NxDomain).unwrap();
        let config = ResolverConfig {
            server: addr,
            search: vec!["a.example".into(), "b.example".into()],
            ndots: 1,
        };
        assert!(config.lookup_srv("_x._tcp.web", SHORT).unwrap().is_empty());
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn servfail_is_an_error() {
        let (addr, _) = spawn("127.0.0.1:0", Mode::ServFail).unwrap();
        let err = query_srv(addr, "x.example.", SHORT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SERVFAIL for x.example."), "{err}");
    }

    #[test]
    fn falls_back_without_edns_on_formerr() {
        let (addr, seen) = spawn("127.0.0.1:0", Mode::NoEdns).unwrap();
        assert_eq!(query_srv(addr, "x.example.", SHORT).unwrap().len(), 2);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn truncated_is_an_error() {
        let (addr, _) = spawn("127.0.0.1:0", Mode::Truncate).unwrap();
        let err = query_srv(addr, "x.example.", SHORT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn silence_is_a_timeout() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let err = query_srv(addr, "x.example.", Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, DnsError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("after 2 tries of 100ms"), "{err}");
    }

    #[test]
    fn ipv6_nameserver() {
        // Skipped where the host has no IPv6 loopback.
        let Some((addr, _)) = spawn("[::1]:0", Mode::Records) else {
            return;
        };
        assert_eq!(query_srv(addr, "x.example.", SHORT).unwrap().len(), 2);
    }

    #[test]
    fn rejects_compression_loops_and_short_messages() {
        let mut msg = vec![0u8; 12];
        msg[5] = 1; // one question
        msg.extend_from_slice(&[0xc0, 12]); // points at itself
        assert_eq!(parse_response(&msg), Err("name compression loop"));
        assert_eq!(parse_response(&[0, 1, 0x81]), Err("message too short"));
        let mut msg = vec![0u8; 12];
        msg[5] = 1;
        msg.extend_from_slice(&[5, b'a']);
        assert!(parse_response(&msg).is_err());
    }

    #[test]
    fn encodes_names() {
        assert_eq!(encode_name("a.bc.").unwrap(), b"\x01a\x02bc\x00");
        assert_eq!(encode_name("a.bc").unwrap(), b"\x01a\x02bc\x00");
        assert!(encode_name("a..b").is_err());
        assert!(encode_name("").is_err());
        assert!(encode_name(&"x".repeat(64)).is_err());
        assert!(encode_name(&["abcdefgh"; 40].join(".")).is_err());
    }

    #[test]
    fn parses_resolv_conf() {
        let c = ResolverConfig::parse(
            "# comment\nnameserver bogus\nnameserver 10.0.0.2 ; trailing\nnameserver 10.0.0.3\nsearch a.example b.example.\noptions rotate ndots:5\n",
        );
        assert_eq!(c.server, "10.0.0.2:53".parse().unwrap());
        assert_eq!(c.search, ["a.example", "b.example"]);
        assert_eq!(c.ndots, 5);

        let c = ResolverConfig::parse("nameserver fe80::1%2\ndomain corp.example\n");
        assert_eq!(c.server, "[fe80::1%2]:53".parse().unwrap());
        assert_eq!(c.search, ["corp.example"]);
        assert_eq!(c.ndots, 1);

        assert_eq!(ResolverConfig::parse(""), ResolverConfig::default());
        assert_eq!(
            ResolverConfig::parse("nameserver ::1").server,
            "[::1]:53".parse().unwrap()
        );
    }

    #[test]
    fn parses_server_override() {
        assert_eq!(
            parse_server("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse_server("[::1]:53"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(
            parse_server("10.0.0.2"),
            Some("10.0.0.2:53".parse().unwrap())
        );
        assert_eq!(parse_server("nope"), None);
    }

    #[test]
    fn candidate_names() {
        let c = ResolverConfig {
            server: "127.0.0.1:53".parse().unwrap(),
            search: vec!["ns.svc".into(), "svc".into()],
            ndots: 2,
        };
        assert_eq!(c.candidates("abs.name."), ["abs.name."]);
        assert_eq!(
            c.candidates("a.b.c"),
            ["a.b.c.", "a.b.c.ns.svc.", "a.b.c.svc."]
        );
        assert_eq!(c.candidates("a.b"), ["a.b.ns.svc.", "a.b.svc.", "a.b."]);
        assert_eq!(c.candidates("a"), ["a.ns.svc.", "a.svc.", "a."]);
    }

    #[test]
    fn resolv_conf_from_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.1\nsearch x.example\n").unwrap();
        // Only this test sets SIDEKICK_RESOLV_CONF; the others use explicit configs
        // or a trailing-dot name, which ignores the search list.
        std::env::set_var(RESOLV_CONF_ENV, &path);
        let c = ResolverConfig::from_env().unwrap();
        std::env::remove_var(RESOLV_CONF_ENV);
        assert_eq!(c.search, ["x.example"]);
        if std::env::var_os(SERVER_ENV).is_none() {
            assert_eq!(c.server, "192.0.2.1:53".parse().unwrap());
        }
    }
}
