//! The KeyPackage directory: devices publish KeyPackages, other users fetch
//! one per device to add them to a conversation. Each KeyPackage is handed
//! out once, except a device's last-resort one, which stands in while the
//! device has nothing else.

mod store;
mod validate;

use std::collections::HashSet;

use catbird_generated::lexicons::blue::catbird::mls::defs::{
    CipherSuite, KeyPackageInfo, KeyPackageRef, MissingKeyPackage,
};
use catbird_generated::runtime::{Bytes, Datetime, Did};
use sqlx::PgPool;

use crate::db;
use crate::device::DeviceId;
use crate::error::ServiceError;
use crate::mls_crypto as mls;

pub use store::{delete_expired_unused, mark_used};
pub use validate::{ValidKeyPackage, validate};

/// How many KeyPackages a device should keep, and may keep.
#[derive(Debug, Clone, Copy)]
pub struct KeyPackageLimits {
    /// What getKeyPackageStatus recommends keeping.
    pub target_count: u32,
    /// Below this many, getKeyPackageStatus says to replenish.
    pub low_water: u32,
    /// Unused KeyPackages stored per device and cipher suite at most.
    pub max_unused_per_device: u32,
}

/// Validates a batch; the first failure names its index.
pub fn validate_batch(
    messages: &[Bytes],
    caller: &Did,
) -> Result<Vec<ValidKeyPackage>, ServiceError> {
    messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            validate(&message.0, caller).map_err(|error| match error {
                ServiceError::InvalidKeyPackage(why) => {
                    ServiceError::InvalidKeyPackage(format!("keyPackages[{index}]: {why}"))
                }
                ServiceError::UnsupportedCipherSuite(why) => {
                    ServiceError::UnsupportedCipherSuite(format!("keyPackages[{index}]: {why}"))
                }
                other => other,
            })
        })
        .collect()
}

/// Stores validated KeyPackages, all or none, and says what was stored.
pub async fn publish(
    db: &PgPool,
    limits: &KeyPackageLimits,
    packages: &[ValidKeyPackage],
) -> Result<Vec<KeyPackageInfo>, ServiceError> {
    let mut devices: Vec<(&DeviceId, &CipherSuite)> = packages
        .iter()
        .map(|p| (&p.device, &p.cipher_suite))
        .collect();
    // A fixed lock order, so that two batches never wait on each other.
    devices.sort_by_key(|(device, suite)| (device.to_string(), suite.as_str().to_owned()));
    devices.dedup();

    let mut tx = db.begin().await?;
    for (device, _) in &devices {
        store::lock_device(&mut tx, &device.to_string()).await?;
    }
    for package in packages {
        store::insert(&mut tx, package).await?;
    }
    // Counted after inserting, so re-published KeyPackages do not count twice.
    for (device, suite) in &devices {
        let unused = store::count_unused(
            &mut *tx,
            device.did(),
            &device.to_string(),
            Some(suite.as_str()),
        )
        .await?;
        if unused > i64::from(limits.max_unused_per_device) {
            return Err(ServiceError::TooManyKeyPackages(format!(
                "{device} would hold {unused} unused KeyPackages in {}; the limit is {}",
                suite.as_str(),
                limits.max_unused_per_device
            )));
        }
    }
    tx.commit().await?;

    Ok(packages
        .iter()
        .map(|p| KeyPackageInfo {
            extra: Default::default(),
            key_package_hash: mls::to_hex(&p.reference),
            device_id: p.device.to_string(),
            cipher_suite: p.cipher_suite.clone(),
            last_resort: p.last_resort,
            expires_at: Datetime::from(p.expires_at),
        })
        .collect())
}

/// What a fetch hands out.
#[derive(Debug)]
pub struct Fetched {
    pub key_packages: Vec<KeyPackageRef>,
    pub missing: Vec<MissingKeyPackage>,
}

