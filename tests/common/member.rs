//! A member device driven with OpenMLS directly, for tests that need what
//! the demo's `Device` hides: a commit prepared but not yet submitted, bytes
//! to tamper with, a key rotation to another identity.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use catbird_generated::lexicons::blue::catbird::mls::defs::{CipherSuite, ConvoMetadata};
use catbird_generated::lexicons::blue::catbird::mls::{
    Client, add_members, commit_group_change, confirm_welcome, create_convo, get_key_packages,
    get_messages, get_welcome, publish_key_packages, send_message,
};
use catbird_generated::runtime::xrpc::ClientError;
use catbird_generated::runtime::{Bytes, Did};
use catbird_mls::auth::LocalIdentity;
use catbird_mls::mls_crypto::{from_hex, to_hex};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, GroupId, KeyPackage, MlsGroup, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, NewSignerBundle, ProcessedMessageContent, ProtocolVersion,
    StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::OpenMlsProvider as _;

use catbird_mls::demo::mls::{create_config, join_config};

use super::TestApp;
use super::mls::{self, SUITE, SUITE_NAME};

/// A member device: a test device (own signature key and OpenMLS storage)
/// and the generated client acting as its user. Like the demo's `Device`,
/// it merges a commit only after the service accepted it; unlike it, it can
/// prepare a commit and leave the submission to the test.
pub struct Member {
    pub mls: mls::Device,
    pub client: Client,
    /// Per conversation: how far this member has read the log.
    logs: HashMap<String, Log>,
    messages_sent: Cell<u64>,
}

#[derive(Default)]
pub struct Log {
    last_seq: i64,
    /// Entries this member submitted itself, already applied locally.
    own: HashSet<i64>,
}

/// A staged commit, held by the group as its pending commit until it is
/// merged ([`Member::merge`]) or discarded ([`Member::discard`]).
pub struct Prepared {
    pub commit: Bytes,
    /// For the epoch the commit creates, signed by the committer.
    pub group_info: Bytes,
}

impl Member {
    pub fn new(app: &TestApp, user: &LocalIdentity, name: &str) -> Self {
        Self {
            mls: mls::Device::new(&user.did, name),
            client: app.client(user),
            logs: HashMap::new(),
            messages_sent: Cell::new(0),
        }
    }

    pub async fn publish_key_package(&self) {
        let input = publish_key_packages::Input {
            extra: Default::default(),
            key_packages: vec![self.mls.key_package()],
        };
        self.client.publish_key_packages(&input).await.unwrap();
    }

    /// Creates a group with this member alone and registers it.
    pub async fn create_convo(&mut self) -> String {
        let input = self.prepare_convo();
        self.client.create_convo(&input).await.unwrap();
        self.logs.insert(input.group_id.clone(), Log::default());
        input.group_id
    }

