//! Service-auth primitives shared by the service and its clients: the
//! compact JWT form ([`jwt`]), ES256K / ES256 keys ([`keys`]) and DID
//! documents ([`did`]). Verifying a caller (resolving its DID, replay
//! protection) is the service's; minting tokens is the client's.

pub mod did;
pub mod jwt;
pub mod keys;

pub use did::{DidDocument, VerificationMethod};
pub use keys::{Algorithm, KeyError, PrivateKey, PublicKey};

/// Why a request's credentials were not accepted.
///
/// Every variant but [`AuthError::Missing`], [`AuthError::Unavailable`] and
/// [`AuthError::Internal`] is a
/// problem with the token the caller sent; the messages are written for that
/// caller and never contain server internals (the `String`s of
/// [`AuthError::UnresolvableDid`] and [`AuthError::Internal`] may, which is
/// why the service's error mapping does not send them).
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
    /// The service cannot check the token now (its database is
    /// unreachable); a retry may succeed. The string is for logs.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Our own failure (database, ...). The string is for logs.
    #[error("internal error: {0}")]
    Internal(String),
}
