//! Every commit, and leaveConvo's proposal. One transaction each, with the
//! conversation row locked: access policy, MLS validation and merge (the
//! engine; a refused commit may be a resubmission of an accepted one, which
//! gets its original result), the method's own rules, then the log entry,
//! the epoch, members, KeyPackages and Welcomes together.

use std::collections::BTreeSet;

use catbird_generated::lexicons::blue::catbird::mls::{
    add_members, commit_group_change, process_external_commit, remove_member,
};
use catbird_generated::runtime::Did;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::group_cache::GroupCache;
use super::store::log::EntryKind;
use super::{ConvoSettings, Standing, sha256, store, welcomes};
use crate::error::ServiceError;
use crate::groups::engine::{
    self, CommitOutcome, CommittedProposal, EngineError, LoadedGroup, ProposalKind,
};
use crate::keypackages;
use crate::mls_crypto;

/// Which method a commit came through: each allows different changes.
pub enum CommitMethod<'a> {
    /// addMembers: Adds only, with the Welcome for the added devices.
    AddMembers { welcome: &'a [u8] },
    /// commitGroupChange: updates, and removals only as proposed with
    /// leaveConvo in this epoch.
    GroupChange,
    /// removeMember: removals of `did`'s devices only.
    RemoveMember { did: &'a Did, ban: bool },
    /// processExternalCommit: the caller's device (re)joins, if the
    /// rollout switch lets the caller (a client retrying an accepted
    /// commit gets its result even after the switch went off).
    External,
}

impl CommitMethod<'_> {
    /// The XRPC method this commit came through.
    pub fn nsid(&self) -> &'static str {
        match self {
            Self::AddMembers { .. } => add_members::NSID,
            Self::GroupChange => commit_group_change::NSID,
            Self::RemoveMember { .. } => remove_member::NSID,
            Self::External => process_external_commit::NSID,
        }
    }

    /// Why the devices this method's commits take out of the tree left:
    /// removeMember removes (or bans); commitGroupChange removes only
    /// leaves whose leave proposals it commits; an external commit may
    /// only replace the caller's own old leaf.
    fn left_reason(&self) -> store::LeftReason {
        match self {
            Self::RemoveMember { ban: true, .. } => store::LeftReason::Banned,
            Self::GroupChange => store::LeftReason::Left,
            Self::RemoveMember { ban: false, .. } | Self::AddMembers { .. } | Self::External => {
                store::LeftReason::Removed
            }
        }
    }
}

/// An accepted commit (or proposal).
pub struct Accepted {
    pub epoch: i64,
    pub seq: i64,
    pub accepted_at: DateTime<Utc>,
    /// The same commit was accepted before: this is its original result.
    pub resubmitted: bool,
}

