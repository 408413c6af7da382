//! Failed authentication, throttled per client address (the admin token on the API and on the
//! dashboard's login): each address may fail `AUTH_FAILURES_PER_MINUTE` times at once, then once
//! each sixtieth of a minute that many are allowed in (a token bucket); while it has no attempt
//! left it is answered 429 with `Retry-After`, before the token is even compared. Kept in the
//! process: behind a load balancer each process allows as many.
//!
//! The address is the connection's peer, or — when that peer is one of `TRUSTED_PROXIES` — the
//! nearest address in `X-Forwarded-For` that is not a trusted proxy: a client cannot choose its
//! own bucket by sending that header.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// Addresses tracked at most; past it those that have their whole allowance again are dropped.
const TRACKED: usize = 10_000;

pub struct AuthThrottle {
    per_minute: f64,
    trusted: Vec<IpAddr>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Failures the address may still make.
    left: f64,
    at: Instant,
}

impl AuthThrottle {
    /// `AUTH_FAILURES_PER_MINUTE` and `TRUSTED_PROXIES`.
    pub fn from_config(c: &crate::config::Config) -> AuthThrottle {
        AuthThrottle::new(c.auth_failures_per_minute, c.trusted_proxies.clone())
    }

    pub fn new(per_minute: u32, trusted: Vec<IpAddr>) -> AuthThrottle {
        AuthThrottle { per_minute: f64::from(per_minute.max(1)), trusted, buckets: Mutex::new(HashMap::new()) }
    }

    /// The bucket of `ip` as of `now`, refilled for the time since it was last seen.
    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let gained = now.duration_since(b.at).as_secs_f64() * self.per_minute / 60.0;
        Bucket { left: (b.left + gained).min(self.per_minute), at: now }
    }

    /// `Err(wait)` while `ip` may not try again for `wait`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(&ip).map(|b| self.refilled(*b, now)) {
            Some(b) if b.left < 1.0 => Err(Duration::from_secs_f64((1.0 - b.left) * 60.0 / self.per_minute)),
            _ => Ok(()),
        }
    }

    /// `ip` gave a wrong token.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let full = Bucket { left: self.per_minute, at: now };
        let b = buckets.get(&ip).map_or(full, |b| self.refilled(*b, now));
        buckets.insert(ip, Bucket { left: b.left - 1.0, ..b });
        if buckets.len() > TRACKED {
            buckets.retain(|_, b| self.refilled(*b, now).left < self.per_minute);
        }
    }

    /// The client's address: the peer, or what trusted proxies say it is.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
        client_address(&self.trusted, peer, headers)
    }
}

/// The client's address: `peer`, or, when `peer` is one of the `trusted` proxies, the nearest
/// `X-Forwarded-For` hop that is not.
pub(crate) fn client_address(trusted: &[IpAddr], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    // From the nearest hop back: the first that is not a proxy we trust. An address that
    // does not parse ends the walk there (the hop that wrote it is not to be believed).
    for hop in forwarded.iter().rev() {
        match hop {
            Some(ip) if trusted.contains(ip) => continue,
            Some(ip) => return *ip,
            None => return peer,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_stopped_after_its_allowance_and_others_are_not() {
        let t = AuthThrottle::new(3, Vec::new());
        let (a, b) = (ip("203.0.113.7"), ip("203.0.113.8"));
        for _ in 0..3 {
            assert!(t.check(a).is_ok());
            t.failed(a);
        }
        let wait = t.check(a).unwrap_err();
        assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20), "{wait:?}");
        assert!(t.check(b).is_ok(), "another address has its own allowance");
    }

    #[test]
    fn the_forwarded_address_counts_only_behind_a_trusted_proxy() {
        let t = AuthThrottle::new(10, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.0.0.3".parse().unwrap());
        let proxy = Some("10.0.0.2:4000".parse().unwrap());
        assert_eq!(t.client(proxy, &h), ip("203.0.113.9"), "the nearest hop not ours");
        let stranger = Some("192.0.2.5:4000".parse().unwrap());
        assert_eq!(t.client(stranger, &h), ip("192.0.2.5"), "a client cannot pick its own address");
        h.insert("x-forwarded-for", "junk, 10.0.0.3".parse().unwrap());
        assert_eq!(t.client(proxy, &h), ip("10.0.0.2"));
        assert_eq!(t.client(None, &HeaderMap::new()), ip("0.0.0.0"));
    }
}
