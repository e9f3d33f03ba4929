//! Peer links over QUIC (`coi_proxy::net::quic`): two endpoints on 127.0.0.1 with
//! certificates from one test CA, and SECURITY-CASES §G at the transport level:
//!
//! - mutual TLS with ALPN `coi/1`, each side seeing the other's domains; a stream echoes;
//! - case 55: bad client or server certificates, a missing client certificate, another
//!   ALPN → handshake refused, with the TLS alert that says why;
//! - case 53: the server takes no early data and issues no tickets, so a client that
//!   tries 0-RTT on a second connection cannot;
//! - cases 52, 57 and 58 at the quinn-proto `Endpoint` level, without sockets: a spoofed
//!   1200-byte Initial gets at most 3,600 bytes back; a 1199-byte Initial is dropped; a
//!   mutated ClientHello (transport parameters) and random datagrams cause no panic;
//!   pending connection attempts and their buffers are bounded.
//!
//! Every network step runs under [`STEP`]; nothing sleeps. Simulated time drives the
//! `Endpoint`-level tests.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use coi_proxy::net::quic::{self, PeerTls};
use quinn::crypto::rustls::{HandshakeData, QuicClientConfig};
use quinn::{ConnectionError, Endpoint};
use quinn_proto::{ConnectionId, DatagramEvent};
use rustls::client::Resumption;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use support::pki::{self, TestCa, TestPki};

/// Every network step of a test must finish well within this.
const STEP: Duration = Duration::from_secs(5);

/// TLS alerts (RFC 8446 §6.2) as they appear in QUIC CONNECTION_CLOSE (RFC 9001 §4.8).
const BAD_CERTIFICATE: u8 = 42;
const CERTIFICATE_EXPIRED: u8 = 45;
const UNKNOWN_CA: u8 = 48;
const CERTIFICATE_REQUIRED: u8 = 116;
const NO_APPLICATION_PROTOCOL: u8 = 120;

/// A CA and the certificates of two domains it vouches for, a.example (the client in
/// most tests) and b.example (the server).
struct World {
    dir: tempfile::TempDir,
    ca: TestCa,
    a: TestPki,
    b: TestPki,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "peers");
    let a = ca.issue("a", &["a.example"]);
    let b = ca.issue("b", &["b.example"]);
    World { dir, ca, a, b }
}

fn peer_tls(pki: &TestPki) -> PeerTls {
    PeerTls::load(&pki.tls_files(), &pki.ca_path).expect("peer TLS")
}

/// A peer endpoint (both roles) on an ephemeral loopback port.
fn endpoint(tls: &PeerTls) -> Endpoint {
    quic::endpoint(loopback(), tls).expect("endpoint")
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn step<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} timed out"),
    }
}

/// How one handshake ended on each side.
struct Handshake {
    client: Result<quinn::Connection, ConnectionError>,
    server: Result<quinn::Connection, ConnectionError>,
    /// The server's and the client's endpoint, kept so that the links outlive the
    /// handshake.
    endpoints: (Endpoint, Endpoint),
}

/// Runs one handshake: a peer endpoint with `server_tls` accepts, a client endpoint
/// connects to it as `server_name` with `client_config`.
///
/// In TLS 1.3 the client finishes before the server has checked the client's
/// certificate, so a client whose certificate is refused first sees a connection and
/// then its close; that close is returned as the client's error.
async fn handshake(
    server_tls: &PeerTls,
    client_config: quinn::ClientConfig,
    server_name: &str,
) -> Handshake {
    let server = endpoint(server_tls);
    let server_addr = server.local_addr().expect("server address");
    let accepting = server.clone();
    let server_side = tokio::spawn(async move {
        let incoming = accepting.accept().await.expect("endpoint open");
        incoming.await
    });

    let client = Endpoint::client(loopback()).expect("client endpoint");
    let connecting = client
        .connect_with(client_config, server_addr, server_name)
        .expect("connect");
    let server_result = step("server handshake", server_side)
        .await
        .expect("server task");
    let client_result = match step("client handshake", connecting).await {
        Ok(connection) if server_result.is_err() => {
            Err(step("close after refusal", connection.closed()).await)
        }
        other => other,
    };
    Handshake {
        client: client_result,
        server: server_result,
        endpoints: (server, client),
    }
}