#[allow(clippy::too_many_arguments)] // The request's parts and the service's.
pub async fn commit(
    db: &PgPool,
    groups: &GroupCache,
    caller: &Did,
    group_id: &[u8],
    settings: &ConvoSettings,
    method: CommitMethod<'_>,
    commit: &[u8],
    group_info: &[u8],
) -> Result<Accepted, ServiceError> {
    let hash = sha256(commit);
    let mut tx = db.begin().await?;
    let (convo, user) = store::lock(&mut tx, group_id, caller.as_str())
        .await?
        .ok_or_else(|| super::not_found(&mls_crypto::to_hex(group_id)))?;
    // Access first: replaying someone's accepted commit must not tell a
    // stranger anything.
    let is_admin = check_access(Standing::of(user, settings), caller, settings, &method)?;
    let applied = async {
        if let CommitMethod::External = &method {
            convo.rollout.check(caller.as_str())?;
        }
        let mut group = loaded_group(&mut tx, groups, group_id, &convo).await?;
        let outcome = engine::apply_commit(&mut group, commit, group_info, caller);
        keep_if_intact(groups, group_id, &convo, group, outcome)
    }
    .await;
    let (outcome, group) = match applied {
        Ok(applied) => applied,
        // Only a refused commit can be a resubmission: an accepted one
        // moved the group past the epoch it was made for, so it never
        // applies twice. Looking for it only now spares every accepted
        // commit a statement. (Not after a database error: the
        // transaction is gone, and that error is the answer.)
        Err(error) if !matches!(error, ServiceError::Database(_)) => {
            return match resubmitted(&mut tx, group_id, &hash, caller).await? {
                // The same commit again from its committer: the original result.
                Some(previous) => Ok(Accepted {
                    epoch: previous.epoch + 1,
                    seq: previous.seq,
                    accepted_at: previous.created_at,
                    resubmitted: true,
                }),
                None => Err(error),
            };
        }
        Err(error) => return Err(error),
    };
    check_method_rules(
        &mut tx, group_id, caller, is_admin, &convo, &method, &outcome,
    )
    .await?;

    let seq = convo.last_seq + 1;
    let new_epoch = i64::try_from(outcome.epoch)
        .map_err(|_| ServiceError::InvalidCommit("the epoch is out of range".into()))?;
    let id = format!("commit-{}", mls_crypto::to_hex(&hash[..16]));
    let entry = store::log::NewEntry {
        seq,
        id: &id,
        epoch: convo.epoch,
        kind: EntryKind::Commit,
        payload: commit,
        payload_hash: &hash,
        sender: Some(caller.as_str()),
        proposed_removal: None,
    };
    let recorded = store::record_handshake(
        &mut tx,
        group_id,
        &entry,
        Some((new_epoch, group_info)),
        &outcome.state,
    )
    .await?
    .ok_or_else(moved_under_lock)?;
    store::sync_members(
        &mut tx,
        group_id,
        &outcome.left,
        &outcome.joined,
        seq,
        method.left_reason(),
    )
    .await?;
    apply_side_effects(&mut tx, group_id, &method, &outcome, new_epoch, seq).await?;
    tx.commit().await?;
    groups.put(group_id, recorded.version, group);
    Ok(Accepted {
        epoch: new_epoch,
        seq,
        accepted_at: recorded.accepted_at,
        resubmitted: false,
    })
}

fn moved_under_lock() -> ServiceError {
    ServiceError::Internal("the epoch moved under the conversation lock".into())
}

/// The locked conversation's group, parsed: from `groups` if it holds the
/// stored version, else from the database.
async fn loaded_group(
    tx: &mut PgConnection,
    groups: &GroupCache,
    group_id: &[u8],
    convo: &store::Locked,
) -> Result<LoadedGroup, ServiceError> {
    if let Some(group) = groups.take(group_id, convo.state_version) {
        return Ok(group);
    }
    let stored = store::load_state(tx, group_id).await?;
    Ok(LoadedGroup::load(&stored, group_id)?)
}

/// After an engine call: a refused change that left the group intact puts
/// it back for the next request (the stored state has not moved).
fn keep_if_intact<T>(
    groups: &GroupCache,
    group_id: &[u8],
    convo: &store::Locked,
    group: LoadedGroup,
    result: Result<T, EngineError>,
) -> Result<(T, LoadedGroup), ServiceError> {
    match result {
        Ok(value) => Ok((value, group)),
        Err(error) => {
            if group.is_intact() {
                groups.put(group_id, convo.state_version, group);
            }
            Err(error.into())
        }
    }
}

/// The log entry of these exact bytes, if the caller submitted it before.
/// (Anyone else resubmitting it is treated as new, and fails as stale.)
async fn resubmitted(
    tx: &mut PgConnection,
    group_id: &[u8],
    hash: &[u8],
    caller: &Did,
) -> Result<Option<store::log::Previous>, ServiceError> {
    Ok(store::log::find_handshake(tx, group_id, hash)
        .await?
        .filter(|previous| previous.sender.as_deref() == Some(caller.as_str())))
}

/// Who may commit through `method`, given the caller's standing; returns
/// whether the caller is an admin.
fn check_access(
    standing: Standing,
    caller: &Did,
    settings: &ConvoSettings,
    method: &CommitMethod<'_>,
) -> Result<bool, ServiceError> {
    if let CommitMethod::External = method {
        standing.rejoin_access(caller, settings)?;
        return Ok(false);
    }
    match standing {
        Standing::Current { is_admin, .. } => Ok(is_admin),
        _ => Err(ServiceError::NotMember(format!(
            "{} has no device in this conversation",
            caller.as_str()
        ))),
    }
}

