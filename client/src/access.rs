//! Where a client's calls go and who vouches for them: the one place that
//! decides it, for the generated client and the event stream alike.
//!
//! - [`Access::Direct`]: straight to the service, each call with a token
//!   this client mints with a key it holds (local identities, tests).
//! - [`Access::Pds`] with [`PdsMode::Proxy`]: every call goes to the user's
//!   PDS with `atproto-proxy: <service DID>#atproto_mls`; the PDS checks the
//!   session, mints the service-auth token and forwards the call.
//! - [`Access::Pds`] with [`PdsMode::ServiceAuth`]: every call goes straight
//!   to the service, with a token the PDS issued for it
//!   (`com.atproto.server.getServiceAuth`, `lxm` = the method).
//!
//! A PDS forwards calls, not WebSockets: a proxied client opens its event
//! stream at the service itself, with a one-use ticket it asked for through
//! the PDS ([`StreamAccess::Ticket`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use catbird_generated::runtime::Did;
//! use catbird_mls_client::{Access, Device, PdsMode, PdsSession, Service};
//!
//! let session = PdsSession::login("https://pds.example.com", "alice.example.com", "app password").await?;
//! let access = Access::Pds {
//!     session,
//!     // or PdsMode::ServiceAuth: calls straight to the service, tokens from getServiceAuth
//!     mode: PdsMode::Proxy,
//!     service: Service {
//!         did: Did::new("did:web:mls.example.com")?,
//!         url: "https://mls.example.com".to_owned(),
//!     },
//! };
//! let mut phone = Device::with_access(&access, "phone")?;
//! phone.publish_key_packages(50).await?;
//! let events = phone.subscribe().await?; // the ticket through the PDS, the stream at the service
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use catbird_generated::lexicons::blue::catbird::mls::Client;
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::XrpcClient;
use catbird_generated::runtime::xrpc::http::{HeaderName, HeaderValue};

use crate::identity::{self, LocalIdentity};
use crate::pds::PdsSession;

/// The header that asks a PDS to forward a call to a service.
pub const PROXY_HEADER: &str = "atproto-proxy";

/// How long a token from getServiceAuth is asked to live: one call's time.
const SERVICE_AUTH_LIFETIME: Duration = Duration::from_secs(60);

/// The delivery service: what tokens are for, and where it is.
#[derive(Debug, Clone)]
pub struct Service {
    /// Its DID: the `aud` of every token, and the target of `atproto-proxy`.
    pub did: Did,
    /// Its base URL, e.g. `https://mls.example.com`.
    pub url: String,
}

/// Which way a PDS vouches for the calls of [`Access::Pds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdsMode {
    /// Calls go to the PDS, which forwards them (`atproto-proxy`).
    Proxy,
    /// Calls go to the service, with tokens from the PDS's getServiceAuth.
    ServiceAuth,
}

/// How a user's client reaches the service.
#[derive(Debug, Clone)]
pub enum Access {
    /// Straight to the service, with tokens minted from a local identity.
    Direct {
        /// The user, with their key.
        identity: LocalIdentity,
        /// The service.
        service: Service,
    },
    /// Through a logged-in PDS account.
    Pds {
        /// The login.
        session: PdsSession,
        /// Proxied calls, or tokens from the PDS.
        mode: PdsMode,
        /// The service.
        service: Service,
    },
}

/// How a device's event stream authenticates its upgrade.
#[derive(Debug, Clone)]
pub enum StreamAccess {
    /// With the token of the device's client, at the client's URL.
    Token,
    /// With a one-use ticket from getSubscriptionTicket (asked through the
    /// device's client), at the service itself: `service` is a client of the
    /// service without tokens.
    Ticket {
        /// Where the stream is opened.
        service: Client,
    },
}

impl Access {
    /// The user's DID.
    pub fn did(&self) -> &Did {
        match self {
            Self::Direct { identity, .. } => &identity.did,
            Self::Pds { session, .. } => session.did(),
        }
    }

    /// The service this access reaches.
    pub fn service(&self) -> &Service {
        match self {
            Self::Direct { service, .. } | Self::Pds { service, .. } => service,
        }
    }

    /// The generated client acting as the user: every call carries a fresh
    /// token for its method (or the session's, to the PDS).
    pub fn client(&self) -> Client {
        match self {
            Self::Direct { identity, service } => {
                identity::service_client(&service.url, identity, &service.did)
            }
            Self::Pds {
                session,
                mode: PdsMode::Proxy,
                service,
            } => {
                let session = session.clone();
                let xrpc = XrpcClient::new(session.pds_url())
                    .with_header(HeaderName::from_static(PROXY_HEADER), proxy_target(service))
                    .with_async_token_source(move |_method| {
                        let session = session.clone();
                        async move { Ok(Some(session.access_token().await?)) }
                    });
                Client::new(xrpc)
            }
            Self::Pds {
                session,
                mode: PdsMode::ServiceAuth,
                service,
            } => {
                let session = session.clone();
                let audience = service.did.clone();
                let xrpc =
                    XrpcClient::new(service.url.clone()).with_async_token_source(move |method| {
                        let (session, audience) = (session.clone(), audience.clone());
                        async move {
                            let token = session
                                .service_auth(&audience, method, SERVICE_AUTH_LIFETIME)
                                .await?;
                            Ok(Some(token))
                        }
                    });
                Client::new(xrpc)
            }
        }
    }

    /// How the user's event streams authenticate: a proxied client cannot
    /// open one through its PDS, so it uses a ticket at the service.
    pub fn stream(&self) -> StreamAccess {
        match self {
            Self::Pds {
                mode: PdsMode::Proxy,
                service,
                ..
            } => StreamAccess::Ticket {
                service: Client::new(XrpcClient::new(service.url.clone())),
            },
            Self::Direct { .. } | Self::Pds { .. } => StreamAccess::Token,
        }
    }
}

/// `<service DID>#atproto_mls`, the value of `atproto-proxy`.
fn proxy_target(service: &Service) -> HeaderValue {
    let target = format!("{}{}", service.did, catbird_mls_core::SERVICE_ID);
    // A DID has no characters a header value refuses (checked by its type).
    HeaderValue::from_str(&target).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// One line on how the calls travel, for logs and the demo.
impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct { service, .. } => write!(
                f,
                "calls {} with tokens minted with its own key",
                service.url
            ),
            Self::Pds {
                session,
                mode: PdsMode::Proxy,
                service,
            } => write!(
                f,
                "calls through the PDS {} with {PROXY_HEADER}: {}{}; event stream at {} with a ticket asked through the PDS",
                session.pds_url(),
                service.did,
                catbird_mls_core::SERVICE_ID,
                service.url
            ),
            Self::Pds {
                session,
                mode: PdsMode::ServiceAuth,
                service,
            } => write!(
                f,
                "calls {} with tokens from the PDS's getServiceAuth ({})",
                service.url,
                session.pds_url()
            ),
        }
    }
}
