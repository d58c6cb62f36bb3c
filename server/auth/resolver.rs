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
/// [`file_name`]). For local runs and tests: no network, and by default no
/// cache (files are re-read, so edits take effect at once). With a cache
/// ([`DirectoryResolver::cached`]) a token costs what it costs in
/// production, where almost every document comes from the cache: the
/// benchmark harness runs the service so.
#[derive(Debug)]
pub struct DirectoryResolver {
    directory: PathBuf,
    cache: DocumentCache,
}

impl DirectoryResolver {
    /// Resolves from `directory`, reading the file on every call.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self::cached(directory, Duration::ZERO)
    }

    /// Resolves from `directory`, keeping each document for `ttl`.
    pub fn cached(directory: impl Into<PathBuf>, ttl: Duration) -> Self {
        Self {
            directory: directory.into(),
            cache: DocumentCache::new(ttl),
        }
    }

    /// The directory documents are read from.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    async fn read(&self, did: &Did) -> Result<DidDocument, AuthError> {
        let path = self.directory.join(file_name(did));
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|error| AuthError::UnresolvableDid(format!("{}: {error}", path.display())))?;
        let document = DidDocument::parse_for(did, &bytes)?;
        self.cache.insert(did, &document);
        Ok(document)
    }
}

impl DidResolver for DirectoryResolver {
    async fn resolve(&self, did: &Did) -> Result<DidDocument, AuthError> {
        match self.cache.get(did, self.cache.ttl) {
            Some(document) => Ok(document),
            None => self.read(did).await,
        }
    }

    /// Always the file: reading it costs no one else anything.
    async fn refresh(&self, did: &Did) -> Result<DidDocument, AuthError> {
        self.read(did).await
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
    cache: DocumentCache,
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
            cache: DocumentCache::new(ttl),
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

        self.cache.insert(did, &document);
        Ok(document)
    }
}

impl DidResolver for NetworkResolver {
    async fn resolve(&self, did: &Did) -> Result<DidDocument, AuthError> {
        match self.cache.get(did, self.cache.ttl) {
            Some(document) => Ok(document),
            None => self.fetch(did).await,
        }
    }

    async fn refresh(&self, did: &Did) -> Result<DidDocument, AuthError> {
        match self.cache.get(did, MIN_REFRESH_AGE.min(self.cache.ttl)) {
            Some(document) => Ok(document),
            None => self.fetch(did).await,
        }
    }
}

/// Resolved documents kept in memory for a time, at most
/// [`MAX_CACHE_ENTRIES`] of them.
#[derive(Debug)]
struct DocumentCache {
    ttl: Duration,
    entries: Mutex<HashMap<Did, (Instant, DidDocument)>>,
}

impl DocumentCache {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Did, (Instant, DidDocument)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The document of `did` if it was resolved less than `max_age` ago.
    fn get(&self, did: &Did, max_age: Duration) -> Option<DidDocument> {
        self.entries()
            .get(did)
            .filter(|(resolved, _)| resolved.elapsed() < max_age)
            .map(|(_, document)| document.clone())
    }

    /// Keeps `document` (nothing, without a TTL); when full, expired
    /// entries go first, then the oldest.
    fn insert(&self, did: &Did, document: &DidDocument) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= MAX_CACHE_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (resolved, _)| resolved.elapsed() < ttl);
            if entries.len() >= MAX_CACHE_ENTRIES
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (resolved, _))| *resolved)
                    .map(|(did, _)| did.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(did.clone(), (Instant::now(), document.clone()));
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

    #[tokio::test]
    async fn a_directory_with_a_cache_keeps_documents_and_refresh_rereads_them() {
        use catbird_mls_client::identity::create_identity;
        use catbird_mls_core::auth::keys::Algorithm;
        let dir = tempfile::tempdir().unwrap();
        let alice = create_identity(dir.path(), "alice", Algorithm::Es256k).unwrap();
        let uncached = DirectoryResolver::new(dir.path());
        let cached = DirectoryResolver::cached(dir.path(), Duration::from_secs(60));
        let document = uncached.resolve(&alice.did).await.unwrap();
        assert_eq!(cached.resolve(&alice.did).await.unwrap(), document);

        std::fs::remove_file(dir.path().join(file_name(&alice.did))).unwrap();
        assert_eq!(cached.resolve(&alice.did).await.unwrap(), document);
        assert!(uncached.resolve(&alice.did).await.is_err());
        assert!(cached.refresh(&alice.did).await.is_err());
    }

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
