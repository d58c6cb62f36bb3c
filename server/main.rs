//! `catbird-mls`: the delivery service and its local tooling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use catbird_generated::lexicons::blue::catbird::mls::publish_key_package;
use catbird_mls::config::ServeConfig;
use catbird_mls::device::DeviceId;
use catbird_mls::{app, db, demo, keypackages, maintenance, mls_crypto, rollout, telemetry};
use std::io::Write as _;
use std::path::PathBuf;

use catbird_generated::runtime::Did;
use catbird_mls::auth::{self, Algorithm};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::Notify;

#[derive(Parser)]
#[command(version, about = "An MLS delivery service for the AT Protocol")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run migrations, then serve until SIGTERM or Ctrl-C.
    Serve(ServeConfig),
    /// Create a local identity: a key and its DID document in the local
    /// DID directory, for trying the service without a PDS. Prints the DID.
    CreateIdentity {
        /// A short name; the handle becomes `<name>.test`.
        name: String,
        /// Signature algorithm of the key.
        #[arg(long, value_enum, default_value = "es256k")]
        algorithm: KeyAlgorithm,
        #[arg(
            long,
            env = "CATBIRD_DID_DIRECTORY",
            default_value = "target/local/dids"
        )]
        did_directory: PathBuf,
    },
    /// Print a short-lived service-auth token of a local identity for one
    /// method, for `curl -H "Authorization: Bearer $(...)"`.
    Token {
        /// The identity's DID (from `create-identity`).
        did: String,
        /// The method (NSID) the token is for: its `lxm` claim.
        method: String,
        /// Token lifetime in seconds.
        #[arg(long, default_value_t = 60)]
        lifetime: u64,
        /// The service DID (the token's `aud`).
        #[arg(long, env = "CATBIRD_SERVICE_DID", default_value = "did:web:localhost")]
        service_did: String,
        #[arg(
            long,
            env = "CATBIRD_DID_DIRECTORY",
            default_value = "target/local/dids"
        )]
        did_directory: PathBuf,
    },
    /// Print the JSON body of a publishKeyPackage call carrying a fresh
    /// KeyPackage of a device of a local identity, for trying the directory
    /// with curl. Its private keys are discarded: it can be published and
    /// fetched, never used to join a group.
    KeyPackage {
        /// The identity's DID.
        did: String,
        /// The device name: the credential is `<did>#<device>`.
        #[arg(long, default_value = "cli")]
        device: String,
        /// The cipher suite, by its RFC 9420 name.
        #[arg(long, default_value = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519")]
        cipher_suite: String,
        /// Make it a last-resort KeyPackage.
        #[arg(long)]
        last_resort: bool,
    },
    /// Show or change the external-commit rollout switch, for every
    /// running service process at once (it is read per request). Prints
    /// the resulting state as JSON.
    ExternalCommits {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Switch external commits on.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Switch external commits off: every caller gets ExternalCommitNotEnabled.
        #[arg(long)]
        disable: bool,
        /// The share of users (by a stable hash of their DID) allowed.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: Option<u8>,
        /// Always allow this DID (while enabled); repeatable.
        #[arg(long, value_name = "DID")]
        allow: Vec<String>,
        /// Remove this DID from the allow-list; repeatable.
        #[arg(long, value_name = "DID")]
        disallow: Vec<String>,
    },
    /// Run the demo against a running service (`scripts/serve`): new local
    /// users alice and bob talk in a conversation, bob's phone is lost and
    /// his new phone rejoins by external commit. One line per step.
    Demo {
        /// The service's base URL.
        #[arg(long, default_value = "http://127.0.0.1:2583")]
        url: String,
        /// The DID directory the service resolves DIDs from.
        #[arg(
            long,
            env = "CATBIRD_DID_DIRECTORY",
            default_value = "target/local/dids"
        )]
        did_directory: PathBuf,
        /// The service DID (the `aud` of the users' tokens).
        #[arg(long, env = "CATBIRD_SERVICE_DID", default_value = "did:web:localhost")]
        service_did: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyAlgorithm {
    Es256k,
    Es256,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => serve(config).await,
        Command::CreateIdentity {
            name,
            algorithm,
            did_directory,
        } => {
            let algorithm = match algorithm {
                KeyAlgorithm::Es256k => Algorithm::Es256k,
                KeyAlgorithm::Es256 => Algorithm::Es256,
            };
            auth::create_identity(&did_directory, &name, algorithm)
                .map_err(Into::into)
                .and_then(|identity| print_line(identity.did.as_str()))
        }
        Command::KeyPackage {
            did,
            device,
            cipher_suite,
            last_resort,
        } => key_package(&did, &device, &cipher_suite, last_resort),
        Command::Demo {
            url,
            did_directory,
            service_did,
        } => demo(url, did_directory, &service_did).await,
        Command::ExternalCommits {
            database_url,
            enable,
            disable,
            percent,
            allow,
            disallow,
        } => {
            let change = rollout::Change {
                enabled: (enable || disable).then_some(enable),
                percent,
                allow,
                disallow,
            };
            external_commits(&database_url, &change).await
        }
        Command::Token {
            did,
            method,
            lifetime,
            service_did,
            did_directory,
        } => token(
            &did,
            &method,
            Duration::from_secs(lifetime),
            &service_did,
            &did_directory,
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Logging may not be set up (the local tools do not use it).
            let _ = writeln!(std::io::stderr(), "error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn token(
    did: &str,
    method: &str,
    lifetime: Duration,
    service_did: &str,
    directory: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let identity = auth::load_identity(directory, &Did::new(did)?)?;
    let audience = Did::new(service_did)?;
    print_line(&auth::mint_token(&identity, &audience, method, lifetime))
}

fn key_package(
    did: &str,
    device: &str,
    cipher_suite: &str,
    last_resort: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let device = DeviceId::parse(&format!("{did}#{device}"))?;
    let suite = mls_crypto::requested_cipher_suite(cipher_suite)?;
    let body = publish_key_package::Input {
        extra: Default::default(),
        key_package: keypackages::throwaway_key_package(&device, &suite, last_resort)?.into(),
        idempotency_key: None,
    };
    print_line(&serde_json::to_string(&body)?)
}

async fn demo(
    url: String,
    did_directory: PathBuf,
    service_did: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let options = demo::story::Options {
        url,
        did_directory,
        service_did: Did::new(service_did)?,
    };
    demo::story::run(&options, &mut std::io::stdout()).await?;
    Ok(())
}

/// Applies a change to the rollout switch (none: just reads it) and prints
/// the state.
async fn external_commits(
    database_url: &str,
    change: &rollout::Change,
) -> Result<(), Box<dyn std::error::Error>> {
    // No migrations here: the servers own the schema, and an operator's
    // tool must not move it ahead of them.
    let pool = db::connect(database_url, 1).await?;
    let state = if change.is_empty() {
        rollout::load(&pool).await?
    } else {
        rollout::change(&pool, change).await?
    };
    print_line(&serde_json::to_string(&state)?)
}

/// The tools print their result on stdout, for shell use.
fn print_line(text: &str) -> Result<(), Box<dyn std::error::Error>> {
    writeln!(std::io::stdout(), "{text}")?;
    Ok(())
}

async fn serve(config: ServeConfig) -> Result<(), Box<dyn std::error::Error>> {
    telemetry::init_logging(config.log_json);
    let pool = db::connect(&config.database_url, config.db_max_connections).await?;
    db::migrate(&pool).await?;
    let state = Arc::new(app::AppState::new(&config, pool)?);
    let cleanup = Duration::from_secs(config.cleanup_interval_seconds);
    tokio::spawn(maintenance::run_periodically(state.clone(), cleanup));
    let app = app::router(state, config.max_body_bytes)
        // The peer address, for per-address rate limits and the audit log.
        .into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    tracing::info!(address = %listener.local_addr()?, version = catbird_mls::VERSION, "serving");

    // On SIGTERM stop accepting, let in-flight requests finish, but not for
    // longer than the grace period.
    let stopping = Arc::new(Notify::new());
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let stopping = stopping.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: draining in-flight requests");
            stopping.notify_one();
        }
    });
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    tokio::select! {
        result = server => result?,
        () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            // Requests were cut off: say so in the exit status too.
            return Err("shutdown grace period over with requests still in flight".into());
        }
    }
    tracing::info!("stopped");
    Ok(())
}

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
