//! B2 (added latency per command) and B4 (bulk FETCH/APPEND bandwidth) of
//! `BENCHMARKS.md` §2, in one run: `cargo bench --bench imap_relay`.
//!
//! Setup: a private Dovecot from the integration-test support (`tests/support`, with an
//! `imaps` listener when the TLS pair is measured), the proxy started in this process on
//! a tokio multi-thread runtime (`plaintext_auth`, plain listener; its implicit-TLS
//! listener for `proxy-tls`), and, as a reference line, `splice`: a trivial tokio byte-copy relay
//! (`copy_bidirectional`, 64 KiB buffers) on the same runtime. Three variants, each with
//! one logged-in connection (`alice`, INBOX selected):
//!
//! - `direct`: client → Dovecot
//! - `proxy`:  client → coi-proxy → Dovecot
//! - `splice`: client → byte copy → Dovecot (the cost of the extra loopback hop alone)
//!
//! And the deployment with implicit TLS from the client, compared with each other:
//!
//! - `direct-tls`: client → Dovecot's own `imaps` listener (Dovecot does TLS: its
//!   imap-login process stays in the path and relays the decrypted bytes to imap)
//! - `proxy-tls`:  client → coi-proxy's implicit-TLS listener → Dovecot in plaintext
//!
//! The load generator is a small blocking IMAP client on the main thread (std
//! `TcpStream`, `TCP_NODELAY`, one command at a time, literals read by their length; for
//! the TLS variants rustls on ring over the same socket, TLS 1.3 as negotiated).
//! Every round runs N operations per variant back to back; the order of the variants
//! changes from round to round (direct and proxy alternate which goes first; splice takes
//! each position in turn; direct-tls and proxy-tls alternate too, and the pair runs after
//! the plaintext variants in rounds 0, 1, 4, 5, ... and before them in the others). Per
//! round the bench keeps the median and p99 of each variant; it reports the median of the
//! per-round values and their spread (min..max), and each ratio as the median [min..max]
//! of the per-round ratios (both operands from one round).
//!
//! CPU: user+sys ticks of this whole process (`/proc/self/stat` fields 14 and 15) around
//! each variant's loop. That is the client alone for `direct`, client + relay for `proxy`
//! and `splice`, so `proxy − direct` approximates the proxy's own CPU per operation.
//! Dovecot's CPU (all processes of the private instance) is read the same way; for
//! `direct-tls` it includes imap-login's TLS and relay.
//!
//! Knobs (environment): `BENCH_ROUNDS`, `BENCH_NOOPS` (per variant per round),
//! `BENCH_FETCHES`, `BENCH_APPENDS` (0 skips APPEND), `BENCH_WARMUP_NOOPS`,
//! `BENCH_MSG_BYTES` (default 1 MiB), `BENCH_MAX_SECS` (no new round after this),
//! `BENCH_VARIANTS` (default `direct,proxy,splice,direct-tls,proxy-tls`; the TLS pair
//! comes together or not at all; the diagnostic relays `splice-ct`, a current-thread
//! tokio runtime, and `threads`, blocking std threads, can be added),
//! `BENCH_QUICK=1` or the argument `--quick` for a smoke run of a few seconds. Without
//! cargo's `--bench` argument (e.g. `cargo test --benches`) the quick run is used too.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;

use common::{
    base64_lines, connect_blocking, dovecot_pids, dovecot_version, env_usize, env_variants,
    header_start, main_of, nproc, paired_difference, paired_ratio, percentile, quick_run,
    round_orders, splice, start_splice, stopped_early, verdict, BenchResult, Spread, Variant, ALL,
    ALL_VARIANTS, MAIN_VARIANTS, SPLICE_BUF,
};
use support::dovecot::{Dovecot, StartOptions};
use support::proxy::{Options, Proxy};
use support::raw::{tls_connector, SERVER_NAME};

const USER: &str = "alice";
const PASSWORD: &str = "secret-alice";
/// Bound for one socket read or write: a stuck relay fails the bench instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// APPENDs go here (emptied after every round), so INBOX keeps exactly one message.
const APPEND_MAILBOX: &str = "Bench";
fn main() -> ExitCode {
    main_of("imap_relay", run)
}

// ---------------------------------------------------------------------------------------
// Settings

struct Settings {
    quick: bool,
    /// The variants measured: the three main ones and the TLS pair, plus the diagnostic
    /// ones on request.
    variants: Vec<Route>,
    rounds: usize,
    noops: usize,
    fetches: usize,
    appends: usize,
    warmup_noops: usize,
    warmup_fetches: usize,
    message_bytes: usize,
    /// Bound for one variant's loop in one round; the loop stops early when exceeded.
    loop_cap: Duration,
    /// No new round starts after this much time since the first one.
    total_cap: Duration,
}

