//! What every request handler shares, built once from the configuration:
//! the pool, the token verifier with its DID resolver, the limits.

use std::time::Duration;

use catbird_generated::runtime::Did;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::resolver::DEFAULT_CACHE_TTL;
use crate::auth::{DirectoryResolver, NetworkResolver, PgReplayStore, Resolver, Verifier};
use crate::config::{ConfigError, DidResolution, ServeConfig};
use crate::convos::ConvoSettings;
use crate::idempotency::Idempotency;
use crate::keypackages::KeyPackageLimits;
use crate::ratelimit::RateLimits;
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
