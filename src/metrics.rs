//! What sidekick counts, for `/metrics` (Prometheus text format 0.0.4, every
//! name under `sidekick_`). The engine and the event loop call the functions
//! here; with `--metrics-addr` off no recorder is installed and each call is a
//! no-op.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Render duration buckets, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up metrics: {0}")]
pub(crate) struct MetricsError(String);

/// Installs the process's recorder and returns the handle `/metrics` renders
/// from. Called once, when `--metrics-addr` is given.
pub(crate) fn install() -> Result<PrometheusHandle, MetricsError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("sidekick_render_duration_seconds".into()),
            DURATION_BUCKETS,
        )
        .map_err(|e| MetricsError(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| MetricsError(e.to_string()))?;
    describe();
    gauge!(
        "sidekick_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("SIDEKICK_GIT_COMMIT"),
    )
    .set(1.0);
    Ok(handle)
}

fn describe() {
    describe_counter!(
        "sidekick_renders_total",
        "Renders that went through, per resource and result (updated, unchanged, would_update)"
    );
    describe_counter!(
        "sidekick_render_failures_total",
        "Failed passes per resource and reason (render, check, reload, write)"
    );
    describe_counter!(
        "sidekick_render_skipped_total",
        "Renders skipped because the backend answered with no keys where there were some"
    );
    describe_gauge!(
        "sidekick_last_render_success_timestamp_seconds",
        "When each resource last rendered without error (unix seconds)"
    );
    describe_histogram!(
        "sidekick_render_duration_seconds",
        "Time to render, check and write a resource, in seconds"
    );
    describe_gauge!(
        "sidekick_backend_up",
        "1 while the backend answers, 0 while it is unreachable"
    );
    describe_counter!(
        "sidekick_backend_reconnects_total",
        "Times the backend came back after being unreachable"
    );
    describe_counter!(
        "sidekick_watch_events_total",
        "Updates received from the backend's watch or poll (puts, deletes, snapshots, catalogs)"
    );
    describe_gauge!("sidekick_keys", "Keys held from the backend");
    describe_counter!(
        "sidekick_reloads_total",
        "Times the executor was told, per resource and kind (command, url, signal, restart)"
    );
    describe_counter!(
        "sidekick_child_restarts_total",
        "Restarts of the supervised child (sidekick exec)"
    );
    describe_gauge!(
        "sidekick_build_info",
        "Version and git commit of this sidekick; always 1"
    );
}

/// Resource `resource` rendered with `result`, taking `took`.
pub(crate) fn rendered(resource: &str, result: &'static str, took: Duration) {
    counter!("sidekick_renders_total", "resource" => resource.to_string(), "result" => result)
        .increment(1);
    histogram!("sidekick_render_duration_seconds", "resource" => resource.to_string())
        .record(took.as_secs_f64());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!("sidekick_last_render_success_timestamp_seconds", "resource" => resource.to_string())
        .set(now.floor());
}

/// Resource `resource` failed for `reason` (render, check, reload, write).
pub(crate) fn failed(resource: &str, reason: &'static str) {
    counter!("sidekick_render_failures_total", "resource" => resource.to_string(), "reason" => reason)
        .increment(1);
}

/// Resource `resource` was not rendered: the backend answered with nothing.
pub(crate) fn skipped(resource: &str) {
    counter!("sidekick_render_skipped_total", "resource" => resource.to_string()).increment(1);
}

/// The executor was told about `resource` by `kind`.
pub(crate) fn reload(resource: &str, kind: &'static str) {
    counter!("sidekick_reloads_total", "resource" => resource.to_string(), "kind" => kind)
        .increment(1);
}

/// The backend is answering (`up`) or not.
pub(crate) fn backend_up(backend: &str, up: bool) {
    gauge!("sidekick_backend_up", "backend" => backend.to_string()).set(if up { 1.0 } else { 0.0 });
}

/// The backend came back after being unreachable.
pub(crate) fn backend_reconnected(backend: &str) {
    counter!("sidekick_backend_reconnects_total", "backend" => backend.to_string()).increment(1);
}

/// `n` updates came from the backend.
pub(crate) fn watch_events(backend: &str, n: usize) {
    counter!("sidekick_watch_events_total", "backend" => backend.to_string()).increment(n as u64);
}

/// The backend's data now holds `n` keys.
pub(crate) fn keys(backend: &str, n: usize) {
    gauge!("sidekick_keys", "backend" => backend.to_string()).set(n as f64);
}

/// The supervised child was restarted.
pub(crate) fn child_restarted() {
    counter!("sidekick_child_restarts_total").increment(1);
}
