//! The two key types atproto uses, ES256K (secp256k1, "k256") and ES256
//! (NIST P-256, "p256"), in the encodings DID documents and key files use.
//!
//! - Public keys are Multikeys: `z` + base58btc(multicodec varint ++ the
//!   33-byte compressed point), varint `0xe7 0x01` for secp256k1-pub and
//!   `0x80 0x24` for p256-pub.
//! - Private keys (local key files) use the same scheme with the
//!   secp256k1-priv (`0x81 0x26`) and p256-priv (`0x86 0x26`) codes, so a key
//!   file says which curve it is.
//! - Signatures are the raw 64-byte `r || s` over SHA-256 of the message, and
//!   must be "low-S": the atproto cryptography spec requires it for both
//!   curves, because a high-S signature is a second valid encoding of the same
//!   signature (malleability). We sign low-S and reject high-S.

use k256::ecdsa::signature::{Signer, Verifier};

use super::AuthError;

const SECP256K1_PUB: [u8; 2] = [0xe7, 0x01];
const P256_PUB: [u8; 2] = [0x80, 0x24];
const SECP256K1_PRIV: [u8; 2] = [0x81, 0x26];

/// The legacy verification method types (see [`PublicKey::from_legacy`]).
pub const LEGACY_K256: &str = "EcdsaSecp256k1VerificationKey2019";
pub const LEGACY_P256: &str = "EcdsaSecp256r1VerificationKey2019";
const P256_PRIV: [u8; 2] = [0x86, 0x26];

/// A signature algorithm, named as in the JWT `alg` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA on secp256k1 with SHA-256 (`ES256K`), atproto's default.
    Es256k,
    /// ECDSA on NIST P-256 with SHA-256 (`ES256`).
    Es256,
}

impl Algorithm {
    /// The JWT `alg` value.
    pub fn jwt_name(self) -> &'static str {
        match self {
            Self::Es256k => "ES256K",
            Self::Es256 => "ES256",
        }
    }

    /// Parses a JWT `alg` value; anything else (`none`, `HS256`, ...) is not
    /// an algorithm atproto service auth allows.
    pub fn from_jwt_name(name: &str) -> Option<Self> {
        match name {
            "ES256K" => Some(Self::Es256k),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }
}

