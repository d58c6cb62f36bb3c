//! AT Protocol service auth: who is calling, proven by a signed token.
//!
//! A caller sends `Authorization: Bearer <JWT>`, a short-lived token signed
//! with the `#atproto` key of the caller's DID and bound to this service
//! (`aud`) and to one method (`lxm`). [`Verifier::verify`] checks it and
//! yields the [`Caller`]; the XRPC `authenticate` hook calls it with the
//! route's NSID, and [`crate::error`] turns an [`AuthError`] into a 401.
//!
//! | module | job |
//! |---|---|
//! | [`jwt`] | split, decode and sign the compact JWT form |
//! | [`keys`] | ES256K / ES256 keys, Multikey encoding, low-S signatures |
//! | [`did`] | DID documents and the resolvers that fetch them |
//! | [`replay`] | remembers each `jti` until its token expires |
//! | [`verifier`] | the checks, in order, tying the others together |
//! | [`local`] | identities and tokens for local runs and tests |
//!
//! There is deliberately no way to skip verification: local runs use real
//! keys and a [`DirectoryResolver`] of DID documents instead.

pub mod did;
pub mod jwt;
pub mod keys;
pub mod local;
pub mod replay;
pub mod verifier;

#[cfg(test)]
mod testdir;

pub use did::{DidDocument, DidResolver, DirectoryResolver, NetworkResolver, Resolver};
pub use keys::{Algorithm, PrivateKey, PublicKey};
pub use local::{LocalIdentity, LocalIdentityError, create_identity, load_identity, mint_token};
pub use replay::{MemoryReplayStore, PgReplayStore, ReplayStore};
pub use verifier::{Caller, Verifier, claimed_issuer};

/// Why a request's credentials were not accepted.
///
/// Every variant but [`AuthError::Missing`] and [`AuthError::Internal`] is a
/// problem with the token the caller sent; the messages are written for that
/// caller and never contain server internals (the `String`s of
/// [`AuthError::UnresolvableDid`] and [`AuthError::Internal`] may, which is
/// why [`crate::error`] does not send them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header at all.
    #[error("this method requires a service-auth bearer token")]
    Missing,
    /// Not a bearer token, not a JWT, or claims of the wrong shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is not ES256K or ES256, or does not match the issuer's key type.
    #[error(
        "unsupported token algorithm: only ES256K and ES256 matching the issuer's key are accepted"
    )]
    UnsupportedAlgorithm,
    /// The signature does not verify with the issuer's signing key (or is a
    /// high-S signature, which atproto forbids).
    #[error("token signature does not match the issuer's signing key")]
    BadSignature,
    /// `aud` is not this service's DID.
    #[error("token audience is not this service")]
    WrongAudience,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token was issued in the future")]
    IssuedInFuture,
    /// `lxm` is missing or names another method.
    #[error("token is for method {got}, not {expected}", got = got.as_deref().unwrap_or("(none)"))]
    WrongMethod {
        /// The NSID of the route being called.
        expected: String,
        /// The token's `lxm`, if it had one.
        got: Option<String>,
    },
    /// This token's `jti` was already used.
    #[error("token was already used")]
    Replayed,
    /// The `typ` header says this is an access, refresh or DPoP token, which
    /// must never be accepted as service auth.
    #[error("token type {0:?} is not a service-auth token")]
    ForbiddenTokenType(String),
    /// The issuer's DID document could not be fetched or is invalid. The
    /// string is for logs.
    #[error("could not resolve the issuer's DID document: {0}")]
    UnresolvableDid(String),
    /// The issuer's DID document has no usable `#atproto` Multikey.
    #[error("the issuer's DID document has no atproto signing key")]
    NoSigningKey,
    /// Our own failure (database, ...). The string is for logs.
    #[error("internal error: {0}")]
    Internal(String),
}
