//! Peer discovery (DESIGN §4): where does the coi-proxy of a mail domain listen?
//!
//! [`Discovery::resolve`] answers for one mail domain, in this order:
//!
//! 1. A static route from `peer.routes`: its address, whatever DNS says. An IP literal is
//!    used as it is; a host name is resolved (A/AAAA) and cached like an SRV target.
//! 2. DNS SRV `_coi._udp.<domain>` (RFC 2782): records are ordered by priority, then by
//!    weighted random choice within a priority; the first target whose A/AAAA lookup gives
//!    addresses wins, with the record's port. The target `.` means "decidedly not
//!    available" and is skipped.
//! 3. No SRV record (NXDOMAIN or NODATA), or only `.` targets: `Ok(None)`, the domain has
//!    no coi-proxy and the message takes the mail path.
//!
//! Everything that needs DNS is cached per domain, in a bounded table, with its own
//! lifetime:
//!
//! - a peer found: the smallest TTL of the records used (SRV and A/AAAA), at most
//!   `peer.dns.max_ttl`;
//! - no coi-proxy: `peer.dns.negative_ttl`, whatever the zone's negative TTL (RFC 2308
//!   allows zero, and most mail domains are in this case, so a floor keeps the query rate
//!   per domain bounded);
//! - a failure (no answer within `peer.dns.timeout`, SERVFAIL, unreachable resolver,
//!   SRV targets without addresses): `Err`, kept for `peer.dns.error_ttl` (a target
//!   without addresses, a definite answer, for `negative_ttl`). The caller sends by mail
//!   either way; caching the failure spares the following messages to that domain the
//!   same wait. It is kept shorter than a negative answer because it is probably
//!   transient and the domain may well have a coi-proxy.
//!
//! Two tasks asking about the same uncached domain at once both look it up; the later
//! answer stays in the cache.
//!
//! hickory's own response cache is off: it reads the system clock, which tests cannot
//! pause, and one cache with one set of rules is easier to reason about. Lifetimes here
//! are measured with tokio's [`Instant`], so tests drive them with paused time.
//! `/etc/hosts` is not consulted: overrides belong in `peer.routes`.
//!
//! The [`PeerTarget::domain`] is the mail domain, not the SRV target: the link's TLS
//! server name, because what the peer must prove is that it speaks for that domain
//! ([`super::quic`]).

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{Resolver, TokioResolver};
use tokio::time::Instant;

use crate::config::{PeerConfig, PeerDnsConfig};

/// The owner-name prefix of a domain's peer SRV record: service `coi`, protocol `udp`
/// (QUIC runs over UDP), RFC 2782 `_Service._Proto.Name`.
pub const SRV_PREFIX: &str = "_coi._udp";

/// Domains kept in the discovery cache at once. An entry is a few hundred bytes, so the
/// table stays within a few MB; a proxy sends to far fewer distinct domains within one
/// TTL, and beyond the bound the entry closest to expiry makes room (see [`Cache`]).
pub const MAX_CACHED_DOMAINS: usize = 10_000;

/// The longest DNS name in presentation form without the root dot (RFC 1035 §2.3.4: 255
/// octets on the wire).
const MAX_DOMAIN_LEN: usize = 253;

/// The longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Where the coi-proxy of a mail domain can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTarget {
    /// The mail domain (lowercase A-label, no trailing dot): the TLS server name of the
    /// link, never the SRV target host.
    pub domain: String,
    /// Addresses to connect to, IPv4 first, in the resolver's order; never empty.
    pub addresses: Vec<SocketAddr>,
}

/// Why discovery gave no answer. The caller sends by mail in every case; the variants
/// say whom to blame in the log.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The domain asked about cannot be looked up (not a DNS name, or an IP literal).
    #[error("{domain:?} is not a domain name")]
    InvalidDomain { domain: String },
    /// The domain names a coi-proxy (SRV target or static route host) that has no
    /// address: the remote domain's DNS is incomplete.
    #[error("the coi-proxy of {domain} is at {host}, which has no address")]
    NoAddresses { domain: String, host: String },
    /// The resolver answered with an error (SERVFAIL, REFUSED) or could not be reached.
    #[error("DNS lookup of {name} for {domain} failed")]
    Resolver {
        domain: String,
        /// The name that was looked up: the SRV owner name or a target host.
        name: String,
        /// Shared: a cached failure is handed out again and again.
        #[source]
        source: Arc<NetError>,
    },
    /// The system's resolver configuration (resolv.conf) could not be read; only from
    /// [`Discovery::new`] without `peer.dns.nameservers`.
    #[error("cannot read the system's DNS configuration (set peer.dns.nameservers)")]
    SystemConfig {
        #[source]
        source: Arc<NetError>,
    },
    /// No complete answer within `peer.dns.timeout`.
    #[error("no DNS answer for {domain} within {}", humantime::format_duration(*after))]
    Timeout { domain: String, after: Duration },
}

