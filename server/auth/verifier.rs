//! The service-auth checks, in the order that keeps them cheap and safe:
//!
//! 1. header present, `Bearer`, a well-formed JWT with an allowed `alg` and
//!    `typ` (no I/O);
//! 2. claims: `iss` is a DID, `aud` is us, `exp`/`nbf`/`iat` within the
//!    clock-skew allowance, `lxm` is this route, `jti` present (no I/O);
//! 3. the issuer's DID document gives the `#atproto` key (a labeler's
//!    `#atproto_label` for `iss` `did#atproto_labeler`), of the type `alg`
//!    names, and it verifies the signature (network or disk);
//! 4. the `jti` has not been used (database) — last, so only authentic
//!    tokens are recorded.

use std::net::IpAddr;
use std::time::Duration;

use catbird_generated::runtime::Did;
use chrono::{DateTime, Utc};

use super::AuthError;
use super::replay::ReplayStore;
use super::resolver::DidResolver;
use catbird_mls_core::auth::DidDocument;
use catbird_mls_core::auth::jwt::{self, Claims, UnverifiedToken};

/// How far our clock and the issuer's may disagree.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Who made an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The issuer's DID (without any `#service` fragment).
    pub did: Did,
    /// The `iss` claim as sent, fragment included.
    pub issuer: String,
    /// The client's address, when the service knows it (the verifier does
    /// not: the service's auth hook fills it in).
    pub client_ip: Option<IpAddr>,
}

/// The issuer a bearer token claims, unverified: for the audit log of
/// failed authentications, never for access decisions.
pub fn claimed_issuer(authorization: Option<&str>) -> Option<String> {
    let token = bearer_token(authorization?).ok()?;
    Some(jwt::parse(token).ok()?.claims.iss)
}

/// Verifies service-auth tokens for one service DID.
#[derive(Debug)]
pub struct Verifier<R, S> {
    service_did: Did,
    resolver: R,
    replay: S,
}

impl<R: DidResolver, S: ReplayStore> Verifier<R, S> {
    /// A verifier accepting tokens whose `aud` is `service_did`.
    pub fn new(service_did: Did, resolver: R, replay: S) -> Self {
        Self {
            service_did,
            resolver,
            replay,
        }
    }

    /// This service's DID (the required `aud`).
    pub fn service_did(&self) -> &Did {
        &self.service_did
    }

    /// The resolver, e.g. to share its cache.
    pub fn resolver(&self) -> &R {
        &self.resolver
    }

    /// Checks the `Authorization` header value of a request to method `nsid`.
    pub async fn verify(
        &self,
        nsid: &str,
        authorization: Option<&str>,
    ) -> Result<Caller, AuthError> {
        let result = self.verify_inner(nsid, authorization).await;
        match &result {
            Ok(caller) => tracing::debug!(did = %caller.did, nsid, "service auth accepted"),
            // Internal errors are logged where they become a 500 (the error mapping);
            // rejections at debug, so a flood of bad tokens cannot flood the logs.
            Err(error) => tracing::debug!(%error, nsid, "service auth rejected"),
        }
        result
    }

    async fn verify_inner(
        &self,
        nsid: &str,
        authorization: Option<&str>,
    ) -> Result<Caller, AuthError> {
        let token = bearer_token(authorization.ok_or(AuthError::Missing)?)?;
        let token = jwt::parse(token)?;
        let claims = &token.claims;
        let (did, issuer, key_id) = parse_issuer(&claims.iss)?;
        let jti = self.check_claims(nsid, claims, Utc::now())?;

        let document = self.resolver.resolve(&did).await?;
        if let Err(error) = check_signature(&document, key_id, &token) {
            // The key may have been rotated (even to the other curve) since
            // the document was cached: look once more before rejecting.
            let fresh = self.resolver.refresh(&did).await?;
            if fresh == document {
                return Err(error);
            }
            check_signature(&fresh, key_id, &token)?;
        }

        // Remember the id until the token could no longer pass the `exp` check;
        // an `exp` within the skew of the last representable time (any key
        // holder can sign one) is remembered until that time.
        let skew = chrono::Duration::from_std(CLOCK_SKEW)
            .map_err(|_| AuthError::Internal("clock skew out of range".into()))?;
        let expires_at = timestamp(claims.exp)?
            .checked_add_signed(skew)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if !self.replay.first_use(jti, &did, expires_at).await? {
            return Err(AuthError::Replayed);
        }
        Ok(Caller {
            did,
            issuer,
            client_ip: None,
        })
    }

