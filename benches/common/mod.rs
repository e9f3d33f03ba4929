//! What the benches share: the run's exit code, settings from the environment, the
//! header lines (date, machine, versions), statistics over rounds, on-CPU time from
//! `/proc`, the processes of a private Dovecot, the `splice` reference relay, and the
//! base64-looking message bodies. Each bench says `mod common;` and uses what it needs.

#![allow(dead_code)]

use std::error::Error;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

pub type BenchResult<T> = Result<T, Box<dyn Error>>;

/// Runs the bench `name`: success, or its error on stderr and a failing exit code.
pub fn main_of(name: &str, run: fn() -> BenchResult<()>) -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name} bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Settings

/// Whether the environment variable `name` is set to something other than `0`.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether this is a smoke run: `BENCH_QUICK=1`, the argument `--quick`, or no `--bench`
/// argument. cargo passes `--bench` to harness-less benches under `cargo bench`; without
/// it (`cargo test --benches`, running the binary by hand) only the smoke run makes sense.
pub fn quick_run() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let under_cargo_bench = args.iter().any(|a| a == "--bench");
    env_flag("BENCH_QUICK") || args.iter().any(|a| a == "--quick") || !under_cargo_bench
}

/// A non-negative integer from the environment (`_` allowed as a digit separator).
pub fn env_usize(name: &str, default: usize) -> BenchResult<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a non-negative integer").into()),
        _ => Ok(default),
    }
}

/// A comma-separated list of non-negative integers from the environment.
pub fn env_list(name: &str, default: &[usize]) -> BenchResult<Vec<usize>> {
    match std::env::var(name) {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| {
                s.trim()
                    .replace('_', "")
                    .parse::<usize>()
                    .map_err(|_| format!("{name}: {s:?} is not a non-negative integer").into())
            })
            .collect(),
        _ => Ok(default.to_vec()),
    }
}

/// A comma-separated list of names from the environment (`BENCH_VARIANTS=direct,proxy`),
/// each the name of a `what` of `all` as `name_of` spells it, duplicates dropped; `None`
/// when unset.
pub fn env_names<T: Copy + PartialEq>(
    name: &str,
    what: &str,
    all: &[T],
    name_of: fn(T) -> &'static str,
) -> BenchResult<Option<Vec<T>>> {
    let list = match std::env::var(name) {
        Ok(list) if !list.trim().is_empty() => list,
        _ => return Ok(None),
    };
    let mut chosen = Vec::new();
    for word in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let item = all
            .iter()
            .copied()
            .find(|v| name_of(*v) == word)
            .ok_or_else(|| format!("{name}: unknown {what} {word:?}"))?;
        if !chosen.contains(&item) {
            chosen.push(item);
        }
    }
    Ok(Some(chosen))
}

/// The variants to measure: `BENCH_VARIANTS` (names of `all` as `name_of` spells them),
/// `default` when unset. Every ratio is against direct, so the `required` ones (direct
/// and proxy) must be among them.
pub fn env_variants<T: Copy + PartialEq>(
    all: &[T],
    name_of: fn(T) -> &'static str,
    required: &[T],
    default: &[T],
) -> BenchResult<Vec<T>> {
    let Some(chosen) = env_names("BENCH_VARIANTS", "variant", all, name_of)? else {
        return Ok(default.to_vec());
    };
    if required.iter().any(|v| !chosen.contains(v)) {
        let names: Vec<&str> = required.iter().map(|v| name_of(*v)).collect();
        return Err(format!("BENCH_VARIANTS must include {}", names.join(" and ")).into());
    }
    Ok(chosen)
}

/// The order of the variants in round `r`: `a` and `b` alternate which goes first (`a`
/// in even rounds); every other variant of `variants` moves through the positions (last,
/// first, middle, ... as r/2 grows: with three variants six rounds cover all six orders).
pub fn round_order<T: Copy + PartialEq>(r: usize, a: T, b: T, variants: &[T]) -> Vec<T> {
    let mut order = if r.is_multiple_of(2) {
        vec![a, b]
    } else {
        vec![b, a]
    };
    for (k, v) in variants.iter().filter(|v| **v != a && **v != b).enumerate() {
        let slots = order.len() + 1;
        let position = (r / 2 + k + slots - 1) % slots;
        order.insert(position, *v);
    }
    order
}

