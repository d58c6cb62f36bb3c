//! The MLS core of the group lifecycle: pure functions over bytes that the
//! database layer calls inside its transactions. The service is not a group
//! member; it follows each group's public state with OpenMLS `PublicGroup`,
//! stored as a small head and one row per tree node (see `state`).
//!
//! Every function works on a [`LoadedGroup`] (the stored state, parsed) and
//! returns on success what changed in the stored state ([`StateWrite`]); on
//! an error nothing is returned, so the caller stores nothing and the old
//! state stays valid. The caller may keep a `LoadedGroup` between requests
//! while the stored state it came from is current, and must drop it when a
//! call failed after it started changing it (see
//! [`LoadedGroup::is_intact`]).
//!
//! What OpenMLS checks and what we add: `PublicGroup::process_message`
//! validates framing, signatures, proposals, update paths and tree hashes,
//! but it cannot check the membership tag or the confirmation tag (both need
//! group secrets) and it does not look at credentials. So we add the
//! credential policy (`did#device` identities, no leaf changes its DID, the
//! committer is the caller), the epoch check up front (so a stale commit gets
//! `EpochMismatch` rather than a validation error), and a check of every
//! uploaded GroupInfo against our own merged state.

use catbird_generated::lexicons::blue::catbird::mls::defs::CipherSuite;
use catbird_generated::runtime::Did;
use openmls::group::ProposalStore;
use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    BasicCredential, ContentType, Credential, GroupContext, GroupEpoch, GroupId, LeafNodeIndex,
    MlsMessageBodyIn, MlsMessageIn, OpenMlsSignaturePublicKey, ProcessedMessageContent, Proposal,
    ProposalOrRefType, ProposalType, PublicGroup, PublicMessageIn, Sender, StagedCommit,
    Verifiable as _,
};
use openmls_traits::public_storage::PublicStorageProvider as _;
use sha2::{Digest as _, Sha256};

use super::state::GroupState;
pub use super::state::{StateWrite, StoredState};
use crate::device::DeviceId;
use crate::mls_crypto::{self, to_hex};

/// Why the engine refused an input. Messages are meant for client
/// developers; none carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("invalid commit: {0}")]
    InvalidCommit(String),
    #[error("the message belongs to another group")]
    WrongGroup,
    #[error("the message is for epoch {got}, but the group is at epoch {current}")]
    EpochMismatch { current: u64, got: u64 },
    #[error("invalid GroupInfo: {0}")]
    InvalidGroupInfo(String),
    #[error("invalid proposal: {0}")]
    InvalidProposal(String),
    #[error("invalid application message: {0}")]
    InvalidCiphertext(String),
    #[error("invalid Welcome: {0}")]
    InvalidWelcome(String),
    /// Stored state that does not load: a bug on our side, never the
    /// client's.
    #[error("group engine failure: {0}")]
    Internal(String),
}

/// One occupied leaf of the group's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub leaf_index: u32,
    pub device: DeviceId,
}

/// A group bootstrapped from its creator's GroupInfo.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The group, for the caller to keep once its state is stored.
    pub group: LoadedGroup,
    /// The whole state to store.
    pub state: StoredState,
    pub epoch: u64,
    pub members: Vec<Member>,
}

/// A leaf added by a commit, with the KeyPackage that added it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedMember {
    pub leaf_index: u32,
    pub device: DeviceId,
    /// The KeyPackageRef (RFC 9420 section 5.2) of the added KeyPackage.
    pub key_package_ref: Vec<u8>,
}

/// The kind of a proposal (RFC 9420 section 12.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalKind {
    Add,
    Update,
    Remove,
    PreSharedKey,
    ReInit,
    ExternalInit,
    GroupContextExtensions,
    SelfRemove,
    /// Any other proposal type, by its code point.
    Other(u16),
}

/// One proposal a commit covers, so the caller can apply per-method rules
/// (e.g. addMembers takes only Adds, commitGroupChange no Adds or Removes by
/// value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedProposal {
    pub kind: ProposalKind,
    /// Covered by reference to a queued proposal rather than inline.
    pub by_reference: bool,
}

