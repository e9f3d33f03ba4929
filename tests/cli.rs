//! The `coi-proxy` binary: `check` reports every configuration error with its key path and
//! exits 64; `run` serves, announces its listeners, and on SIGTERM stops accepting, lets
//! sessions finish during the grace period, then says BYE and exits 0.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::dovecot::Dovecot;
use support::io::{tagged_status, LineClient};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coi-proxy"))
}

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_the_minimal_config() {
    let out = bin()
        .args(["check", "--config", &repo("conf/minimal.yaml")])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn check_reports_every_error_with_its_path_and_exits_64() {
    let out = bin()
        .args([
            "check",
            "--config",
            &repo("conf/invalid/many_mistakes_at_once.yaml"),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected: Vec<String> =
        std::fs::read_to_string(repo("conf/invalid/many_mistakes_at_once.yaml"))
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: ").map(str::to_owned))
            .collect();
    assert!(expected.len() >= 5, "the fixture names its errors");
    for e in &expected {
        assert!(stderr.contains(e.as_str()), "missing {e:?} in:\n{stderr}");
    }
}

#[test]
fn check_names_unreadable_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "imap:\n  listeners:\n    - {address: \"127.0.0.1:0\", tls: implicit}\n  upstream: {address: \"127.0.0.1:1\"}\ntls:\n  certificate: /nonexistent/cert.pem\n  private_key: /nonexistent/key.pem\n",
    )
    .unwrap();
    let out = bin()
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls: ") && stderr.contains("/nonexistent/cert.pem"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_a_config_error() {
    let out = bin()
        .args(["check", "--config", "/nonexistent/coi-proxy.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

/// Kills the child by pid if the test fails half-way.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_says_bye_and_exits_zero() {
    let dovecot = Dovecot::start().expect("dovecot");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "imap:\n  listeners:\n    - {{name: imap, address: \"127.0.0.1:0\", tls: none}}\n  upstream: {{address: \"{}\"}}\n  insecure_allow_plaintext_auth: true\nadmin:\n  address: \"127.0.0.1:0\"\nshutdown:\n  grace: 3s\n",
            dovecot.imap_addr()
        ),
    )
    .unwrap();
    let mut child = Child(
        bin()
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut imap: Option<SocketAddr> = None;
    let mut admin: Option<SocketAddr> = None;
    while imap.is_none() || admin.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("listening lines");
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["listening", "imap", _, addr] => imap = addr.parse().ok(),
            ["listening", "admin", addr] => admin = addr.parse().ok(),
            _ => {}
        }
    }
    let (imap, admin) = (imap.unwrap(), admin.unwrap());
    let mut session = LineClient::connect(imap).await.unwrap();
    session.read_line().await.unwrap();
    assert_eq!(
        tagged_status(&session.imap("a", "LOGIN alice secret-alice").await.unwrap()),
        "OK"
    );
    assert!(http_get(admin, "/readyz").await.starts_with("HTTP/1.1 200"));

    let sent_at = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // Draining: the existing session still works; new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(imap).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the listener still accepts after SIGTERM"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        tagged_status(&session.imap("b", "NOOP").await.unwrap()),
        "OK",
        "sessions go on during the grace period"
    );
    // After the grace period: BYE, then the process exits cleanly.
    let bye = session.read_line().await.expect("BYE before close");
    assert_eq!(bye, "* BYE [UNAVAILABLE] Server shutting down");
    assert!(
        sent_at.elapsed() >= Duration::from_secs(3),
        "not before the grace period"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// Credentials never reach the logs, even at `trace` level: LOGIN passwords, SASL PLAIN
/// responses (base64 and decoded), failed attempts included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_appear_in_the_logs() {
    use base64::Engine as _;
    let dovecot = Dovecot::start().expect("dovecot");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "imap:\n  listeners:\n    - {{name: imap, address: \"127.0.0.1:0\", tls: none}}\n  upstream: {{address: \"{}\"}}\n  insecure_allow_plaintext_auth: true\n  timeouts: {{auth_failure_delay: 1ms}}\nadmin:\n  address: off\nlog:\n  level: trace\n  format: json\nshutdown:\n  grace: 1s\n",
            dovecot.imap_addr()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("stderr.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = Child(
        bin()
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("listening imap"))
    })
    .await
    .unwrap()
    .expect("listening line");
    let imap: SocketAddr = line.rsplit(' ').next().unwrap().parse().unwrap();
    let plain = base64::engine::general_purpose::STANDARD.encode("\0bob\0secret-bob");
    let mut c = LineClient::connect(imap).await.unwrap();
    c.read_line().await.unwrap();
    assert_eq!(
        tagged_status(&c.imap("a", "LOGIN alice wrong-secret-alice").await.unwrap()),
        "NO"
    );
    assert_eq!(
        tagged_status(&c.imap("b", "LOGIN alice secret-alice").await.unwrap()),
        "OK"
    );
    c.imap("c", "LOGOUT").await.unwrap();
    let mut c = LineClient::connect(imap).await.unwrap();
    c.read_line().await.unwrap();
    assert_eq!(
        tagged_status(
            &c.imap("d", &format!("AUTHENTICATE PLAIN {plain}"))
                .await
                .unwrap()
        ),
        "OK"
    );
    c.imap("e", "LOGOUT").await.unwrap();
    assert!(Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("authenticated"),
        "the log is being written at all:\n{log}"
    );
    for secret in ["secret-alice", "secret-bob", &plain] {
        assert!(!log.contains(secret), "{secret:?} appears in the log");
    }
}
