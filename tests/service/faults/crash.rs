//! The real binary killed with SIGKILL, twice, under a load of four
//! sending devices and a committing one, and restarted on its port: every
//! acknowledged message is in the log with its bytes, the seqs are
//! gapless, and every device ends at the service's epoch.

use std::sync::atomic::Ordering;

use sqlx::PgPool;

use super::load::{Group, Ledger, UNLIMITED, audit, run};
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
    let load = run(&url, &mut group, MESSAGES_PER_SENDER, 10, &ledger);
    let (server, ()) = tokio::join!(faults, load);

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
