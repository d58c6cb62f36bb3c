//! The MLS settings every catbird client uses (what the service requires of
//! groups), and the small conversions between OpenMLS messages and the
//! lexicon's bytes.

use catbird_generated::lexicons::blue::catbird::mls::defs::CipherSuite;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    BasicCredential, Capabilities, Ciphersuite, Credential, ExtensionType, MlsGroupCreateConfig,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, PURE_PLAINTEXT_WIRE_FORMAT_POLICY,
};

use crate::error::DeviceError;
use catbird_mls_core::device::DeviceId;

/// The cipher suite a [`Device`](crate::Device) uses.
pub const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// [`SUITE`] by its lexicon name.
pub fn lexicon_suite() -> CipherSuite {
    CipherSuite::Mls128Dhkemx25519Aes128gcmSha256Ed25519
}

/// What the devices' leaves support beyond the defaults: the last_resort
/// extension, which a KeyPackage may only carry if its leaf declares it.
pub fn capabilities() -> Capabilities {
    Capabilities::new(None, None, Some(&[ExtensionType::LastResort]), None, None)
}

/// How a device creates a group. Handshakes are plaintext because the
/// service validates every commit against its public view of the group;
/// the ratchet tree travels in GroupInfo and Welcome so that joiners need
/// nothing else.
pub fn create_config(suite: Ciphersuite) -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(suite)
        .capabilities(capabilities())
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

/// How a device joins a group (Welcome or external commit). The wire format
/// policy must match the creator's, or members reject each other's
/// plaintext commits.
pub fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

/// Parses an MLSMessage the service sent; `what` names it for errors.
pub fn read_message(bytes: &[u8], what: &str) -> Result<MlsMessageIn, DeviceError> {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|error| DeviceError::Unexpected(format!("{what} is not an MLSMessage: {error}")))
}

/// Parses an MLSMessage and takes out its body.
pub fn read_body(bytes: &[u8], what: &str) -> Result<MlsMessageBodyIn, DeviceError> {
    read_message(bytes, what).map(MlsMessageIn::extract)
}

/// The `did#device` identity of a leaf's credential; `None` for anything
/// else (the service admits nothing else, but members must not trust that).
pub fn device_of(credential: &Credential) -> Option<DeviceId> {
    let basic = BasicCredential::try_from(credential.clone()).ok()?;
    DeviceId::from_credential_identity(basic.identity()).ok()
}

/// A label for a leaf's credential, also when it is not a device identity.
pub fn describe(credential: &Credential) -> String {
    device_of(credential).map_or_else(
        || "(a credential that is not a did#device identity)".to_owned(),
        |device| device.to_string(),
    )
}
