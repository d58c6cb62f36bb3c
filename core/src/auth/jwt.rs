//! The compact JWT form, `base64url(header).base64url(payload).base64url(sig)`,
//! restricted to what atproto service auth uses.
//!
//! Parsing only decodes: it checks the shape and the header, never trusts a
//! claim. Signature and claim checks are the verifier's job, which needs the
//! issuer's key first.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::AuthError;
use super::keys::{Algorithm, PrivateKey};

/// Longer tokens are refused before any decoding: a real service-auth token
/// is a few hundred bytes, and this bounds the work a request can cause.
pub const MAX_TOKEN_LENGTH: usize = 8 * 1024;

/// `typ` values of tokens that are not service auth: an OAuth access token,
/// a refresh token, a DPoP proof. Accepting one as service auth would let a
/// token meant for one purpose be replayed for another. Compared without
/// case and without the `application/` prefix, which `typ` may carry (RFC
/// 7515 §4.1.9: `application/at+jwt` is the same type as `at+jwt`).
const FORBIDDEN_TYPES: &[&str] = &["at+jwt", "refresh+jwt", "dpop+jwt"];

/// Whether `typ` names one of the [`FORBIDDEN_TYPES`], in any spelling.
fn is_forbidden_type(typ: &str) -> bool {
    let typ = typ.trim().to_ascii_lowercase();
    let typ = typ.strip_prefix("application/").unwrap_or(&typ);
    FORBIDDEN_TYPES.contains(&typ)
}

/// The JOSE header fields we read. Others are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `ES256K` or `ES256`.
    pub alg: String,
    /// `JWT` or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

/// The service-auth claims. Unknown claims are ignored; a claim of the
/// wrong JSON type makes the token malformed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer's DID, optionally with a `#service` fragment.
    pub iss: String,
    /// The DID of the service the token is for.
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issue time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not-before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The NSID of the one method this token may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lxm: Option<String>,
    /// A unique token id, for replay protection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// A decoded but not yet verified token.
#[derive(Debug, Clone)]
pub struct UnverifiedToken<'a> {
    /// The header's algorithm, already known to be ES256K or ES256.
    pub algorithm: Algorithm,
    /// The claims, not yet checked.
    pub claims: Claims,
    /// `header.payload` exactly as sent: the bytes the signature covers.
    pub signing_input: &'a str,
    /// The raw signature bytes.
    pub signature: Vec<u8>,
}

/// Splits and decodes `token`, checking its shape, `alg` and `typ`.
pub fn parse(token: &str) -> Result<UnverifiedToken<'_>, AuthError> {
    if token.len() > MAX_TOKEN_LENGTH {
        return Err(malformed("token is too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("a JWT has three dot-separated parts"));
    };
    let signing_input = &token[..header.len() + 1 + payload.len()];

    let header: Header = decode_json(header, "header")?;
    let algorithm = Algorithm::from_jwt_name(&header.alg).ok_or(AuthError::UnsupportedAlgorithm)?;
    if let Some(typ) = &header.typ
        && is_forbidden_type(typ)
    {
        return Err(AuthError::ForbiddenTokenType(typ.clone()));
    }
    let claims: Claims = decode_json(payload, "payload")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| malformed("the signature is not unpadded base64url"))?;
    Ok(UnverifiedToken {
        algorithm,
        claims,
        signing_input,
        signature,
    })
}

/// Encodes and signs a token with `key` (header `typ: "JWT"`, `alg` from the
/// key). For local identities and tests; the service never signs.
pub fn sign(claims: &Claims, key: &PrivateKey) -> String {
    let header = Header {
        alg: key.algorithm().jwt_name().to_owned(),
        typ: Some("JWT".to_owned()),
    };
    sign_with_header(&header, claims, key)
}

/// Like [`sign`] with any header, so tests can build the tokens a hostile
/// caller would.
pub fn sign_with_header(header: &Header, claims: &Claims, key: &PrivateKey) -> String {
    let signing_input = format!("{}.{}", encode_json(header), encode_json(claims));
    let signature = URL_SAFE_NO_PAD.encode(key.sign(signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

fn encode_json(value: &impl Serialize) -> String {
    // Serialising these plain structs to a Vec cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str, name: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| malformed(&format!("the {name} is not unpadded base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|error| malformed(&format!("the {name} is not valid: {error}")))
}

fn malformed(message: &str) -> AuthError {
    AuthError::Malformed(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: "did:plc:abc".into(),
            aud: "did:web:service.test".into(),
            exp: 2_000_000_000,
            iat: Some(1_999_999_940),
            nbf: None,
            lxm: Some("blue.catbird.mls.getConvos".into()),
            jti: Some("j1".into()),
        }
    }

    #[test]
    fn round_trips() {
        let key = PrivateKey::generate(Algorithm::Es256).unwrap();
        let token = sign(&claims(), &key);
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.algorithm, Algorithm::Es256);
        assert_eq!(parsed.claims, claims());
        key.public_key()
            .verify(parsed.signing_input.as_bytes(), &parsed.signature)
            .unwrap();
    }

    #[test]
    fn rejects_bad_shapes() {
        let key = PrivateKey::generate(Algorithm::Es256k).unwrap();
        let token = sign(&claims(), &key);
        let [header, payload, signature]: [&str; 3] =
            token.split('.').collect::<Vec<_>>().try_into().unwrap();
        for bad in [
            String::new(),
            "abc".into(),
            format!("{header}.{payload}"),
            format!("{header}.{payload}.{signature}.x"),
            format!("{header}.{payload}.{signature}="),
            format!("{header}.!!!.{signature}"),
            format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode(b"[1,2]")),
            format!(
                "{header}.{}.{signature}",
                URL_SAFE_NO_PAD.encode(br#"{"iss":"did:plc:a","aud":"x"}"#)
            ),
            format!(
                "{header}.{}.{signature}",
                URL_SAFE_NO_PAD.encode(br#"{"iss":1,"aud":"x","exp":5}"#)
            ),
            format!(
                "{}.{payload}.{signature}",
                URL_SAFE_NO_PAD.encode(b"not json")
            ),
            "a".repeat(MAX_TOKEN_LENGTH + 1),
        ] {
            assert!(
                matches!(parse(&bad), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_other_algorithms_and_token_types() {
        let key = PrivateKey::generate(Algorithm::Es256k).unwrap();
        for alg in ["none", "HS256", "RS256", "es256k", "EdDSA"] {
            let header = Header {
                alg: alg.into(),
                typ: Some("JWT".into()),
            };
            let token = sign_with_header(&header, &claims(), &key);
            assert_eq!(
                parse(&token).unwrap_err(),
                AuthError::UnsupportedAlgorithm,
                "{alg}"
            );
        }
        for typ in [
            "at+jwt",
            "refresh+jwt",
            "dpop+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/DPoP+JWT",
            " application/refresh+jwt",
        ] {
            let header = Header {
                alg: "ES256K".into(),
                typ: Some(typ.into()),
            };
            let token = sign_with_header(&header, &claims(), &key);
            assert_eq!(
                parse(&token).unwrap_err(),
                AuthError::ForbiddenTokenType(typ.into())
            );
        }
        for typ in [
            None,
            Some("JWT"),
            Some("application/jwt"),
            Some("at+jwt-ish"),
        ] {
            let header = Header {
                alg: "ES256K".into(),
                typ: typ.map(Into::into),
            };
            assert!(
                parse(&sign_with_header(&header, &claims(), &key)).is_ok(),
                "{typ:?}"
            );
        }
    }
}
