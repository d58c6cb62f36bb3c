//! The KeyPackage directory over real HTTP with the generated client,
//! KeyPackages made by real OpenMLS devices, and the real PostgreSQL: what
//! publishing accepts and refuses, and that fetching hands each KeyPackage
//! out once, even to concurrent fetchers.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::TestApp;
use crate::common::mls::{self, SUITE_NAME};
use catbird_generated::lexicons::blue::catbird::mls::{
    Client, defs, get_key_package_status, get_key_packages, publish_key_package,
    publish_key_packages,
};
use catbird_generated::runtime::xrpc::ClientError;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::{Bytes, DeclaredError, Did};
use catbird_mls::maintenance;
use catbird_mls_client::Installation;
use openmls::prelude::Lifetime;
use sqlx::PgPool;

fn publish_input(key_package: Bytes) -> publish_key_package::Input {
    publish_key_package::Input {
        extra: Default::default(),
        key_package,
        idempotency_key: None,
    }
}

fn fetch_params(dids: &[&Did]) -> get_key_packages::Params {
    get_key_packages::Params {
        dids: dids.iter().map(|&did| did.clone()).collect(),
        cipher_suite: SUITE_NAME.to_owned(),
        convo_id: None,
    }
}

async fn stored_key_packages(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM key_packages")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Asserts a declared error by its lexicon name; returns its message.
fn assert_declared<E: DeclaredError + PartialEq + std::fmt::Debug, T>(
    result: Result<T, ClientError<E>>,
    name: &str,
    status: StatusCode,
) -> String {
    let expected = E::from_name(name).expect("the method declares this error");
    crate::common::assert_declared(result, expected, status)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[sqlx::test(migrations = "./migrations")]
async fn a_published_key_package_is_stored_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let client = app.client(&alice);
    let phone = mls::installation(&alice.did, "phone");
    let key_package = mls::key_package(&phone);

    let first = client
        .publish_key_package(&publish_input(key_package.clone()))
        .await
        .unwrap();
    assert_eq!(first.device_id, phone.identity());
    assert_eq!(first.cipher_suite.as_str(), SUITE_NAME);
    assert!(!first.last_resort);
    assert_eq!(
        first.key_package_hash.len(),
        64,
        "a SHA-256 KeyPackageRef in hex"
    );
    assert!(first.expires_at.to_chrono() > chrono::Utc::now());

    // Publishing it again is harmless: same answer, still one row.
    let again = client
        .publish_key_package(&publish_input(key_package))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(stored_key_packages(&app.pool).await, 1);
}

#[sqlx::test(migrations = "./migrations")]
async fn invalid_key_packages_are_refused_and_nothing_is_stored(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let client = app.client(&alice);
    let phone = mls::installation(&alice.did, "phone");

    let garbage = Bytes(b"definitely not an MLS message".to_vec());
    let message = assert_declared(
        client.publish_key_package(&publish_input(garbage)).await,
        "InvalidKeyPackage",
        StatusCode::BAD_REQUEST,
    );
    assert!(message.contains("not an MLSMessage"), "{message}");

    // The KeyPackage's own signature is its last bytes.
    let mut tampered = mls::key_package(&phone);
    *tampered.0.last_mut().unwrap() ^= 0x01;
    let message = assert_declared(
        client.publish_key_package(&publish_input(tampered)).await,
        "InvalidKeyPackage",
        StatusCode::BAD_REQUEST,
    );
    assert!(message.contains("does not verify"), "{message}");

    let mallory = app.user("mallory");
    let impostor = mls::installation(&mallory.did, "phone");
    let message = assert_declared(
        client
            .publish_key_package(&publish_input(mls::key_package(&impostor)))
            .await,
        "InvalidKeyPackage",
        StatusCode::BAD_REQUEST,
    );
    assert!(message.contains("not to the caller"), "{message}");

    let now = unix_now();
    let expired = mls::key_package_with(&phone, |builder| {
        builder.key_package_lifetime(Lifetime::init(now - 7200, now - 3600))
    });
    let message = assert_declared(
        client.publish_key_package(&publish_input(expired)).await,
        "InvalidKeyPackage",
        StatusCode::BAD_REQUEST,
    );
    assert!(message.contains("does not verify"), "{message}");

    let no_device = Installation::new(alice.did.as_str(), crate::common::mls::SUITE).unwrap();
    let message = assert_declared(
        client
            .publish_key_package(&publish_input(mls::key_package(&no_device)))
            .await,
        "InvalidKeyPackage",
        StatusCode::BAD_REQUEST,
    );
    assert!(message.contains("did#device"), "{message}");

    assert_eq!(stored_key_packages(&app.pool).await, 0);
}

/// (Publishing in another suite cannot be shown end to end: OpenMLS's
/// crypto here cannot even build such a KeyPackage. `mls_crypto`'s unit
/// tests cover the publish-side check.)
#[sqlx::test(migrations = "./migrations")]
async fn fetching_in_an_unsupported_cipher_suite_is_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let client = app.client(&alice);
    let mut params = fetch_params(&[&alice.did]);
    params.cipher_suite = "MLS_256_DHKEMP384_AES256GCM_SHA384_P384".into();
    assert_declared(
        client.get_key_packages(&params).await,
        "UnsupportedCipherSuite",
        StatusCode::BAD_REQUEST,
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_batch_is_all_or_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let client = app.client(&alice);
    let phone = mls::installation(&alice.did, "phone");

    let mut batch: Vec<Bytes> = (0..5).map(|_| mls::key_package(&phone)).collect();
    batch[3] = Bytes(vec![0, 1, 2]);
    let message = assert_declared(
        client
            .publish_key_packages(&publish_key_packages::Input {
                extra: Default::default(),
                key_packages: batch.clone(),
            })
            .await,
        "InvalidKeyPackage",
        StatusCode::BAD_REQUEST,
    );
    assert!(message.starts_with("keyPackages[3]: "), "{message}");
    assert_eq!(stored_key_packages(&app.pool).await, 0);

    batch[3] = mls::key_package(&phone);
    let stored = client
        .publish_key_packages(&publish_key_packages::Input {
            extra: Default::default(),
            key_packages: batch,
        })
        .await
        .unwrap();
    assert_eq!(stored.key_packages.len(), 5);
    assert_eq!(stored_key_packages(&app.pool).await, 5);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_device_cannot_hoard_key_packages(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| {
        config.key_package_target = 2;
        config.key_package_low_water = 1;
        config.key_package_max_per_device = 4;
    })
    .await;
    let alice = app.user("alice");
    let client = app.client(&alice);
    let phone = mls::installation(&alice.did, "phone");
    let publish = |count: usize| publish_key_packages::Input {
        extra: Default::default(),
        key_packages: (0..count).map(|_| mls::key_package(&phone)).collect(),
    };

    client.publish_key_packages(&publish(3)).await.unwrap();
    let message = assert_declared(
        client.publish_key_packages(&publish(2)).await,
        "TooManyKeyPackages",
        StatusCode::BAD_REQUEST,
    );
    assert!(message.contains("the limit is 4"), "{message}");
    assert_eq!(stored_key_packages(&app.pool).await, 3);
    // Last-resort KeyPackages do not count: there is only ever one current.
    client
        .publish_key_package(&publish_input(mls::last_resort_key_package(&phone)))
        .await
        .unwrap();
    client.publish_key_packages(&publish(1)).await.unwrap();
    assert_eq!(stored_key_packages(&app.pool).await, 5);
}

#[sqlx::test(migrations = "./migrations")]
async fn status_counts_what_a_device_has_left(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| {
        config.key_package_target = 4;
        config.key_package_low_water = 2;
    })
    .await;
    let alice = app.user("alice");
    let client = app.client(&alice);
    let phone = mls::installation(&alice.did, "phone");
    let status = |device_id: &str| get_key_package_status::Params {
        device_id: device_id.to_owned(),
        cipher_suite: None,
    };

    let empty = client
        .get_key_package_status(&status(phone.identity()))
        .await
        .unwrap();
    assert_eq!(
        (
            empty.available,
            empty.last_resort,
            empty.needs_replenish,
            empty.target_count
        ),
        (0, false, true, 4)
    );

    let batch = (0..3)
        .map(|_| mls::key_package(&phone))
        .chain([mls::last_resort_key_package(&phone)]);
    client
        .publish_key_packages(&publish_key_packages::Input {
            extra: Default::default(),
            key_packages: batch.collect(),
        })
        .await
        .unwrap();
    let full = client
        .get_key_package_status(&status(phone.identity()))
        .await
        .unwrap();
    assert_eq!(
        (full.available, full.last_resort, full.needs_replenish),
        (3, true, false)
    );

    // Bob takes two; one left is below the low-water mark.
    let bob = app.client(&app.user("bob"));
    for _ in 0..2 {
        bob.get_key_packages(&fetch_params(&[&alice.did]))
            .await
            .unwrap();
    }
    let low = client
        .get_key_package_status(&status(phone.identity()))
        .await
        .unwrap();
    assert_eq!((low.available, low.needs_replenish), (1, true));

    let mallory = app.user("mallory");
    assert_declared(
        client
            .get_key_package_status(&status(&format!("{}#phone", mallory.did.as_str())))
            .await,
        "InvalidDevice",
        StatusCode::BAD_REQUEST,
    );
    assert_declared(
        client
            .get_key_package_status(&status(alice.did.as_str()))
            .await,
        "InvalidDevice",
        StatusCode::BAD_REQUEST,
    );
}

