//! One device of a user as a real MLS client of the service: its own
//! signature key and OpenMLS state, and the generated client acting as its
//! user. Every operation is the sequence an app would run: build the MLS
//! message locally, submit it, and apply it locally only once the service
//! has accepted it.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use catbird_generated::lexicons::blue::catbird::mls::defs::{
    ConvoMetadata, KeyPackageInfo, MessageView,
};
use catbird_generated::lexicons::blue::catbird::mls::{
    Client, add_members, commit_group_change, confirm_welcome, create_convo, get_group_info,
    get_key_packages, get_messages, get_welcome, leave_convo, process_external_commit,
    publish_key_packages, remove_member, send_message,
};
use catbird_generated::runtime::{Bytes, Did};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, GroupEpoch, GroupId, KeyPackage, KeyPackageBuilder,
    LeafNodeIndex, LeafNodeParameters, MlsGroup, MlsMessageBodyIn, MlsMessageOut,
    ProcessedMessageContent, ProtocolVersion, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use openmls_traits::random::OpenMlsRand as _;

use super::error::{DeviceError, mls};
use super::mls::{
    SUITE, capabilities, create_config, describe, device_of, join_config, lexicon_suite, read_body,
    read_message, to_bytes,
};
use crate::device::DeviceId;
use crate::mls_crypto::{from_hex, to_hex};

/// getMessages page size: the lexicon's maximum.
const PAGE_SIZE: i64 = 100;

/// How often a rejoin is retried when another commit wins the epoch.
const REJOIN_ATTEMPTS: usize = 5;

/// One device of a user. Its groups live in its provider's storage.
pub struct Device {
    id: DeviceId,
    client: Client,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    /// Per conversation (by convo id): how far this device has read the log.
    logs: HashMap<String, LogPosition>,
}

/// Where a device stands in one conversation's log.
#[derive(Debug, Default)]
struct LogPosition {
    /// The last seq processed (or skipped): the next `sinceSeq`.
    last_seq: i64,
    /// Entries this device submitted itself: already applied locally when
    /// the service accepted them, so reading them back would apply them twice.
    own: HashSet<i64>,
}

/// An application message as the receiving device decrypted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its log position.
    pub seq: i64,
    /// The sending device (`did#device`), as its MLS credential says.
    pub sender: String,
    /// The plaintext.
    pub text: String,
}

/// A leaf in a device's local view of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMember {
    /// The leaf index in the ratchet tree.
    pub leaf_index: u32,
    /// The leaf's credential identity (`did#device`).
    pub device_id: String,
}

/// What a commit changes; see [`Device::stage_commit`].
enum Change {
    Add(Vec<KeyPackage>),
    Remove(Vec<LeafNodeIndex>),
    SelfUpdate,
}

/// A staged commit's messages, ready to submit.
struct StagedMessages {
    commit: Bytes,
    /// Present when the commit adds devices.
    welcome: Option<Bytes>,
    /// For the epoch the commit creates.
    group_info: Bytes,
}

