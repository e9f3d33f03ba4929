//! The quick-start demo: two mail domains on loopback that both run coi-proxy, and a chat
//! conversation between them. The first message goes by mail; the reply, and every
//! message after it, goes straight from one proxy to the other over QUIC. Every line the
//! clients send and receive is printed, with timings.
//!
//! - a.test and b.test each have an unmodified Dovecot and Postfix, and a coi-proxy with
//!   an IMAP front, a submission front, the delivery hook (Postfix's local delivery goes
//!   through it) and a QUIC peer endpoint with a static route to the other domain's proxy
//!   (`support::peers::Peered`, the world of `tests/peer_links.rs`).
//!
//! 1. alice@a.test and bob@b.test turn COI on through their proxies' IMAP fronts.
//! 2. alice sends bob a chat message while bob waits in IDLE on COI/Chats. Proxy A has no
//!    token for bob yet, so it injects a temporary token for bob and the message takes
//!    the mail path: Postfix A, Postfix B, proxy B's hook, bob's COI/Chats. The hook keeps
//!    alice's token in bob's COI/Contacts.
//! 3. bob replies while alice idles on her COI/Chats. Proxy B finds alice's token in
//!    bob's contacts and hands the message to proxy A over QUIC (mutual TLS with the
//!    domain certificates); proxy A checks the token, stores the message and wakes alice's
//!    IDLE before bob's client gets its 250, and returns a permanent token, which proxy B
//!    then keeps in bob's contact. Neither Postfix sees the message.
//! 4. alice writes again: also over QUIC.
//!
//! Run with `scripts/demo.sh` (installs Dovecot and Postfix first) or
//! `cargo run --example demo` as root. Exits 0 when all three messages arrived by the
//! expected path; 1, with the reason, when something did not start, a message did not
//! arrive within `DEADLINE` (15 s), or it took the other path.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use support::io::LineClient;
use support::peers::{Domain, Peered, DEADLINE};
use support::postfix::{smtp, Postfix};
use support::world::enable_coi_command;

/// Longest a printed line gets.
const SHOWN: usize = 140;

/// The series that counts messages a proxy handed to its peer over QUIC and the peer
/// stored.
const QUIC_DELIVERED: &str = "coi_proxy_peer_deliveries_total{outcome=\"delivered\",path=\"quic\"}";

/// The series that counts temporary tokens a proxy verified for messages from its peers.
const TEMPORARY_VERIFIED: &str = "coi_proxy_peer_token_verifications_total{result=\"temporary\"}";

/// What went wrong, for the last line of the demo.
type Step<T> = Result<T, String>;

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

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A printed paragraph heading.
fn heading(text: &str) {
    println!("\n{text}");
}

/// An IMAP client that prints its conversation.
struct Imap {
    inner: LineClient,
    who: &'static str,
    next: u32,
}

impl Imap {
    /// Connects to `domain`'s proxy (IMAP front) and logs in as `user`.
    async fn login(domain: &Domain, user: &'static str) -> Step<Imap> {
        let mut inner = LineClient::connect(domain.proxy.plain)
            .await
            .map_err(|e| format!("{user}: connect to proxy {}: {e}", domain.name))?;
        let greeting = inner
            .read_line()
            .await
            .map_err(|e| format!("{user}: {e}"))?;
        show(&format!("{user}<"), &greeting);
        let mut imap = Imap {
            inner,
            who: user,
            next: 0,
        };
        let password = domain.dovecot.password_of(user).expect("a test user");
        imap.say(&format!("LOGIN {user} {password}")).await?;
        Ok(imap)
    }

