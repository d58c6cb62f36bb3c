//! A member device for tests that need what the SDK's `Device` leaves to
//! the app: a commit prepared but not yet submitted, bytes to tamper with,
//! a key rotation to another identity. It is the SDK's [`Device`] with the
//! test's conveniences (unwraps, raw submissions) around it.

use std::cell::Cell;

use catbird_generated::lexicons::blue::catbird::mls::defs::{CipherSuite, ConvoMetadata};
use catbird_generated::lexicons::blue::catbird::mls::{
    Client, add_members, commit_group_change, create_convo, get_key_packages, publish_key_packages,
    send_message,
};
use catbird_generated::runtime::xrpc::ClientError;
use catbird_generated::runtime::{Bytes, Did};
use catbird_mls_client::{Change, Device, Installation, LocalIdentity, StagedMessages, to_bytes};
use catbird_mls_core::mls_crypto::to_hex;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    BasicCredential, CredentialWithKey, GroupId, KeyPackage, MlsGroup, MlsMessageBodyIn,
    MlsMessageIn, NewSignerBundle, ProcessedMessageContent, ProtocolVersion,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::OpenMlsProvider as _;
use openmls_traits::random::OpenMlsRand as _;

use super::TestApp;
use super::mls::{self, SUITE, SUITE_NAME};

/// A member device: the SDK's [`Device`] acting as its user.
pub struct Member {
    pub device: Device,
    /// The device's generated client, for raw submissions.
    pub client: Client,
    messages_sent: Cell<u64>,
}

/// A staged commit, held by the group as its pending commit until it is
/// merged ([`Member::merge`]) or discarded ([`Member::discard`]).
pub type Prepared = StagedMessages;

impl Member {
    pub fn new(app: &TestApp, user: &LocalIdentity, name: &str) -> Self {
        let client = app.client(user);
        Self {
            device: Device::new(&user.did, name, client.clone()).unwrap(),
            client,
            messages_sent: Cell::new(0),
        }
    }

    /// The OpenMLS installation under the device.
    pub fn mls(&self) -> &Installation {
        self.device.installation()
    }

    /// The device's credential identity, `did#device`.
    pub fn id(&self) -> &str {
        self.mls().identity()
    }

    pub async fn publish_key_package(&self) {
        let input = publish_key_packages::Input {
            extra: Default::default(),
            key_packages: vec![mls::key_package(self.mls())],
        };
        self.client.publish_key_packages(&input).await.unwrap();
    }

    /// Creates a group with this member alone and registers it.
    pub async fn create_convo(&mut self) -> String {
        self.device.create_convo("test").await.unwrap()
    }

    /// createConvo's input for a new group with this member alone; the
    /// group is kept, but only the SDK's create registers its log.
    pub fn prepare_convo(&mut self) -> create_convo::Input {
        let random = self.mls().provider().rand().random_vec(16).unwrap();
        let group = self
            .mls()
            .create_group(&GroupId::from_slice(&random))
            .unwrap();
        create_convo::Input {
            extra: Default::default(),
            group_id: to_hex(group.group_id().as_slice()),
            cipher_suite: CipherSuite::Mls128Dhkemx25519Aes128gcmSha256Ed25519,
            group_info: self.exported_group_info(&group),
            metadata: Some(ConvoMetadata {
                extra: Default::default(),
                name: Some("test".to_owned()),
                description: None,
            }),
            idempotency_key: None,
        }
    }

    /// Adds `did`'s device that has a KeyPackage, with addMembers.
    pub async fn add(&mut self, convo: &str, did: &Did) {
        self.device
            .add(convo, std::slice::from_ref(did))
            .await
            .unwrap();
    }

