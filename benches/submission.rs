//! B8, first half, of `BENCHMARKS.md` §2 (B6 in the issue): submission messages per
//! second through the proxy's submission front vs directly to Postfix's submission
//! listener, in one run: `cargo bench --bench submission`.
//!
//! Setup (all private instances from the integration-test support, `tests/support`):
//! a Dovecot (SASL for Postfix; LMTP only with `BENCH_DELIVER=1`), a Postfix for the
//! domain `a.test` with SMTP AUTH through that Dovecot (as in `tests/submission.rs`), the
//! proxy in this process (submission front with `insecure_allow_plaintext_auth`, token
//! secrets and an `X-COI-Server` hint), and `splice`, a bare tokio byte copy in front of
//! the same Postfix listener, as the reference for the extra hop alone.
//!
//! What Postfix does with the messages is the same for every variant: by default it is
//! told to put every message on hold (`smtpd_data_restrictions = check_client_access
//! static:HOLD`, `in_flow_delay = 0`): smtpd, cleanup and the queue file (written and
//! fsynced) are all done before the 250, as for any submission, but no delivery follows,
//! so neither the queue manager nor Dovecot compete for the 2 CPUs with the next
//! messages. The hold queue is emptied between rounds (`postsuper -d ALL hold`, not
//! timed). With `BENCH_DELIVER=1` the messages are delivered by LMTP into Dovecot instead
//! (closer to real life, noisier: delivery of one sample overlaps the next).
//!
//! Variants (each with its own connections, authenticated once with AUTH PLAIN over
//! plaintext, then kept for the whole run):
//!
//! - `direct`: client → Postfix submission
//! - `proxy`:  client → coi-proxy submission front → Postfix submission
//! - `splice`: client → tokio `copy_bidirectional` → Postfix submission
//!
//! One message: `MAIL FROM`, `RCPT TO` (one local recipient), `DATA`, the dot-stuffed
//! message and `.`: one command at a time, each reply awaited (no PIPELINING unless
//! `BENCH_PIPELINING=1`, no RSET),
//! N messages per connection in one session. The message is a chat message
//! (`Chat-Version: 1.0`, three visible recipients), so the proxy issues and injects three
//! tokens per message, its normal work. The load generator is blocking std threads, one
//! per connection, started together behind a barrier.
//!
//! Rounds: every (size, concurrency) sample runs each variant back to back, direct and
//! proxy alternating which goes first, splice moving through the positions. Per sample:
//! msgs/s = messages / wall time from the barrier to the last reply; per-message latency
//! (MAIL to the reply to the end of data) and the time of each phase. Reported: the
//! median [min..max] of the per-round values, ratios as the median [min..max] of the
//! per-round ratios (both operands from the same round).
//!
//! CPU: per-thread CPU time from `/proc/self/task/*/schedstat` (the tokio runtime's
//! threads, `relay-rt`, carry the proxy or the splice; the other threads are the client),
//! and per-process CPU time of every Postfix process (`/proc/<pid>/schedstat`), per
//! message.
//!
//! Knobs (environment): `BENCH_ROUNDS`, `BENCH_SIZES` (bytes, default `5120,1048576`),
//! `BENCH_CONCURRENCY` (default `1,4`), `BENCH_MSGS` (messages per sample for sizes below
//! 64 KiB), `BENCH_MSGS_LARGE` (for larger sizes), `BENCH_WARMUP` (messages per
//! connection and size), `BENCH_VARIANTS` (default `direct,proxy,splice`),
//! `BENCH_DELIVER=1`, `BENCH_PIPELINING=1` (MAIL, RCPT and DATA in one write),
//! `BENCH_MAX_SECS` (no new round after this), `BENCH_QUICK=1` or the
//! argument `--quick` for a smoke run. Without cargo's `--bench` argument (e.g.
//! `cargo test --benches`) the quick run is used.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use common::{
    base64_lines, connect_blocking, dovecot_pids, dovecot_version, env_flag, env_list, env_usize,
    env_variants, header_start, main_of, nproc, paired_difference, paired_ratio, percentile,
    postfix_version, quick_run, round_orders, schedstat_ns, start_splice, stopped_early,
    thread_cpu, verdict, BenchResult, Spread, Variant, MAIN_VARIANTS,
};
use support::dovecot::Dovecot;
use support::postfix::{Postfix, PostfixOptions};
use support::proxy::{Options, Proxy, SubmissionOptions};

