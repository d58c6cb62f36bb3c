//! The public state of one MLS group as one blob: an OpenMLS
//! `PublicStorageProvider` that keeps what `PublicGroup` writes in memory and
//! (de)serialises it as a whole, so the database stores it in one column and
//! the engine never holds more than one group.

use std::cell::RefCell;
use std::collections::BTreeMap;

use openmls_traits::public_storage::PublicStorageProvider;
use openmls_traits::storage::{CURRENT_VERSION, Entity, Key, traits};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a state blob cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the group state is not valid JSON of the expected shape: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error(
        "the group state was written with storage version {found}; this build reads {CURRENT_VERSION}"
    )]
    Version { found: u16 },
    #[error("a value of the group state does not (de)serialise: {0}")]
    Value(#[source] serde_json::Error),
    #[error("the group state holds another group")]
    OtherGroup,
}

/// What the blob holds, as JSON.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    /// The openmls storage version the values were written with: OpenMLS
    /// changes its stored types between releases, and a blob written by
    /// another version must fail loudly rather than half-load.
    version: u16,
    /// The group's id (as OpenMLS serialises a `GroupId`), set by the first
    /// write.
    group_id: Option<Value>,
    /// The single values, by name: "tree", "context",
    /// "interim_transcript_hash", "confirmation_tag".
    values: BTreeMap<String, Value>,
    /// Queued proposals in arrival order, as (ProposalRef, QueuedProposal).
    proposals: Vec<(Value, Value)>,
}

const TREE: &str = "tree";
const CONTEXT: &str = "context";
const INTERIM_TRANSCRIPT_HASH: &str = "interim_transcript_hash";
const CONFIRMATION_TAG: &str = "confirmation_tag";

/// One group's public state. OpenMLS's storage traits take `&self`, so the
/// contents sit in a `RefCell`; a `GroupState` lives inside one engine call.
#[derive(Debug)]
pub struct GroupState {
    stored: RefCell<Stored>,
}

impl GroupState {
    /// An empty state, for bootstrapping a group into.
    pub fn empty() -> Self {
        Self {
            stored: RefCell::new(Stored {
                version: CURRENT_VERSION,
                ..Stored::default()
            }),
        }
    }

    /// Reads a blob written by [`GroupState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        let stored: Stored = serde_json::from_slice(bytes).map_err(StateError::Malformed)?;
        if stored.version != CURRENT_VERSION {
            return Err(StateError::Version {
                found: stored.version,
            });
        }
        Ok(Self {
            stored: RefCell::new(stored),
        })
    }

    /// The blob to store.
    pub fn to_bytes(&self) -> Result<Vec<u8>, StateError> {
        serde_json::to_vec(&*self.stored.borrow()).map_err(StateError::Value)
    }

    /// Records `group_id` as this state's group, or checks that it is.
    fn claim<K: Key<CURRENT_VERSION>>(&self, group_id: &K) -> Result<(), StateError> {
        let id = to_value(group_id)?;
        let mut stored = self.stored.borrow_mut();
        match &stored.group_id {
            Some(ours) if *ours != id => Err(StateError::OtherGroup),
            Some(_) => Ok(()),
            None => {
                stored.group_id = Some(id);
                Ok(())
            }
        }
    }

    /// Whether `group_id` is this state's group. Reads for any other group
    /// find nothing, as they would in a store holding many groups.
    fn holds<K: Key<CURRENT_VERSION>>(&self, group_id: &K) -> Result<bool, StateError> {
        let id = to_value(group_id)?;
        Ok(self.stored.borrow().group_id.as_ref() == Some(&id))
    }

    fn write<K: Key<CURRENT_VERSION>, V: Entity<CURRENT_VERSION>>(
        &self,
        group_id: &K,
        name: &str,
        value: &V,
    ) -> Result<(), StateError> {
        self.claim(group_id)?;
        let value = to_value(value)?;
        self.stored
            .borrow_mut()
            .values
            .insert(name.to_owned(), value);
        Ok(())
    }

    fn read<K: Key<CURRENT_VERSION>, V: Entity<CURRENT_VERSION>>(
        &self,
        group_id: &K,
        name: &str,
    ) -> Result<Option<V>, StateError> {
        if !self.holds(group_id)? {
            return Ok(None);
        }
        let value = self.stored.borrow().values.get(name).cloned();
        value.map(from_value).transpose()
    }

    fn delete<K: Key<CURRENT_VERSION>>(&self, group_id: &K, name: &str) -> Result<(), StateError> {
        if self.holds(group_id)? {
            self.stored.borrow_mut().values.remove(name);
        }
        Ok(())
    }
}