    /// addMembers' input adding `did`'s devices that have a KeyPackage; the
    /// commit stays pending until [`Member::merge`].
    pub async fn prepare_add(&mut self, convo: &str, did: &Did) -> add_members::Input {
        let offered = self
            .client
            .get_key_packages(&get_key_packages::Params {
                dids: vec![did.clone()],
                cipher_suite: SUITE_NAME.to_owned(),
                convo_id: Some(convo.to_owned()),
            })
            .await
            .unwrap();
        let key_packages: Vec<KeyPackage> = offered
            .key_packages
            .iter()
            .map(|offer| validated(self.mls(), &offer.key_package))
            .collect();
        assert!(!key_packages.is_empty(), "{did:?} has a KeyPackage");
        let staged = self
            .device
            .prepare(convo, Change::Add(key_packages))
            .unwrap();
        add_members::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            commit: staged.commit,
            welcome: staged.welcome.expect("a Welcome for the added device"),
            group_info: staged.group_info,
            idempotency_key: None,
        }
    }

    /// Joins from this device's Welcome and confirms it.
    pub async fn join(&mut self, convo: &str) {
        self.device.join_from_welcome(convo).await.unwrap();
    }

    pub fn group(&self, convo: &str) -> MlsGroup {
        self.device
            .group(convo)
            .unwrap_or_else(|e| panic!("{}: {e}", self.id()))
    }

    pub fn epoch(&self, convo: &str) -> u64 {
        self.device.epoch(convo).unwrap()
    }

    /// The signed GroupInfo of the current epoch, with the ratchet tree.
    pub fn group_info(&self, convo: &str) -> Vec<u8> {
        self.exported_group_info(&self.group(convo)).0
    }

    pub fn exported_group_info(&self, group: &MlsGroup) -> Bytes {
        to_bytes(&self.mls().group_info(group, true).unwrap()).unwrap()
    }

    /// Stages a self-update (with any pending proposals), not submitted.
    pub fn prepare_self_update(&self, convo: &str) -> Prepared {
        self.device.prepare(convo, Change::SelfUpdate).unwrap()
    }

    /// Stages a self-update whose GroupInfo carries the ratchet tree or not.
    pub fn prepare_self_update_with(&self, convo: &str, ratchet_tree: bool) -> Prepared {
        let mut group = self.group(convo);
        let bundle = group
            .commit_builder()
            .force_self_update(true)
            .load_psks(self.mls().provider().storage())
            .unwrap()
            .use_ratchet_tree_extension(ratchet_tree)
            .build(
                self.mls().provider().rand(),
                self.mls().provider().crypto(),
                self.mls().signer(),
                |_| true,
            )
            .unwrap()
            .stage_commit(self.mls().provider())
            .unwrap();
        catbird_mls_client::staged_messages(bundle).unwrap()
    }

    /// Stages a self-update whose new leaf has a fresh signature key and
    /// the credential `identity` (the commit is signed with the old key, as
    /// members verify it against the old leaf), not submitted. Returns the
    /// new key too: once the commit is merged, the member signs with it.
    pub fn prepare_key_rotation(
        &self,
        convo: &str,
        identity: &str,
    ) -> (Prepared, SignatureKeyPair) {
        let signer = SignatureKeyPair::new(SUITE.signature_algorithm()).unwrap();
        let new_signer = NewSignerBundle {
            signer: &signer,
            credential_with_key: CredentialWithKey {
                credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
                signature_key: signer.public().into(),
            },
        };
        let mut group = self.group(convo);
        let bundle = group
            .commit_builder()
            .force_self_update(true)
            .load_psks(self.mls().provider().storage())
            .unwrap()
            .build_with_new_signer(
                self.mls().provider().rand(),
                self.mls().provider().crypto(),
                self.mls().signer(),
                new_signer,
                |_| true,
            )
            .unwrap()
            .stage_commit(self.mls().provider())
            .unwrap();
        (catbird_mls_client::staged_messages(bundle).unwrap(), signer)
    }

    pub async fn submit(
        &self,
        convo: &str,
        prepared: &Prepared,
    ) -> Result<commit_group_change::Output, ClientError<commit_group_change::Error>> {
        self.submit_raw(
            convo,
            prepared.commit.0.clone(),
            prepared.group_info.0.clone(),
        )
        .await
    }

    /// commitGroupChange with whatever bytes the test chose.
    pub async fn submit_raw(
        &self,
        convo: &str,
        commit: Vec<u8>,
        group_info: Vec<u8>,
    ) -> Result<commit_group_change::Output, ClientError<commit_group_change::Error>> {
        let input = commit_group_change::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            commit: Bytes(commit),
            group_info: Bytes(group_info),
            idempotency_key: None,
        };
        self.client.commit_group_change(&input).await
    }

    /// Submits the pending commit, which must be accepted, and merges it.
    pub async fn submit_and_merge(&mut self, convo: &str, prepared: &Prepared) -> u64 {
        let accepted = self.submit(convo, prepared).await.unwrap();
        self.merge(convo, accepted.seq);
        assert_eq!(accepted.epoch, self.epoch(convo) as i64);
        self.epoch(convo)
    }

    /// A self-update, prepared, submitted and merged. Returns the new epoch.
    pub async fn self_update(&mut self, convo: &str) -> u64 {
        let prepared = self.prepare_self_update(convo);
        self.submit_and_merge(convo, &prepared).await
    }

    /// Applies the pending commit, which the service accepted at `seq`.
    pub fn merge(&mut self, convo: &str, seq: i64) {
        self.device.conclude(convo, Some(seq)).unwrap();
    }

    /// Marks the entry at `seq` as applied already, so that [`Self::sync`]
    /// skips it.
    pub fn applied(&mut self, convo: &str, seq: i64) {
        self.device.skip(convo, seq);
    }

    /// Applies another member's commit that the service has not accepted
    /// (yet), and returns this member's signed GroupInfo of the new epoch.
    /// Once the service accepts the commit, mark it [`Self::applied`].
    pub fn apply_ahead(&self, convo: &str, commit: &Bytes) -> Vec<u8> {
        let mut group = self.group(convo);
        let message = MlsMessageIn::tls_deserialize_exact(&commit.0)
            .unwrap()
            .try_into_protocol_message()
            .unwrap();
        let processed = group
            .process_message(self.mls().provider(), message)
            .unwrap();
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            panic!("not a commit");
        };
        group
            .merge_staged_commit(self.mls().provider(), *staged)
            .unwrap();
        self.exported_group_info(&group).0
    }

    /// Drops the pending commit, which the service rejected.
    pub fn discard(&mut self, convo: &str) {
        self.device.conclude(convo, None).unwrap();
    }

    /// sendMessage's input for `text`, encrypted in the current epoch.
    pub fn encrypt(&self, convo: &str, text: &str) -> send_message::Input {
        let mut group = self.group(convo);
        let ciphertext = self.mls().encrypt(&mut group, text.as_bytes()).unwrap();
        let sent = self.messages_sent.get() + 1;
        self.messages_sent.set(sent);
        send_message::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            msg_id: format!("{}-{sent}", self.id()),
            ciphertext,
            epoch: group.epoch().as_u64() as i64,
            padded_size: None,
            idempotency_key: None,
        }
    }

    pub async fn send(&mut self, convo: &str, text: &str) -> i64 {
        self.device.send(convo, text).await.unwrap()
    }

    /// Reads the log from where this member stopped and applies it.
    /// Returns the plaintexts of the other members' messages, in order.
    pub async fn sync(&mut self, convo: &str) -> Vec<String> {
        let received = self.device.sync(convo).await;
        let received = received.unwrap_or_else(|e| panic!("{} syncing: {e}", self.id()));
        received.into_iter().map(|message| message.text).collect()
    }
}

/// A KeyPackage (an MLSMessage) as `installation` validates it.
pub fn validated(installation: &Installation, bytes: &Bytes) -> KeyPackage {
    let message = MlsMessageIn::tls_deserialize_exact(&bytes.0).unwrap();
    let MlsMessageBodyIn::KeyPackage(key_package) = message.extract() else {
        panic!("not a KeyPackage");
    };
    key_package
        .validate(installation.provider().crypto(), ProtocolVersion::Mls10)
        .unwrap()
}
