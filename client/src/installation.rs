//! One OpenMLS installation: a credential identity, its signature key and
//! the OpenMLS state it keeps, with the synchronous MLS steps an app takes
//! (KeyPackages, groups, commits, joins). No network: [`Device`](crate::Device)
//! puts the service around it; tests use it directly to build what a
//! well-behaved device never sends.

use catbird_generated::runtime::Bytes;
use openmls::group::{CommitBuilder, Initial};
use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{
    BasicCredential, Ciphersuite, CommitMessageBundle, CredentialWithKey, GroupId, KeyPackage,
    KeyPackageBuilder, LeafNodeParameters, MlsGroup, MlsMessageBodyIn, MlsMessageOut,
    StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{MemoryStorage, RustCrypto};
use openmls_traits::OpenMlsProvider;
use openmls_traits::storage::{CURRENT_VERSION, StorageProvider};

use crate::error::{DeviceError, mls};
use crate::mls::{capabilities, create_config, join_config, read_body};

/// The OpenMLS provider of an installation: RustCrypto for cryptography and
/// randomness, and `S` for the group state and private keys. `S` is the
/// storage trait an app implements to keep its MLS state across restarts;
/// the default keeps it in memory.
#[derive(Debug, Default)]
pub struct Provider<S = MemoryStorage> {
    crypto: RustCrypto,
    storage: S,
}

impl<S> Provider<S> {
    /// A provider over `storage`.
    pub fn new(storage: S) -> Self {
        Self {
            crypto: RustCrypto::default(),
            storage,
        }
    }
}

impl<S: StorageProvider<CURRENT_VERSION>> OpenMlsProvider for Provider<S> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = S;

    fn storage(&self) -> &S {
        &self.storage
    }

    fn crypto(&self) -> &RustCrypto {
        &self.crypto
    }

    fn rand(&self) -> &RustCrypto {
        &self.crypto
    }
}

/// A commit built and staged in its group (the group's pending commit),
/// with the messages to submit. Merge it once the service accepted it,
/// discard it otherwise.
#[derive(Debug, Clone)]
pub struct StagedMessages {
    /// The commit (an MLSMessage with a PublicMessage).
    pub commit: Bytes,
    /// Present when the commit adds devices.
    pub welcome: Option<Bytes>,
    /// The committer's signed GroupInfo for the epoch the commit creates.
    pub group_info: Bytes,
}

/// One installation of an app: credential identity, signature key, state.
pub struct Installation<S = MemoryStorage> {
    identity: String,
    suite: Ciphersuite,
    provider: Provider<S>,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl Installation {
    /// A new installation with a fresh signature key and in-memory state.
    /// `identity` is its credential identity (`did#device` for the service
    /// to accept it; anything, for tests of what it refuses).
    pub fn new(identity: &str, suite: Ciphersuite) -> Result<Self, DeviceError> {
        Self::with_storage(identity, suite, MemoryStorage::default())
    }

    /// A new installation that signs with an existing key (the private and
    /// public halves as OpenMLS stores them): a device restored from a
    /// backup of its key but not of its groups.
    pub fn with_key(identity: &str, suite: Ciphersuite, private: Vec<u8>, public: Vec<u8>) -> Self {
        let signer = SignatureKeyPair::from_raw(suite.signature_algorithm(), private, public);
        Self::assemble(identity, suite, Provider::default(), signer)
    }
}

impl<S: StorageProvider<CURRENT_VERSION>> Installation<S> {
    /// A new installation with a fresh signature key, keeping its state in
    /// `storage`.
    pub fn with_storage(
        identity: &str,
        suite: Ciphersuite,
        storage: S,
    ) -> Result<Self, DeviceError> {
        let signer = SignatureKeyPair::new(suite.signature_algorithm())
            .map_err(|error| mls("making a signature key")(format!("{error:?}")))?;
        Ok(Self::assemble(
            identity,
            suite,
            Provider::new(storage),
            signer,
        ))
    }

    fn assemble(
        identity: &str,
        suite: Ciphersuite,
        provider: Provider<S>,
        signer: SignatureKeyPair,
    ) -> Self {
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Self {
            identity: identity.to_owned(),
            suite,
            provider,
            signer,
            credential,
        }
    }

