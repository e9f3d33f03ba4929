//! A private, real Dovecot for one test, on loopback, in a temporary directory.
//!
//! # Dovecot settings an operator needs for coi-proxy
//!
//! The README copies this block. Everything else in the generated test configuration
//! (paths, ports, test users) is specific to the tests.
//!
//! ```text
//! # METADATA (RFC 5464): COI settings and tokens live in per-user attributes.
//! mail_attribute_dict = file:%h/dovecot-attributes
//! protocol imap {
//!   imap_metadata = yes
//! }
//!
//! # A master user for the proxy. It logs in as a user with SASL PLAIN
//! # (authzid = user, authcid = master user) or with LOGIN "user*proxy-master".
//! auth_master_user_separator = *
//! passdb {
//!   driver = passwd-file
//!   args = /etc/dovecot/master-users   # proxy-master:{SHA512-CRYPT}...
//!   master = yes
//!   # Then look the target user up in the next passdb (it must exist there).
//!   result_success = continue
//! }
//! passdb {
//!   # ... the normal user passdb, unchanged ...
//! }
//!
//! # Trust the proxy's address, so Dovecot accepts the client's real IP from it
//! # (IMAP ID x-originating-ip). Otherwise every login comes from the proxy's IP and
//! # Dovecot's per-IP auth penalty (2, 4, 8, 15 s after failed logins) slows down all
//! # users as soon as one of them mistypes a password.
//! login_trusted_networks = 127.0.0.1/32
//!
//! # IMAP (and LMTP for the delivery hook) reachable by the proxy, e.g. on loopback.
//! # Connections from login_trusted_networks (or from the listener's own address)
//! # count as secured, so plaintext auth works there even with
//! # disable_plaintext_auth = yes.
//! service imap-login {
//!   inet_listener imap {
//!     address = 127.0.0.1
//!     port = 10143
//!   }
//! }
//! service lmtp {
//!   inet_listener lmtp {
//!     address = 127.0.0.1
//!     port = 10024
//!   }
//! }
//! ```
//!
//! # How the test instance is built
//!
//! Everything lives under a fresh directory `/tmp/coi-dovecot-XXXX` (configuration,
//! `base_dir`, `state_dir`, log, passwd files, mail), and `dovecot -F -c <conf>` runs as
//! a child of the test process. IMAP (no TLS), LMTP and the auth service listen on free
//! loopback ports. The auth listener ([`Dovecot::auth_addr`]) speaks Dovecot's
//! auth-client protocol, which Postfix uses for SMTP AUTH (`smtpd_sasl_type = dovecot`,
//! `smtpd_sasl_path = inet:127.0.0.1:<port>`, see [`super::postfix`]); a unix socket
//! would do in production, but the test Postfix cannot reach one here without sharing
//! paths and owners with this instance.
//! Mail is maildir with `LAYOUT=fs`, so the hierarchy separator is `/`. The greeting
//! carries a per-instance token, which the readiness probe checks.
//!
//! [`Dovecot::start_with`] can add an implicit-TLS IMAP listener (`imaps`, Dovecot doing
//! TLS itself, as an operator's Dovecot does today) on one more free loopback port, with
//! a fresh self-signed certificate for `localhost` and `127.0.0.1` in the instance
//! directory ([`Dovecot::imaps_pki`]). That instance has `ssl = yes`, so its plaintext
//! listener offers STARTTLS too; plaintext `LOGIN` stays allowed on it.
//!
//! Unlike production, failed logins cost nothing (`auth_failure_delay = 0`, and the
//! per-IP auth penalty is off: anvil's `anvil-auth-penalty` socket has mode 0), because
//! every test client comes from 127.0.0.1. A failure is still answered after up to
//! 0.5 s (Dovecot's failure queue timer).
//!
//! Running as root (containers, CI): Dovecot refuses to run mail processes as uid 0
//! (and below `first_valid_uid`), so mail is owned by the system user `mail` (uid 8 on
//! Debian, looked up in /etc/passwd), with `first_valid_uid = last_valid_uid = 8`, and
//! the user homes are chowned to it. The `dovecot`/`dovenull` users from the package run
//! auth and login as usual, so the temporary directory is made world-traversable (0755;
//! `tempfile` creates it 0700) and it is placed in /tmp rather than `$TMPDIR`, because
//! every path component must be traversable by those users and unix socket paths under
//! `base_dir` must stay short (108 bytes).
//!
//! Running as an ordinary user: Dovecot's rootless mode. All internal, login and mail
//! users are the current user and the login/anvil chroots are off.
//!
//! Stopping: SIGTERM to the master and all its processes (a few milliseconds), SIGKILL
//! after [`STOP_GRACE`]. Processes that outlive the master are reparented to init,
//! which reaps them; until it does, `ps` may briefly list them as `<defunct>`.
//!
//! Debugging: with `COI_TEST_KEEP_DOVECOT=1` (and `--nocapture`) the directories are
//! kept and their paths printed.
//!
//! Limits: if the test process is killed outright (SIGKILL, abort), `Drop` does not run
//! and the instance keeps running; `ps` shows it as `dovecot-coi-test-<imap port>/...`.
//! Ctrl-C reaches it with the terminal's process group and it shuts down.

