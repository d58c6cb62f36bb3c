//! A conversation's whole life with real OpenMLS clients (the demo's
//! [`Device`]) over the generated client: create, add, join from a Welcome,
//! talk, lose a device, rejoin by external commit, remove the old leaf, talk
//! again; a member leaving; a commit that loses its epoch. Every message
//! must be decrypted by every other member with its exact text, every
//! member's local epoch must equal the service's after every step, and the
//! log must be numbered 1..N without gaps.

use std::collections::BTreeSet;

use crate::common::TestApp;
use catbird_generated::lexicons::blue::catbird::mls::defs::ConvoView;
use catbird_generated::lexicons::blue::catbird::mls::{
    get_convos, get_epoch, get_expected_conversations, get_messages,
};
use catbird_mls_client::LocalIdentity;
use catbird_mls_client::{Device, Received};
use sqlx::PgPool;

#[sqlx::test(migrations = "./migrations")]
async fn two_users_talk_lose_a_device_rejoin_and_talk_again(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let mut alice_phone = Device::new(&alice.did, "phone", app.client(&alice)).unwrap();
    let mut bob_phone = Device::new(&bob.did, "phone", app.client(&bob)).unwrap();
    for device in [&mut alice_phone, &mut bob_phone] {
        let published = device.publish_key_packages(2).await.unwrap();
        assert_eq!(
            published.len(),
            3,
            "two fresh KeyPackages and a last-resort one"
        );
    }

    let convo = alice_phone.create_convo("lifecycle").await.unwrap();
    assert_epochs(&app, &alice, &convo, &[&alice_phone], 0).await;

    let added = alice_phone
        .add(&convo, std::slice::from_ref(&bob.did))
        .await
        .unwrap();
    assert_eq!(added, [bob_phone.id().to_string()]);
    assert_eq!(bob_phone.join_from_welcome(&convo).await.unwrap(), 1);
    assert_epochs(&app, &alice, &convo, &[&alice_phone, &bob_phone], 1).await;
    for user in [&alice, &bob] {
        assert!(
            listed_convo(&app, user, &convo).await.is_some(),
            "getConvos lists the conversation for {}",
            user.did
        );
    }

    exchange(&convo, &mut alice_phone, &mut [&mut bob_phone], "Hi Bob!").await;
    exchange(
        &convo,
        &mut bob_phone,
        &mut [&mut alice_phone],
        "Hi Alice! 👋",
    )
    .await;

    // Bob rotates his leaf key: a commit that neither adds nor removes.
    assert_eq!(bob_phone.self_update(&convo).await.unwrap(), 2);
    assert_eq!(alice_phone.sync(&convo).await.unwrap(), []);
    assert_epochs(&app, &alice, &convo, &[&alice_phone, &bob_phone], 2).await;

    // Bob loses his phone; his new one joins as a new leaf, then removes the
    // old one (a member may remove its own user's other devices).
    let old_phone = bob_phone.id().to_string();
    drop(bob_phone);
    let mut bob_phone2 = Device::new(&bob.did, "phone2", app.client(&bob)).unwrap();
    assert_eq!(bob_phone2.rejoin(&convo).await.unwrap(), 3);
    assert_eq!(
        bob_phone2.remove(&convo, &bob.did, false).await.unwrap(),
        [old_phone.as_str()]
    );
    assert_eq!(alice_phone.sync(&convo).await.unwrap(), []);
    assert_epochs(&app, &alice, &convo, &[&alice_phone, &bob_phone2], 4).await;

    let expected: BTreeSet<String> = [&alice_phone, &bob_phone2]
        .iter()
        .map(|device| device.id().to_string())
        .collect();
    for user in [&alice, &bob] {
        let view = listed_convo(&app, user, &convo).await.unwrap();
        let members: BTreeSet<String> = view.members.into_iter().map(|m| m.device_id).collect();
        assert_eq!(members, expected, "the service's members, as {}", user.did);
        assert!(!members.contains(&old_phone));
    }
    for device in [&alice_phone, &bob_phone2] {
        let members = device.members(&convo).unwrap();
        let members: BTreeSet<String> = members.into_iter().map(|m| m.device_id).collect();
        assert_eq!(members, expected, "{}'s own view", device.id());
    }

    exchange(
        &convo,
        &mut alice_phone,
        &mut [&mut bob_phone2],
        "Welcome back",
    )
    .await;
    exchange(
        &convo,
        &mut bob_phone2,
        &mut [&mut alice_phone],
        "New phone!",
    )
    .await;
    assert_epochs(&app, &alice, &convo, &[&alice_phone, &bob_phone2], 4).await;

    // add, 2 messages, self-update, external commit, remove, 2 messages.
    let seqs = log_seqs(&app, &alice, &convo).await;
    assert_eq!(seqs, (1..=8).collect::<Vec<i64>>());
}

