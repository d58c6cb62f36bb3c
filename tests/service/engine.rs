//! The engine against real OpenMLS clients: devices with their own keys that
//! create groups, add members, send messages and rejoin, as apps would.

use catbird_generated::lexicons::blue::catbird::mls::defs::CipherSuite;
use catbird_generated::runtime::Did;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Ciphersuite, CredentialWithKey, GroupId, KeyPackage, LeafNodeIndex,
    LeafNodeParameters, MlsGroup, MlsMessageIn, MlsMessageOut, OpenMlsCrypto as _,
    OpenMlsProvider as _, ProcessedMessageContent,
};
use openmls_rust_crypto::OpenMlsRustCrypto;
use sha2::{Digest as _, Sha256};

use catbird_mls_client::{Installation, StagedMessages, staged_messages};
use catbird_mls_core::groups::engine::*;

/// An accepted commit with the stored state after it and every member.
#[derive(Debug)]
struct Committed {
    outcome: CommitOutcome,
    state: StoredState,
    members: Vec<Member>,
}

impl std::ops::Deref for Committed {
    type Target = CommitOutcome;
    fn deref(&self) -> &CommitOutcome {
        &self.outcome
    }
}

/// The engine's commit as a function of the stored state, as the service
/// runs it without a parsed group at hand; it also checks that the write it
/// returns makes exactly the merged group's state, and that the leaves it
/// reports as changed are the whole difference in membership.
fn apply_commit(
    state: &StoredState,
    group_id: &[u8],
    commit: &[u8],
    group_info: &[u8],
    caller: &Did,
) -> Result<Committed, EngineError> {
    let mut group = LoadedGroup::load(state, group_id)?;
    let outcome =
        catbird_mls_core::groups::engine::apply_commit(&mut group, commit, group_info, caller)?;
    let after = outcome.state.applied_to(state);
    assert_eq!(after, group.snapshot().expect("a snapshot"));
    let after_merge = group.members()?;
    let mut expected = devices(&members(state, group_id)?);
    expected.retain(|leaf| !devices(&outcome.left).contains(leaf));
    expected.extend(devices(&outcome.joined));
    expected.sort();
    assert_eq!(
        expected,
        devices(&after_merge),
        "left and joined are the difference"
    );
    Ok(Committed {
        outcome,
        state: after,
        members: after_merge,
    })
}

/// A queued leave proposal with the stored state after it.
#[derive(Debug)]
struct Queued {
    outcome: ProposalOutcome,
    state: StoredState,
}

impl std::ops::Deref for Queued {
    type Target = ProposalOutcome;
    fn deref(&self) -> &ProposalOutcome {
        &self.outcome
    }
}

fn apply_self_remove_proposal(
    state: &StoredState,
    group_id: &[u8],
    proposal: &[u8],
    caller: &Did,
) -> Result<Queued, EngineError> {
    let mut group = LoadedGroup::load(state, group_id)?;
    let outcome =
        catbird_mls_core::groups::engine::apply_self_remove_proposal(&mut group, proposal, caller)?;
    let after = outcome.state.applied_to(state);
    assert_eq!(after, group.snapshot().expect("a snapshot"));
    Ok(Queued {
        outcome,
        state: after,
    })
}

/// A stored state with this head and no node rows.
fn head_only(head: &[u8]) -> StoredState {
    StoredState {
        head: head.to_vec(),
        nodes: Vec::new(),
    }
}

/// The header check against the stored group's epoch, as the service does
/// it with the epoch from its conversation row.
fn check_application_message(
    state: &StoredState,
    group_id: &[u8],
    message: &[u8],
) -> Result<u64, EngineError> {
    let current = epoch(state, group_id)?;
    check_application_header(group_id, current, message)?;
    Ok(current)
}

const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
const GROUP: &[u8] = b"engine test group";
const OTHER_GROUP: &[u8] = b"another group";

fn suite() -> CipherSuite {
    CipherSuite::Mls128Dhkemx25519Aes128gcmSha256Ed25519
}

fn did(name: &str) -> Did {
    Did::new(format!("did:plc:{name}")).expect("a valid DID")
}

/// One installation of an app (the client SDK's), remembering its raw
/// signature key so that a test can give it to another installation.
struct Client {
    mls: Installation,
    raw_key: (Vec<u8>, Vec<u8>),
}

impl Client {
    fn new(identity: &str) -> Self {
        let raw_key = OpenMlsRustCrypto::default()
            .crypto()
            .signature_key_gen(SUITE.signature_algorithm())
            .expect("a signature key");
        Self::with_key(identity, raw_key)
    }