/// An accepted and merged commit.
#[derive(Debug, Clone)]
pub struct CommitOutcome {
    /// What the merge changed in the stored state.
    pub state: StateWrite,
    /// The epoch the commit created.
    pub epoch: u64,
    /// The committing leaf's device; for an external commit, the new leaf.
    pub committer: DeviceId,
    /// Whether this was an external commit (sender `new_member_commit`).
    pub external: bool,
    /// The proposals the commit covers, in commit order.
    pub proposals: Vec<CommittedProposal>,
    /// Leaves added by Add proposals (by value or by reference).
    pub added: Vec<AddedMember>,
    /// Leaves removed by the commit, as they were before the merge.
    pub removed: Vec<Member>,
    /// The leaves whose device changed, as they were before the merge
    /// (removed, or replaced by another device).
    pub left: Vec<Member>,
    /// The leaves whose device changed, as they are after the merge (added,
    /// the external joiner, or a leaf now held by another device). Leaves
    /// the commit did not touch are in neither list.
    pub joined: Vec<Member>,
    /// SHA-256 of the commit bytes, to recognise a resubmitted commit.
    pub commit_hash: Vec<u8>,
}

/// A queued leave proposal.
#[derive(Debug, Clone)]
pub struct ProposalOutcome {
    /// What queueing the proposal changed in the stored state.
    pub state: StateWrite,
    /// The current epoch (a proposal does not change it).
    pub epoch: u64,
    /// The proposing leaf's device.
    pub proposer: DeviceId,
    /// The leaf the proposal removes.
    pub removed_leaf: u32,
}

/// A group's stored state, parsed: what every engine call works on.
#[derive(Debug)]
pub struct LoadedGroup {
    storage: GroupState,
    group: PublicGroup,
    /// False once a call started changing the group and failed before it
    /// returned the matching [`StateWrite`].
    intact: bool,
}

impl LoadedGroup {
    /// Parses a group's stored state.
    pub fn load(state: &StoredState, group_id: &[u8]) -> Result<Self, EngineError> {
        let storage = load_state(state)?;
        let group = load_group(&storage, group_id)?;
        Ok(Self {
            storage,
            group,
            intact: true,
        })
    }

    /// Whether the group is still the stored state it was loaded from plus
    /// the writes the engine returned. A call that fails before changing
    /// anything leaves it intact (a stale or invalid commit), so the caller
    /// may keep it; otherwise it must be dropped.
    pub fn is_intact(&self) -> bool {
        self.intact
    }

    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    /// Every occupied leaf.
    pub fn members(&self) -> Result<Vec<Member>, EngineError> {
        members_of(&self.group).map_err(EngineError::Internal)
    }

    /// The whole stored state of the group as it is now.
    pub fn snapshot(&self) -> Result<StoredState, EngineError> {
        self.storage
            .snapshot()
            .map_err(|e| EngineError::Internal(e.to_string()))
    }

    /// About how many bytes the group holds in memory.
    pub fn approximate_size(&self) -> usize {
        // The parsed tree takes about as much again as its encoding.
        2 * self.storage.approximate_size()
    }

    /// Runs a change to the group: it stays intact only if `change`
    /// succeeds.
    fn change<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        self.intact = false;
        let result = change(self);
        if result.is_ok() {
            self.intact = true;
        }
        result
    }
}

/// createConvo: builds the group's state from the creator's signed GroupInfo
/// for epoch 0, an MLSMessage carrying the ratchet_tree and external_pub
/// extensions. The group must have exactly one member, a device of `creator`.
pub fn bootstrap(
    group_id: &[u8],
    cipher_suite: &CipherSuite,
    group_info: &[u8],
    creator: &Did,
) -> Result<Bootstrapped, EngineError> {
    let invalid = EngineError::InvalidGroupInfo;
    let group_info = parse_group_info(group_info)?;
    if group_info.group_id().as_slice() != group_id {
        return Err(invalid(format!(
            "the GroupInfo is for group {}, not {}",
            to_hex(group_info.group_id().as_slice()),
            to_hex(group_id)
        )));
    }
    let suite = mls_crypto::lexicon_cipher_suite(group_info.ciphersuite()).map_err(|_| {
        invalid(format!(
            "the GroupInfo uses cipher suite {:?}, which this service does not support",
            group_info.ciphersuite()
        ))
    })?;
    if suite != *cipher_suite {
        return Err(invalid(format!(
            "the GroupInfo uses cipher suite {}, not {}",
            suite.as_str(),
            cipher_suite.as_str()
        )));
    }
    let epoch = group_info.epoch().as_u64();
    if epoch != 0 {
        return Err(invalid(format!(
            "the GroupInfo is for epoch {epoch}; a new conversation starts at epoch 0"
        )));
    }
    let tree = group_info
        .extensions()
        .ratchet_tree()
        .ok_or_else(|| invalid("the GroupInfo lacks the ratchet_tree extension".into()))?
        .ratchet_tree()
        .clone();
    if group_info.extensions().external_pub().is_none() {
        return Err(invalid(
            "the GroupInfo lacks the external_pub extension (needed for rejoining)".into(),
        ));
    }

    // from_external verifies the tree (parent hashes, leaf signatures), that
    // its hash is the one in the group context, and the GroupInfo signature
    // by its signer leaf. Its leaf lifetime check is harmless here: the
    // creator's leaf is brand new.
    let storage = GroupState::empty();
    let (group, _) = PublicGroup::from_external(
        &mls_crypto::crypto(),
        &storage,
        tree,
        group_info,
        ProposalStore::new(),
    )
    .map_err(|e| invalid(format!("the GroupInfo or its tree does not verify: {e}")))?;

    let members = members_of(&group).map_err(invalid)?;
    match members.as_slice() {
        [only] if only.device.did() == creator => {}
        [only] => {
            return Err(invalid(format!(
                "the group's member is {}, not a device of the caller {}",
                only.device,
                creator.as_str()
            )));
        }
        _ => {
            return Err(invalid(format!(
                "a new group has exactly one member, the creator's device; this one has {}",
                members.len()
            )));
        }
    }
    let group = LoadedGroup {
        storage,
        group,
        intact: true,
    };
    Ok(Bootstrapped {
        state: group.snapshot()?,
        group,
        epoch,
        members,
    })
}