/// A link between two proxies: `client_tls` connects to `server_tls` as `server_name`.
async fn link(
    server_tls: &PeerTls,
    client_tls: &PeerTls,
    server_name: &str,
) -> (quinn::Connection, quinn::Connection, (Endpoint, Endpoint)) {
    let outcome = handshake(
        server_tls,
        client_tls.client_config().expect("client config"),
        server_name,
    )
    .await;
    (
        outcome.client.expect("client side of the link"),
        outcome.server.expect("server side of the link"),
        outcome.endpoints,
    )
}

/// The TLS alert behind a failed handshake: sent by us (`TransportError`) or received
/// from the peer (`ConnectionClosed`).
fn alert(error: &ConnectionError) -> Option<u8> {
    let code = match error {
        ConnectionError::TransportError(error) => error.code,
        ConnectionError::ConnectionClosed(close) => close.error_code,
        _ => return None,
    };
    // CRYPTO_ERROR codes are 0x0100 + the alert (RFC 9001 §4.8).
    u8::try_from(u64::from(code).checked_sub(0x100)?).ok()
}

/// Asserts that both sides saw the handshake fail with `expected`.
fn assert_refused(outcome: &Handshake, expected: u8) {
    for (side, result) in [("client", &outcome.client), ("server", &outcome.server)] {
        match result {
            Ok(_) => panic!("{side}: handshake succeeded"),
            Err(error) => assert_eq!(alert(error), Some(expected), "{side}: {error}"),
        }
    }
}

fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<HandshakeData>()
        .ok()?
        .protocol
}

/// A client configuration built from parts, for clients our own [`PeerTls`] would never
/// build (no certificate, another ALPN, early data).
fn custom_client(config: rustls::ClientConfig) -> quinn::ClientConfig {
    let crypto = QuicClientConfig::try_from(Arc::new(config)).expect("QUIC client config");
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(quic::transport_config()));
    client
}

fn roots(ca_path: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_path).expect("CA file") {
        roots.add(certificate.expect("CA PEM")).expect("CA root");
    }
    roots
}

// === links that work ===

#[tokio::test]
async fn link_authenticates_both_domains() {
    let world = world();
    let (a, b) = (peer_tls(&world.a), peer_tls(&world.b));
    let (client, server, _endpoints) = link(&b, &a, "b.example").await;

    assert_eq!(negotiated_alpn(&client).as_deref(), Some(quic::ALPN));
    assert_eq!(negotiated_alpn(&server).as_deref(), Some(quic::ALPN));
    assert_eq!(quic::peer_domains(&client), ["b.example"]);
    assert_eq!(quic::peer_domains(&server), ["a.example"]);

    // The receiving side's question (DESIGN §3): may this peer deliver for the envelope
    // sender's domain?
    let peer = quic::peer_domains(&server);
    assert!(quic::covers(&peer, "a.example"));
    assert!(quic::covers(&peer, "A.EXAMPLE"));
    assert!(!quic::covers(&peer, "b.example"));
    assert!(!quic::covers(&peer, "sub.a.example"));
}

#[tokio::test]
async fn bidirectional_stream_echoes() {
    let world = world();
    let (a, b) = (peer_tls(&world.a), peer_tls(&world.b));
    let (client, server, _endpoints) = link(&b, &a, "b.example").await;

    // Larger than the stream window, so flow control has to reopen it mid-stream.
    let message: Vec<u8> = (0..3 * quic::STREAM_RECEIVE_WINDOW)
        .map(|i| (i % 251) as u8)
        .collect();
    let limit = message.len();
    let echo = tokio::spawn(async move {
        let (mut send, mut recv) = server.accept_bi().await.expect("accept stream");
        let received = recv.read_to_end(limit).await.expect("read request");
        send.write_all(&received).await.expect("write reply");
        send.finish().expect("finish reply");
        // Keeps the connection open until the client has read everything.
        let _ = send.stopped().await;
    });

    let (mut send, mut recv) = step("open stream", client.open_bi())
        .await
        .expect("open stream");
    step("send", send.write_all(&message)).await.expect("send");
    send.finish().expect("finish");
    let reply = step("reply", recv.read_to_end(limit))
        .await
        .expect("read reply");
    assert!(reply == message, "echo differs ({} bytes)", reply.len());
    step("echo task", echo).await.expect("echo task");
}

