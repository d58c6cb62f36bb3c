//! Group state written before the split layout: one JSON document holding
//! every value, bytes as arrays of decimal numbers. It still loads: each
//! value is read as its OpenMLS type and re-encoded, and the next save
//! writes the group in the new layout (all its nodes, as there are no node
//! rows yet).

use std::collections::BTreeMap;

use openmls::ciphersuite::hash_ref::ProposalRef;
use openmls::group::{GroupContext, GroupId, InterimTranscriptHash, QueuedProposal};
use openmls::messages::ConfirmationTag;
use openmls::treesync::TreeSync;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Head, StateError, encode};

/// The JSON document.
#[derive(Deserialize)]
struct Stored {
    version: u16,
    group_id: Option<Value>,
    /// "tree", "context", "interim_transcript_hash", "confirmation_tag".
    values: BTreeMap<String, Value>,
    proposals: Vec<(Value, Value)>,
}

/// The head and the whole tree (postcard) of a legacy JSON state.
pub(super) fn convert(json: &[u8]) -> Result<(Head, Option<Vec<u8>>), StateError> {
    let mut stored: Stored = serde_json::from_slice(json).map_err(StateError::MalformedLegacy)?;
    let mut value = |name: &str| stored.values.remove(name);
    let tree = value("tree").map(recode::<TreeSync>).transpose()?;
    let head = Head {
        version: stored.version,
        group_id: stored.group_id.map(recode::<GroupId>).transpose()?,
        context: value("context").map(recode::<GroupContext>).transpose()?,
        interim_transcript_hash: value("interim_transcript_hash")
            .map(recode::<InterimTranscriptHash>)
            .transpose()?,
        confirmation_tag: value("confirmation_tag")
            .map(recode::<ConfirmationTag>)
            .transpose()?,
        proposals: stored
            .proposals
            .into_iter()
            .map(|(reference, proposal)| {
                Ok((
                    recode::<ProposalRef>(reference)?,
                    recode::<QueuedProposal>(proposal)?,
                ))
            })
            .collect::<Result<_, StateError>>()?,
        tree: None,
    };
    Ok((head, tree))
}

/// A JSON value of type `T`, in postcard.
fn recode<T: DeserializeOwned + serde::Serialize>(value: Value) -> Result<Vec<u8>, StateError> {
    let typed: T = serde_json::from_value(value).map_err(StateError::MalformedLegacy)?;
    encode(&typed)
}
