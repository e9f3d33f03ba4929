//! The quick-start demo: two mail domains on loopback, each with an unmodified Dovecot and
//! Postfix and a coi-proxy in front of them, and a chat message crossing from one to the
//! other. Every line the clients send and receive is printed.
//!
//! - a.test: Dovecot A, Postfix A (SASL by Dovecot A), proxy A (submission front with
//!   this domain's token secrets).
//! - b.test: Dovecot B, Postfix B (local delivery by LMTP to proxy B's delivery hook),
//!   proxy B (IMAP front, delivery hook, mailbox writer).
//!
//! bob@b.test turns COI on with the `active` filter and waits in IDLE on COI/Chats;
//! alice@a.test submits a chat message through proxy A, which injects a token for bob;
//! Postfix A relays it to Postfix B, which delivers it through proxy B's hook: the hook
//! files it into bob's COI/Chats with `$Chat` and captures alice's token into bob's
//! COI/Contacts; bob's IDLE reports it. (Between domains that both run coi-proxy the
//! message will later travel by QUIC instead of SMTP: issue 4.)
//!
//! Run with `scripts/demo.sh` (installs Dovecot and Postfix first) or
//! `cargo run --example demo` as root.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use support::io::LineClient;
use support::postfix::smtp;
use support::world::{enable_coi_command, World};

/// Longest a printed line gets.
const SHOWN: usize = 140;

fn show(prefix: &str, line: &str) {
    if line.len() > SHOWN {
        let mut end = SHOWN;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        println!("  {prefix} {}…", &line[..end]);
    } else {
        println!("  {prefix} {line}");
    }
}

/// An IMAP client that prints its conversation.
struct Imap {
    inner: LineClient,
    who: &'static str,
    next: u32,
}

impl Imap {
    async fn say(&mut self, command: &str) -> Vec<String> {
        self.next += 1;
        let tag = format!("{}{}", &self.who[..1], self.next);
        show(&format!("{}>", self.who), &format!("{tag} {command}"));
        let started = Instant::now();
        let reply = self.inner.imap(&tag, command).await.expect("reply");
        for line in &reply {
            show(&format!("{}<", self.who), line);
        }
        println!("     ({:.2} ms)", started.elapsed().as_secs_f64() * 1000.0);
        reply
    }
}

/// One SMTP command, printed with its reply.
async fn smtp_say(client: &mut LineClient, line: &str) -> smtp::Reply {
    show("alice>", line);
    let reply = smtp::command(client, line).await.expect("SMTP reply");
    for text in &reply.lines {
        show("alice<", &format!("{} {text}", reply.code));
    }
    reply
}

