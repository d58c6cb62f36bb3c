//! The service: the auth hook every route runs first, and the generated
//! `blue.catbird.mls` handler trait. Each method delegates to the module of
//! its area (policy and storage); this file only routes.

use std::sync::Arc;

use catbird_generated::lexicons::blue::catbird::mls::{
    self, add_members, commit_group_change, confirm_welcome, create_convo, get_convos, get_epoch,
    get_expected_conversations, get_group_info, get_key_package_status, get_key_packages,
    get_messages, get_welcome, leave_convo, process_external_commit, publish_key_package,
    publish_key_packages, remove_member, send_message,
};
use catbird_generated::runtime::xrpc::http::header::AUTHORIZATION;
use catbird_generated::runtime::xrpc::http::request::Parts;
use catbird_generated::runtime::xrpc::{MethodError, XrpcError, XrpcService};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ServiceError;
use crate::telemetry;
use crate::{keypackages, mls_crypto};

/// The XRPC service over the shared application state.
#[derive(Clone)]
pub struct Service {
    pub state: Arc<AppState>,
}

impl XrpcService for Service {
    type Caller = Caller;

    /// Service auth (DESIGN.md "Auth"), bound to the route's NSID.
    async fn authenticate(&self, nsid: &'static str, request: &Parts) -> Result<Caller, XrpcError> {
        let header = request
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let caller = self.state.verifier.verify(nsid, header).await?;
        telemetry::record_caller(caller.did.as_str());
        Ok(caller)
    }
}

/// The answer of a method that is not built yet: 501, listed in README.md.
fn not_built<T, E>(nsid: &str) -> Result<T, MethodError<E>> {
    Err(XrpcError::method_not_implemented(nsid).into())
}

impl mls::Handler for Service {
    async fn add_members(
        &self,
        _caller: Caller,
        _input: add_members::Input,
    ) -> add_members::Response {
        not_built(add_members::NSID)
    }

    async fn commit_group_change(
        &self,
        _caller: Caller,
        _input: commit_group_change::Input,
    ) -> commit_group_change::Response {
        not_built(commit_group_change::NSID)
    }

    async fn confirm_welcome(
        &self,
        _caller: Caller,
        _input: confirm_welcome::Input,
    ) -> confirm_welcome::Response {
        not_built(confirm_welcome::NSID)
    }

    async fn create_convo(
        &self,
        _caller: Caller,
        _input: create_convo::Input,
    ) -> create_convo::Response {
        not_built(create_convo::NSID)
    }

    async fn get_convos(
        &self,
        _caller: Caller,
        _params: get_convos::Params,
    ) -> get_convos::Response {
        not_built(get_convos::NSID)
    }

    async fn get_epoch(&self, _caller: Caller, _params: get_epoch::Params) -> get_epoch::Response {
        not_built(get_epoch::NSID)
    }

    async fn get_expected_conversations(
        &self,
        _caller: Caller,
        _params: get_expected_conversations::Params,
    ) -> get_expected_conversations::Response {
        not_built(get_expected_conversations::NSID)
    }

    async fn get_group_info(
        &self,
        _caller: Caller,
        _params: get_group_info::Params,
    ) -> get_group_info::Response {
        not_built(get_group_info::NSID)
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
            .transpose()?;
        let status = keypackages::status(
            &self.state.db,
            &self.state.key_packages,
            &caller.did,
            &params.device_id,
            suite.as_ref(),
        )
        .await?;
        Ok(get_key_package_status::Output {
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
        let suite = mls_crypto::requested_cipher_suite(&params.cipher_suite)?;
        if let Some(convo_id) = params.convo_id {
            // No conversation exists before the group lifecycle is built.
            return Err(ServiceError::ConvoNotFound(format!("no conversation {convo_id}")).into());
        }
        let fetched = keypackages::fetch(&self.state.db, &caller.did, &params.dids, &suite).await?;
        Ok(get_key_packages::Output {
            key_packages: fetched.key_packages,
            missing: fetched.missing,
        })
    }

    async fn get_messages(
        &self,
        _caller: Caller,
        _params: get_messages::Params,
    ) -> get_messages::Response {
        not_built(get_messages::NSID)
    }

    async fn get_welcome(
        &self,
        _caller: Caller,
        _params: get_welcome::Params,
    ) -> get_welcome::Response {
        not_built(get_welcome::NSID)
    }

    async fn leave_convo(
        &self,
        _caller: Caller,
        _input: leave_convo::Input,
    ) -> leave_convo::Response {
        not_built(leave_convo::NSID)
    }

    async fn process_external_commit(
        &self,
        _caller: Caller,
        _input: process_external_commit::Input,
    ) -> process_external_commit::Response {
        not_built(process_external_commit::NSID)
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
            key_packages: stored,
        })
    }

    async fn remove_member(
        &self,
        _caller: Caller,
        _input: remove_member::Input,
    ) -> remove_member::Response {
        not_built(remove_member::NSID)
    }

    async fn send_message(
        &self,
        _caller: Caller,
        _input: send_message::Input,
    ) -> send_message::Response {
        not_built(send_message::NSID)
    }
}
