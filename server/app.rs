//! The HTTP application: operations endpoints plus the XRPC routers of the
//! generated traits, behind the request telemetry.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use catbird_generated::runtime::xrpc;
use serde_json::json;

use crate::service::Service;
use crate::state::AppState;
use crate::telemetry;

/// The whole HTTP surface of the service.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let operations = Router::new()
        .route("/xrpc/_health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let service = Arc::new(Service { state });
    let api = catbird_generated::lexicons::blue::catbird::mls::router(service);
    xrpc::finish(operations.merge(api))
        .layer(xrpc::body_limit_layer(max_body_bytes))
        .layer(axum::middleware::from_fn(telemetry::observe))
}

/// `GET /xrpc/_health`: the version, and whether the database answers
/// (503 when it does not, so load balancers take the instance out).
async fn health(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let database = crate::db::reachable(&state.db).await;
    let status = if database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "version": crate::VERSION,
        "database": if database { "ok" } else { "unreachable" },
    });
    (status, Json(body))
}

/// `GET /metrics`: Prometheus text format. Pool gauges are sampled here, at
/// scrape time.
async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let size = state.db.size();
    let idle = state.db.num_idle() as u32;
    metrics::gauge!("db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("db_pool_connections", "state" => "in_use")
        .set(f64::from(size.saturating_sub(idle)));
    metrics::gauge!("db_pool_max_connections")
        .set(f64::from(state.db.options().get_max_connections()));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