const DOMAIN: &str = "a.test";
const USER: &str = "alice";
const SENDER: &str = "alice@a.test";
const RECIPIENT: &str = "bob@a.test";
/// Bound for one socket read or write: a stuck server fails the bench instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for one Postfix command (`postsuper`, `postqueue`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Name prefix of the tokio runtime's threads (proxy and splice run there).
const RELAY_THREAD: &str = "relay-rt";
/// The throughput target of BENCHMARKS.md B8.
const TARGET: f64 = 0.95;

fn main() -> ExitCode {
    main_of("submission", run)
}

// ---------------------------------------------------------------------------------------
// Settings

struct Settings {
    quick: bool,
    variants: Vec<Variant>,
    rounds: usize,
    sizes: Vec<usize>,
    concurrency: Vec<usize>,
    msgs_small: usize,
    msgs_large: usize,
    warmup: usize,
    deliver: bool,
    /// Send MAIL, RCPT and DATA in one write (RFC 2920) instead of one at a time.
    pipelining: bool,
    /// Bound for one sample; the connections stop sending when exceeded.
    sample_cap: Duration,
    /// No new round starts after this much time since the first one.
    total_cap: Duration,
}

impl Settings {
    fn from_env() -> BenchResult<Settings> {
        let quick = quick_run();
        let (rounds, msgs_small, msgs_large, warmup, sample_cap, total_cap) = if quick {
            (2, 20, 4, 2, 5, 10)
        } else {
            (12, 400, 40, 10, 30, 240)
        };
        let required = [Variant::Direct, Variant::Proxy];
        let variants = env_variants(&MAIN_VARIANTS, Variant::name, &required, &MAIN_VARIANTS)?;
        let concurrency = env_list("BENCH_CONCURRENCY", &[1, 4])?;
        if concurrency.iter().any(|c| !(1..=32).contains(c)) {
            return Err("BENCH_CONCURRENCY: levels must be between 1 and 32".into());
        }
        let sizes = env_list("BENCH_SIZES", &[5 * 1024, 1024 * 1024])?;
        if sizes.iter().any(|s| !(1024..=64 << 20).contains(s)) {
            return Err("BENCH_SIZES: sizes must be between 1024 and 67108864".into());
        }
        Ok(Settings {
            quick,
            variants,
            rounds: env_usize("BENCH_ROUNDS", rounds)?.max(1),
            sizes,
            concurrency,
            msgs_small: env_usize("BENCH_MSGS", msgs_small)?.max(1),
            msgs_large: env_usize("BENCH_MSGS_LARGE", msgs_large)?.max(1),
            warmup: env_usize("BENCH_WARMUP", warmup)?,
            deliver: env_flag("BENCH_DELIVER"),
            pipelining: env_flag("BENCH_PIPELINING"),
            sample_cap: Duration::from_secs(sample_cap),
            total_cap: Duration::from_secs(env_usize("BENCH_MAX_SECS", total_cap)? as u64),
        })
    }

    /// Messages per sample (all connections together) for a message size.
    fn messages(&self, size: usize) -> usize {
        if size < 64 * 1024 {
            self.msgs_small
        } else {
            self.msgs_large
        }
    }

    fn max_concurrency(&self) -> usize {
        self.concurrency.iter().copied().max().unwrap_or(1)
    }
}

// ---------------------------------------------------------------------------------------
// Variants

/// The order of the variants in round `r`: direct and proxy alternate which goes first
/// (proxy in even rounds); splice moves through the positions (six rounds cover all six
/// orders).
fn round_order(r: usize, variants: &[Variant]) -> Vec<Variant> {
    common::round_order(r, Variant::Proxy, Variant::Direct, variants)
}

// ---------------------------------------------------------------------------------------
// A minimal blocking SMTP client

struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: Vec<u8>,
    /// The text of the last reply (for error messages).
    last: String,
    /// `MAIL FROM`, `RCPT TO` and `DATA` lines, each with its CRLF.
    mail: Vec<u8>,
    rcpt: Vec<u8>,
    /// All three in one buffer, for the pipelined variant of [`SmtpClient::send`].
    envelope: Vec<u8>,
}

