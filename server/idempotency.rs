//! Idempotent writes (README, "Retries, rate limits, ..."), for every
//! method whose lexicon input declares `idempotencyKey`, in one place: the
//! runtime's intercept hook, which sees each procedure call after
//! authentication with the body as sent.
//!
//! A request with a key claims `(caller, method, key)` by inserting an
//! `in_progress` row. The claimant runs the handler and stores the response
//! (2xx and 4xx) or deletes the claim (5xx, or the request was dropped). Any
//! other request with that key is answered from the row: the stored response
//! byte for byte if its input is the same, 422 `IdempotencyKeyReused` if not;
//! while the claimant is still running it waits, polling, and after
//! [`IdempotencySettings::wait`] gives up with 409 `IdempotencyKeyInProgress`.
//! All of this is in PostgreSQL, so it holds across service processes.
//!
//! sendMessage, the hot path, records its key itself (no claim, no second
//! write): in the statement that appends the message, the key is inserted
//! as answered by that log entry (`convo_id`, `seq`), so a key costs no
//! extra round trip. Concurrent requests with one key serialize on the
//! conversation row and the unique indexes; the loser finds the winner's
//! row and answers from it ([`recorded`]). A 4xx is stored after it
//! happened ([`record_refusal`]): a 4xx changes nothing, so a retry racing
//! it cannot execute anything twice, and the first stored answer wins.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use catbird_generated::lexicons::blue::catbird::mls::send_message;
use catbird_generated::runtime::xrpc::http::header::CONTENT_TYPE;
use catbird_generated::runtime::xrpc::http::{HeaderValue, StatusCode};
use catbird_generated::runtime::xrpc::{Intercept, Route, XrpcError};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

use catbird_generated::runtime::DeclaredError;
use catbird_generated::runtime::xrpc::MethodError;
use sqlx::PgConnection;

use crate::auth::Caller;
use crate::error::ServiceError;

/// The input property that carries the key: a method takes a key when its
/// lexicon input declares it (the generated route lists the properties).
const KEY_FIELD: &str = "idempotencyKey";

/// Whether `route`'s lexicon input declares an idempotency key.
pub fn takes_key(route: &Route) -> bool {
    route.input_fields.contains(&KEY_FIELD)
}

/// Whether `route`'s handler records its key itself (see the module
/// documentation) instead of this layer claiming it around the handler.
fn handler_records_key(route: &Route) -> bool {
    route.nsid == send_message::NSID
}

/// The lexicons' limit on a key, in bytes (every keyed method declares the
/// same one). Longer keys are left to the input decoder, which rejects them.
const MAX_KEY_BYTES: usize = send_message::Input::IDEMPOTENCY_KEY_MAX;

/// How long a claim holds without a response: after this the claimant is
/// presumed dead (a crashed process) and a retry with the same input may
/// take the key over. Far longer than any request runs.
const LEASE: Duration = Duration::from_secs(120);

/// How often a waiting request looks at the claimant's row again: soon at
/// first (most requests take milliseconds), then less often.
const FIRST_POLL: Duration = Duration::from_millis(10);
const MAX_POLL: Duration = Duration::from_millis(250);

/// Idempotency settings.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencySettings {
    /// How long a key and its response are kept.
    pub ttl: Duration,
    /// How long a request waits for a concurrent one with the same key.
    pub wait: Duration,
}

/// The idempotency layer over the `idempotency_keys` table.
#[derive(Debug, Clone)]
pub struct Idempotency {
    db: PgPool,
    settings: IdempotencySettings,
}

/// One key of one caller for one method, and the random token of one
/// request's claim on it.
#[derive(Debug, Clone)]
struct Claim {
    caller: String,
    method: &'static str,
    key: String,
    token: [u8; 16],
}