#![allow(dead_code)]

use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::pki::{self, TestPki};
use super::process::{
    check_alive, on_free_ports, probe_greeting, process_title, send_signal, unique_token,
};

/// A test mail user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    pub name: &'static str,
    pub password: &'static str,
}

/// The ordinary users every instance has.
pub const USERS: &[User] = &[
    User {
        name: "alice",
        password: "secret-alice",
    },
    User {
        name: "bob",
        password: "secret-bob",
    },
    User {
        name: "carol",
        password: "secret-carol",
    },
];

/// The master user (second passdb with `master = yes`).
/// The timeouts of [`Dovecot::writer_config`].
pub const WRITER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const WRITER_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

pub const MASTER_USER: &str = "proxy-master";
/// The master user's password.
pub const MASTER_PASSWORD: &str = "master-secret";
/// `auth_master_user_separator`: `LOGIN alice*proxy-master master-secret`.
pub const MASTER_SEPARATOR: char = '*';

/// How long [`Dovecot::start`] waits for the IMAP, LMTP and auth greetings.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop (SIGTERM) may take before SIGKILL; it usually takes a few
/// milliseconds.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Poll interval while waiting for the process or a port.
const POLL: Duration = Duration::from_millis(10);
/// Set this environment variable to keep the instance directories (configuration, log,
/// mail) after the tests for debugging; their paths are printed to stderr.
pub const KEEP_ENV: &str = "COI_TEST_KEEP_DOVECOT";

/// What [`Dovecot::start_with`] adds to the plain instance of [`Dovecot::start`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StartOptions {
    /// An implicit-TLS IMAP listener ([`Dovecot::imaps_addr`]) with a self-signed
    /// certificate ([`Dovecot::imaps_pki`]); `ssl = yes` for the whole instance.
    pub imaps: bool,
}

/// A running private Dovecot. Dropping it stops the processes (SIGTERM, then SIGKILL
/// after a bounded wait) and removes the directory (unless [`KEEP_ENV`] is set).
#[derive(Debug)]
pub struct Dovecot {
    child: Option<Child>,
    imap_addr: SocketAddr,
    lmtp_addr: SocketAddr,
    auth_addr: SocketAddr,
    /// The implicit-TLS IMAP listener and its certificate, if started with one.
    imaps: Option<(SocketAddr, TestPki)>,
    /// Unique text in the greeting, so readiness probes cannot mistake another
    /// instance that grabbed our port for this one.
    greeting: String,
    /// Declared last: the directory is removed after the process is gone.
    dir: TempDir,
}

impl Dovecot {
    /// Starts a fresh instance and waits (at most [`READY_TIMEOUT`]) until its IMAP, LMTP
    /// and auth listeners greet. Blocking; it typically takes a few tens of milliseconds.
    ///
    /// Errors include the Dovecot log when the process exits early or never greets.
    pub fn start() -> io::Result<Dovecot> {
        Dovecot::start_with(StartOptions::default())
    }

