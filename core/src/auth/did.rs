//! DID documents: the parts atproto uses, and the signing key in them.
//!
//! A token is only as good as the key that checks it, and that key is the
//! `#atproto` verification method of the issuer's DID document. Where the
//! documents come from (the network, a directory) is the service's business;
//! what a document says is shared with the clients that write them.

use catbird_generated::runtime::Did;
use serde::{Deserialize, Serialize};

use super::AuthError;
use super::keys::{LEGACY_K256, LEGACY_P256, PublicKey};

/// The parts of a DID document atproto uses. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DidDocument {
    /// JSON-LD contexts; kept so documents we write are standard.
    #[serde(rename = "@context", default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<String>,
    /// The DID this document describes.
    pub id: String,
    /// `at://<handle>` aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_known_as: Vec<String>,
    /// Keys; atproto's signing key is the one whose id ends in `#atproto`.
    #[serde(default)]
    pub verification_method: Vec<VerificationMethod>,
}

/// One entry of `verificationMethod`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMethod {
    /// `did:...#atproto` or the relative `#atproto`.
    pub id: String,
    /// `Multikey` for the keys atproto accepts.
    #[serde(rename = "type")]
    pub kind: String,
    /// The DID that controls the key.
    #[serde(default)]
    pub controller: String,
    /// The Multikey-encoded public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_multibase: Option<String>,
}

impl DidDocument {
    /// The atproto signing key: the verification method with id
    /// `<did>#atproto` (or `#atproto`), a `Multikey` or one of the legacy
    /// `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019`.
    pub fn signing_key(&self) -> Result<PublicKey, AuthError> {
        self.key("atproto")
    }

    /// The key of the verification method `<did>#<id>` (or `#<id>`), of a
    /// type [`signing_key`](Self::signing_key) accepts: e.g. `atproto_label`,
    /// a labeler's key.
    pub fn key(&self, id: &str) -> Result<PublicKey, AuthError> {
        let method = self
            .verification_method
            .iter()
            .find(|method| {
                method
                    .id
                    .strip_suffix(id)
                    .and_then(|rest| rest.strip_suffix('#'))
                    .is_some_and(|did| did.is_empty() || did == self.id)
            })
            .ok_or(AuthError::NoSigningKey)?;
        let multibase = method
            .public_key_multibase
            .as_deref()
            .ok_or(AuthError::NoSigningKey)?;
        let key = match method.kind.as_str() {
            "Multikey" => PublicKey::from_multikey(multibase),
            LEGACY_K256 | LEGACY_P256 => PublicKey::from_legacy(&method.kind, multibase),
            _ => return Err(AuthError::NoSigningKey),
        };
        key.map_err(|error| {
            tracing::debug!(did = %self.id, %error, "unusable #{id} key");
            AuthError::NoSigningKey
        })
    }

    /// Parses a document and checks it describes `did`: a server (or a
    /// misnamed file) must not be able to hand us someone else's key.
    pub fn parse_for(did: &Did, bytes: &[u8]) -> Result<Self, AuthError> {
        let document: Self = serde_json::from_slice(bytes).map_err(|error| {
            AuthError::UnresolvableDid(format!("invalid DID document for {did}: {error}"))
        })?;
        if document.id != did.as_str() {
            return Err(AuthError::UnresolvableDid(format!(
                "DID document for {did} describes {}",
                document.id
            )));
        }
        Ok(document)
    }
}

/// The file name of `did`'s document in a directory of DID documents: the DID with every
/// `:` replaced by `_`, plus `.json` (`did:plc:abc` -> `did_plc_abc.json`).
/// DIDs cannot contain `/`, so the name never leaves the directory; two DIDs
/// that map to one name are told apart by the document's `id` check.
pub fn file_name(did: &Did) -> String {
    format!("{}.json", did.as_str().replace(':', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{Algorithm, PrivateKey};

    fn document(did: &str, method_id: &str, kind: &str, key: Option<String>) -> DidDocument {
        DidDocument {
            context: vec![],
            id: did.into(),
            also_known_as: vec![],
            verification_method: vec![VerificationMethod {
                id: method_id.into(),
                kind: kind.into(),
                controller: did.into(),
                public_key_multibase: key,
            }],
        }
    }

    #[test]
    fn finds_the_atproto_key() {
        let key = PrivateKey::generate(Algorithm::Es256k)
            .unwrap()
            .public_key();
        let multikey = Some(key.to_multikey());
        for id in ["did:plc:abc#atproto", "#atproto"] {
            let document = document("did:plc:abc", id, "Multikey", multikey.clone());
            assert_eq!(document.signing_key().unwrap(), key);
        }
        for (id, kind, multikey) in [
            ("did:plc:abc#other", "Multikey", multikey.clone()),
            ("did:plc:xyz#atproto", "Multikey", multikey.clone()),
            ("did:plc:abc#atproto", "JsonWebKey2020", multikey.clone()),
            ("did:plc:abc#atproto", "Multikey", None),
            ("did:plc:abc#atproto", "Multikey", Some("zBAD0".into())),
        ] {
            let document = document("did:plc:abc", id, kind, multikey);
            assert_eq!(
                document.signing_key(),
                Err(AuthError::NoSigningKey),
                "{id} {kind}"
            );
        }
    }

    /// The legacy forms older documents (and the reference PLC directory)
    /// publish: a bare SEC1 point, uncompressed or compressed, no
    /// multicodec prefix, the curve named by the method's type.
    #[test]
    fn finds_legacy_keys_in_both_point_forms() {
        for (algorithm, kind) in [
            (Algorithm::Es256k, "EcdsaSecp256k1VerificationKey2019"),
            (Algorithm::Es256, "EcdsaSecp256r1VerificationKey2019"),
        ] {
            let private = PrivateKey::generate(algorithm).unwrap();
            let key = private.public_key();
            let compressed = key.compressed();
            let uncompressed = match &key {
                crate::auth::PublicKey::K256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
                crate::auth::PublicKey::P256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            };
            for point in [compressed, uncompressed] {
                let multibase = format!("z{}", bs58::encode(point).into_string());
                let document = document("did:plc:abc", "#atproto", kind, Some(multibase));
                let found = document.signing_key().unwrap();
                assert_eq!(found, key, "{kind}");
                let message = b"a token's signing input";
                assert_eq!(found.verify(message, &private.sign(message)), Ok(()));
            }
            // The other curve's type does not decode this key.
            let other = if kind.contains("k1") {
                "EcdsaSecp256r1VerificationKey2019"
            } else {
                "EcdsaSecp256k1VerificationKey2019"
            };
            let multibase = format!("z{}", bs58::encode(key.compressed()).into_string());
            let document = document("did:plc:abc", "#atproto", other, Some(multibase));
            assert_ne!(document.signing_key().ok(), Some(key));
        }
    }

    #[test]
    fn parse_for_checks_the_id() {
        let did = Did::new("did:plc:abc").unwrap();
        let bytes =
            serde_json::to_vec(&document("did:plc:other", "#atproto", "Multikey", None)).unwrap();
        assert!(matches!(
            DidDocument::parse_for(&did, &bytes),
            Err(AuthError::UnresolvableDid(_))
        ));
        assert!(matches!(
            DidDocument::parse_for(&did, b"{"),
            Err(AuthError::UnresolvableDid(_))
        ));
    }

    #[test]
    fn file_names() {
        assert_eq!(
            file_name(&Did::new("did:plc:abc").unwrap()),
            "did_plc_abc.json"
        );
        assert_eq!(
            file_name(&Did::new("did:web:a.test").unwrap()),
            "did_web_a.test.json"
        );
    }
}
