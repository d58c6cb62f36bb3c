//! Bad input to the group lifecycle changes nothing and gets a typed 4xx.
//!
//! Every case runs against a live two-member conversation (alice and bob,
//! epoch 1, a commit and two messages in the log) and snapshots, before and
//! after, what a client can observe: getEpoch, the whole log (getMessages),
//! the conversation as getConvos lists it (members included) and the stored
//! GroupInfo (getGroupInfo). Each rejection must be exactly the declared
//! error and status of the lexicon, never a 500, and the snapshot must be
//! unchanged. Where a rejected request carried a valid part (a valid commit
//! with a bad GroupInfo, a commit before tampering), that valid input is
//! accepted afterwards, which proves nothing was half-applied; and every
//! case ends with the group still working (a commit both members follow, a
//! message both ways).
//!
//! Covered: garbage and non-commit MLS messages as a commit (400
//! InvalidCommit); garbage GroupInfo, or one without the ratchet tree (400
//! InvalidGroupInfo); a tampered commit (400 InvalidCommit); a commit of
//! another group (400 InvalidCommit); a self-update that changes the leaf's
//! DID (400 InvalidCommit); a GroupInfo of the previous epoch, of another
//! group or of another commit (400 InvalidGroupInfo); an application
//! message of another group (400 InvalidCiphertext), of a past epoch (409
//! EpochMismatch), or whose epoch field is not its ciphertext's (400
//! InvalidCiphertext); a stale commit (409 EpochMismatch).
//!
//! The members are driven with OpenMLS directly ([`Member`]), because the
//! demo's `Device` cannot prepare a commit without submitting it.

mod common;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;

use catbird_generated::lexicons::blue::catbird::mls::defs::{
    CipherSuite, ConvoMetadata, ConvoView, MessageView,
};
use catbird_generated::lexicons::blue::catbird::mls::{
    Client, add_members, commit_group_change, confirm_welcome, create_convo, get_convos, get_epoch,
    get_group_info, get_key_packages, get_messages, get_welcome, publish_key_packages,
    send_message,
};
use catbird_generated::runtime::xrpc::ClientError;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::{Bytes, DeclaredError, Did};
use catbird_mls::auth::LocalIdentity;
use catbird_mls::mls_crypto::{from_hex, to_hex};
use common::TestApp;
use common::mls::{self, SUITE, SUITE_NAME};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, GroupId, KeyPackage, MlsGroup, MlsGroupCreateConfig,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, NewSignerBundle,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent, ProtocolVersion, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::OpenMlsProvider as _;
use sqlx::PgPool;

// ---- commits ------------------------------------------------------------------

