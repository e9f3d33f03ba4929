//! One IMAP session: a client connection, its upstream connection to Dovecot, and the
//! policy between them.
//!
//! The session frames both directions itself ([`Framer`]) and forwards only complete,
//! checked lines and literals upstream. One `select!` loop reads from both sides while it
//! writes to both (bounded output queues), so neither peer can deadlock the proxy. The
//! few commands the proxy answers itself (STARTTLS, COMPRESS, the COI METADATA entries,
//! and the mailbox commands with COI side effects) are run as a barrier: the session waits
//! until every earlier command has its tagged reply, then talks to the upstream alone with
//! its own tags ([`Session::upstream_command`]).
//!
//! IDLE wake (DESIGN.md §6): once authenticated, the session is in the
//! [session registry](crate::proxy::registry). When the proxy stores a message into the
//! mailbox the client idles on, the session ends the backend's IDLE and starts it again
//! with the client's tag ([`Idle`]), so that Dovecot reports the message at once instead
//! of after its notification delay. The client sees only the new untagged responses:
//! the backend's tagged reply to the interrupted IDLE and its second `+` are swallowed.

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tracing::{debug, info};

use super::coi;
use super::Shared;
use crate::config::{BareLfPolicy, ListenerTls};
use crate::error::{ErrorKind, SessionError, Side};
use crate::metrics::{CommandClass, CommandOutcome, Direction};
use crate::net::shutdown::{Phase, Shutdown};
use crate::net::stream::{MaybeTls, OutQueue};
use crate::proto::imap::capability::{self, CapabilityView};
use crate::proto::imap::command::{self, CommandHead, CommandName};
use crate::proto::imap::fragment::{
    Fragment, Framer, FramerOptions, LineEnding, LiteralHeader, LiteralMode, LongLines, StreamKind,
};
use crate::proto::imap::response::{self, ResponseHead, Status};
use crate::proxy::registry::Registration;

/// Above this many queued bytes towards a side, the session stops reading from the other
/// side until the queue drains: per-session memory stays bounded whatever the peers do.
const HIGH_WATER: usize = 256 * 1024;

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Upper bound for a command the proxy assembles whole before acting (LOGIN,
/// AUTHENTICATE, METADATA, mailbox commands): they are small by nature.
const ASSEMBLE_LIMIT: usize = 64 * 1024;

/// Invalid commands in a row that end a session, as Dovecot counts them
/// (`CLIENT_MAX_BAD_COMMANDS` of imap-login and of imap): the proxy answers some BADs
/// itself, which Dovecot never sees, so it must count too.
const MAX_BAD_COMMANDS_BEFORE_LOGIN: u32 = 3;
const MAX_BAD_COMMANDS: u32 = 20;

/// Failed authentications that end a session (SECURITY-CASES case 30); together with the
/// per-address penalty this makes guessing passwords through the proxy slow.
const MAX_AUTH_FAILURES: u32 = 3;

/// Upper bound for one untagged response to a command of the proxy's own (METADATA values
/// of the COI entries are a few bytes; anything near this is a misbehaving upstream).
const INTERNAL_REPLY_LIMIT: usize = 1024 * 1024;

type SessionResult<T> = Result<T, SessionError>;

fn downstream(kind: ErrorKind, detail: &'static str) -> SessionError {
    SessionError::new(Side::Downstream, kind, detail)
}

fn upstream(kind: ErrorKind, detail: &'static str) -> SessionError {
    SessionError::new(Side::Upstream, kind, detail)
}

/// One direction of a connection: a framer over the read half, a queue over the write half.
struct Peer {
    reader: ReadHalf<MaybeTls>,
    writer: WriteHalf<MaybeTls>,
    framer: Framer,
    out: OutQueue,
    needs_flush: bool,
    side: Side,
}

impl Peer {
    fn new(stream: MaybeTls, framer: Framer, side: Side) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        Self {
            reader,
            writer,
            framer,
            out: OutQueue::default(),
            needs_flush: false,
            side,
        }
    }

    fn send_line(&mut self, line: &[u8]) {
        let mut buf = Vec::with_capacity(line.len() + 2);
        buf.extend_from_slice(line);
        buf.extend_from_slice(b"\r\n");
        self.out.push(buf);
    }

    /// Queues a line received from the other side as it is: no copy, a shared CRLF.
    fn relay_line(&mut self, line: Bytes) {
        self.out.push(line);
        self.out.push(Bytes::from_static(b"\r\n"));
    }

    /// Queues a line that may or may not have been rewritten.
    fn send_cow(&mut self, original: &Bytes, line: std::borrow::Cow<'_, [u8]>) {
        match line {
            std::borrow::Cow::Borrowed(_) => self.relay_line(original.clone()),
            std::borrow::Cow::Owned(rewritten) => self.send_line(&rewritten),
        }
    }

    /// Writes everything queued and flushes.
    async fn drain(&mut self) -> SessionResult<()> {
        while !self.out.is_empty() {
            let n = write_some(&mut self.writer, &self.out)
                .await
                .map_err(|e| SessionError::io(self.side, e))?;
            self.out.advance(n);
        }
        self.writer
            .flush()
            .await
            .map_err(|e| SessionError::io(self.side, e))?;
        self.needs_flush = false;
        Ok(())
    }

    /// Reads once into the framer; `Ok(false)` at end of stream.
    async fn fill(&mut self) -> SessionResult<bool> {
        let n = self
            .reader
            .read_buf(self.framer.input_buffer(READ_CHUNK))
            .await
            .map_err(|e| SessionError::io(self.side, e))?;
        Ok(n > 0)
    }
}

async fn write_some(writer: &mut WriteHalf<MaybeTls>, out: &OutQueue) -> std::io::Result<usize> {
    let slices = out.slices(64);
    let n = writer.write_vectored(&slices).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    Ok(n)
}

/// What happens to the client message being received.
enum Inbound {
    /// Between commands.
    Between,
    /// Streaming the current command to the upstream.
    Forwarding,
    /// Collecting a small command whole before acting on it.
    Assembling(Assembly),
    /// The command was already answered; its remaining fragments are dropped.
    Discarding,
}

struct Assembly {
    tag: Vec<u8>,
    name: CommandName,
    /// The command's wire form after the name, literals inline as `{n}\r\n` + bytes.
    args: Vec<u8>,
    /// The wire form as it will be forwarded: synchronising literals become `{n+}`.
    forward: Vec<u8>,
}

/// Why client input is not being processed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Wait {
    /// A forwarded command waits for the upstream's `+` (literal, AUTHENTICATE, IDLE).
    Continuation {
        tag: Vec<u8>,
        purpose: ContinuationPurpose,
    },
    /// An assembled command waits for every earlier command to finish.
    Barrier,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ContinuationPurpose {
    /// A literal of a forwarded command. The proxy always announces it to the upstream
    /// as synchronising, so the upstream itself agrees to read it; `client_waits` says
    /// whether the client used `{n}` too (then it sees the `+`) or `{n+}` (then the `+`
    /// is the proxy's alone).
    Literal {
        client_waits: bool,
    },
    Sasl,
    Idle,
}

/// What the next client line means, apart from a command.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LineMode {
    Command,
    /// A SASL response for the relayed AUTHENTICATE LOGIN with this tag (the only
    /// mechanism relayed step by step; PLAIN goes upstream in one line).
    SaslResponse {
        tag: Vec<u8>,
    },
    /// A SASL PLAIN response the proxy itself asked for.
    LocalPlainResponse {
        tag: Vec<u8>,
    },
    /// `DONE`, ending the IDLE with this tag.
    IdleDone {
        tag: Vec<u8>,
    },
}

/// A command sent upstream whose tagged reply has not arrived yet.
struct InFlight {
    tag: Vec<u8>,
    class: CommandClass,
    effect: Effect,
    started: Instant,
}

/// What a tagged OK changes in the session.
#[derive(Clone, Debug)]
enum Effect {
    None,
    Authenticate {
        user: Option<String>,
    },
    Select {
        mailbox: Vec<u8>,
        read_only: bool,
        /// The name as sent, for the IDLE wake (see `Session::selected_name`).
        name: Option<Vec<u8>>,
    },
    /// A STORE or FETCH that may set `\Seen` on these unseen `$Chat` messages (sequence
    /// numbers, valid until the next command that allows EXPUNGE).
    SeenCandidates(Vec<u32>),
    Unselect,
    Logout,
}

impl Effect {
    fn changes_state(&self) -> bool {
        !matches!(self, Effect::None)
    }
}

/// How the current multi-part upstream response is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutboundMessage {
    Between,
    Relaying,
}

/// Session facts the policy reads.
#[derive(Debug, Default)]
pub(super) struct State {
    pub tls_active: bool,
    pub user: Option<String>,
    pub selected: Option<Vec<u8>>,
    /// The selected mailbox was opened with EXAMINE: nothing sets `\Seen` there.
    pub read_only: bool,
    /// The user's COI configuration, read once per selected mailbox.
    pub coi: Option<crate::coi::config::UserConfig>,
    /// Sequence numbers of INBOX `$Chat` messages that may have become `\Seen` and wait for the
    /// next command during which the seen filter may move them (RFC 9051 §7.4.1 forbids
    /// EXPUNGE responses at other times).
    pub seen_pending: Vec<u32>,
    greeted: bool,
    logout: bool,
}

pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    listener: ListenerTls,
    client: Peer,
    upstream: Peer,
    pub(super) state: State,
    inbound: Inbound,
    line_mode: LineMode,
    wait: Option<Wait>,
    outbound: OutboundMessage,
    in_flight: VecDeque<InFlight>,
    next_internal_tag: u64,
    deadline: Instant,
    shutdown: Shutdown,
    /// The COI mailbox hierarchy separator, learned once per session.
    pub(super) separator: Option<u8>,
    /// An assembled command waiting for its barrier.
    pending: Option<Assembly>,
    /// BAD replies since the last command that was not BAD.
    bad_commands: u32,
    /// Failed LOGIN/AUTHENTICATE in this session.
    auth_failures: u32,
    /// The client's address, for the authentication penalty.
    peer_ip: Option<std::net::IpAddr>,
    /// A command line held at a barrier (see `must_hold`), handled again once every earlier
    /// command is answered and the seen filter's moves, if any, have run.
    replay: Option<(Bytes, LineEnding, Option<LiteralHeader>)>,
    /// While true, mailbox updates from internal commands are not relayed (the client is
    /// leaving the mailbox they concern).
    pub(super) swallow_updates: bool,
    /// This session in the session registry, from its authentication on.
    registration: Option<Registration>,
    /// The selected mailbox's name as the client sent it (quoting or literal removed,
    /// modified UTF-7 kept), for the IDLE wake: unlike `state.selected` it is known also
    /// when the name came as a literal.
    selected_name: Option<Vec<u8>>,
    /// The literal of a SELECT/EXAMINE whose mailbox name is a literal, while it is
    /// forwarded.
    select_literal: Option<Vec<u8>>,
    /// The client's IDLE, while the proxy may restart it.
    idle: Option<Idle>,
}

/// Longest mailbox name collected from a SELECT literal for the IDLE wake; a longer one
/// is not woken (Dovecot's own limit is lower).
const MAX_WAKE_NAME: usize = 1024;

/// A client IDLE that the proxy may restart upstream (DESIGN.md §6).
///
/// A restart: in [`IdlePhase::Idling`] a wake sends `DONE` upstream (`Ending`); the
/// backend answers the untagged updates, which are relayed, and its tagged OK for the
/// client's IDLE, which is swallowed; then the proxy sends `<tag> IDLE` again
/// (`Restarting`) and swallows the `+`. Races:
/// - the client's own line (`DONE`) while `Ending` or `Restarting` is kept in
///   `client_end` and client input waits behind it. A `DONE` that arrives while `Ending`
///   is not sent at all: the backend's tagged reply to the proxy's `DONE` goes to the
///   client as the answer to its own, and the IDLE is not sent again. Otherwise the line
///   goes upstream after the `+` of the re-sent IDLE, as it would have without the wake
///   (any line but `DONE` makes Dovecot answer BAD).
/// - a wake while `Starting`, `Ending` or `Restarting` is remembered (`wake_pending`,
///   however many arrive) and acted on once the backend idles again: the message may
///   have been stored after the backend's last look at the mailbox.
/// - a tagged reply other than OK to the proxy's `DONE`, or any tagged reply before the
///   `+` of the re-sent IDLE (NO or BAD), is the client's tag: it goes to the client and
///   ends its IDLE; a line the client sent meanwhile is dropped with it.
#[derive(Debug)]
struct Idle {
    tag: Vec<u8>,
    phase: IdlePhase,
    wake_pending: bool,
    client_end: Option<Bytes>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdlePhase {
    /// The client's IDLE went upstream; the backend's `+` has not come yet.
    Starting,
    /// Both the client and the backend idle.
    Idling,
    /// The proxy sent `DONE`; the backend's tagged reply is swallowed.
    Ending,
    /// The proxy sent the IDLE again; the backend's `+` is swallowed.
    Restarting,
    /// The client's line that ends the IDLE went upstream.
    Done,
}

/// Parsed reply to one of the proxy's own upstream commands.
pub(super) struct InternalReply {
    pub status: Status,
    /// The tagged line after the tag, e.g. `NO [CANNOT] text`.
    pub line_after_tag: Vec<u8>,
    /// Untagged responses collected for the caller, in wire form with literals inline.
    pub untagged: Vec<Vec<u8>>,
}

impl Session {
    pub(super) fn new(
        shared: Arc<Shared>,
        listener: ListenerTls,
        client: MaybeTls,
        upstream_stream: MaybeTls,
        shutdown: Shutdown,
    ) -> Self {
        let limits = &shared.config.limits;
        let client_framer = Framer::new(FramerOptions {
            max_line: limits.max_line_bytes,
            long_lines: LongLines::Reject,
            stream: StreamKind::Commands,
        });
        let upstream_framer = Framer::new(FramerOptions {
            max_line: limits.max_line_bytes,
            long_lines: LongLines::Stream,
            stream: StreamKind::Responses,
        });
        let tls_active = client.is_tls();
        let deadline = Instant::now() + shared.config.timeouts.pre_auth;
        Self {
            shared,
            listener,
            client: Peer::new(client, client_framer, Side::Downstream),
            upstream: Peer::new(upstream_stream, upstream_framer, Side::Upstream),
            state: State {
                tls_active,
                ..State::default()
            },
            inbound: Inbound::Between,
            line_mode: LineMode::Command,
            wait: None,
            outbound: OutboundMessage::Between,
            in_flight: VecDeque::new(),
            next_internal_tag: 1,
            deadline,
            shutdown,
            separator: None,
            pending: None,
            bad_commands: 0,
            auth_failures: 0,
            peer_ip: None,
            replay: None,
            swallow_updates: false,
            registration: None,
            selected_name: None,
            select_literal: None,
            idle: None,
        }
    }

    /// Runs the session to its end. Errors are reported to the client (BYE) where
    /// possible and returned for logging.
    pub(super) async fn run(mut self, peer: std::net::SocketAddr) -> SessionResult<()> {
        self.peer_ip = Some(peer.ip());
        let result = match self.announce_client(peer).await {
            Ok(()) => self.run_loop().await,
            Err(e) => Err(e),
        };
        let result = match result {
            Err(e) => {
                // After the upstream's own BYE was relayed, the client has been told.
                if let (Some(bye), false) = (e.imap_bye(), self.state.logout) {
                    self.client.send_line(bye.as_bytes());
                }
                Err(e)
            }
            ok => ok,
        };
        for pending in self.in_flight.drain(..) {
            self.shared.metrics.imap.command_finished(
                pending.class,
                CommandOutcome::Aborted,
                pending.started.elapsed(),
            );
        }
        // Best effort: the client may already be gone.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.client.drain()).await;
        let _ = self.client.writer.shutdown().await;
        result
    }

    /// Tells Dovecot the real client address (RFC 2971 ID with Dovecot's `x-originating-*`
    /// fields, honoured from `login_trusted_networks`), so that its logs and its per-IP
    /// authentication penalty apply to the client instead of to the proxy. The greeting,
    /// which arrives first, is then relayed as usual.
    async fn announce_client(&mut self, peer: std::net::SocketAddr) -> SessionResult<()> {
        // The banner first: a command sent before it makes Dovecot answer with a
        // provisional "Waiting for authentication process" line instead.
        self.relay_greeting().await?;
        if self.state.logout {
            return Ok(());
        }
        let command = format!(
            "ID (\"x-originating-ip\" \"{}\" \"x-originating-port\" \"{}\")",
            peer.ip(),
            peer.port()
        );
        self.upstream_command(command.as_bytes()).await?;
        Ok(())
    }