/// Validates `commit` (an MLSMessage with a PublicMessage commit) against the
/// group, applies the credential policy, merges it, and checks `group_info`
/// (the committer's signed GroupInfo for the new epoch) against the merged
/// state. `caller` is the authenticated user: the committer must be one of
/// their devices (for an external commit, the new leaf).
pub fn apply_commit(
    loaded: &mut LoadedGroup,
    commit: &[u8],
    group_info: &[u8],
    caller: &Did,
) -> Result<CommitOutcome, EngineError> {
    let message =
        parse_public_message(commit, ContentType::Commit).map_err(EngineError::InvalidCommit)?;
    let group = &loaded.group;
    check_group_and_epoch(group.group_context(), message.group_id(), message.epoch())?;

    let crypto = mls_crypto::crypto();
    let processed = group
        .process_message(&crypto, message)
        .map_err(|e| EngineError::InvalidCommit(format!("rejected by MLS validation: {e}")))?;
    let sender = processed.sender().clone();
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        return Err(EngineError::InvalidCommit(
            "the message did not stage as a commit".into(),
        ));
    };
    let review = review_commit(group, &staged, &sender, caller)?;

    loaded.change(|loaded| {
        let LoadedGroup { storage, group, .. } = loaded;
        group
            .merge_commit(&*storage, *staged)
            .map_err(|e| EngineError::Internal(format!("merging a validated commit: {e}")))?;
        verify_group_info(group, review.committer, group_info)?;

        let committer = member_at(group, review.committer)?.device;
        let mut added = Vec::with_capacity(review.added.len());
        for add in review.added {
            // Leaves are unique by signature key (OpenMLS checks it), so the
            // key finds where the merge placed each added KeyPackage.
            let leaf_index = group
                .members()
                .find(|member| member.signature_key == add.signature_key)
                .map(|member| member.index.u32())
                .ok_or_else(|| {
                    EngineError::Internal(format!("added device {} has no leaf", add.device))
                })?;
            added.push(AddedMember {
                leaf_index,
                device: add.device,
                key_package_ref: add.key_package_ref,
            });
        }
        let touched = added
            .iter()
            .map(|a| a.leaf_index)
            .chain(std::iter::once(review.committer.u32()));
        let (left, joined) = leaf_changes(group, &review.before, touched)?;

        Ok(CommitOutcome {
            state: save(storage)?,
            epoch: group.group_context().epoch().as_u64(),
            committer,
            external: review.external,
            proposals: review.proposals,
            added,
            removed: review.removed,
            left,
            joined,
            commit_hash: Sha256::digest(commit).to_vec(),
        })
    })
}