#[sqlx::test(migrations = "./migrations")]
async fn garbage_as_a_commit_is_invalid_commit(pool: PgPool) {
    let mut f = Fixture::new(pool).await;
    let before = f.snapshot().await;
    let group_info = f.alice.group_info(&f.convo);
    let not_commits = [
        (
            "random bytes",
            b"\x00\x01garbage, not an MLSMessage".to_vec(),
        ),
        ("a KeyPackage", f.bob.mls.key_package().0),
        (
            "an application message",
            f.alice.encrypt(&f.convo, "not a commit").ciphertext.0,
        ),
    ];
    for (what, commit) in not_commits {
        let result = f
            .alice
            .submit_raw(&f.convo, commit, group_info.clone())
            .await;
        expect_error(
            result,
            commit_group_change::Error::InvalidCommit,
            StatusCode::BAD_REQUEST,
            what,
        );
        assert_eq!(f.snapshot().await, before, "after {what}");
    }
    f.assert_still_works().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_malformed_group_info_with_a_valid_commit_is_invalid_group_info(pool: PgPool) {
    let mut f = Fixture::new(pool).await;
    let before = f.snapshot().await;

    // A GroupInfo for the commit's epoch, signed by alice, but without the
    // ratchet_tree extension.
    let without_tree = f.alice.prepare_self_update_with(&f.convo, false);
    let result = f.alice.submit(&f.convo, &without_tree).await;
    expect_error(
        result,
        commit_group_change::Error::InvalidGroupInfo,
        StatusCode::BAD_REQUEST,
        "a GroupInfo without the ratchet tree",
    );
    f.alice.discard(&f.convo);
    assert_eq!(
        f.snapshot().await,
        before,
        "after the GroupInfo without tree"
    );

    let prepared = f.alice.prepare_self_update(&f.convo);
    let bad_group_infos = [
        ("random bytes", b"\x00\x01garbage, not a GroupInfo".to_vec()),
        ("the commit itself", prepared.commit.0.clone()),
    ];
    for (what, group_info) in bad_group_infos {
        let result = f
            .alice
            .submit_raw(&f.convo, prepared.commit.0.clone(), group_info)
            .await;
        expect_error(
            result,
            commit_group_change::Error::InvalidGroupInfo,
            StatusCode::BAD_REQUEST,
            what,
        );
        assert_eq!(f.snapshot().await, before, "after {what}");
    }

    // The same commit with its own GroupInfo: nothing of it was kept.
    f.alice.submit_and_merge(&f.convo, &prepared).await;
    f.assert_committed(&prepared, 2).await;
    f.assert_still_works().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_tampered_commit_is_invalid_commit(pool: PgPool) {
    let mut f = Fixture::new(pool).await;
    let before = f.snapshot().await;
    let prepared = f.alice.prepare_self_update(&f.convo);
    let original = &prepared.commit.0;
    let tampered = [
        (
            "a flipped signature byte",
            flip(original, signature_byte(original)),
        ),
        ("a flipped content byte", flip(original, original.len() / 2)),
    ];
    for (what, commit) in tampered {
        let result = f
            .alice
            .submit_raw(&f.convo, commit, prepared.group_info.0.clone())
            .await;
        expect_error(
            result,
            commit_group_change::Error::InvalidCommit,
            StatusCode::BAD_REQUEST,
            what,
        );
        assert_eq!(f.snapshot().await, before, "after {what}");
    }

    // The untampered commit is still good.
    f.alice.submit_and_merge(&f.convo, &prepared).await;
    f.assert_committed(&prepared, 2).await;
    f.assert_still_works().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_commit_for_another_group_is_invalid_commit(pool: PgPool) {
    let mut f = Fixture::new(pool).await;
    let other = f.second_convo().await;
    assert_eq!(f.alice.epoch(&other), f.alice.epoch(&f.convo), "same epoch");
    let before = f.snapshot().await;

    let foreign = f.alice.prepare_self_update(&other);
    let result = f
        .alice
        .submit_raw(
            &f.convo,
            foreign.commit.0.clone(),
            foreign.group_info.0.clone(),
        )
        .await;
    expect_error(
        result,
        commit_group_change::Error::InvalidCommit,
        StatusCode::BAD_REQUEST,
        "a commit of another conversation",
    );
    assert_eq!(f.snapshot().await, before);

    // It is a real commit: its own conversation takes it.
    f.alice.submit_and_merge(&other, &foreign).await;
    f.assert_still_works().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_self_update_that_changes_the_leafs_did_is_invalid_commit(pool: PgPool) {
    let mut f = Fixture::new(pool).await;
    let before = f.snapshot().await;
    let identities = [
        "did:of:someone-else#phone".to_owned(),
        // The other member's DID: still not alice's.
        format!("{}#phone", f.bob_user.did.as_str()),
    ];
    for identity in &identities {
        let (prepared, _) = f.alice.prepare_key_rotation(&f.convo, identity);
        let result = f.alice.submit(&f.convo, &prepared).await;
        expect_error(
            result,
            commit_group_change::Error::InvalidCommit,
            StatusCode::BAD_REQUEST,
            &format!("a self-update to {identity}"),
        );
        f.alice.discard(&f.convo);
        assert_eq!(f.snapshot().await, before, "after {identity}");
    }

    // The control: the same kind of commit (a new signature key and
    // credential) that keeps alice's DID is accepted, so the DID was the
    // reason.
    let own = f.alice.mls.id.clone();
    let (prepared, signer) = f.alice.prepare_key_rotation(&f.convo, &own);
    f.alice.submit_and_merge(&f.convo, &prepared).await;
    f.alice.mls.signer = signer;
    f.assert_committed(&prepared, 2).await;
    f.assert_still_works().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_group_info_that_does_not_match_the_commit_is_invalid_group_info(pool: PgPool) {
    let mut f = Fixture::new(pool).await;
    let other = f.second_convo().await;
    let before = f.snapshot().await;

    let previous_epoch = f.alice.group_info(&f.convo);
    let other_group = f.alice.group_info(&other);
    let competing = f.bob.prepare_self_update(&f.convo);
    f.bob.discard(&f.convo);
    let prepared = f.alice.prepare_self_update(&f.convo);
    let mismatches = [
        ("the GroupInfo of the previous epoch", previous_epoch),
        ("the GroupInfo of another conversation", other_group),
        (
            "the GroupInfo of another commit of this epoch",
            competing.group_info.0,
        ),
    ];
    for (what, group_info) in mismatches {
        let result = f
            .alice
            .submit_raw(&f.convo, prepared.commit.0.clone(), group_info)
            .await;
        expect_error(
            result,
            commit_group_change::Error::InvalidGroupInfo,
            StatusCode::BAD_REQUEST,
            what,
        );
        assert_eq!(f.snapshot().await, before, "after {what}");
    }

    // The commit with its correct GroupInfo: accepted, and that GroupInfo
    // is what getGroupInfo serves now.
    f.alice.submit_and_merge(&f.convo, &prepared).await;
    f.assert_committed(&prepared, 2).await;
    f.assert_still_works().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_stale_commit_is_epoch_mismatch(pool: PgPool) {
    let mut f = Fixture::new(pool).await;
    let stale = f.alice.prepare_self_update(&f.convo);
    f.bob.self_update(&f.convo).await;
    let before = f.snapshot().await;
    assert_eq!(before.epoch, 2);

    let result = f.alice.submit(&f.convo, &stale).await;
    expect_error(
        result,
        commit_group_change::Error::EpochMismatch,
        StatusCode::CONFLICT,
        "a commit for epoch 1 at epoch 2",
    );
    assert_eq!(f.snapshot().await, before);

    // As the lexicon prescribes: discard, read the log, commit again.
    f.alice.discard(&f.convo);
    assert_eq!(f.alice.sync(&f.convo).await, Vec::<String>::new());
    f.alice.self_update(&f.convo).await;
    assert_eq!(f.bob.sync(&f.convo).await, Vec::<String>::new());
    f.assert_epochs(3).await;
    f.assert_still_works().await;
}

// ---- application messages ---------------------------------------------------------

#[sqlx::test(migrations = "./migrations")]
async fn an_application_message_for_another_group_is_invalid_ciphertext(pool: PgPool) {
    let mut f = Fixture::new(pool).await;
    let other = f.second_convo().await;
    let before = f.snapshot().await;

    let mut foreign = f.alice.encrypt(&other, "for the other conversation");
    assert_eq!(foreign.epoch, before.epoch, "same epoch, other group");
    foreign.convo_id = f.convo.clone();
    let result = f.alice.client.send_message(&foreign).await;
    expect_error(
        result,
        send_message::Error::InvalidCiphertext,
        StatusCode::BAD_REQUEST,
        "a PrivateMessage of another group",
    );
    assert_eq!(f.snapshot().await, before);
    f.assert_still_works().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn an_application_message_for_a_past_epoch_is_rejected(pool: PgPool) {
    let mut f = Fixture::new(pool).await;
    let old = f.alice.encrypt(&f.convo, "written in epoch 1");
    assert_eq!(old.epoch, 1);
    f.bob.self_update(&f.convo).await;
    let before = f.snapshot().await;
    assert_eq!(before.epoch, 2);

    let result = f.alice.client.send_message(&old).await;
    expect_error(
        result,
        send_message::Error::EpochMismatch,
        StatusCode::CONFLICT,
        "a message of epoch 1 at epoch 2",
    );
    assert_eq!(f.snapshot().await, before);

    // The current epoch in the field, but the ciphertext says epoch 1.
    let relabelled = send_message::Input { epoch: 2, ..old };
    let result = f.alice.client.send_message(&relabelled).await;
    expect_error(
        result,
        send_message::Error::InvalidCiphertext,
        StatusCode::BAD_REQUEST,
        "epoch 2 claimed for a PrivateMessage of epoch 1",
    );
    assert_eq!(f.snapshot().await, before);

    // Alice reads the log and sends again, in the new epoch.
    assert_eq!(f.alice.sync(&f.convo).await, Vec::<String>::new());
    f.assert_still_works().await;
}

// ---- the fixture --------------------------------------------------------------

/// A running service with a conversation between alice (the creator) and
/// bob, at epoch 1, with two messages after the commit that added bob.
struct Fixture {
    app: TestApp,
    alice_user: LocalIdentity,
    bob_user: LocalIdentity,
    alice: Member,
    bob: Member,
    convo: String,
}

/// Everything a client can observe about a conversation.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// getEpoch.
    epoch: i64,
    /// getMessages, every entry.
    log: Vec<MessageView>,
    /// getConvos' entry (members, epoch, lastMessageAt, ...).
    view: ConvoView,
    /// getGroupInfo: the bytes and their epoch.
    group_info: (Vec<u8>, i64),
}

impl Fixture {
    async fn new(pool: PgPool) -> Self {
        let app = TestApp::spawn(pool).await;
        let (alice_user, bob_user) = (app.user("alice"), app.user("bob"));
        let mut alice = Member::new(&app, &alice_user, "phone");
        let mut bob = Member::new(&app, &bob_user, "phone");
        let convo = alice.create_convo().await;
        bob.publish_key_package().await;
        alice.add(&convo, &bob_user.did).await;
        bob.join(&convo).await;
        alice.send(&convo, "hello bob").await;
        assert_eq!(bob.sync(&convo).await, ["hello bob"]);
        bob.send(&convo, "hello alice").await;
        assert_eq!(alice.sync(&convo).await, ["hello alice"]);
        let fixture = Self {
            app,
            alice_user,
            bob_user,
            alice,
            bob,
            convo,
        };
        fixture.assert_epochs(1).await;
        fixture
    }

    /// Another conversation of alice and bob, also at epoch 1 (bob does not
    /// need to join it for alice to commit there).
    async fn second_convo(&mut self) -> String {
        let other = self.alice.create_convo().await;
        self.bob.publish_key_package().await;
        self.alice.add(&other, &self.bob_user.did).await;
        assert_eq!(self.alice.epoch(&other), 1);
        other
    }

    async fn snapshot(&self) -> Snapshot {
        let client = self.app.client(&self.alice_user);
        let convo_id = self.convo.clone();
        let epoch = client
            .get_epoch(&get_epoch::Params {
                convo_id: convo_id.clone(),
            })
            .await
            .unwrap()
            .epoch;
        let log = read_log(&client, &self.convo).await;
        let view = client
            .get_convos(&get_convos::Params {
                limit: 100,
                cursor: None,
            })
            .await
            .unwrap()
            .convos
            .into_iter()
            .find(|view| view.group_id == self.convo)
            .expect("getConvos lists the conversation");
        let group_info = client
            .get_group_info(&get_group_info::Params { convo_id })
            .await
            .unwrap();
        Snapshot {
            epoch,
            log,
            view,
            group_info: (group_info.group_info.0, group_info.epoch),
        }
    }

    /// The service and both members are at `epoch`.
    async fn assert_epochs(&self, epoch: u64) {
        let service = self
            .app
            .client(&self.alice_user)
            .get_epoch(&get_epoch::Params {
                convo_id: self.convo.clone(),
            })
            .await
            .unwrap()
            .epoch;
        assert_eq!(service, epoch as i64, "getEpoch");
        assert_eq!(self.alice.epoch(&self.convo), epoch, "alice's epoch");
        assert_eq!(self.bob.epoch(&self.convo), epoch, "bob's epoch");
    }

    /// Alice's `prepared` commit was accepted into `epoch`: bob follows it,
    /// and getGroupInfo serves exactly its GroupInfo.
    async fn assert_committed(&mut self, prepared: &Prepared, epoch: u64) {
        assert_eq!(self.bob.sync(&self.convo).await, Vec::<String>::new());
        self.assert_epochs(epoch).await;
        let stored = self
            .app
            .client(&self.bob_user)
            .get_group_info(&get_group_info::Params {
                convo_id: self.convo.clone(),
            })
            .await
            .unwrap();
        assert_eq!(stored.epoch, epoch as i64);
        assert!(
            stored.group_info == prepared.group_info,
            "getGroupInfo serves the accepted commit's GroupInfo"
        );
    }

    /// The group still works for both: a commit by bob that alice follows,
    /// and a message each way.
    async fn assert_still_works(&mut self) {
        let epoch = self.bob.self_update(&self.convo).await;
        assert_eq!(self.alice.sync(&self.convo).await, Vec::<String>::new());
        self.assert_epochs(epoch).await;
        self.alice.send(&self.convo, "still there?").await;
        assert_eq!(self.bob.sync(&self.convo).await, ["still there?"]);
        self.bob.send(&self.convo, "yes").await;
        assert_eq!(self.alice.sync(&self.convo).await, ["yes"]);
        let seqs: Vec<i64> = read_log(&self.app.client(&self.alice_user), &self.convo)
            .await
            .iter()
            .map(|entry| entry.seq)
            .collect();
        let last = *seqs.last().unwrap();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "a gapless log");
    }
}

/// The whole log as the client's user sees it.
async fn read_log(client: &Client, convo: &str) -> Vec<MessageView> {
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

/// `result` is the declared error `expected` with HTTP `status`.
fn expect_error<T: Debug, E: DeclaredError + PartialEq + Debug>(
    result: Result<T, ClientError<E>>,
    expected: E,
    status: StatusCode,
    what: &str,
) {
    let error = match result {
        Ok(output) => panic!("{what}: accepted ({output:?}), expected {status} {expected:?}"),
        Err(error) => error,
    };
    assert_eq!(
        (error.status(), error.declared()),
        (Some(status), Some(&expected)),
        "{what}: got {error}"
    );
}

/// `bytes` with the byte at `index` inverted.
fn flip(bytes: &[u8], index: usize) -> Vec<u8> {
    let mut tampered = bytes.to_vec();
    tampered[index] ^= 0xff;
    tampered
}

/// A byte inside the signature of a member's PublicMessage commit. Such a
/// message ends with the signature (a one-byte length 64, then 64 bytes of
/// Ed25519), the confirmation tag and the membership tag (each a one-byte
/// length 32, then 32 bytes of HMAC-SHA256).
fn signature_byte(commit: &[u8]) -> usize {
    const TAG: usize = 1 + 32;
    const SIGNATURE: usize = 1 + 64;
    let tags = commit.len() - 2 * TAG;
    let signature = tags - SIGNATURE;
    assert_eq!(commit[tags], 32, "the confirmation tag's length");
    assert_eq!(commit[tags + TAG], 32, "the membership tag's length");
    assert_eq!(commit[signature], 64, "the signature's length");
    signature + 1 + 20
}

// ---- a member driven with OpenMLS directly ------------------------------------------

/// A member device: a test device (own signature key and OpenMLS storage)
/// and the generated client acting as its user. Like the demo's `Device`,
/// it merges a commit only after the service accepted it; unlike it, it can
/// prepare a commit and leave the submission to the test.
struct Member {
    mls: mls::Device,
    client: Client,
    /// Per conversation: how far this member has read the log.
    logs: HashMap<String, Log>,
    messages_sent: Cell<u64>,
}

#[derive(Default)]
struct Log {
    last_seq: i64,
    /// Entries this member submitted itself, already applied locally.
    own: HashSet<i64>,
}

/// A staged commit, held by the group as its pending commit until it is
/// merged ([`Member::merge`]) or discarded ([`Member::discard`]).
struct Prepared {
    commit: Bytes,
    /// For the epoch the commit creates, signed by the committer.
    group_info: Bytes,
}

impl Member {
    fn new(app: &TestApp, user: &LocalIdentity, name: &str) -> Self {
        Self {
            mls: mls::Device::new(&user.did, name),
            client: app.client(user),
            logs: HashMap::new(),
            messages_sent: Cell::new(0),
        }
    }

    async fn publish_key_package(&self) {
        let input = publish_key_packages::Input {
            key_packages: vec![self.mls.key_package()],
        };
        self.client.publish_key_packages(&input).await.unwrap();
    }

    /// Creates a group with this member alone and registers it.
    async fn create_convo(&mut self) -> String {
        let group = MlsGroup::new(
            &self.mls.provider,
            &self.mls.signer,
            &create_config(),
            self.mls.credential.clone(),
        )
        .unwrap();
        let convo = to_hex(group.group_id().as_slice());
        let input = create_convo::Input {
            group_id: convo.clone(),
            cipher_suite: CipherSuite::Mls128Dhkemx25519Aes128gcmSha256Ed25519,
            group_info: self.exported_group_info(&group),
            metadata: Some(ConvoMetadata {
                name: Some("bad input".to_owned()),
                description: None,
            }),
            idempotency_key: None,
        };
        self.client.create_convo(&input).await.unwrap();
        self.logs.insert(convo.clone(), Log::default());
        convo
    }

    /// Adds `did`'s device that has a KeyPackage, with addMembers.
    async fn add(&mut self, convo: &str, did: &Did) {
        let offered = self
            .client
            .get_key_packages(&get_key_packages::Params {
                dids: vec![did.clone()],
                cipher_suite: SUITE_NAME.to_owned(),
                convo_id: Some(convo.to_owned()),
            })
            .await
            .unwrap();
        let key_packages: Vec<KeyPackage> = offered
            .key_packages
            .iter()
            .map(|offer| {
                let MlsMessageBodyIn::KeyPackage(key_package) = read_body(&offer.key_package.0)
                else {
                    panic!("getKeyPackages returned something else than a KeyPackage");
                };
                key_package
                    .validate(self.mls.provider.crypto(), ProtocolVersion::Mls10)
                    .unwrap()
            })
            .collect();
        assert!(!key_packages.is_empty(), "{did:?} has a KeyPackage");

        let mut group = self.group(convo);
        let bundle = group
            .commit_builder()
            .propose_adds(key_packages)
            .load_psks(self.mls.provider.storage())
            .unwrap()
            .build(
                self.mls.provider.rand(),
                self.mls.provider.crypto(),
                &self.mls.signer,
                |_| true,
            )
            .unwrap()
            .stage_commit(&self.mls.provider)
            .unwrap();
        let (commit, welcome, group_info) = bundle.into_messages();
        let input = add_members::Input {
            convo_id: convo.to_owned(),
            commit: to_bytes(&commit),
            welcome: to_bytes(&welcome.expect("a Welcome for the added device")),
            group_info: to_bytes(&group_info.expect("a GroupInfo for the new epoch")),
            idempotency_key: None,
        };
        let added = self.client.add_members(&input).await.unwrap();
        self.merge(convo, added.seq);
    }

    /// Joins from this device's Welcome and confirms it.
    async fn join(&mut self, convo: &str) {
        let device_id = self.mls.id.clone();
        let fetched = self
            .client
            .get_welcome(&get_welcome::Params {
                convo_id: convo.to_owned(),
                device_id: device_id.clone(),
            })
            .await
            .unwrap();
        let MlsMessageBodyIn::Welcome(welcome) = read_body(&fetched.welcome.0) else {
            panic!("getWelcome returned something else than a Welcome");
        };
        StagedWelcome::build_from_welcome(&self.mls.provider, &join_config(), welcome)
            .unwrap()
            .skip_lifetime_validation()
            .build()
            .unwrap()
            .into_group(&self.mls.provider)
            .unwrap();
        let confirmation = confirm_welcome::Input {
            convo_id: convo.to_owned(),
            device_id,
            success: true,
            error_details: None,
        };
        self.client.confirm_welcome(&confirmation).await.unwrap();
        self.logs.insert(
            convo.to_owned(),
            Log {
                last_seq: fetched.commit_seq,
                own: HashSet::new(),
            },
        );
    }

    fn group(&self, convo: &str) -> MlsGroup {
        let group_id = GroupId::from_slice(&from_hex(convo).unwrap());
        MlsGroup::load(self.mls.provider.storage(), &group_id)
            .unwrap()
            .unwrap_or_else(|| panic!("{} is not in {convo}", self.mls.id))
    }

    fn epoch(&self, convo: &str) -> u64 {
        self.group(convo).epoch().as_u64()
    }

    /// The signed GroupInfo of the current epoch, with the ratchet tree.
    fn group_info(&self, convo: &str) -> Vec<u8> {
        self.exported_group_info(&self.group(convo)).0
    }

    fn exported_group_info(&self, group: &MlsGroup) -> Bytes {
        let group_info = group
            .export_group_info(self.mls.provider.crypto(), &self.mls.signer, true)
            .unwrap();
        to_bytes(&group_info)
    }

    /// Stages a self-update (with any pending proposals), not submitted.
    fn prepare_self_update(&self, convo: &str) -> Prepared {
        self.prepare_self_update_with(convo, true)
    }

    /// Stages a self-update whose GroupInfo carries the ratchet tree or not.
    fn prepare_self_update_with(&self, convo: &str, ratchet_tree: bool) -> Prepared {
        let mut group = self.group(convo);
        let bundle = group
            .commit_builder()
            .force_self_update(true)
            .load_psks(self.mls.provider.storage())
            .unwrap()
            .use_ratchet_tree_extension(ratchet_tree)
            .build(
                self.mls.provider.rand(),
                self.mls.provider.crypto(),
                &self.mls.signer,
                |_| true,
            )
            .unwrap()
            .stage_commit(&self.mls.provider)
            .unwrap();
        prepared(bundle.into_messages())
    }

    /// Stages a self-update whose new leaf has a fresh signature key and
    /// the credential `identity` (the commit is signed with the old key, as
    /// members verify it against the old leaf), not submitted. Returns the
    /// new key too: once the commit is merged, the member signs with it.
    fn prepare_key_rotation(&self, convo: &str, identity: &str) -> (Prepared, SignatureKeyPair) {
        let signer = SignatureKeyPair::new(SUITE.signature_algorithm()).unwrap();
        let new_signer = NewSignerBundle {
            signer: &signer,
            credential_with_key: CredentialWithKey {
                credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
                signature_key: signer.public().into(),
            },
        };
        let mut group = self.group(convo);
        let bundle = group
            .commit_builder()
            .force_self_update(true)
            .load_psks(self.mls.provider.storage())
            .unwrap()
            .build_with_new_signer(
                self.mls.provider.rand(),
                self.mls.provider.crypto(),
                &self.mls.signer,
                new_signer,
                |_| true,
            )
            .unwrap()
            .stage_commit(&self.mls.provider)
            .unwrap();
        (prepared(bundle.into_messages()), signer)
    }

    async fn submit(
        &self,
        convo: &str,
        prepared: &Prepared,
    ) -> Result<commit_group_change::Output, ClientError<commit_group_change::Error>> {
        self.submit_raw(
            convo,
            prepared.commit.0.clone(),
            prepared.group_info.0.clone(),
        )
        .await
    }

    /// commitGroupChange with whatever bytes the test chose.
    async fn submit_raw(
        &self,
        convo: &str,
        commit: Vec<u8>,
        group_info: Vec<u8>,
    ) -> Result<commit_group_change::Output, ClientError<commit_group_change::Error>> {
        let input = commit_group_change::Input {
            convo_id: convo.to_owned(),
            commit: Bytes(commit),
            group_info: Bytes(group_info),
            idempotency_key: None,
        };
        self.client.commit_group_change(&input).await
    }

    /// Submits the pending commit, which must be accepted, and merges it.
    async fn submit_and_merge(&mut self, convo: &str, prepared: &Prepared) -> u64 {
        let accepted = self.submit(convo, prepared).await.unwrap();
        self.merge(convo, accepted.seq);
        assert_eq!(accepted.epoch, self.epoch(convo) as i64);
        self.epoch(convo)
    }

    /// A self-update, prepared, submitted and merged. Returns the new epoch.
    async fn self_update(&mut self, convo: &str) -> u64 {
        let prepared = self.prepare_self_update(convo);
        self.submit_and_merge(convo, &prepared).await
    }

    /// Applies the pending commit, which the service accepted at `seq`.
    fn merge(&mut self, convo: &str, seq: i64) {
        self.group(convo)
            .merge_pending_commit(&self.mls.provider)
            .unwrap();
        self.logs
            .entry(convo.to_owned())
            .or_default()
            .own
            .insert(seq);
    }

    /// Drops the pending commit, which the service rejected.
    fn discard(&self, convo: &str) {
        self.group(convo)
            .clear_pending_commit(self.mls.provider.storage())
            .unwrap();
    }

    /// sendMessage's input for `text`, encrypted in the current epoch.
    fn encrypt(&self, convo: &str, text: &str) -> send_message::Input {
        let mut group = self.group(convo);
        let ciphertext = group
            .create_message(&self.mls.provider, &self.mls.signer, text.as_bytes())
            .unwrap();
        let sent = self.messages_sent.get() + 1;
        self.messages_sent.set(sent);
        send_message::Input {
            convo_id: convo.to_owned(),
            msg_id: format!("{}-{sent}", self.mls.id),
            ciphertext: to_bytes(&ciphertext),
            epoch: group.epoch().as_u64() as i64,
            padded_size: None,
            idempotency_key: None,
        }
    }

    async fn send(&mut self, convo: &str, text: &str) -> i64 {
        let input = self.encrypt(convo, text);
        let seq = self.client.send_message(&input).await.unwrap().seq;
        self.logs
            .entry(convo.to_owned())
            .or_default()
            .own
            .insert(seq);
        seq
    }

    /// Reads the log from where this member stopped and applies it.
    /// Returns the plaintexts of the other members' messages, in order.
    async fn sync(&mut self, convo: &str) -> Vec<String> {
        let mut group = self.group(convo);
        let mut texts = Vec::new();
        let log = self.logs.entry(convo.to_owned()).or_default();
        loop {
            let since = log.last_seq;
            let page = self
                .client
                .get_messages(&get_messages::Params {
                    convo_id: convo.to_owned(),
                    since_seq: since,
                    limit: 100,
                })
                .await
                .unwrap();
            for entry in page.messages {
                log.last_seq = entry.seq;
                if log.own.remove(&entry.seq) {
                    continue;
                }
                let message = MlsMessageIn::tls_deserialize_exact(&entry.payload.0)
                    .unwrap()
                    .try_into_protocol_message()
                    .unwrap();
                let processed = group
                    .process_message(&self.mls.provider, message)
                    .unwrap_or_else(|e| {
                        panic!("{} processing seq {}: {e}", self.mls.id, entry.seq)
                    });
                match processed.into_content() {
                    ProcessedMessageContent::ApplicationMessage(message) => {
                        texts.push(String::from_utf8(message.into_bytes()).unwrap());
                    }
                    ProcessedMessageContent::StagedCommitMessage(commit) => group
                        .merge_staged_commit(&self.mls.provider, *commit)
                        .unwrap(),
                    ProcessedMessageContent::ProposalMessage(proposal) => group
                        .store_pending_proposal(self.mls.provider.storage(), *proposal)
                        .unwrap(),
                    _ => panic!("{}: unexpected log entry {}", self.mls.id, entry.seq),
                }
            }
            if page.last_seq == since {
                return texts;
            }
            log.last_seq = page.last_seq;
        }
    }
}

/// A staged commit's messages; a member commit always comes with a
/// GroupInfo, as the groups use the ratchet tree extension.
fn prepared(
    (commit, _, group_info): (MlsMessageOut, Option<MlsMessageOut>, Option<MlsMessageOut>),
) -> Prepared {
    Prepared {
        commit: to_bytes(&commit),
        group_info: to_bytes(&group_info.expect("a GroupInfo for the new epoch")),
    }
}

/// The demo's group settings: plaintext handshakes (the service validates
/// them), the ratchet tree in GroupInfo and Welcome.
fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(SUITE)
        .capabilities(mls::capabilities())
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

fn to_bytes(message: &MlsMessageOut) -> Bytes {
    Bytes(message.tls_serialize_detached().unwrap())
}

fn read_body(bytes: &[u8]) -> MlsMessageBodyIn {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .extract()
}
