//! Hostile input below the lexicon's own constraints: U+0000 in strings
//! (which PostgreSQL `text` cannot hold), tokens of a forbidden type or
//! with an unknown `iss` service id, and request targets and headers too
//! large for the service or for hyper.

use std::time::Duration;

use catbird_generated::lexicons::blue::catbird::mls::{
    add_members, commit_group_change, confirm_welcome, create_convo, get_convos, get_epoch,
    get_key_package_status, get_messages, process_external_commit, publish_key_package,
    remove_member, send_message,
};
use catbird_generated::runtime::xrpc::XrpcError;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_mls::error::ServiceError;
use catbird_mls_core::auth::jwt::{Claims, Header, sign_with_header};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::json_body;
use crate::common::TestApp;

/// The procedures whose input has a free-text field that reaches a text
/// column, each with a body holding U+0000 in one such field.
const NUL_BODIES: &[(&str, &str, &str)] = &[
    (
        create_convo::NSID,
        "idempotencyKey",
        r#"{"groupId":"00ff","cipherSuite":"x","initialMembers":[],"idempotencyKey":"k\u0000"}"#,
    ),
    (
        add_members::NSID,
        "idempotencyKey",
        r#"{"convoId":"00ff","commit":{"$bytes":"AAAA"},"welcome":{"$bytes":"AAAA"},"groupInfo":{"$bytes":"AAAA"},"idempotencyKey":"\u0000"}"#,
    ),
    (
        remove_member::NSID,
        "idempotencyKey",
        r#"{"convoId":"00ff","did":"did:plc:abc","commit":{"$bytes":"AAAA"},"groupInfo":{"$bytes":"AAAA"},"idempotencyKey":"a\u0000b"}"#,
    ),
    (
        commit_group_change::NSID,
        "idempotencyKey",
        r#"{"convoId":"00ff","commit":{"$bytes":"AAAA"},"groupInfo":{"$bytes":"AAAA"},"idempotencyKey":"\u0000k"}"#,
    ),
    (
        process_external_commit::NSID,
        "idempotencyKey",
        r#"{"convoId":"00ff","commit":{"$bytes":"AAAA"},"groupInfo":{"$bytes":"AAAA"},"idempotencyKey":"k\u0000"}"#,
    ),
    (
        publish_key_package::NSID,
        "idempotencyKey",
        r#"{"keyPackage":{"$bytes":"AAAA"},"cipherSuite":"x","expires":"2030-01-01T00:00:00Z","idempotencyKey":"k\u0000"}"#,
    ),
    (
        send_message::NSID,
        "msgId",
        r#"{"convoId":"00ff","msgId":"m\u0000","ciphertext":{"$bytes":"AAAA"},"epoch":1}"#,
    ),
    (
        send_message::NSID,
        "idempotencyKey",
        r#"{"convoId":"00ff","msgId":"m","ciphertext":{"$bytes":"AAAA"},"epoch":1,"idempotencyKey":"\u0000"}"#,
    ),
    (
        confirm_welcome::NSID,
        "errorDetails",
        r#"{"convoId":"00ff","deviceId":"did:plc:abc#phone","success":false,"errorDetails":"bad\u0000"}"#,
    ),
];

/// Queries with U+0000 in a text parameter.
const NUL_QUERIES: &[(&str, &str, &str)] = &[
    (get_messages::NSID, "convoId", "convoId=00%00ff"),
    (get_epoch::NSID, "convoId", "convoId=%00"),
    (
        get_key_package_status::NSID,
        "deviceId",
        "deviceId=did:plc:abc%23ph%00one",
    ),
];