/// The devices of the leaves a commit touched, before and after the merge,
/// where they differ: `before` holds the occupants of the leaves known
/// before the merge (removed, committer, Update senders); `touched` adds
/// the leaves placed by the merge (added, external joiner), which were
/// blank unless a removal of the same commit freed them.
fn leaf_changes(
    group: &PublicGroup,
    before: &[Member],
    touched: impl Iterator<Item = u32>,
) -> Result<(Vec<Member>, Vec<Member>), EngineError> {
    let mut leaves: Vec<u32> = before.iter().map(|m| m.leaf_index).chain(touched).collect();
    leaves.sort_unstable();
    leaves.dedup();
    let (mut left, mut joined) = (Vec::new(), Vec::new());
    for leaf in leaves {
        let old = before.iter().find(|m| m.leaf_index == leaf);
        let new = match group.leaf(LeafNodeIndex::new(leaf)) {
            Some(node) => Some(Member {
                leaf_index: leaf,
                device: device_of(node.credential())
                    .map_err(|e| EngineError::Internal(format!("leaf {leaf}: {e}")))?,
            }),
            None => None,
        };
        if old != new.as_ref() {
            left.extend(old.cloned());
            joined.extend(new);
        }
    }
    Ok((left, joined))
}

/// leaveConvo: validates a member's Remove proposal for a leaf of its own
/// user (normally the sender's own leaf, as `MlsGroup::leave_group` makes it)
/// and queues it in the state, so that the next commit can cover it by
/// reference.
pub fn apply_self_remove_proposal(
    loaded: &mut LoadedGroup,
    proposal: &[u8],
    caller: &Did,
) -> Result<ProposalOutcome, EngineError> {
    let invalid = EngineError::InvalidProposal;
    let group = &loaded.group;
    let message = parse_public_message(proposal, ContentType::Proposal).map_err(invalid)?;
    check_group_and_epoch(group.group_context(), message.group_id(), message.epoch())?;

    let processed = group
        .process_message(&mls_crypto::crypto(), message)
        .map_err(|e| invalid(format!("rejected by MLS validation: {e}")))?;
    let Sender::Member(sender) = *processed.sender() else {
        return Err(invalid(
            "a leave proposal must be sent by a member of the group".into(),
        ));
    };
    let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
        return Err(invalid("the message did not process as a proposal".into()));
    };
    let Proposal::Remove(remove) = queued.proposal() else {
        return Err(invalid(format!(
            "a leave proposal is a Remove proposal, not {:?}",
            proposal_kind(queued.proposal())
        )));
    };

    let proposer = member_at(group, sender)?;
    if proposer.device.did() != caller {
        return Err(invalid(format!(
            "the proposal is sent by {} (leaf {}), not by a device of the caller {}",
            proposer.device,
            sender.u32(),
            caller.as_str()
        )));
    }
    let removed_leaf = remove.removed();
    let removed = group
        .leaf(removed_leaf)
        .ok_or_else(|| {
            invalid(format!(
                "the proposal removes leaf {}, which is empty",
                removed_leaf.u32()
            ))
        })
        .and_then(|leaf| device_of(leaf.credential()).map_err(EngineError::Internal))?;
    if removed.did() != caller {
        return Err(invalid(format!(
            "the proposal removes leaf {} ({removed}), a device of another user",
            removed_leaf.u32()
        )));
    }

    loaded.change(|loaded| {
        let LoadedGroup { storage, group, .. } = loaded;
        group
            .add_proposal(&*storage, *queued)
            .map_err(|e| EngineError::Internal(format!("queueing a proposal: {e}")))?;
        Ok(ProposalOutcome {
            state: save(storage)?,
            epoch: group.group_context().epoch().as_u64(),
            proposer: proposer.device,
            removed_leaf: removed_leaf.u32(),
        })
    })
}

/// sendMessage: an application message must be a PrivateMessage of this
/// group, at the current epoch, of content type application. Only its clear
/// header is read (the content is encrypted), so the group is not loaded:
/// the caller holds the conversation's current epoch.
pub fn check_application_header(
    group_id: &[u8],
    current_epoch: u64,
    message: &[u8],
) -> Result<(), EngineError> {
    let invalid = EngineError::InvalidCiphertext;
    let message = MlsMessageIn::tls_deserialize_exact(message)
        .map_err(|e| invalid(format!("not an MLSMessage: {e}")))?;
    let wire_format = message.wire_format();
    let MlsMessageBodyIn::PrivateMessage(message) = message.extract() else {
        return Err(invalid(format!(
            "application messages are PrivateMessages; this MLSMessage is a {wire_format:?}"
        )));
    };
    if message.group_id().as_slice() != group_id {
        return Err(EngineError::WrongGroup);
    }
    let got = message.epoch().as_u64();
    if got != current_epoch {
        return Err(EngineError::EpochMismatch {
            current: current_epoch,
            got,
        });
    }
    if message.content_type() != ContentType::Application {
        return Err(invalid(format!(
            "the PrivateMessage carries {}, not an application message; \
             handshake messages go to the service as PublicMessages",
            content_type_name(message.content_type())
        )));
    }
    Ok(())
}

