//! Configuration from flags and environment. Every setting has a flag and an
//! environment variable. What is not given comes from the `--profile`:
//! `production` (the default) supplies only what is safe anywhere and
//! demands the rest (the service DID); `local` supplies the settings of a
//! local run (`did:web:localhost`, DID documents from `target/local/dids`).
//! [`ServeConfig::check`] checks every setting before anything connects.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::num::NonZeroU32;
use std::time::Duration;

use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::http::HeaderName;
use clap::{Args, ValueEnum};

use catbird_generated::lexicons::blue::catbird::mls::send_ephemeral;

use crate::connections::ConnectionSettings;
use crate::convos::ConvoSettings;
use crate::db::DatabaseUrl;
use crate::db::PoolSettings;
use crate::idempotency::IdempotencySettings;
use crate::keypackages::KeyPackageLimits;
use crate::ratelimit::{ClassLimits, RateLimitSettings};
use crate::realtime::RealtimeSettings;
use crate::realtime::ephemeral::EphemeralLimits;

/// A setting as the operator gives it: its flag and its environment
/// variable, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flag: &'static str,
    pub env: &'static str,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.flag, self.env)
    }
}

macro_rules! settings {
    ($($name:ident = $flag:literal, $env:literal;)*) => {
        $(
            #[doc = concat!("`", $flag, "` / `", $env, "`.")]
            pub const $name: Setting = Setting { flag: $flag, env: $env };
        )*
    };
}

settings! {
    PROFILE = "--profile", "CATBIRD_PROFILE";
    DATABASE_URL = "--database-url", "DATABASE_URL";
    DB_MAX_CONNECTIONS = "--db-max-connections", "CATBIRD_DB_MAX_CONNECTIONS";
    DB_WARM_CONNECTIONS = "--db-warm-connections", "CATBIRD_DB_WARM_CONNECTIONS";
    SERVICE_DID = "--service-did", "CATBIRD_SERVICE_DID";
    DID_RESOLUTION = "--did-resolution", "CATBIRD_DID_RESOLUTION";
    DID_DIRECTORY = "--did-directory", "CATBIRD_DID_DIRECTORY";
    PLC_URL = "--plc-url", "CATBIRD_PLC_URL";
    KEY_PACKAGE_TARGET = "--key-package-target", "CATBIRD_KEY_PACKAGE_TARGET";
    KEY_PACKAGE_LOW_WATER = "--key-package-low-water", "CATBIRD_KEY_PACKAGE_LOW_WATER";
    KEY_PACKAGE_MAX_PER_DEVICE = "--key-package-max-per-device", "CATBIRD_KEY_PACKAGE_MAX_PER_DEVICE";
    CLIENT_IP_HEADER = "--client-ip-header", "CATBIRD_CLIENT_IP_HEADER";
    PUBLIC_URL = "--public-url", "CATBIRD_PUBLIC_URL";
}

/// A setting that cannot work, named by its flag and environment variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting the chosen profile does not supply was not given.
    #[error("{setting} is required: {why}")]
    Missing { setting: Setting, why: &'static str },
    /// A setting's value cannot work.
    #[error("{setting}: {problem}")]
    Invalid { setting: Setting, problem: String },
    /// Two settings contradict each other.
    #[error("{setting} contradicts {other}: {why}")]
    Conflict {
        setting: Setting,
        other: Setting,
        why: String,
    },
}

impl ConfigError {
    fn invalid(setting: Setting, problem: impl fmt::Display) -> Self {
        Self::Invalid {
            setting,
            problem: problem.to_string(),
        }
    }
}

/// Which defaults fill in what is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// A deployment: the service DID must be given, DIDs are resolved over
    /// the network unless `--did-resolution`/`--did-directory` say otherwise.
    Production,
    /// A local run (`scripts/serve`): service DID `did:web:localhost`, DID
    /// documents from the directory `target/local/dids`.
    Local,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Production => "production",
            Self::Local => "local",
        })
    }
}

impl Profile {
    /// The service DID of a local run.
    pub const LOCAL_SERVICE_DID: &'static str = catbird_mls_core::LOCAL_SERVICE_DID;
    /// The DID document directory of a local run (relative to the working
    /// directory).
    pub const LOCAL_DID_DIRECTORY: &'static str = "target/local/dids";
}

/// How DID documents are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DidResolution {
    /// The PLC directory and did:web over HTTPS, cached (production).
    Network,
    /// A directory of DID documents (local runs and tests).
    Directory,
}