/// A stored response.
struct Stored {
    status: i16,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Idempotency {
    pub fn new(db: PgPool, settings: IdempotencySettings) -> Self {
        Self { db, settings }
    }

    /// How long keys are kept.
    pub fn ttl(&self) -> Duration {
        self.settings.ttl
    }

    /// The intercept decision for one procedure call.
    pub async fn intercept(
        &self,
        route: &'static Route,
        caller: &Caller,
        body: &Bytes,
    ) -> Intercept {
        if !takes_key(route) || handler_records_key(route) {
            return Intercept::Proceed;
        }
        let Some((key, request_hash)) = key_and_hash(body) else {
            return Intercept::Proceed;
        };
        let mut token = [0; 16];
        if let Err(error) = getrandom::fill(&mut token) {
            return Intercept::Answer(XrpcError::internal(&error).into_response());
        }
        let claim = Claim {
            caller: caller.did.to_string(),
            method: route.nsid,
            key,
            token,
        };
        match self.decide(&claim, &request_hash).await {
            Ok(intercept) => intercept,
            // Without the table there is no way to know whether this is a
            // retry: running the handler could execute twice.
            Err(error) => {
                Intercept::Answer(XrpcError::internal(&ServiceError::from(error)).into_response())
            }
        }
    }

    async fn decide(&self, claim: &Claim, request_hash: &[u8]) -> Result<Intercept, sqlx::Error> {
        let started = Instant::now();
        let mut poll = FIRST_POLL;
        loop {
            if self.try_claim(claim, request_hash).await? {
                let guard = ClaimGuard {
                    claim: Some(claim.clone()),
                    db: self.db.clone(),
                };
                let settings = self.settings;
                return Ok(Intercept::Observe(Box::new(move |response| {
                    Box::pin(guard.settle(response, settings))
                })));
            }
            let Some(row) = sqlx::query!(
                r#"SELECT request_hash, state, status, content_type, body
                   FROM idempotency_keys WHERE caller = $1 AND method = $2 AND key = $3"#,
                claim.caller,
                claim.method,
                claim.key,
            )
            .fetch_optional(&self.db)
            .await?
            else {
                // The claimant gave its claim up (a 5xx) just now: try again.
                continue;
            };
            if row.request_hash != request_hash {
                count(claim.method, "conflict");
                return Ok(answer(ServiceError::IdempotencyKeyReused(format!(
                    "idempotencyKey {:?} was already used for {} with a different input",
                    claim.key, claim.method
                ))));
            }
            if let (Some(status), Some(body)) = (row.status, row.body) {
                count(claim.method, "hit");
                return Ok(Intercept::Answer(replay(Stored {
                    status,
                    content_type: row.content_type,
                    body,
                })));
            }
            if started.elapsed() >= self.settings.wait {
                count(claim.method, "in_progress");
                return Ok(answer(ServiceError::IdempotencyKeyInProgress(format!(
                    "a request with idempotencyKey {:?} is still executing; retry with the same key for its response",
                    claim.key
                ))));
            }
            debug_assert_eq!(row.state, "in_progress");
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(MAX_POLL);
        }
    }

    /// Inserts the claim; takes over a stored response past its expiry, or
    /// an abandoned claim (lease over) for the same input. `true` if this
    /// request now holds the key. A claim lives at least as long as its
    /// lease, whatever the key expiry.
    async fn try_claim(&self, claim: &Claim, request_hash: &[u8]) -> Result<bool, sqlx::Error> {
        let claimed = sqlx::query_scalar!(
            r#"INSERT INTO idempotency_keys
                   (caller, method, key, request_hash, state, claim, lease_until, expires_at)
               VALUES ($1, $2, $3, $4, 'in_progress', $5,
                       now() + make_interval(secs => $6),
                       now() + make_interval(secs => greatest($6, $7)))
               ON CONFLICT (caller, method, key) DO UPDATE SET
                   request_hash = EXCLUDED.request_hash,
                   state = 'in_progress',
                   claim = EXCLUDED.claim,
                   lease_until = EXCLUDED.lease_until,
                   status = NULL, content_type = NULL, body = NULL,
                   created_at = now(),
                   expires_at = EXCLUDED.expires_at
               WHERE (idempotency_keys.state = 'done' AND idempotency_keys.expires_at <= now())
                  OR (idempotency_keys.state = 'in_progress'
                      AND idempotency_keys.lease_until <= now()
                      AND idempotency_keys.request_hash = EXCLUDED.request_hash)
               RETURNING true AS "claimed!""#,
            claim.caller,
            claim.method,
            claim.key,
            request_hash,
            &claim.token[..],
            LEASE.as_secs_f64(),
            self.settings.ttl.as_secs_f64(),
        )
        .fetch_optional(&self.db)
        .await?;
        Ok(claimed.is_some())
    }
}

/// Deletes keys past their expiry (claims only once their lease is over
/// too); returns how many went.
pub async fn delete_expired(db: &PgPool) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!(
        "DELETE FROM idempotency_keys \
         WHERE expires_at <= now() AND (state = 'done' OR lease_until <= now())"
    )
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}