/// Welcome routing: the KeyPackageRefs a Welcome is addressed to (the
/// `new_member` of each encrypted group secret). Its cipher suite must be
/// the group's.
pub fn welcome_recipients(
    welcome: &[u8],
    cipher_suite: &CipherSuite,
) -> Result<Vec<Vec<u8>>, EngineError> {
    let invalid = EngineError::InvalidWelcome;
    let message = MlsMessageIn::tls_deserialize_exact(welcome)
        .map_err(|e| invalid(format!("not an MLSMessage: {e}")))?;
    let wire_format = message.wire_format();
    let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
        return Err(invalid(format!(
            "the MLSMessage is a {wire_format:?}, not a Welcome"
        )));
    };
    let suite = mls_crypto::lexicon_cipher_suite(welcome.ciphersuite())
        .map(|suite| suite.as_str().to_owned())
        .unwrap_or_else(|_| format!("{:?}", welcome.ciphersuite()));
    if suite != cipher_suite.as_str() {
        return Err(invalid(format!(
            "the Welcome uses cipher suite {suite}, but the group uses {}",
            cipher_suite.as_str()
        )));
    }
    let mut recipients: Vec<Vec<u8>> = Vec::with_capacity(welcome.secrets().len());
    for secrets in welcome.secrets() {
        let reference = secrets.new_member().as_slice().to_vec();
        if recipients.contains(&reference) {
            return Err(invalid(format!(
                "the Welcome names KeyPackage {} twice",
                to_hex(&reference)
            )));
        }
        recipients.push(reference);
    }
    if recipients.is_empty() {
        return Err(invalid("the Welcome names no recipient".into()));
    }
    Ok(recipients)
}

/// Every occupied leaf of the stored group.
pub fn members(state: &StoredState, group_id: &[u8]) -> Result<Vec<Member>, EngineError> {
    LoadedGroup::load(state, group_id)?.members()
}

/// The stored group's current epoch (without loading its tree).
pub fn epoch(state: &StoredState, group_id: &[u8]) -> Result<u64, EngineError> {
    Ok(load_context(&load_state(state)?, group_id)?
        .epoch()
        .as_u64())
}

/// What the policy learned about a commit before it is merged.
struct Review {
    committer: LeafNodeIndex,
    external: bool,
    proposals: Vec<CommittedProposal>,
    added: Vec<PendingAdd>,
    removed: Vec<Member>,
    /// The occupants before the merge of the leaves the commit changes
    /// that are known before it: removed leaves, the committer's, Update
    /// senders'.
    before: Vec<Member>,
}

/// An added KeyPackage whose leaf index is known only after the merge.
struct PendingAdd {
    signature_key: Vec<u8>,
    device: DeviceId,
    key_package_ref: Vec<u8>,
}

