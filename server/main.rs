//! `catbird-mls`: the delivery service and its operator commands. (The
//! developer tools, local identities, tokens and the demo, are the client
//! SDK's binary, `catbird-mls-client`.)

use std::io::Write as _;

use catbird_mls::config::{self, ConfigError, ServeConfig};
use catbird_mls::{app, db, rollout, telemetry};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "An MLS delivery service for the AT Protocol")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration, connect to the database, bind the address,
    /// run migrations, then serve until SIGTERM or Ctrl-C.
    Serve(Box<ServeConfig>),
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
        Command::Serve(config) => return serve(*config).await,
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
    let database = db::DatabaseUrl::parse(database_url).map_err(|e| ConfigError::Invalid {
        setting: config::DATABASE_URL,
        problem: e.to_string(),
    })?;
    let pool = db::connect(
        &database,
        db::PoolSettings {
            max_connections: 1,
            warm_connections: 0,
            acquire_timeout: std::time::Duration::from_secs(5),
        },
    )
    .await?;
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

/// `catbird-mls serve` (see [`app::serve`]); its failure is logged, like
/// everything the service says.
async fn serve(config: ServeConfig) -> std::process::ExitCode {
    telemetry::init_logging(config.log_json);
    match app::serve(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}