fn invalid(why: impl Into<String>) -> ServiceError {
    ServiceError::InvalidCommit(why.into())
}

/// The changes each method may make, beyond what MLS itself allows.
async fn check_method_rules(
    tx: &mut PgConnection,
    group_id: &[u8],
    caller: &Did,
    is_admin: bool,
    convo: &store::Locked,
    method: &CommitMethod<'_>,
    outcome: &CommitOutcome,
) -> Result<(), ServiceError> {
    let external = matches!(method, CommitMethod::External);
    if outcome.external != external {
        return Err(invalid(if external {
            "processExternalCommit takes an external commit"
        } else {
            "an external commit goes through processExternalCommit"
        }));
    }
    match method {
        CommitMethod::AddMembers { welcome } => {
            only_proposals(outcome, "addMembers", |p| p.kind == ProposalKind::Add)?;
            if outcome.added.is_empty() {
                return Err(invalid("an addMembers commit adds devices"));
            }
            let suite = mls_crypto::requested_cipher_suite(&convo.cipher_suite)?;
            let named: BTreeSet<Vec<u8>> = engine::welcome_recipients(welcome, &suite)?
                .into_iter()
                .collect();
            let added: BTreeSet<Vec<u8>> = outcome
                .added
                .iter()
                .map(|a| a.key_package_ref.clone())
                .collect();
            if named != added {
                return Err(ServiceError::InvalidWelcome(
                    "the Welcome must name exactly the KeyPackages the commit adds".into(),
                ));
            }
            for added in &outcome.added {
                let did = added.device.did();
                let banned = store::user(tx, group_id, did.as_str())
                    .await?
                    .is_some_and(|u| u.banned_at.is_some());
                if banned && !is_admin {
                    return Err(ServiceError::Banned(format!(
                        "{} is banned from this conversation; only an admin may add them back",
                        did.as_str()
                    )));
                }
                if keypackages::mark_used(tx, &added.key_package_ref, group_id)
                    .await?
                    .is_none()
                {
                    return Err(ServiceError::KeyPackageNotFound(format!(
                        "the KeyPackage {} of {} was not published here, has expired, or was already used",
                        mls_crypto::to_hex(&added.key_package_ref),
                        added.device
                    )));
                }
            }
        }
        CommitMethod::GroupChange => {
            // Updates, and removals only by reference to logged proposals.
            only_proposals(outcome, "commitGroupChange", |p| match p.kind {
                ProposalKind::Update => true,
                ProposalKind::Remove | ProposalKind::SelfRemove => p.by_reference,
                _ => false,
            })?;
            let proposed = store::log::proposed_removals(tx, group_id, convo.epoch).await?;
            for removed in &outcome.removed {
                if !proposed.contains(&(removed.leaf_index as i32)) {
                    return Err(invalid(format!(
                        "leaf {} was not proposed for removal with leaveConvo in this epoch; remove devices with removeMember",
                        removed.leaf_index
                    )));
                }
            }
        }
        CommitMethod::RemoveMember { did, ban } => {
            only_proposals(outcome, "removeMember", |p| p.kind == ProposalKind::Remove)?;
            if outcome.removed.is_empty() {
                return Err(invalid("a removeMember commit removes devices"));
            }
            if let Some(other) = outcome.removed.iter().find(|r| r.device.did() != *did) {
                return Err(invalid(format!(
                    "the commit removes {}, which is not a device of {}",
                    other.device,
                    did.as_str()
                )));
            }
            // A committer removing its own leaf is refused by MLS itself; a
            // reinstalled device of the same name may remove its old leaf.
            if (*did != caller || *ban) && !is_admin {
                return Err(ServiceError::NotAdmin(
                    "only an admin may remove another user's devices or ban".into(),
                ));
            }
            if *ban && *did == caller {
                return Err(invalid("a user cannot ban themselves"));
            }
            let removed: BTreeSet<i32> = outcome
                .removed
                .iter()
                .map(|r| r.leaf_index as i32)
                .collect();
            let kept = store::current_leaves_of(tx, group_id, did.as_str())
                .await?
                .into_iter()
                .any(|leaf| !removed.contains(&leaf));
            if *ban && kept {
                return Err(invalid(format!(
                    "a ban must remove every device of {}",
                    did.as_str()
                )));
            }
        }
        CommitMethod::External => {}
    }
    Ok(())
}

