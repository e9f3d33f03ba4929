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
