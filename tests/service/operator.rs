//! What an operator meets when starting `catbird-mls serve`: the real binary,
//! against the `scripts/pg-start` cluster where a database is needed (a
//! fresh, unmigrated one per test). Mistakes surface in the order
//! configuration, database connection, listening address, each failure
//! naming what it was trying, and nothing is migrated before a configuration
//! error. The bare binary is production: it demands `--service-did`;
//! `--profile local` supplies the settings of a local run.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sqlx::PgPool;

/// Longest a run may take before the test gives up on it (a hang guard,
/// not a speed requirement).
const PATIENCE: Duration = Duration::from_secs(30);

/// A service DID for the runs that need one.
const SERVICE_DID: &str = "did:web:mls.operator.test";

/// `catbird-mls serve` with none of the environment's settings: only what a
/// test passes counts.
fn serve_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_catbird-mls"));
    command.arg("serve");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CATBIRD_") || name == "DATABASE_URL" {
            command.env_remove(name.as_ref());
        }
    }
    command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Runs a `serve` that must fail: its exit status and what it logged.
fn run_failing(mut command: Command) -> (ExitStatus, String) {
    let mut child = command.spawn().expect("starting catbird-mls");
    let mut stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    // stderr ends when the process exits.
    std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        let _ = sender.send(log);
    });
    match receiver.recv_timeout(PATIENCE) {
        Ok(log) => (child.wait().unwrap(), log),
        Err(_) => {
            let _ = child.kill();
            panic!("catbird-mls serve neither failed nor exited within {PATIENCE:?}");
        }
    }
}

/// Asserts a failed run exited non-zero and logged every one of `expected`.
fn assert_failed_with(run: &(ExitStatus, String), expected: &[&str]) {
    let (status, log) = run;
    assert!(!status.success(), "exited successfully:\n{log}");
    for text in expected {
        assert!(log.contains(text), "expected {text:?} in:\n{log}");
    }
}

/// A loopback address nothing listens on (bound, then released).
fn dead_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The URL of the test's own database on the `scripts/pg-start` cluster.
fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (scripts/pg-start)");
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let server = base.rsplit_once('/').expect("a URL with a database").0;
    format!("{server}/{database}")
}

/// Whether the migrations ever ran on this database.
async fn migrated(pool: &PgPool) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A directory removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "catbird-operator-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `serve` that started: stopped (killed) when dropped.
struct Running {
    child: Child,
    log: String,
}

