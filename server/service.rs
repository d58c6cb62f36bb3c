//! The service: the auth hook every route runs first (with the rate
//! limits), the intercept hook (idempotency keys), and the generated
//! `blue.catbird.mls` handler trait. Each method delegates to the module of
//! its area (policy and storage); besides routing, this file is where
//! commits are audited and counted and external commits meet the rollout
//! switch, so that happens in one place for every commit method.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use catbird_generated::lexicons::blue::catbird::mls::{
    self, add_members, commit_group_change, confirm_welcome, create_convo, get_convos, get_epoch,
    get_expected_conversations, get_group_info, get_key_package_status, get_key_packages,
    get_messages, get_subscription_ticket, get_welcome, leave_convo, process_external_commit,
    publish_key_package, publish_key_packages, remove_member, send_ephemeral, send_message,
    subscribe_convo_events,
};
use catbird_generated::runtime::xrpc::http::header::AUTHORIZATION;
use catbird_generated::runtime::xrpc::http::request::Parts;
use catbird_generated::runtime::xrpc::{Intercept, Route, XrpcError, XrpcService};
use catbird_generated::runtime::{Datetime, Did};

use crate::audit::{AuditEvent, AuditKind};
use crate::auth::{self, AuthError, Caller};
use crate::convos::commits::{self, CommitMethod};
use crate::convos::{self, create, listing, log, welcomes};
use crate::device::DeviceId;
use crate::error::ServiceError;
use crate::ratelimit::MethodClass;
use crate::realtime::{ephemeral, stream, tickets};
use crate::state::AppState;
use crate::telemetry;
use crate::{idempotency, keypackages, mls_crypto};

/// The XRPC service over the shared application state.
#[derive(Clone)]
pub struct Service {
    pub state: Arc<AppState>,
}

impl XrpcService for Service {
    type Caller = Caller;

    /// PostgreSQL `text` cannot hold U+0000: such input is refused with a
    /// 400 naming the field before anything is stored.
    const ACCEPTS_NUL: bool = false;

    /// An address over its failed-authentication budget is refused first;
    /// then service auth ([`crate::auth`]) bound to the route's NSID; a
    /// failure is audited and charged to the address, a success to the
    /// caller's budget, so a token that does not verify never spends its
    /// claimed issuer's budget.
    async fn authenticate(&self, nsid: &'static str, request: &Parts) -> Result<Caller, XrpcError> {
        let class = MethodClass::of(nsid);
        let client_ip = self.state.limits.client_ip(request);
        if let Some(ip) = client_ip {
            self.state.limits.check_ip(class, ip)?;
        }
        let header = request
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let verified = match stream_ticket(nsid, header, request) {
            Some(ticket) => self.redeem_ticket(&ticket).await,
            None => self.state.verifier.verify(nsid, header).await,
        };
        let mut caller = match verified {
            Ok(caller) => caller,
            Err(error) => {
                // No token at all is not an attempt worth a row; our own
                // failures are logged where they become a 500, and a token
                // that could not be checked because the database is down
                // is no failed attempt either (nor could its row be written).
                if !matches!(
                    error,
                    AuthError::Missing | AuthError::Internal(_) | AuthError::Unavailable(_)
                ) {
                    let claimed = auth::claimed_issuer(header);
                    let event = AuditEvent::new(AuditKind::AuthFailed, claimed.as_deref(), nsid)
                        .from_ip(client_ip)
                        .because(error.to_string());
                    self.state.audit.record(event).await;
                }
                if let Some(ip) = client_ip {
                    self.state.limits.charge_failure(class, ip)?;
                }
                return Err(crate::error::auth_error(error));
            }
        };
        // getKeyPackages is charged per user asked for, by its handler.
        let units = u32::from(class != MethodClass::KeyPackageFetch);
        let did = caller.did.as_str();
        self.state.limits.check_caller(class, did, units)?;
        caller.client_ip = client_ip;
        telemetry::record_caller(caller.did.as_str());
        Ok(caller)
    }

    /// Idempotency keys, for the methods that declare them.
    async fn intercept(&self, route: &'static Route, caller: &Caller, body: &Bytes) -> Intercept {
        self.state.idempotency.intercept(route, caller, body).await
    }
}

