//! AT Protocol service auth: who is calling, proven by a signed token.
//!
//! A caller sends `Authorization: Bearer <JWT>`, a short-lived token signed
//! with the `#atproto` key of the caller's DID and bound to this service
//! (`aud`) and to one method (`lxm`). [`Verifier::verify`] checks it and
//! yields the [`Caller`]; the XRPC `authenticate` hook calls it with the
//! route's NSID, and the service's error mapping turns an [`AuthError`] into
//! a 401.
//!
//! | module | job |
//! |---|---|
//! | [`catbird_mls_core::auth`] | JWT form, ES256K / ES256 keys, DID documents |
//! | [`resolver`] | where DID documents come from: a directory or the network |
//! | [`replay`] | remembers each `jti` until its token expires |
//! | [`verifier`] | the checks, in order, tying the others together |
//!
//! There is deliberately no way to skip verification: local runs use real
//! keys and a [`DirectoryResolver`] of DID documents instead.

pub mod replay;
pub mod resolver;
pub mod verifier;

pub use catbird_mls_core::auth::{AuthError, DidDocument, jwt};
pub use replay::{MemoryReplayStore, PgReplayStore, ReplayStore};
pub use resolver::{DidResolver, DirectoryResolver, NetworkResolver, Resolver};
pub use verifier::{Caller, Verifier, claimed_issuer};

/// A database failure while checking a token: 503 material when the
/// database is unreachable (the caller may retry), else our own failure.
pub fn storage_failure(what: &str, error: &sqlx::Error) -> AuthError {
    let cause = format!("{what}: {error}");
    if crate::error::unavailable(error) {
        AuthError::Unavailable(cause)
    } else {
        AuthError::Internal(cause)
    }
}