    fn with_key(identity: &str, raw_key: (Vec<u8>, Vec<u8>)) -> Self {
        let (private, public) = raw_key.clone();
        Self {
            mls: Installation::with_key(identity, SUITE, private, public),
            raw_key,
        }
    }

    /// Another installation with this one's signature key (restored from a
    /// backup) but no group state, under `identity`.
    fn sharing_key(&self, identity: &str) -> Self {
        Self::with_key(identity, self.raw_key.clone())
    }

    fn key_package(&self) -> KeyPackage {
        self.mls.key_package(false).expect("a KeyPackage")
    }

    fn create_group(&self, group_id: &[u8]) -> MlsGroup {
        self.mls
            .create_group(&GroupId::from_slice(group_id))
            .expect("a new group")
    }

    fn group_info(&self, group: &MlsGroup, with_tree: bool) -> Vec<u8> {
        bytes(&self.mls.group_info(group, with_tree).expect("a GroupInfo"))
    }

    fn commit_adding(&self, group: &mut MlsGroup, key_packages: Vec<KeyPackage>) -> Commit {
        let staged = self
            .mls
            .stage_commit(group, |builder| builder.propose_adds(key_packages));
        Commit::from(staged.expect("a staged commit"))
    }

    fn self_update(&self, group: &mut MlsGroup, parameters: LeafNodeParameters) -> Commit {
        let bundle = group
            .self_update(self.mls.provider(), self.mls.signer(), parameters)
            .expect("a self-update");
        Commit::from(staged_messages(bundle).expect("the commit's messages"))
    }

    /// A commit of whatever proposals the group has queued.
    fn commit_pending(&self, group: &mut MlsGroup) -> Commit {
        let staged = self.mls.stage_commit(group, |builder| builder);
        Commit::from(staged.expect("a staged commit"))
    }

    fn merge(&self, group: &mut MlsGroup) {
        self.mls
            .merge_pending(group)
            .expect("merging the accepted commit");
    }

    fn join(&self, welcome: &[u8]) -> MlsGroup {
        self.mls.join(welcome).expect("a group from the Welcome")
    }

    fn join_externally(&self, group_info: &[u8]) -> (MlsGroup, Commit) {
        let (group, bundle) = self
            .mls
            .join_externally(group_info)
            .expect("an external commit");
        let commit = staged_messages(bundle).expect("the external commit's messages");
        (group, Commit::from(commit))
    }

    fn process(&self, group: &mut MlsGroup, message: &[u8]) -> ProcessedMessageContent {
        let message = parse(message)
            .try_into_protocol_message()
            .expect("a protocol message");
        group
            .process_message(self.mls.provider(), message)
            .expect("processing a message")
            .into_content()
    }

    fn send(&self, group: &mut MlsGroup, text: &[u8]) -> Vec<u8> {
        self.mls
            .encrypt(group, text)
            .expect("an application message")
            .0
    }
}

/// What a committer uploads.
struct Commit {
    commit: Vec<u8>,
    welcome: Option<Vec<u8>>,
    group_info: Vec<u8>,
}

impl From<StagedMessages> for Commit {
    fn from(staged: StagedMessages) -> Self {
        Self {
            commit: staged.commit.0,
            welcome: staged.welcome.map(|welcome| welcome.0),
            group_info: staged.group_info.0,
        }
    }
}

fn bytes(message: &MlsMessageOut) -> Vec<u8> {
    message
        .tls_serialize_detached()
        .expect("serializing an MLSMessage")
}

fn parse(message: &[u8]) -> MlsMessageIn {
    MlsMessageIn::tls_deserialize_exact(message).expect("an MLSMessage")
}

fn flipped(message: &[u8], index_from_end: usize) -> Vec<u8> {
    let mut message = message.to_vec();
    let index = message.len() - index_from_end;
    message[index] ^= 0x01;
    message
}

/// Alice's new group, registered with the service.
struct Created {
    alice: Client,
    alice_group: MlsGroup,
    state: StoredState,
}

fn created(group_id: &[u8]) -> Created {
    let alice = Client::new("did:plc:alice#phone");
    let alice_group = alice.create_group(group_id);
    let group_info = alice.group_info(&alice_group, true);
    let state = bootstrap(group_id, &suite(), &group_info, &did("alice"))
        .expect("bootstrap")
        .state;
    Created {
        alice,
        alice_group,
        state,
    }
}

/// Alice and Bob in GROUP at epoch 1, as the service and both clients see it.
struct TwoMembers {
    alice: Client,
    bob: Client,
    alice_group: MlsGroup,
    bob_group: MlsGroup,
    state: StoredState,
    /// The GroupInfo stored with the add commit (epoch 1).
    group_info: Vec<u8>,
}