/// Where DID documents come from, as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DidSource {
    /// An existing directory of DID documents.
    Directory(PathBuf),
    /// The network: did:plc through this PLC directory, did:web over HTTPS.
    Network { plc_url: String },
}

impl fmt::Display for DidSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Directory(path) => write!(f, "the directory {}", path.display()),
            Self::Network { plc_url } => write!(f, "the network (PLC directory {plc_url})"),
        }
    }
}

/// A [`ServeConfig`] whose settings were checked, with the defaults of its
/// profile filled in.
#[derive(Debug, Clone)]
pub struct CheckedConfig {
    pub config: ServeConfig,
    pub database: DatabaseUrl,
    pub service_did: Did,
    pub did_source: DidSource,
    pub key_packages: KeyPackageLimits,
    pub rate_limits: RateLimitSettings,
    /// Where PDSes reach this service: the endpoint of its DID document.
    pub public_url: String,
}

/// Settings of `catbird-mls serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Which defaults apply: `production` demands the service DID and
    /// resolves DIDs over the network; `local` runs as `scripts/serve` does
    /// (`did:web:localhost`, DID documents from `target/local/dids`).
    #[arg(
        long,
        env = "CATBIRD_PROFILE",
        value_enum,
        default_value = "production"
    )]
    pub profile: Profile,
    /// Address to listen on.
    #[arg(long, env = "CATBIRD_BIND", default_value = "127.0.0.1:2583")]
    pub bind: SocketAddr,
    /// The URL PDSes reach this service at: the endpoint of the `#atproto_mls`
    /// service in the DID document a did:web service DID publishes at
    /// `/.well-known/did.json`. Default: `https://<host>` of a did:web
    /// service DID; with `--profile local`, `http://<bind>`.
    #[arg(long, env = "CATBIRD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// PostgreSQL connection URL, `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Maximum connections in the database pool. More connections than
    /// the database server has cores to run them only add switching
    /// between its processes (on 2 cores, 20 instead of 10 cost sendMessage
    /// and rejoins 10-20% of their throughput; docs/BENCHMARKS.md).
    #[arg(long, env = "CATBIRD_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
    /// Database connections kept open while the service is quiet, so that
    /// a burst after a quiet spell does not wait for new connections
    /// [default: `--db-max-connections`, a fixed-size pool; 0 opens
    /// connections only on demand].
    #[arg(long, env = "CATBIRD_DB_WARM_CONNECTIONS")]
    pub db_warm_connections: Option<u32>,
    /// This service's DID: the `aud` every service-auth token must carry
    /// (required, except with `--profile local`: `did:web:localhost`).
    #[arg(long, env = "CATBIRD_SERVICE_DID")]
    pub service_did: Option<String>,
    /// Where DID documents come from [default: `directory` when
    /// `--did-directory` is given or with `--profile local`, else `network`].
    #[arg(long, env = "CATBIRD_DID_RESOLUTION", value_enum)]
    pub did_resolution: Option<DidResolution>,
    /// The DID document directory, which must exist (with `--did-resolution
    /// directory`; `--profile local`: `target/local/dids`).
    #[arg(long, env = "CATBIRD_DID_DIRECTORY")]
    pub did_directory: Option<PathBuf>,
    /// PLC directory base URL (with `--did-resolution network`).
    #[arg(long, env = "CATBIRD_PLC_URL", default_value = "https://plc.directory")]
    pub plc_url: String,
    /// How long a resolved DID document is kept, in seconds [default: 3600
    /// with network resolution; 0, the file read on every request, with a
    /// directory]. A signature that fails against a kept document fetches
    /// it again once, so a rotated key is picked up at once either way.
    #[arg(long, env = "CATBIRD_DID_CACHE_SECONDS")]
    pub did_cache_seconds: Option<u64>,
    /// Largest accepted request body, in bytes. An addMembers call carries a
    /// commit, a Welcome and a GroupInfo of up to 4 MiB each, as JSON.
    #[arg(long, env = "CATBIRD_MAX_BODY_BYTES", default_value_t = 24 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long a connection may wait for a request (after connecting, or
    /// after its last response) before it is closed, in milliseconds.
    #[arg(long, env = "CATBIRD_IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// How long a request's headers may take to arrive, from their first
    /// byte, before the connection is closed, in milliseconds.
    #[arg(long, env = "CATBIRD_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
    /// The longest pause while a request body is read, in milliseconds;
    /// a body that stalls longer is answered 408 and its connection closed.
    #[arg(long, env = "CATBIRD_BODY_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_ms: u64,
    /// Most connections held at once (WebSocket event streams included);
    /// more wait in the listen queue. Keep it below the open-file limit.
    #[arg(long, env = "CATBIRD_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most connections from one client address (more are closed at once;
    /// 0: no limit, e.g. behind a reverse proxy, where every connection
    /// comes from the proxy).
    #[arg(
        long,
        env = "CATBIRD_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_connections_per_address: u32,
    /// How long a request waits for a database connection before it is
    /// answered 503 ServiceUnavailable, in milliseconds (this bounds the
    /// answer while the database is down).
    #[arg(long, env = "CATBIRD_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_acquire_timeout_ms: u64,
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
    /// Frames an event stream may have waiting to be sent; a subscriber
    /// that falls further behind is told it is a slow consumer and
    /// disconnected (it reconnects and catches up from the log).
    #[arg(long, env = "CATBIRD_STREAM_QUEUE_FRAMES", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub stream_queue_frames: u32,
    /// Event streams one user (DID) may have open on one process at once;
    /// past it, subscribeConvoEvents answers 429 TooManyConnections.
    #[arg(long, env = "CATBIRD_MAX_STREAMS_PER_USER", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_user: u32,
    /// Largest sendEphemeral ciphertext, in bytes (the lexicon allows 4096).
    #[arg(long, env = "CATBIRD_EPHEMERAL_MAX_BYTES", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=send_ephemeral::Input::CIPHERTEXT_MAX as i64))]
    pub ephemeral_max_bytes: u32,
    /// sendEphemeral messages per minute per caller DID (0: unlimited).
    #[arg(long, env = "CATBIRD_RATE_LIMIT_EPHEMERAL", default_value_t = 120)]
    pub rate_limit_ephemeral: u32,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "CATBIRD_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl ServeConfig {
    /// Checks every setting and fills in the profile's defaults. Nothing
    /// here touches the network or the database: a configuration error is
    /// reported before anything connects.
    pub fn check(&self) -> Result<CheckedConfig, ConfigError> {
        let database = DatabaseUrl::parse(&self.database_url)
            .map_err(|e| ConfigError::invalid(DATABASE_URL, e))?;
        if self.db_max_connections == 0 {
            return Err(ConfigError::invalid(
                DB_MAX_CONNECTIONS,
                "must be at least 1",
            ));
        }
        if self.db_warm_connections > Some(self.db_max_connections) {
            return Err(ConfigError::invalid(
                DB_WARM_CONNECTIONS,
                format!(
                    "must not exceed {DB_MAX_CONNECTIONS} ({})",
                    self.db_max_connections
                ),
            ));
        }
        let service_did = self.service_did()?;
        Ok(CheckedConfig {
            database,
            public_url: self.public_url(&service_did)?,
            service_did,
            did_source: self.did_source()?,
            key_packages: self.key_package_limits()?,
            rate_limits: self.rate_limit_settings()?,
            config: self.clone(),
        })
    }

    /// `--public-url`, or the default a did:web service DID implies.
    fn public_url(&self, service_did: &Did) -> Result<String, ConfigError> {
        let url = match (&self.public_url, self.profile) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Profile::Local) => format!("http://{}", self.bind),
            (None, Profile::Production) => match service_did.as_str().strip_prefix("did:web:") {
                Some(host) => format!("https://{}", host.replace("%3A", ":")),
                // A did:plc document is published through the PLC directory,
                // not by this service: the URL is only documentation then.
                None => String::new(),
            },
        };
        if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError::invalid(PUBLIC_URL, "not an http(s) URL"));
        }
        Ok(url)
    }

    /// `--service-did`, which only a local run may leave out.
    fn service_did(&self) -> Result<Did, ConfigError> {
        let did = match (&self.service_did, self.profile) {
            (Some(did), _) => did.as_str(),
            (None, Profile::Local) => Profile::LOCAL_SERVICE_DID,
            (None, Profile::Production) => {
                return Err(ConfigError::Missing {
                    setting: SERVICE_DID,
                    why: "the DID PDSes put in the `aud` of service-auth tokens for this \
                          service, e.g. did:web:mls.example.com (a local run: --profile local)",
                });
            }
        };
        Did::new(did).map_err(|e| ConfigError::invalid(SERVICE_DID, e))
    }

    /// Where DID documents come from: `--did-resolution`, else a directory
    /// when `--did-directory` is given, else the profile's choice.
    fn did_source(&self) -> Result<DidSource, ConfigError> {
        let resolution = self.did_resolution.unwrap_or(
            if self.did_directory.is_some() || self.profile == Profile::Local {
                DidResolution::Directory
            } else {
                DidResolution::Network
            },
        );
        match resolution {
            DidResolution::Network => {
                if let Some(directory) = &self.did_directory {
                    return Err(ConfigError::Conflict {
                        setting: DID_DIRECTORY,
                        other: DID_RESOLUTION,
                        why: format!(
                            "{} is given, but DIDs are resolved over the network \
                             ({} network), which reads no directory",
                            directory.display(),
                            DID_RESOLUTION.flag
                        ),
                    });
                }
                let plc_url = self.plc_url.trim_end_matches('/');
                if !(plc_url.starts_with("https://") || plc_url.starts_with("http://")) {
                    return Err(ConfigError::invalid(
                        PLC_URL,
                        format!("{plc_url:?} is not an https:// or http:// URL"),
                    ));
                }
                Ok(DidSource::Network {
                    plc_url: plc_url.to_owned(),
                })
            }
            DidResolution::Directory => {
                let directory = match (&self.did_directory, self.profile) {
                    (Some(directory), _) => directory.clone(),
                    (None, Profile::Local) => PathBuf::from(Profile::LOCAL_DID_DIRECTORY),
                    (None, Profile::Production) => {
                        return Err(ConfigError::Missing {
                            setting: DID_DIRECTORY,
                            why: "--did-resolution directory reads DID documents from it",
                        });
                    }
                };
                check_directory(&directory)?;
                Ok(DidSource::Directory(directory))
            }
        }
    }

    /// The connection limits and timeouts.
    pub fn connection_settings(&self) -> ConnectionSettings {
        ConnectionSettings {
            max_connections: self.max_connections as usize,
            max_per_address: match self.max_connections_per_address {
                0 => None,
                limit => Some(limit as usize),
            },
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
        }
    }

    /// The longest pause while a request body is read.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// The database pool's size, warm size and acquire timeout.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.db_max_connections,
            warm_connections: self.db_warm_connections.unwrap_or(self.db_max_connections),
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
        }
    }

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
            .map_err(|e| ConfigError::invalid(CLIENT_IP_HEADER, e))?;
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

    /// The event-stream settings.
    pub fn realtime_settings(&self) -> RealtimeSettings {
        RealtimeSettings {
            queue_frames: self.stream_queue_frames as usize,
            max_streams_per_user: self.max_streams_per_user as usize,
            ticket_lifetime: Duration::from_secs(30),
        }
    }

    /// The sendEphemeral limits.
    pub fn ephemeral_limits(&self) -> EphemeralLimits {
        EphemeralLimits::new(
            self.ephemeral_max_bytes as usize,
            NonZeroU32::new(self.rate_limit_ephemeral),
        )
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
            return Err(ConfigError::Conflict {
                setting: KEY_PACKAGE_MAX_PER_DEVICE,
                other: KEY_PACKAGE_TARGET,
                why: format!(
                    "{} must be at least twice {} ({})",
                    self.key_package_max_per_device,
                    KEY_PACKAGE_TARGET.flag,
                    self.key_package_target
                ),
            });
        }
        if self.key_package_low_water > self.key_package_target {
            return Err(ConfigError::Conflict {
                setting: KEY_PACKAGE_LOW_WATER,
                other: KEY_PACKAGE_TARGET,
                why: format!(
                    "{} must not exceed {} ({})",
                    self.key_package_low_water, KEY_PACKAGE_TARGET.flag, self.key_package_target
                ),
            });
        }
        Ok(KeyPackageLimits {
            target_count: self.key_package_target,
            low_water: self.key_package_low_water,
            max_unused_per_device: self.key_package_max_per_device,
        })
    }
}

/// The DID document directory must be a directory this process can list.
fn check_directory(directory: &Path) -> Result<(), ConfigError> {
    let problem = match std::fs::read_dir(directory) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => "is not a directory".to_owned(),
        Err(e) => format!("cannot be read: {e}"),
    };
    Err(ConfigError::invalid(
        DID_DIRECTORY,
        format!("{} {problem}", directory.display()),
    ))
}
