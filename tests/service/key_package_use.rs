//! How often a published KeyPackage may add its device (addMembers), with
//! real OpenMLS clients over HTTP: a KeyPackage that one accepted commit
//! used cannot be used by another, even by someone who holds its exact
//! bytes (404 KeyPackageNotFound, the other conversation unchanged); a
//! KeyPackage never published here, or past its expiry, is
//! KeyPackageNotFound too; a rejected commit uses up none of its
//! KeyPackages; a last-resort KeyPackage may add its device to two
//! conversations, and the device joins both. Along the way: getWelcome
//! serves the Welcome byte for byte as the committer sent it.
//!
//! Alice is the demo [`Device`], which adds whatever getKeyPackages hands
//! it. Carol is a [`Committer`], a bare OpenMLS member in this file that
//! adds any KeyPackage bytes it is given. Bob publishes KeyPackages by hand
//! (the demo Device always adds a last-resort one) and joins from his
//! Welcomes with the private keys they were made with.

use crate::common::member::validated;
use crate::common::mls::{self, SUITE_NAME};
use crate::common::{TestApp, assert_declared};
use catbird_generated::lexicons::blue::catbird::mls::defs::ConvoView;
use catbird_generated::lexicons::blue::catbird::mls::{
    Client, add_members, confirm_welcome, get_convos, get_epoch, get_key_packages, get_welcome,
    publish_key_packages,
};
use catbird_generated::runtime::Bytes;
use catbird_generated::runtime::xrpc::ClientError;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_mls_client::Device;
use catbird_mls_client::LocalIdentity;
use catbird_mls_client::{Change, Installation};
use catbird_mls_core::mls_crypto::from_hex;
use sqlx::PgPool;