impl Service {
    /// Every commit goes through the one path in `convos::commits`, and
    /// is audited and counted here: external commits, removals and bans,
    /// and every rejection with its reason.
    async fn commit(
        &self,
        caller: &Caller,
        convo_id: &str,
        method: CommitMethod<'_>,
        commit: &[u8],
        group_info: &[u8],
    ) -> Result<commits::Accepted, ServiceError> {
        let nsid = method.nsid();
        let external = matches!(method, CommitMethod::External);
        let removal = match &method {
            CommitMethod::RemoveMember { did, ban } => Some((did.to_string(), *ban)),
            _ => None,
        };
        let result = async {
            let group_id = convos::group_id(convo_id)?;
            commits::commit(
                &self.state.db,
                &self.state.groups,
                &caller.did,
                &group_id,
                &self.state.convos,
                method,
                commit,
                group_info,
            )
            .await
        }
        .await;

        let event = |kind| {
            AuditEvent::new(kind, Some(caller.did.as_str()), nsid)
                .from_ip(caller.client_ip)
                .in_convo(convo_id)
        };
        match &result {
            // A resubmission changes nothing: it was audited when accepted.
            Ok(accepted) if accepted.resubmitted => {}
            Ok(_) => {
                if external {
                    self.state
                        .audit
                        .record(event(AuditKind::ExternalCommitAccepted))
                        .await;
                }
                if let Some((did, ban)) = &removal {
                    let kind = if *ban {
                        AuditKind::MemberBanned
                    } else {
                        AuditKind::MemberRemoved
                    };
                    self.state.audit.record(event(kind).subject(did)).await;
                }
            }
            Err(error) => {
                if let Some(reason) = error.name() {
                    metrics::counter!("commits_rejected_total", "method" => nsid, "reason" => reason)
                        .increment(1);
                    let kind = if external {
                        AuditKind::ExternalCommitRejected
                    } else {
                        AuditKind::CommitRejected
                    };
                    let event = event(kind).because(format!("{reason}: {error}"));
                    self.state.audit.record(event).await;
                }
            }
        }
        result
    }

    /// The group id of a conversation that exists.
    /// A subscribeConvoEvents ticket: valid, unused, and for the device
    /// the request names.
    async fn redeem_ticket(&self, ticket: &StreamTicket) -> Result<Caller, AuthError> {
        let owner = tickets::redeem(&self.state.db, &ticket.ticket)
            .await
            .map_err(|e| auth::storage_failure("redeeming a ticket", &e))?
            .ok_or_else(|| AuthError::Malformed("unknown, used or expired ticket".into()))?;
        if ticket.device.as_deref() != Some(owner.device_id.as_str()) {
            return Err(AuthError::Malformed(
                "the ticket was issued for another device".into(),
            ));
        }
        let did =
            crate::db::stored_did(&owner.did).map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(Caller {
            issuer: owner.did,
            did,
            client_ip: None,
        })
    }

    async fn existing_convo(&self, convo_id: &str) -> Result<Vec<u8>, ServiceError> {
        let group_id = convos::group_id(convo_id)?;
        let mut conn = self.state.db.acquire().await?;
        convos::require_convo(&mut conn, &group_id).await?;
        Ok(group_id)
    }
}

/// A ticket in a subscribeConvoEvents request without a bearer token.
struct StreamTicket {
    ticket: String,
    device: Option<String>,
}

fn stream_ticket(nsid: &str, authorization: Option<&str>, request: &Parts) -> Option<StreamTicket> {
    if nsid != subscribe_convo_events::NSID || authorization.is_some() {
        return None;
    }
    let query = request.uri.query()?;
    let mut ticket = None;
    let mut device = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "ticket" => ticket = Some(value.into_owned()),
            "deviceId" => device = Some(value.into_owned()),
            _ => {}
        }
    }
    Some(StreamTicket {
        ticket: ticket?,
        device,
    })
}

impl mls::Handler for Service {
    async fn subscribe_convo_events(
        &self,
        caller: Caller,
        params: subscribe_convo_events::Params,
    ) -> subscribe_convo_events::Response {
        let device = caller_device(&params.device_id, &caller.did)?;
        let realtime = &self.state.realtime;
        Ok(stream::open(&realtime.hub, &self.state.db, &device).await?)
    }

