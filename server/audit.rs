//! The audit log: security-relevant events in the `audit_events` table.
//! Who, what, when, which conversation, and why for refusals; never message
//! payloads or key material (callers pass names and DIDs, not bytes).
//!
//! Recording is best effort: a failed insert is logged and counted, and the
//! request it describes goes on, so the audit table can never take the
//! service down.

use std::net::IpAddr;
use std::time::Duration;

use sqlx::PgPool;

use crate::group_commit::{Batch, GroupCommit};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    AuthFailed,
    CommitRejected,
    ExternalCommitAccepted,
    ExternalCommitRejected,
    MemberRemoved,
    MemberBanned,
    GroupInfoFetched,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthFailed => "auth_failed",
            Self::CommitRejected => "commit_rejected",
            Self::ExternalCommitAccepted => "external_commit_accepted",
            Self::ExternalCommitRejected => "external_commit_rejected",
            Self::MemberRemoved => "member_removed",
            Self::MemberBanned => "member_banned",
            Self::GroupInfoFetched => "group_info_fetched",
        }
    }
}

/// One event.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub kind: AuditKind,
    /// The verified caller; for [`AuditKind::AuthFailed`], the issuer the
    /// token claims, unverified.
    pub actor: Option<&'a str>,
    /// The method's NSID.
    pub method: &'a str,
    pub client_ip: Option<IpAddr>,
    pub convo_id: Option<&'a str>,
    /// The user acted upon.
    pub subject: Option<&'a str>,
    /// For refusals: the error name and message.
    pub reason: Option<String>,
}

impl<'a> AuditEvent<'a> {
    /// An event of `kind` by `actor` in `method`; the rest is added with
    /// the builder methods.
    pub fn new(kind: AuditKind, actor: Option<&'a str>, method: &'a str) -> Self {
        Self {
            kind,
            actor,
            method,
            client_ip: None,
            convo_id: None,
            subject: None,
            reason: None,
        }
    }

    pub fn from_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.client_ip = ip;
        self
    }

    pub fn in_convo(mut self, convo_id: &'a str) -> Self {
        self.convo_id = Some(convo_id);
        self
    }

    pub fn subject(mut self, did: &'a str) -> Self {
        self.subject = Some(did);
        self
    }

    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// The most of a field kept, in characters: reasons quote what a client
/// sent (a token's claims, a conversation id), which must neither bloat
/// the table nor break the insert.
const MAX_FIELD: usize = 256;
const MAX_REASON: usize = 512;

/// `text` as stored: control characters (PostgreSQL refuses NUL in text)
/// replaced, cut at `max` characters.
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| {
            if c.is_control() {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// The audit log of one service process. Events of concurrent requests are
/// written in one statement ([`GroupCommit`]); each request still waits
/// until its event is written (or failed), as before.
#[derive(Debug, Clone)]
pub struct AuditLog {
    events: GroupCommit<AuditRows>,
}

impl AuditLog {
    /// The log in `db`; starts its writing task on the current Tokio runtime.
    pub fn new(db: PgPool) -> Self {
        Self {
            events: GroupCommit::start(AuditRows { db }),
        }
    }

    /// Stores an event (best effort: see the module docs).
    pub async fn record(&self, event: AuditEvent<'_>) {
        let field = |text: Option<&str>| text.map(|text| clean(text, MAX_FIELD));
        let row = AuditRow {
            kind: event.kind.as_str(),
            actor: field(event.actor),
            method: clean(event.method, MAX_FIELD),
            client_ip: event.client_ip.map(|ip| ip.to_string()),
            convo_id: field(event.convo_id),
            subject: field(event.subject),
            reason: event
                .reason
                .as_deref()
                .map(|reason| clean(reason, MAX_REASON)),
        };
        self.events.submit(row).await;
    }
}

/// An event as stored.
struct AuditRow {
    kind: &'static str,
    actor: Option<String>,
    method: String,
    client_ip: Option<String>,
    convo_id: Option<String>,
    subject: Option<String>,
    reason: Option<String>,
}

/// Audit events, written in batches.
struct AuditRows {
    db: PgPool,
}

impl Batch for AuditRows {
    type Item = AuditRow;
    /// Nothing: a failure is logged and counted here.
    type Answer = ();

    async fn write(&self, rows: &[AuditRow]) -> Vec<()> {
        let column =
            |field: fn(&AuditRow) -> Option<&str>| rows.iter().map(field).collect::<Vec<_>>();
        let kinds = column(|row| Some(row.kind));
        let actors = column(|row| row.actor.as_deref());
        let methods = column(|row| Some(row.method.as_str()));
        let client_ips = column(|row| row.client_ip.as_deref());
        let convo_ids = column(|row| row.convo_id.as_deref());
        let subjects = column(|row| row.subject.as_deref());
        let reasons = column(|row| row.reason.as_deref());
        let stored = sqlx::query!(
            r#"INSERT INTO audit_events (kind, actor, method, client_ip, convo_id, subject, reason)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                    $6::text[], $7::text[])"#,
            &kinds as &[Option<&str>],
            &actors as &[Option<&str>],
            &methods as &[Option<&str>],
            &client_ips as &[Option<&str>],
            &convo_ids as &[Option<&str>],
            &subjects as &[Option<&str>],
            &reasons as &[Option<&str>],
        )
        .execute(&self.db)
        .await;
        if let Err(error) = stored {
            metrics::counter!("audit_write_failures_total").increment(rows.len() as u64);
            tracing::error!(%error, events = rows.len(), "could not record audit events");
        }
        vec![(); rows.len()]
    }

    fn unavailable(_: &()) -> bool {
        false
    }
}

/// Deletes events older than `retention`; returns how many went.
pub async fn delete_older_than(db: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!(
        "DELETE FROM audit_events WHERE occurred_at < now() - make_interval(secs => $1)",
        retention.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_cut_and_stripped_of_control_characters() {
        assert_eq!(clean("did:plc:a\0b\nc", 64), "did:plc:a\u{fffd}b\u{fffd}c");
        assert_eq!(
            clean(&"é".repeat(300), MAX_FIELD).chars().count(),
            MAX_FIELD
        );
    }
}
