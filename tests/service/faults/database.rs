//! PostgreSQL stopped under load (as a crash stops it: `pg_ctl -m
//! immediate`) and started again: meanwhile every request is answered 503
//! `ServiceUnavailable` with `Retry-After`, within the configured acquire
//! timeout; no acknowledged message is lost; and the service is healthy
//! again right after PostgreSQL, without a restart.
//!
//! The test cluster is shared by every test, so this one stops a private
//! cluster of its own (`scripts/pg-start --cluster faults`).

use std::process::Command;
use std::time::{Duration, Instant};

use catbird_generated::lexicons::blue::catbird::mls::get_convos;
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::xrpc::reqwest;
use catbird_mls_client::{LocalIdentity, create_identity, mint_token};
use catbird_mls_core::auth::Algorithm;
use sqlx::{Connection as _, PgConnection, PgPool};

use super::json_body;
use super::load::{Group, Ledger, RUN_BOUND, UNLIMITED, audit, run};
use crate::common::SERVICE_DID;
use crate::common::process::ServerProcess;

const SENDERS: usize = 3;
const MESSAGES_PER_SENDER: usize = 30;
const TOTAL: usize = SENDERS * MESSAGES_PER_SENDER;
/// `--db-acquire-timeout-ms`: the bound on an answer while the database is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);
/// Room for a debug build on a busy CI machine on top of the bound.
const SLACK: Duration = Duration::from_secs(2);

/// `scripts/NAME ARGS...` on the private cluster; its stdout.
fn cluster(script: &str, args: &[&str]) -> String {
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/").to_owned() + script)
        .args(["--cluster", "faults"])
        .args(args)
        .output()
        .expect("running a scripts/pg-* script");
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A fresh database on the private cluster; its URL.
async fn fresh_database() -> String {
    let server = cluster("pg-start", &[]);
    let mut admin = PgConnection::connect(&server).await.unwrap();
    for statement in [
        "DROP DATABASE IF EXISTS outage WITH (FORCE)",
        "CREATE DATABASE outage",
    ] {
        sqlx::query(statement).execute(&mut admin).await.unwrap();
    }
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/outage")
}

/// A getConvos with a valid token: its status, `Retry-After` and body.
async fn probe(url: &str, user: &LocalIdentity) -> (StatusCode, Option<String>, serde_json::Value) {
    let token = mint_token(
        user,
        &Did::new(SERVICE_DID).unwrap(),
        get_convos::NSID,
        Duration::from_secs(60),
    );
    let response = reqwest::Client::new()
        .get(format!("{url}/xrpc/{}", get_convos::NSID))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, retry_after, json_body(response).await)
}

async fn health(url: &str) -> (StatusCode, Duration) {
    let started = Instant::now();
    let status = reqwest::get(format!("{url}/xrpc/_health"))
        .await
        .expect("the service answers")
        .status();
    (status, started.elapsed())
}

#[tokio::test]
async fn a_database_outage_is_answered_503_and_recovered_from_without_loss() {
    let database = fresh_database().await;
    let dids = tempfile::tempdir().unwrap();
    let acquire = format!("--db-acquire-timeout-ms={}", ACQUIRE_TIMEOUT.as_millis());
    let mut flags = UNLIMITED.to_vec();
    flags.push(&acquire);
    let server = ServerProcess::start(&database, dids.path(), &flags).await;
    let url = server.url();
    let mut group = Group::create(&url, dids.path(), "outage", SENDERS).await;
    let ledger = Ledger::default();
    let prober = create_identity(dids.path(), "prober", Algorithm::Es256k).unwrap();

    let outage = async {
        ledger.wait_for(TOTAL / 3).await;
        cluster("pg-stop", &["--immediate"]);
        let stopped = Instant::now();
        let before = ledger.failures.lock().unwrap().len();
        // The outage lasts until the senders have met it a few times, and
        // health checks tell the truth meanwhile.
        let mut health_checks = Vec::new();
        let refusal = probe(&url, &prober).await;
        while ledger.failures.lock().unwrap().len() < before + 3 * SENDERS
            || stopped.elapsed() < 4 * ACQUIRE_TIMEOUT
        {
            assert!(
                stopped.elapsed() < RUN_BOUND,
                "no failures during the outage"
            );
            health_checks.push(health(&url).await);
        }
        cluster("pg-start", &[]);
        let restarted = Instant::now();
        let recovered = loop {
            let (status, _) = health(&url).await;
            if status == StatusCode::OK {
                break restarted.elapsed();
            }
            assert!(restarted.elapsed() < RUN_BOUND, "never healthy again");
        };
        (
            stopped.elapsed() - recovered,
            health_checks,
            recovered,
            refusal,
        )
    };
    let convo = group.convo.clone();
    let load = run(&url, &mut group, MESSAGES_PER_SENDER, 10, &ledger);
    let ((down_for, health_checks, recovered, refusal), ()) = tokio::join!(outage, load);

    // What a client is told: retry, and when.
    let (status, retry_after, body) = refusal;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"], "ServiceUnavailable", "{body}");

    // Every refusal during the outage was a 503 within the bound.
    let failures = ledger.failures.lock().unwrap().clone();
    let slowest = failures
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    let unavailable = failures
        .iter()
        .filter(|(status, _)| *status == Some(StatusCode::SERVICE_UNAVAILABLE))
        .count();
    let conflicts = failures
        .iter()
        .filter(|(status, _)| *status == Some(StatusCode::CONFLICT))
        .count();
    assert_eq!(
        unavailable + conflicts,
        failures.len(),
        "only 503s (and epoch conflicts with the committer): {failures:?}"
    );
    assert!(unavailable >= 3 * SENDERS, "{unavailable} 503s");
    assert!(
        slowest <= ACQUIRE_TIMEOUT + SLACK,
        "a refusal took {slowest:?}"
    );
    assert!(
        health_checks
            .iter()
            .all(|(status, took)| *status == StatusCode::SERVICE_UNAVAILABLE
                && *took <= ACQUIRE_TIMEOUT + SLACK),
        "{health_checks:?}"
    );

    let pool = PgPool::connect(&database).await.unwrap();
    let audit = audit(&pool, &convo, &ledger).await;
    let epochs = group.epochs(&url).await;
    let service_epoch = group.service_epoch(&url).await;
    println!(
        "database outage of {down_for:?}: {unavailable} requests answered 503 (slowest answer {slowest:?}, \
         bound {ACQUIRE_TIMEOUT:?}), {} health checks 503; healthy {recovered:?} after PostgreSQL \
         was back; {} messages acknowledged, {} present with their bytes, {} lost; {} log entries, \
         seqs gapless; epochs: devices {epochs:?}, service {service_epoch}",
        health_checks.len(),
        audit.acknowledged,
        audit.present,
        audit.lost,
        audit.entries,
    );
    assert_eq!(audit.acknowledged, TOTAL);
    assert_eq!(audit.lost, 0);
    assert!(epochs.iter().all(|epoch| *epoch == service_epoch));
    pool.close().await;
    drop(server);
}
