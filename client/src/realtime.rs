//! Following a device's event stream (`subscribeConvoEvents`) with the
//! resume contract of its lexicon built in, so that no entry is lost or
//! applied twice, whatever the stream drops:
//!
//! - the device keeps, per conversation, the seq of the last entry it
//!   applied ([`Device::last_seq`]);
//! - a `#catchUp` (the first frame, and the one after every resync) makes
//!   it read every conversation whose head is past that seq with
//!   getMessages, and join, from its Welcome, conversations it holds no
//!   state for;
//! - a `#logEntry` right after the held seq is applied as it is; an older
//!   one is a duplicate and ignored; a newer one means entries were missed,
//!   and they are read first.
//!
//! [`Device::follow`] applies one frame. A disconnect loses nothing: open a
//! new stream ([`Device::subscribe`], to any replica) and follow it; its
//! `#catchUp` fills what was missed.

use catbird_generated::lexicons::blue::catbird::mls::get_subscription_ticket;
use catbird_generated::lexicons::blue::catbird::mls::subscribe_convo_events::{
    self, Ephemeral, Info, Membership, Message,
};
use catbird_generated::runtime::xrpc::EventStream;
use openmls::prelude::ProcessedMessageContent;
use openmls_traits::storage::{CURRENT_VERSION, StorageProvider};

use crate::access::StreamAccess;
use crate::device::{Device, Received};
use crate::error::DeviceError;
use crate::mls::{describe, read_message};

/// The stream of a device, as [`Device::subscribe`] opens it.
pub type ConvoEvents = EventStream<Message, subscribe_convo_events::Error>;

/// What following one frame did.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Application messages of a conversation, decrypted, in log order
    /// (live, or read to fill a gap).
    Received {
        convo: String,
        messages: Vec<Received>,
    },
    /// The device joined a conversation from its Welcome, at `epoch`.
    Joined { convo: String, epoch: u64 },
    /// A device joined or left a conversation.
    Membership(Membership),
    /// An ephemeral message of another member, decrypted.
    Ephemeral {
        convo: String,
        sender: String,
        text: String,
    },
    /// A notice about the stream (resync, slowConsumer, restarting).
    Info(Info),
}

impl<S: StorageProvider<CURRENT_VERSION>> Device<S> {
    /// Opens this device's event stream: with its client's token for
    /// `subscribeConvoEvents`, or, for a device whose calls go through a
    /// PDS, at the service with a ticket asked for through the PDS.
    pub async fn subscribe(&self) -> Result<ConvoEvents, DeviceError> {
        let device_id = self.id().to_string();
        match self.stream_access() {
            StreamAccess::Token => {
                let params = subscribe_convo_events::Params {
                    device_id,
                    ticket: None,
                };
                Ok(self.client().subscribe_convo_events(&params).await?)
            }
            StreamAccess::Ticket { service } => {
                let input = get_subscription_ticket::Input {
                    extra: Default::default(),
                    device_id: device_id.clone(),
                };
                let ticket = self.client().get_subscription_ticket(&input).await?;
                let params = subscribe_convo_events::Params {
                    device_id,
                    ticket: Some(ticket.ticket),
                };
                Ok(service.subscribe_convo_events(&params).await?)
            }
        }
    }

    /// Applies one frame of this device's stream, following the resume
    /// contract: nothing is applied twice, and a gap is read with
    /// getMessages before what follows it.
    pub async fn follow(&mut self, message: Message) -> Result<Vec<Event>, DeviceError> {
        let mut events = match message {
            Message::LogEntry(entry) => {
                let entry = entry.message;
                let convo = entry.convo_id.clone();
                if self.is_in(&convo) && entry.seq > self.last_seq(&convo) {
                    if entry.seq == self.last_seq(&convo) + 1 {
                        let mut group = self.group(&convo)?;
                        self.apply_next(&convo, &mut group, &entry)?;
                    } else {
                        // Entries were missed: the log has them, this one too.
                        self.read_log(&convo).await?;
                    }
                }
                Vec::new()
            }
            Message::CatchUp(catch_up) => {
                let mut events = Vec::new();
                for head in catch_up.convos {
                    events.extend(self.catch_up(&head.convo_id, head.last_seq).await?);
                }
                events
            }
            Message::Welcome(welcome) => {
                self.catch_up(&welcome.convo_id, welcome.commit_seq).await?
            }
            Message::Membership(change) => vec![Event::Membership(change)],
            Message::Ephemeral(ephemeral) => self.open_ephemeral(ephemeral)?.into_iter().collect(),
            Message::Info(info) => vec![Event::Info(info)],
            Message::Unknown(_) => Vec::new(),
        };
        // Whatever was decrypted, also by an earlier call that failed midway.
        let received = self.take_all_received().into_iter();
        events.extend(received.map(|(convo, messages)| Event::Received { convo, messages }));
        Ok(events)
    }

    /// Brings `convo` up to `head`: joins it from its Welcome if this
    /// device holds no state for it, then reads what it has not applied.
    async fn catch_up(&mut self, convo: &str, head: i64) -> Result<Vec<Event>, DeviceError> {
        let mut events = Vec::new();
        if !self.is_in(convo) {
            let epoch = self.join_from_welcome(convo).await?;
            events.push(Event::Joined {
                convo: convo.to_owned(),
                epoch,
            });
        }
        if head > self.last_seq(convo) {
            self.read_log(convo).await?;
        }
        Ok(events)
    }

    /// Decrypts another member's ephemeral message (none for our own, or
    /// for a conversation this device is not in).
    fn open_ephemeral(&self, ephemeral: Ephemeral) -> Result<Option<Event>, DeviceError> {
        if !self.is_in(&ephemeral.convo_id) {
            return Ok(None);
        }
        let mut group = self.group(&ephemeral.convo_id)?;
        let message = read_message(&ephemeral.ciphertext.0, "an ephemeral message")?
            .try_into_protocol_message()
            .map_err(|error| DeviceError::Unexpected(format!("an ephemeral message: {error}")))?;
        let processed = group
            .process_message(self.installation().provider(), message)
            .map_err(|error| DeviceError::Mls {
                action: "opening an ephemeral message",
                message: error.to_string(),
            })?;
        let sender = describe(processed.credential());
        Ok(match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(message) => Some(Event::Ephemeral {
                convo: ephemeral.convo_id,
                sender,
                text: String::from_utf8_lossy(&message.into_bytes()).into_owned(),
            }),
            _ => None,
        })
    }
}