    /// Sends `command`, prints it and every line of the answer; the answer must be OK.
    async fn say(&mut self, command: &str) -> Step<Vec<String>> {
        self.next += 1;
        let tag = format!("{}{}", &self.who[..1], self.next);
        show(&format!("{}>", self.who), &format!("{tag} {command}"));
        let started = Instant::now();
        let reply = self
            .inner
            .imap(&tag, command)
            .await
            .map_err(|e| format!("{}: {command}: {e}", self.who))?;
        for line in &reply {
            show(&format!("{}<", self.who), line);
        }
        println!("     ({:.2} ms)", ms(started.elapsed()));
        match reply.last() {
            Some(last) if last.starts_with(&format!("{tag} OK")) => Ok(reply),
            _ => Err(format!("{}: {command}: not OK: {reply:?}", self.who)),
        }
    }

    /// Like [`say`](Self::say), but prints only how many untagged lines came before the
    /// completion: for switching mailboxes, whose answers were shown in full once.
    async fn say_brief(&mut self, command: &str) -> Step<Vec<String>> {
        self.next += 1;
        let tag = format!("{}{}", &self.who[..1], self.next);
        show(&format!("{}>", self.who), &format!("{tag} {command}"));
        let reply = self
            .inner
            .imap(&tag, command)
            .await
            .map_err(|e| format!("{}: {command}: {e}", self.who))?;
        let (last, untagged) = reply.split_last().expect("a tagged line");
        show(
            &format!("{}<", self.who),
            &format!("({} untagged lines)", untagged.len()),
        );
        show(&format!("{}<", self.who), last);
        if !last.starts_with(&format!("{tag} OK")) {
            return Err(format!("{}: {command}: not OK: {reply:?}", self.who));
        }
        Ok(reply)
    }

    /// The COI-TokenOut of the first contact in COI/Contacts (which the demo's users each
    /// have one of), printed; back on COI/Chats afterwards.
    async fn show_contact(&mut self) -> Step<Token> {
        self.say_brief("EXAMINE COI/Contacts").await?;
        let lines = self
            .say("FETCH 1 BODY.PEEK[HEADER.FIELDS (COI-TokenOut)]")
            .await?;
        let token = lines
            .iter()
            .find_map(|l| l.strip_prefix("COI-TokenOut: "))
            .map(Token::parse)
            .ok_or_else(|| format!("{}'s contact holds no COI-TokenOut: {lines:?}", self.who))?;
        let kind = if token.validity == PERMANENT_VALIDITY {
            "permanent"
        } else {
            "temporary"
        };
        println!(
            "     ({} presents it to the other domain: a {kind} token, valid for {} days)",
            self.who,
            token.validity / 86_400
        );
        self.say_brief("SELECT COI/Chats").await?;
        Ok(token)
    }

    /// Sends `command` without printing it or its answer (for polling).
    async fn quiet(&mut self, command: &str) -> Step<Vec<String>> {
        self.inner
            .imap("q", command)
            .await
            .map_err(|e| format!("{}: {command}: {e}", self.who))
    }

    /// Polls (silently) until the COI-TokenOut of the first contact in COI/Contacts is a
    /// permanent token; back on COI/Chats afterwards.
    async fn wait_for_permanent_token(&mut self) -> Step<()> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.quiet("EXAMINE COI/Contacts").await?;
            let lines = self
                .quiet("FETCH 1 BODY.PEEK[HEADER.FIELDS (COI-TokenOut)]")
                .await?;
            self.quiet("SELECT COI/Chats").await?;
            let permanent = lines
                .iter()
                .filter_map(|l| l.strip_prefix("COI-TokenOut: "))
                .any(|t| Token::parse(t).validity == PERMANENT_VALIDITY);
            if permanent {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}'s contact got no permanent token within {DEADLINE:?}",
                    self.who
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Turns COI on with the `active` filter and selects COI/Chats.
    async fn enable_coi(&mut self) -> Step<()> {
        self.say(&enable_coi_command("active")).await?;
        self.say("SELECT COI/Chats").await?;
        Ok(())
    }

