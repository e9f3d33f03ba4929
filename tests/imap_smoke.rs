mod support;

use support::dovecot::Dovecot;
use support::io::{tagged_status, LineClient};
use support::proxy::{Options, Proxy};

#[tokio::test]
async fn login_select_and_coi_capability_through_the_proxy() {
    let dovecot = Dovecot::start().expect("dovecot");
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = LineClient::connect(proxy.plain).await.unwrap();
    let greeting = c.read_line().await.unwrap();
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev1"),
        "{greeting}"
    );
    assert!(
        !greeting.contains(" COI"),
        "COI is not advertised before login: {greeting}"
    );
    let reply = c.imap("a", "LOGIN alice secret-alice").await.unwrap();
    assert_eq!(tagged_status(&reply), "OK", "{reply:?}");
    assert!(reply.last().unwrap().contains(" COI]"), "{reply:?}");
    let reply = c.imap("b", "SELECT INBOX").await.unwrap();
    assert_eq!(tagged_status(&reply), "OK", "{reply:?}");
    let reply = c.imap("c", "CAPABILITY").await.unwrap();
    assert!(reply[0].ends_with(" COI"), "{reply:?}");
    assert!(!reply[0].contains("COMPRESS"), "{reply:?}");
    let reply = c.imap("d", "LOGOUT").await.unwrap();
    assert_eq!(tagged_status(&reply), "OK", "{reply:?}");
}

/// SECURITY-CASES case 30: Dovecot must see the real client address, not the proxy's,
/// both in its logs and for its per-IP authentication penalty.
#[tokio::test]
async fn dovecot_sees_the_clients_address_not_the_proxys() {
    let dovecot = Dovecot::start().expect("dovecot");
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.77:0".parse().unwrap()).unwrap();
    let stream = support::io::step("connect", socket.connect(proxy.plain))
        .await
        .unwrap();
    let mut c = LineClient::from_stream(stream);
    c.read_line().await.unwrap();
    assert_eq!(
        tagged_status(&c.imap("a", "LOGIN alice secret-alice").await.unwrap()),
        "OK"
    );
    // Dovecot writes its log asynchronously: poll for the line, within a deadline.
    let deadline = std::time::Instant::now() + support::io::STEP;
    let login = loop {
        let log = dovecot.log_contents();
        if let Some(line) = log.lines().find(|l| l.contains("Login: user=<alice>")) {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no login line in:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(login.contains("rip=127.0.0.77"), "{login}");
}

/// After the grace period even a session in IDLE (whose command never finishes by
/// itself) is told BYE, so shutdown is bounded.
#[tokio::test]
async fn shutdown_ends_an_idle_session_with_bye() {
    let dovecot = Dovecot::start().expect("dovecot");
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    assert_eq!(
        tagged_status(&c.imap("b", "SELECT INBOX").await.unwrap()),
        "OK"
    );
    c.write_line("c IDLE").await.unwrap();
    assert!(c.read_line().await.unwrap().starts_with('+'));
    let stopping = tokio::spawn(proxy.stop(std::time::Duration::from_millis(100)));
    assert_eq!(
        c.read_line().await.unwrap(),
        "* BYE [UNAVAILABLE] Server shutting down"
    );
    support::io::step("shutdown", async {
        stopping.await.map_err(std::io::Error::other)
    })
    .await
    .unwrap();
}
