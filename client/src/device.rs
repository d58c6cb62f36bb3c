//! One device of a user as a real MLS client of the service: an
//! [`Installation`] (signature key and OpenMLS state) and the generated
//! client acting as its user. Every operation is the sequence an app would
//! run: build the MLS message locally, submit it, and apply it locally only
//! once the service has accepted it.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use catbird_generated::lexicons::blue::catbird::mls::defs::{
    ConvoMetadata, KeyPackageInfo, MessageView,
};
use catbird_generated::lexicons::blue::catbird::mls::{
    Client, add_members, commit_group_change, confirm_welcome, create_convo, get_group_info,
    get_key_package_status, get_key_packages, get_messages, get_welcome, leave_convo,
    process_external_commit, publish_key_packages, remove_member, send_ephemeral, send_message,
};
use catbird_generated::runtime::{Bytes, Did};
use catbird_mls_core::device::DeviceId;
use catbird_mls_core::mls_crypto::{from_hex, to_hex};
use openmls::prelude::{
    GroupEpoch, GroupId, KeyPackage, LeafNodeIndex, MlsGroup, MlsMessageBodyIn, MlsMessageOut,
    ProcessedMessageContent, ProtocolVersion,
};
use openmls_rust_crypto::MemoryStorage;
use openmls_traits::OpenMlsProvider as _;
use openmls_traits::random::OpenMlsRand as _;
use openmls_traits::storage::{CURRENT_VERSION, StorageProvider};

use crate::access::{Access, StreamAccess};
use crate::error::{DeviceError, mls};
use crate::installation::{Installation, StagedMessages, to_bytes};
use crate::mls::{SUITE, describe, device_of, lexicon_suite, read_body, read_message};

/// getMessages page size: the lexicon's maximum.
const PAGE_SIZE: i64 = get_messages::Params::LIMIT_MAX;

/// How often a rejoin is retried when another commit wins the epoch.
const REJOIN_ATTEMPTS: usize = 5;

/// publishKeyPackages takes at most this many per call.
const PUBLISH_BATCH: usize = publish_key_packages::Input::KEY_PACKAGES_MAX;

/// One device of a user. Its groups live in its installation's storage `S`
/// (in memory by default; see [`crate::Provider`]).
pub struct Device<S = MemoryStorage> {
    id: DeviceId,
    client: Client,
    /// How its event stream authenticates (see [`Access::stream`]).
    stream: StreamAccess,
    mls: Installation<S>,
    /// Per conversation (by convo id): how far this device has read the log.
    logs: HashMap<String, LogPosition>,
    /// Application messages applied but not yet returned (a read that
    /// failed midway keeps them here), with their convo ids.
    inbox: Vec<(String, Received)>,
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

/// What a commit changes; see [`Device::prepare`].
#[derive(Debug, Clone)]
pub enum Change {
    /// Add the devices of these KeyPackages (validated).
    Add(Vec<KeyPackage>),
    /// Remove these leaves.
    Remove(Vec<LeafNodeIndex>),
    /// A fresh leaf key for this device, with every pending proposal.
    SelfUpdate,
}

impl Device {
    /// A new device `<did>#<name>` with a fresh signature key and no groups,
    /// its state in memory; `client` must act as `did` (mint its tokens).
    pub fn new(did: &Did, name: &str, client: Client) -> Result<Self, DeviceError> {
        Self::with_storage(did, name, client, MemoryStorage::default())
    }

