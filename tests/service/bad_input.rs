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
//! Covered, for commitGroupChange: garbage and non-commit MLS messages as a
//! commit, a tampered commit, a commit of another group, a self-update that
//! changes the leaf's DID (400 InvalidCommit); garbage as GroupInfo, a
//! GroupInfo without the ratchet tree, of the previous epoch, of another
//! group, of another commit, or signed by a member other than the committer
//! (400 InvalidGroupInfo); a stale commit (409 EpochMismatch). For
//! sendMessage: garbage, handshakes or KeyPackages as the ciphertext, a
//! ciphertext longer than paddedSize, a PrivateMessage of another group, or
//! an epoch field that is not the ciphertext's (400 InvalidCiphertext); a
//! message of a past epoch (409 EpochMismatch).
//!
//! The members are driven with OpenMLS directly ([`Member`]), because the
//! demo's `Device` cannot prepare a commit without submitting it.

use std::fmt::Debug;

use crate::common::member::{Member, Prepared};
use crate::common::mls;
use crate::common::{TestApp, read_log};
use catbird_generated::lexicons::blue::catbird::mls::defs::{ConvoView, MessageView};
use catbird_generated::lexicons::blue::catbird::mls::{
    commit_group_change, get_convos, get_epoch, get_group_info, send_message,
};
use catbird_generated::runtime::xrpc::ClientError;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::{Bytes, DeclaredError};
use catbird_mls_client::LocalIdentity;
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
        ("a KeyPackage", mls::key_package(f.bob.mls()).0),
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
        f.assert_refused(
            result,
            commit_group_change::Error::InvalidCommit,
            StatusCode::BAD_REQUEST,
            what,
            &before,
        )
        .await;
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
    f.alice.discard(&f.convo);
    f.assert_refused(
        result,
        commit_group_change::Error::InvalidGroupInfo,
        StatusCode::BAD_REQUEST,
        "a GroupInfo without the ratchet tree",
        &before,
    )
    .await;

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
        f.assert_refused(
            result,
            commit_group_change::Error::InvalidGroupInfo,
            StatusCode::BAD_REQUEST,
            what,
            &before,
        )
        .await;
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
        f.assert_refused(
            result,
            commit_group_change::Error::InvalidCommit,
            StatusCode::BAD_REQUEST,
            what,
            &before,
        )
        .await;
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
    f.assert_refused(
        result,
        commit_group_change::Error::InvalidCommit,
        StatusCode::BAD_REQUEST,
        "a commit of another conversation",
        &before,
    )
    .await;

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
        f.alice.discard(&f.convo);
        f.assert_refused(
            result,
            commit_group_change::Error::InvalidCommit,
            StatusCode::BAD_REQUEST,
            &format!("a self-update to {identity}"),
            &before,
        )
        .await;
    }

    // The control: the same kind of commit (a new signature key and
    // credential) that keeps alice's DID is accepted, so the DID was the
    // reason.
    let own = f.alice.id().to_owned();
    let (prepared, signer) = f.alice.prepare_key_rotation(&f.convo, &own);
    f.alice.submit_and_merge(&f.convo, &prepared).await;
    f.alice.device.installation_mut().rotate_key(&own, signer);
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
    // Bob applies alice's commit ahead of the service and signs the new
    // epoch's GroupInfo himself: the right state, but not the committer's.
    let signed_by_bob = f.bob.apply_ahead(&f.convo, &prepared.commit);
    let mismatches = [
        ("the GroupInfo of the previous epoch", previous_epoch),
        ("the GroupInfo of another conversation", other_group),
        (
            "the GroupInfo of another commit of this epoch",
            competing.group_info.0,
        ),
        ("the GroupInfo signed by another member", signed_by_bob),
    ];
    for (what, group_info) in mismatches {
        let result = f
            .alice
            .submit_raw(&f.convo, prepared.commit.0.clone(), group_info)
            .await;
        f.assert_refused(
            result,
            commit_group_change::Error::InvalidGroupInfo,
            StatusCode::BAD_REQUEST,
            what,
            &before,
        )
        .await;
    }

    // The commit with its correct GroupInfo: accepted, and that GroupInfo
    // is what getGroupInfo serves now.
    let accepted = f.alice.submit(&f.convo, &prepared).await.unwrap();
    f.alice.merge(&f.convo, accepted.seq);
    f.bob.applied(&f.convo, accepted.seq);
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
    f.assert_refused(
        result,
        commit_group_change::Error::EpochMismatch,
        StatusCode::CONFLICT,
        "a commit for epoch 1 at epoch 2",
        &before,
    )
    .await;

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
    f.assert_refused(
        result,
        send_message::Error::InvalidCiphertext,
        StatusCode::BAD_REQUEST,
        "a PrivateMessage of another group",
        &before,
    )
    .await;
    f.assert_still_works().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn anything_but_an_application_message_is_invalid_ciphertext(pool: PgPool) {
    let mut f = Fixture::new(pool).await;
    let before = f.snapshot().await;
    let commit = f.alice.prepare_self_update(&f.convo);
    f.alice.discard(&f.convo);
    let message = f.alice.encrypt(&f.convo, "a real message");
    let not_messages = [
        (
            "random bytes",
            b"\x00\x01garbage, not an MLSMessage".to_vec(),
        ),
        ("a commit", commit.commit.0),
        ("a GroupInfo", commit.group_info.0),
        ("a KeyPackage", mls::key_package(f.bob.mls()).0),
    ];
    for (what, ciphertext) in not_messages {
        let input = send_message::Input {
            ciphertext: Bytes(ciphertext),
            ..message.clone()
        };
        let result = f.alice.client.send_message(&input).await;
        f.assert_refused(
            result,
            send_message::Error::InvalidCiphertext,
            StatusCode::BAD_REQUEST,
            what,
            &before,
        )
        .await;
    }

    // A real message that is longer than the paddedSize it claims.
    let too_long = send_message::Input {
        padded_size: Some(message.ciphertext.0.len() as i64 - 1),
        ..message.clone()
    };
    let result = f.alice.client.send_message(&too_long).await;
    f.assert_refused(
        result,
        send_message::Error::InvalidCiphertext,
        StatusCode::BAD_REQUEST,
        "a ciphertext longer than paddedSize",
        &before,
    )
    .await;

    // The same message, under the same msgId, honestly sized: accepted.
    let seq = f.alice.client.send_message(&message).await.unwrap().seq;
    f.alice.applied(&f.convo, seq);
    assert_eq!(f.bob.sync(&f.convo).await, ["a real message"]);
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
    f.assert_refused(
        result,
        send_message::Error::EpochMismatch,
        StatusCode::CONFLICT,
        "a message of epoch 1 at epoch 2",
        &before,
    )
    .await;

    // The current epoch in the field, but the ciphertext says epoch 1.
    let relabelled = send_message::Input { epoch: 2, ..old };
    let result = f.alice.client.send_message(&relabelled).await;
    f.assert_refused(
        result,
        send_message::Error::InvalidCiphertext,
        StatusCode::BAD_REQUEST,
        "epoch 2 claimed for a PrivateMessage of epoch 1",
        &before,
    )
    .await;

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

    /// Asserts that `result` is the declared error `expected` with
    /// `status`, and that the conversation is as it was (`before`).
    async fn assert_refused<T: Debug, E: DeclaredError + PartialEq + Debug>(
        &self,
        result: Result<T, ClientError<E>>,
        expected: E,
        status: StatusCode,
        what: &str,
        before: &Snapshot,
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
        assert_eq!(&self.snapshot().await, before, "after {what}");
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
