//! Rejoining a conversation by external commit (getGroupInfo,
//! processExternalCommit, getExpectedConversations), with real OpenMLS
//! clients over HTTP. Proves who may rejoin: never a stranger (403
//! NotMember) nor a banned user (403 Banned, and not expected); a past
//! member within the 30-day window but not after it (time passes by moving
//! `convo_users.left_at` back in the database); that an external commit must
//! add a leaf of the caller's own DID (400 InvalidCommit, nothing changes);
//! that one built on a stale GroupInfo gets 409 EpochMismatch and succeeds
//! when rebuilt from a fresh one; and that a device without a leaf is told
//! to rejoin until it has.
//!
//! The demo [`Device`] drives the honest clients. The commits it would never
//! build (another user's credential, a stale GroupInfo, a GroupInfo the
//! caller was not allowed to fetch) come from [`Joiner`], a bare OpenMLS
//! client in this file.

use crate::common::joiner::{Joiner, current_group_info};
use crate::common::{TestApp, assert_declared};
use catbird_generated::lexicons::blue::catbird::mls::defs::{ConvoView, ExpectedConversation};
use catbird_generated::lexicons::blue::catbird::mls::{
    get_convos, get_epoch, get_expected_conversations, get_group_info, process_external_commit,
};
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::{Bytes, Datetime};
use catbird_mls_client::LocalIdentity;
use catbird_mls_client::{Device, Received};
use catbird_mls_core::mls_crypto::from_hex;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

// ---- the rejoin rules ------------------------------------------------------------

