//! sendMessage's group append: messages sent to one conversation together
//! share one statement, and each still gets the answer it gets alone.
//!
//! - The appender itself: messages queued while none is running go in one
//!   statement (one transaction: one `createdAt`), with consecutive seqs in
//!   arrival order; a stranger's message in the batch is left out (for
//!   sendMessage's own statement); a msgId already in the log fails the
//!   batch and nothing of it is written.
//! - Over HTTP, sent all at once: fresh messages of two members, a retry of
//!   an accepted message, a replay of its ciphertext under another msgId,
//!   its msgId with other bytes, a message of a past epoch and a
//!   stranger's: 200 with the original seq for the retry, 409
//!   DuplicateCiphertext, 409 DuplicateMessageId, 409 EpochMismatch, 403
//!   NotMember, and a gapless log holding each accepted message once.

use std::collections::BTreeSet;

use crate::common::member::Member;
use crate::common::{TestApp, assert_declared, read_log};
use catbird_generated::lexicons::blue::catbird::mls::send_message;
use catbird_generated::runtime::xrpc::futures_util::future::join_all;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_mls::convos::appender::Appender;
use catbird_mls::convos::store::log::BatchEntry;
use catbird_mls_core::mls_crypto::from_hex;
use sqlx::PgPool;

fn entry(caller: &str, id: &str, epoch: i64) -> BatchEntry {
    BatchEntry {
        caller: caller.to_owned(),
        id: id.to_owned(),
        epoch,
        payload: id.as_bytes().to_vec(),
        payload_hash: format!("hash of {id}").into_bytes(),
        key: None,
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn messages_queued_together_share_one_statement(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let alice = app.user("alice");
    let mut phone = Member::new(&app, &alice, "phone");
    let convo = phone.create_convo().await;
    let group_id = from_hex(&convo).unwrap();
    let appender = Appender::new(pool.clone());
    let alice = alice.did.as_str();

    // All queued before the runner (spawned on this single-threaded
    // runtime) first runs: one batch.
    let mut entries: Vec<BatchEntry> = (0..10).map(|n| entry(alice, &format!("m{n}"), 0)).collect();
    entries.insert(4, entry("did:plc:stranger", "intruder", 0));
    let answers = join_all(entries.into_iter().map(|e| appender.append(&group_id, e))).await;
    let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();

    assert!(answers[4].is_none(), "the stranger's message is left out");
    let taken: Vec<_> = answers.iter().flatten().collect();
    assert_eq!(taken.len(), 10);
    assert_eq!(
        taken.iter().map(|t| t.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>(),
        "consecutive seqs in arrival order"
    );
    let times: BTreeSet<_> = taken.iter().map(|t| t.created_at).collect();
    assert_eq!(times.len(), 1, "one transaction");

    // A msgId already in the log fails the batch: nothing of it is written.
    let batch = vec![
        entry(alice, "new-1", 0),
        entry(alice, "m3", 0),
        entry(alice, "new-2", 0),
    ];
    let answers = join_all(batch.into_iter().map(|e| appender.append(&group_id, e))).await;
    assert!(answers.iter().all(|a| matches!(a, Ok(None))));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM convo_messages WHERE convo_id = $1")
        .bind(&group_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 10);
}

#[sqlx::test(migrations = "./migrations")]
async fn messages_sent_together_get_the_answers_they_get_alone(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice, bob, carol) = (app.user("alice"), app.user("bob"), app.user("carol"));
    let mut alices_phone = Member::new(&app, &alice, "phone");
    let mut bobs_phone = Member::new(&app, &bob, "phone");
    bobs_phone.publish_key_package().await;
    let convo = alices_phone.create_convo().await;
    let past_epoch = alices_phone.encrypt(&convo, "from epoch 0");
    alices_phone.add(&convo, &bob.did).await;
    bobs_phone.join(&convo).await;
    let original = alices_phone.encrypt(&convo, "the original");
    let accepted = app.client(&alice).send_message(&original).await.unwrap();

    let mut requests = vec![];
    for n in 0..10 {
        requests.push((
            "fresh",
            &alice,
            alices_phone.encrypt(&convo, &format!("a{n}")),
        ));
        requests.push(("fresh", &bob, bobs_phone.encrypt(&convo, &format!("b{n}"))));
    }
    let replay = send_message::Input {
        msg_id: "bobs-copy".into(),
        ..original.clone()
    };
    let other_bytes = send_message::Input {
        msg_id: original.msg_id.clone(),
        ..alices_phone.encrypt(&convo, "other bytes")
    };
    let strangers = send_message::Input {
        msg_id: "carols".into(),
        ..alices_phone.encrypt(&convo, "carol's")
    };
    requests.insert(3, ("retry", &alice, original.clone()));
    requests.insert(7, ("replay", &bob, replay));
    requests.insert(11, ("other bytes", &alice, other_bytes));
    requests.insert(15, ("past epoch", &alice, past_epoch));
    requests.insert(17, ("stranger", &carol, strangers));

    let clients: Vec<_> = requests
        .iter()
        .map(|(_, user, _)| app.client(user))
        .collect();
    let answers = join_all(
        requests
            .iter()
            .zip(&clients)
            .map(|((_, _, input), client)| client.send_message(input)),
    )
    .await;

    let mut accepted_ids = vec![original.msg_id.clone()];
    for ((what, _, input), answer) in requests.iter().zip(answers) {
        let (error, status) = match *what {
            "fresh" => {
                let sent = answer.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(sent.message_id, input.msg_id);
                accepted_ids.push(input.msg_id.clone());
                continue;
            }
            "retry" => {
                assert_eq!(answer.unwrap(), accepted);
                continue;
            }
            "replay" => (
                send_message::Error::DuplicateCiphertext,
                StatusCode::CONFLICT,
            ),
            "other bytes" => (
                send_message::Error::DuplicateMessageId,
                StatusCode::CONFLICT,
            ),
            "past epoch" => (send_message::Error::EpochMismatch, StatusCode::CONFLICT),
            "stranger" => (send_message::Error::NotMember, StatusCode::FORBIDDEN),
            other => unreachable!("{other}"),
        };
        assert_declared(answer, error, status);
    }

    // The log: the add commit, then each accepted message once, gapless.
    let log = read_log(&app.client(&alice), &convo).await;
    assert_eq!(
        log.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
        (1..=log.len() as i64).collect::<Vec<_>>()
    );
    let logged: BTreeSet<&str> = log[1..].iter().map(|entry| entry.id.as_str()).collect();
    let accepted_ids: BTreeSet<&str> = accepted_ids.iter().map(String::as_str).collect();
    assert_eq!(logged, accepted_ids);
    assert_eq!(log.len(), 1 + 21);
}