#[sqlx::test(migrations = "./migrations")]
async fn nul_in_a_text_field_is_a_400_naming_the_field(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let alice = app.user("alice");
    let http = app.http();
    let mut refused = 0;
    for (nsid, field, body) in NUL_BODIES {
        let response = http
            .post(app.url(&format!("/xrpc/{nsid}")))
            .bearer_auth(app.token(&alice, nsid))
            .header("content-type", "application/json")
            .body(*body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{nsid}");
        let body = json_body(response).await;
        assert_eq!(body["error"], "InvalidRequest", "{nsid}: {body}");
        assert_eq!(
            body["message"],
            format!("Input must be valid: {field}: must not contain U+0000 (NUL)"),
            "{nsid}"
        );
        refused += 1;
    }
    for (nsid, param, query) in NUL_QUERIES {
        let response = http
            .get(app.url(&format!("/xrpc/{nsid}?{query}")))
            .bearer_auth(app.token(&alice, nsid))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{nsid}");
        let body = json_body(response).await;
        assert_eq!(
            body["message"],
            format!("parameter \"{param}\" must not contain U+0000 (NUL)"),
            "{nsid}"
        );
        refused += 1;
    }
    // Nothing was stored on the way (an idempotency key is stored first).
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    println!(
        "NUL: {refused} requests on {} methods, every one 400 naming its field, 0 5xx, 0 rows",
        NUL_BODIES.len() + NUL_QUERIES.len() - 1
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_nul_that_reaches_the_database_is_still_a_400(pool: PgPool) {
    // Whatever slips past the request checks: PostgreSQL's own refusal.
    let error = sqlx::query("SELECT $1::text")
        .bind("a\0b")
        .execute(&pool)
        .await
        .unwrap_err();
    let error = XrpcError::from(ServiceError::Database(error));
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error.error(), "InvalidRequest");
}

/// A token of `user` for getConvos with `typ` and `iss` as given.
fn token(user: &catbird_mls_client::LocalIdentity, typ: &str, iss: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: iss.to_owned(),
        aud: crate::common::SERVICE_DID.to_owned(),
        exp: now + 60,
        iat: Some(now),
        nbf: None,
        lxm: Some(get_convos::NSID.to_owned()),
        jti: Some(format!("{typ}-{iss}")),
    };
    let header = Header {
        alg: "ES256K".to_owned(),
        typ: Some(typ.to_owned()),
    };
    sign_with_header(&header, &claims, &user.key)
}

#[sqlx::test(migrations = "./migrations")]
async fn access_token_types_and_unknown_iss_fragments_are_401(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let did = alice.did.to_string();
    let get = |token: String| {
        app.http()
            .get(app.url(&format!("/xrpc/{}", get_convos::NSID)))
            .bearer_auth(token)
            .send()
    };
    for (typ, iss, expected) in [
        (
            "application/at+jwt",
            did.clone(),
            "is not a service-auth token",
        ),
        (
            "Application/DPoP+jwt",
            did.clone(),
            "is not a service-auth token",
        ),
        ("JWT", format!("{did}#atproto"), "service id"),
        ("JWT", format!("{did}#../../x"), "service id"),
    ] {
        let response = get(token(&alice, typ, &iss)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{typ} {iss}");
        let body = json_body(response).await;
        assert_eq!(body["error"], "InvalidToken");
        assert!(
            body["message"].as_str().unwrap().contains(expected),
            "{typ} {iss}: {body}"
        );
    }
    // The same token, correctly typed and issued, is accepted.
    let response = get(token(&alice, "JWT", &did)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Sends `request` on a new connection and reads until the server closes
/// it: the status and the body.
async fn raw(app: &TestApp, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[sqlx::test(migrations = "./migrations")]
async fn oversized_targets_and_headers_get_xrpc_bodies_where_they_reach_the_service(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let get = |target: &str, headers: &str| {
        format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{headers}\r\n")
            .into_bytes()
    };
    let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();

    // Over our limits, under hyper's: XRPC errors.
    let long = format!("/xrpc/{}?x={}", get_convos::NSID, "a".repeat(40 * 1024));
    let (status, body) = raw(&app, &get(&long, "")).await;
    assert_eq!(status, 414);
    assert_eq!(json(&body)["error"], "UriTooLong");
    let big = format!("x-big: {}\r\n", "a".repeat(100 * 1024));
    let (status, body) = raw(&app, &get("/xrpc/_health", &big)).await;
    assert_eq!(status, 431);
    assert_eq!(json(&body)["error"], "HeaderFieldsTooLarge");

    // Refused by hyper before any routing, as the README says: no body.
    let longest = format!("/xrpc/{}?x={}", get_convos::NSID, "a".repeat(70 * 1024));
    assert_eq!(raw(&app, &get(&longest, "")).await, (414, String::new()));
    let huge = format!("x-big: {}\r\n", "a".repeat(500 * 1024));
    assert_eq!(
        raw(&app, &get("/xrpc/_health", &huge)).await,
        (431, String::new())
    );
    let many: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    assert_eq!(
        raw(&app, &get("/xrpc/_health", &many)).await,
        (431, String::new())
    );
    let malformed = "bad header line\r\n";
    assert_eq!(
        raw(&app, &get("/xrpc/_health", malformed)).await,
        (400, String::new())
    );
}
