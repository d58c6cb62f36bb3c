//! Service auth over real HTTP, against the running service and PostgreSQL.
//!
//! Valid ES256K and ES256 tokens are accepted, by the plain HTTP client and
//! by the generated one. Every kind of bad credential is a 401 XRPC error
//! with `WWW-Authenticate`, and provably never reaches the handler: the
//! rejections are sent to `publishKeyPackage`, whose handler stores a row,
//! with a KeyPackage that the same request with a valid token does store.

use crate::common::TestApp;
use crate::common::mls;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catbird_generated::lexicons::blue::catbird::mls::{
    get_key_package_status, publish_key_package,
};
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use catbird_generated::runtime::xrpc::reqwest::{Response, StatusCode, Url};
use catbird_mls_client as client;
use catbird_mls_core::auth::jwt::{self, Claims, Header};
use catbird_mls_core::auth::{self, Algorithm, PrivateKey};
use serde_json::{Value, json};
use sqlx::PgPool;

const STATUS: &str = get_key_package_status::NSID;
const PUBLISH: &str = publish_key_package::NSID;

// ---- acceptance -------------------------------------------------------------

#[sqlx::test(migrations = "./migrations")]
async fn get_key_package_status_accepts_es256k_and_es256_tokens(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for algorithm in [Algorithm::Es256k, Algorithm::Es256] {
        let user = app.user_with(&format!("{algorithm:?}").to_lowercase(), algorithm);
        let device_id = phone(&user.did);
        let response = app
            .http()
            .get(status_url(&app, &device_id))
            .header(AUTHORIZATION, bearer(&app.token(&user, STATUS)))
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), StatusCode::OK, "{algorithm:?}");
        let body = json_body(response).await;
        assert_eq!(body["deviceId"], device_id.as_str());
        assert_eq!(body["available"], 0);
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn publish_key_package_accepts_es256k_and_es256_tokens(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for (stored, algorithm) in [(1, Algorithm::Es256k), (2, Algorithm::Es256)] {
        let user = app.user_with(&format!("{algorithm:?}").to_lowercase(), algorithm);
        let authorization = bearer(&app.token(&user, PUBLISH));
        let response = publish(&app, &user.did, Some(&authorization)).await;

        assert_eq!(response.status(), StatusCode::OK, "{algorithm:?}");
        assert_eq!(json_body(response).await["deviceId"], phone(&user.did));
        assert_eq!(stored_key_packages(&app.pool).await, stored);
        let owned: i64 = sqlx::query_scalar("SELECT count(*) FROM key_packages WHERE did = $1")
            .bind(user.did.as_str())
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(owned, 1);
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn the_generated_client_authenticates_every_call(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let client = app.client(&alice);
    let device = mls::installation(&alice.did, "phone");

    let published = client
        .publish_key_package(&publish_key_package::Input {
            extra: Default::default(),
            key_package: mls::key_package(&device),
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert_eq!(published.device_id, device.identity());

    let status = client
        .get_key_package_status(&get_key_package_status::Params {
            device_id: device.identity().to_owned(),
            cipher_suite: None,
        })
        .await
        .unwrap();
    assert_eq!(status.device_id, device.identity());
    assert_eq!(status.available, 1);
}

#[sqlx::test(migrations = "./migrations")]
async fn accepted_token_ids_are_recorded_in_postgres(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let token = app.token(&alice, STATUS);
    let jti = claims_of(&token).jti.expect("minted tokens carry a jti");

    let response = app
        .http()
        .get(status_url(&app, &phone(&alice.did)))
        .header(AUTHORIZATION, bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let recorded: Vec<(String, String)> = sqlx::query_as("SELECT issuer, jti FROM auth_jti")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(recorded, [(alice.did.to_string(), jti)]);
}

// ---- rejection --------------------------------------------------------------

#[sqlx::test(migrations = "./migrations")]
async fn a_missing_authorization_header_is_authentication_required(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");

    let rejection = publish_rejected(&app, &alice.did, None).await;

    assert_eq!(rejection.error, "AuthenticationRequired");
    assert_eq!(rejection.www_authenticate, "Bearer");
}

#[sqlx::test(migrations = "./migrations")]
async fn malformed_credentials_are_rejected(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let valid = app.token(&alice, PUBLISH);

    for authorization in [
        "Bearer not.a.jwt".to_owned(),
        "Basic xyz".to_owned(),
        // A valid token in the wrong scheme.
        format!("Basic {valid}"),
    ] {
        let message = invalid_token(&app, &alice.did, &authorization).await;
        assert!(message.contains("malformed"), "{authorization}: {message}");
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_token_signed_by_another_key_is_rejected(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let impostor = PrivateKey::generate(Algorithm::Es256k).unwrap();
    let claims = claims_of(&app.token(&alice, PUBLISH));

    let message = invalid_token(&app, &alice.did, &bearer(&jwt::sign(&claims, &impostor))).await;

    assert!(message.contains("signature"), "{message}");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_token_with_a_flipped_signature_byte_is_rejected(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let token = app.token(&alice, PUBLISH);
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    signature[10] ^= 0x01;
    let tampered = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));

    let message = invalid_token(&app, &alice.did, &bearer(&tampered)).await;

    assert!(message.contains("signature"), "{message}");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_token_for_another_service_is_rejected(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let mut claims = claims_of(&app.token(&alice, PUBLISH));
    claims.aud = "did:web:other-service.test".into();

    let token = jwt::sign(&claims, &alice.key);
    let message = invalid_token(&app, &alice.did, &bearer(&token)).await;

    assert!(message.contains("audience"), "{message}");
}

#[sqlx::test(migrations = "./migrations")]
async fn an_expired_token_is_rejected(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let mut claims = claims_of(&app.token(&alice, PUBLISH));
    // Ten minutes ago: well past the clock-skew allowance.
    claims.exp -= 60 + 600;
    claims.iat = claims.iat.map(|iat| iat - 60 - 600);

    let token = jwt::sign(&claims, &alice.key);
    let message = invalid_token(&app, &alice.did, &bearer(&token)).await;

    assert!(message.contains("expired"), "{message}");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_token_for_another_method_is_rejected(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");

    let token = app.token(&alice, STATUS);
    let message = invalid_token(&app, &alice.did, &bearer(&token)).await;

    assert!(message.contains(STATUS), "{message}");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_replayed_token_is_rejected(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let authorization = bearer(&app.token(&alice, PUBLISH));

    let first = publish(&app, &alice.did, Some(&authorization)).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(stored_key_packages(&app.pool).await, 1);

    // The replay carries a new KeyPackage, which the handler would store.
    let message = invalid_token(&app, &alice.did, &authorization).await;
    assert!(message.contains("already used"), "{message}");
    assert_eq!(stored_key_packages(&app.pool).await, 1);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_token_sent_many_times_at_once_is_accepted_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let replayed = bearer(&app.token(&alice, PUBLISH));
    let fresh: Vec<String> = (0..10)
        .map(|_| bearer(&app.token(&alice, PUBLISH)))
        .collect();

    // Sent together, the copies and the fresh tokens reach the token id
    // recorder while it is busy and are recorded in shared batches.
    let requests = std::iter::repeat_n(&replayed, 10)
        .chain(&fresh)
        .map(|authorization| publish(&app, &alice.did, Some(authorization)));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(requests)
        .await
        .iter()
        .map(Response::status)
        .collect();

    let (copies, fresh) = statuses.split_at(10);
    let accepted_copies = copies.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(accepted_copies, 1, "{copies:?}");
    assert!(
        copies
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED)
    );
    assert!(fresh.iter().all(|s| *s == StatusCode::OK), "{fresh:?}");
    assert_eq!(stored_key_packages(&app.pool).await, 11);
}

#[sqlx::test(migrations = "./migrations")]
async fn two_replicas_share_token_ids_and_expired_ids_can_be_reused(pool: PgPool) {
    use catbird_mls::auth::{PgReplayStore, ReplayStore as _};
    let (first, second) = (
        PgReplayStore::new(pool.clone()),
        PgReplayStore::new(pool.clone()),
    );
    let alice = Did::new("did:plc:alice").unwrap();
    let later = chrono::Utc::now() + chrono::Duration::minutes(1);

    // Every id offered to both replicas at once wins exactly once.
    let uses = (0..20).flat_map(|i| {
        let (id, alice) = (format!("id-{i}"), &alice);
        [&first, &second].map(|store| {
            let id = id.clone();
            async move { store.first_use(&id, alice, later).await.unwrap() }
        })
    });
    let first_uses = futures_util::future::join_all(uses).await;
    assert_eq!(first_uses.iter().filter(|first| **first).count(), 20);
    assert!(!first.first_use("id-0", &alice, later).await.unwrap());

    // An id whose token has expired (and is not cleaned up yet) is new again.
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    assert!(first.first_use("old", &alice, past).await.unwrap());
    assert!(second.first_use("old", &alice, later).await.unwrap());
    assert!(!first.first_use("old", &alice, later).await.unwrap());
}

#[sqlx::test(migrations = "./migrations")]
async fn an_access_token_is_rejected(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let claims = claims_of(&app.token(&alice, PUBLISH));
    let header = Header {
        alg: "ES256K".into(),
        typ: Some("at+jwt".into()),
    };

    let token = jwt::sign_with_header(&header, &claims, &alice.key);
    let message = invalid_token(&app, &alice.did, &bearer(&token)).await;

    assert!(message.contains("at+jwt"), "{message}");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_token_from_an_unresolvable_did_is_rejected(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // A real key and a well-formed did:plc, but its document is not in the
    // directory the service resolves from.
    let elsewhere = tempfile::tempdir().unwrap();
    let stranger =
        client::create_identity(elsewhere.path(), "stranger", Algorithm::Es256k).unwrap();
    assert!(
        !app.did_directory()
            .join(auth::did::file_name(&stranger.did))
            .exists()
    );

    let token = app.token(&stranger, PUBLISH);
    let message = invalid_token(&app, &stranger.did, &bearer(&token)).await;

    assert!(message.contains("resolve"), "{message}");
}

// ---- helpers ----------------------------------------------------------------

/// What a 401 said.
struct Rejection {
    error: String,
    message: String,
    www_authenticate: String,
}

/// Sends `publishKeyPackage` with `authorization` and a fresh KeyPackage of
/// `did#phone`, and checks that it was refused with a 401 XRPC error before
/// the handler ran: no KeyPackage was stored.
async fn publish_rejected(app: &TestApp, did: &Did, authorization: Option<&str>) -> Rejection {
    let stored_before = stored_key_packages(&app.pool).await;
    let response = publish(app, did, authorization).await;

    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "{authorization:?}"
    );
    let www_authenticate = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .expect("a 401 carries WWW-Authenticate")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let body = json_body(response).await;
    let fields = body.as_object().expect("an XRPC error body is an object");
    assert_eq!(fields.len(), 2, "{body}");
    let (Some(Value::String(error)), Some(Value::String(message))) =
        (fields.get("error"), fields.get("message"))
    else {
        panic!("not an XRPC error body: {body}");
    };
    assert_eq!(
        stored_key_packages(&app.pool).await,
        stored_before,
        "the handler ran for {authorization:?}"
    );
    Rejection {
        error: error.clone(),
        message: message.clone(),
        www_authenticate,
    }
}

/// [`publish_rejected`] for a credential that is present but bad: returns
/// the message of the `InvalidToken` error.
async fn invalid_token(app: &TestApp, did: &Did, authorization: &str) -> String {
    let rejection = publish_rejected(app, did, Some(authorization)).await;
    assert_eq!(rejection.error, "InvalidToken", "{}", rejection.message);
    assert_eq!(
        rejection.www_authenticate,
        r#"Bearer error="invalid_token""#
    );
    rejection.message
}

/// POSTs `publishKeyPackage` with a fresh KeyPackage of `did#phone`.
async fn publish(app: &TestApp, did: &Did, authorization: Option<&str>) -> Response {
    let body = json!({ "keyPackage": mls::key_package(&mls::installation(did, "phone")) });
    let mut request = app
        .http()
        .post(app.url(&format!("/xrpc/{PUBLISH}")))
        .header(CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap());
    if let Some(authorization) = authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    request.send().await.unwrap()
}

async fn stored_key_packages(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM key_packages")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn status_url(app: &TestApp, device_id: &str) -> Url {
    let url = app.url(&format!("/xrpc/{STATUS}"));
    Url::parse_with_params(&url, [("deviceId", device_id)]).unwrap()
}

/// The device id `did#phone`.
fn phone(did: &Did) -> String {
    format!("{}#phone", did.as_str())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The claims of a minted token (fresh `jti`, `iat` now), for a test to
/// alter and sign again.
fn claims_of(token: &str) -> Claims {
    jwt::parse(token).unwrap().claims
}

async fn json_body(response: Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}
