//! Rate limits, enforced by the auth hook: per verified caller DID, by
//! method class, spent only after the token verified (so a forged token
//! never spends the budget of the DID it names); and per client address,
//! spent by requests that fail authentication, checked before any token is
//! looked at, so a flood of bad tokens is cut off cheaply while the many
//! valid users behind one address (a PDS proxying for them) are limited
//! only by their own budgets. Budgets are per process (GCRA, via
//! `governor`): with several processes each enforces its own share.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use catbird_generated::lexicons::blue::catbird::mls::{ROUTES, get_key_packages};
use catbird_generated::runtime::xrpc::http::HeaderName;
use catbird_generated::runtime::xrpc::http::request::Parts;
use catbird_generated::runtime::xrpc::{MethodKind, XrpcError};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// What a method does, for its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodClass {
    /// Queries and subscriptions.
    Read,
    /// Procedures.
    Write,
    /// `getKeyPackages`: each call uses up other users' KeyPackages, so
    /// exhausting them is an attack; it has its own, stricter budget,
    /// counted in users asked for.
    KeyPackageFetch,
}

impl MethodClass {
    const ALL: [Self; 3] = [Self::Read, Self::Write, Self::KeyPackageFetch];

    /// The class of the method `nsid`.
    pub fn of(nsid: &str) -> Self {
        if nsid == get_key_packages::NSID {
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
    /// Users asked for with getKeyPackages, per minute.
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
    /// Failed authentications per client address.
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

    /// Spends `units` of `key`'s budget, or says how long to wait; `None`
    /// when `units` exceed the whole budget.
    fn spend(
        &self,
        class: MethodClass,
        key: &K,
        units: NonZeroU32,
    ) -> Result<(), Option<Duration>> {
        let Some(limiter) = &self.0[class.index()] else {
            return Ok(());
        };
        match limiter.check_key_n(key, units) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Some(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            Err(_insufficient) => Err(None),
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
    /// Addresses (and classes) over their failure budget, until when.
    blocked: Mutex<HashMap<(IpAddr, MethodClass), Instant>>,
    client_ip_header: Option<HeaderName>,
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            per_caller: Budgets::new(&settings.per_caller),
            per_ip: Budgets::new(&settings.per_ip),
            blocked: Mutex::new(HashMap::new()),
            client_ip_header: settings.client_ip_header.clone(),
        }
    }

    /// Refuses an address that spent its failed-authentication budget,
    /// before its token is looked at.
    pub fn check_ip(&self, class: MethodClass, ip: IpAddr) -> Result<(), XrpcError> {
        let blocked = self
            .blocked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        match blocked.get(&(address_key(ip), class)) {
            Some(until) if *until > now => Err(rejected(class, "ip", *until - now)),
            _ => Ok(()),
        }
    }

    /// Charges a failed authentication to the address; past its budget the
    /// address is refused until the budget refills.
    pub fn charge_failure(&self, class: MethodClass, ip: IpAddr) -> Result<(), XrpcError> {
        let key = address_key(ip);
        match self.per_ip.spend(class, &key, NonZeroU32::MIN) {
            Ok(()) => Ok(()),
            Err(wait) => {
                let wait = wait.unwrap_or(Duration::from_secs(60));
                let mut blocked = self
                    .blocked
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                blocked.insert((key, class), Instant::now() + wait);
                Err(rejected(class, "ip", wait))
            }
        }
    }

    /// Spends `units` of a verified caller's budget (one per request; one
    /// per user asked for with getKeyPackages).
    pub fn check_caller(&self, class: MethodClass, did: &str, units: u32) -> Result<(), XrpcError> {
        let Some(units) = NonZeroU32::new(units) else {
            return Ok(());
        };
        self.per_caller
            .spend(class, &did.to_owned(), units)
            .map_err(|wait| match wait {
                Some(wait) => rejected(class, "caller", wait),
                None => XrpcError::invalid_request(format!(
                    "this asks for {units} at once, more than this service allows a caller per minute"
                )),
            })
    }

    /// Drops the state of callers and addresses whose budgets are full
    /// again, so memory follows the active clients, not all clients ever.
    pub fn forget_idle(&self) {
        self.per_caller.forget_idle();
        self.per_ip.forget_idle();
        let now = Instant::now();
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        blocked.retain(|_, until| *until > now);
    }

    /// The client's address: from the trusted proxy's header if one is
    /// configured and holds an address (its last entry), else the
    /// connection's peer.
    pub fn client_ip(&self, request: &Parts) -> Option<IpAddr> {
        let peer = request
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let Some(header) = &self.client_ip_header else {
            return peer;
        };
        request
            .headers
            .get_all(header)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                value
                    .rsplit(',')
                    .map(str::trim)
                    .find(|entry| !entry.is_empty())
            })
            .and_then(parse_address)
            .or(peer)
    }
}

/// `203.0.113.7`, `2001:db8::1`, or either with a port.
fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|address| address.ip()))
        .ok()
}

/// The budget key of an address: IPv6 clients get a /64 each, so rotating
/// through one allocation does not multiply the budget.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
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
    use catbird_generated::lexicons::blue::catbird::mls::{get_messages, send_message};

    #[test]
    fn classes_follow_the_route_table() {
        assert_eq!(MethodClass::of(get_messages::NSID), MethodClass::Read);
        assert_eq!(MethodClass::of(send_message::NSID), MethodClass::Write);
        assert_eq!(
            MethodClass::of(get_key_packages::NSID),
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
        assert!(limits.check_caller(write, "did:plc:a", 1).is_ok());
        assert!(limits.check_caller(write, "did:plc:a", 1).is_ok());
        let refused = limits.check_caller(write, "did:plc:a", 1).unwrap_err();
        assert_eq!(refused.status().as_u16(), 429);
        assert!(limits.check_caller(write, "did:plc:b", 1).is_ok());
        assert!(
            limits
                .check_caller(MethodClass::Read, "did:plc:a", 1)
                .is_ok()
        );
        let fetch = MethodClass::KeyPackageFetch;
        assert!(limits.check_caller(fetch, "did:plc:a", 1).is_ok());
        assert!(limits.check_caller(fetch, "did:plc:a", 1).is_err());
        // More at once than the whole budget: a plain refusal, not a wait.
        let too_many = limits.check_caller(fetch, "did:plc:c", 2).unwrap_err();
        assert_eq!(too_many.status().as_u16(), 400);
    }

    #[test]
    fn addresses_are_keyed_by_ipv4_or_ipv6_64() {
        let key = |text: &str| address_key(text.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), key("2001:db8:1:2:ffff::1"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:203.0.113.7"), key("203.0.113.7"));
        assert_eq!(parse_address("203.0.113.7:443"), "203.0.113.7".parse().ok());
        assert_eq!(
            parse_address("[2001:db8::1]:443"),
            "2001:db8::1".parse().ok()
        );
        assert_eq!(parse_address("unknown"), None);
    }
}
