//! SECURITY-CASES case 30, brute force through a trusted proxy: failed authentications
//! from one client address make its next attempts wait (doubling), whichever session
//! they come in, and a session ends after three failures. Dovecot sees the real client
//! address (tests/imap_smoke.rs), so its own penalty applies per client as well.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::dovecot::Dovecot;
use support::io::{step, tagged_status, LineClient};
use support::proxy::{Options, Proxy};

async fn connect_from(source: &str, proxy: SocketAddr) -> LineClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = step("connect", socket.connect(proxy)).await.unwrap();
    let mut c = LineClient::from_stream(stream);
    assert!(c.read_line().await.unwrap().starts_with("* OK"));
    c
}

async fn start(delay_ms: u64) -> (Dovecot, Proxy) {
    let dovecot = Dovecot::start().expect("dovecot");
    let options = Options {
        plaintext_auth: true,
        auth_failure_delay_ms: Some(delay_ms),
        ..Options::default()
    };
    let proxy = Proxy::start(dovecot.imap_addr(), options).await;
    (dovecot, proxy)
}

#[tokio::test]
async fn three_failed_authentications_end_the_session() {
    let (_dovecot, proxy) = start(1).await;
    let mut c = connect_from("127.0.0.81", proxy.plain).await;
    for tag in ["a", "b", "c"] {
        let reply = c.imap(tag, "LOGIN alice wrong").await.unwrap();
        assert_eq!(tagged_status(&reply), "NO", "{reply:?}");
    }
    assert_eq!(
        c.read_line().await.unwrap(),
        "* BYE [AUTHENTICATIONFAILED] Too many failed authentications"
    );
    assert!(c.read_line().await.is_err(), "closed");
}

#[tokio::test]
async fn a_foreign_authorization_identity_counts_as_a_failure() {
    let (_dovecot, proxy) = start(1).await;
    let mut c = connect_from("127.0.0.82", proxy.plain).await;
    // "bob\0alice\0secret-alice": alice trying to act as bob.
    for tag in ["a", "b", "c"] {
        let reply = c
            .imap(tag, "AUTHENTICATE PLAIN Ym9iAGFsaWNlAHNlY3JldC1hbGljZQ==")
            .await
            .unwrap();
        assert!(
            reply[0].starts_with(&format!("{tag} NO [AUTHORIZATIONFAILED]")),
            "{reply:?}"
        );
    }
    assert_eq!(
        c.read_line().await.unwrap(),
        "* BYE [AUTHENTICATIONFAILED] Too many failed authentications"
    );
}

#[tokio::test]
async fn failures_from_one_address_make_its_next_attempts_wait_across_sessions() {
    let (_dovecot, proxy) = start(400).await;
    let mut first = connect_from("127.0.0.83", proxy.plain).await;
    assert_eq!(
        tagged_status(&first.imap("a", "LOGIN alice wrong").await.unwrap()),
        "NO"
    );
    drop(first);
    // Another address is not affected.
    let other_started = Instant::now();
    let mut other = connect_from("127.0.0.84", proxy.plain).await;
    assert_eq!(
        tagged_status(&other.imap("a", "LOGIN bob secret-bob").await.unwrap()),
        "OK"
    );
    let other_took = other_started.elapsed();
    // The same address, in a new session, waits out its penalty even with the right password.
    let started = Instant::now();
    let mut again = connect_from("127.0.0.83", proxy.plain).await;
    assert_eq!(
        tagged_status(&again.imap("b", "LOGIN alice secret-alice").await.unwrap()),
        "OK"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "penalised login took {took:?}"
    );
    assert!(
        other_took < took,
        "unpenalised {other_took:?} vs penalised {took:?}"
    );
}

/// The penalty is measured on a successful login, which Dovecot answers at once (it
/// answers failures on its own 0.5 s timer, which would hide a shorter wait).
async fn successful_login_time(source: &str, proxy: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut c = connect_from(source, proxy).await;
    assert_eq!(
        tagged_status(&c.imap("ok", "LOGIN alice secret-alice").await.unwrap()),
        "OK"
    );
    started.elapsed()
}

async fn fail_times(source: &str, proxy: SocketAddr, failures: usize) {
    let mut c = connect_from(source, proxy).await;
    for n in 0..failures {
        assert_eq!(
            tagged_status(&c.imap(&format!("f{n}"), "LOGIN alice wrong").await.unwrap()),
            "NO"
        );
    }
}

#[tokio::test]
async fn the_wait_doubles_with_every_failure() {
    let (_dovecot, proxy) = start(150).await;
    // The wait counts from the last failure, so each login follows its failures at once.
    fail_times("127.0.0.85", proxy.plain, 1).await;
    let after_one = successful_login_time("127.0.0.85", proxy.plain).await;
    fail_times("127.0.0.86", proxy.plain, 3).await;
    let after_three = successful_login_time("127.0.0.86", proxy.plain).await;
    // 150 ms after one failure; 150 · 2² = 600 ms after three (less the moment between
    // the proxy recording the failure and this client starting its clock).
    assert!(after_one >= Duration::from_millis(120), "{after_one:?}");
    assert!(after_three >= Duration::from_millis(550), "{after_three:?}");
    assert!(
        after_three >= after_one + Duration::from_millis(300),
        "{after_one:?} vs {after_three:?}"
    );
}