impl Settings {
    fn from_env() -> BenchResult<Settings> {
        let quick = quick_run();
        let defaults = if quick {
            Settings {
                quick,
                variants: Vec::new(),
                rounds: 5,
                noops: 200,
                fetches: 3,
                appends: 2,
                warmup_noops: 50,
                warmup_fetches: 1,
                message_bytes: 1024 * 1024,
                loop_cap: Duration::from_secs(3),
                total_cap: Duration::from_secs(10),
            }
        } else {
            Settings {
                quick,
                variants: Vec::new(),
                rounds: 12,
                noops: 20_000,
                fetches: 200,
                appends: 30,
                warmup_noops: 500,
                warmup_fetches: 5,
                message_bytes: 1024 * 1024,
                loop_cap: Duration::from_secs(20),
                total_cap: Duration::from_secs(180),
            }
        };
        let variants = env_variants(&ALL_ROUTES, Route::name, &[DIRECT, PROXY], &MAIN_ROUTES)?;
        if variants.contains(&Route::DirectTls) != variants.contains(&Route::ProxyTls) {
            return Err("BENCH_VARIANTS: direct-tls and proxy-tls come together".into());
        }
        let s = Settings {
            variants,
            rounds: env_usize("BENCH_ROUNDS", defaults.rounds)?.max(1),
            noops: env_usize("BENCH_NOOPS", defaults.noops)?.max(1),
            fetches: env_usize("BENCH_FETCHES", defaults.fetches)?.max(1),
            appends: env_usize("BENCH_APPENDS", defaults.appends)?,
            warmup_noops: env_usize("BENCH_WARMUP_NOOPS", defaults.warmup_noops)?,
            message_bytes: env_usize("BENCH_MSG_BYTES", defaults.message_bytes)?
                .clamp(1024, 50 << 20),
            total_cap: Duration::from_secs(env_usize(
                "BENCH_MAX_SECS",
                defaults.total_cap.as_secs() as usize,
            )? as u64),
            ..defaults
        };
        Ok(s)
    }

    /// Whether the TLS pair is measured.
    fn tls(&self) -> bool {
        self.variants.contains(&Route::DirectTls)
    }

    /// Width of the variant column: the longest name measured (at least 9).
    fn name_width(&self) -> usize {
        self.variants
            .iter()
            .map(|v| v.name().len())
            .fold(9, usize::max)
    }
}

// ---------------------------------------------------------------------------------------
// Variants

/// A path from the client to Dovecot: one of the plaintext [`Variant`]s, or one of the
/// implicit-TLS pair (compared with each other only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Plain(Variant),
    /// client → Dovecot's `imaps` listener (imap-login does TLS and relays to imap)
    DirectTls,
    /// client → coi-proxy's implicit-TLS listener → Dovecot in plaintext
    ProxyTls,
}

const DIRECT: Route = Route::Plain(Variant::Direct);
const PROXY: Route = Route::Plain(Variant::Proxy);
const SPLICE: Route = Route::Plain(Variant::Splice);

/// How many routes there are (for arrays indexed by [`Route::index`]).
const ROUTES: usize = ALL_VARIANTS + 2;

/// Every route, in [`Route::index`] order.
const ALL_ROUTES: [Route; ROUTES] = [
    Route::Plain(ALL[0]),
    Route::Plain(ALL[1]),
    Route::Plain(ALL[2]),
    Route::Plain(ALL[3]),
    Route::Plain(ALL[4]),
    Route::DirectTls,
    Route::ProxyTls,
];

/// The routes measured by default: the main variants and the TLS pair.
const MAIN_ROUTES: [Route; 5] = [
    Route::Plain(MAIN_VARIANTS[0]),
    Route::Plain(MAIN_VARIANTS[1]),
    Route::Plain(MAIN_VARIANTS[2]),
    Route::DirectTls,
    Route::ProxyTls,
];

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Plain(v) => v.name(),
            Route::DirectTls => "direct-tls",
            Route::ProxyTls => "proxy-tls",
        }
    }

    fn index(self) -> usize {
        match self {
            Route::Plain(v) => v.index(),
            Route::DirectTls => ALL_VARIANTS,
            Route::ProxyTls => ALL_VARIANTS + 1,
        }
    }

    fn plain(self) -> Option<Variant> {
        match self {
            Route::Plain(v) => Some(v),
            _ => None,
        }
    }
}

/// The diagnostic relays, measured only on request.
const EXTRA_VARIANTS: [Route; 2] = [
    Route::Plain(Variant::SpliceCt),
    Route::Plain(Variant::Threads),
];

/// The plaintext variants other than direct and proxy (compared with direct).
fn other_relays(settings: &Settings) -> impl Iterator<Item = Route> + '_ {
    settings
        .variants
        .iter()
        .copied()
        .filter(|v| v.plain().is_some() && !matches!(*v, DIRECT | PROXY))
}

/// The order of the variants in round `r`: direct and proxy alternate which goes first
/// (direct in even rounds); every other plaintext variant moves through the positions.
/// direct-tls and proxy-tls alternate the same way; the pair runs after the plaintext
/// variants in rounds 0, 1, 4, 5, ... and before them in rounds 2, 3, 6, 7, ...
fn round_order(r: usize, variants: &[Route]) -> Vec<Route> {
    let plain: Vec<Variant> = variants.iter().filter_map(|v| v.plain()).collect();
    let mut order: Vec<Route> = common::round_order(r, Variant::Direct, Variant::Proxy, &plain)
        .into_iter()
        .map(Route::Plain)
        .collect();
    if variants.contains(&Route::DirectTls) {
        let pair = common::round_order(r, Route::DirectTls, Route::ProxyTls, &[]);
        let at = if (r / 2).is_multiple_of(2) {
            order.len()
        } else {
            0
        };
        order.splice(at..at, pair);
    }
    order
}

