//! Two-phase Welcome delivery (getWelcome, confirmWelcome), transition by
//! transition, with a real OpenMLS add over HTTP: available -> in_flight on
//! the first fetch, the same bytes and window on a refetch within the grace
//! window; in_flight -> consumed on a successful confirmation, after which
//! the Welcome is gone (410); in_flight -> available on a failed one (its
//! errorDetails kept), after which the device can fetch again and join; an
//! unconfirmed Welcome whose grace window ended counts as consumed (time
//! passes by moving `welcomes.in_flight_until` back in the database, never
//! by sleeping). And who gets it: only the device it was made for (another
//! device of the same user: 404; another user naming that device: 400), and
//! nobody once the device has been removed or has rejoined by external
//! commit (withdrawn: 404).

use crate::common::{TestApp, assert_declared};
use catbird_generated::lexicons::blue::catbird::mls::defs::WelcomeState;
use catbird_generated::lexicons::blue::catbird::mls::{
    confirm_welcome, get_expected_conversations, get_welcome,
};
use catbird_generated::runtime::Datetime;
use catbird_generated::runtime::xrpc::ClientError;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_mls_client::LocalIdentity;
use catbird_mls_client::{Device, DeviceError, Received};
use catbird_mls_core::mls_crypto::from_hex;
use chrono::{DateTime, Utc};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{MlsMessageBodyIn, MlsMessageIn};
use sqlx::PgPool;

/// The grace window the tests run with.
const GRACE_SECONDS: u32 = 120;

