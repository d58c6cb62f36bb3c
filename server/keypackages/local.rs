//! KeyPackages for trying the directory from a shell (`catbird-mls
//! key-package`). Real clients make their own; these are made with a fresh
//! signature key whose private half is discarded, so they can be published
//! and fetched but never used to join a group.

use catbird_generated::lexicons::blue::catbird::mls::defs::CipherSuite;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{BasicCredential, CredentialWithKey, KeyPackage, MlsMessageOut};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

use crate::demo;
use crate::device::DeviceId;
use crate::error::ServiceError;
use crate::mls_crypto;

/// A KeyPackage (as an MLSMessage) for `device` in `cipher_suite`.
pub fn throwaway_key_package(
    device: &DeviceId,
    cipher_suite: &CipherSuite,
    last_resort: bool,
) -> Result<Vec<u8>, ServiceError> {
    let failed =
        |what: &str, e: &dyn std::fmt::Display| ServiceError::Internal(format!("{what}: {e}"));
    let suite = mls_crypto::openmls_cipher_suite(cipher_suite)?;
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(suite.signature_algorithm())
        .map_err(|e| failed("making a signature key", &format!("{e:?}")))?;
    let credential = CredentialWithKey {
        credential: BasicCredential::new(device.to_string().into_bytes()).into(),
        signature_key: signer.public().into(),
    };
    // A KeyPackage may only carry extensions its leaf declares support for.
    let mut builder = KeyPackage::builder().leaf_node_capabilities(demo::mls::capabilities());
    if last_resort {
        builder = builder.mark_as_last_resort();
    }
    let bundle = builder
        .build(suite, &provider, &signer, credential)
        .map_err(|e| failed("building a KeyPackage", &e))?;
    MlsMessageOut::from(bundle.key_package().clone())
        .tls_serialize_detached()
        .map_err(|e| failed("serializing a KeyPackage", &e))
}