/// Diagnostic `splice-ct`: the same byte copy, served by a current-thread tokio runtime
/// on a thread of its own (no work stealing, no cross-worker wake-ups). The thread
/// accepts one connection and ends with it.
fn start_splice_current_thread(upstream: SocketAddr) -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("splice-ct".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                splice(client, upstream).await;
            });
        })?;
    Ok(addr)
}

/// Diagnostic `threads`: blocking reads and writes, one std thread per direction (the
/// floor for an extra user-space hop on this kernel). Accepts one connection.
fn start_thread_relay(upstream: SocketAddr) -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("relay-accept".into())
        .spawn(move || -> io::Result<()> {
            let (client, _) = listener.accept()?;
            let server = TcpStream::connect_timeout(&upstream, IO_TIMEOUT)?;
            client.set_nodelay(true)?;
            server.set_nodelay(true)?;
            let (client2, server2) = (client.try_clone()?, server.try_clone()?);
            std::thread::Builder::new()
                .name("relay-up".into())
                .spawn(move || copy_until_eof(client2, server2))?;
            copy_until_eof(server, client)
        })?;
    Ok(addr)
}

/// Copies until end of stream or error, then shuts the writing side down.
fn copy_until_eof(mut from: TcpStream, mut to: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; SPLICE_BUF];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// A minimal blocking IMAP client

/// The client's connection: TCP, or rustls over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Socket>>),
}

/// The TCP socket under TLS. rustls reads at most 4 KiB of records per `read_tls`; the
/// buffer turns that into one `recv` of up to 64 KiB, as the plaintext client does.
struct Socket {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.writer.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

struct Client {
    /// Reads through the buffer; writes go to the stream under it (`get_mut`).
    reader: BufReader<Stream>,
    /// The current response line, CRLF included.
    line: Vec<u8>,
    /// The command being sent.
    out: Vec<u8>,
    /// The tag of the command in flight.
    tag: Vec<u8>,
    next_tag: u64,
    /// The last literal of the last response (its bytes are kept for verification).
    literal: Vec<u8>,
    /// Total literal bytes in the last response.
    literal_total: usize,
}

impl Client {
    /// Connects (with TLS when `tls` is given) and reads the greeting.
    fn connect(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> io::Result<Client> {
        let (stream, writer) = connect_blocking(addr, IO_TIMEOUT)?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(config) => {
                let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
                let tls = rustls::ClientConnection::new(Arc::clone(config), name)
                    .map_err(io::Error::other)?;
                let socket = Socket {
                    reader: BufReader::with_capacity(SPLICE_BUF, stream),
                    writer,
                };
                // The handshake runs on the first read (the greeting), under the socket's
                // timeouts.
                Stream::Tls(Box::new(rustls::StreamOwned::new(tls, socket)))
            }
        };
        let mut client = Client {
            reader: BufReader::with_capacity(256 * 1024, stream),
            line: Vec::with_capacity(1024),
            out: Vec::with_capacity(1024),
            tag: Vec::with_capacity(16),
            next_tag: 1,
            literal: Vec::new(),
            literal_total: 0,
        };
        read_line(&mut client.reader, &mut client.line)?;
        if !client.line.starts_with(b"* OK") {
            return Err(io::Error::other(format!(
                "unexpected greeting from {addr}: {}",
                String::from_utf8_lossy(&client.line).trim_end()
            )));
        }
        Ok(client)
    }