/// Holds a claim until the handler's response is settled; dropped unsettled
/// (the input did not decode, the handler panicked) it gives the claim up,
/// so a retry executes instead of waiting for the lease. (A client going
/// away does not drop it: the runtime runs the handler and the settling to
/// the end.)
struct ClaimGuard {
    claim: Option<Claim>,
    db: PgPool,
}

impl ClaimGuard {
    /// Stores a 2xx or 4xx response for the retries to come, or gives the
    /// claim up after a 5xx; the response goes on unchanged either way.
    async fn settle(mut self, response: Response, settings: IdempotencySettings) -> Response {
        let Some(claim) = self.claim.take() else {
            return response;
        };
        if response.status().is_server_error() {
            count(claim.method, "not_stored");
            release(&self.db, &claim).await;
            return response;
        }
        let (parts, body) = response.into_parts();
        // Handler responses are small JSON documents, already in memory.
        let body = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(body) => body,
            Err(error) => {
                release(&self.db, &claim).await;
                return XrpcError::internal(&error).into_response();
            }
        };
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        let stored = sqlx::query!(
            r#"UPDATE idempotency_keys
               SET state = 'done', status = $5, content_type = $6, body = $7,
                   expires_at = now() + make_interval(secs => $8)
               WHERE caller = $1 AND method = $2 AND key = $3
                 AND claim = $4 AND state = 'in_progress'"#,
            claim.caller,
            claim.method,
            claim.key,
            &claim.token[..],
            i16::try_from(parts.status.as_u16()).unwrap_or(i16::MAX),
            content_type,
            &body[..],
            settings.ttl.as_secs_f64(),
        )
        .execute(&self.db)
        .await;
        match stored {
            Ok(done) if done.rows_affected() == 1 => count(claim.method, "executed"),
            Ok(_) => {
                // Our lease ran out and a retry took the key over: its
                // response will be the stored one.
                tracing::warn!(
                    method = claim.method,
                    "an idempotency claim was taken over before its response was stored"
                );
                count(claim.method, "lease_lost");
            }
            Err(error) => {
                // The caller still gets the response; a retry will execute
                // again once the claim is given up, and the methods' natural
                // idempotency (same msgId, same commit, same KeyPackage)
                // covers that.
                tracing::error!(%error, method = claim.method, "could not store an idempotent response");
                release(&self.db, &claim).await;
            }
        }
        Response::from_parts(parts, Body::from(body))
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            let db = self.db.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { release(&db, &claim).await });
            }
        }
    }
}

/// Deletes an unsettled claim, so the next request with the key executes.
async fn release(db: &PgPool, claim: &Claim) {
    let released = sqlx::query!(
        "DELETE FROM idempotency_keys \
         WHERE caller = $1 AND method = $2 AND key = $3 AND claim = $4 AND state = 'in_progress'",
        claim.caller,
        claim.method,
        claim.key,
        &claim.token[..],
    )
    .execute(db)
    .await;
    if let Err(error) = released {
        // The lease runs out instead.
        tracing::warn!(%error, method = claim.method, "could not release an idempotency claim");
    }
}