#[sqlx::test(migrations = "./migrations")]
async fn a_member_who_leaves_is_removed_by_the_next_commit(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let mut alice_phone = Device::new(&alice.did, "phone", app.client(&alice)).unwrap();
    let mut bob_phone = Device::new(&bob.did, "phone", app.client(&bob)).unwrap();
    bob_phone.publish_key_packages(1).await.unwrap();
    let convo = alice_phone.create_convo("short stay").await.unwrap();
    alice_phone
        .add(&convo, std::slice::from_ref(&bob.did))
        .await
        .unwrap();
    bob_phone.join_from_welcome(&convo).await.unwrap();

    bob_phone.leave(&convo).await.unwrap();
    // Alice keeps Bob's proposal, and her next commit covers it.
    assert_eq!(alice_phone.sync(&convo).await.unwrap(), []);
    assert_eq!(alice_phone.self_update(&convo).await.unwrap(), 2);
    assert_epochs(&app, &alice, &convo, &[&alice_phone], 2).await;

    let members = alice_phone.members(&convo).unwrap();
    let members: Vec<String> = members.into_iter().map(|m| m.device_id).collect();
    assert_eq!(members, [alice_phone.id().to_string()]);
    let view = listed_convo(&app, &alice, &convo).await.unwrap();
    assert_eq!(view.members.len(), 1);
    assert!(listed_convo(&app, &bob, &convo).await.is_none());

    // Bob is a past member now, who may come back.
    let params = get_expected_conversations::Params {
        device_id: bob_phone.id().to_string(),
        limit: 100,
        cursor: None,
    };
    let expected = app
        .client(&bob)
        .get_expected_conversations(&params)
        .await
        .unwrap();
    let entry = expected
        .conversations
        .iter()
        .find(|entry| entry.convo_id == convo)
        .expect("the conversation Bob left is expected for 30 days");
    assert!(entry.left_at.is_some());
    assert!(entry.needs_rejoin);
    // add, leave proposal, the commit that covers it.
    assert_eq!(log_seqs(&app, &alice, &convo).await, [1, 2, 3]);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_commit_that_loses_its_epoch_is_discarded_and_retried(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let mut alice_phone = Device::new(&alice.did, "phone", app.client(&alice)).unwrap();
    let mut bob_phone = Device::new(&bob.did, "phone", app.client(&bob)).unwrap();
    bob_phone.publish_key_packages(1).await.unwrap();
    let convo = alice_phone.create_convo("race").await.unwrap();
    alice_phone
        .add(&convo, std::slice::from_ref(&bob.did))
        .await
        .unwrap();
    bob_phone.join_from_welcome(&convo).await.unwrap();

    // Both commit in epoch 1; Bob's arrives first.
    assert_eq!(bob_phone.self_update(&convo).await.unwrap(), 2);
    let lost = alice_phone.self_update(&convo).await.unwrap_err();
    assert!(lost.is_epoch_mismatch(), "{lost}");
    assert_eq!(
        alice_phone.epoch(&convo).unwrap(),
        1,
        "the loser did not merge"
    );

    // Alice catches up and commits again, in the new epoch.
    assert_eq!(alice_phone.sync(&convo).await.unwrap(), []);
    assert_eq!(alice_phone.self_update(&convo).await.unwrap(), 3);
    assert_eq!(bob_phone.sync(&convo).await.unwrap(), []);
    assert_epochs(&app, &alice, &convo, &[&alice_phone, &bob_phone], 3).await;
    exchange(
        &convo,
        &mut bob_phone,
        &mut [&mut alice_phone],
        "still here",
    )
    .await;
}

/// `sender` sends `text`; every one of `readers` reads the log and finds
/// exactly that message, from `sender`.
async fn exchange(convo: &str, sender: &mut Device, readers: &mut [&mut Device], text: &str) {
    let seq = sender.send(convo, text).await.unwrap();
    for reader in readers {
        let received = reader.sync(convo).await.unwrap();
        let expected = Received {
            seq,
            sender: sender.id().to_string(),
            text: text.to_owned(),
        };
        assert_eq!(received, [expected], "what {} read", reader.id());
    }
}

/// Every device's local epoch is `epoch`, and so is the service's.
async fn assert_epochs(
    app: &TestApp,
    user: &LocalIdentity,
    convo: &str,
    devices: &[&Device],
    epoch: u64,
) {
    let params = get_epoch::Params {
        convo_id: convo.to_owned(),
    };
    let service = app.client(user).get_epoch(&params).await.unwrap().epoch;
    assert_eq!(
        service,
        i64::try_from(epoch).unwrap(),
        "the service's epoch"
    );
    for device in devices {
        assert_eq!(
            device.epoch(convo).unwrap(),
            epoch,
            "{}'s epoch",
            device.id()
        );
    }
}

/// The conversation as getConvos lists it for `user`, if it does.
async fn listed_convo(app: &TestApp, user: &LocalIdentity, convo: &str) -> Option<ConvoView> {
    let params = get_convos::Params {
        limit: 100,
        cursor: None,
    };
    let listing = app.client(user).get_convos(&params).await.unwrap();
    listing
        .convos
        .into_iter()
        .find(|view| view.group_id == convo)
}

/// Every seq in the log as `user` reads it, two per page from the start,
/// checking that no page reports a gap.
async fn log_seqs(app: &TestApp, user: &LocalIdentity, convo: &str) -> Vec<i64> {
    let client = app.client(user);
    let mut seqs = Vec::new();
    let mut since = 0;
    loop {
        let params = get_messages::Params {
            convo_id: convo.to_owned(),
            since_seq: since,
            limit: 2,
        };
        let page = client.get_messages(&params).await.unwrap();
        assert!(page.messages.len() <= 2);
        assert!(!page.gap_info.has_gaps, "{:?}", page.gap_info);
        seqs.extend(page.messages.iter().map(|entry| entry.seq));
        if page.last_seq == since {
            return seqs;
        }
        since = page.last_seq;
    }
}

/// `catbird-mls-client demo`'s story end to end, every message arriving on
/// the receiver's event stream; its lines are the README's example.
#[sqlx::test(migrations = "./migrations")]
async fn the_demo_story_runs_over_the_event_streams(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let options = catbird_mls_client::story::Options {
        url: app.url(""),
        did_directory: app.did_directory().to_owned(),
        service_did: catbird_generated::runtime::Did::new(crate::common::SERVICE_DID).unwrap(),
    };
    let mut out = Vec::new();
    catbird_mls_client::story::run(&options, &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    // Shown with --nocapture: the README's example output.
    println!("{out}");
    for line in [
        "bob#phone joined from its Welcome (epoch 1), from its stream's catch-up",
        "bob#phone sees alice#phone \"typing…\" (ephemeral: never stored)",
        "bob#phone receives live from alice#phone: \"Hi Bob! Only our devices can read this.\"",
        "alice#phone's stream: bob#phone2 added at seq 4, bob#phone removed at seq 5 (epoch 3); members: alice#phone, bob#phone2",
        "epochs: alice#phone 3, bob#phone2 3, service 3",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in:\n{out}");
    }
}