    /// Connects, logs in and selects INBOX.
    fn session(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> io::Result<Client> {
        let mut client = Client::connect(addr, tls)?;
        client.command(format_args!("LOGIN {USER} {PASSWORD}"))?;
        client.command(format_args!("SELECT INBOX"))?;
        Ok(client)
    }

    /// Sends `<tag> <command>\r\n` and reads the response up to an `OK` tagged line.
    fn command(&mut self, command: std::fmt::Arguments<'_>) -> io::Result<()> {
        self.send_line(command)?;
        self.read_response()
    }

    /// `APPEND` with a LITERAL+ literal: line and message go out without waiting for `+`.
    fn append(&mut self, mailbox: &str, message: &[u8]) -> io::Result<()> {
        self.send_line(format_args!("APPEND {mailbox} {{{}+}}", message.len()))?;
        let writer = self.reader.get_mut();
        writer.write_all(message)?;
        writer.write_all(b"\r\n")?;
        self.read_response()
    }

    /// `TLSv1_3 TLS13_AES_256_GCM_SHA384` for a TLS connection.
    fn tls_parameters(&self) -> Option<String> {
        let Stream::Tls(tls) = self.reader.get_ref() else {
            return None;
        };
        let version = tls.conn.protocol_version()?;
        let suite = tls.conn.negotiated_cipher_suite()?;
        Some(format!("{version:?} {:?}", suite.suite()))
    }

    fn send_line(&mut self, command: std::fmt::Arguments<'_>) -> io::Result<()> {
        self.tag.clear();
        write!(self.tag, "b{}", self.next_tag)?;
        self.next_tag += 1;
        self.out.clear();
        self.out.extend_from_slice(&self.tag);
        write!(self.out, " {command}\r\n")?;
        self.reader.get_mut().write_all(&self.out)
    }

    /// Reads untagged lines (with their literals) until the tagged completion.
    fn read_response(&mut self) -> io::Result<()> {
        self.literal_total = 0;
        loop {
            read_line(&mut self.reader, &mut self.line)?;
            if self.line.starts_with(&self.tag) && self.line.get(self.tag.len()) == Some(&b' ') {
                let status = &self.line[self.tag.len() + 1..];
                if status.starts_with(b"OK") {
                    return Ok(());
                }
                return Err(io::Error::other(format!(
                    "command failed: {} -> {}",
                    String::from_utf8_lossy(&self.out).trim_end(),
                    String::from_utf8_lossy(&self.line).trim_end()
                )));
            }
            // A line ending in `{n}` announces n literal bytes, then the line goes on.
            while let Some(n) = literal_length(&self.line) {
                self.literal.resize(n, 0);
                self.reader.read_exact(&mut self.literal)?;
                self.literal_total += n;
                read_line(&mut self.reader, &mut self.line)?;
            }
        }
    }
}

fn read_line(reader: &mut BufReader<Stream>, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    if reader.read_until(b'\n', line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed the connection",
        ));
    }
    Ok(())
}

/// `n` when `line` ends with `{n}\r\n` (or `{n+}`).
fn literal_length(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = body.iter().rposition(|b| *b == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A deterministic message of exactly `size` bytes: headers, then base64-looking lines
/// of 76 characters (CRLF only, so Dovecot returns it byte for byte).
fn make_message(size: usize) -> Vec<u8> {
    let mut message = Vec::with_capacity(size);
    message.extend_from_slice(
        b"From: alice@localhost\r\n\
          To: bob@localhost\r\n\
          Subject: imap_relay benchmark message\r\n\
          Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
          Message-ID: <imap-relay-bench@localhost>\r\n\
          MIME-Version: 1.0\r\n\
          Content-Type: application/octet-stream\r\n\
          Content-Transfer-Encoding: base64\r\n\
          \r\n",
    );
    base64_lines(&mut message, size);
    message
}

// ---------------------------------------------------------------------------------------
// CPU accounting

#[derive(Clone, Copy, Debug, Default)]
struct Ticks {
    user: u64,
    sys: u64,
}

impl Ticks {
    fn since(self, earlier: Ticks) -> Ticks {
        Ticks {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }

    fn add(&mut self, other: Ticks) {
        self.user += other.user;
        self.sys += other.sys;
    }

    fn total(self) -> u64 {
        self.user + self.sys
    }
}

/// utime and stime (fields 14 and 15) of a `/proc/<pid>/stat`, all threads included.
fn stat_ticks(path: &str) -> Option<Ticks> {
    let text = fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field 14 is index 11.
    Some(Ticks {
        user: fields.get(11)?.parse().ok()?,
        sys: fields.get(12)?.parse().ok()?,
    })
}

fn self_ticks() -> Ticks {
    stat_ticks("/proc/self/stat").unwrap_or_default()
}

fn dovecot_ticks(pids: &[u32]) -> Ticks {
    let mut sum = Ticks::default();
    for pid in pids {
        if let Some(t) = stat_ticks(&format!("/proc/{pid}/stat")) {
            sum.add(t);
        }
    }
    sum
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

// ---------------------------------------------------------------------------------------
// Measuring

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Noop,
    Fetch,
    Append,
}

/// One variant, one operation kind, one round.
struct Sample {
    /// Per-operation wall time, sorted.
    nanos: Vec<u64>,
    cpu: Ticks,
    dovecot_cpu: Ticks,
    /// The loop hit its time cap before its count.
    truncated: bool,
}

impl Sample {
    fn percentile_us(&self, p: f64) -> f64 {
        percentile(&self.nanos, p) / 1000.0
    }
}

struct Bench<'a> {
    settings: &'a Settings,
    /// Indexed by [`Route::index`]; `None` for variants not measured.
    clients: Vec<Option<Client>>,
    /// Direct connection for housekeeping (emptying the APPEND mailbox).
    admin: Client,
    message: Vec<u8>,
    dovecot_pids: Vec<u32>,
}

impl Bench<'_> {
    fn op(&mut self, variant: Route, op: Op) -> io::Result<()> {
        let client = self.clients[variant.index()]
            .as_mut()
            .ok_or_else(|| io::Error::other(format!("no {} connection", variant.name())))?;
        match op {
            Op::Noop => client.command(format_args!("NOOP")),
            Op::Fetch => {
                client.command(format_args!("FETCH 1 BODY.PEEK[]"))?;
                if client.literal_total != self.message.len() {
                    return Err(io::Error::other(format!(
                        "FETCH via {} returned {} literal bytes, expected {}",
                        variant.name(),
                        client.literal_total,
                        self.message.len()
                    )));
                }
                Ok(())
            }
            Op::Append => client.append(APPEND_MAILBOX, &self.message),
        }
    }

    fn measure(&mut self, variant: Route, op: Op, count: usize) -> io::Result<Sample> {
        let mut nanos = Vec::with_capacity(count);
        let mut truncated = false;
        let dovecot_before = dovecot_ticks(&self.dovecot_pids);
        let cpu_before = self_ticks();
        let start = Instant::now();
        for _ in 0..count {
            let t0 = Instant::now();
            if t0.duration_since(start) > self.settings.loop_cap {
                truncated = true;
                break;
            }
            self.op(variant, op)?;
            nanos.push(t0.elapsed().as_nanos() as u64);
        }
        let cpu = self_ticks().since(cpu_before);
        let dovecot_cpu = dovecot_ticks(&self.dovecot_pids).since(dovecot_before);
        nanos.sort_unstable();
        Ok(Sample {
            nanos,
            cpu,
            dovecot_cpu,
            truncated,
        })
    }

    /// Deletes and recreates the APPEND mailbox (not timed).
    fn reset_append_mailbox(&mut self) -> io::Result<()> {
        self.admin
            .command(format_args!("DELETE {APPEND_MAILBOX}"))?;
        self.admin.command(format_args!("CREATE {APPEND_MAILBOX}"))
    }

    /// Warm-up, and a byte-for-byte check of one FETCH per variant.
    fn warm_up(&mut self) -> BenchResult<()> {
        for &variant in &self.settings.variants {
            for _ in 0..self.settings.warmup_noops {
                self.op(variant, Op::Noop)?;
            }
            self.op(variant, Op::Fetch)?;
            let fetched = self.clients[variant.index()].as_ref().map(|c| &c.literal);
            if fetched != Some(&self.message) {
                return Err(
                    format!("FETCH via {} returned different bytes", variant.name()).into(),
                );
            }
            for _ in 1..self.settings.warmup_fetches {
                self.op(variant, Op::Fetch)?;
            }
            if self.settings.appends > 0 {
                for _ in 0..2 {
                    self.op(variant, Op::Append)?;
                }
            }
        }
        if self.settings.appends > 0 {
            self.reset_append_mailbox()?;
        }
        Ok(())
    }
}

/// Samples indexed `[op][route][round]`.
struct Results {
    samples: [[Vec<Sample>; ROUTES]; 3],
}

impl Results {
    fn of(&self, op: Op, variant: Route) -> &[Sample] {
        &self.samples[op as usize][variant.index()]
    }
}

// ---------------------------------------------------------------------------------------
// Statistics and report

/// CPU µs per operation over all rounds: (this process, Dovecot).
fn cpu_per_op(samples: &[Sample], ticks_per_s: u64) -> (f64, f64) {
    let mut cpu = Ticks::default();
    let mut dovecot = Ticks::default();
    let mut ops = 0usize;
    for s in samples {
        cpu.add(s.cpu);
        dovecot.add(s.dovecot_cpu);
        ops += s.nanos.len();
    }
    let us = |t: Ticks| t.total() as f64 * 1e6 / ticks_per_s as f64 / ops.max(1) as f64;
    (us(cpu), us(dovecot))
}

struct Report {
    text: String,
    summary: Vec<String>,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }
}

