//! Configuration from flags and environment. Every setting has a flag, an
//! environment variable and, where one is sensible, a default for local runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::num::NonZeroU32;
use std::time::Duration;

use catbird_generated::runtime::xrpc::http::HeaderName;
use clap::{Args, ValueEnum};

use crate::convos::ConvoSettings;
use crate::idempotency::IdempotencySettings;
use crate::keypackages::KeyPackageLimits;
use crate::ratelimit::{ClassLimits, RateLimitSettings};

/// A setting that cannot work, named by its flag.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// How DID documents are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DidResolution {
    /// The PLC directory and did:web over HTTPS, cached (production).
    Network,
    /// A directory of DID documents (local runs and tests).
    Directory,
}

/// Settings of `catbird-mls serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "CATBIRD_BIND", default_value = "127.0.0.1:2583")]
    pub bind: SocketAddr,
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Maximum connections in the database pool.
    #[arg(long, env = "CATBIRD_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
    /// This service's DID: the `aud` every service-auth token must carry.
    #[arg(long, env = "CATBIRD_SERVICE_DID", default_value = "did:web:localhost")]
    pub service_did: String,
    /// Where DID documents come from.
    #[arg(
        long,
        env = "CATBIRD_DID_RESOLUTION",
        value_enum,
        default_value = "directory"
    )]
    pub did_resolution: DidResolution,
    /// The DID document directory (with `--did-resolution directory`).
    #[arg(
        long,
        env = "CATBIRD_DID_DIRECTORY",
        default_value = "target/local/dids"
    )]
    pub did_directory: PathBuf,
    /// PLC directory base URL (with `--did-resolution network`).
    #[arg(long, env = "CATBIRD_PLC_URL", default_value = "https://plc.directory")]
    pub plc_url: String,
    /// Largest accepted request body, in bytes. An addMembers call carries a
    /// commit, a Welcome and a GroupInfo of up to 4 MiB each, as JSON.
    #[arg(long, env = "CATBIRD_MAX_BODY_BYTES", default_value_t = 24 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "CATBIRD_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// How many unused KeyPackages getKeyPackageStatus tells a device to keep.
    #[arg(long, env = "CATBIRD_KEY_PACKAGE_TARGET", default_value_t = 50)]
    pub key_package_target: u32,
    /// Below this many unused KeyPackages a device is told to replenish.
    #[arg(long, env = "CATBIRD_KEY_PACKAGE_LOW_WATER", default_value_t = 10)]
    pub key_package_low_water: u32,
    /// Most unused KeyPackages stored per device and cipher suite (at least
    /// twice the target, as the lexicon promises).
    #[arg(
        long,
        env = "CATBIRD_KEY_PACKAGE_MAX_PER_DEVICE",
        default_value_t = 200
    )]
    pub key_package_max_per_device: u32,
    /// How long a fetched Welcome can be fetched again before, unconfirmed,
    /// it counts as consumed, in seconds.
    #[arg(long, env = "CATBIRD_WELCOME_GRACE_SECONDS", default_value_t = 300)]
    pub welcome_grace_seconds: u32,
    /// How long a user whose last device left may still rejoin, in days.
    #[arg(long, env = "CATBIRD_REJOIN_WINDOW_DAYS", default_value_t = 30)]
    pub rejoin_window_days: u32,
    /// How often expired token ids, KeyPackages, idempotency keys and audit
    /// events are deleted, in seconds.
    #[arg(long, env = "CATBIRD_CLEANUP_INTERVAL_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub cleanup_interval_seconds: u64,
    /// How long an idempotencyKey and its stored response are kept, in
    /// seconds (the lexicons promise at least 24 hours).
    #[arg(long, env = "CATBIRD_IDEMPOTENCY_TTL_SECONDS", default_value_t = 24 * 60 * 60,
          value_parser = clap::value_parser!(u64).range(1..=10 * 365 * 24 * 60 * 60))]
    pub idempotency_ttl_seconds: u64,
    /// How long a request waits for a concurrent one with the same
    /// idempotencyKey before answering IdempotencyKeyInProgress, in seconds.
    #[arg(long, env = "CATBIRD_IDEMPOTENCY_WAIT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub idempotency_wait_seconds: u64,
    /// Requests per minute per caller DID for queries (0: unlimited).
    #[arg(long, env = "CATBIRD_RATE_LIMIT_READ", default_value_t = 600)]
    pub rate_limit_read: u32,
    /// Requests per minute per caller DID for procedures (0: unlimited).
    #[arg(long, env = "CATBIRD_RATE_LIMIT_WRITE", default_value_t = 300)]
    pub rate_limit_write: u32,
    /// Users asked for with getKeyPackages per minute per caller DID (0:
    /// unlimited; at least 50, one call's most, to allow every call). Each
    /// fetch uses up other users' KeyPackages, hence the stricter budget.
    #[arg(
        long,
        env = "CATBIRD_RATE_LIMIT_KEY_PACKAGE_FETCH",
        default_value_t = 100
    )]
    pub rate_limit_key_package_fetch: u32,
    /// Failed authentications per minute per client address, for queries
    /// (0: unlimited); past it the address is refused before its tokens
    /// are checked. Valid requests never spend it, so the users behind one
    /// PDS do not share a budget.
    #[arg(long, env = "CATBIRD_RATE_LIMIT_IP_READ", default_value_t = 120)]
    pub rate_limit_ip_read: u32,
    /// Failed authentications per minute per client address, procedures.
    #[arg(long, env = "CATBIRD_RATE_LIMIT_IP_WRITE", default_value_t = 60)]
    pub rate_limit_ip_write: u32,
    /// Failed authentications per minute per client address, getKeyPackages.
    #[arg(
        long,
        env = "CATBIRD_RATE_LIMIT_IP_KEY_PACKAGE_FETCH",
        default_value_t = 30
    )]
    pub rate_limit_ip_key_package_fetch: u32,
    /// Take the client address from this header (set by a trusted reverse
    /// proxy; its last entry) instead of the connection, e.g.
    /// `x-forwarded-for`.
    #[arg(long, env = "CATBIRD_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
    /// How long audit events are kept, in days.
    #[arg(long, env = "CATBIRD_AUDIT_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub audit_retention_days: u32,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "CATBIRD_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl ServeConfig {
    /// The idempotency settings.
    pub fn idempotency_settings(&self) -> IdempotencySettings {
        IdempotencySettings {
            ttl: Duration::from_secs(self.idempotency_ttl_seconds),
            wait: Duration::from_secs(self.idempotency_wait_seconds),
        }
    }

    /// The rate limits.
    pub fn rate_limit_settings(&self) -> Result<RateLimitSettings, ConfigError> {
        let client_ip_header = self
            .client_ip_header
            .as_deref()
            .map(|name| HeaderName::from_bytes(name.as_bytes()))
            .transpose()
            .map_err(|e| ConfigError(format!("--client-ip-header: {e}")))?;
        Ok(RateLimitSettings {
            per_caller: ClassLimits {
                read: NonZeroU32::new(self.rate_limit_read),
                write: NonZeroU32::new(self.rate_limit_write),
                key_package_fetch: NonZeroU32::new(self.rate_limit_key_package_fetch),
            },
            per_ip: ClassLimits {
                read: NonZeroU32::new(self.rate_limit_ip_read),
                write: NonZeroU32::new(self.rate_limit_ip_write),
                key_package_fetch: NonZeroU32::new(self.rate_limit_ip_key_package_fetch),
            },
            client_ip_header,
        })
    }

    /// How long audit events are kept.
    pub fn audit_retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.audit_retention_days) * 24 * 60 * 60)
    }

    /// The group lifecycle settings.
    pub fn convo_settings(&self) -> ConvoSettings {
        ConvoSettings {
            welcome_grace: chrono::Duration::seconds(i64::from(self.welcome_grace_seconds)),
            rejoin_window: chrono::Duration::days(i64::from(self.rejoin_window_days)),
        }
    }

    /// The KeyPackage limits, checked against each other.
    pub fn key_package_limits(&self) -> Result<KeyPackageLimits, ConfigError> {
        if self.key_package_max_per_device < self.key_package_target.saturating_mul(2) {
            return Err(ConfigError(format!(
                "--key-package-max-per-device ({}) must be at least twice --key-package-target ({})",
                self.key_package_max_per_device, self.key_package_target
            )));
        }
        if self.key_package_low_water > self.key_package_target {
            return Err(ConfigError(format!(
                "--key-package-low-water ({}) must not exceed --key-package-target ({})",
                self.key_package_low_water, self.key_package_target
            )));
        }
        Ok(KeyPackageLimits {
            target_count: self.key_package_target,
            low_water: self.key_package_low_water,
            max_unused_per_device: self.key_package_max_per_device,
        })
    }
}