    /// As [`Dovecot::start`], with the additions of `options`.
    pub fn start_with(options: StartOptions) -> io::Result<Dovecot> {
        let binary = dovecot_binary()?;
        on_free_ports(|imap_port, lmtp_port| {
            // More ports, chosen afresh on every attempt: if another process takes one
            // before Dovecot binds, the start fails with AddrInUse and the loop retries
            // with new ports.
            let auth_port = free_port_other_than(&[imap_port, lmtp_port])?;
            let imaps_port = if options.imaps {
                Some(free_port_other_than(&[imap_port, lmtp_port, auth_port])?)
            } else {
                None
            };
            let ports = Ports {
                imap: imap_port,
                lmtp: lmtp_port,
                auth: auth_port,
                imaps: imaps_port,
            };
            let mut dovecot = Dovecot::prepare(ports)?;
            dovecot.spawn(&binary)?;
            Ok(dovecot)
        })
    }

    /// Stops the instance gracefully (SIGTERM: clients get `* BYE`, listeners close),
    /// falling back to SIGKILL. The directory, mail and log stay until drop, so the same
    /// instance can be [`restart`](Self::restart)ed. Does nothing when already stopped.
    pub fn stop(&mut self) -> io::Result<()> {
        self.terminate(true)
    }

    /// Kills the instance abruptly (SIGKILL to the master and then to all its child
    /// processes): open connections are cut without `* BYE`, like a crashed backend.
    pub fn kill(&mut self) -> io::Result<()> {
        self.terminate(false)
    }

    /// Starts a stopped instance again with the same configuration, ports and mail.
    pub fn restart(&mut self) -> io::Result<()> {
        self.terminate(true)?;
        let binary = dovecot_binary()?;
        self.spawn(&binary)
    }

    /// Whether the master process is (still) running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The plaintext IMAP listener (127.0.0.1).
    pub fn imap_addr(&self) -> SocketAddr {
        self.imap_addr
    }

    /// The implicit-TLS IMAP listener (127.0.0.1), if started with
    /// [`StartOptions::imaps`].
    pub fn imaps_addr(&self) -> Option<SocketAddr> {
        self.imaps.as_ref().map(|(addr, _)| *addr)
    }

    /// The certificate of the `imaps` listener (self-signed for `localhost` and
    /// `127.0.0.1`: `ca_path` is the certificate itself), if started with one.
    pub fn imaps_pki(&self) -> Option<&TestPki> {
        self.imaps.as_ref().map(|(_, pki)| pki)
    }

    /// A mailbox writer's configuration for this Dovecot: its master user, and timeouts
    /// for loopback, which answers in milliseconds ([`WRITER_CONNECT_TIMEOUT`],
    /// [`WRITER_REPLY_TIMEOUT`]).
    pub fn writer_config(&self) -> coi_proxy::proxy::writer::WriterConfig {
        let mut config = coi_proxy::proxy::writer::WriterConfig::new(
            self.imap_addr.ip().to_string(),
            self.imap_addr.port(),
            MASTER_USER,
            coi_proxy::proxy::writer::MasterPassword::new(MASTER_PASSWORD),
        );
        config.connect_timeout = WRITER_CONNECT_TIMEOUT;
        config.reply_timeout = WRITER_REPLY_TIMEOUT;
        config
    }

    /// The LMTP listener (127.0.0.1). Recipients may carry any domain: LMTP looks users
    /// up with `auth_username_format = %Ln`, so `alice@example.org` is `alice`.
    pub fn lmtp_addr(&self) -> SocketAddr {
        self.lmtp_addr
    }

    /// The auth service's inet listener (127.0.0.1), for Postfix's SMTP AUTH
    /// (`smtpd_sasl_type = dovecot`, `smtpd_sasl_path = inet:127.0.0.1:<port>`). It
    /// speaks Dovecot's auth-client protocol and knows the same users and passwords as
    /// IMAP, master user included.
    pub fn auth_addr(&self) -> SocketAddr {
        self.auth_addr
    }