/// Fails unless every proposal the commit covers is one `method` takes.
fn only_proposals(
    outcome: &CommitOutcome,
    method: &str,
    allowed: impl Fn(&CommittedProposal) -> bool,
) -> Result<(), ServiceError> {
    match outcome.proposals.iter().find(|p| !allowed(p)) {
        None => Ok(()),
        Some(p) => Err(invalid(format!(
            "{method} does not take a {:?} proposal{}",
            p.kind,
            if p.by_reference {
                " by reference"
            } else {
                " by value"
            }
        ))),
    }
}

/// What an accepted commit changes besides the log, the epoch and members.
async fn apply_side_effects(
    tx: &mut PgConnection,
    group_id: &[u8],
    method: &CommitMethod<'_>,
    outcome: &CommitOutcome,
    epoch: i64,
    seq: i64,
) -> Result<(), ServiceError> {
    // Pending Welcomes of removed devices go. (A joining device's, an
    // external joiner's, went with its membership row: `sync_members`.)
    let withdrawn: Vec<String> = outcome
        .removed
        .iter()
        .map(|r| r.device.to_string())
        .collect();
    if !withdrawn.is_empty() {
        welcomes::withdraw(tx, group_id, &withdrawn).await?;
    }
    match method {
        CommitMethod::AddMembers { welcome } => {
            for added in &outcome.added {
                // Adding a banned user's device (an admin did) lifts the ban.
                store::set_banned(tx, group_id, added.device.did().as_str(), false).await?;
                welcomes::store(
                    tx,
                    group_id,
                    &added.device,
                    &added.key_package_ref,
                    welcome,
                    epoch,
                    seq,
                )
                .await?;
            }
        }
        CommitMethod::RemoveMember { did, ban: true } => {
            store::set_banned(tx, group_id, did.as_str(), true).await?;
        }
        CommitMethod::RemoveMember { ban: false, .. }
        | CommitMethod::GroupChange
        | CommitMethod::External => {}
    }
    Ok(())
}

/// leaveConvo: the caller's self-remove proposal, logged and queued for the
/// next commit of this epoch.
pub async fn propose_leave(
    db: &PgPool,
    groups: &GroupCache,
    caller: &Did,
    group_id: &[u8],
    settings: &ConvoSettings,
    proposal: &[u8],
) -> Result<Accepted, ServiceError> {
    let hash = sha256(proposal);
    let mut tx = db.begin().await?;
    let (convo, user) = store::lock(&mut tx, group_id, caller.as_str())
        .await?
        .ok_or_else(|| super::not_found(&mls_crypto::to_hex(group_id)))?;
    check_access(
        Standing::of(user, settings),
        caller,
        settings,
        &CommitMethod::GroupChange,
    )?;
    if let Some(previous) = resubmitted(&mut tx, group_id, &hash, caller).await? {
        return Ok(Accepted {
            epoch: previous.epoch,
            seq: previous.seq,
            accepted_at: previous.created_at,
            resubmitted: true,
        });
    }
    let mut group = loaded_group(&mut tx, groups, group_id, &convo).await?;
    let outcome = engine::apply_self_remove_proposal(&mut group, proposal, caller);
    let (outcome, group) = keep_if_intact(groups, group_id, &convo, group, outcome)?;
    let seq = convo.last_seq + 1;
    let id = format!("proposal-{}", mls_crypto::to_hex(&hash[..16]));
    let entry = store::log::NewEntry {
        seq,
        id: &id,
        epoch: convo.epoch,
        kind: EntryKind::Proposal,
        payload: proposal,
        payload_hash: &hash,
        sender: Some(caller.as_str()),
        proposed_removal: Some(outcome.removed_leaf as i32),
    };
    let recorded = store::record_handshake(&mut tx, group_id, &entry, None, &outcome.state)
        .await?
        .ok_or_else(moved_under_lock)?;
    tx.commit().await?;
    groups.put(group_id, recorded.version, group);
    Ok(Accepted {
        epoch: convo.epoch,
        seq,
        accepted_at: recorded.accepted_at,
        resubmitted: false,
    })
}
