//! Hand-written support code for the generated lexicon modules.
//!
//! Generated code refers to everything through this module's flat namespace
//! (`crate::runtime::Did`, `crate::runtime::Validate`,
//! `crate::runtime::check::max_length`, `crate::runtime::serde_json`), so the
//! files below can be reorganised without touching the generator.
//!
//! | module | lexicon concept |
//! |---|---|
//! | [`formats`] | `string` formats: did, handle, nsid, at-uri, ... |
//! | [`data`] | the data model: untyped values in JSON and DAG-CBOR |
//! | [`bytes`], [`cid_link`], [`blob`], [`unknown`] | `bytes`, `cid-link`, `blob`, `unknown`, undeclared fields |
//! | [`integer`] | `integer` fields (integral floats accepted) |
//! | [`nullable`] | `nullable` fields and the `null` type |
//! | [`union`] | `union` (`$type`-tagged objects) |
//! | [`validate`] | constraints (`maxLength`, `minimum`, `accept`, ...) |
//! | [`record`], [`permission`], [`body`] | record keys, permission sets, XRPC bodies and errors |
//! | [`xrpc`] | the XRPC server and client runtime the generated traits, routers and clients call |

pub mod blob;
pub mod body;
pub mod bytes;
pub mod cid_link;
pub mod data;
pub mod formats;
pub mod integer;
pub mod nullable;
pub mod permission;
pub mod record;
pub mod union;
pub mod unknown;
pub mod validate;
pub mod xrpc;

mod single_key;
mod text;

pub use blob::Blob;
pub use body::{DeclaredError, RawBody};
pub use bytes::Bytes;
pub use cid_link::CidLink;
pub use formats::{
    AtIdentifier, AtUri, Cid, Datetime, Did, FormatError, Handle, Language, Nsid, RecordKey, Tid,
    Uri, check_format,
};
pub use nullable::{Null, TriState, optional_not_null, required_nullable};
pub use permission::Permission;
pub use record::{Record, RecordKeyType, RecordType};
pub use union::{UnionObject, serialize_typed};
pub use unknown::{Extra, Unknown};
pub use validate::{ResultExt, Validate, ValidationError, check};

/// Re-exported so generated code can name serde without its own dependency.
pub use serde;
/// Re-exported so generated code can name serde_json without its own dependency.
pub use serde_json;
