//! The PostgreSQL pool and the embedded migrations.

use std::fmt;
use std::str::FromStr as _;
use std::time::Duration;

use catbird_generated::runtime::Did;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgPool};

use crate::error::ServiceError;

/// How long the first connection may take before startup gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled connection idle for longer than this is pinged before use.
///
/// sqlx already pings every connection as it goes back into the pool; one
/// that came back less than this long ago was alive then. Pinging it again
/// before each use (sqlx's `test_before_acquire`) added a round trip to
/// every one-statement request, a third of sendMessage's. Should the
/// database go away within this window, the request that meets the dead
/// connection fails with 503 like the others of the outage, and the
/// connection is dropped as it is released.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// A parsed `postgres://` (or `postgresql://`) URL. Displayed (and
/// debug-printed) without its password: `HOST:PORT` (or the socket
/// directory), database and user.
#[derive(Clone)]
pub struct DatabaseUrl {
    options: PgConnectOptions,
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// A database URL that cannot be used. Never repeats the URL, which may
/// carry a password.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("not a PostgreSQL URL (expected postgres://USER@HOST:PORT/DATABASE): {0}")]
    NotPostgres(String),
}

impl DatabaseUrl {
    /// Parses `url`, which must be a `postgres://` or `postgresql://` URL.
    pub fn parse(url: &str) -> Result<Self, DatabaseUrlError> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some(scheme)
                if scheme.eq_ignore_ascii_case("postgres")
                    || scheme.eq_ignore_ascii_case("postgresql") => {}
            Some(scheme) if !scheme.is_empty() && !scheme.contains(['/', '@', ' ']) => {
                return Err(DatabaseUrlError::NotPostgres(format!(
                    "the scheme is {scheme:?}"
                )));
            }
            _ => {
                return Err(DatabaseUrlError::NotPostgres(
                    "it does not start with postgres://".to_owned(),
                ));
            }
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| DatabaseUrlError::NotPostgres(e.to_string()))?;
        Ok(Self { options })
    }

    /// Where the server is: `HOST:PORT`, or the unix socket directory and port.
    pub fn endpoint(&self) -> String {
        match self.options.get_socket() {
            Some(directory) => format!(
                "unix socket {} port {}",
                directory.display(),
                self.options.get_port()
            ),
            None => format!("{}:{}", self.options.get_host(), self.options.get_port()),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.endpoint())?;
        if let Some(database) = self.options.get_database() {
            write!(f, " (database {database}")?;
        } else {
            write!(f, " (default database")?;
        }
        write!(f, ", user {})", self.options.get_username())
    }
}

/// The database could not be reached or refused us.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the database at {database}: {cause}")]
pub struct ConnectError {
    /// Where we tried, without the password.
    pub database: String,
    /// Why, e.g. `Connection refused (os error 111)`.
    pub cause: String,
}

impl ConnectError {
    fn new(database: &DatabaseUrl, error: &sqlx::Error) -> Self {
        let cause = match error {
            // "error communicating with database: ..." says less than the
            // operating system's own words.
            sqlx::Error::Io(io) => io.to_string(),
            sqlx::Error::Database(db) => db.message().to_owned(),
            other => other.to_string(),
        };
        Self {
            database: database.to_string(),
            cause,
        }
    }
}

/// Applying the embedded migrations failed.
#[derive(Debug, thiserror::Error)]
#[error("applying the migrations to the database at {database}: {source}")]
pub struct MigrateError {
    pub database: String,
    #[source]
    pub source: sqlx::migrate::MigrateError,
}

/// The migrations under `migrations/`, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The pool's limits: how many connections at most, how many are kept
/// open while the service is quiet, and how long a request waits for one.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub warm_connections: u32,
    pub acquire_timeout: Duration,
}

/// How long a connection above the warm size may stay idle.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How often [`keep_warm`] looks at the pool.
const WARM_CHECK_EVERY: Duration = Duration::from_secs(10);