/// A key that verifies signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// secp256k1.
    K256(k256::ecdsa::VerifyingKey),
    /// NIST P-256.
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::K256(_) => Algorithm::Es256k,
            Self::P256(_) => Algorithm::Es256,
        }
    }

    /// Decodes a Multikey (`publicKeyMultibase`): `z` + base58btc of the
    /// multicodec-prefixed compressed point. Uncompressed points and other
    /// codecs are refused: the spec only allows the compressed form.
    pub fn from_multikey(multikey: &str) -> Result<Self, KeyError> {
        let bytes = decode_multibase(multikey)?;
        let (code, point) = bytes.split_at_checked(2).ok_or(KeyError::Codec)?;
        if point.len() != 33 || !matches!(point[0], 0x02 | 0x03) {
            return Err(KeyError::NotCompressed);
        }
        match [code[0], code[1]] {
            SECP256K1_PUB => k256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(Self::K256)
                .map_err(|_| KeyError::InvalidPoint),
            P256_PUB => p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(Self::P256)
                .map_err(|_| KeyError::InvalidPoint),
            _ => Err(KeyError::Codec),
        }
    }

    /// Decodes a `did:key` (`did:key:` + a Multikey).
    pub fn from_did_key(did_key: &str) -> Result<Self, KeyError> {
        let multikey = did_key.strip_prefix("did:key:").ok_or(KeyError::Codec)?;
        Self::from_multikey(multikey)
    }

    /// Decodes the legacy verification methods older DID documents still
    /// carry (the reference PLC directory publishes them): `publicKeyMultibase`
    /// is `z` + base58btc of the bare SEC1 point, compressed or uncompressed,
    /// without a multicodec prefix; the curve comes from the method's type.
    pub fn from_legacy(method_type: &str, multibase: &str) -> Result<Self, KeyError> {
        let point = decode_multibase(multibase)?;
        match method_type {
            LEGACY_K256 => k256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(Self::K256)
                .map_err(|_| KeyError::InvalidPoint),
            LEGACY_P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(Self::P256)
                .map_err(|_| KeyError::InvalidPoint),
            _ => Err(KeyError::Codec),
        }
    }

    /// The Multikey form, as written into a DID document.
    pub fn to_multikey(&self) -> String {
        let code = match self {
            Self::K256(_) => SECP256K1_PUB,
            Self::P256(_) => P256_PUB,
        };
        encode_multibase(&code, &self.compressed())
    }

    /// The 33-byte compressed SEC1 point.
    pub fn compressed(&self) -> Vec<u8> {
        match self {
            Self::K256(key) => key.to_encoded_point(true).as_bytes().to_vec(),
            Self::P256(key) => key.to_encoded_point(true).as_bytes().to_vec(),
        }
    }

    /// Checks a raw 64-byte `r || s` signature over `message` (hashed with
    /// SHA-256 here). High-S signatures are rejected for both curves.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), AuthError> {
        let verified = match self {
            Self::K256(key) => verify_k256(key, message, signature),
            Self::P256(key) => p256::ecdsa::Signature::from_slice(signature)
                .ok()
                .filter(|signature| signature.normalize_s().is_none())
                .is_some_and(|signature| key.verify(message, &signature).is_ok()),
        };
        if verified {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

/// ES256K through libsecp256k1, several times faster than k256's
/// constant-time arithmetic, which verification does not need. It takes
/// only low-S signatures, as atproto requires, and no `r` or `s` of zero
/// or beyond the group order.
fn verify_k256(key: &k256::ecdsa::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    use sha2::{Digest as _, Sha256};
    let Ok(signature) = secp256k1::ecdsa::Signature::from_compact(signature) else {
        return false;
    };
    let Ok(key) = secp256k1::PublicKey::from_slice(key.to_encoded_point(false).as_bytes()) else {
        return false;
    };
    let digest = secp256k1::Message::from_digest(Sha256::digest(message).into());
    secp256k1::ecdsa::verify(&signature, digest, &key).is_ok()
}

/// A key that signs. Only local identities (tests, local runs, CLI tools)
/// hold one; the service itself never signs tokens.
#[derive(Clone)]
pub enum PrivateKey {
    /// secp256k1.
    K256(k256::ecdsa::SigningKey),
    /// NIST P-256.
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for PrivateKey {
    /// Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({:?})", self.algorithm())
    }
}

impl PrivateKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate(algorithm: Algorithm) -> Result<Self, KeyError> {
        // A random 32-byte string is a valid scalar except with probability
        // ~2^-128 (zero or >= the group order); retry rather than fail.
        for _ in 0..8 {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|_| KeyError::Random)?;
            if let Ok(key) = Self::from_bytes(algorithm, &bytes) {
                return Ok(key);
            }
        }
        Err(KeyError::Random)
    }

    /// A key from its 32-byte big-endian scalar.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, KeyError> {
        match algorithm {
            Algorithm::Es256k => k256::ecdsa::SigningKey::from_slice(bytes)
                .map(Self::K256)
                .map_err(|_| KeyError::InvalidScalar),
            Algorithm::Es256 => p256::ecdsa::SigningKey::from_slice(bytes)
                .map(Self::P256)
                .map_err(|_| KeyError::InvalidScalar),
        }
    }

    /// Decodes the multibase key-file form (see the module docs).
    pub fn from_multibase(text: &str) -> Result<Self, KeyError> {
        let bytes = decode_multibase(text.trim())?;
        let (code, scalar) = bytes.split_at_checked(2).ok_or(KeyError::Codec)?;
        match [code[0], code[1]] {
            SECP256K1_PRIV => Self::from_bytes(Algorithm::Es256k, scalar),
            P256_PRIV => Self::from_bytes(Algorithm::Es256, scalar),
            _ => Err(KeyError::Codec),
        }
    }

    /// The multibase key-file form: `z` + base58btc(priv codec ++ scalar).
    pub fn to_multibase(&self) -> String {
        match self {
            Self::K256(key) => encode_multibase(&SECP256K1_PRIV, &key.to_bytes()),
            Self::P256(key) => encode_multibase(&P256_PRIV, &key.to_bytes()),
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::K256(_) => Algorithm::Es256k,
            Self::P256(_) => Algorithm::Es256,
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::K256(key) => PublicKey::K256(*key.verifying_key()),
            Self::P256(key) => PublicKey::P256(*key.verifying_key()),
        }
    }

    /// Signs SHA-256(`message`), returning the raw 64-byte low-S `r || s`.
    /// (k256 already signs low-S; p256 does not, so it is normalised.)
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::K256(key) => {
                let signature: k256::ecdsa::Signature = key.sign(message);
                let signature = signature.normalize_s().unwrap_or(signature);
                signature.to_bytes().to_vec()
            }
            Self::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                let signature = signature.normalize_s().unwrap_or(signature);
                signature.to_bytes().to_vec()
            }
        }
    }
}

