//! What the service and its clients need from OpenMLS everywhere: the
//! crypto provider, the cipher suites the service supports (by their
//! lexicon names), and the hex form of group ids and KeyPackageRefs.

use catbird_generated::lexicons::blue::catbird::mls::defs::CipherSuite;
use openmls::prelude::Ciphersuite;
use openmls_rust_crypto::RustCrypto;

/// A cipher suite the service does not support, with the list of those it
/// does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cipher suite {name} is not supported; supported: {supported}")]
pub struct UnsupportedSuite {
    /// The suite asked for.
    pub name: String,
    /// The supported suites' names, comma-separated.
    pub supported: String,
}

/// The crypto provider for verifying MLS signatures and computing hashes.
/// It holds no keys: the service is never a group member.
pub fn crypto() -> RustCrypto {
    RustCrypto::default()
}

/// The cipher suites this service accepts (the lexicon's `defs#cipherSuite`
/// values), with their OpenMLS counterparts.
const SUPPORTED: [(CipherSuite, Ciphersuite); 3] = [
    (
        CipherSuite::Mls128Dhkemx25519Aes128gcmSha256Ed25519,
        Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
    ),
    (
        CipherSuite::Mls128Dhkemp256Aes128gcmSha256P256,
        Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
    ),
    (
        CipherSuite::Mls128Dhkemx25519Chacha20poly1305Sha256Ed25519,
        Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
    ),
];

/// The lexicon value of a supported OpenMLS cipher suite.
pub fn lexicon_cipher_suite(suite: Ciphersuite) -> Result<CipherSuite, UnsupportedSuite> {
    SUPPORTED
        .iter()
        .find(|(_, mls)| *mls == suite)
        .map(|(lexicon, _)| lexicon.clone())
        .ok_or_else(|| unsupported(&format!("{suite:?}")))
}

/// A cipher suite named in a request, checked to be supported.
pub fn requested_cipher_suite(name: &str) -> Result<CipherSuite, UnsupportedSuite> {
    SUPPORTED
        .iter()
        .find(|(lexicon, _)| lexicon.as_str() == name)
        .map(|(lexicon, _)| lexicon.clone())
        .ok_or_else(|| unsupported(name))
}

/// The OpenMLS cipher suite of a supported lexicon value.
pub fn openmls_cipher_suite(suite: &CipherSuite) -> Result<Ciphersuite, UnsupportedSuite> {
    SUPPORTED
        .iter()
        .find(|(lexicon, _)| lexicon == suite)
        .map(|(_, mls)| *mls)
        .ok_or_else(|| unsupported(suite.as_str()))
}

fn unsupported(name: &str) -> UnsupportedSuite {
    UnsupportedSuite {
        name: name.to_owned(),
        supported: supported_names(),
    }
}

fn supported_names() -> String {
    SUPPORTED
        .iter()
        .map(|(lexicon, _)| lexicon.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lowercase hex, the lexicon's form of KeyPackageRefs and group ids.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The inverse of [`to_hex`]; `None` for odd lengths or non-hex digits.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    // from_str_radix alone would accept a leading '+'.
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        assert_eq!(to_hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(from_hex("00ab7f"), Some(vec![0x00, 0xab, 0x7f]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("+1"), None);
    }

    #[test]
    fn only_the_lexicon_suites_are_supported() {
        assert!(requested_cipher_suite("MLS_128_DHKEMP256_AES128GCM_SHA256_P256").is_ok());
        assert!(requested_cipher_suite("MLS_256_DHKEMP384_AES256GCM_SHA384_P384").is_err());
        assert!(
            lexicon_cipher_suite(Ciphersuite::MLS_256_DHKEMP384_AES256GCM_SHA384_P384).is_err()
        );
    }
}