#[tokio::test]
async fn client_certificate_for_another_name_is_seen_as_that_name() {
    let world = world();
    let other = world.ca.issue("c", &["c.example"]);
    let b = peer_tls(&world.b);
    let (_client, server, _endpoints) = link(&b, &peer_tls(&other), "b.example").await;

    // The CA vouches for c.example, so the link stands; it just cannot speak for a.example.
    let peer = quic::peer_domains(&server);
    assert_eq!(peer, ["c.example"]);
    assert!(!quic::covers(&peer, "a.example"));
}

#[tokio::test]
async fn a_certificate_with_several_domains_covers_each() {
    let world = world();
    let multi = world
        .ca
        .issue("multi", &["a.example", "chat.a.example", "*.a.example"]);
    let b = peer_tls(&world.b);
    let (_client, server, _endpoints) = link(&b, &peer_tls(&multi), "b.example").await;

    let peer = quic::peer_domains(&server);
    assert_eq!(peer, ["a.example", "chat.a.example"], "wildcards left out");
    assert!(quic::covers(&peer, "chat.a.example"));
    assert!(!quic::covers(&peer, "other.a.example"));
}

// === case 55: handshakes that must fail ===

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let world = world();
    let other_ca = TestCa::new(world.dir.path(), "other");
    // Its own CA file names the right root, so only the server's check can refuse it.
    let stranger = other_ca.issue("stranger", &["a.example"]);
    let client = PeerTls::load(&stranger.tls_files(), &world.ca.ca_path).expect("client TLS");
    let outcome = handshake(
        &peer_tls(&world.b),
        client.client_config().expect("client config"),
        "b.example",
    )
    .await;
    assert_refused(&outcome, UNKNOWN_CA);
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let world = world();
    let expired =
        world
            .ca
            .issue_valid_between("expired", &["a.example"], (2020, 1, 1), (2021, 1, 1));
    let outcome = handshake(
        &peer_tls(&world.b),
        peer_tls(&expired).client_config().expect("client config"),
        "b.example",
    )
    .await;
    assert_refused(&outcome, CERTIFICATE_EXPIRED);
}

#[tokio::test]
async fn not_yet_valid_client_certificate_is_refused() {
    let world = world();
    let future = world
        .ca
        .issue_valid_between("future", &["a.example"], (2999, 1, 1), (3000, 1, 1));
    let outcome = handshake(
        &peer_tls(&world.b),
        peer_tls(&future).client_config().expect("client config"),
        "b.example",
    )
    .await;
    assert_refused(&outcome, CERTIFICATE_EXPIRED);
}

#[tokio::test]
async fn self_signed_client_certificate_is_refused() {
    let world = world();
    let own_dir = world.dir.path().join("self-signed");
    std::fs::create_dir(&own_dir).expect("mkdir");
    let own = pki::self_signed(&own_dir, &["a.example"]);
    let client = PeerTls::load(&own.tls_files(), &world.ca.ca_path).expect("client TLS");
    let outcome = handshake(
        &peer_tls(&world.b),
        client.client_config().expect("client config"),
        "b.example",
    )
    .await;
    assert_refused(&outcome, UNKNOWN_CA);
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let world = world();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots(&world.ca.ca_path))
    .with_no_client_auth();
    config.alpn_protocols = vec![quic::ALPN.to_vec()];
    let outcome = handshake(&peer_tls(&world.b), custom_client(config), "b.example").await;
    assert_refused(&outcome, CERTIFICATE_REQUIRED);
}

