//! The service's own DID document, when its DID is a did:web: a PDS
//! resolves `did:web:<host>` at `https://<host>/.well-known/did.json` to
//! find where to proxy (`atproto-proxy: <service DID>#atproto_mls`). A
//! did:plc service DID is published through the PLC directory instead, and
//! the path answers 404.

use catbird_generated::runtime::Did;
use serde_json::{Value, json};

use catbird_mls_core::{SERVICE_ID, SERVICE_TYPE};

/// The document of `did` with its service at `endpoint`; `None` unless
/// `did` is a did:web.
pub fn document(did: &Did, endpoint: &str) -> Option<Value> {
    did.as_str().starts_with("did:web:").then(|| {
        json!({
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": did.as_str(),
            "service": [{
                "id": SERVICE_ID,
                "type": SERVICE_TYPE,
                "serviceEndpoint": endpoint,
            }],
        })
    })
}