// ---------------------------------------------------------------------------------------
// Variants

/// What the relay benches compare: the client straight to the server, through the proxy,
/// or through a bare byte copy (the cost of the extra hop alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// client → server
    Direct,
    /// client → coi-proxy → server
    Proxy,
    /// client → tokio `copy_bidirectional` → server
    Splice,
    /// Diagnostic: the byte copy on a current-thread tokio runtime of its own.
    SpliceCt,
    /// Diagnostic: the byte copy with two blocking std threads per connection.
    Threads,
}

/// How many variants there are (for arrays indexed by [`Variant::index`]).
pub const ALL_VARIANTS: usize = 5;

/// Every variant, in [`Variant::index`] order.
pub const ALL: [Variant; ALL_VARIANTS] = [
    Variant::Direct,
    Variant::Proxy,
    Variant::Splice,
    Variant::SpliceCt,
    Variant::Threads,
];

/// The variants measured by default.
pub const MAIN_VARIANTS: [Variant; 3] = [Variant::Direct, Variant::Proxy, Variant::Splice];

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Proxy => "proxy",
            Variant::Splice => "splice",
            Variant::SpliceCt => "splice-ct",
            Variant::Threads => "threads",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

// ---------------------------------------------------------------------------------------
// Header

/// The trimmed standard output of a successful command; `None` if it failed or said
/// nothing.
pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Now, in UTC.
pub fn date() -> String {
    command_output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .unwrap_or_else(|| "unknown date".into())
}

/// The number of CPUs this process may use.
pub fn nproc() -> String {
    std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `<OS>, kernel <release>, nproc <n>, <CPU model>`.
pub fn machine() -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let os = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|s| s.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "unknown OS".into());
    format!("{os}, kernel {kernel}, nproc {}, {cpu}", nproc())
}

/// `dovecot --version`, or `unknown`.
pub fn dovecot_version() -> String {
    command_output("/usr/sbin/dovecot", &["--version"])
        .or_else(|| command_output("dovecot", &["--version"]))
        .unwrap_or_else(|| "unknown".into())
}

/// Postfix's `mail_version`, or `unknown`.
pub fn postfix_version() -> String {
    command_output("/usr/sbin/postconf", &["-h", "mail_version"])
        .or_else(|| command_output("postconf", &["-h", "mail_version"]))
        .unwrap_or_else(|| "unknown".into())
}

/// The first lines of a report: the title (with the smoke-run note), the date, the
/// machine, and the versions: `backends` (e.g. `Dovecot 2.3.21; `), rustc, the profile.
pub fn header_start(title: &str, quick: bool, backends: &str) -> String {
    format!(
        "{title}{}\ndate     {}\nmachine  {}\nversions {backends}{}; {}\n",
        quick_note(quick),
        date(),
        machine(),
        rustc_version(),
        profile()
    )
}

/// The report line that says no new round started after `total_cap`, if so.
pub fn stopped_early(rounds_done: usize, rounds: usize, total_cap: Duration) -> Option<String> {
    (rounds_done < rounds).then(|| {
        format!(
            "WARNING: stopped after {rounds_done} of {rounds} rounds (BENCH_MAX_SECS = {} s)",
            total_cap.as_secs()
        )
    })
}

/// `round orders: a>b>c, b>a>c, ...`: the order of each round done, for the report.
pub fn round_orders<T: Copy>(
    rounds_done: usize,
    order: impl Fn(usize) -> Vec<T>,
    name_of: fn(T) -> &'static str,
) -> String {
    let orders: Vec<String> = (0..rounds_done)
        .map(|r| {
            order(r)
                .into_iter()
                .map(name_of)
                .collect::<Vec<_>>()
                .join(">")
        })
        .collect();
    format!("round orders: {}", orders.join(", "))
}

/// `rustc --version`.
pub fn rustc_version() -> String {
    command_output("rustc", &["--version"]).unwrap_or_else(|| "rustc unknown".into())
}

