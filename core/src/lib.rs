//! What the catbird-mls delivery service and its clients share, with no
//! database, no network and nothing async in it:
//!
//! - [`device`]: `did#device` identities, the MLS credential of every leaf;
//! - [`mls_crypto`]: the OpenMLS crypto provider, the supported cipher
//!   suites by lexicon name, hex ids;
//! - [`groups`]: the engine that follows a group's public state with
//!   OpenMLS `PublicGroup` and applies the service's commit policy;
//! - [`auth`]: service-auth keys (ES256K, ES256), the JWT form and DID
//!   documents.
//!
//! The service (crate `catbird-mls`) wraps these with storage and HTTP;
//! the client SDK (crate `catbird-mls-client`) with OpenMLS member state.

pub mod auth;
pub mod device;
pub mod groups;
pub mod mls_crypto;

pub use catbird_generated as generated;

/// The id of the service's entry in its DID document: a PDS forwards a
/// call carrying `atproto-proxy: <service DID>#atproto_mls` to the endpoint
/// of this entry.
pub const SERVICE_ID: &str = "#atproto_mls";

/// The type of the service's entry in its DID document.
pub const SERVICE_TYPE: &str = "AtprotoMlsService";

/// The service DID of local runs (`catbird-mls serve --profile local`), the
/// audience the client tools mint tokens for by default.
pub const LOCAL_SERVICE_DID: &str = "did:web:localhost";