    /// The credential identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The cipher suite of its KeyPackages and groups.
    pub fn suite(&self) -> Ciphersuite {
        self.suite
    }

    /// The OpenMLS provider (crypto and state).
    pub fn provider(&self) -> &Provider<S> {
        &self.provider
    }

    /// The signature key.
    pub fn signer(&self) -> &SignatureKeyPair {
        &self.signer
    }

    /// The credential with its signature key, as leaves carry it.
    pub fn credential(&self) -> &CredentialWithKey {
        &self.credential
    }

    /// Signs with `signer` and carries `identity` from now on: after a
    /// commit that gave this installation's leaf a new signature key (see
    /// OpenMLS's `build_with_new_signer`) was accepted and merged.
    pub fn rotate_key(&mut self, identity: &str, signer: SignatureKeyPair) {
        self.credential = CredentialWithKey {
            credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        self.identity = identity.to_owned();
        self.signer = signer;
    }

    // ---- KeyPackages ---------------------------------------------------------

    /// A fresh KeyPackage (its private keys stay in this installation).
    pub fn key_package(&self, last_resort: bool) -> Result<KeyPackage, DeviceError> {
        self.key_package_with(|builder| {
            if last_resort {
                builder.mark_as_last_resort()
            } else {
                builder
            }
        })
    }

    /// A KeyPackage from a builder the caller adjusts (lifetime,
    /// extensions); the builder already declares the app's capabilities.
    pub fn key_package_with(
        &self,
        adjust: impl FnOnce(KeyPackageBuilder) -> KeyPackageBuilder,
    ) -> Result<KeyPackage, DeviceError> {
        let builder = KeyPackage::builder().leaf_node_capabilities(capabilities());
        let bundle = adjust(builder)
            .build(
                self.suite,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .map_err(mls("building a KeyPackage"))?;
        Ok(bundle.key_package().clone())
    }

    // ---- groups ----------------------------------------------------------------

    /// Creates a group with this installation as its only member.
    pub fn create_group(&self, group_id: &GroupId) -> Result<MlsGroup, DeviceError> {
        MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create_config(self.suite),
            group_id.clone(),
            self.credential.clone(),
        )
        .map_err(mls("creating the group"))
    }

    /// The group's signed GroupInfo for its current epoch, optionally with
    /// the ratchet tree.
    pub fn group_info(
        &self,
        group: &MlsGroup,
        with_tree: bool,
    ) -> Result<MlsMessageOut, DeviceError> {
        group
            .export_group_info(self.provider.crypto(), &self.signer, with_tree)
            .map_err(mls("exporting the GroupInfo"))
    }

    /// The group this installation holds for `group_id`, if any.
    pub fn load_group(&self, group_id: &GroupId) -> Result<Option<MlsGroup>, DeviceError> {
        MlsGroup::load(self.provider.storage(), group_id).map_err(mls("loading a group"))
    }

    /// Forgets a group's state.
    pub fn delete_group(&self, group: &mut MlsGroup) -> Result<(), DeviceError> {
        group
            .delete(self.provider.storage())
            .map_err(mls("deleting a group"))
    }

    /// Joins from a Welcome (an MLSMessage).
    pub fn join(&self, welcome: &[u8]) -> Result<MlsGroup, DeviceError> {
        let MlsMessageBodyIn::Welcome(welcome) = read_body(welcome, "the Welcome")? else {
            return Err(DeviceError::Unexpected(
                "an MLSMessage that is not a Welcome where a Welcome belongs".to_owned(),
            ));
        };
        StagedWelcome::build_from_welcome(&self.provider, &join_config(), welcome)
            .map_err(mls("processing the Welcome"))?
            // Leaves that never updated keep their KeyPackage's lifetime,
            // which may have ended in a long-lived group; that does not make
            // the group invalid.
            .skip_lifetime_validation()
            .build()
            .map_err(mls("processing the Welcome"))?
            .into_group(&self.provider)
            .map_err(mls("joining from the Welcome"))
    }

    /// Joins by external commit from a GroupInfo (an MLSMessage). The
    /// returned group is already in the new epoch: if the service refuses
    /// the commit, delete the group and start over from a fresh GroupInfo.
    pub fn join_externally(
        &self,
        group_info: &[u8],
    ) -> Result<(MlsGroup, CommitMessageBundle), DeviceError> {
        let group_info = parse_group_info(group_info)?;
        let leaf = LeafNodeParameters::builder()
            .with_capabilities(capabilities())
            .build();
        MlsGroup::external_commit_builder()
            .with_config(join_config())
            // As for Welcomes: old leaves' lifetimes do not invalidate a group.
            .skip_lifetime_validation()
            .build_group(&self.provider, group_info, self.credential.clone())
            .map_err(mls("starting the external commit"))?
            .leaf_node_parameters(leaf)
            .load_psks(self.provider.storage())
            .map_err(mls("building the external commit"))?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(mls("building the external commit"))?
            .finalize(&self.provider)
            .map_err(mls("building the external commit"))
    }

    /// Builds and stages a commit from `build` (which chooses the
    /// proposals); the group holds it as its pending commit until
    /// [`Installation::merge_pending`] or [`Installation::discard_pending`].
    pub fn stage_commit(
        &self,
        group: &mut MlsGroup,
        build: impl for<'a> FnOnce(CommitBuilder<'a, Initial>) -> CommitBuilder<'a, Initial>,
    ) -> Result<StagedMessages, DeviceError> {
        let bundle = build(group.commit_builder())
            .load_psks(self.provider.storage())
            .map_err(mls("building a commit"))?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(mls("building a commit"))?
            .stage_commit(&self.provider)
            .map_err(mls("staging a commit"))?;
        // With the ratchet tree extension on, OpenMLS signs a GroupInfo for
        // the new epoch with every commit.
        let messages = staged_messages(bundle);
        if messages.is_err() {
            self.discard_pending(group)?;
        }
        messages
    }

