//! Logs and metrics: structured request logs with tracing, Prometheus
//! metrics (requests by method and status, latency, pool use).

use std::io::IsTerminal as _;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

/// Installs the tracing subscriber; `RUST_LOG` filters (default `info`).
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests start several servers) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Request latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the global Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Buckets make latency a real histogram (aggregatable across
            // instances) rather than per-process quantiles.
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("the bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (an embedding program):
                // metrics go there, and /metrics shows only what this
                // private one gets.
                Err(error) => {
                    tracing::warn!(%error, "a metrics recorder is already installed");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Per request: one span (method, caller filled in by the auth hook), one
/// log line with status and latency (at debug for 1xx-3xx, info for 4xx,
/// warn for 5xx), and the request metrics.
pub async fn observe(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let mut method = path
        .strip_prefix("/xrpc/")
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path)
        .to_owned();
    let span = tracing::info_span!("request", method = %method, caller = tracing::field::Empty);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    // Unknown paths must not each become a metric series.
    if !is_known_path(&method) {
        method = "unmatched".to_owned();
    }
    // Successful requests are the bulk and are what the metrics count: their
    // line is at debug, so that at the default level it costs one filter
    // check instead of formatting and a write per request (15-20% of
    // sendMessage's throughput at info). Refusals and failures stay visible.
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| match status {
        500.. => tracing::warn!(status, latency_ms, "request"),
        400.. => tracing::info!(status, latency_ms, "request"),
        _ => tracing::debug!(status, latency_ms, "request"),
    });
    let labels = [("method", method), ("status", status.to_string())];
    metrics::counter!("xrpc_requests_total", &labels).increment(1);
    metrics::histogram!("xrpc_request_duration_seconds", &labels[..1])
        .record(elapsed.as_secs_f64());
    response
}

/// The operations endpoints and every lexicon method are labelled by name.
fn is_known_path(method: &str) -> bool {
    method == "_health"
        || method == "metrics"
        || catbird_generated::lexicons::blue::catbird::mls::ROUTES
            .iter()
            .any(|route| route.nsid == method)
}

/// Records the authenticated caller on the current request span.
pub fn record_caller(did: &str) {
    tracing::Span::current().record("caller", did);
}
