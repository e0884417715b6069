//! A tiny DNS server on 127.0.0.1 for `lookupSRV` tests (point sidekick at it
//! with `SIDEKICK_DNS_SERVER`). It knows a fixed zone and answers every SRV
//! query for a known name with its records in a shuffled order that changes
//! from one answer to the next (the first answer is never sorted), so a test
//! can show that sidekick sorts them. A queries get A records the same way;
//! unknown names get NXDOMAIN, other types an empty answer.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const TYPE_A: u16 = 1;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

/// One SRV record of the zone.
#[derive(Debug, Clone)]
pub struct Srv {
    /// Lower is tried first.
    pub priority: u16,
    /// Share among records of the same priority.
    pub weight: u16,
    /// The service's port.
    pub port: u16,
    /// The host name serving it.
    pub target: &'static str,
}

/// The zone: SRV records by name (absolute, without trailing dot) and A records.
pub fn zone_srv(name: &str) -> Option<Vec<Srv>> {
    match name {
        // Sorted (target, port, priority, weight) these are web1 then web2.
        "_http._tcp.sidekick.test" => Some(vec![
            Srv {
                priority: 10,
                weight: 5,
                port: 8080,
                target: "web1.sidekick.test",
            },
            Srv {
                priority: 20,
                weight: 0,
                port: 8081,
                target: "web2.sidekick.test",
            },
        ]),
        _ => None,
    }
}

/// A records of the zone.
pub fn zone_a(name: &str) -> Option<Vec<[u8; 4]>> {
    match name {
        "web1.sidekick.test" => Some(vec![[10, 9, 0, 1]]),
        "web2.sidekick.test" => Some(vec![[10, 9, 0, 2], [10, 9, 0, 3]]),
        _ => None,
    }
}

/// A running server; stops (its thread exits) when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    /// Binds 127.0.0.1 on a free port and starts answering.
    pub fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS test server");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set read timeout");
        let addr = socket.local_addr().expect("local addr");
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (Arc::clone(&queries), Arc::clone(&stop));
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let nth = count.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = answer(&buf[..n], nth) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        DnsServer {
            addr,
            queries,
            stop,
        }
    }

    /// `127.0.0.1:PORT`, the value for `SIDEKICK_DNS_SERVER`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// How many queries it received.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn u16_at(buf: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(pos)?, *buf.get(pos + 1)?]))
}

/// The question's name (lowercase, no trailing dot) and the index after it.
/// Queries are never compressed.
fn read_qname(buf: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*buf.get(pos)?);
        if len == 0 {
            return Some((labels.join(".").to_ascii_lowercase(), pos + 1));
        }
        if len & 0xc0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(buf.get(pos + 1..pos + 1 + len)?).into_owned());
        pos += 1 + len;
    }
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// `items` reversed on even-numbered answers (the first included), as given on
/// odd ones: never sorted on the first answer since the zone lists them sorted.
fn shuffled<T: Clone>(items: &[T], nth: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if nth % 2 == 0 {
        v.reverse();
    }
    v
}

/// The reply to `query`, or `None` for garbage.
fn answer(query: &[u8], nth: usize) -> Option<Vec<u8>> {
    if query.len() < 12 || u16_at(query, 4)? != 1 {
        return None;
    }
    let (name, after) = read_qname(query, 12)?;
    let qtype = u16_at(query, after)?;
    let qend = after + 4;
    if qend > query.len() {
        return None;
    }

    let mut records: Vec<(u16, Vec<u8>)> = Vec::new();
    let known = zone_srv(&name).is_some() || zone_a(&name).is_some();
    match qtype {
        TYPE_SRV => {
            for srv in shuffled(&zone_srv(&name).unwrap_or_default(), nth) {
                let mut rdata = Vec::new();
                rdata.extend_from_slice(&srv.priority.to_be_bytes());
                rdata.extend_from_slice(&srv.weight.to_be_bytes());
                rdata.extend_from_slice(&srv.port.to_be_bytes());
                rdata.extend_from_slice(&encode_name(srv.target));
                records.push((TYPE_SRV, rdata));
            }
        }
        TYPE_A => {
            for ip in shuffled(&zone_a(&name).unwrap_or_default(), nth) {
                records.push((TYPE_A, ip.to_vec()));
            }
        }
        _ => {}
    }

    let rcode: u16 = if known { 0 } else { 3 }; // NXDOMAIN
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(&query[0..2]); // id
    let rd = u16_at(query, 2)? & 0x0100;
    r.extend_from_slice(&(0x8080 | rd | rcode).to_be_bytes()); // QR, RA, RD as asked
    r.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    r.extend_from_slice(&(records.len() as u16).to_be_bytes()); // ANCOUNT
    r.extend_from_slice(&0u16.to_be_bytes()); // NSCOUNT
    r.extend_from_slice(&0u16.to_be_bytes()); // ARCOUNT (no EDNS echo)
    r.extend_from_slice(&query[12..qend]);
    for (rtype, rdata) in records {
        r.extend_from_slice(&[0xc0, 12]); // owner: the question's name
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&60u32.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
    }
    Some(r)
}
