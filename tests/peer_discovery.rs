//! Peer discovery (`coi_proxy::net::discovery`) against a real DNS server: hickory-server,
//! authoritative for `test.`, on 127.0.0.1 (a random port, UDP and TCP), answering the
//! resolver over the DNS protocol.
//!
//! - SRV `_coi._udp.<domain>` → the target's A records with the SRV port, and the mail
//!   domain (not the target) as the TLS name; lower priority first; an unresolvable
//!   target falls back to the next; target "." → no coi-proxy; NXDOMAIN and NODATA → no
//!   coi-proxy; a target without address → an error;
//! - static routes win over DNS (IP literals and names);
//! - caching: a found peer for the smallest TTL of its records, at most `max_ttl`, even
//!   with the server gone; "no coi-proxy" for `negative_ttl`; a failure for `error_ttl`;
//! - a server that never answers → `Timeout` after exactly `timeout`; REFUSED → a
//!   resolver error.
//!
//! Every network step runs under [`STEP`]; nothing sleeps. The tests run in real time
//! and jump over TTLs with [`jump`] (tokio's clock paused, advanced, resumed): with the
//! clock paused while real packets are in flight, tokio's auto-advance would fire the
//! lookup timeout between a query and its answer. The never-answering server has no
//! packets to wait for, so that test runs on paused time throughout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coi_proxy::config::{PeerConfig, PeerDnsConfig, PeerRoute};
use coi_proxy::net::discovery::{Discovery, DiscoveryError, PeerTarget};
use hickory_server::proto::rr::{LowerName, Name, RrKey};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;

/// Every network step of a test must finish well within this (real time).
const STEP: Duration = Duration::from_secs(10);

/// The discovery timeout of the tests: far above a loopback round trip, far below
/// [`STEP`].
const TIMEOUT: Duration = Duration::from_secs(2);

const MAX_TTL: Duration = Duration::from_secs(3600);
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
const ERROR_TTL: Duration = Duration::from_secs(5);

/// The zone the server is authoritative for. TTLs: 300 s unless a record says otherwise.
const ZONE: &str = "
$ORIGIN test.
$TTL 300
@                  IN SOA   ns.test. admin.test. ( 1 3600 600 86400 30 )
@                  IN NS    ns
ns                 IN A     127.0.0.1

; b.test: one target.
_coi._udp.b        IN SRV   0 0 4433 coi.b
coi.b              IN A     127.0.0.1

; prio.test: the lower priority wins, whatever the order and the weights.
_coi._udp.prio     IN SRV   20 100 5002 backup.prio
_coi._udp.prio     IN SRV   10 0   5001 primary.prio
primary.prio       IN A     127.0.0.2
backup.prio        IN A     127.0.0.3

; fallback.test: the preferred target has no address, the next one has.
_coi._udp.fallback IN SRV   10 0 4433 missing.fallback
_coi._udp.fallback IN SRV   20 0 4434 coi.b

; broken.test: the only target has no address.
_coi._udp.broken   IN SRV   0 0 4433 missing.broken

; none.test: target \".\", decidedly no coi-proxy (RFC 2782).
_coi._udp.none     IN SRV   0 0 0 .

; nodata.test: the SRV owner name exists with another type only (NODATA).
_coi._udp.nodata   IN TXT   \"no coi here\"

; ttl.test: the address record has the smaller TTL.
_coi._udp.ttl      IN SRV   0 0 4433 coi.ttl
coi.ttl        60  IN A     127.0.0.1

; nothing.test, late.test: no records at all (NXDOMAIN).
";

/// An authoritative server for [`ZONE`] on one random port of 127.0.0.1, UDP and TCP.
struct DnsServer {
    address: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    server: Server<Catalog>,
}

