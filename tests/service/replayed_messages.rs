//! A ciphertext is sent once (issue 14): a member who takes another
//! member's ciphertext from the log and sends it again under a new msgId
//! gets 409 DuplicateCiphertext and the log keeps one row; the sender's own
//! retry with the same msgId keeps its idempotent answer; a replay with an
//! idempotency key gets the same refusal on every retry; a commit resent by
//! another member is refused too and stored once.

use crate::common::member::Member;
use crate::common::{TestApp, assert_declared};
use catbird_generated::lexicons::blue::catbird::mls::{commit_group_change, send_message};
use catbird_generated::runtime::xrpc::ClientError;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::xrpc::reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use catbird_mls_client::LocalIdentity;
use catbird_mls_core::mls_crypto::from_hex;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// Log rows of the conversation holding exactly these bytes.
async fn rows_with(pool: &PgPool, group_id: &[u8], payload: &[u8]) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM convo_messages WHERE convo_id = $1 AND payload = $2")
        .bind(group_id)
        .bind(payload)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// sendMessage over plain HTTP: the status and the body as sent.
async fn send_raw(
    app: &TestApp,
    user: &LocalIdentity,
    input: &send_message::Input,
) -> (StatusCode, Vec<u8>) {
    let response = app
        .http()
        .post(app.url(&format!("/xrpc/{}", send_message::NSID)))
        .header(
            AUTHORIZATION,
            format!("Bearer {}", app.token(user, send_message::NSID)),
        )
        .header(CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(input).unwrap())
        .send()
        .await
        .unwrap();
    (response.status(), response.bytes().await.unwrap().to_vec())
}

#[sqlx::test(migrations = "./migrations")]
async fn a_replayed_ciphertext_is_refused_and_stored_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let mut alices_phone = Member::new(&app, &alice, "phone");
    Member::new(&app, &bob, "phone").publish_key_package().await;
    let convo = alices_phone.create_convo().await;
    let group_id = from_hex(&convo).unwrap();
    let add = alices_phone.prepare_add(&convo, &bob.did).await;
    let added = app.client(&alice).add_members(&add).await.unwrap();
    alices_phone.merge(&convo, added.seq);

    // Alice's message, then Bob sending its bytes under his own msgId.
    let original = alices_phone.encrypt(&convo, "only once");
    let accepted = app.client(&alice).send_message(&original).await.unwrap();
    let replay = send_message::Input {
        msg_id: "bobs-copy".into(),
        ..original.clone()
    };
    let refused = app.client(&bob).send_message(&replay).await;
    let message = assert_declared(
        refused,
        send_message::Error::DuplicateCiphertext,
        StatusCode::CONFLICT,
    );
    assert!(
        message.contains("already in the conversation's log"),
        "{message}"
    );
    // Alice's own copy under a new msgId is the same replay.
    let again = send_message::Input {
        msg_id: "alices-copy".into(),
        ..original.clone()
    };
    let refused = app.client(&alice).send_message(&again).await;
    assert_declared(
        refused,
        send_message::Error::DuplicateCiphertext,
        StatusCode::CONFLICT,
    );
    assert_eq!(
        rows_with(&app.pool, &group_id, &original.ciphertext.0).await,
        1
    );

    // The retry with the original msgId is answered as before.
    let retried = app.client(&alice).send_message(&original).await.unwrap();
    assert_eq!(retried, accepted);

    // With idempotency keys: the sender's key answers its message; the
    // replay's key answers the refusal, the same bytes every time.
    let keyed = send_message::Input {
        idempotency_key: Some("alice-key".into()),
        ..alices_phone.encrypt(&convo, "with a key")
    };
    let first = send_raw(&app, &alice, &keyed).await;
    assert_eq!(
        first.0,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&first.1)
    );
    assert_eq!(send_raw(&app, &alice, &keyed).await, first);
    let keyed_replay = send_message::Input {
        msg_id: "bobs-keyed-copy".into(),
        idempotency_key: Some("bob-key".into()),
        ..keyed.clone()
    };
    let refusal = send_raw(&app, &bob, &keyed_replay).await;
    assert_eq!(refusal.0, StatusCode::CONFLICT);
    let body: serde_json::Value = serde_json::from_slice(&refusal.1).unwrap();
    assert_eq!(body["error"], "DuplicateCiphertext");
    assert_eq!(send_raw(&app, &bob, &keyed_replay).await, refusal);
    assert_eq!(
        rows_with(&app.pool, &group_id, &keyed.ciphertext.0).await,
        1
    );

    // A commit shares the log: Bob resending Alice's accepted commit is
    // refused with a declared error and the log keeps one copy.
    let resent = commit_group_change::Input {
        extra: Default::default(),
        convo_id: convo.clone(),
        commit: add.commit.clone(),
        group_info: add.group_info.clone(),
        idempotency_key: None,
    };
    match app.client(&bob).commit_group_change(&resent).await {
        Err(ClientError::Method(error)) => {
            assert!(error.status().is_client_error(), "{error}");
            assert!(error.declared_error().is_some(), "{error}");
        }
        other => panic!("a resent commit must be refused, got {other:?}"),
    }
    assert_eq!(rows_with(&app.pool, &group_id, &add.commit.0).await, 1);

    // Every payload in the log is there once.
    let distinct: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT payload_hash) FROM convo_messages WHERE convo_id = $1",
    )
    .bind(&group_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(distinct.0, distinct.1);
    let stored_hash: Vec<u8> = sqlx::query_scalar(
        "SELECT payload_hash FROM convo_messages WHERE convo_id = $1 AND id = $2",
    )
    .bind(&group_id)
    .bind(&original.msg_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored_hash, Sha256::digest(&original.ciphertext.0).to_vec());
}
