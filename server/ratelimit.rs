//! Rate limits per client IP and per caller DID, by method class, enforced
//! by the auth hook: the IP budget before the token is looked at (so a flood
//! of bad tokens is cut off), the caller's budget only after the token
//! verified (so nobody can spend another user's budget by naming them in a
//! forged token). Budgets are per process (GCRA, via `governor`): with
//! several processes behind a load balancer each enforces its own share.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::ConnectInfo;
use catbird_generated::lexicons::blue::catbird::mls::ROUTES;
use catbird_generated::runtime::xrpc::http::HeaderName;
use catbird_generated::runtime::xrpc::http::request::Parts;
use catbird_generated::runtime::xrpc::{MethodKind, XrpcError};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// What a method does, for its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodClass {
    /// Queries and subscriptions.
    Read,
    /// Procedures.
    Write,
    /// `getKeyPackages`: each call uses up other users' KeyPackages, so
    /// exhausting them is an attack; it has its own, stricter budget.
    KeyPackageFetch,
}

impl MethodClass {
    const ALL: [Self; 3] = [Self::Read, Self::Write, Self::KeyPackageFetch];

    /// The class of the method `nsid`.
    pub fn of(nsid: &str) -> Self {
        if nsid == "blue.catbird.mls.getKeyPackages" {
            return Self::KeyPackageFetch;
        }
        match ROUTES.iter().find(|route| route.nsid == nsid) {
            Some(route) if route.kind == MethodKind::Procedure => Self::Write,
            _ => Self::Read,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::KeyPackageFetch => "key_package_fetch",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Requests per minute for each class; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassLimits {
    pub read: Option<NonZeroU32>,
    pub write: Option<NonZeroU32>,
    pub key_package_fetch: Option<NonZeroU32>,
}

impl ClassLimits {
    fn of(&self, class: MethodClass) -> Option<NonZeroU32> {
        match class {
            MethodClass::Read => self.read,
            MethodClass::Write => self.write,
            MethodClass::KeyPackageFetch => self.key_package_fetch,
        }
    }
}

/// Rate-limit settings.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub per_caller: ClassLimits,
    pub per_ip: ClassLimits,
    /// The header a trusted reverse proxy puts the client address in (its
    /// last entry is used); without it, the connection's peer address.
    pub client_ip_header: Option<HeaderName>,
}

/// One keyed limiter per class; `None` where the class is unlimited.
struct Budgets<K: std::hash::Hash + Eq + Clone>([Option<DefaultKeyedRateLimiter<K>>; 3]);

impl<K: std::hash::Hash + Eq + Clone> Budgets<K> {
    fn new(limits: &ClassLimits) -> Self {
        Self(MethodClass::ALL.map(|class| {
            limits
                .of(class)
                .map(|per_minute| DefaultKeyedRateLimiter::dashmap(Quota::per_minute(per_minute)))
        }))
    }

    /// Spends one request of `key`'s budget, or says how long to wait.
    fn spend(&self, class: MethodClass, key: &K) -> Result<(), Duration> {
        match &self.0[class.index()] {
            Some(limiter) => limiter
                .check_key(key)
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
            None => Ok(()),
        }
    }

    fn forget_idle(&self) {
        for limiter in self.0.iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The service's rate limits.
pub struct RateLimits {
    per_caller: Budgets<String>,
    per_ip: Budgets<IpAddr>,
    client_ip_header: Option<HeaderName>,
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            per_caller: Budgets::new(&settings.per_caller),
            per_ip: Budgets::new(&settings.per_ip),
            client_ip_header: settings.client_ip_header.clone(),
        }
    }

    /// Spends one request from the client address's budget.
    pub fn check_ip(&self, class: MethodClass, ip: IpAddr) -> Result<(), XrpcError> {
        self.per_ip
            .spend(class, &ip)
            .map_err(|wait| rejected(class, "ip", wait))
    }

    /// Spends one request from a verified caller's budget.
    pub fn check_caller(&self, class: MethodClass, did: &str) -> Result<(), XrpcError> {
        self.per_caller
            .spend(class, &did.to_owned())
            .map_err(|wait| rejected(class, "caller", wait))
    }

    /// Drops the state of callers and addresses whose budgets are full
    /// again, so memory follows the active clients, not all clients ever.
    pub fn forget_idle(&self) {
        self.per_caller.forget_idle();
        self.per_ip.forget_idle();
    }

    /// The client's address: from the trusted proxy's header if one is
    /// configured, else the connection's peer.
    pub fn client_ip(&self, request: &Parts) -> Option<IpAddr> {
        match &self.client_ip_header {
            Some(header) => request
                .headers
                .get_all(header)
                .iter()
                .next_back()
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.rsplit(',').next())
                .and_then(|value| value.trim().parse().ok()),
            None => request
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        }
    }
}

fn rejected(class: MethodClass, scope: &'static str, wait: Duration) -> XrpcError {
    metrics::counter!("rate_limit_rejections_total", "class" => class.label(), "scope" => scope)
        .increment(1);
    XrpcError::rate_limited(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_route_table() {
        assert_eq!(
            MethodClass::of("blue.catbird.mls.getMessages"),
            MethodClass::Read
        );
        assert_eq!(
            MethodClass::of("blue.catbird.mls.sendMessage"),
            MethodClass::Write
        );
        assert_eq!(
            MethodClass::of("blue.catbird.mls.getKeyPackages"),
            MethodClass::KeyPackageFetch
        );
    }

    #[test]
    fn budgets_are_per_key_and_per_class() {
        let limits = RateLimits::new(&RateLimitSettings {
            per_caller: ClassLimits {
                read: None,
                write: NonZeroU32::new(2),
                key_package_fetch: NonZeroU32::new(1),
            },
            per_ip: ClassLimits {
                read: None,
                write: None,
                key_package_fetch: None,
            },
            client_ip_header: None,
        });
        let write = MethodClass::Write;
        assert!(limits.check_caller(write, "did:plc:a").is_ok());
        assert!(limits.check_caller(write, "did:plc:a").is_ok());
        let refused = limits.check_caller(write, "did:plc:a").unwrap_err();
        assert_eq!(refused.status().as_u16(), 429);
        assert!(limits.check_caller(write, "did:plc:b").is_ok());
        assert!(limits.check_caller(MethodClass::Read, "did:plc:a").is_ok());
        assert!(
            limits
                .check_caller(MethodClass::KeyPackageFetch, "did:plc:a")
                .is_ok()
        );
        assert!(
            limits
                .check_caller(MethodClass::KeyPackageFetch, "did:plc:a")
                .is_err()
        );
    }
}
