//! The real binary killed with SIGKILL, twice, under a load of four
//! sending devices and a committing one, and restarted on its port: every
//! acknowledged message is in the log with its bytes, the seqs are
//! gapless, and every device ends at the service's epoch.

use std::sync::atomic::{AtomicBool, Ordering};

use catbird_generated::runtime::xrpc::futures_util::future::join_all;
use sqlx::PgPool;

use super::load::{Group, Ledger, UNLIMITED, audit, commit_while, send_all};
use crate::common::process::{ServerProcess, database_url};

const SENDERS: usize = 4;
const MESSAGES_PER_SENDER: usize = 30;
const TOTAL: usize = SENDERS * MESSAGES_PER_SENDER;

#[sqlx::test(migrations = "./migrations")]
async fn sigkill_under_load_loses_no_acknowledged_message(pool: PgPool) {
    let dids = tempfile::tempdir().unwrap();
    let database = database_url(&pool);
    let server = ServerProcess::start(&database, dids.path(), &UNLIMITED).await;
    let (address, url) = (server.address, server.url());
    let mut group = Group::create(&url, dids.path(), "crash", SENDERS).await;
    let ledger = Ledger::default();
    let done = AtomicBool::new(false);

    let faults = async {
        let mut server = server;
        for fraction in [1, 2] {
            ledger.wait_for(TOTAL * fraction / 3).await;
            server.kill();
            server.wait_for_exit().await;
            server = ServerProcess::start_at(address, &database, dids.path(), &UNLIMITED).await;
        }
        server
    };
    let convo = group.convo.clone();
    let sending = join_all(
        group
            .senders
            .iter_mut()
            .map(|sender| send_all(&url, sender, &convo, MESSAGES_PER_SENDER, &ledger)),
    );
    let sending = async {
        sending.await;
        done.store(true, Ordering::Relaxed);
    };
    let committing = commit_while(&url, &mut group.committer, &convo, 10, &ledger, &done);
    let (server, (), ()) = tokio::join!(faults, sending, committing);

    let audit = audit(&pool, &convo, &ledger).await;
    let epochs = group.epochs(&url).await;
    let service_epoch = group.service_epoch(&url).await;
    let unanswered = ledger
        .failures
        .lock()
        .unwrap()
        .iter()
        .filter(|(status, _)| status.is_none())
        .count();
    println!(
        "sigkill: 2 kills under load; {} messages acknowledged, {} present with their bytes, {} lost; \
         {} log entries, seqs gapless; {} commits accepted; {unanswered} requests cut by the kills; \
         epochs: devices {epochs:?}, service {service_epoch}",
        audit.acknowledged,
        audit.present,
        audit.lost,
        audit.entries,
        ledger.commits.load(Ordering::Relaxed),
    );
    assert_eq!(audit.acknowledged, TOTAL);
    assert_eq!(audit.lost, 0);
    assert!(
        epochs.iter().all(|epoch| *epoch == service_epoch),
        "{epochs:?} vs {service_epoch}"
    );
    drop(server);
}