#[sqlx::test(migrations = "./migrations")]
async fn a_key_package_is_used_by_exactly_one_accepted_commit(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice, bob, carol) = (app.user("alice"), app.user("bob"), app.user("carol"));
    let bob_phone = mls::installation(&bob.did, "phone");
    let only = mls::key_package(&bob_phone);
    let published = publish(&app, &bob, vec![only.clone()]).await;
    assert!(
        !published.last_resort,
        "Bob has exactly one, ordinary KeyPackage"
    );

    // Alice fetches it (getKeyPackages, inside `add`) and adds Bob to A.
    let mut alice_phone = Device::new(&alice.did, "phone", app.client(&alice)).unwrap();
    let convo_a = alice_phone.create_convo("A").await.unwrap();
    let added = alice_phone
        .add(&convo_a, std::slice::from_ref(&bob.did))
        .await;
    assert_eq!(added.unwrap(), [bob_phone.identity().to_owned()]);
    let stored = key_package_row(&app, bob_phone.identity()).await;
    assert_eq!(
        stored.used_in.as_deref(),
        Some(group_id(&convo_a).as_slice())
    );

    // Carol holds the very same bytes (here: from the database) and tries
    // to add Bob to B with them.
    assert_eq!(stored.bytes, only.0, "the bytes Bob published");
    let mut carol_phone = Committer::create(&app, &carol, "phone").await;
    let refused = carol_phone.add(&Bytes(stored.bytes)).await;
    assert_declared(
        refused,
        add_members::Error::KeyPackageNotFound,
        StatusCode::NOT_FOUND,
    );
    assert_unchanged(&app, &carol_phone).await;
    assert!(listed(&app, &bob, &carol_phone.convo).await.is_none());
    let stored = key_package_row(&app, bob_phone.identity()).await;
    assert_eq!(
        stored.used_in.as_deref(),
        Some(group_id(&convo_a).as_slice()),
        "still used by A's commit only"
    );

    // The KeyPackage did its one job: Bob joins A with it.
    assert_eq!(join_from_welcome(&app, &bob, &bob_phone, &convo_a).await, 1);

    // With a fresh KeyPackage, fetched as usual, Carol's add is accepted:
    // reuse was the only thing wrong.
    publish(&app, &bob, vec![mls::key_package(&bob_phone)]).await;
    let fresh = fetch_key_package(&app, &carol, &bob).await;
    assert_eq!(carol_phone.add(&fresh).await.unwrap().epoch, 1);
    let (epoch, welcome) = join_with_welcome(&app, &bob, &bob_phone, &carol_phone.convo).await;
    assert_eq!(epoch, 1);
    assert_eq!(
        Some(welcome),
        carol_phone.sent_welcome,
        "getWelcome serves the Welcome byte for byte as the committer sent it"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_rejected_commit_does_not_use_up_its_key_packages(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (bob, carol, dave) = (app.user("bob"), app.user("carol"), app.user("dave"));
    let bob_phone = mls::installation(&bob.did, "phone");
    let published = mls::key_package(&bob_phone);
    publish(&app, &bob, vec![published.clone()]).await;
    let unpublished = mls::key_package(&mls::installation(&dave.did, "phone"));

    // One commit adds Bob (a valid, unused KeyPackage) and Dave (never
    // published): it is rejected as a whole.
    let mut carol_phone = Committer::create(&app, &carol, "phone").await;
    let refused = carol_phone.add_all(&[&published, &unpublished]).await;
    assert_declared(
        refused,
        add_members::Error::KeyPackageNotFound,
        StatusCode::NOT_FOUND,
    );
    assert_unchanged(&app, &carol_phone).await;
    let stored = key_package_row(&app, bob_phone.identity()).await;
    assert_eq!(stored.used_in, None, "Bob's KeyPackage is still unused");

    // So the next commit may use it.
    assert_eq!(carol_phone.add(&published).await.unwrap().epoch, 1);
    let stored = key_package_row(&app, bob_phone.identity()).await;
    let convo_b = group_id(&carol_phone.convo);
    assert_eq!(stored.used_in.as_deref(), Some(convo_b.as_slice()));
    assert_eq!(
        join_from_welcome(&app, &bob, &bob_phone, &carol_phone.convo).await,
        1
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_key_package_never_published_here_is_not_found(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (carol, dave) = (app.user("carol"), app.user("dave"));
    // A valid KeyPackage of Dave's, made but never published to the service.
    let dave_phone = mls::installation(&dave.did, "phone");
    let unpublished = mls::key_package(&dave_phone);

    let mut carol_phone = Committer::create(&app, &carol, "phone").await;
    let refused = carol_phone.add(&unpublished).await;
    assert_declared(
        refused,
        add_members::Error::KeyPackageNotFound,
        StatusCode::NOT_FOUND,
    );
    assert_unchanged(&app, &carol_phone).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM key_packages WHERE did = $1")
        .bind(dave.did.as_str())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[sqlx::test(migrations = "./migrations")]
async fn an_expired_key_package_is_not_found(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (bob, carol) = (app.user("bob"), app.user("carol"));
    let bob_phone = mls::installation(&bob.did, "phone");
    let key_package = mls::key_package(&bob_phone);
    publish(&app, &bob, vec![key_package.clone()]).await;
    // How time passes here: the service compares `key_packages.expires_at`
    // with now(), so moving it into the past is the same as waiting for the
    // end of the KeyPackage's lifetime.
    let expired = sqlx::query(
        "UPDATE key_packages SET expires_at = now() - interval '1 second' WHERE device_id = $1",
    )
    .bind(bob_phone.identity())
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(expired.rows_affected(), 1);

    let mut carol_phone = Committer::create(&app, &carol, "phone").await;
    let refused = carol_phone.add(&key_package).await;
    assert_declared(
        refused,
        add_members::Error::KeyPackageNotFound,
        StatusCode::NOT_FOUND,
    );
    assert_unchanged(&app, &carol_phone).await;
    assert_eq!(
        key_package_row(&app, bob_phone.identity()).await.used_in,
        None
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_last_resort_key_package_may_be_used_by_two_commits(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice, bob, carol) = (app.user("alice"), app.user("bob"), app.user("carol"));
    let bob_phone = mls::installation(&bob.did, "phone");
    let published = publish(&app, &bob, vec![mls::last_resort_key_package(&bob_phone)]).await;
    assert!(
        published.last_resort,
        "Bob has only a last-resort KeyPackage"
    );

    let mut convos = Vec::new();
    for (user, name) in [(&alice, "A"), (&carol, "B")] {
        let mut phone = Device::new(&user.did, "phone", app.client(user)).unwrap();
        let convo = phone.create_convo(name).await.unwrap();
        let added = phone.add(&convo, std::slice::from_ref(&bob.did)).await;
        assert_eq!(
            added.unwrap(),
            [bob_phone.identity().to_owned()],
            "added to {name}"
        );
        convos.push(convo);
    }

    // Both commits used the one KeyPackage.
    let stored = key_package_row(&app, bob_phone.identity()).await;
    assert!(stored.used_in.is_some());
    for convo in &convos {
        let named: Vec<u8> = sqlx::query_scalar(
            "SELECT key_package_ref FROM welcomes WHERE convo_id = $1 AND device_id = $2",
        )
        .bind(group_id(convo))
        .bind(bob_phone.identity())
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(named, stored.key_package_ref, "the Welcome of {convo}");
    }
    for convo in &convos {
        assert_eq!(join_from_welcome(&app, &bob, &bob_phone, convo).await, 1);
    }
    for convo in &convos {
        let view = listed(&app, &bob, convo).await.expect("Bob is a member");
        assert_eq!(view.epoch, 1);
    }
}

// ---- helpers ---------------------------------------------------------------------

/// A member that builds its commits with OpenMLS directly, so that it can
/// add any KeyPackage bytes it holds. Its conversation has only itself
/// until it adds someone.
struct Committer {
    device: Device,
    client: Client,
    convo: String,
    /// The Welcome of its last accepted add.
    sent_welcome: Option<Bytes>,
}

impl Committer {
    /// Creates a group as `user#name` and registers it with createConvo.
    async fn create(app: &TestApp, user: &LocalIdentity, name: &str) -> Self {
        let client = app.client(user);
        let mut device = Device::new(&user.did, name, client.clone()).unwrap();
        let convo = device.create_convo("carol's").await.unwrap();
        Self {
            device,
            client,
            convo,
            sent_welcome: None,
        }
    }

    /// Adds the device of `key_package` (an MLSMessage) with addMembers.
    async fn add(
        &mut self,
        key_package: &Bytes,
    ) -> Result<add_members::Output, ClientError<add_members::Error>> {
        self.add_all(&[key_package]).await
    }

    /// Adds the devices of `key_packages` in one commit with addMembers;
    /// applies the commit only if the service accepts it.
    async fn add_all(
        &mut self,
        key_packages: &[&Bytes],
    ) -> Result<add_members::Output, ClientError<add_members::Error>> {
        let installation = self.device.installation();
        let key_packages = key_packages
            .iter()
            .map(|bytes| validated(installation, bytes))
            .collect();
        let staged = self
            .device
            .prepare(&self.convo, Change::Add(key_packages))
            .unwrap();
        let input = add_members::Input {
            extra: Default::default(),
            convo_id: self.convo.clone(),
            commit: staged.commit,
            welcome: staged.welcome.expect("a commit with an add has a Welcome"),
            group_info: staged.group_info,
            idempotency_key: None,
        };
        let submitted = self.client.add_members(&input).await;
        let accepted = submitted.as_ref().ok().map(|output| output.seq);
        self.device.conclude(&self.convo, accepted).unwrap();
        if accepted.is_some() {
            self.sent_welcome = Some(input.welcome);
        }
        submitted
    }
}

/// Asserts that the Committer's conversation is as created: epoch 0 for the
/// service and locally, only the creator's leaf, no Welcome stored.
async fn assert_unchanged(app: &TestApp, committer: &Committer) {
    let params = get_epoch::Params {
        convo_id: committer.convo.clone(),
    };
    let epoch = committer.client.get_epoch(&params).await.unwrap().epoch;
    assert_eq!(epoch, 0, "the service's epoch");
    assert_eq!(
        committer.device.epoch(&committer.convo).unwrap(),
        0,
        "the local epoch"
    );
    let welcomes: i64 = sqlx::query_scalar("SELECT count(*) FROM welcomes WHERE convo_id = $1")
        .bind(group_id(&committer.convo))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(welcomes, 0, "no Welcome for a rejected commit");
    let listing = committer
        .client
        .get_convos(&get_convos::Params {
            limit: 100,
            cursor: None,
        })
        .await
        .unwrap();
    let view = listing
        .convos
        .into_iter()
        .find(|view| view.group_id == committer.convo)
        .expect("the creator is a member");
    let members: Vec<String> = view.members.into_iter().map(|m| m.device_id).collect();
    assert_eq!(members, [committer.device.id().to_string()]);
}

/// Publishes KeyPackages of one device; returns what was stored for the
/// first.
async fn publish(
    app: &TestApp,
    user: &LocalIdentity,
    key_packages: Vec<Bytes>,
) -> catbird_generated::lexicons::blue::catbird::mls::defs::KeyPackageInfo {
    let input = publish_key_packages::Input {
        extra: Default::default(),
        key_packages,
    };
    let published = app.client(user).publish_key_packages(&input).await.unwrap();
    published.key_packages.into_iter().next().unwrap()
}

/// One KeyPackage of `of`, handed out by getKeyPackages to `by`.
async fn fetch_key_package(app: &TestApp, by: &LocalIdentity, of: &LocalIdentity) -> Bytes {
    let params = get_key_packages::Params {
        dids: vec![of.did.clone()],
        cipher_suite: SUITE_NAME.to_owned(),
        convo_id: None,
    };
    let offered = app.client(by).get_key_packages(&params).await.unwrap();
    let [offer] = <[_; 1]>::try_from(offered.key_packages).expect("one KeyPackage");
    offer.key_package
}

/// The `key_packages` row of a device that published exactly one.
struct KeyPackageRow {
    key_package_ref: Vec<u8>,
    bytes: Vec<u8>,
    used_in: Option<Vec<u8>>,
}

/// The oldest `key_packages` row of `device_id`.
async fn key_package_row(app: &TestApp, device_id: &str) -> KeyPackageRow {
    let (key_package_ref, bytes, used_in) = sqlx::query_as(
        "SELECT key_package_ref, key_package, used_in FROM key_packages \
         WHERE device_id = $1 ORDER BY published_at LIMIT 1",
    )
    .bind(device_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    KeyPackageRow {
        key_package_ref,
        bytes,
        used_in,
    }
}

/// Joins `device` to `convo` from its Welcome, with the private keys its
/// KeyPackages were made with, and confirms. Returns the epoch joined at.
async fn join_from_welcome(
    app: &TestApp,
    user: &LocalIdentity,
    device: &Installation,
    convo: &str,
) -> u64 {
    join_with_welcome(app, user, device, convo).await.0
}

/// [`join_from_welcome`], also returning the Welcome as getWelcome served it.
async fn join_with_welcome(
    app: &TestApp,
    user: &LocalIdentity,
    device: &Installation,
    convo: &str,
) -> (u64, Bytes) {
    let client = app.client(user);
    let params = get_welcome::Params {
        convo_id: convo.to_owned(),
        device_id: device.identity().to_owned(),
    };
    let fetched = client.get_welcome(&params).await.unwrap();
    let group = device.join(&fetched.welcome.0).unwrap();
    let input = confirm_welcome::Input {
        extra: Default::default(),
        convo_id: convo.to_owned(),
        device_id: device.identity().to_owned(),
        success: true,
        error_details: None,
    };
    client.confirm_welcome(&input).await.unwrap();
    (group.epoch().as_u64(), fetched.welcome)
}

/// The conversation as getConvos lists it for `user`, if it does.
async fn listed(app: &TestApp, user: &LocalIdentity, convo: &str) -> Option<ConvoView> {
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

fn group_id(convo: &str) -> Vec<u8> {
    from_hex(convo).unwrap()
}