fn two_members() -> TwoMembers {
    let Created {
        alice,
        mut alice_group,
        state,
    } = created(GROUP);
    let bob = Client::new("did:plc:bob#phone");
    let add = alice.commit_adding(&mut alice_group, vec![bob.key_package()]);
    let outcome = apply_commit(&state, GROUP, &add.commit, &add.group_info, &did("alice"))
        .expect("adding Bob");
    alice.merge(&mut alice_group);
    let bob_group = bob.join(add.welcome.as_deref().expect("a Welcome"));
    TwoMembers {
        alice,
        bob,
        alice_group,
        bob_group,
        state: outcome.state,
        group_info: add.group_info,
    }
}

fn devices(members: &[Member]) -> Vec<(u32, String)> {
    members
        .iter()
        .map(|member| (member.leaf_index, member.device.to_string()))
        .collect()
}

#[track_caller]
fn assert_invalid_commit<T: std::fmt::Debug>(result: Result<T, EngineError>, needle: &str) {
    match result {
        Err(EngineError::InvalidCommit(why)) => {
            assert!(why.contains(needle), "unexpected reason: {why}")
        }
        other => panic!("expected InvalidCommit ({needle}), got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid_group_info<T: std::fmt::Debug>(result: Result<T, EngineError>, needle: &str) {
    match result {
        Err(EngineError::InvalidGroupInfo(why)) => {
            assert!(why.contains(needle), "unexpected reason: {why}")
        }
        other => panic!("expected InvalidGroupInfo ({needle}), got {other:?}"),
    }
}

#[test]
fn bootstrap_builds_the_state_from_the_creators_group_info() {
    let alice = Client::new("did:plc:alice#phone");
    let group = alice.create_group(GROUP);
    let group_info = alice.group_info(&group, true);

    let created = bootstrap(GROUP, &suite(), &group_info, &did("alice")).expect("bootstrap");

    assert_eq!(created.epoch, 0);
    assert_eq!(
        devices(&created.members),
        [(0, "did:plc:alice#phone".into())]
    );
    assert_eq!(members(&created.state, GROUP), Ok(created.members.clone()));
    assert_eq!(epoch(&created.state, GROUP), Ok(0));
}

#[test]
fn bootstrap_rejects_a_group_info_that_does_not_fit() {
    let alice = Client::new("did:plc:alice#phone");
    let mut group = alice.create_group(GROUP);
    let group_info = alice.group_info(&group, true);
    let alice_did = did("alice");

    assert_invalid_group_info(
        bootstrap(OTHER_GROUP, &suite(), &group_info, &alice_did),
        "is for group",
    );
    assert_invalid_group_info(
        bootstrap(
            GROUP,
            &CipherSuite::Mls128Dhkemp256Aes128gcmSha256P256,
            &group_info,
            &alice_did,
        ),
        "cipher suite",
    );
    assert_invalid_group_info(
        bootstrap(GROUP, &suite(), &group_info, &did("mallory")),
        "not a device of the caller",
    );
    assert_invalid_group_info(
        bootstrap(
            GROUP,
            &suite(),
            &alice.group_info(&group, false),
            &alice_did,
        ),
        "ratchet_tree",
    );
    assert_invalid_group_info(
        bootstrap(GROUP, &suite(), &flipped(&group_info, 1), &alice_did),
        "does not verify",
    );
    assert_invalid_group_info(
        bootstrap(GROUP, &suite(), b"not an MLSMessage", &alice_did),
        "not an MLSMessage",
    );
    let key_package = bytes(&MlsMessageOut::from(alice.key_package()));
    assert_invalid_group_info(
        bootstrap(GROUP, &suite(), &key_package, &alice_did),
        "not a GroupInfo",
    );

    // A group that already moved past epoch 0.
    let bob = Client::new("did:plc:bob#phone");
    alice.commit_adding(&mut group, vec![bob.key_package()]);
    alice.merge(&mut group);
    assert_invalid_group_info(
        bootstrap(GROUP, &suite(), &alice.group_info(&group, true), &alice_did),
        "epoch 1",
    );

    // A creator whose credential is not a `did#device`.
    let nameless = Client::new("alice");
    let group = nameless.create_group(GROUP);
    assert_invalid_group_info(
        bootstrap(
            GROUP,
            &suite(),
            &nameless.group_info(&group, true),
            &alice_did,
        ),
        "did#device",
    );
}

#[test]
fn adding_a_member_reports_its_key_package_and_routes_the_welcome() {
    let Created {
        alice,
        mut alice_group,
        state,
    } = created(GROUP);
    let bob = Client::new("did:plc:bob#phone");
    let key_package = bob.key_package();
    let reference = key_package
        .hash_ref(alice.mls.provider().crypto())
        .expect("a KeyPackageRef")
        .as_slice()
        .to_vec();
    let add = alice.commit_adding(&mut alice_group, vec![key_package]);

    let outcome = apply_commit(&state, GROUP, &add.commit, &add.group_info, &did("alice"))
        .expect("the add commit");

    assert_eq!(outcome.epoch, 1);
    assert_eq!(outcome.committer.to_string(), "did:plc:alice#phone");
    assert!(!outcome.external);
    assert_eq!(
        outcome.proposals,
        [CommittedProposal {
            kind: ProposalKind::Add,
            by_reference: false
        }]
    );
    assert_eq!(outcome.added.len(), 1);
    assert_eq!(outcome.added[0].leaf_index, 1);
    assert_eq!(outcome.added[0].device.to_string(), "did:plc:bob#phone");
    assert_eq!(outcome.added[0].key_package_ref, reference);
    assert!(outcome.removed.is_empty());
    assert_eq!(
        devices(&outcome.members),
        [
            (0, "did:plc:alice#phone".into()),
            (1, "did:plc:bob#phone".into())
        ]
    );
    assert_eq!(outcome.commit_hash, Sha256::digest(&add.commit).to_vec());
    assert_eq!(epoch(&outcome.state, GROUP), Ok(1));

    let welcome = add.welcome.expect("a Welcome");
    assert_eq!(welcome_recipients(&welcome, &suite()), Ok(vec![reference]));
    assert!(matches!(
        welcome_recipients(&welcome, &CipherSuite::Mls128Dhkemp256Aes128gcmSha256P256),
        Err(EngineError::InvalidWelcome(_))
    ));
    assert!(matches!(
        welcome_recipients(&add.commit, &suite()),
        Err(EngineError::InvalidWelcome(_))
    ));

    // Bob can join from what the service would hand him.
    alice.merge(&mut alice_group);
    let bob_group = bob.join(&welcome);
    assert_eq!(bob_group.epoch().as_u64(), 1);
}

#[test]
fn application_messages_must_be_current_and_encrypted() {
    let TwoMembers {
        alice,
        bob,
        mut alice_group,
        mut bob_group,
        state,
        ..
    } = two_members();

    let from_alice = alice.send(&mut alice_group, b"hello Bob");
    assert_eq!(check_application_message(&state, GROUP, &from_alice), Ok(1));
    let ProcessedMessageContent::ApplicationMessage(text) =
        bob.process(&mut bob_group, &from_alice)
    else {
        panic!("Bob did not get an application message");
    };
    assert_eq!(text.into_bytes(), b"hello Bob");

    let from_bob = bob.send(&mut bob_group, b"hello Alice");
    assert_eq!(check_application_message(&state, GROUP, &from_bob), Ok(1));
    assert!(matches!(
        alice.process(&mut alice_group, &from_bob),
        ProcessedMessageContent::ApplicationMessage(_)
    ));

    let other = created(OTHER_GROUP);
    assert_eq!(
        check_application_message(&other.state, OTHER_GROUP, &from_alice),
        Err(EngineError::WrongGroup)
    );
    // The same checks against an epoch the caller holds, without the state.
    assert_eq!(check_application_header(GROUP, 1, &from_bob), Ok(()));
    assert_eq!(
        check_application_header(OTHER_GROUP, 1, &from_bob),
        Err(EngineError::WrongGroup)
    );
    assert_eq!(
        check_application_header(GROUP, 2, &from_bob),
        Err(EngineError::EpochMismatch { current: 2, got: 1 })
    );

    let update = alice.self_update(&mut alice_group, LeafNodeParameters::default());
    let advanced = apply_commit(
        &state,
        GROUP,
        &update.commit,
        &update.group_info,
        &did("alice"),
    )
    .expect("a self-update");
    assert_eq!(
        check_application_message(&advanced.state, GROUP, &from_bob),
        Err(EngineError::EpochMismatch { current: 2, got: 1 })
    );

    assert!(matches!(
        check_application_message(&state, GROUP, &update.commit),
        Err(EngineError::InvalidCiphertext(_))
    ));
    assert!(matches!(
        check_application_message(&state, GROUP, b"garbage"),
        Err(EngineError::InvalidCiphertext(_))
    ));
}

#[test]
fn a_stale_commit_gets_epoch_mismatch() {
    let TwoMembers {
        alice,
        bob,
        mut alice_group,
        mut bob_group,
        state,
        ..
    } = two_members();
    // Both update at epoch 1; Alice's commit reaches the service first.
    let alice_update = alice.self_update(&mut alice_group, LeafNodeParameters::default());
    let bob_update = bob.self_update(&mut bob_group, LeafNodeParameters::default());

    let first = apply_commit(
        &state,
        GROUP,
        &alice_update.commit,
        &alice_update.group_info,
        &did("alice"),
    )
    .expect("the first commit of epoch 1");
    assert_eq!(
        apply_commit(
            &first.state,
            GROUP,
            &bob_update.commit,
            &bob_update.group_info,
            &did("bob")
        )
        .map(|outcome| outcome.epoch),
        Err(EngineError::EpochMismatch { current: 2, got: 1 })
    );

    // The epoch-1 state was not touched by either call.
    let instead = apply_commit(
        &state,
        GROUP,
        &bob_update.commit,
        &bob_update.group_info,
        &did("bob"),
    )
    .expect("Bob's commit against epoch 1");
    assert_eq!(instead.committer.to_string(), "did:plc:bob#phone");
}

#[test]
fn malformed_and_tampered_commits_are_invalid() {
    let TwoMembers {
        alice,
        mut alice_group,
        state,
        ..
    } = two_members();
    let update = alice.self_update(&mut alice_group, LeafNodeParameters::default());
    let alice_did = did("alice");

    // The tail of a member's commit is: signature (2 + 64 bytes),
    // confirmation tag (1 + 32), membership tag (1 + 32).
    assert_invalid_commit(
        apply_commit(
            &state,
            GROUP,
            &flipped(&update.commit, 100),
            &update.group_info,
            &alice_did,
        ),
        "MLS validation",
    );
    assert_invalid_commit(
        apply_commit(&state, GROUP, b"garbage", &update.group_info, &alice_did),
        "not an MLSMessage",
    );
    assert_invalid_commit(
        apply_commit(
            &state,
            GROUP,
            &update.group_info,
            &update.group_info,
            &alice_did,
        ),
        "PublicMessage",
    );
    let message = alice.send(&mut alice_group, b"not a commit");
    assert_invalid_commit(
        apply_commit(&state, GROUP, &message, &update.group_info, &alice_did),
        "PublicMessage",
    );

    // The service cannot check the confirmation tag, but a commit whose tag
    // was changed no longer matches the committer's GroupInfo.
    assert_invalid_group_info(
        apply_commit(
            &state,
            GROUP,
            &flipped(&update.commit, 50),
            &update.group_info,
            &alice_did,
        ),
        "confirmation tag",
    );

    let accepted = apply_commit(
        &state,
        GROUP,
        &update.commit,
        &update.group_info,
        &alice_did,
    )
    .expect("the untampered commit");
    assert_eq!(accepted.epoch, 2);
}

#[test]
fn a_corrupted_membership_tag_is_invisible_to_the_service() {
    // Documented limitation (RFC 9750 section 5.3): the membership tag needs
    // the epoch's membership key. Members reject such a commit and recover
    // by external rejoin.
    let TwoMembers {
        alice,
        mut alice_group,
        state,
        ..
    } = two_members();
    let update = alice.self_update(&mut alice_group, LeafNodeParameters::default());
    let outcome = apply_commit(
        &state,
        GROUP,
        &flipped(&update.commit, 1),
        &update.group_info,
        &did("alice"),
    );
    assert!(outcome.is_ok(), "{outcome:?}");
}

#[test]
fn a_commit_for_another_group_is_wrong_group() {
    let TwoMembers { state, .. } = two_members();
    let Created {
        alice,
        mut alice_group,
        ..
    } = created(OTHER_GROUP);
    let update = alice.self_update(&mut alice_group, LeafNodeParameters::default());
    assert_eq!(
        apply_commit(
            &state,
            GROUP,
            &update.commit,
            &update.group_info,
            &did("alice")
        )
        .map(|outcome| outcome.epoch),
        Err(EngineError::WrongGroup)
    );
}

#[test]
fn a_self_update_may_not_change_the_did() {
    let TwoMembers {
        alice,
        mut alice_group,
        state,
        ..
    } = two_members();
    // Another user's device, and a credential that is no device at all.
    let refused: [(&[u8], &str); 2] = [
        (b"did:plc:mallory#phone", "may not change its DID"),
        (b"alice", "did#device"),
    ];
    for (identity, reason) in refused {
        let swapped = CredentialWithKey {
            credential: BasicCredential::new(identity.to_vec()).into(),
            signature_key: alice.mls.signer().public().into(),
        };
        let swap = alice.self_update(
            &mut alice_group,
            LeafNodeParameters::builder()
                .with_credential_with_key(swapped)
                .build(),
        );
        assert_invalid_commit(
            apply_commit(&state, GROUP, &swap.commit, &swap.group_info, &did("alice")),
            reason,
        );
        alice_group
            .clear_pending_commit(alice.mls.provider().storage())
            .expect("dropping the rejected commit");
    }
    let update = alice.self_update(&mut alice_group, LeafNodeParameters::default());
    apply_commit(
        &state,
        GROUP,
        &update.commit,
        &update.group_info,
        &did("alice"),
    )
    .expect("a plain self-update");
}

#[test]
fn the_committer_must_be_a_device_of_the_caller() {
    let TwoMembers {
        alice,
        mut alice_group,
        state,
        ..
    } = two_members();
    let update = alice.self_update(&mut alice_group, LeafNodeParameters::default());
    assert_invalid_commit(
        apply_commit(
            &state,
            GROUP,
            &update.commit,
            &update.group_info,
            &did("bob"),
        ),
        "not by a device of the caller did:plc:bob",
    );
    apply_commit(
        &state,
        GROUP,
        &update.commit,
        &update.group_info,
        &did("alice"),
    )
    .expect("the same commit from its author");
}

#[test]
fn the_group_info_must_match_the_merged_state() {
    let TwoMembers {
        alice,
        bob,
        mut alice_group,
        mut bob_group,
        state,
        group_info: previous_epoch,
    } = two_members();
    let update = alice.self_update(&mut alice_group, LeafNodeParameters::default());
    let alice_did = did("alice");
    let apply =
        |group_info: &[u8]| apply_commit(&state, GROUP, &update.commit, group_info, &alice_did);

    assert_invalid_group_info(apply(&previous_epoch), "is for epoch 1");
    let other = created(OTHER_GROUP);
    assert_invalid_group_info(
        apply(&other.alice.group_info(&other.alice_group, true)),
        "another group",
    );
    assert_invalid_group_info(apply(&flipped(&update.group_info, 1)), "signature");
    assert_invalid_group_info(apply(&update.commit), "not a GroupInfo");
    assert_invalid_group_info(apply(b"garbage"), "not an MLSMessage");

    // Bob's GroupInfo for the same new epoch is right in every field but the
    // signer: the service stores only the committer's.
    let ProcessedMessageContent::StagedCommitMessage(staged) =
        bob.process(&mut bob_group, &update.commit)
    else {
        panic!("Bob did not get a commit");
    };
    bob_group
        .merge_staged_commit(bob.mls.provider(), *staged)
        .expect("Bob merges");
    assert_invalid_group_info(
        apply(&bob.group_info(&bob_group, true)),
        "signed by leaf 1, not by the committer (leaf 0)",
    );

    alice.merge(&mut alice_group);
    assert_invalid_group_info(
        apply(&alice.group_info(&alice_group, false)),
        "ratchet_tree",
    );
    // Re-exported by the committer for the same epoch: equally valid.
    apply(&alice.group_info(&alice_group, true)).expect("a re-exported GroupInfo");
    apply(&update.group_info).expect("the commit's own GroupInfo");
}

#[test]
fn a_reinstalled_device_rejoins_and_replaces_its_old_leaf() {
    let TwoMembers {
        alice,
        bob,
        mut alice_group,
        state,
        group_info,
        ..
    } = two_members();
    // Same device, same signature key (restored), no group state: OpenMLS
    // removes the leaf with that key in the external commit itself.
    let reinstalled = bob.sharing_key("did:plc:bob#phone");
    let (mut bob_group, rejoin) = reinstalled.join_externally(&group_info);

    let outcome = apply_commit(
        &state,
        GROUP,
        &rejoin.commit,
        &rejoin.group_info,
        &did("bob"),
    )
    .expect("the rejoin");

    assert!(outcome.external);
    assert_eq!(outcome.epoch, 2);
    assert_eq!(outcome.committer.to_string(), "did:plc:bob#phone");
    assert_eq!(devices(&outcome.removed), [(1, "did:plc:bob#phone".into())]);
    assert!(outcome.added.is_empty());
    assert_eq!(
        outcome.proposals,
        [
            CommittedProposal {
                kind: ProposalKind::ExternalInit,
                by_reference: false
            },
            CommittedProposal {
                kind: ProposalKind::Remove,
                by_reference: false
            }
        ]
    );
    assert_eq!(
        devices(&outcome.members),
        [
            (0, "did:plc:alice#phone".into()),
            (1, "did:plc:bob#phone".into())
        ]
    );

    // Alice follows, and the two talk in the new epoch.
    assert!(matches!(
        alice.process(&mut alice_group, &rejoin.commit),
        ProcessedMessageContent::StagedCommitMessage(_)
    ));
    let hello = reinstalled.send(&mut bob_group, b"back");
    assert_eq!(
        check_application_message(&outcome.state, GROUP, &hello),
        Ok(2)
    );
}

#[test]
fn a_new_device_of_a_member_joins_externally() {
    let TwoMembers {
        state, group_info, ..
    } = two_members();
    let laptop = Client::new("did:plc:bob#laptop");
    let (_, join) = laptop.join_externally(&group_info);

    let outcome = apply_commit(&state, GROUP, &join.commit, &join.group_info, &did("bob"))
        .expect("the new device");

    assert!(outcome.external);
    assert_eq!(outcome.committer.to_string(), "did:plc:bob#laptop");
    assert!(outcome.removed.is_empty());
    assert_eq!(
        devices(&outcome.members),
        [
            (0, "did:plc:alice#phone".into()),
            (1, "did:plc:bob#phone".into()),
            (2, "did:plc:bob#laptop".into())
        ]
    );
}

#[test]
fn an_external_commit_must_add_a_device_of_the_caller() {
    let TwoMembers {
        state, group_info, ..
    } = two_members();
    let mallory = Client::new("did:plc:mallory#phone");
    let (_, join) = mallory.join_externally(&group_info);

    assert_invalid_commit(
        apply_commit(&state, GROUP, &join.commit, &join.group_info, &did("bob")),
        "adds did:plc:mallory#phone, which is not a device of the caller did:plc:bob",
    );
    let nameless = Client::new("mallory");
    let (_, join) = nameless.join_externally(&group_info);
    assert_invalid_commit(
        apply_commit(
            &state,
            GROUP,
            &join.commit,
            &join.group_info,
            &did("mallory"),
        ),
        "did#device",
    );
}

#[test]
fn an_external_commit_may_not_remove_another_users_leaf() {
    let TwoMembers {
        alice,
        state,
        group_info,
        ..
    } = two_members();
    // Mallory holds Alice's signature key, so OpenMLS's builder removes
    // Alice's leaf; OpenMLS leaves it to the application to refuse that.
    let mallory = alice.sharing_key("did:plc:mallory#phone");
    let (_, takeover) = mallory.join_externally(&group_info);

    assert_invalid_commit(
        apply_commit(
            &state,
            GROUP,
            &takeover.commit,
            &takeover.group_info,
            &did("mallory"),
        ),
        "removes leaf 0 (did:plc:alice#phone), a device of another user",
    );
}

#[test]
fn a_leave_proposal_is_queued_then_committed_by_another_member() {
    let TwoMembers {
        alice,
        bob,
        mut alice_group,
        mut bob_group,
        state,
        ..
    } = two_members();
    let leave = bytes(
        &bob_group
            .leave_group(bob.mls.provider(), bob.mls.signer())
            .expect("a leave proposal"),
    );

    let queued = apply_self_remove_proposal(&state, GROUP, &leave, &did("bob"))
        .expect("Bob's leave proposal");
    assert_eq!(queued.epoch, 1);
    assert_eq!(queued.proposer.to_string(), "did:plc:bob#phone");
    assert_eq!(queued.removed_leaf, 1);

    let ProcessedMessageContent::ProposalMessage(proposal) =
        alice.process(&mut alice_group, &leave)
    else {
        panic!("Alice did not get a proposal");
    };
    alice_group
        .store_pending_proposal(alice.mls.provider().storage(), *proposal)
        .expect("Alice queues the proposal");
    let commit = alice.commit_pending(&mut alice_group);

    // Without the queued proposal the reference cannot be resolved.
    assert_invalid_commit(
        apply_commit(
            &state,
            GROUP,
            &commit.commit,
            &commit.group_info,
            &did("alice"),
        ),
        "MLS validation",
    );

    let outcome = apply_commit(
        &queued.state,
        GROUP,
        &commit.commit,
        &commit.group_info,
        &did("alice"),
    )
    .expect("Alice commits Bob's leave");
    assert_eq!(
        outcome.proposals,
        [CommittedProposal {
            kind: ProposalKind::Remove,
            by_reference: true
        }]
    );
    assert_eq!(devices(&outcome.removed), [(1, "did:plc:bob#phone".into())]);
    assert_eq!(
        devices(&outcome.members),
        [(0, "did:plc:alice#phone".into())]
    );
}

#[test]
fn leave_proposals_are_checked() {
    let TwoMembers {
        alice,
        bob,
        mut alice_group,
        mut bob_group,
        state,
        ..
    } = two_members();
    let leave = bytes(
        &bob_group
            .leave_group(bob.mls.provider(), bob.mls.signer())
            .expect("a leave proposal"),
    );
    let invalid = |result: Result<Queued, EngineError>, needle: &str| match result {
        Err(EngineError::InvalidProposal(why)) => {
            assert!(why.contains(needle), "unexpected reason: {why}")
        }
        other => panic!("expected InvalidProposal ({needle}), got {other:?}"),
    };

    invalid(
        apply_self_remove_proposal(&state, GROUP, &leave, &did("alice")),
        "not by a device of the caller did:plc:alice",
    );

    // Bob may not propose removing Alice.
    let (eviction, _) = bob_group
        .propose_remove_member(bob.mls.provider(), bob.mls.signer(), LeafNodeIndex::new(0))
        .expect("a Remove proposal");
    invalid(
        apply_self_remove_proposal(&state, GROUP, &bytes(&eviction), &did("bob")),
        "a device of another user",
    );

    let update = alice.self_update(&mut alice_group, LeafNodeParameters::default());
    invalid(
        apply_self_remove_proposal(&state, GROUP, &update.commit, &did("alice")),
        "not a proposal",
    );
    invalid(
        apply_self_remove_proposal(&state, GROUP, &flipped(&leave, 40), &did("bob")),
        "MLS validation",
    );

    let other = created(OTHER_GROUP);
    assert!(matches!(
        apply_self_remove_proposal(&other.state, OTHER_GROUP, &leave, &did("bob")),
        Err(EngineError::WrongGroup)
    ));

    let advanced = apply_commit(
        &state,
        GROUP,
        &update.commit,
        &update.group_info,
        &did("alice"),
    )
    .expect("a commit moving to epoch 2");
    assert!(matches!(
        apply_self_remove_proposal(&advanced.state, GROUP, &leave, &did("bob")),
        Err(EngineError::EpochMismatch { current: 2, got: 1 })
    ));

    apply_self_remove_proposal(&state, GROUP, &leave, &did("bob"))
        .expect("the proposal against the untouched state");
}

#[test]
fn state_that_does_not_load_is_an_internal_error() {
    let TwoMembers { state, .. } = two_members();
    assert!(matches!(
        members(&head_only(b"{}"), GROUP),
        Err(EngineError::Internal(_))
    ));
    assert!(matches!(
        epoch(&head_only(b"not a state"), GROUP),
        Err(EngineError::Internal(_))
    ));
    // A state holds exactly one group.
    assert!(matches!(
        members(&state, OTHER_GROUP),
        Err(EngineError::Internal(_))
    ));
    // Written by another storage version.
    let other_version = head_only(br#"{"version":999,"group_id":null,"values":{},"proposals":[]}"#);
    assert!(matches!(
        epoch(&other_version, GROUP),
        Err(EngineError::Internal(why)) if why.contains("version 999")
    ));
}

/// A group state as the service stored it before migration 0007 (JSON,
/// bytes as arrays of numbers, the whole tree inline): a 20-member group at
/// epoch 11, taken from a benchmark run of that version.
const LEGACY_STATE: &[u8] = include_bytes!("fixtures/legacy-group-state-20-members.json");
const LEGACY_GROUP: [u8; 16] = [
    0x4c, 0xaa, 0x3a, 0x91, 0xe6, 0x44, 0xf9, 0x38, 0x03, 0x13, 0xff, 0xc1, 0xfb, 0x34, 0x10, 0xf5,
];

#[test]
fn a_legacy_json_state_loads_and_is_stored_in_the_new_layout() {
    let legacy = head_only(LEGACY_STATE);
    let group = LoadedGroup::load(&legacy, &LEGACY_GROUP).expect("the legacy state loads");
    assert_eq!(group.epoch(), 11);
    let members = group.members().expect("members");
    assert_eq!(members.len(), 20);

    // Saved, it is a small binary head and a row per non-blank node, which
    // load to the same group.
    let stored = group.snapshot().expect("a snapshot");
    assert_ne!(stored.head.first(), Some(&b'{'));
    assert!(
        stored.head.len() < 1024,
        "head of {} bytes",
        stored.head.len()
    );
    assert!(stored.nodes.len() >= members.len());
    let stored_size: usize =
        stored.head.len() + stored.nodes.iter().map(|(_, n)| n.len()).sum::<usize>();
    assert!(stored_size * 3 < LEGACY_STATE.len(), "{stored_size} bytes");
    let reloaded = LoadedGroup::load(&stored, &LEGACY_GROUP).expect("the new layout loads");
    assert_eq!(reloaded.epoch(), 11);
    assert_eq!(reloaded.members(), Ok(members));
    assert_eq!(reloaded.snapshot().expect("a snapshot"), stored);
}