impl DiscoveryError {
    /// A short, fixed name for metrics and log fields.
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::InvalidDomain { .. } => "invalid_domain",
            Self::NoAddresses { .. } => "no_addresses",
            Self::Resolver { .. } => "resolver",
            Self::SystemConfig { .. } => "system_config",
            Self::Timeout { .. } => "timeout",
        }
    }
}

/// Finds the coi-proxy of other domains: static routes, then DNS SRV, with a cache.
/// Shared by all tasks (`&self` everywhere); cloning is not needed, wrap it in an `Arc`.
#[derive(Debug)]
pub struct Discovery {
    /// Static routes by normalised domain.
    routes: std::collections::HashMap<String, Route>,
    resolver: TokioResolver,
    cache: Cache,
    timeout: Duration,
    max_ttl: Duration,
    negative_ttl: Duration,
    error_ttl: Duration,
}

/// The address of a static route.
#[derive(Clone, Debug)]
struct Route {
    host: String,
    port: u16,
}

impl Discovery {
    /// Builds the resolver for `config.dns` and takes over the static routes.
    ///
    /// Fails only without `peer.dns.nameservers`, when the system's resolver configuration
    /// (resolv.conf) cannot be read or names no nameserver.
    pub fn new(config: &PeerConfig) -> Result<Self, DiscoveryError> {
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let target = Route {
                    host: route.host.clone(),
                    port: route.port,
                };
                // Validation already normalised it; a hand-built config may not have.
                let domain = normalize_domain(&route.domain);
                (domain.unwrap_or_else(|| route.domain.clone()), target)
            })
            .collect();
        Ok(Self {
            routes,
            resolver: resolver(&config.dns)?,
            cache: Cache::new(MAX_CACHED_DOMAINS),
            timeout: config.dns.timeout,
            max_ttl: config.dns.max_ttl,
            negative_ttl: config.dns.negative_ttl,
            error_ttl: config.dns.error_ttl,
        })
    }

    /// Where the coi-proxy of `domain` (a mail domain, any case, U-labels allowed) is:
    /// `Ok(None)` when the domain has none, `Err` when that could not be found out within
    /// `peer.dns.timeout`. Either of the last two means: send by mail.
    pub async fn resolve(&self, domain: &str) -> Result<Option<PeerTarget>, DiscoveryError> {
        let Some(domain) = normalize_domain(domain) else {
            return Err(DiscoveryError::InvalidDomain {
                domain: domain.to_owned(),
            });
        };
        if let Some(route) = self.routes.get(&domain) {
            if let Ok(ip) = route.host.parse::<IpAddr>() {
                return Ok(Some(PeerTarget {
                    domain,
                    addresses: vec![SocketAddr::new(ip, route.port)],
                }));
            }
        }
        if let Some(answer) = self.cache.get(&domain, Instant::now()) {
            return answer.into_result();
        }
        let (answer, ttl) = match tokio::time::timeout(self.timeout, self.lookup(&domain)).await {
            Ok(found) => found,
            Err(_) => {
                let error = DiscoveryError::Timeout {
                    domain: domain.clone(),
                    after: self.timeout,
                };
                (Answer::Failed(error), self.error_ttl)
            }
        };
        match &answer {
            Answer::Found(target) => {
                tracing::debug!(%domain, addresses = ?target.addresses, ?ttl, "peer found");
            }
            Answer::NoService => tracing::debug!(%domain, ?ttl, "no peer"),
            Answer::Failed(error) => {
                tracing::debug!(%domain, %error, ?ttl, "peer discovery failed")
            }
        }
        self.cache
            .insert(domain, answer.clone(), Instant::now(), ttl);
        answer.into_result()
    }

    /// The answer for `domain` from DNS, with how long it may be kept.
    async fn lookup(&self, domain: &str) -> (Answer, Duration) {
        if let Some(route) = self.routes.get(domain) {
            // Not made fully qualified: a route may name a host relative to the system's
            // search domains (a Kubernetes Service, say), as any other program could.
            return match Name::from_ascii(&route.host) {
                Ok(host) => self.target(domain, host, route.port, self.max_ttl).await,
                Err(e) => {
                    let error = self.failure(domain, &route.host, NetError::from(e));
                    (Answer::Failed(error), self.error_ttl)
                }
            };
        }
        let owner = format!("{SRV_PREFIX}.{domain}.");
        let srv = match self.resolver.srv_lookup(owner.as_str()).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() => return (Answer::NoService, self.negative_ttl),
            Err(source) => {
                let error = self.failure(domain, &owner, source);
                return (Answer::Failed(error), self.error_ttl);
            }
        };
        // The answer may hold CNAMEs on the way; only the SRV records count.
        let records: Vec<(u16, u16, &Name, u16, u32)> = srv
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => {
                    Some((srv.priority, srv.weight, &srv.target, srv.port, record.ttl))
                }
                _ => None,
            })
            .collect();
        let Some(srv_ttl) = records.iter().map(|&(.., ttl)| ttl_duration(ttl)).min() else {
            return (Answer::NoService, self.negative_ttl);
        };
        let candidates: Vec<(u16, u16, (&Name, u16))> = records
            .iter()
            .filter(|(_, _, target, ..)| !target.is_root())
            .map(|&(priority, weight, target, port, _)| (priority, weight, (target, port)))
            .collect();
        if candidates.is_empty() {
            // RFC 2782: target "." means the service is decidedly not available.
            return (Answer::NoService, self.negative_ttl);
        }
        let cap = srv_ttl.min(self.max_ttl);
        let mut failure = None;
        for (target, port) in rfc2782_order(candidates, random_below) {
            match self.target(domain, target.clone(), port, cap).await {
                found @ (Answer::Found(_), _) => return found,
                failed => failure = Some(failed),
            }
        }
        // Every candidate was tried, so at least one failure was recorded.
        failure.unwrap_or((Answer::NoService, self.negative_ttl))
    }

    /// The addresses of `host` with `port` for the peer of `domain`, kept at most `cap`.
    async fn target(
        &self,
        domain: &str,
        host: Name,
        port: u16,
        cap: Duration,
    ) -> (Answer, Duration) {
        let shown = host.to_ascii();
        let shown = shown.strip_suffix('.').unwrap_or(&shown);
        let lookup = match self.resolver.lookup_ip(host.clone()).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() => return self.no_addresses(domain, shown),
            Err(source) => {
                let error = self.failure(domain, shown, source);
                return (Answer::Failed(error), self.error_ttl);
            }
        };
        let mut addresses = Vec::new();
        let mut ttl = cap;
        for record in lookup.as_lookup().answers() {
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            addresses.push(SocketAddr::new(ip, port));
            ttl = ttl.min(ttl_duration(record.ttl));
        }
        if addresses.is_empty() {
            return self.no_addresses(domain, shown);
        }
        let target = PeerTarget {
            domain: domain.to_owned(),
            addresses,
        };
        (Answer::Found(target), ttl)
    }

    /// `host`, named as the coi-proxy of `domain`, has no address: a definite answer
    /// about the remote domain's DNS, kept like a negative one.
    fn no_addresses(&self, domain: &str, host: &str) -> (Answer, Duration) {
        let error = DiscoveryError::NoAddresses {
            domain: domain.to_owned(),
            host: host.to_owned(),
        };
        (Answer::Failed(error), self.negative_ttl)
    }

    /// A failed lookup of `name`. hickory's own per-query timeout is ours, so when it
    /// fires first it is reported as ours.
    fn failure(&self, domain: &str, name: &str, source: NetError) -> DiscoveryError {
        match source {
            NetError::Timeout => DiscoveryError::Timeout {
                domain: domain.to_owned(),
                after: self.timeout,
            },
            source => DiscoveryError::Resolver {
                domain: domain.to_owned(),
                name: name.to_owned(),
                source: Arc::new(source),
            },
        }
    }
}

