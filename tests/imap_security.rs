mod support;

use support::dovecot::Dovecot;
use support::proxy::{Options, Proxy};
use support::raw::{escape, Delivery, RawClient};

#[tokio::test]
#[ignore]
async fn scratch_dovecot_behaviour() {
    let dovecot = Dovecot::start().expect("dovecot");
    let proxy = Proxy::start(dovecot.imap_addr(), Options::default()).await;
    for addr in [dovecot.imap_addr(), proxy.starttls] {
        for cmd in ["NOOP", "XYZZY", "CAPABILITY", "ID", "LOGOUTX", "STARTTLSX"] {
            let mut c = RawClient::connect(addr).await.unwrap();
            let _ = c.read_line().await.unwrap();
            let inj = "y LOGIN alice secret-alice";
            let attack = format!("x {cmd} {{{}+}}\r\n{inj}\r\nzz NOOP\r\n", inj.len());
            c.send(attack.as_bytes(), Delivery::Whole).await.unwrap();
            let lines = c.read_until_tagged("zz").await;
            println!("{addr} {} => {lines:?}", escape(attack.as_bytes()));
        }
    }
    let mut c = RawClient::connect(proxy.starttls).await.unwrap();
    let _ = c.read_line().await.unwrap();
    let inj = "y LOGIN alice secret-alice";
    let attack = format!("x NOOP {{{}+}}\r\n{inj}\r\n", inj.len());
    c.send(attack.as_bytes(), Delivery::Whole).await.unwrap();
    println!("{:?}", c.read_until_tagged("x").await);
    let inj = "y2 SETMETADATA \"\" (/private/vendor/coi-proxy/config/enabled yes)";
    let attack = format!("x2 NOOP {{{}+}}\r\n{inj}\r\n", inj.len());
    c.send(attack.as_bytes(), Delivery::Whole).await.unwrap();
    println!("{:?}", c.read_until_tagged("x2").await);
    println!(
        "{:?}",
        c.command(
            "x3",
            "GETMETADATA \"\" /private/vendor/coi-proxy/config/enabled"
        )
        .await
    );
    println!("{:?}", c.command("x4", "CAPABILITY").await);
    println!(
        "{:?}",
        c.command(
            "x5",
            "GETMETADATA \"\" /private/vendor/coi-proxy/config/enabled"
        )
        .await
    );
    drop(c);
    println!("{}", dovecot.log_contents());
}