/// Per-round values of `f` for variant `v`.
fn by_round(results: &Results, op: Op, v: Route, f: impl Fn(&Sample) -> f64) -> Vec<f64> {
    results.of(op, v).iter().map(f).collect()
}

fn report_noop(r: &mut Report, results: &Results, settings: &Settings, ticks_per_s: u64) {
    let rounds = results.of(Op::Noop, DIRECT).len();
    let w = settings.name_width();
    r.line(format!(
        "\n== B2: NOOP round trip, one client, no pipelining ({} per variant per round, {} rounds) ==",
        settings.noops, rounds
    ));
    r.line(format!(
        "{:<w$} {:>24} {:>24} {:>15} {:>14}",
        "variant", "p50 µs [min..max]", "p99 µs [min..max]", "bench CPU µs/op", "dovecot µs/op"
    ));
    let p = |v: Route, q: f64| by_round(results, Op::Noop, v, |x| x.percentile_us(q));
    for &v in &settings.variants {
        let (cpu, dovecot) = cpu_per_op(results.of(Op::Noop, v), ticks_per_s);
        r.line(format!(
            "{:<w$} {:>24} {:>24} {:>15.1} {:>14.1}",
            v.name(),
            Spread::of(p(v, 50.0)).show(1),
            Spread::of(p(v, 99.0)).show(1),
            cpu,
            dovecot
        ));
    }
    for &v in &settings.variants {
        let rounds: Vec<String> = p(v, 50.0).iter().map(|x| format!("{x:.1}")).collect();
        r.line(format!(
            "  p50 µs by round, {:<w$} {}",
            v.name(),
            rounds.join(" ")
        ));
    }
    r.line("ratios and added µs: median of the per-round values [min..max]");
    let direct = DIRECT;
    let summary = noop_pair(r, &p, PROXY, direct);
    for v in other_relays(settings) {
        r.line(format!(
            "{:<16} p50 {}x, added p50 +{} µs{}",
            format!("{}/direct", v.name()),
            paired_ratio(&p(v, 50.0), &p(direct, 50.0)).show(2),
            paired_difference(&p(v, 50.0), &p(direct, 50.0)).show(1),
            if EXTRA_VARIANTS.contains(&v) {
                " (diagnostic relay)"
            } else {
                ""
            }
        ));
    }
    if settings.variants.contains(&SPLICE) {
        r.line(format!(
            "proxy/splice     p50 {}x; the proxy beyond a bare byte copy: p50 +{} µs",
            paired_ratio(&p(PROXY, 50.0), &p(SPLICE, 50.0)).show(2),
            paired_difference(&p(PROXY, 50.0), &p(SPLICE, 50.0)).show(1)
        ));
    }
    let (direct_cpu, _) = cpu_per_op(results.of(Op::Noop, direct), ticks_per_s);
    let relay_cpu: Vec<String> = settings
        .variants
        .iter()
        .filter(|v| v.plain().is_some() && **v != direct)
        .map(|&v| {
            let (cpu, _) = cpu_per_op(results.of(Op::Noop, v), ticks_per_s);
            format!("{} {:.1} µs", v.name(), cpu - direct_cpu)
        })
        .collect();
    r.line(format!(
        "relay CPU per NOOP (bench CPU minus direct's, i.e. minus the client's): {}",
        relay_cpu.join(", ")
    ));
    r.summary.push(summary);
    if !settings.tls() {
        return;
    }
    let (tls_direct, tls_proxy) = (Route::DirectTls, Route::ProxyTls);
    r.line("implicit TLS (what clients use; BENCHMARKS.md B2 names no transport, so the same targets):");
    let summary = noop_pair(r, &p, tls_proxy, tls_direct);
    let (direct_tls_cpu, direct_tls_dovecot) =
        cpu_per_op(results.of(Op::Noop, tls_direct), ticks_per_s);
    let (proxy_tls_cpu, proxy_tls_dovecot) =
        cpu_per_op(results.of(Op::Noop, tls_proxy), ticks_per_s);
    r.line(format!(
        "proxy-tls CPU per NOOP minus direct-tls's: bench {:+.1} µs (relay + server-side TLS), dovecot {:+.1} µs (direct-tls: imap-login's TLS and relay)",
        proxy_tls_cpu - direct_tls_cpu,
        proxy_tls_dovecot - direct_tls_dovecot
    ));
    r.summary.push(format!("{summary} (implicit TLS)"));
}