    /// A new device `<user's DID>#<name>` reaching the service as `access`
    /// says (directly, or through the user's PDS), its state in memory.
    pub fn with_access(access: &Access, name: &str) -> Result<Self, DeviceError> {
        let mut device = Self::new(access.did(), name, access.client())?;
        device.stream = access.stream();
        Ok(device)
    }
}

impl<S: StorageProvider<CURRENT_VERSION>> Device<S> {
    /// A new device whose OpenMLS state lives in `storage`.
    pub fn with_storage(
        did: &Did,
        name: &str,
        client: Client,
        storage: S,
    ) -> Result<Self, DeviceError> {
        let id = DeviceId::parse(&format!("{}#{name}", did.as_str()))?;
        let mls = Installation::with_storage(&id.to_string(), SUITE, storage)?;
        Ok(Self {
            id,
            client,
            stream: StreamAccess::Token,
            mls,
            logs: HashMap::new(),
            inbox: Vec::new(),
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

    /// Talks to the service through `client` from now on (another replica,
    /// a new token source), its event stream authenticated by the client's
    /// tokens; the MLS state is unchanged.
    pub fn set_client(&mut self, client: Client) {
        self.client = client;
        self.stream = StreamAccess::Token;
    }

    /// Reaches the service as `access` says from now on; `access` must be
    /// for this device's user. The MLS state is unchanged.
    pub fn set_access(&mut self, access: &Access) {
        self.client = access.client();
        self.stream = access.stream();
    }

    /// How this device's event stream authenticates.
    pub fn stream_access(&self) -> &StreamAccess {
        &self.stream
    }

    /// Whether this device holds group state for `convo`.
    pub fn is_in(&self, convo: &str) -> bool {
        group_id(convo)
            .and_then(|id| self.mls.load_group(&id))
            .is_ok_and(|group| group.is_some())
    }

    /// The OpenMLS installation (key, state) under this device.
    pub fn installation(&self) -> &Installation<S> {
        &self.mls
    }

    /// The OpenMLS installation, to change (see [`Installation::rotate_key`]).
    pub fn installation_mut(&mut self) -> &mut Installation<S> {
        &mut self.mls
    }

    /// The last log entry this device has applied in `convo` (0 before
    /// any): where its next read, or a resume after a reconnect, starts.
    pub fn last_seq(&self, convo: &str) -> i64 {
        self.logs.get(convo).map_or(0, |log| log.last_seq)
    }

    // ---- KeyPackages ---------------------------------------------------------

    /// Publishes `count` fresh KeyPackages and a last-resort one, so that
    /// others can add this device even after the fresh ones are used up.
    /// Their private keys stay in this device's storage, for its Welcomes.
    pub async fn publish_key_packages(
        &mut self,
        count: usize,
    ) -> Result<Vec<KeyPackageInfo>, DeviceError> {
        let mut published = self.publish_fresh(count).await?;
        published.extend(self.publish(vec![self.key_package(true)?]).await?);
        Ok(published)
    }

    /// Tops up this device's KeyPackages as the service advises
    /// (getKeyPackageStatus): when it says to replenish, publishes up to
    /// its target count, and a last-resort KeyPackage if there is none.
    /// Returns how many were published.
    pub async fn replenish_key_packages(&mut self) -> Result<usize, DeviceError> {
        let params = get_key_package_status::Params {
            device_id: self.id.to_string(),
            cipher_suite: Some(lexicon_suite().as_str().to_owned()),
        };
        let status = self.client.get_key_package_status(&params).await?;
        let mut published = 0;
        if status.needs_replenish {
            let missing = status.target_count.saturating_sub(status.available);
            let missing = usize::try_from(missing).unwrap_or(0);
            published += self.publish_fresh(missing).await?.len();
        }
        if !status.last_resort {
            published += self.publish(vec![self.key_package(true)?]).await?.len();
        }
        Ok(published)
    }

    /// Publishes `count` fresh (not last-resort) KeyPackages, in batches.
    async fn publish_fresh(&mut self, count: usize) -> Result<Vec<KeyPackageInfo>, DeviceError> {
        let mut published = Vec::with_capacity(count);
        let mut left = count;
        while left > 0 {
            let batch = left.min(PUBLISH_BATCH);
            let key_packages = (0..batch)
                .map(|_| self.key_package(false))
                .collect::<Result<Vec<_>, _>>()?;
            published.extend(self.publish(key_packages).await?);
            left -= batch;
        }
        Ok(published)
    }

    async fn publish(&self, key_packages: Vec<Bytes>) -> Result<Vec<KeyPackageInfo>, DeviceError> {
        let input = publish_key_packages::Input {
            extra: Default::default(),
            key_packages,
        };
        Ok(self.client.publish_key_packages(&input).await?.key_packages)
    }

    /// A new KeyPackage as an MLSMessage.
    fn key_package(&self, last_resort: bool) -> Result<Bytes, DeviceError> {
        to_bytes(&MlsMessageOut::from(self.mls.key_package(last_resort)?))
    }

    // ---- creating and joining --------------------------------------------------

    /// Creates a group with this device as its only member and registers it
    /// as a conversation named `name`. Returns the convo id (the group id in
    /// hex).
    pub async fn create_convo(&mut self, name: &str) -> Result<String, DeviceError> {
        let random = self
            .mls
            .provider()
            .rand()
            .random_vec(16)
            .map_err(mls("choosing a group id"))?;
        let group_id = GroupId::from_slice(&random);
        let mut group = self.mls.create_group(&group_id)?;
        let group_info = self.mls.group_info(&group, true)?;
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
                self.delete_group(&mut group)?;
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
        let joined = self.mls.join(&fetched.welcome.0);
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

    /// Joins a conversation by external commit from its current GroupInfo:
    /// a device that lost its state, or a new device of a member user. The
    /// device's old group, if any, is deleted first. An external commit is
    /// merged before it is submitted, so when another commit wins the epoch
    /// the new group is deleted and the join starts over. Returns the epoch.
    pub async fn rejoin(&mut self, convo: &str) -> Result<u64, DeviceError> {
        let group_id = group_id(convo)?;
        if let Some(mut old) = self.mls.load_group(&group_id)? {
            self.delete_group(&mut old)?;
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
                    self.delete_group(&mut group)?;
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
        external_commit(&self.client, &self.mls, convo).await
    }

    // ---- messages --------------------------------------------------------------

    /// Encrypts `text` in the current epoch and appends it to the log.
    /// Returns its seq.
    pub async fn send(&mut self, convo: &str, text: &str) -> Result<i64, DeviceError> {
        let mut group = self.group(convo)?;
        let ciphertext = self.mls.encrypt(&mut group, text.as_bytes())?;
        let input = send_message::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            msg_id: self.message_id()?,
            ciphertext,
            epoch: lexicon_epoch(group.epoch()),
            padded_size: None,
            idempotency_key: None,
        };
        let sent = self.client.send_message(&input).await?;
        self.log(convo).own.insert(sent.seq);
        Ok(sent.seq)
    }

    /// Sends `text` as an ephemeral message (typing, presence) to the
    /// members connected now; it is never stored. Returns its epoch.
    pub async fn send_ephemeral(&mut self, convo: &str, text: &str) -> Result<i64, DeviceError> {
        let mut group = self.group(convo)?;
        let ciphertext = self.mls.encrypt(&mut group, text.as_bytes())?;
        let input = send_ephemeral::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            ciphertext,
            epoch: lexicon_epoch(group.epoch()),
        };
        Ok(self.client.send_ephemeral(&input).await?.epoch)
    }

    /// Reads the log from where this device stopped and applies it: commits
    /// are merged, proposals kept for the commit that covers them, and
    /// application messages decrypted and returned in log order. If the
    /// read fails midway, what was applied is not lost: it is returned by
    /// the next successful `sync` (or [`Self::follow`](crate::realtime)).
    pub async fn sync(&mut self, convo: &str) -> Result<Vec<Received>, DeviceError> {
        self.read_log(convo).await?;
        Ok(self.take_received(convo))
    }

    /// Applies the log after the last applied entry, up to its end,
    /// leaving what it decrypted in the inbox.
    pub(crate) async fn read_log(&mut self, convo: &str) -> Result<(), DeviceError> {
        let mut group = self.group(convo)?;
        loop {
            let since = self.log(convo).last_seq;
            let params = get_messages::Params {
                convo_id: convo.to_owned(),
                since_seq: since,
                limit: PAGE_SIZE,
            };
            let page = self.client.get_messages(&params).await?;
            for entry in &page.messages {
                self.apply_next(convo, &mut group, entry)?;
                if !group.is_active() {
                    // Removed from the group: nothing later is for this device.
                    return Ok(());
                }
            }
            // Also covers entries the service no longer holds (gapInfo).
            let log = self.log(convo);
            log.last_seq = log.last_seq.max(page.last_seq);
            if page.last_seq <= since {
                return Ok(());
            }
        }
    }

    /// Applies the entry after the last one applied (unless this device
    /// submitted it, and so applied it already) and moves past it; a
    /// decrypted message waits in the inbox until it is taken.
    pub(crate) fn apply_next(
        &mut self,
        convo: &str,
        group: &mut MlsGroup,
        entry: &MessageView,
    ) -> Result<(), DeviceError> {
        if !self.log(convo).own.remove(&entry.seq)
            && let Some(received) = self.apply(group, entry)?
        {
            self.inbox.push((convo.to_owned(), received));
        }
        self.log(convo).last_seq = entry.seq;
        Ok(())
    }

    /// The decrypted messages of `convo` not yet returned, in log order.
    fn take_received(&mut self, convo: &str) -> Vec<Received> {
        let (taken, kept) = std::mem::take(&mut self.inbox)
            .into_iter()
            .partition(|(c, _)| c == convo);
        self.inbox = kept;
        taken.into_iter().map(|(_, received)| received).collect()
    }

    /// Every decrypted message not yet returned, by conversation, each in
    /// log order.
    pub(crate) fn take_all_received(&mut self) -> Vec<(String, Vec<Received>)> {
        let mut by_convo: Vec<(String, Vec<Received>)> = Vec::new();
        for (convo, received) in std::mem::take(&mut self.inbox) {
            match by_convo.iter_mut().find(|(c, _)| *c == convo) {
                Some((_, list)) => list.push(received),
                None => by_convo.push((convo, vec![received])),
            }
        }
        by_convo
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
        let provider = self.mls.provider();
        let processed =
            group
                .process_message(provider, message)
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
                    .store_pending_proposal(provider.storage(), *proposal)
                    .map_err(mls("keeping a proposal"))?;
                Ok(None)
            }
            ProcessedMessageContent::StagedCommitMessage(commit) => {
                group
                    .merge_staged_commit(provider, *commit)
                    .map_err(mls("merging a commit"))?;
                Ok(None)
            }
            // Our own commit whose seq we did not learn (the answer to the
            // submission was lost, yet it was accepted).
            ProcessedMessageContent::OwnPendingCommit => {
                self.mls.merge_pending(group)?;
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

        let staged = self.prepare_commit(&mut group, Change::Add(key_packages))?;
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
            .validate(self.mls.provider().crypto(), ProtocolVersion::Mls10)
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

        let staged = self.prepare_commit(&mut group, Change::Remove(leaves))?;
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
        let staged = self.prepare_commit(&mut group, Change::SelfUpdate)?;
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
            .leave_group(self.mls.provider(), self.mls.signer())
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
                    .clear_pending_proposals(self.mls.provider().storage())
                    .map_err(mls("discarding the rejected proposal"))?;
                Err(error.into())
            }
        }
    }

    /// Builds and stages a commit in this device's group for `convo`
    /// without submitting it: the group holds it as its pending commit
    /// until [`Self::conclude`]. For apps that submit themselves
    /// (and tests of what the service does with a commit).
    pub fn prepare(&self, convo: &str, change: Change) -> Result<StagedMessages, DeviceError> {
        let mut group = self.group(convo)?;
        self.prepare_commit(&mut group, change)
    }

    fn prepare_commit(
        &self,
        group: &mut MlsGroup,
        change: Change,
    ) -> Result<StagedMessages, DeviceError> {
        // addMembers and removeMember take only their own kind of proposal,
        // so pending proposals wait for a self-update to commit them.
        self.mls.stage_commit(group, |builder| match change {
            Change::Add(key_packages) => builder
                .consume_proposal_store(false)
                .propose_adds(key_packages),
            Change::Remove(leaves) => builder
                .consume_proposal_store(false)
                .propose_removals(leaves),
            Change::SelfUpdate => builder.force_self_update(true),
        })
    }

    /// Concludes a commit made with [`Self::prepare`]: merged if the
    /// service accepted it (at `seq`), discarded if not.
    pub fn conclude(&mut self, convo: &str, accepted: Option<i64>) -> Result<(), DeviceError> {
        let mut group = self.group(convo)?;
        self.finish_commit(convo, &mut group, accepted)
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
        self.finish_commit(convo, group, submitted.as_ref().ok().copied())?;
        submitted.map(|_| ())
    }

    fn finish_commit(
        &mut self,
        convo: &str,
        group: &mut MlsGroup,
        accepted: Option<i64>,
    ) -> Result<(), DeviceError> {
        match accepted {
            Some(seq) => {
                self.mls.merge_pending(group)?;
                self.log(convo).own.insert(seq);
            }
            None => self.mls.discard_pending(group)?,
        }
        Ok(())
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

    /// Sets where this device stands in `convo`'s log: for an app that
    /// keeps [`Self::last_seq`] with its MLS state and restarts (the OpenMLS
    /// state comes back through the storage; this is the other half).
    pub fn restore_position(&mut self, convo: &str, last_seq: i64) {
        self.log(convo).last_seq = last_seq;
    }

    /// Marks the entry at `seq` as applied by other means (a commit this
    /// device processed before the service accepted it), so that
    /// [`Self::sync`] does not apply it again.
    pub fn skip(&mut self, convo: &str, seq: i64) {
        self.log(convo).own.insert(seq);
    }

    /// The device's group for `convo`, loaded from its storage.
    pub fn group(&self, convo: &str) -> Result<MlsGroup, DeviceError> {
        self.mls
            .load_group(&group_id(convo)?)?
            .ok_or_else(|| DeviceError::NotInConvo(convo.to_owned()))
    }

    /// Forgets a group: its state and this device's place in its log.
    fn delete_group(&mut self, group: &mut MlsGroup) -> Result<(), DeviceError> {
        let convo = to_hex(group.group_id().as_slice());
        self.mls.delete_group(group)?;
        self.logs.remove(&convo);
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
            .mls
            .provider()
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

/// `confirmWelcome`'s errorDetails, cut to the lexicon's limit.
fn truncate(text: &str) -> String {
    let mut end = text.len().min(confirm_welcome::Input::ERROR_DETAILS_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// processExternalCommit's input for `mls` joining `convo` from the
/// GroupInfo `client` reads now, and the group it makes (already in the
/// new epoch). Nothing is sent: a caller may submit it later (the
/// benchmark harness prepares many before it measures).
pub async fn external_commit<S: StorageProvider<CURRENT_VERSION>>(
    client: &Client,
    mls: &Installation<S>,
    convo: &str,
) -> Result<(MlsGroup, process_external_commit::Input), DeviceError> {
    let params = get_group_info::Params {
        convo_id: convo.to_owned(),
    };
    let current = client.get_group_info(&params).await?;
    let (group, bundle) = mls.join_externally(&current.group_info.0)?;
    // The group is merged, so its GroupInfo is the new epoch's.
    let new_group_info = mls.group_info(&group, true)?;
    let input = process_external_commit::Input {
        extra: Default::default(),
        convo_id: convo.to_owned(),
        external_commit: to_bytes(bundle.commit())?,
        group_info: to_bytes(&new_group_info)?,
        idempotency_key: None,
    };
    Ok((group, input))
}
