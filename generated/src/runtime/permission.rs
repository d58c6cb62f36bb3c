//! Lexicon `permission-set` entries, emitted as constants.

/// One `permission` of a lexicon `permission-set`.
///
/// Fields mirror the lexicon object `{"type": "permission", ...}`: `resource`
/// (`repo`, `rpc`, `blob`, `account`, `identity`, ...), `action`,
/// `collection`, `lxm` (XRPC method NSIDs), `aud` (the service DID or `*`),
/// `inheritAud`, `accept` (blob MIME patterns) and `attr`. A list the
/// lexicon leaves out is empty; `aud` and `attr` are then `None` and
/// `inheritAud` is `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// `resource`: what kind of thing is granted.
    pub resource: &'static str,
    /// `action`: the operations allowed, e.g. `create`, `update`, `delete`.
    pub action: &'static [&'static str],
    /// `collection`: record collection NSIDs (repo permissions).
    pub collection: &'static [&'static str],
    /// `lxm`: XRPC method NSIDs (rpc permissions).
    pub lxm: &'static [&'static str],
    /// `aud`: the audience service DID for rpc permissions.
    pub aud: Option<&'static str>,
    /// `inheritAud`: take `aud` from the scope that includes the permission set.
    pub inherit_aud: bool,
    /// `accept`: blob MIME type patterns (blob permissions).
    pub accept: &'static [&'static str],
    /// `attr`: the account or identity attribute (account/identity permissions).
    pub attr: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND: Permission = Permission {
        resource: "rpc",
        action: &[],
        collection: &[],
        lxm: &["blue.catbird.mls.sendMessage"],
        aud: Some("did:web:mls.example.com"),
        inherit_aud: false,
        accept: &[],
        attr: None,
    };

    #[test]
    fn usable_in_constants() {
        const SET: &[Permission] = &[SEND];
        assert_eq!(SET[0].lxm, ["blue.catbird.mls.sendMessage"]);
        assert_eq!(SET[0], SEND);
    }
}
