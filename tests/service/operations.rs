//! The operations surface: `/xrpc/_health` (200 with the version and a live
//! database, 503 without one), `/metrics` (request counts by method and
//! status, a latency histogram, pool gauges), and the real binary's graceful
//! shutdown: after SIGTERM it refuses new connections, finishes the request
//! in flight, and exits with status 0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::metrics::Metrics;
use crate::common::mls;
use crate::common::process::{PATIENCE, ServerProcess, database_url};
use crate::common::{SERVICE_DID, TestApp};
use catbird_generated::lexicons::blue::catbird::mls::{
    get_key_package_status, publish_key_package,
};
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use catbird_generated::runtime::xrpc::reqwest::{self, StatusCode, Url};
use catbird_mls::db;
use catbird_mls_client as client;
use catbird_mls_core::auth::{Algorithm, jwt};
use serde_json::{Value, json};
use sqlx::PgPool;

const STATUS: &str = get_key_package_status::NSID;
const PUBLISH: &str = publish_key_package::NSID;

// ---- health -----------------------------------------------------------------

#[sqlx::test(migrations = "./migrations")]
async fn health_reports_the_version_and_a_reachable_database(pool: PgPool) {
    let app = TestApp::spawn(pool).await;

    let response = app
        .http()
        .get(app.url("/xrpc/_health"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(response).await;
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["database"], "ok");
}

#[sqlx::test(migrations = "./migrations")]
async fn health_is_503_when_the_database_is_unreachable(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // The service holds a clone of this pool: closing one closes both.
    app.pool.close().await;

    let response = app
        .http()
        .get(app.url("/xrpc/_health"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json_body(response).await;
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["database"], "unreachable");
}

// ---- metrics ----------------------------------------------------------------

#[sqlx::test(migrations = "./migrations")]
async fn metrics_count_requests_by_method_and_status(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let status_url = Url::parse_with_params(
        &app.url(&format!("/xrpc/{STATUS}")),
        [("deviceId", format!("{}#phone", alice.did.as_str()))],
    )
    .unwrap();
    for _ in 0..2 {
        let response = app
            .http()
            .get(status_url.clone())
            .header(
                AUTHORIZATION,
                format!("Bearer {}", app.token(&alice, STATUS)),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let unauthenticated = app.http().get(status_url).send().await.unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let unknown = app
        .http()
        .get(app.url("/xrpc/com.example.noSuchMethod"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_IMPLEMENTED);

    let response = app.http().get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    let metrics = Metrics::parse(&text);

    // The recorder is process-wide: other tests in this binary add to the
    // same series, so counts are lower bounds.
    let requests = |method: &str, status: &str| {
        metrics.value(
            "xrpc_requests_total",
            &[("method", method), ("status", status)],
        )
    };
    assert!(requests(STATUS, "200") >= Some(2.0), "{text}");
    assert!(requests(STATUS, "401") >= Some(1.0), "{text}");
    assert!(requests("unmatched", "501") >= Some(1.0), "{text}");
    assert!(
        metrics.samples.iter().all(|sample| {
            sample.labels.get("method").map(String::as_str) != Some("com.example.noSuchMethod")
        }),
        "an unknown path got its own series:\n{text}"
    );

    let buckets: Vec<(f64, f64)> = metrics
        .samples_named("xrpc_request_duration_seconds_bucket")
        .filter(|sample| sample.labels.get("method").map(String::as_str) == Some(STATUS))
        .map(|sample| (sample.labels["le"].parse().unwrap(), sample.value))
        .collect();
    assert!(buckets.len() > 1, "{text}");
    assert!(
        buckets.is_sorted_by(|(le_a, a), (le_b, b)| le_a < le_b && a <= b),
        "buckets are cumulative and ordered by le: {buckets:?}"
    );
    assert_eq!(buckets.last().unwrap().0, f64::INFINITY);
    assert!(buckets.last().unwrap().1 >= 3.0, "{buckets:?}");
    let observed = metrics.value("xrpc_request_duration_seconds_count", &[("method", STATUS)]);
    assert!(observed >= Some(3.0), "{text}");

    for state in ["idle", "in_use"] {
        assert!(
            metrics
                .value("db_pool_connections", &[("state", state)])
                .is_some_and(|connections| connections >= 0.0),
            "{text}"
        );
    }
    assert!(
        metrics.value("db_pool_max_connections", &[]) > Some(0.0),
        "{text}"
    );
}

// ---- the pool ---------------------------------------------------------------

/// A burst after a quiet spell finds its connections open: `top_up` opens
/// what is missing up to the warm size, beside a connection in use, and
/// opens nothing more once the pool is that size. (A fixed-size pool, so
/// that the burst below can only be served by the connections kept open.)
#[sqlx::test(migrations = "./migrations")]
async fn the_pool_is_topped_up_to_its_warm_size(pool: PgPool) {
    let database = db::DatabaseUrl::parse(&database_url(&pool)).unwrap();
    let settings = db::PoolSettings {
        max_connections: 4,
        warm_connections: 4,
        acquire_timeout: Duration::from_secs(5),
    };
    let warm = db::connect(&database, settings).await.unwrap();
    let in_use = warm.acquire().await.unwrap();
    let before = warm.size();
    assert!(before < 4, "the pool starts small ({before})");

    let opened = db::top_up(&warm, settings.warm_connections).await;
    assert_eq!(opened, 4 - before);
    assert_eq!(warm.size(), 4);
    let burst = futures_util::future::try_join_all((0..3).map(|_| warm.acquire()))
        .await
        .unwrap();
    assert_eq!(warm.size(), 4, "the burst found its connections open");
    drop((burst, in_use));

    assert_eq!(db::top_up(&warm, settings.warm_connections).await, 0);
    assert_eq!(warm.size(), 4);
}

// ---- graceful shutdown ------------------------------------------------------

#[sqlx::test(migrations = "./migrations")]
async fn sigterm_lets_the_request_in_flight_finish(pool: PgPool) {
    let dids = tempfile::tempdir().unwrap();
    let alice = client::create_identity(dids.path(), "alice", Algorithm::Es256k).unwrap();
    let mut server = ServerProcess::start(
        &database_url(&pool),
        dids.path(),
        &["--shutdown-grace-seconds", "600"],
    )
    .await;

    // A publishKeyPackage request whose body arrives in two parts.
    let token = client::mint_token(
        &alice,
        &Did::new(SERVICE_DID).unwrap(),
        PUBLISH,
        Duration::from_secs(120),
    );
    let jti = jwt::parse(&token).unwrap().claims.jti.unwrap();
    let device = mls::installation(&alice.did, "phone");
    let body = serde_json::to_vec(&json!({ "keyPackage": mls::key_package(&device) })).unwrap();
    let (first_part, second_part) = body.split_at(body.len() / 2);
    let mut in_flight = TcpStream::connect(server.address).unwrap();
    write!(
        in_flight,
        "POST /xrpc/{PUBLISH} HTTP/1.1\r\n\
         Host: {address}\r\n\
         Authorization: Bearer {token}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n",
        address = server.address,
        length = body.len(),
    )
    .unwrap();
    in_flight.write_all(first_part).unwrap();

    // Authentication recorded the token's id: the request is being handled,
    // its handler waiting for the rest of the body.
    let started = Instant::now();
    while !jti_recorded(&pool, &jti).await {
        assert!(started.elapsed() < PATIENCE, "{}", server.log());
        server.assert_running();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.terminate();
    let started = Instant::now();
    while !server.refuses_connections() {
        assert!(
            started.elapsed() < PATIENCE,
            "still accepting connections after SIGTERM\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    in_flight.write_all(second_part).unwrap();
    let (status, response) = read_response(in_flight).await;
    assert_eq!(status, 200, "{response}\n{}", server.log());
    let response: Value = serde_json::from_str(&response).unwrap();
    assert_eq!(response["deviceId"], device.identity());

    let exit = server.wait_for_exit().await;
    assert!(exit.success(), "{exit}\n{}", server.log());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM key_packages WHERE device_id = $1")
        .bind(device.identity())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
}

async fn jti_recorded(pool: &PgPool, jti: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_jti WHERE jti = $1)")
        .bind(jti)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Reads an HTTP/1.1 response until the server closes the connection;
/// returns the status code and the body.
async fn read_response(mut stream: TcpStream) -> (u16, String) {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let raw = tokio::task::spawn_blocking(move || {
        let mut raw = String::new();
        stream
            .read_to_string(&mut raw)
            .expect("a response, then the connection closed");
        raw
    })
    .await
    .unwrap();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    (status, body.to_owned())
}

async fn json_body(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

// ---- the service's DID document -------------------------------------------------

#[sqlx::test(migrations = "./migrations")]
async fn a_did_web_service_publishes_its_did_document(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .http()
        .get(app.url("/.well-known/did.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_body(response).await,
        json!({
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": SERVICE_DID,
            "service": [{
                "id": "#atproto_mls",
                "type": "AtprotoMlsService",
                "serviceEndpoint": "https://mls.catbird.test",
            }],
        })
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_did_plc_service_has_no_did_document_here(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| {
        config.service_did = Some("did:plc:ewvi7nxzyoun6zhxrhs64oiz".into());
        config.public_url = Some("https://mls.example.com".into());
    })
    .await;
    let response = app
        .http()
        .get(app.url("/.well-known/did.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_body(response).await["error"], "NotFound");
}