/// The key, and the hash of the input compared by value (object keys
/// sorted, whitespace ignored), if the body is a JSON object with a usable
/// `idempotencyKey`.
fn key_and_hash(body: &[u8]) -> Option<(String, Vec<u8>)> {
    let input: Value = serde_json::from_slice(body).ok()?;
    let key = input.get(KEY_FIELD)?.as_str()?.to_owned();
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return None;
    }
    Some((key, value_hash(input)?))
}

/// The hash of a decoded input, compared by value as the raw bodies are.
pub fn input_hash(input: &impl serde::Serialize) -> Option<Vec<u8>> {
    value_hash(serde_json::to_value(input).ok()?)
}

fn value_hash(mut input: Value) -> Option<Vec<u8>> {
    sort_keys(&mut input);
    let canonical = serde_json::to_vec(&input).ok()?;
    Some(Sha256::digest(&canonical).to_vec())
}

/// A key that its handler records itself (sendMessage: with the log
/// entry that answers it, see the module documentation).
pub struct KeyRow<'a> {
    pub caller: &'a str,
    pub method: &'a str,
    pub key: &'a str,
    pub request_hash: &'a [u8],
    /// How long the key is kept, in seconds.
    pub ttl_seconds: f64,
}

/// What a key recorded by its handler answers.
#[derive(Debug)]
pub enum Recorded {
    /// The log entry at this seq (of the key's conversation).
    Entry { seq: i64 },
    /// A stored refusal (or, for keys of older processes, any response).
    Response { status: i16, body: Vec<u8> },
    /// A request of an older process still holds the key.
    InProgress,
    /// The key was used with a different input.
    OtherInput,
    /// The row is past its expiry and may be deleted ([`forget_expired`]).
    Expired,
}

/// What `key` answers, if it is recorded.
pub async fn recorded(
    db: &mut PgConnection,
    key: &KeyRow<'_>,
) -> Result<Option<Recorded>, sqlx::Error> {
    let Some(row) = sqlx::query!(
        r#"SELECT request_hash, state, status, body, seq,
                  expires_at <= now() AND (state = 'done' OR lease_until <= now()) AS "expired!"
           FROM idempotency_keys WHERE caller = $1 AND method = $2 AND key = $3"#,
        key.caller,
        key.method,
        key.key,
    )
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(if row.expired {
        Recorded::Expired
    } else if row.request_hash != key.request_hash {
        count(send_message::NSID, "conflict");
        Recorded::OtherInput
    } else if let (Some(_), Some(seq)) = (row.status, row.seq) {
        count(send_message::NSID, "hit");
        Recorded::Entry { seq }
    } else if let (Some(status), Some(body)) = (row.status, row.body) {
        count(send_message::NSID, "hit");
        Recorded::Response { status, body }
    } else {
        debug_assert_eq!(row.state, "in_progress");
        count(send_message::NSID, "in_progress");
        Recorded::InProgress
    }))
}

/// Stores a handler's refusal (a 4xx) as the key's answer, unless the key
/// is recorded already; `true` if stored.
pub async fn record_refusal<E: DeclaredError>(
    db: &mut PgConnection,
    key: &KeyRow<'_>,
    error: &MethodError<E>,
) -> Result<bool, sqlx::Error> {
    let body = serde_json::json!({ "error": error.name(), "message": error.message() }).to_string();
    let stored = sqlx::query!(
        r#"INSERT INTO idempotency_keys
               (caller, method, key, request_hash, state, claim, lease_until, status,
                content_type, body, expires_at)
           VALUES ($1, $2, $3, $4, 'done', '\x', now(), $5, 'application/json', $6,
                   now() + make_interval(secs => $7))
           ON CONFLICT (caller, method, key) DO NOTHING"#,
        key.caller,
        key.method,
        key.key,
        key.request_hash,
        i16::try_from(error.status().as_u16()).unwrap_or(i16::MAX),
        body.as_bytes(),
        key.ttl_seconds,
    )
    .execute(db)
    .await?;
    let stored = stored.rows_affected() == 1;
    if stored {
        count(send_message::NSID, "executed");
    }
    Ok(stored)
}

