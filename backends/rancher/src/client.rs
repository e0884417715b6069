//! A small HTTP/1.1 client for the metadata service: one connection per
//! request, driven inside the request's own future (no background task), so
//! dropping a request (or the watch holding it) closes its socket at once.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sidekick_backend::BackendError;
use tokio::net::TcpStream;

use crate::layout::Layout;
use crate::NAME;

/// Header asking the metadata server (sidekick's) to answer `/self` for this
/// container; Rancher's own service ignores it.
pub const SELF_HEADER: &str = "x-sidekick-self";

/// Largest answer read (a whole tree of a big environment fits easily).
const MAX_BODY: usize = 256 << 20;

/// Talks to one metadata service.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    authority: String,
    host: String,
    self_container: Option<String>,
}

impl Client {
    /// A client for the service `layout` points at.
    pub fn new(layout: &Layout, self_container: Option<String>) -> Client {
        Client {
            authority: layout.authority.clone(),
            host: layout.host.clone(),
            self_container,
        }
    }

    /// `http://host:port` followed by `path`, for messages.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    /// GETs `path` (with query) as JSON; gives up after `timeout`.
    pub async fn get_json(&self, path: &str, timeout: Duration) -> Result<Value, BackendError> {
        let body = match tokio::time::timeout(timeout, self.get(path)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(self.unavailable(path, format!("no answer within {timeout:?}")));
            }
        };
        serde_json::from_slice(&body).map_err(|e| BackendError::Invalid {
            location: self.url(path),
            message: format!("the metadata service sent invalid JSON: {e}"),
        })
    }

    async fn get(&self, path: &str) -> Result<Bytes, BackendError> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| self.unavailable(path, e.to_string()))?;
        // Small requests and answers: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unavailable(path, e.to_string()))?;
        let mut request = Request::get(path)
            .header(HOST, &self.host)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("sidekick/", env!("CARGO_PKG_VERSION")));
        if let Some(name) = &self.self_container {
            request = request.header(SELF_HEADER, name);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| BackendError::Config {
                backend: NAME,
                message: format!("cannot build a request for {}: {e}", self.url(path)),
            })?;
        let exchange = async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        };
        tokio::pin!(exchange);
        tokio::pin!(conn);
        // The connection is driven here, alongside the exchange; it ends
        // with the exchange (the sender is dropped) or fails it.
        let result = tokio::select! {
            r = &mut exchange => r,
            _ = &mut conn => exchange.await,
        };
        let (status, body) = result.map_err(|e| self.unavailable(path, e.to_string()))?;
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            let detail = if text.is_empty() || text.len() > 200 {
                String::new()
            } else {
                format!(": {text}")
            };
            return Err(self.unavailable(path, format!("HTTP {status}{detail}")));
        }
        Ok(body)
    }

    fn unavailable(&self, path: &str, message: String) -> BackendError {
        BackendError::Unavailable {
            backend: NAME,
            endpoint: self.url(path),
            source: message.into(),
        }
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub(crate) fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes() {
        assert_eq!(encode_query("a1-_.~"), "a1-_.~");
        assert_eq!(encode_query("a b/é"), "a%20b%2F%C3%A9");
    }
}
