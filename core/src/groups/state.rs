//! The public state of one MLS group: an OpenMLS `PublicStorageProvider`
//! that keeps what `PublicGroup` writes in memory, serialised with postcard
//! (compact binary serde), and stores it in two parts so that a commit
//! rewrites only what it changed:
//!
//! - the head: every value but the tree's nodes (group context, transcript
//!   hash, confirmation tag, queued proposals, the tree's shape and hash),
//!   a few hundred bytes, one column;
//! - the tree's nodes, one row each, keyed by their index in the array
//!   representation of the tree (leaf `i` is `2i`, parent `j` is `2j + 1`);
//!   blank nodes have no row. A commit changes a path (about `log2(n)`
//!   nodes) and the leaves it adds or removes, so it writes those rows only.
//!
//! Heads written before this layout (JSON, bytes as arrays of numbers, the
//! whole tree inline) still load ([`legacy`]); the next save writes them in
//! the new layout.

mod legacy;
mod tree;

use std::cell::RefCell;
use std::collections::BTreeMap;

use openmls_traits::public_storage::PublicStorageProvider;
use openmls_traits::storage::{CURRENT_VERSION, Entity, Key, traits};
use serde::{Deserialize, Serialize};

use tree::TreeFrame;

/// Why stored state cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the group state head is not in a known format")]
    UnknownFormat,
    #[error("the group state does not decode: {0}")]
    Malformed(#[source] postcard::Error),
    #[error("the legacy (JSON) group state does not decode: {0}")]
    MalformedLegacy(#[source] serde_json::Error),
    #[error(
        "the group state was written with storage version {found}; this build reads {CURRENT_VERSION}"
    )]
    Version { found: u16 },
    #[error("a value of the group state does not (de)serialise: {0}")]
    Value(#[source] postcard::Error),
    #[error("the stored tree is inconsistent: {0}")]
    Tree(String),
    #[error("the group state holds another group")]
    OtherGroup,
}

/// The first bytes of a head in this layout (a legacy JSON head starts
/// with `{`).
const MAGIC: &[u8] = b"CBGS\x01";

/// A group's state as the database holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// The head (see the module documentation).
    pub head: Vec<u8>,
    /// The tree's non-blank nodes: (node index, node).
    pub nodes: Vec<(i32, Vec<u8>)>,
}

/// What a save changes in the stored state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateWrite {
    /// The new head (always rewritten: it is small).
    pub head: Vec<u8>,
    /// Nodes that are new or changed: (node index, node).
    pub nodes: Vec<(i32, Vec<u8>)>,
    /// Nodes that became blank (or fell off a truncated tree).
    pub blanked: Vec<i32>,
}

impl StateWrite {
    /// The stored state after this write applies to `before`.
    pub fn applied_to(&self, before: &StoredState) -> StoredState {
        let mut nodes: BTreeMap<i32, Vec<u8>> = before.nodes.iter().cloned().collect();
        for index in &self.blanked {
            nodes.remove(index);
        }
        nodes.extend(self.nodes.iter().cloned());
        StoredState {
            head: self.head.clone(),
            nodes: nodes.into_iter().collect(),
        }
    }
}

/// Every value but the tree's nodes, each postcard-encoded.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Head {
    /// The openmls storage version the values were written with: OpenMLS
    /// changes its stored types between releases, and state written by
    /// another version must fail loudly rather than half-load.
    version: u16,
    /// The group's id (as OpenMLS serialises a `GroupId`), set by the first
    /// write.
    group_id: Option<Vec<u8>>,
    context: Option<Vec<u8>>,
    interim_transcript_hash: Option<Vec<u8>>,
    confirmation_tag: Option<Vec<u8>>,
    /// Queued proposals in arrival order, as (ProposalRef, QueuedProposal).
    proposals: Vec<(Vec<u8>, Vec<u8>)>,
    /// The tree without its nodes; `None` when there is no tree.
    tree: Option<TreeFrame>,
}

/// The single values of the head, by what OpenMLS calls them.
#[derive(Debug, Clone, Copy)]
enum Value {
    Context,
    InterimTranscriptHash,
    ConfirmationTag,
}

