//! The service test harness: a real server on a random loopback port, over
//! the per-test PostgreSQL database that `#[sqlx::test]` creates on the
//! cluster started by `scripts/pg-start`, with DID documents in a temporary
//! directory and real service-auth tokens.

pub mod joiner;
pub mod member;
pub mod metrics;
pub mod mls;
pub mod process;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use catbird_generated::lexicons::blue::catbird::mls::defs::MessageView;
use catbird_generated::lexicons::blue::catbird::mls::{Client, get_messages};
use catbird_generated::runtime::xrpc::ClientError;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::xrpc::reqwest;
use catbird_generated::runtime::{DeclaredError, Did};
use catbird_mls::app;
use catbird_mls::config::ServeConfig;
use catbird_mls::state::AppState;
use catbird_mls_client::{self as client, LocalIdentity};
use catbird_mls_core::auth::Algorithm;
use clap::Parser;
use sqlx::PgPool;

/// The `aud` of every token in the tests.
pub const SERVICE_DID: &str = "did:web:mls.catbird.test";

/// `ServeConfig` from flags, so tests get the real defaults.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    serve: ServeConfig,
}

/// The settings a test server runs with, before a test adjusts them.
pub fn test_config(did_directory: &Path) -> ServeConfig {
    let directory = did_directory.to_str().expect("temporary paths are UTF-8");
    Flags::try_parse_from([
        "catbird-mls",
        "--database-url=postgres://unused",
        "--did-resolution=directory",
        &format!("--did-directory={directory}"),
        &format!("--service-did={SERVICE_DID}"),
    ])
    .expect("the test flags parse")
    .serve
}

/// A running service.
pub struct TestApp {
    pub address: SocketAddr,
    pub pool: PgPool,
    pub state: Arc<AppState>,
    dids: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
    fanout: tokio::task::JoinHandle<()>,
}

impl TestApp {
    /// Starts the service on `pool` with the default settings.
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, |_| {}).await
    }

    /// Starts the service after `adjust` has changed the settings.
    pub async fn spawn_with(pool: PgPool, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let dids = tempfile::tempdir().expect("a temporary directory");
        let mut config = test_config(dids.path());
        adjust(&mut config);
        let state = Arc::new(AppState::new(&config, pool.clone()).expect("test configuration"));
        let router = app::router(state.clone(), &config);
        let connections = config.connection_settings();
        let fanout = state.realtime.spawn_fanout(&pool);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            app::http_server(listener, router, connections)
                .await
                .expect("test server");
        });
        Self {
            address,
            pool,
            state,
            dids,
            server,
            fanout,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The directory the service resolves DIDs from.
    pub fn did_directory(&self) -> &Path {
        self.dids.path()
    }

    /// A new user with an ES256K key, resolvable by the service.
    pub fn user(&self, name: &str) -> LocalIdentity {
        self.user_with(name, Algorithm::Es256k)
    }

    pub fn user_with(&self, name: &str, algorithm: Algorithm) -> LocalIdentity {
        client::create_identity(self.dids.path(), name, algorithm).expect("creating an identity")
    }

    /// A fresh token of `user` for one method.
    pub fn token(&self, user: &LocalIdentity, nsid: &str) -> String {
        let audience = Did::new(SERVICE_DID).unwrap();
        client::mint_token(user, &audience, nsid, Duration::from_secs(60))
    }

    /// The generated client, acting as `user` (a fresh token per call).
    pub fn client(&self, user: &LocalIdentity) -> Client {
        client::service_client(&self.url(""), user, &Did::new(SERVICE_DID).unwrap())
    }

    /// A plain HTTP client, for exact status, header and body checks.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
        self.fanout.abort();
    }
}

/// Asserts that a call failed with the declared error `expected` and HTTP
/// `status`; returns the error's message for further checks.
pub fn assert_declared<T, E: DeclaredError + PartialEq + Debug>(
    result: Result<T, ClientError<E>>,
    expected: E,
    status: StatusCode,
) -> String {
    match result {
        Err(ClientError::Method(error)) => {
            assert_eq!(error.declared_error(), Some(&expected), "{error}");
            assert_eq!(error.status(), status, "{error}");
            error.message().to_owned()
        }
        Err(other) => panic!("expected {} ({status}), got {other}", expected.name()),
        Ok(_) => panic!("expected {} ({status}), got a success", expected.name()),
    }
}

/// The whole log of a conversation as `client` may read it, paging with
/// getMessages until `lastSeq` stops advancing; asserts there are no gaps.
pub async fn read_log(client: &Client, convo: &str) -> Vec<MessageView> {
    let mut entries = Vec::new();
    let mut since = 0;
    loop {
        let page = client
            .get_messages(&get_messages::Params {
                convo_id: convo.to_owned(),
                since_seq: since,
                limit: 100,
            })
            .await
            .unwrap();
        assert!(!page.gap_info.has_gaps, "{:?}", page.gap_info);
        entries.extend(page.messages);
        if page.last_seq == since {
            return entries;
        }
        since = page.last_seq;
    }
}
