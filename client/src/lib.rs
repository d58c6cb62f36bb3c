//! The Rust SDK of the catbird-mls delivery service: a real OpenMLS client
//! over the generated XRPC client.
//!
//! - [`Device`] is one device of a user: its own signature key, its own
//!   OpenMLS state (behind OpenMLS's storage trait, in memory by default),
//!   and a generated [`Client`](catbird_generated::lexicons::blue::catbird::mls::Client)
//!   acting as its user. Its operations follow the protocol as an app
//!   would: commits are applied locally only once the service accepted
//!   them, the log is read in seq order, a lost device rejoins by external
//!   commit, KeyPackages are replenished when the service advises it, and
//!   [`realtime`] follows the device's event stream with the resume
//!   contract built in.
//! - [`Installation`] is the synchronous OpenMLS layer under a device (key,
//!   state, groups, commits, joins), for apps that drive the protocol
//!   themselves and for tests that build what a device never sends.
//! - [`Access`] says how a user's client reaches the service: straight,
//!   with tokens minted from a local identity, or through the user's PDS
//!   ([`PdsSession`]: a login), which forwards the calls (`atproto-proxy`)
//!   or issues their tokens (getServiceAuth). [`Device::with_access`]
//!   builds a device on it; its event stream works either way.
//! - [`identity`] makes local identities (a key and a DID document on disk)
//!   and mints service-auth tokens; [`keypackage`] makes throwaway
//!   KeyPackages; [`story`] is the demo conversation.
//!
//! The `catbird-mls-client` binary puts these behind a small CLI.

mod access;
mod device;
mod error;
pub mod identity;
mod installation;
pub mod keypackage;
pub mod mls;
pub mod pds;
pub mod realtime;
pub mod story;

pub use access::{Access, PROXY_HEADER, PdsMode, Service, StreamAccess};
pub use device::{Change, Device, LocalMember, Received, external_commit};
pub use error::DeviceError;
pub use identity::{
    LocalIdentity, LocalIdentityError, create_identity, load_identity, mint_token, service_client,
};
pub use installation::{Installation, Provider, StagedMessages, staged_messages, to_bytes};
pub use mls::SUITE;
pub use pds::{PdsError, PdsSession};
pub use realtime::{ConvoEvents, Event};
