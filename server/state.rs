//! What every request handler shares, built once from the configuration:
//! the pool, the token verifier with its DID resolver, the limits.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::audit::AuditLog;
use crate::auth::resolver::DEFAULT_CACHE_TTL;
use crate::auth::{DirectoryResolver, NetworkResolver, PgReplayStore, Resolver, Verifier};
use crate::config::{self, CheckedConfig, ConfigError, DidSource, ServeConfig};
use crate::convos::ConvoSettings;
use crate::convos::appender::Appender;
use crate::convos::group_cache::GroupCache;
use crate::idempotency::Idempotency;
use crate::keypackages::KeyPackageLimits;
use crate::ratelimit::RateLimits;
use crate::realtime::Realtime;
use crate::telemetry;

/// What every request handler shares.
pub struct AppState {
    pub db: PgPool,
    pub verifier: Verifier<Resolver, PgReplayStore>,
    pub metrics: PrometheusHandle,
    pub key_packages: KeyPackageLimits,
    pub convos: ConvoSettings,
    /// Parsed MLS groups kept between commits.
    pub groups: GroupCache,
    /// sendMessage's group append.
    pub appender: Appender,
    pub limits: RateLimits,
    pub idempotency: Idempotency,
    pub audit: AuditLog,
    pub audit_retention: Duration,
    pub realtime: Realtime,
    /// The DID document this service publishes, when its DID is a did:web.
    pub did_document: Option<serde_json::Value>,
}

impl AppState {
    /// The state `serve` runs with, after checking `config`.
    pub fn new(config: &ServeConfig, db: PgPool) -> Result<Self, ConfigError> {
        Self::from_checked(&config.check()?, db)
    }

    /// The state of a checked configuration: the pool, and a verifier that
    /// resolves DIDs as configured and remembers token ids in PostgreSQL.
    pub fn from_checked(checked: &CheckedConfig, db: PgPool) -> Result<Self, ConfigError> {
        let config = &checked.config;
        let cache_ttl = |default| {
            config
                .did_cache_seconds
                .map_or(default, Duration::from_secs)
        };
        let resolver = match &checked.did_source {
            DidSource::Directory(directory) => Resolver::Directory(DirectoryResolver::cached(
                directory,
                cache_ttl(Duration::ZERO),
            )),
            DidSource::Network { plc_url } => {
                let resolver = NetworkResolver::new(plc_url.as_str(), cache_ttl(DEFAULT_CACHE_TTL))
                    .map_err(|e| ConfigError::Invalid {
                        setting: config::PLC_URL,
                        problem: e.to_string(),
                    })?;
                Resolver::Network(resolver)
            }
        };
        let verifier = Verifier::new(
            checked.service_did.clone(),
            resolver,
            PgReplayStore::new(db.clone()),
        );
        Ok(Self {
            db: db.clone(),
            verifier,
            metrics: telemetry::metrics_handle(),
            key_packages: checked.key_packages,
            convos: config.convo_settings(),
            groups: GroupCache::default(),
            appender: Appender::new(db.clone()),
            limits: RateLimits::new(&checked.rate_limits),
            idempotency: Idempotency::new(db.clone(), config.idempotency_settings()),
            audit: AuditLog::new(db),
            audit_retention: config.audit_retention(),
            realtime: Realtime::new(config.realtime_settings(), config.ephemeral_limits()),
            did_document: crate::did_web::document(&checked.service_did, &checked.public_url),
        })
    }
}