/// `domain` as discovery and `peer.routes` compare it: a lowercase A-label (UTS #46
/// ToASCII with the STD3 rules, as addresses are normalised), one trailing dot dropped,
/// within the DNS length limits. `None` for anything that cannot be a mail domain in DNS,
/// IP literals included.
pub fn normalize_domain(domain: &str) -> Option<String> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() || domain.parse::<IpAddr>().is_ok() {
        return None;
    }
    let ascii = idna::uts46::Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            idna::uts46::AsciiDenyList::STD3,
            idna::uts46::Hyphens::Allow,
            idna::uts46::DnsLength::Verify,
        )
        .ok()?;
    let valid = ascii.len() <= MAX_DOMAIN_LEN
        && ascii.split('.').all(|label| {
            (1..=MAX_LABEL_LEN).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then(|| ascii.to_ascii_lowercase())
}

/// What the cache keeps for a domain.
#[derive(Clone, Debug)]
enum Answer {
    Found(PeerTarget),
    NoService,
    Failed(DiscoveryError),
}

impl Answer {
    fn into_result(self) -> Result<Option<PeerTarget>, DiscoveryError> {
        match self {
            Self::Found(target) => Ok(Some(target)),
            Self::NoService => Ok(None),
            Self::Failed(error) => Err(error),
        }
    }
}

/// The per-domain answers with their expiry, bounded to `capacity` entries.
///
/// When a new domain arrives at a full table, expired entries are dropped first; if none
/// were, the entry closest to expiry goes (it would be looked up again soonest anyway).
/// Both scans are linear, and they only run on a full table. Concurrent inserts may
/// overshoot the bound by the number of inserting tasks.
#[derive(Debug)]
struct Cache {
    entries: DashMap<String, (Answer, Instant)>,
    capacity: usize,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Self {
            entries: DashMap::new(),
            capacity,
        }
    }

    /// The answer for `domain` if it is still valid at `now`; an expired one is removed.
    fn get(&self, domain: &str, now: Instant) -> Option<Answer> {
        let expired = {
            let entry = self.entries.get(domain)?;
            let (answer, expires) = entry.value();
            if *expires > now {
                return Some(answer.clone());
            }
            *expires
            // The read guard ends here: removing while holding it would deadlock.
        };
        self.entries
            .remove_if(domain, |_, (_, expires)| *expires == expired);
        None
    }

    /// Keeps `answer` for `domain` from `now` for `ttl`; a TTL of zero is not kept at
    /// all (and drops what was kept before).
    fn insert(&self, domain: String, answer: Answer, now: Instant, ttl: Duration) {
        if ttl.is_zero() {
            self.entries.remove(&domain);
            return;
        }
        let expires = now + ttl;
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&domain) {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= self.capacity {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|entry| entry.value().1)
                    .map(|entry| entry.key().clone());
                if let Some(key) = soonest {
                    self.entries.remove(&key);
                }
            }
        }
        self.entries.insert(domain, (answer, expires));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The resolver for `dns`: the configured nameservers (UDP, TCP when a reply is
/// truncated) or the system's, without hickory's cache and hosts file, with our timeout.
fn resolver(dns: &PeerDnsConfig) -> Result<TokioResolver, DiscoveryError> {
    let mut builder = match &dns.nameservers {
        Some(nameservers) => {
            let servers = nameservers
                .iter()
                .map(|address| {
                    let mut server = NameServerConfig::udp_and_tcp(address.ip());
                    for connection in &mut server.connections {
                        connection.port = address.port();
                    }
                    server
                })
                .collect();
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|source| DiscoveryError::SystemConfig {
            source: Arc::new(source),
        })?,
    };
    let options = builder.options_mut();
    options.timeout = dns.timeout;
    // Zero disables hickory's response cache entirely (moka keeps no map at capacity 0).
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder
        .build()
        .map_err(|source| DiscoveryError::SystemConfig {
            source: Arc::new(source),
        })
}

/// A record TTL (seconds) as a duration.
fn ttl_duration(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl))
}

