//! The audit log (server/audit.rs), the external-commit rollout switch
//! (server/rollout.rs, `catbird-mls external-commits`) and the metrics that
//! follow them, with the demo's OpenMLS devices over real HTTP.

use std::process::Command;

use crate::common::joiner::{Joiner, current_group_info};
use crate::common::metrics::{self, Metrics};
use crate::common::{TestApp, assert_declared};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use catbird_generated::lexicons::blue::catbird::mls::{
    commit_group_change, get_group_info, process_external_commit,
};
use catbird_generated::runtime::Bytes;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::xrpc::reqwest::Url;
use catbird_generated::runtime::xrpc::reqwest::header::AUTHORIZATION;
use catbird_mls::rollout::{self, Rollout};
use catbird_mls_client::Device;
use catbird_mls_client::LocalIdentity;
use sqlx::PgPool;

/// A demo device of `user` on `app`.
fn device(app: &TestApp, user: &LocalIdentity, name: &str) -> Device {
    Device::new(&user.did, name, app.client(user)).unwrap()
}

/// The rows of the audit log: kind, actor, method, convo, subject, reason.
type AuditRow = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn audit_rows(app: &TestApp) -> Vec<AuditRow> {
    sqlx::query_as(
        "SELECT kind, actor, method, convo_id, subject, reason FROM audit_events ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

fn of_kind<'a>(rows: &'a [AuditRow], kind: &str) -> Vec<&'a AuditRow> {
    rows.iter().filter(|row| row.0 == kind).collect()
}

fn delta(before: &Metrics, after: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.count(name, labels) - before.count(name, labels)
}