impl Running {
    /// Starts `command` and waits until it logs `serving at`.
    fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("starting catbird-mls");
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Self {
            child,
            log: String::new(),
        };
        loop {
            match receiver.recv_timeout(PATIENCE) {
                Ok(line) => {
                    running.log.push_str(&line);
                    running.log.push('\n');
                    if line.contains("serving at http://") {
                        return running;
                    }
                }
                Err(_) => panic!("catbird-mls never said it was serving:\n{}", running.log),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn production_without_a_service_did_refuses_to_start_naming_the_flag() {
    // No database answers here: configuration is checked first.
    let mut command = serve_command();
    command.args([
        "--database-url",
        &format!("postgres://catbird@{}/catbird", dead_address()),
    ]);
    let run = run_failing(command);
    assert_failed_with(&run, &["--service-did", "is required", "--profile local"]);
    assert!(!run.1.contains("connecting"), "{}", run.1);
}

#[test]
fn a_database_url_that_is_not_one_names_the_flag() {
    for url in ["notaurl", "mysql://catbird@127.0.0.1/catbird"] {
        let mut command = serve_command();
        command.args(["--database-url", url, "--service-did", SERVICE_DID]);
        let run = run_failing(command);
        assert_failed_with(&run, &["--database-url", "not a PostgreSQL URL"]);
    }
}

#[test]
fn a_dead_database_port_names_the_address_and_the_cause() {
    let database = dead_address();
    // Busy, but the connection fails first.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut command = serve_command();
    command.args([
        "--database-url",
        &format!("postgres://catbird@{database}/catbird"),
        "--service-did",
        SERVICE_DID,
        "--bind",
        &busy.local_addr().unwrap().to_string(),
    ]);
    let run = run_failing(command);
    // Not the pool's "timed out": the cause, at once.
    assert_failed_with(
        &run,
        &[
            &format!("cannot connect to the database at {database}"),
            "Connection refused",
        ],
    );
}

#[sqlx::test(migrations = false)]
async fn a_busy_address_is_named_before_anything_is_migrated(pool: PgPool) {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap();
    let dids = ScratchDir::new("busy");
    let mut command = serve_command();
    command
        .args(["--database-url", &database_url(&pool)])
        .args(["--service-did", SERVICE_DID, "--did-directory"])
        .arg(dids.path())
        .args(["--bind", &address.to_string()]);
    let run = run_failing(command);
    assert_failed_with(
        &run,
        &[
            &format!("cannot listen on {address}"),
            "Address already in use",
        ],
    );
    assert!(
        !migrated(&pool).await,
        "migrated before binding:\n{}",
        run.1
    );
}

#[sqlx::test(migrations = false)]
async fn configuration_errors_name_the_flag_and_migrate_nothing(pool: PgPool) {
    let url = database_url(&pool);
    let dids = ScratchDir::new("config");
    let dids = dids.path().to_str().unwrap();
    let missing = format!("{dids}/missing");
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["--service-did", "is required"]),
        (
            &["--service-did", "mls.example.com"],
            &["--service-did", "invalid did"],
        ),
        (
            &["--service-did", SERVICE_DID, "--did-directory", &missing],
            &["--did-directory", &missing, "does not exist"],
        ),
        (
            &[
                "--service-did",
                SERVICE_DID,
                "--did-resolution",
                "directory",
            ],
            &["--did-directory", "is required"],
        ),
        (
            &[
                "--service-did",
                SERVICE_DID,
                "--did-resolution",
                "network",
                "--did-directory",
                dids,
            ],
            &["--did-directory", "contradicts", "--did-resolution"],
        ),
        (
            &[
                "--profile",
                "local",
                "--did-directory",
                dids,
                "--key-package-target",
                "150",
            ],
            &["--key-package-max-per-device", "--key-package-target"],
        ),
        (
            &[
                "--profile",
                "local",
                "--did-directory",
                dids,
                "--db-max-connections",
                "4",
                "--db-warm-connections",
                "5",
            ],
            &["--db-warm-connections", "must not exceed", "(4)"],
        ),
    ];
    for (flags, expected) in cases {
        let mut command = serve_command();
        command.args(["--database-url", &url]).args(*flags);
        let run = run_failing(command);
        assert_failed_with(&run, expected);
        assert!(run.1.contains("invalid configuration"), "{}", run.1);
        assert!(!migrated(&pool).await, "{flags:?} migrated:\n{}", run.1);
    }
}

#[sqlx::test(migrations = false)]
async fn production_needs_only_the_service_did_and_says_each_step(pool: PgPool) {
    let url = database_url(&pool);
    let address = dead_address();
    let mut command = serve_command();
    command.args([
        "--database-url",
        &url,
        "--service-did",
        SERVICE_DID,
        "--bind",
        &address.to_string(),
    ]);
    let running = Running::start(command);
    let endpoint = url.split_once('@').unwrap().1.split_once('/').unwrap().0;
    for step in [
        "profile production",
        &format!("service DID {SERVICE_DID}"),
        "DID documents from the network (PLC directory https://plc.directory)",
        &format!("connecting to the database at {endpoint}"),
        "migrations applied",
        &format!("serving at http://{address}"),
    ] {
        assert!(
            running.log.contains(step),
            "no {step:?} in:\n{}",
            running.log
        );
    }
    assert!(migrated(&pool).await);
}

#[sqlx::test(migrations = false)]
async fn the_local_profile_supplies_the_local_settings(pool: PgPool) {
    // The local DID directory is relative to the working directory.
    let checkout = ScratchDir::new("local");
    std::fs::create_dir_all(checkout.path().join("target/local/dids")).unwrap();
    let mut command = serve_command();
    command
        .current_dir(checkout.path())
        .env("CATBIRD_PROFILE", "local")
        .args(["--database-url", &database_url(&pool)])
        .args(["--bind", &dead_address().to_string()]);
    let running = Running::start(command);
    for step in [
        "profile local",
        "service DID did:web:localhost",
        "DID documents from the directory target/local/dids",
    ] {
        assert!(
            running.log.contains(step),
            "no {step:?} in:\n{}",
            running.log
        );
    }
}
