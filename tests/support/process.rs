//! Process and port helpers shared by the Dovecot and Postfix test instances.

#![allow(dead_code)]

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A process's title (argv as rewritten by Dovecot); `None` when it is gone or a zombie.
pub fn process_title(pid: u32) -> Option<String> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let title = cmdline.split(|b| *b == 0).next()?;
    let title = String::from_utf8_lossy(title).trim_end().to_owned();
    (!title.is_empty()).then_some(title)
}

/// Sends `SIGsig` to `pids` with the shell's builtin `kill` (std has no SIGTERM, the
/// crate forbids unsafe, and procps' `kill` is missing from slim images). Processes that
/// are already gone are ignored.
pub fn send_signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{sig} \"$@\" 2>/dev/null"))
        .arg("sh")
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Two distinct free loopback ports (both held until both are known).
pub fn two_free_ports() -> io::Result<(u16, u16)> {
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// A token unique among instances on this machine (pid, time, counter).
pub fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// How often an instance is started on fresh ports when another process took one of
/// them between choosing and binding.
const PORT_ATTEMPTS: usize = 4;

/// Runs `start` with two free loopback ports, again with fresh ones (up to
/// `PORT_ATTEMPTS` times) while it fails with `AddrInUse`.
pub fn on_free_ports<T>(mut start: impl FnMut(u16, u16) -> io::Result<T>) -> io::Result<T> {
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let (a, b) = two_free_ports()?;
        match start(a, b) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
            done => return done,
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no start attempt was made")))
}

/// Connects and reads the greeting line, then sends `goodbye` if given (so the server
/// does not log a lost connection). `None` while nothing listens yet.
pub fn probe_greeting(
    addr: SocketAddr,
    deadline: Instant,
    goodbye: Option<&[u8]>,
) -> io::Result<Option<String>> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let connect_timeout = remaining.min(Duration::from_millis(500));
    if connect_timeout.is_zero() {
        return Ok(None);
    }
    let stream = match TcpStream::connect_timeout(&addr, connect_timeout) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let read_timeout = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    stream.set_read_timeout(Some(read_timeout))?;
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    match reader.read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => {
            if let Some(goodbye) = goodbye {
                let _ = (&stream).write_all(goodbye);
            }
            Ok(Some(line.trim_end().to_owned()))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::WouldBlock
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// An error when the process we started (`what`, for the message) has exited; the
/// child is then forgotten.
pub fn check_alive(child: &mut Option<Child>, what: &str) -> io::Result<()> {
    let Some(running) = child.as_mut() else {
        return Err(io::Error::other(format!("{what} is not running")));
    };
    match running.try_wait()? {
        None => Ok(()),
        Some(status) => {
            *child = None;
            Err(io::Error::other(format!("{what} exited early ({status})")))
        }
    }
}