/// Whether the figures mean anything: the build profile.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug build: figures NOT meaningful"
    } else {
        "optimized (bench profile)"
    }
}

/// The title's note for a smoke run.
pub fn quick_note(quick: bool) -> &'static str {
    if quick {
        " -- QUICK smoke run, figures not meaningful"
    } else {
        ""
    }
}

// ---------------------------------------------------------------------------------------
// Statistics

/// A value [`percentile`] can rank.
pub trait Value: Copy {
    fn to_f64(self) -> f64;
}

impl Value for u64 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Value for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

/// Nearest-rank percentile `p` (in percent) of sorted values; NaN for none.
pub fn percentile<T: Value>(sorted: &[T], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].to_f64()
}

/// Median, min and max of per-round values.
#[derive(Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Over the finite values; NaN everywhere for none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }

    /// `median [min..max]` with `decimals` decimals.
    pub fn show(self, decimals: usize) -> String {
        format!(
            "{:.d$} [{:.d$}..{:.d$}]",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// Per-round ratios a/b (both measured in the same round), as median [min..max].
pub fn paired_ratio(a: &[f64], b: &[f64]) -> Spread {
    Spread::of(a.iter().zip(b).map(|(x, y)| x / y))
}

/// Per-round differences a−b, as median [min..max].
pub fn paired_difference(a: &[f64], b: &[f64]) -> Spread {
    Spread::of(a.iter().zip(b).map(|(x, y)| x - y))
}

/// A target met or missed.
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "MISSED"
    }
}

// ---------------------------------------------------------------------------------------
// CPU time

/// On-CPU ns from a `schedstat` file (its first field).
pub fn schedstat_ns(path: &Path) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Every thread of this process so far: its name (`comm`) and its on-CPU ns from
/// `/proc/self/task/*/schedstat`. Threads that already exited are missing.
pub fn thread_cpu() -> Vec<(String, u64)> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .map(|task| {
            let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let ns = schedstat_ns(&task.path().join("schedstat")).unwrap_or(0);
            (comm, ns)
        })
        .collect()
}

/// The processes of a private test Dovecot: their titles are
/// `dovecot-coi-test-<imap port>/<service>` (see tests/support/dovecot.rs).
pub fn dovecot_pids(imap_port: u16) -> Vec<u32> {
    let prefix = format!("dovecot-coi-test-{imap_port}/");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.starts_with(prefix.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Blocking clients

/// A blocking connection to `addr` for a load generator: TCP_NODELAY, every read and
/// write bounded by `timeout` (a stuck server fails the bench instead of hanging it).
/// Returns the stream and a clone for writing.
pub fn connect_blocking(
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<(std::net::TcpStream, std::net::TcpStream)> {
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let writer = stream.try_clone()?;
    Ok((stream, writer))
}

// ---------------------------------------------------------------------------------------
// The `splice` reference

/// Buffer sizes of the `splice` reference relay (the proxy reads 64 KiB at a time too).
pub const SPLICE_BUF: usize = 64 * 1024;

/// The `splice` reference: accept, connect upstream, copy bytes both ways, no protocol.
/// Runs on the current tokio runtime.
pub async fn start_splice(upstream: SocketAddr) -> io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        // Ends with the runtime; an accept error ends it early (the bench then fails on
        // connect instead of spinning here).
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(splice(client, upstream));
        }
    });
    Ok(addr)
}

/// One `splice` connection: connects to `upstream` and copies bytes both ways until
/// either side ends.
pub async fn splice(mut client: tokio::net::TcpStream, upstream: SocketAddr) {
    let _ = client.set_nodelay(true);
    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, SPLICE_BUF, SPLICE_BUF)
            .await;
}

// ---------------------------------------------------------------------------------------
// Messages

/// Appends base64-looking lines of 76 characters and CRLF to `out` until it is `end`
/// bytes long (the last line shorter), from a fixed seed: the same bytes every run, no
/// line starting with a dot.
pub fn base64_lines(out: &mut Vec<u8>, end: usize) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15; // fixed seed (xorshift64)
    while out.len() < end {
        let remaining = end - out.len();
        // Full lines while at least 3 bytes would be left for a last short line.
        let chars = if remaining >= 81 { 76 } else { remaining - 2 };
        for _ in 0..chars {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.push(ALPHABET[(state >> 58) as usize]);
        }
        out.extend_from_slice(b"\r\n");
    }
}