    async fn get_subscription_ticket(
        &self,
        caller: Caller,
        input: get_subscription_ticket::Input,
    ) -> get_subscription_ticket::Response {
        let device = caller_device(&input.device_id, &caller.did)?;
        let lifetime = self.state.realtime.settings.ticket_lifetime;
        let (ticket, expires_at) = tickets::issue(&self.state.db, &device, lifetime).await?;
        Ok(get_subscription_ticket::Output {
            extra: Default::default(),
            ticket,
            expires_at: Datetime::from(expires_at),
        })
    }

    async fn send_ephemeral(
        &self,
        caller: Caller,
        input: send_ephemeral::Input,
    ) -> send_ephemeral::Response {
        let group_id = convos::group_id(&input.convo_id)?;
        let epoch = ephemeral::send(
            &self.state.db,
            &caller.did,
            &group_id,
            &self.state.convos,
            &self.state.realtime.ephemeral,
            &input,
        )
        .await?;
        Ok(send_ephemeral::Output {
            extra: Default::default(),
            epoch,
        })
    }

    async fn add_members(
        &self,
        caller: Caller,
        input: add_members::Input,
    ) -> add_members::Response {
        let method = CommitMethod::AddMembers {
            welcome: &input.welcome.0,
        };
        let accepted = self
            .commit(
                &caller,
                &input.convo_id,
                method,
                &input.commit.0,
                &input.group_info.0,
            )
            .await?;
        Ok(add_members::Output {
            extra: Default::default(),
            epoch: accepted.epoch,
            seq: accepted.seq,
        })
    }

    async fn commit_group_change(
        &self,
        caller: Caller,
        input: commit_group_change::Input,
    ) -> commit_group_change::Response {
        let accepted = self
            .commit(
                &caller,
                &input.convo_id,
                CommitMethod::GroupChange,
                &input.commit.0,
                &input.group_info.0,
            )
            .await?;
        Ok(commit_group_change::Output {
            extra: Default::default(),
            epoch: accepted.epoch,
            seq: accepted.seq,
        })
    }

    async fn confirm_welcome(
        &self,
        caller: Caller,
        input: confirm_welcome::Input,
    ) -> confirm_welcome::Response {
        let device = caller_device(&input.device_id, &caller.did)?;
        let group_id = self.existing_convo(&input.convo_id).await?;
        let state = welcomes::confirm(
            &self.state.db,
            &group_id,
            &device,
            input.success,
            input.error_details.as_deref(),
        )
        .await?;
        Ok(confirm_welcome::Output {
            extra: Default::default(),
            state,
        })
    }

    async fn create_convo(
        &self,
        caller: Caller,
        input: create_convo::Input,
    ) -> create_convo::Response {
        let convo = create::create(
            &self.state.db,
            &self.state.groups,
            &caller.did,
            &input.group_id,
            &input.cipher_suite,
            &input.group_info.0,
            input.metadata.as_ref(),
        )
        .await?;
        Ok(create_convo::Output {
            extra: Default::default(),
            convo,
        })
    }

    async fn get_convos(&self, caller: Caller, params: get_convos::Params) -> get_convos::Response {
        let (convos, cursor) = listing::convos_of(
            &self.state.db,
            &caller.did,
            params.limit,
            params.cursor.as_deref(),
        )
        .await?;
        Ok(get_convos::Output {
            extra: Default::default(),
            convos,
            cursor,
        })
    }

    async fn get_epoch(&self, caller: Caller, params: get_epoch::Params) -> get_epoch::Response {
        let group_id = convos::group_id(&params.convo_id)?;
        let epoch = log::epoch(&self.state.db, &caller.did, &group_id, &self.state.convos).await?;
        Ok(get_epoch::Output {
            extra: Default::default(),
            convo_id: params.convo_id,
            epoch,
        })
    }

    async fn get_expected_conversations(
        &self,
        caller: Caller,
        params: get_expected_conversations::Params,
    ) -> get_expected_conversations::Response {
        let device = caller_device(&params.device_id, &caller.did)?;
        let (conversations, cursor) = listing::expected(
            &self.state.db,
            &caller.did,
            &device,
            &self.state.convos,
            params.limit,
            params.cursor.as_deref(),
        )
        .await?;
        Ok(get_expected_conversations::Output {
            extra: Default::default(),
            conversations,
            cursor,
        })
    }

