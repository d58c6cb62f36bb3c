//! Checking a published KeyPackage with OpenMLS before anything is stored.

use catbird_generated::lexicons::blue::catbird::mls::defs::CipherSuite;
use catbird_generated::runtime::Did;
use chrono::{DateTime, Utc};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{BasicCredential, MlsMessageBodyIn, MlsMessageIn, ProtocolVersion};

use crate::device::DeviceId;
use crate::error::ServiceError;
use crate::mls_crypto as mls;

/// A KeyPackage that passed every check, with what the directory indexes.
#[derive(Debug, Clone)]
pub struct ValidKeyPackage {
    /// The KeyPackageRef (RFC 9420 section 5.2).
    pub reference: Vec<u8>,
    pub device: DeviceId,
    pub cipher_suite: CipherSuite,
    pub last_resort: bool,
    pub expires_at: DateTime<Utc>,
    /// The MLSMessage exactly as published; handed out as is.
    pub message: Vec<u8>,
}

/// Checks `message` (an MLSMessage of wire format mls_key_package) as a
/// KeyPackage of one of `caller`'s devices: signatures, protocol version,
/// keys, extensions, lifetime (by OpenMLS), then the cipher suite and the
/// credential `<caller>#<device>` (our policy).
pub fn validate(message: &[u8], caller: &Did) -> Result<ValidKeyPackage, ServiceError> {
    let invalid = |why: String| ServiceError::InvalidKeyPackage(why);
    let parsed = MlsMessageIn::tls_deserialize_exact(message)
        .map_err(|e| invalid(format!("not an MLSMessage: {e}")))?;
    let MlsMessageBodyIn::KeyPackage(key_package) = parsed.extract() else {
        return Err(invalid("the MLSMessage is not a KeyPackage".into()));
    };
    let crypto = mls::crypto();
    let key_package = key_package
        .validate(&crypto, ProtocolVersion::Mls10)
        .map_err(|e| invalid(format!("the KeyPackage does not verify: {e}")))?;

    let cipher_suite = mls::lexicon_cipher_suite(key_package.ciphersuite())?;

    let lifetime = key_package.life_time();
    if !lifetime.has_acceptable_range() {
        return Err(invalid(
            "the KeyPackage's lifetime is longer than allowed".into(),
        ));
    }
    let expires_at = i64::try_from(lifetime.not_after())
        .ok()
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
        .ok_or_else(|| invalid("the KeyPackage's lifetime ends out of range".into()))?;

    let credential = BasicCredential::try_from(key_package.leaf_node().credential().clone())
        .map_err(|_| invalid("the leaf credential must be a basic credential".into()))?;
    let device = DeviceId::from_credential_identity(credential.identity())
        .map_err(|e| invalid(format!("the credential identity is not `did#device`: {e}")))?;
    if device.did() != caller {
        return Err(invalid(format!(
            "the credential belongs to {}, not to the caller {}",
            device.did().as_str(),
            caller.as_str()
        )));
    }

    let reference = key_package
        .hash_ref(&crypto)
        .map_err(|e| ServiceError::Internal(format!("hashing a KeyPackage: {e}")))?;
    Ok(ValidKeyPackage {
        reference: reference.as_slice().to_vec(),
        device,
        cipher_suite,
        last_resort: key_package.last_resort(),
        expires_at,
        message: message.to_vec(),
    })
}