#[tokio::test]
async fn client_offering_another_alpn_is_refused() {
    let world = world();
    let a = peer_tls(&world.a);
    for offered in [vec![b"h3".to_vec()], vec![b"coi/2".to_vec()], Vec::new()] {
        let mut config = (*a.client).clone();
        config.alpn_protocols = offered.clone();
        let outcome = handshake(&peer_tls(&world.b), custom_client(config), "b.example").await;
        assert!(
            outcome.client.is_err() && outcome.server.is_err(),
            "ALPN {offered:?} accepted"
        );
        assert_refused(&outcome, NO_APPLICATION_PROTOCOL);
    }
}

#[tokio::test]
async fn server_certificate_for_another_name_is_refused() {
    // The client asks for b.example but reaches c.example's proxy (a wrong SRV record or
    // a hijacked address): its certificate is valid, just not for the domain asked for.
    let world = world();
    let c = world.ca.issue("c", &["c.example"]);
    let outcome = handshake(
        &peer_tls(&c),
        peer_tls(&world.a).client_config().expect("client config"),
        "b.example",
    )
    .await;
    assert_refused(&outcome, BAD_CERTIFICATE);
}

#[tokio::test]
async fn server_certificate_from_another_ca_is_refused() {
    let world = world();
    let other_ca = TestCa::new(world.dir.path(), "other");
    let impostor = other_ca.issue("impostor", &["b.example"]);
    // The impostor trusts our CA, so it would accept us; we must not accept it.
    let server = PeerTls::load(&impostor.tls_files(), &world.ca.ca_path).expect("server TLS");
    let outcome = handshake(
        &server,
        peer_tls(&world.a).client_config().expect("client config"),
        "b.example",
    )
    .await;
    assert_refused(&outcome, UNKNOWN_CA);
}

#[tokio::test]
async fn expired_server_certificate_is_refused() {
    let world = world();
    let expired = world
        .ca
        .issue_valid_between("b-old", &["b.example"], (2020, 1, 1), (2021, 1, 1));
    let outcome = handshake(
        &peer_tls(&expired),
        peer_tls(&world.a).client_config().expect("client config"),
        "b.example",
    )
    .await;
    assert_refused(&outcome, CERTIFICATE_EXPIRED);
}

// === case 53: no 0-RTT ===

#[test]
fn configuration_allows_no_early_data_and_no_resumption() {
    let world = world();
    let tls = peer_tls(&world.a);
    assert_eq!(tls.server.max_early_data_size, 0);
    assert_eq!(tls.server.send_tls13_tickets, 0);
    assert!(!tls.server.session_storage.can_cache());
    assert!(!tls.client.enable_early_data);
    assert_eq!(tls.server.alpn_protocols, [quic::ALPN]);
    assert_eq!(tls.client.alpn_protocols, [quic::ALPN]);
}

#[tokio::test]
async fn second_connection_cannot_send_early_data() {
    // A client that wants 0-RTT (early data on, a session store) connects twice. Our
    // server gives it no ticket, so the second connection has nothing to send early data
    // under and runs a full handshake instead.
    let world = world();
    let b = peer_tls(&world.b);
    let mut eager = (*peer_tls(&world.a).client).clone();
    eager.enable_early_data = true;
    eager.resumption = Resumption::in_memory_sessions(16);
    let client_config = custom_client(eager);

    let server = endpoint(&b);
    let server_addr = server.local_addr().expect("server address");
    let accepting = server.clone();
    let server_side = tokio::spawn(async move {
        for _ in 0..2 {
            let connection = accepting
                .accept()
                .await
                .expect("endpoint open")
                .await
                .expect("server handshake");
            let (mut send, mut recv) = connection.accept_bi().await.expect("stream");
            let request = recv.read_to_end(64).await.expect("read");
            send.write_all(&request).await.expect("write");
            send.finish().expect("finish");
            let _ = send.stopped().await;
        }
    });

    let client = Endpoint::client(loopback()).expect("client endpoint");
    for attempt in 0..2 {
        let connecting = client
            .connect_with(client_config.clone(), server_addr, "b.example")
            .expect("connect");
        let connection = match connecting.into_0rtt() {
            Ok(_) => panic!("attempt {attempt}: 0-RTT offered"),
            Err(connecting) => step("handshake", connecting).await.expect("handshake"),
        };
        let (mut send, mut recv) = step("open", connection.open_bi()).await.expect("open");
        step("send", send.write_all(b"ping")).await.expect("send");
        send.finish().expect("finish");
        let reply = step("reply", recv.read_to_end(64)).await.expect("reply");
        assert_eq!(reply, b"ping");
        connection.close(0u32.into(), b"done");
    }
    step("server task", server_side).await.expect("server task");
}

