//! The demo story, against a running service: alice and bob, one phone
//! each, talk in a conversation; bob loses his phone; his new phone rejoins
//! by external commit and removes the old phone's leaf; they talk again and
//! end in the same epoch as the service. One line per step.

use std::io::Write;
use std::path::PathBuf;

use catbird_generated::lexicons::blue::catbird::mls::{Client, get_epoch};
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::ClientError;

use catbird_mls_core::auth::Algorithm;

use crate::identity::{self, LocalIdentity, LocalIdentityError};
use crate::{Device, DeviceError};

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

/// Why the story stopped.
#[derive(Debug, thiserror::Error)]
pub enum StoryError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("creating a local identity: {0}")]
    Identity(#[from] LocalIdentityError),
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

/// Runs the story, writing one line per step to `out`.
pub async fn run(options: &Options, out: &mut impl Write) -> Result<(), StoryError> {
    let alice = identity::create_identity(&options.did_directory, "alice", Algorithm::Es256k)?;
    let bob = identity::create_identity(&options.did_directory, "bob", Algorithm::Es256k)?;
    let names = Names(vec![(alice.did.clone(), "alice"), (bob.did.clone(), "bob")]);
    writeln!(out, "alice is {}, bob is {}", alice.did, bob.did)?;

    let mut alice_phone = Device::new(&alice.did, "phone", client_for(&alice, options))?;
    let mut bob_phone = Device::new(&bob.did, "phone", client_for(&bob, options))?;
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

    let added = alice_phone
        .add(&convo, std::slice::from_ref(&bob.did))
        .await?;
    let epoch = alice_phone.epoch(&convo)?;
    writeln!(
        out,
        "alice#phone added {} (epoch {epoch})",
        names.all(&added)
    )?;

    let epoch = bob_phone.join_from_welcome(&convo).await?;
    writeln!(out, "bob#phone joined from its Welcome (epoch {epoch})")?;

    let hello = "Hi Bob! Only our devices can read this.";
    talk(out, &names, &convo, &mut alice_phone, &mut bob_phone, hello).await?;
    let reply = "Hi Alice! The service only sees ciphertext.";
    talk(out, &names, &convo, &mut bob_phone, &mut alice_phone, reply).await?;

    drop(bob_phone);
    writeln!(out, "bob#phone is lost, and its MLS state with it")?;

    let mut bob_phone2 = Device::new(&bob.did, "phone2", client_for(&bob, options))?;
    let epoch = bob_phone2.rejoin(&convo).await?;
    writeln!(
        out,
        "bob#phone2 rejoined by external commit (epoch {epoch})"
    )?;
    let removed = bob_phone2.remove(&convo, &bob.did, false).await?;
    let epoch = bob_phone2.epoch(&convo)?;
    writeln!(
        out,
        "bob#phone2 removed bob's old leaf {} (epoch {epoch})",
        names.all(&removed)
    )?;

    let missed = alice_phone.sync(&convo).await?;
    if !missed.is_empty() {
        return Err(StoryError::Check(format!(
            "alice#phone read unexpected messages: {missed:?}"
        )));
    }
    let epoch = alice_phone.epoch(&convo)?;
    let members = alice_phone.members(&convo)?;
    let members = members.iter().map(|member| names.label(&member.device_id));
    let members = members.collect::<Vec<_>>().join(", ");
    writeln!(
        out,
        "alice#phone processed both commits (epoch {epoch}); members: {members}"
    )?;

    let hello = "Welcome back, Bob.";
    talk(
        out,
        &names,
        &convo,
        &mut alice_phone,
        &mut bob_phone2,
        hello,
    )
    .await?;
    let reply = "Thanks! New phone, same conversation.";
    talk(
        out,
        &names,
        &convo,
        &mut bob_phone2,
        &mut alice_phone,
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

/// `from` sends `text`; `to` reads the log and must find exactly that.
async fn talk(
    out: &mut impl Write,
    names: &Names,
    convo: &str,
    from: &mut Device,
    to: &mut Device,
    text: &str,
) -> Result<(), StoryError> {
    from.send(convo, text).await?;
    let received = to.sync(convo).await?;
    let reader = names.device(to);
    match received.as_slice() {
        [message] if message.text == text => {
            let sender = names.label(&message.sender);
            writeln!(out, "{reader} reads from {sender}: {:?}", message.text)?;
            Ok(())
        }
        _ => Err(StoryError::Check(format!(
            "{reader} expected to read {text:?}, read {received:?}"
        ))),
    }
}

/// A generated client acting as `identity`, with a fresh token per call.
pub fn client_for(identity: &LocalIdentity, options: &Options) -> Client {
    identity::service_client(&options.url, identity, &options.service_did)
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
