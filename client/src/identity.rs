//! Local identities: real keys and DID documents on disk, so local runs and
//! tests authenticate exactly like production, the service reading the
//! documents from the same directory instead of the network.
//!
//! Layout of an identity directory:
//! - `<did file name>` (see [`catbird_mls_core::auth::did::file_name`]): the
//!   DID document, e.g. `did_plc_abcd....json`, which the service's
//!   directory resolver serves;
//! - `keys/<did file name without .json>.key`: the private key in multibase
//!   form (see [`catbird_mls_core::auth::keys`]), mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catbird_generated::lexicons::blue::catbird::mls::Client;
use catbird_generated::runtime::xrpc::XrpcClient;
use catbird_generated::runtime::{Did, Handle};
use sha2::{Digest, Sha256};

use catbird_mls_core::auth::did::{self, DidDocument, VerificationMethod};
use catbird_mls_core::auth::jwt::{self, Claims};
use catbird_mls_core::auth::keys::{Algorithm, KeyError, PrivateKey};

/// A DID whose private key we hold.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    /// The DID.
    pub did: Did,
    /// The handle in the document's `alsoKnownAs` (`<name>.test`), if any.
    pub handle: Option<Handle>,
    /// The signing key.
    pub key: PrivateKey,
}

/// Why a local identity could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum LocalIdentityError {
    /// The name does not make a valid handle `<name>.test`.
    #[error("{0:?} is not a valid name: use letters, digits and inner hyphens")]
    InvalidName(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key could not be generated or decoded.
    #[error("{}: {source}", path.display())]
    Key {
        /// The key file (or the directory, when generating).
        path: PathBuf,
        /// The cause.
        source: KeyError,
    },
    /// The DID document on disk is unreadable or for another key.
    #[error("{}: {message}", path.display())]
    Document {
        /// The document file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Creates a new identity in `directory`: a fresh key, a `did:plc:`-shaped
/// DID derived from it (24 base32 characters of SHA-256 of the compressed
/// public key, so it looks like a real PLC DID but is not registered
/// anywhere), its DID document with an `#atproto` Multikey and
/// `alsoKnownAs: ["at://<name>.test"]`, and the key file.
pub fn create_identity(
    directory: &Path,
    name: &str,
    algorithm: Algorithm,
) -> Result<LocalIdentity, LocalIdentityError> {
    let handle = Handle::new(format!("{name}.test"))
        .ok()
        .filter(|_| !name.contains('.'))
        .ok_or_else(|| LocalIdentityError::InvalidName(name.to_owned()))?;
    let key = PrivateKey::generate(algorithm).map_err(|source| LocalIdentityError::Key {
        path: directory.to_owned(),
        source,
    })?;
    let public = key.public_key();
    let digest = Sha256::digest(public.compressed());
    let did = Did::new(format!("did:plc:{}", base32_lower(&digest[..15])))
        .map_err(|error| LocalIdentityError::InvalidName(error.to_string()))?;

    let document = DidDocument {
        context: vec![
            "https://www.w3.org/ns/did/v1".to_owned(),
            "https://w3id.org/security/multikey/v1".to_owned(),
        ],
        id: did.to_string(),
        also_known_as: vec![format!("at://{handle}")],
        verification_method: vec![VerificationMethod {
            id: format!("{did}#atproto"),
            kind: "Multikey".to_owned(),
            controller: did.to_string(),
            public_key_multibase: Some(public.to_multikey()),
        }],
    };
    let keys = directory.join("keys");
    fs::create_dir_all(&keys).map_err(|source| LocalIdentityError::Io {
        path: keys.clone(),
        source,
    })?;
    let key_path = key_path(directory, &did);
    write_new(
        &key_path,
        format!("{}\n", key.to_multibase()).as_bytes(),
        true,
    )?;
    let document_path = directory.join(did::file_name(&did));
    let mut json = serde_json::to_vec_pretty(&document).unwrap_or_default();
    json.push(b'\n');
    write_new(&document_path, &json, false)?;
    Ok(LocalIdentity {
        did,
        handle: Some(handle),
        key,
    })
}

/// Loads the identity of `did` from `directory`, checking that the key file
/// matches the document's `#atproto` key.
pub fn load_identity(directory: &Path, did: &Did) -> Result<LocalIdentity, LocalIdentityError> {
    let key_path = key_path(directory, did);
    let text = fs::read_to_string(&key_path).map_err(|source| LocalIdentityError::Io {
        path: key_path.clone(),
        source,
    })?;
    let key = PrivateKey::from_multibase(&text).map_err(|source| LocalIdentityError::Key {
        path: key_path.clone(),
        source,
    })?;

    let document_path = directory.join(did::file_name(did));
    let bytes = fs::read(&document_path).map_err(|source| LocalIdentityError::Io {
        path: document_path.clone(),
        source,
    })?;
    let document_error = |message: String| LocalIdentityError::Document {
        path: document_path.clone(),
        message,
    };
    let document =
        DidDocument::parse_for(did, &bytes).map_err(|error| document_error(error.to_string()))?;
    let public = document
        .signing_key()
        .map_err(|error| document_error(error.to_string()))?;
    if public != key.public_key() {
        return Err(document_error(format!(
            "the #atproto key is not the one in {}",
            key_path.display()
        )));
    }
    let handle = document.also_known_as.iter().find_map(|alias| {
        alias
            .strip_prefix("at://")
            .and_then(|handle| Handle::new(handle).ok())
    });
    Ok(LocalIdentity {
        did: did.clone(),
        handle,
        key,
    })
}

/// A service-auth token from `identity` for method `lxm` on the service
/// `audience`: `iat` now, `exp` now + `lifetime`, a random `jti`.
pub fn mint_token(
    identity: &LocalIdentity,
    audience: &Did,
    lxm: &str,
    lifetime: Duration,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    let claims = Claims {
        iss: identity.did.to_string(),
        aud: audience.to_string(),
        exp: now.saturating_add(lifetime),
        iat: Some(now),
        nbf: None,
        lxm: Some(lxm.to_owned()),
        jti: Some(random_jti()),
    };
    jwt::sign(&claims, &identity.key)
}

/// The generated client of the service at `url` (its DID `service`),
/// acting as `identity`: every call carries a fresh token for its method.
pub fn service_client(url: &str, identity: &LocalIdentity, service: &Did) -> Client {
    let identity = identity.clone();
    let audience = service.clone();
    let xrpc = XrpcClient::new(url.to_owned()).with_token_source(move |method| {
        Some(mint_token(&identity, &audience, method, TOKEN_LIFETIME))
    });
    Client::new(xrpc)
}

/// How long the tokens of [`service_client`] are valid: one call's time.
const TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// 128 random bits, base64url. Falls back to time and a counter if the
/// system generator fails, so a token can always be minted; uniqueness, not
/// secrecy, is what a `jti` needs.
fn random_jti() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        bytes[..8].copy_from_slice(&nanos.to_be_bytes());
        bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

fn key_path(directory: &Path, did: &Did) -> PathBuf {
    let file = did::file_name(did);
    let stem = file.strip_suffix(".json").unwrap_or(&file);
    directory.join("keys").join(format!("{stem}.key"))
}

/// Writes a file that must not exist yet; `secret` files are mode 0600.
fn write_new(path: &Path, contents: &[u8], secret: bool) -> Result<(), LocalIdentityError> {
    let io = |source| LocalIdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

/// RFC 4648 base32, lowercase, no padding (the alphabet of PLC DIDs).
fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32_lower(b""), "");
        assert_eq!(base32_lower(b"f"), "my");
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32_lower(&[0u8; 15]).len(), 24);
    }

    #[test]
    fn creates_and_loads_identities() {
        let dir = tempfile::tempdir().unwrap();
        for algorithm in [Algorithm::Es256k, Algorithm::Es256] {
            let identity = create_identity(dir.path(), "alice", algorithm).unwrap();
            assert!(identity.did.as_str().starts_with("did:plc:"));
            assert_eq!(identity.did.as_str().len(), "did:plc:".len() + 24);
            assert_eq!(identity.handle.as_ref().unwrap().as_str(), "alice.test");
            let loaded = load_identity(dir.path(), &identity.did).unwrap();
            assert_eq!(loaded.key.public_key(), identity.key.public_key());
            assert_eq!(loaded.key.algorithm(), algorithm);
            assert_eq!(loaded.handle, identity.handle);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = fs::metadata(key_path(dir.path(), &identity.did))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
        assert!(matches!(
            create_identity(dir.path(), "bad name", Algorithm::Es256k),
            Err(LocalIdentityError::InvalidName(_))
        ));
        assert!(matches!(
            create_identity(dir.path(), "a.b", Algorithm::Es256k),
            Err(LocalIdentityError::InvalidName(_))
        ));
        let unknown = Did::new("did:plc:unknown").unwrap();
        assert!(matches!(
            load_identity(dir.path(), &unknown),
            Err(LocalIdentityError::Io { .. })
        ));
    }

    #[test]
    fn load_rejects_a_key_that_does_not_match_the_document() {
        let dir = tempfile::tempdir().unwrap();
        let alice = create_identity(dir.path(), "alice", Algorithm::Es256k).unwrap();
        let other = PrivateKey::generate(Algorithm::Es256k).unwrap();
        fs::write(key_path(dir.path(), &alice.did), other.to_multibase()).unwrap();
        assert!(matches!(
            load_identity(dir.path(), &alice.did),
            Err(LocalIdentityError::Document { .. })
        ));
    }
}