    async fn get_group_info(
        &self,
        caller: Caller,
        params: get_group_info::Params,
    ) -> get_group_info::Response {
        let group_id = convos::group_id(&params.convo_id)?;
        let (group_info, epoch, expires_at) =
            listing::group_info(&self.state.db, &caller.did, &group_id, &self.state.convos).await?;
        let event = AuditEvent::new(
            AuditKind::GroupInfoFetched,
            Some(caller.did.as_str()),
            get_group_info::NSID,
        )
        .from_ip(caller.client_ip)
        .in_convo(&params.convo_id);
        self.state.audit.record(event).await;
        Ok(get_group_info::Output {
            extra: Default::default(),
            group_info: group_info.into(),
            epoch,
            expires_at: expires_at.map(Datetime::from),
        })
    }

    async fn get_key_package_status(
        &self,
        caller: Caller,
        params: get_key_package_status::Params,
    ) -> get_key_package_status::Response {
        let suite = params
            .cipher_suite
            .as_deref()
            .map(mls_crypto::requested_cipher_suite)
            .transpose()
            .map_err(ServiceError::from)?;
        let device = caller_device(&params.device_id, &caller.did)?;
        let status = keypackages::status(
            &self.state.db,
            &self.state.key_packages,
            &device,
            suite.as_ref(),
        )
        .await?;
        Ok(get_key_package_status::Output {
            extra: Default::default(),
            device_id: params.device_id,
            available: status.available,
            last_resort: status.last_resort,
            needs_replenish: status.needs_replenish,
            target_count: i64::from(status.target_count),
        })
    }

    async fn get_key_packages(
        &self,
        caller: Caller,
        params: get_key_packages::Params,
    ) -> get_key_packages::Response {
        // The stricter budget counts users asked for.
        let asked = u32::try_from(params.dids.len()).unwrap_or(u32::MAX);
        let (class, did) = (MethodClass::KeyPackageFetch, caller.did.as_str());
        self.state.limits.check_caller(class, did, asked)?;
        let suite =
            mls_crypto::requested_cipher_suite(&params.cipher_suite).map_err(ServiceError::from)?;
        // With a conversation: only for its members, and skipping devices
        // already in it.
        let mut skip = Vec::new();
        if let Some(convo_id) = &params.convo_id {
            let group_id = convos::group_id(convo_id)?;
            let mut conn = self.state.db.acquire().await.map_err(ServiceError::from)?;
            convos::require_convo(&mut conn, &group_id).await?;
            convos::require_member(&mut conn, &group_id, &caller.did, &self.state.convos).await?;
            skip = convos::store::current_device_ids(&mut conn, &group_id)
                .await
                .map_err(ServiceError::from)?;
        }
        let fetched =
            keypackages::fetch(&self.state.db, &caller.did, &params.dids, &suite, &skip).await?;
        Ok(get_key_packages::Output {
            extra: Default::default(),
            key_packages: fetched.key_packages,
            missing: fetched.missing,
        })
    }

    async fn get_messages(
        &self,
        caller: Caller,
        params: get_messages::Params,
    ) -> get_messages::Response {
        let group_id = convos::group_id(&params.convo_id)?;
        let page = log::read(
            &self.state.db,
            &caller.did,
            &group_id,
            &self.state.convos,
            params.since_seq,
            params.limit,
        )
        .await?;
        Ok(get_messages::Output {
            extra: Default::default(),
            messages: page.messages,
            last_seq: page.last_seq,
            gap_info: page.gap_info,
        })
    }

    async fn get_welcome(
        &self,
        caller: Caller,
        params: get_welcome::Params,
    ) -> get_welcome::Response {
        let device = caller_device(&params.device_id, &caller.did)?;
        let group_id = self.existing_convo(&params.convo_id).await?;
        let fetched = welcomes::fetch(
            &self.state.db,
            &group_id,
            &device,
            self.state.convos.welcome_grace,
        )
        .await?;
        Ok(get_welcome::Output {
            extra: Default::default(),
            convo_id: params.convo_id,
            welcome: fetched.welcome.into(),
            state: fetched.state_before,
            epoch: fetched.epoch,
            commit_seq: fetched.commit_seq,
            in_flight_until: Datetime::from(fetched.in_flight_until),
        })
    }

