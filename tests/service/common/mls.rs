//! KeyPackages of the client SDK's installations, as the tests publish them.

use catbird_generated::runtime::{Bytes, Did};
use catbird_mls_client::{Installation, to_bytes};
use openmls::prelude::{KeyPackage, KeyPackageBuilder, MlsMessageOut};

/// The cipher suite the tests use unless they say otherwise.
pub use catbird_mls_client::SUITE;
/// Its lexicon name.
pub const SUITE_NAME: &str = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";

/// A device `did#name` with a fresh signature key and no groups.
pub fn installation(did: &Did, name: &str) -> Installation {
    Installation::new(&format!("{}#{name}", did.as_str()), SUITE).expect("an installation")
}

/// A fresh KeyPackage as an MLSMessage.
pub fn key_package(device: &Installation) -> Bytes {
    key_package_with(device, |builder| builder)
}

/// A fresh last-resort KeyPackage.
pub fn last_resort_key_package(device: &Installation) -> Bytes {
    key_package_with(device, KeyPackageBuilder::mark_as_last_resort)
}

/// A KeyPackage from a builder the test adjusts (lifetime, extensions).
pub fn key_package_with(
    device: &Installation,
    adjust: impl FnOnce(KeyPackageBuilder) -> KeyPackageBuilder,
) -> Bytes {
    Bytes(message(
        device
            .key_package_with(adjust)
            .expect("building a KeyPackage"),
    ))
}

/// The MLSMessage (wire format mls_key_package) of a KeyPackage.
pub fn message(key_package: KeyPackage) -> Vec<u8> {
    to_bytes(&MlsMessageOut::from(key_package))
        .expect("serializing a KeyPackage")
        .0
}