// === cases 52, 57, 58: quinn-proto Endpoint, no sockets ===

/// A source address the "client" never answers from: loopback, but nobody is there.
fn spoofed(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], port))
}

/// Our server configuration in a socketless quinn-proto endpoint.
fn proto_server(tls: &PeerTls) -> quinn_proto::Endpoint {
    let config = tls.server_config().expect("server config");
    quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        Some(Arc::new(config)),
        true,
        None,
    )
}

/// The first datagram a real client sends (its Initial, padded to 1200 bytes).
fn client_initial(tls: &PeerTls, now: Instant) -> Vec<u8> {
    let mut client = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        true,
        None,
    );
    let (_, mut connection) = client
        .connect(
            now,
            tls.client_config().expect("client config"),
            spoofed(4433),
            "b.example",
        )
        .expect("connect");
    let mut buf = Vec::new();
    let transmit = connection.poll_transmit(now, 1, &mut buf).expect("Initial");
    buf.truncate(transmit.size);
    buf
}

/// Drives a server-side connection that never hears from its client again until it
/// gives up (simulated time: retransmissions, then the idle timeout). Returns the bytes
/// it sent.
fn run_unanswered(
    server: &mut quinn_proto::Endpoint,
    handle: quinn_proto::ConnectionHandle,
    connection: &mut quinn_proto::Connection,
    mut now: Instant,
) -> usize {
    let mut sent = 0;
    let mut buf = Vec::new();
    for _ in 0..1000 {
        while let Some(transmit) = connection.poll_transmit(now, 10, &mut buf) {
            sent += transmit.size;
            buf.clear();
        }
        while let Some(event) = connection.poll_endpoint_events() {
            if let Some(event) = server.handle_event(handle, event) {
                connection.handle_event(event);
            }
        }
        while connection.poll().is_some() {}
        match connection.poll_timeout() {
            Some(deadline) => {
                now = now.max(deadline);
                connection.handle_timeout(now);
            }
            None => return sent,
        }
    }
    panic!("connection still alive after 1000 timer steps");
}

#[test]
fn spoofed_initial_is_answered_with_at_most_three_times_its_size() {
    let world = world();
    // A certificate with many names makes the server's first flight far larger than
    // 3 × 1200 bytes, so the anti-amplification limit, not the flight size, stops it.
    let names: Vec<String> = (0..400).map(|i| format!("host-{i:03}.b.example")).collect();
    let mut name_refs: Vec<&str> = vec!["b.example"];
    name_refs.extend(names.iter().map(String::as_str));
    let big = world.ca.issue("b-big", &name_refs);
    let certificate_size = CertificateDer::from_pem_file(&big.cert_path)
        .expect("certificate")
        .len();
    assert!(
        certificate_size > 2 * 3600,
        "certificate only {certificate_size} B"
    );

    let now = Instant::now();
    let initial = client_initial(&peer_tls(&world.a), now);
    assert_eq!(initial.len(), 1200);

    let mut server = proto_server(&peer_tls(&big));
    let mut buf = Vec::new();
    let incoming = match server.handle(
        now,
        spoofed(40000),
        None,
        None,
        BytesMut::from(&initial[..]),
        &mut buf,
    ) {
        Some(DatagramEvent::NewConnection(incoming)) => incoming,
        _ => panic!("the Initial did not start a connection"),
    };
    assert!(!incoming.remote_address_validated());
    let (handle, mut connection) = server
        .accept(incoming, now, &mut buf, None)
        .expect("accept");

    let sent = run_unanswered(&mut server, handle, &mut connection, now);
    assert!(sent > 0, "the server never answered");
    assert!(
        sent <= 3 * initial.len(),
        "{sent} bytes sent for {} received",
        initial.len()
    );
}