/// The B2 lines of `relay` against `base`: p50 and p99 ratios, added µs, verdicts against
/// B2's targets. Returns the summary line.
fn noop_pair(
    r: &mut Report,
    p: &impl Fn(Route, f64) -> Vec<f64>,
    relay: Route,
    base: Route,
) -> String {
    let p50_ratio = paired_ratio(&p(relay, 50.0), &p(base, 50.0));
    let p99_ratio = paired_ratio(&p(relay, 99.0), &p(base, 99.0));
    let added_p50 = paired_difference(&p(relay, 50.0), &p(base, 50.0));
    let added_p99 = paired_difference(&p(relay, 99.0), &p(base, 99.0));
    let ratio = format!("{}/{}", relay.name(), base.name());
    r.line(format!(
        "{ratio:<16} p50 {}x  target <= 1.30: {}",
        p50_ratio.show(2),
        verdict(p50_ratio.median <= 1.3)
    ));
    r.line(format!("{ratio:<16} p99 {}x", p99_ratio.show(2)));
    r.line(format!(
        "{:<16} p50 {} µs;  p99 {} µs  target p99 <= +50 µs: {}",
        format!("{} added", relay.name()),
        signed(added_p50),
        signed(added_p99),
        verdict(added_p99.median <= 50.0)
    ));
    format!(
        "B2 NOOP p50 {ratio} {:.2}x (target <= 1.30: {}); p99 added {:+.1} µs (target <= 50: {})",
        p50_ratio.median,
        verdict(p50_ratio.median <= 1.3),
        added_p99.median,
        verdict(added_p99.median <= 50.0)
    )
}

/// `+median [min..max]` (one decimal), without the `+` when the median is negative.
fn signed(s: Spread) -> String {
    let sign = if s.median < 0.0 { "" } else { "+" };
    format!("{sign}{}", s.show(1))
}