    /// Applies the group's pending commit (the service accepted it).
    pub fn merge_pending(&self, group: &mut MlsGroup) -> Result<(), DeviceError> {
        group
            .merge_pending_commit(&self.provider)
            .map_err(mls("merging the accepted commit"))
    }

    /// Drops the group's pending commit (the service refused it).
    pub fn discard_pending(&self, group: &mut MlsGroup) -> Result<(), DeviceError> {
        group
            .clear_pending_commit(self.provider.storage())
            .map_err(mls("discarding the rejected commit"))
    }

    /// Encrypts an application message in the group's current epoch.
    pub fn encrypt(&self, group: &mut MlsGroup, plaintext: &[u8]) -> Result<Bytes, DeviceError> {
        let message = group
            .create_message(&self.provider, &self.signer, plaintext)
            .map_err(mls("encrypting a message"))?;
        to_bytes(&message)
    }
}

/// A commit bundle's messages as the lexicon's bytes.
pub fn staged_messages(bundle: CommitMessageBundle) -> Result<StagedMessages, DeviceError> {
    let (commit, welcome, group_info) = bundle.into_messages();
    let group_info = group_info.ok_or_else(|| DeviceError::Mls {
        action: "staging a commit",
        message: "OpenMLS made no GroupInfo for the new epoch".to_owned(),
    })?;
    Ok(StagedMessages {
        commit: to_bytes(&commit)?,
        welcome: welcome.as_ref().map(to_bytes).transpose()?,
        group_info: to_bytes(&group_info)?,
    })
}

/// The wire form of an outgoing message, as the lexicon's bytes.
pub fn to_bytes(message: &MlsMessageOut) -> Result<Bytes, DeviceError> {
    message
        .tls_serialize_detached()
        .map(Bytes)
        .map_err(mls("serializing an MLS message"))
}

fn parse_group_info(bytes: &[u8]) -> Result<VerifiableGroupInfo, DeviceError> {
    match read_body(bytes, "the GroupInfo")? {
        MlsMessageBodyIn::GroupInfo(group_info) => Ok(group_info),
        _ => Err(DeviceError::Unexpected(
            "an MLSMessage that is not a GroupInfo where a GroupInfo belongs".to_owned(),
        )),
    }
}