/// An Initial re-encrypted under the client's Initial keys (RFC 9001 §5.2), so that a
/// test can change its plaintext and size and still have the server decrypt it.
struct InitialPacket {
    /// First byte (unprotected) through the token: everything before the Length field.
    prefix: Vec<u8>,
    packet_number: u64,
    packet_number_len: usize,
    /// The CRYPTO frame(s) without the padding.
    frames: Vec<u8>,
    keys: quinn_proto::crypto::Keys,
}

impl InitialPacket {
    /// Decrypts the client's first datagram with the keys the server derives from it.
    fn open(datagram: &[u8], tls: &PeerTls) -> InitialPacket {
        let mut packet = datagram.to_vec();
        assert_eq!(packet[0] & 0xf0, 0xc0, "long header, Initial");
        let version = u32::from_be_bytes(packet[1..5].try_into().expect("version"));
        let dcid_len = usize::from(packet[5]);
        let dcid = ConnectionId::new(&packet[6..6 + dcid_len]);
        let mut at = 6 + dcid_len;
        at += 1 + usize::from(packet[at]); // source connection ID
        let (token_len, used) = varint(&packet[at..]);
        at += used + token_len as usize;
        let prefix_end = at;
        let (length, used) = varint(&packet[at..]);
        let pn_offset = at + used;
        assert_eq!(
            pn_offset + length as usize,
            packet.len(),
            "one padded packet"
        );

        let config = tls.server_config().expect("server config");
        let keys = config.crypto.initial_keys(version, &dcid).expect("keys");
        keys.header.remote.decrypt(pn_offset, &mut packet);
        let packet_number_len = usize::from(packet[0] & 0x03) + 1;
        let header_len = pn_offset + packet_number_len;
        let packet_number = packet[pn_offset..header_len]
            .iter()
            .fold(0u64, |n, byte| n << 8 | u64::from(*byte));
        let mut payload = BytesMut::from(&packet[header_len..]);
        keys.packet
            .remote
            .decrypt(packet_number, &packet[..header_len], &mut payload)
            .expect("decrypt the client's Initial");

        // CRYPTO frames first, then PADDING (zero bytes) to the end.
        let mut end = 0;
        while end < payload.len() && payload[end] == 0x06 {
            let (_, used_offset) = varint(&payload[end + 1..]);
            let (len, used_len) = varint(&payload[end + 1 + used_offset..]);
            end += 1 + used_offset + used_len + len as usize;
        }
        assert!(end > 0, "no CRYPTO frame");
        assert!(payload[end..].iter().all(|byte| *byte == 0), "only padding");
        InitialPacket {
            prefix: packet[..prefix_end].to_vec(),
            packet_number,
            packet_number_len,
            frames: payload[..end].to_vec(),
            keys,
        }
    }

    /// Encrypts `frames`, padded so that the datagram is exactly `size` bytes.
    fn seal(&self, frames: &[u8], size: usize) -> Vec<u8> {
        let tag_len = self.keys.packet.remote.tag_len();
        let header_len = self.prefix.len() + 2 + self.packet_number_len;
        let length = size - self.prefix.len() - 2;
        assert!(length < 0x4000, "two-byte Length field");
        let mut packet = self.prefix.clone();
        packet.extend_from_slice(&(0x4000 | length as u16).to_be_bytes());
        let number = self.packet_number.to_be_bytes();
        packet.extend_from_slice(&number[8 - self.packet_number_len..]);
        packet.extend_from_slice(frames);
        assert!(packet.len() + tag_len <= size, "frames too long for {size}");
        packet.resize(size, 0);
        self.keys
            .packet
            .remote
            .encrypt(self.packet_number, &mut packet, header_len);
        self.keys
            .header
            .remote
            .encrypt(header_len - self.packet_number_len, &mut packet);
        packet
    }