fn report_bulk(r: &mut Report, results: &Results, settings: &Settings, op: Op, ticks_per_s: u64) {
    let (title, count) = match op {
        Op::Fetch => ("FETCH 1 BODY.PEEK[]", settings.fetches),
        _ => ("APPEND (LITERAL+)", settings.appends),
    };
    let bytes = settings.message_bytes as f64;
    let rounds = results.of(op, DIRECT).len();
    let w = settings.name_width();
    r.line(format!(
        "\n== B4: {title} of a {} B message ({count} per variant per round, {rounds} rounds) ==",
        settings.message_bytes
    ));
    r.line(format!(
        "{:<w$} {:>26} {:>22} {:>15} {:>14}",
        "variant", "MB/s [min..max]", "median ms [min..max]", "bench CPU µs/op", "dovecot µs/op"
    ));
    // MB/s = 10^6 bytes per second, from each round's median operation time.
    let mbps = |v: Route| {
        by_round(results, op, v, |s| {
            bytes / (percentile(&s.nanos, 50.0) / 1e9) / 1e6
        })
    };
    for &v in &settings.variants {
        let s = results.of(op, v);
        let ms = Spread::of(s.iter().map(|x| percentile(&x.nanos, 50.0) / 1e6));
        let (cpu, dovecot) = cpu_per_op(s, ticks_per_s);
        r.line(format!(
            "{:<w$} {:>26} {:>22} {:>15.0} {:>14.0}",
            v.name(),
            Spread::of(mbps(v)).show(0),
            ms.show(2),
            cpu,
            dovecot
        ));
    }
    let pd = paired_ratio(&mbps(PROXY), &mbps(DIRECT));
    r.line(format!(
        "proxy/direct     {}x  target >= 0.95: {}",
        pd.show(2),
        verdict(pd.median >= 0.95)
    ));
    for v in other_relays(settings) {
        r.line(format!(
            "{:<16} {}x{}",
            format!("{}/direct", v.name()),
            paired_ratio(&mbps(v), &mbps(DIRECT)).show(2),
            if EXTRA_VARIANTS.contains(&v) {
                " (diagnostic relay)"
            } else {
                ""
            }
        ));
    }
    if settings.variants.contains(&SPLICE) {
        r.line(format!(
            "proxy/splice     {}x",
            paired_ratio(&mbps(PROXY), &mbps(SPLICE)).show(2)
        ));
    }
    r.summary.push(format!(
        "B4 {title} MB/s proxy/direct {:.2}x (target >= 0.95: {})",
        pd.median,
        verdict(pd.median >= 0.95)
    ));
    if settings.tls() {
        let tls = paired_ratio(&mbps(Route::ProxyTls), &mbps(Route::DirectTls));
        r.line(format!(
            "proxy-tls/direct-tls {}x  target >= 1.00: {}",
            tls.show(2),
            verdict(tls.median >= 1.0)
        ));
        r.summary.push(format!(
            "B4 {title} MB/s proxy-tls/direct-tls {:.2}x (target >= 1.00: {})",
            tls.median,
            verdict(tls.median >= 1.0)
        ));
    }
}

// ---------------------------------------------------------------------------------------
// Header

fn header(settings: &Settings, ticks_per_s: u64) -> String {
    let nproc = nproc();
    let mut h = header_start(
        "coi-proxy imap_relay bench: BENCHMARKS.md §2 B2 (NOOP latency) and B4 (bulk FETCH/APPEND)",
        settings.quick,
        &format!("Dovecot {}; ", dovecot_version()),
    );
    let _ = writeln!(
        h,
        "settings rounds {} (BENCH_ROUNDS), NOOPs {} (BENCH_NOOPS), FETCHes {} (BENCH_FETCHES), APPENDs {} (BENCH_APPENDS) per variant per round; message {} B (BENCH_MSG_BYTES)",
        settings.rounds, settings.noops, settings.fetches, settings.appends, settings.message_bytes
    );
    let _ = writeln!(
        h,
        "warm-up  {} NOOPs + {} FETCHes + {} APPENDs per variant (short on purpose: the 10 s warm-up of BENCHMARKS.md is too long for this machine)",
        settings.warmup_noops,
        settings.warmup_fetches.max(1),
        if settings.appends > 0 { 2 } else { 0 }
    );
    let _ = writeln!(
        h,
        "notes    direct = client->Dovecot; proxy = client->coi-proxy->Dovecot; splice = client->tokio copy_bidirectional (64 KiB)->Dovecot (reference: the bare extra hop)."
    );
    if settings.tls() {
        let _ = writeln!(
            h,
            "         direct-tls = client->Dovecot imaps (imap-login does TLS and relays to imap); proxy-tls = client->coi-proxy implicit TLS->Dovecot plaintext.\n         TLS client: rustls (ring) on the same blocking client; both servers have a self-signed ECDSA P-256 certificate; no session resumption."
        );
    }
    let _ = writeln!(
        h,
        "         The proxy and splice run in this process on a tokio multi-thread runtime ({nproc} workers); the blocking client runs on the main thread; all share the {nproc} cores with Dovecot."
    );
    let _ = writeln!(
        h,
        "         Each round runs every variant back to back, order rotating (direct/proxy alternate first). Figures: median of per-round values [min..max of rounds];\n         ratios: median of the per-round ratios (both variants of a ratio run in the same round) [min..max]."
    );
    let _ = writeln!(
        h,
        "         On a small VM, rounds can be bimodal (wake-ups across vCPUs cost tens of µs); `taskset -c 0 cargo bench ...` gives stable single-core figures."
    );
    let _ = writeln!(
        h,
        "         CPU/op: user+sys of this whole process from /proc/self/stat (ticks of 1/{ticks_per_s} s, summed over rounds) = client (+ relay for proxy/splice); dovecot = all its processes. Approximate, good enough for comparison."
    );
    h
}

