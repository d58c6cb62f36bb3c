//! Idempotency keys (server/idempotency.rs) over real HTTP with real
//! OpenMLS clients: a retry with the same key and input is answered with the
//! first response, byte for byte, and the method runs once (the database
//! holds one row; `idempotency_requests_total` counts one execution); the
//! same key with another input is refused with 422 and stores nothing; 20
//! concurrent requests with one key execute once; a 5xx, or a request that
//! never reached its handler, is not stored, so the retry executes; expired
//! keys are deleted by the cleanup job.

use std::time::Duration;

use crate::common::joiner::{Joiner, current_group_info};
use crate::common::member::Member;
use crate::common::metrics::{self, Metrics};
use crate::common::mls;
use crate::common::{TestApp, assert_declared};
use catbird_generated::lexicons::blue::catbird::mls::{
    add_members, create_convo, process_external_commit, publish_key_package, send_message,
};
use catbird_generated::runtime::xrpc::futures_util::future::join_all;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::xrpc::reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use catbird_mls::maintenance;
use catbird_mls_client::LocalIdentity;
use catbird_mls_core::mls_crypto::from_hex;
use serde::Serialize;
use sqlx::PgPool;

/// A response as it came over the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Calls the procedure `nsid` as `user` with `input` as JSON.
async fn call(app: &TestApp, user: &LocalIdentity, nsid: &str, input: &impl Serialize) -> Answer {
    call_as(app, user, nsid, "application/json", input).await
}

