//! The HTTP application: operations endpoints plus the XRPC routers of the
//! generated traits, behind the request telemetry; and [`serve`], which
//! starts it the way an operator meets it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use catbird_generated::runtime::xrpc;
use serde_json::json;

use axum::extract::connect_info::{ConnectInfo, IntoMakeServiceWithConnectInfo};
use axum::middleware::AddExtension;

use crate::config::{ConfigError, ServeConfig};
use crate::connections::{self, ConnectionSettings, GuardedListener, Peer};
use crate::db::{self, ConnectError, MigrateError};
use crate::service::Service;
use crate::state::AppState;
use crate::{maintenance, telemetry};

/// Why `serve` stopped, naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot listen on {address} (--bind): {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("serving on {address}: {source}")]
    Serve {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the shutdown grace period ({} s) ended with requests still in flight", .0.as_secs())]
    GraceExpired(Duration),
}

/// Runs the service until SIGTERM or Ctrl-C, in the order an operator's
/// mistakes should surface: the configuration is checked (nothing
/// connects before that), the database connected, the address bound, and
/// only then are migrations applied and requests served. Each step is
/// logged.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let checked = config.check()?;
    tracing::info!(
        "configuration checked: profile {}, service DID {}, DID documents from {}",
        config.profile,
        checked.service_did,
        checked.did_source
    );

    tracing::info!("connecting to the database at {}", checked.database);
    let pool_settings = config.pool_settings();
    let pool = db::connect(&checked.database, pool_settings).await?;

    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServeError::Bind {
            address: config.bind,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| ServeError::Bind {
        address: config.bind,
        source,
    })?;

    tracing::info!("connected; applying migrations");
    let migrations = db::migrate(&pool, &checked.database).await?;
    tracing::info!("migrations applied: the database schema is current ({migrations} migrations)");

    let state = Arc::new(AppState::from_checked(&checked, pool)?);
    let cleanup = Duration::from_secs(config.cleanup_interval_seconds);
    tokio::spawn(maintenance::run_periodically(state.clone(), cleanup));
    tokio::spawn(db::keep_warm(
        state.db.clone(),
        pool_settings.warm_connections,
    ));
    state.realtime.spawn_fanout(&state.db);
    let hub = state.realtime.hub.clone();
    let app = router(state, &config);
    tracing::info!(version = crate::VERSION, "serving at http://{address}");

    // On SIGTERM stop accepting, let in-flight requests finish, but not for
    // longer than the grace period.
    let stopping = Arc::new(tokio::sync::Notify::new());
    let server = http_server(listener, app, config.connection_settings()).with_graceful_shutdown({
        let stopping = stopping.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: draining in-flight requests, ending event streams");
            // Streams would hold the drain open: they end now, telling
            // their clients to reconnect elsewhere.
            hub.shut_down();
            stopping.notify_one();
        }
    });
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    tokio::select! {
        result = server => result.map_err(|source| ServeError::Serve { address, source })?,
        () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            // Requests were cut off: say so in the exit status too.
            return Err(ServeError::GraceExpired(grace));
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// The HTTP server of `app` on `listener`, within the connection limits
/// and timeouts of `settings` ([`connections`]).
pub fn http_server(
    listener: tokio::net::TcpListener,
    app: Router,
    settings: ConnectionSettings,
) -> axum::serve::Serve<
    GuardedListener,
    IntoMakeServiceWithConnectInfo<Router, Peer>,
    AddExtension<Router, ConnectInfo<Peer>>,
> {
    let listener = GuardedListener::new(listener, settings);
    // The peer (and its connection's activity), for the connection's
    // timeouts, the per-address rate limits and the audit log.
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
}

/// The whole HTTP surface of the service: the body limit and the pause
/// allowed while a body is read come from `config`.
pub fn router(state: Arc<AppState>, config: &ServeConfig) -> Router {
    let operations = Router::new()
        .route("/xrpc/_health", get(health))
        .route("/metrics", get(metrics))
        .route("/.well-known/did.json", get(did_document))
        .with_state(state.clone());
    let service = Arc::new(Service { state });
    let api = catbird_generated::lexicons::blue::catbird::mls::router(service);
    xrpc::finish(operations.merge(api))
        .layer(xrpc::body_limit_layer(config.max_body_bytes))
        .layer(xrpc::body_timeout_layer(config.body_read_timeout()))
        .layer(axum::middleware::from_fn(telemetry::observe))
        .layer(axum::middleware::from_fn(connections::track_requests))
}

/// `GET /.well-known/did.json`: this service's DID document (a did:web
/// service DID only; otherwise 404).
async fn did_document(State(state): State<Arc<AppState>>) -> axum::response::Response {
    match &state.did_document {
        Some(document) => Json(document.clone()).into_response(),
        None => xrpc::XrpcError::not_found(
            "this service's DID is not a did:web: its document is published elsewhere",
        )
        .into_response(),
    }
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