    /// The instance's private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The generated `dovecot.conf`.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("dovecot.conf")
    }

    /// Dovecot's log (`log_path` and `info_log_path`) followed by whatever the process
    /// wrote to stdout/stderr (configuration errors before logging is set up).
    pub fn log_contents(&self) -> String {
        let mut text = fs::read_to_string(self.dir().join("dovecot.log")).unwrap_or_default();
        let stderr = fs::read_to_string(self.dir().join("dovecot.stderr")).unwrap_or_default();
        if !stderr.trim().is_empty() {
            text.push_str("--- dovecot stdout/stderr ---\n");
            text.push_str(&stderr);
        }
        text
    }

    /// The ordinary users (`alice`, `bob`, `carol`).
    pub fn users(&self) -> &'static [User] {
        USERS
    }

    /// The password of an ordinary user.
    pub fn password_of(&self, user: &str) -> Option<&'static str> {
        USERS.iter().find(|u| u.name == user).map(|u| u.password)
    }

    /// The master user's name.
    pub fn master_user(&self) -> &'static str {
        MASTER_USER
    }

    /// The master user's password.
    pub fn master_password(&self) -> &'static str {
        MASTER_PASSWORD
    }

    /// A user's home (holds `dovecot-attributes`, the METADATA store).
    pub fn home_of(&self, user: &str) -> PathBuf {
        self.dir().join("mail").join(user)
    }

    /// A user's maildir root (INBOX's `cur/new/tmp`; folders are subdirectories,
    /// `COI/Chats` is `<maildir>/COI/Chats`).
    pub fn mail_dir_of(&self, user: &str) -> PathBuf {
        self.home_of(user).join("Maildir")
    }

    /// Creates the directory tree, passwd files and configuration.
    fn prepare(ports: Ports) -> io::Result<Dovecot> {
        let dir = tempfile::Builder::new()
            .prefix("coi-dovecot-")
            .tempdir_in("/tmp")?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let owner = Owner::detect()?;
        let root = dir.path();

        for sub in ["run", "state"] {
            fs::create_dir(root.join(sub))?;
        }
        let mail = root.join("mail");
        fs::create_dir(&mail)?;
        std::os::unix::fs::chown(&mail, Some(owner.mail_uid), Some(owner.mail_gid))?;
        for user in USERS {
            let home = mail.join(user.name);
            fs::create_dir(&home)?;
            std::os::unix::fs::chown(&home, Some(owner.mail_uid), Some(owner.mail_gid))?;
        }

        // The auth process reads these as the internal user. The passwords are the
        // well-known test constants of this file, so world-readable is fine.
        let mut users = String::new();
        for user in USERS {
            users.push_str(&format!(
                "{name}:{{PLAIN}}{password}:{uid}:{gid}::{home}::\n",
                name = user.name,
                password = user.password,
                uid = owner.mail_uid,
                gid = owner.mail_gid,
                home = mail.join(user.name).display(),
            ));
        }
        write_file(&root.join("users"), &users, 0o644)?;
        write_file(
            &root.join("master-users"),
            &format!("{MASTER_USER}:{{PLAIN}}{MASTER_PASSWORD}\n"),
            0o644,
        )?;

        let greeting = format!("coi-test-dovecot {}", unique_token());
        let loopback = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // Read by Dovecot's config process at start (as root, or as the current user).
        let imaps = ports.imaps.map(|port| {
            (
                loopback(port),
                pki::self_signed(root, &["localhost", "127.0.0.1"]),
            )
        });
        let tls = imaps.as_ref().map(|(_, pki)| pki);
        let config = render_config(root, &owner, ports, tls, &greeting);
        write_file(&root.join("dovecot.conf"), &config, 0o644)?;

        Ok(Dovecot {
            child: None,
            imap_addr: loopback(ports.imap),
            lmtp_addr: loopback(ports.lmtp),
            auth_addr: loopback(ports.auth),
            imaps,
            greeting,
            dir,
        })
    }

    /// Starts `dovecot -F` and waits for the greetings.
    fn spawn(&mut self, binary: &Path) -> io::Result<()> {
        let output = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("dovecot.stderr"))?;
        let child = Command::new(binary)
            .arg("-F")
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()?;
        self.child = Some(child);
        match self.wait_ready(Instant::now() + READY_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.terminate(false);
                let log = self.log_contents();
                let kind = if log.contains("Address already in use") {
                    io::ErrorKind::AddrInUse
                } else {
                    e.kind()
                };
                Err(io::Error::new(
                    kind,
                    format!("dovecot did not start: {e}\n--- dovecot log ---\n{log}"),
                ))
            }
        }
    }

    /// Polls the IMAP, the LMTP and then the auth port until each sends our greeting.
    ///
    /// The auth service's handshake (`VERSION\t1\t<minor>`, then `MECH` lines) has no
    /// place for our token; the master binds every listener before any process greets,
    /// so once IMAP greeted with our token the auth port is ours too. The same holds for
    /// the `imaps` port, which greets only after a TLS handshake and is not probed.
    fn wait_ready(&mut self, deadline: Instant) -> io::Result<()> {
        // (address, first bytes, whether the line must carry our token)
        let probes = [
            (self.imap_addr, "* OK ", true),
            (self.lmtp_addr, "220 ", true),
            (self.auth_addr, "VERSION\t1\t", false),
        ];
        for (addr, prefix, tokened) in probes {
            loop {
                self.check_alive()?;
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no greeting on {addr} within {READY_TIMEOUT:?}"),
                    ));
                }
                match probe_greeting(addr, deadline, None)? {
                    Some(line)
                        if line.starts_with(prefix)
                            && (!tokened || line.contains(&self.greeting)) =>
                    {
                        break;
                    }
                    Some(line) => {
                        // Someone else answers on our port: a clash, retry elsewhere.
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("unexpected greeting on {addr}: {line:?}"),
                        ));
                    }
                    None => std::thread::sleep(POLL),
                }
            }
        }
        self.check_alive()
    }

    /// An error when the master process has exited.
    fn check_alive(&mut self) -> io::Result<()> {
        check_alive(&mut self.child, "dovecot")
    }

    /// Stops the master process we started and the processes it forked.
    ///
    /// Graceful: SIGTERM to the master and to every process it forked; IMAP sessions
    /// answer `* BYE` and exit. (SIGTERM to the master alone takes Dovecot about one
    /// second and leaves IMAP sessions running for about ten more; this takes a few
    /// milliseconds.) Then a bounded wait, then SIGKILL.
    /// Abrupt: SIGKILL to the master first (so it cannot respawn anything), then to
    /// every process of the instance.
    fn terminate(&mut self, graceful: bool) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let master = child.id();
        let mut forked = self.instance_processes(master);
        if child.try_wait()?.is_none() {
            if graceful {
                let everyone: Vec<u32> = std::iter::once(master)
                    .chain(forked.iter().map(|(pid, _)| *pid))
                    .collect();
                send_signal("TERM", &everyone);
                let deadline = Instant::now() + STOP_GRACE;
                while child.try_wait()?.is_none() && Instant::now() < deadline {
                    merge(&mut forked, self.instance_processes(master));
                    std::thread::sleep(POLL);
                }
            }
            if child.try_wait()?.is_none() {
                merge(&mut forked, self.instance_processes(master));
                child.kill()?;
            }
            child.wait()?;
        }
        // Whatever of the instance is still alive (reparented to init by now).
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            let alive: Vec<u32> = forked
                .iter()
                .filter(|(pid, title)| process_title(*pid).as_deref() == Some(title.as_str()))
                .map(|(pid, _)| *pid)
                .collect();
            if alive.is_empty() || Instant::now() >= deadline {
                return Ok(());
            }
            send_signal("KILL", &alive);
            std::thread::sleep(POLL);
        }
    }

    /// The processes below `master` that belong to this instance, with their titles
    /// (`dovecot-coi-test-<imap port>/imap`). Matching the title, not just the pid,
    /// keeps a recycled pid from being signalled later.
    fn instance_processes(&self, master: u32) -> Vec<(u32, String)> {
        let prefix = format!("dovecot-{}/", self.instance_name());
        descendants(master)
            .into_iter()
            .filter_map(|pid| process_title(pid).map(|title| (pid, title)))
            .filter(|(_, title)| title.starts_with(&prefix))
            .collect()
    }

    /// `instance_name` in the configuration; it names the processes.
    fn instance_name(&self) -> String {
        format!("coi-test-{}", self.imap_addr.port())
    }
}