fn to_value<T: Serialize>(value: &T) -> Result<Value, StateError> {
    serde_json::to_value(value).map_err(StateError::Value)
}

fn from_value<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, StateError> {
    serde_json::from_value(value).map_err(StateError::Value)
}

impl PublicStorageProvider<CURRENT_VERSION> for GroupState {
    type PublicError = StateError;

    fn write_tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        tree: &TreeSync,
    ) -> Result<(), StateError> {
        self.write(group_id, TREE, tree)
    }

    fn write_interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        interim_transcript_hash: &InterimTranscriptHash,
    ) -> Result<(), StateError> {
        self.write(group_id, INTERIM_TRANSCRIPT_HASH, interim_transcript_hash)
    }

    fn write_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_context: &GroupContext,
    ) -> Result<(), StateError> {
        self.write(group_id, CONTEXT, group_context)
    }

    fn write_confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        confirmation_tag: &ConfirmationTag,
    ) -> Result<(), StateError> {
        self.write(group_id, CONFIRMATION_TAG, confirmation_tag)
    }

    fn queue_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
        proposal: &QueuedProposal,
    ) -> Result<(), StateError> {
        self.claim(group_id)?;
        let reference = to_value(proposal_ref)?;
        let proposal = to_value(proposal)?;
        let mut stored = self.stored.borrow_mut();
        // A proposal queued twice is one proposal (its reference is its hash).
        match stored.proposals.iter_mut().find(|(r, _)| *r == reference) {
            Some(entry) => entry.1 = proposal,
            None => stored.proposals.push((reference, proposal)),
        }
        Ok(())
    }

    fn queued_proposals<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<(ProposalRef, QueuedProposal)>, StateError> {
        if !self.holds(group_id)? {
            return Ok(Vec::new());
        }
        let proposals = self.stored.borrow().proposals.clone();
        proposals
            .into_iter()
            .map(|(reference, proposal)| Ok((from_value(reference)?, from_value(proposal)?)))
            .collect()
    }

    fn tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<TreeSync>, StateError> {
        self.read(group_id, TREE)
    }

    fn group_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupContext>, StateError> {
        self.read(group_id, CONTEXT)
    }

    fn interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<InterimTranscriptHash>, StateError> {
        self.read(group_id, INTERIM_TRANSCRIPT_HASH)
    }

    fn confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ConfirmationTag>, StateError> {
        self.read(group_id, CONFIRMATION_TAG)
    }

    fn delete_tree<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StateError> {
        self.delete(group_id, TREE)
    }

    fn delete_confirmation_tag<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StateError> {
        self.delete(group_id, CONFIRMATION_TAG)
    }

    fn delete_context<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StateError> {
        self.delete(group_id, CONTEXT)
    }

    fn delete_interim_transcript_hash<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StateError> {
        self.delete(group_id, INTERIM_TRANSCRIPT_HASH)
    }

    fn remove_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
    ) -> Result<(), StateError> {
        if self.holds(group_id)? {
            let reference = to_value(proposal_ref)?;
            self.stored
                .borrow_mut()
                .proposals
                .retain(|(r, _)| *r != reference);
        }
        Ok(())
    }

    fn clear_proposal_queue<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StateError> {
        if self.holds(group_id)? {
            self.stored.borrow_mut().proposals.clear();
        }
        Ok(())
    }
}
