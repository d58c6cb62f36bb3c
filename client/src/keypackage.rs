//! KeyPackages for trying the directory from a shell (`catbird-mls-client
//! key-package`). Real clients make their own; these are made with a fresh
//! signature key whose private half is discarded, so they can be published
//! and fetched but never used to join a group.

use catbird_generated::lexicons::blue::catbird::mls::defs::CipherSuite;
use catbird_mls_core::device::DeviceId;
use catbird_mls_core::mls_crypto;
use openmls::prelude::MlsMessageOut;

use crate::error::DeviceError;
use crate::installation::{Installation, to_bytes};

/// A KeyPackage (as an MLSMessage) for `device` in `cipher_suite`, from an
/// installation that is dropped at once.
pub fn throwaway_key_package(
    device: &DeviceId,
    cipher_suite: &CipherSuite,
    last_resort: bool,
) -> Result<Vec<u8>, DeviceError> {
    let suite = mls_crypto::openmls_cipher_suite(cipher_suite)
        .map_err(|error| DeviceError::Unexpected(error.to_string()))?;
    let installation = Installation::new(&device.to_string(), suite)?;
    let key_package = installation.key_package(last_resort)?;
    Ok(to_bytes(&MlsMessageOut::from(key_package))?.0)
}