/// Publishes `count` KeyPackages for each device.
async fn publish_for(client: &Client, devices: &[&Installation], count: usize) {
    for device in devices {
        let key_packages = (0..count).map(|_| mls::key_package(device)).collect();
        client
            .publish_key_packages(&publish_key_packages::Input {
                extra: Default::default(),
                key_packages,
            })
            .await
            .unwrap();
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn one_key_package_per_device_and_missing_devices_are_listed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let carol = app.user("carol");
    let dave = app.user("dave");
    let (phone, laptop, tablet) = (
        mls::installation(&alice.did, "phone"),
        mls::installation(&alice.did, "laptop"),
        mls::installation(&alice.did, "tablet"),
    );
    publish_for(&app.client(&alice), &[&phone, &laptop], 2).await;
    // The tablet publishes one, which someone takes.
    publish_for(&app.client(&alice), &[&tablet], 1).await;
    let carols_phone = mls::installation(&carol.did, "phone");
    publish_for(&app.client(&carol), &[&carols_phone], 1).await;
    let bob = app.client(&app.user("bob"));
    bob.get_key_packages(&fetch_params(&[&carol.did]))
        .await
        .unwrap();
    sqlx::query("UPDATE key_packages SET handed_out_at = now() WHERE device_id = $1")
        .bind(tablet.identity())
        .execute(&app.pool)
        .await
        .unwrap();

    let fetched = bob
        .get_key_packages(&fetch_params(&[
            &alice.did, &carol.did, &dave.did, &alice.did,
        ]))
        .await
        .unwrap();
    let mut devices: Vec<&str> = fetched
        .key_packages
        .iter()
        .map(|k| k.device_id.as_str())
        .collect();
    devices.sort_unstable();
    let mut expected = vec![laptop.identity(), phone.identity()];
    expected.sort_unstable();
    assert_eq!(devices, expected, "one per device with KeyPackages left");
    for key_package in &fetched.key_packages {
        assert_eq!(key_package.did, alice.did);
        assert!(!key_package.last_resort);
    }
    let missing: HashSet<(String, Option<String>)> = fetched
        .missing
        .iter()
        .map(|m| (m.did.as_str().to_owned(), m.device_id.clone()))
        .collect();
    let expected_missing: HashSet<(String, Option<String>)> = [
        (
            alice.did.as_str().to_owned(),
            Some(tablet.identity().to_owned()),
        ),
        (
            carol.did.as_str().to_owned(),
            Some(carols_phone.identity().to_owned()),
        ),
        (dave.did.as_str().to_owned(), None),
    ]
    .into();
    assert_eq!(missing, expected_missing);

    // What was handed out is exactly what alice's devices published.
    for key_package in &fetched.key_packages {
        let stored: Vec<u8> = sqlx::query_scalar(
            "SELECT key_package FROM key_packages WHERE encode(key_package_ref, 'hex') = $1",
        )
        .bind(&key_package.key_package_hash)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(stored, key_package.key_package.0);
    }

    assert_declared(
        bob.get_key_packages(&fetch_params(&[&dave.did])).await,
        "NoKeyPackages",
        StatusCode::NOT_FOUND,
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn last_resort_key_packages_stand_in_and_are_reused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let alices = app.client(&alice);
    let phone = mls::installation(&alice.did, "phone");
    publish_for(&alices, &[&phone], 1).await;
    let old_last_resort = alices
        .publish_key_package(&publish_input(mls::last_resort_key_package(&phone)))
        .await
        .unwrap();
    assert!(old_last_resort.last_resort);
    // A newer last-resort KeyPackage replaces the older one.
    let last_resort = alices
        .publish_key_package(&publish_input(mls::last_resort_key_package(&phone)))
        .await
        .unwrap();

    let bob = app.client(&app.user("bob"));
    let first = bob
        .get_key_packages(&fetch_params(&[&alice.did]))
        .await
        .unwrap();
    assert!(!first.key_packages[0].last_resort, "unused ones go first");
    for _ in 0..3 {
        let next = bob
            .get_key_packages(&fetch_params(&[&alice.did]))
            .await
            .unwrap();
        assert_eq!(next.key_packages.len(), 1);
        assert!(next.key_packages[0].last_resort);
        assert_eq!(
            next.key_packages[0].key_package_hash,
            last_resort.key_package_hash
        );
        assert!(next.missing.is_empty());
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn expired_key_packages_are_never_handed_out(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    let phone = mls::installation(&alice.did, "phone");
    let alices = app.client(&alice);
    publish_for(&alices, &[&phone], 2).await;
    alices
        .publish_key_package(&publish_input(mls::last_resort_key_package(&phone)))
        .await
        .unwrap();
    // Time passes: every KeyPackage of the phone reaches its not_after.
    sqlx::query("UPDATE key_packages SET expires_at = now() - interval '2 days'")
        .execute(&app.pool)
        .await
        .unwrap();

    let bob = app.client(&app.user("bob"));
    assert_declared(
        bob.get_key_packages(&fetch_params(&[&alice.did])).await,
        "NoKeyPackages",
        StatusCode::NOT_FOUND,
    );
    let status = alices
        .get_key_package_status(&get_key_package_status::Params {
            device_id: phone.identity().to_owned(),
            cipher_suite: Some(SUITE_NAME.into()),
        })
        .await
        .unwrap();
    assert_eq!((status.available, status.last_resort), (0, false));

    // The cleanup job deletes them: unused and long expired.
    let cleaned = maintenance::run_once(&app.state).await.unwrap();
    assert_eq!(cleaned.key_packages, 3);
    assert_eq!(stored_key_packages(&app.pool).await, 0);
}

#[sqlx::test(migrations = "./migrations")]
async fn concurrent_fetchers_never_get_the_same_key_package(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user("alice");
    // 50 KeyPackages over 5 devices, and a last-resort one on the first.
    let devices: Vec<Installation> = (0..5)
        .map(|i| mls::installation(&alice.did, &format!("device-{i}")))
        .collect();
    let alices = app.client(&alice);
    publish_for(&alices, &devices.iter().collect::<Vec<_>>(), 10).await;
    alices
        .publish_key_package(&publish_input(mls::last_resort_key_package(&devices[0])))
        .await
        .unwrap();
    assert_eq!(stored_key_packages(&app.pool).await, 51);

    // 16 users fetch alice's KeyPackages concurrently until they only get
    // the last-resort one.
    let fetchers = (0..16).map(|i| {
        let client = app.client(&app.user(&format!("fetcher-{i}")));
        let alice = alice.did.clone();
        tokio::spawn(async move {
            let mut taken = Vec::new();
            loop {
                let fetched = client
                    .get_key_packages(&fetch_params(&[&alice]))
                    .await
                    .unwrap();
                let fresh: Vec<defs::KeyPackageRef> = fetched
                    .key_packages
                    .into_iter()
                    .filter(|k| !k.last_resort)
                    .collect();
                if fresh.is_empty() {
                    return taken;
                }
                taken.extend(fresh.into_iter().map(|k| k.key_package_hash));
            }
        })
    });
    let mut handed_out = Vec::new();
    for fetcher in fetchers.collect::<Vec<_>>() {
        handed_out.extend(fetcher.await.unwrap());
    }

    let distinct: HashSet<&String> = handed_out.iter().collect();
    assert_eq!(handed_out.len(), 50, "every KeyPackage handed out");
    assert_eq!(distinct.len(), 50, "none twice");
    // The database agrees: each of the 50 is marked used, by one fetcher.
    let used: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT encode(key_package_ref, 'hex'), handed_out_to FROM key_packages \
         WHERE NOT last_resort AND handed_out_at IS NOT NULL",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(used.len(), 50);
    let used_refs: HashSet<&String> = used.iter().map(|(r, _)| r).collect();
    assert_eq!(used_refs, distinct);
    assert!(
        used.iter()
            .all(|(_, to)| to.as_deref().is_some_and(|d| d.starts_with("did:plc:")))
    );

    // Afterwards the last-resort KeyPackage stands in for device 0, and the
    // other devices are missing.
    let after = app
        .client(&app.user("latecomer"))
        .get_key_packages(&fetch_params(&[&alice.did]))
        .await
        .unwrap();
    assert_eq!(after.key_packages.len(), 1);
    assert!(after.key_packages[0].last_resort);
    assert_eq!(after.key_packages[0].device_id, devices[0].identity());
    assert_eq!(after.missing.len(), 4);
}
