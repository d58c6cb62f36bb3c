//! `catbird-mls`: the delivery service and its operator commands. (The
//! developer tools, local identities, tokens and the demo, are the client
//! SDK's binary, `catbird-mls-client`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::io::Write as _;

use catbird_mls::config::ServeConfig;
use catbird_mls::{app, db, maintenance, rollout, telemetry};
use clap::{Parser, Subcommand};
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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => serve(config).await,
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
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Logging may not be set up (operator commands do not use it).
            let _ = writeln!(std::io::stderr(), "error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
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
    let state = Arc::new(catbird_mls::state::AppState::new(&config, pool)?);
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