impl SmtpClient {
    /// Connects, says EHLO and authenticates with AUTH PLAIN.
    fn session(addr: SocketAddr, password: &str) -> io::Result<SmtpClient> {
        let (stream, writer) = connect_blocking(addr, IO_TIMEOUT)?;
        let mut client = SmtpClient {
            reader: BufReader::with_capacity(16 * 1024, stream),
            writer,
            line: Vec::with_capacity(512),
            last: String::new(),
            mail: format!("MAIL FROM:<{SENDER}>\r\n").into_bytes(),
            rcpt: format!("RCPT TO:<{RECIPIENT}>\r\n").into_bytes(),
            envelope: format!("MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n")
                .into_bytes(),
        };
        client.expect_reply(220, "greeting")?;
        client.command(b"EHLO bench.test\r\n", 250)?;
        let auth = format!(
            "AUTH PLAIN {}\r\n",
            BASE64.encode(format!("\0{USER}\0{password}"))
        );
        client.command(auth.as_bytes(), 235)?;
        Ok(client)
    }

    /// Reads one (possibly multi-line) reply and returns its code.
    fn read_reply(&mut self) -> io::Result<u16> {
        self.last.clear();
        loop {
            self.line.clear();
            if self.reader.read_until(b'\n', &mut self.line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            self.last
                .push_str(String::from_utf8_lossy(&self.line).trim_end());
            let code = self
                .line
                .get(..3)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| io::Error::other(format!("not an SMTP reply: {:?}", self.last)))?;
            if self.line.get(3) != Some(&b'-') {
                return Ok(code);
            }
            self.last.push_str(" | ");
        }
    }

    fn expect_reply(&mut self, want: u16, what: &str) -> io::Result<()> {
        let code = self.read_reply()?;
        if code == want {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{what}: expected {want}, got {:?}",
                self.last
            )))
        }
    }

    fn command(&mut self, line: &[u8], want: u16) -> io::Result<()> {
        self.writer.write_all(line)?;
        let what = String::from_utf8_lossy(line).trim_end().to_owned();
        let what = if what.starts_with("AUTH") {
            "AUTH PLAIN".to_owned()
        } else {
            what
        };
        self.expect_reply(want, &what)
    }

    /// One message; returns the time of each phase. With `pipelining`, MAIL, RCPT and
    /// DATA go out in one write and the phases end at the arrival of each reply.
    fn send(&mut self, payload: &[u8], pipelining: bool) -> io::Result<Phases> {
        let t0 = Instant::now();
        let (t1, t2) = if pipelining {
            self.writer.write_all(&self.envelope)?;
            self.expect_reply(250, "MAIL FROM (pipelined)")?;
            let t1 = Instant::now();
            self.expect_reply(250, "RCPT TO (pipelined)")?;
            let t2 = Instant::now();
            self.expect_reply(354, "DATA (pipelined)")?;
            (t1, t2)
        } else {
            let mail = std::mem::take(&mut self.mail);
            let sent = self.command(&mail, 250);
            self.mail = mail;
            sent?;
            let t1 = Instant::now();
            let rcpt = std::mem::take(&mut self.rcpt);
            let sent = self.command(&rcpt, 250);
            self.rcpt = rcpt;
            sent?;
            let t2 = Instant::now();
            self.command(b"DATA\r\n", 354)?;
            (t1, t2)
        };
        let t3 = Instant::now();
        self.writer.write_all(payload)?;
        self.expect_reply(250, "end of data")?;
        let t4 = Instant::now();
        let ns = |a: Instant, b: Instant| b.duration_since(a).as_nanos() as u64;
        Ok(Phases {
            mail: ns(t0, t1),
            rcpt: ns(t1, t2),
            data: ns(t2, t3),
            body: ns(t3, t4),
            total: ns(t0, t4),
        })
    }
}

/// Per-message times in ns: `MAIL` → 250, `RCPT` → 250, `DATA` → 354, the message and
/// its end → 250, and the whole.
#[derive(Clone, Copy, Debug, Default)]
struct Phases {
    mail: u64,
    rcpt: u64,
    data: u64,
    body: u64,
    total: u64,
}

/// Reads one phase out of [`Phases`].
type PhaseOf = fn(&Phases) -> u64;

const PHASES: [(&str, PhaseOf); 5] = [
    ("MAIL", |p| p.mail),
    ("RCPT", |p| p.rcpt),
    ("DATA", |p| p.data),
    ("body+.", |p| p.body),
    ("total", |p| p.total),
];

// ---------------------------------------------------------------------------------------
// Load generator: one thread per connection

struct Job {
    payload: Arc<Vec<u8>>,
    pipelining: bool,
    count: usize,
    cap: Duration,
    start: Arc<Barrier>,
}

struct Done {
    phases: Vec<Phases>,
    end: Instant,
    truncated: bool,
}

struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Result<Done, String>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(name: String, mut client: SmtpClient) -> io::Result<Worker> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            while let Ok(job) = job_rx.recv() {
                job.start.wait();
                let start = Instant::now();
                let mut phases = Vec::with_capacity(job.count);
                let mut truncated = false;
                let mut result = Ok(());
                for _ in 0..job.count {
                    if start.elapsed() > job.cap {
                        truncated = true;
                        break;
                    }
                    match client.send(&job.payload, job.pipelining) {
                        Ok(p) => phases.push(p),
                        Err(e) => {
                            result = Err(e.to_string());
                            break;
                        }
                    }
                }
                let end = Instant::now();
                let message = result.map(|()| Done {
                    phases,
                    end,
                    truncated,
                });
                let failed = message.is_err();
                if done_tx.send(message).is_err() || failed {
                    break;
                }
            }
            // Polite goodbye; errors do not matter any more.
            let _ = client.writer.write_all(b"QUIT\r\n");
            let _ = client.read_reply();
        })?;
        Ok(Worker {
            jobs,
            done,
            handle: Some(handle),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the job channel ends the thread's loop.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// CPU accounting

/// This process's CPU so far, split into the relay runtime's threads and the rest (the
/// client threads and the main thread).
#[derive(Clone, Copy, Debug, Default)]
struct SelfCpu {
    relay: u64,
    client: u64,
}

fn self_cpu() -> SelfCpu {
    let mut cpu = SelfCpu::default();
    for (comm, ns) in thread_cpu() {
        if comm.starts_with(RELAY_THREAD) {
            cpu.relay += ns;
        } else {
            cpu.client += ns;
        }
    }
    cpu
}

/// On-CPU ns per process of a set.
fn process_cpu(pids: &[u32]) -> HashMap<u32, u64> {
    pids.iter()
        .filter_map(|pid| {
            Some((
                *pid,
                schedstat_ns(Path::new(&format!("/proc/{pid}/schedstat")))?,
            ))
        })
        .collect()
}

/// CPU used between two snapshots; processes that appeared in between count fully.
fn process_cpu_since(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(pid, ns)| ns.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

// ---------------------------------------------------------------------------------------
// Postfix for the bench

/// Tells the Postfix instance to put every message on hold (or leaves it delivering),
/// then restarts it so that its daemons read the change. Ports and queue stay.
fn configure_postfix(postfix: &mut Postfix, deliver: bool) -> BenchResult<()> {
    if deliver {
        return Ok(());
    }
    postfix.add_to_main_cf(
        "# benches/submission.rs: every message is put on hold after its 250, so that\n\
         # no delivery competes with the measurement; without deliveries the queue\n\
         # manager hands out no flow-control tokens, hence in_flow_delay = 0.\n\
         smtpd_data_restrictions = check_client_access static:HOLD\n\
         in_flow_delay = 0",
    )?;
    Ok(())
}

/// Runs a Postfix command against the instance, bounded by [`COMMAND_TIMEOUT`].
fn postfix_command(postfix: &Postfix, program: &str, args: &[&str]) -> BenchResult<String> {
    let mut child = Command::new(format!("/usr/sbin/{program}"))
        .arg("-c")
        .arg(postfix.config_dir())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{program} {args:?} did not finish in {COMMAND_TIMEOUT:?}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Messages in the hold queue (files under `queue/hold`).
fn held(postfix: &Postfix) -> usize {
    fs::read_dir(postfix.queue_dir().join("hold"))
        .map(|d| d.flatten().count())
        .unwrap_or(0)
}

/// Empties the hold queue (between rounds, not timed).
fn purge_hold(postfix: &Postfix) -> BenchResult<()> {
    postfix_command(postfix, "postsuper", &["-d", "ALL", "hold"])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Messages

/// The DATA payload of exactly `size` bytes (the message dot-stuffed, then `.` CRLF):
/// a chat message from alice with three visible recipients and a base64-looking body of
/// 76-character lines (none starts with a dot).
fn payload(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(
        format!(
            "From: Alice <{SENDER}>\r\n\
             To: Bob <{RECIPIENT}>\r\n\
             Cc: carol@a.test, Dave <dave@a.test>\r\n\
             Subject: submission benchmark\r\n\
             Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
             Message-ID: <chat$bench.{size}@a.test>\r\n\
             Chat-Version: 1.0\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: base64\r\n\
             \r\n"
        )
        .as_bytes(),
    );
    base64_lines(&mut out, size.saturating_sub(3));
    out.extend_from_slice(b".\r\n");
    out
}

// ---------------------------------------------------------------------------------------
// Measuring

/// One variant, one (size, concurrency), one round.
struct Sample {
    msgs: usize,
    wall: Duration,
    /// Per-message phase times, all connections together.
    phases: Vec<Phases>,
    client_cpu: u64,
    relay_cpu: u64,
    postfix_cpu: u64,
    dovecot_cpu: u64,
    truncated: bool,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.msgs as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Percentile of a phase in ms (nearest rank).
    fn phase_ms(&self, phase: PhaseOf, p: f64) -> f64 {
        let mut v: Vec<u64> = self.phases.iter().map(phase).collect();
        v.sort_unstable();
        percentile(&v, p) / 1e6
    }
}

struct Bench<'a> {
    settings: &'a Settings,
    /// `workers[variant][connection]`.
    workers: Vec<Vec<Worker>>,
    postfix: &'a Postfix,
    dovecot_pids: Vec<u32>,
}

impl Bench<'_> {
    /// Sends `total` messages over the first `concurrency` connections of `variant`.
    fn measure(
        &mut self,
        variant: Variant,
        payload: &Arc<Vec<u8>>,
        concurrency: usize,
        total: usize,
    ) -> BenchResult<Sample> {
        let workers = &self.workers[variant.index()][..concurrency];
        let start = Arc::new(Barrier::new(concurrency + 1));
        let per = total.div_ceil(concurrency);
        let postfix_pids = self.postfix.processes();
        let postfix_before = process_cpu(&postfix_pids);
        let dovecot_before = process_cpu(&self.dovecot_pids);
        let cpu_before = self_cpu();
        for w in workers {
            w.jobs
                .send(Job {
                    payload: payload.clone(),
                    pipelining: self.settings.pipelining,
                    count: per,
                    cap: self.settings.sample_cap,
                    start: start.clone(),
                })
                .map_err(|_| format!("{} connection thread is gone", variant.name()))?;
        }
        start.wait();
        let t0 = Instant::now();
        let mut phases = Vec::with_capacity(per * concurrency);
        let mut end = t0;
        let mut truncated = false;
        for w in workers {
            let done = w
                .done
                .recv()
                .map_err(|_| format!("{} connection thread is gone", variant.name()))?
                .map_err(|e| format!("{} connection failed: {e}", variant.name()))?;
            phases.extend(done.phases);
            end = end.max(done.end);
            truncated |= done.truncated;
        }
        let cpu_after = self_cpu();
        let postfix_after = process_cpu(&self.postfix.processes());
        let dovecot_after = process_cpu(&self.dovecot_pids);
        Ok(Sample {
            msgs: phases.len(),
            wall: end.duration_since(t0),
            phases,
            client_cpu: cpu_after.client.saturating_sub(cpu_before.client),
            relay_cpu: cpu_after.relay.saturating_sub(cpu_before.relay),
            postfix_cpu: process_cpu_since(&postfix_before, &postfix_after),
            dovecot_cpu: process_cpu_since(&dovecot_before, &dovecot_after),
            truncated,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Statistics and report

/// CPU µs per message over all rounds: (client, relay, Postfix, Dovecot).
fn cpu_per_msg(samples: &[Sample]) -> [f64; 4] {
    let msgs: usize = samples.iter().map(|s| s.msgs).sum();
    let per = |f: fn(&Sample) -> u64| {
        samples.iter().map(f).sum::<u64>() as f64 / 1e3 / msgs.max(1) as f64
    };
    [
        per(|s| s.client_cpu),
        per(|s| s.relay_cpu),
        per(|s| s.postfix_cpu),
        per(|s| s.dovecot_cpu),
    ]
}

fn report(
    out: &mut String,
    summary: &mut Vec<String>,
    settings: &Settings,
    size: usize,
    concurrency: usize,
    samples: &[Vec<Sample>],
) {
    let of = |v: Variant| &samples[v.index()];
    let rounds = of(Variant::Direct).len();
    let _ = writeln!(
        out,
        "\n== {size} B messages, {concurrency} connection(s), {} messages per variant per round, {rounds} rounds ==",
        settings.messages(size)
    );
    let _ = writeln!(
        out,
        "{:<7} {:>24} {:>24} {:>9} {:>11} {:>10} {:>12}{}",
        "variant",
        "msgs/s [min..max]",
        "p50 ms [min..max]",
        "p99 ms",
        "client µs",
        "relay µs",
        "postfix µs",
        if settings.deliver {
            "  dovecot µs"
        } else {
            ""
        }
    );
    let rate = |v: Variant| of(v).iter().map(Sample::rate).collect::<Vec<_>>();
    let p = |v: Variant, q: f64| {
        of(v)
            .iter()
            .map(|s| s.phase_ms(|x| x.total, q))
            .collect::<Vec<_>>()
    };
    for &v in &settings.variants {
        let cpu = cpu_per_msg(of(v));
        let _ = writeln!(
            out,
            "{:<7} {:>24} {:>24} {:>9.2} {:>11.0} {:>10.0} {:>12.0}{}",
            v.name(),
            Spread::of(rate(v)).show(1),
            Spread::of(p(v, 50.0)).show(2),
            Spread::of(p(v, 99.0)).median,
            cpu[0],
            cpu[1],
            cpu[2],
            if settings.deliver {
                format!(" {:>11.0}", cpu[3])
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        out,
        "        (CPU µs per message over all rounds: client = this process minus the relay runtime; relay = the proxy or splice runtime; postfix = all its processes)"
    );
    let ratio = paired_ratio(&rate(Variant::Proxy), &rate(Variant::Direct));
    let added = paired_difference(&p(Variant::Proxy, 50.0), &p(Variant::Direct, 50.0));
    let _ = writeln!(
        out,
        "proxy/direct msgs/s {}x  target >= {TARGET}: {};  p50 latency added {} ms",
        ratio.show(3),
        verdict(ratio.median >= TARGET),
        added.show(3)
    );
    if settings.variants.contains(&Variant::Splice) {
        let splice = paired_ratio(&rate(Variant::Splice), &rate(Variant::Direct));
        let proxy_splice = paired_ratio(&rate(Variant::Proxy), &rate(Variant::Splice));
        let _ = writeln!(
            out,
            "splice/direct msgs/s {}x (the bare extra hop);  proxy/splice {}x",
            splice.show(3),
            proxy_splice.show(3)
        );
    }
    // Where the time goes: p50 per phase, per variant, and the proxy's excess.
    let _ = write!(out, "phase p50 ms   ");
    for (name, _) in PHASES {
        let _ = write!(out, "{name:>10}");
    }
    let _ = writeln!(out);
    let phase = |v: Variant, f: PhaseOf| {
        of(v)
            .iter()
            .map(|s| s.phase_ms(f, 50.0))
            .collect::<Vec<_>>()
    };
    for &v in &settings.variants {
        let _ = write!(out, "  {:<13}", v.name());
        for (_, f) in PHASES {
            let _ = write!(out, "{:>10.3}", Spread::of(phase(v, f)).median);
        }
        let _ = writeln!(out);
    }
    for &v in settings.variants.iter().filter(|v| **v != Variant::Direct) {
        let _ = write!(out, "  {:<13}", format!("{}-direct", v.name()));
        for (_, f) in PHASES {
            let d = paired_difference(&phase(v, f), &phase(Variant::Direct, f));
            let _ = write!(out, "{:>+10.3}", d.median);
        }
        let _ = writeln!(out);
    }
    summary.push(format!(
        "B8 submission {size} B x{concurrency}: proxy {:.1} msgs/s, direct {:.1} msgs/s, proxy/direct {:.3}x (target >= {TARGET}: {}); p50 {:.2} vs {:.2} ms",
        Spread::of(rate(Variant::Proxy)).median,
        Spread::of(rate(Variant::Direct)).median,
        ratio.median,
        verdict(ratio.median >= TARGET),
        Spread::of(p(Variant::Proxy, 50.0)).median,
        Spread::of(p(Variant::Direct, 50.0)).median,
    ));
}

// ---------------------------------------------------------------------------------------
// Header

fn header(settings: &Settings) -> String {
    let nproc = nproc();
    let variants: Vec<&str> = settings.variants.iter().map(|v| v.name()).collect();
    let mut h = header_start(
        "coi-proxy submission bench: BENCHMARKS.md §2 B8 (submission msgs/s through the proxy vs direct to Postfix)",
        settings.quick,
        &format!(
            "Postfix {}; Dovecot {}; ",
            postfix_version(),
            dovecot_version()
        ),
    );
    let _ = writeln!(
        h,
        "settings rounds {} (BENCH_ROUNDS); sizes {:?} B (BENCH_SIZES); connections {:?} (BENCH_CONCURRENCY); messages per variant per sample: {} below 64 KiB (BENCH_MSGS), {} above (BENCH_MSGS_LARGE); variants {}",
        settings.rounds,
        settings.sizes,
        settings.concurrency,
        settings.msgs_small,
        settings.msgs_large,
        variants.join(",")
    );
    let _ = writeln!(
        h,
        "warm-up  {} messages per connection and size (BENCH_WARMUP)",
        settings.warmup
    );
    let _ = writeln!(
        h,
        "paths    direct = client->Postfix submission; proxy = client->coi-proxy submission front->Postfix; splice = client->tokio copy_bidirectional->Postfix (the bare extra hop)."
    );
    let _ = writeln!(
        h,
        "session  per connection: EHLO, AUTH PLAIN (plaintext; the proxy with insecure_allow_plaintext_auth) once; then per message MAIL FROM, RCPT TO (1 local recipient), DATA,\n         the message, '.': {}, no RSET. The message is a chat message (Chat-Version, 3 visible recipients): the proxy injects 3 tokens.",
        if settings.pipelining {
            "BENCH_PIPELINING=1: MAIL, RCPT and DATA in one write, then their three replies (they usually arrive together: the MAIL phase then holds the whole envelope)"
        } else {
            "one command at a time, each reply awaited (no PIPELINING; BENCH_PIPELINING=1 pipelines)"
        }
    );
    if settings.deliver {
        let _ = writeln!(
            h,
            "postfix  BENCH_DELIVER=1: messages are delivered by LMTP into Dovecot after the 250 (real life; delivery of one sample overlaps the next, so noisier)."
        );
    } else {
        let _ = writeln!(
            h,
            "postfix  every message is put on HOLD (smtpd_data_restrictions = check_client_access static:HOLD, in_flow_delay = 0): the same for every path. Postfix does all its\n         work up to the 250 (smtpd, cleanup, queue file written and fsynced) but delivers nothing, so no queue manager, LMTP or Dovecot work competes with the next\n         messages for the 2 CPUs. The hold queue is emptied between rounds (postsuper -d ALL hold, not timed). BENCH_DELIVER=1 delivers into Dovecot instead."
        );
    }
    let _ = writeln!(
        h,
        "method   each round runs every (size, connections) sample for each variant back to back (direct/proxy alternate first, splice rotates); msgs/s = messages / wall\n         time from the start barrier to the last reply; latency = MAIL to the reply to the end of data. Figures: median [min..max] of per-round values; ratios:\n         median [min..max] of per-round ratios (both variants from the same round). p99 = median of per-round p99s (with few messages per sample, near the max)."
    );
    let _ = writeln!(
        h,
        "CPU      per thread/process on-CPU time from schedstat: client = the load generator's threads, relay = the tokio runtime ({RELAY_THREAD}) running the proxy or splice,\n         postfix = all processes of the instance. Everything shares the {nproc} CPUs."
    );
    h
}

// ---------------------------------------------------------------------------------------
// Run

fn run() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    print!("{}", header(&settings));
    let wall = Instant::now();

    let dovecot = Dovecot::start()?;
    let mut postfix =
        Postfix::start(PostfixOptions::new(DOMAIN, dovecot.lmtp_addr()).sasl(dovecot.auth_addr()))?;
    configure_postfix(&mut postfix, settings.deliver)?;
    let password = dovecot
        .password_of(USER)
        .ok_or("the test Dovecot has no user alice")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(RELAY_THREAD)
        .enable_all()
        .build()?;
    let proxy = runtime.block_on(Proxy::start(
        dovecot.imap_addr(),
        Options {
            submission: Some(SubmissionOptions::new(postfix.submission_addr(), DOMAIN)),
            ..Options::default()
        },
    ));
    let proxy_addr = proxy
        .submission
        .ok_or("the proxy has no submission listener")?
        .plain;
    let splice = runtime.block_on(start_splice(postfix.submission_addr()))?;

    let mut workers: Vec<Vec<Worker>> = (0..MAIN_VARIANTS.len()).map(|_| Vec::new()).collect();
    for &v in &settings.variants {
        let addr = match v {
            Variant::Direct => postfix.submission_addr(),
            Variant::Proxy => proxy_addr,
            Variant::Splice => splice,
            Variant::SpliceCt | Variant::Threads => {
                unreachable!("BENCH_VARIANTS offers only the main variants here")
            }
        };
        for i in 0..settings.max_concurrency() {
            let client = SmtpClient::session(addr, password)
                .map_err(|e| format!("{} connection {i}: {e}", v.name()))?;
            workers[v.index()].push(Worker::start(format!("client-{}-{i}", v.name()), client)?);
        }
    }
    let payloads: Vec<Arc<Vec<u8>>> = settings
        .sizes
        .iter()
        .map(|&s| Arc::new(payload(s)))
        .collect();
    let mut bench = Bench {
        settings: &settings,
        workers,
        postfix: &postfix,
        dovecot_pids: dovecot_pids(dovecot.imap_addr().port()),
    };

    // Warm-up: every connection sends a few messages of each size.
    for &v in &settings.variants {
        for p in &payloads {
            let n = settings.max_concurrency();
            bench.measure(v, p, n, settings.warmup * n)?;
        }
    }
    let checks = warm_up_checks(&settings, &postfix, &proxy)?;
    println!("checks   {checks}");
    if !settings.deliver {
        purge_hold(&postfix)?;
    }

    // samples[size][concurrency][variant][round]
    let mut samples: Vec<Vec<Vec<Vec<Sample>>>> = settings
        .sizes
        .iter()
        .map(|_| {
            settings
                .concurrency
                .iter()
                .map(|_| (0..MAIN_VARIANTS.len()).map(|_| Vec::new()).collect())
                .collect()
        })
        .collect();
    let mut warnings = Vec::new();
    let measuring = Instant::now();
    let mut rounds_done = 0;
    for round in 0..settings.rounds {
        if round > 0 && measuring.elapsed() > settings.total_cap {
            break;
        }
        let order = round_order(round, &settings.variants);
        for (s, &size) in settings.sizes.iter().enumerate() {
            for (c, &conc) in settings.concurrency.iter().enumerate() {
                for &v in &order {
                    let sample = bench.measure(v, &payloads[s], conc, settings.messages(size))?;
                    if sample.truncated {
                        warnings.push(format!(
                            "round {round} {size} B x{conc} {}: {} of {} messages (sample time cap)",
                            v.name(),
                            sample.msgs,
                            settings.messages(size)
                        ));
                    }
                    samples[s][c][v.index()].push(sample);
                }
            }
        }
        if !settings.deliver {
            purge_hold(&postfix)?;
        }
        rounds_done += 1;
    }

    let mut out = String::new();
    let mut summary = Vec::new();
    let orders = round_orders(
        rounds_done,
        |r| round_order(r, &settings.variants),
        Variant::name,
    );
    let _ = writeln!(out, "{orders}");
    if let Some(warning) = stopped_early(rounds_done, settings.rounds, settings.total_cap) {
        let _ = writeln!(out, "{warning}");
    }
    for w in &warnings {
        let _ = writeln!(out, "WARNING: {w}");
    }
    for (s, &size) in settings.sizes.iter().enumerate() {
        for (c, &conc) in settings.concurrency.iter().enumerate() {
            report(
                &mut out,
                &mut summary,
                &settings,
                size,
                conc,
                &samples[s][c],
            );
        }
    }
    let _ = writeln!(out, "\n== summary ==");
    for line in summary {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "measured {rounds_done} rounds in {:.1} s (whole run {:.1} s)",
        measuring.elapsed().as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
    print!("{out}");

    // Orderly teardown: clients (QUIT), proxy, then Postfix and Dovecot (their Drop).
    drop(bench);
    runtime.block_on(proxy.stop(Duration::from_millis(200)));
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(postfix);
    drop(dovecot);
    Ok(())
}

/// After the warm-up: the messages went where they should (hold queue, or delivered),
/// and the proxy injected tokens. Returns a line for the header.
fn warm_up_checks(settings: &Settings, postfix: &Postfix, proxy: &Proxy) -> BenchResult<String> {
    let metrics = proxy.metrics_text();
    let injected: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("coi_proxy_submission_token_injections_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    let relayed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("coi_proxy_submission_messages_total") && l.contains("relayed"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    if injected < 1.0 {
        return Err(format!(
            "the proxy injected no tokens during the warm-up (relayed {relayed} messages)"
        )
        .into());
    }
    let where_to = if settings.deliver {
        "delivered by LMTP into Dovecot".to_owned()
    } else {
        let n = held(postfix);
        let expected = settings.warmup
            * settings.max_concurrency()
            * settings.variants.len()
            * settings.sizes.len();
        if n < expected {
            return Err(format!(
                "only {n} of {expected} warm-up messages are in the hold queue: HOLD not in effect?\n{}",
                postfix.log_contents()
            )
            .into());
        }
        format!("{n} warm-up messages in Postfix's hold queue")
    };
    Ok(format!(
        "warm-up ok: {where_to}; the proxy relayed {relayed} messages with {injected} tokens injected ({:.1} per message)",
        injected / relayed.max(1.0)
    ))
}
