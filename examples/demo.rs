//! The quick-start demo: a private Dovecot on loopback, coi-proxy in front of it, and a
//! scripted mail client that turns COI on, receives a chat message and reads it, so that
//! the `seen` filter files it into COI/Chats. Every line the client sends and receives is
//! printed.
//!
//! Run with `scripts/demo.sh` (installs Dovecot first) or `cargo run --example demo`.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::Instant;

use support::dovecot::Dovecot;
use support::io::LineClient;
use support::proxy::{Options, Proxy};

const CONFIG: &str = "/private/vendor/vendor.dovecot/coi/config";

struct Client {
    inner: LineClient,
    next: u32,
}

impl Client {
    async fn say(&mut self, command: &str) -> Vec<String> {
        self.next += 1;
        let tag = format!("d{}", self.next);
        println!("  C: {tag} {command}");
        let started = Instant::now();
        let reply = self.inner.imap(&tag, command).await.expect("reply");
        for line in &reply {
            let shown = if line.len() > 150 {
                format!("{}…", &line[..150])
            } else {
                line.clone()
            };
            println!("  S: {shown}");
        }
        println!("     ({:.2} ms)", started.elapsed().as_secs_f64() * 1000.0);
        reply
    }
}

#[tokio::main]
async fn main() {
    let dovecot = Dovecot::start().expect("start Dovecot (run scripts/install-deps.sh first)");
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    println!("Dovecot {} (unmodified, loopback)", dovecot.imap_addr());
    println!("coi-proxy in front of it: IMAP {} (plain), {} (STARTTLS), {} (TLS); metrics http://{}/metrics\n", proxy.plain, proxy.starttls, proxy.implicit, proxy.admin);

    let mut inner = LineClient::connect(proxy.plain).await.expect("connect");
    println!("  S: {}", inner.read_line().await.expect("greeting"));
    let mut c = Client { inner, next: 0 };

    println!("\n1. Log in: the proxy adds COI to the capabilities Dovecot announces.");
    c.say("LOGIN alice secret-alice").await;

    println!("\n2. Turn COI on with the `seen` filter (COI-PROTOCOL §2.2): Dovecot alone refuses these paths;\n   the proxy answers, stores the values in Dovecot, and creates COI/Chats and COI/Contacts.");
    c.say(&format!(
        "SETMETADATA \"\" ({CONFIG}/enabled \"yes\" {CONFIG}/message-filter \"seen\")"
    ))
    .await;
    c.say(&format!("GETMETADATA (DEPTH 1) \"\" ({CONFIG})"))
        .await;
    c.say("LIST \"\" \"COI/*\"").await;

    println!(
        "\n3. A chat message arrives in INBOX (here appended; later the delivery hook does this)."
    );
    let message = "From: bob@b.example\r\nTo: alice@a.example\r\nSubject: lunch?\r\nMessage-ID: <demo-1@b.example>\r\nChat-Version: 1.0\r\n\r\nLunch at noon?\r\n";
    c.say(&format!(
        "APPEND INBOX ($Chat) {{{}+}}\r\n{message}",
        message.len()
    ))
    .await;
    c.say("SELECT INBOX").await;

    println!("\n4. Alice reads it. With filter `seen`, the proxy moves a chat message to COI/Chats once it is \\Seen;\n   the client learns of it as an ordinary EXPUNGE at its next command.");
    c.say("FETCH 1 BODY[TEXT]").await;
    c.say("NOOP").await;
    c.say("STATUS COI/Chats (MESSAGES)").await;
    c.say("LOGOUT").await;

    let metrics = proxy.metrics_text();
    println!("\nA few of the proxy's metrics:");
    for line in metrics.lines().filter(|l| {
        (l.starts_with("coi_proxy_imap_commands_total") && !l.ends_with(" 0"))
            || l.starts_with("coi_proxy_imap_connections_total")
    }) {
        println!("  {line}");
    }
    println!("\nDemo done. Chat messages crossing domains by QUIC arrive with the peer-links work (issue 4).");
}
