//! The HTTP application: operations endpoints plus the XRPC routers of the
//! generated traits, behind the request telemetry.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use catbird_generated::runtime::xrpc;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqlx::PgPool;

use catbird_generated::runtime::Did;

use crate::auth::did::DEFAULT_CACHE_TTL;
use crate::auth::{DirectoryResolver, NetworkResolver, PgReplayStore, Resolver, Verifier};
use crate::config::{ConfigError, DidResolution, ServeConfig};
use crate::convos::ConvoSettings;
use crate::idempotency::Idempotency;
use crate::keypackages::KeyPackageLimits;
use crate::ratelimit::RateLimits;
use crate::service::Service;
use crate::telemetry;

/// What every request handler shares.
pub struct AppState {
    pub db: PgPool,
    pub verifier: Verifier<Resolver, PgReplayStore>,
    pub metrics: PrometheusHandle,
    pub key_packages: KeyPackageLimits,
    pub convos: ConvoSettings,
    pub limits: RateLimits,
    pub idempotency: Idempotency,
    pub audit_retention: Duration,
}

impl AppState {
    /// The state `serve` runs with: the pool, and a verifier that resolves
    /// DIDs as configured and remembers token ids in PostgreSQL.
    pub fn new(config: &ServeConfig, db: PgPool) -> Result<Self, ConfigError> {
        let key_packages = config.key_package_limits()?;
        let service_did = Did::new(config.service_did.as_str())
            .map_err(|e| ConfigError(format!("--service-did: {e}")))?;
        let resolver = match config.did_resolution {
            DidResolution::Directory => {
                Resolver::Directory(DirectoryResolver::new(&config.did_directory))
            }
            DidResolution::Network => {
                let resolver = NetworkResolver::new(config.plc_url.as_str(), DEFAULT_CACHE_TTL)
                    .map_err(|e| ConfigError(format!("--plc-url: {e}")))?;
                Resolver::Network(resolver)
            }
        };
        let verifier = Verifier::new(service_did, resolver, PgReplayStore::new(db.clone()));
        Ok(Self {
            db: db.clone(),
            verifier,
            metrics: telemetry::metrics_handle(),
            key_packages,
            convos: config.convo_settings(),
            limits: RateLimits::new(&config.rate_limit_settings()?),
            idempotency: Idempotency::new(db, config.idempotency_settings()),
            audit_retention: config.audit_retention(),
        })
    }
}

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