/// Connects with limits that suit a request-per-connection service: a
/// bounded pool, a short acquire timeout (`acquire_timeout`, about a
/// second) so that an unreachable database or overload shows as a quick
/// 503 rather than a pile-up, connections checked before use only when
/// they have been idle for a second, and idle connections closed after
/// five minutes unless the whole pool is kept warm (then they live until
/// sqlx's maximum lifetime). The pool reconnects by itself once the
/// database is back.
///
/// One connection is made first, on its own: the pool would keep retrying
/// a refused connection until its acquire timeout and then report only that
/// it timed out, where this reports the cause at once.
pub async fn connect(
    database: &DatabaseUrl,
    settings: PoolSettings,
) -> Result<PgPool, ConnectError> {
    let first = tokio::time::timeout(CONNECT_TIMEOUT, database.options.connect())
        .await
        .map_err(|_| ConnectError {
            database: database.to_string(),
            cause: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        })?
        .map_err(|e| ConnectError::new(database, &e))?;
    // Only a probe: the pool makes its own connections.
    let _ = first.close().await;
    let idle_timeout =
        (settings.warm_connections < settings.max_connections).then_some(IDLE_TIMEOUT);
    // No `min_connections`: sqlx keeps that minimum with a task that holds
    // a pool permit while it retries a refused connection for up to five
    // minutes, so after a database outage requests would wait behind it.
    // `keep_warm` does the same job without holding anything while the
    // database is away.
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(idle_timeout)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(database.options.clone())
        .await
        .map_err(|e| ConnectError::new(database, &e))
}

/// Keeps `count` connections open for as long as the service runs,
/// checking every ten seconds (the first time at once).
///
/// Opening a PostgreSQL connection costs a process on the server and a few
/// milliseconds; a burst after a quiet spell (100 clients rejoining after a
/// network change) would otherwise open them on its critical path, which
/// halved the rejoins it completed per second (see docs/BENCHMARKS.md).
pub async fn keep_warm(pool: PgPool, count: u32) {
    if count == 0 {
        return;
    }
    let mut tick = tokio::time::interval(WARM_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        top_up(&pool, count).await;
    }
}

/// Opens connections until the pool holds `count`, and returns how many it
/// opened.
///
/// sqlx has no call that adds a connection, so the pool is made to open
/// them: a round asks for every idle connection and for the missing ones
/// at once, and holds them until all have come, so a request meanwhile
/// waits at most one connect for a connection. (A request that takes a
/// connection during the round leaves it short; another round follows.)
/// One connection is asked for alone first: while the database is away
/// that one fails, the next check tries again, and the round never takes
/// permits the requests' quick 503s need.
pub async fn top_up(pool: &PgPool, count: u32) -> u32 {
    let before = pool.size();
    if before >= count {
        return 0;
    }
    if let Err(error) = pool.acquire().await {
        tracing::debug!(%error, "keeping database connections open: not now");
        return 0;
    }
    loop {
        let size = pool.size();
        if size >= count {
            break;
        }
        let wanted = count - size + pool.num_idle() as u32;
        let round = futures_util::future::join_all((0..wanted).map(|_| pool.acquire())).await;
        if let Some(error) = round.iter().find_map(|held| held.as_ref().err()) {
            tracing::debug!(%error, "keeping database connections open: not now");
            break;
        }
        drop(round);
        if pool.size() <= size {
            break;
        }
    }
    pool.size().saturating_sub(before)
}

/// Applies every pending migration; returns how many the binary embeds
/// (all of them are applied afterwards).
pub async fn migrate(pool: &PgPool, database: &DatabaseUrl) -> Result<usize, MigrateError> {
    MIGRATOR.run(pool).await.map_err(|source| MigrateError {
        database: database.to_string(),
        source,
    })?;
    Ok(MIGRATOR.iter().count())
}

/// A DID read back from a table: validated on the way in, so a failure here
/// is our bug, not the caller's.
pub fn stored_did(did: &str) -> Result<Did, ServiceError> {
    Did::new(did).map_err(|e| ServiceError::Internal(format!("stored DID {did:?}: {e}")))
}

/// Whether the database answers.
pub async fn reachable(pool: &PgPool) -> bool {
    sqlx::query_scalar!("SELECT 1 AS \"one!\"")
        .fetch_one(pool)
        .await
        .is_ok()
}