    /// The claim checks that need no I/O; returns the `jti`.
    fn check_claims<'c>(
        &self,
        nsid: &str,
        claims: &'c Claims,
        now: DateTime<Utc>,
    ) -> Result<&'c str, AuthError> {
        if claims.aud != self.service_did.as_str() {
            return Err(AuthError::WrongAudience);
        }
        let now = now.timestamp();
        let skew = i64::try_from(CLOCK_SKEW.as_secs()).unwrap_or(i64::MAX);
        if claims.exp.saturating_add(skew) <= now {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
            return Err(AuthError::NotYetValid);
        }
        if claims.iat.is_some_and(|iat| iat > now.saturating_add(skew)) {
            return Err(AuthError::IssuedInFuture);
        }
        if claims.lxm.as_deref() != Some(nsid) {
            return Err(AuthError::WrongMethod {
                expected: nsid.to_owned(),
                got: claims.lxm.clone(),
            });
        }
        match claims.jti.as_deref() {
            Some(jti) if !jti.is_empty() && jti.len() <= 256 && !jti.contains(char::is_control) => {
                Ok(jti)
            }
            Some(_) => Err(AuthError::Malformed(
                "jti must be 1 to 256 bytes without control characters".into(),
            )),
            None => Err(AuthError::Malformed("the jti claim is required".into())),
        }
    }
}

/// Whether `document`'s key `key_id` is of the token's algorithm and
/// verifies its signature.
fn check_signature(
    document: &DidDocument,
    key_id: &str,
    token: &UnverifiedToken<'_>,
) -> Result<(), AuthError> {
    let key = document.key(key_id)?;
    if key.algorithm() != token.algorithm {
        return Err(AuthError::UnsupportedAlgorithm);
    }
    key.verify(token.signing_input.as_bytes(), &token.signature)
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 7235).
fn bearer_token(header: &str) -> Result<&str, AuthError> {
    let (scheme, token) = header
        .split_once(' ')
        .ok_or_else(|| AuthError::Malformed("expected `Authorization: Bearer <token>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(
            "expected `Authorization: Bearer <token>`".into(),
        ));
    }
    Ok(token.trim())
}

/// The service ids an `iss` may carry after `#`, with the verification
/// method that signs for each. The AT Protocol's service-auth rules (and
/// the reference implementation) know one: a labeler, `did#atproto_labeler`,
/// signing with its `#atproto_label` key. An account signs with `#atproto`,
/// as a bare DID.
const SERVICE_IDS: &[(&str, &str)] = &[("atproto_labeler", "atproto_label")];

/// Splits `iss` into the DID, the raw value, and the id of the key that
/// must have signed: `#atproto` for a bare DID, the service's key for a
/// known service id. Any other fragment (`#atproto`, `#../../x`, empty) is
/// refused: nothing defines what it would mean.
fn parse_issuer(iss: &str) -> Result<(Did, String, &'static str), AuthError> {
    let (did, key_id) = match iss.split_once('#') {
        None => (iss, "atproto"),
        Some((did, service)) => match SERVICE_IDS.iter().find(|(id, _)| *id == service) {
            Some((_, key_id)) => (did, *key_id),
            None => {
                return Err(AuthError::Malformed(format!(
                    "iss may only carry the service id #atproto_labeler, not #{service}"
                )));
            }
        },
    };
    let did = Did::new(did).map_err(|_| AuthError::Malformed("iss is not a DID".into()))?;
    Ok((did, iss.to_owned(), key_id))
}

fn timestamp(seconds: i64) -> Result<DateTime<Utc>, AuthError> {
    DateTime::from_timestamp(seconds, 0)
        .ok_or_else(|| AuthError::Malformed("exp is out of range".into()))
}

#[cfg(test)]
mod tests;
