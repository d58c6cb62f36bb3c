//! Where DID documents come from.
//!
//! A token is only as good as the key that checks it, and that key is the
//! `#atproto` verification method of the issuer's DID document. Production
//! fetches documents from the PLC directory (`did:plc`) or the DID's own host
//! (`did:web`) through [`NetworkResolver`]; local runs and tests read them
//! from a directory through [`DirectoryResolver`]. Both check that the
//! document is the one asked for (`id` equals the DID).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::reqwest;
use catbird_mls_core::auth::AuthError;
use catbird_mls_core::auth::did::{DidDocument, file_name};

/// Finds the DID document of a DID.
pub trait DidResolver: Send + Sync {
    /// The document, possibly from a cache.
    fn resolve(&self, did: &Did) -> impl Future<Output = Result<DidDocument, AuthError>> + Send;

    /// The document, bypassing caches where that makes sense. The verifier
    /// calls this once when a signature fails against a cached document, so a
    /// rotated key is picked up without waiting for the cache to expire.
    fn refresh(&self, did: &Did) -> impl Future<Output = Result<DidDocument, AuthError>> + Send {
        self.resolve(did)
    }
}

/// Reads DID documents from a directory, one file per DID (see
/// [`file_name`]). For local runs and tests: no network, no cache (files
/// are re-read, so edits take effect at once).
#[derive(Debug, Clone)]
pub struct DirectoryResolver {
    directory: PathBuf,
}

impl DirectoryResolver {
    /// Resolves from `directory`.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.into(),
        }
    }

    /// The directory documents are read from.
    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

impl DidResolver for DirectoryResolver {
    async fn resolve(&self, did: &Did) -> Result<DidDocument, AuthError> {
        let path = self.directory.join(file_name(did));
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|error| AuthError::UnresolvableDid(format!("{}: {error}", path.display())))?;
        DidDocument::parse_for(did, &bytes)
    }
}

/// How long a fetched document is trusted before it is fetched again.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60 * 60);
/// A cached document younger than this is not re-fetched by
/// [`DidResolver::refresh`]: bad signatures must not turn into a stream of
/// requests to the PLC directory.
const MIN_REFRESH_AGE: Duration = Duration::from_secs(60);
/// DID documents are small; anything bigger is refused unread.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// At most this many documents are cached; beyond it, expired entries are
/// dropped, then the oldest.
const MAX_CACHE_ENTRIES: usize = 100_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves `did:plc` through a PLC directory and `did:web` through
/// `https://<host>/.well-known/did.json`, with an in-memory TTL cache.
#[derive(Debug)]
pub struct NetworkResolver {
    http: reqwest::Client,
    plc_directory: String,
    ttl: Duration,
    cache: Mutex<HashMap<Did, (Instant, DidDocument)>>,
}

impl NetworkResolver {
    /// Resolves through `plc_directory` (e.g. `https://plc.directory`),
    /// caching documents for `ttl`.
    pub fn new(plc_directory: impl Into<String>, ttl: Duration) -> Result<Self, AuthError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // A DID document is served where the DID says; following
            // redirects would let that host point us anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| AuthError::Internal(format!("building the HTTP client: {error}")))?;
        Ok(Self {
            http,
            plc_directory: plc_directory.into().trim_end_matches('/').to_owned(),
            ttl,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The URL the document of `did` is fetched from. `did:web` is supported
    /// at host level only (no paths), as atproto requires.
    pub fn document_url(&self, did: &Did) -> Result<String, AuthError> {
        let did_str = did.as_str();
        if did_str.starts_with("did:plc:") {
            Ok(format!("{}/{did_str}", self.plc_directory))
        } else if let Some(host) = did_str.strip_prefix("did:web:") {
            if host.contains(':') || host.contains('%') || host.is_empty() {
                return Err(AuthError::UnresolvableDid(format!(
                    "{did_str}: only host-level did:web is supported"
                )));
            }
            Ok(format!("https://{host}/.well-known/did.json"))
        } else {
            Err(AuthError::UnresolvableDid(format!(
                "{did_str}: unsupported DID method"
            )))
        }
    }

    fn cached(&self, did: &Did, max_age: Duration) -> Option<DidDocument> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .get(did)
            .filter(|(fetched, _)| fetched.elapsed() < max_age)
            .map(|(_, document)| document.clone())
    }

    async fn fetch(&self, did: &Did) -> Result<DidDocument, AuthError> {
        let url = self.document_url(did)?;
        let unresolvable = |error: &dyn std::fmt::Display| {
            AuthError::UnresolvableDid(format!("{did} from {url}: {error}"))
        };
        let mut response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unresolvable(&e))?;
        if !response.status().is_success() {
            return Err(unresolvable(&response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unresolvable(&e))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(unresolvable(&"document too large"));
            }
            body.extend_from_slice(&chunk);
        }
        let document = DidDocument::parse_for(did, &body)?;
        tracing::debug!(%did, "resolved DID document");

        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= MAX_CACHE_ENTRIES {
            let ttl = self.ttl;
            cache.retain(|_, (fetched, _)| fetched.elapsed() < ttl);
            if cache.len() >= MAX_CACHE_ENTRIES
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (fetched, _))| *fetched)
                    .map(|(did, _)| did.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(did.clone(), (Instant::now(), document.clone()));
        Ok(document)
    }
}

impl DidResolver for NetworkResolver {
    async fn resolve(&self, did: &Did) -> Result<DidDocument, AuthError> {
        match self.cached(did, self.ttl) {
            Some(document) => Ok(document),
            None => self.fetch(did).await,
        }
    }

    async fn refresh(&self, did: &Did) -> Result<DidDocument, AuthError> {
        match self.cached(did, MIN_REFRESH_AGE.min(self.ttl)) {
            Some(document) => Ok(document),
            None => self.fetch(did).await,
        }
    }
}

/// The resolver the configuration picks at startup: a directory for local
/// runs, the network in production.
#[derive(Debug)]
pub enum Resolver {
    /// See [`DirectoryResolver`].
    Directory(DirectoryResolver),
    /// See [`NetworkResolver`].
    Network(NetworkResolver),
}

impl DidResolver for Resolver {
    async fn resolve(&self, did: &Did) -> Result<DidDocument, AuthError> {
        match self {
            Self::Directory(resolver) => resolver.resolve(did).await,
            Self::Network(resolver) => resolver.resolve(did).await,
        }
    }

    async fn refresh(&self, did: &Did) -> Result<DidDocument, AuthError> {
        match self {
            Self::Directory(resolver) => resolver.refresh(did).await,
            Self::Network(resolver) => resolver.refresh(did).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_urls() {
        let resolver = NetworkResolver::new("https://plc.example/", DEFAULT_CACHE_TTL).unwrap();
        let url = |did: &str| resolver.document_url(&Did::new(did).unwrap());
        assert_eq!(
            url("did:plc:abc").unwrap(),
            "https://plc.example/did:plc:abc"
        );
        assert_eq!(
            url("did:web:example.com").unwrap(),
            "https://example.com/.well-known/did.json"
        );
        assert!(url("did:web:example.com:user").is_err());
        assert!(url("did:web:localhost%3A8080").is_err());
        assert!(url("did:key:zQ3sh").is_err());
    }
}
