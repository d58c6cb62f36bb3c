//! `catbird-mls serve` as a real child process, for tests of the binary:
//! shutdown, crashes, several replicas on one database.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use catbird_generated::runtime::xrpc::reqwest::{self, StatusCode, Url};
use sqlx::PgPool;

use super::SERVICE_DID;

/// How long to wait for the binary to start, react or exit: generous, as CI
/// machines are slow. Never a measurement, only a bound on hanging.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// `catbird-mls serve` as a child process, killed if a test fails.
pub struct ServerProcess {
    child: Child,
    pub address: SocketAddr,
    /// The process's stdout and stderr, for failure messages.
    log: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts the binary on a free port, with `extra` flags, and waits
    /// until it is healthy.
    pub async fn start(database_url: &str, did_directory: &Path, extra: &[&str]) -> Self {
        Self::start_at(free_address(), database_url, did_directory, extra).await
    }

    /// [`Self::start`] on a given address (a restart on the same port).
    pub async fn start_at(
        address: SocketAddr,
        database_url: &str,
        did_directory: &Path,
        extra: &[&str],
    ) -> Self {
        let log = tempfile::tempdir().unwrap();
        let output = File::create(log.path().join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_catbird-mls"))
            .arg("serve")
            .args(["--bind", &address.to_string()])
            .args(["--database-url", database_url])
            .arg("--did-directory")
            .arg(did_directory)
            .args(["--service-did", SERVICE_DID])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .expect("starting catbird-mls");
        let mut server = Self {
            child,
            address,
            log,
        };

        let health = format!("http://{address}/xrpc/_health");
        let started = Instant::now();
        loop {
            server.assert_running();
            if let Ok(response) = reqwest::get(&health).await
                && response.status() == StatusCode::OK
            {
                return server;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "never healthy\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The service's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// SIGKILL: the process dies at once, mid-request.
    pub fn kill(&self) {
        self.signal("-KILL");
    }

    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} failed: {status}");
    }

    /// Whether a new TCP connection is refused.
    pub fn refuses_connections(&self) -> bool {
        match TcpStream::connect(self.address) {
            Ok(_) => false,
            // The connection reached the accept queue just as the listener
            // closed, which resets it: the next attempt is refused.
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(error) => {
                assert_eq!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionRefused,
                    "{error}"
                );
                true
            }
        }
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("catbird-mls exited early: {status}\n{}", self.log());
        }
    }

    pub async fn wait_for_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < PATIENCE, "did not exit\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.log.path().join("server.log")).unwrap_or_default();
        format!("--- catbird-mls output ---\n{log}")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback address no one listens on right now.
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
}

/// The URL of the test's own database: `DATABASE_URL`'s server, the
/// database `#[sqlx::test]` created.
pub fn database_url(pool: &PgPool) -> String {
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL (scripts/pg-start)");
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let mut url = Url::parse(&server).unwrap();
    url.set_path(&database);
    url.into()
}