/// `(priority, weight, target)` in the order RFC 2782 says to try them: by ascending
/// priority; within one priority, repeatedly a weighted random choice among the records
/// not yet ordered, a record of weight `w` out of a total `W` being picked with
/// probability `w / W`.
///
/// Records of weight 0 come after the weighted ones of their priority, in the resolver's
/// order. RFC 2782's own procedure gives them a chance of 1/(W+1) instead, but at the
/// price of skewing every choice (a draw of 0 always selects the first record); exact
/// proportions are what zone operators write weights for, and Go's resolver makes the
/// same choice.
///
/// `random_below(n)` returns a value in `0..n`; it is only called with `n >= 1`.
fn rfc2782_order<T>(
    mut records: Vec<(u16, u16, T)>,
    mut random_below: impl FnMut(u32) -> u32,
) -> Vec<T> {
    // Stable: records of one priority keep the resolver's order.
    records.sort_by_key(|&(priority, ..)| priority);
    let mut ordered = Vec::with_capacity(records.len());
    let mut rest = records.into_iter().peekable();
    while let Some(&(priority, ..)) = rest.peek() {
        let mut group: Vec<(u32, T)> = Vec::new();
        while let Some((_, weight, target)) = rest.next_if(|&(p, ..)| p == priority) {
            group.push((u32::from(weight), target));
        }
        while !group.is_empty() {
            // A DNS message (at most 64 KiB) holds fewer than 4,000 SRV records, so the
            // sum of their 16-bit weights fits in a u32 many times over.
            let total: u32 = group.iter().map(|&(weight, _)| weight).sum();
            let index = if total == 0 {
                0
            } else {
                let pick = random_below(total);
                let mut running = 0;
                group
                    .iter()
                    .position(|&(weight, _)| {
                        running += weight;
                        running > pick
                    })
                    // `running` ends at `total` and `pick < total`, so a position exists.
                    .unwrap_or(0)
            };
            ordered.push(group.remove(index).1);
        }
    }
    ordered
}

