//! Real OpenMLS clients for the tests: devices with their own signature
//! keys, making KeyPackages as an app would.

use catbird_generated::runtime::{Bytes, Did};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{
    BasicCredential, Ciphersuite, CredentialWithKey, KeyPackage, KeyPackageBuilder, MlsMessageOut,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

/// The cipher suite the tests use unless they say otherwise.
pub const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// Its lexicon name.
pub const SUITE_NAME: &str = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";

/// One device of a user: credential `did#name`, its own signature key.
pub struct Device {
    pub id: String,
    pub provider: OpenMlsRustCrypto,
    pub signer: SignatureKeyPair,
    pub credential: CredentialWithKey,
    pub suite: Ciphersuite,
}

impl Device {
    pub fn new(did: &Did, name: &str) -> Self {
        Self::with_identity(&format!("{}#{name}", did.as_str()), SUITE)
    }

    /// A device whose credential says `identity`, whatever it is.
    pub fn with_identity(identity: &str, suite: Ciphersuite) -> Self {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(suite.signature_algorithm()).expect("a signature key");
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Self {
            id: identity.to_owned(),
            provider,
            signer,
            credential,
            suite,
        }
    }

    /// A fresh KeyPackage as an MLSMessage.
    pub fn key_package(&self) -> Bytes {
        self.key_package_with(|builder| builder)
    }

    /// A fresh last-resort KeyPackage.
    pub fn last_resort_key_package(&self) -> Bytes {
        self.key_package_with(KeyPackageBuilder::mark_as_last_resort)
    }

    /// A KeyPackage from a builder the test adjusts (lifetime, extensions).
    pub fn key_package_with(
        &self,
        adjust: impl FnOnce(KeyPackageBuilder) -> KeyPackageBuilder,
    ) -> Bytes {
        let builder = KeyPackage::builder().leaf_node_capabilities(capabilities());
        let bundle = adjust(builder)
            .build(
                self.suite,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .expect("building a KeyPackage");
        Bytes(message(bundle.key_package().clone()))
    }
}

/// The leaf capabilities apps use (the last_resort extension).
pub use catbird_mls::demo::mls::capabilities;

/// The MLSMessage (wire format mls_key_package) of a KeyPackage.
pub fn message(key_package: KeyPackage) -> Vec<u8> {
    MlsMessageOut::from(key_package)
        .tls_serialize_detached()
        .expect("serializing a KeyPackage")
}
