//! The operations endpoints on `--metrics-addr`: `/healthz` (the event loop
//! answers it, so a stuck loop fails it), `/readyz` (from [`Status`]) and
//! `/metrics` (Prometheus text format 0.0.4). A small hyper server; the task
//! serving it belongs to [`Endpoints`] and stops when that is dropped.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::status::Status;

/// A `/healthz` request: the event loop answers by sending `()` back.
pub(crate) type Ping = oneshot::Sender<()>;

/// How long `/healthz` waits for the event loop.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The listening server; dropping it stops the server and its connections.
pub(crate) struct Endpoints {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why the endpoints could not start.
#[derive(Debug, thiserror::Error)]
#[error("--metrics-addr {addr}: cannot listen: {source}")]
pub(crate) struct EndpointError {
    addr: String,
    source: std::io::Error,
}

/// What every connection needs.
struct Shared {
    metrics: PrometheusHandle,
    status: Arc<Status>,
    pings: mpsc::Sender<Ping>,
}

/// Binds `addr` ("127.0.0.1:9100", "localhost:9100", or ":9100" for every
/// interface) and serves on a task of the current runtime.
pub(crate) async fn start(
    addr: &str,
    metrics: PrometheusHandle,
    status: Arc<Status>,
    pings: mpsc::Sender<Ping>,
) -> Result<Endpoints, EndpointError> {
    let bind = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    };
    let error = |source| EndpointError {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&bind).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    tracing::info!(addr = %local, "serving /healthz, /readyz and /metrics");
    let shared = Arc::new(Shared {
        metrics,
        status,
        pings,
    });
    let task = tokio::spawn(serve(listener, shared));
    Ok(Endpoints { task })
}

async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    // Owned here: aborting this task drops them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, std::convert::Infallible>(answer(&request, &shared).await) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "endpoint connection ended with an error");
    }
}

async fn answer<B>(request: &Request<B>, shared: &Shared) -> Response<Full<Bytes>> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n".into());
    }
    match request.uri().path() {
        "/healthz" => {
            let (tx, rx) = oneshot::channel();
            let answered = shared.pings.try_send(tx).is_ok()
                && tokio::time::timeout(PING_TIMEOUT, rx)
                    .await
                    .is_ok_and(|r| r.is_ok());
            if answered {
                text(StatusCode::OK, "ok\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the event loop is not answering\n".into(),
                )
            }
        }
        "/readyz" => {
            let (ready, body) = shared.status.readiness();
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(code, body)
        }
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /healthz, /readyz and /metrics are served\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