    /// Enters IDLE; a task of its own then reads the lines the proxy sends and notes
    /// when each arrived, so the time of `* n EXISTS` does not depend on what the demo
    /// is printing meanwhile.
    async fn idle(mut self) -> Step<Idling> {
        let who = self.who;
        show(&format!("{who}>"), "i IDLE");
        self.inner
            .write_line("i IDLE")
            .await
            .map_err(|e| format!("{who}: IDLE: {e}"))?;
        let line = self
            .inner
            .read_line()
            .await
            .map_err(|e| format!("{who}: IDLE: {e}"))?;
        show(&format!("{who}<"), &line);
        if !line.starts_with('+') {
            return Err(format!("{who}: IDLE refused: {line}"));
        }
        let task = tokio::spawn(async move {
            let deadline = Instant::now() + DEADLINE;
            let mut lines = Vec::new();
            while Instant::now() < deadline {
                match tokio::time::timeout_at(deadline.into(), self.inner.read_line()).await {
                    Ok(Ok(line)) => {
                        let exists = line.ends_with(" EXISTS");
                        lines.push((Instant::now(), line));
                        if exists {
                            return Idled {
                                imap: self,
                                lines,
                                exists: true,
                            };
                        }
                    }
                    // One read is bounded by support::io::STEP; keep waiting.
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            Idled {
                imap: self,
                lines,
                exists: false,
            }
        });
        Ok(Idling { who, task })
    }
}

/// What the IDLE reader of [`Imap::idle`] hands back: the client, the lines with the time
/// each arrived, and whether the last one is `* n EXISTS`.
struct Idled {
    imap: Imap,
    lines: Vec<(Instant, String)>,
    exists: bool,
}

/// An IDLE in progress ([`Imap::idle`]).
struct Idling {
    who: &'static str,
    task: tokio::task::JoinHandle<Idled>,
}

impl Idling {
    /// Waits (at most [`DEADLINE`]) for `* n EXISTS`, prints what arrived with its time
    /// after `since`, ends the IDLE and returns the client and the time of the EXISTS.
    async fn exists(self, since: Instant) -> Step<(Imap, Duration)> {
        let who = self.who;
        let Idled {
            mut imap,
            lines,
            exists,
        } = self
            .task
            .await
            .map_err(|e| format!("{who}'s IDLE reader: {e}"))?;
        let mut arrived = None;
        for (at, line) in &lines {
            show(&format!("{who}<"), line);
            if line.ends_with(" EXISTS") {
                let after = at.saturating_duration_since(since);
                println!("     ({:.1} ms after the end of data)", ms(after));
                arrived = Some(after);
            }
        }
        if !exists {
            return Err(format!(
                "{who}'s IDLE on COI/Chats saw no new message within {DEADLINE:?} of the end of data"
            ));
        }
        show(&format!("{who}>"), "DONE");
        imap.inner
            .write_line("DONE")
            .await
            .map_err(|e| format!("{who}: DONE: {e}"))?;
        let done = imap
            .inner
            .read_until_tagged("i")
            .await
            .map_err(|e| format!("{who}: DONE: {e}"))?;
        for line in &done {
            show(&format!("{who}<"), line);
        }
        Ok((imap, arrived.expect("the EXISTS line")))
    }
}

/// What the demo reads from a COI token (`1-created:<unix>-validity:<secs>-…`).
#[derive(Debug, PartialEq)]
struct Token {
    text: String,
    created: u64,
    validity: u64,
}

impl Token {
    fn parse(text: &str) -> Token {
        let field = |name: &str| {
            text.split('-')
                .find_map(|f| f.strip_prefix(name)?.strip_prefix(':')?.parse().ok())
                .unwrap_or(0)
        };
        Token {
            text: text.to_owned(),
            created: field("created"),
            validity: field("validity"),
        }
    }
}

/// Validity of a permanent token: 365 days.
const PERMANENT_VALIDITY: u64 = 365 * 86_400;

/// One chat message to send.
struct Chat {
    from: &'static str,
    to: &'static str,
    message_id: &'static str,
    subject: &'static str,
    text: &'static str,
}

impl Chat {
    fn user(&self) -> &'static str {
        self.from.split('@').next().expect("local part")
    }

    fn message(&self) -> String {
        let Chat {
            from,
            to,
            message_id,
            subject,
            text,
        } = self;
        format!(
            "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
             Chat-Version: 1.0\r\n\r\n{text}\r\n"
        )
    }
}

/// One SMTP command, printed with its reply; the reply must have code `want`.
async fn smtp_say(client: &mut LineClient, who: &str, line: &str, want: u16) -> Step<()> {
    show(&format!("{who}>"), line);
    let reply = smtp::command(client, line)
        .await
        .map_err(|e| format!("{who}: {line}: {e}"))?;
    show_reply(who, &reply);
    if reply.code != want {
        return Err(format!("{who}: {line}: {} {}", reply.code, reply.text()));
    }
    Ok(())
}

fn show_reply(who: &str, reply: &smtp::Reply) {
    for text in &reply.lines {
        show(&format!("{who}<"), &format!("{} {text}", reply.code));
    }
}

/// Submits `chat` through the submission front of `domain`'s proxy, printing every
/// line. Returns when the end of data was written, and how long the 250 took after it.
async fn submit(domain: &Domain, chat: &Chat) -> Step<(Instant, Duration)> {
    let user = chat.user();
    let submission = domain.proxy.submission.expect("submission listeners").plain;
    let mut client = smtp::connect(submission)
        .await
        .map_err(|e| format!("{user}: connect to proxy {}'s submission: {e}", domain.name))?;
    smtp_say(&mut client, user, &format!("EHLO {user}-laptop"), 250).await?;
    show(
        &format!("{user}>"),
        &format!("AUTH PLAIN <{user}'s credentials>"),
    );
    let password = domain.dovecot.password_of(user).expect("a test user");
    let reply = smtp::auth_plain(&mut client, user, password)
        .await
        .map_err(|e| format!("{user}: AUTH: {e}"))?;
    show_reply(user, &reply);
    if reply.code != 235 {
        return Err(format!("{user}: AUTH: {}", reply.text()));
    }
    smtp_say(
        &mut client,
        user,
        &format!("MAIL FROM:<{}>", chat.from),
        250,
    )
    .await?;
    smtp_say(&mut client, user, &format!("RCPT TO:<{}>", chat.to), 250).await?;
    smtp_say(&mut client, user, "DATA", 354).await?;
    let message = chat.message();
    for line in message.lines() {
        show(&format!("{user}>"), line);
    }
    show(&format!("{user}>"), ".");
    client
        .write_raw(message.as_bytes())
        .await
        .map_err(|e| format!("{user}: message: {e}"))?;
    client
        .write_raw(b".\r\n")
        .await
        .map_err(|e| format!("{user}: end of data: {e}"))?;
    // The clock starts once the end of data is on its way.
    let end_of_data = Instant::now();
    let reply = smtp::read_reply(&mut client)
        .await
        .map_err(|e| format!("{user}: end of data: {e}"))?;
    let accepted = end_of_data.elapsed();
    show_reply(user, &reply);
    println!("     ({:.1} ms after the end of data)", ms(accepted));
    if reply.code != 250 {
        return Err(format!(
            "{user}: end of data: {} {}",
            reply.code,
            reply.text()
        ));
    }
    smtp_say(&mut client, user, "QUIT", 221).await?;
    Ok((end_of_data, accepted))
}

/// How a message travelled, for the summary.
struct Row {
    message: &'static str,
    path: &'static str,
    accepted: Duration,
    exists: Duration,
}

/// The header fields of a message that tell its path (FETCH, printed).
async fn fetch_path_fields(imap: &mut Imap) -> Step<Vec<String>> {
    imap.say("FETCH * (FLAGS BODY.PEEK[HEADER.FIELDS (Message-ID Received X-COI-Delivery)])")
        .await
}

/// The last lines of the Postfix logs, for a failure message.
fn postfix_logs(postfixes: &[&Postfix]) -> String {
    postfixes
        .iter()
        .map(|p| {
            let log = p.log_contents();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(8)..].join("\n");
            format!("--- Postfix {} (last lines) ---\n{tail}", p.domain())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The line of `postfix`'s log that says it passed on the message with Message-ID
/// `message_id` (`status=sent`); waits for the asynchronous log writer.
fn sent_line(postfix: &Postfix, message_id: &str) -> Step<String> {
    let needle = format!("message-id=<{message_id}>");
    let wait = Duration::from_secs(5);
    let line = postfix
        .wait_for_log(&needle, wait)
        .map_err(|e| format!("Postfix {} never logged {needle}: {e}", postfix.domain()))?;
    let queue_id = line
        .split(": message-id=")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .ok_or_else(|| format!("no queue id in: {line}"))?
        .to_owned();
    let sent = postfix
        .wait_for_log_line(&[&format!(" {queue_id}: "), "status=sent"], wait)
        .map_err(|e| {
            format!(
                "Postfix {} did not pass on {queue_id}: {e}",
                postfix.domain()
            )
        })?;
    // From "postfix/<service>[pid]:" on (no syslog time and host), without the delay
    // and DSN fields.
    let sent = match sent.find("postfix/") {
        Some(at) => &sent[at..],
        None => &sent[..],
    };
    Ok(sent
        .split(", ")
        .filter(|f| {
            !["delay=", "delays=", "dsn="]
                .iter()
                .any(|p| f.starts_with(p))
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// Checks that neither Postfix logged `message_id` (which every message that passes
/// through Postfix's cleanup is logged with), and says so.
fn no_postfix_saw(postfixes: &[&Postfix], message_id: &str) -> Step<()> {
    for postfix in postfixes {
        if postfix.log_contents().contains(message_id) {
            return Err(format!(
                "Postfix {} logged <{message_id}>, which should have gone over QUIC",
                postfix.domain()
            ));
        }
        show(
            &format!("Postfix {}:", postfix.domain()),
            &format!("no log line mentions <{message_id}>"),
        );
    }
    Ok(())
}

/// Polls (silently) until `user`'s `mailbox` holds at least one message.
async fn wait_nonempty(imap: &mut Imap, mailbox: &str) -> Step<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = imap.quiet(&format!("STATUS {mailbox} (MESSAGES)")).await?;
        if status
            .iter()
            .any(|l| l.contains("MESSAGES ") && !l.contains("MESSAGES 0"))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{}'s {mailbox} stayed empty for {DEADLINE:?}",
                imap.who
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A metric of `domain`'s proxy (0 when the series does not exist yet).
fn metric(domain: &Domain, series: &str) -> f64 {
    domain.proxy.metric(series).unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    println!(
        "Starting a.test and b.test on loopback (two Dovecots, two Postfixes, two coi-proxies)…"
    );
    let started = Instant::now();
    // Peered::start panics with the name of what did not start (Dovecot or Postfix
    // missing, not running as root): say just that, without a backtrace.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        eprintln!("\ndemo failed: {message}");
    }));
    let started_world = tokio::spawn(Peered::start()).await;
    std::panic::set_hook(default_hook);
    let Ok(world) = started_world else {
        eprintln!("  run scripts/install-deps.sh first, and run the demo as root");
        std::process::exit(1);
    };
    println!("  both up in {:.0} ms", ms(started.elapsed()));
    let result = run(&world).await;
    // Stops Dovecot, Postfix and the proxies before the process exits.
    drop(world);
    match result {
        Ok(()) => {}
        Err(reason) => {
            eprintln!("\ndemo failed: {reason}");
            std::process::exit(1);
        }
    }
}

async fn run(world: &Peered) -> Step<()> {
    let (a, b) = (&world.a, &world.b);
    let postfixes = world.postfixes();
    for (domain, other) in [(a, b), (b, a)] {
        let proxy = &domain.proxy;
        println!(
            "  {}: Dovecot {} and Postfix {} (MX {}), unmodified;",
            domain.name,
            domain.dovecot.imap_addr(),
            domain.postfix.submission_addr(),
            domain.postfix.mx_addr(),
        );
        println!(
            "          coi-proxy: IMAP {}, submission {}, delivery hook {},\n                     QUIC {} with a route to {} at {}",
            proxy.plain,
            proxy.submission.expect("submission listeners").plain,
            proxy.delivery.expect("delivery hook"),
            proxy.peer.unwrap_or(domain.quic),
            other.name,
            other.quic,
        );
    }
    println!(
        "  metrics: http://{}/metrics (a.test) and http://{}/metrics (b.test)",
        a.proxy.admin, b.proxy.admin
    );
    let mut rows = Vec::new();

    heading(
        "1. alice@a.test and bob@b.test turn COI on (filter `active`) through their own proxies; each\n   \
         proxy answers the COI METADATA Dovecot does not know, and creates COI/Chats and COI/Contacts.",
    );
    let mut alice = Imap::login(a, "alice").await?;
    alice.enable_coi().await?;
    let mut bob = Imap::login(b, "bob").await?;
    bob.enable_coi().await?;

    // === message 1: alice → bob, by mail ===
    let lunch = Chat {
        from: "alice@a.test",
        to: "bob@b.test",
        message_id: "lunch.1@a.test",
        subject: "lunch?",
        text: "Lunch at noon?",
    };
    heading("2. bob waits in IDLE on COI/Chats, through proxy B.");
    let idling = bob.idle().await?;
    heading(
        "   alice sends him a chat message through proxy A. Proxy A holds no token for bob's domain\n   \
         yet, so it injects a temporary token for bob and hands the message to Postfix A.",
    );
    let (sent, accepted) = submit(a, &lunch).await?;
    heading(
        "   Postfix A relays it to Postfix B, which delivers through proxy B's hook into bob's\n   \
         COI/Chats; the hook wakes bob's IDLE.",
    );
    let (bob_back, exists) = idling
        .exists(sent)
        .await
        .map_err(|e| format!("{e}\n{}", postfix_logs(&postfixes)))?;
    bob = bob_back;
    heading("   The path: the stored copy has a Received line from each Postfix…");
    let fields = fetch_path_fields(&mut bob).await?;
    let received = fields.iter().filter(|l| l.starts_with("Received:")).count();
    if received < 2 {
        return Err(format!(
            "message 1 should have come by mail, with a Received line from each Postfix: {fields:?}"
        ));
    }
    println!("   …and each Postfix logged passing it on (Postfix A to B's MX, Postfix B to proxy B's hook):");
    for postfix in postfixes {
        let line = tokio::task::block_in_place(|| sent_line(postfix, lunch.message_id))?;
        println!("  Postfix {}: {line}", postfix.domain());
    }
    rows.push(Row {
        message: "1. alice → bob",
        path: "mail: Postfix A → Postfix B",
        accepted,
        exists,
    });
    heading(
        "   Proxy B's hook kept alice's token in bob's COI/Contacts: bob's replies can prove that\n   \
         alice's domain invited them.",
    );
    wait_nonempty(&mut bob, "COI/Contacts").await?;
    let temporary_token = bob.show_contact().await?;

    // === message 2: bob → alice, by QUIC ===
    let reply = Chat {
        from: "bob@b.test",
        to: "alice@a.test",
        message_id: "lunch.2@b.test",
        subject: "Re: lunch?",
        text: "Noon works. The usual place?",
    };
    heading("3. alice waits in IDLE on her COI/Chats, through proxy A.");
    let idling = alice.idle().await?;
    let quic_before = metric(b, QUIC_DELIVERED);
    let verified_before = metric(a, TEMPORARY_VERIFIED);
    heading(
        "   bob replies through proxy B. Proxy B finds alice's token in bob's contact, so it offers\n   \
         the message to proxy A over QUIC; proxy A checks the token and stores the message before\n   \
         bob gets his 250.",
    );
    let (sent, accepted) = submit(b, &reply).await?;
    heading("   alice's IDLE:");
    let (alice_back, exists) = idling.exists(sent).await?;
    alice = alice_back;
    heading(
        "   The path: proxy B counted a delivery over QUIC, proxy A verified the temporary token…",
    );
    let quic_after = metric(b, QUIC_DELIVERED);
    show(
        "proxy B:",
        &format!("{QUIC_DELIVERED} {quic_before} → {quic_after}"),
    );
    let verified_after = metric(a, TEMPORARY_VERIFIED);
    show(
        "proxy A:",
        &format!("{TEMPORARY_VERIFIED} {verified_before} → {verified_after}"),
    );
    if quic_after <= quic_before {
        return Err(format!(
            "message 2 should have gone over QUIC, but proxy B's {QUIC_DELIVERED} stayed at {quic_after}"
        ));
    }
    println!(
        "   …the stored copy has no Received line, only the de-duplication key proxy A added…"
    );
    let fields = fetch_path_fields(&mut alice).await?;
    if fields.iter().any(|l| l.starts_with("Received:")) {
        return Err(format!("message 2 went through a mail server: {fields:?}"));
    }
    println!("   …and neither Postfix ever saw it:");
    no_postfix_saw(&postfixes, reply.message_id)?;
    rows.push(Row {
        message: "2. bob → alice",
        path: "QUIC: proxy B → proxy A",
        accepted,
        exists,
    });
    heading(
        "   Proxy A answered the temporary token with a permanent one, which replaces it in bob's\n   \
         contact for alice:",
    );
    bob.wait_for_permanent_token().await?;
    let permanent_token = bob.show_contact().await?;
    if permanent_token == temporary_token {
        return Err("bob's contact still holds the temporary token".into());
    }

    // === message 3: alice → bob, by QUIC ===
    let again = Chat {
        from: "alice@a.test",
        to: "bob@b.test",
        message_id: "lunch.3@a.test",
        subject: "Re: lunch?",
        text: "Yes, see you there!",
    };
    heading(
        "4. bob idles again; alice answers. bob's message carried a token for her, which proxy A\n   \
         kept in her COI/Contacts: this one takes the link too.",
    );
    wait_nonempty(&mut alice, "COI/Contacts").await?;
    let idling = bob.idle().await?;
    let quic_before = metric(a, QUIC_DELIVERED);
    let (sent, accepted) = submit(a, &again).await?;
    let (bob_back, exists) = idling.exists(sent).await?;
    bob = bob_back;
    heading("   The path: proxy A counted a delivery over QUIC, the copy has no Received line, and\n   neither Postfix saw it:");
    let quic_after = metric(a, QUIC_DELIVERED);
    show(
        "proxy A:",
        &format!("{QUIC_DELIVERED} {quic_before} → {quic_after}"),
    );
    if quic_after <= quic_before {
        return Err(format!(
            "message 3 should have gone over QUIC, but proxy A's {QUIC_DELIVERED} stayed at {quic_after}"
        ));
    }
    let fields = fetch_path_fields(&mut bob).await?;
    if fields.iter().any(|l| l.starts_with("Received:")) {
        return Err(format!("message 3 went through a mail server: {fields:?}"));
    }
    no_postfix_saw(&postfixes, again.message_id)?;
    rows.push(Row {
        message: "3. alice → bob",
        path: "QUIC: proxy A → proxy B",
        accepted,
        exists,
    });
    alice.say("LOGOUT").await?;
    bob.say("LOGOUT").await?;

    heading("Summary: milliseconds after the sender's end of data");
    println!(
        "  {:<16} {:<28} {:>14} {:>20}",
        "message", "path", "sender's 250", "recipient's EXISTS"
    );
    for row in &rows {
        println!(
            "  {:<16} {:<28} {:>14.1} {:>20.1}",
            row.message,
            row.path,
            ms(row.accepted),
            ms(row.exists)
        );
    }
    println!(
        "\nOver QUIC the message is in the recipient's mailbox when the sender gets 250; by mail the\n\
         250 only means Postfix A queued it."
    );
    Ok(())
}
