//! A `TreeSync` split into its nodes and put back together, in postcard.
//!
//! OpenMLS serialises a `TreeSync` as `{ tree: { leaf_nodes, parent_nodes,
//! default_leaf, default_parent }, tree_hash }`, every node a
//! `{ node: Option<LeafNode | ParentNode> }`. Postcard (whose wire format
//! is a stable specification) writes a struct as its fields one after the
//! other and a sequence as a varint length and its elements, so the tree's
//! encoding is the concatenation of its nodes' encodings with two lengths
//! and a tail: splitting cuts it at node boundaries, assembling
//! concatenates. `split_then_assemble_is_identity` checks this on a real
//! tree.

use std::collections::BTreeMap;

use openmls::prelude::{LeafNode, ParentNode};
use serde::{Deserialize, Serialize};

use super::StateError;

/// The tree without its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TreeFrame {
    leaves: u32,
    parents: u32,
    /// The encodings of the two default (blank) nodes and of the tree hash,
    /// as OpenMLS wrote them.
    default_leaf: Vec<u8>,
    default_parent: Vec<u8>,
    tree_hash: Vec<u8>,
}

/// A node slot as OpenMLS serialises it (`TreeSyncLeafNode` and
/// `TreeSyncParentNode` are crate-private there).
#[derive(Deserialize)]
struct Slot<N> {
    node: Option<N>,
}

/// The encoding of a blank slot (`node: None`).
const BLANK: &[u8] = &[0];

/// Cuts a postcard-encoded `TreeSync` into its frame and its non-blank
/// nodes by array index (leaf `i` at `2i`, parent `j` at `2j + 1`).
pub(super) fn split(bytes: &[u8]) -> Result<(TreeFrame, BTreeMap<u32, Vec<u8>>), StateError> {
    let mut nodes = BTreeMap::new();
    let (leaves, rest) = take::<usize>(bytes)?;
    let mut rest = rest;
    for leaf in 0..leaves {
        let (raw, slot, after) = take_raw::<Slot<LeafNode>>(rest)?;
        if slot.node.is_some() {
            nodes.insert(index(2 * leaf)?, raw.to_vec());
        }
        rest = after;
    }
    let (parents, after) = take::<usize>(rest)?;
    rest = after;
    for parent in 0..parents {
        let (raw, slot, after) = take_raw::<Slot<ParentNode>>(rest)?;
        if slot.node.is_some() {
            nodes.insert(index(2 * parent + 1)?, raw.to_vec());
        }
        rest = after;
    }
    let (default_leaf, _, after) = take_raw::<Slot<LeafNode>>(rest)?;
    let (default_parent, _, tree_hash) = take_raw::<Slot<ParentNode>>(after)?;
    // The tree hash is the last field: the rest must be exactly one byte
    // string.
    let (_, trailing) = take::<Vec<u8>>(tree_hash)?;
    if !trailing.is_empty() {
        return Err(StateError::Tree(
            "bytes after the tree hash: OpenMLS's TreeSync has changed shape".into(),
        ));
    }
    let frame = TreeFrame {
        leaves: index(leaves)?,
        parents: index(parents)?,
        default_leaf: default_leaf.to_vec(),
        default_parent: default_parent.to_vec(),
        tree_hash: tree_hash.to_vec(),
    };
    Ok((frame, nodes))
}

/// The postcard encoding of the `TreeSync` made of `frame` and `nodes`.
pub(super) fn assemble(
    frame: &TreeFrame,
    nodes: &BTreeMap<u32, Vec<u8>>,
) -> Result<Vec<u8>, StateError> {
    let size = nodes.values().map(Vec::len).sum::<usize>()
        + (frame.leaves + frame.parents) as usize
        + frame.tree_hash.len()
        + 32;
    let mut bytes = Vec::with_capacity(size);
    bytes = postcard::to_extend(&(frame.leaves as usize), bytes).map_err(StateError::Value)?;
    for leaf in 0..frame.leaves {
        bytes.extend_from_slice(nodes.get(&(2 * leaf)).map_or(BLANK, Vec::as_slice));
    }
    bytes = postcard::to_extend(&(frame.parents as usize), bytes).map_err(StateError::Value)?;
    for parent in 0..frame.parents {
        bytes.extend_from_slice(nodes.get(&(2 * parent + 1)).map_or(BLANK, Vec::as_slice));
    }
    bytes.extend_from_slice(&frame.default_leaf);
    bytes.extend_from_slice(&frame.default_parent);
    bytes.extend_from_slice(&frame.tree_hash);
    Ok(bytes)
}

fn take<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<(T, &'a [u8]), StateError> {
    postcard::take_from_bytes(bytes).map_err(StateError::Malformed)
}

/// One value and its encoding.
fn take_raw<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<(&'a [u8], T, &'a [u8]), StateError> {
    let (value, rest) = take::<T>(bytes)?;
    Ok((&bytes[..bytes.len() - rest.len()], value, rest))
}

fn index(i: usize) -> Result<u32, StateError> {
    u32::try_from(i).map_err(|_| StateError::Tree(format!("node index {i}")))
}
