//! One request: route, pick `self`, negotiate the format, long-poll.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;

use crate::tree::{map_json, map_text, Found, Tree};
use crate::{Shared, SELF_HEADER};

/// API versions listed at `/` (any other version string is answered too).
const VERSIONS: &[&str] = &["2015-07-25", "2015-12-19", "2016-07-29", "latest"];
/// `maxWait` when a long-poll gives none (Rancher's default).
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60);
/// The longest a long-poll is held (Rancher's cap).
const MAX_WAIT_CAP: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

/// Answers one request.
pub(crate) async fn answer(
    request: Request<Incoming>,
    shared: &Shared,
    peer: IpAddr,
) -> Response<Full<Bytes>> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let format = negotiate(&request);
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = error(format, StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let segments: Option<Vec<String>> = request
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(unescape)
        .collect();
    let Some(segments) = segments else {
        return error(format, StatusCode::BAD_REQUEST, "Bad escape in the path");
    };
    let Some((version, path)) = segments.split_first() else {
        return versions(format);
    };
    if version == "favicon.ico" {
        return error(format, StatusCode::NOT_FOUND, "Not found");
    }
    let header = request
        .headers()
        .get(SELF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let query = Query::parse(request.uri().query().unwrap_or(""));

    let mut trees = shared.tree.subscribe();
    let mut tree = trees.borrow_and_update().clone();
    let response = match (query.wait, query.value) {
        (true, Some(old)) => {
            let deadline = Instant::now() + query.max_wait;
            loop {
                let me = tree.self_for(header, peer);
                let found = tree.lookup(path, me);
                let changed = found
                    .as_ref()
                    .is_some_and(|f| f.text(&tree).as_ref() != old.as_bytes());
                if changed || Instant::now() >= deadline {
                    break respond(format, &tree, found);
                }
                tokio::select! {
                    changed = trees.changed() => {
                        if changed.is_err() {
                            // The server is stopping.
                            break respond(format, &tree, found);
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                let next = trees.borrow_and_update().clone();
                tree = next;
            }
        }
        _ => {
            let me = tree.self_for(header, peer);
            let found = tree.lookup(path, me);
            respond(format, &tree, found)
        }
    };
    tracing::debug!(
        client = %peer,
        version = %version,
        path = %request.uri().path(),
        status = response.status().as_u16(),
        "answered"
    );
    response
}

fn respond(format: Format, tree: &Tree, found: Option<Found<'_>>) -> Response<Full<Bytes>> {
    match found {
        None => error(format, StatusCode::NOT_FOUND, "Not found"),
        Some(found) => match format {
            Format::Json => body(StatusCode::OK, format, found.json(tree)),
            Format::Text => body(StatusCode::OK, format, found.text(tree)),
        },
    }
}

/// `/`: the versions, each with its URL.
fn versions(format: Format) -> Response<Full<Bytes>> {
    match format {
        Format::Json => {
            let urls: Vec<Bytes> = VERSIONS
                .iter()
                .map(|v| Bytes::from(serde_json::Value::String(format!("/{v}")).to_string()))
                .collect();
            body(
                StatusCode::OK,
                format,
                map_json(VERSIONS.iter().copied().zip(urls.iter())),
            )
        }
        Format::Text => body(
            StatusCode::OK,
            format,
            map_text(VERSIONS.iter().map(|v| (*v, false))),
        ),
    }
}

/// An error as Rancher sends it: the message as text, or
/// `{"code":404,"message":"Not found","type":"error"}`.
fn error(format: Format, status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let text = match format {
        Format::Json => {
            let obj =
                serde_json::json!({"code": status.as_u16(), "message": message, "type": "error"});
            format!("{obj}\n")
        }
        Format::Text => format!("{message}\n"),
    };
    body(status, format, Bytes::from(text))
}

fn body(status: StatusCode, format: Format, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    let content_type = match format {
        Format::Json => "application/json",
        Format::Text => "text/plain; charset=utf-8",
    };
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}

/// JSON when the client accepts it (and does not prefer text); plain text
/// otherwise, as Rancher does.
fn negotiate<B>(request: &Request<B>) -> Format {
    let accept = request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let mut json = None;
    let mut text = None;
    for part in accept.split(',') {
        let mut fields = part.split(';');
        let media = fields.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = fields
            .filter_map(|f| f.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if media == "application/json" {
            json = Some(json.map_or(q, |j: f32| j.max(q)));
        } else if media == "text/plain" {
            text = Some(text.map_or(q, |t: f32| t.max(q)));
        }
    }
    match (json, text) {
        (Some(j), Some(t)) if j > t && j > 0.0 => Format::Json,
        (Some(j), None) if j > 0.0 => Format::Json,
        _ => Format::Text,
    }
}

/// The long-poll parameters.
#[derive(Debug, PartialEq)]
struct Query {
    wait: bool,
    value: Option<String>,
    max_wait: Duration,
}

impl Query {
    fn parse(query: &str) -> Query {
        let mut q = Query {
            wait: false,
            value: None,
            max_wait: DEFAULT_MAX_WAIT,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(value) = unescape(value) else {
                continue;
            };
            match key {
                "wait" => q.wait = value == "true",
                "value" => q.value = Some(value),
                "maxWait" => {
                    if let Ok(secs) = value.parse::<u64>() {
                        q.max_wait = if secs == 0 {
                            DEFAULT_MAX_WAIT
                        } else {
                            Duration::from_secs(secs).min(MAX_WAIT_CAP)
                        };
                    }
                }
                _ => {}
            }
        }
        q
    }
}

/// Go's `url.QueryUnescape`: `%XX` and `+` for a space; `None` on a bad escape
/// or bytes that are not UTF-8.
fn unescape(s: &str) -> Option<String> {
    if !s.contains(['%', '+']) {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_accept(accept: &str) -> Format {
        let r = Request::get("/").header(ACCEPT, accept).body(()).unwrap();
        negotiate(&r)
    }

    #[test]
    fn negotiates_like_rancher() {
        assert_eq!(with_accept("application/json"), Format::Json);
        assert_eq!(
            with_accept("application/json, text/plain;q=0.5"),
            Format::Json
        );
        assert_eq!(
            with_accept("text/plain, application/json;q=0.5"),
            Format::Text
        );
        assert_eq!(with_accept("*/*"), Format::Text);
        assert_eq!(with_accept("application/json;q=0"), Format::Text);
        let r = Request::get("/").body(()).unwrap();
        assert_eq!(negotiate(&r), Format::Text);
    }

    #[test]
    fn parses_long_poll_queries() {
        let q = Query::parse("wait=true&value=abc%20d&maxWait=5");
        assert_eq!(
            q,
            Query {
                wait: true,
                value: Some("abc d".into()),
                max_wait: Duration::from_secs(5)
            }
        );
        assert_eq!(Query::parse("maxWait=999").max_wait, MAX_WAIT_CAP);
        assert_eq!(Query::parse("maxWait=0").max_wait, DEFAULT_MAX_WAIT);
        assert!(!Query::parse("wait=1").wait);
    }

    #[test]
    fn unescapes() {
        assert_eq!(unescape("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(unescape("%zz"), None);
        assert_eq!(unescape("%4"), None);
    }
}