    /// Where in `frames` the ClientHello's quic_transport_parameters extension
    /// (0x0039, RFC 9001 §8.2) keeps its data.
    fn transport_parameters(&self) -> std::ops::Range<usize> {
        let (_, used_offset) = varint(&self.frames[1..]);
        let (_, used_len) = varint(&self.frames[1 + used_offset..]);
        let hello = 1 + used_offset + used_len;
        assert_eq!(self.frames[hello], 0x01, "ClientHello");
        // type, length(3), legacy_version(2), random(32)
        let mut at = hello + 4 + 2 + 32;
        at += 1 + usize::from(self.frames[at]); // legacy_session_id
        at += 2 + usize::from(u16::from_be_bytes([self.frames[at], self.frames[at + 1]]));
        at += 1 + usize::from(self.frames[at]); // legacy_compression_methods
        let end = at + 2 + usize::from(u16::from_be_bytes([self.frames[at], self.frames[at + 1]]));
        at += 2;
        while at < end {
            let kind = u16::from_be_bytes([self.frames[at], self.frames[at + 1]]);
            let len = usize::from(u16::from_be_bytes([
                self.frames[at + 2],
                self.frames[at + 3],
            ]));
            if kind == 0x0039 {
                return at + 4..at + 4 + len;
            }
            at += 4 + len;
        }
        panic!("no transport parameters in the ClientHello");
    }
}

/// A QUIC variable-length integer (RFC 9000 §16): (value, bytes used).
fn varint(bytes: &[u8]) -> (u64, usize) {
    let len = 1 << (bytes[0] >> 6);
    let value = bytes[1..len]
        .iter()
        .fold(u64::from(bytes[0] & 0x3f), |n, byte| {
            n << 8 | u64::from(*byte)
        });
    (value, len)
}

/// Feeds one datagram to `server`, accepts a connection it starts and drives it until it
/// ends. Returns the bytes sent in reply; panics (fails the test) if quinn does.
fn feed(
    server: &mut quinn_proto::Endpoint,
    from: SocketAddr,
    datagram: &[u8],
    now: Instant,
) -> usize {
    let mut buf = Vec::new();
    match server.handle(now, from, None, None, BytesMut::from(datagram), &mut buf) {
        None => 0,
        Some(DatagramEvent::Response(transmit)) => transmit.size,
        Some(DatagramEvent::ConnectionEvent(..)) => 0,
        Some(DatagramEvent::NewConnection(incoming)) => {
            match server.accept(incoming, now, &mut buf, None) {
                Ok((handle, mut connection)) => {
                    run_unanswered(server, handle, &mut connection, now)
                }
                Err(error) => error.response.map_or(0, |transmit| transmit.size),
            }
        }
    }
}

#[test]
fn initial_shorter_than_1200_bytes_is_dropped() {
    let world = world();
    let now = Instant::now();
    let tls = peer_tls(&world.b);
    let initial = InitialPacket::open(&client_initial(&peer_tls(&world.a), now), &tls);

    let mut buf = Vec::new();
    let mut server = proto_server(&tls);
    let short = initial.seal(&initial.frames, 1199);
    let event = server.handle(
        now,
        spoofed(1),
        None,
        None,
        BytesMut::from(&short[..]),
        &mut buf,
    );
    assert!(event.is_none(), "a 1199-byte Initial was answered");
    assert!(buf.is_empty());

    // The same packet at 1200 bytes is a connection attempt: the drop above was for its size.
    let mut server = proto_server(&tls);
    let full = initial.seal(&initial.frames, 1200);
    match server.handle(
        now,
        spoofed(1),
        None,
        None,
        BytesMut::from(&full[..]),
        &mut buf,
    ) {
        Some(DatagramEvent::NewConnection(incoming)) => server.ignore(incoming),
        _ => panic!("the re-encoded 1200-byte Initial was not taken"),
    }
}