    async fn leave_convo(
        &self,
        caller: Caller,
        input: leave_convo::Input,
    ) -> leave_convo::Response {
        let group_id = convos::group_id(&input.convo_id)?;
        let accepted = commits::propose_leave(
            &self.state.db,
            &self.state.groups,
            &caller.did,
            &group_id,
            &self.state.convos,
            &input.proposal.0,
        )
        .await?;
        Ok(leave_convo::Output {
            extra: Default::default(),
            epoch: accepted.epoch,
            seq: accepted.seq,
        })
    }

    async fn process_external_commit(
        &self,
        caller: Caller,
        input: process_external_commit::Input,
    ) -> process_external_commit::Response {
        let started = Instant::now();
        metrics::counter!("external_commit_requests_total").increment(1);
        let (commit, group_info) = (&input.external_commit.0, &input.group_info.0);
        let result = self
            .commit(
                &caller,
                &input.convo_id,
                CommitMethod::External,
                commit,
                group_info,
            )
            .await;
        metrics::histogram!("external_commit_latency_seconds")
            .record(started.elapsed().as_secs_f64());
        let accepted = result?;
        if !accepted.resubmitted {
            metrics::counter!("external_commit_success_total").increment(1);
        }
        Ok(process_external_commit::Output {
            extra: Default::default(),
            epoch: accepted.epoch,
            seq: accepted.seq,
            rejoined_at: Datetime::from(accepted.accepted_at),
        })
    }

    async fn publish_key_package(
        &self,
        caller: Caller,
        input: publish_key_package::Input,
    ) -> publish_key_package::Response {
        let package = keypackages::validate(&input.key_package.0, &caller.did)?;
        let stored =
            keypackages::publish(&self.state.db, &self.state.key_packages, &[package]).await?;
        Ok(stored
            .into_iter()
            .next()
            .ok_or_else(|| ServiceError::Internal("publish stored nothing".into()))?)
    }

    async fn publish_key_packages(
        &self,
        caller: Caller,
        input: publish_key_packages::Input,
    ) -> publish_key_packages::Response {
        let packages = keypackages::validate_batch(&input.key_packages, &caller.did)?;
        let stored =
            keypackages::publish(&self.state.db, &self.state.key_packages, &packages).await?;
        Ok(publish_key_packages::Output {
            extra: Default::default(),
            key_packages: stored,
        })
    }

    async fn remove_member(
        &self,
        caller: Caller,
        input: remove_member::Input,
    ) -> remove_member::Response {
        let method = CommitMethod::RemoveMember {
            did: &input.did,
            ban: input.ban,
        };
        let accepted = self
            .commit(
                &caller,
                &input.convo_id,
                method,
                &input.commit.0,
                &input.group_info.0,
            )
            .await?;
        Ok(remove_member::Output {
            extra: Default::default(),
            epoch: accepted.epoch,
            seq: accepted.seq,
        })
    }

    async fn send_message(
        &self,
        caller: Caller,
        input: send_message::Input,
    ) -> send_message::Response {
        let group_id = convos::group_id(&input.convo_id)?;
        let request_hash = match &input.idempotency_key {
            Some(_) => idempotency::input_hash(&input)
                .ok_or_else(|| ServiceError::Internal("hashing a sendMessage input".into()))?,
            None => Vec::new(),
        };
        let key = input
            .idempotency_key
            .as_deref()
            .map(|key| idempotency::KeyRow {
                caller: caller.did.as_str(),
                method: send_message::NSID,
                key,
                request_hash: &request_hash,
                ttl_seconds: self.state.idempotency.ttl().as_secs_f64(),
            });
        let state = &self.state;
        let sent = log::send(
            &state.db,
            &state.appender,
            &caller.did,
            &group_id,
            &input,
            key.as_ref(),
        )
        .await?;
        Ok(send_message::Output {
            extra: Default::default(),
            message_id: input.msg_id,
            received_at: Datetime::from(sent.received_at),
            seq: sent.seq,
            epoch: sent.epoch,
        })
    }
}

/// A `deviceId` parameter: it must be a device of the caller's own DID.
pub fn caller_device(identity: &str, caller: &Did) -> Result<DeviceId, ServiceError> {
    let device =
        DeviceId::parse(identity).map_err(|e| ServiceError::InvalidDevice(e.to_string()))?;
    if device.did() != caller {
        return Err(ServiceError::InvalidDevice(format!(
            "{identity} is not a device of the caller {}",
            caller.as_str()
        )));
    }
    Ok(device)
}
