//! The IDLE wake (DESIGN.md §6, BENCHMARKS.md B6 "path S with the IDLE wake"): from
//! submitting a message to `* n EXISTS` at the recipient's IDLE, with the wake (the client
//! idles through the proxy) and without it (the client idles directly on Dovecot), for
//! the same deliveries: `cargo bench --bench idle_wake`.
//!
//! Setup: a private Dovecot and the proxy in this process (delivery hook with the mailbox
//! writer, plaintext IMAP listener), from the integration-test support (`tests/support`).
//! Two clients of `bob` idle on INBOX the whole time: `wake` through the proxy, `direct`
//! on Dovecot itself (a separate Dovecot session, so the proxy's restart of its own
//! backend IDLE cannot speed it up). Each delivery is timed from just before `MAIL FROM`
//! until each client has read the `* n EXISTS` line; the next delivery starts only when
//! both have, so every message is seen by both under the same conditions.
//!
//! Paths (`BENCH_PATHS`, default both, interleaved: the order swaps every round):
//! - `lmtp`: LMTP straight to the proxy's delivery hook (which relays to Dovecot's LMTP
//!   and wakes the IDLE on its 250).
//! - `mail`: SMTP submission to a Postfix for a.test, which relays to a Postfix for b.test,
//!   which delivers by LMTP to the hook: BENCHMARKS.md's "submission at domain A →
//!   recipient's IDLE at domain B" (needs root for Postfix; skipped with a note without).
//!
//! Reported per path and variant: p50, p90 and max in ms over the rounds, and the ratio
//! of the p50s. Also the time to the end-of-data reply, the number of backend IDLE
//! restarts (`coi_proxy_imap_idle_wakes_total`), any line the `wake` client saw that is
//! not an untagged update (there must be none), and the CPU of this process (proxy and
//! bench clients) per delivery. Prints figures; asserts nothing.
//!
//! Knobs: `BENCH_ROUNDS` (default 20), `BENCH_PATHS` (`lmtp,mail`), `--quick` or
//! `BENCH_QUICK=1` for 3 rounds (also used without cargo's `--bench` argument, e.g. under
//! `cargo test --benches`). Every delivery has a deadline ([`DELIVERY_DEADLINE`]), every
//! network step a timeout.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use common::{
    bounded, dovecot_version, env_names, env_usize, exists_count, idle_on, is_recent, main_of,
    next_idle_line, nproc, percentile, postfix_version, quick_run, thread_cpu, BenchResult,
};
use support::dovecot::Dovecot;
use support::io::LineClient;
use support::postfix::{smtp, Postfix, PostfixOptions};
use support::proxy::{DeliveryTuning, Proxy};
use support::world::hook_proxy;

/// From submission until both clients have seen the message; beyond it the bench fails.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);
fn main() -> ExitCode {
    main_of("idle_wake", run)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Lmtp,
    Mail,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Lmtp => "lmtp",
            Path::Mail => "mail",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Path::Lmtp => "LMTP to the proxy's delivery hook → Dovecot LMTP",
            Path::Mail => {
                "submission to Postfix a.test → Postfix b.test → delivery hook → Dovecot LMTP"
            }
        }
    }
}

struct Settings {
    rounds: usize,
    paths: Vec<Path>,
}

impl Settings {
    fn from_env() -> BenchResult<Settings> {
        let quick = quick_run();
        let rounds = env_usize("BENCH_ROUNDS", if quick { 3 } else { 20 })?.max(1);
        let paths = env_names("BENCH_PATHS", "path", &[Path::Lmtp, Path::Mail], Path::name)?
            .unwrap_or_else(|| vec![Path::Lmtp, Path::Mail]);
        Ok(Settings { rounds, paths })
    }
}

fn run() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let dovecot = Dovecot::start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let proxy = runtime.block_on(hook_proxy(&dovecot, DeliveryTuning::default()));
    let hook = proxy.delivery.ok_or("the proxy has no delivery hook")?;
    // Postfix b.test delivers to the hook; Postfix a.test relays b.test to it.
    let mut postfixes = None;
    let mut paths = settings.paths.clone();
    if paths.contains(&Path::Mail) {
        let started = Postfix::start(PostfixOptions::new("b.test", hook)).and_then(|b| {
            let a = Postfix::start(
                PostfixOptions::new("a.test", dovecot.lmtp_addr()).route("b.test", b.mx_addr()),
            )?;
            Ok((a, b))
        });
        match started {
            Ok(pair) => postfixes = Some(pair),
            Err(e) => {
                println!("path mail skipped: Postfix did not start ({e})");
                paths.retain(|p| *p != Path::Mail);
            }
        }
    }
    if paths.is_empty() {
        return Err("no path to measure".into());
    }
    let submission = postfixes.as_ref().map(|(a, _)| a.submission_addr());
    let result = runtime.block_on(measure(
        &settings, &paths, &dovecot, &proxy, hook, submission,
    ));
    runtime.block_on(proxy.stop(Duration::from_millis(200)));
    drop(postfixes);
    result
}