    /// createConvo's input for a new group with this member alone; the
    /// group is kept, the log registered only by [`Member::create_convo`].
    pub fn prepare_convo(&mut self) -> create_convo::Input {
        let group = MlsGroup::new(
            &self.mls.provider,
            &self.mls.signer,
            &create_config(),
            self.mls.credential.clone(),
        )
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
        let input = self.prepare_add(convo, did).await;
        let added = self.client.add_members(&input).await.unwrap();
        self.merge(convo, added.seq);
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
            .map(|offer| {
                let MlsMessageBodyIn::KeyPackage(key_package) = read_body(&offer.key_package.0)
                else {
                    panic!("getKeyPackages returned something else than a KeyPackage");
                };
                key_package
                    .validate(self.mls.provider.crypto(), ProtocolVersion::Mls10)
                    .unwrap()
            })
            .collect();
        assert!(!key_packages.is_empty(), "{did:?} has a KeyPackage");

        let mut group = self.group(convo);
        let bundle = group
            .commit_builder()
            .propose_adds(key_packages)
            .load_psks(self.mls.provider.storage())
            .unwrap()
            .build(
                self.mls.provider.rand(),
                self.mls.provider.crypto(),
                &self.mls.signer,
                |_| true,
            )
            .unwrap()
            .stage_commit(&self.mls.provider)
            .unwrap();
        let (commit, welcome, group_info) = bundle.into_messages();
        add_members::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            commit: to_bytes(&commit),
            welcome: to_bytes(&welcome.expect("a Welcome for the added device")),
            group_info: to_bytes(&group_info.expect("a GroupInfo for the new epoch")),
            idempotency_key: None,
        }
    }

    /// Joins from this device's Welcome and confirms it.
    pub async fn join(&mut self, convo: &str) {
        let device_id = self.mls.id.clone();
        let fetched = self
            .client
            .get_welcome(&get_welcome::Params {
                convo_id: convo.to_owned(),
                device_id: device_id.clone(),
            })
            .await
            .unwrap();
        let MlsMessageBodyIn::Welcome(welcome) = read_body(&fetched.welcome.0) else {
            panic!("getWelcome returned something else than a Welcome");
        };
        StagedWelcome::build_from_welcome(&self.mls.provider, &join_config(), welcome)
            .unwrap()
            .skip_lifetime_validation()
            .build()
            .unwrap()
            .into_group(&self.mls.provider)
            .unwrap();
        let confirmation = confirm_welcome::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            device_id,
            success: true,
            error_details: None,
        };
        self.client.confirm_welcome(&confirmation).await.unwrap();
        self.logs.insert(
            convo.to_owned(),
            Log {
                last_seq: fetched.commit_seq,
                own: HashSet::new(),
            },
        );
    }

    pub fn group(&self, convo: &str) -> MlsGroup {
        let group_id = GroupId::from_slice(&from_hex(convo).unwrap());
        MlsGroup::load(self.mls.provider.storage(), &group_id)
            .unwrap()
            .unwrap_or_else(|| panic!("{} is not in {convo}", self.mls.id))
    }

    pub fn epoch(&self, convo: &str) -> u64 {
        self.group(convo).epoch().as_u64()
    }

    /// The signed GroupInfo of the current epoch, with the ratchet tree.
    pub fn group_info(&self, convo: &str) -> Vec<u8> {
        self.exported_group_info(&self.group(convo)).0
    }

    pub fn exported_group_info(&self, group: &MlsGroup) -> Bytes {
        let group_info = group
            .export_group_info(self.mls.provider.crypto(), &self.mls.signer, true)
            .unwrap();
        to_bytes(&group_info)
    }

    /// Stages a self-update (with any pending proposals), not submitted.
    pub fn prepare_self_update(&self, convo: &str) -> Prepared {
        self.prepare_self_update_with(convo, true)
    }

    /// Stages a self-update whose GroupInfo carries the ratchet tree or not.
    pub fn prepare_self_update_with(&self, convo: &str, ratchet_tree: bool) -> Prepared {
        let mut group = self.group(convo);
        let bundle = group
            .commit_builder()
            .force_self_update(true)
            .load_psks(self.mls.provider.storage())
            .unwrap()
            .use_ratchet_tree_extension(ratchet_tree)
            .build(
                self.mls.provider.rand(),
                self.mls.provider.crypto(),
                &self.mls.signer,
                |_| true,
            )
            .unwrap()
            .stage_commit(&self.mls.provider)
            .unwrap();
        prepared(bundle.into_messages())
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
            .load_psks(self.mls.provider.storage())
            .unwrap()
            .build_with_new_signer(
                self.mls.provider.rand(),
                self.mls.provider.crypto(),
                &self.mls.signer,
                new_signer,
                |_| true,
            )
            .unwrap()
            .stage_commit(&self.mls.provider)
            .unwrap();
        (prepared(bundle.into_messages()), signer)
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
        self.group(convo)
            .merge_pending_commit(&self.mls.provider)
            .unwrap();
        self.logs
            .entry(convo.to_owned())
            .or_default()
            .own
            .insert(seq);
    }

    /// Marks the entry at `seq` as applied already, so that [`Self::sync`]
    /// skips it.
    pub fn applied(&mut self, convo: &str, seq: i64) {
        self.logs
            .entry(convo.to_owned())
            .or_default()
            .own
            .insert(seq);
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
        let processed = group.process_message(&self.mls.provider, message).unwrap();
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            panic!("not a commit");
        };
        group
            .merge_staged_commit(&self.mls.provider, *staged)
            .unwrap();
        self.exported_group_info(&group).0
    }

    /// Drops the pending commit, which the service rejected.
    pub fn discard(&self, convo: &str) {
        self.group(convo)
            .clear_pending_commit(self.mls.provider.storage())
            .unwrap();
    }

    /// sendMessage's input for `text`, encrypted in the current epoch.
    pub fn encrypt(&self, convo: &str, text: &str) -> send_message::Input {
        let mut group = self.group(convo);
        let ciphertext = group
            .create_message(&self.mls.provider, &self.mls.signer, text.as_bytes())
            .unwrap();
        let sent = self.messages_sent.get() + 1;
        self.messages_sent.set(sent);
        send_message::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            msg_id: format!("{}-{sent}", self.mls.id),
            ciphertext: to_bytes(&ciphertext),
            epoch: group.epoch().as_u64() as i64,
            padded_size: None,
            idempotency_key: None,
        }
    }

    pub async fn send(&mut self, convo: &str, text: &str) -> i64 {
        let input = self.encrypt(convo, text);
        let seq = self.client.send_message(&input).await.unwrap().seq;
        self.logs
            .entry(convo.to_owned())
            .or_default()
            .own
            .insert(seq);
        seq
    }

    /// Reads the log from where this member stopped and applies it.
    /// Returns the plaintexts of the other members' messages, in order.
    pub async fn sync(&mut self, convo: &str) -> Vec<String> {
        let mut group = self.group(convo);
        let mut texts = Vec::new();
        let log = self.logs.entry(convo.to_owned()).or_default();
        loop {
            let since = log.last_seq;
            let page = self
                .client
                .get_messages(&get_messages::Params {
                    convo_id: convo.to_owned(),
                    since_seq: since,
                    limit: 100,
                })
                .await
                .unwrap();
            for entry in page.messages {
                log.last_seq = entry.seq;
                if log.own.remove(&entry.seq) {
                    continue;
                }
                let message = MlsMessageIn::tls_deserialize_exact(&entry.payload.0)
                    .unwrap()
                    .try_into_protocol_message()
                    .unwrap();
                let processed = group
                    .process_message(&self.mls.provider, message)
                    .unwrap_or_else(|e| {
                        panic!("{} processing seq {}: {e}", self.mls.id, entry.seq)
                    });
                match processed.into_content() {
                    ProcessedMessageContent::ApplicationMessage(message) => {
                        texts.push(String::from_utf8(message.into_bytes()).unwrap());
                    }
                    ProcessedMessageContent::StagedCommitMessage(commit) => group
                        .merge_staged_commit(&self.mls.provider, *commit)
                        .unwrap(),
                    ProcessedMessageContent::ProposalMessage(proposal) => group
                        .store_pending_proposal(self.mls.provider.storage(), *proposal)
                        .unwrap(),
                    _ => panic!("{}: unexpected log entry {}", self.mls.id, entry.seq),
                }
            }
            if page.last_seq == since {
                return texts;
            }
            log.last_seq = page.last_seq;
        }
    }
}

/// A staged commit's messages; a member commit always comes with a
/// GroupInfo, as the groups use the ratchet tree extension.
pub fn prepared(
    (commit, _, group_info): (MlsMessageOut, Option<MlsMessageOut>, Option<MlsMessageOut>),
) -> Prepared {
    Prepared {
        commit: to_bytes(&commit),
        group_info: to_bytes(&group_info.expect("a GroupInfo for the new epoch")),
    }
}

pub fn to_bytes(message: &MlsMessageOut) -> Bytes {
    Bytes(message.tls_serialize_detached().unwrap())
}

pub fn read_body(bytes: &[u8]) -> MlsMessageBodyIn {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .extract()
}
