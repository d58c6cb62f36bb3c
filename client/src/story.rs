//! The demo story, against a running service: alice and bob, one phone
//! each, talk in a conversation, every message arriving live on the
//! receiver's event stream; bob loses his phone; his new phone rejoins by
//! external commit and removes the old phone's leaf, which alice sees on
//! her stream; they talk again and end in the same epoch as the service.
//! One line per step.
//!
//! [`run`] tells it with new local identities, straight to the service;
//! [`run_through_pds`] with two accounts of a PDS, alice's calls carrying
//! tokens from her PDS's getServiceAuth and bob's going through his PDS
//! (`atproto-proxy`), his stream opened with a ticket asked through it.

use std::io::Write;
use std::path::PathBuf;

use catbird_generated::lexicons::blue::catbird::mls::get_epoch;
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::ClientError;

use std::time::Duration;

use catbird_generated::runtime::xrpc::futures_util::StreamExt as _;
use catbird_mls_core::auth::Algorithm;

use crate::access::{Access, PdsMode, Service};
use crate::identity::{self, LocalIdentity, LocalIdentityError};
use crate::pds::{PdsError, PdsSession};
use crate::{ConvoEvents, Device, DeviceError, Event, Received};

/// Where the service is and how it knows the users.
#[derive(Debug, Clone)]
pub struct Options {
    /// The service's base URL.
    pub url: String,
    /// The DID directory the service resolves DIDs from: the users are
    /// created there.
    pub did_directory: PathBuf,
    /// The service's DID, the `aud` of the users' tokens.
    pub service_did: Did,
}

/// The service, a PDS and two of its accounts, for [`run_through_pds`].
#[derive(Debug, Clone)]
pub struct PdsOptions {
    /// The service (its DID is what the PDS forwards to and mints tokens for).
    pub service: Service,
    /// The PDS's base URL.
    pub pds_url: String,
    /// alice's account: her calls carry tokens from getServiceAuth.
    pub alice: Login,
    /// bob's account: his calls go through the PDS.
    pub bob: Login,
}

/// An account's credentials on the PDS.
#[derive(Clone)]
pub struct Login {
    /// Its handle, DID or email.
    pub identifier: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("identifier", &self.identifier)
            .finish_non_exhaustive()
    }
}

