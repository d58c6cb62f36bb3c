//! A client that joins by external commit: the SDK's installation with a
//! credential saying whatever identity the test gives it, building from
//! whatever GroupInfo it is handed.

use catbird_generated::lexicons::blue::catbird::mls::{
    Client, get_group_info, process_external_commit,
};
use catbird_generated::runtime::Bytes;
use catbird_mls_client::{Installation, to_bytes};
use openmls::prelude::MlsGroup;

use super::mls::SUITE;

pub struct Joiner {
    installation: Installation,
}

impl Joiner {
    pub fn new(identity: &str) -> Self {
        Self {
            installation: Installation::new(identity, SUITE).unwrap(),
        }
    }

    /// An external commit from `group_info` (an MLSMessage), with the new
    /// epoch's GroupInfo. The returned group is already merged.
    pub fn external_commit(
        &self,
        convo: &str,
        group_info: &Bytes,
    ) -> (MlsGroup, process_external_commit::Input) {
        let (group, bundle) = self.installation.join_externally(&group_info.0).unwrap();
        let new_group_info = self.installation.group_info(&group, true).unwrap();
        let input = process_external_commit::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            external_commit: to_bytes(bundle.commit()).unwrap(),
            group_info: to_bytes(&new_group_info).unwrap(),
            idempotency_key: None,
        };
        (group, input)
    }

    /// Deletes a group whose external commit the service rejected.
    pub fn forget(&self, mut group: MlsGroup) {
        self.installation.delete_group(&mut group).unwrap();
    }
}

/// The conversation's current GroupInfo, as `client` fetches it to join.
pub async fn current_group_info(client: &Client, convo: &str) -> Bytes {
    client
        .get_group_info(&get_group_info::Params {
            convo_id: convo.to_owned(),
        })
        .await
        .unwrap()
        .group_info
}