#[sqlx::test(migrations = "./migrations")]
async fn the_first_fetch_is_available_and_a_refetch_in_the_window_repeats_it(pool: PgPool) {
    let added = Added::bob_by_alice(pool).await;
    let bob_phone = added.bob_id();
    assert_eq!(added.row(&bob_phone).await.unwrap().state, "available");
    assert!(added.expected(&bob_phone).await.welcome_pending);

    let before = Utc::now();
    let first = added.fetch(&added.bob, &bob_phone).await.unwrap();
    let after = Utc::now();
    assert_eq!(first.state, WelcomeState::Available);
    assert_eq!(first.convo_id, added.convo);
    assert_eq!((first.epoch, first.commit_seq), (1, 1));
    let until = first.in_flight_until.to_chrono().with_timezone(&Utc);
    let grace = chrono::Duration::seconds(GRACE_SECONDS.into());
    let earliest = before + grace - chrono::Duration::milliseconds(1);
    assert!(earliest <= until && until <= after + grace, "{until}");
    assert_eq!(
        welcome_recipients(&first.welcome.0),
        [added.used_key_package_ref(&bob_phone).await],
        "the Welcome names the KeyPackage the commit used for bob#phone"
    );
    let row = added.row(&bob_phone).await.unwrap();
    assert_eq!(row.state, "in_flight");
    assert_eq!(
        row.in_flight_until.map(Datetime::from),
        Some(first.in_flight_until.clone())
    );

    // A crash before processing: the device fetches again within the window.
    for _ in 0..2 {
        let again = added.fetch(&added.bob, &bob_phone).await.unwrap();
        assert_eq!(again.state, WelcomeState::InFlight);
        assert_eq!(again.welcome, first.welcome, "the same bytes");
        assert_eq!(
            again.in_flight_until, first.in_flight_until,
            "the same window"
        );
        assert_eq!((again.epoch, again.commit_seq), (1, 1));
    }
    let expected = added.expected(&bob_phone).await;
    assert!(expected.welcome_pending && !expected.needs_rejoin);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_confirmed_welcome_is_consumed_and_never_served_again(pool: PgPool) {
    let mut added = Added::bob_by_alice(pool).await;
    let bob_phone = added.bob_id();
    added.fetch(&added.bob, &bob_phone).await.unwrap();

    let confirmed = added.confirm(&added.bob, &bob_phone, true, None).await;
    assert_eq!(confirmed.unwrap().state, WelcomeState::Consumed);
    let row = added.row(&bob_phone).await.unwrap();
    assert_eq!(
        (row.state.as_str(), row.in_flight_until),
        ("consumed", None)
    );

    let gone = added.fetch(&added.bob, &bob_phone).await;
    assert_declared(gone, get_welcome::Error::WelcomeConsumed, StatusCode::GONE);
    // Confirming success again is harmless; reporting a failure is too late.
    let again = added.confirm(&added.bob, &bob_phone, true, None).await;
    assert_eq!(again.unwrap().state, WelcomeState::Consumed);
    let late = added
        .confirm(&added.bob, &bob_phone, false, Some("too late"))
        .await;
    assert_declared(
        late,
        confirm_welcome::Error::WelcomeConsumed,
        StatusCode::GONE,
    );
    let row = added.row(&bob_phone).await.unwrap();
    assert_eq!((row.state.as_str(), row.error_details), ("consumed", None));
    assert!(!added.expected(&bob_phone).await.welcome_pending);

    // The real client gets the same answer.
    let error = added.bob_phone.join_from_welcome(&added.convo).await;
    match error {
        Err(DeviceError::GetWelcome(error)) => {
            assert_eq!(error.declared(), Some(&get_welcome::Error::WelcomeConsumed));
        }
        other => panic!("expected getWelcome's WelcomeConsumed, got {other:?}"),
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_failed_confirmation_makes_the_welcome_available_again(pool: PgPool) {
    let mut added = Added::bob_by_alice(pool).await;
    let bob_phone = added.bob_id();
    let first = added.fetch(&added.bob, &bob_phone).await.unwrap();

    let details = "StagedWelcome: storage full (simulated)";
    let failed = added
        .confirm(&added.bob, &bob_phone, false, Some(details))
        .await;
    assert_eq!(failed.unwrap().state, WelcomeState::Available);
    let row = added.row(&bob_phone).await.unwrap();
    assert_eq!(row.state, "available");
    assert_eq!(row.in_flight_until, None);
    assert_eq!(row.error_details.as_deref(), Some(details));
    let expected = added.expected(&bob_phone).await;
    assert!(expected.welcome_pending && !expected.needs_rejoin);

    // The retry is a first delivery again, of the same Welcome.
    let retry = added.fetch(&added.bob, &bob_phone).await.unwrap();
    assert_eq!(retry.state, WelcomeState::Available);
    assert_eq!(retry.welcome, first.welcome);
    assert_eq!(added.row(&bob_phone).await.unwrap().state, "in_flight");

    // And the device really joins with it this time.
    assert_eq!(
        added
            .bob_phone
            .join_from_welcome(&added.convo)
            .await
            .unwrap(),
        1
    );
    assert_eq!(added.row(&bob_phone).await.unwrap().state, "consumed");
    let seq = added
        .alice_phone
        .send(&added.convo, "hi Bob")
        .await
        .unwrap();
    let received = added.bob_phone.sync(&added.convo).await.unwrap();
    let expected = Received {
        seq,
        sender: added.alice_phone.id().to_string(),
        text: "hi Bob".to_owned(),
    };
    assert_eq!(received, [expected]);
}

#[sqlx::test(migrations = "./migrations")]
async fn an_unconfirmed_welcome_is_consumed_when_its_grace_window_ends(pool: PgPool) {
    let added = Added::bob_by_alice(pool).await;
    let bob_phone = added.bob_id();
    let fetched = added.fetch(&added.bob, &bob_phone).await.unwrap();
    assert_eq!(fetched.state, WelcomeState::Available);

    added.end_grace_window(&bob_phone).await;
    let expected = added.expected(&bob_phone).await;
    assert!(!expected.welcome_pending, "{expected:?}");

    let gone = added.fetch(&added.bob, &bob_phone).await;
    assert_declared(gone, get_welcome::Error::WelcomeConsumed, StatusCode::GONE);
    assert_eq!(added.row(&bob_phone).await.unwrap().state, "consumed");
    let late = added.confirm(&added.bob, &bob_phone, false, None).await;
    assert_declared(
        late,
        confirm_welcome::Error::WelcomeConsumed,
        StatusCode::GONE,
    );
    // A late success is accepted: consumed either way.
    let late = added.confirm(&added.bob, &bob_phone, true, None).await;
    assert_eq!(late.unwrap().state, WelcomeState::Consumed);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_failure_reported_after_the_grace_window_is_too_late(pool: PgPool) {
    let added = Added::bob_by_alice(pool).await;
    let bob_phone = added.bob_id();
    added.fetch(&added.bob, &bob_phone).await.unwrap();
    added.end_grace_window(&bob_phone).await;

    // Not fetched again: the window's end alone makes it consumed.
    let late = added.confirm(&added.bob, &bob_phone, false, None).await;
    assert_declared(
        late,
        confirm_welcome::Error::WelcomeConsumed,
        StatusCode::GONE,
    );
    let gone = added.fetch(&added.bob, &bob_phone).await;
    assert_declared(gone, get_welcome::Error::WelcomeConsumed, StatusCode::GONE);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_welcome_is_served_only_to_the_device_it_was_made_for(pool: PgPool) {
    let added = Added::bob_by_alice(pool).await;
    let app = &added.app;
    let bob_phone = added.bob_id();
    let carol = app.user("carol");

    // Bob's other device, which was not added.
    let bob_phone2 = format!("{}#phone2", added.bob.did.as_str());
    let other = added.fetch(&added.bob, &bob_phone2).await;
    assert_declared(
        other,
        get_welcome::Error::WelcomeNotFound,
        StatusCode::NOT_FOUND,
    );
    let other = added.confirm(&added.bob, &bob_phone2, true, None).await;
    assert_declared(
        other,
        confirm_welcome::Error::WelcomeNotFound,
        StatusCode::NOT_FOUND,
    );

    // Another user naming Bob's device, whether a member (Alice) or not.
    for user in [&carol, &added.alice] {
        let foreign = added.fetch(user, &bob_phone).await;
        assert_declared(
            foreign,
            get_welcome::Error::InvalidDevice,
            StatusCode::BAD_REQUEST,
        );
        let foreign = added.confirm(user, &bob_phone, true, None).await;
        assert_declared(
            foreign,
            confirm_welcome::Error::InvalidDevice,
            StatusCode::BAD_REQUEST,
        );
    }
    // Carol's own device was never added.
    let carol_phone = format!("{}#phone", carol.did.as_str());
    let none = added.fetch(&carol, &carol_phone).await;
    assert_declared(
        none,
        get_welcome::Error::WelcomeNotFound,
        StatusCode::NOT_FOUND,
    );

    // None of that touched Bob's Welcome.
    assert_eq!(added.row(&bob_phone).await.unwrap().state, "available");
    let own = added.fetch(&added.bob, &bob_phone).await.unwrap();
    assert_eq!(own.state, WelcomeState::Available);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_removed_devices_pending_welcome_is_withdrawn(pool: PgPool) {
    let app = TestApp::spawn_with(pool, grace).await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let mut alice_phone = Device::new(&alice.did, "phone", app.client(&alice)).unwrap();
    let mut bob_phone = Device::new(&bob.did, "phone", app.client(&bob)).unwrap();
    let mut bob_tablet = Device::new(&bob.did, "tablet", app.client(&bob)).unwrap();
    for device in [&mut bob_phone, &mut bob_tablet] {
        device.publish_key_packages(1).await.unwrap();
    }
    let convo = alice_phone.create_convo("withdrawn").await.unwrap();
    let added_devices = alice_phone
        .add(&convo, std::slice::from_ref(&bob.did))
        .await;
    assert_eq!(added_devices.unwrap().len(), 2);
    let mut added = Added {
        app,
        alice,
        bob,
        alice_phone,
        bob_phone,
        convo,
    };
    let (phone, tablet) = (added.bob_id(), bob_tablet.id().to_string());

    // The phone fetched its Welcome (in flight), the tablet did not yet.
    added.fetch(&added.bob, &phone).await.unwrap();
    assert_eq!(added.row(&phone).await.unwrap().state, "in_flight");
    assert_eq!(added.row(&tablet).await.unwrap().state, "available");

    let removed = added
        .alice_phone
        .remove(&added.convo, &added.bob.did, false)
        .await;
    assert_eq!(removed.unwrap().len(), 2);

    for device in [&phone, &tablet] {
        assert!(added.row(device).await.is_none(), "{device}'s row");
        let withdrawn = added.fetch(&added.bob, device).await;
        assert_declared(
            withdrawn,
            get_welcome::Error::WelcomeNotFound,
            StatusCode::NOT_FOUND,
        );
        let withdrawn = added.confirm(&added.bob, device, true, None).await;
        assert_declared(
            withdrawn,
            confirm_welcome::Error::WelcomeNotFound,
            StatusCode::NOT_FOUND,
        );
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_device_that_rejoins_by_external_commit_loses_its_pending_welcome(pool: PgPool) {
    let added = Added::bob_by_alice(pool).await;
    let bob_phone = added.bob_id();
    assert_eq!(added.row(&bob_phone).await.unwrap().state, "available");

    // Bob's phone is reinstalled before it fetched its Welcome, and rejoins
    // from the GroupInfo instead.
    let client = added.app.client(&added.bob);
    let mut reinstalled = Device::new(&added.bob.did, "phone", client).unwrap();
    assert_eq!(reinstalled.rejoin(&added.convo).await.unwrap(), 2);

    assert!(added.row(&bob_phone).await.is_none());
    let withdrawn = added.fetch(&added.bob, &bob_phone).await;
    assert_declared(
        withdrawn,
        get_welcome::Error::WelcomeNotFound,
        StatusCode::NOT_FOUND,
    );
    assert!(!added.expected(&bob_phone).await.welcome_pending);
}

// ---- helpers ---------------------------------------------------------------------

fn grace(config: &mut catbird_mls::config::ServeConfig) {
    config.welcome_grace_seconds = GRACE_SECONDS;
}

/// A conversation of `alice#phone` that has just added `bob#phone` (epoch
/// 1): a Welcome waits for Bob's phone, which has not fetched it.
struct Added {
    app: TestApp,
    alice: LocalIdentity,
    bob: LocalIdentity,
    alice_phone: Device,
    bob_phone: Device,
    convo: String,
}

/// A `welcomes` row.
struct Row {
    state: String,
    in_flight_until: Option<DateTime<Utc>>,
    error_details: Option<String>,
}

impl Added {
    async fn bob_by_alice(pool: PgPool) -> Self {
        let app = TestApp::spawn_with(pool, grace).await;
        let (alice, bob) = (app.user("alice"), app.user("bob"));
        let mut alice_phone = Device::new(&alice.did, "phone", app.client(&alice)).unwrap();
        let mut bob_phone = Device::new(&bob.did, "phone", app.client(&bob)).unwrap();
        bob_phone.publish_key_packages(1).await.unwrap();
        let convo = alice_phone.create_convo("welcomes").await.unwrap();
        let added = alice_phone
            .add(&convo, std::slice::from_ref(&bob.did))
            .await;
        assert_eq!(added.unwrap(), [bob_phone.id().to_string()]);
        Self {
            app,
            alice,
            bob,
            alice_phone,
            bob_phone,
            convo,
        }
    }

    fn bob_id(&self) -> String {
        self.bob_phone.id().to_string()
    }

    /// getWelcome as `user`, for `device_id`.
    async fn fetch(
        &self,
        user: &LocalIdentity,
        device_id: &str,
    ) -> Result<get_welcome::Output, ClientError<get_welcome::Error>> {
        let params = get_welcome::Params {
            convo_id: self.convo.clone(),
            device_id: device_id.to_owned(),
        };
        self.app.client(user).get_welcome(&params).await
    }

    /// confirmWelcome as `user`, for `device_id`.
    async fn confirm(
        &self,
        user: &LocalIdentity,
        device_id: &str,
        success: bool,
        error_details: Option<&str>,
    ) -> Result<confirm_welcome::Output, ClientError<confirm_welcome::Error>> {
        let input = confirm_welcome::Input {
            extra: Default::default(),
            convo_id: self.convo.clone(),
            device_id: device_id.to_owned(),
            success,
            error_details: error_details.map(str::to_owned),
        };
        self.app.client(user).confirm_welcome(&input).await
    }

    /// The conversation as getExpectedConversations lists it for one of
    /// Bob's devices.
    async fn expected(
        &self,
        device_id: &str,
    ) -> catbird_generated::lexicons::blue::catbird::mls::defs::ExpectedConversation {
        let params = get_expected_conversations::Params {
            device_id: device_id.to_owned(),
            limit: 100,
            cursor: None,
        };
        let client = self.app.client(&self.bob);
        let expected = client.get_expected_conversations(&params).await.unwrap();
        let entry = expected
            .conversations
            .into_iter()
            .find(|entry| entry.convo_id == self.convo);
        entry.expect("Bob is a member, so the conversation is expected")
    }

    /// The Welcome's row for `device_id`, if any.
    async fn row(&self, device_id: &str) -> Option<Row> {
        let row: Option<(String, Option<DateTime<Utc>>, Option<String>)> = sqlx::query_as(
            "SELECT state, in_flight_until, error_details FROM welcomes \
             WHERE convo_id = $1 AND device_id = $2",
        )
        .bind(self.group_id())
        .bind(device_id)
        .fetch_optional(&self.app.pool)
        .await
        .unwrap();
        row.map(|(state, in_flight_until, error_details)| Row {
            state,
            in_flight_until,
            error_details,
        })
    }

    /// How time passes in these tests: the service compares
    /// `welcomes.in_flight_until` with now(), so moving it into the past is
    /// the same as waiting for the grace window to end.
    async fn end_grace_window(&self, device_id: &str) {
        let moved = sqlx::query(
            "UPDATE welcomes SET in_flight_until = now() - interval '1 second' \
             WHERE convo_id = $1 AND device_id = $2 AND state = 'in_flight'",
        )
        .bind(self.group_id())
        .bind(device_id)
        .execute(&self.app.pool)
        .await
        .unwrap();
        assert_eq!(
            moved.rows_affected(),
            1,
            "only a fetched Welcome has a window"
        );
    }

    /// The KeyPackageRef of the KeyPackage of `device_id` that an accepted
    /// commit of this conversation used.
    async fn used_key_package_ref(&self, device_id: &str) -> Vec<u8> {
        sqlx::query_scalar(
            "SELECT key_package_ref FROM key_packages \
             WHERE device_id = $1 AND used_in = $2 AND used_at IS NOT NULL",
        )
        .bind(device_id)
        .bind(self.group_id())
        .fetch_one(&self.app.pool)
        .await
        .unwrap()
    }

    fn group_id(&self) -> Vec<u8> {
        from_hex(&self.convo).unwrap()
    }
}

/// The KeyPackageRefs a Welcome (an MLSMessage) names as its recipients.
fn welcome_recipients(welcome: &[u8]) -> Vec<Vec<u8>> {
    let message = MlsMessageIn::tls_deserialize_exact(welcome).unwrap();
    let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
        panic!("getWelcome returned an MLSMessage that is not a Welcome");
    };
    welcome
        .secrets()
        .iter()
        .map(|secret| secret.new_member().as_slice().to_vec())
        .collect()
}