impl Device {
    /// A new device `<did>#<name>` with a fresh signature key and no groups;
    /// `client` must act as `did` (mint its tokens).
    pub fn new(did: &Did, name: &str, client: Client) -> Result<Self, DeviceError> {
        let id = DeviceId::parse(&format!("{}#{name}", did.as_str()))?;
        let signer = SignatureKeyPair::new(SUITE.signature_algorithm())
            .map_err(|error| mls("making a signature key")(format!("{error:?}")))?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(id.to_string().into_bytes()).into(),
            signature_key: signer.public().into(),
        };
        Ok(Self {
            id,
            client,
            provider: OpenMlsRustCrypto::default(),
            signer,
            credential,
            logs: HashMap::new(),
        })
    }

    /// The device's identity, `did#device`.
    pub fn id(&self) -> &DeviceId {
        &self.id
    }

    /// The generated client, acting as the device's user.
    pub fn client(&self) -> &Client {
        &self.client
    }

    // ---- KeyPackages ---------------------------------------------------------

    /// Publishes `count` fresh KeyPackages and a last-resort one, so that
    /// others can add this device even after the fresh ones are used up.
    /// Their private keys stay in this device's storage, for its Welcomes.
    pub async fn publish_key_packages(
        &mut self,
        count: usize,
    ) -> Result<Vec<KeyPackageInfo>, DeviceError> {
        let mut key_packages = (0..count)
            .map(|_| self.key_package(false))
            .collect::<Result<Vec<_>, _>>()?;
        key_packages.push(self.key_package(true)?);
        let input = publish_key_packages::Input {
            extra: Default::default(),
            key_packages,
        };
        Ok(self.client.publish_key_packages(&input).await?.key_packages)
    }

    /// A new KeyPackage as an MLSMessage.
    fn key_package(&self, last_resort: bool) -> Result<Bytes, DeviceError> {
        let mut builder = KeyPackageBuilder::new().leaf_node_capabilities(capabilities());
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(SUITE, &self.provider, &self.signer, self.credential.clone())
            .map_err(mls("building a KeyPackage"))?;
        to_bytes(&MlsMessageOut::from(bundle.key_package().clone()))
    }

    // ---- creating and joining --------------------------------------------------

    /// Creates a group with this device as its only member and registers it
    /// as a conversation named `name`. Returns the convo id (the group id in
    /// hex).
    pub async fn create_convo(&mut self, name: &str) -> Result<String, DeviceError> {
        let random = self
            .provider
            .rand()
            .random_vec(16)
            .map_err(mls("choosing a group id"))?;
        let group_id = GroupId::from_slice(&random);
        let mut group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create_config(),
            group_id.clone(),
            self.credential.clone(),
        )
        .map_err(mls("creating the group"))?;
        let group_info = group
            .export_group_info(self.provider.crypto(), &self.signer, true)
            .map_err(mls("exporting the GroupInfo"))?;
        let input = create_convo::Input {
            extra: Default::default(),
            group_id: to_hex(group_id.as_slice()),
            cipher_suite: lexicon_suite(),
            group_info: to_bytes(&group_info)?,
            metadata: Some(ConvoMetadata {
                extra: Default::default(),
                name: Some(name.to_owned()),
                description: None,
            }),
            idempotency_key: None,
        };
        match self.client.create_convo(&input).await {
            Ok(output) => {
                // The creator reads the whole log, from the start.
                self.logs
                    .insert(input.group_id.clone(), LogPosition::default());
                Ok(output.convo.group_id)
            }
            Err(error) => {
                self.delete_group(&group_id, &mut group)?;
                Err(error.into())
            }
        }
    }

    /// Joins a conversation this device was added to: fetches its Welcome,
    /// joins the group, and confirms (or reports the failure, so that the
    /// Welcome becomes available again). Returns the epoch joined at.
    pub async fn join_from_welcome(&mut self, convo: &str) -> Result<u64, DeviceError> {
        let params = get_welcome::Params {
            convo_id: convo.to_owned(),
            device_id: self.id.to_string(),
        };
        let fetched = self.client.get_welcome(&params).await?;
        let joined = self.group_from_welcome(&fetched.welcome);
        let confirmation = confirm_welcome::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            device_id: self.id.to_string(),
            success: joined.is_ok(),
            error_details: joined
                .as_ref()
                .err()
                .map(|error| truncate(&error.to_string())),
        };
        let confirmed = self.client.confirm_welcome(&confirmation).await;
        let group = joined?;
        confirmed?;
        // The log before the commit that added this device is not ours to read.
        self.logs.insert(
            convo.to_owned(),
            LogPosition {
                last_seq: fetched.commit_seq,
                own: HashSet::new(),
            },
        );
        Ok(group.epoch().as_u64())
    }

    fn group_from_welcome(&self, welcome: &Bytes) -> Result<MlsGroup, DeviceError> {
        let MlsMessageBodyIn::Welcome(welcome) = read_body(&welcome.0, "the Welcome")? else {
            return Err(DeviceError::Unexpected(
                "getWelcome returned an MLSMessage that is not a Welcome".to_owned(),
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

    /// Joins a conversation by external commit from its current GroupInfo:
    /// a device that lost its state, or a new device of a member user. The
    /// device's old group, if any, is deleted first. An external commit is
    /// merged before it is submitted, so when another commit wins the epoch
    /// the new group is deleted and the join starts over. Returns the epoch.
    pub async fn rejoin(&mut self, convo: &str) -> Result<u64, DeviceError> {
        let group_id = group_id(convo)?;
        if let Some(mut old) = self.stored_group(&group_id)? {
            self.delete_group(&group_id, &mut old)?;
        }
        let mut attempt = 1;
        loop {
            let (mut group, input) = self.external_commit(convo).await?;
            match self.client.process_external_commit(&input).await {
                Ok(accepted) => {
                    self.logs.insert(
                        convo.to_owned(),
                        LogPosition {
                            last_seq: accepted.seq,
                            own: HashSet::new(),
                        },
                    );
                    return Ok(group.epoch().as_u64());
                }
                Err(error) => {
                    self.delete_group(&group_id, &mut group)?;
                    let error = DeviceError::from(error);
                    if !error.is_epoch_mismatch() || attempt == REJOIN_ATTEMPTS {
                        return Err(error);
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Builds an external commit from the current GroupInfo; the returned
    /// group is already in the new epoch.
    async fn external_commit(
        &self,
        convo: &str,
    ) -> Result<(MlsGroup, process_external_commit::Input), DeviceError> {
        let params = get_group_info::Params {
            convo_id: convo.to_owned(),
        };
        let current = self.client.get_group_info(&params).await?;
        let MlsMessageBodyIn::GroupInfo(group_info) =
            read_body(&current.group_info.0, "the GroupInfo")?
        else {
            return Err(DeviceError::Unexpected(
                "getGroupInfo returned an MLSMessage that is not a GroupInfo".to_owned(),
            ));
        };
        let leaf = LeafNodeParameters::builder()
            .with_capabilities(capabilities())
            .build();
        let (group, bundle) = MlsGroup::external_commit_builder()
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
            .map_err(mls("building the external commit"))?;
        // The group is merged, so its GroupInfo is the new epoch's.
        let new_group_info = group
            .export_group_info(self.provider.crypto(), &self.signer, true)
            .map_err(mls("exporting the GroupInfo"))?;
        let input = process_external_commit::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            external_commit: to_bytes(bundle.commit())?,
            group_info: to_bytes(&new_group_info)?,
            idempotency_key: None,
        };
        Ok((group, input))
    }

    // ---- messages --------------------------------------------------------------

    /// Encrypts `text` in the current epoch and appends it to the log.
    /// Returns its seq.
    pub async fn send(&mut self, convo: &str, text: &str) -> Result<i64, DeviceError> {
        let mut group = self.group(convo)?;
        let ciphertext = group
            .create_message(&self.provider, &self.signer, text.as_bytes())
            .map_err(mls("encrypting a message"))?;
        let input = send_message::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            msg_id: self.message_id()?,
            ciphertext: to_bytes(&ciphertext)?,
            epoch: lexicon_epoch(group.epoch()),
            padded_size: None,
            idempotency_key: None,
        };
        let sent = self.client.send_message(&input).await?;
        self.log(convo).own.insert(sent.seq);
        Ok(sent.seq)
    }

    /// Reads the log from where this device stopped and applies it: commits
    /// are merged, proposals kept for the commit that covers them, and
    /// application messages decrypted and returned in log order.
    pub async fn sync(&mut self, convo: &str) -> Result<Vec<Received>, DeviceError> {
        let mut group = self.group(convo)?;
        let mut received = Vec::new();
        loop {
            let since = self.log(convo).last_seq;
            let params = get_messages::Params {
                convo_id: convo.to_owned(),
                since_seq: since,
                limit: PAGE_SIZE,
            };
            let page = self.client.get_messages(&params).await?;
            for entry in &page.messages {
                if !self.log(convo).own.remove(&entry.seq) {
                    received.extend(self.apply(&mut group, entry)?);
                }
                self.log(convo).last_seq = entry.seq;
                if !group.is_active() {
                    // Removed from the group: nothing later is for this device.
                    return Ok(received);
                }
            }
            // Also covers entries the service no longer holds (gapInfo).
            let log = self.log(convo);
            log.last_seq = log.last_seq.max(page.last_seq);
            if page.last_seq <= since {
                return Ok(received);
            }
        }
    }

    /// Applies one log entry; returns the plaintext of an application message.
    fn apply(
        &self,
        group: &mut MlsGroup,
        entry: &MessageView,
    ) -> Result<Option<Received>, DeviceError> {
        let what = format!("log entry {}", entry.seq);
        let message = read_message(&entry.payload.0, &what)?
            .try_into_protocol_message()
            .map_err(|error| DeviceError::Unexpected(format!("{what}: {error}")))?;
        let processed = group
            .process_message(&self.provider, message)
            .map_err(|error| DeviceError::Mls {
                action: "processing the log",
                message: format!("{what}: {error}"),
            })?;
        let sender = describe(processed.credential());
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(message) => Ok(Some(Received {
                seq: entry.seq,
                sender,
                text: String::from_utf8_lossy(&message.into_bytes()).into_owned(),
            })),
            ProcessedMessageContent::ProposalMessage(proposal)
            | ProcessedMessageContent::ExternalJoinProposalMessage(proposal) => {
                group
                    .store_pending_proposal(self.provider.storage(), *proposal)
                    .map_err(mls("keeping a proposal"))?;
                Ok(None)
            }
            ProcessedMessageContent::StagedCommitMessage(commit) => {
                group
                    .merge_staged_commit(&self.provider, *commit)
                    .map_err(mls("merging a commit"))?;
                Ok(None)
            }
            // Our own commit whose seq we did not learn (the answer to the
            // submission was lost, yet it was accepted).
            ProcessedMessageContent::OwnPendingCommit => {
                group
                    .merge_pending_commit(&self.provider)
                    .map_err(mls("merging an own commit"))?;
                Ok(None)
            }
            // Our own message: we know what we said.
            ProcessedMessageContent::OwnPrivateMessage => Ok(None),
        }
    }

    // ---- commits -----------------------------------------------------------------

    /// Adds every device of `dids` that has a KeyPackage (and no leaf yet)
    /// in one commit. Returns the added devices.
    pub async fn add(&mut self, convo: &str, dids: &[Did]) -> Result<Vec<String>, DeviceError> {
        let mut group = self.group(convo)?;
        let params = get_key_packages::Params {
            dids: dids.to_vec(),
            cipher_suite: lexicon_suite().as_str().to_owned(),
            convo_id: Some(convo.to_owned()),
        };
        let offered = self.client.get_key_packages(&params).await?;
        if offered.key_packages.is_empty() {
            return Err(DeviceError::NothingToDo(format!(
                "no device of {} has a KeyPackage left",
                list(dids.iter().map(Did::as_str))
            )));
        }
        let key_packages = offered
            .key_packages
            .iter()
            .map(|offer| self.checked_key_package(&offer.key_package, dids))
            .collect::<Result<Vec<_>, _>>()?;
        let added = key_packages
            .iter()
            .map(|key_package| describe(key_package.leaf_node().credential()))
            .collect();

        let staged = self.stage_commit(&mut group, Change::Add(key_packages))?;
        let submitted = match staged.welcome {
            Some(welcome) => {
                let input = add_members::Input {
                    extra: Default::default(),
                    convo_id: convo.to_owned(),
                    commit: staged.commit,
                    welcome,
                    group_info: staged.group_info,
                    idempotency_key: None,
                };
                let submitted = self.client.add_members(&input).await;
                submitted.map(|output| output.seq).map_err(Into::into)
            }
            None => Err(DeviceError::Mls {
                action: "adding devices",
                message: "OpenMLS made no Welcome for a commit with adds".to_owned(),
            }),
        };
        self.conclude_commit(convo, &mut group, submitted)?;
        Ok(added)
    }

    /// A KeyPackage the service handed out, validated, and checked to be for
    /// one of the users asked for: the service is not trusted with that.
    fn checked_key_package(&self, bytes: &Bytes, dids: &[Did]) -> Result<KeyPackage, DeviceError> {
        let MlsMessageBodyIn::KeyPackage(key_package) = read_body(&bytes.0, "a KeyPackage")? else {
            return Err(DeviceError::Unexpected(
                "getKeyPackages returned an MLSMessage that is not a KeyPackage".to_owned(),
            ));
        };
        let key_package = key_package
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(mls("validating a KeyPackage"))?;
        match device_of(key_package.leaf_node().credential()) {
            Some(device) if dids.contains(device.did()) => Ok(key_package),
            _ => Err(DeviceError::Unexpected(format!(
                "getKeyPackages returned a KeyPackage of {}, who was not asked for",
                describe(key_package.leaf_node().credential())
            ))),
        }
    }

    /// Removes every leaf of `did` except this device's own (a device may
    /// not commit its own removal), optionally banning the user. Returns
    /// the removed devices.
    pub async fn remove(
        &mut self,
        convo: &str,
        did: &Did,
        ban: bool,
    ) -> Result<Vec<String>, DeviceError> {
        let mut group = self.group(convo)?;
        let own = group.own_leaf_index();
        let (leaves, removed): (Vec<_>, Vec<_>) = group
            .members()
            .filter(|member| member.index != own)
            .filter_map(|member| {
                let device = device_of(&member.credential)?;
                (device.did() == did).then(|| (member.index, device.to_string()))
            })
            .unzip();
        if leaves.is_empty() {
            return Err(DeviceError::NothingToDo(format!(
                "{} has no leaf in {convo} that this device may remove",
                did.as_str()
            )));
        }

        let staged = self.stage_commit(&mut group, Change::Remove(leaves))?;
        let input = remove_member::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            did: did.clone(),
            commit: staged.commit,
            group_info: staged.group_info,
            ban,
            idempotency_key: None,
        };
        let submitted = self.client.remove_member(&input).await;
        let submitted = submitted.map(|output| output.seq).map_err(Into::into);
        self.conclude_commit(convo, &mut group, submitted)?;
        Ok(removed)
    }

    /// Commits a fresh leaf key for this device, together with every pending
    /// proposal (e.g. another member's leaveConvo). Returns the new epoch.
    pub async fn self_update(&mut self, convo: &str) -> Result<u64, DeviceError> {
        let mut group = self.group(convo)?;
        let staged = self.stage_commit(&mut group, Change::SelfUpdate)?;
        let input = commit_group_change::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            commit: staged.commit,
            group_info: staged.group_info,
            idempotency_key: None,
        };
        let submitted = self.client.commit_group_change(&input).await;
        let submitted = submitted.map(|output| output.seq).map_err(Into::into);
        self.conclude_commit(convo, &mut group, submitted)?;
        Ok(group.epoch().as_u64())
    }

    /// Asks to leave: a Remove proposal for this device's leaf, which
    /// another member commits (e.g. with [`Self::self_update`]).
    pub async fn leave(&mut self, convo: &str) -> Result<(), DeviceError> {
        let mut group = self.group(convo)?;
        let proposal = group
            .leave_group(&self.provider, &self.signer)
            .map_err(mls("proposing to leave"))?;
        let input = leave_convo::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            proposal: to_bytes(&proposal)?,
        };
        match self.client.leave_convo(&input).await {
            Ok(output) => {
                self.log(convo).own.insert(output.seq);
                Ok(())
            }
            Err(error) => {
                // A proposal the service did not log will never be committed.
                group
                    .clear_pending_proposals(self.provider.storage())
                    .map_err(mls("discarding the rejected proposal"))?;
                Err(error.into())
            }
        }
    }

    /// Builds and stages a commit; the group holds it as its pending commit
    /// until [`Self::conclude_commit`].
    fn stage_commit(
        &self,
        group: &mut MlsGroup,
        change: Change,
    ) -> Result<StagedMessages, DeviceError> {
        let builder = group.commit_builder();
        // addMembers and removeMember take only their own kind of proposal,
        // so pending proposals wait for a self-update to commit them.
        let builder = match change {
            Change::Add(key_packages) => builder
                .consume_proposal_store(false)
                .propose_adds(key_packages),
            Change::Remove(leaves) => builder
                .consume_proposal_store(false)
                .propose_removals(leaves),
            Change::SelfUpdate => builder.force_self_update(true),
        };
        let bundle = builder
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
        let (commit, welcome, group_info) = bundle.into_messages();
        let messages = group_info
            .ok_or_else(|| DeviceError::Mls {
                action: "staging a commit",
                message: "OpenMLS made no GroupInfo for the new epoch".to_owned(),
            })
            .and_then(|group_info| {
                Ok(StagedMessages {
                    commit: to_bytes(&commit)?,
                    welcome: welcome.as_ref().map(to_bytes).transpose()?,
                    group_info: to_bytes(&group_info)?,
                })
            });
        if messages.is_err() {
            group
                .clear_pending_commit(self.provider.storage())
                .map_err(mls("discarding a commit"))?;
        }
        messages
    }

    /// Applies the pending commit if the service accepted it (at `seq`), or
    /// discards it if not: after a rejection such as EpochMismatch the
    /// device syncs and builds a new commit.
    fn conclude_commit(
        &mut self,
        convo: &str,
        group: &mut MlsGroup,
        submitted: Result<i64, DeviceError>,
    ) -> Result<(), DeviceError> {
        match submitted {
            Ok(seq) => {
                group
                    .merge_pending_commit(&self.provider)
                    .map_err(mls("merging the accepted commit"))?;
                self.log(convo).own.insert(seq);
                Ok(())
            }
            Err(error) => {
                group
                    .clear_pending_commit(self.provider.storage())
                    .map_err(mls("discarding the rejected commit"))?;
                Err(error)
            }
        }
    }

    // ---- local state ---------------------------------------------------------------

    /// The group's epoch in this device's state.
    pub fn epoch(&self, convo: &str) -> Result<u64, DeviceError> {
        Ok(self.group(convo)?.epoch().as_u64())
    }

    /// The group's leaves in this device's state, by leaf index.
    pub fn members(&self, convo: &str) -> Result<Vec<LocalMember>, DeviceError> {
        Ok(self
            .group(convo)?
            .members()
            .map(|member| LocalMember {
                leaf_index: member.index.u32(),
                device_id: describe(&member.credential),
            })
            .collect())
    }

    /// The device's group for `convo`.
    fn group(&self, convo: &str) -> Result<MlsGroup, DeviceError> {
        self.stored_group(&group_id(convo)?)?
            .ok_or_else(|| DeviceError::NotInConvo(convo.to_owned()))
    }

    fn stored_group(&self, group_id: &GroupId) -> Result<Option<MlsGroup>, DeviceError> {
        MlsGroup::load(self.provider.storage(), group_id).map_err(mls("loading a group"))
    }

    /// Forgets a group: its state and this device's place in its log.
    fn delete_group(
        &mut self,
        group_id: &GroupId,
        group: &mut MlsGroup,
    ) -> Result<(), DeviceError> {
        group
            .delete(self.provider.storage())
            .map_err(mls("deleting a group"))?;
        self.logs.remove(&to_hex(group_id.as_slice()));
        Ok(())
    }

    fn log(&mut self, convo: &str) -> &mut LogPosition {
        self.logs.entry(convo.to_owned()).or_default()
    }

    /// A message id that sorts by time, like a ULID: milliseconds since the
    /// Unix epoch, then 80 random bits, in hex.
    fn message_id(&self) -> Result<String, DeviceError> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        let random = self
            .provider
            .rand()
            .random_vec(10)
            .map_err(mls("choosing a message id"))?;
        Ok(format!("{millis:012x}{}", to_hex(&random)))
    }
}

/// The MLS group id of a convo id.
fn group_id(convo: &str) -> Result<GroupId, DeviceError> {
    from_hex(convo)
        .map(|bytes| GroupId::from_slice(&bytes))
        .ok_or_else(|| DeviceError::NotInConvo(convo.to_owned()))
}

/// An epoch as the lexicon's integer; epochs never get near `i64::MAX`.
fn lexicon_epoch(epoch: GroupEpoch) -> i64 {
    i64::try_from(epoch.as_u64()).unwrap_or(i64::MAX)
}

/// `confirmWelcome`'s errorDetails holds at most 4096 bytes.
fn truncate(text: &str) -> String {
    let mut end = text.len().min(4096);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}
