//! Why a benchmark run failed (before or around its measurements; a failed
//! request during a measurement is counted by status, not an error).

use catbird_mls_client::{DeviceError, LocalIdentityError};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A client operation while setting a scenario up.
    #[error("{0}")]
    Device(#[from] DeviceError),
    #[error("local identity: {0}")]
    Identity(#[from] LocalIdentityError),
    #[error("database: {0}")]
    Database(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The cluster, a service process or a scenario could not be set up.
    #[error("{0}")]
    Setup(String),
    /// The hostile-request run found a 5xx, a panic, a dead service or a
    /// changed conversation.
    #[error("hostile run failed: {0}")]
    Hostile(String),
    /// pgbench failed or printed no tps.
    #[error("pgbench: {0}")]
    Pgbench(String),
}

impl BenchError {
    pub fn database(error: sqlx::Error) -> Self {
        Self::Database(error.to_string())
    }

    pub fn io(what: String, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }
}
