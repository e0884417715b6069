//! A minimal blocking HTTP/1.1 client, enough to write to and read from the
//! test servers' APIs (Consul's, etcd's JSON gateway) from plain test code,
//! without an async runtime: one request per connection, or a kept-alive
//! [`Connection`] for loops of requests where connecting would dominate.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An answer: status, lower-cased header names, body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers by lower-cased name (the last one of a repeated name).
    pub headers: BTreeMap<String, String>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection to `host` (`host:port`), closed after
/// the answer; reads time out after `timeout`.
pub fn request(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    let mut conn = Connection::open(host, timeout)?;
    conn.send(method, path, headers, body, true)
}

/// A kept-alive connection.
pub struct Connection {
    host: String,
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to `host` (`host:port`) with no Nagle delay; reads time out
    /// after `timeout`.
    pub fn open(host: &str, timeout: Duration) -> io::Result<Connection> {
        let stream = TcpStream::connect(host)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(Connection {
            host: host.to_string(),
            reader: BufReader::new(stream),
        })
    }

    /// Sends one request and reads its answer; `close` asks the server to
    /// close the connection after it.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        close: bool,
    ) -> io::Result<Response> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        if close {
            req.push_str("Connection: close\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        self.reader.get_mut().write_all(&out)?;
        read_response(&mut self.reader)
    }
}

/// Reads header lines up to the blank line that ends them, names lowercased.
/// `false` with the headers read so far when the stream ends first.
pub fn read_headers(reader: &mut impl BufRead) -> io::Result<(BTreeMap<String, String>, bool)> {
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Ok((headers, false));
        }
        let h = h.trim_end();
        if h.is_empty() {
            return Ok((headers, true));
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
}

/// Reads a chunked body (`Transfer-Encoding: chunked`) up to its last chunk.
pub fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let mut chunk = vec![0; n + 2];
        reader.read_exact(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(body)
}

/// Reads one answer: a `Content-Length` or chunked body, else up to the close.
fn read_response(reader: &mut BufReader<TcpStream>) -> io::Result<Response> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let (headers, _complete) = read_headers(reader)?;
    let mut body = Vec::new();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        body = read_chunked(reader)?;
    } else if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A request as the test servers read it: the method, the path and query
/// parameters percent-decoded, headers by lower-cased name, the body
/// (de-chunked).
#[derive(Debug, Clone)]
pub struct ServerRequest {
    /// The method as sent.
    pub method: String,
    /// The path, decoded, without the query.
    pub path: String,
    /// Query parameters, decoded (`?recurse` is `recurse` = "").
    pub query: BTreeMap<String, String>,
    /// Headers by lower-cased name.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl ServerRequest {
    /// True when the query has parameter `name` (with or without a value).
    pub fn has_query(&self, name: &str) -> bool {
        self.query.contains_key(name)
    }

    /// True when the client asked to close the connection after the answer.
    pub fn wants_close(&self) -> bool {
        self.headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads the next request of a kept-alive connection; `None` at its end or on
/// a request line or header block that is cut short.
pub fn read_request(reader: &mut impl BufRead) -> io::Result<Option<ServerRequest>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let (headers, complete) = read_headers(reader)?;
    if !complete {
        return Ok(None);
    }
    let mut body = Vec::new();
    if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        body = read_chunked(reader)?;
    }
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let query = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Some(ServerRequest {
        method: method.to_string(),
        path: percent_decode(raw_path),
        query,
        headers,
        body,
    }))
}

/// `%XX` escapes decoded (`+` stays `+`); bad escapes are kept as written.
pub fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