impl Head {
    fn value_mut(&mut self, which: Value) -> &mut Option<Vec<u8>> {
        match which {
            Value::Context => &mut self.context,
            Value::InterimTranscriptHash => &mut self.interim_transcript_hash,
            Value::ConfirmationTag => &mut self.confirmation_tag,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    head: Head,
    /// The tree's non-blank nodes as last loaded or saved.
    nodes: BTreeMap<u32, Vec<u8>>,
    /// The whole tree as OpenMLS last wrote it, not yet split into nodes:
    /// `Some(None)` if it was deleted.
    written_tree: Option<Option<Vec<u8>>>,
}

/// One group's public state. OpenMLS's storage traits take `&self`, so the
/// contents sit in a `RefCell`.
#[derive(Debug, Default)]
pub struct GroupState {
    inner: RefCell<Inner>,
}

impl GroupState {
    /// An empty state, for bootstrapping a group into.
    pub fn empty() -> Self {
        let state = Self::default();
        state.inner.borrow_mut().head.version = CURRENT_VERSION;
        state
    }

    /// Reads stored state: a head in this layout with its nodes, or a legacy
    /// JSON head (which has no node rows).
    pub fn load(stored: &StoredState) -> Result<Self, StateError> {
        let (head, written_tree) = match stored.head.strip_prefix(MAGIC) {
            Some(encoded) => {
                let head: Head = postcard::from_bytes(encoded).map_err(StateError::Malformed)?;
                (head, None)
            }
            None if stored.head.first() == Some(&b'{') => {
                let (head, tree) = legacy::convert(&stored.head)?;
                (head, Some(tree))
            }
            None => return Err(StateError::UnknownFormat),
        };
        if head.version != CURRENT_VERSION {
            return Err(StateError::Version {
                found: head.version,
            });
        }
        let mut nodes = BTreeMap::new();
        for (index, node) in &stored.nodes {
            let index = u32::try_from(*index)
                .map_err(|_| StateError::Tree(format!("node index {index}")))?;
            nodes.insert(index, node.clone());
        }
        Ok(Self {
            inner: RefCell::new(Inner {
                head,
                nodes,
                written_tree,
            }),
        })
    }

    /// Brings the stored state up to date with what OpenMLS wrote since the
    /// last load or save: returns the changes to store, and from now on
    /// compares with them.
    pub fn save(&self) -> Result<StateWrite, StateError> {
        let mut inner = self.inner.borrow_mut();
        let mut write = StateWrite::default();
        if let Some(tree) = inner.written_tree.take() {
            let (frame, nodes) = match tree {
                Some(bytes) => {
                    let (frame, nodes) = tree::split(&bytes)?;
                    (Some(frame), nodes)
                }
                None => (None, BTreeMap::new()),
            };
            for (index, node) in &nodes {
                if inner.nodes.get(index) != Some(node) {
                    write.nodes.push((node_row(*index)?, node.clone()));
                }
            }
            for index in inner.nodes.keys() {
                if !nodes.contains_key(index) {
                    write.blanked.push(node_row(*index)?);
                }
            }
            inner.head.tree = frame;
            inner.nodes = nodes;
        }
        write.head = encode_head(&inner.head)?;
        Ok(write)
    }

    /// The whole stored state (after a save): what a new group's rows are.
    pub fn snapshot(&self) -> Result<StoredState, StateError> {
        let write = self.save()?;
        let nodes = self
            .inner
            .borrow()
            .nodes
            .iter()
            .map(|(index, node)| Ok((node_row(*index)?, node.clone())))
            .collect::<Result<_, StateError>>()?;
        Ok(StoredState {
            head: write.head,
            nodes,
        })
    }

    /// About how many bytes this state holds (for a cache's budget).
    pub fn approximate_size(&self) -> usize {
        let inner = self.inner.borrow();
        inner.nodes.values().map(Vec::len).sum::<usize>()
            + inner
                .head
                .proposals
                .iter()
                .map(|(r, p)| r.len() + p.len())
                .sum::<usize>()
            + 1024
    }

    /// Records `group_id` as this state's group, or checks that it is.
    fn claim<K: Key<CURRENT_VERSION>>(&self, group_id: &K) -> Result<(), StateError> {
        let id = encode(group_id)?;
        let mut inner = self.inner.borrow_mut();
        match &inner.head.group_id {
            Some(ours) if *ours != id => Err(StateError::OtherGroup),
            Some(_) => Ok(()),
            None => {
                inner.head.group_id = Some(id);
                Ok(())
            }
        }
    }

    /// Whether `group_id` is this state's group. Reads for any other group
    /// find nothing, as they would in a store holding many groups.
    fn holds<K: Key<CURRENT_VERSION>>(&self, group_id: &K) -> Result<bool, StateError> {
        let id = encode(group_id)?;
        Ok(self.inner.borrow().head.group_id.as_ref() == Some(&id))
    }

    fn write<K: Key<CURRENT_VERSION>, V: Entity<CURRENT_VERSION>>(
        &self,
        group_id: &K,
        which: Value,
        value: &V,
    ) -> Result<(), StateError> {
        self.claim(group_id)?;
        let value = encode(value)?;
        *self.inner.borrow_mut().head.value_mut(which) = Some(value);
        Ok(())
    }

    fn read<K: Key<CURRENT_VERSION>, V: Entity<CURRENT_VERSION>>(
        &self,
        group_id: &K,
        which: Value,
    ) -> Result<Option<V>, StateError> {
        if !self.holds(group_id)? {
            return Ok(None);
        }
        let mut inner = self.inner.borrow_mut();
        inner
            .head
            .value_mut(which)
            .as_deref()
            .map(decode)
            .transpose()
    }

    fn delete<K: Key<CURRENT_VERSION>>(
        &self,
        group_id: &K,
        which: Value,
    ) -> Result<(), StateError> {
        if self.holds(group_id)? {
            *self.inner.borrow_mut().head.value_mut(which) = None;
        }
        Ok(())
    }
}

fn encode_head(head: &Head) -> Result<Vec<u8>, StateError> {
    postcard::to_extend(head, MAGIC.to_vec()).map_err(StateError::Value)
}

fn node_row(index: u32) -> Result<i32, StateError> {
    i32::try_from(index).map_err(|_| StateError::Tree(format!("node index {index}")))
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StateError> {
    postcard::to_allocvec(value).map_err(StateError::Value)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StateError> {
    postcard::from_bytes(bytes).map_err(StateError::Value)
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
        self.claim(group_id)?;
        let tree = encode(tree)?;
        self.inner.borrow_mut().written_tree = Some(Some(tree));
        Ok(())
    }

    fn write_interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        interim_transcript_hash: &InterimTranscriptHash,
    ) -> Result<(), StateError> {
        self.write(
            group_id,
            Value::InterimTranscriptHash,
            interim_transcript_hash,
        )
    }

    fn write_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_context: &GroupContext,
    ) -> Result<(), StateError> {
        self.write(group_id, Value::Context, group_context)
    }

    fn write_confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        confirmation_tag: &ConfirmationTag,
    ) -> Result<(), StateError> {
        self.write(group_id, Value::ConfirmationTag, confirmation_tag)
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
        let reference = encode(proposal_ref)?;
        let proposal = encode(proposal)?;
        let mut inner = self.inner.borrow_mut();
        let proposals = &mut inner.head.proposals;
        // A proposal queued twice is one proposal (its reference is its hash).
        match proposals.iter_mut().find(|(r, _)| *r == reference) {
            Some(entry) => entry.1 = proposal,
            None => proposals.push((reference, proposal)),
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
        self.inner
            .borrow()
            .head
            .proposals
            .iter()
            .map(|(reference, proposal)| Ok((decode(reference)?, decode(proposal)?)))
            .collect()
    }

    fn tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<TreeSync>, StateError> {
        if !self.holds(group_id)? {
            return Ok(None);
        }
        let inner = self.inner.borrow();
        match (&inner.written_tree, &inner.head.tree) {
            (Some(written), _) => written.as_deref().map(decode).transpose(),
            (None, Some(frame)) => decode(&tree::assemble(frame, &inner.nodes)?).map(Some),
            (None, None) => Ok(None),
        }
    }

    fn group_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupContext>, StateError> {
        self.read(group_id, Value::Context)
    }

    fn interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<InterimTranscriptHash>, StateError> {
        self.read(group_id, Value::InterimTranscriptHash)
    }

    fn confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ConfirmationTag>, StateError> {
        self.read(group_id, Value::ConfirmationTag)
    }

    fn delete_tree<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StateError> {
        if self.holds(group_id)? {
            self.inner.borrow_mut().written_tree = Some(None);
        }
        Ok(())
    }

    fn delete_confirmation_tag<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StateError> {
        self.delete(group_id, Value::ConfirmationTag)
    }

    fn delete_context<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StateError> {
        self.delete(group_id, Value::Context)
    }

    fn delete_interim_transcript_hash<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StateError> {
        self.delete(group_id, Value::InterimTranscriptHash)
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
            let reference = encode(proposal_ref)?;
            self.inner
                .borrow_mut()
                .head
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
            self.inner.borrow_mut().head.proposals.clear();
        }
        Ok(())
    }
}