impl DnsServer {
    async fn start() -> Self {
        let (origin, records) = parse(ZONE);
        let zone =
            InMemoryZoneHandler::new(origin.clone(), records, ZoneType::Primary, AxfrPolicy::Deny)
                .expect("a valid zone");
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&origin),
            vec![zone.clone() as Arc<dyn ZoneHandler>],
        );
        let (udp, tcp) = bind_udp_and_tcp().await;
        let address = udp.local_addr().expect("local address");
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, STEP, 64);
        Self {
            address,
            zone,
            server,
        }
    }

    /// Replaces the record sets named in `records` (zone-file lines relative to `test.`)
    /// with the ones given there.
    async fn replace(&self, records: &str) {
        let (_, sets) = parse(&format!("$ORIGIN test.\n$TTL 300\n{records}"));
        {
            let mut existing = self.zone.records_mut().await;
            for key in sets.keys() {
                existing.remove(key);
            }
        }
        for set in sets.into_values() {
            for record in set.records_without_rrsigs() {
                assert!(self.zone.upsert(record.clone(), 2).await, "{record}");
            }
        }
    }

    /// Stops answering: the sockets are closed once this returns.
    async fn stop(mut self) {
        step(self.server.shutdown_gracefully())
            .await
            .expect("server shut down");
    }
}

fn parse(
    text: &str,
) -> (
    Name,
    std::collections::BTreeMap<RrKey, hickory_server::proto::rr::RecordSet>,
) {
    Parser::new(text, None, Some(Name::from_ascii("test.").expect("name")))
        .parse()
        .expect("valid zone text")
}

/// A UDP socket and a TCP listener on the same random port of 127.0.0.1: the resolver
/// asks a nameserver over both at one ip:port. A port whose TCP side is taken is skipped.
async fn bind_udp_and_tcp() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let address = udp.local_addr().expect("local address");
        if let Ok(tcp) = TcpListener::bind(address).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

fn config(nameserver: SocketAddr, routes: &[(&str, &str, u16)]) -> PeerConfig {
    PeerConfig {
        routes: routes
            .iter()
            .map(|&(domain, host, port)| PeerRoute {
                domain: domain.to_owned(),
                host: host.to_owned(),
                port,
            })
            .collect(),
        dns: PeerDnsConfig {
            nameservers: Some(vec![nameserver]),
            timeout: TIMEOUT,
            max_ttl: MAX_TTL,
            negative_ttl: NEGATIVE_TTL,
            error_ttl: ERROR_TTL,
        },
        link: None,
    }
}

fn discovery(config: &PeerConfig) -> Discovery {
    Discovery::new(config).expect("discovery with explicit nameservers")
}

/// `future`, which must finish within [`STEP`].
async fn step<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("step finished in time")
}

async fn resolve(
    discovery: &Discovery,
    domain: &str,
) -> Result<Option<PeerTarget>, DiscoveryError> {
    step(discovery.resolve(domain)).await
}

/// The peer of `domain`, which must have one.
async fn found(discovery: &Discovery, domain: &str) -> PeerTarget {
    match resolve(discovery, domain).await {
        Ok(Some(target)) => target,
        other => panic!("{domain}: expected a peer, got {other:?}"),
    }
}

/// What resolving `domain` gave and how long it took on tokio's clock.
async fn timed(
    discovery: &Discovery,
    domain: &str,
) -> (Result<Option<PeerTarget>, DiscoveryError>, Duration) {
    let started = Instant::now();
    let result = resolve(discovery, domain).await;
    (result, started.elapsed())
}