/// Why the story stopped.
#[derive(Debug, thiserror::Error)]
pub enum StoryError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("creating a local identity: {0}")]
    Identity(#[from] LocalIdentityError),
    #[error("logging in to the PDS: {0}")]
    Pds(#[from] PdsError),
    #[error("getEpoch: {0}")]
    GetEpoch(#[from] ClientError<get_epoch::Error>),
    #[error("writing the story: {0}")]
    Output(#[from] std::io::Error),
    /// A step worked but its outcome is wrong.
    #[error("{0}")]
    Check(String),
}

/// Fresh KeyPackages per device, besides its last-resort one.
const KEY_PACKAGES: usize = 3;

/// Runs the story with new local identities, writing one line per step to
/// `out`.
pub async fn run(options: &Options, out: &mut impl Write) -> Result<(), StoryError> {
    let alice = identity::create_identity(&options.did_directory, "alice", Algorithm::Es256k)?;
    let bob = identity::create_identity(&options.did_directory, "bob", Algorithm::Es256k)?;
    writeln!(out, "alice is {}, bob is {}", alice.did, bob.did)?;
    let service = Service {
        did: options.service_did.clone(),
        url: options.url.clone(),
    };
    let direct = |identity: LocalIdentity| Access::Direct {
        identity,
        service: service.clone(),
    };
    tell(&direct(alice), &direct(bob), out).await
}

/// Runs the story with two accounts of a PDS: alice with tokens from
/// getServiceAuth, bob through the PDS. One line per step.
pub async fn run_through_pds(options: &PdsOptions, out: &mut impl Write) -> Result<(), StoryError> {
    let mut users = Vec::new();
    for (name, login, mode) in [
        ("alice", &options.alice, PdsMode::ServiceAuth),
        ("bob", &options.bob, PdsMode::Proxy),
    ] {
        let session =
            PdsSession::login(&options.pds_url, &login.identifier, &login.password).await?;
        writeln!(
            out,
            "{name} logged in to the PDS as {} ({})",
            session.handle(),
            session.did()
        )?;
        if mode == PdsMode::Proxy {
            // Every call of bob's carries the session's access token: the
            // story runs on a refreshed one.
            session.refresh().await?;
            writeln!(out, "{name} refreshed the session")?;
        }
        let access = Access::Pds {
            session,
            mode,
            service: options.service.clone(),
        };
        writeln!(out, "{name} {access}")?;
        users.push(access);
    }
    tell(&users[0], &users[1], out).await
}

/// The story of the users `alice` and `bob`, reaching the service as their
/// accesses say.
pub async fn tell(alice: &Access, bob: &Access, out: &mut impl Write) -> Result<(), StoryError> {
    let names = Names(vec![
        (alice.did().clone(), "alice"),
        (bob.did().clone(), "bob"),
    ]);
    let mut alice_phone = Device::with_access(alice, "phone")?;
    let mut bob_phone = Device::with_access(bob, "phone")?;
    for device in [&mut alice_phone, &mut bob_phone] {
        let published = device.publish_key_packages(KEY_PACKAGES).await?;
        let name = names.device(device);
        let count = published.len();
        writeln!(out, "{name} published {count} KeyPackages, one last-resort")?;
    }

    let convo = alice_phone.create_convo("alice and bob").await?;
    let epoch = alice_phone.epoch(&convo)?;
    writeln!(
        out,
        "alice#phone created conversation {convo} (epoch {epoch})"
    )?;

    // Both follow their event streams from here on: what others do arrives
    // live, and nothing is polled.
    let mut alice_events = Follower::open(&mut alice_phone).await?;
    let added = alice_phone
        .add(&convo, std::slice::from_ref(bob.did()))
        .await?;
    let epoch = alice_phone.epoch(&convo)?;
    writeln!(
        out,
        "alice#phone added {} (epoch {epoch})",
        names.all(&added)
    )?;

    // Bob's stream starts with a catch-up listing the conversation he was
    // added to: following it joins him from his Welcome.
    let mut bob_events = Follower::open(&mut bob_phone).await?;
    let epoch = bob_events
        .joined
        .ok_or_else(|| StoryError::Check("bob's catch-up did not join him".to_owned()))?;
    writeln!(
        out,
        "bob#phone joined from its Welcome (epoch {epoch}), from its stream's catch-up"
    )?;

    alice_phone.send_ephemeral(&convo, "typing…").await?;
    let typing = bob_events
        .until(&mut bob_phone, |event| {
            matches!(event, Event::Ephemeral { .. })
        })
        .await?;
    if let Some(Event::Ephemeral { sender, text, .. }) = typing.last() {
        let sender = names.label(sender);
        writeln!(
            out,
            "bob#phone sees {sender} {text:?} (ephemeral: never stored)"
        )?;
    }

    let hello = "Hi Bob! Only our devices can read this.";
    talk(
        out,
        &names,
        &convo,
        (&mut alice_phone, &mut bob_phone, &mut bob_events),
        hello,
    )
    .await?;
    let reply = "Hi Alice! The service only sees ciphertext.";
    talk(
        out,
        &names,
        &convo,
        (&mut bob_phone, &mut alice_phone, &mut alice_events),
        reply,
    )
    .await?;

    drop((bob_phone, bob_events));
    writeln!(out, "bob#phone is lost, and its MLS state with it")?;

    let mut bob_phone2 = Device::with_access(bob, "phone2")?;
    let epoch = bob_phone2.rejoin(&convo).await?;
    writeln!(
        out,
        "bob#phone2 rejoined by external commit (epoch {epoch})"
    )?;
    let removed = bob_phone2.remove(&convo, bob.did(), false).await?;
    let epoch = bob_phone2.epoch(&convo)?;
    writeln!(
        out,
        "bob#phone2 removed bob's old leaf {} (epoch {epoch})",
        names.all(&removed)
    )?;
    let mut bob2_events = Follower::open(&mut bob_phone2).await?;

    // Alice learns of both commits from her stream.
    let mut changes = Vec::new();
    while changes.len() < 2 {
        let events = alice_events
            .until(&mut alice_phone, |event| {
                matches!(event, Event::Membership(_))
            })
            .await?;
        for event in events {
            if let Event::Membership(change) = event {
                changes.push(format!(
                    "{} {} at seq {}",
                    names.label(&change.device_id),
                    change.change.as_str(),
                    change.seq
                ));
            }
        }
    }
    let epoch = alice_phone.epoch(&convo)?;
    let members = alice_phone.members(&convo)?;
    let members = members.iter().map(|member| names.label(&member.device_id));
    let members = members.collect::<Vec<_>>().join(", ");
    writeln!(
        out,
        "alice#phone's stream: {} (epoch {epoch}); members: {members}",
        changes.join(", ")
    )?;

    let hello = "Welcome back, Bob.";
    talk(
        out,
        &names,
        &convo,
        (&mut alice_phone, &mut bob_phone2, &mut bob2_events),
        hello,
    )
    .await?;
    let reply = "Thanks! New phone, same conversation.";
    talk(
        out,
        &names,
        &convo,
        (&mut bob_phone2, &mut alice_phone, &mut alice_events),
        reply,
    )
    .await?;

    let params = get_epoch::Params {
        convo_id: convo.clone(),
    };
    let service = alice_phone.client().get_epoch(&params).await?.epoch;
    let (alice_epoch, bob_epoch) = (alice_phone.epoch(&convo)?, bob_phone2.epoch(&convo)?);
    writeln!(
        out,
        "epochs: alice#phone {alice_epoch}, bob#phone2 {bob_epoch}, service {service}"
    )?;
    if i64::try_from(alice_epoch).ok() != Some(service) || alice_epoch != bob_epoch {
        return Err(StoryError::Check("the epochs differ".to_owned()));
    }
    Ok(())
}

/// `from` sends `text`; `to` receives it live on its stream, and it must be
/// exactly that.
async fn talk(
    out: &mut impl Write,
    names: &Names,
    convo: &str,
    (from, to, events): (&mut Device, &mut Device, &mut Follower),
    text: &str,
) -> Result<(), StoryError> {
    from.send(convo, text).await?;
    let received = events
        .until(to, |event| matches!(event, Event::Received { .. }))
        .await?;
    let reader = names.device(to);
    let messages: Vec<&Received> = received
        .iter()
        .filter_map(|event| match event {
            Event::Received { messages, .. } => Some(messages),
            _ => None,
        })
        .flatten()
        .collect();
    match messages.as_slice() {
        [message] if message.text == text => {
            let sender = names.label(&message.sender);
            writeln!(
                out,
                "{reader} receives live from {sender}: {:?}",
                message.text
            )?;
            Ok(())
        }
        _ => Err(StoryError::Check(format!(
            "{reader} expected to receive {text:?}, received {messages:?}"
        ))),
    }
}

/// A device's event stream, followed with the resume contract.
struct Follower {
    events: ConvoEvents,
    /// The epoch the catch-up joined a conversation at, if it did.
    joined: Option<u64>,
}

/// How long the story waits for an event before it calls the service stuck.
const EVENT_WAIT: Duration = Duration::from_secs(30);

impl Follower {
    /// Opens `device`'s stream and applies its first frame (the catch-up).
    async fn open(device: &mut Device) -> Result<Self, StoryError> {
        let mut follower = Self {
            events: device.subscribe().await?,
            joined: None,
        };
        for event in follower.next(device).await? {
            if let Event::Joined { epoch, .. } = event {
                follower.joined = Some(epoch);
            }
        }
        Ok(follower)
    }

    /// Applies the next frame; returns what it did.
    async fn next(&mut self, device: &mut Device) -> Result<Vec<Event>, StoryError> {
        let frame = tokio::time::timeout(EVENT_WAIT, self.events.next())
            .await
            .map_err(|_| StoryError::Check(format!("no event within {EVENT_WAIT:?}")))?
            .ok_or_else(|| StoryError::Check("the event stream ended".to_owned()))?
            .map_err(DeviceError::from)?;
        Ok(device.follow(frame).await?)
    }

    /// Applies frames until one produces an event `wanted` accepts; returns
    /// the events of that frame.
    async fn until(
        &mut self,
        device: &mut Device,
        wanted: impl Fn(&Event) -> bool,
    ) -> Result<Vec<Event>, StoryError> {
        loop {
            let events = self.next(device).await?;
            if events.iter().any(&wanted) {
                return Ok(events);
            }
        }
    }
}

/// Short names for the story's DIDs: `alice#phone` rather than the DID.
struct Names(Vec<(Did, &'static str)>);

impl Names {
    /// `did:plc:...#phone` as `alice#phone`; unknown DIDs stay as they are.
    fn label(&self, device_id: &str) -> String {
        let Some((did, device)) = device_id.split_once('#') else {
            return device_id.to_owned();
        };
        match self.0.iter().find(|(known, _)| known.as_str() == did) {
            Some((_, name)) => format!("{name}#{device}"),
            None => device_id.to_owned(),
        }
    }

    fn device(&self, device: &Device) -> String {
        self.label(&device.id().to_string())
    }

    fn all(&self, device_ids: &[String]) -> String {
        let labels = device_ids.iter().map(|id| self.label(id));
        labels.collect::<Vec<_>>().join(", ")
    }
}
