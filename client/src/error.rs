//! Why a device operation failed: the service's answer (each method's own
//! generated error, so callers can match declared errors such as
//! `EpochMismatch`), or a local OpenMLS failure, kept as text.

use catbird_generated::lexicons::blue::catbird::mls::{
    add_members, commit_group_change, confirm_welcome, create_convo, get_group_info,
    get_key_package_status, get_key_packages, get_messages, get_subscription_ticket, get_welcome,
    leave_convo, process_external_commit, publish_key_packages, remove_member, send_ephemeral,
    send_message, subscribe_convo_events,
};
use catbird_generated::runtime::xrpc::ClientError;

/// A failed [`Device`](crate::Device) operation.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("publishKeyPackages: {0}")]
    PublishKeyPackages(#[from] ClientError<publish_key_packages::Error>),
    #[error("createConvo: {0}")]
    CreateConvo(#[from] ClientError<create_convo::Error>),
    #[error("getKeyPackageStatus: {0}")]
    GetKeyPackageStatus(#[from] ClientError<get_key_package_status::Error>),
    #[error("getKeyPackages: {0}")]
    GetKeyPackages(#[from] ClientError<get_key_packages::Error>),
    #[error("addMembers: {0}")]
    AddMembers(#[from] ClientError<add_members::Error>),
    #[error("getWelcome: {0}")]
    GetWelcome(#[from] ClientError<get_welcome::Error>),
    #[error("confirmWelcome: {0}")]
    ConfirmWelcome(#[from] ClientError<confirm_welcome::Error>),
    #[error("sendEphemeral: {0}")]
    SendEphemeral(#[from] ClientError<send_ephemeral::Error>),
    #[error("getSubscriptionTicket: {0}")]
    GetSubscriptionTicket(#[from] ClientError<get_subscription_ticket::Error>),
    #[error("subscribeConvoEvents: {0}")]
    Subscribe(#[from] ClientError<subscribe_convo_events::Error>),
    #[error("sendMessage: {0}")]
    SendMessage(#[from] ClientError<send_message::Error>),
    #[error("getMessages: {0}")]
    GetMessages(#[from] ClientError<get_messages::Error>),
    #[error("commitGroupChange: {0}")]
    CommitGroupChange(#[from] ClientError<commit_group_change::Error>),
    #[error("removeMember: {0}")]
    RemoveMember(#[from] ClientError<remove_member::Error>),
    #[error("leaveConvo: {0}")]
    LeaveConvo(#[from] ClientError<leave_convo::Error>),
    #[error("getGroupInfo: {0}")]
    GetGroupInfo(#[from] ClientError<get_group_info::Error>),
    #[error("processExternalCommit: {0}")]
    ProcessExternalCommit(#[from] ClientError<process_external_commit::Error>),

    /// The device name does not make a `did#device` identity.
    #[error("{0}")]
    InvalidDevice(#[from] catbird_mls_core::device::DeviceIdError),
    /// OpenMLS refused a local step (building, processing, merging, storage).
    #[error("{action}: {message}")]
    Mls {
        /// What the device was doing.
        action: &'static str,
        /// OpenMLS's error, as text.
        message: String,
    },
    /// The service sent something other than what the method promises (e.g.
    /// a KeyPackage where a Welcome belongs).
    #[error("unexpected answer from the service: {0}")]
    Unexpected(String),
    /// This device holds no group state for the conversation: it never
    /// joined it, or it left or lost it (rejoin to get it back).
    #[error("this device is not in conversation {0}")]
    NotInConvo(String),
    /// Nobody to add or remove: no KeyPackages for the requested users, or
    /// no leaf of that user besides the caller's own.
    #[error("{0}")]
    NothingToDo(String),
}

impl DeviceError {
    /// Whether the service rejected a commit, proposal or message because
    /// the conversation's epoch moved on: the caller syncs and tries again.
    pub fn is_epoch_mismatch(&self) -> bool {
        match self {
            Self::AddMembers(e) => e.declared() == Some(&add_members::Error::EpochMismatch),
            Self::SendMessage(e) => e.declared() == Some(&send_message::Error::EpochMismatch),
            Self::CommitGroupChange(e) => {
                e.declared() == Some(&commit_group_change::Error::EpochMismatch)
            }
            Self::RemoveMember(e) => e.declared() == Some(&remove_member::Error::EpochMismatch),
            Self::LeaveConvo(e) => e.declared() == Some(&leave_convo::Error::EpochMismatch),
            Self::ProcessExternalCommit(e) => {
                e.declared() == Some(&process_external_commit::Error::EpochMismatch)
            }
            _ => false,
        }
    }
}

/// Maps a local OpenMLS error to [`DeviceError::Mls`], naming the step.
pub(crate) fn mls<E: std::fmt::Display>(action: &'static str) -> impl FnOnce(E) -> DeviceError {
    move |error| DeviceError::Mls {
        action,
        message: error.to_string(),
    }
}
