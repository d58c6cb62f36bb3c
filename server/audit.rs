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

/// Stores an event.
pub async fn record(db: &PgPool, event: AuditEvent<'_>) {
    let stored = sqlx::query!(
        r#"INSERT INTO audit_events (kind, actor, method, client_ip, convo_id, subject, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        event.kind.as_str(),
        event.actor,
        event.method,
        event.client_ip.map(|ip| ip.to_string()),
        event.convo_id,
        event.subject,
        event.reason,
    )
    .execute(db)
    .await;
    if let Err(error) = stored {
        metrics::counter!("audit_write_failures_total").increment(1);
        tracing::error!(%error, kind = event.kind.as_str(), "could not record an audit event");
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