/// [`call`] with the body labelled `content_type`.
async fn call_as(
    app: &TestApp,
    user: &LocalIdentity,
    nsid: &str,
    content_type: &str,
    input: &impl Serialize,
) -> Answer {
    let response = app
        .http()
        .post(app.url(&format!("/xrpc/{nsid}")))
        .header(AUTHORIZATION, format!("Bearer {}", app.token(user, nsid)))
        .header(CONTENT_TYPE, content_type)
        .body(serde_json::to_vec(input).unwrap())
        .send()
        .await
        .unwrap();
    Answer {
        status: response.status(),
        content_type: response
            .headers()
            .get(CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_owned()),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

/// Sends the same request three times; all three answers must be one 200.
async fn thrice(app: &TestApp, user: &LocalIdentity, nsid: &str, input: &impl Serialize) -> Answer {
    let first = call(app, user, nsid, input).await;
    assert_eq!(first.status, StatusCode::OK, "{nsid}: {:?}", text(&first));
    for _ in 0..2 {
        assert_eq!(call(app, user, nsid, input).await, first, "{nsid}");
    }
    first
}

fn text(answer: &Answer) -> String {
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// `idempotency_requests_total` of `nsid` with `outcome`.
fn outcomes(metrics: &Metrics, nsid: &str, outcome: &str) -> f64 {
    metrics.count(
        "idempotency_requests_total",
        &[("method", nsid), ("outcome", outcome)],
    )
}

/// publishKeyPackage's input with a fresh KeyPackage of `user`'s phone.
fn publish_with_key(user: &LocalIdentity, key: &str) -> publish_key_package::Input {
    publish_key_package::Input {
        extra: Default::default(),
        key_package: mls::key_package(&mls::installation(&user.did, "phone")),
        idempotency_key: Some(key.to_owned()),
    }
}

async fn rows_in(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn count(pool: &PgPool, sql: &str, bind: &[u8]) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "./migrations")]
async fn retries_with_one_key_execute_once_and_get_the_same_bytes(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn(pool).await;
    let (alice, bob, carol) = (app.user("alice"), app.user("bob"), app.user("carol"));
    let mut alices_phone = Member::new(&app, &alice, "phone");
    Member::new(&app, &bob, "phone").publish_key_package().await;
    let before = metrics::scrape(&app).await;

    let mut create = alices_phone.prepare_convo();
    create.idempotency_key = Some("create-1".into());
    thrice(&app, &alice, create_convo::NSID, &create).await;
    let convo = create.group_id.clone();
    let group_id = from_hex(&convo).unwrap();

    let mut add = alices_phone.prepare_add(&convo, &bob.did).await;
    add.idempotency_key = Some("add-1".into());
    let added = thrice(&app, &alice, add_members::NSID, &add).await;
    let added: add_members::Output = serde_json::from_slice(&added.body).unwrap();
    alices_phone.merge(&convo, added.seq);

    let mut message = alices_phone.encrypt(&convo, "hello");
    message.idempotency_key = Some("send-1".into());
    thrice(&app, &alice, send_message::NSID, &message).await;

    let carols_laptop = mls::installation(&carol.did, "laptop");
    let publish = publish_key_package::Input {
        extra: Default::default(),
        key_package: mls::key_package(&carols_laptop),
        idempotency_key: Some("publish-1".into()),
    };
    thrice(&app, &carol, publish_key_package::NSID, &publish).await;

    // Bob's tablet joins by external commit.
    let group_info = current_group_info(&app.client(&bob), &convo).await;
    let tablet = Joiner::new(&format!("{}#tablet", bob.did.as_str()));
    let (_group, mut rejoin) = tablet.external_commit(&convo, &group_info);
    rejoin.idempotency_key = Some("rejoin-1".into());
    thrice(&app, &bob, process_external_commit::NSID, &rejoin).await;

    // One row each.
    let pool = &app.pool;
    let in_convo = |kind: &'static str| {
        format!("SELECT count(*) FROM convo_messages WHERE convo_id = $1 AND kind = '{kind}'")
    };
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM convos WHERE group_id = $1",
            &group_id
        )
        .await,
        1
    );
    assert_eq!(count(pool, &in_convo("commit"), &group_id).await, 2);
    assert_eq!(count(pool, &in_convo("application"), &group_id).await, 1);
    let carols = format!("{}#laptop", carol.did.as_str());
    let published: i64 =
        sqlx::query_scalar("SELECT count(*) FROM key_packages WHERE device_id = $1")
            .bind(&carols)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(published, 1);
    let members = "SELECT count(*) FROM convo_devices WHERE convo_id = $1 AND left_at IS NULL";
    assert_eq!(count(pool, members, &group_id).await, 3);

    // Each method ran once; the two retries were answered from the store.
    let after = metrics::scrape(&app).await;
    for nsid in [
        create_convo::NSID,
        add_members::NSID,
        send_message::NSID,
        publish_key_package::NSID,
        process_external_commit::NSID,
    ] {
        let ran = outcomes(&after, nsid, "executed") - outcomes(&before, nsid, "executed");
        let replayed = outcomes(&after, nsid, "hit") - outcomes(&before, nsid, "hit");
        assert_eq!((ran, replayed), (1.0, 2.0), "{nsid}");
    }

    // Within their 24 hours the keys stay.
    let cleaned = maintenance::run_once(&app.state).await.unwrap();
    assert_eq!(cleaned.idempotency_keys, 0);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_key_reused_with_another_input_is_refused_and_stores_nothing(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let mut phone = Member::new(&app, &alice, "phone");
    let convo = phone.create_convo().await;
    let group_id = from_hex(&convo).unwrap();
    let messages =
        "SELECT count(*) FROM convo_messages WHERE convo_id = $1 AND kind = 'application'";
    let before = metrics::scrape(&app).await;

    let mut first = phone.encrypt(&convo, "first");
    first.idempotency_key = Some("k".into());
    phone.client.send_message(&first).await.unwrap();

    let mut other = phone.encrypt(&convo, "second");
    other.idempotency_key = Some("k".into());
    let refused = phone.client.send_message(&other).await;
    let message = assert_declared(
        refused,
        send_message::Error::IdempotencyKeyReused,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert!(message.contains("different input"), "{message}");
    assert_eq!(count(&app.pool, messages, &group_id).await, 1);

    // The same input with its fields in another order is the same input:
    // answered, not refused.
    let fields = serde_json::to_value(&first).unwrap();
    let reordered: serde_json::Map<String, serde_json::Value> = fields
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .rev()
        .collect();
    let replayed = call(&app, &alice, send_message::NSID, &reordered).await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", text(&replayed));

    // Different keys, same content: two messages.
    for key in ["k2", "k3"] {
        let mut again = phone.encrypt(&convo, "same text");
        again.idempotency_key = Some(key.into());
        phone.client.send_message(&again).await.unwrap();
    }
    assert_eq!(count(&app.pool, messages, &group_id).await, 3);

    let after = metrics::scrape(&app).await;
    let conflicts = outcomes(&after, send_message::NSID, "conflict")
        - outcomes(&before, send_message::NSID, "conflict");
    assert_eq!(conflicts, 1.0);
}

#[sqlx::test(migrations = "./migrations")]
async fn twenty_concurrent_requests_with_one_key_execute_once(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let mut phone = Member::new(&app, &alice, "phone");
    let mut create = phone.prepare_convo();
    create.idempotency_key = Some("create-once".into());
    let before = metrics::scrape(&app).await;

    let calls = (0..20).map(|_| call(&app, &alice, create_convo::NSID, &create));
    let answers = join_all(calls).await;

    let done: Vec<&Answer> = answers
        .iter()
        .filter(|answer| answer.status == StatusCode::OK)
        .collect();
    assert!(!done.is_empty());
    for answer in &answers {
        if answer.status == StatusCode::OK {
            assert_eq!(answer, done[0]);
        } else {
            // Only the typed "still executing, retry" error may differ.
            assert_eq!(answer.status, StatusCode::CONFLICT, "{}", text(answer));
            let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(body["error"], "IdempotencyKeyInProgress");
        }
    }
    let after = metrics::scrape(&app).await;
    let ran = outcomes(&after, create_convo::NSID, "executed")
        - outcomes(&before, create_convo::NSID, "executed");
    assert_eq!(ran, 1.0);
    let group_id = from_hex(&create.group_id).unwrap();
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM convos WHERE group_id = $1",
            &group_id
        )
        .await,
        1
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_server_error_is_not_stored_and_the_retry_executes(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let publish = publish_with_key(&alice, "publish-once");
    // The database refuses KeyPackages for a moment: the handler fails with
    // a 500 of its own.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN RAISE EXCEPTION 'disk full'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON key_packages \
           FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let failed = call(&app, &alice, publish_key_package::NSID, &publish).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!text(&failed).contains("disk full"), "{}", text(&failed));
    assert_eq!(
        rows_in(&app.pool, "idempotency_keys").await,
        0,
        "a 5xx is not stored"
    );

    sqlx::raw_sql("DROP TRIGGER refuse ON key_packages")
        .execute(&app.pool)
        .await
        .unwrap();
    let retried = call(&app, &alice, publish_key_package::NSID, &publish).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", text(&retried));
    assert_eq!(
        call(&app, &alice, publish_key_package::NSID, &publish).await,
        retried
    );
    assert_eq!(rows_in(&app.pool, "key_packages").await, 1);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_request_that_does_not_decode_is_not_stored(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let publish = publish_with_key(&alice, "typo");
    // The handler never ran: nothing to remember, and the corrected
    // request with the same key executes.
    let nsid = publish_key_package::NSID;
    let wrong = call_as(&app, &alice, nsid, "text/plain", &publish).await;
    assert_eq!(wrong.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let right = call(&app, &alice, nsid, &publish).await;
    assert_eq!(right.status, StatusCode::OK, "{}", text(&right));
    assert_eq!(rows_in(&app.pool, "key_packages").await, 1);
}

#[sqlx::test(migrations = "./migrations")]
async fn expired_keys_are_deleted_by_the_cleanup_job(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn_with(pool, |config| config.idempotency_ttl_seconds = 1).await;
    let alice = app.user("alice");
    for (index, key) in ["a", "b"].into_iter().enumerate() {
        let publish = publish_with_key(&alice, key);
        let answer = call(&app, &alice, publish_key_package::NSID, &publish).await;
        assert_eq!(answer.status, StatusCode::OK, "{index}: {}", text(&answer));
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cleaned = maintenance::run_once(&app.state).await.unwrap();
    assert_eq!(cleaned.idempotency_keys, 2);
    assert_eq!(rows_in(&app.pool, "idempotency_keys").await, 0);
}