#[sqlx::test(migrations = "./migrations")]
async fn security_events_are_audited_without_payloads(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn(pool).await;
    let (alice, bob, carol, mallory) = (
        app.user("alice"),
        app.user("bob"),
        app.user("carol"),
        app.user("mallory"),
    );
    let before = metrics::scrape(&app).await;

    // An authentication failure.
    let forged = app
        .http()
        .post(app.url(&format!("/xrpc/{}", commit_group_change::NSID)))
        .header(AUTHORIZATION, "Bearer not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // Alice adds Bob and Carol; Bob joins from his Welcome.
    let mut alices_phone = device(&app, &alice, "phone");
    let mut bobs_phone = device(&app, &bob, "phone");
    let mut carols_phone = device(&app, &carol, "phone");
    bobs_phone.publish_key_packages(1).await.unwrap();
    carols_phone.publish_key_packages(1).await.unwrap();
    let convo = alices_phone.create_convo("audited").await.unwrap();
    alices_phone
        .add(&convo, &[bob.did.clone(), carol.did.clone()])
        .await
        .unwrap();
    bobs_phone.join_from_welcome(&convo).await.unwrap();

    // A commit that is not one.
    let junk = vec![0x42; 64];
    let refused = alices_phone
        .client()
        .commit_group_change(&commit_group_change::Input {
            extra: Default::default(),
            convo_id: convo.clone(),
            commit: Bytes(junk.clone()),
            group_info: Bytes(junk.clone()),
            idempotency_key: None,
        })
        .await;
    assert_declared(
        refused,
        commit_group_change::Error::InvalidCommit,
        StatusCode::BAD_REQUEST,
    );

    // Bob's tablet rejoins by external commit (a GroupInfo fetch, then an
    // accepted external commit); Mallory, a stranger, tries with a GroupInfo
    // Bob leaked.
    let mut bobs_tablet = device(&app, &bob, "tablet");
    bobs_tablet.rejoin(&convo).await.unwrap();
    let leaked = current_group_info(&app.client(&bob), &convo).await;
    let (_, intrusion) =
        Joiner::new(&format!("{}#phone", mallory.did.as_str())).external_commit(&convo, &leaked);
    let refused = app
        .client(&mallory)
        .process_external_commit(&intrusion)
        .await;
    assert_declared(
        refused,
        process_external_commit::Error::NotMember,
        StatusCode::FORBIDDEN,
    );

    // Alice removes Carol, then removes and bans Bob.
    alices_phone.sync(&convo).await.unwrap();
    alices_phone
        .remove(&convo, &carol.did, false)
        .await
        .unwrap();
    alices_phone.remove(&convo, &bob.did, true).await.unwrap();

    let rows = audit_rows(&app).await;
    let alice_did = Some(alice.did.to_string());
    let bob_did = Some(bob.did.to_string());
    let in_convo = Some(convo.clone());

    let auth_failed = of_kind(&rows, "auth_failed");
    assert_eq!(auth_failed.len(), 1, "{rows:#?}");
    assert_eq!(auth_failed[0].2, commit_group_change::NSID);
    assert!(
        auth_failed[0]
            .5
            .as_deref()
            .is_some_and(|reason| !reason.is_empty())
    );

    let rejected = of_kind(&rows, "commit_rejected");
    assert_eq!(rejected.len(), 1, "{rows:#?}");
    assert_eq!((&rejected[0].1, &rejected[0].3), (&alice_did, &in_convo));
    assert!(
        rejected[0]
            .5
            .as_deref()
            .unwrap()
            .starts_with("InvalidCommit: ")
    );

    let fetched = of_kind(&rows, "group_info_fetched");
    assert_eq!(
        fetched.len(),
        2,
        "the tablet's and the leaked one: {rows:#?}"
    );
    assert!(
        fetched
            .iter()
            .all(|row| row.1 == bob_did && row.3 == in_convo)
    );

    let accepted = of_kind(&rows, "external_commit_accepted");
    assert_eq!(accepted.len(), 1, "{rows:#?}");
    assert_eq!(
        (&accepted[0].1, &accepted[0].2),
        (&bob_did, &process_external_commit::NSID.to_owned())
    );

    let intruded = of_kind(&rows, "external_commit_rejected");
    assert_eq!(intruded.len(), 1, "{rows:#?}");
    assert_eq!(intruded[0].1, Some(mallory.did.to_string()));
    assert!(intruded[0].5.as_deref().unwrap().starts_with("NotMember: "));

    let removed = of_kind(&rows, "member_removed");
    assert_eq!(removed.len(), 1, "{rows:#?}");
    assert_eq!(
        (&removed[0].1, &removed[0].4),
        (&alice_did, &Some(carol.did.to_string()))
    );
    let banned = of_kind(&rows, "member_banned");
    assert_eq!(banned.len(), 1, "{rows:#?}");
    assert_eq!((&banned[0].1, &banned[0].4), (&alice_did, &bob_did));

    // No payloads: the table has no binary column, and no field holds any
    // part of what was sent.
    let binary: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_name = 'audit_events' AND data_type = 'bytea'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(binary, 0);
    let mut sent = Vec::new();
    for payload in [
        &junk[16..32],
        &intrusion.external_commit.0[16..32],
        &leaked.0[16..32],
    ] {
        sent.push(catbird_mls_core::mls_crypto::to_hex(payload));
        sent.push(STANDARD_NO_PAD.encode(payload));
    }
    for row in &rows {
        let fields = [&row.1, &row.3, &row.4, &row.5];
        for field in fields.into_iter().flatten() {
            for payload in &sent {
                assert!(!field.contains(payload.as_str()), "{field} holds a payload");
            }
        }
    }

    // The metrics moved with them.
    let after = metrics::scrape(&app).await;
    let rejected_commits = |reason| {
        delta(
            &before,
            &after,
            "commits_rejected_total",
            &[("method", commit_group_change::NSID), ("reason", reason)],
        )
    };
    assert_eq!(rejected_commits("InvalidCommit"), 1.0);
    let welcome = |from, to| {
        delta(
            &before,
            &after,
            "welcome_transitions_total",
            &[("from", from), ("to", to)],
        )
    };
    assert_eq!(welcome("none", "available"), 2.0, "Bob's and Carol's");
    assert_eq!(welcome("available", "in_flight"), 1.0, "Bob fetched his");
    assert_eq!(welcome("in_flight", "consumed"), 1.0, "and confirmed it");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_forged_token_is_audited_with_its_claimed_issuer_cleaned_and_cut(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // A well-formed token whose `iss` holds a NUL (which PostgreSQL text
    // refuses) and 400 two-byte characters, and whose signature is junk.
    let claimed = format!("did:plc:\u{0}{}", "é".repeat(400));
    let encode = |json: serde_json::Value| URL_SAFE_NO_PAD.encode(json.to_string());
    let token = format!(
        "{}.{}.{}",
        encode(serde_json::json!({ "alg": "ES256K", "typ": "JWT" })),
        encode(serde_json::json!({
            "iss": claimed, "aud": crate::common::SERVICE_DID, "lxm": get_group_info::NSID,
            "exp": 4102444800_i64, "iat": 1700000000_i64, "jti": "forged",
        })),
        URL_SAFE_NO_PAD.encode([0u8; 64]),
    );
    let response = app
        .http()
        .get(app.url(&format!("/xrpc/{}", get_group_info::NSID)))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let rows = audit_rows(&app).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let actor = rows[0].1.as_deref().unwrap();
    assert_eq!(actor, format!("did:plc:\u{fffd}{}", "é".repeat(247)));
}

#[sqlx::test(migrations = "./migrations")]
async fn audit_events_past_their_retention_are_deleted(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.audit_retention_days = 30).await;
    let failed_login = || {
        app.http()
            .get(app.url(&format!("/xrpc/{}", get_group_info::NSID)))
            .header(AUTHORIZATION, "Bearer not-a-token")
            .send()
    };
    assert_eq!(
        failed_login().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    sqlx::query("UPDATE audit_events SET occurred_at = now() - interval '31 days'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        failed_login().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let cleaned = catbird_mls::maintenance::run_once(&app.state)
        .await
        .unwrap();
    assert_eq!(cleaned.audit_events, 1);
    assert_eq!(audit_rows(&app).await.len(), 1, "the recent one stays");
}

/// `catbird-mls external-commits` against the test's database, as an
/// operator runs it.
fn switch(app: &TestApp, args: &[&str]) -> Rollout {
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL (scripts/pg-start)");
    let database = app
        .pool
        .connect_options()
        .get_database()
        .unwrap()
        .to_owned();
    let mut url = Url::parse(&server).unwrap();
    url.set_path(&database);
    let output = Command::new(env!("CARGO_BIN_EXE_catbird-mls"))
        .arg("external-commits")
        .args(["--database-url", url.as_str()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    Rollout {
        enabled: printed["enabled"].as_bool().unwrap(),
        percent: printed["percent"].as_u64().unwrap() as u8,
        allow_list: printed["allowList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|did| did.as_str().unwrap().to_owned())
            .collect(),
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn the_external_commit_switch_off_zero_allow_listed_and_full(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn(pool).await;
    let (alice, bob, carol) = (app.user("alice"), app.user("bob"), app.user("carol"));
    let mut alices_phone = device(&app, &alice, "phone");
    for user in [&bob, &carol] {
        device(&app, user, "phone")
            .publish_key_packages(1)
            .await
            .unwrap();
    }
    let convo = alices_phone.create_convo("rollout").await.unwrap();
    alices_phone
        .add(&convo, &[bob.did.clone(), carol.did.clone()])
        .await
        .unwrap();
    let epoch = |app: &TestApp| {
        let pool = app.pool.clone();
        let group_id = catbird_mls_core::mls_crypto::from_hex(&convo).unwrap();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT epoch FROM convos WHERE group_id = $1")
                .bind(group_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let before = metrics::scrape(&app).await;
    // The default: on for everyone.
    assert_eq!(
        rollout::load(&app.pool).await.unwrap(),
        Rollout {
            enabled: true,
            percent: 100,
            allow_list: vec![]
        }
    );

    // Off: a typed refusal, nothing committed.
    let off = switch(&app, &["--disable"]);
    assert!(!off.enabled);
    let start = epoch(&app).await;
    let mut bobs_tablet = device(&app, &bob, "tablet");
    let refused = bobs_tablet.rejoin(&convo).await.unwrap_err().to_string();
    assert!(refused.contains("ExternalCommitNotEnabled"), "{refused}");
    let bobs_laptop = Joiner::new(&format!("{}#laptop", bob.did.as_str()));
    let (refused_group, input) =
        bobs_laptop.external_commit(&convo, &current_group_info(&app.client(&bob), &convo).await);
    let message = assert_declared(
        app.client(&bob).process_external_commit(&input).await,
        process_external_commit::Error::ExternalCommitNotEnabled,
        StatusCode::FORBIDDEN,
    );
    assert!(
        message.contains("Welcome"),
        "says how to fall back: {message}"
    );
    assert_eq!(epoch(&app).await, start);

    // On, for 0 %: still refused.
    let none = switch(&app, &["--enable", "--percent", "0"]);
    assert_eq!((none.enabled, none.percent), (true, 0));
    assert_declared(
        app.client(&bob).process_external_commit(&input).await,
        process_external_commit::Error::ExternalCommitNotEnabled,
        StatusCode::FORBIDDEN,
    );

    // Allow-listed: Bob may, Carol still may not.
    let listed = switch(&app, &["--allow", bob.did.as_str()]);
    assert_eq!(listed.allow_list, [bob.did.to_string()]);
    bobs_laptop.forget(refused_group);
    let (_, rejoin) =
        bobs_laptop.external_commit(&convo, &current_group_info(&app.client(&bob), &convo).await);
    let rejoined = app
        .client(&bob)
        .process_external_commit(&rejoin)
        .await
        .unwrap();
    let (_, carols) = Joiner::new(&format!("{}#laptop", carol.did.as_str())).external_commit(
        &convo,
        &current_group_info(&app.client(&carol), &convo).await,
    );
    assert_declared(
        app.client(&carol).process_external_commit(&carols).await,
        process_external_commit::Error::ExternalCommitNotEnabled,
        StatusCode::FORBIDDEN,
    );

    // 100 %, allow-list emptied: everyone.
    let everyone = switch(&app, &["--percent", "100", "--disallow", bob.did.as_str()]);
    assert_eq!(
        everyone,
        Rollout {
            enabled: true,
            percent: 100,
            allow_list: vec![]
        }
    );
    let mut carols_tablet = device(&app, &carol, "tablet");
    carols_tablet.rejoin(&convo).await.unwrap();
    assert_eq!(epoch(&app).await, start + 2);

    // Switched off again, an accepted commit sent again (its answer was
    // lost) still gets its original result: it is not a new rejoin.
    switch(&app, &["--disable"]);
    let again = app
        .client(&bob)
        .process_external_commit(&rejoin)
        .await
        .unwrap();
    assert_eq!((again.epoch, again.seq), (rejoined.epoch, rejoined.seq));
    let accepted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE kind = 'external_commit_accepted'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(accepted, 2, "the resubmission is not audited again");

    // Seven requests reached the method, two rejoined, each timed.
    let after = metrics::scrape(&app).await;
    assert_eq!(
        delta(&before, &after, "external_commit_requests_total", &[]),
        7.0
    );
    assert_eq!(
        delta(&before, &after, "external_commit_success_total", &[]),
        2.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "external_commit_latency_seconds_count",
            &[]
        ),
        7.0
    );
    let not_enabled = [
        ("method", process_external_commit::NSID),
        ("reason", "ExternalCommitNotEnabled"),
    ];
    assert_eq!(
        delta(&before, &after, "commits_rejected_total", &not_enabled),
        4.0
    );
}