/// Hands out one KeyPackage per device of each user in `dids` (duplicates
/// ignored): an unused one if the device has any, else its last-resort one.
/// Devices in `skip` (already in the conversation) are left alone.
pub async fn fetch(
    db: &PgPool,
    caller: &Did,
    dids: &[Did],
    cipher_suite: &CipherSuite,
    skip: &[String],
) -> Result<Fetched, ServiceError> {
    let mut requested: Vec<String> = Vec::with_capacity(dids.len());
    for did in dids {
        if !requested.iter().any(|r| r == did.as_str()) {
            requested.push(did.as_str().to_owned());
        }
    }
    let suite = cipher_suite.as_str();
    // One instant for the whole fetch, so both queries agree on what has
    // expired.
    let now = chrono::Utc::now();

    let mut tx = db.begin().await?;
    let mut devices = store::devices(&mut tx, &requested, suite).await?;
    devices.retain(|(_, device)| !skip.contains(device));
    let device_ids: Vec<String> = devices.iter().map(|(_, device)| device.clone()).collect();
    let mut handed_out = store::take_unused(&mut tx, &device_ids, suite, caller, now).await?;
    let served: HashSet<&str> = handed_out.iter().map(|p| p.device_id.as_str()).collect();
    let unserved: Vec<String> = device_ids
        .iter()
        .filter(|device| !served.contains(device.as_str()))
        .cloned()
        .collect();
    handed_out.extend(store::last_resort(&mut tx, &unserved, suite, now).await?);
    tx.commit().await?;

    let served: HashSet<&str> = handed_out.iter().map(|p| p.device_id.as_str()).collect();
    let mut missing = Vec::new();
    for did in &requested {
        let theirs: Vec<&str> = devices
            .iter()
            .filter(|(owner, _)| owner == did)
            .map(|(_, device)| device.as_str())
            .collect();
        if theirs.is_empty() {
            missing.push(missing_entry(did, None)?);
        }
        for device in theirs.into_iter().filter(|d| !served.contains(d)) {
            missing.push(missing_entry(did, Some(device))?);
        }
    }
    if handed_out.is_empty() {
        return Err(ServiceError::NoKeyPackages(format!(
            "no KeyPackage in {suite} is available for any of the requested users"
        )));
    }

    let key_packages = handed_out
        .into_iter()
        .map(|p| {
            Ok(KeyPackageRef {
                extra: Default::default(),
                did: db::stored_did(&p.did)?,
                device_id: p.device_id,
                key_package: Bytes(p.key_package),
                key_package_hash: mls::to_hex(&p.key_package_ref),
                cipher_suite: cipher_suite.clone(),
                last_resort: p.last_resort,
            })
        })
        .collect::<Result<_, ServiceError>>()?;
    Ok(Fetched {
        key_packages,
        missing,
    })
}

fn missing_entry(did: &str, device: Option<&str>) -> Result<MissingKeyPackage, ServiceError> {
    Ok(MissingKeyPackage {
        extra: Default::default(),
        did: db::stored_did(did)?,
        device_id: device.map(str::to_owned),
    })
}

/// A device's KeyPackage supply.
#[derive(Debug)]
pub struct Status {
    pub available: i64,
    pub last_resort: bool,
    pub needs_replenish: bool,
    pub target_count: u32,
}

/// How many KeyPackages a device has left (one of the caller's own: the
/// service checks the device before it asks).
pub async fn status(
    db: &PgPool,
    limits: &KeyPackageLimits,
    device: &DeviceId,
    cipher_suite: Option<&CipherSuite>,
) -> Result<Status, ServiceError> {
    let suite = cipher_suite.map(CipherSuite::as_str);
    let (did, device_id) = (device.did(), device.to_string());
    let available = store::count_unused(db, did, &device_id, suite).await?;
    let last_resort = store::has_last_resort(db, did, &device_id, suite).await?;
    Ok(Status {
        available,
        last_resort,
        needs_replenish: available < i64::from(limits.low_water) || !last_resort,
        target_count: limits.target_count,
    })
}