#[sqlx::test(migrations = "./migrations")]
async fn a_stranger_gets_no_group_info_and_no_external_commit_in(pool: PgPool) {
    let convo = Convo::with_alice_and_bob(TestApp::spawn(pool).await).await;
    let app = &convo.app;
    let mallory = app.user("mallory");

    convo
        .assert_rejoin_refused(
            &mallory,
            get_group_info::Error::NotMember,
            process_external_commit::Error::NotMember,
        )
        .await;
    assert_eq!(convo.service_epoch().await, 1, "nothing was committed");
    assert_eq!(
        convo.service_devices().await,
        [convo.alice_id(), convo.bob_id()]
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_member_who_left_29_days_ago_rejoins(pool: PgPool) {
    let mut convo = Convo::with_alice_and_bob(TestApp::spawn(pool).await).await;
    let app = &convo.app;

    // Bob leaves for real: his proposal, then Alice's commit that covers it.
    convo.bob_phone.leave(&convo.id).await.unwrap();
    assert_eq!(convo.alice_phone.sync(&convo.id).await.unwrap(), []);
    assert_eq!(convo.alice_phone.self_update(&convo.id).await.unwrap(), 2);
    assert!(convo.listed_for(&convo.bob).await.is_none());

    let left_at = backdate_departure(app, &convo.id, &convo.bob, 29).await;

    let offered = app
        .client(&convo.bob)
        .get_group_info(&convo.group_info_params())
        .await
        .unwrap();
    assert_eq!(offered.epoch, 2);
    assert_eq!(
        offered.expires_at,
        Some(Datetime::from(left_at + chrono::Duration::days(30))),
        "a past member learns when the rejoin window closes"
    );
    let expected = convo.expected_for(&convo.bob, &convo.bob_id()).await;
    let expected = expected.expect("a past member within the window is expected");
    assert!(expected.needs_rejoin && !expected.welcome_pending);
    assert!(expected.left_at.is_some());

    assert_eq!(convo.bob_phone.rejoin(&convo.id).await.unwrap(), 3);

    let view = convo.listed_for(&convo.bob).await;
    let view = view.expect("getConvos lists the conversation again");
    assert_eq!(view.epoch, 3);
    let expected = convo
        .expected_for(&convo.bob, &convo.bob_id())
        .await
        .unwrap();
    assert!(!expected.needs_rejoin, "{expected:?}");
    assert_eq!(expected.left_at, None, "Bob is a current member again");
    let current_members = app
        .client(&convo.alice)
        .get_group_info(&convo.group_info_params())
        .await
        .unwrap();
    assert_eq!(
        current_members.expires_at, None,
        "absent for current members"
    );

    // Alice sees Bob's new leaf once she has read the external commit.
    assert_eq!(convo.alice_phone.sync(&convo.id).await.unwrap(), []);
    assert_eq!(convo.alice_phone.epoch(&convo.id).unwrap(), 3);
    let members = convo.alice_phone.members(&convo.id).unwrap();
    let members: Vec<String> = members.into_iter().map(|m| m.device_id).collect();
    assert_eq!(members, [convo.alice_id(), convo.bob_id()]);

    let seq = convo.bob_phone.send(&convo.id, "back again").await.unwrap();
    let received = convo.alice_phone.sync(&convo.id).await.unwrap();
    let expected = Received {
        seq,
        sender: convo.bob_id(),
        text: "back again".to_owned(),
    };
    assert_eq!(received, [expected]);
}

#[sqlx::test(migrations = "./migrations")]
async fn the_rejoin_window_closes_after_30_days(pool: PgPool) {
    let mut convo = Convo::with_alice_and_bob(TestApp::spawn(pool).await).await;
    let app = &convo.app;
    let bob = convo.bob.clone();

    // Alice removes Bob without banning him.
    let removed = convo.alice_phone.remove(&convo.id, &bob.did, false).await;
    assert_eq!(removed.unwrap(), [convo.bob_id()]);

    backdate_departure(app, &convo.id, &bob, 29).await;
    let within = app
        .client(&bob)
        .get_group_info(&convo.group_info_params())
        .await;
    assert!(within.is_ok(), "29 days after: {within:?}");

    backdate_departure(app, &convo.id, &bob, 31).await;
    convo
        .assert_rejoin_refused(
            &bob,
            get_group_info::Error::NotMember,
            process_external_commit::Error::NotMember,
        )
        .await;
    assert!(
        convo.expected_for(&bob, &convo.bob_id()).await.is_none(),
        "no longer expected after the window"
    );
    assert_eq!(convo.service_epoch().await, 2);
    assert_eq!(convo.service_devices().await, [convo.alice_id()]);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_banned_user_may_not_rejoin(pool: PgPool) {
    let mut convo = Convo::with_alice_and_bob(TestApp::spawn(pool).await).await;
    let bob = convo.bob.clone();
    assert!(convo.expected_for(&bob, &convo.bob_id()).await.is_some());

    // Alice created the conversation, so she is an admin and may ban.
    let removed = convo.alice_phone.remove(&convo.id, &bob.did, true).await;
    assert_eq!(removed.unwrap(), [convo.bob_id()]);

    convo
        .assert_rejoin_refused(
            &bob,
            get_group_info::Error::Banned,
            process_external_commit::Error::Banned,
        )
        .await;
    assert!(
        convo.expected_for(&bob, &convo.bob_id()).await.is_none(),
        "a banned user is not told to rejoin"
    );
    assert_eq!(convo.service_epoch().await, 2);
    assert_eq!(convo.service_devices().await, [convo.alice_id()]);
}

#[sqlx::test(migrations = "./migrations")]
async fn an_external_commit_adding_another_users_device_is_rejected(pool: PgPool) {
    let convo = Convo::with_alice_and_bob(TestApp::spawn(pool).await).await;
    let app = &convo.app;
    let carol = app.user("carol");

    // Bob, a member, submits an external commit whose new leaf is Carol's.
    let impostor = Joiner::new(&format!("{}#x", carol.did.as_str()));
    let (_, input) = impostor.external_commit(&convo.id, &convo.current_group_info().await);
    let refused = app.client(&convo.bob).process_external_commit(&input).await;
    assert_declared(
        refused,
        process_external_commit::Error::InvalidCommit,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(convo.service_epoch().await, 1, "the state is unchanged");
    assert_eq!(
        convo.service_devices().await,
        [convo.alice_id(), convo.bob_id()]
    );
    assert!(convo.listed_for(&carol).await.is_none());

    // The same construction with Bob's own DID is accepted: the DID was the
    // only thing wrong.
    let own = Joiner::new(&format!("{}#x", convo.bob.did.as_str()));
    let (_, input) = own.external_commit(&convo.id, &convo.current_group_info().await);
    let accepted = app.client(&convo.bob).process_external_commit(&input).await;
    assert_eq!(accepted.unwrap().epoch, 2);
}

#[sqlx::test(migrations = "./migrations")]
async fn an_external_commit_on_a_stale_group_info_is_rebuilt_from_a_fresh_one(pool: PgPool) {
    let mut convo = Convo::with_alice_and_bob(TestApp::spawn(pool).await).await;
    let app = &convo.app;
    let bob_client = app.client(&convo.bob);
    let tablet_id = format!("{}#tablet", convo.bob.did.as_str());
    let tablet = Joiner::new(&tablet_id);

    let stale = bob_client
        .get_group_info(&convo.group_info_params())
        .await
        .unwrap();
    assert_eq!(stale.epoch, 1);
    let (group, input) = tablet.external_commit(&convo.id, &stale.group_info);
    // Another member commits first.
    assert_eq!(convo.alice_phone.self_update(&convo.id).await.unwrap(), 2);
    let refused = bob_client.process_external_commit(&input).await;
    assert_declared(
        refused,
        process_external_commit::Error::EpochMismatch,
        StatusCode::CONFLICT,
    );
    assert_eq!(convo.service_epoch().await, 2);
    assert_eq!(
        convo.service_devices().await,
        [convo.alice_id(), convo.bob_id()]
    );

    // As the lexicon says: delete that group, refetch, build anew.
    tablet.forget(group);
    let fresh = bob_client
        .get_group_info(&convo.group_info_params())
        .await
        .unwrap();
    assert_eq!(fresh.epoch, 2);
    let (group, input) = tablet.external_commit(&convo.id, &fresh.group_info);
    let accepted = bob_client.process_external_commit(&input).await.unwrap();
    assert_eq!(accepted.epoch, 3);
    assert_eq!(group.epoch().as_u64(), 3);
    assert_eq!(convo.service_epoch().await, 3);

    assert_eq!(convo.alice_phone.sync(&convo.id).await.unwrap(), []);
    assert_eq!(convo.alice_phone.epoch(&convo.id).unwrap(), 3);
    let members = convo.alice_phone.members(&convo.id).unwrap();
    let members: Vec<String> = members.into_iter().map(|m| m.device_id).collect();
    assert_eq!(members, [convo.alice_id(), convo.bob_id(), tablet_id]);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_device_without_a_leaf_needs_rejoin_until_it_rejoins(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let mut alice_phone = Device::new(&alice.did, "phone", app.client(&alice)).unwrap();
    let mut bob_phone = Device::new(&bob.did, "phone", app.client(&bob)).unwrap();
    let mut bob_laptop = Device::new(&bob.did, "laptop", app.client(&bob)).unwrap();
    for device in [&mut bob_phone, &mut bob_laptop] {
        device.publish_key_packages(1).await.unwrap();
    }
    let convo = alice_phone.create_convo("lost phone").await.unwrap();
    let added = alice_phone
        .add(&convo, std::slice::from_ref(&bob.did))
        .await;
    assert_eq!(added.unwrap().len(), 2);
    assert_eq!(bob_phone.join_from_welcome(&convo).await.unwrap(), 1);
    assert_eq!(bob_laptop.join_from_welcome(&convo).await.unwrap(), 1);
    let phone_id = bob_phone.id().to_string();

    let expected = expected_entry(&app, &bob, &phone_id, &convo).await.unwrap();
    assert!(
        !expected.needs_rejoin,
        "the phone holds a leaf: {expected:?}"
    );

    // The phone is wiped. Bob's laptop removes its stale leaf; the
    // reinstalled app comes back as the same device, with no group state.
    drop(bob_phone);
    let removed = bob_laptop.remove(&convo, &bob.did, false).await.unwrap();
    assert_eq!(removed, std::slice::from_ref(&phone_id));
    let mut bob_phone = Device::new(&bob.did, "phone", app.client(&bob)).unwrap();

    let expected = expected_entry(&app, &bob, &phone_id, &convo).await;
    let expected = expected.expect("Bob is a member, so the conversation is expected");
    assert!(expected.needs_rejoin, "{expected:?}");
    assert!(!expected.welcome_pending);
    assert_eq!(expected.left_at, None, "Bob never left: his laptop stayed");
    assert_eq!(expected.epoch, 2);

    assert_eq!(bob_phone.rejoin(&convo).await.unwrap(), 3);
    let expected = expected_entry(&app, &bob, &phone_id, &convo).await.unwrap();
    assert!(!expected.needs_rejoin, "{expected:?}");
    assert!(!expected.welcome_pending);
    assert_eq!(expected.epoch, 3);

    for device in [&mut alice_phone, &mut bob_laptop] {
        assert_eq!(device.sync(&convo).await.unwrap(), []);
        assert_eq!(device.epoch(&convo).unwrap(), 3);
    }
    let seq = bob_phone.send(&convo, "restored").await.unwrap();
    for reader in [&mut alice_phone, &mut bob_laptop] {
        let received = reader.sync(&convo).await.unwrap();
        let expected = Received {
            seq,
            sender: phone_id.clone(),
            text: "restored".to_owned(),
        };
        assert_eq!(received, [expected], "what {} read", reader.id());
    }
}

// ---- helpers ---------------------------------------------------------------------

/// A conversation `alice#phone` created and added `bob#phone` to (epoch 1),
/// both with their group state.
struct Convo {
    app: TestApp,
    alice: LocalIdentity,
    bob: LocalIdentity,
    alice_phone: Device,
    bob_phone: Device,
    id: String,
}

impl Convo {
    async fn with_alice_and_bob(app: TestApp) -> Self {
        let (alice, bob) = (app.user("alice"), app.user("bob"));
        let mut alice_phone = Device::new(&alice.did, "phone", app.client(&alice)).unwrap();
        let mut bob_phone = Device::new(&bob.did, "phone", app.client(&bob)).unwrap();
        bob_phone.publish_key_packages(1).await.unwrap();
        let id = alice_phone.create_convo("rejoin").await.unwrap();
        let added = alice_phone.add(&id, std::slice::from_ref(&bob.did)).await;
        assert_eq!(added.unwrap(), [bob_phone.id().to_string()]);
        assert_eq!(bob_phone.join_from_welcome(&id).await.unwrap(), 1);
        Self {
            app,
            alice,
            bob,
            alice_phone,
            bob_phone,
            id,
        }
    }

    fn alice_id(&self) -> String {
        self.alice_phone.id().to_string()
    }

    fn bob_id(&self) -> String {
        self.bob_phone.id().to_string()
    }

    fn group_info_params(&self) -> get_group_info::Params {
        get_group_info::Params {
            convo_id: self.id.clone(),
        }
    }

    /// The current GroupInfo, as Alice (a current member) fetches it.
    async fn current_group_info(&self) -> Bytes {
        current_group_info(&self.app.client(&self.alice), &self.id).await
    }

    /// `user` may not rejoin: getGroupInfo answers `group_info_error`, and
    /// even holding a current GroupInfo (a member leaked it), an external
    /// commit for `user`'s phone answers `commit_error`; both 403.
    async fn assert_rejoin_refused(
        &self,
        user: &LocalIdentity,
        group_info_error: get_group_info::Error,
        commit_error: process_external_commit::Error,
    ) {
        let client = self.app.client(user);
        let refused = client.get_group_info(&self.group_info_params()).await;
        assert_declared(refused, group_info_error, StatusCode::FORBIDDEN);
        let joiner = Joiner::new(&format!("{}#phone", user.did.as_str()));
        let (_, input) = joiner.external_commit(&self.id, &self.current_group_info().await);
        let refused = client.process_external_commit(&input).await;
        assert_declared(refused, commit_error, StatusCode::FORBIDDEN);
    }

    /// The service's epoch, as Alice reads it.
    async fn service_epoch(&self) -> i64 {
        let params = get_epoch::Params {
            convo_id: self.id.clone(),
        };
        let client = self.app.client(&self.alice);
        client.get_epoch(&params).await.unwrap().epoch
    }

    /// The devices holding a leaf, by leaf index, as getConvos tells Alice.
    async fn service_devices(&self) -> Vec<String> {
        let view = self
            .listed_for(&self.alice)
            .await
            .expect("Alice is a member");
        let mut members = view.members;
        members.sort_by_key(|member| member.leaf_index);
        members.into_iter().map(|member| member.device_id).collect()
    }

    /// The conversation as getConvos lists it for `user`, if it does.
    async fn listed_for(&self, user: &LocalIdentity) -> Option<ConvoView> {
        let params = get_convos::Params {
            limit: 100,
            cursor: None,
        };
        let listing = self.app.client(user).get_convos(&params).await.unwrap();
        listing
            .convos
            .into_iter()
            .find(|view| view.group_id == self.id)
    }

    async fn expected_for(
        &self,
        user: &LocalIdentity,
        device_id: &str,
    ) -> Option<ExpectedConversation> {
        expected_entry(&self.app, user, device_id, &self.id).await
    }
}

/// The conversation as getExpectedConversations lists it for `device_id`.
async fn expected_entry(
    app: &TestApp,
    user: &LocalIdentity,
    device_id: &str,
    convo: &str,
) -> Option<ExpectedConversation> {
    let params = get_expected_conversations::Params {
        device_id: device_id.to_owned(),
        limit: 100,
        cursor: None,
    };
    let client = app.client(user);
    let expected = client.get_expected_conversations(&params).await.unwrap();
    expected
        .conversations
        .into_iter()
        .find(|entry| entry.convo_id == convo)
}

/// How time passes in these tests: the service compares
/// `convo_users.left_at` with now(), so moving the departure of a user who
/// has really left `days` into the past is the same as waiting that long.
/// Returns the new `left_at`.
async fn backdate_departure(
    app: &TestApp,
    convo: &str,
    user: &LocalIdentity,
    days: i32,
) -> DateTime<Utc> {
    let left_at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE convo_users SET left_at = now() - make_interval(days => $3) \
         WHERE convo_id = $1 AND did = $2 AND left_at IS NOT NULL RETURNING left_at",
    )
    .bind(from_hex(convo).unwrap())
    .bind(user.did.as_str())
    .bind(days)
    .fetch_optional(&app.pool)
    .await
    .unwrap()
    .flatten();
    left_at.expect("only a user who has left can have left long ago")
}