// ---------------------------------------------------------------------------------------
// Run

fn run() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let ticks_per_s = clock_ticks_per_second();
    print!("{}", header(&settings, ticks_per_s));
    let wall = Instant::now();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dovecot = Dovecot::start_with(StartOptions {
        imaps: settings.tls(),
    })?;
    let upstream = dovecot.imap_addr();
    let proxy = runtime.block_on(Proxy::start(
        upstream,
        Options {
            plaintext_auth: true,
            ..Default::default()
        },
    ));
    let splice = runtime.block_on(start_splice(upstream))?;

    let message = make_message(settings.message_bytes);
    let mut admin = Client::connect(upstream, None)?;
    admin.command(format_args!("LOGIN {USER} {PASSWORD}"))?;
    admin.append("INBOX", &message)?;
    admin.command(format_args!("CREATE {APPEND_MAILBOX}"))?;

    // The TLS clients trust the server's self-signed certificate, and only that.
    let config_for = |pki: &support::pki::TestPki| Arc::clone(tls_connector(&pki.ca_path).config());
    let proxy_tls = config_for(&proxy.pki);
    let dovecot_tls = dovecot.imaps_pki().map(config_for);
    let mut clients: Vec<Option<Client>> = (0..ROUTES).map(|_| None).collect();
    let mut tls_parameters = Vec::new();
    for &variant in &settings.variants {
        let (addr, tls) = match variant {
            DIRECT => (upstream, None),
            PROXY => (proxy.plain, None),
            SPLICE => (splice, None),
            Route::Plain(Variant::SpliceCt) => (start_splice_current_thread(upstream)?, None),
            Route::Plain(Variant::Threads) => (start_thread_relay(upstream)?, None),
            Route::DirectTls => {
                let addr = dovecot
                    .imaps_addr()
                    .ok_or("Dovecot has no imaps listener")?;
                (addr, dovecot_tls.as_ref())
            }
            Route::ProxyTls => (proxy.implicit, Some(&proxy_tls)),
        };
        let client = Client::session(addr, tls)?;
        if let Some(parameters) = client.tls_parameters() {
            tls_parameters.push(format!("{} {parameters}", variant.name()));
        }
        clients[variant.index()] = Some(client);
    }
    let mut bench = Bench {
        settings: &settings,
        clients,
        admin,
        message,
        dovecot_pids: dovecot_pids(upstream.port()),
    };
    bench.warm_up()?;

    let mut ops = vec![Op::Noop, Op::Fetch];
    if settings.appends > 0 {
        ops.push(Op::Append);
    }
    let mut results = Results {
        samples: Default::default(),
    };
    let mut truncated = Vec::new();
    let measuring = Instant::now();
    let mut rounds_done = 0;
    for round in 0..settings.rounds {
        if round > 0 && measuring.elapsed() > settings.total_cap {
            break;
        }
        let order = round_order(round, &settings.variants);
        for &op in &ops {
            let count = match op {
                Op::Noop => settings.noops,
                Op::Fetch => settings.fetches,
                Op::Append => settings.appends,
            };
            for &variant in &order {
                let sample = bench.measure(variant, op, count)?;
                if sample.truncated {
                    truncated.push(format!(
                        "round {round} {op:?} {}: {} of {count}",
                        variant.name(),
                        sample.nanos.len()
                    ));
                }
                results.samples[op as usize][variant.index()].push(sample);
            }
            if op == Op::Append {
                bench.reset_append_mailbox()?;
            }
        }
        rounds_done += 1;
    }

    let mut report = Report {
        text: String::new(),
        summary: Vec::new(),
    };
    report.line(round_orders(
        rounds_done,
        |r| round_order(r, &settings.variants),
        Route::name,
    ));
    if !tls_parameters.is_empty() {
        report.line(format!("TLS negotiated: {}", tls_parameters.join("; ")));
    }
    if let Some(warning) = stopped_early(rounds_done, settings.rounds, settings.total_cap) {
        report.line(warning);
    }
    for t in &truncated {
        report.line(format!("WARNING: loop hit its time cap: {t}"));
    }
    report_noop(&mut report, &results, &settings, ticks_per_s);
    report_bulk(&mut report, &results, &settings, Op::Fetch, ticks_per_s);
    if settings.appends > 0 {
        report_bulk(&mut report, &results, &settings, Op::Append, ticks_per_s);
    }
    report.line("\n== summary ==");
    let summary = std::mem::take(&mut report.summary);
    for s in summary {
        report.line(s);
    }
    report.line(format!(
        "measured {rounds_done} rounds in {:.1} s (whole run {:.1} s)",
        measuring.elapsed().as_secs_f64(),
        wall.elapsed().as_secs_f64()
    ));
    print!("{}", report.text);

    // Orderly teardown: clients, proxy, then Dovecot (its Drop stops the instance).
    drop(bench);
    runtime.block_on(proxy.stop(Duration::from_millis(200)));
    drop(dovecot);
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}
