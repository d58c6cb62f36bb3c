//! A client that joins by external commit, built with OpenMLS directly.

use catbird_generated::lexicons::blue::catbird::mls::{
    Client, get_group_info, process_external_commit,
};
use catbird_generated::runtime::Bytes;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    LeafNodeParameters, MlsGroup, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY,
};
use openmls_traits::OpenMlsProvider as _;

use super::mls::{Device as MlsIdentity, SUITE, capabilities};

/// A client that joins by external commit, built with OpenMLS directly: its
/// credential says whatever identity the test gives it, and it builds from
/// whatever GroupInfo it is handed.
pub struct Joiner {
    identity: MlsIdentity,
}

impl Joiner {
    pub fn new(identity: &str) -> Self {
        Self {
            identity: MlsIdentity::with_identity(identity, SUITE),
        }
    }

    /// An external commit from `group_info` (an MLSMessage), with the new
    /// epoch's GroupInfo. The returned group is already merged.
    pub fn external_commit(
        &self,
        convo: &str,
        group_info: &Bytes,
    ) -> (MlsGroup, process_external_commit::Input) {
        let provider = &self.identity.provider;
        let message = MlsMessageIn::tls_deserialize_exact(&group_info.0).unwrap();
        let MlsMessageBodyIn::GroupInfo(group_info) = message.extract() else {
            panic!("getGroupInfo returned an MLSMessage that is not a GroupInfo");
        };
        let join_config = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .build();
        let leaf = LeafNodeParameters::builder()
            .with_capabilities(capabilities())
            .build();
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_config(join_config)
            .skip_lifetime_validation()
            .build_group(provider, group_info, self.identity.credential.clone())
            .unwrap()
            .leaf_node_parameters(leaf)
            .load_psks(provider.storage())
            .unwrap()
            .build(
                provider.rand(),
                provider.crypto(),
                &self.identity.signer,
                |_| true,
            )
            .unwrap()
            .finalize(provider)
            .unwrap();
        let new_group_info = group
            .export_group_info(provider.crypto(), &self.identity.signer, true)
            .unwrap();
        let input = process_external_commit::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            external_commit: Bytes(bundle.commit().tls_serialize_detached().unwrap()),
            group_info: Bytes(new_group_info.tls_serialize_detached().unwrap()),
            idempotency_key: None,
        };
        (group, input)
    }

    /// Deletes a group whose external commit the service rejected.
    pub fn forget(&self, mut group: MlsGroup) {
        group.delete(self.identity.provider.storage()).unwrap();
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