/// One delivery's figures.
#[derive(Clone, Copy, Debug)]
struct Sample {
    path: Path,
    /// Until the end-of-data reply (the hook's or Postfix a.test's 250).
    accepted: Duration,
    wake: Duration,
    direct: Duration,
}

async fn measure(
    settings: &Settings,
    paths: &[Path],
    dovecot: &Dovecot,
    proxy: &Proxy,
    hook: SocketAddr,
    submission: Option<SocketAddr>,
) -> BenchResult<()> {
    let mut wake = Idler::start("wake", proxy.plain).await?;
    let mut direct = Idler::start("direct", dovecot.imap_addr()).await?;
    let mut lmtp = Lmtp::connect(hook).await?;
    let mut smtp_client = match submission {
        Some(addr) => {
            let mut client = bounded("connect to Postfix", smtp::connect(addr)).await?;
            bounded("EHLO", smtp::expect(&mut client, "EHLO bench.a.test", 250)).await?;
            Some(client)
        }
        None => None,
    };

    let mut n = 0;
    let mut next = async |path: Path| {
        n += 1;
        deliver(
            path,
            n,
            &mut lmtp,
            smtp_client.as_mut(),
            &mut wake,
            &mut direct,
        )
        .await
    };
    // One delivery per path first, unmeasured: the first LMTP delivery creates indexes,
    // the first relay opens Postfix's connections.
    for &path in paths {
        next(path).await?;
    }
    let wakes_before = wakes_total(proxy);
    let cpu_before = cpu_time();
    let mut samples = Vec::new();
    for round in 0..settings.rounds {
        let mut order = paths.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        for path in order {
            samples.push(next(path).await?);
        }
    }
    let cpu = cpu_time().saturating_sub(cpu_before);
    let restarts = wakes_total(proxy).saturating_sub(wakes_before);

    println!(
        "idle_wake: submit → `* n EXISTS` at an IDLE on INBOX, {} rounds, {} deliveries ({})",
        settings.rounds,
        samples.len(),
        machine()
    );
    for &path in paths {
        let of = |f: fn(&Sample) -> Duration| -> Vec<f64> {
            let mut v: Vec<f64> = samples
                .iter()
                .filter(|s| s.path == path)
                .map(|s| f(s).as_secs_f64() * 1000.0)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let with = of(|s| s.wake);
        let without = of(|s| s.direct);
        let accepted = of(|s| s.accepted);
        println!("path {}: {}", path.name(), path.describe());
        println!("  variant                              p50 ms    p90 ms    max ms");
        for (name, values) in [
            ("wake   (client → proxy → Dovecot)", &with),
            ("direct (client → Dovecot, no wake)", &without),
            ("end-of-data reply (for reference)", &accepted),
        ] {
            println!(
                "  {name:<35} {:>8.2}  {:>8.2}  {:>8.2}",
                percentile(values, 50.0),
                percentile(values, 90.0),
                values.last().copied().unwrap_or(f64::NAN),
            );
        }
        let (p_with, p_without) = (percentile(&with, 50.0), percentile(&without, 50.0));
        println!(
            "  ratio p50 wake/direct: {:.4} (direct is {:.0}× slower); target p50 ≤ 15 ms with the wake vs ~509 ms without",
            p_with / p_without,
            p_without / p_with
        );
    }
    println!(
        "restarts (coi_proxy_imap_idle_wakes_total): {restarts} for {} deliveries; \
         unexpected lines at the wake client: {}",
        samples.len(),
        wake.unexpected.len()
    );
    for line in wake.unexpected.iter().take(5) {
        println!("  unexpected: {line:?}");
    }
    println!(
        "CPU of this process (proxy + bench clients, from schedstat): {:.3} ms per delivery",
        cpu.as_secs_f64() * 1000.0 / samples.len().max(1) as f64
    );
    Ok(())
}

/// Delivers message `n` to bob and waits until both idling clients report it.
async fn deliver(
    path: Path,
    n: u32,
    lmtp: &mut Lmtp,
    smtp_client: Option<&mut LineClient>,
    wake: &mut Idler,
    direct: &mut Idler,
) -> BenchResult<Sample> {
    let message = format!(
        "From: <alice@a.test>\r\nTo: <bob@b.test>\r\nSubject: bench {n}\r\n\
         Message-ID: <bench{n}.{}@a.test>\r\n\r\nmessage {n}\r\n",
        support::process::unique_token()
    );
    let started = Instant::now();
    let deadline = started + DELIVERY_DEADLINE;
    match path {
        Path::Lmtp => lmtp.deliver("bob@b.test", &message).await?,
        Path::Mail => {
            let client = smtp_client.ok_or("no submission session")?;
            bounded(
                "submission",
                smtp::send_in_session(client, "alice@a.test", &["bob@b.test"], &message),
            )
            .await?;
        }
    }
    let accepted = started.elapsed();
    let wake_at = wake.exists(n, deadline).await?;
    let direct_at = direct.exists(n, deadline).await?;
    Ok(Sample {
        path,
        accepted,
        wake: wake_at.saturating_duration_since(started),
        direct: direct_at.saturating_duration_since(started),
    })
}

/// A client of bob idling on INBOX; a task reads its lines and timestamps each EXISTS.
struct Idler {
    name: &'static str,
    events: mpsc::UnboundedReceiver<(String, Instant)>,
    /// Lines other than `* n EXISTS|RECENT` (the wake client must see none).
    unexpected: Vec<String>,
    _writer: OwnedWriteHalf,
}

impl Idler {
    async fn start(name: &'static str, addr: SocketAddr) -> BenchResult<Idler> {
        let idle = idle_on(name, addr, "bob", "secret-bob", "INBOX").await?;
        Ok(Idler {
            name,
            events: idle.events,
            unexpected: Vec::new(),
            _writer: idle.writer,
        })
    }

    /// When `* n EXISTS` (or a higher count) arrived.
    async fn exists(&mut self, n: u32, deadline: Instant) -> BenchResult<Instant> {
        loop {
            let Some((line, at)) = next_idle_line(&mut self.events, self.name, deadline).await?
            else {
                return Err(format!(
                    "{}: no `* {n} EXISTS` within {DELIVERY_DEADLINE:?}",
                    self.name
                )
                .into());
            };
            match exists_count(&line) {
                Some(count) if count >= n as usize => return Ok(at),
                Some(_) => {}
                None if is_recent(&line) => {}
                None => self.unexpected.push(line),
            }
        }
    }
}

/// An LMTP session with the delivery hook, after LHLO.
struct Lmtp(LineClient);

impl Lmtp {
    async fn connect(hook: SocketAddr) -> BenchResult<Lmtp> {
        let mut client = LineClient::connect(hook).await?;
        let greeting = client.read_line().await?;
        if !greeting.starts_with("220 ") {
            return Err(format!("LMTP greeting: {greeting}").into());
        }
        client.write_line("LHLO bench.b.test").await?;
        loop {
            let line = client.read_line().await?;
            if !line.starts_with("250") {
                return Err(format!("LHLO: {line}").into());
            }
            if line.starts_with("250 ") {
                return Ok(Lmtp(client));
            }
        }
    }

    async fn deliver(&mut self, to: &str, message: &str) -> BenchResult<()> {
        for (command, code) in [
            ("MAIL FROM:<alice@a.test>".to_owned(), "250"),
            (format!("RCPT TO:<{to}>"), "250"),
            ("DATA".to_owned(), "354"),
        ] {
            self.0.write_line(&command).await?;
            let reply = self.0.read_line().await?;
            if !reply.starts_with(code) {
                return Err(format!("{command}: {reply}").into());
            }
        }
        self.0.write_raw(&smtp::data_payload(message)).await?;
        let reply = self.0.read_line().await?;
        if !reply.starts_with("250 ") {
            return Err(format!("end of data: {reply}").into());
        }
        Ok(())
    }
}

fn wakes_total(proxy: &Proxy) -> u64 {
    proxy
        .metric("coi_proxy_imap_idle_wakes_total")
        .map_or(0, |v| v as u64)
}

/// CPU time of this process so far: the sum of every thread's on-CPU time (threads that
/// already exited are missing; the tokio workers of the bench live to the end).
fn cpu_time() -> Duration {
    Duration::from_nanos(thread_cpu().iter().map(|(_, ns)| ns).sum())
}

/// CPUs and backend versions, for the record.
fn machine() -> String {
    format!(
        "{} CPUs, Dovecot {}, Postfix {}",
        nproc(),
        dovecot_version(),
        postfix_version()
    )
}