/// Adds the processes of `more` that `into` does not have yet.
fn merge(into: &mut Vec<(u32, String)>, more: Vec<(u32, String)>) {
    for process in more {
        if !into.iter().any(|(pid, _)| *pid == process.0) {
            into.push(process);
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.terminate(true);
        if std::env::var_os(KEEP_ENV).is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("{KEEP_ENV}: kept {}", self.dir().display());
        }
    }
}

/// Who owns the mail and runs Dovecot's unprivileged processes.
#[derive(Debug)]
struct Owner {
    /// Dovecot runs as root (the normal case) or rootless as the current user.
    root: bool,
    mail_uid: u32,
    mail_gid: u32,
    /// Rootless only: user and group names for `default_*_user`.
    user_name: String,
    group_name: String,
}

impl Owner {
    fn detect() -> io::Result<Owner> {
        // `/proc/self` is owned by the effective uid/gid (no libc; unsafe is forbidden).
        let me = fs::metadata("/proc/self")?;
        if me.uid() == 0 {
            let (uid, gid) = passwd_entry(|name, _| name == "mail")?
                .map(|(_, uid, gid)| (uid, gid))
                .ok_or_else(|| io::Error::other("system user `mail` not found in /etc/passwd"))?;
            return Ok(Owner {
                root: true,
                mail_uid: uid,
                mail_gid: gid,
                user_name: String::new(),
                group_name: String::new(),
            });
        }
        let (user_name, _, _) = passwd_entry(|_, uid| uid == me.uid())?
            .ok_or_else(|| io::Error::other("current uid not found in /etc/passwd"))?;
        let group_name = group_name_of(me.gid())?
            .ok_or_else(|| io::Error::other("current gid not found in /etc/group"))?;
        Ok(Owner {
            root: false,
            mail_uid: me.uid(),
            mail_gid: me.gid(),
            user_name,
            group_name,
        })
    }
}