    /// Reads the upstream's greeting and relays it (capabilities filtered).
    async fn relay_greeting(&mut self) -> SessionResult<()> {
        let deadline = Instant::now() + self.shared.config.timeouts.upstream_reply;
        loop {
            if let Some(fragment) = self.upstream.framer.next_fragment() {
                return match fragment {
                    Fragment::Line {
                        line,
                        literal: None,
                        ..
                    } => self.on_upstream_head(line),
                    _ => Err(upstream(ErrorKind::Protocol, "malformed greeting")),
                };
            }
            tokio::select! {
                read = self.upstream.fill() => {
                    if !read? {
                        return Err(upstream(ErrorKind::Closed, "upstream closed before its greeting"));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(upstream(ErrorKind::Timeout, "no greeting from the upstream"));
                }
            }
        }
    }

    async fn run_loop(&mut self) -> SessionResult<()> {
        // One timer and one shutdown waiter for the whole session: re-creating them on
        // every pass costs measurable latency per command. The timer is moved only when
        // it fires before the (extended) deadline.
        let timer = tokio::time::sleep_until(self.deadline);
        tokio::pin!(timer);
        let mut shutdown = self.shutdown.clone();
        let closing_signal = async move { shutdown.reached(Phase::Closing).await };
        tokio::pin!(closing_signal);
        loop {
            self.process_upstream()?;
            self.process_client()?;
            // Barrier work talks to the upstream alone: every earlier command must be
            // answered and no response may be half relayed.
            if self.wait == Some(Wait::Barrier)
                && self.in_flight.is_empty()
                && self.outbound == OutboundMessage::Between
            {
                self.wait = None;
                self.run_assembled().await?;
                continue;
            }
            if self.state.logout && self.in_flight.is_empty() && self.client.out.is_empty() {
                return Ok(());
            }
            // The grace period is over: commands still running (an IDLE, a slow FETCH)
            // end with the session.
            if self.shutdown.phase() >= Phase::Closing {
                return Err(SessionError::new(
                    Side::Internal,
                    ErrorKind::Shutdown,
                    "shutdown",
                ));
            }
            // Unprocessed client input is bounded by one read beyond the line limit, so an
            // incomplete line of any allowed length can still be completed.
            let client_read = self.upstream.out.len() < HIGH_WATER
                && self.client.framer.buffered()
                    < READ_CHUNK.max(self.shared.config.limits.max_line_bytes + 2);
            let upstream_read = self.client.out.len() < HIGH_WATER;
            let client_write = !self.client.out.is_empty() || self.client.needs_flush;
            let upstream_write = !self.upstream.out.is_empty() || self.upstream.needs_flush;
            tokio::select! {
                read = self.client.reader.read_buf(self.client.framer.input_buffer(READ_CHUNK)), if client_read => {
                    if read.map_err(|e| SessionError::io(Side::Downstream, e))? == 0 {
                        return Err(downstream(ErrorKind::Closed, "client closed the connection"));
                    }
                    if self.state.user.is_some() {
                        self.deadline = Instant::now() + self.shared.config.timeouts.idle;
                    }
                }
                read = self.upstream.reader.read_buf(self.upstream.framer.input_buffer(READ_CHUNK)), if upstream_read => {
                    if read.map_err(|e| SessionError::io(Side::Upstream, e))? == 0 {
                        if self.state.logout {
                            return Ok(());
                        }
                        return Err(upstream(ErrorKind::Closed, "upstream closed the connection"));
                    }
                }
                written = drive_write(&mut self.client.writer, &mut self.client.out, &mut self.client.needs_flush), if client_write => {
                    let n = written.map_err(|e| SessionError::io(Side::Downstream, e))?;
                    self.account(Direction::ToClient, n);
                }
                written = drive_write(&mut self.upstream.writer, &mut self.upstream.out, &mut self.upstream.needs_flush), if upstream_write => {
                    let n = written.map_err(|e| SessionError::io(Side::Upstream, e))?;
                    self.account(Direction::ToUpstream, n);
                }
                () = &mut timer => {
                    if Instant::now() >= self.deadline {
                        return Err(downstream(ErrorKind::Timeout, "session deadline passed"));
                    }
                    timer.as_mut().reset(self.deadline);
                }
                // Resolves once; after that the phase check above ends the session.
                () = &mut closing_signal => {}
                () = woken(self.registration.as_mut()), if self.idle.is_some() => self.on_wake(),
            }
        }
    }

    fn client_framer(&self) -> Framer {
        Framer::new(FramerOptions {
            max_line: self.shared.config.limits.max_line_bytes,
            long_lines: LongLines::Reject,
            stream: StreamKind::Commands,
        })
    }

    fn account(&self, direction: Direction, n: usize) {
        if n > 0 {
            self.shared.metrics.imap.bytes(direction, n as u64);
        }
    }

    /// Whether a STORE or FETCH may newly set `\Seen` in a writable INBOX, so that the
    /// seen filter must look at it (COI-PROTOCOL §2.6).
    fn may_set_seen_in_inbox(&self, head: &CommandHead<'_>) -> bool {
        let in_inbox =
            self.state.selected.as_deref() == Some(b"INBOX".as_slice()) && !self.state.read_only;
        in_inbox
            && match head.name {
                CommandName::Store => command::store_adds_seen(head.args),
                CommandName::Fetch => command::fetch_sets_seen(head.args),
                _ => false,
            }
    }

    fn view(&self) -> CapabilityView {
        CapabilityView {
            tls_active: self.state.tls_active,
            starttls_offered: self.listener == ListenerTls::Starttls && self.shared.tls.is_some(),
            authenticated: self.state.user.is_some(),
            plaintext_auth_allowed: self.shared.config.insecure_allow_plaintext_auth,
            append_limit: self.shared.config.limits.max_literal_bytes,
        }
    }

    // === client → upstream ===

    fn process_client(&mut self) -> SessionResult<()> {
        while self.wait.is_none() && !self.state.logout && !self.client_input_held() {
            let Some(fragment) = self.client.framer.next_fragment() else {
                break;
            };
            self.on_client_fragment(fragment)?;
            self.check_bad_commands()?;
        }
        Ok(())
    }

    fn count_reply(&mut self, bad: bool) {
        self.bad_commands = if bad { self.bad_commands + 1 } else { 0 };
    }

    fn bad_command_limit(&self) -> u32 {
        if self.state.user.is_some() {
            MAX_BAD_COMMANDS
        } else {
            MAX_BAD_COMMANDS_BEFORE_LOGIN
        }
    }

    fn check_bad_commands(&self) -> SessionResult<()> {
        if self.auth_failures >= MAX_AUTH_FAILURES {
            return Err(downstream(
                ErrorKind::AuthenticationFailures,
                "too many failed authentications",
            ));
        }
        if self.bad_commands >= self.bad_command_limit() {
            return Err(downstream(ErrorKind::Protocol, "too many invalid commands"));
        }
        Ok(())
    }

    /// Whether the next client fragment must wait:
    /// - while a response is half relayed, a reply of the proxy's own would land inside it;
    /// - at a command boundary, while a command that changes the session's state (login,
    ///   mailbox selection, a seen-filter STORE) is in flight, the next command must be
    ///   judged in the state that command leaves behind.
    fn client_input_held(&self) -> bool {
        let relaying = self.outbound == OutboundMessage::Relaying;
        let boundary =
            matches!(self.inbound, Inbound::Between) && self.line_mode == LineMode::Command;
        // What follows the line that ends a restarted IDLE waits until that line is
        // upstream or answered.
        let idle_ending = self.idle.as_ref().is_some_and(|i| i.client_end.is_some());
        relaying
            || idle_ending
            || (boundary && self.in_flight.iter().any(|f| f.effect.changes_state()))
    }

    /// Whether a new command must wait for a barrier before it is handled:
    /// - the seen filter has moves to run and this command allows EXPUNGE responses;
    /// - the proxy would answer it itself while earlier commands are still in flight: its
    ///   reply must not overtake theirs.
    fn must_hold(&self, line: &[u8], ending: LineEnding) -> bool {
        if self.line_mode != LineMode::Command {
            return false;
        }
        let verb = Verb::of(line);
        let seen_moves = !self.state.seen_pending.is_empty() && Verb::allows_expunge(verb);
        seen_moves
            || (Verb::authenticates(verb) && self.auth_penalty().is_some())
            || (!self.in_flight.is_empty() && !self.forwards_unchanged(verb, ending))
    }

    /// Until when an authentication from this client must wait (case 30).
    fn auth_penalty(&self) -> Option<Instant> {
        self.shared
            .penalties
            .wait_until(self.peer_ip?, Instant::now())
    }

    /// Whether a command is simply relayed (so it may be pipelined behind others).
    fn forwards_unchanged(&self, verb: Option<Verb>, ending: LineEnding) -> bool {
        if ending == LineEnding::BareLf && self.shared.config.bare_lf == BareLfPolicy::Reject {
            return false;
        }
        verb.is_some_and(|v| {
            !matches!(
                v.name,
                CommandName::Authenticate
                    | CommandName::Compress
                    | CommandName::Create
                    | CommandName::Delete
                    | CommandName::GetMetadata
                    | CommandName::Login
                    | CommandName::Rename
                    | CommandName::SetMetadata
                    | CommandName::Starttls
            )
        })
    }

    fn on_client_fragment(&mut self, fragment: Fragment) -> SessionResult<()> {
        let (line, ending, literal) = match fragment {
            Fragment::LineTooLong => {
                return Err(downstream(ErrorKind::TooBig, "command line too long"));
            }
            Fragment::LinePart { .. } => unreachable!("client framer rejects long lines"),
            Fragment::LiteralData(data) => {
                match &mut self.inbound {
                    Inbound::Forwarding => {
                        if let Some(name) = &mut self.select_literal {
                            // Bounded: a longer name is not used anyway.
                            if name.len() <= MAX_WAKE_NAME {
                                name.extend_from_slice(&data);
                            }
                        }
                        self.upstream.out.push(data);
                    }
                    Inbound::Assembling(a) => {
                        a.args.extend_from_slice(&data);
                        a.forward.extend_from_slice(&data);
                    }
                    Inbound::Discarding | Inbound::Between => {}
                }
                return Ok(());
            }
            Fragment::Line {
                line,
                ending,
                literal,
                ..
            } => (line, ending, literal),
        };
        if matches!(self.inbound, Inbound::Between) && self.must_hold(&line, ending) {
            // Handled again at the barrier, when every earlier command is answered.
            self.replay = Some((line, ending, literal));
            self.pending = Some(Assembly {
                tag: Vec::new(),
                name: CommandName::Other,
                args: Vec::new(),
                forward: Vec::new(),
            });
            self.wait = Some(Wait::Barrier);
            return Ok(());
        }
        if ending == LineEnding::BareLf
            && self.shared.config.bare_lf == BareLfPolicy::Reject
            && matches!(self.inbound, Inbound::Between)
            && self.line_mode != LineMode::Command
        {
            // A DONE or SASL line cannot be answered with a tagged BAD; the exchange
            // cannot go on.
            return Err(downstream(
                ErrorKind::Protocol,
                "bare LF during IDLE or SASL",
            ));
        }
        if ending == LineEnding::BareLf && self.shared.config.bare_lf == BareLfPolicy::Reject {
            let tag = match &self.inbound {
                Inbound::Assembling(a) => Some(a.tag.clone()),
                _ => command::salvage_tag(&line).map(<[u8]>::to_vec),
            };
            if matches!(self.inbound, Inbound::Forwarding) {
                // Part of the command is upstream already; it cannot be finished safely.
                return Err(downstream(
                    ErrorKind::Protocol,
                    "bare LF inside a forwarded command",
                ));
            }
            self.reply_bad(tag.as_deref(), "Line must end with CRLF");
            return self.finish_rejected(literal);
        }
        match std::mem::replace(&mut self.inbound, Inbound::Between) {
            Inbound::Between => self.on_client_head(&line, literal),
            Inbound::Forwarding => {
                if line.iter().any(|&b| command::is_forbidden_control(b)) {
                    // The command's start is upstream already; it cannot be answered BAD.
                    return Err(downstream(
                        ErrorKind::Protocol,
                        "control character in a command",
                    ));
                }
                self.upstream.send_cow(&line, synchronising(&line, literal));
                self.inbound = Inbound::Forwarding;
                if let Some(name) = self.select_literal.take() {
                    self.note_select_literal(name);
                }
                self.after_forwarded_line(literal, false)
            }
            Inbound::Assembling(mut a) => {
                if line.iter().any(|&b| command::is_forbidden_control(b)) {
                    // Nothing of it went upstream yet: refuse it like a bad first line.
                    self.reply_local(
                        &a.tag,
                        class_of(a.name),
                        "BAD",
                        &command::CommandError::ControlCharacter.to_string(),
                    );
                    return self.finish_rejected(literal);
                }
                a.args.extend_from_slice(&line);
                a.forward.extend_from_slice(&forwardable(&line, literal));
                self.continue_assembly(a, literal)
            }
            Inbound::Discarding => self.finish_rejected(literal),
        }
    }

    /// A line that starts a new client message.
    fn on_client_head(
        &mut self,
        line: &Bytes,
        literal: Option<LiteralHeader>,
    ) -> SessionResult<()> {
        match std::mem::replace(&mut self.line_mode, LineMode::Command) {
            LineMode::Command => {}
            LineMode::IdleDone { .. } => return self.on_idle_done(line, literal),
            LineMode::SaslResponse { tag } => return self.on_sasl_response(line, literal, tag),
            LineMode::LocalPlainResponse { tag } => {
                return self.on_local_plain_response(line, literal, tag)
            }
        }
        let head = match command::command_head(line) {
            Ok(head) => head,
            Err(error) => {
                let tag = command::salvage_tag(line).map(<[u8]>::to_vec);
                self.reply_bad(tag.as_deref(), &error.to_string());
                return self.finish_rejected(literal);
            }
        };
        let tag = head.tag.to_vec();
        let authenticated = self.state.user.is_some();
        self.select_literal = None;
        match head.name {
            CommandName::Starttls => self.on_starttls(&tag, literal),
            CommandName::Compress => {
                self.reply_local(
                    &tag,
                    CommandClass::Other,
                    "NO",
                    "[CANNOT] COMPRESS is not available through this proxy",
                );
                self.finish_rejected(literal)
            }
            CommandName::Login | CommandName::Authenticate if authenticated => {
                self.reply_local(&tag, CommandClass::Login, "BAD", "Already authenticated");
                self.finish_rejected(literal)
            }
            CommandName::Login | CommandName::Authenticate if !self.view().auth_allowed() => {
                self.reply_local(
                    &tag,
                    CommandClass::Login,
                    "NO",
                    "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
                );
                self.finish_rejected(literal)
            }
            CommandName::Login => self.start_assembly(line, &head, literal),
            CommandName::Authenticate => self.on_authenticate(&head, literal),
            CommandName::GetMetadata
            | CommandName::SetMetadata
            | CommandName::Create
            | CommandName::Delete
            | CommandName::Rename
                if authenticated =>
            {
                self.start_assembly(line, &head, literal)
            }
            CommandName::Idle if authenticated => {
                self.forward_head(line, &head, Effect::None, literal)?;
                if literal.is_none() {
                    self.start_idle(&tag);
                    self.wait = Some(Wait::Continuation {
                        tag,
                        purpose: ContinuationPurpose::Idle,
                    });
                }
                Ok(())
            }
            CommandName::Select | CommandName::Examine if authenticated => {
                let parsed = command::mailbox(head.args).ok();
                let name = parsed.as_ref().map(|(_, m)| m.clone());
                let mailbox = parsed.map(|(_, m)| m).unwrap_or_default();
                let read_only = head.name == CommandName::Examine;
                // `SELECT {n}`: the name is the literal that follows.
                let name_is_literal = name.is_none()
                    && literal.is_some()
                    && head.args.first() == Some(&b'{')
                    && head.args.last() == Some(&b'}');
                let effect = Effect::Select {
                    mailbox,
                    read_only,
                    name,
                };
                self.forward_head(line, &head, effect, literal)?;
                if name_is_literal && matches!(self.inbound, Inbound::Forwarding) {
                    self.select_literal = Some(Vec::new());
                }
                Ok(())
            }
            CommandName::Store | CommandName::Fetch
                if literal.is_none() && self.may_set_seen_in_inbox(&head) =>
            {
                // The candidates are looked up at a barrier before the command goes on.
                self.pending = Some(Assembly {
                    tag,
                    name: head.name,
                    args: line.to_vec(),
                    forward: Vec::new(),
                });
                self.wait = Some(Wait::Barrier);
                Ok(())
            }
            CommandName::Close | CommandName::Unselect => {
                self.forward_head(line, &head, Effect::Unselect, literal)
            }
            CommandName::Logout => self.forward_head(line, &head, Effect::Logout, literal),
            _ => self.forward_head(line, &head, Effect::None, literal),
        }
    }

    fn forward_head(
        &mut self,
        line: &Bytes,
        head: &CommandHead<'_>,
        effect: Effect,
        literal: Option<LiteralHeader>,
    ) -> SessionResult<()> {
        if let Some(lit) = literal {
            if lit.len > self.shared.config.limits.max_literal_bytes {
                return self.refuse_big_literal(head.tag, lit);
            }
        }
        self.upstream.send_cow(line, synchronising(line, literal));
        self.in_flight.push_back(InFlight {
            tag: head.tag.to_vec(),
            class: class_of(head.name),
            effect,
            started: Instant::now(),
        });
        self.inbound = Inbound::Forwarding;
        self.after_forwarded_line(literal, true)
    }

    /// After a line of a forwarded command went upstream: the command ends, or its literal
    /// follows (at once, or after the upstream's `+`).
    fn after_forwarded_line(
        &mut self,
        literal: Option<LiteralHeader>,
        head: bool,
    ) -> SessionResult<()> {
        let Some(lit) = literal else {
            self.inbound = Inbound::Between;
            return Ok(());
        };
        if !head && lit.len > self.shared.config.limits.max_literal_bytes {
            // Part of the command is upstream already and cannot be withdrawn.
            return Err(downstream(ErrorKind::TooBig, "literal exceeds the limit"));
        }
        // Whatever the client announced, the literal's bytes go upstream only after the
        // upstream's `+`: a server that does not expect a literal there (Dovecot after
        // `NOOP`, say) would otherwise run those bytes as commands.
        let tag = self
            .in_flight
            .back()
            .map(|f| f.tag.clone())
            .unwrap_or_default();
        self.wait = Some(Wait::Continuation {
            tag,
            purpose: ContinuationPurpose::Literal {
                client_waits: lit.mode == LiteralMode::Sync,
            },
        });
        Ok(())
    }

    fn refuse_big_literal(&mut self, tag: &[u8], lit: LiteralHeader) -> SessionResult<()> {
        match lit.mode {
            LiteralMode::Sync => {
                self.reply_local(
                    tag,
                    CommandClass::Append,
                    "NO",
                    "[TOOBIG] Literal exceeds the size limit",
                );
                self.client.framer.reject_literal();
                self.inbound = Inbound::Between;
                Ok(())
            }
            // The bytes are on their way and would be read as commands (RFC 7888 §4).
            LiteralMode::NonSync => {
                self.reply_local(
                    tag,
                    CommandClass::Append,
                    "BAD",
                    "[TOOBIG] Literal exceeds the size limit",
                );
                Err(downstream(
                    ErrorKind::TooBig,
                    "non-synchronising literal exceeds the limit",
                ))
            }
        }
    }

    /// The current command has been answered; drop whatever of it is still to come.
    fn finish_rejected(&mut self, literal: Option<LiteralHeader>) -> SessionResult<()> {
        match literal {
            None => self.inbound = Inbound::Between,
            Some(lit) if lit.mode == LiteralMode::Sync => {
                // No `+` was sent: the client will not send the literal.
                self.client.framer.reject_literal();
                self.inbound = Inbound::Between;
            }
            Some(lit) if lit.len > self.shared.config.limits.max_literal_bytes => {
                return Err(downstream(
                    ErrorKind::TooBig,
                    "non-synchronising literal exceeds the limit",
                ));
            }
            Some(_) => self.inbound = Inbound::Discarding,
        }
        Ok(())
    }

    fn start_assembly(
        &mut self,
        line: &[u8],
        head: &CommandHead<'_>,
        literal: Option<LiteralHeader>,
    ) -> SessionResult<()> {
        // The forwarded form keeps the checked head (`tag SP name SP`) as received; a
        // synchronising literal becomes `{n+}` because the proxy has sent the `+` itself.
        let mut forward = line[..line.len() - head.args.len()].to_vec();
        forward.extend_from_slice(&forwardable(head.args, literal));
        let assembly = Assembly {
            tag: head.tag.to_vec(),
            name: head.name,
            args: head.args.to_vec(),
            forward,
        };
        self.continue_assembly(assembly, literal)
    }

    fn continue_assembly(
        &mut self,
        mut a: Assembly,
        literal: Option<LiteralHeader>,
    ) -> SessionResult<()> {
        let Some(lit) = literal else {
            self.inbound = Inbound::Between;
            self.wait = Some(Wait::Barrier);
            self.pending = Some(a);
            return Ok(());
        };
        if a.args.len() as u64 + lit.len > ASSEMBLE_LIMIT as u64 {
            let tag = a.tag.clone();
            if lit.mode == LiteralMode::NonSync {
                self.reply_local(&tag, class_of(a.name), "BAD", "[TOOBIG] Command too large");
                return Err(downstream(ErrorKind::TooBig, "command too large"));
            }
            self.reply_local(&tag, class_of(a.name), "NO", "[TOOBIG] Command too large");
            self.client.framer.reject_literal();
            self.inbound = Inbound::Between;
            return Ok(());
        }
        a.args.extend_from_slice(b"\r\n");
        a.forward.extend_from_slice(b"\r\n");
        if lit.mode == LiteralMode::Sync {
            self.client.send_line(b"+ Ready for literal data");
            self.client.framer.accept_literal();
        }
        self.inbound = Inbound::Assembling(a);
        Ok(())
    }

    /// Acts on a complete assembled command once every earlier command has finished.
    async fn run_assembled(&mut self) -> SessionResult<()> {
        let Some(a) = self.pending.take() else {
            return Ok(());
        };
        if let Some((line, ending, literal)) = self.replay.take() {
            let verb = Verb::of(&line);
            if let Some(until) = self.auth_penalty().filter(|_| Verb::authenticates(verb)) {
                tokio::time::sleep_until(until).await;
            }
            if !self.state.seen_pending.is_empty() && Verb::allows_expunge(verb) {
                let pending = std::mem::take(&mut self.state.seen_pending);
                self.swallow_updates = Verb::leaves_mailbox(verb);
                let moved = coi::move_seen(self, &pending).await;
                self.swallow_updates = false;
                moved?;
            }
            return self.on_client_fragment(Fragment::Line {
                line,
                ending,
                head: true,
                literal,
            });
        }
        match a.name {
            CommandName::Store | CommandName::Fetch => {
                let line = Bytes::from(a.args);
                let Ok(head) = command::command_head(&line) else {
                    return Ok(());
                };
                let candidates = coi::seen_candidates(self, &head).await?;
                let effect = if candidates.is_empty() {
                    Effect::None
                } else {
                    Effect::SeenCandidates(candidates)
                };
                self.forward_head(&line, &head, effect, None)
            }
            CommandName::Starttls => self.starttls(&a.tag).await,
            CommandName::Login => {
                let user = match command::login_userid(&a.args) {
                    Ok(user) => user,
                    Err(e) => {
                        self.reply_local(&a.tag, CommandClass::Login, "BAD", &e.to_string());
                        return Ok(());
                    }
                };
                self.forward_whole(
                    a,
                    Effect::Authenticate {
                        user: Some(String::from_utf8_lossy(&user).into_owned()),
                    },
                );
                Ok(())
            }
            CommandName::GetMetadata
            | CommandName::SetMetadata
            | CommandName::Create
            | CommandName::Delete
            | CommandName::Rename => match command::intercepted(a.name, &a.args) {
                Ok(parsed) => coi::run(self, &a.tag, &a.forward, parsed).await,
                Err(e) => {
                    self.reply_local(&a.tag, class_of(a.name), "BAD", &e.to_string());
                    Ok(())
                }
            },
            _ => {
                self.forward_whole(a, Effect::None);
                Ok(())
            }
        }
    }

    fn forward_whole(&mut self, a: Assembly, effect: Effect) {
        let mut wire = a.forward;
        wire.extend_from_slice(b"\r\n");
        self.upstream.out.push(wire);
        self.in_flight.push_back(InFlight {
            tag: a.tag,
            class: class_of(a.name),
            effect,
            started: Instant::now(),
        });
    }

    fn on_starttls(&mut self, tag: &[u8], literal: Option<LiteralHeader>) -> SessionResult<()> {
        let available = self.listener == ListenerTls::Starttls && self.shared.tls.is_some();
        if !available || self.state.tls_active || self.state.user.is_some() || literal.is_some() {
            self.reply_local(
                tag,
                CommandClass::Starttls,
                "BAD",
                "STARTTLS not available now",
            );
            return self.finish_rejected(literal);
        }
        self.pending = Some(Assembly {
            tag: tag.to_vec(),
            name: CommandName::Starttls,
            args: Vec::new(),
            forward: Vec::new(),
        });
        self.wait = Some(Wait::Barrier);
        Ok(())
    }

    /// STARTTLS (RFC 9051 §6.2.1): the proxy terminates TLS itself; the upstream session
    /// is not involved.
    async fn starttls(&mut self, tag: &[u8]) -> SessionResult<()> {
        let started = Instant::now();
        if self.client.framer.buffered() > 0 {
            // Plaintext pipelined behind STARTTLS would run inside TLS: command injection
            // (SECURITY-CASES case 10). Close instead of discarding.
            return Err(downstream(
                ErrorKind::Protocol,
                "data pipelined after STARTTLS",
            ));
        }
        let mut ok = tag.to_vec();
        ok.extend_from_slice(b" OK Begin TLS negotiation now");
        self.client.send_line(&ok);
        self.client.drain().await?;
        let Some(acceptor) = self.shared.tls.clone() else {
            return Err(SessionError::new(
                Side::Internal,
                ErrorKind::Tls,
                "no TLS configuration",
            ));
        };
        let detached = Peer::new(MaybeTls::Detached, self.client_framer(), Side::Downstream);
        let old = std::mem::replace(&mut self.client, detached);
        let stream = old.reader.unsplit(old.writer);
        let MaybeTls::Plain(tcp) = stream else {
            return Err(SessionError::new(
                Side::Internal,
                ErrorKind::Tls,
                "STARTTLS on a TLS stream",
            ));
        };
        let listener = super::listener_kind(self.listener);
        let timeout = self.shared.config.timeouts.tls_handshake;
        let (outcome, result) = crate::net::tls::accept(&acceptor, tcp, timeout).await;
        self.shared.metrics.imap.tls_handshake(listener, outcome);
        let tls = result?;
        // Everything learned before TLS is forgotten (RFC 3207 §4.2 in spirit): a fresh
        // framer, and the client must ask for capabilities again.
        self.client = Peer::new(tls, self.client_framer(), Side::Downstream);
        self.state.tls_active = true;
        self.shared.metrics.imap.command_finished(
            CommandClass::Starttls,
            CommandOutcome::Ok,
            started.elapsed(),
        );
        Ok(())
    }

    fn on_authenticate(
        &mut self,
        head: &CommandHead<'_>,
        literal: Option<LiteralHeader>,
    ) -> SessionResult<()> {
        let tag = head.tag.to_vec();
        if literal.is_some() {
            self.reply_local(
                &tag,
                CommandClass::Authenticate,
                "BAD",
                "Invalid AUTHENTICATE arguments",
            );
            return self.finish_rejected(literal);
        }
        let (mechanism, initial) = match command::authenticate(head.args) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.reply_local(&tag, CommandClass::Authenticate, "BAD", &e.to_string());
                return Ok(());
            }
        };
        if mechanism.eq_ignore_ascii_case(b"PLAIN") {
            return match initial {
                Some(response) => self.forward_plain(&tag, response),
                None => {
                    self.client.send_line(b"+ ");
                    self.line_mode = LineMode::LocalPlainResponse { tag };
                    Ok(())
                }
            };
        }
        if mechanism.eq_ignore_ascii_case(b"LOGIN") {
            // AUTH=LOGIN: the user name is the initial response or the first answer.
            let user = initial
                .filter(|ir| *ir != b"=")
                .and_then(|ir| base64::engine::general_purpose::STANDARD.decode(ir).ok())
                .map(|name| String::from_utf8_lossy(&name).into_owned());
            let mut line = tag.clone();
            line.extend_from_slice(b" AUTHENTICATE LOGIN");
            if let Some(ir) = initial {
                line.push(b' ');
                line.extend_from_slice(ir);
            }
            self.upstream.send_line(&line);
            self.in_flight.push_back(InFlight {
                tag: tag.clone(),
                class: CommandClass::Authenticate,
                effect: Effect::Authenticate { user },
                started: Instant::now(),
            });
            self.wait = Some(Wait::Continuation {
                tag,
                purpose: ContinuationPurpose::Sasl,
            });
            return Ok(());
        }
        // Dovecot's own words for a mechanism it does not offer.
        self.reply_local(
            &tag,
            CommandClass::Authenticate,
            "NO",
            "[ALERT] Unsupported authentication mechanism.",
        );
        Ok(())
    }

