//! The simulated users: local identities the service resolves from its DID
//! directory, service-auth tokens minted before a measurement starts (so
//! that signing them is not what is measured), devices of the client
//! crate, and groups built to a given size.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use catbird_generated::lexicons::blue::catbird::mls::{Client, add_members, publish_key_packages};
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::XrpcClient;
use catbird_mls_client::{
    Change, Device, DeviceError, Installation, LocalIdentity, SUITE, create_identity, mint_token,
    to_bytes,
};
use catbird_mls_core::auth::Algorithm;
use openmls::prelude::{KeyPackage, MlsMessageOut};

use crate::error::BenchError;

/// How long pre-minted tokens stay valid: longer than any scenario.
const TOKEN_LIFETIME: Duration = Duration::from_secs(2 * 60 * 60);

/// Most devices per simulated user (group members are devices).
pub const DEVICES_PER_USER: usize = 100;

/// Most KeyPackages per addMembers commit and per publishKeyPackages call.
const BATCH: usize = 100;

/// Everyone a run simulates, and the service they talk to.
pub struct Fleet {
    pub did_directory: PathBuf,
    pub audience: Did,
    next_user: AtomicU64,
    /// Tokens minted during measurements because the pool ran dry.
    pub late_tokens: Arc<AtomicU64>,
    /// Whether a measurement is running (set by the scenarios).
    pub measuring: Arc<AtomicBool>,
}

/// A user: an identity and its pool of pre-minted tokens by method.
#[derive(Clone)]
pub struct User {
    pub identity: LocalIdentity,
    tokens: Arc<Mutex<HashMap<String, Vec<String>>>>,
    audience: Did,
    late_tokens: Arc<AtomicU64>,
    measuring: Arc<AtomicBool>,
}

impl Fleet {
    pub fn new(did_directory: PathBuf, audience: Did) -> Self {
        Self {
            did_directory,
            audience,
            next_user: AtomicU64::new(0),
            late_tokens: Arc::new(AtomicU64::new(0)),
            measuring: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A new user, resolvable by the service.
    pub fn user(&self) -> Result<User, BenchError> {
        let n = self.next_user.fetch_add(1, Ordering::Relaxed);
        let identity = create_identity(&self.did_directory, &format!("u{n}"), Algorithm::Es256k)?;
        Ok(User {
            identity,
            tokens: Arc::default(),
            audience: self.audience.clone(),
            late_tokens: self.late_tokens.clone(),
            measuring: self.measuring.clone(),
        })
    }
}

impl User {
    pub fn did(&self) -> &Did {
        &self.identity.did
    }

    /// Mints `count` tokens for `nsid` now, for calls made later.
    pub fn premint(&self, nsid: &str, count: usize) {
        let minted: Vec<String> = (0..count)
            .map(|_| mint_token(&self.identity, &self.audience, nsid, TOKEN_LIFETIME))
            .collect();
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.entry(nsid.to_owned()).or_default().extend(minted);
        }
    }

    /// The generated client for `url`, acting as this user: a pre-minted
    /// token per call while there are any, a fresh one after that (counted
    /// when minted during a measurement).
    pub fn client(&self, url: &str) -> Client {
        let user = self.clone();
        let xrpc = XrpcClient::new(url).with_token_source(move |nsid| {
            let pooled = user
                .tokens
                .lock()
                .ok()
                .and_then(|mut tokens| tokens.get_mut(nsid).and_then(Vec::pop));
            Some(pooled.unwrap_or_else(|| {
                if user.measuring.load(Ordering::Relaxed) {
                    user.late_tokens.fetch_add(1, Ordering::Relaxed);
                }
                mint_token(&user.identity, &user.audience, nsid, TOKEN_LIFETIME)
            }))
        });
        Client::new(xrpc)
    }

    /// A new device of this user on `url`.
    pub fn device(&self, name: &str, url: &str) -> Result<Device, BenchError> {
        Ok(Device::new(self.did(), name, self.client(url))?)
    }
}

/// Devices that are leaves of groups but never run MLS themselves: their
/// KeyPackages are published (so a commit may add them), their event
/// streams can be opened; nothing else is needed of them.
pub struct Leaf {
    pub user: User,
    pub device_id: String,
    pub key_package: KeyPackage,
}

/// Makes `count` leaf devices (users of up to [`DEVICES_PER_USER`]
/// devices) and publishes one KeyPackage of each.
pub async fn leaves(fleet: &Fleet, url: &str, count: usize) -> Result<Vec<Leaf>, BenchError> {
    let mut leaves = Vec::with_capacity(count);
    let mut made = 0;
    while made < count {
        let user = fleet.user()?;
        let here = (count - made).min(DEVICES_PER_USER);
        let mut key_packages = Vec::with_capacity(here);
        for d in 0..here {
            let device_id = format!("{}#d{d}", user.did().as_str());
            let installation = Installation::new(&device_id, SUITE)?;
            let key_package = installation.key_package(false)?;
            key_packages.push(to_bytes(&MlsMessageOut::from(key_package.clone()))?);
            leaves.push(Leaf {
                user: user.clone(),
                device_id,
                key_package,
            });
        }
        let client = user.client(url);
        for batch in key_packages.chunks(BATCH) {
            let input = publish_key_packages::Input {
                extra: Default::default(),
                key_packages: batch.to_vec(),
            };
            client
                .publish_key_packages(&input)
                .await
                .map_err(DeviceError::from)?;
        }
        made += here;
    }
    Ok(leaves)
}

/// Adds `leaves` to `owner`'s group `convo`, [`BATCH`] per commit.
pub async fn add_leaves(
    owner: &mut Device,
    convo: &str,
    leaves: &[Leaf],
) -> Result<(), BenchError> {
    for batch in leaves.chunks(BATCH) {
        let key_packages = batch.iter().map(|leaf| leaf.key_package.clone()).collect();
        let input = add_input(owner, convo, key_packages)?;
        let accepted = owner.client().add_members(&input).await;
        owner.conclude(convo, accepted.as_ref().ok().map(|output| output.seq))?;
        accepted.map_err(DeviceError::from)?;
    }
    Ok(())
}

/// The addMembers input of a commit adding `key_packages`, staged (not
/// merged) in `owner`'s group.
pub fn add_input(
    owner: &Device,
    convo: &str,
    key_packages: Vec<KeyPackage>,
) -> Result<add_members::Input, BenchError> {
    let staged = owner.prepare(convo, Change::Add(key_packages))?;
    let welcome = staged
        .welcome
        .ok_or_else(|| BenchError::Setup("OpenMLS made no Welcome for an add".to_owned()))?;
    Ok(add_members::Input {
        extra: Default::default(),
        convo_id: convo.to_owned(),
        commit: staged.commit,
        welcome,
        group_info: staged.group_info,
        idempotency_key: None,
    })
}