/// The loopback ports of one instance.
#[derive(Clone, Copy, Debug)]
struct Ports {
    imap: u16,
    lmtp: u16,
    auth: u16,
    /// The implicit-TLS IMAP listener, if any.
    imaps: Option<u16>,
}

/// The complete `dovecot.conf` of a test instance; `tls` is the certificate of the
/// `imaps` listener (`ports.imaps`), if there is one.
fn render_config(
    root: &Path,
    owner: &Owner,
    ports: Ports,
    tls: Option<&TestPki>,
    greeting: &str,
) -> String {
    let Ports {
        imap: imap_port,
        lmtp: lmtp_port,
        auth: auth_port,
        imaps: imaps_port,
    } = ports;
    // Without TLS: `ssl = no` and the imaps listener disabled (port 0). With it: the
    // certificate, and the listener on loopback; plaintext auth stays allowed (below).
    let (ssl, imaps_listener) = match (tls, imaps_port) {
        (Some(pki), Some(port)) => (
            format!(
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}",
                pki.cert_path.display(),
                pki.key_path.display()
            ),
            format!("address = 127.0.0.1\n    port = {port}\n    ssl = yes"),
        ),
        _ => ("ssl = no".to_owned(), "port = 0".to_owned()),
    };
    let root = root.display();
    let uid = owner.mail_uid;
    let gid = owner.mail_gid;
    let rootless = if owner.root {
        String::new()
    } else {
        format!(
            "\n# Rootless: every process runs as the current user, no login chroot.\n\
             default_internal_user = {user}\n\
             default_internal_group = {group}\n\
             default_login_user = {user}\n",
            user = owner.user_name,
            group = owner.group_name,
        )
    };
    // Rootless: anvil and imap-login cannot chroot.
    let no_chroot = if owner.root { "" } else { "\n  chroot =" };
    format!(
        r#"# Generated by tests/support/dovecot.rs for one test. Do not edit.
base_dir = {root}/run
state_dir = {root}/state
instance_name = coi-test-{imap_port}
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
login_greeting = {greeting}

protocols = imap lmtp
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
# Tests check failed logins often, all from 127.0.0.1: no delay after a failure
# (Dovecot still answers a failure after up to 0.5 s) ...
auth_failure_delay = 0 secs
# ... and no per-IP penalty (2, 4, 8, 15 s): the auth process cannot reach anvil's
# penalty socket and so disables it (the documented switch).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}{no_chroot}
}}
# Like a production proxy host: the proxy may pass the client's IP (ID x-originating-ip).
login_trusted_networks = 127.0.0.0/8