/// Why a key could not be decoded or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not `z` followed by base58btc.
    #[error("not a base58btc multibase string (must start with 'z')")]
    Multibase,
    /// An unknown or missing multicodec prefix.
    #[error("unsupported key type (multicodec)")]
    Codec,
    /// A public key that is not a 33-byte compressed point.
    #[error("public key is not a compressed point")]
    NotCompressed,
    /// Bytes that are not a point on the curve.
    #[error("public key is not a valid curve point")]
    InvalidPoint,
    /// Bytes that are not a valid private scalar.
    #[error("private key is not a valid scalar")]
    InvalidScalar,
    /// The operating system's random generator failed.
    #[error("the system random number generator failed")]
    Random,
}

fn decode_multibase(text: &str) -> Result<Vec<u8>, KeyError> {
    let encoded = text.strip_prefix('z').ok_or(KeyError::Multibase)?;
    bs58::decode(encoded)
        .into_vec()
        .map_err(|_| KeyError::Multibase)
}

fn encode_multibase(code: &[u8; 2], body: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(code.len() + body.len());
    bytes.extend_from_slice(code);
    bytes.extend_from_slice(body);
    format!("z{}", bs58::encode(bytes).into_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_spec_examples() {
        // Examples from the atproto cryptography spec.
        let k256 =
            PublicKey::from_multikey("zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc").unwrap();
        assert_eq!(k256.algorithm(), Algorithm::Es256k);
        assert_eq!(
            k256.to_multikey(),
            "zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc"
        );
        let p256 =
            PublicKey::from_multikey("zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo").unwrap();
        assert_eq!(p256.algorithm(), Algorithm::Es256);
        assert_eq!(
            p256.to_multikey(),
            "zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo"
        );
    }

    #[test]
    fn round_trips_and_signs_low_s() {
        for algorithm in [Algorithm::Es256k, Algorithm::Es256] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let again = PrivateKey::from_multibase(&key.to_multibase()).unwrap();
            assert_eq!(again.public_key(), key.public_key());
            let public = PublicKey::from_multikey(&key.public_key().to_multikey()).unwrap();
            assert_eq!(public, key.public_key());
            for index in 0..16u8 {
                let message = [index; 7];
                let signature = key.sign(&message);
                assert_eq!(signature.len(), 64);
                public.verify(&message, &signature).unwrap();
                assert_eq!(
                    public.verify(b"other", &signature),
                    Err(AuthError::BadSignature)
                );
            }
        }
    }

    #[test]
    fn rejects_high_s_signatures() {
        let message = b"header.payload";
        let key = PrivateKey::generate(Algorithm::Es256k).unwrap();
        let signature = k256::ecdsa::Signature::from_slice(&key.sign(message)).unwrap();
        let (r, s) = signature.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -s).unwrap();
        assert!(
            high.normalize_s().is_some(),
            "the flipped signature is high-S"
        );
        assert_eq!(
            key.public_key().verify(message, &high.to_bytes()),
            Err(AuthError::BadSignature)
        );

        let key = PrivateKey::generate(Algorithm::Es256).unwrap();
        let signature = p256::ecdsa::Signature::from_slice(&key.sign(message)).unwrap();
        let (r, s) = signature.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r, -s).unwrap();
        // p256 itself would accept this one; the low-S rule must not.
        let PublicKey::P256(raw) = key.public_key() else {
            unreachable!()
        };
        assert!(raw.verify(message, &high).is_ok());
        assert_eq!(
            key.public_key().verify(message, &high.to_bytes()),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn rejects_bad_encodings() {
        assert_eq!(PublicKey::from_multikey("Q3sh"), Err(KeyError::Multibase));
        assert_eq!(PublicKey::from_multikey("z0OIl"), Err(KeyError::Multibase));
        assert_eq!(PublicKey::from_multikey("z"), Err(KeyError::Codec));
        let key = PrivateKey::generate(Algorithm::Es256k).unwrap();
        let uncompressed = match key.public_key() {
            PublicKey::K256(key) => key.to_encoded_point(false).as_bytes().to_vec(),
            PublicKey::P256(_) => unreachable!(),
        };
        assert_eq!(
            PublicKey::from_multikey(&encode_multibase(&SECP256K1_PUB, &uncompressed)),
            Err(KeyError::NotCompressed)
        );
        let compressed = key.public_key().compressed();
        assert_eq!(
            PublicKey::from_multikey(&encode_multibase(&[0xed, 0x01], &compressed)),
            Err(KeyError::Codec)
        );
        // A secp256k1 point labelled as P-256 is (almost surely) off-curve or,
        // if it happens to be valid, a different key: never the same one.
        if let Ok(other) = PublicKey::from_multikey(&encode_multibase(&P256_PUB, &compressed)) {
            assert_ne!(other, key.public_key());
        }
    }
}