/// A random value in `0..bound` (`bound >= 1`) for the SRV weight choice. SipHash under
/// fresh random keys is no cryptographic generator, but spreading load needs none, and
/// it spares a dependency.
fn random_below(bound: u32) -> u32 {
    let random = RandomState::new().build_hasher().finish();
    // The remainder is below `bound`, so it fits in a u32.
    (random % u64::from(bound.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lowercase_a_labels() {
        assert_eq!(normalize_domain("B.Example").as_deref(), Some("b.example"));
        assert_eq!(normalize_domain("b.example.").as_deref(), Some("b.example"));
        assert_eq!(
            normalize_domain("München.example").as_deref(),
            Some("xn--mnchen-3ya.example")
        );
        assert_eq!(normalize_domain("localhost").as_deref(), Some("localhost"));
    }

    #[test]
    fn non_domains_are_refused() {
        for bad in [
            "",
            ".",
            "a..b",
            "b.example..",
            "a b.example",
            "_coi._udp.b.example",
            "b.example/x",
            "192.0.2.1",
            "::1",
            "[192.0.2.1]",
            &format!("{}.example", "a".repeat(64)),
            &format!("{}example", "a.".repeat(127)),
        ] {
            assert_eq!(normalize_domain(bad), None, "{bad:?}");
        }
    }

    /// `random_below` that always answers `value`, clamped into range.
    fn fixed(value: u32) -> impl FnMut(u32) -> u32 {
        move |bound| value.min(bound - 1)
    }

    #[test]
    fn lower_priority_goes_first_whatever_the_weight() {
        let records = vec![(20, 100, "backup"), (10, 0, "primary"), (30, 5, "last")];
        assert_eq!(
            rfc2782_order(records, fixed(u32::MAX)),
            ["primary", "backup", "last"]
        );
    }

    #[test]
    fn weights_split_one_priority() {
        let records = || vec![(10, 1, "light"), (10, 3, "heavy")];
        // Running sums 1 and 4: a draw of 0 selects "light", 1 to 3 "heavy".
        assert_eq!(rfc2782_order(records(), fixed(0)), ["light", "heavy"]);
        assert_eq!(rfc2782_order(records(), fixed(1)), ["heavy", "light"]);
        assert_eq!(rfc2782_order(records(), fixed(3)), ["heavy", "light"]);
    }

    #[test]
    fn zero_weights_come_after_the_weighted_records() {
        let records = || vec![(10, 0, "zero"), (10, 5, "weighted"), (20, 1, "backup")];
        for draw in [0, 4] {
            assert_eq!(
                rfc2782_order(records(), fixed(draw)),
                ["weighted", "zero", "backup"]
            );
        }
        let all_zero = vec![(10, 0, "a"), (10, 0, "b"), (10, 0, "c")];
        assert_eq!(rfc2782_order(all_zero, fixed(0)), ["a", "b", "c"]);
    }

    #[test]
    fn weighted_choice_follows_the_weights() {
        let mut heavy_first = 0;
        for _ in 0..2000 {
            let order = rfc2782_order(vec![(0, 1, "light"), (0, 3, "heavy")], random_below);
            heavy_first += usize::from(order[0] == "heavy");
        }
        // Expected 1500 of 2000; the bounds are many standard deviations (about 19) wide.
        assert!((1300..=1700).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn random_below_stays_in_range() {
        for bound in [1, 2, 7, u32::MAX] {
            for _ in 0..100 {
                assert!(random_below(bound) < bound);
            }
        }
    }

    fn found(domain: &str) -> Answer {
        Answer::Found(PeerTarget {
            domain: domain.to_owned(),
            addresses: vec!["192.0.2.1:4433".parse().expect("literal")],
        })
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn cache_entries_expire() {
        let cache = Cache::new(10);
        let now = Instant::now();
        cache.insert("b.example".into(), found("b.example"), now, 60 * SECOND);
        assert!(matches!(
            cache.get("b.example", now + 59 * SECOND),
            Some(Answer::Found(_))
        ));
        assert!(cache.get("b.example", now + 60 * SECOND).is_none());
        assert_eq!(cache.len(), 0, "the expired entry is dropped");
    }

    #[test]
    fn zero_ttl_is_not_cached_and_drops_the_old_answer() {
        let cache = Cache::new(10);
        let now = Instant::now();
        cache.insert("b.example".into(), found("b.example"), now, 60 * SECOND);
        cache.insert("b.example".into(), Answer::NoService, now, Duration::ZERO);
        assert!(cache.get("b.example", now).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn full_cache_drops_expired_entries_first() {
        let cache = Cache::new(3);
        let start = Instant::now();
        cache.insert("short.example".into(), Answer::NoService, start, SECOND);
        cache.insert("a.example".into(), found("a.example"), start, 100 * SECOND);
        cache.insert("b.example".into(), found("b.example"), start, 50 * SECOND);
        let later = start + 2 * SECOND;
        cache.insert("c.example".into(), found("c.example"), later, 100 * SECOND);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("short.example", later).is_none());
        for kept in ["a.example", "b.example", "c.example"] {
            assert!(cache.get(kept, later).is_some(), "{kept}");
        }
    }

    #[test]
    fn full_cache_drops_the_entry_closest_to_expiry() {
        let cache = Cache::new(2);
        let now = Instant::now();
        cache.insert("a.example".into(), found("a.example"), now, 100 * SECOND);
        cache.insert("b.example".into(), found("b.example"), now, 50 * SECOND);
        cache.insert("c.example".into(), Answer::NoService, now, 60 * SECOND);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b.example", now).is_none());
        assert!(cache.get("a.example", now).is_some());
        assert!(cache.get("c.example", now).is_some());
        // Replacing the answer of a domain already kept evicts nothing.
        cache.insert("a.example".into(), Answer::NoService, now, 10 * SECOND);
        assert_eq!(cache.len(), 2);
        assert!(matches!(
            cache.get("a.example", now),
            Some(Answer::NoService)
        ));
    }

    #[test]
    fn error_labels_are_distinct() {
        let domain = || "b.example".to_owned();
        let labels = [
            DiscoveryError::InvalidDomain { domain: domain() },
            DiscoveryError::NoAddresses {
                domain: domain(),
                host: domain(),
            },
            DiscoveryError::Resolver {
                domain: domain(),
                name: domain(),
                source: Arc::new(NetError::Timeout),
            },
            DiscoveryError::SystemConfig {
                source: Arc::new(NetError::Timeout),
            },
            DiscoveryError::Timeout {
                domain: domain(),
                after: Duration::from_secs(3),
            },
        ]
        .map(|e| e.as_label());
        let unique: std::collections::BTreeSet<_> = labels.iter().collect();
        assert_eq!(unique.len(), labels.len(), "{labels:?}");
    }
}