/// Counts a sendMessage whose key was recorded with its entry.
pub fn executed_with_key() {
    count(send_message::NSID, "executed");
}

/// Deletes `key`'s row if it is past its expiry (as [`delete_expired`]).
pub async fn forget_expired(db: &mut PgConnection, key: &KeyRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM idempotency_keys \
         WHERE caller = $1 AND method = $2 AND key = $3 \
           AND expires_at <= now() AND (state = 'done' OR lease_until <= now())",
        key.caller,
        key.method,
        key.key,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A stored response as the handler's error again: the same status, error
/// name and message.
pub fn stored_error<E: DeclaredError>(status: i16, body: &[u8]) -> MethodError<E> {
    let status = u16::try_from(status)
        .ok()
        .and_then(|status| StatusCode::from_u16(status).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(body).unwrap_or_default();
    let name = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("InvalidRequest");
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match E::from_name(name) {
        Some(declared) => MethodError::declared(declared, message).with_status(status),
        None => XrpcError::new(status, name, message).into(),
    }
}

fn sort_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// A stored response, as it was sent the first time.
fn replay(stored: Stored) -> Response {
    let status = u16::try_from(stored.status)
        .ok()
        .and_then(|status| StatusCode::from_u16(status).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = status;
    if let Some(value) = stored
        .content_type
        .and_then(|value| HeaderValue::from_str(&value).ok())
    {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn answer(error: ServiceError) -> Intercept {
    Intercept::Answer(XrpcError::from(error).into_response())
}

fn count(method: &'static str, outcome: &'static str) {
    metrics::counter!("idempotency_requests_total", "method" => method, "outcome" => outcome)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_compare_by_value() {
        let (key, a) =
            key_and_hash(br#"{"idempotencyKey":"k","b":1,"a":{"y":2,"x":[1,{"q":1,"p":2}]}}"#)
                .unwrap();
        let (_, b) = key_and_hash(
            br#"{ "a": {"x": [1, {"p": 2, "q": 1}], "y": 2}, "b": 1, "idempotencyKey": "k" }"#,
        )
        .unwrap();
        let (_, c) =
            key_and_hash(br#"{"idempotencyKey":"k","b":2,"a":{"y":2,"x":[1,{"q":1,"p":2}]}}"#)
                .unwrap();
        assert_eq!(key, "k");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn only_usable_keys_count() {
        assert!(key_and_hash(br#"{"text":"no key"}"#).is_none());
        assert!(key_and_hash(br#"{"idempotencyKey":""}"#).is_none());
        assert!(key_and_hash(br#"{"idempotencyKey":7}"#).is_none());
        assert!(
            key_and_hash(format!(r#"{{"idempotencyKey":"{}"}}"#, "k".repeat(65)).as_bytes())
                .is_none()
        );
        assert!(
            key_and_hash(format!(r#"{{"idempotencyKey":"{}"}}"#, "k".repeat(64)).as_bytes())
                .is_some()
        );
        assert!(key_and_hash(b"not json").is_none());
    }

    /// The generated routes know which methods take a key.
    #[test]
    fn keyed_methods_come_from_the_lexicons() {
        use catbird_generated::lexicons::blue::catbird::mls::{ROUTES, get_messages, send_message};
        assert!(takes_key(&send_message::ROUTE));
        assert!(!takes_key(&get_messages::ROUTE));
        let keyed = ROUTES.iter().filter(|route| takes_key(route)).count();
        assert_eq!(
            keyed, 7,
            "addMembers, commitGroupChange, createConvo, processExternalCommit, publishKeyPackage, removeMember, sendMessage"
        );
    }
}