// ---------------------------------------------------------------------------------------
// Network steps and IMAP IDLE clients

/// How long one network step of a bench (a connect, a reply) may take.
pub const STEP: Duration = Duration::from_secs(10);

/// `fut` under the [`STEP`] timeout.
pub async fn bounded<T, E: Into<Box<dyn Error>>>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> BenchResult<T> {
    match tokio::time::timeout(STEP, fut).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(format!("{what}: no answer within {STEP:?}").into()),
    }
}

/// `n` of a `* n EXISTS` line.
pub fn exists_count(line: &str) -> Option<usize> {
    line.strip_prefix("* ")?
        .strip_suffix(" EXISTS")?
        .parse()
        .ok()
}

/// Whether `line` is `* n RECENT`.
pub fn is_recent(line: &str) -> bool {
    line.strip_prefix("* ")
        .and_then(|l| l.strip_suffix(" RECENT"))
        .is_some_and(|n| n.parse::<usize>().is_ok())
}

/// The next line an IDLE client (`name`, [`IdleStream::events`]) read, and when it
/// arrived; `None` if `deadline` passed first. A closed connection is an error.
pub async fn next_idle_line(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<(String, std::time::Instant)>,
    name: &str,
    deadline: std::time::Instant,
) -> BenchResult<Option<(String, std::time::Instant)>> {
    let deadline = tokio::time::Instant::from_std(deadline);
    match tokio::time::timeout_at(deadline, events.recv()).await {
        Ok(Some(event)) => Ok(Some(event)),
        Ok(None) => Err(format!("{name}: connection closed").into()),
        Err(_) => Ok(None),
    }
}

/// An IMAP session in IDLE: a task reads its lines and timestamps each on arrival.
pub struct IdleStream {
    pub events: tokio::sync::mpsc::UnboundedReceiver<(String, std::time::Instant)>,
    /// Messages in the mailbox when it was selected.
    pub exists: usize,
    /// Kept so that the session stays open.
    pub writer: tokio::net::tcp::OwnedWriteHalf,
}

/// Logs in to `addr` as `user`, selects `mailbox` and starts IDLE; `name` names the
/// client in errors.
pub async fn idle_on(
    name: &str,
    addr: SocketAddr,
    user: &str,
    password: &str,
    mailbox: &str,
) -> BenchResult<IdleStream> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = bounded("connect", tokio::net::TcpStream::connect(addr)).await?;
    stream.set_nodelay(true)?;
    let (read, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    bounded("greeting", reader.read_line(&mut line)).await?;
    let mut exists = 0;
    for (tag, command) in [
        ("l", format!("LOGIN {user} {password}")),
        ("s", format!("SELECT {mailbox}")),
    ] {
        writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        let mut lines = Vec::new();
        let status = loop {
            line.clear();
            if bounded("reply", reader.read_line(&mut line)).await? == 0 {
                return Err(format!("{name}: connection closed after {command}").into());
            }
            let l = line.trim_end().to_owned();
            if let Some(n) = exists_count(&l) {
                exists = n;
            }
            if let Some(status) = l.strip_prefix(&format!("{tag} ")) {
                break status.split(' ').next().unwrap_or("").to_owned();
            }
            lines.push(l);
        };
        if status != "OK" {
            return Err(format!("{name}: {command}: {status} {lines:?}").into());
        }
    }
    writer.write_all(b"i IDLE\r\n").await?;
    line.clear();
    bounded("IDLE", reader.read_line(&mut line)).await?;
    if !line.starts_with("+ ") {
        return Err(format!("{name}: IDLE: {line:?}").into());
    }
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Ends when the connection or the bench ends.
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let at = std::time::Instant::now();
                    if tx.send((line.trim_end().to_owned(), at)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(IdleStream {
        events,
        exists,
        writer,
    })
}