/// Moves tokio's clock `by` forward at once: cache lifetimes are read from it.
async fn jump(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

fn addresses(list: &[&str]) -> Vec<SocketAddr> {
    list.iter()
        .map(|a| a.parse().expect("literal address"))
        .collect()
}

#[tokio::test]
async fn srv_record_gives_the_target_addresses_under_the_mail_domain() {
    let dns = DnsServer::start().await;
    let discovery = discovery(&config(dns.address, &[]));
    assert_eq!(
        found(&discovery, "b.test").await,
        PeerTarget {
            domain: "b.test".to_owned(),
            addresses: addresses(&["127.0.0.1:4433"]),
        }
    );
    let target = found(&discovery, "B.Test.").await;
    assert_eq!(target.domain, "b.test", "normalised, never the SRV target");
    dns.stop().await;
}

#[tokio::test]
async fn lower_priority_wins() {
    let dns = DnsServer::start().await;
    let discovery = discovery(&config(dns.address, &[]));
    assert_eq!(
        found(&discovery, "prio.test").await.addresses,
        addresses(&["127.0.0.2:5001"])
    );
    dns.stop().await;
}

#[tokio::test]
async fn target_without_address_gives_way_to_the_next() {
    let dns = DnsServer::start().await;
    let discovery = discovery(&config(dns.address, &[]));
    assert_eq!(
        found(&discovery, "fallback.test").await,
        PeerTarget {
            domain: "fallback.test".to_owned(),
            addresses: addresses(&["127.0.0.1:4434"]),
        }
    );
    dns.stop().await;
}

#[tokio::test]
async fn only_target_without_address_is_an_error() {
    let dns = DnsServer::start().await;
    let discovery = discovery(&config(dns.address, &[]));
    match resolve(&discovery, "broken.test").await {
        Err(DiscoveryError::NoAddresses { domain, host }) => {
            assert_eq!(
                (domain.as_str(), host.as_str()),
                ("broken.test", "missing.broken.test")
            );
        }
        other => panic!("expected NoAddresses, got {other:?}"),
    }
    dns.stop().await;
}

#[tokio::test]
async fn dot_target_means_no_coi_proxy() {
    let dns = DnsServer::start().await;
    let discovery = discovery(&config(dns.address, &[]));
    assert_eq!(
        resolve(&discovery, "none.test").await.expect("an answer"),
        None
    );
    dns.stop().await;
}

#[tokio::test]
async fn nxdomain_and_nodata_mean_no_coi_proxy() {
    let dns = DnsServer::start().await;
    let discovery = discovery(&config(dns.address, &[]));
    for domain in ["nothing.test", "nodata.test"] {
        assert_eq!(
            resolve(&discovery, domain).await.expect("an answer"),
            None,
            "{domain}"
        );
    }
    dns.stop().await;
}

#[tokio::test]
async fn static_routes_win_over_dns() {
    let dns = DnsServer::start().await;
    let routes = [
        ("b.test", "127.0.0.1", 9999),
        ("v6.test", "::1", 4433),
        ("routed.test", "coi.b.test", 7000),
    ];
    let discovery = discovery(&config(dns.address, &routes));
    assert_eq!(
        found(&discovery, "b.test").await.addresses,
        addresses(&["127.0.0.1:9999"]),
        "the route, not the SRV record"
    );
    assert_eq!(
        found(&discovery, "V6.test").await,
        PeerTarget {
            domain: "v6.test".to_owned(),
            addresses: addresses(&["[::1]:4433"]),
        }
    );
    assert_eq!(
        found(&discovery, "routed.test").await,
        PeerTarget {
            domain: "routed.test".to_owned(),
            addresses: addresses(&["127.0.0.1:7000"]),
        },
        "a route's host name is resolved; the TLS name stays the mail domain"
    );
    dns.stop().await;
}

#[tokio::test]
async fn found_peer_is_kept_for_the_smallest_ttl_of_its_records() {
    let dns = DnsServer::start().await;
    let discovery = discovery(&config(dns.address, &[]));
    let before = addresses(&["127.0.0.1:4433"]);
    assert_eq!(found(&discovery, "ttl.test").await.addresses, before);

    dns.replace("coi.ttl 60 IN A 127.0.0.5").await;
    jump(Duration::from_secs(59)).await;
    assert_eq!(
        found(&discovery, "ttl.test").await.addresses,
        before,
        "cached within the A record's 60 s"
    );
    jump(Duration::from_secs(2)).await;
    assert_eq!(
        found(&discovery, "ttl.test").await.addresses,
        addresses(&["127.0.0.5:4433"]),
        "looked up again after 60 s, although the SRV record says 300 s"
    );
    dns.stop().await;
}

#[tokio::test]
async fn max_ttl_caps_how_long_a_peer_is_kept() {
    let dns = DnsServer::start().await;
    let mut config = config(dns.address, &[]);
    config.dns.max_ttl = Duration::from_secs(30);
    let discovery = discovery(&config);
    assert_eq!(
        found(&discovery, "b.test").await.addresses,
        addresses(&["127.0.0.1:4433"])
    );
    dns.replace("coi.b IN A 127.0.0.6").await;
    jump(Duration::from_secs(29)).await;
    assert_eq!(
        found(&discovery, "b.test").await.addresses,
        addresses(&["127.0.0.1:4433"])
    );
    jump(Duration::from_secs(2)).await;
    assert_eq!(
        found(&discovery, "b.test").await.addresses,
        addresses(&["127.0.0.6:4433"]),
        "the records say 300 s, max_ttl 30 s"
    );
    dns.stop().await;
}

#[tokio::test]
async fn cached_peer_is_answered_with_the_server_gone() {
    let dns = DnsServer::start().await;
    let discovery = discovery(&config(dns.address, &[]));
    let first = found(&discovery, "b.test").await;
    let negative = resolve(&discovery, "nothing.test")
        .await
        .expect("an answer");
    dns.stop().await;

    let started = Instant::now();
    assert_eq!(found(&discovery, "b.test").await, first);
    assert_eq!(
        resolve(&discovery, "nothing.test").await.expect("cached"),
        negative
    );
    assert!(
        started.elapsed() < TIMEOUT,
        "answered from the cache, without waiting for DNS"
    );
}

#[tokio::test]
async fn no_coi_proxy_is_kept_for_the_negative_ttl() {
    let dns = DnsServer::start().await;
    let discovery = discovery(&config(dns.address, &[]));
    assert_eq!(
        resolve(&discovery, "late.test").await.expect("an answer"),
        None
    );

    dns.replace("_coi._udp.late IN SRV 0 0 4433 coi.b").await;
    jump(NEGATIVE_TTL - Duration::from_secs(1)).await;
    assert_eq!(
        resolve(&discovery, "late.test").await.expect("an answer"),
        None,
        "the negative answer is kept for negative_ttl"
    );
    jump(Duration::from_secs(2)).await;
    assert_eq!(
        found(&discovery, "late.test").await.addresses,
        addresses(&["127.0.0.1:4433"]),
        "the new record is seen once negative_ttl has passed"
    );
    dns.stop().await;
}

#[tokio::test]
async fn refused_query_is_a_resolver_error() {
    let dns = DnsServer::start().await;
    let discovery = discovery(&config(dns.address, &[]));
    // The server is authoritative for `test.` only and refuses other names.
    match resolve(&discovery, "elsewhere.example").await {
        Err(error @ DiscoveryError::Resolver { .. }) => {
            assert_eq!(error.as_label(), "resolver");
            assert!(
                error.to_string().contains("_coi._udp.elsewhere.example"),
                "{error}"
            );
        }
        other => panic!("expected a resolver error, got {other:?}"),
    }
    dns.stop().await;
}

#[tokio::test]
async fn names_that_are_no_domain_are_refused_without_a_query() {
    // Nothing listens at this nameserver; none of these may reach it.
    let discovery = discovery(&config("127.0.0.1:9".parse().expect("literal"), &[]));
    for bad in ["", "192.0.2.1", "[192.0.2.1]", "a b.test", "a..test"] {
        match resolve(&discovery, bad).await {
            Err(DiscoveryError::InvalidDomain { domain }) => assert_eq!(domain, bad),
            other => panic!("{bad:?}: expected InvalidDomain, got {other:?}"),
        }
    }
}

/// A nameserver that never answers: its sockets are bound (so no ICMP error comes back)
/// but never read. No packet is ever awaited, so tokio's clock can run paused and the
/// timeout is measured exactly.
#[tokio::test(start_paused = true)]
async fn silent_server_times_out_and_the_failure_is_kept_for_the_error_ttl() {
    let (udp, tcp) = bind_udp_and_tcp().await;
    let address = udp.local_addr().expect("local address");
    let discovery = discovery(&config(address, &[]));

    let (result, elapsed) = timed(&discovery, "b.test").await;
    match result {
        Err(DiscoveryError::Timeout { domain, after }) => {
            assert_eq!((domain.as_str(), after), ("b.test", TIMEOUT));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(
        elapsed, TIMEOUT,
        "gives up exactly at the configured timeout"
    );

    let (result, elapsed) = timed(&discovery, "b.test").await;
    assert!(
        matches!(result, Err(DiscoveryError::Timeout { .. })),
        "{result:?}"
    );
    assert_eq!(elapsed, Duration::ZERO, "the failure is cached");

    tokio::time::advance(ERROR_TTL).await;
    let (result, elapsed) = timed(&discovery, "b.test").await;
    assert!(
        matches!(result, Err(DiscoveryError::Timeout { .. })),
        "{result:?}"
    );
    assert_eq!(elapsed, TIMEOUT, "asked again once error_ttl has passed");
    drop((udp, tcp));
}