/// The credential policy, on a staged commit against the group before the
/// merge. OpenMLS has already checked the commit's structure; what it leaves
/// to the application is who may commit what.
fn review_commit(
    group: &PublicGroup,
    staged: &StagedCommit,
    sender: &Sender,
    caller: &Did,
) -> Result<Review, EngineError> {
    let rejected = EngineError::InvalidCommit;

    // Leaves removed by Remove proposals (inline or by reference) and by
    // SelfRemove proposals (the sender's own leaf).
    let removed = staged
        .queued_proposals()
        .filter_map(|queued| match (queued.proposal(), queued.sender()) {
            (Proposal::Remove(remove), _) => Some(remove.removed()),
            (Proposal::SelfRemove, Sender::Member(leaf)) => Some(*leaf),
            _ => None,
        })
        .map(|leaf| member_at(group, leaf))
        .collect::<Result<Vec<_>, _>>()?;

    let mut before_merge = removed.clone();
    let (committer, external) = match sender {
        Sender::Member(leaf) => {
            let before = member_at(group, *leaf)?;
            before_merge.push(before.clone());
            if before.device.did() != caller {
                return Err(rejected(format!(
                    "the commit is sent by {} (leaf {}), not by a device of the caller {}",
                    before.device,
                    leaf.u32(),
                    caller.as_str()
                )));
            }
            if let Some(path_leaf) = staged.update_path_leaf_node() {
                keeps_did(&before, path_leaf.credential(), "the update path")?;
            }
            (*leaf, false)
        }
        Sender::NewMemberCommit => {
            // OpenMLS checks that an external commit has an update path, one
            // ExternalInit and at most one inline Remove; it leaves to us
            // whose leaf may be removed (RFC 9420 section 12.4.3.2: the new
            // leaf must be acceptable as a replacement of the removed one).
            let leaf = group
                .ext_commit_sender_index(staged)
                .map_err(|e| EngineError::Internal(format!("placing the external joiner: {e}")))?;
            let joiner = staged
                .update_path_leaf_node()
                .ok_or_else(|| rejected("an external commit must carry an update path".into()))
                .and_then(|path_leaf| {
                    device_of(path_leaf.credential()).map_err(|e| {
                        rejected(format!(
                            "the external commit's new leaf is not allowed: {e}"
                        ))
                    })
                })?;
            if joiner.did() != caller {
                return Err(rejected(format!(
                    "the external commit adds {joiner}, which is not a device of the caller {}",
                    caller.as_str()
                )));
            }
            if removed.len() > 1 {
                return Err(rejected(format!(
                    "an external commit may remove at most one leaf; this one removes {}",
                    removed.len()
                )));
            }
            if let Some(other) = removed.iter().find(|member| member.device.did() != caller) {
                return Err(rejected(format!(
                    "the external commit removes leaf {} ({}), a device of another user",
                    other.leaf_index, other.device
                )));
            }
            (leaf, true)
        }
        Sender::External(_) | Sender::NewMemberProposal => {
            return Err(rejected(
                "a commit must come from a member or an external joiner".into(),
            ));
        }
    };

    // Every credential the commit introduces (update path leaf, Updates,
    // Adds, external senders) must be a `did#device` identity.
    for credential in staged.credentials_to_verify() {
        device_of(credential).map_err(|e| {
            rejected(format!(
                "the commit introduces a credential that is not allowed: {e}"
            ))
        })?;
    }

    // An Update replaces its sender's leaf: it must keep the DID.
    for update in staged.update_proposals() {
        let Sender::Member(leaf) = update.sender() else {
            return Err(rejected(
                "an Update proposal must come from a member".into(),
            ));
        };
        let before = member_at(group, *leaf)?;
        keeps_did(
            &before,
            update.update_proposal().leaf_node().credential(),
            "an Update proposal",
        )?;
        before_merge.push(before);
    }

    let crypto = mls_crypto::crypto();
    let added = staged
        .add_proposals()
        .map(|add| {
            let key_package = add.add_proposal().key_package();
            let device = device_of(key_package.leaf_node().credential()).map_err(rejected)?;
            let key_package_ref = key_package
                .hash_ref(&crypto)
                .map_err(|e| EngineError::Internal(format!("hashing a KeyPackage: {e}")))?;
            Ok(PendingAdd {
                signature_key: key_package.leaf_node().signature_key().as_slice().to_vec(),
                device,
                key_package_ref: key_package_ref.as_slice().to_vec(),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;

    let proposals = staged
        .queued_proposals()
        .map(|queued| CommittedProposal {
            kind: proposal_kind(queued.proposal()),
            by_reference: queued.proposal_or_ref_type() == ProposalOrRefType::Reference,
        })
        .collect();

    Ok(Review {
        committer,
        external,
        proposals,
        added,
        removed,
        before: before_merge,
    })
}

/// A leaf may be replaced (update path, Update proposal) only by a leaf of
/// the same user.
fn keeps_did(before: &Member, after: &Credential, what: &str) -> Result<(), EngineError> {
    let after = device_of(after).map_err(|e| {
        EngineError::InvalidCommit(format!(
            "{what} introduces a credential that is not allowed: {e}"
        ))
    })?;
    if after.did() != before.device.did() {
        return Err(EngineError::InvalidCommit(format!(
            "{what} changes leaf {} from {} to {after}; a leaf may not change its DID",
            before.leaf_index, before.device
        )));
    }
    Ok(())
}

/// Checks an uploaded GroupInfo against the merged state: same group
/// context, same tree, the commit's confirmation tag, signed by the
/// committer's leaf, with external_pub.
///
/// Why not `PublicGroup::from_external` on a scratch storage: it would also
/// verify leaf lifetimes, which rejects a long-lived group whose members'
/// KeyPackage lifetimes have run out, and it rebuilds the whole tree. In
/// OpenMLS 0.9 `VerifiableGroupInfo` keeps its signer and confirmation tag
/// private, but `Verifiable::unsigned_payload` gives the signed
/// `GroupInfoTBS`, which is `group_context || extensions || confirmation_tag
/// || uint32 signer` (RFC 9420 section 12.4.3). So we rebuild that payload
/// from our own state with the committer as signer, require it byte for
/// byte, and verify the signature with the committer leaf's key.
fn verify_group_info(
    group: &PublicGroup,
    committer: LeafNodeIndex,
    group_info: &[u8],
) -> Result<(), EngineError> {
    let invalid = EngineError::InvalidGroupInfo;
    let group_info = parse_group_info(group_info)?;
    let ours = group.group_context();
    let theirs = group_info.group_context();
    if theirs.group_id() != ours.group_id() {
        return Err(invalid("the GroupInfo is for another group".into()));
    }
    if theirs.epoch() != ours.epoch() {
        return Err(invalid(format!(
            "the GroupInfo is for epoch {}, but the commit creates epoch {}",
            theirs.epoch().as_u64(),
            ours.epoch().as_u64()
        )));
    }
    if theirs != ours {
        return Err(invalid(
            "the GroupInfo's group context (tree hash, transcript hash or extensions) \
             differs from the one the commit produces"
                .into(),
        ));
    }

    let extensions = group_info.extensions();
    let tree = extensions
        .ratchet_tree()
        .ok_or_else(|| invalid("the GroupInfo lacks the ratchet_tree extension".into()))?;
    if tls_bytes(tree.ratchet_tree())? != tls_bytes(&group.export_ratchet_tree())? {
        return Err(invalid(
            "the GroupInfo's ratchet tree differs from the tree the commit produces".into(),
        ));
    }
    if extensions.external_pub().is_none() {
        return Err(invalid(
            "the GroupInfo lacks the external_pub extension (needed for rejoining)".into(),
        ));
    }

    let expected = [
        tls_bytes(ours)?,
        tls_bytes(extensions)?,
        tls_bytes(group.confirmation_tag())?,
    ]
    .concat();
    let payload = group_info
        .unsigned_payload()
        .map_err(|e| invalid(format!("the GroupInfo does not re-encode: {e}")))?;
    let Some((signed_fields, signer)) = payload.split_last_chunk::<4>() else {
        return Err(invalid("the GroupInfo is truncated".into()));
    };
    // The context and extensions are already equal, so only the tag can
    // differ here: a GroupInfo made for another commit of this epoch.
    if signed_fields != expected.as_slice() {
        return Err(invalid(
            "the GroupInfo's confirmation tag is not the commit's".into(),
        ));
    }
    let signer = u32::from_be_bytes(*signer);
    if signer != committer.u32() {
        return Err(invalid(format!(
            "the GroupInfo is signed by leaf {signer}, not by the committer (leaf {})",
            committer.u32()
        )));
    }
    let signer_leaf = group
        .leaf(committer)
        .ok_or_else(|| EngineError::Internal("the committer's leaf is blank".into()))?;
    let key = OpenMlsSignaturePublicKey::from_signature_key(
        signer_leaf.signature_key().clone(),
        ours.ciphersuite().signature_algorithm(),
    );
    group_info
        .verify(&mls_crypto::crypto(), &key)
        .map_err(|_| {
            invalid("the GroupInfo's signature does not verify with the committer's key".into())
        })?;
    Ok(())
}

fn load_state(state: &StoredState) -> Result<GroupState, EngineError> {
    GroupState::load(state).map_err(|e| EngineError::Internal(e.to_string()))
}

fn save(storage: &GroupState) -> Result<StateWrite, EngineError> {
    storage
        .save()
        .map_err(|e| EngineError::Internal(e.to_string()))
}

fn load_group(storage: &GroupState, group_id: &[u8]) -> Result<PublicGroup, EngineError> {
    PublicGroup::load(storage, &GroupId::from_slice(group_id))
        .map_err(|e| EngineError::Internal(format!("loading the group state: {e}")))?
        .ok_or_else(|| missing_group(group_id))
}

/// The group context alone, for checks that need no tree.
fn load_context(storage: &GroupState, group_id: &[u8]) -> Result<GroupContext, EngineError> {
    storage
        .group_context::<GroupId, GroupContext>(&GroupId::from_slice(group_id))
        .map_err(|e| EngineError::Internal(format!("loading the group context: {e}")))?
        .ok_or_else(|| missing_group(group_id))
}

fn missing_group(group_id: &[u8]) -> EngineError {
    EngineError::Internal(format!(
        "the stored state does not hold group {}",
        to_hex(group_id)
    ))
}

/// A handshake must be for this group and exactly its current epoch.
fn check_group_and_epoch(
    context: &GroupContext,
    group_id: &GroupId,
    epoch: GroupEpoch,
) -> Result<(), EngineError> {
    if group_id != context.group_id() {
        return Err(EngineError::WrongGroup);
    }
    let (current, got) = (context.epoch().as_u64(), epoch.as_u64());
    if got != current {
        return Err(EngineError::EpochMismatch { current, got });
    }
    Ok(())
}

/// An MLSMessage carrying a PublicMessage of content type `expected`.
fn parse_public_message(bytes: &[u8], expected: ContentType) -> Result<PublicMessageIn, String> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| format!("not an MLSMessage: {e}"))?;
    let wire_format = message.wire_format();
    let MlsMessageBodyIn::PublicMessage(message) = message.extract() else {
        return Err(format!(
            "the MLSMessage is a {wire_format:?}; the service needs a PublicMessage"
        ));
    };
    if message.content_type() != expected {
        return Err(format!(
            "the PublicMessage carries {}, not {}",
            content_type_name(message.content_type()),
            content_type_name(expected)
        ));
    }
    Ok(message)
}

fn parse_group_info(bytes: &[u8]) -> Result<VerifiableGroupInfo, EngineError> {
    let invalid = EngineError::InvalidGroupInfo;
    let message = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| invalid(format!("not an MLSMessage: {e}")))?;
    let wire_format = message.wire_format();
    match message.extract() {
        MlsMessageBodyIn::GroupInfo(group_info) => Ok(group_info),
        _ => Err(invalid(format!(
            "the MLSMessage is a {wire_format:?}, not a GroupInfo"
        ))),
    }
}

fn content_type_name(content_type: ContentType) -> &'static str {
    match content_type {
        ContentType::Application => "an application message",
        ContentType::Proposal => "a proposal",
        ContentType::Commit => "a commit",
    }
}