    fn on_local_plain_response(
        &mut self,
        line: &[u8],
        literal: Option<LiteralHeader>,
        tag: Vec<u8>,
    ) -> SessionResult<()> {
        if literal.is_some() {
            self.reply_local(
                &tag,
                CommandClass::Authenticate,
                "BAD",
                "Invalid SASL response",
            );
            return self.finish_rejected(literal);
        }
        if line == b"*" {
            self.reply_local(
                &tag,
                CommandClass::Authenticate,
                "BAD",
                "Authentication aborted by client",
            );
            return Ok(());
        }
        self.forward_plain(&tag, line)
    }

    /// SASL PLAIN (RFC 4616) is checked by the proxy and forwarded with SASL-IR: the
    /// authorization identity must be empty or equal to the authentication identity,
    /// because the proxy learns who the user is from it.
    fn forward_plain(&mut self, tag: &[u8], response: &[u8]) -> SessionResult<()> {
        if response.iter().any(|&b| command::is_forbidden_control(b)) {
            return Err(downstream(
                ErrorKind::Protocol,
                "invalid SASL response line",
            ));
        }
        let decoded = match response {
            b"=" => Some(Vec::new()),
            _ => base64::engine::general_purpose::STANDARD
                .decode(response)
                .ok(),
        };
        let mut user = None;
        if let Some(decoded) = decoded {
            let mut parts = decoded.split(|&b| b == 0);
            if let (Some(authzid), Some(authcid), Some(_password), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            {
                if !authzid.is_empty() && authzid != authcid {
                    // An attempt to act as someone else counts as a failed authentication.
                    self.auth_failures += 1;
                    if let Some(ip) = self.peer_ip {
                        self.shared.penalties.failed(ip, Instant::now());
                    }
                    self.reply_local(
                        tag,
                        CommandClass::Authenticate,
                        "NO",
                        "[AUTHORIZATIONFAILED] Authorization identity must equal the authentication identity",
                    );
                    return Ok(());
                }
                user = Some(String::from_utf8_lossy(authcid).into_owned());
            }
        }
        // A malformed response goes on as well: Dovecot refuses it in its own words, and
        // without a user name an OK would end the session anyway.
        let mut line = tag.to_vec();
        line.extend_from_slice(b" AUTHENTICATE PLAIN ");
        line.extend_from_slice(response);
        self.upstream.send_line(&line);
        self.in_flight.push_back(InFlight {
            tag: tag.to_vec(),
            class: CommandClass::Authenticate,
            effect: Effect::Authenticate { user },
            started: Instant::now(),
        });
        Ok(())
    }

    fn on_sasl_response(
        &mut self,
        line: &[u8],
        literal: Option<LiteralHeader>,
        tag: Vec<u8>,
    ) -> SessionResult<()> {
        // The line is framed and holds no control character; whether it is valid base64
        // is Dovecot's to judge (it answers NO and the session goes on).
        if literal.is_some() || line.iter().any(|&b| command::is_forbidden_control(b)) {
            return Err(downstream(
                ErrorKind::Protocol,
                "invalid SASL response line",
            ));
        }
        // AUTH=LOGIN: the first response is the user name.
        if let Some(InFlight {
            effect: Effect::Authenticate { user: user @ None },
            ..
        }) = self.in_flight.iter_mut().find(|f| f.tag == tag)
        {
            if let Ok(name) = base64::engine::general_purpose::STANDARD.decode(line) {
                *user = Some(String::from_utf8_lossy(&name).into_owned());
            }
        }
        self.upstream.send_line(line);
        self.wait = Some(Wait::Continuation {
            tag,
            purpose: ContinuationPurpose::Sasl,
        });
        Ok(())
    }

    fn on_idle_done(&mut self, line: &Bytes, literal: Option<LiteralHeader>) -> SessionResult<()> {
        if literal.is_some() || line.iter().any(|&b| command::is_forbidden_control(b)) {
            self.upstream.send_line(b"DONE");
            return Err(downstream(ErrorKind::Protocol, "expected DONE during IDLE"));
        }
        if let Some(idle) = &mut self.idle {
            match idle.phase {
                IdlePhase::Ending | IdlePhase::Restarting => {
                    // The backend is between two IDLEs of the proxy's restart.
                    idle.client_end = Some(line.clone());
                    return Ok(());
                }
                IdlePhase::Idling | IdlePhase::Starting => idle.phase = IdlePhase::Done,
                IdlePhase::Done => {}
            }
        }
        // Anything but DONE ends the IDLE too: Dovecot answers `BAD Expected DONE.` and
        // goes on (RFC 2177), so the checked line is passed on for it to judge.
        self.upstream.send_line(line);
        Ok(())
    }

    // === upstream → client ===

    fn process_upstream(&mut self) -> SessionResult<()> {
        while let Some(fragment) = self.upstream.framer.next_fragment() {
            self.on_upstream_fragment(fragment)?;
        }
        self.check_bad_commands()?;
        Ok(())
    }

    fn on_upstream_fragment(&mut self, fragment: Fragment) -> SessionResult<()> {
        match fragment {
            Fragment::LineTooLong => unreachable!("upstream framer streams long lines"),
            Fragment::LiteralData(data) => self.client.out.push(data),
            Fragment::LinePart { bytes, .. } => {
                self.client.out.push(bytes);
                self.outbound = OutboundMessage::Relaying;
            }
            Fragment::Line { line, literal, .. } if self.outbound == OutboundMessage::Relaying => {
                self.client.out.push(line);
                self.client.out.push(Bytes::from_static(b"\r\n"));
                if literal.is_none() {
                    self.outbound = OutboundMessage::Between;
                }
            }
            Fragment::Line { line, literal, .. } => {
                if literal.is_some() {
                    self.outbound = OutboundMessage::Relaying;
                }
                self.on_upstream_head(line)?;
            }
        }
        Ok(())
    }

    fn on_upstream_head(&mut self, line: Bytes) -> SessionResult<()> {
        let head = response::response_head(&line)
            .map_err(|_| upstream(ErrorKind::Protocol, "malformed response"))?;
        if !self.state.greeted {
            self.state.greeted = true;
            return match head {
                ResponseHead::UntaggedStatus {
                    status: Status::Ok, ..
                } => {
                    let rewritten = self.rewrite_capability_code(&line, &head);
                    self.client.send_cow(&line, rewritten);
                    Ok(())
                }
                ResponseHead::UntaggedStatus {
                    status: Status::Bye,
                    ..
                } => {
                    self.client.send_line(&line);
                    self.state.logout = true;
                    Ok(())
                }
                _ => Err(upstream(ErrorKind::Protocol, "unexpected greeting")),
            };
        }
        match head {
            ResponseHead::Continuation => self.on_upstream_continuation(&line),
            ResponseHead::Capability { caps } => {
                let mut out = b"* CAPABILITY ".to_vec();
                out.extend_from_slice(
                    capability::filter(response::capability_atoms(caps), &self.view())
                        .join(" ")
                        .as_bytes(),
                );
                self.client.send_line(&out);
                Ok(())
            }
            ResponseHead::Tagged { tag, status, .. } => {
                if self.idle_tagged(tag, status) {
                    // The reply to the proxy's DONE of an IDLE restart: swallowed.
                    return Ok(());
                }
                self.on_tagged(tag, status);
                let rewritten = self.rewrite_capability_code(&line, &head);
                self.client.send_cow(&line, rewritten);
                Ok(())
            }
            ResponseHead::UntaggedStatus { status, .. } => {
                if status == Status::Bye {
                    self.state.logout = true;
                }
                let rewritten = self.rewrite_capability_code(&line, &head);
                self.client.send_cow(&line, rewritten);
                Ok(())
            }
            _ => {
                self.client.out.push(line);
                self.client.out.push(Bytes::from_static(b"\r\n"));
                Ok(())
            }
        }
    }

    fn on_upstream_continuation(&mut self, line: &[u8]) -> SessionResult<()> {
        if self
            .idle
            .as_ref()
            .is_some_and(|i| i.phase == IdlePhase::Restarting)
        {
            // The `+` of the proxy's own IDLE: the client has had its `+`.
            self.on_idle_restarted();
            return Ok(());
        }
        let Some(Wait::Continuation { tag, purpose }) = self.wait.take() else {
            return Err(upstream(
                ErrorKind::Protocol,
                "unexpected continuation request",
            ));
        };
        match purpose {
            ContinuationPurpose::Literal { client_waits: true } => {
                self.client.send_line(line);
                self.client.framer.accept_literal();
            }
            // The client sent `{n+}` and its bytes are already on their way.
            ContinuationPurpose::Literal {
                client_waits: false,
            } => {}
            ContinuationPurpose::Sasl => {
                self.client.send_line(line);
                self.line_mode = LineMode::SaslResponse { tag }
            }
            ContinuationPurpose::Idle => {
                self.client.send_line(line);
                self.line_mode = LineMode::IdleDone { tag };
                if let Some(idle) = &mut self.idle {
                    if idle.phase == IdlePhase::Starting {
                        idle.phase = IdlePhase::Idling;
                        if std::mem::take(&mut idle.wake_pending) {
                            self.restart_idle();
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A tagged reply ends a command: apply its effect and, if the client was waiting
    /// for a continuation of that command, the command is over.
    fn on_tagged(&mut self, tag: &[u8], status: Status) {
        self.count_reply(status == Status::Bad);
        if let Some(Wait::Continuation {
            tag: waiting,
            purpose,
        }) = &self.wait
        {
            if waiting == tag {
                match purpose {
                    ContinuationPurpose::Literal { client_waits: true } => {
                        self.client.framer.reject_literal();
                        self.inbound = Inbound::Between;
                    }
                    // Refused before its literal: the bytes the client already sent
                    // are dropped, never run.
                    ContinuationPurpose::Literal {
                        client_waits: false,
                    } => {
                        self.inbound = Inbound::Discarding;
                    }
                    ContinuationPurpose::Sasl | ContinuationPurpose::Idle => {}
                }
                self.wait = None;
            }
        }
        if matches!(&self.line_mode, LineMode::SaslResponse { tag: t, .. } | LineMode::IdleDone { tag: t } if t == tag)
        {
            self.line_mode = LineMode::Command;
        }
        let Some(index) = self.in_flight.iter().position(|f| f.tag == tag) else {
            debug!(tag = %String::from_utf8_lossy(tag), "tagged reply for no known command");
            return;
        };
        let Some(done) = self.in_flight.remove(index) else {
            return;
        };
        let outcome = match status {
            Status::Ok => CommandOutcome::Ok,
            Status::No => CommandOutcome::No,
            _ => CommandOutcome::Bad,
        };
        self.shared
            .metrics
            .imap
            .command_finished(done.class, outcome, done.started.elapsed());
        if let (Effect::Authenticate { .. }, Some(ip)) = (&done.effect, self.peer_ip) {
            match status {
                Status::Ok => self.shared.penalties.succeeded(ip),
                Status::No => {
                    self.shared.penalties.failed(ip, Instant::now());
                    self.auth_failures += 1;
                }
                _ => {}
            }
        }
        match (done.effect, status) {
            (Effect::Authenticate { user: Some(user) }, Status::Ok) => {
                info!(user = %user, "authenticated");
                tracing::Span::current().record("user", user.as_str());
                self.registration = self.shared.registry.register(&user);
                self.state.user = Some(user);
                self.deadline = Instant::now() + self.shared.config.timeouts.idle;
            }
            (Effect::Authenticate { user: None }, Status::Ok) => {
                // The proxy could not read the identity: refuse to go on rather than
                // guess who the user is.
                self.state.logout = true;
                self.client
                    .send_line(b"* BYE [UNAVAILABLE] Could not determine the authenticated user");
            }
            (
                Effect::Select {
                    mailbox,
                    read_only,
                    name,
                },
                Status::Ok,
            ) => {
                self.state.selected = Some(mailbox);
                self.state.read_only = read_only;
                self.state.coi = None;
                self.selected_name = name;
            }
            (Effect::SeenCandidates(uids), Status::Ok) => self.state.seen_pending.extend(uids),
            // A failed SELECT leaves no mailbox selected (RFC 9051 §6.3.2).
            (Effect::Select { .. }, _) | (Effect::Unselect, Status::Ok) => {
                self.state.selected = None;
                self.selected_name = None;
            }
            (Effect::Logout, _) => self.state.logout = true,
            _ => {}
        }
    }

    fn rewrite_capability_code<'l>(
        &self,
        line: &'l [u8],
        head: &ResponseHead<'_>,
    ) -> std::borrow::Cow<'l, [u8]> {
        let code = match head {
            ResponseHead::Tagged {
                code: Some(code), ..
            }
            | ResponseHead::UntaggedStatus {
                code: Some(code), ..
            } if code.is("CAPABILITY") => code,
            _ => return std::borrow::Cow::Borrowed(line),
        };
        let mut out = line[..code.span.0].to_vec();
        out.extend_from_slice(b"[CAPABILITY ");
        out.extend_from_slice(
            capability::filter(
                response::capability_atoms(code.args),
                &self.view_after(head),
            )
            .join(" ")
            .as_bytes(),
        );
        out.push(b']');
        out.extend_from_slice(&line[code.span.1..]);
        std::borrow::Cow::Owned(out)
    }

    /// The view that applies to a response: a tagged OK to LOGIN/AUTHENTICATE already
    /// speaks for the authenticated state.
    fn view_after(&self, head: &ResponseHead<'_>) -> CapabilityView {
        let mut view = self.view();
        if let ResponseHead::Tagged {
            status: Status::Ok, ..
        } = head
        {
            view.authenticated = self.state.user.is_some();
        }
        view
    }

    // === IDLE wake ===

    /// The client's IDLE goes upstream: from now on a wake for the selected mailbox may
    /// restart it. Without a registration or a known mailbox name nothing changes.
    fn start_idle(&mut self, tag: &[u8]) {
        let (Some(registration), Some(name)) = (&mut self.registration, &self.selected_name) else {
            return;
        };
        // A wake left over from an earlier IDLE concerns what that one already reported.
        registration.take_wake();
        registration.set_idle(Some(name));
        self.idle = Some(Idle {
            tag: tag.to_vec(),
            phase: IdlePhase::Starting,
            wake_pending: false,
            client_end: None,
        });
    }

    /// The IDLE is over (its tagged reply reached the client).
    fn end_idle(&mut self) {
        self.idle = None;
        if let Some(registration) = &self.registration {
            registration.set_idle(None);
        }
    }

    /// The proxy stored a message in the mailbox this session idles on.
    fn on_wake(&mut self) {
        let Some(idle) = &mut self.idle else {
            return;
        };
        match idle.phase {
            IdlePhase::Idling => self.restart_idle(),
            IdlePhase::Starting | IdlePhase::Ending | IdlePhase::Restarting => {
                idle.wake_pending = true
            }
            // The client's own DONE is on its way: its tagged reply syncs anyway.
            IdlePhase::Done => {}
        }
    }

    /// Ends the backend's IDLE; its tagged reply will be swallowed.
    fn restart_idle(&mut self) {
        let Some(idle) = &mut self.idle else {
            return;
        };
        idle.phase = IdlePhase::Ending;
        idle.wake_pending = false;
        self.upstream.send_line(b"DONE");
        self.shared.metrics.delivery.idle_wake();
        debug!("IDLE restarted for a wake");
    }

    /// A tagged reply while an IDLE may be restarted. `true`: it answered the proxy's
    /// own DONE and is swallowed; the IDLE is sent again (or, if the client's DONE came
    /// meanwhile, not: the reply is then the client's, and `false`).
    fn idle_tagged(&mut self, tag: &[u8], status: Status) -> bool {
        let Some(idle) = &mut self.idle else {
            return false;
        };
        if idle.tag != tag {
            return false;
        }
        let client_done = idle
            .client_end
            .as_deref()
            .is_some_and(|line| line.eq_ignore_ascii_case(b"DONE"));
        if idle.phase == IdlePhase::Ending && status == Status::Ok && !client_done {
            idle.phase = IdlePhase::Restarting;
            let mut line = idle.tag.clone();
            line.extend_from_slice(b" IDLE");
            self.upstream.send_line(&line);
            return true;
        }
        // The IDLE ends here for the client: after its own DONE (also one the proxy did
        // not need to send), or refused by the backend.
        self.end_idle();
        false
    }

    /// The backend idles again after a restart.
    fn on_idle_restarted(&mut self) {
        let Some(idle) = &mut self.idle else {
            return;
        };
        if let Some(line) = idle.client_end.take() {
            idle.phase = IdlePhase::Done;
            self.upstream.send_line(&line);
        } else if idle.wake_pending {
            self.restart_idle();
        } else {
            idle.phase = IdlePhase::Idling;
        }
    }

    /// The literal of `SELECT {n}` has been forwarded: it is the mailbox's name.
    fn note_select_literal(&mut self, name: Vec<u8>) {
        if name.len() > MAX_WAKE_NAME {
            return;
        }
        let name = if name.eq_ignore_ascii_case(b"INBOX") {
            b"INBOX".to_vec()
        } else {
            name
        };
        if let Some(InFlight {
            effect: Effect::Select { name: slot, .. },
            ..
        }) = self.in_flight.back_mut()
        {
            *slot = Some(name);
        }
    }

    // === replies the proxy writes itself ===

    pub(super) fn reply_local(
        &mut self,
        tag: &[u8],
        class: CommandClass,
        status: &str,
        text: &str,
    ) {
        let mut line = tag.to_vec();
        line.push(b' ');
        line.extend_from_slice(status.as_bytes());
        line.push(b' ');
        crate::proto::imap::encode::text(&mut line, text);
        self.count_reply(status == "BAD");
        // As Dovecot does: before login the BYE that ends the session replaces the last
        // BAD (imap-login); after login the BAD is sent, then the BYE (imap).
        if self.bad_commands < self.bad_command_limit() || self.state.user.is_some() {
            self.client.send_line(&line);
        }
        let outcome = if status == "OK" {
            CommandOutcome::Ok
        } else {
            CommandOutcome::Rejected
        };
        self.shared
            .metrics
            .imap
            .command_finished(class, outcome, std::time::Duration::ZERO);
    }

    fn reply_bad(&mut self, tag: Option<&[u8]>, text: &str) {
        self.reply_local(tag.unwrap_or(b"*"), CommandClass::Other, "BAD", text);
    }

    pub(super) fn send_client_line(&mut self, line: &[u8]) {
        self.client.send_line(line);
    }

    pub(super) fn record(&self, class: CommandClass, outcome: CommandOutcome) {
        self.shared
            .metrics
            .imap
            .command_finished(class, outcome, std::time::Duration::ZERO);
    }

    pub(super) fn shared_mailbox_root(&self) -> String {
        self.shared.coi.mailbox_root.clone()
    }

    /// Sends one of the proxy's own commands upstream and waits for its tagged reply,
    /// relaying unsolicited mailbox updates to the client and collecting the rest.
    /// Only called at a barrier: no client command is in flight.
    pub(super) async fn upstream_command(
        &mut self,
        command: &[u8],
    ) -> SessionResult<InternalReply> {
        let tag = format!("coiproxy{}", self.next_internal_tag);
        self.next_internal_tag += 1;
        let mut wire = tag.clone().into_bytes();
        wire.push(b' ');
        wire.extend_from_slice(command);
        self.upstream.send_line(&wire);
        self.upstream.drain().await?;
        let deadline = Instant::now() + self.shared.config.timeouts.upstream_reply;
        let mut untagged = Vec::new();
        let mut current: Option<(Vec<u8>, bool)> = None; // (wire form, relay to client)
        loop {
            while let Some(fragment) = self.upstream.framer.next_fragment() {
                let (bytes, head, ends_line, ends_message) = match fragment {
                    Fragment::Line {
                        line,
                        literal,
                        head,
                        ..
                    } => (line, head, true, literal.is_none()),
                    Fragment::LinePart { bytes, head } => (bytes, head, false, false),
                    Fragment::LiteralData(data) => (data, false, false, false),
                    Fragment::LineTooLong => unreachable!("upstream framer streams long lines"),
                };
                if head {
                    let parsed = response::response_head(&bytes)
                        .map_err(|_| upstream(ErrorKind::Protocol, "malformed response"))?;
                    let relay = match parsed {
                        ResponseHead::Tagged { tag: t, status, .. } if t == tag.as_bytes() => {
                            let after = bytes[t.len() + 1..].to_vec();
                            return Ok(InternalReply {
                                status,
                                line_after_tag: after,
                                untagged,
                            });
                        }
                        ResponseHead::Tagged { .. } | ResponseHead::Continuation => {
                            return Err(upstream(
                                ErrorKind::Protocol,
                                "unexpected reply to an internal command",
                            ));
                        }
                        ResponseHead::UntaggedStatus {
                            status: Status::Bye,
                            ..
                        } => {
                            self.client.send_line(&bytes);
                            self.state.logout = true;
                            return Err(upstream(ErrorKind::Closed, "upstream said BYE"));
                        }
                        // Mailbox updates concern the client as well; the command the
                        // client is waiting for is still in progress, so they may be sent.
                        ResponseHead::Numbered { .. } => !self.swallow_updates,
                        ResponseHead::Data { name, .. } => {
                            !self.swallow_updates
                                && (name.eq_ignore_ascii_case(b"FLAGS")
                                    || name.eq_ignore_ascii_case(b"VANISHED"))
                        }
                        _ => false,
                    };
                    current = Some((Vec::new(), relay));
                }
                let Some((wire, _)) = current.as_mut() else {
                    return Err(upstream(
                        ErrorKind::Protocol,
                        "response fragment outside a response",
                    ));
                };
                wire.extend_from_slice(&bytes);
                if wire.len() > INTERNAL_REPLY_LIMIT {
                    return Err(upstream(
                        ErrorKind::TooBig,
                        "reply to an internal command too large",
                    ));
                }
                if ends_message {
                    if let Some((wire, relay)) = current.take() {
                        if relay {
                            self.client.send_line(&wire);
                        } else {
                            untagged.push(wire);
                        }
                    }
                } else if ends_line {
                    // The line announced a literal: keep the wire form `{n}\r\n<bytes>`.
                    wire.extend_from_slice(b"\r\n");
                }
            }
            tokio::select! {
                read = self.upstream.fill() => {
                    if !read? {
                        return Err(upstream(ErrorKind::Closed, "upstream closed the connection"));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(upstream(ErrorKind::Timeout, "upstream did not answer in time"));
                }
            }
        }
    }
}

/// The command of a line, parsed once for the decisions taken before it is handled.
#[derive(Clone, Copy, Debug)]
struct Verb {
    name: CommandName,
    uid: bool,
}

impl Verb {
    fn of(line: &[u8]) -> Option<Verb> {
        command::command_head(line).ok().map(|h| Verb {
            name: h.name,
            uid: h.uid,
        })
    }

    /// EXPUNGE responses may be sent during it (RFC 9051 §7.4.1: not while responding
    /// to FETCH, STORE or SEARCH, the sequence-number forms).
    fn allows_expunge(verb: Option<Verb>) -> bool {
        verb.is_some_and(|v| {
            v.uid
                || !matches!(
                    v.name,
                    CommandName::Fetch | CommandName::Store | CommandName::Search
                )
        })
    }

    /// After it the selected mailbox's updates no longer concern the client.
    fn leaves_mailbox(verb: Option<Verb>) -> bool {
        verb.is_some_and(|v| {
            matches!(
                v.name,
                CommandName::Select
                    | CommandName::Examine
                    | CommandName::Close
                    | CommandName::Unselect
                    | CommandName::Logout
            )
        })
    }

    fn authenticates(verb: Option<Verb>) -> bool {
        verb.is_some_and(|v| matches!(v.name, CommandName::Login | CommandName::Authenticate))
    }
}

/// The next wake of a registered session; never, without a registration.
async fn woken(registration: Option<&mut Registration>) {
    match registration {
        Some(registration) => registration.woken().await,
        None => std::future::pending().await,
    }
}

/// Writes what is queued (one vectored write) and flushes once the queue is empty, in
/// one pass. Cancel-safe: the queue advances right after the write returns, and a
/// cancelled flush is retried because `needs_flush` stays set.
async fn drive_write(
    writer: &mut WriteHalf<MaybeTls>,
    out: &mut OutQueue,
    needs_flush: &mut bool,
) -> std::io::Result<usize> {
    let mut n = 0;
    if !out.is_empty() {
        n = write_some(writer, out).await?;
        out.advance(n);
        *needs_flush = true;
    }
    if out.is_empty() && *needs_flush {
        writer.flush().await?;
        *needs_flush = false;
    }
    Ok(n)
}

/// A forwarded line announcing a literal, always as synchronising `{n}` (see
/// [`ContinuationPurpose::Literal`]).
fn synchronising(line: &[u8], literal: Option<LiteralHeader>) -> std::borrow::Cow<'_, [u8]> {
    match literal {
        Some(lit) if lit.mode == LiteralMode::NonSync => {
            let mut out = line[..line.len() - 2].to_vec();
            out.push(b'}');
            std::borrow::Cow::Owned(out)
        }
        _ => std::borrow::Cow::Borrowed(line),
    }
}

/// A line as forwarded upstream after the proxy accepted its literal itself: a trailing
/// synchronising `{n}` becomes `{n+}`.
fn forwardable(line: &[u8], literal: Option<LiteralHeader>) -> Vec<u8> {
    match literal {
        Some(lit) if lit.mode == LiteralMode::Sync => {
            let mut out = line[..line.len() - 1].to_vec();
            out.extend_from_slice(b"+}");
            out
        }
        _ => line.to_vec(),
    }
}

fn class_of(name: CommandName) -> CommandClass {
    match name {
        CommandName::Append => CommandClass::Append,
        CommandName::Authenticate => CommandClass::Authenticate,
        CommandName::Capability => CommandClass::Capability,
        CommandName::Fetch => CommandClass::Fetch,
        CommandName::GetMetadata | CommandName::SetMetadata => CommandClass::Metadata,
        CommandName::Idle => CommandClass::Idle,
        CommandName::List => CommandClass::List,
        CommandName::Login => CommandClass::Login,
        CommandName::Logout => CommandClass::Logout,
        CommandName::Noop => CommandClass::Noop,
        CommandName::Search => CommandClass::Search,
        CommandName::Select | CommandName::Examine => CommandClass::Select,
        CommandName::Starttls => CommandClass::Starttls,
        CommandName::Store => CommandClass::Store,
        _ => CommandClass::Other,
    }
}