#[test]
fn mutated_transport_parameters_do_not_panic() {
    // SECURITY-CASES case 57: the ClientHello's transport parameters, byte-flipped and
    // re-encrypted, so that they get past packet protection and into the parsers.
    let world = world();
    let now = Instant::now();
    let tls = peer_tls(&world.b);
    let initial = InitialPacket::open(&client_initial(&peer_tls(&world.a), now), &tls);
    let parameters = initial.transport_parameters();
    assert!(!parameters.is_empty());

    // Unchanged, it is a connection attempt the server answers.
    let mut server = proto_server(&tls);
    let sent = feed(
        &mut server,
        spoofed(2),
        &initial.seal(&initial.frames, 1200),
        now,
    );
    assert!(sent > 0 && sent <= 3600, "{sent}");

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut frames = initial.frames.clone();
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            let at = parameters.start + rng.below(parameters.len());
            frames[at] ^= 1 << rng.below(8);
        }
        let mut server = proto_server(&tls);
        let sent = feed(&mut server, spoofed(3), &initial.seal(&frames, 1200), now);
        assert!(sent <= 3600, "round {round}: {sent} bytes sent");
    }
}

#[test]
fn random_datagrams_do_not_panic() {
    let world = world();
    let now = Instant::now();
    let tls = peer_tls(&world.b);
    let valid = client_initial(&peer_tls(&world.a), now);
    let mut server = proto_server(&tls);
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for round in 0..3000 {
        let datagram: Vec<u8> = match round % 3 {
            // Pure noise.
            0 => {
                let len = 1 + rng.below(1500);
                (0..len).map(|_| rng.next() as u8).collect()
            }
            // A long header of version 1, then noise: gets into Initial parsing.
            1 => {
                let len = 7 + rng.below(1400);
                let mut datagram: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                datagram[0] = 0xc0 | (datagram[0] & 0x0f);
                datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
                datagram
            }
            // A real Initial with a few bytes flipped or cut short.
            _ => {
                let mut datagram = valid.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(datagram.len());
                    datagram[at] ^= 1 << rng.below(8);
                }
                datagram.truncate(1 + rng.below(datagram.len()));
                datagram
            }
        };
        let sent = feed(&mut server, spoofed(5000), &datagram, now);
        assert!(
            sent <= 3 * datagram.len(),
            "round {round}: {sent} bytes for {}",
            datagram.len()
        );
    }
}

#[test]
fn pending_connection_attempts_are_bounded() {
    // SECURITY-CASES case 58: attempts the accept loop has not decided on yet.
    let world = world();
    let now = Instant::now();
    let client_tls = peer_tls(&world.a);
    let mut server = proto_server(&peer_tls(&world.b));
    let mut buf = Vec::new();
    let mut pending = Vec::new();
    let mut dropped = 0;
    for port in 0..(quic::MAX_INCOMING + 16) as u16 {
        let initial = client_initial(&client_tls, now);
        let from = spoofed(10_000 + port);
        match server.handle(
            now,
            from,
            None,
            None,
            BytesMut::from(&initial[..]),
            &mut buf,
        ) {
            Some(DatagramEvent::NewConnection(incoming)) => pending.push((incoming, initial)),
            None => dropped += 1,
            _ => panic!("unexpected reply to attempt {port}"),
        }
    }
    assert_eq!(pending.len(), quic::MAX_INCOMING);
    assert_eq!(dropped, 16);

    // Retransmissions of one pending attempt are buffered only up to its limit.
    let (incoming, initial) = pending.pop().expect("one pending");
    let from = incoming.remote_address();
    for _ in 0..2 * quic::INCOMING_BUFFER_SIZE as usize / initial.len() {
        let _ = server.handle(
            now,
            from,
            None,
            None,
            BytesMut::from(&initial[..]),
            &mut buf,
        );
    }
    let buffered = server.incoming_buffer_bytes();
    assert!(buffered > 0, "retransmissions not buffered");
    assert!(
        buffered <= quic::INCOMING_BUFFER_SIZE,
        "{buffered} bytes buffered for one attempt"
    );

    // Deciding on one makes room for one more.
    server.ignore(incoming);
    let initial = client_initial(&client_tls, now);
    match server.handle(
        now,
        spoofed(9999),
        None,
        None,
        BytesMut::from(&initial[..]),
        &mut buf,
    ) {
        Some(DatagramEvent::NewConnection(incoming)) => server.ignore(incoming),
        _ => panic!("no room after an attempt was decided"),
    }
    for (incoming, _) in pending {
        server.ignore(incoming);
    }
}

/// A small deterministic generator (xorshift64), so failures replay exactly.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}
