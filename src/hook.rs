//! `reload_url`: tells an application that reloads over HTTP (Prometheus'
//! `/-/reload`, Envoy's admin, k8s-sidecar's `REQ_URL`), so a sidecar built
//! `FROM scratch` needs no shell or curl for it.

use std::time::Duration;

use crate::resource::ReloadUrl;

/// Why the reload call did not go through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HookError {
    #[error("reload_url {method} {url} failed: {message}")]
    Request {
        method: String,
        url: String,
        message: String,
    },
    #[error("reload_url {method} {url} answered {status}{}", body_suffix(.body))]
    Status {
        method: String,
        url: String,
        status: String,
        body: String,
    },
    #[error("reload_url {method} {url} timed out after {}", crate::debounce::format_duration(*.after))]
    TimedOut {
        method: String,
        url: String,
        after: Duration,
    },
}

fn body_suffix(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// How much of an error answer's body goes into the message.
const BODY_SHOWN: usize = 512;

/// Calls `hook` and waits at most `timeout` for a 2xx answer. Runs on the
/// pass's worker thread: it blocks on the runtime's handle, or on a runtime
/// of its own outside one.
pub(crate) fn call(hook: &ReloadUrl, timeout: Duration) -> Result<u16, HookError> {
    let request = async {
        match tokio::time::timeout(timeout, send(hook, timeout)).await {
            Ok(result) => result,
            Err(_) => Err(HookError::TimedOut {
                method: hook.method.clone(),
                url: hook.url.clone(),
                after: timeout,
            }),
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(request),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| request_error(hook, e.to_string()))?
            .block_on(request),
    }
}

fn request_error(hook: &ReloadUrl, message: String) -> HookError {
    HookError::Request {
        method: hook.method.clone(),
        url: hook.url.clone(),
        message,
    }
}

async fn send(hook: &ReloadUrl, timeout: Duration) -> Result<u16, HookError> {
    let method = reqwest::Method::from_bytes(hook.method.as_bytes())
        .map_err(|e| request_error(hook, e.to_string()))?;
    let client = reqwest::Client::builder()
        .connect_timeout(timeout)
        .build()
        .map_err(|e| request_error(hook, e.to_string()))?;
    let response = client
        .request(method, &hook.url)
        .header(
            "user-agent",
            concat!("sidekick/", env!("CARGO_PKG_VERSION")),
        )
        .send()
        .await
        .map_err(|e| request_error(hook, error_text(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let body = response.text().await.unwrap_or_default();
    let mut end = body.len().min(BODY_SHOWN);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    Err(HookError::Status {
        method: hook.method.clone(),
        url: hook.url.clone(),
        status: status.to_string(),
        body: body[..end].to_string(),
    })
}

/// reqwest's error with its causes (its Display alone says only "error
/// sending request").
fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
