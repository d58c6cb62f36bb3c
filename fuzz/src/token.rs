//! Service-auth tokens: `jwt::parse` and the service's `Verifier` (DID
//! document from a directory, replay store in memory), as the auth hook
//! runs them for every request. Any token must be refused with an auth
//! error that is a 401, or accepted; a token is accepted only if a key
//! holder signed exactly it.
//!
//! Seeds are real tokens of two identities (ES256K and ES256). An input
//! whose signature segment is empty (`header.payload.`) is signed by the
//! first identity before it is verified: that models a caller who holds
//! a key and signs whatever claims it likes, so the claim checks behind
//! the signature are fuzzed too.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catbird_generated::runtime::Did;
use catbird_mls::auth::{DirectoryResolver, MemoryReplayStore, Verifier};
use catbird_mls::error::auth_error;
use catbird_mls_client::{LocalIdentity, create_identity, mint_token};
use catbird_mls_core::auth::Algorithm;
use catbird_mls_core::auth::jwt::{self, Claims, Header};

use crate::{Outcome, Shape, Target, Violation};

/// The method the seed tokens are for.
const NSID: &str = "blue.catbird.mls.sendMessage";
const SERVICE_DID: &str = "did:web:fuzz.catbird.test";
/// In an unsigned input's `iss`, stands for the signer's DID.
const SIGNER: &str = "did:plc:fuzzsigner";
/// Long enough for any fuzzing session.
const LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

pub struct TokenTarget {
    seeds: Vec<Vec<u8>>,
    signer: LocalIdentity,
    verifier: Verifier<DirectoryResolver, MemoryReplayStore>,
    runtime: tokio::runtime::Runtime,
    _directory: tempfile::TempDir,
}

impl TokenTarget {
    pub fn new() -> Self {
        let directory = tempfile::tempdir().expect("a DID directory");
        let service = Did::new(SERVICE_DID).expect("a DID");
        let identities: Vec<LocalIdentity> =
            [("es256k", Algorithm::Es256k), ("es256", Algorithm::Es256)]
                .into_iter()
                .map(|(name, algorithm)| {
                    create_identity(directory.path(), name, algorithm).expect("an identity")
                })
                .collect();
        let mut seeds: Vec<Vec<u8>> = identities
            .iter()
            .map(|identity| mint_token(identity, &service, NSID, LIFETIME).into_bytes())
            .collect();
        // The unsigned form of a token the fuzz target signs itself, its
        // issuer a placeholder (the signer's DID is new in every process,
        // the saved inputs must replay).
        let signed = mint_token(&identities[0], &service, NSID, LIFETIME);
        let payload = signed.split('.').nth(1).expect("a JWT");
        let mut claims: Claims = decode_segment(payload).expect("the claims just minted");
        claims.iss = SIGNER.to_owned();
        let header = &signed[..signed.find('.').expect("a JWT")];
        let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims as JSON"));
        seeds.push(format!("{header}.{claims}.").into_bytes());
        Self {
            seeds,
            signer: identities[0].clone(),
            verifier: Verifier::new(
                service,
                DirectoryResolver::new(directory.path()),
                MemoryReplayStore::new(),
            ),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
            _directory: directory,
        }
    }

    /// `header.payload.` signed by the signer, with [`SIGNER`] in `iss`
    /// replaced by its DID and a new `jti` each time (so replays of the
    /// same claims are not what is tested). `None` if they do not decode.
    fn sign(&self, unsigned: &str) -> Option<String> {
        let mut parts = unsigned.splitn(3, '.');
        let (header, payload) = (parts.next()?, parts.next()?);
        let header: Header = decode_segment(header)?;
        let mut claims: Claims = decode_segment(payload)?;
        claims.iss = claims.iss.replace(SIGNER, self.signer.did.as_str());
        if claims.jti.is_some() {
            claims.jti = Some(format!(
                "{}-{}",
                claims.jti.unwrap_or_default(),
                fastrand::u64(..)
            ));
        }
        Some(jwt::sign_with_header(&header, &claims, &self.signer.key))
    }
}

impl Default for TokenTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for TokenTarget {
    fn name(&self) -> &'static str {
        "token"
    }

    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    fn shape(&self) -> Shape {
        Shape::Jwt
    }

    fn dictionary(&self) -> Vec<Vec<u8>> {
        [
            "alg",
            "typ",
            "ES256",
            "ES256K",
            "none",
            "HS256",
            "JWT",
            "at+jwt",
            "application/at+jwt",
            "dpop+jwt",
            "iss",
            "aud",
            "exp",
            "iat",
            "nbf",
            "lxm",
            "jti",
            "#atproto",
            "did:plc:",
            SERVICE_DID,
            NSID,
            "8210266876799",
            "-8334601228800",
        ]
        .iter()
        .map(|word| word.as_bytes().to_vec())
        .collect()
    }

    fn check(&self, input: &[u8]) -> Result<Outcome, Violation> {
        let text = String::from_utf8_lossy(input);
        let self_signed = text.ends_with('.') && text.matches('.').count() == 2;
        let token = if self_signed {
            match self.sign(&text) {
                Some(token) => token,
                // Header or claims that do not decode: the unsigned form
                // goes to the verifier as it is.
                None => text.into_owned(),
            }
        } else {
            text.into_owned()
        };
        let authorization = format!("Bearer {token}");
        let result = self
            .runtime
            .block_on(self.verifier.verify(NSID, Some(&authorization)));
        match result {
            Ok(_) if self_signed => Ok(Outcome::Accepted),
            Ok(_) => {
                let sent = token.trim().as_bytes();
                if self.seeds.iter().any(|seed| seed == sent) {
                    Ok(Outcome::Accepted)
                } else {
                    Err(Violation(format!(
                        "accepted a token nobody signed: {token}"
                    )))
                }
            }
            Err(error) => {
                let response = auth_error(error);
                if response.status().as_u16() == 401 {
                    Ok(Outcome::Refused)
                } else {
                    Err(Violation(format!(
                        "an auth failure answered {}: {}",
                        response.status(),
                        response.message()
                    )))
                }
            }
        }
    }
}

fn decode_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Option<T> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).ok()?).ok()
}