# Master user: SASL PLAIN authzid or LOGIN "alice*{MASTER_USER}".
auth_master_user_separator = {MASTER_SEPARATOR}
passdb {{
  driver = passwd-file
  args = {root}/master-users
  master = yes
  result_success = continue
}}
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}

# Mail: maildir, fs layout (separator "/"), owned by uid {uid} (see the module docs).
mail_location = maildir:~/Maildir:LAYOUT=fs
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
namespace inbox {{
  inbox = yes
  prefix =
  separator = /
}}

# METADATA, persisted per user.
mail_attribute_dict = file:%h/dovecot-attributes
protocol imap {{
  imap_metadata = yes
  mail_max_userip_connections = 200
}}

# LMTP recipients may carry any domain.
protocol lmtp {{
  auth_username_format = %Ln
}}
postmaster_address = postmaster@localhost

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    {imaps_listener}
  }}{no_chroot}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
# SMTP AUTH for the test Postfix (smtpd_sasl_path = inet:127.0.0.1:{auth_port}): the
# auth-client protocol over TCP, next to the service's usual unix sockets.
service auth {{
  inet_listener auth-client-inet {{
    address = 127.0.0.1
    port = {auth_port}
  }}
}}
{rootless}"#
    )
}

/// A free loopback port that is none of `taken` (ports just released by
/// [`on_free_ports`], which the kernel could hand out again).
fn free_port_other_than(taken: &[u16]) -> io::Result<u16> {
    for _ in 0..8 {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free loopback port other than {taken:?}"),
    ))
}

/// The dovecot binary (in /usr/sbin, which is not on every user's PATH).
fn dovecot_binary() -> io::Result<PathBuf> {
    for candidate in ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"] {
        if Path::new(candidate).is_file() {
            return Ok(PathBuf::from(candidate));
        }
    }
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("dovecot"))
        .find(|path| path.is_file());
    found.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "dovecot is not installed; run scripts/install-deps.sh",
        )
    })
}

/// All descendants of `pid`, from `/proc/<pid>/task/*/children`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|p| p.parse().ok()) {
                if !found.contains(&child) {
                    found.push(child);
                    queue.push(child);
                }
            }
        }
    }
    found
}

/// Finds a line of /etc/passwd: `(name, uid, gid)`.
fn passwd_entry(matches: impl Fn(&str, u32) -> bool) -> io::Result<Option<(String, u32, u32)>> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 {
            continue;
        }
        let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) else {
            continue;
        };
        if matches(fields[0], uid) {
            return Ok(Some((fields[0].to_owned(), uid, gid)));
        }
    }
    Ok(None)
}

/// The name of group `gid` from /etc/group.
fn group_name_of(gid: u32) -> io::Result<Option<String>> {
    let group = fs::read_to_string("/etc/group")?;
    Ok(group.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 3 && fields[2].parse() == Ok(gid)).then(|| fields[0].to_owned())
    }))
}

/// Writes `text` to a new file with `mode`.
fn write_file(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(text.as_bytes())?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(())
}