#[tokio::main]
async fn main() {
    let install = "run scripts/install-deps.sh first (and run as root)";
    let world = World::builder()
        .try_start()
        .await
        .unwrap_or_else(|e| panic!("{e}; {install}"));
    let World {
        dovecot_a,
        dovecot_b,
        postfix_a,
        postfix_b,
        proxy_a,
        ..
    } = &world;
    let proxy_b = world.proxy_b();
    let hook = proxy_b.delivery.expect("hook listener");
    let submission = world.submission();

    println!(
        "a.test: Dovecot {} and Postfix {} (unmodified), coi-proxy submission {submission}",
        dovecot_a.imap_addr(),
        postfix_a.submission_addr()
    );
    println!("b.test: Dovecot {} and Postfix MX {} (unmodified), coi-proxy IMAP {} and delivery hook {hook}", dovecot_b.imap_addr(), postfix_b.mx_addr(), proxy_b.plain);
    println!(
        "metrics: http://{}/metrics and http://{}/metrics\n",
        proxy_a.admin, proxy_b.admin
    );

    println!("1. bob@b.test logs in through proxy B and turns COI on with the `active` filter: the proxy\n   answers the COI METADATA Dovecot does not know, and creates COI/Chats and COI/Contacts.");
    let mut inner = LineClient::connect(proxy_b.plain).await.expect("connect");
    show("bob<", &inner.read_line().await.expect("greeting"));
    let mut bob = Imap {
        inner,
        who: "bob",
        next: 0,
    };
    bob.say("LOGIN bob secret-bob").await;
    bob.say(&enable_coi_command("active")).await;
    bob.say("SELECT COI/Chats").await;

    println!("\n2. bob waits in IDLE on COI/Chats.");
    show("bob>", "i IDLE");
    bob.inner.write_line("i IDLE").await.expect("IDLE");
    show("bob<", &bob.inner.read_line().await.expect("+ idling"));

    println!("\n3. alice@a.test submits a chat message through proxy A (AUTH is checked by Postfix A, which asks Dovecot A).");
    let mut alice = smtp::connect(submission).await.expect("connect");
    smtp_say(&mut alice, "EHLO alice-laptop").await;
    show("alice>", "AUTH PLAIN <alice's credentials>");
    let reply = smtp::auth_plain(&mut alice, "alice", "secret-alice")
        .await
        .expect("AUTH");
    show("alice<", &format!("{} {}", reply.code, reply.text()));
    smtp_say(&mut alice, "MAIL FROM:<alice@a.test>").await;
    smtp_say(&mut alice, "RCPT TO:<bob@b.test>").await;
    smtp_say(&mut alice, "DATA").await;
    let message = "From: Alice <alice@a.test>\r\nTo: Bob <bob@b.test>\r\nSubject: lunch?\r\nMessage-ID: <chat$demo.1@a.test>\r\nChat-Version: 1.0\r\n\r\nLunch at noon?\r\n";
    for line in message.lines() {
        show("alice>", line);
    }
    show("alice>", ".");
    let sent = Instant::now();
    alice
        .write_raw(format!("{message}.\r\n").as_bytes())
        .await
        .expect("message");
    let reply = smtp::read_reply(&mut alice).await.expect("end of data");
    show("alice<", &format!("{} {}", reply.code, reply.text()));
    smtp_say(&mut alice, "QUIT").await;

    println!("\n4. Postfix A relays to Postfix B, which delivers through proxy B's hook into bob's COI/Chats;\n   bob's IDLE reports it.");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline.into(), bob.inner.read_line()).await {
            Ok(Ok(line)) => {
                show("bob<", &line);
                if line.ends_with(" EXISTS") {
                    println!(
                        "     ({:.1} ms after alice's end of data)",
                        sent.elapsed().as_secs_f64() * 1000.0
                    );
                    break;
                }
            }
            _ => {
                println!("  (no EXISTS within 10 s)");
                break;
            }
        }
    }
    show("bob>", "DONE");
    bob.inner.write_line("DONE").await.expect("DONE");
    let done = bob.inner.read_until_tagged("i").await.expect("IDLE end");
    for line in &done {
        show("bob<", line);
    }

    println!("\n5. bob reads it: it carries $Chat, and the token proxy A made for bob (bound to bob→alice).");
    bob.say("FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (From Subject X-COI-Temporary-Token X-COI-Server)])")
        .await;

    println!("\n6. The hook captured that token into bob's COI/Contacts (right after storing the message):\n   bob's replies can prove that alice's domain invited them.");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let status = bob
            .inner
            .imap("s", "STATUS COI/Contacts (MESSAGES)")
            .await
            .expect("STATUS");
        if status.iter().any(|l| l.contains("MESSAGES 1")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bob.say("SELECT COI/Contacts").await;
    bob.say("FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject COI-From-Hash COI-TokenOut)]")
        .await;
    bob.say("LOGOUT").await;

    println!("\nA few of the proxies' metrics:");
    for (name, proxy) in [("A", proxy_a), ("B", proxy_b)] {
        for line in proxy.metrics_text().lines().filter(|l| {
            !l.starts_with('#')
                && !l.ends_with(" 0")
                && (l.starts_with("coi_proxy_submission_messages_total")
                    || l.starts_with("coi_proxy_submission_token_injections_total")
                    || l.starts_with("coi_proxy_delivery_recipients_total")
                    || l.starts_with("coi_proxy_delivery_token_captures_total")
                    || l.starts_with("coi_proxy_imap_idle_wakes_total"))
        }) {
            println!("  proxy {name}: {line}");
        }
    }
    println!(
        "\nDemo done. Between two coi-proxy domains the message will travel by QUIC (issue 4)."
    );
}