fn proposal_kind(proposal: &Proposal) -> ProposalKind {
    match proposal.proposal_type() {
        ProposalType::Add => ProposalKind::Add,
        ProposalType::Update => ProposalKind::Update,
        ProposalType::Remove => ProposalKind::Remove,
        ProposalType::PreSharedKey => ProposalKind::PreSharedKey,
        ProposalType::Reinit => ProposalKind::ReInit,
        ProposalType::ExternalInit => ProposalKind::ExternalInit,
        ProposalType::GroupContextExtensions => ProposalKind::GroupContextExtensions,
        ProposalType::SelfRemove => ProposalKind::SelfRemove,
        other => ProposalKind::Other(u16::from(other)),
    }
}

/// The device a credential names: a basic credential `did#device`.
fn device_of(credential: &Credential) -> Result<DeviceId, String> {
    let basic = BasicCredential::try_from(credential.clone()).map_err(|_| {
        format!(
            "a {:?} credential is not a basic credential",
            credential.credential_type()
        )
    })?;
    DeviceId::from_credential_identity(basic.identity())
        .map_err(|e| format!("the credential identity is not `did#device`: {e}"))
}

/// Every occupied leaf with its device. An `Err` names the first leaf whose
/// credential is not a device.
fn members_of(group: &PublicGroup) -> Result<Vec<Member>, String> {
    group
        .members()
        .map(|member| {
            let device = device_of(&member.credential)
                .map_err(|e| format!("leaf {}: {e}", member.index.u32()))?;
            Ok(Member {
                leaf_index: member.index.u32(),
                device,
            })
        })
        .collect()
}

/// The member at an occupied leaf of the stored group. Every stored leaf
/// passed the credential policy, so a bad credential is our bug.
fn member_at(group: &PublicGroup, leaf: LeafNodeIndex) -> Result<Member, EngineError> {
    // OpenMLS has checked that senders and removed leaves are occupied.
    let node = group.leaf(leaf).ok_or_else(|| {
        EngineError::Internal(format!("leaf {} is unexpectedly blank", leaf.u32()))
    })?;
    let device = device_of(node.credential())
        .map_err(|e| EngineError::Internal(format!("stored leaf {}: {e}", leaf.u32())))?;
    Ok(Member {
        leaf_index: leaf.u32(),
        device,
    })
}

fn tls_bytes(value: &impl openmls::prelude::tls_codec::Serialize) -> Result<Vec<u8>, EngineError> {
    value
        .tls_serialize_detached()
        .map_err(|e| EngineError::Internal(format!("encoding for comparison: {e}")))
}
